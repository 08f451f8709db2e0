/*
 * fits_internal.h
 *	  State of an open FITS input, shared by the src/fits/fits_*.c files.
 */
#ifndef WDC_FITS_INTERNAL_H
#define WDC_FITS_INTERNAL_H

#include <fitsio.h>

#include "fits/fits.h"

struct WdcFitsFile
{
	fitsfile   *fptr;			/* cfitsio handle, NULL once closed */

	/*
	 * cfitsio's memory driver keeps the addresses of the buffer pointer and
	 * of its size, so both live here, where they stay put while the file is
	 * open.
	 */
	void	   *mem;
	size_t		mem_size;
	void	   *owned;			/* inflated gzip data we free, or NULL */
	size_t		total_bytes;	/* bytes of the uncompressed FITS stream */
	WdcFitsLimits limits;

	bool		selected;		/* an image HDU has been selected */
	bool		header_selected;	/* an HDU of any type is current for its header */
	WdcFitsImageInfo info;		/* the selected image HDU */
};

/*
 * Record a cfitsio failure: status code, primary message as given, detail
 * holding cfitsio's text for the status and its error-message stack, which
 * is cleared.  Returns code.
 */
extern WdcStatus wdc_fits_fail(const WdcEnv *env, WdcStatus code,
							   int cfitsio_status, const char *fmt,...)
			__attribute__((format(printf, 4, 5)));

/* True when every pixel count fits under limits->max_pixels (0 = none). */
static inline bool
wdc_fits_pixels_allowed(const WdcFitsLimits *limits, size_t npixels)
{
	return limits->max_pixels == 0 || npixels <= limits->max_pixels;
}

#endif							/* WDC_FITS_INTERNAL_H */
