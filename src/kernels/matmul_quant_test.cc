// Kernels for quantized weights (matmul_quant*.cc).
//
// What is checked, and within which bound:
//  1. The scalar reference against a double-precision product of the
//     dequantized weights and the dequantized activations, quantized by
//     quant_formats' ggml reference (Q8_0 / Q8_K): only float rounding differs,
//     so within 1e-5 * sum |w * xq|. This pins the block unpacking, the integer
//     math and the activation quantization (same values as ggml's).
//  2. The scalar reference against the F32 product with unquantized
//     activations, within the activation quantization error:
//       sum_i |w_i| * e_i + 1e-5 * sum |w_i * x_i|,
//     e_i = d_x / 2 (Q8_K), d_x * (1/2 + 127 * 2^-11) (Q8_0, whose scale is
//     stored as f16), d_x = the block's amax / 127.
//  3. Every ISA against the scalar reference on awkward shapes (rows 1..70,
//     cols a few multiples of the block, 1..40 tokens, 1..3 threads): EXACTLY
//     equal on data whose scales are powers of two (random quant bytes; all
//     float products and sums are then exact, so any order of the float
//     combination gives the same bits and any integer error shows), and within
//     1e-5 * sum |w * x| on realistic data. Prefill rows equal decode exactly.
//  4. dequantize_row (embedding lookup) for every type on every ISA equals
//     quant_formats' dequantizers bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "edgelm/error.h"
#include "kernels/isa_test_util.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/quant_formats.h"
#include "kernels/thread_pool.h"
#include "util/half.h"

namespace edgelm {
namespace {

// Every ISA this CPU supports, and on AVX-512 both decode variants
// (Avx512Decode), so every decode kernel meets the reference.
struct KernelVariant {
  Isa isa;
  kernels_internal::Avx512Decode decode;
  void activate() const {
    set_active_isa(isa);
    kernels_internal::set_avx512_decode_variant(decode);
  }
};
std::vector<KernelVariant> kernel_variants() {
  using kernels_internal::Avx512Decode;
  std::vector<KernelVariant> out;
  for (Isa isa : supported_isas()) {
    out.push_back({isa, Avx512Decode::kPermuteHeavy});
    if (isa == Isa::kAvx512) out.push_back({isa, Avx512Decode::kShuffleLight});
  }
  return out;
}
// Restores the start-up decode variant when a test ends.
using DecodeVariantGuard =
    SettingGuard<kernels_internal::Avx512Decode, kernels_internal::avx512_decode_variant,
                 kernels_internal::set_avx512_decode_variant>;
const char* variant_name(kernels_internal::Avx512Decode g) {
  return g == kernels_internal::Avx512Decode::kShuffleLight ? " shuffle-light" : "";
}

const DType kIntTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                           DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

bool is_k(DType type) {
  return dtype_traits(type).block_size == kQK_K;
}

struct QuantMatrix {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // dequantized
  WeightMatrix w;
};

void finish(QuantMatrix* m, DType type, int64_t rows, int64_t cols) {
  m->w.type = type;
  m->w.rows = rows;
  m->w.cols = cols;
  m->w.data = m->bytes.data();
  m->w.row_bytes = dtype_row_bytes(type, cols);
  m->values.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = m->bytes.data() + r * m->w.row_bytes;
    if (type == DType::FP8_E4M3) {
      dequantize_row_fp8_e4m3(row, m->values.data() + r * cols, cols);
    } else {
      dequantize_row_quant(type, row, m->values.data() + r * cols, cols);
    }
  }
}

// Random normal weights quantized the way `edgelm quantize` does.
QuantMatrix realistic_matrix(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(cols));
  QuantMatrix m;
  const size_t row_bytes = dtype_row_bytes(type, cols);
  m.bytes.resize(row_bytes * rows);
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : x) v = dist(rng);
    if (type == DType::FP8_E4M3) {
      quantize_row_fp8_e4m3(x.data(), m.bytes.data() + r * row_bytes, cols);
    } else {
      quantize_row(type, x.data(), m.bytes.data() + r * row_bytes, cols);
    }
  }
  finish(&m, type, rows, cols);
  return m;
}

// Offsets of the f16 scale fields of a block (d, and dmin or m where present).
std::vector<size_t> scale_offsets(DType type) {
  switch (type) {
    case DType::Q4_0:
      return {offsetof(BlockQ4_0, d)};
    case DType::Q4_1:
      return {offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)};
    case DType::Q5_0:
      return {offsetof(BlockQ5_0, d)};
    case DType::Q5_1:
      return {offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)};
    case DType::Q8_0:
      return {offsetof(BlockQ8_0, d)};
    case DType::Q2_K:
      return {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)};
    case DType::Q3_K:
      return {offsetof(BlockQ3_K, d)};
    case DType::Q4_K:
      return {offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)};
    case DType::Q5_K:
      return {offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)};
    case DType::Q6_K:
      return {offsetof(BlockQ6_K, d)};
    default:
      return {};
  }
}

// Random quant bytes (every bit pattern, e.g. Q8_0's -128 and 6-bit scales of
// 63) with power-of-two scales +-2^-2, 2^-3, so kernel results are exact.
QuantMatrix exact_matrix(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  QuantMatrix m;
  const size_t row_bytes = dtype_row_bytes(type, cols);
  m.bytes.resize(row_bytes * rows);
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : m.bytes) b = static_cast<uint8_t>(byte(rng));
  const size_t block_bytes = dtype_traits(type).block_bytes;
  std::uniform_int_distribution<int> exponent(2, 3);
  for (size_t off = 0; off < m.bytes.size(); off += block_bytes) {
    for (size_t field : scale_offsets(type)) {
      const uint16_t h = static_cast<uint16_t>((15 - exponent(rng)) << 10 | (byte(rng) & 1) << 15);
      std::memcpy(m.bytes.data() + off + field, &h, 2);
    }
    if (type == DType::Q6_K) {
      // Scales in -32..31: a super-block's integer sum must stay below 2^24 to
      // convert to float exactly (the scalar code converts it whole).
      for (int8_t& sc : reinterpret_cast<BlockQ6_K*>(m.bytes.data() + off)->scales) {
        sc = static_cast<int8_t>(sc % 32);
      }
    }
  }
  finish(&m, type, rows, cols);
  return m;
}

// Activations k * 2^-j (|k| <= 127, j in 0..1 per 256 values) with a +-127 in
// every 32 values: Q8_0 and Q8_K quantize them exactly (scale 2^-j).
std::vector<float> exact_activations(int64_t n, int64_t cols, std::mt19937& rng) {
  std::uniform_int_distribution<int> k(-127, 127), j(0, 1), sign(0, 1);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (int64_t i = 0; i < n * cols; i += kQK_K) {
    const float scale = std::ldexp(1.0f, -j(rng));
    for (int64_t e = i; e < i + kQK_K && e < n * cols; ++e) {
      x[e] = static_cast<float>(e % kQK == 5 ? (sign(rng) ? 127 : -127) : k(rng)) * scale;
    }
  }
  return x;
}

std::vector<float> normal_activations(int64_t n, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (float& v : x) v = dist(rng);
  return x;
}

std::vector<float> run(const QuantMatrix& m, const std::vector<float>& x, int64_t n,
                       ThreadPool* pool) {
  std::vector<float> y(static_cast<size_t>(n * m.w.rows), NAN);
  matmul(m.w, x.data(), n, y.data(), pool);
  return y;
}

// x as the integer kernels see it: quantized by ggml's reference, dequantized.
std::vector<float> act_roundtrip(DType weight_type, const std::vector<float>& x, int64_t cols) {
  const DType act = is_k(weight_type) ? DType::Q8_K : DType::Q8_0;
  std::vector<uint8_t> q(dtype_row_bytes(act, cols));
  std::vector<float> out(x.size());
  for (size_t t = 0; t < x.size() / cols; ++t) {
    quantize_row(act, x.data() + t * cols, q.data(), cols);
    dequantize_row_quant(act, q.data(), out.data() + t * cols, cols);
  }
  return out;
}

TEST(MatmulQuantTest, ScalarMatchesDequantizedProduct) {
  IsaGuard guard;
  DecodeVariantGuard variant_guard;
  set_active_isa(Isa::kScalar);
  std::mt19937 rng(3);
  for (DType type : kIntTypes) {
    const int64_t rows = 9, cols = is_k(type) ? 512 : 96, n = 3;
    const QuantMatrix m = realistic_matrix(type, rows, cols, rng);
    const std::vector<float> x = normal_activations(n, cols, rng);
    const std::vector<float> xq = act_roundtrip(type, x, cols);
    const std::vector<float> y = run(m, x, n, nullptr);
    const int64_t block = is_k(type) ? kQK_K : kQK;
    const double q8_0_extra = is_k(type) ? 0.0 : 127.0 / 2048.0;  // f16 scale of Q8_0
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double exact_q = 0, scale_q = 0, exact = 0, scale = 0, act_err = 0;
        for (int64_t b = 0; b < cols; b += block) {
          double amax = 0;
          for (int64_t i = b; i < b + block; ++i)
            amax = std::max(amax, std::fabs(double(x[t * cols + i])));
          const double err = amax / 127 * (0.5 + q8_0_extra) * (1 + 1e-6);
          for (int64_t i = b; i < b + block; ++i) {
            const double w = m.values[r * cols + i];
            exact_q += w * xq[t * cols + i];
            scale_q += std::fabs(w * xq[t * cols + i]);
            exact += w * x[t * cols + i];
            scale += std::fabs(w * x[t * cols + i]);
            act_err += std::fabs(w) * err;
          }
        }
        const double got = y[t * rows + r];
        EXPECT_LE(std::fabs(got - exact_q), 1e-5 * scale_q)
            << dtype_name(type) << " t " << t << " r " << r << ": " << got << " vs " << exact_q;
        EXPECT_LE(std::fabs(got - exact), act_err + 1e-5 * scale)
            << dtype_name(type) << " t " << t << " r " << r << ": " << got << " vs " << exact;
      }
    }
  }
}

TEST(MatmulQuantTest, EveryIsaMatchesScalarExactly) {
  IsaGuard guard;
  DecodeVariantGuard variant_guard;
  std::mt19937 rng(7);
  ThreadPool pool2(2), pool3(3);
  ThreadPool* pools[] = {nullptr, &pool2, &pool3};
  const int64_t row_list[] = {1, 2, 3, 4, 5, 7, 8, 13, 31, 70};
  // 2+ tokens take the repacked GEMM where an ISA has one (scalar: per-token tiles).
  const int64_t n_list[] = {1, 2, 3, 5, 8, 9, 19, 16, 35, 40};
  int checked = 0;
  for (DType type : kIntTypes) {
    const std::vector<int64_t> col_list =
        is_k(type) ? std::vector<int64_t>{256, 512, 768}
                   : std::vector<int64_t>{32, 64, 96, 160, 224, 288, 416, 544};
    for (size_t ri = 0; ri < std::size(row_list); ++ri) {
      const int64_t rows = row_list[ri];
      const int64_t cols = col_list[ri % col_list.size()];
      const int64_t n = n_list[ri % std::size(n_list)];
      const QuantMatrix m = exact_matrix(type, rows, cols, rng);
      const std::vector<float> x = exact_activations(n, cols, rng);
      set_active_isa(Isa::kScalar);
      const std::vector<float> want = run(m, x, n, nullptr);
      for (const KernelVariant& variant : kernel_variants()) {
        variant.activate();
        const Isa isa = variant.isa;
        const std::string what = std::string(dtype_name(type)) + " " + isa_name(isa) +
                                 variant_name(variant.decode) + " rows " + std::to_string(rows) +
                                 " cols " + std::to_string(cols) + " n " + std::to_string(n);
        for (size_t p = 0; p < 3; ++p) {
          const std::vector<float> got = run(m, x, n, pools[(ri + p) % 3]);
          for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_EQ(got[i], want[i])
                << std::hexfloat << what << " threads " << ((ri + p) % 3 + 1) << " at " << i;
          }
          ++checked;
        }
        // Each prefill row equals the decode result for that token.
        for (int64_t t = 0; t < n; ++t) {
          const std::vector<float> xt(x.begin() + t * cols, x.begin() + (t + 1) * cols);
          const std::vector<float> one = run(m, xt, 1, pools[t % 3]);
          for (int64_t r = 0; r < rows; ++r) {
            ASSERT_EQ(one[r], want[t * rows + r]) << what << " decode token " << t << " row " << r;
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 300);
}

TEST(MatmulQuantTest, EveryIsaCloseToScalarOnRealisticData) {
  IsaGuard guard;
  DecodeVariantGuard variant_guard;
  std::mt19937 rng(11);
  ThreadPool pool2(2);
  for (DType type : kIntTypes) {
    const int64_t rows = 37, cols = is_k(type) ? 1024 : 320, n = 21;
    const QuantMatrix m = realistic_matrix(type, rows, cols, rng);
    const std::vector<float> x = normal_activations(n, cols, rng);
    const std::vector<float> xq = act_roundtrip(type, x, cols);
    set_active_isa(Isa::kScalar);
    const std::vector<float> want = run(m, x, n, nullptr);
    for (const KernelVariant& variant : kernel_variants()) {
      variant.activate();
      const Isa isa = variant.isa;
      for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2}) {
        const std::vector<float> got = run(m, x, n, pool);
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            double scale = 0;
            for (int64_t i = 0; i < cols; ++i) {
              scale += std::fabs(double(m.values[r * cols + i]) * xq[t * cols + i]);
            }
            ASSERT_LE(std::fabs(got[t * rows + r] - want[t * rows + r]), 1e-5 * scale)
                << dtype_name(type) << " " << isa_name(isa) << variant_name(variant.decode) << " t "
                << t << " r " << r;
          }
        }
      }
    }
  }
}

// The smmla GEMM (neon-i8mm) does the float operations of the sdot GEMM
// (neon-dotprod) in the same order, so on realistic data too it gives the same
// bits, for every token remainder of its 4-token tiles and partial row panels.
TEST(MatmulQuantTest, I8mmGemmEqualsDotprodGemm) {
  if (!isa_supported(Isa::kNeonI8mm)) GTEST_SKIP() << "no neon-i8mm on this CPU";
  IsaGuard guard;
  DecodeVariantGuard variant_guard;
  std::mt19937 rng(13);
  ThreadPool pool2(2);
  for (DType type : kIntTypes) {
    for (int64_t n : {2, 3, 4, 5, 6, 7, 13}) {
      const int64_t rows = 45, cols = is_k(type) ? 512 : 192;
      const QuantMatrix m = realistic_matrix(type, rows, cols, rng);
      const std::vector<float> x = normal_activations(n, cols, rng);
      set_active_isa(Isa::kNeonDotprod);
      const std::vector<float> want = run(m, x, n, &pool2);
      set_active_isa(Isa::kNeonI8mm);
      const std::vector<float> got = run(m, x, n, n % 2 ? nullptr : &pool2);
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(got[i], want[i])
            << std::hexfloat << dtype_name(type) << " n " << n << " at " << i;
      }
    }
  }
}

TEST(MatmulQuantTest, Fp8MatchesExactProductOnEveryIsa) {
  IsaGuard guard;
  DecodeVariantGuard variant_guard;
  std::mt19937 rng(5);
  ThreadPool pool3(3);
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    for (int64_t rows : {1, 6, 33}) {
      for (int64_t n : {1, 4, 13}) {
        const int64_t cols = 32 * (1 + rows % 5);
        const QuantMatrix m = realistic_matrix(DType::FP8_E4M3, rows, cols, rng);
        const std::vector<float> x = normal_activations(n, cols, rng);
        const std::vector<float> y = run(m, x, n, rows > 5 ? &pool3 : nullptr);
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            double exact = 0, scale = 0;
            for (int64_t i = 0; i < cols; ++i) {
              const double p = double(m.values[r * cols + i]) * x[t * cols + i];
              exact += p;
              scale += std::fabs(p);
            }
            ASSERT_LE(std::fabs(y[t * rows + r] - exact), 1e-5 * scale)
                << isa_name(isa) << " rows " << rows << " n " << n << " t " << t << " r " << r;
          }
        }
      }
    }
  }
}

TEST(MatmulQuantTest, DequantizeRowEveryTypeEveryIsa) {
  IsaGuard guard;
  DecodeVariantGuard variant_guard;
  std::mt19937 rng(9);
  std::vector<DType> types(std::begin(kIntTypes), std::end(kIntTypes));
  types.push_back(DType::FP8_E4M3);
  for (DType type : types) {
    const int64_t cols = is_k(type) ? 512 : 64;
    const QuantMatrix m = realistic_matrix(type, 2, cols, rng);
    for (Isa isa : supported_isas()) {
      set_active_isa(isa);
      std::vector<float> row(static_cast<size_t>(cols));
      dequantize_row(type, m.bytes.data() + m.w.row_bytes, row.data(), cols);
      for (int64_t i = 0; i < cols; ++i) {
        ASSERT_EQ(row[i], m.values[cols + i])
            << dtype_name(type) << " " << isa_name(isa) << " " << i;
      }
    }
  }
}

TEST(MatmulQuantTest, PaddedRowStrideAndTinyMatrices) {
  IsaGuard guard;
  DecodeVariantGuard variant_guard;
  std::mt19937 rng(13);
  for (DType type : {DType::Q4_0, DType::Q4_K, DType::Q6_K, DType::Q8_0}) {
    const int64_t cols = is_k(type) ? 256 : 64, rows = 5, n = 6;
    const QuantMatrix m = exact_matrix(type, rows, cols, rng);
    // Same rows 8 bytes apart more than needed.
    const size_t stride = m.w.row_bytes + 8;
    std::vector<uint8_t> padded(stride * rows);
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(padded.data() + r * stride, m.bytes.data() + r * m.w.row_bytes, m.w.row_bytes);
    }
    WeightMatrix pw = m.w;
    pw.data = padded.data();
    pw.row_bytes = stride;
    const std::vector<float> x = exact_activations(n, cols, rng);
    set_active_isa(Isa::kScalar);
    const std::vector<float> want = run(m, x, n, nullptr);
    for (const KernelVariant& variant : kernel_variants()) {
      variant.activate();
      const Isa isa = variant.isa;
      std::vector<float> got(want.size(), NAN);
      matmul(pw, x.data(), n, got.data(), nullptr);
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(got[i], want[i]) << isa_name(isa) << variant_name(variant.decode) << " " << i;
    }
  }
}

TEST(MatmulQuantTest, ZeroAndNonFiniteActivationsDoNotCrash) {
  std::mt19937 rng(17);
  for (DType type : kIntTypes) {
    const int64_t cols = is_k(type) ? 256 : 64;
    const QuantMatrix m = realistic_matrix(type, 4, cols, rng);
    std::vector<float> x(static_cast<size_t>(2 * cols), 0.0f);
    std::vector<float> y = run(m, x, 2, nullptr);
    for (float v : y) EXPECT_EQ(v, 0.0f) << dtype_name(type);
    x[3] = NAN;
    x[cols + 1] = INFINITY;
    y = run(m, x, 2, nullptr);  // garbage in, garbage out, but no UB or crash
  }
}

TEST(MatmulQuantTest, Errors) {
  std::vector<uint8_t> bytes(4096);
  WeightMatrix w{DType::Q8_K, 2, 256, bytes.data(), 0};
  std::vector<float> x(512), y(4);
  try {
    matmul(w, x.data(), 1, y.data(), nullptr);
    FAIL() << "Q8_K weights have no kernel";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q8_K"), std::string::npos) << e.what();
  }
  w = {DType::Q4_K, 2, 100, bytes.data(), 0};  // not whole super-blocks
  EXPECT_THROW(matmul(w, x.data(), 1, y.data(), nullptr), Error);
  EXPECT_THROW(dequantize_row(DType::Q4_0, bytes.data(), y.data(), 31), Error);
}

}  // namespace
}  // namespace edgelm

namespace edgelm {
namespace {

// matmul_many (one pass over several matrices sharing an input, mixed types)
// gives exactly what one matmul per matrix gives, on every ISA and thread count.
TEST(MatmulQuantTest, MatmulManyEqualsSeparateMatmuls) {
  IsaGuard guard;
  DecodeVariantGuard variant_guard;
  std::mt19937 rng(23);
  ThreadPool pool2(2), pool3(3);
  const int64_t cols = 512;
  const DType types[] = {DType::Q8_0, DType::Q4_K, DType::FP8_E4M3, DType::Q6_K, DType::Q4_0};
  const int64_t rows[] = {37, 64, 5, 130, 8};
  std::vector<QuantMatrix> ms;
  for (size_t i = 0; i < std::size(types); ++i) {
    ms.push_back(realistic_matrix(types[i], rows[i], cols, rng));
  }
  // F16 too: the float kernels share the pass.
  QuantMatrix f16;
  f16.bytes.resize(static_cast<size_t>(9 * cols) * 2);
  for (size_t i = 0; i < f16.bytes.size(); i += 2) {
    const uint16_t h = fp32_to_fp16(std::normal_distribution<float>(0, 1)(rng));
    std::memcpy(&f16.bytes[i], &h, 2);
  }
  f16.w = {DType::F16, 9, cols, f16.bytes.data(), static_cast<size_t>(cols) * 2};
  std::vector<WeightMatrix> ws;
  for (QuantMatrix& m : ms) {
    m.w.data = m.bytes.data();  // after the copies
    ws.push_back(m.w);
  }
  ws.push_back(f16.w);
  for (const KernelVariant& variant : kernel_variants()) {
    variant.activate();
    const Isa isa = variant.isa;
    for (int64_t n : {1, 3}) {
      const std::vector<float> x = normal_activations(n, cols, rng);
      for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2, &pool3}) {
        std::vector<std::vector<float>> want(ws.size()), got(ws.size());
        std::vector<float*> outs;
        for (size_t i = 0; i < ws.size(); ++i) {
          want[i].resize(static_cast<size_t>(n * ws[i].rows));
          got[i].assign(want[i].size(), -1.0f);
          matmul(ws[i], x.data(), n, want[i].data(), pool);
          outs.push_back(got[i].data());
        }
        matmul_many(ws.data(), outs.data(), static_cast<int>(ws.size()), x.data(), n, pool);
        for (size_t i = 0; i < ws.size(); ++i) {
          ASSERT_EQ(got[i], want[i])
              << isa_name(isa) << variant_name(variant.decode) << " matrix " << i << " n " << n;
        }
      }
    }
  }
  // Matrices sharing an input must have the same width.
  WeightMatrix narrow = ws[0];
  narrow.cols = 256;
  narrow.row_bytes = dtype_row_bytes(narrow.type, 256);
  const WeightMatrix pair[] = {ws[0], narrow};
  std::vector<float> x(cols), y0(static_cast<size_t>(ws[0].rows)), y1(narrow.rows);
  float* outs[] = {y0.data(), y1.data()};
  EXPECT_THROW(matmul_many(pair, outs, 2, x.data(), 1, &pool2), Error);
}

}  // namespace
}  // namespace edgelm

namespace edgelm {
namespace {

// The interleaved layouts (16 rows interleaved per block or super-block) give
// exactly the sums of the same matrix in row-major Q4_0 / Q5_0 / Q4_K / Q8_0, in
// decode and prefill, on every ISA and variant (their own AVX-512 kernels, or
// the others' row-major kernels on de-interleaved groups), for odd and even
// block counts, 16 to 96 rows, and any thread count; also inside matmul_many
// beside row-major matrices.
TEST(MatmulQuantTest, InterleavedEqualsRowMajor) {
  IsaGuard guard;
  DecodeVariantGuard variant_guard;
  StreamPrefetchGuard prefetch_guard;
  std::mt19937 rng(23);
  ThreadPool pool2(2), pool3(3);
  ThreadPool* pools[] = {nullptr, &pool2, &pool3};
  for (DType type : {DType::Q4_0, DType::Q5_0, DType::Q4_K, DType::Q8_0}) {
    const bool k_quant = type == DType::Q4_K;
    for (int64_t rows : {16, 48, 96}) {
      for (int64_t cols :
           k_quant ? std::vector<int64_t>{256, 768} : std::vector<int64_t>{32, 96, 576}) {
        const QuantMatrix m = exact_matrix(type, rows, cols, rng);
        QuantMatrix x16 = m;
        interleave_x16(type, m.bytes.data(), rows, cols, x16.bytes.data());
        x16.w.type = x16_layout(type);
        x16.w.data = x16.bytes.data();
        ASSERT_TRUE(is_x16_layout(x16.w.type));
        ASSERT_EQ(x16_row_major(x16.w.type), type);
        std::vector<uint8_t> back(m.bytes.size());
        for (int64_t g = 0; g < rows / 16; ++g) {
          const size_t at = g * 16 * m.w.row_bytes;
          deinterleave_x16(x16.w.type, x16.bytes.data() + at, cols, back.data() + at);
        }
        ASSERT_EQ(back, m.bytes) << dtype_name(type) << " round trip " << rows << " x " << cols;
        // Single rows (a tied embedding table's lookups) read across the group.
        std::vector<float> row_want(cols), row_got(cols, NAN);
        for (int64_t r : {int64_t{0}, int64_t{5}, rows - 1}) {
          dequantize_matrix_row(m.w, r, row_want.data());
          dequantize_matrix_row(x16.w, r, row_got.data());
          ASSERT_EQ(row_got, row_want) << dtype_name(x16.w.type) << " row " << r;
        }
        EXPECT_THROW(dequantize_matrix_row(x16.w, rows, row_got.data()), Error);
        for (int64_t n : {1, 2, 5, 40}) {
          const std::vector<float> x = exact_activations(n, cols, rng);
          set_active_isa(Isa::kScalar);
          const std::vector<float> want = run(m, x, n, nullptr);
          for (const KernelVariant& variant : kernel_variants()) {
            variant.activate();
            for (ThreadPool* pool : pools) {
              for (StreamPrefetch mode :
                   {StreamPrefetch::kNear, StreamPrefetch::kFar, StreamPrefetch::kHardware}) {
                set_stream_prefetch(mode);
                const std::vector<float> got = run(x16, x, n, pool);
                for (size_t i = 0; i < got.size(); ++i) {
                  ASSERT_EQ(got[i], want[i])
                      << dtype_name(x16.w.type) << " " << isa_name(variant.isa)
                      << variant_name(variant.decode) << " " << rows << " x " << cols << " n " << n
                      << " threads " << (pool ? pool->size() : 1) << " prefetch "
                      << stream_prefetch_name(mode) << " at " << i;
                }
              }
            }
            if (n == 1) {
              // Beside a row-major matrix of the same input, split across threads.
              const WeightMatrix ws[] = {m.w, x16.w};
              std::vector<float> y0(rows), y1(rows);
              float* const ys[] = {y0.data(), y1.data()};
              matmul_many(ws, ys, 2, x.data(), 1, &pool3);
              for (int64_t i = 0; i < rows; ++i) {
                ASSERT_EQ(y1[i], want[i]) << "matmul_many " << dtype_name(x16.w.type) << " "
                                          << isa_name(variant.isa) << " at " << i;
              }
            }
          }
        }
      }
    }
  }
}

// A product over a slice of whole blocks of the columns (the attention output
// projection, one KV head's slice at a time) gives exactly the sums of a matrix
// made of just those columns' bytes, for every integer type, the interleaved
// layouts, every ISA and variant, and row ranges in whole kernel units.
TEST(MatmulQuantTest, ColumnSliceEqualsMatrixOfThoseColumns) {
  IsaGuard guard;
  DecodeVariantGuard variant_guard;
  std::mt19937 rng(29);
  const int64_t rows = 48;
  std::vector<DType> types(std::begin(kIntTypes), std::end(kIntTypes));
  types.insert(types.end(), {DType::Q4_0_X16, DType::Q5_0_X16, DType::Q4_K_X16, DType::Q8_0_X16});
  for (DType type : types) {
    const DType base = x16_row_major(type);
    const bool k_quant = is_k(base);
    const int64_t cols = k_quant ? 1024 : 320;
    const std::vector<std::pair<int64_t, int64_t>> slices =
        k_quant ? std::vector<std::pair<int64_t, int64_t>>{{256, 768}, {0, 256}, {768, 1024}}
                : std::vector<std::pair<int64_t, int64_t>>{{64, 224}, {0, 32}, {288, 320}};
    QuantMatrix full = realistic_matrix(base, rows, cols, rng);
    for (auto [c0, c1] : slices) {
      // The slice as a matrix of its own: each row's bytes of those blocks.
      QuantMatrix part;
      const size_t skip = dtype_row_bytes(base, c0);
      const size_t part_row = dtype_row_bytes(base, c1 - c0);
      part.bytes.resize(part_row * rows);
      for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(part.bytes.data() + r * part_row,
                    full.bytes.data() + r * full.w.row_bytes + skip, part_row);
      }
      finish(&part, base, rows, c1 - c0);
      QuantMatrix view = full;
      if (type != base) {
        interleave_x16(base, full.bytes.data(), rows, cols, view.bytes.data());
        const std::vector<uint8_t> row_major = part.bytes;
        interleave_x16(base, row_major.data(), rows, c1 - c0, part.bytes.data());
        part.w.type = view.w.type = type;
        view.w.data = view.bytes.data();
      }
      const std::vector<float> x = normal_activations(1, c1 - c0, rng);
      for (const KernelVariant& variant : kernel_variants()) {
        variant.activate();
        ASSERT_TRUE(column_slice_supported(view.w, c0, c1)) << dtype_name(type);
        EXPECT_EQ(matvec_row_unit(view.w), type == base ? 4 : 16);
        const std::vector<float> want = run(part, x, 1, nullptr);
        for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, rows}, {16, 32}, {32, 48}}) {
          std::vector<float> got(static_cast<size_t>(r1 - r0), NAN);
          matvec_column_slice(view.w, c0, c1, x.data(), got.data(), r0, r1);
          for (int64_t r = r0; r < r1; ++r) {
            ASSERT_EQ(got[r - r0], want[r])
                << dtype_name(type) << " " << isa_name(variant.isa) << variant_name(variant.decode)
                << " columns [" << c0 << ", " << c1 << ") row " << r;
          }
        }
      }
    }
    // Slices that cut a block (of the weights or of the activations' Q8_K).
    std::vector<float> x(cols), y(rows);
    const int64_t cut = k_quant ? 128 : 16;
    EXPECT_FALSE(column_slice_supported(full.w, cut, cols)) << dtype_name(type);
    EXPECT_THROW(matvec_column_slice(full.w, cut, cols, x.data(), y.data(), 0, rows), Error);
    EXPECT_FALSE(column_slice_supported(full.w, 0, cols + (k_quant ? 256 : 32)));
    EXPECT_FALSE(column_slice_supported(full.w, 64, 64));
    // Row ranges must be whole kernel units.
    EXPECT_THROW(matvec_column_slice(full.w, 0, cols, x.data(), y.data(), 2, rows), Error);
  }
  // Float types have no integer kernel to slice.
  std::vector<uint16_t> f16(64 * 16);
  const WeightMatrix w{DType::F16, 16, 64, f16.data(), 128};
  EXPECT_FALSE(column_slice_supported(w, 0, 32));
}

// A prepared input's row ranges give matmul()'s rows, whatever the split, for
// matrices of different activation forms sharing the input (Q4_K and Q5_0 in a
// K-quant file's Q/K/V), interleaved layouts and float weights.
TEST(MatmulQuantTest, MatvecRowsOfPreparedInputEqualMatmul) {
  IsaGuard guard;
  DecodeVariantGuard variant_guard;
  std::mt19937 rng(31);
  const int64_t rows = 48, cols = 512;
  std::vector<QuantMatrix> ms;
  for (DType type : kIntTypes) ms.push_back(realistic_matrix(type, rows, cols, rng));
  for (DType type : {DType::Q4_0, DType::Q5_0, DType::Q4_K, DType::Q8_0}) {
    const QuantMatrix row_major = realistic_matrix(type, rows, cols, rng);
    QuantMatrix m = row_major;
    interleave_x16(type, row_major.bytes.data(), rows, cols, m.bytes.data());
    m.w.type = x16_layout(type);
    m.w.data = m.bytes.data();
    ms.push_back(m);
  }
  std::vector<float> f32(static_cast<size_t>(rows * cols));
  std::normal_distribution<float> normal;
  for (float& v : f32) v = normal(rng);
  const WeightMatrix dense{DType::F32, rows, cols, f32.data(), cols * sizeof(float)};
  std::vector<WeightMatrix> ws;
  for (QuantMatrix& m : ms) {
    m.w.data = m.bytes.data();  // after the copies
    ws.push_back(m.w);
  }
  ws.push_back(dense);
  const std::vector<float> x = normal_activations(1, cols, rng);
  for (const KernelVariant& variant : kernel_variants()) {
    variant.activate();
    MatvecInput input;
    for (size_t i = 0; i < ws.size(); i += 3) {  // three matrices at a time share the input
      const int count = static_cast<int>(std::min<size_t>(3, ws.size() - i));
      input.prepare(&ws[i], count, x.data());
      for (int j = 0; j < count; ++j) {
        const WeightMatrix& w = ws[i + j];
        std::vector<float> want(rows);
        matmul(w, x.data(), 1, want.data(), nullptr);
        const int64_t unit = matvec_row_unit(w);
        for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, rows}, {16, 32}, {32, rows}}) {
          std::vector<float> got(static_cast<size_t>(r1 - r0), NAN);
          matvec_rows(w, input, got.data(), r0, r1);
          for (int64_t r = r0; r < r1; ++r) {
            ASSERT_EQ(got[r - r0], want[r]) << dtype_name(w.type) << " " << isa_name(variant.isa)
                                            << variant_name(variant.decode) << " row " << r;
          }
        }
        EXPECT_THROW(matvec_rows(w, input, want.data(), unit / 2, rows), Error);  // cuts a unit
        EXPECT_THROW(matvec_rows(w, input, want.data(), 0, rows + unit), Error);
      }
      // A matrix the input was not prepared for: another width, or another form.
      const WeightMatrix other{DType::F32, rows, cols / 2, f32.data(), cols / 2 * sizeof(float)};
      std::vector<float> y(rows);
      EXPECT_THROW(matvec_rows(other, input, y.data(), 0, rows), Error);
    }
    MatvecInput q8_only;
    q8_only.prepare(&ms[0].w, 1, x.data());  // Q4_0: the Q8_0 form only
    const WeightMatrix& q4_k = ms[7].w;
    ASSERT_EQ(q4_k.type, DType::Q4_K);
    std::vector<float> y(rows);
    EXPECT_THROW(matvec_rows(q4_k, q8_only, y.data(), 0, rows), Error);
  }
  const WeightMatrix mixed[] = {ms[0].w, dense};
  const WeightMatrix narrower{DType::F32, rows, cols / 2, f32.data(), cols / 2 * sizeof(float)};
  const WeightMatrix widths[] = {dense, narrower};
  MatvecInput input;
  EXPECT_NO_THROW(input.prepare(mixed, 2, x.data()));
  EXPECT_THROW(input.prepare(widths, 2, x.data()), Error);
}

TEST(MatmulQuantTest, InterleavingRejectsPartialGroupsAndOtherTypes) {
  std::vector<uint8_t> src(dtype_row_bytes(DType::Q5_0, 256) * 20), dst(src.size());
  EXPECT_THROW(interleave_x16(DType::Q4_0, src.data(), 20, 64, dst.data()), Error);
  EXPECT_THROW(interleave_x16(DType::Q5_0, src.data(), 20, 64, dst.data()), Error);
  EXPECT_THROW(interleave_x16(DType::Q4_K, src.data(), 16, 128, dst.data()), Error);
  EXPECT_THROW(interleave_x16(DType::Q8_0, src.data(), 24, 64, dst.data()), Error);
  EXPECT_THROW(interleave_x16(DType::Q6_K, src.data(), 16, 256, dst.data()), Error);
  EXPECT_THROW(deinterleave_x16(DType::Q4_K, src.data(), 256, dst.data()), Error);
  EXPECT_EQ(x16_layout(DType::Q6_K), DType::F32);
}

// Largest quants everywhere (and Q8_0's -128) against activations of +-127:
// the integer sums of the SIMD kernels (int16 in AVX2's maddubs) reach their
// bounds, which random data never does. Exact against the scalar reference.
TEST(MatmulQuantTest, ExtremeQuantsMatchScalarExactly) {
  IsaGuard guard;
  DecodeVariantGuard variant_guard;
  for (DType type : kIntTypes) {
    const int64_t rows = 9, cols = is_k(type) ? 256 : 64, n = 17;
    QuantMatrix m;
    m.bytes.assign(dtype_row_bytes(type, cols) * rows, type == DType::Q8_0 ? 0x80 : 0xFF);
    const size_t block_bytes = dtype_traits(type).block_bytes;
    const uint16_t quarter = 0x3400;  // f16 2^-2
    for (size_t off = 0; off < m.bytes.size(); off += block_bytes) {
      for (size_t field : scale_offsets(type)) std::memcpy(&m.bytes[off + field], &quarter, 2);
    }
    finish(&m, type, rows, cols);
    std::vector<float> x(static_cast<size_t>(n * cols));
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < cols; ++i) x[t * cols + i] = t % 2 ? -127.0f : 127.0f;
    }
    set_active_isa(Isa::kScalar);
    const std::vector<float> want = run(m, x, n, nullptr);
    for (const KernelVariant& variant : kernel_variants()) {
      variant.activate();
      const Isa isa = variant.isa;
      const std::vector<float> got = run(m, x, n, nullptr);
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(got[i], want[i]) << dtype_name(type) << " " << isa_name(isa)
                                   << variant_name(variant.decode) << " at " << i;
      }
    }
  }
}

}  // namespace
}  // namespace edgelm
