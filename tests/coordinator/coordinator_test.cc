// The coordinator's job intake without workers: a large job's lines are parsed (on several threads)
// into requests in input order, blank lines skipped, each bad line refused alone with its own line
// number, a repeated custom_id refused with the line of the first one; cancelling the job answers
// the rest, and every result maps back to its line.
#include "coordinator/coordinator.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dpinfer::coordinator {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string GoodLine(const std::string& custom_id, int i) {
  return nlohmann::json({{"custom_id", custom_id},
                         {"method", "POST"},
                         {"url", "/v1/completions"},
                         {"body", {{"prompt", {i % 512, 7, 9}}, {"max_tokens", 4}}}})
      .dump();
}

TEST(CoordinatorTest, LargeJobKeepsInputOrderAndLineNumbers) {
  Coordinator coordinator(CoordinatorOptions{});
  struct Expected {
    std::string custom_id;  // "" where the line is too broken to have one
    std::string error;      // "" for a valid line
  };
  std::vector<std::string> lines;
  std::vector<Expected> expected;  // one per non-blank line, in order
  for (int i = 0; i < 2000; ++i) {
    const int line_number = static_cast<int>(lines.size()) + 1;
    if (i % 7 == 3) {
      lines.push_back(i % 2 ? "" : "  \t");
      continue;
    }
    if (i % 13 == 5) {
      lines.push_back(absl::StrCat("{\"custom_id\": \"r", i, "\", \"method\": "));
      expected.push_back({"", absl::StrCat("line ", line_number, ": malformed JSON")});
    } else if (i % 17 == 6) {
      lines.push_back(GoodLine("r0", i));  // r0 is on line 1
      expected.push_back(
          {"r0", absl::StrCat("line ", line_number, ": custom_id 'r0' repeats the one on line 1")});
    } else if (i % 19 == 8) {
      lines.push_back(nlohmann::json({{"custom_id", absl::StrCat("r", i)},
                                      {"method", "POST"},
                                      {"url", "/v1/completions"},
                                      {"body", {{"prompt", {1, -2}}}}})
                          .dump());
      expected.push_back({absl::StrCat("r", i), absl::StrCat("line ", line_number,
                                                             ": body.prompt[1] must be a token")});
    } else {
      lines.push_back(GoodLine(absl::StrCat("r", i), i));
      expected.push_back({absl::StrCat("r", i), ""});
    }
  }
  v1::SubmitJobRequest request;
  for (const auto& l : lines) request.add_lines(l);
  auto job = coordinator.Submit(request);
  ASSERT_TRUE(job.ok()) << job.status();
  int64_t refused = 0;
  for (const auto& e : expected) refused += !e.error.empty();
  EXPECT_EQ(job->total(), static_cast<int64_t>(expected.size()));
  EXPECT_EQ(job->failed(), refused);
  EXPECT_EQ(job->state(), v1::JOB_STATE_QUEUED);  // no worker to run the rest

  ASSERT_TRUE(coordinator.Cancel(job->id()).ok());
  auto results = coordinator.Results(job->id());
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), expected.size());
  for (size_t k = 0; k < expected.size(); ++k) {
    SCOPED_TRACE(absl::StrCat("request ", k, ": ", (*results)[k]));
    const nlohmann::json r = nlohmann::json::parse((*results)[k]);
    EXPECT_EQ(r["id"], absl::StrCat("batch_req_", job->id(), "_", k));
    if (expected[k].custom_id.empty()) {
      EXPECT_TRUE(r["custom_id"].is_null());
    } else {
      EXPECT_EQ(r["custom_id"], expected[k].custom_id);
    }
    const std::string message = r["response"]["body"]["error"]["message"];
    if (expected[k].error.empty()) {
      EXPECT_EQ(r["response"]["status_code"], 499);
      EXPECT_THAT(message, HasSubstr("cancelled"));
    } else {
      EXPECT_EQ(r["response"]["status_code"], 400);
      EXPECT_THAT(message, StartsWith(expected[k].error));
    }
  }
}

}  // namespace
}  // namespace dpinfer::coordinator
