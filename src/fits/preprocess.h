/*
 * preprocess.h
 *	  Image preprocessing a model declares for its inputs, without PostgreSQL.
 *
 * The same steps run when a model is trained (images exported with
 * wdc.preprocess) and when wdc.encode prepares a cutout, so both see
 * identical inputs.  Steps run in this fixed order, each optional:
 *	1. NaN fill: NaN pixels take a constant, or the median or minimum of the
 *	   finite pixels (all-NaN images take 0);
 *	2. resize to out_width x out_height, bilinear or by area averaging;
 *	3. clip to the clip_low and clip_high percentiles of the finite pixels;
 *	4. stretch: asinh(x / scale), or log(1 + (x - min) / scale) where min is
 *	   the smallest finite pixel;
 *	5. normalise: min-max to [0, 1], or z-score to mean 0, standard
 *	   deviation 1 (a constant image becomes all zeros).
 * Options are set by name from text (wdc_preprocess_set), so that a model's
 * options, ONNX metadata and a jsonb argument all share one parser.
 */
#ifndef WDC_PREPROCESS_H
#define WDC_PREPROCESS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/wdc_core.h"
#include "fits/fits.h"

typedef enum WdcNanFill
{
	WDC_NAN_KEEP,				/* leave NaN pixels as they are */
	WDC_NAN_VALUE,				/* nan_value */
	WDC_NAN_MEDIAN,				/* median of the finite pixels */
	WDC_NAN_MIN					/* minimum of the finite pixels */
} WdcNanFill;

typedef enum WdcStretch
{
	WDC_STRETCH_NONE,
	WDC_STRETCH_ASINH,			/* asinh(x / stretch_scale) */
	WDC_STRETCH_LOG				/* log(1 + (x - min) / stretch_scale) */
} WdcStretch;

typedef enum WdcNormalize
{
	WDC_NORMALIZE_NONE,
	WDC_NORMALIZE_MINMAX,		/* (x - min) / (max - min) */
	WDC_NORMALIZE_ZSCORE		/* (x - mean) / std, population std */
} WdcNormalize;

typedef enum WdcResize
{
	WDC_RESIZE_BILINEAR,		/* half-pixel centres, edges clamped, as
								 * PyTorch's interpolate(align_corners=False) */
	WDC_RESIZE_AREA				/* mean over each output pixel's footprint,
								 * fractional overlaps weighted */
} WdcResize;

/*
 * Preprocessing options; wdc_preprocess_init() sets "do nothing".
 * Option names accepted by wdc_preprocess_set() are given per field.
 */
typedef struct WdcPreprocess
{
	WdcNanFill	nan_fill;		/* "nan_fill": "keep", "median", "min" or a number */
	float		nan_value;
	size_t		out_width;		/* "width": pixels, 0 = keep */
	size_t		out_height;		/* "height": pixels, 0 = keep */
	WdcResize	resize;			/* "resize": "bilinear" (default) or "area" */
	double		clip_low;		/* "clip_low": percentile 0-100, default 0 */
	double		clip_high;		/* "clip_high": percentile 0-100, default 100 */
	WdcStretch	stretch;		/* "stretch": "none", "asinh", "log" */
	double		stretch_scale;	/* "stretch_scale": > 0, default 1 */
	WdcNormalize normalize;		/* "normalize": "none", "minmax", "zscore" */
	size_t		max_bytes;		/* largest resized image in bytes, 0 = no
								 * limit; set by the caller (the server
								 * from wdc.fits_max_mb), not an option */
} WdcPreprocess;

/* Set every option to its default (no step runs). */
extern void wdc_preprocess_init(WdcPreprocess *pp);

/*
 * Set one option from its text value (numbers as decimal text).  An unknown
 * name or a value out of range is WDC_ERR_INVALID.
 */
extern WdcStatus wdc_preprocess_set(const WdcEnv *env, WdcPreprocess *pp,
									const char *name, const char *value);

/* Check the options together (clip_low < clip_high and so on). */
extern WdcStatus wdc_preprocess_check(const WdcEnv *env, const WdcPreprocess *pp);

/*
 * Run the steps on in and store the result in out (pixels allocated with
 * the WdcEnv allocator; out may not alias in).  in is not changed.
 */
extern WdcStatus wdc_preprocess_run(const WdcEnv *env, const WdcPreprocess *pp,
									const WdcImage *in, WdcImage *out);

/*
 * Resize an image (step 2 alone); out->pixels is allocated here.  A NaN
 * pixel makes NaN every output pixel it contributes to with nonzero weight.
 */
extern WdcStatus wdc_image_resize(const WdcEnv *env, const WdcImage *in,
								  size_t width, size_t height, WdcResize mode,
								  WdcImage *out);

/*
 * Value at percentile p (0-100) of the finite values in data, with linear
 * interpolation between order statistics (numpy's default method).
 * Returns NaN when no value is finite.
 */
extern WdcStatus wdc_percentile(const WdcEnv *env, const float *data, size_t n,
								double p, double *result);

/* Count the NaN and infinite values in data[0..n). */
extern size_t wdc_count_nonfinite(const float *data, size_t n);

/*
 * Highest vector instruction set the percentile selection may use: -1
 * (default) what the CPU has, 0 none, 1 AVX2, 2 AVX-512F.  Tests and the
 * fuzz target lower it to check every path on one machine.
 */
extern int	wdc_preprocess_simd;

#endif							/* WDC_PREPROCESS_H */
