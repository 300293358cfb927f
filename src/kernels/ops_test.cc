#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/bandwidth.h"
#include "kernels/thread_pool.h"

namespace edgelm {
namespace {

TEST(OpsTest, RmsNorm) {
  const std::vector<float> x = {1, -2, 3, 4, 0.5f};
  const std::vector<float> w = {1, 2, 0.5f, -1, 3};
  std::vector<float> out(5);
  rmsnorm(out.data(), x.data(), w.data(), 5, 1e-5f);
  double ss = 0;
  for (float v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / 5 + 1e-5);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(out[i], x[i] * inv * w[i], 1e-6);
  // In place works too.
  std::vector<float> y = x;
  rmsnorm(y.data(), y.data(), w.data(), 5, 1e-5f);
  EXPECT_EQ(y, out);
}

TEST(OpsTest, SoftmaxIsStableAndSumsToOne) {
  std::vector<float> x = {1000, 1001, 999, -std::numeric_limits<float>::infinity()};
  softmax(x.data(), 4);
  const double e0 = std::exp(-1.0), e2 = std::exp(-2.0);
  const double sum = e0 + 1 + e2;
  EXPECT_NEAR(x[0], e0 / sum, 1e-6);
  EXPECT_NEAR(x[1], 1 / sum, 1e-6);
  EXPECT_NEAR(x[2], e2 / sum, 1e-6);
  EXPECT_EQ(x[3], 0.0f);

  std::vector<float> one = {-5};
  softmax(one.data(), 1);
  EXPECT_EQ(one[0], 1.0f);

  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> masked = {ninf, ninf};
  softmax(masked.data(), 2);
  EXPECT_FALSE(std::isnan(masked[0]));
}

// softmax's exp approximation against std::exp over the range it can see
// (differences to the max are <= 0), plus silu's whole range.
TEST(OpsTest, SoftmaxAndSiluExpAccuracy) {
  std::vector<float> x;
  for (float v = -100.0f; v <= 0.0f; v += 0.0137f) x.push_back(v);
  x.push_back(0.0f);
  std::vector<float> p = x;
  softmax(p.data(), static_cast<int64_t>(p.size()));
  double sum = 0;
  for (float v : x) sum += std::exp(static_cast<double>(v));
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(static_cast<double>(x[i])) / sum;
    EXPECT_NEAR(p[i], want, 4e-7 * want + 1e-37) << x[i];
  }
  std::vector<float> g, one;
  for (float v = -120.0f; v <= 120.0f; v += 0.0731f) g.push_back(v);
  one.assign(g.size(), 1.0f);
  std::vector<float> out(g.size());
  silu_mul(out.data(), g.data(), one.data(), static_cast<int64_t>(g.size()));
  for (size_t i = 0; i < g.size(); ++i) {
    const double want = g[i] / (1 + std::exp(-static_cast<double>(g[i])));
    // Below g = -88.7 float exp(-g) overflows: silu is then -0 (true value < 1e-36).
    EXPECT_NEAR(out[i], want, 4e-7 * std::fabs(want) + 1e-36) << g[i];
  }
  std::vector<float> nan = {std::numeric_limits<float>::quiet_NaN()};
  silu_mul(nan.data(), nan.data(), one.data(), 1);
  EXPECT_TRUE(std::isnan(nan[0]));
}

TEST(OpsTest, SiluMulAndAdd) {
  const std::vector<float> g = {-3, -0.5f, 0, 0.5f, 4};
  const std::vector<float> u = {2, 3, 4, -1, 0.25f};
  std::vector<float> out(5);
  silu_mul(out.data(), g.data(), u.data(), 5);
  for (int i = 0; i < 5; ++i) {
    const double silu = g[i] / (1 + std::exp(-static_cast<double>(g[i])));
    EXPECT_NEAR(out[i], silu * u[i], 1e-6);
  }
  std::vector<float> a = {1, 2, 3};
  const std::vector<float> b = {0.5f, -2, 10};
  add_inplace(a.data(), b.data(), 3);
  EXPECT_EQ(a, (std::vector<float>{1.5f, 0, 13}));
}

TEST(OpsTest, RopeAngles) {
  const std::vector<float> inv_freq = {1.0f, 0.1f, 0.01f};
  std::vector<float> c(3), s(3);
  rope_angles(7, inv_freq.data(), 3, c.data(), s.data());
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(c[i], std::cos(7.0 * inv_freq[i]), 1e-7);
    EXPECT_NEAR(s[i], std::sin(7.0 * inv_freq[i]), 1e-7);
  }
}

TEST(OpsTest, RopeBothLayouts) {
  const int d = 8;
  std::vector<float> inv_freq(d / 2);
  for (int i = 0; i < d / 2; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / d);
  std::vector<float> c(d / 2), s(d / 2);
  const int pos = 5;
  rope_angles(pos, inv_freq.data(), d / 2, c.data(), s.data());
  std::vector<float> head(d);
  for (int i = 0; i < d; ++i) head[i] = 0.3f * i - 1.0f;

  std::vector<float> inter = head;
  rope(inter.data(), d, c.data(), s.data(), true);
  for (int i = 0; i < d / 2; ++i) {
    const double a = pos * static_cast<double>(inv_freq[i]);
    const double x0 = head[2 * i], x1 = head[2 * i + 1];
    EXPECT_NEAR(inter[2 * i], x0 * std::cos(a) - x1 * std::sin(a), 1e-5);
    EXPECT_NEAR(inter[2 * i + 1], x0 * std::sin(a) + x1 * std::cos(a), 1e-5);
  }

  std::vector<float> neox = head;
  rope(neox.data(), d, c.data(), s.data(), false);
  for (int i = 0; i < d / 2; ++i) {
    const double a = pos * static_cast<double>(inv_freq[i]);
    const double x0 = head[i], x1 = head[i + d / 2];
    EXPECT_NEAR(neox[i], x0 * std::cos(a) - x1 * std::sin(a), 1e-5);
    EXPECT_NEAR(neox[i + d / 2], x0 * std::sin(a) + x1 * std::cos(a), 1e-5);
  }

  // Position 0 is the identity in both layouts.
  rope_angles(0, inv_freq.data(), d / 2, c.data(), s.data());
  std::vector<float> same = head;
  rope(same.data(), d, c.data(), s.data(), false);
  EXPECT_EQ(same, head);
}

TEST(BandwidthTest, ReturnsAPositiveRate) {
  ThreadPool pool(2);
  const double gbs = measure_read_bandwidth_gbs(pool, size_t{4} << 20);
  EXPECT_GT(gbs, 0.0);
  EXPECT_LT(gbs, 1e5);
}

}  // namespace
}  // namespace edgelm
