
-- ==========================================================================
-- FITS images, preprocessing and PNG output
-- ==========================================================================
--
-- HDUs are numbered from 0 (the primary HDU), as astropy and cfitsio's
-- "file.fits[n]" number them; NULL selects the first HDU with image data.
-- Pixel positions are FITS 1-based: pixel (x, y) is element [y][x] of the
-- returned real[], whose dimensions are [1:NAXIS2][1:NAXIS1].  Cubes need a
-- plane (1-based over the axes beyond the second); axes of length 1 are
-- ignored.  The bytea functions are IMMUTABLE: the setting wdc.fits_max_mb
-- only decides whether an oversized input fails, never what a call returns.
-- The server-file variants are VOLATILE, because the file can change, and
-- need the privileges of pg_read_server_files.

CREATE FUNCTION wdc.fits_image(fits bytea, hdu integer DEFAULT NULL,
							   plane integer DEFAULT NULL)
	RETURNS real[]
	AS 'MODULE_PATHNAME', 'fits_image'
	LANGUAGE C IMMUTABLE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION wdc.fits_image(bytea, integer, integer) IS
	'image of a FITS file (plain, gzip or tile-compressed) as real[NAXIS2][NAXIS1] with BSCALE/BZERO applied and BLANK as NaN; hdu from 0, NULL = first image; plane from 1 for cubes';

CREATE FUNCTION wdc.fits_header(fits bytea, hdu integer DEFAULT NULL)
	RETURNS jsonb
	AS 'MODULE_PATHNAME', 'fits_header'
	LANGUAGE C IMMUTABLE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION wdc.fits_header(bytea, integer) IS
	'header of an HDU as jsonb (keyword -> typed value; COMMENT and HISTORY cards as arrays of strings): the named HDU of any type, by default the first HDU with image data';

CREATE FUNCTION wdc.fits_cutout(fits bytea, x double precision, y double precision,
								size integer, hdu integer DEFAULT NULL,
								plane integer DEFAULT NULL)
	RETURNS real[]
	AS 'MODULE_PATHNAME', 'fits_cutout'
	LANGUAGE C IMMUTABLE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION wdc.fits_cutout(bytea, double precision, double precision, integer, integer, integer) IS
	'size x size pixel cutout centred within half a pixel of the FITS 1-based pixel (x, y); pixels off the image are NaN';

CREATE FUNCTION wdc.fits_cutout(path text, x double precision, y double precision,
								size integer, hdu integer DEFAULT NULL,
								plane integer DEFAULT NULL)
	RETURNS real[]
	AS 'MODULE_PATHNAME', 'fits_cutout_path'
	LANGUAGE C VOLATILE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION wdc.fits_cutout(text, double precision, double precision, integer, integer, integer) IS
	'pixel cutout of a FITS file on the server (path taken literally, no cfitsio filename syntax); needs pg_read_server_files; pixels off the image are NaN';

CREATE FUNCTION wdc.fits_cutout_sky(fits bytea, ra double precision, "dec" double precision,
									size integer, hdu integer DEFAULT NULL,
									plane integer DEFAULT NULL)
	RETURNS real[]
	AS 'MODULE_PATHNAME', 'fits_cutout_sky'
	LANGUAGE C IMMUTABLE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION wdc.fits_cutout_sky(bytea, double precision, double precision, integer, integer, integer) IS
	'size x size pixel cutout (image pixel grid, not resampled) centred on J2000 (ra, dec) in degrees through the image WCS (wcslib: all projections, SIP); pixels off the image are NaN';

CREATE FUNCTION wdc.fits_cutout_sky(path text, ra double precision, "dec" double precision,
									size integer, hdu integer DEFAULT NULL,
									plane integer DEFAULT NULL)
	RETURNS real[]
	AS 'MODULE_PATHNAME', 'fits_cutout_sky_path'
	LANGUAGE C VOLATILE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION wdc.fits_cutout_sky(text, double precision, double precision, integer, integer, integer) IS
	'sky cutout of a FITS file on the server (path taken literally); needs pg_read_server_files; pixels off the image are NaN';

CREATE FUNCTION wdc.fits_sky_to_pixel(fits bytea, ra double precision,
									  "dec" double precision, hdu integer DEFAULT NULL)
	RETURNS double precision[]
	AS 'MODULE_PATHNAME', 'fits_sky_to_pixel'
	LANGUAGE C IMMUTABLE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION wdc.fits_sky_to_pixel(bytea, double precision, double precision, integer) IS
	'FITS 1-based pixel position {x, y} of J2000 (ra, dec) in degrees through the image WCS (galactic images: rotated to l, b)';

CREATE FUNCTION wdc.preprocess(image real[], options jsonb)
	RETURNS real[]
	AS 'MODULE_PATHNAME', 'preprocess'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 100;
COMMENT ON FUNCTION wdc.preprocess(real[], jsonb) IS
	'model input preprocessing of a 2-D image, in order: nan_fill, resize to width x height (bilinear or area), clip_low/clip_high percentiles, stretch (asinh or log, stretch_scale), normalize (minmax or zscore)';

CREATE FUNCTION wdc.png(image real[], options jsonb DEFAULT '{}')
	RETURNS bytea
	AS 'MODULE_PATHNAME', 'png'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 100;
COMMENT ON FUNCTION wdc.png(real[], jsonb) IS
	'8-bit greyscale PNG of a 2-D image; options: limits (minmax, percentile with lower/upper, zscale), min, max, stretch (linear, sqrt, asinh with asinh_a, log), nan (grey level or transparent), origin (lower = FITS row 1 at the bottom, or upper), scale (1-16)';
