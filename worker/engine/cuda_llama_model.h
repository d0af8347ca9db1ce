// The Llama-shaped decoder on one GPU: LlamaModel's forward pass (same families, same math, same
// ForwardBatch) with the weights, activations and paged KV cache in device memory and every op
// through the CUDA backend. Two weight modes: fp32 (the exact mode, checked against transformers to
// 1e-4) and bf16 (fp32 checkpoints converted at load; linear layers as bf16 tensor-core GEMMs with
// fp32 accumulation, everything between them in fp32). Mixture-of-experts routing runs on the host
// over the downloaded [tokens, experts] router logits, exactly as LlamaModel routes; each expert is
// then one GEMM over the rows routed to it. Built only where the CUDA backend is
// (DPINFER_HAVE_CUDA).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/safetensors.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/model_config.h"

namespace dpinfer::engine {

enum class WeightDType { kFloat32, kBfloat16 };

// The paged KV cache's storage on the device, KvCache's layout: per layer K and V of
// [num_blocks, block_size, num_kv_heads, head_dim] fp32. Block allocation is the caller's (the
// slots and block tables arrive in each ForwardBatch).
class DeviceKvCache {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceKvCache>> Create(int64_t num_layers,
                                                               int64_t num_blocks,
                                                               int64_t block_size,
                                                               int64_t num_kv_heads,
                                                               int64_t head_dim);
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  float* k(int64_t layer) { return k_[layer].data(); }
  float* v(int64_t layer) { return v_[layer].data(); }

 private:
  DeviceKvCache() = default;
  int64_t num_blocks_ = 0;
  int64_t block_size_ = 0;
  std::vector<kernels::DeviceBuffer<float>> k_, v_;
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

  // Runs the batch (host vectors, uploaded here), writing its keys/values into `cache` and the
  // logits of batch.logit_rows into device_logits() ([num_logits, vocab]); with `logits` non-null
  // they are also copied there. Waits for the GPU; a CUDA or cuBLAS failure is returned.
  absl::Status Forward(const ForwardBatch& batch, DeviceKvCache* cache, std::vector<float>* logits);

  const float* device_logits() const { return logits_.data(); }
  const ModelConfig& config() const { return config_; }
  WeightDType dtype() const { return dtype_; }

 private:
  // A weight in device memory: fp32 or bf16 (exactly one of the two is allocated).
  struct Weight {
    kernels::DeviceBuffer<float> f32;
    kernels::DeviceBuffer<__nv_bfloat16> bf16;
    bool empty() const { return f32.size() == 0 && bf16.size() == 0; }
  };
  struct Layer {
    Weight input_norm, post_norm;  // [hidden], fp32
    Weight wq, wk, wv, wo;         // as in LlamaModel::Layer
    Weight bq, bk, bv, bo;         // fp32, empty unless present
    Weight w_gate, w_up, w_down;   // dense MLP
    Weight b_gate, b_up, b_down;   // fp32, empty unless mlp_bias
    Weight router;                 // [num_experts, hidden], fp32 (routing decisions stay exact)
    Weight expert_gate_up;         // [num_experts, 2 * intermediate, hidden], gate rows first
    Weight expert_down;            // [num_experts, hidden, intermediate]
  };

  CudaLlamaModel(const ModelConfig& config, WeightDType dtype, kernels::CudaBackend* backend);

  // Allocates `w` for `numel` elements, bf16 when the model is and `fp32` is false.
  absl::Status Allocate(Weight* w, int64_t numel, bool fp32);
  // Copies `host` into `w` at element `offset`, converting to w's type; waits for the copy.
  absl::Status Put(const std::vector<float>& host, Weight* w, int64_t offset);
  // Allocate + ReadF32 + Put.
  absl::Status Read(const Checkpoint& ckpt, const std::string& name,
                    const std::vector<int64_t>& shape, Weight* w, bool fp32 = false);
  absl::Status LoadExperts(const Checkpoint& ckpt, const std::string& prefix, Layer* layer);

  // y [m, n] = x [m, k] @ w[offset .. offset + n * k)^T (+ bias), in w's precision.
  absl::Status Linear(const float* x, const Weight& w, int64_t offset, const Weight* bias, float* y,
                      int64_t m, int64_t n, int64_t k);
  // out [t, hidden] = the layer's MoE block applied to h [t, hidden] (see LlamaModel::MoeOp).
  absl::Status Moe(const Layer& layer, const float* h, float* out, int64_t t);

  ModelConfig config_;
  WeightDType dtype_;
  kernels::CudaBackend* backend_;  // not owned
  cudaStream_t stream_;
  std::unique_ptr<kernels::Backend> host_ops_;  // the CPU twin, for host-side routing's softmax

  Weight embed_;    // [vocab, hidden], fp32 (the lookup table)
  Weight lm_head_;  // [vocab, hidden]; empty when tied and fp32 (then embed_ is the head)
  std::vector<Layer> layers_;
  Weight final_norm_;                      // [hidden], fp32
  kernels::DeviceBuffer<float> inv_freq_;  // [head_dim / 2] rope inverse frequencies
  kernels::DeviceBuffer<float> staging_;   // fp32 upload area for bf16 conversion at load

  // Per-step inputs and activations, grown to the largest batch seen.
  kernels::DeviceBuffer<int32_t> token_ids_, positions_, token_seq_, slot_mapping_, block_tables_,
      logit_rows_;
  kernels::DeviceBuffer<float> x_, h_, q_, k_, v_, attn_, tmp_, gate_, up_, logits_;
  kernels::DeviceBuffer<__nv_bfloat16> x_bf16_;  // Linear's input rounded to bf16
  // MoE: router logits [t, E]; routed rows sorted by expert [t * top_k] (token of each row) and
  // their activations [t * top_k, hidden]; per token its slots' rows and weights [t, top_k].
  kernels::DeviceBuffer<float> router_logits_, moe_in_, moe_out_, moe_weights_;
  kernels::DeviceBuffer<int32_t> moe_tokens_, moe_rows_;
  std::vector<float> router_logits_host_;
};

}  // namespace dpinfer::engine
