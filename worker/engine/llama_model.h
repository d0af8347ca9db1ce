// The Llama decoder (HF LlamaForCausalLM math, fp32) over a kernels::Backend: weights loaded from
// an HF checkpoint, and one forward pass over a flat batch of tokens drawn from many sequences
// (prefill chunks and decodes mixed), each token carrying its sequence's block table and position
// so attention reads the right part of the paged KV cache.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
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

class LlamaModel {
 public:
  // Reads the weights named as in HF checkpoints (lm_head.weight absent when the embeddings are
  // tied). Errors name the tensor.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& model_dir,
                                                          const ModelConfig& config,
                                                          kernels::Backend* backend);

  // Runs the batch, writing its keys/values into `cache` and the logits of batch.logit_rows into
  // `logits` ([num_logits, vocab]).
  void Forward(const ForwardBatch& batch, KvCache* cache, std::vector<float>* logits);

  const ModelConfig& config() const { return config_; }

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
  };

  LlamaModel(const ModelConfig& config, kernels::Backend* backend)
      : config_(config), backend_(backend) {}
  void LinearOp(const float* x, const std::vector<float>& w, const std::vector<float>& b, float* y,
                int64_t m, int64_t n, int64_t k);

  ModelConfig config_;
  kernels::Backend* backend_;  // not owned
  std::vector<float> embed_;   // [vocab, hidden]
  std::vector<Layer> layers_;
  std::vector<float> final_norm_;  // [hidden]
  std::vector<float> lm_head_;     // [vocab, hidden]; empty when tied to embed_

  // Activations, reused across steps (grown to the largest batch seen).
  std::vector<float> x_, h_, q_, k_, v_, attn_, tmp_, gate_, up_;
};

}  // namespace dpinfer::engine
