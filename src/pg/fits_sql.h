/*
 * fits_sql.h
 *	  PostgreSQL glue for src/fits: settings, error raising and conversions
 *	  between real[] arrays, jsonb options and the core's image structs.
 *
 * Other glue files (the model registry's wdc.encode) use these to read a
 * FITS bytea and apply a model's preprocessing exactly as the SQL functions
 * of fits_sql.c and png_sql.c do.
 */
#ifndef WDC_FITS_SQL_H
#define WDC_FITS_SQL_H

#include "postgres.h"

#include "utils/array.h"
#include "utils/jsonb.h"

#include "core/wdc_core.h"
#include "fits/fits.h"
#include "fits/preprocess.h"

/* wdc.fits_max_mb: limit on decompressed FITS bytes and on image size (MB). */
extern int	wdc_fits_max_mb;

/* Define the FITS settings; called once from _PG_init. */
extern void wdc_fits_init_gucs(void);

/*
 * Point env at palloc in CurrentMemoryContext (huge allocations allowed,
 * NULL on failure) and at a cancel check, with errors recorded in *error.
 */
extern void WdcFitsEnvInit(WdcEnv *env, WdcError *error);

/* Limits from wdc.fits_max_mb: that many MB of bytes, or of float pixels. */
extern void WdcFitsLimitsFromGuc(WdcFitsLimits *limits);

/* Raise the core error in *error with the SQLSTATE of its status. */
extern void WdcFitsRaise(const WdcError *error) pg_attribute_noreturn();

/*
 * View a 2-D real[] without NULLs as an image (no copy: pixels point into
 * the array).  what names the argument in error messages.
 */
extern void WdcArrayToImage(ArrayType *array, const char *what, WdcImage *image);

/* Build a 2-D real[] with dims [1:height][1:width] from an image. */
extern ArrayType *WdcImageToArray(const WdcImage *image);

/*
 * Apply a jsonb object of options through a setter that wraps a core one
 * (wdc_preprocess_set, wdc_png_set); values must be strings, numbers or
 * booleans.  what names the options in error messages.
 */
typedef WdcStatus (*WdcOptionSetter) (const WdcEnv *env, void *options,
									  const char *name, const char *value);
extern void WdcApplyJsonbOptions(Jsonb *options, WdcOptionSetter setter,
								 void *target, const char *what);

/*
 * Fill *pp from a jsonb object of preprocessing options (the names of
 * preprocess.h), raising on unknown names or bad values.
 */
extern void WdcPreprocessFromJsonb(Jsonb *options, WdcPreprocess *pp);

#endif							/* WDC_FITS_SQL_H */
