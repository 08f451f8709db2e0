#!/usr/bin/env bash
# Repeat the scenario of test/pgtap/hnsw_vacuum.sql with many data seeds:
# ten well-separated Gaussian-like clusters of 600 rows in 16 dimensions,
# build a wdc_hnsw index, delete 30% of the rows, VACUUM, then REINDEX.
# Levels are drawn from the heap TID, so one data seed always builds the
# same graph; varying the seed is what varies the graph.
#
#   tools/hnsw_vacuum_seeds.sh [FIRST [LAST]]        seeds FIRST..LAST (1..60)
#   WDC_BENCH_USE_ENV=1 tools/hnsw_vacuum_seeds.sh   server named by PG* variables
#
# Seed s runs setseed(s / 1000); the pgTAP test uses setseed(0.05), seed 50.
# Prints one line per seed: recall@10 after the build, after VACUUM and
# after REINDEX, the hnsw_verify problem count, and FAIL where the test's
# conditions (REINDEX recall >= 0.95, VACUUM within 0.01 of it, no
# problems) do not hold; then the failure count.  WDC_DESTDIR names an
# extension_destdir staging directory ("make install DESTDIR=...").
set -euo pipefail
cd "$(dirname "$0")/.."
FIRST=${1:-1}
LAST=${2:-60}

if [ -z "${WDC_BENCH_USE_ENV:-}" ]; then
	opts=(-o "max_parallel_workers_per_gather=0")
	[ -n "${WDC_DESTDIR:-}" ] && opts+=(-o "extension_destdir=$WDC_DESTDIR")
	exec env WDC_BENCH_USE_ENV=1 pg_virtualenv -t -v 15 "${opts[@]}" "$0" "$@"
fi

psql_q() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }

psql_q <<'SQL'
CREATE EXTENSION IF NOT EXISTS wdc;
CREATE OR REPLACE FUNCTION vac_recall() RETURNS numeric LANGUAGE plpgsql AS $$
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
SQL

failures=0
for s in $(seq "$FIRST" "$LAST"); do
	seed=$(awk -v s="$s" 'BEGIN { printf "%.3f", s / 1000 }')
	line=$(psql_q 2>/dev/null <<SQL
SET max_parallel_workers_per_gather = 0;
DROP TABLE IF EXISTS vac_t, vac_c, vac_q;
SELECT setseed($seed) \\g /dev/null
CREATE TABLE vac_t (id int PRIMARY KEY, z latent(16));
CREATE TABLE vac_c AS
SELECT k, array_agg((random() * 2 - 1)::real ORDER BY j) AS c
FROM generate_series(0, 9) k, generate_series(1, 16) j GROUP BY k;
INSERT INTO vac_t
SELECT i, (SELECT array_agg((c.c[j] + 0.15 * (random() + random() + random() - 1.5) + 0 * i)::real ORDER BY j)
           FROM generate_series(1, 16) j)::latent
FROM generate_series(1, 6000) i JOIN vac_c c ON c.k = i % 10;
CREATE TABLE vac_q AS SELECT id AS qid, z FROM vac_t WHERE id % 120 = 7;
CREATE INDEX vac_t_z ON vac_t USING wdc_hnsw (z latent_l2_ops);
SELECT round(vac_recall(), 3) AS built \\gset
DELETE FROM vac_t WHERE (id * 7) % 10 < 3;
VACUUM vac_t;
SELECT round(vac_recall(), 3) AS vacuumed \\gset
SELECT count(*) AS problems FROM wdc.hnsw_verify('vac_t_z') \\gset
REINDEX INDEX vac_t_z;
SELECT round(vac_recall(), 3) AS fresh \\gset
SELECT format('built %s vacuumed %s reindexed %s problems %s%s', :built, :vacuumed, :fresh, :problems,
              CASE WHEN :fresh >= 0.95 AND :vacuumed >= :fresh - 0.01 AND :problems = 0
                   THEN '' ELSE ' FAIL' END);
SQL
)
	echo "seed $seed: $line"
	case "$line" in *FAIL*) failures=$((failures + 1)) ;; esac
done
echo "failures: $failures of $((LAST - FIRST + 1))"
