// CudaBackend: each op validates what its kernel cannot, launches on the backend's stream and
// records the first failure (see cuda_backend.h); and the Status-returning wrappers of the extra
// launchers. The kernels live one family per .cu file; see cuda_ops.h.
#include "kernels/cuda/cuda_backend.h"

#include <cmath>

#include "common/status.h"

namespace dpinfer::kernels {

CudaBackend::CudaBackend(cudaStream_t stream) : stream_(stream) {
  Record(CUBLAS_STATUS(cublasCreate(&cublas_)));
  if (cublas_ != nullptr) {
    // Explicit, so an exact fp32 mode never silently becomes TF32.
    Record(CUBLAS_STATUS(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH)));
    Record(CUBLAS_STATUS(cublasSetStream(cublas_, stream_)));
  }
}

CudaBackend::~CudaBackend() {
  if (cublas_ != nullptr) cublasDestroy(cublas_);
}

void CudaBackend::Record(absl::Status s) {
  if (status_.ok() && !s.ok()) status_ = std::move(s);
}

const float* CudaBackend::InvFreq(float theta, int64_t head_dim) {
  auto key = std::make_pair(theta, head_dim);
  auto it = inv_freq_.find(key);
  if (it != inv_freq_.end()) return it->second.device.data();
  InvFreqTable table;
  const int64_t half = head_dim / 2;
  table.host.resize(half);
  // kernels/cpu/rope.cc's expression, so both backends rotate by the same angles.
  for (int64_t i = 0; i < half; ++i) {
    table.host[i] =
        1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
  }
  auto buf = DeviceBuffer<float>::Allocate(half);
  if (!buf.ok()) {
    Record(buf.status());
    return nullptr;
  }
  table.device = std::move(*buf);
  Record(CUDA_STATUS(cudaMemcpyAsync(table.device.data(), table.host.data(), sizeof(float) * half,
                                     cudaMemcpyHostToDevice, stream_)));
  return inv_freq_.emplace(key, std::move(table)).first->second.device.data();
}

void CudaBackend::Linear(const LinearArgs& a) {
  if (cublas_ == nullptr) return;  // creation failed; already recorded
  Record(LinearFp32(stream_, cublas_, a));
}

void CudaBackend::RmsNorm(const RmsNormArgs& a) { Record(CUDA_STATUS(gpu::RmsNorm(stream_, a))); }

void CudaBackend::Rope(const RopeArgs& a) {
  if (a.head_dim <= 0 || a.head_dim % 2 != 0) {
    Record(absl::InvalidArgumentError("Rope: head_dim must be positive and even"));
    return;
  }
  const float* inv_freq = a.inv_freq != nullptr ? a.inv_freq : InvFreq(a.theta, a.head_dim);
  if (inv_freq == nullptr) return;
  Record(CUDA_STATUS(gpu::Rope(stream_, a, inv_freq)));
}

void CudaBackend::SiluMul(const SiluMulArgs& a) { Record(CUDA_STATUS(gpu::SiluMul(stream_, a))); }

void CudaBackend::Embedding(const EmbeddingArgs& a) {
  Record(CUDA_STATUS(gpu::Embedding(stream_, a)));
}

void CudaBackend::Add(const AddArgs& a) { Record(CUDA_STATUS(gpu::Add(stream_, a))); }

void CudaBackend::Softmax(const SoftmaxArgs& a) { Record(CUDA_STATUS(gpu::Softmax(stream_, a))); }

void CudaBackend::CacheWrite(const CacheWriteArgs& a) {
  Record(CUDA_STATUS(gpu::CacheWrite(stream_, a)));
}

void CudaBackend::PagedAttention(const PagedAttentionArgs& a) {
  Record(CUDA_STATUS(gpu::PagedAttention(stream_, a)));
}

std::unique_ptr<CudaBackend> NewCudaBackend(cudaStream_t stream) {
  return std::make_unique<CudaBackend>(stream);
}

absl::Status FusedAddRmsNorm(cudaStream_t stream, const FusedAddRmsNormArgs& args) {
  return CUDA_STATUS(gpu::FusedAddRmsNorm(stream, args));
}

absl::Status Fp32ToBf16(cudaStream_t stream, const float* x, __nv_bfloat16* y, int64_t n) {
  return CUDA_STATUS(gpu::Fp32ToBf16(stream, x, y, n));
}

absl::Status Bf16ToFp32(cudaStream_t stream, const __nv_bfloat16* x, float* y, int64_t n) {
  return CUDA_STATUS(gpu::Bf16ToFp32(stream, x, y, n));
}

absl::Status DivideScalar(cudaStream_t stream, float* x, int64_t n, float divisor) {
  return CUDA_STATUS(gpu::DivideScalar(stream, x, n, divisor));
}

absl::Status MoeCombine(cudaStream_t stream, const MoeCombineArgs& args) {
  return CUDA_STATUS(gpu::MoeCombine(stream, args));
}

absl::Status ArgmaxRows(cudaStream_t stream, const float* logits, int64_t num_rows, int64_t vocab,
                        int32_t* tokens) {
  return CUDA_STATUS(gpu::Argmax(stream, logits, num_rows, vocab, tokens));
}

absl::Status SampleRows(cudaStream_t stream, const SampleArgs& args) {
  return CUDA_STATUS(gpu::Sample(stream, args));
}

}  // namespace dpinfer::kernels
