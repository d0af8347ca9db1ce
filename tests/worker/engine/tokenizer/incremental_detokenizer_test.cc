// The byte-level shortcuts of detokenization give exactly what the general rule gives: the
// tokenizer's DecodeAppend / Renders / TokenBytes against Decode and IdToToken, and the
// IncrementalDetokenizer's per-token path (new ids decoded alone while the context ends on a
// UTF-8 sequence boundary) against its general path (context and window decoded, the difference
// released), piece by piece, over random id streams that split, break and complete characters in
// every way, on a small hand-made tokenizer and on GPT-2's.
#include <cstdint>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/reference_testutil.h"
#include "tests/test_env.h"
#include "tests/worker/engine/byte_level_testutil.h"
#include "worker/engine/tokenizer/tokenizer.h"

namespace dpinfer::engine {
namespace {

using byte_level_test::GeneralPathTokenizer;
using byte_level_test::kAdded;
using byte_level_test::kOutsideAlphabet;
using byte_level_test::kSpecial;
using byte_level_test::kVocabSize;

std::unique_ptr<Tokenizer> LoadTiny() {
  const std::string path = testing::MakeTempDir() + "/tokenizer.json";
  std::ofstream(path) << byte_level_test::TinyTokenizerJson().dump();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(path);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

// Ids drawn mostly from the bytes >= 0x80 and the multi-byte tokens, where characters break.
std::vector<int32_t> RandomIds(std::mt19937_64* rng, size_t n, int32_t vocab) {
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) {
    const uint64_t kind = (*rng)() % 8;
    if (kind < 3) {
      id = static_cast<int32_t>(0x80 + (*rng)() % 0x80);  // a byte of a multi-byte sequence
    } else if (kind < 5) {
      id = static_cast<int32_t>(256 + (*rng)() % 46);  // merged, gap, special, added
    } else {
      id = static_cast<int32_t>((*rng)() % vocab);
    }
  }
  return ids;
}

// Runs both paths over prompt + generated as the engine does (Append per id, Finish at the end;
// with `flush_every` > 0 also Finish after every flush_every-th id, and Append after it) and
// expects the same piece at every call.
void ExpectSamePieces(const Tokenizer& fast, const std::vector<int32_t>& prompt,
                      const std::vector<int32_t>& generated, bool skip_special_tokens,
                      size_t flush_every = 0) {
  const GeneralPathTokenizer general(&fast);
  IncrementalDetokenizer a(&fast, prompt, skip_special_tokens);
  IncrementalDetokenizer b(&general, prompt, skip_special_tokens);
  for (size_t i = 0; i < generated.size(); ++i) {
    const std::string pa(a.AppendPiece(generated[i]));
    const std::string pb = b.Append(generated[i]);
    ASSERT_EQ(pa, pb) << "id " << i << " of the generated ids";
    ASSERT_TRUE(testing::IsValidUtf8(pa));
    if (flush_every > 0 && i % flush_every == flush_every - 1) {
      ASSERT_EQ(std::string(a.FinishPiece()), b.Finish()) << "flush after id " << i;
    }
  }
  ASSERT_EQ(std::string(a.FinishPiece()), b.Finish());
  ASSERT_EQ(a.text(), b.text());
}

TEST(IncrementalDetokenizerTest, TinyTokenizerIsByteLevel) {
  std::unique_ptr<Tokenizer> tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  EXPECT_TRUE(tok->DecodesJoinedBytes());
  EXPECT_EQ(tok->vocab_size(), kVocabSize);
  EXPECT_EQ(tok->TokenBytes('a', true), "a");
  EXPECT_EQ(tok->TokenBytes(0xE6, true), "\xE6");
  EXPECT_EQ(tok->TokenBytes(kOutsideAlphabet, true), "\xE2\x82\xACx");  // its own UTF-8
  EXPECT_EQ(tok->TokenBytes(kSpecial, true), "");
  EXPECT_EQ(tok->TokenBytes(kSpecial, false), "<|s|>");
  EXPECT_EQ(tok->TokenBytes(kAdded, true), "<|n|>");
  EXPECT_EQ(tok->TokenBytes(290, false), "");  // no token
  EXPECT_EQ(tok->TokenBytes(-1, false), "");
  EXPECT_EQ(tok->TokenBytes(kVocabSize, false), "");
}

TEST(IncrementalDetokenizerTest, DecodeAppendAndRendersMatchDecodeAndIdToToken) {
  std::unique_ptr<Tokenizer> tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  const GeneralPathTokenizer general(tok.get());
  std::mt19937_64 rng(7);
  for (int round = 0; round < 3000; ++round) {
    std::vector<int32_t> ids = RandomIds(&rng, rng() % 12, kVocabSize);
    if (!ids.empty() && rng() % 4 == 0) ids[rng() % ids.size()] = rng() % 2 ? -3 : kVocabSize + 4;
    for (const bool skip : {true, false}) {
      std::string out = "prefix";
      tok->DecodeAppend(ids.data(), ids.size(), skip, &out);
      ASSERT_EQ(out, "prefix" + tok->Decode(ids, skip));
      for (int32_t id : ids) ASSERT_EQ(tok->Renders(id, skip), general.Renders(id, skip)) << id;
    }
  }
}

TEST(IncrementalDetokenizerTest, ByteLevelPathMatchesTheGeneralRuleOnBrokenText) {
  std::unique_ptr<Tokenizer> tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  std::mt19937_64 rng(1);
  for (int round = 0; round < 4000; ++round) {
    const std::vector<int32_t> prompt = RandomIds(&rng, rng() % 9, kVocabSize);
    const std::vector<int32_t> generated = RandomIds(&rng, 1 + rng() % 40, kVocabSize);
    ExpectSamePieces(*tok, prompt, generated, /*skip_special_tokens=*/round % 3 != 0,
                     /*flush_every=*/round % 5 == 0 ? 1 + rng() % 6 : 0);
    if (::testing::Test::HasFatalFailure()) {
      ADD_FAILURE() << "round " << round;
      return;
    }
  }
}

TEST(IncrementalDetokenizerTest, ByteLevelPathMatchesTheGeneralRuleOnGpt2) {
  SKIP_WITHOUT_SHARED();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      Tokenizer::Load(testing::SharedDir() + "/tokenizers/gpt2");
  ASSERT_TRUE(tok.ok()) << tok.status();
  ASSERT_TRUE((*tok)->DecodesJoinedBytes());
  const int32_t vocab = (*tok)->vocab_size();
  std::mt19937_64 rng(2);
  // Uniform ids (what a random-weight model samples) and text with characters split over tokens.
  for (int round = 0; round < 300; ++round) {
    std::vector<int32_t> prompt(rng() % 8), generated(1 + rng() % 64);
    for (int32_t& id : prompt) id = static_cast<int32_t>(rng() % vocab);
    for (int32_t& id : generated) id = static_cast<int32_t>(rng() % vocab);
    ExpectSamePieces(**tok, prompt, generated, /*skip_special_tokens=*/true);
    if (::testing::Test::HasFatalFailure()) return;
  }
  absl::StatusOr<std::vector<int32_t>> ids =
      (*tok)->Encode("🚀 to the moon, 日本語! Ünïcödé ✓ done", false);
  ASSERT_TRUE(ids.ok());
  for (size_t k = 0; k < ids->size(); ++k) {
    ExpectSamePieces(**tok, std::vector<int32_t>(ids->begin(), ids->begin() + k),
                     std::vector<int32_t>(ids->begin() + k, ids->end()), true);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(IncrementalDetokenizerTest, PiecesAreViewsOfTheText) {
  std::unique_ptr<Tokenizer> tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  IncrementalDetokenizer d(tok.get(), {'H', 'i'});
  EXPECT_EQ(d.AppendPiece(' '), " ");
  EXPECT_EQ(d.AppendPiece(0xE6), "");  // 日 is not complete yet
  EXPECT_EQ(d.AppendPiece(0x97), "");
  EXPECT_EQ(d.AppendPiece(0xA5), "日");
  EXPECT_EQ(d.AppendPiece(0xE6), "");
  EXPECT_EQ(d.FinishPiece(), "\xEF\xBF\xBD");  // a broken character is flushed as U+FFFD
  EXPECT_EQ(d.text(), " 日\xEF\xBF\xBD");
  EXPECT_EQ(d.TakeText(), " 日\xEF\xBF\xBD");
}

}  // namespace
}  // namespace dpinfer::engine
