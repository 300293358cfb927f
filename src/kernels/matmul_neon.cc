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

template <typename W>
void matvec(const WeightMatrix& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
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
  table->types[static_cast<uint32_t>(DType::F32)] = {matvec<F32Weights>, to_f32<F32Weights>,
                                                     nullptr};
  table->types[static_cast<uint32_t>(DType::F16)] = {matvec<F16Weights>, to_f32<F16Weights>,
                                                     nullptr};
  table->types[static_cast<uint32_t>(DType::BF16)] = {matvec<BF16Weights>, to_f32<BF16Weights>,
                                                      nullptr};
}

}  // namespace edgelm::kernels_internal
