// Sampling (see sampler.h). Probabilities are computed in double so that the cumulative sums of
// top-p do not drift with vocab size.
#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace dpinfer::engine {

uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t GumbelRowKey(uint64_t seed, uint64_t step) {
  // Mixing twice keeps (seed, counter) and (seed + 1, counter - 1)-style neighbours unrelated.
  return Mix64(Mix64(seed) ^ Mix64(step ^ 0x5851f42d4c957f2dULL));
}

double CounterUniform(uint64_t seed, uint64_t counter) {
  const uint64_t bits = GumbelRowKey(seed, counter);
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);  // / 2^53
}

float GumbelNoise(uint64_t row_key, int64_t i) {
  const uint64_t bits = Mix64(row_key + static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ULL);
  // (k + 0.5) / 2^24 with 24 random bits: strictly inside (0, 1), so both logs are finite. fp32,
  // as on the GPU, where this runs for every vocabulary entry of every row each step.
  const float u = (static_cast<float>(bits >> 40) + 0.5f) * (1.0f / 16777216.0f);
  return -std::log(-std::log(u));
}

bool UsesGumbelSampling(float temperature, int32_t top_k, float top_p, int64_t vocab) {
  return temperature > 0.0f && (top_k <= 0 || top_k >= vocab) && top_p >= 1.0f;
}

int32_t Argmax(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

int32_t SampleToken(const float* logits, int64_t vocab, const SamplingParams& params, uint64_t seed,
                    uint64_t step) {
  if (params.temperature == 0.0f || params.top_k == 1) return Argmax(logits, vocab);
  if (UsesGumbelSampling(params.temperature, params.top_k, params.top_p, vocab)) {
    const uint64_t key = GumbelRowKey(seed, step);
    const float inv_t = 1.0f / params.temperature;
    int64_t best = 0;
    float best_score = -INFINITY;
    for (int64_t i = 0; i < vocab; ++i) {
      // Unfused, as the GPU computes it; -inf logits never win unless every logit is -inf.
      const float score = logits[i] * inv_t + GumbelNoise(key, i);
      if (score > best_score) {
        best_score = score;
        best = i;
      }
    }
    return static_cast<int32_t>(best);
  }
  // Candidates sorted by logit, descending; ties by index so the order is deterministic.
  std::vector<int32_t> idx(vocab);
  std::iota(idx.begin(), idx.end(), 0);
  const auto by_logit = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int64_t keep = vocab;
  if (params.top_k > 0 && params.top_k < vocab) {
    keep = params.top_k;
    std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), by_logit);
    idx.resize(keep);
  } else {
    std::sort(idx.begin(), idx.end(), by_logit);
  }
  // Softmax of logits / temperature over the kept candidates.
  const double inv_t = 1.0 / static_cast<double>(params.temperature);
  const double max_l = static_cast<double>(logits[idx[0]]) * inv_t;
  std::vector<double> probs(keep);
  double sum = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(static_cast<double>(logits[idx[i]]) * inv_t - max_l);
    sum += probs[i];
  }
  for (double& p : probs) p /= sum;
  // Nucleus: the smallest prefix whose probability reaches top_p (at least one token).
  if (params.top_p < 1.0f) {
    double cum = 0.0;
    int64_t n = 0;
    while (n < keep) {
      cum += probs[n++];
      if (cum >= static_cast<double>(params.top_p)) break;
    }
    keep = n;
  }
  double total = 0.0;
  for (int64_t i = 0; i < keep; ++i) total += probs[i];
  const double u = CounterUniform(seed, step) * total;
  double cum = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += probs[i];
    if (u < cum) return idx[i];
  }
  return idx[keep - 1];  // u rounded up to total
}

}  // namespace dpinfer::engine
