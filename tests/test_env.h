// Where tests find things: the reference data in ../shared, the built binaries, scratch dirs.
#pragma once

#include <string>

namespace dpinfer::testing {

// ../shared beside the checkout (DESIGN.md: read-only reference data; CI has it).
std::string SharedDir();
// True when ../shared is present; tests that need it GTEST_SKIP with the reason otherwise.
bool HaveShared();
// build/bin, where dpinfer, dpinfer-coordinator and dpinfer-worker are.
std::string BinDir();
// A fresh empty directory under the system temp dir, removed at process exit.
std::string MakeTempDir();

}  // namespace dpinfer::testing

#define SKIP_WITHOUT_SHARED()                                                          \
  do {                                                                                 \
    if (!::dpinfer::testing::HaveShared())                                             \
      GTEST_SKIP() << "reference data not found at " << ::dpinfer::testing::SharedDir(); \
  } while (0)
