// Quantized-weight kernels: decode matvec (bytes/s and fraction of the
// measured read bandwidth, the roofline) and 128-token prefill, for every
// quantized type at the matrix shapes of SmolLM2-135M, Qwen2.5-0.5B and
// TinyLlama-1.1B, with the best ISA of this CPU (--isa=all adds the others).
// Ends with a one-line summary per type and thread count.
//
// Decode cycles through copies of the weights totalling 256 MiB so every
// matvec streams from DRAM, as a real forward pass does.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/bandwidth.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/quant_formats.h"
#include "kernels/thread_pool.h"
#include "util/half.h"

namespace edgelm {
namespace {

struct Shape {
  const char* model;
  int64_t rows, cols;
};
constexpr Shape kShapes[] = {{"smollm2-135m", 576, 576},    {"smollm2-135m", 1536, 576},
                             {"smollm2-135m", 576, 1536},   {"qwen2.5-0.5b", 4864, 896},
                             {"qwen2.5-0.5b", 896, 4864},   {"tinyllama-1.1b", 5632, 2048},
                             {"tinyllama-1.1b", 2048, 5632}};
// The interleaved layouts (q4_0x16, q5_0x16, q4_Kx16, q8_0x16) are what Model::load
// makes of Q4_0 / Q5_0 / Q4_K where interleaved_weights_preferred().
constexpr DType kTypes[] = {DType::Q8_0, DType::Q8_0_X16, DType::Q4_0,     DType::Q4_0_X16,
                            DType::Q4_K, DType::Q4_K_X16, DType::Q5_K,     DType::Q6_K,
                            DType::Q4_1, DType::Q5_0,     DType::Q5_0_X16, DType::Q5_1,
                            DType::Q2_K, DType::Q3_K,     DType::FP8_E4M3, DType::F16};
constexpr int64_t kPrefillTokens = 128;  // the prompt length
// Decode weights are cycled through this many bytes so that they come from
// memory (--weights_mib=N; 0: one copy, i.e. from cache, the kernels' compute
// ceiling). The bandwidth column reads a working set of the same size.
size_t g_cold_bytes = size_t{256} << 20;

ThreadPool& pool_of(int threads) {
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  auto& p = pools[threads];
  if (!p) p = std::make_unique<ThreadPool>(threads);
  return *p;
}

double bandwidth_gbs(int threads) {
  static std::map<int, double> cache;
  auto it = cache.find(threads);
  if (it != cache.end()) return it->second;
  return cache[threads] = measure_read_bandwidth_gbs(pool_of(threads), g_cold_bytes);
}

// Offsets of the f16 scales in a block, set to small finite values: random
// bytes there could be inf/NaN, which some CPUs handle slowly.
std::vector<size_t> scale_offsets(DType type) {
  switch (type) {
    case DType::Q4_1:
    case DType::Q5_1:
    case DType::Q4_K:
    case DType::Q5_K:
      return {0, 2};
    case DType::Q2_K:
      return {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)};
    case DType::Q3_K:
      return {offsetof(BlockQ3_K, d)};
    case DType::Q6_K:
      return {offsetof(BlockQ6_K, d)};
    case DType::F16:
      return {};
    default:
      return {0};
  }
}

struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<WeightMatrix> copies;
};

// Random quant bytes (speed does not depend on the values) with sane scales.
Weights make_weights(DType stored_type, const Shape& shape, size_t min_total_bytes) {
  const DType type = x16_row_major(stored_type);  // generated row-major, then interleaved
  const size_t row_bytes = dtype_row_bytes(type, shape.cols);
  const size_t matrix_bytes = row_bytes * static_cast<size_t>(shape.rows);
  const size_t count = std::max<size_t>(1, (min_total_bytes + matrix_bytes - 1) / matrix_bytes);
  Weights w;
  w.bytes.resize(matrix_bytes * count);
  std::mt19937 rng(1);
  for (size_t i = 0; i + 4 <= w.bytes.size(); i += 4) {
    const uint32_t v = rng();
    std::memcpy(w.bytes.data() + i, &v, 4);
  }
  const DTypeTraits& traits = dtype_traits(type);
  const std::vector<size_t> scales = scale_offsets(type);
  const uint16_t small = fp32_to_fp16(0.01f);
  if (type == DType::F16) {
    for (size_t i = 0; i + 2 <= w.bytes.size(); i += 2) std::memcpy(w.bytes.data() + i, &small, 2);
  }
  if (type == DType::FP8_E4M3) {
    // Normal codes only (sign, exponent 1..14): random bytes would make 1/16 of
    // them subnormal and 1/128 NaN, while quantized weights are almost never
    // either (subnormal means below 1/28672 of the block's largest value).
    for (uint8_t& b : w.bytes) b = static_cast<uint8_t>((b & 0x80) | (8 + (b & 0x7F) % 112));
  }
  for (size_t off = 0; !scales.empty() && off < w.bytes.size(); off += traits.block_bytes) {
    for (size_t s : scales) std::memcpy(w.bytes.data() + off + s, &small, 2);
  }
  std::vector<uint8_t> row_major(type != stored_type ? matrix_bytes : 0);
  for (size_t c = 0; c < count; ++c) {
    uint8_t* data = w.bytes.data() + c * matrix_bytes;
    if (type != stored_type) {
      std::memcpy(row_major.data(), data, matrix_bytes);
      interleave_x16(type, row_major.data(), shape.rows, shape.cols, data);
    }
    w.copies.push_back({stored_type, shape.rows, shape.cols, data, row_bytes});
  }
  return w;
}

struct Timing {
  double decode_s = 0;   // per token
  double prefill_s = 0;  // per token
  double weight_bytes = 0;
};
// "type|model|threads" -> shape -> timing of the last run (Google Benchmark
// calls a benchmark several times while it picks the iteration count).
std::map<std::string, std::map<std::string, Timing>> g_timings;

void run_matmul(benchmark::State& state, Isa isa, DType type, Shape shape, int threads, int64_t n) {
  set_active_isa(isa);
  ThreadPool& pool = pool_of(threads);
  const bool decode = n == 1;
  Weights w = make_weights(type, shape, decode ? g_cold_bytes : 0);
  std::vector<float> x(static_cast<size_t>(n * shape.cols));
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (float& v : x) v = dist(rng);
  std::vector<float> y(static_cast<size_t>(n * shape.rows));
  size_t next = 0;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    matmul(w.copies[next], x.data(), n, y.data(), &pool);
    benchmark::DoNotOptimize(y.data());
    next = next + 1 == w.copies.size() ? 0 : next + 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double matrix_bytes = static_cast<double>(w.copies[0].row_bytes * shape.rows);
  const double iters = static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(iters * matrix_bytes));
  state.counters["tokens/s"] = benchmark::Counter(iters * n, benchmark::Counter::kIsRate);
  if (decode) {
    const double bw = bandwidth_gbs(threads);
    state.counters["bw_GB/s"] = bw;
    state.counters["roofline"] =
        benchmark::Counter(iters * matrix_bytes / 1e9 / bw, benchmark::Counter::kIsRate);
  }
  if (isa == best_supported_isa() && seconds > 0) {
    // Per-model totals for the summary: time per token summed over its shapes.
    Timing& t =
        g_timings[std::string(dtype_name(type)) + "|" + shape.model + "|" + std::to_string(threads)]
                 [std::to_string(shape.rows) + "x" + std::to_string(shape.cols)];
    if (decode) {
      t.decode_s = seconds / iters;
      t.weight_bytes = matrix_bytes;
    } else {
      t.prefill_s = seconds / (iters * n);
    }
  }
  set_active_isa(best_supported_isa());
}

bool fits(DType type, const Shape& shape) {
  return shape.cols % dtype_traits(type).block_size == 0 &&
         (!is_x16_layout(type) || shape.rows % kX16Rows == 0);
}

void register_all(bool all_isas) {
  const Isa isas[] = {Isa::kScalar, Isa::kAvx2,        Isa::kAvx512,
                      Isa::kNeon,   Isa::kNeonDotprod, Isa::kNeonI8mm};
  for (int64_t n : {int64_t{1}, kPrefillTokens}) {
    for (Isa isa : isas) {
      if (!isa_supported(isa) || (!all_isas && isa != best_supported_isa())) continue;
      for (DType type : kTypes) {
        for (const Shape& shape : kShapes) {
          if (!fits(type, shape)) continue;
          for (int threads : {1, 2}) {
            const std::string name = std::string(n == 1 ? "matvec/" : "matmul_n128/") +
                                     dtype_name(type) + "/" + isa_name(isa) + "/" +
                                     std::to_string(shape.rows) + "x" + std::to_string(shape.cols) +
                                     "/threads:" + std::to_string(threads);
            benchmark::RegisterBenchmark(name.c_str(), run_matmul, isa, type, shape, threads, n)
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
          }
        }
      }
    }
  }
  // Short prompts (a chat turn, speculative drafts): time per token of a 2048 x 2048
  // matmul at 2..32 tokens, the range where the repacked GEMM takes over from
  // per-token kernels (kGemmMinTokens). Not part of the summary.
  const Shape short_shape = {"short-prompt", 2048, 2048};
  for (DType type : {DType::Q8_0, DType::Q4_K}) {
    for (int64_t n : {2, 4, 8, 16, 32}) {
      const std::string name = std::string("short_prefill/") + dtype_name(type) + "/" +
                               isa_name(best_supported_isa()) + "/n:" + std::to_string(n);
      benchmark::RegisterBenchmark(name.c_str(), run_matmul, best_supported_isa(), type,
                                   short_shape, 1, n)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

// BM_QuantizeActs: quantizing one token's activations (done once per matmul
// call), the scalar reference vs this CPU's SIMD versions.
void BM_QuantizeActs(benchmark::State& state, kernels_internal::QuantizeActsFn quantize,
                     int64_t cols) {
  std::vector<float> x(static_cast<size_t>(cols));
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (float& v : x) v = dist(rng);
  std::vector<int8_t> q(static_cast<size_t>(cols));
  std::vector<float> d(static_cast<size_t>(cols / 32)), dsum(static_cast<size_t>(cols / 32));
  std::vector<int16_t> s32(static_cast<size_t>(cols / 32)), s16(static_cast<size_t>(cols / 16));
  for (auto _ : state) {
    quantize(x.data(), cols, q.data(), d.data(), dsum.data(), s32.data(), s16.data());
    benchmark::DoNotOptimize(q.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * cols);
}

[[maybe_unused]] const bool kQuantizeActsRegistered = [] {
  struct Variant {
    const char* name;
    Isa isa;
    void (*register_fn)(kernels_internal::IsaKernels*);
  };
  const Variant variants[] = {
      {"scalar", Isa::kScalar, kernels_internal::register_quant_scalar_kernels},
#if defined(__x86_64__) || defined(_M_X64)
      {"avx2", Isa::kAvx2, kernels_internal::register_quantize_acts_avx2},
      {"avx512", Isa::kAvx512, kernels_internal::register_quantize_acts_avx512},
#endif
#if defined(__aarch64__)
      {"neon", Isa::kNeon, kernels_internal::register_quantize_acts_neon},
#endif
  };
  static kernels_internal::IsaKernels tables[std::size(variants)];
  for (int k_quant = 0; k_quant < 2; ++k_quant) {
    for (int64_t cols : {576, 1536, 2048, 8960}) {
      if (k_quant && cols % 256 != 0) continue;
      for (size_t v = 0; v < std::size(variants); ++v) {
        if (!isa_supported(variants[v].isa)) continue;
        variants[v].register_fn(&tables[v]);
        const std::string name = std::string("BM_QuantizeActs/") + (k_quant ? "q8_K/" : "q8_0/") +
                                 variants[v].name + "/" + std::to_string(cols);
        benchmark::RegisterBenchmark(name.c_str(), BM_QuantizeActs,
                                     k_quant ? tables[v].quantize_q8_K : tables[v].quantize_q8_0,
                                     cols);
      }
    }
  }
  return true;
}();

// One line per (type, model, threads): decode GB/s over the model's shapes
// (total bytes / total time), its fraction of the measured bandwidth, and
// prefill vs decode time per token.
void print_summary() {
  if (g_timings.empty()) return;
  std::printf("\nsummary (%s; bandwidth 1 thread %.1f GB/s, 2 threads %.1f GB/s)\n",
              isa_name(best_supported_isa()), bandwidth_gbs(1), bandwidth_gbs(2));
  for (const auto& [key, shapes] : g_timings) {
    double decode_s = 0, prefill_s = 0, bytes = 0;
    bool all_prefill = true;
    for (const auto& [shape, t] : shapes) {
      decode_s += t.decode_s;
      prefill_s += t.prefill_s;
      bytes += t.weight_bytes;
      all_prefill = all_prefill && t.prefill_s > 0;
    }
    if (decode_s <= 0) continue;
    const int threads = key.back() - '0';
    const double gbs = bytes / decode_s / 1e9;
    std::printf("%-32s decode %6.2f GB/s = %5.1f%% of roofline", key.c_str(), gbs,
                100 * gbs / bandwidth_gbs(threads));
    if (all_prefill) std::printf(", prefill/decode speed per token %.1fx", decode_s / prefill_s);
    std::printf("\n");
  }
}

}  // namespace
}  // namespace edgelm

int main(int argc, char** argv) {
  bool all_isas = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--isa=all") == 0) all_isas = true;
    // The AVX-512 decode kernels of the 4/5/8-bit types (default: by CPU vendor).
    if (std::strcmp(argv[i], "--decode_variant=shuffle_light") == 0) {
      edgelm::kernels_internal::set_avx512_decode_variant(
          edgelm::kernels_internal::Avx512Decode::kShuffleLight);
    }
    if (std::strcmp(argv[i], "--decode_variant=permute_heavy") == 0) {
      edgelm::kernels_internal::set_avx512_decode_variant(
          edgelm::kernels_internal::Avx512Decode::kPermuteHeavy);
    }
    if (std::strncmp(argv[i], "--weights_mib=", 14) == 0) {
      edgelm::g_cold_bytes = static_cast<size_t>(std::strtoull(argv[i] + 14, nullptr, 10)) << 20;
    }
  }
  // The interleaved kernels' prefetch, chosen as Model::load does (unless
  // --stream_prefetch=near|far|hardware).
  edgelm::set_stream_prefetch(edgelm::stream_prefetch_for(edgelm::g_cold_bytes));
  for (int i = 1; i < argc; ++i) {
    edgelm::StreamPrefetch mode;
    if (std::strncmp(argv[i], "--stream_prefetch=", 18) == 0 &&
        edgelm::stream_prefetch_from_name(argv[i] + 18, &mode)) {
      edgelm::set_stream_prefetch(mode);
    }
  }
  std::printf("interleaved kernels' prefetch: %s\n",
              edgelm::stream_prefetch_name(edgelm::stream_prefetch()));
  benchmark::Initialize(&argc, argv);
  edgelm::register_all(all_isas);
  benchmark::RunSpecifiedBenchmarks();
  edgelm::print_summary();
  benchmark::Shutdown();
  return 0;
}
