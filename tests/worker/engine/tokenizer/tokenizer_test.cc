// Tokenizer and IncrementalDetokenizer against HF transformers' reference ids and texts for the
// stories260K SentencePiece-BPE tokenizer, plus round trips, byte fallback, added tokens, error
// cases and a long input that would expose a quadratic BPE merge loop.
#include "worker/engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/reference_testutil.h"
#include "tests/test_env.h"

namespace dpinfer::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

std::string ModelDir() { return testing::SharedDir() + "/models/stories260K"; }

Json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return Json::parse(in);
}

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_SHARED();
    auto tokenizer = Tokenizer::Load(ModelDir());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(tokenizer).value();
    reference_ = ReadJson(ModelDir() + "/reference.json");
  }

  std::vector<int32_t> Encode(const std::string& text) {
    auto ids = tokenizer_->Encode(text, /*add_special_tokens=*/true);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : std::vector<int32_t>();
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  Json reference_;
};

TEST_F(TokenizerTest, VocabularyAndSpecialTokens) {
  EXPECT_EQ(tokenizer_->vocab_size(), 512);
  EXPECT_EQ(tokenizer_->TokenToId("<s>"), 1);
  EXPECT_EQ(tokenizer_->TokenToId("</s>"), 2);
  EXPECT_EQ(tokenizer_->TokenToId("no such token"), -1);
  EXPECT_EQ(tokenizer_->IdToToken(1), "<s>");
  EXPECT_EQ(tokenizer_->IdToToken(512), "");
  EXPECT_TRUE(tokenizer_->IsSpecial(1));
  EXPECT_FALSE(tokenizer_->IsSpecial(403));
}

TEST_F(TokenizerTest, LoadsFromFileOrDirectory) {
  EXPECT_TRUE(Tokenizer::Load(ModelDir() + "/tokenizer.json").ok());
  EXPECT_EQ(Tokenizer::Load(ModelDir() + "/missing.json").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(TokenizerTest, EncodesReferencePrompts) {
  for (const Json& entry : reference_.at("greedy")) {
    const std::string prompt = entry.at("prompt");
    EXPECT_EQ(Encode(prompt), entry.at("prompt_ids").get<std::vector<int32_t>>())
        << "prompt: \"" << prompt << "\"";
  }
}

TEST_F(TokenizerTest, DecodesReferenceTexts) {
  for (const Json& entry : reference_.at("greedy")) {
    std::vector<int32_t> ids = entry.at("prompt_ids");
    for (const Json& id : entry.at("output_ids")) ids.push_back(id);
    EXPECT_EQ(tokenizer_->Decode(ids, /*skip_special_tokens=*/true),
              entry.at("text").get<std::string>());
  }
}

TEST_F(TokenizerTest, AddSpecialTokensOff) {
  auto ids = tokenizer_->Encode("Once upon a time", /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(403, 407, 261, 378));
}

TEST_F(TokenizerTest, RoundTrips) {
  const std::vector<std::string> texts = {
      "",
      "Once upon a time",
      "café au lait, naïve résumé",
      "中文字符",
      "emoji 😀🎉 and more",
      " leading space",
      "   three leading spaces",
      "trailing space ",
      "multiple   inner    spaces",
      "line one\nline two\n\n",
      "\ttab\r\n",
      "mixed: Lily said \"héllo 世界 👋\"!",
  };
  for (const std::string& text : texts) {
    EXPECT_EQ(tokenizer_->Decode(Encode(text), /*skip_special_tokens=*/true), text);
  }
}

TEST_F(TokenizerTest, ByteFallbackForCharactersOutsideTheVocab) {
  // "ü" is not in this 512-token vocab ("é" is): its UTF-8 bytes C3 BC become <0xC3> <0xBC>.
  auto ids = tokenizer_->Encode("ü", /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(tokenizer_->TokenToId("▁"), tokenizer_->TokenToId("<0xC3>"),
                                tokenizer_->TokenToId("<0xBC>")));
  ids = tokenizer_->Encode("é", /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(tokenizer_->TokenToId("▁"), tokenizer_->TokenToId("é")));
}

TEST_F(TokenizerTest, InvalidByteRunsDecodeToReplacementCharacters) {
  // HF replaces every byte of a byte-token run that is not valid UTF-8 as a whole.
  const int32_t c3 = tokenizer_->TokenToId("<0xC3>");
  const int32_t a9 = tokenizer_->TokenToId("<0xA9>");
  const int32_t once = tokenizer_->TokenToId("▁Once");
  EXPECT_EQ(tokenizer_->Decode({once, c3}, true), "Once\xEF\xBF\xBD");
  EXPECT_EQ(tokenizer_->Decode({c3, a9, c3, once}, true),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD Once");
  EXPECT_EQ(tokenizer_->Decode({c3, a9, once}, true), "é Once");
}

TEST_F(TokenizerTest, SpecialTokenTextMapsToItsId) {
  auto ids = tokenizer_->Encode("<s>Once upon</s>", /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok());
  ASSERT_GE(ids->size(), 3u);
  EXPECT_EQ(ids->front(), 1);
  EXPECT_EQ(ids->back(), 2);
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 1), 1);
  // The text between added tokens is normalized on its own, so it gets its own "▁".
  EXPECT_EQ(std::vector<int32_t>(ids->begin() + 1, ids->end() - 1),
            *tokenizer_->Encode("Once upon", false));
}

TEST_F(TokenizerTest, DecodeKeepsSpecialTokensUnlessSkipped) {
  EXPECT_EQ(tokenizer_->Decode({1, 403, 2}, /*skip_special_tokens=*/true), "Once");
  EXPECT_EQ(tokenizer_->Decode({1, 403, 2}, /*skip_special_tokens=*/false), "<s> Once</s>");
}

TEST_F(TokenizerTest, RejectsInvalidUtf8) {
  for (const std::string& bad : {std::string("ok\xC3"), std::string("ok\xC3\x28"),
                                 std::string("ok\xED\xA0\x80"), std::string("ok\xC0\xAF")}) {
    auto ids = tokenizer_->Encode(bad, true);
    ASSERT_FALSE(ids.ok());
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ids.status().message(), HasSubstr("not valid UTF-8 at byte 2"));
  }
}

TEST_F(TokenizerTest, LongInputEncodesWithoutBlowUp) {
  std::string text;
  while (text.size() < 20000) text += "Once upon a time, Lily saw a big red ball. ";
  std::string no_spaces(20000, 'a');  // one word of 20k characters for the merge loop
  auto ids = tokenizer_->Encode(text, true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(tokenizer_->Decode(*ids, true), text);
  ids = tokenizer_->Encode(no_spaces, true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(tokenizer_->Decode(*ids, true), no_spaces);
}

// Feeds `generated` one id at a time; checks each piece is valid UTF-8 and returns them joined.
std::string Detokenize(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                       const std::vector<int32_t>& generated, std::vector<std::string>* pieces) {
  IncrementalDetokenizer detok(&tokenizer, prompt);
  std::string joined;
  for (int32_t id : generated) {
    std::string piece = detok.Append(id);
    EXPECT_TRUE(testing::IsValidUtf8(piece)) << "piece is not valid UTF-8";
    joined += piece;
    if (pieces != nullptr) pieces->push_back(piece);
  }
  joined += detok.Finish();
  EXPECT_EQ(detok.text(), joined);
  return joined;
}

// What the generated part must render as: Decode(all) minus Decode(prompt).
std::string ExpectedCompletion(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                               const std::vector<int32_t>& generated) {
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), generated.begin(), generated.end());
  const std::string full = tokenizer.Decode(all, true);
  const std::string prefix = tokenizer.Decode(prompt, true);
  EXPECT_TRUE(full.starts_with(prefix));
  return full.substr(prefix.size());
}

TEST_F(TokenizerTest, IncrementalDetokenizerMatchesReference) {
  for (const Json& entry : reference_.at("greedy")) {
    const std::vector<int32_t> prompt = entry.at("prompt_ids");
    const std::vector<int32_t> output = entry.at("output_ids");
    const std::string text = entry.at("text");
    const std::string prompt_text = tokenizer_->Decode(prompt, true);
    ASSERT_TRUE(text.starts_with(prompt_text));
    EXPECT_EQ(Detokenize(*tokenizer_, prompt, output, nullptr), text.substr(prompt_text.size()));
  }
}

TEST_F(TokenizerTest, IncrementalDetokenizerKeepsLeadingSpace) {
  std::vector<std::string> pieces;
  const int32_t there = tokenizer_->TokenToId("▁there");
  ASSERT_GE(there, 0);
  Detokenize(*tokenizer_, Encode("Once upon a time"), {there}, &pieces);
  EXPECT_THAT(pieces, ElementsAre(" there"));

  pieces.clear();
  Detokenize(*tokenizer_, {1}, {tokenizer_->TokenToId("▁Once"), there}, &pieces);
  EXPECT_THAT(pieces, ElementsAre("Once", " there"));

  // Skipped special tokens in the context must not make the strip eat the space.
  pieces.clear();
  Detokenize(*tokenizer_, Encode("Once upon a time"), {2, 2, 2, 2, 2, 2, 2, there}, &pieces);
  EXPECT_EQ(pieces.back(), " there");
}

TEST_F(TokenizerTest, IncrementalDetokenizerNeverSplitsACharacter) {
  // Generated text with multi-byte characters that only exist as byte-fallback tokens.
  const std::vector<int32_t> prompt = Encode("Once upon a time");
  for (const std::string& generated_text :
       {std::string(" there was 中文 and 😀, café über"), std::string("😀😀 ü")}) {
    auto generated = tokenizer_->Encode(generated_text, false);
    ASSERT_TRUE(generated.ok());
    generated->erase(generated->begin());  // the "▁" the normalizer prepended
    std::vector<std::string> pieces;
    const std::string text = Detokenize(*tokenizer_, prompt, *generated, &pieces);
    EXPECT_EQ(text, ExpectedCompletion(*tokenizer_, prompt, *generated));
    EXPECT_EQ(text, generated_text);
    for (const std::string& piece : pieces) {
      EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "piece has U+FFFD";
    }
  }
}

TEST_F(TokenizerTest, IncrementalDetokenizerMatchesDecodeWhenByteRunsTurnInvalid) {
  // "d" as a byte token is a complete character, but the run "d" C3 28 is invalid and HF renders
  // all three bytes as U+FFFD, so the "d" must not have been released.
  const auto byte = [&](int b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    return tokenizer_->TokenToId(name);
  };
  const std::vector<int32_t> prompt = {1, tokenizer_->TokenToId("▁Once")};
  const int32_t there = tokenizer_->TokenToId("▁there");
  for (const std::vector<int32_t>& generated :
       {std::vector<int32_t>{byte(0x64), byte(0xC3), byte(0x28), there},
        std::vector<int32_t>{byte(0xC3), 2, byte(0xA9), there},  // a skipped </s> joins the run
        std::vector<int32_t>{byte(0x64), byte(0x65), there, byte(0xF0)}}) {
    EXPECT_EQ(Detokenize(*tokenizer_, prompt, generated, nullptr),
              ExpectedCompletion(*tokenizer_, prompt, generated));
  }
}

TEST_F(TokenizerTest, IncrementalDetokenizerMatchesDecodeOnRandomIds) {
  // Random prompts and generations, half of them heavy in byte tokens, checked against Decode.
  std::mt19937 rng(7);
  for (int iter = 0; iter < 2000; ++iter) {
    const bool bytes_heavy = iter % 2 == 1;
    const auto pick = [&] {
      return static_cast<int32_t>(bytes_heavy && rng() % 2 == 0 ? 3 + rng() % 256 : rng() % 512);
    };
    std::vector<int32_t> prompt(rng() % 8), generated(rng() % 20);
    for (int32_t& id : prompt) id = pick();
    for (int32_t& id : generated) id = pick();
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), generated.begin(), generated.end());
    const std::string full = tokenizer_->Decode(all, true);
    const std::string prefix = tokenizer_->Decode(prompt, true);
    // A byte run spanning prompt and generation can render the prompt differently alone.
    if (!full.starts_with(prefix)) continue;
    EXPECT_EQ(Detokenize(*tokenizer_, prompt, generated, nullptr), full.substr(prefix.size()))
        << "iteration " << iter;
  }
}

TEST_F(TokenizerTest, IncrementalDetokenizerFlushesBrokenBytesOnFinish) {
  IncrementalDetokenizer detok(tokenizer_.get(), {1});
  EXPECT_EQ(detok.Append(tokenizer_->TokenToId("▁Once")), "Once");
  EXPECT_EQ(detok.Append(tokenizer_->TokenToId("<0xE4>")), "");
  EXPECT_EQ(detok.Finish(), "\xEF\xBF\xBD");
  EXPECT_EQ(detok.text(), "Once\xEF\xBF\xBD");
}

// Writes the stories260K tokenizer.json with one component replaced and returns its load status.
absl::Status LoadModified(const std::string& key, const Json& value) {
  Json j = ReadJson(ModelDir() + "/tokenizer.json");
  if (key == "model.type") {
    j["model"]["type"] = value;
  } else {
    j[key] = value;
  }
  const std::string path = testing::MakeTempDir() + "/tokenizer.json";
  std::ofstream(path) << j.dump();
  return Tokenizer::Load(path).status();
}

TEST_F(TokenizerTest, RefusesUnsupportedComponents) {
  struct Case {
    std::string key;
    Json value;
    std::string component;
  };
  const std::vector<Case> cases = {
      {"model.type", "WordPiece", "model type"},
      {"normalizer", {{"type", "MadeUp"}}, "normalizer"},
      {"normalizer",
       {{"type", "Sequence"}, {"normalizers", Json::array({{{"type", "BertNormalizer"}}})}},
       "normalizer"},
      {"pre_tokenizer", {{"type", "Metaspace"}}, "pre_tokenizer"},
      {"decoder", {{"type", "WordPiece"}}, "decoder"},
      {"post_processor", {{"type", "BertProcessing"}}, "post_processor"},
  };
  for (const Case& c : cases) {
    const absl::Status status = LoadModified(c.key, c.value);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
    EXPECT_THAT(status.message(), HasSubstr(c.component));
    EXPECT_THAT(status.message(), HasSubstr("tokenizer.json"));
  }
}

TEST_F(TokenizerTest, AcceptsSingleOrNullNormalizerAndArrayMerges) {
  Json j = ReadJson(ModelDir() + "/tokenizer.json");
  // Merges as "a b" strings instead of [a, b] arrays.
  Json merges = Json::array();
  for (const Json& m : j["model"]["merges"]) {
    merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  }
  j["model"]["merges"] = merges;
  j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}};
  const std::string dir = testing::MakeTempDir();
  std::ofstream(dir + "/tokenizer.json") << j.dump();
  auto tokenizer = Tokenizer::Load(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  // Without Prepend there is no leading "▁": " Once upon a time" matches the reference.
  auto ids = (*tokenizer)->Encode(" Once upon a time", true);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(1, 403, 407, 261, 378));

  j["normalizer"] = nullptr;
  std::ofstream(dir + "/tokenizer.json") << j.dump();
  tokenizer = Tokenizer::Load(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  ids = (*tokenizer)->Encode("a", false);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre((*tokenizer)->TokenToId("a")));
}

}  // namespace
}  // namespace dpinfer::engine
