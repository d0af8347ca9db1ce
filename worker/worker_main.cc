// dpinfer-worker: one data-parallel replica. Loads the model, serves WorkerService (plus
// grpc.health.v1 and reflection) and keeps itself registered with the coordinator.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "worker/engine/engine.h"
#include "worker/registration.h"
#include "worker/worker_service.h"

namespace {

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "[::1]";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dpinfer-worker: one data-parallel replica serving a model"};
  std::string coordinator =
      EnvOr("DPINFER_MASTER_IP", "127.0.0.1") + ":" + EnvOr("DPINFER_MASTER_PORT", "8470");
  std::string listen = "0.0.0.0:0";
  std::string advertise_host;
  int dp_rank = EnvInt("DPINFER_DP_RANK", -1);
  int dp_rank_local = EnvInt("DPINFER_DP_RANK_LOCAL", -1);
  int dp_size = EnvInt("DPINFER_DP_SIZE", 0);
  dpinfer::engine::EngineOptions eo;
  std::string log_level = "info";
  app.add_option("--coordinator", coordinator,
                 "coordinator HOST:PORT (default DPINFER_MASTER_IP:DPINFER_MASTER_PORT, else "
                 "127.0.0.1:8470)");
  app.add_option("--model", eo.model_dir, "HF model directory")->required();
  app.add_option("--served-model-name", eo.served_model_name,
                 "model name in results (default: the directory's name)");
  app.add_option("--listen", listen, "HOST:PORT for WorkerService (port 0 picks one)");
  app.add_option("--advertise-host", advertise_host,
                 "host the coordinator should dial (default: the listen host, or the address "
                 "the coordinator sees)");
  app.add_option("--dp-rank", dp_rank, "data-parallel rank (env DPINFER_DP_RANK; -1: assigned)");
  app.add_option("--dp-rank-local", dp_rank_local, "rank on this node (env DPINFER_DP_RANK_LOCAL)");
  app.add_option("--dp-size", dp_size, "data-parallel size (env DPINFER_DP_SIZE)");
  app.add_option("--max-num-seqs", eo.max_num_seqs, "sequences in flight")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-num-batched-tokens", eo.max_num_batched_tokens, "tokens per step")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-model-len", eo.max_model_len, "context length (0: the model's)");
  app.add_option("--kv-cache-tokens", eo.kv_cache_tokens, "KV cache capacity in tokens (0: auto)");
  app.add_option("--threads", eo.num_threads, "CPU threads for the engine (0: all cores)");
  app.add_option("--device", eo.device, "cpu, cuda or auto (cuda when a GPU is usable)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--dtype", eo.dtype,
                 "float32 (exact), or bfloat16 (cuda only: the fast serving path)")
      ->check(CLI::IsMember({"float32", "bfloat16"}));
  app.add_option("--gpu-memory-utilization", eo.gpu_memory_utilization,
                 "cuda: fraction of the GPU's memory this worker may use (weights, activations, "
                 "KV cache); workers sharing a GPU each take their own share")
      ->check(CLI::Range(0.01, 1.0));
  app.add_flag("--enforce-eager", eo.enforce_eager, "cuda: no CUDA graphs for decode steps");
  app.add_option("--cuda-device", eo.cuda_device,
                 "cuda: the visible GPU to use (-1: the node-local DP rank modulo the GPU count)");
  app.add_option("--log-level", log_level, "debug, info, warn or error");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  // A rank the coordinator assigns replaces the -1 once registered (Registration).
  dpinfer::SetLogPrefix(absl::StrCat("worker ", dp_rank));

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  eo.local_rank = std::max(0, dp_rank_local);
  auto engine = dpinfer::engine::Engine::Create(eo);
  if (!engine.ok()) {
    std::cerr << "dpinfer-worker: cannot load model: " << engine.status().message() << "\n";
    return 1;
  }
  const std::string model_name = (*engine)->served_model_name();
  const int32_t max_model_len = (*engine)->max_model_len();
  const int gpu = (*engine)->stats().cuda_device;
  dpinfer::worker::WorkerServiceImpl service(std::move(*engine));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(256 << 20);
  builder.SetMaxSendMessageSize(256 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "dpinfer-worker: cannot listen on " << listen << "\n";
    return 1;
  }
  service.Start();

  std::string host = advertise_host;
  if (host.empty()) {
    host = listen.substr(0, listen.rfind(':'));
    const std::string coord_host = coordinator.substr(0, coordinator.rfind(':'));
    // A wildcard listen address is not dialable: loopback when the coordinator is local, else
    // leave it to the coordinator, which sees where the registration came from.
    if (host == "0.0.0.0" || host == "[::]" || host.empty()) {
      host = IsLoopback(coord_host) ? "127.0.0.1" : "";
    }
  }
  char hostname[256] = {0};
  gethostname(hostname, sizeof(hostname) - 1);
  dpinfer::v1::RegisterRequest reg;
  reg.set_address(absl::StrCat(host, ":", port));
  reg.set_dp_rank(dp_rank);
  reg.set_dp_rank_local(dp_rank_local);
  reg.set_dp_size(dp_size);
  reg.set_hostname(hostname);
  reg.set_pid(getpid());
  reg.set_model(model_name);
  reg.set_max_model_len(max_model_len);
  reg.set_max_num_seqs(eo.max_num_seqs);
  LOG_INFO("worker serving '{}' on port {} (pid {}), coordinator {}, engine on {}", model_name,
           port, getpid(), coordinator, gpu >= 0 ? absl::StrCat("GPU ", gpu) : std::string("CPU"));
  // A permanent refusal ends the process (non-zero), so a supervisor such as systemd restarts
  // it fresh or shows the error.
  static std::atomic<int> exit_code{0};
  dpinfer::worker::Registration registration(
      coordinator, reg, [&service] { return service.Progress(); },
      [](const std::string&) {
        exit_code = 1;
        kill(getpid(), SIGTERM);
      });
  registration.Start();

  int sig = 0;
  sigwait(&signals, &sig);
  LOG_INFO("signal {}: shutting down", sig);
  registration.Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  service.Stop();
  return exit_code.load();
}
