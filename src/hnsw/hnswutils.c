/*
 * hnswutils.c
 *	  Distances, page and tuple helpers, neighbour selection and the
 *	  on-disk layer search shared by inserts and scans.
 *
 * The layer search copies what it needs from each element under a share
 * lock.  It reads elements in chunks (LoadElements), holding share locks
 * on up to HNSW_LOAD_CHUNK pages at once; this cannot deadlock because
 * writers never wait for a buffer while holding another buffer's lock.
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "pgstat.h"
#include "storage/bufpage.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "hnsw/hnsw.h"
#include "latent/distance.h"

/* Visited set keyed by element TID */
#define SH_PREFIX hnsw_visited
#define SH_ELEMENT_TYPE HnswVisitedEntry
#define SH_KEY_TYPE ItemPointerData
#define SH_KEY tid
#define SH_HASH_KEY(tb, key) HnswHashTid(key)
#define SH_EQUAL(tb, a, b) ItemPointerEquals(&(a), &(b))
#define SH_SCOPE extern
#define SH_DEFINE
#include "lib/simplehash.h"

/*
 * Return the distance measure of the index's opclass.  The distance
 * support function must be one of the latent distance functions; its name
 * selects the kernel, so the index never calls through fmgr per distance.
 */
HnswMetric
HnswGetMetric(Relation index)
{
	HnswRelInfo *info = (HnswRelInfo *) index->rd_amcache;

	if (info == NULL)
	{
		Oid			procid = index_getprocid(index, 1, HNSW_DISTANCE_PROC);
		char	   *name = get_func_name(procid);
		HnswMetric	metric;

		if (name != NULL && strcmp(name, "l2_distance") == 0)
			metric = HNSW_METRIC_L2;
		else if (name != NULL && strcmp(name, "cosine_distance") == 0)
			metric = HNSW_METRIC_COSINE;
		else if (name != NULL && strcmp(name, "negative_inner_product") == 0)
			metric = HNSW_METRIC_IP;
		else if (name != NULL && strcmp(name, "l1_distance") == 0)
			metric = HNSW_METRIC_L1;
		else
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("unsupported distance function \"%s\" in index \"%s\"",
							name ? name : "?", RelationGetRelationName(index)),
					 errhint("Use one of the operator classes latent_l2_ops, latent_cosine_ops, latent_ip_ops or latent_l1_ops.")));

		info = MemoryContextAllocZero(index->rd_indexcxt, sizeof(HnswRelInfo));
		info->metric = metric;
		index->rd_amcache = info;
	}
	return info->metric;
}

/*
 * Return the index's internal distance between a and b.  It orders pairs
 * as the opclass operator does but is not always equal to it: L2 is
 * squared, cosine assumes unit vectors.
 */
double
HnswDistance(HnswMetric metric, const float *a, const float *b, int dims)
{
	switch (metric)
	{
		case HNSW_METRIC_L2:
			return latent_l2_squared(a, b, dims);
		case HNSW_METRIC_COSINE:
			return 1.0 - latent_dot(a, b, dims);
		case HNSW_METRIC_IP:
			return -latent_dot(a, b, dims);
		case HNSW_METRIC_L1:
			return latent_l1(a, b, dims);
	}
	return 0.0;					/* keep compiler quiet */
}

/*
 * Copy x into out as the index stores it: unit length for cosine.  Returns
 * false for a vector the index leaves out (zero norm under cosine, whose
 * distance to anything is undefined).
 */
bool
HnswPrepareVector(HnswMetric metric, const float *x, int dims, float *out)
{
	if (metric == HNSW_METRIC_COSINE)
	{
		double		norm = sqrt(latent_norm_squared(x, dims));

		if (norm == 0.0 || !isfinite(norm))
			return false;
		for (int i = 0; i < dims; i++)
			out[i] = (float) (x[i] / norm);
		return true;
	}
	memcpy(out, x, sizeof(float) * dims);
	return true;
}

/*
 * Return the level of the element for heap row heaptid: a draw from the
 * geometric distribution of the HNSW paper (mL = 1 / ln m), capped at
 * HNSW_MAX_LEVEL.  The draw is seeded with the heap TID instead of the
 * backend's random state, so the same table builds the same graph every
 * time, and CREATE INDEX and later inserts assign levels the same way.
 */
int
HnswElementLevel(int m, ItemPointer heaptid)
{
	pg_prng_state state;
	uint64		key = ((uint64) ItemPointerGetBlockNumberNoCheck(heaptid) << 16) |
		ItemPointerGetOffsetNumberNoCheck(heaptid);
	double		ml = 1.0 / log((double) m);
	double		u;
	double		level;

	pg_prng_seed(&state, key ^ HNSW_LEVEL_SEED);
	u = pg_prng_double(&state);
	level = floor(-log(1.0 - u) * ml);
	return level > HNSW_MAX_LEVEL ? HNSW_MAX_LEVEL : (int) level;
}

/* Slots of an element of this level that carry codes (levels 0 to maxLevel) */
static int
CodedSlots(int m, int level, const HnswCodec *codec)
{
	if (codec == NULL || codec->dims == 0)
		return 0;
	return HnswSlotCount(m, Min(level, codec->maxLevel));
}

/* Bytes of an element's slots: item pointers, then the codes */
static Size
SlotsSize(int m, int level, const HnswCodec *codec)
{
	Size		size = sizeof(ItemPointerData) * HnswSlotCount(m, level);

	if (codec != NULL)
		size += (Size) codec->dims * CodedSlots(m, level, codec);
	return size;
}

/* Size of an element tuple, with or without its neighbour slots inline */
Size
HnswElementTupleSize(int dims, int m, int level, bool inlineNeighbors,
					 const HnswCodec *codec)
{
	Size		size = HnswElementHeaderSize + sizeof(float4) * dims;

	if (inlineNeighbors)
		size += SlotsSize(m, level, codec);
	return MAXALIGN(size);
}

/* Size of a separate neighbour tuple */
Size
HnswNeighborTupleSize(int m, int level, const HnswCodec *codec)
{
	return MAXALIGN(HnswNeighborHeaderSize + SlotsSize(m, level, codec));
}

/* Whether an element's vector and lists fit together in one tuple */
bool
HnswNeighborsFitInline(int dims, int m, int level, const HnswCodec *codec)
{
	return HnswElementTupleSize(dims, m, level, true, codec) <= HNSW_MAX_ITEM_SIZE;
}

/* Code bytes per slot at level lc: 0 where the slots carry no codes */
int
HnswLevelCodeDims(const HnswCodec *codec, int lc)
{
	if (codec == NULL || lc > codec->maxLevel)
		return 0;
	return codec->dims;
}

/*
 * Code of slot number slot (counted over all levels, as HnswLevelStart
 * does) of an element of this level, given its slot array.  Only slots of
 * levels 0 to codec->maxLevel have one.
 */
uint8 *
HnswSlotCode(ItemPointer slots, int m, int level, const HnswCodec *codec, int slot)
{
	return (uint8 *) (slots + HnswSlotCount(m, level)) + (Size) slot * codec->dims;
}

/*
 * Set the code width and the highest coded level of an index with these
 * dimensions and m.  Vectors wider than HNSW_CODE_MAX_DIMS get no codes.
 * Otherwise the levels from 0 up get codes as far as the lists of an
 * element of level HNSW_MAX_LEVEL still fit on a page.
 */
void
HnswCodecSetLayout(HnswCodec *codec, int dims, int m)
{
	codec->dims = 0;
	codec->maxLevel = 0;
	if (dims <= 0 || dims > HNSW_CODE_MAX_DIMS)
		return;
	codec->dims = dims;
	for (int level = HNSW_MAX_LEVEL; level >= 0; level--)
	{
		codec->maxLevel = level;
		if (HnswNeighborTupleSize(m, HNSW_MAX_LEVEL, codec) <= HNSW_MAX_ITEM_SIZE)
			return;
	}
	codec->dims = 0;
	codec->maxLevel = 0;
}

/* Write the code of vector x (codec->dims bytes) to code */
void
HnswCodecEncode(const HnswCodec *codec, const float *x, uint8 *code)
{
	for (int i = 0; i < codec->dims; i++)
	{
		float		v = (x[i] - codec->low[i]) / codec->step[i];

		/* Written so that NaN gets code 0 */
		if (!(v >= 1.0f))
			code[i] = 0;
		else if (v >= HNSW_CODE_LEVELS - 1)
			code[i] = HNSW_CODE_LEVELS - 1;
		else
			code[i] = (uint8) v;
	}
}

/*
 * Build the table of lower bounds for query: entry [i * 256 + c] bounds
 * from below dimension i's share of the distance from query to any vector
 * whose code has c in dimension i, so that the sum over a code's entries
 * bounds the internal distance (HnswDistance) from below.  Code intervals
 * are widened by a thousandth of a step so that rounding in
 * HnswCodecEncode never puts a value outside its code's interval.
 */
const float *
HnswBoundTable(const HnswCodec *codec, HnswMetric metric, const float *query,
			   MemoryContext cxt)
{
	float	   *table = MemoryContextAlloc(cxt, sizeof(float) * HNSW_CODE_LEVELS * codec->dims);
	const int	top = HNSW_CODE_LEVELS - 1;

	for (int i = 0; i < codec->dims; i++)
	{
		float		q = query[i];
		float		step = codec->step[i];
		float		slack = step * 1e-3f + fabsf(codec->low[i]) * 1e-6f;
		float		offset = q - codec->low[i];
		float	   *row = table + i * HNSW_CODE_LEVELS;

		switch (metric)
		{
			case HNSW_METRIC_L2:
			case HNSW_METRIC_L1:
				/* Distance from q to the interval; code 0 open below, 255 above */
				for (int c = 0; c < HNSW_CODE_LEVELS; c++)
				{
					float		below = c * step - slack - offset;
					float		above = offset - (c + 1) * step - slack;
					float		gap;

					if (c == 0)
						below = 0.0f;
					if (c == top)
						above = 0.0f;
					gap = Max(0.0f, Max(below, above));
					row[c] = metric == HNSW_METRIC_L2 ? gap * gap : gap;
				}
				break;
			case HNSW_METRIC_COSINE:
			case HNSW_METRIC_IP:
				/* -q * x is smallest at the interval's end in the direction of q */
				for (int c = 0; c < HNSW_CODE_LEVELS; c++)
				{
					if (q > 0.0f)
						row[c] = c == top ? -INFINITY :
							-q * (codec->low[i] + (c + 1) * step + slack);
					else if (q < 0.0f)
						row[c] = c == 0 ? -INFINITY :
							-q * (codec->low[i] + c * step - slack);
					else
						row[c] = 0.0f;
				}
				/* 1 - dot for cosine: the constant goes into dimension 0 */
				if (metric == HNSW_METRIC_COSINE && i == 0)
					for (int c = 0; c < HNSW_CODE_LEVELS; c++)
						row[c] += 1.0f;
				break;
		}
	}
	return table;
}

/* Inline neighbour slots of an element tuple (neighbortid invalid) */
ItemPointer
HnswTupleSlots(HnswElementTuple etup, int dims)
{
	return (ItemPointer) ((char *) etup->x + sizeof(float4) * dims);
}

/* Initialise an empty data page */
void
HnswInitPage(Page page)
{
	PageInit(page, BLCKSZ, sizeof(HnswPageOpaqueData));
	HnswPageGetOpaque(page)->page_id = HNSW_PAGE_ID;
}

/* Initialise the metapage of an empty index */
void
HnswInitMetaPage(Page page, int dims, int m, int efConstruction)
{
	HnswMetaPage meta;

	HnswInitPage(page);
	meta = HnswPageGetMeta(page);
	memset(meta, 0, sizeof(HnswMetaPageData));
	meta->magic = HNSW_MAGIC;
	meta->version = HNSW_FORMAT_VERSION;
	meta->dims = dims;
	meta->m = m;
	meta->efConstruction = efConstruction;
	ItemPointerSetInvalid(&meta->entryTid);
	meta->entryLevel = -1;
	meta->insertPage = InvalidBlockNumber;
	((PageHeader) page)->pd_lower =
		((char *) meta + sizeof(HnswMetaPageData)) - (char *) page;
}

/* Copy the metapage, checking that it is one this build reads */
void
HnswReadMeta(Relation index, HnswMetaPageData *meta)
{
	Buffer		buf = ReadBuffer(index, HNSW_METAPAGE_BLKNO);

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	memcpy(meta, HnswPageGetMeta(BufferGetPage(buf)), sizeof(HnswMetaPageData));
	UnlockReleaseBuffer(buf);

	if (meta->magic != HNSW_MAGIC)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("index \"%s\" is not a wdc_hnsw index",
						RelationGetRelationName(index))));
	if (meta->version != HNSW_FORMAT_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("index \"%s\" has format version %u, expected %d",
						RelationGetRelationName(index), meta->version,
						HNSW_FORMAT_VERSION),
				 errhint("REINDEX the index.")));
}

/* Element tuple at off, or NULL when the slot has none (removed by vacuum) */
HnswElementTuple
HnswGetElement(Page page, OffsetNumber off)
{
	ItemId		itemid;
	HnswElementTuple etup;

	if (off < FirstOffsetNumber || off > PageGetMaxOffsetNumber(page))
		return NULL;
	itemid = PageGetItemId(page, off);
	if (!ItemIdIsNormal(itemid))
		return NULL;
	etup = (HnswElementTuple) PageGetItem(page, itemid);
	if (etup->type != HNSW_ELEMENT_TUPLE)
		return NULL;
	return etup;
}

/* Neighbour tuple at off, or NULL when the slot has none */
HnswNeighborTuple
HnswGetNeighborTuple(Page page, OffsetNumber off)
{
	ItemId		itemid;
	HnswNeighborTuple ntup;

	if (off < FirstOffsetNumber || off > PageGetMaxOffsetNumber(page))
		return NULL;
	itemid = PageGetItemId(page, off);
	if (!ItemIdIsNormal(itemid))
		return NULL;
	ntup = (HnswNeighborTuple) PageGetItem(page, itemid);
	if (ntup->type != HNSW_NEIGHBOR_TUPLE)
		return NULL;
	return ntup;
}

/*
 * Copies of one vector that a list of this capacity keeps: all but a
 * quarter of the slots (at least one), which stay for other vectors.
 */
int
HnswMaxCopies(int capacity)
{
	return Max(capacity - Max(capacity / 4, 1), 1);
}

/*
 * Choose up to max neighbours among n candidates sorted by ascending
 * distance to the base element (HNSW paper, algorithm 4, without
 * extending the candidates or keeping pruned ones).  A candidate is kept
 * unless an already kept one lies strictly closer to it than the base
 * does.  The strict comparison keeps exact duplicates of the base
 * connected.  But a group of identical vectors whose lists held only each
 * other would trap every search that enters it, so at most
 * HnswMaxCopies(max) copies of one vector are kept.  Writes the chosen
 * indexes to selected[] and returns how many.
 */
int
HnswSelectNeighbors(HnswMetric metric, int dims, const float *const *vectors,
					const double *distances, int n, int max, int *selected)
{
	int			nselected = 0;
	int			duplicates = 0;
	int			maxDuplicates = HnswMaxCopies(max) - 1;

	for (int i = 0; i < n && nselected < max; i++)
	{
		bool		keep = true;
		bool		duplicate = false;

		for (int j = 0; j < nselected; j++)
		{
			double		d = HnswDistance(metric, vectors[i], vectors[selected[j]], dims);

			if (d < distances[i])
			{
				keep = false;
				break;
			}
			/* The same vector as a kept one (the distance test only filters) */
			if (d == distances[i] &&
				memcmp(vectors[i], vectors[selected[j]], sizeof(float) * dims) == 0)
				duplicate = true;
		}
		if (keep && duplicate)
		{
			if (duplicates == maxDuplicates)
				keep = false;
			else
				duplicates++;
		}
		if (keep)
			selected[nselected++] = i;
	}
	return nselected;
}

/*
 * Raise the error the distance operator raises for a query whose
 * fingerprint differs from an indexed vector's.
 */
void
HnswRaiseFingerprintMismatch(const Latent *query, uint32 fingerprint)
{
	Latent	   *probe = InitLatent(query->dim);

	probe->fingerprint = fingerprint;
	LatentCheckPair(query, probe);
	elog(ERROR, "latent fingerprints %u and %u were accepted as compatible",
		 query->fingerprint, fingerprint);
}

/* Heap orders: candidates and pending nearest first, result furthest first */
static int
CompareCandidateNearest(const pairingheap_node *a, const pairingheap_node *b, void *arg)
{
	const HnswCandidate *ca = pairingheap_const_container(HnswCandidate, cnode, a);
	const HnswCandidate *cb = pairingheap_const_container(HnswCandidate, cnode, b);

	if (ca->distance < cb->distance)
		return 1;
	if (ca->distance > cb->distance)
		return -1;
	return 0;
}

static int
CompareResultNearest(const pairingheap_node *a, const pairingheap_node *b, void *arg)
{
	const HnswCandidate *ca = pairingheap_const_container(HnswCandidate, rnode, a);
	const HnswCandidate *cb = pairingheap_const_container(HnswCandidate, rnode, b);

	if (ca->distance < cb->distance)
		return 1;
	if (ca->distance > cb->distance)
		return -1;
	return 0;
}

static int
CompareResultFurthest(const pairingheap_node *a, const pairingheap_node *b, void *arg)
{
	return -CompareResultNearest(a, b, arg);
}

/*
 * Prepare a search of one level for the query.  Everything it allocates
 * lives in cxt; the caller resets or deletes cxt when done.
 */
void
HnswSearchInit(HnswSearch *search, Relation index, HnswMetric metric,
			   int dims, int m, const HnswCodec *codec, const float *query,
			   int level, int ef, MemoryContext cxt)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

	memset(search, 0, sizeof(HnswSearch));
	search->index = index;
	search->metric = metric;
	search->dims = dims;
	search->m = m;
	search->query = query;
	if (HnswLevelCodeDims(codec, level) > 0)
		search->codec = codec;
	search->level = level;
	search->ef = ef;
	search->cxt = cxt;
	search->tieCap = Max(ef / 8, 1);
	search->tieExpansions = Max(ef / 8, 1);
	/* A power of two with room for ef distinct distances at half load */
	search->tieMask = 15;
	while (search->tieMask + 1 < (uint32) ef * 2)
		search->tieMask = search->tieMask * 2 + 1;
	/* A level-0 search reads roughly ef * m elements; avoid regrowing */
	search->visited = hnsw_visited_create(cxt, Max(256, Min(ef * m * 2, 1 << 16)), NULL);
	search->candidates = pairingheap_allocate(CompareCandidateNearest, NULL);
	search->result = pairingheap_allocate(CompareResultFurthest, NULL);
	search->pending = pairingheap_allocate(CompareResultNearest, NULL);
	MemoryContextSwitchTo(oldcxt);
}

/* Order item pointers by block, then offset */
static int
CompareTids(const void *a, const void *b)
{
	return ItemPointerCompare((ItemPointer) a, (ItemPointer) b);
}

/*
 * Copy the neighbours of the search's level out of the slot array of an
 * element of the given level, with their codes when the search uses them.
 */
static void
CopyNeighbors(HnswSearch *search, HnswCandidate *c, ItemPointer slots, int level)
{
	int			start = HnswLevelStart(search->m, search->level);
	int			capacity = HnswLevelCapacity(search->m, search->level);
	int			n = 0;

	if (c->neighbors == NULL)
		c->neighbors = MemoryContextAlloc(search->cxt, sizeof(ItemPointerData) * capacity);
	for (int i = 0; i < capacity; i++)
	{
		if (!ItemPointerIsValid(&slots[start + i]))
			break;
		c->neighbors[n++] = slots[start + i];
	}
	c->nneighbors = n;
	if (search->codec != NULL && n > 0)
	{
		if (c->codes == NULL)
			c->codes = MemoryContextAlloc(search->cxt, (Size) capacity * search->codec->dims);
		memcpy(c->codes, HnswSlotCode(slots, search->m, level, search->codec, start),
			   (Size) n * search->codec->dims);
	}
}

/* Whether an element at this distance would enter the result heap now */
static inline bool
WillEnterResult(HnswSearch *search, double distance)
{
	return search->nresult < search->ef ||
		distance < pairingheap_container(HnswCandidate, rnode,
										 pairingheap_first(search->result))->distance;
}

/* Candidates allocated at once; a level-0 search meets hundreds */
#define HNSW_SLAB_SIZE 128

/*
 * Allocate a candidate with every field unset.  Candidates are carved from
 * blocks of HNSW_SLAB_SIZE: one palloc each would round every candidate up
 * to a power of two and add a chunk header, and the memory churn showed up
 * in profiles as page faults.
 */
static inline HnswCandidate *
NewCandidate(HnswSearch *search)
{
	if (search->slabFree == 0)
	{
		search->slab = MemoryContextAlloc(search->cxt,
										  sizeof(HnswCandidate) * HNSW_SLAB_SIZE);
		search->slabFree = HNSW_SLAB_SIZE;
	}
	search->slabFree--;
	return search->slab++;
}

/*
 * Pin block blkno of the index.  The backend remembers which buffer each
 * block was last read into and first tries ReadRecentBuffer with it, which
 * skips the buffer mapping lookup (about a tenth of a search's time in
 * profiles).  A stale hint costs one failed check, since ReadRecentBuffer
 * compares the buffer's tag before pinning it.  ReadRecentBuffer does not
 * count the access in the relation's statistics (PostgreSQL 15), so it is
 * counted here, as ReadBuffer would, for pg_statio_all_indexes.
 */
static Buffer
ReadIndexBuffer(Relation index, BlockNumber blkno)
{
	HnswRelInfo *info;
	Buffer		buf;

	if (RelationUsesLocalBuffers(index))
		return ReadBuffer(index, blkno);

	HnswGetMetric(index);		/* makes sure rd_amcache is set */
	info = (HnswRelInfo *) index->rd_amcache;
	if (blkno < info->nrecentBuffers && info->recentBuffers[blkno] != InvalidBuffer &&
		ReadRecentBuffer(index->rd_node, MAIN_FORKNUM, blkno, info->recentBuffers[blkno]))
	{
		pgstat_count_buffer_read(index);
		pgstat_count_buffer_hit(index);
		return info->recentBuffers[blkno];
	}

	buf = ReadBuffer(index, blkno);
	if (blkno >= info->nrecentBuffers)
	{
		BlockNumber n = Max(Max(blkno + 1, info->nrecentBuffers * 2), 1024);

		if (info->recentBuffers == NULL)
			info->recentBuffers = MemoryContextAllocExtended(index->rd_indexcxt,
															 sizeof(Buffer) * n,
															 MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
		else
		{
			info->recentBuffers = repalloc_huge(info->recentBuffers, sizeof(Buffer) * n);
			memset(info->recentBuffers + info->nrecentBuffers, 0,
				   sizeof(Buffer) * (n - info->nrecentBuffers));
		}
		info->nrecentBuffers = n;
	}
	info->recentBuffers[blkno] = buf;
	return buf;
}

/* Elements read together by LoadElements: pins and locks held at once */
#define HNSW_LOAD_CHUNK 32

/*
 * Read the elements at tids[0 .. n) into new candidates, skipping TIDs whose
 * slot no longer contains an element.  Returns how many candidates were
 * written to out[].
 *
 * Reading an element is dominated by cache misses on its line pointer and
 * tuple, not by the distance, so the elements are read in chunks: pin and
 * share-lock every page of the chunk, prefetch the line pointers, then the
 * tuples, and only then compute.  Holding several share locks is safe
 * because writers never wait for a second buffer while holding one.
 */
static int
LoadElements(HnswSearch *search, ItemPointer tids, int n, HnswCandidate **out)
{
	Buffer		bufs[HNSW_LOAD_CHUNK];
	Size		vecsize = sizeof(float) * search->dims;
	int			nout = 0;

	for (int base = 0; base < n; base += HNSW_LOAD_CHUNK)
	{
		int			count = Min(HNSW_LOAD_CHUNK, n - base);

		/* 1. Pin and lock, one access per run of TIDs on the same page */
		for (int i = 0; i < count; i++)
		{
			ItemPointer tid = &tids[base + i];
			BlockNumber blkno = ItemPointerGetBlockNumber(tid);

			if (i > 0 && blkno == ItemPointerGetBlockNumber(&tids[base + i - 1]))
				bufs[i] = bufs[i - 1];
			else
			{
				bufs[i] = ReadIndexBuffer(search->index, blkno);
				LockBuffer(bufs[i], BUFFER_LOCK_SHARE);
				search->bufferAccesses++;
			}
			__builtin_prefetch(PageGetItemId(BufferGetPage(bufs[i]),
											 ItemPointerGetOffsetNumber(tid)));
		}

		/* 2. Prefetch the tuples (header, vector and inline lists) */
		for (int i = 0; i < count; i++)
		{
			Page		page = BufferGetPage(bufs[i]);
			OffsetNumber off = ItemPointerGetOffsetNumber(&tids[base + i]);
			ItemId		itemid;
			char	   *item;

			if (off > PageGetMaxOffsetNumber(page))
				continue;
			itemid = PageGetItemId(page, off);
			if (!ItemIdIsNormal(itemid))
				continue;
			item = (char *) PageGetItem(page, itemid);
			for (Size b = 0; b < ItemIdGetLength(itemid) && b < 2048; b += 64)
				__builtin_prefetch(item + b);
		}

		/* 3. Read */
		for (int i = 0; i < count; i++)
		{
			HnswElementTuple etup = HnswGetElement(BufferGetPage(bufs[i]),
												   ItemPointerGetOffsetNumber(&tids[base + i]));
			HnswCandidate *c;

			if (etup == NULL)
				continue;

			/* Vectors of another model have no meaningful distance to the query */
			if (search->queryLatent != NULL && search->queryLatent->fingerprint != 0 &&
				etup->fingerprint != 0 &&
				etup->fingerprint != search->queryLatent->fingerprint)
				HnswRaiseFingerprintMismatch(search->queryLatent, etup->fingerprint);

			c = NewCandidate(search);
			c->tid = tids[base + i];
			c->expanded = false;
			c->inResult = false;
			c->queued = false;
			c->capped = false;
			c->nneighbors = 0;
			c->neighbors = NULL;
			c->codes = NULL;
			c->vector = NULL;
			c->level = etup->level;
			c->nheaptids = etup->nheaptids;
			c->deleted = (etup->flags & HNSW_ELEMENT_DELETED) != 0;
			c->fingerprint = etup->fingerprint;
			memcpy(c->heaptids, etup->heaptids, sizeof(etup->heaptids));
			c->distance = HnswDistance(search->metric, search->query, etup->x, search->dims);
			if (search->keepVectors)
			{
				c->vector = MemoryContextAlloc(search->cxt, vecsize);
				memcpy(c->vector, etup->x, vecsize);
			}
			c->neighbortid = etup->neighbortid;
			c->neighborsLoaded = false;
			if (etup->level < search->level)
			{
				c->nneighbors = 0;	/* stale link from a higher level: no edges */
				c->neighborsLoaded = true;
			}
			else if (!ItemPointerIsValid(&etup->neighbortid) && search->codec == NULL &&
					 WillEnterResult(search, c->distance))
			{
				/*
				 * Copy the list now only for an element that enters the
				 * result set: only those are expanded in this batch, and
				 * most visited elements never are.  Others read it again if
				 * a later batch expands them.  With codes, the list is read
				 * again when the element is expanded instead.  The codes
				 * made the copy several times larger, and most elements
				 * that enter the result leave it before they are expanded,
				 * so the copies cost more than the second buffer access.
				 */
				CopyNeighbors(search, c, HnswTupleSlots(etup, search->dims), etup->level);
				c->neighborsLoaded = true;
			}
			out[nout++] = c;
		}

		/* 4. Release */
		for (int i = 0; i < count; i++)
			if (i == 0 || bufs[i] != bufs[i - 1])
				UnlockReleaseBuffer(bufs[i]);
	}
	return nout;
}

/*
 * Read the list of a candidate whose list was not copied when it was
 * loaded: from its neighbour tuple, or again from its element tuple.
 */
static void
LoadNeighborList(HnswSearch *search, HnswCandidate *c)
{
	bool		separate = ItemPointerIsValid(&c->neighbortid);
	ItemPointer target = separate ? &c->neighbortid : &c->tid;
	Buffer		buf = ReadIndexBuffer(search->index, ItemPointerGetBlockNumber(target));
	Page		page;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	search->bufferAccesses++;
	page = BufferGetPage(buf);
	c->nneighbors = 0;
	if (separate)
	{
		HnswNeighborTuple ntup = HnswGetNeighborTuple(page, ItemPointerGetOffsetNumber(target));

		if (ntup != NULL && ntup->level >= search->level)
			CopyNeighbors(search, c, ntup->slots, ntup->level);
	}
	else
	{
		HnswElementTuple etup = HnswGetElement(page, ItemPointerGetOffsetNumber(target));

		/* The slot may hold another element by now; then it has no edges here */
		if (etup != NULL && etup->level == c->level && etup->level >= search->level &&
			!ItemPointerIsValid(&etup->neighbortid))
			CopyNeighbors(search, c, HnswTupleSlots(etup, search->dims), etup->level);
	}
	c->neighborsLoaded = true;
	UnlockReleaseBuffer(buf);
}

/* Home slot of a distance in the tie table */
static inline uint32
TieSlot(const HnswSearch *search, double distance)
{
	uint64		bits;

	if (distance == 0.0)
		distance = 0.0;			/* -0.0 and 0.0 are one distance */
	memcpy(&bits, &distance, sizeof(bits));
	return (uint32) ((bits * UINT64CONST(0x9E3779B97F4A7C15)) >> 40) & search->tieMask;
}

/*
 * The tie class of distance, created (empty) when missing and create is
 * set.  Returns NULL for a NaN distance, which equals nothing, and for a
 * missing class when create is not set.
 */
static HnswTieClass *
FindTieClass(HnswSearch *search, double distance, bool create)
{
	uint32		i;

	if (isnan(distance))
		return NULL;

	/*
	 * Allocated on first use: many searches only load elements for their
	 * callers (HnswLoadCandidates) and never need it.
	 */
	if (search->ties == NULL)
	{
		if (!create)
			return NULL;
		search->ties = MemoryContextAllocZero(search->cxt,
											  sizeof(HnswTieClass) * (search->tieMask + 1));
	}
	for (i = TieSlot(search, distance); search->ties[i].used; i = (i + 1) & search->tieMask)
	{
		if (search->ties[i].distance == distance)
			return &search->ties[i];
	}
	if (!create)
		return NULL;
	search->ties[i].used = true;
	search->ties[i].distance = distance;
	search->ties[i].inResult = 0;
	search->ties[i].expanded = 0;
	return &search->ties[i];
}

/*
 * Count one result element less at distance, removing the class when it
 * empties.  The table uses linear probing, so removal shifts later entries
 * of the probe run back into the freed slot.
 */
static void
ReleaseTie(HnswSearch *search, double distance)
{
	HnswTieClass *tie = FindTieClass(search, distance, false);
	uint32		hole;
	uint32		next;

	if (tie == NULL || --tie->inResult > 0)
		return;
	hole = tie - search->ties;
	search->ties[hole].used = false;
	for (next = (hole + 1) & search->tieMask; search->ties[next].used;
		 next = (next + 1) & search->tieMask)
	{
		uint32		home = TieSlot(search, search->ties[next].distance);

		/* Move the entry unless its home lies cyclically in (hole, next] */
		if (((next - home) & search->tieMask) >= ((next - hole) & search->tieMask))
		{
			search->ties[hole] = search->ties[next];
			search->ties[next].used = false;
			hole = next;
		}
	}
}

/* Put c into the pending heap */
static inline void
AddPending(HnswSearch *search, HnswCandidate *c)
{
	pairingheap_add(search->pending, &c->rnode);
	if (c->capped)
		search->npendingCapped++;
}

/* Put c into the result heap and count it in its tie class */
static inline void
EnterResult(HnswSearch *search, HnswCandidate *c, HnswTieClass *tie)
{
	c->inResult = true;
	pairingheap_add(search->result, &c->rnode);
	search->nresult++;
	if (tie != NULL)
		tie->inResult++;
}

/*
 * Put a newly met element into the candidate heap and the result or pending
 * heap.  An element goes to pending, marked capped, when the result already
 * contains tieCap elements at exactly its distance.  Among many copies of one
 * vector, the copies otherwise filled the result.  The furthest result was
 * then a copy, every other vector in their lists was further, and so the
 * search stopped among the copies (with ef_search 40, 3 of 300 queries in
 * test/shell/hnsw_duplicates.sh returned none of their ten nearest rows).
 */
static void
AddCandidate(HnswSearch *search, HnswCandidate *c)
{
	pairingheap_add(search->candidates, &c->cnode);
	c->queued = true;

	if (search->nresult < search->ef ||
		c->distance < pairingheap_container(HnswCandidate, rnode,
											pairingheap_first(search->result))->distance)
	{
		HnswTieClass *tie = FindTieClass(search, c->distance, true);

		if (tie != NULL && tie->inResult >= search->tieCap)
		{
			c->capped = true;
			AddPending(search, c);
			return;
		}
		EnterResult(search, c, tie);
		if (search->nresult > search->ef)
		{
			HnswCandidate *worst = pairingheap_container(HnswCandidate, rnode,
														 pairingheap_remove_first(search->result));

			worst->inResult = false;
			ReleaseTie(search, worst->distance);
			AddPending(search, worst);
			search->nresult--;
		}
	}
	else
		AddPending(search, c);
}

/* Read the elements at tids[0 .. n) and add them to the search; loaded has room for n */
static void
VisitElements(HnswSearch *search, ItemPointer tids, int n, HnswCandidate **loaded)
{
	int			nloaded = LoadElements(search, tids, n, loaded);

	for (int i = 0; i < nloaded; i++)
	{
		search->nvisited++;
		AddCandidate(search, loaded[i]);
	}
}

/* Remember a neighbour skipped by its bound, for the next batch */
static void
DeferNeighbor(HnswSearch *search, ItemPointer tid)
{
	if (search->ndeferred == search->maxdeferred)
	{
		search->maxdeferred = Max(256, search->maxdeferred * 2);
		if (search->deferred == NULL)
			search->deferred = MemoryContextAlloc(search->cxt,
												  sizeof(ItemPointerData) * search->maxdeferred);
		else
			search->deferred = repalloc(search->deferred,
										sizeof(ItemPointerData) * search->maxdeferred);
	}
	search->deferred[search->ndeferred++] = *tid;
	search->skipped++;
}

/*
 * Visit the unvisited neighbours of c.
 *
 * With neighbour codes, once the result contains ef elements, a neighbour
 * whose lower bound (HnswBoundTable) is above the furthest result is not
 * read.  Read, it could not enter the result, and the furthest result only
 * comes nearer during a batch, so the search would never expand it in this
 * batch either.  The batch's result and the set of elements it expands stay
 * the same, and only reads are saved.  Skipped neighbours are not marked
 * visited, so another element's list can still lead to them, and the next
 * batch reads all of them first (HnswSearchBatch).
 */
static void
ExpandCandidate(HnswSearch *search, HnswCandidate *c)
{
	ItemPointerData *tids;
	HnswCandidate **loaded;
	int			ntids = 0;
	bool		filter = false;
	double		limit = 0.0;

	if (!c->neighborsLoaded)
		LoadNeighborList(search, c);
	if (c->nneighbors == 0)
		return;

	if (search->codec != NULL && c->codes != NULL && search->query != NULL &&
		search->nresult >= search->ef)
	{
		double		furthest = pairingheap_container(HnswCandidate, rnode,
													 pairingheap_first(search->result))->distance;

		if (search->bounds == NULL)
			search->bounds = HnswBoundTable(search->codec, search->metric, search->query,
											search->cxt);
		/* A margin for rounding in the table and in the distance kernels */
		limit = furthest + fabs(furthest) * 1e-5;
		filter = true;
	}

	tids = palloc(sizeof(ItemPointerData) * c->nneighbors);
	loaded = palloc(sizeof(HnswCandidate *) * c->nneighbors);
	for (int i = 0; i < c->nneighbors; i++)
	{
		bool		found;

		if (hnsw_visited_lookup(search->visited, c->neighbors[i]) != NULL)
			continue;
		if (filter)
		{
			const uint8 *code = c->codes + (Size) i * search->codec->dims;
			const float *row = search->bounds;
			float		bound = 0.0f;

			for (int d = 0; d < search->codec->dims; d++, row += HNSW_CODE_LEVELS)
				bound += row[code[d]];
			if (bound > limit)
			{
				DeferNeighbor(search, &c->neighbors[i]);
				continue;
			}
		}
		hnsw_visited_insert(search->visited, c->neighbors[i], &found);
		tids[ntids++] = c->neighbors[i];
	}
	/*
	 * No sort by block here: with a few elements per page, neighbours of one
	 * element rarely share a page, and sorting cost more than it saved.
	 * Consecutive TIDs on one page still share a buffer access.
	 */
	VisitElements(search, tids, ntids, loaded);
	pfree(tids);
	pfree(loaded);
}

/*
 * Whether the batch leaves candidate c, just taken from the candidate heap,
 * unexpanded: a tie beyond tieCap, or one of the result's elements at a
 * distance whose class has had tieExpansions expanded in this batch.
 * Their lists mostly lead to more copies, and on a table of identical
 * vectors expanding them all would walk the whole graph.  A scan still
 * expands them while fewer than ef ties wait in the pending heap, so that
 * the next batch can again start with ties.  A skipped tie goes back into
 * the candidate heap at the next batch.
 */
static bool
SkipTie(HnswSearch *search, HnswCandidate *c)
{
	HnswTieClass *tie = NULL;
	bool		limited;

	if (c->inResult)
	{
		tie = FindTieClass(search, c->distance, false);
		limited = tie != NULL && tie->expanded >= search->tieExpansions;
	}
	else
		limited = c->capped;

	if (limited && !(search->holdBackTies && search->npendingCapped < search->ef))
	{
		if (search->nskippedTies == search->maxskippedTies)
		{
			search->maxskippedTies = Max(64, search->maxskippedTies * 2);
			if (search->skippedTies == NULL)
				search->skippedTies = MemoryContextAlloc(search->cxt, sizeof(HnswCandidate *) *
														 search->maxskippedTies);
			else
				search->skippedTies = repalloc(search->skippedTies, sizeof(HnswCandidate *) *
											   search->maxskippedTies);
		}
		search->skippedTies[search->nskippedTies++] = c;
		return true;
	}
	if (tie != NULL)
		tie->expanded++;
	return false;
}

/* Start the search from the element at tid (ignored if already visited) */
void
HnswSearchAddSeed(HnswSearch *search, ItemPointer tid)
{
	HnswCandidate *loaded;
	bool		found;

	hnsw_visited_insert(search->visited, *tid, &found);
	if (found)
		return;
	if (LoadElements(search, tid, 1, &loaded) == 1)
	{
		search->nvisited++;
		AddCandidate(search, loaded);
	}
}

/*
 * Run the search until the next batch is settled and write it to out[]
 * (room for ef entries) in ascending distance; returns the batch size, 0
 * when the level holds nothing more.
 *
 * The first batch is SEARCH-LAYER of the HNSW paper: expand the nearest
 * unexpanded candidate while it is closer than the furthest of the ef
 * best.  A later batch first takes the ef nearest pending elements as its
 * result set and continues the same loop, so it explores around the
 * elements just beyond the previous batch.  No element is returned twice.
 * Expanding stops once maxVisited elements have been read; pending
 * elements are still returned after that.
 */
int
HnswSearchBatch(HnswSearch *search, int maxVisited, HnswCandidate **out)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(search->cxt);
	int			n;

	/*
	 * 1. Refill the result heap from the pending elements, nearest first and
	 * regardless of tieCap, so that a scan hands out the ties left pending
	 * before anything farther.  The ties earlier batches skipped go back
	 * into the candidate heap.
	 */
	while (search->nresult < search->ef && !pairingheap_is_empty(search->pending))
	{
		HnswCandidate *c = pairingheap_container(HnswCandidate, rnode,
												 pairingheap_remove_first(search->pending));

		if (c->capped)
			search->npendingCapped--;
		EnterResult(search, c, FindTieClass(search, c->distance, true));
	}
	for (int i = 0; i < search->nskippedTies; i++)
	{
		HnswCandidate *c = search->skippedTies[i];

		if (!c->expanded && !c->queued)
		{
			pairingheap_add(search->candidates, &c->cnode);
			c->queued = true;
		}
	}
	search->nskippedTies = 0;

	/*
	 * Then read the neighbours earlier batches skipped by their bound, so
	 * this batch starts from everything the search without codes would
	 * have read by now.
	 */
	if (search->nbatches > 0 && search->ndeferred > 0)
	{
		ItemPointerData *tids = palloc(sizeof(ItemPointerData) * search->ndeferred);
		HnswCandidate **loaded = palloc(sizeof(HnswCandidate *) * search->ndeferred);
		int			ntids = 0;

		for (int i = 0; i < search->ndeferred; i++)
		{
			bool		found;

			hnsw_visited_insert(search->visited, search->deferred[i], &found);
			if (!found)
				tids[ntids++] = search->deferred[i];
		}
		search->ndeferred = 0;
		VisitElements(search, tids, ntids, loaded);
		pfree(tids);
		pfree(loaded);
	}
	search->nbatches++;

	/* 2. Expand candidates while they can still improve the result */
	while (!pairingheap_is_empty(search->candidates) && search->nvisited < maxVisited)
	{
		HnswCandidate *c = pairingheap_container(HnswCandidate, cnode,
												 pairingheap_first(search->candidates));

		/*
		 * A candidate outside the result at the furthest result's distance
		 * stops the walk too: among many exact duplicates it would otherwise
		 * run through the whole graph.  A tie beyond tieCap is skipped
		 * instead (SkipTie), because other candidates at its distance may
		 * still be in the result.
		 */
		if (search->nresult >= search->ef)
		{
			double		furthest = pairingheap_container(HnswCandidate, rnode,
														 pairingheap_first(search->result))->distance;

			if (c->distance > furthest ||
				(c->distance == furthest && !c->inResult && !c->capped))
				break;
		}
		pairingheap_remove_first(search->candidates);
		c->queued = false;
		if (SkipTie(search, c))
			continue;
		c->expanded = true;
		ExpandCandidate(search, c);
	}

	/* 3. Hand out the result heap, nearest first */
	n = search->nresult;
	for (int i = n - 1; i >= 0; i--)
	{
		HnswCandidate *c = pairingheap_container(HnswCandidate, rnode,
												 pairingheap_remove_first(search->result));

		c->inResult = false;
		out[i] = c;
	}
	search->nresult = 0;
	if (search->ties != NULL)
		memset(search->ties, 0, sizeof(HnswTieClass) * (search->tieMask + 1));

	/*
	 * A scan returns rows in distance order, but ties beyond tieCap wait in
	 * the pending heap.  The batch then ends with the elements at the
	 * nearest pending distance, and the farther ones go back to pending,
	 * to follow the ties in a later batch.
	 */
	if (search->holdBackTies && n > 0 && !pairingheap_is_empty(search->pending))
	{
		double		nearestPending = pairingheap_container(HnswCandidate, rnode,
														   pairingheap_first(search->pending))->distance;
		int			keep = 0;

		while (keep < n && out[keep]->distance <= nearestPending)
			keep++;
		if (keep > 0)
		{
			for (int i = keep; i < n; i++)
				AddPending(search, out[i]);
			n = keep;
		}
	}

	MemoryContextSwitchTo(oldcxt);
	return n;
}

/*
 * Remove the nearest pending element and return it if it is at most
 * maxDistance away, else return NULL.  For a caller done with the search,
 * because the pending heap contains what a batch met but had no room for,
 * such as the ties beyond tieCap.
 */
HnswCandidate *
HnswSearchPopPending(HnswSearch *search, double maxDistance)
{
	HnswCandidate *c;

	if (pairingheap_is_empty(search->pending))
		return NULL;
	c = pairingheap_container(HnswCandidate, rnode, pairingheap_first(search->pending));
	if (!(c->distance <= maxDistance))
		return NULL;
	pairingheap_remove_first(search->pending);
	if (c->capped)
		search->npendingCapped--;
	return c;
}

/*
 * Descend from the entry point to level toLevel + 1 and set *entry to the
 * element to start level toLevel from.  Leaves *entry invalid when the
 * index is empty.
 *
 * Each level is searched with a beam of ef candidates rather than the
 * greedy walk (ef = 1) of the HNSW paper's algorithms 1 and 5.  On
 * well-separated clusters a greedy walk can stop in the wrong cluster, and
 * level 0 then never reaches the query's.  Scans pass a small ef, because
 * every query pays for the descent.  Inserts and VACUUM's repairs pass a
 * larger one, because an element linked into the wrong cluster stays hard
 * to find for every later search.  Levels with codes use bounds (the
 * caller's HnswBoundTable of query, or NULL to build one per level).
 */
void
HnswSearchDescend(Relation index, HnswMetric metric, int dims, int m,
				  const HnswCodec *codec, const float *bounds,
				  const float *query, const Latent *queryLatent,
				  const HnswMetaPageData *meta, int toLevel, int ef,
				  ItemPointer entry, uint64 *bufferAccesses, MemoryContext cxt)
{
	MemoryContext levelcxt = AllocSetContextCreate(cxt, "hnsw descent",
												   ALLOCSET_DEFAULT_SIZES);
	HnswCandidate **best = MemoryContextAlloc(cxt, sizeof(HnswCandidate *) * ef);

	*entry = meta->entryTid;
	for (int lc = meta->entryLevel; lc > toLevel && ItemPointerIsValid(entry); lc--)
	{
		HnswSearch search;

		HnswSearchInit(&search, index, metric, dims, m, codec, query, lc, ef, levelcxt);
		if (search.codec != NULL)
			search.bounds = bounds;
		search.queryLatent = queryLatent;
		HnswSearchAddSeed(&search, entry);
		if (HnswSearchBatch(&search, INT_MAX, best) >= 1)
			*entry = best[0]->tid;
		if (bufferAccesses)
			*bufferAccesses += search.bufferAccesses;
		MemoryContextReset(levelcxt);
	}
	pfree(best);
	MemoryContextDelete(levelcxt);
}

/*
 * Read the elements at tids[0 .. n) without marking them visited; sorts
 * tids in place by block.  Returns the number written to out[].
 */
int
HnswLoadCandidates(HnswSearch *search, ItemPointer tids, int n, HnswCandidate **out)
{
	if (n > 1)
		qsort(tids, n, sizeof(ItemPointerData), CompareTids);
	return LoadElements(search, tids, n, out);
}

/* Read c's list at the search's level if it is in a separate tuple */
void
HnswLoadNeighbors(HnswSearch *search, HnswCandidate *c)
{
	if (!c->neighborsLoaded)
		LoadNeighborList(search, c);
}

/*
 * Build an element tuple in palloc'd memory with all neighbour slots
 * empty; *size receives its size on the page.
 */
HnswElementTuple
HnswFormElement(int dims, int m, int level, bool inlineNeighbors,
				const HnswCodec *codec, const float *vec, uint32 fingerprint, Size *size)
{
	HnswElementTuple etup;

	*size = HnswElementTupleSize(dims, m, level, inlineNeighbors, codec);
	etup = palloc0(*size);
	etup->type = HNSW_ELEMENT_TUPLE;
	etup->level = level;
	etup->fingerprint = fingerprint;
	for (int i = 0; i < HNSW_HEAPTIDS; i++)
		ItemPointerSetInvalid(&etup->heaptids[i]);
	ItemPointerSetInvalid(&etup->neighbortid);
	memcpy(etup->x, vec, sizeof(float) * dims);
	if (inlineNeighbors)
	{
		ItemPointer slots = HnswTupleSlots(etup, dims);

		for (int i = 0; i < HnswSlotCount(m, level); i++)
			ItemPointerSetInvalid(&slots[i]);
	}
	return etup;
}

/* Build a neighbour tuple with all slots empty */
HnswNeighborTuple
HnswFormNeighborTuple(int m, int level, const HnswCodec *codec, Size *size)
{
	HnswNeighborTuple ntup;

	*size = HnswNeighborTupleSize(m, level, codec);
	ntup = palloc0(*size);
	ntup->type = HNSW_NEIGHBOR_TUPLE;
	ntup->level = level;
	ItemPointerSetInvalid(&ntup->elementtid);
	for (int i = 0; i < HnswSlotCount(m, level); i++)
		ItemPointerSetInvalid(&ntup->slots[i]);
	return ntup;
}

/*
 * Add every element the search has not met, page by page, until maxVisited
 * elements have been read.  A scan calls it once the graph walk has run
 * dry, so that elements no edge leads to (a few in any HNSW graph, many
 * among exact duplicates) are still returned, as a sequential scan would.
 */
void
HnswSearchSweep(HnswSearch *search, int maxVisited)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(search->cxt);
	BlockNumber nblocks = RelationGetNumberOfBlocks(search->index);
	ItemPointerData *tids = palloc(sizeof(ItemPointerData) * MaxOffsetNumber);
	HnswCandidate **loaded = palloc(sizeof(HnswCandidate *) * MaxOffsetNumber);

	for (BlockNumber blkno = HNSW_METAPAGE_BLKNO + 1;
		 blkno < nblocks && search->nvisited < maxVisited; blkno++)
	{
		Buffer		buf = ReadBuffer(search->index, blkno);
		Page		page;
		int			ntids = 0;
		int			nloaded;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		for (OffsetNumber off = FirstOffsetNumber;
			 !PageIsNew(page) && off <= PageGetMaxOffsetNumber(page); off++)
		{
			ItemPointerData tid;
			bool		found;

			if (HnswGetElement(page, off) == NULL)
				continue;
			ItemPointerSet(&tid, blkno, off);
			hnsw_visited_insert(search->visited, tid, &found);
			if (!found)
				tids[ntids++] = tid;
		}
		UnlockReleaseBuffer(buf);
		search->bufferAccesses++;

		nloaded = LoadElements(search, tids, ntids, loaded);
		for (int i = 0; i < nloaded; i++)
		{
			search->nvisited++;
			AddCandidate(search, loaded[i]);
		}
	}
	MemoryContextSwitchTo(oldcxt);
}
