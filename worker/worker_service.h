// The worker daemon's gRPC side: WorkerService.Execute receives a shard of requests and streams a
// Completion back for each as it finishes. One engine thread owns the Engine (which is not
// thread-safe): RPC handlers only queue work for it and never block.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "dpinfer/v1/worker.grpc.pb.h"
#include "worker/engine/engine.h"

namespace dpinfer::worker {

class WorkerServiceImpl final : public v1::WorkerService::CallbackService {
 public:
  explicit WorkerServiceImpl(std::unique_ptr<engine::Engine> engine);
  ~WorkerServiceImpl() override;

  grpc::ServerWriteReactor<v1::Completion>* Execute(grpc::CallbackServerContext* context,
                                                    const v1::Shard* shard) override;

  void Start();  // the engine thread
  void Stop();
  v1::WorkerProgress Progress() const;
  const engine::Engine& engine() const { return *engine_; }

  // Shared between a shard's reactor (owned by gRPC) and the engine thread, which may outlive
  // it: the reactor pointer is cleared under `mu` when the call ends.
  struct Link {
    std::mutex mu;
    class ShardStream* stream = nullptr;
  };

 private:
  struct Pending {
    std::shared_ptr<Link> link;
    v1::WorkItem item;
  };
  struct InFlight {
    std::shared_ptr<Link> link;
    int64_t index;
  };

  void EngineLoop();
  void PublishStats();
  void Cancel(const std::shared_ptr<Link>& link);
  static void Deliver(const std::shared_ptr<Link>& link, v1::Completion completion);

  std::unique_ptr<engine::Engine> engine_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Pending> inbox_;
  std::vector<std::shared_ptr<Link>> cancelled_;
  bool stopping_ = false;
  std::thread thread_;
  // Engine-thread state.
  std::map<uint64_t, InFlight> in_flight_;
  uint64_t next_id_ = 1;
  int64_t refused_ = 0;  // requests the engine refused at Add (answered with an error)
  // Progress counters for heartbeats.
  std::atomic<int64_t> generated_tokens_{0};
  std::atomic<int64_t> prompt_tokens_{0};
  std::atomic<int64_t> completed_{0};
  std::atomic<int32_t> running_{0};
  std::atomic<int32_t> waiting_{0};

  friend class ShardStream;
};

}  // namespace dpinfer::worker
