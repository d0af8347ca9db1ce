// The op interface every compute backend implements: plain argument structs with commented shapes
// (row-major, fp32) and one abstract Backend whose methods take them. The CPU backend
// (kernels/cpu/) is the readable reference; a CUDA backend implements the same structs with
// device pointers, and a parity test runs each of its ops against the CPU op on random inputs.
// Pointers are borrowed for the duration of the call; a backend owns no tensor memory here.
#pragma once

#include <cstdint>
#include <memory>

namespace dpinfer::kernels {

// y = x @ w^T (+ bias). `w` is in HF nn.Linear layout [out, in].
// Each y[i, j] is accumulated in an order that depends only on k, never on m or on the row's
// place in the batch, so a sequence's results are bit-identical whatever it is batched with.
struct LinearArgs {
  const float* x = nullptr;     // [m, k]
  const float* w = nullptr;     // [n, k]
  const float* bias = nullptr;  // [n] or nullptr
  float* y = nullptr;           // [m, n]; must not alias x
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
};

// y = x * rsqrt(mean(x^2) + eps) * w, per row (HF LlamaRMSNorm, fp32). y may alias x.
struct RmsNormArgs {
  const float* x = nullptr;  // [m, d]
  const float* w = nullptr;  // [d]
  float* y = nullptr;        // [m, d]
  int64_t m = 0;
  int64_t d = 0;
  float eps = 1e-6f;
};

// In-place rotary embedding, HF rotate-half convention: for i < head_dim/2 the pair
// (x[i], x[i + head_dim/2]) is rotated by the angle position * inv_freq[i], where inv_freq is
// given (scaled rope: Llama 3, linear) or else theta^(-2i/head_dim).
struct RopeArgs {
  float* q = nullptr;                  // [num_tokens, num_heads, head_dim]
  float* k = nullptr;                  // [num_tokens, num_kv_heads, head_dim]
  const int32_t* positions = nullptr;  // [num_tokens]
  int64_t num_tokens = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // even
  float theta = 10000.0f;
  const float* inv_freq = nullptr;  // [head_dim / 2] or nullptr (then derived from theta)
};

// out = silu(gate) * up, elementwise (the Llama MLP's activation). out may alias gate or up.
struct SiluMulArgs {
  const float* gate = nullptr;  // [m, n]
  const float* up = nullptr;    // [m, n]
  float* out = nullptr;         // [m, n]
  int64_t m = 0;
  int64_t n = 0;
};

// out[i] = table[ids[i]] * scale. Ids are validated before they reach a kernel (CHECKed here).
struct EmbeddingArgs {
  const int32_t* ids = nullptr;  // [num_tokens]
  const float* table = nullptr;  // [vocab, hidden]
  float* out = nullptr;          // [num_tokens, hidden]
  int64_t num_tokens = 0;
  int64_t vocab = 0;
  int64_t hidden = 0;
  float scale = 1.0f;  // GraniteMoE's embedding_multiplier
};

// y = a + b * b_scale, elementwise (residual connections; b_scale is GraniteMoE's
// residual_multiplier). y may alias a or b.
struct AddArgs {
  const float* a = nullptr;  // [n]
  const float* b = nullptr;  // [n]
  float* y = nullptr;        // [n]
  int64_t n = 0;
  float b_scale = 1.0f;
};

// Row-wise softmax, max-subtracted for stability. y may alias x.
struct SoftmaxArgs {
  const float* x = nullptr;  // [m, n]
  float* y = nullptr;        // [m, n]
  int64_t m = 0;
  int64_t n = 0;
};

// Writes this step's keys and values into the paged cache. A slot is
// block_id * block_size + offset_in_block. Cache layout: [num_blocks, block_size, num_kv_heads,
// head_dim], so one token's heads are contiguous and a block is one contiguous chunk.
struct CacheWriteArgs {
  const float* k = nullptr;               // [num_tokens, num_kv_heads, head_dim]
  const float* v = nullptr;               // [num_tokens, num_kv_heads, head_dim]
  float* k_cache = nullptr;               // [num_blocks, block_size, num_kv_heads, head_dim]
  float* v_cache = nullptr;               // [num_blocks, block_size, num_kv_heads, head_dim]
  const int32_t* slot_mapping = nullptr;  // [num_tokens]
  int64_t num_tokens = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// Causal grouped-query attention over the paged cache, one query token at a time: token t of
// sequence s attends to the cached keys at positions [0, positions[t]] of s (its own key
// included, so CacheWrite for the step must run first). Query head h reads kv head
// h / (num_heads / num_kv_heads). Handles prefill chunks and decodes in one flat batch.
struct PagedAttentionArgs {
  const float* q = nullptr;               // [num_tokens, num_heads, head_dim]
  const float* k_cache = nullptr;         // [num_blocks, block_size, num_kv_heads, head_dim]
  const float* v_cache = nullptr;         // [num_blocks, block_size, num_kv_heads, head_dim]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  const int32_t* token_seq = nullptr;     // [num_tokens] row of block_tables for each token
  const int32_t* positions = nullptr;     // [num_tokens]
  float* out = nullptr;                   // [num_tokens, num_heads, head_dim]
  int64_t num_tokens = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // divides num_heads
  int64_t head_dim = 0;
  int64_t block_size = 0;
  int64_t max_blocks_per_seq = 0;
  float scale = 1.0f;  // usually 1/sqrt(head_dim); GraniteMoE: attention_multiplier
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  virtual void Linear(const LinearArgs& args) = 0;
  virtual void RmsNorm(const RmsNormArgs& args) = 0;
  virtual void Rope(const RopeArgs& args) = 0;
  virtual void SiluMul(const SiluMulArgs& args) = 0;
  virtual void Embedding(const EmbeddingArgs& args) = 0;
  virtual void Add(const AddArgs& args) = 0;
  virtual void Softmax(const SoftmaxArgs& args) = 0;
  virtual void CacheWrite(const CacheWriteArgs& args) = 0;
  virtual void PagedAttention(const PagedAttentionArgs& args) = 0;
};

// The CPU reference backend. `num_threads` > 0 fixes the OpenMP team size of its ops (the ICV is
// set on the calling thread before each op, so two engines on different threads don't clash);
// 0 keeps the OpenMP default (all cores).
std::unique_ptr<Backend> NewCpuBackend(int num_threads = 0);

}  // namespace dpinfer::kernels
