// Every CUDA op against its CPU twin (kernels/cpu, the reference) on fresh random inputs over
// several shapes: llama.cpp's test-backend-ops idea. Outputs are poisoned with NaN before each run
// so an element the kernel forgot to write fails the comparison. fp32 ops must agree to a relative
// L2 error of 1e-5, the bf16 GEMM (against the CPU on the same bf16-rounded inputs) to 1e-2;
// sampling must pick the CPU sampler's tokens. Without CUDA in the build, or without a device, the
// tests are skipped with the reason.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"

#ifdef DPINFER_HAVE_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>

#include "common/status.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/fast_ops.h"
#include "kernels/cuda/gemm_lt.h"
#include "tests/kernels/cuda_testutil.h"
#include "worker/engine/engine.h"
#include "worker/engine/sampler.h"
#endif

namespace dpinfer::kernels {
namespace {

#ifndef DPINFER_HAVE_CUDA

TEST(CudaParityTest, SkippedWithoutCuda) {
  GTEST_SKIP() << "built without CUDA (nvcc not found or DPINFER_CUDA=OFF): nothing to compare";
}

#else

using cudatest::Down;
using cudatest::kNaN;
using cudatest::Random;
using cudatest::RelErr;
using cudatest::Up;

constexpr double kFp32Tol = 1e-5;

DeviceBuffer<float> Poisoned(size_t n) { return Up(std::vector<float>(n, kNaN)); }

// Round to nearest even into bf16, kept as its 16 bits and as the fp32 value it stands for.
uint16_t Bf16Bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float Bf16Value(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// StreamTest plus the CUDA backend on its stream, whose recorded errors fail the test.
class CudaParityTest : public cudatest::StreamTest {
 protected:
  void SetUp() override {
    StreamTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    gpu_ = NewCudaBackend(stream_);
    ASSERT_TRUE(gpu_->status().ok()) << gpu_->status();
  }
  void TearDown() override {
    if (gpu_ != nullptr) {
      EXPECT_TRUE(gpu_->status().ok()) << gpu_->status();
      EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
      gpu_.reset();
    }
    StreamTest::TearDown();
  }
  // Waits for the queued ops and fails on any error they recorded.
  void Sync() {
    StreamTest::Sync();
    ASSERT_TRUE(gpu_->status().ok()) << gpu_->status();
  }

  std::unique_ptr<CudaBackend> gpu_;
};

TEST_F(CudaParityTest, Linear) {
  std::mt19937 rng(101);
  struct Shape {
    int64_t m, n, k;
  };
  for (const Shape s : {Shape{1, 1, 1}, Shape{3, 37, 29}, Shape{1, 300, 131}, Shape{17, 300, 131},
                        Shape{64, 257, 513}, Shape{5, 1000, 2048}}) {
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE(testing::Message()
                   << "m=" << s.m << " n=" << s.n << " k=" << s.k << " bias=" << with_bias);
      auto x = Random(s.m * s.k, rng), w = Random(s.n * s.k, rng), bias = Random(s.n, rng);
      std::vector<float> ref(s.m * s.n);
      cpu_->Linear(
          {x.data(), w.data(), with_bias ? bias.data() : nullptr, ref.data(), s.m, s.n, s.k});
      auto dx = Up(x), dw = Up(w), db = Up(bias);
      auto dy = Poisoned(s.m * s.n);
      gpu_->Linear(
          {dx.data(), dw.data(), with_bias ? db.data() : nullptr, dy.data(), s.m, s.n, s.k});
      Sync();
      EXPECT_LT(RelErr(Down(dy), ref), kFp32Tol);
    }
  }
}

// A bf16 GEMM problem: x [m, k] and w [n, k] rounded to bf16 (on the device as bits), and the CPU
// Linear of the rounded values as the reference.
struct Bf16Gemm {
  int64_t m, n, k;
  DeviceBuffer<uint16_t> x, w;
  std::vector<float> ref;
  const __nv_bfloat16* xp() const { return reinterpret_cast<const __nv_bfloat16*>(x.data()); }
  const __nv_bfloat16* wp() const { return reinterpret_cast<const __nv_bfloat16*>(w.data()); }
};

Bf16Gemm MakeBf16Gemm(int64_t m, int64_t n, int64_t k, std::mt19937& rng, Backend* cpu) {
  auto x = Random(m * k, rng), w = Random(n * k, rng);
  std::vector<uint16_t> xb(x.size()), wb(w.size());
  for (size_t i = 0; i < x.size(); ++i) {
    xb[i] = Bf16Bits(x[i]);
    x[i] = Bf16Value(xb[i]);
  }
  for (size_t i = 0; i < w.size(); ++i) {
    wb[i] = Bf16Bits(w[i]);
    w[i] = Bf16Value(wb[i]);
  }
  std::vector<float> ref(m * n);
  cpu->Linear({x.data(), w.data(), nullptr, ref.data(), m, n, k});
  return {m, n, k, Up(xb), Up(wb), std::move(ref)};
}

std::vector<float> Bf16Values(const DeviceBuffer<uint16_t>& buf) {
  const auto bits = Down(buf);
  std::vector<float> y(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) y[i] = Bf16Value(bits[i]);
  return y;
}

TEST_F(CudaParityTest, GemmBf16) {
  std::mt19937 rng(102);
  struct Shape {
    int64_t m, n, k;
  };
  for (const Shape s :
       {Shape{1, 64, 128}, Shape{7, 257, 511}, Shape{128, 512, 1024}, Shape{33, 2048, 64}}) {
    SCOPED_TRACE(testing::Message() << "m=" << s.m << " n=" << s.n << " k=" << s.k);
    const Bf16Gemm g = MakeBf16Gemm(s.m, s.n, s.k, rng, cpu_.get());
    auto dy = Poisoned(s.m * s.n);
    ASSERT_TRUE(
        GemmBf16(stream_, gpu_->cublas(), g.xp(), g.wp(), dy.data(), false, s.m, s.n, s.k).ok());
    Sync();
    EXPECT_LT(RelErr(Down(dy), g.ref), 1e-2) << "fp32 output";

    auto dyb = Up(std::vector<uint16_t>(s.m * s.n, cudatest::kBf16NaN));
    ASSERT_TRUE(
        GemmBf16(stream_, gpu_->cublas(), g.xp(), g.wp(), dyb.data(), true, s.m, s.n, s.k).ok());
    Sync();
    EXPECT_LT(RelErr(Bf16Values(dyb), g.ref), 1e-2) << "bf16 output";

    // The device-side conversion rounds as Bf16Bits does.
    auto dxf = Up(Random(s.m * s.k, rng));
    auto dconv = Up(std::vector<uint16_t>(s.m * s.k, 0x7fc0));
    ASSERT_TRUE(
        Fp32ToBf16(stream_, dxf.data(), reinterpret_cast<__nv_bfloat16*>(dconv.data()), s.m * s.k)
            .ok());
    const auto xf = Down(dxf);
    const auto conv = Down(dconv);
    for (size_t i = 0; i < xf.size(); ++i) ASSERT_EQ(conv[i], Bf16Bits(xf[i])) << i;
  }
}

// GemmPlanner (cuBLASLt, measured plans): the same GEMM as GemmBf16 whatever algorithm the
// measurement picks, for every m of a bucket once the bucket is measured at another m, and inside a
// graph capture (where it cannot measure and takes the heuristic's choice until it can).
TEST_F(CudaParityTest, GemmPlannerMatchesCpu) {
  std::mt19937 rng(112);
  auto ws = DeviceBuffer<uint8_t>::Allocate(int64_t{32} << 20);
  ASSERT_TRUE(ws.ok()) << ws.status();
  auto planner = GemmPlanner::Create(ws->data(), ws->size());
  ASSERT_TRUE(planner.ok()) << planner.status();
  GemmPlanner& p = **planner;
  struct Shape {
    int64_t m, n, k;
  };
  // 100 and 120 share a bucket (128): the second reuses the first's measured algorithm. 7 x 257 x
  // 511 has rows that are not 16-byte multiples.
  for (const Shape s : {Shape{1, 64, 128}, Shape{100, 384, 256}, Shape{120, 384, 256},
                        Shape{7, 257, 511}, Shape{300, 1024, 512}}) {
    SCOPED_TRACE(testing::Message() << "m=" << s.m << " n=" << s.n << " k=" << s.k);
    const Bf16Gemm g = MakeBf16Gemm(s.m, s.n, s.k, rng, cpu_.get());
    auto dy = Poisoned(s.m * s.n);
    ASSERT_TRUE(p.Run(stream_, g.xp(), g.wp(), dy.data(), false, s.m, s.n, s.k).ok());
    Sync();
    EXPECT_LT(RelErr(Down(dy), g.ref), 1e-2) << "fp32 output";
    auto dyb = Up(std::vector<uint16_t>(s.m * s.n, cudatest::kBf16NaN));
    ASSERT_TRUE(p.Run(stream_, g.xp(), g.wp(), dyb.data(), true, s.m, s.n, s.k).ok());
    Sync();
    EXPECT_LT(RelErr(Bf16Values(dyb), g.ref), 1e-2) << "bf16 output";
  }
  // Measured once per (bucket, n, k, output type): 4 buckets x 2 output types, 120 reusing 100's.
  EXPECT_EQ(p.plans_measured(), 8);

  // A shape first met while the stream is being captured: no measurement, a correct graph.
  const int64_t before = p.plans_measured();
  const Bf16Gemm g = MakeBf16Gemm(40, 640, 192, rng, cpu_.get());
  auto dy = Poisoned(g.m * g.n);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const absl::Status captured = p.Run(stream_, g.xp(), g.wp(), dy.data(), false, g.m, g.n, g.k);
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  ASSERT_TRUE(captured.ok()) << captured;
  EXPECT_EQ(p.plans_measured(), before);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
  Sync();
  EXPECT_LT(RelErr(Down(dy), g.ref), 1e-2) << "captured";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  // Outside the capture the shape is measured after all.
  ASSERT_TRUE(p.Run(stream_, g.xp(), g.wp(), dy.data(), false, g.m, g.n, g.k).ok());
  Sync();
  EXPECT_EQ(p.plans_measured(), before + 1);
  EXPECT_LT(RelErr(Down(dy), g.ref), 1e-2) << "after capture";

  // With measuring off (a serving engine after Prepare), a new shape runs the heuristic's first
  // choice at once: correct, and nothing measured.
  p.set_measuring(false);
  const Bf16Gemm h = MakeBf16Gemm(700, 320, 96, rng, cpu_.get());
  auto dh = Poisoned(h.m * h.n);
  ASSERT_TRUE(p.Run(stream_, h.xp(), h.wp(), dh.data(), false, h.m, h.n, h.k).ok());
  Sync();
  EXPECT_EQ(p.plans_measured(), before + 1);
  EXPECT_LT(RelErr(Down(dh), h.ref), 1e-2) << "not measured";

  // Bad arguments fail alone, by name.
  EXPECT_FALSE(p.Run(stream_, nullptr, g.wp(), dy.data(), false, g.m, g.n, g.k).ok());
  EXPECT_FALSE(p.Run(stream_, g.xp(), g.wp(), dy.data(), false, -1, g.n, g.k).ok());
}

TEST_F(CudaParityTest, RmsNorm) {
  std::mt19937 rng(103);
  struct Shape {
    int64_t m, d;
    float eps;
  };
  for (const Shape s : {Shape{1, 1, 1e-6f}, Shape{5, 19, 1e-5f}, Shape{33, 4096, 1e-6f},
                        Shape{7, 8193, 1e-6f}, Shape{300, 64, 1e-5f}}) {
    for (bool in_place : {false, true}) {
      SCOPED_TRACE(testing::Message() << "m=" << s.m << " d=" << s.d << " in_place=" << in_place);
      auto x = Random(s.m * s.d, rng, 3.0f), w = Random(s.d, rng);
      std::vector<float> ref(x.size());
      cpu_->RmsNorm({x.data(), w.data(), ref.data(), s.m, s.d, s.eps});
      auto dx = Up(x), dw = Up(w);
      auto dy = Poisoned(x.size());
      float* y = in_place ? dx.data() : dy.data();
      gpu_->RmsNorm({dx.data(), dw.data(), y, s.m, s.d, s.eps});
      Sync();
      EXPECT_LT(RelErr(Down(in_place ? dx : dy), ref), kFp32Tol);
    }
  }
}

TEST_F(CudaParityTest, FusedAddRmsNorm) {
  std::mt19937 rng(104);
  struct Shape {
    int64_t m, d;
    float x_scale;
  };
  for (const Shape s :
       {Shape{1, 1, 1.0f}, Shape{5, 19, 1.0f}, Shape{33, 4096, 0.22f}, Shape{3, 1537, 1.0f}}) {
    for (bool out_aliases_x : {false, true}) {
      SCOPED_TRACE(testing::Message() << "m=" << s.m << " d=" << s.d << " alias=" << out_aliases_x);
      auto residual = Random(s.m * s.d, rng), x = Random(s.m * s.d, rng), w = Random(s.d, rng);
      std::vector<float> ref_residual(residual.size()), ref(residual.size());
      cpu_->Add({residual.data(), x.data(), ref_residual.data(), s.m * s.d, s.x_scale});
      cpu_->RmsNorm({ref_residual.data(), w.data(), ref.data(), s.m, s.d, 1e-6f});
      auto dres = Up(residual), dx = Up(x), dw = Up(w);
      auto dout = Poisoned(residual.size());
      float* out = out_aliases_x ? dx.data() : dout.data();
      ASSERT_TRUE(FusedAddRmsNorm(
                      stream_, {dres.data(), dx.data(), dw.data(), out, s.m, s.d, 1e-6f, s.x_scale})
                      .ok());
      Sync();
      EXPECT_LT(RelErr(Down(dres), ref_residual), kFp32Tol);
      EXPECT_LT(RelErr(Down(out_aliases_x ? dx : dout), ref), kFp32Tol);
    }
  }
}

TEST_F(CudaParityTest, Rope) {
  std::mt19937 rng(105);
  struct Shape {
    int64_t tokens, heads, kv_heads, head_dim;
    float theta;
    bool given_inv_freq;
    bool q_only;
  };
  for (const Shape s :
       {Shape{1, 1, 1, 2, 10000.0f, false, false}, Shape{7, 4, 2, 64, 10000.0f, false, false},
        Shape{13, 8, 8, 128, 500000.0f, false, false}, Shape{5, 6, 3, 6, 10000.0f, true, false},
        Shape{40, 32, 8, 64, 500000.0f, true, false}, Shape{9, 4, 1, 32, 10000.0f, false, true}}) {
    SCOPED_TRACE(testing::Message() << "tokens=" << s.tokens << " heads=" << s.heads << "/"
                                    << s.kv_heads << " head_dim=" << s.head_dim);
    auto q = Random(s.tokens * s.heads * s.head_dim, rng);
    auto k = Random(s.tokens * s.kv_heads * s.head_dim, rng);
    // Positions from the start to deep into a long context.
    std::vector<int32_t> pos(s.tokens);
    std::uniform_int_distribution<int32_t> pos_dist(0, 32000);
    for (int64_t t = 0; t < s.tokens; ++t) pos[t] = t == 0 ? 0 : pos_dist(rng);
    // A scaled table (as Llama 3 rope scaling gives) when given.
    std::vector<float> inv_freq(s.head_dim / 2);
    for (int64_t i = 0; i < s.head_dim / 2; ++i) {
      inv_freq[i] = 0.7f / std::pow(s.theta, static_cast<float>(2 * i) / s.head_dim);
    }
    auto ref_q = q, ref_k = k;
    RopeArgs cpu_args{ref_q.data(),
                      s.q_only ? nullptr : ref_k.data(),
                      pos.data(),
                      s.tokens,
                      s.heads,
                      s.kv_heads,
                      s.head_dim,
                      s.theta,
                      s.given_inv_freq ? inv_freq.data() : nullptr};
    cpu_->Rope(cpu_args);
    auto dq = Up(q), dk = Up(k), dfreq = Up(inv_freq);
    auto dpos = Up(pos);
    RopeArgs gpu_args{dq.data(),
                      s.q_only ? nullptr : dk.data(),
                      dpos.data(),
                      s.tokens,
                      s.heads,
                      s.kv_heads,
                      s.head_dim,
                      s.theta,
                      s.given_inv_freq ? dfreq.data() : nullptr};
    gpu_->Rope(gpu_args);
    Sync();
    EXPECT_LT(RelErr(Down(dq), ref_q), kFp32Tol);
    EXPECT_LT(RelErr(Down(dk), ref_k), kFp32Tol);
  }
}

TEST_F(CudaParityTest, SiluMulAddEmbeddingSoftmax) {
  std::mt19937 rng(106);
  for (int64_t m : {1, 3, 64}) {
    for (int64_t n : {1, 17, 5632}) {
      SCOPED_TRACE(testing::Message() << "m=" << m << " n=" << n);
      auto gate = Random(m * n, rng, 3.0f), up = Random(m * n, rng);
      {
        std::vector<float> ref(m * n);
        cpu_->SiluMul({gate.data(), up.data(), ref.data(), m, n});
        auto dg = Up(gate), du = Up(up);
        auto dout = Poisoned(m * n);
        gpu_->SiluMul({dg.data(), du.data(), dout.data(), m, n});
        Sync();
        EXPECT_LT(RelErr(Down(dout), ref), kFp32Tol) << "SiluMul";
        gpu_->SiluMul({dg.data(), du.data(), dg.data(), m, n});  // out aliases gate
        Sync();
        EXPECT_LT(RelErr(Down(dg), ref), kFp32Tol) << "SiluMul in place";
      }
      for (float b_scale : {1.0f, 0.22f}) {
        std::vector<float> ref(m * n);
        cpu_->Add({gate.data(), up.data(), ref.data(), m * n, b_scale});
        auto da = Up(gate), db = Up(up);
        auto dy = Poisoned(m * n);
        gpu_->Add({da.data(), db.data(), dy.data(), m * n, b_scale});
        Sync();
        EXPECT_LT(RelErr(Down(dy), ref), kFp32Tol) << "Add " << b_scale;
      }
      {
        std::vector<float> ref(m * n);
        cpu_->Softmax({gate.data(), ref.data(), m, n});
        auto dx = Up(gate);
        auto dy = Poisoned(m * n);
        gpu_->Softmax({dx.data(), dy.data(), m, n});
        Sync();
        EXPECT_LT(RelErr(Down(dy), ref), kFp32Tol) << "Softmax";
        gpu_->Softmax({dx.data(), dx.data(), m, n});
        Sync();
        EXPECT_LT(RelErr(Down(dx), ref), kFp32Tol) << "Softmax in place";
      }
    }
  }
  for (int64_t vocab : {1, 1000}) {
    for (int64_t hidden : {1, 7, 2048}) {
      for (float scale : {1.0f, 12.0f}) {
        SCOPED_TRACE(testing::Message() << "vocab=" << vocab << " hidden=" << hidden);
        auto table = Random(vocab * hidden, rng);
        std::vector<int32_t> ids(37);
        std::uniform_int_distribution<int32_t> id_dist(0, vocab - 1);
        for (int32_t& id : ids) id = id_dist(rng);
        const int64_t num = static_cast<int64_t>(ids.size());
        std::vector<float> ref(num * hidden);
        cpu_->Embedding({ids.data(), table.data(), ref.data(), num, vocab, hidden, scale});
        auto dids = Up(ids);
        auto dtable = Up(table);
        auto dout = Poisoned(num * hidden);
        gpu_->Embedding({dids.data(), dtable.data(), dout.data(), num, vocab, hidden, scale});
        Sync();
        EXPECT_LT(RelErr(Down(dout), ref), kFp32Tol) << "Embedding";
      }
    }
  }
}

// A flat batch of several sequences, each with its own length and a chunk of query tokens at its
// end (a decode is a chunk of one, a prefill a chunk of all), over a paged cache whose blocks are
// handed out in shuffled order. Earlier positions' keys and values are already in the cache;
// this step's are written by CacheWrite on each backend, then attention runs.
struct AttentionCase {
  int64_t num_heads, num_kv_heads, head_dim, block_size;
  std::vector<int64_t> seq_lens;  // keys each sequence has after this step
  std::vector<int64_t> chunks;    // query tokens of this step per sequence (its last positions)
};

TEST_F(CudaParityTest, CacheWriteAndPagedAttention) {
  std::mt19937 rng(107);
  const std::vector<AttentionCase> cases = {
      {1, 1, 2, 1, {1}, {1}},
      {4, 4, 64, 16, {1, 17, 100, 300}, {1, 1, 1, 1}},     // decodes, GQA 1
      {8, 4, 64, 16, {5, 40, 3000}, {5, 16, 1}},           // prefill + chunk + deep decode
      {8, 2, 128, 16, {33, 257, 1024, 7}, {33, 3, 1, 7}},  // GQA 4
      {6, 3, 80, 1, {19, 64, 150}, {19, 2, 1}},            // block size 1, head_dim 80
      {32, 8, 64, 16, {2048, 129, 1}, {4, 129, 1}},        // Llama-1B's heads
      {4, 2, 256, 16, {70, 500}, {70, 1}},                 // largest head_dim
      {2, 1, 37, 16, {50, 17}, {3, 17}},                   // odd head_dim
  };
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(testing::Message() << "heads=" << c.num_heads << "/" << c.num_kv_heads
                                    << " head_dim=" << c.head_dim << " block=" << c.block_size);
    const int64_t num_seqs = static_cast<int64_t>(c.seq_lens.size());
    int64_t max_blocks = 0, total_blocks = 0;
    for (int64_t len : c.seq_lens) {
      const int64_t b = (len + c.block_size - 1) / c.block_size;
      max_blocks = std::max(max_blocks, b);
      total_blocks += b;
    }
    const int64_t num_blocks = total_blocks + 3;  // a few blocks no one owns
    std::vector<int32_t> block_ids(num_blocks);
    std::iota(block_ids.begin(), block_ids.end(), 0);
    std::shuffle(block_ids.begin(), block_ids.end(), rng);
    std::vector<int32_t> tables(num_seqs * max_blocks, -1);
    int64_t next = 0;
    for (int64_t s = 0; s < num_seqs; ++s) {
      const int64_t b = (c.seq_lens[s] + c.block_size - 1) / c.block_size;
      for (int64_t i = 0; i < b; ++i) tables[s * max_blocks + i] = block_ids[next++];
    }
    const int64_t kv_row = c.num_kv_heads * c.head_dim;
    const int64_t cache_size = num_blocks * c.block_size * kv_row;
    auto k_cache = Random(cache_size, rng), v_cache = Random(cache_size, rng);

    std::vector<int32_t> token_seq, positions, slots;
    for (int64_t s = 0; s < num_seqs; ++s) {
      for (int64_t p = c.seq_lens[s] - c.chunks[s]; p < c.seq_lens[s]; ++p) {
        token_seq.push_back(static_cast<int32_t>(s));
        positions.push_back(static_cast<int32_t>(p));
        slots.push_back(tables[s * max_blocks + p / c.block_size] * c.block_size +
                        p % c.block_size);
      }
    }
    const int64_t num_tokens = static_cast<int64_t>(positions.size());
    auto q = Random(num_tokens * c.num_heads * c.head_dim, rng);
    auto k = Random(num_tokens * kv_row, rng), v = Random(num_tokens * kv_row, rng);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

    auto ref_k_cache = k_cache, ref_v_cache = v_cache;
    cpu_->CacheWrite({k.data(), v.data(), ref_k_cache.data(), ref_v_cache.data(), slots.data(),
                      num_tokens, c.num_kv_heads, c.head_dim});
    std::vector<float> ref(q.size());
    cpu_->PagedAttention({q.data(), ref_k_cache.data(), ref_v_cache.data(), tables.data(),
                          token_seq.data(), positions.data(), ref.data(), num_tokens, c.num_heads,
                          c.num_kv_heads, c.head_dim, c.block_size, max_blocks, scale});

    auto dk_cache = Up(k_cache), dv_cache = Up(v_cache), dk = Up(k), dv = Up(v), dq = Up(q);
    auto dtables = Up(tables), dseq = Up(token_seq), dpos = Up(positions), dslots = Up(slots);
    auto dout = Poisoned(q.size());
    gpu_->CacheWrite({dk.data(), dv.data(), dk_cache.data(), dv_cache.data(), dslots.data(),
                      num_tokens, c.num_kv_heads, c.head_dim});
    gpu_->PagedAttention({dq.data(), dk_cache.data(), dv_cache.data(), dtables.data(), dseq.data(),
                          dpos.data(), dout.data(), num_tokens, c.num_heads, c.num_kv_heads,
                          c.head_dim, c.block_size, max_blocks, scale});
    Sync();
    EXPECT_EQ(Down(dk_cache), ref_k_cache) << "k cache";
    EXPECT_EQ(Down(dv_cache), ref_v_cache) << "v cache";
    EXPECT_LT(RelErr(Down(dout), ref), kFp32Tol) << "attention";
  }
}

TEST_F(CudaParityTest, ArgmaxMatchesCpu) {
  std::mt19937 rng(108);
  for (int64_t vocab : {1, 7, 32000, 128256}) {
    const int64_t rows = 6;
    auto logits = Random(rows * vocab, rng, 4.0f);
    if (vocab > 1) {
      // Row 1: a tie for the maximum, which the lowest index must win.
      float* row = logits.data() + vocab;
      const float top = *std::max_element(row, row + vocab) + 1.0f;
      row[vocab - 1] = top;
      row[vocab / 2] = top;
    }
    auto dl = Up(logits);
    auto dt = Up(std::vector<int32_t>(rows, -1));
    ASSERT_TRUE(ArgmaxRows(stream_, dl.data(), rows, vocab, dt.data()).ok());
    const auto tokens = Down(dt);
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_EQ(tokens[r], engine::Argmax(logits.data() + r * vocab, vocab))
          << "vocab=" << vocab << " row=" << r;
    }
  }
}

TEST_F(CudaParityTest, SamplingMatchesCpuSamplerAndIsDeterministic) {
  std::mt19937 rng(109);
  struct Params {
    float temperature;
    int32_t top_k;
    float top_p;
  };
  const std::vector<Params> params = {{0.0f, -1, 1.0f}, {1.0f, -1, 1.0f},    {0.7f, 50, 1.0f},
                                      {1.0f, -1, 0.9f}, {1.3f, 40, 0.8f},    {1.0f, 1, 1.0f},
                                      {0.5f, 0, 0.5f},  {2.0f, 1000, 0.95f}, {1.0f, -1, 0.01f}};
  for (int64_t vocab : {5, 1000, 32000}) {
    const int64_t rows = static_cast<int64_t>(params.size()) * 3;
    // Logits spread enough that top-p cuts at different places.
    auto logits = Random(rows * vocab, rng, 3.0f);
    std::vector<float> temperature(rows), top_p(rows);
    std::vector<int32_t> top_k(rows);
    std::vector<uint64_t> seed(rows), step(rows);
    std::uniform_int_distribution<uint64_t> u64;
    for (int64_t r = 0; r < rows; ++r) {
      const Params& p = params[r % params.size()];
      temperature[r] = p.temperature;
      top_k[r] = p.top_k;
      top_p[r] = p.top_p;
      seed[r] = u64(rng);
      step[r] = r * 7;
    }
    auto dl = Up(logits), dtemp = Up(temperature), dtopp = Up(top_p);
    auto dtopk = Up(top_k);
    auto dseed = Up(seed), dstep = Up(step);
    auto run = [&]() {
      auto dt = Up(std::vector<int32_t>(rows, -1));
      SampleArgs a;
      a.logits = dl.data();
      a.temperature = dtemp.data();
      a.top_k = dtopk.data();
      a.top_p = dtopp.data();
      a.seed = dseed.data();
      a.step = dstep.data();
      a.tokens = dt.data();
      a.num_rows = rows;
      a.vocab = vocab;
      const absl::Status s = SampleRows(stream_, a);
      EXPECT_TRUE(s.ok()) << s;
      return Down(dt);
    };
    const auto first = run();
    EXPECT_EQ(run(), first) << "same seeds, same tokens";
    for (int64_t r = 0; r < rows; ++r) {
      engine::SamplingParams sp;
      sp.temperature = temperature[r];
      sp.top_k = top_k[r];
      sp.top_p = top_p[r];
      const int32_t want =
          engine::SampleToken(logits.data() + r * vocab, vocab, sp, seed[r], step[r]);
      EXPECT_EQ(first[r], want) << "vocab=" << vocab << " row=" << r << " T=" << sp.temperature
                                << " top_k=" << sp.top_k << " top_p=" << sp.top_p;
    }
  }
}

// The bf16 serving path's row-wise ops (kernels/cuda/fast_norm.cu) against the fp32 CPU ops with
// the result rounded to bf16: the GPU's fp32 sum may differ in its last bits, so a value may round
// to the neighbouring bf16; relative L2 1e-2 (a bf16 ulp is 2^-8 relative).
std::vector<float> FromBf16(const std::vector<__nv_bfloat16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t bits;
    std::memcpy(&bits, &v[i], 2);
    out[i] = Bf16Value(bits);
  }
  return out;
}
std::vector<__nv_bfloat16> ToBf16(const std::vector<float>& v) {
  std::vector<__nv_bfloat16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t bits = Bf16Bits(v[i]);
    std::memcpy(static_cast<void*>(&out[i]), &bits, 2);
  }
  return out;
}
std::vector<float> RoundedToBf16(std::vector<float> v) {
  for (float& x : v) x = Bf16Value(Bf16Bits(x));
  return v;
}
DeviceBuffer<__nv_bfloat16> PoisonedBf16(size_t n) {
  return Up(ToBf16(std::vector<float>(n, kNaN)));
}

TEST_F(CudaParityTest, RmsNormAndAddRmsNormToBf16) {
  std::mt19937 rng(111);
  for (const auto& [m, d] : {std::pair<int64_t, int64_t>{1, 64}, {7, 96}, {33, 2048}, {5, 3000}}) {
    SCOPED_TRACE(testing::Message() << "m=" << m << " d=" << d);
    const auto x = Random(m * d, rng), w = Random(d, rng), delta = Random(m * d, rng);
    const float eps = 1e-5f, scale = 0.22f;
    // RmsNormToBf16 against RmsNorm.
    std::vector<float> want(m * d);
    cpu_->RmsNorm({x.data(), w.data(), want.data(), m, d, eps});
    auto dx = Up(x), dw = Up(w), ddelta = Up(delta);
    auto dout = PoisonedBf16(m * d);
    ASSERT_EQ(gpu::RmsNormToBf16(stream_, dx.data(), dw.data(), dout.data(), m, d, eps),
              cudaSuccess);
    Sync();
    EXPECT_LE(RelErr(FromBf16(Down(dout)), RoundedToBf16(want)), 1e-2);
    // AddRmsNormToBf16 against Add then RmsNorm: the residual in fp32, the output in bf16.
    std::vector<float> residual(m * d);
    cpu_->Add({x.data(), delta.data(), residual.data(), m * d, scale});
    cpu_->RmsNorm({residual.data(), w.data(), want.data(), m, d, eps});
    dout = PoisonedBf16(m * d);
    ASSERT_EQ(gpu::AddRmsNormToBf16(stream_, dx.data(), ddelta.data(), dw.data(), dout.data(), m, d,
                                    eps, scale),
              cudaSuccess);
    Sync();
    EXPECT_LE(RelErr(Down(dx), residual), kFp32Tol);
    EXPECT_LE(RelErr(FromBf16(Down(dout)), RoundedToBf16(want)), 1e-2);
  }
}

TEST_F(CudaParityTest, SiluMulFusedAndEmbeddingBf16) {
  std::mt19937 rng(112);
  for (const auto& [m, n] : {std::pair<int64_t, int64_t>{1, 32}, {9, 160}, {64, 8192}}) {
    SCOPED_TRACE(testing::Message() << "m=" << m << " n=" << n);
    // gate_up rows: n gate columns, then n up columns, as the fused GEMM writes them (bf16).
    const auto gate_up = RoundedToBf16(Random(m * 2 * n, rng));
    std::vector<float> gate(m * n), up(m * n), want(m * n);
    for (int64_t r = 0; r < m; ++r) {
      std::copy_n(gate_up.begin() + r * 2 * n, n, gate.begin() + r * n);
      std::copy_n(gate_up.begin() + r * 2 * n + n, n, up.begin() + r * n);
    }
    cpu_->SiluMul({gate.data(), up.data(), want.data(), m, n});
    auto din = Up(ToBf16(gate_up));
    auto dout = PoisonedBf16(m * n);
    ASSERT_EQ(gpu::SiluMulFusedToBf16(stream_, din.data(), dout.data(), m, n), cudaSuccess);
    Sync();
    EXPECT_LE(RelErr(FromBf16(Down(dout)), RoundedToBf16(want)), 1e-2);
  }
  // The bf16 embedding lookup is exact: float(bf16) * scale in fp32 either way.
  const int64_t vocab = 300, hidden = 96, t = 17;
  const auto table = RoundedToBf16(Random(vocab * hidden, rng));
  std::vector<int32_t> ids(t);
  for (int64_t i = 0; i < t; ++i) ids[i] = static_cast<int32_t>((i * 37 + 5) % vocab);
  std::vector<float> want(t * hidden);
  cpu_->Embedding({ids.data(), table.data(), want.data(), t, vocab, hidden, 12.0f});
  auto dtable = Up(ToBf16(table));
  auto dids = Up(ids);
  auto dout = Poisoned(t * hidden);
  ASSERT_EQ(gpu::EmbeddingBf16(stream_, dids.data(), dtable.data(), dout.data(), t, hidden, 12.0f),
            cudaSuccess);
  Sync();
  EXPECT_EQ(Down(dout), want);
}

// SampleFast draws greedy and plain-temperature rows (Gumbel-max) as the CPU sampler does and
// marks the rows that need the sorted path with -1.
TEST_F(CudaParityTest, SampleFastMatchesCpuSampler) {
  std::mt19937 rng(113);
  const int64_t vocab = 128256, rows = 12;
  const auto logits = Random(rows * vocab, rng, 3.0f);
  std::vector<float> temperature(rows), top_p(rows, 1.0f);
  std::vector<int32_t> top_k(rows, -1);
  std::vector<uint64_t> seed(rows), step(rows);
  for (int64_t r = 0; r < rows; ++r) {
    temperature[r] = r % 4 == 0 ? 0.0f : 0.5f + 0.25f * static_cast<float>(r % 3);
    seed[r] = 1000 + 17 * r;
    step[r] = r;
  }
  top_p[5] = 0.9f;  // these two need the sorted path
  top_k[7] = 50;
  auto dl = Up(logits), dtemp = Up(temperature), dtopp = Up(top_p);
  auto dtopk = Up(top_k);
  auto dseed = Up(seed), dstep = Up(step);
  auto dt = Up(std::vector<int32_t>(rows, -7));
  const gpu::SampleFastArgs a{dl.data(),    dtemp.data(), dtopk.data(), dtopp.data(), dseed.data(),
                              dstep.data(), dt.data(),    rows,         vocab};
  ASSERT_EQ(gpu::SampleFast(stream_, a), cudaSuccess);
  Sync();
  const auto got = Down(dt);
  for (int64_t r = 0; r < rows; ++r) {
    if (r == 5 || r == 7) {
      EXPECT_EQ(got[r], -1) << "row " << r;
      continue;
    }
    engine::SamplingParams sp;
    sp.temperature = temperature[r];
    sp.top_k = top_k[r];
    sp.top_p = top_p[r];
    EXPECT_EQ(got[r], engine::SampleToken(logits.data() + r * vocab, vocab, sp, seed[r], step[r]))
        << "row " << r;
  }
}

TEST_F(CudaParityTest, BadArgumentsAreRecordedNotFatal) {
  // An odd head_dim is refused with a Status, and the backend keeps the first error.
  std::vector<int32_t> pos = {0};
  auto dpos = Up(pos);
  auto dq = Up(std::vector<float>(3, 1.0f));
  gpu_->Rope({dq.data(), nullptr, dpos.data(), 1, 1, 1, 3, 10000.0f, nullptr});
  EXPECT_EQ(gpu_->status().code(), absl::StatusCode::kInvalidArgument) << gpu_->status();
  gpu_->PagedAttention({});
  EXPECT_EQ(gpu_->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(gpu_->status().message().find("head_dim"), std::string::npos) << gpu_->status();
  gpu_->ClearStatus();
}

// The vectorised paths of the bf16 row-wise and element-wise ops (16-byte loads where the row is a
// multiple of 8 elements and every pointer is 16-byte aligned, scalar kernels otherwise): odd and
// tiny rows, several rows per warp, 1/2/4 groups per thread, long rows, large t, and pointers one
// element off alignment. Beyond the relative L2 bound, every bf16 output must be within one bf16
// ulp of the CPU's fp32 result rounded to bf16, and the elements around the written range must
// stay untouched.

// Largest distance, in bf16 ulps, between bf16 values `got` and fp32 values `want` rounded to bf16
// (INT_MAX when got holds a non-finite value).
int MaxBf16UlpDiff(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  const auto ordered = [](float f) {
    const int32_t b = Bf16Bits(f);
    return (b & 0x8000) != 0 ? -(b & 0x7fff) : b;
  };
  int worst = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<int>::max();
    worst = std::max(worst, std::abs(ordered(got[i]) - ordered(want[i])));
  }
  return worst;
}

// [offset, offset + n) of a downloaded buffer, and whether everything outside it is still NaN.
template <typename T>
std::vector<T> Slice(const std::vector<T>& v, int64_t offset, int64_t n) {
  return std::vector<T>(v.begin() + offset, v.begin() + offset + n);
}
bool OutsideIsNaN(const std::vector<float>& v, int64_t offset, int64_t n) {
  for (int64_t i = 0; i < static_cast<int64_t>(v.size()); ++i) {
    if ((i < offset || i >= offset + n) && !std::isnan(v[i])) return false;
  }
  return true;
}
// A host vector placed at `offset` inside a NaN-padded vector of n + 2 elements.
std::vector<float> Padded(const std::vector<float>& v, int64_t offset) {
  std::vector<float> out(v.size() + 2, kNaN);
  std::copy(v.begin(), v.end(), out.begin() + offset);
  return out;
}

TEST_F(CudaParityTest, RmsNormToBf16VectorPathsAndOffsets) {
  std::mt19937 rng(121);
  // (m, d): 1 / 4 / 8 / 32 lanes per row (several rows per warp), one group per thread
  // (d <= 2048), two (<= 8192), four (<= 16384), too long (16392) and not a multiple of 8 (the
  // generic kernel), large t.
  const std::pair<int64_t, int64_t> shapes[] = {
      {1, 8}, {3, 24},     {300, 64},   {5, 256},  {2, 264},  {7, 96},    {17, 100},  {5, 19},
      {1, 1}, {256, 2048}, {256, 3072}, {9, 5120}, {3, 8192}, {2, 16384}, {2, 16392}, {4096, 2048}};
  for (const auto& [m, d] : shapes) {
    for (const int64_t offset : {0, 1}) {
      if (m * d > (1 << 20) && offset == 1) continue;  // the big shape once, aligned
      SCOPED_TRACE(testing::Message() << "m=" << m << " d=" << d << " offset=" << offset);
      const auto x = Random(m * d, rng, 2.0f), w = Random(d, rng), delta = Random(m * d, rng);
      const float eps = 1e-5f, scale = 0.22f;
      const int64_t n = m * d;
      // RmsNormToBf16 against RmsNorm.
      std::vector<float> want(n);
      cpu_->RmsNorm({x.data(), w.data(), want.data(), m, d, eps});
      auto dx = Up(Padded(x, offset)), dw = Up(Padded(w, offset));
      auto ddelta = Up(Padded(delta, offset));
      auto dout = PoisonedBf16(n + 2);
      ASSERT_EQ(gpu::RmsNormToBf16(stream_, dx.data() + offset, dw.data() + offset,
                                   dout.data() + offset, m, d, eps),
                cudaSuccess);
      Sync();
      auto got = FromBf16(Down(dout));
      EXPECT_TRUE(OutsideIsNaN(got, offset, n)) << "RmsNormToBf16 wrote outside its rows";
      got = Slice(got, offset, n);
      EXPECT_LE(RelErr(got, RoundedToBf16(want)), 1e-2);
      EXPECT_LE(MaxBf16UlpDiff(got, want), 1) << "RmsNormToBf16";
      // AddRmsNormToBf16 against Add then RmsNorm; out one bf16 off alignment when offset is 1
      // (the residual and x stay aligned only for the first run). The residual must match the
      // CPU's to fp32 rounding (the GPU fuses x + delta * scale into one FMA, the CPU rounds the
      // product first, which matters where the sum cancels); the bf16 output is held to one ulp of
      // the CPU norm of the GPU's own residual.
      std::vector<float> residual(n);
      cpu_->Add({x.data(), delta.data(), residual.data(), n, scale});
      dout = PoisonedBf16(n + 2);
      ASSERT_EQ(gpu::AddRmsNormToBf16(stream_, dx.data() + offset, ddelta.data() + offset,
                                      dw.data() + offset, dout.data() + offset, m, d, eps, scale),
                cudaSuccess);
      Sync();
      const auto got_residual = Down(dx);
      EXPECT_TRUE(OutsideIsNaN(got_residual, offset, n)) << "residual written outside its rows";
      EXPECT_LE(RelErr(Slice(got_residual, offset, n), residual), kFp32Tol);
      const auto gpu_residual = Slice(got_residual, offset, n);
      cpu_->RmsNorm({gpu_residual.data(), w.data(), want.data(), m, d, eps});
      got = FromBf16(Down(dout));
      EXPECT_TRUE(OutsideIsNaN(got, offset, n)) << "AddRmsNormToBf16 wrote outside its rows";
      got = Slice(got, offset, n);
      EXPECT_LE(RelErr(got, RoundedToBf16(want)), 1e-2);
      EXPECT_LE(MaxBf16UlpDiff(got, want), 1) << "AddRmsNormToBf16";
    }
  }
}

// The fp32 RMSNorms share the vectorised kernel: the shapes the older tests miss, in place too.
TEST_F(CudaParityTest, RmsNormFp32VectorPaths) {
  std::mt19937 rng(122);
  for (const auto& [m, d] :
       {std::pair<int64_t, int64_t>{3, 24}, {2, 264}, {5, 3072}, {3, 8192}, {2, 16384}, {40, 8}}) {
    for (bool in_place : {false, true}) {
      SCOPED_TRACE(testing::Message() << "m=" << m << " d=" << d << " in_place=" << in_place);
      const auto residual = Random(m * d, rng), x = Random(m * d, rng), w = Random(d, rng);
      std::vector<float> ref(m * d), ref_residual(m * d), ref_fused(m * d);
      cpu_->RmsNorm({x.data(), w.data(), ref.data(), m, d, 1e-6f});
      cpu_->Add({residual.data(), x.data(), ref_residual.data(), m * d, 0.5f});
      cpu_->RmsNorm({ref_residual.data(), w.data(), ref_fused.data(), m, d, 1e-6f});
      auto dx = Up(x), dw = Up(w), dres = Up(residual);
      auto dy = Poisoned(m * d);
      gpu_->RmsNorm({dx.data(), dw.data(), in_place ? dx.data() : dy.data(), m, d, 1e-6f});
      Sync();
      EXPECT_LT(RelErr(Down(in_place ? dx : dy), ref), kFp32Tol);
      dx = Up(x);
      dy = Poisoned(m * d);
      float* out = in_place ? dx.data() : dy.data();  // out aliases x
      ASSERT_TRUE(
          FusedAddRmsNorm(stream_, {dres.data(), dx.data(), dw.data(), out, m, d, 1e-6f, 0.5f})
              .ok());
      Sync();
      EXPECT_LT(RelErr(Down(dres), ref_residual), kFp32Tol);
      EXPECT_LT(RelErr(Down(in_place ? dx : dy), ref_fused), kFp32Tol);
    }
  }
}

TEST_F(CudaParityTest, SiluMulFusedVectorPathsAndOffsets) {
  std::mt19937 rng(123);
  for (const auto& [m, n] : {std::pair<int64_t, int64_t>{1, 8},
                             {3, 13},
                             {4, 1},
                             {9, 160},
                             {5, 28672},
                             {256, 8192},
                             {2048, 8192}}) {
    SCOPED_TRACE(testing::Message() << "m=" << m << " n=" << n);
    const auto gate_up = RoundedToBf16(Random(m * 2 * n, rng, 2.0f));
    std::vector<float> gate(m * n), up(m * n), want(m * n);
    for (int64_t r = 0; r < m; ++r) {
      std::copy_n(gate_up.begin() + r * 2 * n, n, gate.begin() + r * n);
      std::copy_n(gate_up.begin() + r * 2 * n + n, n, up.begin() + r * n);
    }
    cpu_->SiluMul({gate.data(), up.data(), want.data(), m, n});
    std::vector<float> by_offset[2];
    for (const int64_t offset : {0, 1}) {  // 1: both pointers one bf16 off 16-byte alignment
      SCOPED_TRACE(testing::Message() << "offset=" << offset);
      auto din = Up(ToBf16(Padded(gate_up, offset)));
      auto dout = PoisonedBf16(m * n + 2);
      ASSERT_EQ(gpu::SiluMulFusedToBf16(stream_, din.data() + offset, dout.data() + offset, m, n),
                cudaSuccess);
      Sync();
      const auto all = FromBf16(Down(dout));
      EXPECT_TRUE(OutsideIsNaN(all, offset, m * n)) << "wrote outside [0, m * n)";
      by_offset[offset] = Slice(all, offset, m * n);
      EXPECT_LE(RelErr(by_offset[offset], RoundedToBf16(want)), 1e-2);
      EXPECT_LE(MaxBf16UlpDiff(by_offset[offset], want), 1);
    }
    // Element-wise: the vector and the scalar kernels compute the same bits.
    EXPECT_EQ(0, std::memcmp(by_offset[0].data(), by_offset[1].data(), 4 * m * n));
  }
}

TEST_F(CudaParityTest, EmbeddingBf16VectorPathsAndOffsets) {
  std::mt19937 rng(124);
  for (const int64_t hidden : {8, 13, 96, 2048}) {
    for (const int64_t offset : {0, 1}) {
      SCOPED_TRACE(testing::Message() << "hidden=" << hidden << " offset=" << offset);
      const int64_t vocab = 50, t = 9;
      const auto table = RoundedToBf16(Random(vocab * hidden, rng));
      std::vector<int32_t> ids(t);
      for (int64_t i = 0; i < t; ++i) ids[i] = static_cast<int32_t>((i * 17 + 3) % vocab);
      std::vector<float> want(t * hidden);
      cpu_->Embedding({ids.data(), table.data(), want.data(), t, vocab, hidden, 0.5f});
      auto dtable = Up(ToBf16(Padded(table, offset)));
      auto dids = Up(ids);
      auto dout = Poisoned(t * hidden + 2);
      ASSERT_EQ(gpu::EmbeddingBf16(stream_, dids.data(), dtable.data() + offset,
                                   dout.data() + offset, t, hidden, 0.5f),
                cudaSuccess);
      Sync();
      const auto all = Down(dout);
      EXPECT_TRUE(OutsideIsNaN(all, offset, t * hidden));
      EXPECT_EQ(Slice(all, offset, t * hidden), want);
    }
  }
}

#endif  // DPINFER_HAVE_CUDA

}  // namespace
}  // namespace dpinfer::kernels
