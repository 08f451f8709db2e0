/*
 * fits_sql.c
 *	  SQL functions that read FITS images: wdc.fits_image, wdc.fits_header,
 *	  wdc.fits_cutout, wdc.fits_cutout_sky and wdc.fits_sky_to_pixel, plus
 *	  the glue helpers declared in fits_sql.h.
 *
 * Each function opens its input (a bytea, or a server file for roles with
 * the privileges of pg_read_server_files), selects an image HDU and calls
 * the core in src/fits.  The cfitsio handle is closed in PG_FINALLY, and a
 * core failure is raised only after that, with the core's message, detail
 * (cfitsio's or wcslib's own words) and hint.
 */
#include "postgres.h"

#include <limits.h>
#include <sys/stat.h>

#include "catalog/pg_authid_d.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "fits/fits.h"
#include "pg/fits_sql.h"

int			wdc_fits_max_mb = 256;

void
wdc_fits_init_gucs(void)
{
	DefineCustomIntVariable("wdc.fits_max_mb",
							"Sets the largest FITS input the FITS functions decompress or read.",
							"Bounds the bytes of a server file or of gzip data after "
							"decompression, and the pixels of an image or cutout at 4 bytes "
							"each; valid range 1 MB to 1024 MB.",
							&wdc_fits_max_mb,
							256,	/* a 8192 x 8192 float image */
							1, 1024,
							PGC_USERSET,
							GUC_UNIT_MB,
							NULL, NULL, NULL);
}

/* --- helpers shared with other glue files -------------------------------- */

static void *
env_alloc(void *state, size_t size)
{
	return palloc_extended(size, MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
}

static void
env_free(void *state, void *ptr)
{
	pfree(ptr);
}

/* Stop long core loops on query cancel or backend termination. */
static int
env_interrupted(void *state)
{
	return QueryCancelPending || ProcDiePending;
}

void
WdcFitsEnvInit(WdcEnv *env, WdcError *error)
{
	memset(env, 0, sizeof(*env));
	memset(error, 0, sizeof(*error));
	env->alloc = env_alloc;
	env->free = env_free;
	env->interrupted = env_interrupted;
	env->error = error;
}

void
WdcFitsLimitsFromGuc(WdcFitsLimits *limits)
{
	limits->max_bytes = (size_t) wdc_fits_max_mb << 20;
	limits->max_pixels = limits->max_bytes / sizeof(float);
}

void
WdcFitsRaise(const WdcError *error)
{
	int			code;

	switch (error->status)
	{
		case WDC_ERR_INVALID:
			code = ERRCODE_INVALID_PARAMETER_VALUE;
			break;
		case WDC_ERR_DATA:
			code = ERRCODE_DATA_EXCEPTION;
			break;
		case WDC_ERR_CORRUPT:
			/* malformed bytes come from the caller: a data error, not XX */
			code = ERRCODE_INVALID_BINARY_REPRESENTATION;
			break;
		case WDC_ERR_UNSUPPORTED:
			code = ERRCODE_FEATURE_NOT_SUPPORTED;
			break;
		case WDC_ERR_LIMIT:
			code = ERRCODE_PROGRAM_LIMIT_EXCEEDED;
			break;
		case WDC_ERR_NOMEM:
			code = ERRCODE_OUT_OF_MEMORY;
			break;
		case WDC_ERR_IO:
			code = ERRCODE_IO_ERROR;
			break;
		case WDC_ERR_CANCELED:
			CHECK_FOR_INTERRUPTS();
			code = ERRCODE_QUERY_CANCELED;
			break;
		default:
			code = ERRCODE_INTERNAL_ERROR;
			break;
	}
	ereport(ERROR,
			(errcode(code),
			 errmsg_internal("%s", error->message),
			 error->detail[0] ? errdetail_internal("%s", error->detail) : 0,
			 error->hint[0] ? errhint("%s", error->hint) : 0));
	pg_unreachable();
}

void
WdcArrayToImage(ArrayType *array, const char *what, WdcImage *image)
{
	int		   *dims;

	if (ARR_ELEMTYPE(array) != FLOAT4OID)
		elog(ERROR, "%s has element type %u, expected real", what, ARR_ELEMTYPE(array));
	if (ARR_NDIM(array) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is empty", what)));
	if (ARR_NDIM(array) != 2)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("%s must be a 2-D array, not %d-D", what, ARR_NDIM(array)),
				 errhint("Pass an image such as wdc.fits_image returns: "
						 "real[height][width].")));
	if (array_contains_nulls(array))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not contain NULL elements", what),
				 errhint("Use 'NaN' for missing pixels.")));
	dims = ARR_DIMS(array);
	image->height = (size_t) dims[0];
	image->width = (size_t) dims[1];
	image->pixels = (float *) ARR_DATA_PTR(array);
}

ArrayType *
WdcImageToArray(const WdcImage *image)
{
	size_t		n = image->width * image->height;
	size_t		bytes = ARR_OVERHEAD_NONULLS(2) + n * sizeof(float);
	ArrayType  *array;

	if (image->width > INT_MAX || image->height > INT_MAX ||
		!AllocSizeIsValid(bytes))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("image of %zu x %zu pixels is too large for an array",
						image->width, image->height)));
	array = palloc0(bytes);
	SET_VARSIZE(array, bytes);
	array->ndim = 2;
	array->dataoffset = 0;		/* no NULL bitmap */
	array->elemtype = FLOAT4OID;
	ARR_DIMS(array)[0] = (int) image->height;
	ARR_DIMS(array)[1] = (int) image->width;
	ARR_LBOUND(array)[0] = 1;
	ARR_LBOUND(array)[1] = 1;
	memcpy(ARR_DATA_PTR(array), image->pixels, n * sizeof(float));
	return array;
}

void
WdcApplyJsonbOptions(Jsonb *options, WdcOptionSetter setter, void *target,
					 const char *what)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	WdcEnv		env;
	WdcError	error;
	char	   *key = NULL;

	WdcFitsEnvInit(&env, &error);
	if (!JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s options must be a jsonb object", what),
				 errhint("Pass options such as '{\"stretch\": \"asinh\"}'.")));

	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *value;

		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;
		switch (v.type)
		{
			case jbvString:
				value = pnstrdup(v.val.string.val, v.val.string.len);
				break;
			case jbvNumeric:
				value = DatumGetCString(DirectFunctionCall1(numeric_out,
															NumericGetDatum(v.val.numeric)));
				break;
			case jbvBool:
				value = v.val.boolean ? "true" : "false";
				break;
			default:
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s option \"%s\" must be a string, number or boolean",
								what, key)));
		}
		if (setter(&env, target, key, value) != WDC_OK)
			WdcFitsRaise(&error);
	}
}

static WdcStatus
set_preprocess_option(const WdcEnv *env, void *options, const char *name,
					  const char *value)
{
	return wdc_preprocess_set(env, (WdcPreprocess *) options, name, value);
}

void
WdcPreprocessFromJsonb(Jsonb *options, WdcPreprocess *pp)
{
	WdcEnv		env;
	WdcError	error;

	wdc_preprocess_init(pp);
	WdcApplyJsonbOptions(options, set_preprocess_option, pp, "preprocessing");
	pp->max_bytes = (size_t) wdc_fits_max_mb << 20;
	WdcFitsEnvInit(&env, &error);
	if (wdc_preprocess_check(&env, pp) != WDC_OK)
		WdcFitsRaise(&error);
}

/* --- opening inputs -------------------------------------------------------- */

/* Check the privilege to read server files, as pg_read_file does. */
static void
check_server_file_access(const char *path)
{
	if (!has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to read server file \"%s\"", path),
				 errhint("Only roles with privileges of the \"pg_read_server_files\" "
						 "role may read FITS files on the server; others can pass "
						 "the file's contents as bytea.")));
}

/*
 * Open argument 0 of the call: a bytea, or (path = true) a server file
 * path.  Raises on failure; nothing is left open then.
 */
static WdcFitsFile *
open_argument(FunctionCallInfo fcinfo, bool path, WdcEnv *env, WdcError *error)
{
	WdcFitsLimits limits;
	WdcFitsFile *file;
	WdcStatus	rc;

	WdcFitsLimitsFromGuc(&limits);
	if (path)
	{
		char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
		struct stat st;

		check_server_file_access(name);
		if (stat(name, &st) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not stat file \"%s\": %m", name)));
		rc = wdc_fits_open_path(env, name, &limits, &file);
	}
	else
	{
		bytea	   *data = PG_GETARG_BYTEA_PP(0);

		rc = wdc_fits_open_memory(env, VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data),
								  &limits, &file);
	}
	if (rc != WDC_OK)
		WdcFitsRaise(error);
	return file;
}

/* HDU argument: NULL selects the first image; otherwise 0 or more. */
static int
hdu_argument(FunctionCallInfo fcinfo, int argno)
{
	int32		hdu;

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return -1;
	hdu = PG_GETARG_INT32(argno);
	if (hdu < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("HDU number %d is negative", hdu),
				 errhint("HDUs are numbered from 0, the primary HDU; pass NULL "
						 "for the first HDU with image data.")));
	return hdu;
}

/* Plane argument: NULL for a 2-D image; otherwise 1 or more. */
static int64
plane_argument(FunctionCallInfo fcinfo, int argno)
{
	int32		plane;

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return 0;
	plane = PG_GETARG_INT32(argno);
	if (plane < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("plane number %d is out of range", plane),
				 errhint("Planes are numbered from 1; pass NULL for a 2-D image.")));
	return plane;
}

/* Cutout size argument: 1 or more. */
static size_t
size_argument(FunctionCallInfo fcinfo, int argno)
{
	int32		size = PG_GETARG_INT32(argno);

	if (size < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cutout size %d is out of range", size),
				 errhint("The size is the side of the square cutout in pixels, "
						 "1 or more.")));
	return (size_t) size;
}

/* True when any of the first n arguments is NULL. */
static bool
any_null(FunctionCallInfo fcinfo, int n)
{
	for (int i = 0; i < n; i++)
		if (PG_ARGISNULL(i))
			return true;
	return false;
}

/* --- SQL functions ------------------------------------------------------- */

/* wdc.fits_image(fits bytea, hdu int, plane int) -> real[] */
PG_FUNCTION_INFO_V1(fits_image);
Datum
fits_image(PG_FUNCTION_ARGS)
{
	WdcEnv		env;
	WdcError	error;
	WdcFitsFile *volatile file;
	volatile WdcStatus rc = WDC_OK;
	WdcImage	image = {0};
	int			hdu;
	int64		plane;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	hdu = hdu_argument(fcinfo, 1);
	plane = plane_argument(fcinfo, 2);
	WdcFitsEnvInit(&env, &error);
	file = open_argument(fcinfo, false, &env, &error);

	PG_TRY();
	{
		rc = wdc_fits_select_image(&env, file, hdu, NULL);
		if (rc == WDC_OK)
			rc = wdc_fits_read_image(&env, file, plane, &image);
	}
	PG_FINALLY();
	{
		wdc_fits_close(&env, file);
	}
	PG_END_TRY();
	if (rc != WDC_OK)
		WdcFitsRaise(&error);

	PG_RETURN_ARRAYTYPE_P(WdcImageToArray(&image));
}

/* wdc.fits_header(fits bytea, hdu int) -> jsonb */
PG_FUNCTION_INFO_V1(fits_header);
Datum
fits_header(PG_FUNCTION_ARGS)
{
	WdcEnv		env;
	WdcError	error;
	WdcFitsFile *volatile file;
	volatile WdcStatus rc = WDC_OK;
	char	   *volatile json = NULL;
	int			hdu;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	hdu = hdu_argument(fcinfo, 1);
	WdcFitsEnvInit(&env, &error);
	file = open_argument(fcinfo, false, &env, &error);

	PG_TRY();
	{
		char	   *text = NULL;

		/* a named HDU may be of any type; by default, the first image's */
		if (hdu >= 0)
			rc = wdc_fits_select_header(&env, file, hdu);
		else
			rc = wdc_fits_select_image(&env, file, hdu, NULL);
		if (rc == WDC_OK)
			rc = wdc_fits_header_json(&env, file, &text);
		json = text;
	}
	PG_FINALLY();
	{
		wdc_fits_close(&env, file);
	}
	PG_END_TRY();
	if (rc != WDC_OK)
		WdcFitsRaise(&error);

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

/*
 * Shared body of the cutout functions: arguments are (input, a, b, size,
 * hdu, plane) where (a, b) is a FITS pixel position, or (ra, dec) in
 * degrees when sky is set.
 */
static Datum
cutout_common(FunctionCallInfo fcinfo, bool path, bool sky)
{
	WdcEnv		env;
	WdcError	error;
	WdcFitsFile *volatile file;
	volatile WdcStatus rc = WDC_OK;
	WdcImage	image = {0};
	float8		a,
				b;
	size_t		size;
	int			hdu;
	int64		plane;

	if (any_null(fcinfo, 4))
		PG_RETURN_NULL();
	a = PG_GETARG_FLOAT8(1);
	b = PG_GETARG_FLOAT8(2);
	size = size_argument(fcinfo, 3);
	hdu = hdu_argument(fcinfo, 4);
	plane = plane_argument(fcinfo, 5);
	WdcFitsEnvInit(&env, &error);
	file = open_argument(fcinfo, path, &env, &error);

	PG_TRY();
	{
		double		x = a,
					y = b;

		rc = wdc_fits_select_image(&env, file, hdu, NULL);
		if (rc == WDC_OK && sky)
			rc = wdc_fits_sky_to_pixel(&env, file, a, b, &x, &y);
		if (rc == WDC_OK)
			rc = wdc_fits_read_cutout(&env, file, plane, x, y, size, size, &image);
	}
	PG_FINALLY();
	{
		wdc_fits_close(&env, file);
	}
	PG_END_TRY();
	if (rc != WDC_OK)
		WdcFitsRaise(&error);

	PG_RETURN_ARRAYTYPE_P(WdcImageToArray(&image));
}

/* wdc.fits_cutout(fits bytea, x, y, size, hdu, plane) -> real[] */
PG_FUNCTION_INFO_V1(fits_cutout);
Datum
fits_cutout(PG_FUNCTION_ARGS)
{
	return cutout_common(fcinfo, false, false);
}

/* wdc.fits_cutout(path text, x, y, size, hdu, plane) -> real[] */
PG_FUNCTION_INFO_V1(fits_cutout_path);
Datum
fits_cutout_path(PG_FUNCTION_ARGS)
{
	return cutout_common(fcinfo, true, false);
}

/* wdc.fits_cutout_sky(fits bytea, ra, dec, size, hdu, plane) -> real[] */
PG_FUNCTION_INFO_V1(fits_cutout_sky);
Datum
fits_cutout_sky(PG_FUNCTION_ARGS)
{
	return cutout_common(fcinfo, false, true);
}

/* wdc.fits_cutout_sky(path text, ra, dec, size, hdu, plane) -> real[] */
PG_FUNCTION_INFO_V1(fits_cutout_sky_path);
Datum
fits_cutout_sky_path(PG_FUNCTION_ARGS)
{
	return cutout_common(fcinfo, true, true);
}

/* wdc.fits_sky_to_pixel(fits bytea, ra, dec, hdu) -> float8[] {x, y} */
PG_FUNCTION_INFO_V1(fits_sky_to_pixel);
Datum
fits_sky_to_pixel(PG_FUNCTION_ARGS)
{
	WdcEnv		env;
	WdcError	error;
	WdcFitsFile *volatile file;
	volatile WdcStatus rc = WDC_OK;
	double		xy[2] = {0, 0};
	Datum		elems[2];
	int			hdu;

	if (any_null(fcinfo, 3))
		PG_RETURN_NULL();
	hdu = hdu_argument(fcinfo, 3);
	WdcFitsEnvInit(&env, &error);
	file = open_argument(fcinfo, false, &env, &error);

	PG_TRY();
	{
		rc = wdc_fits_select_image(&env, file, hdu, NULL);
		if (rc == WDC_OK)
			rc = wdc_fits_sky_to_pixel(&env, file, PG_GETARG_FLOAT8(1),
									   PG_GETARG_FLOAT8(2), &xy[0], &xy[1]);
	}
	PG_FINALLY();
	{
		wdc_fits_close(&env, file);
	}
	PG_END_TRY();
	if (rc != WDC_OK)
		WdcFitsRaise(&error);

	elems[0] = Float8GetDatum(xy[0]);
	elems[1] = Float8GetDatum(xy[1]);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, 2, FLOAT8OID, sizeof(float8),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}
