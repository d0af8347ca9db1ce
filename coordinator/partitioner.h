// How a job's requests are split over DP ranks. `static` is exactly vLLM's data-parallel offline
// example: rank r gets the contiguous slice [r*floor + min(r, rem), (r+1)*floor + min(r+1, rem))
// where floor = n / ranks and rem = n % ranks, so slices differ in size by at most one and the
// first `rem` ranks take one extra request.
//
// Unlike the example, a rank with an empty slice needs no placeholder prompt: the example's ranks
// form one torch.distributed data-parallel group whose collective steps every rank must join,
// while dpinfer's replicas are independent daemons that never synchronise with each other, so a
// rank without requests simply receives no shard.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace dpinfer::coordinator {

// [begin, end) of rank `rank` among `ranks` for `n` requests. Requires ranks >= 1.
std::pair<int64_t, int64_t> StaticSlice(int64_t n, int32_t ranks, int32_t rank);

// Splits `items` (in order) into `ranks` contiguous slices by StaticSlice.
std::vector<std::vector<int64_t>> PartitionStatic(const std::vector<int64_t>& items, int32_t ranks);

}  // namespace dpinfer::coordinator
