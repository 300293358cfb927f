#include "tokenizer/unicode.h"

#include <utf8proc.h>

#include <array>
#include <cstdlib>
#include <memory>

namespace edgelm::unicode {

size_t utf8_sequence_length(uint8_t lead) {
  static constexpr uint8_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

size_t utf8_decode(std::string_view text, size_t pos, uint32_t* cp) {
  if (pos >= text.size()) return 0;
  const auto* s = reinterpret_cast<const uint8_t*>(text.data()) + pos;
  const size_t left = text.size() - pos;
  const uint8_t c0 = s[0];
  if (c0 < 0x80) {
    *cp = c0;
    return 1;
  }
  size_t n;
  uint32_t value;
  uint32_t min_value;
  if ((c0 & 0xE0) == 0xC0) {
    n = 2, value = c0 & 0x1F, min_value = 0x80;
  } else if ((c0 & 0xF0) == 0xE0) {
    n = 3, value = c0 & 0x0F, min_value = 0x800;
  } else if ((c0 & 0xF8) == 0xF0) {
    n = 4, value = c0 & 0x07, min_value = 0x10000;
  } else {
    return 0;
  }
  if (left < n) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    value = (value << 6) | (s[i] & 0x3F);
  }
  if (value < min_value || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return 0;
  *cp = value;
  return n;
}

size_t utf8_decode_lenient(std::string_view text, size_t pos, uint32_t* cp) {
  const size_t n = utf8_decode(text, pos, cp);
  if (n != 0) return n;
  *cp = kReplacementChar;
  return 1;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp <= 0x10FFFF) {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    utf8_append(out, kReplacementChar);
  }
}

bool utf8_incomplete_prefix(std::string_view text, size_t pos) {
  const size_t left = text.size() - pos;
  const auto* s = reinterpret_cast<const uint8_t*>(text.data()) + pos;
  const uint8_t c0 = s[0];
  size_t n;
  if (c0 >= 0xC2 && c0 <= 0xDF) {
    n = 2;
  } else if ((c0 & 0xF0) == 0xE0) {
    n = 3;
  } else if (c0 >= 0xF0 && c0 <= 0xF4) {
    n = 4;
  } else {
    return false;
  }
  if (left >= n) return false;
  for (size_t i = 1; i < left; ++i) {
    if ((s[i] & 0xC0) != 0x80) return false;
  }
  // Second-byte ranges that rule out overlongs, surrogates and > U+10FFFF.
  if (left >= 2) {
    const uint8_t c1 = s[1];
    if (c0 == 0xE0 && c1 < 0xA0) return false;
    if (c0 == 0xED && c1 > 0x9F) return false;
    if (c0 == 0xF0 && c1 < 0x90) return false;
    if (c0 == 0xF4 && c1 > 0x8F) return false;
  }
  return true;
}

bool is_valid_utf8(std::string_view text) {
  uint32_t cp;
  for (size_t pos = 0; pos < text.size();) {
    const size_t n = utf8_decode(text, pos, &cp);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

std::string sanitize_utf8(std::string_view text) {
  if (is_valid_utf8(text)) return std::string(text);
  std::string out;
  out.reserve(text.size() + 8);
  uint32_t cp;
  for (size_t pos = 0; pos < text.size();) {
    const size_t n = utf8_decode(text, pos, &cp);
    if (n == 0) {
      utf8_append(out, kReplacementChar);
      pos += 1;
    } else {
      out.append(text.substr(pos, n));
      pos += n;
    }
  }
  return out;
}

namespace {

struct ByteLevelTables {
  std::array<uint32_t, 256> byte_to_cp{};
  std::array<int16_t, 512> cp_to_byte{};  // every mapped code point is < 512
  ByteLevelTables() {
    cp_to_byte.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      byte_to_cp[b] = printable ? static_cast<uint32_t>(b) : next++;
      cp_to_byte[byte_to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables tables;
  return tables;
}

}  // namespace

uint32_t byte_to_codepoint(uint8_t byte) {
  return byte_level_tables().byte_to_cp[byte];
}

int codepoint_to_byte(uint32_t cp) {
  return cp < 512 ? byte_level_tables().cp_to_byte[cp] : -1;
}

std::string normalize(std::string_view text, std::string_view form) {
  if (form.empty() || text.empty()) return std::string(text);
  int options = UTF8PROC_STABLE;
  if (form == "NFC") {
    options |= UTF8PROC_COMPOSE;
  } else if (form == "NFD") {
    options |= UTF8PROC_DECOMPOSE;
  } else if (form == "NFKC") {
    options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
  } else if (form == "NFKD") {
    options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
  } else {
    return std::string(text);
  }
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          static_cast<utf8proc_ssize_t>(text.size()), &result,
                                          static_cast<utf8proc_option_t>(options));
  if (n < 0) return std::string(text);
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owner(result, &std::free);
  return std::string(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
}

uint32_t to_lower(uint32_t cp) {
  return static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp)));
}

bool is_whitespace(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

namespace {
utf8proc_category_t category(uint32_t cp) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(cp));
}
}  // namespace

bool is_control(uint32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CN:
      return true;
    default:
      return false;
  }
}

bool is_punctuation(uint32_t cp) {
  if (cp < 0x7F) {
    return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
           (cp >= 0x7B && cp <= 0x7E);
  }
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

bool is_mark_nonspacing(uint32_t cp) {
  return category(cp) == UTF8PROC_CATEGORY_MN;
}

bool is_cjk_ideograph(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

int decompose_nfd(uint32_t cp, uint32_t* out) {
  utf8proc_int32_t buffer[kMaxDecomposition];
  int last_boundclass = 0;
  const utf8proc_ssize_t n =
      utf8proc_decompose_char(static_cast<utf8proc_int32_t>(cp), buffer, kMaxDecomposition,
                              static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE), &last_boundclass);
  if (n <= 0 || n > kMaxDecomposition) {
    out[0] = cp;
    return 1;
  }
  for (utf8proc_ssize_t i = 0; i < n; ++i) out[i] = static_cast<uint32_t>(buffer[i]);
  return static_cast<int>(n);
}

}  // namespace edgelm::unicode
