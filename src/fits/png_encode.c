/*
 * png_encode.c
 *	  Display limits, stretches and PNG encoding with libpng (png_encode.h).
 *
 * libpng reports errors by longjmp to the setjmp in wdc_png_encode; every
 * buffer it may leave behind is reachable from the volatile locals there
 * and freed on that path.
 */
#include "fits/png_encode.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "fits/preprocess.h"

/* zscale parameters, as IRAF's display task sets them by default. */
#define ZSCALE_SAMPLES 1000
#define ZSCALE_CONTRAST 0.25
#define ZSCALE_REJECT 2.5		/* reject residuals beyond this many sigma */
#define ZSCALE_ITERATIONS 5

void
wdc_png_init(WdcPngOptions *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->stretch = WDC_PNG_LINEAR;
	opts->asinh_a = 0.1;
	opts->limits = WDC_PNG_MINMAX;
	opts->lower = 0.5;
	opts->upper = 99.5;
	opts->nan_grey = 0;
	opts->origin_lower = true;
	opts->scale = 1;
}

static bool
parse_number(const char *text, double *out)
{
	char	   *end;

	errno = 0;
	*out = strtod(text, &end);
	return end != text && *end == '\0' && errno == 0 && isfinite(*out);
}

static WdcStatus
bad_value(const WdcEnv *env, const char *name, const char *value,
		  const char *expected)
{
	wdc_error(env, WDC_ERR_INVALID, "invalid value \"%s\" for PNG option \"%s\"",
			  value, name);
	return wdc_error_hint(env, "Expected %s.", expected);
}

WdcStatus
wdc_png_set(const WdcEnv *env, WdcPngOptions *opts, const char *name,
			const char *value)
{
	double		v;

	if (strcmp(name, "stretch") == 0)
	{
		if (strcmp(value, "linear") == 0)
			opts->stretch = WDC_PNG_LINEAR;
		else if (strcmp(value, "sqrt") == 0)
			opts->stretch = WDC_PNG_SQRT;
		else if (strcmp(value, "asinh") == 0)
			opts->stretch = WDC_PNG_ASINH;
		else if (strcmp(value, "log") == 0)
			opts->stretch = WDC_PNG_LOG;
		else
			return bad_value(env, name, value, "\"linear\", \"sqrt\", \"asinh\" or \"log\"");
	}
	else if (strcmp(name, "asinh_a") == 0)
	{
		if (!parse_number(value, &v) || v <= 0)
			return bad_value(env, name, value, "a positive number");
		opts->asinh_a = v;
	}
	else if (strcmp(name, "limits") == 0)
	{
		if (strcmp(value, "minmax") == 0)
			opts->limits = WDC_PNG_MINMAX;
		else if (strcmp(value, "percentile") == 0)
			opts->limits = WDC_PNG_PERCENTILE;
		else if (strcmp(value, "zscale") == 0)
			opts->limits = WDC_PNG_ZSCALE;
		else
			return bad_value(env, name, value, "\"minmax\", \"percentile\" or \"zscale\"");
	}
	else if (strcmp(name, "lower") == 0 || strcmp(name, "upper") == 0)
	{
		if (!parse_number(value, &v) || v < 0 || v > 100)
			return bad_value(env, name, value, "a percentile from 0 to 100");
		if (name[0] == 'l')
			opts->lower = v;
		else
			opts->upper = v;
		opts->limits = WDC_PNG_PERCENTILE;
	}
	else if (strcmp(name, "min") == 0 || strcmp(name, "max") == 0)
	{
		if (!parse_number(value, &v))
			return bad_value(env, name, value, "a finite number");
		if (name[1] == 'i')
		{
			opts->has_min = true;
			opts->min = v;
		}
		else
		{
			opts->has_max = true;
			opts->max = v;
		}
	}
	else if (strcmp(name, "nan") == 0)
	{
		if (strcmp(value, "transparent") == 0)
			opts->nan_transparent = true;
		else if (parse_number(value, &v) && v >= 0 && v <= 255 && v == floor(v))
		{
			opts->nan_transparent = false;
			opts->nan_grey = (int) v;
		}
		else
			return bad_value(env, name, value, "a grey level from 0 to 255 or \"transparent\"");
	}
	else if (strcmp(name, "origin") == 0)
	{
		if (strcmp(value, "lower") == 0)
			opts->origin_lower = true;
		else if (strcmp(value, "upper") == 0)
			opts->origin_lower = false;
		else
			return bad_value(env, name, value, "\"lower\" or \"upper\"");
	}
	else if (strcmp(name, "scale") == 0)
	{
		if (!parse_number(value, &v) || v < 1 || v > 16 || v != floor(v))
			return bad_value(env, name, value, "an integer from 1 to 16");
		opts->scale = (int) v;
	}
	else
	{
		wdc_error(env, WDC_ERR_INVALID, "unknown PNG option \"%s\"", name);
		return wdc_error_hint(env, "Valid options are stretch, asinh_a, limits, "
							  "lower, upper, min, max, nan, origin and scale.");
	}
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
 * Compute zscale limits.  Up to ZSCALE_SAMPLES finite pixels, taken at a
 * regular stride, are sorted, and a line of value against rank is fitted
 * with iterative sigma rejection.  The limits span the sample's ranks from
 * the median with the fitted slope divided by the contrast, clamped to the
 * sample's extremes.
 */
static WdcStatus
zscale_limits(const WdcEnv *env, const WdcImage *image, double *lo, double *hi)
{
	size_t		n = image->width * image->height;
	size_t		finite = 0;
	size_t		stride,
				m = 0;
	float	   *s;
	bool	   *good;
	double		center,
				median,
				slope = 0,
				intercept = 0;
	size_t		ngood,
				minpix;

	for (size_t i = 0; i < n; i++)
		finite += isfinite(image->pixels[i]) ? 1 : 0;
	if (finite == 0)
	{
		*lo = 0;
		*hi = 1;
		return WDC_OK;
	}
	stride = finite / ZSCALE_SAMPLES;
	if (stride < 1)
		stride = 1;
	s = wdc_alloc(env, (finite / stride + 1) * sizeof(float));
	good = wdc_alloc(env, (finite / stride + 1) * sizeof(bool));
	if (!s || !good)
	{
		wdc_free(env, s);
		wdc_free(env, good);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory computing zscale limits");
	}
	for (size_t i = 0, k = 0; i < n; i++)
	{
		if (!isfinite(image->pixels[i]))
			continue;
		if (k++ % stride == 0)
			s[m++] = image->pixels[i];
	}
	qsort(s, m, sizeof(float), compare_float);
	center = (double) (m - 1) / 2.0;
	median = m % 2 ? s[m / 2] : 0.5 * ((double) s[m / 2 - 1] + (double) s[m / 2]);
	minpix = m / 2 > 5 ? m / 2 : 5;

	/* Least-squares line through (rank - center, value), rejecting outliers. */
	for (size_t i = 0; i < m; i++)
		good[i] = true;
	ngood = m;
	for (int iter = 0; iter < ZSCALE_ITERATIONS && ngood >= minpix; iter++)
	{
		double		sx = 0,
					sy = 0,
					sxx = 0,
					sxy = 0,
					ss = 0,
					sigma,
					denom;
		size_t		kept = 0;

		for (size_t i = 0; i < m; i++)
			if (good[i])
			{
				double		x = (double) i - center;

				sx += x;
				sy += s[i];
				sxx += x * x;
				sxy += x * s[i];
			}
		denom = (double) ngood * sxx - sx * sx;
		if (denom <= 0)
			break;
		slope = ((double) ngood * sxy - sx * sy) / denom;
		intercept = (sy - slope * sx) / (double) ngood;
		for (size_t i = 0; i < m; i++)
			if (good[i])
			{
				double		r = s[i] - (intercept + slope * ((double) i - center));

				ss += r * r;
			}
		sigma = sqrt(ss / (double) ngood);
		for (size_t i = 0; i < m; i++)
		{
			double		r = s[i] - (intercept + slope * ((double) i - center));

			good[i] = fabs(r) <= ZSCALE_REJECT * sigma;
			kept += good[i] ? 1 : 0;
		}
		if (kept == ngood)
			break;
		ngood = kept;
	}

	if (ngood < minpix)
	{
		*lo = s[0];
		*hi = s[m - 1];
	}
	else
	{
		double		zslope = slope / ZSCALE_CONTRAST;

		*lo = fmax(s[0], median - center * zslope);
		*hi = fmin(s[m - 1], median + ((double) m - 1 - center) * zslope);
	}
	wdc_free(env, s);
	wdc_free(env, good);
	return WDC_OK;
}

WdcStatus
wdc_png_limits(const WdcEnv *env, const WdcPngOptions *opts,
			   const WdcImage *image, double *lo, double *hi)
{
	size_t		n = image->width * image->height;
	WdcStatus	rc = WDC_OK;

	*lo = 0;
	*hi = 1;
	switch (opts->limits)
	{
		case WDC_PNG_MINMAX:
			{
				bool		any = false;

				for (size_t i = 0; i < n; i++)
				{
					float		v = image->pixels[i];

					if (!isfinite(v))
						continue;
					if (!any || v < *lo)
						*lo = v;
					if (!any || v > *hi)
						*hi = v;
					any = true;
				}
				if (!any)
				{
					*lo = 0;
					*hi = 1;
				}
			}
			break;
		case WDC_PNG_PERCENTILE:
			if (opts->lower >= opts->upper)
			{
				wdc_error(env, WDC_ERR_INVALID,
						  "lower percentile %g must be below upper percentile %g",
						  opts->lower, opts->upper);
				return WDC_ERR_INVALID;
			}
			rc = wdc_percentile(env, image->pixels, n, opts->lower, lo);
			if (rc == WDC_OK)
				rc = wdc_percentile(env, image->pixels, n, opts->upper, hi);
			if (rc == WDC_OK && (isnan(*lo) || isnan(*hi)))
			{
				*lo = 0;
				*hi = 1;
			}
			break;
		case WDC_PNG_ZSCALE:
			rc = zscale_limits(env, image, lo, hi);
			break;
	}
	if (opts->has_min)
		*lo = opts->min;
	if (opts->has_max)
		*hi = opts->max;
	return rc;
}

/* Map a pixel to a grey level 0-255 under the limits and stretch. */
static unsigned char
grey_level(const WdcPngOptions *opts, double x, double lo, double hi)
{
	double		v = hi > lo ? (x - lo) / (hi - lo) : (x >= hi ? 1.0 : 0.0);

	if (v < 0)
		v = 0;
	if (v > 1)
		v = 1;
	switch (opts->stretch)
	{
		case WDC_PNG_LINEAR:
			break;
		case WDC_PNG_SQRT:
			v = sqrt(v);
			break;
		case WDC_PNG_ASINH:
			v = asinh(v / opts->asinh_a) / asinh(1.0 / opts->asinh_a);
			break;
		case WDC_PNG_LOG:
			v = log1p(1000.0 * v) / log(1001.0);
			break;
	}
	return (unsigned char) lround(v * 255.0);
}

/* Growable PNG output for libpng's write callback. */
typedef struct PngSink
{
	const WdcEnv *env;
	unsigned char *data;
	size_t		len;
	size_t		cap;
} PngSink;

static void
sink_write(png_structp png, png_bytep bytes, png_size_t n)
{
	PngSink    *sink = png_get_io_ptr(png);

	if (sink->len + n > sink->cap)
	{
		size_t		cap = sink->cap ? sink->cap * 2 : 4096;
		unsigned char *grown;

		while (cap < sink->len + n)
			cap *= 2;
		grown = wdc_alloc(sink->env, cap);
		if (grown == NULL)
			png_error(png, "out of memory");
		if (sink->len)
			memcpy(grown, sink->data, sink->len);
		wdc_free(sink->env, sink->data);
		sink->data = grown;
		sink->cap = cap;
	}
	memcpy(sink->data + sink->len, bytes, n);
	sink->len += n;
}

static void
sink_flush(png_structp png)
{
}

/* libpng error handler: keep the message, then unwind to our setjmp. */
static void
png_fail(png_structp png, png_const_charp message)
{
	char	   *keep = png_get_error_ptr(png);

	strncpy(keep, message, 255);
	keep[255] = '\0';
	png_longjmp(png, 1);
}

static void
png_warn(png_structp png, png_const_charp message)
{
}

WdcStatus
wdc_png_encode(const WdcEnv *env, const WdcPngOptions *opts,
			   const WdcImage *image, unsigned char **png_out, size_t *png_len)
{
	size_t		scale = (size_t) opts->scale;
	size_t		channels = opts->nan_transparent ? 2 : 1;
	size_t		width,
				height,
				row_bytes,
				total;
	double		lo,
				hi;
	char		message[256] = "";
	png_structp png = NULL;
	png_infop	info = NULL;
	PngSink		sink = {.env = env};
	unsigned char *volatile pixels = NULL;
	WdcStatus	rc;

	*png_out = NULL;
	*png_len = 0;
	if (image->width == 0 || image->height == 0)
		return wdc_error(env, WDC_ERR_INVALID, "cannot render an empty image");
	if (!wdc_size_mul(image->width, scale, &width) ||
		!wdc_size_mul(image->height, scale, &height) ||
		width > 65535 || height > 65535 ||
		!wdc_size_mul(width, channels, &row_bytes) ||
		!wdc_size_mul(row_bytes, height, &total))
	{
		wdc_error(env, WDC_ERR_LIMIT, "PNG of %zu x %zu pixels is too large",
				  image->width * scale, image->height * scale);
		return wdc_error_hint(env, "PNG output is limited to 65535 pixels per side.");
	}

	/* 1-3. Limits, stretch and grey levels into an 8-bit raster. */
	rc = wdc_png_limits(env, opts, image, &lo, &hi);
	if (rc != WDC_OK)
		return rc;
	pixels = wdc_alloc(env, total);
	if (pixels == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory rendering a PNG");
	for (size_t y = 0; y < height; y++)
	{
		size_t		src_y = y / scale;
		const float *src;
		unsigned char *dst = pixels + y * row_bytes;

		/* PNG rows run top-down; with origin "lower" FITS row 1 is last. */
		if (opts->origin_lower)
			src_y = image->height - 1 - src_y;
		src = image->pixels + src_y * image->width;
		for (size_t x = 0; x < width; x++)
		{
			float		v = src[x / scale];

			if (isnan(v))
			{
				dst[x * channels] = (unsigned char) (opts->nan_transparent ? 0 : opts->nan_grey);
				if (channels == 2)
					dst[x * 2 + 1] = 0;
				continue;
			}
			dst[x * channels] = grey_level(opts, v, lo, hi);
			if (channels == 2)
				dst[x * 2 + 1] = 255;
		}
	}

	/* 4. Encode. */
	png = png_create_write_struct(PNG_LIBPNG_VER_STRING, message, png_fail, png_warn);
	if (png)
		info = png_create_info_struct(png);
	if (png == NULL || info == NULL)
	{
		png_destroy_write_struct(&png, &info);
		wdc_free(env, pixels);
		return wdc_error(env, WDC_ERR_NOMEM, "could not start PNG encoding");
	}
	if (setjmp(png_jmpbuf(png)))
	{
		png_destroy_write_struct(&png, &info);
		wdc_free(env, pixels);
		wdc_free(env, sink.data);
		wdc_error(env, WDC_ERR_INTERNAL, "PNG encoding failed");
		return wdc_error_detail(env, "libpng: %s.", message);
	}
	png_set_write_fn(png, &sink, sink_write, sink_flush);
	png_set_IHDR(png, info, (png_uint_32) width, (png_uint_32) height, 8,
				 channels == 2 ? PNG_COLOR_TYPE_GRAY_ALPHA : PNG_COLOR_TYPE_GRAY,
				 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
				 PNG_FILTER_TYPE_DEFAULT);
	png_write_info(png, info);
	for (size_t y = 0; y < height; y++)
		png_write_row(png, pixels + y * row_bytes);
	png_write_end(png, info);
	png_destroy_write_struct(&png, &info);
	wdc_free(env, pixels);

	*png_out = sink.data;
	*png_len = sink.len;
	return WDC_OK;
}
