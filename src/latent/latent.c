/*
 * latent.c
 *	  The latent type: text and binary I/O, typmod, casts and checks.
 *
 * Text form: "[1,2.5,-3]", optionally followed by "@" and eight lowercase
 * hexadecimal digits of the model fingerprint ("[1,2.5,-3]@1a2b3c4d").
 * Elements are printed with the shortest decimal that reads back to the same
 * float4 (Ryu, as float4out does), so text out and in is bit-identical.
 * Operators, distances and aggregates are in latent_ops.c.
 */
#include "postgres.h"

#include <float.h>
#include <math.h>

#include "catalog/pg_type.h"
#include "common/shortest_dec.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"

#include "latent/latent.h"
#include "latent/latent_parse.h"

PG_FUNCTION_INFO_V1(latent_in);
PG_FUNCTION_INFO_V1(latent_out);
PG_FUNCTION_INFO_V1(latent_typmod_in);
PG_FUNCTION_INFO_V1(latent_typmod_out);
PG_FUNCTION_INFO_V1(latent_recv);
PG_FUNCTION_INFO_V1(latent_send);
PG_FUNCTION_INFO_V1(latent);
PG_FUNCTION_INFO_V1(array_to_latent);
PG_FUNCTION_INFO_V1(latent_to_float4);
PG_FUNCTION_INFO_V1(latent_to_float8);

Latent *
InitLatent(int dim)
{
	Latent	   *result;
	Size		size = LATENT_SIZE(dim);

	LatentCheckDim(dim);
	result = (Latent *) palloc0(size);
	SET_VARSIZE(result, size);
	result->version = LATENT_FORMAT_VERSION;
	result->dim = (uint16) dim;
	return result;
}

void
LatentCheckDim(int dim)
{
	if (dim < 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("latent must have at least 1 dimension")));
	if (dim > LATENT_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("latent cannot have more than %d dimensions, got %d",
						LATENT_MAX_DIM, dim)));
}

void
LatentCheckTypmod(int dim, int32 typmod)
{
	if (typmod != -1 && dim != typmod)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("expected %d dimensions, not %d", typmod, dim),
				 errhint("The column is declared latent(%d).", typmod)));
}

void
LatentVersionError(const Latent *a)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("unsupported latent format version %d", a->version),
			 errhint("The value was written by a newer wdc release; install that release to read it.")));
}

uint32
LatentCheckPair(const Latent *a, const Latent *b)
{
	LatentCheckVersion(a);
	LatentCheckVersion(b);
	if (a->dim != b->dim)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("different latent dimensions %d and %d", a->dim, b->dim)));
	if (a->fingerprint != 0 && b->fingerprint != 0 &&
		a->fingerprint != b->fingerprint)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("latents come from different models (fingerprints %08x and %08x)",
						a->fingerprint, b->fingerprint),
				 errdetail("Distances and arithmetic between latents of different models are meaningless."),
				 errhint("Encode both with the same model version, or strip the fingerprint with latent_untag() if the spaces are known to match.")));
	return a->fingerprint != 0 ? a->fingerprint : b->fingerprint;
}

static void
syntax_error(const char *lit, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input syntax for type latent: \"%s\"", lit),
			 errdetail("%s", why),
			 errhint("Write a latent as [1,2.5,-3], optionally followed by @ and an 8-digit hexadecimal fingerprint.")));
}

/*
 * Text input.  latent_parse (PostgreSQL-free, fuzzed separately) does the
 * work; this function sizes its buffer and turns its status into errors.
 */
Datum
latent_in(PG_FUNCTION_ARGS)
{
	char	   *lit = PG_GETARG_CSTRING(0);
	int32		typmod = PG_GETARG_INT32(2);
	int			cap = 1;
	float	   *values;
	int			dim;
	uint32_t	fingerprint;
	int			pos;
	int			len;
	LatentParseStatus st;
	Latent	   *result;

	/* every element but the first follows a comma */
	for (const char *c = lit; *c; c++)
		if (*c == ',' && cap <= LATENT_MAX_DIM)
			cap++;
	cap = Min(cap, LATENT_MAX_DIM);
	values = palloc(sizeof(float) * cap);

	st = latent_parse(lit, values, cap, &dim, &fingerprint, &pos, &len);
	switch (st)
	{
		case LATENT_PARSE_OK:
			break;
		case LATENT_PARSE_NO_OPEN_BRACKET:
			syntax_error(lit, "A latent must start with \"[\".");
			break;
		case LATENT_PARSE_EMPTY:
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("latent must have at least 1 dimension: \"%s\"", lit)));
			break;
		case LATENT_PARSE_MISSING_ELEMENT:
			syntax_error(lit, "An element is missing.");
			break;
		case LATENT_PARSE_NOT_A_NUMBER:
			syntax_error(lit, "An element is not a number.");
			break;
		case LATENT_PARSE_OUT_OF_RANGE:
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("\"%.*s\" is out of range for type latent", len, lit + pos),
					 errhint("Latent elements are float4: magnitudes from about 1.4e-45 to 3.4e38, or 0.")));
			break;
		case LATENT_PARSE_NAN:
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("NaN not allowed in latent: \"%s\"", lit),
					 errhint("Replace NaN elements with finite values before converting.")));
			break;
		case LATENT_PARSE_INFINITE:
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("infinite value not allowed in latent: \"%s\"", lit),
					 errhint("Latent elements must be finite float4 values.")));
			break;
		case LATENT_PARSE_TOO_MANY:
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("latent cannot have more than %d dimensions", LATENT_MAX_DIM),
					 errhint("Reduce the latent size of the model; wdc stores at most %d elements per value.",
							 LATENT_MAX_DIM)));
			break;
		case LATENT_PARSE_NO_CLOSE_BRACKET:
			syntax_error(lit, "A latent must end with \"]\".");
			break;
		case LATENT_PARSE_NO_COMMA:
			syntax_error(lit, "Elements must be separated by commas.");
			break;
		case LATENT_PARSE_BAD_FINGERPRINT:
			syntax_error(lit, "A fingerprint must be exactly 8 hexadecimal digits after \"@\".");
			break;
		case LATENT_PARSE_TRAILING:
			syntax_error(lit, "Unexpected characters follow the latent.");
			break;
	}

	LatentCheckTypmod(dim, typmod);
	result = InitLatent(dim);
	result->fingerprint = fingerprint;
	memcpy(result->x, values, sizeof(float) * dim);
	pfree(values);
	PG_RETURN_LATENT_P(result);
}

Datum
latent_out(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	StringInfoData buf;

	LatentCheckVersion(a);

	/* each element needs at most FLOAT_SHORTEST_DECIMAL_LEN - 1 chars plus "," */
	initStringInfo(&buf);
	enlargeStringInfo(&buf, a->dim * FLOAT_SHORTEST_DECIMAL_LEN + 16);
	appendStringInfoChar(&buf, '[');
	for (int i = 0; i < a->dim; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		buf.len += float_to_shortest_decimal_bufn(a->x[i], buf.data + buf.len);
	}
	appendStringInfoChar(&buf, ']');
	if (a->fingerprint != 0)
		appendStringInfo(&buf, "@%08x", a->fingerprint);
	buf.data[buf.len] = '\0';
	PG_FREE_IF_COPY(a, 0);
	PG_RETURN_CSTRING(buf.data);
}

Datum
latent_typmod_in(PG_FUNCTION_ARGS)
{
	ArrayType  *ta = PG_GETARG_ARRAYTYPE_P(0);
	int32	   *tl;
	int			n;

	tl = ArrayGetIntegerTypmods(ta, &n);
	if (n != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid type modifier for latent"),
				 errhint("Give the number of dimensions only, as in latent(32).")));
	if (tl[0] < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dimensions for type latent must be at least 1, got %d", tl[0])));
	if (tl[0] > LATENT_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dimensions for type latent cannot exceed %d, got %d",
						LATENT_MAX_DIM, tl[0])));
	PG_RETURN_INT32(tl[0]);
}

Datum
latent_typmod_out(PG_FUNCTION_ARGS)
{
	int32		typmod = PG_GETARG_INT32(0);

	if (typmod < 0)
		PG_RETURN_CSTRING(pstrdup(""));
	PG_RETURN_CSTRING(psprintf("(%d)", typmod));
}

/*
 * Binary form: uint16 dim, uint16 flags (0), uint32 fingerprint, then dim
 * float4 values, all in network byte order.  The receiver checks everything
 * the text parser checks.
 */
Datum
latent_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int32		typmod = PG_GETARG_INT32(2);
	int			dim;
	int			flags;
	uint32		fingerprint;
	Latent	   *result;

	dim = pq_getmsgint(buf, sizeof(uint16));
	flags = pq_getmsgint(buf, sizeof(uint16));
	fingerprint = (uint32) pq_getmsgint(buf, sizeof(uint32));
	if (flags != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid flags %d in external latent value", flags),
				 errhint("This release writes and reads flags 0 only.")));
	LatentCheckDim(dim);
	LatentCheckTypmod(dim, typmod);

	result = InitLatent(dim);
	result->fingerprint = fingerprint;
	for (int i = 0; i < dim; i++)
	{
		result->x[i] = pq_getmsgfloat4(buf);
		if (isnan(result->x[i]) || isinf(result->x[i]))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("non-finite value at element %d of external latent value", i + 1)));
	}
	PG_RETURN_LATENT_P(result);
}

Datum
latent_send(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	StringInfoData buf;

	LatentCheckVersion(a);
	pq_begintypsend(&buf);
	pq_sendint16(&buf, a->dim);
	pq_sendint16(&buf, 0);
	pq_sendint32(&buf, a->fingerprint);
	for (int i = 0; i < a->dim; i++)
		pq_sendfloat4(&buf, a->x[i]);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* Length coercion for latent(n): checks the dimension, never truncates. */
Datum
latent(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);
	int32		typmod = PG_GETARG_INT32(1);

	LatentCheckVersion(a);
	LatentCheckTypmod(a->dim, typmod);
	PG_RETURN_LATENT_P(a);
}

/*
 * Cast real[], double precision[], integer[] or numeric[] to latent.  The
 * array must be one-dimensional, non-empty, without NULLs, and each element
 * must be finite in float4.
 */
Datum
array_to_latent(PG_FUNCTION_ARGS)
{
	ArrayType  *array = PG_GETARG_ARRAYTYPE_P(0);
	int32		typmod = PG_GETARG_INT32(1);
	Oid			elemtype = ARR_ELEMTYPE(array);
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	Latent	   *result;

	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("array must be one-dimensional to become a latent, got %d dimensions",
						ARR_NDIM(array)),
				 errhint("Flatten the array first, for example with unnest and array_agg.")));

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(array, elemtype, typlen, typbyval, typalign,
					  &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("latent must have at least 1 dimension"),
				 errdetail("The array is empty.")));
	LatentCheckDim(n);
	LatentCheckTypmod(n, typmod);

	result = InitLatent(n);
	for (int i = 0; i < n; i++)
	{
		double		v;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("array element %d is NULL", i + 1),
					 errhint("Latents cannot contain NULL; replace it with a number.")));
		switch (elemtype)
		{
			case FLOAT4OID:
				v = DatumGetFloat4(elems[i]);
				break;
			case FLOAT8OID:
				v = DatumGetFloat8(elems[i]);
				break;
			case INT4OID:
				v = DatumGetInt32(elems[i]);
				break;
			case NUMERICOID:
				/* NaN and infinities pass through; huge values become inf */
				v = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
													   elems[i]));
				break;
			default:
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("cannot cast %s to latent", format_type_be(elemtype))));
				v = 0;			/* keep compiler quiet */
		}
		if (isnan(v))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("NaN not allowed in latent (array element %d)", i + 1),
					 errhint("Replace NaN elements with finite values before converting.")));
		if (isinf(v) && elemtype == NUMERICOID)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("array element %d is out of range for type latent", i + 1),
					 errhint("Latent elements must be finite float4 values: magnitudes up to about 3.4e38.")));
		if (isinf(v))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("infinite value not allowed in latent (array element %d)", i + 1),
					 errhint("Latent elements must be finite float4 values.")));
		if (fabs(v) > FLT_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("array element %d (%g) is out of range for type latent", i + 1, v),
					 errhint("Latent elements are float4: magnitudes up to about 3.4e38.")));
		result->x[i] = (float) v;
	}
	PG_RETURN_LATENT_P(result);
}

/* Build a one-dimensional array of the latent's elements. */
static ArrayType *
latent_to_array(const Latent *a, Oid elemtype)
{
	Datum	   *d = palloc(sizeof(Datum) * a->dim);

	for (int i = 0; i < a->dim; i++)
		d[i] = elemtype == FLOAT4OID ? Float4GetDatum(a->x[i])
			: Float8GetDatum((double) a->x[i]);
	if (elemtype == FLOAT4OID)
		return construct_array(d, a->dim, FLOAT4OID, sizeof(float4),
							   true, TYPALIGN_INT);
	return construct_array(d, a->dim, FLOAT8OID, sizeof(float8),
						   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

Datum
latent_to_float4(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);

	LatentCheckVersion(a);
	PG_RETURN_ARRAYTYPE_P(latent_to_array(a, FLOAT4OID));
}

Datum
latent_to_float8(PG_FUNCTION_ARGS)
{
	Latent	   *a = PG_GETARG_LATENT_P(0);

	LatentCheckVersion(a);
	PG_RETURN_ARRAYTYPE_P(latent_to_array(a, FLOAT8OID));
}
