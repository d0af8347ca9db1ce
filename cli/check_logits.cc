// check-logits (see check_logits.h): each reference sequence runs alone as one prefill through the
// engine's model and paged KV cache, with logits kept for every position.
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

namespace dpinfer::cli {
namespace {

constexpr int64_t kBlockSize = 16;

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

absl::StatusOr<std::vector<SequenceError>> CheckLogits(const CheckLogitsOptions& o) {
  if (o.backend == "cuda") {
    return absl::UnimplementedError(
        "--backend cuda: this dpinfer was not built with CUDA (only --backend cpu is available)");
  }
  if (o.backend != "cpu") {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend '", o.backend, "' is unknown (expected cpu or cuda)"));
  }
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

  std::unique_ptr<kernels::Backend> backend = kernels::NewCpuBackend(o.num_threads);
  ASSIGN_OR_RETURN(std::unique_ptr<engine::LlamaModel> model,
                   engine::LlamaModel::Load(o.model_dir, config, backend.get()));
  const int64_t blocks = (len + kBlockSize - 1) / kBlockSize;
  engine::KvCache cache(config.num_layers, blocks, kBlockSize, config.num_kv_heads,
                        config.head_dim);

  std::vector<SequenceError> errors;
  std::vector<float> got;
  for (int64_t s = 0; s < num_seqs; ++s) {
    std::vector<int32_t> table;
    CHECK(cache.EnsureCapacity(&table, len));
    engine::ForwardBatch b;
    for (int64_t p = 0; p < len; ++p) {
      b.token_ids.push_back(ids[s * len + p]);
      b.positions.push_back(static_cast<int32_t>(p));
      b.token_seq.push_back(0);
      b.slot_mapping.push_back(cache.Slot(table, p));
      b.logit_rows.push_back(static_cast<int32_t>(p));
    }
    b.max_blocks_per_seq = static_cast<int64_t>(table.size());
    b.block_tables = table;
    model->Forward(b, &cache, &got);
    cache.Free(&table);

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
  double worst = 0;
  int failed = 0;
  for (size_t s = 0; s < errors->size(); ++s) {
    const SequenceError& e = (*errors)[s];
    const bool ok = e.relative <= o.tolerance;
    failed += ok ? 0 : 1;
    worst = std::max(worst, e.relative);
    out << absl::StrFormat(
        "sequence %d: max abs error %.3e, max |ref| %.4g, relative %.3e, top-1 %d/%d  %s\n", s,
        e.max_abs_error, e.max_abs_ref, e.relative, e.argmax_agree, e.positions,
        ok ? "ok" : "FAIL");
  }
  out << absl::StrFormat("%s: %d of %d sequences within tolerance %g (worst relative %.3e)\n",
                         failed == 0 ? "PASS" : "FAIL", errors->size() - failed, errors->size(),
                         o.tolerance, worst);
  return failed == 0 ? 0 : 1;
}

}  // namespace dpinfer::cli
