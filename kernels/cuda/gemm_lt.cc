// GemmPlanner (gemm_lt.h). The GEMM is the same as GemmBf16's: row-major y = x w^T read
// column-major as y^T [n, m] = (w [n, k] as k x n)^T @ (x as k x m), so A = w transposed, B = x.
#include "kernels/cuda/gemm_lt.h"

#include <algorithm>
#include <climits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status.h"
#include "kernels/cuda/cuda_check.h"

namespace dpinfer::kernels {
namespace {

// How many of the heuristic's candidates are timed, and how much faster than the heuristic's own
// first choice another must be to replace it (so timing noise does not flip plans between runs).
constexpr int kMaxCandidates = 8;
constexpr double kMinGain = 0.03;
constexpr int kTuneReps = 3;
// Buffers may start anywhere a bf16 tensor-core load can (16 bytes): weights are sub-allocated.
constexpr uint32_t kAlignment = 16;

// The process-wide choices: (device, m bucket, n, k, y type) -> algorithm.
using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, bool>;

absl::Mutex& PlanMutex() {
  static absl::Mutex mu(absl::kConstInit);
  return mu;
}
std::map<PlanKey, cublasLtMatmulAlgo_t>& Plans() ABSL_EXCLUSIVE_LOCKS_REQUIRED(PlanMutex()) {
  static auto* plans = new std::map<PlanKey, cublasLtMatmulAlgo_t>();
  return *plans;
}

}  // namespace

struct GemmPlanner::Shape {
  int64_t m = 0, n = 0, k = 0;
  bool y_bf16 = false;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool settled = false;  // algo is the bucket's recorded choice (else a stand-in from a capture)
  ~Shape() {
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

int64_t GemmPlanner::MBucket(int64_t m) {
  if (m <= 8) return 8;
  if (m <= 16) return 16;
  if (m <= 512) return (m + 31) / 32 * 32;
  int64_t b = 1024;
  while (b < m) b *= 2;
  return b;
}

absl::StatusOr<std::unique_ptr<GemmPlanner>> GemmPlanner::Create(void* workspace, size_t bytes) {
  cublasLtHandle_t handle = nullptr;
  CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle));
  auto planner = std::unique_ptr<GemmPlanner>(new GemmPlanner(handle, workspace, bytes));
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&planner->device_));
  return planner;
}

GemmPlanner::GemmPlanner(cublasLtHandle_t handle, void* workspace, size_t bytes)
    : handle_(handle), workspace_(workspace), workspace_bytes_(bytes) {}

GemmPlanner::~GemmPlanner() {
  shapes_.clear();
  cublasLtDestroy(handle_);
}

absl::StatusOr<std::vector<cublasLtMatmulHeuristicResult_t>> GemmPlanner::Candidates(
    const Shape& s, int max_count) const {
  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(max_count));
  int found = 0;
  absl::Status st = CUBLAS_STATUS(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_, sizeof(workspace_bytes_)));
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    if (st.ok()) {
      st = CUBLAS_STATUS(
          cublasLtMatmulPreferenceSetAttribute(pref, attr, &kAlignment, sizeof(kAlignment)));
    }
  }
  if (st.ok()) {
    st = CUBLAS_STATUS(cublasLtMatmulAlgoGetHeuristic(handle_, s.desc, s.a, s.b, s.c, s.c, pref,
                                                      max_count, results.data(), &found));
  }
  cublasLtMatmulPreferenceDestroy(pref);
  RETURN_IF_ERROR(st);
  results.resize(static_cast<size_t>(found));
  std::erase_if(results, [](const cublasLtMatmulHeuristicResult_t& r) {
    return r.state != CUBLAS_STATUS_SUCCESS;
  });
  if (results.empty()) {
    return absl::InternalError(absl::StrCat("cuBLASLt has no bf16 algorithm for m=", s.m,
                                            " n=", s.n, " k=", s.k));
  }
  return results;
}

absl::Status GemmPlanner::Launch(cudaStream_t stream, const Shape& s,
                                 const cublasLtMatmulAlgo_t& algo, const __nv_bfloat16* x,
                                 const __nv_bfloat16* w, void* y) const {
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_, s.desc, &alpha, w, s.a, x, s.b, &beta, y, s.c, y,
                                        s.c, &algo, workspace_, workspace_bytes_, stream));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> GemmPlanner::Time(
    cudaStream_t stream, const Shape& s, const std::vector<cublasLtMatmulHeuristicResult_t>& c,
    const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, int reps) const {
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  absl::Status st = CUDA_STATUS(cudaEventCreate(&stop));
  std::vector<double> ms(c.size(), -1.0);
  for (size_t i = 0; st.ok() && i < c.size(); ++i) {
    // A candidate that cannot run this shape is skipped, not fatal.
    if (!Launch(stream, s, c[i].algo, x, w, y).ok()) continue;
    st = CUDA_STATUS(cudaEventRecord(start, stream));
    for (int r = 0; st.ok() && r < reps; ++r) st = Launch(stream, s, c[i].algo, x, w, y);
    if (st.ok()) st = CUDA_STATUS(cudaEventRecord(stop, stream));
    if (st.ok()) st = CUDA_STATUS(cudaEventSynchronize(stop));
    float elapsed = 0.0f;
    if (st.ok()) st = CUDA_STATUS(cudaEventElapsedTime(&elapsed, start, stop));
    if (st.ok()) ms[i] = elapsed / reps;
  }
  cudaEventDestroy(stop);
  cudaEventDestroy(start);
  RETURN_IF_ERROR(st);
  return ms;
}

absl::StatusOr<GemmPlanner::Shape*> GemmPlanner::Find(cudaStream_t stream, const __nv_bfloat16* x,
                                                      const __nv_bfloat16* w, void* y,
                                                      bool y_bf16, int64_t m, int64_t n,
                                                      int64_t k) {
  const auto key = std::make_tuple(m, n, k, y_bf16);
  auto it = shapes_.find(key);
  if (it == shapes_.end()) {
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX) {
      return absl::InvalidArgumentError("GEMM dimensions out of cuBLAS's int range");
    }
    auto s = std::make_unique<Shape>();
    s->m = m;
    s->n = n;
    s->k = k;
    s->y_bf16 = y_bf16;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&s->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(s->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                          &trans_a, sizeof(trans_a)));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(s->desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                          &trans_b, sizeof(trans_b)));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&s->a, CUDA_R_16BF, k, n, k));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&s->b, CUDA_R_16BF, k, m, k));
    CUBLAS_RETURN_IF_ERROR(
        cublasLtMatrixLayoutCreate(&s->c, y_bf16 ? CUDA_R_16BF : CUDA_R_32F, n, m, n));
    it = shapes_.emplace(key, std::move(s)).first;
  }
  Shape* s = it->second.get();
  if (s->settled) return s;

  // The bucket's recorded choice, if cuBLASLt takes it for this m.
  const PlanKey pk{device_, MBucket(m), n, k, y_bf16};
  {
    absl::MutexLock lock(&PlanMutex());
    if (auto p = Plans().find(pk); p != Plans().end()) {
      cublasLtMatmulHeuristicResult_t check{};
      if (cublasLtMatmulAlgoCheck(handle_, s->desc, s->a, s->b, s->c, s->c, &p->second, &check) ==
              CUBLAS_STATUS_SUCCESS &&
          check.workspaceSize <= workspace_bytes_) {
        s->algo = p->second;
        s->settled = true;
        return s;
      }
    }
  }
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
  const bool capturing = capture != cudaStreamCaptureStatusNone;
  const bool measure = measuring_ && !capturing;
  ASSIGN_OR_RETURN(auto cands, Candidates(*s, measure ? kMaxCandidates : 1));
  s->algo = cands[0].algo;
  // Settled unless a capture kept it from being measured; only measured choices are recorded for
  // the process.
  s->settled = measure || !measuring_;
  if (!measure) return s;
  ASSIGN_OR_RETURN(std::vector<double> ms, Time(stream, *s, cands, x, w, y, kTuneReps));
  size_t best = 0;
  for (size_t i = 1; i < ms.size(); ++i) {
    if (ms[i] > 0 && (ms[best] <= 0 || ms[i] < ms[best] * (1.0 - kMinGain))) best = i;
  }
  s->algo = cands[best].algo;
  ++plans_measured_;
  // The first planner to record a bucket's choice sets it for the process. (An m whose bucket was
  // recorded at another m but that rejects that algorithm keeps its own choice.)
  absl::MutexLock lock(&PlanMutex());
  auto [p, inserted] = Plans().try_emplace(pk, s->algo);
  if (!inserted) {
    cublasLtMatmulHeuristicResult_t check{};
    if (cublasLtMatmulAlgoCheck(handle_, s->desc, s->a, s->b, s->c, s->c, &p->second, &check) ==
            CUBLAS_STATUS_SUCCESS &&
        check.workspaceSize <= workspace_bytes_) {
      s->algo = p->second;
    }
  }
  return s;
}

absl::Status GemmPlanner::Run(cudaStream_t stream, const __nv_bfloat16* x, const __nv_bfloat16* w,
                              void* y, bool y_bf16, int64_t m, int64_t n, int64_t k) {
  if (x == nullptr || w == nullptr || y == nullptr) {
    return absl::InvalidArgumentError("GemmPlanner::Run: null pointer");
  }
  if (m < 0 || n < 0 || k < 0) return absl::InvalidArgumentError("GEMM dimensions < 0");
  if (m == 0 || n == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(Shape * s, Find(stream, x, w, y, y_bf16, m, n, k));
  return Launch(stream, *s, s->algo, x, w, y);
}

absl::StatusOr<std::vector<double>> GemmPlanner::TimeCandidates(
    cudaStream_t stream, const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, bool y_bf16,
    int64_t m, int64_t n, int64_t k, int reps) {
  if (m <= 0 || n <= 0 || k <= 0 || reps <= 0) {
    return absl::InvalidArgumentError("TimeCandidates: sizes and reps must be > 0");
  }
  ASSIGN_OR_RETURN(Shape * s, Find(stream, x, w, y, y_bf16, m, n, k));
  ASSIGN_OR_RETURN(auto cands, Candidates(*s, kMaxCandidates));
  return Time(stream, *s, cands, x, w, y, reps);
}

}  // namespace dpinfer::kernels
