-- wdc FITS functions on real survey images from data/real (scripts/fetch-data)
\getenv abs_srcdir PG_ABS_SRCDIR
-- The input directory's "sql" entry links to test/regress of the repository.
\set root `cd -P :abs_srcdir/sql && cd ../.. && pwd`
\set real :root/data/real/
SET extra_float_digits = 0;

CREATE TABLE fits_files (name text PRIMARY KEY, data bytea NOT NULL);
INSERT INTO fits_files
SELECT name, pg_read_binary_file(:'real' || name)
FROM unnest(ARRAY['first_sin.fits', 'magpis_sin.fits', 'ukidss_zpn.fits',
	'spitzer_sip.fits', 'cfht_megaprime.fits', 'saao_uint16.fits',
	'scale.fits', 'blank.fits', 'wfpc2_m51.fits.gz', 'fermi_car.fits.gz',
	'dss_table.fits.gz', 'fpack_gzip2.fits.fz', 'hi_cube_ngc6503.fits']) AS name;

-- One line per image: dimensions, pixel count, NaN count, sum of the rest.
CREATE FUNCTION fits_summary(image real[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT array_dims(image) || ' nan=' || count(*) FILTER (WHERE v = 'NaN')
		|| ' sum=' || coalesce(round(sum(v::numeric) FILTER (WHERE v <> 'NaN'), 6)::text, '-')
	FROM unnest(image) AS v
$$;

-- Run a statement and return its error as "SQLSTATE: message", with the
-- repository path replaced by <root> so that the output does not depend on
-- where the tests run.
CREATE FUNCTION fits_error(statement text, root text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE statement;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || replace(SQLERRM, root, '<root>');
END
$$;

-- fits_image: every file, first image HDU
SELECT name, fits_summary(wdc.fits_image(data, NULL,
	CASE WHEN name = 'hi_cube_ngc6503.fits' THEN 17 END))
FROM fits_files ORDER BY name;

-- pixel (x, y) is element [y][x]
SELECT (img)[17][17] AS centre, (img)[1][33] AS x33_y1, (img)[33][1] AS x1_y33
FROM (SELECT wdc.fits_image(data) AS img FROM fits_files WHERE name = 'first_sin.fits') s;
-- unsigned 16-bit through BZERO 32768, BSCALE on 16-bit, BLANK -> NaN
SELECT (wdc.fits_image(data))[346][178] FROM fits_files WHERE name = 'saao_uint16.fits';
SELECT (wdc.fits_image(data))[11][10] FROM fits_files WHERE name = 'scale.fits';
SELECT wdc.fits_image(data) FROM fits_files WHERE name = 'blank.fits';

-- explicit HDUs: primary of a multi-extension file is empty, image in 1
SELECT fits_summary(wdc.fits_image(data, 1)) FROM fits_files WHERE name = 'fermi_car.fits.gz';
SELECT fits_summary(wdc.fits_image(data, 0)) FROM fits_files WHERE name = 'dss_table.fits.gz';
-- cube planes 1 and 30
SELECT fits_summary(wdc.fits_image(data, plane => 1)),
	   fits_summary(wdc.fits_image(data, plane => 30))
FROM fits_files WHERE name = 'hi_cube_ngc6503.fits';
-- NULL input
SELECT wdc.fits_image(NULL) IS NULL AS null_in_null_out;

-- fits_header
-- a named HDU's header is read whatever its type (here a binary table)
SELECT h->>'XTENSION' AS xtension, h->'TFIELDS' AS tfields
FROM (SELECT wdc.fits_header(data, 1) AS h FROM fits_files WHERE name = 'dss_table.fits.gz') s;
SELECT h->'NAXIS1' AS naxis1, h->'NAXIS2' AS naxis2, h->'BITPIX' AS bitpix,
	   h->'CTYPE1' AS ctype1, h->'CRVAL1' AS crval1, jsonb_typeof(h->'HISTORY') AS history
FROM (SELECT wdc.fits_header(data) AS h FROM fits_files WHERE name = 'first_sin.fits') s;
SELECT h->'BITPIX' AS bitpix, h->'NAXIS1' AS naxis1, h ? 'ZBITPIX' AS has_zbitpix
FROM (SELECT wdc.fits_header(data) AS h FROM fits_files WHERE name = 'fpack_gzip2.fits.fz') s;
SELECT h->'CTYPE1' AS ctype1, h->'PV2_3' AS pv2_3, h->'BSCALE' AS bscale
FROM (SELECT wdc.fits_header(data, 1) AS h FROM fits_files WHERE name = 'ukidss_zpn.fits') s;
SELECT h->'SIMPLE' AS simple, h->'EXTEND' AS extend, h->'NAXIS' AS naxis
FROM (SELECT wdc.fits_header(data, 0) AS h FROM fits_files WHERE name = 'dss_table.fits.gz') s;

-- fits_cutout: inside, off the edge (NaN padded), odd and even sizes (the
-- window's centre lies within half a pixel of the position asked for)
SELECT fits_summary(wdc.fits_cutout(data, 150, 150, 32)) FROM fits_files WHERE name = 'magpis_sin.fits';
SELECT fits_summary(wdc.fits_cutout(data, 1, 1, 8)) FROM fits_files WHERE name = 'magpis_sin.fits';
SELECT fits_summary(wdc.fits_cutout(data, -100, -100, 4)) FROM fits_files WHERE name = 'magpis_sin.fits';
SELECT (c)[3][3] = (i)[99][99] AS odd_centre, (c2)[2][2] = (i)[99][99] AS even_centre,
	   (c2)[1][1] = (i)[98][98] AS even_corner
FROM (SELECT wdc.fits_cutout(data, 99, 99, 5) AS c, wdc.fits_cutout(data, 99.4, 99.4, 4) AS c2,
			 wdc.fits_image(data) AS i
	  FROM fits_files WHERE name = 'magpis_sin.fits') s;
SELECT fits_summary(wdc.fits_cutout(data, 32, 32, 16, NULL, 5)) FROM fits_files WHERE name = 'hi_cube_ngc6503.fits';

-- fits_sky_to_pixel and fits_cutout_sky: TAN-SIP, ZPN, SIN, galactic SIN and CAR
SELECT name, array(SELECT round(v::numeric, 4) FROM unnest(
	wdc.fits_sky_to_pixel(data, ra, dec)) AS v) AS pixel
FROM fits_files JOIN (VALUES
	('spitzer_sip.fits', 138.91647754788727, 29.287547718643353),
	('ukidss_zpn.fits', 83.63068653396518, 22.0196624679835),
	('first_sin.fits', 162.5324473147382, 30.68153830684376),
	('cfht_megaprime.fits', 280.8374869245786, 0.38866420022989184),
	('magpis_sin.fits', 272.19877238965165, -19.853048288114866),
	('fermi_car.fits.gz', 266.48351608768223, -28.919524178528626)) AS t(n, ra, dec)
	ON name = n
ORDER BY name;
SELECT wdc.fits_cutout_sky(data, 162.5298183439104, 30.676918876152964, 9)
	= wdc.fits_cutout(data, 17, 17, 9) AS sky_equals_pixel
FROM fits_files WHERE name = 'first_sin.fits';
SELECT fits_summary(wdc.fits_cutout_sky(data, 138.8919175167846, 29.285293865887756, 16))
FROM fits_files WHERE name = 'spitzer_sip.fits';

-- server files: same pixels as the bytea
SELECT wdc.fits_cutout(:'real' || 'ukidss_zpn.fits', 150, 150, 24, 1)
	= wdc.fits_cutout(data, 150, 150, 24, 1) AS path_equals_bytea
FROM fits_files WHERE name = 'ukidss_zpn.fits';
SELECT wdc.fits_cutout_sky(:'real' || 'fermi_car.fits.gz', 266.4835, -28.9195, 10)
	= wdc.fits_cutout_sky(data, 266.4835, -28.9195, 10) AS gzip_path_equals_bytea
FROM fits_files WHERE name = 'fermi_car.fits.gz';

-- errors: not FITS, truncated, compressed otherwise
SELECT wdc.fits_image('hello, not a FITS file'::bytea);
SELECT wdc.fits_image(''::bytea);
SELECT wdc.fits_image(substring(data FROM 1 FOR length(data) - 2880))
FROM fits_files WHERE name = 'first_sin.fits';
-- (cfitsio's own words in the detail vary between its versions)
\set VERBOSITY terse
SELECT wdc.fits_image(substring(data FROM 1 FOR 2000))
FROM fits_files WHERE name = 'first_sin.fits';
\set VERBOSITY default
SELECT wdc.fits_image(substring(data FROM 1 FOR length(data) - 100))
FROM fits_files WHERE name = 'wfpc2_m51.fits.gz';
SELECT wdc.fits_image('\x425a6839314159265359'::bytea);
-- errors: HDU and plane
SELECT wdc.fits_image(data, 2) FROM fits_files WHERE name = 'dss_table.fits.gz';
SELECT wdc.fits_image(data, 1) FROM fits_files WHERE name = 'dss_table.fits.gz';
SELECT wdc.fits_image(data, 0) FROM fits_files WHERE name = 'fermi_car.fits.gz';
SELECT wdc.fits_image(data, -1) FROM fits_files WHERE name = 'first_sin.fits';
SELECT wdc.fits_image(data) FROM fits_files WHERE name = 'hi_cube_ngc6503.fits';
SELECT wdc.fits_image(data, plane => 31) FROM fits_files WHERE name = 'hi_cube_ngc6503.fits';
SELECT wdc.fits_image(data, plane => 0) FROM fits_files WHERE name = 'hi_cube_ngc6503.fits';
SELECT wdc.fits_header(data, 5) FROM fits_files WHERE name = 'dss_table.fits.gz';
-- errors: cutout arguments and WCS
SELECT wdc.fits_cutout(data, 10, 10, 0) FROM fits_files WHERE name = 'first_sin.fits';
SELECT wdc.fits_cutout(data, 'NaN', 10, 4) FROM fits_files WHERE name = 'first_sin.fits';
SELECT wdc.fits_cutout_sky(data, 10, 10, 4) FROM fits_files WHERE name = 'saao_uint16.fits';
SELECT wdc.fits_cutout_sky(data, 10, 95, 4) FROM fits_files WHERE name = 'first_sin.fits';
SELECT wdc.fits_cutout_sky(data, 342.5, -30.7, 4) FROM fits_files WHERE name = 'first_sin.fits';

-- size limits: wdc.fits_max_mb bounds pixels (4 bytes each) and gzip output
SET wdc.fits_max_mb = 1;
SHOW wdc.fits_max_mb;
-- 536 x 520 pixels is over 262144 (1 MB of floats); a cutout is not
SELECT wdc.fits_image(data) FROM fits_files WHERE name = 'saao_uint16.fits';
SELECT fits_summary(wdc.fits_cutout(data, 100, 100, 512)) FROM fits_files WHERE name = 'saao_uint16.fits';
SELECT wdc.fits_cutout(data, 100, 100, 513) FROM fits_files WHERE name = 'saao_uint16.fits';
-- a gzip stream that inflates to 3 MB stops at 1 MB
\set bomb `(printf 'SIMPLE  =                    T'; head -c 3000000 /dev/zero) | gzip -c | base64 -w0`
SELECT wdc.fits_image(decode(:'bomb', 'base64'));
RESET wdc.fits_max_mb;
\set VERBOSITY terse
SELECT wdc.fits_image(decode(:'bomb', 'base64'));
\set VERBOSITY default
SET wdc.fits_max_mb = 0;
SET wdc.fits_max_mb = 1025;
SET wdc.fits_max_mb = '1GB';
SHOW wdc.fits_max_mb;
RESET wdc.fits_max_mb;

-- server files: taken literally, no cfitsio extended filename syntax
SELECT fits_error(format('SELECT wdc.fits_cutout(%L, 10, 10, 4)', :'real' || 'first_sin.fits[0]'), :'root');
SELECT fits_error(format('SELECT wdc.fits_cutout(%L, 10, 10, 4)',
	:'real' || 'first_sin.fits(' || :'real' || 'written.fits)'), :'root');
SELECT fits_error(format('SELECT wdc.fits_cutout(%L, 10, 10, 4)', :'real' || 'fermi_car.fits'), :'root');
SELECT fits_error(format('SELECT wdc.fits_cutout(%L, 10, 10, 4)', 'mem://'), :'root');
SELECT fits_error(format('SELECT wdc.fits_cutout(%L, 10, 10, 4)', :'real'), :'root');
SELECT fits_error(format('SELECT wdc.fits_image(pg_read_binary_file(%L))', :'real' || 'written.fits'), :'root');

-- Files whose names contain the syntax open as themselves.  They are
-- written into the data directory, which the test cluster discards, and
-- read by paths relative to it.
DO $$
BEGIN
	EXECUTE format('COPY (SELECT %L) TO %L', 'plain text, not FITS',
		current_setting('data_directory') || '/wdc_fits_regress.fits[0]');
	EXECUTE format('COPY (SELECT %L) TO %L', 'plain text, not FITS',
		current_setting('data_directory') || '/wdc_fits_regress.fits(wdc_fits_out.fits)');
END
$$;
SELECT wdc.fits_cutout('wdc_fits_regress.fits[0]', 10, 10, 4);
SELECT wdc.fits_cutout_sky('wdc_fits_regress.fits(wdc_fits_out.fits)', 10, 10, 4);
SELECT pg_stat_file('wdc_fits_out.fits', true) IS NULL AS nothing_written;

-- server files: only for roles with pg_read_server_files
CREATE ROLE fits_no_files;
CREATE ROLE fits_files_reader IN ROLE pg_read_server_files;
GRANT SELECT ON fits_files TO fits_no_files, fits_files_reader;
SET ROLE fits_no_files;
SELECT wdc.fits_cutout('first_sin.fits', 10, 10, 4);
SELECT wdc.fits_cutout_sky('first_sin.fits', 162.53, 30.67, 4);
-- the bytea form needs no privilege
SELECT fits_summary(wdc.fits_cutout(data, 10, 10, 4)) FROM fits_files WHERE name = 'first_sin.fits';
RESET ROLE;
SET ROLE fits_files_reader;
SELECT fits_summary(wdc.fits_cutout(:'real' || 'first_sin.fits', 10, 10, 4));
RESET ROLE;
DROP OWNED BY fits_no_files, fits_files_reader;
DROP ROLE fits_no_files, fits_files_reader;

-- volatility and parallel safety as declared
SELECT p.oid::regprocedure AS function, provolatile, proparallel, proisstrict
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'wdc' AND (proname LIKE 'fits%' OR proname IN ('png', 'preprocess'))
ORDER BY p.oid::regprocedure::text;

DROP FUNCTION fits_error(text, text);
DROP FUNCTION fits_summary(real[]);
DROP TABLE fits_files;
