// AVX-512 kernels (F/BW/VL): 16 floats per vector, masked loads for row tails.
// See matmul_internal.h for why this file uses only intrinsics and local code.
// GCC 12's AVX-512 headers build vectors from _mm*_undefined_*() and then warn
// about them at every inlined use (GCC bug 105593); the warning is spurious here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>

#include "kernels/matmul_internal.h"

namespace edgelm::kernels_internal {
namespace {

inline __mmask16 tail_mask(int64_t count) {
  return static_cast<__mmask16>((1u << count) - 1u);
}

// Horizontal sum. (Not _mm512_reduce_add_ps: GCC 12 warns inside it.)
inline float hsum(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m256 v8 = _mm512_castps512_ps256(v);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps(v8, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Loads 16 weights starting at element i as F32; the *_tail forms load `count` < 16.
struct F32Weights {
  static constexpr int kBytes = 4;
  static __m512 load(const void* row, int64_t i) {
    return _mm512_loadu_ps(static_cast<const float*>(row) + i);
  }
  static __m512 load_tail(const void* row, int64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(row) + i);
  }
};

struct F16Weights {
  static constexpr int kBytes = 2;
  static __m512 load(const void* row, int64_t i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + i)));
  }
  static __m512 load_tail(const void* row, int64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(row) + i));
  }
};

// bf16 is the top half of an f32: widen to 32 bits and shift left by 16.
struct BF16Weights {
  static constexpr int kBytes = 2;
  static __m512 widen(__m256i v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  }
  static __m512 load(const void* row, int64_t i) {
    return widen(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + i)));
  }
  static __m512 load_tail(const void* row, int64_t i, __mmask16 m) {
    return widen(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(row) + i));
  }
};

// R rows at once, two vectors per row per step: 2R independent accumulators and
// R contiguous weight streams, with each x vector loaded once for all rows.
template <typename W, int R>
inline void matvec_block(const uint8_t* rows, size_t row_bytes, const float* x, int64_t cols,
                         float* y) {
  const void* row[R];
  __m512 acc0[R], acc1[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    row[r] = rows + r * row_bytes;
    acc0[r] = _mm512_setzero_ps();
    acc1[r] = _mm512_setzero_ps();
  }
  // The next block of R rows (the same offsets, R rows further) is fetched
  // while this one is summed: rows are short, so the hardware prefetcher alone
  // keeps too few lines in flight.
  const size_t ahead = R * row_bytes;
  int64_t i = 0;
  for (; i + 32 <= cols; i += 32) {
    const __m512 x0 = _mm512_loadu_ps(x + i);
    const __m512 x1 = _mm512_loadu_ps(x + i + 16);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      // One 64-byte line per row per step for 2-byte types, two for F32.
      const char* p = static_cast<const char*>(row[r]) + ahead + i * W::kBytes;
      _mm_prefetch(p, _MM_HINT_T0);
      if (W::kBytes == 4) _mm_prefetch(p + 64, _MM_HINT_T0);
      acc0[r] = _mm512_fmadd_ps(W::load(row[r], i), x0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(W::load(row[r], i + 16), x1, acc1[r]);
    }
  }
  if (i + 16 <= cols) {
    const __m512 x0 = _mm512_loadu_ps(x + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc0[r] = _mm512_fmadd_ps(W::load(row[r], i), x0, acc0[r]);
    i += 16;
  }
  if (i < cols) {
    const __mmask16 m = tail_mask(cols - i);
    const __m512 x0 = _mm512_maskz_loadu_ps(m, x + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc1[r] = _mm512_fmadd_ps(W::load_tail(row[r], i, m), x0, acc1[r]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) y[r] = hsum(_mm512_add_ps(acc0[r], acc1[r]));
}

// Lane j of the result is the sum of v[j]'s lanes: 15 adds and 30 shuffles for
// 16 rows, instead of 16 separate horizontal sums.
inline __m512 hsum16(const __m512* v) {
  __m512 pairs[8];  // per 128-bit lane: partial sums of rows 2k, 2k+1, 2k, 2k+1
#pragma GCC unroll 8
  for (int k = 0; k < 8; ++k) {
    pairs[k] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]),
                             _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]));
  }
  __m512 quads[4];  // per 128-bit lane: partial sums of rows 4k .. 4k+3
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const __m512d a = _mm512_castps_pd(pairs[2 * k]);
    const __m512d b = _mm512_castps_pd(pairs[2 * k + 1]);
    quads[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // Add the 128-bit lanes: even + odd lanes of two vectors, twice.
  const __m512 h0 = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], 0x88),
                                  _mm512_shuffle_f32x4(quads[0], quads[1], 0xDD));
  const __m512 h1 = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], 0x88),
                                  _mm512_shuffle_f32x4(quads[2], quads[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(h0, h1, 0x88), _mm512_shuffle_f32x4(h0, h1, 0xDD));
}

// (16 / T) short rows x T tokens, one accumulator per (row, token) and one
// transposed horizontal sum for all of them: for rows this short (attention
// keys and values) a horizontal sum per product would cost as much as the
// products, and the rows are in cache anyway. Rows past `rows` repeat the last
// one and are not stored.
template <typename W, int T, bool kFull>
inline void short_rows_tile(const uint8_t* base, size_t row_bytes, int64_t rows, const float* x,
                            int64_t cols, float* y, int64_t y_stride) {
  constexpr int R = 16 / T;
  const uint8_t* row[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) row[r] = base + (kFull || r < rows ? r : rows - 1) * row_bytes;
  __m512 acc[16];
#pragma GCC unroll 16
  for (int k = 0; k < 16; ++k) acc[k] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= cols; i += 16) {
    __m512 xv[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(x + t * cols + i);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 wv = W::load(row[r], i);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) acc[r * T + t] = _mm512_fmadd_ps(wv, xv[t], acc[r * T + t]);
    }
  }
  if (i < cols) {
    const __mmask16 m = tail_mask(cols - i);
    __m512 xv[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) xv[t] = _mm512_maskz_loadu_ps(m, x + t * cols + i);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 wv = W::load_tail(row[r], i, m);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) acc[r * T + t] = _mm512_fmadd_ps(wv, xv[t], acc[r * T + t]);
    }
  }
  if (kFull && T == 1) return _mm512_storeu_ps(y, hsum16(acc));
  alignas(64) float sums[16];
  _mm512_store_ps(sums, hsum16(acc));
  const int64_t live = rows < R ? rows : R;
  for (int64_t r = 0; r < live; ++r) {
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = sums[r * T + t];
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

// Short rows (cols <= kShortRowCols) for 1 to kShortRowTokens tokens.
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

// R weight rows x T tokens of F32: R*T accumulators (4x6: 24 of 32 registers,
// plus 6 x vectors and 1 weight vector).
template <int R, int T>
inline void panel_tile(const float* panel, int64_t panel_stride, int64_t cols, const float* x,
                       int64_t x_stride, float* y, int64_t y_stride) {
  __m512 acc[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 16 <= cols; i += 16) {
    __m512 xv[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(x + t * x_stride + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 wv = _mm512_loadu_ps(panel + r * panel_stride + i);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  if (i < cols) {
    const __mmask16 m = tail_mask(cols - i);
    __m512 xv[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) xv[t] = _mm512_maskz_loadu_ps(m, x + t * x_stride + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 wv = _mm512_maskz_loadu_ps(m, panel + r * panel_stride + i);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = hsum(acc[r][t]);
  }
}

// One tile of R rows x nt (<= kTokenBlock) tokens.
template <int R>
inline void panel_rows(const float* panel, int64_t panel_stride, int64_t cols, const float* x,
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
  // Tokens in groups of 6 outermost, so those x rows stay in L1 while the
  // (L2-resident) panel streams past them; each weight vector loaded from the
  // panel then feeds 6 FMAs.
  constexpr int64_t kTokenBlock = 6;
  for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
    const int64_t nt = n - t0 < kTokenBlock ? n - t0 : kTokenBlock;
    const float* xt = x + t0 * x_stride;
    float* yt = y + t0 * y_stride;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
      panel_rows<4>(panel + r * panel_stride, panel_stride, cols, xt, x_stride, nt, yt + r,
                    y_stride);
    }
    switch (rows - r) {
      case 3:
        panel_rows<3>(panel + r * panel_stride, panel_stride, cols, xt, x_stride, nt, yt + r,
                      y_stride);
        break;
      case 2:
        panel_rows<2>(panel + r * panel_stride, panel_stride, cols, xt, x_stride, nt, yt + r,
                      y_stride);
        break;
      case 1:
        panel_rows<1>(panel + r * panel_stride, panel_stride, cols, xt, x_stride, nt, yt + r,
                      y_stride);
        break;
      default:
        break;
    }
  }
}

template <typename W>
void to_f32(const void* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, W::load(src, i));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(dst + i, m, W::load_tail(src, i, m));
  }
}

}  // namespace

void register_avx512_kernels(IsaKernels* table) {
  table->panel_matmul = panel_matmul;
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
