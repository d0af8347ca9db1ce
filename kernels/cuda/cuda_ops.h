// Host launchers of the CUDA kernels, one op family per .cu file, mirroring kernels/cpu/cpu_ops.h.
// Each takes its stream first, enqueues its kernel(s) and returns the launch's cudaError_t
// (cudaErrorInvalidValue for arguments the kernel cannot handle); nothing here synchronizes. This
// header stays free of absl so nvcc never parses it: cuda_backend.cc turns the codes into Status.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/backend.h"

namespace dpinfer::kernels {

// residual = residual + x * x_scale; out = rmsnorm(residual) * w. The pre-norm transformer's
// "add the block's output, normalize for the next block" in one pass over the row. out may alias x.
struct FusedAddRmsNormArgs {
  float* residual = nullptr;  // [m, d], updated in place
  const float* x = nullptr;   // [m, d]
  const float* w = nullptr;   // [d]
  float* out = nullptr;       // [m, d]
  int64_t m = 0;
  int64_t d = 0;
  float eps = 1e-6f;
  float x_scale = 1.0f;  // GraniteMoE's residual_multiplier
};

// Per-row sampling of the next token, the algorithm of worker/engine/sampler.cc on the GPU:
// temperature 0 or top_k 1 -> argmax; otherwise candidates sorted by logit (ties by index),
// top-k, softmax of logits / temperature in double, top-p prefix, one draw of
// CounterUniform(seed, step). All pointers are device pointers.
struct SampleArgs {
  const float* logits = nullptr;       // [num_rows, vocab]
  const float* temperature = nullptr;  // [num_rows]; 0 -> greedy
  const int32_t* top_k = nullptr;      // [num_rows]; <= 0 -> all tokens
  const float* top_p = nullptr;        // [num_rows]; (0, 1]
  const uint64_t* seed = nullptr;      // [num_rows]
  const uint64_t* step = nullptr;      // [num_rows]; tokens the request has generated so far
  int32_t* tokens = nullptr;           // [num_rows] out
  int64_t num_rows = 0;
  int64_t vocab = 0;
};

// out[t, :] = sum over j < top_k of expert_out[rows[t, j], :] * weights[t, j], summed in j order:
// the mixture-of-experts combine. Callers list each token's slots in ascending expert order, the
// order transformers' index_add loop adds them in (and the CPU model's), so the sums agree.
struct MoeCombineArgs {
  const float* expert_out = nullptr;  // [num_rows, hidden], the experts' outputs, grouped by expert
  const int32_t* rows = nullptr;      // [num_tokens, top_k] row of expert_out for each slot
  const float* weights = nullptr;     // [num_tokens, top_k] routing weight of each slot
  float* out = nullptr;               // [num_tokens, hidden]; must not alias expert_out
  int64_t num_tokens = 0;
  int64_t top_k = 0;
  int64_t hidden = 0;
};

namespace gpu {

// rms_norm.cu
cudaError_t RmsNorm(cudaStream_t stream, const RmsNormArgs& a);
cudaError_t FusedAddRmsNorm(cudaStream_t stream, const FusedAddRmsNormArgs& a);

// rope.cu. `inv_freq` is a device array [head_dim / 2]: a.inv_freq when given, else theta's table.
cudaError_t Rope(cudaStream_t stream, const RopeArgs& a, const float* inv_freq);

// activation.cu
cudaError_t SiluMul(cudaStream_t stream, const SiluMulArgs& a);

// embedding.cu
cudaError_t Embedding(cudaStream_t stream, const EmbeddingArgs& a);

// elementwise.cu. AddBias: y[i, j] += bias[j] for y [m, n] (Linear's bias after the GEMM).
cudaError_t Add(cudaStream_t stream, const AddArgs& a);
cudaError_t AddBias(cudaStream_t stream, float* y, const float* bias, int64_t m, int64_t n);
cudaError_t Fp32ToBf16(cudaStream_t stream, const float* x, __nv_bfloat16* y, int64_t n);
cudaError_t Bf16ToFp32(cudaStream_t stream, const __nv_bfloat16* x, float* y, int64_t n);
// x[i] /= divisor in place (GraniteMoE's logits scaling: a division, as HF does it).
cudaError_t DivideScalar(cudaStream_t stream, float* x, int64_t n, float divisor);

// softmax.cu
cudaError_t Softmax(cudaStream_t stream, const SoftmaxArgs& a);

// paged_attention.cu
cudaError_t CacheWrite(cudaStream_t stream, const CacheWriteArgs& a);
cudaError_t PagedAttention(cudaStream_t stream, const PagedAttentionArgs& a);

// moe.cu
cudaError_t MoeCombine(cudaStream_t stream, const MoeCombineArgs& a);

// sampling.cu. Argmax: tokens[r] = index of the largest logit of row r (lowest among ties).
cudaError_t Argmax(cudaStream_t stream, const float* logits, int64_t num_rows, int64_t vocab,
                   int32_t* tokens);
cudaError_t Sample(cudaStream_t stream, const SampleArgs& a);

}  // namespace gpu
}  // namespace dpinfer::kernels
