// Reading and writing the safetensors format (HF checkpoints): an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range, then the raw data.
// Files are memory-mapped so loading never holds a second full copy of the weights.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dpinfer {

enum class DType { kF32, kF16, kBF16, kI32, kI64, kU8, kI8, kBool, kF64 };

const char* DTypeName(DType d);
size_t DTypeSize(DType d);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapped file
  size_t nbytes = 0;
  int64_t numel() const;
};

// One mapped .safetensors file.
class SafetensorsFile {
 public:
  // Errors name the file (and the tensor where one is at fault).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory: model.safetensors, or the shards listed in
// model.safetensors.index.json.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& model_dir);
  // nullptr when absent.
  const TensorInfo* Find(const std::string& name) const;
  // Copies the tensor into `out` as fp32 (converting bf16/fp16), checking its shape. Errors name
  // the tensor and its file: missing, wrong shape, unsupported dtype.
  absl::Status ReadF32(const std::string& name, const std::vector<int64_t>& expected_shape,
                       std::vector<float>* out) const;
  std::vector<std::string> Names() const;

 private:
  std::string model_dir_;  // for errors about tensors that are absent
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
  std::map<std::string, std::string> file_of_;  // tensor name -> file path (for errors)
};

// Writes tensors to a .safetensors file (used by `dpinfer make-model` and tests).
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // little-endian raw data, numel * DTypeSize(dtype) bytes
};
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Numeric conversion helpers (round-to-nearest-even for the narrowing ones).
float Bf16ToF32(uint16_t v);
uint16_t F32ToBf16(float v);
float F16ToF32(uint16_t v);
uint16_t F32ToF16(float v);

}  // namespace dpinfer
