// Rotary embedding + bf16 KV cache write, and causal grouped-query paged attention on tensor cores,
// for the bf16 serving path (fast_ops.h).
//
// RopeQkvToCache: one block per token. The token's cos/sin table (head_dim / 2 angles) is built
// once in shared memory, then the threads rotate every (head, pair) of q and k with the CPU twin's
// unfused fp32 arithmetic (rope.cu), round to bf16 and store q to its own tensor and k, v to the
// token's cache slot.
//
// Attention: FlashAttention-2 on mma.sync (m16n8k16, bf16 in, fp32 accumulate). One block per
// (tile, kv head, split). Its query rows are the tile's tokens (up to 16) times the `group` query
// heads that share the kv head, row r = token * group + head_in_group, so a decode tile has its
// `group` real rows first and a 16-token prefill tile of group 4 has 64. Each warp owns 16 rows and
// keeps them in registers for the whole pass: the mma fragment layout is fixed by PTX, so a thread
// knows which two rows its accumulators belong to and the online softmax (running max, running sum,
// rescaling of the output) happens in registers, with a reduction over the 4 lanes of a quad.
// Blocks have 4 warps (64 rows) for group <= 4 and 8 warps (128 rows) above; larger groups loop
// over blocks of rows. Warps without a real row skip the math but still load: a decode block has
// one computing warp and is bound by how fast the 4 warps stream K/V, which is the point (each key
// and value of a sequence is read once per kv head, whatever the group).
//
// K/V come in tiles of 64 keys (32 for head_dim > 128, to fit shared memory), gathered through the
// block table one key row at a time (a slot per key: tiles need not align with cache blocks) with
// 16-byte cp.async into a two-stage ring, so the next tile streams in while this one is multiplied.
// Rows are padded by 16 bytes in shared memory, which makes every ldmatrix conflict-free. head_dim
// may be any multiple of 8 up to 256 (whole 16-byte chunks; the test models have 8 and 16): it is
// rounded up to 16/32/64/128/256 in shared memory and the extra columns are zero-filled by the
// copy itself (cp.async with a source size of 0), as are keys past the block's range: whatever the
// cache holds there (even NaN) is never read, so p = 0 never meets a NaN value row.
//
// Masking: a key is visible to a row when it is below min(row position + 1, block end); masked
// scores are -inf, and a row that has seen nothing yet keeps max -inf, subtracting 0 instead so no
// inf - inf appears. Split-KV: block z takes keys [z * kv_chunk, (z + 1) * kv_chunk) (the last
// split takes the rest of the sequence, so too few splits lose nothing) and stores its rows'
// unnormalised output with (max, sum) in `partials`; a merge kernel combines, for each row, only
// the splits that start at or before its position, which are exactly those that saw a key of it.
//
// Measured on an H100 (K/V bytes over time): decode of 256 sequences, 32/8 heads, 2.2 TB/s at
// context 256 and 2.6 TB/s at 1024 (head_dim 64 or 128); 16-token prefill tiles 150-175 TFLOP/s
// for group 4-8, but only about 50 for group 1, where 16 rows per block re-read K/V from L2 too
// often (bigger tiles for small groups would fix that).
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cuda/fast_ops.h"
#include "kernels/cuda/ptx.cuh"

namespace dpinfer::kernels::gpu {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kTileRows = kAttentionTileRows;  // query tokens per tile
constexpr int kMaxHeadDim = 256;
constexpr float kLog2e = 1.4426950408889634f;

// ---------------------------------------------------------------------------------------------
// RopeQkvToCache

constexpr int kRopeThreads = 128;

__global__ void __launch_bounds__(kRopeThreads)
    RopeQkvKernel(const float* __restrict__ qkv, const int32_t* __restrict__ positions,
                  const int32_t* __restrict__ slot_mapping, const float* __restrict__ inv_freq,
                  bf16* __restrict__ q, bf16* __restrict__ k_cache, bf16* __restrict__ v_cache,
                  int num_heads, int num_kv_heads, int head_dim) {
  __shared__ float s_cos[kMaxHeadDim / 2], s_sin[kMaxHeadDim / 2];
  const int64_t t = blockIdx.x;
  const int half = head_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = __fmul_rn(pos, inv_freq[i]);  // as the CPU: pos * inv_freq in fp32
    s_cos[i] = cosf(angle);
    s_sin[i] = sinf(angle);
  }
  __syncthreads();

  const int64_t slot = slot_mapping[t];
  const int64_t kv_row = static_cast<int64_t>(num_kv_heads) * head_dim;
  const float* row = qkv + t * (num_heads + 2 * num_kv_heads) * static_cast<int64_t>(head_dim);
  // q heads, then (for a stored token) k heads: both are rotated, only the destination differs.
  const int rotated_heads = slot >= 0 ? num_heads + num_kv_heads : num_heads;
  for (int p = threadIdx.x; p < rotated_heads * half; p += blockDim.x) {
    const int h = p / half, i = p - h * half;
    const float* x = row + static_cast<int64_t>(h) * head_dim;
    const float x1 = x[i], x2 = x[i + half];
    const float c = s_cos[i], s = s_sin[i];
    const float y1 = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
    const float y2 = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
    bf16* dst = h < num_heads
                    ? q + (t * num_heads + h) * head_dim
                    : k_cache + slot * kv_row + static_cast<int64_t>(h - num_heads) * head_dim;
    dst[i] = __float2bfloat16_rn(y1);
    dst[i + half] = __float2bfloat16_rn(y2);
  }
  if (slot < 0) return;  // a padding token: nothing to store
  const float* v = row + static_cast<int64_t>(num_heads + num_kv_heads) * head_dim;
  bf16* v_dst = v_cache + slot * kv_row;
  for (int64_t j = threadIdx.x; j < kv_row; j += blockDim.x) v_dst[j] = __float2bfloat16_rn(v[j]);
}

// ---------------------------------------------------------------------------------------------
// Attention: PTX wrappers. Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A (16x16, row-major): a0 = (row g, cols 2t..2t+1), a1 = (g + 8, 2t..), a2 = (g, 2t + 8..),
//                         a3 = (g + 8, 2t + 8..);
//   B (16x8, k x n):      b0 = (k 2t..2t+1, n g), b1 = (k 2t + 8.., n g);
//   C (16x8, fp32):       c0, c1 = (row g, cols 2t, 2t + 1), c2, c3 = (row g + 8, same cols).
// The lower half of each 32-bit register holds the lower column (or k) index.

// ---------------------------------------------------------------------------------------------
// Attention: kernels.

struct AttnParams {
  const bf16* q;
  const bf16* k_cache;
  const bf16* v_cache;
  const int32_t* block_tables;
  const int32_t* q_start;
  const int32_t* kv_len;
  const int32_t* tile_seq;
  const int32_t* tile_row;
  bf16* out;
  float* partials;
  int64_t partial_rows;  // num_tiles * kTileRows * num_heads: one split's rows in `partials`
  int num_heads;
  int num_kv_heads;
  int head_dim;
  int group;  // num_heads / num_kv_heads
  int block_size;
  int max_blocks_per_seq;
  int max_keys;  // max_blocks_per_seq * block_size, clamped to INT_MAX: what a table can address
  int num_splits;
  int kv_chunk;
  float scale_log2;  // scale * log2(e): scores live in the log2 domain, softmax uses exp2
};

// What a block needs to know about its tile.
struct TileInfo {
  int seq;
  int row0;       // first query row
  int num_tok;    // query tokens in the tile, <= kTileRows (<= 0 only for a malformed list)
  int pos_first;  // position of the first one (the rest follow consecutively)
  int kv_len;
};

__device__ __forceinline__ TileInfo LoadTile(const AttnParams& p, int64_t tile) {
  TileInfo ti;
  ti.seq = p.tile_seq[tile];
  ti.row0 = p.tile_row[tile];
  const int q_begin = p.q_start[ti.seq], q_end = p.q_start[ti.seq + 1];
  ti.kv_len = p.kv_len[ti.seq];
  ti.num_tok = min(kTileRows, q_end - ti.row0);
  ti.pos_first = ti.kv_len - (q_end - q_begin) + (ti.row0 - q_begin);
  return ti;
}

// Offsets into `partials`: per split, partial_rows rows of head_dim floats (the unnormalised
// output), then after all of them per split and row a (max in the log2 domain, sum) pair.
__device__ __forceinline__ int64_t PartialRow(int64_t tile, int token, int head, int num_heads) {
  return (tile * kTileRows + token) * num_heads + head;
}

template <int kHeadDimPad, int kWarps>
struct AttnConfig {
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = kWarps * 16;                   // query rows per pass
  static constexpr int kKeys = kHeadDimPad <= 128 ? 64 : 32;  // keys per K/V tile
  static constexpr int kLd = kHeadDimPad + 8;  // smem row stride (elements): +16 B, no conflicts
  static constexpr int kChunks = kHeadDimPad / 8;  // 16-byte chunks per padded row
  static constexpr int kStages = 2;                // K/V ring depth
  // Small head dims leave room for 4 blocks of 4 warps per SM (a decode batch is many short
  // blocks: more of them resident hides their start-up latency); 128 registers is no spill there.
  static constexpr int kMinBlocks = kHeadDimPad <= 64 && kWarps == 4 ? 4 : 1;
  static constexpr int kRingElems = 2 * kStages * kKeys * kLd;  // K and V stages
  static constexpr size_t kSmemBytes = static_cast<size_t>(kRows * kLd + kRingElems) * sizeof(bf16);
};

// One warp's part of one K/V tile: its 16 query rows (q_s) against the tile's kKeys keys (k_s,
// v_s; the first is key0) in shared memory, updating the rows' online softmax state and output
// accumulators in registers. limit[h]: keys < limit[h] are visible to the thread's row h (row g,
// then g + 8).
template <int kKeys, int kHeadDimPad, int kLd>
__device__ __forceinline__ void AttendKeys(const bf16* q_s, const bf16* k_s, const bf16* v_s,
                                           int key0, const int (&limit)[2], float scale_log2,
                                           float (&o)[kHeadDimPad / 8][4], float (&row_max)[2],
                                           float (&row_sum)[2], int lane) {
  constexpr int kKeyFrags = kKeys / 8;
  constexpr int kDimFrags = kHeadDimPad / 8;
  const int t4 = lane & 3;

  // S = Q K^T.
  float s[kKeyFrags][4];
#pragma unroll
  for (int n = 0; n < kKeyFrags; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < kHeadDimPad / 16; ++kk) {
    // Matrices: rows +0..7 / dims +0..7, rows +8..15 / dims +0..7, then dims +8..15.
    uint32_t a[4];
    LdMatrixX4(
        a, SmemAddr(q_s + ((lane & 7) + ((lane >> 3) & 1) * 8) * kLd + kk * 16 + (lane >> 4) * 8));
#pragma unroll
    for (int n2 = 0; n2 < kKeys / 16; ++n2) {
      // Matrices: keys +0..7 / dims +0..7, keys +0..7 / dims +8..15, then keys +8..15.
      uint32_t b[4];
      LdMatrixX4(b, SmemAddr(k_s + (n2 * 16 + (lane & 7) + (lane >> 4) * 8) * kLd + kk * 16 +
                             ((lane >> 3) & 1) * 8));
      MmaBf16(s[2 * n2], a, b[0], b[1]);
      MmaBf16(s[2 * n2 + 1], a, b[2], b[3]);
    }
  }

  // Online softmax, row by row (h = 0: row g, registers 0-1; h = 1: row g + 8, registers 2-3).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < kKeyFrags; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = key0 + n * 8 + 2 * t4 + e;
        const float v = key < limit[h] ? s[n][2 * h + e] * scale_log2 : -INFINITY;
        s[n][2 * h + e] = v;
        mx = fmaxf(mx, v);
      }
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float new_max = fmaxf(row_max[h], mx);
    const float base = new_max == -INFINITY ? 0.0f : new_max;  // nothing seen yet: no inf - inf
    const float correction = exp2f(row_max[h] - base);         // 0 while row_max is -inf
    row_max[h] = new_max;
    float sum = 0.0f;
#pragma unroll
    for (int n = 0; n < kKeyFrags; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float pr = exp2f(s[n][2 * h + e] - base);
        s[n][2 * h + e] = pr;
        sum += pr;
      }
    }
    row_sum[h] = row_sum[h] * correction + sum;
#pragma unroll
    for (int d = 0; d < kDimFrags; ++d) {
      o[d][2 * h] *= correction;
      o[d][2 * h + 1] *= correction;
    }
  }

  // O += P V: two adjacent n8 score blocks are exactly one A fragment (keys 16j..16j+15).
#pragma unroll
  for (int j = 0; j < kKeys / 16; ++j) {
    const uint32_t a[4] = {PackBf16x2(s[2 * j][0], s[2 * j][1]), PackBf16x2(s[2 * j][2], s[2 * j][3]),
                           PackBf16x2(s[2 * j + 1][0], s[2 * j + 1][1]),
                           PackBf16x2(s[2 * j + 1][2], s[2 * j + 1][3])};
#pragma unroll
    for (int d2 = 0; d2 < kHeadDimPad / 16; ++d2) {
      // Matrices (transposed): keys +0..7 / dims +0..7, keys +8..15 / dims +0..7, then dims
      // +8..15.
      uint32_t b[4];
      LdMatrixX4Trans(b, SmemAddr(v_s + (j * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLd +
                                  d2 * 16 + (lane >> 4) * 8));
      MmaBf16(o[2 * d2], a, b[0], b[1]);
      MmaBf16(o[2 * d2 + 1], a, b[2], b[3]);
    }
  }
}

template <int kHeadDimPad, int kWarps>
__global__ void __launch_bounds__(kWarps * 32, (AttnConfig<kHeadDimPad, kWarps>::kMinBlocks))
    AttentionKernel(const AttnParams p) {
  using Cfg = AttnConfig<kHeadDimPad, kWarps>;
  constexpr int kThreads = Cfg::kThreads, kRows = Cfg::kRows, kKeys = Cfg::kKeys;
  constexpr int kLd = Cfg::kLd, kChunks = Cfg::kChunks, kStages = Cfg::kStages;
  constexpr int kDimFrags = kHeadDimPad / 8;  // n8 blocks of the output
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* s_q = reinterpret_cast<bf16*>(smem_raw);  // [kRows][kLd]
  bf16* s_k = s_q + kRows * kLd;                  // [kStages][kKeys][kLd]
  bf16* s_v = s_k + kStages * kKeys * kLd;        // [kStages][kKeys][kLd]

  const int64_t tile = blockIdx.x;
  const int kvh = blockIdx.y;
  const int split = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;

  const TileInfo ti = LoadTile(p, tile);
  if (ti.num_tok <= 0) return;
  const int group = p.group, head_dim = p.head_dim, num_heads = p.num_heads;
  const int num_rows = ti.num_tok * group;

  // This block's keys: its split's range, cut at the table's capacity and at the tile's last
  // position (the causal limit of its last row).
  int kv_begin = 0, kv_end = ti.kv_len;
  if (p.num_splits > 1) {
    const int64_t begin = static_cast<int64_t>(split) * p.kv_chunk;
    kv_begin = static_cast<int>(min(begin, static_cast<int64_t>(ti.kv_len)));
    if (split + 1 < p.num_splits) {
      kv_end = static_cast<int>(min(begin + p.kv_chunk, static_cast<int64_t>(ti.kv_len)));
    }
  }
  kv_end = min(kv_end, p.max_keys);
  const int kv_hi = min(kv_end, ti.pos_first + ti.num_tok);
  const int num_kv_tiles = kv_hi > kv_begin ? (kv_hi - kv_begin + kKeys - 1) / kKeys : 0;

  if (num_kv_tiles == 0) {
    // No key for any row: a padding sequence (kv_len 0) or, with splits, a split past the rows'
    // positions, which the merge never reads. Without splits the rows are zeros.
    if (p.num_splits == 1) {
      const int pairs = head_dim / 2;
      for (int idx = tid; idx < num_rows * pairs; idx += kThreads) {
        const int r = idx / pairs, c = (idx - r * pairs) * 2;
        const int token = r / group, hig = r - token * group;
        bf16* o = p.out + (static_cast<int64_t>(ti.row0 + token) * num_heads + kvh * group + hig) *
                              head_dim;
        *reinterpret_cast<__nv_bfloat162*>(o + c) = __floats2bfloat162_rn(0.0f, 0.0f);
      }
    }
    return;
  }

  const int64_t kv_stride = static_cast<int64_t>(p.num_kv_heads) * head_dim;  // one cache slot
  const int32_t* table = p.block_tables + static_cast<int64_t>(ti.seq) * p.max_blocks_per_seq;

  // Gathers keys [kt, kt + kKeys) of this kv head into ring stage `stage`; keys >= kv_hi and the
  // padding columns are zero-filled.
  auto load_kv = [&](int kt, int stage) {
    bf16* k_dst = s_k + stage * kKeys * kLd;
    bf16* v_dst = s_v + stage * kKeys * kLd;
    for (int idx = tid; idx < kKeys * kChunks; idx += kThreads) {
      const int r = idx / kChunks, c = idx - r * kChunks;
      const int key = kt + r;
      const bool valid = key < kv_hi && c * 8 < head_dim;
      const bf16* k_src = p.k_cache;
      const bf16* v_src = p.v_cache;
      if (valid) {
        const int64_t slot =
            static_cast<int64_t>(table[key / p.block_size]) * p.block_size + key % p.block_size;
        const int64_t off = slot * kv_stride + static_cast<int64_t>(kvh) * head_dim + c * 8;
        k_src += off;
        v_src += off;
      }
      CpAsync16(SmemAddr(k_dst + r * kLd + c * 8), k_src, valid);
      CpAsync16(SmemAddr(v_dst + r * kLd + c * 8), v_src, valid);
    }
  };

  for (int rb0 = 0; rb0 < num_rows; rb0 += kRows) {
    // One warp per 16-row slice of the pass; warps past the pass's rows only help load.
    const int warp_row0 = rb0 + warp * 16;
    const bool warp_active = warp_row0 < num_rows;
    // This thread holds rows warp_row0 + g and warp_row0 + g + 8 of the pass.
    int limit[2];  // keys < limit are visible: causal position + 1, cut at kv_hi; 0 for padding
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = warp_row0 + g + 8 * h;
      limit[h] = r < num_rows ? min(ti.pos_first + r / group + 1, kv_hi) : 0;
    }
    const int warp_last_pos =
        warp_active ? ti.pos_first + min(warp_row0 + 15, num_rows - 1) / group : -1;

    // Q rows of this pass (zeros past num_rows and past head_dim), then the first K/V tile.
    for (int idx = tid; idx < kRows * kChunks; idx += kThreads) {
      const int r = idx / kChunks, c = idx - r * kChunks;
      const int gr = rb0 + r;
      const bool valid = gr < num_rows && c * 8 < head_dim;
      const bf16* src = p.q;
      if (valid) {
        const int token = gr / group, hig = gr - token * group;
        src += (static_cast<int64_t>(ti.row0 + token) * num_heads + kvh * group + hig) * head_dim +
               c * 8;
      }
      CpAsync16(SmemAddr(s_q + r * kLd + c * 8), src, valid);
    }
    load_kv(kv_begin, 0);
    CpAsyncCommit();
    // The ring's other stages but one are filled ahead; every step commits a group (maybe empty)
    // so that "all but the newest kStages - 1 groups" always means "tile it has landed".
    for (int st = 1; st < kStages - 1; ++st) {
      if (st < num_kv_tiles) load_kv(kv_begin + st * kKeys, st);
      CpAsyncCommit();
    }

    float o[kDimFrags][4];
#pragma unroll
    for (int d = 0; d < kDimFrags; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float row_max[2] = {-INFINITY, -INFINITY};  // log2 domain
    float row_sum[2] = {0.0f, 0.0f};            // this thread's columns only until the end

    for (int it = 0; it < num_kv_tiles; ++it) {
      const int kt = kv_begin + it * kKeys;
      const int ahead = it + kStages - 1;  // into the stage read in iteration it - 1
      if (ahead < num_kv_tiles) load_kv(kv_begin + ahead * kKeys, ahead % kStages);
      CpAsyncCommit();
      CpAsyncWait<kStages - 1>();  // tile it (and, at it = 0, Q) has landed
      __syncthreads();

      if (warp_active && kt <= warp_last_pos) {  // else every key here is masked for the warp
        AttendKeys<kKeys, kHeadDimPad, kLd>(
            s_q + warp * 16 * kLd, s_k + (it % kStages) * kKeys * kLd,
            s_v + (it % kStages) * kKeys * kLd, kt, limit, p.scale_log2, o, row_max, row_sum, lane);
      }
      __syncthreads();  // the stage just read is refilled in the next iteration
    }

    // The quad's partial sums make the row's sum.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
      row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
    }

    // Straight to `out` (bf16, normalised) or to this split's partials (fp32, unnormalised, with
    // max and sum).
    if (warp_active) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = warp_row0 + g + 8 * h;
        if (r >= num_rows) continue;
        const int token = r / group, head = kvh * group + (r - token * group);
        if (p.num_splits == 1) {
          const float inv = row_sum[h] > 0.0f ? 1.0f / row_sum[h] : 0.0f;
          bf16* dst = p.out + (static_cast<int64_t>(ti.row0 + token) * num_heads + head) * head_dim;
#pragma unroll
          for (int d = 0; d < kDimFrags; ++d) {
            const int c = d * 8 + 2 * t4;  // even; head_dim % 8 == 0, so c + 1 < head_dim too
            if (c < head_dim) {
              *reinterpret_cast<__nv_bfloat162*>(dst + c) =
                  __floats2bfloat162_rn(o[d][2 * h] * inv, o[d][2 * h + 1] * inv);
            }
          }
        } else {
          const int64_t pr = static_cast<int64_t>(split) * p.partial_rows +
                             PartialRow(tile, token, head, num_heads);
          float* dst = p.partials + pr * head_dim;
#pragma unroll
          for (int d = 0; d < kDimFrags; ++d) {
            const int c = d * 8 + 2 * t4;
            if (c < head_dim) {
              *reinterpret_cast<float2*>(dst + c) = make_float2(o[d][2 * h], o[d][2 * h + 1]);
            }
          }
          if (t4 == 0) {
            float* stats =
                p.partials + static_cast<int64_t>(p.num_splits) * p.partial_rows * head_dim;
            *reinterpret_cast<float2*>(stats + pr * 2) = make_float2(row_max[h], row_sum[h]);
          }
        }
      }
    }
  }
}

constexpr int kMergeWarps = 4;

// Combines the splits of one (tile, query head), a warp per token: out = sum_z w_z acc_z /
// sum_z w_z l_z with w_z = 2^(m_z - max m). Only splits z with z * kv_chunk <= position are read:
// those are the blocks that saw at least one key of the row (finite max, positive sum) and wrote
// it. Lanes take the splits' statistics 32 at a time.
__global__ void __launch_bounds__(kMergeWarps * 32) AttentionMergeKernel(const AttnParams p) {
  const int64_t tile = blockIdx.x;
  const int head = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const TileInfo ti = LoadTile(p, tile);
  const int head_dim = p.head_dim, num_heads = p.num_heads;
  const float* stats = p.partials + static_cast<int64_t>(p.num_splits) * p.partial_rows * head_dim;
  for (int token = warp; token < ti.num_tok; token += kMergeWarps) {
    const int pos = ti.pos_first + token;
    const int num_z = pos < 0 ? 0 : min(p.num_splits, pos / p.kv_chunk + 1);
    const int64_t row = PartialRow(tile, token, head, num_heads);
    float m = -INFINITY;
    for (int z = lane; z < num_z; z += 32) m = fmaxf(m, stats[(z * p.partial_rows + row) * 2]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float total = 0.0f;
    for (int z = lane; z < num_z; z += 32) {
      const float2 ml = *reinterpret_cast<const float2*>(stats + (z * p.partial_rows + row) * 2);
      total += exp2f(ml.x - m) * ml.y;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
    const float inv = total > 0.0f ? 1.0f / total : 0.0f;
    bf16* dst = p.out + (static_cast<int64_t>(ti.row0 + token) * num_heads + head) * head_dim;
    for (int c = lane * 2; c < head_dim; c += 64) {
      float a0 = 0.0f, a1 = 0.0f;
      for (int z = 0; z < num_z; ++z) {
        const int64_t pr = z * p.partial_rows + row;
        const float w = exp2f(stats[pr * 2] - m);
        const float2 acc = *reinterpret_cast<const float2*>(p.partials + pr * head_dim + c);
        a0 += w * acc.x;
        a1 += w * acc.y;
      }
      *reinterpret_cast<__nv_bfloat162*>(dst + c) = __floats2bfloat162_rn(a0 * inv, a1 * inv);
    }
  }
}

template <int kHeadDimPad, int kWarps>
cudaError_t LaunchAttention(cudaStream_t stream, const AttnParams& p, int64_t num_tiles) {
  using Cfg = AttnConfig<kHeadDimPad, kWarps>;
  auto kernel = AttentionKernel<kHeadDimPad, kWarps>;
  // Above 48 KiB dynamic shared memory must be opted into; a function attribute, not a stream
  // operation, so it is legal while a graph is being captured.
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(Cfg::kSmemBytes));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>(p.num_kv_heads),
                  static_cast<unsigned>(p.num_splits));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

template <int kWarps>
cudaError_t LaunchForHeadDim(cudaStream_t stream, const AttnParams& p, int64_t num_tiles) {
  if (p.head_dim <= 16) return LaunchAttention<16, kWarps>(stream, p, num_tiles);
  if (p.head_dim <= 32) return LaunchAttention<32, kWarps>(stream, p, num_tiles);
  if (p.head_dim <= 64) return LaunchAttention<64, kWarps>(stream, p, num_tiles);
  if (p.head_dim <= 128) return LaunchAttention<128, kWarps>(stream, p, num_tiles);
  return LaunchAttention<256, kWarps>(stream, p, num_tiles);
}

}  // namespace

cudaError_t RopeQkvToCache(cudaStream_t stream, const RopeQkvArgs& a) {
  if (a.qkv == nullptr || a.positions == nullptr || a.slot_mapping == nullptr ||
      a.inv_freq == nullptr || a.q == nullptr || a.k_cache == nullptr || a.v_cache == nullptr ||
      a.num_tokens < 0 || a.num_tokens > INT_MAX || a.num_heads <= 0 || a.num_kv_heads <= 0 ||
      a.num_heads > 65536 || a.num_kv_heads > 65536 || a.head_dim <= 0 || a.head_dim % 2 != 0 ||
      a.head_dim > kMaxHeadDim) {
    return cudaErrorInvalidValue;
  }
  if (a.num_tokens == 0) return cudaSuccess;
  RopeQkvKernel<<<static_cast<unsigned>(a.num_tokens), kRopeThreads, 0, stream>>>(
      a.qkv, a.positions, a.slot_mapping, a.inv_freq, a.q, a.k_cache, a.v_cache,
      static_cast<int>(a.num_heads), static_cast<int>(a.num_kv_heads),
      static_cast<int>(a.head_dim));
  return cudaGetLastError();
}

// Zero when there is a single split: that path writes `out` directly and needs no scratch.
int64_t AttentionPartialsFloats(int64_t num_tiles, int64_t num_heads, int64_t head_dim,
                                int64_t num_splits) {
  if (num_splits <= 1 || num_tiles <= 0 || num_heads <= 0 || head_dim <= 0) return 0;
  return num_splits * num_tiles * kTileRows * num_heads * (head_dim + 2);
}

cudaError_t Attention(cudaStream_t stream, const AttentionArgs& a) {
  // head_dim: a multiple of 8 (every row is whole 16-byte chunks) up to 256; that covers the
  // multiples of 16 and the small test models (head_dim 8).
  if (a.q == nullptr || a.k_cache == nullptr || a.v_cache == nullptr || a.block_tables == nullptr ||
      a.q_start == nullptr || a.kv_len == nullptr || a.tile_seq == nullptr ||
      a.tile_row == nullptr || a.out == nullptr || a.num_tiles < 0 || a.num_tiles > INT_MAX ||
      a.num_rows < 0 || a.num_heads <= 0 || a.num_kv_heads <= 0 || a.num_kv_heads > 65535 ||
      a.num_heads > 65536 || a.num_heads % a.num_kv_heads != 0 || a.head_dim <= 0 ||
      a.head_dim % 8 != 0 || a.head_dim > kMaxHeadDim || a.block_size <= 0 ||
      a.block_size > INT_MAX || a.max_blocks_per_seq <= 0 || a.max_blocks_per_seq > INT_MAX ||
      a.num_splits < 1 || a.num_splits > 65535 ||
      (a.num_splits > 1 && (a.partials == nullptr || a.kv_chunk <= 0 || a.kv_chunk > INT_MAX))) {
    return cudaErrorInvalidValue;
  }
  if (a.num_tiles == 0) return cudaSuccess;
  AttnParams p;
  p.q = a.q;
  p.k_cache = a.k_cache;
  p.v_cache = a.v_cache;
  p.block_tables = a.block_tables;
  p.q_start = a.q_start;
  p.kv_len = a.kv_len;
  p.tile_seq = a.tile_seq;
  p.tile_row = a.tile_row;
  p.out = a.out;
  p.partials = a.partials;
  p.partial_rows = a.num_tiles * kTileRows * a.num_heads;
  p.num_heads = static_cast<int>(a.num_heads);
  p.num_kv_heads = static_cast<int>(a.num_kv_heads);
  p.head_dim = static_cast<int>(a.head_dim);
  p.group = static_cast<int>(a.num_heads / a.num_kv_heads);
  p.block_size = static_cast<int>(a.block_size);
  p.max_blocks_per_seq = static_cast<int>(a.max_blocks_per_seq);
  p.max_keys = static_cast<int>(std::min<int64_t>(a.max_blocks_per_seq * a.block_size, INT_MAX));
  p.num_splits = static_cast<int>(a.num_splits);
  p.kv_chunk = a.num_splits > 1 ? static_cast<int>(a.kv_chunk) : INT_MAX;
  p.scale_log2 = a.scale * kLog2e;

  // 4 warps hold 64 rows: a whole 16-token tile up to group 4; 8 warps up to group 8.
  cudaError_t err = p.group <= 4 ? LaunchForHeadDim<4>(stream, p, a.num_tiles)
                                 : LaunchForHeadDim<8>(stream, p, a.num_tiles);
  if (err != cudaSuccess || p.num_splits == 1) return err;
  const dim3 merge_grid(static_cast<unsigned>(a.num_tiles), static_cast<unsigned>(a.num_heads));
  AttentionMergeKernel<<<merge_grid, kMergeWarps * 32, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
