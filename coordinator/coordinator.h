// The coordinator's state machine: the worker registry, the jobs, their partitioning and dispatch,
// and the failure handling that makes every job finish with each request answered exactly once.
//
// Threads: gRPC handlers call in from the server's threads; one monitor thread checks worker
// liveness (heartbeats, grpc.health.v1 checks, progress while busy) and dispatches queued work;
// each dispatched shard has a reader thread that streams its completions back. All state sits
// behind one mutex; no gRPC call is made while holding it.
//
// Exactly once: a request's result is recorded the first time any worker answers it and ignored
// after that; when a worker is declared dead its shards are revoked (their calls cancelled) and
// the requests without a result go back to the job's queue, to be partitioned over the healthy
// workers that remain.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/batch_format.h"
#include "coordinator/job_store.h"
#include "dpinfer/v1/batch.pb.h"
#include "dpinfer/v1/worker.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace dpinfer::coordinator {

struct CoordinatorOptions {
  double heartbeat_interval_s = 1.0;     // told to workers at registration
  // A worker is declared dead when it sends no heartbeat for this long, or when it holds
  // unanswered requests and its progress counters do not move for this long (a hung replica).
  double worker_timeout_s = 60.0;
  double health_check_interval_s = 2.0;  // grpc.health.v1 Check on every live worker
  double health_check_timeout_s = 2.0;
  int32_t health_check_failures = 3;     // consecutive failed checks -> dead
  int32_t dp_size = 0;       // jobs start once this many workers are ready (0: any one)
  int32_t max_shard_items = 512;  // requests per Execute call (keeps messages small)
  // Dispatches of one request before it is answered with an error instead (a request that
  // kills every worker it reaches must not take the whole pool down).
  int32_t max_request_attempts = 3;
};

class Coordinator {
 public:
  explicit Coordinator(CoordinatorOptions options);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Makes jobs durable in `store` and resumes the unfinished jobs it holds (call before Start).
  absl::Status AttachStore(std::unique_ptr<JobStore> store);

  void Start();
  // Cancels every shard call, joins the threads. Idempotent.
  void Stop();

  // --- worker side (CoordinatorService) ---
  // `peer` is the caller's address as gRPC gives it ("ipv4:10.0.0.5:43210"), used when the
  // worker advertises no host.
  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& request,
                                                std::string_view peer);
  v1::HeartbeatResponse Heartbeat(const v1::HeartbeatRequest& request);

  // --- client side (BatchService) ---
  absl::StatusOr<v1::Job> Submit(const v1::SubmitJobRequest& request);
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id);
  std::vector<v1::Job> ListJobs();
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);
  // Result lines in input order; the job must have ended.
  absl::StatusOr<std::vector<std::string>> Results(const std::string& job_id);
  std::vector<v1::WorkerStatus> ListWorkers();

  // Calls `on_change` (from any thread, without locks held) whenever the job changes.
  absl::StatusOr<int64_t> AddJobListener(const std::string& job_id,
                                         std::function<void()> on_change);
  void RemoveJobListener(int64_t listener_id);

  // Called when a worker is declared dead, with its pid and the reason; the local-worker
  // supervisor uses it to kill the processes it owns. Called without locks held.
  void SetWorkerDeathHook(std::function<void(int64_t pid, const std::string& reason)> hook);
  // A process the supervisor owns has ended: its worker (if registered) is dead at once.
  void OnWorkerProcessExited(int64_t pid, const std::string& how);

 private:
  struct Shard;
  struct Worker {
    std::string id;
    int32_t rank = -1;
    std::string address;
    std::string hostname;
    int64_t pid = 0;
    std::string model;
    int32_t max_model_len = 0;
    bool dead = false;
    std::string dead_reason;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::WorkerService::Stub> stub;
    std::unique_ptr<grpc::health::v1::Health::Stub> health;
    absl::Time last_heartbeat;
    absl::Time last_progress;  // counters moved, or a completion arrived
    v1::WorkerProgress progress;
    int32_t health_failures = 0;
    bool health_in_flight = false;
    absl::Time last_health_check = absl::InfinitePast();
    std::set<std::shared_ptr<Shard>> shards;
  };
  struct Shard {
    std::string id;
    std::string job_id;
    std::string worker_id;
    v1::Shard request;
    std::set<int64_t> outstanding;  // dispatched, not yet answered
    bool revoked = false;
    grpc::ClientContext context;
    std::thread thread;
  };
  struct Job {
    v1::Job info;
    std::vector<BatchRequest> requests;
    std::vector<std::string> results;  // rendered line; "" until answered
    std::vector<bool> done;
    std::vector<int32_t> attempts;                // dispatches per request
    std::map<int64_t, std::string> last_failure;  // why a request's last dispatch was revoked
    std::deque<int64_t> pending;       // valid requests waiting to be dispatched
    std::map<std::string, std::shared_ptr<Shard>> shards;
    uint64_t seed_base = 0;
  };
  struct Listener {
    std::string job_id;
    std::function<void()> fn;
  };
  using Callbacks = std::vector<std::function<void()>>;

  // Parses submitted lines into a job's requests (blank lines skipped, duplicate custom_ids
  // refused), on several threads.
  static std::unique_ptr<Job> ParseJob(const std::vector<std::string_view>& lines);
  // Makes a parsed job live: applies results already known (a restored job), records the parse
  // errors, seeds unseeded requests and queues the rest.
  void ActivateJobLocked(Job* job, const std::map<int64_t, StoredResult>* known,
                         Callbacks* after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistJobLocked(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MonitorLoop();
  bool MonitorShouldWakeLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || dispatch_wanted_;
  }
  // Declares dead workers, starts health checks, dispatches; returns work to run unlocked.
  void CheckWorkersLocked(Callbacks* after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DispatchLocked(Callbacks* after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DeclareDeadLocked(Worker* worker, const std::string& reason, Callbacks* after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Cancels the shard's call and re-queues its unanswered requests; `reason` is kept for the
  // error of a request that runs out of attempts.
  void RevokeShardLocked(Job* job, const std::shared_ptr<Shard>& shard, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordResultLocked(Job* job, int64_t index, std::string line, bool ok,
                          int64_t prompt_tokens, int64_t generated_tokens, Callbacks* after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeFinishJobLocked(Job* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NotifyLocked(const std::string& job_id, Callbacks* after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunShard(std::shared_ptr<Shard> shard, v1::WorkerService::Stub* stub);
  void OnCompletion(const std::shared_ptr<Shard>& shard, const v1::Completion& completion);
  void OnShardEnded(const std::shared_ptr<Shard>& shard, const grpc::Status& status);
  void StartHealthCheckLocked(Worker* worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<Worker*> ReadyWorkersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string ServedModelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CoordinatorOptions options_;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Worker>> workers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> job_order_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, Listener> listeners_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Shard>> ended_shards_ ABSL_GUARDED_BY(mu_);  // to join
  std::set<std::shared_ptr<Shard>> live_shards_ ABSL_GUARDED_BY(mu_);      // threads not joined
  // Processes (hostname, pid) declared hung; they may not register again.
  std::set<std::pair<std::string, int64_t>> hung_processes_ ABSL_GUARDED_BY(mu_);
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // New pending work (a job, re-queued requests, a worker to take them): wakes the monitor.
  bool dispatch_wanted_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void(int64_t, const std::string&)> death_hook_ ABSL_GUARDED_BY(mu_);
  std::thread monitor_;
  // Health checks in flight hold this count; Stop() waits for it to drain.
  int32_t health_calls_ ABSL_GUARDED_BY(mu_) = 0;
  const std::string instance_;  // random prefix for ids, unique per coordinator run
  std::unique_ptr<JobStore> store_;  // null: jobs live in memory only
};

}  // namespace dpinfer::coordinator
