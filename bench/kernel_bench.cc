// kernel_bench: the bf16 serving path's heaviest kernels in isolation, on the benchmark models'
// shapes, against the device copy rate measured in the same run.
//
//  - GEMMs (the dense projections of Llama-3.2-1B and PowerMoE-3b at m = 1 .. 4096 rows):
//    cublasGemmEx with cuBLAS's own pick (GemmBf16), cuBLASLt's first heuristic choice, and the
//    fastest of its candidates (what GemmPlanner keeps), with TFLOP/s and weight GB/s. A summary
//    line adds up one Llama decode step's GEMMs at each m for the three.
//  - Decode attention over the paged bf16 cache (32/8 heads, head_dim 64 or 128, block 16) at
//    several batch sizes and contexts: time and K/V bytes read per second, as a fraction of the
//    copy rate, for the decode kernel (kernel=decode; its kv heads per block chosen by Attention
//    unless --attention-decode-heads forces them) and, on the same batch, the tile kernel that
//    decode batches took before it (kernel=tiles).
//
// usage: kernel_bench [--reps 20] [--skip-gemm] [--skip-attention] [--attention-head-dim 64]
//                     [--attention-decode-heads 0]
// Lines starting with `GEMM`, `STEP` and `ATTN` are machine-readable (key=value).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "bench/cuda_bench_util.h"
#include "common/status.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/fast_ops.h"
#include "kernels/cuda/gemm_lt.h"


namespace {

using dpinfer::kernels::DeviceBuffer;
using bf16 = __nv_bfloat16;

struct GemmShape {
  const char* model;
  const char* name;
  int64_t n, k;
  bool y_bf16;
  int per_step;  // times per decode step (layers), 0: not part of the Llama step sum
};

// Fills `buf` with random bf16 in [-0.05, 0.05): a random block replicated (the values do not
// matter to the kernels' speed, but all-equal bits would understate the power drawn).
absl::Status FillRandom(DeviceBuffer<bf16>* buf, uint32_t seed) {
  constexpr int64_t kBlock = int64_t{1} << 22;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-0.05f, 0.05f);
  std::vector<bf16> host(static_cast<size_t>(std::min(kBlock, buf->size())));
  for (auto& v : host) v = __float2bfloat16(dist(rng));
  for (int64_t off = 0; off < buf->size(); off += kBlock) {
    const int64_t n = std::min(kBlock, buf->size() - off);
    CUDA_RETURN_IF_ERROR(
        cudaMemcpy(buf->data() + off, host.data(), n * sizeof(bf16), cudaMemcpyHostToDevice));
  }
  return absl::OkStatus();
}

// Mean ms of `reps` calls of `fn` after one untimed one.
template <typename Fn>
absl::StatusOr<double> TimeMs(cudaStream_t stream, int reps, Fn fn) {
  RETURN_IF_ERROR(fn());
  cudaEvent_t start, stop;
  CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  CUDA_RETURN_IF_ERROR(cudaEventRecord(start, stream));
  for (int r = 0; r < reps; ++r) RETURN_IF_ERROR(fn());
  CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, stream));
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
  float ms = 0;
  CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / reps;
}

absl::Status BenchGemms(cudaStream_t stream, int reps) {
  const std::vector<GemmShape> shapes = {
      {"llama-1b", "qkv", 3072, 2048, false, 16},
      {"llama-1b", "o_proj", 2048, 2048, false, 16},
      {"llama-1b", "gate_up", 16384, 2048, true, 16},
      {"llama-1b", "down", 2048, 8192, false, 16},
      {"llama-1b", "lm_head", 128256, 2048, false, 1},
      {"powermoe-3b", "qkv", 2560, 1536, false, 0},
      {"powermoe-3b", "o_proj", 1536, 1536, false, 0},
      {"powermoe-3b", "router", 40, 1536, false, 0},
      {"powermoe-3b", "lm_head", 49152, 1536, false, 0},
  };
  const std::vector<int64_t> ms_list = {1, 8, 32, 64, 128, 192, 256, 512, 1024, 2048, 4096};
  const int64_t max_m = ms_list.back();
  int64_t max_w = 0, max_x = 0, max_y = 0;
  for (const auto& s : shapes) {
    max_w = std::max(max_w, s.n * s.k);
    max_x = std::max(max_x, max_m * s.k);
    max_y = std::max(max_y, max_m * s.n);
  }
  ASSIGN_OR_RETURN(auto w, DeviceBuffer<bf16>::Allocate(max_w));
  ASSIGN_OR_RETURN(auto x, DeviceBuffer<bf16>::Allocate(max_x));
  ASSIGN_OR_RETURN(auto y, DeviceBuffer<float>::Allocate(max_y));
  constexpr int64_t kWorkspace = int64_t{32} << 20;
  ASSIGN_OR_RETURN(auto ws, DeviceBuffer<uint8_t>::Allocate(kWorkspace));
  RETURN_IF_ERROR(FillRandom(&w, 1));
  RETURN_IF_ERROR(FillRandom(&x, 2));
  cublasHandle_t blas = nullptr;
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&blas));
  CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(blas, ws.data(), kWorkspace));
  ASSIGN_OR_RETURN(auto lt, dpinfer::kernels::GemmPlanner::Create(ws.data(), kWorkspace));
  lt->set_measuring(false);  // TimeCandidates times every candidate itself

  // Per m: the Llama decode step's GEMM time for each of the three.
  std::vector<double> step_default(ms_list.size()), step_first(ms_list.size()),
      step_best(ms_list.size());
  std::printf("%-12s %-8s %5s %7s %7s | %9s %9s %9s | %7s %7s %8s\n", "model", "gemm", "m", "n",
              "k", "gemmex_us", "lt1st_us", "ltbest_us", "best/ex", "TFLOP/s", "w_GB/s");
  for (const auto& s : shapes) {
    for (size_t mi = 0; mi < ms_list.size(); ++mi) {
      const int64_t m = ms_list[mi];
      ASSIGN_OR_RETURN(double ex, TimeMs(stream, reps, [&] {
                         return dpinfer::kernels::GemmBf16(stream, blas, x.data(), w.data(),
                                                           y.data(), s.y_bf16, m, s.n, s.k);
                       }));
      ASSIGN_OR_RETURN(std::vector<double> cand,
                       lt->TimeCandidates(stream, x.data(), w.data(), y.data(), s.y_bf16, m, s.n,
                                          s.k, reps));
      double best = -1;
      int best_i = -1;
      for (size_t i = 0; i < cand.size(); ++i) {
        if (cand[i] > 0 && (best < 0 || cand[i] < best)) {
          best = cand[i];
          best_i = static_cast<int>(i);
        }
      }
      const double first = cand.empty() ? -1 : cand[0];
      const double flops = 2.0 * m * s.n * s.k;
      const double wbytes = 2.0 * s.n * s.k;
      std::printf("%-12s %-8s %5lld %7lld %7lld | %9.1f %9.1f %9.1f | %7.2f %7.0f %8.0f\n",
                  s.model, s.name, static_cast<long long>(m), static_cast<long long>(s.n),
                  static_cast<long long>(s.k), ex * 1e3, first * 1e3, best * 1e3, ex / best,
                  flops / (best * 1e-3) / 1e12, wbytes / (best * 1e-3) / 1e9);
      std::printf(
          "GEMM model=%s gemm=%s m=%lld n=%lld k=%lld gemmex_ms=%.5f lt_first_ms=%.5f "
          "lt_best_ms=%.5f lt_best_index=%d candidates=%zu\n",
          s.model, s.name, static_cast<long long>(m), static_cast<long long>(s.n),
          static_cast<long long>(s.k), ex, first, best, best_i, cand.size());
      if (s.per_step > 0) {
        step_default[mi] += s.per_step * ex;
        step_first[mi] += s.per_step * first;
        step_best[mi] += s.per_step * best;
      }
    }
  }
  for (size_t mi = 0; mi < ms_list.size(); ++mi) {
    std::printf(
        "STEP model=llama-1b m=%lld gemms_gemmex_ms=%.4f gemms_lt_first_ms=%.4f "
        "gemms_lt_best_ms=%.4f best_over_gemmex=%.3f\n",
        static_cast<long long>(ms_list[mi]), step_default[mi], step_first[mi], step_best[mi],
        step_default[mi] / step_best[mi]);
  }
  cublasDestroy(blas);
  return absl::OkStatus();
}

absl::Status BenchAttention(cudaStream_t stream, int reps, double copy_bytes_per_s,
                            int64_t head_dim, int decode_heads) {
  namespace gpu = dpinfer::kernels::gpu;
  constexpr int64_t kHeads = 32, kKvHeads = 8, kBlock = 16;
  const std::vector<int64_t> batches = {64, 256};
  const std::vector<int64_t> contexts = {128, 192, 256, 512, 1024, 2048};
  const int64_t max_seqs = batches.back(), max_ctx = contexts.back();
  const int64_t blocks_per_seq = max_ctx / kBlock;
  const int64_t num_blocks = max_seqs * blocks_per_seq;
  const int64_t slot_elems = kKvHeads * head_dim;
  ASSIGN_OR_RETURN(auto k_cache, DeviceBuffer<bf16>::Allocate(num_blocks * kBlock * slot_elems));
  ASSIGN_OR_RETURN(auto v_cache, DeviceBuffer<bf16>::Allocate(num_blocks * kBlock * slot_elems));
  ASSIGN_OR_RETURN(auto q, DeviceBuffer<bf16>::Allocate(max_seqs * kHeads * head_dim));
  ASSIGN_OR_RETURN(auto out, DeviceBuffer<bf16>::Allocate(max_seqs * kHeads * head_dim));
  RETURN_IF_ERROR(FillRandom(&k_cache, 3));
  RETURN_IF_ERROR(FillRandom(&v_cache, 4));
  RETURN_IF_ERROR(FillRandom(&q, 5));
  // Blocks scattered over the cache, as a long-running server's would be.
  std::vector<int32_t> perm(static_cast<size_t>(num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(7));
  ASSIGN_OR_RETURN(auto tables, DeviceBuffer<int32_t>::FromHost(perm, stream));
  std::printf("\nheads 32/8, head_dim %lld, block %lld\n%6s %6s %7s %7s | %9s %9s %8s\n",
              static_cast<long long>(head_dim), static_cast<long long>(kBlock), "seqs", "ctx",
              "splits", "kernel", "us", "KV_GB/s", "of_copy");
  for (int64_t seqs : batches) {
    for (int64_t ctx : contexts) {
      std::vector<int32_t> q_start(seqs + 1), kv_len(seqs, static_cast<int32_t>(ctx)), tile_seq,
          tile_row;
      std::iota(q_start.begin(), q_start.end(), 0);
      for (int32_t s = 0; s < seqs; ++s) gpu::AppendAttentionTiles(s, s, 1, &tile_seq, &tile_row);
      ASSIGN_OR_RETURN(auto d_q_start, DeviceBuffer<int32_t>::FromHost(q_start, stream));
      ASSIGN_OR_RETURN(auto d_kv_len, DeviceBuffer<int32_t>::FromHost(kv_len, stream));
      ASSIGN_OR_RETURN(auto d_tile_seq, DeviceBuffer<int32_t>::FromHost(tile_seq, stream));
      ASSIGN_OR_RETURN(auto d_tile_row, DeviceBuffer<int32_t>::FromHost(tile_row, stream));
      for (int64_t splits : {int64_t{1}, int64_t{2}, int64_t{4}}) {
        const int64_t chunk = splits > 1 ? (ctx / splits + 63) / 64 * 64 : 0;
        if (splits > 1 && (chunk * (splits - 1) >= ctx)) continue;
        ASSIGN_OR_RETURN(auto partials,
                         DeviceBuffer<float>::Allocate(std::max<int64_t>(
                             1, gpu::AttentionPartialsFloats(seqs, kHeads, head_dim, splits))));
        gpu::AttentionArgs a;
        a.q = q.data();
        a.k_cache = k_cache.data();
        a.v_cache = v_cache.data();
        a.block_tables = tables.data();
        a.q_start = d_q_start.data();
        a.kv_len = d_kv_len.data();
        a.tile_seq = d_tile_seq.data();
        a.tile_row = d_tile_row.data();
        a.out = out.data();
        a.partials = partials.data();
        a.num_tiles = seqs;
        a.num_rows = seqs;
        a.num_heads = kHeads;
        a.num_kv_heads = kKvHeads;
        a.head_dim = head_dim;
        a.block_size = kBlock;
        a.max_blocks_per_seq = blocks_per_seq;
        a.num_splits = splits;
        a.kv_chunk = chunk;
        a.scale = 0.125f;
        for (const int heads : {decode_heads, -1}) {
          const char* kernel = heads >= 0 ? "decode" : "tiles";
          gpu::SetAttentionDecodeHeadsPerBlock(heads);
          absl::StatusOr<double> timed = TimeMs(stream, reps, [&]() -> absl::Status {
            CUDA_RETURN_IF_ERROR(gpu::Attention(stream, a));
            return absl::OkStatus();
          });
          gpu::SetAttentionDecodeHeadsPerBlock(0);
          RETURN_IF_ERROR(timed.status());
          const double ms = *timed;
          const double bytes = 2.0 * seqs * ctx * slot_elems * sizeof(bf16);
          const double gbs = bytes / (ms * 1e-3) / 1e9;
          std::printf("%6lld %6lld %7lld %7s | %9.1f %9.0f %8.3f\n", static_cast<long long>(seqs),
                      static_cast<long long>(ctx), static_cast<long long>(splits), kernel, ms * 1e3,
                      gbs, gbs * 1e9 / copy_bytes_per_s);
          std::printf(
              "ATTN seqs=%lld ctx=%lld splits=%lld ms=%.5f kv_gb_s=%.1f of_copy=%.3f "
              "head_dim=%lld kernel=%s\n",
              static_cast<long long>(seqs), static_cast<long long>(ctx),
              static_cast<long long>(splits), ms, gbs, gbs * 1e9 / copy_bytes_per_s,
              static_cast<long long>(head_dim), kernel);
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kernel_bench: the bf16 path's GEMMs and decode attention against the copy rate"};
  int reps = 20;
  bool skip_gemm = false, skip_attention = false;
  int64_t attention_head_dim = 64;
  int decode_heads = 0;
  app.add_option("--reps", reps, "timed runs per measurement")->check(CLI::PositiveNumber);
  app.add_flag("--skip-gemm", skip_gemm, "no GEMM table");
  app.add_flag("--skip-attention", skip_attention, "no attention table");
  app.add_option("--attention-head-dim", attention_head_dim, "head_dim of the attention table")
      ->check(CLI::IsMember({int64_t{64}, int64_t{128}}));
  app.add_option("--attention-decode-heads", decode_heads,
                 "kv heads per block of the decode kernel: 0 automatic, 1, 2, 4 or 8")
      ->check(CLI::IsMember({0, 1, 2, 4, 8}));
  CLI11_PARSE(app, argc, argv);

  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::cerr << "kernel_bench: no CUDA device\n";
    return 2;
  }
  absl::StatusOr<double> copy = dpinfer::bench::MeasureCopyRate(int64_t{1} << 30, 10);
  if (!copy.ok()) {
    std::cerr << "kernel_bench: " << copy.status() << "\n";
    return 1;
  }
  std::printf("card: %s\ncopy rate (device to device, read + write): %.1f GB/s\n",
              dpinfer::bench::CardName().c_str(), *copy / 1e9);
  cudaStream_t stream = nullptr;
  if (cudaStreamCreate(&stream) != cudaSuccess) return 1;
  absl::Status st;
  if (!skip_gemm) st = BenchGemms(stream, reps);
  if (st.ok() && !skip_attention) {
    st = BenchAttention(stream, reps, *copy, attention_head_dim, decode_heads);
  }
  cudaStreamDestroy(stream);
  if (!st.ok()) {
    std::cerr << "kernel_bench: " << st << "\n";
    return 1;
  }
  return 0;
}
