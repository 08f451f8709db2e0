/*
 * fits_fuzz.c
 *	  libFuzzer target for FITS reading (src/fits) from memory.
 *
 * Each input is treated as the bytes of a FITS file (plain, gzip or
 * tile-compressed): open it, select the first image, read it, render its
 * header as JSON, cut out a window over the image corner, map a sky position
 * and render a PNG.  Limits of 16 MB and 4 M pixels stand in for
 * wdc.fits_max_mb, so hostile sizes take the limit paths instead of
 * exhausting the fuzzer.  Build and run with fuzz/fits_run.sh.
 */
#include <stdint.h>
#include <string.h>

#include "fits/fits.h"
#include "fits/png_encode.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const WdcFitsLimits limits = {(size_t) 16 << 20, (size_t) 4 << 20};
	WdcError	error;
	WdcEnv		env;
	WdcFitsFile *file;
	WdcFitsImageInfo info;
	WdcImage	image;
	WdcPngOptions opts;
	char	   *json;
	unsigned char *png;
	size_t		png_len;
	double		x,
				y;

	wdc_env_init_default(&env, &error);
	if (wdc_fits_open_memory(&env, data, size, &limits, &file) != WDC_OK)
		return 0;
	if (wdc_fits_select_image(&env, file, -1, &info) == WDC_OK)
	{
		int64_t		plane = info.nplanes > 1 ? 1 : 0;

		if (wdc_fits_header_json(&env, file, &json) == WDC_OK)
			wdc_free(&env, json);
		if (wdc_fits_read_cutout(&env, file, plane, 0.5, 0.5, 16, 9, &image) == WDC_OK)
			wdc_image_free(&env, &image);
		if (wdc_fits_sky_to_pixel(&env, file, 10.0, 20.0, &x, &y) == WDC_OK)
			(void) x;
		if (wdc_fits_read_image(&env, file, plane, &image) == WDC_OK)
		{
			wdc_png_init(&opts);
			wdc_png_set(&env, &opts, "limits", "zscale");
			if (image.width * image.height <= 65536 &&
				wdc_png_encode(&env, &opts, &image, &png, &png_len) == WDC_OK)
				wdc_free(&env, png);
			wdc_image_free(&env, &image);
		}
	}
	wdc_fits_close(&env, file);
	return 0;
}
