/*
 * fits_image.c
 *	  Selecting an image HDU and reading its pixels, whole or as a cutout.
 *
 * Selection checks everything a read relies on: that the HDU exists and is
 * an image (tile-compressed ones included: cfitsio presents them as images),
 * that its shape is 2-D after ignoring length-1 axes beyond the second, that
 * the input contains all of its data bytes (a truncated bytea would otherwise
 * read as zeros), and that one decompression tile fits the pixel limit.
 * Reads go through fits_read_subset (ffgsv) as 32-bit floats in chunks of
 * rows, with cfitsio applying BSCALE/BZERO and turning BLANK into NaN.
 */
#include "fits/fits_internal.h"

#include <math.h>
#include <string.h>

/* Pixels read per ffgsv call; interrupts are checked between calls. */
#define READ_CHUNK_PIXELS ((size_t) 1 << 20)

void
wdc_image_free(const WdcEnv *env, WdcImage *image)
{
	if (image == NULL)
		return;
	wdc_free(env, image->pixels);
	memset(image, 0, sizeof(*image));
}

/* Name of a non-image HDU type for messages. */
static const char *
hdu_type_name(int hdutype)
{
	switch (hdutype)
	{
		case ASCII_TBL:
			return "an ASCII table";
		case BINARY_TBL:
			return "a binary table";
		default:
			return "not an image";
	}
}

/* Report a missing HDU, naming the valid range when cfitsio can count. */
static WdcStatus
no_such_hdu(const WdcEnv *env, WdcFitsFile *file, int hdu)
{
	int			count = 0;
	int			status = 0;

	ffcmsg();
	ffthdu(file->fptr, &count, &status);
	ffcmsg();
	wdc_error(env, WDC_ERR_INVALID, "HDU %d does not exist in the FITS input", hdu);
	if (status == 0 && count > 0)
		wdc_error_hint(env, "HDUs are numbered from 0 (the primary HDU); "
					   "this input has %d, so 0 to %d are valid.",
					   count, count - 1);
	return WDC_ERR_INVALID;
}

/*
 * Check that the input contains every data byte of the current HDU, which
 * the FITS standard sizes as |BITPIX| / 8 * GCOUNT * (PCOUNT + NAXIS1 * ...
 * * NAXISn) bytes from the data start.  The padding of the last 2880-byte
 * block is not required, because some writers omit it.  For an image the
 * bytes its shape needs (image, from cfitsio's parse) are checked as well.  For a tile-compressed image these are
 * the keywords of the binary table that carries it.
 */
static WdcStatus
check_complete(const WdcEnv *env, WdcFitsFile *file, int hdu,
			   const WdcFitsImageInfo *image)
{
	LONGLONG	headstart,
				datastart,
				dataend;
	LONGLONG	bitpix = 0,
				naxis = 0,
				pcount = 0,
				gcount = 1,
				n;
	size_t		elements = 1;
	size_t		bytes;
	int			status = 0;

	ffghadll(file->fptr, &headstart, &datastart, &dataend, &status);

	/*
	 * cfitsio searches for a keyword from the last one read, wrapping
	 * around.  Start from the top, so that a repeated keyword yields its
	 * first value, which is the one cfitsio parsed the HDU with.
	 */
	{
		char		card[FLEN_CARD];

		ffgrec(file->fptr, 0, card, &status);
	}
	ffgky(file->fptr, TLONGLONG, "BITPIX", &bitpix, NULL, &status);
	ffgky(file->fptr, TLONGLONG, "NAXIS", &naxis, NULL, &status);
	if (status != 0)
		return wdc_fits_fail(env, WDC_ERR_CORRUPT, status,
							 "could not read the header of HDU %d", hdu);
	/* PCOUNT and GCOUNT are absent from primary HDUs. */
	if (ffgky(file->fptr, TLONGLONG, "PCOUNT", &pcount, NULL, &status) != 0)
		status = 0, pcount = 0;
	if (ffgky(file->fptr, TLONGLONG, "GCOUNT", &gcount, NULL, &status) != 0)
		status = 0, gcount = 1;
	ffcmsg();

	if (naxis == 0)
		elements = 0;
	for (int axis = 1; axis <= naxis; axis++)
	{
		char		key[FLEN_KEYWORD];
		LONGLONG	len = 0;

		snprintf(key, sizeof(key), "NAXIS%d", axis);
		if (ffgky(file->fptr, TLONGLONG, key, &len, NULL, &status) != 0 ||
			len < 0 || !wdc_size_mul(elements, (size_t) len, &elements))
			return wdc_fits_fail(env, WDC_ERR_CORRUPT, status,
								 "invalid %s in HDU %d", key, hdu);
	}
	n = bitpix < 0 ? -bitpix : bitpix;
	if (pcount < 0 || gcount < 0 ||
		!wdc_size_add(elements, (size_t) pcount, &elements) ||
		!wdc_size_mul(elements, (size_t) gcount, &elements) ||
		!wdc_size_mul(elements, (size_t) (n / 8), &bytes) ||
		!wdc_size_add(bytes, (size_t) datastart, &bytes))
		return wdc_error(env, WDC_ERR_CORRUPT,
						 "data size of HDU %d overflows", hdu);

	/* An image must also hold the pixels cfitsio will read for its shape. */
	if (image && !image->compressed)
	{
		size_t		pixels = 1;
		size_t		image_bytes;
		int			bytepix = (image->bitpix < 0 ? -image->bitpix : image->bitpix) / 8;

		for (int axis = 0; axis < image->naxis; axis++)
			if (!wdc_size_mul(pixels, (size_t) image->naxes[axis], &pixels))
				return wdc_error(env, WDC_ERR_CORRUPT,
								 "data size of HDU %d overflows", hdu);
		if (!wdc_size_mul(pixels, (size_t) bytepix, &image_bytes) ||
			!wdc_size_add(image_bytes, (size_t) datastart, &image_bytes))
			return wdc_error(env, WDC_ERR_CORRUPT,
							 "data size of HDU %d overflows", hdu);
		if (image_bytes > bytes)
			bytes = image_bytes;
	}

	if (bytes > file->total_bytes)
	{
		wdc_error(env, WDC_ERR_CORRUPT, "FITS data is truncated");
		return wdc_error_detail(env, "HDU %d needs %zu bytes, the input has %zu.",
								hdu, bytes, file->total_bytes);
	}
	return WDC_OK;
}

/*
 * For a tile-compressed image, check that one tile fits the pixel limit:
 * cfitsio decompresses a whole tile even for a one-pixel read.
 */
static WdcStatus
check_tile_size(const WdcEnv *env, WdcFitsFile *file, const WdcFitsImageInfo *info)
{
	size_t		tile = 1;
	int			status = 0;

	for (int axis = 1; axis <= info->naxis; axis++)
	{
		char		key[FLEN_KEYWORD];
		LONGLONG	len;

		/* Default tiling is one row: ZTILE1 = NAXIS1, the others 1. */
		snprintf(key, sizeof(key), "ZTILE%d", axis);
		if (ffgky(file->fptr, TLONGLONG, key, &len, NULL, &status) != 0)
		{
			status = 0;
			len = axis == 1 ? info->naxes[0] : 1;
		}
		if (len < 1 || !wdc_size_mul(tile, (size_t) len, &tile))
			return wdc_error(env, WDC_ERR_CORRUPT, "invalid %s in HDU %d",
							 key, info->hdu);
	}
	ffcmsg();
	if (!wdc_fits_pixels_allowed(&file->limits, tile))
	{
		wdc_error(env, WDC_ERR_LIMIT,
				  "compression tile of %zu pixels in HDU %d exceeds the limit of %zu pixels",
				  tile, info->hdu, file->limits.max_pixels);
		return wdc_error_hint(env, "Raise wdc.fits_max_mb.");
	}
	return WDC_OK;
}

/* Move to an HDU (0-based); WDC_ERR_INVALID when it does not exist. */
static WdcStatus
move_to_hdu(const WdcEnv *env, WdcFitsFile *file, int hdu, int *hdutype)
{
	int			status = 0;

	if (hdu < 0 || hdu > 100000)
		return no_such_hdu(env, file, hdu);
	ffmahd(file->fptr, hdu + 1, hdutype, &status);
	if (status == END_OF_FILE || status == BAD_HDU_NUM)
		return no_such_hdu(env, file, hdu);
	if (status != 0)
		return wdc_fits_fail(env, WDC_ERR_CORRUPT, status,
							 "could not read HDU %d of the FITS input", hdu);
	return WDC_OK;
}

/* Describe the image in the current HDU; naxis 0 when it has no data. */
static WdcStatus
read_image_shape(const WdcEnv *env, WdcFitsFile *file, int hdu,
				 WdcFitsImageInfo *info)
{
	LONGLONG	naxes[WDC_FITS_MAX_AXES];
	int			status = 0;

	memset(info, 0, sizeof(*info));
	info->hdu = hdu;
	ffgidm(file->fptr, &info->naxis, &status);
	if (status == 0 && info->naxis > WDC_FITS_MAX_AXES)
	{
		wdc_error(env, WDC_ERR_UNSUPPORTED,
				  "image in HDU %d has %d axes", hdu, info->naxis);
		return wdc_error_detail(env, "At most %d axes are supported.",
								WDC_FITS_MAX_AXES);
	}
	ffgiprll(file->fptr, WDC_FITS_MAX_AXES, &info->bitpix, &info->naxis,
			 naxes, &status);
	info->compressed = status == 0 && fits_is_compressed_image(file->fptr, &status);
	if (status != 0)
		return wdc_fits_fail(env, WDC_ERR_CORRUPT, status,
							 "could not read the image header of HDU %d", hdu);
	for (int axis = 0; axis < info->naxis; axis++)
	{
		info->naxes[axis] = naxes[axis];
		if (naxes[axis] == 0)
			info->naxis = 0;	/* a zero-length axis means no data */
	}
	return WDC_OK;
}

WdcStatus
wdc_fits_select_header(const WdcEnv *env, WdcFitsFile *file, int hdu)
{
	int			hdutype;
	WdcStatus	rc;

	file->selected = false;
	file->header_selected = false;
	rc = move_to_hdu(env, file, hdu, &hdutype);
	if (rc != WDC_OK)
		return rc;
	file->header_selected = true;
	return WDC_OK;
}

WdcStatus
wdc_fits_select_image(const WdcEnv *env, WdcFitsFile *file, int hdu,
					  WdcFitsImageInfo *info)
{
	WdcFitsImageInfo found;
	int			hdutype;
	size_t		planes = 1;
	size_t		npixels;
	WdcStatus	rc;

	file->selected = false;
	file->header_selected = false;

	/* 1. Find the HDU: the one asked for, or the first image with data. */
	if (hdu >= 0)
	{
		rc = move_to_hdu(env, file, hdu, &hdutype);
		if (rc != WDC_OK)
			return rc;
		if (hdutype != IMAGE_HDU)
		{
			wdc_error(env, WDC_ERR_INVALID, "HDU %d of the FITS input is %s",
					  hdu, hdu_type_name(hdutype));
			return wdc_error_hint(env, "Name an image HDU, or omit the HDU "
								  "to use the first image.");
		}
		rc = read_image_shape(env, file, hdu, &found);
		if (rc != WDC_OK)
			return rc;
		if (found.naxis == 0)
		{
			wdc_error(env, WDC_ERR_INVALID, "HDU %d of the FITS input has no image data", hdu);
			return wdc_error_hint(env, "Omit the HDU to use the first image that has data.");
		}
	}
	else
	{
		for (hdu = 0;; hdu++)
		{
			int			status = 0;

			ffmahd(file->fptr, hdu + 1, &hdutype, &status);
			if (status == END_OF_FILE || status == BAD_HDU_NUM)
			{
				ffcmsg();
				return wdc_error(env, WDC_ERR_DATA, "FITS input has no image data");
			}
			if (status != 0)
				return wdc_fits_fail(env, WDC_ERR_CORRUPT, status,
									 "could not read HDU %d of the FITS input", hdu);
			if (hdutype != IMAGE_HDU)
				continue;
			rc = read_image_shape(env, file, hdu, &found);
			if (rc != WDC_OK)
				return rc;
			if (found.naxis > 0)
				break;
		}
	}

	/* 2. The data must be complete before anything reads it. */
	rc = check_complete(env, file, hdu, &found);
	if (rc != WDC_OK)
		return rc;

	/* 3. Shape: 2-D plus planes over the axes beyond the second. */
	if (found.naxis < 2)
	{
		wdc_error(env, WDC_ERR_UNSUPPORTED,
				  "HDU %d holds a 1-D array, not an image", hdu);
		return wdc_error_detail(env, "NAXIS1 = %lld.", (long long) found.naxes[0]);
	}
	for (int axis = 2; axis < found.naxis; axis++)
		if (!wdc_size_mul(planes, (size_t) found.naxes[axis], &planes))
			return wdc_error(env, WDC_ERR_CORRUPT, "image size in HDU %d overflows", hdu);
	found.width = (size_t) found.naxes[0];
	found.height = (size_t) found.naxes[1];
	found.nplanes = planes;
	if (!wdc_size_mul(found.width, found.height, &npixels))
		return wdc_error(env, WDC_ERR_CORRUPT, "image size in HDU %d overflows", hdu);

	/* 4. Tile-compressed images decompress a tile at a time. */
	if (found.compressed)
	{
		rc = check_tile_size(env, file, &found);
		if (rc != WDC_OK)
			return rc;
	}

	file->info = found;
	file->selected = true;
	if (info)
		*info = found;
	return WDC_OK;
}

int64_t
wdc_fits_cutout_start(double c, size_t n)
{
	return (int64_t) floor(c - ((double) n - 1.0) / 2.0 + 0.5);
}

/* Check the plane number against the selected image. */
static WdcStatus
check_plane(const WdcEnv *env, const WdcFitsImageInfo *info, int64_t plane)
{
	if (plane == 0 && info->nplanes > 1)
	{
		wdc_error(env, WDC_ERR_INVALID,
				  "image in HDU %d has %zu planes", info->hdu, info->nplanes);
		wdc_error_detail(env, "NAXIS = %d, NAXIS3 = %lld.", info->naxis,
						 (long long) info->naxes[2]);
		return wdc_error_hint(env, "Choose a plane from 1 to %zu with the plane argument of wdc.fits_image or wdc.fits_cutout.",
							  info->nplanes);
	}
	if (plane < 0 || (plane > 0 && (uint64_t) plane > info->nplanes))
	{
		wdc_error(env, WDC_ERR_INVALID, "plane %lld is out of range for HDU %d",
				  (long long) plane, info->hdu);
		return wdc_error_hint(env, "Planes are numbered from 1 to %zu.",
							  info->nplanes);
	}
	return WDC_OK;
}

/*
 * Read the rectangle [x0, x1] x [y0, y1] (1-based, inclusive, inside the
 * image) of the given plane into dst, whose rows are dst_stride floats
 * apart.  Reads whole chunks of rows per cfitsio call.
 */
static WdcStatus
read_window(const WdcEnv *env, WdcFitsFile *file, int64_t plane,
			int64_t x0, int64_t x1, int64_t y0, int64_t y1,
			float *dst, size_t dst_stride)
{
	const WdcFitsImageInfo *info = &file->info;
	long		blc[WDC_FITS_MAX_AXES];
	long		trc[WDC_FITS_MAX_AXES];
	long		inc[WDC_FITS_MAX_AXES];
	size_t		width = (size_t) (x1 - x0 + 1);
	size_t		rows_per_chunk = READ_CHUNK_PIXELS / width;
	float		nulval = NAN;
	float	   *chunk = NULL;
	int64_t		rest = plane > 0 ? plane - 1 : 0;

	if (rows_per_chunk == 0)
		rows_per_chunk = 1;

	/* Pixel coordinates of the plane on the axes beyond the second. */
	for (int axis = 0; axis < info->naxis; axis++)
	{
		inc[axis] = 1;
		if (axis >= 2)
		{
			blc[axis] = trc[axis] = (long) (rest % info->naxes[axis]) + 1;
			rest /= info->naxes[axis];
		}
	}
	blc[0] = (long) x0;
	trc[0] = (long) x1;

	/* A contiguous destination is read in place, otherwise via a buffer. */
	if (dst_stride != width)
	{
		chunk = wdc_alloc(env, rows_per_chunk * width * sizeof(float));
		if (chunk == NULL)
			return wdc_error(env, WDC_ERR_NOMEM, "out of memory reading FITS pixels");
	}

	for (int64_t row = y0; row <= y1; row += (int64_t) rows_per_chunk)
	{
		int64_t		last = row + (int64_t) rows_per_chunk - 1;
		float	   *out = dst + (size_t) (row - y0) * dst_stride;
		int			anynul = 0;
		int			status = 0;

		if (last > y1)
			last = y1;
		blc[1] = (long) row;
		trc[1] = (long) last;
		/* Undefined pixels (BLANK, NaN) become nulval, which is NaN. */
		ffgsv(file->fptr, TFLOAT, blc, trc, inc, &nulval, chunk ? chunk : out,
			  &anynul, &status);
		if (status != 0)
		{
			wdc_free(env, chunk);
			return wdc_fits_fail(env, status == NUM_OVERFLOW ? WDC_ERR_DATA : WDC_ERR_CORRUPT,
								 status, "could not read pixels of HDU %d", info->hdu);
		}
		if (chunk)
		{
			for (int64_t r = 0; r <= last - row; r++)
				memcpy(out + (size_t) r * dst_stride, chunk + (size_t) r * width,
					   width * sizeof(float));
		}
		if (wdc_interrupted(env))
		{
			wdc_free(env, chunk);
			return wdc_error(env, WDC_ERR_CANCELED, "FITS read canceled");
		}
	}
	wdc_free(env, chunk);
	return WDC_OK;
}

/* Allocate an image of width x height, checking the pixel limit. */
static WdcStatus
alloc_image(const WdcEnv *env, const WdcFitsFile *file, size_t width,
			size_t height, WdcImage *out)
{
	size_t		npixels;
	size_t		bytes;

	if (!wdc_size_mul(width, height, &npixels) ||
		!wdc_fits_pixels_allowed(&file->limits, npixels) ||
		!wdc_size_mul(npixels, sizeof(float), &bytes))
	{
		wdc_error(env, WDC_ERR_LIMIT,
				  "image of %zu x %zu pixels exceeds the limit of %zu pixels",
				  width, height, file->limits.max_pixels);
		return wdc_error_hint(env, "Raise wdc.fits_max_mb, or ask for fewer pixels.");
	}
	out->pixels = wdc_alloc(env, bytes);
	if (out->pixels == NULL)
		return wdc_error(env, WDC_ERR_NOMEM,
						 "out of memory for an image of %zu x %zu pixels",
						 width, height);
	out->width = width;
	out->height = height;
	return WDC_OK;
}

WdcStatus
wdc_fits_read_image(const WdcEnv *env, WdcFitsFile *file, int64_t plane,
					WdcImage *out)
{
	const WdcFitsImageInfo *info = &file->info;
	WdcStatus	rc;

	memset(out, 0, sizeof(*out));
	if (!file->selected)
		return wdc_error(env, WDC_ERR_INTERNAL, "no FITS image HDU selected");
	rc = check_plane(env, info, plane);
	if (rc != WDC_OK)
		return rc;
	rc = alloc_image(env, file, info->width, info->height, out);
	if (rc != WDC_OK)
		return rc;
	rc = read_window(env, file, plane, 1, (int64_t) info->width,
					 1, (int64_t) info->height, out->pixels, info->width);
	if (rc != WDC_OK)
		wdc_image_free(env, out);
	return rc;
}

WdcStatus
wdc_fits_read_cutout(const WdcEnv *env, WdcFitsFile *file, int64_t plane,
					 double x, double y, size_t width, size_t height,
					 WdcImage *out)
{
	const WdcFitsImageInfo *info = &file->info;
	int64_t		x0,
				y0,
				ix0,
				ix1,
				iy0,
				iy1;
	size_t		npixels;
	WdcStatus	rc;

	memset(out, 0, sizeof(*out));
	if (!file->selected)
		return wdc_error(env, WDC_ERR_INTERNAL, "no FITS image HDU selected");
	rc = check_plane(env, info, plane);
	if (rc != WDC_OK)
		return rc;
	if (width == 0 || height == 0)
		return wdc_error(env, WDC_ERR_INVALID, "cutout size must be positive");
	/* Bound the centre so that window arithmetic stays in int64 range. */
	if (!isfinite(x) || !isfinite(y) || fabs(x) > 1e15 || fabs(y) > 1e15)
		return wdc_error(env, WDC_ERR_INVALID,
						 "cutout centre (%g, %g) is not a usable pixel position", x, y);
	if (width > ((size_t) 1 << 40) || height > ((size_t) 1 << 40))
		return wdc_error(env, WDC_ERR_LIMIT, "cutout size %zu x %zu is too large",
						 width, height);

	rc = alloc_image(env, file, width, height, out);
	if (rc != WDC_OK)
		return rc;
	npixels = width * height;
	for (size_t i = 0; i < npixels; i++)
		out->pixels[i] = NAN;

	/* Overlap of the window with the image, in image pixels. */
	x0 = wdc_fits_cutout_start(x, width);
	y0 = wdc_fits_cutout_start(y, height);
	ix0 = x0 < 1 ? 1 : x0;
	iy0 = y0 < 1 ? 1 : y0;
	ix1 = x0 + (int64_t) width - 1;
	iy1 = y0 + (int64_t) height - 1;
	if (ix1 > (int64_t) info->width)
		ix1 = (int64_t) info->width;
	if (iy1 > (int64_t) info->height)
		iy1 = (int64_t) info->height;
	if (ix0 > ix1 || iy0 > iy1)
		return WDC_OK;			/* entirely off the image: all NaN */

	rc = read_window(env, file, plane, ix0, ix1, iy0, iy1,
					 out->pixels + (size_t) (iy0 - y0) * width + (size_t) (ix0 - x0),
					 width);
	if (rc != WDC_OK)
		wdc_image_free(env, out);
	return rc;
}

WdcStatus
wdc_fits_load_image(const WdcEnv *env, const void *data, size_t len,
					const WdcFitsLimits *limits, int hdu, int64_t plane,
					WdcImage *out)
{
	WdcFitsFile *file;
	WdcStatus	rc;

	memset(out, 0, sizeof(*out));
	rc = wdc_fits_open_memory(env, data, len, limits, &file);
	if (rc != WDC_OK)
		return rc;
	rc = wdc_fits_select_image(env, file, hdu, NULL);
	if (rc == WDC_OK)
		rc = wdc_fits_read_image(env, file, plane, out);
	wdc_fits_close(env, file);
	return rc;
}
