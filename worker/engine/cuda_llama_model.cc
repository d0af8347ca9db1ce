// The GPU twin of llama_model.cc (see cuda_llama_model.h). The forward pass is the CPU model's op
// for op, in the same order and with the same family switches, so the two can be compared line by
// line; what differs is only where memory lives and that the linear layers may run in bf16.
#include "worker/engine/cuda_llama_model.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

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

// Copies a host vector into `buf` (growing it), after the work queued on `stream`; waits.
template <typename T>
absl::Status UploadVector(const std::vector<T>& host, kernels::DeviceBuffer<T>* buf,
                          cudaStream_t stream) {
  RETURN_IF_ERROR(Reserve(buf, std::max<int64_t>(1, static_cast<int64_t>(host.size()))));
  return buf->Upload(host, stream);
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceKvCache>> DeviceKvCache::Create(int64_t num_layers,
                                                                     int64_t num_blocks,
                                                                     int64_t block_size,
                                                                     int64_t num_kv_heads,
                                                                     int64_t head_dim) {
  std::unique_ptr<DeviceKvCache> cache(new DeviceKvCache());
  cache->num_blocks_ = num_blocks;
  cache->block_size_ = block_size;
  const int64_t n = num_blocks * block_size * num_kv_heads * head_dim;
  for (int64_t i = 0; i < num_layers; ++i) {
    for (auto* list : {&cache->k_, &cache->v_}) {
      ASSIGN_OR_RETURN(kernels::DeviceBuffer<float> buf, kernels::DeviceBuffer<float>::Allocate(n));
      // Zeroed so a slot read before it is written holds no stale NaN from earlier allocations.
      if (n > 0) CUDA_RETURN_IF_ERROR(cudaMemset(buf.data(), 0, sizeof(float) * n));
      list->push_back(std::move(buf));
    }
  }
  return cache;
}

CudaLlamaModel::CudaLlamaModel(const ModelConfig& config, WeightDType dtype,
                               kernels::CudaBackend* backend)
    : config_(config),
      dtype_(dtype),
      backend_(backend),
      stream_(backend->stream()),
      host_ops_(kernels::NewCpuBackend(1)) {}

absl::Status CudaLlamaModel::Allocate(Weight* w, int64_t numel, bool fp32) {
  if (fp32 || dtype_ == WeightDType::kFloat32) {
    ASSIGN_OR_RETURN(w->f32, kernels::DeviceBuffer<float>::Allocate(numel));
  } else {
    ASSIGN_OR_RETURN(w->bf16, kernels::DeviceBuffer<__nv_bfloat16>::Allocate(numel));
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

absl::Status CudaLlamaModel::Read(const Checkpoint& ckpt, const std::string& name,
                                  const std::vector<int64_t>& shape, Weight* w, bool fp32) {
  std::vector<float> host;
  RETURN_IF_ERROR(ckpt.ReadF32(name, shape, &host));
  RETURN_IF_ERROR(Allocate(w, static_cast<int64_t>(host.size()), fp32));
  return Put(host, w, 0);
}

absl::Status CudaLlamaModel::LoadExperts(const Checkpoint& ckpt, const std::string& p, Layer* l) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t e_count = c.num_experts;
  if (c.family == ModelFamily::kGraniteMoe) {
    // input_linear already holds [gate; up] rows per expert, the fused layout kept here.
    RETURN_IF_ERROR(Read(ckpt, p + "block_sparse_moe.router.layer.weight", {e_count, hidden},
                         &l->router, /*fp32=*/true));
    RETURN_IF_ERROR(Read(ckpt, p + "block_sparse_moe.input_linear.weight",
                         {e_count, 2 * inter, hidden}, &l->expert_gate_up));
    return Read(ckpt, p + "block_sparse_moe.output_linear.weight", {e_count, hidden, inter},
                &l->expert_down);
  }
  // Mixtral: per-expert w1 (gate), w3 (up), w2 (down), uploaded into the fused layout one tensor
  // at a time.
  RETURN_IF_ERROR(Read(ckpt, p + "block_sparse_moe.gate.weight", {e_count, hidden}, &l->router,
                       /*fp32=*/true));
  const int64_t mat = inter * hidden;
  RETURN_IF_ERROR(Allocate(&l->expert_gate_up, e_count * 2 * mat, false));
  RETURN_IF_ERROR(Allocate(&l->expert_down, e_count * mat, false));
  std::vector<float> w;
  for (int64_t e = 0; e < e_count; ++e) {
    const std::string ep = absl::StrCat(p, "block_sparse_moe.experts.", e, ".");
    RETURN_IF_ERROR(ckpt.ReadF32(ep + "w1.weight", {inter, hidden}, &w));
    RETURN_IF_ERROR(Put(w, &l->expert_gate_up, e * 2 * mat));
    RETURN_IF_ERROR(ckpt.ReadF32(ep + "w3.weight", {inter, hidden}, &w));
    RETURN_IF_ERROR(Put(w, &l->expert_gate_up, e * 2 * mat + mat));
    RETURN_IF_ERROR(ckpt.ReadF32(ep + "w2.weight", {hidden, inter}, &w));
    RETURN_IF_ERROR(Put(w, &l->expert_down, e * mat));
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
  RETURN_IF_ERROR(m->Read(*ckpt, "model.embed_tokens.weight", {config.vocab_size, hidden},
                          &m->embed_, /*fp32=*/true));
  m->layers_.resize(config.num_layers);
  for (int64_t i = 0; i < config.num_layers; ++i) {
    Layer& l = m->layers_[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    RETURN_IF_ERROR(m->Read(*ckpt, p + "input_layernorm.weight", {hidden}, &l.input_norm, true));
    RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.q_proj.weight", {q_dim, hidden}, &l.wq));
    RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.k_proj.weight", {kv_dim, hidden}, &l.wk));
    RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.v_proj.weight", {kv_dim, hidden}, &l.wv));
    RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.o_proj.weight", {hidden, q_dim}, &l.wo));
    if (config.attention_bias) {
      RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.q_proj.bias", {q_dim}, &l.bq, true));
      RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.k_proj.bias", {kv_dim}, &l.bk, true));
      RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.v_proj.bias", {kv_dim}, &l.bv, true));
    }
    if (config.o_proj_bias) {
      RETURN_IF_ERROR(m->Read(*ckpt, p + "self_attn.o_proj.bias", {hidden}, &l.bo, true));
    }
    RETURN_IF_ERROR(
        m->Read(*ckpt, p + "post_attention_layernorm.weight", {hidden}, &l.post_norm, true));
    if (config.num_experts > 0) {
      RETURN_IF_ERROR(m->LoadExperts(*ckpt, p, &l));
      continue;
    }
    RETURN_IF_ERROR(m->Read(*ckpt, p + "mlp.gate_proj.weight", {inter, hidden}, &l.w_gate));
    RETURN_IF_ERROR(m->Read(*ckpt, p + "mlp.up_proj.weight", {inter, hidden}, &l.w_up));
    RETURN_IF_ERROR(m->Read(*ckpt, p + "mlp.down_proj.weight", {hidden, inter}, &l.w_down));
    if (config.mlp_bias) {
      RETURN_IF_ERROR(m->Read(*ckpt, p + "mlp.gate_proj.bias", {inter}, &l.b_gate, true));
      RETURN_IF_ERROR(m->Read(*ckpt, p + "mlp.up_proj.bias", {inter}, &l.b_up, true));
      RETURN_IF_ERROR(m->Read(*ckpt, p + "mlp.down_proj.bias", {hidden}, &l.b_down, true));
    }
  }
  RETURN_IF_ERROR(m->Read(*ckpt, "model.norm.weight", {hidden}, &m->final_norm_, true));
  // As LlamaModel: the tie flag decides, a stored lm_head.weight of a tied model is never read.
  // Tied in bf16, the head is a bf16 copy of the (fp32) embedding table.
  if (!config.tie_word_embeddings) {
    RETURN_IF_ERROR(m->Read(*ckpt, "lm_head.weight", {config.vocab_size, hidden}, &m->lm_head_));
  } else if (dtype == WeightDType::kBfloat16) {
    RETURN_IF_ERROR(
        m->Read(*ckpt, "model.embed_tokens.weight", {config.vocab_size, hidden}, &m->lm_head_));
  }
  ASSIGN_OR_RETURN(m->inv_freq_,
                   kernels::DeviceBuffer<float>::FromHost(RopeInvFreq(config), m->stream_));
  m->staging_ = kernels::DeviceBuffer<float>();  // only needed while loading
  RETURN_IF_ERROR(backend->status());
  return m;
}

absl::Status CudaLlamaModel::Linear(const float* x, const Weight& w, int64_t offset,
                                    const Weight* bias, float* y, int64_t m, int64_t n, int64_t k) {
  const float* b = bias != nullptr && !bias->empty() ? bias->f32.data() : nullptr;
  if (w.bf16.size() == 0) {
    kernels::LinearArgs a;
    a.x = x;
    a.w = w.f32.data() + offset;
    a.bias = b;
    a.y = y;
    a.m = m;
    a.n = n;
    a.k = k;
    return kernels::LinearFp32(stream_, backend_->cublas(), a);
  }
  // bf16: the input rounded to bf16 once, tensor-core GEMM with fp32 accumulation and output.
  if (m * k > x_bf16_.size()) return absl::InternalError("CudaLlamaModel: bf16 scratch too small");
  RETURN_IF_ERROR(kernels::Fp32ToBf16(stream_, x, x_bf16_.data(), m * k));
  RETURN_IF_ERROR(kernels::GemmBf16(stream_, backend_->cublas(), x_bf16_.data(),
                                    w.bf16.data() + offset, y, /*y_bf16=*/false, m, n, k));
  if (b != nullptr) CUDA_RETURN_IF_ERROR(kernels::gpu::AddBias(stream_, y, b, m, n));
  return absl::OkStatus();
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
  const ModelConfig& c = config_;
  const int64_t t = batch.num_tokens();
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t q_dim = c.num_heads * c.head_dim;
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  const int64_t n = static_cast<int64_t>(batch.logit_rows.size());
  if (t <= 0 || static_cast<int64_t>(batch.positions.size()) != t ||
      static_cast<int64_t>(batch.token_seq.size()) != t ||
      static_cast<int64_t>(batch.slot_mapping.size()) != t) {
    return absl::InvalidArgumentError(
        "ForwardBatch: token_ids, positions, token_seq and "
        "slot_mapping must be non-empty and of one length");
  }
  // The kernels do not check ids and rows: do it here, where an error can still be returned.
  for (int32_t id : batch.token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " outside the vocabulary"));
    }
  }
  for (int32_t row : batch.logit_rows) {
    if (row < 0 || row >= t) {
      return absl::InvalidArgumentError(absl::StrCat("logit row ", row, " outside the batch"));
    }
  }

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
  if (dtype_ == WeightDType::kBfloat16) {
    RETURN_IF_ERROR(Reserve(&x_bf16_, rows * std::max({hidden, q_dim, inter})));
  }
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

}  // namespace dpinfer::engine
