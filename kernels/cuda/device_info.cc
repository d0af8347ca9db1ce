// SmCount (fast_ops.h).
#include <atomic>

#include "kernels/cuda/fast_ops.h"

namespace dpinfer::kernels::gpu {

cudaError_t SmCount(int* count) {
  constexpr int kCachedDevices = 64;
  static std::atomic<int> cached[kCachedDevices];
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  if (dev >= 0 && dev < kCachedDevices) {
    *count = cached[dev].load(std::memory_order_relaxed);
    if (*count > 0) return cudaSuccess;
  }
  err = cudaDeviceGetAttribute(count, cudaDevAttrMultiProcessorCount, dev);
  if (err != cudaSuccess) return err;
  if (*count <= 0) *count = 1;
  if (dev >= 0 && dev < kCachedDevices) cached[dev].store(*count, std::memory_order_relaxed);
  return cudaSuccess;
}

}  // namespace dpinfer::kernels::gpu
