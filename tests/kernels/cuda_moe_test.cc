// The device-side mixture of experts (kernels/cuda/moe_grouped.cu) against its host twins:
// MoeRoute must make engine::RouteTokens' choices exactly (experts, rows, slots) with its weights
// to 1e-6 relative, over Mixtral and GraniteMoE routing, several (tokens, experts, k) and logits
// full of deliberate ties; GroupedGemm must match a host fp64-accumulated product on the same
// bf16-rounded inputs (relative L2 per row 1e-4 for fp32 outputs, 1e-2 for bf16), with and without
// a gather, over empty experts, one expert taking every row, and n / k that are not multiples of
// the tile. Outputs are poisoned with NaN first: every routed row must be written and rows past
// expert_offsets[E] must stay untouched. Both ops are also run from a captured CUDA graph, and a
// last test prints timings at PowerMoE-3b's shapes. Without CUDA in the build, or without a
// device, the tests are skipped with the reason.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"

#ifdef DPINFER_HAVE_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <utility>

#include "common/safetensors.h"
#include "common/status.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/fast_ops.h"
#include "tests/kernels/cuda_testutil.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/model_config.h"
#endif

namespace dpinfer::kernels {
namespace {

#ifndef DPINFER_HAVE_CUDA

TEST(CudaMoeTest, SkippedWithoutCuda) {
  GTEST_SKIP() << "built without CUDA (nvcc not found or DPINFER_CUDA=OFF): nothing to compare";
}

#else

using cudatest::Down;
using cudatest::kBf16NaN;
using cudatest::kNaN;
using cudatest::Up;

using engine::ModelConfig;
using engine::ModelFamily;

const __nv_bfloat16* AsBf16(const DeviceBuffer<uint16_t>& b) {
  return reinterpret_cast<const __nv_bfloat16*>(b.data());
}

// Index of the first element where a and b differ, or -1 (keeps failure output short).
template <typename T>
int64_t FirstMismatch(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return -1;
}

class CudaMoeTest : public cudatest::StreamTest {
 protected:
  CudaMoeTest() : StreamTest(/*cpu_threads=*/1) {}
};

// ---------------------------------------------------------------------------------------------
// Routing.

struct Routing {
  std::vector<int32_t> offsets;  // [E + 1]
  std::vector<int32_t> sorted_token;
  std::vector<int32_t> token_rows;
  std::vector<float> token_weights;
};

// engine::RouteTokens' per-expert lists laid out as MoeRoute's outputs.
Routing HostRouting(ModelFamily family, const std::vector<float>& logits, int64_t t, int64_t e,
                    int64_t k, Backend* cpu) {
  ModelConfig c;
  c.family = family;
  c.num_experts = e;
  c.num_experts_per_tok = k;
  const auto per_expert = engine::RouteTokens(c, logits.data(), t, cpu);
  Routing r;
  r.offsets.resize(e + 1);
  r.sorted_token.resize(t * k);
  r.token_rows.resize(t * k);
  r.token_weights.resize(t * k);
  std::vector<int64_t> next_slot(t, 0);  // experts are visited ascending: slots fill in order
  int32_t row = 0;
  for (int64_t x = 0; x < e; ++x) {
    r.offsets[x] = row;
    for (const auto& [tok, w] : per_expert[x]) {
      const int64_t s = next_slot[tok]++;
      r.sorted_token[row] = static_cast<int32_t>(tok);
      r.token_rows[tok * k + s] = row;
      r.token_weights[tok * k + s] = w;
      ++row;
    }
  }
  r.offsets[e] = row;
  return r;
}

// Router logits where ties are common: token modes cycle through plain normal values, values
// rounded to halves (many equal), a constant row (all equal), and a row whose k-th and (k+1)-th
// largest are made equal and whose largest is copied onto another expert.
std::vector<float> TiedLogits(int64_t t, int64_t e, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 2.0f);
  std::uniform_int_distribution<int64_t> pick(0, e - 1);
  std::vector<float> logits(t * e);
  for (float& v : logits) v = dist(rng);
  std::vector<int64_t> order(e);
  for (int64_t tok = 0; tok < t; ++tok) {
    float* row = logits.data() + tok * e;
    switch (tok % 4) {
      case 0:
        break;
      case 1:
        for (int64_t x = 0; x < e; ++x) row[x] = std::round(row[x] * 2.0f) / 2.0f;
        break;
      case 2:
        std::fill(row, row + e, row[0]);
        break;
      case 3: {
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(),
                  [&](int64_t a, int64_t b) { return row[a] > row[b]; });
        if (k < e) row[order[k]] = row[order[k - 1]];
        row[pick(rng)] = row[order[0]];
        break;
      }
    }
  }
  return logits;
}

struct RouteOut {
  DeviceBuffer<int32_t> offsets, sorted_token, token_rows, scratch;
  DeviceBuffer<float> token_weights;
  Routing Download() const {
    return {Down(offsets), Down(sorted_token), Down(token_rows), Down(token_weights)};
  }
};

// Output buffers poisoned (-7 / NaN) so an element left unwritten shows up.
RouteOut PoisonedRouteOut(int64_t t, int64_t e, int64_t k) {
  RouteOut o;
  o.offsets = Up(std::vector<int32_t>(e + 1, -7));
  o.sorted_token = Up(std::vector<int32_t>(t * k, -7));
  o.token_rows = Up(std::vector<int32_t>(t * k, -7));
  o.token_weights = Up(std::vector<float>(t * k, kNaN));
  o.scratch = Up(std::vector<int32_t>(gpu::MoeRouteScratchInts(t, e, k), -7));
  return o;
}

gpu::MoeRouteArgs RouteArgs(const float* logits, RouteOut* o, int64_t t, int64_t e, int64_t k,
                            bool softmax_first) {
  gpu::MoeRouteArgs a;
  a.router_logits = logits;
  a.expert_offsets = o->offsets.data();
  a.sorted_token = o->sorted_token.data();
  a.token_rows = o->token_rows.data();
  a.token_weights = o->token_weights.data();
  a.scratch = o->scratch.data();
  a.num_tokens = t;
  a.num_experts = e;
  a.top_k = k;
  a.softmax_first = softmax_first;
  return a;
}

void ExpectSameRouting(const Routing& got, const Routing& want) {
  EXPECT_EQ(FirstMismatch(got.offsets, want.offsets), -1) << "expert_offsets";
  EXPECT_EQ(FirstMismatch(got.sorted_token, want.sorted_token), -1) << "sorted_token";
  EXPECT_EQ(FirstMismatch(got.token_rows, want.token_rows), -1) << "token_rows";
  ASSERT_EQ(got.token_weights.size(), want.token_weights.size());
  int64_t bad = 0;
  for (size_t i = 0; i < want.token_weights.size(); ++i) {
    const float g = got.token_weights[i], w = want.token_weights[i];
    if (!(std::fabs(g - w) <= 1e-6f * std::fabs(w))) {
      if (bad++ < 5) ADD_FAILURE() << "token_weights[" << i << "] = " << g << ", want " << w;
    }
  }
  EXPECT_EQ(bad, 0) << "weights off by more than 1e-6 relative";
}

TEST_F(CudaMoeTest, RouteMatchesHost) {
  std::mt19937 rng(7);
  struct Case {
    int64_t t, e, k;
  };
  for (const ModelFamily family : {ModelFamily::kMixtral, ModelFamily::kGraniteMoe}) {
    for (const Case c : {Case{1, 8, 2}, Case{7, 8, 2}, Case{300, 8, 2}, Case{4096, 8, 2},
                         Case{1, 40, 8}, Case{7, 40, 8}, Case{300, 40, 8}, Case{4096, 40, 8},
                         Case{7, 64, 6}, Case{300, 64, 6}, Case{4096, 64, 6}, Case{129, 1, 1},
                         Case{33, 16, 16}, Case{300, 256, 16}, Case{257, 37, 3}}) {
      const bool mixtral = family == ModelFamily::kMixtral;
      SCOPED_TRACE(testing::Message() << (mixtral ? "Mixtral" : "GraniteMoE") << " t=" << c.t
                                      << " E=" << c.e << " k=" << c.k);
      const std::vector<float> logits = TiedLogits(c.t, c.e, c.k, rng);
      const Routing want = HostRouting(family, logits, c.t, c.e, c.k, cpu_.get());
      auto dlogits = Up(logits);
      RouteOut o = PoisonedRouteOut(c.t, c.e, c.k);
      ASSERT_EQ(gpu::MoeRoute(stream_, RouteArgs(dlogits.data(), &o, c.t, c.e, c.k, mixtral)),
                cudaSuccess);
      Sync();
      const Routing got = o.Download();
      ExpectSameRouting(got, want);
      // Deterministic: a second run gives the same bits.
      ASSERT_EQ(gpu::MoeRoute(stream_, RouteArgs(dlogits.data(), &o, c.t, c.e, c.k, mixtral)),
                cudaSuccess);
      Sync();
      const Routing again = o.Download();
      EXPECT_EQ(FirstMismatch(again.offsets, got.offsets), -1);
      EXPECT_EQ(FirstMismatch(again.sorted_token, got.sorted_token), -1);
      EXPECT_EQ(FirstMismatch(again.token_rows, got.token_rows), -1);
      EXPECT_EQ(std::memcmp(again.token_weights.data(), got.token_weights.data(),
                            got.token_weights.size() * sizeof(float)),
                0);
    }
  }
}

TEST_F(CudaMoeTest, RouteNoTokensZeroesOffsets) {
  RouteOut o = PoisonedRouteOut(0, 40, 8);
  ASSERT_EQ(gpu::MoeRoute(stream_, RouteArgs(nullptr, &o, 0, 40, 8, true)), cudaSuccess);
  Sync();
  EXPECT_EQ(Down(o.offsets), std::vector<int32_t>(41, 0));
}

TEST_F(CudaMoeTest, RouteRejectsBadSizes) {
  RouteOut o = PoisonedRouteOut(4, 8, 2);
  auto dlogits = Up(std::vector<float>(4 * 300, 0.0f));
  EXPECT_EQ(gpu::MoeRoute(stream_, RouteArgs(dlogits.data(), &o, 4, 300, 2, true)),
            cudaErrorInvalidValue);  // E > 256
  EXPECT_EQ(gpu::MoeRoute(stream_, RouteArgs(dlogits.data(), &o, 4, 8, 17, true)),
            cudaErrorInvalidValue);  // k > 16
  EXPECT_EQ(gpu::MoeRoute(stream_, RouteArgs(dlogits.data(), &o, 4, 4, 5, true)),
            cudaErrorInvalidValue);  // k > E
}

// ---------------------------------------------------------------------------------------------
// Grouped GEMM.

// Normal values rounded to bf16: the bits for the device, the values for the reference.
void RandomBf16(size_t count, float scale, std::mt19937& rng, std::vector<uint16_t>* bits,
                std::vector<float>* values) {
  std::normal_distribution<float> dist(0.0f, scale);
  bits->resize(count);
  values->resize(count);
  for (size_t i = 0; i < count; ++i) {
    (*bits)[i] = F32ToBf16(dist(rng));
    (*values)[i] = Bf16ToF32((*bits)[i]);
  }
}

enum class Assign { kRandom, kOneExpert, kNone };

// Offsets [E + 1] for `used` rows: kRandom spreads them over the experts with e % 3 != 1 (the
// others stay empty), kOneExpert gives them all to the middle expert.
std::vector<int32_t> Offsets(int64_t used, int64_t e, Assign assign, std::mt19937& rng) {
  std::vector<int32_t> counts(e, 0);
  if (assign == Assign::kOneExpert) {
    counts[e / 2] = static_cast<int32_t>(used);
  } else if (assign == Assign::kRandom) {
    std::vector<int64_t> allowed;
    for (int64_t x = 0; x < e; ++x) {
      if (x % 3 != 1) allowed.push_back(x);
    }
    std::uniform_int_distribution<size_t> pick(0, allowed.size() - 1);
    for (int64_t r = 0; r < used; ++r) ++counts[allowed[pick(rng)]];
  }
  std::vector<int32_t> offsets(e + 1, 0);
  for (int64_t x = 0; x < e; ++x) offsets[x + 1] = offsets[x] + counts[x];
  return offsets;
}

struct GemmCase {
  int64_t max_rows, e, n, k;
};

// x [max_rows, k] and w [E, n, k] in bf16, on the host (as floats) and on the device; shared by
// the variants of a case.
struct GemmInputs {
  std::vector<float> xf, wf;
  DeviceBuffer<uint16_t> dx, dw;
};
GemmInputs MakeGemmInputs(const GemmCase& c, std::mt19937& rng) {
  GemmInputs in;
  std::vector<uint16_t> bits;
  RandomBf16(c.max_rows * c.k, 1.0f, rng, &bits, &in.xf);
  in.dx = Up(bits);
  RandomBf16(c.e * c.n * c.k, 1.0f / std::sqrt(static_cast<float>(c.k)), rng, &bits, &in.wf);
  in.dw = Up(bits);
  return in;
}

// Runs GroupedGemm on one case and checks it; `sample` > 1 checks only every sample-th row's
// values against the host (all rows are still checked for being written).
void CheckGroupedGemm(cudaStream_t stream, const GemmCase& c, const GemmInputs& in, Assign assign,
                      bool gather, bool y_bf16, int64_t sample, std::mt19937& rng) {
  const int64_t slack = c.max_rows / 8;  // rows past expert_offsets[E]: must stay NaN
  const int64_t used = assign == Assign::kNone ? 0 : c.max_rows - slack;
  const std::vector<int32_t> offsets = Offsets(used, c.e, assign, rng);
  // Gathered rows come from the first third of x, so tokens repeat as in real routing. Rows past
  // `used` point far outside x: reading them would be a bug.
  std::vector<int32_t> gather_idx(c.max_rows, -1000000);
  std::uniform_int_distribution<int32_t> pick(
      0, static_cast<int32_t>(std::max<int64_t>(1, c.max_rows / 3) - 1));
  for (int64_t r = 0; r < used; ++r) gather_idx[r] = pick(rng);
  const std::vector<float>& xf = in.xf;
  const std::vector<float>& wf = in.wf;

  auto doff = Up(offsets);
  auto dgather = Up(gather_idx);
  auto dyf = Up(std::vector<float>(y_bf16 ? 0 : c.max_rows * c.n, kNaN));
  auto dyb = Up(std::vector<uint16_t>(y_bf16 ? c.max_rows * c.n : 0, kBf16NaN));
  gpu::GroupedGemmArgs a;
  a.x = AsBf16(in.dx);
  a.gather = gather ? dgather.data() : nullptr;
  a.w = AsBf16(in.dw);
  a.expert_offsets = doff.data();
  a.y = y_bf16 ? static_cast<void*>(dyb.data()) : static_cast<void*>(dyf.data());
  a.y_bf16 = y_bf16;
  a.max_rows = c.max_rows;
  a.num_experts = c.e;
  a.n = c.n;
  a.k = c.k;
  ASSERT_EQ(gpu::GroupedGemm(stream, a), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);

  std::vector<float> y(c.max_rows * c.n);
  std::vector<bool> nan(c.max_rows * c.n);
  if (y_bf16) {
    const std::vector<uint16_t> yb = Down(dyb);
    for (size_t i = 0; i < yb.size(); ++i) {
      y[i] = Bf16ToF32(yb[i]);
      nan[i] = yb[i] == kBf16NaN;
    }
  } else {
    y = Down(dyf);
    for (size_t i = 0; i < y.size(); ++i) nan[i] = std::isnan(y[i]);
  }
  int64_t unwritten = 0, touched = 0;
  for (int64_t r = 0; r < c.max_rows; ++r) {
    for (int64_t j = 0; j < c.n; ++j) {
      const bool is_nan = nan[r * c.n + j];
      if (r < used && is_nan) ++unwritten;
      if (r >= used && !is_nan) ++touched;
    }
  }
  EXPECT_EQ(unwritten, 0) << "routed outputs left unwritten";
  EXPECT_EQ(touched, 0) << "outputs past expert_offsets[E] written";

  const double tol = y_bf16 ? 1e-2 : 1e-4;
  double diff_all = 0.0, norm_all = 0.0;
  int64_t bad_rows = 0;
  for (int64_t x = 0; x < c.e; ++x) {
    for (int64_t r = offsets[x]; r < offsets[x + 1]; ++r) {
      if (r % sample != 0 && r != offsets[x + 1] - 1) continue;
      const float* xr = xf.data() + (gather ? gather_idx[r] : r) * c.k;
      double diff = 0.0, norm = 0.0;
      for (int64_t j = 0; j < c.n; ++j) {
        const float* wr = wf.data() + (x * c.n + j) * c.k;
        double ref = 0.0;
        for (int64_t i = 0; i < c.k; ++i) ref += double{xr[i]} * wr[i];
        const double d = y[r * c.n + j] - ref;
        diff += d * d;
        norm += ref * ref;
      }
      diff_all += diff;
      norm_all += norm;
      const double rel = std::sqrt(diff / std::max(norm, 1e-30));
      if (!(rel <= tol) && bad_rows++ < 5) {
        ADD_FAILURE() << "row " << r << " (expert " << x << "): relative L2 " << rel;
      }
    }
  }
  EXPECT_EQ(bad_rows, 0);
  if (norm_all > 0.0) {
    EXPECT_LE(std::sqrt(diff_all / norm_all), tol);
  }
}

TEST_F(CudaMoeTest, GroupedGemmMatchesHost) {
  std::mt19937 rng(11);
  for (const GemmCase c : {GemmCase{1, 1, 8, 8}, GemmCase{9, 3, 16, 8}, GemmCase{100, 8, 40, 24},
                           GemmCase{300, 5, 136, 72}, GemmCase{513, 40, 264, 520},
                           GemmCase{200, 12, 128, 32}, GemmCase{700, 40, 48, 1544}}) {
    const GemmInputs in = MakeGemmInputs(c, rng);
    for (const Assign assign : {Assign::kRandom, Assign::kOneExpert, Assign::kNone}) {
      for (const bool gather : {false, true}) {
        for (const bool y_bf16 : {false, true}) {
          SCOPED_TRACE(testing::Message()
                       << "max_rows=" << c.max_rows << " E=" << c.e << " n=" << c.n << " k=" << c.k
                       << " assign=" << static_cast<int>(assign) << " gather=" << gather
                       << " bf16_out=" << y_bf16);
          CheckGroupedGemm(stream_, c, in, assign, gather, y_bf16, 1, rng);
        }
      }
    }
  }
}

TEST_F(CudaMoeTest, GroupedGemmPowerMoeShapes) {
  std::mt19937 rng(13);
  // gate_up and down at decode (256 tokens x top 8 over 40 experts) and gate_up at prefill (2048
  // tokens); rows sampled for the values.
  struct Sampled {
    GemmCase c;
    int64_t sample;
  };
  for (const Sampled s : {Sampled{{2048, 40, 1024, 1536}, 13}, Sampled{{2048, 40, 1536, 512}, 13},
                          Sampled{{16384, 40, 1024, 1536}, 97}}) {
    const GemmInputs in = MakeGemmInputs(s.c, rng);
    for (const bool gather : {false, true}) {
      for (const bool y_bf16 : {false, true}) {
        SCOPED_TRACE(testing::Message() << "max_rows=" << s.c.max_rows << " n=" << s.c.n << " k="
                                        << s.c.k << " gather=" << gather << " bf16_out=" << y_bf16);
        CheckGroupedGemm(stream_, s.c, in, Assign::kRandom, gather, y_bf16, s.sample, rng);
      }
    }
  }
}

TEST_F(CudaMoeTest, GroupedGemmRejectsBadSizes) {
  auto buf = Up(std::vector<uint16_t>(64, 0));
  auto off = Up(std::vector<int32_t>(2, 0));
  gpu::GroupedGemmArgs a;
  a.x = AsBf16(buf);
  a.w = AsBf16(buf);
  a.expert_offsets = off.data();
  a.y = buf.data();
  a.max_rows = 1;
  a.num_experts = 1;
  a.n = 8;
  a.k = 12;  // not a multiple of 8
  EXPECT_EQ(gpu::GroupedGemm(stream_, a), cudaErrorInvalidValue);
  a.k = 8;
  a.x = AsBf16(buf) + 1;  // not 16-byte aligned
  EXPECT_EQ(gpu::GroupedGemm(stream_, a), cudaErrorInvalidValue);
}

// Routing then the gathered grouped GEMM, captured once into a CUDA graph and replayed on new
// logits: the replay must equal direct launches on the same inputs.
TEST_F(CudaMoeTest, RouteAndGemmInCudaGraph) {
  std::mt19937 rng(17);
  const int64_t t = 93, e = 40, k = 8, n = 72, hidden = 64;
  std::vector<uint16_t> xb, wb;
  std::vector<float> xf, wf;
  RandomBf16(t * hidden, 1.0f, rng, &xb, &xf);
  RandomBf16(e * n * hidden, 0.125f, rng, &wb, &wf);
  auto dx = Up(xb);
  auto dw = Up(wb);
  auto dlogits = Up(TiedLogits(t, e, k, rng));
  RouteOut o = PoisonedRouteOut(t, e, k);
  auto dy = Up(std::vector<float>(t * k * n, kNaN));
  const gpu::MoeRouteArgs ra = RouteArgs(dlogits.data(), &o, t, e, k, true);
  gpu::GroupedGemmArgs ga;
  ga.x = AsBf16(dx);
  ga.gather = o.sorted_token.data();
  ga.w = AsBf16(dw);
  ga.expert_offsets = o.offsets.data();
  ga.y = dy.data();
  ga.max_rows = t * k;
  ga.num_experts = e;
  ga.n = n;
  ga.k = hidden;

  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const cudaError_t route_err = gpu::MoeRoute(stream_, ra);
  const cudaError_t gemm_err = gpu::GroupedGemm(stream_, ga);
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  ASSERT_EQ(route_err, cudaSuccess);
  ASSERT_EQ(gemm_err, cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);

  for (int step = 0; step < 2; ++step) {
    const std::vector<float> logits = TiedLogits(t, e, k, rng);
    ASSERT_TRUE(dlogits.Upload(logits).ok());
    ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
    Sync();
    const Routing graph_routing = o.Download();
    const std::vector<float> graph_y = Down(dy);
    ExpectSameRouting(graph_routing,
                      HostRouting(ModelFamily::kMixtral, logits, t, e, k, cpu_.get()));
    ASSERT_EQ(gpu::MoeRoute(stream_, ra), cudaSuccess);
    ASSERT_EQ(gpu::GroupedGemm(stream_, ga), cudaSuccess);
    Sync();
    const std::vector<float> direct_y = Down(dy);
    EXPECT_EQ(std::memcmp(graph_y.data(), direct_y.data(), graph_y.size() * sizeof(float)), 0);
    for (const float v : graph_y) ASSERT_FALSE(std::isnan(v));  // every row is routed here
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

// Not a check: prints the time of routing and of both expert GEMMs at PowerMoE-3b's sizes (hidden
// 1536, expert intermediate 512, 40 experts, top 8), for decode (256 tokens) and prefill (2048).
TEST_F(CudaMoeTest, PowerMoeTimings) {
  std::mt19937 rng(19);
  const int64_t e = 40, k = 8, hidden = 1536, inter = 512;
  std::vector<uint16_t> wgu, wdown, xb, hb;
  std::vector<float> unused;
  RandomBf16(e * 2 * inter * hidden, 0.02f, rng, &wgu, &unused);
  RandomBf16(e * hidden * inter, 0.02f, rng, &wdown, &unused);
  auto dwgu = Up(wgu);
  auto dwdown = Up(wdown);
  cudaEvent_t start, stop;
  ASSERT_EQ(cudaEventCreate(&start), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&stop), cudaSuccess);
  for (const int64_t t : {256, 2048}) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> logits(t * e);
    for (float& v : logits) v = dist(rng);
    RandomBf16(t * hidden, 1.0f, rng, &xb, &unused);
    RandomBf16(t * k * inter, 1.0f, rng, &hb, &unused);
    auto dlogits = Up(logits);
    auto dx = Up(xb);
    auto dh = Up(hb);
    RouteOut o = PoisonedRouteOut(t, e, k);
    auto dgu = Up(std::vector<float>(t * k * 2 * inter, 0.0f));
    auto dout = Up(std::vector<float>(t * k * hidden, 0.0f));
    const gpu::MoeRouteArgs ra = RouteArgs(dlogits.data(), &o, t, e, k, false);
    gpu::GroupedGemmArgs gu;
    gu.x = AsBf16(dx);
    gu.gather = o.sorted_token.data();
    gu.w = AsBf16(dwgu);
    gu.expert_offsets = o.offsets.data();
    gu.y = dgu.data();
    gu.max_rows = t * k;
    gu.num_experts = e;
    gu.n = 2 * inter;
    gu.k = hidden;
    gpu::GroupedGemmArgs down = gu;
    down.x = AsBf16(dh);
    down.gather = nullptr;
    down.w = AsBf16(dwdown);
    down.y = dout.data();
    down.n = hidden;
    down.k = inter;
    ASSERT_EQ(gpu::MoeRoute(stream_, ra), cudaSuccess);
    Sync();
    auto time_us = [&](auto&& launch) {
      constexpr int kIters = 20;
      for (int i = 0; i < 3; ++i) launch();
      EXPECT_EQ(cudaEventRecord(start, stream_), cudaSuccess);
      for (int i = 0; i < kIters; ++i) launch();
      EXPECT_EQ(cudaEventRecord(stop, stream_), cudaSuccess);
      EXPECT_EQ(cudaEventSynchronize(stop), cudaSuccess);
      float ms = 0.0f;
      EXPECT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaSuccess);
      return 1000.0 * ms / kIters;
    };
    const double route_us = time_us([&] { EXPECT_EQ(gpu::MoeRoute(stream_, ra), cudaSuccess); });
    const double gu_us = time_us([&] { EXPECT_EQ(gpu::GroupedGemm(stream_, gu), cudaSuccess); });
    const double down_us =
        time_us([&] { EXPECT_EQ(gpu::GroupedGemm(stream_, down), cudaSuccess); });
    const double rows = static_cast<double>(t * k);
    const double gu_bytes = 2.0 * e * 2 * inter * hidden, down_bytes = 2.0 * e * hidden * inter;
    std::printf(
        "t=%lld: route %.1f us; gate_up %.1f us (%.0f GB/s of weights, %.0f TFLOP/s); down %.1f us "
        "(%.0f GB/s, %.0f TFLOP/s)\n",
        static_cast<long long>(t), route_us, gu_us, gu_bytes / gu_us * 1e-3,
        2.0 * rows * 2 * inter * hidden / gu_us * 1e-6, down_us, down_bytes / down_us * 1e-3,
        2.0 * rows * hidden * inter / down_us * 1e-6);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

#endif  // DPINFER_HAVE_CUDA

}  // namespace
}  // namespace dpinfer::kernels
