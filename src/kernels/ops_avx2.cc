// AVX2 + FMA versions of ops.cc's rmsnorm, softmax and silu_mul: 8 lanes,
// masked loads and stores for the tails, ops.cc's exp_approx on vectors (FMA
// in the polynomial, so results may differ from the scalar reference in the
// last bits; ops_test.cc bounds the difference). See matmul_internal.h for why
// it uses only intrinsics and file-local code.
#include <immintrin.h>

#include <cstdint>

#include "kernels/matmul_internal.h"

namespace edgelm::kernels_internal {
namespace {

inline __m256 inf8() {
  return _mm256_castsi256_ps(_mm256_set1_epi32(0x7f800000));
}
inline __m256 minus_inf8() {
  return _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0xff800000u)));
}

// All ones in the first `count` lanes (1..7), for maskload / maskstore.
inline __m256i tail_mask(int64_t count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// ops.cc's exp_approx: x < -87 gives 0 (also -inf), x > 88.72 gives +inf,
// NaN stays NaN (max/min return their second operand for NaN).
inline __m256 exp8(__m256 x) {
  const __m256 clamped =
      _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(clamped, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), clamped);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r);
  p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
  // n is an integer in [-126, 127], so 2^n is a normal float built from its exponent bits.
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  result =
      _mm256_blendv_ps(result, inf8(), _mm256_cmp_ps(x, _mm256_set1_ps(88.72284f), _CMP_GT_OQ));
  return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ), result);
}

// The 8 lanes of v widened to double and added into (lo, hi).
inline void add_widened(__m256 v, __m256d* lo, __m256d* hi) {
  *lo = _mm256_add_pd(*lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
  *hi = _mm256_add_pd(*hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

inline double hsum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

void rmsnorm_avx2(float* out, const float* x, const float* weight, int64_t n, float eps) {
  // Sum of squares in double, like the scalar version (squares of floats are exact in double).
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  __m256d acc2 = _mm256_setzero_pd(), acc3 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
    const __m256d b = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
    const __m256d c = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8));
    const __m256d d = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12));
    acc0 = _mm256_fmadd_pd(a, a, acc0);
    acc1 = _mm256_fmadd_pd(b, b, acc1);
    acc2 = _mm256_fmadd_pd(c, c, acc2);
    acc3 = _mm256_fmadd_pd(d, d, acc3);
  }
  for (; i < n; i += 8) {
    const __m256 v =
        n - i >= 8 ? _mm256_loadu_ps(x + i) : _mm256_maskload_ps(x + i, tail_mask(n - i));
    const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    acc0 = _mm256_fmadd_pd(a, a, acc0);
    acc1 = _mm256_fmadd_pd(b, b, acc1);
  }
  const double sum_sq = hsum(_mm256_add_pd(_mm256_add_pd(acc0, acc1), _mm256_add_pd(acc2, acc3)));
  const double mean = n > 0 ? sum_sq / static_cast<double>(n) : 0.0;
  const __m128d root = _mm_sqrt_sd(_mm_setzero_pd(), _mm_set_sd(mean + eps));
  const __m256 scale = _mm256_set1_ps(static_cast<float>(1.0 / _mm_cvtsd_f64(root)));
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), scale);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(v, _mm256_loadu_ps(weight + i)));
  }
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    const __m256 v = _mm256_mul_ps(_mm256_maskload_ps(x + i, m), scale);
    _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(v, _mm256_maskload_ps(weight + i, m)));
  }
}

// x[i..i+count) for count < 8, the other lanes -inf.
inline __m256 load_tail_or_minus_inf(const float* x, int64_t count) {
  const __m256i m = tail_mask(count);
  return _mm256_blendv_ps(minus_inf8(), _mm256_maskload_ps(x, m), _mm256_castsi256_ps(m));
}

void softmax_avx2(float* x, int64_t n) {
  if (n <= 0) return;
  // Running maxima as in the scalar version: a NaN input is skipped unless x[0]
  // is one (then every lane stays NaN), so the result does not depend on the
  // order of the reduction.
  __m256 max0 = _mm256_set1_ps(x[0]), max1 = max0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    max0 = _mm256_max_ps(_mm256_loadu_ps(x + i), max0);
    max1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), max1);
  }
  for (; i < n; i += 8) {
    const __m256 v = n - i >= 8 ? _mm256_loadu_ps(x + i) : load_tail_or_minus_inf(x + i, n - i);
    max0 = _mm256_max_ps(v, max0);
  }
  const float max_value = hmax(_mm256_max_ps(max0, max1));
  if (max_value == -__builtin_inff()) {
    // Everything masked: spread evenly rather than produce NaN.
    const __m256 uniform = _mm256_set1_ps(1.0f / static_cast<float>(n));
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, uniform);
    if (i < n) _mm256_maskstore_ps(x + i, tail_mask(n - i), uniform);
    return;
  }
  // exp(x - max) in place, summed in double (-inf lanes of the tail add 0).
  // Widening every vector costs more than the exp, so four vectors are first
  // added in float: values in [0, 1], so each block sum is within 2^-23 of
  // exact, whatever n (ops_test.cc bounds the difference to the scalar version).
  const __m256 vmax = _mm256_set1_ps(max_value);
  __m256d sum0 = _mm256_setzero_pd(), sum1 = _mm256_setzero_pd();
  for (i = 0; i + 32 <= n; i += 32) {
    const __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
    const __m256 e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vmax));
    const __m256 e2 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 16), vmax));
    const __m256 e3 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 24), vmax));
    _mm256_storeu_ps(x + i, e0);
    _mm256_storeu_ps(x + i + 8, e1);
    _mm256_storeu_ps(x + i + 16, e2);
    _mm256_storeu_ps(x + i + 24, e3);
    add_widened(_mm256_add_ps(_mm256_add_ps(e0, e1), _mm256_add_ps(e2, e3)), &sum0, &sum1);
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
    _mm256_storeu_ps(x + i, e);
    add_widened(e, &sum0, &sum1);
  }
  if (i < n) {
    const __m256 e = exp8(_mm256_sub_ps(load_tail_or_minus_inf(x + i, n - i), vmax));
    _mm256_maskstore_ps(x + i, tail_mask(n - i), e);
    add_widened(e, &sum0, &sum1);
  }
  const double sum = hsum(_mm256_add_pd(sum0, sum1));
  const __m256 inv = _mm256_set1_ps(static_cast<float>(1.0 / sum));
  for (i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(x + i, m, _mm256_mul_ps(_mm256_maskload_ps(x + i, m), inv));
  }
}

// silu(g) * up = g / (1 + exp(-g)) * up: g -> -inf gives -0 (exp overflows to
// +inf), g -> +inf gives g * up.
inline __m256 silu_mul8(__m256 g, __m256 up) {
  const __m256 minus_g = _mm256_xor_ps(g, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN)));
  const __m256 denom = _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(minus_g));
  return _mm256_mul_ps(_mm256_div_ps(g, denom), up);
}

void silu_mul_avx2(float* out, const float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, silu_mul8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  }
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(out + i, m,
                        silu_mul8(_mm256_maskload_ps(gate + i, m), _mm256_maskload_ps(up + i, m)));
  }
}

// Four ymm loads per 128 bytes into four accumulators (one prefetch per line).
uint64_t read_sum_avx2(const uint64_t* words, int64_t count, int64_t prefetch_bytes) {
  const auto* bytes = reinterpret_cast<const char*>(words);
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                    _mm256_setzero_si256()};
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    if (prefetch_bytes > 0) {
      _mm_prefetch(bytes + i * 8 + prefetch_bytes, _MM_HINT_T0);
      _mm_prefetch(bytes + i * 8 + 64 + prefetch_bytes, _MM_HINT_T0);
    }
    for (int k = 0; k < 4; ++k) {
      acc[k] = _mm256_add_epi64(
          acc[k], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + i + 4 * k)));
    }
  }
  const __m256i sum4 =
      _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]), _mm256_add_epi64(acc[2], acc[3]));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum4);
  uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < count; ++i) sum += words[i];
  return sum;
}

// As argmax_avx512: the largest value (MAXPS skips NaNs as the second
// operand), then where it first occurs.
int64_t argmax_avx2(const float* x, int64_t n) {
  if (n <= 0) return 0;
  __m256 max0 = minus_inf8(), max1 = max0, max2 = max0, max3 = max0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    max0 = _mm256_max_ps(_mm256_loadu_ps(x + i), max0);
    max1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), max1);
    max2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), max2);
    max3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), max3);
  }
  for (; i < n; i += 8) {
    const __m256 v = n - i >= 8 ? _mm256_loadu_ps(x + i) : load_tail_or_minus_inf(x + i, n - i);
    max0 = _mm256_max_ps(v, max0);
  }
  const float largest = hmax(_mm256_max_ps(_mm256_max_ps(max0, max1), _mm256_max_ps(max2, max3)));
  const __m256 best = _mm256_set1_ps(largest);
  for (i = 0; i + 8 <= n; i += 8) {
    const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), best, _CMP_EQ_OQ));
    if (hit != 0) return i + __builtin_ctz(static_cast<unsigned>(hit));
  }
  for (; i < n; ++i) {
    if (x[i] == largest) return i;
  }
  return 0;  // every value NaN
}

}  // namespace

void register_ops_avx2(IsaKernels* table) {
  table->argmax = argmax_avx2;
  table->rmsnorm = rmsnorm_avx2;
  table->softmax = softmax_avx2;
  table->silu_mul = silu_mul_avx2;
  table->read_sum = read_sum_avx2;
}

}  // namespace edgelm::kernels_internal
