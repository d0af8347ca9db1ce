// Elementwise ops on the CPU: the SiLU-gated product of the Llama MLP and the residual add.
#include <cmath>

#include "common/status.h"
#include "kernels/cpu/cpu_ops.h"

namespace dpinfer::kernels::cpu {

void SiluMul(const SiluMulArgs& a) {
  CHECK(a.gate != nullptr && a.up != nullptr && a.out != nullptr);
  const int64_t total = a.m * a.n;
#pragma omp parallel for schedule(static) if (total > (1 << 16))
  for (int64_t i = 0; i < total; ++i) {
    const float g = a.gate[i];
    a.out[i] = (g / (1.0f + std::exp(-g))) * a.up[i];
  }
}

void Add(const AddArgs& a) {
  CHECK(a.a != nullptr && a.b != nullptr && a.y != nullptr);
#pragma omp parallel for schedule(static) if (a.n > (1 << 16))
  for (int64_t i = 0; i < a.n; ++i) a.y[i] = a.a[i] + a.b[i] * a.b_scale;
}

}  // namespace dpinfer::kernels::cpu
