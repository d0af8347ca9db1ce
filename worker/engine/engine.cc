// The engine of one DP replica (see engine.h): request validation, the step loop (schedule ->
// forward -> sample -> detokenize -> stop checks) and the bookkeeping between them.
#include "worker/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string_view>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "kernels/backend.h"
#include "worker/engine/engine_testing.h"
#include "worker/engine/kv_cache.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/model.h"
#include "worker/engine/sampler.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/tokenizer/tokenizer.h"

#ifdef DPINFER_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_backend.h"
#include "worker/engine/cuda_llama_model.h"
#endif

namespace dpinfer::engine {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("temperature must be >= 0, got %g", p.temperature));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrFormat("top_p must be in (0, 1], got %g", p.top_p));
  }
  if (p.top_k < -1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("top_k must be -1 (disabled) or >= 0, got %d", p.top_k));
  }
  if (p.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_tokens must be >= 1, got %d", p.max_tokens));
  }
  if (p.stop.size() > 16) {
    return absl::InvalidArgumentError(
        absl::StrFormat("at most 16 stop strings are allowed, got %d", p.stop.size()));
  }
  for (const std::string& s : p.stop) {
    if (s.empty()) return absl::InvalidArgumentError("stop strings must be non-empty");
  }
  return absl::OkStatus();
}

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
  }
  return "unknown";
}

namespace {

// KV memory the default sizing may take when EngineOptions.kv_cache_tokens is 0.
constexpr int64_t kDefaultKvBytesCap = int64_t{4} << 30;

// The fp32 model on the CPU backend; its KV storage is the engine's KvCache itself.
class CpuModel final : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Create(const EngineOptions& o,
                                                       const ModelConfig& config, KvCache* cache) {
    std::unique_ptr<CpuModel> m(new CpuModel(cache));
    m->backend_ = kernels::NewCpuBackend(o.num_threads);
    ASSIGN_OR_RETURN(m->model_, LlamaModel::Load(o.model_dir, config, m->backend_.get()));
    return std::unique_ptr<Model>(std::move(m));
  }
  absl::Status Step(const ForwardBatch& batch, const std::vector<SampleSpec>& specs,
                    std::vector<int32_t>* tokens) override {
    model_->Forward(batch, cache_, &logits_);
    const int64_t vocab = model_->config().vocab_size;
    tokens->resize(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      (*tokens)[i] = SampleToken(logits_.data() + i * vocab, vocab, *specs[i].params, specs[i].seed,
                                 specs[i].step);
    }
    return absl::OkStatus();
  }
  int64_t weight_bytes() const override { return model_->weight_bytes(); }

 private:
  explicit CpuModel(KvCache* cache) : cache_(cache) {}
  KvCache* cache_;  // not owned
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<LlamaModel> model_;
  std::vector<float> logits_;
};

// Empty when a CUDA device can be used, else why not.
std::string CudaUnavailableReason() {
#ifdef DPINFER_HAVE_CUDA
  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess) return absl::StrCat("cudaGetDeviceCount: ", cudaGetErrorString(err));
  if (devices == 0) return "cudaGetDeviceCount found 0 devices";
  return "";
#else
  return "this build has no CUDA (nvcc was not found when it was configured)";
#endif
}

#ifdef DPINFER_HAVE_CUDA
// Memory a CUDA context, cuBLAS and captured graphs take beyond what the model allocates itself;
// counted against --gpu-memory-utilization's share.
constexpr int64_t kCudaOverheadBytes = int64_t{768} << 20;
// Free memory left untouched when sizing the KV cache, for allocations made later (sampling's
// sort scratch, the driver).
constexpr int64_t kCudaHeadroomBytes = int64_t{256} << 20;

// The model on the first visible GPU, on a stream of its own, with a device KV cache of the
// engine KvCache's shape: the KvCache (built without storage) allocates block ids, this cache
// holds their keys and values. Tokens are sampled on the device.
class CudaModel final : public Model {
 public:
  // Loads the weights and the per-step buffers, then sizes the KV cache: `kv_tokens` when > 0,
  // else what --gpu-memory-utilization leaves (see EngineOptions). Returns the block count.
  static absl::StatusOr<std::unique_ptr<CudaModel>> Create(const EngineOptions& o,
                                                           const ModelConfig& config,
                                                           int32_t max_model_len, int64_t kv_tokens,
                                                           int64_t* num_blocks) {
    std::unique_ptr<CudaModel> m(new CudaModel());
    // Every CUDA call below, and every later step (CudaModel::Step sets it again: the device is
    // per host thread), is on this engine's GPU.
    int devices = 0;
    CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&devices));
    m->device_ = o.cuda_device >= 0 ? o.cuda_device : std::max(0, o.local_rank) % devices;
    if (m->device_ >= devices) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--cuda-device %d: only %d GPU(s) are visible", m->device_, devices));
    }
    CUDA_RETURN_IF_ERROR(cudaSetDevice(m->device_));
    const char* profile = std::getenv("DPINFER_PROFILE");
    const bool timed = profile != nullptr && std::string(profile) == "1";
    auto t0 = std::chrono::steady_clock::now();
    const auto lap = [&t0]() {
      const auto now = std::chrono::steady_clock::now();
      const double s = std::chrono::duration<double>(now - t0).count();
      t0 = now;
      return s;
    };
    CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&m->stream_, cudaStreamNonBlocking));
    m->backend_ = kernels::NewCudaBackend(m->stream_);
    RETURN_IF_ERROR(m->backend_->status());
    const WeightDType dtype =
        o.dtype == "bfloat16" ? WeightDType::kBfloat16 : WeightDType::kFloat32;
    const double t_context = lap();
    ASSIGN_OR_RETURN(m->model_,
                     CudaLlamaModel::Load(o.model_dir, config, dtype, m->backend_.get()));
    const double t_weights = lap();
    const int64_t max_blocks = (max_model_len + o.kv_block_size - 1) / o.kv_block_size;
    RETURN_IF_ERROR(m->model_->Prepare(o.max_num_batched_tokens, o.max_num_seqs, max_blocks,
                                       dtype == WeightDType::kBfloat16 && !o.enforce_eager));
    const double t_prepare = lap();
    const int64_t per_token = DeviceKvCache::BytesPerToken(config.num_layers, config.num_kv_heads,
                                                           config.head_dim, dtype);
    if (kv_tokens == 0) {
      size_t free_bytes = 0, total_bytes = 0;
      CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
      const int64_t used = m->model_->device_bytes() + kCudaOverheadBytes;
      const int64_t share =
          static_cast<int64_t>(o.gpu_memory_utilization * static_cast<double>(total_bytes));
      const int64_t budget = share - used;
      constexpr double kGiB = 1 << 30;
      if (budget < per_token * max_model_len) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "--gpu-memory-utilization %.2f gives this engine %.2f GiB of the GPU's %.2f GiB; the "
            "model takes %.2f GiB (weights %.2f GiB), leaving too little for a KV cache of one "
            "%d-token sequence (%.3f GiB): raise it or lower --max-model-len",
            o.gpu_memory_utilization, share / kGiB, total_bytes / kGiB, used / kGiB,
            m->model_->weight_bytes() / kGiB, max_model_len, per_token * max_model_len / kGiB));
      }
      // All of the share (as vLLM does): a larger cache means fewer preemptions.
      kv_tokens = budget / per_token;
      if (kv_tokens * per_token > static_cast<int64_t>(free_bytes) - kCudaHeadroomBytes) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "--gpu-memory-utilization %.2f asks for a %.2f GiB KV cache but only %.2f GiB of the "
            "GPU is free (other processes hold the rest): lower it so the engines sharing this "
            "GPU fit together",
            o.gpu_memory_utilization, kv_tokens * per_token / kGiB, free_bytes / kGiB));
      }
    }
    *num_blocks = (kv_tokens + o.kv_block_size - 1) / o.kv_block_size;
    ASSIGN_OR_RETURN(m->cache_,
                     DeviceKvCache::Create(config.num_layers, *num_blocks, o.kv_block_size,
                                           config.num_kv_heads, config.head_dim, dtype));
    m->kv_bytes_per_token_ = per_token;
    const double t_cache = lap();
    m->weights_s_ = t_weights;
    m->prepare_s_ = t_prepare + t_cache;
    if (timed) {
      std::fprintf(stderr,
                   "DPINFER_PROFILE load: context+cuBLAS %.3f s, weights %.3f s (%.2f GB), step "
                   "buffers and GEMM plans %.3f s, KV cache %.3f s (%lld blocks)\n",
                   t_context, t_weights, m->model_->weight_bytes() / 1e9, t_prepare, t_cache,
                   static_cast<long long>(*num_blocks));
    }
    return m;
  }
  ~CudaModel() override {
    cudaSetDevice(device_);
    cache_.reset();
    model_.reset();
    backend_.reset();
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  absl::Status Step(const ForwardBatch& batch, const std::vector<SampleSpec>& specs,
                    std::vector<int32_t>* tokens) override {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    rows_.resize(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      const SamplingParams& p = *specs[i].params;
      rows_[i] = SampleRow{p.temperature, p.top_k, p.top_p, specs[i].seed, specs[i].step};
    }
    return model_->ForwardSample(batch, rows_, cache_.get(), tokens);
  }
  int64_t weight_bytes() const override { return model_->weight_bytes(); }
  int64_t kv_bytes_per_token() const { return kv_bytes_per_token_; }
  int device() const { return device_; }
  double weights_s() const { return weights_s_; }
  double prepare_s() const { return prepare_s_; }

 private:
  CudaModel() = default;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  // Destroyed in reverse order (see the destructor): the cache, the model, the backend, the stream.
  std::unique_ptr<kernels::CudaBackend> backend_;
  std::unique_ptr<CudaLlamaModel> model_;
  std::unique_ptr<DeviceKvCache> cache_;
  std::vector<SampleRow> rows_;
  int64_t kv_bytes_per_token_ = 0;
  double weights_s_ = 0.0, prepare_s_ = 0.0;
};
#endif

class EngineImpl final : public Engine {
 public:
  // Loads the config and tokenizer from options.model_dir, then the model, unless `model` is
  // given (CreateEngineWithModel): then the KV cache is block accounting only.
  absl::Status Init(const EngineOptions& options, std::unique_ptr<Model> model = nullptr);

  absl::Status Add(Request request) override;
  absl::Status Step(std::vector<Result>* finished) override;
  void Abort(uint64_t id) override;
  bool HasWork() const override {
    return scheduler_->num_running() > 0 || scheduler_->num_waiting() > 0;
  }
  EngineStats stats() const override;
  const ModelConfig& config() const override { return config_; }
  const Tokenizer& tokenizer() const override { return *tokenizer_; }
  const std::string& served_model_name() const override { return served_model_name_; }
  int32_t max_model_len() const override { return max_model_len_; }
  const std::string& device() const override { return device_; }

 private:
  // Appends a sampled token and applies the stop conditions; true when the sequence is done.
  bool AppendToken(Sequence* seq, int32_t token, FinishReason* reason);
  // Looks for a stop string ending in `piece`, the text the detokenizer just released; on a
  // match records where the text ends (seq->text_end, before the stop string) and returns true.
  bool StopStringIn(Sequence* seq, std::string_view piece);

  EngineOptions options_;
  ModelConfig config_;
  std::string served_model_name_;
  int32_t max_model_len_ = 0;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string device_;
  // The cache outlives the model (CpuModel writes into it).
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unordered_set<uint64_t> live_ids_;
  std::mt19937_64 seed_rng_{std::random_device{}()};
  // Step's working state, kept so that a step allocates nothing once they have grown.
  SchedulerOutput sched_;
  ForwardBatch batch_;
  std::vector<Sequence*> to_sample_;  // the sequences of specs_, in order
  std::vector<SampleSpec> specs_;
  std::vector<int32_t> tokens_;
  EngineStats stats_;
};

absl::Status EngineImpl::Init(const EngineOptions& o, std::unique_ptr<Model> model) {
  options_ = o;
  if (o.max_num_seqs < 1 || o.max_num_batched_tokens < 1 || o.kv_block_size < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_num_seqs (%d), max_num_batched_tokens (%d) and kv_block_size (%d) must be >= 1",
        o.max_num_seqs, o.max_num_batched_tokens, o.kv_block_size));
  }
  if (o.device != "cpu" && o.device != "cuda" && o.device != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be cpu, cuda or auto, got \"", o.device, "\""));
  }
  if (o.dtype != "float32" && o.dtype != "bfloat16") {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype must be float32 or bfloat16, got \"", o.dtype, "\""));
  }
  device_ = model != nullptr ? "cpu" : o.device;
  if (device_ != "cpu") {
    const std::string reason = CudaUnavailableReason();
    if (!reason.empty() && device_ == "cuda") {
      return absl::FailedPreconditionError(absl::StrCat("--device cuda: no CUDA device: ", reason));
    }
    device_ = reason.empty() ? "cuda" : "cpu";
  }
  if (device_ == "cpu" && o.dtype != "float32") {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype ", o.dtype, " needs --device cuda (the CPU model runs in float32)"));
  }
  ASSIGN_OR_RETURN(config_, LoadModelConfig(o.model_dir));
  ASSIGN_OR_RETURN(tokenizer_, Tokenizer::Load(o.model_dir));
  served_model_name_ = o.served_model_name;
  if (served_model_name_.empty()) {
    std::filesystem::path p(o.model_dir);
    if (!p.has_filename()) p = p.parent_path();
    served_model_name_ = p.filename().string();
  }
  max_model_len_ =
      o.max_model_len > 0 ? o.max_model_len : static_cast<int32_t>(config_.max_position_embeddings);
  if (max_model_len_ > config_.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_model_len %d exceeds the model's max_position_embeddings %d",
                        max_model_len_, config_.max_position_embeddings));
  }
  if (o.gpu_memory_utilization <= 0.0 || o.gpu_memory_utilization > 1.0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--gpu-memory-utilization must be in (0, 1], got %g", o.gpu_memory_utilization));
  }
  if (o.kv_cache_tokens != 0 && o.kv_cache_tokens < max_model_len_) {
    // Preemption can always fall back to running one sequence alone, but only if one
    // full-length sequence fits.
    return absl::InvalidArgumentError(
        absl::StrFormat("kv_cache_tokens %d cannot hold one sequence of max_model_len %d tokens",
                        o.kv_cache_tokens, max_model_len_));
  }
  if (model != nullptr) {
    const int64_t kv_tokens =
        o.kv_cache_tokens > 0 ? o.kv_cache_tokens : int64_t{o.max_num_seqs} * max_model_len_;
    cache_ = std::make_unique<KvCache>(0, (kv_tokens + o.kv_block_size - 1) / o.kv_block_size,
                                       o.kv_block_size, config_.num_kv_heads, config_.head_dim);
    model_ = std::move(model);
  } else if (device_ == "cpu") {
    const int64_t kv_bytes_per_token =
        2 * config_.num_layers * config_.num_kv_heads * config_.head_dim * int64_t{sizeof(float)};
    int64_t kv_tokens = o.kv_cache_tokens;
    if (kv_tokens == 0) {
      kv_tokens = std::min<int64_t>(int64_t{o.max_num_seqs} * max_model_len_,
                                    kDefaultKvBytesCap / kv_bytes_per_token);
      kv_tokens = std::max<int64_t>(kv_tokens, max_model_len_);
    }
    const int64_t num_blocks = (kv_tokens + o.kv_block_size - 1) / o.kv_block_size;
    cache_ = std::make_unique<KvCache>(config_.num_layers, num_blocks, o.kv_block_size,
                                       config_.num_kv_heads, config_.head_dim);
    const auto t0 = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(model_, CpuModel::Create(o, config_, cache_.get()));
    stats_.load_weights_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    stats_.kv_bytes_per_token = kv_bytes_per_token;
  } else {
#ifdef DPINFER_HAVE_CUDA
    int64_t num_blocks = 0;
    ASSIGN_OR_RETURN(std::unique_ptr<CudaModel> cuda,
                     CudaModel::Create(o, config_, max_model_len_, o.kv_cache_tokens, &num_blocks));
    stats_.kv_bytes_per_token = cuda->kv_bytes_per_token();
    stats_.cuda_device = cuda->device();
    stats_.load_weights_s = cuda->weights_s();
    stats_.load_prepare_s = cuda->prepare_s();
    model_ = std::move(cuda);
    // Zero layers: block accounting only; the keys and values live in the CudaModel's cache.
    cache_ = std::make_unique<KvCache>(0, num_blocks, o.kv_block_size, config_.num_kv_heads,
                                       config_.head_dim);
#endif
  }
  stats_.weight_bytes = model_->weight_bytes();
  scheduler_ = std::make_unique<Scheduler>(o.max_num_seqs, o.max_num_batched_tokens, cache_.get());
  return absl::OkStatus();
}

absl::Status EngineImpl::Add(Request request) {
  RETURN_IF_ERROR(ValidateSamplingParams(request.params));
  if (live_ids_.count(request.id) > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("request id ", request.id, " is already in the engine"));
  }
  auto seq = std::make_unique<Sequence>();
  seq->id = request.id;
  if (const auto* text = std::get_if<std::string>(&request.prompt)) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(*text, true);
    if (!ids.ok()) return absl::InvalidArgumentError(ids.status().message());
    seq->prompt_ids = *std::move(ids);
  } else {
    seq->prompt_ids = std::get<std::vector<int32_t>>(std::move(request.prompt));
  }
  if (seq->prompt_ids.empty()) return absl::InvalidArgumentError("the prompt is empty");
  for (size_t i = 0; i < seq->prompt_ids.size(); ++i) {
    const int32_t id = seq->prompt_ids[i];
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "prompt token id %d at index %d is out of range [0, %d)", id, i, config_.vocab_size));
    }
  }
  const int64_t prompt_len = static_cast<int64_t>(seq->prompt_ids.size());
  if (prompt_len + request.params.max_tokens > max_model_len_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prompt has %d tokens and max_tokens is %d, but the model's context is %d tokens",
        prompt_len, request.params.max_tokens, max_model_len_));
  }
  seq->params = std::move(request.params);
  seq->seed = seq->params.seed.has_value() ? *seq->params.seed : seed_rng_();
  seq->detokenizer = std::make_unique<IncrementalDetokenizer>(tokenizer_.get(), seq->prompt_ids);
  live_ids_.insert(seq->id);
  scheduler_->AddWaiting(std::move(seq));
  return absl::OkStatus();
}

bool EngineImpl::StopStringIn(Sequence* seq, std::string_view piece) {
  if (piece.empty() || seq->params.stop.empty()) return false;
  const std::string& text = seq->detokenizer->text();  // ends with `piece`
  const size_t old_len = text.size() - piece.size();
  size_t best = std::string::npos;
  for (const std::string& s : seq->params.stop) {
    // A match must end inside the new piece; it may start up to s.size() - 1 bytes before it.
    const size_t from = old_len >= s.size() - 1 ? old_len - (s.size() - 1) : 0;
    const size_t pos = text.find(s, from);
    if (pos != std::string::npos) best = std::min(best, pos);
  }
  if (best == std::string::npos) return false;
  seq->text_end = best;
  return true;
}

bool EngineImpl::AppendToken(Sequence* seq, int32_t token, FinishReason* reason) {
  seq->output_ids.push_back(token);
  ++stats_.generated_tokens;
  const SamplingParams& p = seq->params;
  const bool is_eos =
      !p.ignore_eos && std::find(config_.eos_token_ids.begin(), config_.eos_token_ids.end(),
                                 token) != config_.eos_token_ids.end();
  const bool is_stop_id =
      std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end();
  if (is_eos || is_stop_id) {
    // The stop id stays out of the text; what the detokenizer held back is released.
    *reason = FinishReason::kStop;
    StopStringIn(seq, seq->detokenizer->FinishPiece());
    return true;
  }
  if (StopStringIn(seq, seq->detokenizer->AppendPiece(token))) {
    *reason = FinishReason::kStop;
    return true;
  }
  if (static_cast<int64_t>(seq->output_ids.size()) >= p.max_tokens) {
    *reason = StopStringIn(seq, seq->detokenizer->FinishPiece()) ? FinishReason::kStop
                                                                 : FinishReason::kLength;
    return true;
  }
  return false;
}

absl::Status EngineImpl::Step(std::vector<Result>* finished) {
  SchedulerOutput& sched = sched_;
  scheduler_->Schedule(&sched);
  if (sched.scheduled.empty()) return absl::OkStatus();

  // Flatten the scheduled work into one batch. The vectors keep their capacity from step to step.
  ForwardBatch& b = batch_;
  b.token_ids.clear();
  b.positions.clear();
  b.token_seq.clear();
  b.slot_mapping.clear();
  b.logit_rows.clear();
  b.max_blocks_per_seq = 1;
  for (const ScheduledSeq& s : sched.scheduled) {
    b.max_blocks_per_seq =
        std::max<int64_t>(b.max_blocks_per_seq, static_cast<int64_t>(s.seq->block_table.size()));
  }
  const int64_t num_seqs = static_cast<int64_t>(sched.scheduled.size());
  b.block_tables.resize(num_seqs * b.max_blocks_per_seq);
  to_sample_.clear();
  specs_.clear();
  int64_t context_tokens = 0;
  for (int64_t r = 0; r < num_seqs; ++r) {
    const ScheduledSeq& s = sched.scheduled[r];
    Sequence* seq = s.seq;
    // The row: the sequence's blocks, unused entries 0.
    const auto row = b.block_tables.begin() + r * b.max_blocks_per_seq;
    const auto row_end = std::copy(seq->block_table.begin(), seq->block_table.end(), row);
    std::fill(row_end, row + b.max_blocks_per_seq, 0);
    const int64_t end = seq->num_computed + s.num_tokens;
    context_tokens += end;
    for (int64_t pos = seq->num_computed; pos < end; ++pos) {
      b.token_ids.push_back(seq->token(pos));
      b.positions.push_back(static_cast<int32_t>(pos));
      b.token_seq.push_back(static_cast<int32_t>(r));
      b.slot_mapping.push_back(cache_->Slot(seq->block_table, pos));
    }
    const int64_t prompt_len = static_cast<int64_t>(seq->prompt_ids.size());
    stats_.prompt_tokens += std::max<int64_t>(0, std::min(end, prompt_len) - seq->num_computed);
    // Only a sequence whose every token is now cached gets a next token.
    if (end == seq->num_tokens()) {
      b.logit_rows.push_back(static_cast<int32_t>(b.token_ids.size() - 1));
      to_sample_.push_back(seq);
      specs_.push_back({&seq->params, seq->seed, seq->output_ids.size()});
    }
  }
  RETURN_IF_ERROR(model_->Step(b, specs_, &tokens_));
  for (const ScheduledSeq& s : sched.scheduled) s.seq->num_computed += s.num_tokens;
  stats_.last_step_seqs = static_cast<int32_t>(num_seqs);
  stats_.last_step_tokens = b.num_tokens();
  stats_.last_step_context_tokens = context_tokens;

  // Each sequence's new token is looked up in the tokenizer's tables: a random id of a large
  // vocabulary misses the cache, so the lookups are started a few sequences ahead.
  constexpr size_t kPrefetchAhead = 8;
  for (size_t i = 0; i < std::min(kPrefetchAhead, to_sample_.size()); ++i) {
    tokenizer_->Prefetch(tokens_[i]);
  }
  for (size_t i = 0; i < to_sample_.size(); ++i) {
    if (i + kPrefetchAhead < to_sample_.size()) tokenizer_->Prefetch(tokens_[i + kPrefetchAhead]);
    Sequence* seq = to_sample_[i];
    const int32_t token = tokens_[i];
    FinishReason reason;
    if (!AppendToken(seq, token, &reason)) continue;
    std::unique_ptr<Sequence> done = scheduler_->Finish(seq);
    live_ids_.erase(done->id);
    ++stats_.finished_requests;
    Result r;
    r.id = done->id;
    r.text = done->detokenizer->TakeText();
    if (done->text_end != std::string::npos) r.text.resize(done->text_end);
    r.output_ids = std::move(done->output_ids);
    r.prompt_tokens = static_cast<int32_t>(done->prompt_ids.size());
    r.finish_reason = reason;
    finished->push_back(std::move(r));
  }
  return absl::OkStatus();
}

void EngineImpl::Abort(uint64_t id) {
  if (scheduler_->Remove(id) != nullptr) live_ids_.erase(id);
}

EngineStats EngineImpl::stats() const {
  EngineStats s = stats_;
  s.running = scheduler_->num_running();
  s.waiting = scheduler_->num_waiting();
  s.kv_blocks_total = cache_->num_blocks();
  s.kv_blocks_free = cache_->num_free_blocks();
  s.preemptions = scheduler_->num_preemptions();
  return s;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  auto engine = std::make_unique<EngineImpl>();
  RETURN_IF_ERROR(engine->Init(options));
  return std::unique_ptr<Engine>(std::move(engine));
}

absl::StatusOr<std::unique_ptr<Engine>> CreateEngineWithModel(const EngineOptions& options,
                                                              std::unique_ptr<Model> model) {
  if (model == nullptr) return absl::InvalidArgumentError("CreateEngineWithModel: no model");
  auto engine = std::make_unique<EngineImpl>();
  RETURN_IF_ERROR(engine->Init(options, std::move(model)));
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace dpinfer::engine
