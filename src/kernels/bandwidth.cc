#include "kernels/bandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "kernels/thread_pool.h"
#include "util/error.h"

namespace edgelm {
namespace {

// Sums 64-byte lines with 8 independent accumulators: cheap enough per byte
// that one core can read faster than DRAM delivers.
uint64_t sum_words(const uint64_t* p, size_t count) {
  uint64_t a[8] = {};
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    for (int j = 0; j < 8; ++j) a[j] += p[i + j];
  }
  for (; i < count; ++i) a[0] += p[i];
  return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

}  // namespace

double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes) {
  constexpr size_t kAlign = 64;
  const size_t words = std::max<size_t>(bytes / sizeof(uint64_t), 1024);
  const size_t size = (words * sizeof(uint64_t) + kAlign - 1) / kAlign * kAlign;
  std::unique_ptr<void, FreeDeleter> buffer(std::aligned_alloc(kAlign, size));
  if (!buffer) fail("measure_read_bandwidth: cannot allocate ", size, " bytes");
  uint64_t* data = static_cast<uint64_t*>(buffer.get());
  const int64_t n = static_cast<int64_t>(words);

  // Each thread writes (faults in) the part it will read, so pages are local to it.
  pool.parallel_for(n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) data[i] = static_cast<uint64_t>(i);
  });

  std::atomic<uint64_t> sink{0};
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    pool.parallel_for(n, 4096, [&](int64_t begin, int64_t end) {
      sink.fetch_add(sum_words(data + begin, static_cast<size_t>(end - begin)),
                     std::memory_order_relaxed);
    });
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (seconds > 0) best = std::max(best, static_cast<double>(words * sizeof(uint64_t)) / seconds);
  }
  // The atomic sum is observable, so the reads cannot be optimized away.
  return best / 1e9;
}

}  // namespace edgelm
