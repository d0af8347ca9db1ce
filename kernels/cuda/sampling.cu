// Token sampling on the GPU, the algorithm of worker/engine/sampler.cc so that a seeded request
// draws the same tokens on either backend:
//  - greedy (temperature 0 or top_k 1): the first index of the row's largest logit;
//  - otherwise the row is sorted by logit, descending, ties by index (a stable segmented radix sort
//    of (logit, index) pairs gives exactly the CPU's comparator order); softmax of
//    logits / temperature over the top-k in double; the top-p prefix; one draw of
//    CounterUniform(seed, step) walked down the cumulative sum.
// The sums are block reductions and scans rather than the CPU's left-to-right loop, so the two can
// disagree only when the draw lands within rounding (~1e-16) of a boundary between two tokens.
// Scratch memory (the sorted copy of the logits) is stream-ordered (cudaMallocAsync).
#include <climits>
#include <cmath>
#include <cub/cub.cuh>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/fast_ops.h"

namespace dpinfer::kernels::gpu {
namespace {

constexpr int kThreads = 256;

// worker/engine/sampler.cc's Mix64 and CounterUniform, bit for bit.
__device__ __forceinline__ uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

__device__ __forceinline__ uint64_t GumbelRowKey(uint64_t seed, uint64_t step) {
  return Mix64(Mix64(seed) ^ Mix64(step ^ 0x5851f42d4c957f2dULL));
}

__device__ __forceinline__ double CounterUniform(uint64_t seed, uint64_t counter) {
  return static_cast<double>(GumbelRowKey(seed, counter) >> 11) * (1.0 / 9007199254740992.0);
}

// sampler.cc's GumbelNoise and UsesGumbelSampling.
__device__ __forceinline__ float GumbelNoise(uint64_t row_key, int64_t i) {
  const uint64_t bits = Mix64(row_key + static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ULL);
  const float u = __fmul_rn(static_cast<float>(bits >> 40) + 0.5f, 1.0f / 16777216.0f);
  return -logf(-logf(u));
}

__device__ __forceinline__ bool UsesGumbel(float temperature, int32_t top_k, float top_p,
                                           int64_t vocab) {
  return temperature > 0.0f && (top_k <= 0 || top_k >= vocab) && top_p >= 1.0f;
}

struct Best {
  float value;
  int32_t index;
};

// The CPU's rule (`logits[i] > logits[best]`, scanning up) is "largest value, lowest index".
__device__ __forceinline__ Best Better(Best a, Best b) {
  return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
}

__global__ void ArgmaxKernel(const float* __restrict__ logits, int64_t vocab,
                             int32_t* __restrict__ tokens) {
  __shared__ Best scratch[32];
  const float* row = logits + blockIdx.x * vocab;
  Best best{-INFINITY, INT_MAX};
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    best = Better(best, Best{row[i], static_cast<int32_t>(i)});
  }
  for (int o = 16; o > 0; o >>= 1) {
    Best other{__shfl_xor_sync(0xffffffffu, best.value, o),
               __shfl_xor_sync(0xffffffffu, best.index, o)};
    best = Better(best, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) best = Better(best, scratch[w]);
    // All-NaN rows: the CPU loop never moves off index 0.
    tokens[blockIdx.x] = best.index == INT_MAX ? 0 : best.index;
  }
}

// One block per row: greedy rows take the argmax, Gumbel rows the argmax of the perturbed scores
// (both "largest value, lowest index"), and rows that need the sorted path are marked -1. With
// kGumbelOnly (after the sorted path has written its rows) only the Gumbel rows are written.
// 1024 threads: a row of 128k entries takes each thread ~128 hashes and logs, and one block per
// row keeps the whole batch in a single wave.
constexpr int kFastThreads = 1024;
template <bool kGumbelOnly>
__global__ void __launch_bounds__(kFastThreads) SampleFastKernel(SampleFastArgs a) {
  __shared__ float sm_score[kFastThreads / 32];
  __shared__ int32_t sm_index[kFastThreads / 32];
  const int64_t r = blockIdx.x;
  const float* row = a.logits + r * a.vocab;
  const float temperature = a.temperature[r];
  const int32_t top_k = a.top_k[r];
  const bool greedy = temperature == 0.0f || top_k == 1;
  if (kGumbelOnly && greedy) return;
  if (!greedy && !UsesGumbel(temperature, top_k, a.top_p[r], a.vocab)) {
    if (!kGumbelOnly && threadIdx.x == 0) a.tokens[r] = -1;
    return;
  }
  const uint64_t key = greedy ? 0 : GumbelRowKey(a.seed[r], a.step[r]);
  const float inv_t = greedy ? 1.0f : __fdiv_rn(1.0f, temperature);
  float best = -INFINITY;
  int32_t best_i = INT_MAX;
  for (int64_t i = threadIdx.x; i < a.vocab; i += blockDim.x) {
    const float score = greedy ? row[i] : __fadd_rn(__fmul_rn(row[i], inv_t), GumbelNoise(key, i));
    if (score > best) {  // i increases within a thread: ties keep the lower index
      best = score;
      best_i = static_cast<int32_t>(i);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, best, o);
    const int32_t other_i = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (other > best || (other == best && other_i < best_i)) {
      best = other;
      best_i = other_i;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sm_score[warp] = best;
    sm_index[warp] = best_i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kFastThreads / 32; ++w) {
      if (sm_score[w] > best || (sm_score[w] == best && sm_index[w] < best_i)) {
        best = sm_score[w];
        best_i = sm_index[w];
      }
    }
    // A row of NaN (or all -inf): the CPU loops never move off index 0.
    a.tokens[r] = best_i == INT_MAX ? 0 : best_i;
  }
}

__global__ void IotaKernel(int32_t* values, int32_t* offsets, int64_t num_rows, int64_t vocab) {
  const int64_t total = num_rows * vocab;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i <= total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (i < total) values[i] = static_cast<int32_t>(i % vocab);
    if (i % vocab == 0) offsets[i / vocab] = static_cast<int32_t>(i);
  }
}

// One block per row over that row's sorted logits and indices.
__global__ void __launch_bounds__(kThreads)
    SampleSortedKernel(const float* __restrict__ sorted_logits,
                       const int32_t* __restrict__ sorted_index, SampleArgs a) {
  using BlockReduce = cub::BlockReduce<double, kThreads>;
  using BlockScan = cub::BlockScan<double, kThreads>;
  __shared__ union {
    typename BlockReduce::TempStorage reduce;
    typename BlockScan::TempStorage scan;
  } temp;
  __shared__ double sm_sum;
  __shared__ int sm_found;
  __shared__ double sm_found_cum;

  const int64_t r = blockIdx.x;
  const float* logits = sorted_logits + r * a.vocab;
  const int32_t* index = sorted_index + r * a.vocab;
  const float temperature = a.temperature[r];
  const int32_t top_k = a.top_k[r];
  if (temperature == 0.0f || top_k == 1) {
    if (threadIdx.x == 0) a.tokens[r] = index[0];
    return;
  }
  if (UsesGumbel(temperature, top_k, a.top_p[r], a.vocab)) return;  // SampleFast's row
  const int64_t keep = (top_k > 0 && top_k < a.vocab) ? top_k : a.vocab;
  const double inv_t = 1.0 / static_cast<double>(temperature);
  const double max_l = __dmul_rn(static_cast<double>(logits[0]), inv_t);
  // Unfused, as the CPU computes exp(l * inv_t - max_l).
  auto weight = [&](int64_t i) {
    return exp(__dsub_rn(__dmul_rn(static_cast<double>(logits[i]), inv_t), max_l));
  };

  double part = 0.0;
  for (int64_t i = threadIdx.x; i < keep; i += blockDim.x) part += weight(i);
  const double sum = BlockReduce(temp.reduce).Sum(part);
  if (threadIdx.x == 0) sm_sum = sum;
  __syncthreads();
  const double norm = sm_sum;

  // First index (in sorted order) whose inclusive cumulative probability passes `threshold`
  // (>= when `inclusive`, else >); returns keep when none does, with the running total in
  // sm_found_cum either way.
  auto find_first = [&](int64_t limit, double threshold, bool inclusive) -> int64_t {
    double carry = 0.0;
    for (int64_t base = 0; base < limit; base += blockDim.x) {
      const int64_t i = base + threadIdx.x;
      const double p = i < limit ? weight(i) / norm : 0.0;
      double incl, chunk_total;
      __syncthreads();
      if (threadIdx.x == 0) sm_found = INT_MAX;
      BlockScan(temp.scan).InclusiveSum(p, incl, chunk_total);
      __syncthreads();
      const double cum = carry + incl;
      const bool hit = i < limit && (inclusive ? cum >= threshold : cum > threshold);
      if (hit) atomicMin(&sm_found, static_cast<int>(i));
      __syncthreads();
      const int found = sm_found;
      if (found != INT_MAX) {
        if (i == found) sm_found_cum = cum;
        __syncthreads();
        return found;
      }
      carry += chunk_total;
    }
    if (threadIdx.x == 0) sm_found_cum = carry;
    __syncthreads();
    return limit;
  };

  // Nucleus: the smallest prefix whose probability reaches top_p (at least one token).
  int64_t n = keep;
  double total;
  const float top_p = a.top_p[r];
  if (top_p < 1.0f) {
    const int64_t first = find_first(keep, static_cast<double>(top_p), /*inclusive=*/true);
    n = first < keep ? first + 1 : keep;
    total = sm_found_cum;
  } else {
    double p = 0.0;
    for (int64_t i = threadIdx.x; i < keep; i += blockDim.x) p += weight(i) / norm;
    __syncthreads();
    const double s = BlockReduce(temp.reduce).Sum(p);
    if (threadIdx.x == 0) sm_found_cum = s;
    __syncthreads();
    total = sm_found_cum;
  }
  const double u = CounterUniform(a.seed[r], a.step[r]) * total;
  const int64_t pick = find_first(n, u, /*inclusive=*/false);
  if (threadIdx.x == 0) a.tokens[r] = index[pick < n ? pick : n - 1];
}

}  // namespace

cudaError_t Argmax(cudaStream_t stream, const float* logits, int64_t num_rows, int64_t vocab,
                   int32_t* tokens) {
  if (logits == nullptr || tokens == nullptr || vocab <= 0 || vocab > INT_MAX) {
    return cudaErrorInvalidValue;
  }
  if (num_rows == 0) return cudaSuccess;
  ArgmaxKernel<<<num_rows, kThreads, 0, stream>>>(logits, vocab, tokens);
  return cudaGetLastError();
}

cudaError_t Sample(cudaStream_t stream, const SampleArgs& a) {
  if (a.logits == nullptr || a.temperature == nullptr || a.top_k == nullptr || a.top_p == nullptr ||
      a.seed == nullptr || a.step == nullptr || a.tokens == nullptr || a.vocab <= 0 ||
      a.num_rows < 0 || a.num_rows * a.vocab >= INT_MAX) {
    return cudaErrorInvalidValue;
  }
  if (a.num_rows == 0) return cudaSuccess;
  const int num_items = static_cast<int>(a.num_rows * a.vocab);
  const int num_segments = static_cast<int>(a.num_rows);

  float* keys_out = nullptr;
  int32_t* values_in = nullptr;
  int32_t* values_out = nullptr;
  int32_t* offsets = nullptr;
  void* sort_temp = nullptr;
  size_t sort_temp_bytes = 0;
  cudaError_t err = cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, sort_temp_bytes, a.logits, keys_out, values_in, values_out, num_items, num_segments,
      offsets, offsets + 1, 0, 32, stream);
  if (err != cudaSuccess) return err;

  const auto release = [&]() {
    for (void* p : {static_cast<void*>(keys_out), static_cast<void*>(values_in),
                    static_cast<void*>(values_out), static_cast<void*>(offsets), sort_temp}) {
      if (p != nullptr) cudaFreeAsync(p, stream);
    }
  };
  const size_t n = static_cast<size_t>(num_items);
  if ((err = cudaMallocAsync(&keys_out, n * sizeof(float), stream)) != cudaSuccess ||
      (err = cudaMallocAsync(&values_in, n * sizeof(int32_t), stream)) != cudaSuccess ||
      (err = cudaMallocAsync(&values_out, n * sizeof(int32_t), stream)) != cudaSuccess ||
      (err = cudaMallocAsync(&offsets, (a.num_rows + 1) * sizeof(int32_t), stream)) !=
          cudaSuccess ||
      (err = cudaMallocAsync(&sort_temp, sort_temp_bytes, stream)) != cudaSuccess) {
    release();
    return err;
  }
  const int64_t iota_blocks = std::min<int64_t>((num_items + kThreads) / kThreads, 1 << 16);
  IotaKernel<<<iota_blocks, kThreads, 0, stream>>>(values_in, offsets, a.num_rows, a.vocab);
  err = cudaGetLastError();
  if (err == cudaSuccess) {
    err = cub::DeviceSegmentedRadixSort::SortPairsDescending(
        sort_temp, sort_temp_bytes, a.logits, keys_out, values_in, values_out, num_items,
        num_segments, offsets, offsets + 1, 0, 32, stream);
  }
  if (err == cudaSuccess) {
    SampleSortedKernel<<<a.num_rows, kThreads, 0, stream>>>(keys_out, values_out, a);
    err = cudaGetLastError();
  }
  if (err == cudaSuccess) {
    // The rows drawn by the Gumbel-max rule (the sorted kernel left them alone).
    const SampleFastArgs f{a.logits, a.temperature, a.top_k,    a.top_p, a.seed,
                           a.step,   a.tokens,      a.num_rows, a.vocab};
    SampleFastKernel<true><<<a.num_rows, kFastThreads, 0, stream>>>(f);
    err = cudaGetLastError();
  }
  release();
  return err;
}

cudaError_t SampleFast(cudaStream_t stream, const SampleFastArgs& a) {
  if (a.logits == nullptr || a.temperature == nullptr || a.top_k == nullptr || a.top_p == nullptr ||
      a.seed == nullptr || a.step == nullptr || a.tokens == nullptr || a.vocab <= 0 ||
      a.vocab > INT_MAX || a.num_rows < 0) {
    return cudaErrorInvalidValue;
  }
  if (a.num_rows == 0) return cudaSuccess;
  SampleFastKernel<false><<<a.num_rows, kFastThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace dpinfer::kernels::gpu
