/*
 * png_sql.c
 *	  SQL functions wdc.png (an image as PNG bytes) and wdc.preprocess (a
 *	  model's input preprocessing applied to an image).
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/array.h"
#include "utils/jsonb.h"

#include "fits/png_encode.h"
#include "fits/preprocess.h"
#include "pg/fits_sql.h"

static WdcStatus
set_png_option(const WdcEnv *env, void *options, const char *name,
			   const char *value)
{
	return wdc_png_set(env, (WdcPngOptions *) options, name, value);
}

/* wdc.png(image real[], options jsonb) -> bytea */
PG_FUNCTION_INFO_V1(png);
Datum
png(PG_FUNCTION_ARGS)
{
	ArrayType  *array = PG_GETARG_ARRAYTYPE_P(0);
	Jsonb	   *options = PG_GETARG_JSONB_P(1);
	WdcPngOptions opts;
	WdcImage	image;
	WdcEnv		env;
	WdcError	error;
	unsigned char *bytes;
	size_t		len;
	bytea	   *result;

	WdcArrayToImage(array, "image", &image);
	wdc_png_init(&opts);
	WdcApplyJsonbOptions(options, set_png_option, &opts, "PNG");

	WdcFitsEnvInit(&env, &error);
	if (wdc_png_encode(&env, &opts, &image, &bytes, &len) != WDC_OK)
		WdcFitsRaise(&error);

	result = palloc(VARHDRSZ + len);
	SET_VARSIZE(result, VARHDRSZ + len);
	memcpy(VARDATA(result), bytes, len);
	pfree(bytes);
	PG_RETURN_BYTEA_P(result);
}

/* wdc.preprocess(image real[], options jsonb) -> real[] */
PG_FUNCTION_INFO_V1(preprocess);
Datum
preprocess(PG_FUNCTION_ARGS)
{
	ArrayType  *array = PG_GETARG_ARRAYTYPE_P(0);
	Jsonb	   *options = PG_GETARG_JSONB_P(1);
	WdcPreprocess pp;
	WdcImage	image,
				out;
	WdcEnv		env;
	WdcError	error;

	WdcArrayToImage(array, "image", &image);
	WdcPreprocessFromJsonb(options, &pp);

	WdcFitsEnvInit(&env, &error);
	if (wdc_preprocess_run(&env, &pp, &image, &out) != WDC_OK)
		WdcFitsRaise(&error);
	PG_RETURN_ARRAYTYPE_P(WdcImageToArray(&out));
}
