// RMSNorm on the CPU, as HF LlamaRMSNorm computes it in fp32: x * rsqrt(mean(x^2) + eps) * w.
#include <cmath>

#include "common/status.h"
#include "kernels/cpu/cpu_ops.h"

namespace dpinfer::kernels::cpu {

void RmsNorm(const RmsNormArgs& a) {
  CHECK(a.x != nullptr && a.w != nullptr && a.y != nullptr && a.d > 0);
#pragma omp parallel for schedule(static) if (a.m > 16)
  for (int64_t i = 0; i < a.m; ++i) {
    const float* x = a.x + i * a.d;
    float* y = a.y + i * a.d;
    const float mean_sq = Dot(x, x, a.d) / static_cast<float>(a.d);
    const float inv_rms = 1.0f / std::sqrt(mean_sq + a.eps);
    for (int64_t j = 0; j < a.d; ++j) y[j] = a.w[j] * (x[j] * inv_rms);
  }
}

}  // namespace dpinfer::kernels::cpu
