// LlamaModel's forward against HF transformers' fp32 logits on the tiny-llama fixture (random
// weights, untied lm_head, GQA 8:2, rope theta 5e5), through the paged cache: a whole sequence in
// one step, several sequences in one batch (bit-identical to running each alone), and a greedy
// decode one token per step that reproduces HF's greedy continuation.
#include "worker/engine/llama_model.h"

#include <cmath>
#include <cstring>

#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "tests/reference_testutil.h"
#include "tests/test_env.h"
#include "worker/engine/sampler.h"

namespace dpinfer::engine {
namespace {

std::string FixtureDir() { return testing::SharedDir() + "/fixtures/tiny-llama"; }

class LlamaModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_SHARED();
    absl::StatusOr<ModelConfig> config = LoadModelConfig(FixtureDir());
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    backend_ = kernels::NewCpuBackend();
    auto model = LlamaModel::Load(FixtureDir(), config_, backend_.get());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    auto ref = SafetensorsFile::Open(FixtureDir() + "/reference.safetensors");
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = *std::move(ref);
    cache_ = std::make_unique<KvCache>(config_.num_layers, 64, 4, config_.num_kv_heads,
                                       config_.head_dim);
  }

  // Appends tokens [start, start + ids.size()) of a sequence (growing its block table) to batch.
  void AddToBatch(ForwardBatch* b, std::vector<int32_t>* table, const std::vector<int32_t>& ids,
                  int64_t start, int32_t row, bool all_logits) {
    ASSERT_TRUE(cache_->EnsureCapacity(table, start + ids.size()));
    for (size_t i = 0; i < ids.size(); ++i) {
      if (all_logits || i + 1 == ids.size()) {
        b->logit_rows.push_back(static_cast<int32_t>(b->token_ids.size()));
      }
      b->token_ids.push_back(ids[i]);
      b->positions.push_back(static_cast<int32_t>(start + i));
      b->token_seq.push_back(row);
      b->slot_mapping.push_back(cache_->Slot(*table, start + i));
    }
  }
  static void SetTables(ForwardBatch* b, const std::vector<std::vector<int32_t>*>& tables) {
    b->max_blocks_per_seq = 1;
    for (auto* t : tables)
      b->max_blocks_per_seq = std::max<int64_t>(b->max_blocks_per_seq, t->size());
    b->block_tables.assign(tables.size() * b->max_blocks_per_seq, 0);
    for (size_t r = 0; r < tables.size(); ++r) {
      std::copy(tables[r]->begin(), tables[r]->end(),
                b->block_tables.begin() + r * b->max_blocks_per_seq);
    }
  }

  ModelConfig config_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<SafetensorsFile> ref_;
  std::unique_ptr<KvCache> cache_;
};

TEST_F(LlamaModelTest, LogitsMatchHfTransformers) {
  const std::vector<int32_t> input = testing::ReadRaw<int32_t>(*ref_, "input_ids");  // [3, 24]
  const std::vector<float> want = testing::ReadRaw<float>(*ref_, "logits");          // [3, 24, 512]
  ASSERT_EQ(want.size(), 3u * 24 * 512);
  const int64_t len = 24, vocab = config_.vocab_size;
  // Each sequence alone, then all three in one batch: the batch must be bit-identical.
  std::vector<float> alone_all;
  for (int32_t s = 0; s < 3; ++s) {
    std::vector<int32_t> table;
    ForwardBatch b;
    AddToBatch(&b, &table, {input.begin() + s * len, input.begin() + (s + 1) * len}, 0, 0, true);
    SetTables(&b, {&table});
    std::vector<float> logits;
    model_->Forward(b, cache_.get(), &logits);
    cache_->Free(&table);
    ASSERT_EQ(logits.size(), static_cast<size_t>(len * vocab));
    double max_err = 0, max_ref = 0;
    for (int64_t i = 0; i < len * vocab; ++i) {
      max_err = std::max(max_err, double(std::fabs(logits[i] - want[s * len * vocab + i])));
      max_ref = std::max(max_ref, double(std::fabs(want[s * len * vocab + i])));
    }
    EXPECT_LT(max_err, 1e-4 * std::max(1.0, max_ref))
        << "sequence " << s << " max |ref| " << max_ref;
    alone_all.insert(alone_all.end(), logits.begin(), logits.end());
  }
  std::vector<std::vector<int32_t>> tables(3);
  ForwardBatch b;
  for (int32_t s = 0; s < 3; ++s) {
    AddToBatch(&b, &tables[s], {input.begin() + s * len, input.begin() + (s + 1) * len}, 0, s,
               true);
  }
  SetTables(&b, {&tables[0], &tables[1], &tables[2]});
  std::vector<float> logits;
  model_->Forward(b, cache_.get(), &logits);
  ASSERT_EQ(logits.size(), alone_all.size());
  for (size_t i = 0; i < logits.size(); ++i) ASSERT_EQ(logits[i], alone_all[i]) << i;
}

TEST_F(LlamaModelTest, GreedyDecodeMatchesHfTransformers) {
  const std::vector<int32_t> prompts =
      testing::ReadRaw<int32_t>(*ref_, "greedy_prompt_ids");  // [3, 8]
  const std::vector<int32_t> outputs =
      testing::ReadRaw<int32_t>(*ref_, "greedy_output_ids");  // [3, 16]
  for (int s = 0; s < 3; ++s) {
    std::vector<int32_t> table;
    std::vector<int32_t> step_ids(prompts.begin() + s * 8, prompts.begin() + (s + 1) * 8);
    int64_t pos = 0;
    std::vector<int32_t> got;
    while (got.size() < 16) {
      ForwardBatch b;
      AddToBatch(&b, &table, step_ids, pos, 0, false);
      SetTables(&b, {&table});
      std::vector<float> logits;
      model_->Forward(b, cache_.get(), &logits);
      pos += step_ids.size();
      got.push_back(Argmax(logits.data(), config_.vocab_size));
      step_ids = {got.back()};
    }
    cache_->Free(&table);
    EXPECT_EQ(got, std::vector<int32_t>(outputs.begin() + s * 16, outputs.begin() + (s + 1) * 16))
        << "sequence " << s;
  }
}

}  // namespace
}  // namespace dpinfer::engine
