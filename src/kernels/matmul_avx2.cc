// AVX2 + FMA + F16C kernels: 8 floats per vector. Row tails (< 8 values) are
// copied into a zero-padded 8-value buffer, so every load is a full vector.
// See matmul_internal.h for why this file uses only intrinsics and local code.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/matmul_internal.h"

namespace edgelm::kernels_internal {
namespace {

struct F32Weights {
  using Elem = float;
  static __m256 load(const void* row, int64_t i) {
    return _mm256_loadu_ps(static_cast<const float*>(row) + i);
  }
};

struct F16Weights {
  using Elem = uint16_t;
  static __m256 load(const void* row, int64_t i) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i)));
  }
};

// bf16 is the top half of an f32: widen to 32 bits and shift left by 16.
struct BF16Weights {
  using Elem = uint16_t;
  static __m256 load(const void* row, int64_t i) {
    const __m128i v =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
  }
};

// Loads count (< 8) values starting at element i, zero-padded to a full vector.
template <typename W>
inline __m256 load_tail(const void* row, int64_t i, int64_t count) {
  alignas(32) typename W::Elem buf[8] = {};
  std::memcpy(buf, static_cast<const typename W::Elem*>(row) + i,
              static_cast<size_t>(count) * sizeof(typename W::Elem));
  return W::load(buf, 0);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// R rows at once, two vectors per row per step: 2R independent accumulators and
// R contiguous weight streams, each x vector loaded once for all rows.
template <typename W, int R>
inline void matvec_block(const uint8_t* rows, size_t row_bytes, const float* x, int64_t cols,
                         float* y) {
  const void* row[R];
  __m256 acc0[R], acc1[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    row[r] = rows + r * row_bytes;
    acc0[r] = _mm256_setzero_ps();
    acc1[r] = _mm256_setzero_ps();
  }
  // The next block of R rows (the same offsets, R rows further) is fetched
  // while this one is summed: rows are short, so the hardware prefetcher alone
  // keeps too few lines in flight.
  const size_t ahead = R * row_bytes;
  int64_t i = 0;
  for (; i + 16 <= cols; i += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + i);
    const __m256 x1 = _mm256_loadu_ps(x + i + 8);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      __builtin_prefetch(static_cast<const char*>(row[r]) + ahead + i * sizeof(typename W::Elem));
      acc0[r] = _mm256_fmadd_ps(W::load(row[r], i), x0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(W::load(row[r], i + 8), x1, acc1[r]);
    }
  }
  if (i + 8 <= cols) {
    const __m256 x0 = _mm256_loadu_ps(x + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc0[r] = _mm256_fmadd_ps(W::load(row[r], i), x0, acc0[r]);
    i += 8;
  }
  if (i < cols) {
    const __m256 x0 = load_tail<F32Weights>(x, i, cols - i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      acc1[r] = _mm256_fmadd_ps(load_tail<W>(row[r], i, cols - i), x0, acc1[r]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) y[r] = hsum(_mm256_add_ps(acc0[r], acc1[r]));
}

// Lane j of the result is the sum of v[j]'s lanes (8 rows in 7 adds).
inline __m256 hsum8(const __m256* v) {
  const __m256 s01 = _mm256_hadd_ps(v[0], v[1]);
  const __m256 s23 = _mm256_hadd_ps(v[2], v[3]);
  const __m256 s45 = _mm256_hadd_ps(v[4], v[5]);
  const __m256 s67 = _mm256_hadd_ps(v[6], v[7]);
  const __m256 s0123 = _mm256_hadd_ps(s01, s23);  // rows 0-3 from each 128-bit half
  const __m256 s4567 = _mm256_hadd_ps(s45, s67);
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20),
                       _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

// (8 / T) short rows x T tokens, one accumulator per (row, token) and one
// transposed horizontal sum for all of them: for rows this short (attention
// keys and values) a horizontal sum per product would cost as much as the
// products, and the rows are in cache anyway. Rows past `rows` repeat the last
// one and are not stored.
template <typename W, int T, bool kFull>
inline void short_rows_tile(const uint8_t* base, size_t row_bytes, int64_t rows, const float* x,
                            int64_t cols, float* y, int64_t y_stride) {
  constexpr int R = 8 / T;
  const uint8_t* row[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) row[r] = base + (kFull || r < rows ? r : rows - 1) * row_bytes;
  __m256 acc[8];
#pragma GCC unroll 8
  for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= cols; i += 8) {
    __m256 xv[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(x + t * cols + i);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 wv = W::load(row[r], i);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) acc[r * T + t] = _mm256_fmadd_ps(wv, xv[t], acc[r * T + t]);
    }
  }
  if (i < cols) {
    __m256 xv[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) xv[t] = load_tail<F32Weights>(x + t * cols, i, cols - i);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 wv = load_tail<W>(row[r], i, cols - i);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) acc[r * T + t] = _mm256_fmadd_ps(wv, xv[t], acc[r * T + t]);
    }
  }
  if (kFull && T == 1) return _mm256_storeu_ps(y, hsum8(acc));
  alignas(32) float sums[8];
  _mm256_store_ps(sums, hsum8(acc));
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
  constexpr int64_t R = 8 / T;
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
  // With 8 accumulators, 3 or 4 tokens would leave 2 rows per tile: two passes
  // of 4 rows x 2 tokens (or 8 rows x 1) are faster (the rows stay in cache).
  float* out = y + row_begin;
  const float* x2 = x + 2 * w.cols;
  float* out2 = out + 2 * y_stride;
  switch (n) {
    case 1:
      return short_rows_range<W, 1>(w, x, out, y_stride, row_begin, row_end);
    case 2:
      return short_rows_range<W, 2>(w, x, out, y_stride, row_begin, row_end);
    case 3:
      short_rows_range<W, 2>(w, x, out, y_stride, row_begin, row_end);
      return short_rows_range<W, 1>(w, x2, out2, y_stride, row_begin, row_end);
    default:
      short_rows_range<W, 2>(w, x, out, y_stride, row_begin, row_end);
      return short_rows_range<W, 2>(w, x2, out2, y_stride, row_begin, row_end);
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
// while the T token vectors stream through one register: 2x6 uses 12
// accumulators + 2 weights + 1 token of the 16 registers, and each weight
// vector (the L2-resident operand) feeds 6 FMAs.
template <int R, int T>
inline void panel_tile(const float* panel, int64_t panel_stride, int64_t cols, const float* x,
                       int64_t x_stride, float* y, int64_t y_stride) {
  __m256 acc[R][T];
#pragma GCC unroll 2
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 8 <= cols; i += 8) {
    __m256 wv[R];
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) wv[r] = _mm256_loadu_ps(panel + r * panel_stride + i);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_loadu_ps(x + t * x_stride + i);
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  if (i < cols) {
    __m256 wv[R];
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r)
      wv[r] = load_tail<F32Weights>(panel + r * panel_stride, i, cols - i);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m256 xv = load_tail<F32Weights>(x + t * x_stride, i, cols - i);
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
#pragma GCC unroll 2
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = hsum(acc[r][t]);
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
    for (; r + 2 <= rows; r += 2) {
      panel_tokens<2>(panel + r * panel_stride, panel_stride, cols, xt, x_stride, nt, yt + r,
                      y_stride);
    }
    if (r < rows) {
      panel_tokens<1>(panel + r * panel_stride, panel_stride, cols, xt, x_stride, nt, yt + r,
                      y_stride);
    }
  }
}

template <typename W>
void to_f32(const void* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, W::load(src, i));
  if (i < n) {
    alignas(32) float buf[8];
    _mm256_store_ps(buf, load_tail<W>(src, i, n - i));
    std::memcpy(dst + i, buf, static_cast<size_t>(n - i) * sizeof(float));
  }
}

}  // namespace

void f32_to_f16_f16c(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  for (; i < n; ++i) dst[i] = static_cast<uint16_t>(_cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT));
}

void register_avx2_kernels(IsaKernels* table) {
  table->panel_matmul = panel_matmul;
  table->f32_to_f16 = f32_to_f16_f16c;
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
