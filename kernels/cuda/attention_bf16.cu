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
// over blocks of rows. Warps without a real row skip the math but still load. Each key and value
// of a sequence is read once per kv head, whatever the group.
//
// Few rows (decode): a block with at most 16 rows (a decode tile has `group`; a prefill tile of
// group 1, or of a few tokens) would leave all but one warp idle, and a decode block lives only a
// few key tiles, so one warp doing QK^T, softmax and PV per tile in series is latency it cannot
// hide. Instead the warps split the keys: each K/V tile is cut into 16-key slices (4, or 2 for
// head_dim > 128), warp w takes slice w of every tile against the same 16 rows with an online
// softmax state of its own (in 8-warp blocks the other 4 only load), and at the end the warps'
// (max, sum, output) are merged through shared memory with the split merge's arithmetic. Q goes
// straight from global memory into mma fragments, so the whole shared memory is a three-stage K/V
// ring (one barrier per tile; head_dim 64: 55296 bytes, still 4 blocks per SM).
//
// Decode kernel: when every tile is one query token (num_tiles == num_rows, as each tile covers at
// least one row: a pure decode batch, what the decode graphs run), group <= 16 and head_dim <= 128,
// Attention launches AttentionDecodeKernel instead, one block of 8 warps per (tile, kv heads
// group, split). Its block takes up to 8 kv heads of the token (fewer only when the grid would
// leave SMs empty: 64 sequences x 8 heads take 2 heads a block, 256 blocks), so a key slot's K
// and V for all of them are each one contiguous run (1 KB for 8 heads of 64, where a block per
// kv head reads 128 bytes of every 1 KB), and a block's fixed costs (tile info -> block table ->
// first copies, pipeline fill, merge) are paid once per sequence rather than once per (sequence,
// kv head): 256 sequences are 256 blocks, not 2048. Warps map to (kv head, 16-key slice of each
// K/V tile), the A rows of a warp being its head's query heads; a ring of three stages of 128
// (head, key) rows of K and V (head_dim 64: 36 KB a stage, 108 KB in all, two blocks per SM, so
// 256 sequences are one wave on 132 SMs with four stages in flight per SM; head_dim 128: 204 KB,
// one block) and the same merge as the few-rows path.
//
// K/V come in tiles of 64 keys (32 for head_dim > 128, to fit shared memory), gathered through the
// block table one key row at a time (a slot per key: tiles need not align with cache blocks) with
// 16-byte cp.async into a ring (two stages for passes of more rows, three for few rows), so the
// next tiles stream in while this one is multiplied. Rows are padded by 16 bytes in shared memory,
// which makes every ldmatrix conflict-free. head_dim may be any multiple of 8 up to 256 (whole
// 16-byte chunks; the test models have 8 and 16): it is rounded up to 16/32/64/128/256 in shared
// memory and the extra columns are zero-filled by the copy itself (cp.async with a source size of
// 0), as are keys past the block's range: whatever the cache holds there (even NaN) is never read,
// so p = 0 never meets a NaN value row.
//
// Masking: a key is visible to a row when it is below min(row position + 1, block end); masked
// scores are -inf, and a row that has seen nothing yet keeps max -inf, subtracting 0 instead so no
// inf - inf appears. Split-KV: block z takes keys [z * kv_chunk, (z + 1) * kv_chunk) (the last
// split takes the rest of the sequence, so too few splits lose nothing) and stores its rows'
// unnormalised output with (max, sum) in `partials`; a merge kernel combines, for each row, only
// the splits that start at or before its position, which are exactly those that saw a key of it.
//
// Measured on an H100 (K/V bytes over time) before the few-rows path and the decode kernel
// existed, when one warp of a decode block did all the math over a two-stage ring: decode of 256
// sequences, 32/8 heads, 2.2 TB/s at context 256 and 2.6 TB/s at 1024 (head_dim 64 or 128);
// 16-token prefill tiles 150-175 TFLOP/s for group 4-8, but only about 50 for group 1, where 16
// rows per block re-read K/V from L2 too often (bigger tiles for small groups would fix that).
// With the few-rows path (per-head blocks, decode, 32/8 heads, head_dim 64, block 16): 256
// sequences 1.79 TB/s at context 128, 2.23 at 256, 2.62 at 1024; 64 sequences 1.58 at 128.
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
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
  // The few-rows path (AttendFewRows): Q in registers, a deeper ring of the same K/V tiles, each
  // tile cut into 16-key slices, one per computing warp; afterwards the ring holds the warps'
  // states for the merge (fp32 rows padded by 8 floats, so the fragment stores are conflict-free).
  static constexpr int kFewStages = 3;
  static constexpr int kSliceKeys = 16;               // one k16 step of the P V product
  static constexpr int kSlices = kKeys / kSliceKeys;  // computing warps of the few-rows path
  static constexpr int kFewRingElems = 2 * kFewStages * kKeys * kLd;
  static constexpr int kMergeLd = kHeadDimPad + 8;  // floats per merge row
  static constexpr size_t kMergeBytes =
      static_cast<size_t>(kSlices) * 16 * (kMergeLd + 2) * sizeof(float);
  static constexpr size_t kPassBytes = static_cast<size_t>(kRows * kLd + kRingElems) * sizeof(bf16);
  static constexpr size_t kFewBytes = static_cast<size_t>(kFewRingElems) * sizeof(bf16);
  static constexpr size_t kSmemBytes = kPassBytes > kFewBytes ? kPassBytes : kFewBytes;
  static_assert(kKeys % kSliceKeys == 0 && kSlices <= kWarps, "a slice per computing warp");
  static_assert(kMergeBytes <= kFewBytes, "the merge reuses the few-rows ring");
};

// One warp's part of one K/V tile: its 16 query rows against kKeys keys (k_s, v_s in shared
// memory; the first is key0), updating the rows' online softmax state and output accumulators in
// registers. q_frag(kk, a) gives the A fragment of the rows' dims [16 kk, 16 kk + 16) (from shared
// memory or from registers). limit[h]: keys < limit[h] are visible to the thread's row h (row g,
// then g + 8).
template <int kKeys, int kHeadDimPad, int kLd, class QFrag>
__device__ __forceinline__ void AttendKeys(const QFrag& q_frag, const bf16* k_s, const bf16* v_s,
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
    uint32_t a[4];
    q_frag(kk, a);
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
    const uint32_t a[4] = {
        PackBf16x2(s[2 * j][0], s[2 * j][1]), PackBf16x2(s[2 * j][2], s[2 * j][3]),
        PackBf16x2(s[2 * j + 1][0], s[2 * j + 1][1]), PackBf16x2(s[2 * j + 1][2], s[2 * j + 1][3])};
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

// A warp's Q as mma A fragments straight from global memory (row-major m16 x k16 blocks: registers
// j = 0..3 hold rows g / g + 8 and columns 2t4 / 2t4 + 8 of block kk), zeros for a row without a
// pointer and past head_dim (pairs are even and head_dim % 8 == 0: inside the row or wholly past).
template <int kHeadDimPad>
__device__ __forceinline__ void LoadQFragments(const bf16* const (&q_row)[2], int head_dim, int t4,
                                               uint32_t (&q_regs)[kHeadDimPad / 16][4]) {
#pragma unroll
  for (int kk = 0; kk < kHeadDimPad / 16; ++kk) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int h = j & 1, c = kk * 16 + (j >> 1) * 8 + 2 * t4;
      q_regs[kk][j] = 0u;
      if (q_row[h] != nullptr && c < head_dim) {
        q_regs[kk][j] = __ldg(reinterpret_cast<const unsigned int*>(q_row[h] + c));
      }
    }
  }
}

// A warp's online-softmax state for its 16 rows, into the merge area: completes each row's sum
// over the quad, then stores the rows below `rows` (the unnormalised output to s_o's row r, with
// stride kMergeLd, and (max, sum) to s_ml[r]).
template <int kDimFrags, int kMergeLd>
__device__ __forceinline__ void StoreWarpState(const float (&o)[kDimFrags][4],
                                               const float (&row_max)[2], float (&row_sum)[2],
                                               int rows, int lane, float* s_o, float2* s_ml) {
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = g + 8 * h;
    if (r >= rows) continue;
    float* dst = s_o + r * kMergeLd;
#pragma unroll
    for (int d = 0; d < kDimFrags; ++d) {
      *reinterpret_cast<float2*>(dst + d * 8 + 2 * t4) = make_float2(o[d][2 * h], o[d][2 * h + 1]);
    }
    if (t4 == 0) s_ml[r] = make_float2(row_max[h], row_sum[h]);
  }
}

// A pass of at most 16 rows (a decode tile: group rows; or a prefill tile of few rows): one m16
// slice holds them all, so rather than one warp walking every key while the others only load, each
// K/V tile is cut into kSlices slices of 16 keys and warp w takes keys [16 w, 16 w + 16) of every
// tile against the same rows, with an online softmax state of its own. Q goes from global memory
// straight into A fragments (registers), which leaves the shared memory to a kFewStages-deep ring
// with one barrier per tile. At the end the warps' (max, sum, output) go through shared memory and
// every thread combines them for some (row, column pair): out = sum_w 2^(m_w - m) o_w /
// sum_w 2^(m_w - m) l_w with m = max_w m_w, exactly the split merge's arithmetic. A row no warp saw
// a key of keeps max -inf and sum 0 (its weights are 2^-inf = 0), which gives zeros or, with
// splits, the (-inf, 0) statistics the merge kernel never reads. Called by all threads of the
// block (num_rows is the block's), so its barriers are reached by every thread.
template <int kHeadDimPad, int kWarps, class LoadKv>
__device__ __forceinline__ void AttendFewRows(const AttnParams& p, const TileInfo& ti, int64_t tile,
                                              int kvh, int split, int num_rows, int kv_begin,
                                              int kv_hi, int num_kv_tiles, unsigned char* smem,
                                              const LoadKv& load_kv) {
  using Cfg = AttnConfig<kHeadDimPad, kWarps>;
  constexpr int kThreads = Cfg::kThreads, kKeys = Cfg::kKeys, kLd = Cfg::kLd;
  constexpr int kStages = Cfg::kFewStages, kSliceKeys = Cfg::kSliceKeys, kSlices = Cfg::kSlices;
  constexpr int kDimFrags = kHeadDimPad / 8;
  static_assert(kStages >= 2, "the ring overlaps a tile's math with the next tiles' loads");
  bf16* s_k = reinterpret_cast<bf16*>(smem);  // [kStages][kKeys][kLd]
  bf16* s_v = s_k + kStages * kKeys * kLd;    // [kStages][kKeys][kLd]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int group = p.group, head_dim = p.head_dim, num_heads = p.num_heads;
  const bool computes = warp < kSlices;  // warp-uniform; warps past the slices only load

  // The ring's first kStages - 1 tiles, a commit group each (maybe empty): group j is tile j.
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < num_kv_tiles) {
      load_kv(kv_begin + st * kKeys, s_k + st * kKeys * kLd, s_v + st * kKeys * kLd);
    }
    CpAsyncCommit();
  }

  // This thread's rows g and g + 8 (zeros past num_rows and past head_dim), in the A fragment
  // layout: a0 = (g, 2t..), a1 = (g + 8, 2t..), a2 = (g, 2t + 8..), a3 = (g + 8, 2t + 8..). Column
  // pairs are even and head_dim % 8 == 0, so a pair is inside the row or wholly past it.
  int limit[2];  // keys < limit are visible: causal position + 1, cut at kv_hi; 0 for padding
  const bf16* q_row[2] = {nullptr, nullptr};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = g + 8 * h;
    limit[h] = 0;
    if (computes && r < num_rows) {
      const int token = r / group, hig = r - token * group;
      limit[h] = min(ti.pos_first + token + 1, kv_hi);
      q_row[h] =
          p.q + (static_cast<int64_t>(ti.row0 + token) * num_heads + kvh * group + hig) * head_dim;
    }
  }
  uint32_t q_regs[kHeadDimPad / 16][4];
  LoadQFragments<kHeadDimPad>(q_row, head_dim, t4, q_regs);
  auto q_frag = [&](int kk, uint32_t(&a)[4]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) a[j] = q_regs[kk][j];
  };

  float o[kDimFrags][4];
#pragma unroll
  for (int d = 0; d < kDimFrags; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};  // log2 domain
  float row_sum[2] = {0.0f, 0.0f};            // this thread's columns only until the end

  const int slice0 = warp * kSliceKeys;
  for (int it = 0; it < num_kv_tiles; ++it) {
    // Groups committed so far: tiles 0 .. it + kStages - 2; all but the newest kStages - 2 done
    // means tile it has landed. The barrier makes every thread's copies visible and tells that
    // every warp is done with tile it - 1, whose stage the next load refills.
    CpAsyncWait<kStages - 2>();
    __syncthreads();
    const int ahead = it + kStages - 1;
    if (ahead < num_kv_tiles) {
      const int st = ahead % kStages;
      load_kv(kv_begin + ahead * kKeys, s_k + st * kKeys * kLd, s_v + st * kKeys * kLd);
    }
    CpAsyncCommit();

    const int key0 = kv_begin + it * kKeys + slice0;
    if (computes && key0 < kv_hi) {  // else every key of the slice is masked for every row
      const int st = it % kStages;
      AttendKeys<kSliceKeys, kHeadDimPad, kLd>(q_frag, s_k + (st * kKeys + slice0) * kLd,
                                               s_v + (st * kKeys + slice0) * kLd, key0, limit,
                                               p.scale_log2, o, row_max, row_sum, lane);
    }
  }

  // The ring becomes the merge area: no copy may still be landing (the trailing groups are empty,
  // but wait for them anyway) and no warp may still be reading a tile.
  CpAsyncWait<0>();
  __syncthreads();
  constexpr int kMergeLd = Cfg::kMergeLd;
  float* s_o = reinterpret_cast<float*>(smem);  // [kSlices][16][kMergeLd]
  float2* s_ml = reinterpret_cast<float2*>(s_o + kSlices * 16 * kMergeLd);  // [kSlices][16]
  if (computes) {
    StoreWarpState<kDimFrags, kMergeLd>(o, row_max, row_sum, num_rows, lane,
                                        s_o + warp * 16 * kMergeLd, s_ml + warp * 16);
  }
  __syncthreads();

  // Straight to `out` (bf16, normalised) or to this split's partials (fp32, unnormalised, with
  // max and sum), a column pair per thread: consecutive threads write consecutive pairs.
  const int pairs = head_dim / 2;
  for (int idx = tid; idx < num_rows * pairs; idx += kThreads) {
    const int r = idx / pairs, c = (idx - r * pairs) * 2;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kSlices; ++w) m = fmaxf(m, s_ml[w * 16 + r].x);
    const float base = m == -INFINITY ? 0.0f : m;  // no key at all: every weight 2^-inf = 0
    float sum = 0.0f, a0 = 0.0f, a1 = 0.0f;
#pragma unroll
    for (int w = 0; w < kSlices; ++w) {
      const float2 ml = s_ml[w * 16 + r];
      const float wt = exp2f(ml.x - base);
      const float2 acc = *reinterpret_cast<const float2*>(s_o + (w * 16 + r) * kMergeLd + c);
      sum += wt * ml.y;
      a0 += wt * acc.x;
      a1 += wt * acc.y;
    }
    const int token = r / group, head = kvh * group + (r - token * group);
    if (p.num_splits == 1) {
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      bf16* dst = p.out + (static_cast<int64_t>(ti.row0 + token) * num_heads + head) * head_dim;
      *reinterpret_cast<__nv_bfloat162*>(dst + c) = __floats2bfloat162_rn(a0 * inv, a1 * inv);
    } else {
      const int64_t pr =
          static_cast<int64_t>(split) * p.partial_rows + PartialRow(tile, token, head, num_heads);
      *reinterpret_cast<float2*>(p.partials + pr * head_dim + c) = make_float2(a0, a1);
      if (c == 0) {
        float* stats = p.partials + static_cast<int64_t>(p.num_splits) * p.partial_rows * head_dim;
        *reinterpret_cast<float2*>(stats + pr * 2) = make_float2(m, sum);
      }
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

  // Gathers keys [kt, kt + kKeys) of this kv head into k_dst, v_dst ([kKeys][kLd] each, a ring
  // stage); keys >= kv_hi and the padding columns are zero-filled.
  auto load_kv = [&](int kt, bf16* k_dst, bf16* v_dst) {
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

  if (num_rows <= 16) {  // the block's rows fit one m16 slice: split the keys over the warps
    AttendFewRows<kHeadDimPad, kWarps>(p, ti, tile, kvh, split, num_rows, kv_begin, kv_hi,
                                       num_kv_tiles, smem_raw, load_kv);
    return;
  }

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
    load_kv(kv_begin, s_k, s_v);
    CpAsyncCommit();
    // The ring's other stages but one are filled ahead; every step commits a group (maybe empty)
    // so that "all but the newest kStages - 1 groups" always means "tile it has landed".
    for (int st = 1; st < kStages - 1; ++st) {
      if (st < num_kv_tiles) {
        load_kv(kv_begin + st * kKeys, s_k + st * kKeys * kLd, s_v + st * kKeys * kLd);
      }
      CpAsyncCommit();
    }

    // The warp's rows from shared memory. Matrices: rows +0..7 / dims +0..7, rows +8..15 /
    // dims +0..7, then dims +8..15.
    const bf16* q_w = s_q + warp * 16 * kLd;
    auto q_frag = [&](int kk, uint32_t(&a)[4]) {
      LdMatrixX4(a, SmemAddr(q_w + ((lane & 7) + ((lane >> 3) & 1) * 8) * kLd + kk * 16 +
                             (lane >> 4) * 8));
    };

    float o[kDimFrags][4];
#pragma unroll
    for (int d = 0; d < kDimFrags; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float row_max[2] = {-INFINITY, -INFINITY};  // log2 domain
    float row_sum[2] = {0.0f, 0.0f};            // this thread's columns only until the end

    for (int it = 0; it < num_kv_tiles; ++it) {
      const int kt = kv_begin + it * kKeys;
      const int ahead = it + kStages - 1;  // into the stage read in iteration it - 1
      if (ahead < num_kv_tiles) {
        const int st = ahead % kStages;
        load_kv(kv_begin + ahead * kKeys, s_k + st * kKeys * kLd, s_v + st * kKeys * kLd);
      }
      CpAsyncCommit();
      CpAsyncWait<kStages - 1>();  // tile it (and, at it = 0, Q) has landed
      __syncthreads();

      if (warp_active && kt <= warp_last_pos) {  // else every key here is masked for the warp
        AttendKeys<kKeys, kHeadDimPad, kLd>(q_frag, s_k + (it % kStages) * kKeys * kLd,
                                            s_v + (it % kStages) * kKeys * kLd, kt, limit,
                                            p.scale_log2, o, row_max, row_sum, lane);
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

// ---------------------------------------------------------------------------------------------
// Decode: one block per (tile, group of kv heads, split) when every tile is one query token.

// Shapes of the decode kernel for one padded head_dim. A block of 8 warps takes 2^heads_log2 kv
// heads (1, 2, 4 or 8; chosen at launch) of one tile, 8 >> heads_log2 warps per kv head. A K/V
// tile is 16 keys per warp of a head: 8 heads x 16 keys, 4 x 32, 2 x 64 or 1 x 128, always
// kUnits = 128 (kv head, key) rows of K and as many of V, so the stage size does not depend on the
// split of warps over heads. Stage layout [head][key][kLd] (a head's rows are a [keys][kLd]
// matrix, rows padded by 16 bytes as in the tile kernel: ldmatrix stays conflict-free).
template <int kHeadDimPad>
struct DecodeConfig {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kSliceKeys = 16;               // keys per warp per K/V tile
  static constexpr int kUnits = kWarps * kSliceKeys;  // (kv head, key) rows per stage
  static constexpr int kLd = kHeadDimPad + 8;         // smem row stride (elements)
  static constexpr int kChunks = kHeadDimPad / 8;     // 16-byte chunks per padded row
  static constexpr int kChunksLog2 = kChunks == 2 ? 1 : kChunks == 4 ? 2 : kChunks == 8 ? 3 : 4;
  static constexpr int kStages = 3;
  static constexpr int kStageElems = kUnits * kLd;  // the K (or the V) half of a stage
  static constexpr int kLoadIters = kUnits * kChunks / kThreads;  // K chunks per thread per tile
  static constexpr int kMergeLd = kHeadDimPad + 8;                // floats per merge row
  static constexpr size_t kMergeBytes =
      static_cast<size_t>(kWarps) * 16 * (kMergeLd + 2) * sizeof(float);
  static constexpr size_t kSmemBytes =
      static_cast<size_t>(2 * kStages * kStageElems) * sizeof(bf16);
  // head_dim <= 64: 2 blocks per SM (head_dim 64: 2 x 110592 bytes of shared memory, 128
  // registers a thread); head_dim 128: 208896 bytes, one block.
  static constexpr int kMinBlocks = kHeadDimPad <= 64 ? 2 : 1;
  static_assert(kHeadDimPad >= 16 && kHeadDimPad <= 128 && (1 << kChunksLog2) == kChunks,
                "head_dim padded to 16, 32, 64 or 128");
  static_assert((kUnits * kChunks) % kThreads == 0, "whole chunks per thread");
  static_assert(kMergeBytes <= kSmemBytes, "the merge reuses the ring");
};

// The decode kernel: each tile is one query token (num_tiles == num_rows), so a block takes
// several kv heads of it (see DecodeConfig) and every key slot it reads is one contiguous run of
// heads * head_dim * 2 bytes of K and of V (1 KB each for 8 kv heads of 64), not one 128-byte
// piece of a 1 KB row per block; the per-block fixed costs (tile info, block table, pipeline
// fill, merge) are paid once per heads group instead of once per kv head. Warp w serves kv head
// w >> slices_log2 of the block, and of each K/V tile the 16-key slice w & (slices - 1): its 16
// A rows are the head's `group` query heads (group <= 16; rows past it are zeros and see no key)
// with an online softmax state of its own in registers, as in AttendFewRows. The ring is three
// stages deep, one barrier per tile; the block table entries of the tile two ahead are read
// before the math of this one and its copies issued after it, so their latency hides behind the
// math. At the end the warps' states go through shared memory (the ring) and each (query head,
// column pair) is merged over the warps of its kv head with the split merge's arithmetic, then
// written to `out` or to the split's partials: the block's query heads are consecutive there, so
// the stores are contiguous. Split semantics, zero rows for kv_len 0 and the partials layout are
// AttentionKernel's.
template <int kHeadDimPad>
__global__ void __launch_bounds__(DecodeConfig<kHeadDimPad>::kThreads,
                                  DecodeConfig<kHeadDimPad>::kMinBlocks)
    AttentionDecodeKernel(const AttnParams p, const int heads_log2) {
  using Cfg = DecodeConfig<kHeadDimPad>;
  constexpr int kThreads = Cfg::kThreads, kLd = Cfg::kLd, kChunks = Cfg::kChunks;
  constexpr int kChunksLog2 = Cfg::kChunksLog2, kStages = Cfg::kStages;
  constexpr int kStageElems = Cfg::kStageElems, kLoadIters = Cfg::kLoadIters;
  constexpr int kSliceKeys = Cfg::kSliceKeys, kWarps = Cfg::kWarps;
  constexpr int kDimFrags = kHeadDimPad / 8;
  static_assert(kStages >= 2, "the ring overlaps a tile's math with the next tiles' loads");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* s_k = reinterpret_cast<bf16*>(smem_raw);  // [kStages][heads][keys][kLd]
  bf16* s_v = s_k + kStages * kStageElems;        // same

  const int64_t tile = blockIdx.x;
  const int kvh0 = static_cast<int>(blockIdx.y) << heads_log2;  // the block's first kv head
  const int split = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int slices_log2 = 3 - heads_log2;  // warps per kv head: 8 / heads
  const int keys_log2 = 4 + slices_log2;   // keys per K/V tile: 16 per warp of a head
  const int heads = min(1 << heads_log2, p.num_kv_heads - kvh0);  // kv heads really here
  const int head_local = warp >> slices_log2;                     // warp-uniform
  const int slice = warp & ((1 << slices_log2) - 1);
  const bool computes = head_local < heads;  // warp-uniform; the others only load

  const TileInfo ti = LoadTile(p, tile);
  if (ti.num_tok <= 0) return;  // block-uniform
  const int group = p.group, head_dim = p.head_dim, num_heads = p.num_heads;

  // Keys: as AttentionKernel for a tile of one token at position pos_first.
  int kv_begin = 0, kv_end = ti.kv_len;
  if (p.num_splits > 1) {
    const int64_t begin = static_cast<int64_t>(split) * p.kv_chunk;
    kv_begin = static_cast<int>(min(begin, static_cast<int64_t>(ti.kv_len)));
    if (split + 1 < p.num_splits) {
      kv_end = static_cast<int>(min(begin + p.kv_chunk, static_cast<int64_t>(ti.kv_len)));
    }
  }
  kv_end = min(kv_end, p.max_keys);
  const int kv_hi = min(kv_end, ti.pos_first + 1);
  const int num_kv_tiles = kv_hi > kv_begin ? ((kv_hi - kv_begin - 1) >> keys_log2) + 1 : 0;

  // The block's query heads: kvh0 * group .. + heads * group, consecutive in `out` and partials.
  const int num_q = heads * group;
  const int pairs = head_dim / 2;
  const int64_t q_head0 = static_cast<int64_t>(ti.row0) * num_heads + kvh0 * group;

  if (num_kv_tiles == 0) {  // block-uniform
    // No key: a padding sequence (kv_len 0) or a split past the position, which the merge never
    // reads. Without splits the rows are zeros.
    if (p.num_splits == 1) {
      __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(p.out + q_head0 * head_dim);
      for (int idx = tid; idx < num_q * pairs; idx += kThreads) {
        o[idx] = __floats2bfloat162_rn(0.0f, 0.0f);
      }
    }
    return;
  }

  const int64_t kv_stride = static_cast<int64_t>(p.num_kv_heads) * head_dim;  // one cache slot
  const int32_t* table = p.block_tables + static_cast<int64_t>(ti.seq) * p.max_blocks_per_seq;
  const int block_size = p.block_size;

  // A thread's share of a K/V tile: chunks idx = tid + i * kThreads, i < kLoadIters, where idx is
  // (key, head, chunk) with the chunk fastest, so consecutive threads read consecutive 16 bytes of
  // a key slot's heads. slot[i]: the cache slot of chunk i's key, -1 at or past kv_hi (the copy
  // then zero-fills: whatever the cache holds there, even NaN, is never read).
  using Slots = int64_t[kLoadIters];
  auto fetch_slots = [&](int kt, Slots& slot) {
#pragma unroll
    for (int i = 0; i < kLoadIters; ++i) {
      const int key = kt + (((tid + i * kThreads) >> kChunksLog2) >> heads_log2);
      slot[i] = -1;
      if (key < kv_hi) {
        const int b = key / block_size;
        slot[i] = static_cast<int64_t>(table[b]) * block_size + (key - b * block_size);
      }
    }
  };
  auto issue_copies = [&](int stage, const Slots& slot) {
    bf16* k_dst = s_k + stage * kStageElems;
    bf16* v_dst = s_v + stage * kStageElems;
#pragma unroll
    for (int i = 0; i < kLoadIters; ++i) {
      const int idx = tid + i * kThreads;
      const int c = idx & (kChunks - 1);
      const int hr = idx >> kChunksLog2;
      const int h = hr & ((1 << heads_log2) - 1);
      const int r = hr >> heads_log2;
      if (h >= heads) continue;  // a head past the last kv head: no warp reads its rows
      // Padding columns (c * 8 >= head_dim) are zero-filled too: Q is zero there, but 0 * NaN
      // is not.
      const bool valid = slot[i] >= 0 && c * 8 < head_dim;
      const bf16* k_src = p.k_cache;
      const bf16* v_src = p.v_cache;
      if (valid) {
        const int64_t off = slot[i] * kv_stride + static_cast<int64_t>(kvh0 + h) * head_dim + c * 8;
        k_src += off;
        v_src += off;
      }
      const int dst = ((h << keys_log2) + r) * kLd + c * 8;
      CpAsync16(SmemAddr(k_dst + dst), k_src, valid);
      CpAsync16(SmemAddr(v_dst + dst), v_src, valid);
    }
  };

  // The ring's first kStages - 1 tiles, a commit group each (maybe empty): group j is tile j. All
  // their table entries are read first, so the block waits for the table once.
  {
    Slots first[kStages - 1];
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) {
      if (st < num_kv_tiles) fetch_slots(kv_begin + (st << keys_log2), first[st]);
    }
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) {
      if (st < num_kv_tiles) issue_copies(st, first[st]);
      CpAsyncCommit();
    }
  }

  // The warp's A rows: query heads (kvh0 + head_local) * group + r for r = g, g + 8 < group, in
  // the A fragment layout (a0 = (g, 2t..), a1 = (g + 8, 2t..), a2 = (g, 2t + 8..), a3 = (g + 8,
  // 2t + 8..)), zeros past group and past head_dim. Every real row sees keys [kv_begin, kv_hi).
  int limit[2];
  const bf16* q_row[2] = {nullptr, nullptr};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = g + 8 * h;
    limit[h] = 0;
    if (computes && r < group) {
      limit[h] = kv_hi;
      q_row[h] = p.q + (q_head0 + head_local * group + r) * head_dim;
    }
  }
  uint32_t q_regs[kHeadDimPad / 16][4];
  LoadQFragments<kHeadDimPad>(q_row, head_dim, t4, q_regs);
  auto q_frag = [&](int kk, uint32_t(&a)[4]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) a[j] = q_regs[kk][j];
  };

  float o[kDimFrags][4];
#pragma unroll
  for (int d = 0; d < kDimFrags; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};  // log2 domain
  float row_sum[2] = {0.0f, 0.0f};            // this thread's columns only until the end

  const int warp_off = ((head_local << keys_log2) + slice * kSliceKeys) * kLd;
  for (int it = 0; it < num_kv_tiles; ++it) {
    // Groups committed so far: tiles 0 .. it + kStages - 2; all but the newest kStages - 2 done
    // means tile it has landed. The barrier makes every thread's copies visible and tells that
    // every warp is done with tile it - 1, whose stage (that of tile it + kStages - 1) is
    // refilled below.
    CpAsyncWait<kStages - 2>();
    __syncthreads();
    const int ahead = it + kStages - 1;
    const bool load_ahead = ahead < num_kv_tiles;  // block-uniform
    Slots slot;
    if (load_ahead) fetch_slots(kv_begin + (ahead << keys_log2), slot);  // lands during the math

    const int key0 = kv_begin + (it << keys_log2) + slice * kSliceKeys;
    if (computes && key0 < kv_hi) {  // else every key of the slice is masked for every row
      const int off = (it % kStages) * kStageElems + warp_off;
      AttendKeys<kSliceKeys, kHeadDimPad, kLd>(q_frag, s_k + off, s_v + off, key0, limit,
                                               p.scale_log2, o, row_max, row_sum, lane);
    }

    if (load_ahead) issue_copies(ahead % kStages, slot);
    CpAsyncCommit();
  }

  // The ring becomes the merge area: no copy may still be landing (the trailing groups are empty,
  // but wait for them anyway) and no warp may still be reading a tile.
  CpAsyncWait<0>();
  __syncthreads();
  constexpr int kMergeLd = Cfg::kMergeLd;
  float* s_o = reinterpret_cast<float*>(smem_raw);                         // [kWarps][16][kMergeLd]
  float2* s_ml = reinterpret_cast<float2*>(s_o + kWarps * 16 * kMergeLd);  // [kWarps][16]
  if (computes) {
    StoreWarpState<kDimFrags, kMergeLd>(o, row_max, row_sum, group, lane,
                                        s_o + warp * 16 * kMergeLd, s_ml + warp * 16);
  }
  __syncthreads();

  // Query head q of the block (kv head q / group, row q % group of its warps) over the warps of its
  // kv head: out = sum_w 2^(m_w - m) o_w / sum_w 2^(m_w - m) l_w, m = max_w m_w. A warp that saw
  // no key has (-inf, 0, zeros) and weight 0. A column pair per thread, consecutive threads on
  // consecutive pairs.
  const int slices = 1 << slices_log2;
  for (int idx = tid; idx < num_q * pairs; idx += kThreads) {
    const int qh = idx / pairs, c = (idx - qh * pairs) * 2;
    const int hl = qh / group, r = qh - hl * group;
    const int w0 = hl << slices_log2;
    float m = -INFINITY;
    for (int s = 0; s < slices; ++s) m = fmaxf(m, s_ml[(w0 + s) * 16 + r].x);
    const float base = m == -INFINITY ? 0.0f : m;  // no key at all: every weight 2^-inf = 0
    float sum = 0.0f, a0 = 0.0f, a1 = 0.0f;
    for (int s = 0; s < slices; ++s) {
      const float2 ml = s_ml[(w0 + s) * 16 + r];
      const float wt = exp2f(ml.x - base);
      const float2 acc = *reinterpret_cast<const float2*>(s_o + ((w0 + s) * 16 + r) * kMergeLd + c);
      sum += wt * ml.y;
      a0 += wt * acc.x;
      a1 += wt * acc.y;
    }
    if (p.num_splits == 1) {
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      *reinterpret_cast<__nv_bfloat162*>(p.out + (q_head0 + qh) * head_dim + c) =
          __floats2bfloat162_rn(a0 * inv, a1 * inv);
    } else {
      const int64_t pr = static_cast<int64_t>(split) * p.partial_rows +
                         PartialRow(tile, 0, kvh0 * group + qh, num_heads);
      *reinterpret_cast<float2*>(p.partials + pr * head_dim + c) = make_float2(a0, a1);
      if (c == 0) {
        float* stats = p.partials + static_cast<int64_t>(p.num_splits) * p.partial_rows * head_dim;
        *reinterpret_cast<float2*>(stats + pr * 2) = make_float2(m, sum);
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

// The decode kernel's kv heads per block, as set by SetAttentionDecodeHeadsPerBlock: 0 chooses
// (DecodeHeadsLog2), a power of two forces it, < 0 turns the decode kernel off.
std::atomic<int> g_decode_heads_per_block{0};

// log2 of the kv heads a decode block takes: all of them up to 8 (the next power of two of
// num_kv_heads, so 3 heads take one block with a quarter of its warps idle), halved while the
// grid would leave SMs without a block (a small batch: fewer heads per block, more blocks, the
// warps of a head splitting its keys).
int DecodeHeadsLog2(const AttnParams& p, int64_t num_tiles, int sms) {
  int max_log2 = 0;
  while (max_log2 < 3 && (1 << max_log2) < p.num_kv_heads) ++max_log2;
  const int forced = g_decode_heads_per_block.load(std::memory_order_relaxed);
  if (forced > 0) {
    int l = 0;
    while (l < max_log2 && (2 << l) <= forced) ++l;
    return l;
  }
  int l = max_log2;
  while (l > 0) {
    const int64_t heads = int64_t{1} << l;
    // num_tiles cut at sms: the product stays far from overflowing and compares the same.
    const int64_t blocks =
        std::min<int64_t>(num_tiles, sms) * ((p.num_kv_heads + heads - 1) / heads) * p.num_splits;
    if (blocks >= sms) break;
    --l;
  }
  return l;
}

template <int kHeadDimPad>
cudaError_t LaunchDecode(cudaStream_t stream, const AttnParams& p, int64_t num_tiles,
                         int heads_log2) {
  using Cfg = DecodeConfig<kHeadDimPad>;
  auto kernel = AttentionDecodeKernel<kHeadDimPad>;
  // Function attributes, legal during capture: the shared memory above 48 KiB, and all of the
  // unified L1 as shared memory so that two head_dim-64 blocks (2 x 108 KiB) fit an SM.
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(Cfg::kSmemBytes));
  if (err != cudaSuccess) return err;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                             cudaSharedmemCarveoutMaxShared);
  if (err != cudaSuccess) return err;
  const int heads = 1 << heads_log2;
  const dim3 grid(static_cast<unsigned>(num_tiles),
                  static_cast<unsigned>((p.num_kv_heads + heads - 1) / heads),
                  static_cast<unsigned>(p.num_splits));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p, heads_log2);
  return cudaGetLastError();
}

cudaError_t LaunchDecodeForHeadDim(cudaStream_t stream, const AttnParams& p, int64_t num_tiles,
                                   int heads_log2) {
  if (p.head_dim <= 16) return LaunchDecode<16>(stream, p, num_tiles, heads_log2);
  if (p.head_dim <= 32) return LaunchDecode<32>(stream, p, num_tiles, heads_log2);
  if (p.head_dim <= 64) return LaunchDecode<64>(stream, p, num_tiles, heads_log2);
  return LaunchDecode<128>(stream, p, num_tiles, heads_log2);
}

}  // namespace

// For tests and benchmarks (fast_ops.h). Forced values are rounded down to a power of two.
void SetAttentionDecodeHeadsPerBlock(int heads) {
  g_decode_heads_per_block.store(heads, std::memory_order_relaxed);
}

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

  cudaError_t err;
  // Every tile covers at least one row, so num_tiles == num_rows means one token per tile: a pure
  // decode batch (what the decode graphs run), for the decode kernel when its A fragment holds the
  // group (<= 16) and its ring the heads (head_dim <= 128). Left to choose, only batches that give
  // every SM a (sequence, split) of its own take it: measured on an H100 (kernel_bench, 32/8 heads
  // of 64), it reads K/V 2-5% faster than the tile kernel at 256 sequences but 3-15% slower at 64
  // with contexts up to 512, where fewer heads per block cut its contiguous runs.
  const int forced = g_decode_heads_per_block.load(std::memory_order_relaxed);
  int sms = 0;
  err = SmCount(&sms);
  if (err != cudaSuccess) return err;
  if (a.num_tiles == a.num_rows && p.group <= 16 && p.head_dim <= 128 && forced >= 0 &&
      (forced > 0 || a.num_tiles * a.num_splits >= sms)) {
    err = LaunchDecodeForHeadDim(stream, p, a.num_tiles, DecodeHeadsLog2(p, a.num_tiles, sms));
  } else {
    // 4 warps hold 64 rows: a whole 16-token tile up to group 4; 8 warps up to group 8.
    err = p.group <= 4 ? LaunchForHeadDim<4>(stream, p, a.num_tiles)
                       : LaunchForHeadDim<8>(stream, p, a.num_tiles);
  }
  if (err != cudaSuccess || p.num_splits == 1) return err;
  const dim3 merge_grid(static_cast<unsigned>(a.num_tiles), static_cast<unsigned>(a.num_heads));
  AttentionMergeKernel<<<merge_grid, kMergeWarps * 32, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
