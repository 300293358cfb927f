#include "kernels/quant_formats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "edgelm/error.h"
#include "formats/test_util.h"
#include "util/half.h"

namespace edgelm {
namespace {

using testing::gaussian;

constexpr DType kQuantTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                                 DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K,
                                 DType::Q5_K, DType::Q6_K, DType::Q8_K};

bool TakesImportance(DType t) {
  return t != DType::Q8_0 && t != DType::Q8_K;
}

std::vector<uint8_t> Quantize(DType type, const std::vector<float>& x,
                              const float* importance = nullptr) {
  std::vector<uint8_t> q(dtype_row_bytes(type, static_cast<int64_t>(x.size())));
  quantize_row(type, x.data(), q.data(), static_cast<int64_t>(x.size()), importance);
  return q;
}

std::vector<float> RoundTrip(DType type, const std::vector<float>& x,
                             const float* importance = nullptr) {
  const std::vector<uint8_t> q = Quantize(type, x, importance);
  std::vector<float> y(x.size());
  dequantize_row_quant(type, q.data(), y.data(), static_cast<int64_t>(y.size()));
  return y;
}

double Rms(const std::vector<float>& x) {
  double s = 0;
  for (float v : x) s += double(v) * v;
  return std::sqrt(s / static_cast<double>(x.size()));
}

double RelativeRmse(const std::vector<float>& x, const std::vector<float>& y) {
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
  return std::sqrt(s / static_cast<double>(x.size())) / Rms(x);
}

// ---------------------------------------------------------------------------
// Layout

TEST(QuantFormats, BlockStructsMatchDTypeTraits) {
  struct Case {
    DType type;
    size_t size;
    int64_t elements;
  };
  const Case cases[] = {
      {DType::Q4_0, sizeof(BlockQ4_0), kQK},   {DType::Q4_1, sizeof(BlockQ4_1), kQK},
      {DType::Q5_0, sizeof(BlockQ5_0), kQK},   {DType::Q5_1, sizeof(BlockQ5_1), kQK},
      {DType::Q8_0, sizeof(BlockQ8_0), kQK},   {DType::Q2_K, sizeof(BlockQ2_K), kQK_K},
      {DType::Q3_K, sizeof(BlockQ3_K), kQK_K}, {DType::Q4_K, sizeof(BlockQ4_K), kQK_K},
      {DType::Q5_K, sizeof(BlockQ5_K), kQK_K}, {DType::Q6_K, sizeof(BlockQ6_K), kQK_K},
      {DType::Q8_K, sizeof(BlockQ8_K), kQK_K},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(c.size, dtype_traits(c.type).block_bytes) << dtype_name(c.type);
    EXPECT_EQ(c.elements, dtype_traits(c.type).block_size) << dtype_name(c.type);
    EXPECT_TRUE(quantization_supported(c.type));
  }
  EXPECT_EQ(offsetof(BlockQ2_K, d), 80u);
  EXPECT_EQ(offsetof(BlockQ3_K, scales), 96u);
  EXPECT_EQ(offsetof(BlockQ4_K, qs), 16u);
  EXPECT_EQ(offsetof(BlockQ5_K, qs), 48u);
  EXPECT_EQ(offsetof(BlockQ6_K, scales), 192u);
  EXPECT_EQ(offsetof(BlockQ8_K, bsums), 260u);
}

// ---------------------------------------------------------------------------
// Hand-derived blocks for simple inputs (exact, no tolerance).

// Q8_0: amax 127 gives d = 127/127 = 1 (f16 0x3C00) and q = x.
TEST(QuantFormats, Q8_0KnownBlock) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  x[0] = -127;
  BlockQ8_0 b;
  quantize_row_q8_0_reference(x.data(), &b, 32);
  EXPECT_EQ(b.d, 0x3C00);
  EXPECT_EQ(b.qs[0], -127);
  for (int j = 1; j < 32; ++j) EXPECT_EQ(b.qs[j], j - 16);
  std::vector<float> y(32);
  dequantize_row_q8_0(&b, y.data(), 32);
  EXPECT_EQ(y, x);
}

// Q4_0 ramp x = j - 16: the largest magnitude is x[0] = -16, so d = -16/-8 = 2
// (0x4000), and q = min(15, trunc(x/2 + 8.5)) = min(15, (j + 1) / 2). Halves
// round up (x = -15 -> -7.5 + 8.5 = 1), x = 15 clips to q = 15.
TEST(QuantFormats, Q4_0KnownRamp) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  BlockQ4_0 b;
  quantize_row_q4_0_reference(x.data(), &b, 32);
  EXPECT_EQ(b.d, 0x4000);
  for (int j = 0; j < 16; ++j) {
    const int lo = (j + 1) / 2;
    const int hi = std::min(15, (j + 17) / 2);
    EXPECT_EQ(b.qs[j], lo | (hi << 4)) << j;
  }
  std::vector<float> y(32);
  dequantize_row_q4_0(&b, y.data(), 32);
  EXPECT_EQ(y[0], -16.0f);
  EXPECT_EQ(y[1], -14.0f);  // -15 -> q 1 -> (1 - 8) * 2
  EXPECT_EQ(y[31], 14.0f);  // 15 clipped to q 15
}

// Q4_1: x = 1 + j % 16 has min 1, max 16, so d = 15/15 = 1, m = 1 and q = j % 16.
TEST(QuantFormats, Q4_1KnownBlock) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(1 + j % 16);
  BlockQ4_1 b;
  quantize_row_q4_1_reference(x.data(), &b, 32);
  EXPECT_EQ(b.d, 0x3C00);
  EXPECT_EQ(b.m, 0x3C00);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], j | (j << 4));
  std::vector<float> y(32);
  dequantize_row_q4_1(&b, y.data(), 32);
  EXPECT_EQ(y, x);
}

// Q5_0 ramp x = j - 16: d = -16/-16 = 1, q = trunc(x + 16.5) = j, so the low
// nibbles are j % 16 and bit 4 is set exactly for elements 16..31 (qh = FFFF0000).
TEST(QuantFormats, Q5_0KnownRamp) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  BlockQ5_0 b;
  quantize_row_q5_0_reference(x.data(), &b, 32);
  EXPECT_EQ(b.d, 0x3C00);
  const uint8_t qh[4] = {0x00, 0x00, 0xFF, 0xFF};
  EXPECT_EQ(std::memcmp(b.qh, qh, 4), 0);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], j | (j << 4));
  std::vector<float> y(32);
  dequantize_row_q5_0(&b, y.data(), 32);
  EXPECT_EQ(y, x);
}

// Q5_1: x = j + 0.5 has min 0.5 (f16 0x3800), max 31.5, d = 31/31 = 1, q = j.
TEST(QuantFormats, Q5_1KnownBlock) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j) + 0.5f;
  BlockQ5_1 b;
  quantize_row_q5_1_reference(x.data(), &b, 32);
  EXPECT_EQ(b.d, 0x3C00);
  EXPECT_EQ(b.m, 0x3800);
  const uint8_t qh[4] = {0x00, 0x00, 0xFF, 0xFF};
  EXPECT_EQ(std::memcmp(b.qh, qh, 4), 0);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], j | (j << 4));
  std::vector<float> y(32);
  dequantize_row_q5_1(&b, y.data(), 32);
  EXPECT_EQ(y, x);
}

// Q8_K ramp v = j - 128: iscale = -127 / -128 = 0.9921875 (exact), q = round-
// half-even(v - v/128): |v| < 64 stays v, 64 - 0.5 ties to 64, 65 -> 64.49 -> 64,
// 127 -> 126.008 -> 126, -128 -> -127. d = 1 / 0.9921875.
TEST(QuantFormats, Q8_KKnownRamp) {
  std::vector<float> x(256);
  for (int j = 0; j < 256; ++j) x[j] = static_cast<float>(j - 128);
  BlockQ8_K b;
  quantize_row_q8_K_reference(x.data(), &b, 256);
  EXPECT_EQ(b.d, 1.0f / 0.9921875f);
  EXPECT_EQ(b.qs[0], -127);
  EXPECT_EQ(b.qs[64], -64);  // v = -64: -63.5 ties to even
  EXPECT_EQ(b.qs[128], 0);
  EXPECT_EQ(b.qs[191], 63);
  EXPECT_EQ(b.qs[192], 64);
  EXPECT_EQ(b.qs[193], 64);
  EXPECT_EQ(b.qs[255], 126);
  EXPECT_EQ(b.bsums[8], 120);  // v = 0..15 unchanged
  for (int g = 0; g < 16; ++g) {
    int sum = 0;
    for (int l = 0; l < 16; ++l) sum += b.qs[16 * g + l];
    EXPECT_EQ(b.bsums[g], sum);
  }
}

// ---------------------------------------------------------------------------
// Hand-built K-quant blocks, written straight from the layout comments in the
// header, against dequantize (this is what the dot-product kernels must match).

TEST(QuantFormats, Q2_KLayout) {
  BlockQ2_K b{};
  b.d = fp32_to_fp16(1.0f);
  b.dmin = fp32_to_fp16(0.5f);
  for (int s = 0; s < 16; ++s) b.scales[s] = static_cast<uint8_t>((s % 15 + 1) | ((s % 7) << 4));
  auto level = [](int e) { return (e * 7 + e / 16) % 4; };
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, s = (e % 128) / 32, l = e % 32;
    b.qs[32 * h + l] |= static_cast<uint8_t>(level(e) << (2 * s));
  }
  std::vector<float> y(256);
  dequantize_row_q2_K(&b, y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int sub = e / 16;
    EXPECT_EQ(y[e], float(sub % 15 + 1) * level(e) - 0.5f * (sub % 7)) << e;
  }
}

TEST(QuantFormats, Q3_KLayout) {
  BlockQ3_K b{};
  b.d = fp32_to_fp16(0.25f);
  auto sc = [](int j) { return (j * 5 + 3) % 64; };  // 6-bit stored scale
  for (int j = 0; j < 16; ++j) {
    if (j < 8) {
      b.scales[j] |= static_cast<uint8_t>(sc(j) & 0xF);
    } else {
      b.scales[j - 8] |= static_cast<uint8_t>((sc(j) & 0xF) << 4);
    }
    b.scales[8 + j % 4] |= static_cast<uint8_t>((sc(j) >> 4) << (2 * (j / 4)));
  }
  auto level = [](int e) { return (e * 3 + e / 32) % 8; };
  for (int e = 0; e < 256; ++e) {
    const int q = level(e);
    const int h = e / 128, s = (e % 128) / 32, l = e % 32;
    b.qs[32 * h + l] |= static_cast<uint8_t>((q & 3) << (2 * s));
    if (q & 4) b.hmask[e % 32] |= static_cast<uint8_t>(1 << (e / 32));
  }
  std::vector<float> y(256);
  dequantize_row_q3_K(&b, y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(y[e], 0.25f * float(sc(e / 16) - 32) * float(level(e) - 4)) << e;
  }
}

void PackScaleMinK4(const int* sc, const int* m, uint8_t* scales) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    scales[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

TEST(QuantFormats, Q4_KAndQ5_KLayout) {
  const int sc[8] = {1, 17, 33, 63, 5, 40, 62, 18};
  const int m[8] = {0, 63, 21, 2, 48, 7, 33, 60};
  BlockQ4_K b4{};
  BlockQ5_K b5{};
  b4.d = b5.d = fp32_to_fp16(0.125f);
  b4.dmin = b5.dmin = fp32_to_fp16(0.0625f);
  PackScaleMinK4(sc, m, b4.scales);
  PackScaleMinK4(sc, m, b5.scales);
  auto level = [](int e) { return (e * 11 + e / 64) % 32; };
  for (int e = 0; e < 256; ++e) {
    const int h = e / 64, upper = (e % 64) / 32, l = e % 32;
    b4.qs[32 * h + l] |= static_cast<uint8_t>((level(e) & 15) << (4 * upper));
    b5.qs[32 * h + l] |= static_cast<uint8_t>((level(e) & 15) << (4 * upper));
    if (level(e) & 16) b5.qh[l] |= static_cast<uint8_t>(1 << (e / 32));
  }
  std::vector<float> y4(256), y5(256);
  dequantize_row_q4_K(&b4, y4.data(), 256);
  dequantize_row_q5_K(&b5, y5.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int s = e / 32;
    EXPECT_EQ(y4[e], 0.125f * sc[s] * float(level(e) & 15) - 0.0625f * m[s]) << e;
    EXPECT_EQ(y5[e], 0.125f * sc[s] * float(level(e)) - 0.0625f * m[s]) << e;
  }
}

TEST(QuantFormats, Q6_KLayout) {
  BlockQ6_K b{};
  b.d = fp32_to_fp16(0.5f);
  for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<int8_t>(j * 9 - 70);
  auto level = [](int e) { return (e * 13 + e / 16) % 64; };
  for (int e = 0; e < 256; ++e) {
    // Within each 128-half: quarter g (32 elements) -> ql[l + 32 * (g % 2)]
    // nibble g / 2, and qh[l] bits 2g..2g+1.
    const int h = e / 128, g = (e % 128) / 32, l = e % 32;
    b.ql[64 * h + l + 32 * (g % 2)] |= static_cast<uint8_t>((level(e) & 15) << (4 * (g / 2)));
    b.qh[32 * h + l] |= static_cast<uint8_t>((level(e) >> 4) << (2 * g));
  }
  std::vector<float> y(256);
  dequantize_row_q6_K(&b, y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(y[e], 0.5f * float(b.scales[e / 16]) * float(level(e) - 32)) << e;
  }
}

// ---------------------------------------------------------------------------
// Accuracy

struct ErrorBound {
  DType type;
  // Bounds on RMSE / RMS of the data, about 15% above what the reference
  // quantizers measure (in parentheses; llama.cpp gives the same bytes).
  double gaussian;  // N(0, 1), 64K values
  double ramp;      // -1..1 linear ramp, 4096 values
  double spiky;     // N(0, 1) with every 61st value x20
  double shifted;   // N(0.5, 0.1): offset rows, the asymmetric formats' case
};

constexpr ErrorBound kBounds[] = {
    {DType::Q8_0, 0.0062, 0.0027, 0.0135, 0.0036},  // (0.54%, 0.23%, 1.16%, 0.31%)
    {DType::Q4_0, 0.100, 0.017, 0.19, 0.056},       // (8.7%, 1.4%, 16.3%, 4.9%)
    {DType::Q4_1, 0.090, 0.001, 0.127, 0.018},      // (7.8%, 0.05%, 11.0%, 1.5%)
    {DType::Q5_0, 0.050, 0.015, 0.107, 0.028},      // (4.3%, 1.3%, 9.3%, 2.4%)
    {DType::Q5_1, 0.044, 0.001, 0.063, 0.0085},     // (3.8%, 0%, 5.4%, 0.72%)
    {DType::Q2_K, 0.340, 0.024, 0.295, 0.123},      // (29.7%, 2.0%, 25.4%, 10.7%)
    {DType::Q3_K, 0.175, 0.013, 0.188, 0.103},      // (15.2%, 1.0%, 16.2%, 8.9%)
    {DType::Q4_K, 0.083, 0.0095, 0.118, 0.028},     // (7.2%, 0.80%, 10.2%, 2.4%)
    {DType::Q5_K, 0.042, 0.0065, 0.060, 0.014},     // (3.6%, 0.55%, 5.1%, 1.2%)
    {DType::Q6_K, 0.021, 0.005, 0.039, 0.012},      // (1.8%, 0.41%, 3.4%, 1.0%)
    {DType::Q8_K, 0.0082, 0.003, 0.030, 0.004},     // (0.71%, 0.25%, 2.6%, 0.34%)
};

TEST(QuantFormats, RoundTripErrorOnGaussianData) {
  const std::vector<float> x = gaussian(64 * 1024, 7);
  for (const ErrorBound& b : kBounds) {
    const double rel = RelativeRmse(x, RoundTrip(b.type, x));
    EXPECT_LT(rel, b.gaussian) << dtype_name(b.type);
    EXPECT_GT(rel, 0.0) << dtype_name(b.type);
    RecordProperty(std::string("rmse_") + dtype_name(b.type), std::to_string(rel));
  }
}

// More bits must never be worse: the ordering within each family holds.
TEST(QuantFormats, MoreBitsMeansLessError) {
  const std::vector<float> x = gaussian(16 * 1024, 11, 0.02f);
  auto err = [&](DType t) { return RelativeRmse(x, RoundTrip(t, x)); };
  EXPECT_LT(err(DType::Q8_0), err(DType::Q5_0));
  EXPECT_LT(err(DType::Q5_0), err(DType::Q4_0));
  EXPECT_LT(err(DType::Q5_1), err(DType::Q4_1));
  EXPECT_LT(err(DType::Q6_K), err(DType::Q5_K));
  EXPECT_LT(err(DType::Q5_K), err(DType::Q4_K));
  EXPECT_LT(err(DType::Q4_K), err(DType::Q3_K));
  EXPECT_LT(err(DType::Q3_K), err(DType::Q2_K));
}

TEST(QuantFormats, RoundTripErrorOnStructuredData) {
  const size_t n = 4096;
  std::vector<float> ramp(n), spiky = gaussian(n, 3), shifted = gaussian(n, 5, 0.1f);
  for (size_t i = 0; i < n; ++i) ramp[i] = -1.0f + 2.0f * static_cast<float>(i) / n;
  for (size_t i = 0; i < n; i += 61) spiky[i] *= 20.0f;
  for (float& v : shifted) v += 0.5f;
  for (const ErrorBound& b : kBounds) {
    SCOPED_TRACE(dtype_name(b.type));
    EXPECT_LT(RelativeRmse(ramp, RoundTrip(b.type, ramp)), b.ramp);
    EXPECT_LT(RelativeRmse(spiky, RoundTrip(b.type, spiky)), b.spiky);
    EXPECT_LT(RelativeRmse(shifted, RoundTrip(b.type, shifted)), b.shifted);
  }
}

TEST(QuantFormats, AllZeroRowsStayZero) {
  const std::vector<float> x(512, 0.0f);
  for (DType t : kQuantTypes) {
    SCOPED_TRACE(dtype_name(t));
    EXPECT_EQ(RoundTrip(t, x), x);
    if (TakesImportance(t)) {
      const std::vector<float> imp(512, 1.0f);
      EXPECT_EQ(RoundTrip(t, x, imp.data()), x);
    }
    // Every scale is zero, so the whole encoding is zeros except level
    // offsets: check dequantization of an all-zero buffer is zero too.
    std::vector<uint8_t> zeros(dtype_row_bytes(t, 512), 0);
    std::vector<float> y(512, 1.0f);
    dequantize_row_quant(t, zeros.data(), y.data(), 512);
    EXPECT_EQ(y, x);
  }
}

TEST(QuantFormats, ConstantRowsAreNearlyExact) {
  // (Much smaller constants lose precision in the K-quants: their f16
  // super-scale d = c / (15 * 63) becomes an f16 subnormal, as in ggml.)
  for (float c : {1.0f, -3.5f, 0.07f, 250.0f}) {
    const std::vector<float> x(512, c);
    for (DType t : kQuantTypes) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " c=" + std::to_string(c));
      const std::vector<float> y = RoundTrip(t, x);
      // Only the f16 rounding of the scale(s) remains (Q2_K/Q3_K: 4/3-bit
      // super-scale products add a little more).
      for (float v : y) EXPECT_NEAR(v, c, std::fabs(c) * 2e-3f);
    }
  }
}

// Finite for any input whose values fit in f16 (beyond 65504 the f16 min of
// Q4_1/Q5_1 overflows to inf, in ggml as well).
TEST(QuantFormats, OutputsAreFiniteAcrossScales) {
  for (float scale : {1e-30f, 1e-12f, 1e-6f, 1.0f, 1e3f, 1e4f}) {
    std::vector<float> x = gaussian(1024, 17, scale);
    const std::vector<float> imp = gaussian(1024, 18, 1.0f);
    std::vector<float> abs_imp(imp.size());
    for (size_t i = 0; i < imp.size(); ++i) abs_imp[i] = std::fabs(imp[i]);
    for (DType t : kQuantTypes) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " scale=" + std::to_string(scale));
      for (float v : RoundTrip(t, x)) ASSERT_TRUE(std::isfinite(v));
      if (TakesImportance(t)) {
        for (float v : RoundTrip(t, x, abs_imp.data())) ASSERT_TRUE(std::isfinite(v));
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Importance weighting

// With importance concentrated on a few columns, the weighted quantizer must
// beat the reference one on the importance-weighted error (what an imatrix
// optimizes), for every type that takes importance. (Measured ratios 0.20 for
// Q2_K to 0.53 for Q4_0.)
TEST(QuantFormats, ImportanceReducesWeightedError) {
  const int64_t n = 4096;
  const std::vector<float> x = gaussian(n, 21);
  std::vector<float> imp(n);
  std::mt19937 gen(22);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (float& w : imp) w = u(gen) < 0.1f ? 50.0f : 0.5f * u(gen);
  auto weighted_err = [&](const std::vector<float>& y) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += imp[i] * (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    return s;
  };
  for (DType t : kQuantTypes) {
    if (!TakesImportance(t)) continue;
    SCOPED_TRACE(dtype_name(t));
    const double ref = weighted_err(RoundTrip(t, x));
    const double wtd = weighted_err(RoundTrip(t, x, imp.data()));
    EXPECT_LT(wtd, 0.7 * ref);
  }
}

TEST(QuantFormats, DispatchMatchesPerTypeFunctions) {
  const std::vector<float> x = gaussian(512, 31);
  std::vector<float> imp(512);
  for (size_t i = 0; i < imp.size(); ++i) imp[i] = 1.0f + static_cast<float>(i % 7);
  using Ref = void (*)(const float*, void*, int64_t);
  using Wtd = void (*)(const float*, void*, int64_t, const float*);
  struct Case {
    DType type;
    Ref ref;
    Wtd wtd;
  };
  const Case cases[] = {
      {DType::Q4_0, quantize_row_q4_0_reference, quantize_row_q4_0_weighted},
      {DType::Q4_1, quantize_row_q4_1_reference, quantize_row_q4_1_weighted},
      {DType::Q5_0, quantize_row_q5_0_reference, quantize_row_q5_0_weighted},
      {DType::Q5_1, quantize_row_q5_1_reference, quantize_row_q5_1_weighted},
      {DType::Q8_0, quantize_row_q8_0_reference, nullptr},
      {DType::Q2_K, quantize_row_q2_K_reference, quantize_row_q2_K_weighted},
      {DType::Q3_K, quantize_row_q3_K_reference, quantize_row_q3_K_weighted},
      {DType::Q4_K, quantize_row_q4_K_reference, quantize_row_q4_K_weighted},
      {DType::Q5_K, quantize_row_q5_K_reference, quantize_row_q5_K_weighted},
      {DType::Q6_K, quantize_row_q6_K_reference, quantize_row_q6_K_weighted},
      {DType::Q8_K, quantize_row_q8_K_reference, nullptr},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(dtype_name(c.type));
    std::vector<uint8_t> direct(dtype_row_bytes(c.type, 512));
    c.ref(x.data(), direct.data(), 512);
    EXPECT_EQ(Quantize(c.type, x), direct);
    if (c.wtd) {
      c.wtd(x.data(), direct.data(), 512, imp.data());
      EXPECT_EQ(Quantize(c.type, x, imp.data()), direct);
      EXPECT_NE(Quantize(c.type, x, imp.data()), Quantize(c.type, x));
    } else {
      EXPECT_EQ(Quantize(c.type, x, imp.data()), direct);  // importance ignored
    }
  }
}

TEST(QuantFormats, FloatTypesRoundTrip) {
  const std::vector<float> x = {1.0f, -2.5f, 65504.0f, 1e-3f, 0.0f, 3.14159f};
  EXPECT_EQ(RoundTrip(DType::F32, x), x);
  const std::vector<float> h = RoundTrip(DType::F16, x);
  const std::vector<float> b = RoundTrip(DType::BF16, x);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(h[i], fp16_to_fp32(fp32_to_fp16(x[i])));
    EXPECT_EQ(b[i], bf16_to_fp32(fp32_to_bf16(x[i])));
  }
}

// ---------------------------------------------------------------------------
// Errors

TEST(QuantFormats, BadLengthsThrow) {
  std::vector<float> x(600, 1.0f), y(600);
  std::vector<uint8_t> q(4096);
  for (DType t : kQuantTypes) {
    SCOPED_TRACE(dtype_name(t));
    const int64_t bs = dtype_traits(t).block_size;
    for (int64_t n : {bs - 1, bs + 1, int64_t{-bs}}) {
      EXPECT_THROW(quantize_row(t, x.data(), q.data(), n), Error) << n;
      EXPECT_THROW(dequantize_row_quant(t, q.data(), y.data(), n), Error) << n;
      if (TakesImportance(t)) {
        EXPECT_THROW(quantize_row(t, x.data(), q.data(), n, x.data()), Error) << n;
      }
    }
  }
  try {
    quantize_row_q4_K_reference(x.data(), q.data(), 300);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q4_K"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("300"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quantize_row_fp8_e4m3(x.data(), q.data(), 33), Error);
  EXPECT_THROW(dequantize_row_fp8_e4m3(q.data(), y.data(), 31), Error);
  EXPECT_THROW(quantize_row(DType::F16, x.data(), q.data(), -1), Error);
}

TEST(QuantFormats, BadImportanceThrows) {
  std::vector<float> x(256, 1.0f), imp(256, 1.0f);
  std::vector<uint8_t> q(1024);
  EXPECT_THROW(quantize_row_q4_K_weighted(x.data(), q.data(), 256, nullptr), Error);
  imp[7] = -1.0f;
  EXPECT_THROW(quantize_row(DType::Q6_K, x.data(), q.data(), 256, imp.data()), Error);
  imp[7] = std::nanf("");
  EXPECT_THROW(quantize_row(DType::Q4_0, x.data(), q.data(), 256, imp.data()), Error);
  imp[7] = INFINITY;
  EXPECT_THROW(quantize_row(DType::Q2_K, x.data(), q.data(), 256, imp.data()), Error);
}

TEST(QuantFormats, UnsupportedTypesThrow) {
  std::vector<float> x(256), y(256);
  std::vector<uint8_t> q(1024);
  for (DType t : {DType::IQ2_XXS, DType::IQ4_NL, DType::Q8_1, DType::I32, DType::TQ1_0}) {
    EXPECT_FALSE(quantization_supported(t));
    EXPECT_THROW(quantize_row(t, x.data(), q.data(), 256), Error) << dtype_name(t);
    EXPECT_THROW(dequantize_row_quant(t, q.data(), y.data(), 256), Error) << dtype_name(t);
  }
  EXPECT_THROW(quantize_row(static_cast<DType>(99), x.data(), q.data(), 256), Error);
}

// Garbage in (NaN/Inf weights from a corrupt file) must not crash or hit UB.
TEST(QuantFormats, NonFiniteInputDoesNotCrash) {
  std::vector<float> x = gaussian(512, 41);
  x[3] = NAN;
  x[300] = INFINITY;
  x[301] = -INFINITY;
  for (DType t : kQuantTypes) {
    std::vector<float> y = RoundTrip(t, x);
    EXPECT_EQ(y.size(), x.size());
  }
}

// ---------------------------------------------------------------------------
// FP8 E4M3

TEST(Fp8E4M3, KnownCodes) {
  EXPECT_EQ(e4m3_to_fp32(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(e4m3_to_fp32(0x80)));
  EXPECT_EQ(e4m3_to_fp32(0x01), 0x1p-9f);  // smallest subnormal
  EXPECT_EQ(e4m3_to_fp32(0x07), 7 * 0x1p-9f);
  EXPECT_EQ(e4m3_to_fp32(0x08), 0x1p-6f);  // smallest normal
  EXPECT_EQ(e4m3_to_fp32(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_fp32(0x3C), 1.5f);
  EXPECT_EQ(e4m3_to_fp32(0x77), 240.0f);
  EXPECT_EQ(e4m3_to_fp32(0x78), 256.0f);
  EXPECT_EQ(e4m3_to_fp32(0x7E), 448.0f);  // largest finite
  EXPECT_EQ(e4m3_to_fp32(0xFE), -448.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_fp32(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_to_fp32(0xFF)));
}

TEST(Fp8E4M3, AllCodesRoundTripAndAreOrdered) {
  int finite = 0;
  for (int c = 0; c < 256; ++c) {
    const float v = e4m3_to_fp32(static_cast<uint8_t>(c));
    if ((c & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(v)) << c;
      EXPECT_EQ(fp32_to_e4m3(v) & 0x7F, 0x7F) << c;
      continue;
    }
    ++finite;
    EXPECT_EQ(fp32_to_e4m3(v), c) << c;
    EXPECT_EQ(e4m3_to_fp32(static_cast<uint8_t>(c ^ 0x80)), -v) << c;
    if ((c & 0x7F) > 0) {
      EXPECT_GT(std::fabs(v), std::fabs(e4m3_to_fp32(static_cast<uint8_t>(c - 1)))) << c;
    }
  }
  EXPECT_EQ(finite, 254);
}

// Between every pair of neighbouring codes: the midpoint goes to the even code
// (ties to even), anything off the midpoint to the nearer code.
TEST(Fp8E4M3, RoundsToNearestEven) {
  for (int c = 0; c < 0x7E; ++c) {
    for (int sign : {0, 0x80}) {
      const float lo = e4m3_to_fp32(static_cast<uint8_t>(c | sign));
      const float hi = e4m3_to_fp32(static_cast<uint8_t>((c + 1) | sign));
      const float mid = (lo + hi) / 2;  // exact: at most 5 significant bits
      ASSERT_EQ(mid - lo, hi - mid);
      const int even = (c % 2 == 0) ? c : c + 1;
      EXPECT_EQ(fp32_to_e4m3(mid), even | sign) << c;
      EXPECT_EQ(fp32_to_e4m3(std::nextafter(mid, lo)), c | sign) << c;
      EXPECT_EQ(fp32_to_e4m3(std::nextafter(mid, hi)), (c + 1) | sign) << c;
    }
  }
}

TEST(Fp8E4M3, Saturates) {
  EXPECT_EQ(fp32_to_e4m3(448.0f), 0x7E);
  EXPECT_EQ(fp32_to_e4m3(464.0f), 0x7E);  // would round to 480, which E4M3 lacks
  EXPECT_EQ(fp32_to_e4m3(1e30f), 0x7E);
  EXPECT_EQ(fp32_to_e4m3(INFINITY), 0x7E);
  EXPECT_EQ(fp32_to_e4m3(-INFINITY), 0xFE);
  EXPECT_EQ(fp32_to_e4m3(-500.0f), 0xFE);
  EXPECT_EQ(fp32_to_e4m3(0x1p-10f), 0x00);  // half the smallest subnormal: ties to 0
  EXPECT_EQ(fp32_to_e4m3(0x1.8p-10f), 0x01);
  EXPECT_EQ(fp32_to_e4m3(1e-30f), 0x00);
  EXPECT_EQ(fp32_to_e4m3(-1e-30f), 0x80);
  EXPECT_EQ(fp32_to_e4m3(NAN), 0x7F);
}

TEST(Fp8E4M3, BlockRoundTrip) {
  const std::vector<float> x = gaussian(4096, 51);
  std::vector<BlockFp8E4M3> q(4096 / 32);
  quantize_row_fp8_e4m3(x.data(), q.data(), 4096);
  std::vector<float> y(4096);
  dequantize_row_fp8_e4m3(q.data(), y.data(), 4096);
  // 3 mantissa bits: at most 1/16 relative error for normal values, plus the
  // subnormal step d * 2^-9 near zero.
  for (size_t i = 0; i < x.size(); ++i) {
    const float d = fp16_to_fp32(q[i / 32].d);
    EXPECT_LE(std::fabs(y[i] - x[i]), std::fabs(x[i]) / 16 + d * 0x1p-10f) << i;
  }
  const double rel = RelativeRmse(x, y);
  EXPECT_LT(rel, 0.025);
  RecordProperty("rmse_fp8_e4m3", std::to_string(rel));
  // The scale is rounded up, so the largest |x| in a block never saturates.
  for (size_t b = 0; b < q.size(); ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * b + j]));
    EXPECT_GE(fp16_to_fp32(q[b].d) * 448.0f, amax);
  }
}

TEST(Fp8E4M3, BlockEdgeCases) {
  std::vector<float> x(64, 0.0f), y(64, 1.0f);
  BlockFp8E4M3 q[2];
  quantize_row_fp8_e4m3(x.data(), q, 64);
  dequantize_row_fp8_e4m3(q, y.data(), 64);
  EXPECT_EQ(y, x);
  // Exact powers of two with amax 448 need no rounding at all.
  for (int j = 0; j < 32; ++j) x[j] = (j % 2 ? -1.0f : 1.0f) * std::ldexp(1.0f, j % 9);
  x[5] = 448.0f;
  quantize_row_fp8_e4m3(x.data(), q, 64);
  EXPECT_EQ(q[0].d, 0x3C00);
  dequantize_row_fp8_e4m3(q, y.data(), 64);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], x[j]) << j;
  // Tiny and huge blocks stay finite.
  for (float s : {1e-30f, 1e-7f, 1e10f}) {
    const std::vector<float> g = gaussian(64, 61, s);
    quantize_row_fp8_e4m3(g.data(), q, 64);
    dequantize_row_fp8_e4m3(q, y.data(), 64);
    for (float v : y) EXPECT_TRUE(std::isfinite(v)) << s;
  }
}

}  // namespace
}  // namespace edgelm
