/*
 * encode_batch.c
 *	  wdc.encode_batch: encode many images in one call, the path backfills
 *	  and statement-level ingest use.
 *
 * Per-row wdc.encode runs the model's batch-1 plan once per image.  Here the
 * images of one call are preprocessed one by one, with the model's declared
 * steps exactly as wdc.encode applies them, and packed back to back in a
 * group of 64.  Each full group goes to WdcModelRun, which runs it through a
 * plan made for batch 64, so each layer is one large GEMM instead of 64
 * small ones.  Running group by group, instead of after preprocessing every
 * image of the call, keeps the packed input (64 x 4 KB for 32 x 32 images)
 * in cache and bounds the memory a large call needs.
 *
 * Two input forms, each with and without an explicit version:
 *	- bytea[]: FITS files, first image HDU of each; a NULL element gives a
 *	  NULL latent at the same position;
 *	- real[]: a 3-D array [n][height][width] (or 4-D [n][channels][height]
 *	  [width] for a model without preprocessing), no NULL elements.
 * The result is a 1-D latent[] with one element per image, in order, each
 * latent tagged with the model version's fingerprint.  A group of fewer
 * than 32 images runs through the batch-1 plan and equals what wdc.encode
 * returns image by image.  Larger groups run the batch-64 plan, which sums
 * in another order and may run Winograd convolutions, so its latents agree
 * with wdc.encode's within about 1e-5 (6.5e-6 was the largest difference
 * seen on real cutouts).
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "latent/latent.h"
#include "pg/fits_sql.h"
#include "pg/model.h"

PG_FUNCTION_INFO_V1(wdc_encode_batch_fits);
PG_FUNCTION_INFO_V1(wdc_encode_batch_images);

/* Images per call of WdcModelRun: the batch size of its large plan. */
#define BATCH_GROUP WDC_MODEL_BATCH

/*
 * A call's images in flight: up to BATCH_GROUP preprocessed images waiting
 * in group, and the latents of the n_done images run so far in out.
 */
typedef struct BatchInput
{
	WdcModelEntry *entry;
	Size		per_sample;		/* floats per preprocessed image */
	Size		per_out;		/* floats per latent */
	float	   *group;			/* [BATCH_GROUP][per_sample] */
	int			n_ready;		/* images in group */
	float	   *out;			/* [n][per_out] */
	int			n_done;			/* latents in out */
} BatchInput;

/*
 * Arguments are (model text, [version bigint,] images): return the entry
 * and the index of images.  Mirrors wdc.encode's argument handling.
 */
static WdcModelEntry *
batch_entry_from_args(FunctionCallInfo fcinfo, int *xarg)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int64		version = -1;

	if (PG_NARGS() == 3)
	{
		version = PG_GETARG_INT64(1);
		if (version < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid model version " INT64_FORMAT, version),
					 errhint("Versions are positive numbers; SELECT * FROM wdc.models lists them.")));
		*xarg = 2;
	}
	else
		*xarg = 1;
	return WdcModelLookup(name, version);
}

/*
 * Set up an empty batch for up to n images, allocated in the current
 * context.
 */
static void
batch_init(BatchInput *batch, WdcModelEntry *entry, int n)
{
	const WdcNnTensorInfo *oinfo = wdc_nn_plan_output(entry->plan, entry->output_index);

	batch->entry = entry;
	batch->per_sample = WdcModelSampleSize(entry);
	batch->per_out = wdc_nn_numel(oinfo);
	batch->n_ready = 0;
	batch->n_done = 0;
	if (batch->per_out < 1 || batch->per_out > LATENT_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("model \"%s\" returns %zu values per image; a latent holds 1 to %d",
						entry->name, batch->per_out, LATENT_MAX_DIM)));
	if ((Size) Max(n, 1) > MaxAllocHugeSize / sizeof(float) / batch->per_out)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("batch of %d images is too large for model \"%s\"", n, entry->name),
				 errhint("Encode fewer images per call.")));
	batch->group = palloc_extended(sizeof(float) * batch->per_sample * BATCH_GROUP,
								   MCXT_ALLOC_HUGE);
	batch->out = palloc_extended(sizeof(float) * batch->per_out * Max(n, 1),
								 MCXT_ALLOC_HUGE);
}

/*
 * Run the images waiting in the group and append their latents to out.
 * WdcModelRun's own allocations go to the current context.
 */
static void
batch_flush(BatchInput *batch)
{
	float	   *result;
	Size		per_out;

	if (batch->n_ready == 0)
		return;
	result = WdcModelRun(batch->entry, batch->group, batch->n_ready, &per_out);
	if (per_out != batch->per_out)
		elog(ERROR, "model \"%s\" returned %zu values per image, planned %zu",
			 batch->entry->name, per_out, batch->per_out);
	memcpy(batch->out + batch->per_out * batch->n_done, result,
		   sizeof(float) * batch->per_out * batch->n_ready);
	pfree(result);
	batch->n_done += batch->n_ready;
	batch->n_ready = 0;
}

/*
 * Preprocess image number item (1-based, for messages) as the model
 * declares, check its shape and pixels, and append it to the batch.
 * Temporary images are allocated in the caller's current context, which
 * the caller resets after each image; latents of a full group are copied
 * out of it first.
 */
static void
batch_add(BatchInput *batch, int item, WdcImage *image, Size channels)
{
	WdcImage	prepared = WdcModelPrepareImage(batch->entry, image, channels, item);
	float	   *dst;

	/* into the group, which runs when full */
	dst = batch->group + batch->per_sample * batch->n_ready;
	memcpy(dst, prepared.pixels, sizeof(float) * batch->per_sample);
	batch->n_ready++;
	if (batch->n_ready == BATCH_GROUP)
		batch_flush(batch);
}

/*
 * Run the images still waiting and build the latent[] result of nitems
 * elements.  nulls (may be NULL) marks the positions that get a NULL
 * latent, and the others take the latents in order.
 */
static ArrayType *
batch_finish(FunctionCallInfo fcinfo, BatchInput *batch, int nitems, const bool *nulls)
{
	WdcModelEntry *entry = batch->entry;
	Oid			array_type = get_fn_expr_rettype(fcinfo->flinfo);
	Oid			latent_type = OidIsValid(array_type) ? get_element_type(array_type) : InvalidOid;
	Size		per_out = batch->per_out;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *elems;
	int			dims[1];
	int			lbs[1] = {1};
	int			next = 0;

	if (!OidIsValid(latent_type))
		elog(ERROR, "could not determine the result type of wdc.encode_batch");
	get_typlenbyvalalign(latent_type, &typlen, &typbyval, &typalign);
	if (nitems == 0)
		return construct_empty_array(latent_type);
	batch_flush(batch);

	elems = palloc_extended(sizeof(Datum) * nitems, MCXT_ALLOC_HUGE);
	for (int i = 0; i < nitems; i++)
	{
		const float *src;
		Latent	   *z;

		if (nulls && nulls[i])
		{
			elems[i] = (Datum) 0;
			continue;
		}
		if (next >= batch->n_done)
			elog(ERROR, "wdc.encode_batch has fewer latents than images");
		src = batch->out + per_out * next++;
		z = InitLatent((int) per_out);
		z->fingerprint = entry->fingerprint;
		for (Size j = 0; j < per_out; j++)
		{
			if (isnan(src[j]) || isinf(src[j]))
				ereport(ERROR,
						(errcode(ERRCODE_DATA_EXCEPTION),
						 errmsg("model \"%s\" version " INT64_FORMAT " returned a non-finite value at latent element %zu of image %d",
								entry->name, entry->version, j + 1, i + 1),
						 errhint("Check the image's pixel range against the model's preprocessing.")));
			z->x[j] = src[j];
		}
		elems[i] = PointerGetDatum(z);
	}
	dims[0] = nitems;
	return construct_md_array(elems, (bool *) nulls, 1, dims, lbs, latent_type,
							  typlen, typbyval, typalign);
}

/* wdc.encode_batch(model, [version,] images bytea[]) -> latent[] */
Datum
wdc_encode_batch_fits(PG_FUNCTION_ARGS)
{
	int			xarg;
	WdcModelEntry *entry = batch_entry_from_args(fcinfo, &xarg);
	ArrayType  *images = PG_GETARG_ARRAYTYPE_P(xarg);
	Datum	   *files;
	bool	   *nulls;
	int			nitems;
	BatchInput	batch;
	WdcFitsLimits limits;
	MemoryContext item_context;
	MemoryContext old;

	WdcModelRequireKind(entry, "encoder", "wdc.encode_batch");
	if (ARR_NDIM(images) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("images must be a 1-D array of FITS files, not %d-D", ARR_NDIM(images))));
	deconstruct_array(images, BYTEAOID, -1, false, TYPALIGN_INT, &files, &nulls, &nitems);
	batch_init(&batch, entry, nitems);
	WdcFitsLimitsFromGuc(&limits);

	/* each file is read and preprocessed in a context reset per image */
	item_context = AllocSetContextCreate(CurrentMemoryContext,
										 "wdc.encode_batch image",
										 ALLOCSET_DEFAULT_SIZES);
	for (int i = 0; i < nitems; i++)
	{
		bytea	   *fits;
		WdcEnv		env;
		WdcError	error;
		WdcFitsFile *file = NULL;
		WdcFitsImageInfo info;
		WdcImage	image;
		WdcStatus	st;

		CHECK_FOR_INTERRUPTS();
		if (nulls[i])
			continue;
		old = MemoryContextSwitchTo(item_context);
		fits = DatumGetByteaPP(files[i]);
		WdcFitsEnvInit(&env, &error);
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
		{
			if (error.detail[0])
				strlcat(error.detail, " ", sizeof(error.detail));
			snprintf(error.detail + strlen(error.detail),
					 sizeof(error.detail) - strlen(error.detail),
					 "The file is element %d of the images array.", i + 1);
			WdcFitsRaise(&error);
		}
		batch_add(&batch, i + 1, &image, 1);
		MemoryContextSwitchTo(old);
		MemoryContextReset(item_context);
	}
	MemoryContextDelete(item_context);

	PG_RETURN_ARRAYTYPE_P(batch_finish(fcinfo, &batch, nitems, nulls));
}

/* wdc.encode_batch(model, [version,] images real[]) -> latent[] */
Datum
wdc_encode_batch_images(PG_FUNCTION_ARGS)
{
	int			xarg;
	WdcModelEntry *entry = batch_entry_from_args(fcinfo, &xarg);
	ArrayType  *images = PG_GETARG_ARRAYTYPE_P(xarg);
	int			ndim = ARR_NDIM(images);
	int		   *dims = ARR_DIMS(images);
	int			nitems;
	Size		channels;
	WdcImage	image;
	Size		per_image;
	BatchInput	batch;
	MemoryContext item_context;
	MemoryContext old;

	WdcModelRequireKind(entry, "encoder", "wdc.encode_batch");
	if (ndim == 0)
	{
		batch_init(&batch, entry, 0);
		PG_RETURN_ARRAYTYPE_P(batch_finish(fcinfo, &batch, 0, NULL));
	}
	if (ndim != 3 && ndim != 4)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("images must be a 3-D array [n][height][width] or 4-D [n][channels][height][width], not %d-D",
						ndim),
				 errhint("array_agg over 2-D images builds the 3-D form.")));
	if (array_contains_nulls(images))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("images must not contain NULL elements"),
				 errhint("Use 'NaN' for missing pixels.")));
	nitems = dims[0];
	channels = ndim == 4 ? (Size) dims[1] : 1;
	image.height = (Size) dims[ndim - 2];
	image.width = (Size) dims[ndim - 1];
	per_image = channels * image.height * image.width;
	batch_init(&batch, entry, nitems);

	item_context = AllocSetContextCreate(CurrentMemoryContext,
										 "wdc.encode_batch image",
										 ALLOCSET_DEFAULT_SIZES);
	for (int i = 0; i < nitems; i++)
	{
		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(item_context);
		image.pixels = (float *) ARR_DATA_PTR(images) + per_image * i;
		batch_add(&batch, i + 1, &image, channels);
		MemoryContextSwitchTo(old);
		MemoryContextReset(item_context);
	}
	MemoryContextDelete(item_context);

	PG_RETURN_ARRAYTYPE_P(batch_finish(fcinfo, &batch, nitems, NULL));
}
