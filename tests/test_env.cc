#include "tests/test_env.h"

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <vector>

namespace dpinfer::testing {
namespace {
std::mutex g_mu;
std::vector<std::string>* g_dirs = nullptr;
void RemoveDirs() {
  if (g_dirs == nullptr || std::getenv("DPINFER_KEEP_TEST_DIRS") != nullptr) return;
  for (const auto& d : *g_dirs) {
    std::error_code ec;
    std::filesystem::remove_all(d, ec);
  }
}
}  // namespace

std::string SharedDir() {
  const char* env = std::getenv("DPINFER_SHARED_DIR");
  return env != nullptr ? env : DPINFER_SHARED_DIR;
}

bool HaveShared() { return std::filesystem::exists(SharedDir() + "/models/stories260K/config.json"); }

std::string BinDir() {
  // Overridable so that test binaries carried to another machine (the GPU host) find the
  // binaries they run beside them.
  const char* env = std::getenv("DPINFER_BIN_DIR");
  return env != nullptr ? env : DPINFER_BIN_DIR;
}

std::string MakeTempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "dpinfer_test_XXXXXX").string();
  char* d = mkdtemp(tmpl.data());
  if (d == nullptr) std::abort();
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_dirs == nullptr) {
    g_dirs = new std::vector<std::string>();
    std::atexit(RemoveDirs);
  }
  g_dirs->push_back(d);
  return d;
}

}  // namespace dpinfer::testing
