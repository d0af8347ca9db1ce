// Tokenizer throughput, single thread: MB/s of text encoded (and decoded) by the GPT-2 byte-level
// BPE tokenizer and the stories260K SentencePiece-BPE tokenizer, over a few MB of generated
// prose cut into prompt-sized pieces, as the worker encodes prompts. Each figure is also given as a
// ratio to a UTF-8 scan (count the code points) of the same text in the same run, the floor any
// tokenizer pays to read its input; a memcpy figure shows the memory bandwidth for scale.
//
//   tokenizer_bench [--shared DIR] [--mb N] [--repeat R]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "worker/engine/tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

// A made-up word for rank `r`, from syllables: the long tail of a vocabulary.
std::string SyntheticWord(size_t r) {
  static const char* const kSyllables[] = {"ka",  "to", "ri",   "men", "sa", "lo",  "ver", "in",
                                           "tha", "pe", "ston", "gu",  "re", "dal", "o",   "ne"};
  std::string word;
  do {
    word += kSyllables[r % std::size(kSyllables)];
    r /= std::size(kSyllables);
  } while (r > 0);
  return word;
}

// Prose-like text: words drawn from a Zipf distribution over 50000 ranks (the head is common
// English, the tail made-up words), so that a word cache sees a realistic share of repeats and
// misses; some capitalised, punctuation, numbers, a few words in other scripts (accents,
// Cyrillic, CJK, emoji) so that multi-byte paths run too; paragraphs of 1-3 KB, one per prompt.
std::vector<std::string> MakePrompts(size_t total_bytes, uint64_t seed) {
  static const char* const kWords[] = {"the",          "of",
                                       "and",          "a",
                                       "to",           "in",
                                       "is",           "you",
                                       "that",         "it",
                                       "he",           "was",
                                       "for",          "on",
                                       "are",          "as",
                                       "with",         "his",
                                       "they",         "at",
                                       "be",           "this",
                                       "have",         "from",
                                       "or",           "one",
                                       "had",          "by",
                                       "word",         "but",
                                       "not",          "what",
                                       "all",          "were",
                                       "we",           "when",
                                       "your",         "can",
                                       "said",         "there",
                                       "use",          "an",
                                       "each",         "which",
                                       "she",          "do",
                                       "how",          "their",
                                       "if",           "will",
                                       "up",           "other",
                                       "about",        "out",
                                       "many",         "then",
                                       "them",         "these",
                                       "so",           "some",
                                       "her",          "would",
                                       "make",         "like",
                                       "time",         "look",
                                       "two",          "more",
                                       "write",        "go",
                                       "see",          "number",
                                       "way",          "could",
                                       "people",       "than",
                                       "first",        "water",
                                       "been",         "call",
                                       "who",          "oil",
                                       "now",          "find",
                                       "long",         "down",
                                       "day",          "did",
                                       "get",          "come",
                                       "made",         "may",
                                       "part",         "little",
                                       "garden",       "happy",
                                       "story",        "tiny",
                                       "dragon",       "princess",
                                       "forest",       "suddenly",
                                       "because",      "tokenizer",
                                       "inference",    "batch",
                                       "parallel",     "throughput",
                                       "unbelievable", "internationalization"};
  static const char* const kForeign[] = {"café",   "naïve", "Führer", "привет", "мир",
                                         "日本語", "東京",  "🚀",      "😀",      "Ελλάδα"};
  static const char* const kPunct[] = {",", ",", ".", ".", ".", "!", "?", ";", ":", " -", "'s"};
  constexpr size_t kRanks = 50000;
  std::vector<double> cdf(kRanks);
  double sum = 0;
  for (size_t r = 0; r < kRanks; ++r) cdf[r] = sum += 1.0 / (r + 1);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0, sum);
  const auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  std::vector<std::string> prompts;
  size_t bytes = 0;
  while (bytes < total_bytes) {
    std::string p;
    const size_t target = 1024 + pick(2048);
    bool sentence_start = true;
    while (p.size() < target) {
      if (!p.empty()) p += ' ';
      std::string word;
      const size_t kind = pick(100);
      if (kind < 3) {
        word = kForeign[pick(std::size(kForeign))];
      } else if (kind < 6) {
        word = std::to_string(pick(kind < 5 ? 100 : 100000));
      } else {
        const size_t r = std::lower_bound(cdf.begin(), cdf.end(), uniform(rng)) - cdf.begin();
        word = r < std::size(kWords) ? kWords[r] : SyntheticWord(r);
      }
      if (sentence_start && word[0] >= 'a' && word[0] <= 'z') word[0] -= 'a' - 'A';
      p += word;
      sentence_start = false;
      if (pick(8) == 0) {
        const std::string punct = kPunct[pick(std::size(kPunct))];
        p += punct;
        sentence_start = punct == "." || punct == "!" || punct == "?";
      }
      if (pick(60) == 0) p += "\n";
    }
    p += ".\n";
    bytes += p.size();
    prompts.push_back(std::move(p));
  }
  return prompts;
}

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Best of `repeat` runs of fn(), in seconds: the least disturbed by other load on the machine.
template <typename Fn>
double Best(int repeat, Fn fn) {
  double best = 1e30;
  for (int r = 0; r < repeat; ++r) {
    const auto start = Clock::now();
    fn();
    best = std::min(best, Seconds(start));
  }
  return best;
}

// Counts code points: a lower bound for any tokenizer, which must at least read every character.
size_t CountCodePoints(const std::vector<std::string>& prompts) {
  size_t n = 0;
  for (const std::string& p : prompts) {
    for (unsigned char c : p) n += (c & 0xC0) != 0x80;
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  std::string shared = DPINFER_SHARED_DIR;
  double mb = 4;
  int repeat = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--shared" && i + 1 < argc) {
      shared = argv[++i];
    } else if (arg == "--mb" && i + 1 < argc) {
      mb = std::atof(argv[++i]);
    } else if (arg == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: tokenizer_bench [--shared DIR] [--mb N] [--repeat R]\n");
      return 2;
    }
  }

  const std::vector<std::string> prompts = MakePrompts(static_cast<size_t>(mb * 1e6), 1);
  size_t total = 0;
  for (const std::string& p : prompts) total += p.size();
  const double total_mb = total / 1e6;
  std::printf("text: %zu prompts, %.2f MB, single thread, best of %d\n", prompts.size(), total_mb,
              repeat);

  // Floors measured on the same text in this run.
  std::vector<char> copy(total);
  volatile size_t sink = 0;
  const double memcpy_s = Best(repeat, [&] {
    size_t off = 0;
    for (const std::string& p : prompts) {
      std::memcpy(copy.data() + off, p.data(), p.size());
      off += p.size();
    }
    sink = sink + static_cast<unsigned char>(copy[total / 2]);
  });
  const double scan_s = Best(repeat, [&] { sink = sink + CountCodePoints(prompts); });
  const double scan_mbs = total_mb / scan_s;
  std::printf("%-34s %10.1f MB/s\n", "memcpy", total_mb / memcpy_s);
  std::printf("%-34s %10.1f MB/s  (the 1.00x reference)\n", "UTF-8 scan (count code points)",
              scan_mbs);

  const struct {
    const char* name;
    std::string path;
  } tokenizers[] = {{"gpt2 (byte-level BPE)", shared + "/tokenizers/gpt2"},
                    {"stories260K (SentencePiece BPE)", shared + "/models/stories260K"}};
  for (const auto& t : tokenizers) {
    auto loaded = dpinfer::engine::Tokenizer::Load(t.path);
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s: %s\n", t.name, std::string(loaded.status().message()).c_str());
      return 1;
    }
    const dpinfer::engine::Tokenizer& tokenizer = **loaded;
    std::vector<std::vector<int32_t>> ids(prompts.size());
    const double encode_s = Best(repeat, [&] {
      for (size_t i = 0; i < prompts.size(); ++i) {
        auto encoded = tokenizer.Encode(prompts[i], /*add_special_tokens=*/false);
        if (!encoded.ok()) std::abort();
        ids[i] = std::move(*encoded);
      }
    });
    size_t tokens = 0;
    for (const auto& v : ids) tokens += v.size();
    size_t decoded_bytes = 0;
    const double decode_s = Best(repeat, [&] {
      decoded_bytes = 0;
      for (const auto& v : ids) decoded_bytes += tokenizer.Decode(v, false).size();
    });
    const double encode_mbs = total_mb / encode_s;
    const double decode_mbs = decoded_bytes / 1e6 / decode_s;
    std::printf("%-34s %10.2f MB/s  %6.4fx scan  %5.2f M tokens/s  (%.2f bytes/token)\n",
                (std::string(t.name) + " encode").c_str(), encode_mbs, encode_mbs / scan_mbs,
                tokens / encode_s / 1e6, static_cast<double>(total) / tokens);
    std::printf("%-34s %10.2f MB/s  %6.4fx scan\n", (std::string(t.name) + " decode").c_str(),
                decode_mbs, decode_mbs / scan_mbs);
  }
  return 0;
}
