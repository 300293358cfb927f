// NEON (ARMv8.0) activation quantization for the integer kernels: ggml's Q8_0
// and Q8_K of matmul_quant.cc's scalar quantize_acts_q8_0 / quantize_acts_q8_K,
// giving the same bytes for every input (quantize_acts_test.cc).
//
// Rounding twice (a product, then a sum) is part of the reference and ARM64
// has FMA in its base ISA, so FP contraction is off for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "kernels/matmul_internal.h"
#include "kernels/quantize_acts_simd.h"

namespace edgelm::kernels_internal {
namespace {

// One Q8_0 quant vector: v = x * id, NaN and |v| >= 1e9 give 0, then
// vcvtaq rounds half away from zero like roundf.
inline int32x4_t round_q8_0(float32x4_t x, float32x4_t id) {
  const float32x4_t v = vmulq_f32(x, id);
  const uint32x4_t in_range = vcaltq_f32(v, vdupq_n_f32(1e9f));  // false for NaN
  return vcvtaq_s32_f32(vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), in_range)));
}

// 16 int32 values (4 vectors) to 16 bytes, each truncated to its low byte.
inline int8x16_t narrow_16(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
  const int16x8_t ab = vcombine_s16(vmovn_s32(a), vmovn_s32(b));
  const int16x8_t cd = vcombine_s16(vmovn_s32(c), vmovn_s32(d));
  return vcombine_s8(vmovn_s16(ab), vmovn_s16(cd));
}

void quantize_q8_0_neon(const float* x, int64_t cols, int8_t* q, float* d, float* dsum,
                        int16_t* s32, int16_t* s16) {
  const uint32x4_t abs_mask = vdupq_n_u32(0x7fffffffu);
  for (int64_t b = 0; b < cols / kActsQ8_0Block; ++b) {
    const float* xb = x + b * kActsQ8_0Block;
    float32x4_t xv[8];
    uint32x4_t m = vdupq_n_u32(0);
    for (int k = 0; k < 8; ++k) {
      xv[k] = vld1q_f32(xb + 4 * k);
      // |x| compared as integers: the order of the floats, NaNs above infinity.
      m = vmaxq_u32(m, vandq_u32(vreinterpretq_u32_f32(xv[k]), abs_mask));
    }
    const uint32_t amax_bits = vmaxvq_u32(m);
    if (amax_bits > 0x7f800000u) {
      // A NaN: the reference's running maximum depends on where it is.
      quantize_block_q8_0_exact(xb, q + b * kActsQ8_0Block, d + b, dsum + b, s32 + b, s16 + 2 * b);
      continue;
    }
    const float db = acts_bits_float(amax_bits) / 127;
    const float id = db != 0 ? 1.0f / db : 0.0f;
    const float d_rounded = vgetq_lane_f32(vcvt_f32_f16(vcvt_f16_f32(vdupq_n_f32(db))), 0);
    const float32x4_t idv = vdupq_n_f32(id);
    int32x4_t qi[8];
    for (int k = 0; k < 8; ++k) qi[k] = round_q8_0(xv[k], idv);
    // |q| <= 127 here, so the bytes hold the values and their sums.
    const int8x16_t lo_bytes = narrow_16(qi[0], qi[1], qi[2], qi[3]);
    const int8x16_t hi_bytes = narrow_16(qi[4], qi[5], qi[6], qi[7]);
    vst1q_s8(q + b * kActsQ8_0Block, lo_bytes);
    vst1q_s8(q + b * kActsQ8_0Block + 16, hi_bytes);
    const int lo = vaddlvq_s8(lo_bytes), hi = vaddlvq_s8(hi_bytes);
    d[b] = d_rounded;
    s16[2 * b] = static_cast<int16_t>(lo);
    s16[2 * b + 1] = static_cast<int16_t>(hi);
    s32[b] = static_cast<int16_t>(lo + hi);
    dsum[b] = d_rounded * static_cast<float>(lo + hi);
  }
}

// The largest and smallest value of a block, NaNs skipped (the reference's
// strict comparison never picks one); both start at 0 like the reference.
void block_range(const float* xb, float* largest, float* smallest) {
  float32x4_t hi0 = vdupq_n_f32(0), hi1 = hi0, lo0 = hi0, lo1 = hi0;
  for (int j = 0; j < kActsQ8_KBlock; j += 8) {
    const float32x4_t v0 = vld1q_f32(xb + j), v1 = vld1q_f32(xb + j + 4);
    hi0 = vmaxq_f32(hi0, v0);
    lo0 = vminq_f32(lo0, v0);
    hi1 = vmaxq_f32(hi1, v1);
    lo1 = vminq_f32(lo1, v1);
  }
  *largest = vmaxvq_f32(vmaxq_f32(hi0, hi1));
  *smallest = vminvq_f32(vminq_f32(lo0, lo1));
  if (*largest == *largest && *smallest == *smallest) return;
  // vmaxq/vminq propagate NaN: redo with NaN lanes replaced by 0.
  hi0 = vdupq_n_f32(0), lo0 = hi0;
  for (int j = 0; j < kActsQ8_KBlock; j += 4) {
    const float32x4_t v = vld1q_f32(xb + j);
    const float32x4_t kept =
        vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), vceqq_f32(v, v)));
    hi0 = vmaxq_f32(hi0, kept);
    lo0 = vminq_f32(lo0, kept);
  }
  *largest = vmaxvq_f32(hi0);
  *smallest = vminvq_f32(lo0);
}

void quantize_q8_K_neon(const float* x, int64_t cols, int8_t* q, float* d, float* dsum,
                        int16_t* s32, int16_t* s16) {
  for (int64_t b = 0; b < cols / kActsQ8_KBlock; ++b) {
    const float* xb = x + b * kActsQ8_KBlock;
    int8_t* qb = q + b * kActsQ8_KBlock;
    float largest, smallest;
    block_range(xb, &largest, &smallest);
    const float amax = largest > -smallest ? largest : -smallest;
    if (amax == 0) {
      std::memset(qb, 0, kActsQ8_KBlock);
      std::memset(s16 + b * 16, 0, 16 * sizeof(int16_t));
      std::memset(s32 + b * 8, 0, 8 * sizeof(int16_t));
      d[b] = 0;
      for (int g = 0; g < 8; ++g) dsum[b * 8 + g] = 0;
      continue;
    }
    // The signed value of largest magnitude; its first occurrence when both signs occur.
    const float max = largest != amax     ? smallest
                      : -smallest != amax ? largest
                                          : first_value_of_magnitude(xb, amax);
    const float iscale = -127.f / max;
    const float32x4_t scale = vdupq_n_f32(iscale);
    const float32x4_t magic = vdupq_n_f32(12582912.f);
    const uint32x4_t mantissa = vdupq_n_u32(0x007fffffu);
    const int32x4_t offset = vdupq_n_s32(0x00400000);
    const int32x4_t q_max = vdupq_n_s32(127);
    int16_t group_sums[16];
    for (int g = 0; g < 16; ++g) {
      int32x4_t r[4];
      for (int k = 0; k < 4; ++k) {
        // v = iscale * x, then round half to even in the mantissa of v + 1.5 * 2^23.
        const float32x4_t v = vmulq_f32(scale, vld1q_f32(xb + 16 * g + 4 * k));
        const uint32x4_t bits = vreinterpretq_u32_f32(vaddq_f32(v, magic));
        r[k] =
            vminq_s32(vsubq_s32(vreinterpretq_s32_u32(vandq_u32(bits, mantissa)), offset), q_max);
      }
      // The reference stores (int8_t) of it: narrowing keeps the low byte.
      const int8x16_t bytes = narrow_16(r[0], r[1], r[2], r[3]);
      vst1q_s8(qb + 16 * g, bytes);
      group_sums[g] = static_cast<int16_t>(vaddlvq_s8(bytes));
    }
    std::memcpy(s16 + b * 16, group_sums, sizeof group_sums);
    const float db = 1 / iscale;
    d[b] = db;
    for (int g = 0; g < 8; ++g) {
      const int sum = group_sums[2 * g] + group_sums[2 * g + 1];
      s32[b * 8 + g] = static_cast<int16_t>(sum);
      dsum[b * 8 + g] = db * static_cast<float>(sum);
    }
  }
}

}  // namespace

void register_quantize_acts_neon(IsaKernels* table) {
  table->quantize_q8_0 = quantize_q8_0_neon;
  table->quantize_q8_K = quantize_q8_K_neon;
}

}  // namespace edgelm::kernels_internal
