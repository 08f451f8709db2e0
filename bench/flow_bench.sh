#!/usr/bin/env bash
# Flow-matching benchmark: the C core against a PyTorch reference on the same
# weights and rows, for latent dimensions 16, 32 and 64 (width 256, 3 hidden
# layers).  Prints one table row per dimension.
#
#   bench/flow_bench.sh [D ...]    build bench/flow_bench.c and run both sides
#                                  for each latent dimension D (default 16 32 64)
#
# Needs Debian's python3 with torch and onnx (/usr/bin/python3).  Both sides
# use one thread and measure process CPU time.  On a shared machine the load
# changes while the script runs, so each side runs REPEAT times (default 3),
# alternating, and the table keeps the best throughput of each.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

make -s build/onnx/onnx.pb-c.h
gcc -O2 -std=gnu11 -Isrc -Ibuild/onnx bench/flow_bench.c src/flow/*.c \
	src/nn/*.c src/core/*.c build/onnx/onnx.pb-c.c -lopenblas -lprotobuf-c -lm \
	-o "$work/flow_bench"

export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
printf '| d | C log p default (rows/s) | C log p stage rule | C default, one row per call | C stage, one row per call | PyTorch log p | default / PyTorch | stage / PyTorch | one-row default / PyTorch | one-row stage / PyTorch | C residual | C train (samples/s) | PyTorch train | C stage vs PyTorch max diff | oracle default mean / max / Spearman | oracle stage mean / max / Spearman |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n'
repeat=${REPEAT:-3}
dims=("$@")
[ ${#dims[@]} -gt 0 ] || dims=(16 32 64)
for d in "${dims[@]}"; do
	: > "$work/all_$d.txt"
	for i in $(seq "$repeat"); do
		"$work/flow_bench" "$d" "$work" >> "$work/all_$d.txt"
		/usr/bin/python3 bench/flow_torch.py "$d" "$work" >> "$work/all_$d.txt"
	done
	# best throughput over the repeats; other values are the same every time
	val() { awk -v k="$1" '$1 == k && (!seen || $2 > best) { best = $2; seen = 1 } END { print best }' "$work/all_$d.txt"; }
	ratio=$(awk -v a="$(val c_logdensity_default_rows_per_s)" -v b="$(val torch_logdensity_rows_per_s)" 'BEGIN { printf "%.2fx", a / b }')
	stage_ratio=$(awk -v a="$(val c_logdensity_stage_rows_per_s)" -v b="$(val torch_logdensity_rows_per_s)" 'BEGIN { printf "%.2fx", a / b }')
	one_ratio=$(awk -v a="$(val c_logdensity_default_one_row_per_s)" -v b="$(val torch_logdensity_rows_per_s)" 'BEGIN { printf "%.2fx", a / b }')
	one_stage_ratio=$(awk -v a="$(val c_logdensity_stage_one_row_per_s)" -v b="$(val torch_logdensity_rows_per_s)" 'BEGIN { printf "%.2fx", a / b }')
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s | %s / %s / %s |\n' "$d" \
		"$(val c_logdensity_default_rows_per_s)" "$(val c_logdensity_stage_rows_per_s)" \
		"$(val c_logdensity_default_one_row_per_s)" "$(val c_logdensity_stage_one_row_per_s)" \
		"$(val torch_logdensity_rows_per_s)" "$ratio" "$stage_ratio" "$one_ratio" "$one_stage_ratio" \
		"$(val c_residual_rows_per_s)" \
		"$(val c_train_samples_per_s)" "$(val torch_train_samples_per_s)" \
		"$(val torch_vs_c_stage_max_abs_diff)" \
		"$(val oracle_default_in_mean_err)" "$(val oracle_default_in_max_err)" "$(val oracle_default_outlier_spearman)" \
		"$(val oracle_stage_in_mean_err)" "$(val oracle_stage_in_max_err)" "$(val oracle_stage_outlier_spearman)"
done
