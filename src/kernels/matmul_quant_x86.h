// Integer kernels for quantized weights on x86-64 with 256-bit vectors,
// included by matmul_quant_avx2.cc (EDGELM_QUANT_VNNI 0: maddubs + madd) and
// matmul_quant_avx512.cc (EDGELM_QUANT_VNNI 1: vpdpbusd / vpdpwssd on ymm).
// Everything here is in an anonymous namespace, so each ISA file gets its own
// copy compiled with its own flags (see matmul_internal.h). The block structs
// of quant_formats.h are used for their layout only; its inline functions
// must not be called from here.
//
// The integer dot product of each (sub-)block is exact, so results differ from
// the scalar reference only by the order of the float operations combining
// blocks (exactly equal when every scale is a power of two).
//
// A tile is R weight rows x T tokens: each weight block is unpacked once and
// used for T tokens (prefill); decode uses R = 4, T = 1 so that four row
// streams are in flight and each activation vector is loaded once per 4 rows.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/matmul_internal.h"
#include "kernels/quant_formats.h"

#ifndef EDGELM_QUANT_VNNI
#error "define EDGELM_QUANT_VNNI before including matmul_quant_x86.h"
#endif

// GCC 12 reports its own AVX-512 intrinsics (_mm512_undefined_*) as uninitialized.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace edgelm::kernels_internal {
namespace {

// acc + per int32 lane sum of four u8 * s8 products (no int16 saturation for
// the ranges used here: |u| <= 128, |s| <= 127, and pairs stay below 2^15).
inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
#if EDGELM_QUANT_VNNI
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

// acc + per int32 lane sum of two int16 products.
inline __m256i madd_i16(__m256i acc, __m256i a, __m256i b) {
#if EDGELM_QUANT_VNNI
  return _mm256_dpwssd_epi32(acc, a, b);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float f16(uint16_t h) {
  return _cvtsh_ss(h);
}

inline __m256i load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// 32 values from 16 bytes: low nibbles then high nibbles (ggml's Q4 order).
inline __m256i nibbles_32(const uint8_t* qs) {
  // One broadcast load, then the high half shifted by 4 (per-lane shift counts).
  const __m256i both =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  const __m256i shifted = _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
  return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
}

// 0x10 in byte j where bit j of the little-endian 32-bit qh is set.
inline __m256i high_bits_32(const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
  const __m256i others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);  // all bits but bit j % 8
  const __m256i set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1));
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

// The prefill GEMMs bring in the next row group's weights a little per token
// tile: the rows [r0 + kGemmRows, r0 + 2 kGemmRows) of those up to row_end.
struct NextRows {
  const uint8_t* p;
  size_t bytes;
};
inline NextRows next_row_group(const WeightMatrix& w, int64_t r0, int64_t row_end) {
  const int64_t next = r0 + kGemmRows;
  const size_t rows = next < row_end ? static_cast<size_t>(std::min(kGemmRows, row_end - next)) : 0;
  return {static_cast<const uint8_t*>(w.data) + next * w.row_bytes, rows * w.row_bytes};
}
// Part `part` of `parts` of the prefetches (into L2) of those rows.
inline void prefetch_part(const NextRows& rows, int64_t part, int64_t parts) {
  const int64_t lines = static_cast<int64_t>((rows.bytes + 63) / 64);
  for (int64_t l = lines * part / parts; l < lines * (part + 1) / parts; ++l) {
    _mm_prefetch(reinterpret_cast<const char*>(rows.p + l * 64), _MM_HINT_T2);
  }
}

// Decode prefetches the same column of the row group EDGELM_QUANT_AHEAD bytes
// further on (whole groups): the hardware prefetcher alone keeps too few lines
// in flight for these short rows.
#ifndef EDGELM_QUANT_AHEAD
#define EDGELM_QUANT_AHEAD 8192
#endif
inline size_t prefetch_distance(size_t group_bytes, size_t target = EDGELM_QUANT_AHEAD) {
  if (group_bytes == 0) return 0;  // empty rows (cols == 0): nothing to prefetch
  const size_t groups = (target + group_bytes - 1) / group_bytes;
  return groups * group_bytes;
}

// ---- 32-value formats ----
// unpack(): the block's 32 quants as unsigned bytes (signed for Q8_0).
// kOffset: quants are stored + kOffset; kMin: value = d * q + m.

struct X86Q4_0 {
  using Block = BlockQ4_0;
  static constexpr int kOffset = 8;
  static constexpr bool kMin = false;
  static constexpr bool kSigned = false;
  static __m256i unpack(const Block* b) { return nibbles_32(b->qs); }
  static float min(const Block*) { return 0; }
};
struct X86Q4_1 {
  using Block = BlockQ4_1;
  static constexpr int kOffset = 0;
  static constexpr bool kMin = true;
  static constexpr bool kSigned = false;
  static __m256i unpack(const Block* b) { return nibbles_32(b->qs); }
  static float min(const Block* b) { return f16(b->m); }
};
struct X86Q5_0 {
  using Block = BlockQ5_0;
  static constexpr int kOffset = 16;
  static constexpr bool kMin = false;
  static constexpr bool kSigned = false;
  static __m256i unpack(const Block* b) {
    return _mm256_or_si256(nibbles_32(b->qs), high_bits_32(b->qh));
  }
  static float min(const Block*) { return 0; }
};
struct X86Q5_1 {
  using Block = BlockQ5_1;
  static constexpr int kOffset = 0;
  static constexpr bool kMin = true;
  static constexpr bool kSigned = false;
  static __m256i unpack(const Block* b) {
    return _mm256_or_si256(nibbles_32(b->qs), high_bits_32(b->qh));
  }
  static float min(const Block* b) { return f16(b->m); }
};
#if EDGELM_QUANT_VNNI
// vpdpbusd sums in 32 bits, so q + 128 (one xor) fits as the unsigned operand.
struct X86Q8_0 {
  using Block = BlockQ8_0;
  static constexpr int kOffset = 128;
  static constexpr bool kMin = false;
  static constexpr bool kSigned = false;
  static __m256i unpack(const Block* b) {
    return _mm256_xor_si256(load256(b->qs), _mm256_set1_epi8(static_cast<char>(0x80)));
  }
  static float min(const Block*) { return 0; }
};
#else
// maddubs would saturate on q + 128: move the sign onto x instead.
struct X86Q8_0 {
  using Block = BlockQ8_0;
  static constexpr int kOffset = 0;
  static constexpr bool kMin = false;
  static constexpr bool kSigned = true;
  static __m256i unpack(const Block* b) { return load256(b->qs); }
  static float min(const Block*) { return 0; }
};
#endif

template <typename F>
inline __m256i block_dot(__m256i w, __m256i abs_w, const int8_t* xq) {
  const __m256i x = load256(xq);
  if constexpr (F::kSigned) {
    // u8 x s8 only: move w's sign onto x.
    return dot_u8s8(_mm256_setzero_si256(), abs_w, _mm256_sign_epi8(x, w));
  } else {
    return dot_u8s8(_mm256_setzero_si256(), w, x);
  }
}

// R rows starting at `rows` x T tokens; y[t * y_stride + r].
template <typename F, int R, int T>
inline void tile_32(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a, float* y,
                    int64_t y_stride) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  constexpr bool kCorrect = F::kOffset != 0 || F::kMin;
  const size_t ahead = prefetch_distance(R * row_bytes);
  for (int64_t b0 = 0; b0 < nb; b0 += 8) {
    const int64_t b1 = b0 + 8 < nb ? b0 + 8 : nb;
    // Per row and block: -offset * d or m, times the activation block sums
    // (a.dsum = dx * sum q) eight blocks at a time below.
    alignas(32) float corr[R][8];
    if constexpr (kCorrect) {
      for (int r = 0; r < R; ++r) _mm256_store_ps(corr[r], _mm256_setzero_ps());
    }
    for (int64_t b = b0; b < b1; ++b) {
      for (int r = 0; r < R; ++r) {
        const auto* blk = reinterpret_cast<const typename F::Block*>(rows + r * row_bytes) + b;
        if constexpr (R > 1) {
          // Rows are short: fetch the next R rows' block while this one is summed.
          _mm_prefetch(reinterpret_cast<const char*>(blk) + ahead, _MM_HINT_T0);
        }
        const __m256i w = F::unpack(blk);
        __m256i abs_w = w;
        if constexpr (F::kSigned) abs_w = _mm256_sign_epi8(w, w);
        const float dw = f16(blk->d);
        if constexpr (F::kMin) corr[r][b - b0] = F::min(blk);
        if constexpr (F::kOffset != 0) corr[r][b - b0] = -static_cast<float>(F::kOffset) * dw;
        for (int t = 0; t < T; ++t) {
          const __m256i s = block_dot<F>(w, abs_w, a.q + t * a.q_stride + b * kQK);
          const __m256 scale = _mm256_set1_ps(dw * a.d[t * a.d_stride + b]);
          acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[r][t]);
        }
      }
    }
    if constexpr (kCorrect) {
      for (int r = 0; r < R; ++r) {
        const __m256 c = _mm256_load_ps(corr[r]);
        for (int t = 0; t < T; ++t) {
          acc[r][t] =
              _mm256_fmadd_ps(c, _mm256_loadu_ps(a.dsum + t * a.d32_stride + b0), acc[r][t]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = hsum(acc[r][t]);
  }
}

// ---- K-quants (super-blocks of 256, activations Q8_K) ----

// Q4_K/Q5_K: the eight 6-bit scales in bytes 0..7 and mins in bytes 8..15.
inline void k4_scales_mins(const uint8_t* packed, uint8_t out[16]) {
  uint32_t u[4];
  std::memcpy(u, packed, 12);
  const uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  u[3] = ((u[2] >> 4) & kLow4) | (((u[1] >> 6) & kLow2) << 4);
  const uint32_t mins_low = u[1] & kLow6;
  u[1] = (u[2] & kLow4) | (((u[0] >> 6) & kLow2) << 4);
  u[2] = mins_low;
  u[0] &= kLow6;
  std::memcpy(out, u, 16);
}

// The same 16 bytes in a register (no store and reload: a vector load of
// bytes just written by narrower stores stalls on store forwarding).
inline __m128i k4_scales_mins_vec(const uint8_t* packed) {
  uint32_t u[3];
  std::memcpy(u, packed, 12);
  const uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  const uint32_t scales_hi = (u[2] & kLow4) | (((u[0] >> 6) & kLow2) << 4);
  const uint32_t mins_hi = ((u[2] >> 4) & kLow4) | (((u[1] >> 6) & kLow2) << 4);
  return _mm_setr_epi32(static_cast<int>(u[0] & kLow6), static_cast<int>(scales_hi),
                        static_cast<int>(u[1] & kLow6), static_cast<int>(mins_hi));
}

#if EDGELM_QUANT_VNNI
// k4_scales_mins for four blocks at once, one per 128-bit lane (12 packed
// bytes in words 0..2 of each lane in; 8 scales then 8 mins out).
inline __m512i k4_scales_mins_x4(__m512i packed) {
  const __m512i low6 = _mm512_set1_epi32(0x3f3f3f3f);
  const __m512i low4 = _mm512_set1_epi32(0x0f0f0f0f);
  const __m512i low2 = _mm512_set1_epi32(0x03030303);
  // Words (u0, u2, u1, u2 >> 4) & (low6, low4, low6, low4) ...
  const __m512i first = _mm512_and_si512(
      _mm512_srlv_epi32(_mm512_shuffle_epi32(packed, _MM_PERM_CBCA), _mm512_set4_epi32(4, 0, 0, 0)),
      _mm512_mask_blend_epi32(0xAAAA, low6, low4));
  // ... | ((u0, u0, u1, u1) >> 6 & low2) << 4 in words 1 and 3.
  const __m512i second = _mm512_maskz_slli_epi32(
      0xAAAA,
      _mm512_and_si512(_mm512_srli_epi32(_mm512_shuffle_epi32(packed, _MM_PERM_BBAA), 6), low2), 4);
  return _mm512_or_si512(first, second);
}

// The scales and mins of super-block b of 4 rows, unpacked as by
// k4_scales_mins_x4 (row r in 128-bit lane r: 8 scales, then 8 mins).
template <typename Block>
inline __m512i k4_scales_mins_rows4(const uint8_t* rows, size_t row_bytes, int64_t b) {
  __m512i packed = _mm512_setzero_si512();
  for (int r = 0; r < 4; ++r) {
    const Block* blk = reinterpret_cast<const Block*>(rows + r * row_bytes) + b;
    const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->scales));
    packed =
        r == 0 ? _mm512_castsi128_si512(p) : _mm512_mask_broadcast_i32x4(packed, 0xF << (4 * r), p);
  }
  return k4_scales_mins_x4(packed);
}

// The sum of all lanes of a row's accumulator and of its 4-lane min accumulator.
inline float sum_with_min(__m512 acc, __m128 acc_min) {
  __m128 m = _mm_add_ps(acc_min, _mm_movehl_ps(acc_min, acc_min));
  m = _mm_add_ss(m, _mm_movehdup_ps(m));
  return _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(m);
}
#endif

struct X86Q4_K {
  using Block = BlockQ4_K;
  // 64 values of chunk c (sub-blocks 2c, 2c+1) as unsigned bytes.
  struct Unpacked {
    const Block* b;
    explicit Unpacked(const Block* blk) : b(blk) {}
    void chunk(int c, __m256i* lo, __m256i* hi) const {
      const __m256i raw = load256(b->qs + 32 * c);
      *lo = _mm256_and_si256(raw, _mm256_set1_epi8(0x0F));
      *hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), _mm256_set1_epi8(0x0F));
    }
  };
};
struct X86Q5_K {
  using Block = BlockQ5_K;
  struct Unpacked {
    const Block* b;
    __m256i qh;
    explicit Unpacked(const Block* blk) : b(blk), qh(load256(blk->qh)) {}
    void chunk(int c, __m256i* lo, __m256i* hi) const {
      const __m256i raw = load256(b->qs + 32 * c);
      const __m256i bit_lo = _mm256_set1_epi8(static_cast<char>(1 << (2 * c)));
      const __m256i bit_hi = _mm256_set1_epi8(static_cast<char>(1 << (2 * c + 1)));
      const __m256i h16 = _mm256_set1_epi8(0x10);
      const __m256i h_lo =
          _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit_lo), bit_lo), h16);
      const __m256i h_hi =
          _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit_hi), bit_hi), h16);
      *lo = _mm256_or_si256(_mm256_and_si256(raw, _mm256_set1_epi8(0x0F)), h_lo);
      *hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), _mm256_set1_epi8(0x0F)),
                            h_hi);
    }
  };
};

// Q4_K / Q5_K: y += dx * (d * sum_j sc_j * dot_j - dmin * sum_j m_j * xsum_j).
template <typename F, int R, int T>
inline void tile_k4(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a, float* y,
                    int64_t y_stride) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  const size_t ahead = prefetch_distance(R * row_bytes);
  for (int64_t b = 0; b < nb; ++b) {
    for (int r = 0; r < R; ++r) {
      const auto* blk = reinterpret_cast<const typename F::Block*>(rows + r * row_bytes) + b;
      if constexpr (R > 1) {
        const char* next = reinterpret_cast<const char*>(blk) + ahead;
        _mm_prefetch(next, _MM_HINT_T0);
        _mm_prefetch(next + 64, _MM_HINT_T0);
        if constexpr (sizeof(typename F::Block) > 128) _mm_prefetch(next + 128, _MM_HINT_T0);
      }
      alignas(16) uint8_t sm[16];
      k4_scales_mins(blk->scales, sm);
      const float d = f16(blk->d);
      const float dmin = f16(blk->dmin);
      const __m128i mins =
          _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sm + 8)));
      __m256i isum[T];
      for (int t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
      const typename F::Unpacked u(blk);
      for (int c = 0; c < 4; ++c) {
        __m256i lo, hi;
        u.chunk(c, &lo, &hi);
        const __m256i sc_lo = _mm256_set1_epi16(sm[2 * c]);
        const __m256i sc_hi = _mm256_set1_epi16(sm[2 * c + 1]);
        for (int t = 0; t < T; ++t) {
          const int8_t* xq = a.q + t * a.q_stride + b * kQK_K + 64 * c;
          isum[t] = madd_i16(isum[t], _mm256_maddubs_epi16(lo, load256(xq)), sc_lo);
          isum[t] = madd_i16(isum[t], _mm256_maddubs_epi16(hi, load256(xq + 32)), sc_hi);
        }
      }
      for (int t = 0; t < T; ++t) {
        const float dx = a.d[t * a.d_stride + b];
        const __m128i xs =
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.s32 + t * a.d32_stride + 8 * b));
        const __m256 msum = _mm256_zextps128_ps256(_mm_cvtepi32_ps(_mm_madd_epi16(mins, xs)));
        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * dx), acc[r][t]);
        acc[r][t] = _mm256_fmadd_ps(msum, _mm256_set1_ps(-dmin * dx), acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = hsum(acc[r][t]);
  }
}

// Half h of a Q6_K block as unsigned 6-bit quants: q[k] holds values
// 128 h + 32 k .. + 31 (sub-blocks 8 h + 2 k and 8 h + 2 k + 1).
inline void q6_k_half(const BlockQ6_K* blk, int h, __m256i q[4]) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i ql0 = load256(blk->ql + 64 * h);
  const __m256i ql1 = load256(blk->ql + 64 * h + 32);
  const __m256i qh = load256(blk->qh + 32 * h);
  q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4),
                         _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x03)), 4));
  q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                         _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C)), 2));
  q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                         _mm256_and_si256(qh, _mm256_set1_epi8(0x30)));
  q[3] = _mm256_or_si256(
      _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
      _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(static_cast<char>(0xC0))), 2));
}

// Q6_K: y += dx * d * sum_j sc_j * (dot_j - 32 * xsum_j), sub-blocks of 16.
template <int R, int T>
inline void tile_q6_k(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a,
                      float* y, int64_t y_stride) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  const size_t ahead = prefetch_distance(R * row_bytes);
  for (int64_t b = 0; b < nb; ++b) {
    for (int r = 0; r < R; ++r) {
      const auto* blk = reinterpret_cast<const BlockQ6_K*>(rows + r * row_bytes) + b;
      if constexpr (R > 1) {
        const char* next = reinterpret_cast<const char*>(blk) + ahead;
        _mm_prefetch(next, _MM_HINT_T0);
        _mm_prefetch(next + 64, _MM_HINT_T0);
        _mm_prefetch(next + 128, _MM_HINT_T0);
        _mm_prefetch(next + 192, _MM_HINT_T0);
      }
      const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->scales));
      const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
      const float d = f16(blk->d);
      __m256i isum[T];
      for (int t = 0; t < T; ++t) {
        // -32 * sum_j sc_j * xsum_j
        const __m256i xs = load256(a.s16 + t * a.s16_stride + 16 * b);
        isum[t] = _mm256_slli_epi32(
            _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(sc16, xs)), 5);
      }
      for (int h = 0; h < 2; ++h) {
        __m256i q[4];
        q6_k_half(blk, h, q);
        for (int k = 0; k < 4; ++k) {
          // Sub-blocks j = 8h + 2k (first 16 values) and j + 1 (next 16).
          const int j = 8 * h + 2 * k;
          const __m128i pick =
              _mm_set_epi64x(0x0101010101010101LL * (j + 1), 0x0101010101010101LL * j);
          const __m256i sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pick));
          for (int t = 0; t < T; ++t) {
            const int8_t* xq = a.q + t * a.q_stride + b * kQK_K + 128 * h + 32 * k;
            isum[t] = madd_i16(isum[t], _mm256_maddubs_epi16(q[k], load256(xq)), sc);
          }
        }
      }
      for (int t = 0; t < T; ++t) {
        const float dx = a.d[t * a.d_stride + b];
        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * dx), acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = hsum(acc[r][t]);
  }
}

#if EDGELM_QUANT_VNNI
// ---- AVX-512 decode for Q4_0 and Q4_K/Q5_K: 64 values per instruction ----
// The ymm kernels above spend most of their instructions per block on scales;
// these unpack 4 blocks (or 2 sub-blocks) per zmm and convert 8 block scales
// with one vpermt2w + vcvtph2ps.

// R rows of a 4/5-bit 32-value format (Q4_0, Q4_1, Q5_0, Q5_1), eight blocks
// per step; the remaining < 8 blocks use tile_32.
template <typename F>
struct ZmmLayout {  // byte offsets inside a block
  using Block = typename F::Block;
  static constexpr bool kHigh =
      std::is_same_v<Block, BlockQ5_0> || std::is_same_v<Block, BlockQ5_1>;
  static constexpr int kQs = offsetof(Block, qs);
  static constexpr int kQhOffset = [] {
    if constexpr (kHigh) return static_cast<int>(offsetof(Block, qh));
    return 0;
  }();
  static constexpr int kMOffset = [] {
    if constexpr (F::kMin) return static_cast<int>(offsetof(Block, m));
    return 0;
  }();
};

// Which of a group's 8 halves at field_byte lie past word 63 (in the third zmm).
constexpr __mmask32 third_half_mask(int block_bytes, int field_byte) {
  uint32_t m = 0;
  for (int k = 0; k < 8; ++k) {
    if (k * block_bytes / 2 + field_byte / 2 >= 64) m |= 1u << k;
  }
  return m;
}

inline __m512i load512(const void* p) {
  return _mm512_loadu_si512(p);
}

// Word indices for _mm512_permutex2var_epi16 over the 8 blocks of a group
// (group bytes = 8 * sizeof(Block) <= 192, loaded as three zmm l0, l1, l2):
// block k's field at word k * block_words + field_word. Half 0 (blocks 0..3)
// indexes (l0, l1); half 1 (blocks 4..7) indexes (l1, l2), i.e. word - 32.
struct GroupWordIndex {
  alignas(64) uint16_t qs[2][32];      // lane k: the 8 words of block 4h + k's quants
  alignas(64) uint16_t qh[2][32];      // lane k: block 4h + k's 2 qh words, 4 times
  alignas(64) uint16_t field[2][32];   // word k < 8: block k's f16 at field_byte
  alignas(64) uint16_t spread[2][32];  // word i < 16: block 4h + i / 4's f16 at field_byte
};
constexpr GroupWordIndex group_word_index(int block_bytes, int qs_byte, int qh_byte,
                                          int field_byte) {
  GroupWordIndex t{};
  const int bw = block_bytes / 2;
  for (int h = 0; h < 2; ++h) {
    for (int k = 0; k < 4; ++k) {
      const int block = 4 * h + k;
      for (int j = 0; j < 8; ++j) {
        t.qs[h][8 * k + j] = static_cast<uint16_t>((block * bw + qs_byte / 2 + j - 32 * h) & 63);
        t.qh[h][8 * k + j] =
            static_cast<uint16_t>((block * bw + qh_byte / 2 + (j & 1) - 32 * h) & 63);
      }
    }
  }
  for (int k = 0; k < 8; ++k) {
    const int word = k * bw + field_byte / 2;
    t.field[0][k] = static_cast<uint16_t>(word & 63);         // from (l0, l1)
    t.field[1][k] = static_cast<uint16_t>((word - 32) & 63);  // from (l1, l2)
  }
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 16; ++i) {
      const int word = (4 * h + i / 4) * bw + field_byte / 2 - 32 * h;
      t.spread[h][i] = static_cast<uint16_t>(word & 63);
    }
  }
  return t;
}

template <typename F, int R>
inline void matvec_32_zmm(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a,
                          float* y) {
  using Block = typename F::Block;
  using L = ZmmLayout<F>;
  constexpr size_t kBytes = sizeof(Block);
  __m512 acc[R];
  __m256 acc_off[R];
  for (int r = 0; r < R; ++r) {
    acc[r] = _mm512_setzero_ps();
    acc_off[r] = _mm256_setzero_ps();
  }
  const size_t ahead = prefetch_distance(R * row_bytes);
  static constexpr GroupWordIndex kIndexD = group_word_index(kBytes, L::kQs, L::kQhOffset, 0);
  static constexpr GroupWordIndex kIndexM =
      group_word_index(kBytes, L::kQs, L::kQhOffset, L::kMOffset);
  // Bytes of the group in the third zmm, and which of the 8 halves come from it.
  constexpr __mmask64 kThirdMask =
      8 * kBytes >= 192 ? ~__mmask64{0} : (__mmask64{1} << (8 * kBytes - 128)) - 1;
  [[maybe_unused]] constexpr __mmask32 kMFromThird = third_half_mask(kBytes, L::kMOffset);
  const __m512i lo_idx = _mm512_set_epi64(13, 12, 9, 8, 5, 4, 1, 0);
  const __m512i hi_idx = _mm512_set_epi64(15, 14, 11, 10, 7, 6, 3, 2);
  const __m512i expand_lo = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  const __m512i expand_hi = _mm512_set_epi32(7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i bit4 = _mm512_set1_epi8(0x10);
  const __m512i pick_lo =
      _mm512_broadcast_i32x4(_mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
  const __m512i pick_hi =
      _mm512_broadcast_i32x4(_mm_setr_epi8(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m512i bit_of_byte = _mm512_set1_epi64(0x8040201008040201);
  // One group of 8 blocks at block b; kPartial: the last `count` < 8 blocks,
  // loaded masked so that the missing blocks read as zero bytes (zero scales,
  // zero products) and nothing past the row is touched.
  auto group = [&]<bool kPartial>(int64_t b, int64_t count) {
    auto bytes_mask = [](int64_t begin, int64_t total) -> __mmask64 {
      const int64_t n = total - begin;
      return n >= 64 ? ~__mmask64{0} : n <= 0 ? __mmask64{0} : (__mmask64{1} << n) - 1;
    };
    auto load_x = [&](const int8_t* p, int64_t begin) {
      if constexpr (kPartial) return _mm512_maskz_loadu_epi8(bytes_mask(begin, count * kQK), p);
      return _mm512_loadu_si512(p);
    };
    // x of blocks b..b+7 split into low and high halves to match the nibbles.
    const int8_t* xq = a.q + b * kQK;
    const __m512i x0 = load_x(xq, 0), x1 = load_x(xq + 64, 64);
    const __m512i x2 = load_x(xq + 128, 128), x3 = load_x(xq + 192, 192);
    const __m512i xlo0 = _mm512_permutex2var_epi64(x0, lo_idx, x1);
    const __m512i xhi0 = _mm512_permutex2var_epi64(x0, hi_idx, x1);
    const __m512i xlo1 = _mm512_permutex2var_epi64(x2, lo_idx, x3);
    const __m512i xhi1 = _mm512_permutex2var_epi64(x2, hi_idx, x3);
    const __mmask8 block_mask = static_cast<__mmask8>((1u << count) - 1);
    const __m256 dx = _mm256_maskz_loadu_ps(block_mask, a.d + b);
    [[maybe_unused]] const __m256 dsum = _mm256_maskz_loadu_ps(block_mask, a.dsum + b);
    // dx per dpbusd lane (4 lanes per block), and the offset term of the
    // offset formats as the initial dpbusd sums: -kOffset * (sum of x per lane).
    const __m512 dx512 = _mm512_castps256_ps512(dx);
    const __m512 dxe[2] = {_mm512_permutexvar_ps(expand_lo, dx512),
                           _mm512_permutexvar_ps(expand_hi, dx512)};
    const __m512i xlo[2] = {xlo0, xlo1}, xhi[2] = {xhi0, xhi1};
    __m512i s0[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    if constexpr (!F::kMin) {
      const __m512i off = _mm512_set1_epi8(static_cast<char>(F::kOffset));
      for (int h = 0; h < 2; ++h) {
        const __m512i xs = _mm512_dpbusd_epi32(
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, xlo[h]), off, xhi[h]);
        s0[h] = _mm512_sub_epi32(_mm512_setzero_si512(), xs);
      }
    }
    const int64_t w_bytes = count * static_cast<int64_t>(kBytes);
    for (int r = 0; r < R; ++r) {
      const uint8_t* g = rows + r * row_bytes + b * kBytes;
      // The group's 8 * kBytes (<= 192) bytes as three zmm; the third is a
      // masked load, so nothing past the group is read. Every field is then
      // one word permute away (the block sizes are even).
      // The same group of the rows `ahead` bytes further (prefetch_distance).
      for (int64_t off = 0; off < w_bytes; off += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(g) + ahead + off, _MM_HINT_T0);
      }
      __m512i l0, l1, l2;
      if constexpr (kPartial) {
        l0 = _mm512_maskz_loadu_epi8(bytes_mask(0, w_bytes), g);
        l1 = _mm512_maskz_loadu_epi8(bytes_mask(64, w_bytes), g + 64);
        l2 = _mm512_maskz_loadu_epi8(bytes_mask(128, w_bytes) & kThirdMask, g + 128);
      } else {
        l0 = _mm512_loadu_si512(g);
        l1 = _mm512_loadu_si512(g + 64);
        l2 = _mm512_maskz_loadu_epi8(kThirdMask, g + 128);
      }
      auto halves = [&](const GroupWordIndex& index, __mmask32 from_third) {
        const __m512i lo = _mm512_permutex2var_epi16(l0, load512(index.field[0]), l1);
        const __m512i hi = _mm512_permutex2var_epi16(l1, load512(index.field[1]), l2);
        return _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_mask_blend_epi16(from_third, lo, hi)));
      };
      if constexpr (F::kMin)
        acc_off[r] = _mm256_fmadd_ps(halves(kIndexM, kMFromThird), dsum, acc_off[r]);
      // d of each dpbusd lane's block, times dx.
      const __m512 scale[2] = {
          _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(
                            _mm512_permutex2var_epi16(l0, load512(kIndexD.spread[0]), l1))),
                        dxe[0]),
          _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(
                            _mm512_permutex2var_epi16(l1, load512(kIndexD.spread[1]), l2))),
                        dxe[1])};
      const __m512i v[2] = {_mm512_permutex2var_epi16(l0, load512(kIndexD.qs[0]), l1),
                            _mm512_permutex2var_epi16(l1, load512(kIndexD.qs[1]), l2)};
      __m512i s[2];
      for (int h = 0; h < 2; ++h) {
        __m512i lo = _mm512_and_si512(v[h], m4);
        __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v[h], 4), m4);
        if constexpr (L::kHigh) {
          // qh of block k into 128-bit lane k; byte j of a lane then takes bit j
          // (low nibbles: bits 0..15, high nibbles: bits 16..31) as a mask bit.
          const __m512i rep = h == 0 ? _mm512_permutex2var_epi16(l0, load512(kIndexD.qh[0]), l1)
                                     : _mm512_permutex2var_epi16(l1, load512(kIndexD.qh[1]), l2);
          const __mmask64 mlo =
              _mm512_test_epi8_mask(_mm512_shuffle_epi8(rep, pick_lo), bit_of_byte);
          const __mmask64 mhi =
              _mm512_test_epi8_mask(_mm512_shuffle_epi8(rep, pick_hi), bit_of_byte);
          lo = _mm512_mask_add_epi8(lo, mlo, lo, bit4);  // bit 4 is clear: + 16 sets it
          hi = _mm512_mask_add_epi8(hi, mhi, hi, bit4);
        }
        s[h] = _mm512_dpbusd_epi32(s0[h], lo, xlo[h]);
        s[h] = _mm512_dpbusd_epi32(s[h], hi, xhi[h]);
      }
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[0]), scale[0], acc[r]);
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[1]), scale[1], acc[r]);
    }
  };
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) group.template operator()<false>(b, 8);
  // A masked group costs a whole group's work: cheaper than the one-block
  // tiles except for very short tails of the 5-bit types (2 blocks: 10% slower).
  float tail[R] = {};
  if (b < nb && (nb - b >= 4 || !L::kHigh)) {
    group.template operator()<true>(b, nb - b);
  } else if (b < nb) {
    QuantActs at = a;
    at.q += b * kQK;
    at.d += b;
    at.dsum += b;
    tile_32<F, R, 1>(rows + b * kBytes, row_bytes, nb - b, at, tail, 0);
  }
  if constexpr (R == 4 && !F::kMin) {
    // One transposed reduction: lane r of each 128-bit quarter sums row r.
    const __m512 t01 = _mm512_add_ps(_mm512_unpacklo_ps(acc[0], acc[1]),
                                     _mm512_unpackhi_ps(acc[0], acc[1]));  // r0 r1 r0 r1
    const __m512 t23 = _mm512_add_ps(_mm512_unpacklo_ps(acc[2], acc[3]),
                                     _mm512_unpackhi_ps(acc[2], acc[3]));  // r2 r3 r2 r3
    const __m512 u = _mm512_add_ps(_mm512_shuffle_ps(t01, t23, 0x44),
                                   _mm512_shuffle_ps(t01, t23, 0xEE));  // r0 r1 r2 r3
    const __m256 v = _mm256_add_ps(_mm512_castps512_ps256(u), _mm512_extractf32x8_ps(u, 1));
    const __m128 w = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    _mm_storeu_ps(y, _mm_add_ps(w, _mm_loadu_ps(tail)));
  } else {
    for (int r = 0; r < R; ++r) {
      y[r] = _mm512_reduce_add_ps(acc[r]) + hsum(acc_off[r]) + tail[r];
    }
  }
}

// R rows of a 4/5-bit 32-value format, four blocks per step with block k of
// the step in 128-bit lane k: its 16 quant bytes are one 16-byte load each
// (inserted into the lane), its scale (and min) words one vpermw (vpermt2w
// when the 4 blocks pass 64 bytes) from the step's bytes, and the fifth bits
// of Q5_0/Q5_1 two byte masks assembled with scalar shifts. matvec_32_zmm
// gathers every field of 8 blocks with vpermt2w instead, which Intel cores
// run at about 1.7 cycles each on one port (Zen 4/5: one cycle, two ports):
// on a 2.1 GHz Xeon (Sapphire Rapids class) this kernel is 1.2-1.4x faster
// with the weights in cache (docs/BENCHMARKS.md). See Avx512Decode.
template <typename F, int R>
inline void matvec_32_lanes(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a,
                            float* y) {
  using Block = typename F::Block;
  using L = ZmmLayout<F>;
  constexpr int kBytes = static_cast<int>(sizeof(Block));
  constexpr int kStepBytes = 4 * kBytes;
  constexpr bool kTwoLoads = kStepBytes > 64;
  __m512 acc[R];
  __m128 acc_min[R];
  for (int r = 0; r < R; ++r) {
    acc[r] = _mm512_setzero_ps();
    acc_min[r] = _mm_setzero_ps();
  }
  const size_t ahead = prefetch_distance(R * row_bytes);
  // Word indices (vpermw / vpermt2w over the step's bytes from byte 0; words
  // from 32 on come from the second load at byte 64): lane i takes block
  // i / 4's f16 at `field` (16 lanes), or block i's (4 lanes).
  struct SpreadIndex {
    alignas(64) uint16_t d[32];  // lane i: block i / 4's d
    alignas(64) uint16_t m[32];  // lane i < 4: block i's m
  };
  static constexpr SpreadIndex kIndex = [] {
    SpreadIndex t{};
    for (int i = 0; i < 16; ++i) t.d[i] = static_cast<uint16_t>((i / 4) * kBytes / 2);
    for (int i = 0; i < 4; ++i) t.m[i] = static_cast<uint16_t>((i * kBytes + L::kMOffset) / 2);
    return t;
  }();
  const __m512i d_index = _mm512_load_si512(kIndex.d);
  [[maybe_unused]] const __m512i m_index = _mm512_load_si512(kIndex.m);
  const __m512i lo_idx = _mm512_set_epi64(13, 12, 9, 8, 5, 4, 1, 0);
  const __m512i hi_idx = _mm512_set_epi64(15, 14, 11, 10, 7, 6, 3, 2);
  const __m512i expand = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  [[maybe_unused]] const __m512i bit4 = _mm512_set1_epi8(0x10);
  auto step = [&]<bool kPartial>(int64_t b, int count) {
    auto bytes_mask = [](int64_t n) -> __mmask64 {
      return n >= 64 ? ~__mmask64{0} : n <= 0 ? __mmask64{0} : (__mmask64{1} << n) - 1;
    };
    // x of blocks b..b+3: values 0..15 of block k in lane k of xlo, 16..31 in xhi.
    const int8_t* xq = a.q + b * kQK;
    __m512i x0, x1;
    if constexpr (kPartial) {
      x0 = _mm512_maskz_loadu_epi8(bytes_mask(count * kQK), xq);
      x1 = _mm512_maskz_loadu_epi8(bytes_mask(count * kQK - 64), xq + 64);
    } else {
      x0 = _mm512_loadu_si512(xq);
      x1 = _mm512_loadu_si512(xq + 64);
    }
    const __m512i xlo = _mm512_permutex2var_epi64(x0, lo_idx, x1);
    const __m512i xhi = _mm512_permutex2var_epi64(x0, hi_idx, x1);
    const __mmask8 block_mask = static_cast<__mmask8>((1u << count) - 1);
    const __m512 dxe = _mm512_permutexvar_ps(
        expand, _mm512_castps128_ps512(_mm_maskz_loadu_ps(block_mask, a.d + b)));
    [[maybe_unused]] const __m128 dsum = _mm_maskz_loadu_ps(block_mask, a.dsum + b);
    // The offset term, -kOffset * (sum of x per lane), as the initial sums.
    __m512i s0 = _mm512_setzero_si512();
    if constexpr (!F::kMin) {
      const __m512i off = _mm512_set1_epi8(static_cast<char>(F::kOffset));
      s0 = _mm512_sub_epi32(
          s0, _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), off, xlo), off, xhi));
    }
    for (int r = 0; r < R; ++r) {
      const uint8_t* g = rows + r * row_bytes + b * kBytes;
      _mm_prefetch(reinterpret_cast<const char*>(g) + ahead, _MM_HINT_T0);
      if constexpr (kTwoLoads) {
        _mm_prefetch(reinterpret_cast<const char*>(g) + ahead + 64, _MM_HINT_T0);
      }
      __m512i v =
          _mm512_zextsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + L::kQs)));
      __m512i words, words_hi = _mm512_setzero_si512();
      if constexpr (kPartial) {
        if (count > 1)
          v = _mm512_inserti32x4(
              v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + kBytes + L::kQs)), 1);
        if (count > 2)
          v = _mm512_inserti32x4(
              v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 2 * kBytes + L::kQs)), 2);
        words = _mm512_maskz_loadu_epi8(bytes_mask(count * kBytes), g);
        if constexpr (kTwoLoads)
          words_hi = _mm512_maskz_loadu_epi8(bytes_mask(count * kBytes - 64), g + 64);
      } else {
        v = _mm512_inserti32x4(
            v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + kBytes + L::kQs)), 1);
        v = _mm512_inserti32x4(
            v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 2 * kBytes + L::kQs)), 2);
        v = _mm512_inserti32x4(
            v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 3 * kBytes + L::kQs)), 3);
        words = _mm512_loadu_si512(g);
        if constexpr (kTwoLoads)
          words_hi = _mm512_maskz_loadu_epi8(bytes_mask(kStepBytes - 64), g + 64);
      }
      auto gather = [&](const __m512i& index) {
        if constexpr (kTwoLoads) return _mm512_permutex2var_epi16(words, index, words_hi);
        return _mm512_permutexvar_epi16(index, words);
      };
      __m512i lo = _mm512_and_si512(v, m4);
      __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
      if constexpr (L::kHigh) {
        // Bit j of block k's qh is bit 4 of value j: byte j of lane k of lo
        // (j < 16) or of hi (j >= 16).
        uint64_t mlo = 0, mhi = 0;
        for (int k = 0; k < (kPartial ? count : 4); ++k) {
          uint32_t qh;
          std::memcpy(&qh, g + k * kBytes + L::kQhOffset, 4);
          mlo |= static_cast<uint64_t>(qh & 0xFFFF) << (16 * k);
          mhi |= static_cast<uint64_t>(qh >> 16) << (16 * k);
        }
        lo = _mm512_mask_add_epi8(lo, mlo, lo, bit4);  // bit 4 is clear: + 16 sets it
        hi = _mm512_mask_add_epi8(hi, mhi, hi, bit4);
      }
      const __m512i s = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(s0, lo, xlo), hi, xhi);
      const __m512 scale =
          _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(gather(d_index))), dxe);
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc[r]);
      if constexpr (F::kMin) {
        acc_min[r] =
            _mm_fmadd_ps(_mm_cvtph_ps(_mm512_castsi512_si128(gather(m_index))), dsum, acc_min[r]);
      }
    }
  };
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) step.template operator()<false>(b, 4);
  if (b < nb) step.template operator()<true>(b, static_cast<int>(nb - b));
  if constexpr (R % 4 == 0) {
    for (int q = 0; q < R; q += 4) {
      // One transposed reduction: lane r of each 128-bit quarter sums row q + r.
      const __m512 t01 = _mm512_add_ps(_mm512_unpacklo_ps(acc[q], acc[q + 1]),
                                       _mm512_unpackhi_ps(acc[q], acc[q + 1]));  // r0 r1 r0 r1
      const __m512 t23 = _mm512_add_ps(_mm512_unpacklo_ps(acc[q + 2], acc[q + 3]),
                                       _mm512_unpackhi_ps(acc[q + 2], acc[q + 3]));  // r2 r3 r2 r3
      const __m512 u = _mm512_add_ps(_mm512_shuffle_ps(t01, t23, 0x44),
                                     _mm512_shuffle_ps(t01, t23, 0xEE));  // r0 r1 r2 r3
      const __m256 v = _mm256_add_ps(_mm512_castps512_ps256(u), _mm512_extractf32x8_ps(u, 1));
      __m128 w = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
      if constexpr (F::kMin) {
        // Same transposed sum of the 4-lane min accumulators.
        const __m128 m01 = _mm_add_ps(_mm_unpacklo_ps(acc_min[q], acc_min[q + 1]),
                                      _mm_unpackhi_ps(acc_min[q], acc_min[q + 1]));
        const __m128 m23 = _mm_add_ps(_mm_unpacklo_ps(acc_min[q + 2], acc_min[q + 3]),
                                      _mm_unpackhi_ps(acc_min[q + 2], acc_min[q + 3]));
        w = _mm_add_ps(w, _mm_add_ps(_mm_movelh_ps(m01, m23), _mm_movehl_ps(m23, m01)));
      }
      _mm_storeu_ps(y + q, w);
    }
  } else {
    for (int r = 0; r < R; ++r) y[r] = sum_with_min(acc[r], acc_min[r]);
  }
}

// R rows of Q8_0 with two blocks per zmm (block k of a step of 4 in the
// 256-bit half k % 2 of zmm k / 2): each block's 32 quants are one 32-byte
// load, the activations of a step are two plain loads shared by the R rows,
// the +128 offset of the unsigned operand is subtracted in the integer sums
// (once per step for all rows), and the four block scales are one vpermt2w.
// tile_32 spends a scalar f16 conversion, a broadcast and an FMA per block and
// row: on the 2.1 GHz Xeon this is faster with the weights in cache (see Avx512Decode).
template <int R>
inline void matvec_q8_0_lanes(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a,
                              float* y, size_t far) {
  constexpr int kBytes = static_cast<int>(sizeof(BlockQ8_0));
  constexpr int kStepBytes = 4 * kBytes;  // 136: two zmm of fields
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  const size_t ahead = prefetch_distance(R * row_bytes);
  const __m512i d_index =
      _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                       0, 0, 3 * kBytes / 2, 2 * kBytes / 2, kBytes / 2, 0);
  const __m512i spread01 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i spread23 = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2);
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  auto step = [&]<bool kPartial>(int64_t b, int count) {
    auto bytes_mask = [](int64_t n) -> __mmask64 {
      return n >= 64 ? ~__mmask64{0} : n <= 0 ? __mmask64{0} : (__mmask64{1} << n) - 1;
    };
    const int8_t* xq = a.q + b * kQK;
    __m512i x[2];
    if constexpr (kPartial) {
      x[0] = _mm512_maskz_loadu_epi8(bytes_mask(count * kQK), xq);
      x[1] = _mm512_maskz_loadu_epi8(bytes_mask(count * kQK - 64), xq + 64);
    } else {
      x[0] = _mm512_loadu_si512(xq);
      x[1] = _mm512_loadu_si512(xq + 64);
    }
    const __mmask8 block_mask = static_cast<__mmask8>((1u << count) - 1);
    const __m128 dx = _mm_maskz_loadu_ps(block_mask, a.d + b);
    // (q + 128) . x - 128 * (sum of x) = q . x, per lane.
    const __m512i s0[2] = {
        _mm512_sub_epi32(_mm512_setzero_si512(),
                         _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, x[0])),
        _mm512_sub_epi32(_mm512_setzero_si512(),
                         _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, x[1]))};
    for (int r = 0; r < R; ++r) {
      const uint8_t* g = rows + r * row_bytes + b * kBytes;
      _mm_prefetch(reinterpret_cast<const char*>(g) + ahead, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(g) + ahead + 64, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(g) + ahead + 128, _MM_HINT_T0);
      if (far != 0) {
        _mm_prefetch(reinterpret_cast<const char*>(g) + far, _MM_HINT_T2);
        _mm_prefetch(reinterpret_cast<const char*>(g) + far + 64, _MM_HINT_T2);
        _mm_prefetch(reinterpret_cast<const char*>(g) + far + 128, _MM_HINT_T2);
      }
      auto qs = [&](int k) {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + k * kBytes + 2));
      };
      __m512i w[2], l0, l1;
      if constexpr (kPartial) {
        w[0] = _mm512_zextsi256_si512(qs(0));
        if (count > 1) w[0] = _mm512_inserti64x4(w[0], qs(1), 1);
        w[1] = count > 2 ? _mm512_zextsi256_si512(qs(2)) : _mm512_setzero_si512();
        l0 = _mm512_maskz_loadu_epi8(bytes_mask(count * kBytes), g);
        l1 = _mm512_maskz_loadu_epi8(bytes_mask(count * kBytes - 64), g + 64);
      } else {
        w[0] = _mm512_inserti64x4(_mm512_castsi256_si512(qs(0)), qs(1), 1);
        w[1] = _mm512_inserti64x4(_mm512_castsi256_si512(qs(2)), qs(3), 1);
        l0 = _mm512_loadu_si512(g);
        l1 = _mm512_loadu_si512(g + 64);
      }
      static_assert(kStepBytes <= 2 * 64 + 8, "the scales lie in the step's first 128 bytes");
      const __m128 scale = _mm_mul_ps(
          _mm_cvtph_ps(_mm512_castsi512_si128(_mm512_permutex2var_epi16(l0, d_index, l1))), dx);
      const __m512 scale512 = _mm512_castps128_ps512(scale);
      const __m512 sc[2] = {_mm512_permutexvar_ps(spread01, scale512),
                            _mm512_permutexvar_ps(spread23, scale512)};
      for (int h = 0; h < 2; ++h) {
        const __m512i s = _mm512_dpbusd_epi32(s0[h], _mm512_xor_si512(w[h], bias), x[h]);
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc[h], acc[r]);
      }
    }
  };
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) step.template operator()<false>(b, 4);
  if (b < nb) step.template operator()<true>(b, static_cast<int>(nb - b));
  for (int r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
}

// R = 4 rows of Q4_K with the 6-bit scales applied in the integer sums, one
// conversion per super-block and row: vpmaddubsw gives int16 pair sums of a
// zmm of quants (64 bytes: low nibbles = sub-blocks 2h | 2h + 2, high nibbles =
// 2h + 1 | 2h + 3) against activations rearranged to match once for the 4
// rows, and vpdpwssd multiplies them by the scales (int16 words picked with
// one vpermw each from the 4 rows' unpacked scales, widened to words once per
// super-block) and adds them up.
// matvec_k4_zmm converts and scales every 64 values in float with a lane
// permute each, which the Xeon's one shuffle port pays for. Bounds: a pair sum
// is at most 2 * 15 * 128 = 3840 in magnitude, a lane adds 8 of them times a
// scale <= 63, so every int32 stays below 2^21 and the conversion is exact.
inline void matvec_q4_k_lanes(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a,
                              float* y) {
  constexpr int R = 4;
  // Word indices into a pair of rows' unpacked scales/mins (row r of the pair in
  // words 16r..16r+15: 8 scales, then 8 mins): for row r, vector v (A0, B0, A1,
  // B1) word w takes scale 4 (v / 2) + (v % 2) + 2 (w / 16); the min vector's
  // word j < 8 takes min j.
  struct Index {
    alignas(64) uint16_t scale[2][4][32];
    alignas(64) uint16_t min[2][32];
  };
  static constexpr Index kIndex = [] {
    Index t{};
    for (int r = 0; r < 2; ++r) {
      for (int v = 0; v < 4; ++v) {
        for (int w = 0; w < 32; ++w) {
          t.scale[r][v][w] = static_cast<uint16_t>(16 * r + 4 * (v / 2) + (v % 2) + 2 * (w / 16));
        }
      }
      for (int j = 0; j < 8; ++j) t.min[r][j] = static_cast<uint16_t>(16 * r + 8 + j);
    }
    return t;
  }();
  __m512 acc[R];
  __m128 acc_min[R];
  for (int r = 0; r < R; ++r) {
    acc[r] = _mm512_setzero_ps();
    acc_min[r] = _mm_setzero_ps();
  }
  const size_t ahead = prefetch_distance(R * row_bytes);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* xq = a.q + b * kQK_K;
    const __m512i x0 = _mm512_loadu_si512(xq), x1 = _mm512_loadu_si512(xq + 64);
    const __m512i x2 = _mm512_loadu_si512(xq + 128), x3 = _mm512_loadu_si512(xq + 192);
    // Sub-blocks (0 | 2), (1 | 3), (4 | 6), (5 | 7) of the activations.
    const __m512i xs4[4] = {_mm512_shuffle_i64x2(x0, x1, 0x44), _mm512_shuffle_i64x2(x0, x1, 0xEE),
                            _mm512_shuffle_i64x2(x2, x3, 0x44), _mm512_shuffle_i64x2(x2, x3, 0xEE)};
    const float dx = a.d[b];
    const __m128i xsum = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.s32 + 8 * b));
    const __m512i sm_rows = k4_scales_mins_rows4<BlockQ4_K>(rows, row_bytes, b);
    const __m512i sm_words[2] = {_mm512_cvtepu8_epi16(_mm512_castsi512_si256(sm_rows)),
                                 _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(sm_rows, 1))};
    for (int r = 0; r < R; ++r) {
      const auto* blk = reinterpret_cast<const BlockQ4_K*>(rows + r * row_bytes) + b;
      const char* next = reinterpret_cast<const char*>(blk) + ahead;
      _mm_prefetch(next, _MM_HINT_T0);
      _mm_prefetch(next + 64, _MM_HINT_T0);
      _mm_prefetch(next + 128, _MM_HINT_T0);
      __m512i s = _mm512_setzero_si512();
      for (int h = 0; h < 2; ++h) {
        const __m512i v = _mm512_loadu_si512(blk->qs + 64 * h);
        const __m512i lo = _mm512_and_si512(v, m4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        const __m512i sc_lo = _mm512_permutexvar_epi16(
            _mm512_load_si512(kIndex.scale[r % 2][2 * h]), sm_words[r / 2]);
        const __m512i sc_hi = _mm512_permutexvar_epi16(
            _mm512_load_si512(kIndex.scale[r % 2][2 * h + 1]), sm_words[r / 2]);
        s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(lo, xs4[2 * h]), sc_lo);
        s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(hi, xs4[2 * h + 1]), sc_hi);
      }
      // d and dmin of the block, times dx.
      const __m128 dd = _mm_mul_ps(
          _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(blk->d | (uint32_t{blk->dmin} << 16)))),
          _mm_set1_ps(dx));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_broadcastss_ps(dd), acc[r]);
      const __m128i mins = _mm512_castsi512_si128(
          _mm512_permutexvar_epi16(_mm512_load_si512(kIndex.min[r % 2]), sm_words[r / 2]));
      acc_min[r] = _mm_fnmadd_ps(_mm_cvtepi32_ps(_mm_madd_epi16(mins, xsum)),
                                 _mm_shuffle_ps(dd, dd, 0x55), acc_min[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r] = sum_with_min(acc[r], acc_min[r]);
}

// R = 4 rows of Q6_K, 128 values per zmm: the 64 bytes of ql of a half
// super-block are one load, its 32 bytes of qh go to both 256-bit halves (the
// upper one shifted right by 2, so one mask and shift serve both), and the
// int8 scales multiply the vpmaddubsw pair sums as int16 in vpdpwssd (words
// placed with one vpermw per zmm); the -32 offset is -32 * sum_j sc_j * xsum_j
// (one vpmaddwd per super-block). tile_q6_k does the same per 32 values in
// ymm. Bounds as there: |pair sum| <= 2 * 63 * 128, times |sc| <= 128, four of
// them per lane and super-block: below 2^24, so the conversion is exact.
inline void matvec_q6_k_lanes(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a,
                              float* y, size_t far) {
  constexpr int R = 4;
  // Word indices into a block's 16 scales (as words): zmm k of a half covers
  // sub-blocks 4k' .. 4k' + 3 (k' = 2h + k), 8 words each.
  struct Index {
    alignas(64) uint16_t scale[4][32];
  };
  static constexpr Index kIndex = [] {
    Index t{};
    for (int k = 0; k < 4; ++k) {
      for (int w = 0; w < 32; ++w) t.scale[k][w] = static_cast<uint16_t>(4 * k + w / 8);
    }
    return t;
  }();
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  const size_t ahead = prefetch_distance(R * row_bytes);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i m2 = _mm512_set1_epi8(0x03);
  const __m512i m30 = _mm512_set1_epi8(0x30);
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* xq = a.q + b * kQK_K;
    const __m512i x[4] = {_mm512_loadu_si512(xq), _mm512_loadu_si512(xq + 64),
                          _mm512_loadu_si512(xq + 128), _mm512_loadu_si512(xq + 192)};
    const __m256i xs = load256(a.s16 + 16 * b);
    const float dx = a.d[b];
    for (int r = 0; r < R; ++r) {
      const auto* blk = reinterpret_cast<const BlockQ6_K*>(rows + r * row_bytes) + b;
      const char* next = reinterpret_cast<const char*>(blk) + ahead;
      _mm_prefetch(next, _MM_HINT_T0);
      _mm_prefetch(next + 64, _MM_HINT_T0);
      _mm_prefetch(next + 128, _MM_HINT_T0);
      _mm_prefetch(next + 192, _MM_HINT_T0);
      if (far != 0) {
        const char* far_next = reinterpret_cast<const char*>(blk) + far;
        _mm_prefetch(far_next, _MM_HINT_T2);
        _mm_prefetch(far_next + 64, _MM_HINT_T2);
        _mm_prefetch(far_next + 128, _MM_HINT_T2);
        _mm_prefetch(far_next + 192, _MM_HINT_T2);
      }
      const __m256i sc16 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->scales)));
      const __m512i sc_words = _mm512_castsi256_si512(sc16);
      // -32 * sum_j sc_j * xsum_j in the low 8 lanes as the initial sums.
      __m512i s = _mm512_zextsi256_si512(_mm256_slli_epi32(
          _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(sc16, xs)), 5));
      for (int h = 0; h < 2; ++h) {
        const __m512i ql = _mm512_loadu_si512(blk->ql + 64 * h);
        const __m256i qh = load256(blk->qh + 32 * h);
        const __m512i qh2 =
            _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
        // Values 128h + 0..63 (q0 | q1 of tile_q6_k) and 128h + 64..127 (q2 | q3).
        const __m512i q01 = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                            _mm512_slli_epi16(_mm512_and_si512(qh2, m2), 4));
        const __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                            _mm512_and_si512(qh2, m30));
        const __m512i sc01 =
            _mm512_permutexvar_epi16(_mm512_load_si512(kIndex.scale[2 * h]), sc_words);
        const __m512i sc23 =
            _mm512_permutexvar_epi16(_mm512_load_si512(kIndex.scale[2 * h + 1]), sc_words);
        s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(q01, x[2 * h]), sc01);
        s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(q23, x[2 * h + 1]), sc23);
      }
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(f16(blk->d) * dx), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
}

// Q4_0_X16 / Q5_0_X16 decode (quant_formats.h): per block of a 16-row group,
// one vpdpbusd per 4 quant bytes of all 16 rows (a plain 64-byte load, nibbles
// split by and/shift, Q5_0's fifth bits added under a mask loaded as is)
// against 4 activation bytes broadcast to every lane, and one conversion,
// scale and FMA per block for all 16 rows. No shuffles at all: 3x the
// row-major kernels' rate with the weights in L2 on the Xeon.
// Block bytes of an interleaved layout, and chunk c of one block of it: quant
// bytes 4c..4c+3 of each of the 16 rows (one lane per row) as unsigned values,
// lo = values 4c..4c+3 (low nibbles), hi = 16 + 4c.. (high nibbles), with
// Q5_0's fifth bits added from the chunk's two 64-bit masks.
template <bool kQ5>
inline constexpr size_t kX16Bytes = kQ5 ? kX16Q5BlockBytes : kX16BlockBytes;

// The interleaved kernels read their rows as one stream and prefetch it into
// L1 the row-major kernels' distance ahead and, with StreamPrefetch::kFar
// (matmul.h), into L2 kFarAhead bytes ahead; neither past the end of the rows
// they compute. With StreamPrefetch::kHardware the 4- and 5-bit ones leave the
// stream to the hardware prefetchers (kPrefetch = false: no prefetch
// instructions at all) and Q8_0_X16 prefetches into L1 only (see matvec_x16).
#ifndef EDGELM_QUANT_FAR
#define EDGELM_QUANT_FAR 32768
#endif
inline constexpr size_t kNearAhead = EDGELM_QUANT_AHEAD, kFarAhead = EDGELM_QUANT_FAR;

// How far ahead the interleaved kernels prefetch, in bytes: kNearAhead (into
// L1) and, with StreamPrefetch::kFar, kFarAhead (into L2) further along the
// blocks they read. Those are contiguous for whole rows; for a column slice
// (matvec_column_slice) each 16-row group holds only some of a group's blocks,
// so the same block some groups on is fetched instead of the other columns.
template <size_t kBlockBytes>
struct X16Distances {
  size_t near, far;
  X16Distances(const WeightMatrix& w, int64_t blocks) {
    const size_t segment = static_cast<size_t>(blocks) * kBlockBytes;  // per group
    const size_t stride = kX16Rows * w.row_bytes;
    auto ahead = [&](size_t target) {
      if (segment == 0) return size_t{0};
      if (segment == stride) return (target + kBlockBytes - 1) / kBlockBytes * kBlockBytes;
      return (target + segment - 1) / segment * stride;
    };
    near = ahead(kNearAhead);
    far = stream_prefetch() == StreamPrefetch::kFar ? ahead(kFarAhead) : 0;
  }
};

// Where to prefetch for the block at p: the distances ahead, or p itself (a
// no-op) where that is past `end`. Decided once per block so that the kernels'
// per-chunk prefetches need no branch.
template <bool kPrefetch>
struct X16Ahead {
  const char* near;
  const char* far;
  template <size_t kBlockBytes>
  X16Ahead(const uint8_t* p, const uint8_t* end, const X16Distances<kBlockBytes>& d) {
    const size_t left = static_cast<size_t>(end - p);
    near = reinterpret_cast<const char*>(p) + (left >= d.near + kBlockBytes ? d.near : 0);
    far =
        reinterpret_cast<const char*>(p) + (d.far != 0 && left >= d.far + kBlockBytes ? d.far : 0);
  }
  void fetch(size_t off) const {
    if constexpr (kPrefetch) {
      _mm_prefetch(near + off, _MM_HINT_T0);
      _mm_prefetch(far + off, _MM_HINT_T2);
    }
  }
};

template <bool kQ5>
inline void x16_chunk(const uint8_t* block, int c, __m512i* lo, __m512i* hi) {
  constexpr int kQuants = kQ5 ? 96 : 32;  // after the 16 scales (and Q5_0's 8 masks)
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i v = _mm512_loadu_si512(block + kQuants + 64 * c);
  *lo = _mm512_and_si512(v, m4);
  *hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
  if constexpr (kQ5) {
    const __m512i bit4 = _mm512_set1_epi8(0x10);
    uint64_t masks[2];
    std::memcpy(masks, block + 32 + 16 * c, 16);
    *lo = _mm512_mask_add_epi8(*lo, _cvtu64_mask64(masks[0]), *lo, bit4);
    *hi = _mm512_mask_add_epi8(*hi, _cvtu64_mask64(masks[1]), *hi, bit4);
  }
}

// The integer dot product of one block of a 16-row group with x's block: one
// int32 lane per row. The stored quants are q + offset, so the sums start
// from -offset * (sum of x). Q8_0_X16's chunks are vpdpbusd's unsigned
// operand as stored (q + 128), in two sum chains that halve the wait on
// vpdpbusd's latency.
template <DType kType>
inline __m512i x16_block_dot(const uint8_t* block, const int8_t* xq, int16_t x_sum) {
  if constexpr (kType == DType::Q8_0_X16) {
    __m512i s[2] = {_mm512_set1_epi32(-128 * static_cast<int32_t>(x_sum)), _mm512_setzero_si512()};
    for (int c = 0; c < 8; ++c) {
      int32_t x4;
      std::memcpy(&x4, xq + 4 * c, 4);
      s[c % 2] = _mm512_dpbusd_epi32(s[c % 2], _mm512_loadu_si512(block + 32 + 64 * c),
                                     _mm512_set1_epi32(x4));
    }
    return _mm512_add_epi32(s[0], s[1]);
  } else {
    constexpr bool kQ5 = kType == DType::Q5_0_X16;
    constexpr int kOffset = kQ5 ? 16 : 8;
    __m512i s = _mm512_set1_epi32(-kOffset * static_cast<int32_t>(x_sum));
    for (int c = 0; c < 4; ++c) {
      int32_t lo4, hi4;
      std::memcpy(&lo4, xq + 4 * c, 4);
      std::memcpy(&hi4, xq + 16 + 4 * c, 4);
      __m512i lo, hi;
      x16_chunk<kQ5>(block, c, &lo, &hi);
      s = _mm512_dpbusd_epi32(s, lo, _mm512_set1_epi32(lo4));
      s = _mm512_dpbusd_epi32(s, hi, _mm512_set1_epi32(hi4));
    }
    return s;
  }
}

// Q4_0_X16 / Q5_0_X16 / Q8_0_X16 decode: per block of a 16-row group, its
// integer dot products, then one conversion, scale and FMA for all 16 rows.
template <DType kType, bool kPrefetch>
inline void matvec_x16_with(const WeightMatrix& w, const QuantActs& a, float* y, int64_t row_begin,
                            int64_t row_end) {
  constexpr size_t kBlockBytes =
      kType == DType::Q8_0_X16 ? kX16Q8BlockBytes : kX16Bytes<kType == DType::Q5_0_X16>;
  const int64_t nb = w.cols / kQK;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  const uint8_t* end = base + row_end * w.row_bytes;
  const X16Distances<kBlockBytes> distances(w, nb);
  for (int64_t r = row_begin; r < row_end; r += kX16Rows) {
    const uint8_t* p = base + r * w.row_bytes;  // the group's first block
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, p += kBlockBytes) {
      const X16Ahead<kPrefetch> ahead(p, end, distances);
      for (size_t off = 0; off < kBlockBytes; off += 64) ahead.fetch(off);
      const __m512i s = x16_block_dot<kType>(p, a.q + b * kQK, a.s32[b]);
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(d, _mm512_set1_ps(a.d[b])), acc);
    }
    _mm512_storeu_ps(y + (r - row_begin), acc);
  }
}

// Q4_K_X16 (quant_formats.h), per super-block of a 16-row group: sub-block
// j's 6-bit scales and mins of the 16 rows as int32 lanes, from its 16 bytes
// sc | (m >> 4) << 6 and the rows' words of min low nibbles (min_nibbles).

inline void q4_k_x16_scales(const uint8_t* block, int j, __m512i min_nibbles, __m512i* sc,
                            __m512i* m) {
  const __m512i packed = _mm512_cvtepu8_epi32(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + kX16Q4KScales + 16 * j)));
  *sc = _mm512_and_si512(packed, _mm512_set1_epi32(63));
  // (nibble mask) ? min_nibbles >> 4j : packed >> 2 (the top bits of m at 4..5, nothing above).
  *m = _mm512_ternarylogic_epi32(_mm512_set1_epi32(15), _mm512_srli_epi32(min_nibbles, 4 * j),
                                 _mm512_srli_epi32(packed, 2), 0xCA);
}

// Q4_K_X16 decode: one vpdpbusd per 4 quant bytes of all 16 rows (a plain
// 64-byte load split into nibbles: sub-blocks 2k and 2k + 1) against 4
// broadcast activation bytes; per sub-block one conversion and FMA by the 16
// rows' scales, and the mins as int16 products with the activations'
// sub-block sums in vpdpwssd. Integer sub-block sums and min sums are exact.
template <bool kPrefetch>
inline void matvec_q4_k_x16_with(const WeightMatrix& w, const QuantActs& a, float* y,
                                 int64_t row_begin, int64_t row_end) {
  constexpr size_t kBlockBytes = kX16Q4KBlockBytes;
  const int64_t nb = w.cols / kQK_K;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  const uint8_t* end = base + row_end * w.row_bytes;
  const X16Distances<kBlockBytes> distances(w, nb);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t r = row_begin; r < row_end; r += kX16Rows) {
    const uint8_t* p = base + r * w.row_bytes;  // the group's first super-block
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, p += kBlockBytes) {
      const X16Ahead<kPrefetch> ahead(p, end, distances);
      for (size_t off = 0; off < kX16Q4KQuants; off += 64) ahead.fetch(off);
      const int8_t* xq = a.q + b * kQK_K;
      const int16_t* xsum = a.s32 + 8 * b;
      const __m512i min_nibbles = _mm512_loadu_si512(p + kX16Q4KMinNibbles);
      __m512 sum = _mm512_setzero_ps();
      __m512i mins = _mm512_setzero_si512();
      for (int k = 0; k < 4; ++k) {
        // Two chains per nibble half, so that the vpdpbusd latency overlaps.
        __m512i s[2][2] = {{_mm512_setzero_si512(), _mm512_setzero_si512()},
                           {_mm512_setzero_si512(), _mm512_setzero_si512()}};
        for (int t = 0; t < 8; ++t) {
          const size_t at = kX16Q4KQuants + 512 * k + 64 * t;
          ahead.fetch(at);
          const __m512i v = _mm512_loadu_si512(p + at);
          int32_t lo4, hi4;
          std::memcpy(&lo4, xq + 64 * k + 4 * t, 4);
          std::memcpy(&hi4, xq + 64 * k + 32 + 4 * t, 4);
          s[0][t & 1] =
              _mm512_dpbusd_epi32(s[0][t & 1], _mm512_and_si512(v, m4), _mm512_set1_epi32(lo4));
          s[1][t & 1] = _mm512_dpbusd_epi32(
              s[1][t & 1], _mm512_and_si512(_mm512_srli_epi16(v, 4), m4), _mm512_set1_epi32(hi4));
        }
        for (int h = 0; h < 2; ++h) {
          const int j = 2 * k + h;
          __m512i sc, m;
          q4_k_x16_scales(p, j, min_nibbles, &sc, &m);
          sum = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s[h][0], s[h][1])),
                                _mm512_cvtepi32_ps(sc), sum);
          // m < 64 in the low word of each lane, x's sub-block sum in the low
          // word of the broadcast: one product per lane.
          mins = _mm512_dpwssd_epi32(mins, m, _mm512_set1_epi32(static_cast<uint16_t>(xsum[j])));
        }
      }
      const __m512 dx = _mm512_set1_ps(a.d[b]);
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      const __m512 dmin =
          _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
      acc = _mm512_fmadd_ps(sum, _mm512_mul_ps(d, dx), acc);
      acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins), _mm512_mul_ps(dmin, dx), acc);
    }
    _mm512_storeu_ps(y + (r - row_begin), acc);
  }
}

// The interleaved kernels as the process's StreamPrefetch mode asks: with
// software prefetching, or under kHardware without any (but Q8_0_X16's L1).
template <DType kType>
inline void matvec_x16(const WeightMatrix& w, const QuantActs& a, float* y, int64_t row_begin,
                       int64_t row_end) {
  // Q8_0_X16 keeps its L1 prefetch (X16Distances: near only, unless kFar): the
  // hardware prefetchers alone fed it 19-21 GB/s on Zen 4, with it 23-25.
  if (kType != DType::Q8_0_X16 && stream_prefetch() == StreamPrefetch::kHardware) {
    matvec_x16_with<kType, false>(w, a, y, row_begin, row_end);
  } else {
    matvec_x16_with<kType, true>(w, a, y, row_begin, row_end);
  }
}
inline void matvec_q4_k_x16(const WeightMatrix& w, const QuantActs& a, float* y, int64_t row_begin,
                            int64_t row_end) {
  if (stream_prefetch() == StreamPrefetch::kHardware) {
    matvec_q4_k_x16_with<false>(w, a, y, row_begin, row_end);
  } else {
    matvec_q4_k_x16_with<true>(w, a, y, row_begin, row_end);
  }
}

// R rows of Q4_K or Q5_K: y += dx * (d * sum_j sc_j * dot_j - dmin * sum_j m_j * xsum_j),
// two sub-blocks per zmm, scales d * dx * sc_j applied in float.
template <bool kQ5, int R>
inline void matvec_k4_zmm(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a,
                          float* y) {
  using Block = std::conditional_t<kQ5, BlockQ5_K, BlockQ4_K>;
  __m512 acc[R];
  __m128 acc_min[R];
  for (int r = 0; r < R; ++r) {
    acc[r] = _mm512_setzero_ps();
    acc_min[r] = _mm_setzero_ps();
  }
  const size_t ahead = prefetch_distance(R * row_bytes);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i lane_words = _mm512_setr_epi32(0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* xq = a.q + b * kQK_K;
    __m512i x[4];
    for (int c = 0; c < 4; ++c) x[c] = _mm512_loadu_si512(xq + 64 * c);
    const float dx = a.d[b];
    const __m128i xs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.s32 + 8 * b));
    // The 6-bit scales and mins of all R rows unpacked at once, row r in lane r.
    __m512i sm_rows = _mm512_setzero_si512();
    if constexpr (R == 4) sm_rows = k4_scales_mins_rows4<Block>(rows, row_bytes, b);
    for (int r = 0; r < R; ++r) {
      const Block* blk = reinterpret_cast<const Block*>(rows + r * row_bytes) + b;
      const char* next = reinterpret_cast<const char*>(blk) + ahead;
      _mm_prefetch(next, _MM_HINT_T0);
      _mm_prefetch(next + 64, _MM_HINT_T0);
      _mm_prefetch(next + 128, _MM_HINT_T0);
      __m128i sm16;
      if constexpr (R == 4) {
        sm16 = _mm512_castsi512_si128(_mm512_permutexvar_epi32(
            _mm512_add_epi32(_mm512_set1_epi32(4 * r), lane_words), sm_rows));
      } else {
        sm16 = k4_scales_mins_vec(blk->scales);
      }
      const __m256 sc = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm16)),
                                      _mm256_set1_ps(f16(blk->d) * dx));
      const __m512 scz = _mm512_castps256_ps512(sc);
      __m512i qh2 = _mm512_setzero_si512();
      if constexpr (kQ5) qh2 = _mm512_broadcast_i64x4(load256(blk->qh));
      for (int c = 0; c < 4; ++c) {
        const __m256i raw = load256(blk->qs + 32 * c);
        __m512i w = _mm512_and_si512(
            _mm512_inserti64x4(_mm512_castsi256_si512(raw), _mm256_srli_epi16(raw, 4), 1), m4);
        if constexpr (kQ5) {
          const __m512i bits =
              _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << (2 * c))),
                                 _mm256_set1_epi8(static_cast<char>(1 << (2 * c + 1))), 1);
          w = _mm512_mask_or_epi32(
              w, 0xFFFF, w,
              _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh2, bits), _mm512_set1_epi8(0x10)));
        }
        const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x[c]);
        const __m512i idx =
            _mm512_inserti64x4(_mm512_set1_epi32(2 * c), _mm256_set1_epi32(2 * c + 1), 1);
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_permutexvar_ps(idx, scz), acc[r]);
      }
      const __m128i mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm16, 8));
      acc_min[r] = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_madd_epi16(mins, xs)),
                                _mm_set1_ps(-f16(blk->dmin) * dx), acc_min[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r] = sum_with_min(acc[r], acc_min[r]);
}

// Prefill tiles: one row x T tokens; the row's unpacked quants and scales are
// computed once per 8 blocks (super-block) and used for all T tokens.

// Q4_0 and Q8_0: two blocks per zmm in x's order, scales dw * dx per lane.
template <bool kQ8, int T>
inline void prefill_32_zmm(const uint8_t* row, int64_t nb, const QuantActs& a, float* y,
                           int64_t y_stride) {
  using Block = std::conditional_t<kQ8, BlockQ8_0, BlockQ4_0>;
  const auto* blocks = reinterpret_cast<const Block*>(row);
  const int64_t nb8 = nb / 8 * 8;
  __m512 acc[T];
  __m256 acc_off[T];
  for (int t = 0; t < T; ++t) {
    acc[t] = _mm512_setzero_ps();
    acc_off[t] = _mm256_setzero_ps();
  }
  const __m512i pair_order = _mm512_set_epi64(7, 6, 3, 2, 5, 4, 1, 0);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const float offset = kQ8 ? -128.0f : -8.0f;
  for (int64_t b = 0; b < nb8; b += 8) {
    __m512i w[4];
    alignas(16) uint16_t dh[8];
    for (int p = 0; p < 4; ++p) {
      const Block* b0 = blocks + b + 2 * p;
      if constexpr (kQ8) {
        const __m512i v =
            _mm512_inserti64x4(_mm512_castsi256_si512(load256(b0[0].qs)), load256(b0[1].qs), 1);
        w[p] = _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
      } else {
        const __m256i raw =
            _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b0[1].qs)),
                             _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0[0].qs)));
        const __m512i both =
            _mm512_inserti64x4(_mm512_castsi256_si512(raw), _mm256_srli_epi16(raw, 4), 1);
        w[p] = _mm512_and_si512(_mm512_permutexvar_epi64(pair_order, both), m4);
      }
      dh[2 * p] = b0[0].d;
      dh[2 * p + 1] = b0[1].d;
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dh)));
    const __m256 dw_off = _mm256_mul_ps(dw, _mm256_set1_ps(offset));
    for (int t = 0; t < T; ++t) {
      const int8_t* xq = a.q + t * a.q_stride + b * kQK;
      const __m512 scale =
          _mm512_zextps256_ps512(_mm256_mul_ps(dw, _mm256_loadu_ps(a.d + t * a.d_stride + b)));
      for (int p = 0; p < 4; ++p) {
        const __m512i s =
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[p], _mm512_loadu_si512(xq + 64 * p));
        const __m512i idx =
            _mm512_inserti64x4(_mm512_set1_epi32(2 * p), _mm256_set1_epi32(2 * p + 1), 1);
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_permutexvar_ps(idx, scale), acc[t]);
      }
      acc_off[t] =
          _mm256_fmadd_ps(dw_off, _mm256_loadu_ps(a.dsum + t * a.d32_stride + b), acc_off[t]);
    }
  }
  float tail[T] = {};
  if (nb8 < nb) {
    QuantActs at = a;
    at.q += nb8 * kQK;
    at.d += nb8;
    at.dsum += nb8;
    using F = std::conditional_t<kQ8, X86Q8_0, X86Q4_0>;
    tile_32<F, 1, T>(row + nb8 * sizeof(Block), 0, nb - nb8, at, tail, 1);
  }
  for (int t = 0; t < T; ++t) {
    y[t * y_stride] = _mm512_reduce_add_ps(acc[t]) + hsum(acc_off[t]) + tail[t];
  }
}

// Q4_K / Q5_K, one row x T tokens.
template <bool kQ5, int T>
inline void prefill_k4_zmm(const uint8_t* row, int64_t nb, const QuantActs& a, float* y,
                           int64_t y_stride) {
  using Block = std::conditional_t<kQ5, BlockQ5_K, BlockQ4_K>;
  __m512 acc[T];
  __m128 acc_min[T];
  for (int t = 0; t < T; ++t) {
    acc[t] = _mm512_setzero_ps();
    acc_min[t] = _mm_setzero_ps();
  }
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t b = 0; b < nb; ++b) {
    const Block* blk = reinterpret_cast<const Block*>(row) + b;
    alignas(16) uint8_t sm[16];
    k4_scales_mins(blk->scales, sm);
    const __m128i sm16 = _mm_load_si128(reinterpret_cast<const __m128i*>(sm));
    const __m256 sc =
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm16)), _mm256_set1_ps(f16(blk->d)));
    const __m128i mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm16, 8));
    const float dmin = f16(blk->dmin);
    __m512i w[4];
    __m512i qh2 = _mm512_setzero_si512();
    if constexpr (kQ5) qh2 = _mm512_broadcast_i64x4(load256(blk->qh));
    for (int c = 0; c < 4; ++c) {
      const __m256i raw = load256(blk->qs + 32 * c);
      w[c] = _mm512_and_si512(
          _mm512_inserti64x4(_mm512_castsi256_si512(raw), _mm256_srli_epi16(raw, 4), 1), m4);
      if constexpr (kQ5) {
        const __m512i bits =
            _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << (2 * c))),
                               _mm256_set1_epi8(static_cast<char>(1 << (2 * c + 1))), 1);
        w[c] = _mm512_or_si512(
            w[c], _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh2, bits), _mm512_set1_epi8(0x10)));
      }
    }
    for (int t = 0; t < T; ++t) {
      const int8_t* xq = a.q + t * a.q_stride + b * kQK_K;
      const float dx = a.d[t * a.d_stride + b];
      const __m512 scz = _mm512_zextps256_ps512(_mm256_mul_ps(sc, _mm256_set1_ps(dx)));
      for (int c = 0; c < 4; ++c) {
        const __m512i s =
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[c], _mm512_loadu_si512(xq + 64 * c));
        const __m512i idx =
            _mm512_inserti64x4(_mm512_set1_epi32(2 * c), _mm256_set1_epi32(2 * c + 1), 1);
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_permutexvar_ps(idx, scz), acc[t]);
      }
      const __m128i xs =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.s32 + t * a.d32_stride + 8 * b));
      acc_min[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_madd_epi16(mins, xs)), _mm_set1_ps(-dmin * dx),
                                acc_min[t]);
    }
  }
  for (int t = 0; t < T; ++t) y[t * y_stride] = sum_with_min(acc[t], acc_min[t]);
}
#endif  // EDGELM_QUANT_VNNI

#if !EDGELM_QUANT_VNNI
// ---- AVX2 decode for the 4/5-bit 32-value formats: two blocks per ymm ----
// tile_32 spends most of its ~17 instructions per block and row on the block
// scale and the offset. Here the quants of blocks b, b + 1 share one ymm (low
// nibbles = values 0..15 of each block, high nibbles = values 16..31, block b
// in the low lane), so the two blocks' products are summed in int16 (at most
// 2 * 2 * 31 * 128 < 2^15) and need one madd, one conversion and one fmadd
// with the scale vector (d_b dx_b x 4, d_b+1 dx_b+1 x 4). The four block scales
// of a group are converted with one vcvtph2ps, and the offset (or min) term is
// summed per group, d * dsum in the low half of the row's accumulator.

// The f16 at byte `field` of four consecutive blocks of kBytes bytes.
template <size_t kBytes>
inline __m128 f16_x4(const uint8_t* g, size_t field) {
  uint16_t h[4];
  for (int k = 0; k < 4; ++k) std::memcpy(&h[k], g + k * kBytes + field, 2);
  __m128i v = _mm_cvtsi32_si128(h[0]);
  v = _mm_insert_epi16(v, h[1], 1);
  v = _mm_insert_epi16(v, h[2], 2);
  v = _mm_insert_epi16(v, h[3], 3);
  return _mm_cvtph_ps(v);
}

// Blocks p[0], p[1]: lo = values 0..15 of each, hi = values 16..31 (p[0] in the low lane).
template <typename F>
inline void unpack_pair(const typename F::Block* p, __m256i* lo, __m256i* hi) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i v = _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p[0].qs))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[1].qs)), 1);
  *lo = _mm256_and_si256(v, m4);
  *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
  if constexpr (std::is_same_v<typename F::Block, BlockQ5_0> ||
                std::is_same_v<typename F::Block, BlockQ5_1>) {
    // qh and the first 12 bytes of qs, p[0] in the low lane (within the block).
    const __m256i q = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p[0].qh))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[1].qh)), 1);
    // Bytes 0..3 of a lane: qh, 4..7: qh << 4, so bits 0..3 of qh byte m are
    // bits 4..7 of byte 4 + m and every tested bit is one of bits 4..7.
    const __m256i src = _mm256_unpacklo_epi32(q, _mm256_slli_epi32(q, 4));
    // Byte j takes (bits j % 8 < 4 from the shifted copy) the byte holding
    // the bit of value j (lo) or j + 16 (hi), and tests bit 4 + j % 4.
    const __m256i pick_lo = _mm256_setr_epi64x(0x0000000004040404, 0x0101010105050505,
                                               0x0000000004040404, 0x0101010105050505);
    const __m256i pick_hi = _mm256_setr_epi64x(0x0202020206060606, 0x0303030307070707,
                                               0x0202020206060606, 0x0303030307070707);
    const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201080402010));
    // (byte & bit) is 0 or 16..128: min with 16 gives the 16 to or in.
    const __m256i h16 = _mm256_set1_epi8(0x10);
    const __m256i set_lo =
        _mm256_min_epu8(_mm256_and_si256(_mm256_shuffle_epi8(src, pick_lo), bit), h16);
    const __m256i set_hi =
        _mm256_min_epu8(_mm256_and_si256(_mm256_shuffle_epi8(src, pick_hi), bit), h16);
    *lo = _mm256_or_si256(*lo, set_lo);
    *hi = _mm256_or_si256(*hi, set_hi);
  }
}

template <typename F, int R>
inline void matvec_32_pairs(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a,
                            float* y) {
  using Block = typename F::Block;
  constexpr size_t kBytes = sizeof(Block);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const size_t ahead = prefetch_distance(R * row_bytes);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i spread01 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  const __m256i spread23 = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    const int8_t* xq = a.q + b * kQK;
    const __m256i x0 = load256(xq), x1 = load256(xq + 32);
    const __m256i x2 = load256(xq + 64), x3 = load256(xq + 96);
    const __m256i xlo[2] = {_mm256_permute2x128_si256(x0, x1, 0x20),
                            _mm256_permute2x128_si256(x2, x3, 0x20)};
    const __m256i xhi[2] = {_mm256_permute2x128_si256(x0, x1, 0x31),
                            _mm256_permute2x128_si256(x2, x3, 0x31)};
    const __m128 dx = _mm_loadu_ps(a.d + b);
    __m128 dsum = _mm_loadu_ps(a.dsum + b);
    if constexpr (F::kOffset != 0) {
      dsum = _mm_mul_ps(dsum, _mm_set1_ps(-static_cast<float>(F::kOffset)));
    }
    for (int r = 0; r < R; ++r) {
      const uint8_t* g = rows + r * row_bytes + b * kBytes;
      _mm_prefetch(reinterpret_cast<const char*>(g) + ahead, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(g) + ahead + 64, _MM_HINT_T0);
      const __m128 dw = f16_x4<kBytes>(g, offsetof(Block, d));
      const __m256 scale = _mm256_castps128_ps256(_mm_mul_ps(dw, dx));
      const __m256 sc[2] = {_mm256_permutevar8x32_ps(scale, spread01),
                            _mm256_permutevar8x32_ps(scale, spread23)};
      // Offset: -offset * d * dsum; min: m * dsum (upper half: 0 * 0).
      __m128 corr;
      if constexpr (F::kMin) {
        corr = f16_x4<kBytes>(g, offsetof(Block, m));
      } else {
        corr = dw;
      }
      acc[r] = _mm256_fmadd_ps(_mm256_zextps128_ps256(corr), _mm256_zextps128_ps256(dsum), acc[r]);
      const Block* blk = reinterpret_cast<const Block*>(g);
      for (int p = 0; p < 2; ++p) {
        __m256i lo, hi;
        unpack_pair<F>(blk + 2 * p, &lo, &hi);
        const __m256i s16 =
            _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo[p]), _mm256_maddubs_epi16(hi, xhi[p]));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones)), sc[p], acc[r]);
      }
    }
  }
  float tail[R] = {};
  if (b < nb) {
    QuantActs at = a;
    at.q += b * kQK;
    at.d += b;
    at.dsum += b;
    tile_32<F, R, 1>(rows + b * kBytes, row_bytes, nb - b, at, tail, 0);
  }
  for (int r = 0; r < R; ++r) y[r] = hsum(acc[r]) + tail[r];
}

// ---- AVX2 decode for Q4_K / Q5_K: two sub-blocks per madd ----
// tile_k4 spends one madd, one add and a scalar scale broadcast per 32-value
// sub-block. Here the 16-byte halves of chunks 2p and 2p + 1 share one ymm, so
// its low nibbles hold sub-block 4p (low lane) and 4p + 2 (high lane) and its
// high nibbles 4p + 1 and 4p + 3; the maddubs products of the two halves are
// summed in int16 (at most 2 * 2 * 31 * 128 < 2^15) and one madd with the
// scales (sc_j x 8, sc_j+2 x 8 as int16: one pshufb of the unpacked scales)
// serves two sub-blocks. Each int32 lane sums at most 4 * 2 * 15872 * 63 < 2^24,
// so the one conversion per super-block is exact. The activations are
// rearranged to match once per super-block for all R rows.
template <bool kQ5, int R>
inline void matvec_k4_pairs(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a,
                            float* y) {
  using Block = std::conditional_t<kQ5, BlockQ5_K, BlockQ4_K>;
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const size_t ahead = prefetch_distance(R * row_bytes);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  // int16 sc_j in the low lane and sc_j+2 in the high lane, j = 0, 1, 4, 5.
  const auto pick = [](int j) {
    const int64_t lo = static_cast<int64_t>(0x8000800080008000ULL) | (0x0001000100010001LL * j);
    const int64_t hi =
        static_cast<int64_t>(0x8000800080008000ULL) | (0x0001000100010001LL * (j + 2));
    return _mm256_setr_epi64x(lo, lo, hi, hi);
  };
  const __m256i picks[4] = {pick(0), pick(1), pick(4), pick(5)};
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* xq = a.q + b * kQK_K;
    // xs[4p + k]: k = 0, 1: values 0..15, 16..31 of sub-blocks 4p | 4p + 2;
    // k = 2, 3: the same of 4p + 1 | 4p + 3.
    __m256i xs[8];
    for (int p = 0; p < 2; ++p) {
      const __m256i l0 = load256(xq + 128 * p), l1 = load256(xq + 128 * p + 32);
      const __m256i l2 = load256(xq + 128 * p + 64), l3 = load256(xq + 128 * p + 96);
      xs[4 * p] = _mm256_permute2x128_si256(l0, l2, 0x20);
      xs[4 * p + 1] = _mm256_permute2x128_si256(l0, l2, 0x31);
      xs[4 * p + 2] = _mm256_permute2x128_si256(l1, l3, 0x20);
      xs[4 * p + 3] = _mm256_permute2x128_si256(l1, l3, 0x31);
    }
    const __m128i xsum = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.s32 + 8 * b));
    const __m128 dx = _mm_setr_ps(a.d[b], -a.d[b], 0, 0);
    for (int r = 0; r < R; ++r) {
      const Block* blk = reinterpret_cast<const Block*>(rows + r * row_bytes) + b;
      if constexpr (R > 1) {
        const char* next = reinterpret_cast<const char*>(blk) + ahead;
        _mm_prefetch(next, _MM_HINT_T0);
        _mm_prefetch(next + 64, _MM_HINT_T0);
        if constexpr (sizeof(Block) > 128) _mm_prefetch(next + 128, _MM_HINT_T0);
      }
      const __m128i sm = k4_scales_mins_vec(blk->scales);
      const __m256i sc = _mm256_broadcastsi128_si256(sm);
      __m256i qh[2];
      if constexpr (kQ5) {
        qh[0] =
            _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->qh)));
        qh[1] = _mm256_broadcastsi128_si256(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->qh + 16)));
      }
      __m256i isum = _mm256_setzero_si256();
      for (int p = 0; p < 2; ++p) {
        const uint8_t* q = blk->qs + 64 * p;
        __m256i v[2];
        for (int k = 0; k < 2; ++k) {
          v[k] = _mm256_inserti128_si256(
              _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * k))),
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 32 + 16 * k)), 1);
        }
        __m256i lo[2], hi[2];
        for (int k = 0; k < 2; ++k) {
          lo[k] = _mm256_and_si256(v[k], m4);
          hi[k] = _mm256_and_si256(_mm256_srli_epi16(v[k], 4), m4);
          if constexpr (kQ5) {
            // Bit s of qh byte l (sub-block s, value l) moved to bit 4 of the
            // byte: s = 4p, 4p + 2 (lo) and 4p + 1, 4p + 3 (hi) per lane.
            const __m256i h16 = _mm256_set1_epi8(0x10);
            __m256i h_lo, h_hi;
            if (p == 0) {
              h_lo = _mm256_sllv_epi32(qh[k], _mm256_setr_epi32(4, 4, 4, 4, 2, 2, 2, 2));
              h_hi = _mm256_sllv_epi32(qh[k], _mm256_setr_epi32(3, 3, 3, 3, 1, 1, 1, 1));
            } else {
              h_lo = _mm256_srlv_epi32(qh[k], _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2));
              h_hi = _mm256_srlv_epi32(qh[k], _mm256_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3));
            }
            lo[k] = _mm256_or_si256(lo[k], _mm256_and_si256(h_lo, h16));
            hi[k] = _mm256_or_si256(hi[k], _mm256_and_si256(h_hi, h16));
          }
        }
        const __m256i s_lo = _mm256_add_epi16(_mm256_maddubs_epi16(lo[0], xs[4 * p]),
                                              _mm256_maddubs_epi16(lo[1], xs[4 * p + 1]));
        const __m256i s_hi = _mm256_add_epi16(_mm256_maddubs_epi16(hi[0], xs[4 * p + 2]),
                                              _mm256_maddubs_epi16(hi[1], xs[4 * p + 3]));
        isum =
            _mm256_add_epi32(isum, _mm256_madd_epi16(s_lo, _mm256_shuffle_epi8(sc, picks[2 * p])));
        isum = _mm256_add_epi32(isum,
                                _mm256_madd_epi16(s_hi, _mm256_shuffle_epi8(sc, picks[2 * p + 1])));
      }
      // (d, dmin) -> (d * dx, -dmin * dx).
      uint32_t dd;
      std::memcpy(&dd, blk, 4);
      const __m128 f = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dd))), dx);
      const __m128i mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
      const __m256 msum = _mm256_zextps128_ps256(_mm_cvtepi32_ps(_mm_madd_epi16(mins, xsum)));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_broadcastss_ps(f), acc[r]);
      acc[r] = _mm256_fmadd_ps(msum, _mm256_broadcastss_ps(_mm_movehdup_ps(f)), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r] = hsum(acc[r]);
}
#endif  // !EDGELM_QUANT_VNNI

// ---- drivers shared by all formats ----

struct Kind32 {};
struct KindK4 {};
struct KindQ6K {};

template <typename F, typename Kind, int R, int T>
inline void tile(const uint8_t* rows, size_t row_bytes, int64_t cols, const QuantActs& a, float* y,
                 int64_t y_stride) {
  if constexpr (std::is_same_v<Kind, Kind32>) {
    tile_32<F, R, T>(rows, row_bytes, cols / kQK, a, y, y_stride);
  } else if constexpr (std::is_same_v<Kind, KindK4>) {
    tile_k4<F, R, T>(rows, row_bytes, cols / kQK_K, a, y, y_stride);
  } else {
    tile_q6_k<R, T>(rows, row_bytes, cols / kQK_K, a, y, y_stride);
  }
}

template <typename F, typename Kind>
void quant_matvec(const WeightMatrix& w, const QuantActs& a, float* y, int64_t row_begin,
                  int64_t row_end) {
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
#if EDGELM_QUANT_VNNI
  const bool shuffle_light = avx512_decode_variant() == Avx512Decode::kShuffleLight;
  // Unless the weights are in the last-level cache (StreamPrefetch::kNear) the
  // Q8_0 and Q6_K kernels also prefetch into L2 the same column of the rows
  // kFarAhead bytes ahead, while such rows remain (0: not at all). Their four
  // row streams need it even where the hardware follows the interleaved
  // kernels' one stream (kHardware; Zen 4: 2x faster from DRAM with it).
  const size_t far_bytes = stream_prefetch() != StreamPrefetch::kNear
                               ? prefetch_distance(4 * w.row_bytes, kFarAhead)
                               : 0;
#endif
  int64_t r = row_begin;
  for (; r + 4 <= row_end; r += 4) {
    const uint8_t* rows = base + r * w.row_bytes;
    float* yr = y + (r - row_begin);
#if EDGELM_QUANT_VNNI
    const size_t far = static_cast<size_t>(row_end - r) * w.row_bytes >= far_bytes + 4 * w.row_bytes
                           ? far_bytes
                           : 0;
#endif
#if EDGELM_QUANT_VNNI
    if constexpr (std::is_same_v<F, X86Q8_0>) {
      if (shuffle_light) {
        matvec_q8_0_lanes<4>(rows, w.row_bytes, w.cols / kQK, a, yr, far);
        continue;
      }
    }
    if constexpr (std::is_same_v<F, X86Q4_0> || std::is_same_v<F, X86Q4_1> ||
                  std::is_same_v<F, X86Q5_0> || std::is_same_v<F, X86Q5_1>) {
      if (shuffle_light) {
        matvec_32_lanes<F, 4>(rows, w.row_bytes, w.cols / kQK, a, yr);
      } else {
        matvec_32_zmm<F, 4>(rows, w.row_bytes, w.cols / kQK, a, yr);
      }
      continue;
    } else if constexpr (std::is_same_v<F, X86Q4_K> && std::is_same_v<Kind, KindK4>) {
      if (shuffle_light) {
        matvec_q4_k_lanes(rows, w.row_bytes, w.cols / kQK_K, a, yr);
      } else {
        matvec_k4_zmm<false, 4>(rows, w.row_bytes, w.cols / kQK_K, a, yr);
      }
      continue;
    } else if constexpr (std::is_same_v<F, X86Q5_K>) {
      matvec_k4_zmm<true, 4>(rows, w.row_bytes, w.cols / kQK_K, a, yr);
      continue;
    } else if constexpr (std::is_same_v<Kind, KindQ6K>) {
      if (shuffle_light) {
        matvec_q6_k_lanes(rows, w.row_bytes, w.cols / kQK_K, a, yr, far);
        continue;
      }
    }
#else
    if constexpr (std::is_same_v<F, X86Q4_0> || std::is_same_v<F, X86Q4_1> ||
                  std::is_same_v<F, X86Q5_0> || std::is_same_v<F, X86Q5_1>) {
      matvec_32_pairs<F, 4>(rows, w.row_bytes, w.cols / kQK, a, yr);
      continue;
    } else if constexpr (std::is_same_v<F, X86Q4_K> && std::is_same_v<Kind, KindK4>) {
      matvec_k4_pairs<false, 4>(rows, w.row_bytes, w.cols / kQK_K, a, yr);
      continue;
    } else if constexpr (std::is_same_v<F, X86Q5_K>) {
      matvec_k4_pairs<true, 4>(rows, w.row_bytes, w.cols / kQK_K, a, yr);
      continue;
    }
#endif
    tile<F, Kind, 4, 1>(rows, w.row_bytes, w.cols, a, yr, 0);
  }
  for (; r < row_end; ++r) {
    tile<F, Kind, 1, 1>(base + r * w.row_bytes, w.row_bytes, w.cols, a, y + (r - row_begin), 0);
  }
}

// Prefill: one row at a time (its blocks stay in L1) against tiles of
// kPrefillTokens tokens, so each block is unpacked once per tile.
template <typename F, typename Kind>
void quant_matmul(const WeightMatrix& w, const QuantActs& a, int64_t n, float* y, int64_t y_stride,
                  int64_t row_begin, int64_t row_end) {
  constexpr int kTokens = EDGELM_QUANT_PREFILL_TOKENS;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = base + r * w.row_bytes;
    int64_t t = 0;
    for (; t + kTokens <= n; t += kTokens) {
      const QuantActs at = acts_from_token(a, t);
      float* yt = y + t * y_stride + r;
#if EDGELM_QUANT_VNNI
      if constexpr (std::is_same_v<F, X86Q4_0> || std::is_same_v<F, X86Q8_0>) {
        prefill_32_zmm<std::is_same_v<F, X86Q8_0>, kTokens>(row, w.cols / kQK, at, yt, y_stride);
        continue;
      } else if constexpr (std::is_same_v<F, X86Q4_K> && std::is_same_v<Kind, KindK4>) {
        prefill_k4_zmm<false, kTokens>(row, w.cols / kQK_K, at, yt, y_stride);
        continue;
      } else if constexpr (std::is_same_v<F, X86Q5_K>) {
        prefill_k4_zmm<true, kTokens>(row, w.cols / kQK_K, at, yt, y_stride);
        continue;
      }
#endif
      tile<F, Kind, 1, kTokens>(row, w.row_bytes, w.cols, at, yt, y_stride);
    }
    for (; t < n; ++t) {
      const QuantActs at = acts_from_token(a, t);
      tile<F, Kind, 1, 1>(row, w.row_bytes, w.cols, at, y + t * y_stride + r, y_stride);
    }
  }
}

template <typename F, typename Kind>
void set_quant(IsaKernels* table, DType type) {
  TypeKernels& k = table->types[static_cast<uint32_t>(type)];
  k.quant_matvec = quant_matvec<F, Kind>;
  k.quant_matmul = quant_matmul<F, Kind>;
}

inline void register_quant_x86(IsaKernels* table) {
  set_quant<X86Q4_0, Kind32>(table, DType::Q4_0);
#if EDGELM_QUANT_VNNI
  // Prefill of the interleaved layouts is the GEMM (matmul_quant_gemm_x86.h); quant_matmul
  // (used below its token count) stays the generic one, which the resolved
  // table takes from the scalar entry.
  table->types[slot(DType::Q4_0_X16)].quant_matvec = matvec_x16<DType::Q4_0_X16>;
  table->types[slot(DType::Q5_0_X16)].quant_matvec = matvec_x16<DType::Q5_0_X16>;
  table->types[slot(DType::Q4_K_X16)].quant_matvec = matvec_q4_k_x16;
  table->types[slot(DType::Q8_0_X16)].quant_matvec = matvec_x16<DType::Q8_0_X16>;
#endif
  set_quant<X86Q4_1, Kind32>(table, DType::Q4_1);
  set_quant<X86Q5_0, Kind32>(table, DType::Q5_0);
  set_quant<X86Q5_1, Kind32>(table, DType::Q5_1);
  set_quant<X86Q8_0, Kind32>(table, DType::Q8_0);
  set_quant<X86Q4_K, KindK4>(table, DType::Q4_K);
  set_quant<X86Q5_K, KindK4>(table, DType::Q5_K);
  set_quant<X86Q4_K, KindQ6K>(table, DType::Q6_K);
}

}  // namespace
}  // namespace edgelm::kernels_internal

#pragma GCC diagnostic pop
