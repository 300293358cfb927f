// `edgelm info` and `edgelm tokenize`.
#include <cstdio>

#include "cli/commands.h"

namespace edgelm::cli {
namespace {

int info_command(const ModelOptions& m) {
  auto model = load_model_from_options(m);
  const ModelInfo& i = model->info();
  std::string dtypes;
  for (const std::string& d : i.dtypes) dtypes += (dtypes.empty() ? "" : ", ") + d;
  std::printf("path:            %s\n", i.path.c_str());
  std::printf("format:          %s\n", i.format.c_str());
  std::printf("architecture:    %s\n", i.architecture.c_str());
  std::printf("name:            %s\n", i.name.c_str());
  std::printf("parameters:      %lld (%.2f M)\n", static_cast<long long>(i.n_params),
              i.n_params / 1e6);
  std::printf("weight dtypes:   %s\n", dtypes.c_str());
  if (i.interleaved_matrices > 0) {
    std::printf("interleaved:     %d q4_0/q5_0/q4_K matrices re-laid for the decode kernels\n",
                i.interleaved_matrices);
  }
  if (!i.weight_prefetch.empty()) {
    std::printf("weight prefetch: %s (%s)\n", i.weight_prefetch.c_str(),
                i.weight_prefetch == "near"       ? "the last-level cache holds the weights"
                : i.weight_prefetch == "hardware" ? "left to the hardware prefetchers"
                                                  : "weights streamed from memory");
  }
  std::printf("size on disk:    %s (%lld bytes)\n", human_bytes(i.file_bytes).c_str(),
              static_cast<long long>(i.file_bytes));
  std::printf("context length:  %d\n", i.context_length);
  std::printf("layers:          %d\n", i.n_layers);
  std::printf("hidden size:     %d\n", i.dim);
  std::printf("ffn size:        %d\n", i.hidden_dim);
  std::printf("heads:           %d (kv %d, head_dim %d)\n", i.n_heads, i.n_kv_heads, i.head_dim);
  std::printf("vocab size:      %d\n", i.vocab_size);
  std::printf("rope theta:      %g\n", i.rope_theta);
  std::printf("tied embeddings: %s\n", i.tied_embeddings ? "yes" : "no");
  std::printf("tokenizer:       %s\n", i.tokenizer.c_str());
  std::printf("chat template:   %s\n", i.chat_template.c_str());
  return 0;
}

struct TokenizeFlags {
  ModelOptions model;
  std::string text;
  bool no_bos = false;
  bool special = false;
  bool ids_only = false;
};

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not one.
size_t utf8_sequence_length(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  }
  return len;
}

// Pieces are printed on one line each: control characters and bytes that are
// not valid UTF-8 on their own (parts of a character) are escaped.
std::string printable(const std::string& piece) {
  std::string out;
  for (size_t i = 0; i < piece.size();) {
    const auto ch = static_cast<unsigned char>(piece[i]);
    const size_t len = utf8_sequence_length(piece, i);
    if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (len == 0 || ch < 0x20 || ch == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", ch);
      out += buf;
    } else {
      out.append(piece, i, len);
      i += len;
      continue;
    }
    ++i;
  }
  return out;
}

int tokenize_command(const TokenizeFlags& f) {
  auto model = load_model_from_options(f.model);
  const std::vector<int32_t> ids = model->tokenize(f.text, !f.no_bos, f.special);
  if (f.ids_only) {
    for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? " " : "", ids[i]);
    std::printf("\n");
    return 0;
  }
  for (int32_t id : ids) {
    std::printf("%8d  '%s'\n", id, printable(model->token_piece(id)).c_str());
  }
  std::printf("%zu tokens\n", ids.size());
  return 0;
}

}  // namespace

void register_model_commands(CLI::App& app, std::vector<Command>& out) {
  auto info_flags = std::make_shared<ModelOptions>();
  CLI::App* info = app.add_subcommand("info", "print a model's architecture, size and tokenizer");
  info->add_option("model", info_flags->path, "model path (default: bundled stories260K)");
  add_model_options(info, *info_flags);
  out.push_back({info, [info_flags] { return info_command(*info_flags); }});

  auto tok_flags = std::make_shared<TokenizeFlags>();
  CLI::App* tok = app.add_subcommand("tokenize", "print the token ids and pieces of a text");
  add_model_options(tok, tok_flags->model);
  tok->add_option("text", tok_flags->text, "text to tokenize")->required();
  tok->add_flag("--no-bos", tok_flags->no_bos, "do not add BOS/EOS");
  tok->add_flag("--special", tok_flags->special, "parse special tokens written in the text");
  tok->add_flag("--ids", tok_flags->ids_only, "print only the ids, on one line");
  out.push_back({tok, [tok_flags] { return tokenize_command(*tok_flags); }});
}

}  // namespace edgelm::cli
