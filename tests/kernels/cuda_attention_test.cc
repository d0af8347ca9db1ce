// The bf16 serving path's attention kernels (kernels/cuda/attention_bf16.cu) against their CPU
// twins on the same bf16-rounded data: RopeQkvToCache against cpu Rope + CacheWrite, Attention
// against cpu PagedAttention. Batches mix decodes, whole prefills, chunked prefills that start
// mid-sequence and padding sequences (kv_len 0, which must give zeros) over a paged cache whose
// blocks are handed out in shuffled order; cache slots no sequence owns hold NaN, so a kernel that
// reads past a sequence's keys fails. Outputs (and split scratch) are poisoned with NaN first.
// Attention runs with one split, three splits of 64 keys and two of 128, which must agree with the
// CPU to a relative L2 error of 2e-2 (P is rounded to bf16 for the P·V product). Passes of at most
// 16 rows (decode tiles, small prefill tiles) take the kernel's few-rows path, where the warps
// split every key tile and merge at the end: its cases put lengths where some warps see no key at
// all, at slice, tile and ring edges, and mix such tiles with bigger ones in a batch. Pure decode
// batches (one token per tile: num_tiles == num_rows) take the decode kernel, one block per tile
// and group of kv heads; its cases cover groups 1 to 16, head_dim 8 to 128, kv head counts that
// are not a power of two, lengths around its 16-key slices and tiles up to 1000 keys, block sizes
// 7 and 16, every kv-heads-per-block the kernel can take (forced through a testing hook) and, for
// comparison, the tile kernel on the same batch; group 32 and head_dim 256 must fall back to the
// tile kernel. Without CUDA in the build, or without a device, the tests are skipped with the
// reason.
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"

#ifdef DPINFER_HAVE_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <string>

#include "common/safetensors.h"
#include "common/status.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/fast_ops.h"
#include "tests/kernels/cuda_testutil.h"

#endif

namespace dpinfer::kernels {
namespace {

#ifndef DPINFER_HAVE_CUDA

TEST(CudaAttentionTest, SkippedWithoutCuda) {
  GTEST_SKIP() << "built without CUDA (nvcc not found or DPINFER_CUDA=OFF): nothing to compare";
}

#else

using cudatest::Down;
using cudatest::kBf16NaN;
using cudatest::Random;
using cudatest::RelErr;
using cudatest::Up;

constexpr double kAttentionTol = 2e-2;
constexpr double kRopeTol = 5e-3;  // same fp32 math; only a cos/sin ulp can flip a bf16 rounding

// Rounds `v` to bf16 in place and returns the bits the device gets.
std::vector<uint16_t> RoundToBf16(std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    bits[i] = F32ToBf16(v[i]);
    v[i] = Bf16ToF32(bits[i]);
  }
  return bits;
}

std::vector<float> FromBf16(const std::vector<uint16_t>& bits) {
  std::vector<float> v(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) v[i] = Bf16ToF32(bits[i]);
  return v;
}

__nv_bfloat16* Bf16Ptr(DeviceBuffer<uint16_t>& buf) {
  return reinterpret_cast<__nv_bfloat16*>(buf.data());
}

// Sets the decode kernel's kv heads per block for its lifetime, then back to automatic.
class DecodeHeadsPerBlock {
 public:
  explicit DecodeHeadsPerBlock(int heads) { gpu::SetAttentionDecodeHeadsPerBlock(heads); }
  ~DecodeHeadsPerBlock() { gpu::SetAttentionDecodeHeadsPerBlock(0); }
  DecodeHeadsPerBlock(const DecodeHeadsPerBlock&) = delete;
  DecodeHeadsPerBlock& operator=(const DecodeHeadsPerBlock&) = delete;
};

struct AttentionCase;
struct AttentionBatch;

class CudaAttentionTest : public cudatest::StreamTest {
 protected:
  // Runs one batch through Attention with each (splits, kv_chunk) of the test (none; 64-key
  // chunks; 128-key chunks, the last of which takes the rest of a long sequence) and each of
  // `heads_per_block` (SetAttentionDecodeHeadsPerBlock), comparing with the CPU reference.
  void ExpectMatchesCpu(const AttentionCase& c, const AttentionBatch& b,
                        const std::vector<int>& heads_per_block);
};

// HF's inverse frequencies (theta^(-2i/d)), computed as the CPU Rope does without a table.
std::vector<float> InvFreq(int64_t head_dim, float theta) {
  std::vector<float> inv_freq(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    inv_freq[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
  }
  return inv_freq;
}

TEST_F(CudaAttentionTest, RopeQkvToCacheMatchesCpuRopeAndCacheWrite) {
  std::mt19937 rng(201);
  struct Shape {
    int64_t tokens, heads, kv_heads, head_dim;
  };
  for (const Shape s :
       {Shape{7, 4, 2, 64}, Shape{13, 8, 8, 128}, Shape{5, 6, 2, 16}, Shape{9, 8, 4, 8},
        Shape{40, 32, 8, 64}, Shape{3, 2, 1, 256}, Shape{4, 3, 3, 6}}) {
    SCOPED_TRACE(testing::Message() << "tokens=" << s.tokens << " heads=" << s.heads << "/"
                                    << s.kv_heads << " head_dim=" << s.head_dim);
    const int64_t q_row = s.heads * s.head_dim, kv_row = s.kv_heads * s.head_dim;
    const int64_t qkv_row = q_row + 2 * kv_row;
    auto qkv = Random(s.tokens * qkv_row, rng);
    std::vector<int32_t> pos(s.tokens);
    std::uniform_int_distribution<int32_t> pos_dist(0, 4000);
    for (int32_t& p : pos) p = pos_dist(rng);
    const auto inv_freq = InvFreq(s.head_dim, 10000.0f);
    // Distinct slots in a cache of twice the tokens; every third token is padding (-1).
    const int64_t num_slots = 2 * s.tokens;
    std::vector<int32_t> all_slots(num_slots);
    std::iota(all_slots.begin(), all_slots.end(), 0);
    std::shuffle(all_slots.begin(), all_slots.end(), rng);
    std::vector<int32_t> slots(s.tokens);
    for (int64_t t = 0; t < s.tokens; ++t) slots[t] = t % 3 == 1 ? -1 : all_slots[t];

    // CPU: split the fused rows, rotate, store the stored tokens, round to bf16.
    std::vector<float> q(s.tokens * q_row), k(s.tokens * kv_row), v(s.tokens * kv_row);
    for (int64_t t = 0; t < s.tokens; ++t) {
      const float* row = qkv.data() + t * qkv_row;
      std::copy(row, row + q_row, q.begin() + t * q_row);
      std::copy(row + q_row, row + q_row + kv_row, k.begin() + t * kv_row);
      std::copy(row + q_row + kv_row, row + qkv_row, v.begin() + t * kv_row);
    }
    cpu_->Rope({q.data(), k.data(), pos.data(), s.tokens, s.heads, s.kv_heads, s.head_dim, 10000.0f,
                inv_freq.data()});
    std::vector<float> ks, vs;
    std::vector<int32_t> stored_slots;
    for (int64_t t = 0; t < s.tokens; ++t) {
      if (slots[t] < 0) continue;
      ks.insert(ks.end(), k.begin() + t * kv_row, k.begin() + (t + 1) * kv_row);
      vs.insert(vs.end(), v.begin() + t * kv_row, v.begin() + (t + 1) * kv_row);
      stored_slots.push_back(slots[t]);
    }
    std::vector<float> ref_k_cache(num_slots * kv_row, 0.0f), ref_v_cache(num_slots * kv_row, 0.0f);
    cpu_->CacheWrite({ks.data(), vs.data(), ref_k_cache.data(), ref_v_cache.data(),
                      stored_slots.data(), static_cast<int64_t>(stored_slots.size()), s.kv_heads,
                      s.head_dim});
    RoundToBf16(q);
    RoundToBf16(ref_k_cache);
    RoundToBf16(ref_v_cache);

    auto dqkv = Up(qkv), dfreq = Up(inv_freq);
    auto dpos = Up(pos), dslots = Up(slots);
    auto dq = Up(std::vector<uint16_t>(q.size(), kBf16NaN));
    // The cache starts as NaN: slots the step does not store must stay so.
    auto dk_cache = Up(std::vector<uint16_t>(num_slots * kv_row, kBf16NaN));
    auto dv_cache = Up(std::vector<uint16_t>(num_slots * kv_row, kBf16NaN));
    gpu::RopeQkvArgs args;
    args.qkv = dqkv.data();
    args.positions = dpos.data();
    args.slot_mapping = dslots.data();
    args.inv_freq = dfreq.data();
    args.q = Bf16Ptr(dq);
    args.k_cache = Bf16Ptr(dk_cache);
    args.v_cache = Bf16Ptr(dv_cache);
    args.num_tokens = s.tokens;
    args.num_heads = s.heads;
    args.num_kv_heads = s.kv_heads;
    args.head_dim = s.head_dim;
    ASSERT_EQ(gpu::RopeQkvToCache(stream_, args), cudaSuccess);
    Sync();
    EXPECT_LT(RelErr(FromBf16(Down(dq)), q), kRopeTol) << "q";

    const auto k_cache = Down(dk_cache), v_cache = Down(dv_cache);
    std::vector<bool> stored(num_slots, false);
    for (int32_t slot : stored_slots) stored[slot] = true;
    std::vector<float> got_k, want_k, got_v, want_v;
    for (int64_t slot = 0; slot < num_slots; ++slot) {
      for (int64_t j = slot * kv_row; j < (slot + 1) * kv_row; ++j) {
        if (!stored[slot]) {
          ASSERT_EQ(k_cache[j], kBf16NaN) << "k slot " << slot << " written";
          ASSERT_EQ(v_cache[j], kBf16NaN) << "v slot " << slot << " written";
          continue;
        }
        got_k.push_back(Bf16ToF32(k_cache[j]));
        want_k.push_back(ref_k_cache[j]);
        got_v.push_back(Bf16ToF32(v_cache[j]));
        want_v.push_back(ref_v_cache[j]);
      }
    }
    EXPECT_LT(RelErr(got_k, want_k), kRopeTol) << "k cache";
    EXPECT_EQ(got_v, want_v) << "v cache (only rounded: exact)";
  }
}

// One sequence of a batch: kv_len keys after this step, the last `rows` of them this step's
// queries (rows == kv_len: a whole prefill; rows == 1: a decode). kv_len 0: a padding sequence.
struct Seq {
  int32_t kv_len, rows;
};
struct AttentionCase {
  std::string name;
  int64_t num_heads, num_kv_heads, head_dim, block_size;
  std::vector<Seq> seqs;
};

// The device-side inputs of one batch plus the CPU reference output.
struct AttentionBatch {
  int64_t num_rows = 0, num_tiles = 0, max_blocks = 0;
  std::vector<uint16_t> q, k_cache, v_cache;
  std::vector<int32_t> tables, q_start, kv_len, tile_seq, tile_row;
  std::vector<float> ref;         // [num_rows, num_heads, head_dim]
  std::vector<bool> padding_row;  // rows of kv_len-0 sequences (expected zeros)
};

AttentionBatch MakeBatch(const AttentionCase& c, Backend& cpu, std::mt19937& rng) {
  AttentionBatch b;
  const int64_t num_seqs = static_cast<int64_t>(c.seqs.size());
  int64_t total_blocks = 0;
  for (const Seq& s : c.seqs) {
    const int64_t blocks = (s.kv_len + c.block_size - 1) / c.block_size;
    b.max_blocks = std::max(b.max_blocks, blocks);
    total_blocks += blocks;
  }
  b.max_blocks = std::max<int64_t>(b.max_blocks, 1);
  const int64_t num_blocks = total_blocks + 3;  // a few blocks no one owns
  std::vector<int32_t> block_ids(num_blocks);
  std::iota(block_ids.begin(), block_ids.end(), 0);
  std::shuffle(block_ids.begin(), block_ids.end(), rng);
  b.tables.assign(num_seqs * b.max_blocks, -1);
  int64_t next = 0;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t blocks = (c.seqs[s].kv_len + c.block_size - 1) / c.block_size;
    for (int64_t i = 0; i < blocks; ++i) b.tables[s * b.max_blocks + i] = block_ids[next++];
  }

  // The cache: NaN everywhere except the keys the sequences own (the CPU cache likewise).
  const int64_t kv_row = c.num_kv_heads * c.head_dim;
  const int64_t cache_size = num_blocks * c.block_size * kv_row;
  std::vector<float> k_cache(cache_size, std::numeric_limits<float>::quiet_NaN());
  std::vector<float> v_cache = k_cache;
  for (int64_t s = 0; s < num_seqs; ++s) {
    for (int64_t key = 0; key < c.seqs[s].kv_len; ++key) {
      const int64_t slot =
          static_cast<int64_t>(b.tables[s * b.max_blocks + key / c.block_size]) * c.block_size +
          key % c.block_size;
      auto kr = Random(kv_row, rng), vr = Random(kv_row, rng);
      std::copy(kr.begin(), kr.end(), k_cache.begin() + slot * kv_row);
      std::copy(vr.begin(), vr.end(), v_cache.begin() + slot * kv_row);
    }
  }
  b.k_cache = RoundToBf16(k_cache);
  b.v_cache = RoundToBf16(v_cache);

  b.q_start.push_back(0);
  for (int64_t s = 0; s < num_seqs; ++s) {
    const Seq& seq = c.seqs[s];
    gpu::AppendAttentionTiles(static_cast<int32_t>(s), b.q_start.back(), seq.rows, &b.tile_seq,
                              &b.tile_row);
    b.q_start.push_back(b.q_start.back() + seq.rows);
    b.kv_len.push_back(seq.kv_len);
  }
  b.num_rows = b.q_start.back();
  b.num_tiles = static_cast<int64_t>(b.tile_seq.size());
  const int64_t q_row = c.num_heads * c.head_dim;
  auto q = Random(b.num_rows * q_row, rng);
  b.q = RoundToBf16(q);

  // CPU reference over the rows of real sequences; padding rows stay zero.
  std::vector<int32_t> token_seq, positions;
  std::vector<int64_t> row_of;
  std::vector<float> cpu_q;
  b.padding_row.assign(b.num_rows, false);
  for (int64_t s = 0; s < num_seqs; ++s) {
    const Seq& seq = c.seqs[s];
    for (int32_t i = 0; i < seq.rows; ++i) {
      const int64_t row = b.q_start[s] + i;
      if (seq.kv_len == 0) {
        b.padding_row[row] = true;
        continue;
      }
      token_seq.push_back(static_cast<int32_t>(s));
      positions.push_back(seq.kv_len - seq.rows + i);
      row_of.push_back(row);
      cpu_q.insert(cpu_q.end(), q.begin() + row * q_row, q.begin() + (row + 1) * q_row);
    }
  }
  const int64_t cpu_tokens = static_cast<int64_t>(positions.size());
  std::vector<float> cpu_out(cpu_tokens * q_row);
  cpu.PagedAttention({cpu_q.data(), k_cache.data(), v_cache.data(), b.tables.data(),
                      token_seq.data(), positions.data(), cpu_out.data(), cpu_tokens, c.num_heads,
                      c.num_kv_heads, c.head_dim, c.block_size, b.max_blocks,
                      1.0f / std::sqrt(static_cast<float>(c.head_dim))});
  b.ref.assign(b.num_rows * q_row, 0.0f);
  for (int64_t t = 0; t < cpu_tokens; ++t) {
    std::copy(cpu_out.begin() + t * q_row, cpu_out.begin() + (t + 1) * q_row,
              b.ref.begin() + row_of[t] * q_row);
  }
  return b;
}

// Device copies of a batch and the launch arguments over them.
struct DeviceBatch {
  DeviceBuffer<uint16_t> q, k_cache, v_cache, out;
  DeviceBuffer<int32_t> tables, q_start, kv_len, tile_seq, tile_row;
  DeviceBuffer<float> partials;
  gpu::AttentionArgs args;
};

std::unique_ptr<DeviceBatch> Upload(const AttentionCase& c, const AttentionBatch& b,
                                    int64_t num_splits, int64_t kv_chunk) {
  auto d = std::make_unique<DeviceBatch>();
  d->q = Up(b.q);
  d->k_cache = Up(b.k_cache);
  d->v_cache = Up(b.v_cache);
  d->out = Up(std::vector<uint16_t>(b.q.size(), kBf16NaN));
  d->tables = Up(b.tables);
  d->q_start = Up(b.q_start);
  d->kv_len = Up(b.kv_len);
  d->tile_seq = Up(b.tile_seq);
  d->tile_row = Up(b.tile_row);
  const int64_t partials =
      gpu::AttentionPartialsFloats(b.num_tiles, c.num_heads, c.head_dim, num_splits);
  d->partials = Up(std::vector<float>(partials, std::numeric_limits<float>::quiet_NaN()));
  gpu::AttentionArgs& a = d->args;
  a.q = Bf16Ptr(d->q);
  a.k_cache = Bf16Ptr(d->k_cache);
  a.v_cache = Bf16Ptr(d->v_cache);
  a.block_tables = d->tables.data();
  a.q_start = d->q_start.data();
  a.kv_len = d->kv_len.data();
  a.tile_seq = d->tile_seq.data();
  a.tile_row = d->tile_row.data();
  a.out = Bf16Ptr(d->out);
  a.partials = partials > 0 ? d->partials.data() : nullptr;
  a.num_tiles = b.num_tiles;
  a.num_rows = b.num_rows;
  a.num_heads = c.num_heads;
  a.num_kv_heads = c.num_kv_heads;
  a.head_dim = c.head_dim;
  a.block_size = c.block_size;
  a.max_blocks_per_seq = b.max_blocks;
  a.num_splits = num_splits;
  a.kv_chunk = kv_chunk;
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  return d;
}

// Every decode, prefill, chunk and padding mix over the shapes the serving path meets, including
// the test fixtures' small heads (head_dim 8 and 16).
std::vector<AttentionCase> AttentionCases() {
  std::vector<AttentionCase> cases;
  {
    // Decode batch, Llama-3.2-1B's heads: kv_len around key-tile (64) and block (16) edges.
    AttentionCase c{"decode_32x8_hd64", 32, 8, 64, 16, {}};
    const int32_t lens[] = {1, 2, 15, 16, 17, 63, 64, 65, 100, 128, 129, 191, 192, 193, 256, 300};
    for (int i = 0; i < 48; ++i) c.seqs.push_back({lens[i % 16], 1});
    cases.push_back(c);
  }
  cases.push_back({"prefill_g4_hd128",
                   8,
                   2,
                   128,
                   16,
                   {{1, 1}, {7, 7}, {16, 16}, {17, 17}, {33, 33}, {50, 50}}});
  cases.push_back({"mixed_g3_bs7",
                   12,
                   4,
                   64,
                   7,
                   {{100, 20}, {70, 1}, {0, 3}, {5, 5}, {200, 37}, {129, 1}, {0, 1}, {65, 16}}});
  cases.push_back({"g1_hd128_bs7", 4, 4, 128, 7, {{40, 40}, {300, 1}, {90, 17}, {0, 2}}});
  cases.push_back({"g2_hd64", 8, 4, 64, 16, {{65, 1}, {64, 64}, {150, 30}, {1, 1}}});
  cases.push_back({"g8_hd64", 16, 2, 64, 16, {{50, 50}, {130, 1}, {77, 9}, {0, 4}}});
  cases.push_back({"g16_row_passes", 16, 1, 64, 16, {{40, 40}, {200, 1}, {150, 20}}});
  cases.push_back({"hd256", 4, 2, 256, 16, {{70, 70}, {300, 1}, {20, 3}}});
  cases.push_back({"hd80_padded", 6, 3, 80, 16, {{19, 19}, {150, 1}, {64, 2}}});
  cases.push_back({"hd32_g4_bs7", 4, 1, 32, 7, {{33, 33}, {140, 5}, {3, 1}}});
  // The fixtures: stories260K (8/4, hd 8), tiny-llama (8/2, hd 8), tiny-granitemoe (6/2, hd 16),
  // tiny-mixtral and tiny-qwen2 (4/2, hd 16).
  cases.push_back({"stories260K_hd8", 8, 4, 8, 16, {{30, 30}, {100, 1}, {45, 5}, {0, 1}}});
  cases.push_back({"tiny_llama_hd8_bs7", 8, 2, 8, 7, {{21, 21}, {130, 1}, {70, 12}}});
  cases.push_back({"tiny_granitemoe_hd16", 6, 2, 16, 16, {{25, 25}, {200, 1}, {90, 3}, {0, 2}}});
  cases.push_back({"tiny_mixtral_hd16", 4, 2, 16, 16, {{9, 9}, {66, 1}, {128, 40}}});

  // The few-rows path: every decode tile (group rows) and prefill tiles of at most 16 rows. Its
  // warps take 16 keys each of every 64-key tile (32-key tiles and 2 warps for head_dim 256), so
  // contexts below 48 keys leave some warps with nothing; 1..17 keys around the first slice, 64 and
  // 128 around tile edges, 192/193 around the three-stage ring, 500 wraps it several times.
  {
    AttentionCase c{"few_decode_slices_g4_hd64", 32, 8, 64, 16, {}};
    for (int32_t len : {1,  2,  3,  8,   15,  16,  17,  31,  32,  33,  47,  48, 49,
                        63, 64, 65, 127, 128, 129, 191, 192, 193, 257, 500, 0}) {
      c.seqs.push_back({len, 1});
    }
    cases.push_back(c);
  }
  // Decode over groups 1, 2, 4, 8 and 16 (16 rows: the whole slice) and head_dim 8 to 256; the
  // 8-warp blocks (group > 4) compute with 4 warps and only load with the rest.
  struct FewShape {
    const char* name;
    int64_t heads, kv_heads, head_dim, block_size;
  };
  for (const FewShape f :
       {FewShape{"few_decode_g1_hd8", 2, 2, 8, 16},
        FewShape{"few_decode_g1_hd128_bs7", 4, 4, 128, 7},
        FewShape{"few_decode_g2_hd8_bs7", 8, 4, 8, 7}, FewShape{"few_decode_g2_hd64", 8, 4, 64, 16},
        FewShape{"few_decode_g4_hd8", 8, 2, 8, 16}, FewShape{"few_decode_g4_hd128", 8, 2, 128, 16},
        FewShape{"few_decode_g4_hd256", 8, 2, 256, 16}, FewShape{"few_decode_g8_hd8", 8, 1, 8, 16},
        FewShape{"few_decode_g8_hd64_bs7", 16, 2, 64, 7},
        FewShape{"few_decode_g8_hd128", 16, 2, 128, 16},
        FewShape{"few_decode_g16_hd64", 16, 1, 64, 16}}) {
    AttentionCase c{f.name, f.heads, f.kv_heads, f.head_dim, f.block_size, {}};
    for (int32_t len : {1, 2, 15, 16, 17, 33, 40, 63, 64, 65, 128, 129, 200, 0}) {
      c.seqs.push_back({len, 1});
    }
    cases.push_back(c);
  }
  // Prefill tiles of at most 16 rows (group 1 up to 16 tokens, group 4 up to 4, ...), chunks that
  // start mid-sequence (so, with splits, rows before a split's first key), padding with several
  // rows, and sequences whose tiles take both paths (a 16-token tile of 64 rows, then 1 token).
  cases.push_back({"few_prefill_g1_hd64",
                   4,
                   4,
                   64,
                   16,
                   {{16, 16}, {18, 18}, {70, 16}, {130, 5}, {1, 1}, {0, 3}, {64, 16}}});
  cases.push_back({"few_prefill_g4_hd8_bs7",
                   8,
                   2,
                   8,
                   7,
                   {{4, 4}, {66, 4}, {100, 3}, {17, 17}, {0, 4}, {129, 2}}});
  cases.push_back(
      {"few_prefill_g2_hd128", 8, 4, 128, 16, {{8, 8}, {129, 8}, {65, 7}, {40, 9}, {0, 8}}});
  cases.push_back(
      {"few_prefill_g8_hd64", 16, 2, 64, 16, {{2, 2}, {65, 2}, {200, 2}, {33, 3}, {128, 1}}});
  cases.push_back({"few_prefill_g4_hd256", 8, 2, 256, 16, {{4, 4}, {70, 4}, {20, 20}, {33, 2}}});
  return cases;
}

void CudaAttentionTest::ExpectMatchesCpu(const AttentionCase& c, const AttentionBatch& b,
                                         const std::vector<int>& heads_per_block) {
  const std::pair<int64_t, int64_t> kSplits[] = {{1, 0}, {3, 64}, {2, 128}};
  for (const int heads : heads_per_block) {
    const DecodeHeadsPerBlock forced(heads);
    for (const auto& [num_splits, kv_chunk] : kSplits) {
      SCOPED_TRACE(testing::Message() << c.name << " heads=" << c.num_heads << "/" << c.num_kv_heads
                                      << " head_dim=" << c.head_dim << " block=" << c.block_size
                                      << " splits=" << num_splits << " kv_chunk=" << kv_chunk
                                      << " decode_heads_per_block=" << heads);
      auto d = Upload(c, b, num_splits, kv_chunk);
      ASSERT_EQ(gpu::Attention(stream_, d->args), cudaSuccess);
      Sync();
      const auto out_bits = Down(d->out);
      const auto out = FromBf16(out_bits);
      EXPECT_LT(RelErr(out, b.ref), kAttentionTol);
      // Per row too, so one bad row in a large batch cannot hide in the total.
      const int64_t q_row = c.num_heads * c.head_dim;
      for (int64_t r = 0; r < b.num_rows; ++r) {
        const std::vector<float> got(out.begin() + r * q_row, out.begin() + (r + 1) * q_row);
        const std::vector<float> want(b.ref.begin() + r * q_row, b.ref.begin() + (r + 1) * q_row);
        if (b.padding_row[r]) {
          EXPECT_EQ(got, want) << "padding row " << r << " not zero";
        } else {
          EXPECT_LT(RelErr(got, want), kAttentionTol) << "row " << r;
        }
      }
    }
  }
}

TEST_F(CudaAttentionTest, AttentionMatchesCpuPagedAttention) {
  std::mt19937 rng(202);
  for (const AttentionCase& c : AttentionCases()) {
    const AttentionBatch b = MakeBatch(c, *cpu_, rng);
    // Pure decode batches take the decode kernel; the tile kernel (its few-rows path) as well.
    ExpectMatchesCpu(c, b,
                     b.num_tiles == b.num_rows ? std::vector<int>{0, -1} : std::vector<int>{0});
  }
}

// Pure decode batches (one token per sequence): the decode kernel. Lengths: padding (0), one key,
// around the 16-key slice of a warp (15..17), around the 64-key tiles of 2 heads per block and the
// 64-key split chunks (63..65), several tiles (200) and many, wrapping the three-stage ring (1000).
std::vector<AttentionCase> DecodeCases() {
  const int32_t kLens[] = {0, 1, 15, 16, 17, 63, 64, 65, 200, 1000};
  struct Shape {
    const char* name;
    int64_t heads, kv_heads, head_dim, block_size;
  };
  std::vector<AttentionCase> cases;
  for (const Shape s : {
           Shape{"decode_g1_hd64", 8, 8, 64, 16},
           Shape{"decode_g1_hd128_bs7", 4, 4, 128, 7},
           Shape{"decode_g2_hd8", 4, 2, 8, 16},
           Shape{"decode_g2_hd16_bs7", 8, 4, 16, 7},
           Shape{"decode_g4_hd8_bs7", 8, 2, 8, 7},
           Shape{"decode_g4_hd16", 8, 2, 16, 16},
           Shape{"decode_g4_hd64_llama1b", 32, 8, 64, 16},
           Shape{"decode_g4_hd128_8x128_bs7", 32, 8, 128, 7},  // 2 KB of K per key slot
           Shape{"decode_g8_hd64_bs7", 16, 2, 64, 7},
           Shape{"decode_g8_hd128", 32, 4, 128, 16},
           Shape{"decode_g8_hd16", 8, 1, 16, 16},
           Shape{"decode_g16_hd64", 16, 1, 64, 16},  // 16 rows: the whole A fragment
           // kv heads not a power of two: blocks with idle warps, a last block with fewer heads;
           // head_dim 80 and 32 padded in shared memory.
           Shape{"decode_g3_hd80_kv3", 9, 3, 80, 16},
           Shape{"decode_g2_hd32_kv5_bs7", 10, 5, 32, 7},
           Shape{"decode_g2_hd64_kv16", 32, 16, 64, 16},  // at least two blocks per token
           // Outside the decode kernel: the tile kernel takes them.
           Shape{"fallback_decode_g32_hd64", 32, 1, 64, 16},
           Shape{"fallback_decode_hd256", 4, 2, 256, 16},
       }) {
    AttentionCase c{s.name, s.heads, s.kv_heads, s.head_dim, s.block_size, {}};
    for (const int32_t len : kLens) c.seqs.push_back({len, 1});
    cases.push_back(c);
  }
  // A batch big enough for 8 kv heads per block to be the automatic choice on a large GPU.
  AttentionCase many{"decode_many_g4_hd64", 32, 8, 64, 16, {}};
  for (int i = 0; i < 160; ++i) many.seqs.push_back({kLens[(i * 7) % 10], 1});
  cases.push_back(many);
  return cases;
}

TEST_F(CudaAttentionTest, DecodeKernelMatchesCpuPagedAttention) {
  std::mt19937 rng(205);
  for (const AttentionCase& c : DecodeCases()) {
    const AttentionBatch b = MakeBatch(c, *cpu_, rng);
    ASSERT_EQ(b.num_tiles, b.num_rows) << c.name << ": not a pure decode batch";
    // Automatic, each kv-heads-per-block (1: 8 warps split a head's keys, 128-key tiles; 8: a warp
    // per head, 16-key tiles), and the tile kernel.
    ExpectMatchesCpu(c, b, {0, 1, 2, 4, 8, -1});
  }
}

// A decode step is replayed from a CUDA graph: the launch must capture (no allocation, no
// synchronization) and the replay must give what the direct launch gave. A batch with a prefill
// tile (the tile kernel) and pure decode batches (the decode kernel), with and without splits.
TEST_F(CudaAttentionTest, AttentionCapturesIntoGraph) {
  std::mt19937 rng(203);
  struct GraphCase {
    AttentionCase c;
    int64_t num_splits, kv_chunk;
  };
  const GraphCase cases[] = {
      {{"graph_mixed", 8, 2, 64, 16, {{1, 1}, {150, 1}, {300, 1}, {0, 1}, {65, 17}}}, 3, 64},
      {{"graph_decode", 32, 8, 64, 16, {{1, 1}, {150, 1}, {300, 1}, {0, 1}, {1000, 1}, {65, 1}}},
       3,
       64},
      {{"graph_decode_hd128_bs7", 8, 2, 128, 7, {{17, 1}, {0, 1}, {500, 1}}}, 1, 0},
  };
  for (const GraphCase& g : cases) {
    const AttentionCase& c = g.c;
    SCOPED_TRACE(c.name);
    const AttentionBatch b = MakeBatch(c, *cpu_, rng);
    auto direct = Upload(c, b, g.num_splits, g.kv_chunk);
    ASSERT_EQ(gpu::Attention(stream_, direct->args), cudaSuccess);
    Sync();
    auto captured = Upload(c, b, g.num_splits, g.kv_chunk);
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal), cudaSuccess);
    const cudaError_t launch = gpu::Attention(stream_, captured->args);
    ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
    ASSERT_EQ(launch, cudaSuccess);
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
    Sync();
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    EXPECT_EQ(Down(captured->out), Down(direct->out));
    EXPECT_LT(RelErr(FromBf16(Down(captured->out)), b.ref), kAttentionTol);
  }
}

TEST_F(CudaAttentionTest, RejectsArgumentsItCannotHandle) {
  std::mt19937 rng(204);
  AttentionCase c{"args", 4, 2, 64, 16, {{10, 10}}};
  const AttentionBatch b = MakeBatch(c, *cpu_, rng);
  auto d = Upload(c, b, 1, 0);
  const gpu::AttentionArgs good = d->args;
  auto expect_invalid = [&](gpu::AttentionArgs a, const char* what) {
    EXPECT_EQ(gpu::Attention(stream_, a), cudaErrorInvalidValue) << what;
  };
  gpu::AttentionArgs a = good;
  a.q = nullptr;
  expect_invalid(a, "null q");
  a = good;
  a.head_dim = 12;
  expect_invalid(a, "head_dim not a multiple of 8");
  a = good;
  a.head_dim = 264;
  expect_invalid(a, "head_dim > 256");
  a = good;
  a.num_kv_heads = 3;
  expect_invalid(a, "kv heads not dividing heads");
  a = good;
  a.block_size = 0;
  expect_invalid(a, "block_size 0");
  a = good;
  a.num_splits = 2;
  a.kv_chunk = 64;
  expect_invalid(a, "splits without partials");
  a = good;
  a.num_splits = 0;
  expect_invalid(a, "no split");
  a = good;
  a.num_tiles = 0;
  EXPECT_EQ(gpu::Attention(stream_, a), cudaSuccess) << "an empty batch is nothing to do";
  EXPECT_EQ(gpu::AttentionPartialsFloats(5, 8, 64, 1), 0);
  EXPECT_EQ(gpu::AttentionPartialsFloats(5, 8, 64, 3), 3 * 5 * gpu::kAttentionTileRows * 8 * 66);

  gpu::RopeQkvArgs r;
  EXPECT_EQ(gpu::RopeQkvToCache(stream_, r), cudaErrorInvalidValue) << "null pointers";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

#endif  // DPINFER_HAVE_CUDA

}  // namespace
}  // namespace dpinfer::kernels
