#include "compression/quant_plan.h"

#include <algorithm>
#include <cctype>

#include "util/error.h"

namespace edgelm::compression {
namespace {

struct SchemeEntry {
  const char* name;
  DType base;
  Mix mix;
  uint32_t file_type;  // llama_ftype
};

// FP8 has no llama_ftype; 1000 matches its (edgelm-only) type id.
constexpr SchemeEntry kSchemes[] = {
    {"f32", DType::F32, Mix::kPlain, 0},       {"f16", DType::F16, Mix::kPlain, 1},
    {"bf16", DType::BF16, Mix::kPlain, 32},    {"q8_0", DType::Q8_0, Mix::kPlain, 7},
    {"q4_0", DType::Q4_0, Mix::kPlain, 2},     {"q4_1", DType::Q4_1, Mix::kPlain, 3},
    {"q5_0", DType::Q5_0, Mix::kPlain, 8},     {"q5_1", DType::Q5_1, Mix::kPlain, 9},
    {"q2_k", DType::Q2_K, Mix::kPlain, 10},    {"q3_k", DType::Q3_K, Mix::kPlain, 11},
    {"q4_k", DType::Q4_K, Mix::kPlain, 14},    {"q5_k", DType::Q5_K, Mix::kPlain, 16},
    {"q6_k", DType::Q6_K, Mix::kPlain, 18},    {"fp8_e4m3", DType::FP8_E4M3, Mix::kPlain, 1000},
    {"q2_k_s", DType::Q2_K, Mix::kQ2_K_S, 21}, {"q3_k_s", DType::Q3_K, Mix::kQ3_K_S, 11},
    {"q3_k_m", DType::Q3_K, Mix::kQ3_K_M, 12}, {"q3_k_l", DType::Q3_K, Mix::kQ3_K_L, 13},
    {"q4_k_s", DType::Q4_K, Mix::kQ4_K_S, 14}, {"q4_k_m", DType::Q4_K, Mix::kQ4_K_M, 15},
    {"q5_k_s", DType::Q5_K, Mix::kQ5_K_S, 16}, {"q5_k_m", DType::Q5_K, Mix::kQ5_K_M, 17},
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string joined_names() {
  std::string out;
  for (const SchemeEntry& e : kSchemes) out += (out.empty() ? "" : ", ") + std::string(e.name);
  return out;
}

int64_t block_of(DType type) {
  return dtype_traits(type).block_size;
}

bool fits(DType type, int64_t cols) {
  return cols % block_of(type) == 0;
}

// llama.cpp: the first and last eighth of the layers and every third one between get more bits.
bool use_more_bits(int layer, int n_layers) {
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

bool contains(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

// llama_tensor_get_type_impl for the mixes above (non-MoE, non-Falcon models).
DType mix_rule(const QuantScheme& scheme, const std::string& name, int64_t cols,
               const ModelShape& shape, bool has_imatrix) {
  DType type = scheme.base;
  const bool is_output =
      name == "output.weight" || (shape.tied_embeddings && name == "token_embd.weight");
  if (is_output) {
    if (cols % block_of(type) != 0) return DType::Q8_0;
    return type == DType::Q8_0 ? type : DType::Q6_K;
  }
  const int layer = std::max(0, layer_of(name));
  const int n = shape.n_layers;
  if (contains(name, "attn_v.weight")) {
    switch (scheme.mix) {
      case Mix::kQ2_K_S:
        if (shape.n_gqa >= 4) type = DType::Q4_K;
        break;
      case Mix::kQ3_K_M:
        type = layer < 2 ? DType::Q5_K : DType::Q4_K;
        break;
      case Mix::kQ3_K_L:
        type = DType::Q5_K;
        break;
      case Mix::kQ4_K_M:
      case Mix::kQ5_K_M:
        if (use_more_bits(layer, n)) type = DType::Q6_K;
        break;
      case Mix::kQ4_K_S:
        if (layer < 4) type = DType::Q5_K;
        break;
      default:
        break;
    }
  } else if (contains(name, "ffn_down")) {
    switch (scheme.mix) {
      case Mix::kQ2_K_S:
        if (layer < n / 8) type = DType::Q4_K;
        break;
      case Mix::kQ3_K_M:
        type = layer < n / 16 ? DType::Q5_K : DType::Q4_K;
        break;
      case Mix::kQ3_K_L:
        type = DType::Q5_K;
        break;
      case Mix::kQ4_K_M:
      case Mix::kQ5_K_M:
        if (use_more_bits(layer, n)) type = DType::Q6_K;
        break;
      case Mix::kQ4_K_S:
        if (layer < n / 8) type = DType::Q5_K;
        break;
      case Mix::kPlain:
        // Guard against the first ffn_down layers going wrong with an imatrix (llama.cpp).
        if (has_imatrix && layer < n / 8 && (type == DType::Q4_0 || type == DType::Q5_0)) {
          type = type == DType::Q4_0 ? DType::Q4_1 : DType::Q5_1;
        }
        break;
      default:
        break;
    }
  } else if (contains(name, "attn_output.weight")) {
    if (scheme.mix == Mix::kQ3_K_M) type = DType::Q4_K;
    if (scheme.mix == Mix::kQ3_K_L) type = DType::Q5_K;
  }
  return type;
}

}  // namespace

QuantScheme parse_scheme(const std::string& name) {
  const std::string wanted = lower(name);
  for (const SchemeEntry& e : kSchemes) {
    if (wanted == e.name) return QuantScheme{e.name, e.base, e.mix, e.file_type};
  }
  fail("unknown quantization type '", name, "' (known: ", joined_names(), ")");
}

std::vector<std::string> scheme_names() {
  std::vector<std::string> names;
  for (const SchemeEntry& e : kSchemes) names.emplace_back(e.name);
  return names;
}

bool is_block_quantized(DType type) {
  return type != DType::F32 && type != DType::F16 && type != DType::BF16;
}

bool is_writable_type(DType type) {
  switch (type) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::FP8_E4M3:
      return true;
    default:
      return false;
  }
}

std::vector<TypeOverride> parse_overrides(const std::vector<std::string>& rules) {
  std::vector<TypeOverride> out;
  for (const std::string& rule : rules) {
    const size_t eq = rule.rfind('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == rule.size()) {
      fail("--override '", rule, "': expected PATTERN=TYPE, e.g. 'attn_v=q8_0'");
    }
    TypeOverride o;
    o.pattern = rule.substr(0, eq);
    const std::string type_name = rule.substr(eq + 1);
    try {
      o.regex = std::regex(o.pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      fail("--override '", rule, "': invalid regular expression '", o.pattern, "': ", e.what());
    }
    DType type;
    try {
      type = dtype_from_name(type_name);
    } catch (const Error&) {
      fail("--override '", rule, "': unknown type '", type_name,
           "' (use a plain type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, "
           "q5_k, q6_k, fp8_e4m3)");
    }
    if (!is_writable_type(type)) {
      fail("--override '", rule, "': type '", type_name, "' cannot be written by edgelm quantize");
    }
    o.type = type;
    out.push_back(std::move(o));
  }
  return out;
}

int layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  int layer = 0;
  size_t i = 4;
  if (i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  for (; i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])); ++i) {
    layer = layer * 10 + (name[i] - '0');
    if (layer > 1000000) return -1;
  }
  return i < name.size() && name[i] == '.' ? layer : -1;
}

DType fallback_type(DType wanted, int64_t cols) {
  DType type;
  switch (wanted) {
    case DType::Q2_K:
    case DType::Q3_K:
      type = DType::Q4_0;
      break;
    case DType::Q4_K:
      type = DType::Q5_0;
      break;
    case DType::Q5_K:
      type = DType::Q5_1;
      break;
    case DType::Q6_K:
      type = DType::Q8_0;
      break;
    default:
      type = DType::F16;
      break;
  }
  return fits(type, cols) ? type : DType::F16;
}

TypeChoice choose_tensor_type(const QuantScheme& scheme, const std::string& name, int64_t cols,
                              const ModelShape& shape, bool has_imatrix, bool pure,
                              std::vector<TypeOverride>& overrides) {
  TypeChoice choice;
  for (TypeOverride& o : overrides) {
    if (!std::regex_search(name, o.regex)) continue;
    ++o.matches;
    if (!fits(o.type, cols)) {
      fail("--override '", o.pattern, "=", dtype_name(o.type), "': tensor '", name,
           "' has rows of ", cols, " values, not a multiple of the ", dtype_name(o.type),
           " block size (", block_of(o.type), ")");
    }
    choice.type = choice.wanted = o.type;
    choice.override_rule = &o;
    return choice;
  }
  DType type = scheme.base;
  // The mixing rules are llama.cpp's, for ggml's block types only (FP8 is edgelm's own).
  const bool ggml_quant = is_block_quantized(type) && type != DType::FP8_E4M3;
  if (ggml_quant && !pure) type = mix_rule(scheme, name, cols, shape, has_imatrix);
  choice.wanted = type;
  choice.type = type;
  if (!fits(type, cols)) {
    choice.type = fallback_type(type, cols);
    choice.fallback = str_cat("rows of ", cols, " values are not a multiple of the ",
                              dtype_name(type), " block size (", block_of(type), ")");
  }
  return choice;
}

}  // namespace edgelm::compression
