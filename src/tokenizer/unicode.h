// UTF-8 and Unicode helpers shared by the tokenizers (internal to tokenizer/).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace edgelm::unicode {

constexpr uint32_t kReplacementChar = 0xFFFD;

// Length of the UTF-8 sequence that `lead` starts, as llama.cpp counts it: 1 for
// ASCII and for bytes that cannot start a sequence.
size_t utf8_sequence_length(uint8_t lead);

// Decodes the code point at text[pos] strictly (no overlongs, surrogates or
// values past U+10FFFF). Returns the bytes consumed; for an invalid or
// truncated sequence returns 0 and leaves *cp untouched.
size_t utf8_decode(std::string_view text, size_t pos, uint32_t* cp);

// Like utf8_decode but never fails: an invalid byte decodes as U+FFFD, length 1.
size_t utf8_decode_lenient(std::string_view text, size_t pos, uint32_t* cp);

void utf8_append(std::string& out, uint32_t cp);

// True when text[pos..] is a proper prefix of a valid sequence (more bytes could
// complete it).
bool utf8_incomplete_prefix(std::string_view text, size_t pos);

bool is_valid_utf8(std::string_view text);
// Replaces every invalid byte with U+FFFD (what llama.cpp does before BPE).
std::string sanitize_utf8(std::string_view text);

// GPT-2's byte-level alphabet: every byte maps to one printable code point.
uint32_t byte_to_codepoint(uint8_t byte);
// The byte for a code point of that alphabet, or -1.
int codepoint_to_byte(uint32_t cp);

// Unicode normalization form "NFC", "NFD", "NFKC" or "NFKD" via utf8proc; an
// empty form returns the text unchanged. Invalid UTF-8 is returned unchanged.
std::string normalize(std::string_view text, std::string_view form);

uint32_t to_lower(uint32_t cp);
bool is_whitespace(uint32_t cp);       // Unicode White_Space
bool is_control(uint32_t cp);          // categories Cc, Cf, Co, Cs, Cn except \t \n \r
bool is_punctuation(uint32_t cp);      // categories P*, and ASCII symbols ($+<=>^`|~)
bool is_mark_nonspacing(uint32_t cp);  // category Mn (accents after NFD)
bool is_cjk_ideograph(uint32_t cp);    // BERT's "Chinese character" ranges
// Writes the canonical decomposition (NFD) of cp to out[0..n) and returns n
// (at most kMaxDecomposition; cp itself when it has none).
constexpr int kMaxDecomposition = 8;
int decompose_nfd(uint32_t cp, uint32_t* out);

}  // namespace edgelm::unicode
