// Row-wise softmax on the CPU (max-subtracted, fp32), the form attention and sampling share.
#include <cmath>

#include "common/status.h"
#include "kernels/cpu/cpu_ops.h"

namespace dpinfer::kernels::cpu {
namespace {

void SoftmaxRow(const float* x, float* y, int64_t n) {
  float max_v = x[0];
  for (int64_t j = 1; j < n; ++j) max_v = x[j] > max_v ? x[j] : max_v;
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    y[j] = std::exp(x[j] - max_v);
    sum += y[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) y[j] *= inv;
}

}  // namespace

void Softmax(const SoftmaxArgs& a) {
  CHECK(a.x != nullptr && a.y != nullptr && a.n > 0);
#pragma omp parallel for schedule(static) if (a.m > 16)
  for (int64_t i = 0; i < a.m; ++i) SoftmaxRow(a.x + i * a.n, a.y + i * a.n, a.n);
}

}  // namespace dpinfer::kernels::cpu
