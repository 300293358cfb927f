// Pre-tokenizers of byte-level BPE models: each llama.cpp `tokenizer.ggml.pre`
// name stands for a list of regexes; each regex in turn splits every piece of
// the text into its matches and the gaps between them (llama.cpp's
// unicode_regex_split semantics). Internal to tokenizer/.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace edgelm {

struct PreTokenizerSpec {
  const char* name;  // canonical name
  std::vector<std::string> regexes;
  bool ignore_merges = false;  // a word that is a whole vocab entry is not merged
};

// Looks up a llama.cpp pre-tokenizer name (aliases included); nullptr if unknown.
const PreTokenizerSpec* find_pre_tokenizer(std::string_view name);
// Known pre-tokenizer whose regex list equals `regexes`, or nullptr.
const PreTokenizerSpec* match_pre_tokenizer(const std::vector<std::string>& regexes);
// The regex of GPT-2's ByteLevel pre-tokenizer as llama.cpp runs it.
const std::string& gpt2_regex();
// Rewrites HF's case-insensitive contraction group "(?i:'s|'t|...)" to the
// explicit form used in the table, so patterns from tokenizer.json compare equal.
std::string canonicalize_hf_regex(std::string pattern);

class RegexSplitter {
 public:
  // Compiles the patterns (PCRE2, UTF + UCP, JIT); throws edgelm::Error naming
  // the pattern when one does not compile.
  explicit RegexSplitter(const std::vector<std::string>& patterns);
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // Splits valid UTF-8 `text` into consecutive non-empty pieces covering it.
  // Thread-safe.
  void split(std::string_view text, std::vector<std::string_view>* pieces) const;

 private:
  struct Compiled;
  std::vector<std::unique_ptr<Compiled>> compiled_;
};

}  // namespace edgelm
