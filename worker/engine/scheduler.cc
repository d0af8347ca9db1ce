// Continuous-batching scheduler (see scheduler.h).
#include "worker/engine/scheduler.h"

#include <algorithm>

#include "common/status.h"

namespace dpinfer::engine {

void Scheduler::PreemptLast() {
  std::unique_ptr<Sequence> victim = std::move(running_.back());
  running_.pop_back();
  cache_->Free(&victim->block_table);
  victim->num_computed = 0;  // recompute prompt + generated tokens when readmitted
  waiting_.push_front(std::move(victim));
  ++preemptions_;
}

void Scheduler::Schedule(SchedulerOutput* result) {
  SchedulerOutput& out = *result;
  out.scheduled.clear();
  out.num_tokens = 0;
  int64_t budget = max_num_batched_tokens_;
  bool preempted = false;
  // Running sequences first, oldest first: they already hold cache, so finishing them frees it.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* seq = running_[i].get();
    const int64_t n = std::min(seq->num_tokens() - seq->num_computed, budget);
    CHECK(n > 0);
    bool self_preempted = false;
    while (!cache_->EnsureCapacity(&seq->block_table, seq->num_computed + n)) {
      // The victim is always at or after i: sequences before i are already in this step.
      self_preempted = running_.back().get() == seq;
      PreemptLast();
      preempted = true;
      if (self_preempted) break;
    }
    if (self_preempted) break;
    out.scheduled.push_back({seq, n});
    out.num_tokens += n;
    budget -= n;
    ++i;
  }
  // Admission, strictly FCFS: stop at the first sequence that does not fit. Nothing is admitted
  // in a step that had to preempt, since the cache is already short.
  while (!preempted && !waiting_.empty() && budget > 0 &&
         static_cast<int32_t>(running_.size()) < max_num_seqs_) {
    Sequence* seq = waiting_.front().get();
    const int64_t n = std::min(seq->num_tokens() - seq->num_computed, budget);
    if (!cache_->EnsureCapacity(&seq->block_table, seq->num_computed + n)) break;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    out.scheduled.push_back({seq, n});
    out.num_tokens += n;
    budget -= n;
  }
}

std::unique_ptr<Sequence> Scheduler::Finish(Sequence* seq) {
  auto it = std::find_if(running_.begin(), running_.end(),
                         [seq](const std::unique_ptr<Sequence>& s) { return s.get() == seq; });
  CHECK(it != running_.end());
  std::unique_ptr<Sequence> done = std::move(*it);
  running_.erase(it);
  cache_->Free(&done->block_table);
  return done;
}

std::unique_ptr<Sequence> Scheduler::Remove(uint64_t id) {
  for (auto it = running_.begin(); it != running_.end(); ++it) {
    if ((*it)->id == id) return Finish(it->get());
  }
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
    if ((*it)->id == id) {
      std::unique_ptr<Sequence> s = std::move(*it);
      waiting_.erase(it);
      cache_->Free(&s->block_table);  // empty unless it was preempted mid-way (it never is)
      return s;
    }
  }
  return nullptr;
}

}  // namespace dpinfer::engine
