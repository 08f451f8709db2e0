/*
 * hnsw.h
 *	  The wdc_hnsw index access method: page layout, constants and the
 *	  functions shared by its build, insert, scan and vacuum code.
 *
 * The index is a hierarchical navigable small world graph (Malkov and
 * Yashunin, "Efficient and robust approximate nearest neighbor search using
 * Hierarchical Navigable Small World graphs", IEEE TPAMI 2020).
 *
 * Page layout.  Block 0 is the metapage.  Every other block is a data page
 * of element tuples.  An element tuple stores, contiguously, the element's
 * header (level, flags, up to HNSW_HEAPTIDS heap TIDs), its vector and the
 * neighbour lists of all its levels, so one buffer access gives a search
 * both the distance to an element and the edges out of it.  Only when
 * vector and lists together do not fit in a page (large dimensions) do the
 * lists move to a separate neighbour tuple, placed on the same page when
 * there is room.  The in-memory build writes elements in breadth-first
 * graph order.  NOTE: measured on 100,000 32-dimensional vectors, a scan
 * still reads about one page per element it visits: with about 20
 * elements per page, an element's neighbours rarely share a page.
 *
 * Neighbour lists have fixed capacity (2m slots at level 0, m above), so
 * adding or replacing an edge overwrites the tuple in place and never moves
 * it.  Unused slots hold an invalid item pointer and follow the used ones.
 *
 * Neighbour codes.  When the metapage's codec is set (HnswCodec), each
 * slot of levels 0 to codec.maxLevel also carries an 8-bit scalar code of
 * its neighbour's vector, stored after all item pointers of the tuple in
 * slot order.  A search computes from the codes a lower bound on the
 * distance of every unvisited neighbour.  It reads only the neighbours
 * whose bound could still enter the ef best (ExpandCandidate in
 * hnswutils.c).
 * Every writer of a list writes the codes with it, from the vectors it
 * holds.
 */
#ifndef WDC_HNSW_H
#define WDC_HNSW_H

#include "postgres.h"

#include "access/amapi.h"
#include "access/generic_xlog.h"
#include "access/reloptions.h"
#include "common/hashfn.h"
#include "lib/pairingheap.h"
#include "nodes/execnodes.h"
#include "storage/bufmgr.h"
#include "storage/itemptr.h"
#include "utils/relcache.h"

#include "latent/latent.h"

/* Identification and format */
#define HNSW_MAGIC				0x57444348	/* "WDCH" */
#define HNSW_FORMAT_VERSION		2	/* 2: neighbour codes */
#define HNSW_PAGE_ID			0xFF87
#define HNSW_METAPAGE_BLKNO		0

/* Limits */
#define HNSW_MAX_DIM			2000	/* largest indexable dimension */
#define HNSW_MAX_LEVEL			10	/* levels 0 .. 10; higher draws are capped */
#define HNSW_HEAPTIDS			4	/* heap rows sharing one identical vector */
#define HNSW_LEVEL_SEED			UINT64CONST(0x9E3779B97F4A7C15)	/* mixed into level draws */

/* Options */
#define HNSW_DEFAULT_M			16
/* Candidates kept per level while descending the levels above the target */
#define HNSW_SCAN_DESCENT_EF	8	/* ordered scans */
#define HNSW_INSERT_DESCENT_EF	32	/* builds, inserts and VACUUM's repairs */
#define HNSW_MIN_M				2
#define HNSW_MAX_M				100
#define HNSW_DEFAULT_EF_CONSTRUCTION	64
#define HNSW_MIN_EF_CONSTRUCTION	4
#define HNSW_MAX_EF_CONSTRUCTION	1000

/* Neighbour codes */
#define HNSW_CODE_MAX_DIMS		64	/* wider vectors get no codes */
#define HNSW_CODE_LEVELS		256 /* values of one code byte */

/* Support function numbers */
#define HNSW_DISTANCE_PROC		1
#define HNSW_NPROC				1

/* Build progress sub-phases (pg_stat_progress_create_index.phase) */
#define HNSW_PHASE_LOAD			2
#define HNSW_PHASE_WRITE		3

/* Tuple types */
#define HNSW_ELEMENT_TUPLE		1
#define HNSW_NEIGHBOR_TUPLE		2

/* Element flags */
#define HNSW_ELEMENT_DELETED	0x01	/* no live heap rows; vacuum removes it */

/* Distance measures, picked from the opclass's distance function */
typedef enum HnswMetric
{
	HNSW_METRIC_L2,				/* squared Euclidean distance */
	HNSW_METRIC_COSINE,			/* 1 - dot of unit vectors */
	HNSW_METRIC_IP,				/* negative dot product */
	HNSW_METRIC_L1				/* taxicab distance */
} HnswMetric;

/* Reloptions */
typedef struct HnswOptions
{
	int32		vl_len_;		/* varlena header (do not touch directly) */
	int			m;				/* max neighbours per level above 0 */
	int			efConstruction; /* candidate list size during build */
	bool		neighborCodes;	/* store neighbour codes (HnswCodec) */
} HnswOptions;

/*
 * Scalar quantizer of the neighbour codes, fixed when CREATE INDEX writes
 * the graph.  Dimension i of a vector x gets the code
 * c = floor((x[i] - low[i]) / step[i]), clamped to 0 .. 255.  Code c
 * represents the interval [low + c * step, low + (c + 1) * step].  Code 0
 * is open below and code 255 open above, so that a value outside the range
 * seen at build time is still bounded correctly.
 */
typedef struct HnswCodec
{
	uint16		dims;			/* code bytes per slot; 0 = no codes */
	uint16		maxLevel;		/* highest level whose slots have codes */
	float4		low[HNSW_CODE_MAX_DIMS];
	float4		step[HNSW_CODE_MAX_DIMS];
} HnswCodec;

/* Metapage contents (PageGetContents of block 0) */
typedef struct HnswMetaPageData
{
	uint32		magic;
	uint32		version;
	uint32		dims;			/* 0 until the first vector is indexed */
	uint16		m;
	uint16		efConstruction;
	ItemPointerData entryTid;	/* entry point element, invalid if empty */
	int16		entryLevel;		/* its level, -1 if empty */
	BlockNumber insertPage;		/* last page, first tried by inserts */
	HnswCodec	codec;			/* neighbour codes (format 2) */
} HnswMetaPageData;

typedef HnswMetaPageData *HnswMetaPage;

/* Special space of data pages */
typedef struct HnswPageOpaqueData
{
	uint16		unused;
	uint16		page_id;		/* HNSW_PAGE_ID */
} HnswPageOpaqueData;

typedef HnswPageOpaqueData *HnswPageOpaque;

/*
 * Element tuple.  x[dims] follows the header; for cosine indexes the stored
 * vector is scaled to unit length.  When neighbortid is invalid the
 * neighbour slots follow x[] in the same tuple (HnswTupleSlots).
 */
typedef struct HnswElementTupleData
{
	uint8		type;			/* HNSW_ELEMENT_TUPLE */
	uint8		level;			/* top level, 0 .. HNSW_MAX_LEVEL */
	uint8		flags;			/* HNSW_ELEMENT_* */
	uint8		nheaptids;		/* used entries of heaptids */
	uint32		fingerprint;	/* model fingerprint of the vector, 0 = none */
	ItemPointerData heaptids[HNSW_HEAPTIDS];
	ItemPointerData neighbortid;	/* separate neighbour tuple, or invalid */
	uint16		unused;
	float4		x[FLEXIBLE_ARRAY_MEMBER];
} HnswElementTupleData;

typedef HnswElementTupleData *HnswElementTuple;

/* Neighbour tuple, used only when an element's lists do not fit inline */
typedef struct HnswNeighborTupleData
{
	uint8		type;			/* HNSW_NEIGHBOR_TUPLE */
	uint8		level;			/* same as the element's */
	uint16		unused;
	ItemPointerData elementtid; /* owning element tuple */
	uint16		unused2;
	ItemPointerData slots[FLEXIBLE_ARRAY_MEMBER];
} HnswNeighborTupleData;

typedef HnswNeighborTupleData *HnswNeighborTuple;

/* Largest item that fits on a data page */
#define HNSW_MAX_ITEM_SIZE \
	MAXALIGN_DOWN(BLCKSZ - MAXALIGN(SizeOfPageHeaderData + sizeof(ItemIdData)) - \
				  MAXALIGN(sizeof(HnswPageOpaqueData)))

#define HnswPageGetOpaque(page) ((HnswPageOpaque) PageGetSpecialPointer(page))
#define HnswPageGetMeta(page)	((HnswMetaPage) PageGetContents(page))

/* Neighbour slots of a level: 2m at level 0, m above it */
#define HnswLevelCapacity(m, lc)	((lc) == 0 ? 2 * (m) : (m))
#define HnswLevelStart(m, lc)		((lc) == 0 ? 0 : 2 * (m) + ((lc) - 1) * (m))
#define HnswSlotCount(m, level)		((m) * ((level) + 2))

#define HnswElementHeaderSize		offsetof(HnswElementTupleData, x)
#define HnswNeighborHeaderSize		offsetof(HnswNeighborTupleData, slots)

/* Per-relation facts cached in rd_amcache */
typedef struct HnswRelInfo
{
	HnswMetric	metric;
	Buffer	   *recentBuffers;	/* per block: the buffer it was last read into */
	BlockNumber nrecentBuffers;
} HnswRelInfo;

/*
 * An element met during a search (on disk, keyed by its tuple's TID).
 * Copies are taken under a share lock, so they stay valid after the lock
 * is released.
 */
typedef struct HnswCandidate
{
	ItemPointerData tid;		/* element tuple */
	uint8		level;
	uint8		nheaptids;
	bool		deleted;
	bool		expanded;		/* neighbours already visited */
	bool		inResult;		/* in the result heap rather than pending */
	bool		queued;			/* in the candidate heap */
	bool		capped;			/* met when the result already held tieCap
								 * elements at its distance */
	uint32		fingerprint;
	double		distance;		/* to the search's query */
	ItemPointerData heaptids[HNSW_HEAPTIDS];
	ItemPointerData neighbortid;	/* separate neighbour tuple, or invalid */
	int			nneighbors;
	ItemPointerData *neighbors; /* list at the search's level */
	bool		neighborsLoaded;	/* false until a separate neighbour tuple
									 * has been read */
	uint8	   *codes;			/* codes of neighbors[] when the search uses
								 * codes, else NULL */
	float	   *vector;			/* copy, only when the search keeps vectors */
	pairingheap_node cnode;		/* in the candidate heap */
	pairingheap_node rnode;		/* in the result or the pending heap */
} HnswCandidate;

/* Hash of an element TID, for the hash tables keyed by TID */
static inline uint32
HnswHashTid(ItemPointerData tid)
{
	uint64		key = ((uint64) ItemPointerGetBlockNumberNoCheck(&tid) << 16) |
		ItemPointerGetOffsetNumberNoCheck(&tid);

	return murmurhash32((uint32) (key ^ (key >> 32)));
}

/* Visited set: element TID -> candidate (simplehash instance in hnswutils.c) */
typedef struct HnswVisitedEntry
{
	ItemPointerData tid;
	char		status;
	HnswCandidate *candidate;
} HnswVisitedEntry;

#define SH_PREFIX hnsw_visited
#define SH_ELEMENT_TYPE HnswVisitedEntry
#define SH_KEY_TYPE ItemPointerData
#define SH_SCOPE extern
#define SH_DECLARE
#include "lib/simplehash.h"

/*
 * Elements of a search's result heap at one distance (HnswSearch.ties).
 * Copies of one vector are at exactly the same distance from any query.
 */
typedef struct HnswTieClass
{
	double		distance;
	int32		inResult;		/* elements at this distance in the result */
	int32		expanded;		/* of them expanded in the current batch */
	bool		used;			/* slot taken */
} HnswTieClass;

/*
 * State of a best-first search on one level of the on-disk graph (HNSW
 * paper, algorithm 2, SEARCH-LAYER), extended so that it can be resumed:
 * elements that fall out of the ef best go to a pending heap instead of
 * being forgotten, and the next batch starts from them.
 *
 * Ties: at most tieCap elements at one distance enter the result, and at
 * most tieExpansions of them are expanded per batch (see AddCandidate in
 * hnswutils.c).  A large group of identical vectors otherwise filled the
 * whole result, and the search could not leave it.
 */
typedef struct HnswSearch
{
	Relation	index;
	HnswMetric	metric;
	int			dims;
	int			m;
	const float *query;			/* prepared query vector (unit for cosine) */
	const Latent *queryLatent;	/* original query; set to check fingerprints */
	int			level;
	int			ef;
	bool		keepVectors;	/* copy element vectors into candidates */
	const HnswCodec *codec;		/* neighbour codes, NULL or dims 0 = none */
	const float *bounds;		/* HnswBoundTable of query, built on first use */
	ItemPointerData *deferred;	/* neighbours skipped by their bound */
	int			ndeferred;
	int			maxdeferred;
	int			nbatches;		/* batches handed out so far */
	int			tieCap;			/* max result elements at one distance */
	int			tieExpansions;	/* max of them expanded per batch */
	HnswTieClass *ties;			/* result elements per distance: open
								 * addressing, tieMask + 1 slots, NULL
								 * until first used */
	uint32		tieMask;
	bool		holdBackTies;	/* scans: a batch ends before any element
								 * farther than a pending tie */
	int			npendingCapped; /* capped elements in the pending heap */
	HnswCandidate **skippedTies;	/* ties left unexpanded by this batch */
	int			nskippedTies;
	int			maxskippedTies;
	uint64		skipped;		/* neighbours skipped by their bound, for
								 * benchmarks */
	MemoryContext cxt;			/* holds everything the search allocates */
	hnsw_visited_hash *visited;
	pairingheap *candidates;	/* min-heap: not yet expanded */
	pairingheap *result;		/* max-heap: the current batch's ef best */
	pairingheap *pending;		/* min-heap: met, not yet in a batch */
	int			nresult;
	int			nvisited;
	uint64		bufferAccesses; /* buffer reads, for benchmarks */
	HnswCandidate *slab;		/* candidates are carved from blocks of these */
	int			slabFree;		/* unused entries left at slab */
} HnswSearch;

/* hnsw.c */
extern int	hnsw_ef_search;
extern int	hnsw_max_scan_tuples;
extern void wdc_hnsw_init(void);
extern int	HnswGetM(Relation index);
extern int	HnswGetEfConstruction(Relation index);
extern bool HnswGetNeighborCodes(Relation index);

/* hnswbuild.c */
extern IndexBuildResult *hnswbuild(Relation heap, Relation index, IndexInfo *indexInfo);
extern void hnswbuildempty(Relation index);

/* hnswinsert.c */
extern bool hnswinsert(Relation index, Datum *values, bool *isnull,
					   ItemPointer heap_tid, Relation heap,
					   IndexUniqueCheck checkUnique, bool indexUnchanged,
					   IndexInfo *indexInfo);
extern bool HnswPrepareValue(Relation index, HnswMetric metric, Datum value,
							 float *out, int *dims, uint32 *fingerprint);
extern bool HnswWriteNeighborList(Relation index, ItemPointer etid, ItemPointer neighbortid,
								  int dims, int m, int lc, const HnswCodec *codec,
								  const ItemPointerData *snapshot, int nsnapshot,
								  const ItemPointerData *newlist, const uint8 *newcodes,
								  int nnew, ItemPointer newtid, const uint8 *newtidcode);
extern int	HnswAddReverseEdge(Relation index, HnswMetric metric, int dims, int m,
							   const HnswCodec *codec, int lc, ItemPointer tid,
							   ItemPointer newtid, const float *newvec,
							   double distance, ItemPointerData *dropped, MemoryContext cxt);
extern bool HnswAttachCopy(Relation index, HnswMetric metric, int dims, int m,
						   const HnswCodec *codec, ItemPointer tid, ItemPointer newtid,
						   const float *vec, hnsw_visited_hash *reached, MemoryContext cxt);
extern void HnswInsertVector(Relation index, const float *vec, int dims,
							 uint32 fingerprint, ItemPointer heaptid,
							 MemoryContext tmpcxt);

/* hnswscan.c */
extern IndexScanDesc hnswbeginscan(Relation index, int nkeys, int norderbys);
extern void hnswrescan(IndexScanDesc scan, ScanKey keys, int nkeys,
					   ScanKey orderbys, int norderbys);
extern bool hnswgettuple(IndexScanDesc scan, ScanDirection dir);
extern void hnswendscan(IndexScanDesc scan);

/* hnswvacuum.c */
extern IndexBulkDeleteResult *hnswbulkdelete(IndexVacuumInfo *info,
											 IndexBulkDeleteResult *stats,
											 IndexBulkDeleteCallback callback,
											 void *callback_state);
extern IndexBulkDeleteResult *hnswvacuumcleanup(IndexVacuumInfo *info,
												IndexBulkDeleteResult *stats);

/* hnswvalidate.c */
extern bool hnswvalidate(Oid opclassoid);

/* hnswutils.c */
extern HnswMetric HnswGetMetric(Relation index);
extern double HnswDistance(HnswMetric metric, const float *a, const float *b, int dims);
extern bool HnswPrepareVector(HnswMetric metric, const float *x, int dims, float *out);
extern void HnswCheckDims(Relation index, int dims);
extern int	HnswElementLevel(int m, ItemPointer heaptid);
extern Size HnswElementTupleSize(int dims, int m, int level, bool inlineNeighbors,
								 const HnswCodec *codec);
extern Size HnswNeighborTupleSize(int m, int level, const HnswCodec *codec);
extern bool HnswNeighborsFitInline(int dims, int m, int level, const HnswCodec *codec);
extern ItemPointer HnswTupleSlots(HnswElementTuple etup, int dims);
extern int	HnswLevelCodeDims(const HnswCodec *codec, int lc);
extern uint8 *HnswSlotCode(ItemPointer slots, int m, int level, const HnswCodec *codec,
						   int slot);
extern void HnswCodecSetLayout(HnswCodec *codec, int dims, int m);
extern void HnswCodecEncode(const HnswCodec *codec, const float *x, uint8 *code);
extern const float *HnswBoundTable(const HnswCodec *codec, HnswMetric metric,
								   const float *query, MemoryContext cxt);
extern void HnswInitPage(Page page);
extern void HnswInitMetaPage(Page page, int dims, int m, int efConstruction);
extern void HnswReadMeta(Relation index, HnswMetaPageData *meta);
extern HnswElementTuple HnswGetElement(Page page, OffsetNumber off);
extern HnswNeighborTuple HnswGetNeighborTuple(Page page, OffsetNumber off);
extern int	HnswMaxCopies(int capacity);
extern int	HnswSelectNeighbors(HnswMetric metric, int dims, const float *const *vectors,
								const double *distances, int n, int max, int *selected);
extern void HnswRaiseFingerprintMismatch(const Latent *query, uint32 fingerprint);
extern void HnswSearchInit(HnswSearch *search, Relation index, HnswMetric metric,
						   int dims, int m, const HnswCodec *codec, const float *query,
						   int level, int ef, MemoryContext cxt);
extern void HnswSearchAddSeed(HnswSearch *search, ItemPointer tid);
extern int	HnswLoadCandidates(HnswSearch *search, ItemPointer tids, int n,
							   HnswCandidate **out);
extern void HnswLoadNeighbors(HnswSearch *search, HnswCandidate *c);
extern HnswElementTuple HnswFormElement(int dims, int m, int level, bool inlineNeighbors,
										const HnswCodec *codec, const float *vec,
										uint32 fingerprint, Size *size);
extern HnswNeighborTuple HnswFormNeighborTuple(int m, int level, const HnswCodec *codec,
											   Size *size);
extern int	HnswSearchBatch(HnswSearch *search, int maxVisited, HnswCandidate **out);
extern HnswCandidate *HnswSearchPopPending(HnswSearch *search, double maxDistance);
extern void HnswSearchSweep(HnswSearch *search, int maxVisited);
extern void HnswSearchDescend(Relation index, HnswMetric metric, int dims, int m,
							  const HnswCodec *codec, const float *bounds,
							  const float *query, const Latent *queryLatent,
							  const HnswMetaPageData *meta, int toLevel, int ef,
							  ItemPointer entry, uint64 *bufferAccesses,
							  MemoryContext cxt);

/* hnswverify.c: wdc.hnsw_verify(regclass) */
extern Datum hnsw_verify(PG_FUNCTION_ARGS);

#endif							/* WDC_HNSW_H */
