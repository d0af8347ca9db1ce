// The paged KV cache of one replica: a pool of fixed-size blocks (block_size tokens each) holding
// every layer's keys and values, and the block allocator that hands them to sequences. A sequence
// owns a block table (its logical block i -> physical block id); its token at position p lives in
// slot table[p / block_size] * block_size + p % block_size. Blocks are allocated only for tokens
// that are about to be computed, so capacity is spent on what is actually cached.
#pragma once

#include <cstdint>
#include <vector>

namespace dpinfer::engine {

class KvCache {
 public:
  // Storage for num_layers x {K, V} of [num_blocks, block_size, num_kv_heads, head_dim] floats.
  KvCache(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t num_kv_heads,
          int64_t head_dim);

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()); }
  // Blocks needed to hold `num_tokens` tokens.
  int64_t BlocksFor(int64_t num_tokens) const {
    return (num_tokens + block_size_ - 1) / block_size_;
  }

  // Grows `block_table` so it covers `num_tokens` tokens. All or nothing: returns false (and
  // allocates nothing) when the free blocks don't suffice.
  bool EnsureCapacity(std::vector<int32_t>* block_table, int64_t num_tokens);
  // Returns every block of the table to the pool and clears it.
  void Free(std::vector<int32_t>* block_table);

  // Slot of the token at `position` of a sequence with this table (CHECKs it is allocated).
  int32_t Slot(const std::vector<int32_t>& block_table, int64_t position) const;

  float* k(int64_t layer) { return k_[layer].data(); }
  float* v(int64_t layer) { return v_[layer].data(); }

 private:
  int64_t num_blocks_;
  int64_t block_size_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
  std::vector<bool> in_use_;   // guards against double frees
  std::vector<std::vector<float>> k_;
  std::vector<std::vector<float>> v_;
};

}  // namespace dpinfer::engine
