// `dpinfer check-logits` as a user runs it: the built binary on each ../shared fixture (exit 0, one
// line per sequence), on a reference that does not match the model (exit 1, the failing sequence
// named), on I64 input_ids, and on bad input (exit 2 with a message naming the problem).
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_testutil.h"
#include "tests/test_env.h"

namespace dpinfer::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

std::string FixtureDir(const std::string& name) { return SharedDir() + "/fixtures/tiny-" + name; }

CommandResult CheckLogits(const std::string& model, const std::string& reference,
                          const std::string& extra = "") {
  return RunCommand(absl::StrCat(BinDir(), "/dpinfer check-logits --threads 2 --model ", model,
                                 " --reference ", reference, extra, " 2>&1"),
                    120);
}

// Copies the fixture's reference with `edit` applied to each tensor's bytes.
template <typename Edit>
std::string EditedReference(const std::string& fixture, Edit edit) {
  auto ref = SafetensorsFile::Open(FixtureDir(fixture) + "/reference.safetensors");
  EXPECT_TRUE(ref.ok()) << ref.status();
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, t] : (*ref)->tensors()) {
    TensorToWrite w{name, t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.nbytes)};
    edit(&w);
    tensors.push_back(std::move(w));
  }
  const std::string path = MakeTempDir() + "/reference.safetensors";
  EXPECT_TRUE(WriteSafetensors(path, tensors).ok());
  return path;
}

class CheckLogitsFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CheckLogitsFixtureTest, PassesOnHfReference) {
  SKIP_WITHOUT_SHARED();
  CommandResult r =
      CheckLogits(FixtureDir(GetParam()), FixtureDir(GetParam()) + "/reference.safetensors");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (int s = 0; s < 3; ++s) {
    EXPECT_THAT(r.output, HasSubstr(absl::StrCat("sequence ", s, ": max abs error")));
  }
  EXPECT_THAT(r.output, AllOf(HasSubstr("top-1 24/24"), HasSubstr("PASS: 3 of 3 sequences"),
                              Not(HasSubstr("FAIL"))));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CheckLogitsFixtureTest,
                         ::testing::Values("llama", "qwen2", "mixtral", "granitemoe"),
                         [](const auto& info) { return info.param; });

TEST(CheckLogitsTest, OtherModelsReferenceFails) {
  SKIP_WITHOUT_SHARED();
  CommandResult r =
      CheckLogits(FixtureDir("llama"), FixtureDir("qwen2") + "/reference.safetensors");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, AllOf(HasSubstr("sequence 0:"), HasSubstr("FAIL: 0 of 3 sequences")));
}

TEST(CheckLogitsTest, PerturbedSequenceNamed) {
  SKIP_WITHOUT_SHARED();
  // One logit of sequence 1 moved by 0.01 (about 1e-3 of the largest logit): only it fails.
  const std::string ref = EditedReference("mixtral", [](TensorToWrite* t) {
    if (t->name != "logits") return;
    float v;
    const size_t at = (1 * 24 * 512 + 5 * 512 + 7) * sizeof(float);
    std::memcpy(&v, t->bytes.data() + at, sizeof v);
    v += 0.01f;
    std::memcpy(t->bytes.data() + at, &v, sizeof v);
  });
  CommandResult r = CheckLogits(FixtureDir("mixtral"), ref);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("FAIL: 2 of 3 sequences"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("sequence 1: [^\n]*FAIL"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("sequence 0: [^\n]*ok"));
  // A looser tolerance accepts it.
  r = CheckLogits(FixtureDir("mixtral"), ref, " --tolerance 1e-2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(CheckLogitsTest, AcceptsInt64InputIds) {
  SKIP_WITHOUT_SHARED();
  const std::string ref = EditedReference("qwen2", [](TensorToWrite* t) {
    if (t->name != "input_ids") return;
    std::vector<uint8_t> wide(t->bytes.size() * 2);
    for (size_t i = 0; i < t->bytes.size() / 4; ++i) {
      int32_t v;
      std::memcpy(&v, t->bytes.data() + 4 * i, 4);
      const int64_t w = v;
      std::memcpy(wide.data() + 8 * i, &w, 8);
    }
    t->dtype = DType::kI64;
    t->bytes = std::move(wide);
  });
  CommandResult r = CheckLogits(FixtureDir("qwen2"), ref);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("PASS: 3 of 3 sequences"));
}

TEST(CheckLogitsTest, ErrorsNamed) {
  SKIP_WITHOUT_SHARED();
  const std::string ref = FixtureDir("llama") + "/reference.safetensors";
  CommandResult r = CheckLogits(FixtureDir("llama"), ref, " --backend cuda");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("not built with CUDA"));

  r = CheckLogits(FixtureDir("llama"), ref, " --backend tpu");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("'tpu'"));

  r = CheckLogits(FixtureDir("llama"), "/nonexistent/reference.safetensors");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("/nonexistent/reference.safetensors"));

  const std::string no_logits = EditedReference("llama", [](TensorToWrite* t) {
    if (t->name == "logits") t->name = "scores";
  });
  r = CheckLogits(FixtureDir("llama"), no_logits);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("no tensor 'logits'"));

  // The model directory itself is checked: a reference file is not a model.
  r = CheckLogits(SharedDir() + "/fixtures", ref);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("config.json"));
}

}  // namespace
}  // namespace dpinfer::testing
