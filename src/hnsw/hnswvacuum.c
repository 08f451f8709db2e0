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
 *		concurrently since it was read is left alone.
 *	 3. Remove the deleted tuples.  Their line pointers become unused, so
 *		no other tuple moves, and the space goes to the free space map for
 *		later inserts.  A link that a concurrent insert made to a removed
 *		element points at an unused slot (skipped by readers) or at a new
 *		element placed there later (a valid, if arbitrary, edge).
 *
 * NOTE: such a link stays until its list is next rewritten, and
 * wdc.hnsw_verify reports it.  Repairing by search costs about one insert
 * per element that lost a neighbour, so VACUUM after deleting a large share
 * of a big index takes a while.
 */
#include "postgres.h"

#include "access/generic_xlog.h"
#include "commands/vacuum.h"
#include "storage/freespace.h"
#include "storage/indexfsm.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "hnsw/hnsw.h"

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
} VacuumState;

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

		vacuum_delay_point();
		buf = ReadBufferExtended(vs->index, MAIN_FORKNUM, blkno, RBM_NORMAL, vs->strategy);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
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

/* Pass 2a: find live elements with a list naming a deleted element */
static void
FindListsToRepair(VacuumState *vs)
{
	BlockNumber nblocks = RelationGetNumberOfBlocks(vs->index);

	for (BlockNumber blkno = HNSW_METAPAGE_BLKNO + 1; blkno < nblocks; blkno++)
	{
		Buffer		buf;
		Page		page;

		vacuum_delay_point();
		buf = ReadBufferExtended(vs->index, MAIN_FORKNUM, blkno, RBM_NORMAL, vs->strategy);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
		{
			HnswElementTuple etup = HnswGetElement(page, off);
			ItemPointerData tid;
			ItemPointer slots;
			bool		needs = false;

			if (etup == NULL || (etup->flags & HNSW_ELEMENT_DELETED))
				continue;
			ItemPointerSet(&tid, blkno, off);

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
}

/* Order candidates by distance */
static int
CompareCandidates(const void *a, const void *b)
{
	const HnswCandidate *ca = *(HnswCandidate *const *) a;
	const HnswCandidate *cb = *(HnswCandidate *const *) b;

	if (ca->distance < cb->distance)
		return -1;
	if (ca->distance > cb->distance)
		return 1;
	return ItemPointerCompare((ItemPointer) &ca->tid, (ItemPointer) &cb->tid);
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
		int			nloaded;
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

		/* Candidates: live members, neighbours of deleted members, search results */
		seen = hnsw_visited_create(vs->cxt, 64, NULL);
		hnsw_visited_insert(seen, tid, &present);
		tids = palloc(sizeof(ItemPointerData) * (capacity * (capacity + 1) + nfound));
		for (int i = 0; i < current->nneighbors; i++)
		{
			ItemPointerData nb = current->neighbors[i];

			if (!IsDeleted(vs, nb))
			{
				hnsw_visited_insert(seen, nb, &present);
				if (!present)
					tids[ntids++] = nb;
			}
			else
			{
				HnswCandidate *gone;
				ItemPointerData gonetid = nb;

				if (HnswLoadCandidates(&search, &gonetid, 1, &gone) == 0)
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
		}
		for (int i = 0; i < nfound; i++)
		{
			if (found[i]->deleted || IsDeleted(vs, found[i]->tid))
				continue;
			hnsw_visited_insert(seen, found[i]->tid, &present);
			if (!present)
				tids[ntids++] = found[i]->tid;
		}

		loaded = palloc(sizeof(HnswCandidate *) * Max(ntids, 1));
		nloaded = HnswLoadCandidates(&search, tids, ntids, loaded);
		for (int i = 0; i < nloaded; i++)
			if (!loaded[i]->deleted && loaded[i]->level >= lc)
				loaded[nlive++] = loaded[i];
		qsort(loaded, nlive, sizeof(HnswCandidate *), CompareCandidates);

		vectors = palloc(sizeof(float *) * Max(nlive, 1));
		distances = palloc(sizeof(double) * Max(nlive, 1));
		selected = palloc(sizeof(int) * capacity);
		newlist = palloc(sizeof(ItemPointerData) * capacity);
		newcodes = palloc((Size) capacity * Max(codeDims, 1));
		for (int i = 0; i < nlive; i++)
		{
			vectors[i] = loaded[i]->vector;
			distances[i] = loaded[i]->distance;
		}
		nselected = HnswSelectNeighbors(vs->metric, vs->dims, vectors, distances, nlive,
										capacity, selected);
		for (int i = 0; i < nselected; i++)
		{
			newlist[i] = loaded[selected[i]]->tid;
			if (codeDims > 0)
				HnswCodecEncode(&vs->codec, loaded[selected[i]]->vector,
								newcodes + (Size) i * codeDims);
		}

		HnswWriteNeighborList(vs->index, &tid, &current->neighbortid, vs->dims, vs->m, lc,
							  &vs->codec, current->neighbors, current->nneighbors,
							  newlist, newcodes, nselected, NULL, NULL);

		/* Edges back from the new neighbours */
		for (int i = 0; i < nselected; i++)
		{
			bool		known = false;

			for (int j = 0; j < current->nneighbors && !known; j++)
				known = ItemPointerEquals(&newlist[i], &current->neighbors[j]);
			if (!known)
				HnswAddReverseEdge(vs->index, vs->metric, vs->dims, vs->m, &vs->codec, lc,
								   &newlist[i], &tid, vec, loaded[selected[i]]->distance,
								   vs->cxt);
		}
	}
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

		vacuum_delay_point();
		buf = ReadBufferExtended(vs->index, MAIN_FORKNUM, blkno, RBM_NORMAL, vs->strategy);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
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

	/* 1 */
	stats->num_index_tuples = 0;
	RemoveHeapTids(&vs, stats, callback, callback_state);

	if (vs.deleted->members > 0)
	{
		MemoryContext rebasecxt = AllocSetContextCreate(vs.cxt, "hnsw vacuum repair",
														ALLOCSET_DEFAULT_SIZES);
		MemoryContext basecxt = vs.cxt;

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
