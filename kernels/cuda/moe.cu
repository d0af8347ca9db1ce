// Mixture-of-experts pieces on the GPU. For now the combine only: routing stays on the host (the
// [tokens, experts] router logits are tiny) and the experts run as one GEMM each over the rows
// routed to them, gathered by the embedding kernel; this adds each token's expert outputs back,
// weighted, in one launch instead of one per (token, expert) pair.
#include "kernels/cuda/cuda_ops.h"

namespace dpinfer::kernels::gpu {
namespace {

// One block per token; threads stride over hidden. Unfused multiply-add, as the CPU twin rounds.
__global__ void MoeCombineKernel(const float* __restrict__ expert_out,
                                 const int32_t* __restrict__ rows,
                                 const float* __restrict__ weights, float* __restrict__ out,
                                 int64_t top_k, int64_t hidden) {
  const int64_t t = blockIdx.x;
  const int32_t* r = rows + t * top_k;
  const float* w = weights + t * top_k;
  for (int64_t d = threadIdx.x; d < hidden; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < top_k; ++j) {
      acc = __fadd_rn(acc, __fmul_rn(expert_out[static_cast<int64_t>(r[j]) * hidden + d], w[j]));
    }
    out[t * hidden + d] = acc;
  }
}

}  // namespace

cudaError_t MoeCombine(cudaStream_t stream, const MoeCombineArgs& a) {
  if (a.expert_out == nullptr || a.rows == nullptr || a.weights == nullptr || a.out == nullptr ||
      a.top_k <= 0) {
    return cudaErrorInvalidValue;
  }
  if (a.num_tokens == 0 || a.hidden == 0) return cudaSuccess;
  MoeCombineKernel<<<a.num_tokens, 256, 0, stream>>>(a.expert_out, a.rows, a.weights, a.out,
                                                     a.top_k, a.hidden);
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
