// Pieces of HF tokenizer.json that the byte-level tokenizer tests build their files from.
#pragma once

#include "nlohmann/json.hpp"

namespace dpinfer::engine::tokenizer_json {

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
