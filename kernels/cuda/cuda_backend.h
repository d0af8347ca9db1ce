// The CUDA backend: kernels/backend.h's ops on device pointers, enqueued on one stream, plus what
// the GPU engine needs beyond that interface (the fused residual-add RMSNorm, a bf16 GEMM,
// sampling) and a small RAII device buffer for loaders and tests.
//
// Backend's op methods return void, so a failed launch or cuBLAS call is recorded: status() holds
// the first error and later ops still run (their results are then meaningless). Callers check
// status() at a synchronization point, e.g. once per forward pass. Nothing here synchronizes the
// stream except DeviceBuffer's Upload/Download.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/status.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"

namespace dpinfer::kernels {

// Device memory for `size` elements of T, freed on destruction. Move-only.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  static absl::StatusOr<DeviceBuffer> Allocate(int64_t size) {
    DeviceBuffer buf;
    if (size > 0) {
      CUDA_RETURN_IF_ERROR(cudaMalloc(&buf.data_, sizeof(T) * static_cast<size_t>(size)));
    }
    buf.size_ = size;
    return buf;
  }
  // A buffer holding a copy of `host`.
  static absl::StatusOr<DeviceBuffer> FromHost(const std::vector<T>& host,
                                               cudaStream_t stream = nullptr) {
    ASSIGN_OR_RETURN(DeviceBuffer buf, Allocate(static_cast<int64_t>(host.size())));
    RETURN_IF_ERROR(buf.Upload(host.data(), buf.size_, stream));
    return buf;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return size_; }

  // Copies `count` elements host -> device on `stream` and waits for the copy (so `host` may be
  // freed at once), ordered after the work already queued there.
  absl::Status Upload(const T* host, int64_t count, cudaStream_t stream = nullptr) {
    if (count > size_) return absl::InvalidArgumentError("DeviceBuffer::Upload past the end");
    if (count == 0) return absl::OkStatus();
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(data_, host, sizeof(T) * static_cast<size_t>(count),
                                         cudaMemcpyHostToDevice, stream));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    return absl::OkStatus();
  }
  absl::Status Upload(const std::vector<T>& host, cudaStream_t stream = nullptr) {
    return Upload(host.data(), static_cast<int64_t>(host.size()), stream);
  }
  // Copies `count` elements device -> host after the work queued on `stream`, and waits.
  absl::Status Download(T* host, int64_t count, cudaStream_t stream = nullptr) const {
    if (count > size_) return absl::InvalidArgumentError("DeviceBuffer::Download past the end");
    if (count == 0) return absl::OkStatus();
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host, data_, sizeof(T) * static_cast<size_t>(count),
                                         cudaMemcpyDeviceToHost, stream));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<T>> Download(cudaStream_t stream = nullptr) const {
    std::vector<T> host(static_cast<size_t>(size_));
    RETURN_IF_ERROR(Download(host.data(), size_, stream));
    return host;
  }

 private:
  void Reset() {
    if (data_ != nullptr) cudaFree(data_);  // an error here has no one to go to
    data_ = nullptr;
    size_ = 0;
  }
  T* data_ = nullptr;
  int64_t size_ = 0;
};

class CudaBackend final : public Backend {
 public:
  // Ops are enqueued on `stream` (not owned; nullptr is the legacy default stream).
  explicit CudaBackend(cudaStream_t stream);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const char* name() const override { return "cuda"; }
  void Linear(const LinearArgs& args) override;  // fp32 cuBLAS SGEMM, no TF32
  void RmsNorm(const RmsNormArgs& args) override;
  void Rope(const RopeArgs& args) override;
  void SiluMul(const SiluMulArgs& args) override;
  void Embedding(const EmbeddingArgs& args) override;
  void Add(const AddArgs& args) override;
  void Softmax(const SoftmaxArgs& args) override;
  void CacheWrite(const CacheWriteArgs& args) override;
  void PagedAttention(const PagedAttentionArgs& args) override;

  // The first error any op met (OK if none); it stays until ClearStatus().
  const absl::Status& status() const { return status_; }
  void ClearStatus() { status_ = absl::OkStatus(); }

  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }

 private:
  void Record(absl::Status s);
  // theta^(-2i/head_dim) for i < head_dim/2 on the device, computed once per (theta, head_dim)
  // on the host with the CPU twin's arithmetic. The one piece of memory the backend owns.
  const float* InvFreq(float theta, int64_t head_dim);

  cudaStream_t stream_;
  cublasHandle_t cublas_ = nullptr;
  absl::Status status_;
  struct InvFreqTable {
    std::vector<float> host;  // kept alive until the async upload has certainly finished
    DeviceBuffer<float> device;
  };
  std::map<std::pair<float, int64_t>, InvFreqTable> inv_freq_;
};

// A CUDA backend on `stream`. Its status() says whether the cuBLAS handle could be created.
// (Returns the concrete type so callers reach status(); it converts to unique_ptr<Backend>.)
std::unique_ptr<CudaBackend> NewCudaBackend(cudaStream_t stream);

// y = x @ w^T for row-major x [m, k] and w [n, k] (nn.Linear layout), bf16 inputs, fp32
// accumulation on tensor cores; y [m, n] is fp32 or, with `y_bf16`, bf16 (rounded once at the
// end). `handle` is bound to `stream` for the call.
absl::Status GemmBf16(cudaStream_t stream, cublasHandle_t handle, const __nv_bfloat16* x,
                      const __nv_bfloat16* w, void* y, bool y_bf16, int64_t m, int64_t n,
                      int64_t k);

// The fp32 Linear through cuBLAS (what CudaBackend::Linear runs), for callers holding a handle.
absl::Status LinearFp32(cudaStream_t stream, cublasHandle_t handle, const LinearArgs& args);

// residual += x * x_scale; out = rmsnorm(residual) * w (see FusedAddRmsNormArgs).
absl::Status FusedAddRmsNorm(cudaStream_t stream, const FusedAddRmsNormArgs& args);

// Element-wise conversions (round to nearest even into bf16).
absl::Status Fp32ToBf16(cudaStream_t stream, const float* x, __nv_bfloat16* y, int64_t n);
absl::Status Bf16ToFp32(cudaStream_t stream, const __nv_bfloat16* x, float* y, int64_t n);

// x[i] /= divisor, in place.
absl::Status DivideScalar(cudaStream_t stream, float* x, int64_t n, float divisor);

// The mixture-of-experts combine (see MoeCombineArgs).
absl::Status MoeCombine(cudaStream_t stream, const MoeCombineArgs& args);

// tokens[r] = argmax of logits row r (lowest index among ties), as engine::Argmax.
absl::Status ArgmaxRows(cudaStream_t stream, const float* logits, int64_t num_rows, int64_t vocab,
                        int32_t* tokens);

// One sampled token per row (see SampleArgs), as engine::SampleToken draws it.
absl::Status SampleRows(cudaStream_t stream, const SampleArgs& args);

}  // namespace dpinfer::kernels
