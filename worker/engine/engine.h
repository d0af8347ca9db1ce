// The inference engine of one DP replica: tokenizer -> scheduler (continuous batching over a paged
// KV cache) -> model forward on a kernels/ backend -> per-request sampler -> incremental
// detokenizer. It knows nothing of gRPC: the worker daemon feeds it requests and drains results.
// Not thread-safe: one thread owns an Engine and calls Add/Step/Abort.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/engine/model_config.h"

namespace dpinfer::engine {

class Tokenizer;

struct SamplingParams {
  float temperature = 1.0f;  // 0 -> greedy (argmax)
  float top_p = 1.0f;        // (0, 1]
  int32_t top_k = -1;        // -1 or 0 -> all tokens
  // Same seed -> same tokens, whatever else is in the batch. Unset -> a seed drawn at Add().
  std::optional<uint64_t> seed;
  int32_t max_tokens = 16;              // >= 1
  std::vector<std::string> stop;        // stop strings; excluded from the returned text
  std::vector<int32_t> stop_token_ids;  // extra ids that end the sequence (kept out of text)
  bool ignore_eos = false;
};

// Checks ranges (temperature >= 0, 0 < top_p <= 1, top_k >= -1, max_tokens >= 1, at most 16 stop
// strings, non-empty stop strings). The message names the parameter and the value.
absl::Status ValidateSamplingParams(const SamplingParams& params);

enum class FinishReason { kStop, kLength, kAbort };
const char* FinishReasonName(FinishReason r);  // "stop", "length", "abort"

struct Request {
  uint64_t id = 0;  // chosen by the caller, unique among the requests in the engine
  std::variant<std::string, std::vector<int32_t>> prompt;  // text (BOS added) or ids (as given)
  SamplingParams params;
};

struct Result {
  uint64_t id = 0;
  std::string text;                 // generated text only (stop string excluded)
  std::vector<int32_t> output_ids;  // generated ids (including a final EOS / stop token id)
  int32_t prompt_tokens = 0;
  FinishReason finish_reason = FinishReason::kLength;
};

struct EngineOptions {
  std::string model_dir;
  std::string served_model_name;          // default: the model directory's base name
  int32_t max_num_seqs = 256;             // sequences in flight
  int32_t max_num_batched_tokens = 2048;  // tokens per step (prefill chunks + decodes)
  int32_t kv_block_size = 16;             // tokens per KV cache block
  int64_t kv_cache_tokens = 0;  // 0 -> enough for max_num_seqs full-length sequences, capped
  int32_t max_model_len = 0;    // 0 -> max_position_embeddings
  int32_t num_threads = 0;      // CPU backend threads; 0 -> all cores
  // Where the model runs: "cpu", "cuda" (refused with a reason when this build has no CUDA or no
  // device is visible) or "auto" (cuda when built with CUDA and a device is present, else cpu).
  std::string device = "cpu";
  // Weights: "float32" (exact), or "bfloat16" (cuda only: the serving path: bf16 weights,
  // activations between GEMMs and KV cache, fp32 accumulation and residual stream).
  std::string dtype = "float32";
  // cuda: the fraction of the GPU's total memory this engine may use (weights, activations and
  // KV cache); the KV cache gets what is left after the weights and a profiled forward pass of
  // max_num_batched_tokens. Two engines sharing a GPU each take their own fraction. Ignored when
  // kv_cache_tokens is set.
  double gpu_memory_utilization = 0.9;
  // cuda: run every step eagerly (no CUDA graphs for decode batches).
  bool enforce_eager = false;
  // cuda: which visible GPU (CUDA_VISIBLE_DEVICES order) this engine uses; -1 picks
  // local_rank % the number of visible GPUs, so the DP workers of one node spread over its GPUs.
  int32_t cuda_device = -1;
  int32_t local_rank = 0;  // the worker's DP rank on this node (for cuda_device -1)
};

struct EngineStats {
  int64_t prompt_tokens = 0;     // processed, cumulative
  int64_t generated_tokens = 0;  // cumulative
  int64_t finished_requests = 0;
  int32_t running = 0;
  int32_t waiting = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_free = 0;
  int64_t preemptions = 0;
  // The last step's shape: sequences, tokens computed (prefill + decode) and the sum of the
  // sequences' context lengths after the step (what attention read from the KV cache).
  int32_t last_step_seqs = 0;
  int64_t last_step_tokens = 0;
  int64_t last_step_context_tokens = 0;
  int64_t kv_bytes_per_token = 0;  // all layers, K and V, in the cache's dtype
  int64_t weight_bytes = 0;        // device (or host) memory held by the weights
  int32_t cuda_device = -1;        // the GPU the engine runs on (-1: the CPU)
  // Where Engine::Create's time went: reading the weights onto the device (or into host memory),
  // and (CUDA) preparing to serve: step buffers, measured GEMM plans, the KV cache.
  double load_weights_s = 0.0;
  double load_prepare_s = 0.0;
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  virtual ~Engine() = default;

  // Tokenizes, validates and queues one request. A non-OK status (InvalidArgument) means this
  // request was refused, with a message naming the problem (bad parameter, token id out of
  // range, prompt + max_tokens longer than the context, invalid UTF-8); nothing else is affected.
  virtual absl::Status Add(Request request) = 0;
  // Runs one scheduler step (admits waiting requests, one forward pass over the batch, samples)
  // and appends the requests that finished in it to `finished`. A non-OK status is an engine
  // failure (the daemon should report it and exit), never a per-request problem.
  virtual absl::Status Step(std::vector<Result>* finished) = 0;
  // Drops a request (waiting or running) and frees its cache blocks; unknown ids are ignored.
  virtual void Abort(uint64_t id) = 0;
  virtual bool HasWork() const = 0;
  virtual EngineStats stats() const = 0;

  virtual const ModelConfig& config() const = 0;
  virtual const Tokenizer& tokenizer() const = 0;
  virtual const std::string& served_model_name() const = 0;
  virtual int32_t max_model_len() const = 0;
  // The device the model runs on ("cpu" or "cuda"; "auto" resolved).
  virtual const std::string& device() const = 0;
};

}  // namespace dpinfer::engine
