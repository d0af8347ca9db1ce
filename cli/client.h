// The client side of BatchService as the `dpinfer` command uses it: every call carries a
// deadline, errors come back as absl::Status naming the coordinator.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dpinfer/v1/batch.grpc.pb.h"

namespace dpinfer::cli {

class BatchClient {
 public:
  explicit BatchClient(const std::string& address);
  absl::StatusOr<v1::Job> Submit(const std::vector<std::string>& lines, const std::string& name);
  absl::StatusOr<v1::Job> Get(const std::string& job_id);
  absl::StatusOr<std::vector<v1::Job>> List();
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);
  absl::StatusOr<std::vector<std::string>> Results(const std::string& job_id);
  absl::StatusOr<std::vector<v1::WorkerStatus>> Workers(double timeout_s = 10);
  // Follows the job until it ends (returns its final state) or `timeout_s` passes
  // (DeadlineExceeded); `on_update` sees every state the coordinator streams. While the
  // coordinator is unreachable (restarting with its state database) it keeps trying for up to
  // `unreachable_grace_s` before giving up.
  absl::StatusOr<v1::Job> Wait(const std::string& job_id, double timeout_s,
                               const std::function<void(const v1::Job&)>& on_update,
                               double unreachable_grace_s = 60);
  const std::string& address() const { return address_; }
  // No call made from now on runs past `deadline` (for `dpinfer run --timeout`).
  void CapDeadlines(std::chrono::system_clock::time_point deadline) { cap_ = deadline; }

 private:
  void SetDeadline(grpc::ClientContext* ctx, double seconds) const;
  absl::Status Annotate(const absl::Status& s) const;
  std::string address_;
  std::unique_ptr<v1::BatchService::Stub> stub_;
  std::chrono::system_clock::time_point cap_ = std::chrono::system_clock::time_point::max();
};

bool IsTerminal(v1::JobState state);
const char* JobStateName(v1::JobState state);  // "queued", "running", ...

// The one-line summary `dpinfer run` and `dpinfer submit` print at the end.
std::string SummaryLine(const v1::Job& job);

// Reads a JSONL file as raw lines (bytes kept as they are; a final line without newline counts).
absl::StatusOr<std::vector<std::string>> ReadLines(const std::string& path);
// Writes lines, each followed by '\n', atomically (temp file + rename).
absl::Status WriteLines(const std::string& path, const std::vector<std::string>& lines);

}  // namespace dpinfer::cli
