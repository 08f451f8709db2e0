-- Cone search (Q3C) combined with latent ranking and outlier ranking, as
-- a catalog maintainer writes them.  Runs from the repository root.
\set models `pwd`/test/fixtures/models/
\set ON_ERROR_STOP 1
BEGIN;
SELECT plan(8);
SET client_min_messages = warning;
CREATE EXTENSION q3c;

SELECT wdc.load_model('tiny_enc', pg_read_binary_file(:'models' || 'tiny_encoder.onnx')) AS v \gset
CREATE FUNCTION pg_temp.img(seed int) RETURNS real[] LANGUAGE sql IMMUTABLE AS $$
	SELECT ARRAY(SELECT ARRAY(SELECT (sin(seed * 0.37 * r + c) + 0.01 * r * c)::real
	                          FROM generate_series(1, 16) c)
	             FROM generate_series(1, 16) r)
$$;

-- 400 sources on a 20 x 20 grid of 0.1 degree steps around (150, 2)
CREATE TABLE sky (id int PRIMARY KEY, ra float8, dec float8, flux float8, cutout real[], z latent);
SELECT wdc.attach('sky', 'cutout', 'z', 'tiny_enc');
INSERT INTO sky
SELECT i, 149 + (i % 20) * 0.1, 1 + (i / 20) * 0.1, 10 + i % 7, pg_temp.img(i)
FROM generate_series(0, 399) i;
CREATE INDEX sky_q3c_idx ON sky (q3c_ang2ipix(ra, dec));
ANALYZE sky;

-- cone search agrees with the exact distance
SELECT is((SELECT count(*) FROM sky WHERE q3c_radial_query(ra, dec, 150, 2, 0.25)),
          (SELECT count(*) FROM sky WHERE q3c_dist(ra, dec, 150, 2) < 0.25),
          'cone search finds every source within 0.25 degrees');
SELECT ok((SELECT count(*) FROM sky WHERE q3c_radial_query(ra, dec, 150, 2, 0.25)) BETWEEN 10 AND 40,
          'cone holds a few tens of sources');

-- "similar to this object" inside a cone: the object itself comes first,
-- and no returned row lies outside the cone
SELECT is((SELECT array_agg(id) FROM (
             SELECT s.id FROM sky s, (SELECT z FROM sky WHERE id = 210) o
             WHERE q3c_radial_query(s.ra, s.dec, 150, 2, 0.25)
             ORDER BY s.z <-> o.z, s.id LIMIT 5) n),
          (SELECT array_agg(id) FROM (
             SELECT s.id FROM sky s, (SELECT z FROM sky WHERE id = 210) o
             WHERE q3c_dist(s.ra, s.dec, 150, 2) < 0.25
             ORDER BY s.z <-> o.z, s.id LIMIT 5) n),
          'latent ranking in a cone equals the exact search');
SELECT is((SELECT s.id FROM sky s, (SELECT z FROM sky WHERE id = 210) o
           WHERE q3c_radial_query(s.ra, s.dec, 150, 2, 0.25)
           ORDER BY s.z <-> o.z, s.id LIMIT 1), 210, 'the object is its own nearest neighbour');

-- outlier ranking in a cone, with the flow functions where installed
CREATE FUNCTION pg_temp.flow_checks() RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
	IF to_regproc('wdc.train_flow') IS NULL THEN
		RETURN NEXT skip('flow functions are not installed', 4);
		RETURN;
	END IF;
	RETURN NEXT ok(wdc.train_flow('sky_flow', 'SELECT z, flux FROM sky',
	                              '{"max_epochs": 3, "hidden": 16, "layers": 1, "seed": 1, "calibration_rows": 50}') > 0,
	               'flow trained');
	RETURN NEXT is(
		(SELECT array_agg(id) FROM (
			SELECT id FROM sky WHERE q3c_radial_query(ra, dec, 150, 2, 0.25)
			ORDER BY wdc.log_density('sky_flow', z, jsonb_build_object('flux', flux)), id LIMIT 5) t),
		(SELECT array_agg(id) FROM (
			SELECT id FROM sky WHERE q3c_dist(ra, dec, 150, 2) < 0.25
			ORDER BY wdc.log_density('sky_flow', z, jsonb_build_object('flux', flux)), id LIMIT 5) t),
		'outlier ranking in a cone equals the exact search');
	RETURN NEXT ok((SELECT bool_and(p BETWEEN 0 AND 1) FROM (
			SELECT wdc.outlier_pvalue('sky_flow', z, jsonb_build_object('flux', flux)) AS p
			FROM sky WHERE q3c_radial_query(ra, dec, 150, 2, 0.25)) t),
		'p-values in a cone are within [0, 1]');
	RETURN NEXT ok((SELECT count(*) FROM sky
	                WHERE q3c_radial_query(ra, dec, 150, 2, 0.25)
	                  AND wdc.outlier_pvalue('sky_flow', z, jsonb_build_object('flux', flux)) < 0.05)
	               < (SELECT count(*) FROM sky WHERE q3c_radial_query(ra, dec, 150, 2, 0.25)),
		'a p-value cut keeps a subset of the cone');
END
$$;
SELECT * FROM pg_temp.flow_checks();

SELECT * FROM finish();
ROLLBACK;
