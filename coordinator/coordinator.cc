#include "coordinator/coordinator.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "coordinator/partitioner.h"

namespace dpinfer::coordinator {
namespace {

// Whole-job Execute calls can legitimately run for a long time; liveness is judged by heartbeats
// and progress, so the call's own deadline is only a backstop.
constexpr absl::Duration kShardCallDeadline = absl::Hours(72);
constexpr int kCancelledStatusCode = 499;  // as nginx: the client gave up on the request
// Far above any prompt a model takes, far below the message limits.
constexpr size_t kMaxLineBytes = 8 << 20;
constexpr size_t kMaxShardBytes = 64 << 20;

// Whether a failed Execute call means the worker itself is gone or broken (as opposed to the
// call being refused, which says nothing about the worker's health).
bool WorkerAtFault(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::UNIMPLEMENTED:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return false;
    default:
      return true;
  }
}

// gRPC reports IPv6 peers percent-encoded ("ipv6:%5B::1%5D:5000").
std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(s[i + 1]) && std::isxdigit(s[i + 2])) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

double UnixSeconds(absl::Time t) { return absl::ToDoubleSeconds(t - absl::UnixEpoch()); }

bool IsTerminal(v1::JobState s) {
  return s == v1::JOB_STATE_COMPLETED || s == v1::JOB_STATE_CANCELLED ||
         s == v1::JOB_STATE_FAILED;
}

// "ipv4:10.1.2.3:5555" / "ipv6:[::1]:5555" -> the host part, as it can be dialled.
std::string PeerHost(std::string_view peer) {
  for (std::string_view scheme : {"ipv4:", "ipv6:"}) {
    if (peer.substr(0, scheme.size()) == scheme) {
      peer.remove_prefix(scheme.size());
      const std::string decoded = PercentDecode(peer);
      return decoded.substr(0, decoded.rfind(':'));
    }
  }
  return "";
}

std::string RandomHex(int n) {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd());
  std::string s;
  for (int i = 0; i < n; ++i) s += "0123456789abcdef"[gen() % 16];
  return s;
}

}  // namespace

Coordinator::Coordinator(CoordinatorOptions options)
    : options_(std::move(options)), instance_(RandomHex(6)) {}

Coordinator::~Coordinator() { Stop(); }

void Coordinator::Start() { monitor_ = std::thread([this] { MonitorLoop(); }); }

void Coordinator::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && !monitor_.joinable()) return;
    stopping_ = true;
  }
  if (monitor_.joinable()) monitor_.join();
  // Shard threads run callbacks that take mu_, so they are joined without it; a thread can
  // still be finishing after its shard left live_shards_' bookkeeping, hence the loop.
  while (true) {
    std::vector<std::shared_ptr<Shard>> batch;
    {
      absl::MutexLock lock(&mu_);
      for (auto& shard : live_shards_) {
        shard->revoked = true;
        shard->context.TryCancel();
        batch.push_back(shard);
      }
      live_shards_.clear();
      ended_shards_.clear();
    }
    if (batch.empty()) break;
    for (auto& shard : batch) {
      if (shard->thread.joinable()) shard->thread.join();
    }
  }
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int32_t* n) { return *n == 0; }, &health_calls_));
}

// ---------------------------------------------------------------------------------------------
// Workers

absl::StatusOr<v1::RegisterResponse> Coordinator::Register(const v1::RegisterRequest& request,
                                                           std::string_view peer) {
  std::string address = request.address();
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker address '", address, "' must be HOST:PORT"));
  }
  std::string host = address.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    host = PeerHost(peer);
    if (host.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("worker address '", address, "' has no host and the peer '", std::string(peer),
                       "' gives none; pass --advertise-host"));
    }
    address = host + address.substr(colon);
  }
  Callbacks after;
  v1::RegisterResponse response;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("coordinator is shutting down");
    if (options_.dp_size > 0 && request.dp_size() > 0 && request.dp_size() != options_.dp_size) {
      return absl::FailedPreconditionError(
          absl::StrFormat("worker says dp_size %d but this coordinator runs dp_size %d",
                          request.dp_size(), options_.dp_size));
    }
    if (hung_processes_.count({request.hostname(), request.pid()}) > 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "this worker process (host %s, pid %d) was declared hung: it made no progress while "
          "holding requests; restart it to serve again",
          request.hostname(), request.pid()));
    }
    for (auto& [id, w] : workers_) {
      if (!w->dead && w->address == address && w->pid == request.pid() &&
          w->hostname == request.hostname()) {
        // A retried Register (its first reply was lost): the same registration again.
        response.set_worker_id(w->id);
        response.set_dp_rank(w->rank);
        response.set_heartbeat_interval_s(options_.heartbeat_interval_s);
        w->last_heartbeat = absl::Now();
        return response;
      }
    }
    std::set<int32_t> held;
    for (auto& [id, w] : workers_) {
      if (w->dead) continue;
      if (w->address == address) {
        // Another process at the same endpoint means the earlier one is gone.
        DeclareDeadLocked(w.get(), "replaced by a new process at the same address", &after);
        continue;
      }
      if (!request.model().empty() && !w->model.empty() && w->model != request.model()) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "worker serves model '%s' but worker %s (rank %d) serves '%s'; one coordinator "
            "serves one model",
            request.model(), w->id, w->rank, w->model));
      }
      held.insert(w->rank);
    }
    int32_t rank = request.dp_rank();
    if (rank >= 0) {
      if (options_.dp_size > 0 && rank >= options_.dp_size) {
        return absl::InvalidArgumentError(
            absl::StrFormat("dp_rank %d is out of range for dp_size %d", rank, options_.dp_size));
      }
      if (held.count(rank) > 0) {
        return absl::AlreadyExistsError(
            absl::StrFormat("dp_rank %d is already held by a live worker", rank));
      }
    } else {
      rank = 0;
      while (held.count(rank) > 0) ++rank;
    }
    auto w = std::make_unique<Worker>();
    w->id = absl::StrCat("w", instance_, "-", next_id_++);
    w->rank = rank;
    w->address = address;
    w->hostname = request.hostname();
    w->pid = request.pid();
    w->model = request.model();
    w->max_model_len = request.max_model_len();
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(256 << 20);
    args.SetMaxSendMessageSize(256 << 20);
    // Each worker gets its own connection so one hung peer cannot stall another's calls.
    args.SetInt("grpc.use_local_subchannel_pool", 1);
    // Reconnect quickly after a worker restarts (gRPC's default backoff grows to 120 s).
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    w->channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    w->stub = v1::WorkerService::NewStub(w->channel);
    w->health = grpc::health::v1::Health::NewStub(w->channel);
    w->last_heartbeat = w->last_progress = absl::Now();
    LOG_INFO("worker {} registered: rank {}, {} (host {}, pid {}), model '{}'", w->id, rank,
             address, w->hostname, w->pid, w->model);
    response.set_worker_id(w->id);
    response.set_dp_rank(rank);
    response.set_heartbeat_interval_s(options_.heartbeat_interval_s);
    workers_[w->id] = std::move(w);
    dispatch_wanted_ = true;  // queued jobs may have been waiting for it
  }
  for (auto& fn : after) fn();
  return response;
}

v1::HeartbeatResponse Coordinator::Heartbeat(const v1::HeartbeatRequest& request) {
  v1::HeartbeatResponse response;
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(request.worker_id());
  if (it == workers_.end() || it->second->dead) {
    response.set_known(false);
    return response;
  }
  Worker* w = it->second.get();
  const absl::Time now = absl::Now();
  w->last_heartbeat = now;
  const auto& p = request.progress();
  if (p.generated_tokens() != w->progress.generated_tokens() ||
      p.prompt_tokens() != w->progress.prompt_tokens() ||
      p.completed_requests() != w->progress.completed_requests()) {
    w->last_progress = now;
  }
  w->progress = p;
  response.set_known(true);
  return response;
}

void Coordinator::OnWorkerProcessExited(int64_t pid, const std::string& how) {
  Callbacks after;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, w] : workers_) {
      if (!w->dead && w->pid == pid) DeclareDeadLocked(w.get(), "process " + how, &after);
    }
  }
  for (auto& fn : after) fn();
}

void Coordinator::SetWorkerDeathHook(std::function<void(int64_t, const std::string&)> hook) {
  absl::MutexLock lock(&mu_);
  death_hook_ = std::move(hook);
}

std::vector<v1::WorkerStatus> Coordinator::ListWorkers() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::WorkerStatus> out;
  for (auto& [id, w] : workers_) {
    v1::WorkerStatus s;
    s.set_worker_id(w->id);
    s.set_dp_rank(w->rank);
    s.set_address(w->address);
    s.set_state(w->dead ? "dead" : "ready");
    s.set_hostname(w->hostname);
    s.set_pid(w->pid);
    s.set_model(w->model);
    s.set_generated_tokens(w->progress.generated_tokens());
    s.set_completed_requests(w->progress.completed_requests());
    int32_t assigned = 0;
    for (auto& shard : w->shards) assigned += shard->outstanding.size();
    s.set_assigned(assigned);
    s.set_dead_reason(w->dead_reason);
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<Coordinator::Worker*> Coordinator::ReadyWorkersLocked() {
  std::vector<Worker*> ready;
  for (auto& [id, w] : workers_) {
    if (!w->dead) ready.push_back(w.get());
  }
  std::sort(ready.begin(), ready.end(), [](Worker* a, Worker* b) { return a->rank < b->rank; });
  return ready;
}

std::string Coordinator::ServedModelLocked() {
  for (auto& [id, w] : workers_) {
    if (!w->dead) return w->model;
  }
  return "";
}

void Coordinator::DeclareDeadLocked(Worker* worker, const std::string& reason, Callbacks* after) {
  if (worker->dead) return;
  worker->dead = true;
  worker->dead_reason = reason;
  int64_t requeued = 0;
  const std::set<std::shared_ptr<Shard>> shards = worker->shards;
  for (const auto& shard : shards) {
    auto jit = jobs_.find(shard->job_id);
    if (jit == jobs_.end()) continue;
    requeued += shard->outstanding.size();
    RevokeShardLocked(jit->second.get(), shard,
                      absl::StrFormat("worker rank %d (%s) %s", worker->rank, worker->address,
                                      reason));
    NotifyLocked(shard->job_id, after);
  }
  worker->shards.clear();
  if (reason.find("no progress") != std::string::npos) {
    // Its heartbeat thread may be fine while its engine is stuck: keep this process out.
    hung_processes_.insert({worker->hostname, worker->pid});
  }
  LOG_WARN("worker {} (rank {}, {}, pid {}) declared dead: {}; {} unanswered requests re-queued",
           worker->id, worker->rank, worker->address, worker->pid, reason, requeued);
  if (death_hook_ && worker->pid > 0) {
    auto hook = death_hook_;
    const int64_t pid = worker->pid;
    after->push_back([hook, pid, reason] { hook(pid, reason); });
  }
}

void Coordinator::RevokeShardLocked(Job* job, const std::shared_ptr<Shard>& shard,
                                    const std::string& reason) {
  if (shard->revoked) return;
  shard->revoked = true;
  shard->context.TryCancel();
  auto wit = workers_.find(shard->worker_id);
  if (wit != workers_.end()) wit->second->shards.erase(shard);
  for (int64_t index : shard->outstanding) job->last_failure[index] = reason;
  // Back to the front of the queue, in index order, so they are dispatched before newer work.
  std::vector<int64_t> back;
  for (int64_t index : shard->outstanding) {
    if (!job->done[index]) back.push_back(index);
  }
  job->pending.insert(job->pending.begin(), back.begin(), back.end());
  if (!back.empty()) dispatch_wanted_ = true;
  if (!IsTerminal(job->info.state())) job->info.set_redispatched(job->info.redispatched() + back.size());
  shard->outstanding.clear();
  job->shards.erase(shard->id);
}

// ---------------------------------------------------------------------------------------------
// Jobs

std::unique_ptr<Coordinator::Job> Coordinator::ParseJob(
    const std::vector<std::string_view>& lines) {
  auto job = std::make_unique<Job>();
  // Requests in input order: blank lines are skipped, the rest keep their 1-based line number.
  std::vector<std::pair<std::string_view, int64_t>> numbered;
  numbered.reserve(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t\r\n") == std::string_view::npos) continue;
    numbered.emplace_back(lines[i], static_cast<int64_t>(i) + 1);
  }
  job->requests.resize(numbered.size());
  auto parse = [&](size_t index) {
    const auto [line, line_number] = numbered[index];
    BatchRequest& r = job->requests[index];
    if (line.size() > kMaxLineBytes) {
      r.index = index;
      r.status = absl::InvalidArgumentError(absl::StrFormat(
          "line %d: the request is %d bytes; a line may have at most %d", line_number,
          line.size(), kMaxLineBytes));
    } else {
      r = ParseBatchLine(line, index, line_number);
    }
  };
  // Parsing is on the path from SubmitJob to the first dispatch (~20 us a line), and lines are
  // independent: spread them over the cores in blocks taken in turn.
  constexpr size_t kBlock = 32;
  constexpr unsigned kMaxThreads = 16;
  const size_t blocks = (numbered.size() + kBlock - 1) / kBlock;
  const size_t threads =
      std::min<size_t>(std::clamp(std::thread::hardware_concurrency(), 1u, kMaxThreads), blocks);
  std::atomic<size_t> next_block{0};
  auto work = [&] {
    for (size_t b; (b = next_block.fetch_add(1)) < blocks;) {
      for (size_t i = b * kBlock; i < std::min(numbered.size(), (b + 1) * kBlock); ++i) parse(i);
    }
  };
  std::vector<std::thread> helpers;
  for (size_t t = 1; t < threads; ++t) helpers.emplace_back(work);
  work();
  for (auto& t : helpers) t.join();

  std::map<std::string, int64_t> first_line_of;
  for (size_t i = 0; i < numbered.size(); ++i) {
    BatchRequest& r = job->requests[i];
    if (r.status.ok() && r.custom_id.has_value()) {
      const int64_t line_number = numbered[i].second;
      auto [it, inserted] = first_line_of.emplace(*r.custom_id, line_number);
      if (!inserted) {
        r.status = absl::InvalidArgumentError(
            absl::StrFormat("line %d: custom_id '%s' repeats the one on line %d; custom_ids "
                            "must be unique within a job",
                            line_number, *r.custom_id, it->second));
      }
    }
  }
  return job;
}

void Coordinator::ActivateJobLocked(Job* job, const std::map<int64_t, StoredResult>* known,
                                    Callbacks* after) {
  const std::string& id = job->info.id();
  job->info.set_total(job->requests.size());
  job->info.set_completed(0);
  job->info.set_failed(0);
  job->info.set_prompt_tokens(0);
  job->info.set_generated_tokens(0);
  job->results.assign(job->requests.size(), "");
  job->done.assign(job->requests.size(), false);
  job->attempts.assign(job->requests.size(), 0);
  const bool terminal = IsTerminal(job->info.state());
  for (auto& r : job->requests) {
    if (known != nullptr) {
      auto it = known->find(r.index);
      if (it != known->end()) {
        job->done[r.index] = true;
        job->results[r.index] = it->second.line;
        job->info.set_completed(job->info.completed() + 1);
        if (!it->second.ok) job->info.set_failed(job->info.failed() + 1);
        job->info.set_prompt_tokens(job->info.prompt_tokens() + it->second.prompt_tokens);
        job->info.set_generated_tokens(job->info.generated_tokens() +
                                       it->second.generated_tokens);
        continue;
      }
    }
    if (terminal) continue;
    if (!r.status.ok()) {
      RecordResultLocked(job, r.index, RenderError(r, id, 400, std::string(r.status.message())),
                         false, 0, 0, after);
      continue;
    }
    // Unseeded requests get a per-job seed so that a re-dispatched request samples the same
    // way on any replica, and a job's results do not depend on how it was partitioned.
    if (!r.item.params().has_seed()) r.item.mutable_params()->set_seed(job->seed_base + r.index);
    job->pending.push_back(r.index);
  }
  if (!job->pending.empty()) dispatch_wanted_ = true;
  MaybeFinishJobLocked(job);
}

void Coordinator::PersistJobLocked(const Job& job) {
  if (store_ != nullptr) store_->UpdateJob(job.info);
}

absl::Status Coordinator::AttachStore(std::unique_ptr<JobStore> store) {
  auto stored = store->LoadAll();
  if (!stored.ok()) return stored.status();
  Callbacks after;
  absl::MutexLock lock(&mu_);
  store_ = std::move(store);
  int unfinished = 0;
  for (StoredJob& s : *stored) {
    std::unique_ptr<Job> job =
        ParseJob(std::vector<std::string_view>(s.lines.begin(), s.lines.end()));
    job->info = s.info;
    job->seed_base = s.seed_base;
    Job* j = job.get();
    jobs_[j->info.id()] = std::move(job);
    job_order_.push_back(j->info.id());
    ActivateJobLocked(j, &s.results, &after);
    if (!IsTerminal(j->info.state())) {
      ++unfinished;
      LOG_INFO("resuming job {}: {} of {} results already made", j->info.id(),
               j->info.completed(), j->info.total());
    }
  }
  LOG_INFO("state database: {} jobs, {} unfinished", stored->size(), unfinished);
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> Coordinator::Submit(const v1::SubmitJobRequest& request) {
  const absl::Time received = absl::Now();
  // The request outlives Submit, so the lines are parsed where they are.
  const std::vector<std::string_view> lines(request.lines().begin(), request.lines().end());
  std::unique_ptr<Job> job = ParseJob(lines);
  const absl::Time parsed = absl::Now();
  std::random_device rd;
  job->seed_base = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  job->info.set_name(request.name());
  job->info.set_state(v1::JOB_STATE_QUEUED);
  job->info.set_total(job->requests.size());
  job->info.set_created_at(UnixSeconds(absl::Now()));
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("coordinator is shutting down");
    job->info.set_id(absl::StrCat("job-", instance_, "-", next_id_++));
  }
  // Durable before it is acknowledged, and written without holding the coordinator's lock.
  if (store_ != nullptr) {
    absl::Status s = store_->CreateJob(job->info, job->seed_base,
                                       std::vector<std::string>(lines.begin(), lines.end()));
    if (!s.ok()) return s;
  }
  Callbacks after;
  v1::Job info;
  {
    absl::MutexLock lock(&mu_);
    Job* j = job.get();
    const std::string id = j->info.id();
    jobs_[id] = std::move(job);
    job_order_.push_back(id);
    ActivateJobLocked(j, nullptr, &after);
    LOG_INFO("job {} submitted: {} requests ({} refused at parse)", id, j->info.total(),
             j->info.failed());
    LOG_DEBUG("job {}: {} lines parsed in {:.1f} ms, queued {:.1f} ms after", id, lines.size(),
              absl::ToDoubleMilliseconds(parsed - received),
              absl::ToDoubleMilliseconds(absl::Now() - parsed));
    info = j->info;
  }
  for (auto& fn : after) fn();
  return info;
}

absl::StatusOr<v1::Job> Coordinator::GetJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job '", job_id, "'"));
  return it->second->info;
}

std::vector<v1::Job> Coordinator::ListJobs() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Job> out;
  for (const auto& id : job_order_) out.push_back(jobs_[id]->info);
  return out;
}

absl::StatusOr<v1::Job> Coordinator::Cancel(const std::string& job_id) {
  Callbacks after;
  v1::Job info;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job '", job_id, "'"));
    Job* job = it->second.get();
    if (!IsTerminal(job->info.state())) {
      job->info.set_state(v1::JOB_STATE_CANCELLED);
      job->info.set_finished_at(UnixSeconds(absl::Now()));
      std::vector<std::shared_ptr<Shard>> shards;
      for (auto& [sid, s] : job->shards) shards.push_back(s);
      for (auto& s : shards) RevokeShardLocked(job, s, "the job was cancelled");
      job->pending.clear();
      PersistJobLocked(*job);
      LOG_INFO("job {} cancelled with {}/{} results", job_id, job->info.completed(),
               job->info.total());
      NotifyLocked(job_id, &after);
    }
    info = job->info;
  }
  for (auto& fn : after) fn();
  return info;
}

absl::StatusOr<std::vector<std::string>> Coordinator::Results(const std::string& job_id) {
  // Results are handed out only once they are durable, so a restart cannot take back a result
  // a client has already seen.
  if (store_ != nullptr) store_->Flush();
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job '", job_id, "'"));
  Job* job = it->second.get();
  if (!IsTerminal(job->info.state())) {
    return absl::FailedPreconditionError(
        absl::StrFormat("job %s is still running (%d of %d results); wait for it to end",
                        job_id, job->info.completed(), job->info.total()));
  }
  std::vector<std::string> lines;
  lines.reserve(job->results.size());
  for (size_t i = 0; i < job->results.size(); ++i) {
    if (job->done[i]) {
      lines.push_back(job->results[i]);
    } else {
      lines.push_back(RenderError(job->requests[i], job_id, kCancelledStatusCode,
                                  "the job was cancelled before this request finished"));
    }
  }
  return lines;
}

absl::StatusOr<int64_t> Coordinator::AddJobListener(const std::string& job_id,
                                                    std::function<void()> on_change) {
  absl::MutexLock lock(&mu_);
  if (jobs_.count(job_id) == 0) return absl::NotFoundError(absl::StrCat("no job '", job_id, "'"));
  const int64_t id = next_id_++;
  listeners_[id] = Listener{job_id, std::move(on_change)};
  return id;
}

void Coordinator::RemoveJobListener(int64_t listener_id) {
  absl::MutexLock lock(&mu_);
  listeners_.erase(listener_id);
}

void Coordinator::NotifyLocked(const std::string& job_id, Callbacks* after) {
  for (auto& [id, l] : listeners_) {
    if (l.job_id == job_id) after->push_back(l.fn);
  }
}

void Coordinator::RecordResultLocked(Job* job, int64_t index, std::string line, bool ok,
                                     int64_t prompt_tokens, int64_t generated_tokens,
                                     Callbacks* after) {
  if (job->done[index]) return;  // already answered: a late duplicate from a revoked shard
  job->done[index] = true;
  job->results[index] = std::move(line);
  job->info.set_completed(job->info.completed() + 1);
  if (!ok) job->info.set_failed(job->info.failed() + 1);
  job->info.set_prompt_tokens(job->info.prompt_tokens() + prompt_tokens);
  job->info.set_generated_tokens(job->info.generated_tokens() + generated_tokens);
  if (store_ != nullptr) {
    store_->RecordResult(job->info.id(), index,
                         StoredResult{job->results[index], ok, prompt_tokens, generated_tokens});
  }
  MaybeFinishJobLocked(job);
  NotifyLocked(job->info.id(), after);
}

void Coordinator::MaybeFinishJobLocked(Job* job) {
  if (IsTerminal(job->info.state())) return;
  if (job->info.completed() < job->info.total()) return;
  job->info.set_state(v1::JOB_STATE_COMPLETED);
  const double now = UnixSeconds(absl::Now());
  if (job->info.started_at() == 0) job->info.set_started_at(now);
  job->info.set_finished_at(now);
  PersistJobLocked(*job);
  // Copies re-dispatched from a worker that answered late after all are now pointless.
  std::vector<std::shared_ptr<Shard>> leftover;
  for (auto& [id, shard] : job->shards) leftover.push_back(shard);
  for (auto& shard : leftover) RevokeShardLocked(job, shard, "the job completed");
  LOG_INFO("job {} completed: {} requests, {} failed, {} generated tokens in {:.2f} s",
           job->info.id(), job->info.total(), job->info.failed(), job->info.generated_tokens(),
           job->info.finished_at() - job->info.started_at());
}

// ---------------------------------------------------------------------------------------------
// Monitor: liveness and dispatch

void Coordinator::MonitorLoop() {
  while (true) {
    Callbacks after;
    std::vector<std::shared_ptr<Shard>> to_join;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      CheckWorkersLocked(&after);
      dispatch_wanted_ = false;
      DispatchLocked(&after);
      to_join.swap(ended_shards_);
    }
    for (auto& fn : after) fn();
    for (auto& s : to_join) {
      if (s->thread.joinable()) s->thread.join();
    }
    absl::MutexLock lock(&mu_);
    for (auto& s : to_join) live_shards_.erase(s);
    // Woken at once when there is work to dispatch: a submitted job must not wait for the next
    // tick (up to 100 ms on the client's path before its first request reaches a worker).
    mu_.AwaitWithTimeout(absl::Condition(this, &Coordinator::MonitorShouldWakeLocked),
                         absl::Milliseconds(100));
  }
}

void Coordinator::CheckWorkersLocked(Callbacks* after) {
  const absl::Time now = absl::Now();
  const absl::Duration timeout = absl::Seconds(options_.worker_timeout_s);
  for (auto& [id, w] : workers_) {
    if (w->dead) continue;
    if (now - w->last_heartbeat > timeout) {
      DeclareDeadLocked(w.get(),
                        absl::StrFormat("no heartbeat for %.1f s (--worker-timeout %.1f s)",
                                        absl::ToDoubleSeconds(now - w->last_heartbeat),
                                        options_.worker_timeout_s),
                        after);
      continue;
    }
    bool busy = false;
    for (auto& s : w->shards) busy |= !s->outstanding.empty();
    if (busy && now - w->last_progress > timeout) {
      DeclareDeadLocked(w.get(),
                        absl::StrFormat("no progress for %.1f s while holding requests "
                                        "(--worker-timeout %.1f s)",
                                        absl::ToDoubleSeconds(now - w->last_progress),
                                        options_.worker_timeout_s),
                        after);
      continue;
    }
    if (w->health_failures >= options_.health_check_failures) {
      DeclareDeadLocked(w.get(),
                        absl::StrFormat("failed %d health checks in a row", w->health_failures),
                        after);
      continue;
    }
    if (!w->health_in_flight &&
        now - w->last_health_check >= absl::Seconds(options_.health_check_interval_s)) {
      StartHealthCheckLocked(w.get());
    }
  }
}

void Coordinator::StartHealthCheckLocked(Worker* worker) {
  struct Call {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
  };
  auto call = std::make_shared<Call>();
  call->context.set_deadline(absl::ToChronoTime(
      absl::Now() + absl::Seconds(options_.health_check_timeout_s)));
  worker->health_in_flight = true;
  worker->last_health_check = absl::Now();
  ++health_calls_;
  const std::string id = worker->id;
  worker->health->async()->Check(
      &call->context, &call->request, &call->response, [this, call, id](grpc::Status status) {
        absl::MutexLock lock(&mu_);
        --health_calls_;
        auto it = workers_.find(id);
        if (it == workers_.end()) return;
        Worker* w = it->second.get();
        w->health_in_flight = false;
        if (status.ok() &&
            call->response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
          w->health_failures = 0;
        } else {
          ++w->health_failures;
          LOG_WARN("health check of worker {} failed ({} in a row): {}", id, w->health_failures,
                   status.ok() ? "not serving" : status.error_message());
        }
      });
}

void Coordinator::DispatchLocked(Callbacks* after) {
  std::vector<Worker*> ready = ReadyWorkersLocked();
  if (ready.empty()) return;
  const std::string model = ServedModelLocked();
  for (const std::string& job_id : job_order_) {
    Job* job = jobs_[job_id].get();
    if (IsTerminal(job->info.state()) || job->pending.empty()) continue;
    // A new job waits for the full data-parallel group; re-dispatch after a failure uses
    // whichever workers remain.
    if (job->info.state() == v1::JOB_STATE_QUEUED) {
      const int32_t needed = std::max<int32_t>(1, options_.dp_size);
      if (static_cast<int32_t>(ready.size()) < needed) continue;
      job->info.set_state(v1::JOB_STATE_RUNNING);
      job->info.set_started_at(UnixSeconds(absl::Now()));
      job->info.set_model(model);
      PersistJobLocked(*job);
    }
    std::vector<int64_t> items;
    while (!job->pending.empty()) {
      const int64_t index = job->pending.front();
      job->pending.pop_front();
      if (job->done[index]) continue;
      const BatchRequest& r = job->requests[index];
      if (job->attempts[index] >= options_.max_request_attempts) {
        // Every replica it went to died or refused it: it may be what kills them. Answer it
        // with an error rather than let it take down the next worker.
        RecordResultLocked(
            job, index,
            RenderError(r, job_id, 500,
                        absl::StrFormat("request abandoned after %d dispatch attempts; last: %s",
                                        job->attempts[index], job->last_failure[index])),
            false, 0, 0, after);
        continue;
      }
      if (!r.model.empty() && !model.empty() && r.model != model) {
        RecordResultLocked(job, index,
                           RenderError(r, job_id, 404,
                                       absl::StrFormat("The model '%s' does not exist; this "
                                                       "service serves '%s'.",
                                                       r.model, model)),
                           false, 0, 0, after);
        continue;
      }
      items.push_back(index);
    }
    auto parts = PartitionStatic(items, static_cast<int32_t>(ready.size()));
    for (size_t r = 0; r < ready.size(); ++r) {
      Worker* w = ready[r];
      const auto& part = parts[r];
      for (size_t begin = 0, end = 0; begin < part.size(); begin = end) {
        // A shard ends at max_shard_items requests or kMaxShardBytes, whichever comes first,
        // so no dispatch call exceeds the channel's message limit.
        size_t bytes = 0;
        for (end = begin; end < part.size() && end - begin < size_t(options_.max_shard_items);
             ++end) {
          const size_t item = job->requests[part[end]].item.ByteSizeLong();
          if (end > begin && bytes + item > kMaxShardBytes) break;
          bytes += item;
        }
        auto shard = std::make_shared<Shard>();
        shard->id = absl::StrCat(job_id, "/s", next_id_++);
        shard->job_id = job_id;
        shard->worker_id = w->id;
        shard->request.set_job_id(job_id);
        shard->request.set_shard_id(shard->id);
        for (size_t i = begin; i < end; ++i) {
          *shard->request.add_items() = job->requests[part[i]].item;
          shard->outstanding.insert(part[i]);
          ++job->attempts[part[i]];
        }
        shard->context.set_deadline(absl::ToChronoTime(absl::Now() + kShardCallDeadline));
        job->shards[shard->id] = shard;
        w->shards.insert(shard);
        // Progress is measured from the moment a worker has something to do.
        if (w->shards.size() == 1) w->last_progress = absl::Now();
        v1::WorkerService::Stub* stub = w->stub.get();
        live_shards_.insert(shard);
        shard->thread = std::thread([this, shard, stub] { RunShard(shard, stub); });
      }
    }
    NotifyLocked(job_id, after);
  }
}

void Coordinator::RunShard(std::shared_ptr<Shard> shard, v1::WorkerService::Stub* stub) {
  auto reader = stub->Execute(&shard->context, shard->request);
  v1::Completion completion;
  while (reader->Read(&completion)) OnCompletion(shard, completion);
  OnShardEnded(shard, reader->Finish());
}

void Coordinator::OnCompletion(const std::shared_ptr<Shard>& shard,
                               const v1::Completion& completion) {
  Callbacks after;
  {
    absl::MutexLock lock(&mu_);
    auto jit = jobs_.find(shard->job_id);
    if (jit == jobs_.end()) return;
    Job* job = jit->second.get();
    const int64_t index = completion.index();
    if (index < 0 || index >= static_cast<int64_t>(job->requests.size())) return;
    auto wit = workers_.find(shard->worker_id);
    if (wit != workers_.end()) wit->second->last_progress = absl::Now();
    shard->outstanding.erase(index);
    if (IsTerminal(job->info.state())) return;
    const BatchRequest& r = job->requests[index];
    if (completion.ok()) {
      RecordResultLocked(job, index,
                         RenderSuccess(r, completion, job->info.id(), job->info.model(),
                                       static_cast<int64_t>(job->info.created_at())),
                         true, completion.prompt_tokens(), completion.output_ids_size(), &after);
    } else {
      RecordResultLocked(job, index, RenderError(r, job->info.id(), 400, completion.error()),
                         false, 0, 0, &after);
    }
  }
  for (auto& fn : after) fn();
}

void Coordinator::OnShardEnded(const std::shared_ptr<Shard>& shard, const grpc::Status& status) {
  Callbacks after;
  {
    absl::MutexLock lock(&mu_);
    ended_shards_.push_back(shard);
    if (shard->revoked) return;  // its requests were already re-queued
    auto jit = jobs_.find(shard->job_id);
    auto wit = workers_.find(shard->worker_id);
    Worker* w = wit != workers_.end() ? wit->second.get() : nullptr;
    if (w != nullptr) w->shards.erase(shard);
    if (jit == jobs_.end()) return;
    Job* job = jit->second.get();
    NotifyLocked(shard->job_id, &after);
    const std::string failure = absl::StrFormat(
        "dispatch to worker rank %d failed: %s", w != nullptr ? w->rank : -1,
        status.error_message());
    if (!status.ok() && WorkerAtFault(status.error_code())) {
      // A broken Execute stream means the worker crashed or the link to it failed; either way
      // it cannot be trusted with more work until it registers again.
      LOG_WARN("shard {} on worker {} failed: {} ({})", shard->id, shard->worker_id,
               status.error_message(), static_cast<int>(status.error_code()));
      if (w != nullptr) {
        w->shards.insert(shard);
        DeclareDeadLocked(w, "dispatch call failed: " + status.error_message(), &after);
      } else {
        RevokeShardLocked(job, shard, failure);
      }
    } else if (!status.ok()) {
      // The call itself was refused (too large, malformed): the worker is fine, the shard is
      // not. Its requests are retried, and fail alone once they run out of attempts.
      LOG_WARN("shard {} refused by worker {}: {}", shard->id, shard->worker_id,
               status.error_message());
      RevokeShardLocked(job, shard, failure);
    } else if (!shard->outstanding.empty()) {
      LOG_WARN("shard {} ended with {} requests unanswered; re-queueing them", shard->id,
               shard->outstanding.size());
      RevokeShardLocked(job, shard, "the worker ended the call without answering");
    } else {
      job->shards.erase(shard->id);
    }
  }
  for (auto& fn : after) fn();
}

}  // namespace dpinfer::coordinator
