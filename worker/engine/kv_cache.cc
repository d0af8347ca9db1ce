// Block allocation for the paged KV cache (see kv_cache.h).
#include "worker/engine/kv_cache.h"

#include "common/status.h"

namespace dpinfer::engine {

KvCache::KvCache(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t num_kv_heads,
                 int64_t head_dim)
    : num_blocks_(num_blocks), block_size_(block_size), in_use_(num_blocks, false) {
  CHECK(num_blocks > 0 && block_size > 0);
  free_.reserve(num_blocks);
  // Pushed in reverse so that allocation starts with block 0 (easier to read in a debugger).
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
  // Built per layer: with no layers (a device holds the storage) nothing is allocated, not even
  // the one zeroed prototype that assign(n, vector(floats)) would build (gigabytes for a GPU cache).
  const int64_t floats = num_blocks * block_size * num_kv_heads * head_dim;
  for (int64_t i = 0; i < num_layers; ++i) {
    k_.emplace_back(floats, 0.0f);
    v_.emplace_back(floats, 0.0f);
  }
}

bool KvCache::EnsureCapacity(std::vector<int32_t>* block_table, int64_t num_tokens) {
  const int64_t have = static_cast<int64_t>(block_table->size());
  const int64_t need = BlocksFor(num_tokens) - have;
  if (need <= 0) return true;
  if (need > num_free_blocks()) return false;
  for (int64_t i = 0; i < need; ++i) {
    const int32_t b = free_.back();
    free_.pop_back();
    in_use_[b] = true;
    block_table->push_back(b);
  }
  return true;
}

void KvCache::Free(std::vector<int32_t>* block_table) {
  for (int32_t b : *block_table) {
    CHECK(b >= 0 && b < num_blocks_ && in_use_[b]);
    in_use_[b] = false;
    free_.push_back(b);
  }
  block_table->clear();
}

int32_t KvCache::Slot(const std::vector<int32_t>& block_table, int64_t position) const {
  const int64_t logical = position / block_size_;
  CHECK(position >= 0 && logical < static_cast<int64_t>(block_table.size()));
  return static_cast<int32_t>(block_table[logical] * block_size_ + position % block_size_);
}

}  // namespace dpinfer::engine
