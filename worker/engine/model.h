// What the engine needs of a model, whatever device it runs on: one forward pass over a flat
// ForwardBatch whose next-token logits come back in host memory. The engine keeps a KvCache for
// block accounting (the scheduler hands out its block ids); each implementation owns, or is given,
// storage of that cache's shape where its device can reach it, so the slots and block tables of
// every batch mean the same thing on the CPU and on the GPU.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "worker/engine/llama_model.h"

namespace dpinfer::engine {

class Model {
 public:
  virtual ~Model() = default;
  // Runs the batch, writing its keys/values into the model's KV storage and the logits of
  // batch.logit_rows into `logits` ([num_logits, vocab], host). A non-OK status is a device
  // failure (the engine reports it and stops), never a per-request problem.
  virtual absl::Status Forward(const ForwardBatch& batch, std::vector<float>* logits) = 0;
};

}  // namespace dpinfer::engine
