// Pieces of HF tokenizer.json that the byte-level tokenizer tests build their files from, and the
// byte-level alphabet their vocabularies are spelled in.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "nlohmann/json.hpp"

namespace dpinfer::engine::tokenizer_json {

// GPT-2's bytes_to_unicode(), written out again so that tests do not trust the code under test
// for it: the UTF-8 of the character that stands for each byte.
inline std::vector<std::string> ByteChars() {
  std::vector<std::string> chars(256);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    const int cp = printable ? b : next++;
    if (cp < 0x80) {
      chars[b] = std::string(1, static_cast<char>(cp));
    } else {
      chars[b] = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
  }
  return chars;
}

// Spells the bytes of `text` in byte-level characters, as byte-level vocab entries are spelled.
inline std::string Spell(std::string_view text) {
  static const std::vector<std::string> chars = ByteChars();
  std::string out;
  for (unsigned char c : text) out += chars[c];
  return out;
}

// The ByteLevel decoder as Llama 3 and GPT-2 serialize it.
inline nlohmann::json ByteLevelDecoder() {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", true},
          {"trim_offsets", true},
          {"use_regex", true}};
}

// A BPE model over `vocab` (token -> id) and `merges`, with HF's defaults for the rest.
inline nlohmann::json BpeModel(const nlohmann::json& vocab, const nlohmann::json& merges) {
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"ignore_merges", true},
          {"vocab", vocab},
          {"merges", merges}};
}

}  // namespace dpinfer::engine::tokenizer_json
