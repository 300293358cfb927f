// FP8 E4M3 SIMD kernels (matmul_fp8_*.cc) against the scalar ones
// (matmul_quant.cc: LUT matvec, dequantize_row_fp8_e4m3 + F32 panel product).
//
// What is checked, and within which bound:
//  1. The half-float trick the kernels use, for all 256 codes but the two NaNs
//     (which the quantizer never writes): exact.
//  2. Conversion (dequantize_row, the prefill path's row converter) on every
//     ISA equals the scalar dequantizer bit for bit, for every code and scale.
//  3. One-hot activations pick single weights: decode and prefill give exactly
//     d * e4m3(code) for every code on every ISA.
//  4. Random shapes (rows not a multiple of 4, odd block counts, 1..17 tokens,
//     padded row strides, 1-3 threads), random codes, zero and extreme scales:
//     every ISA against the scalar ISA and against matmul_reference (double
//     sums of the dequantized weights). Only the order of float operations
//     differs, so each result is within gamma = (cols + 64) * 2^-24 * sum |w x|
//     of the exact product (a summation-depth bound with room to spare), and
//     two ISAs within 2 gamma. A missing, doubled or mis-scaled weight moves a
//     result by about sum |w x| / cols, far above that.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/isa_test_util.h"
#include "kernels/matmul.h"
#include "kernels/quant_formats.h"
#include "kernels/thread_pool.h"
#include "util/half.h"

namespace edgelm {
namespace {

bool is_nan_code(int code) {
  return (code & 0x7F) == 0x7F;
}

// Scales the quantizer can write, smallest to largest: zero, the smallest
// subnormal and normal halves, 1, the largest finite half.
constexpr uint16_t kSpecialScales[] = {0x0000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF};

struct Fp8Matrix {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // dequantized by the scalar code
  WeightMatrix w;
};

// rows x cols FP8 weights, row stride padded by `pad` bytes; code(r, i) and
// scale(r, b) give the contents.
template <typename CodeFn, typename ScaleFn>
Fp8Matrix make_matrix(int64_t rows, int64_t cols, size_t pad, CodeFn code, ScaleFn scale) {
  Fp8Matrix m;
  const size_t row_bytes = dtype_row_bytes(DType::FP8_E4M3, cols) + pad;
  m.bytes.assign(row_bytes * rows, 0xEE);
  m.values.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    auto* blocks = reinterpret_cast<BlockFp8E4M3*>(m.bytes.data() + r * row_bytes);
    for (int64_t b = 0; b < cols / kQK; ++b) {
      blocks[b].d = scale(r, b);
      for (int j = 0; j < kQK; ++j) blocks[b].qs[j] = code(r, b * kQK + j);
    }
    dequantize_row_fp8_e4m3(blocks, m.values.data() + r * cols, cols);
  }
  m.w = {DType::FP8_E4M3, rows, cols, m.bytes.data(), row_bytes};
  return m;
}

// Random non-NaN codes (every other bit pattern: subnormals, +-0, +-448).
Fp8Matrix random_matrix(int64_t rows, int64_t cols, size_t pad, std::mt19937& rng,
                        bool special_scales) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> pick(0, std::size(kSpecialScales) - 1);
  std::uniform_real_distribution<float> log_scale(-12.0f, 2.0f);
  return make_matrix(
      rows, cols, pad,
      [&](int64_t, int64_t) {
        const int c = byte(rng);
        return static_cast<uint8_t>(is_nan_code(c) ? c ^ 1 : c);
      },
      [&](int64_t, int64_t) {
        if (special_scales) return kSpecialScales[pick(rng)];
        return fp32_to_fp16(std::exp2(log_scale(rng)));
      });
}

std::vector<float> normal_activations(int64_t n, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (float& v : x) v = dist(rng);
  return x;
}

std::vector<float> run(const Fp8Matrix& m, const std::vector<float>& x, int64_t n,
                       ThreadPool* pool) {
  std::vector<float> y(static_cast<size_t>(n * m.w.rows), NAN);
  matmul(m.w, x.data(), n, y.data(), pool);
  return y;
}

// sum |w x| for output (t, r), in double.
double abs_sum(const Fp8Matrix& m, const std::vector<float>& x, int64_t t, int64_t r) {
  const int64_t cols = m.w.cols;
  double s = 0;
  for (int64_t i = 0; i < cols; ++i) {
    s += std::fabs(double(m.values[r * cols + i]) * x[t * cols + i]);
  }
  return s;
}

double gamma_bound(const Fp8Matrix& m, const std::vector<float>& x, int64_t t, int64_t r) {
  return double(m.w.cols + 64) * 0x1p-24 * abs_sum(m, x, t, r);
}

// ---- 1. the conversion trick ----

TEST(Fp8Conversion, HalfBitsTimes256AreTheCodeForEveryNonNanCode) {
  for (int c = 0; c < 256; ++c) {
    if (is_nan_code(c)) continue;
    const uint16_t half = static_cast<uint16_t>(((c & 0x80) << 8) | ((c & 0x7F) << 7));
    const float want = e4m3_to_fp32(static_cast<uint8_t>(c));
    EXPECT_EQ(fp16_to_fp32(half) * 256.0f, want) << c;
    EXPECT_EQ(std::signbit(fp16_to_fp32(half)), std::signbit(want)) << c;  // +-0 too
    // The kernels' form: sign-extend to 16 bits, shift left 7, clear bit 14.
    const int16_t wide = static_cast<int8_t>(c);
    const uint16_t simd = static_cast<uint16_t>(static_cast<uint16_t>(wide) << 7) & 0xBF80;
    EXPECT_EQ(simd, half) << c;
  }
  // E4M3 subnormals become half subnormals: the half path must keep them.
  EXPECT_EQ(fp16_to_fp32(0x0080) * 256.0f, 0x1p-9f);  // code 0x01
}

// ---- 2. + 3. every code, exactly ----

// 8 rows x 32 columns holding all 256 codes (NaNs replaced by 0), each row with
// its own scale.
Fp8Matrix all_codes_matrix(const uint16_t row_scales[8]) {
  return make_matrix(
      8, 32, 0,
      [](int64_t r, int64_t i) {
        const int c = static_cast<int>(r * 32 + i);
        return static_cast<uint8_t>(is_nan_code(c) ? 0 : c);
      },
      [&](int64_t r, int64_t) { return row_scales[r]; });
}

TEST(Fp8Kernels, EveryCodeConvertsExactlyOnEveryIsa) {
  IsaGuard guard;
  const uint16_t scale_sets[][8] = {
      {0x3C00, 0x3C00, 0x3C00, 0x3C00, 0x3C00, 0x3C00, 0x3C00, 0x3C00},
      {0x0001, 0x03FF, 0x0400, 0x7BFF, 0x1234, 0x0000, 0x5555, 0x2E66},
  };
  for (const auto& scales : scale_sets) {
    const Fp8Matrix m = all_codes_matrix(scales);
    for (Isa isa : supported_isas()) {
      set_active_isa(isa);
      for (int64_t r = 0; r < 8; ++r) {
        std::vector<float> row(32, NAN);
        dequantize_row(DType::FP8_E4M3, m.bytes.data() + r * m.w.row_bytes, row.data(), 32);
        for (int i = 0; i < 32; ++i) {
          // Bits, not values: -0 must stay -0.
          ASSERT_EQ(float_to_bits(row[i]), float_to_bits(m.values[r * 32 + i]))
              << isa_name(isa) << " code " << r * 32 + i << " scale " << scales[r];
        }
      }
    }
  }
}

TEST(Fp8Kernels, OneHotActivationsPickEveryCodeExactly) {
  IsaGuard guard;
  const uint16_t scales[8] = {0x3C00, 0x0001, 0x0400, 0x7BFF, 0x3800, 0x03FF, 0x4A00, 0x2E66};
  const Fp8Matrix m = all_codes_matrix(scales);
  // Token t selects column t: y[t][r] = w[r][t].
  std::vector<float> x(32 * 32, 0.0f);
  for (int t = 0; t < 32; ++t) x[t * 32 + t] = 1.0f;
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    const std::vector<float> prefill = run(m, x, 32, nullptr);
    for (int t = 0; t < 32; ++t) {
      const std::vector<float> xt(x.begin() + t * 32, x.begin() + (t + 1) * 32);
      const std::vector<float> decode = run(m, xt, 1, nullptr);
      for (int r = 0; r < 8; ++r) {
        ASSERT_EQ(decode[r], m.values[r * 32 + t]) << isa_name(isa) << " code " << r * 32 + t;
        ASSERT_EQ(prefill[t * 8 + r], m.values[r * 32 + t])
            << isa_name(isa) << " code " << r * 32 + t;
      }
    }
  }
}

// ---- 4. random shapes ----

void expect_matches(const Fp8Matrix& m, const std::vector<float>& x, int64_t n,
                    const std::vector<float>& got, const std::vector<float>& scalar,
                    const std::vector<float>& exact, const std::string& what) {
  const int64_t rows = m.w.rows;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      const size_t k = static_cast<size_t>(t * rows + r);
      const double g = gamma_bound(m, x, t, r);
      ASSERT_LE(std::fabs(double(got[k]) - exact[k]), g)
          << what << " t " << t << " r " << r << " got " << got[k] << " exact " << exact[k];
      ASSERT_LE(std::fabs(double(got[k]) - scalar[k]), 2 * g)
          << what << " t " << t << " r " << r << " got " << got[k] << " scalar " << scalar[k];
    }
  }
}

TEST(Fp8Kernels, RandomShapesMatchScalarOnEveryIsa) {
  IsaGuard guard;
  std::mt19937 rng(11);
  ThreadPool pool2(2), pool3(3);
  ThreadPool* pools[] = {nullptr, &pool2, &pool3};
  int case_index = 0;
  for (int64_t rows : {1, 2, 3, 4, 5, 7, 8, 13, 33}) {
    for (int64_t nb : {1, 2, 3, 5, 9}) {
      ++case_index;
      const int64_t cols = nb * kQK;
      const size_t pad = case_index % 3 == 0 ? 6 : 0;  // odd stride: unaligned blocks
      const Fp8Matrix m = random_matrix(rows, cols, pad, rng, case_index % 4 == 0);
      for (int64_t n : {int64_t{1}, int64_t{2}, int64_t{1 + case_index % 17}}) {
        const std::vector<float> x = normal_activations(n, cols, rng);
        std::vector<float> exact(static_cast<size_t>(n * rows));
        matmul_reference(m.w, x.data(), n, exact.data());
        set_active_isa(Isa::kScalar);
        const std::vector<float> scalar = run(m, x, n, nullptr);
        for (Isa isa : supported_isas()) {
          set_active_isa(isa);
          ThreadPool* pool = pools[case_index % 3];
          const std::string what = std::string(isa_name(isa)) + " rows " + std::to_string(rows) +
                                   " cols " + std::to_string(cols) + " n " + std::to_string(n) +
                                   " pad " + std::to_string(pad);
          expect_matches(m, x, n, run(m, x, n, pool), scalar, exact, what);
        }
      }
    }
  }
}

// Rows wider than the x86 decode kernels' 8192-column pass (x is scaled in
// a stack buffer one pass at a time).
TEST(Fp8Kernels, WideRowsTakeSeveralPasses) {
  IsaGuard guard;
  std::mt19937 rng(14);
  const int64_t rows = 6, cols = 2 * 8192 + 3 * kQK;
  const Fp8Matrix m = random_matrix(rows, cols, 0, rng, false);
  for (int64_t n : {1, 2}) {
    const std::vector<float> x = normal_activations(n, cols, rng);
    std::vector<float> exact(static_cast<size_t>(n * rows));
    matmul_reference(m.w, x.data(), n, exact.data());
    set_active_isa(Isa::kScalar);
    const std::vector<float> scalar = run(m, x, n, nullptr);
    for (Isa isa : supported_isas()) {
      set_active_isa(isa);
      expect_matches(m, x, n, run(m, x, n, nullptr), scalar, exact,
                     std::string(isa_name(isa)) + " wide, n " + std::to_string(n));
    }
  }
}

TEST(Fp8Kernels, ZeroAndExtremeScales) {
  IsaGuard guard;
  std::mt19937 rng(12);
  const int64_t rows = 9, cols = 7 * kQK;
  // Row r: scale kSpecialScales[r % 6] in every block; rows 6..8 mix them.
  std::uniform_int_distribution<int> byte(0, 255);
  const Fp8Matrix m = make_matrix(
      rows, cols, 0,
      [&](int64_t, int64_t) {
        const int c = byte(rng);
        return static_cast<uint8_t>(is_nan_code(c) ? c ^ 1 : c);
      },
      [&](int64_t r, int64_t b) { return kSpecialScales[(r < 6 ? r : r + b) % 6]; });
  for (int64_t n : {1, 3, 17}) {
    const std::vector<float> x = normal_activations(n, cols, rng);
    std::vector<float> exact(static_cast<size_t>(n * rows));
    matmul_reference(m.w, x.data(), n, exact.data());
    set_active_isa(Isa::kScalar);
    const std::vector<float> scalar = run(m, x, n, nullptr);
    for (Isa isa : supported_isas()) {
      set_active_isa(isa);
      const std::vector<float> got = run(m, x, n, nullptr);
      for (int64_t t = 0; t < n; ++t) {
        ASSERT_EQ(got[t * rows + 0], 0.0f) << isa_name(isa) << " zero-scale row, t " << t;
        for (int64_t r = 1; r < rows; ++r) ASSERT_TRUE(std::isfinite(got[t * rows + r]));
      }
      expect_matches(m, x, n, got, scalar, exact, std::string(isa_name(isa)) + " extreme scales");
    }
  }
}

TEST(Fp8Kernels, DequantizeRowMatchesScalarBitForBit) {
  IsaGuard guard;
  std::mt19937 rng(13);
  for (int64_t nb : {1, 2, 3, 10}) {
    const int64_t cols = nb * kQK;
    for (bool special : {false, true}) {
      const Fp8Matrix m = random_matrix(1, cols, 0, rng, special);
      for (Isa isa : supported_isas()) {
        set_active_isa(isa);
        std::vector<float> row(static_cast<size_t>(cols), NAN);
        dequantize_row(DType::FP8_E4M3, m.bytes.data(), row.data(), cols);
        for (int64_t i = 0; i < cols; ++i) {
          ASSERT_EQ(float_to_bits(row[i]), float_to_bits(m.values[i]))
              << isa_name(isa) << " cols " << cols << " i " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace edgelm
