/*
 * test_preprocess.c
 *	  Unit tests of preprocessing (src/fits/preprocess.c) and PNG rendering
 *	  (src/fits/png_encode.c) on real images from data/real, checked against
 *	  PyTorch, numpy and astropy (preprocess_reference.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "fits/fits.h"
#include "fits/png_encode.h"
#include "fits/preprocess.h"
#include "wdc_test.h"
#include "preprocess_reference.h"

static WdcEnv env;
static WdcError err;

static const char *
label(const char *prefix, const char *name)
{
	static char buf[256];

	snprintf(buf, sizeof(buf), "%s %s", prefix, name);
	return buf;
}

/* Read the image in HDU hdu of data/real/name; false when missing. */
static bool
load_real(const char *name, int hdu, WdcImage *im)
{
	char		path[256];
	WdcFitsFile *f;
	const WdcFitsLimits limits = {0, 0};
	bool		ok;

	snprintf(path, sizeof(path), "data/real/%s", name);
	if (wdc_fits_open_path(&env, path, &limits, &f) != WDC_OK)
		return false;
	ok = wdc_fits_select_image(&env, f, hdu, NULL) == WDC_OK &&
		wdc_fits_read_image(&env, f, 0, im) == WDC_OK;
	wdc_fits_close(&env, f);
	return ok;
}

static float
pixel(const WdcImage *im, int x, int y)
{
	return im->pixels[(size_t) (y - 1) * im->width + (size_t) (x - 1)];
}

static double
image_sum(const WdcImage *im)
{
	double		s = 0;

	for (size_t i = 0; i < im->width * im->height; i++)
		s += im->pixels[i];
	return s;
}

static void
test_resize(void)
{
	for (size_t i = 0; i < sizeof(ref_resize) / sizeof(ref_resize[0]); i++)
	{
		const RefResize *r = &ref_resize[i];
		WdcImage	in,
					out;
		bool		ok = true;
		char		why[256] = "";
		WdcStatus	rc;

		if (!load_real(r->name, r->hdu, &in))
		{
			wdc_test_case(label("resize source", r->name), 0, "run scripts/fetch-data");
			continue;
		}
		rc = wdc_image_resize(&env, &in, (size_t) r->out_w, (size_t) r->out_h,
							  r->area ? WDC_RESIZE_AREA : WDC_RESIZE_BILINEAR, &out);
		if (rc != WDC_OK)
		{
			wdc_test_case(label("resize", r->name), 0, err.message);
			wdc_image_free(&env, &in);
			continue;
		}
		for (int s = 0; s < r->nsample; s++)
			if (!wdc_close(pixel(&out, r->sx[s], r->sy[s]), r->sv[s], 1e-5, 0))
			{
				ok = false;
				snprintf(why, sizeof(why), "(%d,%d) = %.9g want %.9g", r->sx[s],
						 r->sy[s], pixel(&out, r->sx[s], r->sy[s]), r->sv[s]);
			}
		snprintf(why + strlen(why), sizeof(why) - strlen(why), " %dx%d %s",
				 r->out_w, r->out_h, r->area ? "area" : "bilinear");
		wdc_test_case(label("resize samples match torch", r->name), ok, why);
		snprintf(why, sizeof(why), "sum %.9g want %.9g", image_sum(&out), r->sum);
		wdc_test_case(label("resize sum matches torch", r->name),
					  wdc_close(image_sum(&out), r->sum, 1e-5, 0), why);
		wdc_image_free(&env, &out);
		wdc_image_free(&env, &in);
	}

	/* Area averaging keeps the mean for any ratio, fractional included. */
	{
		WdcImage	in,
					out;

		if (load_real("magpis_sin.fits", 0, &in) &&
			wdc_image_resize(&env, &in, 64, 47, WDC_RESIZE_AREA, &out) == WDC_OK)
		{
			double		mean_in = image_sum(&in) / (300.0 * 300.0);
			double		mean_out = image_sum(&out) / (64.0 * 47.0);

			wdc_test_case("area resize keeps the mean",
						  wdc_close(mean_out, mean_in, 1e-5, 0), "");
			wdc_image_free(&env, &out);
			wdc_image_free(&env, &in);
		}
		else
			wdc_test_case("area resize keeps the mean", 0, err.message);
	}
}

static void
test_percentiles_and_zscale(void)
{
	for (size_t i = 0; i < sizeof(ref_stats) / sizeof(ref_stats[0]); i++)
	{
		const RefStats *r = &ref_stats[i];
		WdcImage	im;
		WdcPngOptions opts;
		double		lo,
					hi;
		bool		ok = true;
		char		why[256] = "";

		if (!load_real(r->name, r->hdu, &im))
		{
			wdc_test_case(label("stats source", r->name), 0, "run scripts/fetch-data");
			continue;
		}
		for (int k = 0; k < 5; k++)
		{
			double		got;

			wdc_percentile(&env, im.pixels, im.width * im.height, ref_percent[k], &got);
			if (!wdc_close(got, r->p[k], 1e-6, 1e-9))
			{
				ok = false;
				snprintf(why, sizeof(why), "p%g = %.9g want %.9g", ref_percent[k],
						 got, r->p[k]);
			}
		}
		wdc_test_case(label("percentiles match numpy", r->name), ok, why);

		/*
		 * zscale samples pixels differently from astropy, so the limits
		 * agree only to a fraction of the astropy range.
		 */
		wdc_png_init(&opts);
		wdc_png_set(&env, &opts, "limits", "zscale");
		wdc_png_limits(&env, &opts, &im, &lo, &hi);
		snprintf(why, sizeof(why), "[%.6g, %.6g] want [%.6g, %.6g]", lo, hi,
				 r->zlo, r->zhi);
		wdc_test_case(label("zscale near astropy", r->name),
					  fabs(lo - r->zlo) < 0.1 * (r->zhi - r->zlo) &&
					  fabs(hi - r->zhi) < 0.1 * (r->zhi - r->zlo), why);
		wdc_image_free(&env, &im);
	}
}

static int
cmp_float_ref(const void *a, const void *b)
{
	float		x = *(const float *) a;
	float		y = *(const float *) b;

	return (x > y) - (x < y);
}

/* Percentile by a full sort of the finite values, numpy's linear method. */
static double
sorted_percentile(const float *data, size_t n, double p)
{
	float	   *s = malloc((n ? n : 1) * sizeof(float));
	size_t		m = 0;
	double		pos,
				t,
				v;
	size_t		lo,
				hi;

	for (size_t i = 0; i < n; i++)
		if (isfinite(data[i]))
			s[m++] = data[i];
	if (m == 0)
	{
		free(s);
		return NAN;
	}
	qsort(s, m, sizeof(float), cmp_float_ref);
	pos = p / 100.0 * (double) (m - 1);
	lo = (size_t) floor(pos);
	hi = lo + 1 < m ? lo + 1 : lo;
	t = pos - (double) lo;
	v = (double) s[lo] + t * ((double) s[hi] - (double) s[lo]);
	free(s);
	return v;
}

/*
 * Percentiles come from a selection, not a sort.  They must equal the
 * sorted values exactly on orders that defeat naive pivots (sorted,
 * reversed, constant, organ pipe, few distinct values) and with NaN and
 * infinite pixels.  The two-sided clip must match a clip by sorting.
 */
static void
test_percentile_selection(const char *path)
{
	static const size_t sizes[] = {1, 2, 3, 16, 17, 100, 1024, 1025, 2055, 4099};
	/* 2.2 and 97.8 of 1,024 values sit on the edge-selection limit */
	static const double ps[] = {0, 0.5, 1, 2.2, 25, 50, 75, 97.8, 99, 99.5, 100};
	const char *const patterns[] = {"random", "few values", "sorted", "reversed",
	"constant", "organ pipe", "sawtooth", "nan and inf"};
	unsigned	seed = 12345;
	int			bad = 0,
				checked = 0,
				clip_bad = 0,
				clips = 0;
	char		why[256] = "",
				name[160];

	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
		for (int pat = 0; pat < 8; pat++)
		{
			size_t		n = sizes[si];
			float	   *a = malloc(n * sizeof(float));

			for (size_t i = 0; i < n; i++)
			{
				seed = seed * 1103515245u + 12345u;
				switch (pat)
				{
					case 0:
						a[i] = (float) (seed >> 8) / 16777216.0f - 0.5f;
						break;
					case 1:
						a[i] = (float) ((seed >> 16) % 4);
						break;
					case 2:
						a[i] = (float) i;
						break;
					case 3:
						a[i] = (float) (n - i);
						break;
					case 4:
						a[i] = 7.0f;
						break;
					case 5:
						a[i] = (float) (i < n / 2 ? i : n - i);
						break;
					case 6:
						a[i] = (float) (i % 10);
						break;
					default:
						a[i] = (seed >> 16) % 5 == 0 ? NAN :
							(seed >> 16) % 7 == 0 ? INFINITY :
							(float) ((seed >> 8) % 1000);
				}
			}
			for (size_t pi = 0; pi < sizeof(ps) / sizeof(ps[0]); pi++)
			{
				double		got,
							want = sorted_percentile(a, n, ps[pi]);

				wdc_percentile(&env, a, n, ps[pi], &got);
				checked++;
				if (!(got == want || (isnan(got) && isnan(want))))
				{
					bad++;
					snprintf(why, sizeof(why), "%s n=%zu p%g: %.9g want %.9g",
							 patterns[pat], n, ps[pi], got, want);
				}
			}
			for (size_t pi = 0; pi + 1 < sizeof(ps) / sizeof(ps[0]); pi++)
			{
				WdcPreprocess pp;
				WdcImage	in = {.width = n, .height = 1, .pixels = a},
							out;
				char		low[32],
							high[32];
				double		lo = sorted_percentile(a, n, ps[pi]),
							hi = sorted_percentile(a, n, ps[pi + 1]);

				wdc_preprocess_init(&pp);
				snprintf(low, sizeof(low), "%g", ps[pi]);
				snprintf(high, sizeof(high), "%g", ps[pi + 1]);
				if (wdc_preprocess_set(&env, &pp, "clip_low", low) != WDC_OK ||
					wdc_preprocess_set(&env, &pp, "clip_high", high) != WDC_OK ||
					wdc_preprocess_run(&env, &pp, &in, &out) != WDC_OK)
				{
					clip_bad++;
					snprintf(why, sizeof(why), "clip failed: %.200s", err.message);
					continue;
				}
				clips++;
				for (size_t i = 0; i < n; i++)
				{
					float		want = isnan(a[i]) ? a[i] :
						a[i] < (float) lo ? (float) lo :
						a[i] > (float) hi ? (float) hi : a[i];

					if (!(out.pixels[i] == want ||
						  (isnan(want) && isnan(out.pixels[i]))))
					{
						clip_bad++;
						snprintf(why, sizeof(why), "clip %s n=%zu [%g, %g] pixel %zu: %g want %g",
								 patterns[pat], n, ps[pi], ps[pi + 1], i,
								 out.pixels[i], want);
						break;
					}
				}
				wdc_image_free(&env, &out);
			}
			free(a);
		}
	snprintf(name, sizeof(name),
			 "percentile by selection equals the sorted value (880 cases, %s)", path);
	wdc_test_case(name, bad == 0 && checked == 880, why);
	snprintf(name, sizeof(name),
			 "two-sided clip by selection equals a clip by sorting (800 cases, %s)", path);
	wdc_test_case(name, clip_bad == 0 && clips == 800, why);
}

/*
 * Percentiles near either end come from lane-wise vector lists on CPUs
 * with AVX2 or AVX-512F, and from block minima and maxima elsewhere.  Check
 * every path this CPU can run.
 */
static void
test_percentile_paths(void)
{
	static const char *const paths[] = {"scalar edges", "AVX2 lanes", "AVX-512 lanes"};
	int			have[3] = {1, 0, 0};

#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	have[1] = __builtin_cpu_supports("avx2");
	have[2] = __builtin_cpu_supports("avx512f");
#endif
	for (int level = 0; level < 3; level++)
	{
		char		name[160];

		if (!have[level])
		{
			snprintf(name, sizeof(name),
					 "percentile selection, %s: not checked, this CPU lacks them", paths[level]);
			wdc_test_case(name, 1, NULL);
			continue;
		}
		wdc_preprocess_simd = level;
		test_percentile_selection(paths[level]);
	}
	wdc_preprocess_simd = -1;
}

/* The NaN fill also replaces infinities, from the finite pixels only. */
static void
test_fill_infinities(void)
{
	float		px[5] = {1.0f, INFINITY, 2.0f, -INFINITY, 4.0f};
	WdcImage	in = {.width = 5, .height = 1, .pixels = px},
				out;
	WdcPreprocess pp;
	char		why[128] = "";
	int			ok;

	wdc_preprocess_init(&pp);
	ok = wdc_preprocess_set(&env, &pp, "nan_fill", "median") == WDC_OK &&
		wdc_preprocess_run(&env, &pp, &in, &out) == WDC_OK;
	if (ok)
	{
		snprintf(why, sizeof(why), "got [%g, %g, %g, %g, %g]", out.pixels[0],
				 out.pixels[1], out.pixels[2], out.pixels[3], out.pixels[4]);
		ok = out.pixels[0] == 1.0f && out.pixels[1] == 2.0f &&
			out.pixels[2] == 2.0f && out.pixels[3] == 2.0f &&
			out.pixels[4] == 4.0f;
		wdc_image_free(&env, &out);
	}
	wdc_test_case("median fill replaces infinities", ok, why);
}

static void
test_preprocess_steps(void)
{
	WdcImage	in,
				out;
	WdcPreprocess pp;
	size_t		n;
	double		sum = 0,
				sq = 0,
				lo = INFINITY,
				hi = -INFINITY;
	size_t		nans = 0;
	WdcStatus	rc;

	if (!load_real("spitzer_sip.fits", 0, &in))
	{
		wdc_test_case("preprocess source", 0, "run scripts/fetch-data");
		return;
	}
	n = in.width * in.height;

	/* NaN fill with the median, asinh, z-score. */
	wdc_preprocess_init(&pp);
	wdc_preprocess_set(&env, &pp, "nan_fill", "median");
	wdc_preprocess_set(&env, &pp, "stretch", "asinh");
	wdc_preprocess_set(&env, &pp, "stretch_scale", "100");
	wdc_preprocess_set(&env, &pp, "normalize", "zscore");
	rc = wdc_preprocess_run(&env, &pp, &in, &out);
	wdc_test_case("preprocess zscore runs", rc == WDC_OK, err.message);
	for (size_t i = 0; rc == WDC_OK && i < n; i++)
	{
		nans += isnan(out.pixels[i]);
		sum += out.pixels[i];
		sq += (double) out.pixels[i] * out.pixels[i];
	}
	wdc_test_case("preprocess fills NaN", rc == WDC_OK && nans == 0, "");
	wdc_test_case("zscore mean 0", fabs(sum / (double) n) < 1e-5, "");
	wdc_test_case("zscore std 1", fabs(sqrt(sq / (double) n) - 1) < 1e-4, "");
	if (rc == WDC_OK)
		wdc_image_free(&env, &out);

	/* Clip 1-99 percent, log stretch, min-max, resize to 32 x 32 by area. */
	wdc_preprocess_init(&pp);
	wdc_preprocess_set(&env, &pp, "nan_fill", "0");
	wdc_preprocess_set(&env, &pp, "clip_low", "1");
	wdc_preprocess_set(&env, &pp, "clip_high", "99");
	wdc_preprocess_set(&env, &pp, "stretch", "log");
	wdc_preprocess_set(&env, &pp, "normalize", "minmax");
	wdc_preprocess_set(&env, &pp, "width", "32");
	wdc_preprocess_set(&env, &pp, "height", "32");
	wdc_preprocess_set(&env, &pp, "resize", "area");
	rc = wdc_preprocess_run(&env, &pp, &in, &out);
	for (size_t i = 0; rc == WDC_OK && i < 32 * 32; i++)
	{
		lo = fmin(lo, out.pixels[i]);
		hi = fmax(hi, out.pixels[i]);
	}
	wdc_test_case("minmax spans 0 to 1",
				  rc == WDC_OK && out.width == 32 && out.height == 32 &&
				  lo == 0.0 && hi == 1.0, err.message);
	if (rc == WDC_OK)
		wdc_image_free(&env, &out);

	/* Explicit asinh value at one pixel. */
	wdc_preprocess_init(&pp);
	wdc_preprocess_set(&env, &pp, "stretch", "asinh");
	wdc_preprocess_set(&env, &pp, "stretch_scale", "2");
	rc = wdc_preprocess_run(&env, &pp, &in, &out);
	wdc_test_case("asinh value",
				  rc == WDC_OK &&
				  wdc_close(pixel(&out, 64, 64), asinh(pixel(&in, 64, 64) / 2.0), 1e-6, 0),
				  "");
	if (rc == WDC_OK)
		wdc_image_free(&env, &out);

	/* Option errors. */
	wdc_preprocess_init(&pp);
	wdc_test_case("unknown option rejected",
				  wdc_preprocess_set(&env, &pp, "gamma", "2") == WDC_ERR_INVALID, err.message);
	wdc_test_case("bad stretch rejected",
				  wdc_preprocess_set(&env, &pp, "stretch", "cubic") == WDC_ERR_INVALID, "");
	wdc_test_case("percentile over 100 rejected",
				  wdc_preprocess_set(&env, &pp, "clip_high", "100.5") == WDC_ERR_INVALID, "");
	wdc_test_case("percentile 100 accepted",
				  wdc_preprocess_set(&env, &pp, "clip_high", "100") == WDC_OK, "");
	wdc_test_case("zero scale rejected",
				  wdc_preprocess_set(&env, &pp, "stretch_scale", "0") == WDC_ERR_INVALID, "");
	wdc_test_case("size 65537 rejected",
				  wdc_preprocess_set(&env, &pp, "width", "65537") == WDC_ERR_INVALID, "");
	wdc_preprocess_set(&env, &pp, "clip_low", "60");
	wdc_preprocess_set(&env, &pp, "clip_high", "40");
	wdc_test_case("crossed clip rejected",
				  wdc_preprocess_run(&env, &pp, &in, &out) == WDC_ERR_INVALID, err.message);
	wdc_preprocess_init(&pp);
	wdc_preprocess_set(&env, &pp, "width", "32");
	wdc_test_case("width without height rejected",
				  wdc_preprocess_run(&env, &pp, &in, &out) == WDC_ERR_INVALID, err.message);
	wdc_image_free(&env, &in);
}

/* Decode a PNG to 8-bit grey or grey+alpha with libpng's simplified API. */
static unsigned char *
decode_png(const unsigned char *data, size_t len, int alpha, png_uint_32 *w,
		   png_uint_32 *h)
{
	png_image	image;
	unsigned char *buf;

	memset(&image, 0, sizeof(image));
	image.version = PNG_IMAGE_VERSION;
	if (!png_image_begin_read_from_memory(&image, data, len))
		return NULL;
	image.format = alpha ? PNG_FORMAT_GA : PNG_FORMAT_GRAY;
	buf = malloc(PNG_IMAGE_SIZE(image));
	if (!png_image_finish_read(&image, NULL, buf, 0, NULL))
	{
		free(buf);
		return NULL;
	}
	*w = image.width;
	*h = image.height;
	return buf;
}

static void
test_png(void)
{
	float		px[6] = {0, 1, 2, 3, NAN, 5};	/* 3 x 2, row 1 = 0 1 2 */
	WdcImage	im = {3, 2, px};
	WdcPngOptions opts;
	unsigned char *png;
	unsigned char *raw;
	size_t		len;
	png_uint_32 w,
				h;
	WdcStatus	rc;

	/* Linear min-max, origin lower: PNG top row is FITS row 2. */
	wdc_png_init(&opts);
	wdc_png_set(&env, &opts, "nan", "128");
	rc = wdc_png_encode(&env, &opts, &im, &png, &len);
	raw = rc == WDC_OK ? decode_png(png, len, 0, &w, &h) : NULL;
	wdc_test_case("png decodes", raw != NULL && w == 3 && h == 2, err.message);
	if (raw)
	{
		wdc_test_case("png top row is last FITS row",
					  raw[0] == 153 && raw[1] == 128 && raw[2] == 255, "");
		wdc_test_case("png bottom row is first FITS row",
					  raw[3] == 0 && raw[4] == 51 && raw[5] == 102, "");
		free(raw);
	}
	wdc_free(&env, png);

	/* Origin upper, scale 2, transparent NaN. */
	wdc_png_set(&env, &opts, "origin", "upper");
	wdc_png_set(&env, &opts, "scale", "2");
	wdc_png_set(&env, &opts, "nan", "transparent");
	rc = wdc_png_encode(&env, &opts, &im, &png, &len);
	raw = rc == WDC_OK ? decode_png(png, len, 1, &w, &h) : NULL;
	wdc_test_case("png scaled size", raw != NULL && w == 6 && h == 4, err.message);
	if (raw)
	{
		/* Row 3 of the PNG is FITS row 2: 3 3 NaN NaN 5 5. */
		const unsigned char *row = raw + 2 * 6 * 2;

		wdc_test_case("png upper origin", raw[0] == 0 && row[0] == 153, "");
		wdc_test_case("png NaN transparent", row[2 * 2 + 1] == 0 && row[1] == 255, "");
		free(raw);
	}
	wdc_free(&env, png);

	/* Explicit limits with asinh. */
	wdc_png_init(&opts);
	wdc_png_set(&env, &opts, "min", "1");
	wdc_png_set(&env, &opts, "max", "3");
	wdc_png_set(&env, &opts, "stretch", "asinh");
	rc = wdc_png_encode(&env, &opts, &im, &png, &len);
	raw = rc == WDC_OK ? decode_png(png, len, 0, &w, &h) : NULL;
	if (raw)
	{
		/* FITS (2, 1) = 1 -> 0; (3, 1) = 2 -> asinh(5) / asinh(10) of 255. */
		int			want = (int) lround(asinh(0.5 / 0.1) / asinh(1 / 0.1) * 255);

		wdc_test_case("png asinh levels", raw[3 + 1] == 0 && raw[3 + 2] == want &&
					  raw[0] == 255, "");
		free(raw);
	}
	else
		wdc_test_case("png asinh levels", 0, err.message);
	wdc_free(&env, png);

	/* All-NaN image renders (limits fall back to [0, 1]). */
	{
		float		nan4[4] = {NAN, NAN, NAN, NAN};
		WdcImage	blank = {2, 2, nan4};

		wdc_png_init(&opts);
		rc = wdc_png_encode(&env, &opts, &blank, &png, &len);
		wdc_test_case("png all NaN", rc == WDC_OK, err.message);
		if (rc == WDC_OK)
			wdc_free(&env, png);
	}

	wdc_png_init(&opts);
	wdc_test_case("png bad option", wdc_png_set(&env, &opts, "colour", "red") == WDC_ERR_INVALID, "");
	wdc_test_case("png scale 17 rejected", wdc_png_set(&env, &opts, "scale", "17") == WDC_ERR_INVALID, "");
	wdc_test_case("png scale 16 accepted", wdc_png_set(&env, &opts, "scale", "16") == WDC_OK, "");
	wdc_test_case("png nan 256 rejected", wdc_png_set(&env, &opts, "nan", "256") == WDC_ERR_INVALID, "");

	/* A real cutout with zscale. */
	{
		WdcImage	real;

		wdc_png_init(&opts);
		wdc_png_set(&env, &opts, "limits", "zscale");
		if (load_real("dss_crab.fits", 0, &real) &&
			wdc_png_encode(&env, &opts, &real, &png, &len) == WDC_OK)
		{
			raw = decode_png(png, len, 0, &w, &h);
			wdc_test_case("png real image", raw != NULL && w == 177 && h == 177, "");
			free(raw);
			wdc_free(&env, png);
			wdc_image_free(&env, &real);
		}
		else
			wdc_test_case("png real image", 0, err.message);
	}
}

int
main(void)
{
	wdc_env_init_default(&env, &err);
	test_resize();
	test_percentiles_and_zscale();
	test_percentile_paths();
	test_fill_infinities();
	test_preprocess_steps();
	test_png();
	return wdc_test_summary();
}
