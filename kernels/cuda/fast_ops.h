// Launchers of the bf16 serving path's kernels: what CudaLlamaModel runs in bfloat16 mode, where
// activations between GEMMs are bf16, the KV cache is bf16 and the work of a step is laid out so a
// decode step can be captured in a CUDA graph (grids depend only on sizes fixed per graph; every
// per-step value is read from device memory). Like cuda_ops.h: stream first, returns the launch's
// cudaError_t (cudaErrorInvalidValue for arguments a kernel cannot handle), absl-free, never
// synchronizes. Each op has a CPU twin that the parity tests compare it with (named per op).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace dpinfer::kernels::gpu {

// The current device's multiprocessor count, for sizing grids; cached per device after the first
// query (a device attribute, not stream work: legal while a graph is being captured).
cudaError_t SmCount(int* count);

// ---------------------------------------------------------------------------------------------
// Normalization and activation (fast_norm.cu). Twins: cpu RmsNorm / Add+RmsNorm / SiluMul with
// the output rounded to bf16.

// out = bf16(rmsnorm(x) * w), per row of x [m, d].
cudaError_t RmsNormToBf16(cudaStream_t stream, const float* x, const float* w, __nv_bfloat16* out,
                          int64_t m, int64_t d, float eps);
// residual += x * x_scale; out = bf16(rmsnorm(residual) * w).
cudaError_t AddRmsNormToBf16(cudaStream_t stream, float* residual, const float* x, const float* w,
                             __nv_bfloat16* out, int64_t m, int64_t d, float eps, float x_scale);
// out [m, n] = bf16(silu(gate_up[:, :n]) * gate_up[:, n:]) for gate_up [m, 2n] (the fused gate/up
// GEMM's bf16 output, gate columns first), computed in fp32.
cudaError_t SiluMulFusedToBf16(cudaStream_t stream, const __nv_bfloat16* gate_up,
                               __nv_bfloat16* out, int64_t m, int64_t n);

// out [num_tokens, hidden] = float(table[ids[i]]) * scale: the embedding lookup from a bf16
// table (the bf16 model keeps one bf16 copy of the embeddings, shared with a tied lm_head). Ids
// are validated on the host before they get here.
cudaError_t EmbeddingBf16(cudaStream_t stream, const int32_t* ids, const __nv_bfloat16* table,
                          float* out, int64_t num_tokens, int64_t hidden, float scale);

// ---------------------------------------------------------------------------------------------
// Rotary embedding + KV cache write (attention_bf16.cu). Twin: cpu Rope then CacheWrite, with
// q, k and v rounded to bf16.
struct RopeQkvArgs {
  const float* qkv = nullptr;          // [num_tokens, (num_heads + 2 * num_kv_heads) * head_dim]:
                                       // q heads, then k heads, then v heads (the fused GEMM's out)
  const int32_t* positions = nullptr;  // [num_tokens]
  const int32_t* slot_mapping = nullptr;  // [num_tokens]; < 0: a padding token, K/V not stored
  const float* inv_freq = nullptr;        // [head_dim / 2]
  __nv_bfloat16* q = nullptr;             // [num_tokens, num_heads, head_dim] out, rotated
  __nv_bfloat16* k_cache = nullptr;  // [num_blocks, block_size, num_kv_heads, head_dim] (rotated k)
  __nv_bfloat16* v_cache = nullptr;  // same layout
  int64_t num_tokens = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // even, <= 256
};
cudaError_t RopeQkvToCache(cudaStream_t stream, const RopeQkvArgs& a);

// ---------------------------------------------------------------------------------------------
// Paged attention over the bf16 cache (attention_bf16.cu). Twin: cpu PagedAttention on the same
// bf16-rounded q and cache, fp32 math.
//
// The batch is a list of sequences, each with a contiguous run of query rows (a prefill chunk or a
// single decode token) whose positions are consecutive and end at kv_len - 1: query row
// q_start[s] + i of sequence s has position kv_len[s] - (q_start[s+1] - q_start[s]) + i and attends
// causally to keys [0, that position]. K/V of the step's own tokens are already in the cache
// (RopeQkvToCache runs first). Work is a list of tiles so that a batch mixing one long prefill and
// many decodes launches no empty blocks: tile j covers query rows
// [tile_row[j], min(tile_row[j] + kAttentionTileRows, q_start[tile_seq[j] + 1])) of sequence
// tile_seq[j]. Build it with AppendAttentionTiles below.
//
// Long contexts are split over the KV length: with num_splits > 1 each tile's keys are cut into
// chunks of kv_chunk tokens, every chunk is processed by its own block into `partials`, and a
// merge pass writes `out`. Splits past a sequence's kv_len contribute nothing, so a CUDA graph may
// fix num_splits and kv_chunk for the largest context it serves.
constexpr int kAttentionTileRows = 16;  // query tokens per tile
// Host side: appends the tiles of sequence `seq`, whose query rows are [start, start + rows).
inline void AppendAttentionTiles(int32_t seq, int32_t start, int32_t rows,
                                 std::vector<int32_t>* tile_seq, std::vector<int32_t>* tile_row) {
  for (int32_t r = 0; r < rows; r += kAttentionTileRows) {
    tile_seq->push_back(seq);
    tile_row->push_back(start + r);
  }
}
struct AttentionArgs {
  const __nv_bfloat16* q = nullptr;        // [num_rows, num_heads, head_dim]
  const __nv_bfloat16* k_cache = nullptr;  // [num_blocks, block_size, num_kv_heads, head_dim]
  const __nv_bfloat16* v_cache = nullptr;
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  const int32_t* q_start = nullptr;       // [num_seqs + 1], q_start[0] = 0
  const int32_t* kv_len = nullptr;        // [num_seqs]; 0 for a padding sequence (output zeros)
  const int32_t* tile_seq = nullptr;      // [num_tiles]
  const int32_t* tile_row = nullptr;      // [num_tiles]
  __nv_bfloat16* out = nullptr;           // [num_rows, num_heads, head_dim]
  float* partials = nullptr;              // AttentionPartialsFloats(...) floats when num_splits > 1
  int64_t num_tiles = 0;
  int64_t num_rows = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // divides num_heads
  int64_t head_dim = 0;      // 64, 128 (fast) or any multiple of 8 <= 256
  int64_t block_size = 0;    // KV cache block size in tokens
  int64_t max_blocks_per_seq = 0;
  int64_t num_splits = 1;  // >= 1
  int64_t kv_chunk = 0;    // tokens per split when num_splits > 1 (a multiple of 64)
  float scale = 1.0f;
};
// Floats of scratch `partials` needs for these sizes.
int64_t AttentionPartialsFloats(int64_t num_tiles, int64_t num_heads, int64_t head_dim,
                                int64_t num_splits);
cudaError_t Attention(cudaStream_t stream, const AttentionArgs& a);
// Pure decode batches (one query token per tile, group <= 16, head_dim <= 128) take a decode
// kernel with one block per (sequence, group of kv heads, split). For tests and benchmarks, the kv
// heads per block of the launches that follow (process-wide): 0 (the default) lets Attention
// choose, 1/2/4/8 force it (capped at the model's), a negative value sends decode batches to the
// tile kernel like any other.
void SetAttentionDecodeHeadsPerBlock(int heads);

// ---------------------------------------------------------------------------------------------
// Mixture of experts on the device (moe_grouped.cu). Twins: engine::RouteTokens for the routing,
// cpu Linear per expert for the grouped GEMM.

// Routing of t tokens over E experts, top k each, fully on the device.
//  - softmax_first (Mixtral): probabilities = softmax(logits); take the top k; renormalise them.
//  - otherwise (GraniteMoE): take the top k logits; weights = softmax over those k.
// Ties go to the lower expert index (torch.topk). Outputs: the routed rows sorted by expert
// (ascending), within an expert by token (ascending); expert_offsets[e]..expert_offsets[e+1] are
// expert e's rows; sorted_token[r] is the token of row r; token_rows[t * k + j] and
// token_weights[t * k + j] are the row and weight of token t's j-th slot, slots in ascending expert
// order (the order MoeCombine adds them in).
struct MoeRouteArgs {
  const float* router_logits = nullptr;  // [num_tokens, num_experts]
  int32_t* expert_offsets = nullptr;     // [num_experts + 1] out
  int32_t* sorted_token = nullptr;       // [num_tokens * top_k] out
  int32_t* token_rows = nullptr;         // [num_tokens * top_k] out
  float* token_weights = nullptr;        // [num_tokens * top_k] out
  int32_t* scratch = nullptr;            // MoeRouteScratchInts(...) ints
  int64_t num_tokens = 0;
  int64_t num_experts = 0;  // <= 256
  int64_t top_k = 0;        // <= num_experts, <= 16
  bool softmax_first = false;
};
int64_t MoeRouteScratchInts(int64_t num_tokens, int64_t num_experts, int64_t top_k);
cudaError_t MoeRoute(cudaStream_t stream, const MoeRouteArgs& a);

// Grouped GEMM over rows sorted by expert: for each expert e and each row r in
// [expert_offsets[e], expert_offsets[e+1]): y[r, :] = x[row_index(r), :] @ w[e]^T, where
// row_index(r) = gather[r] when gather is given (e.g. sorted_token: rows read straight from the
// token activations) and r otherwise. bf16 inputs, fp32 accumulation on tensor cores. The grid is
// sized by max_rows (an upper bound on expert_offsets[num_experts], e.g. num_tokens * top_k), so
// it needs no host copy of the offsets. x, w and y must be 16-byte aligned (cudaErrorInvalidValue
// otherwise). The first call on a device sets the kernel's shared-memory attribute: make it
// outside a stream capture.
struct GroupedGemmArgs {
  const __nv_bfloat16* x = nullptr;         // [*, k]
  const int32_t* gather = nullptr;          // [max_rows] or nullptr
  const __nv_bfloat16* w = nullptr;         // [num_experts, n, k] (nn.Linear layout per expert)
  const int32_t* expert_offsets = nullptr;  // [num_experts + 1], device
  void* y = nullptr;                        // [max_rows, n], fp32 or (y_bf16) bf16
  bool y_bf16 = false;
  int64_t max_rows = 0;
  int64_t num_experts = 0;
  int64_t n = 0;  // multiple of 8
  int64_t k = 0;  // multiple of 8
};
cudaError_t GroupedGemm(cudaStream_t stream, const GroupedGemmArgs& a);

// ---------------------------------------------------------------------------------------------
// Sampling without sorting (sampling.cu). Rows with temperature > 0, top_k <= 0 (or >= vocab) and
// top_p == 1 draw by the Gumbel-max trick: argmax over i of logits[i] / temperature + g(seed,
// step, i), g = -log(-log(u)) with u = CounterUniform-style hashes of (seed, step, i): the exact
// softmax distribution, one pass over the row, no sort. Other rows are left to Sample (sorted
// path). Twin: engine::SampleToken, which uses the same rule for these rows.
struct SampleFastArgs {
  const float* logits = nullptr;       // [num_rows, vocab]
  const float* temperature = nullptr;  // [num_rows]; 0 -> greedy argmax
  const int32_t* top_k = nullptr;      // [num_rows]
  const float* top_p = nullptr;        // [num_rows]
  const uint64_t* seed = nullptr;      // [num_rows]
  const uint64_t* step = nullptr;      // [num_rows]
  int32_t* tokens = nullptr;           // [num_rows] out; rows needing the sorted path get -1
  int64_t num_rows = 0;
  int64_t vocab = 0;
};
cudaError_t SampleFast(cudaStream_t stream, const SampleFastArgs& a);

}  // namespace dpinfer::kernels::gpu
