// The Llama-shaped forward pass over the backend ops (see llama_model.h). Family differences are
// data, not code paths: biases are empty vectors when absent, the scalings are 1 where a family
// has none, and only the MLP switches between dense and mixture of experts.
#include "worker/engine/llama_model.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace dpinfer::engine {

std::vector<float> RopeInvFreq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<float> inv(half);
  // _compute_default_rope_parameters: 1 / base^(arange(0, d, 2) / d), all fp32.
  for (int64_t i = 0; i < half; ++i) {
    inv[i] =
        1.0f / std::pow(c.rope_theta, static_cast<float>(2 * i) / static_cast<float>(c.head_dim));
  }
  const float factor = static_cast<float>(c.rope_factor);
  if (c.rope_type == "linear") {
    for (float& f : inv) f /= factor;
  } else if (c.rope_type == "llama3") {
    // _compute_llama3_parameters, step by step in the same fp32 operations: long wavelengths are
    // divided by factor, short ones kept, the band between interpolated.
    const double old_ctx = static_cast<double>(c.rope_original_max_position_embeddings);
    const float low_freq_wavelen = static_cast<float>(old_ctx / c.rope_low_freq_factor);
    const float high_freq_wavelen = static_cast<float>(old_ctx / c.rope_high_freq_factor);
    const float low = static_cast<float>(c.rope_low_freq_factor);
    const float band = static_cast<float>(c.rope_high_freq_factor - c.rope_low_freq_factor);
    for (float& f : inv) {
      const float wavelen = static_cast<float>(2 * std::numbers::pi) / f;
      float llama = wavelen > low_freq_wavelen ? f / factor : f;
      const float smooth = (static_cast<float>(old_ctx) / wavelen - low) / band;
      const float smoothed = (1.0f - smooth) * llama / factor + smooth * llama;
      const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      if (medium) llama = smoothed;
      f = llama;
    }
  }
  return inv;
}

std::vector<std::vector<std::pair<int64_t, float>>> RouteTokens(const ModelConfig& c,
                                                                const float* router_logits,
                                                                int64_t t,
                                                                kernels::Backend* host_ops) {
  const int64_t num_e = c.num_experts;
  const int64_t top_k = c.num_experts_per_tok;
  std::vector<std::vector<std::pair<int64_t, float>>> expert_tokens(num_e);
  std::vector<float> probs(num_e);
  std::vector<int64_t> order(num_e);
  std::vector<float> w(top_k);
  for (int64_t tok = 0; tok < t; ++tok) {
    const float* logits = router_logits + tok * num_e;
    // Mixtral ranks softmax probabilities, GraniteMoE raw logits: the same order either way,
    // but the selected values differ.
    if (c.family == ModelFamily::kMixtral) {
      host_ops->Softmax({logits, probs.data(), 1, num_e});
    } else {
      std::copy(logits, logits + num_e, probs.begin());
    }
    // torch.topk: largest first; ties go to the lower index.
    for (int64_t e = 0; e < num_e; ++e) order[e] = e;
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int64_t a, int64_t b) {
      return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
    });
    for (int64_t j = 0; j < top_k; ++j) w[j] = probs[order[j]];
    if (c.family == ModelFamily::kMixtral) {
      // routing_weights /= routing_weights.sum(): the top-k probabilities renormalised.
      float sum = 0.0f;
      for (int64_t j = 0; j < top_k; ++j) sum += w[j];
      for (int64_t j = 0; j < top_k; ++j) w[j] /= sum;
    } else {
      // GraniteMoeTopKGating: softmax over the k selected logits.
      host_ops->Softmax({w.data(), w.data(), 1, top_k});
    }
    for (int64_t j = 0; j < top_k; ++j) expert_tokens[order[j]].push_back({tok, w[j]});
  }
  return expert_tokens;
}

absl::Status LlamaModel::LoadExperts(const Checkpoint& ckpt, const std::string& p,
                                     const ModelConfig& c, Layer* l) {
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t e_count = c.num_experts;
  if (c.family == ModelFamily::kGraniteMoe) {
    // GraniteMoeParallelExperts: input_linear holds [gate; up] rows per expert, already the
    // layout kept here.
    RETURN_IF_ERROR(
        ckpt.ReadF32(p + "block_sparse_moe.router.layer.weight", {e_count, hidden}, &l->router));
    RETURN_IF_ERROR(ckpt.ReadF32(p + "block_sparse_moe.input_linear.weight",
                                 {e_count, 2 * inter, hidden}, &l->expert_gate_up));
    RETURN_IF_ERROR(ckpt.ReadF32(p + "block_sparse_moe.output_linear.weight",
                                 {e_count, hidden, inter}, &l->expert_down));
    return absl::OkStatus();
  }
  // Mixtral: per-expert w1 (gate), w3 (up), w2 (down), copied into the fused layout one expert
  // at a time so loading holds at most one expert's extra copy.
  RETURN_IF_ERROR(ckpt.ReadF32(p + "block_sparse_moe.gate.weight", {e_count, hidden}, &l->router));
  const int64_t mat = inter * hidden;
  l->expert_gate_up.resize(e_count * 2 * mat);
  l->expert_down.resize(e_count * mat);
  std::vector<float> w;
  for (int64_t e = 0; e < e_count; ++e) {
    const std::string ep = absl::StrCat(p, "block_sparse_moe.experts.", e, ".");
    RETURN_IF_ERROR(ckpt.ReadF32(ep + "w1.weight", {inter, hidden}, &w));
    std::copy(w.begin(), w.end(), l->expert_gate_up.begin() + e * 2 * mat);
    RETURN_IF_ERROR(ckpt.ReadF32(ep + "w3.weight", {inter, hidden}, &w));
    std::copy(w.begin(), w.end(), l->expert_gate_up.begin() + e * 2 * mat + mat);
    RETURN_IF_ERROR(ckpt.ReadF32(ep + "w2.weight", {hidden, inter}, &w));
    std::copy(w.begin(), w.end(), l->expert_down.begin() + e * mat);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& model_dir,
                                                             const ModelConfig& config,
                                                             kernels::Backend* backend) {
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(model_dir));
  std::unique_ptr<LlamaModel> m(new LlamaModel(config, backend));
  if (m->config_.attention_scale == 0.0f) {
    m->config_.attention_scale = 1.0f / std::sqrt(static_cast<float>(config.head_dim));
  }
  const int64_t hidden = config.hidden_size;
  const int64_t inter = config.intermediate_size;
  const int64_t q_dim = config.num_heads * config.head_dim;
  const int64_t kv_dim = config.num_kv_heads * config.head_dim;
  RETURN_IF_ERROR(
      ckpt->ReadF32("model.embed_tokens.weight", {config.vocab_size, hidden}, &m->embed_));
  m->layers_.resize(config.num_layers);
  for (int64_t i = 0; i < config.num_layers; ++i) {
    Layer& l = m->layers_[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    RETURN_IF_ERROR(ckpt->ReadF32(p + "input_layernorm.weight", {hidden}, &l.input_norm));
    RETURN_IF_ERROR(ckpt->ReadF32(p + "self_attn.q_proj.weight", {q_dim, hidden}, &l.wq));
    RETURN_IF_ERROR(ckpt->ReadF32(p + "self_attn.k_proj.weight", {kv_dim, hidden}, &l.wk));
    RETURN_IF_ERROR(ckpt->ReadF32(p + "self_attn.v_proj.weight", {kv_dim, hidden}, &l.wv));
    RETURN_IF_ERROR(ckpt->ReadF32(p + "self_attn.o_proj.weight", {hidden, q_dim}, &l.wo));
    if (config.attention_bias) {
      RETURN_IF_ERROR(ckpt->ReadF32(p + "self_attn.q_proj.bias", {q_dim}, &l.bq));
      RETURN_IF_ERROR(ckpt->ReadF32(p + "self_attn.k_proj.bias", {kv_dim}, &l.bk));
      RETURN_IF_ERROR(ckpt->ReadF32(p + "self_attn.v_proj.bias", {kv_dim}, &l.bv));
    }
    if (config.o_proj_bias) {
      RETURN_IF_ERROR(ckpt->ReadF32(p + "self_attn.o_proj.bias", {hidden}, &l.bo));
    }
    RETURN_IF_ERROR(ckpt->ReadF32(p + "post_attention_layernorm.weight", {hidden}, &l.post_norm));
    if (config.num_experts > 0) {
      RETURN_IF_ERROR(LoadExperts(*ckpt, p, config, &l));
      continue;
    }
    RETURN_IF_ERROR(ckpt->ReadF32(p + "mlp.gate_proj.weight", {inter, hidden}, &l.w_gate));
    RETURN_IF_ERROR(ckpt->ReadF32(p + "mlp.up_proj.weight", {inter, hidden}, &l.w_up));
    RETURN_IF_ERROR(ckpt->ReadF32(p + "mlp.down_proj.weight", {hidden, inter}, &l.w_down));
    if (config.mlp_bias) {
      RETURN_IF_ERROR(ckpt->ReadF32(p + "mlp.gate_proj.bias", {inter}, &l.b_gate));
      RETURN_IF_ERROR(ckpt->ReadF32(p + "mlp.up_proj.bias", {inter}, &l.b_up));
      RETURN_IF_ERROR(ckpt->ReadF32(p + "mlp.down_proj.bias", {hidden}, &l.b_down));
    }
  }
  RETURN_IF_ERROR(ckpt->ReadF32("model.norm.weight", {hidden}, &m->final_norm_));
  // Some tied checkpoints (PowerMoE-3b) still store lm_head.weight; the flag decides, as in HF,
  // and the stored copy is never read.
  if (!config.tie_word_embeddings) {
    RETURN_IF_ERROR(ckpt->ReadF32("lm_head.weight", {config.vocab_size, hidden}, &m->lm_head_));
  }
  m->inv_freq_ = RopeInvFreq(config);
  return m;
}

void LlamaModel::LinearOp(const float* x, const float* w, const float* b, float* y, int64_t m,
                          int64_t n, int64_t k) {
  kernels::LinearArgs a;
  a.x = x;
  a.w = w;
  a.bias = b;
  a.y = y;
  a.m = m;
  a.n = n;
  a.k = k;
  backend_->Linear(a);
}

void LlamaModel::MoeOp(const Layer& l, const float* h, float* out, int64_t t) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t num_e = c.num_experts;
  router_logits_.resize(t * num_e);
  moe_in_.resize(t * hidden);
  moe_out_.resize(t * hidden);
  LinearOp(h, l.router.data(), nullptr, router_logits_.data(), t, num_e, hidden);

  // Routing, on the host: the [t, num_experts] logits are tiny next to the expert GEMMs.
  const auto expert_tokens = RouteTokens(c, router_logits_.data(), t, backend_);

  // Each expert runs once over the rows routed to it; outputs are added in ascending expert
  // order, as transformers' index_add loop does, so a token's sum never depends on the batch.
  std::fill(out, out + t * hidden, 0.0f);
  const int64_t mat = inter * hidden;
  for (int64_t e = 0; e < num_e; ++e) {
    const auto& rows = expert_tokens[e];
    const int64_t m = static_cast<int64_t>(rows.size());
    if (m == 0) continue;
    for (int64_t r = 0; r < m; ++r) {
      std::copy(h + rows[r].first * hidden, h + (rows[r].first + 1) * hidden,
                moe_in_.begin() + r * hidden);
    }
    const float* gate_up = l.expert_gate_up.data() + e * 2 * mat;
    LinearOp(moe_in_.data(), gate_up, nullptr, gate_.data(), m, inter, hidden);
    LinearOp(moe_in_.data(), gate_up + mat, nullptr, up_.data(), m, inter, hidden);
    backend_->SiluMul({gate_.data(), up_.data(), gate_.data(), m, inter});
    LinearOp(gate_.data(), l.expert_down.data() + e * mat, nullptr, moe_out_.data(), m, hidden,
             inter);
    for (int64_t r = 0; r < m; ++r) {
      float* dst = out + rows[r].first * hidden;
      const float* src = moe_out_.data() + r * hidden;
      const float weight = rows[r].second;
      for (int64_t d = 0; d < hidden; ++d) dst[d] += src[d] * weight;
    }
  }
}

void LlamaModel::Forward(const ForwardBatch& batch, KvCache* cache, std::vector<float>* logits) {
  const ModelConfig& c = config_;
  const int64_t t = batch.num_tokens();
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t q_dim = c.num_heads * c.head_dim;
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  CHECK(t > 0 && static_cast<int64_t>(batch.positions.size()) == t);
  x_.resize(t * hidden);
  h_.resize(t * hidden);
  tmp_.resize(t * hidden);
  q_.resize(t * q_dim);
  attn_.resize(t * q_dim);
  k_.resize(t * kv_dim);
  v_.resize(t * kv_dim);
  gate_.resize(t * inter);
  up_.resize(t * inter);

  backend_->Embedding({batch.token_ids.data(), embed_.data(), x_.data(), t, c.vocab_size, hidden,
                       c.embedding_multiplier});
  for (int64_t li = 0; li < c.num_layers; ++li) {
    Layer& l = layers_[li];
    // Attention block: h = norm(x); x += o_proj(attn(rope(q), rope(k), v)) * residual_mult.
    backend_->RmsNorm({x_.data(), l.input_norm.data(), h_.data(), t, hidden, c.rms_norm_eps});
    LinearOp(h_.data(), l.wq, l.bq, q_.data(), t, q_dim, hidden);
    LinearOp(h_.data(), l.wk, l.bk, k_.data(), t, kv_dim, hidden);
    LinearOp(h_.data(), l.wv, l.bv, v_.data(), t, kv_dim, hidden);
    kernels::RopeArgs rope;
    rope.q = q_.data();
    rope.k = k_.data();
    rope.positions = batch.positions.data();
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
    cw.slot_mapping = batch.slot_mapping.data();
    cw.num_tokens = t;
    cw.num_kv_heads = c.num_kv_heads;
    cw.head_dim = c.head_dim;
    backend_->CacheWrite(cw);
    kernels::PagedAttentionArgs pa;
    pa.q = q_.data();
    pa.k_cache = cache->k(li);
    pa.v_cache = cache->v(li);
    pa.block_tables = batch.block_tables.data();
    pa.token_seq = batch.token_seq.data();
    pa.positions = batch.positions.data();
    pa.out = attn_.data();
    pa.num_tokens = t;
    pa.num_heads = c.num_heads;
    pa.num_kv_heads = c.num_kv_heads;
    pa.head_dim = c.head_dim;
    pa.block_size = cache->block_size();
    pa.max_blocks_per_seq = batch.max_blocks_per_seq;
    pa.scale = c.attention_scale;
    backend_->PagedAttention(pa);
    LinearOp(attn_.data(), l.wo, l.bo, tmp_.data(), t, hidden, q_dim);
    backend_->Add({x_.data(), tmp_.data(), x_.data(), t * hidden, c.residual_multiplier});
    // MLP block: h = norm(x); x += mlp(h) * residual_mult, mlp dense (down(silu(gate(h)) * up(h)))
    // or a mixture of such experts.
    backend_->RmsNorm({x_.data(), l.post_norm.data(), h_.data(), t, hidden, c.rms_norm_eps});
    if (c.num_experts > 0) {
      MoeOp(l, h_.data(), tmp_.data(), t);
    } else {
      LinearOp(h_.data(), l.w_gate, l.b_gate, gate_.data(), t, inter, hidden);
      LinearOp(h_.data(), l.w_up, l.b_up, up_.data(), t, inter, hidden);
      backend_->SiluMul({gate_.data(), up_.data(), gate_.data(), t, inter});
      LinearOp(gate_.data(), l.w_down, l.b_down, tmp_.data(), t, hidden, inter);
    }
    backend_->Add({x_.data(), tmp_.data(), x_.data(), t * hidden, c.residual_multiplier});
  }
  // Only the rows that will be sampled go through the final norm and the (large) lm_head.
  const int64_t n = static_cast<int64_t>(batch.logit_rows.size());
  logits->resize(n * c.vocab_size);
  if (n == 0) return;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t row = batch.logit_rows[i];
    CHECK(row >= 0 && row < t);
    std::copy(x_.begin() + row * hidden, x_.begin() + (row + 1) * hidden,
              tmp_.begin() + i * hidden);
  }
  backend_->RmsNorm({tmp_.data(), final_norm_.data(), h_.data(), n, hidden, c.rms_norm_eps});
  const std::vector<float>& head = lm_head_.empty() ? embed_ : lm_head_;
  LinearOp(h_.data(), head, {}, logits->data(), n, c.vocab_size, hidden);
  // GraniteMoE: logits / logits_scaling (a division, as HF does it).
  if (c.logits_scaling != 1.0f) {
    for (float& v : *logits) v /= c.logits_scaling;
  }
}

int64_t LlamaModel::weight_bytes() const {
  size_t n = embed_.size() + final_norm_.size() + lm_head_.size();
  for (const Layer& l : layers_) {
    for (const std::vector<float>* v :
         {&l.input_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv, &l.bo, &l.post_norm,
          &l.w_gate, &l.w_up, &l.w_down, &l.b_gate, &l.b_up, &l.b_down, &l.router,
          &l.expert_gate_up, &l.expert_down}) {
      n += v->size();
    }
  }
  return static_cast<int64_t>(n * sizeof(float));
}

}  // namespace dpinfer::engine
