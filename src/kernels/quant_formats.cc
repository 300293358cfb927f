// Reference quantizers for ggml's block formats.
//
// Bit-exactness with ggml (ggml/src/ggml-quants.c) depends on doing the same
// single-precision operations in the same order: keep expressions such as
// `w * x[i] * l` (= (w * x[i]) * l) as they are, keep int->uint8 wrap-arounds
// where ggml stores an int into a uint8_t, and never let the compiler contract
// a*b+c into an FMA (CMakeLists.txt passes -ffp-contract=off).
#include "kernels/quant_formats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "util/error.h"
#include "util/half.h"

namespace edgelm {
namespace {

// ggml treats a group whose largest |x| is below this as all zeros.
constexpr float kGroupMaxEps = 1e-15f;

// Round to nearest, ties to even, valid for |f| < 2^22: adding 1.5 * 2^23 puts
// the rounded integer in the low mantissa bits (ggml's nearest_int trick, so
// NaN or huge inputs give some int instead of undefined behaviour).
inline int nearest_int(float f) {
  const float shifted = f + 12582912.f;
  const int32_t bits = static_cast<int32_t>(float_to_bits(shifted));
  return (bits & 0x007fffff) - 0x00400000;
}

// C's (int)v truncation, but defined for NaN and out-of-range values (ggml
// casts float to int8_t directly; finite in-range inputs give the same result).
inline int truncate_to_int(float v) {
  if (!(v > -1e9f && v < 1e9f)) return 0;
  return static_cast<int>(v);
}

inline int clamp_int(int v, int lo, int hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

inline float f16_to_float(uint16_t h) {
  return fp16_to_fp32(h);
}
inline uint16_t float_to_f16(float f) {
  return fp32_to_fp16(f);
}

int64_t block_count(const char* what, int64_t n, int64_t block_size) {
  if (n < 0 || n % block_size != 0) {
    fail(what, ": ", n, " elements is not a whole number of ", block_size, "-element blocks");
  }
  return n / block_size;
}

void check_importance(const char* what, const float* importance, int64_t n) {
  if (importance == nullptr) fail(what, ": importance weights are required");
  for (int64_t i = 0; i < n; ++i) {
    const float w = importance[i];
    if (!(w >= 0.0f) || !std::isfinite(w)) {
      fail(what, ": importance[", i, "] = ", w, " is not a finite non-negative number");
    }
  }
}

// ---------------------------------------------------------------------------
// Scale searches (ggml's make_*_quants). Each returns the scale and fills L.

// Symmetric levels l in [-nmax, nmax-1] stored as l + nmax; weighted least
// squares over 19 trial scales around nmax / max. Weights are qw, or x^2 when
// qw is null (ggml's rmse_type 1, the only mode its quantizers use).
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* qw) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  auto weight = [&](int i) { return qw ? qw[i] : x[i] * x[i]; };
  float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = weight(i);
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      const float w = weight(i);
      sumlx += w * x[i] * static_cast<float>(l);
      suml2 += w * static_cast<float>(l) * static_cast<float>(l);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        L[i] = static_cast<int8_t>(nmax + clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q3_K's search: start from nmax / max, then up to 5 passes of coordinate
// descent on the x^2-weighted error. L gets l + nmax.
float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      const float li = static_cast<float>(L[i]);
      float slx = sumlx - w * x[i] * li;
      if (slx > 0) {
        float sl2 = suml2 - w * li * li;
        const int new_l = clamp_int(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
        if (new_l != L[i]) {
          const float nl = static_cast<float>(new_l);
          slx += w * x[i] * nl;
          sl2 += w * nl * nl;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Asymmetric levels l in [0, nmax] with value = scale * l - the_min: weighted
// fit of (scale, min) over nstep+1 trial scales (ggml's make_qkx2_quants used
// by the reference K-quants; use_mad picks |error| over error^2).
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                       bool use_mad) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      const float fl = static_cast<float>(l);
      sum_l += w * fl;
      sum_l2 += w * fl * fl;
      sum_xl += w * fl * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// make_qkx2_quants as used by the imatrix quantizers (ggml's make_qkx3_quants,
// squared error): guards the trial levels against a min that sits at max.
float make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max <= min) {
    std::memset(L, 0, static_cast<size_t>(n));
    *the_min = -min;
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax));
    const float diff = scale * L[i] + min - x[i];
    best_error += weights[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const float v = iscale * (x[i] - min);
      const int l =
          v > 0 ? nearest_int(v < static_cast<float>(nmax) ? v : static_cast<float>(nmax)) : 0;
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      const float fl = static_cast<float>(l);
      sum_l += w * fl;
      sum_l2 += w * fl * fl;
      sum_xl += w * fl * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        cur_error += weights[i] * (diff * diff);
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Quantizes the (non-negative) sub-block scales or mins of a super-block to
// [0, nmax] with weights: a few trial scales, then coordinate descent. L is
// uint8_t on purpose: ggml stores possibly negative ints into it.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    best_mse += quant_weights[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * static_cast<float>(is) + static_cast<float>(nmax)) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale_is * x[i]);
      l = l < nmax ? l : nmax;
      const float diff = x[i] - scale_is * static_cast<float>(l);
      mse += quant_weights[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = l < nmax ? l : nmax;
    L[i] = static_cast<uint8_t>(l);
    const float w = quant_weights[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = quant_weights[i];
      float slx = sumlx - w * x[i] * L[i];
      float sl2 = suml2 - w * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = new_l < nmax ? new_l : nmax;
        if (new_l != L[i]) {
          const float nl = static_cast<float>(new_l);
          slx += w * x[i] * nl;
          sl2 += w * nl * nl;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// ---------------------------------------------------------------------------
// Packing helpers shared by the reference and weighted paths.

// Q4_K/Q5_K: eight 6-bit scales and mins in 12 bytes. Bytes 0-3 hold sc[0..3]
// (+ top 2 bits of sc[4..7]), bytes 4-7 m[0..3] (+ top bits of m[4..7]),
// bytes 8-11 the low nibbles of sc[4..7] | m[4..7] << 4.
void pack_scale_min_k4(const uint8_t* ls, const uint8_t* lm, uint8_t* scales) {
  for (int j = 0; j < kQK_K / 32; ++j) {
    if (j < 4) {
      scales[j] = ls[j];
      scales[j + 4] = lm[j];
    } else {
      scales[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      scales[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      scales[j - 0] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}

// Requantizes each 32-element sub-block against the f16-rounded scale and min
// (sub-blocks whose scale rounds to zero keep the levels of the search).
void requantize_k4(const float* x, const uint8_t* scales, uint16_t d16, uint16_t dmin16, int nmax,
                   uint8_t* L) {
  for (int j = 0; j < kQK_K / 32; ++j) {
    uint8_t sc, m;
    unpack_scale_min_k4(scales, j, &sc, &m);
    const float d = f16_to_float(d16) * sc;
    if (d == 0) continue;
    const float dm = f16_to_float(dmin16) * m;
    for (int ii = 0; ii < 32; ++ii) {
      L[32 * j + ii] =
          static_cast<uint8_t>(clamp_int(nearest_int((x[32 * j + ii] + dm) / d), 0, nmax));
    }
  }
}

void pack_q4_K_levels(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK_K; j += 64) {
    for (int l = 0; l < 32; ++l) qs[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    qs += 32;
  }
}

void pack_q5_K_levels(const uint8_t* L, uint8_t* qh, uint8_t* ql) {
  std::memset(qh, 0, kQK_K / 8);
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < kQK_K; n += 64) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] |= m1;
      }
      int l2 = L[n + j + 32];
      if (l2 > 15) {
        l2 -= 16;
        qh[j] |= m2;
      }
      ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
    m1 = static_cast<uint8_t>(m1 << 2);
    m2 = static_cast<uint8_t>(m2 << 2);
    ql += 32;
  }
}

// 2-bit fields: element 128*h + 32*s + l goes to qs[32*h + l] bits 2s..2s+1.
template <typename Level>
void pack_2bit_levels(const Level* L, uint8_t* qs) {
  for (int j = 0; j < kQK_K; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                           (L[j + l + 96] << 6));
    }
  }
}

// Q3_K: sixteen 6-bit scales. Low nibbles: bytes 0-7 (j < 8 low half, j >= 8
// high half of byte j-8); top 2 bits: byte 8 + j%4 at bit 2*(j/4).
void pack_q3_K_scales(const int* ls, uint8_t* scales) {
  std::memset(scales, 0, 12);
  for (int j = 0; j < kQK_K / 16; ++j) {
    int l = ls[j];
    if (j < 8) {
      scales[j] = static_cast<uint8_t>(l & 0xF);
    } else {
      scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
    }
    l >>= 4;
    scales[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
  }
}

// Requantizes to the stored scales, then splits q in [0, 7] into hmask + 2 bits.
void finish_q3_K(const float* x, BlockQ3_K& y, int8_t* L) {
  for (int j = 0; j < kQK_K / 16; ++j) {
    const float d = f16_to_float(y.d) * static_cast<float>(unpack_scale_q3_K(y.scales, j));
    if (d == 0) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = clamp_int(nearest_int(x[16 * j + ii] / d), -4, 3);
      L[16 * j + ii] = static_cast<int8_t>(l + 4);
    }
  }
  std::memset(y.hmask, 0, kQK_K / 8);
  int m = 0;
  uint8_t hm = 1;
  for (int j = 0; j < kQK_K; ++j) {
    if (L[j] > 3) {
      y.hmask[m] |= hm;
      L[j] = static_cast<int8_t>(L[j] - 4);
    }
    if (++m == kQK_K / 8) {
      m = 0;
      hm = static_cast<uint8_t>(hm << 1);
    }
  }
  pack_2bit_levels(L, y.qs);
}

// Requantizes to the stored Q2_K scales/mins and packs.
void finish_q2_K(const float* x, BlockQ2_K& y, uint8_t* L) {
  for (int j = 0; j < kQK_K / 16; ++j) {
    const float d = f16_to_float(y.d) * static_cast<float>(y.scales[j] & 0xF);
    if (d == 0) continue;
    const float dm = f16_to_float(y.dmin) * static_cast<float>(y.scales[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      L[16 * j + ii] =
          static_cast<uint8_t>(clamp_int(nearest_int((x[16 * j + ii] + dm) / d), 0, 3));
    }
  }
  pack_2bit_levels(L, y.qs);
}

// Q6_K levels (0..63) into ql/qh.
void pack_q6_K_levels(const int8_t* L, BlockQ6_K& y) {
  uint8_t* ql = y.ql;
  uint8_t* qh = y.qh;
  for (int j = 0; j < kQK_K; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t q1 = L[j + l + 0] & 0xF;
      const uint8_t q2 = L[j + l + 32] & 0xF;
      const uint8_t q3 = L[j + l + 64] & 0xF;
      const uint8_t q4 = L[j + l + 96] & 0xF;
      ql[l + 0] = static_cast<uint8_t>(q1 | (q3 << 4));
      ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
      qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                   ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

// Q6_K: scales[] chosen; requantize every 16-element group and pack.
void finish_q6_K(const float* x, BlockQ6_K& y, int8_t* L) {
  for (int j = 0; j < kQK_K / 16; ++j) {
    const float d = f16_to_float(y.d) * static_cast<float>(y.scales[j]);
    if (d == 0) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = clamp_int(nearest_int(x[16 * j + ii] / d), -32, 31);
      L[16 * j + ii] = static_cast<int8_t>(l + 32);
    }
  }
  pack_q6_K_levels(L, y);
}

// Sets y.d and y.scales from the 16 group scales (or zeroes the block).
// Returns false when the block is all zeros.
bool set_q6_K_scales(const float* group_scales, BlockQ6_K& y) {
  float max_scale = 0;
  float max_abs_scale = 0;
  for (int ib = 0; ib < kQK_K / 16; ++ib) {
    const float abs_scale = std::fabs(group_scales[ib]);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = group_scales[ib];
    }
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(&y, 0, sizeof y);
    return false;
  }
  const float iscale = -128.f / max_scale;
  y.d = float_to_f16(1 / iscale);
  for (int ib = 0; ib < kQK_K / 16; ++ib) {
    const int l = nearest_int(iscale * group_scales[ib]);
    y.scales[ib] = static_cast<int8_t>(l < 127 ? l : 127);
  }
  return true;
}

void pack_q5_bits(const uint8_t* L, uint8_t* qs, uint8_t* qh_bytes) {
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const uint32_t xi0 = L[j];
    const uint32_t xi1 = L[j + kQK / 2];
    qs[j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
    qh |= ((xi1 & 0x10u) >> 4) << (j + kQK / 2);
  }
  for (int b = 0; b < 4; ++b) qh_bytes[b] = static_cast<uint8_t>(qh >> (8 * b));
}

inline uint32_t load_u32_le(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// Per-row weight scale of ggml's *_impl quantizers for the 32-element formats.
float row_sigma2(const float* x, int64_t n) {
  float sum_x2 = 0;
  for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / static_cast<float>(n);
}

// ---------------------------------------------------------------------------
// E4M3

struct E4m3Table {
  float values[256];
  E4m3Table() {
    for (int c = 0; c < 256; ++c) values[c] = e4m3_to_fp32(static_cast<uint8_t>(c));
  }
};

const E4m3Table& e4m3_table() {
  static const E4m3Table table;
  return table;
}

// Smallest f16 >= v (v >= 0), capped at the largest finite f16.
uint16_t f16_round_up(float v) {
  if (!(v < 65504.0f)) return 0x7bff;
  uint16_t h = float_to_f16(v);
  if (f16_to_float(h) < v) ++h;
  return h;
}

}  // namespace

// ===========================================================================
// E4M3 scalar conversions

uint8_t fp32_to_e4m3(float x) {
  const uint32_t bits = float_to_bits(x);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return sign | 0x7F;  // NaN
  const float a = bits_to_float(abs_bits);
  if (a >= 448.0f) return sign | 0x7E;  // saturate (infinity included)
  if (a < 0.015625f) {
    // Subnormal range: multiples of 2^-9; 2^-6 itself rounds up to code 8,
    // which is exactly the smallest normal's encoding.
    const float scaled = a * 512.0f;  // exact
    int q = static_cast<int>(scaled);
    const float rem = scaled - static_cast<float>(q);
    if (rem > 0.5f || (rem == 0.5f && (q & 1))) ++q;
    return sign | static_cast<uint8_t>(q);
  }
  // Normal: round the f32 mantissa to 3 bits (ties to even); a carry bumps
  // the exponent, which is what we want. Result stays <= 448 (0x7E).
  const uint32_t rounded = abs_bits + 0x7ffffu + ((abs_bits >> 20) & 1u);
  const uint32_t code = (rounded >> 20) - ((127u - 7u) << 3);
  return sign | static_cast<uint8_t>(code);
}

float e4m3_to_fp32(uint8_t code) {
  const float sign = (code & 0x80) ? -1.0f : 1.0f;
  const int exponent = (code >> 3) & 0xF;
  const int mantissa = code & 7;
  if (exponent == 15 && mantissa == 7) return std::numeric_limits<float>::quiet_NaN();
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -9);
  return sign * std::ldexp(static_cast<float>(8 + mantissa), exponent - 7 - 3);
}

// ===========================================================================
// 32-element formats

void quantize_row_q4_0_reference(const float* x, void* blocks, int64_t n) {
  const int64_t nb = block_count("quantize q4_0", n, kQK);
  auto* y = static_cast<BlockQ4_0*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0;  // keeps the signed value of largest magnitude: it maps to -8
    float max = 0;
    for (int j = 0; j < kQK; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = float_to_f16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const int xi0 = std::min(15, truncate_to_int(x[j] * id + 8.5f));
      const int xi1 = std::min(15, truncate_to_int(x[j + kQK / 2] * id + 8.5f));
      y[i].qs[j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

void quantize_row_q4_1_reference(const float* x, void* blocks, int64_t n) {
  const int64_t nb = block_count("quantize q4_1", n, kQK);
  auto* y = static_cast<BlockQ4_1*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float min = std::numeric_limits<float>::max();
    float max = -std::numeric_limits<float>::max();
    for (int j = 0; j < kQK; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / 15;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = float_to_f16(d);
    y[i].m = float_to_f16(min);
    for (int j = 0; j < kQK / 2; ++j) {
      const int xi0 = std::min(15, truncate_to_int((x[j] - min) * id + 0.5f));
      const int xi1 = std::min(15, truncate_to_int((x[j + kQK / 2] - min) * id + 0.5f));
      y[i].qs[j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

void quantize_row_q5_0_reference(const float* x, void* blocks, int64_t n) {
  const int64_t nb = block_count("quantize q5_0", n, kQK);
  auto* y = static_cast<BlockQ5_0*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0;
    float max = 0;
    for (int j = 0; j < kQK; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -16;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = float_to_f16(d);
    uint8_t L[kQK];
    for (int j = 0; j < kQK; ++j) {
      L[j] = static_cast<uint8_t>(std::min(31, truncate_to_int(x[j] * id + 16.5f)));
    }
    pack_q5_bits(L, y[i].qs, y[i].qh);
  }
}

void quantize_row_q5_1_reference(const float* x, void* blocks, int64_t n) {
  const int64_t nb = block_count("quantize q5_1", n, kQK);
  auto* y = static_cast<BlockQ5_1*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float min = std::numeric_limits<float>::max();
    float max = -std::numeric_limits<float>::max();
    for (int j = 0; j < kQK; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / 31;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = float_to_f16(d);
    y[i].m = float_to_f16(min);
    uint8_t L[kQK];
    for (int j = 0; j < kQK; ++j) {
      L[j] = static_cast<uint8_t>(truncate_to_int((x[j] - min) * id + 0.5f));
    }
    pack_q5_bits(L, y[i].qs, y[i].qh);
  }
}

void quantize_row_q8_0_reference(const float* x, void* blocks, int64_t n) {
  const int64_t nb = block_count("quantize q8_0", n, kQK);
  auto* y = static_cast<BlockQ8_0*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j) {
      const float a = std::fabs(x[j]);
      amax = amax > a ? amax : a;
    }
    const float d = amax / 127;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = float_to_f16(d);
    for (int j = 0; j < kQK; ++j) {
      // roundf: ties away from zero (unlike the K-quants' nearest_int).
      y[i].qs[j] = static_cast<int8_t>(truncate_to_int(std::round(x[j] * id)));
    }
  }
}

void quantize_row_q4_0_weighted(const float* x, void* blocks, int64_t n, const float* importance) {
  const int64_t nb = block_count("quantize q4_0", n, kQK);
  check_importance("quantize q4_0", importance, n);
  auto* y = static_cast<BlockQ4_0*>(blocks);
  const float sigma2 = row_sigma2(x, n);
  for (int64_t ib = 0; ib < nb; ++ib) {
    const float* xb = x + kQK * ib;
    const float* qw = importance + kQK * ib;
    float weight[kQK];
    int8_t L[kQK];
    for (int j = 0; j < kQK; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    const float d = make_qx_quants(kQK, 8, xb, L, weight);
    y[ib].d = float_to_f16(d);
    for (int j = 0; j < 16; ++j) y[ib].qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

void quantize_row_q4_1_weighted(const float* x, void* blocks, int64_t n, const float* importance) {
  const int64_t nb = block_count("quantize q4_1", n, kQK);
  check_importance("quantize q4_1", importance, n);
  auto* y = static_cast<BlockQ4_1*>(blocks);
  const float sigma2 = row_sigma2(x, n);
  for (int64_t ib = 0; ib < nb; ++ib) {
    const float* xb = x + kQK * ib;
    const float* qw = importance + kQK * ib;
    float weight[kQK];
    uint8_t L[kQK], Laux[kQK];
    for (int j = 0; j < kQK; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    float min;
    const float d = make_qkx3_quants(kQK, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36);
    y[ib].d = float_to_f16(d);
    y[ib].m = float_to_f16(-min);
    for (int j = 0; j < 16; ++j) y[ib].qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

void quantize_row_q5_0_weighted(const float* x, void* blocks, int64_t n, const float* importance) {
  const int64_t nb = block_count("quantize q5_0", n, kQK);
  check_importance("quantize q5_0", importance, n);
  auto* y = static_cast<BlockQ5_0*>(blocks);
  const float sigma2 = row_sigma2(x, n);
  for (int64_t ib = 0; ib < nb; ++ib) {
    const float* xb = x + kQK * ib;
    const float* qw = importance + kQK * ib;
    float weight[kQK];
    int8_t L[kQK];
    for (int j = 0; j < kQK; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    const float d = make_qx_quants(kQK, 16, xb, L, weight);
    y[ib].d = float_to_f16(d);
    uint8_t levels[kQK];
    for (int j = 0; j < kQK; ++j) levels[j] = static_cast<uint8_t>(L[j]);
    pack_q5_bits(levels, y[ib].qs, y[ib].qh);
  }
}

void quantize_row_q5_1_weighted(const float* x, void* blocks, int64_t n, const float* importance) {
  const int64_t nb = block_count("quantize q5_1", n, kQK);
  check_importance("quantize q5_1", importance, n);
  auto* y = static_cast<BlockQ5_1*>(blocks);
  const float sigma2 = row_sigma2(x, n);
  for (int64_t ib = 0; ib < nb; ++ib) {
    const float* xb = x + kQK * ib;
    const float* qw = importance + kQK * ib;
    float weight[kQK];
    uint8_t L[kQK], Laux[kQK];
    for (int j = 0; j < kQK; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    float min;
    const float d = make_qkx3_quants(kQK, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36);
    y[ib].d = float_to_f16(d);
    y[ib].m = float_to_f16(-min);
    pack_q5_bits(L, y[ib].qs, y[ib].qh);
  }
}

namespace {

void interleave_q4_0_group(const BlockQ4_0* rows, int64_t nb, uint8_t* dst) {
  for (int64_t b = 0; b < nb; ++b, dst += kX16BlockBytes) {
    for (int r = 0; r < kX16Rows; ++r) {
      const BlockQ4_0& blk = rows[r * nb + b];
      std::memcpy(dst + 2 * r, &blk.d, 2);
      for (int c = 0; c < 4; ++c) std::memcpy(dst + 32 + 64 * c + 4 * r, blk.qs + 4 * c, 4);
    }
  }
}

void deinterleave_q4_0_group(const uint8_t* src, int64_t nb, BlockQ4_0* rows) {
  for (int64_t b = 0; b < nb; ++b, src += kX16BlockBytes) {
    for (int r = 0; r < kX16Rows; ++r) {
      BlockQ4_0& blk = rows[r * nb + b];
      std::memcpy(&blk.d, src + 2 * r, 2);
      for (int c = 0; c < 4; ++c) std::memcpy(blk.qs + 4 * c, src + 32 + 64 * c + 4 * r, 4);
    }
  }
}

void interleave_q8_0_group(const BlockQ8_0* rows, int64_t nb, uint8_t* dst) {
  for (int64_t b = 0; b < nb; ++b, dst += kX16Q8BlockBytes) {
    for (int r = 0; r < kX16Rows; ++r) {
      const BlockQ8_0& blk = rows[r * nb + b];
      std::memcpy(dst + 2 * r, &blk.d, 2);
      for (int c = 0; c < 8; ++c) {
        for (int i = 0; i < 4; ++i) {
          dst[32 + 64 * c + 4 * r + i] = static_cast<uint8_t>(blk.qs[4 * c + i] ^ 0x80);
        }
      }
    }
  }
}

void deinterleave_q8_0_group(const uint8_t* src, int64_t nb, BlockQ8_0* rows) {
  for (int64_t b = 0; b < nb; ++b, src += kX16Q8BlockBytes) {
    for (int r = 0; r < kX16Rows; ++r) {
      BlockQ8_0& blk = rows[r * nb + b];
      std::memcpy(&blk.d, src + 2 * r, 2);
      for (int c = 0; c < 8; ++c) {
        for (int i = 0; i < 4; ++i) {
          blk.qs[4 * c + i] = static_cast<int8_t>(src[32 + 64 * c + 4 * r + i] ^ 0x80);
        }
      }
    }
  }
}

void interleave_q5_0_group(const BlockQ5_0* rows, int64_t nb, uint8_t* dst) {
  for (int64_t b = 0; b < nb; ++b, dst += kX16Q5BlockBytes) {
    uint64_t masks[8] = {};
    for (int r = 0; r < kX16Rows; ++r) {
      const BlockQ5_0& blk = rows[r * nb + b];
      std::memcpy(dst + 2 * r, &blk.d, 2);
      uint32_t qh;
      std::memcpy(&qh, blk.qh, 4);
      for (int c = 0; c < 4; ++c) {
        std::memcpy(dst + 96 + 64 * c + 4 * r, blk.qs + 4 * c, 4);
        for (int i = 0; i < 4; ++i) {
          masks[2 * c] |= static_cast<uint64_t>((qh >> (4 * c + i)) & 1) << (4 * r + i);
          masks[2 * c + 1] |= static_cast<uint64_t>((qh >> (16 + 4 * c + i)) & 1) << (4 * r + i);
        }
      }
    }
    std::memcpy(dst + 32, masks, sizeof(masks));
  }
}

void deinterleave_q5_0_group(const uint8_t* src, int64_t nb, BlockQ5_0* rows) {
  for (int64_t b = 0; b < nb; ++b, src += kX16Q5BlockBytes) {
    uint64_t masks[8];
    std::memcpy(masks, src + 32, sizeof(masks));
    for (int r = 0; r < kX16Rows; ++r) {
      BlockQ5_0& blk = rows[r * nb + b];
      std::memcpy(&blk.d, src + 2 * r, 2);
      uint32_t qh = 0;
      for (int c = 0; c < 4; ++c) {
        std::memcpy(blk.qs + 4 * c, src + 96 + 64 * c + 4 * r, 4);
        for (int i = 0; i < 4; ++i) {
          qh |= static_cast<uint32_t>((masks[2 * c] >> (4 * r + i)) & 1) << (4 * c + i);
          qh |= static_cast<uint32_t>((masks[2 * c + 1] >> (4 * r + i)) & 1) << (16 + 4 * c + i);
        }
      }
      std::memcpy(blk.qh, &qh, 4);
    }
  }
}

void interleave_q4_k_group(const BlockQ4_K* rows, int64_t nb, uint8_t* dst) {
  for (int64_t b = 0; b < nb; ++b, dst += kX16Q4KBlockBytes) {
    for (int r = 0; r < kX16Rows; ++r) {
      const BlockQ4_K& blk = rows[r * nb + b];
      std::memcpy(dst + 2 * r, &blk.d, 2);
      std::memcpy(dst + 32 + 2 * r, &blk.dmin, 2);
      uint32_t min_nibbles = 0;
      for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        unpack_scale_min_k4(blk.scales, j, &sc, &m);
        dst[kX16Q4KScales + 16 * j + r] = static_cast<uint8_t>(sc | (m >> 4) << 6);
        min_nibbles |= static_cast<uint32_t>(m & 15) << (4 * j);
      }
      std::memcpy(dst + kX16Q4KMinNibbles + 4 * r, &min_nibbles, 4);
      for (int c = 0; c < 32; ++c) {
        std::memcpy(dst + kX16Q4KQuants + 64 * c + 4 * r, blk.qs + 4 * c, 4);
      }
    }
  }
}

void deinterleave_q4_k_group(const uint8_t* src, int64_t nb, BlockQ4_K* rows) {
  for (int64_t b = 0; b < nb; ++b, src += kX16Q4KBlockBytes) {
    for (int r = 0; r < kX16Rows; ++r) {
      BlockQ4_K& blk = rows[r * nb + b];
      std::memcpy(&blk.d, src + 2 * r, 2);
      std::memcpy(&blk.dmin, src + 32 + 2 * r, 2);
      uint32_t min_nibbles;
      std::memcpy(&min_nibbles, src + kX16Q4KMinNibbles + 4 * r, 4);
      uint8_t sc[8], m[8];
      for (int j = 0; j < 8; ++j) {
        const uint8_t packed = src[kX16Q4KScales + 16 * j + r];
        sc[j] = packed & 63;
        m[j] = static_cast<uint8_t>((packed >> 6) << 4 | ((min_nibbles >> (4 * j)) & 15));
      }
      pack_scale_min_k4(sc, m, blk.scales);
      for (int c = 0; c < 32; ++c) {
        std::memcpy(blk.qs + 4 * c, src + kX16Q4KQuants + 64 * c + 4 * r, 4);
      }
    }
  }
}

}  // namespace

DType x16_layout(DType row_major) {
  switch (row_major) {
    case DType::Q4_0:
      return DType::Q4_0_X16;
    case DType::Q5_0:
      return DType::Q5_0_X16;
    case DType::Q4_K:
      return DType::Q4_K_X16;
    case DType::Q8_0:
      return DType::Q8_0_X16;
    default:
      return DType::F32;
  }
}

DType x16_row_major(DType type) {
  switch (type) {
    case DType::Q4_0_X16:
      return DType::Q4_0;
    case DType::Q5_0_X16:
      return DType::Q5_0;
    case DType::Q4_K_X16:
      return DType::Q4_K;
    case DType::Q8_0_X16:
      return DType::Q8_0;
    default:
      return type;
  }
}

void interleave_x16(DType type, const void* rows_in, int64_t rows, int64_t cols, void* x16) {
  const int64_t block = dtype_traits(type).block_size;
  if (x16_layout(type) == DType::F32)
    fail("interleave_x16: ", dtype_name(type), " has no interleaved layout");
  if (rows % kX16Rows != 0 || cols % block != 0) {
    fail("interleave_x16: ", rows, " x ", cols, " ", dtype_name(type),
         " is not whole 16-row groups of blocks");
  }
  const int64_t nb = cols / block;
  const size_t group_bytes = kX16Rows * dtype_row_bytes(type, cols);
  for (int64_t g = 0; g < rows / kX16Rows; ++g) {
    const auto* src = static_cast<const uint8_t*>(rows_in) + g * group_bytes;
    auto* dst = static_cast<uint8_t*>(x16) + g * group_bytes;
    if (type == DType::Q4_0) {
      interleave_q4_0_group(reinterpret_cast<const BlockQ4_0*>(src), nb, dst);
    } else if (type == DType::Q5_0) {
      interleave_q5_0_group(reinterpret_cast<const BlockQ5_0*>(src), nb, dst);
    } else if (type == DType::Q8_0) {
      interleave_q8_0_group(reinterpret_cast<const BlockQ8_0*>(src), nb, dst);
    } else {
      interleave_q4_k_group(reinterpret_cast<const BlockQ4_K*>(src), nb, dst);
    }
  }
}

void deinterleave_x16(DType x16_type, const void* x16_group, int64_t cols, void* rows_out) {
  if (!is_x16_layout(x16_type)) {
    fail("deinterleave_x16: ", dtype_name(x16_type), " is not an interleaved layout");
  }
  const DType type = x16_row_major(x16_type);
  const int64_t nb = cols / dtype_traits(type).block_size;
  const auto* src = static_cast<const uint8_t*>(x16_group);
  if (type == DType::Q4_0) {
    deinterleave_q4_0_group(src, nb, static_cast<BlockQ4_0*>(rows_out));
  } else if (type == DType::Q5_0) {
    deinterleave_q5_0_group(src, nb, static_cast<BlockQ5_0*>(rows_out));
  } else if (type == DType::Q8_0) {
    deinterleave_q8_0_group(src, nb, static_cast<BlockQ8_0*>(rows_out));
  } else {
    deinterleave_q4_k_group(src, nb, static_cast<BlockQ4_K*>(rows_out));
  }
}

void dequantize_row_q4_0(const void* blocks, float* y, int64_t n) {
  const int64_t nb = block_count("dequantize q4_0", n, kQK);
  const auto* x = static_cast<const BlockQ4_0*>(blocks);
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_float(x[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>((x[i].qs[j] & 0x0F) - 8) * d;
      y[j + kQK / 2] = static_cast<float>((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_row_q4_1(const void* blocks, float* y, int64_t n) {
  const int64_t nb = block_count("dequantize q4_1", n, kQK);
  const auto* x = static_cast<const BlockQ4_1*>(blocks);
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_float(x[i].d);
    const float m = f16_to_float(x[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>(x[i].qs[j] & 0x0F) * d + m;
      y[j + kQK / 2] = static_cast<float>(x[i].qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_row_q5_0(const void* blocks, float* y, int64_t n) {
  const int64_t nb = block_count("dequantize q5_0", n, kQK);
  const auto* x = static_cast<const BlockQ5_0*>(blocks);
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_float(x[i].d);
    const uint32_t qh = load_u32_le(x[i].qh);
    for (int j = 0; j < kQK / 2; ++j) {
      const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
      const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      y[j] = static_cast<float>(((x[i].qs[j] & 0x0F) | h0) - 16) * d;
      y[j + kQK / 2] = static_cast<float>(((x[i].qs[j] >> 4) | h1) - 16) * d;
    }
  }
}

void dequantize_row_q5_1(const void* blocks, float* y, int64_t n) {
  const int64_t nb = block_count("dequantize q5_1", n, kQK);
  const auto* x = static_cast<const BlockQ5_1*>(blocks);
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_float(x[i].d);
    const float m = f16_to_float(x[i].m);
    const uint32_t qh = load_u32_le(x[i].qh);
    for (int j = 0; j < kQK / 2; ++j) {
      const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
      const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      y[j] = static_cast<float>((x[i].qs[j] & 0x0F) | h0) * d + m;
      y[j + kQK / 2] = static_cast<float>((x[i].qs[j] >> 4) | h1) * d + m;
    }
  }
}

void dequantize_row_q8_0(const void* blocks, float* y, int64_t n) {
  const int64_t nb = block_count("dequantize q8_0", n, kQK);
  const auto* x = static_cast<const BlockQ8_0*>(blocks);
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_float(x[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(x[i].qs[j]) * d;
  }
}

// ===========================================================================
// K-quants

void quantize_row_q2_K_reference(const float* x, void* blocks, int64_t n) {
  const int64_t nb = block_count("quantize q2_K", n, kQK_K);
  auto* y = static_cast<BlockQ2_K*>(blocks);
  constexpr float kQ4Scale = 15.f;
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    uint8_t L[kQK_K];
    uint8_t Laux[16];
    float weights[16];
    float mins[kQK_K / 16];
    float scales[kQK_K / 16];
    float max_scale = 0;  // scales and mins are >= 0 since the min is subtracted
    float max_min = 0;
    for (int j = 0; j < kQK_K / 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f,
                                   0.1f, 15, true);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = kQ4Scale / max_scale;
      for (int j = 0; j < kQK_K / 16; ++j) {
        y[i].scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
      }
      y[i].d = float_to_f16(max_scale / kQ4Scale);
    } else {
      for (int j = 0; j < kQK_K / 16; ++j) y[i].scales[j] = 0;
      y[i].d = float_to_f16(0.f);
    }
    if (max_min > 0) {
      const float iscale = kQ4Scale / max_min;
      for (int j = 0; j < kQK_K / 16; ++j) {
        const int l = nearest_int(iscale * mins[j]);
        y[i].scales[j] = static_cast<uint8_t>(y[i].scales[j] | (l << 4));
      }
      y[i].dmin = float_to_f16(max_min / kQ4Scale);
    } else {
      y[i].dmin = float_to_f16(0.f);
    }
    finish_q2_K(x, y[i], L);
  }
}

void quantize_row_q2_K_weighted(const float* x, void* blocks, int64_t n, const float* importance) {
  const int64_t nb = block_count("quantize q2_K", n, kQK_K);
  check_importance("quantize q2_K", importance, n);
  auto* y = static_cast<BlockQ2_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    uint8_t L[kQK_K];
    uint8_t Laux[16];
    float mins[kQK_K / 16];
    float scales[kQK_K / 16];
    float sw[kQK_K / 16] = {};
    float weight[16];
    uint8_t Ls[kQK_K / 16], Lm[kQK_K / 16];
    float sumx2 = 0;
    for (int j = 0; j < kQK_K; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = sumx2 / kQK_K;
    for (int j = 0; j < kQK_K / 16; ++j) {
      const float* qw = importance + kQK_K * i + 16 * j;
      for (int l = 0; l < 16; ++l)
        weight[l] = qw[l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      for (int l = 0; l < 16; ++l) sw[j] += weight[l];
      scales[j] =
          make_qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36);
    }
    const float dm = make_qp_quants(kQK_K / 16, 15, scales, Ls, sw);
    const float mm = make_qp_quants(kQK_K / 16, 15, mins, Lm, sw);
    y[i].d = float_to_f16(dm);
    y[i].dmin = float_to_f16(mm);
    for (int j = 0; j < kQK_K / 16; ++j)
      y[i].scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    finish_q2_K(x, y[i], L);
  }
}

void dequantize_row_q2_K(const void* blocks, float* y, int64_t n) {
  const int64_t nb = block_count("dequantize q2_K", n, kQK_K);
  const auto* x = static_cast<const BlockQ2_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_float(x[i].d);
    const float min = f16_to_float(x[i].dmin);
    const uint8_t* q = x[i].qs;
    int is = 0;
    for (int half = 0; half < kQK_K; half += 128) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part) {
          const uint8_t sc = x[i].scales[is++];
          const float dl = d * static_cast<float>(sc & 0xF);
          const float ml = min * static_cast<float>(sc >> 4);
          for (int l = 0; l < 16; ++l) {
            *y++ = dl * static_cast<float>((q[l + 16 * part] >> shift) & 3) - ml;
          }
        }
      }
      q += 32;
    }
  }
}

void quantize_row_q3_K_reference(const float* x, void* blocks, int64_t n) {
  const int64_t nb = block_count("quantize q3_K", n, kQK_K);
  auto* y = static_cast<BlockQ3_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    int8_t L[kQK_K];
    float scales[kQK_K / 16];
    float max_scale = 0;
    float amax = 0;
    for (int j = 0; j < kQK_K / 16; ++j) {
      scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
      const float scale = std::fabs(scales[j]);
      if (scale > amax) {
        amax = scale;
        max_scale = scales[j];
      }
    }
    if (max_scale != 0) {
      const float iscale = -32.f / max_scale;
      int ls[kQK_K / 16];
      for (int j = 0; j < kQK_K / 16; ++j) {
        const int l = static_cast<int8_t>(nearest_int(iscale * scales[j]));
        ls[j] = clamp_int(l, -32, 31) + 32;
      }
      pack_q3_K_scales(ls, y[i].scales);
      y[i].d = float_to_f16(1 / iscale);
    } else {
      std::memset(y[i].scales, 0, 12);
      y[i].d = float_to_f16(0.f);
    }
    finish_q3_K(x, y[i], L);
  }
}

void quantize_row_q3_K_weighted(const float* x, void* blocks, int64_t n, const float* importance) {
  const int64_t nb = block_count("quantize q3_K", n, kQK_K);
  check_importance("quantize q3_K", importance, n);
  auto* y = static_cast<BlockQ3_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    int8_t L[kQK_K];
    float scales[kQK_K / 16];
    float weight[16];
    float sw[kQK_K / 16];
    int8_t Ls[kQK_K / 16];
    float sumx2 = 0;
    for (int j = 0; j < kQK_K; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = 2 * sumx2 / kQK_K;
    for (int j = 0; j < kQK_K / 16; ++j) {
      const float* qw = importance + kQK_K * i + 16 * j;
      for (int l = 0; l < 16; ++l)
        weight[l] = qw[l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += weight[l];
      sw[j] = sumw;
      scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    const float d_block = make_qx_quants(kQK_K / 16, 32, scales, Ls, sw);
    int ls[kQK_K / 16];
    for (int j = 0; j < kQK_K / 16; ++j) ls[j] = Ls[j];
    pack_q3_K_scales(ls, y[i].scales);
    y[i].d = float_to_f16(d_block);
    finish_q3_K(x, y[i], L);
  }
}

void dequantize_row_q3_K(const void* blocks, float* y, int64_t n) {
  const int64_t nb = block_count("dequantize q3_K", n, kQK_K);
  const auto* x = static_cast<const BlockQ3_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i) {
    const float d_all = f16_to_float(x[i].d);
    const uint8_t* q = x[i].qs;
    const uint8_t* hm = x[i].hmask;
    uint8_t m = 1;
    int is = 0;
    for (int half = 0; half < kQK_K; half += 128) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part) {
          const float dl = d_all * static_cast<float>(unpack_scale_q3_K(x[i].scales, is++));
          for (int l = 16 * part; l < 16 * part + 16; ++l) {
            const int v = ((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4);
            *y++ = dl * static_cast<float>(v);
          }
        }
        m = static_cast<uint8_t>(m << 1);
      }
      q += 32;
    }
  }
}

// Shared by the Q4_K and Q5_K reference paths: per 32-element sub-block an
// asymmetric fit weighted by av_x + |x|, then 6-bit scales/mins relative to the
// block maxima. ggml searches 21 trial scales from -1.0 for Q4_K and 16 from
// -0.5 for Q5_K.
template <typename Block>
void quantize_k4_reference(const float* x, Block& y, int nmax, float rmin, int nstep, uint8_t* L) {
  uint8_t Laux[32];
  float weights[32];
  float mins[kQK_K / 32];
  float scales[kQK_K / 32];
  float max_scale = 0;  // scales and mins are >= 0 since the min is subtracted
  float max_min = 0;
  for (int j = 0; j < kQK_K / 32; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin,
                                 0.1f, nstep, false);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t ls[kQK_K / 32], lm[kQK_K / 32];
  for (int j = 0; j < kQK_K / 32; ++j) {
    ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
    lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
  }
  pack_scale_min_k4(ls, lm, y.scales);
  y.d = float_to_f16(max_scale / 63.f);
  y.dmin = float_to_f16(max_min / 63.f);
  requantize_k4(x, y.scales, y.d, y.dmin, nmax, L);
}

void quantize_row_q4_K_reference(const float* x, void* blocks, int64_t n) {
  const int64_t nb = block_count("quantize q4_K", n, kQK_K);
  auto* y = static_cast<BlockQ4_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    uint8_t L[kQK_K];
    quantize_k4_reference(x, y[i], 15, -1.f, 20, L);
    pack_q4_K_levels(L, y[i].qs);
  }
}

// Shared by the Q4_K and Q5_K imatrix paths (nmax 15 or 31).
template <typename Block>
void quantize_k4_weighted(const float* x, Block& y, const float* qw_block, int nmax, uint8_t* L,
                          bool clamp_levels) {
  uint8_t Laux[32];
  uint8_t Ls[kQK_K / 32];
  uint8_t Lm[kQK_K / 32];
  float weights[32];
  float sw[kQK_K / 32];
  float mins[kQK_K / 32];
  float scales[kQK_K / 32];
  float sum_x2 = 0;
  for (int l = 0; l < kQK_K; ++l) sum_x2 += x[l] * x[l];
  const float sigma2 = 2 * sum_x2 / kQK_K;
  for (int j = 0; j < kQK_K / 32; ++j) {
    const float* qw = qw_block + 32 * j;
    for (int l = 0; l < 32; ++l)
      weights[l] = qw[l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
    float sumw = 0;
    for (int l = 0; l < 32; ++l) sumw += weights[l];
    sw[j] = sumw;
    scales[j] = make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f,
                                 0.05f, 36);
  }
  const float d_block = make_qp_quants(kQK_K / 32, 63, scales, Ls, sw);
  const float m_block = make_qp_quants(kQK_K / 32, 63, mins, Lm, sw);
  if (clamp_levels) {  // ggml's Q5_K clamps here, its Q4_K does not
    for (int j = 0; j < kQK_K / 32; ++j) {
      Ls[j] = std::min<uint8_t>(63, Ls[j]);
      Lm[j] = std::min<uint8_t>(63, Lm[j]);
    }
  }
  pack_scale_min_k4(Ls, Lm, y.scales);
  y.d = float_to_f16(d_block);
  y.dmin = float_to_f16(m_block);
  requantize_k4(x, y.scales, y.d, y.dmin, nmax, L);
}

void quantize_row_q4_K_weighted(const float* x, void* blocks, int64_t n, const float* importance) {
  const int64_t nb = block_count("quantize q4_K", n, kQK_K);
  check_importance("quantize q4_K", importance, n);
  auto* y = static_cast<BlockQ4_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    uint8_t L[kQK_K];
    quantize_k4_weighted(x, y[i], importance + kQK_K * i, 15, L, false);
    pack_q4_K_levels(L, y[i].qs);
  }
}

void dequantize_row_q4_K(const void* blocks, float* y, int64_t n) {
  const int64_t nb = block_count("dequantize q4_K", n, kQK_K);
  const auto* x = static_cast<const BlockQ4_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* q = x[i].qs;
    const float d = f16_to_float(x[i].d);
    const float min = f16_to_float(x[i].dmin);
    for (int is = 0; is < kQK_K / 32; is += 2) {
      uint8_t sc, m;
      unpack_scale_min_k4(x[i].scales, is + 0, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      unpack_scale_min_k4(x[i].scales, is + 1, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
      q += 32;
    }
  }
}

void quantize_row_q5_K_reference(const float* x, void* blocks, int64_t n) {
  const int64_t nb = block_count("quantize q5_K", n, kQK_K);
  auto* y = static_cast<BlockQ5_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    uint8_t L[kQK_K];
    quantize_k4_reference(x, y[i], 31, -0.5f, 15, L);
    pack_q5_K_levels(L, y[i].qh, y[i].qs);
  }
}

void quantize_row_q5_K_weighted(const float* x, void* blocks, int64_t n, const float* importance) {
  const int64_t nb = block_count("quantize q5_K", n, kQK_K);
  check_importance("quantize q5_K", importance, n);
  auto* y = static_cast<BlockQ5_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    uint8_t L[kQK_K];
    quantize_k4_weighted(x, y[i], importance + kQK_K * i, 31, L, true);
    pack_q5_K_levels(L, y[i].qh, y[i].qs);
  }
}

void dequantize_row_q5_K(const void* blocks, float* y, int64_t n) {
  const int64_t nb = block_count("dequantize q5_K", n, kQK_K);
  const auto* x = static_cast<const BlockQ5_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* ql = x[i].qs;
    const uint8_t* qh = x[i].qh;
    const float d = f16_to_float(x[i].d);
    const float min = f16_to_float(x[i].dmin);
    uint8_t u1 = 1, u2 = 2;
    for (int is = 0; is < kQK_K / 32; is += 2) {
      uint8_t sc, m;
      unpack_scale_min_k4(x[i].scales, is + 0, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      unpack_scale_min_k4(x[i].scales, is + 1, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l) {
        *y++ = d1 * static_cast<float>((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        *y++ = d2 * static_cast<float>((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      }
      ql += 32;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

void quantize_row_q6_K_reference(const float* x, void* blocks, int64_t n) {
  const int64_t nb = block_count("quantize q6_K", n, kQK_K);
  auto* y = static_cast<BlockQ6_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    int8_t L[kQK_K];
    float scales[kQK_K / 16];
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, nullptr);
    }
    if (set_q6_K_scales(scales, y[i])) finish_q6_K(x, y[i], L);
  }
}

void quantize_row_q6_K_weighted(const float* x, void* blocks, int64_t n, const float* importance) {
  const int64_t nb = block_count("quantize q6_K", n, kQK_K);
  check_importance("quantize q6_K", importance, n);
  auto* y = static_cast<BlockQ6_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    int8_t L[kQK_K];
    float scales[kQK_K / 16];
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      // ggml passes the raw importance here (no sigma2 term).
      scales[ib] =
          make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, importance + kQK_K * i + 16 * ib);
    }
    if (set_q6_K_scales(scales, y[i])) finish_q6_K(x, y[i], L);
  }
}

void dequantize_row_q6_K(const void* blocks, float* y, int64_t n) {
  const int64_t nb = block_count("dequantize q6_K", n, kQK_K);
  const auto* x = static_cast<const BlockQ6_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_float(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int half = 0; half < kQK_K; half += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * sc[is + 0] * static_cast<float>(q1);
        y[l + 32] = d * sc[is + 2] * static_cast<float>(q2);
        y[l + 64] = d * sc[is + 4] * static_cast<float>(q3);
        y[l + 96] = d * sc[is + 6] * static_cast<float>(q4);
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

void quantize_row_q8_K_reference(const float* x, void* blocks, int64_t n) {
  const int64_t nb = block_count("quantize q8_K", n, kQK_K);
  auto* y = static_cast<BlockQ8_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    float max = 0;
    float amax = 0;
    for (int j = 0; j < kQK_K; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    if (amax == 0) {
      // ggml leaves bsums untouched here; zero them so output is deterministic.
      std::memset(&y[i], 0, sizeof y[i]);
      continue;
    }
    // -127 (not -128) so that the largest value maps to -127..127 symmetrically.
    const float iscale = -127.f / max;
    for (int j = 0; j < kQK_K; ++j) {
      const int v = nearest_int(iscale * x[j]);
      y[i].qs[j] = static_cast<int8_t>(v < 127 ? v : 127);
    }
    for (int j = 0; j < kQK_K / 16; ++j) {
      int sum = 0;
      for (int ii = 0; ii < 16; ++ii) sum += y[i].qs[16 * j + ii];
      y[i].bsums[j] = static_cast<int16_t>(sum);
    }
    y[i].d = 1 / iscale;
  }
}

void dequantize_row_q8_K(const void* blocks, float* y, int64_t n) {
  const int64_t nb = block_count("dequantize q8_K", n, kQK_K);
  const auto* x = static_cast<const BlockQ8_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i) {
    for (int j = 0; j < kQK_K; ++j) *y++ = x[i].d * static_cast<float>(x[i].qs[j]);
  }
}

// ===========================================================================
// FP8 E4M3 blocks

void quantize_row_fp8_e4m3(const float* x, void* blocks, int64_t n) {
  const int64_t nb = block_count("quantize fp8_e4m3", n, kQK);
  auto* y = static_cast<BlockFp8E4M3*>(blocks);
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j) {
      const float a = std::fabs(x[j]);
      if (a > amax) amax = a;
    }
    y[i].d = f16_round_up(amax / 448.0f);
    const float d = f16_to_float(y[i].d);
    for (int j = 0; j < kQK; ++j) y[i].qs[j] = d != 0 ? fp32_to_e4m3(x[j] / d) : 0;
  }
}

void dequantize_row_fp8_e4m3(const void* blocks, float* y, int64_t n) {
  const int64_t nb = block_count("dequantize fp8_e4m3", n, kQK);
  const auto* x = static_cast<const BlockFp8E4M3*>(blocks);
  const float* table = e4m3_table().values;
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_float(x[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = d * table[x[i].qs[j]];
  }
}

// ===========================================================================
// Dispatch

bool quantization_supported(DType type) {
  switch (type) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q8_0:
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::Q8_K:
      return true;
    default:
      return false;
  }
}

void quantize_row(DType type, const float* x, void* blocks, int64_t n, const float* importance) {
  if (n < 0) fail("quantize: negative element count ", n);
  switch (type) {
    case DType::F32:
      std::memcpy(blocks, x, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::F16: {
      auto* y = static_cast<uint16_t*>(blocks);
      for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
      return;
    }
    case DType::BF16: {
      auto* y = static_cast<uint16_t*>(blocks);
      for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_bf16(x[i]);
      return;
    }
    case DType::Q8_0:
      return quantize_row_q8_0_reference(x, blocks, n);
    case DType::Q8_K:
      return quantize_row_q8_K_reference(x, blocks, n);
    default:
      break;
  }
  struct Entry {
    DType type;
    void (*reference)(const float*, void*, int64_t);
    void (*weighted)(const float*, void*, int64_t, const float*);
  };
  static constexpr Entry kEntries[] = {
      {DType::Q4_0, quantize_row_q4_0_reference, quantize_row_q4_0_weighted},
      {DType::Q4_1, quantize_row_q4_1_reference, quantize_row_q4_1_weighted},
      {DType::Q5_0, quantize_row_q5_0_reference, quantize_row_q5_0_weighted},
      {DType::Q5_1, quantize_row_q5_1_reference, quantize_row_q5_1_weighted},
      {DType::Q2_K, quantize_row_q2_K_reference, quantize_row_q2_K_weighted},
      {DType::Q3_K, quantize_row_q3_K_reference, quantize_row_q3_K_weighted},
      {DType::Q4_K, quantize_row_q4_K_reference, quantize_row_q4_K_weighted},
      {DType::Q5_K, quantize_row_q5_K_reference, quantize_row_q5_K_weighted},
      {DType::Q6_K, quantize_row_q6_K_reference, quantize_row_q6_K_weighted},
  };
  for (const Entry& e : kEntries) {
    if (e.type != type) continue;
    if (importance) {
      e.weighted(x, blocks, n, importance);
    } else {
      e.reference(x, blocks, n);
    }
    return;
  }
  const DTypeTraits* traits = dtype_traits(static_cast<uint32_t>(type));
  fail("quantize: type ", traits ? traits->name : "?", " (id ", static_cast<uint32_t>(type),
       ") is not supported");
}

void dequantize_row_quant(DType type, const void* blocks, float* y, int64_t n) {
  if (n < 0) fail("dequantize: negative element count ", n);
  switch (type) {
    case DType::F32:
      std::memcpy(y, blocks, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::F16: {
      const auto* x = static_cast<const uint16_t*>(blocks);
      for (int64_t i = 0; i < n; ++i) y[i] = fp16_to_fp32(x[i]);
      return;
    }
    case DType::BF16: {
      const auto* x = static_cast<const uint16_t*>(blocks);
      for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_fp32(x[i]);
      return;
    }
    case DType::Q4_0:
      return dequantize_row_q4_0(blocks, y, n);
    case DType::Q4_1:
      return dequantize_row_q4_1(blocks, y, n);
    case DType::Q5_0:
      return dequantize_row_q5_0(blocks, y, n);
    case DType::Q5_1:
      return dequantize_row_q5_1(blocks, y, n);
    case DType::Q8_0:
      return dequantize_row_q8_0(blocks, y, n);
    case DType::Q2_K:
      return dequantize_row_q2_K(blocks, y, n);
    case DType::Q3_K:
      return dequantize_row_q3_K(blocks, y, n);
    case DType::Q4_K:
      return dequantize_row_q4_K(blocks, y, n);
    case DType::Q5_K:
      return dequantize_row_q5_K(blocks, y, n);
    case DType::Q6_K:
      return dequantize_row_q6_K(blocks, y, n);
    case DType::Q8_K:
      return dequantize_row_q8_K(blocks, y, n);
    default:
      break;
  }
  const DTypeTraits* traits = dtype_traits(static_cast<uint32_t>(type));
  fail("dequantize: type ", traits ? traits->name : "?", " (id ", static_cast<uint32_t>(type),
       ") is not supported");
}

// ===========================================================================
// Levels with fixed scales

int LevelGrid::nearest(float x) const {
  const int level = step != 0 ? zero + nearest_int((x - offset) / step) : zero;
  return clamp_int(level, min_level, max_level);
}

bool block_levels_supported(DType type) {
  switch (type) {
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q8_0:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return true;
    default:
      return false;
  }
}

LevelGrid block_level_grid(DType type, const void* block, int j) {
  LevelGrid g;
  switch (type) {
    case DType::Q4_0:
      g.step = f16_to_float(static_cast<const BlockQ4_0*>(block)->d);
      g.zero = 8, g.max_level = 15;
      return g;
    case DType::Q4_1: {
      const auto* b = static_cast<const BlockQ4_1*>(block);
      g.step = f16_to_float(b->d), g.offset = f16_to_float(b->m);
      g.max_level = 15;
      return g;
    }
    case DType::Q5_0:
      g.step = f16_to_float(static_cast<const BlockQ5_0*>(block)->d);
      g.zero = 16, g.max_level = 31;
      return g;
    case DType::Q5_1: {
      const auto* b = static_cast<const BlockQ5_1*>(block);
      g.step = f16_to_float(b->d), g.offset = f16_to_float(b->m);
      g.max_level = 31;
      return g;
    }
    case DType::Q8_0:
      g.step = f16_to_float(static_cast<const BlockQ8_0*>(block)->d);
      g.min_level = -127, g.max_level = 127;
      return g;
    case DType::Q4_K:
    case DType::Q5_K: {
      // BlockQ5_K starts with BlockQ4_K's d, dmin and scales.
      const auto* b = static_cast<const BlockQ4_K*>(block);
      uint8_t sc, m;
      unpack_scale_min_k4(b->scales, j / 32, &sc, &m);
      g.step = f16_to_float(b->d) * sc;
      g.offset = -(f16_to_float(b->dmin) * m);
      g.max_level = type == DType::Q4_K ? 15 : 31;
      return g;
    }
    case DType::Q6_K: {
      const auto* b = static_cast<const BlockQ6_K*>(block);
      g.step = f16_to_float(b->d) * static_cast<float>(b->scales[j / 16]);
      g.zero = 32, g.max_level = 63;
      return g;
    }
    default:
      fail("block levels: type ", dtype_name(type), " is not supported");
  }
}

void pack_block_levels(DType type, const int* levels, void* block) {
  uint8_t L[kQK_K];
  const int n = type == DType::Q4_K || type == DType::Q5_K || type == DType::Q6_K ? kQK_K : kQK;
  for (int j = 0; j < n; ++j) L[j] = static_cast<uint8_t>(levels[j]);
  switch (type) {
    case DType::Q4_0:
    case DType::Q4_1: {
      uint8_t* qs = type == DType::Q4_0 ? static_cast<BlockQ4_0*>(block)->qs
                                        : static_cast<BlockQ4_1*>(block)->qs;
      for (int j = 0; j < kQK / 2; ++j) qs[j] = static_cast<uint8_t>(L[j] | (L[j + kQK / 2] << 4));
      return;
    }
    case DType::Q5_0: {
      auto* b = static_cast<BlockQ5_0*>(block);
      return pack_q5_bits(L, b->qs, b->qh);
    }
    case DType::Q5_1: {
      auto* b = static_cast<BlockQ5_1*>(block);
      return pack_q5_bits(L, b->qs, b->qh);
    }
    case DType::Q8_0: {
      auto* b = static_cast<BlockQ8_0*>(block);
      for (int j = 0; j < kQK; ++j) b->qs[j] = static_cast<int8_t>(levels[j]);
      return;
    }
    case DType::Q4_K:
      return pack_q4_K_levels(L, static_cast<BlockQ4_K*>(block)->qs);
    case DType::Q5_K: {
      auto* b = static_cast<BlockQ5_K*>(block);
      return pack_q5_K_levels(L, b->qh, b->qs);
    }
    case DType::Q6_K:
      return pack_q6_K_levels(reinterpret_cast<const int8_t*>(L), *static_cast<BlockQ6_K*>(block));
    default:
      fail("block levels: type ", dtype_name(type), " is not supported");
  }
}

}  // namespace edgelm
