// Quantized weights (ggml block formats and FP8 E4M3): the driver that
// quantizes activations once per matmul call, plus the scalar reference
// kernels every SIMD kernel is tested against.
//
// Integer path: y = sum over blocks of (weight scale) * (activation scale) *
// (integer dot product of the block's quants), the way ggml's vec_dot_*_q8_*
// work. Activations use ggml's Q8_0 quantization for the 32-value formats and
// Q8_K for the K-quants (same values; stored as arrays, see QuantActs).
// FP8 has no integer form (its values are not a scaled int8 grid), so it uses
// the float matvec + F32 panel path like F16.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/matmul_internal.h"
#include "kernels/quant_formats.h"
#include "kernels/thread_pool.h"
#include "util/error.h"
#include "util/half.h"

// Activation quantization must round exactly like ggml's reference, so the
// multiply and the rounding add must not fuse into an FMA (ARM64 has FMA in
// its base ISA). clang only fuses within one expression, which we avoid.
#if defined(__GNUC__) && !defined(__clang__)
#define EDGELM_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define EDGELM_NO_FP_CONTRACT
#endif

namespace edgelm::kernels_internal {
namespace {

int64_t round_up(int64_t v, int64_t m) {
  return (v + m - 1) / m * m;
}

// ---- activation quantization ----

// ggml's quantize_row_q8_0_ref for one token: d = amax / 127 stored as f16,
// q = roundf(x / d) (ties away from zero, done without a libm call).
EDGELM_NO_FP_CONTRACT void quantize_acts_q8_0(const float* x, int64_t cols, int8_t* q, float* d,
                                              float* dsum, int16_t* s32, int16_t* s16) {
  for (int64_t b = 0; b < cols / kQK; ++b) {
    const float* xb = x + b * kQK;
    float amax = 0;
    for (int j = 0; j < kQK; ++j) {
      const float a = std::fabs(xb[j]);
      amax = amax > a ? amax : a;
    }
    const float db = amax / 127;
    const float id = db != 0 ? 1.0f / db : 0.0f;
    // Branch-free so the compiler vectorizes it: roundf(v) = trunc(v) +- 1
    // when the (exact) fraction is at least one half.
    int qi[kQK];
    for (int j = 0; j < kQK; ++j) {
      float v = xb[j] * id;
      v = v > -1e9f && v < 1e9f ? v : 0.0f;  // NaN and infinities give 0, as in ggml's reference
      const int i = static_cast<int>(v);
      const float frac = v - static_cast<float>(i);
      qi[j] = i + (frac >= 0.5f) - (frac <= -0.5f);
    }
    int first_half = 0, sum = 0;
    for (int j = 0; j < kQK; ++j) {
      // Out of range only after a NaN (which restarts amax): sum what is stored.
      q[b * kQK + j] = static_cast<int8_t>(qi[j]);
      sum += q[b * kQK + j];
      if (j == 15) first_half = sum;
    }
    d[b] = fp16_to_fp32(fp32_to_fp16(db));
    s32[b] = static_cast<int16_t>(sum);
    s16[2 * b] = static_cast<int16_t>(first_half);
    s16[2 * b + 1] = static_cast<int16_t>(sum - first_half);
    dsum[b] = d[b] * static_cast<float>(sum);
  }
}

// ggml's quantize_row_q8_K_ref for one token (an all-zero block gets d = 0).
EDGELM_NO_FP_CONTRACT void quantize_acts_q8_K(const float* x, int64_t cols, int8_t* q, float* d,
                                              float* dsum, int16_t* s32, int16_t* s16) {
  for (int64_t b = 0; b < cols / kQK_K; ++b) {
    const float* xb = x + b * kQK_K;
    int8_t* qb = q + b * kQK_K;
    float max = 0;
    float amax = 0;
    for (int j = 0; j < kQK_K; ++j) {
      const float ax = std::fabs(xb[j]);
      if (ax > amax) {
        amax = ax;
        max = xb[j];
      }
    }
    if (amax == 0) {
      std::memset(qb, 0, kQK_K);
      d[b] = 0;
    } else {
      const float iscale = -127.f / max;
      for (int j = 0; j < kQK_K; ++j) {
        const float v = iscale * xb[j];
        const float shifted = v + 12582912.f;  // round half to even in the low mantissa bits
        uint32_t bits;
        std::memcpy(&bits, &shifted, 4);
        const int r = static_cast<int>(bits & 0x007fffff) - 0x00400000;
        qb[j] = static_cast<int8_t>(r < 127 ? r : 127);
      }
      d[b] = 1 / iscale;
    }
    for (int g = 0; g < kQK_K / 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += qb[16 * g + j];
      s16[b * 16 + g] = static_cast<int16_t>(sum);
    }
    for (int g = 0; g < kQK_K / 32; ++g) {
      const int sum = s16[b * 16 + 2 * g] + s16[b * 16 + 2 * g + 1];
      s32[b * 8 + g] = static_cast<int16_t>(sum);
      dsum[b * 8 + g] = d[b] * static_cast<float>(sum);
    }
  }
}

bool is_k_quant(DType type) {
  switch (type) {
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q4_K_X16:
    case DType::Q5_K:
    case DType::Q6_K:
      return true;
    default:
      return false;
  }
}

// Runs fn(begin, end) over [0, units) on the pool, or inline without one.
template <typename Fn>
void split(ThreadPool* pool, int64_t units, int64_t grain, const Fn& fn) {
  if (pool == nullptr || pool->size() == 1 || units <= grain) {
    fn(int64_t{0}, units);
  } else {
    pool->parallel_for(units, grain, fn);
  }
}

// ---- scalar reference kernels ----
//
// Each block is unpacked to plain integers (quants with the format's offset
// applied, integer sub-block scales and mins) and float super-scales; the dot
// product is then exact integer arithmetic per (sub-)block, combined in float
// in block order:
//   32-value formats: y += dx * (d * isum + m * xsum)
//   K-quants:         y += dx * (d * sum_j sc_j * isum_j - dmin * sum_j m_j * xsum_j)

struct Unpacked32 {
  int8_t q[kQK];
  float d;
  float m;  // 0 for the _0 formats
};

uint32_t load_u32_le(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

struct ScalarQ4_0 {
  using Block = BlockQ4_0;
  static void unpack(const Block& b, Unpacked32* u) {
    u->d = fp16_to_fp32(b.d);
    u->m = 0;
    for (int j = 0; j < 16; ++j) {
      u->q[j] = static_cast<int8_t>((b.qs[j] & 0xF) - 8);
      u->q[j + 16] = static_cast<int8_t>((b.qs[j] >> 4) - 8);
    }
  }
};
struct ScalarQ4_1 {
  using Block = BlockQ4_1;
  static void unpack(const Block& b, Unpacked32* u) {
    u->d = fp16_to_fp32(b.d);
    u->m = fp16_to_fp32(b.m);
    for (int j = 0; j < 16; ++j) {
      u->q[j] = static_cast<int8_t>(b.qs[j] & 0xF);
      u->q[j + 16] = static_cast<int8_t>(b.qs[j] >> 4);
    }
  }
};
template <typename B>
void unpack_q5(const B& b, int offset, Unpacked32* u) {
  const uint32_t qh = load_u32_le(b.qh);
  for (int j = 0; j < 16; ++j) {
    u->q[j] = static_cast<int8_t>(((b.qs[j] & 0xF) | ((qh >> j) & 1) << 4) - offset);
    u->q[j + 16] = static_cast<int8_t>(((b.qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - offset);
  }
}
struct ScalarQ5_0 {
  using Block = BlockQ5_0;
  static void unpack(const Block& b, Unpacked32* u) {
    u->d = fp16_to_fp32(b.d);
    u->m = 0;
    unpack_q5(b, 16, u);
  }
};
struct ScalarQ5_1 {
  using Block = BlockQ5_1;
  static void unpack(const Block& b, Unpacked32* u) {
    u->d = fp16_to_fp32(b.d);
    u->m = fp16_to_fp32(b.m);
    unpack_q5(b, 0, u);
  }
};
struct ScalarQ8_0 {
  using Block = BlockQ8_0;
  static void unpack(const Block& b, Unpacked32* u) {
    u->d = fp16_to_fp32(b.d);
    u->m = 0;
    std::memcpy(u->q, b.qs, kQK);
  }
};

struct UnpackedK {
  int8_t q[kQK_K];
  int sc[16];
  int m[16];  // 0 for Q3_K and Q6_K
  float d;
  float dmin;
};

struct ScalarQ2_K {
  using Block = BlockQ2_K;
  static constexpr int kSub = 16;
  static void unpack(const Block& b, UnpackedK* u) {
    u->d = fp16_to_fp32(b.d);
    u->dmin = fp16_to_fp32(b.dmin);
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, s = (e % 128) / 32, l = e % 32;
      u->q[e] = static_cast<int8_t>((b.qs[32 * h + l] >> (2 * s)) & 3);
    }
    for (int j = 0; j < 16; ++j) {
      u->sc[j] = b.scales[j] & 0xF;
      u->m[j] = b.scales[j] >> 4;
    }
  }
};
struct ScalarQ3_K {
  using Block = BlockQ3_K;
  static constexpr int kSub = 16;
  static void unpack(const Block& b, UnpackedK* u) {
    u->d = fp16_to_fp32(b.d);
    u->dmin = 0;
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, s = (e % 128) / 32, l = e % 32;
      const int low = (b.qs[32 * h + l] >> (2 * s)) & 3;
      const int high = (b.hmask[e % 32] >> (e / 32)) & 1;
      u->q[e] = static_cast<int8_t>((low | high << 2) - 4);
    }
    for (int j = 0; j < 16; ++j) {
      u->sc[j] = unpack_scale_q3_K(b.scales, j);
      u->m[j] = 0;
    }
  }
};
template <typename B>
void unpack_k4_scales(const B& b, UnpackedK* u) {
  u->d = fp16_to_fp32(b.d);
  u->dmin = fp16_to_fp32(b.dmin);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    unpack_scale_min_k4(b.scales, j, &sc, &m);
    u->sc[j] = sc;
    u->m[j] = m;
  }
}
struct ScalarQ4_K {
  using Block = BlockQ4_K;
  static constexpr int kSub = 32;
  static void unpack(const Block& b, UnpackedK* u) {
    unpack_k4_scales(b, u);
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 64, l = e % 32;
      const uint8_t byte = b.qs[32 * h + l];
      u->q[e] = static_cast<int8_t>(e % 64 < 32 ? byte & 0xF : byte >> 4);
    }
  }
};
struct ScalarQ5_K {
  using Block = BlockQ5_K;
  static constexpr int kSub = 32;
  static void unpack(const Block& b, UnpackedK* u) {
    unpack_k4_scales(b, u);
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 64, l = e % 32;
      const uint8_t byte = b.qs[32 * h + l];
      const int low = e % 64 < 32 ? byte & 0xF : byte >> 4;
      const int high = (b.qh[l] >> (e / 32)) & 1;
      u->q[e] = static_cast<int8_t>(low | high << 4);
    }
  }
};
struct ScalarQ6_K {
  using Block = BlockQ6_K;
  static constexpr int kSub = 16;
  static void unpack(const Block& b, UnpackedK* u) {
    u->d = fp16_to_fp32(b.d);
    u->dmin = 0;
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, g = (e % 128) / 32, l = e % 32;
      const uint8_t byte = b.ql[64 * h + 32 * (g & 1) + l];
      const int low = g < 2 ? byte & 0xF : byte >> 4;
      const int high = (b.qh[32 * h + l] >> (2 * g)) & 3;
      u->q[e] = static_cast<int8_t>((low | high << 4) - 32);
    }
    for (int j = 0; j < 16; ++j) {
      u->sc[j] = b.scales[j];
      u->m[j] = 0;
    }
  }
};

// Tokens per pass of the scalar kernels: each block is unpacked once per pass.
constexpr int64_t kScalarTokens = 8;

// y[t * y_stride + (r - out_row0)] for r in [row_begin, row_end), t < n.
template <typename F>
void scalar_rows_32(const WeightMatrix& w, const QuantActs& a, int64_t n, float* y,
                    int64_t y_stride, int64_t row_begin, int64_t row_end, int64_t out_row0) {
  const int64_t nb = w.cols / kQK;
  for (int64_t t0 = 0; t0 < n; t0 += kScalarTokens) {
    const int64_t nt = std::min(kScalarTokens, n - t0);
    for (int64_t r = row_begin; r < row_end; ++r) {
      const auto* blocks = reinterpret_cast<const typename F::Block*>(
          static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r) * w.row_bytes);
      float acc[kScalarTokens] = {};
      for (int64_t b = 0; b < nb; ++b) {
        Unpacked32 u;
        F::unpack(blocks[b], &u);
        for (int64_t t = 0; t < nt; ++t) {
          const int8_t* xq = a.q + (t0 + t) * a.q_stride + b * kQK;
          int isum = 0;
          for (int j = 0; j < kQK; ++j) isum += u.q[j] * xq[j];
          const float dx = a.d[(t0 + t) * a.d_stride + b];
          const float xsum = a.s32[(t0 + t) * a.d32_stride + b];
          acc[t] += dx * (u.d * static_cast<float>(isum) + u.m * xsum);
        }
      }
      for (int64_t t = 0; t < nt; ++t) y[(t0 + t) * y_stride + (r - out_row0)] = acc[t];
    }
  }
}

template <typename F>
void scalar_rows_k(const WeightMatrix& w, const QuantActs& a, int64_t n, float* y, int64_t y_stride,
                   int64_t row_begin, int64_t row_end, int64_t out_row0) {
  const int64_t nb = w.cols / kQK_K;
  constexpr int kSub = F::kSub;
  for (int64_t t0 = 0; t0 < n; t0 += kScalarTokens) {
    const int64_t nt = std::min(kScalarTokens, n - t0);
    for (int64_t r = row_begin; r < row_end; ++r) {
      const auto* blocks = reinterpret_cast<const typename F::Block*>(
          static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r) * w.row_bytes);
      float acc[kScalarTokens] = {};
      for (int64_t b = 0; b < nb; ++b) {
        UnpackedK u;
        F::unpack(blocks[b], &u);
        for (int64_t t = 0; t < nt; ++t) {
          const int8_t* xq = a.q + (t0 + t) * a.q_stride + b * kQK_K;
          const int16_t* xsums = kSub == 16 ? a.s16 + (t0 + t) * a.s16_stride + b * 16
                                            : a.s32 + (t0 + t) * a.d32_stride + b * 8;
          int isum = 0;
          int imin = 0;
          for (int j = 0; j < kQK_K / kSub; ++j) {
            int s = 0;
            for (int i = 0; i < kSub; ++i) s += u.q[j * kSub + i] * xq[j * kSub + i];
            isum += u.sc[j] * s;
            imin += u.m[j] * xsums[j];
          }
          const float dx = a.d[(t0 + t) * a.d_stride + b];
          acc[t] += dx * (u.d * static_cast<float>(isum) - u.dmin * static_cast<float>(imin));
        }
      }
      for (int64_t t = 0; t < nt; ++t) y[(t0 + t) * y_stride + (r - out_row0)] = acc[t];
    }
  }
}

template <typename F, bool kIsK>
void scalar_matvec(const WeightMatrix& w, const QuantActs& a, float* y, int64_t row_begin,
                   int64_t row_end) {
  if constexpr (kIsK) {
    scalar_rows_k<F>(w, a, 1, y, 0, row_begin, row_end, row_begin);
  } else {
    scalar_rows_32<F>(w, a, 1, y, 0, row_begin, row_end, row_begin);
  }
}

template <typename F, bool kIsK>
void scalar_matmul(const WeightMatrix& w, const QuantActs& a, int64_t n, float* y, int64_t y_stride,
                   int64_t row_begin, int64_t row_end) {
  if constexpr (kIsK) {
    scalar_rows_k<F>(w, a, n, y, y_stride, row_begin, row_end, 0);
  } else {
    scalar_rows_32<F>(w, a, n, y, y_stride, row_begin, row_end, 0);
  }
}

// ---- FP8 E4M3: float path ----

struct Fp8Table {
  float value[256];
  Fp8Table() {
    for (int c = 0; c < 256; ++c) value[c] = e4m3_to_fp32(static_cast<uint8_t>(c));
  }
};
const Fp8Table& fp8_table() {
  static const Fp8Table table;
  return table;
}

void fp8_matvec(const WeightMatrix& w, const float* x, float* y, int64_t row_begin,
                int64_t row_end) {
  const float* lut = fp8_table().value;
  const int64_t nb = w.cols / kQK;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const auto* blocks = reinterpret_cast<const BlockFp8E4M3*>(
        static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r) * w.row_bytes);
    float acc = 0;
    for (int64_t b = 0; b < nb; ++b) {
      float s[4] = {0, 0, 0, 0};
      for (int j = 0; j < kQK; j += 4) {
        for (int k = 0; k < 4; ++k) s[k] += lut[blocks[b].qs[j + k]] * x[b * kQK + j + k];
      }
      acc += fp16_to_fp32(blocks[b].d) * ((s[0] + s[1]) + (s[2] + s[3]));
    }
    y[r - row_begin] = acc;
  }
}

}  // namespace

// ---- Interleaved layouts on ISAs without their own kernels ----
// Each 16-row group is put back into row-major form and handed to the active
// ISA's kernels for that type: correct everywhere (the scalar ones are the
// reference), fast only where an ISA registers its own
// (matmul_quant_avx512.cc).
namespace {

// Calls fn(rows16, kernels, r) for the 16-row groups starting at r in
// [row_begin, row_end), rows16 holding group r de-interleaved into row-major
// form and kernels the active ISA's for that form.
template <typename Fn>
void for_each_x16_group(const WeightMatrix& w, int64_t row_begin, int64_t row_end, const Fn& fn) {
  thread_local ActBuffer group;
  const DType type = x16_row_major(w.type);
  // De-interleaved rows are packed; w's stride may be longer (a column slice).
  const size_t row_bytes = dtype_row_bytes(type, w.cols);
  uint8_t* rows = group.take(kX16Rows * row_bytes);
  const WeightMatrix rows16{type, kX16Rows, w.cols, rows, row_bytes};
  const TypeKernels& kernels = active_isa_kernels().types[slot(type)];
  for (int64_t r = row_begin; r < row_end; r += kX16Rows) {
    deinterleave_x16(w.type, static_cast<const uint8_t*>(w.data) + r * w.row_bytes, w.cols, rows);
    fn(rows16, kernels, r);
  }
}

void x16_matvec(const WeightMatrix& w, const QuantActs& a, float* y, int64_t row_begin,
                int64_t row_end) {
  for_each_x16_group(w, row_begin, row_end,
                     [&](const WeightMatrix& rows16, const TypeKernels& k, int64_t r) {
                       k.quant_matvec(rows16, a, y + (r - row_begin), 0, kX16Rows);
                     });
}

void x16_matmul(const WeightMatrix& w, const QuantActs& a, int64_t n, float* y, int64_t y_stride,
                int64_t row_begin, int64_t row_end) {
  for_each_x16_group(w, row_begin, row_end,
                     [&](const WeightMatrix& rows16, const TypeKernels& k, int64_t r) {
                       k.quant_matmul(rows16, a, n, y + r, y_stride, 0, kX16Rows);
                     });
}

}  // namespace

// ---- driver ----

bool uses_q8_K_activations(DType type) {
  return is_k_quant(type);
}

QuantActs quantize_activations(DType type, const IsaKernels& isa, const float* x, int64_t cols,
                               int64_t n, ThreadPool* pool, ActBuffer* buffer) {
  const bool k_quant = is_k_quant(type);
  const int64_t block = k_quant ? kQK_K : kQK;
  if (cols % block != 0) {
    fail("matmul: ", cols, " columns is not a whole number of ", block, "-value blocks");
  }
  const int64_t nb = cols / block;
  QuantActs a;
  a.q_stride = round_up(cols, 64);
  a.d_stride = round_up(nb, 16);
  a.d32_stride = round_up(cols / kQK, 32);
  a.s16_stride = round_up(cols / 16, 32);
  const size_t q_bytes = static_cast<size_t>(n * a.q_stride);
  const size_t d_bytes = static_cast<size_t>(n * a.d_stride) * sizeof(float);
  const size_t dsum_bytes = static_cast<size_t>(n * a.d32_stride) * sizeof(float);
  const size_t s32_bytes = static_cast<size_t>(n * a.d32_stride) * sizeof(int16_t);
  const size_t s16_bytes = static_cast<size_t>(n * a.s16_stride) * sizeof(int16_t);
  // One buffer per activation format, so a Q8_0 and a Q8_K copy of the same
  // input can be alive at once (matmul_many over mixed types).
  thread_local ActBuffer buffers[2];
  ActBuffer& storage = buffer != nullptr ? *buffer : buffers[k_quant ? 1 : 0];
  uint8_t* base = storage.take(q_bytes + d_bytes + dsum_bytes + s32_bytes + s16_bytes);
  int8_t* q = reinterpret_cast<int8_t*>(base);
  float* d = reinterpret_cast<float*>(base + q_bytes);
  float* dsum = reinterpret_cast<float*>(base + q_bytes + d_bytes);
  int16_t* s32 = reinterpret_cast<int16_t*>(base + q_bytes + d_bytes + dsum_bytes);
  int16_t* s16 = reinterpret_cast<int16_t*>(base + q_bytes + d_bytes + dsum_bytes + s32_bytes);
  a.q = q;
  a.d = d;
  a.dsum = dsum;
  a.s32 = s32;
  a.s16 = s16;

  auto quantize_tokens = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      int8_t* qt = q + t * a.q_stride;
      float* dt = d + t * a.d_stride;
      float* dsumt = dsum + t * a.d32_stride;
      int16_t* s32t = s32 + t * a.d32_stride;
      int16_t* s16t = s16 + t * a.s16_stride;
      // Zero padding: kernels may read whole vectors past the last block.
      std::memset(qt + cols, 0, static_cast<size_t>(a.q_stride - cols));
      std::fill(dt + nb, dt + a.d_stride, 0.0f);
      std::fill(dsumt + cols / kQK, dsumt + a.d32_stride, 0.0f);
      std::fill(s32t + cols / kQK, s32t + a.d32_stride, int16_t{0});
      std::fill(s16t + cols / 16, s16t + a.s16_stride, int16_t{0});
      if (k_quant) {
        isa.quantize_q8_K(x + t * cols, cols, qt, dt, dsumt, s32t, s16t);
      } else {
        isa.quantize_q8_0(x + t * cols, cols, qt, dt, dsumt, s32t, s16t);
      }
    }
  };
  split(n >= 8 ? pool : nullptr, n, 4, quantize_tokens);
  return a;
}

void quant_matmul(const WeightMatrix& w, const IsaKernels& isa, const TypeKernels& tk,
                  const float* x, int64_t n, float* y, ThreadPool* pool) {
  const int64_t cols = w.cols;
  const QuantActs a = quantize_activations(w.type, isa, x, cols, n, pool);

  // Work is split by units of rows: the row block of the SIMD kernels.
  const int64_t unit = row_unit(w.type);
  const int64_t row_units = (w.rows + unit - 1) / unit;
  if (n == 1) {
    // Memory bound: give each thread a contiguous slab of at least ~32 KiB.
    const int64_t grain =
        std::max<int64_t>(1, (32 * 1024) / static_cast<int64_t>(w.row_bytes) / unit);
    split(pool, row_units, grain, [&](int64_t begin, int64_t end) {
      const int64_t r0 = begin * unit, r1 = std::min(end * unit, w.rows);
      tk.quant_matvec(w, a, y + r0, r0, r1);
    });
    return;
  }
  const int threads = pool ? pool->size() : 1;
  if (tk.quant_gemm != nullptr && n >= kGemmMinTokens) {
    const int64_t gemm_units = (w.rows + kGemmRows - 1) / kGemmRows;
    const size_t scratch_bytes = gemm_scratch_bytes(cols);
    if (gemm_units >= threads) {
      split(pool, gemm_units, 1, [&](int64_t begin, int64_t end) {
        thread_local ActBuffer scratch;
        tk.quant_gemm(w, a, n, y, w.rows, begin * kGemmRows, std::min(end * kGemmRows, w.rows),
                      scratch.take(scratch_bytes));
      });
    } else {
      split(pool, n, 1, [&](int64_t begin, int64_t end) {
        thread_local ActBuffer scratch;
        tk.quant_gemm(w, acts_from_token(a, begin), end - begin, y + begin * w.rows, w.rows, 0,
                      w.rows, scratch.take(scratch_bytes));
      });
    }
    return;
  }
  if (row_units >= 2 * threads || n < threads) {
    split(pool, row_units, 1, [&](int64_t begin, int64_t end) {
      tk.quant_matmul(w, a, n, y, w.rows, begin * unit, std::min(end * unit, w.rows));
    });
  } else {
    // Few rows (tiny models): split the tokens instead.
    split(pool, n, 1, [&](int64_t begin, int64_t end) {
      tk.quant_matmul(w, acts_from_token(a, begin), end - begin, y + begin * w.rows, w.rows, 0,
                      w.rows);
    });
  }
}

void register_quant_scalar_kernels(IsaKernels* table) {
  table->quantize_q8_0 = quantize_acts_q8_0;
  table->quantize_q8_K = quantize_acts_q8_K;
  auto set = [&](DType type, QuantMatvecFn mv, QuantMatmulFn mm, RowToF32Fn to_f32) {
    TypeKernels& k = table->types[slot(type)];
    k.quant_matvec = mv;
    k.quant_matmul = mm;
    k.to_f32 = to_f32;
  };
  set(DType::Q4_0, scalar_matvec<ScalarQ4_0, false>, scalar_matmul<ScalarQ4_0, false>,
      dequantize_row_q4_0);
  // No to_f32: their rows are not contiguous (dequantize_matrix_row reads them).
  set(DType::Q4_0_X16, x16_matvec, x16_matmul, nullptr);
  set(DType::Q5_0_X16, x16_matvec, x16_matmul, nullptr);
  set(DType::Q4_K_X16, x16_matvec, x16_matmul, nullptr);
  set(DType::Q8_0_X16, x16_matvec, x16_matmul, nullptr);
  set(DType::Q4_1, scalar_matvec<ScalarQ4_1, false>, scalar_matmul<ScalarQ4_1, false>,
      dequantize_row_q4_1);
  set(DType::Q5_0, scalar_matvec<ScalarQ5_0, false>, scalar_matmul<ScalarQ5_0, false>,
      dequantize_row_q5_0);
  set(DType::Q5_1, scalar_matvec<ScalarQ5_1, false>, scalar_matmul<ScalarQ5_1, false>,
      dequantize_row_q5_1);
  set(DType::Q8_0, scalar_matvec<ScalarQ8_0, false>, scalar_matmul<ScalarQ8_0, false>,
      dequantize_row_q8_0);
  set(DType::Q2_K, scalar_matvec<ScalarQ2_K, true>, scalar_matmul<ScalarQ2_K, true>,
      dequantize_row_q2_K);
  set(DType::Q3_K, scalar_matvec<ScalarQ3_K, true>, scalar_matmul<ScalarQ3_K, true>,
      dequantize_row_q3_K);
  set(DType::Q4_K, scalar_matvec<ScalarQ4_K, true>, scalar_matmul<ScalarQ4_K, true>,
      dequantize_row_q4_K);
  set(DType::Q5_K, scalar_matvec<ScalarQ5_K, true>, scalar_matmul<ScalarQ5_K, true>,
      dequantize_row_q5_K);
  set(DType::Q6_K, scalar_matvec<ScalarQ6_K, true>, scalar_matmul<ScalarQ6_K, true>,
      dequantize_row_q6_K);
  // Q8_K is an activation format only: to_f32 for completeness, no matmul.
  table->types[slot(DType::Q8_K)].to_f32 = dequantize_row_q8_K;
  fp8_table();  // built now, not on the first decode step
  TypeKernels& fp8 = table->types[slot(DType::FP8_E4M3)];
  fp8.matvec = fp8_matvec;
  fp8.to_f32 = dequantize_row_fp8_e4m3;
}

}  // namespace edgelm::kernels_internal
