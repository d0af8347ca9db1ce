#include "coordinator/partitioner.h"

#include <algorithm>

#include "common/status.h"

namespace dpinfer::coordinator {

std::pair<int64_t, int64_t> StaticSlice(int64_t n, int32_t ranks, int32_t rank) {
  CHECK(ranks >= 1 && rank >= 0 && rank < ranks && n >= 0);
  const int64_t floor = n / ranks;
  const int64_t rem = n % ranks;
  const int64_t begin = rank * floor + std::min<int64_t>(rank, rem);
  const int64_t end = (rank + 1) * floor + std::min<int64_t>(rank + 1, rem);
  return {begin, end};
}

std::vector<std::vector<int64_t>> PartitionStatic(const std::vector<int64_t>& items,
                                                  int32_t ranks) {
  std::vector<std::vector<int64_t>> parts(ranks);
  for (int32_t r = 0; r < ranks; ++r) {
    auto [begin, end] = StaticSlice(static_cast<int64_t>(items.size()), ranks, r);
    parts[r].assign(items.begin() + begin, items.begin() + end);
  }
  return parts;
}

}  // namespace dpinfer::coordinator
