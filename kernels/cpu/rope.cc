// Rotary position embedding on the CPU, HF's rotate-half convention (the first and second halves
// of a head form the rotated pairs, not adjacent elements as in the original GPT-J layout).
// Frequencies follow HF's fp32 arithmetic: inv_freq[i] = 1 / theta^(2i/d), angle = pos * inv_freq.
#include <cmath>
#include <vector>

#include "common/status.h"
#include "kernels/cpu/cpu_ops.h"

namespace dpinfer::kernels::cpu {
namespace {

void RotateHeads(float* x, int64_t num_heads, int64_t head_dim, const float* cos_v,
                 const float* sin_v) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < num_heads; ++h) {
    float* v = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = v[i];
      const float x2 = v[i + half];
      v[i] = x1 * cos_v[i] - x2 * sin_v[i];
      v[i + half] = x2 * cos_v[i] + x1 * sin_v[i];
    }
  }
}

}  // namespace

void Rope(const RopeArgs& a) {
  CHECK(a.head_dim % 2 == 0 && a.positions != nullptr);
  const int64_t half = a.head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] =
        a.inv_freq != nullptr
            ? a.inv_freq[i]
            : 1.0f / std::pow(a.theta, static_cast<float>(2 * i) / static_cast<float>(a.head_dim));
  }
#pragma omp parallel for schedule(static) if (a.num_tokens > 16)
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    std::vector<float> cos_v(half), sin_v(half);
    const float pos = static_cast<float>(a.positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos_v[i] = std::cos(angle);
      sin_v[i] = std::sin(angle);
    }
    if (a.q != nullptr) {
      RotateHeads(a.q + t * a.num_heads * a.head_dim, a.num_heads, a.head_dim, cos_v.data(),
                  sin_v.data());
    }
    if (a.k != nullptr) {
      RotateHeads(a.k + t * a.num_kv_heads * a.head_dim, a.num_kv_heads, a.head_dim, cos_v.data(),
                  sin_v.data());
    }
  }
}

}  // namespace dpinfer::kernels::cpu
