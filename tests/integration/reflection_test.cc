// Server reflection is on for both daemons, so grpcurl and friends can discover the API. The test
// speaks grpc.reflection.v1alpha through a generic stub with hand-encoded protobuf bytes (the
// reflection messages' generated classes live inside libgrpc++_reflection and cannot be linked
// twice).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_testutil.h"
#include "tests/test_env.h"

namespace dpinfer::testing {
namespace {

// One ServerReflectionRequest{list_services: "*"}, one response, then done.
class ListServices : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit ListServices(const std::string& address)
      : stub_(grpc::CreateChannel(address, grpc::InsecureChannelCredentials())) {
    // Field 7 (list_services), wire type 2 (length-delimited): tag 0x3a, length 1, "*".
    const std::string request("\x3a\x01*", 3);
    grpc::Slice slice(request);
    request_ = grpc::ByteBuffer(&slice, 1);
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    stub_.PrepareBidiStreamingCall(
        &context_, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        grpc::StubOptions(), this);
    StartWrite(&request_);
    StartRead(&response_);
    StartCall();
  }
  void OnWriteDone(bool ok) override { StartWritesDone(); }
  void OnReadDone(bool ok) override {
    if (ok) {
      std::vector<grpc::Slice> slices;
      response_.Dump(&slices);
      for (auto& s : slices) bytes_.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  void OnDone(const grpc::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    done_ = true;
    cv_.notify_all();
  }
  // The raw response bytes; service names appear in them as plain strings.
  std::string Await() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    EXPECT_TRUE(status_.ok()) << status_.error_message();
    return bytes_;
  }

 private:
  grpc::GenericStub stub_;
  grpc::ClientContext context_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  std::string bytes_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  grpc::Status status_;
};

TEST(ReflectionTest, BothDaemonsListTheirServices) {
  SKIP_WITHOUT_SHARED();
  auto cluster = Cluster::Start({.workers = 1});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->WaitForWorkers(1).ok());
  auto workers = (*cluster)->client().Workers();
  ASSERT_TRUE(workers.ok());

  ListServices coordinator(absl::StrCat("127.0.0.1:", (*cluster)->port()));
  const std::string c = coordinator.Await();
  EXPECT_THAT(c, ::testing::HasSubstr("dpinfer.v1.BatchService"));
  EXPECT_THAT(c, ::testing::HasSubstr("dpinfer.v1.CoordinatorService"));
  EXPECT_THAT(c, ::testing::HasSubstr("grpc.health.v1.Health"));

  ListServices worker((*workers)[0].address());
  const std::string w = worker.Await();
  EXPECT_THAT(w, ::testing::HasSubstr("dpinfer.v1.WorkerService"));
  EXPECT_THAT(w, ::testing::HasSubstr("grpc.health.v1.Health"));
}

}  // namespace
}  // namespace dpinfer::testing
