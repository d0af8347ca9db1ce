#include "coordinator/service.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"

namespace dpinfer::coordinator {
namespace {

// Result chunks stay near 1 MB so that clients with gRPC's default 4 MB receive limit (grpcurl,
// Python, Go) can read them; a single longer line still goes out alone.
constexpr size_t kResultChunkBytes = 1 << 20;

template <typename T>
grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context,
                                const absl::StatusOr<T>& result, T* response) {
  auto* reactor = context->DefaultReactor();
  if (result.ok()) *response = *result;
  reactor->Finish(ToGrpcStatus(result.status()));
  return reactor;
}

// Streams the job's state each time it changes, ending after a terminal state. Changes that
// arrive while a write is in flight collapse into one write of the newest state.
class WatchReactor : public grpc::ServerWriteReactor<v1::Job> {
 public:
  WatchReactor(Coordinator* coordinator, std::string job_id)
      : coordinator_(coordinator), job_id_(std::move(job_id)), link_(std::make_shared<Link>()) {
    link_->reactor = this;
    auto id = coordinator_->AddJobListener(job_id_, [link = link_] {
      std::lock_guard<std::mutex> lock(link->mu);
      if (link->reactor != nullptr) link->reactor->OnJobChanged();
    });
    if (!id.ok()) {
      finishing_ = true;
      Finish(ToGrpcStatus(id.status()));
      return;
    }
    listener_id_ = *id;
    std::lock_guard<std::mutex> lock(mu_);
    dirty_ = true;
    MaybeWriteLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (finishing_) return;
    if (!ok || cancelled_) {
      finishing_ = true;
      Finish(grpc::Status::CANCELLED);
      return;
    }
    if (terminal_sent_) {
      finishing_ = true;
      Finish(grpc::Status::OK);
      return;
    }
    MaybeWriteLocked();
  }

  // The client went away (cancelled, deadline): finish now, or once the write in flight ends.
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (!writing_ && !finishing_) {
      finishing_ = true;
      Finish(grpc::Status::CANCELLED);
    }
  }

  void OnDone() override {
    if (listener_id_ >= 0) coordinator_->RemoveJobListener(listener_id_);
    {
      // A listener callback copied before the removal may still run: it holds link->mu while
      // it touches the reactor, so after this block none can.
      std::lock_guard<std::mutex> lock(link_->mu);
      link_->reactor = nullptr;
    }
    delete this;
  }

 private:
  struct Link {
    std::mutex mu;
    WatchReactor* reactor = nullptr;
  };

  void OnJobChanged() {
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_ || cancelled_) return;
    dirty_ = true;
    MaybeWriteLocked();
  }

  void MaybeWriteLocked() {
    if (writing_ || !dirty_ || terminal_sent_ || finishing_) return;
    auto job = coordinator_->GetJob(job_id_);
    if (!job.ok()) {
      finishing_ = true;
      Finish(ToGrpcStatus(job.status()));
      return;
    }
    dirty_ = false;
    current_ = *job;
    const auto s = current_.state();
    terminal_sent_ = s == v1::JOB_STATE_COMPLETED || s == v1::JOB_STATE_CANCELLED ||
                     s == v1::JOB_STATE_FAILED;
    writing_ = true;
    StartWrite(&current_);
  }

  Coordinator* coordinator_;
  const std::string job_id_;
  std::shared_ptr<Link> link_;
  std::mutex mu_;
  int64_t listener_id_ = -1;
  bool writing_ = false;
  bool dirty_ = false;
  bool terminal_sent_ = false;
  bool finishing_ = false;
  bool cancelled_ = false;
  v1::Job current_;
};

class ResultsReactor : public grpc::ServerWriteReactor<v1::ResultChunk> {
 public:
  explicit ResultsReactor(absl::StatusOr<std::vector<std::string>> lines) {
    if (!lines.ok()) {
      Finish(ToGrpcStatus(lines.status()));
      return;
    }
    lines_ = std::move(*lines);
    Next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNKNOWN, "write failed"));
      return;
    }
    Next();
  }
  void OnDone() override { delete this; }

 private:
  void Next() {
    if (pos_ >= lines_.size()) {
      Finish(grpc::Status::OK);
      return;
    }
    chunk_.Clear();
    size_t bytes = 0;
    while (pos_ < lines_.size() && (bytes == 0 || bytes + lines_[pos_].size() <= kResultChunkBytes)) {
      bytes += lines_[pos_].size();
      chunk_.add_lines(std::move(lines_[pos_++]));
    }
    StartWrite(&chunk_);
  }
  std::vector<std::string> lines_;
  size_t pos_ = 0;
  v1::ResultChunk chunk_;
};

}  // namespace

grpc::ServerUnaryReactor* BatchServiceImpl::SubmitJob(grpc::CallbackServerContext* context,
                                                      const v1::SubmitJobRequest* request,
                                                      v1::Job* response) {
  return Reply(context, coordinator_->Submit(*request), response);
}

grpc::ServerUnaryReactor* BatchServiceImpl::GetJob(grpc::CallbackServerContext* context,
                                                   const v1::GetJobRequest* request,
                                                   v1::Job* response) {
  return Reply(context, coordinator_->GetJob(request->job_id()), response);
}

grpc::ServerUnaryReactor* BatchServiceImpl::ListJobs(grpc::CallbackServerContext* context,
                                                     const v1::ListJobsRequest* request,
                                                     v1::ListJobsResponse* response) {
  for (auto& job : coordinator_->ListJobs()) *response->add_jobs() = std::move(job);
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<v1::Job>* BatchServiceImpl::WatchJob(
    grpc::CallbackServerContext* context, const v1::GetJobRequest* request) {
  return new WatchReactor(coordinator_, request->job_id());
}

grpc::ServerUnaryReactor* BatchServiceImpl::CancelJob(grpc::CallbackServerContext* context,
                                                      const v1::CancelJobRequest* request,
                                                      v1::Job* response) {
  return Reply(context, coordinator_->Cancel(request->job_id()), response);
}

grpc::ServerWriteReactor<v1::ResultChunk>* BatchServiceImpl::GetResults(
    grpc::CallbackServerContext* context, const v1::GetResultsRequest* request) {
  return new ResultsReactor(coordinator_->Results(request->job_id()));
}

grpc::ServerUnaryReactor* BatchServiceImpl::ListWorkers(grpc::CallbackServerContext* context,
                                                        const v1::ListWorkersRequest* request,
                                                        v1::ListWorkersResponse* response) {
  for (auto& w : coordinator_->ListWorkers()) *response->add_workers() = std::move(w);
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::Register(grpc::CallbackServerContext* context,
                                                           const v1::RegisterRequest* request,
                                                           v1::RegisterResponse* response) {
  return Reply(context, coordinator_->Register(*request, context->peer()), response);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::Heartbeat(
    grpc::CallbackServerContext* context, const v1::HeartbeatRequest* request,
    v1::HeartbeatResponse* response) {
  *response = coordinator_->Heartbeat(*request);
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartCoordinatorServer(
    const std::string& listen, BatchServiceImpl* batch, CoordinatorServiceImpl* internal,
    int* bound_port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), bound_port);
  // Jobs arrive as one message holding every input line.
  builder.SetMaxReceiveMessageSize(1 << 30);
  builder.SetMaxSendMessageSize(256 << 20);
  builder.RegisterService(batch);
  builder.RegisterService(internal);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *bound_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen));
  }
  return server;
}

}  // namespace dpinfer::coordinator
