// What the engine needs of a model, whatever device it runs on: one step over a flat ForwardBatch
// that returns the next token of each logit row, sampled where the logits are. The engine keeps a
// KvCache for block accounting (the scheduler hands out its block ids); each implementation owns,
// or is given, storage of that cache's shape where its device can reach it, so the slots and block
// tables of every batch mean the same thing on the CPU and on the GPU.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "worker/engine/engine.h"
#include "worker/engine/llama_model.h"

namespace dpinfer::engine {

// How to draw the next token of one logit row (SampleToken's inputs).
struct SampleSpec {
  const SamplingParams* params = nullptr;
  uint64_t seed = 0;
  uint64_t step = 0;  // tokens the request has generated so far
};

class Model {
 public:
  virtual ~Model() = default;
  // Runs the batch, writing its keys/values into the model's KV storage, and samples one token
  // per batch.logit_rows entry (`specs` in the same order) into `tokens`. A non-OK status is a
  // device failure (the engine reports it and stops), never a per-request problem.
  virtual absl::Status Step(const ForwardBatch& batch, const std::vector<SampleSpec>& specs,
                            std::vector<int32_t>* tokens) = 0;
  // Memory the weights take on the model's device.
  virtual int64_t weight_bytes() const = 0;
};

}  // namespace dpinfer::engine
