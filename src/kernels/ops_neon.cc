// NEON (ARMv8.0) versions of ops.cc's rmsnorm, softmax and silu_mul: 4 lanes,
// tails through a padded 4-value buffer, ops.cc's exp_approx on vectors (FMA
// in the polynomial, so results may differ from the scalar reference in the
// last bits; ops_test.cc bounds the difference). File-local code only, like
// the x86 ISA files (see matmul_internal.h).
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "kernels/matmul_internal.h"

namespace edgelm::kernels_internal {
namespace {

// Copies count (< 4) values of src into a vector whose other lanes are `fill`.
inline float32x4_t load_tail(const float* src, int64_t count, float fill) {
  float buf[4] = {fill, fill, fill, fill};
  std::memcpy(buf, src, static_cast<size_t>(count) * sizeof(float));
  return vld1q_f32(buf);
}

inline void store_tail(float* dst, float32x4_t v, int64_t count) {
  float buf[4];
  vst1q_f32(buf, v);
  std::memcpy(dst, buf, static_cast<size_t>(count) * sizeof(float));
}

// ops.cc's exp_approx: x < -87 gives 0 (also -inf), x > 88.72 gives +inf,
// NaN stays NaN (FMAX / FMIN propagate it).
inline float32x4_t exp4(float32x4_t x) {
  const float32x4_t clamped = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0f)), vdupq_n_f32(88.0f));
  const float32x4_t n = vrndnq_f32(vmulq_f32(clamped, vdupq_n_f32(1.44269504f)));
  float32x4_t r = vfmsq_f32(clamped, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
  p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
  p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
  p = vfmaq_f32(r, vmulq_f32(p, r), r);
  p = vaddq_f32(p, vdupq_n_f32(1.0f));
  // n is an integer in [-126, 127], so 2^n is a normal float built from its exponent bits.
  const int32x4_t bits = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  float32x4_t result = vmulq_f32(p, vreinterpretq_f32_s32(bits));
  result = vbslq_f32(vcgtq_f32(x, vdupq_n_f32(88.72284f)), vdupq_n_f32(__builtin_inff()), result);
  return vbslq_f32(vcltq_f32(x, vdupq_n_f32(-87.0f)), vdupq_n_f32(0.0f), result);
}

// The scalar version's running maximum: m = v > m ? v : m (skips NaN inputs).
inline float32x4_t running_max(float32x4_t v, float32x4_t m) {
  return vbslq_f32(vcgtq_f32(v, m), v, m);
}

// The 4 lanes of v widened to double and added into (lo, hi).
inline void add_widened(float32x4_t v, float64x2_t* lo, float64x2_t* hi) {
  *lo = vaddq_f64(*lo, vcvt_f64_f32(vget_low_f32(v)));
  *hi = vaddq_f64(*hi, vcvt_high_f64_f32(v));
}

inline float64x2_t add_squares(float32x4_t v, float64x2_t acc) {
  const float64x2_t lo = vcvt_f64_f32(vget_low_f32(v));
  const float64x2_t hi = vcvt_high_f64_f32(v);
  return vfmaq_f64(vfmaq_f64(acc, lo, lo), hi, hi);
}

void rmsnorm_neon(float* out, const float* x, const float* weight, int64_t n, float eps) {
  // Sum of squares in double, like the scalar version (squares of floats are exact in double).
  float64x2_t acc0 = vdupq_n_f64(0.0), acc1 = acc0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    acc0 = add_squares(vld1q_f32(x + i), acc0);
    acc1 = add_squares(vld1q_f32(x + i + 4), acc1);
  }
  for (; i < n; i += 4) {
    acc0 = add_squares(n - i >= 4 ? vld1q_f32(x + i) : load_tail(x + i, n - i, 0.0f), acc0);
  }
  const double sum_sq = vaddvq_f64(vaddq_f64(acc0, acc1));
  const double mean = n > 0 ? sum_sq / static_cast<double>(n) : 0.0;
  const double root = vget_lane_f64(vsqrt_f64(vdup_n_f64(mean + eps)), 0);
  const float32x4_t scale = vdupq_n_f32(static_cast<float>(1.0 / root));
  for (i = 0; i + 4 <= n; i += 4) {
    vst1q_f32(out + i, vmulq_f32(vmulq_f32(vld1q_f32(x + i), scale), vld1q_f32(weight + i)));
  }
  if (i < n) {
    const float32x4_t v = vmulq_f32(load_tail(x + i, n - i, 0.0f), scale);
    store_tail(out + i, vmulq_f32(v, load_tail(weight + i, n - i, 0.0f)), n - i);
  }
}

void softmax_neon(float* x, int64_t n) {
  if (n <= 0) return;
  const float minus_inf = -__builtin_inff();
  // Running maxima as in the scalar version: a NaN input is skipped unless x[0]
  // is one (then every lane stays NaN), so the result does not depend on the
  // order of the reduction.
  float32x4_t max0 = vdupq_n_f32(x[0]), max1 = max0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    max0 = running_max(vld1q_f32(x + i), max0);
    max1 = running_max(vld1q_f32(x + i + 4), max1);
  }
  for (; i < n; i += 4) {
    max0 = running_max(n - i >= 4 ? vld1q_f32(x + i) : load_tail(x + i, n - i, minus_inf), max0);
  }
  const float max_value = vmaxvq_f32(vmaxq_f32(max0, max1));
  if (max_value == minus_inf) {
    // Everything masked: spread evenly rather than produce NaN.
    const float uniform = 1.0f / static_cast<float>(n);
    for (int64_t k = 0; k < n; ++k) x[k] = uniform;
    return;
  }
  // exp(x - max) in place, summed in double (-inf lanes of the tail add 0).
  // Four vectors are first added in float (values in [0, 1], so each block sum
  // is within 2^-23 of exact, whatever n) to widen a quarter as often.
  const float32x4_t vmax = vdupq_n_f32(max_value);
  float64x2_t sum0 = vdupq_n_f64(0.0), sum1 = sum0;
  for (i = 0; i + 16 <= n; i += 16) {
    const float32x4_t e0 = exp4(vsubq_f32(vld1q_f32(x + i), vmax));
    const float32x4_t e1 = exp4(vsubq_f32(vld1q_f32(x + i + 4), vmax));
    const float32x4_t e2 = exp4(vsubq_f32(vld1q_f32(x + i + 8), vmax));
    const float32x4_t e3 = exp4(vsubq_f32(vld1q_f32(x + i + 12), vmax));
    vst1q_f32(x + i, e0);
    vst1q_f32(x + i + 4, e1);
    vst1q_f32(x + i + 8, e2);
    vst1q_f32(x + i + 12, e3);
    add_widened(vaddq_f32(vaddq_f32(e0, e1), vaddq_f32(e2, e3)), &sum0, &sum1);
  }
  for (; i + 4 <= n; i += 4) {
    const float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + i), vmax));
    vst1q_f32(x + i, e);
    add_widened(e, &sum0, &sum1);
  }
  if (i < n) {
    const float32x4_t e = exp4(vsubq_f32(load_tail(x + i, n - i, minus_inf), vmax));
    store_tail(x + i, e, n - i);
    add_widened(e, &sum0, &sum1);
  }
  const double sum = vaddvq_f64(vaddq_f64(sum0, sum1));
  const float inv_value = static_cast<float>(1.0 / sum);
  const float32x4_t inv = vdupq_n_f32(inv_value);
  for (i = 0; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_f32(vld1q_f32(x + i), inv));
  for (; i < n; ++i) x[i] *= inv_value;
}

// silu(g) * up = g / (1 + exp(-g)) * up: g -> -inf gives -0 (exp overflows to
// +inf), g -> +inf gives g * up.
inline float32x4_t silu_mul4(float32x4_t g, float32x4_t up) {
  const float32x4_t denom = vaddq_f32(vdupq_n_f32(1.0f), exp4(vnegq_f32(g)));
  return vmulq_f32(vdivq_f32(g, denom), up);
}

void silu_mul_neon(float* out, const float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(out + i, silu_mul4(vld1q_f32(gate + i), vld1q_f32(up + i)));
  if (i < n) {
    store_tail(out + i, silu_mul4(load_tail(gate + i, n - i, 0.0f), load_tail(up + i, n - i, 0.0f)),
               n - i);
  }
}

// Four q-register loads per 64 bytes into four accumulators.
uint64_t read_sum_neon(const uint64_t* words, int64_t count, int64_t prefetch_bytes) {
  const auto* bytes = reinterpret_cast<const char*>(words);
  uint64x2_t acc[4] = {vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0)};
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    if (prefetch_bytes > 0) __builtin_prefetch(bytes + i * 8 + prefetch_bytes);
    for (int k = 0; k < 4; ++k) acc[k] = vaddq_u64(acc[k], vld1q_u64(words + i + 2 * k));
  }
  uint64_t sum = vaddvq_u64(vaddq_u64(vaddq_u64(acc[0], acc[1]), vaddq_u64(acc[2], acc[3])));
  for (; i < count; ++i) sum += words[i];
  return sum;
}

// The largest value (FMAXNM returns the number when one operand is NaN), then
// where it first occurs.
int64_t argmax_neon(const float* x, int64_t n) {
  if (n <= 0) return 0;
  const float minus_inf = -__builtin_inff();
  float32x4_t max0 = vdupq_n_f32(minus_inf), max1 = max0, max2 = max0, max3 = max0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    max0 = vmaxnmq_f32(vld1q_f32(x + i), max0);
    max1 = vmaxnmq_f32(vld1q_f32(x + i + 4), max1);
    max2 = vmaxnmq_f32(vld1q_f32(x + i + 8), max2);
    max3 = vmaxnmq_f32(vld1q_f32(x + i + 12), max3);
  }
  for (; i < n; i += 4) {
    max0 = vmaxnmq_f32(n - i >= 4 ? vld1q_f32(x + i) : load_tail(x + i, n - i, minus_inf), max0);
  }
  const float largest = vmaxnmvq_f32(vmaxnmq_f32(vmaxnmq_f32(max0, max1), vmaxnmq_f32(max2, max3)));
  const float32x4_t best = vdupq_n_f32(largest);
  for (i = 0; i + 4 <= n; i += 4) {
    if (vmaxvq_u32(vceqq_f32(vld1q_f32(x + i), best)) != 0) break;
  }
  for (; i < n; ++i) {
    if (x[i] == largest) return i;
  }
  return 0;  // every value NaN
}

}  // namespace

void register_ops_neon(IsaKernels* table) {
  table->argmax = argmax_neon;
  table->rmsnorm = rmsnorm_neon;
  table->softmax = softmax_neon;
  table->silu_mul = silu_mul_neon;
  table->read_sum = read_sum_neon;
}

}  // namespace edgelm::kernels_internal
