// What the CUDA kernel tests share (cuda_parity_test, cuda_attention_test, cuda_moe_test): fresh
// random inputs without zeros, the relative L2 error that turns a NaN into a failure, host <->
// device copies that CHECK, and a fixture that skips when no device can be used. Only included
// where the build has CUDA (DPINFER_HAVE_CUDA).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace dpinfer::kernels::cudatest {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr uint16_t kBf16NaN = 0x7fc0;

// Normal(0, scale) values, never zero: a zero input hides a kernel that ignores it.
inline std::vector<float> Random(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) {
    do {
      x = dist(rng);
    } while (x == 0.0f);
  }
  return v;
}

// ‖out − ref‖ / ‖ref‖; infinite when out holds a NaN (an element never written, or a bad one).
inline double RelErr(const std::vector<float>& out, const std::vector<float>& ref) {
  EXPECT_EQ(out.size(), ref.size());
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < out.size() && i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) return std::numeric_limits<double>::infinity();
    diff += (double{out[i]} - ref[i]) * (double{out[i]} - ref[i]);
    norm += double{ref[i]} * ref[i];
  }
  return norm == 0.0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

template <typename T>
DeviceBuffer<T> Up(const std::vector<T>& host) {
  auto buf = DeviceBuffer<T>::FromHost(host);
  CHECK_OK(buf.status());
  return std::move(*buf);
}

template <typename T>
std::vector<T> Down(const DeviceBuffer<T>& buf) {
  auto host = buf.Download();
  CHECK_OK(host.status());
  return *std::move(host);
}

// Empty when a CUDA device can be used; otherwise why not (the tests skip with it).
inline std::string CudaSkipReason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return absl::StrCat("no usable CUDA device: cudaGetDeviceCount: ", cudaGetErrorName(err), " (",
                        cudaGetErrorString(err), ")");
  }
  if (count == 0) return "no CUDA device (cudaGetDeviceCount = 0)";
  return "";
}

// A fixture with a stream of its own and a CPU backend for the twins; skips, with the reason,
// where no device can be used.
class StreamTest : public ::testing::Test {
 protected:
  explicit StreamTest(int cpu_threads = 0) : cpu_threads_(cpu_threads) {}
  void SetUp() override {
    const std::string skip = CudaSkipReason();
    if (!skip.empty()) GTEST_SKIP() << skip;
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    cpu_ = NewCpuBackend(cpu_threads_);
  }
  void TearDown() override {
    if (stream_ != nullptr) {
      EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
      cudaStreamDestroy(stream_);
    }
  }
  void Sync() { ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess); }

  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Backend> cpu_;

 private:
  int cpu_threads_;
};

}  // namespace dpinfer::kernels::cudatest
