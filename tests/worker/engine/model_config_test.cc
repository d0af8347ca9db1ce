// Tests for LoadModelConfig: the real stories260K config, both rope spellings, eos merging with
// generation_config.json, and that unsupported or incomplete configs fail naming file and key.
#include "worker/engine/model_config.h"

#include <fstream>

#include "absl/status/status.h"
#include "cli/make_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_env.h"

namespace dpinfer::engine {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

// A minimal older-style (top-level rope_theta) Llama config; tests edit it per case.
json BaseConfig() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"hidden_act", "silu"},
          {"hidden_size", 128},
          {"intermediate_size", 256},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"vocab_size", 1000},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 500000.0},
          {"rope_scaling", nullptr},
          {"eos_token_id", 2}};
}

std::string WriteDir(const json& config, const json* generation = nullptr) {
  const std::string dir = testing::MakeTempDir();
  std::ofstream(dir + "/config.json") << config.dump(2);
  if (generation != nullptr) std::ofstream(dir + "/generation_config.json") << generation->dump();
  return dir;
}

TEST(ModelConfigTest, Stories260K) {
  SKIP_WITHOUT_SHARED();
  auto c = LoadModelConfig(testing::SharedDir() + "/models/stories260K");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 172);
  EXPECT_EQ(c->num_layers, 5);
  EXPECT_EQ(c->num_heads, 8);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c->rope_theta, 10000.0f);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2));
}

TEST(ModelConfigTest, TopLevelRopeThetaAndDefaults) {
  auto c = LoadModelConfig(WriteDir(BaseConfig()));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FLOAT_EQ(c->rope_theta, 500000.0f);
  EXPECT_EQ(c->head_dim, 32);     // hidden / heads
  EXPECT_EQ(c->num_kv_heads, 4);  // defaults to num_attention_heads
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, -1);
}

TEST(ModelConfigTest, RopeScalingDefaultTypeAccepted) {
  json cfg = BaseConfig();
  cfg["rope_scaling"] = {{"type", "default"}};
  EXPECT_TRUE(LoadModelConfig(WriteDir(cfg)).ok());
}

TEST(ModelConfigTest, EosListMergedWithGenerationConfig) {
  json cfg = BaseConfig();
  cfg["eos_token_id"] = {2, 7};
  const json gen = {{"eos_token_id", {7, 9, 2}}, {"bos_token_id", 1}};
  auto c = LoadModelConfig(WriteDir(cfg, &gen));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2, 7, 9));
  EXPECT_EQ(c->bos_token_id, 1);  // taken from generation_config when config.json has none
}

TEST(ModelConfigTest, UnsupportedArchitectureNamed) {
  json cfg = BaseConfig();
  cfg["architectures"] = {"GPT2LMHeadModel"};
  auto c = LoadModelConfig(WriteDir(cfg));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(c.status().message(), AllOf(HasSubstr("config.json"), HasSubstr("GPT2LMHeadModel"),
                                          HasSubstr("LlamaForCausalLM")));
}

TEST(ModelConfigTest, UnknownRopeTypeNamed) {
  json cfg = BaseConfig();
  cfg.erase("rope_theta");
  cfg["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "dynamic"}, {"factor", 8.0}};
  auto c = LoadModelConfig(WriteDir(cfg));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(c.status().message(), HasSubstr("'dynamic'"));

  cfg = BaseConfig();
  cfg["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  c = LoadModelConfig(WriteDir(cfg));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("'yarn'"));
}

TEST(ModelConfigTest, UnsupportedActivationNamed) {
  json cfg = BaseConfig();
  cfg["hidden_act"] = "gelu";
  auto c = LoadModelConfig(WriteDir(cfg));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("'gelu'"));
}

TEST(ModelConfigTest, MissingKeyNamed) {
  for (const char* key : {"hidden_size", "vocab_size", "num_hidden_layers", "architectures"}) {
    json cfg = BaseConfig();
    cfg.erase(key);
    const std::string dir = WriteDir(cfg);
    auto c = LoadModelConfig(dir);
    ASSERT_FALSE(c.ok()) << key;
    EXPECT_THAT(c.status().message(),
                AllOf(HasSubstr(dir + "/config.json"), HasSubstr(std::string("\"") + key + "\"")));
  }
}

TEST(ModelConfigTest, WrongTypeNamed) {
  json cfg = BaseConfig();
  cfg["hidden_size"] = "128";
  auto c = LoadModelConfig(WriteDir(cfg));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), AllOf(HasSubstr("\"hidden_size\""), HasSubstr("integer")));
}

TEST(ModelConfigTest, MissingConfigFile) {
  const std::string dir = testing::MakeTempDir();
  auto c = LoadModelConfig(dir);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(), HasSubstr(dir + "/config.json"));
}

TEST(ModelConfigTest, ValidatesSizes) {
  json cfg = BaseConfig();
  cfg["num_key_value_heads"] = 3;  // 4 heads cannot be grouped over 3 kv heads
  auto c = LoadModelConfig(WriteDir(cfg));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("num_key_value_heads"));

  cfg = BaseConfig();
  cfg["num_hidden_layers"] = 0;
  c = LoadModelConfig(WriteDir(cfg));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("num_hidden_layers"));

  cfg = BaseConfig();
  cfg["eos_token_id"] = 5000;
  c = LoadModelConfig(WriteDir(cfg));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("5000"));
}

TEST(ModelConfigTest, TiedEmbeddingsInMakeModelOutput) {
  for (bool tie : {true, false}) {
    cli::MakeModelOptions opts;
    opts.out_dir = testing::MakeTempDir() + "/m";
    opts.num_layers = 1;
    opts.tie_word_embeddings = tie;
    ASSERT_TRUE(cli::MakeTinyModel(opts).ok());
    auto c = LoadModelConfig(opts.out_dir);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->tie_word_embeddings, tie);
    EXPECT_EQ(c->vocab_size, cli::TinyModelVocabSize());
  }
}

}  // namespace
}  // namespace dpinfer::engine
