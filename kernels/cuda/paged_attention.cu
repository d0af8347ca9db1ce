// Paged KV cache write and causal grouped-query attention on the GPU.
//
// Attention runs one block per (query token, query head), the decode-style layout: prefill tokens
// are handled the same way, each attending to keys [0, position] of its own sequence through the
// block table, so a flat batch can mix prefill chunks and decodes. The block's warps split the
// keys in tiles of 32; each warp keeps an online softmax (running max, running sum, the weighted
// sum of values spread over its lanes, head_dim / 32 per lane), and the warps' states are merged
// at the end. Long contexts are not split across blocks yet (a later split-KV kernel), nor does
// prefill use tensor cores.
#include <cmath>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/reduce.cuh"

namespace dpinfer::kernels::gpu {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxPerLane = 8;  // head_dim <= 256
constexpr int64_t kMaxHeadDim = 32 * kMaxPerLane;

__global__ void CacheWriteKernel(const float* __restrict__ k, const float* __restrict__ v,
                                 float* __restrict__ k_cache, float* __restrict__ v_cache,
                                 const int32_t* __restrict__ slot_mapping, int64_t row) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  if (slot < 0) return;  // a padding token: nothing to store
  for (int64_t j = threadIdx.x; j < row; j += blockDim.x) {
    k_cache[slot * row + j] = k[t * row + j];
    v_cache[slot * row + j] = v[t * row + j];
  }
}

__global__ void __launch_bounds__(kWarps * 32)
    PagedAttentionKernel(const float* __restrict__ q, const float* __restrict__ k_cache,
                         const float* __restrict__ v_cache,
                         const int32_t* __restrict__ block_tables,
                         const int32_t* __restrict__ token_seq,
                         const int32_t* __restrict__ positions, float* __restrict__ out,
                         int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                         int64_t block_size, int64_t max_blocks_per_seq, float scale) {
  __shared__ float sm_max[kWarps], sm_sum[kWarps];
  __shared__ float sm_acc[kWarps][kMaxHeadDim];
  const int64_t t = blockIdx.x;
  const int64_t h = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t kvh = h / (num_heads / num_kv_heads);
  const int64_t kv_row = num_kv_heads * head_dim;
  const int32_t* table = block_tables + static_cast<int64_t>(token_seq[t]) * max_blocks_per_seq;
  const int64_t len = static_cast<int64_t>(positions[t]) + 1;
  float* o = out + (t * num_heads + h) * head_dim;
  if (len < 1 || len > max_blocks_per_seq * block_size) {
    // A position the block table cannot hold: poison rather than read past the table.
    for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) o[d] = NAN;
    return;
  }

  // The query goes to shared memory: every lane reads all of it, one key each.
  __shared__ __align__(16) float sm_q[kMaxHeadDim];
  const float* qr = q + (t * num_heads + h) * head_dim;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) sm_q[d] = qr[d];
  __syncthreads();
  const bool vec4 = head_dim % 4 == 0;  // then every key row is 16-byte aligned

  float acc[kMaxPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) acc[i] = 0.0f;
  float run_max = -INFINITY, run_sum = 0.0f;
  // A warp takes 32 keys at a time: lane l scores key base + l on its own (a whole key row, in
  // 16-byte loads), so the max, the exponentials and the rescaling happen once per 32 keys rather
  // than once per key; then the 32 value rows are summed with the lanes across head_dim.
  for (int64_t base = warp * 32; base < len; base += kWarps * 32) {
    const int64_t j = base + lane;
    float s = -INFINITY;
    int64_t slot = 0;
    if (j < len) {
      slot = static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size;
      const float* kr = k_cache + slot * kv_row + kvh * head_dim;
      float dot = 0.0f;
      if (vec4) {
        for (int64_t d = 0; d < head_dim; d += 4) {
          const float4 kv = *reinterpret_cast<const float4*>(kr + d);
          const float4 qv = *reinterpret_cast<const float4*>(sm_q + d);
          dot += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
        }
      } else {
        for (int64_t d = 0; d < head_dim; ++d) dot += sm_q[d] * kr[d];
      }
      s = dot * scale;
    }
    const float new_max = fmaxf(run_max, WarpMax(s));  // finite: key `base` exists
    const float correction = expf(run_max - new_max);  // 0 on the first tile (run_max = -inf)
    const float p = j < len ? expf(s - new_max) : 0.0f;
    run_sum = run_sum * correction + WarpSum(p);
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) acc[i] *= correction;
    const int n = static_cast<int>(len - base < 32 ? len - base : 32);
    for (int l = 0; l < n; ++l) {
      const float pl = __shfl_sync(0xffffffffu, p, l);
      const int64_t sl = __shfl_sync(0xffffffffu, slot, l);
      const float* vr = v_cache + sl * kv_row + kvh * head_dim;
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) {
        const int64_t d = lane + 32 * i;
        if (d < head_dim) acc[i] += pl * vr[d];
      }
    }
    run_max = new_max;
  }

  // Merge the warps: rescale each to the block-wide max. A warp that saw no key (len <= 32 * warp)
  // has max -inf and sum 0, so it contributes nothing.
  if (lane == 0) {
    sm_max[warp] = run_max;
    sm_sum[warp] = run_sum;
  }
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < head_dim) sm_acc[warp][d] = acc[i];
  }
  __syncthreads();
  float block_max = -INFINITY;
  for (int w = 0; w < kWarps; ++w) block_max = fmaxf(block_max, sm_max[w]);
  float weight[kWarps];
  float total = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = sm_sum[w] > 0.0f ? expf(sm_max[w] - block_max) : 0.0f;
    total += sm_sum[w] * weight[w];
  }
  const float inv_total = 1.0f / total;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float v = 0.0f;
    for (int w = 0; w < kWarps; ++w) v += sm_acc[w][d] * weight[w];
    o[d] = v * inv_total;
  }
}

}  // namespace

cudaError_t CacheWrite(cudaStream_t stream, const CacheWriteArgs& a) {
  if (a.k == nullptr || a.v == nullptr || a.k_cache == nullptr || a.v_cache == nullptr ||
      a.slot_mapping == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (a.num_tokens == 0) return cudaSuccess;
  CacheWriteKernel<<<a.num_tokens, 128, 0, stream>>>(a.k, a.v, a.k_cache, a.v_cache, a.slot_mapping,
                                                     a.num_kv_heads * a.head_dim);
  return cudaGetLastError();
}

cudaError_t PagedAttention(cudaStream_t stream, const PagedAttentionArgs& a) {
  if (a.q == nullptr || a.k_cache == nullptr || a.v_cache == nullptr || a.block_tables == nullptr ||
      a.token_seq == nullptr || a.positions == nullptr || a.out == nullptr || a.num_kv_heads <= 0 ||
      a.num_heads % a.num_kv_heads != 0 || a.block_size <= 0 || a.head_dim <= 0 ||
      a.head_dim > kMaxHeadDim || a.num_heads > 65535) {
    return cudaErrorInvalidValue;
  }
  if (a.num_tokens == 0 || a.num_heads == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(a.num_tokens), static_cast<unsigned>(a.num_heads));
  PagedAttentionKernel<<<grid, kWarps * 32, 0, stream>>>(
      a.q, a.k_cache, a.v_cache, a.block_tables, a.token_seq, a.positions, a.out, a.num_heads,
      a.num_kv_heads, a.head_dim, a.block_size, a.max_blocks_per_seq, a.scale);
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
