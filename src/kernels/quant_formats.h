// ggml's block quantization formats (bit-exact with ggml-quants.c) plus an
// edgelm-only FP8 E4M3 block format.
//
// Every block struct below is byte-for-byte ggml's block_<type>, so a row of
// blocks can be written to / read from GGUF as is. F16 fields are stored as
// raw IEEE half bits (uint16_t). Rows are arrays of blocks with no padding;
// pointers must be aligned to the block's alignof (2, or 4 for Q8_K), which
// tensor data in a GGUF mapping always is.
//
// quantize_row_<type>_reference reproduces ggml's quantize_row_<type>_ref bit
// for bit (same scale search, same float operation order, same rounding), so
// edgelm's GGUF output matches llama-quantize without an imatrix.
// quantize_row_<type>_weighted reproduces ggml's quantize_row_<type>_impl with
// quant_weights (llama-quantize --imatrix): `n` is ONE row and `importance` has
// n entries (the imatrix column weights, >= 0). Q4_0/Q4_1/Q5_0/Q5_1 derive a
// weight scale from the whole row, so splitting a row changes the result.
//
// The one deliberate difference: an all-zero Q8_K block gets bsums = 0 (ggml
// leaves them unwritten). Bit-exactness needs this file built with
// -ffp-contract=off (see CMakeLists.txt); quant_golden_test.cc checks it.
//
// All functions throw edgelm::Error if n is negative or not a multiple of the
// block size, or (weighted) if importance is null or not finite and >= 0.
#pragma once

#include <cstddef>
#include <cstdint>

#include "formats/tensor.h"

namespace edgelm {

inline constexpr int kQK = 32;     // elements per block of the 32-element formats
inline constexpr int kQK_K = 256;  // elements per K-quant super-block

// ---- 32-element formats: value = d * q (+ m) ----

struct BlockQ4_0 {  // q in [-8, 7]
  uint16_t d;       // f16 scale
  uint8_t qs[16];   // element j in low nibble of qs[j], element j+16 in high nibble; q = nib - 8
};
struct BlockQ4_1 {  // value = d * nib + m
  uint16_t d;       // f16 scale
  uint16_t m;       // f16 minimum
  uint8_t qs[16];   // same nibble order as Q4_0
};
struct BlockQ5_0 {  // q in [-16, 15]
  uint16_t d;
  uint8_t qh[4];   // bit j of this little-endian u32 is bit 4 of element j
  uint8_t qs[16];  // low 4 bits, Q4_0 order; q = (nib | high << 4) - 16
};
struct BlockQ5_1 {  // value = d * q5 + m
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};

// ---- 256-element K-quant super-blocks ----

struct BlockQ2_K {     // 16 sub-blocks of 16: value = d*sc*q - dmin*m, q in [0, 3]
  uint8_t scales[16];  // low nibble: sc, high nibble: m
  uint8_t qs[64];      // 2-bit q; element 128*h + 32*s + l at qs[32*h + l] bits 2s..2s+1
  uint16_t d;          // f16 super-scale for sc
  uint16_t dmin;       // f16 super-scale for m
};
struct BlockQ3_K {     // 16 sub-blocks of 16: value = d*(sc-32)*(q-4), q in [0, 7]
  uint8_t hmask[32];   // bit 2 of q: element j at hmask[j % 32] bit j / 32
  uint8_t qs[64];      // bits 0-1 of q, Q2_K order
  uint8_t scales[12];  // sixteen 6-bit sc (see pack in quant_formats.cc)
  uint16_t d;          // f16
};
struct BlockQ4_K {  // 8 sub-blocks of 32: value = d*sc*q - dmin*m, q in [0, 15]
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];  // eight 6-bit (sc, m) pairs, ggml's get_scale_min_k4 packing
  uint8_t qs[128];     // element 64*h + l at qs[32*h + l] low nibble, 64*h + 32 + l high nibble
};
struct BlockQ5_K {  // as Q4_K with q in [0, 31]
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];   // bit 4 of element 32*s + l at qh[l] bit s
  uint8_t qs[128];  // low 4 bits, Q4_K order
};
struct BlockQ6_K {  // 16 sub-blocks of 16: value = d*sc*(q-32), q in [0, 63]
  uint8_t ql[128];  // low 4 bits
  uint8_t qh[64];   // high 2 bits
  int8_t scales[16];
  uint16_t d;  // f16
};
struct BlockQ8_K {  // activation format for K-quant dot products
  float d;          // f32 scale (not f16)
  int8_t qs[256];
  int16_t bsums[16];  // sum of qs over each group of 16
};

// ---- edgelm FP8 block format (not a ggml type, has no DType id) ----
// Blocks of 32 values, value = d * e4m3(q). d is an f16 rounded UP from
// amax / 448 so the largest |x| never saturates (only |x| > 448 * 65504 does).
// E4M3 is the OCP "FN" variant: 1 sign, 4 exponent (bias 7), 3 mantissa bits,
// subnormals, no infinities, 0x7F/0xFF = NaN, max finite 448. Encoding rounds to
// nearest even and saturates out-of-range values (and infinities) to +-448.
// Same 8.5 bits per weight as Q8_0.
struct BlockFp8E4M3 {
  uint16_t d;      // f16
  uint8_t qs[32];  // E4M3 codes
};

// Sizes are ggml's; a test also checks them against dtype_traits().block_bytes.
static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);
static_assert(sizeof(BlockFp8E4M3) == 34);

// ---- sub-block scale unpacking (for dequantization and dot-product kernels) ----

// Q4_K/Q5_K: 6-bit scale and min of sub-block j (0..7).
inline void unpack_scale_min_k4(const uint8_t* scales, int j, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// Q3_K: signed scale (stored 6-bit value - 32) of sub-block j (0..15).
inline int unpack_scale_q3_K(const uint8_t* scales, int j) {
  const int low = j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4;
  const int high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// ---- E4M3 scalar conversions ----
uint8_t fp32_to_e4m3(float x);  // RNE, saturating, NaN -> 0x7F (sign kept)
float e4m3_to_fp32(uint8_t code);

// ---- per-type entry points; `blocks` holds n / block_size blocks ----
void quantize_row_q4_0_reference(const float* x, void* blocks, int64_t n);
void quantize_row_q4_1_reference(const float* x, void* blocks, int64_t n);
void quantize_row_q5_0_reference(const float* x, void* blocks, int64_t n);
void quantize_row_q5_1_reference(const float* x, void* blocks, int64_t n);
void quantize_row_q8_0_reference(const float* x, void* blocks, int64_t n);
void quantize_row_q2_K_reference(const float* x, void* blocks, int64_t n);
void quantize_row_q3_K_reference(const float* x, void* blocks, int64_t n);
void quantize_row_q4_K_reference(const float* x, void* blocks, int64_t n);
void quantize_row_q5_K_reference(const float* x, void* blocks, int64_t n);
void quantize_row_q6_K_reference(const float* x, void* blocks, int64_t n);
void quantize_row_q8_K_reference(const float* x, void* blocks, int64_t n);
void quantize_row_fp8_e4m3(const float* x, void* blocks, int64_t n);

void quantize_row_q4_0_weighted(const float* x, void* blocks, int64_t n, const float* importance);
void quantize_row_q4_1_weighted(const float* x, void* blocks, int64_t n, const float* importance);
void quantize_row_q5_0_weighted(const float* x, void* blocks, int64_t n, const float* importance);
void quantize_row_q5_1_weighted(const float* x, void* blocks, int64_t n, const float* importance);
void quantize_row_q2_K_weighted(const float* x, void* blocks, int64_t n, const float* importance);
void quantize_row_q3_K_weighted(const float* x, void* blocks, int64_t n, const float* importance);
void quantize_row_q4_K_weighted(const float* x, void* blocks, int64_t n, const float* importance);
void quantize_row_q5_K_weighted(const float* x, void* blocks, int64_t n, const float* importance);
void quantize_row_q6_K_weighted(const float* x, void* blocks, int64_t n, const float* importance);

// Interleaved layouts (in memory only, made at load time for the AVX-512
// decode kernels): a matrix's rows in groups of 16, each group stored block by
// block (super-block by super-block for Q4_K) so that one 512-bit load holds 4
// quant bytes of all 16 rows, one vpdpbusd lane per row. The same bytes per
// block and row as the row-major type; rows must be a multiple of 16.
//
// Q4_0_X16, per block: the 16 rows' f16 scales (32 bytes), then 4 chunks of 64
// bytes where chunk c holds bytes 4c..4c+3 of each row's 16 quant bytes (row r
// at 4r).
// Q5_0_X16: the same with the rows' fifth bits between the scales and the
// quants as 8 masks of 64 bits (chunk c's low nibbles, then its high nibbles):
// bit 4r + i of the mask for chunk c, low (high) half, is bit 4c + i
// (16 + 4c + i) of row r's qh, i.e. the fifth bit of the value in byte i of
// row r's lane. 32 + 64 + 256 = 16 x 22 bytes per block.
// Q4_K_X16, per super-block: the 16 rows' d (32 bytes) and dmin (32 bytes);
// for each sub-block j, 16 bytes sc_j | (m_j >> 4) << 6 (row r at byte r);
// 16 words holding the low nibbles of row r's mins (m_j & 15 at bits 4j..4j+3
// of word r); then 32 chunks of 64 bytes where chunk 8k + t holds qs bytes
// 32k + 4t..32k + 4t + 3 of each row (low nibbles: sub-block 2k, high: 2k + 1).
// 64 + 128 + 64 + 2048 = 16 x 144 bytes per super-block.
// Q8_0_X16, per block: the 16 rows' f16 scales (32 bytes), then 8 chunks of 64
// bytes where chunk c holds quants 4c..4c+3 of each row (row r at 4r) stored
// as q + 128 (unsigned bytes: vpdpbusd's unsigned operand as they lie).
inline constexpr int kX16Rows = 16;
inline constexpr size_t kX16BlockBytes = kX16Rows * sizeof(BlockQ4_0);     // 288
inline constexpr size_t kX16Q5BlockBytes = kX16Rows * sizeof(BlockQ5_0);   // 352
inline constexpr size_t kX16Q4KBlockBytes = kX16Rows * sizeof(BlockQ4_K);  // 2304
inline constexpr size_t kX16Q8BlockBytes = kX16Rows * sizeof(BlockQ8_0);   // 544
// Q4_K_X16 field offsets within a super-block of a group.
inline constexpr size_t kX16Q4KScales = 64, kX16Q4KMinNibbles = 192, kX16Q4KQuants = 256;
// The interleaved layout of a row-major type (DType::F32 where it has none),
// and the row-major type of an interleaved layout (itself for any other type).
DType x16_layout(DType row_major);
DType x16_row_major(DType type);
inline bool is_x16_layout(DType type) {
  return x16_row_major(type) != type;
}
// rows x cols of row-major `type` into its interleaved layout; rows must be a
// multiple of 16 and cols of the block size.
void interleave_x16(DType type, const void* rows_in, int64_t rows, int64_t cols, void* x16);
// One 16-row group of an interleaved layout back into 16 row-major rows.
void deinterleave_x16(DType x16_type, const void* x16_group, int64_t cols, void* rows_out);
void dequantize_row_q4_0(const void* blocks, float* y, int64_t n);
void dequantize_row_q4_1(const void* blocks, float* y, int64_t n);
void dequantize_row_q5_0(const void* blocks, float* y, int64_t n);
void dequantize_row_q5_1(const void* blocks, float* y, int64_t n);
void dequantize_row_q8_0(const void* blocks, float* y, int64_t n);
void dequantize_row_q2_K(const void* blocks, float* y, int64_t n);
void dequantize_row_q3_K(const void* blocks, float* y, int64_t n);
void dequantize_row_q4_K(const void* blocks, float* y, int64_t n);
void dequantize_row_q5_K(const void* blocks, float* y, int64_t n);
void dequantize_row_q6_K(const void* blocks, float* y, int64_t n);
void dequantize_row_q8_K(const void* blocks, float* y, int64_t n);
void dequantize_row_fp8_e4m3(const void* blocks, float* y, int64_t n);

// ---- dispatch by DType ----
// True for the types quantize_row/dequantize_row_quant handle: the formats above
// (not FP8, which has no DType) plus F32, F16 and BF16 (plain conversions).
bool quantization_supported(DType type);
// With importance == nullptr this is the reference quantizer (what llama-quantize
// does without an imatrix). With importance, `n` must be one row: the K-quants and
// Q4_0/Q4_1/Q5_0/Q5_1 use the weighted search; Q8_0, Q8_K and the float types
// ignore importance (as ggml does). Throws edgelm::Error for other types.
void quantize_row(DType type, const float* x, void* blocks, int64_t n,
                  const float* importance = nullptr);
void dequantize_row_quant(DType type, const void* blocks, float* y, int64_t n);

// ---- one block's levels with its scales fixed (GPTQ's rounding, compression/gptq.h) ----
// Element j of a block takes the values (level - zero) * step + offset for integer levels
// in [min_level, max_level]; the expression is the dequantizer's, so the value is
// bit-exact with dequantize_row_quant of the packed block.
struct LevelGrid {
  float step = 0;
  float offset = 0;
  int zero = 0;
  int min_level = 0;
  int max_level = 0;
  float value(int level) const { return static_cast<float>(level - zero) * step + offset; }
  int nearest(float x) const;  // the level whose value is (about) nearest x, clamped
};
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K (Q8_0 levels are the signed quants,
// clamped to [-127, 127]; the others are the stored unsigned codes).
bool block_levels_supported(DType type);
// The grid of element j of `block` (whose scale fields are set).
LevelGrid block_level_grid(DType type, const void* block, int j);
// Writes levels[0 .. block size) into the block's quant fields, leaving its scales.
void pack_block_levels(DType type, const int* levels, void* block);

}  // namespace edgelm
