// Real processes on 127.0.0.1 for integration tests: a coordinator and workers started from the
// built binaries, a BatchClient to talk to them, and helpers to run the `dpinfer` CLI and to
// build OpenAI batch lines from the stories260K reference.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/client.h"
#include "nlohmann/json.hpp"

namespace dpinfer::testing {

// A child process killed (SIGKILL) and reaped when the object goes away.
class Process {
 public:
  static absl::StatusOr<std::unique_ptr<Process>> Start(
      std::vector<std::string> argv, const std::string& log_path,
      std::map<std::string, std::string> env = {});
  ~Process();
  pid_t pid() const { return pid_; }
  bool Running();  // reaps when it has ended
  void Signal(int sig);
  const std::string& log_path() const { return log_path_; }

 private:
  pid_t pid_ = 0;
  bool reaped_ = false;
  std::string log_path_;
};

struct ClusterOptions {
  int workers = 2;
  std::string model_dir;  // default: ../shared/models/stories260K
  std::vector<std::string> coordinator_args;
  std::vector<std::string> worker_args = {"--threads", "1"};
};

// A coordinator plus workers the test owns (the coordinator does not own them: this is the
// systemd-style deployment).
class Cluster {
 public:
  static absl::StatusOr<std::unique_ptr<Cluster>> Start(ClusterOptions options);
  // Starts one more worker; returns its index in workers().
  absl::StatusOr<int> AddWorker(std::vector<std::string> extra_args = {},
                                std::map<std::string, std::string> env = {});
  // SIGKILLs the coordinator and starts it again on the same port with the same flags (the
  // workers keep running and find it again).
  absl::Status RestartCoordinator();
  // Waits until `n` workers are registered and ready.
  absl::Status WaitForWorkers(int n, double timeout_s = 60);
  cli::BatchClient& client() { return *client_; }
  Process& coordinator() { return *coordinator_; }
  std::vector<std::unique_ptr<Process>>& workers() { return workers_; }
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }

 private:
  absl::Status StartCoordinator(const std::string& listen);
  ClusterOptions options_;
  std::string dir_;
  int port_ = 0;
  std::unique_ptr<Process> coordinator_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::unique_ptr<cli::BatchClient> client_;
};

// The stories260K reference (prompt, prompt_ids, output_ids, text).
nlohmann::json LoadStoriesReference();
std::string StoriesDir();

// One OpenAI batch input line for /v1/completions.
std::string CompletionLine(const std::string& custom_id, const nlohmann::json& body);

// Parses result lines into custom_id -> parsed line; fails the test on a duplicate custom_id.
std::map<std::string, nlohmann::json> ByCustomId(const std::vector<std::string>& lines);

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs a command line through /bin/sh with a timeout (the test fails rather than hangs).
CommandResult RunCommand(const std::string& command, double timeout_s = 300);

}  // namespace dpinfer::testing
