// The whole path on real processes: a coordinator and DP workers serving the real stories260K
// model reproduce the greedy texts of its reference.json (HF transformers' output, equal to
// llama2.c's), identically for dp 1, 2 and 3, through the service API and the CLI.
#include <grpcpp/grpcpp.h>

#include <csignal>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_testutil.h"
#include "tests/test_env.h"

namespace dpinfer::testing {
namespace {

using nlohmann::json;

// Reference prompts as text and as token ids, greedy, max_tokens = the reference length.
std::vector<std::string> ReferenceLines(const json& ref) {
  std::vector<std::string> lines;
  int i = 0;
  for (const auto& g : ref["greedy"]) {
    const int n = g["output_ids"].size();
    lines.push_back(CompletionLine(absl::StrCat("text-", i),
                                   {{"model", "stories260K"},
                                    {"prompt", g["prompt"]},
                                    {"max_tokens", n},
                                    {"temperature", 0}}));
    lines.push_back(CompletionLine(absl::StrCat("ids-", i),
                                   {{"prompt", g["prompt_ids"]}, {"max_tokens", n},
                                    {"temperature", 0}}));
    ++i;
  }
  return lines;
}

void ExpectMatchesReference(const std::map<std::string, json>& results, const json& ref) {
  int i = 0;
  for (const auto& g : ref["greedy"]) {
    for (const std::string kind : {"text-", "ids-"}) {
      const std::string id = absl::StrCat(kind, i);
      ASSERT_EQ(results.count(id), 1u) << id;
      const json& r = results.at(id);
      ASSERT_EQ(r["response"]["status_code"], 200) << r.dump();
      const json& body = r["response"]["body"];
      EXPECT_EQ(body["object"], "text_completion");
      EXPECT_EQ(body["model"], "stories260K");
      EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
      EXPECT_EQ(body["usage"]["completion_tokens"], g["output_ids"].size());
      EXPECT_EQ(body["usage"]["prompt_tokens"], g["prompt_ids"].size());
      // The completion continues the prompt: prompt + completion is the reference text.
      const std::string text = body["choices"][0]["text"];
      EXPECT_EQ(g["prompt"].get<std::string>() + text, g["text"].get<std::string>()) << id;
    }
    ++i;
  }
}

TEST(EndToEndTest, CoordinatorAndTwoWorkersReproduceTheReferenceGreedyText) {
  SKIP_WITHOUT_SHARED();
  auto cluster = Cluster::Start({.workers = 2, .coordinator_args = {"--dp-size", "2"}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->WaitForWorkers(2).ok());
  const json ref = LoadStoriesReference();
  auto& client = (*cluster)->client();
  auto job = client.Submit(ReferenceLines(ref), "reference");
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = client.Wait(job->id(), 120, nullptr);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(done->failed(), 0);
  auto lines = client.Results(job->id());
  ASSERT_TRUE(lines.ok()) << lines.status();
  ASSERT_EQ(lines->size(), ref["greedy"].size() * 2);
  // Results come back in input order.
  for (size_t i = 0; i < lines->size(); ++i) {
    const json r = json::parse((*lines)[i]);
    EXPECT_EQ(r["custom_id"], (i % 2 == 0 ? "text-" : "ids-") + std::to_string(i / 2));
  }
  ExpectMatchesReference(ByCustomId(*lines), ref);
  // Both replicas did work: the static split gave each a slice. Their counters arrive with the
  // next heartbeat, so wait for it.
  int busy = 0;
  for (int attempt = 0; attempt < 100 && busy < 2; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto workers = client.Workers();
    ASSERT_TRUE(workers.ok());
    busy = 0;
    for (const auto& w : *workers) busy += w.completed_requests() > 0;
  }
  EXPECT_EQ(busy, 2);
}

TEST(EndToEndTest, HealthServiceAnswersOnBothDaemons) {
  SKIP_WITHOUT_SHARED();
  auto cluster = Cluster::Start({.workers = 1});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->WaitForWorkers(1).ok());
  auto workers = (*cluster)->client().Workers();
  ASSERT_TRUE(workers.ok());
  for (const std::string& address :
       {absl::StrCat("127.0.0.1:", (*cluster)->port()), (*workers)[0].address()}) {
    auto stub = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(stub->Check(&ctx, req, &resp).ok()) << address;
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << address;
  }
}

// A mixed job (greedy reference prompts plus seeded sampling) gives the same results whatever
// the number of replicas: partitioning must not change any request's output.
TEST(EndToEndTest, DpRunGivesIdenticalResultsForDp1Dp2Dp3) {
  SKIP_WITHOUT_SHARED();
  const json ref = LoadStoriesReference();
  std::vector<std::string> lines = ReferenceLines(ref);
  for (int i = 0; i < 12; ++i) {
    lines.push_back(CompletionLine(absl::StrCat("sampled-", i),
                                   {{"prompt", "Once upon a time"},
                                    {"max_tokens", 40},
                                    {"temperature", 0.9},
                                    {"top_p", 0.95},
                                    {"top_k", 40},
                                    {"seed", 1000 + i}}));
  }
  const std::string dir = MakeTempDir();
  {
    std::ofstream in(dir + "/in.jsonl");
    for (const auto& l : lines) in << l << "\n";
  }
  std::map<int, std::map<std::string, json>> by_dp;
  for (int dp : {1, 2, 3}) {
    const std::string out = absl::StrCat(dir, "/out", dp, ".jsonl");
    CommandResult r = RunCommand(absl::StrCat(BinDir(), "/dpinfer run --model ", StoriesDir(),
                                              " --dp ", dp, " --input ", dir, "/in.jsonl",
                                              " --output ", out,
                                              " --timeout 240 --worker-arg=--threads=1"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    // The summary line names succeeded/failed requests, tokens, wall time and tokens/s.
    EXPECT_THAT(r.output, ::testing::HasSubstr(absl::StrCat("requests: ", lines.size(),
                                                            " succeeded, 0 failed")));
    EXPECT_THAT(r.output, ::testing::HasSubstr("generated tokens/s:"));
    std::ifstream in(out);
    std::vector<std::string> result_lines;
    for (std::string l; std::getline(in, l);) result_lines.push_back(l);
    ASSERT_EQ(result_lines.size(), lines.size());
    by_dp[dp] = ByCustomId(result_lines);
    ExpectMatchesReference(by_dp[dp], ref);
  }
  std::set<std::string> distinct_sampled;
  for (const auto& [id, r] : by_dp[1]) {
    const json& c1 = r["response"]["body"]["choices"][0];
    for (int dp : {2, 3}) {
      const json& c = by_dp[dp].at(id)["response"]["body"]["choices"][0];
      EXPECT_EQ(c["text"], c1["text"]) << id << " dp=" << dp;
      EXPECT_EQ(c["finish_reason"], c1["finish_reason"]) << id << " dp=" << dp;
    }
    if (id.rfind("sampled-", 0) == 0) distinct_sampled.insert(c1["text"]);
  }
  // Different seeds really sampled different continuations.
  EXPECT_GT(distinct_sampled.size(), 6u);
}

TEST(EndToEndTest, CliSubmitStatusResultsAndCancel) {
  SKIP_WITHOUT_SHARED();
  auto cluster = Cluster::Start({.workers = 2});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->WaitForWorkers(2).ok());
  const std::string dir = MakeTempDir();
  const std::string coord = absl::StrCat(" --coordinator 127.0.0.1:", (*cluster)->port());
  const json ref = LoadStoriesReference();
  {
    std::ofstream in(dir + "/in.jsonl");
    for (const auto& l : ReferenceLines(ref)) in << l << "\n";
  }
  // submit, waiting for the results.
  CommandResult r = RunCommand(absl::StrCat(BinDir(), "/dpinfer submit", coord, " --input ", dir,
                                            "/in.jsonl --output ", dir, "/out.jsonl"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  {
    std::ifstream out(dir + "/out.jsonl");
    std::vector<std::string> lines;
    for (std::string l; std::getline(out, l);) lines.push_back(l);
    ExpectMatchesReference(ByCustomId(lines), ref);
  }
  // --no-wait prints the job id; status and results work on it.
  r = RunCommand(absl::StrCat(BinDir(), "/dpinfer submit --no-wait", coord, " --input ", dir,
                              "/in.jsonl"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string job_id = r.output.substr(0, r.output.find('\n'));
  ASSERT_THAT(job_id, ::testing::StartsWith("job-"));
  ASSERT_TRUE((*cluster)->client().Wait(job_id, 120, nullptr).ok());
  r = RunCommand(absl::StrCat(BinDir(), "/dpinfer status", coord, " ", job_id));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::HasSubstr("completed"));
  r = RunCommand(absl::StrCat(BinDir(), "/dpinfer results", coord, " ", job_id, " -o ", dir,
                              "/fetched.jsonl"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  {
    std::ifstream out(dir + "/fetched.jsonl");
    std::vector<std::string> lines;
    for (std::string l; std::getline(out, l);) lines.push_back(l);
    ExpectMatchesReference(ByCustomId(lines), ref);
  }
  // An unknown job is a clear error.
  r = RunCommand(absl::StrCat(BinDir(), "/dpinfer status", coord, " job-nope"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, ::testing::HasSubstr("no job 'job-nope'"));

  // cancel: a long job is cancelled; every custom_id still appears exactly once.
  std::vector<std::string> long_lines;
  for (int i = 0; i < 400; ++i) {
    long_lines.push_back(CompletionLine(
        absl::StrCat("long-", i),
        {{"prompt", "Once upon a time"}, {"max_tokens", 400}, {"ignore_eos", true}}));
  }
  auto job = (*cluster)->client().Submit(long_lines, "long");
  ASSERT_TRUE(job.ok());
  r = RunCommand(absl::StrCat(BinDir(), "/dpinfer cancel", coord, " ", job->id()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::HasSubstr("cancelled"));
  auto lines = (*cluster)->client().Results(job->id());
  ASSERT_TRUE(lines.ok()) << lines.status();
  auto by_id = ByCustomId(*lines);
  EXPECT_EQ(by_id.size(), long_lines.size());
  int cancelled = 0;
  for (const auto& [id, l] : by_id) cancelled += l["response"]["status_code"] == 499;
  EXPECT_GT(cancelled, 0);
  // The workers are still serving after the cancel.
  auto after = (*cluster)->client().Submit(ReferenceLines(ref), "after-cancel");
  ASSERT_TRUE(after.ok());
  auto done = (*cluster)->client().Wait(after->id(), 120, nullptr);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->failed(), 0);
}

TEST(EndToEndTest, WorkerTakesCoordinatorAndRankFromTheEnvironment) {
  SKIP_WITHOUT_SHARED();
  auto cluster = Cluster::Start({.workers = 0});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto added = (*cluster)->AddWorker(
      {}, {{"DPINFER_MASTER_IP", "127.0.0.1"},
           {"DPINFER_MASTER_PORT", std::to_string((*cluster)->port())},
           {"DPINFER_DP_RANK", "5"},
           {"DPINFER_DP_RANK_LOCAL", "1"}});
  ASSERT_TRUE(added.ok());
  ASSERT_TRUE((*cluster)->WaitForWorkers(1).ok());
  auto workers = (*cluster)->client().Workers();
  ASSERT_TRUE(workers.ok());
  ASSERT_EQ(workers->size(), 1u);
  EXPECT_EQ((*workers)[0].dp_rank(), 5);
  EXPECT_EQ((*workers)[0].pid(), (*cluster)->workers()[0]->pid());
}

}  // namespace
}  // namespace dpinfer::testing

namespace dpinfer::testing {
namespace {

// A client that stops watching (deadline) must not leave a call the server waits for: the
// coordinator still shuts down promptly on SIGTERM.
TEST(EndToEndTest, CoordinatorShutsDownPromptlyAfterWatchersLeave) {
  SKIP_WITHOUT_SHARED();
  auto cluster = Cluster::Start({.workers = 0});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto& client = (*cluster)->client();
  auto job = client.Submit({CompletionLine("q", {{"prompt", "hi"}})}, "queued forever");
  ASSERT_TRUE(job.ok());
  for (int i = 0; i < 3; ++i) {
    auto waited = client.Wait(job->id(), 0.3, nullptr);
    EXPECT_EQ(waited.status().code(), absl::StatusCode::kDeadlineExceeded) << waited.status();
  }
  (*cluster)->coordinator().Signal(SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  while ((*cluster)->coordinator().Running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE((*cluster)->coordinator().Running()) << "coordinator hung on shutdown";
}

}  // namespace
}  // namespace dpinfer::testing
