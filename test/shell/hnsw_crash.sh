#!/usr/bin/env bash
# Crash recovery of wdc_hnsw: stop the server with "pg_ctl stop -m
# immediate" (through pg_ctlcluster) while clients insert into an indexed
# table, restart it, and check that WAL replay left an index that passes
# wdc.hnsw_verify, returns every committed row, and agrees with a
# sequential scan on the nearest neighbours.  An unlogged table's index
# must come back empty and usable.
# Needs a cluster that pg_ctlcluster controls (pg_virtualenv makes one);
# against any other server it prints a note and passes without testing.
set -euo pipefail
db=wdc_hnsw_crash
work=$(mktemp -d)
trap 'rm -rf "$work"; dropdb --if-exists "$db" >/dev/null 2>&1 || true' EXIT

psql_q() { psql -X -q -v ON_ERROR_STOP=1 -At -d "$db" "$@"; }

datadir=$(psql -X -At -d postgres -c "SHOW data_directory")
cluster=$(pg_lsclusters -h 2>/dev/null | awk -v d="$datadir" '$6 == d { print $1 " " $2; exit }')
if [ -z "$cluster" ]; then
	echo "hnsw_crash: the server at $datadir is not a pg_ctlcluster cluster; not tested"
	exit 0
fi

wait_ready() {
	for _ in $(seq 1 60); do
		pg_isready -q -d postgres && return 0
		sleep 1
	done
	echo "server did not come back"
	return 1
}

createdb "$db"
psql_q <<'SQL'
CREATE EXTENSION wdc;
SET max_parallel_workers_per_gather = 0;
SELECT setseed(0.11);
CREATE TABLE crash_t (id bigserial PRIMARY KEY, z latent(16));
INSERT INTO crash_t (z)
SELECT (SELECT array_agg((random() * 2 - 1 + 0 * g * i)::real) FROM generate_series(1, 16) g)::latent
FROM generate_series(1, 3000) i;
CREATE INDEX crash_t_z ON crash_t USING wdc_hnsw (z latent_l2_ops) WITH (m = 8);
CREATE UNLOGGED TABLE crash_u (id int, z latent(3));
INSERT INTO crash_u SELECT i, ARRAY[i, i % 5, 1]::real[]::latent FROM generate_series(1, 100) i;
CREATE INDEX crash_u_z ON crash_u USING wdc_hnsw (z latent_l2_ops);
CHECKPOINT;
SQL

# Inserting clients, one row per transaction, cut off by the crash
cat >"$work/insert.pgb" <<'EOF'
INSERT INTO crash_t (z) SELECT (SELECT array_agg((random() * 2 - 1 + 0 * g)::real) FROM generate_series(1, 16) g)::latent;
EOF
pgbench -n -d "$db" -c 3 -j 3 -T 30 -f "$work/insert.pgb" >"$work/pgbench.log" 2>&1 &
bench=$!
sleep 4
# shellcheck disable=SC2086
pg_ctlcluster $cluster stop -m immediate
wait "$bench" || true
# shellcheck disable=SC2086
pg_ctlcluster $cluster start
wait_ready

rows=$(psql_q -c "SELECT count(*) FROM crash_t")
echo "rows after recovery: $rows"
fail=0

problems=$(psql_q -c "SELECT count(*) FROM wdc.hnsw_verify('crash_t_z')")
if [ "$problems" != "0" ]; then
	echo "hnsw_verify reports $problems problems:"
	psql_q -c "SELECT * FROM wdc.hnsw_verify('crash_t_z') LIMIT 20"
	fail=1
fi

# Every committed row comes back from the index, once.  The inserts can
# take the table past the default bound on scanned elements (20,000), so
# the bound is lifted.
got=$(psql_q <<'SQL'
SET enable_seqscan = off;
SET wdc.hnsw_max_scan_tuples = 2147483647;
SELECT count(*) || ' ' || count(DISTINCT id)
FROM (SELECT id FROM crash_t ORDER BY z <-> (SELECT z FROM crash_t WHERE id = 1) LIMIT 1000000) s;
SQL
)
if [ "$got" != "$rows $rows" ]; then
	echo "index scan returned '$got' rows (total, distinct), table has $rows"
	fail=1
fi

# Nearest neighbours agree with a sequential scan
recall=$(psql_q <<'SQL'
CREATE FUNCTION top10(q latent, use_index bool) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
	r bigint[];
BEGIN
	PERFORM set_config('enable_seqscan', CASE WHEN use_index THEN 'off' ELSE 'on' END, true);
	PERFORM set_config('enable_indexscan', CASE WHEN use_index THEN 'on' ELSE 'off' END, true);
	SELECT array(SELECT id FROM crash_t ORDER BY z <-> q LIMIT 10) INTO r;
	RETURN r;
END
$$;
SELECT round(avg((SELECT count(*) FROM unnest(top10(z, true)) a WHERE a = ANY (top10(z, false))) / 10.0), 3)
FROM crash_t WHERE id % 150 = 0;
SQL
)
echo "recall@10 after recovery: $recall"
if awk -v r="$recall" 'BEGIN { exit !(r < 0.9) }'; then
	echo "recall below 0.9"
	fail=1
fi

# The unlogged index is reset to empty and accepts rows again
unlogged=$(psql_q <<'SQL'
INSERT INTO crash_u VALUES (1, '[1,1,1]'), (2, '[2,2,2]');
SET enable_seqscan = off;
SELECT string_agg(id::text, ',') FROM (SELECT id FROM crash_u ORDER BY z <-> '[2,2,2.1]' LIMIT 5) s;
SQL
)
if [ "$unlogged" != "2,1" ]; then
	echo "unlogged table after crash returned '$unlogged', expected '2,1'"
	fail=1
fi

# Inserts continue on the recovered index
psql_q -c "INSERT INTO crash_t (z) SELECT z FROM crash_t WHERE id <= 50"
problems=$(psql_q -c "SELECT count(*) FROM wdc.hnsw_verify('crash_t_z')")
if [ "$problems" != "0" ]; then
	echo "hnsw_verify reports $problems problems after more inserts"
	fail=1
fi

exit $fail
