// dpinfer-check-logits: `dpinfer check-logits` runs this binary (same flags, same output, same
// exit codes). It lives apart so that only it, not every `dpinfer submit`, loads the engine and
// its CUDA libraries, whose start-up and tear-down cost the client ~0.1 s per run.
#include <iostream>

#include "CLI/CLI.hpp"
#include "cli/check_logits.h"
#include "cli/check_logits_flags.h"

int main(int argc, char** argv) {
  CLI::App app{"dpinfer check-logits: compare the model's logits with a reference"};
  dpinfer::cli::CheckLogitsOptions options;
  dpinfer::cli::AddCheckLogitsFlags(&app, &options);
  CLI11_PARSE(app, argc, argv);
  return dpinfer::cli::RunCheckLogits(options, std::cout, std::cerr);
}
