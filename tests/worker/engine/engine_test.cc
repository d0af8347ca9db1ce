// The engine end to end on a real trained model (stories260K): greedy parity with HF
// transformers' reference outputs, and that parity holding whatever the batching does (one at a
// time, all together, preemption under a tiny KV cache, chunked prefill); then text prompts,
// seeded sampling, stop conditions and request validation.
#include "worker/engine/engine.h"

#include <filesystem>
#include <fstream>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_env.h"
#include "tests/worker/engine/stories_testutil.h"
#include "worker/engine/tokenizer/tokenizer.h"

namespace dpinfer::engine {
namespace {

using ::testing::HasSubstr;

using stories::ExpectGreedyParity;
using stories::GreedyIds;
using stories::LoadReference;
using stories::ModelDir;
using stories::Reference;
using stories::RunToCompletion;

std::unique_ptr<Engine> MakeEngine(EngineOptions o = {}) {
  if (o.model_dir.empty()) o.model_dir = ModelDir();
  absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *std::move(e) : nullptr;
}

TEST(EngineTest, GreedyParityAllTogether) {
  SKIP_WITHOUT_SHARED();
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  ExpectGreedyParity(engine.get());
  EXPECT_EQ(engine->stats().preemptions, 0);
}

TEST(EngineTest, GreedyParityOneAtATime) {
  SKIP_WITHOUT_SHARED();
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  const std::vector<Reference> refs = LoadReference();
  for (size_t i = 0; i < refs.size(); ++i) {
    ASSERT_TRUE(engine->Add(GreedyIds(i, refs[i])).ok());
    std::map<uint64_t, Result> results = RunToCompletion(engine.get());
    ASSERT_EQ(results.size(), 1u);
    EXPECT_EQ(results[i].output_ids, refs[i].output_ids) << "prompt '" << refs[i].prompt << "'";
  }
}

TEST(EngineTest, GreedyParityUnderPreemption) {
  SKIP_WITHOUT_SHARED();
  EngineOptions o;
  o.max_model_len = 80;    // the longest reference is 14 + 64 tokens
  o.kv_cache_tokens = 80;  // room for one of them at a time
  o.kv_block_size = 4;
  auto engine = MakeEngine(o);
  ASSERT_NE(engine, nullptr);
  ExpectGreedyParity(engine.get());
  EXPECT_GT(engine->stats().preemptions, 0);
}

TEST(EngineTest, GreedyParityWithChunkedPrefill) {
  SKIP_WITHOUT_SHARED();
  EngineOptions o;
  o.max_num_batched_tokens = 3;  // prompts of 5 and 14 tokens take several steps
  o.kv_block_size = 2;
  auto engine = MakeEngine(o);
  ASSERT_NE(engine, nullptr);
  ExpectGreedyParity(engine.get());
}

TEST(EngineTest, GreedyParityWithFewSeqSlotsAndOddBlocks) {
  SKIP_WITHOUT_SHARED();
  EngineOptions o;
  o.max_num_seqs = 2;
  o.max_num_batched_tokens = 7;
  o.kv_block_size = 5;
  o.max_model_len = 100;
  o.kv_cache_tokens = 120;
  o.num_threads = 1;
  auto engine = MakeEngine(o);
  ASSERT_NE(engine, nullptr);
  ExpectGreedyParity(engine.get());
}

TEST(EngineTest, TextPromptsMatchReference) {
  SKIP_WITHOUT_SHARED();
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  const std::vector<Reference> refs = LoadReference();
  for (size_t i = 0; i < refs.size(); ++i) {
    absl::StatusOr<std::vector<int32_t>> ids = engine->tokenizer().Encode(refs[i].prompt, true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, refs[i].prompt_ids);
    Request r = GreedyIds(i, refs[i]);
    r.prompt = refs[i].prompt;
    ASSERT_TRUE(engine->Add(r).ok());
  }
  std::map<uint64_t, Result> results = RunToCompletion(engine.get());
  for (size_t i = 0; i < refs.size(); ++i) {
    EXPECT_EQ(results[i].output_ids, refs[i].output_ids);
    const std::string prompt_text = engine->tokenizer().Decode(refs[i].prompt_ids, true);
    ASSERT_EQ(refs[i].text.substr(0, prompt_text.size()), prompt_text);
    EXPECT_EQ(results[i].text, refs[i].text.substr(prompt_text.size()));
  }
}

TEST(EngineTest, SeededSamplingIgnoresBatchComposition) {
  SKIP_WITHOUT_SHARED();
  Request sampled;
  sampled.id = 100;
  sampled.prompt = std::string("Tom and Sue went to the park");
  sampled.params.temperature = 0.9f;
  sampled.params.top_p = 0.95f;
  sampled.params.top_k = 50;
  sampled.params.seed = 1234;
  sampled.params.max_tokens = 60;

  auto alone = MakeEngine();
  ASSERT_NE(alone, nullptr);
  ASSERT_TRUE(alone->Add(sampled).ok());
  Result solo = RunToCompletion(alone.get())[100];

  EngineOptions o;
  o.max_model_len = 100;
  o.kv_cache_tokens = 100;  // small: the batch also preempts
  o.kv_block_size = 4;
  o.max_num_batched_tokens = 5;
  auto batched = MakeEngine(o);
  ASSERT_NE(batched, nullptr);
  const std::vector<Reference> refs = LoadReference();
  for (size_t i = 0; i < refs.size(); ++i) {
    Request other = GreedyIds(i, refs[i]);
    other.params.temperature = 1.0f;
    other.params.seed = i;
    ASSERT_TRUE(batched->Add(other).ok());
  }
  ASSERT_TRUE(batched->Add(sampled).ok());
  std::map<uint64_t, Result> results = RunToCompletion(batched.get());
  ASSERT_EQ(results.size(), 5u);
  EXPECT_EQ(results[100].output_ids, solo.output_ids);
  EXPECT_EQ(results[100].text, solo.text);
  EXPECT_FALSE(solo.text.empty());

  // A different seed gives a different continuation.
  sampled.params.seed = 99;
  ASSERT_TRUE(alone->Add(sampled).ok());
  EXPECT_NE(RunToCompletion(alone.get())[100].output_ids, solo.output_ids);
}

TEST(EngineTest, StopStringsTruncateTheText) {
  SKIP_WITHOUT_SHARED();
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  const Reference ref =
      LoadReference()[1];  // "Once upon a time" -> ", there was a little girl named Lily. ..."
  Request r = GreedyIds(1, ref);
  r.prompt = ref.prompt;
  r.params.stop = {"Lily", "girl nam"};  // the second spans tokens and comes first
  ASSERT_TRUE(engine->Add(r).ok());
  Result res = RunToCompletion(engine.get())[1];
  EXPECT_EQ(res.finish_reason, FinishReason::kStop);
  EXPECT_EQ(res.text, ", there was a little ");
  EXPECT_LT(res.output_ids.size(), ref.output_ids.size());

  r.params.stop = {"zzz"};  // never produced: runs to max_tokens
  ASSERT_TRUE(engine->Add(r).ok());
  res = RunToCompletion(engine.get())[1];
  EXPECT_EQ(res.finish_reason, FinishReason::kLength);
  EXPECT_EQ(res.output_ids, ref.output_ids);

  r.params.stop = {};
  r.params.stop_token_ids = {ref.output_ids[3]};
  ASSERT_TRUE(engine->Add(r).ok());
  res = RunToCompletion(engine.get())[1];
  EXPECT_EQ(res.finish_reason, FinishReason::kStop);
  EXPECT_EQ(res.output_ids,
            std::vector<int32_t>(ref.output_ids.begin(), ref.output_ids.begin() + 4));
}

TEST(EngineTest, EosEndsTheSequenceUnlessIgnored) {
  SKIP_WITHOUT_SHARED();
  // A copy of the model whose EOS is "." (id 426), which the greedy story soon produces.
  const std::string dir = testing::MakeTempDir() + "/stories-eos";
  std::filesystem::create_directories(dir);
  for (const auto& f : std::filesystem::directory_iterator(ModelDir())) {
    std::filesystem::copy_file(f.path(), dir + "/" + f.path().filename().string());
  }
  for (const std::string name : {"config.json", "generation_config.json"}) {
    std::ifstream in(dir + "/" + name);
    nlohmann::json j = nlohmann::json::parse(in);
    in.close();
    j["eos_token_id"] = 426;
    std::ofstream(dir + "/" + name) << j.dump(2);
  }
  EngineOptions o;
  o.model_dir = dir;
  auto engine = MakeEngine(o);
  ASSERT_NE(engine, nullptr);
  const Reference ref = LoadReference()[1];
  Request r = GreedyIds(1, ref);
  ASSERT_TRUE(engine->Add(r).ok());
  Result res = RunToCompletion(engine.get())[1];
  const auto first_dot = std::find(ref.output_ids.begin(), ref.output_ids.end(), 426);
  ASSERT_NE(first_dot, ref.output_ids.end());
  EXPECT_EQ(res.finish_reason, FinishReason::kStop);
  EXPECT_EQ(res.output_ids, std::vector<int32_t>(ref.output_ids.begin(), first_dot + 1));
  EXPECT_EQ(res.text, ", there was a little girl named Lily");  // the EOS is not in the text

  r.params.ignore_eos = true;
  ASSERT_TRUE(engine->Add(r).ok());
  res = RunToCompletion(engine.get())[1];
  EXPECT_EQ(res.finish_reason, FinishReason::kLength);
  EXPECT_EQ(res.output_ids, ref.output_ids);
}

TEST(EngineTest, AddRefusesBadRequestsAndKeepsServing) {
  SKIP_WITHOUT_SHARED();
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  const Reference ref = LoadReference()[2];
  ASSERT_TRUE(engine->Add(GreedyIds(7, ref)).ok());  // in flight while the others are refused
  std::vector<Result> finished;
  ASSERT_TRUE(engine->Step(&finished).ok());

  Request bad = GreedyIds(1, ref);
  bad.prompt = std::vector<int32_t>{1, 512, 3};
  absl::Status s = engine->Add(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("512"));
  bad.prompt = std::vector<int32_t>{1, -4};
  EXPECT_THAT(engine->Add(bad).message(), HasSubstr("-4"));
  bad.prompt = std::vector<int32_t>{};
  EXPECT_THAT(engine->Add(bad).message(), HasSubstr("empty"));

  Request too_long = GreedyIds(2, ref);
  too_long.prompt = std::vector<int32_t>(600, 5);
  too_long.params.max_tokens = 16;
  s = engine->Add(too_long);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "prompt has 600 tokens and max_tokens is 16, but the model's context is 512 tokens");
  too_long.prompt = std::vector<int32_t>(500, 5);  // fits alone, not with 16 more
  EXPECT_EQ(engine->Add(too_long).code(), absl::StatusCode::kInvalidArgument);

  Request bad_p = GreedyIds(3, ref);
  bad_p.params.top_p = 1.5f;
  s = engine->Add(bad_p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("top_p"));
  bad_p.params.top_p = 1.0f;
  bad_p.params.max_tokens = -1;
  s = engine->Add(bad_p);
  EXPECT_THAT(s.message(), HasSubstr("max_tokens"));
  bad_p.params.max_tokens = 4;
  bad_p.params.stop = {""};
  EXPECT_THAT(engine->Add(bad_p).message(), HasSubstr("stop"));
  EXPECT_EQ(engine->Add(GreedyIds(7, ref)).code(), absl::StatusCode::kInvalidArgument);  // dup id

  // The good request, and a new one, still come out right.
  ASSERT_TRUE(engine->Add(GreedyIds(8, LoadReference()[3])).ok());
  std::map<uint64_t, Result> results = RunToCompletion(engine.get());
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[7].output_ids, ref.output_ids);
  EXPECT_EQ(results[8].output_ids, LoadReference()[3].output_ids);
}

TEST(EngineTest, AbortFreesTheRequest) {
  SKIP_WITHOUT_SHARED();
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  const std::vector<Reference> refs = LoadReference();
  ASSERT_TRUE(engine->Add(GreedyIds(0, refs[0])).ok());
  ASSERT_TRUE(engine->Add(GreedyIds(1, refs[1])).ok());
  ASSERT_TRUE(engine->Add(GreedyIds(2, refs[2])).ok());
  std::vector<Result> finished;
  ASSERT_TRUE(engine->Step(&finished).ok());
  engine->Abort(1);   // running
  engine->Abort(42);  // unknown: ignored
  std::map<uint64_t, Result> results = RunToCompletion(engine.get());
  EXPECT_EQ(results.size(), 2u);
  EXPECT_EQ(results.count(1), 0u);
  EXPECT_EQ(results[0].output_ids, refs[0].output_ids);
  EXPECT_EQ(results[2].output_ids, refs[2].output_ids);
  const EngineStats s = engine->stats();
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
  EXPECT_EQ(s.finished_requests, 2);
  EXPECT_GT(s.prompt_tokens, 0);
  EXPECT_GT(s.generated_tokens, 0);
}

TEST(EngineTest, CreateReportsBadOptions) {
  SKIP_WITHOUT_SHARED();
  EngineOptions o;
  o.model_dir = ModelDir();
  o.kv_cache_tokens = 10;  // less than one 512-token sequence
  EXPECT_EQ(Engine::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.kv_cache_tokens = 0;
  o.model_dir = testing::MakeTempDir();
  EXPECT_FALSE(Engine::Create(o).ok());
  o.model_dir = ModelDir();
  auto engine = MakeEngine(o);
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->served_model_name(), "stories260K");
  EXPECT_EQ(engine->max_model_len(), 512);
}

}  // namespace
}  // namespace dpinfer::engine
