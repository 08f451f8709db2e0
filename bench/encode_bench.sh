#!/usr/bin/env bash
# Encoding throughput of the reference VAE encoder (models/) on real
# cutouts, in one run, all on one core:
#   - SQL per row:  SELECT count(wdc.encode(model, version, img)) over N
#                   stored cutouts (real[32][32]), preprocessing included,
#                   and wdc.encode(model, img), which resolves the current
#                   version;
#   - SQL batched:  wdc.encode_batch over groups of B cutouts (array_agg),
#                   for B in BATCHES, with JIT on (the default) and off;
#   - SQL backfill: CALL wdc.backfill over all N rows (batches of 256,
#                   latents written);
#   - SQL, STORAGE MAIN: per row and batched (B = 64) on a copy of the
#                   cutouts kept in the rows instead of TOAST;
#   - C:            wdc's runtime called directly (bench/encode_bench.c),
#                   preprocess + batch 1, batch 1, batch 64;
#   - PyTorch 1.13: the same ONNX graph rebuilt as torch modules
#                   (bench/encode_torch.py), batch 1 and batch 64, on the
#                   same preprocessed arrays, and batch 64 with numpy
#                   preprocessing of the raw arrays in the timed loop.
# Images per second are per core: parallel query is off and OpenBLAS and
# PyTorch run one thread each.  Every figure is the fastest of REPEAT runs,
# because other jobs on a shared machine only ever add time.
#
#   bench/encode_bench.sh                      throwaway cluster (pg_virtualenv)
#   WDC_BENCH_USE_ENV=1 bench/encode_bench.sh  server named by PG* variables
#
# Settings: N images (default 10000; the real cutouts repeat when there are
# fewer), BATCHES ("64 256 1000"), REPEAT (3), WDC_DESTDIR (an
# extension_destdir staging directory from "make install DESTDIR=...",
# else the installed wdc).
# Needs data/vae from tools/make_cutouts.sh (made here when missing; that
# needs scripts/fetch-data --all) and /usr/bin/python3 with torch and onnx.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
BATCHES=${BATCHES:-"64 256 1000"}
REPEAT=${REPEAT:-3}
encoder=models/wdc_vae32_encoder.onnx
data=data/vae

if [ -z "${WDC_BENCH_USE_ENV:-}" ]; then
	[ -f "$data/index.tsv" ] || tools/make_cutouts.sh "$data"
	opts=(-o "max_parallel_workers_per_gather=0")
	[ -n "${WDC_DESTDIR:-}" ] && opts+=(-o "extension_destdir=$WDC_DESTDIR")
	exec env WDC_BENCH_USE_ENV=1 pg_virtualenv -t -v 15 "${opts[@]}" "$0" "$@"
fi

work=$(mktemp -d)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
psql_q() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
preprocessing=$(/usr/bin/python3 -c '
import json
p = json.load(open("'"$data"'/preprocessing.json"))["preprocessing"]
print(" ".join("%s=%s" % kv for kv in p.items()))')

# Every figure line is "label images/s seconds ..."; the ratios at the
# end are computed from them.
run_all() {
echo "# encode_bench: N=$N, best of $REPEAT, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

# --- C driver on the runtime, without PostgreSQL
mkdir -p build/bench
[ -f build/onnx/onnx.pb-c.c ] || make build/onnx/onnx.pb-c.c >/dev/null
# preprocess.c with the extension's flag for it (see the Makefile)
gcc -O2 -ftree-vectorize -std=gnu11 -Isrc -c -o build/bench/preprocess.o \
	src/fits/preprocess.c
gcc -O2 -std=gnu11 -Wall -Wno-unused-parameter -Isrc -Ibuild/onnx \
	-o build/bench/encode_bench bench/encode_bench.c build/bench/preprocess.o \
	src/core/*.c src/nn/*.c $(ls src/fits/*.c | grep -v '/preprocess\.c$') \
	build/onnx/onnx.pb-c.c -lopenblas -lcfitsio -lwcs -lprotobuf-c -lpng16 -lz -lm
OPENBLAS_NUM_THREADS=1 build/bench/encode_bench "$encoder" "$data/raw.f32" "$N" "$REPEAT" $preprocessing

# --- PyTorch on the preprocessed arrays the C driver made from the same cutouts
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 /usr/bin/python3 bench/encode_torch.py \
	"$encoder" "$data/input.f32" "$N" "$REPEAT" "$data/raw.f32" "$data/preprocessing.json"

# --- SQL: N stored cutouts, cut by wdc.fits_cutout from the real frames
cp "$encoder" "$work/encoder.onnx"
awk -v root="$PWD" -v OFS='\t' '{ print NR, root "/" $1, $2, $3, $4, $5 }' \
	"$data/index.tsv" > "$work/index.tsv"
chmod 644 "$work"/*
psql_q <<SQL
CREATE EXTENSION IF NOT EXISTS wdc;
DROP TABLE IF EXISTS eb_source, eb_cutouts;
SELECT wdc.drop_model(name) FROM wdc.models WHERE name = 'eb_vae';
CREATE TABLE eb_source (n int, path text, hdu int, plane int, x float8, y float8);
\copy eb_source FROM '$work/index.tsv'
CREATE TABLE eb_cutouts (id int PRIMARY KEY, img real[]);
INSERT INTO eb_cutouts
SELECT i, wdc.fits_cutout(s.path, s.x, s.y, 32, s.hdu, nullif(s.plane, 0))
FROM generate_series(1, $N) i
JOIN eb_source s ON s.n = (i - 1) % (SELECT count(*) FROM eb_source) + 1;
VACUUM ANALYZE eb_cutouts;
SELECT wdc.load_model('eb_vae', pg_read_binary_file('$work/encoder.onnx'), '{}');
SQL
version=$(psql_q -c "SELECT version FROM wdc.models WHERE name = 'eb_vae'")

# Time one statement in the server (clock_timestamp around EXECUTE), best
# of REPEAT runs, and print "label images/s seconds result".  Settings in
# $SQL_SETTINGS (for example "SET jit = off;") run first.
time_sql() {
	psql_q <<-SQL
	SET max_parallel_workers_per_gather = 0;
	${SQL_SETTINGS:-}
	DO \$\$
	DECLARE
		t0 timestamptz;
		s float8 := 'Infinity';
		r text;
	BEGIN
		PERFORM wdc.encode('eb_vae', $version, img) FROM eb_cutouts WHERE id = 1;
		FOR k IN 1..$REPEAT LOOP
			t0 := clock_timestamp();
			EXECUTE \$q\$ $2 \$q\$ INTO r;
			s := least(s, extract(epoch FROM clock_timestamp() - t0));
		END LOOP;
		RAISE NOTICE '$1 % % %', round($N / s), round(s::numeric, 3), r;
	END
	\$\$;
	SQL
}
time_sql sql_scan_only "SELECT count(img)::text FROM eb_cutouts" 2>&1 | sed 's/^NOTICE:  //'
time_sql sql_per_row \
	"SELECT count(wdc.encode('eb_vae', $version, img))::text FROM eb_cutouts" 2>&1 | sed 's/^NOTICE:  //'
time_sql sql_per_row_current \
	"SELECT count(wdc.encode('eb_vae', img))::text FROM eb_cutouts" 2>&1 | sed 's/^NOTICE:  //'
# The planner expects one group per row here (N calls of encode_batch at
# its declared COST), so the statement's estimate passes
# jit_optimize_above_cost, and JIT compiles it with inlining and
# optimization first.  The _jit_off lines time the same statements without
# that fixed cost.
for b in $BATCHES; do
	time_sql "sql_array_agg_$b" \
		"SELECT sum(cardinality(imgs))::text FROM (SELECT array_agg(img ORDER BY id) AS imgs FROM eb_cutouts GROUP BY (id - 1) / $b) g" \
		2>&1 | sed 's/^NOTICE:  //'
	for jit in on off; do
		label="sql_batch_$b"
		[ "$jit" = off ] && label="${label}_jit_off"
		SQL_SETTINGS="SET jit = $jit;" time_sql "$label" \
			"SELECT sum(cardinality(wdc.encode_batch('eb_vae', $version, imgs)))::text FROM (SELECT array_agg(img ORDER BY id) AS imgs FROM eb_cutouts GROUP BY (id - 1) / $b) g" \
			2>&1 | sed 's/^NOTICE:  //'
	done
done

# The same cutouts with STORAGE MAIN.  A 4 KB cutout then stays in its
# row, and reading it skips the TOAST lookup (an index scan of the TOAST
# table per value).  Sorting such wide rows is slow, so the batched
# statement reads the groups in key order from an index on the group
# expression, as backfill batches read rows in key order.
psql_q <<SQL
DROP TABLE IF EXISTS eb_cutouts_main;
CREATE TABLE eb_cutouts_main (id int PRIMARY KEY, img real[]);
ALTER TABLE eb_cutouts_main ALTER COLUMN img SET STORAGE MAIN;
INSERT INTO eb_cutouts_main SELECT id, img FROM eb_cutouts ORDER BY id;
CREATE INDEX ON eb_cutouts_main (((id - 1) / 64));
VACUUM ANALYZE eb_cutouts_main;
SQL
time_sql sql_main_per_row \
	"SELECT count(wdc.encode('eb_vae', $version, img))::text FROM eb_cutouts_main" 2>&1 | sed 's/^NOTICE:  //'
SQL_SETTINGS="SET jit = off;" time_sql sql_main_batch_64_jit_off \
	"SELECT sum(cardinality(wdc.encode_batch('eb_vae', $version, imgs)))::text FROM (SELECT array_agg(img ORDER BY id) AS imgs FROM eb_cutouts_main GROUP BY (id - 1) / 64) g" \
	2>&1 | sed 's/^NOTICE:  //'

# wdc.backfill, the batched path of a catalog (default batch_size 256): it
# encodes every row into TABLE.z and commits per batch, so its time
# includes writing the latents.  Best of REPEAT runs, each on NULL latents.
# With STORAGE MAIN each update also writes the row's cutout again.
time_backfill() {
	local table=$1 label=$2 best="" ms encoded
	psql_q -c "ALTER TABLE $table ADD COLUMN z latent"
	for k in $(seq "$REPEAT"); do
		psql_q -c "UPDATE $table SET z = NULL" -c "VACUUM $table"
		ms=$(psql -X -q -v ON_ERROR_STOP=1 \
			-c "SET client_min_messages = warning" -c '\timing on' \
			-c "CALL wdc.backfill('$table', 'img', 'z', 'eb_vae', '{\"version\": $version}')" |
			sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1)
		best=$(awk -v a="$ms" -v b="$best" 'BEGIN { print (b == "" || a < b) ? a : b }')
	done
	encoded=$(psql_q -c "SELECT count(z) FROM $table")
	awk -v ms="$best" -v n="$N" -v e="$encoded" -v label="$label" \
		'BEGIN { printf "%s %d %.3f %d\n", label, n / (ms / 1000), ms / 1000, e }'
}
time_backfill eb_cutouts sql_backfill
time_backfill eb_cutouts_main sql_main_backfill

# The per-row and batched latents agree (sum of all elements, and the
# largest elementwise difference).
psql_q <<SQL
SET max_parallel_workers_per_gather = 0;
WITH r AS (SELECT id, wdc.encode('eb_vae', $version, img)::real[] AS z FROM eb_cutouts),
     b AS (SELECT g * 256 + k AS id, zs[k]::real[] AS z
           FROM (SELECT (id - 1) / 256 AS g,
                        wdc.encode_batch('eb_vae', $version, array_agg(img ORDER BY id)) AS zs
                 FROM eb_cutouts GROUP BY 1) t,
                generate_series(1, cardinality(zs)) k)
SELECT 'checksum sql_per_row ' || round(sum(a::float8)::numeric, 6) ||
       ' max_abs_diff_batch ' || max(abs(a - c))
FROM r JOIN b USING (id), unnest(r.z, b.z) u(a, c);
SQL
}
run_all | tee "$work/figures.txt"

# Ratios within this run.  Batched: the best B with JIT off (see above).
awk '
	$2 ~ /^[0-9]+$/ { v[$1] = $2 }
	$1 ~ /^sql_batch_[0-9]+_jit_off$/ && $2 > best { best = $2; bl = $1 }
	END {
		printf "ratio sql_per_row / torch_batch1 %.2f (target 1.0)\n", v["sql_per_row"] / v["torch_batch1"]
		printf "ratio %s / torch_batch64 %.2f (target 0.8)\n", bl, best / v["torch_batch64"]
		printf "ratio sql_main_batch_64_jit_off / torch_batch64 %.2f\n", v["sql_main_batch_64_jit_off"] / v["torch_batch64"]
		printf "ratio sql_main_per_row / torch_batch64 %.2f\n", v["sql_main_per_row"] / v["torch_batch64"]
		printf "ratio sql_per_row / torch_batch64 %.2f\n", v["sql_per_row"] / v["torch_batch64"]
		printf "ratio c_batch64 / torch_batch64 %.2f\n", v["c_batch64"] / v["torch_batch64"]
		printf "ratio %s / torch_batch64_numpy_prep %.2f\n", bl, best / v["torch_batch64_numpy_prep"]
	}' "$work/figures.txt"
