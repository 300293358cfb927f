// The SIMD activation quantizers (quantize_acts_*.cc) against the scalar
// reference in matmul_quant.cc: same q bytes, same bits of d and dsum, same
// sums, for random and adversarial inputs (ties, NaN, infinities, denormals,
// zeros, huge values, the extreme value in any lane, both signs of it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"

namespace edgelm::kernels_internal {
namespace {

struct Candidate {
  const char* name;
  Isa isa;
  void (*register_fn)(IsaKernels*);
};

std::vector<Candidate> candidates() {
  std::vector<Candidate> all;
#if defined(__x86_64__) || defined(_M_X64)
  all.push_back({"avx2", Isa::kAvx2, register_quantize_acts_avx2});
  all.push_back({"avx512", Isa::kAvx512, register_quantize_acts_avx512});
#endif
#if defined(__aarch64__)
  all.push_back({"neon", Isa::kNeon, register_quantize_acts_neon});
#endif
  return all;
}

float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Everything one call writes, with guard entries past the end that must stay untouched.
struct Output {
  static constexpr int kGuard = 16;
  std::vector<int8_t> q;
  std::vector<float> d, dsum;
  std::vector<int16_t> s32, s16;
  Output(int64_t cols, int64_t block)
      : q(cols + kGuard, int8_t{0x5a}),
        d(cols / block + kGuard, from_bits(0x7fa5a5a5u)),
        dsum(cols / 32 + kGuard, from_bits(0x7fa5a5a5u)),
        s32(cols / 32 + kGuard, int16_t{0x5a5a}),
        s16(cols / 16 + kGuard, int16_t{0x5a5a}) {}
};

template <typename T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// First differing entry, for the failure message.
template <typename T>
std::string first_difference(const char* what, const std::vector<T>& want,
                             const std::vector<T>& got) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::memcmp(&want[i], &got[i], sizeof(T)) != 0) {
      uint32_t wb = 0, gb = 0;
      std::memcpy(&wb, &want[i], sizeof(T));
      std::memcpy(&gb, &got[i], sizeof(T));
      return std::string(what) + "[" + std::to_string(i) + "]: want " + std::to_string(want[i]) +
             " (bits " + std::to_string(wb) + "), got " + std::to_string(got[i]) + " (bits " +
             std::to_string(gb) + ")";
    }
  }
  return "";
}

// Runs reference and candidate on x; returns "" when every byte agrees.
std::string compare(QuantizeActsFn reference, QuantizeActsFn simd, const std::vector<float>& x,
                    int64_t block) {
  const int64_t cols = static_cast<int64_t>(x.size());
  Output want(cols, block), got(cols, block);
  reference(x.data(), cols, want.q.data(), want.d.data(), want.dsum.data(), want.s32.data(),
            want.s16.data());
  simd(x.data(), cols, got.q.data(), got.d.data(), got.dsum.data(), got.s32.data(), got.s16.data());
  std::string diff = first_difference("q", want.q, got.q);
  if (diff.empty()) diff = first_difference("d", want.d, got.d);
  if (diff.empty()) diff = first_difference("dsum", want.dsum, got.dsum);
  if (diff.empty()) diff = first_difference("s32", want.s32, got.s32);
  if (diff.empty()) diff = first_difference("s16", want.s16, got.s16);
  if (diff.empty()) {
    // Both must leave the guards alone (the reference too: it is what the driver sizes for).
    Output fresh(cols, block);
    const auto guard_ok = [&](const auto& v, const auto& f, size_t used) {
      return std::memcmp(v.data() + used, f.data() + used, Output::kGuard * sizeof(v[0])) == 0;
    };
    if (!guard_ok(got.q, fresh.q, cols) || !guard_ok(got.d, fresh.d, cols / block) ||
        !guard_ok(got.dsum, fresh.dsum, cols / 32) || !guard_ok(got.s32, fresh.s32, cols / 32) ||
        !guard_ok(got.s16, fresh.s16, cols / 16)) {
      diff = "wrote past the end";
    }
  }
  return diff;
}

// Ways to fill one block; the adversarial ones aim at a specific rule of the reference.
enum class Fill {
  kGaussian,    // N(0, 1) times a scale from denormal to huge
  kTies,        // values that are exactly k + 0.5 after scaling
  kNearTies,    // one ulp either side of the ties
  kScaledTies,  // ties times a scale that is not a power of two: the product rounds first
  kSpecials,    // NaN (any payload, quiet or signaling), +-inf, +-0, denormals mixed in
  kRandomBits,  // any 32-bit pattern
  kNanRestart,  // large values, a NaN, then small values (the running max restarts)
  kBothSigns,   // +amax and -amax both present, in either order
  kSingle,      // one nonzero value in the first, last or a random lane
  kZeros,       // all +0 or -0, maybe with NaNs
  kTinyScale,   // amax where d is an f16 denormal, underflows, or 1/d overflows
  kHugeScale,   // amax where d overflows f16 or the block holds FLT_MAX
  kCount
};

class BlockFiller {
 public:
  explicit BlockFiller(uint32_t seed) : rng_(seed) {}

  void fill(Fill kind, float* xb, int n, bool k_quant) {
    switch (kind) {
      case Fill::kGaussian: {
        const float scale = std::ldexp(1.0f, uniform(-140, 120));
        for (int j = 0; j < n; ++j) xb[j] = gauss_(rng_) * scale;
        break;
      }
      case Fill::kTies:
      case Fill::kNearTies: {
        // amax = 127 * 2^e gives d = 2^e (Q8_0) and iscale = -+2^-e (Q8_K): exact scaling.
        const int e = uniform(-20, 20);
        for (int j = 0; j < n; ++j) {
          float v = std::ldexp(static_cast<float>(uniform(-127, 126)) + 0.5f, e);
          if (kind == Fill::kNearTies && uniform(0, 2) != 0) {
            v = std::nextafter(v, uniform(0, 1) ? 1e30f : -1e30f);
          }
          xb[j] = v;
        }
        xb[uniform(0, n - 1)] = std::ldexp(uniform(0, 1) ? 127.0f : -127.0f, e);
        break;
      }
      case Fill::kScaledTies: {
        // x * scale lands within an ulp or so of k + 0.5: rounding the product
        // before the rounding step (as the reference does) differs from an FMA.
        const float s = std::uniform_real_distribution<float>(1.0f, 2.0f)(rng_) *
                        std::ldexp(1.0f, uniform(-20, 20));
        for (int j = 0; j < n; ++j) {
          xb[j] = (static_cast<float>(uniform(-127, 126)) + 0.5f) * s;
        }
        xb[uniform(0, n - 1)] = (uniform(0, 1) ? 127.0f : -127.0f) * s;
        break;
      }
      case Fill::kSpecials: {
        const float scale = std::ldexp(1.0f, uniform(-30, 30));
        for (int j = 0; j < n; ++j) xb[j] = gauss_(rng_) * scale;
        const int count = uniform(1, 4);
        for (int c = 0; c < count; ++c) xb[uniform(0, n - 1)] = special();
        break;
      }
      case Fill::kRandomBits:
        for (int j = 0; j < n; ++j) xb[j] = from_bits(static_cast<uint32_t>(rng_()));
        break;
      case Fill::kNanRestart: {
        const int nan_at = uniform(0, n - 1);
        for (int j = 0; j < n; ++j) {
          xb[j] = j < nan_at ? gauss_(rng_) * 1000.0f : gauss_(rng_) * 0.001f;
        }
        xb[nan_at] = nan();
        if (uniform(0, 3) == 0) xb[n - 1] = nan();  // NaN last: the maximum is NaN
        break;
      }
      case Fill::kBothSigns: {
        const float scale = std::ldexp(1.0f, uniform(-30, 30));
        for (int j = 0; j < n; ++j) xb[j] = gauss_(rng_) * scale;
        const float amax = scale * 10.0f;
        const int a = uniform(0, n - 1);
        int b = uniform(0, n - 1);
        if (b == a) b = (a + 1) % n;
        xb[a] = amax;
        xb[b] = -amax;
        if (uniform(0, 3) == 0) xb[uniform(0, n - 1)] = nan();
        break;
      }
      case Fill::kSingle: {
        for (int j = 0; j < n; ++j) xb[j] = 0.0f;
        const int where = uniform(0, 2);
        const int lane = where == 0 ? 0 : where == 1 ? n - 1 : uniform(0, n - 1);
        xb[lane] = gauss_(rng_) * std::ldexp(1.0f, uniform(-149, 127));
        break;
      }
      case Fill::kZeros: {
        for (int j = 0; j < n; ++j) xb[j] = uniform(0, 1) ? 0.0f : -0.0f;
        if (uniform(0, 1)) xb[uniform(0, n - 1)] = nan();
        if (uniform(0, 3) == 0) {
          for (int j = 0; j < n; ++j) xb[j] = nan();
        }
        break;
      }
      case Fill::kTinyScale: {
        // Around amax = 127 * 2^-24 (f16 subnormal d) down to FLT_TRUE_MIN.
        const int e = uniform(-149, -10);
        for (int j = 0; j < n; ++j) xb[j] = gauss_(rng_) * std::ldexp(1.0f, e);
        xb[uniform(0, n - 1)] = std::ldexp(uniform(0, 1) ? 1.0f : -1.0f, e + uniform(0, 3));
        break;
      }
      case Fill::kHugeScale: {
        const int e = uniform(20, 127);
        for (int j = 0; j < n; ++j) xb[j] = gauss_(rng_) * std::ldexp(1.0f, e - 3);
        xb[uniform(0, n - 1)] =
            uniform(0, 1) ? std::numeric_limits<float>::max() : -std::numeric_limits<float>::max();
        if (uniform(0, 1)) xb[uniform(0, n - 1)] = std::ldexp(1.0f, e);
        break;
      }
      case Fill::kCount:
        break;
    }
  }

  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

 private:
  float nan() {
    // Quiet or signaling, either sign, any payload.
    const uint32_t payload = static_cast<uint32_t>(rng_()) & 0x7fffffu;
    const uint32_t sign = uniform(0, 1) ? 0x80000000u : 0u;
    return from_bits(sign | 0x7f800000u | (payload == 0 ? 1u : payload));
  }
  float special() {
    switch (uniform(0, 5)) {
      case 0:
        return nan();
      case 1:
        return std::numeric_limits<float>::infinity();
      case 2:
        return -std::numeric_limits<float>::infinity();
      case 3:
        return uniform(0, 1) ? 0.0f : -0.0f;
      case 4:  // denormal
        return from_bits((uniform(0, 1) ? 0x80000000u : 0u) |
                         (static_cast<uint32_t>(rng_()) & 0x7fffffu));
      default:
        return from_bits(0x7fc00000u);  // the default quiet NaN
    }
  }

  std::mt19937 rng_;
  std::normal_distribution<float> gauss_{0.0f, 1.0f};
};

class QuantizeActsTest : public ::testing::TestWithParam<bool> {};  // true: Q8_K

// Checks every candidate the CPU supports on `cases` random inputs of the
// given column counts, each block filled one of the ways above.
void check_random(bool k_quant, const std::vector<int64_t>& col_choices, int cases, uint32_t seed) {
  IsaKernels scalar;
  register_quant_scalar_kernels(&scalar);
  const QuantizeActsFn reference = k_quant ? scalar.quantize_q8_K : scalar.quantize_q8_0;
  ASSERT_NE(reference, nullptr);
  const int block = k_quant ? 256 : 32;
  int tested = 0;
  for (const Candidate& c : candidates()) {
    if (!isa_supported(c.isa)) continue;
    IsaKernels table;
    c.register_fn(&table);
    const QuantizeActsFn simd = k_quant ? table.quantize_q8_K : table.quantize_q8_0;
    ASSERT_NE(simd, nullptr) << c.name;
    BlockFiller filler(seed);
    for (int i = 0; i < cases; ++i) {
      const int64_t cols = col_choices[filler.uniform(0, static_cast<int>(col_choices.size()) - 1)];
      std::vector<float> x(static_cast<size_t>(cols));
      // Mostly one kind per input (so whole vectors of it), sometimes mixed per block.
      const bool mixed = filler.uniform(0, 3) == 0;
      const int kind = filler.uniform(0, static_cast<int>(Fill::kCount) - 1);
      for (int64_t b = 0; b < cols / block; ++b) {
        const int k = mixed ? filler.uniform(0, static_cast<int>(Fill::kCount) - 1) : kind;
        filler.fill(static_cast<Fill>(k), x.data() + b * block, block, k_quant);
      }
      const std::string diff = compare(reference, simd, x, block);
      ASSERT_EQ(diff, "") << c.name << (k_quant ? " q8_K" : " q8_0") << ", case " << i << ", "
                          << cols << " cols, fill " << kind << (mixed ? " (mixed)" : "");
    }
    ++tested;
  }
  if (tested == 0) GTEST_SKIP() << "no SIMD quantizer for this CPU";
}

TEST_P(QuantizeActsTest, SmallRowsMatchScalar) {
  const bool k_quant = GetParam();
  check_random(k_quant, k_quant ? std::vector<int64_t>{256, 512} : std::vector<int64_t>{32, 64, 96},
               20000, 11);
}

TEST_P(QuantizeActsTest, ModelRowsMatchScalar) {
  const bool k_quant = GetParam();
  check_random(k_quant,
               k_quant ? std::vector<int64_t>{2048, 4096, 8960}
                       : std::vector<int64_t>{576, 2048, 4096, 8960},
               300, 12);
}

// Hand-picked blocks, each rule of the reference on its own.
TEST_P(QuantizeActsTest, AdversarialBlocksMatchScalar) {
  const bool k_quant = GetParam();
  const int n = k_quant ? 256 : 32;
  const float inf = std::numeric_limits<float>::infinity();
  const float qnan = std::numeric_limits<float>::quiet_NaN();
  const float big = std::numeric_limits<float>::max();
  const float denorm_min = std::numeric_limits<float>::denorm_min();
  std::vector<std::vector<float>> blocks;
  auto add = [&](auto&& make) {
    std::vector<float> b(static_cast<size_t>(n), 0.0f);
    make(b);
    blocks.push_back(b);
  };
  add([&](std::vector<float>&) {});                              // all zeros
  add([&](std::vector<float>& b) { b.assign(n, -0.0f); });       // all -0
  add([&](std::vector<float>& b) { b.assign(n, qnan); });        // all NaN
  add([&](std::vector<float>& b) { b.assign(n, inf); });         // all inf
  add([&](std::vector<float>& b) { b.assign(n, -inf); });        // all -inf
  add([&](std::vector<float>& b) { b.assign(n, big); });         // all FLT_MAX
  add([&](std::vector<float>& b) { b.assign(n, denorm_min); });  // all smallest denormal
  for (int lane : {0, n - 1, n / 2, 15, 16, 7, 8}) {
    for (float extreme : {127.0f, -127.0f, inf, -inf, qnan, big, -big, denorm_min, 1e-38f}) {
      add([&](std::vector<float>& b) {
        for (int j = 0; j < n; ++j) b[j] = static_cast<float>((j * 37) % 255 - 127) / 2.0f;
        b[lane] = extreme;
      });
    }
  }
  // Every half-integer, then one ulp each side, at scale 1 (amax 127 -> d 1).
  for (int dir = -1; dir <= 1; ++dir) {
    for (int sign : {1, -1}) {
      add([&](std::vector<float>& b) {
        for (int j = 0; j < n; ++j) {
          const float tie = static_cast<float>(j % 127) + 0.5f;
          b[j] = sign * (dir == 0 ? tie : std::nextafter(tie, dir * 1e30f));
        }
        b[n - 1] = sign * 127.0f;
      });
    }
  }
  // Both signs of the maximum, in both orders.
  add([&](std::vector<float>& b) {
    b[3] = 5.0f;
    b[9] = -5.0f;
  });
  add([&](std::vector<float>& b) {
    b[3] = -5.0f;
    b[9] = 5.0f;
  });
  add([&](std::vector<float>& b) {
    b[0] = inf;
    b[n - 1] = -inf;
  });
  // The running maximum of Q8_0 restarting after a NaN: quants far outside int8.
  add([&](std::vector<float>& b) {
    for (int j = 0; j < n; ++j) b[j] = j < n - 2 ? 1000.0f + j : 0.001f;
    b[n - 2] = qnan;
  });
  add([&](std::vector<float>& b) {
    for (int j = 0; j < n; ++j) b[j] = j % 2 ? -3e6f : 2e6f;
    b[n / 2] = qnan;
    b[n - 1] = 1e-3f;
  });

  IsaKernels scalar;
  register_quant_scalar_kernels(&scalar);
  const QuantizeActsFn reference = k_quant ? scalar.quantize_q8_K : scalar.quantize_q8_0;
  int tested = 0;
  for (const Candidate& c : candidates()) {
    if (!isa_supported(c.isa)) continue;
    IsaKernels table;
    c.register_fn(&table);
    const QuantizeActsFn simd = k_quant ? table.quantize_q8_K : table.quantize_q8_0;
    for (size_t i = 0; i < blocks.size(); ++i) {
      // Alone, and as the middle block of three so neighbours cannot mask it.
      std::vector<float> row = blocks[i];
      EXPECT_EQ(compare(reference, simd, row, n), "") << c.name << " block " << i;
      std::vector<float> three(static_cast<size_t>(3 * n), 0.25f);
      std::copy(row.begin(), row.end(), three.begin() + n);
      EXPECT_EQ(compare(reference, simd, three, n), "") << c.name << " block " << i << " of 3";
      // And as block 5 of 16, inside the groups the SIMD quantizers do at once.
      std::vector<float> sixteen(static_cast<size_t>(16 * n), -0.5f);
      std::copy(row.begin(), row.end(), sixteen.begin() + 5 * n);
      EXPECT_EQ(compare(reference, simd, sixteen, n), "") << c.name << " block " << i << " of 16";
    }
    ++tested;
  }
  if (tested == 0) GTEST_SKIP() << "no SIMD quantizer for this CPU";
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantizeActsTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("Q8_K") : std::string("Q8_0");
                         });

// The reference itself on values whose quants are known: ties round away
// from zero (Q8_0) or to even (Q8_K), and the sums add up.
TEST(QuantizeActsReference, KnownValues) {
  IsaKernels scalar;
  register_quant_scalar_kernels(&scalar);
  std::vector<float> x(256, 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 3.5f;
  Output o(256, 32);
  scalar.quantize_q8_0(x.data(), 32, o.q.data(), o.d.data(), o.dsum.data(), o.s32.data(),
                       o.s16.data());
  EXPECT_EQ(o.d[0], 1.0f);
  EXPECT_EQ(o.q[1], 3);
  EXPECT_EQ(o.q[2], -3);
  EXPECT_EQ(o.q[3], 4);
  EXPECT_EQ(o.s32[0], 127 + 3 - 3 + 4);
  EXPECT_EQ(o.s16[0], 131);
  EXPECT_EQ(o.s16[1], 0);

  x[0] = -127.0f;  // Q8_K: iscale = 1
  Output k(256, 256);
  scalar.quantize_q8_K(x.data(), 256, k.q.data(), k.d.data(), k.dsum.data(), k.s32.data(),
                       k.s16.data());
  EXPECT_EQ(k.d[0], 1.0f);
  EXPECT_EQ(k.q[0], -127);
  EXPECT_EQ(k.q[1], 2);
  EXPECT_EQ(k.q[2], -2);
  EXPECT_EQ(k.q[3], 4);
  EXPECT_EQ(k.s16[0], -127 + 2 - 2 + 4);
  EXPECT_EQ(k.dsum[0], -123.0f);
}

}  // namespace
}  // namespace edgelm::kernels_internal
