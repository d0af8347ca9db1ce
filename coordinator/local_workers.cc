#include "coordinator/local_workers.h"

#include <signal.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/subprocess.h"

namespace dpinfer::coordinator {

LocalWorkers::LocalWorkers(LocalWorkersOptions options, Coordinator* coordinator)
    : options_(std::move(options)), coordinator_(coordinator) {}

LocalWorkers::~LocalWorkers() { Stop(); }

absl::Status LocalWorkers::Start() {
  for (int32_t rank = 0; rank < options_.count; ++rank) {
    absl::Status s = SpawnRank(rank);
    if (!s.ok()) return s;
  }
  reaper_ = std::thread([this] { ReapLoop(); });
  return absl::OkStatus();
}

absl::Status LocalWorkers::SpawnRank(int32_t rank) {
  SpawnOptions spawn;
  spawn.argv = {options_.worker_binary,
                "--coordinator", options_.coordinator_address,
                "--listen", "127.0.0.1:0",
                "--dp-rank", std::to_string(rank),
                "--dp-rank-local", std::to_string(rank),
                "--dp-size", std::to_string(options_.count)};
  spawn.argv.insert(spawn.argv.end(), options_.worker_args.begin(), options_.worker_args.end());
  if (!options_.log_dir.empty()) {
    spawn.log_path = absl::StrCat(options_.log_dir, "/worker-", rank, ".log");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return absl::OkStatus();
  auto pid = Spawn(spawn);
  if (!pid.ok()) return pid.status();
  LOG_INFO("started worker rank {} as pid {}{}", rank, *pid,
           spawn.log_path.empty() ? "" : " (log " + spawn.log_path + ")");
  rank_of_[*pid] = rank;
  return absl::OkStatus();
}

void LocalWorkers::Kill(int64_t pid, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  // Only processes still running and ours: a reaped pid may already belong to someone else.
  if (stopping_ || rank_of_.count(static_cast<pid_t>(pid)) == 0) return;
  LOG_WARN("killing worker pid {}: {}", pid, reason);
  kill(static_cast<pid_t>(pid), SIGKILL);
}

void LocalWorkers::ReapLoop() {
  while (true) {
    std::vector<std::pair<pid_t, std::string>> ended;
    std::vector<int32_t> respawn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      for (auto it = rank_of_.begin(); it != rank_of_.end();) {
        if (auto how = TryReap(it->first)) {
          ended.emplace_back(it->first, *how);
          const int32_t rank = it->second;
          if (restarts_[rank] < options_.max_restarts) {
            ++restarts_[rank];
            respawn.push_back(rank);
          }
          it = rank_of_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& [pid, how] : ended) {
      LOG_WARN("worker pid {} {}", pid, how);
      coordinator_->OnWorkerProcessExited(pid, how);
    }
    for (int32_t rank : respawn) {
      LOG_INFO("replacing worker rank {}", rank);
      absl::Status s = SpawnRank(rank);
      if (!s.ok()) LOG_ERROR("cannot restart worker rank {}: {}", rank, s.ToString());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void LocalWorkers::Stop() {
  std::map<pid_t, int32_t> running;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    running.swap(rank_of_);
  }
  // Terminate before joining the reaper: workers it replaced were forked from its thread, and
  // PR_SET_PDEATHSIG would SIGKILL them when that thread ends, skipping their clean shutdown.
  for (auto& [pid, rank] : running) kill(pid, SIGTERM);
  for (auto& [pid, rank] : running) {
    LOG_INFO("worker rank {} (pid {}) {}", rank, pid, TerminateAndReap(pid, 5.0));
  }
  if (reaper_.joinable()) reaper_.join();
}

}  // namespace dpinfer::coordinator
