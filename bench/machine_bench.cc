// Facts about this machine that set the kernels' limits, for docs/BENCHMARKS.md:
// how many vector FMAs (f32) and VNNI dot products (vpdpbusd) one core retires
// per nanosecond at each register width, from 12 independent chains, and how
// long a cache line takes to go from one thread to another (a decode step's
// stage flag and counters move that way between the threads).
//
//   build/bin/machine_bench
//
// Glanes/s is values (f32) or bytes (vpdpbusd) per second, the figure to
// compare between widths. On the 2-vCPU Xeon of docs/BENCHMARKS.md (2026-12-07):
// zmm FMA 42-44 Glanes/s against ymm 28-29 (1.5x, not the 2x of twice the
// width), vpdpbusd zmm 189-199 Gbytes/s against ymm 124-128, and a
// line hand-off between the two threads 57-59 ns.
#include <benchmark/benchmark.h>

#include <atomic>
#include <thread>

#include "kernels/cpu_features.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace edgelm {
namespace {

#if defined(__x86_64__)
constexpr int kChains = 12;       // enough independent chains to cover the latency
constexpr int64_t kSteps = 4096;  // per benchmark iteration, each step one op per chain

void report_ops(benchmark::State& state, int lanes) {
  const double ops = static_cast<double>(kSteps) * kChains;
  state.counters["Gops/s"] =
      benchmark::Counter(ops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["Glanes/s"] =
      benchmark::Counter(ops * lanes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// The body of each throughput benchmark: kChains accumulators of type V, each
// step one OP(acc, b) per chain; the empty asm keeps every chain live in a
// register, so that none is dropped or merged. A macro, not a template: the
// intrinsics need the target attribute of the function they are expanded in.
#define EDGELM_CHAINS(V, init, b, OP)                              \
  V acc[kChains];                                                  \
  for (V & a : acc) a = init;                                      \
  for (auto _ : state) {                                           \
    for (int64_t s = 0; s < kSteps; ++s) {                         \
      for (int i = 0; i < kChains; ++i) acc[i] = OP(acc[i], b, b); \
      for (V & a : acc) asm volatile("" : "+v"(a));                \
    }                                                              \
  }                                                                \
  for (V & a : acc) benchmark::DoNotOptimize(a);

__attribute__((target("avx2,fma"))) void fma_ymm(benchmark::State& state) {
  const __m256 b = _mm256_set1_ps(0.999f);
  EDGELM_CHAINS(__m256, _mm256_set1_ps(1.0f), b, _mm256_fmadd_ps)
  report_ops(state, 8);
}

__attribute__((target("avx512f"))) void fma_zmm(benchmark::State& state) {
  const __m512 b = _mm512_set1_ps(0.999f);
  EDGELM_CHAINS(__m512, _mm512_set1_ps(1.0f), b, _mm512_fmadd_ps)
  report_ops(state, 16);
}

__attribute__((target("avx512f,avx512vl,avx512vnni"))) void dpbusd_ymm(benchmark::State& state) {
  const __m256i b = _mm256_set1_epi8(3);
  EDGELM_CHAINS(__m256i, _mm256_set1_epi32(1), b, _mm256_dpbusd_epi32)
  report_ops(state, 32);  // bytes
}

__attribute__((target("avx512f,avx512vnni"))) void dpbusd_zmm(benchmark::State& state) {
  const __m512i b = _mm512_set1_epi8(3);
  EDGELM_CHAINS(__m512i, _mm512_set1_epi32(1), b, _mm512_dpbusd_epi32)
  report_ops(state, 64);  // bytes
}
#undef EDGELM_CHAINS
#endif

// Two threads pass a counter back and forth: each hand-off is one cache line
// moving from the core that wrote it to the one waiting for it.
void line_handoff(benchmark::State& state) {
  alignas(64) std::atomic<int64_t> turn{0};
  std::atomic<bool> stop{false};
  std::thread other([&] {
    int64_t expect = 1;
    while (!stop.load(std::memory_order_relaxed)) {
      if (turn.load(std::memory_order_acquire) == expect) {
        turn.store(expect + 1, std::memory_order_release);
        expect += 2;
      }
    }
  });
  int64_t next = 0;
  for (auto _ : state) {
    for (int i = 0; i < 1000; ++i) {
      turn.store(next + 1, std::memory_order_release);
      while (turn.load(std::memory_order_acquire) != next + 2) {
      }
      next += 2;
    }
  }
  stop.store(true);
  other.join();
  // Two hand-offs per round trip; the inverted rate of 1e-9 per hand-off is ns per hand-off.
  state.counters["ns/handoff"] = benchmark::Counter(
      2000e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void register_all() {
#if defined(__x86_64__)
  const CpuFeatures& f = cpu_features();
  if (f.avx2 && f.fma) benchmark::RegisterBenchmark("fma_f32/ymm", fma_ymm);
  if (f.avx512f) benchmark::RegisterBenchmark("fma_f32/zmm", fma_zmm);
  if (f.avx512vnni && f.avx512vl) benchmark::RegisterBenchmark("vpdpbusd/ymm", dpbusd_ymm);
  if (f.avx512vnni) benchmark::RegisterBenchmark("vpdpbusd/zmm", dpbusd_zmm);
#endif
  if (std::thread::hardware_concurrency() >= 2) {
    benchmark::RegisterBenchmark("cache_line_handoff", line_handoff)->UseRealTime();
  }
}

}  // namespace
}  // namespace edgelm

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  edgelm::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
