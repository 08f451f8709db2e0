#!/usr/bin/env bash
# Parallel builds of wdc_hnsw.  The same seeded table is indexed serially and
# with parallel maintenance workers.  The parallel index must have been
# built by more than one process, pass wdc.hnsw_verify, return every indexed
# row exactly once through an index scan, and reach the serial build's
# recall within 0.02.  Also: CREATE INDEX CONCURRENTLY, cosine with zero vectors
# (not indexed), and a parallel build whose graph outgrows its shared area
# (second scan on disk).
set -euo pipefail
db=wdc_hnsw_parallel
work=$(mktemp -d)
trap 'rm -rf "$work"; dropdb --if-exists "$db" >/dev/null 2>&1 || true' EXIT

psql_q() { psql -X -q -v ON_ERROR_STOP=1 -At -d "$db" "$@"; }

createdb "$db"
psql_q <<'SQL'
CREATE EXTENSION wdc;
SELECT setseed(0.31);
-- 20 Gaussian clusters in 16 dimensions, every 500th row a zero vector
CREATE TABLE par_t (id int PRIMARY KEY, z latent(16));
INSERT INTO par_t
SELECT i, CASE WHEN i % 500 = 0 THEN array_fill(0::real, ARRAY[16])::latent
	ELSE (SELECT array_agg((((i % 20) * 7 + g) % 13 / 6.5 - 1 + 0.3 * (random() - 0.5))::real)
	      FROM generate_series(1, 16) g)::latent END
FROM generate_series(1, 30000) i;
ANALYZE par_t;
CREATE FUNCTION top10(q latent, use_index bool) RETURNS int[] LANGUAGE plpgsql AS $$
DECLARE
	r int[];
BEGIN
	PERFORM set_config('enable_seqscan', CASE WHEN use_index THEN 'off' ELSE 'on' END, true);
	PERFORM set_config('enable_indexscan', CASE WHEN use_index THEN 'on' ELSE 'off' END, true);
	SELECT array(SELECT id FROM par_t ORDER BY z <-> q LIMIT 10) INTO r;
	RETURN r;
END
$$;
SQL

fail=0
# Build with $1 label, $2 CREATE INDEX statement, $3 settings.  The
# server's messages go to $work/$1.log.
build() {
	psql -X -q -v ON_ERROR_STOP=1 -d "$db" >"$work/$1.log" 2>&1 <<SQL
SET client_min_messages = debug1;
$3
DROP INDEX IF EXISTS par_t_z;
$2
SQL
}

# $1 label, $2 expected rows in the index
check() {
	local problems got recall
	problems=$(psql_q -c "SELECT count(*) FROM wdc.hnsw_verify('par_t_z')")
	if [ "$problems" != "0" ]; then
		echo "$1: hnsw_verify reports $problems problems"
		psql_q -c "SELECT * FROM wdc.hnsw_verify('par_t_z') LIMIT 10"
		fail=1
	fi
	got=$(psql_q <<'SQL'
SET enable_seqscan = off;
SET wdc.hnsw_max_scan_tuples = 2147483647;
SELECT count(*) || ' ' || count(DISTINCT id)
FROM (SELECT id FROM par_t ORDER BY z <-> (SELECT z FROM par_t WHERE id = 1) LIMIT 1000000) s;
SQL
)
	if [ "$got" != "$2 $2" ]; then
		echo "$1: index scan returned '$got' rows (total, distinct), expected $2"
		fail=1
	fi
	recall=$(psql_q <<'SQL'
SET wdc.hnsw_ef_search = 40;
SELECT round(avg((SELECT count(*) FROM unnest(top10(z, true)) a WHERE a = ANY (top10(z, false))) / 10.0), 3)
FROM par_t WHERE id % 301 = 0;
SQL
)
	echo "$1: recall@10 $recall"
	eval "recall_$1=$recall"
}

serial="SET max_parallel_maintenance_workers = 0;"
parallel="SET max_parallel_maintenance_workers = 2; SET min_parallel_table_scan_size = 0;"
create="CREATE INDEX par_t_z ON par_t USING wdc_hnsw (z latent_l2_ops) WITH (m = 8, ef_construction = 40);"

build serial "$create" "$serial"
check serial 30000
if grep -q "parallel workers" "$work/serial.log"; then
	echo "serial: the build ran with parallel workers"
	fail=1
fi

build parallel "$create" "$parallel"
if ! grep -qE "wdc_hnsw build with [1-9][0-9]* parallel workers" "$work/parallel.log"; then
	echo "parallel: no parallel build happened:"
	cat "$work/parallel.log"
	fail=1
fi
check parallel 30000
if awk -v p="$recall_parallel" -v s="$recall_serial" 'BEGIN { exit !(p < s - 0.02) }'; then
	echo "parallel: recall $recall_parallel is more than 0.02 below serial $recall_serial"
	fail=1
fi

build concurrently \
	"CREATE INDEX CONCURRENTLY par_t_z ON par_t USING wdc_hnsw (z latent_l2_ops) WITH (m = 8, ef_construction = 40);" \
	"$parallel"
if ! grep -qE "wdc_hnsw build with [1-9][0-9]* parallel workers" "$work/concurrently.log"; then
	echo "concurrently: no parallel build happened:"
	cat "$work/concurrently.log"
	fail=1
fi
check concurrently 30000

# cosine leaves out the 60 zero vectors
build cosine "CREATE INDEX par_t_z ON par_t USING wdc_hnsw (z latent_cosine_ops) WITH (m = 8);" "$parallel"
problems=$(psql_q -c "SELECT count(*) FROM wdc.hnsw_verify('par_t_z')")
got=$(psql_q <<'SQL'
SET enable_seqscan = off;
SET wdc.hnsw_max_scan_tuples = 2147483647;
SELECT count(*) || ' ' || count(DISTINCT id)
FROM (SELECT id FROM par_t ORDER BY z <=> (SELECT z FROM par_t WHERE id = 1) LIMIT 1000000) s;
SQL
)
echo "cosine: $problems problems, index scan returned '$got' rows (total, distinct)"
if [ "$problems" != "0" ] || [ "$got" != "29940 29940" ]; then
	fail=1
fi
# Stale statistics: the table is analyzed with 1,000 live rows in the pages
# that later hold 30,000, so the shared graph is sized for about 1,000
# elements and fills up.  A second scan indexes the rows left out.
psql_q <<'SQL'
ALTER TABLE par_t SET (autovacuum_enabled = off);
-- the kept rows sit on the last pages, so VACUUM cannot truncate the table
CREATE TEMP TABLE keep AS SELECT * FROM par_t WHERE id <= 29000;
DELETE FROM par_t WHERE id <= 29000;
VACUUM ANALYZE par_t;
INSERT INTO par_t SELECT * FROM keep;
SQL
build overflow "$create" "$parallel"
if ! grep -qE "wdc_hnsw build with [1-9][0-9]* parallel workers" "$work/overflow.log" ||
	! grep -q "The table is scanned again" "$work/overflow.log"; then
	echo "overflow: no parallel build with a second scan:"
	cat "$work/overflow.log"
	fail=1
fi
check overflow 30000
exit $fail
