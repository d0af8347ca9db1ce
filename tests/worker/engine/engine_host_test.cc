// The engine's host-side step (scheduling, batch flattening, stop checks, detokenization, results)
// on a byte-level tokenizer, with a scripted model in place of a real one (CreateEngineWithModel):
// each request's tokens are fixed in advance, so the expected text is known exactly. The text of
// a result must be what the detokenizer's general rule releases (no stop strings), cut before the
// first stop string (stop strings, including one completed by the final flush), and never hold a
// stop or EOS id; the batches the model sees must be the engine's usual ones.
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_env.h"
#include "tests/worker/engine/byte_level_testutil.h"
#include "worker/engine/engine.h"
#include "worker/engine/engine_testing.h"
#include "worker/engine/model.h"
#include "worker/engine/tokenizer/tokenizer.h"

namespace dpinfer::engine {
namespace {

using byte_level_test::GeneralPathTokenizer;
using byte_level_test::kSpecial;
using byte_level_test::kVocabSize;

constexpr int32_t kEos = kSpecial;

// Returns scripts[seed][step] for every row: the seed names the request's script.
class ScriptedModel final : public Model {
 public:
  explicit ScriptedModel(std::map<uint64_t, std::vector<int32_t>> scripts)
      : scripts_(std::move(scripts)) {}
  absl::Status Step(const ForwardBatch& batch, const std::vector<SampleSpec>& specs,
                    std::vector<int32_t>* tokens) override {
    if (batch.logit_rows.size() != specs.size()) return absl::InternalError("rows != specs");
    max_batch_seqs_ = std::max(max_batch_seqs_, static_cast<int64_t>(specs.size()));
    tokens->resize(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      const std::vector<int32_t>& script = scripts_.at(specs[i].seed);
      if (specs[i].step >= script.size()) return absl::InternalError("script too short");
      (*tokens)[i] = script[specs[i].step];
    }
    return absl::OkStatus();
  }
  int64_t weight_bytes() const override { return 0; }
  int64_t max_batch_seqs_ = 0;

 private:
  std::map<uint64_t, std::vector<int32_t>> scripts_;
};

// A model directory with the tiny byte-level tokenizer and a config (no weights).
std::string ModelDir() {
  const std::string dir = testing::MakeTempDir();
  std::ofstream(dir + "/tokenizer.json") << byte_level_test::TinyTokenizerJson().dump();
  const nlohmann::json config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"vocab_size", kVocabSize},
      {"hidden_size", 8},
      {"intermediate_size", 16},
      {"num_hidden_layers", 1},
      {"num_attention_heads", 1},
      {"num_key_value_heads", 1},
      {"max_position_embeddings", 256},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", true},
      {"eos_token_id", kEos},
  };
  std::ofstream(dir + "/config.json") << config.dump();
  return dir;
}

// The ids that spell `text` one byte per token.
std::vector<int32_t> Bytes(const std::string& text) {
  std::vector<int32_t> ids;
  for (const unsigned char c : text) ids.push_back(c);
  return ids;
}

class EngineHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ModelDir();
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(dir_);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = *std::move(tok);
  }

  // Runs `requests` (request i follows scripts[params.seed]) to the end; results by id.
  std::map<uint64_t, Result> Run(const std::vector<Request>& requests,
                                 std::map<uint64_t, std::vector<int32_t>> scripts,
                                 EngineOptions o = {}) {
    o.model_dir = dir_;
    auto model = std::make_unique<ScriptedModel>(std::move(scripts));
    model_ = model.get();
    absl::StatusOr<std::unique_ptr<Engine>> engine = CreateEngineWithModel(o, std::move(model));
    EXPECT_TRUE(engine.ok()) << engine.status();
    std::map<uint64_t, Result> results;
    if (!engine.ok()) return results;
    engine_ = *std::move(engine);  // owns model_
    for (const Request& r : requests) EXPECT_TRUE(engine_->Add(r).ok());
    std::vector<Result> finished;
    while (engine_->HasWork()) {
      finished.clear();
      const absl::Status s = engine_->Step(&finished);
      EXPECT_TRUE(s.ok()) << s;
      if (!s.ok()) break;
      for (Result& r : finished) results[r.id] = std::move(r);
    }
    return results;
  }

  // The text the detokenizer's general rule releases for `generated` after `prompt`, with the
  // engine's calls: Append for each id but a final EOS, then Finish.
  std::string GeneralRuleText(const std::vector<int32_t>& prompt,
                              const std::vector<int32_t>& generated, bool ends_with_eos) {
    const GeneralPathTokenizer general(tokenizer_.get());
    IncrementalDetokenizer d(&general, prompt);
    const size_t n = generated.size() - (ends_with_eos ? 1 : 0);
    for (size_t i = 0; i < n; ++i) d.Append(generated[i]);
    d.Finish();
    return d.text();
  }

  std::string dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Engine> engine_;  // the last Run's
  ScriptedModel* model_ = nullptr;  // its model
};

Request MakeRequest(uint64_t id, std::vector<int32_t> prompt, int32_t max_tokens) {
  Request r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.params.seed = id;
  r.params.max_tokens = max_tokens;
  return r;
}

TEST_F(EngineHostTest, TextIsWhatTheGeneralRuleReleases) {
  // Random scripts over bytes that break characters, specials and unknown ids, some ending in EOS,
  // many sequences in one batch; chunked prefill and small blocks on the way.
  std::mt19937_64 rng(3);
  std::vector<Request> requests;
  std::map<uint64_t, std::vector<int32_t>> scripts;
  for (uint64_t id = 0; id < 40; ++id) {
    std::vector<int32_t> prompt(1 + rng() % 20), script(1 + rng() % 30);
    for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % kVocabSize);
    for (int32_t& t : script) {
      t = static_cast<int32_t>(rng() % 2 ? 0x80 + rng() % 0x80 : rng() % (kVocabSize - 2));
    }
    if (id % 4 == 0) script.back() = kEos;
    requests.push_back(MakeRequest(id, prompt, static_cast<int32_t>(script.size())));
    scripts[id] = script;
  }
  EngineOptions o;
  o.max_num_batched_tokens = 64;
  o.kv_block_size = 4;
  const std::map<uint64_t, Result> results = Run(requests, scripts, o);
  ASSERT_EQ(results.size(), requests.size());
  EXPECT_GT(model_->max_batch_seqs_, 20);  // many sequences share steps
  for (const Request& r : requests) {
    const Result& res = results.at(r.id);
    const std::vector<int32_t>& script = scripts[r.id];
    const bool eos = script.back() == kEos;
    EXPECT_EQ(res.output_ids, script) << r.id;
    EXPECT_EQ(res.finish_reason, eos ? FinishReason::kStop : FinishReason::kLength) << r.id;
    const auto& prompt = std::get<std::vector<int32_t>>(r.prompt);
    EXPECT_EQ(res.prompt_tokens, static_cast<int32_t>(prompt.size()));
    EXPECT_EQ(res.text, GeneralRuleText(prompt, script, eos)) << r.id;
  }
}

TEST_F(EngineHostTest, StopStringsCutTheText) {
  const std::vector<int32_t> said = Bytes("Hello world, this is a test. \xE6\x97\xA5 end");
  std::vector<Request> requests;
  std::map<uint64_t, std::vector<int32_t>> scripts;
  const auto add = [&](uint64_t id, std::vector<std::string> stop, std::vector<int32_t> script,
                       int32_t max_tokens) {
    Request r = MakeRequest(id, Bytes("Say:"), max_tokens);
    r.params.stop = std::move(stop);
    requests.push_back(std::move(r));
    scripts[id] = std::move(script);
  };
  const int32_t all = static_cast<int32_t>(said.size());
  add(0, {"is a", "zzz"}, said, all);   // the first match ends the text
  add(1, {"zzz"}, said, all);           // never matches: runs to max_tokens
  add(2, {"\xE6\x97\xA5"}, said, all);  // a character split over three tokens
  add(3, {" t", "world,"}, said, all);  // the earliest match wins, whatever the order
  // A lone first byte at max_tokens is flushed as U+FFFD, which matches the stop string.
  add(4, {"\xEF\xBF\xBD"}, Bytes("ab\xE6"), 3);
  add(5, {}, Bytes("ab\xE6"), 3);       // the same without stop strings
  add(6, {"ab"}, {'a', 'b', kEos}, 3);  // a stop string at the last token
  add(7, {"c"}, {'a', 'b', kEos}, 3);   // EOS first: not in the text
  const std::map<uint64_t, Result> results = Run(requests, scripts);
  ASSERT_EQ(results.size(), requests.size());
  const auto upto = [&](size_t n) { return std::vector<int32_t>(said.begin(), said.begin() + n); };

  EXPECT_EQ(results.at(0).text, "Hello world, this ");
  EXPECT_EQ(results.at(0).finish_reason, FinishReason::kStop);
  EXPECT_EQ(results.at(0).output_ids, upto(std::string("Hello world, this is a").size()));

  EXPECT_EQ(results.at(1).text, "Hello world, this is a test. \xE6\x97\xA5 end");
  EXPECT_EQ(results.at(1).finish_reason, FinishReason::kLength);
  EXPECT_EQ(results.at(1).output_ids, said);

  EXPECT_EQ(results.at(2).text, "Hello world, this is a test. ");
  EXPECT_EQ(results.at(2).finish_reason, FinishReason::kStop);
  EXPECT_EQ(results.at(2).output_ids,
            upto(std::string("Hello world, this is a test. \xE6\x97\xA5").size()));

  EXPECT_EQ(results.at(3).text, "Hello ");
  EXPECT_EQ(results.at(3).output_ids, upto(std::string("Hello world,").size()));

  EXPECT_EQ(results.at(4).text, "ab");
  EXPECT_EQ(results.at(4).finish_reason, FinishReason::kStop);
  EXPECT_EQ(results.at(5).text, "ab\xEF\xBF\xBD");
  EXPECT_EQ(results.at(5).finish_reason, FinishReason::kLength);

  EXPECT_EQ(results.at(6).text, "");
  EXPECT_EQ(results.at(6).finish_reason, FinishReason::kStop);
  EXPECT_EQ(results.at(6).output_ids, Bytes("ab"));

  EXPECT_EQ(results.at(7).text, "ab");
  EXPECT_EQ(results.at(7).finish_reason, FinishReason::kStop);
  EXPECT_EQ(results.at(7).output_ids, (std::vector<int32_t>{'a', 'b', kEos}));
}

TEST_F(EngineHostTest, StopTokenIdsAndIgnoreEos) {
  std::vector<Request> requests;
  std::map<uint64_t, std::vector<int32_t>> scripts;
  Request a = MakeRequest(0, Bytes("Q"), 5);
  a.params.stop_token_ids = {'!'};
  requests.push_back(a);
  scripts[0] = Bytes("hi!yo");
  Request b = MakeRequest(1, Bytes("Q"), 4);
  b.params.ignore_eos = true;
  requests.push_back(b);
  scripts[1] = {'h', kEos, 'i', '.'};
  const std::map<uint64_t, Result> results = Run(requests, scripts);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results.at(0).text, "hi");
  EXPECT_EQ(results.at(0).output_ids, Bytes("hi!"));
  EXPECT_EQ(results.at(0).finish_reason, FinishReason::kStop);
  EXPECT_EQ(results.at(1).text, "hi.");  // the special token renders nothing
  EXPECT_EQ(results.at(1).output_ids, scripts[1]);
  EXPECT_EQ(results.at(1).finish_reason, FinishReason::kLength);
}

}  // namespace
}  // namespace dpinfer::engine
