/*
 * test_fits.c
 *	  Unit tests of src/fits on real survey files (data/real, fetched by
 *	  scripts/fetch-data) checked against astropy (fits_reference.h), and on
 *	  files built here with cfitsio for the cases no real file covers.
 */
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <fitsio.h>

#include "fits/fits.h"
#include "wdc_test.h"
#include "fits_reference.h"

#define DATA_DIR "data/real/"

static WdcEnv env;
static WdcError err;
static const WdcFitsLimits no_limits = {0, 0};

/* Read a whole file; NULL when missing. */
static unsigned char *
slurp(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	unsigned char *buf;
	long		n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t) n + 1);
	if (fread(buf, 1, (size_t) n, f) != (size_t) n)
	{
		free(buf);
		fclose(f);
		return NULL;
	}
	fclose(f);
	*len = (size_t) n;
	return buf;
}

static unsigned char *
slurp_real(const char *name, size_t *len)
{
	char		path[256];

	snprintf(path, sizeof(path), DATA_DIR "%s", name);
	return slurp(path, len);
}

/* Case name "prefix name" in a static buffer. */
static const char *
label(const char *prefix, const char *name)
{
	static char buf[256];

	snprintf(buf, sizeof(buf), "%s %s", prefix, name);
	return buf;
}

static void
sum_image(const WdcImage *im, double *sum, long *nans)
{
	*sum = 0;
	*nans = 0;
	for (size_t i = 0; i < im->width * im->height; i++)
	{
		if (isnan(im->pixels[i]))
			(*nans)++;
		else
			*sum += im->pixels[i];
	}
}

static float
pixel(const WdcImage *im, int x, int y)
{
	return im->pixels[(size_t) (y - 1) * im->width + (size_t) (x - 1)];
}

/* Open bytes, select an HDU, read a plane; returns the status. */
static WdcStatus
load(const void *data, size_t len, const WdcFitsLimits *limits, int hdu,
	 int64_t plane, WdcImage *im)
{
	WdcFitsFile *f;
	WdcStatus	rc;

	memset(im, 0, sizeof(*im));
	rc = wdc_fits_open_memory(&env, data, len, limits, &f);
	if (rc != WDC_OK)
		return rc;
	rc = wdc_fits_select_image(&env, f, hdu, NULL);
	if (rc == WDC_OK)
		rc = wdc_fits_read_image(&env, f, plane, im);
	wdc_fits_close(&env, f);
	return rc;
}

/* --- real files against astropy ----------------------------------------- */

static void
test_real_images(void)
{
	for (size_t i = 0; i < sizeof(ref_images) / sizeof(ref_images[0]); i++)
	{
		const RefImage *r = &ref_images[i];
		unsigned char *data;
		size_t		len;
		WdcFitsFile *f;
		WdcFitsImageInfo info;
		WdcImage	im;
		double		sum;
		long		nans;
		bool		samples_ok = true;
		char		why[256];
		WdcStatus	rc;

		data = slurp_real(r->name, &len);
		if (data == NULL)
		{
			wdc_test_case(label("read", r->name), 0,
						  "missing: run scripts/fetch-data");
			continue;
		}
		rc = wdc_fits_open_memory(&env, data, len, &no_limits, &f);
		wdc_test_case(label("open", r->name), rc == WDC_OK, err.message);
		if (rc != WDC_OK)
		{
			free(data);
			continue;
		}
		rc = wdc_fits_select_image(&env, f, -1, &info);
		wdc_test_case(label("first image hdu", r->name),
					  rc == WDC_OK && info.hdu == r->hdu, err.message);
		wdc_test_case(label("shape", r->name),
					  rc == WDC_OK && info.width == (size_t) r->width &&
					  info.height == (size_t) r->height, "");
		rc = wdc_fits_read_image(&env, f, r->plane, &im);
		wdc_test_case(label("read image", r->name), rc == WDC_OK, err.message);
		if (rc == WDC_OK)
		{
			sum_image(&im, &sum, &nans);
			snprintf(why, sizeof(why), "sum %.10g want %.10g", sum, r->sum);
			wdc_test_case(label("pixel sum", r->name),
						  wdc_close(sum, r->sum, 1e-7, 1e-9), why);
			snprintf(why, sizeof(why), "%ld NaN, want %ld", nans, r->nan_count);
			wdc_test_case(label("NaN count", r->name), nans == r->nan_count, why);
			for (int s = 0; s < r->nsample; s++)
			{
				float		got = pixel(&im, r->sx[s], r->sy[s]);

				if (!wdc_close(got, r->sv[s], 1e-6, 0))
				{
					snprintf(why, sizeof(why), "(%d,%d) = %.9g want %.9g",
							 r->sx[s], r->sy[s], got, r->sv[s]);
					samples_ok = false;
				}
			}
			wdc_test_case(label("pixel samples", r->name), samples_ok, why);
			wdc_image_free(&env, &im);
		}
		wdc_fits_close(&env, f);

		/* The same file read from its path gives the same pixels. */
		{
			char		path[256];
			WdcImage	mem_im,
						path_im;

			snprintf(path, sizeof(path), DATA_DIR "%s", r->name);
			rc = load(data, len, &no_limits, -1, r->plane, &mem_im);
			if (rc == WDC_OK)
			{
				rc = wdc_fits_open_path(&env, path, &no_limits, &f);
				if (rc == WDC_OK)
				{
					rc = wdc_fits_select_image(&env, f, -1, NULL);
					if (rc == WDC_OK)
						rc = wdc_fits_read_image(&env, f, r->plane, &path_im);
					wdc_fits_close(&env, f);
				}
				wdc_test_case(label("path equals memory", r->name),
							  rc == WDC_OK &&
							  memcmp(mem_im.pixels, path_im.pixels,
									 mem_im.width * mem_im.height * sizeof(float)) == 0,
							  err.message);
				if (rc == WDC_OK)
					wdc_image_free(&env, &path_im);
				wdc_image_free(&env, &mem_im);
			}
		}
		free(data);
	}
}

static void
test_real_wcs(void)
{
	double		worst_pix = 0,
				worst_gal = 0;
	const char *worst_name = "";

	for (size_t i = 0; i < sizeof(ref_sky) / sizeof(ref_sky[0]); i++)
	{
		const RefSky *r = &ref_sky[i];
		unsigned char *data;
		size_t		len;
		WdcFitsFile *f;
		WdcSkyFrame frame;
		double		x,
					y;
		char		why[512];
		WdcStatus	rc;

		data = slurp_real(r->name, &len);
		if (data == NULL)
			continue;
		rc = wdc_fits_open_memory(&env, data, len, &no_limits, &f);
		if (rc == WDC_OK)
			rc = wdc_fits_select_image(&env, f, -1, NULL);
		if (rc == WDC_OK)
			rc = wdc_fits_world_to_pixel(&env, f, r->lng, r->lat, &x, &y, &frame);
		snprintf(why, sizeof(why), "%s: (%.9f, %.9f) want (%.9f, %.9f) %s",
				 r->name, rc == WDC_OK ? x : NAN, rc == WDC_OK ? y : NAN,
				 r->x, r->y, err.message);
		wdc_test_case(label("world to pixel", r->name),
					  rc == WDC_OK && fabs(x - r->x) < 1e-6 && fabs(y - r->y) < 1e-6,
					  why);
		if (rc == WDC_OK && fmax(fabs(x - r->x), fabs(y - r->y)) > worst_pix)
		{
			worst_pix = fmax(fabs(x - r->x), fabs(y - r->y));
			worst_name = r->name;
		}

		/* Galactic images take J2000 (ra, dec) through the rotation. */
		if (rc == WDC_OK && frame == WDC_SKY_GALACTIC)
		{
			double		l,
						b;

			wdc_sky_equatorial_to_galactic(r->ra, r->dec, &l, &b);
			worst_gal = fmax(worst_gal, fmax(fabs(l - r->lng) * cos(b * M_PI / 180),
											 fabs(b - r->lat)));
			snprintf(why, sizeof(why), "(%.9f, %.9f) want (%.9f, %.9f)",
					 l, b, r->lng, r->lat);
			/*
			 * astropy derives its galactic frame from FK4 B1950, wdc rotates
			 * with the Hipparcos matrix: they agree to about 10 mas.
			 */
			wdc_test_case(label("equatorial to galactic", r->name),
						  fabs(l - r->lng) * cos(b * M_PI / 180) < 1e-5 &&
						  fabs(b - r->lat) < 1e-5, why);
			rc = wdc_fits_sky_to_pixel(&env, f, r->ra, r->dec, &x, &y);
			snprintf(why, sizeof(why), "(%.6f, %.6f) want (%.6f, %.6f) %s",
					 x, y, r->x, r->y, rc == WDC_OK ? "" : err.message);
			wdc_test_case(label("sky to pixel galactic", r->name),
						  rc == WDC_OK && fabs(x - r->x) < 2e-2 && fabs(y - r->y) < 2e-2,
						  why);
		}
		wdc_fits_close(&env, f);
		free(data);
	}
	printf("# worst world-to-pixel error %.3g px (%s), galactic rotation %.3g deg\n",
		   worst_pix, worst_name, worst_gal);
}

/* --- files built with cfitsio ------------------------------------------- */

/*
 * Write an image of the given BITPIX and shape into a new in-memory FITS
 * file, with optional tile compression and extra keywords; returns malloc'd
 * bytes.  values are the physical values per pixel of the first plane,
 * repeated for later planes with plane number added.
 */
static unsigned char *
build_fits(int bitpix, int naxis, const long *naxes, const double *values,
		   int compression, const char *const *cards, size_t *len)
{
	fitsfile   *fptr;
	void	   *buf = NULL;
	size_t		size = 0;
	int			status = 0;
	long		npix = 1;
	long		plane_pix = naxes[0] * naxes[1];
	double	   *all;

	for (int i = 0; i < naxis; i++)
		npix *= naxes[i];
	all = malloc(sizeof(double) * (size_t) npix);
	for (long i = 0; i < npix; i++)
		all[i] = values[i % plane_pix] + (double) (i / plane_pix);

	ffimem(&fptr, &buf, &size, 2880, realloc, &status);
	if (compression)
		fits_set_compression_type(fptr, compression, &status);
	ffcrim(fptr, bitpix, naxis, (long *) naxes, &status);
	for (int c = 0; cards && cards[c]; c++)
		ffprec(fptr, cards[c], &status);
	/* Re-read scaling keywords written above before writing pixels. */
	ffrdef(fptr, &status);
	ffppr(fptr, TDOUBLE, 1, npix, all, &status);
	ffclos(fptr, &status);
	free(all);
	if (status != 0)
	{
		char		text[FLEN_STATUS];

		ffgerr(status, text);
		fprintf(stderr, "build_fits: %s\n", text);
		free(buf);
		return NULL;
	}
	*len = size;
	return buf;
}

static void
test_bitpix_and_scaling(void)
{
	const int	bitpixes[] = {8, 16, 32, 64, -32, -64};
	long		naxes[2] = {7, 5};
	double		values[35];

	for (int i = 0; i < 35; i++)
		values[i] = (double) ((i * 37) % 100);

	for (size_t b = 0; b < sizeof(bitpixes) / sizeof(bitpixes[0]); b++)
	{
		size_t		len;
		unsigned char *data = build_fits(bitpixes[b], 2, naxes, values, 0, NULL, &len);
		WdcImage	im;
		bool		same = true;
		char		name[64];

		snprintf(name, sizeof(name), "BITPIX %d values", bitpixes[b]);
		if (data == NULL || load(data, len, &no_limits, -1, 0, &im) != WDC_OK)
		{
			wdc_test_case(name, 0, err.message);
			free(data);
			continue;
		}
		for (int i = 0; i < 35; i++)
			same = same && im.pixels[i] == (float) values[i];
		wdc_test_case(name, same && im.width == 7 && im.height == 5, "");
		wdc_image_free(&env, &im);
		free(data);
	}

	/* Unsigned bytes with BSCALE, BZERO and BLANK. */
	{
		const char *const cards[] = {
			"BSCALE  =                  0.5",
			"BZERO   =                -10.0",
			"BLANK   =                  255",
			NULL
		};
		size_t		len;
		unsigned char *data;
		WdcImage	im;

		/* Physical 117.5 is raw 255 = BLANK. */
		values[3] = 117.5;
		data = build_fits(8, 2, naxes, values, 0, cards, &len);
		if (data && load(data, len, &no_limits, -1, 0, &im) == WDC_OK)
		{
			wdc_test_case("BITPIX 8 scaled value", im.pixels[1] == (float) values[1], "");
			wdc_test_case("BITPIX 8 BLANK is NaN", isnan(im.pixels[3]), "");
			wdc_image_free(&env, &im);
		}
		else
			wdc_test_case("BITPIX 8 scaled", 0, err.message);
		free(data);
	}
}

/* A radio-style 4-D image with degenerate axes reads as its 2-D plane. */
static void
test_degenerate_axes_and_cubes(void)
{
	long		naxes4[4] = {6, 4, 1, 1};
	long		cube[3] = {6, 4, 3};
	double		values[24];
	size_t		len;
	unsigned char *data;
	WdcImage	im;
	WdcStatus	rc;

	for (int i = 0; i < 24; i++)
		values[i] = i * 1.25 - 3;

	data = build_fits(-32, 4, naxes4, values, 0, NULL, &len);
	rc = load(data, len, &no_limits, -1, 0, &im);
	wdc_test_case("degenerate axes squeezed",
				  rc == WDC_OK && im.width == 6 && im.height == 4 &&
				  im.pixels[23] == (float) values[23], err.message);
	if (rc == WDC_OK)
		wdc_image_free(&env, &im);
	free(data);

	data = build_fits(-32, 3, cube, values, 0, NULL, &len);
	rc = load(data, len, &no_limits, -1, 0, &im);
	wdc_test_case("cube without plane rejected", rc == WDC_ERR_INVALID, err.message);
	wdc_test_case("cube error names planes", strstr(err.message, "3 planes") != NULL,
				  err.message);
	rc = load(data, len, &no_limits, -1, 3, &im);
	wdc_test_case("cube plane 3 read",
				  rc == WDC_OK && im.pixels[0] == (float) (values[0] + 2), err.message);
	if (rc == WDC_OK)
		wdc_image_free(&env, &im);
	rc = load(data, len, &no_limits, -1, 4, &im);
	wdc_test_case("cube plane 4 out of range", rc == WDC_ERR_INVALID, err.message);
	free(data);
}

/* Tile-compressed images built from a real one read back unchanged. */
static void
test_tile_compressed(void)
{
	const int	kinds[] = {RICE_1, GZIP_1, GZIP_2, HCOMPRESS_1};
	size_t		len;
	unsigned char *real = slurp_real("saao_uint16.fits", &len);
	WdcImage	ref;
	double	   *values;

	if (real == NULL || load(real, len, &no_limits, -1, 0, &ref) != WDC_OK)
	{
		wdc_test_case("tile compression source", 0, "saao_uint16.fits missing");
		free(real);
		return;
	}
	values = malloc(sizeof(double) * ref.width * ref.height);
	for (size_t i = 0; i < ref.width * ref.height; i++)
		values[i] = ref.pixels[i];
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
	{
		long		naxes[2] = {(long) ref.width, (long) ref.height};
		size_t		zlen;
		unsigned char *z = build_fits(32, 2, naxes, values, kinds[k], NULL, &zlen);
		WdcImage	im;
		WdcFitsImageInfo info;
		WdcFitsFile *f;
		char		name[64];
		WdcStatus	rc;

		snprintf(name, sizeof(name), "tile-compressed %d round trip", kinds[k]);
		rc = wdc_fits_open_memory(&env, z, zlen, &no_limits, &f);
		if (rc == WDC_OK)
		{
			rc = wdc_fits_select_image(&env, f, -1, &info);
			if (rc == WDC_OK)
				rc = wdc_fits_read_image(&env, f, 0, &im);
			wdc_fits_close(&env, f);
		}
		wdc_test_case(name, rc == WDC_OK && info.compressed && info.hdu == 1 &&
					  memcmp(im.pixels, ref.pixels, sizeof(float) * ref.width * ref.height) == 0,
					  err.message);
		if (rc == WDC_OK)
			wdc_image_free(&env, &im);

		/* One tile is a row of 536 pixels: a smaller limit rejects it. */
		if (k == 0)
		{
			WdcFitsLimits tight = {0, 500};

			rc = load(z, zlen, &tight, -1, 0, &im);
			wdc_test_case("tile larger than pixel limit", rc == WDC_ERR_LIMIT, err.message);
		}
		free(z);
	}
	free(values);
	wdc_image_free(&env, &ref);
	free(real);
}

/* --- cutouts ------------------------------------------------------------ */

static void
test_cutouts(void)
{
	size_t		len;
	unsigned char *data = slurp_real("magpis_sin.fits", &len);
	WdcFitsFile *f;
	WdcImage	full,
				cut;
	bool		same = true;
	long		nans = 0;
	double		sum;
	WdcStatus	rc;

	if (data == NULL || load(data, len, &no_limits, -1, 0, &full) != WDC_OK)
	{
		wdc_test_case("cutout source", 0, "magpis_sin.fits missing");
		free(data);
		return;
	}
	wdc_fits_open_memory(&env, data, len, &no_limits, &f);
	wdc_fits_select_image(&env, f, -1, NULL);

	/* Odd size: the centre pixel is the middle one. */
	rc = wdc_fits_read_cutout(&env, f, 0, 100.2, 50.7, 5, 5, &cut);
	for (int dy = 0; rc == WDC_OK && dy < 5; dy++)
		for (int dx = 0; dx < 5; dx++)
			same = same && cut.pixels[dy * 5 + dx] == pixel(&full, 98 + dx, 49 + dy);
	wdc_test_case("cutout odd size window", rc == WDC_OK && same, err.message);
	if (rc == WDC_OK)
		wdc_image_free(&env, &cut);

	/* Even size: the window's centre lies within half a pixel of x. */
	wdc_test_case("cutout even size start",
				  wdc_fits_cutout_start(10.0, 4) == 9 &&
				  wdc_fits_cutout_start(10.4, 4) == 9 &&
				  wdc_fits_cutout_start(10.6, 4) == 9 &&
				  wdc_fits_cutout_start(11.1, 4) == 10 &&
				  wdc_fits_cutout_start(10.0, 5) == 8, "");

	/* Off the corner: NaN padding where the image ends. */
	rc = wdc_fits_read_cutout(&env, f, 0, 1.0, 300.0, 8, 6, &cut);
	if (rc == WDC_OK)
	{
		sum_image(&cut, &sum, &nans);
		/* Columns -2..5 and rows 298..303: 5 x 3 pixels inside. */
		wdc_test_case("cutout off the edge padded",
					  cut.width == 8 && cut.height == 6 && nans == 48 - 15 &&
					  cut.pixels[0 * 8 + 3] == pixel(&full, 1, 298) &&
					  isnan(cut.pixels[0]) && isnan(cut.pixels[5 * 8 + 7]), "");
		wdc_image_free(&env, &cut);
	}
	else
		wdc_test_case("cutout off the edge padded", 0, err.message);

	rc = wdc_fits_read_cutout(&env, f, 0, -500, -500, 4, 4, &cut);
	if (rc == WDC_OK)
	{
		sum_image(&cut, &sum, &nans);
		wdc_test_case("cutout entirely off the image", nans == 16, "");
		wdc_image_free(&env, &cut);
	}
	else
		wdc_test_case("cutout entirely off the image", 0, err.message);

	/* Non-square cutout of a non-square image. */
	{
		WdcFitsLimits small = {0, 1000};

		rc = wdc_fits_read_cutout(&env, f, 0, 150, 150, 40, 30, &cut);
		wdc_test_case("cutout non-square", rc == WDC_OK && cut.width == 40 &&
					  cut.height == 30 && cut.pixels[0] == pixel(&full, 131, 136),
					  err.message);
		if (rc == WDC_OK)
			wdc_image_free(&env, &cut);
		wdc_fits_close(&env, f);
		wdc_fits_open_memory(&env, data, len, &small, &f);
		wdc_fits_select_image(&env, f, -1, NULL);
		rc = wdc_fits_read_cutout(&env, f, 0, 150, 150, 32, 32, &cut);
		wdc_test_case("cutout over pixel limit", rc == WDC_ERR_LIMIT, err.message);
		rc = wdc_fits_read_cutout(&env, f, 0, 150, 150, 31, 32, &cut);
		wdc_test_case("cutout at pixel limit", rc == WDC_OK, err.message);
		if (rc == WDC_OK)
			wdc_image_free(&env, &cut);
		rc = wdc_fits_read_cutout(&env, f, 0, NAN, 150, 31, 32, &cut);
		wdc_test_case("cutout NaN centre rejected", rc == WDC_ERR_INVALID, err.message);
	}
	wdc_fits_close(&env, f);
	wdc_image_free(&env, &full);
	free(data);
}

/* --- header ------------------------------------------------------------- */

static void
test_header(void)
{
	const char *const cards[] = {
		"EXPTIME =              1.5D+02 / Fortran exponent",
		"GAIN    =                  .5",
		"COUNT   =                 +007",
		"OBJECT  = 'O''Hara  '",
		"LONGSTR = 'first part &'",
		"CONTINUE  'second part'",
		"FLAG    =                    T",
		"NOVALUE =",
		"HISTORY made by a test",
		"COMMENT one",
		"COMMENT two",
		"HIERARCH ESO DET DIT = 2.5",
		NULL
	};
	long		naxes[2] = {2, 2};
	double		values[4] = {1, 2, 3, 4};
	size_t		len;
	unsigned char *data = build_fits(16, 2, naxes, values, 0, cards, &len);
	WdcFitsFile *f;
	char	   *json = NULL;
	WdcStatus	rc;

	rc = wdc_fits_open_memory(&env, data, len, &no_limits, &f);
	if (rc == WDC_OK)
	{
		wdc_fits_select_image(&env, f, -1, NULL);
		rc = wdc_fits_header_json(&env, f, &json);
		wdc_fits_close(&env, f);
	}
	wdc_test_case("header json built", rc == WDC_OK, err.message);
	if (json == NULL)
		return;
	printf("# %s\n", json);
	wdc_test_case("header D exponent", strstr(json, "\"EXPTIME\":1.5E+02") != NULL, json);
	wdc_test_case("header bare decimal", strstr(json, "\"GAIN\":0.5") != NULL, "");
	wdc_test_case("header leading zeros", strstr(json, "\"COUNT\":7") != NULL, "");
	wdc_test_case("header quoted string", strstr(json, "\"OBJECT\":\"O'Hara\"") != NULL, "");
	wdc_test_case("header long string",
				  strstr(json, "\"LONGSTR\":\"first part second part\"") != NULL, "");
	wdc_test_case("header logical", strstr(json, "\"FLAG\":true") != NULL, "");
	wdc_test_case("header null value", strstr(json, "\"NOVALUE\":null") != NULL, "");
	wdc_test_case("header history array",
				  strstr(json, "\"HISTORY\":[\"made by a test\"]") != NULL, "");
	wdc_test_case("header comment array",
				  strstr(json, "\"one\",\"two\"]") != NULL, "");
	wdc_test_case("header hierarch", strstr(json, "\"ESO DET DIT\":2.5") != NULL, "");
	wdc_test_case("header naxis", strstr(json, "\"NAXIS1\":2,") != NULL, "");
	wdc_free(&env, json);
	free(data);

	/* A tile-compressed image shows the image's header, not the table's. */
	data = slurp_real("fpack_gzip2.fits.fz", &len);
	if (data && wdc_fits_open_memory(&env, data, len, &no_limits, &f) == WDC_OK)
	{
		wdc_fits_select_image(&env, f, -1, NULL);
		rc = wdc_fits_header_json(&env, f, &json);
		wdc_test_case("compressed header is the image's",
					  rc == WDC_OK && strstr(json, "\"BITPIX\":-64") != NULL &&
					  strstr(json, "\"NAXIS1\":10") != NULL &&
					  strstr(json, "ZBITPIX") == NULL, json ? json : err.message);
		wdc_free(&env, json);
		wdc_fits_close(&env, f);
	}
	free(data);
}

/* --- errors and limits -------------------------------------------------- */

/* gzip-compress len bytes; returns malloc'd bytes. */
static unsigned char *
gzip_bytes(const unsigned char *in, size_t len, size_t *out_len)
{
	z_stream	zs;
	size_t		cap = len + len / 100 + 1024;
	unsigned char *out = malloc(cap);

	memset(&zs, 0, sizeof(zs));
	deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
	zs.next_in = (unsigned char *) in;
	zs.avail_in = (unsigned) len;
	zs.next_out = out;
	zs.avail_out = (unsigned) cap;
	deflate(&zs, Z_FINISH);
	*out_len = zs.total_out;
	deflateEnd(&zs);
	return out;
}

static void
test_errors(void)
{
	size_t		len,
				glen;
	unsigned char *first = slurp_real("first_sin.fits", &len);
	unsigned char *gz;
	WdcImage	im;
	WdcStatus	rc;

	if (first == NULL)
	{
		wdc_test_case("error cases", 0, "first_sin.fits missing");
		return;
	}

	rc = load("hello world, not FITS", 21, &no_limits, -1, 0, &im);
	wdc_test_case("not FITS rejected", rc == WDC_ERR_CORRUPT, err.message);
	rc = load("", 0, &no_limits, -1, 0, &im);
	wdc_test_case("empty input rejected", rc == WDC_ERR_CORRUPT, err.message);
	rc = load("BZh91AY&SY", 10, &no_limits, -1, 0, &im);
	wdc_test_case("bzip2 rejected", rc == WDC_ERR_UNSUPPORTED, err.message);

	/* Truncation: header cut, data cut, only the block padding cut. */
	rc = load(first, 1000, &no_limits, -1, 0, &im);
	wdc_test_case("truncated header rejected", rc == WDC_ERR_CORRUPT, err.message);
	rc = load(first, len - 2880, &no_limits, -1, 0, &im);
	wdc_test_case("truncated data rejected", rc == WDC_ERR_CORRUPT &&
				  strstr(err.message, "truncated") != NULL, err.message);
	{
		/* 33 x 33 float32 = 4356 bytes after the header. */
		size_t		header = len - 2 * 2880;

		rc = load(first, header + 4356, &no_limits, -1, 0, &im);
		wdc_test_case("missing padding accepted", rc == WDC_OK, err.message);
		if (rc == WDC_OK)
			wdc_image_free(&env, &im);
		rc = load(first, header + 4355, &no_limits, -1, 0, &im);
		wdc_test_case("last data byte missing rejected", rc == WDC_ERR_CORRUPT, err.message);
	}

	/*
	 * Repeated BITPIX and NAXISn further down the header must not shrink
	 * the size the completeness check expects: cfitsio parses the first
	 * ones and reads 1000 x 5 float pixels here.
	 */
	{
		const char *const cards[] = {
			"BITPIX  =                    8",
			"NAXIS   =                    2",
			"NAXIS1  =                    2",
			"NAXIS2  =                    2",
			NULL
		};
		long		naxes[2] = {1000, 5};
		double	   *values = calloc(5000, sizeof(double));
		size_t		blen;
		unsigned char *built = build_fits(-32, 2, naxes, values, 0, cards, &blen);

		/* Keep the header and the first 40 bytes of data only. */
		rc = built ? load(built, blen - 2880 * 7 + 40, &no_limits, -1, 0, &im) : WDC_ERR_INTERNAL;
		wdc_test_case("repeated NAXISn still truncated", rc == WDC_ERR_CORRUPT &&
					  strstr(err.message, "truncated") != NULL, err.message);
		free(values);
		free(built);
	}

	/* gzip: truncated stream, and a stream over the byte limit. */
	gz = gzip_bytes(first, len, &glen);
	rc = load(gz, glen, &no_limits, -1, 0, &im);
	wdc_test_case("gzip read", rc == WDC_OK, err.message);
	if (rc == WDC_OK)
		wdc_image_free(&env, &im);
	rc = load(gz, glen - 20, &no_limits, -1, 0, &im);
	wdc_test_case("truncated gzip rejected", rc == WDC_ERR_CORRUPT, err.message);
	{
		WdcFitsLimits tight = {len - 1, 0};
		WdcFitsLimits exact = {len, 0};

		rc = load(gz, glen, &tight, -1, 0, &im);
		wdc_test_case("gzip over byte limit", rc == WDC_ERR_LIMIT, err.message);
		rc = load(gz, glen, &exact, -1, 0, &im);
		wdc_test_case("gzip at byte limit", rc == WDC_OK, err.message);
		if (rc == WDC_OK)
			wdc_image_free(&env, &im);
	}
	free(gz);

	/* A compression bomb: 64 MB of zeros stops at the 1 MB limit. */
	{
		size_t		big = (size_t) 64 << 20;
		unsigned char *zeros = calloc(big, 1);
		WdcFitsLimits mb = {(size_t) 1 << 20, 0};

		memcpy(zeros, first, len);
		gz = gzip_bytes(zeros, big, &glen);
		free(zeros);
		rc = load(gz, glen, &mb, -1, 0, &im);
		wdc_test_case("compression bomb stopped", rc == WDC_ERR_LIMIT, err.message);
		free(gz);
	}

	/* Pixel limit on whole images. */
	{
		WdcFitsLimits under = {0, 33 * 33 - 1};
		WdcFitsLimits at = {0, 33 * 33};

		rc = load(first, len, &under, -1, 0, &im);
		wdc_test_case("image over pixel limit", rc == WDC_ERR_LIMIT, err.message);
		rc = load(first, len, &at, -1, 0, &im);
		wdc_test_case("image at pixel limit", rc == WDC_OK, err.message);
		if (rc == WDC_OK)
			wdc_image_free(&env, &im);
	}

	/* One-call loading gives the same pixels as the step-by-step calls. */
	{
		WdcImage	once;

		rc = load(first, len, &no_limits, -1, 0, &im);
		if (rc == WDC_OK)
		{
			rc = wdc_fits_load_image(&env, first, len, &no_limits, -1, 0, &once);
			wdc_test_case("one-call load", rc == WDC_OK &&
						  memcmp(once.pixels, im.pixels, 33 * 33 * sizeof(float)) == 0,
						  err.message);
			if (rc == WDC_OK)
				wdc_image_free(&env, &once);
			wdc_image_free(&env, &im);
		}
		rc = wdc_fits_load_image(&env, first, 100, &no_limits, -1, 0, &once);
		wdc_test_case("one-call load error", rc == WDC_ERR_CORRUPT, err.message);
	}

	/* HDU numbers. */
	rc = load(first, len, &no_limits, 1, 0, &im);
	wdc_test_case("missing HDU rejected", rc == WDC_ERR_INVALID, err.message);
	wdc_test_case("missing HDU hint", strstr(err.hint, "0 to 0") != NULL, err.hint);
	rc = load(first, len, &no_limits, 0, 0, &im);
	wdc_test_case("explicit HDU 0 read", rc == WDC_OK, err.message);
	if (rc == WDC_OK)
		wdc_image_free(&env, &im);
	free(first);

	first = slurp_real("dss_table.fits.gz", &len);
	if (first)
	{
		rc = load(first, len, &no_limits, 1, 0, &im);
		wdc_test_case("table HDU rejected", rc == WDC_ERR_INVALID &&
					  strstr(err.message, "binary table") != NULL, err.message);
		free(first);
	}
	first = slurp_real("fermi_car.fits.gz", &len);
	if (first)
	{
		rc = load(first, len, &no_limits, 0, 0, &im);
		wdc_test_case("empty primary rejected when named",
					  rc == WDC_ERR_INVALID, err.message);
		free(first);
	}
}

/* --- server paths ------------------------------------------------------- */

static void
copy_file(const char *from, const char *to)
{
	size_t		len;
	unsigned char *data = slurp(from, &len);
	FILE	   *f = fopen(to, "wb");

	if (data && f)
		fwrite(data, 1, len, f);
	if (f)
		fclose(f);
	free(data);
}

static WdcStatus
open_path_status(const char *path)
{
	WdcFitsFile *f;
	WdcStatus	rc = wdc_fits_open_path(&env, path, &no_limits, &f);

	if (rc == WDC_OK)
	{
		rc = wdc_fits_select_image(&env, f, -1, NULL);
		wdc_fits_close(&env, f);
	}
	return rc;
}

static void
test_paths(void)
{
	char		dir[] = "/tmp/wdc_fits_test_XXXXXX";
	char		path[512],
				other[512];
	struct stat st;

	if (mkdtemp(dir) == NULL)
	{
		wdc_test_case("temp dir", 0, "mkdtemp failed");
		return;
	}
	snprintf(path, sizeof(path), "%s/x.fits", dir);
	copy_file(DATA_DIR "first_sin.fits", path);

	/* Extended filename syntax is not interpreted. */
	snprintf(path, sizeof(path), "%s/x.fits[0]", dir);
	wdc_test_case("bracket suffix taken literally",
				  open_path_status(path) == WDC_ERR_IO, err.message);
	snprintf(path, sizeof(path), "%s/x.fits(%s/out.fits)", dir, dir);
	snprintf(other, sizeof(other), "%s/out.fits", dir);
	wdc_test_case("output syntax taken literally",
				  open_path_status(path) == WDC_ERR_IO && stat(other, &st) != 0,
				  err.message);
	/* A file whose name contains the syntax opens as itself. */
	snprintf(path, sizeof(path), "%s/y.fits(out.fits)", dir);
	copy_file(DATA_DIR "first_sin.fits", path);
	snprintf(other, sizeof(other), "%s/out.fits", dir);
	wdc_test_case("odd literal name opens",
				  open_path_status(path) == WDC_OK && stat(other, &st) != 0,
				  err.message);
	unlink(path);
	/* No ".gz" is appended to a missing name. */
	snprintf(path, sizeof(path), "%s/z.fits.gz", dir);
	copy_file(DATA_DIR "fermi_car.fits.gz", path);
	snprintf(other, sizeof(other), "%s/z.fits", dir);
	wdc_test_case("no alternative name tried",
				  open_path_status(other) == WDC_ERR_IO, err.message);
	wdc_test_case("gzip file by path", open_path_status(path) == WDC_OK, err.message);
	unlink(path);
	wdc_test_case("directory rejected", open_path_status(dir) == WDC_ERR_INVALID,
				  err.message);
	wdc_test_case("mem:// is a path", open_path_status("mem://") == WDC_ERR_IO,
				  err.message);
	snprintf(path, sizeof(path), "%s/x.fits", dir);
	unlink(path);
	rmdir(dir);
}

int
main(void)
{
	wdc_env_init_default(&env, &err);

	test_real_images();
	test_real_wcs();
	test_bitpix_and_scaling();
	test_degenerate_axes_and_cubes();
	test_tile_compressed();
	test_cutouts();
	test_header();
	test_errors();
	test_paths();
	return wdc_test_summary();
}
