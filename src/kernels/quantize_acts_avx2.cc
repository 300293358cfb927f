// AVX2 activation quantization for the integer kernels: ggml's Q8_0 and Q8_K
// of matmul_quant.cc's scalar quantize_acts_q8_0 / quantize_acts_q8_K, giving
// the same bytes for every input (quantize_acts_test.cc).
//
// Rounding twice (a product, then a sum) is part of the reference, so FP
// contraction into FMA is off for this file. See matmul_internal.h for why it
// uses only intrinsics and file-local code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/matmul_internal.h"
#include "kernels/quantize_acts_simd.h"

namespace edgelm::kernels_internal {
namespace {

// roundf(v) for |v| < 2^31 as trunc(v + copysign(0.5 - 2^-25, v)): the largest
// float below one half never carries a fraction under .5 to the next integer,
// and .5 itself rounds up (away from zero) in the addition.
constexpr float kBelowHalf = 0.49999997f;

// One Q8_0 quant vector: v = x * id, NaN and |v| >= 1e9 give 0, round half away.
inline __m256i round_q8_0(__m256 x, __m256 id) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 v = _mm256_mul_ps(x, id);
  const __m256 in_range =
      _mm256_cmp_ps(_mm256_andnot_ps(sign_mask, v), _mm256_set1_ps(1e9f), _CMP_LT_OQ);
  const __m256 kept = _mm256_and_ps(v, in_range);
  const __m256 half = _mm256_or_ps(_mm256_and_ps(kept, sign_mask), _mm256_set1_ps(kBelowHalf));
  return _mm256_cvttps_epi32(_mm256_add_ps(kept, half));
}

// 32 int32 values in [-128, 127] (4 vectors) to 32 bytes in order.
inline __m256i pack_32(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
  return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Blocks [b_begin, b_end), one at a time.
void quantize_q8_0_blocks(const float* x, int64_t b_begin, int64_t b_end, int8_t* q, float* d,
                          float* dsum, int16_t* s32, int16_t* s16) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  for (int64_t b = b_begin; b < b_end; ++b) {
    const float* xb = x + b * kActsQ8_0Block;
    const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
    const __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
    // |x| compared as integers: the order of the floats, NaNs above infinity.
    const __m256i m =
        _mm256_max_epi32(_mm256_max_epi32(_mm256_and_si256(_mm256_castps_si256(x0), abs_mask),
                                          _mm256_and_si256(_mm256_castps_si256(x1), abs_mask)),
                         _mm256_max_epi32(_mm256_and_si256(_mm256_castps_si256(x2), abs_mask),
                                          _mm256_and_si256(_mm256_castps_si256(x3), abs_mask)));
    __m128i m4 = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    m4 = _mm_max_epi32(m4, _mm_shuffle_epi32(m4, _MM_SHUFFLE(1, 0, 3, 2)));
    m4 = _mm_max_epi32(m4, _mm_shuffle_epi32(m4, _MM_SHUFFLE(2, 3, 0, 1)));
    if (static_cast<uint32_t>(_mm_cvtsi128_si32(m4)) > 0x7f800000u) {
      // A NaN: the reference's running maximum depends on where it is.
      quantize_block_q8_0_exact(xb, q + b * kActsQ8_0Block, d + b, dsum + b, s32 + b, s16 + 2 * b);
      continue;
    }
    const __m128 db = _mm_div_ps(_mm_castsi128_ps(m4), _mm_set1_ps(127.0f));
    const __m128 id =
        _mm_and_ps(_mm_div_ps(_mm_set1_ps(1.0f), db), _mm_cmpneq_ps(db, _mm_setzero_ps()));
    const float d_rounded =
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph(db, _MM_FROUND_TO_NEAREST_INT)));
    const __m256 idv = _mm256_broadcastss_ps(id);
    const __m256i q0 = round_q8_0(x0, idv), q1 = round_q8_0(x1, idv);
    const __m256i q2 = round_q8_0(x2, idv), q3 = round_q8_0(x3, idv);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kActsQ8_0Block),
                        pack_32(q0, q1, q2, q3));
    // Sums of the two halves: [lo, hi] in lanes 0 and 1.
    const __m256i h = _mm256_hadd_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3));
    __m128i h4 = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    h4 = _mm_hadd_epi32(h4, h4);
    const int lo = _mm_cvtsi128_si32(h4), hi = _mm_extract_epi32(h4, 1);
    d[b] = d_rounded;
    s16[2 * b] = static_cast<int16_t>(lo);
    s16[2 * b + 1] = static_cast<int16_t>(hi);
    s32[b] = static_cast<int16_t>(lo + hi);
    dsum[b] = d_rounded * static_cast<float>(lo + hi);
  }
}

// Eight vectors of 8 int32 to one vector of their 8 reductions by `op` (add,
// max), in order: lane i reduces g[i]'s lanes.
template <typename Op>
inline __m256i reduce_8(const __m256i* g, Op op) {
  __m256i pairs[4];  // per 128-bit lane: partial results of g[2k] and g[2k + 1]
  for (int k = 0; k < 4; ++k) {
    pairs[k] = op(_mm256_unpacklo_epi32(g[2 * k], g[2 * k + 1]),
                  _mm256_unpackhi_epi32(g[2 * k], g[2 * k + 1]));
  }
  __m256i quads[2];  // per 128-bit lane: partial results of g[4k .. 4k + 3]
  for (int k = 0; k < 2; ++k) {
    quads[k] = op(_mm256_unpacklo_epi64(pairs[2 * k], pairs[2 * k + 1]),
                  _mm256_unpackhi_epi64(pairs[2 * k], pairs[2 * k + 1]));
  }
  return op(_mm256_permute2x128_si256(quads[0], quads[1], 0x20),
            _mm256_permute2x128_si256(quads[0], quads[1], 0x31));
}

inline __m256i sums_of_8(const __m256i* g) {
  return reduce_8(g, [](__m256i a, __m256i b) { return _mm256_add_epi32(a, b); });
}

inline __m256i maxima_of_8(const __m256i* g) {
  return reduce_8(g, [](__m256i a, __m256i b) { return _mm256_max_epi32(a, b); });
}

// Eight blocks at once: the same operations as quantize_q8_0_blocks, with the
// maxima, scales and sums of the eight reduced and computed in vectors
// (transposed reductions, one division), as in quantize_acts_avx512.cc.
void quantize_q8_0_avx2(const float* x, int64_t cols, int8_t* q, float* d, float* dsum,
                        int16_t* s32, int16_t* s16) {
  constexpr int kGroup = 8;
  const int64_t blocks = cols / kActsQ8_0Block;
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  const __m256i in_order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);  // 64-bit pairs 0, 2, 1, 3
  int64_t b0 = 0;
  for (; b0 + kGroup <= blocks; b0 += kGroup) {
    const float* xg = x + b0 * kActsQ8_0Block;
    __m256i m[kGroup];  // block j's |x| maxima per lane
    for (int j = 0; j < kGroup; ++j) {
      __m256i a[4];
      for (int v = 0; v < 4; ++v) {
        a[v] = _mm256_and_si256(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg + 32 * j + 8 * v)), abs_mask);
      }
      m[j] = _mm256_max_epi32(_mm256_max_epi32(a[0], a[1]), _mm256_max_epi32(a[2], a[3]));
    }
    const __m256i maxima = maxima_of_8(m);  // lane j: block j's |x| max
    // Unsigned compare: any lane above +inf's bits is a NaN.
    const __m256i above =
        _mm256_cmpgt_epi32(_mm256_xor_si256(maxima, _mm256_set1_epi32(INT32_MIN)),
                           _mm256_set1_epi32(static_cast<int>(0x7f800000u ^ 0x80000000u)));
    if (!_mm256_testz_si256(above, above)) {
      // A NaN: the reference's running maximum depends on where it is.
      quantize_q8_0_blocks(x, b0, b0 + kGroup, q, d, dsum, s32, s16);
      continue;
    }
    const __m256 db = _mm256_div_ps(_mm256_castsi256_ps(maxima), _mm256_set1_ps(127.0f));
    const __m256 id = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), db),
                                    _mm256_cmp_ps(db, _mm256_setzero_ps(), _CMP_NEQ_UQ));
    const __m256 d_rounded = _mm256_cvtph_ps(_mm256_cvtps_ph(db, _MM_FROUND_TO_NEAREST_INT));
    __m256i halves[2 * kGroup];  // block j's two halves' quants, summed per lane, at 2j, 2j + 1
    for (int j = 0; j < kGroup; ++j) {
      const __m256 idv = _mm256_permutevar8x32_ps(id, _mm256_set1_epi32(j));
      __m256i r[4];
      for (int v = 0; v < 4; ++v) r[v] = round_q8_0(_mm256_loadu_ps(xg + 32 * j + 8 * v), idv);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + (b0 + j) * kActsQ8_0Block),
                          pack_32(r[0], r[1], r[2], r[3]));
      halves[2 * j] = _mm256_add_epi32(r[0], r[1]);
      halves[2 * j + 1] = _mm256_add_epi32(r[2], r[3]);
    }
    // Lanes 2j, 2j + 1: block j's sums per 16 (s16's layout), blocks 0-3 then 4-7.
    const __m256i sums_a = sums_of_8(halves), sums_b = sums_of_8(halves + kGroup);
    // |sums| <= 16 * 127: packing to int16 keeps them.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(s16 + 2 * b0),
                        _mm256_permute4x64_epi64(_mm256_packs_epi32(sums_a, sums_b), 0xD8));
    const __m256i per_block =
        _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(sums_a, sums_b), in_order);
    const __m256i per_block16 =
        _mm256_permute4x64_epi64(_mm256_packs_epi32(per_block, per_block), 0xD8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(s32 + b0), _mm256_castsi256_si128(per_block16));
    _mm256_storeu_ps(d + b0, d_rounded);
    _mm256_storeu_ps(dsum + b0, _mm256_mul_ps(d_rounded, _mm256_cvtepi32_ps(per_block)));
  }
  quantize_q8_0_blocks(x, b0, blocks, q, d, dsum, s32, s16);
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

inline float hmin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)));
}

void quantize_q8_K_avx2(const float* x, int64_t cols, int8_t* q, float* d, float* dsum,
                        int16_t* s32, int16_t* s16) {
  for (int64_t b = 0; b < cols / kActsQ8_KBlock; ++b) {
    const float* xb = x + b * kActsQ8_KBlock;
    int8_t* qb = q + b * kActsQ8_KBlock;
    // Largest and smallest value with NaNs skipped, as the reference's strict
    // comparison does: max_ps(x, acc) returns acc when x is NaN. Starting at
    // 0 matches the reference's start (an all-zero or all-NaN block).
    __m256 hi0 = _mm256_setzero_ps(), hi1 = hi0, lo0 = hi0, lo1 = hi0;
    for (int j = 0; j < kActsQ8_KBlock; j += 16) {
      const __m256 v0 = _mm256_loadu_ps(xb + j), v1 = _mm256_loadu_ps(xb + j + 8);
      hi0 = _mm256_max_ps(v0, hi0);
      lo0 = _mm256_min_ps(v0, lo0);
      hi1 = _mm256_max_ps(v1, hi1);
      lo1 = _mm256_min_ps(v1, lo1);
    }
    const float largest = hmax(_mm256_max_ps(hi0, hi1));
    const float smallest = hmin(_mm256_min_ps(lo0, lo1));
    const float amax = largest > -smallest ? largest : -smallest;
    if (amax == 0) {
      std::memset(qb, 0, kActsQ8_KBlock);
      std::memset(s16 + b * 16, 0, 16 * sizeof(int16_t));
      std::memset(s32 + b * 8, 0, 8 * sizeof(int16_t));
      d[b] = 0;
      for (int g = 0; g < 8; ++g) dsum[b * 8 + g] = 0;
      continue;
    }
    // The signed value of largest magnitude; its first occurrence when both signs occur.
    const float max = largest != amax     ? smallest
                      : -smallest != amax ? largest
                                          : first_value_of_magnitude(xb, amax);
    const float iscale = -127.f / max;
    const __m256 scale = _mm256_set1_ps(iscale);
    const __m256 magic = _mm256_set1_ps(12582912.f);
    const __m256i mantissa = _mm256_set1_epi32(0x007fffff);
    const __m256i offset = _mm256_set1_epi32(0x00400000);
    const __m256i q_max = _mm256_set1_epi32(127);
    __m256i groups[16];  // int32 sums per lane of each 16 values
    for (int j = 0; j < kActsQ8_KBlock; j += 32) {
      __m256i r[4];
      for (int k = 0; k < 4; ++k) {
        // v = iscale * x, then round half to even in the mantissa of v + 1.5 * 2^23.
        const __m256 v = _mm256_mul_ps(scale, _mm256_loadu_ps(xb + j + 8 * k));
        const __m256i bits = _mm256_castps_si256(_mm256_add_ps(v, magic));
        const __m256i rounded =
            _mm256_min_epi32(_mm256_sub_epi32(_mm256_and_si256(bits, mantissa), offset), q_max);
        // The reference stores (int8_t) of it: keep the low byte, sign-extended.
        r[k] = _mm256_srai_epi32(_mm256_slli_epi32(rounded, 24), 24);
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb + j), pack_32(r[0], r[1], r[2], r[3]));
      groups[j / 16] = _mm256_add_epi32(r[0], r[1]);
      groups[j / 16 + 1] = _mm256_add_epi32(r[2], r[3]);
    }
    const __m256i sums_lo = sums_of_8(groups), sums_hi = sums_of_8(groups + 8);
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(s16 + b * 16),
        _mm256_permute4x64_epi64(_mm256_packs_epi32(sums_lo, sums_hi), _MM_SHUFFLE(3, 1, 2, 0)));
    const __m256i pairs =
        _mm256_permute4x64_epi64(_mm256_hadd_epi32(sums_lo, sums_hi), _MM_SHUFFLE(3, 1, 2, 0));
    const float db = 1 / iscale;
    d[b] = db;
    _mm256_storeu_ps(dsum + b * 8, _mm256_mul_ps(_mm256_set1_ps(db), _mm256_cvtepi32_ps(pairs)));
    const __m256i pairs16 =
        _mm256_permute4x64_epi64(_mm256_packs_epi32(pairs, pairs), _MM_SHUFFLE(3, 1, 2, 0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(s32 + b * 8), _mm256_castsi256_si128(pairs16));
  }
}

}  // namespace

void register_quantize_acts_avx2(IsaKernels* table) {
  table->quantize_q8_0 = quantize_q8_0_avx2;
  table->quantize_q8_K = quantize_q8_K_avx2;
}

}  // namespace edgelm::kernels_internal
