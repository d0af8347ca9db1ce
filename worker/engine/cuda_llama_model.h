// The Llama-shaped decoder on one GPU: LlamaModel's forward pass (same families, same math, same
// ForwardBatch) with the weights, activations and paged KV cache in device memory. Two modes:
//  - fp32, the exact mode (checked against transformers to 1e-4): LlamaModel op for op through
//    the CUDA backend, fp32 KV cache, MoE routed on the host.
//  - bf16, the serving path: bf16 weights (fp32 checkpoints converted at load) with q/k/v and
//    gate/up fused into one GEMM each, bf16 activations between GEMMs (fp32 accumulation, fp32
//    residual stream and norms), bf16 KV cache, tensor-core paged attention split over the KV
//    length when the batch is small, MoE routed and run as grouped GEMMs on the device, and
//    sampling on the device. A step's inputs travel in one packed host-to-device copy and its
//    tokens come back in one small copy; decode steps (one token per sequence) replay CUDA graphs
//    captured per batch-size bucket.
// Built only where the CUDA backend is (DPINFER_HAVE_CUDA).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/safetensors.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/gemm_lt.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/model_config.h"

namespace dpinfer::engine {

class StepProfiler;

enum class WeightDType { kFloat32, kBfloat16 };

// The paged KV cache's storage on the device, KvCache's layout: per layer K and V of
// [num_blocks, block_size, num_kv_heads, head_dim], fp32 for the fp32 model, bf16 for the bf16
// model (CudaLlamaModel::kv_dtype()). Block allocation is the caller's (the slots and block
// tables arrive in each ForwardBatch).
class DeviceKvCache {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceKvCache>> Create(
      int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t num_kv_heads,
      int64_t head_dim, WeightDType dtype = WeightDType::kFloat32);
  // Bytes one token takes over all layers, K and V.
  static int64_t BytesPerToken(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim,
                               WeightDType dtype);
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  WeightDType dtype() const { return dtype_; }
  float* k(int64_t layer) { return k_[layer].data(); }
  float* v(int64_t layer) { return v_[layer].data(); }
  __nv_bfloat16* k_bf16(int64_t layer) { return k_bf16_[layer].data(); }
  __nv_bfloat16* v_bf16(int64_t layer) { return v_bf16_[layer].data(); }

 private:
  DeviceKvCache() = default;
  int64_t num_blocks_ = 0;
  int64_t block_size_ = 0;
  WeightDType dtype_ = WeightDType::kFloat32;
  std::vector<kernels::DeviceBuffer<float>> k_, v_;
  std::vector<kernels::DeviceBuffer<__nv_bfloat16>> k_bf16_, v_bf16_;
};

// One row to sample: SamplingParams' sampling fields, the request's seed and the number of tokens
// it has generated so far.
struct SampleRow {
  float temperature = 1.0f;
  int32_t top_k = -1;
  float top_p = 1.0f;
  uint64_t seed = 0;
  uint64_t step = 0;
};

class CudaLlamaModel {
 public:
  // Reads the weights as LlamaModel::Load does (Checkpoint::ReadF32, one tensor at a time, so the
  // host holds at most one tensor beyond the page cache) and uploads them, converted to bf16 for
  // the linear layers in kBfloat16 mode. Norms, biases, routers and the embedding table stay fp32.
  // `backend` (not owned) supplies the stream and the cuBLAS handle; it must outlive the model.
  static absl::StatusOr<std::unique_ptr<CudaLlamaModel>> Load(const std::string& model_dir,
                                                              const ModelConfig& config,
                                                              WeightDType dtype,
                                                              kernels::CudaBackend* backend);

  // Runs the batch (host vectors, uploaded here), writing its keys/values into `cache` (of this
  // model's dtype) and the logits of batch.logit_rows into device_logits() ([num_logits, vocab]);
  // with `logits` non-null they are also copied there. Waits for the GPU; a CUDA or cuBLAS
  // failure is returned. In bf16 mode each sequence's tokens must be contiguous in the batch with
  // consecutive positions (the engine's batches are).
  absl::Status Forward(const ForwardBatch& batch, DeviceKvCache* cache, std::vector<float>* logits);

  // The serving step: Forward, then one token per logit row drawn on the device from rows[i]
  // (engine::SampleToken's rules) into `tokens`. In bf16 mode a batch of single-token sequences
  // replays a CUDA graph when Prepare enabled them.
  absl::Status ForwardSample(const ForwardBatch& batch, const std::vector<SampleRow>& rows,
                             DeviceKvCache* cache, std::vector<int32_t>* tokens);

  // Allocates every per-step buffer for batches of up to `max_tokens` tokens from `max_seqs`
  // sequences whose block tables have up to `max_blocks_per_seq` entries, so that steps allocate
  // nothing (and the memory a step needs is taken before the KV cache is sized). With
  // `cuda_graphs` (bf16 only) decode batches of up to max_seqs sequences run as CUDA graphs,
  // captured on first use per (batch-size bucket, block-table width).
  absl::Status Prepare(int64_t max_tokens, int64_t max_seqs, int64_t max_blocks_per_seq,
                       bool cuda_graphs);

  const float* device_logits() const { return logits_.data(); }
  const ModelConfig& config() const { return config_; }
  WeightDType dtype() const { return dtype_; }
  int64_t weight_bytes() const { return weight_bytes_; }
  // Device memory the model holds: weights plus every per-step buffer (not the KV cache).
  int64_t device_bytes() const;
  int64_t graphs_captured() const { return static_cast<int64_t>(graphs_.size()); }
  ~CudaLlamaModel();

 private:
  // A weight in device memory: fp32 or bf16 (exactly one of the two is allocated).
  struct Weight {
    kernels::DeviceBuffer<float> f32;
    kernels::DeviceBuffer<__nv_bfloat16> bf16;
    bool empty() const { return f32.size() == 0 && bf16.size() == 0; }
  };
  struct Layer {
    Weight input_norm, post_norm;  // [hidden], fp32
    Weight wq, wk, wv, wo;         // as in LlamaModel::Layer (fp32 mode)
    Weight bq, bk, bv, bo;         // fp32, empty unless present
    Weight w_gate, w_up, w_down;   // dense MLP (fp32 mode: gate and up separate)
    Weight b_gate, b_up, b_down;   // fp32, empty unless mlp_bias
    Weight wqkv, bqkv;             // bf16 mode: [q_dim + 2 * kv_dim, hidden], bias fp32
    Weight w_gate_up, b_gate_up;   // bf16 mode: [2 * intermediate, hidden], gate rows first
    Weight router;                 // [num_experts, hidden], fp32 in fp32 mode
    Weight expert_gate_up;         // [num_experts, 2 * intermediate, hidden], gate rows first
    Weight expert_down;            // [num_experts, hidden, intermediate]
  };
  // Offsets (in int32 units) of each input of a step inside the packed step buffer.
  struct StepLayout {
    int64_t token_ids, positions, slots, logit_rows, q_start, kv_len, tile_seq, tile_row,
        block_tables, temperature, top_k, top_p, seed, step, total;
  };
  // Sizes a bf16 step is enqueued with (a graph's are its bucket's).
  struct StepDims {
    int64_t tokens = 0, logits = 0, seqs = 0, tiles = 0, width = 0;  // width: block-table columns
    int64_t num_splits = 1, kv_chunk = 0;
  };
  CudaLlamaModel(const ModelConfig& config, WeightDType dtype, kernels::CudaBackend* backend);

  // Allocates `w` for `numel` elements, bf16 when the model is and `fp32` is false.
  absl::Status Allocate(Weight* w, int64_t numel, bool fp32);
  // Copies `host` into `w` at element `offset`, converting to w's type; waits for the copy.
  absl::Status Put(const std::vector<float>& host, Weight* w, int64_t offset);
  // Copies checkpoint tensor `name` (checked against `shape`) into `w` at element `offset`. A
  // tensor already in w's type is copied straight from the mapped file; an fp32 tensor bound for
  // bf16 is converted on the device; anything else goes through Checkpoint::ReadF32.
  absl::Status PutTensor(const Checkpoint& ckpt, const std::string& name,
                         const std::vector<int64_t>& shape, Weight* w, int64_t offset);
  // Allocate + PutTensor.
  absl::Status Read(const Checkpoint& ckpt, const std::string& name,
                    const std::vector<int64_t>& shape, Weight* w, bool fp32 = false);
  absl::Status LoadExperts(const Checkpoint& ckpt, const std::string& prefix, Layer* layer);

  // y [m, n] = x [m, k] @ w[offset .. offset + n * k)^T (+ bias), fp32.
  absl::Status Linear(const float* x, const Weight& w, int64_t offset, const Weight* bias, float* y,
                      int64_t m, int64_t n, int64_t k);
  // out [t, hidden] = the layer's MoE block applied to h [t, hidden] (see LlamaModel::MoeOp).
  absl::Status Moe(const Layer& layer, const float* h, float* out, int64_t t);

  // bf16 mode. Grows the step buffers for these sizes (no-op when Prepare covered them).
  absl::Status ReserveFast(int64_t tokens, int64_t seqs, int64_t tiles, int64_t width,
                           int64_t logit_rows);
  static StepLayout Layout(const StepDims& d);
  // Packs the batch into the pinned host step buffer under `dims` (padding rows beyond the
  // batch's own sizes when a graph's bucket is larger) and copies it to the device.
  absl::Status UploadStep(const ForwardBatch& batch, const std::vector<SampleRow>* rows,
                          const StepDims& dims, bool padded);
  // Enqueues the forward pass for a step uploaded under `dims`; logits land in logits_.
  absl::Status EnqueueFast(const StepDims& dims, DeviceKvCache* cache);
  absl::Status MoeFast(const Layer& layer, int64_t t);
  // Measures the bf16 GEMMs' plans (gemm_) for steps of up to max_tokens rows and max_logits
  // sampled rows; part of Prepare.
  absl::Status TuneGemms(int64_t max_tokens, int64_t max_logits);
  // The dims of `batch` run eagerly (its attention tiles counted), and in *max_context its longest
  // context; an error when its sequences are not contiguous runs of consecutive positions.
  absl::StatusOr<StepDims> FastDims(const ForwardBatch& batch, int64_t* max_context) const;
  // num_splits / kv_chunk for `tiles` tiles attending to at most `max_context` keys.
  void ChooseSplits(int64_t max_context, StepDims* d) const;
  absl::Status ForwardFast(const ForwardBatch& batch, const std::vector<SampleRow>* rows,
                           DeviceKvCache* cache, std::vector<float>* logits,
                           std::vector<int32_t>* tokens);

  ModelConfig config_;
  WeightDType dtype_;
  kernels::CudaBackend* backend_;  // not owned
  cudaStream_t stream_;
  std::unique_ptr<kernels::Backend> host_ops_;  // the CPU twin, for host-side routing's softmax

  Weight embed_;    // [vocab, hidden], fp32 (bf16 in bf16 mode)
  Weight lm_head_;  // [vocab, hidden]; empty when tied (then embed_ is the head)
  int64_t weight_bytes_ = 0;
  int num_sms_ = 132;
  std::vector<Layer> layers_;
  Weight final_norm_;                      // [hidden], fp32
  kernels::DeviceBuffer<float> inv_freq_;  // [head_dim / 2] rope inverse frequencies
  kernels::DeviceBuffer<float> staging_;   // fp32 upload area for bf16 conversion at load

  // Per-step inputs and activations, grown to the largest batch seen.
  kernels::DeviceBuffer<int32_t> token_ids_, positions_, token_seq_, slot_mapping_, block_tables_,
      logit_rows_;
  kernels::DeviceBuffer<float> x_, h_, q_, k_, v_, attn_, tmp_, gate_, up_, logits_;
  // MoE: router logits [t, E]; routed rows sorted by expert [t * top_k] (token of each row) and
  // their activations [t * top_k, hidden]; per token its slots' rows and weights [t, top_k].
  kernels::DeviceBuffer<float> router_logits_, moe_in_, moe_out_, moe_weights_;
  kernels::DeviceBuffer<int32_t> moe_tokens_, moe_rows_;
  std::vector<float> router_logits_host_;

  // bf16 mode: activations and the packed step buffer (grown by ReserveFast).
  struct FastCapacity {
    int64_t tokens = 0, seqs = 0, tiles = 0, width = 0, logits = 0, split_tiles = 0;
  } cap_;
  kernels::DeviceBuffer<float> qkv_, gate_up_, partials_;
  // gate_up_bf16_: the fused gate/up GEMM's output ([tokens or routed rows, 2 * intermediate]);
  // gate_up_ (fp32) only for MLP biases, added before rounding.
  kernels::DeviceBuffer<__nv_bfloat16> hb_, qb_, moe_act_, gate_up_bf16_;
  kernels::DeviceBuffer<int32_t> step_dev_, moe_offsets_, moe_scratch_, sampled_;
  int32_t* step_host_ = nullptr;  // pinned, cap of step_dev_
  int64_t step_host_size_ = 0;
  int32_t* tokens_host_ = nullptr;  // pinned
  int64_t tokens_host_size_ = 0;
  kernels::DeviceBuffer<uint8_t> cublas_workspace_;
  std::unique_ptr<kernels::GemmPlanner> gemm_;  // the bf16 GEMMs, on cublas_workspace_
  bool use_graphs_ = false;
  int64_t graph_max_seqs_ = 0;
  DeviceKvCache* graph_cache_ = nullptr;  // the cache the graphs write into
  // (bucket, width) -> the decode step captured for those sizes (its dims: see ForwardFast).
  std::map<std::pair<int64_t, int64_t>, cudaGraphExec_t> graphs_;
  // DPINFER_PROFILE=1: GPU time per op family (eager steps) and per step, printed at exit.
  std::unique_ptr<StepProfiler> profiler_;
};

}  // namespace dpinfer::engine
