// Prefill GEMM for quantized weights on AVX-512 VNNI, included by
// matmul_quant_avx512.cc after matmul_quant_x86.h (same rules: everything is
// file-local, compiled with that file's flags).
//
// The tile kernels of matmul_quant_x86.h convert every block product to float
// and rescale it per (row, token, block): 3-4 instructions of overhead per
// vpdpbusd. Here 32 weight rows are first unpacked once into a scratch panel
// whose 32-bit lanes hold 4 consecutive quants of 16 different rows:
//
//   panel quads: [block][quad of the block][16 rows][4 bytes]   (unsigned quants)
//   scales:      [block][16 rows] float   value = scale * quant + min term
//   min coefs:   [block][16 rows] float   (formats with a min: Q4_1, Q5_1, K-quants)
//
// so one vpdpbusd of a panel vector with 4 broadcast activation bytes advances
// 16 rows at once, and the float work per block (convert, scale, accumulate)
// is shared by 16 rows instead of being spent per row. The repack costs about
// one pass over the weights and is amortized over all tokens of the call.
//
// Integer block dots are exact; only the order of the float sums differs from
// the scalar reference.
#pragma once

#if !EDGELM_QUANT_VNNI
#error "matmul_quant_gemm_x86.h needs AVX-512 VNNI"
#endif

// GCC 12 reports its own AVX-512 intrinsics (_mm512_undefined_*) as uninitialized.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace edgelm::kernels_internal {
namespace {

constexpr int kLanes = 16;                   // rows per panel (int32 lanes of a zmm)
constexpr int kPanels = kGemmRows / kLanes;  // panels per micro-kernel call
static_assert(kGemmRows % kLanes == 0);

// Per format: kGroup values are unpacked at once (a block or a super-block);
// kB values share one scale (the GEMM's block); x's scale index is b >> kDxShift;
// kOffset: stored quant = value quant + kOffset (corrected with x's block sums).
template <typename F>
struct Gemm32 {  // two blocks per group; the second is absent when a row has an odd count
  static constexpr int kGroup = 64, kB = 32, kDxShift = 0, kOffset = F::kOffset;
  static constexpr int kGroupBytes = 2 * sizeof(typename F::Block);
  static constexpr bool kMin = F::kMin;
  static void unpack(const uint8_t* row, int64_t g, int present, uint8_t* out, float* scale,
                     float* mcoef) {
    for (int j = 0; j < 2; ++j) {
      if (j >= present) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * j), _mm256_setzero_si256());
        scale[j] = mcoef[j] = 0;
        continue;
      }
      const auto* blk = reinterpret_cast<const typename F::Block*>(row) + 2 * g + j;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * j), F::unpack(blk));
      scale[j] = f16(blk->d);
      mcoef[j] = F::min(blk);
    }
  }
};

// Q4_K / Q5_K: sub-blocks of 32, value = d*sc*q - dmin*m. The min term of a
// super-block, -dmin * sum_j m_j * (x's sum over sub-block j), is summed in
// integers (kIntMins: see K4Mins) rather than with a float FMA per sub-block:
// on Zen 4 every FMA takes a vpdpbusd's issue slot.
template <typename F>
struct GemmK4 {
  static constexpr int kGroup = 256, kB = 32, kDxShift = 3, kOffset = 0;
  static constexpr int kGroupBytes = sizeof(typename F::Block);
  static constexpr bool kMin = true, kIntMins = true;
  // mcoef[j] = m_j (a 6-bit integer, exact in float); *neg_dmin = -dmin.
  static void unpack(const uint8_t* row, int64_t g, int, uint8_t* out, float* scale, float* mcoef,
                     float* neg_dmin) {
    const auto* blk = reinterpret_cast<const typename F::Block*>(row) + g;
    alignas(16) uint8_t sm[16];
    k4_scales_mins(blk->scales, sm);
    const float d = f16(blk->d);
    const typename F::Unpacked u(blk);
    for (int c = 0; c < 4; ++c) {
      __m256i lo, hi;
      u.chunk(c, &lo, &hi);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * c), lo);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * c + 32), hi);
    }
    for (int j = 0; j < 8; ++j) {
      scale[j] = d * static_cast<float>(sm[j]);
      mcoef[j] = static_cast<float>(sm[8 + j]);
    }
    *neg_dmin = -f16(blk->dmin);
  }
};

// A kIntMins panel's min coefficients, per super-block in the place of its 8
// float vectors: 4 vectors of int16 pairs (m_2i, m_2i+1) per row, for one
// vpdpwssd each against x's sums of sub-blocks 2i and 2i+1, then -dmin per row.
struct K4Mins {
  static constexpr int kPairVectors = 4;
  static const int32_t* pairs(const float* mcoefs, int64_t sb) {
    return reinterpret_cast<const int32_t*>(mcoefs + sb * 8 * kLanes);
  }
  static int32_t* pairs(float* mcoefs, int64_t sb) {
    return reinterpret_cast<int32_t*>(mcoefs + sb * 8 * kLanes);
  }
  static float* neg_dmin(float* mcoefs, int64_t sb) {
    return mcoefs + sb * 8 * kLanes + kPairVectors * kLanes;
  }
  static const float* neg_dmin(const float* mcoefs, int64_t sb) {
    return mcoefs + sb * 8 * kLanes + kPairVectors * kLanes;
  }
};

struct GemmQ6K {  // sub-blocks of 16, value = d*sc*(q - 32)
  static constexpr int kGroup = 256, kB = 16, kDxShift = 4, kOffset = 32;
  static constexpr int kGroupBytes = sizeof(BlockQ6_K);
  static constexpr bool kMin = false;
  static void unpack(const uint8_t* row, int64_t g, int, uint8_t* out, float* scale, float* mcoef) {
    const auto* blk = reinterpret_cast<const BlockQ6_K*>(row) + g;
    for (int h = 0; h < 2; ++h) {
      __m256i q[4];
      q6_k_half(blk, h, q);
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 128 * h + 32 * k), q[k]);
      }
    }
    const float d = f16(blk->d);
    for (int j = 0; j < 16; ++j) {
      scale[j] = d * static_cast<float>(blk->scales[j]);
      mcoef[j] = 0;
    }
  }
};

template <typename G>
constexpr bool kIntMins = requires {
  G::kIntMins;
};

// Where one panel's parts live in the scratch buffer.
struct PanelView {
  uint8_t* quads;
  float* scales;
  float* mcoefs;
};

// Panels hold whole 64-value groups (a row's last group may be half a group).
inline int64_t padded_cols(int64_t cols) {
  return (cols + 63) / 64 * 64;
}

template <typename G>
PanelView panel_view(uint8_t* scratch, int64_t cols, int p) {
  const int64_t padded = padded_cols(cols);
  const size_t quad_bytes = static_cast<size_t>(padded) * kLanes;
  const size_t float_bytes = static_cast<size_t>(padded / G::kB) * kLanes * sizeof(float);
  uint8_t* base = scratch + p * (quad_bytes + 2 * float_bytes);
  return {base, reinterpret_cast<float*>(base + quad_bytes),
          reinterpret_cast<float*>(base + quad_bytes + float_bytes)};
}

// In-register transpose of a 16 x 16 matrix of 32-bit values: v[k] becomes column k.
inline void transpose_16x16(__m512i v[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(v[i], v[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(v[i], v[i + 1]);
  }
  // v[4i + c] = column 4L + c of rows 4i..4i+3, in each 128-bit lane L.
  for (int i = 0; i < 16; i += 4) {
    v[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    v[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    v[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    v[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int h = 0; h < 16; h += 8) {
    for (int c = 0; c < 4; ++c) {
      t[h + c] = _mm512_shuffle_i32x4(v[h + c], v[h + 4 + c], 0x88);
      t[h + 4 + c] = _mm512_shuffle_i32x4(v[h + c], v[h + 4 + c], 0xdd);
    }
  }
  for (int c = 0; c < 8; ++c) {
    v[c] = _mm512_shuffle_i32x4(t[c], t[8 + c], 0x88);
    v[8 + c] = _mm512_shuffle_i32x4(t[c], t[8 + c], 0xdd);
  }
}

// Unpacks rows [r0, r0 + valid) into panel `out` (rows past `valid` are zero).
template <typename G>
void repack_panel(const WeightMatrix& w, int64_t r0, int valid, const PanelView& out) {
  constexpr int kBlocks = G::kGroup / G::kB;
  constexpr int kAheadGroups = 512 / G::kGroupBytes + 1;
  const int64_t blocks = w.cols / G::kB;
  const int64_t groups = (w.cols + G::kGroup - 1) / G::kGroup;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  alignas(64) uint8_t tmp[kLanes][G::kGroup];
  float scale[kLanes][kBlocks];
  float mcoef[kLanes][kBlocks];
  float neg_dmin[kLanes];
  for (int r = valid; r < kLanes; ++r) {
    std::memset(tmp[r], 0, sizeof(tmp[r]));
    for (int j = 0; j < kBlocks; ++j) scale[r][j] = mcoef[r][j] = 0;
    neg_dmin[r] = 0;
  }
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t left = blocks - g * kBlocks;
    const int present = left < kBlocks ? static_cast<int>(left) : kBlocks;
    for (int r = 0; r < valid; ++r) {
      const uint8_t* row = base + (r0 + r) * w.row_bytes;
      // Sixteen rows are sixteen streams, more than the hardware prefetcher
      // follows: fetch each row's bytes a few groups ahead.
      if (g + kAheadGroups < groups) {
        const uint8_t* next = row + (g + kAheadGroups) * G::kGroupBytes;
        for (int off = 0; off < G::kGroupBytes; off += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(next + off), _MM_HINT_T0);
        }
      }
      if constexpr (kIntMins<G>) {
        G::unpack(row, g, present, tmp[r], scale[r], mcoef[r], &neg_dmin[r]);
      } else {
        G::unpack(row, g, present, tmp[r], scale[r], mcoef[r]);
      }
    }
    uint8_t* quads = out.quads + g * G::kGroup * kLanes;
    for (int c = 0; c < G::kGroup / 64; ++c) {
      __m512i v[kLanes];
      for (int r = 0; r < kLanes; ++r) v[r] = _mm512_load_si512(&tmp[r][64 * c]);
      transpose_16x16(v);
      for (int k = 0; k < 16; ++k) _mm512_storeu_si512(quads + (16 * c + k) * 64, v[k]);
    }
    for (int j = 0; j < kBlocks; ++j) {
      float* s = out.scales + (g * kBlocks + j) * kLanes;
      for (int r = 0; r < kLanes; ++r) s[r] = scale[r][j];
    }
    if constexpr (kIntMins<G>) {
      static_assert(kBlocks == 2 * K4Mins::kPairVectors);
      int32_t* pairs = K4Mins::pairs(out.mcoefs, g);
      for (int i = 0; i < K4Mins::kPairVectors; ++i) {
        for (int r = 0; r < kLanes; ++r) {
          const auto lo = static_cast<uint32_t>(mcoef[r][2 * i]);
          const auto hi = static_cast<uint32_t>(mcoef[r][2 * i + 1]);
          pairs[i * kLanes + r] = static_cast<int32_t>(lo | hi << 16);
        }
      }
      std::memcpy(K4Mins::neg_dmin(out.mcoefs, g), neg_dmin, sizeof(neg_dmin));
    } else {
      for (int j = 0; j < kBlocks; ++j) {
        float* m = out.mcoefs + (g * kBlocks + j) * kLanes;
        for (int r = 0; r < kLanes; ++r) m[r] = mcoef[r][j];
      }
    }
  }
}

// The interleaved layouts need no transpose: a group's chunk c already holds
// quant bytes 4c..4c+3 of its 16 rows, i.e. quads c (low nibbles) and 4 + c
// (high nibbles) of the panel (plus Q5_0's fifth bits from their masks), or
// for Q8_0 quad c as stored (q + 128, X86Q8_0's offset). Rows [r0, r0 + valid)
// with valid 0 or 16 (whole groups).
struct GemmQ4_0X16 : Gemm32<X86Q4_0> {
  static constexpr DType kX16Type = DType::Q4_0_X16;
};
struct GemmQ5_0X16 : Gemm32<X86Q5_0> {
  static constexpr DType kX16Type = DType::Q5_0_X16;
};
struct GemmQ8_0X16 : Gemm32<X86Q8_0> {
  static constexpr DType kX16Type = DType::Q8_0_X16;
};

template <DType kType>
void repack_panel_x16(const WeightMatrix& w, int64_t r0, int valid, const PanelView& out) {
  constexpr bool kQ8 = kType == DType::Q8_0_X16, kQ5 = kType == DType::Q5_0_X16;
  constexpr size_t kBlockBytes = kQ8 ? kX16Q8BlockBytes : kX16Bytes<kQ5>;
  const int64_t nb = w.cols / kQK;
  const uint8_t* p = static_cast<const uint8_t*>(w.data) + r0 * w.row_bytes;
  for (int64_t b = 0; b < nb; ++b, p += kBlockBytes) {
    uint8_t* quads = out.quads + b * 8 * 64;
    float* scales = out.scales + b * kLanes;
    float* mcoefs = out.mcoefs + b * kLanes;
    if (valid == 0) {
      for (int q = 0; q < 8; ++q) _mm512_storeu_si512(quads + 64 * q, _mm512_setzero_si512());
      _mm512_storeu_ps(scales, _mm512_setzero_ps());
      _mm512_storeu_ps(mcoefs, _mm512_setzero_ps());
      continue;
    }
    if constexpr (kQ8) {
      for (int c = 0; c < 8; ++c) {
        _mm512_storeu_si512(quads + 64 * c, _mm512_loadu_si512(p + 32 + 64 * c));
      }
    } else {
      for (int c = 0; c < 4; ++c) {
        __m512i lo, hi;
        x16_chunk<kQ5>(p, c, &lo, &hi);
        _mm512_storeu_si512(quads + 64 * c, lo);
        _mm512_storeu_si512(quads + 64 * (4 + c), hi);
      }
    }
    _mm512_storeu_ps(scales,
                     _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
    _mm512_storeu_ps(mcoefs, _mm512_setzero_ps());
  }
  // Panels span whole 64-value groups: zero the half group after an odd block count.
  if (nb % 2 != 0) {
    uint8_t* quads = out.quads + nb * 8 * 64;
    for (int q = 0; q < 8; ++q) _mm512_storeu_si512(quads + 64 * q, _mm512_setzero_si512());
    _mm512_storeu_ps(out.scales + nb * kLanes, _mm512_setzero_ps());
    _mm512_storeu_ps(out.mcoefs + nb * kLanes, _mm512_setzero_ps());
  }
}

// Q4_K_X16: chunk 8k + t of a super-block is quad t of sub-blocks 2k (low
// nibbles) and 2k + 1 (high nibbles); scales and mins per sub-block as GemmK4's.
struct GemmQ4_KX16 : GemmK4<X86Q4_K> {};

inline void repack_panel_q4_k_x16(const WeightMatrix& w, int64_t r0, int valid,
                                  const PanelView& out) {
  const int64_t nb = w.cols / kQK_K;
  const uint8_t* p = static_cast<const uint8_t*>(w.data) + r0 * w.row_bytes;
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t b = 0; b < nb; ++b, p += kX16Q4KBlockBytes) {
    uint8_t* quads = out.quads + b * 8 * 8 * 64;  // 8 sub-blocks of 8 quads
    float* scales = out.scales + b * 8 * kLanes;
    float* mcoefs = out.mcoefs + b * 8 * kLanes;
    if (valid == 0) {
      for (int q = 0; q < 64; ++q) _mm512_storeu_si512(quads + 64 * q, _mm512_setzero_si512());
      for (int j = 0; j < 8; ++j) {
        _mm512_storeu_ps(scales + j * kLanes, _mm512_setzero_ps());
        _mm512_storeu_ps(mcoefs + j * kLanes, _mm512_setzero_ps());
      }
      continue;
    }
    for (int k = 0; k < 4; ++k) {
      for (int t = 0; t < 8; ++t) {
        const __m512i v = _mm512_loadu_si512(p + kX16Q4KQuants + 512 * k + 64 * t);
        _mm512_storeu_si512(quads + (16 * k + t) * 64, _mm512_and_si512(v, m4));
        _mm512_storeu_si512(quads + (16 * k + 8 + t) * 64,
                            _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
      }
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    const __m512 dmin =
        _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
    const __m512i min_nibbles = _mm512_loadu_si512(p + kX16Q4KMinNibbles);
    __m512i m_even = _mm512_setzero_si512();
    for (int j = 0; j < 8; ++j) {
      __m512i sc, m;
      q4_k_x16_scales(p, j, min_nibbles, &sc, &m);
      _mm512_storeu_ps(scales + j * kLanes, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)));
      if (j % 2 == 0) {
        m_even = m;
      } else {
        _mm512_storeu_si512(K4Mins::pairs(out.mcoefs, b) + (j / 2) * kLanes,
                            _mm512_or_si512(m_even, _mm512_slli_epi32(m, 16)));
      }
    }
    _mm512_storeu_ps(K4Mins::neg_dmin(out.mcoefs, b), _mm512_sub_ps(_mm512_setzero_ps(), dmin));
  }
}

// Integer dots of block b for kPanels panels x T tokens, started from
// -kOffset * (x's block sum) so that the offset of the stored quants cancels.
template <typename G, int T>
inline void block_dots(const PanelView* panels, int64_t b, const QuantActs& a,
                       __m512i (&isum)[kPanels][T]) {
  constexpr int kQuads = G::kB / 4;
  for (int t = 0; t < T; ++t) {
    __m512i init = _mm512_setzero_si512();
    if constexpr (G::kOffset != 0) {
      const int xsum = G::kB == 32 ? a.s32[t * a.d32_stride + b] : a.s16[t * a.s16_stride + b];
      init = _mm512_set1_epi32(-G::kOffset * xsum);
    }
    for (int p = 0; p < kPanels; ++p) isum[p][t] = init;
  }
  for (int q = 0; q < kQuads; ++q) {
    __m512i wq[kPanels];
    for (int p = 0; p < kPanels; ++p) {
      wq[p] = _mm512_loadu_si512(panels[p].quads + (b * kQuads + q) * 64);
    }
    for (int t = 0; t < T; ++t) {
      int32_t x4;
      std::memcpy(&x4, a.q + t * a.q_stride + b * G::kB + 4 * q, 4);
      const __m512i xb = _mm512_set1_epi32(x4);
      for (int p = 0; p < kPanels; ++p) isum[p][t] = _mm512_dpbusd_epi32(isum[p][t], wq[p], xb);
    }
  }
}

// kPanels panels x tokens [t0, t0 + T) over all blocks; y[t * y_stride + 16 p
// + lane]. The tokens' activations are located here rather than passed in: a
// QuantActs built by the caller went through the stack, and reading it back
// stalled on store forwarding (a tenth of SmolLM2's prefill).
template <typename G, int T>
void gemm_micro(const PanelView* panels, int64_t blocks, const QuantActs& all, int64_t t0, float* y,
                int64_t y_stride, const __mmask16* store_mask) {
  const QuantActs a = acts_from_token(all, t0);
  __m512 acc[kPanels][T];
  for (int p = 0; p < kPanels; ++p) {
    for (int t = 0; t < T; ++t) acc[p][t] = _mm512_setzero_ps();
  }
  if constexpr (G::kDxShift == 0) {
    // x's scale changes every block: scale each block product by (w scale * x scale).
    for (int64_t b = 0; b < blocks; ++b) {
      __m512i isum[kPanels][T];
      block_dots<G, T>(panels, b, a, isum);
      for (int p = 0; p < kPanels; ++p) {
        const __m512 scale = _mm512_loadu_ps(panels[p].scales + b * kLanes);
        __m512 mcoef = _mm512_setzero_ps();
        if constexpr (G::kMin) mcoef = _mm512_loadu_ps(panels[p].mcoefs + b * kLanes);
        for (int t = 0; t < T; ++t) {
          const __m512 dx = _mm512_set1_ps(a.d[t * a.d_stride + b]);
          acc[p][t] =
              _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[p][t]), _mm512_mul_ps(scale, dx), acc[p][t]);
          if constexpr (G::kMin) {
            acc[p][t] =
                _mm512_fmadd_ps(mcoef, _mm512_set1_ps(a.dsum[t * a.d32_stride + b]), acc[p][t]);
          }
        }
      }
    }
  } else {
    // K-quants: x's scale is fixed over a super-block, so sum the sub-block
    // products scaled by the weights' scales first and apply it once.
    constexpr int kSub = 1 << G::kDxShift;
    for (int64_t sb = 0; sb < blocks / kSub; ++sb) {
      __m512 acc_sb[kPanels][T];
      for (int p = 0; p < kPanels; ++p) {
        for (int t = 0; t < T; ++t) acc_sb[p][t] = _mm512_setzero_ps();
      }
      // Unrolled: rolled, GCC moved the accumulators between registers at
      // every sub-block (19 copies per 64 vpdpbusd), 6-8% of a Q4_K GEMM.
#pragma GCC unroll 8
      for (int j = 0; j < kSub; ++j) {
        const int64_t b = sb * kSub + j;
        __m512i isum[kPanels][T];
        block_dots<G, T>(panels, b, a, isum);
        for (int p = 0; p < kPanels; ++p) {
          const __m512 scale = _mm512_loadu_ps(panels[p].scales + b * kLanes);
          for (int t = 0; t < T; ++t) {
            acc_sb[p][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[p][t]), scale, acc_sb[p][t]);
          }
        }
      }
      if constexpr (G::kMin) {
        static_assert(kIntMins<G> && kSub == 2 * K4Mins::kPairVectors);
        for (int p = 0; p < kPanels; ++p) {
          const int32_t* pairs = K4Mins::pairs(panels[p].mcoefs, sb);
          const __m512 neg_dmin = _mm512_loadu_ps(K4Mins::neg_dmin(panels[p].mcoefs, sb));
          for (int t = 0; t < T; ++t) {
            const int16_t* xsums = a.s32 + t * a.d32_stride + sb * kSub;
            __m512i imin = _mm512_setzero_si512();
            for (int i = 0; i < K4Mins::kPairVectors; ++i) {
              int32_t x2;
              std::memcpy(&x2, xsums + 2 * i, 4);
              imin = _mm512_dpwssd_epi32(imin, _mm512_loadu_si512(pairs + i * kLanes),
                                         _mm512_set1_epi32(x2));
            }
            acc_sb[p][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin), neg_dmin, acc_sb[p][t]);
          }
        }
      }
      for (int t = 0; t < T; ++t) {
        const __m512 dx = _mm512_set1_ps(a.d[t * a.d_stride + sb]);
        for (int p = 0; p < kPanels; ++p) acc[p][t] = _mm512_fmadd_ps(acc_sb[p][t], dx, acc[p][t]);
      }
    }
  }
  for (int p = 0; p < kPanels; ++p) {
    for (int t = 0; t < T; ++t) {
      _mm512_mask_storeu_ps(y + t * y_stride + p * kLanes, store_mask[p], acc[p][t]);
    }
  }
}

// Tokens per micro-kernel call: 6 measured no faster, 8 spills registers.
constexpr int kGemmTokens = 4;
static_assert(kGemmTokens == 4, "quant_gemm's tail switch handles 1..3 tokens");

template <typename G, int T>
void gemm_tokens(const PanelView* panels, int64_t blocks, const QuantActs& a, int64_t t0, float* y,
                 int64_t y_stride, const __mmask16* mask) {
  gemm_micro<G, T>(panels, blocks, a, t0, y + t0 * y_stride, y_stride, mask);
}

// QuantGemmFn: rows [row_begin, row_end) x n tokens, in kGemmRows-row groups.
// While a group's panels multiply the tokens, the next group's weights come in
// (a little per token tile): the repacking of each group waited on memory for
// them, 55% of its time and a tenth of Qwen2.5 q8_0's prefill.
template <typename G>
void quant_gemm(const WeightMatrix& w, const QuantActs& a, int64_t n, float* y, int64_t y_stride,
                int64_t row_begin, int64_t row_end, uint8_t* scratch) {
  const int64_t blocks = w.cols / G::kB;
  PanelView panels[kPanels];
  for (int p = 0; p < kPanels; ++p) panels[p] = panel_view<G>(scratch, w.cols, p);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kGemmRows) {
    __mmask16 mask[kPanels];
    for (int p = 0; p < kPanels; ++p) {
      const int64_t left = row_end - (r0 + p * kLanes);
      const int valid = left <= 0 ? 0 : left >= kLanes ? kLanes : static_cast<int>(left);
      mask[p] = static_cast<__mmask16>((1u << valid) - 1);
      if constexpr (requires { G::kX16Type; }) {
        repack_panel_x16<G::kX16Type>(w, r0 + p * kLanes, valid, panels[p]);
      } else if constexpr (std::is_same_v<G, GemmQ4_KX16>) {
        repack_panel_q4_k_x16(w, r0 + p * kLanes, valid, panels[p]);
      } else {
        repack_panel<G>(w, r0 + p * kLanes, valid, panels[p]);
      }
    }
    float* yr = y + r0;
    const NextRows next_rows = next_row_group(w, r0, row_end);
    const int64_t tiles = (n + kGemmTokens - 1) / kGemmTokens;

    int64_t t = 0;
    for (; t + kGemmTokens <= n; t += kGemmTokens) {
      prefetch_part(next_rows, t / kGemmTokens, tiles);
      gemm_tokens<G, kGemmTokens>(panels, blocks, a, t, yr, y_stride, mask);
    }
    if (t < n) prefetch_part(next_rows, tiles - 1, tiles);
    switch (n - t) {  // the last n % kGemmTokens tokens
      case 3:
        gemm_tokens<G, 3>(panels, blocks, a, t, yr, y_stride, mask);
        break;
      case 2:
        gemm_tokens<G, 2>(panels, blocks, a, t, yr, y_stride, mask);
        break;
      case 1:
        gemm_tokens<G, 1>(panels, blocks, a, t, yr, y_stride, mask);
        break;
      default:
        break;
    }
  }
}

inline void register_quant_gemm_x86(IsaKernels* table) {
  table->types[static_cast<uint32_t>(DType::Q4_0)].quant_gemm = quant_gemm<Gemm32<X86Q4_0>>;
  table->types[slot(DType::Q4_0_X16)].quant_gemm = quant_gemm<GemmQ4_0X16>;
  table->types[slot(DType::Q5_0_X16)].quant_gemm = quant_gemm<GemmQ5_0X16>;
  table->types[slot(DType::Q4_K_X16)].quant_gemm = quant_gemm<GemmQ4_KX16>;
  table->types[slot(DType::Q8_0_X16)].quant_gemm = quant_gemm<GemmQ8_0X16>;
  table->types[static_cast<uint32_t>(DType::Q4_1)].quant_gemm = quant_gemm<Gemm32<X86Q4_1>>;
  table->types[static_cast<uint32_t>(DType::Q5_0)].quant_gemm = quant_gemm<Gemm32<X86Q5_0>>;
  table->types[static_cast<uint32_t>(DType::Q5_1)].quant_gemm = quant_gemm<Gemm32<X86Q5_1>>;
  table->types[static_cast<uint32_t>(DType::Q8_0)].quant_gemm = quant_gemm<Gemm32<X86Q8_0>>;
  table->types[static_cast<uint32_t>(DType::Q4_K)].quant_gemm = quant_gemm<GemmK4<X86Q4_K>>;
  table->types[static_cast<uint32_t>(DType::Q5_K)].quant_gemm = quant_gemm<GemmK4<X86Q5_K>>;
  table->types[static_cast<uint32_t>(DType::Q6_K)].quant_gemm = quant_gemm<GemmQ6K>;
}

}  // namespace
}  // namespace edgelm::kernels_internal

#pragma GCC diagnostic pop
