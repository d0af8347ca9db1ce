#include "coordinator/job_store.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace dpinfer::coordinator {
namespace {

// Finalizes a prepared statement on every path out of a scope.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Statement() { sqlite3_finalize(stmt_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return stmt_; }
  void BindText(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
  void BindBlob(int i, const std::string& s) {
    sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
  std::string Column(int i) {
    const void* p = sqlite3_column_blob(stmt_, i);
    return p == nullptr ? "" : std::string(static_cast<const char*>(p), sqlite3_column_bytes(stmt_, i));
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

constexpr const char* kSchema = R"sql(
  PRAGMA journal_mode = WAL;
  PRAGMA synchronous = NORMAL;
  CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    info BLOB NOT NULL,       -- dpinfer.v1.Job, serialized
    seed_base INTEGER NOT NULL,
    created_seq INTEGER NOT NULL
  );
  CREATE TABLE IF NOT EXISTS lines (
    job_id TEXT NOT NULL,
    line_number INTEGER NOT NULL,
    line BLOB NOT NULL,
    PRIMARY KEY (job_id, line_number)
  );
  CREATE TABLE IF NOT EXISTS results (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    line BLOB NOT NULL,
    ok INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    generated_tokens INTEGER NOT NULL,
    PRIMARY KEY (job_id, idx)
  );
)sql";

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path) {
  auto store = std::unique_ptr<JobStore>(new JobStore());
  store->path_ = path;
  if (sqlite3_open(path.c_str(), &store->db_) != SQLITE_OK) {
    std::string msg = store->db_ != nullptr ? sqlite3_errmsg(store->db_) : "out of memory";
    return absl::UnavailableError(absl::StrCat("cannot open state database ", path, ": ", msg));
  }
  sqlite3_busy_timeout(store->db_, 5000);
  absl::Status s = store->Exec(kSchema);
  if (!s.ok()) return s;
  store->writer_ = std::thread([s = store.get()] { s->WriterLoop(); });
  return store;
}

JobStore::~JobStore() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  sqlite3_close(db_);
}

absl::Status JobStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("state database ", path_, ": ", msg));
  }
  return absl::OkStatus();
}

absl::Status JobStore::CreateJob(const v1::Job& info, uint64_t seed_base,
                                 const std::vector<std::string>& lines) {
  // The connection is used by one thread at a time: take the writer's turn.
  {
    std::unique_lock<std::mutex> lock(mu_);
    drained_.wait(lock, [this] { return !writing_; });
    writing_ = true;
  }
  auto error = [this] {
    return absl::InternalError(absl::StrCat("state database ", path_, ": ", sqlite3_errmsg(db_)));
  };
  absl::Status s = Exec("BEGIN");
  if (s.ok()) {
    Statement job(db_, "INSERT INTO jobs (id, info, seed_base, created_seq) VALUES (?, ?, ?, "
                       "(SELECT COALESCE(MAX(created_seq), 0) + 1 FROM jobs))");
    Statement line(db_, "INSERT INTO lines (job_id, line_number, line) VALUES (?, ?, ?)");
    if (!job.ok() || !line.ok()) {
      s = error();
    } else {
      job.BindText(1, info.id());
      job.BindBlob(2, info.SerializeAsString());
      sqlite3_bind_int64(job.get(), 3, static_cast<int64_t>(seed_base));
      if (sqlite3_step(job.get()) != SQLITE_DONE) s = error();
      for (size_t i = 0; s.ok() && i < lines.size(); ++i) {
        sqlite3_reset(line.get());
        line.BindText(1, info.id());
        sqlite3_bind_int64(line.get(), 2, static_cast<int64_t>(i + 1));
        line.BindBlob(3, lines[i]);
        if (sqlite3_step(line.get()) != SQLITE_DONE) s = error();
      }
    }
    if (s.ok()) {
      s = Exec("COMMIT");
    } else {
      Exec("ROLLBACK").IgnoreError();
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
  }
  drained_.notify_all();
  cv_.notify_all();
  return s;
}

void JobStore::RecordResult(const std::string& job_id, int64_t index,
                            const StoredResult& result) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(Write{Write::kResult, job_id, index, result, {}});
  }
  cv_.notify_all();
}

void JobStore::UpdateJob(const v1::Job& info) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(Write{Write::kJob, info.id(), 0, {}, info});
  }
  cv_.notify_all();
}

void JobStore::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  drained_.wait(lock, [this] { return queue_.empty() && !writing_; });
}

void JobStore::WriterLoop() {
  while (true) {
    std::vector<Write> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || (!queue_.empty() && !writing_); });
      if (queue_.empty() && stopping_) return;
      if (writing_) continue;
      batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
      queue_.clear();
      writing_ = true;
    }
    absl::Status s = Apply(batch);
    if (!s.ok()) LOG_ERROR("{}", s.ToString());
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
    }
    drained_.notify_all();
    cv_.notify_all();
  }
}

absl::Status JobStore::Apply(const std::vector<Write>& batch) {
  absl::Status s = Exec("BEGIN");
  if (!s.ok()) return s;
  Statement result(db_, "INSERT OR IGNORE INTO results (job_id, idx, line, ok, prompt_tokens, "
                        "generated_tokens) VALUES (?, ?, ?, ?, ?, ?)");
  Statement job(db_, "UPDATE jobs SET info = ? WHERE id = ?");
  if (!result.ok() || !job.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return absl::InternalError(absl::StrCat("state database ", path_, ": ", sqlite3_errmsg(db_)));
  }
  for (const Write& w : batch) {
    sqlite3_stmt* stmt;
    if (w.kind == Write::kResult) {
      stmt = result.get();
      sqlite3_reset(stmt);
      result.BindText(1, w.job_id);
      sqlite3_bind_int64(stmt, 2, w.index);
      result.BindBlob(3, w.result.line);
      sqlite3_bind_int(stmt, 4, w.result.ok ? 1 : 0);
      sqlite3_bind_int64(stmt, 5, w.result.prompt_tokens);
      sqlite3_bind_int64(stmt, 6, w.result.generated_tokens);
    } else {
      stmt = job.get();
      sqlite3_reset(stmt);
      job.BindBlob(1, w.info.SerializeAsString());
      job.BindText(2, w.job_id);
    }
    if (sqlite3_step(stmt) != SQLITE_DONE) {
      Exec("ROLLBACK").IgnoreError();
      return absl::InternalError(
          absl::StrCat("state database ", path_, ": ", sqlite3_errmsg(db_)));
    }
  }
  return Exec("COMMIT");
}

absl::StatusOr<std::vector<StoredJob>> JobStore::LoadAll() {
  Flush();
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<StoredJob> jobs;
  std::map<std::string, size_t> slot;
  {
    Statement q(db_, "SELECT id, info, seed_base FROM jobs ORDER BY created_seq");
    if (!q.ok()) return absl::InternalError(absl::StrCat(path_, ": ", sqlite3_errmsg(db_)));
    while (sqlite3_step(q.get()) == SQLITE_ROW) {
      StoredJob j;
      if (!j.info.ParseFromString(q.Column(1))) {
        return absl::DataLossError(
            absl::StrCat("state database ", path_, ": job ", q.Column(0), " is corrupt"));
      }
      j.seed_base = static_cast<uint64_t>(sqlite3_column_int64(q.get(), 2));
      slot[j.info.id()] = jobs.size();
      jobs.push_back(std::move(j));
    }
  }
  {
    Statement q(db_, "SELECT job_id, line FROM lines ORDER BY job_id, line_number");
    while (sqlite3_step(q.get()) == SQLITE_ROW) {
      auto it = slot.find(q.Column(0));
      if (it != slot.end()) jobs[it->second].lines.push_back(q.Column(1));
    }
  }
  {
    Statement q(db_, "SELECT job_id, idx, line, ok, prompt_tokens, generated_tokens FROM results");
    while (sqlite3_step(q.get()) == SQLITE_ROW) {
      auto it = slot.find(q.Column(0));
      if (it == slot.end()) continue;
      StoredResult r;
      r.line = q.Column(2);
      r.ok = sqlite3_column_int(q.get(), 3) != 0;
      r.prompt_tokens = sqlite3_column_int64(q.get(), 4);
      r.generated_tokens = sqlite3_column_int64(q.get(), 5);
      jobs[it->second].results[sqlite3_column_int64(q.get(), 1)] = std::move(r);
    }
  }
  return jobs;
}

}  // namespace dpinfer::coordinator
