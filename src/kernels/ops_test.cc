#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <vector>

#include "kernels/bandwidth.h"
#include "kernels/isa_test_util.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/thread_pool.h"

namespace edgelm {
namespace {

// Runs body once with each ISA this CPU supports active.
template <typename Body>
void for_each_isa(Body body) {
  IsaGuard guard;
  for (Isa isa : supported_isas()) {
    SCOPED_TRACE(isa_name(isa));
    set_active_isa(isa);
    body();
  }
}

TEST(OpsTest, RmsNorm) {
  for_each_isa([] {
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
  });
}

TEST(OpsTest, SoftmaxIsStableAndSumsToOne) {
  for_each_isa([] {
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
    EXPECT_EQ(masked[0], 0.5f);
    EXPECT_EQ(masked[1], 0.5f);
    std::vector<float> all_masked(37, ninf);
    softmax(all_masked.data(), 37);
    for (float v : all_masked) EXPECT_EQ(v, 1.0f / 37);
  });
}

// softmax's exp approximation against std::exp over the range it can see
// (differences to the max are <= 0), plus silu's whole range.
TEST(OpsTest, SoftmaxAndSiluExpAccuracy) {
  for_each_isa([] {
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
  });
}

TEST(OpsTest, SiluMulAndAdd) {
  for_each_isa([] {
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
  });
}

TEST(OpsTest, ArgmaxTakesTheFirstLargestAndSkipsNaN) {
  for_each_isa([] {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<float> ties = {1, 3, 3, nan, 2};
    EXPECT_EQ(argmax(ties.data(), 5), 1);
    const std::vector<float> nan_first = {nan, -5, 2, 2};
    EXPECT_EQ(argmax(nan_first.data(), 4), 2);
    const std::vector<float> all_nan(37, nan);
    EXPECT_EQ(argmax(all_nan.data(), 37), 0);
    std::vector<float> masked(37, -inf);
    masked[0] = nan;
    EXPECT_EQ(argmax(masked.data(), 37), 1);
    std::vector<float> late(100, 0.0f);
    late[99] = inf;  // in the tail of every vector width
    EXPECT_EQ(argmax(late.data(), 100), 99);
    EXPECT_EQ(argmax(late.data(), 0), 0);
  });
}

// Each ISA's argmax equals the scalar one on random rows of every tail length
// and a vocabulary-sized one, with ties, NaNs and infinities mixed in.
TEST(OpsTest, SimdArgmaxMatchesScalar) {
  IsaGuard guard;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<int64_t> lengths;
  for (int64_t n = 1; n <= 70; ++n) lengths.push_back(n);
  for (int64_t n : {127, 128, 129, 1000, 49152, 151936}) lengths.push_back(n);
  for (Isa isa : supported_isas()) {
    if (isa == Isa::kScalar) continue;
    SCOPED_TRACE(isa_name(isa));
    std::mt19937 rng(99);
    std::normal_distribution<float> logit(0.0f, 3.0f);
    std::uniform_int_distribution<int> pick(0, 99);
    for (int64_t n : lengths) {
      for (int variant = 0; variant < 5; ++variant) {
        std::vector<float> row(static_cast<size_t>(n));
        for (float& v : row) v = logit(rng);
        auto at = [&] { return static_cast<size_t>(rng() % static_cast<uint32_t>(n)); };
        if (variant == 1) {  // the largest value repeated at later places
          const size_t first = at();
          row[first] = 100.0f;
          for (int k = 0; k < 3; ++k) row[std::max(first, at())] = 100.0f;
        }
        if (variant == 2) {
          for (float& v : row) v = pick(rng) < 20 ? nan : v;
        }
        if (variant == 3) {
          for (float& v : row) v = pick(rng) < 50 ? -inf : v;
          row[at()] = nan;
          if (pick(rng) < 50) row[at()] = inf;
        }
        if (variant == 4) std::fill(row.begin(), row.end(), pick(rng) < 50 ? nan : -inf);
        set_active_isa(Isa::kScalar);
        const int64_t want = argmax(row.data(), n);
        set_active_isa(isa);
        EXPECT_EQ(argmax(row.data(), n), want) << "n=" << n << " variant " << variant;
      }
    }
  }
}

// Each ISA's softmax / silu_mul / rmsnorm against the scalar reference of
// ops.cc on random inputs of every length up to 70 (all tail sizes of 4-, 8-
// and 16-lane vectors) and some longer ones, with special values mixed in. The
// SIMD exp uses FMA where the scalar one rounds every step, and the SIMD
// softmax adds four vectors in float before summing in double, so results may
// differ in the last bits (largest relative differences seen: 2.3e-7 on AVX2
// and AVX-512, 1.8e-7 on NEON; none for rmsnorm): each output must be within kRelTol
// of the scalar one (plus kAbsTol for subnormal softmax outputs); NaN must
// match NaN, infinities and zeros must be equal. Values past n must stay untouched.
constexpr double kRelTol = 1e-6;
constexpr double kAbsTol = 1e-43;

std::vector<int64_t> test_lengths() {
  std::vector<int64_t> out;
  for (int64_t n = 1; n <= 70; ++n) out.push_back(n);
  for (int64_t n : {127, 128, 129, 1000, 1536, 4099}) out.push_back(n);
  return out;
}

// Checks got against want (n values), then that the guard values after them
// are unchanged; returns the largest relative difference of finite nonzero outputs.
double expect_close(const std::vector<float>& got, const std::vector<float>& want, int64_t n,
                    const char* what) {
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float a = got[i], b = want[i];
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(a)) << what << " n=" << n << " i=" << i;
      continue;
    }
    if (std::isinf(b) || b == 0.0f) {
      EXPECT_EQ(a, b) << what << " n=" << n << " i=" << i;
      continue;
    }
    const double diff = std::fabs(static_cast<double>(a) - b);
    EXPECT_LE(diff, kRelTol * std::fabs(b) + kAbsTol)
        << what << " n=" << n << " i=" << i << " got " << a << " want " << b;
    if (std::fabs(b) >= std::numeric_limits<float>::min())
      worst = std::max(worst, diff / std::fabs(b));
  }
  for (size_t i = static_cast<size_t>(n); i < got.size(); ++i) {
    EXPECT_EQ(std::memcmp(&got[i], &want[i], sizeof(float)), 0)
        << what << " wrote past the end: n=" << n << " i=" << i;
  }
  return worst;
}

TEST(OpsTest, SimdMatchesScalar) {
  IsaGuard guard;
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const int64_t pad = 17;  // guard values after the n inputs
  for (Isa isa : supported_isas()) {
    if (isa == Isa::kScalar) continue;
    SCOPED_TRACE(isa_name(isa));
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
    std::uniform_int_distribution<int> pick(0, 99);
    double worst_softmax = 0, worst_silu = 0, worst_rmsnorm = 0;
    for (int64_t n : test_lengths()) {
      const size_t size = static_cast<size_t>(n + pad);
      for (int variant = 0; variant < 4; ++variant) {
        // softmax: logits of scale 5, 30 (some exp underflow), 100 (most do);
        // variant 3 also has -inf (masked) entries, and every third length
        // is fully masked.
        std::vector<float> logits(size);
        const float scale = variant == 0 ? 5.0f : variant == 1 ? 30.0f : 100.0f;
        for (float& v : logits) v = scale * unit(rng);
        if (variant == 3) {
          for (float& v : logits) v = pick(rng) < 30 ? -inf : v;
          if (n % 3 == 0) std::fill(logits.begin(), logits.begin() + n, -inf);
        }
        if (variant == 2) logits[static_cast<size_t>(n) / 2] += 1e30f;  // one dominant value
        std::vector<float> want = logits, got = logits;
        set_active_isa(Isa::kScalar);
        softmax(want.data(), n);
        set_active_isa(isa);
        softmax(got.data(), n);
        worst_softmax = std::max(worst_softmax, expect_close(got, want, n, "softmax"));

        // silu_mul: gates of scale 8 with special values mixed in, up of scale 2 with zeros.
        const float specials[] = {0.0f,   -0.0f,  87.5f,   -87.5f, 88.7f,  -88.7f, 89.0f,
                                  -89.0f, 100.0f, -100.0f, 1e30f,  -1e30f, inf,    -inf,
                                  nan,    1e-30f, -1e-30f, 20.0f,  -20.0f};
        std::vector<float> gate(size), up(size);
        for (size_t i = 0; i < size; ++i) {
          gate[i] = 8.0f * unit(rng);
          up[i] = 2.0f * unit(rng);
          if (variant > 0 && pick(rng) < 20) gate[i] = specials[pick(rng) % std::size(specials)];
          if (variant > 1 && pick(rng) < 10) up[i] = 0.0f;
        }
        // In place (out == gate, as the model calls it) for odd variants.
        const bool in_place = variant % 2 == 1;
        std::vector<float> silu_want = in_place ? gate : std::vector<float>(size, 7.0f);
        std::vector<float> silu_got = silu_want;
        set_active_isa(Isa::kScalar);
        silu_mul(silu_want.data(), in_place ? silu_want.data() : gate.data(), up.data(), n);
        set_active_isa(isa);
        silu_mul(silu_got.data(), in_place ? silu_got.data() : gate.data(), up.data(), n);
        worst_silu = std::max(worst_silu, expect_close(silu_got, silu_want, n, "silu_mul"));

        // rmsnorm: values of scale 3 (variant 1: 1e15, 2: 1e-20 so eps dominates,
        // 3: all zero but one), in place for odd variants.
        std::vector<float> x(size), weight(size);
        const float x_scale = variant == 1 ? 1e15f : variant == 2 ? 1e-20f : 3.0f;
        for (size_t i = 0; i < size; ++i) {
          x[i] = x_scale * unit(rng);
          weight[i] = 2.0f * unit(rng);
        }
        if (variant == 3) {
          std::fill(x.begin(), x.begin() + n, 0.0f);
          x[static_cast<size_t>(n) / 3] = 0.25f;
        }
        const float eps = variant == 0 ? 1e-5f : 1e-6f;
        std::vector<float> norm_want = in_place ? x : std::vector<float>(size, 7.0f);
        std::vector<float> norm_got = norm_want;
        float* want_out = norm_want.data();
        float* got_out = norm_got.data();
        const float* want_in = in_place ? want_out : x.data();
        const float* got_in = in_place ? got_out : x.data();
        set_active_isa(Isa::kScalar);
        rmsnorm(want_out, want_in, weight.data(), n, eps);
        set_active_isa(isa);
        rmsnorm(got_out, got_in, weight.data(), n, eps);
        worst_rmsnorm = std::max(worst_rmsnorm, expect_close(norm_got, norm_want, n, "rmsnorm"));
      }
    }
    std::printf("ops %s, largest relative difference to scalar:", isa_name(isa));
    std::printf(" softmax %.3g, silu_mul %.3g, rmsnorm %.3g\n", worst_softmax, worst_silu,
                worst_rmsnorm);
  }
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

// The bandwidth read must sum every word exactly once on every ISA, whatever
// the length (tails of each vector width) and the prefetch distance.
TEST(BandwidthTest, ReadSumMatchesPlainSum) {
  std::mt19937_64 rng(7);
  std::vector<uint64_t> words(4096 + 37);
  for (uint64_t& w : words) w = rng();
  IsaGuard guard;
  for (Isa isa : supported_isas()) {
    SCOPED_TRACE(isa_name(isa));
    set_active_isa(isa);
    const auto read_sum = kernels_internal::active_isa_kernels().read_sum;
    ASSERT_NE(read_sum, nullptr);
    for (int64_t count : {0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 100, 4096 + 37}) {
      for (int64_t offset : {0, 1, 5}) {
        if (offset + count > static_cast<int64_t>(words.size())) continue;
        uint64_t expected = 0;
        for (int64_t i = 0; i < count; ++i) expected += words[offset + i];
        for (int64_t prefetch : {0, 64, 8192}) {
          EXPECT_EQ(read_sum(words.data() + offset, count, prefetch), expected)
              << "count " << count << " offset " << offset << " prefetch " << prefetch;
        }
      }
    }
  }
}

TEST(BandwidthTest, ReturnsAPositiveRate) {
  ThreadPool pool(2);
  const double gbs = measure_read_bandwidth_gbs(pool, size_t{4} << 20);
  EXPECT_GT(gbs, 0.0);
  EXPECT_LT(gbs, 1e5);
}

}  // namespace
}  // namespace edgelm
