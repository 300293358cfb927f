// Which type each tensor of a model gets when quantizing: the user's TYPE (a plain type or a
// llama.cpp-style mix such as q4_k_m), --override PATTERN=TYPE rules, and the fallbacks for rows
// that are not a whole number of blocks. The rules follow llama.cpp's llama_tensor_get_type
// (src/llama-quant.cpp) for the subset documented in docs/QUANTIZATION.md.
#pragma once

#include <cstdint>
#include <regex>
#include <string>
#include <vector>

#include "formats/tensor.h"

namespace edgelm::compression {

// llama.cpp's mixes (its llama_ftype values of the same name). kPlain: every matrix gets the
// base type, except the output head (and a tied embedding), which llama.cpp gives Q6_K/Q8_0
// for every quantized file type.
enum class Mix { kPlain, kQ2_K_S, kQ3_K_S, kQ3_K_M, kQ3_K_L, kQ4_K_S, kQ4_K_M, kQ5_K_S, kQ5_K_M };

struct QuantScheme {
  std::string name;         // lower case, as accepted on the command line: "q4_k_m"
  DType base = DType::F32;  // type of most matrices
  Mix mix = Mix::kPlain;
  uint32_t file_type = 0;  // general.file_type (llama.cpp's llama_ftype)
};

// Accepts the names listed by scheme_names() (case-insensitive); throws edgelm::Error listing
// them for anything else.
QuantScheme parse_scheme(const std::string& name);
std::vector<std::string> scheme_names();

// True for block-quantized types (not f32/f16/bf16).
bool is_block_quantized(DType type);
// The row types quantize_model can produce: f32, f16, bf16, the ggml block types with
// quantizers and fp8_e4m3.
bool is_writable_type(DType type);

// --override PATTERN=TYPE: PATTERN is an ECMAScript regex searched in the tensor name
// (llama-quantize's --tensor-type), TYPE a plain type. The first matching rule wins.
struct TypeOverride {
  std::string pattern;
  std::regex regex;
  DType type = DType::F32;
  int matches = 0;  // tensors it applied to (an override that matches nothing is an error)
};
// Throws edgelm::Error for a malformed rule, a bad regex or a type that cannot be written.
std::vector<TypeOverride> parse_overrides(const std::vector<std::string>& rules);

// What the model looks like, for the layer-dependent rules.
struct ModelShape {
  int n_layers = 1;
  int n_gqa = 1;  // heads per KV head
  bool tied_embeddings = false;
};

struct TypeChoice {
  DType type = DType::F32;                      // what the tensor is written as
  DType wanted = DType::F32;                    // what the rules asked for before the fallback
  std::string fallback;                         // non-empty: why `type` differs from `wanted`
  const TypeOverride* override_rule = nullptr;  // the --override that decided, if any
};

// Type of one 2-D weight (`name` canonical, e.g. "blk.3.attn_v.weight"; cols = row length).
// 1-D tensors are not passed here: they stay F32. Throws edgelm::Error if an override asks for a
// type whose blocks do not divide `cols`.
TypeChoice choose_tensor_type(const QuantScheme& scheme, const std::string& name, int64_t cols,
                              const ModelShape& shape, bool has_imatrix, bool pure,
                              std::vector<TypeOverride>& overrides);

// llama.cpp's fallback for rows that are not a whole number of blocks: Q2_K/Q3_K -> Q4_0,
// Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; if that still does not fit (or for 32-element
// types, where llama.cpp gives up), F16.
DType fallback_type(DType wanted, int64_t cols);

// Layer index of "blk.N.*", or -1.
int layer_of(const std::string& name);

}  // namespace edgelm::compression
