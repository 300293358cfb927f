// Integer kernels for quantized weights on ARM64, included by
// matmul_quant_neon.cc (EDGELM_QUANT_DOTPROD 0: vmull_s8 + vpadalq_s16, plain
// ARMv8.0) and matmul_quant_dotprod.cc (EDGELM_QUANT_DOTPROD 1: vdotq_s32;
// matmul_quant_i8mm.cc also includes it that way, for the block unpacking).
// Everything is in an anonymous namespace so each file gets its own copy
// compiled with its own flags (see matmul_internal.h); quant_formats.h is used
// for the block layouts only.
//
// Quants are unpacked to signed bytes with the format's offset applied
// (Q4_0: nibble - 8, Q6_K: q - 32, ...), so the integer dot product of each
// (sub-)block is exact and equals the scalar reference's; results differ from
// it only in the order of the float operations combining blocks.
#pragma once

#include <arm_neon.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/matmul_internal.h"
#include "kernels/quant_formats.h"

#ifndef EDGELM_QUANT_DOTPROD
#error "define EDGELM_QUANT_DOTPROD before including matmul_quant_neon.h"
#endif

namespace edgelm::kernels_internal {
namespace {

// acc + per int32 lane sum of four s8 * s8 products.
inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if EDGELM_QUANT_DOTPROD
  return vdotq_s32(acc, a, b);
#else
  acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
  return vpadalq_s16(acc, vmull_high_s8(a, b));
#endif
}

inline float f16(uint16_t h) {
  __fp16 v;
  std::memcpy(&v, &h, 2);
  return static_cast<float>(v);
}

inline int8x16_t s8(uint8x16_t v) {
  return vreinterpretq_s8_u8(v);
}

// 0x10 in byte j where bit (first + j) of the little-endian 32-bit qh is set.
inline uint8x16_t high_bits_16(const uint8_t* qh, int first) {
  static const uint8_t kBits[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t bytes = vcombine_u8(vdup_n_u8(qh[first / 8]), vdup_n_u8(qh[first / 8 + 1]));
  return vandq_u8(vtstq_u8(bytes, vld1q_u8(kBits)), vdupq_n_u8(0x10));
}

// ---- 32-value formats: unpack() gives elements 0..15 and 16..31 ----

struct NeonQ4_0 {
  using Block = BlockQ4_0;
  static constexpr bool kMin = false;
  static void unpack(const Block* b, int8x16_t* lo, int8x16_t* hi) {
    const uint8x16_t raw = vld1q_u8(b->qs);
    *lo = vsubq_s8(s8(vandq_u8(raw, vdupq_n_u8(0x0F))), vdupq_n_s8(8));
    *hi = vsubq_s8(s8(vshrq_n_u8(raw, 4)), vdupq_n_s8(8));
  }
  static float min(const Block*) { return 0; }
};
struct NeonQ4_1 {
  using Block = BlockQ4_1;
  static constexpr bool kMin = true;
  static void unpack(const Block* b, int8x16_t* lo, int8x16_t* hi) {
    const uint8x16_t raw = vld1q_u8(b->qs);
    *lo = s8(vandq_u8(raw, vdupq_n_u8(0x0F)));
    *hi = s8(vshrq_n_u8(raw, 4));
  }
  static float min(const Block* b) { return f16(b->m); }
};
template <typename B>
inline void unpack_q5(const B* b, int offset, int8x16_t* lo, int8x16_t* hi) {
  const uint8x16_t raw = vld1q_u8(b->qs);
  const uint8x16_t l = vorrq_u8(vandq_u8(raw, vdupq_n_u8(0x0F)), high_bits_16(b->qh, 0));
  const uint8x16_t h = vorrq_u8(vshrq_n_u8(raw, 4), high_bits_16(b->qh, 16));
  *lo = vsubq_s8(s8(l), vdupq_n_s8(static_cast<int8_t>(offset)));
  *hi = vsubq_s8(s8(h), vdupq_n_s8(static_cast<int8_t>(offset)));
}
struct NeonQ5_0 {
  using Block = BlockQ5_0;
  static constexpr bool kMin = false;
  static void unpack(const Block* b, int8x16_t* lo, int8x16_t* hi) { unpack_q5(b, 16, lo, hi); }
  static float min(const Block*) { return 0; }
};
struct NeonQ5_1 {
  using Block = BlockQ5_1;
  static constexpr bool kMin = true;
  static void unpack(const Block* b, int8x16_t* lo, int8x16_t* hi) { unpack_q5(b, 0, lo, hi); }
  static float min(const Block* b) { return f16(b->m); }
};
struct NeonQ8_0 {
  using Block = BlockQ8_0;
  static constexpr bool kMin = false;
  static void unpack(const Block* b, int8x16_t* lo, int8x16_t* hi) {
    *lo = vld1q_s8(b->qs);
    *hi = vld1q_s8(b->qs + 16);
  }
  static float min(const Block*) { return 0; }
};

// R rows x T tokens; y[t * y_stride + r]:
// y += dx * d * dot + m * (dx * sum x) per block.
template <typename F, int R, int T>
inline void tile_32(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a, float* y,
                    int64_t y_stride) {
  float32x4_t acc[R][T];
  float macc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      acc[r][t] = vdupq_n_f32(0);
      macc[r][t] = 0;
    }
  }
  for (int64_t b = 0; b < nb; ++b) {
    for (int r = 0; r < R; ++r) {
      const auto* blk = reinterpret_cast<const typename F::Block*>(rows + r * row_bytes) + b;
      int8x16_t lo, hi;
      F::unpack(blk, &lo, &hi);
      const float dw = f16(blk->d);
      for (int t = 0; t < T; ++t) {
        const int8_t* xq = a.q + t * a.q_stride + b * kQK;
        const int32x4_t s = dot16(dot16(vdupq_n_s32(0), lo, vld1q_s8(xq)), hi, vld1q_s8(xq + 16));
        acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(s), dw * a.d[t * a.d_stride + b]);
        if constexpr (F::kMin) macc[r][t] += F::min(blk) * a.dsum[t * a.d32_stride + b];
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = vaddvq_f32(acc[r][t]) + macc[r][t];
  }
}

// ---- K-quants: integer sums per super-block, combined like the scalar code ----
// y += dx * (d * sum_j sc_j * dot_j - dmin * sum_j m_j * xsum_j)

// Q4_K/Q5_K: the eight 6-bit scales in bytes 0..7 and mins in bytes 8..15.
inline void k4_scales_mins(const uint8_t* packed, uint8_t out[16]) {
  uint32_t u[4];
  std::memcpy(u, packed, 12);
  const uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  u[3] = ((u[2] >> 4) & kLow4) | (((u[1] >> 6) & kLow2) << 4);
  const uint32_t mins_low = u[1] & kLow6;
  u[1] = (u[2] & kLow4) | (((u[0] >> 6) & kLow2) << 4);
  u[2] = mins_low;
  u[0] &= kLow6;
  std::memcpy(out, u, 16);
}

inline int32_t dot32(int8x16_t w0, int8x16_t w1, const int8_t* xq) {
  return vaddvq_s32(dot16(dot16(vdupq_n_s32(0), w0, vld1q_s8(xq)), w1, vld1q_s8(xq + 16)));
}

template <bool kQ5, int R, int T>
inline void tile_k4(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a, float* y,
                    int64_t y_stride) {
  float acc[R][T] = {};
  using Block = std::conditional_t<kQ5, BlockQ5_K, BlockQ4_K>;
  for (int64_t b = 0; b < nb; ++b) {
    for (int r = 0; r < R; ++r) {
      const auto* blk = reinterpret_cast<const Block*>(rows + r * row_bytes) + b;
      alignas(16) uint8_t sm[16];
      k4_scales_mins(blk->scales, sm);
      int32_t isum[T] = {};
      uint8x16_t qh0 = vdupq_n_u8(0), qh1 = vdupq_n_u8(0);
      if constexpr (kQ5) {
        qh0 = vld1q_u8(blk->qh);
        qh1 = vld1q_u8(blk->qh + 16);
      }
      for (int c = 0; c < 4; ++c) {
        const uint8x16_t raw0 = vld1q_u8(blk->qs + 32 * c);
        const uint8x16_t raw1 = vld1q_u8(blk->qs + 32 * c + 16);
        uint8x16_t lo0 = vandq_u8(raw0, vdupq_n_u8(0x0F)), lo1 = vandq_u8(raw1, vdupq_n_u8(0x0F));
        uint8x16_t hi0 = vshrq_n_u8(raw0, 4), hi1 = vshrq_n_u8(raw1, 4);
        if constexpr (kQ5) {
          const uint8x16_t bit_lo = vdupq_n_u8(static_cast<uint8_t>(1 << (2 * c)));
          const uint8x16_t bit_hi = vdupq_n_u8(static_cast<uint8_t>(1 << (2 * c + 1)));
          const uint8x16_t h16 = vdupq_n_u8(0x10);
          lo0 = vorrq_u8(lo0, vandq_u8(vtstq_u8(qh0, bit_lo), h16));
          lo1 = vorrq_u8(lo1, vandq_u8(vtstq_u8(qh1, bit_lo), h16));
          hi0 = vorrq_u8(hi0, vandq_u8(vtstq_u8(qh0, bit_hi), h16));
          hi1 = vorrq_u8(hi1, vandq_u8(vtstq_u8(qh1, bit_hi), h16));
        }
        for (int t = 0; t < T; ++t) {
          const int8_t* xq = a.q + t * a.q_stride + b * kQK_K + 64 * c;
          isum[t] += sm[2 * c] * dot32(s8(lo0), s8(lo1), xq) +
                     sm[2 * c + 1] * dot32(s8(hi0), s8(hi1), xq + 32);
        }
      }
      const int16x8_t mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(sm + 8)));
      const float d = f16(blk->d), dmin = f16(blk->dmin);
      for (int t = 0; t < T; ++t) {
        const int16x8_t xs = vld1q_s16(a.s32 + t * a.d32_stride + 8 * b);
        const int32x4_t m =
            vmlal_high_s16(vmull_s16(vget_low_s16(mins), vget_low_s16(xs)), mins, xs);
        const int32_t imin = vaddvq_s32(m);
        const float dx = a.d[t * a.d_stride + b];
        acc[r][t] += dx * (d * static_cast<float>(isum[t]) - dmin * static_cast<float>(imin));
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = acc[r][t];
  }
}

template <int R, int T>
inline void tile_q6_k(const uint8_t* rows, size_t row_bytes, int64_t nb, const QuantActs& a,
                      float* y, int64_t y_stride) {
  float acc[R][T] = {};
  const uint8x16_t m4 = vdupq_n_u8(0x0F), m3 = vdupq_n_u8(0x03);
  const int8x16_t k32 = vdupq_n_s8(32);
  for (int64_t b = 0; b < nb; ++b) {
    for (int r = 0; r < R; ++r) {
      const auto* blk = reinterpret_cast<const BlockQ6_K*>(rows + r * row_bytes) + b;
      int32_t isum[T] = {};
      for (int h = 0; h < 2; ++h) {
        uint8x16_t ql[4], qh[2];
        for (int i = 0; i < 4; ++i) ql[i] = vld1q_u8(blk->ql + 64 * h + 16 * i);
        for (int i = 0; i < 2; ++i) qh[i] = vld1q_u8(blk->qh + 32 * h + 16 * i);
        for (int g = 0; g < 4; ++g) {
          for (int half = 0; half < 2; ++half) {
            // Elements 128h + 32g + 16half .. +15: sub-block j = 8h + 2g + half.
            const uint8x16_t src = ql[2 * (g & 1) + half];
            const uint8x16_t low = g < 2 ? vandq_u8(src, m4) : vshrq_n_u8(src, 4);
            uint8x16_t high;
            switch (g) {
              case 0:
                high = vshlq_n_u8(vandq_u8(qh[half], m3), 4);
                break;
              case 1:
                high = vshlq_n_u8(vandq_u8(vshrq_n_u8(qh[half], 2), m3), 4);
                break;
              case 2:
                high = vshlq_n_u8(vandq_u8(vshrq_n_u8(qh[half], 4), m3), 4);
                break;
              default:
                high = vshlq_n_u8(vshrq_n_u8(qh[half], 6), 4);
                break;
            }
            const int8x16_t q = vsubq_s8(s8(vorrq_u8(low, high)), k32);
            const int j = 8 * h + 2 * g + half;
            for (int t = 0; t < T; ++t) {
              const int8_t* xq = a.q + t * a.q_stride + b * kQK_K + 16 * j;
              isum[t] += blk->scales[j] * vaddvq_s32(dot16(vdupq_n_s32(0), q, vld1q_s8(xq)));
            }
          }
        }
      }
      const float d = f16(blk->d);
      for (int t = 0; t < T; ++t) {
        acc[r][t] += a.d[t * a.d_stride + b] * (d * static_cast<float>(isum[t]));
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = acc[r][t];
  }
}

// ---- drivers ----

struct Kind32 {};
struct KindQ4K {};
struct KindQ5K {};
struct KindQ6K {};

template <typename F, typename Kind, int R, int T>
inline void tile(const uint8_t* rows, size_t row_bytes, int64_t cols, const QuantActs& a, float* y,
                 int64_t y_stride) {
  if constexpr (std::is_same_v<Kind, Kind32>) {
    tile_32<F, R, T>(rows, row_bytes, cols / kQK, a, y, y_stride);
  } else if constexpr (std::is_same_v<Kind, KindQ4K>) {
    tile_k4<false, R, T>(rows, row_bytes, cols / kQK_K, a, y, y_stride);
  } else if constexpr (std::is_same_v<Kind, KindQ5K>) {
    tile_k4<true, R, T>(rows, row_bytes, cols / kQK_K, a, y, y_stride);
  } else {
    tile_q6_k<R, T>(rows, row_bytes, cols / kQK_K, a, y, y_stride);
  }
}

template <typename F, typename Kind>
void quant_matvec(const WeightMatrix& w, const QuantActs& a, float* y, int64_t row_begin,
                  int64_t row_end) {
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  int64_t r = row_begin;
  for (; r + 4 <= row_end; r += 4) {
    tile<F, Kind, 4, 1>(base + r * w.row_bytes, w.row_bytes, w.cols, a, y + (r - row_begin), 0);
  }
  for (; r < row_end; ++r) {
    tile<F, Kind, 1, 1>(base + r * w.row_bytes, w.row_bytes, w.cols, a, y + (r - row_begin), 0);
  }
}

// Prefill: one row (its blocks stay in L1) x 4 tokens per tile.
template <typename F, typename Kind>
void quant_matmul(const WeightMatrix& w, const QuantActs& a, int64_t n, float* y, int64_t y_stride,
                  int64_t row_begin, int64_t row_end) {
  constexpr int kTokens = 4;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = base + r * w.row_bytes;
    int64_t t = 0;
    for (; t + kTokens <= n; t += kTokens) {
      tile<F, Kind, 1, kTokens>(row, w.row_bytes, w.cols, acts_from_token(a, t),
                                y + t * y_stride + r, y_stride);
    }
    for (; t < n; ++t) {
      tile<F, Kind, 1, 1>(row, w.row_bytes, w.cols, acts_from_token(a, t), y + t * y_stride + r,
                          y_stride);
    }
  }
}

template <typename F, typename Kind>
void set_quant(IsaKernels* table, DType type) {
  TypeKernels& k = table->types[static_cast<uint32_t>(type)];
  k.quant_matvec = quant_matvec<F, Kind>;
  k.quant_matmul = quant_matmul<F, Kind>;
}

inline void register_quant_neon_common(IsaKernels* table) {
  set_quant<NeonQ4_0, Kind32>(table, DType::Q4_0);
  set_quant<NeonQ4_1, Kind32>(table, DType::Q4_1);
  set_quant<NeonQ5_0, Kind32>(table, DType::Q5_0);
  set_quant<NeonQ5_1, Kind32>(table, DType::Q5_1);
  set_quant<NeonQ8_0, Kind32>(table, DType::Q8_0);
  set_quant<NeonQ4_0, KindQ4K>(table, DType::Q4_K);
  set_quant<NeonQ4_0, KindQ5K>(table, DType::Q5_K);
  set_quant<NeonQ4_0, KindQ6K>(table, DType::Q6_K);
}

}  // namespace
}  // namespace edgelm::kernels_internal
