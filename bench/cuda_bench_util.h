// What the GPU benchmarks share: the device copy rate they measure their kernels against, and
// the card's name for their reports.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/status.h"
#include "kernels/cuda/cuda_check.h"

namespace dpinfer::bench {

// Copies `bytes` between two device buffers `iters` times (after one untimed copy) and returns
// 2 * bytes * iters / time: each copy reads and writes every byte.
inline absl::StatusOr<double> MeasureCopyRate(int64_t bytes, int32_t iters) {
  void* a = nullptr;
  void* b = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  const auto cleanup = [&] {
    if (a != nullptr) cudaFree(a);
    if (b != nullptr) cudaFree(b);
    if (start != nullptr) cudaEventDestroy(start);
    if (stop != nullptr) cudaEventDestroy(stop);
  };
  const auto run = [&]() -> absl::StatusOr<double> {
    RETURN_IF_ERROR(CUDA_STATUS(cudaMalloc(&a, bytes)));
    RETURN_IF_ERROR(CUDA_STATUS(cudaMalloc(&b, bytes)));
    RETURN_IF_ERROR(CUDA_STATUS(cudaMemset(a, 1, bytes)));
    RETURN_IF_ERROR(CUDA_STATUS(cudaMemset(b, 0, bytes)));
    RETURN_IF_ERROR(CUDA_STATUS(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice)));
    RETURN_IF_ERROR(CUDA_STATUS(cudaEventCreate(&start)));
    RETURN_IF_ERROR(CUDA_STATUS(cudaEventCreate(&stop)));
    RETURN_IF_ERROR(CUDA_STATUS(cudaEventRecord(start)));
    for (int32_t i = 0; i < iters; ++i) {
      // Alternate the direction so no copy is a no-op of an earlier one.
      void* dst = i % 2 == 0 ? b : a;
      const void* src = i % 2 == 0 ? a : b;
      RETURN_IF_ERROR(
          CUDA_STATUS(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, nullptr)));
    }
    RETURN_IF_ERROR(CUDA_STATUS(cudaEventRecord(stop)));
    RETURN_IF_ERROR(CUDA_STATUS(cudaEventSynchronize(stop)));
    float ms = 0.0f;
    RETURN_IF_ERROR(CUDA_STATUS(cudaEventElapsedTime(&ms, start, stop)));
    if (ms <= 0.0f) return absl::InternalError("copy took no measurable time");
    return 2.0 * static_cast<double>(bytes) * iters / (ms * 1e-3);
  };
  absl::StatusOr<double> rate = run();
  cleanup();
  return rate;
}

inline std::string CardName() {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "unknown";
  return prop.name;
}

}  // namespace dpinfer::bench
