// The whole path on the GPU: a coordinator and two workers started with --device cuda (fp32),
// sharing one device, reproduce stories260K's reference greedy texts exactly. Skips, with the
// engine's reason, where this build has no CUDA or no device is visible.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_testutil.h"
#include "tests/test_env.h"
#include "worker/engine/engine.h"

namespace dpinfer::testing {
namespace {

using nlohmann::json;

// Why a CUDA engine cannot start here ("" when it can): the refusal the workers would give.
std::string CudaUnavailableReason() {
  engine::EngineOptions o;
  o.model_dir = SharedDir() + "/models/stories260K";
  o.device = "cuda";
  absl::StatusOr<std::unique_ptr<engine::Engine>> e = engine::Engine::Create(o);
  return e.ok() ? "" : std::string(e.status().message());
}

TEST(CudaEndToEndTest, CoordinatorAndTwoCudaWorkersReproduceTheReferenceGreedyText) {
  SKIP_WITHOUT_SHARED();
  const std::string reason = CudaUnavailableReason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  auto cluster = Cluster::Start(
      {.workers = 2,
       .coordinator_args = {"--dp-size", "2"},
       .worker_args = {"--threads", "1", "--device", "cuda", "--gpu-memory-utilization", "0.3"}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->WaitForWorkers(2).ok());
  const json ref = LoadStoriesReference();
  std::vector<std::string> lines;
  int i = 0;
  for (const auto& g : ref["greedy"]) {
    lines.push_back(
        CompletionLine(absl::StrCat("text-", i++), {{"model", "stories260K"},
                                                    {"prompt", g["prompt"]},
                                                    {"max_tokens", g["output_ids"].size()},
                                                    {"temperature", 0}}));
  }
  auto& client = (*cluster)->client();
  auto job = client.Submit(lines, "reference-cuda");
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = client.Wait(job->id(), 120, nullptr);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(done->failed(), 0);
  auto results = client.Results(job->id());
  ASSERT_TRUE(results.ok()) << results.status();
  const std::map<std::string, json> by_id = ByCustomId(*results);
  i = 0;
  for (const auto& g : ref["greedy"]) {
    const std::string id = absl::StrCat("text-", i++);
    ASSERT_EQ(by_id.count(id), 1u) << id;
    const json& body = by_id.at(id)["response"]["body"];
    ASSERT_EQ(by_id.at(id)["response"]["status_code"], 200) << by_id.at(id).dump();
    const std::string text = body["choices"][0]["text"];
    EXPECT_EQ(g["prompt"].get<std::string>() + text, g["text"].get<std::string>()) << id;
  }
}

}  // namespace
}  // namespace dpinfer::testing
