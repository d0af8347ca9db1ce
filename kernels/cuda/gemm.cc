// GEMMs through cuBLAS. Row-major y [m, n] = x [m, k] @ w[n, k]^T is, read column-major,
// y^T [n, m] = w^T [n, k] @ x^T [k, m]: one GEMM with the weight transposed and no copies.
// The fp32 path is the engine's exact mode, so the handle keeps CUBLAS_DEFAULT_MATH (no TF32) and
// SGEMM stays within ~1e-6 of the CPU; the bf16 path is the fast one, fp32 accumulation on tensor
// cores. cuBLAS picks kernels by shape, so unlike the CPU Linear a row's result may change in its
// last bits with the batch size.
#include <climits>

#include "common/status.h"
#include "kernels/cuda/cuda_backend.h"

namespace dpinfer::kernels {
namespace {

absl::Status CheckDims(int64_t m, int64_t n, int64_t k) {
  if (m < 0 || n < 0 || k < 0 || m > INT_MAX || n > INT_MAX || k > INT_MAX) {
    return absl::InvalidArgumentError("GEMM dimensions out of cuBLAS's int range");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LinearFp32(cudaStream_t stream, cublasHandle_t handle, const LinearArgs& a) {
  if (a.x == nullptr || a.w == nullptr || a.y == nullptr) {
    return absl::InvalidArgumentError("Linear: null pointer");
  }
  RETURN_IF_ERROR(CheckDims(a.m, a.n, a.k));
  if (a.m == 0 || a.n == 0) return absl::OkStatus();
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle, stream));
  const float alpha = 1.0f, beta = 0.0f;
  const int m = static_cast<int>(a.m), n = static_cast<int>(a.n), k = static_cast<int>(a.k);
  CUBLAS_RETURN_IF_ERROR(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, a.w, k, a.x,
                                     k, &beta, a.y, n));
  if (a.bias != nullptr) CUDA_RETURN_IF_ERROR(gpu::AddBias(stream, a.y, a.bias, a.m, a.n));
  return absl::OkStatus();
}

absl::Status GemmBf16(cudaStream_t stream, cublasHandle_t handle, const __nv_bfloat16* x,
                      const __nv_bfloat16* w, void* y, bool y_bf16, int64_t m, int64_t n,
                      int64_t k) {
  if (x == nullptr || w == nullptr || y == nullptr) {
    return absl::InvalidArgumentError("GemmBf16: null pointer");
  }
  RETURN_IF_ERROR(CheckDims(m, n, k));
  if (m == 0 || n == 0) return absl::OkStatus();
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle, stream));
  const float alpha = 1.0f, beta = 0.0f;
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      handle, CUBLAS_OP_T, CUBLAS_OP_N, ni, mi, ki, &alpha, w, CUDA_R_16BF, ki, x, CUDA_R_16BF, ki,
      &beta, y, y_bf16 ? CUDA_R_16BF : CUDA_R_32F, ni, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace dpinfer::kernels
