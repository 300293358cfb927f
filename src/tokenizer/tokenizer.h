// Tokenizers: SentencePiece-style BPE (Llama 2, TinyLlama, stories260K),
// byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM) with the pre-tokenizer of each
// model family, and WordPiece (BERT). A Vocab is the plain data every source
// (GGUF metadata, tokenizer.json, tokenizer.model, llama2.c tokenizer.bin) is
// loaded into; a Tokenizer runs it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace edgelm {

class GgufFile;

enum class TokenizerKind { kSentencePiece, kBytePairBpe, kWordPiece };
const char* tokenizer_kind_name(TokenizerKind kind);  // "sentencepiece", "bpe", "wordpiece"

// llama.cpp's token types (tokenizer.ggml.token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct Vocab {
  TokenizerKind kind = TokenizerKind::kSentencePiece;
  std::vector<std::string> tokens;  // as stored (SPM uses U+2581 for space, BPE byte-level chars)
  std::vector<float> scores;        // SentencePiece scores (may be empty for BPE)
  std::vector<TokenType> types;
  std::vector<std::string> merges;  // BPE merges "a b", highest priority first
  std::string pre = "default";      // pre-tokenizer (llama.cpp's tokenizer.ggml.pre values)
  int32_t bos = -1, eos = -1, unk = -1, pad = -1, sep = -1, cls = -1, mask = -1;
  std::vector<int32_t> end_of_generation;  // eos plus e.g. <|eot_id|>, <|im_end|>
  bool add_bos = false, add_eos = false;
  bool add_space_prefix = true;  // SentencePiece: prepend ▁ to the text
  bool lowercase = false;        // WordPiece normalizer (also tokenizer.json Lowercase)
  bool strip_accents = false;    // WordPiece normalizer (also tokenizer.json StripAccents)
  // Byte-level BPE: split regexes of a tokenizer.json pre-tokenizer that matches
  // no llama.cpp name; used when pre == "custom".
  std::vector<std::string> pre_regex;
  bool ignore_merges = false;    // BPE: a word that is a whole vocab entry is not merged
  std::string normalization;     // "NFC", "NFD", "NFKC", "NFKD" applied before encoding, or ""
  int32_t max_word_chars = 100;  // WordPiece: longer words become [UNK]
  // WordPiece as llama.cpp's GGUF stores it: word-initial pieces start with
  // U+2581 and continuations are bare (HF: continuations start with "##").
  bool wordpiece_space_prefix = false;
};

// Loaders; each throws edgelm::Error naming the file and problem.
Vocab load_vocab_from_gguf(const GgufFile& gguf);
// HF directory: tokenizer.json (+ tokenizer_config.json for add_bos/eos and specials).
Vocab load_vocab_from_hf_dir(const std::string& dir);
// tokenizer.json content alone (used by the fuzzer).
Vocab load_vocab_from_tokenizer_json(const std::string& json_text,
                                     const std::string& name = "tokenizer.json");
Vocab load_vocab_from_sentencepiece_model(const std::string& path);  // tokenizer.model
Vocab load_vocab_from_llama2c(const std::string& path);              // tokenizer.bin

class Tokenizer {
 public:
  explicit Tokenizer(Vocab vocab);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;

  // add_special: add BOS/EOS (or CLS/SEP) as the vocab says.
  // parse_special: recognize control/added tokens written in the text (e.g. "<|im_end|>").
  std::vector<int32_t> encode(std::string_view text, bool add_special,
                              bool parse_special = false) const;
  // SentencePiece and WordPiece drop the leading space of the first piece;
  // WordPiece also removes spaces before punctuation (HF's cleanup).
  // Throws edgelm::Error for an id outside the vocabulary.
  std::string decode(const std::vector<int32_t>& tokens, bool skip_special = true) const;
  // Raw bytes of one token as it appears in text (byte tokens -> that byte,
  // ▁ -> space, byte-level BPE chars -> bytes). Control tokens give "" unless
  // render_special.
  std::string token_to_piece(int32_t token, bool render_special = false) const;
  std::optional<int32_t> find_token(std::string_view piece) const;  // exact vocab entry

  const Vocab& vocab() const { return vocab_; }
  int32_t size() const { return static_cast<int32_t>(vocab_.tokens.size()); }
  bool is_end_of_generation(int32_t token) const;

 private:
  struct State;
  Vocab vocab_;
  std::unique_ptr<State> state_;
};

// Turns a token stream into text without ever emitting a broken UTF-8
// sequence: bytes of an incomplete character are held until it completes.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}
  // Returns the text that became complete with this token.
  std::string push(int32_t token);
  // Returns held bytes at the end of the stream (invalid ones as U+FFFD).
  std::string flush();

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;
  bool first_ = true;  // SentencePiece: the leading space of the first piece is dropped
};

}  // namespace edgelm
