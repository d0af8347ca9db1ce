// What the engine tests on stories260K share (engine_test on the CPU, cuda_engine_test on the GPU):
// the model's HF reference greedy outputs, running an engine to completion, and the greedy parity
// check of all reference prompts batched together.
#pragma once

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_env.h"
#include "worker/engine/engine.h"

namespace dpinfer::engine::stories {

struct Reference {
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> output_ids;
  std::string text;
};

inline std::string ModelDir() { return dpinfer::testing::SharedDir() + "/models/stories260K"; }

// reference.json's greedy entries (transformers' outputs).
inline std::vector<Reference> LoadReference() {
  std::ifstream in(ModelDir() + "/reference.json");
  nlohmann::json j = nlohmann::json::parse(in);
  std::vector<Reference> refs;
  for (const auto& e : j["greedy"]) {
    refs.push_back({e["prompt"].get<std::string>(), e["prompt_ids"].get<std::vector<int32_t>>(),
                    e["output_ids"].get<std::vector<int32_t>>(), e["text"].get<std::string>()});
  }
  return refs;
}

// Steps until the engine is idle; results by request id.
inline std::map<uint64_t, Result> RunToCompletion(Engine* engine) {
  std::map<uint64_t, Result> out;
  for (int steps = 0; engine->HasWork(); ++steps) {
    std::vector<Result> finished;
    absl::Status s = engine->Step(&finished);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok() || steps > 100000) break;
    for (Result& r : finished) {
      EXPECT_EQ(out.count(r.id), 0u) << "request " << r.id << " finished twice";
      out[r.id] = std::move(r);
    }
  }
  return out;
}

// Adds `requests` (each must be accepted) and runs them to completion.
inline std::map<uint64_t, Result> RunAll(Engine* engine, std::vector<Request> requests) {
  for (Request& r : requests) EXPECT_TRUE(engine->Add(std::move(r)).ok());
  return RunToCompletion(engine);
}

// The reference's prompt as ids, greedy, for as many tokens as the reference generated.
inline Request GreedyIds(uint64_t id, const Reference& ref) {
  Request r;
  r.id = id;
  r.prompt = ref.prompt_ids;
  r.params.temperature = 0.0f;
  r.params.max_tokens = static_cast<int32_t>(ref.output_ids.size());
  return r;
}

// Submits every reference prompt at once and checks the outputs against HF's.
inline void ExpectGreedyParity(Engine* engine) {
  const std::vector<Reference> refs = LoadReference();
  ASSERT_EQ(refs.size(), 4u);
  for (size_t i = 0; i < refs.size(); ++i) ASSERT_TRUE(engine->Add(GreedyIds(i, refs[i])).ok());
  std::map<uint64_t, Result> results = RunToCompletion(engine);
  ASSERT_EQ(results.size(), refs.size());
  for (size_t i = 0; i < refs.size(); ++i) {
    EXPECT_EQ(results[i].output_ids, refs[i].output_ids) << "prompt '" << refs[i].prompt << "'";
    EXPECT_EQ(results[i].finish_reason, FinishReason::kLength);
    EXPECT_EQ(results[i].prompt_tokens, static_cast<int32_t>(refs[i].prompt_ids.size()));
  }
  const EngineStats s = engine->stats();
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);  // every block came back
  EXPECT_EQ(s.running + s.waiting, 0);
}

}  // namespace dpinfer::engine::stories
