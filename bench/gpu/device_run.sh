#!/usr/bin/env bash
# What one device-tool call runs on the GPU machine: unpacks the binary bundle made here (see
# bench/RESULTS.md, "How to run the GPU benchmark"), runs the CUDA tests (their logs to $OUT/tests),
# then the benchmark parts (bench/gpu/run_all.sh; logs and the RESULT lines to $OUT/bench).
# usage: bench/gpu/device_run.sh [tests] [bench]   (env: TESTS="binary ..." PARTS=... as run_all.sh)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
# Logs go to a local folder, packed into one $OUT/all.tar.gz at the end (the device tool returns
# only a few files).
out=/tmp/dpinfer-out
rm -rf "$out"
mkdir -p "$out/tests"
trap 'tar -czf "${OUT:-/tmp}/all.tar.gz" -C "$out" . 2>/dev/null' EXIT
if [[ -f .gpucarry/b.tar.xz && ! -d .gpu/bin ]]; then tar -xJf .gpucarry/b.tar.xz; fi
# shellcheck disable=SC1091
source .gpu/env.sh
export DPINFER_SHARED_DIR=$root/.gpu/shared DPINFER_BIN_DIR=$root/.gpu/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/card.txt"
want=" ${*:-tests bench} "
if [[ $want == *" tests "* ]]; then
  tests=${TESTS:-"kernels_cuda_parity_test worker_engine_cuda_engine_test cli_check_logits_test integration_cuda_end_to_end_test"}
  for t in $tests; do
    timeout "${TEST_TIMEOUT:-240}" ".gpu/bin/$t" > "$out/tests/$t.log" 2>&1
    echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED)  \]' "$out/tests/$t.log" | tr '\n' ' ')"
  done
  for f in llama qwen2 mixtral granitemoe; do
    for dt in float32 bfloat16; do
      echo "check-logits $f $dt: $(.gpu/bin/dpinfer check-logits --model ".gpu/shared/fixtures/tiny-$f" \
        --reference ".gpu/shared/fixtures/tiny-$f/reference.safetensors" --backend cuda --dtype $dt 2>&1 | tail -2 | tr "\n" " ")"
    done
  done 2>&1 | tee "$out/tests/check_logits.txt"
fi
if [[ $want == *" bench "* ]]; then
  BENCH_STATE=$out/bench OUT= timeout "${BENCH_TIMEOUT:-3000}" bash bench/gpu/run_all.sh 2>&1 |
    tail -60
fi
