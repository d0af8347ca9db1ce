// The GPU twin of llama_model.cc (see cuda_llama_model.h). The fp32 forward pass is the CPU model's
// op for op, in the same order and with the same family switches, so the two can be compared line
// by line. The bf16 pass (ForwardFast / EnqueueFast) computes the same function with fused
// weights, bf16 activations and KV cache, device-side MoE routing and device sampling.
#include "worker/engine/cuda_llama_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cuda/fast_ops.h"
#include "kernels/cuda/gemm_lt.h"
#include "worker/engine/sampler.h"

namespace dpinfer::engine {
namespace {

// Grows `buf` to hold at least `n` elements (contents not kept). Only called before a step's work
// is queued, so no pending kernel reads a buffer that is being replaced.
template <typename T>
absl::Status Reserve(kernels::DeviceBuffer<T>* buf, int64_t n) {
  if (buf->size() >= n) return absl::OkStatus();
  ASSIGN_OR_RETURN(*buf, kernels::DeviceBuffer<T>::Allocate(n));
  return absl::OkStatus();
}

// The kernels do not check ids and rows: the batch is checked here, where an error can still be
// returned.
absl::Status ValidateBatch(const ForwardBatch& batch, int64_t vocab_size) {
  const int64_t t = batch.num_tokens();
  if (t <= 0 || static_cast<int64_t>(batch.positions.size()) != t ||
      static_cast<int64_t>(batch.token_seq.size()) != t ||
      static_cast<int64_t>(batch.slot_mapping.size()) != t) {
    return absl::InvalidArgumentError(
        "ForwardBatch: token_ids, positions, token_seq and slot_mapping must be non-empty and of "
        "one length");
  }
  // One branch-free pass per array (an out-of-range value, negative ones included, is a large
  // unsigned one); the offending value is looked for only when there is one.
  const auto any_outside = [](const std::vector<int32_t>& v, int64_t limit) {
    if (limit <= 0) return !v.empty();
    const uint64_t bound = static_cast<uint64_t>(limit);
    bool outside = false;
    for (const int32_t x : v) outside |= static_cast<uint64_t>(static_cast<int64_t>(x)) >= bound;
    return outside;
  };
  if (any_outside(batch.token_ids, vocab_size)) {
    for (int32_t id : batch.token_ids) {
      if (id < 0 || id >= vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", id, " outside the vocabulary"));
      }
    }
  }
  if (any_outside(batch.logit_rows, t)) {
    for (int32_t row : batch.logit_rows) {
      if (row < 0 || row >= t) {
        return absl::InvalidArgumentError(absl::StrCat("logit row ", row, " outside the batch"));
      }
    }
  }
  return absl::OkStatus();
}

// Draws a.tokens for `rows`: one pass without sorting (SampleFast) when every row is greedy or
// plain temperature sampling, else the sorted sampler (which handles every kind of row).
absl::Status SampleOnDevice(cudaStream_t stream, const kernels::SampleArgs& a,
                            const std::vector<SampleRow>& rows) {
  bool all_fast = true;
  for (const SampleRow& r : rows) {
    all_fast = all_fast && (r.temperature == 0.0f || r.top_k == 1 ||
                            UsesGumbelSampling(r.temperature, r.top_k, r.top_p, a.vocab));
  }
  if (!all_fast) return kernels::SampleRows(stream, a);
  const kernels::gpu::SampleFastArgs f{a.logits, a.temperature, a.top_k,    a.top_p, a.seed,
                                       a.step,   a.tokens,      a.num_rows, a.vocab};
  CUDA_RETURN_IF_ERROR(kernels::gpu::SampleFast(stream, f));
  return absl::OkStatus();
}

// Copies a host vector into `buf` (growing it), after the work queued on `stream`; waits.
template <typename T>
absl::Status UploadVector(const std::vector<T>& host, kernels::DeviceBuffer<T>* buf,
                          cudaStream_t stream) {
  RETURN_IF_ERROR(Reserve(buf, std::max<int64_t>(1, static_cast<int64_t>(host.size()))));
  return buf->Upload(host, stream);
}

}  // namespace

namespace {

// Allocates and zeroes one layer's K or V (zeroed so a slot read before it is written holds no
// stale NaN from earlier allocations).
template <typename T>
absl::Status AllocateZeroed(int64_t n, std::vector<kernels::DeviceBuffer<T>>* list) {
  ASSIGN_OR_RETURN(kernels::DeviceBuffer<T> buf, kernels::DeviceBuffer<T>::Allocate(n));
  if (n > 0) CUDA_RETURN_IF_ERROR(cudaMemset(buf.data(), 0, sizeof(T) * n));
  list->push_back(std::move(buf));
  return absl::OkStatus();
}

}  // namespace

// DPINFER_PROFILE=1 turns this on: events recorded between the ops of eager steps (not inside a
// graph capture) give each op family's GPU time; every step also gets its whole GPU time (upload
// to sampled tokens) and its host wall time in ForwardFast. The table goes to stderr when the
// model is destroyed: where a benchmark's decode step spends its time.
class StepProfiler {
 public:
  static std::unique_ptr<StepProfiler> FromEnv() {
    const char* v = std::getenv("DPINFER_PROFILE");
    if (v == nullptr || std::string(v) != "1") return nullptr;
    return std::make_unique<StepProfiler>();
  }
  ~StepProfiler() {
    for (cudaEvent_t e : pool_) cudaEventDestroy(e);
    for (const auto& [kind, n] : steps_) {
      std::fprintf(stderr,
                   "DPINFER_PROFILE %s steps: %lld, GPU %.4f ms/step (upload to tokens), host wall "
                   "in ForwardFast %.4f ms/step\n",
                   kind.c_str(), static_cast<long long>(n), gpu_ms_[kind] / n, host_ms_[kind] / n);
      double op_total = 0.0;
      std::vector<std::pair<double, std::string>> rows;
      for (const auto& [name, ms] : op_ms_[kind]) {
        op_total += ms;
        rows.push_back({ms, name});
      }
      std::sort(rows.rbegin(), rows.rend());
      for (const auto& [ms, name] : rows) {
        std::fprintf(stderr, "DPINFER_PROFILE   %-26s %9.4f ms/step %6.1f%%\n", name.c_str(),
                     ms / n, 100.0 * ms / std::max(op_total, 1e-9));
      }
    }
  }
  // Starts section `name` at this point of the stream (ending the previous one); nullptr ends the
  // last. Ignored while the stream is being captured.
  void Mark(cudaStream_t stream, const char* name) {
    if (capturing_) return;
    cudaEvent_t e = Take();
    cudaEventRecord(e, stream);
    marks_.push_back({e, name});
  }
  void set_capturing(bool c) { capturing_ = c; }
  // After the stream is synchronized: turns the marks into times. `kind` names the step ("graph",
  // "eager" or "prefill"), `host_ms` is its wall time on the host.
  void Collect(const std::string& kind, double host_ms) {
    for (size_t i = 0; i + 1 < marks_.size(); ++i) {
      float ms = 0.0f;
      cudaEventElapsedTime(&ms, marks_[i].event, marks_[i + 1].event);
      if (marks_[i].name != nullptr) op_ms_[kind][marks_[i].name] += ms;
    }
    if (marks_.size() >= 2) {
      float ms = 0.0f;
      cudaEventElapsedTime(&ms, marks_.front().event, marks_.back().event);
      gpu_ms_[kind] += ms;
    }
    host_ms_[kind] += host_ms;
    ++steps_[kind];
    for (const Marked& m : marks_) pool_.push_back(m.event);
    marks_.clear();
  }

 private:
  struct Marked {
    cudaEvent_t event;
    const char* name;
  };
  cudaEvent_t Take() {
    if (pool_.empty()) {
      cudaEvent_t e = nullptr;
      cudaEventCreate(&e);
      return e;
    }
    cudaEvent_t e = pool_.back();
    pool_.pop_back();
    return e;
  }
  bool capturing_ = false;
  std::vector<cudaEvent_t> pool_;
  std::vector<Marked> marks_;
  std::map<std::string, std::map<std::string, double>> op_ms_;  // kind -> op -> ms
  std::map<std::string, double> gpu_ms_, host_ms_;
  std::map<std::string, int64_t> steps_;
};

absl::StatusOr<std::unique_ptr<DeviceKvCache>> DeviceKvCache::Create(
    int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t num_kv_heads,
    int64_t head_dim, WeightDType dtype) {
  std::unique_ptr<DeviceKvCache> cache(new DeviceKvCache());
  cache->num_blocks_ = num_blocks;
  cache->block_size_ = block_size;
  cache->dtype_ = dtype;
  const int64_t n = num_blocks * block_size * num_kv_heads * head_dim;
  for (int64_t i = 0; i < num_layers; ++i) {
    if (dtype == WeightDType::kFloat32) {
      RETURN_IF_ERROR(AllocateZeroed(n, &cache->k_));
      RETURN_IF_ERROR(AllocateZeroed(n, &cache->v_));
    } else {
      RETURN_IF_ERROR(AllocateZeroed(n, &cache->k_bf16_));
      RETURN_IF_ERROR(AllocateZeroed(n, &cache->v_bf16_));
    }
  }
  // The memsets ran on the legacy stream, which a non-blocking model stream does not wait for.
  CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return cache;
}

int64_t DeviceKvCache::BytesPerToken(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim,
                                     WeightDType dtype) {
  const int64_t elem = dtype == WeightDType::kFloat32 ? 4 : 2;
  return 2 * num_layers * num_kv_heads * head_dim * elem;
}

CudaLlamaModel::CudaLlamaModel(const ModelConfig& config, WeightDType dtype,
                               kernels::CudaBackend* backend)
    : config_(config),
      dtype_(dtype),
      backend_(backend),
      stream_(backend->stream()),
      host_ops_(kernels::NewCpuBackend(1)),
      profiler_(StepProfiler::FromEnv()) {
  int device = 0;
  if (cudaGetDevice(&device) == cudaSuccess) {
    cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device);
  }
}

CudaLlamaModel::~CudaLlamaModel() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  if (step_host_ != nullptr) cudaFreeHost(step_host_);
  if (tokens_host_ != nullptr) cudaFreeHost(tokens_host_);
}

absl::Status CudaLlamaModel::Allocate(Weight* w, int64_t numel, bool fp32) {
  if (fp32 || dtype_ == WeightDType::kFloat32) {
    ASSIGN_OR_RETURN(w->f32, kernels::DeviceBuffer<float>::Allocate(numel));
    weight_bytes_ += 4 * numel;
  } else {
    ASSIGN_OR_RETURN(w->bf16, kernels::DeviceBuffer<__nv_bfloat16>::Allocate(numel));
    weight_bytes_ += 2 * numel;
  }
  return absl::OkStatus();
}

absl::Status CudaLlamaModel::Put(const std::vector<float>& host, Weight* w, int64_t offset) {
  const int64_t n = static_cast<int64_t>(host.size());
  if (n == 0) return absl::OkStatus();
  if (w->bf16.size() == 0) {
    if (offset + n > w->f32.size()) return absl::InternalError("CudaLlamaModel::Put past the end");
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(w->f32.data() + offset, host.data(), sizeof(float) * n,
                                         cudaMemcpyHostToDevice, stream_));
  } else {
    if (offset + n > w->bf16.size()) return absl::InternalError("CudaLlamaModel::Put past the end");
    // Converted on the device (round to nearest even), through an fp32 staging buffer.
    RETURN_IF_ERROR(Reserve(&staging_, n));
    RETURN_IF_ERROR(staging_.Upload(host.data(), n, stream_));
    RETURN_IF_ERROR(kernels::Fp32ToBf16(stream_, staging_.data(), w->bf16.data() + offset, n));
  }
  // `host` is reused for the next tensor, and staging_ may be replaced: let the copy finish.
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaLlamaModel::PutTensor(const Checkpoint& ckpt, const std::string& name,
                                       const std::vector<int64_t>& shape, Weight* w,
                                       int64_t offset) {
  const TensorInfo* info = ckpt.Find(name);
  const bool to_bf16 = w->bf16.size() > 0;
  if (info != nullptr && info->shape == shape) {
    const int64_t n = info->numel();
    if (offset + n > (to_bf16 ? w->bf16.size() : w->f32.size())) {
      return absl::InternalError(
          absl::StrCat("CudaLlamaModel: ", name, " does not fit its weight"));
    }
    // Straight from the mapped file: no host conversion, no extra copy.
    if (info->dtype == (to_bf16 ? DType::kBF16 : DType::kF32)) {
      void* dst = to_bf16 ? static_cast<void*>(w->bf16.data() + offset)
                          : static_cast<void*>(w->f32.data() + offset);
      CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(dst, info->data, info->nbytes, cudaMemcpyHostToDevice, stream_));
      CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
      return absl::OkStatus();
    }
    if (info->dtype == DType::kF32 && to_bf16) {
      RETURN_IF_ERROR(Reserve(&staging_, n));
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(staging_.data(), info->data, info->nbytes,
                                           cudaMemcpyHostToDevice, stream_));
      RETURN_IF_ERROR(kernels::Fp32ToBf16(stream_, staging_.data(), w->bf16.data() + offset, n));
      CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
      return absl::OkStatus();
    }
  }
  // Other dtypes, and every error message (missing tensor, wrong shape), from ReadF32.
  std::vector<float> host;
  RETURN_IF_ERROR(ckpt.ReadF32(name, shape, &host));
  return Put(host, w, offset);
}

absl::Status CudaLlamaModel::Read(const Checkpoint& ckpt, const std::string& name,
                                  const std::vector<int64_t>& shape, Weight* w, bool fp32) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  RETURN_IF_ERROR(Allocate(w, numel, fp32));
  return PutTensor(ckpt, name, shape, w, 0);
}

absl::Status CudaLlamaModel::LoadExperts(const Checkpoint& ckpt, const std::string& p, Layer* l) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t e_count = c.num_experts;
  if (c.family == ModelFamily::kGraniteMoe) {
    // input_linear already holds [gate; up] rows per expert, the fused layout kept here.
    RETURN_IF_ERROR(Read(ckpt, p + "block_sparse_moe.router.layer.weight", {e_count, hidden},
                         &l->router, /*fp32=*/dtype_ == WeightDType::kFloat32));
    RETURN_IF_ERROR(Read(ckpt, p + "block_sparse_moe.input_linear.weight",
                         {e_count, 2 * inter, hidden}, &l->expert_gate_up));
    return Read(ckpt, p + "block_sparse_moe.output_linear.weight", {e_count, hidden, inter},
                &l->expert_down);
  }
  // Mixtral: per-expert w1 (gate), w3 (up), w2 (down), uploaded into the fused layout one tensor
  // at a time.
  RETURN_IF_ERROR(Read(ckpt, p + "block_sparse_moe.gate.weight", {e_count, hidden}, &l->router,
                       /*fp32=*/dtype_ == WeightDType::kFloat32));
  const int64_t mat = inter * hidden;
  RETURN_IF_ERROR(Allocate(&l->expert_gate_up, e_count * 2 * mat, false));
  RETURN_IF_ERROR(Allocate(&l->expert_down, e_count * mat, false));
  for (int64_t e = 0; e < e_count; ++e) {
    const std::string ep = absl::StrCat(p, "block_sparse_moe.experts.", e, ".");
    RETURN_IF_ERROR(
        PutTensor(ckpt, ep + "w1.weight", {inter, hidden}, &l->expert_gate_up, e * 2 * mat));
    RETURN_IF_ERROR(
        PutTensor(ckpt, ep + "w3.weight", {inter, hidden}, &l->expert_gate_up, e * 2 * mat + mat));
    RETURN_IF_ERROR(PutTensor(ckpt, ep + "w2.weight", {hidden, inter}, &l->expert_down, e * mat));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CudaLlamaModel>> CudaLlamaModel::Load(
    const std::string& model_dir, const ModelConfig& config, WeightDType dtype,
    kernels::CudaBackend* backend) {
  if (backend == nullptr) return absl::InvalidArgumentError("CudaLlamaModel: no backend");
  RETURN_IF_ERROR(backend->status());
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(model_dir));
  std::unique_ptr<CudaLlamaModel> m(new CudaLlamaModel(config, dtype, backend));
  if (m->config_.attention_scale == 0.0f) {
    m->config_.attention_scale = 1.0f / std::sqrt(static_cast<float>(config.head_dim));
  }
  const int64_t hidden = config.hidden_size;
  const int64_t inter = config.intermediate_size;
  const int64_t q_dim = config.num_heads * config.head_dim;
  const int64_t kv_dim = config.num_kv_heads * config.head_dim;
  const bool bf16 = dtype == WeightDType::kBfloat16;
  // fp32: the lookup table is fp32 (and is the head when tied). bf16: one bf16 table serves the
  // lookup and a tied head.
  RETURN_IF_ERROR(m->Read(*ckpt, "model.embed_tokens.weight", {config.vocab_size, hidden},
                          &m->embed_, /*fp32=*/!bf16));
  m->layers_.resize(config.num_layers);
  for (int64_t i = 0; i < config.num_layers; ++i) {
    Layer& l = m->layers_[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    RETURN_IF_ERROR(m->Read(*ckpt, p + "input_layernorm.weight", {hidden}, &l.input_norm, true));
    if (bf16) {
      // q, k and v stacked into one [q_dim + 2 * kv_dim, hidden] weight: one GEMM.
      RETURN_IF_ERROR(m->Allocate(&l.wqkv, (q_dim + 2 * kv_dim) * hidden, false));
      RETURN_IF_ERROR(
          m->PutTensor(*ckpt, p + "self_attn.q_proj.weight", {q_dim, hidden}, &l.wqkv, 0));
      RETURN_IF_ERROR(m->PutTensor(*ckpt, p + "self_attn.k_proj.weight", {kv_dim, hidden}, &l.wqkv,
                                   q_dim * hidden));
      RETURN_IF_ERROR(m->PutTensor(*ckpt, p + "self_attn.v_proj.weight", {kv_dim, hidden}, &l.wqkv,
                                   (q_dim + kv_dim) * hidden));
      if (config.attention_bias) {
        RETURN_IF_ERROR(m->Allocate(&l.bqkv, q_dim + 2 * kv_dim, true));
        RETURN_IF_ERROR(m->PutTensor(*ckpt, p + "self_attn.q_proj.bias", {q_dim}, &l.bqkv, 0));
        RETURN_IF_ERROR(m->PutTensor(*ckpt, p + "self_attn.k_proj.bias", {kv_dim}, &l.bqkv, q_dim));
        RETURN_IF_ERROR(
            m->PutTensor(*ckpt, p + "self_attn.v_proj.bias", {kv_dim}, &l.bqkv, q_dim + kv_dim));
      }
    } else {
      RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.q_proj.weight", {q_dim, hidden}, &l.wq));
      RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.k_proj.weight", {kv_dim, hidden}, &l.wk));
      RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.v_proj.weight", {kv_dim, hidden}, &l.wv));
      if (config.attention_bias) {
        RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.q_proj.bias", {q_dim}, &l.bq, true));
        RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.k_proj.bias", {kv_dim}, &l.bk, true));
        RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.v_proj.bias", {kv_dim}, &l.bv, true));
      }
    }
    RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.o_proj.weight", {hidden, q_dim}, &l.wo));
    if (config.o_proj_bias) {
      RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.o_proj.bias", {hidden}, &l.bo, true));
    }
    RETURN_IF_ERROR(
        m->Read(*ckpt, p + "post_attention_layernorm.weight", {hidden}, &l.post_norm, true));
    if (config.num_experts > 0) {
      RETURN_IF_ERROR(m->LoadExperts(*ckpt, p, &l));
      continue;
    }
    if (bf16) {
      RETURN_IF_ERROR(m->Allocate(&l.w_gate_up, 2 * inter * hidden, false));
      RETURN_IF_ERROR(
          m->PutTensor(*ckpt, p + "mlp.gate_proj.weight", {inter, hidden}, &l.w_gate_up, 0));
      RETURN_IF_ERROR(m->PutTensor(*ckpt, p + "mlp.up_proj.weight", {inter, hidden}, &l.w_gate_up,
                                   inter * hidden));
      if (config.mlp_bias) {
        RETURN_IF_ERROR(m->Allocate(&l.b_gate_up, 2 * inter, true));
        RETURN_IF_ERROR(m->PutTensor(*ckpt, p + "mlp.gate_proj.bias", {inter}, &l.b_gate_up, 0));
        RETURN_IF_ERROR(m->PutTensor(*ckpt, p + "mlp.up_proj.bias", {inter}, &l.b_gate_up, inter));
      }
    } else {
      RETURN_IF_ERROR(m->Read(*ckpt, p + "mlp.gate_proj.weight", {inter, hidden}, &l.w_gate));
      RETURN_IF_ERROR(m->Read(*ckpt, p + "mlp.up_proj.weight", {inter, hidden}, &l.w_up));
      if (config.mlp_bias) {
        RETURN_IF_ERROR(m->Read(*ckpt, p + "mlp.gate_proj.bias", {inter}, &l.b_gate, true));
        RETURN_IF_ERROR(m->Read(*ckpt, p + "mlp.up_proj.bias", {inter}, &l.b_up, true));
      }
    }
    RETURN_IF_ERROR(m->Read(*ckpt, p + "mlp.down_proj.weight", {hidden, inter}, &l.w_down));
    if (config.mlp_bias) {
      RETURN_IF_ERROR(m->Read(*ckpt, p + "mlp.down_proj.bias", {hidden}, &l.b_down, true));
    }
  }
  RETURN_IF_ERROR(m->Read(*ckpt, "model.norm.weight", {hidden}, &m->final_norm_, true));
  // As LlamaModel: the tie flag decides, a stored lm_head.weight of a tied model is never read.
  if (!config.tie_word_embeddings) {
    RETURN_IF_ERROR(m->Read(*ckpt, "lm_head.weight", {config.vocab_size, hidden}, &m->lm_head_));
  }
  ASSIGN_OR_RETURN(m->inv_freq_,
                   kernels::DeviceBuffer<float>::FromHost(RopeInvFreq(config), m->stream_));
  m->staging_ = kernels::DeviceBuffer<float>();  // only needed while loading
  RETURN_IF_ERROR(backend->status());
  return m;
}

absl::Status CudaLlamaModel::Linear(const float* x, const Weight& w, int64_t offset,
                                    const Weight* bias, float* y, int64_t m, int64_t n, int64_t k) {
  // The fp32 mode's GEMM (the bf16 mode's run in EnqueueFast).
  kernels::LinearArgs a;
  a.x = x;
  a.w = w.f32.data() + offset;
  a.bias = bias != nullptr && !bias->empty() ? bias->f32.data() : nullptr;
  a.y = y;
  a.m = m;
  a.n = n;
  a.k = k;
  return kernels::LinearFp32(stream_, backend_->cublas(), a);
}

absl::Status CudaLlamaModel::Moe(const Layer& l, const float* h, float* out, int64_t t) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t num_e = c.num_experts;
  const int64_t top_k = c.num_experts_per_tok;
  RETURN_IF_ERROR(Linear(h, l.router, 0, nullptr, router_logits_.data(), t, num_e, hidden));
  router_logits_host_.resize(t * num_e);
  RETURN_IF_ERROR(router_logits_.Download(router_logits_host_.data(), t * num_e, stream_));

  // Routing on the host, with the CPU model's code.
  const auto expert_tokens = RouteTokens(c, router_logits_host_.data(), t, host_ops_.get());

  // The routed rows, grouped by expert (ascending), and per token its slots in ascending expert
  // order: the order MoeCombine adds them in, as the CPU model's index_add loop does.
  std::vector<int32_t> sorted_tokens;  // [t * top_k] token of each routed row
  std::vector<int64_t> offsets(num_e + 1, 0);
  std::vector<int32_t> rows(t * top_k);
  std::vector<float> weights(t * top_k);
  std::vector<int64_t> filled(t, 0);
  for (int64_t e = 0; e < num_e; ++e) {
    offsets[e] = static_cast<int64_t>(sorted_tokens.size());
    for (const auto& [tok, weight] : expert_tokens[e]) {
      const int64_t slot = tok * top_k + filled[tok]++;
      rows[slot] = static_cast<int32_t>(sorted_tokens.size());
      weights[slot] = weight;
      sorted_tokens.push_back(static_cast<int32_t>(tok));
    }
  }
  offsets[num_e] = static_cast<int64_t>(sorted_tokens.size());
  RETURN_IF_ERROR(moe_tokens_.Upload(sorted_tokens, stream_));
  RETURN_IF_ERROR(moe_rows_.Upload(rows, stream_));
  RETURN_IF_ERROR(moe_weights_.Upload(weights, stream_));

  // Gather (the embedding kernel with h as the table), one GEMM chain per expert, combine.
  backend_->Embedding({moe_tokens_.data(), h, moe_in_.data(), offsets[num_e], t, hidden, 1.0f});
  const int64_t mat = inter * hidden;
  for (int64_t e = 0; e < num_e; ++e) {
    const int64_t m = offsets[e + 1] - offsets[e];
    if (m == 0) continue;
    const float* in = moe_in_.data() + offsets[e] * hidden;
    RETURN_IF_ERROR(
        Linear(in, l.expert_gate_up, e * 2 * mat, nullptr, gate_.data(), m, inter, hidden));
    RETURN_IF_ERROR(
        Linear(in, l.expert_gate_up, e * 2 * mat + mat, nullptr, up_.data(), m, inter, hidden));
    backend_->SiluMul({gate_.data(), up_.data(), gate_.data(), m, inter});
    RETURN_IF_ERROR(Linear(gate_.data(), l.expert_down, e * mat, nullptr,
                           moe_out_.data() + offsets[e] * hidden, m, hidden, inter));
  }
  kernels::MoeCombineArgs mc;
  mc.expert_out = moe_out_.data();
  mc.rows = moe_rows_.data();
  mc.weights = moe_weights_.data();
  mc.out = out;
  mc.num_tokens = t;
  mc.top_k = top_k;
  mc.hidden = hidden;
  return kernels::MoeCombine(stream_, mc);
}

absl::Status CudaLlamaModel::Forward(const ForwardBatch& batch, DeviceKvCache* cache,
                                     std::vector<float>* logits) {
  RETURN_IF_ERROR(backend_->status());
  if (cache == nullptr || cache->dtype() != dtype_) {
    return absl::InvalidArgumentError("CudaLlamaModel::Forward: no KV cache of the model's dtype");
  }
  if (dtype_ == WeightDType::kBfloat16) return ForwardFast(batch, nullptr, cache, logits, nullptr);
  const ModelConfig& c = config_;
  const int64_t t = batch.num_tokens();
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t q_dim = c.num_heads * c.head_dim;
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  const int64_t n = static_cast<int64_t>(batch.logit_rows.size());
  RETURN_IF_ERROR(ValidateBatch(batch, c.vocab_size));

  // Every buffer grown before any work is queued.
  const int64_t rows = std::max(t, n);
  RETURN_IF_ERROR(Reserve(&x_, t * hidden));
  RETURN_IF_ERROR(Reserve(&h_, rows * hidden));
  RETURN_IF_ERROR(Reserve(&tmp_, rows * hidden));
  RETURN_IF_ERROR(Reserve(&q_, t * q_dim));
  RETURN_IF_ERROR(Reserve(&attn_, t * q_dim));
  RETURN_IF_ERROR(Reserve(&k_, t * kv_dim));
  RETURN_IF_ERROR(Reserve(&v_, t * kv_dim));
  RETURN_IF_ERROR(Reserve(&gate_, t * inter));
  RETURN_IF_ERROR(Reserve(&up_, t * inter));
  RETURN_IF_ERROR(Reserve(&logits_, std::max<int64_t>(1, n) * c.vocab_size));
  if (c.num_experts > 0) {
    const int64_t routed = t * c.num_experts_per_tok;
    RETURN_IF_ERROR(Reserve(&router_logits_, t * c.num_experts));
    RETURN_IF_ERROR(Reserve(&moe_in_, routed * hidden));
    RETURN_IF_ERROR(Reserve(&moe_out_, routed * hidden));
    RETURN_IF_ERROR(Reserve(&moe_tokens_, routed));
    RETURN_IF_ERROR(Reserve(&moe_rows_, routed));
    RETURN_IF_ERROR(Reserve(&moe_weights_, routed));
  }
  RETURN_IF_ERROR(UploadVector(batch.token_ids, &token_ids_, stream_));
  RETURN_IF_ERROR(UploadVector(batch.positions, &positions_, stream_));
  RETURN_IF_ERROR(UploadVector(batch.token_seq, &token_seq_, stream_));
  RETURN_IF_ERROR(UploadVector(batch.slot_mapping, &slot_mapping_, stream_));
  RETURN_IF_ERROR(UploadVector(batch.block_tables, &block_tables_, stream_));
  RETURN_IF_ERROR(UploadVector(batch.logit_rows, &logit_rows_, stream_));

  backend_->Embedding({token_ids_.data(), embed_.f32.data(), x_.data(), t, c.vocab_size, hidden,
                       c.embedding_multiplier});
  for (int64_t li = 0; li < c.num_layers; ++li) {
    const Layer& l = layers_[li];
    // Attention block: h = norm(x); x += o_proj(attn(rope(q), rope(k), v)) * residual_mult.
    backend_->RmsNorm({x_.data(), l.input_norm.f32.data(), h_.data(), t, hidden, c.rms_norm_eps});
    RETURN_IF_ERROR(Linear(h_.data(), l.wq, 0, &l.bq, q_.data(), t, q_dim, hidden));
    RETURN_IF_ERROR(Linear(h_.data(), l.wk, 0, &l.bk, k_.data(), t, kv_dim, hidden));
    RETURN_IF_ERROR(Linear(h_.data(), l.wv, 0, &l.bv, v_.data(), t, kv_dim, hidden));
    kernels::RopeArgs rope;
    rope.q = q_.data();
    rope.k = k_.data();
    rope.positions = positions_.data();
    rope.num_tokens = t;
    rope.num_heads = c.num_heads;
    rope.num_kv_heads = c.num_kv_heads;
    rope.head_dim = c.head_dim;
    rope.theta = c.rope_theta;
    rope.inv_freq = inv_freq_.data();
    backend_->Rope(rope);
    kernels::CacheWriteArgs cw;
    cw.k = k_.data();
    cw.v = v_.data();
    cw.k_cache = cache->k(li);
    cw.v_cache = cache->v(li);
    cw.slot_mapping = slot_mapping_.data();
    cw.num_tokens = t;
    cw.num_kv_heads = c.num_kv_heads;
    cw.head_dim = c.head_dim;
    backend_->CacheWrite(cw);
    kernels::PagedAttentionArgs pa;
    pa.q = q_.data();
    pa.k_cache = cache->k(li);
    pa.v_cache = cache->v(li);
    pa.block_tables = block_tables_.data();
    pa.token_seq = token_seq_.data();
    pa.positions = positions_.data();
    pa.out = attn_.data();
    pa.num_tokens = t;
    pa.num_heads = c.num_heads;
    pa.num_kv_heads = c.num_kv_heads;
    pa.head_dim = c.head_dim;
    pa.block_size = cache->block_size();
    pa.max_blocks_per_seq = batch.max_blocks_per_seq;
    pa.scale = c.attention_scale;
    backend_->PagedAttention(pa);
    RETURN_IF_ERROR(Linear(attn_.data(), l.wo, 0, &l.bo, tmp_.data(), t, hidden, q_dim));
    backend_->Add({x_.data(), tmp_.data(), x_.data(), t * hidden, c.residual_multiplier});
    // MLP block: h = norm(x); x += mlp(h) * residual_mult, dense or a mixture of experts.
    backend_->RmsNorm({x_.data(), l.post_norm.f32.data(), h_.data(), t, hidden, c.rms_norm_eps});
    if (c.num_experts > 0) {
      RETURN_IF_ERROR(Moe(l, h_.data(), tmp_.data(), t));
    } else {
      RETURN_IF_ERROR(Linear(h_.data(), l.w_gate, 0, &l.b_gate, gate_.data(), t, inter, hidden));
      RETURN_IF_ERROR(Linear(h_.data(), l.w_up, 0, &l.b_up, up_.data(), t, inter, hidden));
      backend_->SiluMul({gate_.data(), up_.data(), gate_.data(), t, inter});
      RETURN_IF_ERROR(Linear(gate_.data(), l.w_down, 0, &l.b_down, tmp_.data(), t, hidden, inter));
    }
    backend_->Add({x_.data(), tmp_.data(), x_.data(), t * hidden, c.residual_multiplier});
  }
  // Only the rows that will be sampled (gathered by the embedding kernel) go through the final
  // norm and the lm_head.
  if (n > 0) {
    backend_->Embedding({logit_rows_.data(), x_.data(), tmp_.data(), n, t, hidden, 1.0f});
    backend_->RmsNorm({tmp_.data(), final_norm_.f32.data(), h_.data(), n, hidden, c.rms_norm_eps});
    const Weight& head = lm_head_.empty() ? embed_ : lm_head_;
    RETURN_IF_ERROR(Linear(h_.data(), head, 0, nullptr, logits_.data(), n, c.vocab_size, hidden));
    if (c.logits_scaling != 1.0f) {
      RETURN_IF_ERROR(
          kernels::DivideScalar(stream_, logits_.data(), n * c.vocab_size, c.logits_scaling));
    }
  }
  if (logits != nullptr) {
    logits->resize(n * c.vocab_size);
    RETURN_IF_ERROR(logits_.Download(logits->data(), n * c.vocab_size, stream_));
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));  // also when nothing was downloaded
  return backend_->status();
}

// ---------------------------------------------------------------------------------------------
// The bf16 serving path.

namespace {

// Decode batches run as CUDA graphs captured for these batch sizes (vLLM's buckets): a batch of S
// sequences replays the smallest bucket >= S, padded with sequences that compute nothing useful.
int64_t GraphBucket(int64_t seqs) {
  if (seqs <= 1) return 1;
  if (seqs <= 2) return 2;
  if (seqs <= 4) return 4;
  return (seqs + 7) / 8 * 8;
}

// cuBLAS needs its own workspace to be capturable in a graph (it may not allocate during capture).
constexpr int64_t kCublasWorkspaceBytes = int64_t{32} << 20;

}  // namespace

CudaLlamaModel::StepLayout CudaLlamaModel::Layout(const StepDims& d) {
  StepLayout l;
  int64_t off = 0;
  // Every segment starts at an even int32 offset, so the uint64 ones are 8-byte aligned.
  auto take = [&off](int64_t n) {
    const int64_t at = off;
    off += (std::max<int64_t>(n, 1) + 1) & ~int64_t{1};
    return at;
  };
  l.token_ids = take(d.tokens);
  l.positions = take(d.tokens);
  l.slots = take(d.tokens);
  l.logit_rows = take(d.logits);
  l.q_start = take(d.seqs + 1);
  l.kv_len = take(d.seqs);
  l.tile_seq = take(d.tiles);
  l.tile_row = take(d.tiles);
  l.block_tables = take(d.seqs * d.width);
  l.temperature = take(d.logits);
  l.top_k = take(d.logits);
  l.top_p = take(d.logits);
  l.seed = take(2 * d.logits);
  l.step = take(2 * d.logits);
  l.total = off;
  return l;
}

absl::Status CudaLlamaModel::ReserveFast(int64_t tokens, int64_t seqs, int64_t tiles, int64_t width,
                                         int64_t logit_rows) {
  FastCapacity want = cap_;
  want.tokens = std::max(want.tokens, tokens);
  want.seqs = std::max(want.seqs, seqs);
  want.tiles = std::max(want.tiles, tiles);
  want.width = std::max(want.width, width);
  want.logits = std::max(want.logits, logit_rows);
  // Split-KV attention only runs while tiles * kv_heads < the SM count (ChooseSplits), so its
  // partials never need more than about three SM counts' worth of (tile, split) pairs.
  want.split_tiles = std::max<int64_t>(want.split_tiles, 3 * num_sms_ + 64);
  if (want.tokens == cap_.tokens && want.seqs == cap_.seqs && want.tiles == cap_.tiles &&
      want.width == cap_.width && want.logits == cap_.logits &&
      want.split_tiles == cap_.split_tiles) {
    return absl::OkStatus();
  }
  // Captured graphs point into the buffers about to be replaced.
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));

  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const int64_t q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  const int64_t t = want.tokens, rows = std::max(want.tokens, want.logits);
  const int64_t routed = c.num_experts > 0 ? t * c.num_experts_per_tok : 0;
  RETURN_IF_ERROR(Reserve(&x_, t * hidden));
  RETURN_IF_ERROR(Reserve(&tmp_, rows * hidden));
  RETURN_IF_ERROR(Reserve(&hb_, rows * std::max({hidden, q_dim, inter})));
  RETURN_IF_ERROR(Reserve(&qkv_, t * (q_dim + 2 * kv_dim)));
  RETURN_IF_ERROR(Reserve(&qb_, t * q_dim));
  RETURN_IF_ERROR(Reserve(&gate_up_bf16_, std::max(t, routed) * 2 * inter));
  if (c.mlp_bias && c.num_experts == 0) RETURN_IF_ERROR(Reserve(&gate_up_, t * 2 * inter));
  RETURN_IF_ERROR(Reserve(&logits_, std::max<int64_t>(1, want.logits) * c.vocab_size));
  RETURN_IF_ERROR(Reserve(&sampled_, std::max<int64_t>(1, want.logits)));
  // (Sized for split_tiles (tile, split) pairs: the formula is per split times tiles.)
  RETURN_IF_ERROR(Reserve(
      &partials_,
      kernels::gpu::AttentionPartialsFloats(want.split_tiles, c.num_heads, c.head_dim, 2) / 2));
  if (c.num_experts > 0) {
    RETURN_IF_ERROR(Reserve(&router_logits_, t * c.num_experts));
    RETURN_IF_ERROR(Reserve(&moe_offsets_, c.num_experts + 1));
    RETURN_IF_ERROR(Reserve(&moe_tokens_, routed));
    RETURN_IF_ERROR(Reserve(&moe_rows_, routed));
    RETURN_IF_ERROR(Reserve(&moe_weights_, routed));
    RETURN_IF_ERROR(Reserve(&moe_act_, routed * inter));
    RETURN_IF_ERROR(Reserve(&moe_out_, routed * hidden));
    RETURN_IF_ERROR(Reserve(
        &moe_scratch_, kernels::gpu::MoeRouteScratchInts(t, c.num_experts, c.num_experts_per_tok)));
  }
  StepDims d;
  d.tokens = want.tokens;
  d.logits = want.logits;
  d.seqs = want.seqs;
  d.tiles = want.tiles;
  d.width = want.width;
  const int64_t step_ints = Layout(d).total;
  RETURN_IF_ERROR(Reserve(&step_dev_, step_ints));
  if (step_host_size_ < step_ints) {
    if (step_host_ != nullptr) cudaFreeHost(step_host_);
    step_host_ = nullptr;
    step_host_size_ = 0;
    CUDA_RETURN_IF_ERROR(cudaMallocHost(&step_host_, sizeof(int32_t) * step_ints));
    step_host_size_ = step_ints;
  }
  if (tokens_host_size_ < want.logits) {
    if (tokens_host_ != nullptr) cudaFreeHost(tokens_host_);
    tokens_host_ = nullptr;
    tokens_host_size_ = 0;
    CUDA_RETURN_IF_ERROR(cudaMallocHost(&tokens_host_, sizeof(int32_t) * want.logits));
    tokens_host_size_ = want.logits;
  }
  if (cublas_workspace_.size() == 0) {
    ASSIGN_OR_RETURN(cublas_workspace_,
                     kernels::DeviceBuffer<uint8_t>::Allocate(kCublasWorkspaceBytes));
    CUBLAS_RETURN_IF_ERROR(
        cublasSetWorkspace(backend_->cublas(), cublas_workspace_.data(), kCublasWorkspaceBytes));
    // DPINFER_GEMM_TUNING=0 keeps cuBLASLt's first heuristic choice for every shape.
    const char* tuning = std::getenv("DPINFER_GEMM_TUNING");
    ASSIGN_OR_RETURN(gemm_,
                     kernels::GemmPlanner::Create(cublas_workspace_.data(), kCublasWorkspaceBytes));
    gemm_->set_measuring(tuning == nullptr || std::string(tuning) != "0");
  }
  cap_ = want;
  return absl::OkStatus();
}

int64_t CudaLlamaModel::device_bytes() const {
  int64_t bytes = weight_bytes_ + inv_freq_.size() * 4 + cublas_workspace_.size();
  for (const auto* b :
       {&token_ids_, &positions_, &token_seq_, &slot_mapping_, &block_tables_, &logit_rows_,
        &moe_tokens_, &moe_rows_, &step_dev_, &moe_offsets_, &moe_scratch_, &sampled_}) {
    bytes += b->size() * 4;
  }
  for (const auto* b :
       {&x_, &h_, &q_, &k_, &v_, &attn_, &tmp_, &gate_, &up_, &logits_, &router_logits_, &moe_in_,
        &moe_out_, &moe_weights_, &qkv_, &gate_up_, &partials_}) {
    bytes += b->size() * 4;
  }
  for (const auto* b : {&hb_, &qb_, &moe_act_, &gate_up_bf16_}) bytes += b->size() * 2;
  return bytes;
}

absl::Status CudaLlamaModel::Prepare(int64_t max_tokens, int64_t max_seqs,
                                     int64_t max_blocks_per_seq, bool cuda_graphs) {
  if (max_tokens < 1 || max_seqs < 1 || max_blocks_per_seq < 1) {
    return absl::InvalidArgumentError("CudaLlamaModel::Prepare: sizes must be >= 1");
  }
  const ModelConfig& c = config_;
  if (dtype_ == WeightDType::kFloat32) {
    if (cuda_graphs) return absl::InvalidArgumentError("CUDA graphs need the bfloat16 model");
    // What Forward would grow to for the largest step (the exact mode allocates lazily).
    const int64_t q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
    const int64_t t = max_tokens, rows = std::max(max_tokens, max_seqs);
    RETURN_IF_ERROR(Reserve(&x_, t * c.hidden_size));
    RETURN_IF_ERROR(Reserve(&h_, rows * c.hidden_size));
    RETURN_IF_ERROR(Reserve(&tmp_, rows * c.hidden_size));
    RETURN_IF_ERROR(Reserve(&q_, t * q_dim));
    RETURN_IF_ERROR(Reserve(&attn_, t * q_dim));
    RETURN_IF_ERROR(Reserve(&k_, t * kv_dim));
    RETURN_IF_ERROR(Reserve(&v_, t * kv_dim));
    RETURN_IF_ERROR(Reserve(&gate_, t * c.intermediate_size));
    RETURN_IF_ERROR(Reserve(&up_, t * c.intermediate_size));
    RETURN_IF_ERROR(Reserve(&logits_, max_seqs * c.vocab_size));
    return absl::OkStatus();
  }
  if (cuda_graphs && stream_ == nullptr) {
    return absl::InvalidArgumentError("CUDA graphs need a backend on a created stream");
  }
  // Graph buckets may round the batch up past max_seqs.
  const int64_t seqs = std::max(max_seqs, GraphBucket(max_seqs));
  const int64_t tokens = std::max(max_tokens, seqs);
  const int64_t tiles =
      seqs + (tokens + kernels::gpu::kAttentionTileRows - 1) / kernels::gpu::kAttentionTileRows;
  RETURN_IF_ERROR(ReserveFast(tokens, seqs, tiles, max_blocks_per_seq, seqs));
  RETURN_IF_ERROR(TuneGemms(tokens, seqs));
  use_graphs_ = cuda_graphs;
  graph_max_seqs_ = max_seqs;
  return absl::OkStatus();
}

absl::Status CudaLlamaModel::TuneGemms(int64_t max_tokens, int64_t max_logits) {
  // Every GEMM shape of a step at the m buckets (GemmPlanner::MBucket) of decode batches, which
  // graph captures need ready (they cannot measure), and of the largest step. Buckets in between
  // (mixed prefill + decode steps) then run cuBLASLt's first choice: measuring stops here, so no
  // serving step waits for one. The inputs are whatever the buffers hold: only the kernels' speed
  // matters here.
  const ModelConfig& c = config_;
  if (layers_.empty()) return absl::OkStatus();
  const Layer& ly = layers_[0];
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const int64_t q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  const Weight& head = lm_head_.empty() ? embed_ : lm_head_;
  std::vector<int64_t> buckets;
  for (int64_t b = 1; b <= max_logits; b = kernels::GemmPlanner::MBucket(b) + 1) {
    buckets.push_back(kernels::GemmPlanner::MBucket(b));
  }
  buckets.push_back(kernels::GemmPlanner::MBucket(max_tokens));
  for (const int64_t bucket : buckets) {
    const int64_t m = std::min(bucket, cap_.tokens);
    RETURN_IF_ERROR(gemm_->Run(stream_, hb_.data(), ly.wqkv.bf16.data(), qkv_.data(), false, m,
                               q_dim + 2 * kv_dim, hidden));
    RETURN_IF_ERROR(
        gemm_->Run(stream_, hb_.data(), ly.wo.bf16.data(), tmp_.data(), false, m, hidden, q_dim));
    if (c.num_experts > 0) {
      RETURN_IF_ERROR(gemm_->Run(stream_, hb_.data(), ly.router.bf16.data(), router_logits_.data(),
                                 false, m, c.num_experts, hidden));
    } else {
      const bool bias = !ly.b_gate_up.empty();
      void* gate_up = bias ? static_cast<void*>(gate_up_.data()) : gate_up_bf16_.data();
      RETURN_IF_ERROR(gemm_->Run(stream_, hb_.data(), ly.w_gate_up.bf16.data(), gate_up, !bias, m,
                                 2 * inter, hidden));
      RETURN_IF_ERROR(gemm_->Run(stream_, hb_.data(), ly.w_down.bf16.data(), tmp_.data(), false,
                                 m, hidden, inter));
    }
    if (bucket <= kernels::GemmPlanner::MBucket(max_logits)) {
      RETURN_IF_ERROR(gemm_->Run(stream_, hb_.data(), head.bf16.data(), logits_.data(), false,
                                 std::min(bucket, cap_.logits), c.vocab_size, hidden));
    }
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  gemm_->set_measuring(false);
  return absl::OkStatus();
}

absl::StatusOr<CudaLlamaModel::StepDims> CudaLlamaModel::FastDims(const ForwardBatch& b,
                                                                  int64_t* max_context) const {
  StepDims d;
  d.tokens = b.num_tokens();
  d.logits = static_cast<int64_t>(b.logit_rows.size());
  d.width = std::max<int64_t>(1, b.max_blocks_per_seq);
  d.seqs = b.max_blocks_per_seq > 0
               ? static_cast<int64_t>(b.block_tables.size()) / b.max_blocks_per_seq
               : 0;
  // Each sequence's tokens must be one run, sequences in row order, positions consecutive; each
  // run takes ceil(length / kAttentionTileRows) attention tiles.
  constexpr int64_t kTile = kernels::gpu::kAttentionTileRows;
  int64_t prev_seq = -1, run = 0;
  *max_context = 0;
  for (int64_t i = 0; i < d.tokens; ++i) {
    const int64_t s = b.token_seq[i];
    *max_context = std::max<int64_t>(*max_context, b.positions[i] + 1);
    if (s < 0 || s >= d.seqs) {
      return absl::InvalidArgumentError(absl::StrCat("token_seq ", s, " outside the block tables"));
    }
    if (s == prev_seq) {
      if (b.positions[i] != b.positions[i - 1] + 1) {
        return absl::InvalidArgumentError("bf16 model: a sequence's positions must be consecutive");
      }
      ++run;
      continue;
    }
    if (s < prev_seq) {
      return absl::InvalidArgumentError(
          "bf16 model: each sequence's tokens must be one run, in block-table row order");
    }
    d.tiles += (run + kTile - 1) / kTile;
    prev_seq = s;
    run = 1;
  }
  d.tiles = std::max<int64_t>(1, d.tiles + (run + kTile - 1) / kTile);
  return d;
}

void CudaLlamaModel::ChooseSplits(int64_t max_context, StepDims* d) const {
  d->num_splits = 1;
  d->kv_chunk = 0;
  const int64_t ctas = d->tiles * config_.num_kv_heads;
  if (ctas >= num_sms_ || max_context <= 256) return;
  // Enough (tile, kv head, split) blocks for about two waves over the SMs.
  const int64_t want = (2 * num_sms_ + ctas - 1) / ctas;
  int64_t chunk = (max_context + want - 1) / want;
  chunk = std::max<int64_t>(128, (chunk + 63) / 64 * 64);
  const int64_t splits = (max_context + chunk - 1) / chunk;
  if (splits <= 1 || d->tiles * splits > cap_.split_tiles) return;
  d->num_splits = splits;
  d->kv_chunk = chunk;
}

absl::Status CudaLlamaModel::UploadStep(const ForwardBatch& b, const std::vector<SampleRow>* rows,
                                        const StepDims& d, bool padded) {
  const StepLayout l = Layout(d);
  if (l.total > step_host_size_ || l.total > step_dev_.size()) {
    return absl::InternalError("CudaLlamaModel: step buffer too small");
  }
  int32_t* h = step_host_;
  const int64_t t = b.num_tokens();
  const int64_t n = static_cast<int64_t>(b.logit_rows.size());
  const int64_t seqs = b.max_blocks_per_seq > 0
                           ? static_cast<int64_t>(b.block_tables.size()) / b.max_blocks_per_seq
                           : 0;
  // The batch's rows in bulk, then padding rows: token 0 at position 0 storing no K/V (slot -1),
  // and logit rows 1:1.
  const int64_t real_tokens = std::min(t, d.tokens);
  std::copy_n(b.token_ids.data(), real_tokens, h + l.token_ids);
  std::copy_n(b.positions.data(), real_tokens, h + l.positions);
  std::copy_n(b.slot_mapping.data(), real_tokens, h + l.slots);
  std::fill(h + l.token_ids + real_tokens, h + l.token_ids + d.tokens, 0);
  std::fill(h + l.positions + real_tokens, h + l.positions + d.tokens, 0);
  std::fill(h + l.slots + real_tokens, h + l.slots + d.tokens, -1);
  const int64_t real_logits = std::min(n, d.logits);
  std::copy_n(b.logit_rows.data(), real_logits, h + l.logit_rows);
  for (int64_t i = real_logits; i < d.logits; ++i) h[l.logit_rows + i] = static_cast<int32_t>(i);
  // q_start / kv_len from the runs; padding sequences own one row each (graphs pad 1:1).
  int32_t* q_start = h + l.q_start;
  int32_t* kv_len = h + l.kv_len;
  const int32_t* token_seq = b.token_seq.data();
  const int32_t* positions = b.positions.data();
  int64_t tiles = 0;
  int64_t i = 0;
  for (int64_t s = 0; s < d.seqs; ++s) {
    q_start[s] = static_cast<int32_t>(i);
    if (s < seqs) {
      const int64_t begin = i;
      while (i < t && token_seq[i] == s) ++i;
      kv_len[s] = i > begin ? positions[i - 1] + 1 : 0;
    } else {
      kv_len[s] = 0;
      if (padded) ++i;
    }
    for (int64_t r = q_start[s]; r < i; r += kernels::gpu::kAttentionTileRows) {
      if (tiles < d.tiles) {  // a miscount is reported below, never written past the list
        h[l.tile_seq + tiles] = static_cast<int32_t>(s);
        h[l.tile_row + tiles] = static_cast<int32_t>(r);
      }
      ++tiles;
    }
  }
  q_start[d.seqs] = static_cast<int32_t>(i);
  // FastDims (eager) and the graph buckets (one tile per sequence) size the list exactly.
  if (tiles != d.tiles) return absl::InternalError("CudaLlamaModel: attention tiles miscounted");
  // Block tables re-laid to d.width columns, zeros past a row's own.
  const int64_t src_w = b.max_blocks_per_seq;
  const int64_t cols = std::min(src_w, d.width);
  const int32_t* src = b.block_tables.data();
  int32_t* row = h + l.block_tables;
  for (int64_t s = 0; s < d.seqs; ++s, row += d.width) {
    int64_t k = 0;
    if (s < seqs) {
      for (; k < cols; ++k) row[k] = src[s * src_w + k];
    }
    for (; k < d.width; ++k) row[k] = 0;
  }
  float* temperature = reinterpret_cast<float*>(h + l.temperature);
  float* top_p = reinterpret_cast<float*>(h + l.top_p);
  uint64_t* seed = reinterpret_cast<uint64_t*>(h + l.seed);
  uint64_t* step = reinterpret_cast<uint64_t*>(h + l.step);
  const int64_t real_rows =
      rows != nullptr ? std::min(static_cast<int64_t>(rows->size()), d.logits) : 0;
  for (int64_t r = 0; r < d.logits; ++r) {
    const SampleRow row = r < real_rows ? (*rows)[r] : SampleRow{0.0f, -1, 1.0f, 0, 0};
    temperature[r] = row.temperature;
    h[l.top_k + r] = row.top_k;
    top_p[r] = row.top_p;
    seed[r] = row.seed;
    step[r] = row.step;
  }
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(step_dev_.data(), step_host_, sizeof(int32_t) * l.total,
                                       cudaMemcpyHostToDevice, stream_));
  return absl::OkStatus();
}

absl::Status CudaLlamaModel::MoeFast(const Layer& l, int64_t t) {
  namespace gpu = kernels::gpu;
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const int64_t num_e = c.num_experts, top_k = c.num_experts_per_tok;
  const int64_t routed = t * top_k;
  if (profiler_) profiler_->Mark(stream_, "moe.router_gemm");
  RETURN_IF_ERROR(gemm_->Run(stream_, hb_.data(), l.router.bf16.data(), router_logits_.data(),
                             false, t, num_e, hidden));
  gpu::MoeRouteArgs r;
  r.router_logits = router_logits_.data();
  r.expert_offsets = moe_offsets_.data();
  r.sorted_token = moe_tokens_.data();
  r.token_rows = moe_rows_.data();
  r.token_weights = moe_weights_.data();
  r.scratch = moe_scratch_.data();
  r.num_tokens = t;
  r.num_experts = num_e;
  r.top_k = top_k;
  r.softmax_first = c.family == ModelFamily::kMixtral;
  if (profiler_) profiler_->Mark(stream_, "moe.route");
  CUDA_RETURN_IF_ERROR(gpu::MoeRoute(stream_, r));
  // Each expert over its rows, read straight from the normed activations through sorted_token.
  if (profiler_) profiler_->Mark(stream_, "moe.gate_up_grouped_gemm");
  gpu::GroupedGemmArgs g;
  g.x = hb_.data();
  g.gather = moe_tokens_.data();
  g.w = l.expert_gate_up.bf16.data();
  g.expert_offsets = moe_offsets_.data();
  g.y = gate_up_bf16_.data();
  g.y_bf16 = true;
  g.max_rows = routed;
  g.num_experts = num_e;
  g.n = 2 * inter;
  g.k = hidden;
  CUDA_RETURN_IF_ERROR(gpu::GroupedGemm(stream_, g));
  if (profiler_) profiler_->Mark(stream_, "moe.silu_mul");
  CUDA_RETURN_IF_ERROR(
      gpu::SiluMulFusedToBf16(stream_, gate_up_bf16_.data(), moe_act_.data(), routed, inter));
  if (profiler_) profiler_->Mark(stream_, "moe.down_grouped_gemm");
  g.x = moe_act_.data();
  g.gather = nullptr;
  g.w = l.expert_down.bf16.data();
  g.y = moe_out_.data();
  g.y_bf16 = false;
  g.n = hidden;
  g.k = inter;
  CUDA_RETURN_IF_ERROR(gpu::GroupedGemm(stream_, g));
  if (profiler_) profiler_->Mark(stream_, "moe.combine");
  kernels::MoeCombineArgs mc;
  mc.expert_out = moe_out_.data();
  mc.rows = moe_rows_.data();
  mc.weights = moe_weights_.data();
  mc.out = tmp_.data();
  mc.num_tokens = t;
  mc.top_k = top_k;
  mc.hidden = hidden;
  return kernels::MoeCombine(stream_, mc);
}

absl::Status CudaLlamaModel::EnqueueFast(const StepDims& d, DeviceKvCache* cache) {
  namespace gpu = kernels::gpu;
  const ModelConfig& c = config_;
  const int64_t t = d.tokens, n = d.logits;
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const int64_t q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  const int64_t qkv_dim = q_dim + 2 * kv_dim;
  const StepLayout l = Layout(d);
  const int32_t* in = step_dev_.data();
  const float eps = c.rms_norm_eps;

  if (profiler_) profiler_->Mark(stream_, "embedding+norm");
  CUDA_RETURN_IF_ERROR(gpu::EmbeddingBf16(stream_, in + l.token_ids, embed_.bf16.data(), x_.data(),
                                          t, hidden, c.embedding_multiplier));
  CUDA_RETURN_IF_ERROR(gpu::RmsNormToBf16(stream_, x_.data(), layers_[0].input_norm.f32.data(),
                                          hb_.data(), t, hidden, eps));
  for (int64_t li = 0; li < c.num_layers; ++li) {
    const Layer& ly = layers_[li];
    // Attention: qkv = h @ Wqkv^T; rope + cache write; attention; x += o_proj(.) * residual_mult.
    if (profiler_) profiler_->Mark(stream_, "qkv_gemm");
    RETURN_IF_ERROR(gemm_->Run(stream_, hb_.data(), ly.wqkv.bf16.data(), qkv_.data(),
                                      false, t, qkv_dim, hidden));
    if (!ly.bqkv.empty()) {
      CUDA_RETURN_IF_ERROR(gpu::AddBias(stream_, qkv_.data(), ly.bqkv.f32.data(), t, qkv_dim));
    }
    if (profiler_) profiler_->Mark(stream_, "rope+cache_write");
    gpu::RopeQkvArgs rope;
    rope.qkv = qkv_.data();
    rope.positions = in + l.positions;
    rope.slot_mapping = in + l.slots;
    rope.inv_freq = inv_freq_.data();
    rope.q = qb_.data();
    rope.k_cache = cache->k_bf16(li);
    rope.v_cache = cache->v_bf16(li);
    rope.num_tokens = t;
    rope.num_heads = c.num_heads;
    rope.num_kv_heads = c.num_kv_heads;
    rope.head_dim = c.head_dim;
    CUDA_RETURN_IF_ERROR(gpu::RopeQkvToCache(stream_, rope));
    if (profiler_) profiler_->Mark(stream_, "attention");
    gpu::AttentionArgs at;
    at.q = qb_.data();
    at.k_cache = cache->k_bf16(li);
    at.v_cache = cache->v_bf16(li);
    at.block_tables = in + l.block_tables;
    at.q_start = in + l.q_start;
    at.kv_len = in + l.kv_len;
    at.tile_seq = in + l.tile_seq;
    at.tile_row = in + l.tile_row;
    at.out = hb_.data();
    at.partials = partials_.data();
    at.num_tiles = d.tiles;
    at.num_rows = t;
    at.num_heads = c.num_heads;
    at.num_kv_heads = c.num_kv_heads;
    at.head_dim = c.head_dim;
    at.block_size = cache->block_size();
    at.max_blocks_per_seq = d.width;
    at.num_splits = d.num_splits;
    at.kv_chunk = d.kv_chunk;
    at.scale = c.attention_scale;
    CUDA_RETURN_IF_ERROR(gpu::Attention(stream_, at));
    if (profiler_) profiler_->Mark(stream_, "o_proj_gemm");
    RETURN_IF_ERROR(gemm_->Run(stream_, hb_.data(), ly.wo.bf16.data(), tmp_.data(),
                                      false, t, hidden, q_dim));
    if (!ly.bo.empty()) {
      CUDA_RETURN_IF_ERROR(gpu::AddBias(stream_, tmp_.data(), ly.bo.f32.data(), t, hidden));
    }
    if (profiler_) profiler_->Mark(stream_, "add+rmsnorm");
    CUDA_RETURN_IF_ERROR(gpu::AddRmsNormToBf16(stream_, x_.data(), tmp_.data(),
                                               ly.post_norm.f32.data(), hb_.data(), t, hidden, eps,
                                               c.residual_multiplier));
    // MLP: dense (fused gate/up GEMM, SiLU·mul, down) or the mixture of experts, into tmp_.
    if (c.num_experts > 0) {
      RETURN_IF_ERROR(MoeFast(ly, t));
    } else {
      if (profiler_) profiler_->Mark(stream_, "gate_up_gemm");
      if (ly.b_gate_up.empty()) {
        RETURN_IF_ERROR(gemm_->Run(stream_, hb_.data(), ly.w_gate_up.bf16.data(),
                                          gate_up_bf16_.data(), true, t, 2 * inter, hidden));
      } else {
        // The bias is added in fp32 before the one rounding to bf16.
        RETURN_IF_ERROR(gemm_->Run(stream_, hb_.data(), ly.w_gate_up.bf16.data(),
                                          gate_up_.data(), false, t, 2 * inter, hidden));
        CUDA_RETURN_IF_ERROR(
            gpu::AddBias(stream_, gate_up_.data(), ly.b_gate_up.f32.data(), t, 2 * inter));
        RETURN_IF_ERROR(
            kernels::Fp32ToBf16(stream_, gate_up_.data(), gate_up_bf16_.data(), t * 2 * inter));
      }
      if (profiler_) profiler_->Mark(stream_, "silu_mul");
      CUDA_RETURN_IF_ERROR(
          gpu::SiluMulFusedToBf16(stream_, gate_up_bf16_.data(), hb_.data(), t, inter));
      if (profiler_) profiler_->Mark(stream_, "down_gemm");
      RETURN_IF_ERROR(gemm_->Run(stream_, hb_.data(), ly.w_down.bf16.data(),
                                        tmp_.data(), false, t, hidden, inter));
      if (!ly.b_down.empty()) {
        CUDA_RETURN_IF_ERROR(gpu::AddBias(stream_, tmp_.data(), ly.b_down.f32.data(), t, hidden));
      }
    }
    if (profiler_) profiler_->Mark(stream_, "add+rmsnorm");
    if (li + 1 < c.num_layers) {
      // The residual add, fused into the next layer's input norm.
      CUDA_RETURN_IF_ERROR(gpu::AddRmsNormToBf16(stream_, x_.data(), tmp_.data(),
                                                 layers_[li + 1].input_norm.f32.data(), hb_.data(),
                                                 t, hidden, eps, c.residual_multiplier));
    } else {
      CUDA_RETURN_IF_ERROR(gpu::Add(
          stream_, {x_.data(), tmp_.data(), x_.data(), t * hidden, c.residual_multiplier}));
    }
  }
  if (n == 0) return absl::OkStatus();
  if (profiler_) profiler_->Mark(stream_, "lm_head");
  // Only the rows whose logits are wanted: gather, final norm, lm_head.
  CUDA_RETURN_IF_ERROR(
      gpu::Embedding(stream_, {in + l.logit_rows, x_.data(), tmp_.data(), n, t, hidden, 1.0f}));
  CUDA_RETURN_IF_ERROR(
      gpu::RmsNormToBf16(stream_, tmp_.data(), final_norm_.f32.data(), hb_.data(), n, hidden, eps));
  const Weight& head = lm_head_.empty() ? embed_ : lm_head_;
  RETURN_IF_ERROR(gemm_->Run(stream_, hb_.data(), head.bf16.data(), logits_.data(),
                                    false, n, c.vocab_size, hidden));
  if (c.logits_scaling != 1.0f) {
    CUDA_RETURN_IF_ERROR(
        gpu::DivideScalar(stream_, logits_.data(), n * c.vocab_size, c.logits_scaling));
  }
  return absl::OkStatus();
}

absl::Status CudaLlamaModel::ForwardFast(const ForwardBatch& batch,
                                         const std::vector<SampleRow>* rows, DeviceKvCache* cache,
                                         std::vector<float>* logits, std::vector<int32_t>* tokens) {
  const ModelConfig& c = config_;
  const int64_t t = batch.num_tokens();
  const int64_t n = static_cast<int64_t>(batch.logit_rows.size());
  RETURN_IF_ERROR(ValidateBatch(batch, c.vocab_size));
  if (rows != nullptr && static_cast<int64_t>(rows->size()) != n) {
    return absl::InvalidArgumentError("one sampling row per logit row is needed");
  }
  const auto host_start = std::chrono::steady_clock::now();
  int64_t max_context = 0;
  ASSIGN_OR_RETURN(StepDims dims, FastDims(batch, &max_context));

  // A decode batch (one token per sequence, every sequence sampled in order) replays a graph.
  // (t == seqs == tiles: every sequence has exactly one token.)
  bool graph = use_graphs_ && tokens != nullptr && t == dims.seqs && dims.tiles == t && n == t &&
               dims.seqs <= graph_max_seqs_ && dims.width <= cap_.width &&
               (graph_cache_ == nullptr || graph_cache_ == cache);
  for (int64_t i = 0; graph && i < n; ++i) graph = batch.logit_rows[i] == i;
  StepDims d = dims;
  if (graph) {
    const int64_t bucket = GraphBucket(dims.seqs);
    int64_t width = 16;  // block-table width classes: powers of two, capped at the capacity
    while (width < dims.width) width *= 2;
    width = std::min(width, cap_.width);
    d = StepDims{bucket, bucket, bucket, bucket, width, 1, 0};
    ChooseSplits(width * cache->block_size(), &d);
    if (profiler_) profiler_->Mark(stream_, "upload");
    RETURN_IF_ERROR(UploadStep(batch, rows, d, /*padded=*/true));
    auto it = graphs_.find({bucket, width});
    if (it == graphs_.end()) {
      graph_cache_ = cache;
      cudaGraph_t g = nullptr;
      CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      if (profiler_) profiler_->set_capturing(true);
      const absl::Status enqueued = EnqueueFast(d, cache);
      if (profiler_) profiler_->set_capturing(false);
      const cudaError_t ended = cudaStreamEndCapture(stream_, &g);
      RETURN_IF_ERROR(enqueued);
      CUDA_RETURN_IF_ERROR(ended);
      cudaGraphExec_t exec = nullptr;
      const cudaError_t inst = cudaGraphInstantiate(&exec, g, 0);
      cudaGraphDestroy(g);
      CUDA_RETURN_IF_ERROR(inst);
      it = graphs_.emplace(std::make_pair(bucket, width), exec).first;
    }
    if (profiler_) profiler_->Mark(stream_, "graph_replay");
    CUDA_RETURN_IF_ERROR(cudaGraphLaunch(it->second, stream_));
  } else {
    RETURN_IF_ERROR(ReserveFast(t, d.seqs, d.tiles, d.width, n));
    ChooseSplits(max_context, &d);
    if (profiler_) profiler_->Mark(stream_, "upload");
    RETURN_IF_ERROR(UploadStep(batch, rows, d, /*padded=*/false));
    RETURN_IF_ERROR(EnqueueFast(d, cache));
  }

  if (tokens != nullptr && n > 0) {
    // Sampling reads its parameters from the step buffer, under the layout the step used.
    const StepLayout l = Layout(d);
    const int32_t* in = step_dev_.data();
    kernels::SampleArgs a;
    a.logits = logits_.data();
    a.temperature = reinterpret_cast<const float*>(in + l.temperature);
    a.top_k = in + l.top_k;
    a.top_p = reinterpret_cast<const float*>(in + l.top_p);
    a.seed = reinterpret_cast<const uint64_t*>(in + l.seed);
    a.step = reinterpret_cast<const uint64_t*>(in + l.step);
    a.tokens = sampled_.data();
    a.num_rows = n;
    a.vocab = c.vocab_size;
    if (profiler_) profiler_->Mark(stream_, "sample");
    RETURN_IF_ERROR(SampleOnDevice(stream_, a, *rows));
    if (profiler_) profiler_->Mark(stream_, "download");
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(tokens_host_, sampled_.data(), sizeof(int32_t) * n,
                                         cudaMemcpyDeviceToHost, stream_));
  }
  if (logits != nullptr) {
    logits->resize(n * c.vocab_size);
    if (n > 0) {
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits->data(), logits_.data(),
                                           sizeof(float) * n * c.vocab_size, cudaMemcpyDeviceToHost,
                                           stream_));
    }
  }
  if (profiler_) profiler_->Mark(stream_, nullptr);
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  if (tokens != nullptr) tokens->assign(tokens_host_, tokens_host_ + n);
  if (profiler_) {
    const double host_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - host_start)
            .count();
    profiler_->Collect(graph            ? "decode.graph"
                       : t == dims.seqs ? "decode.eager"
                                        : "with_prefill",
                       host_ms);
  }
  return backend_->status();
}

absl::Status CudaLlamaModel::ForwardSample(const ForwardBatch& batch,
                                           const std::vector<SampleRow>& rows, DeviceKvCache* cache,
                                           std::vector<int32_t>* tokens) {
  if (cache == nullptr || cache->dtype() != dtype_) {
    return absl::InvalidArgumentError("CudaLlamaModel: no KV cache of the model's dtype");
  }
  if (dtype_ == WeightDType::kBfloat16) return ForwardFast(batch, &rows, cache, nullptr, tokens);
  // The exact mode: the fp32 forward, then the sampler on the device over its logits.
  const int64_t n = static_cast<int64_t>(batch.logit_rows.size());
  if (static_cast<int64_t>(rows.size()) != n) {
    return absl::InvalidArgumentError("one sampling row per logit row is needed");
  }
  RETURN_IF_ERROR(Forward(batch, cache, nullptr));
  tokens->assign(n, 0);
  if (n == 0) return absl::OkStatus();
  std::vector<float> temperature(n), top_p(n);
  std::vector<int32_t> top_k(n);
  std::vector<uint64_t> seed(n), step(n);
  for (int64_t i = 0; i < n; ++i) {
    temperature[i] = rows[i].temperature;
    top_k[i] = rows[i].top_k;
    top_p[i] = rows[i].top_p;
    seed[i] = rows[i].seed;
    step[i] = rows[i].step;
  }
  ASSIGN_OR_RETURN(auto d_temperature,
                   kernels::DeviceBuffer<float>::FromHost(temperature, stream_));
  ASSIGN_OR_RETURN(auto d_top_k, kernels::DeviceBuffer<int32_t>::FromHost(top_k, stream_));
  ASSIGN_OR_RETURN(auto d_top_p, kernels::DeviceBuffer<float>::FromHost(top_p, stream_));
  ASSIGN_OR_RETURN(auto d_seed, kernels::DeviceBuffer<uint64_t>::FromHost(seed, stream_));
  ASSIGN_OR_RETURN(auto d_step, kernels::DeviceBuffer<uint64_t>::FromHost(step, stream_));
  ASSIGN_OR_RETURN(auto d_tokens, kernels::DeviceBuffer<int32_t>::Allocate(n));
  kernels::SampleArgs a;
  a.logits = logits_.data();
  a.temperature = d_temperature.data();
  a.top_k = d_top_k.data();
  a.top_p = d_top_p.data();
  a.seed = d_seed.data();
  a.step = d_step.data();
  a.tokens = d_tokens.data();
  a.num_rows = n;
  a.vocab = config_.vocab_size;
  RETURN_IF_ERROR(SampleOnDevice(stream_, a, rows));
  return d_tokens.Download(tokens->data(), n, stream_);
}

}  // namespace dpinfer::engine
