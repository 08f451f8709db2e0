#!/usr/bin/env bash
# wdc_hnsw against the exact sequential scan on the same seeded data, in one
# run: build time, index size, and for each ef_search the recall@10, the
# buffer accesses per query and the queries per second (pgbench, 1 and 2
# clients); the exact scan's queries per second is the reference.
#
#   bench/hnsw_bench.sh                      throwaway cluster (pg_virtualenv)
#   WDC_BENCH_USE_ENV=1 bench/hnsw_bench.sh  server named by PG* variables
#
# Settings: N rows (default 100000), D dimensions (32), Q queries (200),
# K mixture components (20), SPREAD component standard deviation (0.35),
# M and EFC index options (16, 64), EFS ef_search values ("10 20 40 80 160"),
# SECONDS_PER_RUN pgbench duration (10), MWM maintenance_work_mem ("1GB").
# PARALLEL_WORKERS (2): after the queries, the index is built once more with
# up to that many parallel maintenance workers, and its build time and
# recall at the first ef_search are printed (0 skips it).
# REPEAT (1) sets the pgbench runs per figure.  The best run is reported,
# because other jobs on a shared machine only ever take throughput away.
# WDC_DESTDIR names an extension_destdir staging directory (from
# "make install DESTDIR=..."); without it the installed wdc is used.
# WDC_BENCH_LOCK names a lock file.  The index build and every pgbench run
# then hold an exclusive flock on it, so that the timings of people who
# share a machine never overlap, while data generation and recall runs
# stay unlocked.
# Data: latents are drawn from a mixture of K Gaussians whose centres are
# uniform in [-1, 1]^D; queries come from the same mixture.  Everything is
# seeded with setseed, so the data is the same in every run.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
D=${D:-32}
Q=${Q:-200}
K=${K:-20}
SPREAD=${SPREAD:-0.35}
M=${M:-16}
EFC=${EFC:-64}
EFS=${EFS:-"10 20 40 80 160"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
MWM=${MWM:-1GB}
REPEAT=${REPEAT:-1}

if [ -z "${WDC_BENCH_USE_ENV:-}" ]; then
	opts=(-o "shared_buffers=2GB" -o "max_parallel_workers_per_gather=0")
	[ -n "${WDC_DESTDIR:-}" ] && opts+=(-o "extension_destdir=$WDC_DESTDIR")
	exec env WDC_BENCH_USE_ENV=1 pg_virtualenv -t -v 15 "${opts[@]}" "$0" "$@"
fi

# Run a timed step, under the benchmark lock when one is named
timed() {
	if [ -n "${WDC_BENCH_LOCK:-}" ]; then
		flock "$WDC_BENCH_LOCK" "$@"
	else
		"$@"
	fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
psql_q() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# --- data: mixture centres, rows and queries, all from one seed
psql_q <<SQL
CREATE EXTENSION IF NOT EXISTS wdc;
DROP TABLE IF EXISTS hb_centres, hb_items, hb_queries, hb_truth;
SET max_parallel_workers_per_gather = 0;
SELECT setseed(0.25);
CREATE TABLE hb_centres AS
SELECT k, array_agg((random() * 2 - 1)::real ORDER BY j) AS c
FROM generate_series(0, $K - 1) k, generate_series(1, $D) j GROUP BY k;
-- Box-Muller normal deviates around the row's centre
CREATE TABLE hb_items (id int PRIMARY KEY, z latent($D));
INSERT INTO hb_items
SELECT i, (SELECT array_agg((c.c[j] + $SPREAD * sqrt(-2 * ln(1 - random())) *
                             cos(2 * pi() * random()))::real ORDER BY j)
           FROM generate_series(1, $D) j)::latent
FROM generate_series(1, $N) i JOIN hb_centres c ON c.k = (i::bigint * 7919) % $K;
CREATE TABLE hb_queries (qid int PRIMARY KEY, z latent($D));
INSERT INTO hb_queries
SELECT i, (SELECT array_agg((c.c[j] + $SPREAD * sqrt(-2 * ln(1 - random())) *
                             cos(2 * pi() * random()))::real ORDER BY j)
           FROM generate_series(1, $D) j)::latent
FROM generate_series(1, $Q) i JOIN hb_centres c ON c.k = (i::bigint * 104729) % $K;
VACUUM ANALYZE hb_items;
VACUUM ANALYZE hb_queries;
SQL

# --- ground truth: exact nearest neighbours by sequential scan
psql_q <<SQL
SET enable_indexscan = off;
CREATE TABLE hb_truth AS
SELECT q.qid, array(SELECT id FROM hb_items ORDER BY z <-> q.z LIMIT 10) AS ids
FROM hb_queries q;
SQL

cat >"$work/query.pgb" <<EOF
\set qid random(1, $Q)
SELECT id FROM hb_items ORDER BY z <-> (SELECT z FROM hb_queries WHERE qid = :qid) LIMIT 10;
EOF
qps() { # $1 clients, $2 extra PGOPTIONS; the best of REPEAT runs
	local best=0 tps
	for _ in $(seq "$REPEAT"); do
		tps=$(PGOPTIONS="$2" timed pgbench -n -M prepared -f "$work/query.pgb" \
			-T "$SECONDS_PER_RUN" -c "$1" -j "$1" 2>/dev/null |
			sed -nE 's/^tps = ([0-9.]+).*/\1/p')
		best=$(awk -v a="$best" -v b="$tps" 'BEGIN { printf "%.1f", (b > a ? b : a) }')
	done
	echo "$best"
}

exact1=$(qps 1 "-c enable_indexscan=off")

# --- index build
build_ms=$(timed psql -X -q -v ON_ERROR_STOP=1 -At <<SQL
SET maintenance_work_mem = '$MWM';
SET max_parallel_maintenance_workers = 0;
SELECT clock_timestamp() AS t0 \gset
CREATE INDEX hb_items_z ON hb_items USING wdc_hnsw (z latent_l2_ops)
	WITH (m = $M, ef_construction = $EFC);
SELECT round(extract(epoch FROM clock_timestamp() - :'t0') * 1000);
SQL
)
size=$(psql_q -c "SELECT pg_size_pretty(pg_relation_size('hb_items_z'))")
problems=$(psql_q -c "SELECT count(*) FROM wdc.hnsw_verify('hb_items_z')")

# recall@10 of the index against the exact ground truth at ef_search $1
recall_at() {
	psql_q <<SQL
SET wdc.hnsw_ef_search = $1;
SET enable_seqscan = off;
SELECT round(avg((SELECT count(*) FROM unnest(t.ids) x
                  WHERE x = ANY (array(SELECT id FROM hb_items ORDER BY z <-> q.z LIMIT 10)))) / 10, 4)
FROM hb_truth t JOIN hb_queries q USING (qid);
SQL
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "N=$N D=$D Q=$Q K=$K SPREAD=$SPREAD m=$M ef_construction=$EFC"
echo "build: ${build_ms} ms, index size: $size, hnsw_verify problems: $problems"
echo "exact scan: ${exact1} queries/s (1 client)"
echo
echo "| ef_search | recall@10 | buffers/query | q/s 1 client | q/s 2 clients | x exact (1 client) |"
echo "|---|---|---|---|---|---|"
for ef in $EFS; do
	recall=$(recall_at "$ef")
	buffers=$(psql_q <<SQL
SET wdc.hnsw_ef_search = $ef;
CREATE TEMP TABLE hb_plans (plan json);
DO \$\$
DECLARE
	p json;
BEGIN
	FOR i IN 1 .. LEAST($Q, 50) LOOP
		EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT id FROM hb_items ORDER BY z <-> %L LIMIT 10',
					   (SELECT z FROM hb_queries WHERE qid = i)) INTO p;
		INSERT INTO hb_plans VALUES (p);
	END LOOP;
END
\$\$;
SELECT round(avg((plan->0->'Plan'->>'Shared Hit Blocks')::numeric +
                 (plan->0->'Plan'->>'Shared Read Blocks')::numeric)) FROM hb_plans;
SQL
)
	q1=$(qps 1 "-c wdc.hnsw_ef_search=$ef")
	q2=$(qps 2 "-c wdc.hnsw_ef_search=$ef")
	ratio=$(awk -v a="$q1" -v b="$exact1" 'BEGIN { printf "%.1f", a / b }')
	echo "| $ef | $recall | $buffers | $q1 | $q2 | $ratio |"
done

# --- parallel build of the same index, for its build time
PARALLEL_WORKERS=${PARALLEL_WORKERS:-2}
if [ "$PARALLEL_WORKERS" -gt 0 ]; then
	pbuild=$(timed psql -X -q -v ON_ERROR_STOP=1 -At <<SQL 2>&1
SET maintenance_work_mem = '$MWM';
SET max_parallel_maintenance_workers = $PARALLEL_WORKERS;
SET client_min_messages = debug1;
DROP INDEX hb_items_z;
SELECT clock_timestamp() AS t0 \gset
CREATE INDEX hb_items_z ON hb_items USING wdc_hnsw (z latent_l2_ops)
	WITH (m = $M, ef_construction = $EFC);
SET client_min_messages = notice;
SELECT 'ms ' || round(extract(epoch FROM clock_timestamp() - :'t0') * 1000);
SQL
)
	workers=$(echo "$pbuild" | sed -nE 's/.*wdc_hnsw build with ([0-9]+) parallel workers.*/\1/p')
	pms=$(echo "$pbuild" | sed -n 's/^ms //p')
	problems=$(psql_q -c "SELECT count(*) FROM wdc.hnsw_verify('hb_items_z')")
	ef=${EFS%% *}
	recall=$(recall_at "$ef")
	echo
	echo "parallel build: ${pms} ms with ${workers:-0} workers (serial ${build_ms} ms," \
		"$(awk -v s="$build_ms" -v p="$pms" 'BEGIN { printf "%.2fx", s / p }')), hnsw_verify problems: $problems," \
		"recall@10 at ef_search $ef: $recall"
fi
