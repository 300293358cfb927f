// edgelm side of the llama.cpp interoperability check (tests/interop/run.sh): greedy decoding
// through the public API, printing token ids, which `edgelm run` does not show.
//
//   edgelm_interop_greedy MODEL PROMPT N LOGITS_OUT [FORCED]
//
// Prints "prompt: ids", "tokens: ids" and "text: ..." (prompt + detokenized continuation), and
// writes the N logit rows (f32, vocab each) that chose the tokens. Same conventions as
// tests/interop/llama_driver.cc: BOS as the tokenizer adds it, N tokens without stopping at
// EOS, argmax with the lowest id among equal maxima, FORCED (N comma-separated ids) fed instead
// of the argmax tokens (teacher forcing), INTEROP_KV_F32=1 for an F32 KV cache.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "edgelm/edgelm.h"

namespace {

int32_t argmax(const float* logits, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

void print_ids(const char* label, const std::vector<int32_t>& ids) {
  std::printf("%s:", label);
  for (int32_t id : ids) std::printf(" %d", id);
  std::printf("\n");
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t used = 0;
    ids.push_back(std::stoi(text.substr(pos), &used));
    pos += used + 1;  // the comma
  }
  return ids;
}

int run(const std::string& path, const std::string& prompt, int n_new,
        const std::string& logits_path, const std::vector<int32_t>& forced) {
  if (!forced.empty() && static_cast<int>(forced.size()) != n_new) {
    throw edgelm::Error("need N forced tokens");
  }
  edgelm::LoadOptions load;
  load.threads = 1;  // tiny models; no spinning workers on a busy machine
  auto model = edgelm::Model::load(path, load);
  const std::vector<int32_t> prompt_ids = model->tokenize(prompt, /*add_special=*/true);
  edgelm::SessionOptions options;
  options.context_length = static_cast<int>(prompt_ids.size()) + n_new + 16;
  if (std::getenv("INTEROP_KV_F32")) options.kv_type = "f32";
  edgelm::Session session(model, options);
  const int n_vocab = model->vocab_size();

  FILE* logits_file = std::fopen(logits_path.c_str(), "wb");
  if (!logits_file) throw edgelm::Error("cannot write " + logits_path);
  std::vector<int32_t> generated;
  const float* logits = session.evaluate(prompt_ids);
  for (int step = 0; step < n_new; ++step) {
    std::fwrite(logits, sizeof(float), n_vocab, logits_file);
    const int32_t token = argmax(logits, n_vocab);
    generated.push_back(token);
    if (step + 1 < n_new) logits = session.evaluate({forced.empty() ? token : forced[step]});
  }
  std::fclose(logits_file);
  print_ids("prompt", prompt_ids);
  print_ids("tokens", generated);
  std::printf("text: %s%s\n", prompt.c_str(), model->detokenize(generated).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    std::fprintf(stderr, "usage: edgelm_interop_greedy MODEL PROMPT N LOGITS_OUT [FORCED]\n");
    return 2;
  }
  try {
    return run(argv[1], argv[2], std::atoi(argv[3]), argv[4],
               argc == 6 ? parse_ids(argv[5]) : std::vector<int32_t>{});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "edgelm_interop_greedy: %s\n", e.what());
    return 1;
  }
}
