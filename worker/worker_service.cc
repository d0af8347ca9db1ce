#include "worker/worker_service.h"

#include <unistd.h>

#include <deque>
#include <variant>

#include "common/logging.h"

namespace dpinfer::worker {

// One Execute call: completions are queued by the engine thread and written one at a time
// (gRPC allows one outstanding write per stream). The call finishes once every item answered.
class ShardStream : public grpc::ServerWriteReactor<v1::Completion> {
 public:
  ShardStream(WorkerServiceImpl* service, std::shared_ptr<WorkerServiceImpl::Link> link,
              int64_t items)
      : service_(service), link_(std::move(link)), remaining_(items) {}

  // Called by the engine thread with link->mu held.
  void Push(v1::Completion completion) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    queue_.push_back(std::move(completion));
    --remaining_;
    MaybeWriteLocked();
  }

  // An empty shard has nothing to wait for.
  void FinishIfEmpty() {
    std::lock_guard<std::mutex> lock(mu_);
    MaybeWriteLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok || cancelled_) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "stream closed by the client"));
      return;
    }
    MaybeWriteLocked();
  }

  // The coordinator revoked this shard (or went away): its items are aborted, so finish now or,
  // with a write in flight, when that write ends (whatever its outcome).
  void OnCancel() override {
    service_->Cancel(link_);
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (!writing_) FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      link_->stream = nullptr;
    }
    delete this;
  }

 private:
  void MaybeWriteLocked() {
    if (writing_ || finished_) return;
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      StartWrite(&current_);
    } else if (remaining_ <= 0) {
      FinishLocked(grpc::Status::OK);
    }
  }
  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  WorkerServiceImpl* service_;
  std::shared_ptr<WorkerServiceImpl::Link> link_;
  std::mutex mu_;
  std::deque<v1::Completion> queue_;
  v1::Completion current_;
  int64_t remaining_;
  bool writing_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
};

WorkerServiceImpl::WorkerServiceImpl(std::unique_ptr<engine::Engine> engine)
    : engine_(std::move(engine)) {}

WorkerServiceImpl::~WorkerServiceImpl() { Stop(); }

void WorkerServiceImpl::Start() { thread_ = std::thread([this] { EngineLoop(); }); }

void WorkerServiceImpl::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

v1::WorkerProgress WorkerServiceImpl::Progress() const {
  v1::WorkerProgress p;
  p.set_generated_tokens(generated_tokens_.load());
  p.set_prompt_tokens(prompt_tokens_.load());
  p.set_completed_requests(completed_.load());
  p.set_running(running_.load());
  p.set_waiting(waiting_.load());
  return p;
}

grpc::ServerWriteReactor<v1::Completion>* WorkerServiceImpl::Execute(
    grpc::CallbackServerContext* context, const v1::Shard* shard) {
  auto link = std::make_shared<Link>();
  auto* stream = new ShardStream(this, link, shard->items_size());
  link->stream = stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& item : shard->items()) inbox_.push_back(Pending{link, item});
  }
  cv_.notify_all();
  LOG_INFO("shard {} of job {}: {} requests", shard->shard_id(), shard->job_id(),
           shard->items_size());
  if (shard->items_size() == 0) stream->FinishIfEmpty();
  return stream;
}

void WorkerServiceImpl::Cancel(const std::shared_ptr<Link>& link) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.push_back(link);
  }
  cv_.notify_all();
}

void WorkerServiceImpl::Deliver(const std::shared_ptr<Link>& link, v1::Completion completion) {
  std::lock_guard<std::mutex> lock(link->mu);
  if (link->stream != nullptr) link->stream->Push(std::move(completion));
}

void WorkerServiceImpl::EngineLoop() {
  std::vector<engine::Result> finished;
  while (true) {
    std::vector<Pending> inbox;
    std::vector<std::shared_ptr<Link>> cancelled;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stopping_ || !inbox_.empty() || !cancelled_.empty() || engine_->HasWork();
      });
      if (stopping_) return;
      inbox.swap(inbox_);
      cancelled.swap(cancelled_);
    }
    if (!cancelled.empty()) {
      std::set<Link*> gone;
      for (auto& l : cancelled) gone.insert(l.get());
      for (auto it = in_flight_.begin(); it != in_flight_.end();) {
        if (gone.count(it->second.link.get()) > 0) {
          engine_->Abort(it->first);
          it = in_flight_.erase(it);
        } else {
          ++it;
        }
      }
      // Items of a cancelled call still waiting in this batch are dropped too.
      std::erase_if(inbox, [&](const Pending& p) { return gone.count(p.link.get()) > 0; });
    }
    for (auto& p : inbox) {
      engine::Request request;
      request.id = next_id_++;
      if (p.item.has_token_ids()) {
        request.prompt = std::vector<int32_t>(p.item.token_ids().ids().begin(),
                                              p.item.token_ids().ids().end());
      } else {
        request.prompt = p.item.text();
      }
      const auto& sp = p.item.params();
      request.params.temperature = sp.temperature();
      request.params.top_p = sp.top_p();
      request.params.top_k = sp.top_k();
      if (sp.has_seed()) request.params.seed = sp.seed();
      request.params.max_tokens = sp.max_tokens();
      request.params.stop.assign(sp.stop().begin(), sp.stop().end());
      request.params.stop_token_ids.assign(sp.stop_token_ids().begin(),
                                           sp.stop_token_ids().end());
      request.params.ignore_eos = sp.ignore_eos();
      absl::Status added = engine_->Add(std::move(request));
      if (!added.ok()) {
        v1::Completion c;
        c.set_index(p.item.index());
        c.set_ok(false);
        c.set_error(std::string(added.message()));
        ++refused_;
        Deliver(p.link, std::move(c));
        continue;
      }
      in_flight_[next_id_ - 1] = InFlight{p.link, p.item.index()};
    }
    if (!engine_->HasWork()) {
      PublishStats();
      continue;
    }
    finished.clear();
    absl::Status s = engine_->Step(&finished);
    if (!s.ok()) {
      // An engine failure is not a request's fault: exit so that the coordinator re-dispatches
      // this replica's requests elsewhere.
      LOG_ERROR("engine step failed: {}; exiting", s.ToString());
      spdlog::default_logger()->flush();
      _exit(3);
    }
    for (auto& r : finished) {
      auto it = in_flight_.find(r.id);
      if (it == in_flight_.end()) continue;
      v1::Completion c;
      c.set_index(it->second.index);
      c.set_ok(true);
      c.set_text(std::move(r.text));
      c.mutable_output_ids()->Add(r.output_ids.begin(), r.output_ids.end());
      c.set_prompt_tokens(r.prompt_tokens);
      c.set_finish_reason(engine::FinishReasonName(r.finish_reason));
      Deliver(it->second.link, std::move(c));
      in_flight_.erase(it);
    }
    PublishStats();
  }
}

void WorkerServiceImpl::PublishStats() {
  const engine::EngineStats stats = engine_->stats();
  generated_tokens_.store(stats.generated_tokens);
  prompt_tokens_.store(stats.prompt_tokens);
  completed_.store(stats.finished_requests + refused_);
  running_.store(stats.running);
  waiting_.store(stats.waiting);
}

}  // namespace dpinfer::worker
