// Rotary position embedding on the GPU, HF rotate-half convention, in place. One block per token;
// threads walk the (head, pair) grid of q and then k. The frequency table comes from the host
// (computed there with the CPU twin's std::pow) because a 1-ulp difference in inv_freq becomes a
// visible angle error at positions in the thousands. The products are kept unfused (__fmul_rn) so
// the rotation rounds as the CPU's does.
#include "kernels/cuda/cuda_ops.h"

namespace dpinfer::kernels::gpu {
namespace {

constexpr int kThreads = 128;

__device__ __forceinline__ void RotatePair(float* v, int64_t i, int64_t half, float c, float s) {
  const float x1 = v[i];
  const float x2 = v[i + half];
  v[i] = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
  v[i + half] = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
}

__global__ void RopeKernel(float* q, float* k, const int32_t* __restrict__ positions,
                           const float* __restrict__ inv_freq, int64_t num_heads,
                           int64_t num_kv_heads, int64_t head_dim) {
  const int64_t t = blockIdx.x;
  const int64_t half = head_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  const int64_t q_pairs = q != nullptr ? num_heads * half : 0;
  const int64_t k_pairs = k != nullptr ? num_kv_heads * half : 0;
  for (int64_t p = threadIdx.x; p < q_pairs + k_pairs; p += blockDim.x) {
    const bool is_q = p < q_pairs;
    const int64_t local = is_q ? p : p - q_pairs;
    const int64_t h = local / half, i = local % half;
    const float angle = __fmul_rn(pos, inv_freq[i]);
    const float c = cosf(angle), s = sinf(angle);
    float* v = is_q ? q + (t * num_heads + h) * head_dim : k + (t * num_kv_heads + h) * head_dim;
    RotatePair(v, i, half, c, s);
  }
}

}  // namespace

cudaError_t Rope(cudaStream_t stream, const RopeArgs& a, const float* inv_freq) {
  if (a.head_dim <= 0 || a.head_dim % 2 != 0 || a.positions == nullptr || inv_freq == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (a.num_tokens == 0 || (a.q == nullptr && a.k == nullptr)) return cudaSuccess;
  RopeKernel<<<a.num_tokens, kThreads, 0, stream>>>(a.q, a.k, a.positions, inv_freq, a.num_heads,
                                                    a.num_kv_heads, a.head_dim);
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
