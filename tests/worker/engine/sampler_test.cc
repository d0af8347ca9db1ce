// The sampler: greedy paths, nucleus and top-k truncation, and the counter-based RNG's
// determinism and distribution (fixed seeds, so nothing here is flaky).
#include "worker/engine/sampler.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace dpinfer::engine {
namespace {

const std::vector<float> kLogits = {0.5f, 2.0f, -1.0f, 1.9f, 0.0f, 1.0f};

TEST(SamplerTest, GreedyIsArgmax) {
  SamplingParams p;
  p.temperature = 0.0f;
  for (uint64_t step = 0; step < 10; ++step) {
    EXPECT_EQ(SampleToken(kLogits.data(), kLogits.size(), p, step * 7, step), 1);
  }
  EXPECT_EQ(Argmax(kLogits.data(), kLogits.size()), 1);
  const std::vector<float> ties = {1.0f, 3.0f, 3.0f};
  EXPECT_EQ(Argmax(ties.data(), 3), 1);  // lowest index wins a tie
}

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  SamplingParams k1;
  k1.temperature = 1.5f;
  k1.top_k = 1;
  SamplingParams p_tiny;
  p_tiny.temperature = 1.5f;
  p_tiny.top_p = 1e-6f;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    EXPECT_EQ(SampleToken(kLogits.data(), kLogits.size(), k1, seed, seed % 5), 1);
    EXPECT_EQ(SampleToken(kLogits.data(), kLogits.size(), p_tiny, seed, seed % 5), 1);
  }
}

TEST(SamplerTest, TopKAndTopPRestrictTheCandidates) {
  SamplingParams k2;
  k2.top_k = 2;  // tokens 1 and 3
  SamplingParams p;
  p.top_p = 0.5f;  // softmax(kLogits): p(1) ~ .38, p(3) ~ .34 -> {1, 3}
  for (uint64_t seed = 0; seed < 500; ++seed) {
    const int32_t a = SampleToken(kLogits.data(), kLogits.size(), k2, seed, 0);
    EXPECT_TRUE(a == 1 || a == 3) << a;
    const int32_t b = SampleToken(kLogits.data(), kLogits.size(), p, seed, 0);
    EXPECT_TRUE(b == 1 || b == 3) << b;
  }
}

TEST(SamplerTest, SameSeedSameDrawDifferentSeedsDiffer) {
  SamplingParams p;
  p.temperature = 1.0f;
  std::vector<float> flat(64, 0.0f);  // uniform over 64 tokens
  int differ = 0;
  for (uint64_t step = 0; step < 200; ++step) {
    const int32_t a = SampleToken(flat.data(), flat.size(), p, 42, step);
    EXPECT_EQ(a, SampleToken(flat.data(), flat.size(), p, 42, step));
    if (a != SampleToken(flat.data(), flat.size(), p, 43, step)) ++differ;
  }
  EXPECT_GT(differ, 150);  // expected ~197 of 200
  EXPECT_EQ(CounterUniform(7, 3), CounterUniform(7, 3));
  EXPECT_NE(CounterUniform(7, 3), CounterUniform(7, 4));
  EXPECT_NE(CounterUniform(7, 3), CounterUniform(8, 3));
}

TEST(SamplerTest, TemperatureSamplingFollowsSoftmax) {
  for (float temperature : {1.0f, 0.7f}) {
    SamplingParams p;
    p.temperature = temperature;
    const int n = 40000;
    std::vector<int> counts(kLogits.size(), 0);
    for (int i = 0; i < n; ++i) {
      // Many requests (seeds) at many steps, as the engine would draw them.
      ++counts[SampleToken(kLogits.data(), kLogits.size(), p, 1000 + i / 8, i % 8)];
    }
    double z = 0;
    for (float l : kLogits) z += std::exp(l / temperature);
    for (size_t j = 0; j < kLogits.size(); ++j) {
      const double want = std::exp(kLogits[j] / temperature) / z;
      EXPECT_NEAR(counts[j] / double(n), want, 0.01) << "token " << j << " T " << temperature;
    }
  }
}

TEST(SamplerTest, UniformIsInUnitInterval) {
  double sum = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    const double u = CounterUniform(i * 31, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

}  // namespace
}  // namespace dpinfer::engine
