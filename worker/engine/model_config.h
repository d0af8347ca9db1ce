// The model's hyper-parameters, read from an HF config.json (+ generation_config.json), and the
// checks that refuse what the engine cannot run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dpinfer::engine {

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM"
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
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;  // config.json and generation_config.json, merged
};

// Reads <model_dir>/config.json and, if present, generation_config.json. Errors name the file and
// the key (missing key, wrong type, unsupported architecture / activation / rope type).
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace dpinfer::engine
