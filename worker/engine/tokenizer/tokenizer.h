// HF tokenizer.json BPE tokenizers: SentencePiece-style BPE with byte fallback (Llama 1/2,
// llama2.c) and byte-level BPE (GPT-2, Llama 3, Qwen2); plus the incremental detokenizer that
// turns a growing list of ids into text without ever emitting broken UTF-8.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace dpinfer::engine {

class Tokenizer {
 public:
  // `path` is a tokenizer.json file or a directory holding one. Errors name the file and what is
  // unsupported (normalizer, pre-tokenizer, model type...).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);
  virtual ~Tokenizer() = default;

  // Encodes UTF-8 text. `add_special_tokens` applies the post-processor template (BOS for Llama).
  // Invalid UTF-8 is an InvalidArgument error.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      bool add_special_tokens) const = 0;
  // Decodes ids to text as HF `decode(ids, skip_special_tokens=...)` does (byte fallback tokens
  // fused, the decoder's leading-space strip applied at the start). Invalid UTF-8 sequences
  // become U+FFFD as in HF.
  virtual std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const = 0;
  // Appends Decode(ids[0, n)) to `out`. For the incremental detokenizer, which decodes a short
  // window for every generated token: an implementation may skip Decode's temporaries.
  virtual void DecodeAppend(const int32_t* ids, size_t n, bool skip_special_tokens,
                            std::string* out) const {
    out->append(Decode(std::vector<int32_t>(ids, ids + n), skip_special_tokens));
  }
  // True when `id` adds to Decode's text: a token of non-empty text, and not a special token that
  // is skipped.
  virtual bool Renders(int32_t id, bool skip_special_tokens) const {
    return !IdToToken(id).empty() && !(skip_special_tokens && IsSpecial(id));
  }
  // True when Decode(ids) is the lossy UTF-8 (each ill-formed sequence one U+FFFD, as Rust's
  // from_utf8_lossy) of the ids' TokenBytes joined (ByteLevel decoders): then the text of ids
  // appended after bytes that end on a sequence boundary is their own Decode.
  virtual bool DecodesJoinedBytes() const { return false; }
  // The bytes `id` adds to that join: empty for an id Decode drops. Only where
  // DecodesJoinedBytes().
  virtual std::string_view TokenBytes(int32_t id, bool skip_special_tokens) const { return {}; }
  // A hint that `id` is about to be detokenized: its tables may be fetched into the cache ahead,
  // so that a batch of random ids (a large vocabulary, one id per sequence) overlaps the misses.
  virtual void Prefetch(int32_t id) const {}

  virtual int32_t vocab_size() const = 0;        // highest id + 1, added tokens included
  virtual bool IsSpecial(int32_t id) const = 0;  // added tokens marked special
  virtual int32_t TokenToId(std::string_view token) const = 0;  // -1 when unknown
  virtual std::string IdToToken(int32_t id) const = 0;          // "" when out of range
  // True for a byte-fallback token ("<0xXX>") that the decoder fuses with its neighbours. HF
  // renders a run of them only as a whole (valid UTF-8, or one U+FFFD per byte), so a later byte
  // can change how earlier ones render; the incremental detokenizer holds an open run back.
  virtual bool IsByteToken(int32_t id) const { return false; }
};

// Incremental detokenization of one sequence (prompt + generated ids), vLLM-style: the text of
// the generated part is Decode(all ids) minus Decode(prompt ids), produced piece by piece, holding
// back a piece while it ends in an incomplete UTF-8 sequence.
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer* tokenizer, std::vector<int32_t> prompt_ids,
                         bool skip_special_tokens = true);
  // Appends one generated id and returns the newly final text (possibly empty). Text is held
  // back while it ends in an incomplete character or an open run of byte-fallback tokens, so the
  // pieces joined always equal Decode(prompt + generated) minus Decode(prompt).
  std::string Append(int32_t id) { return std::string(AppendPiece(id)); }
  // Text released so far for the generated ids.
  const std::string& text() const { return text_; }
  // Moves text() out (the detokenizer is done with).
  std::string TakeText() { return std::move(text_); }
  // Flushes whatever is held back (at the end of the sequence; broken bytes become U+FFFD).
  std::string Finish() { return std::string(FinishPiece()); }
  // Append and Finish without the copy: the piece is the end of text(), valid until the next call.
  std::string_view AppendPiece(int32_t id);
  std::string_view FinishPiece();

 private:
  // Decodes the window [prefix_offset_, end) of ids_ into `out`.
  void DecodeWindow(size_t end, std::string* out) const;
  // Moves prefix_offset_ back until the context renders like it does in the whole sequence.
  void WidenContext();
  // True when `id` contributes to the decoded text (not out of range, not a skipped special).
  bool Renders(int32_t id) const;
  // True when the last rendering id not yet released is a byte token (its run may go on).
  bool EndsInByteRun() const;
  // DecodesJoinedBytes() only: true when the context's bytes end on a UTF-8 sequence boundary, so
  // that the window's text is the context's text followed by the new ids' own text.
  bool ContextEndsOnBoundary() const;
  // Releases the text of ids_[read_offset_, end) unless it must be held back (and `flush` is off).
  std::string_view Release(bool flush);

  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // start of the window decoded for context
  size_t read_offset_ = 0;    // ids before this are already in text_
  std::string text_;
  std::string prefix_text_, new_text_;  // Release's window decodes, kept for their capacity
  // Known: the context's bytes end on a sequence boundary (see ContextEndsOnBoundary).
  bool context_on_boundary_ = false;
};

}  // namespace dpinfer::engine
