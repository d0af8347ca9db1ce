// `dpinfer make-model`: writes a tiny random-weight Llama model directory in HF format (config,
// tokenizer, safetensors). It lets the quickstart and tests run end to end on a fresh machine
// without downloading weights; its generated text is meaningless by design.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace dpinfer::cli {

struct MakeModelOptions {
  std::string out_dir;  // created if absent; existing model files in it are overwritten
  int64_t hidden_size = 64;
  int64_t intermediate_size = 172;
  int64_t num_layers = 4;
  int64_t num_heads = 8;
  int64_t num_kv_heads = 4;
  // The vocabulary size is not an option: it is the size of the generated tokenizer's vocab.
  int64_t max_position_embeddings = 512;
  uint64_t seed = 1;
  std::string dtype = "float32";  // "float32" | "bfloat16" | "float16"
  bool tie_word_embeddings = true;
  int num_shards = 1;  // >1 writes model-0000i-of-0000N.safetensors + model.safetensors.index.json
};

// Writes config.json, generation_config.json, tokenizer.json, tokenizer_config.json and the
// weights into options.out_dir. Deterministic: the same options give byte-identical files.
absl::Status MakeTinyModel(const MakeModelOptions& options);

// The vocabulary size MakeTinyModel's tokenizer has (and config.json states).
int64_t TinyModelVocabSize();

}  // namespace dpinfer::cli
