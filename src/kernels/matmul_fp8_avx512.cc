// FP8 E4M3 weights (BlockFp8E4M3: 32 codes + f16 scale d) with AVX-512
// (F/BW/VL): decode matvec and the row converter behind the F32 panel prefill.
//
// Decode builds the float directly: sign-extend the code b to 32 bits, shift
// left by 20 and keep the sign and the low 7 bits. That is the f32 with bits
//   ((b & 0x80) << 24) | ((b & 0x7F) << 20) = e4m3(b) * 2^-120
// for every code but NaN (0x7F / 0xFF, never written by the quantizer): E4M3's
// 4-bit exponent lands in the low bits of the f32 exponent field, and E4M3
// subnormals (exponent 0) are f32 subnormals with the same factor. To keep the
// products in the normal range, x is scaled by 2^64 once per call (exact) and
// the row sum by 2^56 at the end: products of magnitude |e4m3(b) * x| < 2^-70
// round as subnormals (absolute error below 2^-93 each), and |x| must stay
// below 2^64. Three integer ops per 16 weights; an f16 route (vcvtph2ps) was
// 1.45x slower on Zen 5. Subnormal f32 operands are rare (weights below 1/28672
// of their block's maximum); some Intel cores take a microcode assist on them.
//
// The converter uses the f16 route, exact for every finite result: the half
// with bits ((b & 0x80) << 8) | ((b & 0x7F) << 7) is e4m3(b) / 256.
//
// See matmul_internal.h for why this file uses only intrinsics and local code;
// BlockFp8E4M3 is used for its layout only.
// GCC 12's AVX-512 headers build vectors from _mm*_undefined_*() and then warn
// about them at every inlined use (GCC bug 105593); the warning is spurious here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>

#include "kernels/matmul_internal.h"
#include "kernels/quant_formats.h"

namespace edgelm::kernels_internal {
namespace {

constexpr uint32_t kFp8Slot = slot(DType::FP8_E4M3);
constexpr int kBlock = 32;
// Columns per pass of the decode matvec: the scaled copy of x lives on the
// stack (32 KiB); wider matrices take several passes.
constexpr int64_t kChunkCols = 8192;
constexpr float kXScale = 0x1p64f;
constexpr float kSumScale = 0x1p56f;  // 2^120 / kXScale

// 16 codes -> 16 floats of value e4m3(code) * 2^-120.
inline __m512 codes_scaled(const uint8_t* codes) {
  const __m512i wide =
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
  return _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_slli_epi32(wide, 20), _mm512_set1_epi32(int(0x87F00000u))));
}

// 16 codes -> 16 floats of value e4m3(code) / 256, via f16.
inline __m512 codes_div256(const uint8_t* codes) {
  const __m256i wide =
      _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
  return _mm512_cvtph_ps(
      _mm256_and_si256(_mm256_slli_epi16(wide, 7), _mm256_set1_epi16(short(0xBF80))));
}

inline float f16(uint16_t h) {
  return _cvtsh_ss(h);
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

// R rows x nb blocks against xs (x * 2^64): each x vector is loaded once for R
// rows, R streams in flight. y[r] = sum, or y[r] + sum for later passes.
template <int R>
inline void matvec_rows(const uint8_t* rows, size_t row_bytes, int64_t nb, const float* xs,
                        float* y, bool add) {
  __m512 acc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  // The next group of R rows (same column) is fetched while this one is summed:
  // the hardware prefetcher alone keeps too few lines in flight for short rows.
  const size_t ahead = R * row_bytes;
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 x0 = _mm512_load_ps(xs + b * kBlock);
    const __m512 x1 = _mm512_load_ps(xs + b * kBlock + 16);
    const BlockFp8E4M3* blk[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      blk[r] = reinterpret_cast<const BlockFp8E4M3*>(rows + r * row_bytes) + b;
    }
    // The R scales converted together (one 8-byte load of the four halves).
    alignas(16) uint16_t dh[4] = {};
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) dh[r] = blk[r]->d;
    alignas(16) float d[4];
    _mm_store_ps(d, _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(dh))));
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(blk[r]) + ahead, _MM_HINT_T0);
      const __m512 s = _mm512_fmadd_ps(codes_scaled(blk[r]->qs + 16), x1,
                                       _mm512_mul_ps(codes_scaled(blk[r]->qs), x0));
      acc[r] = _mm512_fmadd_ps(s, _mm512_broadcastss_ps(_mm_load_ss(d + r)), acc[r]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) y[r] = (add ? y[r] : 0.0f) + hsum(acc[r]) * kSumScale;
}

void fp8_matvec(const WeightMatrix& w, const float* x, float* y, int64_t row_begin,
                int64_t row_end) {
  alignas(64) float xs[kChunkCols];
  const uint8_t* base = static_cast<const uint8_t*>(w.data) + row_begin * w.row_bytes;
  const int64_t rows = row_end - row_begin;
  for (int64_t c0 = 0; c0 < w.cols; c0 += kChunkCols) {
    const int64_t cols = w.cols - c0 < kChunkCols ? w.cols - c0 : kChunkCols;
    for (int64_t i = 0; i < cols; i += 16) {
      _mm512_store_ps(xs + i, _mm512_mul_ps(_mm512_loadu_ps(x + c0 + i), _mm512_set1_ps(kXScale)));
    }
    const uint8_t* chunk = base + c0 / kBlock * sizeof(BlockFp8E4M3);
    const int64_t nb = cols / kBlock;
    const bool add = c0 > 0;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
      matvec_rows<4>(chunk + r * w.row_bytes, w.row_bytes, nb, xs, y + r, add);
    }
    for (; r < rows; ++r) matvec_rows<1>(chunk + r * w.row_bytes, w.row_bytes, nb, xs, y + r, add);
  }
}

// (256 d) * (e4m3(code) / 256): both factors exact, so this rounds exactly like
// the scalar d * e4m3(code).
void fp8_to_f32(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockFp8E4M3*>(src);
  for (int64_t b = 0; b < n / kBlock; ++b, dst += kBlock) {
    const BlockFp8E4M3* blk = blocks + b;
    const __m512 scale = _mm512_set1_ps(f16(blk->d) * 256.0f);
    _mm512_storeu_ps(dst, _mm512_mul_ps(codes_div256(blk->qs), scale));
    _mm512_storeu_ps(dst + 16, _mm512_mul_ps(codes_div256(blk->qs + 16), scale));
  }
}

}  // namespace

void register_fp8_avx512_kernels(IsaKernels* table) {
  TypeKernels& k = table->types[kFp8Slot];
  k.matvec = fp8_matvec;
  k.to_f32 = fp8_to_f32;
}

}  // namespace edgelm::kernels_internal
