// Tests for the OpenAI Batch JSONL parser and renderer: exact WorkItems for valid lines, a
// line-numbered message naming the field for every kind of bad line, and output lines that parse
// back with the documented fields.
#include "coordinator/batch_format.h"

#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dpinfer::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A valid request line with `body` as its body.
std::string Line(const std::string& body) {
  return absl::StrCat(R"({"custom_id": "r1", "method": "POST", "url": "/v1/completions", "body": )",
                      body, "}");
}

TEST(ParseBatchLineTest, StringPromptWithAllParams) {
  BatchRequest r = ParseBatchLine(
      Line(R"({"model": "m", "prompt": "Once upon", "max_tokens": 32, "temperature": 0.5,
               "top_p": 0.9, "top_k": 40, "seed": 3, "stop": ["\n", "END"],
               "stop_token_ids": [2, 7], "ignore_eos": true, "n": 1, "unknown": {"x": 1}})"),
      4, 5);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.index, 4);
  EXPECT_EQ(r.custom_id, "r1");
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.item.index(), 4);
  ASSERT_EQ(r.item.prompt_case(), v1::WorkItem::kText);
  EXPECT_EQ(r.item.text(), "Once upon");
  const v1::SamplingParams& p = r.item.params();
  EXPECT_EQ(p.max_tokens(), 32);
  EXPECT_FLOAT_EQ(p.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(p.top_p(), 0.9f);
  EXPECT_EQ(p.top_k(), 40);
  ASSERT_TRUE(p.has_seed());
  EXPECT_EQ(p.seed(), 3u);
  EXPECT_THAT(p.stop(), ElementsAre("\n", "END"));
  EXPECT_THAT(p.stop_token_ids(), ElementsAre(2, 7));
  EXPECT_TRUE(p.ignore_eos());
}

TEST(ParseBatchLineTest, TokenIdPromptAndStringStop) {
  BatchRequest r = ParseBatchLine(
      Line(
          R"({"prompt": [1, 15043, 0], "stop": "\n", "temperature": 0, "seed": 18446744073709551615})"),
      0, 1);
  ASSERT_TRUE(r.status.ok()) << r.status;
  ASSERT_EQ(r.item.prompt_case(), v1::WorkItem::kTokenIds);
  EXPECT_THAT(r.item.token_ids().ids(), ElementsAre(1, 15043, 0));
  EXPECT_THAT(r.item.params().stop(), ElementsAre("\n"));
  EXPECT_EQ(r.item.params().temperature(), 0.0f);
  EXPECT_EQ(r.item.params().seed(), 18446744073709551615u);
  EXPECT_EQ(r.model, "");
}

TEST(ParseBatchLineTest, Defaults) {
  BatchRequest r = ParseBatchLine(Line(R"({"prompt": "hi", "seed": null})"), 2, 3);
  ASSERT_TRUE(r.status.ok()) << r.status;
  const v1::SamplingParams& p = r.item.params();
  EXPECT_EQ(p.max_tokens(), 16);
  EXPECT_FLOAT_EQ(p.temperature(), 1.0f);
  EXPECT_FLOAT_EQ(p.top_p(), 1.0f);
  EXPECT_EQ(p.top_k(), -1);
  EXPECT_FALSE(p.has_seed());
  EXPECT_TRUE(p.stop().empty());
  EXPECT_TRUE(p.stop_token_ids().empty());
  EXPECT_FALSE(p.ignore_eos());
}

TEST(ParseBatchLineTest, IntegralFloatIsAnInteger) {
  BatchRequest r = ParseBatchLine(Line(R"({"prompt": "hi", "max_tokens": 8.0})"), 0, 1);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.item.params().max_tokens(), 8);
}

struct BadLine {
  std::string name;
  std::string line;
  std::string expected;  // a substring of the message besides the line number
};

void PrintTo(const BadLine& c, std::ostream* os) { *os << c.name; }

class BadLineTest : public ::testing::TestWithParam<BadLine> {};

TEST_P(BadLineTest, GivesLineNumberedMessageNamingTheField) {
  const BadLine& c = GetParam();
  BatchRequest r = ParseBatchLine(c.line, 6, 7);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument) << r.status;
  const std::string message(r.status.message());
  EXPECT_THAT(message, HasSubstr("line 7: "));
  EXPECT_THAT(message, HasSubstr(c.expected));
  EXPECT_EQ(r.index, 6);
}

std::string Stops(int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) absl::StrAppend(&s, i ? ", " : "", "\"s", i, "\"");
  return s + "]";
}

INSTANTIATE_TEST_SUITE_P(
    All, BadLineTest,
    ::testing::Values(
        BadLine{"MalformedJson", R"({"custom_id": "r1", "body": )", "malformed JSON"},
        BadLine{"InvalidUtf8", Line("{\"prompt\": \"ab\xff\"}"),
                "body.prompt not valid UTF-8 (byte"},
        BadLine{"NotAnObject", "[1, 2]", "must be a JSON object"},
        BadLine{
            "UnknownUrl",
            R"({"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"prompt": "x"}})",
            "url '/v1/chat/completions' is not supported; use /v1/completions"},
        BadLine{
            "MethodGet",
            R"({"custom_id": "r1", "method": "GET", "url": "/v1/completions", "body": {"prompt": "x"}})",
            "method 'GET'"},
        BadLine{"BodyMissing", R"({"custom_id": "r1", "method": "POST", "url": "/v1/completions"})",
                "body is required"},
        BadLine{"MaxTokensNegative", Line(R"({"prompt": "x", "max_tokens": -4})"),
                "body.max_tokens must be in [1, 2^31), got -4"},
        BadLine{"MaxTokensZero", Line(R"({"prompt": "x", "max_tokens": 0})"),
                "body.max_tokens must be in [1, 2^31), got 0"},
        BadLine{"MaxTokensFraction", Line(R"({"prompt": "x", "max_tokens": 1.5})"),
                "body.max_tokens must be an integer, got 1.5"},
        BadLine{"MaxTokensString", Line(R"({"prompt": "x", "max_tokens": "16"})"),
                "body.max_tokens must be an integer, got \"16\""},
        BadLine{"TopPTooLarge", Line(R"({"prompt": "x", "top_p": 1.5})"),
                "body.top_p must be in (0, 1], got 1.5"},
        BadLine{"TopPZero", Line(R"({"prompt": "x", "top_p": 0})"),
                "body.top_p must be in (0, 1], got 0"},
        BadLine{"TemperatureNegative", Line(R"({"prompt": "x", "temperature": -1})"),
                "body.temperature must be >= 0, got -1"},
        BadLine{"TemperatureString", Line(R"({"prompt": "x", "temperature": "hot"})"),
                "body.temperature must be a number, got \"hot\""},
        BadLine{"TopKMinusTwo", Line(R"({"prompt": "x", "top_k": -2})"), "body.top_k must be -1"},
        BadLine{"SeedNegative", Line(R"({"prompt": "x", "seed": -3})"),
                "body.seed must be a non-negative integer, got -3"},
        BadLine{"PromptMissing", Line(R"({"max_tokens": 4})"), "body.prompt is required"},
        BadLine{"PromptListOfStrings", Line(R"({"prompt": ["a", "b"]})"),
                "body.prompt must be a single prompt"},
        BadLine{"PromptEmptyList", Line(R"({"prompt": []})"),
                "body.prompt must not be an empty array"},
        BadLine{"PromptNegativeId", Line(R"({"prompt": [1, -5]})"),
                "body.prompt[1] must be a token id in [0, 2^31), got -5"},
        BadLine{"PromptFractionalId", Line(R"({"prompt": [1.5]})"),
                "body.prompt[0] must be an integer, got 1.5"},
        BadLine{"Stop17", Line(absl::StrCat(R"({"prompt": "x", "stop": )", Stops(17), "}")),
                "body.stop must have at most 16 entries, got 17"},
        BadLine{"StopEmptyString", Line(R"({"prompt": "x", "stop": ["a", ""]})"),
                "body.stop[1] must not be empty"},
        BadLine{"StopTokenIdNegative", Line(R"({"prompt": "x", "stop_token_ids": [-1]})"),
                "body.stop_token_ids[0]"},
        BadLine{"IgnoreEosString", Line(R"({"prompt": "x", "ignore_eos": "yes"})"),
                "body.ignore_eos must be true or false"},
        BadLine{"NTwo", Line(R"({"prompt": "x", "n": 2})"), "body.n must be 1"},
        BadLine{"CustomIdMissing",
                R"({"method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}})",
                "custom_id is required"},
        BadLine{
            "CustomIdNumber",
            R"({"custom_id": 5, "method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}})",
            "custom_id must be a string, got 5"}),
    [](const ::testing::TestParamInfo<BadLine>& info) { return info.param.name; });

TEST(ParseBatchLineTest, RecoversCustomIdWhenBodyIsBad) {
  BatchRequest r = ParseBatchLine(Line(R"({"model": "m", "prompt": "x", "top_p": 2})"), 0, 9);
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.custom_id, "r1");
  EXPECT_EQ(r.model, "m");
}

TEST(ParseBatchLineTest, RecoversCustomIdWhenPromptIsNotUtf8) {
  BatchRequest r = ParseBatchLine(Line("{\"prompt\": \"\xc3\x28\"}"), 0, 2);
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("line 2: body.prompt not valid UTF-8"));
  EXPECT_EQ(r.custom_id, "r1");
}

TEST(ParseBatchLineTest, NoCustomIdWhenJsonIsMalformed) {
  BatchRequest r = ParseBatchLine(R"({"custom_id": "r1", )", 0, 1);
  EXPECT_FALSE(r.status.ok());
  EXPECT_FALSE(r.custom_id.has_value());
}

TEST(RenderTest, SuccessLineHasDocumentedFields) {
  BatchRequest r = ParseBatchLine(Line(R"({"prompt": "x"})"), 3, 4);
  ASSERT_TRUE(r.status.ok()) << r.status;
  v1::Completion c;
  c.set_index(3);
  c.set_ok(true);
  c.set_text("héllo, 世界 🙂");
  c.add_output_ids(10);
  c.add_output_ids(11);
  c.add_output_ids(12);
  c.set_prompt_tokens(5);
  c.set_finish_reason("length");
  const std::string line = RenderSuccess(r, c, "job9", "stories", 1700000000);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["id"], "batch_req_job9_3");
  EXPECT_EQ(j["custom_id"], "r1");
  EXPECT_TRUE(j["error"].is_null());
  const nlohmann::json& resp = j["response"];
  EXPECT_EQ(resp["status_code"], 200);
  EXPECT_EQ(resp["request_id"], "job9-3");
  const nlohmann::json& body = resp["body"];
  EXPECT_EQ(body["id"], "cmpl-job9-3");
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["created"], 1700000000);
  EXPECT_EQ(body["model"], "stories");
  ASSERT_EQ(body["choices"].size(), 1u);
  EXPECT_EQ(body["choices"][0]["index"], 0);
  EXPECT_EQ(body["choices"][0]["text"], "héllo, 世界 🙂");
  EXPECT_TRUE(body["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(body["usage"]["completion_tokens"], 3);
  EXPECT_EQ(body["usage"]["total_tokens"], 8);
}

TEST(RenderTest, SuccessNeverThrowsOnBadUtf8Text) {
  BatchRequest r;
  r.custom_id = "a";
  v1::Completion c;
  c.set_text("cut \xe4\xb8");  // a detokenizer could stop mid-character
  c.set_finish_reason("stop");
  nlohmann::json j = nlohmann::json::parse(RenderSuccess(r, c, "j", "m", 1));
  EXPECT_EQ(j["response"]["body"]["choices"][0]["text"], "cut \xEF\xBF\xBD");
}

// RenderSuccess as it was first written: an ordered_json tree, dumped. The direct writer must give
// the same bytes for any text, ids and names, ill-formed UTF-8 and control characters included.
std::string RenderSuccessAsTree(const BatchRequest& request, const v1::Completion& completion,
                                const std::string& job_id, const std::string& model,
                                int64_t created) {
  using Json = nlohmann::ordered_json;
  const int64_t completion_tokens = completion.output_ids_size();
  Json choice = {{"index", 0},
                 {"text", completion.text()},
                 {"logprobs", nullptr},
                 {"finish_reason", completion.finish_reason()}};
  Json body = {{"id", absl::StrCat("cmpl-", job_id, "-", request.index)},
               {"object", "text_completion"},
               {"created", created},
               {"model", model},
               {"choices", Json::array({std::move(choice)})},
               {"usage",
                {{"prompt_tokens", completion.prompt_tokens()},
                 {"completion_tokens", completion_tokens},
                 {"total_tokens", completion.prompt_tokens() + completion_tokens}}}};
  Json out = {{"id", absl::StrCat("batch_req_", job_id, "_", request.index)},
              {"custom_id", request.custom_id ? Json(*request.custom_id) : Json(nullptr)},
              {"response",
               {{"status_code", 200},
                {"request_id", absl::StrCat(job_id, "-", request.index)},
                {"body", std::move(body)}}},
              {"error", nullptr}};
  return out.dump(-1, ' ', false, Json::error_handler_t::replace);
}

TEST(RenderTest, SuccessLineIsTheTreeDumpByteForByte) {
  const std::vector<std::string> texts = {
      "",
      "plain text",
      "quote \" backslash \\ slash / tab \t newline \n cr \r bs \b ff \f",
      std::string("nul \0 and \x01\x1f\x7f", 13),
      "héllo, 世界 🙂",
      "cut \xe4\xb8",
      "lone \x80 continuation, \xc0\xaf overlong, \xed\xa0\x80 surrogate, \xf5\x80 past U+10FFFF",
      "\xff\xfe\xfd",
      "\xe2\x82",
      "ok \xe2\x82\xac then bad \xe2\x28\xa1 end"};
  std::mt19937 rng(7);
  std::vector<std::string> all = texts;
  for (int i = 0; i < 300; ++i) {
    std::string t(rng() % 40, '\0');
    for (char& ch : t) ch = static_cast<char>(rng() % 256);
    all.push_back(t);
  }
  int64_t index = 0;
  for (const std::string& text : all) {
    for (bool with_id : {true, false}) {
      BatchRequest r;
      r.index = index++;
      if (with_id) r.custom_id = index % 3 == 0 ? text : "req-\"" + std::to_string(index);
      v1::Completion c;
      c.set_text(text);
      for (int k = 0; k < static_cast<int>(index % 5); ++k) c.add_output_ids(k);
      c.set_prompt_tokens(static_cast<int32_t>(index * 7));
      c.set_finish_reason(index % 2 ? "stop" : "length");
      const std::string model = index % 4 == 0 ? text : "stories260K";
      EXPECT_EQ(RenderSuccess(r, c, "job-ab12-5", model, 1795620587),
                RenderSuccessAsTree(r, c, "job-ab12-5", model, 1795620587))
          << "text "
          << nlohmann::json(text).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
    }
  }
}

TEST(RenderTest, ErrorLineHasDocumentedFields) {
  BatchRequest r = ParseBatchLine(Line(R"({"prompt": "x", "top_p": 2})"), 1, 2);
  ASSERT_FALSE(r.status.ok());
  nlohmann::json j =
      nlohmann::json::parse(RenderError(r, "job9", 400, std::string(r.status.message())));
  EXPECT_EQ(j["id"], "batch_req_job9_1");
  EXPECT_EQ(j["custom_id"], "r1");
  EXPECT_TRUE(j["error"].is_null());
  EXPECT_EQ(j["response"]["status_code"], 400);
  EXPECT_EQ(j["response"]["request_id"], "job9-1");
  const nlohmann::json& err = j["response"]["body"]["error"];
  EXPECT_EQ(err["message"], std::string(r.status.message()));
  EXPECT_EQ(err["type"], "invalid_request_error");
  EXPECT_TRUE(err["param"].is_null());
  EXPECT_TRUE(err["code"].is_null());
}

TEST(RenderTest, ErrorLineWithoutCustomIdHasNull) {
  BatchRequest r = ParseBatchLine("not json", 0, 1);
  nlohmann::json j =
      nlohmann::json::parse(RenderError(r, "j", 400, std::string(r.status.message())));
  EXPECT_TRUE(j["custom_id"].is_null());
  EXPECT_THAT(j["response"]["body"]["error"]["message"].get<std::string>(),
              HasSubstr("line 1: malformed JSON"));
}

}  // namespace
}  // namespace dpinfer::coordinator
