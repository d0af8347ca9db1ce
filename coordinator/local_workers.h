// Worker processes a coordinator starts itself (`--local-workers N`, used by `dpinfer run`): it
// owns them, so a worker declared dead is killed here, and (within a restart budget) replaced by
// a fresh process for the same rank, as systemd's Restart= does for deployed workers.
#pragma once

#include <sys/types.h>

#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "coordinator/coordinator.h"

namespace dpinfer::coordinator {

struct LocalWorkersOptions {
  int32_t count = 0;
  std::string worker_binary;             // dpinfer-worker
  std::vector<std::string> worker_args;  // --model DIR and engine flags
  std::string coordinator_address;       // host:port the workers register with
  std::string log_dir;                   // worker-<rank>.log files; "" -> inherit stderr
  int32_t max_restarts = 3;              // per rank; 0 disables replacement
};

class LocalWorkers {
 public:
  LocalWorkers(LocalWorkersOptions options, Coordinator* coordinator);
  ~LocalWorkers();
  // Spawns every rank and starts the reaper thread.
  absl::Status Start();
  // SIGTERM, then SIGKILL after a grace period, for every process still running.
  void Stop();
  // SIGKILLs `pid` if it is one of ours (the coordinator's death hook).
  void Kill(int64_t pid, const std::string& reason);

 private:
  absl::Status SpawnRank(int32_t rank);
  void ReapLoop();

  const LocalWorkersOptions options_;
  Coordinator* coordinator_;
  std::mutex mu_;
  std::map<pid_t, int32_t> rank_of_;  // running processes
  std::map<int32_t, int32_t> restarts_;
  bool stopping_ = false;
  std::thread reaper_;
};

}  // namespace dpinfer::coordinator
