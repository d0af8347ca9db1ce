// Helpers for tests that read the reference data: raw tensors of a reference.safetensors file
// and a UTF-8 well-formedness check that does not share code with the tokenizer under test.
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "gtest/gtest.h"

namespace dpinfer::testing {

// The raw little-endian data of a 4-byte tensor of reference.safetensors (F32 or I32).
template <typename T>
std::vector<T> ReadRaw(const SafetensorsFile& file, const std::string& name) {
  auto it = file.tensors().find(name);
  EXPECT_NE(it, file.tensors().end()) << name;
  if (it == file.tensors().end()) return {};
  std::vector<T> v(it->second.numel());
  EXPECT_EQ(it->second.nbytes, v.size() * sizeof(T));
  std::memcpy(v.data(), it->second.data, it->second.nbytes);
  return v;
}

// True when `s` is well-formed UTF-8.
inline bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace dpinfer::testing
