// The Llama-shaped decoder (fp32) over a kernels::Backend, computing what HF transformers computes
// for LlamaForCausalLM (incl. Llama 3 rope scaling), Qwen2ForCausalLM (q/k/v bias),
// MixtralForCausalLM and GraniteMoeForCausalLM (mixtures of experts, GraniteMoE's multipliers):
// weights loaded from an HF checkpoint, and one forward pass over a flat batch of tokens drawn
// from many sequences (prefill chunks and decodes mixed), each token carrying its sequence's block
// table and position so attention reads the right part of the paged KV cache.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/safetensors.h"
#include "kernels/backend.h"
#include "worker/engine/kv_cache.h"
#include "worker/engine/model_config.h"

namespace dpinfer::engine {

// One step's input, flattened over the scheduled sequences.
struct ForwardBatch {
  std::vector<int32_t> token_ids;     // [num_tokens]
  std::vector<int32_t> positions;     // [num_tokens] position of each token in its sequence
  std::vector<int32_t> token_seq;     // [num_tokens] row of block_tables for each token
  std::vector<int32_t> slot_mapping;  // [num_tokens] cache slot where each token's K/V go
  std::vector<int32_t> block_tables;  // [num_seqs, max_blocks_per_seq], unused entries 0
  int64_t max_blocks_per_seq = 0;
  std::vector<int32_t> logit_rows;  // [num_logits] tokens whose next-token logits are wanted
  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
};

// The rope inverse frequencies [head_dim / 2] of `config`'s rope type, in HF's fp32 arithmetic
// (_compute_default_rope_parameters, _compute_linear_scaling_rope_parameters,
// _compute_llama3_parameters).
std::vector<float> RopeInvFreq(const ModelConfig& config);

// MoE routing exactly as transformers does it, from router logits [t, num_experts]: Mixtral
// ranks softmax probabilities and renormalises the top k; GraniteMoE ranks raw logits and takes a
// softmax over the k chosen. Returns, per expert, its (token, weight) pairs in token order.
// `host_ops` is a CPU backend (the logits are host memory).
std::vector<std::vector<std::pair<int64_t, float>>> RouteTokens(const ModelConfig& config,
                                                                const float* router_logits,
                                                                int64_t t,
                                                                kernels::Backend* host_ops);

class LlamaModel {
 public:
  // Reads the weights named as in HF checkpoints of config.family (lm_head.weight ignored when the
  // embeddings are tied, even where a copy is stored). Errors name the tensor.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& model_dir,
                                                          const ModelConfig& config,
                                                          kernels::Backend* backend);

  // Runs the batch, writing its keys/values into `cache` and the logits of batch.logit_rows into
  // `logits` ([num_logits, vocab]).
  void Forward(const ForwardBatch& batch, KvCache* cache, std::vector<float>* logits);

  const ModelConfig& config() const { return config_; }
  // Host memory the weights take.
  int64_t weight_bytes() const;

 private:
  struct Layer {
    std::vector<float> input_norm;            // [hidden]
    std::vector<float> wq;                    // [num_heads * head_dim, hidden]
    std::vector<float> wk;                    // [num_kv_heads * head_dim, hidden]
    std::vector<float> wv;                    // [num_kv_heads * head_dim, hidden]
    std::vector<float> wo;                    // [hidden, num_heads * head_dim]
    std::vector<float> bq, bk, bv, bo;        // biases, empty unless attention_bias
    std::vector<float> post_norm;             // [hidden]
    std::vector<float> w_gate;                // [intermediate, hidden]
    std::vector<float> w_up;                  // [intermediate, hidden]
    std::vector<float> w_down;                // [hidden, intermediate]
    std::vector<float> b_gate, b_up, b_down;  // empty unless mlp_bias
    // Mixture of experts (num_experts > 0) instead of w_gate/w_up/w_down:
    std::vector<float> router;          // [num_experts, hidden]
    std::vector<float> expert_gate_up;  // [num_experts, 2 * intermediate, hidden], gate rows first
    std::vector<float> expert_down;     // [num_experts, hidden, intermediate]
  };

  LlamaModel(const ModelConfig& config, kernels::Backend* backend)
      : config_(config), backend_(backend) {}
  static absl::Status LoadExperts(const Checkpoint& ckpt, const std::string& prefix,
                                  const ModelConfig& config, Layer* layer);
  void LinearOp(const float* x, const float* w, const float* b, float* y, int64_t m, int64_t n,
                int64_t k);
  void LinearOp(const float* x, const std::vector<float>& w, const std::vector<float>& b, float* y,
                int64_t m, int64_t n, int64_t k) {
    LinearOp(x, w.data(), b.empty() ? nullptr : b.data(), y, m, n, k);
  }
  // out = the layer's MoE block applied to h ([t, hidden] both), as transformers' sparse MoE
  // blocks compute it: per token the routed experts' outputs, each times its routing weight,
  // summed in ascending expert order (the order of their index_add).
  void MoeOp(const Layer& layer, const float* h, float* out, int64_t t);

  ModelConfig config_;
  kernels::Backend* backend_;  // not owned
  std::vector<float> embed_;   // [vocab, hidden]
  std::vector<Layer> layers_;
  std::vector<float> final_norm_;  // [hidden]
  std::vector<float> lm_head_;     // [vocab, hidden]; empty when tied to embed_
  std::vector<float> inv_freq_;    // [head_dim / 2] rope inverse frequencies

  // Activations, reused across steps (grown to the largest batch seen).
  std::vector<float> x_, h_, q_, k_, v_, attn_, tmp_, gate_, up_;
  std::vector<float> router_logits_, moe_in_, moe_out_;  // MoE: [t, E], [t, hidden], [t, hidden]
};

}  // namespace dpinfer::engine
