// AVX-512 (F/VL) versions of ops.cc's rmsnorm, softmax and silu_mul: 16 lanes,
// masked tails, ops.cc's exp_approx on vectors (FMA in the polynomial, so
// results may differ from the scalar reference in the last bits; ops_test.cc
// bounds the difference). See matmul_internal.h for why it uses only
// intrinsics and file-local code.
#include <immintrin.h>

#include <cstdint>

#include "kernels/matmul_internal.h"

// GCC 12 reports its own AVX-512 intrinsics (_mm512_undefined_*) as uninitialized.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace edgelm::kernels_internal {
namespace {

inline __m512 inf16() {
  return _mm512_castsi512_ps(_mm512_set1_epi32(0x7f800000));
}
inline __m512 minus_inf16() {
  return _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(0xff800000u)));
}

// The first `count` lanes (1..15).
inline __mmask16 tail_mask(int64_t count) {
  return static_cast<__mmask16>((1u << count) - 1);
}

// ops.cc's exp_approx: x < -87 gives 0 (also -inf), x > 88.72 gives +inf,
// NaN stays NaN (max/min return their second operand for NaN).
inline __m512 exp16(__m512 x) {
  const __m512 clamped =
      _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-87.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), clamped);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r);
  p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
  // n is an integer in [-126, 127]: p * 2^n exactly as the scalar exponent bits give it.
  const __m512 result =
      _mm512_mask_mov_ps(_mm512_scalef_ps(p, n),
                         _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.72284f), _CMP_GT_OQ), inf16());
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ), result);
}

// Sum of the 16 lanes of v, each widened to double, added into (lo, hi).
inline void add_widened(__m512 v, __m512d* lo, __m512d* hi) {
  *lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
  *hi = _mm512_add_pd(
      *hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

void rmsnorm_avx512(float* out, const float* x, const float* weight, int64_t n, float eps) {
  // Sum of squares in double, like the scalar version (squares of floats are exact in double).
  __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
  __m512d acc2 = _mm512_setzero_pd(), acc3 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
    const __m512d b = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8));
    const __m512d c = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 16));
    const __m512d d = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 24));
    acc0 = _mm512_fmadd_pd(a, a, acc0);
    acc1 = _mm512_fmadd_pd(b, b, acc1);
    acc2 = _mm512_fmadd_pd(c, c, acc2);
    acc3 = _mm512_fmadd_pd(d, d, acc3);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    const __m512d b =
        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    acc0 = _mm512_fmadd_pd(a, a, acc0);
    acc1 = _mm512_fmadd_pd(b, b, acc1);
  }
  const double sum_sq =
      _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(acc0, acc1), _mm512_add_pd(acc2, acc3)));
  const double mean = n > 0 ? sum_sq / static_cast<double>(n) : 0.0;
  const __m128d root = _mm_sqrt_sd(_mm_setzero_pd(), _mm_set_sd(mean + eps));
  const __m512 scale = _mm512_set1_ps(static_cast<float>(1.0 / _mm_cvtsd_f64(root)));
  i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), scale);
    _mm512_storeu_ps(out + i, _mm512_mul_ps(v, _mm512_loadu_ps(weight + i)));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), scale);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, weight + i)));
  }
}

void softmax_avx512(float* x, int64_t n) {
  if (n <= 0) return;
  // Running maxima as in the scalar version: a NaN input is skipped unless x[0]
  // is one (then every lane stays NaN), so the result does not depend on the
  // order of the reduction.
  __m512 max0 = _mm512_set1_ps(x[0]), max1 = max0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    max0 = _mm512_max_ps(_mm512_loadu_ps(x + i), max0);
    max1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), max1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n - i);
    max0 = _mm512_max_ps(_mm512_mask_loadu_ps(minus_inf16(), m, x + i), max0);
  }
  const float max_value = _mm512_reduce_max_ps(_mm512_max_ps(max0, max1));
  if (max_value == -__builtin_inff()) {
    // Everything masked: spread evenly rather than produce NaN.
    const __m512 uniform = _mm512_set1_ps(1.0f / static_cast<float>(n));
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, uniform);
    if (i < n) _mm512_mask_storeu_ps(x + i, tail_mask(n - i), uniform);
    return;
  }
  // exp(x - max) in place, summed in double (-inf lanes of the tail add 0).
  // Widening every vector costs more than the exp, so four vectors are first
  // added in float: values in [0, 1], so each block sum is within 2^-23 of
  // exact, whatever n (ops_test.cc bounds the difference to the scalar version).
  const __m512 vmax = _mm512_set1_ps(max_value);
  __m512d sum0 = _mm512_setzero_pd(), sum1 = _mm512_setzero_pd();
  for (i = 0; i + 64 <= n; i += 64) {
    const __m512 e0 = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmax));
    const __m512 e1 = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), vmax));
    const __m512 e2 = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i + 32), vmax));
    const __m512 e3 = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i + 48), vmax));
    _mm512_storeu_ps(x + i, e0);
    _mm512_storeu_ps(x + i + 16, e1);
    _mm512_storeu_ps(x + i + 32, e2);
    _mm512_storeu_ps(x + i + 48, e3);
    add_widened(_mm512_add_ps(_mm512_add_ps(e0, e1), _mm512_add_ps(e2, e3)), &sum0, &sum1);
  }
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmax));
    _mm512_storeu_ps(x + i, e);
    add_widened(e, &sum0, &sum1);
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_mask_loadu_ps(minus_inf16(), m, x + i), vmax));
    _mm512_mask_storeu_ps(x + i, m, e);
    add_widened(e, &sum0, &sum1);
  }
  const double sum = _mm512_reduce_add_pd(_mm512_add_pd(sum0, sum1));
  const __m512 inv = _mm512_set1_ps(static_cast<float>(1.0 / sum));
  for (i = 0; i + 16 <= n; i += 16)
    _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
}

// silu(g) * up = g / (1 + exp(-g)) * up: g -> -inf gives -0 (exp overflows to
// +inf), g -> +inf gives g * up.
inline __m512 silu_mul16(__m512 g, __m512 up) {
  const __m512 minus_g =
      _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), _mm512_set1_epi32(INT32_MIN)));
  const __m512 denom = _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(minus_g));
  return _mm512_mul_ps(_mm512_div_ps(g, denom), up);
}

void silu_mul_avx512(float* out, const float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(out + i, silu_mul16(_mm512_loadu_ps(gate + i), _mm512_loadu_ps(up + i)));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(
        out + i, m,
        silu_mul16(_mm512_maskz_loadu_ps(m, gate + i), _mm512_maskz_loadu_ps(m, up + i)));
  }
}

// Four zmm loads per 256 bytes into four accumulators. With prefetching, each
// line is prefetched twice like the AVX-512 decode kernels' weights
// (StreamPrefetch::kFar): into L1 prefetch_bytes ahead and into L2 four times
// as far, so that the roofline is not below what those kernels read.
uint64_t read_sum_avx512(const uint64_t* words, int64_t count, int64_t prefetch_bytes) {
  const auto* bytes = reinterpret_cast<const char*>(words);
  __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                    _mm512_setzero_si512()};
  int64_t i = 0;
  for (; i + 32 <= count; i += 32) {
    for (int k = 0; k < 4; ++k) {
      if (prefetch_bytes > 0) {
        _mm_prefetch(bytes + i * 8 + 64 * k + prefetch_bytes, _MM_HINT_T0);
        _mm_prefetch(bytes + i * 8 + 64 * k + 4 * prefetch_bytes, _MM_HINT_T2);
      }
      acc[k] = _mm512_add_epi64(acc[k], _mm512_loadu_si512(words + i + 8 * k));
    }
  }
  for (; i < count; i += 8) {
    const __mmask8 m =
        count - i >= 8 ? __mmask8{0xff} : static_cast<__mmask8>((1u << (count - i)) - 1);
    acc[0] = _mm512_add_epi64(acc[0], _mm512_maskz_loadu_epi64(m, words + i));
  }
  // Wrapping lane sums (GCC's _mm512_reduce_add_epi64 adds as signed long long:
  // overflow is undefined there).
  const __m512i sum8 =
      _mm512_add_epi64(_mm512_add_epi64(acc[0], acc[1]), _mm512_add_epi64(acc[2], acc[3]));
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, sum8);
  uint64_t sum = 0;
  for (uint64_t v : lanes) sum += v;
  return sum;
}

// Two passes over a row that is in cache (the logits just written): the
// largest value, then where it first occurs. MAXPS returns its second operand
// when either is NaN, so NaNs never reach the running maxima.
int64_t argmax_avx512(const float* x, int64_t n) {
  if (n <= 0) return 0;
  __m512 max0 = minus_inf16(), max1 = max0, max2 = max0, max3 = max0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    max0 = _mm512_max_ps(_mm512_loadu_ps(x + i), max0);
    max1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), max1);
    max2 = _mm512_max_ps(_mm512_loadu_ps(x + i + 32), max2);
    max3 = _mm512_max_ps(_mm512_loadu_ps(x + i + 48), max3);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n - i);
    max0 = _mm512_max_ps(_mm512_mask_loadu_ps(minus_inf16(), m, x + i), max0);
  }
  const __m512 best = _mm512_set1_ps(
      _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(max0, max1), _mm512_max_ps(max2, max3))));
  for (i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n - i);
    const __mmask16 hit = _mm512_mask_cmpeq_ps_mask(m, _mm512_maskz_loadu_ps(m, x + i), best);
    if (hit != 0) return i + __builtin_ctz(hit);
  }
  return 0;  // every value NaN
}

}  // namespace

void register_ops_avx512(IsaKernels* table) {
  table->argmax = argmax_avx512;
  table->rmsnorm = rmsnorm_avx512;
  table->softmax = softmax_avx512;
  table->silu_mul = silu_mul_avx512;
  table->read_sum = read_sum_avx512;
}

}  // namespace edgelm::kernels_internal

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
