#include "cli/run.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/client.h"
#include "common/subprocess.h"

namespace dpinfer::cli {
namespace {

using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_coordinator_pgid = 0;

void OnInterrupt(int sig) {
  if (g_coordinator_pgid > 0) kill(-g_coordinator_pgid, SIGTERM);
  _exit(128 + sig);
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

std::string Tail(const std::string& path, size_t max_bytes = 2000) {
  std::ifstream in(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return s.size() > max_bytes ? "..." + s.substr(s.size() - max_bytes) : s;
}

}  // namespace

int RunJob(const RunOptions& options) {
  const auto start = Clock::now();
  auto remaining = [&]() {
    return options.timeout_s > 0 ? options.timeout_s - Seconds(start) : 1e9;
  };
  auto lines = ReadLines(options.input_path);
  if (!lines.ok()) {
    std::cerr << "dpinfer run: " << lines.status().message() << "\n";
    return 1;
  }
  std::string log_dir = options.log_dir;
  if (log_dir.empty()) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "dpinfer-run-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::cerr << "dpinfer run: cannot create a log directory\n";
      return 1;
    }
    log_dir = tmpl;
  } else {
    std::filesystem::create_directories(log_dir);
  }
  const std::string port_file = log_dir + "/coordinator.port";
  const std::string coord_log = log_dir + "/coordinator.log";
  std::filesystem::remove(port_file);

  SpawnOptions spawn;
  spawn.argv = {SelfExeDir() + "/dpinfer-coordinator",
                "--listen", "127.0.0.1:0",
                "--port-file", port_file,
                "--local-workers", std::to_string(options.dp_size),
                "--model", options.model_dir,
                "--log-dir", log_dir};
  for (const auto& a : options.worker_args) spawn.argv.push_back("--worker-arg=" + a);
  spawn.argv.insert(spawn.argv.end(), options.coordinator_args.begin(),
                    options.coordinator_args.end());
  spawn.log_path = coord_log;
  // Its own process group holds the coordinator and the workers it starts, so one signal to the
  // group reaches every process this run owns.
  spawn.new_process_group = true;
  auto pid = Spawn(spawn);
  if (!pid.ok()) {
    std::cerr << "dpinfer run: cannot start the coordinator: " << pid.status().message() << "\n";
    return 1;
  }
  const pid_t coordinator_pid = *pid;
  g_coordinator_pgid = coordinator_pid;
  signal(SIGINT, OnInterrupt);
  signal(SIGTERM, OnInterrupt);
  if (!options.quiet) {
    std::cerr << absl::StrFormat("dpinfer run: coordinator pid %d, %d workers, logs in %s\n",
                                 coordinator_pid, options.dp_size, log_dir);
  }

  // Kills everything still running and names it; used on --timeout.
  auto kill_on_timeout = [&](BatchClient* client, const std::string& job_id) {
    std::vector<std::string> named;
    named.push_back(absl::StrFormat("coordinator (pid %d)", coordinator_pid));
    std::string progress;
    if (client != nullptr) {
      // A short grace to name the processes, even if the coordinator is wedged.
      client->CapDeadlines(std::chrono::system_clock::now() + std::chrono::seconds(2));
      if (auto workers = client->Workers(1.0); workers.ok()) {
        for (const auto& w : *workers) {
          if (w.state() != "ready") continue;
          named.push_back(absl::StrFormat("worker rank %d (pid %d, %d requests unanswered)",
                                          w.dp_rank(), w.pid(), w.assigned()));
        }
      }
      if (!job_id.empty()) {
        if (auto job = client->Get(job_id); job.ok()) {
          progress = absl::StrFormat("; job %s had %d of %d results", job_id, job->completed(),
                                     job->total());
        }
      }
    }
    kill(-coordinator_pid, SIGKILL);
    TerminateAndReap(coordinator_pid, 1.0);
    std::cerr << absl::StrFormat(
        "dpinfer run: --timeout %.0f s reached%s; killed %s (logs in %s)\n", options.timeout_s,
        progress, absl::StrJoin(named, ", "), log_dir);
    return 124;
  };
  auto coordinator_failed = [&](const std::string& how) {
    std::cerr << "dpinfer run: the coordinator " << how << "; its log (" << coord_log
              << ") ends with:\n"
              << Tail(coord_log) << "\n";
    kill(-coordinator_pid, SIGKILL);
    return 1;
  };

  // The coordinator writes its port once it is serving.
  int port = 0;
  while (port == 0) {
    if (auto ended = TryReap(coordinator_pid)) return coordinator_failed(*ended);
    if (remaining() <= 0) return kill_on_timeout(nullptr, "");
    std::ifstream in(port_file);
    if (!(in >> port)) {
      port = 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  BatchClient client(absl::StrCat("127.0.0.1:", port));
  if (options.timeout_s > 0) {
    client.CapDeadlines(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(int64_t(remaining() * 1000)));
  }
  std::string name = std::filesystem::path(options.input_path).filename().string();
  auto job = client.Submit(*lines, name);
  if (!job.ok()) return coordinator_failed("refused the job: " + std::string(job.status().message()));
  const std::string job_id = job->id();

  auto last_print = Clock::now();
  auto on_update = [&](const v1::Job& j) {
    if (options.quiet || Seconds(last_print) < 2.0) return;
    last_print = Clock::now();
    std::cerr << absl::StrFormat("dpinfer run: %s %s, %d/%d requests, %d tokens generated\n",
                                 job_id, JobStateName(j.state()), j.completed(), j.total(),
                                 j.generated_tokens());
  };
  absl::StatusOr<v1::Job> final_job;
  while (true) {
    if (remaining() <= 0) return kill_on_timeout(&client, job_id);
    final_job = client.Wait(job_id, std::min(remaining(), 5.0), on_update,
                           /*unreachable_grace_s=*/0);
    if (final_job.ok()) break;
    if (auto ended = TryReap(coordinator_pid)) return coordinator_failed(*ended);
    if (final_job.status().code() != absl::StatusCode::kDeadlineExceeded) {
      return coordinator_failed("stopped answering: " + std::string(final_job.status().message()));
    }
  }
  auto results = client.Results(job_id);
  if (!results.ok()) return coordinator_failed(std::string(results.status().message()));
  absl::Status written = WriteLines(options.output_path, *results);
  // Stop the coordinator (it stops its workers) before reporting.
  TerminateAndReap(coordinator_pid, 10.0);
  kill(-coordinator_pid, SIGKILL);
  g_coordinator_pgid = 0;
  if (!written.ok()) {
    std::cerr << "dpinfer run: " << written.message() << "\n";
    return 1;
  }
  std::cout << SummaryLine(*final_job) << "\n";
  return final_job->state() == v1::JOB_STATE_COMPLETED ? 0 : 1;
}

}  // namespace dpinfer::cli
