/*
 * hnswvacuum.c
 *	  VACUUM for wdc_hnsw: drop dead heap TIDs, repair the graph around
 *	  elements that lost all their rows, then remove those elements.
 *
 * Passes over the index:
 *	 1. Remove the heap TIDs that VACUUM reports dead.  An element left with
 *		none is flagged deleted: scans still walk through it but never
 *		return it, and inserts no longer choose it as a neighbour.
 *	 2. Move the entry point off a deleted element, then rebuild every
 *		list that names a deleted element (RepairElement).  A list changed
 *		concurrently since it was read is left alone.  Then link again the
 *		live elements that no live level-0 list names any more
 *		(ReattachOrphans).
 *	 3. Remove the deleted tuples.  Their line pointers become unused, so
 *		no other tuple moves, and the space goes to the free space map for
 *		later inserts.  A link that a concurrent insert made to a removed
 *		element points at an unused slot (skipped by readers) or at a new
 *		element placed there later (a valid, if arbitrary, edge).
 *
 * NOTE: such a link stays until its list is next rewritten, and
 * wdc.hnsw_verify reports it.  Repairing by search costs about one insert
 * per element that lost a neighbour, so VACUUM after deleting a large share
 * of a big index takes a while.  When an element may have lost its last
 * incoming edge, pass 2 also keeps a hash entry per such element and reads
 * the index once more to count their incoming edges.
 */
#include "postgres.h"

#include "access/generic_xlog.h"
#include "commands/vacuum.h"
#include "storage/freespace.h"
#include "storage/indexfsm.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "hnsw/hnsw.h"

/* Incoming level-0 edges from live elements, per element that may have none */
typedef struct HnswInDegree
{
	ItemPointerData tid;
	char		status;
	int			count;
} HnswInDegree;

#define SH_PREFIX hnsw_indegree
#define SH_ELEMENT_TYPE HnswInDegree
#define SH_KEY_TYPE ItemPointerData
#define SH_KEY tid
#define SH_HASH_KEY(tb, key) HnswHashTid(key)
#define SH_EQUAL(tb, a, b) ItemPointerEquals(&(a), &(b))
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

typedef struct VacuumState
{
	Relation	index;
	BufferAccessStrategy strategy;
	HnswMetric	metric;
	int			dims;
	int			m;
	int			efConstruction;
	HnswCodec	codec;			/* from the metapage */
	MemoryContext cxt;
	hnsw_visited_hash *deleted; /* TIDs of deleted elements */
	ItemPointerData bestTid;	/* highest live element, for the entry point */
	int			bestLevel;
	ItemPointerData *repair;	/* live elements whose lists need a look */
	int			nrepair;
	int			maxrepair;
	hnsw_indegree_hash *orphans;	/* live elements that lost a level-0
									 * incoming edge: candidates for pass 2c */
	ItemPointerData *deletedLists;	/* deleted elements whose lists are in a
									 * separate tuple */
	int			ndeletedLists;
	int			maxdeletedLists;
} VacuumState;

/* Read block blkno of the index for a pass over every page, locked in mode */
static Buffer
ReadPassPage(VacuumState *vs, BlockNumber blkno, int mode)
{
	Buffer		buf;

	vacuum_delay_point();
	buf = ReadBufferExtended(vs->index, MAIN_FORKNUM, blkno, RBM_NORMAL, vs->strategy);
	LockBuffer(buf, mode);
	return buf;
}

static bool
IsDeleted(VacuumState *vs, ItemPointerData tid)
{
	return hnsw_visited_lookup(vs->deleted, tid) != NULL;
}

static void
AddRepair(VacuumState *vs, ItemPointerData tid)
{
	if (vs->nrepair == vs->maxrepair)
	{
		vs->maxrepair *= 2;
		vs->repair = repalloc_huge(vs->repair, sizeof(ItemPointerData) * vs->maxrepair);
	}
	vs->repair[vs->nrepair++] = tid;
}

/* Pass 1: drop dead heap TIDs page by page */
static void
RemoveHeapTids(VacuumState *vs, IndexBulkDeleteResult *stats,
			   IndexBulkDeleteCallback callback, void *callback_state)
{
	BlockNumber nblocks = RelationGetNumberOfBlocks(vs->index);

	for (BlockNumber blkno = HNSW_METAPAGE_BLKNO + 1; blkno < nblocks; blkno++)
	{
		Buffer		buf;
		GenericXLogState *state;
		Page		page;
		bool		changed = false;

		buf = ReadPassPage(vs, blkno, BUFFER_LOCK_EXCLUSIVE);
		state = GenericXLogStart(vs->index);
		page = GenericXLogRegisterBuffer(state, buf, 0);

		for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
		{
			HnswElementTuple etup = HnswGetElement(page, off);
			ItemPointerData tid;
			int			kept = 0;
			bool		found;

			if (etup == NULL)
				continue;
			ItemPointerSet(&tid, blkno, off);
			if (etup->flags & HNSW_ELEMENT_DELETED)
			{
				hnsw_visited_insert(vs->deleted, tid, &found);
				continue;
			}

			for (int i = 0; i < etup->nheaptids; i++)
			{
				if (callback(&etup->heaptids[i], callback_state))
				{
					stats->tuples_removed++;
					changed = true;
				}
				else
					etup->heaptids[kept++] = etup->heaptids[i];
			}
			for (int i = kept; i < etup->nheaptids; i++)
				ItemPointerSetInvalid(&etup->heaptids[i]);
			etup->nheaptids = kept;

			if (kept == 0)
			{
				etup->flags |= HNSW_ELEMENT_DELETED;
				hnsw_visited_insert(vs->deleted, tid, &found);
			}
			else
			{
				stats->num_index_tuples += kept;
				if (etup->level > vs->bestLevel)
				{
					vs->bestLevel = etup->level;
					vs->bestTid = tid;
				}
			}
		}

		if (changed)
			GenericXLogFinish(state);
		else
			GenericXLogAbort(state);
		UnlockReleaseBuffer(buf);
	}
}

/* Point the metapage at a live element if its entry point was deleted */
static void
RepairEntryPoint(VacuumState *vs)
{
	Buffer		buf = ReadBuffer(vs->index, HNSW_METAPAGE_BLKNO);
	GenericXLogState *state;
	HnswMetaPage meta;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(vs->index);
	meta = HnswPageGetMeta(GenericXLogRegisterBuffer(state, buf, 0));
	if (ItemPointerIsValid(&meta->entryTid) && IsDeleted(vs, meta->entryTid))
	{
		meta->entryTid = vs->bestTid;
		meta->entryLevel = vs->bestLevel;
		GenericXLogFinish(state);
	}
	else
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
}

/* Record live element tid as one that lost an incoming level-0 edge */
static void
AddOrphanCandidate(VacuumState *vs, ItemPointerData tid)
{
	bool		found;
	HnswInDegree *entry;

	if (IsDeleted(vs, tid))
		return;
	entry = hnsw_indegree_insert(vs->orphans, tid, &found);
	if (!found)
		entry->count = 0;
}

/* Level-0 members of a deleted element's slots become orphan candidates */
static void
AddDeletedList(VacuumState *vs, ItemPointer slots)
{
	for (int i = 0; i < HnswLevelCapacity(vs->m, 0) && ItemPointerIsValid(&slots[i]); i++)
		AddOrphanCandidate(vs, slots[i]);
}

/*
 * Pass 2a: find live elements with a list naming a deleted element, and
 * take the level-0 members of deleted elements as orphan candidates.
 */
static void
FindListsToRepair(VacuumState *vs)
{
	BlockNumber nblocks = RelationGetNumberOfBlocks(vs->index);

	for (BlockNumber blkno = HNSW_METAPAGE_BLKNO + 1; blkno < nblocks; blkno++)
	{
		Buffer		buf;
		Page		page;

		buf = ReadPassPage(vs, blkno, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
		{
			HnswElementTuple etup = HnswGetElement(page, off);
			ItemPointerData tid;
			ItemPointer slots;
			bool		needs = false;

			if (etup == NULL)
				continue;
			ItemPointerSet(&tid, blkno, off);
			if (etup->flags & HNSW_ELEMENT_DELETED)
			{
				if (!ItemPointerIsValid(&etup->neighbortid))
					AddDeletedList(vs, HnswTupleSlots(etup, vs->dims));
				else
				{
					if (vs->ndeletedLists == vs->maxdeletedLists)
					{
						vs->maxdeletedLists *= 2;
						vs->deletedLists = repalloc_huge(vs->deletedLists,
														 sizeof(ItemPointerData) * vs->maxdeletedLists);
					}
					vs->deletedLists[vs->ndeletedLists++] = etup->neighbortid;
				}
				continue;
			}

			/* Lists in a separate tuple are checked in the repair step */
			if (ItemPointerIsValid(&etup->neighbortid))
			{
				AddRepair(vs, tid);
				continue;
			}
			slots = HnswTupleSlots(etup, vs->dims);
			for (int i = 0; i < HnswSlotCount(vs->m, etup->level) && !needs; i++)
				needs = ItemPointerIsValid(&slots[i]) && IsDeleted(vs, slots[i]);
			if (needs)
				AddRepair(vs, tid);
		}
		UnlockReleaseBuffer(buf);
	}

	/* Lists of deleted elements kept in separate tuples */
	for (int i = 0; i < vs->ndeletedLists; i++)
	{
		Buffer		buf;
		HnswNeighborTuple ntup;

		buf = ReadBufferExtended(vs->index, MAIN_FORKNUM,
								 ItemPointerGetBlockNumber(&vs->deletedLists[i]),
								 RBM_NORMAL, vs->strategy);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		ntup = HnswGetNeighborTuple(BufferGetPage(buf),
									ItemPointerGetOffsetNumber(&vs->deletedLists[i]));
		if (ntup != NULL)
			AddDeletedList(vs, ntup->slots);
		UnlockReleaseBuffer(buf);
	}
}

/*
 * Add an edge from the element at tid to the element at newtid (holding
 * vec, at distance from tid) at level lc.  The level-0 neighbours a full
 * list drops for it become orphan candidates.
 */
static void
AddEdgeBack(VacuumState *vs, int lc, ItemPointer tid, ItemPointer newtid, const float *vec,
			double distance)
{
	ItemPointerData *dropped = palloc(sizeof(ItemPointerData) * HnswLevelCapacity(vs->m, lc));
	int			ndropped = HnswAddReverseEdge(vs->index, vs->metric, vs->dims, vs->m,
											  &vs->codec, lc, tid, newtid, vec, distance,
											  dropped, vs->cxt);

	for (int i = 0; lc == 0 && i < ndropped; i++)
		AddOrphanCandidate(vs, dropped[i]);
	pfree(dropped);
}

/* A candidate for a repaired list and where it came from */
typedef struct RepairCandidate
{
	HnswCandidate *c;
	int			source;			/* 0: live member, 1: neighbour of a deleted
								 * member, 2: search result */
} RepairCandidate;

/*
 * Order candidates by distance, then by source.  Among copies of one
 * vector, all at one distance, the list's live members come first, so the
 * list keeps the copies it had.  A copy dropped from it might have no
 * other incoming edge.
 */
static int
CompareCandidates(const void *a, const void *b)
{
	const RepairCandidate *ra = (const RepairCandidate *) a;
	const RepairCandidate *rb = (const RepairCandidate *) b;

	if (ra->c->distance < rb->c->distance)
		return -1;
	if (ra->c->distance > rb->c->distance)
		return 1;
	if (ra->source != rb->source)
		return ra->source - rb->source;
	return ItemPointerCompare(&ra->c->tid, &rb->c->tid);
}

/*
 * Pass 2b: rebuild one element's lists that name deleted elements.  The
 * candidates are the list's live members, the live neighbours of its
 * deleted members, and what a search for the element's vector finds on
 * that level (descending from the entry point as an insert does; the
 * search may still walk through deleted elements, which pass 3 has not
 * removed yet).  The heuristic picks the new list, and every newly chosen
 * neighbour gets an edge back, so elements whose only incoming edges came
 * from deleted ones stay reachable.
 */
static void
RepairElement(VacuumState *vs, ItemPointerData tid)
{
	HnswSearch probe;
	HnswCandidate *self;
	ItemPointerData selftid = tid;
	HnswMetaPageData meta;
	ItemPointerData entry;
	ItemPointerData *seeds;
	int			nseeds;
	HnswCandidate **found;
	float	   *vec;
	int			level;
	const float *bounds = NULL;

	/* The element's vector and level */
	HnswSearchInit(&probe, vs->index, vs->metric, vs->dims, vs->m, NULL, NULL, 0, 1, vs->cxt);
	probe.keepVectors = true;
	probe.query = palloc0(sizeof(float) * vs->dims);
	if (HnswLoadCandidates(&probe, &selftid, 1, &self) == 0 || self->deleted)
		return;
	vec = self->vector;
	level = self->level;

	/* Descend to the element's level */
	HnswReadMeta(vs->index, &meta);
	level = Min(level, meta.entryLevel);
	if (vs->codec.dims > 0)
		bounds = HnswBoundTable(&vs->codec, vs->metric, vec, vs->cxt);
	HnswSearchDescend(vs->index, vs->metric, vs->dims, vs->m, &vs->codec, bounds, vec, NULL,
					  &meta, level, HNSW_INSERT_DESCENT_EF, &entry, NULL, vs->cxt);
	found = palloc(sizeof(HnswCandidate *) * vs->efConstruction);
	seeds = palloc(sizeof(ItemPointerData) * vs->efConstruction);
	seeds[0] = entry;
	nseeds = ItemPointerIsValid(&entry) ? 1 : 0;

	for (int lc = level; lc >= 0; lc--)
	{
		int			capacity = HnswLevelCapacity(vs->m, lc);
		HnswSearch search;
		HnswSearch graph;
		HnswCandidate *current;
		ItemPointerData *tids;
		HnswCandidate **loaded;
		const float **vectors;
		double	   *distances;
		int		   *selected;
		ItemPointerData *newlist;
		uint8	   *newcodes;
		int			codeDims = HnswLevelCodeDims(&vs->codec, lc);
		int			nfound;
		int			ntids = 0;
		int			sourceEnd[3];
		RepairCandidate *candidates;
		bool		written;
		int			nlive = 0;
		int			nselected;
		bool		needs = false;
		hnsw_visited_hash *seen;
		bool		present;

		/* Search this level, seeding the next one */
		HnswSearchInit(&graph, vs->index, vs->metric, vs->dims, vs->m, &vs->codec, vec, lc,
					   vs->efConstruction, vs->cxt);
		if (graph.codec != NULL)
			graph.bounds = bounds;
		for (int i = 0; i < nseeds; i++)
			HnswSearchAddSeed(&graph, &seeds[i]);
		nfound = HnswSearchBatch(&graph, INT_MAX, found);
		for (int i = 0; i < nfound; i++)
			seeds[i] = found[i]->tid;
		nseeds = nfound;

		/* The current list; nothing to do unless it names a deleted element */
		HnswSearchInit(&search, vs->index, vs->metric, vs->dims, vs->m, &vs->codec, vec, lc,
					   capacity, vs->cxt);
		search.keepVectors = true;
		selftid = tid;
		if (HnswLoadCandidates(&search, &selftid, 1, &current) == 0)
			return;
		HnswLoadNeighbors(&search, current);
		for (int i = 0; i < current->nneighbors && !needs; i++)
			needs = IsDeleted(vs, current->neighbors[i]);
		if (!needs)
			continue;

		/*
		 * Candidates, by source: live members, neighbours of deleted
		 * members, search results
		 */
		seen = hnsw_visited_create(vs->cxt, 64, NULL);
		hnsw_visited_insert(seen, tid, &present);
		tids = palloc(sizeof(ItemPointerData) * (capacity * (capacity + 1) + nfound));
		for (int i = 0; i < current->nneighbors; i++)
		{
			if (IsDeleted(vs, current->neighbors[i]))
				continue;
			hnsw_visited_insert(seen, current->neighbors[i], &present);
			if (!present)
				tids[ntids++] = current->neighbors[i];
		}
		sourceEnd[0] = ntids;
		for (int i = 0; i < current->nneighbors; i++)
		{
			HnswCandidate *gone;
			ItemPointerData gonetid = current->neighbors[i];

			if (!IsDeleted(vs, gonetid) || HnswLoadCandidates(&search, &gonetid, 1, &gone) == 0)
				continue;
			HnswLoadNeighbors(&search, gone);
			for (int j = 0; j < gone->nneighbors; j++)
			{
				if (IsDeleted(vs, gone->neighbors[j]))
					continue;
				hnsw_visited_insert(seen, gone->neighbors[j], &present);
				if (!present)
					tids[ntids++] = gone->neighbors[j];
			}
		}
		sourceEnd[1] = ntids;
		for (int i = 0; i < nfound; i++)
		{
			if (found[i]->deleted || IsDeleted(vs, found[i]->tid))
				continue;
			hnsw_visited_insert(seen, found[i]->tid, &present);
			if (!present)
				tids[ntids++] = found[i]->tid;
		}
		sourceEnd[2] = ntids;

		loaded = palloc(sizeof(HnswCandidate *) * Max(ntids, 1));
		candidates = palloc(sizeof(RepairCandidate) * Max(ntids, 1));
		for (int source = 0; source < 3; source++)
		{
			int			from = source == 0 ? 0 : sourceEnd[source - 1];
			int			nloaded = HnswLoadCandidates(&search, tids + from,
													 sourceEnd[source] - from, loaded);

			for (int i = 0; i < nloaded; i++)
			{
				if (loaded[i]->deleted || loaded[i]->level < lc)
					continue;
				candidates[nlive].c = loaded[i];
				candidates[nlive].source = source;
				nlive++;
			}
		}
		qsort(candidates, nlive, sizeof(RepairCandidate), CompareCandidates);

		vectors = palloc(sizeof(float *) * Max(nlive, 1));
		distances = palloc(sizeof(double) * Max(nlive, 1));
		selected = palloc(sizeof(int) * capacity);
		newlist = palloc(sizeof(ItemPointerData) * capacity);
		newcodes = palloc((Size) capacity * Max(codeDims, 1));
		for (int i = 0; i < nlive; i++)
		{
			vectors[i] = candidates[i].c->vector;
			distances[i] = candidates[i].c->distance;
		}
		nselected = HnswSelectNeighbors(vs->metric, vs->dims, vectors, distances, nlive,
										capacity, selected);
		for (int i = 0; i < nselected; i++)
		{
			newlist[i] = candidates[selected[i]].c->tid;
			if (codeDims > 0)
				HnswCodecEncode(&vs->codec, candidates[selected[i]].c->vector,
								newcodes + (Size) i * codeDims);
		}

		written = HnswWriteNeighborList(vs->index, &tid, &current->neighbortid, vs->dims,
										vs->m, lc, &vs->codec, current->neighbors,
										current->nneighbors, newlist, newcodes, nselected,
										NULL, NULL);

		/* Live members the new list dropped may have had no other incoming edge */
		for (int i = 0; written && lc == 0 && i < current->nneighbors; i++)
		{
			bool		kept = false;

			for (int j = 0; j < nselected && !kept; j++)
				kept = ItemPointerEquals(&newlist[j], &current->neighbors[i]);
			if (!kept)
				AddOrphanCandidate(vs, current->neighbors[i]);
		}

		/* Edges back from the new neighbours */
		for (int i = 0; i < nselected; i++)
		{
			bool		known = false;

			for (int j = 0; j < current->nneighbors && !known; j++)
				known = ItemPointerEquals(&newlist[i], &current->neighbors[j]);
			if (!known)
				AddEdgeBack(vs, lc, &newlist[i], &tid, vec,
							candidates[selected[i]].c->distance);
		}
	}
}

/* Count the level-0 edges from live elements to the orphan candidates */
static void
CountIncomingEdges(VacuumState *vs)
{
	BlockNumber nblocks = RelationGetNumberOfBlocks(vs->index);
	int			capacity = HnswLevelCapacity(vs->m, 0);

	for (BlockNumber blkno = HNSW_METAPAGE_BLKNO + 1; blkno < nblocks; blkno++)
	{
		Buffer		buf;
		Page		page;

		buf = ReadPassPage(vs, blkno, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
		{
			HnswElementTuple etup = HnswGetElement(page, off);
			HnswNeighborTuple ntup = HnswGetNeighborTuple(page, off);
			ItemPointer slots = NULL;

			if (etup != NULL && !(etup->flags & HNSW_ELEMENT_DELETED) &&
				!ItemPointerIsValid(&etup->neighbortid))
				slots = HnswTupleSlots(etup, vs->dims);
			else if (ntup != NULL && !IsDeleted(vs, ntup->elementtid))
				slots = ntup->slots;
			for (int i = 0; slots != NULL && i < capacity && ItemPointerIsValid(&slots[i]); i++)
			{
				HnswInDegree *entry = hnsw_indegree_lookup(vs->orphans, slots[i]);

				if (entry != NULL)
					entry->count++;
			}
		}
		UnlockReleaseBuffer(buf);
	}
}

/*
 * Link the live element at tid, which no live level-0 list names, from the
 * elements a search for its vector finds.  The first copy of it that takes
 * the edge links it (HnswAttachCopy).  Without one, the neighbours the
 * heuristic picks add reverse edges.  The search cannot pass through tid,
 * so every element it visits is reachable without tid's edges.
 */
static void
ReattachElement(VacuumState *vs, ItemPointerData tid)
{
	int			capacity = HnswLevelCapacity(vs->m, 0);
	HnswSearch	probe;
	HnswSearch	graph;
	HnswCandidate *self;
	HnswCandidate **found;
	HnswCandidate **live;
	ItemPointerData selftid = tid;
	HnswMetaPageData meta;
	ItemPointerData entry;
	const float *bounds = NULL;
	const float **vectors;
	double	   *distances;
	int		   *selected;
	float	   *vec;
	int			nfound;
	int			nlive = 0;
	int			nselected;

	HnswReadMeta(vs->index, &meta);
	if (ItemPointerEquals(&meta.entryTid, &tid))
		return;
	HnswSearchInit(&probe, vs->index, vs->metric, vs->dims, vs->m, NULL, NULL, 0, 1, vs->cxt);
	probe.keepVectors = true;
	probe.query = palloc0(sizeof(float) * vs->dims);
	if (HnswLoadCandidates(&probe, &selftid, 1, &self) == 0 || self->deleted)
		return;
	vec = self->vector;

	if (vs->codec.dims > 0)
		bounds = HnswBoundTable(&vs->codec, vs->metric, vec, vs->cxt);
	HnswSearchDescend(vs->index, vs->metric, vs->dims, vs->m, &vs->codec, bounds, vec, NULL,
					  &meta, 0, HNSW_INSERT_DESCENT_EF, &entry, NULL, vs->cxt);
	if (!ItemPointerIsValid(&entry))
		return;
	HnswSearchInit(&graph, vs->index, vs->metric, vs->dims, vs->m, &vs->codec, vec, 0,
				   vs->efConstruction, vs->cxt);
	if (graph.codec != NULL)
		graph.bounds = bounds;
	graph.keepVectors = true;
	HnswSearchAddSeed(&graph, &entry);
	found = palloc(sizeof(HnswCandidate *) * vs->efConstruction);
	nfound = HnswSearchBatch(&graph, INT_MAX, found);

	live = palloc(sizeof(HnswCandidate *) * Max(nfound, 1));
	for (int i = 0; i < nfound; i++)
	{
		if (found[i]->deleted || IsDeleted(vs, found[i]->tid) ||
			ItemPointerEquals(&found[i]->tid, &tid))
			continue;
		if (memcmp(found[i]->vector, vec, sizeof(float) * vs->dims) != 0)
			live[nlive++] = found[i];
		else if (HnswAttachCopy(vs->index, vs->metric, vs->dims, vs->m, &vs->codec,
								&found[i]->tid, &tid, vec, graph.visited, vs->cxt))
			return;
	}

	vectors = palloc(sizeof(float *) * Max(nlive, 1));
	distances = palloc(sizeof(double) * Max(nlive, 1));
	selected = palloc(sizeof(int) * capacity);
	for (int i = 0; i < nlive; i++)
	{
		vectors[i] = live[i]->vector;
		distances[i] = live[i]->distance;
	}
	nselected = HnswSelectNeighbors(vs->metric, vs->dims, vectors, distances, nlive,
									capacity, selected);
	for (int i = 0; i < nselected; i++)
		AddEdgeBack(vs, 0, &live[selected[i]]->tid, &tid, vec, live[selected[i]]->distance);
}

/*
 * Pass 2c: link again the orphan candidates that no live level-0 list
 * names any more.  Their only incoming edges came from deleted elements,
 * or a repaired list dropped them, and no search would reach them.  Among
 * copies of one vector this is common: a copy is often reachable only
 * through the copy it was attached to (HnswAttachCopy).  One link to such
 * an element also makes the elements reachable only through it reachable
 * again.  Returns how many were linked.
 */
static int
ReattachOrphans(VacuumState *vs, MemoryContext repaircxt)
{
	hnsw_indegree_iterator iter;
	HnswInDegree *entry;
	ItemPointerData *orphans;
	int			norphans = 0;

	if (vs->orphans->members == 0)
		return 0;
	CountIncomingEdges(vs);

	orphans = palloc(sizeof(ItemPointerData) * vs->orphans->members);
	hnsw_indegree_start_iterate(vs->orphans, &iter);
	while ((entry = hnsw_indegree_iterate(vs->orphans, &iter)) != NULL)
		if (entry->count == 0)
			orphans[norphans++] = entry->tid;

	for (int i = 0; i < norphans; i++)
	{
		MemoryContext oldcxt;
		MemoryContext basecxt = vs->cxt;

		vacuum_delay_point();
		vs->cxt = repaircxt;
		oldcxt = MemoryContextSwitchTo(repaircxt);
		ReattachElement(vs, orphans[i]);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(repaircxt);
		vs->cxt = basecxt;
	}
	pfree(orphans);
	return norphans;
}

/* Pass 3: remove deleted element tuples and their neighbour tuples */
static void
RemoveDeleted(VacuumState *vs)
{
	BlockNumber nblocks = RelationGetNumberOfBlocks(vs->index);
	ItemPointerData *orphans = palloc(sizeof(ItemPointerData) * 64);
	int			norphans = 0;
	int			maxorphans = 64;

	for (BlockNumber blkno = HNSW_METAPAGE_BLKNO + 1; blkno < nblocks; blkno++)
	{
		Buffer		buf;
		GenericXLogState *state;
		Page		page;
		bool		changed = false;

		buf = ReadPassPage(vs, blkno, BUFFER_LOCK_EXCLUSIVE);
		state = GenericXLogStart(vs->index);
		page = GenericXLogRegisterBuffer(state, buf, 0);

		for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
		{
			HnswElementTuple etup = HnswGetElement(page, off);

			/* Re-check: an insert may have given a twin a new heap TID */
			if (etup == NULL || !(etup->flags & HNSW_ELEMENT_DELETED) || etup->nheaptids > 0)
				continue;
			if (ItemPointerIsValid(&etup->neighbortid))
			{
				if (ItemPointerGetBlockNumber(&etup->neighbortid) == blkno)
				{
					OffsetNumber noff = ItemPointerGetOffsetNumber(&etup->neighbortid);

					if (HnswGetNeighborTuple(page, noff) != NULL)
						PageIndexTupleDeleteNoCompact(page, noff);
				}
				else
				{
					if (norphans == maxorphans)
					{
						maxorphans *= 2;
						orphans = repalloc(orphans, sizeof(ItemPointerData) * maxorphans);
					}
					orphans[norphans++] = etup->neighbortid;
				}
			}
			/* Deleting the last line pointer shrinks the array; re-read the max */
			PageIndexTupleDeleteNoCompact(page, off);
			changed = true;
		}

		if (changed)
		{
			Size		freespace = PageGetExactFreeSpace(page);

			GenericXLogFinish(state);
			RecordPageWithFreeSpace(vs->index, blkno, freespace);
		}
		else
			GenericXLogAbort(state);
		UnlockReleaseBuffer(buf);
	}

	for (int i = 0; i < norphans; i++)
	{
		Buffer		buf = ReadBufferExtended(vs->index, MAIN_FORKNUM,
											 ItemPointerGetBlockNumber(&orphans[i]),
											 RBM_NORMAL, vs->strategy);
		GenericXLogState *state;
		Page		page;
		OffsetNumber noff = ItemPointerGetOffsetNumber(&orphans[i]);

		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		state = GenericXLogStart(vs->index);
		page = GenericXLogRegisterBuffer(state, buf, 0);
		if (HnswGetNeighborTuple(page, noff) != NULL)
		{
			Size		freespace;

			PageIndexTupleDeleteNoCompact(page, noff);
			freespace = PageGetExactFreeSpace(page);
			GenericXLogFinish(state);
			RecordPageWithFreeSpace(vs->index, ItemPointerGetBlockNumber(&orphans[i]), freespace);
		}
		else
			GenericXLogAbort(state);
		UnlockReleaseBuffer(buf);
	}
	IndexFreeSpaceMapVacuum(vs->index);
}

/* ambulkdelete */
IndexBulkDeleteResult *
hnswbulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
			   IndexBulkDeleteCallback callback, void *callback_state)
{
	VacuumState vs;
	HnswMetaPageData meta;
	MemoryContext oldcxt;

	if (stats == NULL)
		stats = palloc0(sizeof(IndexBulkDeleteResult));

	HnswReadMeta(info->index, &meta);
	memset(&vs, 0, sizeof(vs));
	vs.index = info->index;
	vs.strategy = info->strategy;
	vs.metric = HnswGetMetric(info->index);
	vs.dims = meta.dims;
	vs.codec = meta.codec;
	vs.m = HnswGetM(info->index);
	vs.efConstruction = HnswGetEfConstruction(info->index);
	vs.bestLevel = -1;
	ItemPointerSetInvalid(&vs.bestTid);
	vs.cxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw vacuum",
								   ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(vs.cxt);
	vs.deleted = hnsw_visited_create(vs.cxt, 1024, NULL);
	vs.maxrepair = 1024;
	vs.repair = palloc(sizeof(ItemPointerData) * vs.maxrepair);
	vs.orphans = hnsw_indegree_create(vs.cxt, 1024, NULL);
	vs.maxdeletedLists = 64;
	vs.deletedLists = palloc(sizeof(ItemPointerData) * vs.maxdeletedLists);

	/* 1 */
	stats->num_index_tuples = 0;
	RemoveHeapTids(&vs, stats, callback, callback_state);

	if (vs.deleted->members > 0)
	{
		MemoryContext rebasecxt = AllocSetContextCreate(vs.cxt, "hnsw vacuum repair",
														ALLOCSET_DEFAULT_SIZES);
		MemoryContext basecxt = vs.cxt;
		int			relinked;

		/* 2 */
		RepairEntryPoint(&vs);
		FindListsToRepair(&vs);
		vs.cxt = rebasecxt;
		for (int i = 0; i < vs.nrepair; i++)
		{
			vacuum_delay_point();
			MemoryContextSwitchTo(rebasecxt);
			RepairElement(&vs, vs.repair[i]);
			MemoryContextReset(rebasecxt);
		}
		vs.cxt = basecxt;
		MemoryContextSwitchTo(vs.cxt);
		relinked = ReattachOrphans(&vs, rebasecxt);
		elog(DEBUG1, "wdc_hnsw vacuum of \"%s\" repaired %d elements and linked %d without incoming edges",
			 RelationGetRelationName(info->index), vs.nrepair, relinked);

		/* 3 */
		RemoveDeleted(&vs);
	}

	stats->num_pages = RelationGetNumberOfBlocks(info->index);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(vs.cxt);
	return stats;
}

/* amvacuumcleanup */
IndexBulkDeleteResult *
hnswvacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats)
{
	if (info->analyze_only)
		return stats;
	if (stats == NULL)
	{
		/* No bulkdelete pass ran: the heap's count stands in for ours */
		stats = palloc0(sizeof(IndexBulkDeleteResult));
		stats->num_index_tuples = info->num_heap_tuples;
		stats->estimated_count = info->estimated_count;
	}
	stats->num_pages = RelationGetNumberOfBlocks(info->index);
	return stats;
}
