// `dpinfer check-logits`: runs a model on the input_ids of a reference safetensors file (as
// ../shared/fixtures/*/reference.safetensors: input_ids [B, T], logits [B, T, V], typically HF
// transformers' fp32 output) and reports, per sequence, the largest absolute logit error relative
// to the largest |reference logit|. Someone porting a checkpoint uses it to check dpinfer against
// transformers before trusting its text.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dpinfer::cli {

struct CheckLogitsOptions {
  std::string model_dir;
  std::string reference_path;
  std::string backend = "cpu";    // "cpu" | "cuda"
  std::string dtype = "float32";  // "float32" | "bfloat16" (the CUDA backend's bf16 weights)
  // On the relative error; 0 -> the dtype's default: 1e-4 for float32, 2e-2 for bfloat16.
  double tolerance = 0;
  int32_t num_threads = 0;  // CPU backend threads; 0 -> all cores
};

struct SequenceError {
  double max_abs_error = 0;  // max |logit - reference| over the sequence's positions and vocab
  double max_abs_ref = 0;    // max |reference|
  double relative = 0;       // max_abs_error / max_abs_ref (max_abs_error when the reference is 0)
  int64_t argmax_agree = 0;  // positions whose top token matches the reference's
  int64_t positions = 0;
};

// The tolerance RunCheckLogits applies: options.tolerance, or the dtype's default when it is 0.
double EffectiveTolerance(const CheckLogitsOptions& options);

// Loads the model and the reference and compares every sequence. Errors name the file and what
// is wrong (missing tensor, shape, dtype, vocab mismatch, unknown backend or dtype, no
// GPU).
absl::StatusOr<std::vector<SequenceError>> CheckLogits(const CheckLogitsOptions& options);

// The subcommand: prints one line per sequence and a verdict to `out`, errors to `err`. Returns
// the exit code: 0 when every sequence is within the tolerance, 1 when one is not, 2 on an error.
int RunCheckLogits(const CheckLogitsOptions& options, std::ostream& out, std::ostream& err);

}  // namespace dpinfer::cli
