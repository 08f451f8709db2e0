/*
 * latent_ops.c
 *	  Distances, elementwise arithmetic, comparison, hashing and aggregates
 *	  for the latent type.
 *
 * Distances accumulate in double (see distance.h) and return float8, so no
 * finite input can overflow them.  Elementwise arithmetic returns float4 and
 * raises an error when a result element overflows.  Every binary operation
 * checks that both inputs have the same dimension and do not carry two
 * different model fingerprints.
 */
#include "postgres.h"

#include <float.h>
#include <math.h>

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/float.h"

#include "latent/distance.h"
#include "latent/latent.h"

PG_FUNCTION_INFO_V1(l2_distance);
PG_FUNCTION_INFO_V1(l2_squared_distance);
PG_FUNCTION_INFO_V1(inner_product);
PG_FUNCTION_INFO_V1(negative_inner_product);
PG_FUNCTION_INFO_V1(cosine_distance);
PG_FUNCTION_INFO_V1(l1_distance);
PG_FUNCTION_INFO_V1(latent_dims);
PG_FUNCTION_INFO_V1(latent_norm);
PG_FUNCTION_INFO_V1(l2_normalize);
PG_FUNCTION_INFO_V1(latent_untag);
PG_FUNCTION_INFO_V1(latent_fingerprint);
PG_FUNCTION_INFO_V1(latent_add);
PG_FUNCTION_INFO_V1(latent_sub);
PG_FUNCTION_INFO_V1(latent_mul);
PG_FUNCTION_INFO_V1(latent_lt);
PG_FUNCTION_INFO_V1(latent_le);
PG_FUNCTION_INFO_V1(latent_eq);
PG_FUNCTION_INFO_V1(latent_ne);
PG_FUNCTION_INFO_V1(latent_ge);
PG_FUNCTION_INFO_V1(latent_gt);
PG_FUNCTION_INFO_V1(latent_cmp);
PG_FUNCTION_INFO_V1(latent_hash);
PG_FUNCTION_INFO_V1(latent_accum);
PG_FUNCTION_INFO_V1(latent_combine);
PG_FUNCTION_INFO_V1(latent_avg);
PG_FUNCTION_INFO_V1(latent_sum);

/* ---- distances ---------------------------------------------------------- */

Datum
l2_distance(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	Latent	   *b = PG_GETARG_LATENT_P(1);

	LatentCheckPair(a, b);
	PG_RETURN_FLOAT8(sqrt(latent_l2_squared(a->x, b->x, a->dim)));
}

Datum
l2_squared_distance(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	Latent	   *b = PG_GETARG_LATENT_P(1);

	LatentCheckPair(a, b);
	PG_RETURN_FLOAT8(latent_l2_squared(a->x, b->x, a->dim));
}

Datum
inner_product(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	Latent	   *b = PG_GETARG_LATENT_P(1);

	LatentCheckPair(a, b);
	PG_RETURN_FLOAT8(latent_dot(a->x, b->x, a->dim));
}

Datum
negative_inner_product(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	Latent	   *b = PG_GETARG_LATENT_P(1);

	LatentCheckPair(a, b);
	PG_RETURN_FLOAT8(-latent_dot(a->x, b->x, a->dim));
}

/*
 * Cosine distance 1 - cos(a, b), clamped to [0, 2] against rounding.  It is
 * undefined when either vector is zero; the result is then NaN, which sorts
 * after every number in ORDER BY.
 */
Datum
cosine_distance(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	Latent	   *b = PG_GETARG_LATENT_P(1);
	double		dot;
	double		na;
	double		nb;
	double		sim;

	LatentCheckPair(a, b);
	latent_dot_norms(a->x, b->x, a->dim, &dot, &na, &nb);
	if (na == 0.0 || nb == 0.0)
		PG_RETURN_FLOAT8(get_float8_nan());
	sim = dot / sqrt(na * nb);
	if (sim > 1.0)
		sim = 1.0;
	else if (sim < -1.0)
		sim = -1.0;
	PG_RETURN_FLOAT8(1.0 - sim);
}

Datum
l1_distance(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	Latent	   *b = PG_GETARG_LATENT_P(1);

	LatentCheckPair(a, b);
	PG_RETURN_FLOAT8(latent_l1(a->x, b->x, a->dim));
}

/* ---- single-value functions --------------------------------------------- */

Datum
latent_dims(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);

	LatentCheckVersion(a);
	PG_RETURN_INT32(a->dim);
}

Datum
latent_norm(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);

	LatentCheckVersion(a);
	PG_RETURN_FLOAT8(sqrt(latent_norm_squared(a->x, a->dim)));
}

/*
 * Scale to unit Euclidean length, keeping the fingerprint.  The zero vector
 * has no direction and is returned unchanged.
 */
Datum
l2_normalize(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	Latent	   *result;
	double		norm;

	LatentCheckVersion(a);
	result = InitLatent(a->dim);
	result->fingerprint = a->fingerprint;
	norm = sqrt(latent_norm_squared(a->x, a->dim));
	for (int i = 0; i < a->dim; i++)
		result->x[i] = norm > 0.0 ? (float) (a->x[i] / norm) : a->x[i];
	PG_RETURN_LATENT_P(result);
}

Datum
latent_untag(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	Latent	   *result;

	LatentCheckVersion(a);
	result = (Latent *) palloc(VARSIZE(a));
	memcpy(result, a, VARSIZE(a));
	result->fingerprint = 0;
	PG_RETURN_LATENT_P(result);
}

/* The fingerprint as 8 hexadecimal digits, or NULL for an untagged value. */
Datum
latent_fingerprint(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);

	LatentCheckVersion(a);
	if (a->fingerprint == 0)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("%08x", a->fingerprint)));
}

/* ---- elementwise arithmetic --------------------------------------------- */

typedef enum
{
	OP_ADD,
	OP_SUB,
	OP_MUL
} ElementOp;

static Latent *
elementwise(const Latent *a, const Latent *b, ElementOp op)
{
	Latent	   *result;
	uint32		fingerprint = LatentCheckPair(a, b);
	const char *name;

	if (op == OP_ADD)
		name = "+";
	else if (op == OP_SUB)
		name = "-";
	else
		name = "*";

	result = InitLatent(a->dim);
	result->fingerprint = fingerprint;
	for (int i = 0; i < a->dim; i++)
	{
		float		v;

		switch (op)
		{
			case OP_ADD:
				v = a->x[i] + b->x[i];
				break;
			case OP_SUB:
				v = a->x[i] - b->x[i];
				break;
			default:
				v = a->x[i] * b->x[i];
				break;
		}
		if (isinf(v))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("latent %s overflows float4 at element %d", name, i + 1),
					 errhint("Scale the inputs down before combining them.")));
		result->x[i] = v;
	}
	return result;
}

Datum
latent_add(PG_FUNCTION_ARGS)
{
	PG_RETURN_LATENT_P(elementwise(PG_GETARG_LATENT_P(0), PG_GETARG_LATENT_P(1), OP_ADD));
}

Datum
latent_sub(PG_FUNCTION_ARGS)
{
	PG_RETURN_LATENT_P(elementwise(PG_GETARG_LATENT_P(0), PG_GETARG_LATENT_P(1), OP_SUB));
}

Datum
latent_mul(PG_FUNCTION_ARGS)
{
	PG_RETURN_LATENT_P(elementwise(PG_GETARG_LATENT_P(0), PG_GETARG_LATENT_P(1), OP_MUL));
}

/* ---- btree and hash support --------------------------------------------- */

/*
 * Total order for btree: elements compared in order, then the shorter value
 * first, then by fingerprint.  -0 and 0 compare equal, as for float4.  This
 * order never raises an error, so values of different models can share a
 * UNIQUE index.
 */
static int
latent_compare(const Latent *a, const Latent *b)
{
	int			n = Min(a->dim, b->dim);

	LatentCheckVersion(a);
	LatentCheckVersion(b);
	for (int i = 0; i < n; i++)
	{
		if (a->x[i] < b->x[i])
			return -1;
		if (a->x[i] > b->x[i])
			return 1;
	}
	if (a->dim != b->dim)
		return a->dim < b->dim ? -1 : 1;
	if (a->fingerprint != b->fingerprint)
		return a->fingerprint < b->fingerprint ? -1 : 1;
	return 0;
}

#define LATENT_CMP_FUNC(fname, expr) \
Datum \
fname(PG_FUNCTION_ARGS) \
{ \
	Latent	   *a = PG_GETARG_LATENT_P(0); \
	Latent	   *b = PG_GETARG_LATENT_P(1); \
	int			c = latent_compare(a, b); \
	PG_FREE_IF_COPY(a, 0); \
	PG_FREE_IF_COPY(b, 1); \
	PG_RETURN_BOOL(expr); \
}

LATENT_CMP_FUNC(latent_lt, c < 0)
LATENT_CMP_FUNC(latent_le, c <= 0)
LATENT_CMP_FUNC(latent_eq, c == 0)
LATENT_CMP_FUNC(latent_ne, c != 0)
LATENT_CMP_FUNC(latent_ge, c >= 0)
LATENT_CMP_FUNC(latent_gt, c > 0)

Datum
latent_cmp(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	Latent	   *b = PG_GETARG_LATENT_P(1);
	int			c = latent_compare(a, b);

	PG_FREE_IF_COPY(a, 0);
	PG_FREE_IF_COPY(b, 1);
	PG_RETURN_INT32(c);
}

/*
 * Hash consistent with latent_eq: -0 is hashed as 0, and the dimension and
 * fingerprint are mixed in.
 */
Datum
latent_hash(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	uint32		h;

	LatentCheckVersion(a);
	h = hash_uint32(((uint32) a->dim << 16) ^ a->fingerprint);
	for (int i = 0; i < a->dim; i++)
	{
		float		v = a->x[i] == 0.0f ? 0.0f : a->x[i];
		uint32		bits;

		memcpy(&bits, &v, sizeof(bits));
		h = hash_combine(h, hash_uint32(bits));
	}
	PG_FREE_IF_COPY(a, 0);
	PG_RETURN_UINT32(h);
}

/* ---- aggregates --------------------------------------------------------- */

/*
 * Aggregate state: float8[] {count, fingerprint, sum_1 .. sum_d}.  A plain
 * array type (not internal) lets the planner run sum and avg in parallel
 * workers and combine the partial states without serialisation functions.
 * Sums are kept in double, so they cannot overflow before the final
 * function converts them to float4 and checks the range.
 */
#define STATE_HEADER 2

static float8 *
state_values(ArrayType *state, int *n)
{
	if (ARR_NDIM(state) != 1 || ARR_HASNULL(state) ||
		ARR_ELEMTYPE(state) != FLOAT8OID || ARR_DIMS(state)[0] < STATE_HEADER)
		elog(ERROR, "latent aggregate state is not a valid float8 array");
	*n = ARR_DIMS(state)[0];
	return (float8 *) ARR_DATA_PTR(state);
}

static ArrayType *
make_state(int dim)
{
	Datum	   *d = palloc(sizeof(Datum) * (dim + STATE_HEADER));

	for (int i = 0; i < dim + STATE_HEADER; i++)
		d[i] = Float8GetDatum(0.0);
	return construct_array(d, dim + STATE_HEADER, FLOAT8OID, sizeof(float8),
						   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

static void
check_state_fingerprint(float8 *st, uint32 fingerprint)
{
	uint32		have = (uint32) st[1];

	if (fingerprint != 0 && have != 0 && have != fingerprint)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("latents come from different models (fingerprints %08x and %08x)",
						have, fingerprint),
				 errdetail("Sums and averages over latents of different models are meaningless."),
				 errhint("Aggregate each model's latents separately, or strip fingerprints with latent_untag().")));
	if (fingerprint != 0)
		st[1] = (float8) fingerprint;
}

Datum
latent_accum(PG_FUNCTION_ARGS)
{
	ArrayType  *state = PG_GETARG_ARRAYTYPE_P(0);
	Latent	   *a = PG_GETARG_LATENT_P(1);
	float8	   *st;
	int			n;

	LatentCheckVersion(a);

	/*
	 * The state is a new array on the first call; afterwards we update it in
	 * place when called as an aggregate, which is safe because the state
	 * lives in the aggregate's own context.
	 */
	st = state_values(state, &n);
	if (st[0] == 0.0 && n == STATE_HEADER)
	{
		state = make_state(a->dim);
		st = state_values(state, &n);
	}
	else if (!AggCheckCallContext(fcinfo, NULL))
	{
		state = DatumGetArrayTypePCopy(PG_GETARG_DATUM(0));
		st = state_values(state, &n);
	}
	if (n - STATE_HEADER != a->dim)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("different latent dimensions %d and %d", n - STATE_HEADER, a->dim)));
	check_state_fingerprint(st, a->fingerprint);

	st[0] += 1.0;
	for (int i = 0; i < a->dim; i++)
		st[STATE_HEADER + i] += a->x[i];
	PG_RETURN_ARRAYTYPE_P(state);
}

Datum
latent_combine(PG_FUNCTION_ARGS)
{
	ArrayType  *s1 = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType  *s2 = PG_GETARG_ARRAYTYPE_P(1);
	float8	   *a;
	float8	   *b;
	float8	   *r;
	int			n1;
	int			n2;
	ArrayType  *result;

	a = state_values(s1, &n1);
	b = state_values(s2, &n2);
	if (a[0] == 0.0)
		PG_RETURN_ARRAYTYPE_P(DatumGetArrayTypePCopy(PG_GETARG_DATUM(1)));
	if (b[0] == 0.0)
		PG_RETURN_ARRAYTYPE_P(DatumGetArrayTypePCopy(PG_GETARG_DATUM(0)));
	if (n1 != n2)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("different latent dimensions %d and %d",
						n1 - STATE_HEADER, n2 - STATE_HEADER)));

	result = make_state(n1 - STATE_HEADER);
	r = state_values(result, &n1);
	r[0] = a[0] + b[0];
	r[1] = a[1];
	check_state_fingerprint(r, (uint32) b[1]);
	for (int i = STATE_HEADER; i < n1; i++)
		r[i] = a[i] + b[i];
	PG_RETURN_ARRAYTYPE_P(result);
}

/* Final step of sum (divisor 1) and avg (divisor count). */
static Datum
state_to_latent(ArrayType *state, bool average)
{
	float8	   *st;
	int			n;
	Latent	   *result;

	st = state_values(state, &n);
	if (st[0] == 0.0)
		return (Datum) 0;

	result = InitLatent(n - STATE_HEADER);
	result->fingerprint = (uint32) st[1];
	for (int i = 0; i < result->dim; i++)
	{
		double		v = st[STATE_HEADER + i];

		if (average)
			v /= st[0];
		if (fabs(v) > FLT_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("latent sum overflows float4 at element %d", i + 1),
					 errhint("Use avg() or scale the latents down.")));
		result->x[i] = (float) v;
	}
	return PointerGetDatum(result);
}

Datum
latent_avg(PG_FUNCTION_ARGS)
{
	Datum		d = state_to_latent(PG_GETARG_ARRAYTYPE_P(0), true);

	if (d == (Datum) 0)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(d);
}

Datum
latent_sum(PG_FUNCTION_ARGS)
{
	Datum		d = state_to_latent(PG_GETARG_ARRAYTYPE_P(0), false);

	if (d == (Datum) 0)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(d);
}
