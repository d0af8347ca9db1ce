#!/usr/bin/env bash
# The benchmark workload through the whole service path, model load excluded: a coordinator and one
# worker on this machine, the job submitted as OpenAI batch JSONL with token-id prompts over gRPC,
# the results streamed back and written in order. Timed from `dpinfer submit` to the result file
# written, after the worker has registered (its model is loaded before it registers) and after an
# untimed warm-up job. Compare its generated tokens/s with engine_bench's output tokens/s.
#
# usage: bench/gpu/service_bench.sh MODEL_DIR [N=1000] [INPUT_LEN=128] [OUTPUT_LEN=128]
# env: DPINFER_BIN_DIR (default ./build/bin)   DEVICE (cuda)   DTYPE (bfloat16)
#      MAX_NUM_SEQS (256)   WORKER_ARGS (extra worker flags, word-split)   WARMUP (1: run one)
#      LOAD_TIMEOUT (600 s for the worker to register)   JOB_TIMEOUT (1800 s)   SEED (0)
#      KEEP_DIR (keep the work dir: logs, requests, results)   PYTHON (python3)
# The last line of stdout is `SERVICE gen_tok_s=<x> elapsed_s=<y> requests=<n> ...`.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 MODEL_DIR [N] [INPUT_LEN] [OUTPUT_LEN]" >&2
  exit 2
fi
model=$(cd "$1" && pwd)
n=${2:-1000}
input_len=${3:-128}
output_len=${4:-128}
bin=${DPINFER_BIN_DIR:-./build/bin}
device=${DEVICE:-cuda}
dtype=${DTYPE:-bfloat16}
max_num_seqs=${MAX_NUM_SEQS:-256}
load_timeout=${LOAD_TIMEOUT:-600}
job_timeout=${JOB_TIMEOUT:-1800}
seed=${SEED:-0}
python=${PYTHON:-python3}
read -r -a worker_args <<< "${WORKER_ARGS:-}"

for b in dpinfer dpinfer-coordinator dpinfer-worker; do
  [[ -x $bin/$b ]] || { echo "service_bench: $bin/$b not found (set DPINFER_BIN_DIR)" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/dpinfer-service-bench.XXXXXX")
coord_pid=""
worker_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in $worker_pid $coord_pid; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $worker_pid $coord_pid; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n ${KEEP_DIR:-} || $rc -ne 0 ]]; then
    echo "service_bench: logs, requests and results kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }
tail_logs() {
  for f in "$work"/coordinator.log "$work"/worker.log; do
    [[ -f $f ]] && { echo "--- $f (tail)" >&2; tail -n 30 "$f" >&2; }
  done
  return 0
}

# 1. The coordinator on a free loopback port (it writes the port it bound).
"$bin/dpinfer-coordinator" --listen 127.0.0.1:0 --port-file "$work/port" --dp-size 1 \
  > "$work/coordinator.log" 2>&1 &
coord_pid=$!
for _ in $(seq 100); do [[ -s $work/port ]] && break; sleep 0.1; done
if [[ ! -s $work/port ]]; then
  echo "service_bench: the coordinator did not start" >&2
  tail_logs
  exit 1
fi
addr=127.0.0.1:$(cat "$work/port")

# 2. One worker; it registers once its model is loaded.
t_load=$(now)
"$bin/dpinfer-worker" --coordinator "$addr" --listen 127.0.0.1:0 --model "$model" \
  --device "$device" --dtype "$dtype" --max-num-seqs "$max_num_seqs" \
  ${worker_args[@]+"${worker_args[@]}"} > "$work/worker.log" 2>&1 &
worker_pid=$!
deadline=$(( $(date +%s) + load_timeout ))
until "$bin/dpinfer" workers --coordinator "$addr" 2>/dev/null | grep -q $'\tready\t'; do
  if ! kill -0 "$worker_pid" 2>/dev/null; then
    echo "service_bench: the worker exited before registering" >&2
    tail_logs
    exit 1
  fi
  if (( $(date +%s) > deadline )); then
    echo "service_bench: the worker did not register within ${load_timeout} s" >&2
    tail_logs
    exit 1
  fi
  sleep 0.2
done
load_s=$(awk -v a="$t_load" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}')
echo "service_bench: worker ready after ${load_s} s (model load + registration, not timed)"
"$bin/dpinfer" workers --coordinator "$addr"

# 3. Requests: random token-id prompts, fixed output length, ignore_eos, temperature 1, top_p 1.
write_requests() {  # COUNT INPUT_LEN OUTPUT_LEN SEED PREFIX FILE
  "$python" - "$model" "$@" <<'PY'
import json, os, random, sys
model, count, input_len, output_len, seed, prefix, path = sys.argv[1:]
vocab = json.load(open(os.path.join(model, "config.json")))["vocab_size"]
rng = random.Random(int(seed))
with open(path, "w") as f:
    for i in range(int(count)):
        body = {"model": os.path.basename(model.rstrip("/")),
                "prompt": [rng.randrange(vocab) for _ in range(int(input_len))],
                "max_tokens": int(output_len), "temperature": 1.0, "top_p": 1.0,
                "ignore_eos": True, "seed": int(seed) * 1000003 + i}
        f.write(json.dumps({"custom_id": f"{prefix}{i}", "method": "POST",
                            "url": "/v1/completions", "body": body}) + "\n")
PY
}
# Prints "<requests> <ok> <completion tokens> <prompt tokens>" of a results file and fails unless
# every request succeeded with exactly OUTPUT_LEN tokens.
count_results() {  # FILE EXPECTED_REQUESTS OUTPUT_LEN
  "$python" - "$@" <<'PY'
import json, sys
path, expected, output_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n = ok = completion = prompt = 0
bad = []
for line in open(path):
    n += 1
    r = json.loads(line)
    resp = r.get("response") or {}
    usage = (resp.get("body") or {}).get("usage") or {}
    if resp.get("status_code") == 200 and usage.get("completion_tokens") == output_len:
        ok += 1
    elif len(bad) < 3:
        bad.append(line[:300])
    completion += usage.get("completion_tokens", 0)
    prompt += usage.get("prompt_tokens", 0)
print(n, ok, completion, prompt)
if n != expected or ok != n:
    sys.exit(f"service_bench: {n} results ({ok} ok with {output_len} tokens), expected {expected}: "
             + " | ".join(bad))
PY
}

if [[ ${WARMUP:-1} == 1 ]]; then
  warm_n=$(( 2 * max_num_seqs ))
  write_requests "$warm_n" "$input_len" 8 $(( seed + 7919 )) warm- "$work/warmup.jsonl"
  t0=$(now)
  "$bin/dpinfer" submit --coordinator "$addr" --input "$work/warmup.jsonl" \
    --output "$work/warmup.out.jsonl" --timeout "$job_timeout" > "$work/warmup.submit.log" 2>&1 \
    || { cat "$work/warmup.submit.log" >&2; tail_logs; exit 1; }
  count_results "$work/warmup.out.jsonl" "$warm_n" 8 > /dev/null || { tail_logs; exit 1; }
  echo "service_bench: warm-up job of $warm_n x 8 tokens in $(awk -v a="$t0" -v b="$(now)" \
    'BEGIN{printf "%.2f", b-a}') s (untimed)"
fi

write_requests "$n" "$input_len" "$output_len" "$seed" req- "$work/requests.jsonl"

# 4. The timed job: submit, wait, fetch and write the results. Everything the client does is
# inside t0..t1 (process start, reading the input, SubmitJob, waiting, GetResults, writing the
# file); checking the results is not. --timing only adds a line on stderr at the end.
t0=$(now)
"$bin/dpinfer" submit --coordinator "$addr" --input "$work/requests.jsonl" \
  --output "$work/results.jsonl" --timeout "$job_timeout" --timing > "$work/submit.log" 2>&1 \
  || { cat "$work/submit.log" >&2; tail_logs; exit 1; }
t1=$(now)
cat "$work/submit.log"
read -r requests ok completion prompt < <(count_results "$work/results.jsonl" "$n" "$output_len") \
  || { tail_logs; exit 1; }
[[ ${requests:-} == "$n" && ${ok:-} == "$n" ]] || { tail_logs; exit 1; }
# The coordinator's own job time (first dispatch to last result): from the unix times --timing
# prints (same host, same clock), else from the summary line (two decimals).
job_wall=$(sed -n 's/.*wall time: \([0-9.]*\) s.*/\1/p' "$work/submit.log" | tail -n 1)
read -r main_at started_at finished_at < <(sed -n \
  's/.*unix times: main \([0-9.]*\), job started \([0-9.]*\), finished \([0-9.]*\).*/\1 \2 \3/p' \
  "$work/submit.log" | tail -n 1) || true
awk -v t0="$t0" -v t1="$t1" -v gen="$completion" -v prompt="$prompt" -v req="$requests" \
    -v job="${job_wall:-0}" -v load="$load_s" -v dev="$device" -v dt="$dtype" \
    -v in_len="$input_len" -v out_len="$output_len" -v seqs="$max_num_seqs" \
    -v main_at="${main_at:-0}" -v started="${started_at:-0}" -v finished="${finished_at:-0}" 'BEGIN {
  e = t1 - t0
  if (started > 0 && finished > started) job = finished - started
  printf "service_bench: %d requests x (%d in + %d out) in %.3f s (job wall %.3f s)\n", \
    req, in_len, out_len, e, job
  printf "  %.1f generated tokens/s, %.1f total tokens/s, %.2f requests/s\n", \
    gen / e, (gen + prompt) / e, req / e
  before = after = start = -1
  if (started > 0) {
    before = started - t0; after = t1 - finished; start = main_at - t0
    printf "  outside the job wall: %.1f ms before its first dispatch (client process start " \
      "%.1f ms of it), %.1f ms after its last result\n", before * 1000, start * 1000, after * 1000
  }
  printf "SERVICE gen_tok_s=%.1f elapsed_s=%.3f requests=%d generated_tokens=%d " \
    "prompt_tokens=%d total_tok_s=%.1f requests_per_s=%.3f job_wall_s=%.3f " \
    "job_gen_tok_s=%.1f worker_ready_s=%s device=%s dtype=%s max_num_seqs=%d input_len=%d " \
    "output_len=%d before_job_s=%.4f after_job_s=%.4f client_start_s=%.4f\n", gen / e, e, req, \
    gen, prompt, (gen + prompt) / e, req / e, job, (job > 0 ? gen / job : 0), load, dev, dt, \
    seqs, in_len, out_len, before, after, start
}'
