#include "kernels/bandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "kernels/matmul_internal.h"
#include "kernels/thread_pool.h"
#include "util/error.h"

namespace edgelm {
namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// The decode kernels prefetch this far ahead too (EDGELM_QUANT_AHEAD).
constexpr int64_t kPrefetchBytes = 8192;
// Each timed repetition reads at least this much (several passes over a small
// buffer), so that a working set in L2 is not timed over a few microseconds.
constexpr size_t kBytesPerRepetition = size_t{64} << 20;

}  // namespace

double measure_read_bandwidth_gbs(ThreadPool& pool, size_t bytes) {
  constexpr size_t kAlign = 64;
  const size_t words = std::max<size_t>(bytes / sizeof(uint64_t), 1024);
  const size_t size = (words * sizeof(uint64_t) + kAlign - 1) / kAlign * kAlign;
  std::unique_ptr<void, FreeDeleter> buffer(std::aligned_alloc(kAlign, size));
  if (!buffer) fail("measure_read_bandwidth: cannot allocate ", size, " bytes");
  uint64_t* data = static_cast<uint64_t*>(buffer.get());
  const int64_t n = static_cast<int64_t>(words);
  const auto read_sum = kernels_internal::active_isa_kernels().read_sum;

  // Each thread writes (faults in) the part it will read, so pages are local to it.
  pool.parallel_for(n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) data[i] = static_cast<uint64_t>(i);
  });

  const int passes = static_cast<int>(std::max<size_t>(1, kBytesPerRepetition / size));
  std::atomic<uint64_t> sink{0};
  double best = 0;
  for (int64_t prefetch : {int64_t{0}, kPrefetchBytes}) {
    for (int rep = 0; rep < 4; ++rep) {
      const auto start = std::chrono::steady_clock::now();
      for (int pass = 0; pass < passes; ++pass) {
        pool.parallel_for(n, 4096, [&](int64_t begin, int64_t end) {
          sink.fetch_add(read_sum(data + begin, end - begin, prefetch), std::memory_order_relaxed);
        });
      }
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double read = static_cast<double>(passes) * static_cast<double>(words) * 8;
      if (seconds > 0) best = std::max(best, read / seconds);
    }
  }
  // The atomic sum is observable, so the reads cannot be optimized away.
  return best / 1e9;
}

}  // namespace edgelm
