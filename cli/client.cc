#include "cli/client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/grpc_status.h"

namespace dpinfer::cli {
namespace {

constexpr double kUnaryTimeoutS = 60;

}  // namespace

void BatchClient::SetDeadline(grpc::ClientContext* ctx, double seconds) const {
  ctx->set_deadline(std::min(cap_, std::chrono::system_clock::now() +
                                       std::chrono::milliseconds(int64_t(seconds * 1000))));
}

BatchClient::BatchClient(const std::string& address) : address_(address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(1 << 30);
  args.SetMaxSendMessageSize(1 << 30);
  stub_ = v1::BatchService::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

absl::Status BatchClient::Annotate(const absl::Status& s) const {
  if (s.ok()) return s;
  if (s.code() == absl::StatusCode::kUnavailable) {
    return absl::UnavailableError(
        absl::StrCat("coordinator at ", address_, " is unreachable: ", s.message()));
  }
  return s;
}

absl::StatusOr<v1::Job> BatchClient::Submit(const std::vector<std::string>& lines,
                                            const std::string& name) {
  v1::SubmitJobRequest request;
  request.set_name(name);
  for (const auto& l : lines) request.add_lines(l);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kUnaryTimeoutS * 5);
  v1::Job job;
  absl::Status s = FromGrpcStatus(stub_->SubmitJob(&ctx, request, &job));
  if (!s.ok()) return Annotate(s);
  return job;
}

absl::StatusOr<v1::Job> BatchClient::Get(const std::string& job_id) {
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kUnaryTimeoutS);
  v1::Job job;
  absl::Status s = FromGrpcStatus(stub_->GetJob(&ctx, request, &job));
  if (!s.ok()) return Annotate(s);
  return job;
}

absl::StatusOr<std::vector<v1::Job>> BatchClient::List() {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kUnaryTimeoutS);
  v1::ListJobsResponse response;
  absl::Status s = FromGrpcStatus(stub_->ListJobs(&ctx, v1::ListJobsRequest(), &response));
  if (!s.ok()) return Annotate(s);
  return std::vector<v1::Job>(response.jobs().begin(), response.jobs().end());
}

absl::StatusOr<v1::Job> BatchClient::Cancel(const std::string& job_id) {
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kUnaryTimeoutS);
  v1::Job job;
  absl::Status s = FromGrpcStatus(stub_->CancelJob(&ctx, request, &job));
  if (!s.ok()) return Annotate(s);
  return job;
}

absl::StatusOr<std::vector<std::string>> BatchClient::Results(const std::string& job_id) {
  v1::GetResultsRequest request;
  request.set_job_id(job_id);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kUnaryTimeoutS * 10);
  auto reader = stub_->GetResults(&ctx, request);
  std::vector<std::string> lines;
  v1::ResultChunk chunk;
  while (reader->Read(&chunk)) {
    for (auto& l : *chunk.mutable_lines()) lines.push_back(std::move(l));
  }
  absl::Status s = FromGrpcStatus(reader->Finish());
  if (!s.ok()) return Annotate(s);
  return lines;
}

absl::StatusOr<std::vector<v1::WorkerStatus>> BatchClient::Workers(double timeout_s) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout_s);
  v1::ListWorkersResponse response;
  absl::Status s =
      FromGrpcStatus(stub_->ListWorkers(&ctx, v1::ListWorkersRequest(), &response));
  if (!s.ok()) return Annotate(s);
  return std::vector<v1::WorkerStatus>(response.workers().begin(), response.workers().end());
}

absl::StatusOr<v1::Job> BatchClient::Wait(const std::string& job_id, double timeout_s,
                                          const std::function<void(const v1::Job&)>& on_update,
                                          double unreachable_grace_s) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(int64_t(timeout_s * 1000));
  auto unreachable_since = Clock::time_point::max();
  while (true) {
    const double left = std::chrono::duration<double>(deadline - Clock::now()).count();
    if (left <= 0) return absl::DeadlineExceededError(absl::StrCat("job ", job_id, " still runs"));
    v1::GetJobRequest request;
    request.set_job_id(job_id);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, left);
    auto reader = stub_->WatchJob(&ctx, request);
    v1::Job job;
    v1::Job last;
    bool any = false;
    while (reader->Read(&job)) {
      last = job;
      any = true;
      unreachable_since = Clock::time_point::max();
      if (on_update) on_update(job);
    }
    absl::Status s = FromGrpcStatus(reader->Finish());
    if (s.ok() && any && IsTerminal(last.state())) return last;
    if (s.code() != absl::StatusCode::kUnavailable) {
      if (!s.ok()) return Annotate(s);
      return absl::InternalError(absl::StrCat("watch of job ", job_id, " ended early"));
    }
    const auto now = Clock::now();
    if (unreachable_since == Clock::time_point::max()) unreachable_since = now;
    if (now - unreachable_since >=
        std::chrono::milliseconds(int64_t(unreachable_grace_s * 1000))) {
      return Annotate(s);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_COMPLETED || state == v1::JOB_STATE_CANCELLED ||
         state == v1::JOB_STATE_FAILED;
}

const char* JobStateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_QUEUED:
      return "queued";
    case v1::JOB_STATE_RUNNING:
      return "running";
    case v1::JOB_STATE_COMPLETED:
      return "completed";
    case v1::JOB_STATE_CANCELLED:
      return "cancelled";
    case v1::JOB_STATE_FAILED:
      return "failed";
    default:
      return "unknown";
  }
}

std::string SummaryLine(const v1::Job& job) {
  const double wall = job.finished_at() > job.started_at() ? job.finished_at() - job.started_at()
                                                           : 0.0;
  const double tok_s = wall > 0 ? job.generated_tokens() / wall : 0.0;
  return absl::StrFormat(
      "requests: %d succeeded, %d failed | prompt tokens: %d | generated tokens: %d | wall time: "
      "%.2f s | generated tokens/s: %.1f",
      job.completed() - job.failed(), job.failed() + (job.total() - job.completed()),
      job.prompt_tokens(), job.generated_tokens(), wall, tok_s);
}

absl::StatusOr<std::vector<std::string>> ReadLines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
  }
  return lines;
}

absl::Status WriteLines(const std::string& path, const std::vector<std::string>& lines) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
    for (const auto& l : lines) out << l << '\n';
    if (!out.flush()) return absl::DataLossError(absl::StrCat("writing ", path, " failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

}  // namespace dpinfer::cli
