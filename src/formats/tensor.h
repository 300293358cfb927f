// Tensor element types and a non-owning view of tensor data inside a mapped
// file. Type ids are ggml's, so GGUF type fields map 1:1.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace edgelm {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  // edgelm's own: FP8 E4M3 in blocks of 32 with an F16 scale (kernels/quant_formats.h).
  // Outside ggml's id range, so llama.cpp rejects such files instead of misreading them.
  FP8_E4M3 = 1000,
  // In memory only, never in a file: Q4_0 with 16 rows interleaved per block
  // (kernels/quant_formats.h), made at load time for the AVX-512 decode kernel.
  Q4_0_X16 = 1001,
  Q5_0_X16 = 1002,  // the same for Q5_0
  Q4_K_X16 = 1003,  // and for Q4_K, by super-block
  Q8_0_X16 = 1004,  // and for Q8_0
};

// The interleaved layouts: kernels' in-memory forms, never valid in a file.
constexpr bool is_in_memory_layout(uint32_t type_id) {
  return type_id >= static_cast<uint32_t>(DType::Q4_0_X16) &&
         type_id <= static_cast<uint32_t>(DType::Q8_0_X16);
}

struct DTypeTraits {
  const char* name;    // ggml's name, e.g. "q4_K"
  int64_t block_size;  // elements per block (1 for plain types)
  size_t block_bytes;  // bytes per block
};

// Returns nullptr for ids that are not a known type (e.g. from a corrupt file).
const DTypeTraits* dtype_traits(uint32_t type_id);
const DTypeTraits& dtype_traits(DType type);
const char* dtype_name(DType type);
// Parses ggml's names, case-insensitively ("q8_0", "F16"); throws edgelm::Error.
DType dtype_from_name(const std::string& name);

// Bytes needed for `count` elements; throws edgelm::Error if count is not a
// whole number of blocks.
size_t dtype_row_bytes(DType type, int64_t count);

// A view of tensor data that lives elsewhere (usually a MappedFile).
// shape is row-major, outermost first: a Linear weight is {out_features, in_features}
// in both HF and GGUF (GGUF's ne[] is reversed on load).
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int64_t rows() const { return shape.empty() ? 1 : numel() / shape.back(); }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
};

std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace edgelm
