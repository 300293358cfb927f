#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <initializer_list>

#include "tokenizer/unicode.h"
#include "util/error.h"

namespace edgelm {
namespace {

// The regexes come from the models' tokenizer.json files, in the form llama.cpp
// runs them (case-insensitive contraction groups spelled out).
const std::string kGpt2 =
    R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))re";
#define EDGELM_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
const std::string kLlama3 = EDGELM_CONTRACTIONS
    R"re(|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
const std::string kQwen2 = EDGELM_CONTRACTIONS
    R"re(|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
const std::string kGpt4o =
    R"re([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+)re" EDGELM_CONTRACTIONS
    R"re(?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*)re" EDGELM_CONTRACTIONS
    R"re(?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
const std::string kPoro = R"re( ?[^(\s|.,!?…。，、।۔،)]+)re";
const std::string kCjkDeepseek = R"re([一-龥ࠀ-一가-퟿]+)re";
const std::string kDeepseek3Main =
    R"re([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

struct Entry {
  std::vector<std::string> names;  // first is canonical
  PreTokenizerSpec spec;
};

std::vector<Entry> make_table() {
  auto entry = [](std::initializer_list<const char*> names, std::vector<std::string> regexes,
                  bool ignore_merges = false) {
    Entry e;
    for (const char* n : names) e.names.emplace_back(n);
    e.spec.regexes = std::move(regexes);
    e.spec.ignore_merges = ignore_merges;
    return e;
  };
  std::vector<Entry> t;
  t.push_back(entry({"default"},
                    {R"re([\p{P}\$\+<=>\^~\|]+)re", kGpt2, R"re(\p{N}+)re", "[0-9][0-9][0-9]"}));
  t.push_back(entry({"gpt-2",      "phi-2",      "jina-es",      "jina-de",         "gigachat",
                     "jina-v2-es", "jina-v2-de", "a.x-4.0",      "mellum",          "modern-bert",
                     "exaone4",    "jina-v1-en", "jina-v2-code", "roberta-bpe",     "mpt",
                     "olmo",       "jais",       "trillion",     "granite-docling", "gpt-neox"},
                    {kGpt2}));
  t.push_back(entry({"llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral",
                     "midm-2.0", "lfm2", "jina-v5-nano"},
                    {kLlama3}, true));
  t.push_back(entry({"dbrx", "smaug-bpe", "glm4", "chatglm-bpe"}, {kLlama3}));
  t.push_back(entry({"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2",
                     "hunyuan", "solar-open", "grok-2"},
                    {kQwen2}));
  t.push_back(entry(
      {"qwen35"},
      {EDGELM_CONTRACTIONS
       R"re(|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re"}));
  t.push_back(entry({"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                     "minerva-7b", "mellum2"},
                    {R"re(\p{N})re", kGpt2}));
  t.push_back(entry({"falcon"}, {R"re([\p{P}\$\+<=>\^~\|`]+)re", kGpt2, "[0-9][0-9][0-9]"}));
  t.push_back(entry(
      {"deepseek-llm"},
      {R"re([\r\n])re",
       R"re(\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+)re",
       R"re(\s?[!-/:-~！-／：-～‘-‟　-。]+)re", R"re(\s+$)re", kCjkDeepseek, R"re(\p{N}+)re"}));
  t.push_back(entry({"deepseek-coder"}, {R"re([\r\n])re", R"re(\s?\p{L}+)re", R"re(\s?\p{P}+)re",
                                         kCjkDeepseek, R"re(\p{N})re"}));
  t.push_back(entry({"deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"},
                    {R"re(\p{N}{1,3})re", R"re([一-龥぀-ゟ゠-ヿ]+)re", kDeepseek3Main}));
  t.push_back(entry(
      {"spark2_5"},
      {R"re(\p{N}{1,3})re", R"re([一-龥぀-ゟ゠-ヿ]+)re",
       R"re([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+)re",
       R"re(\p{N})re"}));
  t.push_back(entry({"poro-chat", "bloom", "gpt3-finnish"}, {kPoro}));
  t.push_back(entry({"viking"}, {kPoro, R"re(\p{N})re"}));
  t.push_back(entry(
      {"jais-2"},
      {EDGELM_CONTRACTIONS
       R"re(|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1})re"}));
  t.push_back(entry(
      {"tekken"},
      {R"re([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)re"},
      true));
  t.push_back(entry({"gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"}, {kGpt4o}));
  t.push_back(entry({"tiny_aya", "cohere2moe"}, {R"re(\d{1,3}(?=(?:\d{3})*\b))re", kGpt4o}));
  t.push_back(entry(
      {"youtu"},
      {R"re([가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+)re",
       R"re([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+)re" EDGELM_CONTRACTIONS
       R"re(?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*)re" EDGELM_CONTRACTIONS
       R"re(?|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)re"},
      true));
  t.push_back(
      entry({"chameleon"},
            {R"re(<sentinel:[0-9]+>)re", R"re((IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z)re",
             R"re(([\t\n]|    |  ))re", R"re(\p{N})re", R"re([\p{P}!-/:-@\[-`{-~])re", kGpt2}));
  t.push_back(entry(
      {"bailingmoe", "bailingmoe2", "llada-moe"},
      {R"re('(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)re"}));
  t.push_back(entry(
      {"seed-coder"},
      {EDGELM_CONTRACTIONS
       R"re(|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+)re"}));
  t.push_back(entry(
      {"ufakzeka"},
      {R"re([^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re"}));
  t.push_back(entry({"laguna"}, {R"re([^\n]+|[\n]+)re", kQwen2}));
  t.push_back(entry(
      {"exaone-moe"},
      {EDGELM_CONTRACTIONS
       R"re(|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+)re"}));
  t.push_back(entry(
      {"minicpm5"},
      {R"re(\p{N}{1,3})re", EDGELM_CONTRACTIONS
       R"re(|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re"},
      true));
  for (Entry& e : t) e.spec.name = e.names.front().c_str();
  return t;
}

const std::vector<Entry>& table() {
  static const std::vector<Entry> t = make_table();
  return t;
}

}  // namespace

const PreTokenizerSpec* find_pre_tokenizer(std::string_view name) {
  for (const Entry& e : table()) {
    for (const std::string& n : e.names) {
      if (n == name) return &e.spec;
    }
  }
  return nullptr;
}

const PreTokenizerSpec* match_pre_tokenizer(const std::vector<std::string>& regexes) {
  for (const Entry& e : table()) {
    if (e.spec.regexes == regexes) return &e.spec;
  }
  return nullptr;
}

const std::string& gpt2_regex() {
  return kGpt2;
}

std::string canonicalize_hf_regex(std::string pattern) {
  static const std::string kCaseless = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
  static const std::string kExplicit = EDGELM_CONTRACTIONS;
  for (size_t pos = pattern.find(kCaseless); pos != std::string::npos;
       pos = pattern.find(kCaseless, pos + kExplicit.size())) {
    pattern.replace(pos, kCaseless.size(), kExplicit);
  }
  // GPT-2's ByteLevel regex in tokenizer.json ends in "|\s+", which only ever
  // matches what the split keeps as a gap anyway.
  if (pattern == kGpt2 + R"re(|\s+)re") return kGpt2;
  return pattern;
}

struct RegexSplitter::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

RegexSplitter::RegexSplitter(const std::vector<std::string>& patterns) {
  for (const std::string& pattern : patterns) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    auto compiled = std::make_unique<Compiled>();
    compiled->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &error_code,
                                   &error_offset, nullptr);
    if (compiled->code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      fail("pre-tokenizer regex '", pattern, "' does not compile at offset ", error_offset, ": ",
           reinterpret_cast<const char*>(message));
    }
    // JIT is an optimization only: the interpreter runs when it is unavailable.
    pcre2_jit_compile(compiled->code, PCRE2_JIT_COMPLETE);
    compiled_.push_back(std::move(compiled));
  }
}

RegexSplitter::~RegexSplitter() = default;

namespace {

struct MatchResources {
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  MatchResources() {
    context = pcre2_match_context_create(nullptr);
    // Hostile patterns from tokenizer.json must not backtrack forever.
    pcre2_set_match_limit(context, 50'000'000);
    pcre2_set_depth_limit(context, 100'000);
  }
  ~MatchResources() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
  }
  void grow_jit_stack() {
    if (jit_stack != nullptr) return;
    jit_stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
};

}  // namespace

void RegexSplitter::split(std::string_view text, std::vector<std::string_view>* pieces) const {
  pieces->clear();
  if (text.empty()) return;
  pieces->push_back(text);
  MatchResources resources;
  std::vector<std::string_view> next;
  for (const auto& compiled : compiled_) {
    pcre2_match_data* match_data = pcre2_match_data_create_from_pattern(compiled->code, nullptr);
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> owner(
        match_data, &pcre2_match_data_free);
    next.clear();
    for (std::string_view piece : *pieces) {
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
      size_t start = 0;
      size_t gap_start = 0;
      while (start <= piece.size()) {
        int rc = pcre2_match(compiled->code, subject, piece.size(), start, PCRE2_NO_UTF_CHECK,
                             match_data, resources.context);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
          resources.grow_jit_stack();
          rc = pcre2_match(compiled->code, subject, piece.size(), start, PCRE2_NO_UTF_CHECK,
                           match_data, resources.context);
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_UCHAR message[256];
          pcre2_get_error_message(rc, message, sizeof(message));
          fail("pre-tokenizer regex match failed: ", reinterpret_cast<const char*>(message));
        }
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data);
        const size_t match_start = ovector[0];
        const size_t match_end = ovector[1];
        if (match_end <= match_start) {  // empty match: step one character on
          if (match_start >= piece.size()) break;
          start =
              match_start + unicode::utf8_sequence_length(static_cast<uint8_t>(piece[match_start]));
          continue;
        }
        if (match_start > gap_start)
          next.push_back(piece.substr(gap_start, match_start - gap_start));
        next.push_back(piece.substr(match_start, match_end - match_start));
        gap_start = match_end;
        start = match_end;
      }
      if (gap_start < piece.size()) next.push_back(piece.substr(gap_start));
    }
    pieces->swap(next);
  }
}

}  // namespace edgelm
