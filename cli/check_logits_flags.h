// The flags of `dpinfer check-logits`, shared by `dpinfer` (which parses them, then hands the
// command to its sibling binary dpinfer-check-logits) and by dpinfer-check-logits itself. This file
// pulls in no engine code: the `dpinfer` client must not load the CUDA libraries at start-up.
#pragma once

#include "CLI/CLI.hpp"
#include "cli/check_logits.h"

namespace dpinfer::cli {

// The binary that runs check-logits, next to `dpinfer`.
inline constexpr char kCheckLogitsBinary[] = "dpinfer-check-logits";

void AddCheckLogitsFlags(CLI::App* command, CheckLogitsOptions* options);

}  // namespace dpinfer::cli
