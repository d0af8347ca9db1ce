// `dpinfer run`: vLLM's offline data-parallel example as one command. Starts a coordinator that
// owns N local workers, submits the job, writes the results, stops everything, and kills what is
// still running at --timeout.
#pragma once

#include <string>
#include <vector>

namespace dpinfer::cli {

struct RunOptions {
  std::string model_dir;
  int32_t dp_size = 1;
  std::string input_path;
  std::string output_path;
  double timeout_s = 0;  // 0: none
  std::vector<std::string> worker_args;       // engine flags passed through to every worker
  std::vector<std::string> coordinator_args;  // extra coordinator flags
  std::string log_dir;                        // "" -> a fresh directory under /tmp
  bool quiet = false;                         // no progress lines
};

// Returns the process exit code: 0 when the job completed (even with failed lines), 1 on an
// error, 124 when --timeout killed processes.
int RunJob(const RunOptions& options);

}  // namespace dpinfer::cli
