// Token embedding lookup on the GPU: one block per token copies (and optionally scales) its row.
// Ids are validated before they reach the kernel; one that is out of range anyway yields a NaN row
// rather than a read outside the table, so the mistake shows up in the logits.
#include <cmath>

#include "kernels/cuda/cuda_ops.h"

namespace dpinfer::kernels::gpu {
namespace {

__global__ void EmbeddingKernel(const int32_t* __restrict__ ids, const float* __restrict__ table,
                                float* __restrict__ out, int64_t vocab, int64_t hidden,
                                float scale) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  float* o = out + t * hidden;
  if (id < 0 || id >= vocab) {
    for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) o[j] = NAN;
    return;
  }
  const float* row = table + static_cast<int64_t>(id) * hidden;
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
    o[j] = scale == 1.0f ? row[j] : row[j] * scale;
  }
}

}  // namespace

cudaError_t Embedding(cudaStream_t stream, const EmbeddingArgs& a) {
  if (a.ids == nullptr || a.table == nullptr || a.out == nullptr) return cudaErrorInvalidValue;
  if (a.num_tokens == 0 || a.hidden == 0) return cudaSuccess;
  EmbeddingKernel<<<a.num_tokens, 256, 0, stream>>>(a.ids, a.table, a.out, a.vocab, a.hidden,
                                                    a.scale);
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
