#!/usr/bin/env bash
# DP scaling through the whole service path (dpinfer run: coordinator + N workers, gRPC, JSONL):
# the same job at dp 1, 2, ... with one engine thread per worker, reported as generated tokens/s
# and as a ratio to dp 1 measured in the same run.
# usage: bench/dp_scaling.sh MODEL_DIR [REQUESTS] [MAX_TOKENS] [DP_LIST]
set -euo pipefail
model=${1:?model directory}
n=${2:-2000}
max_tokens=${3:-64}
dps=${4:-"1 2"}
bin=$(cd "$(dirname "$0")/.." && pwd)/build/bin
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
prompts=("Once upon a time" "The little dog" "Tom and Sue went to the park" "One day")
for ((i = 0; i < n; i++)); do
  p=${prompts[$((i % ${#prompts[@]}))]}
  printf '{"custom_id":"r%d","method":"POST","url":"/v1/completions","body":{"prompt":"%s","max_tokens":%d,"temperature":0,"ignore_eos":true}}\n' \
    "$i" "$p" "$max_tokens"
done >"$dir/in.jsonl"
base=""
printf '%-4s %-14s %s\n' dp gen_tok_s ratio_to_dp1
for dp in $dps; do
  line=$("$bin/dpinfer" run --model "$model" --dp "$dp" --input "$dir/in.jsonl" \
    --output "$dir/out.jsonl" --quiet --worker-arg=--threads=1 | tail -1)
  tps=$(sed -n 's/.*generated tokens\/s: \([0-9.]*\).*/\1/p' <<<"$line")
  [[ -z $base ]] && base=$tps
  printf '%-4s %-14s %.2f\n' "$dp" "$tps" "$(awk -v a="$tps" -v b="$base" 'BEGIN{print a/b}')"
done
