// Mixture of experts fully on the device: routing (top-k over the router logits, rows grouped by
// expert) and one grouped GEMM over all experts' rows, so an MoE layer needs no host copy of the
// routing and can be captured in a CUDA graph.
//
// Routing runs in four small launches whose grids depend only on (tokens, experts, k):
//  1. MoeTopKKernel, one warp per token: lane i holds experts i, i + 32, ...; the softmax (Mixtral)
//     sums in expert order on one lane and takes expf through a double exp rounded once, so the
//     probabilities are those of the CPU twin's arithmetic (glibc's expf is correctly rounded but
//     for rare inputs); the top k are k rounds of a warp argmax ordered by (value desc, index asc),
//     torch.topk's order; the weights are formed in rank order, as the host does, then each token's
//     choices are sorted by expert into scratch `chosen` (token_weights written directly).
//  2. MoeCountKernel, one block per chunk of kChunkTokens tokens: per-expert counts of the chunk.
//  3. MoeScanKernel, one block: per expert, an exclusive scan of its counts over the chunks, then
//     an exclusive scan over experts gives expert_offsets; the chunk counts become each chunk's
//     first row per expert.
//  4. MoePlaceKernel, one block per chunk: a per-expert bitmask of the chunk's tokens in shared
//     memory; a choice's row is its chunk's first row for the expert plus the popcount of the
//     earlier tokens' bits, so rows within an expert are in token order.
// Integer atomics only (counts, bit sets), whose results don't depend on their order: every
// output is deterministic.
//
// The grouped GEMM tiles each expert's rows by kBM = 64 and the output columns by kBN = 128; k
// goes through shared memory in slices of kBK = 64 with a kStages = 3 cp.async pipeline (16-byte
// copies, zero-filled past the rows / columns / k that exist; rows padded by 16 bytes so ldmatrix
// is conflict-free; 83 KB of dynamic shared memory, 2 blocks an SM). Four warps each own a
// 32 x 64 piece of the tile: ldmatrix.x4 fragments and mma.sync m16n8k16 bf16 with fp32
// accumulators; the epilogue goes through shared memory for 16-byte stores. grid.x is the column
// tile (fastest, so the blocks of one row tile run together and the row tiles of one expert read
// its weights at about the same time, from L2 after the first), grid.y a row tile index over all
// experts: each block prefix-sums ceil(rows_e / kBM) over the experts from expert_offsets to find
// its expert and first row. grid.y is an upper bound of that sum from max_rows alone,
// (max_rows + E * (kBM - 1)) / kBM, and blocks past the real sum exit at once. At PowerMoE-3b's
// decode (2048 rows over 40 experts) this streams the weights at about 1.9 TB/s on an H100; at
// prefill (16384 rows) it runs at about 170-190 TFLOP/s.
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <cub/cub.cuh>

#include "kernels/cuda/fast_ops.h"
#include "kernels/cuda/ptx.cuh"

namespace dpinfer::kernels::gpu {
namespace {

// ---------------------------------------------------------------------------------------------
// Routing.

constexpr int kMaxExperts = 256;
constexpr int kMaxPerLane = kMaxExperts / 32;
constexpr int kMaxTopK = 16;
constexpr int kRouteWarps = 4;
constexpr int kChunkTokens = 128;   // tokens per count / place block
constexpr int kChunkThreads = 256;  // >= kMaxExperts: MoeScanKernel gives each expert a thread

// expf as the host computes it: the double exp (1 ulp of double) rounded once to float is the
// correctly rounded result except in double-rounding cases, as glibc's expf is (0.502 ulp).
__device__ __forceinline__ float HostExp(float x) {
  return static_cast<float>(exp(static_cast<double>(x)));
}

// Whether (v, e) ranks before (v2, e2) in torch.topk order: larger value first, ties to the lower
// index. e < 0 marks "no candidate", which ranks after everything.
__device__ __forceinline__ bool RanksBefore(float v, int e, float v2, int e2) {
  if (e < 0) return false;
  if (e2 < 0) return true;
  return v > v2 || (v == v2 && e < e2);
}

__global__ void __launch_bounds__(kRouteWarps * 32)
    MoeTopKKernel(const float* __restrict__ logits, int32_t* __restrict__ chosen,
                  float* __restrict__ token_weights, int64_t num_tokens, int num_experts, int top_k,
                  bool softmax_first) {
  __shared__ float s_prob[kRouteWarps][kMaxExperts];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kRouteWarps + warp;
  if (t >= num_tokens) return;  // the whole warp; no block-wide barrier follows
  const float* row = logits + t * num_experts;

  float v[kMaxPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int e = lane + 32 * i;
    v[i] = e < num_experts ? row[e] : -INFINITY;
  }

  if (softmax_first) {
    // The host's SoftmaxRow: max, exp(x - max), a sum in index order, one reciprocal, products.
    float m = v[0];
#pragma unroll
    for (int i = 1; i < kMaxPerLane; ++i) m = v[i] > m ? v[i] : m;
    for (int o = 16; o > 0; o >>= 1) {
      const float other = __shfl_xor_sync(0xffffffffu, m, o);
      m = other > m ? other : m;
    }
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int e = lane + 32 * i;
      if (e < num_experts) {
        v[i] = HostExp(__fsub_rn(v[i], m));
        s_prob[warp][e] = v[i];
      }
    }
    __syncwarp();
    // A tree sum would round differently from the host's sequential one.
    float sum = 0.0f;
    if (lane == 0) {
      for (int e = 0; e < num_experts; ++e) sum = __fadd_rn(sum, s_prob[warp][e]);
    }
    sum = __shfl_sync(0xffffffffu, sum, 0);
    const float inv = __fdiv_rn(1.0f, sum);
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) v[i] = __fmul_rn(v[i], inv);
  }

  // k rounds of a warp argmax; after the xor butterfly every lane holds the round's winner.
  // Lane j keeps the j-th choice (top_k <= 16 < 32).
  unsigned taken = 0;  // bit i: expert lane + 32 * i is chosen
  int my_e = -1;
  float my_w = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    float bv = 0.0f;
    int be = -1;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int e = lane + 32 * i;
      if (e < num_experts && !((taken >> i) & 1u) && RanksBefore(v[i], e, bv, be)) {
        bv = v[i];
        be = e;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oe = __shfl_xor_sync(0xffffffffu, be, o);
      if (RanksBefore(ov, oe, bv, be)) {
        bv = ov;
        be = oe;
      }
    }
    // be >= 0: top_k <= num_experts leaves a candidate every round.
    if ((be & 31) == lane) taken |= 1u << (be >> 5);
    if (lane == j) {
      my_e = be;
      my_w = bv;
    }
  }

  // Weights in rank order, the host's order of operations.
  if (softmax_first) {
    // routing_weights /= routing_weights.sum()
    float sum = 0.0f;
    for (int j = 0; j < top_k; ++j) sum = __fadd_rn(sum, __shfl_sync(0xffffffffu, my_w, j));
    my_w = __fdiv_rn(my_w, sum);
  } else {
    // Softmax over the k chosen logits (the host's SoftmaxRow again).
    float m = __shfl_sync(0xffffffffu, my_w, 0);
    for (int j = 1; j < top_k; ++j) {
      const float wj = __shfl_sync(0xffffffffu, my_w, j);
      m = wj > m ? wj : m;
    }
    const float ex = HostExp(__fsub_rn(my_w, m));
    float sum = 0.0f;
    for (int j = 0; j < top_k; ++j) sum = __fadd_rn(sum, __shfl_sync(0xffffffffu, ex, j));
    my_w = __fmul_rn(ex, __fdiv_rn(1.0f, sum));
  }

  // Slots in ascending expert order: a choice's slot is the number of smaller chosen experts.
  int slot = 0;
  for (int j = 0; j < top_k; ++j) slot += __shfl_sync(0xffffffffu, my_e, j) < my_e ? 1 : 0;
  if (lane < top_k) {
    chosen[t * top_k + slot] = my_e;
    token_weights[t * top_k + slot] = my_w;
  }
}

__global__ void __launch_bounds__(kChunkThreads)
    MoeCountKernel(const int32_t* __restrict__ chosen, int32_t* __restrict__ chunk_counts,
                   int64_t num_tokens, int num_experts, int top_k) {
  __shared__ int counts[kMaxExperts];
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kChunkTokens;
  const int64_t chunk_tokens = min(static_cast<int64_t>(kChunkTokens), num_tokens - t0);
  const int entries = static_cast<int>(chunk_tokens) * top_k;
  const int32_t* c = chosen + t0 * top_k;
  for (int i = threadIdx.x; i < entries; i += blockDim.x) atomicAdd(&counts[c[i]], 1);
  __syncthreads();
  int32_t* out = chunk_counts + static_cast<int64_t>(blockIdx.x) * num_experts;
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) out[e] = counts[e];
}

// One block of kChunkThreads threads, thread e for expert e. Turns chunk_counts [chunks, E] into
// each chunk's first row per expert and writes expert_offsets.
__global__ void __launch_bounds__(kChunkThreads)
    MoeScanKernel(int32_t* __restrict__ chunk_counts, int32_t* __restrict__ expert_offsets,
                  int num_chunks, int num_experts) {
  using Scan = cub::BlockScan<int, kChunkThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  const int e = threadIdx.x;
  int total = 0;
  if (e < num_experts) {
#pragma unroll 8
    for (int c = 0; c < num_chunks; ++c)
      total += chunk_counts[static_cast<int64_t>(c) * num_experts + e];
  }
  int first = 0;
  Scan(scan_storage).ExclusiveSum(total, first);
  if (e < num_experts) {
    expert_offsets[e] = first;
    if (e == num_experts - 1) expert_offsets[num_experts] = first + total;
    int row = first;
#pragma unroll 8
    for (int c = 0; c < num_chunks; ++c) {
      int32_t* p = chunk_counts + static_cast<int64_t>(c) * num_experts + e;
      const int count = *p;
      *p = row;
      row += count;
    }
  }
}

__global__ void __launch_bounds__(kChunkThreads)
    MoePlaceKernel(const int32_t* __restrict__ chosen, const int32_t* __restrict__ chunk_first,
                   int32_t* __restrict__ sorted_token, int32_t* __restrict__ token_rows,
                   int64_t num_tokens, int num_experts, int top_k) {
  // chose[e][w] bit i: the chunk's token 32 w + i chose expert e. A choice's rank within its
  // expert is then a popcount over the earlier tokens' bits: token order, independent of timing.
  constexpr int kWords = kChunkTokens / 32;
  __shared__ uint32_t chose[kMaxExperts][kWords];
  for (int i = threadIdx.x; i < num_experts * kWords; i += blockDim.x) (&chose[0][0])[i] = 0;
  __syncthreads();
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kChunkTokens;
  const int entries =
      static_cast<int>(min(static_cast<int64_t>(kChunkTokens), num_tokens - t0)) * top_k;
  const int32_t* c = chosen + t0 * top_k;
  for (int i = threadIdx.x; i < entries; i += blockDim.x) {
    const int tl = i / top_k;
    atomicOr(&chose[c[i]][tl >> 5], 1u << (tl & 31));
  }
  __syncthreads();
  const int32_t* first = chunk_first + static_cast<int64_t>(blockIdx.x) * num_experts;
  for (int i = threadIdx.x; i < entries; i += blockDim.x) {
    const int tl = i / top_k;
    const int e = c[i];
    int rank = __popc(chose[e][tl >> 5] & ((1u << (tl & 31)) - 1u));
    for (int w = 0; w < (tl >> 5); ++w) rank += __popc(chose[e][w]);
    const int row = first[e] + rank;
    const int64_t t = t0 + tl;
    sorted_token[row] = static_cast<int32_t>(t);
    token_rows[t * top_k + i % top_k] = row;
  }
}

int64_t NumChunks(int64_t num_tokens) { return (num_tokens + kChunkTokens - 1) / kChunkTokens; }

// ---------------------------------------------------------------------------------------------
// Grouped GEMM.

constexpr int kBM = 64;
constexpr int kBN = 128;
constexpr int kBK = 64;
constexpr int kStages = 3;
constexpr int kGemmThreads = 128;       // 4 warps, 2 x 2 over the tile, 32 x 64 each
constexpr int kLd = kBK + 8;            // smem row of a k slice, padded (conflict-free rows)
constexpr int kCLd = kBN + 4;           // fp32 epilogue row
constexpr int kChunksPerRow = kBK / 8;  // 16-byte chunks per row of a k slice
constexpr int kRowsPerPass = kGemmThreads / kChunksPerRow;
constexpr int kPassesA = kBM / kRowsPerPass;
constexpr int kPassesB = kBN / kRowsPerPass;
constexpr int kStageA = kBM * kLd;  // bf16 elements
constexpr int kStageB = kBN * kLd;
constexpr int kPipeBytes = kStages * (kStageA + kStageB) * 2;
constexpr int kEpilogueBytes = kBM * kCLd * 4;
constexpr int kSmemAlign = 128;
constexpr int kGemmSmemBytes =
    (kPipeBytes > kEpilogueBytes ? kPipeBytes : kEpilogueBytes) + kSmemAlign;
static_assert(kBK % 16 == 0 && kGemmThreads % kChunksPerRow == 0 && kBM % kRowsPerPass == 0 &&
                  kBN % kRowsPerPass == 0,
              "load mapping");
static_assert(kStages >= 2, "pipeline depth");

__device__ __forceinline__ int ClampRow(int32_t v, int lo, int64_t hi) {
  const int64_t c = v < lo ? lo : v;
  return static_cast<int>(c < hi ? c : hi);
}

__global__ void __launch_bounds__(kGemmThreads)
    GroupedGemmKernel(const __nv_bfloat16* __restrict__ x, const int32_t* __restrict__ gather,
                      const __nv_bfloat16* __restrict__ w,
                      const int32_t* __restrict__ expert_offsets, void* __restrict__ y, bool y_bf16,
                      int64_t max_rows, int num_experts, int n, int k) {
  using Scan = cub::BlockScan<int, kGemmThreads>;
  extern __shared__ unsigned char dynamic_smem[];
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ int s_expert, s_row0, s_row_end;
  const int tid = threadIdx.x;
  // ldmatrix and cp.async want 16-byte aligned rows: align the dynamic buffer (kGemmSmemBytes
  // has the slack).
  unsigned char* const smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(dynamic_smem) + kSmemAlign - 1) & ~uintptr_t{kSmemAlign - 1});

  // Which expert and rows this block's row tile is: tiles are numbered expert by expert, each
  // expert taking ceil(rows / kBM). Experts are scanned kGemmThreads at a time.
  const int tile = blockIdx.y;
  if (tid == 0) s_expert = -1;
  __syncthreads();
  int tiles_before = 0;
  for (int e0 = 0; e0 < num_experts; e0 += kGemmThreads) {
    const int e = e0 + tid;
    int begin = 0, end = 0;
    if (e < num_experts) {
      // Clamped so that malformed offsets can't send writes outside [0, max_rows).
      begin = ClampRow(expert_offsets[e], 0, max_rows);
      end = ClampRow(expert_offsets[e + 1], begin, max_rows);
    }
    const int tiles = (end - begin + kBM - 1) / kBM;
    int inclusive = 0, all = 0;
    Scan(scan_storage).InclusiveSum(tiles, inclusive, all);
    const int first = tiles_before + inclusive - tiles;
    if (tile >= first && tile < first + tiles) {
      s_expert = e;
      s_row0 = begin + (tile - first) * kBM;
      s_row_end = end;
    }
    tiles_before += all;
    if (tiles_before > tile) break;  // uniform: `all` is the same in every thread
    __syncthreads();                 // scan_storage is reused
  }
  __syncthreads();
  const int expert = s_expert;
  if (expert < 0) return;  // past the last tile: uniform exit
  const int row0 = s_row0;
  const int rows = min(kBM, s_row_end - row0);
  const int n0 = blockIdx.x * kBN;

  // Each thread copies the same 16-byte column chunk `kc` of rows lr + i * kRowsPerPass of the A
  // and B tiles every stage. A rows are gathered, so their sources are kept; B rows are strided.
  const int kc = (tid % kChunksPerRow) * 8;
  const int lr = tid / kChunksPerRow;
  const __nv_bfloat16* a_src[kPassesA];
  bool a_ok[kPassesA];
#pragma unroll
  for (int i = 0; i < kPassesA; ++i) {
    const int r = lr + kRowsPerPass * i;
    a_ok[i] = r < rows;
    int64_t src = row0 + r;
    if (a_ok[i] && gather != nullptr) src = gather[src];
    a_src[i] = a_ok[i] ? x + src * k + kc : x;
  }
  const __nv_bfloat16* const b_src = w + (static_cast<int64_t>(expert) * n + n0 + lr) * k + kc;
  const int64_t b_pass_stride = static_cast<int64_t>(kRowsPerPass) * k;

  __nv_bfloat16* const sa = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* const sb = sa + kStages * kStageA;
  auto load_stage = [&](int stage, int kt) {
    const int kk = kt * kBK;
    const bool k_ok = kk + kc < k;  // k % 8 == 0: a chunk is wholly inside or outside
    __nv_bfloat16* da = sa + stage * kStageA + lr * kLd + kc;
#pragma unroll
    for (int i = 0; i < kPassesA; ++i) {
      const bool ok = a_ok[i] && k_ok;
      CpAsync16(da + kRowsPerPass * i * kLd, ok ? a_src[i] + kk : x, ok);
    }
    __nv_bfloat16* db = sb + stage * kStageB + lr * kLd + kc;
#pragma unroll
    for (int i = 0; i < kPassesB; ++i) {
      const bool ok = n0 + lr + kRowsPerPass * i < n && k_ok;
      CpAsync16(db + kRowsPerPass * i * kLd, ok ? b_src + i * b_pass_stride + kk : w, ok);
    }
  };

  // Warp (wm, wn) owns rows [wm, wm + 32) x columns [wn, wn + 64) of the tile: 2 x 8 mma tiles of
  // 16 x 8, acc[i][j] holding rows wm + 16 i + {g, g + 8}, columns wn + 8 j + 2 t + {0, 1}
  // (g = lane / 4, t = lane % 4: the m16n8k16 accumulator layout).
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int wm = (warp >> 1) * 32;
  const int wn = (warp & 1) * 64;
  float acc[2][8][4];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int v = 0; v < 4; ++v) acc[i][j][v] = 0.0f;
    }
  }
  // ldmatrix row addresses (bytes, shared space). A, x4 = the four 8 x 8 quarters of a 16 x 16
  // tile stored [m][k]: lanes 0-15 give rows 0-15 at k 0, lanes 16-31 rows 0-15 at k 8, so the
  // registers come out as the mma's a0..a3. B, stored [n][k] (w's own layout, which is the mma's
  // "col" operand without a transpose): lanes 0-7 n 0-7 at k 0, 8-15 n 0-7 at k 8, 16-23 n 8-15 at
  // k 0, 24-31 n 8-15 at k 8, giving b0, b1 of the first 8 columns, then of the next 8.
  const uint32_t a_lane = static_cast<uint32_t>(__cvta_generic_to_shared(sa)) +
                          ((wm + (lane & 15)) * kLd + (lane >> 4) * 8) * 2;
  const uint32_t b_lane = static_cast<uint32_t>(__cvta_generic_to_shared(sb)) +
                          ((wn + (lane & 7) + (lane >> 4) * 8) * kLd + ((lane >> 3) & 1) * 8) * 2;

  // Multistage pipeline: group g holds k slice g (an empty group past the end keeps the count).
  // At iteration kt, wait_group<kStages - 2> leaves slice kt landed; the barrier makes it visible
  // to all warps and also guarantees every warp is done with slice kt - 1, whose stage the
  // prefetch of slice kt + kStages - 1 then overwrites.
  const int k_tiles = (k + kBK - 1) / kBK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    CpAsyncCommit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();
    const int next = kt + kStages - 1;
    if (next < k_tiles) load_stage(next % kStages, next);
    CpAsyncCommit();
    const int stage = kt % kStages;
    const uint32_t as = a_lane + stage * kStageA * 2;
    const uint32_t bs = b_lane + stage * kStageB * 2;
#pragma unroll
    for (int ks = 0; ks < kBK; ks += 16) {
      uint32_t a[2][4], b[4][4];
#pragma unroll
      for (int i = 0; i < 2; ++i) LdMatrixX4(a[i], as + (16 * i * kLd + ks) * 2);
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) LdMatrixX4(b[jj], bs + (16 * jj * kLd + ks) * 2);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          MmaBf16(acc[i][j], a[i], b[j >> 1][(j & 1) * 2], b[j >> 1][(j & 1) * 2 + 1]);
        }
      }
    }
  }

  // Epilogue through shared memory (reusing the pipeline's), so the global stores are 16-byte
  // row segments with the row / column guards applied per segment.
  CpAsyncWait<0>();
  __syncthreads();
  float* const sc = reinterpret_cast<float*>(smem);
  const int g = lane >> 2, t2 = (lane & 3) * 2;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      float* p = sc + (wm + 16 * i + g) * kCLd + wn + 8 * j + t2;
      *reinterpret_cast<float2*>(p) = make_float2(acc[i][j][0], acc[i][j][1]);
      *reinterpret_cast<float2*>(p + 8 * kCLd) = make_float2(acc[i][j][2], acc[i][j][3]);
    }
  }
  __syncthreads();
  if (!y_bf16) {
    float* const out = static_cast<float*>(y);
    constexpr int kVecs = kBN / 4;
    for (int idx = tid; idx < kBM * kVecs; idx += kGemmThreads) {
      const int r = idx / kVecs;
      const int c = (idx % kVecs) * 4;
      if (r < rows && n0 + c < n) {
        *reinterpret_cast<float4*>(out + static_cast<int64_t>(row0 + r) * n + n0 + c) =
            *reinterpret_cast<const float4*>(sc + r * kCLd + c);
      }
    }
  } else {
    __nv_bfloat16* const out = static_cast<__nv_bfloat16*>(y);
    constexpr int kVecs = kBN / 8;
    for (int idx = tid; idx < kBM * kVecs; idx += kGemmThreads) {
      const int r = idx / kVecs;
      const int c = (idx % kVecs) * 8;
      if (r < rows && n0 + c < n) {
        const float4 lo = *reinterpret_cast<const float4*>(sc + r * kCLd + c);
        const float4 hi = *reinterpret_cast<const float4*>(sc + r * kCLd + c + 4);
        const uint4 packed = make_uint4(PackBf16x2(lo.x, lo.y), PackBf16x2(lo.z, lo.w),
                                        PackBf16x2(hi.x, hi.y), PackBf16x2(hi.z, hi.w));
        *reinterpret_cast<uint4*>(out + static_cast<int64_t>(row0 + r) * n + n0 + c) = packed;
      }
    }
  }
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

int64_t MoeRouteScratchInts(int64_t num_tokens, int64_t num_experts, int64_t top_k) {
  if (num_tokens <= 0 || num_experts <= 0 || top_k <= 0) return 0;
  // chosen [t, k], then chunk_counts [chunks, E].
  return num_tokens * top_k + NumChunks(num_tokens) * num_experts;
}

cudaError_t MoeRoute(cudaStream_t stream, const MoeRouteArgs& a) {
  const int64_t t = a.num_tokens;
  const int64_t e = a.num_experts;
  const int64_t k = a.top_k;
  if (a.expert_offsets == nullptr || t < 0 || e <= 0 || e > kMaxExperts || k <= 0 || k > kMaxTopK ||
      k > e || t * k > INT32_MAX) {
    return cudaErrorInvalidValue;
  }
  const int64_t chunks = NumChunks(t);
  if (t > 0) {
    if (a.router_logits == nullptr || a.sorted_token == nullptr || a.token_rows == nullptr ||
        a.token_weights == nullptr || a.scratch == nullptr) {
      return cudaErrorInvalidValue;
    }
    int32_t* chosen = a.scratch;
    int32_t* chunk_counts = a.scratch + t * k;
    MoeTopKKernel<<<(t + kRouteWarps - 1) / kRouteWarps, kRouteWarps * 32, 0, stream>>>(
        a.router_logits, chosen, a.token_weights, t, static_cast<int>(e), static_cast<int>(k),
        a.softmax_first);
    MoeCountKernel<<<chunks, kChunkThreads, 0, stream>>>(chosen, chunk_counts, t,
                                                         static_cast<int>(e), static_cast<int>(k));
    MoeScanKernel<<<1, kChunkThreads, 0, stream>>>(chunk_counts, a.expert_offsets,
                                                   static_cast<int>(chunks), static_cast<int>(e));
    MoePlaceKernel<<<chunks, kChunkThreads, 0, stream>>>(chosen, chunk_counts, a.sorted_token,
                                                         a.token_rows, t, static_cast<int>(e),
                                                         static_cast<int>(k));
  } else {
    // No tokens: the scan alone writes zero offsets (nothing of the scratch is read).
    MoeScanKernel<<<1, kChunkThreads, 0, stream>>>(nullptr, a.expert_offsets, 0,
                                                   static_cast<int>(e));
  }
  return cudaGetLastError();
}

cudaError_t GroupedGemm(cudaStream_t stream, const GroupedGemmArgs& a) {
  if (a.x == nullptr || a.w == nullptr || a.expert_offsets == nullptr || a.y == nullptr ||
      a.max_rows < 0 || a.num_experts <= 0 || a.n <= 0 || a.k <= 0 || a.n % 8 != 0 ||
      a.k % 8 != 0 || a.n > INT32_MAX || a.k > INT32_MAX || a.max_rows > INT32_MAX ||
      a.num_experts > INT32_MAX || !Aligned16(a.x) || !Aligned16(a.w) || !Aligned16(a.y)) {
    return cudaErrorInvalidValue;
  }
  if (a.max_rows == 0) return cudaSuccess;
  // sum over experts of ceil(rows_e / kBM) <= (sum rows_e + E * (kBM - 1)) / kBM, and <= max_rows.
  const int64_t row_tiles = std::min(a.max_rows, (a.max_rows + a.num_experts * (kBM - 1)) / kBM);
  if (row_tiles > 65535) return cudaErrorInvalidValue;
  // More than the default 48 KB of dynamic shared memory must be asked for, once per device.
  if (kGemmSmemBytes > 48 * 1024) {
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess) return err;
    static std::atomic<uint64_t> opted_in{0};  // bit d: done on device d (d < 64)
    const uint64_t bit = device < 64 ? uint64_t{1} << device : 0;
    if ((opted_in.load(std::memory_order_acquire) & bit) == 0 || bit == 0) {
      err = cudaFuncSetAttribute(GroupedGemmKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 kGemmSmemBytes);
      if (err != cudaSuccess) return err;
      opted_in.fetch_or(bit, std::memory_order_acq_rel);
    }
  }
  const dim3 grid(static_cast<unsigned>((a.n + kBN - 1) / kBN), static_cast<unsigned>(row_tiles));
  GroupedGemmKernel<<<grid, kGemmThreads, kGemmSmemBytes, stream>>>(
      a.x, a.gather, a.w, a.expert_offsets, a.y, a.y_bf16, a.max_rows,
      static_cast<int>(a.num_experts), static_cast<int>(a.n), static_cast<int>(a.k));
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
