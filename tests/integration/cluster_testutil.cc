#include "tests/integration/cluster_testutil.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "tests/test_env.h"

namespace dpinfer::testing {

absl::StatusOr<std::unique_ptr<Process>> Process::Start(std::vector<std::string> argv,
                                                        const std::string& log_path,
                                                        std::map<std::string, std::string> env) {
  SpawnOptions spawn;
  spawn.argv = std::move(argv);
  spawn.env = std::move(env);
  spawn.log_path = log_path;
  auto pid = Spawn(spawn);
  if (!pid.ok()) return pid.status();
  auto p = std::unique_ptr<Process>(new Process());
  p->pid_ = *pid;
  p->log_path_ = log_path;
  return p;
}

Process::~Process() {
  if (reaped_) return;
  kill(pid_, SIGKILL);
  int status;
  waitpid(pid_, &status, 0);
}

bool Process::Running() {
  if (reaped_) return false;
  if (TryReap(pid_).has_value()) reaped_ = true;
  return !reaped_;
}

void Process::Signal(int sig) {
  if (!reaped_) kill(pid_, sig);
}

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Start(ClusterOptions options) {
  auto c = std::unique_ptr<Cluster>(new Cluster());
  if (options.model_dir.empty()) options.model_dir = StoriesDir();
  c->options_ = options;
  c->dir_ = MakeTempDir();
  absl::Status started = c->StartCoordinator("127.0.0.1:0");
  if (!started.ok()) return started;
  c->client_ = std::make_unique<cli::BatchClient>(absl::StrCat("127.0.0.1:", c->port_));
  for (int i = 0; i < options.workers; ++i) {
    auto added = c->AddWorker();
    if (!added.ok()) return added.status();
  }
  return c;
}

absl::Status Cluster::StartCoordinator(const std::string& listen) {
  const std::string port_file = dir_ + "/port";
  std::remove(port_file.c_str());
  std::vector<std::string> argv = {BinDir() + "/dpinfer-coordinator", "--listen", listen,
                                   "--port-file", port_file};
  argv.insert(argv.end(), options_.coordinator_args.begin(), options_.coordinator_args.end());
  auto coordinator = Process::Start(argv, dir_ + "/coordinator.log");
  if (!coordinator.ok()) return coordinator.status();
  coordinator_ = std::move(*coordinator);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  int port = 0;
  while (true) {
    std::ifstream in(port_file);
    if (in >> port && port != 0) break;
    if (!coordinator_->Running()) return absl::InternalError("coordinator exited at start");
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError("coordinator did not start");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  port_ = port;
  return absl::OkStatus();
}

absl::Status Cluster::RestartCoordinator() {
  coordinator_->Signal(SIGKILL);
  while (coordinator_->Running()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  absl::Status s = StartCoordinator(absl::StrCat("127.0.0.1:", port_));
  // A fresh channel, as a new client process would have.
  client_ = std::make_unique<cli::BatchClient>(absl::StrCat("127.0.0.1:", port_));
  return s;
}

absl::StatusOr<int> Cluster::AddWorker(std::vector<std::string> extra_args,
                                       std::map<std::string, std::string> env) {
  const int index = workers_.size();
  std::vector<std::string> argv = {BinDir() + "/dpinfer-worker", "--model", options_.model_dir,
                                   "--listen", "127.0.0.1:0"};
  if (env.count("DPINFER_MASTER_PORT") == 0) {
    argv.push_back("--coordinator");
    argv.push_back(absl::StrCat("127.0.0.1:", port_));
  }
  argv.insert(argv.end(), options_.worker_args.begin(), options_.worker_args.end());
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  auto p = Process::Start(argv, absl::StrCat(dir_, "/worker-", index, ".log"), std::move(env));
  if (!p.ok()) return p.status();
  workers_.push_back(std::move(*p));
  return index;
}

absl::Status Cluster::WaitForWorkers(int n, double timeout_s) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(timeout_s * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    auto workers = client_->Workers();
    if (workers.ok()) {
      int ready = 0;
      for (const auto& w : *workers) ready += w.state() == "ready";
      if (ready >= n) return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat(n, " workers did not register"));
}

std::string StoriesDir() { return SharedDir() + "/models/stories260K"; }

nlohmann::json LoadStoriesReference() {
  std::ifstream in(StoriesDir() + "/reference.json");
  return nlohmann::json::parse(in);
}

std::string CompletionLine(const std::string& custom_id, const nlohmann::json& body) {
  nlohmann::json line = {{"custom_id", custom_id},
                         {"method", "POST"},
                         {"url", "/v1/completions"},
                         {"body", body}};
  return line.dump();
}

std::map<std::string, nlohmann::json> ByCustomId(const std::vector<std::string>& lines) {
  std::map<std::string, nlohmann::json> out;
  for (const auto& l : lines) {
    auto j = nlohmann::json::parse(l);
    if (!j["custom_id"].is_string()) continue;
    const std::string id = j["custom_id"];
    EXPECT_EQ(out.count(id), 0u) << "custom_id " << id << " appears twice";
    out[id] = j;
  }
  return out;
}

CommandResult RunCommand(const std::string& command, double timeout_s) {
  const std::string out_path = MakeTempDir() + "/out";
  SpawnOptions spawn;
  spawn.argv = {"/bin/sh", "-c", command};
  spawn.log_path = out_path;
  CommandResult r;
  auto pid = Spawn(spawn);
  if (!pid.ok()) return r;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(timeout_s * 1000));
  int status = 0;
  while (true) {
    pid_t w = waitpid(*pid, &status, WNOHANG);
    if (w == *pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(*pid, SIGKILL);
      waitpid(*pid, &status, 0);
      ADD_FAILURE() << "command timed out: " << command;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream in(out_path);
  std::stringstream ss;
  ss << in.rdbuf();
  r.output = ss.str();
  return r;
}

}  // namespace dpinfer::testing
