-- SQLSTATEs of the FITS, preprocessing and PNG functions, and PNG output
-- of real cutouts.  Runs from the repository root (scripts/test-sql), so
-- the real images are under data/real.
\set real `pwd`/data/real/
\set ON_ERROR_STOP 1
BEGIN;
SELECT plan(24);

CREATE TEMP TABLE f AS
SELECT name, pg_read_binary_file(:'real' || name) AS data
FROM unnest(ARRAY['first_sin.fits', 'dss_table.fits.gz', 'fermi_car.fits.gz',
	'hi_cube_ngc6503.fits', 'saao_uint16.fits', 'spitzer_sip.fits']) AS name;

-- input data problems
SELECT throws_ok($$SELECT wdc.fits_image('not FITS'::bytea)$$, '22P03', NULL,
	'non-FITS bytea is invalid_binary_representation');
SELECT throws_ok($$SELECT wdc.fits_image(substring(data FROM 1 FOR length(data) - 2880)) FROM f WHERE name = 'first_sin.fits'$$,
	'22P03', 'FITS data is truncated', 'truncated bytea is invalid_binary_representation');
SELECT throws_ok($$SELECT wdc.fits_image(substring(data FROM 1 FOR length(data) - 50)) FROM f WHERE name = 'fermi_car.fits.gz'$$,
	'22P03', 'gzip FITS data is truncated', 'truncated gzip is invalid_binary_representation');
SELECT throws_ok($$SELECT wdc.fits_image('\x1f9d9000'::bytea)$$, '0A000', NULL,
	'Unix compress input is feature_not_supported');

-- bad arguments
SELECT throws_ok($$SELECT wdc.fits_image(data, 5) FROM f WHERE name = 'first_sin.fits'$$,
	'22023', 'HDU 5 does not exist in the FITS input', 'missing HDU is invalid_parameter_value');
SELECT throws_ok($$SELECT wdc.fits_image(data, 1) FROM f WHERE name = 'dss_table.fits.gz'$$,
	'22023', 'HDU 1 of the FITS input is a binary table', 'table HDU is invalid_parameter_value');
SELECT throws_ok($$SELECT wdc.fits_image(data) FROM f WHERE name = 'hi_cube_ngc6503.fits'$$,
	'22023', 'image in HDU 0 has 30 planes', 'cube without plane is invalid_parameter_value');
SELECT throws_ok($$SELECT wdc.fits_cutout(data, 1, 1, -3) FROM f WHERE name = 'first_sin.fits'$$,
	'22023', 'cutout size -3 is out of range', 'negative size is invalid_parameter_value');
SELECT throws_ok($$SELECT wdc.fits_cutout_sky(data, 1, 1, 4) FROM f WHERE name = 'saao_uint16.fits'$$,
	'22023', 'image axes of HDU 0 are not celestial', 'image without WCS is invalid_parameter_value');
SELECT throws_ok($$SELECT wdc.fits_cutout_sky(data, 342.5, -30.7, 4) FROM f WHERE name = 'first_sin.fits'$$,
	'22000', NULL, 'position off the projection is data_exception');

-- limits and privileges
SET wdc.fits_max_mb = 1;
SELECT throws_ok($$SELECT wdc.fits_image(data) FROM f WHERE name = 'saao_uint16.fits'$$,
	'54000', NULL, 'image over wdc.fits_max_mb is program_limit_exceeded');
RESET wdc.fits_max_mb;
SELECT throws_ok($$SELECT wdc.fits_cutout('/nonexistent/x.fits', 1, 1, 4)$$, '58P01', NULL,
	'missing server file is undefined_file');
CREATE ROLE fits_tap_plain;
GRANT SELECT ON f TO fits_tap_plain;
SET ROLE fits_tap_plain;
SELECT throws_ok($$SELECT wdc.fits_cutout('x.fits', 1, 1, 4)$$, '42501', NULL,
	'server file without pg_read_server_files is insufficient_privilege');
SELECT lives_ok($$SELECT wdc.fits_cutout(data, 1, 1, 4) FROM f WHERE name = 'first_sin.fits'$$,
	'bytea cutout needs no privilege');
RESET ROLE;

-- option errors
SELECT throws_ok($$SELECT wdc.png('{{1,2},{3,4}}'::real[], '{"stretch": "cubic"}')$$, '22023', NULL,
	'bad PNG option value is invalid_parameter_value');
SELECT throws_ok($$SELECT wdc.png('{{1,NULL},{3,4}}'::real[])$$, '22004', NULL,
	'NULL pixel is null_value_not_allowed');
SELECT throws_ok($$SELECT wdc.preprocess('{1,2}'::real[], '{}')$$, '22000', NULL,
	'1-D image is data_exception');
SELECT throws_ok($$SELECT wdc.preprocess('{{1,2},{3,4}}'::real[], '{"normalize": "l2"}')$$, '22023', NULL,
	'bad preprocessing option is invalid_parameter_value');

-- PNG of a real sky cutout: signature, size, grey type, IEND at the end
CREATE TEMP TABLE p AS
SELECT wdc.png(wdc.fits_cutout_sky(data, 138.8919, 29.2853, 48),
	'{"limits": "zscale", "stretch": "asinh", "scale": 2}') AS png
FROM f WHERE name = 'spitzer_sip.fits';
SELECT is(substring(png FROM 1 FOR 8), '\x89504e470d0a1a0a'::bytea, 'PNG signature') FROM p;
SELECT is(substring(png FROM 13 FOR 4), 'IHDR'::bytea, 'IHDR first') FROM p;
SELECT is((get_byte(png, 18) << 8) | get_byte(png, 19), 96, 'PNG width is 2 x 48') FROM p;
SELECT is((get_byte(png, 22) << 8) | get_byte(png, 23), 96, 'PNG height is 2 x 48') FROM p;
SELECT is(get_byte(png, 25), 0, 'PNG is 8-bit grey') FROM p;
SELECT is(substring(png FROM length(png) - 7 FOR 4), 'IEND'::bytea, 'IEND last') FROM p;

SELECT * FROM finish();
ROLLBACK;
