// The Llama MLP's activation on the GPU: out = silu(gate) * up, elementwise, rounded as the CPU
// twin writes it ((g / (1 + exp(-g))) * up, no fast-math).
#include <algorithm>

#include "kernels/cuda/cuda_ops.h"

namespace dpinfer::kernels::gpu {
namespace {

__global__ void SiluMulKernel(const float* gate, const float* up, float* out, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = (g / (1.0f + expf(-g))) * up[i];
  }
}

}  // namespace

cudaError_t SiluMul(cudaStream_t stream, const SiluMulArgs& a) {
  if (a.gate == nullptr || a.up == nullptr || a.out == nullptr) return cudaErrorInvalidValue;
  const int64_t total = a.m * a.n;
  if (total == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t{1} << 16);
  SiluMulKernel<<<blocks, kThreads, 0, stream>>>(a.gate, a.up, a.out, total);
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
