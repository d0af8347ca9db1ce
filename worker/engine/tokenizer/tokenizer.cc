// The HF tokenizer.json pipeline for BPE models: Encode runs added-token split → normalizer →
// pre-tokenizer → BPE model → post-processor, and Decode runs the decoder chain, each with HF
// `tokenizers` semantics. Every stage is a small class picked from the JSON by a factory that
// refuses what it does not know with an Unimplemented error naming the file and the component.
// Two families are covered: SentencePiece-style BPE (Llama 1/2: Prepend/Replace normalizers, byte
// fallback) and byte-level BPE (GPT-2, Llama 3, Qwen2: ByteLevel and Split pre-tokenizers with
// ICU regexes, the ByteLevel decoder).
#include "worker/engine/tokenizer/tokenizer.h"
#include "worker/engine/tokenizer/utf8.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <queue>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "unicode/bytestream.h"
#include "unicode/normalizer2.h"
#include "unicode/regex.h"
#include "unicode/stringpiece.h"
#include "unicode/unistr.h"
#include "unicode/utypes.h"

namespace dpinfer::engine {
namespace {

using Json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8

// Scans the UTF-8 sequence starting at s[i]: returns its length when it is well-formed, else 0
// with `*prefix` set to the length of its longest well-formed prefix (at least 1), the "maximal
// subpart" that Rust's from_utf8_lossy replaces with one U+FFFD. Overlong forms, surrogates and
// code points past U+10FFFF are ill-formed, as in Rust's `str`, so a text we accept is one HF would
// accept.
size_t ScanUtf8(std::string_view s, size_t i, size_t* prefix) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  *prefix = 1;
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo, hi;  // allowed range of the second byte
  if (!Utf8Lead(c, &n, &lo, &hi)) return 0;
  if (i + 1 >= s.size() || byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  size_t k = 2;
  while (k < n && i + k < s.size() && (byte(i + k) & 0xC0) == 0x80) ++k;
  *prefix = k;
  return k == n ? n : 0;
}

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 when there is none.
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  size_t prefix;
  return ScanUtf8(s, i, &prefix);
}

// Byte offset of the first ill-formed sequence, or npos when `s` is valid UTF-8.
size_t FindInvalidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {  // ASCII, the common case, without the scan
      ++i;
      continue;
    }
    const size_t n = Utf8SequenceLength(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Appends `bytes` as Rust's String::from_utf8_lossy renders them (HF's ByteLevel decoder uses it):
// each maximal ill-formed subpart becomes one U+FFFD.
void AppendUtf8Lossy(std::string_view bytes, std::string* out) {
  size_t valid_start = 0;
  for (size_t i = 0; i < bytes.size();) {
    size_t prefix;
    if (const size_t n = ScanUtf8(bytes, i, &prefix); n > 0) {
      i += n;
      continue;
    }
    out->append(bytes.substr(valid_start, i - valid_start));
    out->append(kReplacementChar);
    i += prefix;
    valid_start = i;
  }
  out->append(bytes.substr(valid_start));
}

// The code point of the well-formed sequence of `n` bytes at s[i].
char32_t DecodeUtf8(std::string_view s, size_t i, size_t n) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  if (n == 1) return byte(0);
  char32_t cp = byte(0) & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (byte(k) & 0x3F);
  return cp;
}

// ---------------------------------------------------------------------------------------------
// GPT-2's byte <-> character bijection. Byte-level BPE vocabularies spell every byte as a printable
// character so that tokens are printable strings: the printable Latin-1 bytes ('!'..'~',
// '\xA1'..'\xAC', '\xAE'..'\xFF') stand for themselves and the other 68 bytes take U+0100, U+0101,
// ... in byte order. It is computed by the loop of GPT-2's bytes_to_unicode() rather than written
// out as a table, so it cannot drift from the original.

class ByteLevelAlphabet {
 public:
  static const ByteLevelAlphabet& Get() {
    static const ByteLevelAlphabet* const alphabet = new ByteLevelAlphabet();
    return *alphabet;
  }
  // UTF-8 of the character that stands for `byte` (1 or 2 bytes: every code point is < U+0144).
  std::string_view Char(unsigned char byte) const { return {chars_[byte].data(), lengths_[byte]}; }
  // The byte that code point `cp` stands for, or -1 when it stands for none.
  int Byte(char32_t cp) const { return cp < bytes_.size() ? bytes_[cp] : -1; }

 private:
  static constexpr int kLastCodePoint = 256 + 67;  // 68 unprintable bytes after U+00FF

  ByteLevelAlphabet() {
    bytes_.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? b : next++;
      if (cp < 0x80) {
        chars_[b] = {static_cast<char>(cp), 0};
        lengths_[b] = 1;
      } else {
        chars_[b] = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
        lengths_[b] = 2;
      }
      bytes_[cp] = static_cast<int16_t>(b);
    }
    CHECK(static_cast<int>(next) - 1 == kLastCodePoint);
  }

  std::array<std::array<char, 2>, 256> chars_;
  std::array<uint8_t, 256> lengths_;
  std::array<int16_t, kLastCodePoint + 1> bytes_;
};

// This abseil build has its own absl::string_view (not std's), so hashed lookups by
// std::string_view go through this conversion.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool IsAsciiWhitespace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
bool IsAsciiWordChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// ---------------------------------------------------------------------------------------------
// Loading context: every error names the file, and unsupported parts name the component.

struct LoadContext {
  std::string file;

  absl::Status Unsupported(absl::string_view component, absl::string_view what) const {
    return absl::UnimplementedError(absl::StrCat(file, ": unsupported ", component, " ", what));
  }
  absl::Status Invalid(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
  }
};

std::string TypeOf(const Json& j) {
  if (j.is_object() && j.contains("type") && j["type"].is_string()) {
    return absl::StrCat("\"", j["type"].get<std::string>(), "\"");
  }
  return j.dump();
}

// `pattern` of Replace normalizers/decoders: {"String": s} or {"Regex": r}; only literal strings
// are supported (HF regexes are Oniguruma, and no supported model needs one here).
absl::StatusOr<std::string> StringPattern(const Json& j, absl::string_view component,
                                          const LoadContext& ctx) {
  const Json& pattern = j.at("pattern");
  if (pattern.is_object() && pattern.contains("String")) {
    return pattern["String"].get<std::string>();
  }
  return ctx.Unsupported(component, absl::StrCat("\"Replace\" pattern ", pattern.dump()));
}

// ---------------------------------------------------------------------------------------------
// Normalizers: rewrite a piece of input text (between added tokens) before it is split into words.

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void Normalize(std::string* text) const = 0;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  // HF prepends only to non-empty text, so an empty prompt stays empty (ids = just BOS).
  void Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::string pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Normalize(std::string* text) const override {
    if (!pattern_.empty()) absl::StrReplaceAll({{pattern_, content_}}, text);
  }

 private:
  std::string pattern_;
  std::string content_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void Normalize(std::string* text) const override {
    for (const auto& step : steps_) step->Normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

// NFC / NFD / NFKC / NFKD through ICU (Qwen2 normalizes to NFC). Already-normalized text, the
// common case, is only checked, not copied.
class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(const icu::Normalizer2* normalizer) : normalizer_(normalizer) {}
  void Normalize(std::string* text) const override {
    UErrorCode status = U_ZERO_ERROR;
    const icu::StringPiece piece(text->data(), static_cast<int32_t>(text->size()));
    if (normalizer_->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return;
    status = U_ZERO_ERROR;
    std::string out;
    icu::StringByteSink<std::string> sink(&out);
    normalizer_->normalizeUTF8(0, piece, sink, nullptr, status);
    // Input is valid UTF-8 (Encode checks), so ICU has no reason to fail here.
    CHECK(U_SUCCESS(status));
    *text = std::move(out);
  }

 private:
  const icu::Normalizer2* normalizer_;  // ICU singleton, never freed
};

absl::StatusOr<std::unique_ptr<Normalizer>> MakeUnicodeNormalizer(const std::string& type,
                                                                  const LoadContext& ctx) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = nullptr;
  if (type == "NFC") normalizer = icu::Normalizer2::getNFCInstance(status);
  if (type == "NFD") normalizer = icu::Normalizer2::getNFDInstance(status);
  if (type == "NFKC") normalizer = icu::Normalizer2::getNFKCInstance(status);
  if (type == "NFKD") normalizer = icu::Normalizer2::getNFKDInstance(status);
  if (normalizer == nullptr || U_FAILURE(status)) {
    return ctx.Invalid(
        absl::StrCat("ICU cannot load the ", type, " normalizer: ", u_errorName(status)));
  }
  return std::make_unique<UnicodeNormalizer>(normalizer);
}

// nullptr for a null normalizer.
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const Json& j, const LoadContext& ctx) {
  if (j.is_null()) return nullptr;
  const std::string type = j.value("type", "");
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    return MakeUnicodeNormalizer(type, ctx);
  }
  if (type == "Prepend") {
    return std::make_unique<PrependNormalizer>(j.at("prepend").get<std::string>());
  }
  if (type == "Replace") {
    ASSIGN_OR_RETURN(std::string pattern, StringPattern(j, "normalizer", ctx));
    return std::make_unique<ReplaceNormalizer>(std::move(pattern),
                                               j.at("content").get<std::string>());
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const Json& step : j.at("normalizers")) {
      ASSIGN_OR_RETURN(std::unique_ptr<Normalizer> normalizer, MakeNormalizer(step, ctx));
      if (normalizer != nullptr) steps.push_back(std::move(normalizer));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  return ctx.Unsupported("normalizer", TypeOf(j));
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers: split normalized text into words that the model tokenizes independently (and may
// rewrite them, as ByteLevel maps bytes to printable characters). A null pre-tokenizer makes the
// whole normalized text one word, which is what SentencePiece-style BPE wants. Byte-level BPE
// (GPT-2, Llama 3, Qwen2) splits with a regex, either ByteLevel's own GPT-2 pattern or a Split
// pre-tokenizer's pattern followed by ByteLevel with use_regex off.

// A split pattern compiled with ICU. HF compiles these with Oniguruma; ICU agrees with it on all
// that the published patterns use (\p{L}, \p{N}, \s as the White_Space property, lookahead,
// (?i:...), {m,n}), where RE2 has no lookahead for GPT-2's `\s+(?!\S)`. A compiled RegexPattern is
// immutable and safe to share between threads; each call makes its own matcher.
class SplitPattern {
 public:
  // One piece of HF's find_matches: consecutive pieces cover the text; matches are flagged.
  struct Piece {
    size_t start;  // byte offsets
    size_t end;
    bool is_match;
  };

  // `literal` takes the pattern as a plain string (HF's {"String": ...}).
  static absl::StatusOr<std::unique_ptr<SplitPattern>> Compile(const std::string& pattern,
                                                               bool literal,
                                                               const LoadContext& ctx) {
    auto result = std::unique_ptr<SplitPattern>(new SplitPattern());
    if (literal && pattern.empty()) return result;  // HF: an empty string never matches
    UErrorCode status = U_ZERO_ERROR;
    UParseError parse_error;
    result->pattern_.reset(icu::RegexPattern::compile(
        icu::UnicodeString::fromUTF8(pattern), literal ? UREGEX_LITERAL : 0, parse_error, status));
    if (U_FAILURE(status)) {
      return ctx.Invalid(absl::StrCat("pre_tokenizer pattern \"", pattern, "\" does not compile (",
                                      u_errorName(status), " at offset ", parse_error.offset, ")"));
    }
    return result;
  }

  // Appends the pieces of `text` (valid UTF-8) to `pieces`.
  void FindMatches(std::string_view text, std::vector<Piece>* pieces) const {
    if (text.empty()) return;
    if (pattern_ == nullptr) {
      pieces->push_back({0, text.size(), false});
      return;
    }
    // ICU matches UTF-16; match offsets are mapped back to bytes by walking forward, since they
    // only grow.
    const icu::UnicodeString utf16 = icu::UnicodeString::fromUTF8(
        icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
    UErrorCode status = U_ZERO_ERROR;
    std::unique_ptr<icu::RegexMatcher> matcher(pattern_->matcher(utf16, status));
    CHECK(U_SUCCESS(status));
    int32_t pos16 = 0;
    size_t pos8 = 0;
    const auto to_byte_offset = [&](int32_t target16) {
      while (pos16 < target16) {
        const unsigned char lead = static_cast<unsigned char>(text[pos8]);
        const size_t n = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
        pos8 += n;
        pos16 += n == 4 ? 2 : 1;  // a 4-byte character is a surrogate pair
      }
      return pos8;
    };
    size_t previous = 0;
    while (matcher->find(status) && U_SUCCESS(status)) {
      const size_t start = to_byte_offset(matcher->start(status));
      const size_t end = to_byte_offset(matcher->end(status));
      if (start != previous) pieces->push_back({previous, start, false});
      pieces->push_back({start, end, true});
      previous = end;
    }
    CHECK(U_SUCCESS(status));
    if (previous != text.size()) pieces->push_back({previous, text.size(), false});
  }

 private:
  SplitPattern() = default;
  std::unique_ptr<icu::RegexPattern> pattern_;  // null for an empty literal
};

// What Split does with the matched delimiters (HF SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits `word` on `pattern` (HF NormalizedString::split) and appends the non-empty pieces.
void SplitWord(std::string_view word, const SplitPattern& pattern, SplitBehavior behavior,
               bool invert, std::vector<SplitPattern::Piece>* scratch,
               std::vector<std::string>* out) {
  std::vector<SplitPattern::Piece>& pieces = *scratch;
  pieces.clear();
  pattern.FindMatches(word, &pieces);
  if (invert) {
    for (auto& piece : pieces) piece.is_match = !piece.is_match;
  }
  // Fold the pieces into splits; `remove` marks the ones Removed drops.
  struct Span {
    size_t start, end;
    bool remove;
  };
  std::vector<Span> spans;
  spans.reserve(pieces.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const auto& p : pieces) spans.push_back({p.start, p.end, p.is_match});
      break;
    case SplitBehavior::kIsolated:
      for (const auto& p : pieces) spans.push_back({p.start, p.end, false});
      break;
    case SplitBehavior::kContiguous:
      for (const auto& p : pieces) {
        if (p.is_match == previous_match && !spans.empty()) {
          spans.back().end = p.end;
        } else {
          spans.push_back({p.start, p.end, false});
        }
        previous_match = p.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const auto& p : pieces) {
        if (p.is_match && !previous_match && !spans.empty()) {
          spans.back().end = p.end;
        } else {
          spans.push_back({p.start, p.end, false});
        }
        previous_match = p.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
        if (it->is_match && !previous_match && !spans.empty()) {
          spans.back().start = it->start;
        } else {
          spans.push_back({it->start, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(spans.begin(), spans.end());
      break;
  }
  for (const Span& span : spans) {
    if (!span.remove && span.end > span.start) {
      out->emplace_back(word.substr(span.start, span.end - span.start));
    }
  }
}

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces every word with the words it splits into, in order. Empty words are dropped, as HF
  // drops empty splits.
  virtual void PreTokenize(std::vector<std::string>* words) const = 0;
};

// HF's Split: {"pattern": {"Regex" | "String": ...}, "behavior": ..., "invert": ...}.
class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<SplitPattern> pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(std::vector<std::string>* words) const override {
    std::vector<std::string> out;
    std::vector<SplitPattern::Piece> scratch;
    for (const std::string& word : *words) {
      SplitWord(word, *pattern_, behavior_, invert_, &scratch, &out);
    }
    *words = std::move(out);
  }

 private:
  std::unique_ptr<SplitPattern> pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// GPT-2's pattern, which HF's ByteLevel applies when use_regex is on.
constexpr char kGpt2SplitPattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// HF's ByteLevel pre-tokenizer: optionally prefixes a space, optionally splits with the GPT-2
// pattern, then spells every byte of every word with the ByteLevelAlphabet character, which is
// what the vocab holds. trim_offsets only adjusts offsets, which this tokenizer does not report.
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<SplitPattern> pattern)
      : add_prefix_space_(add_prefix_space), pattern_(std::move(pattern)) {}
  void PreTokenize(std::vector<std::string>* words) const override {
    std::vector<std::string> split;
    std::vector<SplitPattern::Piece> scratch;
    std::string prefixed;
    for (const std::string& word : *words) {
      std::string_view text = word;
      // HF prepends to every non-empty split it is given, not just to the start of the text.
      if (add_prefix_space_ && !text.empty() && text[0] != ' ') {
        prefixed.assign(1, ' ');
        prefixed.append(text);
        text = prefixed;
      }
      if (pattern_ != nullptr) {
        SplitWord(text, *pattern_, SplitBehavior::kIsolated, false, &scratch, &split);
      } else if (!text.empty()) {
        split.emplace_back(text);
      }
    }
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
    for (std::string& word : split) {
      std::string mapped;
      mapped.reserve(word.size() * 2);
      for (unsigned char byte : word) mapped.append(alphabet.Char(byte));
      word = std::move(mapped);
    }
    *words = std::move(split);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<SplitPattern> pattern_;  // null when use_regex is off
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void PreTokenize(std::vector<std::string>* words) const override {
    for (const auto& step : steps_) step->PreTokenize(words);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

absl::StatusOr<SplitBehavior> ParseSplitBehavior(const Json& j, const LoadContext& ctx) {
  const std::string name = j.get<std::string>();
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return ctx.Unsupported("pre_tokenizer", absl::StrCat("\"Split\" behavior \"", name, "\""));
}

// nullptr for a null pre-tokenizer.
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const Json& j,
                                                               const LoadContext& ctx) {
  if (j.is_null()) return nullptr;
  const std::string type = j.value("type", "");
  if (type == "ByteLevel") {
    std::unique_ptr<SplitPattern> pattern;
    if (j.value("use_regex", true)) {
      ASSIGN_OR_RETURN(pattern, SplitPattern::Compile(kGpt2SplitPattern, false, ctx));
    }
    return std::make_unique<ByteLevelPreTokenizer>(j.value("add_prefix_space", true),
                                                   std::move(pattern));
  }
  if (type == "Split") {
    const Json& pattern = j.at("pattern");
    std::unique_ptr<SplitPattern> compiled;
    if (pattern.is_object() && pattern.contains("Regex")) {
      ASSIGN_OR_RETURN(compiled,
                       SplitPattern::Compile(pattern["Regex"].get<std::string>(), false, ctx));
    } else if (pattern.is_object() && pattern.contains("String")) {
      ASSIGN_OR_RETURN(compiled,
                       SplitPattern::Compile(pattern["String"].get<std::string>(), true, ctx));
    } else {
      return ctx.Unsupported("pre_tokenizer", absl::StrCat("\"Split\" pattern ", pattern.dump()));
    }
    ASSIGN_OR_RETURN(SplitBehavior behavior, ParseSplitBehavior(j.at("behavior"), ctx));
    return std::make_unique<SplitPreTokenizer>(std::move(compiled), behavior,
                                               j.value("invert", false));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const Json& step : j.at("pretokenizers")) {
      ASSIGN_OR_RETURN(std::unique_ptr<PreTokenizer> pre_tokenizer, MakePreTokenizer(step, ctx));
      if (pre_tokenizer != nullptr) steps.push_back(std::move(pre_tokenizer));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  return ctx.Unsupported("pre_tokenizer", TypeOf(j));
}

// ---------------------------------------------------------------------------------------------
// Decoders: HF decoders map the list of token strings to a new list (`decode_chain`); the decoded
// text is the final list joined with "". Steps see token boundaries, which matters: Strip strips
// each token it sees, so it strips the whole text only because Fuse ran before it.

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
  // True when "<0xXX>" tokens are turned into the bytes they name.
  virtual bool HasByteFallback() const { return false; }
  // True when the chain is exactly one ByteLevel decoder: the text of a list of tokens is then
  // the lossy UTF-8 of the concatenation of each token's own bytes (see ByteLevelDecoder).
  virtual bool IsByteLevel() const { return false; }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::string pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    if (pattern_.empty()) return;
    for (std::string& token : *tokens) absl::StrReplaceAll({{pattern_, content_}}, &token);
  }

 private:
  std::string pattern_;
  std::string content_;
};

// Runs of `<0xXX>` tokens become the bytes they name. As in HF, a run that is not valid UTF-8 as a
// whole becomes one U+FFFD per byte (not the "maximal subpart" rule of from_utf8_lossy).
class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens->size());
    std::string bytes;
    const auto flush = [&] {
      if (bytes.empty()) return;
      if (FindInvalidUtf8(bytes) == std::string_view::npos) {
        out.push_back(std::move(bytes));
      } else {
        for (size_t i = 0; i < bytes.size(); ++i) out.emplace_back(kReplacementChar);
      }
      bytes.clear();
    };
    for (std::string& token : *tokens) {
      int byte = ParseByteToken(token);
      if (byte >= 0) {
        bytes.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    *tokens = std::move(out);
  }
  bool HasByteFallback() const override { return true; }

  // The byte named by "<0xXX>" (hex digits of either case, as Rust's from_str_radix), else -1.
  static int ParseByteToken(std::string_view token) {
    if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return -1;
    int value = 0;
    for (char c : token.substr(3, 2)) {
      int digit;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        digit = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        digit = c - 'A' + 10;
      } else {
        return -1;
      }
      value = value * 16 + digit;
    }
    return value;
  }
};

// HF's ByteLevel decoder: every token whose characters all stand for bytes becomes those bytes;
// any other token (an added token spelled with plain characters) keeps its own UTF-8 bytes. The
// bytes of all tokens are then rendered together, so a character split across tokens is whole
// again, and broken sequences become U+FFFD (from_utf8_lossy).
class ByteLevelDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& token : *tokens) AppendTokenBytes(token, &bytes);
    std::string text;
    text.reserve(bytes.size());
    AppendUtf8Lossy(bytes, &text);
    tokens->clear();
    tokens->push_back(std::move(text));
  }
  bool IsByteLevel() const override { return true; }

  // Appends the bytes `token` stands for: its characters' bytes, or its own UTF-8 when one of them
  // stands for no byte. Each token's bytes depend on that token alone.
  static void AppendTokenBytes(std::string_view token, std::string* bytes) {
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
    const size_t mark = bytes->size();
    for (size_t i = 0; i < token.size();) {
      const size_t n = Utf8SequenceLength(token, i);
      const int byte = n == 0 ? -1 : alphabet.Byte(DecodeUtf8(token, i, n));
      if (byte < 0) {
        bytes->resize(mark);
        bytes->append(token);
        return;
      }
      bytes->push_back(static_cast<char>(byte));
      i += n;
    }
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string fused = absl::StrJoin(*tokens, "");
    tokens->clear();
    tokens->push_back(std::move(fused));
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character from every token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      std::string_view rest = token;
      for (size_t i = 0; i < start_ && rest.starts_with(content_); ++i) {
        rest.remove_prefix(content_.size());
      }
      for (size_t i = 0; i < stop_ && rest.ends_with(content_); ++i) {
        rest.remove_suffix(content_.size());
      }
      token = std::string(rest);
    }
  }

 private:
  std::string content_;  // one character (HF stores a `char`)
  size_t start_;
  size_t stop_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) step->DecodeChain(tokens);
  }
  bool HasByteFallback() const override {
    return std::any_of(steps_.begin(), steps_.end(),
                       [](const auto& step) { return step->HasByteFallback(); });
  }
  bool IsByteLevel() const override { return steps_.size() == 1 && steps_[0]->IsByteLevel(); }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// nullptr for a null decoder (HF then joins the tokens with spaces).
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const Json& j, const LoadContext& ctx) {
  if (j.is_null()) return nullptr;
  const std::string type = j.value("type", "");
  if (type == "Replace") {
    ASSIGN_OR_RETURN(std::string pattern, StringPattern(j, "decoder", ctx));
    return std::make_unique<ReplaceDecoder>(std::move(pattern), j.at("content").get<std::string>());
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  // add_prefix_space, trim_offsets and use_regex do not change what HF's ByteLevel decodes.
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    std::string content = j.at("content").get<std::string>();
    if (content.empty() || Utf8SequenceLength(content, 0) != content.size()) {
      return ctx.Invalid(
          absl::StrCat("decoder \"Strip\" content must be one character, got \"", content, "\""));
    }
    return std::make_unique<StripDecoder>(std::move(content), j.at("start").get<size_t>(),
                                          j.at("stop").get<size_t>());
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const Json& step : j.at("decoders")) {
      ASSIGN_OR_RETURN(std::unique_ptr<Decoder> decoder, MakeDecoder(step, ctx));
      if (decoder != nullptr) steps.push_back(std::move(decoder));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  return ctx.Unsupported("decoder", TypeOf(j));
}

// ---------------------------------------------------------------------------------------------
// Post-processor: TemplateProcessing's "single" template, i.e. fixed ids around the sequence.
// ByteLevel's post-processor only trims offsets (none here), so it adds nothing, and a Sequence
// applies its processors in order, each wrapping what the one before produced: Llama 3 is
// Sequence[ByteLevel, TemplateProcessing(<|begin_of_text|> $A)], GPT-2 plain ByteLevel.

struct SingleTemplate {
  std::vector<int32_t> before;  // e.g. BOS
  std::vector<int32_t> after;   // e.g. EOS for models that append one
};

absl::StatusOr<SingleTemplate> MakePostProcessor(const Json& j, const LoadContext& ctx) {
  SingleTemplate result;
  if (j.is_null()) return result;
  const std::string type = j.value("type", "");
  if (type == "ByteLevel") return result;
  if (type == "Sequence") {
    for (const Json& step : j.at("processors")) {
      ASSIGN_OR_RETURN(SingleTemplate inner, MakePostProcessor(step, ctx));
      inner.before.insert(inner.before.end(), result.before.begin(), result.before.end());
      result.before = std::move(inner.before);
      result.after.insert(result.after.end(), inner.after.begin(), inner.after.end());
    }
    return result;
  }
  if (type != "TemplateProcessing") return ctx.Unsupported("post_processor", TypeOf(j));
  bool seen_sequence = false;
  for (const Json& piece : j.at("single")) {
    if (piece.contains("Sequence")) {
      const std::string seq = piece["Sequence"].at("id").get<std::string>();
      if (seq != "A" || seen_sequence) {
        return ctx.Invalid(absl::StrCat("post_processor single template uses sequence ", seq));
      }
      seen_sequence = true;
    } else if (piece.contains("SpecialToken")) {
      const std::string name = piece["SpecialToken"].at("id").get<std::string>();
      const Json& specials = j.at("special_tokens");
      if (!specials.contains(name)) {
        return ctx.Invalid(absl::StrCat("post_processor special token ", name, " is not defined"));
      }
      std::vector<int32_t>& dest = seen_sequence ? result.after : result.before;
      for (const Json& id : specials[name].at("ids")) dest.push_back(id.get<int32_t>());
    } else {
      return ctx.Unsupported("post_processor", absl::StrCat("template piece ", piece.dump()));
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Added tokens: literal strings matched in the input before the model sees it, leftmost-longest
// as HF's Aho-Corasick does. Few enough (3 for Llama 2, a few hundred for Llama 3) that bucketing
// candidates by first byte keeps a scan position cheap.

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool normalized = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

// A piece of input: plain text (id -1) or one added token.
struct Segment {
  std::string_view text;
  int32_t id = -1;
};

class AddedTokenMatcher {
 public:
  void Add(std::string pattern, const AddedToken* token) {
    if (pattern.empty()) return;
    auto& bucket = by_first_byte_[static_cast<unsigned char>(pattern[0])];
    bucket.push_back({std::move(pattern), token});
    // Longest first, so the first match at a position is the longest one.
    std::stable_sort(bucket.begin(), bucket.end(), [](const Pattern& a, const Pattern& b) {
      return a.text.size() > b.text.size();
    });
  }

  // Appends `text` split into plain pieces and added tokens to `out`. lstrip/rstrip tokens absorb
  // the whitespace beside them; single_word tokens count only between non-word characters, and a
  // rejected match is left as plain text (HF filters matches, it does not retry shorter ones).
  void Split(std::string_view text, std::vector<Segment>* out) const {
    size_t plain_start = 0;
    size_t i = 0;
    while (i < text.size()) {
      const Pattern* match = MatchAt(text, i);
      if (match == nullptr) {
        ++i;
        continue;
      }
      size_t start = i, end = i + match->text.size();
      const AddedToken& token = *match->token;
      if (token.single_word && ((start > 0 && IsAsciiWordChar(text[start - 1])) ||
                                (end < text.size() && IsAsciiWordChar(text[end])))) {
        i = end;
        continue;
      }
      if (token.lstrip) {
        while (start > plain_start && IsAsciiWhitespace(text[start - 1])) --start;
      }
      if (token.rstrip) {
        while (end < text.size() && IsAsciiWhitespace(text[end])) ++end;
      }
      if (start > plain_start) out->push_back({text.substr(plain_start, start - plain_start)});
      out->push_back({text.substr(start, end - start), token.id});
      plain_start = i = end;
    }
    if (plain_start < text.size()) out->push_back({text.substr(plain_start)});
  }

 private:
  struct Pattern {
    std::string text;
    const AddedToken* token;
  };

  const Pattern* MatchAt(std::string_view text, size_t i) const {
    auto it = by_first_byte_.find(static_cast<unsigned char>(text[i]));
    if (it == by_first_byte_.end()) return nullptr;
    for (const Pattern& pattern : it->second) {
      if (text.substr(i).starts_with(pattern.text)) return &pattern;
    }
    return nullptr;
  }

  absl::flat_hash_map<unsigned char, std::vector<Pattern>> by_first_byte_;
};

// ---------------------------------------------------------------------------------------------
// The BPE model.

// Word -> ids memo, as HF's BPE keeps one: natural text repeats its words so much that most
// words of a prompt were merged before, and a lookup costs far less than a merge. Encode is const
// and may run on several threads, so the map sits behind a shared mutex; writers only try the
// lock, and once full the cache stops growing (HF does both), which keeps a lookup from ever
// waiting behind a writer for long and bounds the memory.
class WordCache {
 public:
  // Appends the cached ids of `word` and returns true on a hit.
  bool Lookup(std::string_view word, std::vector<int32_t>* ids) const {
    std::shared_lock lock(mu_);
    auto it = map_.find(AbslView(word));
    if (it == map_.end()) return false;
    ids->insert(ids->end(), it->second.begin(), it->second.end());
    return true;
  }
  void Insert(std::string_view word, std::vector<int32_t> ids) {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock() || map_.size() >= kCapacity) return;
    map_.emplace(std::string(word), std::move(ids));
  }

 private:
  static constexpr size_t kCapacity = 10000;  // HF's DEFAULT_CACHE_CAPACITY
  mutable std::shared_mutex mu_;
  absl::flat_hash_map<std::string, std::vector<int32_t>> map_;
};

class BpeModel {
 public:
  static absl::StatusOr<std::unique_ptr<BpeModel>> Load(const Json& j, const LoadContext& ctx) {
    auto model = std::unique_ptr<BpeModel>(new BpeModel());
    for (const auto& [token, id] : j.at("vocab").items()) {
      model->vocab_[token] = id.get<int32_t>();
    }
    const Json& dropout = j.value("dropout", Json());
    if (!dropout.is_null() && dropout.get<double>() != 0.0) {
      return ctx.Unsupported("model", "BPE with dropout (it is random; training only)");
    }
    model->byte_fallback_ = j.value("byte_fallback", false);
    model->fuse_unk_ = j.value("fuse_unk", false);
    model->ignore_merges_ = j.value("ignore_merges", false);
    const auto optional_string = [&](const char* key) {
      return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
    };
    model->continuing_subword_prefix_ = optional_string("continuing_subword_prefix");
    model->end_of_word_suffix_ = optional_string("end_of_word_suffix");
    const std::string unk = optional_string("unk_token");
    if (!unk.empty()) {
      auto it = model->vocab_.find(unk);
      if (it == model->vocab_.end()) {
        return ctx.Invalid(absl::StrCat("BPE unk_token \"", unk, "\" is not in the vocab"));
      }
      model->unk_id_ = it->second;
    }

    // Rank i is the i-th merge; the merged token must be in the vocab (HF refuses otherwise). A
    // repeated pair keeps its last rank, as HF's map insertion does.
    const Json& merges = j.at("merges");
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const Json& merge = merges[rank];
      std::string left, right;
      if (merge.is_string()) {
        const std::string line = merge.get<std::string>();
        const size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
          return ctx.Invalid(absl::StrCat("BPE merge \"", line, "\" is not two tokens"));
        }
        left = line.substr(0, space);
        right = line.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2) {
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      } else {
        return ctx.Invalid(absl::StrCat("BPE merge ", merge.dump(), " is not two tokens"));
      }
      const int32_t left_id = model->Find(left), right_id = model->Find(right);
      const int32_t merged_id = model->Find(left + right);
      if (left_id < 0 || right_id < 0 || merged_id < 0) {
        return ctx.Invalid(
            absl::StrCat("BPE merge \"", left, " ", right, "\" uses a token not in the vocab"));
      }
      model->merges_[PairKey(left_id, right_id)] = {static_cast<int32_t>(rank), merged_id};
    }
    return model;
  }

  const absl::flat_hash_map<std::string, int32_t>& vocab() const { return vocab_; }

  // Appends the ids of one word (HF `BPE::merge_word` + `Word::merge_all`).
  void Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      if (int32_t id = Find(word); id >= 0) {
        ids->push_back(id);
        return;
      }
    }
    const bool cacheable = word.size() <= kMaxCachedWordBytes;
    if (cacheable && cache_.Lookup(word, ids)) return;
    const size_t mark = ids->size();
    std::vector<Symbol> symbols = InitialSymbols(word);
    MergeAll(&symbols);
    for (const Symbol& symbol : symbols) {
      if (symbol.alive) ids->push_back(symbol.id);
    }
    if (cacheable) cache_.Insert(word, std::vector<int32_t>(ids->begin() + mark, ids->end()));
  }

 private:
  struct Symbol {
    int32_t id;
    int32_t prev;  // index of the previous live symbol, -1 at the start
    int32_t next;  // index of the next live symbol, -1 at the end
    bool alive;
  };
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };

  BpeModel() = default;

  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  int32_t Find(std::string_view token) const {
    auto it = vocab_.find(AbslView(token));
    return it == vocab_.end() ? -1 : it->second;
  }

  // One symbol per code point when it is in the vocab; else its UTF-8 bytes as <0xXX> tokens with
  // byte fallback; else unk (consecutive unks fused into one with fuse_unk); else dropped, as HF.
  std::vector<Symbol> InitialSymbols(std::string_view word) const {
    std::vector<int32_t> ids;
    ids.reserve(word.size());
    bool pending_unk = false;  // a fused unk not yet appended
    std::string piece;
    for (size_t i = 0; i < word.size();) {
      const size_t len = std::max<size_t>(Utf8SequenceLength(word, i), 1);
      piece.assign(word.substr(i, len));
      if (i > 0 && !continuing_subword_prefix_.empty()) piece.insert(0, continuing_subword_prefix_);
      i += len;
      if (i >= word.size()) piece += end_of_word_suffix_;
      if (int32_t id = Find(piece); id >= 0) {
        if (pending_unk) ids.push_back(unk_id_);
        pending_unk = false;
        ids.push_back(id);
        continue;
      }
      if (byte_fallback_ && AppendByteTokens(piece, &ids)) continue;
      if (unk_id_ >= 0) {
        if (pending_unk && !fuse_unk_) ids.push_back(unk_id_);
        pending_unk = true;
      }
    }
    if (pending_unk) ids.push_back(unk_id_);

    std::vector<Symbol> symbols(ids.size());
    for (size_t k = 0; k < ids.size(); ++k) {
      symbols[k] = {ids[k], static_cast<int32_t>(k) - 1,
                    k + 1 < ids.size() ? static_cast<int32_t>(k + 1) : -1, true};
    }
    return symbols;
  }

  // Appends "<0xXX>" ids for every byte of `piece`; false (appending nothing) when one is missing.
  bool AppendByteTokens(std::string_view piece, std::vector<int32_t>* ids) const {
    const size_t mark = ids->size();
    for (unsigned char byte : piece) {
      const int32_t id = Find(absl::StrFormat("<0x%02X>", byte));
      if (id < 0) {
        ids->resize(mark);
        return false;
      }
      ids->push_back(id);
    }
    return true;
  }

  // Repeatedly merges the adjacent pair of lowest rank (leftmost on ties) until none is left. The
  // symbols form a linked list and candidate pairs wait in a min-heap; a candidate made stale by
  // an earlier merge is recognised when popped and dropped, so a word of n symbols costs
  // O(n log n) rather than the O(n^2) of rescanning for the best pair after every merge.
  void MergeAll(std::vector<Symbol>* symbols_ptr) const {
    std::vector<Symbol>& symbols = *symbols_ptr;
    struct Candidate {
      int32_t rank;
      int32_t pos;  // index of the left symbol
      int32_t new_id;
      bool operator>(const Candidate& other) const {
        return rank != other.rank ? rank > other.rank : pos > other.pos;
      }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
    const auto push_pair = [&](int32_t pos) {
      const int32_t next = symbols[pos].next;
      if (next < 0) return;
      auto it = merges_.find(PairKey(symbols[pos].id, symbols[next].id));
      if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.new_id});
    };
    for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(symbols.size()); ++pos) push_pair(pos);

    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      Symbol& left = symbols[top.pos];
      if (!left.alive || left.next < 0) continue;
      Symbol& right = symbols[left.next];
      // Stale when the pair at `pos` changed since it was queued (HF compares the merged id).
      auto it = merges_.find(PairKey(left.id, right.id));
      if (it == merges_.end() || it->second.new_id != top.new_id) continue;
      left.id = top.new_id;
      right.alive = false;
      left.next = right.next;
      if (left.next >= 0) symbols[left.next].prev = top.pos;
      if (left.prev >= 0) push_pair(left.prev);
      push_pair(top.pos);
    }
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  // Byte-level words are short; SentencePiece-style "words" are whole prompts, not worth keeping.
  static constexpr size_t kMaxCachedWordBytes = 256;
  mutable WordCache cache_;
};

// ---------------------------------------------------------------------------------------------
// The tokenizer: the pipeline stages above, plus the id ↔ token tables.

class HfTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Create(const Json& j,
                                                             const LoadContext& ctx) {
    auto tok = std::unique_ptr<HfTokenizer>(new HfTokenizer());
    const Json& model = j.at("model");
    const std::string model_type = model.value("type", "");
    if (model_type != "BPE") return ctx.Unsupported("model type", TypeOf(model));
    ASSIGN_OR_RETURN(tok->model_, BpeModel::Load(model, ctx));
    ASSIGN_OR_RETURN(tok->normalizer_, MakeNormalizer(j.value("normalizer", Json()), ctx));
    ASSIGN_OR_RETURN(tok->pre_tokenizer_, MakePreTokenizer(j.value("pre_tokenizer", Json()), ctx));
    ASSIGN_OR_RETURN(tok->decoder_, MakeDecoder(j.value("decoder", Json()), ctx));
    ASSIGN_OR_RETURN(tok->template_, MakePostProcessor(j.value("post_processor", Json()), ctx));

    for (const Json& added : j.value("added_tokens", Json::array())) {
      AddedToken token;
      token.content = added.at("content").get<std::string>();
      token.id = added.at("id").get<int32_t>();
      token.special = added.value("special", false);
      token.normalized = added.value("normalized", false);
      token.lstrip = added.value("lstrip", false);
      token.rstrip = added.value("rstrip", false);
      token.single_word = added.value("single_word", false);
      if (token.id < 0) return ctx.Invalid(absl::StrCat("added token with id ", token.id));
      tok->added_.push_back(std::move(token));
    }
    tok->BuildTables();
    return tok;
  }

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool add_special_tokens) const override {
    if (const size_t bad = FindInvalidUtf8(text); bad != std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("prompt is not valid UTF-8 at byte ", bad));
    }
    std::vector<int32_t> ids;
    if (add_special_tokens) ids = template_.before;

    // HF order: split on added tokens that match raw text, normalize each remaining piece, split
    // that on added tokens that match normalized text, then pre-tokenize and run the model. Each
    // piece is finished before the next so the views into `normalized` stay valid.
    std::vector<Segment> raw_segments;
    raw_matcher_.Split(text, &raw_segments);
    std::vector<Segment> segments;
    std::vector<std::string> words;
    for (const Segment& raw : raw_segments) {
      if (raw.id >= 0) {
        ids.push_back(raw.id);
        continue;
      }
      std::string normalized(raw.text);
      if (normalizer_ != nullptr) normalizer_->Normalize(&normalized);
      segments.clear();
      normalized_matcher_.Split(normalized, &segments);
      for (const Segment& segment : segments) {
        if (segment.id >= 0) {
          ids.push_back(segment.id);
        } else if (pre_tokenizer_ == nullptr) {
          model_->Tokenize(segment.text, &ids);
        } else {
          words.clear();
          words.emplace_back(segment.text);
          pre_tokenizer_->PreTokenize(&words);
          for (const std::string& word : words) model_->Tokenize(word, &ids);
        }
      }
    }

    if (add_special_tokens) ids.insert(ids.end(), template_.after.begin(), template_.after.end());
    return ids;
  }

  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
      // Ids with no token are dropped, as HF's id_to_token returning None.
      if (id < 0 || id >= vocab_size() || !known_[id]) continue;
      if (skip_special_tokens && special_[id]) continue;
      tokens.push_back(id_to_token_[id]);
    }
    if (decoder_ == nullptr) return absl::StrJoin(tokens, " ");
    decoder_->DecodeChain(&tokens);
    return absl::StrJoin(tokens, "");
  }

  void DecodeAppend(const int32_t* ids, size_t n, bool skip_special_tokens,
                    std::string* out) const override {
    if (!byte_level_) {
      Tokenizer::DecodeAppend(ids, n, skip_special_tokens, out);
      return;
    }
    // ByteLevel: each token's bytes come from the table, then one lossy UTF-8 pass, as
    // ByteLevelDecoder::DecodeChain renders them; the common valid case needs no second buffer.
    const size_t start = out->size();
    for (size_t i = 0; i < n; ++i) out->append(TokenBytes(ids[i], skip_special_tokens));
    const size_t bad = FindInvalidUtf8(std::string_view(*out).substr(start));
    if (bad == std::string_view::npos) return;
    // The bytes before the first ill-formed sequence are whole characters and stay as they are.
    const size_t from = start + bad;
    char small[64];
    std::string large;
    std::string_view rest;
    if (out->size() - from <= sizeof(small)) {
      rest = std::string_view(small, out->copy(small, sizeof(small), from));
    } else {
      large = out->substr(from);
      rest = large;
    }
    out->resize(from);
    AppendUtf8Lossy(rest, out);
  }

  bool DecodesJoinedBytes() const override { return byte_level_; }
  std::string_view TokenBytes(int32_t id, bool skip_special_tokens) const override {
    // Decode's rule: ids with no token, and skipped specials, add nothing.
    const uint8_t skip = kKnown | (skip_special_tokens ? kSpecial : 0);
    if (id < 0 || id >= vocab_size()) return {};
    const IdEntry& e = entries_[id];
    if ((e.flags & skip) != kKnown) return {};
    if (e.size != IdEntry::kLong) return std::string_view(e.bytes, e.size);
    uint32_t offset, size;
    std::memcpy(&offset, e.bytes, sizeof(offset));
    std::memcpy(&size, e.bytes + sizeof(offset), sizeof(size));
    return std::string_view(long_bytes_).substr(offset, size);
  }

  void Prefetch(int32_t id) const override {
    if (id >= 0 && id < vocab_size()) __builtin_prefetch(&entries_[id]);
  }

  bool Renders(int32_t id, bool skip_special_tokens) const override {
    if (id < 0 || id >= vocab_size()) return false;
    return (entries_[id].flags & (kHasText | (skip_special_tokens ? kSpecial : 0))) == kHasText;
  }

  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_token_.size()); }
  bool IsSpecial(int32_t id) const override { return id >= 0 && id < vocab_size() && special_[id]; }
  int32_t TokenToId(std::string_view token) const override {
    auto it = token_to_id_.find(AbslView(token));
    return it == token_to_id_.end() ? -1 : it->second;
  }
  std::string IdToToken(int32_t id) const override {
    return id >= 0 && id < vocab_size() ? id_to_token_[id] : std::string();
  }
  bool IsByteToken(int32_t id) const override {
    return id >= 0 && id < vocab_size() && byte_token_[id];
  }

 private:
  HfTokenizer() = default;

  // Added tokens take precedence over model tokens for the same id or content, as in HF.
  void BuildTables() {
    int32_t size = 0;
    for (const auto& [token, id] : model_->vocab()) size = std::max(size, id + 1);
    for (const AddedToken& token : added_) size = std::max(size, token.id + 1);
    id_to_token_.assign(size, std::string());
    known_.assign(size, false);
    special_.assign(size, false);
    token_to_id_ = model_->vocab();
    byte_token_.assign(size, false);
    const bool byte_fallback = decoder_ != nullptr && decoder_->HasByteFallback();
    for (const auto& [token, id] : model_->vocab()) {
      if (id < 0) continue;
      id_to_token_[id] = token;
      known_[id] = true;
      byte_token_[id] = byte_fallback && ByteFallbackDecoder::ParseByteToken(token) >= 0;
    }
    for (const AddedToken& token : added_) {
      id_to_token_[token.id] = token.content;
      known_[token.id] = true;
      special_[token.id] = token.special;
      token_to_id_[token.content] = token.id;
      byte_token_[token.id] = false;
      if (token.normalized) {
        // HF matches normalized added tokens by their normalized content.
        std::string pattern = token.content;
        if (normalizer_ != nullptr) normalizer_->Normalize(&pattern);
        normalized_matcher_.Add(std::move(pattern), &token);
      } else {
        raw_matcher_.Add(token.content, &token);
      }
    }
    byte_level_ = decoder_ != nullptr && decoder_->IsByteLevel();
    entries_.assign(size, IdEntry{});
    std::string bytes;
    for (int32_t id = 0; id < size; ++id) {
      IdEntry& e = entries_[id];
      e.flags = (known_[id] ? kKnown : 0) | (special_[id] ? kSpecial : 0) |
                (id_to_token_[id].empty() ? 0 : kHasText);
      if (!byte_level_) continue;
      bytes.clear();
      ByteLevelDecoder::AppendTokenBytes(id_to_token_[id], &bytes);
      if (bytes.size() <= sizeof(e.bytes)) {
        e.size = static_cast<uint8_t>(bytes.size());
        bytes.copy(e.bytes, bytes.size());
      } else {
        e.size = IdEntry::kLong;
        const uint32_t offset = static_cast<uint32_t>(long_bytes_.size());
        const uint32_t length = static_cast<uint32_t>(bytes.size());
        std::memcpy(e.bytes, &offset, sizeof(offset));
        std::memcpy(e.bytes + sizeof(offset), &length, sizeof(length));
        long_bytes_ += bytes;
      }
    }
  }

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Decoder> decoder_;
  SingleTemplate template_;

  std::vector<AddedToken> added_;  // fixed after Create: the matchers point into it
  AddedTokenMatcher raw_matcher_;
  AddedTokenMatcher normalized_matcher_;

  std::vector<std::string> id_to_token_;
  std::vector<bool> known_;
  std::vector<bool> special_;
  std::vector<bool> byte_token_;
  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  // What the incremental detokenizer asks of every generated id (Renders, TokenBytes), in one
  // 16-byte entry per id so that a random id costs one cache line: known_, special_, whether the
  // token's text is non-empty, and with a ByteLevel decoder the token's bytes, inline when short.
  static constexpr uint8_t kKnown = 1, kSpecial = 2, kHasText = 4;
  struct IdEntry {
    static constexpr uint8_t kLong = 255;  // `size` of bytes kept in long_bytes_
    uint8_t flags = 0;
    uint8_t size = 0;  // inline byte count, or kLong: `bytes` holds a uint32 offset and size
    char bytes[14] = {};
  };
  static_assert(sizeof(IdEntry) == 16);
  bool byte_level_ = false;  // the decoder is one ByteLevel: TokenBytes serves Decode
  std::vector<IdEntry> entries_;
  std::string long_bytes_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  std::string file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    file = (std::filesystem::path(path) / "tokenizer.json").string();
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", file));
  std::stringstream buffer;
  buffer << in.rdbuf();

  const LoadContext ctx{file};
  Json j = Json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return ctx.Invalid("not a JSON object");
  // nlohmann reports missing keys and wrong types by exception; they stop here as a Status.
  try {
    ASSIGN_OR_RETURN(std::unique_ptr<HfTokenizer> tokenizer, HfTokenizer::Create(j, ctx));
    return std::unique_ptr<Tokenizer>(std::move(tokenizer));
  } catch (const Json::exception& e) {
    return ctx.Invalid(absl::StrCat("malformed tokenizer.json: ", e.what()));
  }
}

}  // namespace dpinfer::engine
