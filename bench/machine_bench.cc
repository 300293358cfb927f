// Facts about this machine that set the kernels' limits, for docs/BENCHMARKS.md:
// how many vector FMAs (f32) and VNNI dot products (vpdpbusd) one core retires
// per nanosecond at each register width, from 12 independent chains, and how
// long a cache line takes to go from one thread to another (a decode step's
// stage flag and counters move that way between the threads).
//
//   build/bin/machine_bench
//
// Glanes/s is values (f32) or bytes (vpdpbusd) per second, the figure to
// compare between widths. On the 2-vCPU Zen 4 EPYC of docs/BENCHMARKS.md
// (2026-12-07): FMA 58 Glanes/s and vpdpbusd 230-234 Gbytes/s at both widths
// (3.6 G zmm ops/s, one per cycle at 3.6 GHz), one FMA per 8 vpdpbusd costs
// 12% of them and an add or a convert nothing; a line hand-off 44-55 ns.
// Before the chain loops were unrolled (2026-12-07) this program read Zen 4 at
// less than half those rates, and the Xeon figures of that day (zmm FMA 42-44
// Glanes/s, vpdpbusd zmm 189-199) are lower bounds for the same reason.
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
// step one OP(acc, b) per chain. The empty asm makes each accumulator's start
// and b opaque, so no two chains can be merged nor any step folded; the chain
// loop is unrolled and nothing takes the accumulators' address, so they stay in
// registers (an asm on every accumulator every step kept them in memory, and
// each step waited on store forwarding: Zen 4's vpdpbusd zmm read 1.6 G/s
// instead of 3.6). A macro, not a template: the intrinsics need the target
// attribute of the function they are expanded in.
#define EDGELM_CHAINS(V, init, b_init, OP)                                                  \
  V acc[kChains];                                                                           \
  _Pragma("GCC unroll 16") for (int i = 0; i < kChains; ++i) {                              \
    acc[i] = init;                                                                          \
    asm volatile("" : "+v"(acc[i]));                                                        \
  }                                                                                         \
  V b = b_init;                                                                             \
  for (auto _ : state) {                                                                    \
    for (int64_t s = 0; s < kSteps; ++s) {                                                  \
      asm volatile("" : "+v"(b));                                                           \
      _Pragma("GCC unroll 16") for (int i = 0; i < kChains; ++i) acc[i] = OP(acc[i], b, b); \
    }                                                                                       \
  }                                                                                         \
  V sum = acc[0];                                                                           \
  _Pragma("GCC unroll 16") for (int i = 1; i < kChains; ++i) {                              \
    asm volatile("" : "+v"(sum) : "v"(acc[i]));                                             \
  }                                                                                         \
  benchmark::DoNotOptimize(sum);

__attribute__((target("avx2,fma"))) void fma_ymm(benchmark::State& state) {
  EDGELM_CHAINS(__m256, _mm256_set1_ps(1.0f), _mm256_set1_ps(0.999f), _mm256_fmadd_ps)
  report_ops(state, 8);
}

__attribute__((target("avx512f"))) void fma_zmm(benchmark::State& state) {
  EDGELM_CHAINS(__m512, _mm512_set1_ps(1.0f), _mm512_set1_ps(0.999f), _mm512_fmadd_ps)
  report_ops(state, 16);
}

__attribute__((target("avx512f,avx512vl,avx512vnni"))) void dpbusd_ymm(benchmark::State& state) {
  EDGELM_CHAINS(__m256i, _mm256_set1_epi32(1), _mm256_set1_epi8(3), _mm256_dpbusd_epi32)
  report_ops(state, 32);  // bytes
}

__attribute__((target("avx512f,avx512vnni"))) void dpbusd_zmm(benchmark::State& state) {
  EDGELM_CHAINS(__m512i, _mm512_set1_epi32(1), _mm512_set1_epi8(3), _mm512_dpbusd_epi32)
  report_ops(state, 64);  // bytes
}
#undef EDGELM_CHAINS

// The quantized GEMM's mix: 8 vpdpbusd chains and, per step, one float op of
// kind OP on a ninth chain (the per-block scale of matmul_quant_gemm_x86.h).
// Gops/s counts the vpdpbusd only, so the drop from vpdpbusd/zmm is what one
// float op per 8 costs. On Zen 4 an FMA or multiply takes a vpdpbusd's slot
// (-11%) and an add or int->float convert does not.
// GCC 12 reports its own AVX-512 intrinsics (_mm512_undefined_*) as uninitialized.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <int kOp>  // 0: vfmadd, 1: vaddps, 2: vcvtdq2ps
__attribute__((target("avx512f,avx512vnni"))) void dpbusd_with_float(benchmark::State& state) {
  constexpr int kDots = 8;
  __m512i acc[kDots];
#pragma GCC unroll 8
  for (int i = 0; i < kDots; ++i) {
    acc[i] = _mm512_set1_epi32(i);
    asm volatile("" : "+v"(acc[i]));
  }
  __m512i b = _mm512_set1_epi8(3);
  __m512 f = _mm512_set1_ps(1.0f), c = _mm512_set1_ps(0.999f);
  for (auto _ : state) {
    for (int64_t s = 0; s < kSteps; ++s) {
      asm volatile("" : "+v"(b), "+v"(c));
#pragma GCC unroll 8
      for (int i = 0; i < kDots; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], b, b);
      if constexpr (kOp == 0) f = _mm512_fmadd_ps(f, c, c);
      if constexpr (kOp == 1) f = _mm512_add_ps(f, c);
      if constexpr (kOp == 2) f = _mm512_cvtepi32_ps(_mm512_castps_si512(c));
      asm volatile("" : "+v"(f));
    }
  }
  __m512i sum = acc[0];
#pragma GCC unroll 8
  for (int i = 1; i < kDots; ++i) asm volatile("" : "+v"(sum) : "v"(acc[i]));
  asm volatile("" : "+v"(sum) : "v"(f));
  benchmark::DoNotOptimize(sum);
  const double ops = static_cast<double>(kSteps) * kDots;
  state.counters["Gops/s"] =
      benchmark::Counter(ops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
#pragma GCC diagnostic pop
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
  if (f.avx512vnni) {
    benchmark::RegisterBenchmark("vpdpbusd/zmm", dpbusd_zmm);
    benchmark::RegisterBenchmark("vpdpbusd/zmm+1fma/8", dpbusd_with_float<0>);
    benchmark::RegisterBenchmark("vpdpbusd/zmm+1add/8", dpbusd_with_float<1>);
    benchmark::RegisterBenchmark("vpdpbusd/zmm+1cvt/8", dpbusd_with_float<2>);
  }
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
