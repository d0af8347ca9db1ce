#include "worker/registration.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace dpinfer::worker {
namespace {
constexpr auto kCallTimeout = std::chrono::seconds(5);
}

Registration::Registration(std::string coordinator_address, v1::RegisterRequest request,
                           std::function<v1::WorkerProgress()> progress,
                           std::function<void(const std::string&)> on_refused)
    : coordinator_address_(std::move(coordinator_address)),
      request_(std::move(request)),
      progress_(std::move(progress)),
      on_refused_(std::move(on_refused)) {
  grpc::ChannelArguments args;
  // Find a restarted coordinator within seconds (gRPC's default backoff grows to 120 s).
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  stub_ = v1::CoordinatorService::NewStub(
      grpc::CreateCustomChannel(coordinator_address_, grpc::InsecureChannelCredentials(), args));
}

Registration::~Registration() { Stop(); }

void Registration::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Registration::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Registration::Loop() {
  std::string worker_id;
  double interval_s = 1.0;
  double backoff_s = 0.2;
  int failures = 0;
  while (true) {
    double wait_s = interval_s;
    if (worker_id.empty()) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
      v1::RegisterResponse response;
      grpc::Status s = stub_->Register(&ctx, request_, &response);
      if (s.ok()) {
        worker_id = response.worker_id();
        interval_s = response.heartbeat_interval_s() > 0 ? response.heartbeat_interval_s() : 1.0;
        wait_s = interval_s;
        backoff_s = 0.2;
        failures = 0;
        if (response.dp_rank() != request_.dp_rank()) {
          SetLogPrefix(absl::StrCat("worker ", response.dp_rank()));
        }
        LOG_INFO("registered with coordinator {} as {} (dp rank {})", coordinator_address_,
                 worker_id, response.dp_rank());
      } else if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        LOG_ERROR("coordinator {} refused this worker: {}", coordinator_address_,
                  s.error_message());
        if (on_refused_) on_refused_(s.error_message());
        return;
      } else {
        // Log the first failure and then every tenth, so an absent coordinator does not flood.
        if (failures++ % 10 == 0) {
          LOG_WARN("cannot register with coordinator {}: {}", coordinator_address_,
                   s.error_message());
        }
        wait_s = backoff_s;
        backoff_s = std::min(backoff_s * 2, 5.0);
      }
    } else {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
      v1::HeartbeatRequest hb;
      hb.set_worker_id(worker_id);
      *hb.mutable_progress() = progress_();
      v1::HeartbeatResponse response;
      grpc::Status s = stub_->Heartbeat(&ctx, hb, &response);
      if (s.ok() && !response.known()) {
        LOG_WARN("coordinator no longer knows worker {}; registering again", worker_id);
        worker_id.clear();
        wait_s = 0;
      } else if (!s.ok()) {
        LOG_WARN("heartbeat to {} failed: {}", coordinator_address_, s.error_message());
      }
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_for(lock, std::chrono::duration<double>(wait_s), [this] { return stopping_; })) {
      return;
    }
  }
}

}  // namespace dpinfer::worker
