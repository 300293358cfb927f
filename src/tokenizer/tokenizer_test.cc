#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "edgelm/error.h"
#include "formats/gguf.h"
#include "tokenizer/unicode.h"

namespace edgelm {
namespace {

const std::string kShared = EDGELM_SHARED_DIR;
const std::string kVectors = kShared + "/tokenizers/llamacpp-vectors/";
const std::string kSmolLm = kShared + "/tokenizers/smollm2-135m-instruct";
const std::string kMiniLm = kShared + "/tokenizers/all-minilm-l6-v2";
const std::string kStories = kShared + "/models/stories260K/";
const std::string kTestData = std::string(EDGELM_SOURCE_DIR) + "/src/tokenizer/testdata/";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

struct VectorCase {
  std::string text;
  std::vector<int32_t> ids;
};

// llama.cpp's test-tokenizer-0 convention: texts separated by
// "\n__ggml_vocab_test__\n", expected ids one line per text.
std::vector<VectorCase> read_vectors(const std::string& gguf_path) {
  const std::string raw = read_text(gguf_path + ".inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      texts.push_back(raw.substr(pos));
      break;
    }
    texts.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::ifstream out(gguf_path + ".out");
  std::vector<VectorCase> cases;
  std::string line;
  for (size_t i = 0; std::getline(out, line); ++i) {
    VectorCase c;
    c.text = i < texts.size() ? texts[i] : "";
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  EXPECT_EQ(texts.size(), cases.size()) << gguf_path;
  return cases;
}

Tokenizer gguf_tokenizer(const std::string& path) {
  auto gguf = GgufFile::open(path);
  return Tokenizer(load_vocab_from_gguf(*gguf));
}

void expect_vectors(const Tokenizer& tokenizer, const std::string& gguf_path) {
  const auto cases = read_vectors(gguf_path);
  ASSERT_GT(cases.size(), 40u);
  for (const auto& c : cases) {
    EXPECT_EQ(tokenizer.encode(c.text, /*add_special=*/false, /*parse_special=*/false), c.ids)
        << "text: '" << c.text << "'";
  }
}

std::vector<std::string> sample_texts() {
  std::vector<std::string> texts;
  for (const std::string& file : {kShared + "/data/tinystories-sample/TinyStories-valid.txt",
                                  kShared + "/data/wikitext-2/wiki.test.txt"}) {
    const std::string all = read_text(file);
    // A few varied chunks of each sample, cut at line boundaries.
    for (size_t start : {size_t{0}, all.size() / 3, all.size() / 2}) {
      size_t begin = all.find('\n', start);
      begin = begin == std::string::npos ? 0 : begin + 1;
      texts.push_back(all.substr(begin, 4000));
    }
  }
  texts.push_back(
      "Emoji 🦙🚀😶‍🌫️ and CJK 我想在apple工作 and Ünïcödé\tTabs\r\n  spaces "
      " "
      " ");
  return texts;
}

TEST(TokenizerVectors, LlamaSpmGguf) {
  const std::string path = kVectors + "ggml-vocab-llama-spm.gguf";
  const Tokenizer tokenizer = gguf_tokenizer(path);
  EXPECT_EQ(tokenizer.vocab().kind, TokenizerKind::kSentencePiece);
  EXPECT_EQ(tokenizer.size(), 32000);
  expect_vectors(tokenizer, path);
}

TEST(TokenizerVectors, Gpt2Gguf) {
  const std::string path = kVectors + "ggml-vocab-gpt-2.gguf";
  const Tokenizer tokenizer = gguf_tokenizer(path);
  EXPECT_EQ(tokenizer.vocab().kind, TokenizerKind::kBytePairBpe);
  EXPECT_EQ(tokenizer.vocab().pre, "gpt-2");
  expect_vectors(tokenizer, path);
}

TEST(TokenizerVectors, BertBgeGguf) {
  const std::string path = kVectors + "ggml-vocab-bert-bge.gguf";
  const Tokenizer tokenizer = gguf_tokenizer(path);
  EXPECT_EQ(tokenizer.vocab().kind, TokenizerKind::kWordPiece);
  expect_vectors(tokenizer, path);
}

TEST(TokenizerVectors, Llama2SentencePieceModelMatchesGguf) {
  const Tokenizer tokenizer(
      load_vocab_from_sentencepiece_model(kShared + "/tokenizers/llama2/tokenizer.model"));
  const Tokenizer gguf = gguf_tokenizer(kVectors + "ggml-vocab-llama-spm.gguf");
  ASSERT_EQ(tokenizer.size(), gguf.size());
  EXPECT_EQ(tokenizer.vocab().tokens, gguf.vocab().tokens);
  expect_vectors(tokenizer, kVectors + "ggml-vocab-llama-spm.gguf");
  for (const std::string& text : sample_texts()) {
    EXPECT_EQ(tokenizer.encode(text, true), gguf.encode(text, true));
  }
}

TEST(TokenizerVectors, MiniLmTokenizerJsonBehavesLikeBertBge) {
  // Both use the bert-base-uncased vocabulary, so ids must agree.
  const Tokenizer tokenizer(load_vocab_from_hf_dir(kMiniLm));
  EXPECT_EQ(tokenizer.vocab().kind, TokenizerKind::kWordPiece);
  EXPECT_TRUE(tokenizer.vocab().lowercase);
  expect_vectors(tokenizer, kVectors + "ggml-vocab-bert-bge.gguf");
  const auto ids = tokenizer.encode("Hello, World!", /*add_special=*/true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids.front(), 101);  // [CLS]
  EXPECT_EQ(ids.back(), 102);   // [SEP]
  EXPECT_EQ(tokenizer.decode(ids), "hello, world!");
}

TEST(TokenizerVectors, SentencePieceWordSplittingChangesNothing) {
  // Encoding splits the text at runs of U+2581 unless a token could merge
  // across them; a token "\x01▁" turns that off and must not change any ids.
  auto gguf = GgufFile::open(kVectors + "ggml-vocab-llama-spm.gguf");
  const Vocab vocab = load_vocab_from_gguf(*gguf);
  Vocab unsplit = vocab;
  unsplit.tokens.push_back("\x01\xE2\x96\x81");
  unsplit.scores.push_back(-1e9f);
  unsplit.types.push_back(TokenType::kNormal);
  const Tokenizer split_tokenizer(vocab);
  const Tokenizer whole_tokenizer(unsplit);
  for (const std::string& text : sample_texts()) {
    EXPECT_EQ(split_tokenizer.encode(text, true), whole_tokenizer.encode(text, true));
  }
  for (const auto& c : read_vectors(kVectors + "ggml-vocab-llama-spm.gguf")) {
    EXPECT_EQ(whole_tokenizer.encode(c.text, false), c.ids) << c.text;
  }
}

TEST(TokenizerStories260K, AllThreeSourcesAgree) {
  const Tokenizer from_model(load_vocab_from_sentencepiece_model(kStories + "tok512.model"));
  const Tokenizer from_bin(load_vocab_from_llama2c(kStories + "tok512.bin"));
  const Tokenizer from_gguf = gguf_tokenizer(kStories + "stories260K.gguf");
  ASSERT_EQ(from_model.size(), 512);
  EXPECT_EQ(from_bin.vocab().tokens, from_model.vocab().tokens);
  EXPECT_EQ(from_gguf.vocab().tokens, from_model.vocab().tokens);
  EXPECT_EQ(from_bin.vocab().bos, 1);
  EXPECT_EQ(from_bin.vocab().eos, 2);
  for (const std::string& text : sample_texts()) {
    const auto ids = from_model.encode(text, true);
    EXPECT_EQ(ids.front(), 1);
    EXPECT_EQ(from_bin.encode(text, true), ids);
    EXPECT_EQ(from_gguf.encode(text, true), ids);
    EXPECT_EQ(from_model.decode(ids), text);
  }
  // llama2.c's own encoding of its demo prompt.
  EXPECT_EQ(from_bin.encode("Once upon a time", true).front(), 1);
}

TEST(TokenizerRoundTrip, AllTokenizersReproduceText) {
  const Tokenizer smollm(load_vocab_from_hf_dir(kSmolLm));
  const Tokenizer gpt2 = gguf_tokenizer(kVectors + "ggml-vocab-gpt-2.gguf");
  const Tokenizer llama = gguf_tokenizer(kVectors + "ggml-vocab-llama-spm.gguf");
  for (const std::string& text : sample_texts()) {
    for (const Tokenizer* t : {&smollm, &gpt2, &llama}) {
      const auto ids = t->encode(text, /*add_special=*/true);
      EXPECT_EQ(t->decode(ids), text) << tokenizer_kind_name(t->vocab().kind);
    }
  }
}

TEST(TokenizerHf, SmolLm2Structure) {
  const Tokenizer tokenizer(load_vocab_from_hf_dir(kSmolLm));
  const Vocab& vocab = tokenizer.vocab();
  EXPECT_EQ(vocab.kind, TokenizerKind::kBytePairBpe);
  EXPECT_EQ(vocab.pre, "smollm");
  EXPECT_EQ(tokenizer.size(), 49152);
  EXPECT_FALSE(vocab.add_bos);
  const int32_t im_start = tokenizer.find_token("<|im_start|>").value_or(-1);
  const int32_t im_end = tokenizer.find_token("<|im_end|>").value_or(-1);
  EXPECT_EQ(im_start, 1);
  EXPECT_EQ(im_end, 2);
  EXPECT_TRUE(tokenizer.is_end_of_generation(im_end));
  EXPECT_FALSE(tokenizer.is_end_of_generation(im_start));

  const std::string chat = "<|im_start|>user\nHi there<|im_end|>\n";
  const auto parsed = tokenizer.encode(chat, false, /*parse_special=*/true);
  ASSERT_GE(parsed.size(), 4u);
  EXPECT_EQ(parsed.front(), im_start);
  EXPECT_NE(std::find(parsed.begin(), parsed.end(), im_end), parsed.end());
  const auto literal = tokenizer.encode(chat, false, /*parse_special=*/false);
  EXPECT_EQ(std::find(literal.begin(), literal.end(), im_start), literal.end());
  EXPECT_EQ(tokenizer.decode(literal), chat);
  EXPECT_EQ(tokenizer.decode(parsed, /*skip_special=*/false), chat);
  EXPECT_EQ(tokenizer.decode(parsed, /*skip_special=*/true), "user\nHi there\n");
  EXPECT_EQ(tokenizer.token_to_piece(im_end), "");
  EXPECT_EQ(tokenizer.token_to_piece(im_end, /*render_special=*/true), "<|im_end|>");
}

// Ids written by tools/tokenizer-goldens with transformers.js from the same
// tokenizer.json files.
void expect_goldens(const Tokenizer& tokenizer, const std::string& golden_file) {
  const std::string path = kTestData + golden_file;
  ASSERT_TRUE(std::filesystem::exists(path)) << path;
  const auto goldens = nlohmann::json::parse(read_text(path));
  ASSERT_GE(goldens["cases"].size(), 20u);
  for (const auto& c : goldens["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const bool add_special = c["add_special"].get<bool>();
    const bool parse_special = c["parse_special"].get<bool>();
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tokenizer.encode(text, add_special, parse_special), expected)
        << "text: '" << text << "'";
  }
}

TEST(TokenizerGoldens, SmolLm2MatchesTransformersJs) {
  expect_goldens(Tokenizer(load_vocab_from_hf_dir(kSmolLm)), "smollm2_goldens.json");
}

TEST(TokenizerGoldens, MiniLmMatchesTransformersJs) {
  expect_goldens(Tokenizer(load_vocab_from_hf_dir(kMiniLm)), "minilm_goldens.json");
}

TEST(TokenizerStreaming, NeverEmitsBrokenUtf8) {
  const Tokenizer llama = gguf_tokenizer(kVectors + "ggml-vocab-llama-spm.gguf");
  const Tokenizer smollm(load_vocab_from_hf_dir(kSmolLm));
  const std::string text =
      "Emoji 🦙🚀😶‍🌫️ ✅ via byte fallback, 我想在apple工作 and Ünïcödé.";
  for (const Tokenizer* t : {&llama, &smollm}) {
    const auto ids = t->encode(text, true);
    StreamingDecoder stream(*t);
    std::string joined;
    int pieces_with_partial_bytes = 0;
    for (int32_t id : ids) {
      const std::string out = stream.push(id);
      EXPECT_TRUE(unicode::is_valid_utf8(out)) << "token " << id;
      if (!unicode::is_valid_utf8(t->token_to_piece(id))) ++pieces_with_partial_bytes;
      joined += out;
    }
    joined += stream.flush();
    EXPECT_EQ(joined, text);
    EXPECT_GT(pieces_with_partial_bytes, 0) << "the text should exercise split characters";
  }
}

TEST(TokenizerStreaming, InvalidBytesBecomeReplacementCharacters) {
  const Tokenizer llama = gguf_tokenizer(kVectors + "ggml-vocab-llama-spm.gguf");
  const int32_t lead = llama.find_token("<0xF0>").value();
  const int32_t cont = llama.find_token("<0x9F>").value();
  const int32_t hello = llama.find_token("▁Hello").value();
  StreamingDecoder stream(llama);
  EXPECT_EQ(stream.push(lead), "");
  EXPECT_EQ(stream.push(cont), "");
  EXPECT_EQ(stream.push(hello), "\xEF\xBF\xBD\xEF\xBF\xBD Hello");  // the 2 bytes never completed
  EXPECT_EQ(stream.push(lead), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");
}

TEST(TokenizerSpeed, LongInputsWithoutSpacesAreNotQuadratic) {
  // 100 KB of text with no spaces; each must finish quickly (the test binary's
  // own time limit catches a quadratic regression).
  std::string letters, digits, mixed;
  for (int i = 0; i < 100000; ++i) {
    letters.push_back(static_cast<char>('a' + (i * 7) % 26));
    digits.push_back(static_cast<char>('0' + i % 10));
  }
  while (mixed.size() < 100000) mixed += "ab😀c你";
  const Tokenizer llama = gguf_tokenizer(kVectors + "ggml-vocab-llama-spm.gguf");
  const Tokenizer gpt2 = gguf_tokenizer(kVectors + "ggml-vocab-gpt-2.gguf");
  const Tokenizer bert = gguf_tokenizer(kVectors + "ggml-vocab-bert-bge.gguf");
  const Tokenizer smollm(load_vocab_from_hf_dir(kSmolLm));
  for (const std::string* text : {&letters, &digits, &mixed}) {
    for (const Tokenizer* t : {&llama, &gpt2, &smollm}) {
      const auto ids = t->encode(*text, false);
      EXPECT_EQ(t->decode(ids), *text);
    }
    EXPECT_FALSE(bert.encode(*text, false).empty());
  }
}

TEST(TokenizerErrors, UnknownPreTokenizerIsNamed) {
  const std::string path =
      (std::filesystem::temp_directory_path() / "edgelm_tokenizer_bad_pre.gguf").string();
  GgufWriter writer;
  writer.set_string("tokenizer.ggml.model", "gpt2");
  writer.set_string("tokenizer.ggml.pre", "no-such-pre");
  writer.set_string_array("tokenizer.ggml.tokens", {"a", "b", "ab"});
  writer.set_string_array("tokenizer.ggml.merges", {"a b"});
  writer.write(path);
  auto gguf = GgufFile::open(path);
  try {
    load_vocab_from_gguf(*gguf);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-pre"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);

  Vocab vocab;
  vocab.kind = TokenizerKind::kBytePairBpe;
  vocab.tokens = {"a"};
  vocab.pre = "bogus-pre";
  EXPECT_THROW(Tokenizer{vocab}, Error);
}

TEST(TokenizerErrors, MalformedTokenizerJson) {
  EXPECT_THROW(load_vocab_from_tokenizer_json("{"), Error);
  EXPECT_THROW(load_vocab_from_tokenizer_json("[]"), Error);
  EXPECT_THROW(load_vocab_from_tokenizer_json(R"({"model": {"type": "Unigram", "vocab": []}})"),
               Error);
  EXPECT_THROW(
      load_vocab_from_tokenizer_json(R"({"model": {"type": "BPE", "vocab": {"a": 4000000000}}})"),
      Error);
  EXPECT_THROW(load_vocab_from_tokenizer_json(std::string(100000, '[')), Error);
  EXPECT_THROW(load_vocab_from_hf_dir("/nonexistent-dir"), Error);
}

TEST(TokenizerHf, MinimalSentencePieceStyleJson) {
  // Llama-2-style tokenizer.json: BPE with byte_fallback and the ▁ normalizer.
  const std::string json = R"({
    "added_tokens": [{"id": 0, "content": "<unk>", "special": true},
                     {"id": 1, "content": "<s>", "special": true}],
    "normalizer": {"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "▁"},
      {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": null,
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
    "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>",
      "vocab": {"<unk>": 0, "<s>": 1, "<0xC3>": 2, "<0xA9>": 3, "▁": 4, "h": 5, "i": 6,
                "hi": 7, "▁hi": 8},
      "merges": ["h i", "▁ hi"]}})";
  const Tokenizer tokenizer(load_vocab_from_tokenizer_json(json));
  EXPECT_EQ(tokenizer.vocab().kind, TokenizerKind::kSentencePiece);
  EXPECT_TRUE(tokenizer.vocab().add_bos);
  EXPECT_EQ(tokenizer.encode("hi hié", true), (std::vector<int32_t>{1, 8, 8, 2, 3}));
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("hi hié", true)), "hi hié");
}

TEST(TokenizerHf, PreTokenizerDetectedFromJsonStructure) {
  const std::string corpus = std::string(EDGELM_SOURCE_DIR) + "/fuzz/corpus/tokenizer_json/";
  const Vocab llama3 = load_vocab_from_tokenizer_json(read_text(corpus + "split_llama3.json"));
  EXPECT_EQ(llama3.kind, TokenizerKind::kBytePairBpe);
  EXPECT_EQ(llama3.pre, "llama-bpe");
  EXPECT_TRUE(llama3.add_bos);
  EXPECT_EQ(llama3.bos, 9);
  const Tokenizer llama3_tokenizer(llama3);
  EXPECT_EQ(llama3_tokenizer.encode("ab ab12", true), (std::vector<int32_t>{9, 2, 4, 7}));
  EXPECT_TRUE(llama3_tokenizer.is_end_of_generation(10));  // <|eot_id|>

  const Vocab qwen2 = load_vocab_from_tokenizer_json(read_text(corpus + "split_qwen2_nfc.json"));
  EXPECT_EQ(qwen2.pre, "qwen2");
  EXPECT_EQ(qwen2.normalization, "NFC");
  const Tokenizer qwen2_tokenizer(qwen2);
  // "<tool>" is a non-special added token: split out even without parse_special.
  EXPECT_EQ(qwen2_tokenizer.encode("xy<tool> xy", false), (std::vector<int32_t>{2, 6, 4}));

  EXPECT_EQ(load_vocab_from_tokenizer_json(read_text(corpus + "smollm_digits.json")).pre, "smollm");
  const Vocab custom = load_vocab_from_tokenizer_json(read_text(corpus + "custom_split.json"));
  EXPECT_EQ(custom.pre, "custom");
  EXPECT_EQ(custom.pre_regex.size(), 2u);
  EXPECT_TRUE(custom.lowercase);
  EXPECT_EQ(Tokenizer(custom).encode("A.b", false), (std::vector<int32_t>{0, 2, 1}));

  const Tokenizer wordpiece(
      load_vocab_from_tokenizer_json(read_text(corpus + "wordpiece_bert.json")));
  EXPECT_EQ(wordpiece.encode("Hello, WORLD! It's 2024", true),
            (std::vector<int32_t>{2, 5, 6, 7, 10, 11, 12, 13, 14, 15, 3}));
  EXPECT_EQ(wordpiece.encode("hello xyz", false), (std::vector<int32_t>{5, 1}));
}

}  // namespace
}  // namespace edgelm
