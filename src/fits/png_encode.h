/*
 * png_encode.h
 *	  Rendering a float image as an 8-bit greyscale PNG, without PostgreSQL.
 *
 * Pixel values map to grey levels in three steps:
 *	1. limits [lo, hi]: the finite minimum and maximum ("minmax"), two
 *	   percentiles ("percentile", default 0.5 and 99.5), or IRAF-style
 *	   zscale limits ("zscale": a line fitted to the sorted values of up to
 *	   1000 sample pixels, its slope divided by the contrast 0.25);
 *	   explicit "min" and "max" override either end;
 *	2. v = (x - lo) / (hi - lo) clamped to [0, 1], then the stretch:
 *	   linear v, sqrt(v), asinh(v / a) / asinh(1 / a), or
 *	   log(1 + 1000 v) / log(1001);
 *	3. grey = round(255 v).
 * NaN pixels take the grey level "nan" (default 0) or are transparent
 * (grey plus alpha PNG).  By default the image is shown as astronomers do,
 * FITS row 1 at the bottom ("origin": "lower").
 */
#ifndef WDC_PNG_ENCODE_H
#define WDC_PNG_ENCODE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/wdc_core.h"
#include "fits/fits.h"

typedef enum WdcPngStretch
{
	WDC_PNG_LINEAR,
	WDC_PNG_SQRT,
	WDC_PNG_ASINH,
	WDC_PNG_LOG
} WdcPngStretch;

typedef enum WdcPngLimits
{
	WDC_PNG_MINMAX,
	WDC_PNG_PERCENTILE,
	WDC_PNG_ZSCALE
} WdcPngLimits;

/*
 * PNG rendering options; wdc_png_init() sets the defaults.  The name
 * accepted by wdc_png_set() is given per field.
 */
typedef struct WdcPngOptions
{
	WdcPngStretch stretch;		/* "stretch": linear (default), sqrt, asinh, log */
	double		asinh_a;		/* "asinh_a": softening > 0, default 0.1 */
	WdcPngLimits limits;		/* "limits": minmax (default), percentile, zscale */
	double		lower;			/* "lower": percentile 0-100, default 0.5 */
	double		upper;			/* "upper": percentile 0-100, default 99.5 */
	bool		has_min;		/* "min": explicit lower limit (pixel units) */
	double		min;
	bool		has_max;		/* "max": explicit upper limit (pixel units) */
	double		max;
	bool		nan_transparent;	/* "nan": "transparent" */
	int			nan_grey;		/* "nan": grey level 0-255, default 0 */
	bool		origin_lower;	/* "origin": "lower" (default) or "upper" */
	int			scale;			/* "scale": integer enlargement 1-16, default 1 */
} WdcPngOptions;

extern void wdc_png_init(WdcPngOptions *opts);

/* Set one option from text; unknown names and bad values: WDC_ERR_INVALID. */
extern WdcStatus wdc_png_set(const WdcEnv *env, WdcPngOptions *opts,
							 const char *name, const char *value);

/*
 * Compute the display limits [lo, hi] of an image under opts (step 1).
 * An image without finite pixels gets [0, 1].
 */
extern WdcStatus wdc_png_limits(const WdcEnv *env, const WdcPngOptions *opts,
								const WdcImage *image, double *lo, double *hi);

/*
 * Encode image as PNG; *png is allocated with the WdcEnv allocator and
 * *png_len set to its size.  Output bytes depend only on the input and
 * options (no timestamp chunk).
 */
extern WdcStatus wdc_png_encode(const WdcEnv *env, const WdcPngOptions *opts,
								const WdcImage *image, unsigned char **png,
								size_t *png_len);

#endif							/* WDC_PNG_ENCODE_H */
