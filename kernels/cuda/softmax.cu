// Row-wise softmax on the GPU, max-subtracted in fp32: one block per row (max, then the sum of
// exponentials, then the normalized write). y may alias x: each thread rewrites only what it read.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/reduce.cuh"

namespace dpinfer::kernels::gpu {
namespace {

__global__ void SoftmaxKernel(const float* x, float* y, int64_t n) {
  __shared__ float scratch[33];
  const float* xr = x + blockIdx.x * n;
  float* yr = y + blockIdx.x * n;
  float max_v = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) max_v = fmaxf(max_v, xr[j]);
  max_v = BlockMax(max_v, scratch);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) sum += expf(xr[j] - max_v);
  sum = BlockSum(sum, scratch);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = expf(xr[j] - max_v) * inv;
}

}  // namespace

cudaError_t Softmax(cudaStream_t stream, const SoftmaxArgs& a) {
  if (a.x == nullptr || a.y == nullptr || a.n <= 0) return cudaErrorInvalidValue;
  if (a.m == 0) return cudaSuccess;
  SoftmaxKernel<<<a.m, 256, 0, stream>>>(a.x, a.y, a.n);
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
