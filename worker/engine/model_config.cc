// LoadModelConfig: reads an HF config.json (+ generation_config.json) into ModelConfig and refuses,
// with an error naming the file and key, anything the engine cannot run faithfully. Refusing is
// the point: a silently ignored rope scaling or activation would produce plausible-looking but
// wrong text.
#include "worker/engine/model_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace dpinfer::engine {
namespace {

using json = nlohmann::json;

struct Architecture {
  const char* name;
  ModelFamily family;
};
constexpr Architecture kArchitectures[] = {
    {"LlamaForCausalLM", ModelFamily::kLlama},
    {"Qwen2ForCausalLM", ModelFamily::kQwen2},
    {"MixtralForCausalLM", ModelFamily::kMixtral},
    {"GraniteMoeForCausalLM", ModelFamily::kGraniteMoe},
};
constexpr const char* kSupportedRopeTypes[] = {"default", "linear", "llama3"};

std::string SupportedArchitectures() {
  std::vector<std::string> names;
  for (const Architecture& a : kArchitectures) names.push_back(a.name);
  return absl::StrJoin(names, ", ");
}

absl::StatusOr<json> ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": invalid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  return j;
}

// Typed access to one JSON file's keys, so every error carries the file path and the key. A key
// that is present but null counts as absent: HF writes nulls for "use the default".
class Reader {
 public:
  Reader(const json& j, std::string path) : j_(j), path_(std::move(path)) {}

  const std::string& path() const { return path_; }
  bool Has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  const json& at(const std::string& key) const { return j_.at(key); }

  absl::StatusOr<int64_t> Int(const std::string& key, std::optional<int64_t> def) const {
    if (!Has(key)) return Missing(key, def);
    const json& v = j_.at(key);
    if (!v.is_number_integer()) return WrongType(key, "an integer");
    return v.get<int64_t>();
  }
  absl::StatusOr<double> Number(const std::string& key, std::optional<double> def) const {
    if (!Has(key)) return Missing(key, def);
    const json& v = j_.at(key);
    if (!v.is_number()) return WrongType(key, "a number");
    return v.get<double>();
  }
  absl::StatusOr<bool> Bool(const std::string& key, std::optional<bool> def) const {
    if (!Has(key)) return Missing(key, def);
    const json& v = j_.at(key);
    if (!v.is_boolean()) return WrongType(key, "a boolean");
    return v.get<bool>();
  }
  absl::StatusOr<std::string> String(const std::string& key, std::optional<std::string> def) const {
    if (!Has(key)) return Missing(key, def);
    const json& v = j_.at(key);
    if (!v.is_string()) return WrongType(key, "a string");
    return v.get<std::string>();
  }
  // eos_token_id is an int in most configs and a list in chat models' (Llama 3: [128001, 128009]).
  absl::Status AppendIds(const std::string& key, std::vector<int32_t>* ids) const {
    if (!Has(key)) return absl::OkStatus();
    const json& v = j_.at(key);
    const json list = v.is_array() ? v : json::array({v});
    for (const json& e : list) {
      if (!e.is_number_integer()) return WrongType(key, "an integer or a list of integers");
      ids->push_back(e.get<int32_t>());
    }
    return absl::OkStatus();
  }
  absl::Status WrongType(const std::string& key, const char* what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": key \"", key, "\" must be ", what, ", got ", j_.at(key).dump()));
  }

 private:
  template <typename T>
  absl::StatusOr<T> Missing(const std::string& key, const std::optional<T>& def) const {
    if (def.has_value()) return *def;
    return absl::InvalidArgumentError(absl::StrCat(path_, ": missing required key \"", key, "\""));
  }

  const json& j_;
  std::string path_;
};

absl::Status CheckRopeType(const std::string& path, const std::string& key,
                           const std::string& rope_type) {
  for (const char* t : kSupportedRopeTypes) {
    if (rope_type == t) return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat(
      path, ": ", key, " rope_type '", rope_type,
      "' is not supported (supported: ", absl::StrJoin(kSupportedRopeTypes, ", "), ")"));
}

// Reads the scaling parameters of one rope dict (rope_parameters or rope_scaling) of type `type`,
// each required as transformers requires it (rope_config_validation), so a half-specified llama3
// config is an error rather than a silent default.
absl::Status ReadRopeScaling(const Reader& sub, const std::string& type, ModelConfig* c) {
  c->rope_type = type;
  if (type == "default") return absl::OkStatus();
  ASSIGN_OR_RETURN(c->rope_factor, sub.Number("factor", std::nullopt));
  if (!(c->rope_factor >= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(sub.path(), ": rope factor must be >= 1, got ", c->rope_factor));
  }
  if (type == "linear") return absl::OkStatus();
  // llama3
  ASSIGN_OR_RETURN(c->rope_low_freq_factor, sub.Number("low_freq_factor", std::nullopt));
  ASSIGN_OR_RETURN(c->rope_high_freq_factor, sub.Number("high_freq_factor", std::nullopt));
  ASSIGN_OR_RETURN(c->rope_original_max_position_embeddings,
                   sub.Int("original_max_position_embeddings", std::nullopt));
  if (!(c->rope_low_freq_factor > 0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
      c->rope_original_max_position_embeddings <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(sub.path(),
                     ": llama3 rope needs 0 < low_freq_factor < high_freq_factor and a positive "
                     "original_max_position_embeddings, got ",
                     c->rope_low_freq_factor, ", ", c->rope_high_freq_factor, ", ",
                     c->rope_original_max_position_embeddings));
  }
  return absl::OkStatus();
}

// Rope comes in two spellings: transformers >= 5 nests it as rope_parameters {rope_theta,
// rope_type, scaling parameters}; older configs have a top-level rope_theta plus an optional
// rope_scaling dict (null meaning plain rope).
absl::Status ReadRope(const Reader& r, ModelConfig* c) {
  if (r.Has("rope_parameters")) {
    const json& rp = r.at("rope_parameters");
    if (!rp.is_object()) return r.WrongType("rope_parameters", "an object");
    Reader sub(rp, r.path());
    ASSIGN_OR_RETURN(std::string type, sub.String("rope_type", "default"));
    RETURN_IF_ERROR(CheckRopeType(r.path(), "rope_parameters", type));
    RETURN_IF_ERROR(ReadRopeScaling(sub, type, c));
    // A nested rope_theta wins; some converted configs keep only the top-level one.
    ASSIGN_OR_RETURN(double top_theta, r.Number("rope_theta", 10000.0));
    ASSIGN_OR_RETURN(double theta, sub.Number("rope_theta", top_theta));
    c->rope_theta = static_cast<float>(theta);
  } else {
    ASSIGN_OR_RETURN(double theta, r.Number("rope_theta", 10000.0));
    c->rope_theta = static_cast<float>(theta);
  }
  if (r.Has("rope_scaling")) {
    const json& rs = r.at("rope_scaling");
    if (!rs.is_object()) return r.WrongType("rope_scaling", "null or an object");
    Reader sub(rs, r.path());
    // Older transformers spelled the field "type".
    ASSIGN_OR_RETURN(std::string type, sub.String("type", "default"));
    ASSIGN_OR_RETURN(type, sub.String("rope_type", type));
    RETURN_IF_ERROR(CheckRopeType(r.path(), "rope_scaling", type));
    // rope_parameters, the newer spelling, wins where both scale.
    if (c->rope_type == "default") RETURN_IF_ERROR(ReadRopeScaling(sub, type, c));
  }
  if (!(c->rope_theta > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(r.path(), ": rope_theta must be positive, got ", c->rope_theta));
  }
  if (r.Has("partial_rotary_factor")) {
    ASSIGN_OR_RETURN(double partial, r.Number("partial_rotary_factor", 1.0));
    if (partial != 1.0) {
      return absl::UnimplementedError(absl::StrCat(r.path(), ": partial_rotary_factor ", partial,
                                                   " is not supported (only 1.0)"));
    }
  }
  return absl::OkStatus();
}

// Sliding-window attention is not implemented: refuse a window that can bind within the context.
absl::Status CheckNoSlidingWindow(const Reader& r, int64_t max_positions) {
  ASSIGN_OR_RETURN(bool use_sliding, r.Bool("use_sliding_window", false));
  if (use_sliding) {
    return absl::UnimplementedError(absl::StrCat(
        r.path(), ": use_sliding_window true is not supported (sliding-window attention)"));
  }
  if (r.Has("layer_types")) {
    const json& types = r.at("layer_types");
    if (!types.is_array()) return r.WrongType("layer_types", "a list of strings");
    for (const json& t : types) {
      if (t != "full_attention") {
        return absl::UnimplementedError(
            absl::StrCat(r.path(), ": layer_types entry ", t.dump(),
                         " is not supported (only \"full_attention\")"));
      }
    }
  }
  // Qwen2 configs carry a sliding_window that applies only with use_sliding_window (checked
  // above); Mistral-style configs apply it whenever it is set.
  if (r.Has("sliding_window") && !r.Has("use_sliding_window")) {
    ASSIGN_OR_RETURN(int64_t window, r.Int("sliding_window", std::nullopt));
    if (window < max_positions) {
      return absl::UnimplementedError(
          absl::StrCat(r.path(), ": sliding_window ", window,
                       " is not supported (sliding-window attention; max_position_embeddings is ",
                       max_positions, ")"));
    }
  }
  return absl::OkStatus();
}

// The family-specific keys: biases, experts, GraniteMoE's multipliers.
absl::Status ReadFamily(const Reader& r, ModelConfig* c) {
  const std::string& path = r.path();
  switch (c->family) {
    case ModelFamily::kLlama: {
      ASSIGN_OR_RETURN(c->attention_bias, r.Bool("attention_bias", false));
      c->o_proj_bias = c->attention_bias;
      ASSIGN_OR_RETURN(c->mlp_bias, r.Bool("mlp_bias", false));
      break;
    }
    case ModelFamily::kQwen2:
      // Qwen2Attention hard-codes bias=True on q/k/v and bias=False on o_proj.
      c->attention_bias = true;
      c->o_proj_bias = false;
      break;
    case ModelFamily::kMixtral:
    case ModelFamily::kGraniteMoe: {
      ASSIGN_OR_RETURN(c->num_experts, r.Int("num_local_experts", 8));
      ASSIGN_OR_RETURN(c->num_experts_per_tok, r.Int("num_experts_per_tok", 2));
      if (c->num_experts < 1 || c->num_experts_per_tok < 1 ||
          c->num_experts_per_tok > c->num_experts) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": num_experts_per_tok (", c->num_experts_per_tok,
                         ") must be in [1, num_local_experts (", c->num_experts, ")]"));
      }
      if (c->family == ModelFamily::kMixtral) break;
      // GraniteMoeAttention puts attention_bias on all four projections.
      ASSIGN_OR_RETURN(c->attention_bias, r.Bool("attention_bias", false));
      c->o_proj_bias = c->attention_bias;
      // GraniteMoeConfig's defaults are all 1.0 (attention_multiplier too: not 1/sqrt(d)).
      ASSIGN_OR_RETURN(double emb, r.Number("embedding_multiplier", 1.0));
      ASSIGN_OR_RETURN(double res, r.Number("residual_multiplier", 1.0));
      ASSIGN_OR_RETURN(double att, r.Number("attention_multiplier", 1.0));
      ASSIGN_OR_RETURN(double logits, r.Number("logits_scaling", 1.0));
      if (logits == 0) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": logits_scaling must be non-zero"));
      }
      c->embedding_multiplier = static_cast<float>(emb);
      c->residual_multiplier = static_cast<float>(res);
      c->attention_scale = static_cast<float>(att);
      c->logits_scaling = static_cast<float>(logits);
      break;
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPositive(const std::string& path, const char* key, int64_t v) {
  if (v > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": \"", key, "\" must be positive, got ", v));
}

}  // namespace

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const std::string path = (fs::path(model_dir) / "config.json").string();
  ASSIGN_OR_RETURN(json j, ReadJson(path));
  Reader r(j, path);
  ModelConfig c;

  if (!r.Has("architectures")) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": missing required key \"architectures\""));
  }
  const json& archs = r.at("architectures");
  if (!archs.is_array() || archs.empty() || !archs[0].is_string()) {
    return r.WrongType("architectures", "a non-empty list of strings");
  }
  c.architecture = archs[0].get<std::string>();
  const Architecture* arch = nullptr;
  for (const Architecture& a : kArchitectures) {
    if (c.architecture == a.name) arch = &a;
  }
  if (arch == nullptr) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": architecture '", c.architecture,
                     "' is not supported (supported: ", SupportedArchitectures(), ")"));
  }
  c.family = arch->family;
  // HF's LlamaConfig defaults hidden_act to silu, so an absent key means silu too.
  ASSIGN_OR_RETURN(std::string act, r.String("hidden_act", "silu"));
  if (act != "silu") {
    return absl::UnimplementedError(
        absl::StrCat(path, ": hidden_act '", act, "' is not supported (supported: silu)"));
  }

  ASSIGN_OR_RETURN(c.vocab_size, r.Int("vocab_size", std::nullopt));
  ASSIGN_OR_RETURN(c.hidden_size, r.Int("hidden_size", std::nullopt));
  ASSIGN_OR_RETURN(c.intermediate_size, r.Int("intermediate_size", std::nullopt));
  ASSIGN_OR_RETURN(c.num_layers, r.Int("num_hidden_layers", std::nullopt));
  ASSIGN_OR_RETURN(c.num_heads, r.Int("num_attention_heads", std::nullopt));
  ASSIGN_OR_RETURN(c.num_kv_heads, r.Int("num_key_value_heads", c.num_heads));
  ASSIGN_OR_RETURN(c.max_position_embeddings,
                   r.Int("max_position_embeddings", c.max_position_embeddings));
  ASSIGN_OR_RETURN(double eps, r.Number("rms_norm_eps", c.rms_norm_eps));
  c.rms_norm_eps = static_cast<float>(eps);
  ASSIGN_OR_RETURN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", false));
  // Quantized checkpoints (GPTQ, AWQ, fp8...) store packed integer weights under other names;
  // refusing them here names the reason instead of a missing tensor later.
  if (r.Has("quantization_config")) {
    const json& q = r.at("quantization_config");
    const std::string method =
        q.is_object() && q.contains("quant_method") ? q.at("quant_method").dump() : q.dump();
    return absl::UnimplementedError(
        absl::StrCat(path, ": quantization_config (quant_method ", method,
                     ") is not supported; use an fp32, bf16 or fp16 checkpoint"));
  }
  RETURN_IF_ERROR(ReadFamily(r, &c));
  RETURN_IF_ERROR(ReadRope(r, &c));
  RETURN_IF_ERROR(CheckNoSlidingWindow(r, c.max_position_embeddings));

  for (const char* key :
       {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "max_position_embeddings"}) {
    RETURN_IF_ERROR(CheckPositive(path, key, r.Int(key, 1).value()));
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": num_attention_heads (", c.num_heads,
                                                   ") is not a multiple of num_key_value_heads (",
                                                   c.num_kv_heads, ")"));
  }
  if (r.Has("head_dim")) {
    ASSIGN_OR_RETURN(c.head_dim, r.Int("head_dim", std::nullopt));
    RETURN_IF_ERROR(CheckPositive(path, "head_dim", c.head_dim));
  } else {
    if (c.hidden_size % c.num_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": hidden_size (", c.hidden_size,
                                                     ") is not a multiple of num_attention_heads (",
                                                     c.num_heads, ") and no head_dim is given"));
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }
  // Rope rotates pairs of dimensions.
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": head_dim must be even for rope, got ", c.head_dim));
  }
  if (c.family != ModelFamily::kGraniteMoe) {
    c.attention_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  }
  if (!(c.rms_norm_eps > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": rms_norm_eps must be positive, got ", c.rms_norm_eps));
  }

  ASSIGN_OR_RETURN(int64_t bos, r.Int("bos_token_id", -1));
  c.bos_token_id = static_cast<int32_t>(bos);
  RETURN_IF_ERROR(r.AppendIds("eos_token_id", &c.eos_token_ids));

  // generation_config.json is optional, but when present its eos list is what HF's generate()
  // stops on (chat models add end-of-turn ids there), so it is merged, not ignored.
  const std::string gen_path = (fs::path(model_dir) / "generation_config.json").string();
  std::error_code ec;
  if (fs::exists(gen_path, ec)) {
    ASSIGN_OR_RETURN(json g, ReadJson(gen_path));
    Reader gr(g, gen_path);
    RETURN_IF_ERROR(gr.AppendIds("eos_token_id", &c.eos_token_ids));
    if (c.bos_token_id < 0) {
      ASSIGN_OR_RETURN(int64_t gen_bos, gr.Int("bos_token_id", -1));
      c.bos_token_id = static_cast<int32_t>(gen_bos);
    }
  }
  // Dedupe keeping first-seen order, so config.json's primary eos stays first.
  std::vector<int32_t> unique;
  for (int32_t id : c.eos_token_ids) {
    if (std::find(unique.begin(), unique.end(), id) == unique.end()) unique.push_back(id);
  }
  c.eos_token_ids = std::move(unique);
  for (int32_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": eos_token_id ", id,
                                                     " is outside the vocabulary (vocab_size ",
                                                     c.vocab_size, ")"));
    }
  }
  return c;
}

}  // namespace dpinfer::engine
