// MakeTinyModel: a random-weight HF Llama directory, including a SentencePiece-style BPE
// tokenizer.json in the same layout as stories260K's, built from a short word list.
//
// Random numbers come from mt19937_64 (whose output the standard fixes) through our own
// Box-Muller transform, not std::normal_distribution (whose algorithm each standard library picks),
// so a seed gives the same weights with every compiler.
#include "cli/make_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numbers>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace dpinfer::cli {
namespace {

using ojson = nlohmann::ordered_json;

// SentencePiece's word-boundary marker (U+2581), which replaces spaces before BPE.
constexpr const char kSpace[] = "\xE2\x96\x81";

// Frequent English pieces (TinyStories flavour); "_" stands for the word-boundary marker. Each
// becomes a single token through the merges generated for it.
constexpr const char* kPieces[] = {
    "_the",    "_a",       "_and",      "_to",    "_of",      "_was",    "_he",   "_she",
    "_it",     "_in",      "_is",       "_that",  "_with",    "_her",    "_his",  "_they",
    "_you",    "_for",     "_on",       "_said",  "_had",     "_day",    "_one",  "_big",
    "_little", "_time",    "_upon",     "_once",  "_there",   "_happy",  "_play", "_friend",
    "_saw",    "_went",    "_very",     "_not",   "_can",     "_what",   "_so",   "_be",
    "_have",   "_do",      "_mom",      "_dog",   "_cat",     "_tree",   "_sun",  "_park",
    "_ball",   "_want",    "_like",     "_love",  "_wanted",  "_looked", "_help", "_fun",
    "_good",   "_toy",     "_girl",     "_boy",   "_named",   "_all",    "_but",  "_were",
    "_Lily",   "_Tim",     "_Ben",      "_The",   "_She",     "_He",     "_They", "_One",
    "_Once",   "_I",       "ing",       "ed",     "er",       "ly",      "es",    "ll",
    "ay",      "ar",       "en",        "ou",     "ow",       "ck",      "st",    "ind",
    "ent",     "al",       "ight",      "ful",    ".",        ",",       "!",     "?",
    "_made",   "_ran",     "_found",    "_came",  "_thought", "_smiled", "_sad",  "_bird",
    "_home",   "_again",   "_asked",    "_felt",  "_car",     "_box",    "_sky",  "_water",
    "_flower", "_outside", "_together", "_after",
};

std::string Piece(const char* p) {
  std::string s;
  for (const char* c = p; *c != '\0'; ++c) {
    if (*c == '_') {
      s += kSpace;
    } else {
      s += *c;
    }
  }
  return s;
}

// Splits into symbols: the marker counts as one symbol, everything else here is ASCII.
std::vector<std::string> Symbols(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, 3, kSpace) == 0) {
      out.emplace_back(kSpace);
      i += 3;
    } else {
      out.emplace_back(1, s[i]);
      ++i;
    }
  }
  return out;
}

struct Bpe {
  std::vector<std::string> vocab;  // id order
  std::map<std::string, int64_t> ids;
  std::vector<std::pair<std::string, std::string>> merges;  // rank order
  std::map<std::pair<std::string, std::string>, size_t> rank;

  void AddToken(const std::string& t) {
    if (ids.emplace(t, static_cast<int64_t>(vocab.size())).second) vocab.push_back(t);
  }
  void AddMerge(const std::string& a, const std::string& b) {
    if (!rank.emplace(std::make_pair(a, b), merges.size()).second) return;
    merges.emplace_back(a, b);
    AddToken(a + b);
  }
  // Plain BPE as HF applies it: repeatedly merge the adjacent pair of lowest rank (leftmost on a
  // tie) until no pair has a merge.
  std::vector<std::string> Encode(std::vector<std::string> syms) const {
    while (syms.size() > 1) {
      size_t best = syms.size(), best_rank = merges.size();
      for (size_t i = 0; i + 1 < syms.size(); ++i) {
        auto it = rank.find({syms[i], syms[i + 1]});
        if (it != rank.end() && it->second < best_rank) {
          best = i;
          best_rank = it->second;
        }
      }
      if (best == syms.size()) break;
      syms[best] += syms[best + 1];
      syms.erase(syms.begin() + static_cast<ptrdiff_t>(best) + 1);
    }
    return syms;
  }
};

// specials, 256 byte-fallback tokens, single characters, then merged pieces. Merges for a piece
// are derived by encoding it with the merges so far and joining the first two tokens until the
// piece is one token, so the list is in application order and each piece really encodes to itself.
Bpe BuildTokenizer() {
  Bpe bpe;
  for (const char* s : {"<unk>", "<s>", "</s>"}) bpe.AddToken(s);
  for (int b = 0; b < 256; ++b) bpe.AddToken(absl::StrFormat("<0x%02X>", b));
  bpe.AddToken(kSpace);
  // Space itself never reaches BPE (the normalizer turns it into the marker).
  for (char c = '!'; c <= '~'; ++c) bpe.AddToken(std::string(1, c));
  for (const char* p : kPieces) {
    const std::vector<std::string> syms = Symbols(Piece(p));
    for (std::vector<std::string> toks = bpe.Encode(syms); toks.size() > 1;
         toks = bpe.Encode(syms)) {
      bpe.AddMerge(toks[0], toks[1]);
    }
  }
  return bpe;
}

ojson AddedToken(int id, const char* content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

// Same keys, order and pipeline as stories260K's tokenizer.json (Llama-2 SentencePiece BPE as
// HF tokenizers serializes it).
ojson TokenizerJson(const Bpe& bpe) {
  ojson t;
  t["version"] = "1.0";
  t["truncation"] = nullptr;
  t["padding"] = nullptr;
  t["added_tokens"] = {AddedToken(0, "<unk>"), AddedToken(1, "<s>"), AddedToken(2, "</s>")};
  t["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", kSpace}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}}}}};
  t["pre_tokenizer"] = nullptr;
  const ojson bos = {{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}};
  auto seq = [](const char* id) { return ojson{{"Sequence", {{"id", id}, {"type_id", 0}}}}; };
  t["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {bos, seq("A")}},
      {"pair", {bos, seq("A"), bos, seq("B")}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  t["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  ojson model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = "<unk>";
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = true;
  model["byte_fallback"] = true;
  model["ignore_merges"] = false;
  model["vocab"] = ojson::object();
  for (size_t i = 0; i < bpe.vocab.size(); ++i) model["vocab"][bpe.vocab[i]] = i;
  model["merges"] = ojson::array();
  for (const auto& [a, b] : bpe.merges) model["merges"].push_back({a, b});
  t["model"] = std::move(model);
  return t;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  if (!out) return absl::InternalError(absl::StrCat(path, ": cannot write"));
  return absl::OkStatus();
}

absl::Status WriteJson(const std::string& path, const ojson& j) {
  return WriteText(path, j.dump(2) + "\n");
}

// Standard normal samples from mt19937_64 bits (Box-Muller; see the file comment for why).
class Gaussian {
 public:
  explicit Gaussian(uint64_t seed) : rng_(seed) {}
  double Next() {
    if (have_spare_) {
      have_spare_ = false;
      return spare_;
    }
    // 53 random bits -> (0, 1]; never 0, so the log is finite.
    const double u1 = (static_cast<double>(rng_() >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * std::numbers::pi * u2);
    have_spare_ = true;
    return r * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  std::mt19937_64 rng_;
  bool have_spare_ = false;
  double spare_ = 0;
};

absl::StatusOr<DType> WeightDType(const std::string& name) {
  if (name == "float32") return DType::kF32;
  if (name == "bfloat16") return DType::kBF16;
  if (name == "float16") return DType::kF16;
  return absl::InvalidArgumentError(
      absl::StrCat("make-model: dtype '", name, "' is not one of float32, bfloat16, float16"));
}

TensorToWrite MakeTensor(const std::string& name, std::vector<int64_t> shape, DType dtype,
                         Gaussian* rng /* nullptr: all ones (norm weights) */) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  TensorToWrite t{name, dtype, std::move(shape), {}};
  t.bytes.resize(static_cast<size_t>(n) * DTypeSize(dtype));
  for (int64_t i = 0; i < n; ++i) {
    // std 0.02 is HF's initializer_range for Llama.
    const float v = rng != nullptr ? static_cast<float>(0.02 * rng->Next()) : 1.0f;
    uint8_t* dst = t.bytes.data() + i * DTypeSize(dtype);
    if (dtype == DType::kF32) {
      std::memcpy(dst, &v, 4);
    } else {
      const uint16_t h = dtype == DType::kBF16 ? F32ToBf16(v) : F32ToF16(v);
      std::memcpy(dst, &h, 2);
    }
  }
  return t;
}

absl::Status Validate(const MakeModelOptions& o) {
  auto bad = [](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat("make-model: ", msg));
  };
  if (o.out_dir.empty()) return bad("no output directory given");
  if (o.hidden_size <= 0 || o.intermediate_size <= 0 || o.num_layers <= 0 || o.num_heads <= 0 ||
      o.num_kv_heads <= 0 || o.max_position_embeddings <= 0) {
    return bad("sizes must be positive");
  }
  if (o.hidden_size % o.num_heads != 0) {
    return bad(absl::StrCat("hidden_size ", o.hidden_size, " is not a multiple of num_heads ",
                            o.num_heads));
  }
  if ((o.hidden_size / o.num_heads) % 2 != 0) return bad("head_dim must be even for rope");
  if (o.num_heads % o.num_kv_heads != 0) {
    return bad(absl::StrCat("num_heads ", o.num_heads, " is not a multiple of num_kv_heads ",
                            o.num_kv_heads));
  }
  if (o.num_shards < 1) return bad("num_shards must be at least 1");
  return WeightDType(o.dtype).status();
}

}  // namespace

int64_t TinyModelVocabSize() { return static_cast<int64_t>(BuildTokenizer().vocab.size()); }

absl::Status MakeTinyModel(const MakeModelOptions& o) {
  namespace fs = std::filesystem;
  RETURN_IF_ERROR(Validate(o));
  ASSIGN_OR_RETURN(DType dtype, WeightDType(o.dtype));
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.out_dir, ": cannot create directory: ", ec.message()));
  }
  auto in_dir = [&](const char* name) { return (fs::path(o.out_dir) / name).string(); };

  const Bpe bpe = BuildTokenizer();
  const int64_t vocab = static_cast<int64_t>(bpe.vocab.size());
  const int64_t head_dim = o.hidden_size / o.num_heads;

  // Same keys as stories260K's config.json (transformers 5 layout, rope_parameters form).
  ojson config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", 1},
      {"dtype", o.dtype},
      {"eos_token_id", 2},
      {"head_dim", head_dim},
      {"hidden_act", "silu"},
      {"hidden_size", o.hidden_size},
      {"initializer_range", 0.02},
      {"intermediate_size", o.intermediate_size},
      {"max_position_embeddings", o.max_position_embeddings},
      {"mlp_bias", false},
      {"model_type", "llama"},
      {"num_attention_heads", o.num_heads},
      {"num_hidden_layers", o.num_layers},
      {"num_key_value_heads", o.num_kv_heads},
      {"pad_token_id", nullptr},
      {"pretraining_tp", 1},
      {"rms_norm_eps", 1e-05},
      {"rope_parameters", {{"rope_theta", 10000.0}, {"rope_type", "default"}}},
      {"tie_word_embeddings", o.tie_word_embeddings},
      {"transformers_version", "5.17.0"},
      {"use_cache", true},
      {"vocab_size", vocab},
  };
  RETURN_IF_ERROR(WriteJson(in_dir("config.json"), config));
  RETURN_IF_ERROR(
      WriteJson(in_dir("generation_config.json"), {{"_from_model_config", true},
                                                   {"bos_token_id", 1},
                                                   {"eos_token_id", 2},
                                                   {"transformers_version", "5.17.0"}}));
  RETURN_IF_ERROR(
      WriteJson(in_dir("tokenizer_config.json"), {{"backend", "tokenizers"},
                                                  {"bos_token", "<s>"},
                                                  {"eos_token", "</s>"},
                                                  {"model_max_length", o.max_position_embeddings},
                                                  {"tokenizer_class", "TokenizersBackend"},
                                                  {"unk_token", "<unk>"}}));
  RETURN_IF_ERROR(WriteJson(in_dir("tokenizer.json"), TokenizerJson(bpe)));

  // Weights in a fixed order from one stream, so sharding and dtype never change the values.
  Gaussian rng(o.seed);
  const int64_t h = o.hidden_size, q_out = o.num_heads * head_dim,
                kv_out = o.num_kv_heads * head_dim, inter = o.intermediate_size;
  std::vector<TensorToWrite> tensors;
  tensors.push_back(MakeTensor("model.embed_tokens.weight", {vocab, h}, dtype, &rng));
  for (int64_t l = 0; l < o.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    tensors.push_back(MakeTensor(p + "self_attn.q_proj.weight", {q_out, h}, dtype, &rng));
    tensors.push_back(MakeTensor(p + "self_attn.k_proj.weight", {kv_out, h}, dtype, &rng));
    tensors.push_back(MakeTensor(p + "self_attn.v_proj.weight", {kv_out, h}, dtype, &rng));
    tensors.push_back(MakeTensor(p + "self_attn.o_proj.weight", {h, q_out}, dtype, &rng));
    tensors.push_back(MakeTensor(p + "mlp.gate_proj.weight", {inter, h}, dtype, &rng));
    tensors.push_back(MakeTensor(p + "mlp.up_proj.weight", {inter, h}, dtype, &rng));
    tensors.push_back(MakeTensor(p + "mlp.down_proj.weight", {h, inter}, dtype, &rng));
    tensors.push_back(MakeTensor(p + "input_layernorm.weight", {h}, dtype, nullptr));
    tensors.push_back(MakeTensor(p + "post_attention_layernorm.weight", {h}, dtype, nullptr));
  }
  tensors.push_back(MakeTensor("model.norm.weight", {h}, dtype, nullptr));
  if (!o.tie_word_embeddings) {
    tensors.push_back(MakeTensor("lm_head.weight", {vocab, h}, dtype, &rng));
  }

  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  const size_t n = tensors.size();
  if (o.num_shards == 1) {
    // A stale index from an earlier sharded run would take precedence over the new file.
    fs::remove(in_dir("model.safetensors.index.json"), ec);
    return WriteSafetensors(in_dir("model.safetensors"), tensors, metadata);
  }
  if (static_cast<size_t>(o.num_shards) > n) {
    return absl::InvalidArgumentError(absl::StrCat("make-model: num_shards ", o.num_shards,
                                                   " exceeds the number of tensors (", n, ")"));
  }
  // Contiguous runs of tensors per shard, named as HF's save_pretrained names them.
  ojson weight_map = ojson::object();
  uint64_t total_size = 0;
  for (int s = 0; s < o.num_shards; ++s) {
    const size_t begin = n * s / o.num_shards, end = n * (s + 1) / o.num_shards;
    const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, o.num_shards);
    std::vector<TensorToWrite> part(std::make_move_iterator(tensors.begin() + begin),
                                    std::make_move_iterator(tensors.begin() + end));
    for (const TensorToWrite& t : part) {
      weight_map[t.name] = file;
      total_size += t.bytes.size();
    }
    RETURN_IF_ERROR(WriteSafetensors((fs::path(o.out_dir) / file).string(), part, metadata));
  }
  // A stale single-file checkpoint would be shadowed by the index anyway; remove it to avoid
  // confusion when re-running into the same directory.
  fs::remove(in_dir("model.safetensors"), ec);
  return WriteJson(in_dir("model.safetensors.index.json"),
                   {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}});
}

}  // namespace dpinfer::cli
