// The CPU reference ops against naive formulas on small random inputs: the oracle's own oracle.
#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace dpinfer::kernels {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(CpuOpsTest, LinearMatchesNaive) {
  const int64_t m = 5, n = 37, k = 29;
  auto x = Random(m * k, 1), w = Random(n * k, 2), bias = Random(n, 3);
  std::vector<float> y(m * n);
  cpu::Linear({x.data(), w.data(), bias.data(), y.data(), m, n, k});
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double ref = bias[j];
      for (int64_t l = 0; l < k; ++l) ref += double{x[i * k + l]} * w[j * k + l];
      EXPECT_NEAR(y[i * n + j], ref, 1e-4) << i << "," << j;
    }
  }
}

TEST(CpuOpsTest, LinearIsBatchInvariant) {
  // A row alone and the same row at any place in batches of several sizes: bit-identical.
  const int64_t n = 300, k = 131;
  auto w = Random(n * k, 4);
  auto batch = Random(33 * k, 5);
  for (int64_t m : {1, 2, 7, 33}) {
    std::vector<float> y(m * n);
    cpu::Linear({batch.data(), w.data(), nullptr, y.data(), m, n, k});
    for (int64_t i = 0; i < m; ++i) {
      std::vector<float> alone(n);
      cpu::Linear({batch.data() + i * k, w.data(), nullptr, alone.data(), 1, n, k});
      for (int64_t j = 0; j < n; ++j)
        ASSERT_EQ(alone[j], y[i * n + j]) << m << " " << i << " " << j;
    }
  }
}

TEST(CpuOpsTest, RmsNormMatchesNaive) {
  const int64_t m = 4, d = 19;
  auto x = Random(m * d, 6), w = Random(d, 7);
  std::vector<float> y(m * d);
  cpu::RmsNorm({x.data(), w.data(), y.data(), m, d, 1e-5f});
  for (int64_t i = 0; i < m; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += double{x[i * d + j]} * x[i * d + j];
    const double inv = 1.0 / std::sqrt(ss / d + 1e-5);
    for (int64_t j = 0; j < d; ++j) EXPECT_NEAR(y[i * d + j], x[i * d + j] * inv * w[j], 1e-5);
  }
}

TEST(CpuOpsTest, RopeMatchesRotateHalfFormula) {
  const int64_t t = 3, nh = 4, nkv = 2, hd = 8;
  const float theta = 10000.0f;
  auto q = Random(t * nh * hd, 8), k = Random(t * nkv * hd, 9);
  auto q0 = q, k0 = k;
  std::vector<int32_t> pos = {0, 5, 137};
  RopeArgs a;
  a.q = q.data();
  a.k = k.data();
  a.positions = pos.data();
  a.num_tokens = t;
  a.num_heads = nh;
  a.num_kv_heads = nkv;
  a.head_dim = hd;
  a.theta = theta;
  cpu::Rope(a);
  const int64_t half = hd / 2;
  auto check = [&](const std::vector<float>& before, const std::vector<float>& after,
                   int64_t heads) {
    for (int64_t ti = 0; ti < t; ++ti) {
      for (int64_t h = 0; h < heads; ++h) {
        const float* x = before.data() + (ti * heads + h) * hd;
        const float* y = after.data() + (ti * heads + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          const double ang = pos[ti] / std::pow(double{theta}, 2.0 * i / hd);
          const double r1 = x[i] * std::cos(ang) - x[i + half] * std::sin(ang);
          const double r2 = x[i + half] * std::cos(ang) + x[i] * std::sin(ang);
          EXPECT_NEAR(y[i], r1, 1e-4);
          EXPECT_NEAR(y[i + half], r2, 1e-4);
          // A rotation preserves each pair's norm.
          EXPECT_NEAR(std::hypot(y[i], y[i + half]), std::hypot(x[i], x[i + half]), 1e-5);
          if (pos[ti] == 0) {  // position 0 is the identity
            EXPECT_EQ(y[i], x[i]);
            EXPECT_EQ(y[i + half], x[i + half]);
          }
        }
      }
    }
  };
  check(q0, q, nh);
  check(k0, k, nkv);
}

TEST(CpuOpsTest, SiluMulSoftmaxEmbeddingAdd) {
  auto g = Random(24, 10), u = Random(24, 11);
  std::vector<float> out(24);
  cpu::SiluMul({g.data(), u.data(), out.data(), 3, 8});
  for (int i = 0; i < 24; ++i) EXPECT_NEAR(out[i], g[i] / (1 + std::exp(-g[i])) * u[i], 1e-6);

  auto x = Random(3 * 10, 12, 3.0f);
  std::vector<float> y(30);
  cpu::Softmax({x.data(), y.data(), 3, 10});
  for (int r = 0; r < 3; ++r) {
    double z = 0;
    for (int j = 0; j < 10; ++j) z += std::exp(double{x[r * 10 + j]});
    for (int j = 0; j < 10; ++j) EXPECT_NEAR(y[r * 10 + j], std::exp(x[r * 10 + j]) / z, 1e-6);
  }

  auto table = Random(6 * 4, 13);
  std::vector<int32_t> ids = {5, 0, 5};
  std::vector<float> e(12);
  cpu::Embedding({ids.data(), table.data(), e.data(), 3, 6, 4});
  for (int t = 0; t < 3; ++t) {
    for (int j = 0; j < 4; ++j) EXPECT_EQ(e[t * 4 + j], table[ids[t] * 4 + j]);
  }

  std::vector<float> s(24);
  cpu::Add({g.data(), u.data(), s.data(), 24});
  for (int i = 0; i < 24; ++i) EXPECT_EQ(s[i], g[i] + u[i]);
}

// Dense causal GQA attention of one sequence, straight from the definition.
std::vector<float> NaiveAttention(const std::vector<float>& q, const std::vector<float>& k,
                                  const std::vector<float>& v, int64_t len, int64_t nh, int64_t nkv,
                                  int64_t hd) {
  std::vector<float> out(len * nh * hd, 0.0f);
  const double scale = 1.0 / std::sqrt(double(hd));
  for (int64_t t = 0; t < len; ++t) {
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t kvh = h / (nh / nkv);
      std::vector<double> p(t + 1);
      double mx = -1e300, z = 0;
      for (int64_t j = 0; j <= t; ++j) {
        double s = 0;
        for (int64_t d = 0; d < hd; ++d)
          s += double{q[(t * nh + h) * hd + d]} * k[(j * nkv + kvh) * hd + d];
        p[j] = s * scale;
        mx = std::max(mx, p[j]);
      }
      for (double& x : p) z += (x = std::exp(x - mx));
      for (int64_t j = 0; j <= t; ++j) {
        for (int64_t d = 0; d < hd; ++d)
          out[(t * nh + h) * hd + d] += p[j] / z * v[(j * nkv + kvh) * hd + d];
      }
    }
  }
  return out;
}

TEST(CpuOpsTest, PagedAttentionMatchesDenseCausal) {
  const int64_t hd = 8;
  for (int64_t block_size : {1, 3, 4, 16}) {
    for (auto [nh, nkv] :
         std::vector<std::pair<int64_t, int64_t>>{{4, 4}, {4, 2}, {8, 1}, {6, 3}}) {
      // Two sequences of different lengths, their blocks interleaved and shuffled in the pool.
      const std::vector<int64_t> lens = {13, 6};
      const int64_t max_blocks = (13 + block_size - 1) / block_size;
      const int64_t num_blocks = 2 * max_blocks + 3;
      std::vector<int32_t> perm(num_blocks);
      for (int64_t i = 0; i < num_blocks; ++i) perm[i] = static_cast<int32_t>(i);
      std::shuffle(perm.begin(), perm.end(), std::mt19937(block_size * 100 + nh * 10 + nkv));
      std::vector<int32_t> tables(2 * max_blocks, 0);
      for (int64_t i = 0; i < 2 * max_blocks; ++i) tables[i] = perm[i];
      const int64_t kv_row = nkv * hd;
      std::vector<float> kc(num_blocks * block_size * kv_row, NAN), vc(kc.size(), NAN);

      std::vector<float> q_all, want_all;
      std::vector<int32_t> token_seq, positions, slots;
      for (int64_t s = 0; s < 2; ++s) {
        const int64_t len = lens[s];
        auto q = Random(len * nh * hd, 20 + s), k = Random(len * kv_row, 30 + s),
             v = Random(len * kv_row, 40 + s);
        for (int64_t t = 0; t < len; ++t) {
          token_seq.push_back(static_cast<int32_t>(s));
          positions.push_back(static_cast<int32_t>(t));
          slots.push_back(tables[s * max_blocks + t / block_size] * block_size + t % block_size);
        }
        CacheWriteArgs cw;
        cw.k = k.data();
        cw.v = v.data();
        cw.k_cache = kc.data();
        cw.v_cache = vc.data();
        cw.slot_mapping = slots.data() + (s == 0 ? 0 : lens[0]);
        cw.num_tokens = len;
        cw.num_kv_heads = nkv;
        cw.head_dim = hd;
        cpu::CacheWrite(cw);
        q_all.insert(q_all.end(), q.begin(), q.end());
        auto want = NaiveAttention(q, k, v, len, nh, nkv, hd);
        want_all.insert(want_all.end(), want.begin(), want.end());
      }
      std::vector<float> out(q_all.size());
      PagedAttentionArgs a;
      a.q = q_all.data();
      a.k_cache = kc.data();
      a.v_cache = vc.data();
      a.block_tables = tables.data();
      a.token_seq = token_seq.data();
      a.positions = positions.data();
      a.out = out.data();
      a.num_tokens = static_cast<int64_t>(positions.size());
      a.num_heads = nh;
      a.num_kv_heads = nkv;
      a.head_dim = hd;
      a.block_size = block_size;
      a.max_blocks_per_seq = max_blocks;
      a.scale = 1.0f / std::sqrt(float(hd));
      cpu::PagedAttention(a);
      for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_NEAR(out[i], want_all[i], 1e-5)
            << "block " << block_size << " nh " << nh << " nkv " << nkv << " i " << i;
      }
    }
  }
}

TEST(CpuOpsTest, BackendForwardsToOps) {
  auto backend = NewCpuBackend(1);
  EXPECT_STREQ(backend->name(), "cpu");
  std::vector<float> x = {1, 2, 3, 4}, w = {1, 1, 1, 1}, y(1);
  backend->Linear({x.data(), w.data(), nullptr, y.data(), 1, 1, 4});
  EXPECT_EQ(y[0], 10.0f);
}

}  // namespace
}  // namespace dpinfer::kernels
