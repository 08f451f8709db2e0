/*
 * make_cutouts.c
 *	  Cut fixed-size windows out of real FITS frames and preprocess them
 *	  with wdc's own core, writing float32 arrays for training in PyTorch.
 *
 * The reference VAE must see, at training time, exactly the pixels that
 * wdc.encode feeds it in the database.  This program therefore reads and
 * cuts with wdc_fits_read_cutout() and prepares with wdc_preprocess_run(),
 * the same functions wdc.fits_cutout and wdc.encode call.
 *
 * Usage:
 *	  make_cutouts SIZE OUTDIR [name=value ...] < positions.tsv
 *
 * Each input line is "path<TAB>hdu<TAB>plane<TAB>x<TAB>y" with FITS 1-based
 * pixel positions (hdu -1 = first image HDU, plane 0 = single-plane image).
 * The name=value arguments are preprocessing options, as accepted by
 * wdc_preprocess_set() and by a model's "preprocessing" metadata.
 *
 * Output in OUTDIR:
 *	  raw.f32     kept cutouts before preprocessing, [n][SIZE][SIZE] float32
 *	  input.f32   the same cutouts after preprocessing (the model's input)
 *	  index.tsv   one line per kept cutout: path, hdu, plane, x, y, NaN count
 * A cutout is skipped when more than a quarter of its pixels are NaN (off
 * the frame or masked) or when it is constant after preprocessing; the
 * skip counts go to stderr.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/wdc_core.h"
#include "fits/fits.h"
#include "fits/preprocess.h"

/* Print the core's error and exit. */
static void
die(const WdcError *error, const char *what)
{
	fprintf(stderr, "make_cutouts: %s: %s", what, error->message);
	if (error->detail[0])
		fprintf(stderr, " (%s)", error->detail);
	fprintf(stderr, "\n");
	exit(1);
}

/* Write n floats or exit. */
static void
write_floats(FILE *f, const float *v, size_t n, const char *path)
{
	if (fwrite(v, sizeof(float), n, f) != n)
	{
		fprintf(stderr, "make_cutouts: cannot write %s\n", path);
		exit(1);
	}
}

int
main(int argc, char **argv)
{
	WdcEnv		env;
	WdcError	error;
	WdcPreprocess pp;
	WdcFitsLimits limits = {0, 0};
	WdcFitsFile *file = NULL;
	char		open_path[4096] = "";
	int			open_hdu = -2;
	char		path_buf[4096];
	char		line[8192];
	size_t		size;
	size_t		kept = 0;
	size_t		skipped_nan = 0;
	size_t		skipped_flat = 0;
	FILE	   *raw_f;
	FILE	   *input_f;
	FILE	   *index_f;

	if (argc < 3)
	{
		fprintf(stderr, "usage: make_cutouts SIZE OUTDIR [name=value ...] < positions.tsv\n");
		return 2;
	}
	size = (size_t) atoi(argv[1]);
	if (size < 4 || size > 512)
	{
		fprintf(stderr, "make_cutouts: SIZE must be 4 to 512 pixels\n");
		return 2;
	}

	/* 1. preprocessing options from the command line */
	wdc_env_init_default(&env, &error);
	wdc_preprocess_init(&pp);
	for (int i = 3; i < argc; i++)
	{
		char	   *eq = strchr(argv[i], '=');

		if (eq == NULL)
		{
			fprintf(stderr, "make_cutouts: option \"%s\" is not name=value\n", argv[i]);
			return 2;
		}
		*eq = '\0';
		if (wdc_preprocess_set(&env, &pp, argv[i], eq + 1) != WDC_OK)
			die(&error, argv[i]);
	}
	if (wdc_preprocess_check(&env, &pp) != WDC_OK)
		die(&error, "preprocessing");

	snprintf(path_buf, sizeof(path_buf), "%s/raw.f32", argv[2]);
	raw_f = fopen(path_buf, "wb");
	snprintf(path_buf, sizeof(path_buf), "%s/input.f32", argv[2]);
	input_f = fopen(path_buf, "wb");
	snprintf(path_buf, sizeof(path_buf), "%s/index.tsv", argv[2]);
	index_f = fopen(path_buf, "w");
	if (!raw_f || !input_f || !index_f)
	{
		fprintf(stderr, "make_cutouts: cannot create files in %s\n", argv[2]);
		return 1;
	}

	/* 2. one cutout per input line; the frame stays open across lines */
	while (fgets(line, sizeof(line), stdin))
	{
		char		path[4096];
		int			hdu;
		long long	plane;
		double		x,
					y;
		WdcFitsImageInfo info;
		WdcImage	cut;
		WdcImage	prepared;
		size_t		n = size * size;
		size_t		nan_count = 0;
		float		lo,
					hi;

		if (sscanf(line, "%4095[^\t]\t%d\t%lld\t%lf\t%lf", path, &hdu, &plane, &x, &y) != 5)
			continue;
		if (strcmp(path, open_path) != 0 || hdu != open_hdu)
		{
			wdc_fits_close(&env, file);
			file = NULL;
			if (wdc_fits_open_path(&env, path, &limits, &file) != WDC_OK)
				die(&error, path);
			if (wdc_fits_select_image(&env, file, hdu, &info) != WDC_OK)
				die(&error, path);
			snprintf(open_path, sizeof(open_path), "%s", path);
			open_hdu = hdu;
		}
		if (wdc_fits_read_cutout(&env, file, plane, x, y, size, size, &cut) != WDC_OK)
			die(&error, path);

		for (size_t i = 0; i < n; i++)
			if (isnan(cut.pixels[i]))
				nan_count++;
		if (nan_count * 4 > n)
		{
			skipped_nan++;
			wdc_image_free(&env, &cut);
			continue;
		}

		if (wdc_preprocess_run(&env, &pp, &cut, &prepared) != WDC_OK)
			die(&error, path);
		if (prepared.width != size || prepared.height != size)
		{
			fprintf(stderr, "make_cutouts: preprocessing must keep %zux%zu cutouts\n", size, size);
			return 1;
		}
		lo = hi = prepared.pixels[0];
		for (size_t i = 1; i < n; i++)
		{
			lo = fminf(lo, prepared.pixels[i]);
			hi = fmaxf(hi, prepared.pixels[i]);
		}
		if (!(hi > lo))
		{
			skipped_flat++;
			wdc_image_free(&env, &cut);
			wdc_image_free(&env, &prepared);
			continue;
		}

		write_floats(raw_f, cut.pixels, n, "raw.f32");
		write_floats(input_f, prepared.pixels, n, "input.f32");
		fprintf(index_f, "%s\t%d\t%lld\t%.17g\t%.17g\t%zu\n", path, hdu, plane, x, y, nan_count);
		kept++;
		wdc_image_free(&env, &cut);
		wdc_image_free(&env, &prepared);
	}
	wdc_fits_close(&env, file);

	if (fclose(raw_f) != 0 || fclose(input_f) != 0 || fclose(index_f) != 0)
	{
		fprintf(stderr, "make_cutouts: cannot finish writing %s\n", argv[2]);
		return 1;
	}
	fprintf(stderr, "make_cutouts: kept %zu cutouts, skipped %zu mostly NaN, %zu constant\n",
			kept, skipped_nan, skipped_flat);
	return 0;
}
