/*
 * hnswscan.c
 *	  Ordered index scans of wdc_hnsw (ORDER BY column <op> query).
 *
 * The first rows come from K-NN-SEARCH of the HNSW paper (algorithm 5):
 * a descent to level 0 (with a beam of HNSW_SCAN_DESCENT_EF candidates per
 * level rather than the paper's greedy walk), then a best-first search with
 * ef = wdc.hnsw_ef_search, returned nearest first.  When the executor asks
 * for more (a filter rejected rows, or LIMIT exceeds ef_search) the level-0
 * search resumes from where it stopped (HnswSearchBatch) and hands out the
 * next ef elements, until wdc.hnsw_max_scan_tuples elements have been read.
 * Should the walk run out of elements first, the elements it never reached
 * are read page by page (HnswSearchSweep) and returned in distance order.
 * Within a batch rows are in exact order.  A batch also ends before any
 * element farther than a tie the search met but had no room for
 * (holdBackTies), so the rows at one distance come out together.  Across
 * batches the order is otherwise approximate, as every result of an
 * approximate index is.
 *
 * A NULL query, or a zero vector under cosine distance, orders nothing: the
 * distance is NULL or undefined for every row, so the scan returns every
 * indexed row in index order, as a sequential scan would return them in
 * table order.  Rows whose own value is NULL (or zero under cosine) are not
 * in the index and so never come back from it.
 */
#include "postgres.h"

#include "access/relscan.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "hnsw/hnsw.h"

typedef struct ScanCacheClaim
{
	MemoryContextCallback callback;
	uint64		generation;
} ScanCacheClaim;

typedef struct HnswScanOpaqueData
{
	MemoryContext cxt;			/* everything of one scan; reset in rescan */
	ScanCacheClaim *claim;		/* set when cxt is the backend's cached context */
	bool		started;
	bool		done;
	bool		unordered;		/* NULL or zero query: return all in page order */
	bool		firstBatch;
	bool		swept;			/* unreached elements were added */
	HnswSearch	search;
	HnswCandidate **batch;		/* current batch, nearest first */
	int			nbatch;
	int			batchpos;
	int			heappos;		/* next heap TID of batch[batchpos] */
	uint64		descentAccesses;

	/* Unordered mode */
	BlockNumber blkno;
	BlockNumber nblocks;
	ItemPointerData *pagetids;
	int			npagetids;
	int			pagepos;
} HnswScanOpaqueData;

typedef HnswScanOpaqueData *HnswScanOpaque;

/*
 * Scan memory kept for the life of the backend.  A scan allocates a few
 * hundred kilobytes.  Taken from malloc and returned for every query, that
 * made glibc trim and regrow the heap, and page faults and brk calls took
 * about a sixth of the time of a 10-row query.  One scan at a time
 * uses the cached context, further concurrent scans get their own.  The
 * owner is released by hnswendscan or, after an error, by a reset callback
 * on the context the scan was started in.
 */
#define HNSW_SCAN_CACHE_SIZE	(2 * 1024 * 1024)

static MemoryContext scanCache = NULL;
static uint64 scanCacheOwner = 0;	/* generation of the owning scan, 0 = free */
static uint64 scanCacheGeneration = 0;

/* Release the cached context if the claim still owns it */
static void
ReleaseScanCache(void *arg)
{
	ScanCacheClaim *claim = (ScanCacheClaim *) arg;

	if (scanCacheOwner != 0 && scanCacheOwner == claim->generation)
	{
		MemoryContextReset(scanCache);
		scanCacheOwner = 0;
	}
}

/*
 * Create or take the memory context of a new scan.  Sets *claim when the
 * scan takes the cached context.
 */
static MemoryContext
AcquireScanContext(ScanCacheClaim **claim)
{
	*claim = NULL;
	if (scanCache == NULL)
		scanCache = AllocSetContextCreate(TopMemoryContext, "hnsw scan cache",
										  HNSW_SCAN_CACHE_SIZE, HNSW_SCAN_CACHE_SIZE,
										  ALLOCSET_DEFAULT_MAXSIZE);
	if (scanCacheOwner != 0)
		return AllocSetContextCreate(CurrentMemoryContext, "hnsw scan",
									 ALLOCSET_DEFAULT_SIZES);

	*claim = palloc(sizeof(ScanCacheClaim));
	(*claim)->generation = ++scanCacheGeneration;
	(*claim)->callback.func = ReleaseScanCache;
	(*claim)->callback.arg = *claim;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &(*claim)->callback);
	scanCacheOwner = (*claim)->generation;
	return scanCache;
}

/* ambeginscan */
IndexScanDesc
hnswbeginscan(Relation index, int nkeys, int norderbys)
{
	IndexScanDesc scan = RelationGetIndexScan(index, nkeys, norderbys);
	HnswScanOpaque so = palloc0(sizeof(HnswScanOpaqueData));

	so->cxt = AcquireScanContext(&so->claim);
	scan->opaque = so;
	return scan;
}

/* amrescan */
void
hnswrescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys)
{
	HnswScanOpaque so = (HnswScanOpaque) scan->opaque;

	if (keys && scan->numberOfKeys > 0)
		memmove(scan->keyData, keys, scan->numberOfKeys * sizeof(ScanKeyData));
	if (orderbys && scan->numberOfOrderBys > 0)
		memmove(scan->orderByData, orderbys, scan->numberOfOrderBys * sizeof(ScanKeyData));

	MemoryContextReset(so->cxt);
	so->started = false;
	so->done = false;
	so->swept = false;
	so->unordered = false;
	so->nbatch = 0;
	so->batchpos = 0;
	so->heappos = 0;
	so->descentAccesses = 0;
	so->npagetids = 0;
	so->pagepos = 0;
	memset(&so->search, 0, sizeof(HnswSearch));
}

/* Raise the operator's error for a query of the wrong dimension */
static void
RaiseDimensionMismatch(const Latent *query, int dims)
{
	Latent	   *probe = InitLatent(dims);

	LatentCheckPair(query, probe);
	elog(ERROR, "latents of %d and %d dimensions were accepted as compatible",
		 query->dim, dims);
}

/* Set up the search on the first call after rescan */
static void
StartScan(IndexScanDesc scan)
{
	HnswScanOpaque so = (HnswScanOpaque) scan->opaque;
	Relation	index = scan->indexRelation;
	HnswMetric	metric = HnswGetMetric(index);
	int			m = HnswGetM(index);
	HnswMetaPageData meta;
	ScanKey		key;
	Latent	   *query;
	float	   *prepared;
	HnswCodec  *codec;
	const float *bounds = NULL;
	ItemPointerData entry;

	if (scan->numberOfOrderBys == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("index \"%s\" can only be scanned with ORDER BY a distance operator",
						RelationGetRelationName(index))));

	HnswReadMeta(index, &meta);
	key = &scan->orderByData[0];
	so->blkno = HNSW_METAPAGE_BLKNO + 1;
	so->nblocks = RelationGetNumberOfBlocks(index);

	if (key->sk_flags & SK_ISNULL)
	{
		so->unordered = true;
		return;
	}

	query = (Latent *) PG_DETOAST_DATUM_COPY(key->sk_argument);
	LatentCheckVersion(query);
	if (meta.dims == 0 || !ItemPointerIsValid(&meta.entryTid))
	{
		so->done = true;		/* empty index */
		return;
	}
	if (query->dim != meta.dims)
		RaiseDimensionMismatch(query, meta.dims);

	prepared = palloc(sizeof(float) * meta.dims);
	if (!HnswPrepareVector(metric, query->x, meta.dims, prepared))
	{
		so->unordered = true;
		return;
	}

	/* One bound table serves every level of the query */
	codec = palloc(sizeof(HnswCodec));
	memcpy(codec, &meta.codec, sizeof(HnswCodec));
	if (codec->dims > 0)
		bounds = HnswBoundTable(codec, metric, prepared, so->cxt);

	HnswSearchDescend(index, metric, meta.dims, m, codec, bounds, prepared, query, &meta, 0,
					  HNSW_SCAN_DESCENT_EF, &entry, &so->descentAccesses, so->cxt);
	if (!ItemPointerIsValid(&entry))
	{
		so->done = true;
		return;
	}

	HnswSearchInit(&so->search, index, metric, meta.dims, m, codec, prepared, 0,
				   hnsw_ef_search, so->cxt);
	if (so->search.codec != NULL)
		so->search.bounds = bounds;
	so->search.queryLatent = query;
	so->search.holdBackTies = true;
	HnswSearchAddSeed(&so->search, &entry);
	so->batch = palloc(sizeof(HnswCandidate *) * hnsw_ef_search);
	so->firstBatch = true;
}

/* Next heap TID in unordered mode: every live element, page by page */
static bool
NextUnordered(IndexScanDesc scan)
{
	HnswScanOpaque so = (HnswScanOpaque) scan->opaque;

	while (so->pagepos >= so->npagetids)
	{
		Buffer		buf;
		Page		page;
		int			maxtids;

		if (so->blkno >= so->nblocks)
			return false;
		CHECK_FOR_INTERRUPTS();
		buf = ReadBuffer(scan->indexRelation, so->blkno);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		maxtids = PageGetMaxOffsetNumber(page) * HNSW_HEAPTIDS;
		if (so->pagetids == NULL)
			so->pagetids = MemoryContextAlloc(so->cxt, sizeof(ItemPointerData) *
											  MaxIndexTuplesPerPage * HNSW_HEAPTIDS);
		so->npagetids = 0;
		so->pagepos = 0;
		for (OffsetNumber off = FirstOffsetNumber;
			 off <= PageGetMaxOffsetNumber(page) && so->npagetids < maxtids; off++)
		{
			HnswElementTuple etup = HnswGetElement(page, off);

			if (etup == NULL || (etup->flags & HNSW_ELEMENT_DELETED))
				continue;
			for (int i = 0; i < etup->nheaptids; i++)
				so->pagetids[so->npagetids++] = etup->heaptids[i];
		}
		UnlockReleaseBuffer(buf);
		so->blkno++;
	}
	scan->xs_heaptid = so->pagetids[so->pagepos++];
	return true;
}

/* amgettuple */
bool
hnswgettuple(IndexScanDesc scan, ScanDirection dir)
{
	HnswScanOpaque so = (HnswScanOpaque) scan->opaque;
	MemoryContext oldcxt;
	bool		found = false;

	if (!ScanDirectionIsForward(dir))
		elog(ERROR, "wdc_hnsw scans only forward");

	oldcxt = MemoryContextSwitchTo(so->cxt);
	if (!so->started)
	{
		StartScan(scan);
		so->started = true;
	}
	scan->xs_recheck = false;
	scan->xs_recheckorderby = false;

	if (so->unordered)
		found = NextUnordered(scan);
	else
	{
		while (!found)
		{
			if (so->batchpos < so->nbatch)
			{
				HnswCandidate *c = so->batch[so->batchpos];

				if (!c->deleted && so->heappos < c->nheaptids)
				{
					scan->xs_heaptid = c->heaptids[so->heappos++];
					found = true;
				}
				else
				{
					so->batchpos++;
					so->heappos = 0;
				}
				continue;
			}
			if (so->done)
				break;

			/* The first batch always completes; later ones stop at the bound */
			CHECK_FOR_INTERRUPTS();
			so->nbatch = HnswSearchBatch(&so->search,
										 so->firstBatch ? INT_MAX : hnsw_max_scan_tuples,
										 so->batch);
			so->firstBatch = false;
			so->batchpos = 0;
			so->heappos = 0;
			if (so->nbatch == 0 && !so->swept)
			{
				/* The walk ran dry: read the elements no edge led to */
				so->swept = true;
				HnswSearchSweep(&so->search, hnsw_max_scan_tuples);
				so->nbatch = HnswSearchBatch(&so->search, hnsw_max_scan_tuples, so->batch);
			}
			if (so->nbatch == 0)
				so->done = true;
		}
	}

	MemoryContextSwitchTo(oldcxt);
	return found;
}

/* amendscan */
void
hnswendscan(IndexScanDesc scan)
{
	HnswScanOpaque so = (HnswScanOpaque) scan->opaque;

	if (so->started && !so->unordered)
		elog(DEBUG1, "wdc_hnsw scan of \"%s\" read %lu buffers (%lu in the descent) and %d elements, and skipped %lu neighbours by their codes",
			 RelationGetRelationName(scan->indexRelation),
			 (unsigned long) (so->descentAccesses + so->search.bufferAccesses),
			 (unsigned long) so->descentAccesses,
			 so->search.nvisited, (unsigned long) so->search.skipped);
	if (so->claim != NULL)
		ReleaseScanCache(so->claim);
	else
		MemoryContextDelete(so->cxt);
	pfree(so);
	scan->opaque = NULL;
}
