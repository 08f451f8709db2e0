-- wdc_hnsw after deleting 30% of the rows and VACUUM: recall within one
-- point of a fresh build on the same rows, nothing lost, nothing broken.
SELECT plan(6);

SET max_parallel_workers_per_gather = 0;
SELECT setseed(0.05);
CREATE TABLE vac_t (id int PRIMARY KEY, z latent(16));
-- mixture of 10 components, centres uniform in [-1, 1]^16, spread 0.15
CREATE TEMP TABLE vac_c AS
SELECT k, array_agg((random() * 2 - 1)::real ORDER BY j) AS c
FROM generate_series(0, 9) k, generate_series(1, 16) j GROUP BY k;
INSERT INTO vac_t
SELECT i, (SELECT array_agg((c.c[j] + 0.15 * (random() + random() + random() - 1.5) + 0 * i)::real ORDER BY j)
           FROM generate_series(1, 16) j)::latent
FROM generate_series(1, 6000) i JOIN vac_c c ON c.k = i % 10;
CREATE TEMP TABLE vac_q AS SELECT id AS qid, z FROM vac_t WHERE id % 120 = 7;
CREATE INDEX vac_t_z ON vac_t USING wdc_hnsw (z latent_l2_ops);

CREATE FUNCTION vac_recall() RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
	q latent;
	exact int[];
	approx int[];
	hits int := 0;
	total int := 0;
BEGIN
	FOR q IN SELECT z FROM vac_q ORDER BY qid LOOP
		PERFORM set_config('enable_indexscan', 'off', true);
		PERFORM set_config('enable_seqscan', 'on', true);
		SELECT array(SELECT id FROM vac_t ORDER BY z <-> q LIMIT 10) INTO exact;
		PERFORM set_config('enable_indexscan', 'on', true);
		PERFORM set_config('enable_seqscan', 'off', true);
		SELECT array(SELECT id FROM vac_t ORDER BY z <-> q LIMIT 10) INTO approx;
		hits := hits + (SELECT count(*) FROM unnest(approx) a WHERE a = ANY (exact));
		total := total + cardinality(exact);
	END LOOP;
	RETURN hits::numeric / total;
END
$$;

DELETE FROM vac_t WHERE (id * 7) % 10 < 3;
VACUUM vac_t;
SELECT vac_recall() AS vacuumed \gset

SELECT is((SELECT count(*) FROM wdc.hnsw_verify('vac_t_z')), 0::bigint,
          'no structural problems after VACUUM');
SET enable_seqscan = off;
SELECT is((SELECT count(DISTINCT id) FROM (SELECT id FROM vac_t ORDER BY z <-> '[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]' LIMIT 10000) s),
          (SELECT count(*) FROM vac_t),
          'index scan returns every live row after VACUUM');
RESET enable_seqscan;
SELECT ok(pg_relation_size('vac_t_z') > 0, 'index kept its pages');

REINDEX INDEX vac_t_z;
SELECT vac_recall() AS fresh \gset
SELECT ok(:fresh >= 0.95, format('fresh build recall@10 %s >= 0.95', :fresh));
SELECT ok(:vacuumed >= :fresh - 0.01,
          format('recall@10 after VACUUM %s within one point of a fresh build %s', :vacuumed, :fresh));
SELECT is((SELECT count(*) FROM wdc.hnsw_verify('vac_t_z')), 0::bigint,
          'no structural problems after REINDEX');

SELECT * FROM finish();
