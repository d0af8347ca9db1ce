// Linear (y = x @ W^T) on the CPU. Threads split the output features, never the reduction: each
// y[i, j] is one Dot over k in a fixed order, so a row's output does not depend on the batch.
#include "common/status.h"
#include "kernels/cpu/cpu_ops.h"

namespace dpinfer::kernels::cpu {

namespace {
constexpr int64_t kMinParallelWork = int64_t{1} << 18;  // multiply-adds
}  // namespace

void Linear(const LinearArgs& a) {
  CHECK(a.x != nullptr && a.w != nullptr && a.y != nullptr);
  // Tiles of output features: a tile's weight rows stay in cache while every input row streams
  // past them, instead of re-reading all of W once per row.
  constexpr int64_t kTile = 16;
  const int64_t num_tiles = (a.n + kTile - 1) / kTile;
  // Small products (a tiny model, a decode step of few rows) run on one thread: waking the team
  // costs more than the work, and far more on a loaded machine.
  const bool parallel = a.m * a.n * a.k >= kMinParallelWork;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t t = 0; t < num_tiles; ++t) {
    const int64_t j0 = t * kTile;
    const int64_t j1 = j0 + kTile < a.n ? j0 + kTile : a.n;
    for (int64_t i = 0; i < a.m; ++i) {
      const float* x = a.x + i * a.k;
      float* y = a.y + i * a.n;
      for (int64_t j = j0; j < j1; ++j) {
        float v = Dot(x, a.w + j * a.k, a.k);
        if (a.bias != nullptr) v += a.bias[j];
        y[j] = v;
      }
    }
  }
}

}  // namespace dpinfer::kernels::cpu
