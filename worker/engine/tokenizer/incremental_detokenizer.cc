// IncrementalDetokenizer: vLLM's detokenize_incrementally. Each step decodes only a small window
// of ids, [prefix_offset, end), and releases the new window text minus the text of the context
// [prefix_offset, read_offset). Decoding a window instead of the whole sequence keeps a step
// O(window); decoding it with a context gives the new piece the right leading space (a "▁" token
// renders as " " only after other text) and lets bytes complete a character: byte-fallback
// tokens ("<0xE6>") and byte-level tokens (GPT-2's "æĹ", two bytes of a three-byte character)
// alike leave a character open at a token boundary, which Decode renders as U+FFFD until the
// bytes that finish it arrive.
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "worker/engine/tokenizer/tokenizer.h"
#include "worker/engine/tokenizer/utf8.h"

namespace dpinfer::engine {
namespace {

// vLLM starts the context this many tokens before the end of the prompt: enough for the decoder
// to see what precedes the first generated token, and for a character split over byte tokens.
constexpr size_t kInitialContext = 5;

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// True when `text` ends inside a UTF-8 sequence (a lead byte whose continuation bytes are missing).
bool EndsWithIncompleteUtf8(std::string_view text) {
  // Walk back over at most 3 continuation bytes to the lead byte of the last sequence.
  size_t continuation = 0;
  size_t i = text.size();
  while (i > 0 && continuation < 4) {
    const unsigned char c = static_cast<unsigned char>(text[i - 1]);
    if ((c & 0xC0) != 0x80) {
      size_t need = 0;
      if ((c & 0xE0) == 0xC0) {
        need = 1;
      } else if ((c & 0xF0) == 0xE0) {
        need = 2;
      } else if ((c & 0xF8) == 0xF0) {
        need = 3;
      }
      return continuation < need;
    }
    ++continuation;
    --i;
  }
  return false;
}

// True when `bytes` ends inside a UTF-8 sequence that more bytes could still make well-formed: a
// proper prefix of one by the rules of the lossy decoding (tokenizer.cc's ScanUtf8: no overlong
// forms, surrogates or code points past U+10FFFF). Only such an ending makes the lossy text of
// `bytes` + more differ from the text of `bytes` followed by the text of the more: every other
// sequence, well-formed or not, is decided by bytes of its own.
bool EndsInsideSequence(std::string_view bytes) {
  // The last sequence starts at the last byte that is not a continuation byte (10xxxxxx); one that
  // starts 4 or more bytes back is complete or decided.
  size_t j = bytes.size();
  while (j > 0 && bytes.size() - j < 3 &&
         (static_cast<unsigned char>(bytes[j - 1]) & 0xC0) == 0x80) {
    --j;
  }
  if (j == 0) return false;
  --j;
  const unsigned char c = static_cast<unsigned char>(bytes[j]);
  const size_t have = bytes.size() - j;
  size_t n;
  unsigned char lo, hi;  // allowed range of the second byte
  // ASCII, a continuation byte or a byte that starts no sequence: nothing to wait for.
  if (!Utf8Lead(c, &n, &lo, &hi)) return false;
  if (have >= n) return false;
  if (have >= 2) {
    const unsigned char second = static_cast<unsigned char>(bytes[j + 1]);
    if (second < lo || second > hi) return false;
  }
  return true;
}

// Start of the UTF-8 character holding byte `i` (walks back over continuation bytes).
size_t CharStart(std::string_view text, size_t i) {
  while (i > 0 && i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
  return i;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer* tokenizer,
                                               std::vector<int32_t> prompt_ids,
                                               bool skip_special_tokens)
    : tokenizer_(tokenizer),
      skip_special_tokens_(skip_special_tokens),
      ids_(std::move(prompt_ids)) {
  read_offset_ = ids_.size();
  prefix_offset_ = read_offset_ > kInitialContext ? read_offset_ - kInitialContext : 0;
}

std::string_view IncrementalDetokenizer::AppendPiece(int32_t id) {
  ids_.push_back(id);
  return Release(/*flush=*/false);
}

std::string_view IncrementalDetokenizer::FinishPiece() { return Release(/*flush=*/true); }

void IncrementalDetokenizer::DecodeWindow(size_t end, std::string* out) const {
  out->clear();
  tokenizer_->DecodeAppend(ids_.data() + prefix_offset_, end - prefix_offset_, skip_special_tokens_,
                           out);
}

bool IncrementalDetokenizer::Renders(int32_t id) const {
  return tokenizer_->Renders(id, skip_special_tokens_);
}

// The context must render as it does inside the whole sequence, or the difference is wrong:
// - The decoder's start-of-text rules (Strip removes one leading space of the whole output) hit
//   the context and the full window alike and cancel in the difference, as long as the context
//   renders some token. A context of only skipped special tokens renders nothing, so the strip
//   would eat the new piece's leading space although text precedes the window.
// - A run of byte tokens renders only as a whole, so the context must not start inside one.
// Widening costs only as many steps as there are such tokens in a row.
void IncrementalDetokenizer::WidenContext() {
  bool context_renders = false;
  for (size_t i = prefix_offset_; i < read_offset_ && !context_renders; ++i) {
    context_renders = Renders(ids_[i]);
  }
  while (!context_renders && prefix_offset_ > 0) {
    --prefix_offset_;
    context_renders = Renders(ids_[prefix_offset_]);
  }
  // Now ids_[prefix_offset_] renders (or the window starts the sequence). Skipped specials do not
  // break a byte run, since HF drops them before the decoder sees the tokens.
  while (prefix_offset_ > 0 && tokenizer_->IsByteToken(ids_[prefix_offset_])) {
    size_t before = prefix_offset_ - 1;
    while (before > 0 && !Renders(ids_[before])) --before;
    if (!tokenizer_->IsByteToken(ids_[before])) break;
    prefix_offset_ = before;
  }
}

bool IncrementalDetokenizer::EndsInByteRun() const {
  for (size_t i = ids_.size(); i > read_offset_; --i) {
    if (Renders(ids_[i - 1])) return tokenizer_->IsByteToken(ids_[i - 1]);
  }
  return false;
}

bool IncrementalDetokenizer::ContextEndsOnBoundary() const {
  // The context's last 3 bytes decide it (see EndsInsideSequence).
  char tail[3];
  size_t have = 0;
  for (size_t i = read_offset_; i > prefix_offset_ && have < 3; --i) {
    const std::string_view b = tokenizer_->TokenBytes(ids_[i - 1], skip_special_tokens_);
    for (size_t k = b.size(); k > 0 && have < 3; --k) tail[2 - have++] = b[k - 1];
  }
  return !EndsInsideSequence(std::string_view(tail + 3 - have, have));
}

std::string_view IncrementalDetokenizer::Release(bool flush) {
  const size_t prefix_before = prefix_offset_;
  WidenContext();
  if (prefix_offset_ != prefix_before) context_on_boundary_ = false;
  if (tokenizer_->DecodesJoinedBytes() && (context_on_boundary_ || ContextEndsOnBoundary())) {
    // The window's text is then the context's text followed by the new ids' own text, so the
    // general rule below reduces to this without decoding the context: nothing new rendered
    // <=> the new text is empty; the window ends as the new text does; the piece is the new text.
    const size_t old_size = text_.size();
    tokenizer_->DecodeAppend(ids_.data() + read_offset_, ids_.size() - read_offset_,
                             skip_special_tokens_, &text_);
    const std::string_view piece = std::string_view(text_).substr(old_size);
    if (!flush && (piece.empty() || piece.ends_with(kReplacementChar) ||
                   EndsWithIncompleteUtf8(piece) || EndsInByteRun())) {
      text_.resize(old_size);
      return {};
    }
    prefix_offset_ = read_offset_;
    read_offset_ = ids_.size();
    // The new context is those ids, whose text does not end in U+FFFD, which it would if their
    // bytes ended inside a sequence (the lossy decoding turns that tail into one U+FFFD).
    context_on_boundary_ = !flush;
    return piece;
  }
  context_on_boundary_ = false;
  DecodeWindow(read_offset_, &prefix_text_);
  DecodeWindow(ids_.size(), &new_text_);
  const std::string& prefix_text = prefix_text_;
  const std::string& new_text = new_text_;
  // Hold back while nothing new rendered, while the newest bytes are an unfinished character
  // (ByteFallback and ByteLevel render those as U+FFFD until the rest arrives), and while the
  // window ends in an open run of byte-fallback tokens: a later byte that makes the run invalid
  // turns all of it into U+FFFD in Decode(all ids), already-complete characters included, and
  // released text cannot change.
  if (!flush && (new_text.size() <= prefix_text.size() || new_text.ends_with(kReplacementChar) ||
                 EndsWithIncompleteUtf8(new_text) || EndsInByteRun())) {
    return {};
  }
  size_t from = prefix_text.size();
  if (!new_text.starts_with(prefix_text)) {
    // The new tokens changed how the context renders (a byte run that was a complete character
    // became invalid and turned into U+FFFDs). Released text cannot be taken back, so release
    // from the first difference, cut at a character boundary so the piece stays valid UTF-8.
    const size_t common =
        std::mismatch(prefix_text.begin(), prefix_text.end(), new_text.begin(), new_text.end())
            .first -
        prefix_text.begin();
    from = CharStart(new_text, common);
  }
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  const size_t old_size = text_.size();
  text_.append(new_text, std::min(from, new_text.size()));
  return std::string_view(text_).substr(old_size);
}

}  // namespace dpinfer::engine
