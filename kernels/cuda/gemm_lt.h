// bf16 GEMMs through cuBLASLt with the algorithm chosen per shape by measurement.
//
// cublasGemmEx (GemmBf16) lets cuBLAS pick a kernel by its heuristic alone. For the skinny shapes
// of decode (m = a few hundred rows against weights thousands wide) that pick can leave most SMs
// idle; cuBLASLt exposes the heuristic's whole candidate list (tile shapes, split-K, stages), and
// GemmPlanner times those candidates once per shape class and keeps the fastest.
//
// Shape classes: (m bucket, n, k, output type). m is bucketed (MBucket) so that the hundreds of
// distinct token counts of a serving run share a few dozen plans; a bucket's plan is measured at
// the first m that meets it and reused for every m in the bucket when cuBLASLt accepts the
// algorithm for that m (else the heuristic's first choice for it). Chosen algorithms live in a
// process-wide table, so two planners on the same device pick the same kernel for a shape and
// their results agree bit for bit.
//
// Measuring runs the candidates on the caller's buffers (y is overwritten, x and w are only read)
// and synchronizes the stream, so it never happens while the stream is being captured into a CUDA
// graph: a missing plan there takes the heuristic's first choice until a call outside a capture
// settles it. A serving engine measures its shapes up front (CudaLlamaModel::Prepare) and then
// turns measuring off (set_measuring), so no step ever waits for a measurement: a bucket it did
// not measure runs the heuristic's first choice.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dpinfer::kernels {

class GemmPlanner {
 public:
  // `workspace` (not owned, bytes long, 256-byte aligned) is cuBLASLt's scratch for every GEMM
  // this planner runs; the planner's calls must be ordered on one stream at a time. It measures
  // new shape classes until set_measuring(false).
  static absl::StatusOr<std::unique_ptr<GemmPlanner>> Create(void* workspace, size_t bytes);
  ~GemmPlanner();
  GemmPlanner(const GemmPlanner&) = delete;
  GemmPlanner& operator=(const GemmPlanner&) = delete;

  // Row-major y [m, n] = x [m, k] @ w [n, k]^T, bf16 inputs, fp32 accumulation; y is fp32 or,
  // with y_bf16, bf16 (one rounding at the end). As GemmBf16, through this shape's plan.
  absl::Status Run(cudaStream_t stream, const __nv_bfloat16* x, const __nv_bfloat16* w, void* y,
                   bool y_bf16, int64_t m, int64_t n, int64_t k);

  // For benchmarks: the mean time of each of the heuristic's candidates for this exact shape
  // (index 0 is the heuristic's first choice; a candidate that fails to run gets a negative
  // time), over `reps` timed runs after one untimed one. Overwrites y; synchronizes the stream.
  absl::StatusOr<std::vector<double>> TimeCandidates(cudaStream_t stream, const __nv_bfloat16* x,
                                                     const __nv_bfloat16* w, void* y, bool y_bf16,
                                                     int64_t m, int64_t n, int64_t k, int reps);

  // Whether a shape class with no recorded plan is measured on first use (the default) or runs
  // the heuristic's first choice.
  void set_measuring(bool on) { measuring_ = on; }

  // Shape classes measured so far by this planner (not counting other planners' work).
  int64_t plans_measured() const { return plans_measured_; }

  // The bucket of m: 8, 16, then multiples of 32 up to 512, then powers of two.
  static int64_t MBucket(int64_t m);

 private:
  struct Shape;  // descriptors of one exact (m, n, k, type) plus its algorithm
  GemmPlanner(cublasLtHandle_t handle, void* workspace, size_t bytes);
  absl::StatusOr<Shape*> Find(cudaStream_t stream, const __nv_bfloat16* x, const __nv_bfloat16* w,
                              void* y, bool y_bf16, int64_t m, int64_t n, int64_t k);
  absl::StatusOr<std::vector<cublasLtMatmulHeuristicResult_t>> Candidates(const Shape& s,
                                                                          int max_count) const;
  absl::Status Launch(cudaStream_t stream, const Shape& s, const cublasLtMatmulAlgo_t& algo,
                      const __nv_bfloat16* x, const __nv_bfloat16* w, void* y) const;
  absl::StatusOr<std::vector<double>> Time(cudaStream_t stream, const Shape& s,
                                           const std::vector<cublasLtMatmulHeuristicResult_t>& c,
                                           const __nv_bfloat16* x, const __nv_bfloat16* w,
                                           void* y, int reps) const;

  cublasLtHandle_t handle_;
  void* workspace_;
  size_t workspace_bytes_;
  bool measuring_ = true;
  int device_ = 0;
  std::map<std::tuple<int64_t, int64_t, int64_t, bool>, std::unique_ptr<Shape>> shapes_;
  int64_t plans_measured_ = 0;
};

}  // namespace dpinfer::kernels
