// Durable job state in an embedded SQLite database (`dpinfer-coordinator --state-db PATH`): each
// job's input lines, its seed, its state, and every result as it arrives. A coordinator that
// restarts with the same database resumes unfinished jobs: requests already answered keep their
// result, the rest are dispatched again, so a crash of the coordinator itself loses nothing.
//
// Writes are queued and applied by one writer thread in batched transactions, so recording a
// result never waits for the disk while the coordinator holds its lock.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "dpinfer/v1/batch.pb.h"

struct sqlite3;

namespace dpinfer::coordinator {

struct StoredResult {
  std::string line;
  bool ok = false;
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
};

struct StoredJob {
  v1::Job info;
  uint64_t seed_base = 0;
  std::vector<std::string> lines;          // the submitted lines, blank ones included
  std::map<int64_t, StoredResult> results;  // by request index
};

class JobStore {
 public:
  // Creates the database and its tables if needed. Errors name the path.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path);
  ~JobStore();  // flushes

  // Written synchronously: once Submit returns, the job survives a crash.
  absl::Status CreateJob(const v1::Job& info, uint64_t seed_base,
                         const std::vector<std::string>& lines);
  // Queued writes.
  void RecordResult(const std::string& job_id, int64_t index, const StoredResult& result);
  void UpdateJob(const v1::Job& info);
  // Blocks until every queued write is on disk.
  void Flush();

  absl::StatusOr<std::vector<StoredJob>> LoadAll();

 private:
  struct Write {
    enum Kind { kResult, kJob } kind;
    std::string job_id;
    int64_t index = 0;
    StoredResult result;
    v1::Job info;
  };
  JobStore() = default;
  void WriterLoop();
  absl::Status Exec(const char* sql);
  absl::Status Apply(const std::vector<Write>& batch);

  std::string path_;
  sqlite3* db_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable drained_;
  std::deque<Write> queue_;
  bool writing_ = false;
  bool stopping_ = false;
  std::thread writer_;
};

}  // namespace dpinfer::coordinator
