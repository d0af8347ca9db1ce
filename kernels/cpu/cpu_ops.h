// The CPU reference implementations of the ops in kernels/backend.h, as free functions (one op
// family per .cc file). They are written to be read: fp32 throughout, straightforward loops, with
// OpenMP over independent outputs (output features, tokens, heads). CUDA kernels are tested
// against these.
#pragma once

#include "kernels/backend.h"

namespace dpinfer::kernels::cpu {

void Linear(const LinearArgs& args);                  // linear.cc
void RmsNorm(const RmsNormArgs& args);                // rms_norm.cc
void Rope(const RopeArgs& args);                      // rope.cc
void SiluMul(const SiluMulArgs& args);                // elementwise.cc
void Add(const AddArgs& args);                        // elementwise.cc
void Embedding(const EmbeddingArgs& args);            // embedding.cc
void Softmax(const SoftmaxArgs& args);                // softmax.cc
void CacheWrite(const CacheWriteArgs& args);          // paged_attention.cc
void PagedAttention(const PagedAttentionArgs& args);  // paged_attention.cc

// The dot product every CPU op uses, in a fixed order: 8 interleaved partial sums over k (so the
// compiler can keep them in one SIMD register) folded pairwise, then the tail. The order depends
// only on k, which is what makes Linear batch-invariant.
inline float Dot(const float* a, const float* b, int64_t k) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  float tail = 0.0f;
  for (; i < k; ++i) tail += a[i] * b[i];
  return (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) + tail;
}

}  // namespace dpinfer::kernels::cpu
