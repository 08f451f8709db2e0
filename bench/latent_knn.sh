#!/usr/bin/env bash
# Exact kNN (k = 10) by sequential scan over N rows of latent(D), compared in
# one run with the same query over real[] computed in SQL and with a plain C
# loop over the same data in memory (the memory-bandwidth floor).
#
#   bench/latent_knn.sh                 throwaway cluster (pg_virtualenv)
#   WDC_BENCH_USE_ENV=1 bench/latent_knn.sh   server named by PG* variables
# Settings: N (default 100000), D (32), Q queries (20), REPEAT (5).
# Needs wdc installed (make install, or DESTDIR staging through
# WDC_DESTDIR=path, which sets the server's extension_destdir).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
D=${D:-32}
Q=${Q:-20}
REPEAT=${REPEAT:-5}

if [ -z "${WDC_BENCH_USE_ENV:-}" ]; then
	opts=()
	[ -n "${WDC_DESTDIR:-}" ] && opts=(-o "extension_destdir=$WDC_DESTDIR")
	exec env WDC_BENCH_USE_ENV=1 pg_virtualenv -t -v 15 "${opts[@]}" "$0" "$@"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -Isrc bench/knn_floor.c src/latent/distance.c src/latent/latent_parse.c -lm -o "$work/knn_floor"

psql_q() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
psql_q <<SQL
CREATE EXTENSION IF NOT EXISTS wdc;
DROP TABLE IF EXISTS bench_items, bench_items_array, bench_queries;
SELECT setseed(0.5);
CREATE TABLE bench_items (id int PRIMARY KEY, z latent($D));
INSERT INTO bench_items
SELECT i, v::latent
FROM (SELECT i, (SELECT array_agg((random() * 2 - 1)::real) FROM generate_series(1, $D) WHERE i > 0) v
      FROM generate_series(1, $N) i) s;
-- the same values as real[] in a table of their own, so each scan reads
-- only its own column
CREATE TABLE bench_items_array (id int PRIMARY KEY, a real[]);
INSERT INTO bench_items_array SELECT id, z::real[] FROM bench_items;
CREATE TABLE bench_queries (qid int PRIMARY KEY, z latent($D), a real[]);
INSERT INTO bench_queries
SELECT i, v::latent, v
FROM (SELECT i, (SELECT array_agg((random() * 2 - 1)::real) FROM generate_series(1, $D) WHERE i > 0) v
      FROM generate_series(1, $Q) i) s;
VACUUM ANALYZE bench_items;
VACUUM ANALYZE bench_items_array;
VACUUM ANALYZE bench_queries;
SQL
psql_q -c "\\copy (SELECT z FROM bench_items ORDER BY id) TO '$work/data.txt'"
psql_q -c "\\copy (SELECT z FROM bench_queries ORDER BY qid) TO '$work/queries.txt'"

# Each SQL variant runs every query REPEAT times after one warm-up pass and
# reports mean ms per query and the same id checksum as the C program.
run_sql() { # $1 = ORDER BY expression over i.<col> and q.<col>; $2 = table; $3 = workers
	psql_q <<SQL
SET max_parallel_workers_per_gather = ${3:-0};
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
DO \$\$
DECLARE
	t0 timestamptz;
	ms float8;
	chk bigint := 0;
	q record;
BEGIN
	FOR q IN SELECT * FROM bench_queries ORDER BY qid LOOP
		PERFORM (SELECT array_agg(id) FROM (SELECT id FROM ${2:-bench_items} i ORDER BY $1 LIMIT 10) s);
	END LOOP;
	t0 := clock_timestamp();
	FOR r IN 1..$REPEAT LOOP
		FOR q IN SELECT * FROM bench_queries ORDER BY qid LOOP
			IF r = 1 THEN
				chk := chk + (SELECT sum(id::bigint * ord) FROM (SELECT id, row_number() OVER () AS ord FROM (SELECT id FROM ${2:-bench_items} i ORDER BY $1 LIMIT 10) s) s2);
			ELSE
				PERFORM (SELECT array_agg(id) FROM (SELECT id FROM ${2:-bench_items} i ORDER BY $1 LIMIT 10) s);
			END IF;
		END LOOP;
	END LOOP;
	ms := extract(epoch FROM clock_timestamp() - t0) * 1000 / ($REPEAT * $Q);
	RAISE NOTICE 'ms_per_query % checksum %', round(ms::numeric, 3), chk;
END
\$\$;
SQL
}

echo "exact kNN, k = 10, N = $N, latent($D), $Q queries x $REPEAT (real[]: x 1)"
floor=$("$work/knn_floor" "$work/data.txt" "$work/queries.txt" 10 "$REPEAT")
c_ms=$(echo "$floor" | awk '/c_loop_ms_per_query/ {print $2}')
c_chk=$(echo "$floor" | awk '/checksum/ {print $2}')
# PostgreSQL's own cost of visiting every row: no distance, no sort.
scan_floor() {
	psql_q <<SQL 2>&1 | sed -n 's/.*ms_per_query \([0-9.]*\).*/\1/p'
SET max_parallel_workers_per_gather = 0;
DO \$\$
DECLARE
	t0 timestamptz;
BEGIN
	PERFORM count(*) FROM bench_items;
	t0 := clock_timestamp();
	FOR r IN 1..$REPEAT * $Q LOOP
		PERFORM count(*) FROM bench_items;
	END LOOP;
	RAISE NOTICE 'ms_per_query %', round((extract(epoch FROM clock_timestamp() - t0) * 1000 / ($REPEAT * $Q))::numeric, 3);
END
\$\$;
SQL
}

parse() { sed -n 's/.*ms_per_query \([0-9.]*\) checksum \([0-9]*\).*/\1 \2/p'; }
floor_ms=$(scan_floor)
lat=$(run_sql 'i.z <-> q.z' bench_items 0 2>&1 | parse)
par=$(run_sql 'i.z <-> q.z' bench_items 2 2>&1 | parse)
arr=$(REPEAT=1 run_sql '(SELECT sum((x - y) * (x - y)) FROM unnest(i.a, q.a) u(x, y))' bench_items_array 0 2>&1 | parse)
lat_ms=${lat% *}; lat_chk=${lat#* }
par_ms=${par% *}; par_chk=${par#* }
arr_ms=${arr% *}; arr_chk=${arr#* }
printf '%-34s %10s %14s %10s\n' variant ms/query checksum "vs C loop"
printf '%-34s %10.3f %14s %10s\n' "C loop (memory floor)" "$c_ms" "$c_chk" "1.00x"
printf '%-34s %10.3f %14s %9.2fx\n' "SQL count(*) (executor scan only)" "$floor_ms" "-" "$(echo "$floor_ms / $c_ms" | bc -l)"
printf '%-34s %10.3f %14s %9.2fx\n' "SQL latent <->" "$lat_ms" "$lat_chk" "$(echo "$lat_ms / $c_ms" | bc -l)"
printf '%-34s %10.3f %14s %9.2fx\n' "SQL latent <->, 2 parallel workers" "$par_ms" "$par_chk" "$(echo "$par_ms / $c_ms" | bc -l)"
printf '%-34s %10.3f %14s %9.2fx\n' "SQL real[] (unnest, sum)" "$arr_ms" "$arr_chk" "$(echo "$arr_ms / $c_ms" | bc -l)"
if [ "$lat_chk" != "$c_chk" ]; then
	echo "checksum mismatch: SQL latent and C loop returned different neighbours" >&2
	exit 1
fi
