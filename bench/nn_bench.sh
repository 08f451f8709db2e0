#!/usr/bin/env bash
# Conv VAE encoder throughput: wdc's ONNX runtime against PyTorch eager and
# frozen TorchScript, one thread, batch 1 and 64, plus the single-thread
# cblas_sgemm peak measured in the same run.
#
#   bench/nn_bench.sh [SECONDS [ROUNDS]]
#       SECONDS per measurement (default 3); ROUNDS alternations of the
#       PyTorch and wdc measurements (default 3), reported as the best of
#       the rounds so that bursts of load from other processes count less.
#
# The model is bench/nn_vae_encoder.onnx (29.4 MFLOP per image).  To rebuild
# it from its seed: /usr/bin/python3 bench/nn_vae_encoder.py --export
# bench/nn_vae_encoder.onnx.  Needs Debian's python3-torch and python3-onnx.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3}
rounds=${2:-3}
out=build/bench/nn
mkdir -p "$out"

# one BLAS thread for both sides; torch.set_num_threads(1) alone leaves
# OpenBLAS threads running
export OPENBLAS_NUM_THREADS=1

make -s build/onnx/onnx.pb-c.c
cc -O2 -std=gnu11 -Isrc -Ibuild/onnx bench/nn_bench.c src/core/wdc_core.c \
	src/nn/*.c build/onnx/onnx.pb-c.c -lprotobuf-c -lopenblas -lm \
	-o "$out/nn_bench"

mflop=$(/usr/bin/python3 -c 'import sys; sys.path.insert(0, "bench"); import nn_vae_encoder as e; print(e.flops_per_image() / 1e6)')
echo "model: bench/nn_vae_encoder.onnx, $mflop MFLOP per image"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
# PyTorch allocates its batch-64 activations on every call.  glibc serves
# blocks that large with mmap until its adaptive threshold rises, and the
# page faults then halve PyTorch's throughput in some runs (1,900 against
# 3,000 images/s here).  A fixed high threshold gives PyTorch its fast
# regime in every round.
torch_env=(MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=1073741824
	MALLOC_TOP_PAD_=268435456)
for round in $(seq "$rounds"); do
	env "${torch_env[@]}" /usr/bin/python3 bench/nn_vae_encoder.py --time bench/nn_vae_encoder.onnx "$out" "$seconds"
	"$out/nn_bench" bench/nn_vae_encoder.onnx "$out" "$mflop" "$seconds"
done | tee "$out/rounds.txt"

# best of the rounds for every "LABEL: N images/s" or "LABEL: N GFLOP/s" line
echo "== best of $rounds rounds"
awk -F': ' '/images\/s|GFLOP\/s$/ {
		split($2, f, " "); if (f[1] + 0 > best[$1] + 0) { best[$1] = f[1]; line[$1] = $0 }
	}
	END { for (k in line) print line[k] }' "$out/rounds.txt" | sort
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
