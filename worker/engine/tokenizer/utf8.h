// The one table of well-formed UTF-8 that the tokenizer's lossy decoding (tokenizer.cc) and the
// incremental detokenizer both follow (Unicode's table 3-7: no overlong forms, surrogates or code
// points past U+10FFFF).
#pragma once

#include <cstddef>

namespace dpinfer::engine {

// For a byte that starts a multi-byte sequence: its length `n` and the allowed range [lo, hi] of
// its second byte. False for ASCII, continuation bytes and bytes that start no sequence.
inline bool Utf8Lead(unsigned char c, size_t* n, unsigned char* lo, unsigned char* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    *n = 2;
  } else if (c == 0xE0) {
    *n = 3, *lo = 0xA0;
  } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
    *n = 3;
  } else if (c == 0xED) {
    *n = 3, *hi = 0x9F;
  } else if (c == 0xF0) {
    *n = 4, *lo = 0x90;
  } else if (c >= 0xF1 && c <= 0xF3) {
    *n = 4;
  } else if (c == 0xF4) {
    *n = 4, *hi = 0x8F;
  } else {
    return false;
  }
  return true;
}

}  // namespace dpinfer::engine
