// Llama forward pass over the backend ops (see llama_model.h).
#include "worker/engine/llama_model.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/safetensors.h"
#include "common/status.h"

namespace dpinfer::engine {

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& model_dir,
                                                             const ModelConfig& config,
                                                             kernels::Backend* backend) {
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(model_dir));
  std::unique_ptr<LlamaModel> m(new LlamaModel(config, backend));
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
      // Llama's o_proj shares the attention_bias flag.
      RETURN_IF_ERROR(ckpt->ReadF32(p + "self_attn.o_proj.bias", {hidden}, &l.bo));
    }
    RETURN_IF_ERROR(ckpt->ReadF32(p + "post_attention_layernorm.weight", {hidden}, &l.post_norm));
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
  // Some tied checkpoints still store lm_head.weight; the flag decides, as in HF.
  if (!config.tie_word_embeddings) {
    RETURN_IF_ERROR(ckpt->ReadF32("lm_head.weight", {config.vocab_size, hidden}, &m->lm_head_));
  }
  return m;
}

void LlamaModel::LinearOp(const float* x, const std::vector<float>& w, const std::vector<float>& b,
                          float* y, int64_t m, int64_t n, int64_t k) {
  kernels::LinearArgs a;
  a.x = x;
  a.w = w.data();
  a.bias = b.empty() ? nullptr : b.data();
  a.y = y;
  a.m = m;
  a.n = n;
  a.k = k;
  backend_->Linear(a);
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

  backend_->Embedding({batch.token_ids.data(), embed_.data(), x_.data(), t, c.vocab_size, hidden});
  for (int64_t li = 0; li < c.num_layers; ++li) {
    Layer& l = layers_[li];
    // Attention block: h = norm(x); x += o_proj(attn(rope(q), rope(k), v)).
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
    pa.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    backend_->PagedAttention(pa);
    LinearOp(attn_.data(), l.wo, l.bo, tmp_.data(), t, hidden, q_dim);
    backend_->Add({x_.data(), tmp_.data(), x_.data(), t * hidden});
    // MLP block: h = norm(x); x += down(silu(gate(h)) * up(h)).
    backend_->RmsNorm({x_.data(), l.post_norm.data(), h_.data(), t, hidden, c.rms_norm_eps});
    LinearOp(h_.data(), l.w_gate, l.b_gate, gate_.data(), t, inter, hidden);
    LinearOp(h_.data(), l.w_up, l.b_up, up_.data(), t, inter, hidden);
    backend_->SiluMul({gate_.data(), up_.data(), gate_.data(), t, inter});
    LinearOp(gate_.data(), l.w_down, l.b_down, tmp_.data(), t, hidden, inter);
    backend_->Add({x_.data(), tmp_.data(), x_.data(), t * hidden});
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
}

}  // namespace dpinfer::engine
