#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "edgelm/error.h"
#include "kernels/cpu_features.h"
#include "kernels/isa_test_util.h"
#include "kernels/thread_pool.h"
#include "util/half.h"

namespace edgelm {
namespace {

// Every result must be within kRelTol of sum_i |w_i * x_i| (the scale of the
// rounding error of any summation order) of the double-precision reference.
constexpr double kRelTol = 1e-5;

// A weight matrix of random values stored as `type`, plus its F32 values.
struct TestMatrix {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // exactly the stored values
  WeightMatrix w;
};

TestMatrix make_matrix(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  TestMatrix m;
  const size_t elem = type == DType::F32 ? 4 : 2;
  m.bytes.resize(static_cast<size_t>(rows * cols) * elem + 1);  // +1: not a multiple of 4
  m.values.resize(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < m.values.size(); ++i) {
    float v = dist(rng);
    if (type == DType::F32) {
      std::memcpy(m.bytes.data() + i * 4, &v, 4);
    } else {
      const uint16_t h = type == DType::F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
      v = type == DType::F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
      std::memcpy(m.bytes.data() + i * 2, &h, 2);
    }
    m.values[i] = v;
  }
  m.w.type = type;
  m.w.rows = rows;
  m.w.cols = cols;
  m.w.data = m.bytes.data();
  m.w.row_bytes = static_cast<size_t>(cols) * elem;
  return m;
}

std::vector<float> random_vector(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// Checks y against a double-precision product of the exact stored values.
void expect_close(const TestMatrix& m, const std::vector<float>& x, int64_t n,
                  const std::vector<float>& y, const std::string& what) {
  const int64_t rows = m.w.rows, cols = m.w.cols;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double exact = 0, scale = 0;
      for (int64_t i = 0; i < cols; ++i) {
        const double p = static_cast<double>(m.values[r * cols + i]) * x[t * cols + i];
        exact += p;
        scale += std::fabs(p);
      }
      const double got = y[t * rows + r];
      ASSERT_LE(std::fabs(got - exact), kRelTol * scale + 1e-30)
          << what << " token " << t << " row " << r << ": got " << got << " want " << exact;
    }
  }
}

TEST(MatmulTest, ReferenceMatchesExactProduct) {
  std::mt19937 rng(1);
  for (DType type : {DType::F32, DType::F16, DType::BF16}) {
    TestMatrix m = make_matrix(type, 7, 45, rng);
    const std::vector<float> x = random_vector(3 * 45, rng);
    std::vector<float> y(3 * 7);
    matmul_reference(m.w, x.data(), 3, y.data());
    expect_close(m, x, 3, y, std::string("reference ") + dtype_name(type));
  }
}

TEST(MatmulTest, EveryIsaMatchesReferenceOnAwkwardShapes) {
  IsaGuard guard;
  std::mt19937 rng(42);
  ThreadPool pool2(2), pool3(3);
  ThreadPool* pools[] = {nullptr, &pool2, &pool3};
  // cols cover 1..300 with every residue mod 32 (vector widths are 4/8/16 and
  // kernels step by 2 vectors); rows hit every residue mod 4.
  std::vector<int64_t> col_list;
  for (int64_t c = 1; c <= 40; ++c) col_list.push_back(c);
  for (int64_t c : {47, 63, 64, 65, 95, 96, 97, 127, 129, 161, 200, 255, 256, 257, 299, 300}) {
    col_list.push_back(c);
  }
  const int64_t row_list[] = {1, 2, 3, 4, 5, 7, 13, 33, 70};
  const int64_t n_list[] = {1, 2, 3, 4, 5, 7, 19};
  int checked = 0;
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    for (DType type : {DType::F32, DType::F16, DType::BF16}) {
      for (size_t ci = 0; ci < col_list.size(); ++ci) {
        const int64_t cols = col_list[ci];
        // Rotate through rows / tokens / pools so every combination of each
        // pair shows up without the full cross product.
        const int64_t rows = row_list[ci % std::size(row_list)];
        for (size_t ni = 0; ni < std::size(n_list); ++ni) {
          const int64_t n = n_list[ni];
          ThreadPool* pool = pools[(ci + ni) % 3];
          TestMatrix m = make_matrix(type, rows, cols, rng);
          const std::vector<float> x = random_vector(static_cast<size_t>(n * cols), rng);
          std::vector<float> y(static_cast<size_t>(n * rows), NAN);
          matmul(m.w, x.data(), n, y.data(), pool);
          expect_close(m, x, n, y,
                       std::string(isa_name(isa)) + " " + dtype_name(type) + " rows " +
                           std::to_string(rows) + " cols " + std::to_string(cols) + " n " +
                           std::to_string(n) + " threads " +
                           std::to_string(pool ? pool->size() : 1));
          if (HasFatalFailure()) return;
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 0);
}

// One token with rows of up to 256 values, and 2-4 tokens at any row length,
// take the short-row kernels (16 / n rows at once on AVX-512 and NEON; on AVX2
// 8 rows x 1 or 4 rows x 2 tokens per pass);
// row strides wider than the row, as in the KV cache.
TEST(MatmulTest, ShortRowKernelsMatchReference) {
  IsaGuard guard;
  std::mt19937 rng(11);
  int checked = 0;
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    for (DType type : {DType::F32, DType::F16, DType::BF16}) {
      for (int64_t cols : {1, 7, 8, 15, 16, 17, 33, 64, 100, 255, 256, 257, 576}) {
        for (int64_t rows : {8, 15, 16, 17, 31, 32, 47, 160}) {
          const int64_t stride_cols = cols + (rows % 3) * 5;  // 0, 5 or 10 values of padding
          TestMatrix wide = make_matrix(type, rows, stride_cols, rng);
          TestMatrix m;
          m.w = wide.w;
          m.w.cols = cols;
          m.values.resize(static_cast<size_t>(rows * cols));
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t i = 0; i < cols; ++i) {
              m.values[r * cols + i] = wide.values[r * stride_cols + i];
            }
          }
          for (int64_t n = 1; n <= 4; ++n) {
            const std::vector<float> x = random_vector(static_cast<size_t>(n * cols), rng);
            std::vector<float> y(static_cast<size_t>(n * rows), NAN);
            matmul(m.w, x.data(), n, y.data(), nullptr);
            expect_close(m, x, n, y,
                         std::string(isa_name(isa)) + " " + dtype_name(type) + " rows " +
                             std::to_string(rows) + " cols " + std::to_string(cols) + " n " +
                             std::to_string(n));
            if (HasFatalFailure()) return;
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 0);
}

TEST(MatmulTest, LargerShapesWithRowStrideAndAllThreadCounts) {
  IsaGuard guard;
  std::mt19937 rng(7);
  ThreadPool pool2(2), pool3(3);
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    for (DType type : {DType::F32, DType::F16, DType::BF16}) {
      // Rows 70 x cols 288 with a padded stride (row_bytes > needed).
      const int64_t rows = 70, cols = 288, padded = 300;
      TestMatrix full = make_matrix(type, rows, padded, rng);
      TestMatrix m = full;
      m.w.data = m.bytes.data();
      m.w.cols = cols;
      m.values.clear();
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < cols; ++i) m.values.push_back(full.values[r * padded + i]);
      }
      for (int64_t n : {1, 17}) {
        const std::vector<float> x = random_vector(static_cast<size_t>(n * cols), rng);
        for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2, &pool3}) {
          std::vector<float> y(static_cast<size_t>(n * rows), NAN);
          matmul(m.w, x.data(), n, y.data(), pool);
          expect_close(m, x, n, y, std::string(isa_name(isa)) + " strided " + dtype_name(type));
        }
      }
    }
  }
}

TEST(MatmulTest, PrefillMatchesSeparateMatvecs) {
  IsaGuard guard;
  std::mt19937 rng(3);
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    TestMatrix m = make_matrix(DType::F16, 37, 130, rng);
    const int64_t n = 11;
    const std::vector<float> x = random_vector(static_cast<size_t>(n * 130), rng);
    std::vector<float> batched(static_cast<size_t>(n * 37));
    matmul(m.w, x.data(), n, batched.data(), nullptr);
    for (int64_t t = 0; t < n; ++t) {
      std::vector<float> single(37);
      matmul(m.w, x.data() + t * 130, 1, single.data(), nullptr);
      for (int64_t r = 0; r < 37; ++r) {
        EXPECT_NEAR(batched[t * 37 + r], single[r], 1e-4f) << isa_name(isa);
      }
    }
  }
}

TEST(MatmulTest, QuantizedAndUnknownTypesThrowNamingTheType) {
  // IQ2_XXS: a ggml type without kernels (the quantized ones are in matmul_quant_test.cc).
  std::vector<uint8_t> data(66 * 4, 0);
  WeightMatrix w{DType::IQ2_XXS, 4, 256, data.data(), 66};
  std::vector<float> x(256, 1.0f), y(4);
  try {
    matmul(w, x.data(), 1, y.data(), nullptr);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("iq2_xxs"), std::string::npos) << e.what();
  }
  EXPECT_THROW(matmul_reference(w, x.data(), 1, y.data()), Error);
  EXPECT_THROW(dequantize_row(DType::IQ2_XXS, data.data(), x.data(), 256), Error);

  w.type = static_cast<DType>(200);
  try {
    matmul(w, x.data(), 1, y.data(), nullptr);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("200"), std::string::npos) << e.what();
  }
}

TEST(MatmulTest, BadShapesThrow) {
  std::vector<float> data(16), x(16), y(16);
  WeightMatrix w{DType::F32, 4, 4, data.data(), 8};  // stride below 4 floats
  EXPECT_THROW(matmul(w, x.data(), 1, y.data(), nullptr), Error);
  w.row_bytes = 16;
  EXPECT_THROW(matmul(w, x.data(), -1, y.data(), nullptr), Error);
  w.data = nullptr;
  EXPECT_THROW(matmul(w, x.data(), 1, y.data(), nullptr), Error);
}

TEST(MatmulTest, ZeroColumnsGiveZeros) {
  float dummy = 0;
  WeightMatrix w{DType::F16, 3, 0, &dummy, 0};
  std::vector<float> y(6, 5.0f);
  matmul(w, nullptr, 2, y.data(), nullptr);
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST(MatmulTest, SetActiveIsaRejectsMissingIsa) {
  IsaGuard guard;
  // Shown in the log so cross-CPU runs (scripts/test-arm64.sh) say what they tested.
  std::string names;
  for (Isa isa : supported_isas()) names += std::string(" ") + isa_name(isa);
  std::printf("isa: best %s, available%s\n", isa_name(best_supported_isa()), names.c_str());
#if defined(__aarch64__)
  const CpuFeatures& f = cpu_features();
  std::printf("isa: cpu features neon %d dotprod %d fp16 %d i8mm %d\n", f.neon, f.dotprod, f.fp16,
              f.i8mm);
#endif
  EXPECT_TRUE(isa_supported(Isa::kScalar));
  EXPECT_TRUE(isa_supported(best_supported_isa()));
  EXPECT_EQ(active_isa(), best_supported_isa());
#if defined(__x86_64__)
  EXPECT_THROW(set_active_isa(Isa::kNeon), Error);
  EXPECT_TRUE(isa_supported(Isa::kAvx2) || best_supported_isa() == Isa::kScalar);
#elif defined(__aarch64__)
  EXPECT_THROW(set_active_isa(Isa::kAvx2), Error);
  EXPECT_TRUE(isa_supported(Isa::kNeon));
  // Each ARM64 ISA extends the one below (the kernel tables fall back to it).
  EXPECT_TRUE(!isa_supported(Isa::kNeonI8mm) || isa_supported(Isa::kNeonDotprod));
  EXPECT_EQ(isa_supported(Isa::kNeonI8mm), cpu_features().dotprod && cpu_features().i8mm);
#endif
  set_active_isa(Isa::kScalar);
  EXPECT_EQ(active_isa(), Isa::kScalar);
}

// Every fp16 / bf16 bit pattern converts exactly like util/half.h on every ISA.
TEST(MatmulTest, DequantizeRowIsExactForAllHalfValues) {
  IsaGuard guard;
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  // Offsets make the conversion start unaligned and end in a partial vector.
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    for (DType type : {DType::F16, DType::BF16}) {
      // All values from 3 on in one call (an odd count, so it ends in a
      // partial vector), then 0..2 as a call that is only a tail.
      std::vector<float> out(65536);
      dequantize_row(type, all.data() + 3, out.data() + 3, 65536 - 3);
      dequantize_row(type, all.data(), out.data(), 3);
      int mismatches = 0;
      for (uint32_t i = 0; i < 65536; ++i) {
        const uint16_t h = all[i];
        const float want = type == DType::F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
        const float got = out[i];
        const bool ok =
            std::isnan(want) ? std::isnan(got) : float_to_bits(want) == float_to_bits(got);
        if (!ok && ++mismatches < 5) {
          ADD_FAILURE() << isa_name(isa) << " " << dtype_name(type) << " bits " << h;
        }
      }
      EXPECT_EQ(mismatches, 0) << isa_name(isa) << " " << dtype_name(type);
    }
    // F32 rows are copied bit for bit.
    std::vector<float> src = {1.5f, -0.0f, 3e-40f, 7.0f, 1e30f};
    std::vector<float> dst(5);
    dequantize_row(DType::F32, src.data(), dst.data(), 5);
    EXPECT_EQ(0, std::memcmp(src.data(), dst.data(), sizeof(float) * 5));
  }
}

}  // namespace
}  // namespace edgelm

namespace edgelm {
namespace {

// convert_to_f16 (F16C / NEON) gives fp32_to_fp16's bits for every non-NaN
// input: a stride through all float bit patterns (normals, subnormals, the
// rounding boundaries between them, overflow to inf) plus tails of odd length.
TEST(MatmulTest, ConvertToF16MatchesScalarOnEveryIsa) {
  const Isa saved = active_isa();
  std::vector<float> src;
  for (uint64_t bits = 0; bits <= 0xffffffffu; bits += 1021) {
    float f;
    const uint32_t b = static_cast<uint32_t>(bits);
    std::memcpy(&f, &b, 4);
    if (!std::isnan(f)) src.push_back(f);
  }
  for (float f : {65504.0f, 65519.99f, 65520.0f, 6.1035156e-05f, 5.9604645e-08f, 2.9802322e-08f,
                  2.9802326e-08f, -0.0f, 0.0f}) {
    src.push_back(f);
  }
  std::vector<uint16_t> want(src.size()), got(src.size());
  for (size_t i = 0; i < src.size(); ++i) want[i] = fp32_to_fp16(src[i]);
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    for (size_t n : {src.size(), size_t{7}, size_t{1}}) {
      std::fill(got.begin(), got.end(), 0xdead);
      convert_to_f16(src.data(), got.data(), static_cast<int64_t>(n));
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(got[i], want[i]) << isa_name(isa) << " input " << src[i];
      }
      if (n < got.size()) {
        EXPECT_EQ(got[n], 0xdead);
      }
    }
  }
  set_active_isa(saved);
}

}  // namespace
}  // namespace edgelm
