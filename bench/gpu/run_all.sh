#!/usr/bin/env bash
# The GPU benchmark in one command (run from the repository root on the GPU machine, after
# `source .gpu/env.sh`): makes the two random-weight bf16 checkpoints (Llama-3.2-1B's shape and
# PowerMoE-3b's config), then for each runs engine_bench (vLLM's throughput-benchmark workload
# through the Engine API, with the decode steps against the bandwidth floor) and HF transformers'
# generate on the same weights as the baseline, and for the Llama model the same workload through
# the whole service path (service_bench.sh). Ends with the summary, the RESULT lines for
# bench/RESULTS.md and a markdown table (summarize.py).
#
# usage: bench/gpu/run_all.sh
# env (all optional):
#   PARTS            parts to run, in this order (default all but llama-eager):
#                    "models llama-engine llama-hf moe-engine moe-hf service"
#                    llama-eager: engine_bench --enforce-eager on the Llama model (or EAGER=1)
#                    llama-profile: the Llama engine run with DPINFER_PROFILE=1 (per-op GPU times
#                      of eager steps, GPU and host time per step kind, load phases)
#                    llama-untuned: the Llama engine run with DPINFER_GEMM_TUNING=0 (cuBLASLt's
#                      first heuristic choice for every GEMM instead of the measured plans)
#                    kernels: kernel_bench (GEMMs and decode attention against the copy rate)
#   PART_TIMEOUT     seconds per part (default 420; a part past it is killed and marked so)
#   BENCH_MODELS     where the checkpoints go (default /tmp/dpinfer-bench-models; reused)
#   BENCH_STATE      where part logs persist between invocations (default /tmp/dpinfer-bench-state);
#                    the summary covers every part found there. FRESH=1 empties it first.
#   OUT              when set, every log and JSON is copied to $OUT/bench at the end
#   DPINFER_BIN_DIR  binaries (default: where engine_bench is on PATH, else ./build/bin)
#   NUM_PROMPTS (1000) INPUT_LEN (128) OUTPUT_LEN (128) MAX_NUM_SEQS (256) SEED (0)
#   HF_BATCH_SIZE (256) HF_NUM_BATCHES (1) HF_MAX_SECONDS (240)   HF_ARGS (extra hf_baseline flags)
#   DEVICE (cuda) DTYPE (bfloat16)   ENGINE_ARGS (extra engine_bench flags)   WORKER_ARGS
#   PYTHON (python3)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
here=$root/bench/gpu

bin=${DPINFER_BIN_DIR:-}
if [[ -z $bin ]]; then
  if command -v engine_bench > /dev/null; then
    bin=$(dirname "$(command -v engine_bench)")
  else
    bin=$root/build/bin
  fi
fi
bin=$(cd "$bin" && pwd)
export DPINFER_BIN_DIR=$bin
models=${BENCH_MODELS:-/tmp/dpinfer-bench-models}
state=${BENCH_STATE:-/tmp/dpinfer-bench-state}
parts=${PARTS:-"models llama-engine llama-hf moe-engine moe-hf service"}
[[ ${EAGER:-0} == 1 && " $parts " != *" llama-eager "* ]] && parts="$parts llama-eager"
part_timeout=${PART_TIMEOUT:-420}
num_prompts=${NUM_PROMPTS:-1000}
input_len=${INPUT_LEN:-128}
output_len=${OUTPUT_LEN:-128}
max_num_seqs=${MAX_NUM_SEQS:-256}
seed=${SEED:-0}
device=${DEVICE:-cuda}
dtype=${DTYPE:-bfloat16}
python=${PYTHON:-python3}
read -r -a engine_args <<< "${ENGINE_ARGS:-}"
read -r -a hf_args <<< "${HF_ARGS:-}"

[[ ${FRESH:-0} == 1 ]] && rm -rf "$state"
mkdir -p "$state" "$models"
started=$(date +%s)
stamp=$(date -u +%Y%m%d-%H%M%S)
publish() {
  # Closing stdout ends the tee below, so its log is complete before it is copied.
  exec > /dev/null 2>&1
  sleep 0.5
  if [[ -n ${OUT:-} ]]; then
    mkdir -p "$OUT/bench"
    cp -r "$state/." "$OUT/bench/" 2> /dev/null || true
  fi
}
trap publish EXIT
exec > >(tee -a "$state/run_all-$stamp.log") 2>&1

card=unknown
if command -v nvidia-smi > /dev/null; then
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -n 1 || true)
  card=${card:-unknown}
fi
echo "=== dpinfer GPU benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "card: $card"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
    --format=csv 2> /dev/null || true
fi
echo "host: $(hostname), $(nproc) cores," \
  "$(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
echo "repo: $(git -C "$root" rev-parse --short HEAD 2> /dev/null || echo 'no git') " \
  "(working tree as copied; uncommitted changes count)"
echo "binaries: $bin   models: $models   logs: $state"
echo "parts: $parts   (timeout ${part_timeout} s each)"
echo "workload: $num_prompts prompts x $input_len in + $output_len out," \
  "max_num_seqs $max_num_seqs, device $device, dtype $dtype"

declare -A result
order=()
# run_part NAME CMD...: runs CMD under the part timeout, its output to the screen and NAME.log.
run_part() {
  local name=$1
  shift
  local log=$state/$name.log
  echo
  echo "=== $name: $*"
  local t0=$SECONDS rc
  set +e
  timeout --kill-after=20 "$part_timeout" "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  local took=$((SECONDS - t0))
  case $rc in
    0) result[$name]="ok (${took} s)" ;;
    124 | 137) result[$name]="TIMED OUT after ${part_timeout} s" ;;
    *) result[$name]="FAILED rc=$rc (${took} s)" ;;
  esac
  order+=("$name")
  echo "=== $name: ${result[$name]}"
}
need() {  # need BINARY...: false (with a message) when one is missing
  local b
  for b in "$@"; do
    if [[ ! -x $bin/$b ]]; then
      echo "missing $bin/$b (build it and bundle it: gpu-bundle DEST $b ...)"
      return 1
    fi
  done
}
has() { [[ " $parts " == *" $1 "* ]]; }

engine_bench() {  # engine_bench PART MODEL [FLAGS...]
  local part=$1 model=$2
  shift 2
  need engine_bench || { result[$part]="SKIPPED (no engine_bench)"; order+=("$part"); return; }
  run_part "$part" "$bin/engine_bench" --model "$models/$model" --device "$device" \
    --dtype "$dtype" --num-prompts "$num_prompts" --input-len "$input_len" \
    --output-len "$output_len" --max-num-seqs "$max_num_seqs" --seed "$seed" \
    --json-out "$state/$part.json" ${engine_args[@]+"${engine_args[@]}"} "$@"
}
hf_baseline() {  # hf_baseline PART MODEL
  run_part "$1" "$python" "$here/hf_baseline.py" --model "$models/$2" \
    --batch-size "${HF_BATCH_SIZE:-256}" --num-batches "${HF_NUM_BATCHES:-1}" \
    --input-len "$input_len" --output-len "$output_len" --max-seconds "${HF_MAX_SECONDS:-240}" \
    --seed "$seed" --json-out "$state/$1.json" ${hf_args[@]+"${hf_args[@]}"}
}

if has models; then
  only=()
  if has llama-engine || has llama-eager || has llama-profile || has llama-untuned ||
    has llama-hf || has service; then
    only+=(--only llama-1b)
  fi
  has moe-engine || has moe-hf && only+=(--only powermoe-3b)
  # No part that uses a model: make both (PARTS=models).
  run_part models "$python" "$here/make_models.py" --out "$models" --seed "$seed" \
    ${only[@]+"${only[@]}"}
fi
has llama-engine && engine_bench llama-engine llama-1b
has llama-eager && engine_bench llama-eager llama-1b --enforce-eager
has llama-profile && DPINFER_PROFILE=1 engine_bench llama-profile llama-1b
has llama-untuned && DPINFER_GEMM_TUNING=0 engine_bench llama-untuned llama-1b
if has kernels; then
  if need kernel_bench; then
    run_part kernels "$bin/kernel_bench"
  else
    result[kernels]="SKIPPED (no kernel_bench)"
    order+=(kernels)
  fi
fi
has llama-hf && hf_baseline llama-hf llama-1b
has moe-engine && engine_bench moe-engine powermoe-3b
has moe-hf && hf_baseline moe-hf powermoe-3b
if has service; then
  if need dpinfer dpinfer-coordinator dpinfer-worker; then
    DEVICE=$device DTYPE=$dtype MAX_NUM_SEQS=$max_num_seqs SEED=$seed \
      run_part service bash "$here/service_bench.sh" "$models/llama-1b" "$num_prompts" \
      "$input_len" "$output_len"
  else
    result[service]="SKIPPED (binaries missing)"
    order+=(service)
  fi
fi

echo
echo "=== parts ($(($(date +%s) - started)) s in all)"
for name in "${order[@]}"; do
  printf '  %-13s %s\n' "$name" "${result[$name]}"
done
echo
card_arg=()
[[ $card != unknown ]] && card_arg=(--card "$card")
"$python" "$here/summarize.py" "$state" ${card_arg[@]+"${card_arg[@]}"} --since "$started" |
  tee "$state/summary.txt"
