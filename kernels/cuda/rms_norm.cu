// RMSNorm on the GPU, HF LlamaRMSNorm in fp32: the sum of squares reduced over the row, then
// y = w * (x * inv_rms) exactly as the CPU twin rounds it. The fused variant also adds the block's
// output into the residual stream first, saving a separate pass over the row. Both store fp32, or
// bf16 for the bf16 path (fast_ops.h: RmsNormToBf16, AddRmsNormToBf16).
//
// Fast path (d % 8 == 0, every pointer 16-byte aligned): each thread owns groups of 8 elements of
// one row (two float4 of fp32, one 16-byte bf16x8 store), holds them in registers between the sum
// of squares and the scaling, so the row is read from memory once and the residual written once.
// Rows of d <= 256 share a warp between several rows (a power-of-two lane segment per row);
// longer rows get one block per row (<= 512 threads) with 1 (d <= 2048), 2 (d <= 8192) or 4
// (d <= 16384) groups per thread. Anything else (odd sizes, unaligned pointers, longer rows)
// takes the generic strided kernel.
//
// Numerics: the element-wise arithmetic is the CPU twin's, expression for expression
// (r = residual + x * x_scale; inv_rms = 1 / sqrt(ss / d + eps); y = w * (x * inv_rms); one
// rounding to bf16). Only the order in which the sum of squares is added up depends on the launch
// shape (per-thread partial sums, then a shuffle tree), so it differs from the CPU's in the last
// bits, as it always has.
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/fast_ops.h"
#include "kernels/cuda/reduce.cuh"

namespace dpinfer::kernels::gpu {
namespace {

constexpr int kThreads = 256;     // generic kernel
constexpr int kSubThreads = 128;  // segmented (several rows per warp) kernel, at most
constexpr int kGroup = 8;         // elements per vector group

// The stored value: fp32 as is, or rounded once to bf16 (the bf16 path's GEMM input).
__device__ __forceinline__ void Store(float* p, float v) { *p = v; }
__device__ __forceinline__ void Store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// 8 consecutive floats at a 16-byte aligned p.
__device__ __forceinline__ void Load8(const float* p, float (&v)[kGroup]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
// The same through the read-only cache (the weights: read by every row, never written).
__device__ __forceinline__ void Load8Ldg(const float* p, float (&v)[kGroup]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void Store8(float* p, const float (&v)[kGroup]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
// Each value rounded to nearest even once (__floats2bfloat162_rn rounds both halves as
// __float2bfloat16_rn does), one 16-byte store.
__device__ __forceinline__ void Store8(__nv_bfloat16* p, const float (&v)[kGroup]) {
  union {
    __nv_bfloat162 h[4];
    uint4 u;
  } pack;
#pragma unroll
  for (int i = 0; i < 4; ++i) pack.h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = pack.u;
}

// One row per `seg` lanes. kSub: seg is a power of two <= 32 given by the host and a block holds
// blockDim.x / seg rows; otherwise one row per block, seg = blockDim.x (a multiple of 32). Lane l
// of a row owns groups l, l + seg, ..., up to K of them. kAdd: src is the residual, updated in
// place with x * x_scale first; otherwise src is the input x (and residual is unused).
// No pointer is __restrict__ but w: out may alias x or the residual (the fp32 ops allow it), which
// is safe because every thread loads all of its elements before it stores any of them. (That
// order also lets all of a thread's loads be in flight at once: a store between two loads that
// may alias would make the second wait for the first.)
template <int K, bool kSub, bool kAdd, typename Out>
__global__ void __launch_bounds__(K >= 2 ? 512 : 256)
    RmsNormVecKernel(float* residual, const float* x, const float* __restrict__ w, Out* out,
                     int64_t m, int64_t d, int seg, float eps, float x_scale) {
  int64_t row;
  int lane;
  if constexpr (kSub) {
    row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / seg) + threadIdx.x / seg;
    lane = threadIdx.x & (seg - 1);
  } else {
    row = blockIdx.x;
    lane = threadIdx.x;
    seg = blockDim.x;
  }
  const int64_t groups = d / kGroup;
  const bool valid = row < m;  // kSub: the last block's spare segments still join the shuffles
  const int64_t base = row * d;
  const float* src = kAdd ? residual : x;

  float v[K][kGroup], wv[K][kGroup];
  bool have[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int64_t g = lane + static_cast<int64_t>(k) * seg;
    have[k] = valid && g < groups;
  }
  // All loads first: the row (and x), then the weights.
  float xv[kAdd ? K : 1][kGroup];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (have[k]) {
      const int64_t off = base + (lane + static_cast<int64_t>(k) * seg) * kGroup;
      Load8(src + off, v[k]);
      if constexpr (kAdd) Load8(x + off, xv[k]);
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (have[k]) Load8Ldg(w + (lane + static_cast<int64_t>(k) * seg) * kGroup, wv[k]);
  }
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (have[k]) {
      if constexpr (kAdd) {
#pragma unroll
        for (int e = 0; e < kGroup; ++e) {
          const float r = v[k][e] + xv[k][e] * x_scale;
          v[k][e] = r;
        }
        Store8(residual + base + (lane + static_cast<int64_t>(k) * seg) * kGroup, v[k]);
      }
#pragma unroll
      for (int e = 0; e < kGroup; ++e) ss += v[k][e] * v[k][e];
    }
  }
  if constexpr (kSub) {
    for (int o = seg >> 1; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  } else {
    __shared__ float scratch[33];
    ss = BlockSum(ss, scratch);
  }
  const float inv_rms = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (have[k]) {
      float y[kGroup];
#pragma unroll
      for (int e = 0; e < kGroup; ++e) y[e] = wv[k][e] * (v[k][e] * inv_rms);
      Store8(out + base + (lane + static_cast<int64_t>(k) * seg) * kGroup, y);
    }
  }
}

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

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
int64_t RoundUp32(int64_t n) { return (n + 31) / 32 * 32; }

template <int K, bool kAdd, typename Out>
void LaunchPerRow(cudaStream_t stream, int64_t threads, float* residual, const float* x,
                  const float* w, Out* out, int64_t m, int64_t d, float eps, float x_scale) {
  RmsNormVecKernel<K, false, kAdd, Out><<<m, static_cast<int>(threads), 0, stream>>>(
      residual, x, w, out, m, d, static_cast<int>(threads), eps, x_scale);
}

// Both ops, both output types. kAdd: residual += x * x_scale, then normalize the residual;
// otherwise normalize x (residual unused).
template <bool kAdd, typename Out>
cudaError_t LaunchRmsNorm(cudaStream_t stream, float* residual, const float* x, const float* w,
                          Out* out, int64_t m, int64_t d, float eps, float x_scale) {
  const int64_t groups = d / kGroup;
  const bool vec = d % kGroup == 0 && groups <= 4 * 512 && Aligned16(x) && Aligned16(w) &&
                   Aligned16(out) && (!kAdd || Aligned16(residual));
  if (vec) {
    if (groups <= 32) {
      // Several rows per warp: `seg` lanes (a power of two) per row, one group each.
      int seg = 1;
      while (seg < groups) seg <<= 1;
      const int threads = static_cast<int>(std::min<int64_t>(kSubThreads, RoundUp32(m * seg)));
      const int64_t rows_per_block = threads / seg;
      const int64_t blocks = (m + rows_per_block - 1) / rows_per_block;
      RmsNormVecKernel<1, true, kAdd, Out>
          <<<blocks, threads, 0, stream>>>(residual, x, w, out, m, d, seg, eps, x_scale);
    } else if (groups <= 256) {  // d <= 2048: one group per thread
      LaunchPerRow<1, kAdd>(stream, RoundUp32(groups), residual, x, w, out, m, d, eps, x_scale);
    } else if (groups <= 1024) {  // d <= 8192: two per thread, <= 512 threads
      LaunchPerRow<2, kAdd>(stream, RoundUp32((groups + 1) / 2), residual, x, w, out, m, d, eps,
                            x_scale);
    } else {  // d <= 16384: four per thread, <= 512 threads (more registers, fewer blocks)
      LaunchPerRow<4, kAdd>(stream, RoundUp32((groups + 3) / 4), residual, x, w, out, m, d, eps,
                            x_scale);
    }
    return cudaGetLastError();
  }
  const int threads = static_cast<int>(std::min<int64_t>(kThreads, RoundUp32(d)));
  if constexpr (kAdd) {
    FusedAddRmsNormKernel<Out><<<m, threads, 0, stream>>>(residual, x, w, out, d, eps, x_scale);
  } else {
    RmsNormKernel<Out><<<m, threads, 0, stream>>>(x, w, out, d, eps);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t RmsNorm(cudaStream_t stream, const RmsNormArgs& a) {
  if (a.x == nullptr || a.w == nullptr || a.y == nullptr || a.d <= 0 || a.m < 0) {
    return cudaErrorInvalidValue;
  }
  if (a.m == 0) return cudaSuccess;
  return LaunchRmsNorm<false, float>(stream, nullptr, a.x, a.w, a.y, a.m, a.d, a.eps, 1.0f);
}

cudaError_t FusedAddRmsNorm(cudaStream_t stream, const FusedAddRmsNormArgs& a) {
  if (a.residual == nullptr || a.x == nullptr || a.w == nullptr || a.out == nullptr || a.d <= 0 ||
      a.m < 0) {
    return cudaErrorInvalidValue;
  }
  if (a.m == 0) return cudaSuccess;
  return LaunchRmsNorm<true, float>(stream, a.residual, a.x, a.w, a.out, a.m, a.d, a.eps,
                                    a.x_scale);
}

cudaError_t RmsNormToBf16(cudaStream_t stream, const float* x, const float* w, __nv_bfloat16* out,
                          int64_t m, int64_t d, float eps) {
  if (x == nullptr || w == nullptr || out == nullptr || d <= 0 || m < 0) {
    return cudaErrorInvalidValue;
  }
  if (m == 0) return cudaSuccess;
  return LaunchRmsNorm<false, __nv_bfloat16>(stream, nullptr, x, w, out, m, d, eps, 1.0f);
}

cudaError_t AddRmsNormToBf16(cudaStream_t stream, float* residual, const float* x, const float* w,
                             __nv_bfloat16* out, int64_t m, int64_t d, float eps, float x_scale) {
  if (residual == nullptr || x == nullptr || w == nullptr || out == nullptr || d <= 0 || m < 0) {
    return cudaErrorInvalidValue;
  }
  if (m == 0) return cudaSuccess;
  return LaunchRmsNorm<true, __nv_bfloat16>(stream, residual, x, w, out, m, d, eps, x_scale);
}

}  // namespace dpinfer::kernels::gpu
