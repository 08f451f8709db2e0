#!/usr/bin/env bash
# Per-row wdc.log_density through SQL against PyTorch's batched reference
# (midpoint, 64 steps, exact divergence at the midpoint stage) on the same
# weights, in one run, for latent dimensions 16, 32 and 64 (width 256).
#
#   bench/flow_sql_bench.sh [D ...]
#
# bench/flow_bench.c writes the weights as a wdc flow (flow_D.onnx), which
# bench/flow_torch.py evaluates in PyTorch and this script loads into a
# throwaway cluster.  SQL rows/s is the CPU time of one backend scoring
# ROWS rows (default 400) with the default options and with the stage rule;
# PyTorch's figure is also process CPU time (bench/flow_torch.py).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${WDC_BENCH_IN_ENV:-}" ]; then
	make -s -j2 >/dev/null
	rm -rf build/bench-stage
	make -s install DESTDIR="$PWD/build/bench-stage" >/dev/null
	exec env WDC_BENCH_IN_ENV=1 pg_virtualenv -t -v 15 \
		-o extension_destdir="$PWD/build/bench-stage" "$0" "$@"
fi

rows=${ROWS:-400}
work=$(mktemp -d)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
gcc -O2 -std=gnu11 -Isrc -Ibuild/onnx bench/flow_bench.c src/flow/*.c \
	src/nn/*.c src/core/*.c build/onnx/onnx.pb-c.c -lopenblas -lprotobuf-c -lm \
	-o "$work/flow_bench"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

psql_q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
psql_q -c "CREATE EXTENSION IF NOT EXISTS wdc" >/dev/null

# rows/s of one SELECT scoring every row with the given options, by the
# backend's CPU time (utime + stime from /proc, in clock ticks), so that
# other load on a shared machine does not count
sql_rate() { # $1 flow, $2 table, $3 options jsonb
	psql_q >/dev/null <<SQL
SET max_parallel_workers_per_gather = 0;
SELECT pg_backend_pid() AS pid \gset
\\setenv BACKEND_PID :pid
SELECT sum(wdc.log_density('$1', z, NULL::jsonb, '$3')) FROM $2 WHERE i <= 5;
\\! awk '{print \$14 + \$15}' /proc/\$BACKEND_PID/stat > $work/cpu0
SELECT sum(wdc.log_density('$1', z, NULL::jsonb, '$3')) FROM $2;
\\! awk '{print \$14 + \$15}' /proc/\$BACKEND_PID/stat > $work/cpu1
SQL
	awk -v n="$rows" -v hz="$(getconf CLK_TCK)" -v a="$(cat "$work/cpu0")" -v b="$(cat "$work/cpu1")" \
		'BEGIN { printf "%.0f", n * hz / (b - a) }'
}

dims=("$@")
[ ${#dims[@]} -gt 0 ] || dims=(16 32 64)
printf '| d | PyTorch batched (rows/s) | SQL default (rows/s) | SQL / PyTorch | SQL stage rule | stage / PyTorch |\n|---|---|---|---|---|---|\n'
for d in "${dims[@]}"; do
	"$work/flow_bench" "$d" "$work" > "$work/c_$d.txt"
	torch_rate=$(/usr/bin/python3 bench/flow_torch.py "$d" "$work" | awk '$1 == "torch_logdensity_rows_per_s" { print $2 }')
	chmod 644 "$work/flow_$d.onnx"
	psql_q >/dev/null <<SQL
SELECT wdc.load_model('bench_flow_$d', pg_read_binary_file('$work/flow_$d.onnx'), '{"kind": "flow"}');
SELECT setseed(0.5);
CREATE TABLE bench_rows_$d AS
SELECT i, ARRAY(SELECT (sqrt(-2 * ln(random())) * cos(2 * pi() * random()))::real
                FROM generate_series(1, $d) WHERE i > 0)::latent AS z
FROM generate_series(1, $rows) i;
SQL
	sql_default=$(sql_rate "bench_flow_$d" "bench_rows_$d" '{}')
	sql_stage=$(sql_rate "bench_flow_$d" "bench_rows_$d" '{"quadrature": "stage"}')
	awk -v d="$d" -v t="$torch_rate" -v a="$sql_default" -v b="$sql_stage" \
		'BEGIN { printf "| %d | %.0f | %.0f | %.2fx | %.0f | %.2fx |\n", d, t, a, a / t, b, b / t }'
done
