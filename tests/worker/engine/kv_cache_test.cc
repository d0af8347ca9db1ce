// The paged KV cache's block accounting: all-or-nothing growth, frees, slots.
#include "worker/engine/kv_cache.h"

#include <set>

#include "gtest/gtest.h"

namespace dpinfer::engine {
namespace {

TEST(KvCacheTest, AllocatesOnlyWhatIsNeeded) {
  KvCache cache(/*num_layers=*/2, /*num_blocks=*/4, /*block_size=*/4, /*num_kv_heads=*/2,
                /*head_dim=*/8);
  EXPECT_EQ(cache.num_free_blocks(), 4);
  EXPECT_EQ(cache.BlocksFor(0), 0);
  EXPECT_EQ(cache.BlocksFor(4), 1);
  EXPECT_EQ(cache.BlocksFor(5), 2);
  std::vector<int32_t> a;
  ASSERT_TRUE(cache.EnsureCapacity(&a, 5));
  EXPECT_EQ(a.size(), 2u);
  EXPECT_EQ(cache.num_free_blocks(), 2);
  ASSERT_TRUE(cache.EnsureCapacity(&a, 8));  // still fits in 2 blocks
  EXPECT_EQ(a.size(), 2u);
  std::vector<int32_t> b;
  EXPECT_FALSE(cache.EnsureCapacity(&b, 9));  // needs 3, only 2 free: nothing allocated
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(cache.num_free_blocks(), 2);
  ASSERT_TRUE(cache.EnsureCapacity(&b, 8));
  EXPECT_EQ(cache.num_free_blocks(), 0);
  std::set<int32_t> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 4u);  // distinct blocks
  cache.Free(&a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(cache.num_free_blocks(), 2);
  ASSERT_TRUE(cache.EnsureCapacity(&b, 16));
  EXPECT_EQ(cache.num_free_blocks(), 0);
  cache.Free(&b);
  EXPECT_EQ(cache.num_free_blocks(), 4);
}

TEST(KvCacheTest, SlotsFollowTheBlockTable) {
  KvCache cache(1, 8, 4, 1, 2);
  std::vector<int32_t> t = {5, 2, 7};
  EXPECT_EQ(cache.Slot(t, 0), 20);
  EXPECT_EQ(cache.Slot(t, 3), 23);
  EXPECT_EQ(cache.Slot(t, 4), 8);
  EXPECT_EQ(cache.Slot(t, 11), 31);
}

TEST(KvCacheTest, StorageCoversEveryLayer) {
  KvCache cache(3, 2, 4, 2, 8);
  for (int l = 0; l < 3; ++l) {
    cache.k(l)[2 * 4 * 2 * 8 - 1] = 1.0f;  // last float of the pool is addressable
    cache.v(l)[0] = 1.0f;
    EXPECT_NE(cache.k(l), cache.v(l));
  }
}

}  // namespace
}  // namespace dpinfer::engine
