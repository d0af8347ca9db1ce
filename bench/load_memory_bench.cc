// Weight loading: peak memory against the size of the loaded weights, and load speed.
// Loads a model directory with the CPU engine's LlamaModel and reports, from /proc/self/status,
// how much the process's peak resident memory grew during the load, as a ratio to the bytes of
// the fp32 weights it ended with (the target: under 1.2, i.e. no second full copy), and the
// checkpoint bytes read per second. Run it twice: the second run reads from the page cache.
//
// usage: load_memory_bench MODEL_DIR
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "common/safetensors.h"
#include "kernels/backend.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/model_config.h"

namespace {

// VmHWM / VmRSS in bytes.
int64_t StatusBytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  auto config = dpinfer::engine::LoadModelConfig(dir);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  int64_t file_bytes = 0;
  int64_t weight_bytes = 0;
  {
    auto ckpt = dpinfer::Checkpoint::Open(dir);
    if (!ckpt.ok()) return 1;
    for (const auto& name : (*ckpt)->Names()) {
      if (config->tie_word_embeddings && name == "lm_head.weight") continue;
      const auto* t = (*ckpt)->Find(name);
      file_bytes += t->nbytes;
      weight_bytes += t->numel() * 4;
    }
  }
  auto backend = dpinfer::kernels::NewCpuBackend(1);
  const int64_t rss_before = StatusBytes("VmRSS");
  const int64_t hwm_before = StatusBytes("VmHWM");
  const auto start = std::chrono::steady_clock::now();
  auto model = dpinfer::engine::LlamaModel::Load(dir, *config, backend.get());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  const int64_t peak = StatusBytes("VmHWM");
  const int64_t rss_after = StatusBytes("VmRSS");
  const int64_t growth = peak - std::max(rss_before, std::min(hwm_before, rss_before));
  std::printf("checkpoint bytes        %.3f GB\n", file_bytes / 1e9);
  std::printf("fp32 weight bytes       %.3f GB\n", weight_bytes / 1e9);
  std::printf("RSS before / after load %.3f / %.3f GB\n", rss_before / 1e9, rss_after / 1e9);
  std::printf("peak RSS growth         %.3f GB\n", growth / 1e9);
  std::printf("peak growth / weights   %.3f\n", static_cast<double>(growth) / weight_bytes);
  std::printf("load time               %.2f s (%.2f GB/s of checkpoint)\n", seconds,
              file_bytes / 1e9 / seconds);
  return 0;
}
