// The bf16 serving path's element-wise kernels (fast_ops.h): the bf16 embedding lookup and the
// fused-gate/up SiLU·mul writing bf16 for the down GEMM. The arithmetic is the fp32 twins'
// (embedding.cu, activation.cu), expression for expression, so results are bit-identical whatever
// path a launch takes. The bf16-output RMSNorms live with their fp32 twins in rms_norm.cu.
//
// Both kernels move 8 bf16 (16 bytes) per load where the row length is a multiple of 8 and the
// pointers are 16-byte aligned (checked on the host); otherwise they fall back to one element at a
// time. SiLU·mul is a grid-stride loop over 8-element groups with a grid of a few blocks per SM;
// its index math is 32-bit whenever the tensor is small enough (it always is in practice).
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/fast_ops.h"

namespace dpinfer::kernels::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 8;  // grid cap for the grid-stride loops: one wave of 2048 threads/SM

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

int64_t GridStrideBlocks(int64_t work_items, int sms) {
  const int64_t needed = (work_items + kThreads - 1) / kThreads;
  return std::max<int64_t>(1, std::min<int64_t>(needed, int64_t{sms} * kBlocksPerSm));
}

// The twin's formula: (g / (1 + exp(-g))) * u in fp32, IEEE division and expf (no fast math),
// then one rounding to bf16.
__device__ __forceinline__ float SiluMulF(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// gate_up rows of 2 * nv groups of 8 (nv gate groups, then nv up groups); out rows of nv groups.
// Idx is uint32_t when 2 * m * nv fits, else int64_t.
template <typename Idx>
__global__ void SiluMulFusedVec8Kernel(const uint4* __restrict__ gate_up, uint4* __restrict__ out,
                                       Idx total, Idx nv) {
  const Idx stride = static_cast<Idx>(gridDim.x) * blockDim.x;
  for (Idx i = static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const Idx row = i / nv, col = i - row * nv;
    const uint4* in = gate_up + 2 * row * nv + col;
    // Read once: streaming loads, so the L2 keeps `out` for the down GEMM that reads it next.
    const uint4 g4 = __ldcs(in);
    const uint4 u4 = __ldcs(in + nv);
    const __nv_bfloat162* g2 = reinterpret_cast<const __nv_bfloat162*>(&g4);
    const __nv_bfloat162* u2 = reinterpret_cast<const __nv_bfloat162*>(&u4);
    union {
      __nv_bfloat162 h[4];
      uint4 u;
    } o;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 g = __bfloat1622float2(g2[e]);
      const float2 u = __bfloat1622float2(u2[e]);
      o.h[e] = __floats2bfloat162_rn(SiluMulF(g.x, u.x), SiluMulF(g.y, u.y));
    }
    out[i] = o.u;
  }
}

// Any n, any alignment: one element per step.
template <typename Idx>
__global__ void SiluMulFusedKernel(const __nv_bfloat16* __restrict__ gate_up,
                                   __nv_bfloat16* __restrict__ out, Idx total, Idx n) {
  const Idx stride = static_cast<Idx>(gridDim.x) * blockDim.x;
  for (Idx i = static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const Idx row = i / n, col = i - row * n;
    const float g = __bfloat162float(gate_up[2 * row * n + col]);
    const float u = __bfloat162float(gate_up[2 * row * n + n + col]);
    out[i] = __float2bfloat16_rn(SiluMulF(g, u));
  }
}

// One block per token; gpr groups of 8 per row.
__global__ void EmbeddingBf16Vec8Kernel(const int32_t* __restrict__ ids,
                                        const uint4* __restrict__ table, float4* __restrict__ out,
                                        int64_t gpr, float scale) {
  const uint4* row = table + static_cast<int64_t>(ids[blockIdx.x]) * gpr;
  float4* o = out + blockIdx.x * gpr * 2;
  for (int64_t j = threadIdx.x; j < gpr; j += blockDim.x) {
    const uint4 t4 = __ldg(row + j);
    const __nv_bfloat162* t2 = reinterpret_cast<const __nv_bfloat162*>(&t4);
    float f[8];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 v = __bfloat1622float2(t2[e]);
      f[2 * e] = v.x * scale;
      f[2 * e + 1] = v.y * scale;
    }
    o[2 * j] = make_float4(f[0], f[1], f[2], f[3]);
    o[2 * j + 1] = make_float4(f[4], f[5], f[6], f[7]);
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

int BlockFor(int64_t items) {
  return static_cast<int>(std::min<int64_t>(kThreads, (items + 31) / 32 * 32));
}

}  // namespace

cudaError_t EmbeddingBf16(cudaStream_t stream, const int32_t* ids, const __nv_bfloat16* table,
                          float* out, int64_t num_tokens, int64_t hidden, float scale) {
  if (ids == nullptr || table == nullptr || out == nullptr || hidden <= 0 || num_tokens < 0) {
    return cudaErrorInvalidValue;
  }
  if (num_tokens == 0) return cudaSuccess;
  if (hidden % 8 == 0 && Aligned16(table) && Aligned16(out)) {
    const int64_t gpr = hidden / 8;
    EmbeddingBf16Vec8Kernel<<<num_tokens, BlockFor(gpr), 0, stream>>>(
        ids, reinterpret_cast<const uint4*>(table), reinterpret_cast<float4*>(out), gpr, scale);
  } else {
    EmbeddingBf16Kernel<<<num_tokens, BlockFor(hidden), 0, stream>>>(ids, table, out, hidden,
                                                                     scale);
  }
  return cudaGetLastError();
}

cudaError_t SiluMulFusedToBf16(cudaStream_t stream, const __nv_bfloat16* gate_up,
                               __nv_bfloat16* out, int64_t m, int64_t n) {
  if (gate_up == nullptr || out == nullptr || m < 0 || n <= 0) return cudaErrorInvalidValue;
  if (m == 0) return cudaSuccess;
  int sms = 0;
  const cudaError_t err = SmCount(&sms);
  if (err != cudaSuccess) return err;
  // 32-bit indices when every index into gate_up (< 2 * m * n) fits.
  const bool small = 2 * m * n < (int64_t{1} << 32) - 2 * int64_t{sms} * kBlocksPerSm * kThreads;
  if (n % 8 == 0 && Aligned16(gate_up) && Aligned16(out)) {
    const int64_t nv = n / 8, total = m * nv;
    const int64_t blocks = GridStrideBlocks(total, sms);
    const auto* in = reinterpret_cast<const uint4*>(gate_up);
    auto* o = reinterpret_cast<uint4*>(out);
    if (small) {
      SiluMulFusedVec8Kernel<uint32_t><<<blocks, kThreads, 0, stream>>>(
          in, o, static_cast<uint32_t>(total), static_cast<uint32_t>(nv));
    } else {
      SiluMulFusedVec8Kernel<int64_t><<<blocks, kThreads, 0, stream>>>(in, o, total, nv);
    }
  } else {
    const int64_t total = m * n;
    const int64_t blocks = GridStrideBlocks(total, sms);
    if (small) {
      SiluMulFusedKernel<uint32_t><<<blocks, kThreads, 0, stream>>>(
          gate_up, out, static_cast<uint32_t>(total), static_cast<uint32_t>(n));
    } else {
      SiluMulFusedKernel<int64_t><<<blocks, kThreads, 0, stream>>>(gate_up, out, total, n);
    }
  }
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
