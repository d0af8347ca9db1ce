// Token embedding lookup on the CPU: a row copy per token.
#include <cstring>

#include "common/status.h"
#include "kernels/cpu/cpu_ops.h"

namespace dpinfer::kernels::cpu {

void Embedding(const EmbeddingArgs& a) {
  CHECK(a.ids != nullptr && a.table != nullptr && a.out != nullptr);
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const int32_t id = a.ids[t];
    CHECK(id >= 0 && id < a.vocab);
    std::memcpy(a.out + t * a.hidden, a.table + static_cast<int64_t>(id) * a.hidden,
                sizeof(float) * a.hidden);
  }
}

}  // namespace dpinfer::kernels::cpu
