// Sustained memory read bandwidth of this machine, the ceiling for decode: a
// decode step reads every weight once, so tokens/s <= bandwidth / weight bytes.
#pragma once

#include <cstddef>

namespace edgelm {

class ThreadPool;

// Streams a buffer of `bytes` (use well above the last-level cache) with all
// threads of `pool`, several times, and returns the best rate in GB/s (1e9 B/s).
double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes = size_t{512} << 20);

}  // namespace edgelm
