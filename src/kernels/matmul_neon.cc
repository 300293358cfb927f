// NEON kernels (ARMv8-A base): 4 floats per vector. F16 widens with
// vcvt_f32_f16, BF16 with a 16-bit left shift. Row tails (< 8 values) are
// copied into a zero-padded buffer so every load is a full vector.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "kernels/matmul_internal.h"

namespace edgelm::kernels_internal {
namespace {

// Loads 8 weights starting at element i as two F32 vectors.
struct F32Weights {
  using Elem = float;
  static void load8(const void* row, int64_t i, float32x4_t* lo, float32x4_t* hi) {
    const float* p = static_cast<const float*>(row) + i;
    *lo = vld1q_f32(p);
    *hi = vld1q_f32(p + 4);
  }
};

struct F16Weights {
  using Elem = uint16_t;
  static void load8(const void* row, int64_t i, float32x4_t* lo, float32x4_t* hi) {
    const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(static_cast<const uint16_t*>(row) + i));
    *lo = vcvt_f32_f16(vget_low_f16(h));
    *hi = vcvt_high_f32_f16(h);
  }
};

struct BF16Weights {
  using Elem = uint16_t;
  static void load8(const void* row, int64_t i, float32x4_t* lo, float32x4_t* hi) {
    const uint16x8_t b = vld1q_u16(static_cast<const uint16_t*>(row) + i);
    *lo = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(b), 16));
    *hi = vreinterpretq_f32_u32(vshll_high_n_u16(b, 16));
  }
};

template <typename W>
inline void load8_tail(const void* row, int64_t i, int64_t count, float32x4_t* lo,
                       float32x4_t* hi) {
  typename W::Elem buf[8] = {};
  std::memcpy(buf, static_cast<const typename W::Elem*>(row) + i,
              static_cast<size_t>(count) * sizeof(typename W::Elem));
  W::load8(buf, 0, lo, hi);
}

// R rows at once, 8 values per row per step: 2R accumulators, R weight streams.
template <typename W, int R>
inline void matvec_block(const uint8_t* rows, size_t row_bytes, const float* x, int64_t cols,
                         float* y) {
  const void* row[R];
  float32x4_t acc0[R], acc1[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    row[r] = rows + r * row_bytes;
    acc0[r] = vdupq_n_f32(0.0f);
    acc1[r] = vdupq_n_f32(0.0f);
  }
  // The next block of R rows (the same offsets, R rows further) is fetched
  // while this one is summed: rows are short, so the hardware prefetcher alone
  // keeps too few lines in flight.
  const size_t ahead = R * row_bytes;
  int64_t i = 0;
  for (; i + 8 <= cols; i += 8) {
    const float32x4_t x0 = vld1q_f32(x + i);
    const float32x4_t x1 = vld1q_f32(x + i + 4);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      __builtin_prefetch(static_cast<const char*>(row[r]) + ahead + i * sizeof(typename W::Elem));
      float32x4_t lo, hi;
      W::load8(row[r], i, &lo, &hi);
      acc0[r] = vfmaq_f32(acc0[r], lo, x0);
      acc1[r] = vfmaq_f32(acc1[r], hi, x1);
    }
  }
  if (i < cols) {
    float32x4_t x0, x1;
    load8_tail<F32Weights>(x, i, cols - i, &x0, &x1);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      float32x4_t lo, hi;
      load8_tail<W>(row[r], i, cols - i, &lo, &hi);
      acc0[r] = vfmaq_f32(acc0[r], lo, x0);
      acc1[r] = vfmaq_f32(acc1[r], hi, x1);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) y[r] = vaddvq_f32(vaddq_f32(acc0[r], acc1[r]));
}

// Lane j of the result is the sum of v[j]'s lanes (4 vectors in 3 pairwise adds).
inline float32x4_t hsum4(const float32x4_t* v) {
  return vpaddq_f32(vpaddq_f32(v[0], v[1]), vpaddq_f32(v[2], v[3]));
}

// (16 / T) short rows x T tokens, one accumulator per (row, token) and one
// transposed horizontal sum for all of them: for rows this short (attention
// keys and values) a horizontal sum per product would cost as much as the
// products, and the rows are in cache anyway. Accumulators are token-major
// (acc[t * R + r]), so when R is a multiple of 4 each reduced vector holds 4
// consecutive rows of one token and full tiles store it directly. T = 3 uses 15
// accumulators (5 rows); the 16th stays zero. Rows past `rows` repeat the last
// one and are not stored.
template <typename W, int T, bool kFull>
inline void short_rows_tile(const uint8_t* base, size_t row_bytes, int64_t rows, const float* x,
                            int64_t cols, float* y, int64_t y_stride) {
  constexpr int R = 16 / T;
  const uint8_t* row[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) row[r] = base + (kFull || r < rows ? r : rows - 1) * row_bytes;
  float32x4_t acc[16];
#pragma GCC unroll 16
  for (int k = 0; k < 16; ++k) acc[k] = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 8 <= cols; i += 8) {
    float32x4_t x0[T], x1[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      x0[t] = vld1q_f32(x + t * cols + i);
      x1[t] = vld1q_f32(x + t * cols + i + 4);
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      float32x4_t lo, hi;
      W::load8(row[r], i, &lo, &hi);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        acc[t * R + r] = vfmaq_f32(acc[t * R + r], lo, x0[t]);
        acc[t * R + r] = vfmaq_f32(acc[t * R + r], hi, x1[t]);
      }
    }
  }
  if (i < cols) {
    float32x4_t x0[T], x1[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) load8_tail<F32Weights>(x + t * cols, i, cols - i, &x0[t], &x1[t]);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      float32x4_t lo, hi;
      load8_tail<W>(row[r], i, cols - i, &lo, &hi);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        acc[t * R + r] = vfmaq_f32(acc[t * R + r], lo, x0[t]);
        acc[t * R + r] = vfmaq_f32(acc[t * R + r], hi, x1[t]);
      }
    }
  }
  float32x4_t sums[4];  // lane j of sums[g]: acc[4 * g + j]
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) sums[g] = hsum4(acc + 4 * g);
  if (kFull && R % 4 == 0) {
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) vst1q_f32(y + (4 * g / R) * y_stride + (4 * g % R), sums[g]);
    return;
  }
  float out[16];
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) vst1q_f32(out + 4 * g, sums[g]);
  const int64_t live = rows < R ? rows : R;
  for (int64_t r = 0; r < live; ++r) {
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = out[t * R + r];
  }
}

// y[t * y_stride + r - row_begin] for rows [row_begin, row_end).
template <typename W, int T>
void short_rows_range(const WeightMatrix& w, const float* x, float* y, int64_t y_stride,
                      int64_t row_begin, int64_t row_end) {
  constexpr int64_t R = 16 / T;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  int64_t r = row_begin;
  for (; r + R <= row_end; r += R) {
    short_rows_tile<W, T, true>(base + r * w.row_bytes, w.row_bytes, R, x, w.cols,
                                y + (r - row_begin), y_stride);
  }
  if (r < row_end) {
    short_rows_tile<W, T, false>(base + r * w.row_bytes, w.row_bytes, row_end - r, x, w.cols,
                                 y + (r - row_begin), y_stride);
  }
}

// Short rows (cols <= kShortRowCols) for 1 token, and 2 to kShortRowTokens
// tokens at any row length.
template <typename W>
void short_rows(const WeightMatrix& w, const float* x, int64_t n, float* y, int64_t y_stride,
                int64_t row_begin, int64_t row_end) {
  float* out = y + row_begin;
  switch (n) {
    case 1:
      return short_rows_range<W, 1>(w, x, out, y_stride, row_begin, row_end);
    case 2:
      return short_rows_range<W, 2>(w, x, out, y_stride, row_begin, row_end);
    case 3:
      return short_rows_range<W, 3>(w, x, out, y_stride, row_begin, row_end);
    default:
      return short_rows_range<W, 4>(w, x, out, y_stride, row_begin, row_end);
  }
}

template <typename W>
void matvec(const WeightMatrix& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  if (w.cols <= kShortRowCols) return short_rows_range<W, 1>(w, x, y, 1, row_begin, row_end);
  int64_t r = row_begin;
  for (; r + 4 <= row_end; r += 4) {
    matvec_block<W, 4>(base + r * w.row_bytes, w.row_bytes, x, w.cols, y + (r - row_begin));
  }
  for (; r < row_end; ++r) {
    matvec_block<W, 1>(base + r * w.row_bytes, w.row_bytes, x, w.cols, y + (r - row_begin));
  }
}

// R weight rows x T tokens of F32. The R weight vectors stay in registers
// while the T token vectors stream through one: 4x6 uses 24 accumulators + 4
// weights + 1 token of the 32 registers, and each weight vector (the
// L2-resident operand) feeds 6 FMAs. Tails (< 4 values) are summed in scalar.
template <int R, int T>
inline void panel_tile(const float* panel, int64_t panel_stride, int64_t cols, const float* x,
                       int64_t x_stride, float* y, int64_t y_stride) {
  float32x4_t acc[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_f32(0.0f);
  }
  int64_t i = 0;
  for (; i + 4 <= cols; i += 4) {
    float32x4_t wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wv[r] = vld1q_f32(panel + r * panel_stride + i);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const float32x4_t xv = vld1q_f32(x + t * x_stride + i);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = vfmaq_f32(acc[r][t], wv[r], xv);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      float sum = vaddvq_f32(acc[r][t]);
      for (int64_t j = i; j < cols; ++j) sum += panel[r * panel_stride + j] * x[t * x_stride + j];
      y[t * y_stride + r] = sum;
    }
  }
}

constexpr int64_t kTokenBlock = 6;

// One tile of R rows x nt (<= kTokenBlock) tokens.
template <int R>
inline void panel_tokens(const float* panel, int64_t panel_stride, int64_t cols, const float* x,
                         int64_t x_stride, int64_t nt, float* y, int64_t y_stride) {
  switch (nt) {
    case 6:
      return panel_tile<R, 6>(panel, panel_stride, cols, x, x_stride, y, y_stride);
    case 5:
      return panel_tile<R, 5>(panel, panel_stride, cols, x, x_stride, y, y_stride);
    case 4:
      return panel_tile<R, 4>(panel, panel_stride, cols, x, x_stride, y, y_stride);
    case 3:
      return panel_tile<R, 3>(panel, panel_stride, cols, x, x_stride, y, y_stride);
    case 2:
      return panel_tile<R, 2>(panel, panel_stride, cols, x, x_stride, y, y_stride);
    default:
      return panel_tile<R, 1>(panel, panel_stride, cols, x, x_stride, y, y_stride);
  }
}

void panel_matmul(const float* panel, int64_t panel_stride, int64_t rows, int64_t cols,
                  const float* x, int64_t x_stride, int64_t n, float* y, int64_t y_stride) {
  // Token blocks outermost, so those x rows stay in L1 while the (L2-resident)
  // panel streams past them.
  for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
    const int64_t nt = n - t0 < kTokenBlock ? n - t0 : kTokenBlock;
    const float* xt = x + t0 * x_stride;
    float* yt = y + t0 * y_stride;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
      panel_tokens<4>(panel + r * panel_stride, panel_stride, cols, xt, x_stride, nt, yt + r,
                      y_stride);
    }
    for (; r < rows; ++r) {
      panel_tokens<1>(panel + r * panel_stride, panel_stride, cols, xt, x_stride, nt, yt + r,
                      y_stride);
    }
  }
}

template <typename W>
void to_f32(const void* src, float* dst, int64_t n) {
  int64_t i = 0;
  float32x4_t lo, hi;
  for (; i + 8 <= n; i += 8) {
    W::load8(src, i, &lo, &hi);
    vst1q_f32(dst + i, lo);
    vst1q_f32(dst + i + 4, hi);
  }
  if (i < n) {
    float buf[8];
    load8_tail<W>(src, i, n - i, &lo, &hi);
    vst1q_f32(buf, lo);
    vst1q_f32(buf + 4, hi);
    std::memcpy(dst + i, buf, static_cast<size_t>(n - i) * sizeof(float));
  }
}

}  // namespace

void f32_to_f16_neon(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {  // FPCR's default rounding: to nearest even
    vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
  }
  for (; i < n; ++i) {
    vst1_lane_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vdupq_n_f32(src[i]))), 0);
  }
}

void register_neon_kernels(IsaKernels* table) {
  table->panel_matmul = panel_matmul;
  table->f32_to_f16 = f32_to_f16_neon;
  TypeKernels& f32 = table->types[static_cast<uint32_t>(DType::F32)];
  f32.matvec = matvec<F32Weights>;
  f32.to_f32 = to_f32<F32Weights>;
  f32.short_rows = short_rows<F32Weights>;
  TypeKernels& f16 = table->types[static_cast<uint32_t>(DType::F16)];
  f16.matvec = matvec<F16Weights>;
  f16.to_f32 = to_f32<F16Weights>;
  f16.short_rows = short_rows<F16Weights>;
  TypeKernels& bf16 = table->types[static_cast<uint32_t>(DType::BF16)];
  bf16.matvec = matvec<BF16Weights>;
  bf16.to_f32 = to_f32<BF16Weights>;
  bf16.short_rows = short_rows<BF16Weights>;
}

}  // namespace edgelm::kernels_internal
