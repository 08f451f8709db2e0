-- wdc.png and wdc.preprocess on real images from data/real
\getenv abs_srcdir PG_ABS_SRCDIR
\set root `cd -P :abs_srcdir/sql && cd ../.. && pwd`
\set real :root/data/real/
SET extra_float_digits = 0;

CREATE TABLE fits_png_images (name text PRIMARY KEY, image real[] NOT NULL);
INSERT INTO fits_png_images
SELECT name, wdc.fits_image(pg_read_binary_file(:'real' || name))
FROM unnest(ARRAY['spitzer_sip.fits', 'dss_crab.fits', 'first_sin.fits',
	'fermi_car.fits.gz']) AS name;

-- PNG header fields: signature, IHDR width, height, bit depth, colour type
-- (0 grey, 4 grey + alpha), and the IEND chunk at the end.
CREATE FUNCTION fits_png_info(png bytea) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT format('%s %sx%s depth=%s colour=%s end=%s',
		substring(png FROM 1 FOR 8) = '\x89504e470d0a1a0a'::bytea,
		(get_byte(png, 16) << 24) | (get_byte(png, 17) << 16) | (get_byte(png, 18) << 8) | get_byte(png, 19),
		(get_byte(png, 20) << 24) | (get_byte(png, 21) << 16) | (get_byte(png, 22) << 8) | get_byte(png, 23),
		get_byte(png, 24), get_byte(png, 25),
		substring(png FROM length(png) - 7 FOR 4) = 'IEND'::bytea)
$$;

-- png: defaults and every option
SELECT name, fits_png_info(wdc.png(image)) FROM fits_png_images ORDER BY name;
SELECT fits_png_info(wdc.png(image, '{"limits": "zscale", "stretch": "asinh", "asinh_a": 0.05}'))
FROM fits_png_images WHERE name = 'dss_crab.fits';
SELECT fits_png_info(wdc.png(image, '{"limits": "percentile", "lower": 1, "upper": 99, "stretch": "log"}'))
FROM fits_png_images WHERE name = 'spitzer_sip.fits';
SELECT fits_png_info(wdc.png(image, '{"nan": "transparent", "origin": "upper", "scale": 3}'))
FROM fits_png_images WHERE name = 'spitzer_sip.fits';
SELECT fits_png_info(wdc.png(image, '{"min": 0, "max": 10, "stretch": "sqrt", "nan": 255}'))
FROM fits_png_images WHERE name = 'fermi_car.fits.gz';
SELECT fits_png_info(wdc.png(wdc.fits_cutout(pg_read_binary_file(:'real' || 'magpis_sin.fits'), 1, 1, 16),
	'{"scale": 16}'));
-- the same input and options give the same bytes
SELECT wdc.png(image, '{"limits": "zscale"}') = wdc.png(image, '{"limits": "zscale"}') AS deterministic
FROM fits_png_images WHERE name = 'dss_crab.fits';
-- a hand-made 2 x 3 image, all NaN, and a single pixel
SELECT fits_png_info(wdc.png('{{0,1,2},{3,NaN,5}}'::real[]));
SELECT fits_png_info(wdc.png('{{NaN,NaN},{NaN,NaN}}'::real[]));
SELECT fits_png_info(wdc.png('{{7}}'::real[], '{"scale": 16}'));

-- png errors
SELECT wdc.png('{1,2,3}'::real[]);
SELECT wdc.png('{{1,NULL},{3,4}}'::real[]);
SELECT wdc.png('{}'::real[]);
SELECT wdc.png('{{1,2},{3,4}}'::real[], '{"stretch": "cubic"}');
SELECT wdc.png('{{1,2},{3,4}}'::real[], '{"colour": "red"}');
SELECT wdc.png('{{1,2},{3,4}}'::real[], '{"scale": 17}');
SELECT wdc.png('{{1,2},{3,4}}'::real[], '{"scale": 0}');
SELECT wdc.png('{{1,2},{3,4}}'::real[], '{"nan": 256}');
SELECT wdc.png('{{1,2},{3,4}}'::real[], '{"lower": 60, "upper": 40}');
SELECT wdc.png('{{1,2},{3,4}}'::real[], '{"min": [1]}');
SELECT wdc.png('{{1,2},{3,4}}'::real[], '[1, 2]');

-- preprocess: each step
CREATE FUNCTION fits_png_stats(image real[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT array_dims(image)
		|| ' nan=' || count(*) FILTER (WHERE v = 'NaN')
		|| ' min=' || round(min(v::numeric) FILTER (WHERE v <> 'NaN'), 4)
		|| ' max=' || round(max(v::numeric) FILTER (WHERE v <> 'NaN'), 4)
		|| ' mean=' || round(avg(v::numeric) FILTER (WHERE v <> 'NaN'), 4)
	FROM unnest(image) AS v
$$;
SELECT fits_png_stats(image) FROM fits_png_images WHERE name = 'spitzer_sip.fits';
SELECT fits_png_stats(wdc.preprocess(image, '{"nan_fill": "median"}'))
FROM fits_png_images WHERE name = 'spitzer_sip.fits';
SELECT fits_png_stats(wdc.preprocess(image, '{"nan_fill": 0, "clip_low": 1, "clip_high": 99}'))
FROM fits_png_images WHERE name = 'spitzer_sip.fits';
SELECT fits_png_stats(wdc.preprocess(image, '{"nan_fill": "min", "stretch": "log", "normalize": "minmax"}'))
FROM fits_png_images WHERE name = 'spitzer_sip.fits';
SELECT fits_png_stats(wdc.preprocess(image, '{"stretch": "asinh", "stretch_scale": 1000, "normalize": "zscore"}'))
FROM fits_png_images WHERE name = 'dss_crab.fits';
SELECT fits_png_stats(wdc.preprocess(image, '{"width": 64, "height": 48, "resize": "area"}'))
FROM fits_png_images WHERE name = 'dss_crab.fits';
SELECT fits_png_stats(wdc.preprocess(image, '{"width": 64, "height": 64}'))
FROM fits_png_images WHERE name = 'first_sin.fits';
-- a constant image normalises to zeros
SELECT wdc.preprocess('{{2,2},{2,2}}'::real[], '{"normalize": "zscore"}'),
	   wdc.preprocess('{{2,2},{2,2}}'::real[], '{"normalize": "minmax"}');
SELECT wdc.preprocess('{{1,2},{3,4}}'::real[], '{}');

-- preprocess errors
SELECT wdc.preprocess('{{1,2},{3,4}}'::real[], '{"gamma": 2}');
SELECT wdc.preprocess('{{1,2},{3,4}}'::real[], '{"clip_high": 100.5}');
SELECT wdc.preprocess('{{1,2},{3,4}}'::real[], '{"clip_low": 60, "clip_high": 40}');
SELECT wdc.preprocess('{{1,2},{3,4}}'::real[], '{"width": 8}');
SELECT wdc.preprocess('{{1,2},{3,4}}'::real[], '{"width": 65537, "height": 8}');
-- a resize larger than wdc.fits_max_mb fails before it allocates
SET wdc.fits_max_mb = 1;
SELECT wdc.preprocess('{{1,2},{3,4}}'::real[], '{"width": 20000, "height": 20000}');
SELECT array_dims(wdc.preprocess('{{1,2},{3,4}}'::real[], '{"width": 512, "height": 512}'));
RESET wdc.fits_max_mb;
SELECT wdc.preprocess('{{1,2},{3,4}}'::real[], '{"stretch_scale": 0}');
SELECT wdc.preprocess('{{1,2},{3,4}}'::real[], '{"nan_fill": "mean"}');
SELECT wdc.preprocess('{{1,2},{3,4}}'::real[], '{"normalize": null}');

DROP FUNCTION fits_png_stats(real[]);
DROP FUNCTION fits_png_info(bytea);
DROP TABLE fits_png_images;
