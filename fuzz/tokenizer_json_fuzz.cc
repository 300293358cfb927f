// libFuzzer target: tokenizer.json loading. Any malformed input must end in
// edgelm::Error; anything that loads must build a Tokenizer (or throw
// edgelm::Error) that encodes and decodes a fixed text without crashing, and
// the streaming decoder must only ever emit valid UTF-8.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string json(reinterpret_cast<const char*>(data), size);
  try {
    const edgelm::Tokenizer tokenizer(edgelm::load_vocab_from_tokenizer_json(json, "fuzz.json"));
    const std::string text = "Hello, wörld! It's 2024 <s>[CLS]<|im_end|> 🦙\t\n  x";
    for (bool parse_special : {false, true}) {
      const std::vector<int32_t> ids = tokenizer.encode(text, true, parse_special);
      for (int32_t id : ids) {
        if (id < 0 || id >= tokenizer.size()) __builtin_trap();
      }
      (void)tokenizer.decode(ids, true);
      (void)tokenizer.decode(ids, false);
      edgelm::StreamingDecoder stream(tokenizer);
      for (int32_t id : ids) {
        if (!edgelm::unicode::is_valid_utf8(stream.push(id))) __builtin_trap();
      }
      if (!edgelm::unicode::is_valid_utf8(stream.flush())) __builtin_trap();
    }
    for (int32_t id = 0; id < tokenizer.size() && id < 64; ++id) {
      (void)tokenizer.token_to_piece(id, true);
      (void)tokenizer.is_end_of_generation(id);
    }
  } catch (const edgelm::Error&) {
  }
  return 0;
}
