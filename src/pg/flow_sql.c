/*
 * flow_sql.c
 *	  SQL glue of the flow-matching core: training from a query
 *	  (wdc.flow_fit behind wdc.train_flow), log density, p-values, catalog
 *	  surprise, residuals, counterfactual transfer and sampling.
 *
 * Conditions.  A flow remembers the training query's condition columns:
 * numeric ones (z-scored inside the core) and at most one class column.
 * At inference a condition is a jsonb object keyed by those column names,
 * with class labels as in training (text or number), or a real[] of the
 * numeric columns in order for flows without a class column.  A NULL
 * condition, or a JSON null for any column, selects the learned null
 * condition (the unconditional flow).
 *
 * Spaces and fingerprints.  Latents passed in must come from the model the
 * flow was trained on (same fingerprint, or untagged).  Residuals live in
 * the flow's base space and carry the flow version's fingerprint, so they
 * are only compared with residuals of the same flow; transfer and sample
 * return latents in the encoder's space with the encoder's fingerprint.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "flow/flow.h"
#include "latent/latent.h"
#include "pg/fits_sql.h"
#include "pg/model.h"

PG_FUNCTION_INFO_V1(flow_fit);
PG_FUNCTION_INFO_V1(flow_log_density_jsonb);
PG_FUNCTION_INFO_V1(flow_log_density_array);
PG_FUNCTION_INFO_V1(flow_outlier_pvalue);
PG_FUNCTION_INFO_V1(flow_catalog_surprise);
PG_FUNCTION_INFO_V1(flow_residual_sql);
PG_FUNCTION_INFO_V1(flow_transfer_sql);
PG_FUNCTION_INFO_V1(flow_sample_sql);

/* --- options ---------------------------------------------------------------- */

static bool
key_is(const JsonbValue *k, const char *name)
{
	return strlen(name) == (size_t) k->val.string.len &&
		strncmp(name, k->val.string.val, k->val.string.len) == 0;
}

/* A jsonb scalar as text (numbers in their decimal form). */
static char *
scalar_text(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		default:
			return NULL;
	}
}

static double
option_double(const char *name, const char *text, double lo, double hi)
{
	char	   *end;
	double		v;

	errno = 0;
	v = strtod(text, &end);
	if (end == text || *end != '\0' || errno != 0 || isnan(v) || v < lo || v > hi)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"%s\"", text, name),
				 errhint("Expected a number from %g to %g.", lo, hi)));
	return v;
}

static int
option_int(const char *name, const char *text, int lo, int hi)
{
	double		v = option_double(name, text, lo, hi);

	if (v != floor(v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"%s\"", text, name),
				 errhint("Expected an integer from %d to %d.", lo, hi)));
	return (int) v;
}

/* Target of set_solve_option. */
typedef struct SolveOptionTarget
{
	FlowSolveOptions *opt;
	bool		intervals_given;
} SolveOptionTarget;

/*
 * Set one inference option: method (euler, midpoint, rk4), steps,
 * quadrature (stage, simpson), div_intervals, guidance (alias w).  Raises
 * on a bad name or value; the combination is checked afterwards.
 */
static WdcStatus
set_solve_option(const WdcEnv *env, void *target, const char *name, const char *text)
{
	SolveOptionTarget *t = target;
	FlowSolveOptions *opt = t->opt;

	if (strcmp(name, "method") == 0)
	{
		if (strcmp(text, "euler") == 0)
			opt->method = FLOW_EULER;
		else if (strcmp(text, "midpoint") == 0)
			opt->method = FLOW_MIDPOINT;
		else if (strcmp(text, "rk4") == 0)
			opt->method = FLOW_RK4;
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value \"%s\" for flow option \"method\"", text),
					 errhint("Expected \"euler\", \"midpoint\" or \"rk4\".")));
	}
	else if (strcmp(name, "quadrature") == 0)
	{
		if (strcmp(text, "stage") == 0)
			opt->quadrature = FLOW_QUAD_STAGE;
		else if (strcmp(text, "simpson") == 0)
			opt->quadrature = FLOW_QUAD_SIMPSON;
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value \"%s\" for flow option \"quadrature\"", text),
					 errhint("Expected \"stage\" or \"simpson\".")));
	}
	else if (strcmp(name, "steps") == 0)
		opt->steps = option_int(name, text, 1, FLOW_MAX_STEPS);
	else if (strcmp(name, "div_intervals") == 0)
	{
		opt->div_intervals = option_int(name, text, 2, FLOW_MAX_STEPS);
		t->intervals_given = true;
	}
	else if (strcmp(name, "guidance") == 0 || strcmp(name, "w") == 0)
		opt->guidance = option_double(name, text, -100, 100);
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown flow option \"%s\"", name),
				 errhint("Valid options are method, steps, quadrature, div_intervals and guidance.")));
	return WDC_OK;
}

/* Raise unless options is NULL or a JSON object. */
static void
require_object(Jsonb *options, const char *what)
{
	if (options != NULL && !JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", what)));
}

/* Read inference options over the defaults and check them together. */
static void
solve_options_from_jsonb(Jsonb *options, FlowSolveOptions *opt, bool need_density)
{
	WdcEnv		env;
	WdcError	error;
	SolveOptionTarget target = {opt, false};

	flow_solve_options_default(opt);
	require_object(options, "flow options");
	if (options != NULL)
		WdcApplyJsonbOptions(options, set_solve_option, &target, "flow");

	/*
	 * Simpson needs an even number of intervals that divides the steps.  When
	 * only steps was given, use every second grid point (steps / 2) for an
	 * even step count, else evaluate the divergence at the solver's stages.
	 */
	if (!target.intervals_given && opt->quadrature == FLOW_QUAD_SIMPSON &&
		opt->steps % opt->div_intervals != 0)
	{
		if (opt->steps % 4 == 0)
			opt->div_intervals = opt->steps / 2;
		else if (opt->steps % 2 == 0)
			opt->div_intervals = opt->steps;
		else
			opt->quadrature = FLOW_QUAD_STAGE;
	}

	WdcFitsEnvInit(&env, &error);
	if (flow_solve_options_check(&env, opt, need_density ? 1 : 0) != WDC_OK)
		WdcFitsRaise(&error);
}

/* --- model and latent checks ------------------------------------------------- */

static WdcModelEntry *
lookup_flow(text *name, int64 version)
{
	WdcModelEntry *entry = WdcModelLookup(text_to_cstring(name), version);

	WdcModelRequireKind(entry, "flow", "This function");
	return entry;
}

/* One row's condition in the core's layout. */
typedef struct RowCondition
{
	float	   *values;			/* external flows: the c input, or NULL */
	float	   *numeric;		/* [n_numeric] */
	int32_t		class_index;
	uint8_t		null_row;
	FlowConditions cond;
} RowCondition;

/* Latent dimension of a native or external flow. */
static int
flow_dim(const WdcModelEntry *entry)
{
	return entry->flow ? entry->flow->d : flow_external_dim(entry->external);
}

/* Raise for functions that need what only flows trained by wdc carry. */
static void
require_native(const WdcModelEntry *entry, const char *what)
{
	if (entry->flow == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s is not available for flow \"%s\", which was trained outside wdc",
						what, entry->name),
				 errdetail("Only flows trained by wdc.train_flow carry a null condition and calibration rows.")));
}

/*
 * Condition of an external flow: NULL, or m numbers given as a JSON array
 * (jsonb form) or a real[].
 */
static void
external_condition(const WdcModelEntry *entry, Jsonb *json, ArrayType *array,
				   RowCondition *rc)
{
	int			m = flow_external_cond_dim(entry->external);
	int			n = 0;

	memset(rc, 0, sizeof(*rc));
	if (json == NULL && array == NULL)
		return;
	rc->values = palloc0(sizeof(float) * Max(m, 1));
	if (json)
	{
		JsonbIterator *it;
		JsonbValue	v;
		JsonbIteratorToken tok;

		if (!JB_ROOT_IS_ARRAY(json) || JB_ROOT_IS_SCALAR(json))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("condition of flow \"%s\" must be a JSON array of %d numbers", entry->name, m),
					 errdetail("The flow was trained outside wdc; its graph input c takes the values as they are.")));
		it = JsonbIteratorInit(&json->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok != WJB_ELEM)
				continue;
			if (v.type != jbvNumeric || n >= m)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("condition of flow \"%s\" must be a JSON array of %d numbers", entry->name, m)));
			rc->values[n++] = (float) DatumGetFloat8(DirectFunctionCall1(numeric_float8,
																		 NumericGetDatum(v.val.numeric)));
		}
	}
	else
	{
		Datum	   *elems;
		bool	   *nulls;

		deconstruct_array(array, FLOAT4OID, sizeof(float4), true, TYPALIGN_INT,
						  &elems, &nulls, &n);
		for (int i = 0; i < n && i < m; i++)
		{
			if (nulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("condition of flow \"%s\" must not contain NULL", entry->name)));
			rc->values[i] = DatumGetFloat4(elems[i]);
		}
	}
	if (n != m)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("condition has %d values but flow \"%s\" takes %d", n, entry->name, m)));
}

/* Check z against the flow's dimension and training fingerprint. */
static void
check_latent(const WdcModelEntry *entry, const Latent *z)
{
	LatentCheckVersion(z);
	if (z->dim != flow_dim(entry))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("latent has %d dimensions but flow \"%s\" version " INT64_FORMAT " was trained on %d",
						z->dim, entry->name, entry->version, flow_dim(entry))));
	if (z->fingerprint != 0 && entry->latent_fingerprint != 0 &&
		z->fingerprint != entry->latent_fingerprint)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("latent comes from a different model than flow \"%s\" was trained on (fingerprints %08x and %08x)",
						entry->name, z->fingerprint, entry->latent_fingerprint),
				 errhint("Score latents of the encoder version the flow was trained on, or train a flow on this encoder's latents.")));
}

/* --- conditions ---------------------------------------------------------------- */


static int32_t
class_label_index(const WdcModelEntry *entry, const char *label)
{
	const FlowModel *m = entry->flow;

	for (int i = 0; i < m->n_classes; i++)
		if (strcmp(m->class_labels[i], label) == 0)
			return i;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown class label \"%s\" for column \"%s\" of flow \"%s\"",
					label, m->class_name, entry->name),
			 errdetail("The flow was trained with %d labels%s%s%s.", m->n_classes,
					   m->n_classes > 0 ? ", for example \"" : "",
					   m->n_classes > 0 ? m->class_labels[0] : "",
					   m->n_classes > 0 ? "\"" : ""),
			 errhint("Use a label that occurred in the training query, or NULL for the unconditional flow.")));
	return -1;
}

/*
 * Fill rc from a jsonb object keyed by the training columns.  Every column
 * must be present; a JSON null in any of them selects the null condition.
 */
static void
condition_from_jsonb(const WdcModelEntry *entry, Jsonb *cond, RowCondition *rc)
{
	const FlowModel *m = entry->flow;
	JsonbIterator *it;
	JsonbValue	k;
	JsonbIteratorToken tok;

	if (entry->external)
	{
		external_condition(entry, cond, NULL, rc);
		return;
	}
	memset(rc, 0, sizeof(*rc));
	rc->numeric = palloc0(sizeof(float) * Max(m->n_numeric, 1));
	rc->class_index = -1;
	rc->cond.numeric = m->n_numeric > 0 ? rc->numeric : NULL;
	rc->cond.class_index = m->n_classes > 0 ? &rc->class_index : NULL;
	rc->cond.null_row = &rc->null_row;

	if (cond == NULL)
	{
		rc->null_row = 1;
		return;
	}
	if (!JB_ROOT_IS_OBJECT(cond))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("condition must be a JSON object keyed by the training query's column names")));

	/* unknown keys first: a misspelled column must not be ignored */
	it = JsonbIteratorInit(&cond->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		bool		known = m->class_name && key_is(&k, m->class_name);

		if (tok != WJB_KEY)
			continue;
		for (int i = 0; i < m->n_numeric && !known; i++)
			known = key_is(&k, m->numeric_names[i]);
		if (!known)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("flow \"%s\" has no condition column \"%.*s\"",
							entry->name, k.val.string.len, k.val.string.val),
					 errhint("The flow's condition columns are those of its training query after the latent.")));
	}

	for (int i = 0; i < m->n_numeric + (m->class_name ? 1 : 0); i++)
	{
		bool		is_class = i == m->n_numeric;
		const char *col = is_class ? m->class_name : m->numeric_names[i];
		JsonbValue	key;
		JsonbValue *val;

		key.type = jbvString;
		key.val.string.val = (char *) col;
		key.val.string.len = strlen(col);
		val = findJsonbValueFromContainer(&cond->root, JB_FOBJECT, &key);
		if (val == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("condition is missing column \"%s\" of flow \"%s\"", col, entry->name),
					 errhint("Give every condition column, or a JSON null for the unconditional flow.")));
		if (val->type == jbvNull)
		{
			rc->null_row = 1;
			continue;
		}
		if (is_class)
		{
			char	   *label = scalar_text(val);

			if (label == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("class column \"%s\" must be a string or a number", col)));
			rc->class_index = class_label_index(entry, label);
		}
		else
		{
			if (val->type != jbvNumeric)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("condition column \"%s\" must be a finite number", col),
						 errhint("Give a JSON number; NaN and infinities cannot be scored, and a JSON null stands for an unknown value.")));
			rc->numeric[i] = (float) DatumGetFloat8(DirectFunctionCall1(numeric_float8,
																		NumericGetDatum(val->val.numeric)));
		}
	}
}

/* Fill rc from a real[] of the numeric columns in training order. */
static void
condition_from_array(const WdcModelEntry *entry, ArrayType *array, RowCondition *rc)
{
	const FlowModel *m = entry->flow;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (entry->external)
	{
		external_condition(entry, NULL, array, rc);
		return;
	}
	memset(rc, 0, sizeof(*rc));
	rc->numeric = palloc0(sizeof(float) * Max(m->n_numeric, 1));
	rc->class_index = -1;
	rc->cond.numeric = rc->numeric;
	rc->cond.null_row = &rc->null_row;
	if (m->n_classes > 0 || m->class_name)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("flow \"%s\" has a class column \"%s\"; pass the condition as jsonb",
						entry->name, m->class_name)));
	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("condition array must be one-dimensional")));
	deconstruct_array(array, FLOAT4OID, sizeof(float4), true, TYPALIGN_INT,
					  &elems, &nulls, &n);
	if (n != m->n_numeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("condition has %d values but flow \"%s\" has %d numeric condition columns",
						n, entry->name, m->n_numeric)));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			rc->null_row = 1;
		else
			rc->numeric[i] = DatumGetFloat4(elems[i]);
	}
}

/* --- inference entry points ----------------------------------------------------- */

/*
 * Arguments (flow text, [version bigint,] z latent, ...): return the entry
 * and the index of z.  Signatures with a version have one more argument
 * than the current-version form; the caller passes that count.
 */
static WdcModelEntry *
flow_from_args(FunctionCallInfo fcinfo, int nargs_current, int *zarg)
{
	int64		version = -1;

	if (PG_NARGS() > nargs_current)
	{
		if (PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("flow version must not be NULL")));
		version = PG_GETARG_INT64(1);
		*zarg = 2;
	}
	else
		*zarg = 1;
	if (PG_ARGISNULL(0) || PG_ARGISNULL(*zarg))
		return NULL;
	return lookup_flow(PG_GETARG_TEXT_PP(0), version);
}

static double
log_density_one(WdcModelEntry *entry, const Latent *z, RowCondition *rc,
				Jsonb *options)
{
	FlowSolveOptions opt;
	double		out;

	solve_options_from_jsonb(options, &opt, true);
	if (entry->external)
	{
		if (flow_external_log_density(&entry->env, entry->external, z->x, rc->values,
									  &opt, &out) != WDC_OK)
			WdcFitsRaise(&entry->error);
	}
	else
	{
		if (rc->null_row)
			opt.guidance = 0;
		if (flow_log_density(&entry->env, entry->flow, z->x, &rc->cond, 1, &opt, &out) != WDC_OK)
			WdcFitsRaise(&entry->error);
	}

	/*
	 * A latent or condition far outside the training data can drive the
	 * trajectory to overflow, and the sum then comes out NaN.  Its density
	 * is below anything float arithmetic can express, so report -Infinity:
	 * it sorts as the least typical row and its p-value is 0, where NaN
	 * would sort after every number.
	 */
	if (isnan(out))
		out = -get_float8_infinity();
	return out;
}

/* wdc.log_density(flow, [version,] z, [cond jsonb, [options jsonb]]) */
Datum
flow_log_density_jsonb(PG_FUNCTION_ARGS)
{
	int			zarg;
	WdcModelEntry *entry;
	Latent	   *z;
	RowCondition rc;
	Jsonb	   *options = NULL;
	int			base;

	/* current-version forms have 2, 3 or 4 arguments; versioned ones 5 */
	base = PG_NARGS() == 5 ? 4 : PG_NARGS();
	entry = flow_from_args(fcinfo, base, &zarg);
	if (entry == NULL)
		PG_RETURN_NULL();
	z = PG_GETARG_LATENT_P(zarg);
	check_latent(entry, z);
	condition_from_jsonb(entry, (PG_NARGS() > zarg + 1 && !PG_ARGISNULL(zarg + 1)) ?
						 PG_GETARG_JSONB_P(zarg + 1) : NULL, &rc);
	if (PG_NARGS() > zarg + 2 && !PG_ARGISNULL(zarg + 2))
		options = PG_GETARG_JSONB_P(zarg + 2);
	PG_RETURN_FLOAT8(log_density_one(entry, z, &rc, options));
}

/* wdc.log_density(flow, z, cond real[], [options jsonb]) */
Datum
flow_log_density_array(PG_FUNCTION_ARGS)
{
	int			zarg;
	WdcModelEntry *entry = flow_from_args(fcinfo, PG_NARGS(), &zarg);
	Latent	   *z;
	RowCondition rc;

	if (entry == NULL)
		PG_RETURN_NULL();
	z = PG_GETARG_LATENT_P(zarg);
	check_latent(entry, z);
	if (PG_ARGISNULL(zarg + 1))
		condition_from_jsonb(entry, NULL, &rc);
	else
		condition_from_array(entry, PG_GETARG_ARRAYTYPE_P(zarg + 1), &rc);
	PG_RETURN_FLOAT8(log_density_one(entry, z, &rc,
									 PG_NARGS() > zarg + 2 && !PG_ARGISNULL(zarg + 2) ?
									 PG_GETARG_JSONB_P(zarg + 2) : NULL));
}

/*
 * wdc.outlier_pvalue(flow, z [, cond jsonb]): share of the calibration
 * rows (held-out training rows) whose log density is lower than z's, under
 * the same condition mode (conditional when cond is given).
 */
Datum
flow_outlier_pvalue(PG_FUNCTION_ARGS)
{
	int			zarg;
	WdcModelEntry *entry = flow_from_args(fcinfo, PG_NARGS(), &zarg);
	Latent	   *z;
	RowCondition rc;
	double		lp;
	double		p;

	if (entry == NULL)
		PG_RETURN_NULL();
	z = PG_GETARG_LATENT_P(zarg);
	check_latent(entry, z);
	condition_from_jsonb(entry, PG_NARGS() > zarg + 1 && !PG_ARGISNULL(zarg + 1) ?
						 PG_GETARG_JSONB_P(zarg + 1) : NULL, &rc);
	require_native(entry, "wdc.outlier_pvalue");
	if (entry->flow->n_calibration == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("flow \"%s\" has no calibration rows", entry->name),
				 errhint("Train it with a validation split (option val_fraction > 0).")));
	lp = log_density_one(entry, z, &rc, NULL);
	p = flow_pvalue(entry->flow, lp, rc.null_row ? 0 : 1);
	PG_RETURN_FLOAT8(p);
}

/*
 * wdc.catalog_surprise(flow, z, cond) = log p(z | cond) - log p(z), which
 * equals log p(cond | z) - log p(cond): how much better (positive) or worse
 * (negative) the catalogued values fit this object than an average one.
 */
Datum
flow_catalog_surprise(PG_FUNCTION_ARGS)
{
	int			zarg;
	WdcModelEntry *entry = flow_from_args(fcinfo, PG_NARGS(), &zarg);
	Latent	   *z;
	RowCondition rc;
	RowCondition none;
	double		cond_lp;
	double		lp;

	if (entry == NULL || PG_ARGISNULL(zarg + 1))
		PG_RETURN_NULL();
	z = PG_GETARG_LATENT_P(zarg);
	check_latent(entry, z);
	require_native(entry, "wdc.catalog_surprise");
	condition_from_jsonb(entry, PG_GETARG_JSONB_P(zarg + 1), &rc);
	if (rc.null_row)
		PG_RETURN_NULL();
	condition_from_jsonb(entry, NULL, &none);
	cond_lp = log_density_one(entry, z, &rc, NULL);
	lp = log_density_one(entry, z, &none, NULL);
	if (isinf(cond_lp) || isinf(lp))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("log density of the latent under flow \"%s\" is -Infinity, so the catalog surprise is undefined",
						entry->name),
				 errhint("The latent or the condition lies far outside the training data; wdc.log_density shows which term is infinite.")));
	PG_RETURN_FLOAT8(cond_lp - lp);
}

static Latent *
latent_from_floats(const float *x, int d, uint32 fingerprint)
{
	Latent	   *result = InitLatent(d);

	result->fingerprint = fingerprint;
	for (int i = 0; i < d; i++)
	{
		if (isnan(x[i]) || isinf(x[i]))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("flow integration produced a non-finite value at element %d", i + 1),
					 errhint("The latent may lie far outside the training data; try more steps or method rk4.")));
		result->x[i] = x[i];
	}
	return result;
}

/* wdc.residual(flow, [version,] z, cond jsonb, [options]) -> latent */
Datum
flow_residual_sql(PG_FUNCTION_ARGS)
{
	int			zarg;
	WdcModelEntry *entry = flow_from_args(fcinfo, PG_NARGS() == 5 ? 4 : PG_NARGS(), &zarg);
	Latent	   *z;
	RowCondition rc;
	FlowSolveOptions opt;
	float	   *out;

	if (entry == NULL)
		PG_RETURN_NULL();
	z = PG_GETARG_LATENT_P(zarg);
	check_latent(entry, z);
	condition_from_jsonb(entry, PG_NARGS() > zarg + 1 && !PG_ARGISNULL(zarg + 1) ?
						 PG_GETARG_JSONB_P(zarg + 1) : NULL, &rc);
	solve_options_from_jsonb(PG_NARGS() > zarg + 2 && !PG_ARGISNULL(zarg + 2) ?
							 PG_GETARG_JSONB_P(zarg + 2) : NULL, &opt, false);
	out = palloc(sizeof(float) * z->dim);
	if (entry->external ?
		flow_external_residual(&entry->env, entry->external, z->x, rc.values, &opt, out) :
		flow_residual(&entry->env, entry->flow, z->x, &rc.cond, 1, &opt, out))
		WdcFitsRaise(&entry->error);
	PG_RETURN_LATENT_P(latent_from_floats(out, z->dim, entry->fingerprint));
}

/* wdc.transfer(flow, z, cond_from jsonb, cond_to jsonb, [options]) -> latent */
Datum
flow_transfer_sql(PG_FUNCTION_ARGS)
{
	int			zarg;
	WdcModelEntry *entry = flow_from_args(fcinfo, PG_NARGS() == 6 ? 5 : PG_NARGS(), &zarg);
	Latent	   *z;
	RowCondition from;
	RowCondition to;
	FlowSolveOptions opt;
	float	   *out;

	if (entry == NULL)
		PG_RETURN_NULL();
	z = PG_GETARG_LATENT_P(zarg);
	check_latent(entry, z);
	condition_from_jsonb(entry, PG_ARGISNULL(zarg + 1) ? NULL : PG_GETARG_JSONB_P(zarg + 1), &from);
	condition_from_jsonb(entry, PG_ARGISNULL(zarg + 2) ? NULL : PG_GETARG_JSONB_P(zarg + 2), &to);
	solve_options_from_jsonb(PG_NARGS() > zarg + 3 && !PG_ARGISNULL(zarg + 3) ?
							 PG_GETARG_JSONB_P(zarg + 3) : NULL, &opt, false);
	out = palloc(sizeof(float) * z->dim);
	if (entry->external ?
		flow_external_transfer(&entry->env, entry->external, z->x, from.values,
							   to.values, &opt, out) :
		flow_transfer(&entry->env, entry->flow, z->x, &from.cond, &to.cond, 1, &opt, out))
		WdcFitsRaise(&entry->error);
	PG_RETURN_LATENT_P(latent_from_floats(out, z->dim,
										  z->fingerprint ? z->fingerprint : entry->latent_fingerprint));
}

/* wdc.sample(flow, cond jsonb, seed bigint, [options]) -> latent */
Datum
flow_sample_sql(PG_FUNCTION_ARGS)
{
	WdcModelEntry *entry;
	RowCondition rc;
	FlowSolveOptions opt;
	float	   *out;
	int64		seed;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	entry = lookup_flow(PG_GETARG_TEXT_PP(0), -1);
	seed = PG_GETARG_INT64(2);
	condition_from_jsonb(entry, PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1), &rc);
	solve_options_from_jsonb(PG_NARGS() > 3 && !PG_ARGISNULL(3) ? PG_GETARG_JSONB_P(3) : NULL,
							 &opt, false);
	out = palloc(sizeof(float) * flow_dim(entry));
	if (entry->external ?
		flow_external_sample(&entry->env, entry->external, rc.values, (uint64_t) seed, &opt, out) :
		flow_sample(&entry->env, entry->flow, &rc.cond, 1, (uint64_t) seed, &opt, out))
		WdcFitsRaise(&entry->error);
	PG_RETURN_LATENT_P(latent_from_floats(out, flow_dim(entry), entry->latent_fingerprint));
}

/* --- training ---------------------------------------------------------------- */

/* Progress lines, one per epoch. */
static void
report_progress(void *state, const FlowProgress *p)
{
	ereport(NOTICE,
			(errmsg("flow epoch %d/%d: train loss %.5f, validation loss %.5f, %.0f rows/s, ETA %.0f s",
					p->epoch, p->max_epochs, p->train_loss, p->val_loss,
					p->rows_per_second, p->eta_seconds)));
}

/* Target of set_train_option. */
typedef struct TrainOptionTarget
{
	FlowTrainOptions *opt;
	char	   *class_column;
} TrainOptionTarget;

/* Set one training option; the names and ranges are those of flow.h. */
static WdcStatus
set_train_option(const WdcEnv *env, void *target, const char *name, const char *text)
{
	TrainOptionTarget *t = target;
	FlowTrainOptions *opt = t->opt;

#define INT_OPT(n, field, lo, hi) else if (strcmp(name, n) == 0) opt->field = option_int(name, text, lo, hi)
#define DBL_OPT(n, field, lo, hi) else if (strcmp(name, n) == 0) opt->field = option_double(name, text, lo, hi)
	if (strcmp(name, "class_column") == 0)
		t->class_column = pstrdup(text);
	else if (strcmp(name, "seed") == 0)
		opt->seed = (uint64_t) option_double(name, text, 0, 9007199254740992.0);
	INT_OPT("hidden", hidden, 8, FLOW_MAX_HIDDEN);
	INT_OPT("layers", layers, 1, FLOW_MAX_LAYERS);
	INT_OPT("embed_dim", embed_dim, 0, 256);
	INT_OPT("batch_size", batch_size, 1, 65536);
	INT_OPT("max_epochs", max_epochs, 1, 100000);
	INT_OPT("patience", patience, 1, 100000);
	INT_OPT("calibration_rows", calibration_rows, 0, 1000000);
	DBL_OPT("learning_rate", learning_rate, 1e-12, 1);
	DBL_OPT("weight_decay", weight_decay, 0, 0.999999);
	DBL_OPT("beta1", beta1, 0, 0.999999);
	DBL_OPT("beta2", beta2, 0, 0.999999);
	DBL_OPT("adam_eps", adam_eps, 1e-30, 1);
	DBL_OPT("min_delta", min_delta, 0, 1e30);
	DBL_OPT("val_fraction", val_fraction, 0, 0.9);
	DBL_OPT("p_null", p_null, 0, 1);
	DBL_OPT("grad_clip", grad_clip, 1e-12, 1e30);
	DBL_OPT("train_noise", train_noise, 0, 1);
	DBL_OPT("init_std", init_std, 1e-12, 1);
	DBL_OPT("film_gamma_bias", film_gamma_bias, -100, 100);
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown training option \"%s\"", name),
				 errhint("See the COMMENT of wdc.train_flow for the options and their ranges.")));
#undef INT_OPT
#undef DBL_OPT
	return WDC_OK;
}

/* Read training options over the defaults and check them together. */
static void
train_options_from_jsonb(Jsonb *options, FlowTrainOptions *opt, char **class_column)
{
	WdcEnv		env;
	WdcError	error;
	TrainOptionTarget target = {opt, NULL};

	flow_train_options_default(opt);
	require_object(options, "training options");
	if (options != NULL)
		WdcApplyJsonbOptions(options, set_train_option, &target, "training");
	*class_column = target.class_column;
	WdcFitsEnvInit(&env, &error);
	if (flow_train_options_check(&env, opt) != WDC_OK)
		WdcFitsRaise(&error);
}

/* Whether t is wdc's latent type (a type named latent owned by the extension). */
static bool
is_latent_type(Oid t)
{
	char	   *name = format_type_extended(t, -1, FORMAT_TYPE_FORCE_QUALIFY);
	const char *dot = strrchr(name, '.');

	if (strcmp(dot ? dot + 1 : name, "latent") != 0)
		return false;
	return getExtensionOfObject(TypeRelationId, t) == get_extension_oid("wdc", false);
}

static bool
is_numeric_type(Oid t)
{
	return t == FLOAT4OID || t == FLOAT8OID || t == NUMERICOID;
}

static bool
is_class_type(Oid t)
{
	return t == TEXTOID || t == VARCHAROID || t == BPCHAROID || t == INT2OID ||
		t == INT4OID || t == INT8OID || t == BOOLOID || t == NAMEOID;
}

/*
 * wdc.flow_fit(query text, options jsonb, OUT onnx bytea, OUT provenance
 * jsonb)
 *
 * Run the query read-only.  Column 1 is the latent; further float/numeric
 * columns are numeric conditions, and at most one text, integer or boolean
 * column (or the one named by option class_column) is the class.  Rows with
 * a NULL latent are skipped; a NULL condition trains the null condition.
 * Returns the trained flow as ONNX and a provenance record.
 */
Datum
flow_fit(PG_FUNCTION_ARGS)
{
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *options = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	FlowTrainOptions opt;
	char	   *class_column;
	TupleDesc	desc;
	int			ncols;
	int			class_col = -1;
	int		   *numeric_cols;
	int			n_numeric = 0;
	char	  **numeric_names;
	char	   *class_name = NULL;
	int64		n = 0;
	int64		skipped = 0;
	int			d = 0;
	uint32		fingerprint = 0;
	float	   *data;
	float	   *numeric;
	int32_t    *class_index;
	char	  **labels = NULL;
	int			n_labels = 0;
	int			cap_labels = 0;
	HTAB	   *label_hash = NULL;
	FlowConditions cond;
	FlowModel  *model = NULL;
	WdcEnv		env;
	WdcError	error;
	uint8_t    *bytes = NULL;
	size_t		len = 0;
	size_t		need;
	pg_cryptohash_ctx *hash;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	char		digest_hex[2 * PG_SHA256_DIGEST_LENGTH + 1];
	MemoryContext caller = CurrentMemoryContext;
	StringInfoData prov;
	TupleDesc	result_desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	bytea	   *onnx;
	uint64		nrows;
	SPIPlanPtr	plan;

	train_options_from_jsonb(options, &opt, &class_column);
	if (get_call_result_type(fcinfo, NULL, &result_desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "wdc.flow_fit must return a record");

	/* 1. run the query read-only and check its columns */
	SPI_connect();

	/* one statement only: SPI would silently return the last one's rows */
	plan = SPI_prepare(query, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not prepare training query: %s", SPI_result_code_string(SPI_result));
	if (list_length(SPI_plan_get_plan_sources(plan)) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("training query must be a single SELECT statement, not %d statements",
						list_length(SPI_plan_get_plan_sources(plan))),
				 errdetail("Query: %s", query)));
	if (SPI_execute_plan(plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("training query must be a SELECT"),
				 errdetail("Query: %s", query)));
	desc = SPI_tuptable->tupdesc;
	ncols = desc->natts;
	nrows = SPI_processed;
	if (ncols < 1 || !is_latent_type(SPI_gettypeid(desc, 1)))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the first column of the training query must be a latent"),
				 errdetail("It is of type %s.", ncols ? format_type_be(SPI_gettypeid(desc, 1)) : "(none)")));

	numeric_cols = MemoryContextAlloc(caller, sizeof(int) * ncols);
	numeric_names = MemoryContextAlloc(caller, sizeof(char *) * ncols);
	for (int c = 2; c <= ncols; c++)
	{
		Oid			t = SPI_gettypeid(desc, c);
		char	   *cname = SPI_fname(desc, c);
		bool		named_class = class_column && strcmp(class_column, cname) == 0;

		/* conditions are passed by column name, so names must be unique */
		for (int other = 2; other < c; other++)
			if (strcmp(NameStr(TupleDescAttr(desc, other - 1)->attname), cname) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("training query has two columns named \"%s\"", cname),
						 errhint("Conditions are given by column name; name each column once, with AS.")));

		if (named_class || (class_column == NULL && is_class_type(t)))
		{
			if (class_col >= 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("training query has two class columns, \"%s\" and \"%s\"",
								class_name, cname),
						 errhint("A flow takes at most one class column; cast other integer columns to float8 to use them as numeric conditions, or name the class with option class_column.")));
			class_col = c;
			class_name = MemoryContextStrdup(caller, cname);
		}
		else if (is_numeric_type(t) || is_class_type(t))
		{
			numeric_cols[n_numeric] = c;
			numeric_names[n_numeric++] = MemoryContextStrdup(caller, cname);
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("condition column \"%s\" has type %s", cname, format_type_be(t)),
					 errhint("Conditions are real, double precision or numeric columns, and at most one text, integer or boolean class column.")));
	}
	if (class_column && class_col < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("training query has no column \"%s\" named by option class_column", class_column)));

	/* 2. copy rows into the core's arrays (in the caller's context) */
	if (nrows == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("training query returned no rows")));
	for (uint64 r = 0; r < nrows && d == 0; r++)
	{
		bool		isnull;
		Datum		v = SPI_getbinval(SPI_tuptable->vals[r], desc, 1, &isnull);

		if (!isnull)
			d = DatumGetLatentP(v)->dim;
	}
	if (d == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("every latent returned by the training query is NULL")));
	need = flow_train_memory((int64_t) nrows, d, n_numeric, 0, &opt);
	if (need / 1024 > (size_t) maintenance_work_mem)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("training %llu rows of %d dimensions needs about %zu MB, more than maintenance_work_mem (%d MB)",
						(unsigned long long) nrows, d, need >> 20, maintenance_work_mem / 1024),
				 errhint("Raise maintenance_work_mem or train on a sample of the rows.")));

	data = MemoryContextAllocHuge(caller, sizeof(float) * nrows * d);
	numeric = MemoryContextAllocHuge(caller, sizeof(float) * nrows * Max(n_numeric, 1));
	class_index = MemoryContextAllocHuge(caller, sizeof(int32_t) * nrows);
	if (class_col > 0)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = NAMEDATALEN * 4;
		ctl.entrysize = ctl.keysize + sizeof(int);
		ctl.hcxt = caller;
		label_hash = hash_create("wdc flow class labels", 64, &ctl,
								 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}

	for (uint64 r = 0; r < nrows; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		bool		isnull;
		Datum		v = SPI_getbinval(tup, desc, 1, &isnull);
		Latent	   *z;

		CHECK_FOR_INTERRUPTS();
		if (isnull)
		{
			skipped++;
			continue;
		}
		z = DatumGetLatentP(v);
		LatentCheckVersion(z);
		if (z->dim != d)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("training latents have different dimensions %d and %d", d, z->dim)));
		if (z->fingerprint != 0)
		{
			if (fingerprint != 0 && fingerprint != z->fingerprint)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_EXCEPTION),
						 errmsg("training latents come from different models (fingerprints %08x and %08x)",
								fingerprint, z->fingerprint),
						 errhint("Train a flow on the latents of one encoder version.")));
			fingerprint = z->fingerprint;
		}
		memcpy(data + n * d, z->x, sizeof(float) * d);

		for (int j = 0; j < n_numeric; j++)
		{
			Datum		cv = SPI_getbinval(tup, desc, numeric_cols[j], &isnull);
			Oid			t = SPI_gettypeid(desc, numeric_cols[j]);
			double		x;

			if (isnull)
				x = NAN;		/* the core trains such rows with the null condition */
			else if (t == FLOAT4OID)
				x = DatumGetFloat4(cv);
			else if (t == FLOAT8OID)
				x = DatumGetFloat8(cv);
			else if (t == NUMERICOID)
				x = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow, cv));
			else if (t == INT2OID)
				x = DatumGetInt16(cv);
			else if (t == INT4OID)
				x = DatumGetInt32(cv);
			else if (t == INT8OID)
				x = (double) DatumGetInt64(cv);
			else if (t == BOOLOID)
				x = DatumGetBool(cv) ? 1 : 0;
			else
				x = NAN;
			if (!isnull && !isfinite(x))
				ereport(ERROR,
						(errcode(ERRCODE_DATA_EXCEPTION),
						 errmsg("condition column \"%s\" has the non-finite value %g in row %lld",
								numeric_names[j], x, (long long) (r + 1)),
						 errhint("Use NULL for unknown values.")));
			numeric[n * Max(n_numeric, 1) + j] = (float) x;
		}

		class_index[n] = -1;
		if (class_col > 0)
		{
			char	   *label = SPI_getvalue(tup, desc, class_col);

			if (label != NULL)
			{
				char		key[NAMEDATALEN * 4];
				bool		found;
				int		   *slot;

				if (strlen(label) >= sizeof(key))
					ereport(ERROR,
							(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
							 errmsg("class label \"%.40s...\" is longer than %zu bytes",
									label, sizeof(key) - 1)));
				memset(key, 0, sizeof(key));
				strlcpy(key, label, sizeof(key));
				slot = (int *) ((char *) hash_search(label_hash, key, HASH_ENTER, &found) + sizeof(key));
				if (!found)
				{
					if (n_labels == FLOW_MAX_CLASSES)
						ereport(ERROR,
								(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
								 errmsg("class column \"%s\" has more than %d distinct labels",
										class_name, FLOW_MAX_CLASSES)));
					if (n_labels == cap_labels)
					{
						cap_labels = cap_labels ? cap_labels * 2 : 16;
						labels = labels ? repalloc(labels, sizeof(char *) * cap_labels)
							: MemoryContextAlloc(caller, sizeof(char *) * cap_labels);
					}
					labels[n_labels] = MemoryContextStrdup(caller, label);
					*slot = n_labels++;
				}
				class_index[n] = *slot;
			}
		}
		n++;
	}
	SPI_finish();
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("every latent returned by the training query is NULL")));
	if (skipped > 0)
		ereport(NOTICE,
				(errmsg("skipped %lld rows with a NULL latent", (long long) skipped)));

	/* 3. a hash of the training data for the provenance record */
	hash = pg_cryptohash_create(PG_SHA256);
	if (pg_cryptohash_init(hash) < 0 ||
		pg_cryptohash_update(hash, (uint8 *) data, sizeof(float) * n * d) < 0 ||
		pg_cryptohash_update(hash, (uint8 *) numeric, sizeof(float) * n * Max(n_numeric, 1)) < 0 ||
		pg_cryptohash_update(hash, (uint8 *) class_index, sizeof(int32_t) * n) < 0 ||
		pg_cryptohash_final(hash, digest, sizeof(digest)) < 0)
		elog(ERROR, "could not compute SHA-256 of the training data");
	pg_cryptohash_free(hash);
	hex_encode((char *) digest, sizeof(digest), digest_hex);
	digest_hex[sizeof(digest_hex) - 1] = '\0';

	/* 4. train */
	cond.numeric = n_numeric > 0 ? numeric : NULL;
	cond.class_index = class_col > 0 ? class_index : NULL;
	cond.null_row = NULL;
	WdcFitsEnvInit(&env, &error);
	if (flow_train(&env, data, n, d, (n_numeric > 0 || class_col > 0) ? &cond : NULL,
				   n_numeric, (const char *const *) numeric_names, class_name,
				   n_labels, (const char *const *) labels, &opt,
				   report_progress, NULL, &model) != WDC_OK)
		WdcFitsRaise(&error);

	/* 5. serialise */
	if (flow_to_onnx(&env, model, &bytes, &len) != WDC_OK)
	{
		flow_free(&env, model);
		WdcFitsRaise(&error);
	}
	onnx = palloc(VARHDRSZ + len);
	SET_VARSIZE(onnx, VARHDRSZ + len);
	memcpy(VARDATA(onnx), bytes, len);

	initStringInfo(&prov);
	appendStringInfoString(&prov, "{\"query\": ");
	escape_json(&prov, query);
	appendStringInfo(&prov, ", \"rows\": %lld, \"skipped_null_latents\": %lld, \"dimensions\": %d",
					 (long long) n, (long long) skipped, d);
	appendStringInfo(&prov, ", \"data_sha256\": \"%s\", \"seed\": %llu", digest_hex,
					 (unsigned long long) opt.seed);
	appendStringInfo(&prov, ", \"latent_fingerprint\": %u", fingerprint);
	appendStringInfo(&prov, ", \"epochs\": %d, \"best_epoch\": %d, \"train_loss\": %.9g, \"val_loss\": %.9g, \"seconds\": %.3f",
					 model->info.epochs, model->info.best_epoch, model->info.train_loss,
					 isnan(model->info.val_loss) ? -1 : model->info.val_loss,
					 model->info.seconds);
	appendStringInfoString(&prov, ", \"options\": ");
	appendStringInfoString(&prov, options ? JsonbToCString(NULL, &options->root, VARSIZE(options)) : "{}");
	appendStringInfoChar(&prov, '}');
	flow_free(&env, model);
	wdc_free(&env, bytes);

	values[0] = PointerGetDatum(onnx);
	values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(prov.data));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(result_desc), values, nulls)));
}
