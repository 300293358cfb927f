// AVX-512 (F/BW/VL) activation quantization: the AVX2 algorithms of
// quantize_acts_avx2.cc on 16-lane vectors, same bytes as the scalar reference
// in matmul_quant.cc for every input (quantize_acts_test.cc).
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

// GCC 12 reports its own AVX-512 intrinsics (_mm512_undefined_*) as uninitialized.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace edgelm::kernels_internal {
namespace {

// roundf(v) for |v| < 2^31 as trunc(v + copysign(0.5 - 2^-25, v)): see
// quantize_acts_avx2.cc.
constexpr float kBelowHalf = 0.49999997f;

// One Q8_0 quant vector: v = x * id, NaN and |v| >= 1e9 give 0, round half away.
inline __m512i round_q8_0(__m512 x, __m512 id) {
  const __m512i sign_mask = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  const __m512 v = _mm512_mul_ps(x, id);
  const __m512i v_bits = _mm512_castps_si512(v);
  const __mmask16 in_range =
      _mm512_cmp_ps_mask(_mm512_castsi512_ps(_mm512_andnot_si512(sign_mask, v_bits)),
                         _mm512_set1_ps(1e9f), _CMP_LT_OQ);
  const __m512i kept = _mm512_maskz_mov_epi32(in_range, v_bits);
  const __m512i half = _mm512_or_si512(_mm512_and_si512(kept, sign_mask),
                                       _mm512_castps_si512(_mm512_set1_ps(kBelowHalf)));
  return _mm512_cvttps_epi32(_mm512_add_ps(_mm512_castsi512_ps(kept), _mm512_castsi512_ps(half)));
}

inline int hsum_256(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1))));
}

// Blocks [b_begin, b_end), one at a time.
void quantize_q8_0_blocks(const float* x, int64_t b_begin, int64_t b_end, int8_t* q, float* d,
                          float* dsum, int16_t* s32, int16_t* s16) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  for (int64_t b = b_begin; b < b_end; ++b) {
    const float* xb = x + b * kActsQ8_0Block;
    const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
    // |x| compared as integers: the order of the floats, NaNs above infinity.
    const __m512i m = _mm512_max_epi32(_mm512_and_si512(_mm512_castps_si512(x0), abs_mask),
                                       _mm512_and_si512(_mm512_castps_si512(x1), abs_mask));
    const __m256i m8 = _mm256_max_epi32(_mm512_castsi512_si256(m), _mm512_extracti64x4_epi64(m, 1));
    __m128i m4 = _mm_max_epi32(_mm256_castsi256_si128(m8), _mm256_extracti128_si256(m8, 1));
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
    const __m512 idv = _mm512_broadcastss_ps(id);
    const __m512i q0 = round_q8_0(x0, idv), q1 = round_q8_0(x1, idv);
    // |q| <= 127 here, so truncating to bytes keeps every value.
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * kActsQ8_0Block), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * kActsQ8_0Block + 16),
                     _mm512_cvtepi32_epi8(q1));
    const int lo =
        hsum_256(_mm256_add_epi32(_mm512_castsi512_si256(q0), _mm512_extracti64x4_epi64(q0, 1)));
    const int hi =
        hsum_256(_mm256_add_epi32(_mm512_castsi512_si256(q1), _mm512_extracti64x4_epi64(q1, 1)));
    d[b] = d_rounded;
    s16[2 * b] = static_cast<int16_t>(lo);
    s16[2 * b + 1] = static_cast<int16_t>(hi);
    s32[b] = static_cast<int16_t>(lo + hi);
    dsum[b] = d_rounded * static_cast<float>(lo + hi);
  }
}

// Sixteen vectors of 16 int32 to one vector of their 16 reductions by `op`
// (add, max), in order: lane i reduces g[i]'s lanes.
template <typename Op>
inline __m512i reduce_16(const __m512i* g, Op op) {
  __m512i pairs[8];  // per 128-bit lane: partial results of g[2k] and g[2k + 1]
  for (int k = 0; k < 8; ++k) {
    pairs[k] = op(_mm512_unpacklo_epi32(g[2 * k], g[2 * k + 1]),
                  _mm512_unpackhi_epi32(g[2 * k], g[2 * k + 1]));
  }
  __m512i quads[4];  // per 128-bit lane: partial results of g[4k .. 4k + 3]
  for (int k = 0; k < 4; ++k) {
    quads[k] = op(_mm512_unpacklo_epi64(pairs[2 * k], pairs[2 * k + 1]),
                  _mm512_unpackhi_epi64(pairs[2 * k], pairs[2 * k + 1]));
  }
  __m512i halves[2];  // lanes: [quads[2k] lanes 0+1, 2+3, quads[2k+1] lanes 0+1, 2+3]
  for (int k = 0; k < 2; ++k) {
    halves[k] = op(_mm512_shuffle_i32x4(quads[2 * k], quads[2 * k + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                   _mm512_shuffle_i32x4(quads[2 * k], quads[2 * k + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  return op(_mm512_shuffle_i32x4(halves[0], halves[1], _MM_SHUFFLE(2, 0, 2, 0)),
            _mm512_shuffle_i32x4(halves[0], halves[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

inline __m512i sums_of_16(const __m512i* g) {
  return reduce_16(g, [](__m512i a, __m512i b) { return _mm512_add_epi32(a, b); });
}

inline __m512i maxima_of_16(const __m512i* g) {
  return reduce_16(g, [](__m512i a, __m512i b) { return _mm512_max_epi32(a, b); });
}

// Eight blocks at once: the same operations as quantize_q8_0_blocks, but the
// maxima, scales and sums of the eight are reduced and computed in vectors
// (transposed reductions, one division for all), which took most of the time
// of a block done alone.
void quantize_q8_0_avx512(const float* x, int64_t cols, int8_t* q, float* d, float* dsum,
                          int16_t* s32, int16_t* s16) {
  constexpr int kGroup = 8;
  const int64_t blocks = cols / kActsQ8_0Block;
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  int64_t b0 = 0;
  for (; b0 + kGroup <= blocks; b0 += kGroup) {
    const float* xg = x + b0 * kActsQ8_0Block;
    __m512i m[2 * kGroup];  // block j's |x| maxima per lane, twice (lanes j and 8 + j below)
    for (int j = 0; j < kGroup; ++j) {
      const __m512i a0 = _mm512_and_si512(_mm512_loadu_si512(xg + 32 * j), abs_mask);
      const __m512i a1 = _mm512_and_si512(_mm512_loadu_si512(xg + 32 * j + 16), abs_mask);
      m[j] = m[kGroup + j] = _mm512_max_epi32(a0, a1);
    }
    const __m512i maxima = maxima_of_16(m);  // lane j (and 8 + j): block j's |x| max
    if (_mm512_cmpgt_epu32_mask(maxima, _mm512_set1_epi32(0x7f800000)) != 0) {
      // A NaN: the reference's running maximum depends on where it is.
      quantize_q8_0_blocks(x, b0, b0 + kGroup, q, d, dsum, s32, s16);
      continue;
    }
    const __m512 db = _mm512_div_ps(_mm512_castsi512_ps(maxima), _mm512_set1_ps(127.0f));
    const __m512 id = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(db, _mm512_setzero_ps(), _CMP_NEQ_UQ),
                                          _mm512_set1_ps(1.0f), db);
    const __m512 d_rounded =
        _mm512_cvtph_ps(_mm512_cvtps_ph(db, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m512i quants[2 * kGroup];  // block j's two halves at 2j, 2j + 1
    for (int j = 0; j < kGroup; ++j) {
      const __m512 idv = _mm512_permutexvar_ps(_mm512_set1_epi32(j), id);
      quants[2 * j] = round_q8_0(_mm512_loadu_ps(xg + 32 * j), idv);
      quants[2 * j + 1] = round_q8_0(_mm512_loadu_ps(xg + 32 * j + 16), idv);
      int8_t* qb = q + (b0 + j) * kActsQ8_0Block;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qb), _mm512_cvtepi32_epi8(quants[2 * j]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qb + 16),
                       _mm512_cvtepi32_epi8(quants[2 * j + 1]));
    }
    // Lanes 2j, 2j + 1: block j's sums per 16 (s16's layout); then per block.
    const __m512i sums = sums_of_16(quants);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(s16 + 2 * b0), _mm512_cvtepi32_epi16(sums));
    const __m256i per_block =
        _mm512_cvtepi64_epi32(_mm512_add_epi32(sums, _mm512_srli_epi64(sums, 32)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(s32 + b0), _mm256_cvtepi32_epi16(per_block));
    const __m256 d8 = _mm512_castps512_ps256(d_rounded);
    _mm256_storeu_ps(d + b0, d8);
    _mm256_storeu_ps(dsum + b0, _mm256_mul_ps(d8, _mm256_cvtepi32_ps(per_block)));
  }
  quantize_q8_0_blocks(x, b0, blocks, q, d, dsum, s32, s16);
}

inline float hmax(__m512 v) {
  const __m256 m8 = _mm256_max_ps(_mm512_castps512_ps256(v),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

inline float hmin(__m512 v) {
  const __m256 m8 = _mm256_min_ps(_mm512_castps512_ps256(v),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)));
}

void quantize_q8_K_avx512(const float* x, int64_t cols, int8_t* q, float* d, float* dsum,
                          int16_t* s32, int16_t* s16) {
  for (int64_t b = 0; b < cols / kActsQ8_KBlock; ++b) {
    const float* xb = x + b * kActsQ8_KBlock;
    int8_t* qb = q + b * kActsQ8_KBlock;
    // Largest and smallest value with NaNs skipped, as the reference's strict
    // comparison does: max_ps(x, acc) returns acc when x is NaN. Starting at
    // 0 matches the reference's start (an all-zero or all-NaN block).
    __m512 hi0 = _mm512_setzero_ps(), hi1 = hi0, lo0 = hi0, lo1 = hi0;
    for (int j = 0; j < kActsQ8_KBlock; j += 32) {
      const __m512 v0 = _mm512_loadu_ps(xb + j), v1 = _mm512_loadu_ps(xb + j + 16);
      hi0 = _mm512_max_ps(v0, hi0);
      lo0 = _mm512_min_ps(v0, lo0);
      hi1 = _mm512_max_ps(v1, hi1);
      lo1 = _mm512_min_ps(v1, lo1);
    }
    const float largest = hmax(_mm512_max_ps(hi0, hi1));
    const float smallest = hmin(_mm512_min_ps(lo0, lo1));
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
    const __m512 scale = _mm512_set1_ps(iscale);
    const __m512 magic = _mm512_set1_ps(12582912.f);
    const __m512i mantissa = _mm512_set1_epi32(0x007fffff);
    const __m512i offset = _mm512_set1_epi32(0x00400000);
    const __m512i q_max = _mm512_set1_epi32(127);
    __m512i groups[16];  // one vector per 16 values
    for (int g = 0; g < 16; ++g) {
      // v = iscale * x, then round half to even in the mantissa of v + 1.5 * 2^23.
      const __m512 v = _mm512_mul_ps(scale, _mm512_loadu_ps(xb + 16 * g));
      const __m512i bits = _mm512_castps_si512(_mm512_add_ps(v, magic));
      const __m512i rounded =
          _mm512_min_epi32(_mm512_sub_epi32(_mm512_and_si512(bits, mantissa), offset), q_max);
      // The reference stores (int8_t) of it: the low byte, sign-extended for the sums.
      groups[g] = _mm512_srai_epi32(_mm512_slli_epi32(rounded, 24), 24);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qb + 16 * g), _mm512_cvtepi32_epi8(groups[g]));
    }
    const __m512i sums = sums_of_16(groups);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(s16 + b * 16), _mm512_cvtepi32_epi16(sums));
    // Sums per 32: add each odd lane to the even one below it, keep the even lanes.
    const __m256i pairs =
        _mm512_cvtepi64_epi32(_mm512_add_epi32(sums, _mm512_srli_epi64(sums, 32)));
    const float db = 1 / iscale;
    d[b] = db;
    _mm256_storeu_ps(dsum + b * 8, _mm256_mul_ps(_mm256_set1_ps(db), _mm256_cvtepi32_ps(pairs)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(s32 + b * 8), _mm256_cvtepi32_epi16(pairs));
  }
}

}  // namespace

void register_quantize_acts_avx512(IsaKernels* table) {
  table->quantize_q8_0 = quantize_q8_0_avx512;
  table->quantize_q8_K = quantize_q8_K_avx512;
}

}  // namespace edgelm::kernels_internal

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
