// Shared by the SIMD activation quantizers (quantize_acts_avx2.cc,
// quantize_acts_avx512.cc, quantize_acts_neon.cc): plain C++ for the rare cases
// the vector code hands back, so that every ISA gives the bytes of the scalar
// reference in matmul_quant.cc for every input.
//
// Everything here is in an anonymous namespace, so each ISA file compiles its
// own copy with its own flags (see matmul_internal.h); util/half.h is not used
// for the same reason. The including file turns FP contraction off first.
#pragma once

#include <cstdint>
#include <cstring>

namespace edgelm::kernels_internal {
namespace {

constexpr int kActsQ8_0Block = 32;
constexpr int kActsQ8_KBlock = 256;

inline uint32_t acts_float_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

inline float acts_bits_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// fp16_to_fp32(fp32_to_fp16(f)) of util/half.h (round to nearest even; a NaN
// becomes the quiet NaN of its sign, unlike F16C which keeps payload bits).
inline float acts_f16_round_trip(float f) {
  const uint32_t x = acts_float_bits(f);
  const uint32_t sign = x & 0x80000000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return acts_bits_float(sign | 0x7fc00000u);
  if (abs >= 0x477ff000u) return acts_bits_float(sign | 0x7f800000u);  // inf or overflow
  uint32_t half;                                                       // magnitude bits
  if (abs < 0x38800000u) {                                             // f16 subnormal or zero
    const uint32_t shift = 113 - (abs >> 23);
    if (shift > 11) return acts_bits_float(sign);
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    half = mant >> (shift + 13);
    const uint32_t rem = mant & ((1u << (shift + 13)) - 1);
    const uint32_t halfway = 1u << (shift + 12);
    if (rem > halfway || (rem == halfway && (half & 1u))) ++half;
  } else {
    half = (abs >> 13) - ((127 - 15) << 10);
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;
  }
  // Back to F32: every f16 value is exact in F32.
  const uint32_t exponent = half >> 10, mantissa = half & 0x3ffu;
  if (exponent == 0) {
    // Subnormal (or zero): mantissa * 2^-24, exact.
    return acts_bits_float(acts_float_bits(static_cast<float>(mantissa) * 5.9604644775390625e-8f) |
                           sign);
  }
  if (exponent == 31) return acts_bits_float(sign | 0x7f800000u);
  return acts_bits_float(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

// One Q8_0 block exactly as matmul_quant.cc's quantize_acts_q8_0 does it. The
// vector code sends blocks containing a NaN here: the reference's running
// maximum restarts after a NaN, so its result depends on the order, and the
// quants may leave the int8 range (they are stored truncated; the sums are of
// the stored values).
inline void quantize_block_q8_0_exact(const float* xb, int8_t* q, float* d, float* dsum,
                                      int16_t* s32, int16_t* s16) {
  float amax = 0;
  for (int j = 0; j < kActsQ8_0Block; ++j) {
    const float a = acts_bits_float(acts_float_bits(xb[j]) & 0x7fffffffu);
    amax = amax > a ? amax : a;
  }
  const float db = amax / 127;
  const float id = db != 0 ? 1.0f / db : 0.0f;
  int first_half = 0, sum = 0;
  for (int j = 0; j < kActsQ8_0Block; ++j) {
    float v = xb[j] * id;
    v = v > -1e9f && v < 1e9f ? v : 0.0f;
    const int i = static_cast<int>(v);
    const float frac = v - static_cast<float>(i);
    const int qi = i + (frac >= 0.5f) - (frac <= -0.5f);
    q[j] = static_cast<int8_t>(qi);
    sum += q[j];
    if (j == 15) first_half = sum;
  }
  *d = acts_f16_round_trip(db);
  *s32 = static_cast<int16_t>(sum);
  s16[0] = static_cast<int16_t>(first_half);
  s16[1] = static_cast<int16_t>(sum - first_half);
  *dsum = *d * static_cast<float>(sum);
}

// The reference's Q8_K scale comes from the first value of largest magnitude
// (NaNs skipped). The vector code finds the largest and smallest values; only
// when both +amax and -amax occur does the order matter, and this scans for it.
inline float first_value_of_magnitude(const float* xb, float amax) {
  for (int j = 0; j < kActsQ8_KBlock; ++j) {
    if (xb[j] == amax || xb[j] == -amax) return xb[j];
  }
  return amax;  // not reached: amax is the magnitude of one of the values
}

}  // namespace
}  // namespace edgelm::kernels_internal
