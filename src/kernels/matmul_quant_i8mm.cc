// Prefill GEMM for quantized weights on ARM64 with the int8 matrix multiply
// extension (FEAT_I8MM, smmla). Only reached when the CPU has it and dotprod
// (isa_supported(Isa::kNeonI8mm)); every other kernel of that ISA is the
// dotprod one (fallback in matmul.cc).
//
// vmmlaq_s32(acc, w, x) multiplies a 2x8 int8 matrix (w: 8 values of row i in
// bytes 8i..8i+7) by an 8x2 one (x: 8 values of token j in bytes 8j..8j+7) into
// acc = [r0 t0, r0 t1, r1 t0, r1 t1]: 2 rows x 2 tokens over 8 values in one
// instruction, where sdot does 4 rows x 1 token over 4 values. The kGemmRows
// rows of a call are unpacked once (same unpackers and meta data as the sdot
// GEMM of matmul_quant_gemm_neon.h) into 8-row panels laid out as
//
//   quads: [group][8-value run][row pair p = rows 2p, 2p+1][2 rows][8 bytes]
//
// and activations are paired on the fly (vtrn1q/vtrn2q_s64 of two tokens'
// 16 bytes give tokens 2u, 2u+1 over values 0..7 and 8..15). A micro-kernel
// holds 8 rows x 4 tokens: 4 row pairs x 2 token pairs of 2x2 accumulators.
// Per-row scales are duplicated into the 2x2 layout with vzip, per-token ones
// with [d(t0), d(t1), d(t0), d(t1)]; every float operation of an output is
// the sdot GEMM's, in the same order, so both GEMMs give the same bits (and the
// integer dot products are exact, as everywhere).
#define EDGELM_QUANT_DOTPROD 1
#include "kernels/matmul_quant_neon.h"
// Its block unpackers and panel meta data (everything there is file-local too).
#include "kernels/matmul_quant_gemm_neon.h"

namespace edgelm::kernels_internal {
namespace {

constexpr int kRowPairs = kGemmPanelRows / 2;
constexpr int kMmlaTokenPairs = 2;  // token pairs per micro-kernel call (4 tokens)

// The smmla layout of one group's quads: 8-byte runs 2c and 2c + 1 of rows 2p
// and 2p + 1 side by side (gemm_repack_panel does the rest).
struct MmlaQuads {
  template <int kGroup>
  static void store(const int8_t (&q)[kGemmPanelRows][kGroup], int8_t* out) {
    constexpr int kRows = kGemmPanelRows;
    for (int c = 0; c < kGroup / 16; ++c) {
      for (int p = 0; p < kRowPairs; ++p) {
        const int64x2_t a = vreinterpretq_s64_s8(vld1q_s8(q[2 * p] + 16 * c));
        const int64x2_t b = vreinterpretq_s64_s8(vld1q_s8(q[2 * p + 1] + 16 * c));
        vst1q_s8(out + (2 * c) * 8 * kRows + 16 * p, vreinterpretq_s8_s64(vtrn1q_s64(a, b)));
        vst1q_s8(out + (2 * c + 1) * 8 * kRows + 16 * p, vreinterpretq_s8_s64(vtrn2q_s64(a, b)));
      }
    }
  }
};

// Per-row values of the 8 rows at v, as [v(2p), v(2p), v(2p+1), v(2p+1)] per row pair p.
inline void rows_to_pairs(const float* v, float32x4_t (&out)[kRowPairs]) {
  const float32x4_t lo = vld1q_f32(v), hi = vld1q_f32(v + 4);
  out[0] = vzip1q_f32(lo, lo);
  out[1] = vzip2q_f32(lo, lo);
  out[2] = vzip1q_f32(hi, hi);
  out[3] = vzip2q_f32(hi, hi);
}
inline void rows_to_pairs(const int32_t* v, int32x4_t (&out)[kRowPairs]) {
  const int32x4_t lo = vld1q_s32(v), hi = vld1q_s32(v + 4);
  out[0] = vzip1q_s32(lo, lo);
  out[1] = vzip2q_s32(lo, lo);
  out[2] = vzip1q_s32(hi, hi);
  out[3] = vzip2q_s32(hi, hi);
}

// [v0, v1, v0, v1]: a per-token value of the two tokens of a pair.
inline float32x4_t token_pair(float v0, float v1) {
  const float32x2_t v = vset_lane_f32(v1, vdup_n_f32(v0), 1);
  return vcombine_f32(v, v);
}

// isum[p][u] = integer dots over kValues values from `offset` of rows 2p, 2p + 1
// (panel runs at w) with tokens 2u, 2u + 1 (x[2u], x[2u + 1]).
template <int kValues, int P>
inline void mmla_block_dots(const int8_t* w, const int8_t* const (&x)[2 * P], int64_t offset,
                            int32x4_t (&isum)[kRowPairs][P]) {
  for (int p = 0; p < kRowPairs; ++p) {
    for (int u = 0; u < P; ++u) isum[p][u] = vdupq_n_s32(0);
  }
  for (int h = 0; h < kValues / 16; ++h) {
    int8x16_t xp[P][2];  // token pair u, values 16h..16h+7 and 16h+8..16h+15
    for (int u = 0; u < P; ++u) {
      const int64x2_t a = vreinterpretq_s64_s8(vld1q_s8(x[2 * u] + offset + 16 * h));
      const int64x2_t b = vreinterpretq_s64_s8(vld1q_s8(x[2 * u + 1] + offset + 16 * h));
      xp[u][0] = vreinterpretq_s8_s64(vtrn1q_s64(a, b));
      xp[u][1] = vreinterpretq_s8_s64(vtrn2q_s64(a, b));
    }
    for (int c = 0; c < 2; ++c) {
      const int8_t* wc = w + (2 * h + c) * 8 * kGemmPanelRows;
      for (int p = 0; p < kRowPairs; ++p) {
        const int8x16_t wv = vld1q_s8(wc + 16 * p);
        for (int u = 0; u < P; ++u) isum[p][u] = vmmlaq_s32(isum[p][u], wv, xp[u][c]);
      }
    }
  }
}

// 8 rows x 2P tokens (token i of the tile is tok[i]; only the first `tokens`
// are stored, the others repeat the last real one) over all groups:
// y[tok[i] * y_stride + r] for r < valid. acc[p][u] holds rows 2p, 2p + 1 of
// tokens 2u, 2u + 1 as [r0 t0, r0 t1, r1 t0, r1 t1].
template <typename G, int P>
void mmla_micro(const GemmPanel<G>& panel, int64_t groups, const QuantActs& a,
                const int64_t (&tok)[2 * P], int tokens, float* y, int64_t y_stride, int valid) {
  constexpr int kRows = kGemmPanelRows;
  float32x4_t acc[kRowPairs][P];
  for (int p = 0; p < kRowPairs; ++p) {
    for (int u = 0; u < P; ++u) acc[p][u] = vdupq_n_f32(0);
  }
  const int8_t* x[2 * P];
  const float* xd[2 * P];
  for (int i = 0; i < 2 * P; ++i) {
    x[i] = a.q + tok[i] * a.q_stride;
    xd[i] = a.d + tok[i] * a.d_stride;
  }
  const int8_t* quads = panel.quads;
  for (int64_t g = 0; g < groups; ++g) {
    const float* floats = panel.floats(g);
    float32x4_t dx[P];  // x's block / super-block scale
    for (int u = 0; u < P; ++u) dx[u] = token_pair(xd[2 * u][g], xd[2 * u + 1][g]);
    if constexpr (G::kSub == 1) {
      // As gemm_micro: acc += float(dot) * (w scale * x scale) (+ m * x's dsum) per block.
      int32x4_t isum[kRowPairs][P];
      mmla_block_dots<G::kSubValues, P>(quads, x, g * G::kGroup, isum);
      quads += G::kGroup * kRows;
      float32x4_t scale[kRowPairs];
      rows_to_pairs(floats, scale);
      for (int p = 0; p < kRowPairs; ++p) {
        for (int u = 0; u < P; ++u) {
          const float32x4_t s = vmulq_f32(scale[p], dx[u]);
          acc[p][u] = vfmaq_f32(acc[p][u], vcvtq_f32_s32(isum[p][u]), s);
        }
      }
      if constexpr (G::kMin) {
        float32x4_t mcoef[kRowPairs], dsum[P];
        rows_to_pairs(floats + kRows, mcoef);
        for (int u = 0; u < P; ++u) {
          dsum[u] = token_pair(a.dsum[tok[2 * u] * a.d32_stride + g],
                               a.dsum[tok[2 * u + 1] * a.d32_stride + g]);
        }
        for (int p = 0; p < kRowPairs; ++p) {
          for (int u = 0; u < P; ++u) acc[p][u] = vfmaq_f32(acc[p][u], mcoef[p], dsum[u]);
        }
      }
    } else {
      // K-quants: exact integer sum of scale * sub-block dot over the
      // super-block, converted once and scaled by d * (x's scale).
      const int32_t* ints = panel.ints(g);
      int32x4_t isb[kRowPairs][P];
      for (int p = 0; p < kRowPairs; ++p) {
        for (int u = 0; u < P; ++u) isb[p][u] = vdupq_n_s32(0);
      }
      for (int j = 0; j < G::kSub; ++j) {
        int32x4_t isum[kRowPairs][P];
        mmla_block_dots<G::kSubValues, P>(quads, x, g * G::kGroup + j * G::kSubValues, isum);
        quads += G::kSubValues * kRows;
        int32x4_t sc[kRowPairs];
        rows_to_pairs(ints + j * kRows, sc);
        for (int p = 0; p < kRowPairs; ++p) {
          for (int u = 0; u < P; ++u) isb[p][u] = vmlaq_s32(isb[p][u], isum[p][u], sc[p]);
        }
      }
      float32x4_t d[kRowPairs];
      rows_to_pairs(floats, d);
      float32x4_t sum[kRowPairs][P];
      for (int p = 0; p < kRowPairs; ++p) {
        for (int u = 0; u < P; ++u) sum[p][u] = vmulq_f32(d[p], vcvtq_f32_s32(isb[p][u]));
      }
      if constexpr (G::kMin) {
        // - dmin * sum_j m_j * (x's sum over sub-block j), the integer sum exact.
        static_assert(G::kSub == 8, "one int16x8 of x's sub-block sums per super-block");
        int32x4_t xs[P][G::kSub];  // [xs(t0), xs(t1), xs(t0), xs(t1)] per sub-block
        for (int u = 0; u < P; ++u) {
          const int16x8_t s0 = vld1q_s16(a.s32 + tok[2 * u] * a.d32_stride + g * G::kSub);
          const int16x8_t s1 = vld1q_s16(a.s32 + tok[2 * u + 1] * a.d32_stride + g * G::kSub);
          const int16x8_t z[2] = {vzip1q_s16(s0, s1), vzip2q_s16(s0, s1)};
          for (int k = 0; k < 2; ++k) {
            const int64x2_t lo = vreinterpretq_s64_s32(vmovl_s16(vget_low_s16(z[k])));
            const int64x2_t hi = vreinterpretq_s64_s32(vmovl_high_s16(z[k]));
            xs[u][4 * k + 0] = vreinterpretq_s32_s64(vdupq_laneq_s64(lo, 0));
            xs[u][4 * k + 1] = vreinterpretq_s32_s64(vdupq_laneq_s64(lo, 1));
            xs[u][4 * k + 2] = vreinterpretq_s32_s64(vdupq_laneq_s64(hi, 0));
            xs[u][4 * k + 3] = vreinterpretq_s32_s64(vdupq_laneq_s64(hi, 1));
          }
        }
        int32x4_t imin[kRowPairs][P];
        for (int p = 0; p < kRowPairs; ++p) {
          for (int u = 0; u < P; ++u) imin[p][u] = vdupq_n_s32(0);
        }
        for (int j = 0; j < G::kSub; ++j) {
          int32x4_t m[kRowPairs];
          rows_to_pairs(ints + (G::kSub + j) * kRows, m);
          for (int p = 0; p < kRowPairs; ++p) {
            for (int u = 0; u < P; ++u) imin[p][u] = vmlaq_s32(imin[p][u], m[p], xs[u][j]);
          }
        }
        float32x4_t dmin[kRowPairs];
        rows_to_pairs(floats + kRows, dmin);
        for (int p = 0; p < kRowPairs; ++p) {
          for (int u = 0; u < P; ++u) {
            sum[p][u] = vfmsq_f32(sum[p][u], dmin[p], vcvtq_f32_s32(imin[p][u]));
          }
        }
      }
      for (int p = 0; p < kRowPairs; ++p) {
        for (int u = 0; u < P; ++u) acc[p][u] = vfmaq_f32(acc[p][u], sum[p][u], dx[u]);
      }
    }
  }
  // Rows 0..7 of each token: the even lanes of the row pairs' accumulators
  // hold the pair's first token, the odd lanes its second.
  for (int u = 0; u < P; ++u) {
    for (int k = 0; k < 2; ++k) {
      const int i = 2 * u + k;
      if (i >= tokens) break;
      float rows[kRows];
      for (int h = 0; h < 2; ++h) {
        const float32x4_t v = k == 0 ? vuzp1q_f32(acc[2 * h][u], acc[2 * h + 1][u])
                                     : vuzp2q_f32(acc[2 * h][u], acc[2 * h + 1][u]);
        vst1q_f32(rows + 4 * h, v);
      }
      float* yt = y + tok[i] * y_stride;
      if (valid == kRows) {
        vst1q_f32(yt, vld1q_f32(rows));
        vst1q_f32(yt + 4, vld1q_f32(rows + 4));
      } else {
        for (int r = 0; r < valid; ++r) yt[r] = rows[r];
      }
    }
  }
}

// QuantGemmFn: rows [row_begin, row_end) x n tokens, in kGemmRows-row groups.
template <typename G>
void quant_gemm_i8mm(const WeightMatrix& w, const QuantActs& a, int64_t n, float* y,
                     int64_t y_stride, int64_t row_begin, int64_t row_end, uint8_t* scratch) {
  constexpr int P = kMmlaTokenPairs;
  const int64_t groups = w.cols / G::kGroup;
  GemmPanel<G> panels[kGemmPanels];
  for (int p = 0; p < kGemmPanels; ++p) panels[p] = GemmPanel<G>::at(scratch, w.cols, p);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kGemmRows) {
    int valid[kGemmPanels] = {};
    int used = 0;  // panels with at least one row
    for (int p = 0; p < kGemmPanels; ++p) {
      const int64_t left = row_end - (r0 + p * kGemmPanelRows);
      if (left <= 0) break;
      valid[p] = left >= kGemmPanelRows ? kGemmPanelRows : static_cast<int>(left);
      gemm_repack_panel<G, MmlaQuads>(w, r0 + p * kGemmPanelRows, valid[p], panels[p]);
      used = p + 1;
    }
    // Tokens outer: a tile's activations stay in L1 while the panels stream from L2.
    int64_t t = 0;
    for (; t + 2 * P <= n; t += 2 * P) {
      const int64_t tok[2 * P] = {t, t + 1, t + 2, t + 3};
      for (int p = 0; p < used; ++p) {
        mmla_micro<G, P>(panels[p], groups, a, tok, 2 * P, y + r0 + p * kGemmPanelRows, y_stride,
                         valid[p]);
      }
    }
    // 1 to 3 tokens left: an odd last one is paired with itself and stored once.
    const int64_t left = n - t;
    for (int p = 0; p < used && left > 0; ++p) {
      float* yp = y + r0 + p * kGemmPanelRows;
      if (left == 3) {
        const int64_t tok[4] = {t, t + 1, t + 2, t + 2};
        mmla_micro<G, 2>(panels[p], groups, a, tok, 3, yp, y_stride, valid[p]);
      } else {
        const int64_t tok[2] = {t, t + left - 1};
        mmla_micro<G, 1>(panels[p], groups, a, tok, static_cast<int>(left), yp, y_stride, valid[p]);
      }
    }
  }
}

template <typename G>
void set_quant_gemm_i8mm(IsaKernels* table, DType type) {
  static_assert(kGemmPanels * GemmPanel<G>::kMetaWords * sizeof(int32_t) <= G::kGroup * 16,
                "panel meta data must fit gemm_scratch_bytes()");
  static_assert(G::kSubValues % 16 == 0, "sub-blocks are whole 16-value steps");
  table->types[static_cast<uint32_t>(type)].quant_gemm = quant_gemm_i8mm<G>;
}

}  // namespace

void register_quant_i8mm_kernels(IsaKernels* table) {
  static_assert(kMmlaTokenPairs == 2, "the driver's token tiles are written for 4 tokens");
  set_quant_gemm_i8mm<Gemm32<NeonQ4_0>>(table, DType::Q4_0);
  set_quant_gemm_i8mm<Gemm32<NeonQ4_1>>(table, DType::Q4_1);
  set_quant_gemm_i8mm<Gemm32<NeonQ5_0>>(table, DType::Q5_0);
  set_quant_gemm_i8mm<Gemm32<NeonQ5_1>>(table, DType::Q5_1);
  set_quant_gemm_i8mm<Gemm32<NeonQ8_0>>(table, DType::Q8_0);
  set_quant_gemm_i8mm<GemmK4<false>>(table, DType::Q4_K);
  set_quant_gemm_i8mm<GemmK4<true>>(table, DType::Q5_K);
  set_quant_gemm_i8mm<GemmQ6K>(table, DType::Q6_K);
}

}  // namespace edgelm::kernels_internal
