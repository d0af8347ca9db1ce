// Safetensors reading (mmap + header validation), checkpoint directories (single file or sharded
// with an index), writing, and the fp16/bf16 <-> fp32 conversions.
//
// Every header field is checked before a TensorInfo is handed out, so later code may trust
// `data`/`nbytes` without re-validating: a truncated download or a hand-edited header must become
// an error that names the file and the tensor, never an out-of-bounds read.
#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace dpinfer {
namespace {

using json = nlohmann::json;

// HF's reader refuses headers above 100 MB; a larger length is a corrupt prefix, and checking it
// first keeps us from asking the JSON parser to read gigabytes of weights.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::StatusOr<DType> ParseDType(const std::string& s) {
  static const std::pair<const char*, DType> kNames[] = {
      {"F32", DType::kF32}, {"F16", DType::kF16},   {"BF16", DType::kBF16},
      {"I32", DType::kI32}, {"I64", DType::kI64},   {"U8", DType::kU8},
      {"I8", DType::kI8},   {"BOOL", DType::kBool}, {"F64", DType::kF64}};
  for (const auto& [name, d] : kNames) {
    if (s == name) return d;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", s, "'"));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Reads a JSON array of non-negative integers that fit int64 (shapes and offsets).
absl::StatusOr<std::vector<uint64_t>> ReadUintArray(const json& j, const char* what) {
  if (!j.is_array()) return absl::InvalidArgumentError(absl::StrCat(what, " is not an array"));
  std::vector<uint64_t> out;
  for (const auto& v : j) {
    if (!v.is_number_unsigned() ||
        v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " holds ", v.dump(), ", not a non-negative integer"));
    }
    out.push_back(v.get<uint64_t>());
  }
  return out;
}

// Validates one header entry against the data section; errors are prefixed by the caller.
absl::StatusOr<TensorInfo> ParseTensorEntry(const std::string& name, const json& entry,
                                            const uint8_t* data, uint64_t data_size) {
  if (!entry.is_object()) return absl::InvalidArgumentError("entry is not a JSON object");
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) {
      return absl::InvalidArgumentError(absl::StrCat("missing \"", key, "\""));
    }
  }
  if (!entry.at("dtype").is_string())
    return absl::InvalidArgumentError("\"dtype\" is not a string");
  TensorInfo info;
  info.name = name;
  ASSIGN_OR_RETURN(info.dtype, ParseDType(entry.at("dtype").get<std::string>()));
  ASSIGN_OR_RETURN(std::vector<uint64_t> shape, ReadUintArray(entry.at("shape"), "shape"));
  ASSIGN_OR_RETURN(std::vector<uint64_t> offsets,
                   ReadUintArray(entry.at("data_offsets"), "data_offsets"));
  if (offsets.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("data_offsets has ", offsets.size(), " entries, expected 2"));
  }
  // The byte count is computed with overflow checks: a hostile shape must not wrap around to a
  // small number that happens to match the offsets.
  uint64_t nbytes = DTypeSize(info.dtype);
  for (uint64_t d : shape) {
    if (d != 0 && nbytes > std::numeric_limits<uint64_t>::max() / d) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", entry.at("shape").dump(), " overflows the byte count"));
    }
    nbytes *= d;
    info.shape.push_back(static_cast<int64_t>(d));
  }
  const uint64_t begin = offsets[0], end = offsets[1];
  if (begin > end) {
    return absl::InvalidArgumentError(
        absl::StrFormat("data_offsets [%d,%d) are reversed", begin, end));
  }
  if (end > data_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "data_offsets [%d,%d) exceed the file's data section (%d bytes)", begin, end, data_size));
  }
  if (end - begin != nbytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("data_offsets [%d,%d) span %d bytes but %s %s needs %d", begin, end,
                        end - begin, DTypeName(info.dtype), ShapeString(info.shape), nbytes));
  }
  info.data = data + begin;
  info.nbytes = nbytes;
  return info;
}

// Parses a JSON file that is small enough to read whole (index files, configs).
absl::StatusOr<json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": invalid JSON"));
  return j;
}

}  // namespace

const char* DTypeName(DType d) {
  switch (d) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kU8:
      return "U8";
    case DType::kI8:
      return "I8";
    case DType::kBool:
      return "BOOL";
    case DType::kF64:
      return "F64";
  }
  return "?";
}

size_t DTypeSize(DType d) {
  switch (d) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kI64:
    case DType::kF64:
      return 8;
    case DType::kU8:
    case DType::kI8:
    case DType::kBool:
      return 1;
  }
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    std::string msg = absl::StrCat(path, ": cannot open: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::InvalidArgumentError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot stat: ", std::strerror(err)));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": file is ", file_size, " bytes, too small for the 8-byte header length"));
  }
  // The mapping stays valid after close(); MAP_PRIVATE + PROT_READ means pages are shared with the
  // page cache and never copied.
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (map == MAP_FAILED) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": mmap failed: ", std::strerror(map_errno)));
  }
  // From here the destructor owns the mapping, so every error path below unmaps it.
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = map;
  f->map_size_ = file_size;
  const uint8_t* bytes = static_cast<const uint8_t*>(map);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian
  if (header_len > file_size - 8 || header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: header length %d does not fit the file (%d bytes); truncated or not a safetensors "
        "file",
        path, header_len, file_size));
  }
  json header = json::parse(bytes + 8, bytes + 8 + header_len, nullptr,
                            /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header is not a JSON object (corrupt file?)"));
  }
  const uint8_t* data = bytes + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      // HF stores free-form string pairs here ({"format": "pt"}); nothing else is allowed.
      if (!entry.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": \"__metadata__\" is not a JSON object"));
      }
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": \"__metadata__\" value for '", k, "' is not a string"));
        }
        f->metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    absl::StatusOr<TensorInfo> info = ParseTensorEntry(name, entry, data, data_size);
    if (!info.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", name, "': ", info.status().message()));
    }
    f->tensors_.emplace(name, *std::move(info));
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& model_dir) {
  namespace fs = std::filesystem;
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  ckpt->model_dir_ = model_dir;
  const std::string index_path = (fs::path(model_dir) / "model.safetensors.index.json").string();
  std::error_code ec;

  // Which files to open, and (for sharded checkpoints) which tensor the index promises where.
  std::vector<std::string> files;
  std::map<std::string, std::string> promised;  // tensor -> shard file name
  if (fs::exists(index_path, ec)) {
    ASSIGN_OR_RETURN(json index, ReadJsonFile(index_path));
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": missing \"weight_map\" object"));
    }
    std::set<std::string> shards;
    for (const auto& [tensor, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": weight_map entry for tensor '", tensor, "' is not a file name"));
      }
      promised[tensor] = shard.get<std::string>();
      shards.insert(shard.get<std::string>());
    }
    for (const std::string& shard : shards) {
      const std::string shard_path = (fs::path(model_dir) / shard).string();
      if (!fs::exists(shard_path, ec)) {
        return absl::NotFoundError(absl::StrCat(index_path, ": lists shard '", shard, "', but ",
                                                shard_path, " does not exist"));
      }
      files.push_back(shard_path);
    }
  } else {
    const std::string single = (fs::path(model_dir) / "model.safetensors").string();
    if (!fs::exists(single, ec)) {
      return absl::NotFoundError(absl::StrCat(single, ": not found (and no ", index_path, "); is ",
                                              model_dir, " a model directory?"));
    }
    files.push_back(single);
  }

  for (const std::string& path : files) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::Open(path));
    for (const auto& [name, info] : f->tensors()) {
      // A tensor in two shards would make the loaded weights depend on file order.
      auto [it, inserted] = ckpt->index_.emplace(name, &info);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' appears in both ",
                                                       ckpt->file_of_[name], " and ", path));
      }
      ckpt->file_of_[name] = path;
    }
    ckpt->files_.push_back(std::move(f));
  }
  for (const auto& [tensor, shard] : promised) {
    auto it = ckpt->file_of_.find(tensor);
    if (it == ckpt->file_of_.end() || fs::path(it->second).filename() != shard) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": maps tensor '", tensor, "' to ",
                                                     shard, ", which does not hold it"));
    }
  }
  return ckpt;
}

const TensorInfo* Checkpoint::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& [name, info] : index_) names.push_back(name);
  return names;
}

absl::Status Checkpoint::ReadF32(const std::string& name,
                                 const std::vector<int64_t>& expected_shape,
                                 std::vector<float>* out) const {
  const TensorInfo* t = Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("tensor '", name, "' not found in the checkpoint at ", model_dir_));
  }
  const std::string& file = file_of_.at(name);
  if (t->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' in ", file, " has shape ",
                                                   ShapeString(t->shape), ", expected ",
                                                   ShapeString(expected_shape)));
  }
  const size_t n = static_cast<size_t>(t->numel());
  out->resize(n);
  // memcpy per element: the mapped data carries no alignment guarantee (headers are padded to 8
  // by HF but not by every writer).
  switch (t->dtype) {
    case DType::kF32:
      std::memcpy(out->data(), t->data, n * sizeof(float));
      break;
    case DType::kBF16:
    case DType::kF16: {
      const bool bf16 = t->dtype == DType::kBF16;
      for (size_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, t->data + 2 * i, 2);
        (*out)[i] = bf16 ? Bf16ToF32(v) : F16ToF32(v);
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' in ", file, " has dtype ",
                                                     DTypeName(t->dtype),
                                                     "; only F32, BF16 and F16 convert to float"));
  }
  // The file's pages now have a converted copy: drop them from this process so that loading
  // never holds the checkpoint and the weights at once (they stay in the page cache, and are
  // read back from it should the tensor be read again).
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(t->data) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(t->data) + t->nbytes) & ~(page - 1);
  if (end > begin) {
    ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Writing

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps "__metadata__" first and tensors in the caller's order, matching the data
  // layout, which makes the files easy to diff and deterministic.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    header["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) header["__metadata__"][k] = v;
  }
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name == "__metadata__" || header.contains(t.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor name '", t.name, "' is reserved or repeated"));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": tensor '", t.name, "' has negative shape ", ShapeString(t.shape)));
      }
      numel *= static_cast<uint64_t>(d);
    }
    if (t.bytes.size() != numel * DTypeSize(t.dtype)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tensor '%s' has %d bytes but %s %s needs %d", path, t.name, t.bytes.size(),
          DTypeName(t.dtype), ShapeString(t.shape), numel * DTypeSize(t.dtype)));
    }
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string header_text = header.dump();
  // Pad with spaces (valid JSON whitespace) so the data section starts 8-byte aligned, as HF's
  // writer does; that lets readers use the mapped F32/I64 data in place.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  // Write beside the target and rename, so a crash never leaves a half-written checkpoint under
  // the real name.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::InvalidArgumentError(
          absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
    }
    uint8_t len[8];
    uint64_t n = header_text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
    for (const TensorToWrite& t : tensors) {
      out.write(reinterpret_cast<const char*>(t.bytes.data()),
                static_cast<std::streamsize>(t.bytes.size()));
    }
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat(tmp, ": write failed"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": rename failed: ", ec.message()));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Conversions

float Bf16ToF32(uint16_t v) { return std::bit_cast<float>(static_cast<uint32_t>(v) << 16); }

uint16_t F32ToBf16(float v) {
  uint32_t bits = std::bit_cast<uint32_t>(v);
  if (std::isnan(v)) {
    // Truncation could clear every mantissa bit and turn a NaN into infinity; force quiet NaN.
    return static_cast<uint16_t>((bits >> 16) | 0x0040);
  }
  // Adding 0x7FFF plus the lowest kept bit rounds half-way cases to the even neighbour; overflow
  // carries into the exponent, which is exactly the round-up to the next binade (or infinity).
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

float F16ToF32(uint16_t v) {
  const uint32_t sign = static_cast<uint32_t>(v & 0x8000) << 16;
  const uint32_t exp = (v >> 10) & 0x1F;
  const uint32_t mant = v & 0x3FF;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in fp32.
    const float mag = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -mag : mag;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));  // inf / NaN
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));  // rebias 15 -> 127
}

uint16_t F32ToF16(float v) {
  const uint32_t bits = std::bit_cast<uint32_t>(v);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t abs = bits & 0x7FFFFFFF;
  if (abs > 0x7F800000) return sign | 0x7E00 | ((abs >> 13) & 0x3FF);  // NaN stays (quiet) NaN
  // 65520 is half-way between 65504 (largest half) and 65536; ties-to-even rounds it up, so it and
  // everything above become infinity.
  if (abs >= 0x477FF000) return sign | 0x7C00;
  const int32_t exp = static_cast<int32_t>(abs >> 23) - 127 + 15;
  uint32_t mant = abs & 0x7FFFFF;
  if (exp >= 1) {
    uint32_t h = (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;  // a carry moves into the exponent
    return sign | static_cast<uint16_t>(h);
  }
  // Result is subnormal (or zero): shift the full significand down to units of 2^-24.
  const int shift = 14 - exp;
  if (shift > 24) return sign;  // below half of the smallest subnormal
  mant |= 0x800000;
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1))) ++h;
  return sign | static_cast<uint16_t>(h);
}

}  // namespace dpinfer
