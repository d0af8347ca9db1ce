// engine_bench: the engine's offline throughput on vLLM's throughput-benchmark workload, driven
// through the Engine API directly (no gRPC, no JSONL): N prompts of random token ids of a fixed
// input length, a fixed output length with ignore_eos, temperature 1, top_p 1. It reports
// requests/s, total and output tokens/s, and, for the decode steps of a full batch, the measured
// step time against the memory-bandwidth floor of that step: a decode step must read every weight
// once plus the KV cache of every sequence, so it cannot take less than
// (weight bytes + context tokens * KV bytes per token) / device copy rate, where the copy rate is
// measured in the same run (cudaMemcpy device to device, read + write). DESIGN.md, "Measuring
// performance", says why every figure is a ratio against something measured in the same run.
//
// Also measured: the model load (Engine::Create) as checkpoint bytes per second, with the
// checkpoint read from the page cache (read once beforehand, and that read's speed reported).
// A warm-up batch runs first, untimed, so one-off costs (CUDA graph capture, cuBLAS heuristics,
// first-touch allocations) stay out of the figures.
//
// usage: engine_bench --model DIR [--device cuda] [--dtype bfloat16] [--num-prompts 1000]
//          [--input-len 128] [--output-len 128] [--max-num-seqs 256] [--json-out FILE] ...
// The last line of stdout is `BENCH key=value ...` with every figure.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "worker/engine/engine.h"
#include "worker/engine/model_config.h"
#include "worker/engine/tokenizer/tokenizer.h"

#ifdef DPINFER_HAVE_CUDA
#include <cuda_runtime.h>

#include "bench/cuda_bench_util.h"
#endif

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using dpinfer::engine::Engine;
using dpinfer::engine::EngineOptions;
using dpinfer::engine::EngineStats;
using dpinfer::engine::FinishReason;
using dpinfer::engine::Request;
using dpinfer::engine::Result;
using Json = nlohmann::ordered_json;

struct BenchOptions {
  int32_t num_prompts = 1000;
  int32_t input_len = 128;
  int32_t output_len = 128;
  uint64_t seed = 0;
  bool warmup = true;
  int32_t warmup_output_len = 8;
  bool warm_page_cache = true;
  int64_t copy_mib = 1024;
  int32_t copy_iters = 10;
  double copy_gb_s = 0.0;  // > 0: use this copy rate instead of measuring one
  std::string json_out;
};

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double Mean(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / v.size();
}

// ---------------------------------------------------------------------------------------------
// The device copy rate: the bandwidth a memory-bound kernel can hope for on this card, measured
// rather than taken from a data sheet.

struct CopyRate {
  double bytes_per_s = 0.0;  // 0: not measured
  std::string note;
};


CopyRate DeviceCopyRate(const std::string& device, const BenchOptions& o) {
  CopyRate r;
  if (o.copy_gb_s > 0) {
    r.bytes_per_s = o.copy_gb_s * 1e9;
    r.note = "given by --copy-gb-s, not measured";
    return r;
  }
  if (device == "cpu") {
    r.note = "device cpu: no device copy rate, so no bandwidth floor";
    return r;
  }
#ifdef DPINFER_HAVE_CUDA
  absl::StatusOr<double> rate = dpinfer::bench::MeasureCopyRate(o.copy_mib << 20, o.copy_iters);
  if (rate.ok()) {
    r.bytes_per_s = *rate;
  } else {
    r.note = absl::StrCat("copy rate not measured: ", rate.status().message());
  }
#else
  r.note = "this build has no CUDA: no device copy rate";
#endif
  return r;
}

// ---------------------------------------------------------------------------------------------
// The checkpoint on disk.

// Sum of the sizes of the *.safetensors files in `dir`.
int64_t SafetensorsBytes(const std::string& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") {
      total += static_cast<int64_t>(entry.file_size());
    }
  }
  return total;
}

// Reads every *.safetensors file of `dir` once (which puts it in the page cache) and returns the
// read rate in bytes/s (0 when nothing was read).
double ReadCheckpointFiles(const std::string& dir) {
  std::vector<char> buffer(64 << 20);
  int64_t total = 0;
  const auto start = Clock::now();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".safetensors") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    while (in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      total += in.gcount();
    }
  }
  const double s = Seconds(start);
  return total > 0 && s > 0 ? total / s : 0.0;
}

// ---------------------------------------------------------------------------------------------
// The workload.

// `count` prompts of `input_len` uniform random ids in [0, vocab), sampled with temperature 1 and
// top_p 1 for exactly `output_len` tokens (ignore_eos), one seed per request.
std::vector<Request> MakeRequests(int32_t count, int32_t input_len, int32_t output_len,
                                  int64_t vocab, uint64_t seed, uint64_t first_id) {
  std::mt19937 rng(static_cast<std::mt19937::result_type>(seed));
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  std::vector<Request> requests(count);
  for (int32_t i = 0; i < count; ++i) {
    Request& r = requests[i];
    r.id = first_id + i;
    std::vector<int32_t> ids(input_len);
    for (int32_t& id : ids) id = token(rng);
    r.prompt = std::move(ids);
    r.params.temperature = 1.0f;
    r.params.top_p = 1.0f;
    r.params.top_k = -1;
    r.params.max_tokens = output_len;
    r.params.ignore_eos = true;
    r.params.seed = seed * 1000003 + first_id + i;
  }
  return requests;
}

// One engine step as the stats describe it.
struct StepRecord {
  double seconds = 0.0;
  int32_t seqs = 0;
  int64_t tokens = 0;
  int64_t context_tokens = 0;
};

// Adds every request, then steps until the engine is idle; returns the results (checked: each
// one finished by length with exactly `output_len` tokens) and, when `records` is set, one record
// per step.
absl::StatusOr<std::vector<Result>> RunRequests(Engine* engine, std::vector<Request> requests,
                                                int32_t output_len,
                                                std::vector<StepRecord>* records) {
  const size_t expected = requests.size();
  for (Request& r : requests) {
    const uint64_t id = r.id;
    absl::Status s = engine->Add(std::move(r));
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("request ", id, " refused: ", s.message()));
    }
  }
  std::vector<Result> results;
  results.reserve(expected);
  while (engine->HasWork()) {
    const auto start = Clock::now();
    absl::Status s = engine->Step(&results);
    const double seconds = Seconds(start);
    if (!s.ok()) return s;
    if (records != nullptr) {
      const EngineStats st = engine->stats();
      records->push_back(
          {seconds, st.last_step_seqs, st.last_step_tokens, st.last_step_context_tokens});
    }
  }
  if (results.size() != expected) {
    return absl::InternalError(
        absl::StrFormat("%d requests added but %d finished", expected, results.size()));
  }
  for (const Result& r : results) {
    if (static_cast<int32_t>(r.output_ids.size()) != output_len ||
        r.finish_reason != FinishReason::kLength) {
      return absl::InternalError(absl::StrFormat(
          "request %d finished (%s) with %d tokens, expected %d (ignore_eos)", r.id,
          dpinfer::engine::FinishReasonName(r.finish_reason), r.output_ids.size(), output_len));
    }
  }
  return results;
}

// The model directory's base name ("llama-1b" for ".../llama-1b/").
std::string ModelName(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

std::string Gb(double bytes) { return absl::StrFormat("%.3f", bytes / 1e9); }

int Fail(const std::string& what, const absl::Status& s) {
  std::cerr << "engine_bench: " << what << ": " << s.message() << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"engine_bench: offline throughput of the engine (vLLM throughput-benchmark shape)"};
  EngineOptions eo;
  eo.device = "cuda";
  eo.dtype = "bfloat16";
  BenchOptions o;
  app.add_option("--model", eo.model_dir, "HF model directory")->required();
  app.add_option("--device", eo.device, "cuda, cpu or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--dtype", eo.dtype, "bfloat16 (cuda) or float32")
      ->check(CLI::IsMember({"float32", "bfloat16"}));
  app.add_option("--num-prompts", o.num_prompts, "requests")->check(CLI::PositiveNumber);
  app.add_option("--input-len", o.input_len, "prompt tokens per request")
      ->check(CLI::PositiveNumber);
  app.add_option("--output-len", o.output_len, "generated tokens per request (ignore_eos)")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-num-seqs", eo.max_num_seqs, "sequences in flight")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-num-batched-tokens", eo.max_num_batched_tokens,
                 "tokens per step (default: the engine's)")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-model-len", eo.max_model_len, "context length (0: the model's)");
  app.add_option("--kv-cache-tokens", eo.kv_cache_tokens, "KV cache capacity in tokens (0: auto)");
  app.add_option("--gpu-memory-utilization", eo.gpu_memory_utilization,
                 "fraction of the GPU's memory the engine may use")
      ->check(CLI::Range(0.01, 1.0));
  app.add_flag("--enforce-eager", eo.enforce_eager, "no CUDA graphs for decode batches");
  app.add_option("--threads", eo.num_threads, "CPU backend threads (0: all cores)");
  app.add_option("--seed", o.seed, "seed of the prompts and of the per-request sampling seeds");
  app.add_flag("--warmup,!--no-warmup", o.warmup,
               "run an untimed warm-up batch first (2 x max-num-seqs prompts; default on)");
  app.add_option("--warmup-output-len", o.warmup_output_len, "tokens per warm-up request")
      ->check(CLI::PositiveNumber);
  app.add_flag("--warm-page-cache,!--no-warm-page-cache", o.warm_page_cache,
               "read the checkpoint files once before the timed load (default on)");
  app.add_option("--copy-mib", o.copy_mib, "MiB per buffer of the device copy-rate test")
      ->check(CLI::PositiveNumber);
  app.add_option("--copy-gb-s", o.copy_gb_s,
                 "use this device copy rate (GB/s, read + write) instead of measuring it");
  app.add_option("--json-out", o.json_out, "also write every figure to this JSON file");
  CLI11_PARSE(app, argc, argv);

  const std::string model_name = ModelName(eo.model_dir);
  Json report;
  report["model"] = model_name;
  report["model_dir"] = eo.model_dir;
  report["device"] = eo.device;
  report["dtype"] = eo.dtype;
  report["num_prompts"] = o.num_prompts;
  report["input_len"] = o.input_len;
  report["output_len"] = o.output_len;
  report["max_num_seqs"] = eo.max_num_seqs;
  report["max_num_batched_tokens"] = eo.max_num_batched_tokens;
  report["enforce_eager"] = eo.enforce_eager;
  report["gpu_memory_utilization"] = eo.gpu_memory_utilization;
  report["seed"] = o.seed;

  std::string card = "cpu";
#ifdef DPINFER_HAVE_CUDA
  if (eo.device != "cpu") card = dpinfer::bench::CardName();
#endif
  report["card"] = card;
  std::cout << absl::StrFormat("engine_bench: model %s, device %s (%s), dtype %s\n", eo.model_dir,
                               eo.device, card, eo.dtype);

  // 1. Device copy rate (first, so CUDA context creation is not part of the timed load).
  const CopyRate copy = DeviceCopyRate(eo.device, o);
  if (copy.bytes_per_s > 0 && copy.note.empty()) {
    std::cout << absl::StrFormat(
        "device copy rate: %.1f GB/s (D2D, 2 x %.0f MiB x %d, read+write)\n",
        copy.bytes_per_s / 1e9, static_cast<double>(o.copy_mib), o.copy_iters);
  } else if (copy.bytes_per_s > 0) {
    std::cout << absl::StrFormat("device copy rate: %.1f GB/s (%s)\n", copy.bytes_per_s / 1e9,
                                 copy.note);
  } else {
    std::cout << "device copy rate: " << copy.note << "\n";
  }
  report["copy_gb_s"] = copy.bytes_per_s / 1e9;

  // 2. Model load from the page cache.
  const int64_t file_bytes = SafetensorsBytes(eo.model_dir);
  report["checkpoint_bytes"] = file_bytes;
  if (o.warm_page_cache) {
    const double first = ReadCheckpointFiles(eo.model_dir);
    const double second = ReadCheckpointFiles(eo.model_dir);
    std::cout << absl::StrFormat(
        "checkpoint: %s GB of safetensors; read %.2f GB/s, then %.2f GB/s from the page cache\n",
        Gb(file_bytes), first / 1e9, second / 1e9);
    report["page_cache_read_gb_s"] = second / 1e9;
  }
  {
    const auto start = Clock::now();
    auto tokenizer = dpinfer::engine::Tokenizer::Load(eo.model_dir);
    report["tokenizer_load_s"] = Seconds(start);
    if (!tokenizer.ok()) return Fail("tokenizer", tokenizer.status());
  }
  const auto load_start = Clock::now();
  absl::StatusOr<std::unique_ptr<Engine>> created = Engine::Create(eo);
  const double load_s = Seconds(load_start);
  if (!created.ok()) return Fail("cannot create the engine", created.status());
  std::unique_ptr<Engine> engine = *std::move(created);
  const EngineStats loaded = engine->stats();
  const double load_gb_s = load_s > 0 ? file_bytes / load_s / 1e9 : 0.0;
  // The weights alone (checkpoint to device), as the engine timed them.
  const double weights_gb_s =
      loaded.load_weights_s > 0 ? file_bytes / loaded.load_weights_s / 1e9 : 0.0;
  const int64_t kv_capacity_tokens = loaded.kv_blocks_total * eo.kv_block_size;
  std::cout << absl::StrFormat(
      "load: %.3f s (Engine::Create; the tokenizer alone loads in %.3f s) = %.2f GB/s of "
      "checkpoint; of it the weights %.3f s = %.2f GB/s, preparing (step buffers, GEMM plans, KV "
      "cache) %.3f s; weight_bytes %s GB; kv_bytes_per_token %d; KV cache %d blocks (~%d "
      "tokens)\n",
      load_s, report["tokenizer_load_s"].get<double>(), load_gb_s, loaded.load_weights_s,
      weights_gb_s, loaded.load_prepare_s, Gb(loaded.weight_bytes), loaded.kv_bytes_per_token,
      loaded.kv_blocks_total, kv_capacity_tokens);
  report["load_s"] = load_s;
  report["load_gb_s"] = load_gb_s;
  report["load_weights_s"] = loaded.load_weights_s;
  report["load_prepare_s"] = loaded.load_prepare_s;
  report["weights_load_gb_s"] = weights_gb_s;
  report["kv_blocks_total"] = loaded.kv_blocks_total;
  report["engine_device"] = engine->device();
  report["max_model_len"] = engine->max_model_len();

  const int64_t vocab = engine->config().vocab_size;
  // 3. Warm-up (untimed): the same prompt length, a short output.
  if (o.warmup) {
    const int32_t count = 2 * eo.max_num_seqs;
    const auto start = Clock::now();
    auto warm = RunRequests(engine.get(),
                            MakeRequests(count, o.input_len, o.warmup_output_len, vocab,
                                         o.seed + 7919, uint64_t{1} << 40),
                            o.warmup_output_len, nullptr);
    if (!warm.ok()) return Fail("warm-up", warm.status());
    std::cout << absl::StrFormat("warm-up: %d prompts x %d output tokens in %.3f s (untimed)\n",
                                 count, o.warmup_output_len, Seconds(start));
  }

  // 4. The timed run.
  const EngineStats before = engine->stats();
  std::vector<Request> requests =
      MakeRequests(o.num_prompts, o.input_len, o.output_len, vocab, o.seed, 0);
  std::vector<StepRecord> steps;
  steps.reserve(static_cast<size_t>(o.num_prompts) * (o.output_len + 1));
  const auto run_start = Clock::now();
  auto results = RunRequests(engine.get(), std::move(requests), o.output_len, &steps);
  const double elapsed = Seconds(run_start);
  if (!results.ok()) return Fail("benchmark run", results.status());
  const EngineStats after = engine->stats();

  int64_t output_tokens = 0;
  for (const Result& r : *results) output_tokens += static_cast<int64_t>(r.output_ids.size());
  const int64_t total_tokens = int64_t{o.input_len} * o.num_prompts + output_tokens;
  const double req_s = o.num_prompts / elapsed;
  const double total_tok_s = total_tokens / elapsed;
  const double output_tok_s = output_tokens / elapsed;
  std::cout << absl::StrFormat(
      "run: %d prompts x (%d in + %d out) in %.3f s, %d steps, %d preemptions\n"
      "  %.2f requests/s, %.1f total tokens/s, %.1f output tokens/s\n",
      o.num_prompts, o.input_len, o.output_len, elapsed, steps.size(),
      after.preemptions - before.preemptions, req_s, total_tok_s, output_tok_s);
  report["elapsed_s"] = elapsed;
  report["steps"] = steps.size();
  report["preemptions"] = after.preemptions - before.preemptions;
  report["requests_per_s"] = req_s;
  report["total_tok_s"] = total_tok_s;
  report["output_tok_s"] = output_tok_s;
  report["output_tokens"] = output_tokens;

  // 5. Decode steps against the bandwidth floor. The floor needs the engine's byte counts; where
  // the stats do not give them yet, the checkpoint size and the config stand in (said so).
  // Taken after the run too, in case an engine fills them in lazily.
  int64_t weight_bytes = std::max(loaded.weight_bytes, after.weight_bytes);
  if (weight_bytes <= 0) {
    weight_bytes = file_bytes;
    std::cout << "note: EngineStats.weight_bytes is 0; the floor uses the checkpoint's bytes\n";
  }
  int64_t kv_bytes_per_token = std::max(loaded.kv_bytes_per_token, after.kv_bytes_per_token);
  if (kv_bytes_per_token <= 0) {
    const auto& c = engine->config();
    kv_bytes_per_token =
        2 * c.num_layers * c.num_kv_heads * c.head_dim * (eo.dtype == "bfloat16" ? 2 : 4);
    std::cout << "note: EngineStats.kv_bytes_per_token is 0; the floor assumes "
              << kv_bytes_per_token << " (K and V of every layer in the compute dtype)\n";
  }
  bool context_known = true;
  std::vector<double> full_ms, full_ratio, full_floor_ms, decode_ratio;
  int64_t pure_decode_steps = 0;
  double prefill_s = 0.0;  // time in steps that computed a prompt token
  for (const StepRecord& s : steps) {
    const bool pure_decode = s.seqs > 0 && s.tokens == s.seqs;
    if (!pure_decode) {
      prefill_s += s.seconds;
      continue;
    }
    ++pure_decode_steps;
    if (s.context_tokens <= 0) context_known = false;
    const double floor_s =
        copy.bytes_per_s > 0
            ? (weight_bytes + static_cast<double>(s.context_tokens) * kv_bytes_per_token) /
                  copy.bytes_per_s
            : 0.0;
    const double ratio = s.seconds > 0 ? floor_s / s.seconds : 0.0;
    decode_ratio.push_back(ratio);
    if (s.seqs == eo.max_num_seqs) {
      full_ms.push_back(s.seconds * 1e3);
      full_floor_ms.push_back(floor_s * 1e3);
      full_ratio.push_back(ratio);
    }
  }
  const double median_ms = Median(full_ms);
  const double mean_ms = Mean(full_ms);
  const double floor_ms = Median(full_floor_ms);
  const double floor_fraction = Median(full_ratio);
  const bool shapes_known =
      std::any_of(steps.begin(), steps.end(), [](const StepRecord& s) { return s.seqs > 0; });
  if (!shapes_known) {
    std::cout << "note: EngineStats.last_step_* are 0: no per-step shapes, no decode figures\n";
  } else {
    if (!context_known) {
      std::cout << "note: EngineStats.last_step_context_tokens is 0 on decode steps: the floor "
                   "counts weights only\n";
    }
    std::cout << absl::StrFormat(
        "decode: %d pure-decode steps, %d of them at full batch (%d seqs): median %.3f ms, mean "
        "%.3f ms (%.0f output tokens/s at full batch)\n",
        pure_decode_steps, full_ms.size(), eo.max_num_seqs, median_ms, mean_ms,
        median_ms > 0 ? eo.max_num_seqs / (median_ms * 1e-3) : 0.0);
    if (full_ms.empty()) {
      std::cout << "note: no pure-decode step ran a full batch (fewer prompts than max-num-seqs, "
                   "or the KV cache could not hold them all)\n";
    }
    if (copy.bytes_per_s > 0) {
      std::cout << absl::StrFormat(
          "  bandwidth floor (weights %s GB + KV at %d B/token, over %.1f GB/s): median %.3f ms "
          "per full-batch step -> floor/measured %.3f (all pure-decode steps: %.3f)\n",
          Gb(weight_bytes), kv_bytes_per_token, copy.bytes_per_s / 1e9, floor_ms, floor_fraction,
          Median(decode_ratio));
    }
    std::cout << absl::StrFormat(
        "  %.3f s of the run in steps with prompt tokens, %.3f s in pure-decode steps\n", prefill_s,
        elapsed - prefill_s);
  }
  report["pure_decode_steps"] = pure_decode_steps;
  report["decode_steps"] = full_ms.size();
  report["decode_step_median_ms"] = median_ms;
  report["decode_step_mean_ms"] = mean_ms;
  report["decode_floor_ms"] = floor_ms;
  report["decode_floor_fraction"] = floor_fraction;
  report["decode_floor_fraction_all_decode_steps"] = Median(decode_ratio);
  report["weight_bytes"] = std::max(loaded.weight_bytes, after.weight_bytes);
  report["kv_bytes_per_token"] = std::max(loaded.kv_bytes_per_token, after.kv_bytes_per_token);
  report["floor_weight_bytes"] = weight_bytes;
  report["floor_kv_bytes_per_token"] = kv_bytes_per_token;
  report["prefill_steps_s"] = prefill_s;
  // Every step's shape and time, for the JSON file only (the BENCH line keeps the scalars).
  Json trace = {{"ms", Json::array()},
                {"seqs", Json::array()},
                {"tokens", Json::array()},
                {"context_tokens", Json::array()}};
  for (const StepRecord& s : steps) {
    trace["ms"].push_back(std::round(s.seconds * 1e6) / 1e3);
    trace["seqs"].push_back(s.seqs);
    trace["tokens"].push_back(s.tokens);
    trace["context_tokens"].push_back(s.context_tokens);
  }

  if (!o.json_out.empty()) {
    Json full = report;
    full["step_trace"] = std::move(trace);
    std::ofstream out(o.json_out);
    out << full.dump(2) << "\n";
    if (!out) {
      std::cerr << "engine_bench: cannot write " << o.json_out << "\n";
      return 1;
    }
  }

  // The machine-readable line: every scalar of the report, strings quoted when they have spaces.
  std::string line = "BENCH";
  for (const auto& [key, value] : report.items()) {
    if (key == "model_dir") continue;
    std::string v;
    if (value.is_string()) {
      v = value.get<std::string>();
      if (v.find(' ') != std::string::npos) v = absl::StrCat("\"", v, "\"");
    } else if (value.is_number_float()) {
      v = absl::StrFormat("%.6g", value.get<double>());
    } else {
      v = value.dump();
    }
    absl::StrAppend(&line, " ", key, "=", v);
  }
  std::cout << line << std::endl;
  return 0;
}
