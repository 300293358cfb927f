// Matvec (decode) and matmul (prefill) throughput at SmolLM2-135M shapes for
// every weight type and instruction set this CPU has, plus the machine's read
// bandwidth. Decode rows report "roofline": weight bytes/s over the measured
// read bandwidth at the same thread count.
//
// Decode cycles through enough copies of the weights to exceed the caches, as
// a real forward pass does (the whole model is far larger than L3).
#include <benchmark/benchmark.h>

#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/bandwidth.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/thread_pool.h"
#include "util/half.h"

namespace edgelm {
namespace {

struct Shape {
  int64_t rows, cols;
};
// q/o projections, ffn up/gate, ffn down, tied embedding / lm head.
constexpr Shape kShapes[] = {{576, 576}, {1536, 576}, {576, 1536}, {49152, 576}};
constexpr int64_t kPrefillTokens = 64;
constexpr size_t kColdBytes = size_t{256} << 20;

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
  return cache[threads] = measure_read_bandwidth_gbs(pool_of(threads), kColdBytes);
}

// `copies` weight matrices of random values stored as `type`.
struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<WeightMatrix> copies;
};

Weights make_weights(DType type, Shape shape, size_t min_total_bytes) {
  const size_t row_bytes = dtype_row_bytes(type, shape.cols);
  const size_t matrix_bytes = row_bytes * static_cast<size_t>(shape.rows);
  const size_t count = std::max<size_t>(1, (min_total_bytes + matrix_bytes - 1) / matrix_bytes);
  Weights w;
  w.bytes.resize(matrix_bytes * count);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const size_t elems = w.bytes.size() / (type == DType::F32 ? 4 : 2);
  for (size_t i = 0; i < elems; ++i) {
    const float v = dist(rng);
    if (type == DType::F32) {
      std::memcpy(w.bytes.data() + 4 * i, &v, 4);
    } else {
      const uint16_t h = type == DType::F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
      std::memcpy(w.bytes.data() + 2 * i, &h, 2);
    }
  }
  for (size_t c = 0; c < count; ++c) {
    w.copies.push_back(
        {type, shape.rows, shape.cols, w.bytes.data() + c * matrix_bytes, row_bytes});
  }
  return w;
}

// Decode (n = 1) streams cold weights unless `hot` (attention over a KV cache
// that was just written).
void run_matmul(benchmark::State& state, Isa isa, DType type, Shape shape, int threads, int64_t n,
                bool hot) {
  set_active_isa(isa);
  ThreadPool& pool = pool_of(threads);
  const bool decode = n == 1 && !hot;
  Weights w = make_weights(type, shape, decode ? kColdBytes : 0);
  std::vector<float> x(static_cast<size_t>(n * shape.cols), 0.5f);
  std::vector<float> y(static_cast<size_t>(n * shape.rows));
  size_t next = 0;
  for (auto _ : state) {
    matmul(w.copies[next], x.data(), n, y.data(), &pool);
    benchmark::DoNotOptimize(y.data());
    next = next + 1 == w.copies.size() ? 0 : next + 1;
  }
  const double matrix_bytes = static_cast<double>(w.copies[0].row_bytes * shape.rows);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * matrix_bytes));
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * n), benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * 2.0 * n * shape.rows * shape.cols / 1e9,
      benchmark::Counter::kIsRate);
  if (decode) {
    // Filled in per run; the ratio itself is computed below from the elapsed time.
    state.counters["bw_GB/s"] = bandwidth_gbs(threads);
  }
  set_active_isa(best_supported_isa());
}

// The element-wise ops of a layer at SmolLM2 sizes: softmax over 160 scores,
// silu_mul over the 1536-wide FFN, rmsnorm over 576; and greedy decoding's
// argmax over its 49152 logits.
void run_op(benchmark::State& state, Isa isa, int op) {
  set_active_isa(isa);
  const int64_t n = op == 0 ? 160 : op == 1 ? 1536 : op == 2 ? 576 : 49152;
  std::vector<float> a(static_cast<size_t>(n)), b(a.size()), out(a.size());
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = dist(rng);
    b[i] = dist(rng);
  }
  for (auto _ : state) {
    if (op == 0) {
      std::copy(a.begin(), a.end(), out.begin());
      softmax(out.data(), n);
    } else if (op == 1) {
      silu_mul(out.data(), a.data(), b.data(), n);
    } else if (op == 2) {
      rmsnorm(out.data(), a.data(), b.data(), n, 1e-5f);
    } else {
      benchmark::DoNotOptimize(argmax(a.data(), n));
    }
    benchmark::DoNotOptimize(out.data());
  }
  set_active_isa(best_supported_isa());
}

void BM_ReadBandwidth(benchmark::State& state) {
  ThreadPool& pool = pool_of(static_cast<int>(state.range(0)));
  double gbs = 0;
  for (auto _ : state) gbs = measure_read_bandwidth_gbs(pool);
  state.counters["GB/s"] = gbs;
}
BENCHMARK(BM_ReadBandwidth)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->Iterations(1);

void register_all() {
  const Isa isas[] = {Isa::kScalar, Isa::kAvx2,        Isa::kAvx512,
                      Isa::kNeon,   Isa::kNeonDotprod, Isa::kNeonI8mm};
  for (int64_t n : {int64_t{1}, kPrefillTokens}) {
    for (Isa isa : isas) {
      if (!isa_supported(isa)) continue;
      for (DType type : {DType::F32, DType::F16, DType::BF16}) {
        for (const Shape& shape : kShapes) {
          for (int threads : {1, 2}) {
            const std::string name = std::string(n == 1 ? "matvec/" : "matmul_n64/") +
                                     dtype_name(type) + "/" + isa_name(isa) + "/" +
                                     std::to_string(shape.rows) + "x" + std::to_string(shape.cols) +
                                     "/threads:" + std::to_string(threads);
            benchmark::RegisterBenchmark(name.c_str(), run_matmul, isa, type, shape, threads, n,
                                         false)
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
          }
        }
      }
    }
  }
  const char* op_names[] = {"softmax/160", "silu_mul/1536", "rmsnorm/576", "argmax/49152"};
  for (Isa isa : isas) {
    if (!isa_supported(isa)) continue;
    for (int op = 0; op < 4; ++op) {
      const std::string name = std::string("ops/") + op_names[op] + "/" + isa_name(isa);
      benchmark::RegisterBenchmark(name.c_str(), run_op, isa, op)->Unit(benchmark::kNanosecond);
    }
  }
  // Attention's products with an F16 KV cache (head_dim 64), in cache: keys
  // [context][64] and transposed values [64][context] times the 1, 3 or 4
  // query heads that share a KV head (short-row kernels); and 2-4 token
  // prompts on a 2048 x 2048 matrix, the other user of those kernels.
  const Shape kv_shapes[] = {{160, 64}, {64, 160}, {1024, 64}, {64, 1024}, {2048, 2048}};
  for (Isa isa : isas) {
    if (!isa_supported(isa)) continue;
    for (const Shape& shape : kv_shapes) {
      for (int64_t n : {1, 2, 3, 4}) {
        if (shape.rows == 2048 && n == 1) continue;
        const std::string name = std::string("few_tokens/f16/") + isa_name(isa) + "/" +
                                 std::to_string(shape.rows) + "x" + std::to_string(shape.cols) +
                                 "/n:" + std::to_string(n);
        benchmark::RegisterBenchmark(name.c_str(), run_matmul, isa, DType::F16, shape, 1, n, true)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
}

// Prints "roofline = achieved bytes/s / bandwidth" for each decode run.
class RooflineReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    std::vector<Run> copy = runs;
    for (Run& run : copy) {
      auto bw = run.counters.find("bw_GB/s");
      auto bytes = run.counters.find("bytes_per_second");
      if (bw != run.counters.end() && bytes != run.counters.end() && bw->second.value > 0) {
        run.counters["roofline"] = bytes->second.value / 1e9 / bw->second.value;
      }
    }
    ConsoleReporter::ReportRuns(copy);
  }
};

}  // namespace
}  // namespace edgelm

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  edgelm::register_all();
  edgelm::RooflineReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
