// check-logits (see check_logits.h): each reference sequence runs alone as one prefill through the
// engine's model and paged KV cache, with logits kept for every position: the CPU reference model,
// or with --backend cuda the GPU model (fp32 or bf16 weights) where the build has CUDA.
#include "cli/check_logits.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "kernels/backend.h"
#include "worker/engine/kv_cache.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/model_config.h"

#ifdef DPINFER_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_backend.h"
#include "worker/engine/cuda_llama_model.h"
#endif

namespace dpinfer::cli {
namespace {

constexpr int64_t kBlockSize = 16;

// The model on the chosen backend with a KV cache of `num_blocks` blocks. Members are destroyed in
// reverse order: caches, then models, then the backends they use.
class Runner {
 public:
  static absl::StatusOr<std::unique_ptr<Runner>> Create(const CheckLogitsOptions& o,
                                                        const engine::ModelConfig& config,
                                                        int64_t num_blocks) {
    auto r = std::make_unique<Runner>();
    if (o.backend == "cpu") {
      r->cpu_backend_ = kernels::NewCpuBackend(o.num_threads);
      ASSIGN_OR_RETURN(r->cpu_model_,
                       engine::LlamaModel::Load(o.model_dir, config, r->cpu_backend_.get()));
      r->cpu_cache_ = std::make_unique<engine::KvCache>(config.num_layers, num_blocks, kBlockSize,
                                                        config.num_kv_heads, config.head_dim);
      return r;
    }
#ifdef DPINFER_HAVE_CUDA
    int devices = 0;
    const cudaError_t err = cudaGetDeviceCount(&devices);
    if (err != cudaSuccess || devices == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("--backend cuda: no CUDA device (cudaGetDeviceCount: ",
                       err != cudaSuccess ? cudaGetErrorString(err) : "0 devices", ")"));
    }
    r->cuda_backend_ = kernels::NewCudaBackend(nullptr);
    RETURN_IF_ERROR(r->cuda_backend_->status());
    const engine::WeightDType dtype =
        o.dtype == "bfloat16" ? engine::WeightDType::kBfloat16 : engine::WeightDType::kFloat32;
    ASSIGN_OR_RETURN(r->cuda_model_, engine::CudaLlamaModel::Load(o.model_dir, config, dtype,
                                                                  r->cuda_backend_.get()));
    ASSIGN_OR_RETURN(r->cuda_cache_,
                     engine::DeviceKvCache::Create(config.num_layers, num_blocks, kBlockSize,
                                                   config.num_kv_heads, config.head_dim, dtype));
    return r;
#else
    return absl::UnimplementedError(
        "--backend cuda: this dpinfer was not built with CUDA (only --backend cpu is available)");
#endif
  }

  absl::Status Forward(const engine::ForwardBatch& batch, std::vector<float>* logits) {
#ifdef DPINFER_HAVE_CUDA
    if (cuda_model_ != nullptr) return cuda_model_->Forward(batch, cuda_cache_.get(), logits);
#endif
    cpu_model_->Forward(batch, cpu_cache_.get(), logits);
    return absl::OkStatus();
  }

 private:
#ifdef DPINFER_HAVE_CUDA
  std::unique_ptr<kernels::CudaBackend> cuda_backend_;
  std::unique_ptr<engine::CudaLlamaModel> cuda_model_;
  std::unique_ptr<engine::DeviceKvCache> cuda_cache_;
#endif
  std::unique_ptr<kernels::Backend> cpu_backend_;
  std::unique_ptr<engine::LlamaModel> cpu_model_;
  std::unique_ptr<engine::KvCache> cpu_cache_;
};

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::vector<std::string> dims;
  for (int64_t d : shape) dims.push_back(absl::StrCat(d));
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

absl::StatusOr<const TensorInfo*> FindTensor(const SafetensorsFile& file, const std::string& name,
                                             size_t rank) {
  auto it = file.tensors().find(name);
  if (it == file.tensors().end()) {
    return absl::NotFoundError(absl::StrCat(file.path(), ": no tensor '", name, "'"));
  }
  if (it->second.shape.size() != rank) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": tensor '", name, "' has shape ",
                                                   ShapeString(it->second.shape), ", expected ",
                                                   rank, " dimensions"));
  }
  return &it->second;
}

// Token ids as int32, from I32 (as the fixtures store them) or I64 (torch's default).
absl::StatusOr<std::vector<int32_t>> ReadIds(const SafetensorsFile& file, const TensorInfo& t) {
  std::vector<int32_t> ids(t.numel());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (t.dtype == DType::kI32) {
      std::memcpy(&ids[i], t.data + 4 * i, 4);
    } else if (t.dtype == DType::kI64) {
      int64_t v;
      std::memcpy(&v, t.data + 8 * i, 8);
      if (v < INT32_MIN || v > INT32_MAX) {
        return absl::InvalidArgumentError(
            absl::StrCat(file.path(), ": input_ids holds ", v, ", not a token id"));
      }
      ids[i] = static_cast<int32_t>(v);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(file.path(), ": input_ids has dtype ",
                                                     DTypeName(t.dtype), "; expected I32 or I64"));
    }
  }
  return ids;
}

// Reference logits as fp32 from F32, BF16 or F16.
absl::StatusOr<std::vector<float>> ReadLogits(const SafetensorsFile& file, const TensorInfo& t) {
  std::vector<float> v(t.numel());
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t h;
    switch (t.dtype) {
      case DType::kF32:
        std::memcpy(&v[i], t.data + 4 * i, 4);
        break;
      case DType::kBF16:
        std::memcpy(&h, t.data + 2 * i, 2);
        v[i] = Bf16ToF32(h);
        break;
      case DType::kF16:
        std::memcpy(&h, t.data + 2 * i, 2);
        v[i] = F16ToF32(h);
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            file.path(), ": logits has dtype ", DTypeName(t.dtype), "; expected F32, BF16 or F16"));
    }
  }
  return v;
}

}  // namespace

double EffectiveTolerance(const CheckLogitsOptions& o) {
  if (o.tolerance > 0) return o.tolerance;
  return o.dtype == "bfloat16" ? 2e-2 : 1e-4;
}

absl::StatusOr<std::vector<SequenceError>> CheckLogits(const CheckLogitsOptions& o) {
  if (o.backend != "cpu" && o.backend != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend '", o.backend, "' is unknown (expected cpu or cuda)"));
  }
  if (o.dtype != "float32" && o.dtype != "bfloat16") {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype '", o.dtype, "' is unknown (expected float32 or bfloat16)"));
  }
  if (o.dtype == "bfloat16" && o.backend != "cuda") {
    return absl::InvalidArgumentError(
        "--dtype bfloat16 needs --backend cuda (the CPU reference computes in float32)");
  }
#ifndef DPINFER_HAVE_CUDA
  if (o.backend == "cuda") {
    return absl::UnimplementedError(
        "--backend cuda: this dpinfer was not built with CUDA (only --backend cpu is available)");
  }
#endif
  ASSIGN_OR_RETURN(engine::ModelConfig config, engine::LoadModelConfig(o.model_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> ref, SafetensorsFile::Open(o.reference_path));
  ASSIGN_OR_RETURN(const TensorInfo* ids_t, FindTensor(*ref, "input_ids", 2));
  ASSIGN_OR_RETURN(const TensorInfo* logits_t, FindTensor(*ref, "logits", 3));
  const int64_t num_seqs = ids_t->shape[0], len = ids_t->shape[1];
  const int64_t vocab = config.vocab_size;
  if (logits_t->shape != std::vector<int64_t>{num_seqs, len, vocab}) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.reference_path, ": logits has shape ", ShapeString(logits_t->shape),
                     ", expected ", ShapeString({num_seqs, len, vocab}),
                     " (input_ids [B, T], the model's vocab_size ", vocab, ")"));
  }
  if (len < 1 || len > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        o.reference_path, ": sequences of ", len,
        " tokens do not fit the model's max_position_embeddings ", config.max_position_embeddings));
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, ReadIds(*ref, *ids_t));
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: input_ids[%d][%d] = %d is outside the model's vocabulary [0, %d)",
                          o.reference_path, i / len, i % len, ids[i], vocab));
    }
  }
  ASSIGN_OR_RETURN(std::vector<float> want, ReadLogits(*ref, *logits_t));

  // Each sequence in turn uses the whole cache: blocks 0.. in order, so slot = position.
  const int64_t blocks = (len + kBlockSize - 1) / kBlockSize;
  ASSIGN_OR_RETURN(std::unique_ptr<Runner> runner, Runner::Create(o, config, blocks));

  std::vector<SequenceError> errors;
  std::vector<float> got;
  for (int64_t s = 0; s < num_seqs; ++s) {
    engine::ForwardBatch b;
    for (int64_t i = 0; i < blocks; ++i) b.block_tables.push_back(static_cast<int32_t>(i));
    b.max_blocks_per_seq = blocks;
    for (int64_t p = 0; p < len; ++p) {
      b.token_ids.push_back(ids[s * len + p]);
      b.positions.push_back(static_cast<int32_t>(p));
      b.token_seq.push_back(0);
      b.slot_mapping.push_back(static_cast<int32_t>(p));
      b.logit_rows.push_back(static_cast<int32_t>(p));
    }
    RETURN_IF_ERROR(runner->Forward(b, &got));

    SequenceError e;
    e.positions = len;
    for (int64_t p = 0; p < len; ++p) {
      const float* g = got.data() + p * vocab;
      const float* w = want.data() + (s * len + p) * vocab;
      for (int64_t v = 0; v < vocab; ++v) {
        // A NaN would compare false and vanish from the max: count it as an infinite error.
        const double diff = std::fabs(double{g[v]} - double{w[v]});
        e.max_abs_error = std::isnan(diff) ? INFINITY : std::max(e.max_abs_error, diff);
        e.max_abs_ref = std::max(e.max_abs_ref, std::fabs(double{w[v]}));
      }
      if (std::max_element(g, g + vocab) - g == std::max_element(w, w + vocab) - w) {
        ++e.argmax_agree;
      }
    }
    e.relative = e.max_abs_ref > 0 ? e.max_abs_error / e.max_abs_ref : e.max_abs_error;
    errors.push_back(e);
  }
  return errors;
}

int RunCheckLogits(const CheckLogitsOptions& o, std::ostream& out, std::ostream& err) {
  absl::StatusOr<std::vector<SequenceError>> errors = CheckLogits(o);
  if (!errors.ok()) {
    err << "dpinfer check-logits: " << errors.status().message() << "\n";
    return 2;
  }
  const double tolerance = EffectiveTolerance(o);
  double worst = 0;
  int failed = 0;
  for (size_t s = 0; s < errors->size(); ++s) {
    const SequenceError& e = (*errors)[s];
    const bool ok = e.relative <= tolerance;
    failed += ok ? 0 : 1;
    worst = std::max(worst, e.relative);
    out << absl::StrFormat(
        "sequence %d: max abs error %.3e, max |ref| %.4g, relative %.3e, top-1 %d/%d  %s\n", s,
        e.max_abs_error, e.max_abs_ref, e.relative, e.argmax_agree, e.positions,
        ok ? "ok" : "FAIL");
  }
  out << absl::StrFormat("%s: %d of %d sequences within tolerance %g (worst relative %.3e)\n",
                         failed == 0 ? "PASS" : "FAIL", errors->size() - failed, errors->size(),
                         tolerance, worst);
  return failed == 0 ? 0 : 1;
}

}  // namespace dpinfer::cli
