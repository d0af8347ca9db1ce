// dpinfer-coordinator: the daemon at the master address. Accepts batch jobs (BatchService),
// registers workers (CoordinatorService), partitions and dispatches, and watches worker health.
// With --local-workers N it also starts and owns N worker processes on this machine.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <memory>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/subprocess.h"
#include "coordinator/coordinator.h"
#include "coordinator/job_store.h"
#include "coordinator/local_workers.h"
#include "coordinator/service.h"

namespace {

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  using dpinfer::coordinator::CoordinatorOptions;
  CLI::App app{"dpinfer-coordinator: accepts batch jobs and dispatches them to DP workers"};
  std::string listen = "0.0.0.0:" + EnvOr("DPINFER_MASTER_PORT", "8470");
  std::string port_file;
  CoordinatorOptions options;
  options.dp_size = std::atoi(EnvOr("DPINFER_DP_SIZE", "0").c_str());
  dpinfer::coordinator::LocalWorkersOptions local;
  std::string model;
  std::string log_level = "info";
  std::string state_db;
  app.add_option("--listen", listen,
                 "HOST:PORT to serve on (port 0 picks a free one; default port from "
                 "DPINFER_MASTER_PORT, else 8470)");
  app.add_option("--port-file", port_file, "write the bound port to this file once serving");
  app.add_option("--dp-size", options.dp_size,
                 "jobs start once this many workers are registered (env DPINFER_DP_SIZE; 0: "
                 "start with whichever are there)");
  app.add_option("--worker-timeout", options.worker_timeout_s,
                 "seconds without a heartbeat, or without progress while holding requests, "
                 "before a worker is declared dead and its requests re-dispatched")
      ->check(CLI::PositiveNumber);
  app.add_option("--heartbeat-interval", options.heartbeat_interval_s,
                 "seconds between worker heartbeats")
      ->check(CLI::PositiveNumber);
  app.add_option("--health-check-interval", options.health_check_interval_s,
                 "seconds between grpc.health.v1 checks of each worker")
      ->check(CLI::PositiveNumber);
  app.add_option("--health-check-timeout", options.health_check_timeout_s,
                 "deadline of one health check")
      ->check(CLI::PositiveNumber);
  app.add_option("--health-check-failures", options.health_check_failures,
                 "consecutive failed health checks that make a worker dead")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-request-attempts", options.max_request_attempts,
                 "dispatches of one request (to workers that die or refuse it) before it is "
                 "answered with an error")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-shard-items", options.max_shard_items,
                 "requests per dispatch call")
      ->check(CLI::PositiveNumber);
  app.add_option("--local-workers", local.count,
                 "start and own this many worker processes on this machine");
  app.add_option("--model", model, "model directory for --local-workers");
  app.add_option("--worker-binary", local.worker_binary,
                 "dpinfer-worker to start (default: next to this binary)");
  app.add_option("--worker-arg", local.worker_args,
                 "extra argument for local workers (repeatable, e.g. --worker-arg=--threads=1)");
  app.add_option("--log-dir", local.log_dir, "local workers write worker-<rank>.log here");
  app.add_option("--max-worker-restarts", local.max_restarts,
                 "replacements per rank for local workers that die");
  app.add_option("--state-db", state_db,
                 "SQLite file that keeps jobs and results across coordinator restarts; "
                 "unfinished jobs resume on start (default: jobs live in memory only)");
  app.add_option("--log-level", log_level, "debug, info, warn or error");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  if (local.count > 0 && model.empty()) {
    std::cerr << "dpinfer-coordinator: --local-workers needs --model DIR\n";
    return 2;
  }
  if (local.count > 0 && options.dp_size == 0) options.dp_size = local.count;

  // Signals are taken synchronously by the main thread; every other thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  dpinfer::coordinator::Coordinator coordinator(options);
  if (!state_db.empty()) {
    auto store = dpinfer::coordinator::JobStore::Open(state_db);
    absl::Status s = store.ok() ? coordinator.AttachStore(std::move(*store)) : store.status();
    if (!s.ok()) {
      std::cerr << "dpinfer-coordinator: " << s.message() << "\n";
      return 1;
    }
  }
  dpinfer::coordinator::BatchServiceImpl batch(&coordinator);
  dpinfer::coordinator::CoordinatorServiceImpl internal(&coordinator);
  int port = 0;
  auto server = dpinfer::coordinator::StartCoordinatorServer(listen, &batch, &internal, &port);
  if (!server.ok()) {
    std::cerr << "dpinfer-coordinator: " << server.status().message() << "\n";
    return 1;
  }
  coordinator.Start();
  LOG_INFO("coordinator serving on port {} (dp_size {}, worker timeout {} s)", port,
           options.dp_size, options.worker_timeout_s);
  if (!port_file.empty()) {
    const std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), port_file.c_str());
  }

  std::unique_ptr<dpinfer::coordinator::LocalWorkers> workers;
  if (local.count > 0) {
    if (local.worker_binary.empty()) local.worker_binary = dpinfer::SelfExeDir() + "/dpinfer-worker";
    local.worker_args.insert(local.worker_args.begin(), {"--model", model});
    local.coordinator_address = absl::StrCat("127.0.0.1:", port);
    workers = std::make_unique<dpinfer::coordinator::LocalWorkers>(local, &coordinator);
    auto* w = workers.get();
    coordinator.SetWorkerDeathHook(
        [w](int64_t pid, const std::string& reason) { w->Kill(pid, reason); });
    absl::Status s = workers->Start();
    if (!s.ok()) {
      std::cerr << "dpinfer-coordinator: " << s.message() << "\n";
      coordinator.SetWorkerDeathHook(nullptr);
      workers->Stop();
      coordinator.Stop();
      return 1;
    }
  }

  int sig = 0;
  sigwait(&signals, &sig);
  LOG_INFO("signal {}: shutting down", sig);
  coordinator.SetWorkerDeathHook(nullptr);
  if (workers) workers->Stop();
  coordinator.Stop();
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}
