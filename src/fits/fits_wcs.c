/*
 * fits_wcs.c
 *	  Sky to pixel positions through an image's WCS, computed with wcslib.
 *
 * wcslib implements the FITS WCS standard (papers I-III, all projections,
 * ZPN and SIN among them) and, through its distortion module, the SIP and
 * TPV polynomials, which cfitsio's own WCS routines only approximate or
 * lack.  The header cards of the selected HDU are parsed with wcspih; the
 * two image axes are extracted with wcssub, which must be the celestial
 * axes; wcss2p then gives FITS 1-based pixel coordinates.
 */
#include "fits/fits_internal.h"

#include <math.h>
#include <string.h>

#include <wcslib/wcs.h>
#include <wcslib/wcsfix.h>
#include <wcslib/wcshdr.h>

/*
 * Rotation from J2000 equatorial to galactic direction cosines, the matrix
 * the Hipparcos catalogue uses for ICRS to galactic.  Its rows are the
 * galactic x, y and z axes in equatorial coordinates.  astropy's galactic
 * frame, derived from FK4 B1950, agrees with it to about 10 mas.
 */
static const double equatorial_to_galactic[3][3] = {
	{-0.0548755604162154, -0.8734370902348850, -0.4838350155487132},
	{+0.4941094278755837, -0.4448296299600112, +0.7469822444972189},
	{-0.8676661490190047, -0.1980763734312015, +0.4559837761750669},
};

void
wdc_sky_equatorial_to_galactic(double ra, double dec, double *l, double *b)
{
	const double deg = M_PI / 180.0;
	double		v[3] = {cos(dec * deg) * cos(ra * deg),
	cos(dec * deg) * sin(ra * deg),
	sin(dec * deg)};
	double		g[3];

	for (int i = 0; i < 3; i++)
		g[i] = equatorial_to_galactic[i][0] * v[0] +
			equatorial_to_galactic[i][1] * v[1] +
			equatorial_to_galactic[i][2] * v[2];
	*l = atan2(g[1], g[0]) / deg;
	if (*l < 0)
		*l += 360.0;
	*b = atan2(g[2], sqrt(g[0] * g[0] + g[1] * g[1])) / deg;
}

/* Report a wcslib failure with its own message in the detail. */
static WdcStatus
wcs_fail(const WdcEnv *env, WdcStatus code, const struct wcsprm *wcs,
		 int wcsstatus, const char *message, int hdu)
{
	wdc_error(env, code, message, hdu);
	if (wcs && wcs->err && wcs->err->msg[0])
		return wdc_error_detail(env, "wcslib status %d: %s.", wcsstatus,
								wcs->err->msg);
	if (wcsstatus > 0 && wcsstatus < 14)
		return wdc_error_detail(env, "wcslib status %d: %s.", wcsstatus,
								wcs_errmsg[wcsstatus]);
	return code;
}

/*
 * Parse the selected HDU's WCS and keep the celestial part of its two image
 * axes in *celestial (wcsfree and free it after use).
 */
static WdcStatus
load_celestial_wcs(const WdcEnv *env, WdcFitsFile *file,
				   struct wcsprm *celestial, WdcSkyFrame *frame)
{
	char	   *cards;
	int			ncards;
	int			nreject = 0;
	int			nwcs = 0;
	struct wcsprm *all = NULL;
	int			axes[2] = {1, 2};
	int			nsub = 2;
	int			hdu = file->info.hdu;
	int			stat[NWCSFIX];
	int			wstatus;
	WdcStatus	rc;

	rc = wdc_fits_header_cards(env, file, &cards, &ncards);
	if (rc != WDC_OK)
		return rc;

	/* 1. Parse every WCS in the header; use the primary one. */
	wstatus = wcspih(cards, ncards, WCSHDR_all, 0, &nreject, &nwcs, &all);
	wdc_free(env, cards);
	if (wstatus != 0)
	{
		wdc_error(env, WDC_ERR_CORRUPT, "could not parse the WCS of HDU %d", hdu);
		return wdc_error_detail(env, "wcslib status %d: %s.", wstatus,
								wcshdr_errmsg[wstatus]);
	}
	if (nwcs == 0 || all[0].naxis < 2)
	{
		wcsvfree(&nwcs, &all);
		wdc_error(env, WDC_ERR_INVALID, "HDU %d has no celestial WCS", hdu);
		return wdc_error_hint(env, "Use a pixel cutout instead of a sky cutout.");
	}

	/* 2. Keep image axes 1 and 2; they must be longitude and latitude. */
	celestial->flag = -1;
	wstatus = wcssub(1, &all[0], &nsub, axes, celestial);
	wcsvfree(&nwcs, &all);
	if (wstatus != 0)
		return wcs_fail(env, WDC_ERR_UNSUPPORTED, celestial, wstatus,
						"could not use the WCS of HDU %d", hdu);

	/* Repair common non-standard forms (old date keywords, -CAR origin...). */
	wcsfix(7, NULL, celestial, stat);
	wstatus = wcsset(celestial);
	if (wstatus != 0)
	{
		wcs_fail(env, WDC_ERR_UNSUPPORTED, celestial, wstatus,
				 "could not use the WCS of HDU %d", hdu);
		wcsfree(celestial);
		return WDC_ERR_UNSUPPORTED;
	}
	if (celestial->lng < 0 || celestial->lat < 0)
	{
		wcsfree(celestial);
		wdc_error(env, WDC_ERR_INVALID,
				  "image axes of HDU %d are not celestial", hdu);
		return wdc_error_hint(env, "Use a pixel cutout instead of a sky cutout.");
	}

	/*
	 * 3. The frame decides how (ra, dec) enter.
	 * NOTE: an equatorial image is taken to be in J2000 (ICRS or FK5); one
	 * whose RADESYS is FK4 (B1950) would need precession, which is not done.
	 */
	if (strncmp(celestial->lngtyp, "RA", 2) == 0)
		*frame = WDC_SKY_EQUATORIAL;
	else if (strncmp(celestial->lngtyp, "GLON", 4) == 0)
		*frame = WDC_SKY_GALACTIC;
	else
	{
		wdc_error(env, WDC_ERR_UNSUPPORTED,
				  "celestial frame \"%s\" of HDU %d is not supported",
				  celestial->lngtyp, hdu);
		wcsfree(celestial);
		return wdc_error_detail(env, "Equatorial (RA/DEC) and galactic "
								"(GLON/GLAT) frames are supported.");
	}
	return WDC_OK;
}

/*
 * Project (lng, lat) onto the selected image.  When equatorial_input is set,
 * (lng, lat) are J2000 (ra, dec) and are rotated into the image's frame
 * first; otherwise they are in the image's own frame.
 */
static WdcStatus
project(const WdcEnv *env, WdcFitsFile *file, double lng, double lat,
		bool equatorial_input, double *x, double *y, WdcSkyFrame *frame)
{
	struct wcsprm celestial;
	double		world[2],
				phi,
				theta,
				imgcrd[2],
				pixcrd[2];
	double		in_lng = lng,
				in_lat = lat;
	int			status = 0;
	int			wstatus;
	WdcStatus	rc;

	if (!file->selected)
		return wdc_error(env, WDC_ERR_INTERNAL, "no FITS image HDU selected");
	if (!isfinite(lng) || !isfinite(lat) || lat < -90.0 || lat > 90.0)
		return wdc_error(env, WDC_ERR_INVALID,
						 "sky position (%g, %g) is not valid", lng, lat);

	memset(&celestial, 0, sizeof(celestial));
	rc = load_celestial_wcs(env, file, &celestial, frame);
	if (rc != WDC_OK)
		return rc;
	if (equatorial_input && *frame == WDC_SKY_GALACTIC)
		wdc_sky_equatorial_to_galactic(in_lng, in_lat, &lng, &lat);

	world[celestial.lng] = lng;
	world[celestial.lat] = lat;
	wstatus = wcss2p(&celestial, 1, 2, world, &phi, &theta, imgcrd, pixcrd,
					 &status);
	if (wstatus == WCSERR_BAD_WORLD || (wstatus == 0 && status != 0) ||
		(wstatus == 0 && (!isfinite(pixcrd[0]) || !isfinite(pixcrd[1]))))
	{
		wcsfree(&celestial);
		wdc_error(env, WDC_ERR_DATA,
				  "sky position (%g, %g) does not project onto the image in HDU %d",
				  in_lng, in_lat, file->info.hdu);
		return wdc_error_detail(env, "The position lies outside the domain of "
								"the image's projection.");
	}
	if (wstatus != 0)
	{
		wcs_fail(env, WDC_ERR_DATA, &celestial, wstatus,
				 "could not convert a sky position in HDU %d", file->info.hdu);
		wcsfree(&celestial);
		return WDC_ERR_DATA;
	}
	wcsfree(&celestial);
	*x = pixcrd[0];
	*y = pixcrd[1];
	return WDC_OK;
}

WdcStatus
wdc_fits_world_to_pixel(const WdcEnv *env, WdcFitsFile *file,
						double lng, double lat, double *x, double *y,
						WdcSkyFrame *frame)
{
	return project(env, file, lng, lat, false, x, y, frame);
}

WdcStatus
wdc_fits_sky_to_pixel(const WdcEnv *env, WdcFitsFile *file, double ra,
					  double dec, double *x, double *y)
{
	WdcSkyFrame frame;

	return project(env, file, ra, dec, true, x, y, &frame);
}
