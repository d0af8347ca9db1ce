// The bf16 serving path's row-wise kernels (fast_ops.h): the bf16 embedding lookup, RMSNorm, the
// residual add fused into the next RMSNorm, and the fused-gate/up SiLU·mul, each writing its result
// as bf16 because the next op is a bf16 GEMM that would otherwise need a separate conversion pass.
// The arithmetic is the fp32 twins' (rms_norm.cu, activation.cu); only the final store rounds.
#include <algorithm>

#include "kernels/cuda/fast_ops.h"
#include "kernels/cuda/reduce.cuh"

namespace dpinfer::kernels::gpu {
namespace {

constexpr int kThreads = 256;

__global__ void RmsNormToBf16Kernel(const float* __restrict__ x, const float* __restrict__ w,
                                    __nv_bfloat16* __restrict__ out, int64_t d, float eps) {
  __shared__ float scratch[33];
  const float* xr = x + blockIdx.x * d;
  __nv_bfloat16* outr = out + blockIdx.x * d;
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) ss += xr[j] * xr[j];
  ss = BlockSum(ss, scratch);
  const float inv_rms = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    outr[j] = __float2bfloat16_rn(w[j] * (xr[j] * inv_rms));
  }
}

// As FusedAddRmsNormKernel: each thread re-reads only the residual elements it wrote.
__global__ void AddRmsNormToBf16Kernel(float* __restrict__ residual, const float* __restrict__ x,
                                       const float* __restrict__ w, __nv_bfloat16* __restrict__ out,
                                       int64_t d, float eps, float x_scale) {
  __shared__ float scratch[33];
  float* rr = residual + blockIdx.x * d;
  const float* xr = x + blockIdx.x * d;
  __nv_bfloat16* outr = out + blockIdx.x * d;
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float r = rr[j] + xr[j] * x_scale;
    rr[j] = r;
    ss += r * r;
  }
  ss = BlockSum(ss, scratch);
  const float inv_rms = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    outr[j] = __float2bfloat16_rn(w[j] * (rr[j] * inv_rms));
  }
}

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

cudaError_t RmsNormToBf16(cudaStream_t stream, const float* x, const float* w, __nv_bfloat16* out,
                          int64_t m, int64_t d, float eps) {
  if (x == nullptr || w == nullptr || out == nullptr || d <= 0 || m < 0) {
    return cudaErrorInvalidValue;
  }
  if (m == 0) return cudaSuccess;
  RmsNormToBf16Kernel<<<m, kThreads, 0, stream>>>(x, w, out, d, eps);
  return cudaGetLastError();
}

cudaError_t AddRmsNormToBf16(cudaStream_t stream, float* residual, const float* x, const float* w,
                             __nv_bfloat16* out, int64_t m, int64_t d, float eps, float x_scale) {
  if (residual == nullptr || x == nullptr || w == nullptr || out == nullptr || d <= 0 || m < 0) {
    return cudaErrorInvalidValue;
  }
  if (m == 0) return cudaSuccess;
  AddRmsNormToBf16Kernel<<<m, kThreads, 0, stream>>>(residual, x, w, out, d, eps, x_scale);
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
