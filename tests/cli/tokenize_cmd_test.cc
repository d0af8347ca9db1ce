// `dpinfer tokenize` / `dpinfer detokenize`, run as the built binary the way a user runs them:
// text and ids on stdin/stdout, --model as a directory or a bare tokenizer.json, BOS only with
// --add-special-tokens, exact byte round trips, and a clear message and exit code 1 on bad input.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_testutil.h"
#include "tests/test_env.h"

namespace dpinfer::testing {
namespace {

using ::testing::HasSubstr;

std::string Gpt2Dir() { return SharedDir() + "/tokenizers/gpt2"; }
std::string StoriesModelDir() { return SharedDir() + "/models/stories260K"; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct CliRun {
  int exit_code;
  std::string out;  // stdout alone
  std::string err;  // stderr alone
};

class TokenizeCmdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_SHARED();
    binary_ = BinDir() + "/dpinfer";
    ASSERT_TRUE(std::filesystem::exists(binary_)) << "build the dpinfer target first: " << binary_;
    dir_ = MakeTempDir();
  }

  // Runs `dpinfer <args>` with `input` on stdin.
  CliRun Dpinfer(const std::string& args, const std::string& input) {
    std::ofstream(dir_ + "/in", std::ios::binary) << input;
    const CommandResult r = RunCommand("'" + binary_ + "' " + args + " < '" + dir_ + "/in' > '" +
                                           dir_ + "/out' 2> '" + dir_ + "/err'",
                                       60);
    return {r.exit_code, ReadFile(dir_ + "/out"), ReadFile(dir_ + "/err")};
  }

  std::string binary_;
  std::string dir_;
};

TEST_F(TokenizeCmdTest, TokenizesStdinAsJsonArray) {
  // "Hello world" is one of llama.cpp's GPT-2 vectors: 15496 995.
  const CliRun r = Dpinfer("tokenize --model '" + Gpt2Dir() + "'", "Hello world");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[15496,995]\n");
  EXPECT_EQ(r.err, "");
}

TEST_F(TokenizeCmdTest, ModelMayBeABareTokenizerJson) {
  const CliRun r = Dpinfer("tokenize --model '" + Gpt2Dir() + "/tokenizer.json'", " Hello world");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[18435,995]\n");
}

TEST_F(TokenizeCmdTest, TrailingNewlineIsText) {
  // 198 is GPT-2's "\n": stdin is taken byte for byte.
  const CliRun r = Dpinfer("tokenize --model '" + Gpt2Dir() + "'", "Hello world\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[15496,995,198]\n");
}

TEST_F(TokenizeCmdTest, BosOnlyWithAddSpecialTokens) {
  // stories260K's template puts BOS (1) first; " Once upon a time" is 403 407 261 378 after it.
  const std::string model = "tokenize --model '" + StoriesModelDir() + "'";
  CliRun r = Dpinfer(model, "Once upon a time");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::Not(::testing::StartsWith("[1,")));
  const std::string without = r.out;
  r = Dpinfer(model + " --add-special-tokens", "Once upon a time");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[1," + without.substr(1));
  // GPT-2 has no BOS: the flag changes nothing.
  r = Dpinfer("tokenize --add-special-tokens --model '" + Gpt2Dir() + "'", "Hello world");
  EXPECT_EQ(r.out, "[15496,995]\n");
}

TEST_F(TokenizeCmdTest, DetokenizePrintsTheTextExactly) {
  CliRun r = Dpinfer("detokenize --model '" + Gpt2Dir() + "'", "[15496, 995, 198]\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello world\n");
  r = Dpinfer("detokenize --model '" + Gpt2Dir() + "'", "[15496, 50256, 995]");
  EXPECT_EQ(r.out, "Hello<|endoftext|> world");
  r = Dpinfer("detokenize --skip-special-tokens --model '" + Gpt2Dir() + "'",
              "[15496, 50256, 995]");
  EXPECT_EQ(r.out, "Hello world");
}

TEST_F(TokenizeCmdTest, RoundTripsThroughAPipe) {
  const std::string text = ReadFile(Gpt2Dir() + "/vocab-test.inp");
  ASSERT_FALSE(text.empty());
  std::ofstream(dir_ + "/text", std::ios::binary) << text;
  for (const std::string& model : {Gpt2Dir(), StoriesModelDir()}) {
    const CommandResult r =
        RunCommand("'" + binary_ + "' tokenize --model '" + model + "' < '" + dir_ + "/text' | '" +
                       binary_ + "' detokenize --model '" + model + "' > '" + dir_ + "/back'",
                   60);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(ReadFile(dir_ + "/back") == text) << model;
  }
}

TEST_F(TokenizeCmdTest, BadInputFailsWithAMessage) {
  const std::string gpt2 = " --model '" + Gpt2Dir() + "'";
  CliRun r = Dpinfer("tokenize" + gpt2, "caf\xC3");  // a truncated "é"
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("not valid UTF-8"));
  EXPECT_EQ(r.out, "");

  r = Dpinfer("detokenize" + gpt2, "15496 995");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("not a JSON array"));

  r = Dpinfer("detokenize" + gpt2, "[15496, \"x\"]");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("element 1"));

  r = Dpinfer("detokenize" + gpt2, "[15496, 50257]");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("token id 50257"));

  r = Dpinfer("tokenize --model '" + dir_ + "/no-such-model'", "hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no-such-model"));

  r = Dpinfer("tokenize", "hi");  // --model is required
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--model"));
}

}  // namespace
}  // namespace dpinfer::testing
