// Prefill GEMM for quantized weights on ARM64 with the dot product extension
// (sdot), included by matmul_quant_dotprod.cc after matmul_quant_neon.h (same
// rules: everything is file-local, compiled with that file's flags). The ARM
// counterpart of matmul_quant_gemm_x86.h. matmul_quant_i8mm.cc includes it too,
// for the unpackers and panel meta data of its smmla GEMM.
//
// The tile kernels of matmul_quant_neon.h work on one row at a time: every
// (row, token, block) product needs its own convert and rescale, and the
// K-quant ones a horizontal sum per sub-block. Here the kGemmRows rows of a
// call are first unpacked once into 8-row panels of signed quants (offset
// removed: Q4_0 q - 8, Q5_0 q - 16, Q6_K q - 32; formats with a min keep q in
// 0..31) whose 128-bit vectors hold 4 consecutive quants of 4 rows:
//
//   quads: [group][quad of the group][8 rows][4 bytes]
//   ints:  [group][field][8 rows] int32    K-quants: sub-block scales (and mins)
//   floats:[group][field][8 rows] float    block scale and min / super-block d, dmin
//
// so vdotq_laneq_s32(acc, quad vector, 16 activation bytes, lane) advances 4
// rows of one token by 4 values with no horizontal sums, and the per-block
// float work (convert, scale, accumulate) is shared by 4 rows. A micro-kernel
// holds 8 rows x 4 tokens: 8 block accumulators and 8 float accumulators.
// K-quants apply their 6/8-bit sub-block scales with integer multiply-adds and
// convert once per super-block, like the scalar reference.
//
// Integer block dots are exact; only the order of the float sums differs from
// the scalar reference.
#pragma once

#if !EDGELM_QUANT_DOTPROD
#error "matmul_quant_gemm_neon.h needs the dot product extension (vdotq_laneq_s32)"
#endif

namespace edgelm::kernels_internal {
namespace {

constexpr int kGemmPanelRows = 8;  // rows per panel: two int32x4 row quads
constexpr int kGemmPanels = kGemmRows / kGemmPanelRows;
constexpr int kGemmTokenTile = 4;  // tokens per micro-kernel call
static_assert(kGemmRows % kGemmPanelRows == 0);

// Per format: kGroup values are unpacked at once (a block or a super-block),
// in kSub sub-blocks of kSubValues values with their own scale; each panel
// group carries kInts int32 and kFloats float fields per row.
template <typename F>
struct Gemm32 {  // 32-value blocks: value = d * q (+ m)
  static constexpr int kGroup = 32, kSub = 1, kSubValues = 32, kInts = 0, kFloats = 2;
  static constexpr bool kMin = F::kMin;
  // floats: d, m
  static void unpack(const uint8_t* row, int64_t g, int8_t* q, int32_t*, float* floats) {
    const auto* blk = reinterpret_cast<const typename F::Block*>(row) + g;
    int8x16_t lo, hi;
    F::unpack(blk, &lo, &hi);
    vst1q_s8(q, lo);
    vst1q_s8(q + 16, hi);
    floats[0] = f16(blk->d);
    floats[1] = F::min(blk);
  }
};

template <bool kQ5>
struct GemmK4 {  // Q4_K / Q5_K: value = d * sc_j * q - dmin * m_j, sub-blocks of 32
  static constexpr int kGroup = 256, kSub = 8, kSubValues = 32, kInts = 16, kFloats = 2;
  static constexpr bool kMin = true;
  // ints: sc[8], m[8]; floats: d, dmin
  static void unpack(const uint8_t* row, int64_t g, int8_t* q, int32_t* ints, float* floats) {
    using Block = std::conditional_t<kQ5, BlockQ5_K, BlockQ4_K>;
    const auto* blk = reinterpret_cast<const Block*>(row) + g;
    const uint8x16_t m4 = vdupq_n_u8(0x0F), h16 = vdupq_n_u8(0x10);
    uint8x16_t qh[2] = {vdupq_n_u8(0), vdupq_n_u8(0)};
    if constexpr (kQ5) {
      qh[0] = vld1q_u8(blk->qh);
      qh[1] = vld1q_u8(blk->qh + 16);
    }
    for (int c = 0; c < 4; ++c) {
      for (int half = 0; half < 2; ++half) {
        // Elements 64c + 16half + i (low nibbles) and 64c + 32 + 16half + i (high).
        const uint8x16_t raw = vld1q_u8(blk->qs + 32 * c + 16 * half);
        uint8x16_t lo = vandq_u8(raw, m4), hi = vshrq_n_u8(raw, 4);
        if constexpr (kQ5) {
          const uint8x16_t bit_lo = vdupq_n_u8(static_cast<uint8_t>(1 << (2 * c)));
          const uint8x16_t bit_hi = vdupq_n_u8(static_cast<uint8_t>(1 << (2 * c + 1)));
          lo = vorrq_u8(lo, vandq_u8(vtstq_u8(qh[half], bit_lo), h16));
          hi = vorrq_u8(hi, vandq_u8(vtstq_u8(qh[half], bit_hi), h16));
        }
        vst1q_s8(q + 64 * c + 16 * half, s8(lo));
        vst1q_s8(q + 64 * c + 32 + 16 * half, s8(hi));
      }
    }
    alignas(16) uint8_t sm[16];
    k4_scales_mins(blk->scales, sm);
    for (int j = 0; j < 16; ++j) ints[j] = sm[j];
    floats[0] = f16(blk->d);
    floats[1] = f16(blk->dmin);
  }
};

struct GemmQ6K {  // value = d * sc_j * (q - 32), sub-blocks of 16
  static constexpr int kGroup = 256, kSub = 16, kSubValues = 16, kInts = 16, kFloats = 1;
  static constexpr bool kMin = false;
  // ints: sc[16]; floats: d
  static void unpack(const uint8_t* row, int64_t g, int8_t* q, int32_t* ints, float* floats) {
    const auto* blk = reinterpret_cast<const BlockQ6_K*>(row) + g;
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m3 = vdupq_n_u8(0x03);
    const int8x16_t k32 = vdupq_n_s8(32);
    for (int h = 0; h < 2; ++h) {
      uint8x16_t ql[4], qh[2];
      for (int i = 0; i < 4; ++i) ql[i] = vld1q_u8(blk->ql + 64 * h + 16 * i);
      for (int i = 0; i < 2; ++i) qh[i] = vld1q_u8(blk->qh + 32 * h + 16 * i);
      for (int half = 0; half < 2; ++half) {
        // Elements 128h + 32g + 16half + i, g = 0..3 (ggml's Q6_K order).
        const uint8x16_t low[4] = {vandq_u8(ql[half], m4), vandq_u8(ql[2 + half], m4),
                                   vshrq_n_u8(ql[half], 4), vshrq_n_u8(ql[2 + half], 4)};
        const uint8x16_t high[4] = {vshlq_n_u8(vandq_u8(qh[half], m3), 4),
                                    vshlq_n_u8(vandq_u8(vshrq_n_u8(qh[half], 2), m3), 4),
                                    vshlq_n_u8(vandq_u8(vshrq_n_u8(qh[half], 4), m3), 4),
                                    vshlq_n_u8(vshrq_n_u8(qh[half], 6), 4)};
        for (int g4 = 0; g4 < 4; ++g4) {
          vst1q_s8(q + 128 * h + 32 * g4 + 16 * half,
                   vsubq_s8(s8(vorrq_u8(low[g4], high[g4])), k32));
        }
      }
    }
    for (int j = 0; j < 16; ++j) ints[j] = blk->scales[j];
    floats[0] = f16(blk->d);
  }
};

// One 8-row panel in the scratch buffer: a group's meta data is its kInts
// int32 fields then its kFloats float fields, 8 rows each.
template <typename G>
struct GemmPanel {
  static constexpr int kMetaWords = (G::kInts + G::kFloats) * kGemmPanelRows;
  int8_t* quads;
  int32_t* meta;

  static size_t bytes(int64_t cols) {
    return static_cast<size_t>(cols) * kGemmPanelRows +
           static_cast<size_t>(cols / G::kGroup) * kMetaWords * sizeof(int32_t);
  }
  static GemmPanel at(uint8_t* scratch, int64_t cols, int p) {
    uint8_t* base = scratch + p * bytes(cols);
    return {reinterpret_cast<int8_t*>(base),
            reinterpret_cast<int32_t*>(base + static_cast<size_t>(cols) * kGemmPanelRows)};
  }
  const int32_t* ints(int64_t g) const { return meta + g * kMetaWords; }
  const float* floats(int64_t g) const {
    return reinterpret_cast<const float*>(meta + g * kMetaWords + G::kInts * kGemmPanelRows);
  }
};

// The sdot layout of one group's quads: 4x4 transposes of 32-bit quads, so
// quads 4c..4c+3 of rows 4h..4h+3 are 16 contiguous bytes.
struct SdotQuads {
  template <int kGroup>
  static void store(const int8_t (&q)[kGemmPanelRows][kGroup], int8_t* out) {
    constexpr int kRows = kGemmPanelRows;
    for (int c = 0; c < kGroup / 16; ++c) {
      for (int h = 0; h < 2; ++h) {
        uint32x4_t v[4];
        for (int i = 0; i < 4; ++i) {
          v[i] = vreinterpretq_u32_s8(vld1q_s8(q[4 * h + i] + 16 * c));
        }
        const uint32x4_t t0 = vtrn1q_u32(v[0], v[1]), t1 = vtrn2q_u32(v[0], v[1]);
        const uint32x4_t t2 = vtrn1q_u32(v[2], v[3]), t3 = vtrn2q_u32(v[2], v[3]);
        const uint64x2_t u0 = vreinterpretq_u64_u32(t0), u1 = vreinterpretq_u64_u32(t1);
        const uint64x2_t u2 = vreinterpretq_u64_u32(t2), u3 = vreinterpretq_u64_u32(t3);
        const uint64x2_t quad[4] = {vtrn1q_u64(u0, u2), vtrn1q_u64(u1, u3), vtrn2q_u64(u0, u2),
                                    vtrn2q_u64(u1, u3)};
        for (int k = 0; k < 4; ++k) {
          vst1q_s8(out + (4 * c + k) * 4 * kRows + 16 * h, vreinterpretq_s8_u64(quad[k]));
        }
      }
    }
  }
};

// Unpacks rows [r0, r0 + valid) into `panel` (rows past `valid` are zero), the
// quads of each group laid out by Quads::store (SdotQuads here; the i8mm GEMM
// has its own layout).
template <typename G, typename Quads = SdotQuads>
void gemm_repack_panel(const WeightMatrix& w, int64_t r0, int valid, const GemmPanel<G>& panel) {
  constexpr int kRows = kGemmPanelRows;
  const int64_t groups = w.cols / G::kGroup;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  alignas(16) int8_t q[kRows][G::kGroup];
  int32_t ints[kRows][G::kInts + 1];  // + 1: no zero-length arrays
  float floats[kRows][G::kFloats];
  for (int r = valid; r < kRows; ++r) {
    std::memset(q[r], 0, sizeof(q[r]));
    for (int f = 0; f < G::kInts; ++f) ints[r][f] = 0;
    for (int f = 0; f < G::kFloats; ++f) floats[r][f] = 0;
  }
  for (int64_t g = 0; g < groups; ++g) {
    for (int r = 0; r < valid; ++r) {
      G::unpack(base + (r0 + r) * w.row_bytes, g, q[r], ints[r], floats[r]);
    }
    Quads::store(q, panel.quads + g * G::kGroup * kRows);
    int32_t* meta = panel.meta + g * GemmPanel<G>::kMetaWords;
    for (int f = 0; f < G::kInts; ++f) {
      for (int r = 0; r < kRows; ++r) meta[f * kRows + r] = ints[r][f];
    }
    float* fmeta = reinterpret_cast<float*>(meta + G::kInts * kRows);
    for (int f = 0; f < G::kFloats; ++f) {
      for (int r = 0; r < kRows; ++r) fmeta[f * kRows + r] = floats[r][f];
    }
  }
}

// isum[h][t] += 4 values of quad kLane of x[t] times the 4 quads of rows 4h..4h+3.
template <int kLane, int T>
inline void gemm_dot_lane(const int8_t* w, const int8x16_t (&x)[T], int32x4_t (&isum)[2][T]) {
  const int8x16_t w0 = vld1q_s8(w + 32 * kLane), w1 = vld1q_s8(w + 32 * kLane + 16);
  for (int t = 0; t < T; ++t) {
    isum[0][t] = vdotq_laneq_s32(isum[0][t], w0, x[t], kLane);
    isum[1][t] = vdotq_laneq_s32(isum[1][t], w1, x[t], kLane);
  }
}

// Integer dots of kValues values (panel quads at w) with x[t] + offset.
template <int kValues, int T>
inline void gemm_block_dots(const int8_t* w, const int8_t* const (&x)[T], int64_t offset,
                            int32x4_t (&isum)[2][T]) {
  for (int t = 0; t < T; ++t) isum[0][t] = isum[1][t] = vdupq_n_s32(0);
  for (int h = 0; h < kValues / 16; ++h) {
    int8x16_t xv[T];
    for (int t = 0; t < T; ++t) xv[t] = vld1q_s8(x[t] + offset + 16 * h);
    const int8_t* wh = w + h * 4 * 4 * kGemmPanelRows;
    gemm_dot_lane<0, T>(wh, xv, isum);
    gemm_dot_lane<1, T>(wh, xv, isum);
    gemm_dot_lane<2, T>(wh, xv, isum);
    gemm_dot_lane<3, T>(wh, xv, isum);
  }
}

// 8 rows x T tokens over all groups, stores y[t * y_stride + r] for r < valid.
// acc[h][t] holds rows 4h..4h+3 of token t. y starts at the tile's first
// token, t0 (its activations are located here, not by the caller: see the
// x86 gemm_micro).
template <typename G, int T>
void gemm_micro(const GemmPanel<G>& panel, int64_t groups, const QuantActs& all, int64_t t0,
                float* y, int64_t y_stride, int valid) {
  const QuantActs a = acts_from_token(all, t0);
  constexpr int kRows = kGemmPanelRows;
  float32x4_t acc[2][T];
  for (int t = 0; t < T; ++t) acc[0][t] = acc[1][t] = vdupq_n_f32(0);
  const int8_t* x[T];
  for (int t = 0; t < T; ++t) x[t] = a.q + t * a.q_stride;
  const int8_t* quads = panel.quads;
  for (int64_t g = 0; g < groups; ++g) {
    const float* floats = panel.floats(g);
    if constexpr (G::kSub == 1) {
      // x's scale changes every block: scale each block product by (w scale * x scale).
      int32x4_t isum[2][T];
      gemm_block_dots<G::kSubValues, T>(quads, x, g * G::kGroup, isum);
      quads += G::kGroup * kRows;
      for (int h = 0; h < 2; ++h) {
        const float32x4_t scale = vld1q_f32(floats + 4 * h);
        for (int t = 0; t < T; ++t) {
          const float32x4_t s = vmulq_n_f32(scale, a.d[t * a.d_stride + g]);
          acc[h][t] = vfmaq_f32(acc[h][t], vcvtq_f32_s32(isum[h][t]), s);
        }
        if constexpr (G::kMin) {
          const float32x4_t mcoef = vld1q_f32(floats + kRows + 4 * h);
          for (int t = 0; t < T; ++t) {
            acc[h][t] = vfmaq_n_f32(acc[h][t], mcoef, a.dsum[t * a.d32_stride + g]);
          }
        }
      }
    } else {
      // K-quants: exact integer sum of scale * sub-block dot over the
      // super-block, converted once and scaled by d * (x's scale).
      const int32_t* ints = panel.ints(g);
      int32x4_t isb[2][T];
      for (int t = 0; t < T; ++t) isb[0][t] = isb[1][t] = vdupq_n_s32(0);
      for (int j = 0; j < G::kSub; ++j) {
        int32x4_t isum[2][T];
        gemm_block_dots<G::kSubValues, T>(quads, x, g * G::kGroup + j * G::kSubValues, isum);
        quads += G::kSubValues * kRows;
        for (int h = 0; h < 2; ++h) {
          const int32x4_t sc = vld1q_s32(ints + j * kRows + 4 * h);
          for (int t = 0; t < T; ++t) isb[h][t] = vmlaq_s32(isb[h][t], isum[h][t], sc);
        }
      }
      for (int h = 0; h < 2; ++h) {
        const float32x4_t d = vld1q_f32(floats + 4 * h);
        for (int t = 0; t < T; ++t) {
          float32x4_t sum = vmulq_f32(d, vcvtq_f32_s32(isb[h][t]));
          if constexpr (G::kMin) {
            // - dmin * sum_j m_j * (x's sum over sub-block j)
            const int16_t* xs = a.s32 + t * a.d32_stride + g * G::kSub;
            int32x4_t imin = vdupq_n_s32(0);
            for (int j = 0; j < G::kSub; ++j) {
              imin = vmlaq_n_s32(imin, vld1q_s32(ints + (G::kSub + j) * kRows + 4 * h), xs[j]);
            }
            const float32x4_t dmin = vld1q_f32(floats + kRows + 4 * h);
            sum = vfmsq_f32(sum, dmin, vcvtq_f32_s32(imin));
          }
          acc[h][t] = vfmaq_n_f32(acc[h][t], sum, a.d[t * a.d_stride + g]);
        }
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    float* yt = y + t * y_stride;
    if (valid == kGemmPanelRows) {
      vst1q_f32(yt, acc[0][t]);
      vst1q_f32(yt + 4, acc[1][t]);
    } else {
      float rows[kGemmPanelRows];
      vst1q_f32(rows, acc[0][t]);
      vst1q_f32(rows + 4, acc[1][t]);
      for (int r = 0; r < valid; ++r) yt[r] = rows[r];
    }
  }
}

// Runs one panel over T tokens starting at t0.
template <typename G, int T>
void gemm_tokens(const GemmPanel<G>& panel, int64_t groups, const QuantActs& a, int64_t t0,
                 float* y, int64_t y_stride, int valid) {
  gemm_micro<G, T>(panel, groups, a, t0, y + t0 * y_stride, y_stride, valid);
}

// QuantGemmFn: rows [row_begin, row_end) x n tokens, in kGemmRows-row groups.
template <typename G>
void quant_gemm(const WeightMatrix& w, const QuantActs& a, int64_t n, float* y, int64_t y_stride,
                int64_t row_begin, int64_t row_end, uint8_t* scratch) {
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
      gemm_repack_panel<G>(w, r0 + p * kGemmPanelRows, valid[p], panels[p]);
      used = p + 1;
    }
    // Tokens outer: a tile's activations stay in L1 while the panels stream from L2.
    int64_t t = 0;
    for (; t + kGemmTokenTile <= n; t += kGemmTokenTile) {
      for (int p = 0; p < used; ++p) {
        gemm_tokens<G, kGemmTokenTile>(panels[p], groups, a, t, y + r0 + p * kGemmPanelRows,
                                       y_stride, valid[p]);
      }
    }
    for (int p = 0; p < used; ++p) {
      float* yp = y + r0 + p * kGemmPanelRows;
      switch (n - t) {
        case 3:
          gemm_tokens<G, 3>(panels[p], groups, a, t, yp, y_stride, valid[p]);
          break;
        case 2:
          gemm_tokens<G, 2>(panels[p], groups, a, t, yp, y_stride, valid[p]);
          break;
        case 1:
          gemm_tokens<G, 1>(panels[p], groups, a, t, yp, y_stride, valid[p]);
          break;
        default:
          break;
      }
    }
  }
}

template <typename G>
void set_quant_gemm(IsaKernels* table, DType type) {
  static_assert(kGemmPanels * GemmPanel<G>::kMetaWords * sizeof(int32_t) <= G::kGroup * 16,
                "panel meta data must fit gemm_scratch_bytes()");
  table->types[static_cast<uint32_t>(type)].quant_gemm = quant_gemm<G>;
}

inline void register_quant_gemm_neon(IsaKernels* table) {
  set_quant_gemm<Gemm32<NeonQ4_0>>(table, DType::Q4_0);
  set_quant_gemm<Gemm32<NeonQ4_1>>(table, DType::Q4_1);
  set_quant_gemm<Gemm32<NeonQ5_0>>(table, DType::Q5_0);
  set_quant_gemm<Gemm32<NeonQ5_1>>(table, DType::Q5_1);
  set_quant_gemm<Gemm32<NeonQ8_0>>(table, DType::Q8_0);
  set_quant_gemm<GemmK4<false>>(table, DType::Q4_K);
  set_quant_gemm<GemmK4<true>>(table, DType::Q5_K);
  set_quant_gemm<GemmQ6K>(table, DType::Q6_K);
}

}  // namespace
}  // namespace edgelm::kernels_internal
