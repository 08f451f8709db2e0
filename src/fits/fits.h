/*
 * fits.h
 *	  Reading FITS images with cfitsio and mapping sky positions with wcslib,
 *	  without PostgreSQL.
 *
 * A FITS input is opened from memory (a bytea) or from a server file, then
 * one image HDU is selected and read as 32-bit floats.  All entry points take
 * a WdcEnv (allocator, interrupt check, error record) and return a WdcStatus;
 * on failure they have released what they allocated and the WdcError holds
 * the message, with cfitsio's or wcslib's own words in the detail.
 *
 * Conventions used throughout:
 *	- HDU numbers are 0-based as in astropy and cfitsio's "file.fits[n]"
 *	  notation: 0 is the primary HDU, 1 the first extension.
 *	- Pixel coordinates are FITS 1-based: the centre of the first pixel is
 *	  (1, 1), x runs along NAXIS1 and y along NAXIS2.
 *	- Images are row-major like the FITS data: pixel (x, y) is
 *	  pixels[(y - 1) * width + (x - 1)], width = NAXIS1, height = NAXIS2.
 *	- BSCALE/BZERO are applied; BLANK pixels of integer images and NaN pixels
 *	  of float images are NaN.
 *	- Axes beyond the second of length 1 (radio cubes with degenerate
 *	  frequency and Stokes axes) are ignored.  When they hold more than one
 *	  plane, a plane number must be given: 1-based, counting over all axes
 *	  beyond the second with the third axis varying fastest.
 */
#ifndef WDC_FITS_H
#define WDC_FITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/wdc_core.h"

/* An open FITS input; opaque, released with wdc_fits_close(). */
typedef struct WdcFitsFile WdcFitsFile;

/*
 * Size limits that make a compression bomb or a huge image fail cleanly.
 * max_bytes bounds the bytes of a server file and of a gzip stream after
 * decompression; max_pixels bounds the pixels of any image or cutout read,
 * and of one decompression tile of a tile-compressed image.  Zero means no
 * limit.
 */
typedef struct WdcFitsLimits
{
	size_t		max_bytes;
	size_t		max_pixels;
} WdcFitsLimits;

/* Most axes an image HDU may have (the FITS standard allows 999). */
#define WDC_FITS_MAX_AXES 9

/* Image HDU description filled by wdc_fits_select_image(). */
typedef struct WdcFitsImageInfo
{
	int			hdu;			/* 0-based HDU number */
	int			bitpix;			/* stored BITPIX (ZBITPIX when tile-compressed) */
	bool		compressed;		/* tile-compressed (fpack) image */
	int			naxis;			/* NAXIS, 2 to WDC_FITS_MAX_AXES */
	int64_t		naxes[WDC_FITS_MAX_AXES];	/* NAXISn, n = 1..naxis */
	size_t		width;			/* NAXIS1 */
	size_t		height;			/* NAXIS2 */
	size_t		nplanes;		/* product of the axes beyond the second */
} WdcFitsImageInfo;

/* A 2-D float image; pixels is allocated with the WdcEnv allocator. */
typedef struct WdcImage
{
	size_t		width;			/* columns, FITS NAXIS1 */
	size_t		height;			/* rows, FITS NAXIS2 */
	float	   *pixels;			/* height * width values, row-major */
} WdcImage;

/* --- fits_open.c --- */

/*
 * Open a FITS file held in memory (plain or gzip-compressed).  data must stay
 * valid and unchanged until wdc_fits_close(); it is never written.  Input
 * that is not FITS, or is compressed other than with gzip, is rejected with
 * WDC_ERR_CORRUPT or WDC_ERR_UNSUPPORTED.
 */
extern WdcStatus wdc_fits_open_memory(const WdcEnv *env, const void *data,
									  size_t len, const WdcFitsLimits *limits,
									  WdcFitsFile **out);

/*
 * Open the server file at path, taken literally: cfitsio's extended filename
 * syntax ("x.fits[1]", "x.fits(out.fits)", "mem://") is never interpreted,
 * no other name (such as path + ".gz") is tried, and nothing is written.
 * Uncompressed files are read through cfitsio on demand; a gzip file is
 * decompressed into memory within limits->max_bytes.
 */
extern WdcStatus wdc_fits_open_path(const WdcEnv *env, const char *path,
									const WdcFitsLimits *limits,
									WdcFitsFile **out);

/* Close the input and free everything it holds; accepts NULL. */
extern void wdc_fits_close(const WdcEnv *env, WdcFitsFile *file);

/* Number of HDUs in the input. */
extern WdcStatus wdc_fits_hdu_count(const WdcEnv *env, WdcFitsFile *file,
									int *count);

/* --- fits_image.c --- */

/*
 * Make HDU hdu (0-based, of any type: image, table or empty primary) current
 * for reading its header with wdc_fits_header_json or _cards.  Image reads
 * still need wdc_fits_select_image.
 */
extern WdcStatus wdc_fits_select_header(const WdcEnv *env, WdcFitsFile *file,
										int hdu);

/*
 * Select an image HDU and describe it.  hdu < 0 selects the first HDU that
 * has image data (the primary unless it is empty).  A table HDU, an HDU
 * out of range, a 1-D image or an image with a zero-length axis is an error.
 * Later calls (image, cutout, header, WCS) read the selected HDU.
 */
extern WdcStatus wdc_fits_select_image(const WdcEnv *env, WdcFitsFile *file,
									   int hdu, WdcFitsImageInfo *info);

/*
 * Read the selected image, or one plane of it.  plane is 1-based over the
 * axes beyond the second, or 0 when the image has a single plane (a cube
 * with plane 0 is WDC_ERR_INVALID).  out->pixels is allocated here.
 */
extern WdcStatus wdc_fits_read_image(const WdcEnv *env, WdcFitsFile *file,
									 int64_t plane, WdcImage *out);

/*
 * Cut a width x height window out of the selected image (or plane), centred
 * on the FITS 1-based pixel position (x, y).  The window's first column is
 * floor(x - (width - 1) / 2 + 0.5), so its centre lies within half a pixel
 * of x (rows alike).  Pixels off the image are NaN.
 */
extern WdcStatus wdc_fits_read_cutout(const WdcEnv *env, WdcFitsFile *file,
									  int64_t plane, double x, double y,
									  size_t width, size_t height,
									  WdcImage *out);

/*
 * Read one image from FITS bytes in a single call (open, select, read,
 * close), as wdc.encode does with a FITS argument.  hdu and plane as for
 * wdc_fits_select_image() and wdc_fits_read_image().
 */
extern WdcStatus wdc_fits_load_image(const WdcEnv *env, const void *data,
									 size_t len, const WdcFitsLimits *limits,
									 int hdu, int64_t plane, WdcImage *out);

/* First column or row (1-based) of a window of size n centred on c. */
extern int64_t wdc_fits_cutout_start(double c, size_t n);

/* --- fits_header.c --- */

/*
 * Render the selected HDU's header as a JSON object text, allocated with the
 * WdcEnv allocator and NUL-terminated.  Values keep their FITS type: logical
 * -> true/false, integer and real -> number (Fortran "D" exponents become
 * "E"), string -> string (CONTINUE long strings joined), no value -> null.
 * COMMENT, HISTORY and blank-keyword cards are collected into arrays of
 * strings under "COMMENT", "HISTORY" and "".  For a tile-compressed image
 * the header is the image's, as fpack's funpack would write it.  When a
 * keyword repeats, the last value wins (as jsonb keeps it).
 */
extern WdcStatus wdc_fits_header_json(const WdcEnv *env, WdcFitsFile *file,
									  char **json);

/*
 * Fetch the selected HDU's header as consecutive 80-character cards without
 * the END card, allocated with the WdcEnv allocator and NUL-terminated.
 */
extern WdcStatus wdc_fits_header_cards(const WdcEnv *env, WdcFitsFile *file,
									   char **cards, int *ncards);

/* --- fits_wcs.c --- */

/* Celestial frame of an image's WCS. */
typedef enum WdcSkyFrame
{
	WDC_SKY_EQUATORIAL,			/* RA/DEC (ICRS, FK5 J2000) */
	WDC_SKY_GALACTIC			/* GLON/GLAT */
} WdcSkyFrame;

/*
 * Convert a sky position to a FITS 1-based pixel position in the selected
 * HDU with wcslib (all projections of the FITS WCS standard, SIP and other
 * distortions).  ra and dec are J2000 equatorial degrees; for an image in
 * galactic coordinates they are rotated to (l, b) first.  A position that
 * does not project onto the image plane is WDC_ERR_DATA; a header without a
 * celestial WCS is WDC_ERR_INVALID.
 */
extern WdcStatus wdc_fits_sky_to_pixel(const WdcEnv *env, WdcFitsFile *file,
									   double ra, double dec,
									   double *x, double *y);

/*
 * Same as wdc_fits_sky_to_pixel(), but (lng, lat) are already in the
 * image's own celestial frame; *frame receives that frame.
 */
extern WdcStatus wdc_fits_world_to_pixel(const WdcEnv *env, WdcFitsFile *file,
										 double lng, double lat,
										 double *x, double *y,
										 WdcSkyFrame *frame);

/* Rotate J2000 equatorial (ra, dec) to galactic (l, b), all in degrees. */
extern void wdc_sky_equatorial_to_galactic(double ra, double dec,
										   double *l, double *b);

/* Free an image's pixels and zero it; accepts an empty image. */
extern void wdc_image_free(const WdcEnv *env, WdcImage *image);

#endif							/* WDC_FITS_H */
