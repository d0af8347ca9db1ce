// The bf16 serving path's element-wise kernels (fast_ops.h): the bf16 embedding lookup and the
// fused-gate/up SiLU·mul writing bf16 for the down GEMM. The arithmetic is the fp32 twins'
// (embedding.cu, activation.cu). The bf16-output RMSNorms live with their fp32 twins in
// rms_norm.cu.
#include <algorithm>

#include "kernels/cuda/fast_ops.h"

namespace dpinfer::kernels::gpu {
namespace {

constexpr int kThreads = 256;

__global__ void SiluMulFusedKernel(const __nv_bfloat16* __restrict__ gate_up,
                                   __nv_bfloat16* __restrict__ out, int64_t m, int64_t n) {
  const int64_t total = m * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / n, col = i % n;
    const float g = __bfloat162float(gate_up[row * 2 * n + col]);
    const float u = __bfloat162float(gate_up[row * 2 * n + n + col]);
    out[i] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
  }
}

__global__ void EmbeddingBf16Kernel(const int32_t* __restrict__ ids,
                                    const __nv_bfloat16* __restrict__ table,
                                    float* __restrict__ out, int64_t hidden, float scale) {
  const __nv_bfloat16* row = table + static_cast<int64_t>(ids[blockIdx.x]) * hidden;
  float* o = out + blockIdx.x * hidden;
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
    o[j] = __bfloat162float(row[j]) * scale;
  }
}

}  // namespace

cudaError_t EmbeddingBf16(cudaStream_t stream, const int32_t* ids, const __nv_bfloat16* table,
                          float* out, int64_t num_tokens, int64_t hidden, float scale) {
  if (ids == nullptr || table == nullptr || out == nullptr || hidden <= 0 || num_tokens < 0) {
    return cudaErrorInvalidValue;
  }
  if (num_tokens == 0) return cudaSuccess;
  EmbeddingBf16Kernel<<<num_tokens, kThreads, 0, stream>>>(ids, table, out, hidden, scale);
  return cudaGetLastError();
}

cudaError_t SiluMulFusedToBf16(cudaStream_t stream, const __nv_bfloat16* gate_up,
                               __nv_bfloat16* out, int64_t m, int64_t n) {
  if (gate_up == nullptr || out == nullptr || m < 0 || n <= 0) return cudaErrorInvalidValue;
  if (m == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((m * n + kThreads - 1) / kThreads, 65536);
  SiluMulFusedKernel<<<blocks, kThreads, 0, stream>>>(gate_up, out, m, n);
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
