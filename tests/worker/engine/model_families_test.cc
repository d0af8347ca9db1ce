// The model families against HF transformers on the ../shared fixtures (tiny random-weight
// Llama, Qwen2, Mixtral and GraniteMoE models with HF fp32 logits and greedy continuations):
// logits within 1e-4 of the reference relative to its largest |logit|, a batch of all sequences
// bit-identical to each alone (MoE routing included), and the greedy continuations reproduced
// exactly through Engine. Then the load-time errors: unknown architecture, missing tensor, shape
// mismatch, unknown rope type, each naming what is wrong; and the Llama 3 rope frequencies.
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

// The raw little-endian data of a 4-byte tensor of reference.safetensors (F32 or I32).
template <typename T>
std::vector<T> ReadRaw(const SafetensorsFile& file, const std::string& name) {
  auto it = file.tensors().find(name);
  EXPECT_NE(it, file.tensors().end()) << name;
  if (it == file.tensors().end()) return {};
  std::vector<T> v(it->second.numel());
  EXPECT_EQ(it->second.nbytes, v.size() * sizeof(T));
  std::memcpy(v.data(), it->second.data, it->second.nbytes);
  return v;
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
  const std::vector<int32_t> input = ReadRaw<int32_t>(*ref_, "input_ids");  // [3, 24]
  const std::vector<float> want = ReadRaw<float>(*ref_, "logits");          // [3, 24, vocab]
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
  const std::vector<int32_t> prompts = ReadRaw<int32_t>(*ref_, "greedy_prompt_ids");  // [3, 8]
  const std::vector<int32_t> outputs = ReadRaw<int32_t>(*ref_, "greedy_output_ids");  // [3, 16]
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

}  // namespace
}  // namespace dpinfer::engine
