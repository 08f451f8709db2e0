-- avg(latent) and sum(latent), serial and parallel

SELECT avg(v), sum(v) FROM (VALUES ('[1,2]'::latent), ('[3,4]'), ('[5,9]')) t(v);
SELECT avg(v), sum(v) FROM (VALUES ('[1,2]@0000000a'::latent), ('[3,4]')) t(v);
SELECT avg(v) IS NULL AS empty_avg, sum(v) IS NULL AS empty_sum
FROM (SELECT '[1]'::latent WHERE false) t(v);
SELECT avg(v) FROM (VALUES ('[1,2]'::latent), (NULL), ('[3,4]')) t(v);

-- errors
SELECT avg(v) FROM (VALUES ('[1,2]'::latent), ('[3,4,5]')) t(v);
SELECT sum(v) FROM (VALUES ('[1,2]@0000000a'::latent), ('[3,4]@0000000b')) t(v);
SELECT sum(v) FROM (VALUES ('[3e38]'::latent), ('[3e38]')) t(v);
SELECT avg(v) FROM (VALUES ('[3e38]'::latent), ('[3e38]')) t(v);

-- parallel aggregation on a table large enough for workers
CREATE TABLE latent_agg_t (id int, z latent(4));
INSERT INTO latent_agg_t
SELECT i, ARRAY[i % 7, (i % 11) - 5, 1, (i % 3) * 0.5]::real[]
FROM generate_series(1, 200000) i;
ANALYZE latent_agg_t;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
EXPLAIN (COSTS OFF) SELECT avg(z), sum(z) FROM latent_agg_t;
SELECT avg(z), sum(z) FROM latent_agg_t;
SET max_parallel_workers_per_gather = 0;
SELECT avg(z), sum(z) FROM latent_agg_t;
RESET max_parallel_workers_per_gather;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
DROP TABLE latent_agg_t;
