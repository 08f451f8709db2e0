/*
 * model.c
 *	  Model registry glue: describing ONNX bytes before they are stored, the
 *	  per-backend cache of planned models, and its invalidation.
 *
 * The registry itself is SQL (table wdc.model, functions in
 * sql/parts/40_model.sql).  wdc.model_describe parses and plans the bytes a
 * user loads, so a model that cannot run is rejected before any row is
 * written.  wdc.encode and friends find models through WdcModelLookup,
 * which keeps parsed models and their batch-1 plans in a per-backend cache:
 *
 *	- Model versions are immutable and never reused, so a cached version is
 *	  valid until the version is dropped.
 *	- Any change to wdc.model or wdc.model_current fires a statement trigger
 *	  that sends a relcache invalidation for wdc.model; every backend's
 *	  callback then marks its cache stale, and the next lookup empties it.
 *	  The callback itself frees nothing, because it can run while a caller
 *	  still holds an entry.
 *	- The cache is bounded by wdc.model_cache_mb; the least recently used
 *	  entries go first.
 */
#include "postgres.h"

#include <math.h>
#include <sys/stat.h>

#include "catalog/namespace.h"
#include "catalog/pg_authid_d.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "pg/fits_sql.h"
#include "pg/model.h"

PG_FUNCTION_INFO_V1(model_describe);
PG_FUNCTION_INFO_V1(model_cache_invalidate);

int			wdc_model_cache_mb = 256;

static HTAB *model_cache = NULL;
static bool cache_stale = false;
static uint64 use_counter = 0;
static Oid	model_table_oid = InvalidOid;

/*
 * Bumped whenever wdc.model or wdc.model_current may have changed; cached
 * name-to-version resolutions from an older generation are not used.
 */
static uint64 model_generation = 0;

static void
model_cache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == model_table_oid ||
		!OidIsValid(model_table_oid))
	{
		cache_stale = true;
		model_generation++;
	}
}

void
wdc_model_init(void)
{
	DefineCustomIntVariable("wdc.model_cache_mb",
							"Sets the memory each backend may use for parsed and planned models.",
							"Least recently used models are dropped from the cache beyond this; "
							"valid range 1 MB to 65536 MB.",
							&wdc_model_cache_mb,
							256,	/* dozens of VAEs of a few MB each */
							1, 65536,
							PGC_USERSET,
							GUC_UNIT_MB,
							NULL, NULL, NULL);
	CacheRegisterRelcacheCallback(model_cache_callback, (Datum) 0);
}

/* --- core environment for cached models --------------------------------- */

static void *
entry_alloc(void *state, size_t size)
{
	return MemoryContextAllocExtended((MemoryContext) state, size,
									  MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
}

static void
entry_free(void *state, void *ptr)
{
	pfree(ptr);
}

static int
entry_interrupted(void *state)
{
	return QueryCancelPending || ProcDiePending;
}

/* --- helpers -------------------------------------------------------------- */

static void
free_entry(WdcModelEntry *entry)
{
	/* everything the core allocated lives in the entry's context */
	if (entry->context)
		MemoryContextDelete(entry->context);
	entry->context = NULL;
}

static void
flush_cache(void)
{
	HASH_SEQ_STATUS status;
	WdcModelEntry *entry;

	if (model_cache == NULL)
		return;
	hash_seq_init(&status, model_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
		free_entry(entry);
	hash_destroy(model_cache);
	model_cache = NULL;
}

static void
ensure_cache(void)
{
	HASHCTL		ctl;

	if (cache_stale)
	{
		flush_cache();
		cache_stale = false;
	}
	if (!OidIsValid(model_table_oid))
		model_table_oid = get_relname_relid("model", get_namespace_oid("wdc", false));
	if (model_table_oid == InvalidOid)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table wdc.model does not exist"),
				 errhint("Run CREATE EXTENSION wdc in this database.")));
	if (model_cache)
		return;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(WdcModelEntry);
	ctl.hcxt = CacheMemoryContext;
	model_cache = hash_create("wdc model cache", 16, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* Drop least recently used entries until adding "incoming" bytes fits. */
static void
evict_for(Size incoming)
{
	Size		limit = (Size) wdc_model_cache_mb * 1024 * 1024;

	for (;;)
	{
		HASH_SEQ_STATUS status;
		WdcModelEntry *entry;
		WdcModelEntry *oldest = NULL;
		Size		total = incoming;

		hash_seq_init(&status, model_cache);
		while ((entry = hash_seq_search(&status)) != NULL)
		{
			total += entry->bytes;
			/* UINT64_MAX marks the entry being returned: never evict it */
			if (entry->last_used != UINT64_MAX &&
				(oldest == NULL || entry->last_used < oldest->last_used))
				oldest = entry;
		}
		if (total <= limit || oldest == NULL)
			return;
		free_entry(oldest);
		hash_search(model_cache, &oldest->version, HASH_REMOVE, NULL);
	}
}

/* The jsonb value of key in an object, or NULL. */
static JsonbValue *
jsonb_get(Jsonb *obj, const char *key)
{
	JsonbValue	k;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&obj->root, JB_FOBJECT, &k);
}

static char *
jsonb_get_text(Jsonb *obj, const char *key)
{
	JsonbValue *v = jsonb_get(obj, key);

	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model option \"%s\" must be a string", key)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* A jsonb object's sub-value as a Jsonb, or NULL. */
static Jsonb *
jsonb_get_object(Jsonb *obj, const char *key)
{
	JsonbValue *v = jsonb_get(obj, key);

	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type != jbvBinary)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model option \"%s\" must be a JSON object or array", key)));
	return JsonbValueToJsonb(v);
}

/* Parse a JSON document stored as text (ONNX metadata value). */
static Jsonb *
parse_json_text(const char *text, const char *what)
{
	Jsonb	   *result = NULL;

	PG_TRY();
	{
		result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	}
	PG_CATCH();
	{
		FlushErrorState();
		result = NULL;
	}
	PG_END_TRY();
	if (result == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ONNX metadata \"%s\" is not valid JSON: \"%s\"", what, text)));
	return result;
}

/*
 * Read an array of integers (a shape) from jsonb into dims; returns the
 * rank.  what names the option in errors.
 */
static int
shape_from_jsonb(Jsonb *shape, int64 *dims, const char *what)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			rank = 0;

	if (shape == NULL || !JB_ROOT_IS_ARRAY(shape) || JB_ROOT_IS_SCALAR(shape))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON array of positive integers", what),
				 errhint("For an image model give the full input shape, for example [1, 1, 64, 64].")));
	it = JsonbIteratorInit(&shape->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		if (v.type != jbvNumeric || rank == WDC_NN_MAX_RANK)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must be a JSON array of at most %d positive integers",
							what, WDC_NN_MAX_RANK)));
		dims[rank] = DatumGetInt64(DirectFunctionCall1(numeric_int8,
													   NumericGetDatum(v.val.numeric)));
		if (dims[rank] < 1 || dims[rank] > (int64) 1 << 30)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s has dimension " INT64_FORMAT ", expected 1 to 2^30",
							what, dims[rank])));
		rank++;
	}
	if (rank == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	return rank;
}

/*
 * Settings that describe how a model is used, merged from ONNX metadata_props
 * (keys wdc.kind, wdc.output, wdc.input_shape, wdc.preprocessing) and the
 * options jsonb (keys kind, output, input_shape, preprocessing), the
 * options winning.
 */
typedef struct ModelSettings
{
	char	   *kind;
	char	   *output;			/* NULL: default choice */
	Jsonb	   *input_shape;	/* NULL: the graph's declared shape */
	Jsonb	   *preprocessing;	/* NULL: none */
} ModelSettings;

static void
settings_from(const WdcNnModel *model, Jsonb *options, ModelSettings *s)
{
	const char *meta;
	static const char *const known[] = {
		"kind", "output", "input_shape", "preprocessing", "provenance", NULL
	};

	memset(s, 0, sizeof(*s));

	/* reject misspelled option names instead of ignoring them */
	if (options && JB_ROOT_IS_OBJECT(options))
	{
		JsonbIterator *it = JsonbIteratorInit(&options->root);
		JsonbValue	v;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			bool		ok = false;

			if (tok != WJB_KEY)
				continue;
			for (int i = 0; known[i]; i++)
				if (strlen(known[i]) == (size_t) v.val.string.len &&
					strncmp(known[i], v.val.string.val, v.val.string.len) == 0)
					ok = true;
			if (!ok)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("unknown model option \"%.*s\"",
								v.val.string.len, v.val.string.val),
						 errhint("Valid options are kind, output, input_shape, preprocessing and provenance.")));
		}
	}
	else if (options && !JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model options must be a JSON object")));

	if ((meta = wdc_nn_metadata_get(model, "wdc.kind")) != NULL)
		s->kind = pstrdup(meta);
	if ((meta = wdc_nn_metadata_get(model, "wdc.output")) != NULL)
		s->output = pstrdup(meta);
	if ((meta = wdc_nn_metadata_get(model, "wdc.input_shape")) != NULL)
		s->input_shape = parse_json_text(meta, "wdc.input_shape");
	if ((meta = wdc_nn_metadata_get(model, "wdc.preprocessing")) != NULL)
		s->preprocessing = parse_json_text(meta, "wdc.preprocessing");

	if (jsonb_get_text(options, "kind"))
		s->kind = jsonb_get_text(options, "kind");
	if (jsonb_get_text(options, "output"))
		s->output = jsonb_get_text(options, "output");
	if (jsonb_get_object(options, "input_shape"))
		s->input_shape = jsonb_get_object(options, "input_shape");
	if (jsonb_get_object(options, "preprocessing"))
		s->preprocessing = jsonb_get_object(options, "preprocessing");

	if (s->kind == NULL)
		s->kind = pstrdup("graph");
	if (strcmp(s->kind, "encoder") != 0 && strcmp(s->kind, "decoder") != 0 &&
		strcmp(s->kind, "flow") != 0 && strcmp(s->kind, "graph") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid model kind \"%s\"", s->kind),
				 errhint("Use \"encoder\", \"decoder\", \"flow\" or \"graph\".")));
}

/*
 * Choose the output an encoder returns: the named one, else an output
 * called "mean", "mu" or "z_mean" (the posterior mean of a VAE encoder that
 * also returns a log-variance), else the first.
 */
static int
choose_output(const WdcNnModel *model, const char *name)
{
	static const char *const preferred[] = {"mean", "mu", "z_mean", NULL};
	int			i;

	if (name)
	{
		i = wdc_nn_find_output(model, name);
		if (i < 0)
		{
			StringInfoData names;

			initStringInfo(&names);
			for (int j = 0; j < wdc_nn_output_count(model); j++)
				appendStringInfo(&names, "%s\"%s\"", j ? ", " : "",
								 wdc_nn_output(model, j)->name);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("model has no output named \"%s\"", name),
					 errdetail("The graph's outputs are %s.", names.data)));
		}
		return i;
	}
	for (int p = 0; preferred[p]; p++)
		if ((i = wdc_nn_find_output(model, preferred[p])) >= 0)
			return i;
	return 0;
}

/*
 * Work out the input shape (batch dimension first) of the graph's first
 * input; symbolic dimensions other than the batch must come from
 * settings->input_shape.
 */
static int
resolve_input_shape(const WdcNnModel *model, const ModelSettings *s, int64 *dims)
{
	const WdcNnTensorInfo *in = wdc_nn_input(model, 0);
	int			rank;

	if (s->input_shape)
	{
		rank = shape_from_jsonb(s->input_shape, dims, "input_shape");
		if (rank != in->rank)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("input_shape has %d dimensions but graph input \"%s\" has %d",
							rank, in->name, in->rank)));
		for (int i = 1; i < rank; i++)
			if (in->dims[i] > 0 && in->dims[i] != dims[i])
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("input_shape dimension %d is " INT64_FORMAT " but graph input \"%s\" declares " INT64_FORMAT,
								i + 1, dims[i], in->name, in->dims[i])));
		dims[0] = 1;
		return rank;
	}
	rank = in->rank;
	for (int i = 0; i < rank; i++)
	{
		dims[i] = in->dims[i];
		if (i == 0)
			dims[i] = 1;
		else if (dims[i] < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("graph input \"%s\" has a symbolic dimension %d besides the batch",
							in->name, i + 1),
					 errhint("Give the shape in the options, for example {\"input_shape\": [1, 1, 64, 64]}.")));
	}
	return rank;
}

/*
 * Plan the model for batch rows with the given per-sample input shape;
 * output >= 0 plans that graph output alone (-1: all of them).
 */
static WdcStatus
plan_for(const WdcEnv *env, const WdcNnModel *model, int rank,
		 const int64 *dims, int64 batch, int output, WdcNnPlan **plan)
{
	WdcNnPlanOptions opts;
	WdcNnBinding *bindings;
	int			ninputs = wdc_nn_input_count(model);
	WdcStatus	st;

	bindings = wdc_alloc0(env, sizeof(WdcNnBinding) * Max(ninputs, 1));
	if (bindings == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory planning a model");
	for (int i = 0; i < ninputs; i++)
		bindings[i].rank = -1;
	bindings[0].rank = rank;
	memcpy(bindings[0].dims, dims, sizeof(int64) * rank);
	bindings[0].dims[0] = batch;
	memset(&opts, 0, sizeof(opts));
	opts.batch = batch;
	opts.bindings = bindings;
	opts.only_output = output + 1;
	st = wdc_nn_plan_create_ex(env, model, &opts, plan);
	wdc_free(env, bindings);
	return st;
}

/* --- wdc.model_describe ----------------------------------------------------- */

/*
 * wdc.model_describe(onnx bytea, options jsonb) -> jsonb
 *
 * Parse and plan ONNX bytes and describe how wdc will use them: kind, input
 * name and shape, chosen output and its shape, preprocessing, opset and the
 * ONNX metadata.  Raises an error for anything wdc cannot run, so
 * wdc.load_model stores only models that work.
 */
Datum
model_describe(PG_FUNCTION_ARGS)
{
	bytea	   *onnx = PG_GETARG_BYTEA_PP(0);
	Jsonb	   *options = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	WdcEnv		env;
	WdcError	error;
	WdcNnModel *model = NULL;
	WdcNnPlan  *plan = NULL;
	ModelSettings s;
	WdcPreprocess pp;
	int64		dims[WDC_NN_MAX_RANK];
	int			rank;
	int			out;
	const WdcNnTensorInfo *oinfo;
	StringInfoData buf;

	WdcFitsEnvInit(&env, &error);
	if (wdc_nn_load(&env, VARDATA_ANY(onnx), VARSIZE_ANY_EXHDR(onnx), &model) != WDC_OK)
		WdcFitsRaise(&error);

	PG_TRY();
	{
		settings_from(model, options, &s);
		if (wdc_nn_input_count(model) < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("model has no graph input")));
		if (wdc_nn_input_count(model) > 1 && strcmp(s.kind, "flow") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("a model of kind \"%s\" must have exactly one graph input, not %d",
							s.kind, wdc_nn_input_count(model)),
					 errhint("Only flows take several inputs (x, t and an optional condition).")));
		if (s.preprocessing)
			WdcPreprocessFromJsonb(s.preprocessing, &pp);
		out = choose_output(model, s.output);

		if (strcmp(s.kind, "flow") != 0)
		{
			rank = resolve_input_shape(model, &s, dims);
			/* a resize to another size would fail every later encode */
			if (s.preprocessing && pp.out_width > 0 && rank >= 3 &&
				dims[rank - 1] > 0 && dims[rank - 2] > 0 &&
				((int64) pp.out_width != dims[rank - 1] ||
				 (int64) pp.out_height != dims[rank - 2]))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("preprocessing resizes images to %zu x %zu pixels, but the model's input is " INT64_FORMAT " x " INT64_FORMAT,
								pp.out_width, pp.out_height, dims[rank - 1], dims[rank - 2]),
						 errhint("Set \"width\" and \"height\" in the preprocessing options to the model's input width and height.")));
			if (plan_for(&env, model, rank, dims, 1, -1, &plan) != WDC_OK)
				WdcFitsRaise(&error);
			oinfo = wdc_nn_plan_output(plan, out);
		}
		else
		{
			FlowModel  *native = NULL;
			FlowExternal *external = NULL;
			WdcStatus	st;

			/*
			 * Open the flow as a lookup would, so that a graph that cannot
			 * run as one is rejected before it is stored.
			 */
			st = flow_from_onnx(&env, (const uint8_t *) VARDATA_ANY(onnx),
								VARSIZE_ANY_EXHDR(onnx), &native);
			if (st == WDC_ERR_UNSUPPORTED)
				st = flow_external_open(&env, model, &external);
			if (st != WDC_OK)
				WdcFitsRaise(&error);
			if (native)
				flow_free(&env, native);
			if (external)
				flow_external_free(&env, external);
			rank = 0;
			oinfo = wdc_nn_output(model, out);
		}

		initStringInfo(&buf);
		appendStringInfoString(&buf, "{\"kind\": ");
		escape_json(&buf, s.kind);
		appendStringInfoString(&buf, ", \"input_name\": ");
		escape_json(&buf, wdc_nn_input(model, 0)->name);
		appendStringInfoString(&buf, ", \"input_shape\": ");
		if (rank > 0)
		{
			appendStringInfoChar(&buf, '[');
			for (int i = 0; i < rank; i++)
				appendStringInfo(&buf, "%s" INT64_FORMAT, i ? ", " : "", dims[i]);
			appendStringInfoChar(&buf, ']');
		}
		else
			appendStringInfoString(&buf, "null");
		appendStringInfoString(&buf, ", \"output_name\": ");
		escape_json(&buf, oinfo->name);
		appendStringInfoString(&buf, ", \"output_shape\": [");
		for (int i = 0; i < oinfo->rank; i++)
			appendStringInfo(&buf, "%s" INT64_FORMAT, i ? ", " : "", oinfo->dims[i]);
		appendStringInfoString(&buf, "], \"preprocessing\": ");
		if (s.preprocessing)
			appendStringInfoString(&buf, JsonbToCString(NULL, &s.preprocessing->root,
														VARSIZE(s.preprocessing)));
		else
			appendStringInfoString(&buf, "{}");
		appendStringInfo(&buf, ", \"opset\": %d, \"metadata\": {", wdc_nn_opset(model));
		for (int i = 0; i < wdc_nn_metadata_count(model); i++)
		{
			const char *k;
			const char *v;

			wdc_nn_metadata(model, i, &k, &v);
			if (i)
				appendStringInfoString(&buf, ", ");
			escape_json(&buf, k);
			appendStringInfoString(&buf, ": ");
			escape_json(&buf, v);
		}
		appendStringInfoString(&buf, "}}");
	}
	PG_FINALLY();
	{
		wdc_nn_plan_free(&env, plan);
		wdc_nn_free(&env, model);
	}
	PG_END_TRY();

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * Statement trigger on wdc.model and wdc.model_current: ask every backend
 * to drop its cached models at commit.
 */
Datum
model_cache_invalidate(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wdc.model_cache_invalidate() must be called as a trigger")));
	CacheInvalidateRelcacheByRelid(get_relname_relid("model",
													 get_namespace_oid("wdc", false)));
	return PointerGetDatum(NULL);
}

/* --- lookup ----------------------------------------------------------------- */

/*
 * Resolved current versions.  wdc.encode(name, image) resolves the name on
 * every row, and the catalog query costs as much as encoding a small image,
 * so a resolution is reused within the same transaction until the relcache
 * callback reports a change to wdc.model or wdc.model_current.  Keying on
 * the transaction keeps a later transaction, whose snapshot may see a newer
 * current version, from reusing one made under an older snapshot.
 */
#define CURRENT_CACHE_SIZE 8
#define CURRENT_CACHE_NAME 64

typedef struct CurrentVersion
{
	char		name[CURRENT_CACHE_NAME];	/* empty: unused slot */
	int64		version;
	uint64		generation;
	LocalTransactionId lxid;
} CurrentVersion;

static CurrentVersion current_cache[CURRENT_CACHE_SIZE];
static int	current_cache_next = 0;

/* Resolve the current version of name, or raise. */
static int64
current_version(const char *name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	int64		version = -1;
	int			ret;
	bool		cacheable = strlen(name) < CURRENT_CACHE_NAME;

	if (cacheable)
		for (int i = 0; i < CURRENT_CACHE_SIZE; i++)
		{
			CurrentVersion *c = &current_cache[i];

			if (c->generation == model_generation && c->lxid == MyProc->lxid &&
				strcmp(c->name, name) == 0)
				return c->version;
		}

	args[0] = CStringGetTextDatum(name);
	SPI_connect();
	ret = SPI_execute_with_args(
								"SELECT coalesce("
								"  (SELECT c.version FROM wdc.model_current c"
								"    WHERE c.name OPERATOR(pg_catalog.=) $1),"
								"  (SELECT pg_catalog.max(m.version) FROM wdc.model m"
								"    WHERE m.name OPERATOR(pg_catalog.=) $1))",
								1, argtypes, args, NULL, true, 1);
	if (ret == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			version = DatumGetInt64(d);
	}
	SPI_finish();
	if (version < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" does not exist", name),
				 errhint("Load it with wdc.load_model; SELECT * FROM wdc.models lists the loaded models.")));
	if (cacheable)
	{
		CurrentVersion *c = &current_cache[current_cache_next];

		current_cache_next = (current_cache_next + 1) % CURRENT_CACHE_SIZE;
		strlcpy(c->name, name, CURRENT_CACHE_NAME);
		c->version = version;
		c->generation = model_generation;
		c->lxid = MyProc->lxid;
	}
	return version;
}

/* Load one version's row and build its cache entry in a new context. */
static void
load_entry(WdcModelEntry *entry, const char *name, int64 version)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];
	int			ret;
	bool		isnull;
	TupleDesc	desc;
	HeapTuple	row;
	char	   *row_name;
	bytea	   *onnx;
	Jsonb	   *shape;
	Jsonb	   *pre;
	char	   *output_name;
	MemoryContext old;
	int64		fp;
	uint32		latent_fp;
	Datum		d;

	args[0] = Int64GetDatum(version);
	SPI_connect();
	ret = SPI_execute_with_args(
								"SELECT name, kind, onnx, fingerprint, input_shape, output_name, preprocessing,"
								" (provenance OPERATOR(pg_catalog.->>) 'latent_fingerprint')::pg_catalog.int8"
								" FROM wdc.model WHERE version OPERATOR(pg_catalog.=) $1",
								1, argtypes, args, NULL, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
	{
		SPI_finish();
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" has no version " INT64_FORMAT, name, version),
				 errhint("The version may have been dropped; SELECT * FROM wdc.models lists the loaded versions.")));
	}
	desc = SPI_tuptable->tupdesc;
	row = SPI_tuptable->vals[0];
	row_name = SPI_getvalue(row, desc, 1);
	if (strcmp(row_name, name) != 0)
	{
		SPI_finish();
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" has no version " INT64_FORMAT, name, version),
				 errdetail("Version " INT64_FORMAT " belongs to model \"%s\".", version, row_name)));
	}

	/* copy what we need into the entry's own context before SPI_finish */
	entry->context = AllocSetContextCreate(CacheMemoryContext, "wdc model",
										   ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(entry->context);
	entry->name = pstrdup(name);
	strlcpy(entry->kind, SPI_getvalue(row, desc, 2), WDC_MODEL_KIND_LEN);
	onnx = DatumGetByteaPCopy(SPI_getbinval(row, desc, 3, &isnull));
	fp = DatumGetInt64(SPI_getbinval(row, desc, 4, &isnull));
	entry->fingerprint = (uint32) fp;
	shape = NULL;
	d = SPI_getbinval(row, desc, 5, &isnull);
	if (!isnull)
		shape = DatumGetJsonbPCopy(d);
	output_name = SPI_getvalue(row, desc, 6);
	pre = DatumGetJsonbPCopy(SPI_getbinval(row, desc, 7, &isnull));
	d = SPI_getbinval(row, desc, 8, &isnull);
	latent_fp = isnull ? 0 : (uint32) DatumGetInt64(d);
	MemoryContextSwitchTo(old);
	SPI_finish();

	/* parse, choose input and output, plan for batch 1 */
	entry->env.alloc = entry_alloc;
	entry->env.free = entry_free;
	entry->env.interrupted = entry_interrupted;
	entry->env.state = entry->context;
	entry->env.error = &entry->error;
	if (strcmp(entry->kind, "flow") == 0)
	{
		WdcStatus	st;

		/*
		 * Flows trained by wdc run on the flow core, which reads its own
		 * graph layout and metadata; any other (x, t[, c]) -> v graph runs
		 * on the ONNX runtime.
		 */
		st = flow_from_onnx(&entry->env, (const uint8_t *) VARDATA_ANY(onnx),
							VARSIZE_ANY_EXHDR(onnx), &entry->flow);
		if (st == WDC_ERR_UNSUPPORTED)
		{
			if (wdc_nn_load(&entry->env, VARDATA_ANY(onnx), VARSIZE_ANY_EXHDR(onnx),
							&entry->model) != WDC_OK ||
				flow_external_open(&entry->env, entry->model, &entry->external) != WDC_OK)
				WdcFitsRaise(&entry->error);
		}
		else if (st != WDC_OK)
			WdcFitsRaise(&entry->error);
		entry->latent_fingerprint = latent_fp;
		entry->bytes = VARSIZE_ANY_EXHDR(onnx) * 2;
		pfree(onnx);
		return;
	}
	if (wdc_nn_load(&entry->env, VARDATA_ANY(onnx), VARSIZE_ANY_EXHDR(onnx),
					&entry->model) != WDC_OK)
		WdcFitsRaise(&entry->error);
	entry->input_index = 0;
	entry->output_index = output_name ? wdc_nn_find_output(entry->model, output_name) : 0;
	if (entry->output_index < 0)
		elog(ERROR, "stored output \"%s\" of model version " INT64_FORMAT " not found",
			 output_name, version);

	{
		old = MemoryContextSwitchTo(entry->context);
		entry->input_rank = shape_from_jsonb(shape, entry->input_dims, "stored input_shape");
		entry->has_preprocess = pre && JB_ROOT_COUNT(pre) > 0;
		if (entry->has_preprocess)
			WdcPreprocessFromJsonb(pre, &entry->preprocess);
		MemoryContextSwitchTo(old);
		if (plan_for(&entry->env, entry->model, entry->input_rank, entry->input_dims,
					 1, entry->output_index, &entry->plan) != WDC_OK)
			WdcFitsRaise(&entry->error);
		entry->bytes = VARSIZE_ANY_EXHDR(onnx) + wdc_nn_plan_bytes(entry->plan);
	}
	pfree(onnx);
}

WdcModelEntry *
WdcModelLookup(const char *name, int64 version)
{
	WdcModelEntry *entry;
	bool		found;

	ensure_cache();
	if (version < 0)
		version = current_version(name);

	entry = hash_search(model_cache, &version, HASH_ENTER, &found);
	if (found && entry->context != NULL)
	{
		if (strcmp(entry->name, name) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("model \"%s\" has no version " INT64_FORMAT, name, version),
					 errdetail("Version " INT64_FORMAT " belongs to model \"%s\".",
							   version, entry->name)));
		entry->last_used = ++use_counter;
		return entry;
	}

	/* a failed load leaves no half-built entry behind */
	memset(((char *) entry) + sizeof(int64), 0, sizeof(WdcModelEntry) - sizeof(int64));
	PG_TRY();
	{
		load_entry(entry, name, version);
	}
	PG_CATCH();
	{
		free_entry(entry);
		hash_search(model_cache, &version, HASH_REMOVE, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();

	/* make room; never evict the entry we return */
	entry->last_used = UINT64_MAX;
	evict_for(0);
	entry = hash_search(model_cache, &version, HASH_FIND, NULL);
	entry->last_used = ++use_counter;
	return entry;
}

void
WdcModelRequireKind(const WdcModelEntry *entry, const char *kind, const char *action)
{
	if (strcmp(entry->kind, kind) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("model \"%s\" version " INT64_FORMAT " has kind \"%s\", not \"%s\"",
						entry->name, entry->version, entry->kind, kind),
				 errhint("%s needs a model loaded with kind \"%s\".", action, kind)));
}

char *
WdcModelShapeText(const WdcModelEntry *entry)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 1; i < entry->input_rank; i++)
		appendStringInfo(&buf, "%s" INT64_FORMAT, i > 1 ? "x" : "", entry->input_dims[i]);
	return buf.data;
}

/* Name an image in messages: "image 3" for item 3 of a batch, "image" for item 0. */
static char *
image_label(int item)
{
	return item > 0 ? psprintf("image %d", item) : pstrdup("image");
}

WdcImage
WdcModelPrepareImage(const WdcModelEntry *entry, const WdcImage *image,
					 Size channels, int item)
{
	WdcImage	prepared = *image;
	Size		per_sample = WdcModelSampleSize(entry);
	Size		n = image->width * image->height * channels;
	Size		nan_count;
	bool		fits;

	/*
	 * 0. An image with no finite pixel (a cutout wholly off its frame, say)
	 * carries nothing to encode.  Preprocessing would turn it into a
	 * constant image, so every such image would get one and the same latent.
	 */
	if (n > 0 && wdc_count_nonfinite(image->pixels, n) == n)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("%s has no finite pixel", image_label(item)),
				 errdetail("All %zu pixels are NaN or infinite.", n),
				 errhint("Cut sources inside their frame (wdc.fits_cutout pads with NaN beyond the edge), or leave such rows out.")));

	/* 1. the model's preprocessing */
	if (entry->has_preprocess)
	{
		WdcEnv		env;
		WdcError	error;
		WdcPreprocess pp = entry->preprocess;

		if (channels != 1)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("model \"%s\" declares preprocessing, which applies to single-channel images only",
							entry->name),
					 errhint("Pass images as real[height][width], real[n][height][width] or FITS files.")));
		/* the size limit of the moment, not of when the model was cached */
		pp.max_bytes = (size_t) wdc_fits_max_mb << 20;
		WdcFitsEnvInit(&env, &error);
		if (wdc_preprocess_run(&env, &pp, image, &prepared) != WDC_OK)
			WdcFitsRaise(&error);
	}

	/* 2. shape: the last two input dimensions are height and width */
	n = prepared.width * prepared.height * channels;
	if (entry->input_rank >= 3)
		fits = entry->input_dims[entry->input_rank - 1] == (int64) prepared.width &&
			entry->input_dims[entry->input_rank - 2] == (int64) prepared.height &&
			per_sample == n;
	else
		fits = per_sample == n;
	/* the right height and width with another number of channels */
	if (!fits && entry->input_rank >= 3 &&
		entry->input_dims[entry->input_rank - 1] == (int64) prepared.width &&
		entry->input_dims[entry->input_rank - 2] == (int64) prepared.height &&
		per_sample % (prepared.width * prepared.height) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("%s has %zu channel%s but model \"%s\" version " INT64_FORMAT " expects %zu (input %s)",
						image_label(item), channels, channels == 1 ? "" : "s",
						entry->name, entry->version,
						per_sample / (prepared.width * prepared.height),
						WdcModelShapeText(entry)),
				 errhint("Pass multi-channel images as real[n][channels][height][width] to wdc.encode_batch or real[channels][height][width] to wdc.encode.")));
	if (!fits)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("%s of %zu x %zu pixels (width x height)%s does not fit model \"%s\" version " INT64_FORMAT ", which expects input %s",
						image_label(item), prepared.width, prepared.height,
						channels > 1 ? psprintf(" and %zu channels", channels) : "",
						entry->name, entry->version, WdcModelShapeText(entry)),
				 errhint("Declare preprocessing with width and height when loading the model, or pass cutouts of the right size.")));

	/* 3. no NaN or infinity may reach the graph */
	nan_count = wdc_count_nonfinite(prepared.pixels, n);
	if (nan_count > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("%s has %zu NaN or infinite pixels after preprocessing for model \"%s\"",
						image_label(item), nan_count, entry->name),
				 errhint("Declare a NaN fill in the model's preprocessing, for example {\"nan_fill\": \"median\"}, or clean the image first.")));
	return prepared;
}

Size
WdcModelSampleSize(const WdcModelEntry *entry)
{
	Size		n = 1;

	for (int i = 1; i < entry->input_rank; i++)
		n *= (Size) entry->input_dims[i];
	return n;
}

float *
WdcModelRun(WdcModelEntry *entry, const float *input, int n, Size *out_per_sample)
{
	const WdcNnTensorInfo *oinfo;
	Size		per_in = WdcModelSampleSize(entry);
	Size		per_out;
	float	   *output;
	int			done = 0;

	if (strcmp(entry->kind, "flow") == 0)
		elog(ERROR, "flow models are run by the flow functions");

	oinfo = wdc_nn_plan_output(entry->plan, entry->output_index);
	per_out = wdc_nn_numel(oinfo);
	*out_per_sample = per_out;
	output = palloc_extended(sizeof(float) * per_out * Max(n, 1), MCXT_ALLOC_HUGE);

	while (done < n)
	{
		WdcNnPlan  *plan = entry->plan;
		int			chunk = 1;
		const void *inputs[1];
		int			noutputs = wdc_nn_output_count(entry->model);
		void	  **outputs;
		float	   *scratch;

		/*
		 * Groups of batch_size rows go through a plan made for that size, and
		 * so does a last group of at least half that, padded with zeros.
		 * Fewer rows run one at a time through the batch-1 plan: per image
		 * it costs about what the batch plan does (with the direct
		 * convolution kernel, within a few percent), which beats computing
		 * the padding.
		 */
		if (n - done >= WDC_MODEL_BATCH / 2)
		{
			if (entry->batch_plan == NULL)
			{
				entry->batch_size = WDC_MODEL_BATCH;
				if (plan_for(&entry->env, entry->model, entry->input_rank,
							 entry->input_dims, entry->batch_size,
							 entry->output_index, &entry->batch_plan) != WDC_OK)
					WdcFitsRaise(&entry->error);
				entry->bytes += wdc_nn_plan_bytes(entry->batch_plan);
			}
			plan = entry->batch_plan;
			chunk = (int) Min(entry->batch_size, n - done);
		}

		/*
		 * The plans compute the chosen output alone.  A run of the plan's
		 * full size reads the input in place and writes its output straight
		 * into the result.  A partial batch is padded with zeros to the
		 * plan's size, and its output goes through a buffer.
		 */
		outputs = palloc0(sizeof(void *) * noutputs);
		scratch = NULL;
		inputs[0] = input + per_in * done;
		if (plan == entry->batch_plan && chunk < entry->batch_size)
		{
			float	   *padded = palloc0(sizeof(float) * per_in * entry->batch_size);

			memcpy(padded, input + per_in * done, sizeof(float) * per_in * chunk);
			inputs[0] = padded;
			scratch = palloc_extended(sizeof(float) *
									  wdc_nn_numel(wdc_nn_plan_output(plan, entry->output_index)),
									  MCXT_ALLOC_HUGE);
		}
		outputs[entry->output_index] = scratch ? scratch : output + per_out * done;

		if (wdc_nn_run(&entry->env, plan, inputs, outputs) != WDC_OK)
			WdcFitsRaise(&entry->error);
		if (scratch)
		{
			memcpy(output + per_out * done, scratch, sizeof(float) * per_out * chunk);
			pfree(scratch);
		}
		pfree(outputs);
		done += chunk;
	}
	return output;
}

/* --- wdc.read_model_file ---------------------------------------------------- */

PG_FUNCTION_INFO_V1(read_model_file);

/*
 * wdc.read_model_file(path text) -> bytea
 *
 * Read a whole server file, as pg_read_binary_file does, but only for roles
 * with the privileges of pg_read_server_files (checked here, regardless of
 * EXECUTE grants).  The size must fit a bytea.
 */
Datum
read_model_file(PG_FUNCTION_ARGS)
{
	char	   *path = text_to_cstring(PG_GETARG_TEXT_PP(0));
	FILE	   *file;
	struct stat st;
	bytea	   *result;
	size_t		got;

	if (!has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to read server file \"%s\"", path),
				 errhint("Only roles with the privileges of \"pg_read_server_files\" may load models from server files; others can pass the bytes to wdc.load_model.")));

	file = AllocateFile(path, PG_BINARY_R);
	if (file == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open model file \"%s\": %m", path)));
	if (fstat(fileno(file), &st) != 0 || !S_ISREG(st.st_mode))
	{
		FreeFile(file);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model file \"%s\" is not a regular file", path)));
	}
	if ((uint64) st.st_size > MaxAllocSize - VARHDRSZ)
	{
		FreeFile(file);
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("model file \"%s\" is too large (%lld bytes)", path, (long long) st.st_size),
				 errhint("A model must be smaller than 1 GB.")));
	}
	result = palloc(VARHDRSZ + st.st_size);
	got = fread(VARDATA(result), 1, st.st_size, file);
	if (got != (size_t) st.st_size || ferror(file))
	{
		int			save_errno = errno;

		FreeFile(file);
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read model file \"%s\": %m", path)));
	}
	FreeFile(file);
	SET_VARSIZE(result, VARHDRSZ + got);
	PG_RETURN_BYTEA_P(result);
}
