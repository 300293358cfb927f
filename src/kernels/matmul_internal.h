// Kernel tables behind matmul(): one entry per (instruction set, weight type).
// Adding a weight format (e.g. a quantized one) means writing its functions and
// setting its slot in register_*_kernels(); nothing else in the dispatch changes.
//
// The *_avx2.cc / *_avx512.cc files are compiled with ISA flags, so they must not
// instantiate inline functions or templates from shared headers (the linker could
// pick that copy for callers on CPUs without the ISA). They only use intrinsics
// and their own file-local code.
#pragma once

#include <cstddef>
#include <cstdint>

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

struct TypeKernels {
  MatvecFn matvec = nullptr;
  RowToF32Fn to_f32 = nullptr;
  MatmulRowsFn matmul_rows = nullptr;  // nullptr: generic panel path
};

// DType ids are ggml's and small; one slot per id.
constexpr uint32_t kDTypeSlots = 64;

struct IsaKernels {
  TypeKernels types[kDTypeSlots];
  PanelMatmulFn panel_matmul = nullptr;
};

void register_scalar_kernels(IsaKernels* table);
#if defined(__x86_64__) || defined(_M_X64)
void register_avx2_kernels(IsaKernels* table);
void register_avx512_kernels(IsaKernels* table);
#endif
#if defined(__aarch64__)
void register_neon_kernels(IsaKernels* table);
#endif

inline constexpr uint32_t slot(DType type) {
  return static_cast<uint32_t>(type);
}

}  // namespace edgelm::kernels_internal
