// The static policy must be exactly vLLM's data-parallel example split, checked over many sizes.
#include "coordinator/partitioner.h"

#include <numeric>

#include "gtest/gtest.h"

namespace dpinfer::coordinator {
namespace {

TEST(PartitionerTest, MatchesTheExampleFormulaOverManySizes) {
  for (int64_t n = 0; n <= 130; ++n) {
    for (int32_t ranks = 1; ranks <= 17; ++ranks) {
      std::vector<int64_t> items(n);
      std::iota(items.begin(), items.end(), 1000);
      auto parts = PartitionStatic(items, ranks);
      ASSERT_EQ(parts.size(), static_cast<size_t>(ranks));
      // The example, written out the way vLLM's data_parallel.py computes it.
      const int64_t floor = n / ranks, rem = n % ranks;
      int64_t next = 0;
      for (int32_t r = 0; r < ranks; ++r) {
        const int64_t start = r * floor + std::min<int64_t>(r, rem);
        const int64_t end = (r + 1) * floor + std::min<int64_t>(r + 1, rem);
        ASSERT_EQ(start, next) << "n=" << n << " ranks=" << ranks << " r=" << r;
        ASSERT_EQ(static_cast<int64_t>(parts[r].size()), end - start);
        for (int64_t i = start; i < end; ++i) ASSERT_EQ(parts[r][i - start], 1000 + i);
        // Sizes differ by at most one, bigger slices first.
        ASSERT_EQ(static_cast<int64_t>(parts[r].size()), floor + (r < rem ? 1 : 0));
        next = end;
      }
      ASSERT_EQ(next, n);
    }
  }
}

TEST(PartitionerTest, FewerRequestsThanRanksLeavesTrailingRanksEmpty) {
  auto parts = PartitionStatic({7, 8}, 5);
  EXPECT_EQ(parts[0], std::vector<int64_t>{7});
  EXPECT_EQ(parts[1], std::vector<int64_t>{8});
  for (int r = 2; r < 5; ++r) EXPECT_TRUE(parts[r].empty());
}

TEST(PartitionerTest, RemainderGoesToTheFirstRanks) {
  using Slice = std::pair<int64_t, int64_t>;
  EXPECT_EQ(StaticSlice(10, 3, 0), Slice(0, 4));
  EXPECT_EQ(StaticSlice(10, 3, 1), Slice(4, 7));
  EXPECT_EQ(StaticSlice(10, 3, 2), Slice(7, 10));
}

}  // namespace
}  // namespace dpinfer::coordinator
