// Continuous batching over the paged KV cache. Each step shares a token budget between the
// running sequences (a decode costs 1 token, an unfinished prompt a chunk of it: chunked prefill)
// and then admits waiting sequences first-come-first-served while blocks, sequence slots and
// budget last. When a running sequence needs a block and none is free, the most recently
// admitted sequence is preempted by recompute: its blocks are freed, it goes back to the front of
// the waiting queue with the tokens it generated, and later re-prefills prompt + output.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "worker/engine/engine.h"
#include "worker/engine/kv_cache.h"
#include "worker/engine/tokenizer/tokenizer.h"

namespace dpinfer::engine {

// One request's state inside the engine.
struct Sequence {
  uint64_t id = 0;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> output_ids;
  SamplingParams params;
  uint64_t seed = 0;
  int64_t num_computed = 0;          // leading tokens whose K/V are in the cache
  std::vector<int32_t> block_table;  // KvCache blocks, in logical order
  // Holds the generated text released so far (the result's text, up to text_end).
  std::unique_ptr<IncrementalDetokenizer> detokenizer;
  size_t text_end = std::string::npos;  // where a stop string cut the text

  int64_t num_tokens() const { return static_cast<int64_t>(prompt_ids.size() + output_ids.size()); }
  int32_t token(int64_t i) const {
    const int64_t p = static_cast<int64_t>(prompt_ids.size());
    return i < p ? prompt_ids[i] : output_ids[i - p];
  }
};

// A sequence's share of a step: compute tokens [seq->num_computed, + num_tokens).
struct ScheduledSeq {
  Sequence* seq = nullptr;
  int64_t num_tokens = 0;
};

struct SchedulerOutput {
  std::vector<ScheduledSeq> scheduled;
  int64_t num_tokens = 0;
};

class Scheduler {
 public:
  Scheduler(int32_t max_num_seqs, int32_t max_num_batched_tokens, KvCache* cache)
      : max_num_seqs_(max_num_seqs),
        max_num_batched_tokens_(max_num_batched_tokens),
        cache_(cache) {}

  void AddWaiting(std::unique_ptr<Sequence> seq) { waiting_.push_back(std::move(seq)); }
  // Picks this step's work into `out` (its old contents dropped, its capacity reused) and
  // allocates the cache blocks. The engine advances num_computed.
  void Schedule(SchedulerOutput* out);
  // Removes a running sequence (finished), freeing its blocks.
  std::unique_ptr<Sequence> Finish(Sequence* seq);
  // Removes a waiting or running sequence by id (abort); nullptr when unknown.
  std::unique_ptr<Sequence> Remove(uint64_t id);

  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int64_t num_preemptions() const { return preemptions_; }

 private:
  // Frees the last running sequence and puts it at the front of the waiting queue.
  void PreemptLast();

  int32_t max_num_seqs_;
  int32_t max_num_batched_tokens_;
  KvCache* cache_;                                  // not owned
  std::vector<std::unique_ptr<Sequence>> running_;  // in admission order
  std::deque<std::unique_ptr<Sequence>> waiting_;
  int64_t preemptions_ = 0;
};

}  // namespace dpinfer::engine
