/*
 * encode.c
 *	  wdc.encode, wdc.decode and wdc.infer: run registered ONNX models on
 *	  images, latents and raw arrays.
 *
 * Each function resolves its model through the per-backend cache
 * (model.c), prepares one sample, and runs the batch-1 plan.  An encoder's
 * input is an image: a real[] of [height][width] (or [channels][height]
 * [width]), or a FITS bytea whose first image HDU is read.  The model's
 * declared preprocessing (NaN fill, resize, clip, stretch, normalise) runs
 * first, so the graph receives pixels prepared as in training.
 * The forms that name a version are IMMUTABLE (versions never change); the
 * others resolve the current version and are STABLE.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "latent/latent.h"
#include "pg/fits_sql.h"
#include "pg/model.h"

PG_FUNCTION_INFO_V1(wdc_encode_image);
PG_FUNCTION_INFO_V1(wdc_encode_fits);
PG_FUNCTION_INFO_V1(wdc_decode);
PG_FUNCTION_INFO_V1(wdc_infer);

/*
 * Arguments are (model text, [version bigint,] x): return the entry and the
 * index of x.  A NULL version means the current one.
 */
static WdcModelEntry *
entry_from_args(FunctionCallInfo fcinfo, int *xarg)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int64		version = -1;

	if (PG_NARGS() == 3)
	{
		if (!PG_ARGISNULL(1))
		{
			version = PG_GETARG_INT64(1);
			if (version < 1)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid model version " INT64_FORMAT, version),
						 errhint("Versions are positive numbers; SELECT * FROM wdc.models lists them.")));
		}
		*xarg = 2;
	}
	else
		*xarg = 1;
	return WdcModelLookup(name, version);
}

/* Preprocess (if declared), check shape and NaNs, run, build the latent. */
static Latent *
encode_image(WdcModelEntry *entry, WdcImage *image, Size channels)
{
	WdcImage	prepared = WdcModelPrepareImage(entry, image, channels, 0);
	float	   *out;
	Size		per_out;
	Latent	   *result;

	out = WdcModelRun(entry, prepared.pixels, 1, &per_out);
	if (per_out < 1 || per_out > LATENT_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("model \"%s\" returns %zu values per image; a latent holds 1 to %d",
						entry->name, per_out, LATENT_MAX_DIM)));
	result = InitLatent((int) per_out);
	result->fingerprint = entry->fingerprint;
	for (Size i = 0; i < per_out; i++)
	{
		if (isnan(out[i]) || isinf(out[i]))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("model \"%s\" version " INT64_FORMAT " returned a non-finite value at latent element %zu",
							entry->name, entry->version, i + 1),
					 errhint("Check the image's pixel range against the model's preprocessing.")));
		result->x[i] = out[i];
	}
	return result;
}

/* wdc.encode(model, [version,] image real[]) -> latent */
Datum
wdc_encode_image(PG_FUNCTION_ARGS)
{
	int			xarg;
	WdcModelEntry *entry = entry_from_args(fcinfo, &xarg);
	ArrayType  *array = PG_GETARG_ARRAYTYPE_P(xarg);
	WdcImage	image;
	Size		channels = 1;

	WdcModelRequireKind(entry, "encoder", "wdc.encode");
	if (ARR_NDIM(array) != 0 && ARR_NDIM(array) != 2 && ARR_NDIM(array) != 3)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("image must be a 2-D array [height][width] or a 3-D array [channels][height][width], not %d-D",
						ARR_NDIM(array)),
				 errhint("Pass an image such as wdc.fits_image returns, or FITS bytes.")));
	if (ARR_NDIM(array) == 3)
	{
		/* [channels][height][width], used as is */
		if (array_contains_nulls(array))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("image must not contain NULL elements"),
					 errhint("Use 'NaN' for missing pixels.")));
		channels = ARR_DIMS(array)[0];
		image.height = ARR_DIMS(array)[1];
		image.width = ARR_DIMS(array)[2];
		image.pixels = (float *) ARR_DATA_PTR(array);
	}
	else
		WdcArrayToImage(array, "image", &image);
	PG_RETURN_LATENT_P(encode_image(entry, &image, channels));
}

/* wdc.encode(model, [version,] fits bytea) -> latent, from the first image HDU */
Datum
wdc_encode_fits(PG_FUNCTION_ARGS)
{
	int			xarg;
	WdcModelEntry *entry = entry_from_args(fcinfo, &xarg);
	bytea	   *fits = PG_GETARG_BYTEA_PP(xarg);
	WdcEnv		env;
	WdcError	error;
	WdcFitsLimits limits;
	WdcFitsFile *file = NULL;
	WdcFitsImageInfo info;
	WdcImage	image;
	WdcStatus	st;

	WdcModelRequireKind(entry, "encoder", "wdc.encode");
	WdcFitsEnvInit(&env, &error);
	WdcFitsLimitsFromGuc(&limits);
	memset(&image, 0, sizeof(image));

	/* cfitsio's handle is closed before any error is raised */
	st = wdc_fits_open_memory(&env, VARDATA_ANY(fits), VARSIZE_ANY_EXHDR(fits),
							  &limits, &file);
	if (st == WDC_OK)
		st = wdc_fits_select_image(&env, file, -1, &info);
	if (st == WDC_OK)
		st = wdc_fits_read_image(&env, file, 0, &image);
	wdc_fits_close(&env, file);
	if (st != WDC_OK)
		WdcFitsRaise(&error);

	PG_RETURN_LATENT_P(encode_image(entry, &image, 1));
}

/* Build a real[] with the given dimensions (row-major data). */
static ArrayType *
make_array(const float *data, int ndims, int *dims)
{
	int			lbs[WDC_NN_MAX_RANK];
	Size		n = 1;
	Datum	   *d;

	for (int i = 0; i < ndims; i++)
	{
		lbs[i] = 1;
		n *= dims[i];
	}
	d = palloc_extended(sizeof(Datum) * n, MCXT_ALLOC_HUGE);
	for (Size i = 0; i < n; i++)
		d[i] = Float4GetDatum(data[i]);
	return construct_md_array(d, NULL, ndims, dims, lbs, FLOAT4OID,
							  sizeof(float4), true, TYPALIGN_INT);
}

/*
 * Shape an output of one sample as an array: drop the batch dimension and
 * dimensions of size 1 in front (so [1,1,64,64] becomes [64][64]).
 */
static ArrayType *
output_array(const WdcModelEntry *entry, const float *out, Size per_out)
{
	const WdcNnTensorInfo *oinfo = wdc_nn_plan_output(entry->plan, entry->output_index);
	int			dims[WDC_NN_MAX_RANK];
	int			ndims = 0;
	int			first = 1;

	while (first < oinfo->rank - 1 && oinfo->dims[first] == 1)
		first++;
	for (int i = first; i < oinfo->rank; i++)
		dims[ndims++] = (int) oinfo->dims[i];
	if (ndims == 0)
		dims[ndims++] = (int) per_out;
	return make_array(out, ndims, dims);
}

/* wdc.decode(model, [version,] z latent) -> real[] image */
Datum
wdc_decode(PG_FUNCTION_ARGS)
{
	int			xarg;
	WdcModelEntry *entry = entry_from_args(fcinfo, &xarg);
	Latent	   *z = PG_GETARG_LATENT_P(xarg);
	float	   *out;
	Size		per_out;

	WdcModelRequireKind(entry, "decoder", "wdc.decode");
	LatentCheckVersion(z);
	if (WdcModelSampleSize(entry) != (Size) z->dim)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("latent has %d dimensions but decoder \"%s\" version " INT64_FORMAT " expects %zu",
						z->dim, entry->name, entry->version, WdcModelSampleSize(entry))));
	out = WdcModelRun(entry, z->x, 1, &per_out);
	PG_RETURN_ARRAYTYPE_P(output_array(entry, out, per_out));
}

/*
 * wdc.infer(model, [version,] input real[]) -> real[]: the raw graph output
 * for one sample, no preprocessing.  The input contains one sample's elements
 * in row-major order (any array shape with that many elements).
 */
Datum
wdc_infer(PG_FUNCTION_ARGS)
{
	int			xarg;
	WdcModelEntry *entry = entry_from_args(fcinfo, &xarg);
	ArrayType  *array = PG_GETARG_ARRAYTYPE_P(xarg);
	Size		n;
	float	   *out;
	Size		per_out;

	if (strcmp(entry->kind, "flow") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("model \"%s\" is a flow; use the flow functions such as wdc.log_density",
						entry->name)));
	if (array_contains_nulls(array))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("input must not contain NULL elements")));
	n = ArrayGetNItems(ARR_NDIM(array), ARR_DIMS(array));
	if (n != WdcModelSampleSize(entry))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("input has %zu elements but model \"%s\" version " INT64_FORMAT " expects %zu (shape %s)",
						n, entry->name, entry->version, WdcModelSampleSize(entry), WdcModelShapeText(entry))));
	out = WdcModelRun(entry, (float *) ARR_DATA_PTR(array), 1, &per_out);
	PG_RETURN_ARRAYTYPE_P(output_array(entry, out, per_out));
}
