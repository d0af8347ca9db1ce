// Elementwise ops on the GPU: the (scaled) residual add, Linear's bias, the logits division, and
// the fp32 <-> bf16 conversions the bf16 engine uses. Grid-stride loops, so one launch covers any
// size.
#include <algorithm>

#include "kernels/cuda/cuda_ops.h"

namespace dpinfer::kernels::gpu {
namespace {

constexpr int kThreads = 256;

int64_t Blocks(int64_t total) {
  return std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t{1} << 16);
}

__device__ __forceinline__ int64_t Start() {
  return blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
}
__device__ __forceinline__ int64_t Stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

__global__ void AddKernel(const float* a, const float* b, float* y, int64_t n, float b_scale) {
  // Unfused multiply-add, as the CPU twin rounds it.
  for (int64_t i = Start(); i < n; i += Stride()) y[i] = __fadd_rn(a[i], __fmul_rn(b[i], b_scale));
}

__global__ void AddBiasKernel(float* y, const float* __restrict__ bias, int64_t m, int64_t n) {
  for (int64_t i = Start(); i < m * n; i += Stride()) y[i] += bias[i % n];
}

__global__ void Fp32ToBf16Kernel(const float* __restrict__ x, __nv_bfloat16* __restrict__ y,
                                 int64_t n) {
  for (int64_t i = Start(); i < n; i += Stride()) y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void Bf16ToFp32Kernel(const __nv_bfloat16* __restrict__ x, float* __restrict__ y,
                                 int64_t n) {
  for (int64_t i = Start(); i < n; i += Stride()) y[i] = __bfloat162float(x[i]);
}

__global__ void DivideScalarKernel(float* x, int64_t n, float divisor) {
  for (int64_t i = Start(); i < n; i += Stride()) x[i] = __fdiv_rn(x[i], divisor);
}

}  // namespace

cudaError_t Add(cudaStream_t stream, const AddArgs& a) {
  if (a.a == nullptr || a.b == nullptr || a.y == nullptr) return cudaErrorInvalidValue;
  if (a.n == 0) return cudaSuccess;
  AddKernel<<<Blocks(a.n), kThreads, 0, stream>>>(a.a, a.b, a.y, a.n, a.b_scale);
  return cudaGetLastError();
}

cudaError_t AddBias(cudaStream_t stream, float* y, const float* bias, int64_t m, int64_t n) {
  if (y == nullptr || bias == nullptr) return cudaErrorInvalidValue;
  if (m * n == 0) return cudaSuccess;
  AddBiasKernel<<<Blocks(m * n), kThreads, 0, stream>>>(y, bias, m, n);
  return cudaGetLastError();
}

cudaError_t Fp32ToBf16(cudaStream_t stream, const float* x, __nv_bfloat16* y, int64_t n) {
  if (x == nullptr || y == nullptr) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  Fp32ToBf16Kernel<<<Blocks(n), kThreads, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t Bf16ToFp32(cudaStream_t stream, const __nv_bfloat16* x, float* y, int64_t n) {
  if (x == nullptr || y == nullptr) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  Bf16ToFp32Kernel<<<Blocks(n), kThreads, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t DivideScalar(cudaStream_t stream, float* x, int64_t n, float divisor) {
  if (x == nullptr) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  DivideScalarKernel<<<Blocks(n), kThreads, 0, stream>>>(x, n, divisor);
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
