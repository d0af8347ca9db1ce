// The model's hyper-parameters, read from an HF config.json (+ generation_config.json), and the
// checks that refuse what the engine cannot run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dpinfer::engine {

// The decoder families the engine runs. All are Llama-shaped (RMSNorm, rotate-half rope, GQA,
// SiLU-gated MLP); they differ in biases, the MLP (dense or mixture of experts) and scalings.
enum class ModelFamily {
  kLlama,       // LlamaForCausalLM
  kQwen2,       // Qwen2ForCausalLM: bias on q/k/v (not o)
  kMixtral,     // MixtralForCausalLM: softmax router -> top-k -> renormalised weights
  kGraniteMoe,  // GraniteMoeForCausalLM: top-k router logits -> softmax; multipliers, scaling
};

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM"
  ModelFamily family = ModelFamily::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // explicit "head_dim" or hidden_size / num_heads
  int64_t max_position_embeddings = 2048;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;  // top-level "rope_theta" or rope_parameters.rope_theta
  // Rope scaling (rope_parameters or rope_scaling): "default", "linear" (factor) or "llama3"
  // (factor, low/high_freq_factor, original_max_position_embeddings).
  std::string rope_type = "default";
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // bias on q/k/v projections
  bool o_proj_bias = false;     // bias on o_proj (Llama ties it to attention_bias; Qwen2 has none)
  bool mlp_bias = false;
  // Attention score scale: 1/sqrt(head_dim), or GraniteMoE's attention_multiplier. 0 (a config
  // built by hand) means 1/sqrt(head_dim).
  float attention_scale = 0.0f;
  // Mixture of experts (Mixtral, GraniteMoE); num_experts 0 means a dense MLP. intermediate_size
  // is then each expert's size.
  int64_t num_experts = 0;
  int64_t num_experts_per_tok = 0;
  // GraniteMoE's scalings (1 elsewhere): embeddings multiplied, both residual branches multiplied,
  // logits divided.
  float embedding_multiplier = 1.0f;
  float residual_multiplier = 1.0f;
  float logits_scaling = 1.0f;
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;  // config.json and generation_config.json, merged
};

// Reads <model_dir>/config.json and, if present, generation_config.json. Errors name the file and
// the key (missing key, wrong type, unsupported architecture / activation / rope type).
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace dpinfer::engine
