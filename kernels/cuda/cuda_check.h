// The one way CUDA runtime and cuBLAS error codes become absl::Status (DESIGN.md, "Errors are
// values"): the failing call's text, file and line travel in the message, so a failure far from
// its cause still says where it happened. Kernels themselves (.cu files) return cudaError_t and
// never see absl; the .cc glue wraps them with these macros.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dpinfer::kernels {

inline absl::Status CudaStatus(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string msg = absl::StrCat(expr, " failed: ", cudaGetErrorName(err), " (",
                                       cudaGetErrorString(err), ") at ", file, ":", line);
  // Out of memory is the one CUDA failure a caller can act on (smaller batch, fewer blocks).
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(msg);
  if (err == cudaErrorInvalidValue) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

inline absl::Status CublasStatus(cublasStatus_t st, const char* expr, const char* file, int line) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string msg = absl::StrCat(expr, " failed: ", cublasGetStatusName(st), " (",
                                       cublasGetStatusString(st), ") at ", file, ":", line);
  if (st == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  if (st == CUBLAS_STATUS_INVALID_VALUE) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

}  // namespace dpinfer::kernels

// The Status of one CUDA runtime / cuBLAS call (OK on success), for void callers that record it.
#define CUDA_STATUS(expr) ::dpinfer::kernels::CudaStatus((expr), #expr, __FILE__, __LINE__)
#define CUBLAS_STATUS(expr) ::dpinfer::kernels::CublasStatus((expr), #expr, __FILE__, __LINE__)

// Returns the failing call's Status from the enclosing function.
#define CUDA_RETURN_IF_ERROR(expr)                               \
  do {                                                           \
    ::absl::Status _dpinfer_cuda_status = CUDA_STATUS(expr);     \
    if (!_dpinfer_cuda_status.ok()) return _dpinfer_cuda_status; \
  } while (0)
#define CUBLAS_RETURN_IF_ERROR(expr)                                 \
  do {                                                               \
    ::absl::Status _dpinfer_cublas_status = CUBLAS_STATUS(expr);     \
    if (!_dpinfer_cublas_status.ok()) return _dpinfer_cublas_status; \
  } while (0)
