// Sustained read bandwidth of this machine, the ceiling for decode: a decode
// step reads every weight once, so tokens/s <= bandwidth / bytes per token.
#pragma once

#include <cstddef>

namespace edgelm {

class ThreadPool;

// What a read from main memory gets: a buffer well above the last-level cache
// (the 2.1 GHz Xeons here report a 300 MiB L3).
inline constexpr size_t kMainMemoryBytes = size_t{1} << 30;

// Streams a buffer of `bytes` with all threads of `pool` using this CPU's
// widest loads, with and without software prefetching, several times, and
// returns the best rate in GB/s (1e9 B/s). A working set that fits a cache
// measures that cache: pass the bytes a decode step reads to get the roofline
// of that model on this machine.
double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes = kMainMemoryBytes);

}  // namespace edgelm
