// Prefill GEMM for quantized weights on AVX2 without VNNI, included by
// matmul_quant_avx2.cc after matmul_quant_x86.h (same rules: everything is
// file-local, compiled with that file's flags). The design follows
// matmul_quant_gemm_x86.h: 32 weight rows are unpacked once per call into
// scratch panels whose 32-bit lanes hold 4 consecutive quants of 8 rows,
//
//   panel quads:  [block][quad of the block][8 rows][4 bytes]
//   block words:  [block][word][8 rows]   per-block scalars (see the formats)
//   group words:  [group][word][8 rows]   per-super-block scalars (K-quants)
//
// so that one maddubs of a panel vector with 4 broadcast activation bytes
// advances 8 rows, and the scalar work per block is shared by 8 rows.
//
// AVX2 has no vpdpbusd: maddubs multiplies u8 x s8 and adds pairs into int16
// with saturation, then madd_epi16 adds the pairs into int32. Activations are
// in [-127, 127], so the int16 sums stay exact while
//   (quads summed) * 2 * (largest unsigned quant) * 127 < 2^15,
// which lets 4-bit weights sum a whole 32-value block in int16 before the one
// madd (kQuadsPerSum). For K-quants that madd multiplies by the sub-block's
// integer scale instead of 1, so a super-block is summed exactly in int32 and
// converted to float once.
//
// Q8_0 (quants -128..127) uses the sign trick: |w| as the unsigned operand and
// sign(x, w) as the signed one, one maddubs per madd.
//
// Integer block dots are exact; only the order of the float sums differs from
// the scalar reference.
#pragma once

#include <algorithm>
#include <bit>

#if EDGELM_QUANT_VNNI
#error "matmul_quant_gemm_avx2.h is the AVX2 GEMM; VNNI uses matmul_quant_gemm_x86.h"
#endif

namespace edgelm::kernels_internal {
namespace {

constexpr int kPanelRows = 8;                         // rows per panel (int32 lanes of a ymm)
constexpr int kGroupPanels = kGemmRows / kPanelRows;  // panels per repacked row group
static_assert(kGemmRows % kPanelRows == 0);

// Largest power of two n <= quads with n * 2 * max_quant * 127 < 2^15: quads
// whose maddubs results can be summed in int16 before one madd.
constexpr int quads_per_sum(int max_quant, int quads) {
  int n = 1;
  while (2 * n <= quads && 2 * n * 2 * max_quant * 127 < 32768) n *= 2;
  return n;
}

// Per format: kGroup values are unpacked at once (a block pair or a
// super-block); kB values share one scale (the GEMM's block). unpack() writes
// kGroup quants in x's order, kBlockWords 32-bit words per block and
// kGroupWords per group.

// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0. Block words: [0] d (float), [1] m (float, kMin).
template <typename F, int kMaxQuant>
struct Avx2Gemm32 {
  using Block = typename F::Block;
  static constexpr bool kKQuant = false;
  static constexpr int kGroup = 64, kB = 32, kBlockWords = F::kMin ? 2 : 1, kGroupWords = 0;
  static constexpr int kGroupBytes = 2 * sizeof(Block);
  static constexpr int kOffset = F::kOffset;  // stored quant = value quant + kOffset
  static constexpr bool kMin = F::kMin;
  static constexpr bool kSigned = F::kSigned;
  static constexpr int kQuadsPerSum = quads_per_sum(kMaxQuant, kB / 4);
  static constexpr int kUnroll = kQuadsPerSum < 4 ? kQuadsPerSum : 4;  // measured
  static void unpack(const uint8_t* row, int64_t g, int present, uint8_t* out, uint32_t* words,
                     uint32_t*) {
    for (int j = 0; j < 2; ++j) {
      uint32_t* w = words + j * kBlockWords;
      if (j >= present) {  // odd block count: the missing block is zero
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * j), _mm256_setzero_si256());
        for (int k = 0; k < kBlockWords; ++k) w[k] = 0;
        continue;
      }
      const Block* blk = reinterpret_cast<const Block*>(row) + 2 * g + j;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * j), F::unpack(blk));
      w[0] = std::bit_cast<uint32_t>(f16(blk->d));
      if constexpr (kMin) w[1] = std::bit_cast<uint32_t>(F::min(blk));
    }
  }
};

// An int16 pair (lo, hi) as one 32-bit lane, the madd_epi16 operand.
inline uint32_t int16_pair(int lo, int hi) {
  return static_cast<uint16_t>(lo) | static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16;
}

// Q4_K / Q5_K: sub-blocks of 32, value = d*sc*q - dmin*m.
// Block words: [0] (sc, sc). Group words: [0] d, [1] -dmin (floats),
// [2 + k] (m_2k, m_2k+1) for k < 4.
template <typename F, int kMaxQuant>
struct Avx2GemmK4 {
  static constexpr bool kKQuant = true;
  static constexpr int kGroup = 256, kB = 32, kBlockWords = 1, kGroupWords = 6;
  static constexpr int kGroupBytes = sizeof(typename F::Block);
  static constexpr int kOffset = 0;
  static constexpr bool kMin = true;
  static constexpr bool kSigned = false;
  static constexpr int kQuadsPerSum = quads_per_sum(kMaxQuant, kB / 4);
  // Measured: 4 for Q4_K; Q5_K's int32 sums of the super-block leave
  // registers for 2 (4 spills).
  static constexpr int kUnroll = kQuadsPerSum == 8 ? 4 : 2;
  static void unpack(const uint8_t* row, int64_t g, int, uint8_t* out, uint32_t* words,
                     uint32_t* group_words) {
    const auto* blk = reinterpret_cast<const typename F::Block*>(row) + g;
    alignas(16) uint8_t sm[16];
    k4_scales_mins(blk->scales, sm);
    const typename F::Unpacked u(blk);
    for (int c = 0; c < 4; ++c) {
      __m256i lo, hi;
      u.chunk(c, &lo, &hi);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * c), lo);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * c + 32), hi);
    }
    for (int j = 0; j < 8; ++j) words[j] = int16_pair(sm[j], sm[j]);
    group_words[0] = std::bit_cast<uint32_t>(f16(blk->d));
    group_words[1] = std::bit_cast<uint32_t>(-f16(blk->dmin));
    for (int k = 0; k < 4; ++k) group_words[2 + k] = int16_pair(sm[8 + 2 * k], sm[9 + 2 * k]);
  }
};

// Q6_K: sub-blocks of 16, value = d*sc*(q - 32), sc signed.
// Block words: [0] (sc, sc). Group words: [0] d (float), [1 + k] (sc_2k, sc_2k+1)
// for k < 8 (the -32 offset times x's sums of 16).
struct Avx2GemmQ6K {
  static constexpr bool kKQuant = true;
  static constexpr int kGroup = 256, kB = 16, kBlockWords = 1, kGroupWords = 9;
  static constexpr int kGroupBytes = sizeof(BlockQ6_K);
  static constexpr int kOffset = 32;
  static constexpr bool kMin = false;
  static constexpr bool kSigned = false;
  static constexpr int kQuadsPerSum = quads_per_sum(63, kB / 4);
  static constexpr int kUnroll = kQuadsPerSum;
  static void unpack(const uint8_t* row, int64_t g, int, uint8_t* out, uint32_t* words,
                     uint32_t* group_words) {
    const auto* blk = reinterpret_cast<const BlockQ6_K*>(row) + g;
    for (int h = 0; h < 2; ++h) {
      __m256i q[4];
      q6_k_half(blk, h, q);
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 128 * h + 32 * k), q[k]);
      }
    }
    for (int j = 0; j < 16; ++j) words[j] = int16_pair(blk->scales[j], blk->scales[j]);
    group_words[0] = std::bit_cast<uint32_t>(f16(blk->d));
    for (int k = 0; k < 8; ++k) {
      group_words[1 + k] = int16_pair(blk->scales[2 * k], blk->scales[2 * k + 1]);
    }
  }
};

// Where one panel's parts live in the scratch buffer.
struct Avx2Panel {
  const uint8_t* quads;
  const uint32_t* block_words;
  const uint32_t* group_words;
};

// Panels hold whole 64-value groups (a row's last group may be half a group).
inline int64_t padded_cols_avx2(int64_t cols) {
  return (cols + 63) / 64 * 64;
}

template <typename G>
uint8_t* panel_base(uint8_t* scratch, int64_t cols, int p, uint32_t** block_words,
                    uint32_t** group_words) {
  // Per value column of a panel: 8 quant bytes plus at most 4 bytes of words,
  // so four panels fit gemm_scratch_bytes() (12 bytes per 8 rows per column).
  static_assert(G::kBlockWords * 32 / G::kB + (G::kGroupWords * 32 + G::kGroup - 1) / G::kGroup <=
                4);
  const int64_t padded = padded_cols_avx2(cols);
  const size_t quad_bytes = static_cast<size_t>(padded) * kPanelRows;
  const size_t block_bytes = static_cast<size_t>(padded / G::kB) * G::kBlockWords * 32;
  const size_t group_bytes =
      static_cast<size_t>((padded + G::kGroup - 1) / G::kGroup) * G::kGroupWords * 32;
  uint8_t* base = scratch + p * (quad_bytes + block_bytes + group_bytes);
  *block_words = reinterpret_cast<uint32_t*>(base + quad_bytes);
  *group_words = reinterpret_cast<uint32_t*>(base + quad_bytes + block_bytes);
  return base;
}

// In-register transpose of an 8 x 8 matrix of 32-bit values: v[k] becomes column k.
inline void transpose_8x8(__m256i v[8]) {
  __m256i t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);
  }
  // u[4h + c] = columns c and 4 + c of rows 4h..4h+3 (one per 128-bit lane).
  __m256i u[8];
  for (int h = 0; h < 8; h += 4) {
    u[h] = _mm256_unpacklo_epi64(t[h], t[h + 2]);
    u[h + 1] = _mm256_unpackhi_epi64(t[h], t[h + 2]);
    u[h + 2] = _mm256_unpacklo_epi64(t[h + 1], t[h + 3]);
    u[h + 3] = _mm256_unpackhi_epi64(t[h + 1], t[h + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    v[c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x20);
    v[4 + c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x31);
  }
}

// Unpacks rows [r0, r0 + valid) into one panel (rows past `valid` are zero).
template <typename G>
void repack_panel_avx2(const WeightMatrix& w, int64_t r0, int valid, uint8_t* quads_out,
                       uint32_t* block_out, uint32_t* group_out) {
  constexpr int kBlocks = G::kGroup / G::kB;
  constexpr int kAheadGroups = 512 / G::kGroupBytes + 1;
  const int64_t blocks = w.cols / G::kB;
  const int64_t groups = (w.cols + G::kGroup - 1) / G::kGroup;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  alignas(32) uint8_t tmp[kPanelRows][G::kGroup];
  uint32_t words[kPanelRows][kBlocks * G::kBlockWords];
  uint32_t group_words[kPanelRows][G::kGroupWords > 0 ? G::kGroupWords : 1];
  for (int r = valid; r < kPanelRows; ++r) {
    std::memset(tmp[r], 0, sizeof(tmp[r]));
    std::memset(words[r], 0, sizeof(words[r]));
    std::memset(group_words[r], 0, sizeof(group_words[r]));
  }
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t left = blocks - g * kBlocks;
    const int present = left < kBlocks ? static_cast<int>(left) : kBlocks;
    for (int r = 0; r < valid; ++r) {
      const uint8_t* row = base + (r0 + r) * w.row_bytes;
      // Eight rows are eight streams per panel: fetch each row's bytes a few
      // groups ahead rather than rely on the hardware prefetcher.
      if (g + kAheadGroups < groups) {
        const uint8_t* next = row + (g + kAheadGroups) * G::kGroupBytes;
        for (int off = 0; off < G::kGroupBytes; off += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(next + off), _MM_HINT_T0);
        }
      }
      G::unpack(row, g, present, tmp[r], words[r], group_words[r]);
    }
    uint8_t* quads = quads_out + g * G::kGroup * kPanelRows;
    for (int c = 0; c < G::kGroup / 32; ++c) {
      __m256i v[kPanelRows];
      for (int r = 0; r < kPanelRows; ++r)
        v[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(&tmp[r][32 * c]));
      transpose_8x8(v);
      for (int k = 0; k < 8; ++k) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(quads + (8 * c + k) * 32), v[k]);
      }
    }
    for (int k = 0; k < kBlocks * G::kBlockWords; ++k) {
      uint32_t* out = block_out + (g * kBlocks * G::kBlockWords + k) * kPanelRows;
      for (int r = 0; r < kPanelRows; ++r) out[r] = words[r][k];
    }
    for (int k = 0; k < G::kGroupWords; ++k) {
      uint32_t* out = group_out + (g * G::kGroupWords + k) * kPanelRows;
      for (int r = 0; r < kPanelRows; ++r) out[r] = group_words[r][k];
    }
  }
}

inline __m256i load_words(const uint32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
inline __m256 load_float_words(const uint32_t* p) {
  return _mm256_castsi256_ps(load_words(p));
}

// s16[p][t] += maddubs of quad q of block b (int16 lanes, exact).
template <typename G, int P, int T>
inline void quad_products(const Avx2Panel* panels, int64_t b, int q, const QuantActs& a,
                          __m256i (&s16)[P][T]) {
  constexpr int kQuads = G::kB / 4;
  __m256i wq[P], wabs[P];
  for (int p = 0; p < P; ++p) {
    wq[p] = load256(panels[p].quads + (b * kQuads + q) * 32);
    if constexpr (G::kSigned) wabs[p] = _mm256_abs_epi8(wq[p]);
  }
  for (int t = 0; t < T; ++t) {
    int32_t x4;
    std::memcpy(&x4, a.q + t * a.q_stride + b * G::kB + 4 * q, 4);
    const __m256i xb = _mm256_set1_epi32(x4);
    for (int p = 0; p < P; ++p) {
      __m256i prod;
      if constexpr (G::kSigned) {
        prod = _mm256_maddubs_epi16(wabs[p], _mm256_sign_epi8(xb, wq[p]));
      } else {
        prod = _mm256_maddubs_epi16(wq[p], xb);
      }
      s16[p][t] = _mm256_add_epi16(s16[p][t], prod);
    }
  }
}

// isum[p][t] += integer dot of block b for P panels x T tokens, each int16
// run of kQuadsPerSum quads multiplied into int32 by `mult` (1, or the
// K-quants' sub-block scale pair).
template <typename G, int P, int T>
inline void block_dots_avx2(const Avx2Panel* panels, int64_t b, const QuantActs& a,
                            __m256i (&isum)[P][T]) {
  constexpr int kQuads = G::kB / 4;
  constexpr int kRun = G::kQuadsPerSum;
  static_assert(kQuads % kRun == 0);
  for (int q0 = 0; q0 < kQuads; q0 += kRun) {
    __m256i s16[P][T];
    for (int p = 0; p < P; ++p) {
      for (int t = 0; t < T; ++t) s16[p][t] = _mm256_setzero_si256();
    }
    // Unrolled 4 or 2 times (kUnroll, measured): fully unrolled, GCC hoists
    // the maddubs of all quads and runs out of registers.
    if constexpr (G::kUnroll >= 4) {
#pragma GCC unroll 4
      for (int q = q0; q < q0 + kRun; ++q) quad_products<G, P, T>(panels, b, q, a, s16);
    } else {
#pragma GCC unroll 2
      for (int q = q0; q < q0 + kRun; ++q) quad_products<G, P, T>(panels, b, q, a, s16);
    }
    for (int p = 0; p < P; ++p) {
      __m256i mult = _mm256_set1_epi16(1);
      if constexpr (G::kKQuant) mult = load_words(panels[p].block_words + b * kPanelRows);
      for (int t = 0; t < T; ++t) {
        const __m256i dot = _mm256_madd_epi16(s16[p][t], mult);
        isum[p][t] = _mm256_add_epi32(isum[p][t], dot);
      }
    }
  }
}

// P panels x T tokens over all blocks: y[t * y_stride + 8 p + lane] for the
// valid rows of each panel.
template <typename G, int P, int T>
void gemm_micro_avx2(const Avx2Panel* panels, int64_t cols, const QuantActs& all, int64_t t0,
                     float* y, int64_t y_stride, const __m256i* store_mask) {
  const QuantActs a = acts_from_token(all, t0);  // here, not by the caller: see gemm_micro
  __m256 acc[P][T];
  for (int p = 0; p < P; ++p) {
    for (int t = 0; t < T; ++t) acc[p][t] = _mm256_setzero_ps();
  }
  if constexpr (!G::kKQuant) {
    constexpr int kW = G::kBlockWords;
    for (int64_t b = 0; b < cols / G::kB; ++b) {
      __m256i isum[P][T];
      // Zero, not the offset: the compiler drops the first add and holds no
      // registers for an initial value during the quads.
      for (int p = 0; p < P; ++p) {
        for (int t = 0; t < T; ++t) isum[p][t] = _mm256_setzero_si256();
      }
      block_dots_avx2<G, P, T>(panels, b, a, isum);
      if constexpr (G::kOffset != 0) {
        for (int t = 0; t < T; ++t) {
          // -kOffset * (x's block sum) cancels the offset of the stored quants.
          const __m256i off = _mm256_set1_epi32(-G::kOffset * a.s32[t * a.d32_stride + b]);
          for (int p = 0; p < P; ++p) isum[p][t] = _mm256_add_epi32(isum[p][t], off);
        }
      }
      for (int p = 0; p < P; ++p) {
        const __m256 scale = load_float_words(panels[p].block_words + b * kW * kPanelRows);
        for (int t = 0; t < T; ++t) {
          const __m256 dx = _mm256_set1_ps(a.d[t * a.d_stride + b]);
          acc[p][t] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[p][t]), _mm256_mul_ps(scale, dx), acc[p][t]);
        }
        if constexpr (G::kMin) {
          const __m256 mcoef = load_float_words(panels[p].block_words + (b * kW + 1) * kPanelRows);
          for (int t = 0; t < T; ++t) {
            acc[p][t] =
                _mm256_fmadd_ps(mcoef, _mm256_set1_ps(a.dsum[t * a.d32_stride + b]), acc[p][t]);
          }
        }
      }
    }
  } else {
    // K-quants: the super-block's sub-block dots times their integer scales
    // sum exactly in int32; x's scale and the row's d apply once.
    constexpr int kSub = G::kGroup / G::kB;
    constexpr int kGW = G::kGroupWords;
    for (int64_t sb = 0; sb < cols / G::kGroup; ++sb) {
      const uint32_t* gw[P];
      for (int p = 0; p < P; ++p) gw[p] = panels[p].group_words + sb * kGW * kPanelRows;
      __m256i isum[P][T];
      for (int p = 0; p < P; ++p) {
        for (int t = 0; t < T; ++t) isum[p][t] = _mm256_setzero_si256();
      }
      if constexpr (G::kOffset != 0) {
        // Q6_K: -32 * sum_j sc_j * (x's sum over sub-block j), pairs of j per madd.
        for (int p = 0; p < P; ++p) {
          for (int t = 0; t < T; ++t) {
            const int16_t* xs = a.s16 + t * a.s16_stride + 16 * sb;
            __m256i off = _mm256_setzero_si256();
            for (int k = 0; k < 8; ++k) {
              int32_t pair;
              std::memcpy(&pair, xs + 2 * k, 4);
              off =
                  _mm256_add_epi32(off, _mm256_madd_epi16(load_words(gw[p] + (1 + k) * kPanelRows),
                                                          _mm256_set1_epi32(pair)));
            }
            isum[p][t] = _mm256_sub_epi32(isum[p][t], _mm256_slli_epi32(off, 5));
          }
        }
      }
      for (int j = 0; j < kSub; ++j) block_dots_avx2<G, P, T>(panels, sb * kSub + j, a, isum);
      for (int p = 0; p < P; ++p) {
        const __m256 d = load_float_words(gw[p]);
        for (int t = 0; t < T; ++t) {
          const __m256 dx = _mm256_set1_ps(a.d[t * a.d_stride + sb]);
          acc[p][t] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[p][t]), _mm256_mul_ps(d, dx), acc[p][t]);
        }
        if constexpr (G::kMin) {
          // -dmin * sum_j m_j * (x's sum over sub-block j), pairs of j per madd.
          const __m256 neg_dmin = load_float_words(gw[p] + kPanelRows);
          for (int t = 0; t < T; ++t) {
            const int16_t* xs = a.s32 + t * a.d32_stride + 8 * sb;
            __m256i msum = _mm256_setzero_si256();
            for (int k = 0; k < 4; ++k) {
              int32_t pair;
              std::memcpy(&pair, xs + 2 * k, 4);
              msum =
                  _mm256_add_epi32(msum, _mm256_madd_epi16(load_words(gw[p] + (2 + k) * kPanelRows),
                                                           _mm256_set1_epi32(pair)));
            }
            const __m256 dx = _mm256_set1_ps(a.d[t * a.d_stride + sb]);
            acc[p][t] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(neg_dmin, dx), acc[p][t]);
          }
        }
      }
    }
  }
  for (int p = 0; p < P; ++p) {
    for (int t = 0; t < T; ++t) {
      _mm256_maskstore_ps(y + t * y_stride + p * kPanelRows, store_mask[p], acc[p][t]);
    }
  }
}

template <typename G, int P, int T>
void gemm_tokens_avx2(const Avx2Panel* panels, int64_t cols, const QuantActs& a, int64_t t0,
                      float* y, int64_t y_stride, const __m256i* mask) {
  gemm_micro_avx2<G, P, T>(panels, cols, a, t0, y + t0 * y_stride, y_stride, mask);
}

// The last n % T tokens.
template <typename G, int P, int T>
void gemm_tail_avx2(const Avx2Panel* panels, int64_t cols, const QuantActs& a, int64_t t0,
                    int64_t left, float* y, int64_t y_stride, const __m256i* mask) {
  if constexpr (T > 0) {
    if (left == T) {
      gemm_tokens_avx2<G, P, T>(panels, cols, a, t0, y, y_stride, mask);
    } else {
      gemm_tail_avx2<G, P, T - 1>(panels, cols, a, t0, left, y, y_stride, mask);
    }
  }
}

// QuantGemmFn: rows [row_begin, row_end) x n tokens, in kGemmRows-row groups;
// micro-kernels of P panels x T tokens.
template <typename G, int P, int T>
void quant_gemm_avx2(const WeightMatrix& w, const QuantActs& a, int64_t n, float* y,
                     int64_t y_stride, int64_t row_begin, int64_t row_end, uint8_t* scratch) {
  static_assert(kGroupPanels % P == 0);
  Avx2Panel panels[kGroupPanels];
  uint8_t* quads[kGroupPanels];
  uint32_t* block_words[kGroupPanels];
  uint32_t* group_words[kGroupPanels];
  for (int p = 0; p < kGroupPanels; ++p) {
    quads[p] = panel_base<G>(scratch, w.cols, p, &block_words[p], &group_words[p]);
    panels[p] = {quads[p], block_words[p], group_words[p]};
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kGemmRows) {
    __m256i mask[kGroupPanels];
    // The last group may have fewer rows: skip panels without any, but fill
    // whole micro-kernels of P panels (rows past the matrix are zero).
    const int64_t group_rows = std::min<int64_t>(kGemmRows, row_end - r0);
    const int panels_used =
        static_cast<int>((group_rows + P * kPanelRows - 1) / (P * kPanelRows)) * P;
    for (int p = 0; p < panels_used; ++p) {
      const int64_t left = group_rows - p * kPanelRows;
      const int valid = left <= 0 ? 0 : left >= kPanelRows ? kPanelRows : static_cast<int>(left);
      mask[p] = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), lane);
      repack_panel_avx2<G>(w, r0 + p * kPanelRows, valid, quads[p], block_words[p], group_words[p]);
    }
    // The next group's weights come in while these panels work (see quant_gemm in
    // matmul_quant_gemm_x86.h), a part per micro-kernel call.
    const NextRows next_rows = next_row_group(w, r0, row_end);
    const int64_t calls = (panels_used / P) * ((n + T - 1) / T);
    int64_t call = 0;
    for (int p0 = 0; p0 < panels_used; p0 += P) {
      const Avx2Panel* pp = panels + p0;
      const __m256i* mp = mask + p0;
      float* yr = y + r0 + p0 * kPanelRows;
      int64_t t = 0;
      for (; t + T <= n; t += T) {
        prefetch_part(next_rows, call++, calls);
        gemm_tokens_avx2<G, P, T>(pp, w.cols, a, t, yr, y_stride, mp);
      }
      if (t < n) prefetch_part(next_rows, call++, calls);
      gemm_tail_avx2<G, P, T - 1>(pp, w.cols, a, t, n - t, yr, y_stride, mp);
    }
  }
}

// Micro-kernel shapes (panels x tokens) measured on Zen 4 at 128 tokens:
// 2 x 3 keeps 6 int16 sums, 6 float sums and 2 weight vectors in the 16
// registers; Q6_K's two madds per 16 values do better with 1 x 4.
inline void register_quant_gemm_avx2(IsaKernels* table) {
  auto set = [&](DType type, QuantGemmFn fn) {
    table->types[static_cast<uint32_t>(type)].quant_gemm = fn;
  };
  set(DType::Q4_0, quant_gemm_avx2<Avx2Gemm32<X86Q4_0, 15>, 2, 3>);
  set(DType::Q4_1, quant_gemm_avx2<Avx2Gemm32<X86Q4_1, 15>, 2, 3>);
  set(DType::Q5_0, quant_gemm_avx2<Avx2Gemm32<X86Q5_0, 31>, 2, 3>);
  set(DType::Q5_1, quant_gemm_avx2<Avx2Gemm32<X86Q5_1, 31>, 2, 3>);
  set(DType::Q8_0, quant_gemm_avx2<Avx2Gemm32<X86Q8_0, 128>, 2, 3>);
  set(DType::Q4_K, quant_gemm_avx2<Avx2GemmK4<X86Q4_K, 15>, 2, 3>);
  set(DType::Q5_K, quant_gemm_avx2<Avx2GemmK4<X86Q5_K, 31>, 2, 3>);
  set(DType::Q6_K, quant_gemm_avx2<Avx2GemmQ6K, 1, 4>);
}

}  // namespace
}  // namespace edgelm::kernels_internal
