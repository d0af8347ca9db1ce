// Fault tolerance on real processes: a worker SIGKILLed mid-job (dead) and one SIGSTOPped
// mid-job (hung). Either way the job completes in bounded time with every custom_id exactly
// once and correct text; a hung worker that the coordinator owns is killed; `dpinfer run
// --timeout` kills what overruns and says which process.
#include <signal.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_testutil.h"
#include "tests/test_env.h"

namespace dpinfer::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// A job big enough to be interrupted: the reference prompts cycled, greedy, so each result's
// text is known from reference.json.
std::vector<std::string> BigJob(const json& ref, int n) {
  std::vector<std::string> lines;
  for (int i = 0; i < n; ++i) {
    const json& g = ref["greedy"][i % ref["greedy"].size()];
    lines.push_back(CompletionLine(absl::StrCat("req-", i),
                                   {{"prompt", g["prompt_ids"]},
                                    {"max_tokens", g["output_ids"].size()},
                                    {"temperature", 0}}));
  }
  return lines;
}

void ExpectExactlyOnceAndCorrect(const std::vector<std::string>& lines, const json& ref, int n) {
  ASSERT_EQ(static_cast<int>(lines.size()), n);
  auto by_id = ByCustomId(lines);  // fails on duplicates
  ASSERT_EQ(static_cast<int>(by_id.size()), n);
  for (int i = 0; i < n; ++i) {
    const json& g = ref["greedy"][i % ref["greedy"].size()];
    const json& r = by_id.at(absl::StrCat("req-", i));
    ASSERT_EQ(r["response"]["status_code"], 200) << r.dump();
    const std::string text = r["response"]["body"]["choices"][0]["text"];
    ASSERT_EQ(g["prompt"].get<std::string>() + text, g["text"].get<std::string>()) << i;
  }
}

// Waits until the job is under way (some results, far from all).
void WaitUntilMidJob(cli::BatchClient& client, const std::string& job_id, int min_done) {
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline) {
    auto job = client.Get(job_id);
    ASSERT_TRUE(job.ok());
    ASSERT_LT(job->completed(), job->total()) << "job finished before the fault was injected";
    if (job->completed() >= min_done) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  FAIL() << "job never got under way";
}

constexpr int kJobSize = 3000;
const std::vector<std::string> kFastFailureArgs = {
    "--worker-timeout", "5", "--health-check-interval", "0.3", "--health-check-timeout", "0.5",
    "--health-check-failures", "2", "--heartbeat-interval", "0.3"};
const std::vector<std::string> kWorkerArgs = {"--threads", "1", "--max-num-seqs", "16"};

TEST(FaultsTest, WorkerKilledMidJobIsReplacedByTheOthers) {
  SKIP_WITHOUT_SHARED();
  auto cluster = Cluster::Start(
      {.workers = 2, .coordinator_args = kFastFailureArgs, .worker_args = kWorkerArgs});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->WaitForWorkers(2).ok());
  const json ref = LoadStoriesReference();
  auto& client = (*cluster)->client();
  auto job = client.Submit(BigJob(ref, kJobSize), "kill");
  ASSERT_TRUE(job.ok());
  WaitUntilMidJob(client, job->id(), 20);
  (*cluster)->workers()[1]->Signal(SIGKILL);
  const auto start = Clock::now();
  auto done = client.Wait(job->id(), 180, nullptr);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(120));
  EXPECT_EQ(done->state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(done->failed(), 0);
  EXPECT_GT(done->redispatched(), 0);
  auto lines = client.Results(job->id());
  ASSERT_TRUE(lines.ok());
  ExpectExactlyOnceAndCorrect(*lines, ref, kJobSize);
  auto workers = client.Workers();
  ASSERT_TRUE(workers.ok());
  int dead = 0;
  for (const auto& w : *workers) dead += w.state() == "dead";
  EXPECT_EQ(dead, 1);
  EXPECT_TRUE((*cluster)->coordinator().Running());
}

TEST(FaultsTest, HungWorkerIsAbandonedAndItsRequestsRedispatched) {
  SKIP_WITHOUT_SHARED();
  auto cluster = Cluster::Start(
      {.workers = 2, .coordinator_args = kFastFailureArgs, .worker_args = kWorkerArgs});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->WaitForWorkers(2).ok());
  const json ref = LoadStoriesReference();
  auto& client = (*cluster)->client();
  auto job = client.Submit(BigJob(ref, kJobSize), "hang");
  ASSERT_TRUE(job.ok());
  WaitUntilMidJob(client, job->id(), 20);
  Process& hung = *(*cluster)->workers()[1];
  hung.Signal(SIGSTOP);
  const auto start = Clock::now();
  auto done = client.Wait(job->id(), 180, nullptr);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(120));
  EXPECT_EQ(done->state(), v1::JOB_STATE_COMPLETED);
  EXPECT_GT(done->redispatched(), 0);
  auto lines = client.Results(job->id());
  ASSERT_TRUE(lines.ok());
  ExpectExactlyOnceAndCorrect(*lines, ref, kJobSize);
  auto workers = client.Workers();
  ASSERT_TRUE(workers.ok());
  bool found = false;
  for (const auto& w : *workers) {
    if (w.pid() == hung.pid()) {
      found = true;
      EXPECT_EQ(w.state(), "dead");
      EXPECT_FALSE(w.dead_reason().empty());
    }
  }
  EXPECT_TRUE(found);
  // The coordinator does not own this process (it was started by the test, as systemd would),
  // so it abandons it rather than killing it. Resumed, the worker re-registers and serves again.
  EXPECT_TRUE(hung.Running());
  hung.Signal(SIGCONT);
  ASSERT_TRUE((*cluster)->WaitForWorkers(2, 60).ok());
  auto again = client.Submit(BigJob(ref, 8), "after");
  ASSERT_TRUE(again.ok());
  auto done_again = client.Wait(again->id(), 120, nullptr);
  ASSERT_TRUE(done_again.ok());
  auto lines_again = client.Results(again->id());
  ASSERT_TRUE(lines_again.ok());
  ExpectExactlyOnceAndCorrect(*lines_again, ref, 8);
}

TEST(FaultsTest, HungWorkerOwnedByTheCoordinatorIsKilled) {
  SKIP_WITHOUT_SHARED();
  std::vector<std::string> args = kFastFailureArgs;
  args.insert(args.end(), {"--local-workers", "2", "--model", StoriesDir(),
                           "--max-worker-restarts", "0", "--worker-arg=--threads=1",
                           "--worker-arg=--max-num-seqs=16"});
  auto cluster = Cluster::Start({.workers = 0, .coordinator_args = args});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->WaitForWorkers(2).ok());
  const json ref = LoadStoriesReference();
  auto& client = (*cluster)->client();
  auto workers = client.Workers();
  ASSERT_TRUE(workers.ok());
  const pid_t victim = (*workers)[1].pid();
  auto job = client.Submit(BigJob(ref, kJobSize), "owned");
  ASSERT_TRUE(job.ok());
  WaitUntilMidJob(client, job->id(), 20);
  ASSERT_EQ(kill(victim, SIGSTOP), 0);
  auto done = client.Wait(job->id(), 180, nullptr);
  ASSERT_TRUE(done.ok()) << done.status();
  auto lines = client.Results(job->id());
  ASSERT_TRUE(lines.ok());
  ExpectExactlyOnceAndCorrect(*lines, ref, kJobSize);
  // The coordinator started this worker, so it killed it (and reaped it: the pid is gone).
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (kill(victim, 0) == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(kill(victim, 0), 0) << "hung worker pid " << victim << " is still alive";
}

// With --state-db, the coordinator itself may crash: restarted on the same database and port, it
// still knows the job, keeps the results made before the crash, and finishes the rest on the
// workers, which register again by themselves.
TEST(FaultsTest, CoordinatorCrashMidJobResumesFromTheStateDatabase) {
  SKIP_WITHOUT_SHARED();
  const std::string state = MakeTempDir() + "/state.db";
  std::vector<std::string> args = kFastFailureArgs;
  args.insert(args.end(), {"--state-db", state, "--dp-size", "2"});
  auto cluster =
      Cluster::Start({.workers = 2, .coordinator_args = args, .worker_args = kWorkerArgs});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->WaitForWorkers(2).ok());
  const json ref = LoadStoriesReference();
  std::vector<std::string> lines = BigJob(ref, kJobSize);
  lines.push_back("this line is not JSON");
  auto job = (*cluster)->client().Submit(lines, "durable");
  ASSERT_TRUE(job.ok());
  WaitUntilMidJob((*cluster)->client(), job->id(), 200);
  ASSERT_TRUE((*cluster)->RestartCoordinator().ok());
  auto& client = (*cluster)->client();
  auto resumed = client.Get(job->id());
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->total(), kJobSize + 1);
  EXPECT_GT(resumed->completed(), 1) << "results made before the crash were lost";
  EXPECT_LT(resumed->completed(), resumed->total());
  auto done = client.Wait(job->id(), 180, nullptr);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(done->failed(), 1);
  auto results = client.Results(job->id());
  ASSERT_TRUE(results.ok());
  ASSERT_EQ(results->size(), lines.size());
  const json bad = json::parse(results->back());
  EXPECT_EQ(bad["response"]["status_code"], 400);
  results->pop_back();
  ExpectExactlyOnceAndCorrect(*results, ref, kJobSize);
  // Both workers came back to the new coordinator.
  EXPECT_TRUE((*cluster)->WaitForWorkers(2, 30).ok());
}

TEST(FaultsTest, RunTimeoutKillsEveryProcessAndSaysWhich) {
  SKIP_WITHOUT_SHARED();
  const std::string dir = MakeTempDir();
  {
    std::ofstream in(dir + "/in.jsonl");
    for (int i = 0; i < 20000; ++i) {
      in << CompletionLine(absl::StrCat("r", i), {{"prompt", "Once upon a time"},
                                                  {"max_tokens", 400},
                                                  {"ignore_eos", true}})
         << "\n";
    }
  }
  const auto start = Clock::now();
  CommandResult r = RunCommand(absl::StrCat(BinDir(), "/dpinfer run --model ", StoriesDir(),
                                            " --dp 2 --input ", dir, "/in.jsonl --output ", dir,
                                            "/out.jsonl --timeout 4 --worker-arg=--threads=1"));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, 124) << r.output;
  EXPECT_THAT(r.output, ::testing::HasSubstr("--timeout 4 s reached"));
  EXPECT_THAT(r.output, ::testing::HasSubstr("coordinator (pid"));
  EXPECT_THAT(r.output, ::testing::HasSubstr("worker rank 0 (pid"));
  EXPECT_THAT(r.output, ::testing::HasSubstr("worker rank 1 (pid"));
  // Every process it named is gone.
  std::regex pid_re("pid (\\d+)");
  int named = 0;
  for (std::sregex_iterator it(r.output.begin(), r.output.end(), pid_re), end; it != end; ++it) {
    const pid_t pid = std::stoi((*it)[1]);
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (kill(pid, 0) == 0 && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_NE(kill(pid, 0), 0) << "pid " << pid << " survived the timeout";
    ++named;
  }
  EXPECT_GE(named, 3);
}

}  // namespace
}  // namespace dpinfer::testing
