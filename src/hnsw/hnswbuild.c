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
 * The graph lives in one area.  An element is a BuildElement header
 * followed by its vector and its neighbour slots, and an offset table finds
 * it, so the same code runs on a private area or on one in dynamic shared
 * memory.
 *
 * Parallel build: PostgreSQL may grant parallel maintenance workers (as it
 * would for a B-tree on this table) when the column has a fixed dimension.
 * Stage 1 then runs in the leader and the workers over a parallel table
 * scan, all inserting into one graph in dynamic shared memory.  Each
 * element's lists are guarded by its own LWLock and the entry point by
 * another; vectors never change once written.  Stages 2 and 3 run in the
 * leader after the workers have finished, because parallel workers cannot
 * write.  Which worker inserts which row varies, so a parallel build is
 * not reproducible the way a serial one is.
 *
 * When the graph outgrows maintenance_work_mem, stages 2 and 3 run on what
 * is there, a NOTICE says so, and the remaining rows go through the
 * ordinary on-disk insert path, which is several times slower.  A parallel
 * build that runs out stops adding to the graph, finishes the scan, writes
 * the graph, and then scans the table again for the rows it left out.
 */
#include "postgres.h"

#include <math.h>

#include "access/parallel.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xloginsert.h"
#include "catalog/index.h"
#include "commands/progress.h"
#include "miscadmin.h"
#include "optimizer/optimizer.h"
#include "optimizer/plancat.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/bufmgr.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "hnsw/hnsw.h"

/*
 * An element of the in-memory graph.  Its vector (dims floats, unit length
 * for cosine) and then its HnswSlotCount(m, level) neighbour slots (element
 * indexes, -1 = empty) follow the header in memory (ElementVec,
 * ElementSlots).
 */
typedef struct BuildElement
{
	LWLock		lock;			/* parallel builds: guards slots and heap TIDs */
	uint8		level;
	uint8		nheaptids;
	uint32		fingerprint;
	ItemPointerData heaptids[HNSW_HEAPTIDS];
	ItemPointerData tid;		/* element tuple, set by the layout */
	ItemPointerData ntid;		/* neighbour tuple, or invalid when inline */
} BuildElement;

#define ElementVec(e)	((float *) ((char *) (e) + MAXALIGN(sizeof(BuildElement))))
#define ElementSlots(bs, e) ((int32 *) (ElementVec(e) + (bs)->dims))

/*
 * State of a parallel build in dynamic shared memory, followed by the
 * parallel table scan (HNSW_SHARED_KEY).  The graph area is a second chunk
 * (HNSW_AREA_KEY): the offset table of maxelements entries, then elements.
 */
typedef struct HnswShared
{
	Oid			heaprelid;
	Oid			indexrelid;
	bool		isconcurrent;
	int			dims;
	int			lwtranche;		/* of the element and entry locks */

	LWLock		entryLock;		/* guards entry and entryLevel */
	int32		entry;
	int			entryLevel;

	Size		areaSize;		/* bytes for elements after the offset table */
	uint32		maxelements;	/* entries of the offset table */
	pg_atomic_uint64 areaUsed;	/* bytes handed out, may pass areaSize */
	pg_atomic_uint32 nelements;
	pg_atomic_uint32 full;		/* 1 once an element did not fit */
	pg_atomic_uint64 tuplesDone;	/* rows indexed, for progress */

	slock_t		mutex;			/* guards the totals below */
	double		reltuples;		/* heap rows seen by finished participants */
	double		indtuples;		/* rows they put into the graph */
} HnswShared;

#define HNSW_SHARED_KEY		UINT64CONST(0xA5A5000000000001)
#define HNSW_AREA_KEY		UINT64CONST(0xA5A5000000000002)
#define HNSW_QUERY_KEY		UINT64CONST(0xA5A5000000000003)

#define ParallelTableScanFromShared(shared) \
	((ParallelTableScanDesc) ((char *) (shared) + BUFFERALIGN(sizeof(HnswShared))))

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

	MemoryContext graphcxt;		/* a private graph area */
	MemoryContext tmpcxt;		/* reset after every row */

	/*
	 * The graph: element idx is at base + offsets[idx].  A private area
	 * grows by reallocation up to memoryLimit; a shared one (shared set)
	 * has a fixed size, and its counters live in shared.
	 */
	char	   *base;
	uint64	   *offsets;
	Size		areaSize;
	Size		areaUsed;
	int			nelements;
	int			maxelements;
	int			entry;			/* element index, -1 when empty */
	int			entryLevel;
	Size		memoryUsed;
	Size		memoryLimit;
	HnswShared *shared;			/* parallel build, else NULL */
	bool		leftOut;		/* parallel: rows were left out of a full graph */
	double		estimatedRows;	/* parallel: rows the area was sized for, or -1
								 * when maintenance_work_mem set its size */
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
	int32	   *listbuf;		/* a copy of one neighbour list */

	/* second pass after a full parallel build: heap TIDs in the graph */
	ItemPointerData *graphTids;
	int64		ngraphTids;

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

static inline BuildElement *
ElementAt(const HnswBuildState *bs, int32 idx)
{
	return (BuildElement *) (bs->base + bs->offsets[idx]);
}

/* Bytes of an element of level: header, vector and slots */
static inline Size
ElementSize(const HnswBuildState *bs, int level)
{
	return MAXALIGN(sizeof(BuildElement)) +
		MAXALIGN(sizeof(float) * bs->dims + sizeof(int32) * HnswSlotCount(bs->m, level));
}

/* Element locks are taken only when other processes share the graph */
static inline void
LockElement(const HnswBuildState *bs, BuildElement *e, LWLockMode mode)
{
	if (bs->shared)
		LWLockAcquire(&e->lock, mode);
}

static inline void
UnlockElement(const HnswBuildState *bs, BuildElement *e)
{
	if (bs->shared)
		LWLockRelease(&e->lock);
}

/* Number of elements; in a parallel build a snapshot of a growing count */
static inline int
ElementCount(const HnswBuildState *bs)
{
	return bs->shared ? (int) pg_atomic_read_u32(&bs->shared->nelements) :
		bs->nelements;
}

/* The entry point and its level, under the entry lock when shared */
static void
GetEntry(HnswBuildState *bs, int32 *entry, int *level)
{
	if (bs->shared)
	{
		LWLockAcquire(&bs->shared->entryLock, LW_SHARED);
		*entry = bs->shared->entry;
		*level = bs->shared->entryLevel;
		LWLockRelease(&bs->shared->entryLock);
	}
	else
	{
		*entry = bs->entry;
		*level = bs->entryLevel;
	}
}

/*
 * Make room for a new element of level and return its index, or -1 when
 * the graph is full.  The element's memory is not yet initialized.  A
 * private area doubles until maintenance_work_mem; a shared one is fixed.
 */
static int32
AllocElement(HnswBuildState *bs, int level)
{
	Size		size = ElementSize(bs, level);
	int32		idx;

	if (bs->shared)
	{
		HnswShared *shared = bs->shared;
		uint64		off;

		if (pg_atomic_read_u32(&shared->full))
			return -1;
		off = pg_atomic_fetch_add_u64(&shared->areaUsed, size);
		if (off + size > shared->areaSize)
		{
			pg_atomic_write_u32(&shared->full, 1);
			return -1;
		}
		/* each element takes at least the smallest size, so idx fits */
		idx = (int32) pg_atomic_fetch_add_u32(&shared->nelements, 1);
		if ((uint32) idx >= shared->maxelements)
			elog(ERROR, "wdc_hnsw parallel build ran past its offset table");
		bs->offsets[idx] = off;
		return idx;
	}

	if (bs->areaUsed + size > bs->areaSize)
	{
		Size		grown = Max(bs->areaSize * 2, bs->areaUsed + size);

		if (bs->memoryUsed - bs->areaSize + grown > bs->memoryLimit)
			grown = bs->memoryLimit - (bs->memoryUsed - bs->areaSize);
		if (grown < bs->areaUsed + size || grown <= bs->areaSize)
			return -1;
		bs->base = repalloc_huge(bs->base, grown);
		bs->memoryUsed += grown - bs->areaSize;
		bs->areaSize = grown;
	}
	if (bs->nelements == bs->maxelements)
	{
		Size		more = sizeof(uint64) + sizeof(uint32);

		if (bs->memoryUsed + more * bs->maxelements > bs->memoryLimit)
			return -1;
		bs->maxelements *= 2;
		bs->offsets = repalloc_huge(bs->offsets, sizeof(uint64) * bs->maxelements);
		bs->visited = repalloc_huge(bs->visited, sizeof(uint32) * bs->maxelements);
		memset(bs->visited + bs->nelements, 0,
			   sizeof(uint32) * (bs->maxelements - bs->nelements));
		bs->memoryUsed += more * (bs->maxelements / 2);
	}
	idx = bs->nelements++;
	bs->offsets[idx] = bs->areaUsed;
	bs->areaUsed += size;
	return idx;
}

/* Number of used slots of an element's list at level lc */
static int
ListLength(const HnswBuildState *bs, const BuildElement *e, int lc)
{
	const int32 *list = ElementSlots(bs, e) + HnswLevelStart(bs->m, lc);
	int			capacity = HnswLevelCapacity(bs->m, lc);
	int			n = 0;

	while (n < capacity && list[n] >= 0)
		n++;
	return n;
}

/*
 * e's level-lc list and its length in *len.  In a parallel build other
 * participants may change the list at any time, so it is copied into
 * bs->listbuf under the element's lock; a serial build reads it in place.
 */
static const int32 *
ReadList(HnswBuildState *bs, BuildElement *e, int lc, int *len)
{
	const int32 *list = ElementSlots(bs, e) + HnswLevelStart(bs->m, lc);

	if (!bs->shared)
	{
		*len = ListLength(bs, e, lc);
		return list;
	}
	LWLockAcquire(&e->lock, LW_SHARED);
	*len = ListLength(bs, e, lc);
	memcpy(bs->listbuf, list, sizeof(int32) * *len);
	LWLockRelease(&e->lock);
	return bs->listbuf;
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
		d = HnswDistance(bs->metric, q, ElementVec(ElementAt(bs, seeds[i])), bs->dims);
		HeapPush(cand, d, seeds[i]);
		HeapPush(res, d, seeds[i]);
		if (res->n > ef)
			HeapPop(res);
	}

	while (cand->n > 0)
	{
		BuildPair	c = HeapPop(cand);
		BuildElement *e = ElementAt(bs, c.element);
		const int32 *list;
		int			len;

		if (res->n >= ef && c.distance > res->pairs[0].distance)
			break;
		if (e->level < lc)
			continue;
		list = ReadList(bs, e, lc, &len);
		for (int i = 0; i < len; i++)
		{
			int32		nb = list[i];
			double		d;

			if (bs->visited[nb] == bs->stamp)
				continue;
			bs->visited[nb] = bs->stamp;
			d = HnswDistance(bs->metric, q, ElementVec(ElementAt(bs, nb)), bs->dims);
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

/* Whether elements a and b contain the same vector */
static inline bool
SameVector(const HnswBuildState *bs, int32 a, int32 b)
{
	return memcmp(ElementVec(ElementAt(bs, a)), ElementVec(ElementAt(bs, b)),
				  sizeof(float) * bs->dims) == 0;
}

/*
 * Add element idx to target's level-lc list, pruning with the heuristic
 * when full.  Holds target's lock throughout in a parallel build.
 */
static void
ConnectBack(HnswBuildState *bs, int32 target, int32 idx, double distance, int lc)
{
	BuildElement *e = ElementAt(bs, target);
	int32	   *list = ElementSlots(bs, e) + HnswLevelStart(bs->m, lc);
	int			capacity = HnswLevelCapacity(bs->m, lc);
	int			len;
	BuildPair  *pairs;
	const float **vectors;
	double	   *distances;
	int		   *selected;
	int			n = 0;
	int			nselected;

	LockElement(bs, e, LW_EXCLUSIVE);
	len = ListLength(bs, e, lc);
	if (len < capacity)
	{
		/*
		 * A copy of target takes a free slot only below the copy limit.
		 * Beyond it, the next pruning would drop one of the copies.
		 */
		if (SameVector(bs, target, idx))
		{
			int			ncopies = 0;

			for (int i = 0; i < len; i++)
				ncopies += SameVector(bs, list[i], idx) ? 1 : 0;
			if (ncopies >= HnswMaxCopies(capacity))
				len = capacity;
		}
		if (len < capacity)
			list[len] = idx;
		UnlockElement(bs, e);
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
			HnswDistance(bs->metric, ElementVec(e), ElementVec(ElementAt(bs, el)),
						 bs->dims) : distance;
		int			j = n;

		/*
		 * The new element goes after existing ones at an equal distance.  A
		 * new copy of a vector then never displaces an older copy, which
		 * might have no other incoming edge (AttachCopy links new copies).
		 */
		while (j > 0 && pairs[j - 1].distance > d)
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
		vectors[i] = ElementVec(ElementAt(bs, pairs[i].element));
		distances[i] = pairs[i].distance;
	}
	nselected = HnswSelectNeighbors(bs->metric, bs->dims, vectors, distances, n,
									capacity, selected);
	for (int i = 0; i < capacity; i++)
		list[i] = i < nselected ? pairs[selected[i]].element : -1;
	UnlockElement(bs, e);
}

/*
 * Link the new element idx from the level-0 list of target, a copy of it
 * (see HnswAttachCopy in hnswinsert.c for the on-disk twin).  A list keeps
 * at most HnswMaxCopies copies of one vector.  When target's list already
 * contains that many, idx takes the place of the last of them, q, and idx's
 * own list gets the edge to q, so q stays reachable through idx.  Reverse
 * edges otherwise never displace an older copy (ConnectBack), so every
 * copy keeps an incoming edge from its group.  chosen[0 .. nchosen) are
 * the neighbours idx's search chose, reachable without idx; only an edge
 * to one of them may make room for q.  In a parallel build, idx's list
 * may meanwhile hold a newer copy that depends on idx.
 */
static void
AttachCopy(HnswBuildState *bs, int32 target, int32 idx, const int32 *chosen, int nchosen)
{
	BuildElement *e = ElementAt(bs, target);
	BuildElement *self = ElementAt(bs, idx);
	int32	   *list = ElementSlots(bs, e);
	int32	   *own = ElementSlots(bs, self);
	int			capacity = HnswLevelCapacity(bs->m, 0);
	int			ncopies = 0;
	int			slot = -1;
	int32		displaced = -1;
	int			len;

	LockElement(bs, e, LW_EXCLUSIVE);
	len = ListLength(bs, e, 0);
	for (int i = 0; i < len; i++)
	{
		if (list[i] == idx)
		{
			UnlockElement(bs, e);
			return;
		}
		if (SameVector(bs, list[i], idx))
		{
			ncopies++;
			slot = i;
		}
	}
	if (ncopies >= HnswMaxCopies(capacity))
	{
		displaced = list[slot];
		list[slot] = idx;
	}
	UnlockElement(bs, e);

	if (displaced < 0)
	{
		ConnectBack(bs, target, idx, HnswDistance(bs->metric, ElementVec(e), ElementVec(self),
												  bs->dims), 0);
		return;
	}

	/*
	 * idx adopts the copy it displaced: in a free slot while its list
	 * contains fewer copies than the limit, else in place of the last copy
	 * that its search chose.  Beyond the limit, a later pruning of the list
	 * would drop a copy again.
	 */
	LockElement(bs, self, LW_EXCLUSIVE);
	len = ListLength(bs, self, 0);
	ncopies = 0;
	slot = -1;
	for (int i = 0; i < len; i++)
	{
		if (own[i] == displaced)
		{
			UnlockElement(bs, self);
			return;
		}
		if (!SameVector(bs, own[i], idx))
			continue;
		ncopies++;
		for (int k = 0; k < nchosen; k++)
			if (chosen[k] == own[i])
				slot = i;
	}
	if (len < capacity && ncopies < HnswMaxCopies(capacity))
		own[len] = displaced;
	else if (slot >= 0)
		own[slot] = displaced;
	UnlockElement(bs, self);
}

static int
ComparePairs(const void *a, const void *b)
{
	double		x = ((const BuildPair *) a)->distance;
	double		y = ((const BuildPair *) b)->distance;

	return (x > y) - (x < y);
}

/* Whether the search result r is a copy of vec (at distance selfDistance) */
static inline bool
IsCopy(const HnswBuildState *bs, const BuildPair *r, const float *vec, double selfDistance)
{
	return r->distance == selfDistance &&
		memcmp(ElementVec(ElementAt(bs, r->element)), vec, sizeof(float) * bs->dims) == 0;
}

/*
 * Candidates for the neighbours of vec at level lc: the nfound results of
 * the last SearchLevel in bs->found, and, when copies of vec leave fewer
 * than capacity - HnswMaxCopies slots for other vectors, the other vectors
 * in the copies' lists.  In a group of identical vectors larger than
 * ef_construction, the search finds only copies.  A new copy linked to
 * copies alone would close the group (see HnswSelectNeighbors), so it also
 * takes candidates from the copies' lists, which still lead out of it.
 * Copies are at distance selfDistance, the distance of vec to itself: 0
 * under L2 and L1, not always under cosine or inner product.
 * Returns the candidates in *out, sorted by distance, and their number.
 */
static int
ExtendWithExits(HnswBuildState *bs, const float *vec, int lc, int nfound,
				double selfDistance, BuildPair **out)
{
	int			capacity = HnswLevelCapacity(bs->m, lc);
	int			reserve = capacity - HnswMaxCopies(capacity);
	int			copies = 0;
	int			maxExtra = 2 * capacity;
	int			n;
	BuildPair  *cand;

	for (int i = 0; i < nfound; i++)
		copies += IsCopy(bs, &bs->found[i], vec, selfDistance) ? 1 : 0;
	cand = palloc(sizeof(BuildPair) * (nfound + maxExtra));
	memcpy(cand, bs->found, sizeof(BuildPair) * nfound);
	n = nfound;
	if (nfound - copies < reserve && copies > 0)
	{
		if (++bs->stamp == 0)
		{
			memset(bs->visited, 0, sizeof(uint32) * bs->maxelements);
			bs->stamp = 1;
		}
		for (int i = 0; i < nfound; i++)
			bs->visited[cand[i].element] = bs->stamp;
		for (int i = 0; i < nfound && n < nfound + maxExtra; i++)
		{
			const int32 *list;
			int			len;

			if (!IsCopy(bs, &cand[i], vec, selfDistance) ||
				ElementAt(bs, cand[i].element)->level < lc)
				continue;
			list = ReadList(bs, ElementAt(bs, cand[i].element), lc, &len);
			for (int k = 0; k < len && n < nfound + maxExtra; k++)
			{
				BuildPair	exit;

				if (bs->visited[list[k]] == bs->stamp)
					continue;
				bs->visited[list[k]] = bs->stamp;
				exit.element = list[k];
				exit.distance = HnswDistance(bs->metric, vec, ElementVec(ElementAt(bs, list[k])),
											 bs->dims);
				if (!IsCopy(bs, &exit, vec, selfDistance))
					cand[n++] = exit;
			}
		}
		qsort(cand, n, sizeof(BuildPair), ComparePairs);
	}
	*out = cand;
	return n;
}

/* Add heaptid to element el if it contains vec and has room; returns whether it did */
static bool
AddHeapTidTo(HnswBuildState *bs, int32 el, const float *vec, uint32 fingerprint,
			 ItemPointer heaptid)
{
	BuildElement *twin = ElementAt(bs, el);
	bool		joined = false;

	LockElement(bs, twin, LW_EXCLUSIVE);
	if (twin->nheaptids < HNSW_HEAPTIDS && twin->fingerprint == fingerprint &&
		memcmp(ElementVec(twin), vec, sizeof(float) * bs->dims) == 0)
	{
		twin->heaptids[twin->nheaptids++] = *heaptid;
		joined = true;
	}
	UnlockElement(bs, twin);
	return joined;
}

/*
 * Add heaptid to a copy of vec with room: one of the nfound results of the
 * last level-0 search, all at the distance of vec to itself, or one in
 * their level-0 lists.  The newest copy is linked only from the copy it
 * was attached to (AttachCopy), and the search rarely returns it, but the
 * next copy's search usually returns that copy again.  Returns whether it
 * joined one.
 */
static bool
JoinCopy(HnswBuildState *bs, const float *vec, uint32 fingerprint, ItemPointer heaptid,
		 int nfound, double selfDistance)
{
	int			ncopies = 0;

	for (int i = 0; i < nfound && bs->found[i].distance <= selfDistance; i++)
	{
		if (bs->found[i].distance != selfDistance)
			continue;
		ncopies++;
		if (AddHeapTidTo(bs, bs->found[i].element, vec, fingerprint, heaptid))
			return true;
	}
	for (int i = 0; i < nfound && ncopies > 0 && bs->found[i].distance <= selfDistance; i++)
	{
		const int32 *list;
		int			len;

		if (bs->found[i].distance != selfDistance)
			continue;
		list = ReadList(bs, ElementAt(bs, bs->found[i].element), 0, &len);
		for (int k = 0; k < len; k++)
		{
			BuildElement *nb = ElementAt(bs, list[k]);

			if (nb->nheaptids < HNSW_HEAPTIDS &&
				memcmp(ElementVec(nb), vec, sizeof(float) * bs->dims) == 0 &&
				AddHeapTidTo(bs, list[k], vec, fingerprint, heaptid))
				return true;
		}
	}
	return false;
}

/*
 * Insert a prepared vector into the in-memory graph.  Returns false, with
 * the graph unchanged, when it has no room for another element.
 */
static bool
BuildInsert(HnswBuildState *bs, const float *vec, uint32 fingerprint, ItemPointer heaptid)
{
	int			level = HnswElementLevel(bs->m, heaptid);
	int32		entry;
	int			entryLevel;
	int			top;
	int32		idx;
	int32	   *seeds = palloc(sizeof(int32) * bs->efConstruction);
	int			nseeds = 0;
	int32	  **chosen = palloc0(sizeof(int32 *) * (level + 1));
	double	  **chosenDistance = palloc0(sizeof(double *) * (level + 1));
	int		   *nchosen = palloc0(sizeof(int) * (level + 1));
	BuildElement *e;
	int32	   *slots;
	int			nslots = HnswSlotCount(bs->m, level);
	double		selfDistance = HnswDistance(bs->metric, vec, vec, bs->dims);

	GetEntry(bs, &entry, &entryLevel);
	top = Min(level, entryLevel);

	/* Descend to the new element's level; see HnswSearchDescend for the beam */
	for (int lc = entryLevel; lc > level && entry >= 0; lc--)
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
		const float **vectors;
		double	   *distances;
		BuildPair  *cand;
		int			ncand;
		int		   *selected = palloc(sizeof(int) * capacity);
		int			nselected;

		/* An identical vector joins a copy with room */
		if (lc == 0 && JoinCopy(bs, vec, fingerprint, heaptid, nfound, selfDistance))
			return true;

		for (int i = 0; i < nfound; i++)
			seeds[i] = bs->found[i].element;
		nseeds = nfound;
		ncand = ExtendWithExits(bs, vec, lc, nfound, selfDistance, &cand);
		vectors = palloc(sizeof(float *) * ncand);
		distances = palloc(sizeof(double) * ncand);
		for (int i = 0; i < ncand; i++)
		{
			vectors[i] = ElementVec(ElementAt(bs, cand[i].element));
			distances[i] = cand[i].distance;
		}
		nselected = HnswSelectNeighbors(bs->metric, bs->dims, vectors, distances,
										ncand, capacity, selected);
		chosen[lc] = palloc(sizeof(int32) * Max(nselected, 1));
		chosenDistance[lc] = palloc(sizeof(double) * Max(nselected, 1));
		for (int i = 0; i < nselected; i++)
		{
			chosen[lc][i] = cand[selected[i]].element;
			chosenDistance[lc][i] = distances[selected[i]];
		}
		nchosen[lc] = nselected;
	}

	/* Add the element, complete before any edge leads to it */
	idx = AllocElement(bs, level);
	if (idx < 0)
		return false;
	e = ElementAt(bs, idx);
	memset(e, 0, sizeof(BuildElement));
	if (bs->shared)
		LWLockInitialize(&e->lock, bs->shared->lwtranche);
	memcpy(ElementVec(e), vec, sizeof(float) * bs->dims);
	slots = ElementSlots(bs, e);
	for (int i = 0; i < nslots; i++)
		slots[i] = -1;
	e->level = level;
	e->fingerprint = fingerprint;
	e->heaptids[0] = *heaptid;
	e->nheaptids = 1;
	for (int lc = 0; lc <= level; lc++)
		for (int i = 0; i < nchosen[lc]; i++)
			slots[HnswLevelStart(bs->m, lc) + i] = chosen[lc][i];

	/*
	 * Edges back.  At level 0 only the nearest copy of vec among the
	 * neighbours links back (AttachCopy).  One incoming edge keeps the new
	 * copy reachable, and edges from more copies would only push older
	 * copies out of full lists.
	 */
	for (int lc = 0; lc <= level; lc++)
	{
		bool		attached = false;

		for (int i = 0; i < nchosen[lc]; i++)
		{
			if (lc == 0 && chosenDistance[lc][i] == selfDistance &&
				SameVector(bs, chosen[lc][i], idx))
			{
				if (!attached)
					AttachCopy(bs, chosen[lc][i], idx, chosen[0], nchosen[0]);
				attached = true;
				continue;
			}
			ConnectBack(bs, chosen[lc][i], idx, chosenDistance[lc][i], lc);
		}
	}

	if (bs->shared)
	{
		HnswShared *shared = bs->shared;

		LWLockAcquire(&shared->entryLock, LW_EXCLUSIVE);
		if (shared->entry < 0 || level > shared->entryLevel)
		{
			shared->entry = idx;
			shared->entryLevel = level;
		}
		LWLockRelease(&shared->entryLock);
	}
	else if (bs->entry < 0 || level > bs->entryLevel)
	{
		bs->entry = idx;
		bs->entryLevel = level;
	}
	return true;
}

/* Whether element target's level-lc list contains idx */
static bool
ListContainsElement(const HnswBuildState *bs, int32 target, int32 idx, int lc)
{
	const BuildElement *e = ElementAt(bs, target);
	const int32 *list = ElementSlots(bs, e) + HnswLevelStart(bs->m, lc);
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
		BuildElement *e = ElementAt(bs, idx);
		int32	   *list = ElementSlots(bs, e);
		int			len = ListLength(bs, e, 0);
		int32		entry = bs->entry;
		int			nfound;
		int			n = 0;
		int			nselected;

		if (len >= capacity / 4 || idx == bs->entry)
			continue;

		for (int lc = bs->entryLevel; lc > 0; lc--)
		{
			if (SearchLevel(bs, ElementVec(e), &entry, 1, HNSW_INSERT_DESCENT_EF, lc) > 0)
				entry = bs->found[0].element;
		}
		nfound = SearchLevel(bs, ElementVec(e), &entry, 1, bs->efConstruction, 0);

		/*
		 * Candidates: the current list, then what the search found, by
		 * distance.  At an equal distance the current neighbours stay
		 * first, so that a copy keeps its edges to other copies.
		 */
		for (int i = 0; i < len + nfound; i++)
		{
			int32		el = i < len ? list[i] : bs->found[i - len].element;
			double		d = i >= len ? bs->found[i - len].distance :
				HnswDistance(bs->metric, ElementVec(e), ElementVec(ElementAt(bs, el)), bs->dims);
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
			vectors[i] = ElementVec(ElementAt(bs, elements[i]));
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
			BuildElement *e = ElementAt(bs, order[head++]);
			int			len = ListLength(bs, e, 0);

			for (int i = 0; i < len; i++)
			{
				int32		nb = ElementSlots(bs, e)[i];

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
 * the index gets no codes (neighbor_codes off, or see HnswCodecSetLayout).
 */
static void
FitCodec(HnswBuildState *bs)
{
	HnswCodec  *codec = &bs->codec;

	memset(codec, 0, sizeof(HnswCodec));
	if (bs->nelements == 0 || !HnswGetNeighborCodes(bs->index))
		return;
	HnswCodecSetLayout(codec, bs->dims, bs->m);
	for (int i = 0; i < codec->dims; i++)
	{
		float		lo = ElementVec(ElementAt(bs, 0))[i];
		float		hi = lo;

		for (int j = 1; j < bs->nelements; j++)
		{
			float		v = ElementVec(ElementAt(bs, j))[i];

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
			HnswCodecEncode(codec, ElementVec(ElementAt(bs, j)),
							bs->codes + (Size) j * codec->dims);
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
		if (ElementSlots(bs, e)[i] >= 0)
			slots[i] = ElementAt(bs, ElementSlots(bs, e)[i])->tid;
		else
			ItemPointerSetInvalid(&slots[i]);
	}
	for (int i = 0; i < ncoded; i++)
	{
		if (ElementSlots(bs, e)[i] >= 0)
			memcpy(HnswSlotCode(slots, bs->m, e->level, &bs->codec, i),
				   bs->codes + (Size) ElementSlots(bs, e)[i] * codeDims, codeDims);
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
		BuildElement *e = ElementAt(bs, order[i]);
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
		BuildElement *e = ElementAt(bs, order[i]);
		bool		isinline = !ItemPointerIsValid(&e->ntid);
		Size		esize;
		HnswElementTuple etup = HnswFormElement(bs->dims, bs->m, e->level, isinline,
												&bs->codec, ElementVec(e), e->fingerprint,
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
		meta->entryTid = ElementAt(bs, bs->entry)->tid;
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
	bs->base = NULL;
	bs->offsets = NULL;
	bs->nelements = 0;
	bs->onDisk = true;
	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, HNSW_PHASE_LOAD);
}

/*
 * Read a row's value into bs->vecbuf; false when it is not indexed (NULL,
 * or a zero vector under cosine).  Checks the dimension.
 */
static bool
PrepareRow(HnswBuildState *bs, Relation index, Datum value, uint32 *fingerprint)
{
	int			dims;

	if (!HnswPrepareValue(index, bs->metric, value, bs->vecbuf, &dims, fingerprint))
		return false;
	if (bs->dims == 0)
		bs->dims = dims;
	else if (dims != bs->dims)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("latent has %d dimensions, index \"%s\" expects %d",
						dims, RelationGetRelationName(index), bs->dims)));
	return true;
}

/* Table scan callback of a serial build: index one heap row */
static void
BuildCallback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
			  bool tupleIsAlive, void *state)
{
	HnswBuildState *bs = (HnswBuildState *) state;
	MemoryContext oldcxt;
	uint32		fingerprint;

	if (isnull[0])
		return;

	oldcxt = MemoryContextSwitchTo(bs->tmpcxt);
	if (PrepareRow(bs, index, values[0], &fingerprint))
	{
		if (!bs->onDisk && !BuildInsert(bs, bs->vecbuf, fingerprint, tid))
			SwitchToOnDisk(bs);
		if (bs->onDisk)
			HnswInsertVector(index, bs->vecbuf, bs->dims, fingerprint, tid, bs->tmpcxt);
		bs->indtuples++;
		pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) bs->indtuples);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(bs->tmpcxt);
}

/*
 * Table scan callback of a parallel build, in the leader and the workers.
 * Once the shared graph is full, rows are skipped, and the leader indexes
 * them after the graph is written (SecondPassCallback).
 */
static void
ParallelBuildCallback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
					  bool tupleIsAlive, void *state)
{
	HnswBuildState *bs = (HnswBuildState *) state;
	MemoryContext oldcxt;
	uint32		fingerprint;

	if (isnull[0])
		return;
	if (pg_atomic_read_u32(&bs->shared->full))
	{
		bs->leftOut = true;
		return;
	}

	oldcxt = MemoryContextSwitchTo(bs->tmpcxt);
	if (PrepareRow(bs, index, values[0], &fingerprint))
	{
		if (BuildInsert(bs, bs->vecbuf, fingerprint, tid))
		{
			uint64		done = pg_atomic_add_fetch_u64(&bs->shared->tuplesDone, 1);

			bs->indtuples++;
			/* only the leader reports progress, for all participants */
			if (!IsParallelWorker() && (done & 255) == 0)
				pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) done);
		}
		else
			bs->leftOut = true;
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(bs->tmpcxt);
}

static int
CompareTids(const void *a, const void *b)
{
	return ItemPointerCompare((ItemPointer) a, (ItemPointer) b);
}

/*
 * Table scan callback of the pass after a full parallel build: index on
 * disk every row whose heap TID is not in the graph (bs->graphTids).
 */
static void
SecondPassCallback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
				   bool tupleIsAlive, void *state)
{
	HnswBuildState *bs = (HnswBuildState *) state;

	/* bs->onDisk is set, so BuildCallback inserts on disk */
	if (bsearch(tid, bs->graphTids, bs->ngraphTids, sizeof(ItemPointerData),
				CompareTids) == NULL)
		BuildCallback(index, tid, values, isnull, tupleIsAlive, state);
}

/* Search scratch and settings shared by every kind of participant */
static void
InitBuildState(HnswBuildState *bs, Relation heap, Relation index, int dims)
{
	memset(bs, 0, sizeof(*bs));
	bs->heap = heap;
	bs->index = index;
	bs->metric = HnswGetMetric(index);
	bs->dims = dims;
	bs->m = HnswGetM(index);
	bs->efConstruction = HnswGetEfConstruction(index);
	bs->entry = -1;
	bs->entryLevel = -1;
	bs->memoryLimit = (Size) maintenance_work_mem * 1024;
	bs->graphcxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw build graph",
										 ALLOCSET_DEFAULT_SIZES);
	bs->tmpcxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw build tuple",
									   ALLOCSET_DEFAULT_SIZES);
	bs->candidates.capacity = 1024;
	bs->candidates.pairs = palloc(sizeof(BuildPair) * bs->candidates.capacity);
	bs->candidates.max = false;
	bs->result.capacity = Max(bs->efConstruction, HNSW_INSERT_DESCENT_EF) + 2;
	bs->result.pairs = palloc(sizeof(BuildPair) * bs->result.capacity);
	bs->result.max = true;
	bs->found = palloc(sizeof(BuildPair) * (Max(bs->efConstruction, HNSW_INSERT_DESCENT_EF) + 1));
	bs->vecbuf = palloc(sizeof(float) * HNSW_MAX_DIM);
	bs->listbuf = palloc(sizeof(int32) * HnswLevelCapacity(bs->m, 0));
}

/* Attach bs to the shared graph: its area and a visited array of its size */
static void
AttachSharedGraph(HnswBuildState *bs, HnswShared *shared, char *area)
{
	bs->shared = shared;
	bs->offsets = (uint64 *) area;
	bs->base = area + MAXALIGN(sizeof(uint64) * shared->maxelements);
	bs->maxelements = shared->maxelements;
	bs->visited = MemoryContextAllocExtended(CurrentMemoryContext,
											 sizeof(uint32) * bs->maxelements,
											 MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	LWLockRegisterTranche(shared->lwtranche, "wdc_hnsw_build");
}

/* Scan this participant's share of the table into the shared graph */
static void
ParallelScanAndInsert(HnswBuildState *bs, Relation heap, Relation index,
					  HnswShared *shared, bool progress)
{
	IndexInfo  *indexInfo = BuildIndexInfo(index);
	TableScanDesc scan;
	double		reltuples;

	indexInfo->ii_Concurrent = shared->isconcurrent;
	scan = table_beginscan_parallel(heap, ParallelTableScanFromShared(shared));
	reltuples = table_index_build_scan(heap, index, indexInfo, true, progress,
									   ParallelBuildCallback, bs, scan);
	SpinLockAcquire(&shared->mutex);
	shared->reltuples += reltuples;
	shared->indtuples += bs->indtuples;
	SpinLockRelease(&shared->mutex);
}

/* Entry point of a parallel build worker (see CreateParallelContext) */
PGDLLEXPORT void HnswParallelBuildMain(dsm_segment *seg, shm_toc *toc);

void
HnswParallelBuildMain(dsm_segment *seg, shm_toc *toc)
{
	HnswShared *shared = shm_toc_lookup(toc, HNSW_SHARED_KEY, false);
	char	   *area = shm_toc_lookup(toc, HNSW_AREA_KEY, false);
	LOCKMODE	heapLockmode;
	LOCKMODE	indexLockmode;
	Relation	heap;
	Relation	index;
	HnswBuildState bs;

	debug_query_string = shm_toc_lookup(toc, HNSW_QUERY_KEY, true);
	pgstat_report_activity(STATE_RUNNING, debug_query_string);

	/* the leader holds the same locks; these join its lock group */
	if (!shared->isconcurrent)
	{
		heapLockmode = ShareLock;
		indexLockmode = AccessExclusiveLock;
	}
	else
	{
		heapLockmode = ShareUpdateExclusiveLock;
		indexLockmode = RowExclusiveLock;
	}
	heap = table_open(shared->heaprelid, heapLockmode);
	index = index_open(shared->indexrelid, indexLockmode);

	InitBuildState(&bs, heap, index, shared->dims);
	AttachSharedGraph(&bs, shared, area);
	ParallelScanAndInsert(&bs, heap, index, shared, false);

	index_close(index, indexLockmode);
	table_close(heap, heapLockmode);
}

/* Rows of the table as the planner would estimate them now */
static double
EstimatedRows(Relation heap)
{
	BlockNumber pages;
	double		tuples;
	double		allvisfrac;

	estimate_rel_size(heap, NULL, &pages, &tuples, &allvisfrac);
	return tuples;
}

/* Average bytes of an element, for sizing an area */
static Size
AverageElementSize(const HnswBuildState *bs)
{
	/* level l is reached with probability m^-l: m / (m - 1) upper slots on average */
	return MAXALIGN(sizeof(BuildElement)) + sizeof(uint64) +
		MAXALIGN(sizeof(float) * bs->dims +
				 sizeof(int32) * (2 * bs->m + bs->m / Max(bs->m - 1, 1) + 1));
}

/*
 * Number of parallel workers for this build, or 0 for a serial one.  The
 * graph's size must be known up front, which needs the dimension from the
 * column type.
 */
static int
ParallelWorkers(Relation heap, Relation index, const HnswBuildState *bs)
{
	if (bs->dims == 0 || !IsUnderPostmaster)
		return 0;
	/* the same decision PostgreSQL makes for a B-tree on this table */
	return plan_create_index_workers(RelationGetRelid(heap), RelationGetRelid(index));
}

/*
 * Stage 1 with parallel workers.  Returns false, having done nothing, when
 * no dynamic shared memory or no worker could be had; the caller then
 * builds serially.  Otherwise the shared graph is copied into bs as a
 * private one (the DSM segment is gone after this), and bs->leftOut is true
 * when rows did not fit.
 */
static bool
BuildGraphParallel(HnswBuildState *bs, Relation heap, Relation index,
				   IndexInfo *indexInfo, int nworkers, double *reltuples)
{
	ParallelContext *pcxt;
	Snapshot	snapshot;
	Size		sharedSize;
	Size		areaSize;
	Size		minElement = ElementSize(bs, 0) + sizeof(uint64);
	uint32		maxelements;
	double		tuples;
	HnswShared *shared;
	char	   *area;
	char	   *query;
	Size		querylen;
	bool		leftOut = false;

	/* room for the table's rows as estimated now, within maintenance_work_mem */
	tuples = EstimatedRows(heap);
	areaSize = (Size) Min((double) bs->memoryLimit,
						  Max(tuples, 1024.0) * 1.2 * AverageElementSize(bs) + 1024 * 1024);
	bs->estimatedRows = areaSize < bs->memoryLimit ? Max(tuples, 1024.0) : -1;
	maxelements = (uint32) Min((Size) PG_INT32_MAX / 2, areaSize / minElement);

	EnterParallelMode();
	pcxt = CreateParallelContext("$libdir/wdc", "HnswParallelBuildMain", nworkers);

	snapshot = indexInfo->ii_Concurrent ? RegisterSnapshot(GetTransactionSnapshot()) :
		SnapshotAny;
	sharedSize = add_size(BUFFERALIGN(sizeof(HnswShared)),
						  table_parallelscan_estimate(heap, snapshot));
	shm_toc_estimate_chunk(&pcxt->estimator, sharedSize);
	shm_toc_estimate_chunk(&pcxt->estimator, areaSize);
	querylen = debug_query_string ? strlen(debug_query_string) : 0;
	shm_toc_estimate_chunk(&pcxt->estimator, querylen + 1);
	shm_toc_estimate_keys(&pcxt->estimator, 3);

	InitializeParallelDSM(pcxt);
	if (pcxt->seg == NULL)
	{
		if (IsMVCCSnapshot(snapshot))
			UnregisterSnapshot(snapshot);
		DestroyParallelContext(pcxt);
		ExitParallelMode();
		return false;
	}

	shared = shm_toc_allocate(pcxt->toc, sharedSize);
	memset(shared, 0, sizeof(HnswShared));
	shared->heaprelid = RelationGetRelid(heap);
	shared->indexrelid = RelationGetRelid(index);
	shared->isconcurrent = indexInfo->ii_Concurrent;
	shared->dims = bs->dims;
	shared->lwtranche = LWLockNewTrancheId();
	LWLockInitialize(&shared->entryLock, shared->lwtranche);
	shared->entry = -1;
	shared->entryLevel = -1;
	shared->maxelements = maxelements;
	shared->areaSize = areaSize - MAXALIGN(sizeof(uint64) * maxelements);
	pg_atomic_init_u64(&shared->areaUsed, 0);
	pg_atomic_init_u32(&shared->nelements, 0);
	pg_atomic_init_u32(&shared->full, 0);
	pg_atomic_init_u64(&shared->tuplesDone, 0);
	SpinLockInit(&shared->mutex);
	table_parallelscan_initialize(heap, ParallelTableScanFromShared(shared), snapshot);
	shm_toc_insert(pcxt->toc, HNSW_SHARED_KEY, shared);

	area = shm_toc_allocate(pcxt->toc, areaSize);
	shm_toc_insert(pcxt->toc, HNSW_AREA_KEY, area);

	query = shm_toc_allocate(pcxt->toc, querylen + 1);
	if (querylen > 0)
		memcpy(query, debug_query_string, querylen);
	query[querylen] = '\0';
	shm_toc_insert(pcxt->toc, HNSW_QUERY_KEY, query);

	LaunchParallelWorkers(pcxt);
	if (pcxt->nworkers_launched == 0)
	{
		WaitForParallelWorkersToFinish(pcxt);
		if (IsMVCCSnapshot(snapshot))
			UnregisterSnapshot(snapshot);
		DestroyParallelContext(pcxt);
		ExitParallelMode();
		return false;
	}
	ereport(DEBUG1,
			(errmsg("wdc_hnsw build with %d parallel workers, graph area %zu kB",
					pcxt->nworkers_launched, areaSize / 1024)));

	/* the leader takes part, then waits for the workers */
	AttachSharedGraph(bs, shared, area);
	ParallelScanAndInsert(bs, heap, index, shared, true);
	WaitForParallelWorkersToFinish(pcxt);

	/* copy the graph out of shared memory before it goes */
	bs->nelements = (int) pg_atomic_read_u32(&shared->nelements);
	bs->entry = shared->entry;
	bs->entryLevel = shared->entryLevel;
	bs->areaUsed = Min((Size) pg_atomic_read_u64(&shared->areaUsed), shared->areaSize);
	bs->areaSize = bs->areaUsed;
	bs->offsets = MemoryContextAllocExtended(bs->graphcxt,
											 sizeof(uint64) * Max(bs->nelements, 1),
											 MCXT_ALLOC_HUGE);
	memcpy(bs->offsets, area, sizeof(uint64) * bs->nelements);
	bs->base = MemoryContextAllocExtended(bs->graphcxt, Max(bs->areaUsed, 1),
										  MCXT_ALLOC_HUGE);
	memcpy(bs->base, area + MAXALIGN(sizeof(uint64) * shared->maxelements), bs->areaUsed);
	bs->memoryUsed = bs->areaUsed + sizeof(uint64) * bs->nelements;
	*reltuples = shared->reltuples;
	bs->indtuples = shared->indtuples;
	leftOut = pg_atomic_read_u32(&shared->full) != 0;

	bs->shared = NULL;
	if (IsMVCCSnapshot(snapshot))
		UnregisterSnapshot(snapshot);
	DestroyParallelContext(pcxt);
	ExitParallelMode();

	bs->leftOut = leftOut;
	pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) bs->indtuples);
	return true;
}

/*
 * After a parallel build ran out of memory: index on disk the rows that did
 * not make it into the graph, which has been written.
 */
static void
IndexLeftOutRows(HnswBuildState *bs, Relation heap, Relation index, IndexInfo *indexInfo)
{
	int64		n = 0;

	if (bs->estimatedRows < 0)
		ereport(NOTICE,
				(errmsg("wdc_hnsw graph no longer fits into maintenance_work_mem after %.0f tuples",
						bs->indtuples),
				 errdetail("The table is scanned again and the remaining tuples are inserted one by one on disk, which takes much longer."),
				 errhint("Increase maintenance_work_mem to build the graph in memory.")));
	else
		ereport(NOTICE,
				(errmsg("wdc_hnsw graph outgrew the shared memory sized for %.0f estimated rows after %.0f tuples",
						bs->estimatedRows, bs->indtuples),
				 errdetail("The table is scanned again and the remaining tuples are inserted one by one on disk, which takes much longer."),
				 errhint("Run ANALYZE on the table before building the index, so that the estimate is current.")));

	for (int i = 0; i < bs->nelements; i++)
		n += ElementAt(bs, i)->nheaptids;
	bs->graphTids = palloc_extended(sizeof(ItemPointerData) * Max(n, 1), MCXT_ALLOC_HUGE);
	for (int i = 0; i < bs->nelements; i++)
	{
		BuildElement *e = ElementAt(bs, i);

		for (int k = 0; k < e->nheaptids; k++)
			bs->graphTids[bs->ngraphTids++] = e->heaptids[k];
	}
	qsort(bs->graphTids, bs->ngraphTids, sizeof(ItemPointerData), CompareTids);

	/* the graph itself is on disk now */
	MemoryContextReset(bs->graphcxt);
	bs->base = NULL;
	bs->offsets = NULL;
	bs->nelements = 0;
	bs->onDisk = true;
	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, HNSW_PHASE_LOAD);
	table_index_build_scan(heap, index, indexInfo, true, true,
						   SecondPassCallback, bs, NULL);
	pfree(bs->graphTids);
	bs->graphTids = NULL;
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
	int			nworkers;
	bool		parallel = false;

	if (RelationGetNumberOfBlocks(index) != 0)
		elog(ERROR, "index \"%s\" already contains data", RelationGetRelationName(index));
	if (typmod > HNSW_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("column of type latent(%d) is too large for a wdc_hnsw index", typmod),
				 errdetail("wdc_hnsw indexes at most %d dimensions.", HNSW_MAX_DIM)));

	InitBuildState(&bs, heap, index, typmod > 0 ? typmod : 0);

	/* 0. Metapage */
	WriteMetaPage(index, MAIN_FORKNUM, bs.dims, bs.m, bs.efConstruction);

	/* 1. Graph */
	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, HNSW_PHASE_LOAD);
	reltuples = heap->rd_rel->reltuples;
	if (reltuples > 0)
		pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_TOTAL, (int64) reltuples);
	nworkers = ParallelWorkers(heap, index, &bs);
	if (nworkers > 0)
		parallel = BuildGraphParallel(&bs, heap, index, indexInfo, nworkers, &reltuples);
	if (!parallel)
	{
		/*
		 * A private area that grows by doubling, first sized for the
		 * estimated rows when the dimension is known, else 1 MB.
		 */
		bs.areaSize = Min((Size) 1024 * 1024, bs.memoryLimit / 2);
		if (bs.dims > 0)
			bs.areaSize = (Size) Max((double) bs.areaSize,
									 Min((double) bs.memoryLimit / 2,
										 EstimatedRows(heap) * 1.1 * AverageElementSize(&bs)));
		bs.base = MemoryContextAllocExtended(bs.graphcxt, bs.areaSize, MCXT_ALLOC_HUGE);
		bs.maxelements = 1024;
		bs.offsets = MemoryContextAllocExtended(bs.graphcxt, sizeof(uint64) * bs.maxelements,
												MCXT_ALLOC_HUGE);
		bs.visited = MemoryContextAllocExtended(CurrentMemoryContext,
												sizeof(uint32) * bs.maxelements,
												MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
		bs.memoryUsed = bs.areaSize + (sizeof(uint64) + sizeof(uint32)) * bs.maxelements;
		reltuples = table_index_build_scan(heap, index, indexInfo, true, true,
										   BuildCallback, &bs, NULL);
	}

	/* 2 and 3. Pages */
	if (!bs.onDisk)
		WriteGraph(&bs);
	if (bs.leftOut)
		IndexLeftOutRows(&bs, heap, index, indexInfo);

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
