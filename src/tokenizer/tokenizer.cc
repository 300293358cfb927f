#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <queue>
#include <unordered_map>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode.h"
#include "util/error.h"

namespace edgelm {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581, SentencePiece's space

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = text.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(text.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(text.substr(pos));
  return out;
}

bool is_special_type(TokenType type) {
  return type == TokenType::kControl || type == TokenType::kUnknown;
}

// "<0xAB>" -> 0xAB; -1 for anything else.
int parse_byte_token(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int value = 0;
  for (char c : text.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// Tokens written literally in the text that are cut out before normal encoding.
struct SpecialMatcher {
  TokenMap tokens;
  std::vector<size_t> lengths;  // distinct lengths, longest first
  std::array<bool, 256> first_byte{};

  void add(const std::string& text, int32_t id) {
    if (text.empty() || !tokens.emplace(text, id).second) return;
    first_byte[static_cast<uint8_t>(text[0])] = true;
    if (std::find(lengths.begin(), lengths.end(), text.size()) == lengths.end()) {
      lengths.push_back(text.size());
      std::sort(lengths.rbegin(), lengths.rend());
    }
  }
};

struct Fragment {
  std::string_view text;  // when token < 0
  int32_t token = -1;
};

// Leftmost-longest split of `text` around the matcher's tokens.
void split_specials(std::string_view text, const SpecialMatcher& matcher,
                    std::vector<Fragment>* fragments) {
  fragments->clear();
  size_t text_start = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    int32_t found = -1;
    size_t found_length = 0;
    if (matcher.first_byte[static_cast<uint8_t>(text[pos])]) {
      for (size_t length : matcher.lengths) {
        if (pos + length > text.size()) continue;
        auto it = matcher.tokens.find(text.substr(pos, length));
        if (it != matcher.tokens.end()) {
          found = it->second;
          found_length = length;
          break;
        }
      }
    }
    if (found < 0) {
      ++pos;
      continue;
    }
    if (pos > text_start) fragments->push_back({text.substr(text_start, pos - text_start), -1});
    fragments->push_back({{}, found});
    pos += found_length;
    text_start = pos;
  }
  if (text_start < text.size()) fragments->push_back({text.substr(text_start), -1});
}

struct Symbol {
  int32_t prev;
  int32_t next;
  uint32_t start;
  uint32_t length;
  int32_t id;  // vocab id of the symbol's text, -1 when none
};

struct Bigram {
  double priority;  // higher merges first
  int32_t left;
  int32_t right;
  uint32_t length;
  int32_t id;
};

struct BigramOrder {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.priority < b.priority || (a.priority == b.priority && a.left > b.left);
  }
};
using BigramQueue = std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder>;

void merge_symbols(std::vector<Symbol>& symbols, const Bigram& bigram) {
  Symbol& left = symbols[bigram.left];
  Symbol& right = symbols[bigram.right];
  left.length += right.length;
  left.id = bigram.id;
  right.length = 0;
  left.next = right.next;
  if (right.next >= 0) symbols[right.next].prev = bigram.left;
}

bool bigram_is_stale(const std::vector<Symbol>& symbols, const Bigram& bigram) {
  const Symbol& left = symbols[bigram.left];
  const Symbol& right = symbols[bigram.right];
  return left.length == 0 || right.length == 0 || left.next != bigram.right ||
         left.length + right.length != bigram.length;
}

}  // namespace

const char* tokenizer_kind_name(TokenizerKind kind) {
  switch (kind) {
    case TokenizerKind::kSentencePiece:
      return "sentencepiece";
    case TokenizerKind::kBytePairBpe:
      return "bpe";
    case TokenizerKind::kWordPiece:
      return "wordpiece";
  }
  return "unknown";
}

namespace tokenizer_internal {

// Everything the encoders and decoders precompute from the Vocab.
struct TokenizerData {
  TokenMap token_to_id;
  std::vector<std::string> pieces;  // text of each token, control tokens included
  std::vector<uint8_t> hidden;      // control/unknown: left out unless rendered
  std::vector<uint8_t> end_of_generation;
  std::vector<uint8_t> mergeable;        // SentencePiece: a bigram may merge into it
  std::array<int32_t, 256> byte_tokens;  // SPM: <0xXX>; byte-level BPE: the byte's char
  SpecialMatcher always_split;           // user-defined tokens
  SpecialMatcher parse_special_split;    // + control and unknown tokens
  bool strip_first_space = false;
  bool spm_use_merges = false;       // SentencePiece from tokenizer.json: merges instead of scores
  bool spm_split_at_spaces = false;  // see encode_sentencepiece
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // pair -> (rank, result)
  std::unique_ptr<RegexSplitter> splitter;
  bool ignore_merges = false;
  size_t max_token_bytes = 0;
  std::string wordpiece_first_prefix;
  std::string wordpiece_continuation_prefix;

  int32_t lookup(std::string_view text) const {
    auto it = token_to_id.find(text);
    return it == token_to_id.end() ? -1 : it->second;
  }
};

}  // namespace tokenizer_internal

namespace {

using tokenizer_internal::TokenizerData;

void push_bytes(const TokenizerData& d, int32_t unk, std::string_view text,
                std::vector<int32_t>& out) {
  for (char c : text) {
    const int32_t id = d.byte_tokens[static_cast<uint8_t>(c)];
    if (id >= 0) {
      out.push_back(id);
    } else if (unk >= 0) {
      out.push_back(unk);
    }
  }
}

// Lowercase and/or accent stripping (NFD, then drop nonspacing marks) per code point.
std::string fold_case_and_accents(std::string_view text, bool lowercase, bool strip_accents) {
  if (!lowercase && !strip_accents) return std::string(text);
  std::string out;
  out.reserve(text.size());
  uint32_t cp;
  uint32_t parts[unicode::kMaxDecomposition];
  for (size_t pos = 0; pos < text.size();) {
    pos += unicode::utf8_decode_lenient(text, pos, &cp);
    const int n = strip_accents ? unicode::decompose_nfd(cp, parts) : (parts[0] = cp, 1);
    for (int i = 0; i < n; ++i) {
      if (strip_accents && unicode::is_mark_nonspacing(parts[i])) continue;
      unicode::utf8_append(out, lowercase ? unicode::to_lower(parts[i]) : parts[i]);
    }
  }
  return out;
}

// SentencePiece BPE (llama.cpp's llm_tokenizer_spm): repeatedly merge the
// adjacent pair whose union is the best-scoring vocab entry (or, for a
// tokenizer.json model, the best-ranked merge); what never formed a token
// falls back to byte tokens.
void encode_sentencepiece_segment(const TokenizerData& d, const Vocab& vocab, std::string_view text,
                                  std::vector<Symbol>& symbols, std::vector<int32_t>& out) {
  symbols.clear();
  for (size_t pos = 0; pos < text.size();) {
    const size_t length =
        std::min(unicode::utf8_sequence_length(static_cast<uint8_t>(text[pos])), text.size() - pos);
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({index - 1, pos + length == text.size() ? -1 : index + 1,
                       static_cast<uint32_t>(pos), static_cast<uint32_t>(length),
                       d.lookup(text.substr(pos, length))});
    pos += length;
  }
  BigramQueue queue;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& a = symbols[left];
    const Symbol& b = symbols[right];
    if (d.spm_use_merges) {
      if (a.id < 0 || b.id < 0) return;
      auto it = d.merges.find(pair_key(a.id, b.id));
      if (it == d.merges.end()) return;
      queue.push({-static_cast<double>(it->second.first), left, right, a.length + b.length,
                  it->second.second});
    } else {
      const int32_t id = d.lookup(text.substr(a.start, a.length + b.length));
      if (id < 0 || !d.mergeable[id]) return;
      const double score = vocab.scores.empty() ? 0.0 : vocab.scores[id];
      queue.push({score, left, right, a.length + b.length, id});
    }
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);
  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    if (bigram_is_stale(symbols, bigram)) continue;
    merge_symbols(symbols, bigram);
    try_add(symbols[bigram.left].prev, bigram.left);
    try_add(bigram.left, symbols[bigram.left].next);
  }
  for (int32_t i = symbols.empty() ? -1 : 0; i != -1; i = symbols[i].next) {
    const Symbol& symbol = symbols[i];
    if (symbol.id >= 0) {
      out.push_back(symbol.id);
    } else {
      push_bytes(d, vocab.unk, text.substr(symbol.start, symbol.length), out);
    }
  }
}

// When no mergeable token has U+2581 right after another character, no merge
// can cross the start of a run of U+2581, so each word is merged on its own:
// the same result with small queues instead of one the size of the text.
void encode_sentencepiece(const TokenizerData& d, const Vocab& vocab, std::string_view text,
                          std::vector<int32_t>& out) {
  std::vector<Symbol> symbols;
  if (!d.spm_split_at_spaces) {
    encode_sentencepiece_segment(d, vocab, text, symbols, out);
    return;
  }
  size_t start = 0;
  for (size_t pos = text.find(kSpaceMark, 1); pos != std::string_view::npos;
       pos = text.find(kSpaceMark, pos + kSpaceMark.size())) {
    const bool inside_run = pos >= kSpaceMark.size() &&
                            text.substr(pos - kSpaceMark.size(), kSpaceMark.size()) == kSpaceMark;
    if (inside_run) continue;
    encode_sentencepiece_segment(d, vocab, text.substr(start, pos - start), symbols, out);
    start = pos;
  }
  encode_sentencepiece_segment(d, vocab, text.substr(start), symbols, out);
}

// Byte-level BPE of one pre-tokenized word: start from one symbol per byte and
// apply the lowest-ranked merge until none applies.
void encode_bpe_word(const TokenizerData& d, const Vocab& vocab, std::string_view word,
                     std::vector<Symbol>& symbols, std::vector<int32_t>& out) {
  if (d.ignore_merges) {
    std::string encoded;
    for (char c : word) unicode::utf8_append(encoded, unicode::byte_to_codepoint(c));
    const int32_t id = d.lookup(encoded);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  symbols.clear();
  for (size_t i = 0; i < word.size(); ++i) {
    const int32_t index = static_cast<int32_t>(i);
    symbols.push_back({index - 1, i + 1 == word.size() ? -1 : index + 1, static_cast<uint32_t>(i),
                       1, d.byte_tokens[static_cast<uint8_t>(word[i])]});
  }
  BigramQueue queue;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& a = symbols[left];
    const Symbol& b = symbols[right];
    if (a.id < 0 || b.id < 0) return;
    auto it = d.merges.find(pair_key(a.id, b.id));
    if (it == d.merges.end()) return;
    queue.push({-static_cast<double>(it->second.first), left, right, a.length + b.length,
                it->second.second});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);
  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    if (bigram_is_stale(symbols, bigram)) continue;
    merge_symbols(symbols, bigram);
    try_add(symbols[bigram.left].prev, bigram.left);
    try_add(bigram.left, symbols[bigram.left].next);
  }
  for (int32_t i = symbols.empty() ? -1 : 0; i != -1; i = symbols[i].next) {
    if (symbols[i].id >= 0) {
      out.push_back(symbols[i].id);
    } else if (vocab.unk >= 0) {
      out.push_back(vocab.unk);
    }
  }
}

void encode_bpe(const TokenizerData& d, const Vocab& vocab, std::string_view text,
                std::vector<int32_t>& out) {
  // llama.cpp reads invalid UTF-8 as U+FFFD; the regexes need valid UTF-8.
  std::string clean = unicode::sanitize_utf8(text);
  clean = unicode::normalize(clean, vocab.normalization);
  clean = fold_case_and_accents(clean, vocab.lowercase, vocab.strip_accents);
  std::vector<std::string_view> words;
  d.splitter->split(clean, &words);
  std::vector<Symbol> symbols;
  for (std::string_view word : words) encode_bpe_word(d, vocab, word, symbols, out);
}

// BERT's basic tokenizer: drop control characters, split on whitespace,
// isolate punctuation and CJK ideographs, lowercase and strip accents.
std::vector<std::string> bert_words(std::string_view text, bool lowercase, bool strip_accents) {
  std::vector<std::string> words(1);
  uint32_t cp;
  uint32_t parts[unicode::kMaxDecomposition];
  for (size_t pos = 0; pos < text.size();) {
    pos += unicode::utf8_decode_lenient(text, pos, &cp);
    const int n = strip_accents ? unicode::decompose_nfd(cp, parts) : (parts[0] = cp, 1);
    for (int i = 0; i < n; ++i) {
      const uint32_t c = parts[i];
      if (unicode::is_whitespace(c)) {
        if (!words.back().empty()) words.emplace_back();
        continue;
      }
      if (c == 0 || c == unicode::kReplacementChar || unicode::is_control(c)) continue;
      if (strip_accents && unicode::is_mark_nonspacing(c)) continue;
      const uint32_t folded = lowercase ? unicode::to_lower(c) : c;
      if (unicode::is_punctuation(c) || unicode::is_cjk_ideograph(c)) {
        if (!words.back().empty()) words.emplace_back();
        unicode::utf8_append(words.back(), folded);
        words.emplace_back();
      } else {
        unicode::utf8_append(words.back(), folded);
      }
    }
  }
  if (words.back().empty()) words.pop_back();
  return words;
}

// Greedy longest-match-first WordPiece; a word with any unmatched part is [UNK].
void encode_wordpiece(const TokenizerData& d, const Vocab& vocab, std::string_view text,
                      std::vector<int32_t>& out) {
  const std::string normalized = unicode::normalize(text, vocab.normalization);
  std::vector<size_t> boundaries;  // byte offset of each character, then the end
  std::string candidate;
  for (const std::string& word : bert_words(normalized, vocab.lowercase, vocab.strip_accents)) {
    boundaries.clear();
    uint32_t cp;
    for (size_t pos = 0; pos < word.size(); pos += unicode::utf8_decode_lenient(word, pos, &cp)) {
      boundaries.push_back(pos);
    }
    const size_t chars = boundaries.size();
    boundaries.push_back(word.size());
    if (vocab.max_word_chars > 0 && chars > static_cast<size_t>(vocab.max_word_chars)) {
      if (vocab.unk >= 0) out.push_back(vocab.unk);
      continue;
    }
    const size_t first_output = out.size();
    bool ok = true;
    for (size_t i = 0; i < chars && ok;) {
      const std::string& prefix =
          i == 0 ? d.wordpiece_first_prefix : d.wordpiece_continuation_prefix;
      size_t j = std::min(chars, i + d.max_token_bytes);
      for (; j > i; --j) {
        candidate.assign(prefix);
        candidate.append(word, boundaries[i], boundaries[j] - boundaries[i]);
        const int32_t id = d.lookup(candidate);
        if (id >= 0) {
          out.push_back(id);
          break;
        }
      }
      if (j == i) {
        ok = false;
      } else {
        i = j;
      }
    }
    if (!ok) {
      out.resize(first_output);
      if (vocab.unk >= 0) out.push_back(vocab.unk);
    }
  }
}

}  // namespace

struct Tokenizer::State : tokenizer_internal::TokenizerData {};

Tokenizer::Tokenizer(Vocab vocab) : vocab_(std::move(vocab)), state_(std::make_unique<State>()) {
  const size_t n = vocab_.tokens.size();
  const char* kind = tokenizer_kind_name(vocab_.kind);
  if (n == 0) fail(kind, " tokenizer: the vocabulary is empty");
  if (n > (size_t{1} << 30)) fail(kind, " tokenizer: vocabulary of ", n, " tokens is too large");
  if (!vocab_.scores.empty() && vocab_.scores.size() != n) {
    fail(kind, " tokenizer: ", vocab_.scores.size(), " scores for ", n, " tokens");
  }
  if (vocab_.types.empty()) vocab_.types.assign(n, TokenType::kNormal);
  if (vocab_.types.size() != n) {
    fail(kind, " tokenizer: ", vocab_.types.size(), " token types for ", n, " tokens");
  }
  const std::pair<const char*, int32_t*> specials[] = {
      {"bos", &vocab_.bos}, {"eos", &vocab_.eos}, {"unk", &vocab_.unk},  {"pad", &vocab_.pad},
      {"sep", &vocab_.sep}, {"cls", &vocab_.cls}, {"mask", &vocab_.mask}};
  for (const auto& [name, id] : specials) {
    if (*id < -1 || *id >= static_cast<int64_t>(n)) {
      fail(kind, " tokenizer: ", name, " token id ", *id, " is outside the vocabulary of ", n);
    }
  }
  TokenizerData& d = *state_;
  d.token_to_id.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = vocab_.tokens[i];
    if (text.empty()) continue;
    d.token_to_id.emplace(text, static_cast<int32_t>(i));
    d.max_token_bytes = std::max(d.max_token_bytes, text.size());
  }

  d.end_of_generation.assign(n, 0);
  for (int32_t id : vocab_.end_of_generation) {
    if (id >= 0 && static_cast<size_t>(id) < n) d.end_of_generation[id] = 1;
  }
  if (vocab_.eos >= 0) d.end_of_generation[vocab_.eos] = 1;

  d.byte_tokens.fill(-1);
  if (vocab_.kind == TokenizerKind::kBytePairBpe) {
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      unicode::utf8_append(ch, unicode::byte_to_codepoint(static_cast<uint8_t>(b)));
      d.byte_tokens[b] = d.lookup(ch);
    }
  } else if (vocab_.kind == TokenizerKind::kSentencePiece) {
    static const char kHex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      const char name[] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
      int32_t id = d.lookup(std::string_view(name, sizeof(name)));
      if (id < 0) id = d.lookup(std::string(1, static_cast<char>(b)));
      d.byte_tokens[b] = id;
    }
  }

  const bool hf_wordpiece =
      vocab_.kind == TokenizerKind::kWordPiece && !vocab_.wordpiece_space_prefix;
  d.pieces.resize(n);
  d.hidden.assign(n, 0);
  d.mergeable.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = vocab_.tokens[i];
    const TokenType type = vocab_.types[i];
    std::string& piece = d.pieces[i];
    d.hidden[i] = is_special_type(type);
    d.mergeable[i] = type == TokenType::kNormal || type == TokenType::kUserDefined ||
                     type == TokenType::kUndefined || type == TokenType::kUnused;
    const int byte = type == TokenType::kByte ? parse_byte_token(text) : -1;
    if (is_special_type(type) || type == TokenType::kUserDefined) {
      piece = text;
    } else if (byte >= 0) {
      piece.assign(1, static_cast<char>(byte));
    } else if (vocab_.kind == TokenizerKind::kBytePairBpe) {
      uint32_t cp;
      for (size_t pos = 0; pos < text.size();) {
        const size_t len = unicode::utf8_decode_lenient(text, pos, &cp);
        const int value = unicode::codepoint_to_byte(cp);
        if (value >= 0) {
          piece.push_back(static_cast<char>(value));
        } else {
          piece.append(text, pos, len);
        }
        pos += len;
      }
    } else if (hf_wordpiece) {
      piece = text.rfind("##", 0) == 0 ? text.substr(2) : " " + text;
    } else {
      piece = replace_all(text, kSpaceMark, " ");
    }
    if (type == TokenType::kUserDefined) d.always_split.add(text, static_cast<int32_t>(i));
    if (type == TokenType::kUserDefined || is_special_type(type)) {
      d.parse_special_split.add(text, static_cast<int32_t>(i));
    }
  }

  switch (vocab_.kind) {
    case TokenizerKind::kSentencePiece:
      d.strip_first_space = vocab_.add_space_prefix;
      d.spm_use_merges = vocab_.scores.empty() && !vocab_.merges.empty();
      d.spm_split_at_spaces = true;
      for (size_t i = 0; i < n && d.spm_split_at_spaces; ++i) {
        if (!d.mergeable[i]) continue;
        const std::string& text = vocab_.tokens[i];
        for (size_t pos = text.find(kSpaceMark, 1); pos != std::string::npos;
             pos = text.find(kSpaceMark, pos + 1)) {
          if (pos < kSpaceMark.size() ||
              text.compare(pos - kSpaceMark.size(), kSpaceMark.size(), kSpaceMark) != 0) {
            d.spm_split_at_spaces = false;
            break;
          }
        }
      }
      break;
    case TokenizerKind::kBytePairBpe: {
      std::vector<std::string> regexes;
      if (vocab_.pre == "custom") {
        if (vocab_.pre_regex.empty()) fail("bpe tokenizer: pre-tokenizer 'custom' has no regex");
        regexes = vocab_.pre_regex;
      } else {
        const PreTokenizerSpec* spec = find_pre_tokenizer(vocab_.pre);
        if (spec == nullptr) {
          fail("bpe tokenizer: unknown or unsupported pre-tokenizer '", vocab_.pre,
               "' (tokenizer.ggml.pre)");
        }
        regexes = spec->regexes;
        d.ignore_merges = spec->ignore_merges;
      }
      d.ignore_merges = d.ignore_merges || vocab_.ignore_merges;
      d.splitter = std::make_unique<RegexSplitter>(regexes);
      break;
    }
    case TokenizerKind::kWordPiece:
      d.strip_first_space = true;
      if (vocab_.wordpiece_space_prefix) {
        d.wordpiece_first_prefix = std::string(kSpaceMark);
      } else {
        d.wordpiece_continuation_prefix = "##";
      }
      break;
  }

  if (vocab_.kind != TokenizerKind::kWordPiece && !vocab_.merges.empty()) {
    d.merges.reserve(vocab_.merges.size());
    std::string joined;
    for (size_t rank = 0; rank < vocab_.merges.size(); ++rank) {
      const std::string_view merge = vocab_.merges[rank];
      const size_t space = merge.find(' ', 1);
      if (space == std::string_view::npos) continue;
      const int32_t left = d.lookup(merge.substr(0, space));
      const int32_t right = d.lookup(merge.substr(space + 1));
      if (left < 0 || right < 0) continue;
      joined.assign(merge.substr(0, space));
      joined.append(merge.substr(space + 1));
      const int32_t result = d.lookup(joined);
      if (result < 0) continue;
      d.merges.emplace(pair_key(left, right), std::make_pair(static_cast<int32_t>(rank), result));
    }
  }
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  const TokenizerData& d = *state_;
  std::vector<int32_t> out;
  const bool wordpiece = vocab_.kind == TokenizerKind::kWordPiece;
  const int32_t begin_token = wordpiece && vocab_.cls >= 0 ? vocab_.cls : vocab_.bos;
  const int32_t end_token = wordpiece && vocab_.sep >= 0 ? vocab_.sep : vocab_.eos;
  if (add_special && vocab_.add_bos && begin_token >= 0) out.push_back(begin_token);

  std::vector<Fragment> fragments;
  split_specials(text, parse_special ? d.parse_special_split : d.always_split, &fragments);
  bool previous_special = true;  // SentencePiece: the text after a special token gets the ▁
  for (const Fragment& fragment : fragments) {
    if (fragment.token >= 0) {
      out.push_back(fragment.token);
      previous_special = true;
      continue;
    }
    switch (vocab_.kind) {
      case TokenizerKind::kSentencePiece: {
        std::string spaced;
        if (vocab_.add_space_prefix && previous_special) spaced = " ";
        spaced += fold_case_and_accents(unicode::normalize(fragment.text, vocab_.normalization),
                                        vocab_.lowercase, vocab_.strip_accents);
        encode_sentencepiece(d, vocab_, replace_all(spaced, " ", kSpaceMark), out);
        break;
      }
      case TokenizerKind::kBytePairBpe:
        encode_bpe(d, vocab_, fragment.text, out);
        break;
      case TokenizerKind::kWordPiece:
        encode_wordpiece(d, vocab_, fragment.text, out);
        break;
    }
    previous_special = false;
  }
  if (add_special && vocab_.add_eos && end_token >= 0) out.push_back(end_token);
  return out;
}

std::string Tokenizer::token_to_piece(int32_t token, bool render_special) const {
  if (token < 0 || token >= size()) {
    fail("token id ", token, " is outside the vocabulary of ", size());
  }
  if (state_->hidden[token] && !render_special) return {};
  return state_->pieces[token];
}

std::string Tokenizer::decode(const std::vector<int32_t>& tokens, bool skip_special) const {
  std::string text;
  bool first = true;
  for (int32_t token : tokens) {
    if (token < 0 || token >= size()) {
      fail("token id ", token, " is outside the vocabulary of ", size());
    }
    if (skip_special && state_->hidden[token]) continue;
    std::string_view piece = state_->pieces[token];
    if (piece.empty()) continue;
    if (first && state_->strip_first_space && piece[0] == ' ') piece.remove_prefix(1);
    first = false;
    text.append(piece);
  }
  if (vocab_.kind == TokenizerKind::kWordPiece) {
    // HF's WordPiece decoder cleanup: no space before punctuation and contractions.
    static const std::pair<const char*, const char*> kCleanup[] = {
        {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : kCleanup) text = replace_all(text, from, to);
  }
  return text;
}

std::optional<int32_t> Tokenizer::find_token(std::string_view piece) const {
  const int32_t id = state_->lookup(piece);
  if (id < 0) return std::nullopt;
  return id;
}

bool Tokenizer::is_end_of_generation(int32_t token) const {
  return token >= 0 && token < size() && state_->end_of_generation[token] != 0;
}

std::string StreamingDecoder::push(int32_t token) {
  std::string piece = tokenizer_->token_to_piece(token);
  if (piece.empty()) return {};
  if (first_) {
    first_ = false;
    const TokenizerKind kind = tokenizer_->vocab().kind;
    const bool strip =
        (kind == TokenizerKind::kSentencePiece && tokenizer_->vocab().add_space_prefix) ||
        kind == TokenizerKind::kWordPiece;
    if (strip && piece[0] == ' ') piece.erase(0, 1);
  }
  pending_ += piece;
  // Emit every complete character; replace bytes that can never become one.
  std::string out;
  size_t pos = 0;
  uint32_t cp;
  while (pos < pending_.size()) {
    const size_t n = unicode::utf8_decode(pending_, pos, &cp);
    if (n > 0) {
      out.append(pending_, pos, n);
      pos += n;
    } else if (unicode::utf8_incomplete_prefix(pending_, pos)) {
      break;
    } else {
      unicode::utf8_append(out, unicode::kReplacementChar);
      pos += 1;
    }
  }
  pending_.erase(0, pos);
  return out;
}

std::string StreamingDecoder::flush() {
  std::string out;
  if (!pending_.empty()) unicode::utf8_append(out, unicode::kReplacementChar);
  pending_.clear();
  return out;
}

}  // namespace edgelm
