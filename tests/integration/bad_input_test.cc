// Bad input fails alone: each malformed line or invalid parameter gets a 400 result for its own
// line, every other line runs, and the daemons keep serving.
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_testutil.h"
#include "tests/test_env.h"

namespace dpinfer::testing {
namespace {

using nlohmann::json;

TEST(BadInputTest, EachBadLineGetsItsOwnErrorAndTheRestRuns) {
  SKIP_WITHOUT_SHARED();
  auto cluster = Cluster::Start({.workers = 2});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->WaitForWorkers(2).ok());
  const json ref = LoadStoriesReference();
  const json& g = ref["greedy"][1];
  const json good = {{"prompt", g["prompt"]}, {"max_tokens", 64}, {"temperature", 0}};
  std::string long_prompt;
  for (int i = 0; i < 600; ++i) long_prompt += "Once upon a time ";

  // custom_id -> what its error message must mention (empty: must succeed).
  std::vector<std::pair<std::string, std::string>> expect;
  std::vector<std::string> lines;
  auto add = [&](const std::string& id, const std::string& line, const std::string& why) {
    lines.push_back(line);
    expect.emplace_back(id, why);
  };
  add("good-0", CompletionLine("good-0", good), "");
  add("", "{\"custom_id\": \"broken\", \"method\": \"POST\",", "malformed JSON");
  add("bad-url", json({{"custom_id", "bad-url"}, {"method", "POST"},
                       {"url", "/v1/chat/completions"}, {"body", good}}).dump(),
      "/v1/chat/completions");
  add("good-1", CompletionLine("good-1", good), "");
  add("neg-max-tokens", CompletionLine("neg-max-tokens", {{"prompt", "hi"}, {"max_tokens", -3}}),
      "max_tokens");
  add("top-p", CompletionLine("top-p", {{"prompt", "hi"}, {"top_p", 1.5}}), "top_p");
  add("too-long", CompletionLine("too-long", {{"prompt", long_prompt}, {"max_tokens", 8}}),
      "context");
  add("not-utf8",
      "{\"custom_id\": \"not-utf8\", \"method\": \"POST\", \"url\": \"/v1/completions\", "
      "\"body\": {\"prompt\": \"caf\xe9 \xff\xfe\", \"max_tokens\": 4}}",
      "UTF-8");
  add("bad-id", CompletionLine("bad-id", {{"prompt", {1, 99999}}, {"max_tokens", 4}}), "99999");
  add("wrong-model", CompletionLine("wrong-model", {{"model", "gpt-9"}, {"prompt", "hi"}}),
      "gpt-9");
  add("good-0", CompletionLine("good-0", good), "unique");  // duplicate custom_id
  add("good-2", CompletionLine("good-2", good), "");

  auto& client = (*cluster)->client();
  auto job = client.Submit(lines, "bad input");
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = client.Wait(job->id(), 120, nullptr);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_STATE_COMPLETED);
  auto results = client.Results(job->id());
  ASSERT_TRUE(results.ok());
  ASSERT_EQ(results->size(), lines.size());
  int failed = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const json r = json::parse((*results)[i]);
    const auto& [id, why] = expect[i];
    if (id.empty()) {
      EXPECT_TRUE(r["custom_id"].is_null()) << r.dump();
    } else {
      EXPECT_EQ(r["custom_id"], id);
    }
    const json& response = r["response"];
    if (why.empty()) {
      ASSERT_EQ(response["status_code"], 200) << r.dump();
      EXPECT_EQ(g["prompt"].get<std::string>() +
                    response["body"]["choices"][0]["text"].get<std::string>(),
                g["text"].get<std::string>());
    } else {
      ++failed;
      EXPECT_EQ(response["status_code"], id == "wrong-model" ? 404 : 400) << r.dump();
      EXPECT_THAT(response["body"]["error"]["message"].get<std::string>(),
                  ::testing::HasSubstr(why))
          << "line " << i + 1;
    }
  }
  EXPECT_EQ(done->failed(), failed);
  // Nothing crashed: both daemons and both workers are alive and still serve.
  EXPECT_TRUE((*cluster)->coordinator().Running());
  for (auto& w : (*cluster)->workers()) EXPECT_TRUE(w->Running());
  auto again = client.Submit({CompletionLine("after", good)}, "after");
  ASSERT_TRUE(again.ok());
  auto done_again = client.Wait(again->id(), 60, nullptr);
  ASSERT_TRUE(done_again.ok());
  EXPECT_EQ(done_again->failed(), 0);
}

TEST(BadInputTest, AnEmptyJobCompletesAtOnce) {
  SKIP_WITHOUT_SHARED();
  auto cluster = Cluster::Start({.workers = 1});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto job = (*cluster)->client().Submit({"", "  "}, "empty");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(job->total(), 0);
}

}  // namespace
}  // namespace dpinfer::testing
