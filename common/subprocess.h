// Starting and stopping the local processes dpinfer owns (the `dpinfer run` launcher starts a
// coordinator; a coordinator with --local-workers starts its workers). POSIX fork/exec, with the
// child's output sent to a log file so daemons never write into the user's terminal.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dpinfer {

struct SpawnOptions {
  std::vector<std::string> argv;              // argv[0] is the program path
  std::map<std::string, std::string> env;     // added to (or overriding) the inherited env
  std::string log_path;                       // stdout+stderr go here (appended); "" -> inherit
  bool new_process_group = false;             // so the whole tree can be signalled at once
  // The child gets SIGKILL when this process dies (Linux PR_SET_PDEATHSIG), so owned workers
  // never outlive a crashed coordinator.
  bool die_with_parent = true;
};

absl::StatusOr<pid_t> Spawn(const SpawnOptions& options);

// Non-blocking reap: the exit description ("exited with status 1", "killed by signal 9") when
// the child has ended, nullopt while it runs.
std::optional<std::string> TryReap(pid_t pid);

// Sends SIGTERM, waits up to `grace_s`, then SIGKILL; reaps. Returns how it ended.
std::string TerminateAndReap(pid_t pid, double grace_s);

// Directory of the running executable (to find sibling binaries such as dpinfer-worker).
std::string SelfExeDir();

}  // namespace dpinfer
