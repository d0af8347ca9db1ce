// The CPU Backend: forwards each op to its reference implementation in kernels/cpu/, after
// setting the calling thread's OpenMP team size to the engine's num_threads.
#include <omp.h>

#include <memory>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_ops.h"

namespace dpinfer::kernels {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads) : num_threads_(num_threads) {}
  const char* name() const override { return "cpu"; }

  void Linear(const LinearArgs& a) override {
    Prepare();
    cpu::Linear(a);
  }
  void RmsNorm(const RmsNormArgs& a) override {
    Prepare();
    cpu::RmsNorm(a);
  }
  void Rope(const RopeArgs& a) override {
    Prepare();
    cpu::Rope(a);
  }
  void SiluMul(const SiluMulArgs& a) override {
    Prepare();
    cpu::SiluMul(a);
  }
  void Embedding(const EmbeddingArgs& a) override {
    Prepare();
    cpu::Embedding(a);
  }
  void Add(const AddArgs& a) override {
    Prepare();
    cpu::Add(a);
  }
  void Softmax(const SoftmaxArgs& a) override {
    Prepare();
    cpu::Softmax(a);
  }
  void CacheWrite(const CacheWriteArgs& a) override {
    Prepare();
    cpu::CacheWrite(a);
  }
  void PagedAttention(const PagedAttentionArgs& a) override {
    Prepare();
    cpu::PagedAttention(a);
  }

 private:
  // omp_set_num_threads sets a per-thread ICV; setting it before every op keeps two engines
  // owned by different threads from changing each other's team size.
  void Prepare() const {
    if (num_threads_ > 0) omp_set_num_threads(num_threads_);
  }
  int num_threads_;
};

}  // namespace

std::unique_ptr<Backend> NewCpuBackend(int num_threads) {
  return std::make_unique<CpuBackend>(num_threads);
}

}  // namespace dpinfer::kernels
