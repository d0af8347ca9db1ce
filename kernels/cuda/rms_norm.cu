// RMSNorm on the GPU, HF LlamaRMSNorm in fp32: one block per row, the sum of squares reduced in
// the block, then y = w * (x * inv_rms) exactly as the CPU twin rounds it. The fused variant also
// adds the block's output into the residual stream first, saving a separate pass over the row.
// Both store fp32, or bf16 for the bf16 path (fast_ops.h: RmsNormToBf16, AddRmsNormToBf16).
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/fast_ops.h"
#include "kernels/cuda/reduce.cuh"

namespace dpinfer::kernels::gpu {
namespace {

constexpr int kThreads = 256;

// The stored value: fp32 as is, or rounded once to bf16 (the bf16 path's GEMM input).
__device__ __forceinline__ void Store(float* p, float v) { *p = v; }
__device__ __forceinline__ void Store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <typename Out>
__global__ void RmsNormKernel(const float* __restrict__ x, const float* __restrict__ w, Out* y,
                              int64_t d, float eps) {
  __shared__ float scratch[33];
  const float* xr = x + blockIdx.x * d;
  Out* yr = y + blockIdx.x * d;
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) ss += xr[j] * xr[j];
  ss = BlockSum(ss, scratch);
  const float inv_rms = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) Store(yr + j, w[j] * (xr[j] * inv_rms));
}

// Each thread reads back only the residual elements it wrote itself, so no barrier is needed
// between the add and the normalization, and out may alias x.
template <typename Out>
__global__ void FusedAddRmsNormKernel(float* residual, const float* x, const float* __restrict__ w,
                                      Out* out, int64_t d, float eps, float x_scale) {
  __shared__ float scratch[33];
  float* rr = residual + blockIdx.x * d;
  const float* xr = x + blockIdx.x * d;
  Out* outr = out + blockIdx.x * d;
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float r = rr[j] + xr[j] * x_scale;
    rr[j] = r;
    ss += r * r;
  }
  ss = BlockSum(ss, scratch);
  const float inv_rms = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) Store(outr + j, w[j] * (rr[j] * inv_rms));
}

}  // namespace

cudaError_t RmsNorm(cudaStream_t stream, const RmsNormArgs& a) {
  if (a.x == nullptr || a.w == nullptr || a.y == nullptr || a.d <= 0 || a.m < 0) {
    return cudaErrorInvalidValue;
  }
  if (a.m == 0) return cudaSuccess;
  RmsNormKernel<float><<<a.m, kThreads, 0, stream>>>(a.x, a.w, a.y, a.d, a.eps);
  return cudaGetLastError();
}

cudaError_t FusedAddRmsNorm(cudaStream_t stream, const FusedAddRmsNormArgs& a) {
  if (a.residual == nullptr || a.x == nullptr || a.w == nullptr || a.out == nullptr || a.d <= 0 ||
      a.m < 0) {
    return cudaErrorInvalidValue;
  }
  if (a.m == 0) return cudaSuccess;
  FusedAddRmsNormKernel<float>
      <<<a.m, kThreads, 0, stream>>>(a.residual, a.x, a.w, a.out, a.d, a.eps, a.x_scale);
  return cudaGetLastError();
}

cudaError_t RmsNormToBf16(cudaStream_t stream, const float* x, const float* w, __nv_bfloat16* out,
                          int64_t m, int64_t d, float eps) {
  if (x == nullptr || w == nullptr || out == nullptr || d <= 0 || m < 0) {
    return cudaErrorInvalidValue;
  }
  if (m == 0) return cudaSuccess;
  RmsNormKernel<__nv_bfloat16><<<m, kThreads, 0, stream>>>(x, w, out, d, eps);
  return cudaGetLastError();
}

cudaError_t AddRmsNormToBf16(cudaStream_t stream, float* residual, const float* x, const float* w,
                             __nv_bfloat16* out, int64_t m, int64_t d, float eps, float x_scale) {
  if (residual == nullptr || x == nullptr || w == nullptr || out == nullptr || d <= 0 || m < 0) {
    return cudaErrorInvalidValue;
  }
  if (m == 0) return cudaSuccess;
  FusedAddRmsNormKernel<__nv_bfloat16>
      <<<m, kThreads, 0, stream>>>(residual, x, w, out, d, eps, x_scale);
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
