-- wdc_hnsw index: options, limits, opclasses, scans against sequential scans

-- opclasses pass amvalidate
SELECT opcname, amvalidate(c.oid)
FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod
WHERE a.amname = 'wdc_hnsw' ORDER BY opcname;

-- seeded data: 2000 rows of latent(8) from a 4-component mixture, 2% FRII
SET max_parallel_workers_per_gather = 0;
SELECT setseed(0.31);
CREATE TABLE hnsw_t (id int PRIMARY KEY, cls text, z latent(8));
INSERT INTO hnsw_t
SELECT i, CASE WHEN i % 50 = 0 THEN 'FRII' ELSE 'FRI' END,
       (SELECT array_agg(((i % 4) - 1.5 + 0.4 * (random() - 0.5) + 0 * g)::real) FROM generate_series(1, 8) g)::latent
FROM generate_series(1, 2000) i;
CREATE TABLE hnsw_q (qid int PRIMARY KEY, z latent(8));
INSERT INTO hnsw_q
SELECT i, (SELECT array_agg(((i % 4) - 1.5 + 0.4 * (random() - 0.5) + 0 * g)::real) FROM generate_series(1, 8) g)::latent
FROM generate_series(1, 20) i;
ANALYZE hnsw_t;

-- recall@k of the index against the sequential scan over the queries
CREATE FUNCTION hnsw_recall(op text, k int DEFAULT 10, filter text DEFAULT 'true')
RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
	q latent;
	exact int[];
	approx int[];
	hits int := 0;
	total int := 0;
BEGIN
	FOR q IN SELECT z FROM hnsw_q ORDER BY qid LOOP
		PERFORM set_config('enable_indexscan', 'off', true);
		PERFORM set_config('enable_seqscan', 'on', true);
		EXECUTE format('SELECT array(SELECT id FROM hnsw_t WHERE %s ORDER BY z %s $1 LIMIT %s)', filter, op, k)
			INTO exact USING q;
		PERFORM set_config('enable_indexscan', 'on', true);
		PERFORM set_config('enable_seqscan', 'off', true);
		EXECUTE format('SELECT array(SELECT id FROM hnsw_t WHERE %s ORDER BY z %s $1 LIMIT %s)', filter, op, k)
			INTO approx USING q;
		hits := hits + (SELECT count(*) FROM unnest(approx) a WHERE a = ANY (exact));
		total := total + cardinality(exact);
	END LOOP;
	PERFORM set_config('enable_indexscan', 'on', true);
	PERFORM set_config('enable_seqscan', 'on', true);
	RETURN round(hits::numeric / greatest(total, 1), 3);
END
$$;

-- number of rows an index scan returns for a query
CREATE FUNCTION hnsw_count(op text, lim int, filter text DEFAULT 'true')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	n bigint;
BEGIN
	PERFORM set_config('enable_seqscan', 'off', true);
	EXECUTE format('SELECT count(*) FROM (SELECT id FROM hnsw_t WHERE %s ORDER BY z %s (SELECT z FROM hnsw_q WHERE qid = 1) LIMIT %s) s',
				   filter, op, lim) INTO n;
	PERFORM set_config('enable_seqscan', 'on', true);
	RETURN n;
END
$$;

-- option limits
CREATE INDEX hnsw_bad ON hnsw_t USING wdc_hnsw (z latent_l2_ops) WITH (m = 1);
CREATE INDEX hnsw_bad ON hnsw_t USING wdc_hnsw (z latent_l2_ops) WITH (m = 101);
CREATE INDEX hnsw_bad ON hnsw_t USING wdc_hnsw (z latent_l2_ops) WITH (ef_construction = 3);
CREATE INDEX hnsw_bad ON hnsw_t USING wdc_hnsw (z latent_l2_ops) WITH (ef_construction = 1001);
CREATE INDEX hnsw_bad ON hnsw_t USING wdc_hnsw (z latent_l2_ops) WITH (nonsense = 1);
CREATE INDEX hnsw_lo ON hnsw_t USING wdc_hnsw (z latent_l2_ops) WITH (m = 2, ef_construction = 4);
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_lo');
DROP INDEX hnsw_lo;
CREATE INDEX hnsw_hi ON hnsw_t USING wdc_hnsw (z latent_l2_ops) WITH (m = 100, ef_construction = 1000);
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_hi');
DROP INDEX hnsw_hi;
-- neighbor_codes off: no codes (8 bytes per slot at 8 dimensions), half the size, same results
CREATE INDEX hnsw_bad ON hnsw_t USING wdc_hnsw (z latent_l2_ops) WITH (neighbor_codes = maybe);
CREATE INDEX hnsw_codes ON hnsw_t USING wdc_hnsw (z latent_l2_ops);
SELECT hnsw_recall('<->') AS codes_recall;
CREATE INDEX hnsw_plain ON hnsw_t USING wdc_hnsw (z latent_l2_ops) WITH (neighbor_codes = off);
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_plain');
SELECT round(pg_relation_size('hnsw_codes')::numeric / pg_relation_size('hnsw_plain'), 1) AS size_ratio_codes_to_plain;
DROP INDEX hnsw_codes;
SELECT hnsw_recall('<->') AS plain_recall;
DROP INDEX hnsw_plain;
SET wdc.hnsw_ef_search = 0;
SET wdc.hnsw_ef_search = 1001;
SET wdc.hnsw_ef_search = 1;
SET wdc.hnsw_ef_search = 1000;
SET wdc.hnsw_max_scan_tuples = 0;
RESET wdc.hnsw_ef_search;
SHOW wdc.hnsw_ef_search;
SHOW wdc.hnsw_max_scan_tuples;

-- the index only serves ORDER BY
CREATE INDEX hnsw_t_l2 ON hnsw_t USING wdc_hnsw (z latent_l2_ops);
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM hnsw_t ORDER BY z <-> '[0,0,0,0,0,0,0,0]' LIMIT 5;
EXPLAIN (COSTS OFF) SELECT id FROM hnsw_t WHERE z IS NOT NULL;
RESET enable_seqscan;

-- recall per opclass against the sequential scan
SELECT hnsw_recall('<->') >= 0.95 AS l2_recall_ok;
CREATE INDEX hnsw_t_cos ON hnsw_t USING wdc_hnsw (z latent_cosine_ops);
SELECT hnsw_recall('<=>') >= 0.95 AS cosine_recall_ok;
CREATE INDEX hnsw_t_ip ON hnsw_t USING wdc_hnsw (z latent_ip_ops);
SELECT hnsw_recall('<#>') >= 0.95 AS ip_recall_ok;
CREATE INDEX hnsw_t_l1 ON hnsw_t USING wdc_hnsw (z latent_l1_ops);
SELECT hnsw_recall('<+>') >= 0.95 AS l1_recall_ok;
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_t_cos');
DROP INDEX hnsw_t_cos, hnsw_t_ip, hnsw_t_l1;

-- a graph larger than maintenance_work_mem continues on disk, with a NOTICE
SET maintenance_work_mem = '1MB';
CREATE INDEX hnsw_t_disk ON hnsw_t USING wdc_hnsw (z latent_l2_ops) WITH (m = 64);
RESET maintenance_work_mem;
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_t_disk');
DROP INDEX hnsw_t_l2;
SELECT hnsw_recall('<->') >= 0.95 AS disk_build_recall_ok;
SELECT hnsw_count('<->', 5000) AS disk_build_rows;
ALTER INDEX hnsw_t_disk RENAME TO hnsw_t_l2;

-- LIMIT far above ef_search returns as many rows as the sequential scan
SET wdc.hnsw_ef_search = 10;
SELECT hnsw_count('<->', 500) AS limit_500;
SELECT hnsw_count('<->', 5000) AS all_rows;
SELECT hnsw_recall('<->', 100) >= 0.9 AS recall_at_100_ok;
RESET wdc.hnsw_ef_search;

-- filtered scans keep going until LIMIT rows pass the filter
SELECT hnsw_count('<->', 10, $$cls = 'FRII'$$) AS frii_rows;
SELECT hnsw_recall('<->', 10, $$cls = 'FRII'$$) >= 0.9 AS frii_recall_ok;
SELECT hnsw_count('<->', 100, $$cls = 'FRII'$$) AS all_frii;
-- the bound stops a scan whose filter passes nothing
SET wdc.hnsw_max_scan_tuples = 100;
SELECT hnsw_count('<->', 10, $$cls = 'none'$$) AS none_rows;
RESET wdc.hnsw_max_scan_tuples;

-- inserts after the build
INSERT INTO hnsw_t
SELECT i, 'FRI', (SELECT array_agg(((i % 4) - 1.5 + 0.4 * (random() - 0.5) + 0 * g)::real) FROM generate_series(1, 8) g)::latent
FROM generate_series(2001, 2600) i;
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_t_l2');
SELECT hnsw_recall('<->') >= 0.95 AS recall_after_insert_ok;
SELECT hnsw_count('<->', 5000) AS all_rows_after_insert;

-- inserts far outside the value range the neighbour codes were fitted to
-- at build time: the codes clamp, and the rows are still found
INSERT INTO hnsw_t
SELECT i, 'FRI', array_fill(sign(i - 2704.5) * (abs(i - 2704.5) + 0.5) * 5, ARRAY[8])::real[]::latent
FROM generate_series(2701, 2708) i;
SET enable_seqscan = off;
SELECT array(SELECT id FROM hnsw_t ORDER BY z <-> '[12,12,12,12,12,12,12,12]' LIMIT 3) AS far_high;
SELECT array(SELECT id FROM hnsw_t ORDER BY z <-> '[-12,-12,-12,-12,-12,-12,-12,-12]' LIMIT 3) AS far_low;
RESET enable_seqscan;
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_t_l2');

-- deletes and VACUUM
DELETE FROM hnsw_t WHERE id % 10 < 3;
VACUUM hnsw_t;
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_t_l2');
SELECT hnsw_recall('<->') >= 0.95 AS recall_after_vacuum_ok;
SELECT hnsw_count('<->', 5000) AS live_rows;
-- freed space is reused by later inserts
SELECT pg_relation_size('hnsw_t_l2') AS size_before \gset
INSERT INTO hnsw_t
SELECT i, 'FRI', (SELECT array_agg(((i % 4) - 1.5 + 0.4 * (random() - 0.5) + 0 * g)::real) FROM generate_series(1, 8) g)::latent
FROM generate_series(3001, 3300) i;
SELECT pg_relation_size('hnsw_t_l2') = :size_before AS space_reused;
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_t_l2');
SELECT hnsw_count('<->', 5000) AS rows_after_reuse;

-- REINDEX and CREATE INDEX CONCURRENTLY
REINDEX INDEX hnsw_t_l2;
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_t_l2');
SELECT hnsw_recall('<->') >= 0.95 AS recall_after_reindex_ok;
DROP INDEX hnsw_t_l2;
CREATE INDEX CONCURRENTLY hnsw_t_cc ON hnsw_t USING wdc_hnsw (z latent_l2_ops);
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_t_cc');
SELECT hnsw_recall('<->') >= 0.95 AS recall_concurrent_ok;
SELECT hnsw_count('<->', 5000) AS all_rows_concurrent;
REINDEX INDEX CONCURRENTLY hnsw_t_cc;
SELECT hnsw_count('<->', 5000) AS all_rows_reindexed;

-- NULL rows are not indexed; a NULL query returns every indexed row
INSERT INTO hnsw_t VALUES (9001, 'FRI', NULL), (9002, 'FRI', NULL);
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM hnsw_t ORDER BY z <-> (SELECT NULL::latent) LIMIT 5000;
SELECT count(*) AS rows_for_null_query FROM (SELECT id FROM hnsw_t ORDER BY z <-> (SELECT NULL::latent) LIMIT 5000) s;
SELECT count(*) AS indexed FROM hnsw_t WHERE z IS NOT NULL;
RESET enable_seqscan;

-- cosine: zero vectors are not indexed; a zero query orders nothing
CREATE TABLE hnsw_zero (id int, z latent(3));
INSERT INTO hnsw_zero VALUES (1, '[0,0,0]'), (2, '[1,0,0]'), (3, '[0,1,0]'), (4, '[1,1,0]'), (5, NULL);
CREATE INDEX ON hnsw_zero USING wdc_hnsw (z latent_cosine_ops);
SET enable_seqscan = off;
SELECT id FROM hnsw_zero ORDER BY z <=> '[1,0.1,0]' LIMIT 10;
SELECT array_agg(id ORDER BY id) AS zero_query_rows FROM (SELECT id FROM hnsw_zero ORDER BY z <=> '[0,0,0]' LIMIT 10) s;
RESET enable_seqscan;

-- empty table, first insert, one row
CREATE TABLE hnsw_empty (id int, z latent);
CREATE INDEX hnsw_empty_idx ON hnsw_empty USING wdc_hnsw (z latent_l2_ops);
SET enable_seqscan = off;
SELECT id FROM hnsw_empty ORDER BY z <-> '[1,2,3]' LIMIT 3;
INSERT INTO hnsw_empty VALUES (1, '[1,2,3]');
SELECT id FROM hnsw_empty ORDER BY z <-> '[1,2,3]' LIMIT 3;
INSERT INTO hnsw_empty VALUES (2, '[1,2,3,4]');
SELECT id FROM hnsw_empty ORDER BY z <-> '[1,2]' LIMIT 3;
RESET enable_seqscan;
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_empty_idx');

-- all-equal vectors
CREATE TABLE hnsw_same (id int, z latent(4));
INSERT INTO hnsw_same SELECT i, '[1,1,1,1]' FROM generate_series(1, 300) i;
CREATE INDEX hnsw_same_idx ON hnsw_same USING wdc_hnsw (z latent_l2_ops) WITH (m = 4);
INSERT INTO hnsw_same SELECT i, '[1,1,1,1]' FROM generate_series(301, 400) i;
SET enable_seqscan = off;
SELECT count(*), count(DISTINCT id) FROM (SELECT id FROM hnsw_same ORDER BY z <-> '[1,1,1,1]' LIMIT 1000) s;
RESET enable_seqscan;
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_same_idx');

-- dimension limit: 2000 indexed (lists in separate tuples), 2001 rejected
CREATE TABLE hnsw_wide (id int, z latent(2000));
INSERT INTO hnsw_wide
SELECT i, (SELECT array_agg(random()::real) FROM generate_series(1, 2000) WHERE i > 0)::latent
FROM generate_series(1, 60) i;
CREATE INDEX hnsw_wide_idx ON hnsw_wide USING wdc_hnsw (z latent_l2_ops);
INSERT INTO hnsw_wide
SELECT i, (SELECT array_agg(random()::real) FROM generate_series(1, 2000) WHERE i > 0)::latent
FROM generate_series(61, 90) i;
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_wide_idx');
SET enable_seqscan = off;
SELECT id FROM hnsw_wide ORDER BY z <-> (SELECT z FROM hnsw_wide WHERE id = 75) LIMIT 1;
SELECT count(*) FROM (SELECT id FROM hnsw_wide ORDER BY z <-> (SELECT z FROM hnsw_wide WHERE id = 7) LIMIT 100) s;
RESET enable_seqscan;
DELETE FROM hnsw_wide WHERE id % 2 = 0;
VACUUM hnsw_wide;
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_wide_idx');
CREATE TABLE hnsw_too_wide (id int, z latent(2001));
CREATE INDEX ON hnsw_too_wide USING wdc_hnsw (z latent_l2_ops);
CREATE TABLE hnsw_any (id int, z latent);
CREATE INDEX ON hnsw_any USING wdc_hnsw (z latent_l2_ops);
INSERT INTO hnsw_any SELECT 1, array_fill(1, ARRAY[2001])::real[]::latent;

-- unlogged table
CREATE UNLOGGED TABLE hnsw_unlogged (id int, z latent(3));
INSERT INTO hnsw_unlogged SELECT i, ARRAY[i, i % 7, i % 3]::real[]::latent FROM generate_series(1, 200) i;
CREATE INDEX hnsw_unlogged_idx ON hnsw_unlogged USING wdc_hnsw (z latent_l2_ops);
SET enable_seqscan = off;
SELECT id FROM hnsw_unlogged ORDER BY z <-> '[100,2,1.2]' LIMIT 3;
RESET enable_seqscan;
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_unlogged_idx');

-- fingerprints: a query of another model raises the operator's error
CREATE TABLE hnsw_tagged (id int, z latent(2));
INSERT INTO hnsw_tagged VALUES (1, '[1,2]@0000abcd'), (2, '[2,3]@0000abcd'), (3, '[5,5]');
CREATE INDEX ON hnsw_tagged USING wdc_hnsw (z latent_l2_ops);
SET enable_seqscan = off;
SELECT id FROM hnsw_tagged ORDER BY z <-> '[1,2]@0000abcd' LIMIT 3;
SELECT id FROM hnsw_tagged ORDER BY z <-> '[1,2]' LIMIT 3;
SELECT id FROM hnsw_tagged ORDER BY z <-> '[1,2]@12345678' LIMIT 3;
RESET enable_seqscan;
SELECT id FROM hnsw_tagged ORDER BY z <-> '[1,2]@12345678' LIMIT 3;

-- verification of something else
SELECT * FROM wdc.hnsw_verify('hnsw_t_pkey');
SELECT * FROM wdc.hnsw_verify(0);
CREATE TABLE hnsw_part (id int, z latent(8)) PARTITION BY RANGE (id);
CREATE TABLE hnsw_part_1 PARTITION OF hnsw_part FOR VALUES FROM (0) TO (100);
CREATE INDEX hnsw_part_z ON hnsw_part USING wdc_hnsw (z latent_l2_ops);
SELECT * FROM wdc.hnsw_verify('hnsw_part_z');
SELECT count(*) AS problems FROM wdc.hnsw_verify('hnsw_part_1_z_idx');
DROP TABLE hnsw_part;

DROP TABLE hnsw_t, hnsw_q, hnsw_zero, hnsw_empty, hnsw_same, hnsw_wide, hnsw_too_wide,
	hnsw_any, hnsw_unlogged, hnsw_tagged;
DROP FUNCTION hnsw_recall, hnsw_count;
RESET max_parallel_workers_per_gather;
