#include "cli/check_logits_flags.h"

namespace dpinfer::cli {

void AddCheckLogitsFlags(CLI::App* command, CheckLogitsOptions* options) {
  command->add_option("--model", options->model_dir, "HF model directory")->required();
  command
      ->add_option("--reference", options->reference_path,
                   "safetensors with input_ids [B,T] and logits [B,T,V]")
      ->required();
  command->add_option("--backend", options->backend, "cpu or cuda");
  command->add_option("--dtype", options->dtype,
                      "float32, or bfloat16 (bf16 weights and GEMMs; --backend cuda only)");
  command->add_option(
      "--tolerance", options->tolerance,
      "max error relative to max |reference logit| (default 1e-4; 2e-2 with --dtype bfloat16)");
  command->add_option("--threads", options->num_threads, "CPU threads (default: all cores)");
}

}  // namespace dpinfer::cli
