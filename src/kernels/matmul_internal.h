// Kernel tables behind matmul(): one entry per (instruction set, weight type).
// Adding a weight format (e.g. a quantized one) means writing its functions and
// setting its slot in register_*_kernels(); nothing else in the dispatch changes.
//
// The *_avx2.cc / *_avx512.cc / *_dotprod.cc / *_i8mm.cc files are compiled with
// ISA flags, so they must not instantiate inline functions or templates from
// shared headers (the linker could pick that copy for callers on CPUs without the
// ISA). They only use intrinsics and their own file-local code (headers such as
// matmul_quant_neon.h put everything in an anonymous namespace for this).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/matmul.h"

namespace edgelm::kernels_internal {

// y[r - row_begin] = dot(W[r], x) for rows [row_begin, row_end): the decode matvec.
using MatvecFn = void (*)(const WeightMatrix& w, const float* x, float* y, int64_t row_begin,
                          int64_t row_end);
// Converts n elements of one row to F32 (n is a whole number of blocks).
using RowToF32Fn = void (*)(const void* src, float* dst, int64_t n);
// Optional whole-range prefill kernel for types that do better than
// "convert rows to F32, then F32 panel product" (e.g. int8 dot products):
// y[t * y_stride + r] for t < n, r in [row_begin, row_end).
using MatmulRowsFn = void (*)(const WeightMatrix& w, const float* x, int64_t n, float* y,
                              int64_t y_stride, int64_t row_begin, int64_t row_end);
// F32 panel product: y[t * y_stride + r] = dot(panel[r * panel_stride ...], x[t * x_stride ...])
// for r < rows, t < n, over `cols` values.
using PanelMatmulFn = void (*)(const float* panel, int64_t panel_stride, int64_t rows, int64_t cols,
                               const float* x, int64_t x_stride, int64_t n, float* y,
                               int64_t y_stride);

// Activations of n tokens quantized once per matmul call for the integer
// kernels of quantized weights (matmul_quant.cc): the values of ggml's Q8_0
// (blocks of 32) or Q8_K (blocks of 256) quantization, stored as arrays.
// Every array of a token starts 64-byte aligned and is zero-padded to a
// multiple of 16 entries, so kernels may load whole vectors past the end.
struct QuantActs {
  const int8_t* q = nullptr;     // token t: q + t * q_stride, cols values
  const float* d = nullptr;      // token t: d + t * d_stride, scale per block (32 or 256)
  const float* dsum = nullptr;   // token t: dsum + t * d32_stride, block scale * (sum of q) per 32
  const int16_t* s32 = nullptr;  // token t: s32 + t * d32_stride, sum of q per 32 values
  const int16_t* s16 = nullptr;  // token t: s16 + t * s16_stride, sum of q per 16 (ggml's bsums)
  int64_t q_stride = 0, d_stride = 0, d32_stride = 0, s16_stride = 0;
};
// The activations of tokens t, t + 1, ... (the same arrays, moved t tokens on).
inline QuantActs acts_from_token(const QuantActs& a, int64_t t) {
  QuantActs at = a;
  at.q += t * a.q_stride;
  at.d += t * a.d_stride;
  at.dsum += t * a.d32_stride;
  at.s32 += t * a.d32_stride;
  at.s16 += t * a.s16_stride;
  return at;
}
// Float kernels sum rows of at most this many values (attention keys and short
// value rows) in groups with one transposed horizontal sum per group.
inline constexpr int64_t kShortRowCols = 256;
inline constexpr int64_t kShortRowTokens = 4;
// y[r - row_begin] = dot(W[r], x) for rows [row_begin, row_end), x quantized.
using QuantMatvecFn = void (*)(const WeightMatrix& w, const QuantActs& x, float* y,
                               int64_t row_begin, int64_t row_end);
// y[t * y_stride + r] for t < n, r in [row_begin, row_end), x quantized.
using QuantMatmulFn = void (*)(const WeightMatrix& w, const QuantActs& x, int64_t n, float* y,
                               int64_t y_stride, int64_t row_begin, int64_t row_end);
// Prefill GEMM on weights repacked per call into row panels (see
// matmul_quant_gemm_x86.h): same contract as QuantMatmulFn, rows handed out in
// groups of kGemmRows, `scratch` holds gemm_scratch_bytes(cols) bytes (64-aligned)
// owned by the calling thread.
using QuantGemmFn = void (*)(const WeightMatrix& w, const QuantActs& x, int64_t n, float* y,
                             int64_t y_stride, int64_t row_begin, int64_t row_end,
                             uint8_t* scratch);
inline constexpr int64_t kGemmRows = 32;
// From two tokens on, the repacked GEMM beats the per-token tiles (2048 x 2048,
// AVX-512, 1 thread: 100 vs 196 us per token at n = 2, 32 vs 33 at n = 8, and
// the tiles degrade for n not a multiple of their 8-token width).
inline constexpr int64_t kGemmMinTokens = 2;
// Quads (1 byte per value) plus a scale and a min coefficient per 16 values,
// per row, for the row length rounded up to 64.
inline constexpr size_t gemm_scratch_bytes(int64_t cols) {
  return static_cast<size_t>(kGemmRows * ((cols + 63) / 64 * 64)) * 3 / 2 + 64;
}
// Quantizes one token's activations (cols is a whole number of blocks) into
// the arrays of QuantActs: ggml's Q8_0 (blocks of 32) or Q8_K (blocks of 256).
// Every ISA's version gives the bytes of the scalar one (matmul_quant.cc).
using QuantizeActsFn = void (*)(const float* x, int64_t cols, int8_t* q, float* d, float* dsum,
                                int16_t* s32, int16_t* s16);

struct TypeKernels {
  MatvecFn matvec = nullptr;
  RowToF32Fn to_f32 = nullptr;
  MatmulRowsFn matmul_rows = nullptr;  // nullptr: generic panel path
  // Optional, for 2 to kShortRowTokens tokens (attention over the KV cache;
  // its matvec takes rows of up to kShortRowCols values the same way): same
  // contract as matmul_rows.
  MatmulRowsFn short_rows = nullptr;
  // Quantized weight types: integer kernels on quantized activations (these
  // replace matvec / matmul_rows; matmul() hands such types to quant_matmul()).
  QuantMatvecFn quant_matvec = nullptr;
  QuantMatmulFn quant_matmul = nullptr;
  QuantGemmFn quant_gemm = nullptr;  // optional, n >= kGemmMinTokens
};

// DType ids are ggml's and small; one slot per id.
constexpr uint32_t kDTypeSlots = 64;

struct IsaKernels {
  TypeKernels types[kDTypeSlots];
  PanelMatmulFn panel_matmul = nullptr;
  QuantizeActsFn quantize_q8_0 = nullptr;  // activations of the 32-value quantized types
  QuantizeActsFn quantize_q8_K = nullptr;  // activations of the K-quants
  void (*f32_to_f16)(const float* src, uint16_t* dst, int64_t n) = nullptr;  // round to even
  // Element-wise ops of ops.h (ops.cc has the scalar reference versions).
  void (*rmsnorm)(float* out, const float* x, const float* weight, int64_t n, float eps) = nullptr;
  void (*softmax)(float* x, int64_t n) = nullptr;
  void (*silu_mul)(float* out, const float* gate, const float* up, int64_t n) = nullptr;
  int64_t (*argmax)(const float* x, int64_t n) = nullptr;
  // Wrapping sum of `count` 64-bit words, software-prefetching `prefetch_bytes`
  // ahead (0: none): the streaming read of the bandwidth roofline (bandwidth.cc),
  // as fast per byte as this ISA's loads allow so that it measures the memory,
  // not the instruction rate (a scalar loop reads about half of what one core's
  // memory delivers on a 2.1 GHz Xeon).
  uint64_t (*read_sum)(const uint64_t* words, int64_t count, int64_t prefetch_bytes) = nullptr;
};

// The table of the active ISA (matmul.cc), for dispatch from other files.
const IsaKernels& active_isa_kernels();

void register_scalar_kernels(IsaKernels* table);
#if defined(__x86_64__) || defined(_M_X64)
void register_avx2_kernels(IsaKernels* table);
void register_avx512_kernels(IsaKernels* table);
#endif
#if defined(__aarch64__)
void register_neon_kernels(IsaKernels* table);
#endif

// Quantized types (matmul_quant*.cc).
void register_quant_scalar_kernels(IsaKernels* table);
#if defined(__x86_64__) || defined(_M_X64)
void register_quant_avx2_kernels(IsaKernels* table);
void register_quant_avx512_kernels(IsaKernels* table);  // only with AVX512-VNNI
#endif
#if defined(__aarch64__)
void register_quant_neon_kernels(IsaKernels* table);
void register_quant_dotprod_kernels(IsaKernels* table);
void register_quant_i8mm_kernels(IsaKernels* table);  // prefill GEMM only (smmla)
#endif
// FP8 E4M3 float kernels (matmul_fp8_*.cc; scalar ones in matmul_quant.cc).
#if defined(__x86_64__) || defined(_M_X64)
void register_fp8_avx2_kernels(IsaKernels* table);
void register_fp8_avx512_kernels(IsaKernels* table);
#endif
#if defined(__aarch64__)
void register_fp8_neon_kernels(IsaKernels* table);
#endif
// SIMD activation quantizers (quantize_acts_*.cc; scalar ones in matmul_quant.cc).
#if defined(__x86_64__) || defined(_M_X64)
void register_quantize_acts_avx2(IsaKernels* table);
void register_quantize_acts_avx512(IsaKernels* table);
#endif
#if defined(__aarch64__)
void register_quantize_acts_neon(IsaKernels* table);
#endif
// Element-wise ops (ops*.cc).
void register_ops_scalar(IsaKernels* table);
#if defined(__x86_64__) || defined(_M_X64)
void register_ops_avx2(IsaKernels* table);
void register_ops_avx512(IsaKernels* table);
#endif
#if defined(__aarch64__)
void register_ops_neon(IsaKernels* table);
#endif
// Storage for quantized activations, grown once: decode allocates nothing per token.
struct ActBuffer {
  std::vector<uint8_t> bytes;
  uint8_t* take(size_t size) {
    if (bytes.size() < size + 64) bytes.resize(size + 64);
    const uintptr_t p = reinterpret_cast<uintptr_t>(bytes.data());
    return bytes.data() + ((64 - p % 64) % 64);
  }
};
// Quantizes n tokens of x (cols values each) for the integer kernels of weight
// `type` (Q8_0 or Q8_K form) into `buffer`, or where that is null into a
// per-thread buffer of that form, valid until the calling thread quantizes
// again for the same form.
QuantActs quantize_activations(DType type, const IsaKernels& isa, const float* x, int64_t cols,
                               int64_t n, ThreadPool* pool, ActBuffer* buffer = nullptr);
bool uses_q8_K_activations(DType type);  // K-quants; the other integer types use Q8_0
// Quantizes x once with isa's quantize_q8_* and runs tk's integer kernels over the pool.
void quant_matmul(const WeightMatrix& w, const IsaKernels& isa, const TypeKernels& tk,
                  const float* x, int64_t n, float* y, ThreadPool* pool);

// Which AVX-512 decode kernels Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K and Q6_K use
// (matmul_quant_x86.h). kPermuteHeavy (matvec_32_zmm, tile_32, matvec_k4_zmm,
// tuned on AMD Zen 5) gathers block fields with two-source word permutes
// and scales every 64 values in float through a lane permute; Intel cores have
// one shuffle port and run vpermt2w at about 1.7 cycles. kShuffleLight
// (matvec_32_lanes, matvec_q8_0_lanes, matvec_q4_k_lanes, matvec_q6_k_lanes)
// inserts 16- or 32-byte loads into lanes, gathers a step's scales with one
// word permute and applies the K-quants' integer scales as int16 in vpdpwssd
// on whole zmm (kPermuteHeavy runs Q6_K in ymm tiles). Both give exact integer
// sums. kShuffleLight also brings the interleaved (X16) weight layouts. The
// start-up choice follows the core (default_avx512_decode_variant); tests and
// benchmarks set both.
enum class Avx512Decode : uint8_t { kPermuteHeavy, kShuffleLight };
Avx512Decode default_avx512_decode_variant();
Avx512Decode avx512_decode_variant();
void set_avx512_decode_variant(Avx512Decode variant);

// FP8_E4M3's id (1000) and the interleaved layouts' (1001..1004) are outside
// ggml's range; they take the last slots.
inline constexpr uint32_t slot(DType type) {
  return type == DType::FP8_E4M3   ? 63
         : type == DType::Q4_0_X16 ? 62
         : type == DType::Q5_0_X16 ? 61
         : type == DType::Q4_K_X16 ? 60
         : type == DType::Q8_0_X16 ? 59
                                   : static_cast<uint32_t>(type);
}

// Rows are handed to kernels in whole units of this many: the row block of the
// SIMD kernels, or an interleaved layout's group of 16.
inline constexpr int64_t row_unit(DType type) {
  return is_in_memory_layout(static_cast<uint32_t>(type)) ? 16 : 4;
}

}  // namespace edgelm::kernels_internal
