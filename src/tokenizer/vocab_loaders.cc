// Vocab loaders: GGUF metadata, HF tokenizer.json (+ tokenizer_config.json),
// SentencePiece tokenizer.model (hand-parsed protobuf) and llama2.c tokenizer.bin.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "formats/gguf.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace edgelm {
namespace {

using nlohmann::json;

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581
constexpr size_t kMaxTokens = size_t{1} << 24;

// Token texts that end a turn in common chat models (llama.cpp's list).
constexpr const char* kEndOfGenerationNames[] = {
    "<|eot_id|>", "<|im_end|>",      "<|end|>", "<end_of_turn>",     "<|endoftext|>",
    "<|eom_id|>", "<|end_of_text|>", "<EOT>",   "<end_of_utterance>"};

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open file");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail(path, ": read error");
  return buffer.str();
}

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (size_t pos = text.find(from); pos != std::string::npos;
       pos = text.find(from, pos + to.size())) {
    text.replace(pos, from.size(), to);
  }
  return text;
}

TokenType token_type_from_int(int64_t value) {
  if (value >= 0 && value <= 6) return static_cast<TokenType>(value);
  return TokenType::kUndefined;
}

int32_t find_id(const Vocab& vocab, std::string_view text) {
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    if (vocab.tokens[i] == text) return static_cast<int32_t>(i);
  }
  return -1;
}

// Fills end_of_generation from eos and the well-known end-of-turn tokens.
void add_end_of_generation(Vocab& vocab, std::initializer_list<int32_t> extra = {}) {
  auto add = [&](int32_t id) {
    if (id < 0 || static_cast<size_t>(id) >= vocab.tokens.size()) return;
    for (int32_t existing : vocab.end_of_generation) {
      if (existing == id) return;
    }
    vocab.end_of_generation.push_back(id);
  };
  add(vocab.eos);
  for (int32_t id : extra) add(id);
  for (const char* name : kEndOfGenerationNames) add(find_id(vocab, name));
}

}  // namespace

// ---------------------------------------------------------------------------
// GGUF

Vocab load_vocab_from_gguf(const GgufFile& gguf) {
  const std::string& file = gguf.path();
  const auto model = gguf.get_string_opt("tokenizer.ggml.model");
  if (!model) fail(file, ": no tokenizer in this file (tokenizer.ggml.model is missing)");
  Vocab vocab;
  if (*model == "llama") {
    vocab.kind = TokenizerKind::kSentencePiece;
    vocab.unk = 0, vocab.bos = 1, vocab.eos = 2;
    vocab.add_bos = true;
    vocab.add_space_prefix = true;
  } else if (*model == "gpt2") {
    vocab.kind = TokenizerKind::kBytePairBpe;
    vocab.add_space_prefix = false;
    vocab.pre = gguf.get_string_opt("tokenizer.ggml.pre").value_or("default");
    if (find_pre_tokenizer(vocab.pre) == nullptr) {
      fail(file, ": unknown or unsupported pre-tokenizer '", vocab.pre, "' (tokenizer.ggml.pre)");
    }
  } else if (*model == "bert") {
    vocab.kind = TokenizerKind::kWordPiece;
    vocab.pad = 0, vocab.unk = 100, vocab.cls = 101, vocab.sep = 102, vocab.mask = 103;
    vocab.add_bos = vocab.add_eos = true;
    vocab.add_space_prefix = false;
    vocab.lowercase = vocab.strip_accents = true;
    vocab.wordpiece_space_prefix = true;
  } else {
    fail(file, ": unsupported tokenizer model '", *model,
         "' (tokenizer.ggml.model; supported: llama, gpt2, bert)");
  }

  vocab.tokens = gguf.get_string_array("tokenizer.ggml.tokens");
  const size_t n = vocab.tokens.size();
  if (n == 0) fail(file, ": tokenizer.ggml.tokens is empty");
  if (n > kMaxTokens) fail(file, ": tokenizer.ggml.tokens has ", n, " entries (too many)");
  if (gguf.has("tokenizer.ggml.scores")) {
    vocab.scores = gguf.get_float_array("tokenizer.ggml.scores");
    if (vocab.scores.size() < n) {
      fail(file, ": tokenizer.ggml.scores has ", vocab.scores.size(), " entries for ", n,
           " tokens");
    }
    vocab.scores.resize(n);
  }
  vocab.types.assign(n, TokenType::kNormal);
  if (gguf.has("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> types = gguf.get_int_array("tokenizer.ggml.token_type");
    if (types.size() < n) {
      fail(file, ": tokenizer.ggml.token_type has ", types.size(), " entries for ", n, " tokens");
    }
    for (size_t i = 0; i < n; ++i) vocab.types[i] = token_type_from_int(types[i]);
  }
  if (gguf.has("tokenizer.ggml.merges")) {
    vocab.merges = gguf.get_string_array("tokenizer.ggml.merges");
  } else if (vocab.kind == TokenizerKind::kBytePairBpe) {
    fail(file, ": tokenizer.ggml.merges is missing (required for a gpt2 tokenizer)");
  }

  // Ids out of range (e.g. 0xFFFFFFFF for "none") mean the token is absent.
  auto read_id = [&](const char* key, int32_t* id) {
    if (*id >= static_cast<int64_t>(n)) *id = -1;
    const auto value = gguf.get_int_opt(key);
    if (!value) return;
    *id = *value >= 0 && *value < static_cast<int64_t>(n) ? static_cast<int32_t>(*value) : -1;
  };
  read_id("tokenizer.ggml.bos_token_id", &vocab.bos);
  read_id("tokenizer.ggml.eos_token_id", &vocab.eos);
  read_id("tokenizer.ggml.unknown_token_id", &vocab.unk);
  read_id("tokenizer.ggml.seperator_token_id", &vocab.sep);  // sic: llama.cpp's key
  read_id("tokenizer.ggml.separator_token_id", &vocab.sep);
  read_id("tokenizer.ggml.padding_token_id", &vocab.pad);
  read_id("tokenizer.ggml.cls_token_id", &vocab.cls);
  read_id("tokenizer.ggml.mask_token_id", &vocab.mask);
  int32_t eot = -1, eom = -1;
  read_id("tokenizer.ggml.eot_token_id", &eot);
  read_id("tokenizer.ggml.eom_token_id", &eom);
  if (vocab.kind == TokenizerKind::kWordPiece) {
    if (vocab.cls < 0) vocab.cls = vocab.bos;
    if (vocab.bos < 0) vocab.bos = vocab.cls;
  }

  if (auto v = gguf.get_bool_opt("tokenizer.ggml.add_bos_token")) vocab.add_bos = *v;
  if (auto v = gguf.get_bool_opt("tokenizer.ggml.add_eos_token")) vocab.add_eos = *v;
  if (vocab.kind == TokenizerKind::kWordPiece) {
    if (auto v = gguf.get_bool_opt("tokenizer.ggml.add_sep_token")) vocab.add_eos = *v;
  }
  if (auto v = gguf.get_bool_opt("tokenizer.ggml.add_space_prefix")) vocab.add_space_prefix = *v;
  if (auto v = gguf.get_bool_opt("tokenizer.ggml.normalizer.lowercase")) {
    vocab.lowercase = vocab.strip_accents = *v;
  }
  if (auto v = gguf.get_bool_opt("tokenizer.ggml.normalizer.strip_accents")) {
    vocab.strip_accents = *v;
  }
  if (auto pre = gguf.get_string_opt("tokenizer.ggml.pre");
      pre && (*pre == "llama3" || *pre == "llama-bpe" || *pre == "tekken") &&
      !gguf.has("tokenizer.ggml.add_bos_token")) {
    vocab.add_bos = true;  // llama.cpp's default for these pre-tokenizers
  }
  add_end_of_generation(vocab, {eot, eom});
  return vocab;
}

// ---------------------------------------------------------------------------
// tokenizer.json

namespace {

// nlohmann's parser recurses per nesting level; refuse absurd nesting first.
void check_json_depth(std::string_view text, const std::string& name) {
  constexpr int kMaxDepth = 128;
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth) fail(name, ": JSON nested deeper than ", kMaxDepth, " levels");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

std::string type_of(const json& node) {
  if (!node.is_object()) return {};
  auto it = node.find("type");
  if (it == node.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

bool bool_field(const json& node, const char* key, bool fallback) {
  auto it = node.find(key);
  return it != node.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

std::string escape_regex(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    if (std::strchr("\\^$.|?*+()[]{}-/", c) != nullptr && c != 0) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

struct JsonShape {
  bool byte_level = false;
  bool spm_prepend = false;  // normalizer Prepend("▁") or Metaspace prepending
  bool spm_replace = false;  // normalizer Replace(" ", "▁") or Metaspace
  bool bert_pre_tokenizer = false;
  std::vector<std::string> regexes;
};

void walk_normalizer(const json& node, const std::string& name, Vocab& vocab, JsonShape& shape,
                     int depth) {
  if (node.is_null()) return;
  if (depth > 8) fail(name, ": normalizer nested too deeply");
  const std::string type = type_of(node);
  if (type == "Sequence") {
    auto it = node.find("normalizers");
    if (it == node.end() || !it->is_array()) fail(name, ": normalizer Sequence without a list");
    for (const json& child : *it) walk_normalizer(child, name, vocab, shape, depth + 1);
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    vocab.normalization = type;
  } else if (type == "Lowercase") {
    vocab.lowercase = true;
  } else if (type == "StripAccents") {
    vocab.strip_accents = true;
  } else if (type == "BertNormalizer") {
    vocab.lowercase = bool_field(node, "lowercase", true);
    vocab.strip_accents = bool_field(node, "strip_accents", vocab.lowercase);
  } else if (type == "Prepend") {
    auto it = node.find("prepend");
    if (it == node.end() || !it->is_string() || it->get<std::string>() != kSpaceMark) {
      fail(name, ": unsupported Prepend normalizer (only U+2581 is supported)");
    }
    shape.spm_prepend = true;
  } else if (type == "Replace") {
    const json* pattern = node.contains("pattern") ? &node["pattern"] : nullptr;
    const bool space = pattern != nullptr && pattern->is_object() && pattern->contains("String") &&
                       (*pattern)["String"] == " ";
    const bool to_mark = node.contains("content") && node["content"] == std::string(kSpaceMark);
    if (!space || !to_mark) fail(name, ": unsupported Replace normalizer (only ' ' -> U+2581)");
    shape.spm_replace = true;
  } else {
    fail(name, ": unsupported normalizer type '", type, "'");
  }
}

void walk_pre_tokenizer(const json& node, const std::string& name, JsonShape& shape, int depth) {
  if (node.is_null()) return;
  if (depth > 8) fail(name, ": pre_tokenizer nested too deeply");
  const std::string type = type_of(node);
  if (type == "Sequence") {
    auto it = node.find("pretokenizers");
    if (it == node.end() || !it->is_array()) fail(name, ": pre_tokenizer Sequence without a list");
    for (const json& child : *it) walk_pre_tokenizer(child, name, shape, depth + 1);
  } else if (type == "ByteLevel") {
    shape.byte_level = true;
    if (bool_field(node, "use_regex", true)) shape.regexes.push_back(gpt2_regex());
  } else if (type == "Split") {
    if (bool_field(node, "invert", false)) fail(name, ": inverted Split pre-tokenizer unsupported");
    auto behavior = node.find("behavior");
    if (behavior != node.end() && *behavior != "Isolated") {
      fail(name, ": Split pre-tokenizer behavior ", behavior->dump(), " is not supported");
    }
    auto pattern = node.find("pattern");
    if (pattern == node.end() || !pattern->is_object()) fail(name, ": Split without a pattern");
    if (pattern->contains("Regex") && (*pattern)["Regex"].is_string()) {
      shape.regexes.push_back(canonicalize_hf_regex((*pattern)["Regex"].get<std::string>()));
    } else if (pattern->contains("String") && (*pattern)["String"].is_string()) {
      shape.regexes.push_back(escape_regex((*pattern)["String"].get<std::string>()));
    } else {
      fail(name, ": Split pattern is neither Regex nor String");
    }
  } else if (type == "Digits") {
    shape.regexes.push_back(bool_field(node, "individual_digits", false) ? "\\p{N}" : "\\p{N}+");
  } else if (type == "Metaspace") {
    shape.spm_replace = true;
    auto scheme = node.find("prepend_scheme");
    if (scheme != node.end() && scheme->is_string()) {
      shape.spm_prepend = scheme->get<std::string>() != "never";
    } else {
      shape.spm_prepend = bool_field(node, "add_prefix_space", true);
    }
  } else if (type == "BertPreTokenizer" || type == "Whitespace" || type == "WhitespaceSplit") {
    shape.bert_pre_tokenizer = true;
  } else {
    fail(name, ": unsupported pre_tokenizer type '", type, "'");
  }
}

void walk_decoder(const json& node, JsonShape& shape, int depth) {
  if (depth > 8 || !node.is_object()) return;
  const std::string type = type_of(node);
  if (type == "ByteLevel") shape.byte_level = true;
  if (type == "Sequence") {
    auto it = node.find("decoders");
    if (it != node.end() && it->is_array()) {
      for (const json& child : *it) walk_decoder(child, shape, depth + 1);
    }
  }
}

int32_t special_token_id(const json& item, const Vocab& vocab) {
  // TemplateProcessing item {"SpecialToken": {"id": "<s>", ...}}.
  if (!item.is_object() || !item.contains("SpecialToken")) return -1;
  const json& special = item["SpecialToken"];
  if (!special.is_object() || !special.contains("id") || !special["id"].is_string()) return -1;
  return find_id(vocab, special["id"].get<std::string>());
}

void walk_post_processor(const json& node, Vocab& vocab, int depth) {
  if (depth > 8 || !node.is_object()) return;
  const std::string type = type_of(node);
  if (type == "Sequence") {
    auto it = node.find("processors");
    if (it != node.end() && it->is_array()) {
      for (const json& child : *it) walk_post_processor(child, vocab, depth + 1);
    }
  } else if (type == "TemplateProcessing") {
    auto single = node.find("single");
    if (single == node.end() || !single->is_array() || single->empty()) return;
    const int32_t first = special_token_id(single->front(), vocab);
    const int32_t last = special_token_id(single->back(), vocab);
    if (first >= 0) {
      vocab.add_bos = true;
      if (vocab.kind == TokenizerKind::kWordPiece) {
        vocab.cls = first;
      } else {
        vocab.bos = first;
      }
    }
    if (last >= 0 && single->size() > 1) {
      vocab.add_eos = true;
      if (vocab.kind == TokenizerKind::kWordPiece) {
        vocab.sep = last;
      } else {
        vocab.eos = last;
      }
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto id_of = [&](const char* key) {
      auto it = node.find(key);
      if (it == node.end() || !it->is_array() || it->empty() || !(*it)[0].is_string()) return -1;
      return find_id(vocab, (*it)[0].get<std::string>());
    };
    vocab.cls = id_of("cls");
    vocab.sep = id_of("sep");
    vocab.add_bos = vocab.add_eos = true;
  }
}

// Parses an id field; tokens must fit a dense table.
int64_t json_id(const json& value, const std::string& name, const std::string& what) {
  if (!value.is_number_integer()) fail(name, ": ", what, " has a non-integer id");
  const int64_t id = value.get<int64_t>();
  if (id < 0 || id >= static_cast<int64_t>(kMaxTokens)) {
    fail(name, ": ", what, " has id ", id, " outside [0, ", kMaxTokens, ")");
  }
  return id;
}

Vocab parse_tokenizer_json(const json& root, const std::string& name) {
  if (!root.is_object()) fail(name, ": top level is not a JSON object");
  auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) fail(name, ": no \"model\" object");
  const json& model = *model_it;
  std::string model_type = type_of(model);
  if (model_type.empty()) {
    if (model.contains("merges")) {
      model_type = "BPE";
    } else if (model.contains("continuing_subword_prefix")) {
      model_type = "WordPiece";
    }
  }
  if (model_type != "BPE" && model_type != "WordPiece") {
    fail(name, ": unsupported tokenizer model type '", model_type, "' (supported: BPE, WordPiece)");
  }

  // Id -> text from model.vocab and added_tokens.
  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object())
    fail(name, ": model.vocab is not an object");
  struct Entry {
    std::string text;
    TokenType type = TokenType::kNormal;
    bool set = false;
  };
  std::vector<Entry> entries;
  auto added = root.find("added_tokens");
  const bool has_added = added != root.end() && added->is_array();
  // Ids index a dense table: a few gaps are fine, a huge id is an attack.
  const size_t id_limit = vocab_it->size() + (has_added ? added->size() : 0) + 65536;
  auto place = [&](int64_t id, const std::string& text, TokenType type) {
    if (static_cast<size_t>(id) >= id_limit) {
      fail(name, ": token '", text, "' has id ", id, " far past the vocabulary size");
    }
    if (entries.size() <= static_cast<size_t>(id)) entries.resize(id + 1);
    entries[id] = {text, type, true};
  };
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    place(json_id(it.value(), name, "model.vocab entry '" + it.key() + "'"), it.key(),
          TokenType::kNormal);
  }
  if (has_added) {
    for (const json& token : *added) {
      if (!token.is_object() || !token.contains("id") || !token.contains("content") ||
          !token["content"].is_string()) {
        fail(name, ": added_tokens entry without id/content");
      }
      const bool special = bool_field(token, "special", false);
      place(json_id(token["id"], name, "added token"), token["content"].get<std::string>(),
            special ? TokenType::kControl : TokenType::kUserDefined);
    }
  }
  if (entries.empty()) fail(name, ": the vocabulary is empty");

  Vocab vocab;
  vocab.kind = model_type == "WordPiece" ? TokenizerKind::kWordPiece : TokenizerKind::kBytePairBpe;
  vocab.add_space_prefix = false;
  vocab.tokens.reserve(entries.size());
  vocab.types.reserve(entries.size());
  for (Entry& e : entries) {
    vocab.tokens.push_back(std::move(e.text));
    vocab.types.push_back(e.set ? e.type : TokenType::kUnused);
  }
  if (auto unk = model.find("unk_token"); unk != model.end() && unk->is_string()) {
    vocab.unk = find_id(vocab, unk->get<std::string>());
    if (vocab.unk >= 0) vocab.types[vocab.unk] = TokenType::kUnknown;
  }

  JsonShape shape;
  walk_normalizer(root.contains("normalizer") ? root["normalizer"] : json(), name, vocab, shape, 0);
  walk_pre_tokenizer(root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json(), name, shape,
                     0);
  if (root.contains("decoder")) walk_decoder(root["decoder"], shape, 0);

  if (vocab.kind == TokenizerKind::kWordPiece) {
    auto prefix = model.find("continuing_subword_prefix");
    if (prefix != model.end() && prefix->is_string() && prefix->get<std::string>() != "##") {
      fail(name, ": WordPiece continuing_subword_prefix '", prefix->get<std::string>(),
           "' is not supported (only \"##\")");
    }
    if (auto max = model.find("max_input_chars_per_word");
        max != model.end() && max->is_number_integer()) {
      vocab.max_word_chars =
          static_cast<int32_t>(std::clamp<int64_t>(max->get<int64_t>(), 0, 1 << 20));
    }
    vocab.cls = find_id(vocab, "[CLS]");
    vocab.sep = find_id(vocab, "[SEP]");
    vocab.pad = find_id(vocab, "[PAD]");
    vocab.mask = find_id(vocab, "[MASK]");
    vocab.bos = vocab.cls;
    vocab.add_bos = vocab.add_eos = true;
  } else {
    auto merges = model.find("merges");
    if (merges == model.end() || !merges->is_array()) fail(name, ": BPE model without merges");
    vocab.merges.reserve(merges->size());
    for (const json& merge : *merges) {
      if (merge.is_string()) {
        vocab.merges.push_back(merge.get<std::string>());
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
                 merge[1].is_string()) {
        vocab.merges.push_back(merge[0].get<std::string>() + " " + merge[1].get<std::string>());
      } else {
        fail(name, ": malformed merge entry ", merge.dump().substr(0, 80));
      }
    }
    vocab.ignore_merges = bool_field(model, "ignore_merges", false);
    const bool byte_fallback = bool_field(model, "byte_fallback", false);
    if (shape.byte_level) {
      vocab.kind = TokenizerKind::kBytePairBpe;
      if (shape.regexes.empty()) shape.regexes.push_back("(?s).+");
      if (const PreTokenizerSpec* spec = match_pre_tokenizer(shape.regexes)) {
        vocab.pre = spec->name;
      } else {
        vocab.pre = "custom";
        vocab.pre_regex = shape.regexes;
      }
    } else if (shape.spm_prepend || shape.spm_replace || byte_fallback) {
      vocab.kind = TokenizerKind::kSentencePiece;
      vocab.add_space_prefix = shape.spm_prepend;
      if (!shape.regexes.empty()) {
        fail(name, ": Split pre-tokenizers are not supported with SentencePiece-style BPE");
      }
      for (size_t i = 0; i < vocab.tokens.size(); ++i) {
        const std::string& t = vocab.tokens[i];
        if (vocab.types[i] == TokenType::kNormal && t.size() == 6 && t.rfind("<0x", 0) == 0 &&
            t[5] == '>') {
          vocab.types[i] = TokenType::kByte;
        }
      }
    } else {
      fail(name, ": unsupported BPE tokenizer: neither byte-level nor SentencePiece-style");
    }
  }
  if (root.contains("post_processor")) walk_post_processor(root["post_processor"], vocab, 0);
  return vocab;
}

}  // namespace

Vocab load_vocab_from_tokenizer_json(const std::string& json_text, const std::string& name) {
  check_json_depth(json_text, name);
  const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) fail(name, ": not valid JSON");
  try {
    Vocab vocab = parse_tokenizer_json(root, name);
    add_end_of_generation(vocab);
    return vocab;
  } catch (const json::exception& e) {
    fail(name, ": unexpected JSON structure: ", e.what());
  }
}

namespace {

// tokenizer_config.json token fields are strings or {"content": "..."}.
std::optional<std::string> config_token(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return std::nullopt;
}

std::optional<json> read_json_if_present(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
  const std::string text = read_whole_file(path.string());
  check_json_depth(text, path.string());
  json value = json::parse(text, nullptr, false);
  if (value.is_discarded() || !value.is_object()) fail(path.string(), ": not a valid JSON object");
  return value;
}

}  // namespace

Vocab load_vocab_from_hf_dir(const std::string& dir) {
  const std::filesystem::path root(dir);
  const std::filesystem::path tokenizer_json = root / "tokenizer.json";
  std::error_code ec;
  Vocab vocab;
  if (std::filesystem::is_regular_file(tokenizer_json, ec)) {
    vocab = load_vocab_from_tokenizer_json(read_whole_file(tokenizer_json.string()),
                                           tokenizer_json.string());
  } else if (std::filesystem::is_regular_file(root / "tokenizer.model", ec)) {
    vocab = load_vocab_from_sentencepiece_model((root / "tokenizer.model").string());
  } else {
    fail(dir, ": no tokenizer.json or tokenizer.model in this directory");
  }
  try {
    auto set_id = [&](int32_t* id, const std::optional<std::string>& text) {
      if (!text) return;
      const int32_t found = find_id(vocab, *text);
      if (found >= 0) *id = found;
    };
    if (auto config = read_json_if_present(root / "tokenizer_config.json")) {
      set_id(&vocab.bos, config_token(*config, "bos_token"));
      set_id(&vocab.eos, config_token(*config, "eos_token"));
      set_id(&vocab.unk, config_token(*config, "unk_token"));
      set_id(&vocab.pad, config_token(*config, "pad_token"));
      set_id(&vocab.sep, config_token(*config, "sep_token"));
      set_id(&vocab.cls, config_token(*config, "cls_token"));
      set_id(&vocab.mask, config_token(*config, "mask_token"));
      if (config->contains("add_bos_token") && (*config)["add_bos_token"].is_boolean()) {
        vocab.add_bos = (*config)["add_bos_token"].get<bool>();
      }
      if (config->contains("add_eos_token") && (*config)["add_eos_token"].is_boolean()) {
        vocab.add_eos = (*config)["add_eos_token"].get<bool>();
      }
    }
    // config.json / generation_config.json: bos/eos ids when the tokenizer files lack them.
    std::vector<int32_t> extra_eos;
    for (const char* file : {"config.json", "generation_config.json"}) {
      auto config = read_json_if_present(root / file);
      if (!config) continue;
      auto valid = [&](const json& v) {
        return v.is_number_integer() && v.get<int64_t>() >= 0 &&
               v.get<int64_t>() < static_cast<int64_t>(vocab.tokens.size());
      };
      if (vocab.bos < 0 && config->contains("bos_token_id") && valid((*config)["bos_token_id"])) {
        vocab.bos = (*config)["bos_token_id"].get<int32_t>();
      }
      if (config->contains("eos_token_id")) {
        const json& eos = (*config)["eos_token_id"];
        if (valid(eos)) extra_eos.push_back(eos.get<int32_t>());
        if (eos.is_array()) {
          for (const json& e : eos) {
            if (valid(e)) extra_eos.push_back(e.get<int32_t>());
          }
        }
      }
    }
    if (vocab.eos < 0 && !extra_eos.empty()) vocab.eos = extra_eos.front();
    for (int32_t id : extra_eos) {
      if (std::find(vocab.end_of_generation.begin(), vocab.end_of_generation.end(), id) ==
          vocab.end_of_generation.end()) {
        vocab.end_of_generation.push_back(id);
      }
    }
  } catch (const json::exception& e) {
    fail(dir, ": unexpected JSON structure in the tokenizer config: ", e.what());
  }
  if (vocab.add_bos && vocab.bos < 0 && vocab.cls < 0) vocab.add_bos = false;
  add_end_of_generation(vocab);
  return vocab;
}

// ---------------------------------------------------------------------------
// SentencePiece tokenizer.model (protobuf ModelProto)

namespace {

class ProtoReader {
 public:
  ProtoReader(std::string_view data, const std::string& path) : data_(data), path_(path) {}
  bool done() const { return pos_ >= data_.size(); }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) fail(path_, ": truncated protobuf varint");
      const uint8_t byte = static_cast<uint8_t>(data_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    fail(path_, ": protobuf varint longer than 10 bytes");
  }
  std::string_view bytes() {
    const uint64_t length = varint();
    if (length > data_.size() - pos_) fail(path_, ": protobuf field runs past the end of the file");
    std::string_view out = data_.substr(pos_, length);
    pos_ += length;
    return out;
  }
  uint32_t fixed32() {
    if (data_.size() - pos_ < 4) fail(path_, ": truncated protobuf fixed32");
    uint32_t value;
    std::memcpy(&value, data_.data() + pos_, 4);
    pos_ += 4;
    return value;
  }
  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case 0:
        varint();
        break;
      case 1:
        if (data_.size() - pos_ < 8) fail(path_, ": truncated protobuf fixed64");
        pos_ += 8;
        break;
      case 2:
        bytes();
        break;
      case 5:
        fixed32();
        break;
      default:
        fail(path_, ": unsupported protobuf wire type ", wire_type);
    }
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
  const std::string& path_;
};

}  // namespace

Vocab load_vocab_from_sentencepiece_model(const std::string& path) {
  const std::string data = read_whole_file(path);
  Vocab vocab;
  vocab.kind = TokenizerKind::kSentencePiece;
  vocab.add_bos = true;
  vocab.add_space_prefix = true;
  int64_t unk = 0, bos = 1, eos = 2, pad = -1;
  int64_t model_type = 2;  // BPE
  ProtoReader model(data, path);
  while (!model.done()) {
    const uint64_t key = model.varint();
    const uint32_t field = static_cast<uint32_t>(key >> 3);
    const uint32_t wire = static_cast<uint32_t>(key & 7);
    if (field == 1 && wire == 2) {  // SentencePiece
      ProtoReader piece_reader(model.bytes(), path);
      std::string piece;
      float score = 0;
      int64_t type = 1;
      while (!piece_reader.done()) {
        const uint64_t k = piece_reader.varint();
        const uint32_t f = static_cast<uint32_t>(k >> 3), w = static_cast<uint32_t>(k & 7);
        if (f == 1 && w == 2) {
          piece = std::string(piece_reader.bytes());
        } else if (f == 2 && w == 5) {
          const uint32_t bits = piece_reader.fixed32();
          std::memcpy(&score, &bits, 4);
        } else if (f == 3 && w == 0) {
          type = static_cast<int64_t>(piece_reader.varint());
        } else {
          piece_reader.skip(w);
        }
      }
      if (vocab.tokens.size() >= kMaxTokens) fail(path, ": too many pieces");
      vocab.tokens.push_back(std::move(piece));
      vocab.scores.push_back(score);
      vocab.types.push_back(token_type_from_int(type));
    } else if ((field == 2 || field == 3) && wire == 2) {  // TrainerSpec / NormalizerSpec
      ProtoReader spec(model.bytes(), path);
      while (!spec.done()) {
        const uint64_t k = spec.varint();
        const uint32_t f = static_cast<uint32_t>(k >> 3), w = static_cast<uint32_t>(k & 7);
        if (w != 0) {
          spec.skip(w);
          continue;
        }
        const int64_t value = static_cast<int32_t>(static_cast<uint32_t>(spec.varint()));
        if (field == 2) {
          if (f == 3) model_type = value;
          if (f == 40) unk = value;
          if (f == 41) bos = value;
          if (f == 42) eos = value;
          if (f == 43) pad = value;
        } else if (f == 3) {
          vocab.add_space_prefix = value != 0;  // add_dummy_prefix
        }
      }
    } else {
      model.skip(wire);
    }
  }
  if (vocab.tokens.empty()) fail(path, ": no pieces (is this a SentencePiece model?)");
  if (model_type != 2) {
    fail(path, ": SentencePiece model type ", model_type,
         " is not supported (only BPE, type 2; 1 is unigram)");
  }
  const int64_t n = static_cast<int64_t>(vocab.tokens.size());
  auto id = [&](int64_t v) { return v >= 0 && v < n ? static_cast<int32_t>(v) : -1; };
  vocab.unk = id(unk), vocab.bos = id(bos), vocab.eos = id(eos), vocab.pad = id(pad);
  add_end_of_generation(vocab);
  return vocab;
}

// ---------------------------------------------------------------------------
// llama2.c tokenizer.bin

Vocab load_vocab_from_llama2c(const std::string& path) {
  const std::string data = read_whole_file(path);
  if (data.size() < 4) fail(path, ": too short for a llama2.c tokenizer");
  int32_t max_token_length;
  std::memcpy(&max_token_length, data.data(), 4);
  if (max_token_length <= 0 || max_token_length > (1 << 20)) {
    fail(path, ": implausible max_token_length ", max_token_length);
  }
  Vocab vocab;
  vocab.kind = TokenizerKind::kSentencePiece;
  vocab.add_bos = true;
  vocab.add_space_prefix = true;
  size_t pos = 4;
  while (pos < data.size()) {
    if (data.size() - pos < 8) fail(path, ": token ", vocab.tokens.size(), " is truncated");
    float score;
    int32_t length;
    std::memcpy(&score, data.data() + pos, 4);
    std::memcpy(&length, data.data() + pos + 4, 4);
    pos += 8;
    if (length < 0 || static_cast<size_t>(length) > data.size() - pos) {
      fail(path, ": token ", vocab.tokens.size(), " has length ", length,
           " past the end of the file");
    }
    if (vocab.tokens.size() >= kMaxTokens) fail(path, ": too many tokens");
    std::string text = data.substr(pos, length);
    pos += length;
    // llama2.c's export wrote BOS/EOS as "\n<s>\n" / "\n</s>\n" and U+2581 as ' '.
    TokenType type = TokenType::kNormal;
    if (text == "\n<s>\n" || text == "\n</s>\n") {
      text = text.substr(1, text.size() - 2);
      type = TokenType::kControl;
    } else if (text == "<unk>" && vocab.tokens.empty()) {
      type = TokenType::kUnknown;
    } else if (text.size() == 6 && text.rfind("<0x", 0) == 0 && text[5] == '>') {
      type = TokenType::kByte;
    } else {
      text = replace_all(std::move(text), " ", kSpaceMark);
    }
    vocab.tokens.push_back(std::move(text));
    vocab.scores.push_back(score);
    vocab.types.push_back(type);
  }
  if (vocab.tokens.empty()) fail(path, ": no tokens");
  const int32_t n = static_cast<int32_t>(vocab.tokens.size());
  vocab.unk = 0;
  vocab.bos = n > 1 ? 1 : -1;
  vocab.eos = n > 2 ? 2 : -1;
  add_end_of_generation(vocab);
  return vocab;
}

}  // namespace edgelm
