// Matrix products between stored weights (any supported DType, used in place
// from the memory map) and F32 activations. This is where nearly all of the
// time of a forward pass goes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "formats/tensor.h"

namespace edgelm {

class ThreadPool;

// A 2-D weight matrix W[rows][cols] (rows = output features), rows contiguous.
struct WeightMatrix {
  DType type = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  size_t row_bytes = 0;  // bytes per row (dtype_row_bytes(type, cols))
};

// y[n][rows] = x[n][cols] * W^T. n == 1 is the decode matvec; n > 1 (prefill)
// uses blocked kernels that reuse each weight row across the batch. Throws
// edgelm::Error for weight types without a kernel.
void matmul(const WeightMatrix& w, const float* x, int64_t n, float* y, ThreadPool* pool);

// Several products of the same input, e.g. the Q, K and V projections:
// ys[i][n][ws[i].rows] = x[n][cols] * ws[i]^T, with the same results as one
// matmul() per matrix. In decode (n == 1) x is quantized once per activation
// form and all matrices run in one parallel pass, one thread hand-off instead
// of one per matrix (which matters for small models on several threads).
void matmul_many(const WeightMatrix* ws, float* const* ys, int count, const float* x, int64_t n,
                 ThreadPool* pool);

// A decode product over a slice of the columns, for an input that arrives in
// slices from different threads (the attention output projection: one KV
// head's query heads per slice, projected as soon as their attention is done):
// y[r - row_begin] = sum over c in [col_begin, col_end) of W[r][c] * x[c - col_begin]
// for rows [row_begin, row_end), the same sums as matmul() gives for a matrix
// of just those columns. Integer-kernel (quantized) types only, with the slice
// on whole blocks of the weights and of their activation quantization
// (column_slice_supported); rows in whole units of matvec_row_unit(w).
bool column_slice_supported(const WeightMatrix& w, int64_t col_begin, int64_t col_end);
int64_t matvec_row_unit(const WeightMatrix& w);
void matvec_column_slice(const WeightMatrix& w, int64_t col_begin, int64_t col_end, const float* x,
                         float* y, int64_t row_begin, int64_t row_end);

// Decode products whose rows the caller shares out itself (threads that claim
// work items from shared counters for a whole decode step): the input is
// prepared once, quantized for the integer kernels where matmul() would do it
// per call, and each item computes a range of rows, with the same results as
// matmul() gives for those rows. Preparing allocates only the first time.
class MatvecInput {
 public:
  MatvecInput();
  ~MatvecInput();
  MatvecInput(const MatvecInput&) = delete;
  MatvecInput& operator=(const MatvecInput&) = delete;
  // x (ws[0].cols values, as every matrix has) for products with ws[0..count):
  // quantized once per activation form that their types use. x must stay
  // unchanged while products use it.
  void prepare(const WeightMatrix* ws, int count, const float* x);

 private:
  friend void matvec_rows(const WeightMatrix& w, const MatvecInput& input, float* y,
                          int64_t row_begin, int64_t row_end);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
// y[r - row_begin] = row r of W times the prepared input, for rows
// [row_begin, row_end) in whole units of matvec_row_unit(w) (row_end may be
// w.rows). w must be one of the matrices the input was prepared for.
void matvec_rows(const WeightMatrix& w, const MatvecInput& input, float* y, int64_t row_begin,
                 int64_t row_end);

// Plain scalar reference that every SIMD path is tested against.
void matmul_reference(const WeightMatrix& w, const float* x, int64_t n, float* y);

// dst[i] = src[i] rounded to F16 (nearest even; same bits as util/half.h's
// fp32_to_fp16 for every non-NaN input), with F16C / NEON where available.
void convert_to_f16(const float* src, uint16_t* dst, int64_t n);

// Whether the active kernels decode Q4_0_X16 / Q5_0_X16 (quant_formats.h: 16
// rows interleaved per block) faster than row-major Q4_0 / Q5_0, so that
// loading a model should re-lay those matrices: AVX-512 VNNI on Intel, where
// the row-major kernels are bound by the one shuffle port (docs/BENCHMARKS.md).
bool interleaved_weights_preferred();

// How far ahead the interleaved decode kernels (and the shuffle-light Q8_0 and
// Q6_K ones) prefetch their weights:
// kFar also fetches into L2 32 KB ahead, which weights read from DRAM need
// (TinyLlama / Qwen2.5 decode 10-20% faster on the Xeon); kNear only into L1
// 8 KB ahead, which suits weights the last-level cache holds (SmolLM2 there:
// 4-5% faster than kFar). kHardware: no software prefetching in the
// interleaved 4- and 5-bit kernels (AMD Zen 4, whose hardware prefetchers
// follow their one stream: 1.05-1.2x faster from DRAM than with kFar there);
// Q8_0_X16, which streams twice the bytes per multiply, prefetches into L1 as
// with kNear (Zen 4: 1.15x faster than with none, at 1 and 2 threads); the
// row-major Q8_0 and Q6_K ones still prefetch as with kFar.
// Process-wide, kFar at start; Model::load sets it (stream_prefetch_for).
enum class StreamPrefetch : uint8_t { kNear, kFar, kHardware };
StreamPrefetch stream_prefetch();
void set_stream_prefetch(StreamPrefetch mode);
const char* stream_prefetch_name(StreamPrefetch mode);  // "near", "far", "hardware"
bool stream_prefetch_from_name(const char* name, StreamPrefetch* mode);
// The mode for weights of `bytes_per_token`: kHardware on AMD; elsewhere kNear
// where they fit in the last-level cache (its size as the OS reports it), else
// kFar.
StreamPrefetch stream_prefetch_for(size_t bytes_per_token);
// Whether a burst of software prefetches (an attention KV head's rows, tens of
// KB, at once) pays. On AMD Zen 5 the misses overlap (SmolLM2 decode:
// attention 1.7x faster). On an Intel Xeon each prefetch holds a fill buffer
// until its line arrives, so a burst stalls the core and its own loads: there
// attention was 1.25x and the Q/K/V products 1.1x faster without them.
bool burst_prefetch_helps();

// Converts one row of any supported type to F32 (embedding lookup).
void dequantize_row(DType type, const void* src, float* dst, int64_t n);
// Row `row` of w (w.cols values) as F32, in any layout: an interleaved one's
// rows are spread over their group's blocks (a tied embedding table that is
// also the output head is re-laid for the head's sake).
void dequantize_matrix_row(const WeightMatrix& w, int64_t row, float* dst);

// Which instruction set the kernels use. Chosen once at start-up from CPU
// features; tests and benchmarks may force a lower one.
// ARM64: kNeon (ARMv8.0), kNeonDotprod (+ sdot), kNeonI8mm (+ smmla, which also
// needs dotprod; only its prefill GEMM differs, the rest is kNeonDotprod's).
enum class Isa { kScalar, kAvx2, kAvx512, kNeon, kNeonDotprod, kNeonI8mm };
const char* isa_name(Isa isa);
bool isa_from_name(const std::string& name, Isa* isa);  // false for an unknown name
Isa best_supported_isa();
bool isa_supported(Isa isa);        // compiled in and usable on this CPU
std::vector<Isa> supported_isas();  // the usable ones, scalar first, best last
Isa active_isa();
void set_active_isa(Isa isa);  // throws edgelm::Error if this CPU lacks it

}  // namespace edgelm
