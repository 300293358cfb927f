// FP8 E4M3 weights with NEON (ARMv8.0: vcvt_f32_f16 is base ISA): decode
// matvec and the row converter behind the F32 panel prefill.
//
// Conversion: the half with bits ((b & 0x80) << 8) | ((b & 0x7F) << 7) is
// exactly e4m3(b) / 256 for every code but NaN (0x7F / 0xFF, never written by
// the quantizer); E4M3 subnormals land on half subnormals with the same factor.
// The 256 is applied once per row (decode) or folded into the block scale.
// (The x86 decode kernels build f32 bits instead, which needs 32-bit lanes: on
// NEON that is two widening steps, more than one vcvt per 4 values.)
//
// See matmul_internal.h for why this file uses only intrinsics and local code;
// BlockFp8E4M3 is used for its layout only.
#include <arm_neon.h>

#include <cstdint>

#include "kernels/matmul_internal.h"
#include "kernels/quant_formats.h"

namespace edgelm::kernels_internal {
namespace {

constexpr uint32_t kFp8Slot = slot(DType::FP8_E4M3);
constexpr int kBlock = 32;

// Codes sign-extended to 16 bits and shifted left by 7 (one vshll) -> halves of
// value e4m3(code) / 256 once the sign's copy in bit 14 is cleared.
inline float16x8_t to_halves(int16x8_t shifted) {
  return vreinterpretq_f16_s16(vandq_s16(shifted, vdupq_n_s16(static_cast<int16_t>(0xBF80))));
}

// The block's 32 codes as 8 vectors of e4m3(code) / 256.
inline void block_floats(const BlockFp8E4M3* blk, float32x4_t f[8]) {
  const int8x16_t c0 = vld1q_s8(reinterpret_cast<const int8_t*>(blk->qs));
  const int8x16_t c1 = vld1q_s8(reinterpret_cast<const int8_t*>(blk->qs + 16));
  const float16x8_t h[4] = {
      to_halves(vshll_n_s8(vget_low_s8(c0), 7)), to_halves(vshll_high_n_s8(c0, 7)),
      to_halves(vshll_n_s8(vget_low_s8(c1), 7)), to_halves(vshll_high_n_s8(c1, 7))};
  for (int k = 0; k < 4; ++k) {
    f[2 * k] = vcvt_f32_f16(vget_low_f16(h[k]));
    f[2 * k + 1] = vcvt_high_f32_f16(h[k]);
  }
}

// Scales of R blocks as floats (f16 -> f32 with the vector instruction: base
// ARMv8.0 has no scalar half type in arithmetic).
template <int R>
inline void scales(const BlockFp8E4M3* const blk[R], float out[4]) {
  uint16_t d[4] = {0, 0, 0, 0};
  for (int r = 0; r < R; ++r) d[r] = blk[r]->d;
  vst1q_f32(out, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(d))));
}

// R rows at once: each x vector is loaded once for R rows, R streams in flight.
template <int R>
inline void matvec_rows(const uint8_t* rows, size_t row_bytes, int64_t nb, const float* x,
                        float* y) {
  float32x4_t acc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r] = vdupq_n_f32(0.0f);
  // The next group of R rows (same column) is fetched while this one is summed.
  const size_t ahead = R * row_bytes;
  for (int64_t b = 0; b < nb; ++b) {
    float32x4_t xv[8];
    for (int k = 0; k < 8; ++k) xv[k] = vld1q_f32(x + b * kBlock + 4 * k);
    const BlockFp8E4M3* blk[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      blk[r] = reinterpret_cast<const BlockFp8E4M3*>(rows + r * row_bytes) + b;
    }
    float d[4];
    scales<R>(blk, d);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      __builtin_prefetch(reinterpret_cast<const char*>(blk[r]) + ahead);
      float32x4_t f[8];
      block_floats(blk[r], f);
      // Two chains of four: shorter dependency than one of eight.
      float32x4_t s0 = vmulq_f32(f[0], xv[0]);
      float32x4_t s1 = vmulq_f32(f[1], xv[1]);
      for (int k = 2; k < 8; k += 2) {
        s0 = vfmaq_f32(s0, f[k], xv[k]);
        s1 = vfmaq_f32(s1, f[k + 1], xv[k + 1]);
      }
      acc[r] = vfmaq_n_f32(acc[r], vaddq_f32(s0, s1), d[r]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) y[r] = vaddvq_f32(acc[r]) * 256.0f;
}

void fp8_matvec(const WeightMatrix& w, const float* x, float* y, int64_t row_begin,
                int64_t row_end) {
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  const int64_t nb = w.cols / kBlock;
  int64_t r = row_begin;
  for (; r + 4 <= row_end; r += 4) {
    matvec_rows<4>(base + r * w.row_bytes, w.row_bytes, nb, x, y + (r - row_begin));
  }
  for (; r < row_end; ++r) {
    matvec_rows<1>(base + r * w.row_bytes, w.row_bytes, nb, x, y + (r - row_begin));
  }
}

// (256 d) * (e4m3(code) / 256): both factors exact, so this rounds exactly like
// the scalar d * e4m3(code).
void fp8_to_f32(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockFp8E4M3*>(src);
  for (int64_t b = 0; b < n / kBlock; ++b, dst += kBlock) {
    const BlockFp8E4M3* blk[1] = {blocks + b};
    float d[4];
    scales<1>(blk, d);
    const float scale = d[0] * 256.0f;
    float32x4_t f[8];
    block_floats(blk[0], f);
    for (int k = 0; k < 8; ++k) vst1q_f32(dst + 4 * k, vmulq_n_f32(f[k], scale));
  }
}

}  // namespace

void register_fp8_neon_kernels(IsaKernels* table) {
  TypeKernels& k = table->types[kFp8Slot];
  k.matvec = fp8_matvec;
  k.to_f32 = fp8_to_f32;
}

}  // namespace edgelm::kernels_internal
