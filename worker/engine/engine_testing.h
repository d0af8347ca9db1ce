// A seam for tests and benchmarks of the engine's host-side step (scheduling, batch flattening,
// stop checks, detokenization): an Engine around a caller's Model (a scripted or null one) instead
// of one loaded from the checkpoint. Not for serving.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "worker/engine/engine.h"
#include "worker/engine/model.h"

namespace dpinfer::engine {

// Reads config.json and the tokenizer from options.model_dir (no weights) and runs `model` for
// every step. The KV cache is block accounting only (no storage, as with the CUDA model), sized by
// options.kv_cache_tokens (0: max_num_seqs sequences of max_model_len tokens).
absl::StatusOr<std::unique_ptr<Engine>> CreateEngineWithModel(const EngineOptions& options,
                                                              std::unique_ptr<Model> model);

}  // namespace dpinfer::engine
