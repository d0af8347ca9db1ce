#!/usr/bin/env bash
# The quickstart: builds dpinfer, writes a small random-weight Llama model (its text is
# meaningless: the weights are random), runs a batch job on a coordinator with two workers on
# this machine, prints the results and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
model=build/tiny-llama
[[ -f $model/config.json ]] || build/bin/dpinfer make-model --out "$model"
build/bin/dpinfer run --model "$model" --dp 2 \
  --input deploy/examples/requests.jsonl --output build/quickstart-results.jsonl --timeout 300
echo
echo "results (build/quickstart-results.jsonl):"
cat build/quickstart-results.jsonl
