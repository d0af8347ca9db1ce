// gRPC front ends of the coordinator: the public BatchService and the internal
// CoordinatorService that workers call. Both are thin callback-API adapters over Coordinator.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/coordinator.h"
#include "dpinfer/v1/batch.grpc.pb.h"
#include "dpinfer/v1/worker.grpc.pb.h"

namespace grpc {
class Server;
}

namespace dpinfer::coordinator {

class BatchServiceImpl final : public v1::BatchService::CallbackService {
 public:
  explicit BatchServiceImpl(Coordinator* coordinator) : coordinator_(coordinator) {}
  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* context,
                                      const v1::SubmitJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerWriteReactor<v1::Job>* WatchJob(grpc::CallbackServerContext* context,
                                              const v1::GetJobRequest* request) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerWriteReactor<v1::ResultChunk>* GetResults(
      grpc::CallbackServerContext* context, const v1::GetResultsRequest* request) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* context,
                                        const v1::ListWorkersRequest* request,
                                        v1::ListWorkersResponse* response) override;

 private:
  Coordinator* coordinator_;
};

class CoordinatorServiceImpl final : public v1::CoordinatorService::CallbackService {
 public:
  explicit CoordinatorServiceImpl(Coordinator* coordinator) : coordinator_(coordinator) {}
  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* context,
                                     const v1::RegisterRequest* request,
                                     v1::RegisterResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;

 private:
  Coordinator* coordinator_;
};

// Builds and starts a server on `listen` ("host:port", port 0 picks one) with both services,
// grpc.health.v1 and reflection; `bound_port` receives the port.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartCoordinatorServer(
    const std::string& listen, BatchServiceImpl* batch, CoordinatorServiceImpl* internal,
    int* bound_port);

}  // namespace dpinfer::coordinator
