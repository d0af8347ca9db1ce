// Paged KV cache write and causal grouped-query attention on the CPU. Every query token is handled
// on its own (its sequence's block table, its position), so one flat batch can mix prefill chunks
// of several prompts with single-token decodes, and a token's result never depends on how its
// sequence was chunked or batched.
#include <cmath>
#include <cstring>
#include <vector>

#include "common/status.h"
#include "kernels/cpu/cpu_ops.h"

namespace dpinfer::kernels::cpu {

void CacheWrite(const CacheWriteArgs& a) {
  const int64_t row = a.num_kv_heads * a.head_dim;  // one token's keys (or values)
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const int64_t slot = a.slot_mapping[t];
    CHECK(slot >= 0);
    std::memcpy(a.k_cache + slot * row, a.k + t * row, sizeof(float) * row);
    std::memcpy(a.v_cache + slot * row, a.v + t * row, sizeof(float) * row);
  }
}

void PagedAttention(const PagedAttentionArgs& a) {
  CHECK(a.num_kv_heads > 0 && a.num_heads % a.num_kv_heads == 0 && a.block_size > 0);
  const int64_t group = a.num_heads / a.num_kv_heads;
  const int64_t kv_row = a.num_kv_heads * a.head_dim;
  // Threads only pay off when there is real work (see linear.cc): count the multiply-adds.
  int64_t work = 0;
  for (int64_t t = 0; t < a.num_tokens; ++t)
    work += (a.positions[t] + 1) * a.num_heads * a.head_dim;
    // Dynamic schedule: a late prefill token attends to many more keys than an early one.
#pragma omp parallel if (work >= (int64_t{1} << 17))
  {
    std::vector<float> scores;
#pragma omp for collapse(2) schedule(dynamic, 4)
    for (int64_t t = 0; t < a.num_tokens; ++t) {
      for (int64_t h = 0; h < a.num_heads; ++h) {
        const int64_t kvh = h / group;
        const int32_t* table = a.block_tables + a.token_seq[t] * a.max_blocks_per_seq;
        const int64_t len = static_cast<int64_t>(a.positions[t]) + 1;  // keys 0..position
        CHECK(len <= a.max_blocks_per_seq * a.block_size);
        const float* q = a.q + (t * a.num_heads + h) * a.head_dim;
        scores.resize(len);
        float max_s = -INFINITY;
        for (int64_t j = 0; j < len; ++j) {
          const int64_t slot =
              static_cast<int64_t>(table[j / a.block_size]) * a.block_size + j % a.block_size;
          const float* k = a.k_cache + slot * kv_row + kvh * a.head_dim;
          scores[j] = Dot(q, k, a.head_dim) * a.scale;
          max_s = scores[j] > max_s ? scores[j] : max_s;
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < len; ++j) {
          scores[j] = std::exp(scores[j] - max_s);
          sum += scores[j];
        }
        const float inv = 1.0f / sum;
        float* out = a.out + (t * a.num_heads + h) * a.head_dim;
        for (int64_t d = 0; d < a.head_dim; ++d) out[d] = 0.0f;
        for (int64_t j = 0; j < len; ++j) {
          const int64_t slot =
              static_cast<int64_t>(table[j / a.block_size]) * a.block_size + j % a.block_size;
          const float* v = a.v_cache + slot * kv_row + kvh * a.head_dim;
          const float p = scores[j] * inv;
          for (int64_t d = 0; d < a.head_dim; ++d) out[d] += p * v[d];
        }
      }
    }
  }
}

}  // namespace dpinfer::kernels::cpu
