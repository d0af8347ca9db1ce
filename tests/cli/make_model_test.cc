// Tests for MakeTinyModel: its output loads through LoadModelConfig and Checkpoint with HF Llama
// names and shapes, is deterministic, shards and bf16 read back to the same weights, and its
// tokenizer.json has stories260K's layout with a self-consistent BPE vocab and merge list.
#include "cli/make_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "common/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_env.h"
#include "worker/engine/model_config.h"

namespace dpinfer::cli {
namespace {

using json = nlohmann::json;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

MakeModelOptions Options(const std::string& sub) {
  MakeModelOptions o;
  o.out_dir = testing::MakeTempDir() + "/" + sub;
  return o;
}

// HF Llama names and [out_features, in_features] shapes for the given options.
std::map<std::string, std::vector<int64_t>> ExpectedTensors(const MakeModelOptions& o) {
  const int64_t v = TinyModelVocabSize(), h = o.hidden_size, d = h / o.num_heads,
                i = o.intermediate_size;
  std::map<std::string, std::vector<int64_t>> m = {{"model.embed_tokens.weight", {v, h}},
                                                   {"model.norm.weight", {h}}};
  for (int64_t l = 0; l < o.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    m[p + "self_attn.q_proj.weight"] = {o.num_heads * d, h};
    m[p + "self_attn.k_proj.weight"] = {o.num_kv_heads * d, h};
    m[p + "self_attn.v_proj.weight"] = {o.num_kv_heads * d, h};
    m[p + "self_attn.o_proj.weight"] = {h, o.num_heads * d};
    m[p + "mlp.gate_proj.weight"] = {i, h};
    m[p + "mlp.up_proj.weight"] = {i, h};
    m[p + "mlp.down_proj.weight"] = {h, i};
    m[p + "input_layernorm.weight"] = {h};
    m[p + "post_attention_layernorm.weight"] = {h};
  }
  if (!o.tie_word_embeddings) m["lm_head.weight"] = {v, h};
  return m;
}

// Reads every expected tensor as fp32, checking names and shapes along the way.
std::map<std::string, std::vector<float>> ReadAll(const MakeModelOptions& o) {
  std::map<std::string, std::vector<float>> out;
  auto ckpt = Checkpoint::Open(o.out_dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  if (!ckpt.ok()) return out;
  const auto expected = ExpectedTensors(o);
  EXPECT_EQ((*ckpt)->Names().size(), expected.size());
  for (const auto& [name, shape] : expected) {
    absl::Status s = (*ckpt)->ReadF32(name, shape, &out[name]);
    EXPECT_TRUE(s.ok()) << s;
  }
  return out;
}

TEST(MakeModelTest, LoadsAsLlama) {
  MakeModelOptions o = Options("m");
  ASSERT_TRUE(MakeTinyModel(o).ok());
  auto c = engine::LoadModelConfig(o.out_dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 172);
  EXPECT_EQ(c->num_layers, 4);
  EXPECT_EQ(c->num_heads, 8);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->vocab_size, TinyModelVocabSize());
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_THAT(c->eos_token_ids, ::testing::ElementsAre(2));

  const auto weights = ReadAll(o);
  // Norms start at one; projections are N(0, 0.02^2).
  for (float v : weights.at("model.layers.0.input_layernorm.weight")) ASSERT_EQ(v, 1.0f);
  const std::vector<float>& emb = weights.at("model.embed_tokens.weight");
  double sum = 0, sq = 0;
  for (float v : emb) {
    sum += v;
    sq += static_cast<double>(v) * v;
  }
  const double mean = sum / emb.size(), stddev = std::sqrt(sq / emb.size() - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.002);
  EXPECT_NEAR(stddev, 0.02, 0.002);
}

TEST(MakeModelTest, UntiedHasLmHead) {
  MakeModelOptions o = Options("m");
  o.tie_word_embeddings = false;
  o.num_layers = 1;
  ASSERT_TRUE(MakeTinyModel(o).ok());
  EXPECT_EQ(ReadAll(o).count("lm_head.weight"), 1u);
}

TEST(MakeModelTest, Deterministic) {
  MakeModelOptions a = Options("a"), b = Options("b"), c = Options("c");
  c.seed = 2;
  for (const auto* o : {&a, &b, &c}) ASSERT_TRUE(MakeTinyModel(*o).ok());
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json",
                        "tokenizer_config.json", "model.safetensors"}) {
    EXPECT_EQ(ReadFile(a.out_dir + "/" + f), ReadFile(b.out_dir + "/" + f)) << f;
  }
  EXPECT_NE(ReadFile(a.out_dir + "/model.safetensors"), ReadFile(c.out_dir + "/model.safetensors"));
}

TEST(MakeModelTest, ShardedMatchesSingleFile) {
  MakeModelOptions single = Options("single"), sharded = Options("sharded");
  sharded.num_shards = 2;
  ASSERT_TRUE(MakeTinyModel(single).ok());
  ASSERT_TRUE(MakeTinyModel(sharded).ok());
  EXPECT_TRUE(std::filesystem::exists(sharded.out_dir + "/model.safetensors.index.json"));
  EXPECT_TRUE(std::filesystem::exists(sharded.out_dir + "/model-00001-of-00002.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(sharded.out_dir + "/model-00002-of-00002.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(sharded.out_dir + "/model.safetensors"));
  EXPECT_EQ(ReadAll(single), ReadAll(sharded));

  // Re-running single-file into the sharded dir must not leave the stale index in charge.
  sharded.num_shards = 1;
  ASSERT_TRUE(MakeTinyModel(sharded).ok());
  EXPECT_FALSE(std::filesystem::exists(sharded.out_dir + "/model.safetensors.index.json"));
  EXPECT_EQ(ReadAll(single), ReadAll(sharded));
}

TEST(MakeModelTest, Bf16AndF16ReadBackAsRoundedF32) {
  MakeModelOptions f32 = Options("f32"), bf16 = Options("bf16"), f16 = Options("f16");
  bf16.dtype = "bfloat16";
  f16.dtype = "float16";
  for (const auto* o : {&f32, &bf16, &f16}) ASSERT_TRUE(MakeTinyModel(*o).ok());
  auto cfg = engine::LoadModelConfig(bf16.out_dir);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto ckpt = Checkpoint::Open(bf16.out_dir);
  ASSERT_TRUE(ckpt.ok());
  EXPECT_EQ((*ckpt)->Find("model.norm.weight")->dtype, DType::kBF16);

  const auto ref = ReadAll(f32), b = ReadAll(bf16), h = ReadAll(f16);
  for (const auto& [name, values] : ref) {
    ASSERT_EQ(b.at(name).size(), values.size()) << name;
    for (size_t i = 0; i < values.size(); ++i) {
      ASSERT_EQ(b.at(name)[i], Bf16ToF32(F32ToBf16(values[i]))) << name << "[" << i << "]";
      ASSERT_EQ(h.at(name)[i], F16ToF32(F32ToF16(values[i]))) << name << "[" << i << "]";
    }
  }
}

TEST(MakeModelTest, RejectsBadOptions) {
  MakeModelOptions o = Options("m");
  o.dtype = "int8";
  EXPECT_FALSE(MakeTinyModel(o).ok());
  o = Options("m");
  o.num_kv_heads = 3;
  EXPECT_FALSE(MakeTinyModel(o).ok());
  o = Options("m");
  o.num_shards = 0;
  EXPECT_FALSE(MakeTinyModel(o).ok());
}

TEST(MakeModelTest, TokenizerIsConsistentBpe) {
  MakeModelOptions o = Options("m");
  o.num_layers = 1;
  ASSERT_TRUE(MakeTinyModel(o).ok());
  const json t = json::parse(ReadFile(o.out_dir + "/tokenizer.json"), nullptr, false);
  ASSERT_FALSE(t.is_discarded());
  const json& vocab = t["model"]["vocab"];
  EXPECT_EQ(static_cast<int64_t>(vocab.size()), TinyModelVocabSize());

  // Ids are dense 0..N-1: specials, then the 256 byte-fallback tokens.
  std::vector<bool> seen(vocab.size(), false);
  for (const auto& [token, id] : vocab.items()) {
    ASSERT_LT(id.get<size_t>(), seen.size());
    seen[id.get<size_t>()] = true;
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), false), 0);
  EXPECT_EQ(vocab["<unk>"], 0);
  EXPECT_EQ(vocab["<s>"], 1);
  EXPECT_EQ(vocab["</s>"], 2);
  EXPECT_EQ(vocab["<0x00>"], 3);
  EXPECT_EQ(vocab["<0x0A>"], 13);
  EXPECT_EQ(vocab["<0xFF>"], 258);
  EXPECT_TRUE(vocab.contains("\xE2\x96\x81the"));  // "▁the"

  // Each merge joins two existing tokens into one that exists, and a merge's result never has a
  // lower id than its parts (merges are listed in the order they apply).
  const json& merges = t["model"]["merges"];
  ASSERT_GT(merges.size(), 100u);
  for (const json& m : merges) {
    ASSERT_TRUE(m.is_array() && m.size() == 2) << m;
    const std::string a = m[0], b = m[1];
    ASSERT_TRUE(vocab.contains(a)) << a;
    ASSERT_TRUE(vocab.contains(b)) << b;
    ASSERT_TRUE(vocab.contains(a + b)) << a + b;
    EXPECT_GT(vocab[a + b].get<int>(), vocab[a].get<int>());
    EXPECT_GT(vocab[a + b].get<int>(), vocab[b].get<int>());
  }
}

// The layout (everything but the vocab and merges) is exactly stories260K's, so one tokenizer
// implementation serves both.
TEST(MakeModelTest, TokenizerLayoutMatchesStories260K) {
  SKIP_WITHOUT_SHARED();
  MakeModelOptions o = Options("m");
  o.num_layers = 1;
  ASSERT_TRUE(MakeTinyModel(o).ok());
  json ours = json::parse(ReadFile(o.out_dir + "/tokenizer.json"));
  json ref = json::parse(ReadFile(testing::SharedDir() + "/models/stories260K/tokenizer.json"));
  for (json* j : {&ours, &ref}) {
    (*j)["model"].erase("vocab");
    (*j)["model"].erase("merges");
  }
  EXPECT_EQ(ours, ref) << json::diff(ref, ours).dump(2);

  // config.json carries the same keys as the real model's.
  const json cfg = json::parse(ReadFile(o.out_dir + "/config.json"));
  const json ref_cfg =
      json::parse(ReadFile(testing::SharedDir() + "/models/stories260K/config.json"));
  std::vector<std::string> keys, ref_keys;
  for (const auto& [k, v] : cfg.items()) keys.push_back(k);
  for (const auto& [k, v] : ref_cfg.items()) ref_keys.push_back(k);
  EXPECT_EQ(keys, ref_keys);
}

}  // namespace
}  // namespace dpinfer::cli
