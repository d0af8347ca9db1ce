// Byte-level BPE (GPT-2, Llama 3, Qwen2 style): every llama.cpp test vector of GPT-2's tokenizer
// in ../shared/tokenizers/gpt2 encodes to HF's ids and decodes back; the incremental detokenizer
// never releases part of a character whose bytes span tokens; and small hand-made tokenizer.json
// files pin down the Llama 3 layout (Split regex + ByteLevel without regex, ignore_merges, BOS
// template), the Split delimiter behaviors, NFC normalization and the errors for bad components.
#include <atomic>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/reference_testutil.h"
#include "tests/test_env.h"
#include "tests/worker/engine/tokenizer_json_testutil.h"
#include "worker/engine/tokenizer/tokenizer.h"

namespace dpinfer::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using Json = nlohmann::json;

std::string Gpt2Dir() { return testing::SharedDir() + "/tokenizers/gpt2"; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct Vector {
  std::string text;
  std::vector<int32_t> ids;
};

// llama.cpp's test-tokenizer-0 reading: texts are what lies between "\n__ggml_vocab_test__\n"
// separators (so the newline before a separator is not part of the text), and line i of the
// .out file holds text i's ids.
std::vector<Vector> ReadVectors() {
  const std::string inp = ReadFile(Gpt2Dir() + "/vocab-test.inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<Vector> vectors;
  for (size_t pos = 0; pos < inp.size();) {
    const size_t next = inp.find(sep, pos);
    if (next == std::string::npos) {
      vectors.push_back({inp.substr(pos), {}});
      break;
    }
    vectors.push_back({inp.substr(pos, next - pos), {}});
    pos = next + sep.size();
  }
  std::ifstream out(Gpt2Dir() + "/vocab-test.out");
  size_t i = 0;
  for (std::string line; std::getline(out, line); ++i) {
    if (i >= vectors.size()) {
      ADD_FAILURE() << "vocab-test.out has more lines than vocab-test.inp has texts";
      break;
    }
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) vectors[i].ids.push_back(id);
  }
  EXPECT_EQ(i, vectors.size()) << "vocab-test.inp and vocab-test.out disagree on the count";
  return vectors;
}

class Gpt2TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_SHARED();
    auto tokenizer = Tokenizer::Load(Gpt2Dir());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(tokenizer).value();
    vectors_ = ReadVectors();
    ASSERT_GT(vectors_.size(), 40u);
  }

  std::vector<int32_t> Encode(const std::string& text, bool add_special_tokens = false) {
    auto ids = tokenizer_->Encode(text, add_special_tokens);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : std::vector<int32_t>();
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<Vector> vectors_;
};

TEST_F(Gpt2TokenizerTest, EncodesEveryVocabTestVector) {
  for (const Vector& v : vectors_) {
    EXPECT_THAT(Encode(v.text), ElementsAreArray(v.ids)) << "text: \"" << v.text << "\"";
  }
}

TEST_F(Gpt2TokenizerTest, EncodesConcurrently) {
  // Encode is const and shares the BPE word cache between threads.
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = t % 2; i < vectors_.size(); ++i) {
          auto ids = tokenizer_->Encode(vectors_[i].text, false);
          if (!ids.ok() || *ids != vectors_[i].ids) ++mismatches;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(Gpt2TokenizerTest, AddsNoSpecialTokens) {
  // GPT-2's post-processor is ByteLevel, which adds no BOS or EOS.
  for (const Vector& v : vectors_) EXPECT_EQ(Encode(v.text, true), v.ids);
}

TEST_F(Gpt2TokenizerTest, DecodeRoundTripsEveryVector) {
  for (const Vector& v : vectors_) {
    EXPECT_EQ(tokenizer_->Decode(v.ids, /*skip_special_tokens=*/false), v.text);
    EXPECT_EQ(tokenizer_->Decode(Encode(v.text), true), v.text);
  }
}

TEST_F(Gpt2TokenizerTest, VocabularyAndSpecialToken) {
  EXPECT_EQ(tokenizer_->vocab_size(), 50257);
  EXPECT_EQ(tokenizer_->TokenToId("<|endoftext|>"), 50256);
  EXPECT_TRUE(tokenizer_->IsSpecial(50256));
  EXPECT_FALSE(tokenizer_->IsSpecial(220));
  EXPECT_EQ(tokenizer_->IdToToken(220), "\xC4\xA0");  // "Ġ" stands for the space byte
  EXPECT_EQ(tokenizer_->Decode({220}, false), " ");
}

TEST_F(Gpt2TokenizerTest, SpecialTokenMatchesBeforeBpe) {
  const std::vector<int32_t> hello = Encode("Hello");
  const std::vector<int32_t> world = Encode(" world");
  std::vector<int32_t> expected = hello;
  expected.push_back(50256);
  expected.insert(expected.end(), world.begin(), world.end());
  EXPECT_EQ(Encode("Hello<|endoftext|> world"), expected);
  EXPECT_EQ(tokenizer_->Decode(expected, false), "Hello<|endoftext|> world");
  EXPECT_EQ(tokenizer_->Decode(expected, true), "Hello world");
}

TEST_F(Gpt2TokenizerTest, UnicodeClassesAreNotAsciiOnly) {
  // \p{L} takes "é" and "ж" into the word; \p{N} takes Arabic-Indic digits; \s takes U+3000.
  for (const std::string text :
       {"café", " Привет", "١٢٣", "a\u3000b", "x\u00A0y", "日本語 テキスト"}) {
    const std::vector<int32_t> ids = Encode(text);
    EXPECT_EQ(tokenizer_->Decode(ids, false), text);
  }
}

TEST_F(Gpt2TokenizerTest, DecodesBrokenBytesAsReplacementCharacters) {
  // "🚀" is F0 9F 9A 80; GPT-2 spells it with more than one token, so a prefix of its ids is an
  // incomplete character, which HF's ByteLevel decoder renders as one U+FFFD.
  const std::vector<int32_t> ids = Encode("🚀");
  ASSERT_GT(ids.size(), 1u);
  EXPECT_EQ(tokenizer_->Decode({ids[0]}, false), "\xEF\xBF\xBD");
  // A lone continuation byte (ĉ... spelled as its own token) is also one U+FFFD.
  EXPECT_EQ(tokenizer_->Decode({ids.back()}, false), "\xEF\xBF\xBD");
}

TEST_F(Gpt2TokenizerTest, IncrementalDetokenizerHoldsBackSplitCharacters) {
  const std::string text = "🚀 to the moon, 日本語!";
  const std::vector<int32_t> ids = Encode(text);
  IncrementalDetokenizer detokenizer(tokenizer_.get(), {});
  std::string joined;
  int held_back = 0;
  for (int32_t id : ids) {
    const std::string piece = detokenizer.Append(id);
    EXPECT_TRUE(testing::IsValidUtf8(piece)) << piece;
    if (piece.empty()) ++held_back;
    joined += piece;
  }
  joined += detokenizer.Finish();
  EXPECT_EQ(joined, text);
  EXPECT_GT(held_back, 0) << "no character of the text spans tokens; pick another text";
  // The rocket's tokens release nothing until the last one completes it.
  const std::vector<int32_t> rocket = Encode("🚀");
  IncrementalDetokenizer one(tokenizer_.get(), {});
  for (size_t i = 0; i + 1 < rocket.size(); ++i) EXPECT_EQ(one.Append(rocket[i]), "");
  EXPECT_EQ(one.Append(rocket.back()), "🚀");
}

TEST_F(Gpt2TokenizerTest, IncrementalDetokenizerPiecesJoinToDecodedText) {
  for (const Vector& v : vectors_) {
    const std::string decoded = tokenizer_->Decode(v.ids, true);
    // Every split into prompt and generated ids whose prompt text is final (a prefix of the whole
    // text, not ending in a broken character).
    for (size_t k = 0; k <= v.ids.size(); ++k) {
      const std::vector<int32_t> prompt(v.ids.begin(), v.ids.begin() + k);
      const std::string prompt_text = tokenizer_->Decode(prompt, true);
      if (!decoded.starts_with(prompt_text) || prompt_text.ends_with("\xEF\xBF\xBD")) continue;
      IncrementalDetokenizer detokenizer(tokenizer_.get(), prompt);
      std::string joined;
      for (size_t i = k; i < v.ids.size(); ++i) {
        const std::string piece = detokenizer.Append(v.ids[i]);
        EXPECT_TRUE(testing::IsValidUtf8(piece)) << "text \"" << v.text << "\" split at " << k;
        joined += piece;
      }
      const std::string rest = detokenizer.Finish();
      EXPECT_TRUE(testing::IsValidUtf8(rest));
      joined += rest;
      EXPECT_EQ(joined, decoded.substr(prompt_text.size()))
          << "text \"" << v.text << "\" split at " << k;
      EXPECT_EQ(detokenizer.text(), joined);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Hand-made tokenizer.json files.

using tokenizer_json::ByteChars;
using tokenizer_json::Spell;

constexpr char kLlama3Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// A Llama-3-shaped tokenizer.json: ids 0..255 are the byte characters, then a few merged tokens,
// then two special tokens; pre_tokenizer Sequence[Split(Llama 3 regex), ByteLevel(no regex)],
// ignore_merges, and a <|begin_of_text|> template behind a ByteLevel post-processor.
Json Llama3Style() {
  Json vocab = Json::object();
  const std::vector<std::string> chars = ByteChars();
  for (int b = 0; b < 256; ++b) vocab[chars[b]] = b;
  int32_t next = 256;
  Json merges = Json::array();
  auto merge = [&](const std::string& left, const std::string& right) {
    merges.push_back(Json::array({Spell(left), Spell(right)}));
    if (!vocab.contains(Spell(left + right))) vocab[Spell(left + right)] = next++;
  };
  merge("3", "4");     // 256: ranked first, so without a split "12345" would pair 3 with 4
  merge("1", "2");     // 257
  merge("12", "3");    // 258
  merge("h", "e");     // 259
  merge("l", "l");     // 260
  merge("he", "ll");   // 261
  merge("hell", "o");  // 262
  merge(" ", "w");     // 263 " w"
  merge("o", "r");     // 264
  // " world" is in the vocab but no merge chain reaches it: only ignore_merges emits it.
  vocab[Spell(" world")] = next++;  // 265
  Json j = {
      {"version", "1.0"},
      {"added_tokens", Json::array({
                           {{"id", 300},
                            {"content", "<|begin_of_text|>"},
                            {"special", true},
                            {"normalized", false},
                            {"lstrip", false},
                            {"rstrip", false},
                            {"single_word", false}},
                           {{"id", 301},
                            {"content", "<|end_of_text|>"},
                            {"special", true},
                            {"normalized", false},
                            {"lstrip", false},
                            {"rstrip", false},
                            {"single_word", false}},
                       })},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers", Json::array({
                              {{"type", "Split"},
                               {"pattern", {{"Regex", kLlama3Pattern}}},
                               {"behavior", "Isolated"},
                               {"invert", false}},
                              {{"type", "ByteLevel"},
                               {"add_prefix_space", false},
                               {"trim_offsets", true},
                               {"use_regex", false}},
                          })}}},
      {"post_processor",
       {{"type", "Sequence"},
        {"processors",
         Json::array({
             {{"type", "ByteLevel"},
              {"add_prefix_space", true},
              {"trim_offsets", false},
              {"use_regex", true}},
             {{"type", "TemplateProcessing"},
              {"single",
               Json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
              {"pair", Json::array()},
              {"special_tokens",
               {{"<|begin_of_text|>",
                 {{"id", "<|begin_of_text|>"},
                  {"ids", Json::array({300})},
                  {"tokens", Json::array({"<|begin_of_text|>"})}}}}}},
         })}}},
      {"decoder", tokenizer_json::ByteLevelDecoder()},
      {"model", tokenizer_json::BpeModel(vocab, merges)},
  };
  return j;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadJson(const Json& j) {
  const std::string path = testing::MakeTempDir() + "/tokenizer.json";
  std::ofstream(path) << j.dump();
  return Tokenizer::Load(path);
}

std::vector<int32_t> MustEncode(const Tokenizer& tokenizer, const std::string& text,
                                bool add_special_tokens) {
  auto ids = tokenizer.Encode(text, add_special_tokens);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>();
}

TEST(Llama3StyleTokenizerTest, EncodesWithSplitRegexIgnoreMergesAndBos) {
  auto tokenizer = LoadJson(Llama3Style());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const Tokenizer& tok = **tokenizer;
  // "hello" merges to 262; " world" is a whole vocab entry, emitted by ignore_merges.
  EXPECT_THAT(MustEncode(tok, "hello world", true), ElementsAre(300, 262, 265));
  EXPECT_THAT(MustEncode(tok, "hello world", false), ElementsAre(262, 265));
  // Digits split in threes: "123" | "45", so 3 never pairs with 4 although "3 4" ranks first.
  EXPECT_THAT(MustEncode(tok, "12345", false), ElementsAre(258, '4', '5'));
  // " word" is not in the vocab, so merges run: " w" + "or" + "d".
  EXPECT_THAT(MustEncode(tok, " word", false), ElementsAre(263, 264, 'd'));
  // Special tokens are matched in the text before the regex and BPE see it.
  EXPECT_THAT(MustEncode(tok, "hello<|end_of_text|> world", true), ElementsAre(300, 262, 301, 265));
  EXPECT_EQ(tok.Decode({300, 262, 301, 265}, false), "<|begin_of_text|>hello<|end_of_text|> world");
  EXPECT_EQ(tok.Decode({300, 262, 301, 265}, true), "hello world");
  // Multi-byte text falls back to the byte characters and decodes back.
  const std::string text = "héllo 🚀 wörld\n\n  12345";
  EXPECT_EQ(tok.Decode(MustEncode(tok, text, true), true), text);
}

TEST(Llama3StyleTokenizerTest, WithoutIgnoreMergesTheMergesDecide) {
  Json j = Llama3Style();
  j["model"]["ignore_merges"] = false;
  auto tokenizer = LoadJson(j);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  // " world": " w" then "or", "l", "d"; the whole-word entry 265 is unreachable.
  EXPECT_THAT(MustEncode(**tokenizer, " world", false), ElementsAre(263, 264, 'l', 'd'));
}

TEST(Llama3StyleTokenizerTest, IncrementalDetokenizerOverByteCharacters) {
  auto tokenizer = LoadJson(Llama3Style());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::string text = "hello 日本 🚀 world";
  const std::vector<int32_t> ids = MustEncode(**tokenizer, text, true);
  IncrementalDetokenizer detokenizer(tokenizer->get(), {ids[0]});
  std::string joined;
  for (size_t i = 1; i < ids.size(); ++i) {
    const std::string piece = detokenizer.Append(ids[i]);
    EXPECT_TRUE(testing::IsValidUtf8(piece));
    joined += piece;
  }
  joined += detokenizer.Finish();
  EXPECT_EQ(joined, text);
}

// A tokenizer whose vocab holds single characters plus the pieces a Split is expected to produce,
// with ignore_merges on: each piece comes out as one id, which makes the split visible.
Json SplitProbe(const Json& split, const std::vector<std::string>& pieces) {
  Json vocab = Json::object();
  int32_t next = 0;
  for (const char* c : {"t", "h", "e", "f", "i", "n", "a", "l", "c", "o", "u", "d", "w", "-"}) {
    vocab[c] = next++;
  }
  for (const std::string& piece : pieces) {
    if (!vocab.contains(piece)) vocab[piece] = next++;
  }
  return {
      {"normalizer", nullptr},
      {"pre_tokenizer", split},
      {"decoder", nullptr},
      {"model",
       {{"type", "BPE"}, {"ignore_merges", true}, {"vocab", vocab}, {"merges", Json::array()}}}};
}

TEST(SplitPreTokenizerTest, DelimiterBehaviorsMatchHf) {
  // The examples of HF's SplitDelimiterBehavior documentation, on "the-final--countdown".
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"Removed", {"the", "final", "countdown"}},
      {"Isolated", {"the", "-", "final", "-", "-", "countdown"}},
      {"MergedWithPrevious", {"the-", "final-", "-", "countdown"}},
      {"MergedWithNext", {"the", "-final", "-", "-countdown"}},
      {"Contiguous", {"the", "-", "final", "--", "countdown"}},
  };
  for (const auto& [behavior, pieces] : cases) {
    for (const Json& pattern : {Json{{"String", "-"}}, Json{{"Regex", "-"}}}) {
      const Json split = {
          {"type", "Split"}, {"pattern", pattern}, {"behavior", behavior}, {"invert", false}};
      auto tokenizer = LoadJson(SplitProbe(split, pieces));
      ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
      std::vector<int32_t> expected;
      for (const std::string& piece : pieces) expected.push_back((*tokenizer)->TokenToId(piece));
      EXPECT_EQ(MustEncode(**tokenizer, "the-final--countdown", false), expected)
          << behavior << " " << pattern.dump();
    }
  }
}

TEST(SplitPreTokenizerTest, InvertSwapsMatchesAndTheRest) {
  // Inverted, the runs of word characters count as the text between matches and the dashes as
  // the matches, so Removed on \w+ inverted drops the dashes like Removed on "-".
  const Json split = {{"type", "Split"},
                      {"pattern", {{"Regex", "\\w+"}}},
                      {"behavior", "Removed"},
                      {"invert", true}};
  auto tokenizer = LoadJson(SplitProbe(split, {"the", "final", "countdown"}));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const Tokenizer& tok = **tokenizer;
  EXPECT_THAT(
      MustEncode(tok, "the-final--countdown", false),
      ElementsAre(tok.TokenToId("the"), tok.TokenToId("final"), tok.TokenToId("countdown")));
}

TEST(ByteLevelPreTokenizerTest, AddPrefixSpace) {
  Json j = Llama3Style();
  j["pre_tokenizer"] = {{"type", "ByteLevel"},
                        {"add_prefix_space", true},
                        {"trim_offsets", true},
                        {"use_regex", true}};
  j["post_processor"] = {{"type", "ByteLevel"}};
  auto tokenizer = LoadJson(j);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  // "world" gains a leading space and becomes the " world" entry; text already starting with a
  // space is left alone.
  EXPECT_THAT(MustEncode(**tokenizer, "world", true), ElementsAre(265));
  EXPECT_THAT(MustEncode(**tokenizer, " world", true), ElementsAre(265));
}

TEST(NfcTokenizerTest, NfcComposesBeforeByteLevel) {
  Json j = Llama3Style();
  j["normalizer"] = {{"type", "NFC"}};
  auto tokenizer = LoadJson(j);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  // "e" + U+0301 COMBINING ACUTE is composed to U+00E9 first, as Qwen2's tokenizer does.
  EXPECT_EQ(MustEncode(**tokenizer, "e\xCC\x81", false),
            MustEncode(**tokenizer, "\xC3\xA9", false));
  // Ids 0..255 are the byte characters in this vocab.
  EXPECT_THAT(MustEncode(**tokenizer, "\xC3\xA9", false), ElementsAre(0xC3, 0xA9));
}

TEST(ByteLevelTokenizerErrorsTest, BadComponentsAreNamed) {
  Json j = Llama3Style();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "(unclosed"}};
  absl::Status status = LoadJson(j).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("(unclosed"));
  EXPECT_THAT(status.message(), HasSubstr("tokenizer.json"));

  j = Llama3Style();
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  status = LoadJson(j).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
  EXPECT_THAT(status.message(), HasSubstr("Sideways"));

  j = Llama3Style();
  j["pre_tokenizer"]["pretokenizers"][1] = {{"type", "Metaspace"}};
  status = LoadJson(j).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
  EXPECT_THAT(status.message(), HasSubstr("pre_tokenizer \"Metaspace\""));

  j = Llama3Style();
  j["post_processor"]["processors"][0] = {{"type", "RobertaProcessing"}};
  status = LoadJson(j).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
  EXPECT_THAT(status.message(), HasSubstr("post_processor \"RobertaProcessing\""));
}

}  // namespace
}  // namespace dpinfer::engine
