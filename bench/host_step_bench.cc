// host_step_bench: the host time of one engine step outside the model's device work, at
// engine_bench's shape (256 sequences of 128 random prompt ids decoding 128 tokens each,
// ignore_eos, temperature 1). On the GPU this time leaves the device idle between two decode steps,
// so it adds straight onto the step time (DPINFER_PROFILE: ~0.33 ms of a 3.22 ms step on an H100).
//
// The engine runs with a host-only model (CreateEngineWithModel) that draws uniform random tokens
// in place of the GPU (a random-weight model's tokens look like that; their time is not counted).
// The model's own host packing (CudaLlamaModel::ForwardFast before the graph launch) needs a GPU
// and is not included: DPINFER_PROFILE's "upload" shows it on the GPU machine. Reported per decode
// step of the full batch, in microseconds:
//   step_host     Engine::Step's wall time minus the stand-in for the GPU
//   schedule      Scheduler::Schedule alone (a separate scheduler driven the same way)
//   detokenize    IncrementalDetokenizer::AppendPiece alone, one token for each sequence
// The rest of step_host is the engine's own: flattening the batch, stop checks, bookkeeping. The
// last line (BENCH ...) also gives a digest of every result (text, ids, finish reason): two builds
// that agree on it produced the same results.
//
// usage: host_step_bench --model DIR (config.json + tokenizer.json; no weights are read)
//          [--num-seqs 256] [--input-len 128] [--output-len 128] [--rounds 5] [--block-size 16]
//          [--stop-strings N] (give every request N stop strings that never match; with
//          --stops-match short ones that random text holds now and then: requests stop early)
//
// A Llama-3.2-1B-shaped DIR without weights: write its config.json, and the tokenizer with
//   python3 bench/gpu/synth_tokenizer.py --vocab-size 128256 --out DIR --style llama3
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/engine/engine.h"
#include "worker/engine/engine_testing.h"
#include "worker/engine/kv_cache.h"
#include "worker/engine/model.h"
#include "worker/engine/sampler.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace dpinfer::engine;  // NOLINT: a benchmark of the engine's internals

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

// SplitMix64's finalizer: the stand-in tokens and the results digest.
uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// ---- The host-only model ----

class HostOnlyModel final : public Model {
 public:
  explicit HostOnlyModel(int64_t vocab) : vocab_(vocab) {}
  absl::Status Step(const ForwardBatch& /*batch*/, const std::vector<SampleSpec>& specs,
                    std::vector<int32_t>* tokens) override {
    const auto t1 = Clock::now();
    // The GPU's part: uniform tokens from (seed, step), as a random-weight model gives.
    tokens->resize(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      (*tokens)[i] =
          static_cast<int32_t>(Mix64(specs[i].seed * 0x9E3779B97F4A7C15ull + specs[i].step) %
                               static_cast<uint64_t>(vocab_));
    }
    const auto t2 = Clock::now();
    device_ += t2 - t1;
    return absl::OkStatus();
  }
  int64_t weight_bytes() const override { return 0; }

  Clock::duration device_{};

 private:
  int64_t vocab_;
};

struct Options {
  std::string model_dir;
  int32_t num_seqs = 256;
  int32_t input_len = 128;
  int32_t output_len = 128;
  int32_t rounds = 5;
  int32_t block_size = 16;
  int32_t stop_strings = 0;  // per request (see MakeRequests)
  bool stops_match = false;
  std::string only;  // "engine", "schedule" or "detokenize": run just that part (for profiling)
};

std::vector<Request> MakeRequests(const Options& o, int64_t vocab, uint64_t round) {
  std::mt19937_64 rng(round);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  std::vector<Request> out;
  for (int32_t i = 0; i < o.num_seqs; ++i) {
    Request r;
    r.id = static_cast<uint64_t>(i);
    std::vector<int32_t> ids(o.input_len);
    for (int32_t& id : ids) id = token(rng);
    r.prompt = std::move(ids);
    r.params.temperature = 1.0f;
    r.params.max_tokens = o.output_len;
    r.params.ignore_eos = true;
    r.params.seed = rng();
    // Short strings that random text holds now and then (some requests stop early), or strings
    // it never holds (the checks' cost at a full batch).
    static const char* const kStops[] = {"qz", "xj", "zzq", "Qk", "vw", "jx", "kq", "wz"};
    for (int32_t s = 0; s < o.stop_strings; ++s) {
      r.params.stop.push_back(
          o.stops_match ? absl::StrCat(kStops[s % std::size(kStops)], std::string(s / 8, '#'))
                        : absl::StrCat("\x01#", s));
    }
    out.push_back(std::move(r));
  }
  return out;
}

struct Figures {
  double step_host = 0, schedule = 0, detokenize = 0;
  int64_t steps = 0;
  uint64_t digest = 0;  // of every result (text, ids, finish reason): equal builds agree
  int64_t stopped = 0;  // results that ended on a stop string
};

uint64_t Digest(uint64_t h, const Result& r) {
  const auto mix = [&h](uint64_t v) { h = Mix64(h ^ v); };
  mix(r.id);
  for (const unsigned char c : r.text) mix(c);
  for (const int32_t id : r.output_ids) mix(static_cast<uint32_t>(id));
  mix(static_cast<uint64_t>(r.finish_reason));
  return h;
}

// One batch through the engine, whole steps; only decode steps of the full batch are counted.
absl::Status RunEngine(const Options& o, Engine* engine, HostOnlyModel* model, uint64_t round,
                       Figures* f) {
  for (Request& r : MakeRequests(o, engine->config().vocab_size, round)) {
    r.id += round * o.num_seqs;
    RETURN_IF_ERROR(engine->Add(r));
  }
  std::vector<Result> finished;
  int64_t done = 0;
  while (engine->HasWork()) {
    finished.clear();
    const Clock::duration device_before = model->device_;
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(engine->Step(&finished));
    const auto wall = Clock::now() - t0;
    done += static_cast<int64_t>(finished.size());
    for (const Result& r : finished) {
      f->digest = Digest(f->digest, r);
      f->stopped += r.finish_reason == FinishReason::kStop;
    }
    const EngineStats s = engine->stats();
    if (s.last_step_tokens == o.num_seqs && s.last_step_seqs == o.num_seqs) {
      f->step_host += Us(wall - (model->device_ - device_before));
      ++f->steps;
    }
  }
  if (done != o.num_seqs) return absl::InternalError("not every request finished");
  return absl::OkStatus();
}

// Scheduler::Schedule alone, over num_seqs sequences already prefilled, decoding output_len tokens.
void RunScheduler(const Options& o, uint64_t round, Figures* f) {
  const int64_t len = o.input_len + o.output_len;
  KvCache cache(0, o.num_seqs * ((len + o.block_size - 1) / o.block_size), o.block_size, 1, 1);
  Scheduler sched(o.num_seqs, 2048, &cache);
  std::mt19937_64 rng(round);
  for (int32_t i = 0; i < o.num_seqs; ++i) {
    auto seq = std::make_unique<Sequence>();
    seq->id = i;
    seq->prompt_ids.assign(o.input_len, 7);
    seq->num_computed = o.input_len - 1;  // the first step computes one token: a decode
    sched.AddWaiting(std::move(seq));
  }
  SchedulerOutput out;
  for (int32_t step = 0; step < o.output_len; ++step) {
    const auto t0 = Clock::now();
    sched.Schedule(&out);
    f->schedule += Us(Clock::now() - t0);
    for (const ScheduledSeq& s : out.scheduled) {
      s.seq->num_computed += s.num_tokens;
      s.seq->output_ids.push_back(static_cast<int32_t>(rng() % 1000));
    }
  }
}

// IncrementalDetokenizer::AppendPiece alone: one token for each of num_seqs sequences per step.
void RunDetokenizer(const Options& o, const Tokenizer& tok, uint64_t round, Figures* f) {
  std::mt19937_64 rng(round);
  const int64_t vocab = tok.vocab_size();
  std::vector<std::unique_ptr<IncrementalDetokenizer>> detok;
  for (int32_t i = 0; i < o.num_seqs; ++i) {
    std::vector<int32_t> prompt(o.input_len);
    for (int32_t& id : prompt) id = static_cast<int32_t>(rng() % vocab);
    detok.push_back(std::make_unique<IncrementalDetokenizer>(&tok, std::move(prompt)));
  }
  std::vector<int32_t> tokens(o.num_seqs);
  size_t bytes = 0;
  for (int32_t step = 0; step < o.output_len; ++step) {
    for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
    const auto t0 = Clock::now();
    for (int32_t i = 0; i < o.num_seqs; ++i) {
      if (i + 8 < o.num_seqs) tok.Prefetch(tokens[i + 8]);  // as Engine::Step does
      bytes += detok[i]->AppendPiece(tokens[i]).size();
    }
    f->detokenize += Us(Clock::now() - t0);
  }
  if (bytes == 0) std::printf("(no text)\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"host time of an engine step outside the model"};
  app.add_option("--model", o.model_dir, "config.json + tokenizer.json")->required();
  app.add_option("--num-seqs", o.num_seqs, "sequences (all running)");
  app.add_option("--input-len", o.input_len, "prompt ids per request");
  app.add_option("--output-len", o.output_len, "generated ids per request");
  app.add_option("--rounds", o.rounds, "batches run (figures are per step over all)");
  app.add_option("--block-size", o.block_size, "KV cache block size");
  app.add_option("--stop-strings", o.stop_strings, "stop strings per request (never matching)");
  app.add_flag("--stops-match", o.stops_match, "stop strings that random text sometimes holds");
  app.add_option("--only", o.only, "run one part: engine, schedule or detokenize (profiling)");
  CLI11_PARSE(app, argc, argv);

  EngineOptions eo;
  eo.model_dir = o.model_dir;
  eo.max_num_seqs = o.num_seqs;
  eo.max_num_batched_tokens = std::max(2048, o.num_seqs);
  eo.kv_block_size = o.block_size;
  eo.max_model_len = o.input_len + o.output_len;
  eo.kv_cache_tokens = int64_t{o.num_seqs} * (o.input_len + o.output_len + o.block_size);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(o.model_dir);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tok.status().message()).c_str());
    return 1;
  }
  const bool run_engine = o.only.empty() || o.only == "engine";
  std::unique_ptr<Engine> engine;
  HostOnlyModel* model = nullptr;
  if (run_engine) {
    const ModelConfig config = *LoadModelConfig(o.model_dir);
    auto owned = std::make_unique<HostOnlyModel>(config.vocab_size);
    model = owned.get();
    absl::StatusOr<std::unique_ptr<Engine>> e = CreateEngineWithModel(eo, std::move(owned));
    if (!e.ok()) {
      std::fprintf(stderr, "%s\n", std::string(e.status().message()).c_str());
      return 1;
    }
    engine = *std::move(e);
  }
  Figures steps, parts;
  for (int32_t round = 0; round < o.rounds; ++round) {
    if (run_engine) {
      const absl::Status s = RunEngine(o, engine.get(), model, round, &steps);
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
        return 1;
      }
    }
    if (o.only.empty() || o.only == "schedule") RunScheduler(o, round, &parts);
    if (o.only.empty() || o.only == "detokenize") RunDetokenizer(o, **tok, round, &parts);
  }
  const double num_steps = static_cast<double>(steps.steps);
  const double part_steps = static_cast<double>(o.rounds) * o.output_len;
  std::printf("%d sequences decoding (prompts %d, outputs %d), vocab %d, %lld decode steps timed\n",
              o.num_seqs, o.input_len, o.output_len, (*tok)->vocab_size(),
              static_cast<long long>(steps.steps));
  std::printf("  step_host   %8.1f us/step  (Engine::Step minus the stand-in GPU)\n",
              steps.step_host / num_steps);
  std::printf("  schedule    %8.1f us/step  (Scheduler::Schedule alone)\n",
              parts.schedule / part_steps);
  std::printf("  detokenize  %8.1f us/step  (IncrementalDetokenizer::AppendPiece alone)\n",
              parts.detokenize / part_steps);
  std::printf(
      "BENCH step_host_us=%.2f schedule_us=%.2f detokenize_us=%.2f "
      "stopped=%lld results_digest=%016llx\n",
      steps.step_host / num_steps, parts.schedule / part_steps,
      parts.detokenize / part_steps, static_cast<long long>(steps.stopped),
      static_cast<unsigned long long>(steps.digest));
  return 0;
}
