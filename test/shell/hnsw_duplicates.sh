#!/usr/bin/env bash
# A group of identical vectors must not trap wdc_hnsw searches.  100 zero
# vectors and 2,000 copies of ten rows are indexed with 40,000 random
# ones, in descending id order.  When the zero vectors' lists held only each
# other, a search that entered the group could not leave it.  The query
# below then returned three zero vectors (distance 1.475) instead of its
# exact match, even at ef_search 400.  37 of 1,990 rows were not their own
# nearest neighbour.
set -euo pipefail
db=wdc_hnsw_duplicates
trap 'dropdb --if-exists "$db" >/dev/null 2>&1 || true' EXIT

psql_q() { psql -X -q -v ON_ERROR_STOP=1 -At -d "$db" "$@"; }

createdb "$db"
psql_q <<'SQL'
CREATE EXTENSION wdc;
SELECT setseed(0.5);
CREATE TABLE dup_src (id int PRIMARY KEY, z latent(16));
INSERT INTO dup_src
SELECT i, (SELECT array_agg((random() * 2 - 1)::real) FROM generate_series(1, 16) g WHERE i > 0)::latent
FROM generate_series(1, 40000) i;
INSERT INTO dup_src SELECT 100000 + i, (SELECT z FROM dup_src WHERE id = 1 + i % 10) FROM generate_series(1, 2000) i;
INSERT INTO dup_src SELECT 200000 + i, array_fill(0::real, ARRAY[16])::latent FROM generate_series(1, 100) i;
INSERT INTO dup_src SELECT 300000 + i, NULL FROM generate_series(1, 50) i;
CREATE TABLE dup_t AS SELECT * FROM dup_src ORDER BY id DESC;
SET max_parallel_maintenance_workers = 0;
CREATE INDEX dup_t_z ON dup_t USING wdc_hnsw (z latent_l2_ops) WITH (m = 8, ef_construction = 32);
SQL

fail=0
problems=$(psql_q -c "SELECT count(*) FROM wdc.hnsw_verify('dup_t_z')")
first=$(psql_q <<'SQL'
SET wdc.hnsw_ef_search = 400;
SET enable_seqscan = off;
SELECT id FROM dup_t ORDER BY z <-> (SELECT z FROM dup_src WHERE id = 30907) LIMIT 1;
SQL
)
# rows whose index search does not return a row at distance 0 first
missed=$(psql_q <<'SQL'
SET enable_seqscan = off;
SELECT count(*) FROM (SELECT id, z FROM dup_t WHERE id % 20 = 0 AND z IS NOT NULL) s
WHERE (SELECT x.z <-> s.z FROM dup_t x ORDER BY x.z <-> s.z LIMIT 1) > 0;
SQL
)
echo "hnsw_verify problems: $problems, first row for 30907: $first, rows that missed themselves: $missed of 1990"
if [ "$problems" != "0" ] || [ "$first" != "30907" ] || [ "$missed" -gt 15 ]; then
	fail=1
fi

# Groups larger than ef_construction: 2,000 copies of one vector and 1,000
# zero vectors among 2,000 random ones.  Searches meet only copies there,
# so a new copy also takes the other vectors from the copies' lists.  At
# ef_search 1000 every query must get its true top-10 distances; before,
# 7 of these 300 queries did not.
bad=$(psql_q <<'SQL' | tail -1
CREATE FUNCTION dup_rvec(seed int) RETURNS latent LANGUAGE sql VOLATILE AS $$
	SELECT array_agg((random() * 2 - 1) + 0 * seed)::real[]::latent FROM generate_series(1, 8) $$;
SELECT setseed(0.42);
CREATE TABLE dup_g (id int, z latent(8));
INSERT INTO dup_g
SELECT i, CASE WHEN i % 5 IN (0, 1) THEN '[0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]'::latent
	WHEN i % 5 = 2 THEN '[0,0,0,0,0,0,0,0]'::latent ELSE dup_rvec(i) END
FROM generate_series(1, 5000) i;
SET max_parallel_maintenance_workers = 0;
CREATE INDEX dup_g_z ON dup_g USING wdc_hnsw (z latent_l2_ops);
CREATE TABLE dup_q AS SELECT i, dup_rvec(i) AS q FROM generate_series(1, 300) i;
CREATE FUNCTION dup_top(q latent, use_index bool) RETURNS float8[] LANGUAGE plpgsql AS $$
DECLARE
	r float8[];
BEGIN
	PERFORM set_config('enable_seqscan', CASE WHEN use_index THEN 'off' ELSE 'on' END, true);
	PERFORM set_config('enable_indexscan', CASE WHEN use_index THEN 'on' ELSE 'off' END, true);
	PERFORM set_config('enable_bitmapscan', 'off', true);
	EXECUTE 'SELECT array_agg(d ORDER BY d) FROM (SELECT z <-> $1 AS d FROM dup_g ORDER BY z <-> $1 LIMIT 10) s'
		INTO r USING q;
	RETURN r;
END
$$;
SET wdc.hnsw_ef_search = 1000;
SELECT count(*) FROM dup_q WHERE dup_top(q, true) <> dup_top(q, false);
SQL
)
echo "large groups: $bad of 300 queries without their top-10 distances at ef_search 1000"
if [ "$bad" != "0" ]; then
	fail=1
fi
exit $fail
