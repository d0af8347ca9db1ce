// Tests for common/safetensors: conversions (bit patterns, ties-to-even), write/read round trips,
// sharded checkpoints, and that corrupt or mismatched inputs fail with errors naming the file and
// tensor at fault. Ends with the real stories260K checkpoint from ../shared.
#include "common/safetensors.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_env.h"

namespace dpinfer {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<uint8_t> F32Bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<uint8_t> U16Bytes(const std::vector<uint16_t>& v) {
  std::vector<uint8_t> b(v.size() * 2);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Writes a file with a hand-made header, for inputs WriteSafetensors would refuse to produce.
void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes,
              uint64_t header_len_override = 0) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header_len_override != 0 ? header_len_override : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header << std::string(data_bytes, '\0');
}

float Pow2(int e) { return std::ldexp(1.0f, e); }

TEST(ConversionTest, Bf16KnownBits) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3F80);
  EXPECT_EQ(F32ToBf16(-2.0f), 0xC000);
  EXPECT_EQ(F32ToBf16(0.0f), 0x0000);
  EXPECT_EQ(F32ToBf16(-0.0f), 0x8000);
  EXPECT_EQ(Bf16ToF32(0x4049), 3.140625f);
  EXPECT_EQ(Bf16ToF32(0x3F80), 1.0f);
  // Ties go to the even neighbour; anything above the tie rounds up.
  EXPECT_EQ(F32ToBf16(1.0f + Pow2(-8)), 0x3F80);
  EXPECT_EQ(F32ToBf16(1.0f + 3 * Pow2(-8)), 0x3F82);
  EXPECT_EQ(F32ToBf16(1.0f + Pow2(-8) + Pow2(-20)), 0x3F81);
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds past max -> inf
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(std::nanf("")))));
}

TEST(ConversionTest, F16KnownBits) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3C00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xC000);
  EXPECT_EQ(F32ToF16(0.1f), 0x2E66);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65519.0f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7C00);  // the tie above the largest half goes to infinity
  EXPECT_EQ(F32ToF16(-1e10f), 0xFC00);
  EXPECT_EQ(F32ToF16(1.0f + Pow2(-11)), 0x3C00);
  EXPECT_EQ(F32ToF16(1.0f + 3 * Pow2(-11)), 0x3C02);
  // Subnormals: 2^-24 is the smallest; 2^-25 ties to the even zero, just above it rounds up.
  EXPECT_EQ(F32ToF16(Pow2(-24)), 0x0001);
  EXPECT_EQ(F32ToF16(Pow2(-25)), 0x0000);
  EXPECT_EQ(F32ToF16(1.5f * Pow2(-25)), 0x0001);
  EXPECT_EQ(F32ToF16(3 * Pow2(-25)), 0x0002);  // 1.5 units ties up to the even 2
  EXPECT_EQ(F32ToF16(Pow2(-14)), 0x0400);      // smallest normal
  EXPECT_EQ(F32ToF16(Pow2(-14) - Pow2(-24)), 0x03FF);
  EXPECT_EQ(F16ToF32(0x0001), Pow2(-24));
  EXPECT_EQ(F16ToF32(0x8001), -Pow2(-24));
  EXPECT_EQ(F16ToF32(0x3555), 0.333251953125f);
  EXPECT_EQ(F16ToF32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(F16ToF32(0x7E00)));
  EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(std::nanf("")))));
}

// Every 16-bit value widens exactly, so narrowing it again must give back the same bits.
TEST(ConversionTest, ExhaustiveRoundTrip) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    if (!std::isnan(F16ToF32(h))) {
      ASSERT_EQ(F32ToF16(F16ToF32(h)), h) << std::hex << i;
    }
    if (!std::isnan(Bf16ToF32(h))) {
      ASSERT_EQ(F32ToBf16(Bf16ToF32(h)), h) << std::hex << i;
    }
  }
}

TEST(SafetensorsTest, RoundTripF32Bf16F16) {
  const std::string dir = testing::MakeTempDir();
  const std::vector<float> values = {1.0f, -2.5f, 0.1f, 3.140625f, 0.0f, 65504.0f};
  std::vector<uint16_t> bf16, f16;
  for (float v : values) {
    bf16.push_back(F32ToBf16(v));
    f16.push_back(F32ToF16(v));
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors",
                               {{"f32", DType::kF32, {2, 3}, F32Bytes(values)},
                                {"bf16", DType::kBF16, {3, 2}, U16Bytes(bf16)},
                                {"f16", DType::kF16, {6}, U16Bytes(f16)},
                                {"ids", DType::kI64, {1}, std::vector<uint8_t>(8, 0)}},
                               {{"format", "pt"}})
                  .ok());

  // HF pads the header so the data section is 8-byte aligned.
  std::ifstream in(dir + "/model.safetensors", std::ios::binary);
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);
  EXPECT_EQ(header_len % 8, 0u);

  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_THAT((*ckpt)->Names(), ElementsAre("bf16", "f16", "f32", "ids"));
  const TensorInfo* t = (*ckpt)->Find("f32");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kF32);
  EXPECT_EQ(t->nbytes, 24u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 8, 0u);

  std::vector<float> out;
  ASSERT_TRUE((*ckpt)->ReadF32("f32", {2, 3}, &out).ok());
  EXPECT_EQ(out, values);
  ASSERT_TRUE((*ckpt)->ReadF32("bf16", {3, 2}, &out).ok());
  // 0.1 is not representable: bf16 0x3DCD is the nearest.
  EXPECT_THAT(out, ElementsAre(1.0f, -2.5f, Bf16ToF32(0x3DCD), 3.140625f, 0.0f, 65536.0f));
  ASSERT_TRUE((*ckpt)->ReadF32("f16", {6}, &out).ok());
  EXPECT_THAT(out, ElementsAre(1.0f, -2.5f, F16ToF32(0x2E66), 3.140625f, 0.0f, 65504.0f));

  auto file = SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
}

TEST(SafetensorsTest, ShardedIndex) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00001-of-00002.safetensors",
                               {{"a", DType::kF32, {2}, F32Bytes({1, 2})}})
                  .ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00002-of-00002.safetensors",
                               {{"b", DType::kF32, {1}, F32Bytes({3})}})
                  .ok());
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"metadata": {"total_size": 12}, "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors"}})";
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  std::vector<float> out;
  ASSERT_TRUE((*ckpt)->ReadF32("a", {2}, &out).ok());
  EXPECT_THAT(out, ElementsAre(1.0f, 2.0f));
  ASSERT_TRUE((*ckpt)->ReadF32("b", {1}, &out).ok());
  EXPECT_THAT(out, ElementsAre(3.0f));

  // A shard the index names but the directory lacks.
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "c": "model-00003-of-00003.safetensors"}})";
  auto bad = Checkpoint::Open(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(bad.status().message(), AllOf(HasSubstr("model.safetensors.index.json"),
                                            HasSubstr("model-00003-of-00003.safetensors")));

  // A tensor the index places in a shard that does not hold it.
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"weight_map": {"a": "model-00002-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}})";
  bad = Checkpoint::Open(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("'a'"));
}

TEST(SafetensorsTest, MissingFileNamesIt) {
  const std::string dir = testing::MakeTempDir();
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ckpt.status().message(), HasSubstr(dir + "/model.safetensors"));

  auto file = SafetensorsFile::Open(dir + "/nope.safetensors");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr("nope.safetensors"));
}

class CorruptFileTest : public ::testing::Test {
 protected:
  void SetUp() override { path_ = testing::MakeTempDir() + "/model.safetensors"; }
  absl::Status OpenStatus() { return SafetensorsFile::Open(path_).status(); }
  std::string path_;
};

TEST_F(CorruptFileTest, TooShortForHeaderLength) {
  std::ofstream(path_) << "abc";
  absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(path_));
}

TEST_F(CorruptFileTest, HeaderLengthBeyondFile) {
  WriteRaw(path_, "{}", 0, /*header_len_override=*/1000);
  absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path_), HasSubstr("header length 1000")));
}

TEST_F(CorruptFileTest, GarbageJson) {
  WriteRaw(path_, "{\"w\": {\"dtype\": ", 16);
  absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path_), HasSubstr("JSON")));
}

TEST_F(CorruptFileTest, TruncatedData) {
  const std::string name = "model.layers.0.mlp.up_proj.weight";
  ASSERT_TRUE(
      WriteSafetensors(path_, {{name, DType::kF32, {4, 4}, F32Bytes(std::vector<float>(16))}})
          .ok());
  std::filesystem::resize_file(path_, std::filesystem::file_size(path_) - 10);
  absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(path_), HasSubstr("tensor '" + name + "'"),
                    HasSubstr("data_offsets [0,64) exceed the file's data section (54 bytes)")));
}

TEST_F(CorruptFileTest, OffsetsDisagreeWithShape) {
  WriteRaw(path_, R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 16);
  absl::Status s = OpenStatus();
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path_), HasSubstr("tensor 'w'"), HasSubstr("needs 12")));
}

TEST_F(CorruptFileTest, UnknownDtype) {
  WriteRaw(path_, R"({"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}})", 8);
  absl::Status s = OpenStatus();
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path_), HasSubstr("tensor 'w'"), HasSubstr("F8_E4M3")));
}

TEST_F(CorruptFileTest, MissingField) {
  WriteRaw(path_, R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", 8);
  absl::Status s = OpenStatus();
  EXPECT_THAT(s.message(), AllOf(HasSubstr("tensor 'w'"), HasSubstr("shape")));
}

TEST_F(CorruptFileTest, BadMetadata) {
  WriteRaw(path_, R"({"__metadata__": {"format": 3}})", 0);
  absl::Status s = OpenStatus();
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path_), HasSubstr("__metadata__")));
}

TEST(SafetensorsTest, ReadF32Errors) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors",
                               {{"w", DType::kF32, {2, 3}, F32Bytes(std::vector<float>(6))},
                                {"ids", DType::kI32, {2}, std::vector<uint8_t>(8, 0)}})
                  .ok());
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  std::vector<float> out;

  absl::Status s = (*ckpt)->ReadF32("model.norm.weight", {2}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("'model.norm.weight'"), HasSubstr(dir)));

  s = (*ckpt)->ReadF32("w", {3, 2}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("'w'"), HasSubstr("model.safetensors"),
                                 HasSubstr("[2, 3]"), HasSubstr("expected [3, 2]")));

  s = (*ckpt)->ReadF32("ids", {2}, &out);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("'ids'"), HasSubstr("I32")));
}

TEST(SafetensorsTest, WriteRejectsWrongByteCount) {
  const std::string path = testing::MakeTempDir() + "/x.safetensors";
  absl::Status s = WriteSafetensors(path, {{"w", DType::kF32, {3}, F32Bytes({1, 2})}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'w'"));
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(SafetensorsTest, Stories260K) {
  SKIP_WITHOUT_SHARED();
  auto ckpt = Checkpoint::Open(testing::SharedDir() + "/models/stories260K");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  // Tied embeddings: 5 layers x 9 tensors + embedding + final norm, no lm_head.
  EXPECT_EQ((*ckpt)->Names().size(), 47u);
  EXPECT_EQ((*ckpt)->Find("lm_head.weight"), nullptr);
  const std::pair<const char*, std::vector<int64_t>> expected[] = {
      {"model.embed_tokens.weight", {512, 64}},
      {"model.norm.weight", {64}},
      {"model.layers.0.self_attn.q_proj.weight", {64, 64}},
      {"model.layers.0.self_attn.k_proj.weight", {32, 64}},
      {"model.layers.4.self_attn.v_proj.weight", {32, 64}},
      {"model.layers.4.self_attn.o_proj.weight", {64, 64}},
      {"model.layers.2.mlp.gate_proj.weight", {172, 64}},
      {"model.layers.2.mlp.up_proj.weight", {172, 64}},
      {"model.layers.2.mlp.down_proj.weight", {64, 172}},
      {"model.layers.3.input_layernorm.weight", {64}},
      {"model.layers.3.post_attention_layernorm.weight", {64}},
  };
  for (const auto& [name, shape] : expected) {
    const TensorInfo* t = (*ckpt)->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, DType::kF32) << name;
    EXPECT_EQ(t->shape, shape) << name;
  }
  std::vector<float> emb;
  ASSERT_TRUE((*ckpt)->ReadF32("model.embed_tokens.weight", {512, 64}, &emb).ok());
  for (float v : emb) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace dpinfer
