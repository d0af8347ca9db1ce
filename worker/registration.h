// Keeps this worker registered with the coordinator: registers (retrying with backoff while the
// coordinator is unreachable), then sends heartbeats with progress counters; when the coordinator
// no longer knows the worker (it restarted, or declared this worker dead) it registers again.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "dpinfer/v1/worker.grpc.pb.h"

namespace dpinfer::worker {

class Registration {
 public:
  // `on_refused` is called (from the registration thread) when the coordinator refuses this
  // worker for good (FAILED_PRECONDITION: wrong model or dp size, or declared hung).
  Registration(std::string coordinator_address, v1::RegisterRequest request,
               std::function<v1::WorkerProgress()> progress,
               std::function<void(const std::string&)> on_refused);
  ~Registration();
  void Start();
  void Stop();

 private:
  void Loop();

  const std::string coordinator_address_;
  const v1::RegisterRequest request_;
  std::function<v1::WorkerProgress()> progress_;
  std::function<void(const std::string&)> on_refused_;
  std::unique_ptr<v1::CoordinatorService::Stub> stub_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace dpinfer::worker
