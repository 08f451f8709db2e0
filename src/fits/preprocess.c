/*
 * preprocess.c
 *	  NaN fill, resize, percentile clip, stretch and normalisation of an
 *	  image, in the order and with the options described in preprocess.h.
 *
 * Statistics (percentiles, min, max, mean) use finite pixels only and are
 * accumulated in double; pixels are stored as float.
 */
#include "fits/preprocess.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void
wdc_preprocess_init(WdcPreprocess *pp)
{
	memset(pp, 0, sizeof(*pp));
	pp->nan_fill = WDC_NAN_KEEP;
	pp->resize = WDC_RESIZE_BILINEAR;
	pp->clip_low = 0.0;
	pp->clip_high = 100.0;
	pp->stretch = WDC_STRETCH_NONE;
	pp->stretch_scale = 1.0;
	pp->normalize = WDC_NORMALIZE_NONE;
}

/* Parse a whole decimal number; false on trailing text or non-finite. */
static bool
parse_number(const char *text, double *out)
{
	char	   *end;

	errno = 0;
	*out = strtod(text, &end);
	while (*end == ' ')
		end++;
	return end != text && *end == '\0' && errno == 0 && isfinite(*out);
}

static WdcStatus
bad_value(const WdcEnv *env, const char *name, const char *value,
		  const char *expected)
{
	wdc_error(env, WDC_ERR_INVALID,
			  "invalid value \"%s\" for preprocessing option \"%s\"", value, name);
	return wdc_error_hint(env, "Expected %s.", expected);
}

/* Parse a pixel count 1..65536 (0 = keep the input size). */
static WdcStatus
set_size(const WdcEnv *env, const char *name, const char *value, size_t *out)
{
	double		v;

	if (!parse_number(value, &v) || v < 0 || v > 65536 || v != floor(v))
		return bad_value(env, name, value, "an integer from 0 (keep) to 65536");
	*out = (size_t) v;
	return WDC_OK;
}

WdcStatus
wdc_preprocess_set(const WdcEnv *env, WdcPreprocess *pp, const char *name,
				   const char *value)
{
	double		v;

	if (strcmp(name, "nan_fill") == 0)
	{
		if (strcmp(value, "keep") == 0)
			pp->nan_fill = WDC_NAN_KEEP;
		else if (strcmp(value, "median") == 0)
			pp->nan_fill = WDC_NAN_MEDIAN;
		else if (strcmp(value, "min") == 0)
			pp->nan_fill = WDC_NAN_MIN;
		else if (parse_number(value, &v) && fabs(v) <= 3.4e38)
		{
			pp->nan_fill = WDC_NAN_VALUE;
			pp->nan_value = (float) v;
		}
		else
			return bad_value(env, name, value, "\"keep\", \"median\", \"min\" or a number");
	}
	else if (strcmp(name, "width") == 0)
		return set_size(env, name, value, &pp->out_width);
	else if (strcmp(name, "height") == 0)
		return set_size(env, name, value, &pp->out_height);
	else if (strcmp(name, "resize") == 0)
	{
		if (strcmp(value, "bilinear") == 0)
			pp->resize = WDC_RESIZE_BILINEAR;
		else if (strcmp(value, "area") == 0)
			pp->resize = WDC_RESIZE_AREA;
		else
			return bad_value(env, name, value, "\"bilinear\" or \"area\"");
	}
	else if (strcmp(name, "clip_low") == 0 || strcmp(name, "clip_high") == 0)
	{
		if (!parse_number(value, &v) || v < 0 || v > 100)
			return bad_value(env, name, value, "a percentile from 0 to 100");
		if (name[5] == 'l')
			pp->clip_low = v;
		else
			pp->clip_high = v;
	}
	else if (strcmp(name, "stretch") == 0)
	{
		if (strcmp(value, "none") == 0 || strcmp(value, "linear") == 0)
			pp->stretch = WDC_STRETCH_NONE;
		else if (strcmp(value, "asinh") == 0)
			pp->stretch = WDC_STRETCH_ASINH;
		else if (strcmp(value, "log") == 0)
			pp->stretch = WDC_STRETCH_LOG;
		else
			return bad_value(env, name, value, "\"none\", \"asinh\" or \"log\"");
	}
	else if (strcmp(name, "stretch_scale") == 0)
	{
		if (!parse_number(value, &v) || v <= 0)
			return bad_value(env, name, value, "a positive number");
		pp->stretch_scale = v;
	}
	else if (strcmp(name, "normalize") == 0)
	{
		if (strcmp(value, "none") == 0)
			pp->normalize = WDC_NORMALIZE_NONE;
		else if (strcmp(value, "minmax") == 0)
			pp->normalize = WDC_NORMALIZE_MINMAX;
		else if (strcmp(value, "zscore") == 0)
			pp->normalize = WDC_NORMALIZE_ZSCORE;
		else
			return bad_value(env, name, value, "\"none\", \"minmax\" or \"zscore\"");
	}
	else
	{
		wdc_error(env, WDC_ERR_INVALID, "unknown preprocessing option \"%s\"", name);
		return wdc_error_hint(env, "Valid options are nan_fill, width, height, "
							  "resize, clip_low, clip_high, stretch, "
							  "stretch_scale and normalize.");
	}
	return WDC_OK;
}

WdcStatus
wdc_preprocess_check(const WdcEnv *env, const WdcPreprocess *pp)
{
	if (pp->clip_low >= pp->clip_high)
	{
		wdc_error(env, WDC_ERR_INVALID,
				  "clip_low %g must be below clip_high %g",
				  pp->clip_low, pp->clip_high);
		return wdc_error_hint(env, "Percentiles run from 0 to 100.");
	}
	if ((pp->out_width == 0) != (pp->out_height == 0))
		return wdc_error(env, WDC_ERR_INVALID,
						 "width and height must be given together");
	return WDC_OK;
}

static int
compare_float(const void *a, const void *b)
{
	float		x = *(const float *) a;
	float		y = *(const float *) b;

	return (x > y) - (x < y);
}

/*
 * Copy of the finite values, in no particular order; *finite is NULL when
 * none is finite.
 */
static WdcStatus
copy_finite(const WdcEnv *env, const float *data, size_t n, float **finite,
			size_t *count)
{
	size_t		m = 0;
	float	   *copy;

	*finite = NULL;
	*count = 0;
	copy = wdc_alloc(env, (n ? n : 1) * sizeof(float));
	if (copy == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory ranking pixels");
	for (size_t i = 0; i < n; i++)
		if (isfinite(data[i]))
			copy[m++] = data[i];
	if (m == 0)
	{
		wdc_free(env, copy);
		return WDC_OK;
	}
	*finite = copy;
	*count = m;
	return WDC_OK;
}

static inline void
swap_float(float *a, float *b)
{
	float		t = *a;

	*a = *b;
	*b = t;
}

/*
 * Rearrange a[0..n) so that a[k] is the value of rank k (0-based), with
 * no larger value before it and no smaller one after it.  Quickselect with
 * a median-of-three pivot runs in O(n) on average; the values are finite,
 * so comparisons are a total order.  After 2 log2(n) partitions that
 * shrink the range by less than a quarter, the rest is sorted instead, which
 * bounds the worst case at O(n log n).
 */
static void
select_rank(float *a, size_t n, size_t k)
{
	size_t		lo = 0,
				hi = n - 1;		/* inclusive range that contains rank k */
	int			budget = 2;

	for (size_t s = n; s > 1; s >>= 1)
		budget += 2;
	while (hi > lo)
	{
		size_t		len = hi - lo + 1;
		size_t		mid = lo + len / 2;
		size_t		i,
					j;
		float		pivot;

		if (len <= 16 || budget-- <= 0)
		{
			qsort(a + lo, len, sizeof(float), compare_float);
			return;
		}
		/* median of three into a[mid], smallest at a[lo], largest at a[hi] */
		if (a[mid] < a[lo])
			swap_float(&a[mid], &a[lo]);
		if (a[hi] < a[lo])
			swap_float(&a[hi], &a[lo]);
		if (a[hi] < a[mid])
			swap_float(&a[hi], &a[mid]);
		pivot = a[mid];

		/* Hoare partition of a[lo+1 .. hi-1]; a[lo] and a[hi] are sentinels */
		i = lo;
		j = hi;
		for (;;)
		{
			do
				i++;
			while (a[i] < pivot);
			do
				j--;
			while (a[j] > pivot);
			if (i >= j)
				break;
			swap_float(&a[i], &a[j]);
		}
		/* now a[lo..j] <= pivot <= a[j+1..hi] */
		if (k <= j)
			hi = j;
		else
			lo = j + 1;
		if (hi - lo + 1 > len - len / 4)
			budget--;			/* a poor split: count it twice */
	}
}

/*
 * Return percentile p (0 to 100) of the m values in a by numpy's linear
 * method, interpolating between the values of rank floor(pos) and the next,
 * where pos = p / 100 * (m - 1).  Reorders a; only a[from..m) is searched, which the
 * caller guarantees to contain every rank from `from` on (see select_rank).
 */
static double
percentile_select(float *a, size_t m, size_t from, double p, size_t *rank)
{
	double		pos = p / 100.0 * (double) (m - 1);
	size_t		lo = (size_t) floor(pos);
	double		t = pos - (double) lo;
	float		below,
				above;

	if (lo < from)
		lo = from;
	if (lo > m - 1)
		lo = m - 1;
	select_rank(a + from, m - from, lo - from);
	below = a[lo];
	above = below;
	/* the next rank is the smallest value after it */
	if (lo + 1 < m)
	{
		above = a[lo + 1];
		for (size_t i = lo + 2; i < m; i++)
			if (a[i] < above)
				above = a[i];
	}
	*rank = lo;
	return (double) below + t * ((double) above - (double) below);
}

WdcStatus
wdc_percentile(const WdcEnv *env, const float *data, size_t n, double p,
			   double *result)
{
	float	   *finite;
	size_t		m,
				rank;
	WdcStatus	rc = copy_finite(env, data, n, &finite, &m);

	if (rc != WDC_OK)
		return rc;
	*result = m ? percentile_select(finite, m, 0, p, &rank) : NAN;
	wdc_free(env, finite);
	return WDC_OK;
}

/*
 * Weights of the input samples that make output sample j of an axis
 * resized from n_in to n_out; returns the number of taps written to idx and
 * w (at most n_in / n_out + 2 for area, 2 for bilinear).
 */
static size_t
axis_taps(size_t j, size_t n_in, size_t n_out, WdcResize mode,
		  size_t *idx, double *w)
{
	double		scale = (double) n_in / (double) n_out;

	if (mode == WDC_RESIZE_BILINEAR)
	{
		/* Sample at the output pixel's centre in input coordinates. */
		double		src = ((double) j + 0.5) * scale - 0.5;
		size_t		i0;
		double		t;

		if (src < 0)
			src = 0;
		i0 = (size_t) floor(src);
		if (i0 > n_in - 1)
			i0 = n_in - 1;
		t = src - (double) i0;
		idx[0] = i0;
		w[0] = 1.0 - t;
		idx[1] = i0 + 1 < n_in ? i0 + 1 : i0;
		w[1] = t;
		return 2;
	}
	else
	{
		/* Average over [j * scale, (j + 1) * scale) with partial overlaps. */
		double		a = (double) j * scale;
		double		b = (double) (j + 1) * scale;
		size_t		k = 0;

		for (size_t i = (size_t) floor(a); i < n_in && (double) i < b; i++)
		{
			double		lo = fmax(a, (double) i);
			double		hi = fmin(b, (double) i + 1.0);

			if (hi <= lo)
				continue;
			idx[k] = i;
			w[k] = (hi - lo) / scale;
			k++;
		}
		return k;
	}
}

WdcStatus
wdc_image_resize(const WdcEnv *env, const WdcImage *in, size_t width,
				 size_t height, WdcResize mode, WdcImage *out)
{
	size_t		max_taps;
	size_t	   *idx = NULL;
	double	   *w = NULL;
	double	   *tmp = NULL;
	size_t		n;

	memset(out, 0, sizeof(*out));
	if (width == 0 || height == 0 || in->width == 0 || in->height == 0)
		return wdc_error(env, WDC_ERR_INVALID, "cannot resize to or from an empty image");

	max_taps = (in->width > in->height ? in->width : in->height) /
		(width < height ? width : height) + 3;
	if (!wdc_size_mul(width, height, &n))
		return wdc_error(env, WDC_ERR_LIMIT, "resized image is too large");
	idx = wdc_alloc(env, max_taps * sizeof(size_t));
	w = wdc_alloc(env, max_taps * sizeof(double));
	tmp = wdc_alloc(env, in->height * width * sizeof(double));
	out->pixels = wdc_alloc(env, n * sizeof(float));
	if (!idx || !w || !tmp || !out->pixels)
	{
		wdc_free(env, idx);
		wdc_free(env, w);
		wdc_free(env, tmp);
		wdc_image_free(env, out);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory resizing an image");
	}
	out->width = width;
	out->height = height;

	/* Pass 1: resize each row to the new width (in->height x width). */
	for (size_t x = 0; x < width; x++)
	{
		size_t		k = axis_taps(x, in->width, width, mode, idx, w);

		for (size_t y = 0; y < in->height; y++)
		{
			const float *row = in->pixels + y * in->width;
			double		acc = 0;

			for (size_t t = 0; t < k; t++)
				if (w[t] != 0.0)
					acc += w[t] * row[idx[t]];
			tmp[y * width + x] = acc;
		}
	}

	/* Pass 2: resize each column to the new height. */
	for (size_t y = 0; y < height; y++)
	{
		size_t		k = axis_taps(y, in->height, height, mode, idx, w);

		for (size_t x = 0; x < width; x++)
		{
			double		acc = 0;

			for (size_t t = 0; t < k; t++)
				if (w[t] != 0.0)
					acc += w[t] * tmp[idx[t] * width + x];
			out->pixels[y * width + x] = (float) acc;
		}
		if (wdc_interrupted(env))
		{
			wdc_free(env, idx);
			wdc_free(env, w);
			wdc_free(env, tmp);
			wdc_image_free(env, out);
			return wdc_error(env, WDC_ERR_CANCELED, "image resize canceled");
		}
	}
	wdc_free(env, idx);
	wdc_free(env, w);
	wdc_free(env, tmp);
	return WDC_OK;
}

/* Minimum and maximum of the finite pixels; false when there are none. */
static bool
finite_range(const float *p, size_t n, double *lo, double *hi)
{
	bool		any = false;

	for (size_t i = 0; i < n; i++)
	{
		if (!isfinite(p[i]))
			continue;
		if (!any || p[i] < *lo)
			*lo = p[i];
		if (!any || p[i] > *hi)
			*hi = p[i];
		any = true;
	}
	return any;
}

/*
 * Number of NaN and infinite pixels; the fill value (a median needs a sort)
 * is only computed when there is something to fill.
 */
static size_t
count_nonfinite(const float *p, size_t n)
{
	size_t		count = 0;

	for (size_t i = 0; i < n; i++)
		count += isfinite(p[i]) ? 0 : 1;
	return count;
}

WdcStatus
wdc_preprocess_run(const WdcEnv *env, const WdcPreprocess *pp,
				   const WdcImage *in, WdcImage *out)
{
	size_t		n;
	float	   *p;
	WdcStatus	rc;

	memset(out, 0, sizeof(*out));
	rc = wdc_preprocess_check(env, pp);
	if (rc != WDC_OK)
		return rc;
	if (!wdc_size_mul(in->width, in->height, &n) || n == 0)
		return wdc_error(env, WDC_ERR_INVALID, "cannot preprocess an empty image");

	/* 1. NaN (and infinity) fill, on a copy of the input. */
	out->pixels = wdc_alloc(env, n * sizeof(float));
	if (out->pixels == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory preprocessing an image");
	out->width = in->width;
	out->height = in->height;
	memcpy(out->pixels, in->pixels, n * sizeof(float));
	p = out->pixels;
	if (pp->nan_fill != WDC_NAN_KEEP && count_nonfinite(p, n) > 0)
	{
		double		fill = pp->nan_value;

		if (pp->nan_fill == WDC_NAN_MEDIAN)
		{
			rc = wdc_percentile(env, p, n, 50.0, &fill);
			if (rc != WDC_OK)
			{
				wdc_image_free(env, out);
				return rc;
			}
		}
		else if (pp->nan_fill == WDC_NAN_MIN)
		{
			double		hi;

			if (!finite_range(p, n, &fill, &hi))
				fill = NAN;
		}
		if (isnan(fill))
			fill = 0.0;			/* no finite pixel at all */
		/* infinities (saturated or overflowed pixels) are filled like NaN */
		for (size_t i = 0; i < n; i++)
			if (!isfinite(p[i]))
				p[i] = (float) fill;
	}

	/* 2. Resize. */
	if (pp->out_width > 0 &&
		(pp->out_width != out->width || pp->out_height != out->height))
	{
		WdcImage	resized;

		rc = wdc_image_resize(env, out, pp->out_width, pp->out_height,
							  pp->resize, &resized);
		wdc_image_free(env, out);
		if (rc != WDC_OK)
			return rc;
		*out = resized;
		p = out->pixels;
		n = out->width * out->height;
	}

	/* 3. Clip to percentiles. */
	if (pp->clip_low > 0.0 || pp->clip_high < 100.0)
	{
		float	   *finite;
		size_t		m,
					rank;

		rc = copy_finite(env, p, n, &finite, &m);
		if (rc != WDC_OK)
		{
			wdc_image_free(env, out);
			return rc;
		}
		if (m > 0)
		{
			/*
			 * The low percentile's selection leaves every higher rank after
			 * it, so the high one searches only that part.
			 */
			float		lo = (float) percentile_select(finite, m, 0,
													   pp->clip_low, &rank);
			float		hi = (float) percentile_select(finite, m, rank,
													   pp->clip_high, &rank);

			for (size_t i = 0; i < n; i++)
			{
				if (p[i] < lo)
					p[i] = lo;
				else if (p[i] > hi)
					p[i] = hi;
			}
		}
		wdc_free(env, finite);
	}

	/* 4. Stretch. */
	if (pp->stretch == WDC_STRETCH_ASINH)
	{
		for (size_t i = 0; i < n; i++)
			p[i] = (float) asinh((double) p[i] / pp->stretch_scale);
	}
	else if (pp->stretch == WDC_STRETCH_LOG)
	{
		double		lo = 0,
					hi = 0;

		if (finite_range(p, n, &lo, &hi))
			for (size_t i = 0; i < n; i++)
				p[i] = (float) log1p(((double) p[i] - lo) / pp->stretch_scale);
	}

	/* 5. Normalise. */
	if (pp->normalize == WDC_NORMALIZE_MINMAX)
	{
		double		lo = 0,
					hi = 0;

		if (finite_range(p, n, &lo, &hi))
			for (size_t i = 0; i < n; i++)
				p[i] = hi > lo ? (float) (((double) p[i] - lo) / (hi - lo)) :
					(isnan(p[i]) ? p[i] : 0.0f);
	}
	else if (pp->normalize == WDC_NORMALIZE_ZSCORE)
	{
		double		sum = 0,
					sq = 0,
					mean,
					sd;
		size_t		m = 0;

		for (size_t i = 0; i < n; i++)
			if (isfinite(p[i]))
			{
				sum += p[i];
				m++;
			}
		mean = m ? sum / (double) m : 0.0;
		for (size_t i = 0; i < n; i++)
			if (isfinite(p[i]))
				sq += ((double) p[i] - mean) * ((double) p[i] - mean);
		sd = m ? sqrt(sq / (double) m) : 0.0;
		for (size_t i = 0; i < n; i++)
			p[i] = sd > 0 ? (float) (((double) p[i] - mean) / sd) :
				(isnan(p[i]) ? p[i] : 0.0f);
	}
	return WDC_OK;
}
