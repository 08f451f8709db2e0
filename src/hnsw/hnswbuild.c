/*
 * hnswbuild.c
 *	  CREATE INDEX for wdc_hnsw: build the graph in memory, then write it.
 *
 * Stages:
 *	 1. Scan the table and insert each vector into an in-memory graph
 *		(HNSW paper, algorithm 1) whose elements refer to each other by
 *		array index.  Memory is counted against maintenance_work_mem.
 *	 2. Search level 0 again for the elements with short lists and link
 *		them to what it finds (RelinkWeakElements).  Then order the
 *		elements breadth-first from the entry point over level 0, so that
 *		an element's first-found neighbours land on nearby pages.
 *	 3. Lay the tuples out page by page to learn every element's TID, then
 *		write the pages with the lists translated to TIDs, and WAL-log them
 *		all at once (log_newpage_range) when the index is logged.
 *
 * When the graph outgrows maintenance_work_mem, stage 2 and 3 run on what
 * is there, a NOTICE says so, and the remaining rows go through the
 * ordinary on-disk insert path, which is several times slower.
 */
#include "postgres.h"

#include <math.h>

#include "access/tableam.h"
#include "access/xloginsert.h"
#include "commands/progress.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/bufmgr.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "hnsw/hnsw.h"

/* An element of the in-memory graph */
typedef struct BuildElement
{
	float	   *vec;			/* dims floats, unit length for cosine */
	int32	   *slots;			/* HnswSlotCount(m, level); -1 = empty */
	uint8		level;
	uint8		nheaptids;
	uint32		fingerprint;
	ItemPointerData heaptids[HNSW_HEAPTIDS];
	ItemPointerData tid;		/* element tuple, set by the layout */
	ItemPointerData ntid;		/* neighbour tuple, or invalid when inline */
} BuildElement;

/* A (distance, element) pair in the search heaps */
typedef struct BuildPair
{
	double		distance;
	int32		element;
} BuildPair;

/* Binary heap of BuildPair; max says which end is on top */
typedef struct BuildHeap
{
	BuildPair  *pairs;
	int			n;
	int			capacity;
	bool		max;
} BuildHeap;

typedef struct HnswBuildState
{
	Relation	heap;
	Relation	index;
	HnswMetric	metric;
	int			dims;			/* 0 until known */
	int			m;
	int			efConstruction;

	MemoryContext graphcxt;		/* the in-memory graph */
	MemoryContext tmpcxt;		/* reset after every row */
	BuildElement *elements;
	int			nelements;
	int			maxelements;
	int			entry;			/* element index, -1 when empty */
	int			entryLevel;
	char	   *arena;			/* bump allocator for vectors and lists */
	Size		arenaFree;
	Size		memoryUsed;
	Size		memoryLimit;
	bool		onDisk;			/* graph written; rows go to HnswInsertVector */
	HnswCodec	codec;			/* fitted to the graph by WriteGraph */
	uint8	   *codes;			/* codec.dims bytes per element, for FillSlots */

	/* Search scratch, sized for the largest need */
	uint32	   *visited;		/* stamp per element */
	uint32		stamp;
	BuildHeap	candidates;
	BuildHeap	result;
	BuildPair  *found;
	float	   *vecbuf;

	double		indtuples;
} HnswBuildState;

/* Sift-based binary heap; the top is the smallest or, if max, the largest */
static inline bool
HeapBefore(const BuildHeap *h, const BuildPair *a, const BuildPair *b)
{
	return h->max ? a->distance > b->distance : a->distance < b->distance;
}

static void
HeapPush(BuildHeap *h, double distance, int32 element)
{
	int			i;

	if (h->n == h->capacity)
	{
		h->capacity *= 2;
		h->pairs = repalloc_huge(h->pairs, sizeof(BuildPair) * h->capacity);
	}
	i = h->n++;
	h->pairs[i].distance = distance;
	h->pairs[i].element = element;
	while (i > 0)
	{
		int			parent = (i - 1) / 2;
		BuildPair	tmp;

		if (!HeapBefore(h, &h->pairs[i], &h->pairs[parent]))
			break;
		tmp = h->pairs[i];
		h->pairs[i] = h->pairs[parent];
		h->pairs[parent] = tmp;
		i = parent;
	}
}

static BuildPair
HeapPop(BuildHeap *h)
{
	BuildPair	top = h->pairs[0];
	int			i = 0;

	h->pairs[0] = h->pairs[--h->n];
	for (;;)
	{
		int			left = 2 * i + 1;
		int			best = i;
		BuildPair	tmp;

		if (left < h->n && HeapBefore(h, &h->pairs[left], &h->pairs[best]))
			best = left;
		if (left + 1 < h->n && HeapBefore(h, &h->pairs[left + 1], &h->pairs[best]))
			best = left + 1;
		if (best == i)
			break;
		tmp = h->pairs[i];
		h->pairs[i] = h->pairs[best];
		h->pairs[best] = tmp;
		i = best;
	}
	return top;
}

/* Allocate from the graph arena; memory is counted in memoryUsed */
static void *
ArenaAlloc(HnswBuildState *bs, Size size)
{
	void	   *p;

	size = MAXALIGN(size);
	if (size > bs->arenaFree)
	{
		Size		chunk = Max(size, (Size) 1024 * 1024);

		bs->arena = MemoryContextAlloc(bs->graphcxt, chunk);
		bs->arenaFree = chunk;
		bs->memoryUsed += chunk;
	}
	p = bs->arena;
	bs->arena += size;
	bs->arenaFree -= size;
	return p;
}

/* Number of used slots of an element's list at level lc */
static int
ListLength(const HnswBuildState *bs, const BuildElement *e, int lc)
{
	const int32 *list = e->slots + HnswLevelStart(bs->m, lc);
	int			capacity = HnswLevelCapacity(bs->m, lc);
	int			n = 0;

	while (n < capacity && list[n] >= 0)
		n++;
	return n;
}

/*
 * SEARCH-LAYER (HNSW paper, algorithm 2) on the in-memory graph: the ef
 * elements nearest to q reachable from seeds at level lc, written to
 * bs->found in ascending distance.  Returns their number.
 */
static int
SearchLevel(HnswBuildState *bs, const float *q, const int32 *seeds, int nseeds,
			int ef, int lc)
{
	BuildHeap  *cand = &bs->candidates;
	BuildHeap  *res = &bs->result;
	int			n;

	if (++bs->stamp == 0)
	{
		memset(bs->visited, 0, sizeof(uint32) * bs->maxelements);
		bs->stamp = 1;
	}
	cand->n = 0;
	res->n = 0;

	for (int i = 0; i < nseeds; i++)
	{
		double		d;

		if (bs->visited[seeds[i]] == bs->stamp)
			continue;
		bs->visited[seeds[i]] = bs->stamp;
		d = HnswDistance(bs->metric, q, bs->elements[seeds[i]].vec, bs->dims);
		HeapPush(cand, d, seeds[i]);
		HeapPush(res, d, seeds[i]);
		if (res->n > ef)
			HeapPop(res);
	}

	while (cand->n > 0)
	{
		BuildPair	c = HeapPop(cand);
		BuildElement *e = &bs->elements[c.element];
		const int32 *list;
		int			len;

		if (res->n >= ef && c.distance > res->pairs[0].distance)
			break;
		if (e->level < lc)
			continue;
		list = e->slots + HnswLevelStart(bs->m, lc);
		len = ListLength(bs, e, lc);
		for (int i = 0; i < len; i++)
		{
			int32		nb = list[i];
			double		d;

			if (bs->visited[nb] == bs->stamp)
				continue;
			bs->visited[nb] = bs->stamp;
			d = HnswDistance(bs->metric, q, bs->elements[nb].vec, bs->dims);
			if (res->n < ef || d < res->pairs[0].distance)
			{
				HeapPush(cand, d, nb);
				HeapPush(res, d, nb);
				if (res->n > ef)
					HeapPop(res);
			}
		}
	}

	n = res->n;
	for (int i = n - 1; i >= 0; i--)
		bs->found[i] = HeapPop(res);
	return n;
}

/* Add element idx to e's level-lc list, pruning with the heuristic when full */
static void
ConnectBack(HnswBuildState *bs, int32 target, int32 idx, double distance, int lc)
{
	BuildElement *e = &bs->elements[target];
	int32	   *list = e->slots + HnswLevelStart(bs->m, lc);
	int			capacity = HnswLevelCapacity(bs->m, lc);
	int			len = ListLength(bs, e, lc);
	BuildPair  *pairs;
	const float **vectors;
	double	   *distances;
	int		   *selected;
	int			n = 0;
	int			nselected;

	if (len < capacity)
	{
		list[len] = idx;
		return;
	}

	/* Full: keep the best of the current neighbours and idx */
	pairs = palloc(sizeof(BuildPair) * (capacity + 1));
	vectors = palloc(sizeof(float *) * (capacity + 1));
	distances = palloc(sizeof(double) * (capacity + 1));
	selected = palloc(sizeof(int) * capacity);
	for (int i = 0; i <= capacity; i++)
	{
		int32		el = i < capacity ? list[i] : idx;
		double		d = i < capacity ?
			HnswDistance(bs->metric, e->vec, bs->elements[el].vec, bs->dims) : distance;
		int			j = n;

		/*
		 * The new element goes before existing ones at equal distance, so
		 * that among exact duplicates the newest gets the incoming edge;
		 * otherwise later duplicates would never be reachable.
		 */
		while (j > 0 && (pairs[j - 1].distance > d ||
						 (el == idx && pairs[j - 1].distance == d)))
		{
			pairs[j] = pairs[j - 1];
			j--;
		}
		pairs[j].distance = d;
		pairs[j].element = el;
		n++;
	}
	for (int i = 0; i < n; i++)
	{
		vectors[i] = bs->elements[pairs[i].element].vec;
		distances[i] = pairs[i].distance;
	}
	nselected = HnswSelectNeighbors(bs->metric, bs->dims, vectors, distances, n,
									capacity, selected);
	for (int i = 0; i < capacity; i++)
		list[i] = i < nselected ? pairs[selected[i]].element : -1;
}

/* Insert a prepared vector into the in-memory graph */
static void
BuildInsert(HnswBuildState *bs, const float *vec, uint32 fingerprint, ItemPointer heaptid)
{
	int			level = HnswElementLevel(bs->m, heaptid);
	int			top = Min(level, bs->entryLevel);
	int32		idx = bs->nelements;
	int32		entry = bs->entry;
	int32	   *seeds = palloc(sizeof(int32) * bs->efConstruction);
	int			nseeds = 0;
	int32	  **chosen = palloc0(sizeof(int32 *) * (level + 1));
	double	  **chosenDistance = palloc0(sizeof(double *) * (level + 1));
	int		   *nchosen = palloc0(sizeof(int) * (level + 1));
	BuildElement *e;
	int			nslots = HnswSlotCount(bs->m, level);

	/* Descend to the new element's level; see HnswSearchDescend for the beam */
	for (int lc = bs->entryLevel; lc > level && entry >= 0; lc--)
	{
		if (SearchLevel(bs, vec, &entry, 1, HNSW_INSERT_DESCENT_EF, lc) > 0)
			entry = bs->found[0].element;
	}
	if (entry >= 0)
		seeds[nseeds++] = entry;

	/* Search each level and choose neighbours */
	for (int lc = top; lc >= 0 && nseeds > 0; lc--)
	{
		int			capacity = HnswLevelCapacity(bs->m, lc);
		int			nfound = SearchLevel(bs, vec, seeds, nseeds, bs->efConstruction, lc);
		const float **vectors = palloc(sizeof(float *) * nfound);
		double	   *distances = palloc(sizeof(double) * nfound);
		int		   *selected = palloc(sizeof(int) * capacity);
		int			nselected;

		/* An identical vector joins its twin */
		if (lc == 0 && nfound > 0)
		{
			BuildElement *twin = &bs->elements[bs->found[0].element];

			if (twin->nheaptids < HNSW_HEAPTIDS && twin->fingerprint == fingerprint &&
				memcmp(twin->vec, vec, sizeof(float) * bs->dims) == 0)
			{
				twin->heaptids[twin->nheaptids++] = *heaptid;
				return;
			}
		}

		for (int i = 0; i < nfound; i++)
		{
			seeds[i] = bs->found[i].element;
			vectors[i] = bs->elements[seeds[i]].vec;
			distances[i] = bs->found[i].distance;
		}
		nseeds = nfound;
		nselected = HnswSelectNeighbors(bs->metric, bs->dims, vectors, distances,
										nfound, capacity, selected);
		chosen[lc] = palloc(sizeof(int32) * Max(nselected, 1));
		chosenDistance[lc] = palloc(sizeof(double) * Max(nselected, 1));
		for (int i = 0; i < nselected; i++)
		{
			chosen[lc][i] = seeds[selected[i]];
			chosenDistance[lc][i] = distances[selected[i]];
		}
		nchosen[lc] = nselected;
	}

	/* Add the element */
	if (bs->nelements == bs->maxelements)
	{
		bs->maxelements *= 2;
		bs->elements = repalloc_huge(bs->elements, sizeof(BuildElement) * bs->maxelements);
		bs->visited = repalloc_huge(bs->visited, sizeof(uint32) * bs->maxelements);
		memset(bs->visited + bs->nelements, 0,
			   sizeof(uint32) * (bs->maxelements - bs->nelements));
		bs->memoryUsed += (sizeof(BuildElement) + sizeof(uint32)) * (bs->maxelements / 2);
	}
	e = &bs->elements[idx];
	memset(e, 0, sizeof(BuildElement));
	e->vec = ArenaAlloc(bs, sizeof(float) * bs->dims);
	memcpy(e->vec, vec, sizeof(float) * bs->dims);
	e->slots = ArenaAlloc(bs, sizeof(int32) * nslots);
	for (int i = 0; i < nslots; i++)
		e->slots[i] = -1;
	e->level = level;
	e->fingerprint = fingerprint;
	e->heaptids[0] = *heaptid;
	e->nheaptids = 1;
	bs->nelements++;

	/* Edges both ways */
	for (int lc = 0; lc <= level; lc++)
	{
		for (int i = 0; i < nchosen[lc]; i++)
		{
			e->slots[HnswLevelStart(bs->m, lc) + i] = chosen[lc][i];
			ConnectBack(bs, chosen[lc][i], idx, chosenDistance[lc][i], lc);
		}
	}

	if (bs->entry < 0 || level > bs->entryLevel)
	{
		bs->entry = idx;
		bs->entryLevel = level;
	}
}

/* Whether element target's level-lc list contains idx */
static bool
ListContainsElement(const HnswBuildState *bs, int32 target, int32 idx, int lc)
{
	const BuildElement *e = &bs->elements[target];
	const int32 *list = e->slots + HnswLevelStart(bs->m, lc);
	int			len = ListLength(bs, e, lc);

	for (int i = 0; i < len; i++)
		if (list[i] == idx)
			return true;
	return false;
}

/*
 * Search level 0 again for every element whose level-0 list is shorter
 * than a quarter of its capacity, and connect it to what the search finds.
 * Such elements were often inserted before their neighbourhood existed.
 * When rows arrive grouped by cluster, the first rows of a cluster link
 * only to each other and to other clusters, the rest of the cluster can
 * grow from another entry, and nothing links back to the first ones.  In
 * the scenario of the hnsw_vacuum test (ten well-separated clusters), this
 * left recall@10 at 0.966 for one data set, whatever ef_search was.  The
 * pass raised it to 0.994.  On the benchmark's mixture it searches about
 * one element in ten and adds about 10% to the build time.
 */
static int
RelinkWeakElements(HnswBuildState *bs)
{
	int			capacity = HnswLevelCapacity(bs->m, 0);
	int			relinked = 0;
	const float **vectors = palloc(sizeof(float *) * (bs->efConstruction + capacity));
	double	   *distances = palloc(sizeof(double) * (bs->efConstruction + capacity));
	int32	   *elements = palloc(sizeof(int32) * (bs->efConstruction + capacity));
	int		   *selected = palloc(sizeof(int) * capacity);

	for (int32 idx = 0; idx < bs->nelements; idx++)
	{
		BuildElement *e = &bs->elements[idx];
		int32	   *list = e->slots;
		int			len = ListLength(bs, e, 0);
		int32		entry = bs->entry;
		int			nfound;
		int			n = 0;
		int			nselected;

		if (len >= capacity / 4 || idx == bs->entry)
			continue;

		for (int lc = bs->entryLevel; lc > 0; lc--)
		{
			if (SearchLevel(bs, e->vec, &entry, 1, HNSW_INSERT_DESCENT_EF, lc) > 0)
				entry = bs->found[0].element;
		}
		nfound = SearchLevel(bs, e->vec, &entry, 1, bs->efConstruction, 0);

		/* Candidates: what the search found and the current list, by distance */
		for (int i = 0; i < nfound + len; i++)
		{
			int32		el = i < nfound ? bs->found[i].element : list[i - nfound];
			double		d = i < nfound ? bs->found[i].distance :
				HnswDistance(bs->metric, e->vec, bs->elements[el].vec, bs->dims);
			bool		dup = (el == idx);
			int			j;

			for (int k = 0; k < n && !dup; k++)
				dup = (elements[k] == el);
			if (dup)
				continue;
			j = n++;
			while (j > 0 && distances[j - 1] > d)
			{
				elements[j] = elements[j - 1];
				distances[j] = distances[j - 1];
				j--;
			}
			elements[j] = el;
			distances[j] = d;
		}
		for (int i = 0; i < n; i++)
			vectors[i] = bs->elements[elements[i]].vec;
		nselected = HnswSelectNeighbors(bs->metric, bs->dims, vectors, distances, n,
										capacity, selected);
		for (int i = 0; i < capacity; i++)
			list[i] = i < nselected ? elements[selected[i]] : -1;
		for (int i = 0; i < nselected; i++)
		{
			int32		nb = elements[selected[i]];

			if (!ListContainsElement(bs, nb, idx, 0))
				ConnectBack(bs, nb, idx, distances[selected[i]], 0);
		}
		relinked++;
		if ((idx & 255) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	pfree(vectors);
	pfree(distances);
	pfree(elements);
	pfree(selected);
	return relinked;
}

/* Append a finished page image to the index; returns its block number */
static BlockNumber
AppendPage(Relation index, Page image)
{
	Buffer		buf = ReadBufferExtended(index, MAIN_FORKNUM, P_NEW, RBM_NORMAL, NULL);
	BlockNumber blkno = BufferGetBlockNumber(buf);

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	memcpy(BufferGetPage(buf), image, BLCKSZ);
	MarkBufferDirty(buf);
	UnlockReleaseBuffer(buf);
	return blkno;
}

/*
 * Page-filling arithmetic of PageAddItem on a page with HnswPageOpaqueData,
 * used to assign TIDs before anything is written.
 */
typedef struct LayoutCursor
{
	BlockNumber blkno;
	Size		lower;
	Size		upper;
	OffsetNumber next;
} LayoutCursor;

static void
LayoutNewPage(LayoutCursor *cur)
{
	cur->blkno++;
	cur->lower = SizeOfPageHeaderData;
	cur->upper = BLCKSZ - MAXALIGN(sizeof(HnswPageOpaqueData));
	cur->next = FirstOffsetNumber;
}

static ItemPointerData
LayoutPlace(LayoutCursor *cur, Size size)
{
	ItemPointerData tid;

	if (cur->lower + sizeof(ItemIdData) + size > cur->upper)
		LayoutNewPage(cur);
	ItemPointerSet(&tid, cur->blkno, cur->next);
	cur->lower += sizeof(ItemIdData);
	cur->upper -= size;
	cur->next++;
	return tid;
}

/* Breadth-first order over level 0, starting at the entry point */
static int32 *
BreadthFirstOrder(HnswBuildState *bs)
{
	int32	   *order = palloc_extended(sizeof(int32) * Max(bs->nelements, 1), MCXT_ALLOC_HUGE);
	bool	   *seen = palloc_extended(sizeof(bool) * Max(bs->nelements, 1), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	int			head = 0;
	int			tail = 0;
	int32		next = 0;

	if (bs->entry >= 0)
	{
		order[tail++] = bs->entry;
		seen[bs->entry] = true;
	}
	while (tail < bs->nelements)
	{
		if (head == tail)
		{
			/* Unreached from the entry point: start from the next unseen */
			while (seen[next])
				next++;
			order[tail++] = next;
			seen[next] = true;
		}
		while (head < tail)
		{
			BuildElement *e = &bs->elements[order[head++]];
			int			len = ListLength(bs, e, 0);

			for (int i = 0; i < len; i++)
			{
				int32		nb = e->slots[i];

				if (!seen[nb])
				{
					seen[nb] = true;
					order[tail++] = nb;
				}
			}
		}
	}
	pfree(seen);
	return order;
}

/*
 * Fit the codec to the graph's vectors: per dimension, the range from the
 * smallest to the largest value in 256 steps.  Leaves codec.dims at 0 when
 * the index gets no codes (HnswCodecSetLayout).
 */
static void
FitCodec(HnswBuildState *bs)
{
	HnswCodec  *codec = &bs->codec;

	memset(codec, 0, sizeof(HnswCodec));
	if (bs->nelements == 0)
		return;
	HnswCodecSetLayout(codec, bs->dims, bs->m);
	for (int i = 0; i < codec->dims; i++)
	{
		float		lo = bs->elements[0].vec[i];
		float		hi = lo;

		for (int j = 1; j < bs->nelements; j++)
		{
			float		v = bs->elements[j].vec[i];

			lo = Min(lo, v);
			hi = Max(hi, v);
		}
		codec->low[i] = lo;
		codec->step[i] = (hi - lo) / HNSW_CODE_LEVELS;
		/* A constant dimension: any positive step bounds it */
		if (!(codec->step[i] > 0.0f) || !isfinite(codec->step[i]))
			codec->step[i] = 1.0f;
	}
	if (codec->dims > 0)
	{
		bs->codes = palloc_extended((Size) bs->nelements * codec->dims, MCXT_ALLOC_HUGE);
		for (int j = 0; j < bs->nelements; j++)
			HnswCodecEncode(codec, bs->elements[j].vec, bs->codes + (Size) j * codec->dims);
	}
}

/* Translate an element's in-memory lists into item pointers and codes */
static void
FillSlots(HnswBuildState *bs, BuildElement *e, ItemPointer slots)
{
	int			nslots = HnswSlotCount(bs->m, e->level);
	int			codeDims = bs->codec.dims;
	int			ncoded = codeDims > 0 ?
		HnswSlotCount(bs->m, Min(e->level, bs->codec.maxLevel)) : 0;

	for (int i = 0; i < nslots; i++)
	{
		if (e->slots[i] >= 0)
			slots[i] = bs->elements[e->slots[i]].tid;
		else
			ItemPointerSetInvalid(&slots[i]);
	}
	for (int i = 0; i < ncoded; i++)
	{
		if (e->slots[i] >= 0)
			memcpy(HnswSlotCode(slots, bs->m, e->level, &bs->codec, i),
				   bs->codes + (Size) e->slots[i] * codeDims, codeDims);
	}
}

/* Add an item to the page image, starting a new page when it is full */
static void
WriteItem(HnswBuildState *bs, Page image, Item item, Size size, ItemPointer expected)
{
	OffsetNumber off;

	if (PageGetExactFreeSpace(image) < size + sizeof(ItemIdData))
	{
		AppendPage(bs->index, image);
		HnswInitPage(image);
	}
	off = PageAddItem(image, item, size, InvalidOffsetNumber, false, false);
	if (off != ItemPointerGetOffsetNumber(expected))
		elog(ERROR, "hnsw build placed a tuple at offset %u, expected %u (size %zu, lower %u upper %u)",
			 off, ItemPointerGetOffsetNumber(expected), size, ((PageHeader) image)->pd_lower, ((PageHeader) image)->pd_upper);
}

/* Stages 2 and 3: write the in-memory graph after the metapage */
static void
WriteGraph(HnswBuildState *bs)
{
	int32	   *order;
	LayoutCursor cur;
	Page		image;
	BlockNumber lastBlock = InvalidBlockNumber;
	Buffer		metabuf;
	int			relinked;
	HnswMetaPage meta;

	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, HNSW_PHASE_WRITE);

	/* 2. Relink elements with short lists, then order */
	relinked = RelinkWeakElements(bs);
	elog(DEBUG1, "wdc_hnsw build searched again for %d elements", relinked);
	order = BreadthFirstOrder(bs);
	FitCodec(bs);

	/* 3a. Assign TIDs */
	cur.blkno = HNSW_METAPAGE_BLKNO;
	LayoutNewPage(&cur);
	for (int i = 0; i < bs->nelements; i++)
	{
		BuildElement *e = &bs->elements[order[i]];
		bool		isinline = HnswNeighborsFitInline(bs->dims, bs->m, e->level,
													  &bs->codec);

		e->tid = LayoutPlace(&cur, HnswElementTupleSize(bs->dims, bs->m, e->level, isinline,
														&bs->codec));
		if (isinline)
			ItemPointerSetInvalid(&e->ntid);
		else
			e->ntid = LayoutPlace(&cur, HnswNeighborTupleSize(bs->m, e->level,
															  &bs->codec));
	}

	/* 3b. Write the pages */
	image = palloc(BLCKSZ);
	HnswInitPage(image);
	for (int i = 0; i < bs->nelements; i++)
	{
		BuildElement *e = &bs->elements[order[i]];
		bool		isinline = !ItemPointerIsValid(&e->ntid);
		Size		esize;
		HnswElementTuple etup = HnswFormElement(bs->dims, bs->m, e->level, isinline,
												&bs->codec, e->vec, e->fingerprint,
												&esize);

		memcpy(etup->heaptids, e->heaptids, sizeof(e->heaptids));
		etup->nheaptids = e->nheaptids;
		if (isinline)
			FillSlots(bs, e, HnswTupleSlots(etup, bs->dims));
		else
			etup->neighbortid = e->ntid;
		WriteItem(bs, image, (Item) etup, esize, &e->tid);
		pfree(etup);

		if (!isinline)
		{
			Size		nsize;
			HnswNeighborTuple ntup = HnswFormNeighborTuple(bs->m, e->level, &bs->codec,
														   &nsize);

			ntup->elementtid = e->tid;
			FillSlots(bs, e, ntup->slots);
			WriteItem(bs, image, (Item) ntup, nsize, &e->ntid);
			pfree(ntup);
		}
		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	if (bs->nelements > 0)
		lastBlock = AppendPage(bs->index, image);
	pfree(image);
	pfree(order);
	if (bs->codes != NULL)
		pfree(bs->codes);
	bs->codes = NULL;

	/* Entry point and insert hint */
	metabuf = ReadBuffer(bs->index, HNSW_METAPAGE_BLKNO);
	LockBuffer(metabuf, BUFFER_LOCK_EXCLUSIVE);
	meta = HnswPageGetMeta(BufferGetPage(metabuf));
	meta->dims = bs->dims;
	meta->codec = bs->codec;
	if (bs->entry >= 0)
	{
		meta->entryTid = bs->elements[bs->entry].tid;
		meta->entryLevel = bs->entryLevel;
	}
	meta->insertPage = lastBlock;
	MarkBufferDirty(metabuf);
	UnlockReleaseBuffer(metabuf);

	if (RelationNeedsWAL(bs->index))
		log_newpage_range(bs->index, MAIN_FORKNUM, 0,
						  RelationGetNumberOfBlocks(bs->index), true);
}

/* Write the graph built so far and continue with on-disk inserts */
static void
SwitchToOnDisk(HnswBuildState *bs)
{
	ereport(NOTICE,
			(errmsg("wdc_hnsw graph no longer fits into maintenance_work_mem after %.0f tuples",
					bs->indtuples),
			 errdetail("The remaining tuples are inserted one by one on disk, which takes much longer."),
			 errhint("Increase maintenance_work_mem to build the graph in memory.")));
	WriteGraph(bs);
	MemoryContextReset(bs->graphcxt);
	bs->elements = NULL;
	bs->nelements = 0;
	bs->onDisk = true;
	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, HNSW_PHASE_LOAD);
}

/* Table scan callback: index one heap row */
static void
BuildCallback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
			  bool tupleIsAlive, void *state)
{
	HnswBuildState *bs = (HnswBuildState *) state;
	MemoryContext oldcxt;
	int			dims;
	uint32		fingerprint;

	if (isnull[0])
		return;

	oldcxt = MemoryContextSwitchTo(bs->tmpcxt);
	if (HnswPrepareValue(index, bs->metric, values[0], bs->vecbuf, &dims, &fingerprint))
	{
		if (bs->dims == 0)
			bs->dims = dims;
		else if (dims != bs->dims)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("latent has %d dimensions, index \"%s\" expects %d",
							dims, RelationGetRelationName(index), bs->dims)));

		if (bs->onDisk)
			HnswInsertVector(index, bs->vecbuf, dims, fingerprint, tid, bs->tmpcxt);
		else
		{
			BuildInsert(bs, bs->vecbuf, fingerprint, tid);
			if (bs->memoryUsed > bs->memoryLimit && bs->nelements > 1)
				SwitchToOnDisk(bs);
		}
		bs->indtuples++;
		pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) bs->indtuples);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(bs->tmpcxt);
}

/* Write an empty metapage as block 0 of fork */
static void
WriteMetaPage(Relation index, ForkNumber fork, int dims, int m, int efConstruction)
{
	Buffer		buf = ReadBufferExtended(index, fork, P_NEW, RBM_NORMAL, NULL);

	Assert(BufferGetBlockNumber(buf) == HNSW_METAPAGE_BLKNO);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	HnswInitMetaPage(BufferGetPage(buf), dims, m, efConstruction);
	MarkBufferDirty(buf);
	UnlockReleaseBuffer(buf);
}

/* ambuild */
IndexBuildResult *
hnswbuild(Relation heap, Relation index, IndexInfo *indexInfo)
{
	IndexBuildResult *result;
	HnswBuildState bs;
	int32		typmod = TupleDescAttr(index->rd_att, 0)->atttypmod;
	double		reltuples;

	if (RelationGetNumberOfBlocks(index) != 0)
		elog(ERROR, "index \"%s\" already contains data", RelationGetRelationName(index));
	if (typmod > HNSW_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("column of type latent(%d) is too large for a wdc_hnsw index", typmod),
				 errdetail("wdc_hnsw indexes at most %d dimensions.", HNSW_MAX_DIM)));

	memset(&bs, 0, sizeof(bs));
	bs.heap = heap;
	bs.index = index;
	bs.metric = HnswGetMetric(index);
	bs.dims = typmod > 0 ? typmod : 0;
	bs.m = HnswGetM(index);
	bs.efConstruction = HnswGetEfConstruction(index);
	bs.entry = -1;
	bs.entryLevel = -1;
	bs.memoryLimit = (Size) maintenance_work_mem * 1024;
	bs.graphcxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw build graph",
										ALLOCSET_DEFAULT_SIZES);
	bs.tmpcxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw build tuple",
									  ALLOCSET_DEFAULT_SIZES);
	bs.maxelements = 1024;
	bs.elements = MemoryContextAllocExtended(bs.graphcxt, sizeof(BuildElement) * bs.maxelements,
											 MCXT_ALLOC_HUGE);
	bs.visited = MemoryContextAllocExtended(CurrentMemoryContext, sizeof(uint32) * bs.maxelements,
											MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	bs.candidates.capacity = 1024;
	bs.candidates.pairs = palloc(sizeof(BuildPair) * bs.candidates.capacity);
	bs.candidates.max = false;
	bs.result.capacity = Max(bs.efConstruction, HNSW_INSERT_DESCENT_EF) + 2;
	bs.result.pairs = palloc(sizeof(BuildPair) * bs.result.capacity);
	bs.result.max = true;
	bs.found = palloc(sizeof(BuildPair) * (Max(bs.efConstruction, HNSW_INSERT_DESCENT_EF) + 1));
	bs.vecbuf = palloc(sizeof(float) * HNSW_MAX_DIM);

	/* 0. Metapage */
	WriteMetaPage(index, MAIN_FORKNUM, bs.dims, bs.m, bs.efConstruction);

	/* 1. Graph */
	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, HNSW_PHASE_LOAD);
	reltuples = heap->rd_rel->reltuples;
	if (reltuples > 0)
		pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_TOTAL, (int64) reltuples);
	reltuples = table_index_build_scan(heap, index, indexInfo, true, true,
									   BuildCallback, &bs, NULL);

	/* 2 and 3. Pages */
	if (!bs.onDisk)
	{
		if (bs.memoryUsed > bs.memoryLimit)
			ereport(DEBUG1,
					(errmsg("wdc_hnsw graph used %zu kB of maintenance_work_mem",
							bs.memoryUsed / 1024)));
		WriteGraph(&bs);
	}

	MemoryContextDelete(bs.graphcxt);
	MemoryContextDelete(bs.tmpcxt);

	result = palloc(sizeof(IndexBuildResult));
	result->heap_tuples = reltuples;
	result->index_tuples = bs.indtuples;
	return result;
}

/* ambuildempty: the init fork of an unlogged index is an empty metapage */
void
hnswbuildempty(Relation index)
{
	int32		typmod = TupleDescAttr(index->rd_att, 0)->atttypmod;

	WriteMetaPage(index, INIT_FORKNUM, typmod > 0 ? typmod : 0, HnswGetM(index),
				  HnswGetEfConstruction(index));
	log_newpage_range(index, INIT_FORKNUM, 0, 1, true);
}
