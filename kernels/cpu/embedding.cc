// Token embedding lookup on the CPU: a row copy (optionally scaled) per token.
#include <cstring>

#include "common/status.h"
#include "kernels/cpu/cpu_ops.h"

namespace dpinfer::kernels::cpu {

void Embedding(const EmbeddingArgs& a) {
  CHECK(a.ids != nullptr && a.table != nullptr && a.out != nullptr);
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const int32_t id = a.ids[t];
    CHECK(id >= 0 && id < a.vocab);
    const float* row = a.table + static_cast<int64_t>(id) * a.hidden;
    float* out = a.out + t * a.hidden;
    if (a.scale == 1.0f) {
      std::memcpy(out, row, sizeof(float) * a.hidden);
    } else {
      for (int64_t j = 0; j < a.hidden; ++j) out[j] = row[j] * a.scale;
    }
  }
}

}  // namespace dpinfer::kernels::cpu
