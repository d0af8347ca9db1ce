// Helpers for tests of detokenization on byte-level (GPT-2 / Llama 3 style) tokenizers: a small
// tokenizer.json whose tokens break UTF-8 in every way a generated stream can (lone and partial
// multi-byte sequences, invalid bytes, tokens outside the byte alphabet, special and unknown ids),
// and a Tokenizer wrapper that hides the byte-level shortcuts, so that IncrementalDetokenizer runs
// its general rule (decode the context and the window, take the difference) over the same
// tokenizer: the reference the shortcuts must match byte for byte.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/worker/engine/tokenizer_json_testutil.h"
#include "worker/engine/tokenizer/tokenizer.h"

namespace dpinfer::engine::byte_level_test {

using tokenizer_json::ByteChars;
using tokenizer_json::Spell;

// Ids of the tiny tokenizer: 0..255 the single bytes, then kFirstMerged.. the multi-byte tokens
// (kMergedBytes order), ids up to kSpecial unknown (a gap), kSpecial a special added token
// "<|s|>" and kAdded a plain added token "<|n|>".
inline const std::vector<std::string>& MergedBytes() {
  static const std::vector<std::string> tokens = {
      "\xE6\x97",          // the first two bytes of 日 (E6 97 A5)
      "\xA5 ",             // its last byte, then a space
      "\xF0\x9F",          // half of 🚀 (F0 9F 9A 80)
      "\x9A\x80",          // its other half
      "h\xC3\xA9llo",      // héllo, whole
      "\xED\xA0",          // a surrogate's start: ill-formed at its second byte
      "\xE0\x80",          // an overlong start: ill-formed at its second byte
      "\xF4\x90",          // past U+10FFFF: ill-formed at its second byte
      "\xFF\xC0",          // bytes that start nothing
      " world",            //
      "\xEF\xBF\xBD",      // U+FFFD itself, well-formed
      "\xE2\x82",          // € (E2 82 AC) without its last byte
      "a\xF0\x9F\x9A",     // a, then 🚀 without its last byte
      "\xE6\x97\xA5\xE6",  // 日, then the first byte of another
  };
  return tokens;
}
constexpr int32_t kFirstMerged = 256;
constexpr int32_t kOutsideAlphabet = 270;  // "€x": a character that stands for no byte
constexpr int32_t kSpecial = 300;
constexpr int32_t kAdded = 301;
constexpr int32_t kVocabSize = 302;

// The tokenizer.json: Llama 3's layout reduced to what decoding needs (ByteLevel pre-tokenizer
// and decoder, BPE without merges).
inline nlohmann::json TinyTokenizerJson() {
  using Json = nlohmann::json;
  Json vocab = Json::object();
  const std::vector<std::string> chars = ByteChars();
  for (int b = 0; b < 256; ++b) vocab[chars[b]] = b;
  int32_t next = kFirstMerged;
  for (const std::string& t : MergedBytes()) vocab[Spell(t)] = next++;
  vocab["\xE2\x82\xACx"] = kOutsideAlphabet;  // "€x" spelled in plain UTF-8
  const auto added = [](int32_t id, const char* content, bool special) {
    return Json{
        {"id", id},        {"content", content}, {"special", special},  {"normalized", false},
        {"lstrip", false}, {"rstrip", false},    {"single_word", false}};
  };
  return Json{
      {"version", "1.0"},
      {"added_tokens",
       Json::array({added(kSpecial, "<|s|>", true), added(kAdded, "<|n|>", false)})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", tokenizer_json::ByteLevelDecoder()},
      {"model", tokenizer_json::BpeModel(vocab, Json::array())},
  };
}

// Forwards to `inner` but keeps Tokenizer's default DecodeAppend and Renders and no joined-bytes
// shortcut: IncrementalDetokenizer over it takes the general path.
class GeneralPathTokenizer final : public Tokenizer {
 public:
  explicit GeneralPathTokenizer(const Tokenizer* inner) : inner_(inner) {}
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool add_special_tokens) const override {
    return inner_->Encode(text, add_special_tokens);
  }
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override {
    return inner_->Decode(ids, skip_special_tokens);
  }
  int32_t vocab_size() const override { return inner_->vocab_size(); }
  bool IsSpecial(int32_t id) const override { return inner_->IsSpecial(id); }
  int32_t TokenToId(std::string_view token) const override { return inner_->TokenToId(token); }
  std::string IdToToken(int32_t id) const override { return inner_->IdToToken(id); }
  bool IsByteToken(int32_t id) const override { return inner_->IsByteToken(id); }

 private:
  const Tokenizer* inner_;
};

}  // namespace dpinfer::engine::byte_level_test
