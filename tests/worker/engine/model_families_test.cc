// The model families against HF transformers on the ../shared fixtures (tiny random-weight
// Llama, Qwen2, Mixtral and GraniteMoE models with HF fp32 logits and greedy continuations):
// logits within 1e-4 of the reference relative to its largest |logit|, a batch of all sequences
// bit-identical to each alone (MoE routing included), and the greedy continuations reproduced
// exactly through Engine. Then the load-time errors: unknown architecture, missing tensor, shape
// mismatch, unknown rope type, each naming what is wrong; a stored copy of a tied lm_head skipped;
// and Llama 3 rope scaling with head_dim != hidden / heads against transformers' own numbers.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/status/status.h"
#include "common/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/reference_testutil.h"
#include "tests/test_env.h"
#include "worker/engine/engine.h"
#include "worker/engine/kv_cache.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/model_config.h"

namespace dpinfer::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using json = nlohmann::json;

std::string FixtureDir(const std::string& name) {
  return testing::SharedDir() + "/fixtures/tiny-" + name;
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LoadModel(const std::string& dir,
                                                      kernels::Backend* backend) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  if (!config.ok()) return config.status();
  return LlamaModel::Load(dir, *config, backend);
}

class ModelFamiliesTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_SHARED();
    dir_ = FixtureDir(GetParam());
    backend_ = kernels::NewCpuBackend(2);
    auto model = LoadModel(dir_, backend_.get());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    auto ref = SafetensorsFile::Open(dir_ + "/reference.safetensors");
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = *std::move(ref);
  }

  std::string dir_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<SafetensorsFile> ref_;
};

TEST_P(ModelFamiliesTest, LogitsMatchHfTransformers) {
  const ModelConfig& config = model_->config();
  const std::vector<int32_t> input = testing::ReadRaw<int32_t>(*ref_, "input_ids");  // [3, 24]
  const std::vector<float> want = testing::ReadRaw<float>(*ref_, "logits");  // [3, 24, vocab]
  const int64_t seqs = 3, len = 24, vocab = config.vocab_size;
  ASSERT_EQ(input.size(), static_cast<size_t>(seqs * len));
  ASSERT_EQ(want.size(), static_cast<size_t>(seqs * len * vocab));
  KvCache cache(config.num_layers, 3 * 8, 4, config.num_kv_heads, config.head_dim);

  // All three sequences in one batch, every position's logits kept.
  ForwardBatch batch;
  std::vector<std::vector<int32_t>> tables(seqs);
  auto add = [&](ForwardBatch* b, int64_t s, int32_t row) {
    ASSERT_TRUE(cache.EnsureCapacity(&tables[s], len));
    for (int64_t p = 0; p < len; ++p) {
      b->logit_rows.push_back(static_cast<int32_t>(b->token_ids.size()));
      b->token_ids.push_back(input[s * len + p]);
      b->positions.push_back(static_cast<int32_t>(p));
      b->token_seq.push_back(row);
      b->slot_mapping.push_back(cache.Slot(tables[s], p));
    }
  };
  for (int64_t s = 0; s < seqs; ++s) add(&batch, s, static_cast<int32_t>(s));
  batch.max_blocks_per_seq = static_cast<int64_t>(tables[0].size());
  for (const auto& t : tables)
    batch.block_tables.insert(batch.block_tables.end(), t.begin(), t.end());
  std::vector<float> batched;
  model_->Forward(batch, &cache, &batched);
  ASSERT_EQ(batched.size(), want.size());

  for (int64_t s = 0; s < seqs; ++s) {
    double max_err = 0, max_ref = 0;
    for (int64_t i = s * len * vocab; i < (s + 1) * len * vocab; ++i) {
      max_err = std::max(max_err, std::fabs(double{batched[i]} - double{want[i]}));
      max_ref = std::max(max_ref, std::fabs(double{want[i]}));
    }
    EXPECT_LT(max_err, 1e-4 * max_ref) << GetParam() << " sequence " << s;
  }

  // Each sequence alone gives the same bits: routing and expert sums do not see the batch.
  for (int64_t s = 0; s < seqs; ++s) {
    cache.Free(&tables[s]);
    ForwardBatch alone;
    add(&alone, s, 0);
    alone.max_blocks_per_seq = static_cast<int64_t>(tables[s].size());
    alone.block_tables = tables[s];
    std::vector<float> logits;
    model_->Forward(alone, &cache, &logits);
    ASSERT_EQ(logits.size(), static_cast<size_t>(len * vocab));
    for (int64_t i = 0; i < len * vocab; ++i) {
      ASSERT_EQ(logits[i], batched[s * len * vocab + i]) << GetParam() << " sequence " << s;
    }
  }
}

// A model directory for Engine: the fixture's files linked in, plus stories260K's tokenizer
// (same 512-token vocabulary), since the fixtures carry no tokenizer and Engine loads one.
std::string EngineDir(const std::string& fixture) {
  const std::string dir = testing::MakeTempDir();
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors"}) {
    fs::create_symlink(fs::path(FixtureDir(fixture)) / f, fs::path(dir) / f);
  }
  fs::create_symlink(fs::path(testing::SharedDir()) / "models/stories260K/tokenizer.json",
                     fs::path(dir) / "tokenizer.json");
  return dir;
}

TEST_P(ModelFamiliesTest, GreedyContinuationThroughEngine) {
  const std::vector<int32_t> prompts =
      testing::ReadRaw<int32_t>(*ref_, "greedy_prompt_ids");  // [3, 8]
  const std::vector<int32_t> outputs =
      testing::ReadRaw<int32_t>(*ref_, "greedy_output_ids");  // [3, 16]
  ASSERT_EQ(prompts.size(), 24u);
  ASSERT_EQ(outputs.size(), 48u);
  EngineOptions o;
  o.model_dir = EngineDir(GetParam());
  o.num_threads = 2;
  o.kv_block_size = 4;  // several blocks per sequence
  auto engine = Engine::Create(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (int s = 0; s < 3; ++s) {
    Request r;
    r.id = s;
    r.prompt = std::vector<int32_t>(prompts.begin() + s * 8, prompts.begin() + (s + 1) * 8);
    r.params.temperature = 0.0f;
    r.params.max_tokens = 16;
    r.params.ignore_eos = true;  // HF's generate ran 16 new tokens with no eos stop
    ASSERT_TRUE((*engine)->Add(std::move(r)).ok());
  }
  std::map<uint64_t, Result> results;
  for (int steps = 0; (*engine)->HasWork() && steps < 1000; ++steps) {
    std::vector<Result> finished;
    ASSERT_TRUE((*engine)->Step(&finished).ok());
    for (Result& r : finished) results[r.id] = std::move(r);
  }
  ASSERT_EQ(results.size(), 3u);
  for (int s = 0; s < 3; ++s) {
    EXPECT_EQ(results[s].output_ids,
              std::vector<int32_t>(outputs.begin() + s * 16, outputs.begin() + (s + 1) * 16))
        << GetParam() << " sequence " << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelFamiliesTest,
                         ::testing::Values("llama", "qwen2", "mixtral", "granitemoe"),
                         [](const auto& info) { return info.param; });

TEST(ModelFamiliesConfigTest, FixtureConfigsReadAsTheirFamilies) {
  SKIP_WITHOUT_SHARED();
  auto qwen = LoadModelConfig(FixtureDir("qwen2"));
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_EQ(qwen->family, ModelFamily::kQwen2);
  EXPECT_TRUE(qwen->attention_bias);
  EXPECT_FALSE(qwen->o_proj_bias);
  EXPECT_EQ(qwen->num_experts, 0);

  auto mixtral = LoadModelConfig(FixtureDir("mixtral"));
  ASSERT_TRUE(mixtral.ok()) << mixtral.status();
  EXPECT_EQ(mixtral->family, ModelFamily::kMixtral);
  EXPECT_EQ(mixtral->num_experts, 4);
  EXPECT_EQ(mixtral->num_experts_per_tok, 2);
  EXPECT_EQ(mixtral->head_dim, 16);  // "head_dim": null -> hidden / heads
  EXPECT_FLOAT_EQ(mixtral->attention_scale, 0.25f);

  auto granite = LoadModelConfig(FixtureDir("granitemoe"));
  ASSERT_TRUE(granite.ok()) << granite.status();
  EXPECT_EQ(granite->family, ModelFamily::kGraniteMoe);
  EXPECT_EQ(granite->num_experts, 8);
  EXPECT_EQ(granite->num_experts_per_tok, 3);
  EXPECT_FLOAT_EQ(granite->attention_scale, 0.015625f);  // attention_multiplier, not 1/sqrt(16)
  EXPECT_FLOAT_EQ(granite->embedding_multiplier, 12.0f);
  EXPECT_FLOAT_EQ(granite->residual_multiplier, 0.22f);
  EXPECT_FLOAT_EQ(granite->logits_scaling, 6.0f);
  EXPECT_TRUE(granite->tie_word_embeddings);
}

// A copy of a fixture's directory (weights linked) whose config.json `edit` changes.
template <typename Edit>
std::string EditedFixture(const std::string& fixture, Edit edit) {
  const std::string dir = testing::MakeTempDir();
  std::ifstream in(FixtureDir(fixture) + "/config.json");
  json config = json::parse(in);
  edit(config);
  std::ofstream(dir + "/config.json") << config.dump(2);
  fs::create_symlink(fs::path(FixtureDir(fixture)) / "model.safetensors",
                     fs::path(dir) / "model.safetensors");
  return dir;
}

// PowerMoE-3b stores a copy of its tied lm_head: it is skipped (here a zero copy that would
// flatten every logit were it read), and the model still matches the reference.
TEST(ModelFamiliesConfigTest, StoredCopyOfTiedLmHeadIgnored) {
  SKIP_WITHOUT_SHARED();
  auto file = SafetensorsFile::Open(FixtureDir("granitemoe") + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, t] : (*file)->tensors()) {
    tensors.push_back({name, t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.nbytes)});
  }
  tensors.push_back({"lm_head.weight",
                     DType::kF32,
                     {512, 96},
                     std::vector<uint8_t>(512 * 96 * sizeof(float), 0)});
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  fs::create_symlink(fs::path(FixtureDir("granitemoe")) / "config.json",
                     fs::path(dir) / "config.json");

  auto backend = kernels::NewCpuBackend(1);
  auto model = LoadModel(dir, backend.get());
  ASSERT_TRUE(model.ok()) << model.status();
  auto ref = SafetensorsFile::Open(FixtureDir("granitemoe") + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<int32_t> input = testing::ReadRaw<int32_t>(**ref, "input_ids");
  const std::vector<float> want = testing::ReadRaw<float>(**ref, "logits");
  const ModelConfig& c = (*model)->config();
  KvCache cache(c.num_layers, 8, 4, c.num_kv_heads, c.head_dim);
  std::vector<int32_t> table;
  ASSERT_TRUE(cache.EnsureCapacity(&table, 24));
  ForwardBatch b;
  for (int p = 0; p < 24; ++p) {
    b.token_ids.push_back(input[p]);
    b.positions.push_back(p);
    b.token_seq.push_back(0);
    b.slot_mapping.push_back(cache.Slot(table, p));
  }
  b.logit_rows = {23};
  b.block_tables = table;
  b.max_blocks_per_seq = static_cast<int64_t>(table.size());
  std::vector<float> got;
  (*model)->Forward(b, &cache, &got);
  ASSERT_EQ(got.size(), 512u);
  for (int v = 0; v < 512; ++v) EXPECT_NEAR(got[v], want[23 * 512 + v], 1e-4) << v;
}

class ModelLoadErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_SHARED();
    backend_ = kernels::NewCpuBackend(1);
  }
  absl::Status Load(const std::string& dir) { return LoadModel(dir, backend_.get()).status(); }
  std::unique_ptr<kernels::Backend> backend_;
};

TEST_F(ModelLoadErrorTest, UnknownArchitecture) {
  const std::string dir =
      EditedFixture("llama", [](json& c) { c["architectures"] = {"FalconForCausalLM"}; });
  absl::Status s = Load(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("config.json"), HasSubstr("'FalconForCausalLM'"),
                                 HasSubstr("GraniteMoeForCausalLM")));
}

TEST_F(ModelLoadErrorTest, MissingTensor) {
  // A Llama config over Mixtral's weights: the dense MLP's tensors are not there.
  const std::string dir =
      EditedFixture("mixtral", [](json& c) { c["architectures"] = {"LlamaForCausalLM"}; });
  absl::Status s = Load(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("'model.layers.0.mlp.gate_proj.weight'"));

  // Qwen2's q/k/v biases are required.
  const std::string qwen_over_llama = EditedFixture("llama", [](json& c) {
    c["architectures"] = {"Qwen2ForCausalLM"};
    c.erase("head_dim");
  });
  s = Load(qwen_over_llama);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("'model.layers.0.self_attn.q_proj.bias'"));
}

TEST_F(ModelLoadErrorTest, ShapeMismatch) {
  const std::string dir = EditedFixture("granitemoe", [](json& c) { c["intermediate_size"] = 48; });
  absl::Status s = Load(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("'model.layers.0.block_sparse_moe.input_linear.weight'"),
                                 HasSubstr("[8, 64, 96]"), HasSubstr("[8, 96, 96]")));
}

TEST_F(ModelLoadErrorTest, UnknownRopeType) {
  const std::string dir = EditedFixture("qwen2", [](json& c) {
    c["rope_parameters"] = {{"rope_theta", 1e6}, {"rope_type", "yarn"}, {"factor", 4.0}};
  });
  absl::Status s = Load(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("'yarn'"), HasSubstr("llama3")));
}

TEST_F(ModelLoadErrorTest, UnsupportedOptionsNamed) {
  struct Case {
    const char* fixture;
    const char* key;
    json value;
  };
  const Case cases[] = {
      {"qwen2", "use_sliding_window", true},
      {"mixtral", "sliding_window", 128},
      {"qwen2", "layer_types", {"full_attention", "sliding_attention"}},
      {"llama", "partial_rotary_factor", 0.5},
      {"granitemoe", "hidden_act", "gelu"},
      {"llama", "quantization_config", {{"quant_method", "gptq"}, {"bits", 4}}},
  };
  for (const Case& c : cases) {
    const std::string dir =
        EditedFixture(c.fixture, [&](json& config) { config[c.key] = c.value; });
    absl::Status s = Load(dir);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << c.key << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr(c.key));
  }
}

TEST_F(ModelLoadErrorTest, Llama3RopeNeedsItsParameters) {
  const std::string dir = EditedFixture("llama", [](json& c) {
    c["rope_parameters"] = {{"rope_theta", 5e5}, {"rope_type", "llama3"}, {"factor", 8.0}};
  });
  absl::Status s = Load(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("\"low_freq_factor\""));
}

// Llama 3.1 8B's rope (theta 5e5, head_dim 128, factor 8, low/high 1/4, original 8192 positions):
// inverse frequencies as transformers' _compute_llama3_parameters returns them (5.17.0, fp32).
// RopeInvFreq reproduces them bit for bit.
constexpr float kLlama31InvFreq[64] = {
    0x1p+0f,         0x1.a11582p-1f,  0x1.53c38cp-1f,  0x1.14c708p-1f,  0x1.c2ef78p-2f,
    0x1.6f56fap-2f,  0x1.2b3dc6p-2f,  0x1.e788c2p-3f,  0x1.8d276p-3f,   0x1.43874p-3f,
    0x1.078d4p-3f,   0x1.ad6338p-4f,  0x1.5dc95ap-4f,  0x1.1cf13p-4f,   0x1.d03ccep-5f,
    0x1.7a2d08p-5f,  0x1.34119p-5f,   0x1.f5ea7ep-6f,  0x1.98de92p-6f,  0x1.4d1272p-6f,
    0x1.0f5386p-6f,  0x1.ba0dd8p-7f,  0x1.681adap-7f,  0x1.2558fep-7f,  0x1.ddee9ep-8f,
    0x1.8554ecp-8f,  0x1.3d2804p-8f,  0x1.025c6ap-8f,  0x1.a4ee4p-9f,   0x1.1bfa0cp-9f,
    0x1.67a23ap-10f, 0x1.c12f3cp-11f, 0x1.132ba4p-11f, 0x1.47e21p-12f,  0x1.765ba4p-13f,
    0x1.90d10cp-14f, 0x1.46831ap-14f, 0x1.09fb7ep-14f, 0x1.b15902p-15f, 0x1.610332p-15f,
    0x1.1f91fp-15f,  0x1.d484dep-16f, 0x1.7da9e8p-16f, 0x1.36e8eap-16f, 0x1.fa8b86p-17f,
    0x1.9ca3eap-17f, 0x1.5024d6p-17f, 0x1.11d41ep-17f, 0x1.be2188p-18f, 0x1.6b6d0ep-18f,
    0x1.280d96p-18f, 0x1.e257p-19f,   0x1.88ec2p-19f,  0x1.4014d2p-19f, 0x1.04be68p-19f,
    0x1.a8d01p-20f,  0x1.5a0f4ep-20f, 0x1.19e8p-20f,   0x1.cb4a9ap-21f, 0x1.76258ep-21f,
    0x1.30c94ep-21f, 0x1.f09184p-22f, 0x1.94836p-22f,  0x1.4985fep-22f,
};

TEST(Llama3RopeTest, InvFreqMatchesTransformers) {
  ModelConfig c;
  c.head_dim = 128;
  c.rope_theta = 500000.0f;
  c.rope_type = "llama3";
  c.rope_factor = 8.0;
  c.rope_low_freq_factor = 1.0;
  c.rope_high_freq_factor = 4.0;
  c.rope_original_max_position_embeddings = 8192;
  const std::vector<float> inv = RopeInvFreq(c);
  ASSERT_EQ(inv.size(), 64u);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(inv[i], kLlama31InvFreq[i]) << i;
}

// A tiny Llama with Llama 3 rope scaling and head_dim 16 != hidden 48 / 4 heads, its weights drawn
// from an integer formula (reproduced bit for bit in numpy), and HF transformers' logits for it at
// four positions of a 40-token input: scaling acts in all three bands (kept, interpolated,
// divided) since original_max_position_embeddings is 32.
std::vector<float> FormulaWeights(int64_t n, uint64_t seed, float scale, float offset) {
  std::vector<float> w(n);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t x = (static_cast<uint64_t>(i) * 2654435761ull + seed * 40503ull) & 0xffffffffull;
    const int64_t k = static_cast<int64_t>((x >> 8) % 2001) - 1000;
    w[i] = offset + static_cast<float>(k) / 1000.0f * scale;
  }
  return w;
}

std::string WriteTinyLlama3(const json& rope_keys) {
  const std::string dir = testing::MakeTempDir();
  json config = {{"architectures", {"LlamaForCausalLM"}},
                 {"hidden_act", "silu"},
                 {"vocab_size", 64},
                 {"hidden_size", 48},
                 {"intermediate_size", 80},
                 {"num_hidden_layers", 2},
                 {"num_attention_heads", 4},
                 {"num_key_value_heads", 2},
                 {"head_dim", 16},
                 {"max_position_embeddings", 128},
                 {"rms_norm_eps", 1e-5},
                 {"tie_word_embeddings", false},
                 {"eos_token_id", 2}};
  config.update(rope_keys);
  std::ofstream(dir + "/config.json") << config.dump(2);
  std::map<std::string, std::vector<int64_t>> shapes = {{"lm_head.weight", {64, 48}},
                                                        {"model.embed_tokens.weight", {64, 48}},
                                                        {"model.norm.weight", {48}}};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    shapes[p + "input_layernorm.weight"] = {48};
    shapes[p + "post_attention_layernorm.weight"] = {48};
    shapes[p + "mlp.gate_proj.weight"] = {80, 48};
    shapes[p + "mlp.up_proj.weight"] = {80, 48};
    shapes[p + "mlp.down_proj.weight"] = {48, 80};
    shapes[p + "self_attn.q_proj.weight"] = {64, 48};
    shapes[p + "self_attn.k_proj.weight"] = {32, 48};
    shapes[p + "self_attn.v_proj.weight"] = {32, 48};
    shapes[p + "self_attn.o_proj.weight"] = {48, 64};
  }
  // Seeds follow the sorted names, as in the Python script (sorted(state_dict())).
  std::vector<TensorToWrite> tensors;
  uint64_t seed = 0;
  for (const auto& [name, shape] : shapes) {
    ++seed;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const bool norm = name.find("norm") != std::string::npos;
    const std::vector<float> w = FormulaWeights(n, seed, norm ? 0.1f : 0.25f, norm ? 1.0f : 0.0f);
    TensorToWrite t{name, DType::kF32, shape, std::vector<uint8_t>(n * sizeof(float))};
    std::memcpy(t.bytes.data(), w.data(), t.bytes.size());
    tensors.push_back(std::move(t));
  }
  EXPECT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  return dir;
}

// HF transformers 5.17.0's logits for the input below, at positions 0, 9, 25 and 39.
const std::map<int, std::vector<float>>& TinyLlama3Logits() {
  static const auto* logits = new std::map<int, std::vector<float>>{
      {0,
       {
           0x1.16137p-1f,   0x1.6075bep+0f,  -0x1.e5b15ep-2f, 0x1.7727dap+0f,  0x1.2bb126p+0f,
           -0x1.2a3704p-1f, 0x1.6707fp+0f,   -0x1.6bb592p-3f, 0x1.5cfdfep-4f,  -0x1.6c5e96p-2f,
           -0x1.9840bap-1f, 0x1.298c96p+0f,  -0x1.24a0bep+0f, -0x1.b83c4p-1f,  0x1.834b92p-1f,
           -0x1.b67146p+0f, -0x1.97d9acp-1f, 0x1.62f8e6p-1f,  -0x1.1066dcp-1f, -0x1.3d0d76p+0f,
           0x1.b8f3c6p-2f,  -0x1.4bb6cp-2f,  -0x1.50ef6cp+0f, 0x1.a8e464p-2f,  -0x1.8c3484p-2f,
           -0x1.661878p-1f, 0x1.8e58e2p-1f,  -0x1.ccb94p-2f,  -0x1.b1ccdap-1f, 0x1.4d3224p+0f,
           -0x1.57fe94p-1f, -0x1.d27d7ap-1f, 0x1.7cacbp-2f,   -0x1.8646dcp-2f, -0x1.226a88p+0f,
           0x1.07ac1p+0f,   -0x1.675b42p-1f, -0x1.97e8e4p+0f, 0x1.ef1854p-1f,  0x1.173028p-3f,
           -0x1.453cd8p+0f, 0x1.c4bdaap+0f,  -0x1.744782p-1f, -0x1.34a66ep-1f, 0x1.baa39ep-5f,
           -0x1.9442f8p-1f, 0x1.05c43ep-5f,  -0x1.893084p-1f, -0x1.94769ep-2f, 0x1.8a5f48p-1f,
           -0x1.0baa98p+0f, 0x1.ce683cp-2f,  0x1.698fa4p-1f,  -0x1.bea8aap-1f, 0x1.504a72p-7f,
           0x1.1842cep-1f,  -0x1.36a03ep+0f, 0x1.80c296p-2f,  0x1.f2e886p-2f,  -0x1.adac12p-1f,
           0x1.31b826p-2f,  0x1.f81428p-1f,  -0x1.9c3568p-1f, 0x1.e0adbcp-3f,
       }},
      {9,
       {
           0x1.dabe46p-1f,  0x1.75bc44p-2f,  -0x1.47a8ep-3f,  0x1.35b16ap+0f,  -0x1.9b099ep-2f,
           0x1.b31acep-2f,  0x1.2f32b4p+0f,  -0x1.f04beap-1f, 0x1.2c4a5ap-2f,  0x1.c20338p-2f,
           -0x1.49b544p+0f, 0x1.9c724cp-3f,  -0x1.289dc4p-4f, -0x1.503334p+0f, -0x1.6fde3ep-1f,
           0x1.467a3cp-1f,  -0x1.af517ep+0f, -0x1.7cf346p-1f, 0x1.ad175ep-1f,  -0x1.1cd0ccp+1f,
           -0x1.85995ep-1f, 0x1.0cc866p+0f,  -0x1.3409e4p+0f, -0x1.22a2c4p+0f, 0x1.06394cp+0f,
           -0x1.2a1d9cp+0f, -0x1.d58ee2p-1f, 0x1.ffd3e2p-1f,  -0x1.8d3b4ap-2f, -0x1.bd5d16p-3f,
           0x1.ee947ep-1f,  -0x1.a66364p-2f, 0x1.1fe812p+0f,  -0x1.986de4p-2f, -0x1.acf656p-1f,
           0x1.0da936p-1f,  -0x1.c22208p-3f, 0x1.a2f782p-2f,  0x1.00abd2p-1f,  -0x1.a3b7e4p-2f,
           0x1.b734c6p-3f,  0x1.cc2fd6p-4f,  -0x1.7956p-1f,   0x1.5723ep-4f,   -0x1.73657cp-1f,
           -0x1.8651d6p-1f, 0x1.68d186p-2f,  -0x1.9df5aap+0f, -0x1.a38e22p+0f, 0x1.1c7622p-1f,
           -0x1.a45454p-1f, -0x1.753da4p+0f, 0x1.106e0cp-1f,  -0x1.24de4cp-1f, -0x1.ff8552p+0f,
           0x1.51eaccp+0f,  -0x1.0e9e2p+0f,  -0x1.55e56ep-1f, 0x1.eb013ep-1f,  0x1.2cf618p-1f,
           -0x1.4bd926p-3f, 0x1.b3df46p-2f,  0x1.ebb6f6p-2f,  -0x1.7e2958p-3f,
       }},
      {25,
       {
           -0x1.3c10aep+0f,  0x1.d26726p-1f,  0x1.961984p-1f,  -0x1.2e3644p-1f, 0x1.5aacc8p+0f,
           0x1.f12676p-1f,   -0x1.45e9eap-1f, 0x1.3c10ap+0f,   0x1.ebbed4p+0f,  -0x1.4f84d2p+0f,
           0x1.b5ed02p+0f,   0x1.754774p+1f,  0x1.2c500ap-5f,  0x1.aa55c2p+0f,  0x1.a62efcp+0f,
           -0x1.7d6082p-1f,  0x1.3efcf8p-1f,  0x1.9a22aap+0f,  0x1.69a258p-6f,  -0x1.8cbd9cp-2f,
           0x1.a3f95ep+0f,   -0x1.2e8276p+0f, -0x1.302c2cp-1f, 0x1.656beap-1f,  -0x1.3a1eacp+0f,
           -0x1.2daebp-4f,   0x1.0855cep-2f,  -0x1.45e0e6p+0f, -0x1.a7f786p-1f, 0x1.2fc4f6p-1f,
           -0x1.71379ep-12f, -0x1.be728cp-1f, -0x1.5488f8p+0f, 0x1.5d4772p-1f,  -0x1.d519fap+0f,
           -0x1.a3b1p+0f,    0x1.3b43f6p+0f,  -0x1.f71aecp+0f, -0x1.af8ad2p+0f, 0x1.0a4902p+1f,
           -0x1.14b568p+1f,  -0x1.3b7408p-1f, 0x1.4e9d7p+0f,   -0x1.36653ap+0f, -0x1.318a06p+0f,
           0x1.430636p+0f,   0x1.18ae2p-2f,   -0x1.1d4a92p+0f, 0x1.6a8b0cp+1f,  0x1.e37352p-3f,
           -0x1.0a0106p-1f,  0x1.2c7d18p+1f,  0x1.88803p-3f,   0x1.99b84ep-2f,  0x1.5613dep+0f,
           0x1.40af4ap-1f,   -0x1.390b34p-1f, 0x1.1b8accp-1f,  0x1.f78074p-3f,  -0x1.0ed19ap+0f,
           -0x1.f7c52ep-4f,  0x1.095ef4p-2f,  -0x1.714576p-1f, -0x1.55ceep-3f,
       }},
      {39,
       {
           -0x1.24b7cep+1f, -0x1.c8a16ep-2f, 0x1.970676p-1f,  -0x1.f24f92p+0f, 0x1.f79858p-2f,
           0x1.a43efcp+0f,  -0x1.e9dcc8p+0f, 0x1.69b986p-1f,  0x1.3ddae2p+0f,  -0x1.752812p-2f,
           0x1.b839c4p-2f,  0x1.40e4fep+1f,  -0x1.73bba8p-1f, 0x1.db70fp-2f,   0x1.f3b826p-1f,
           -0x1.b69c12p-3f, 0x1.3c0fdap-1f,  0x1.0263fcp+0f,  0x1.10aa42p-2f,  -0x1.1d13dep-2f,
           0x1.902bbep-1f,  0x1.f5ddd8p-1f,  0x1.447d46p-4f,  0x1.31a90ap-2f,  0x1.03d116p+0f,
           0x1.0d73f8p-1f,  0x1.b05828p-4f,  0x1.0c3604p+0f,  -0x1.033358p-5f, -0x1.646f2ep-2f,
           0x1.f9e852p-1f,  0x1.804dfcp-9f,  -0x1.26d74ap+1f, 0x1.2bc076p+0f,  0x1.df4188p-4f,
           -0x1.3f4a8ep+1f, 0x1.3805p-2f,    -0x1.a2d5cap-1f, -0x1.3b1126p+1f, 0x1.2d2376p-2f,
           -0x1.1bf912p+0f, -0x1.a2565cp+0f, 0x1.d24746p-6f,  -0x1.82da6cp+0f, -0x1.b15132p-1f,
           0x1.016e7ep-4f,  -0x1.39038ep-1f, -0x1.ba681ap+0f, -0x1.a2769ep-3f, -0x1.294a4cp-1f,
           -0x1.1bfb1p-1f,  0x1.3276b2p-1f,  -0x1.17bf28p-1f, 0x1.006ca6p-4f,  -0x1.323e8p-2f,
           -0x1.4987dep-2f, 0x1.f725f2p-2f,  -0x1.829b0ep-2f, 0x1.ea6e24p-1f,  0x1.3bdf22p+0f,
           -0x1.5bb698p-8f, 0x1.434b68p+0f,  0x1.5a66f8p+0f,  0x1.df8228p-6f,
       }},
  };
  return *logits;
}

// The largest |logit - HF| over the reference positions, for the model in `dir`.
double TinyLlama3MaxError(const std::string& dir) {
  auto backend = kernels::NewCpuBackend(1);
  auto model = LoadModel(dir, backend.get());
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return INFINITY;
  const ModelConfig& c = (*model)->config();
  KvCache cache(c.num_layers, 10, 4, c.num_kv_heads, c.head_dim);
  std::vector<int32_t> table;
  EXPECT_TRUE(cache.EnsureCapacity(&table, 40));
  ForwardBatch b;
  for (int p = 0; p < 40; ++p) {
    b.token_ids.push_back((p * 7 + 3) % 61 + 3);
    b.positions.push_back(p);
    b.token_seq.push_back(0);
    b.slot_mapping.push_back(cache.Slot(table, p));
  }
  for (const auto& [pos, want] : TinyLlama3Logits()) b.logit_rows.push_back(pos);
  b.block_tables = table;
  b.max_blocks_per_seq = static_cast<int64_t>(table.size());
  std::vector<float> got;
  (*model)->Forward(b, &cache, &got);
  double max_err = 0;
  int row = 0;
  for (const auto& [pos, want] : TinyLlama3Logits()) {
    for (int v = 0; v < 64; ++v) {
      max_err = std::max(max_err, std::fabs(double{got[row * 64 + v]} - double{want[v]}));
    }
    ++row;
  }
  return max_err;
}

TEST(Llama3RopeTest, TinyModelLogitsMatchTransformers) {
  const json rope = {{"rope_type", "llama3"},   {"rope_theta", 10000.0},
                     {"factor", 4.0},           {"low_freq_factor", 1.0},
                     {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 32}};
  constexpr double kMaxAbsLogit = 3.3743;  // HF's largest |logit| over the whole input
  // transformers >= 5 spelling, then the older rope_scaling one.
  EXPECT_LT(TinyLlama3MaxError(WriteTinyLlama3({{"rope_parameters", rope}})), 1e-4 * kMaxAbsLogit);
  json old_rope = rope;
  old_rope.erase("rope_theta");
  EXPECT_LT(
      TinyLlama3MaxError(WriteTinyLlama3({{"rope_theta", 10000.0}, {"rope_scaling", old_rope}})),
      1e-4 * kMaxAbsLogit);
  // Plain rope is visibly wrong here, so the match above is the scaling's doing.
  EXPECT_GT(TinyLlama3MaxError(WriteTinyLlama3({{"rope_theta", 10000.0}})), 1e-2 * kMaxAbsLogit);
}

}  // namespace
}  // namespace dpinfer::engine
