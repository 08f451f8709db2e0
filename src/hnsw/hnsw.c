/*
 * hnsw.c
 *	  Handler, reloptions, settings and cost estimate of the wdc_hnsw
 *	  index access method.
 */
#include "postgres.h"

#include <float.h>
#include <math.h>

#include "access/amapi.h"
#include "access/reloptions.h"
#include "commands/progress.h"
#include "commands/vacuum.h"
#include "optimizer/optimizer.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/selfuncs.h"

#include "hnsw/hnsw.h"

/* Settings; see wdc_hnsw_init for their meaning */
int			hnsw_ef_search = 40;
int			hnsw_max_scan_tuples = 20000;

static relopt_kind hnsw_relopt_kind;

/*
 * Register the reloptions and settings of wdc_hnsw.  Called once from the
 * library's _PG_init.  The caller reserves the "wdc" prefix after all wdc
 * settings are defined.
 */
void
wdc_hnsw_init(void)
{
	hnsw_relopt_kind = add_reloption_kind();
	add_int_reloption(hnsw_relopt_kind, "m",
					  "Max number of neighbours of an element per level (twice that at level 0)",
					  HNSW_DEFAULT_M, HNSW_MIN_M, HNSW_MAX_M, AccessExclusiveLock);
	add_int_reloption(hnsw_relopt_kind, "ef_construction",
					  "Size of the candidate list while inserting into the graph",
					  HNSW_DEFAULT_EF_CONSTRUCTION, HNSW_MIN_EF_CONSTRUCTION,
					  HNSW_MAX_EF_CONSTRUCTION, AccessExclusiveLock);
	add_bool_reloption(hnsw_relopt_kind, "neighbor_codes",
					   "Store a one-byte-per-dimension code of each neighbour next to its link, "
					   "so that scans skip neighbours that cannot qualify (index about four times larger)",
					   true, AccessExclusiveLock);

	DefineCustomIntVariable("wdc.hnsw_ef_search",
							"Sets the size of the candidate list of wdc_hnsw index scans.",
							"Valid range is 1 to 1000.  Larger values raise recall and cost time.",
							&hnsw_ef_search, 40, 1, 1000,
							PGC_USERSET, 0, NULL, NULL, NULL);

	/*
	 * The default lets a scan continue to about 500 batches of the default
	 * ef_search, enough for filters that pass one row in a few hundred at
	 * LIMIT 10-100, while bounding the work of a filter that passes none.
	 */
	DefineCustomIntVariable("wdc.hnsw_max_scan_tuples",
							"Sets the maximum number of index elements a wdc_hnsw scan visits.",
							"Bounds how far a scan continues past the first ef_search results "
							"when rows are filtered out or LIMIT exceeds ef_search.  "
							"Valid range is 1 to 2147483647.",
							&hnsw_max_scan_tuples, 20000, 1, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
}

/* Parse and validate reloptions */
static bytea *
hnswoptions(Datum reloptions, bool validate)
{
	static const relopt_parse_elt tab[] = {
		{"m", RELOPT_TYPE_INT, offsetof(HnswOptions, m)},
		{"ef_construction", RELOPT_TYPE_INT, offsetof(HnswOptions, efConstruction)},
		{"neighbor_codes", RELOPT_TYPE_BOOL, offsetof(HnswOptions, neighborCodes)},
	};

	return (bytea *) build_reloptions(reloptions, validate, hnsw_relopt_kind,
									  sizeof(HnswOptions), tab, lengthof(tab));
}

/* Option m of the index */
int
HnswGetM(Relation index)
{
	HnswOptions *opts = (HnswOptions *) index->rd_options;

	return opts ? opts->m : HNSW_DEFAULT_M;
}

/* Option ef_construction of the index */
int
HnswGetEfConstruction(Relation index)
{
	HnswOptions *opts = (HnswOptions *) index->rd_options;

	return opts ? opts->efConstruction : HNSW_DEFAULT_EF_CONSTRUCTION;
}

/* Option neighbor_codes of the index; it takes effect when the index is built */
bool
HnswGetNeighborCodes(Relation index)
{
	HnswOptions *opts = (HnswOptions *) index->rd_options;

	return opts ? opts->neighborCodes : true;
}

/* Names of the build sub-phases in pg_stat_progress_create_index */
static char *
hnswbuildphasename(int64 phasenum)
{
	switch (phasenum)
	{
		case PROGRESS_CREATEIDX_SUBPHASE_INITIALIZE:
			return "initializing";
		case HNSW_PHASE_LOAD:
			return "building graph";
		case HNSW_PHASE_WRITE:
			return "writing pages";
		default:
			return NULL;
	}
}

/*
 * Estimate the cost of an ordered scan.  A scan reads about ef_search * 2m
 * elements at level 0 plus a few per upper level before it returns its
 * first row, which is the start-up cost.  Without ORDER BY the index
 * cannot be scanned, which infinite cost expresses.
 */
static void
hnswcostestimate(PlannerInfo *root, IndexPath *path, double loop_count,
				 Cost *indexStartupCost, Cost *indexTotalCost,
				 Selectivity *indexSelectivity, double *indexCorrelation,
				 double *indexPages)
{
	GenericCosts costs;
	double		tuples = Max(path->indexinfo->tuples, 1.0);
	Relation	index;
	int			m;
	double		visited;

	if (path->indexorderbys == NIL)
	{
		*indexStartupCost = get_float8_infinity();
		*indexTotalCost = get_float8_infinity();
		*indexSelectivity = 0;
		*indexCorrelation = 0;
		*indexPages = 0;
		return;
	}

	index = index_open(path->indexinfo->indexoid, NoLock);
	m = HnswGetM(index);
	index_close(index, NoLock);

	visited = (double) hnsw_ef_search * 2 * m + m * log(tuples);
	visited = Min(visited, tuples);

	MemSet(&costs, 0, sizeof(costs));
	costs.numIndexTuples = visited;
	genericcostestimate(root, path, loop_count, &costs);
	*indexStartupCost = costs.indexTotalCost;

	/*
	 * Returning every row means visiting every element, so the total cost
	 * is that of reading the whole index; the planner interpolates between
	 * the two for a LIMIT, and a query without LIMIT prefers a sort.
	 */
	MemSet(&costs, 0, sizeof(costs));
	costs.numIndexTuples = tuples;
	genericcostestimate(root, path, loop_count, &costs);
	*indexTotalCost = Max(costs.indexTotalCost, *indexStartupCost);
	*indexSelectivity = costs.indexSelectivity;
	*indexCorrelation = 0;
	*indexPages = costs.numIndexPages;
}

PG_FUNCTION_INFO_V1(wdc_hnsw_handler);

/* Index access method handler of wdc_hnsw */
Datum
wdc_hnsw_handler(PG_FUNCTION_ARGS)
{
	IndexAmRoutine *amroutine = makeNode(IndexAmRoutine);

	amroutine->amstrategies = 0;
	amroutine->amsupport = HNSW_NPROC;
	amroutine->amoptsprocnum = 0;
	amroutine->amcanorder = false;
	amroutine->amcanorderbyop = true;
	amroutine->amcanbackward = false;
	amroutine->amcanunique = false;
	amroutine->amcanmulticol = false;
	amroutine->amoptionalkey = true;
	amroutine->amsearcharray = false;
	amroutine->amsearchnulls = false;
	amroutine->amstorage = false;
	amroutine->amclusterable = false;
	amroutine->ampredlocks = false;
	amroutine->amcanparallel = false;
	amroutine->amcaninclude = false;
	amroutine->amusemaintenanceworkmem = false;
	amroutine->amparallelvacuumoptions = VACUUM_OPTION_NO_PARALLEL;
	amroutine->amkeytype = InvalidOid;

	amroutine->ambuild = hnswbuild;
	amroutine->ambuildempty = hnswbuildempty;
	amroutine->aminsert = hnswinsert;
	amroutine->ambulkdelete = hnswbulkdelete;
	amroutine->amvacuumcleanup = hnswvacuumcleanup;
	amroutine->amcanreturn = NULL;
	amroutine->amcostestimate = hnswcostestimate;
	amroutine->amoptions = hnswoptions;
	amroutine->amproperty = NULL;
	amroutine->ambuildphasename = hnswbuildphasename;
	amroutine->amvalidate = hnswvalidate;
	amroutine->amadjustmembers = NULL;
	amroutine->ambeginscan = hnswbeginscan;
	amroutine->amrescan = hnswrescan;
	amroutine->amgettuple = hnswgettuple;
	amroutine->amgetbitmap = NULL;
	amroutine->amendscan = hnswendscan;
	amroutine->ammarkpos = NULL;
	amroutine->amrestrpos = NULL;
	amroutine->amestimateparallelscan = NULL;
	amroutine->aminitparallelscan = NULL;
	amroutine->amparallelrescan = NULL;

	PG_RETURN_POINTER(amroutine);
}
