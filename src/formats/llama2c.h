// llama2.c checkpoint (.bin): 7 int32 header then F32 weights in a fixed order.
// A negative vocab_size in the header means the classifier is stored separately
// (untied); positive means tied to the embedding.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "formats/tensor.h"
#include "util/mapped_file.h"

namespace edgelm {

struct Llama2cConfig {
  int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0;
  int vocab_size = 0, seq_len = 0;
  bool shared_classifier = true;
};

struct Llama2cFile {
  Llama2cConfig config;
  // Views named with GGUF's tensor names (token_embd.weight, blk.N.attn_q.weight,
  // ..., output_norm.weight, and output.weight when untied); Linear weights are
  // {out, in}. RoPE in these weights uses the interleaved (GGUF "norm") layout.
  std::vector<TensorView> tensors;
  std::shared_ptr<MappedFile> mapping;
};

// Throws edgelm::Error when the header is implausible or the file is too short
// for the weights the header describes.
Llama2cFile open_llama2c(const std::string& path);
// True if the file starts like a llama2.c checkpoint (used for format detection).
bool looks_like_llama2c(const std::string& path);

}  // namespace edgelm
