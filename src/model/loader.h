// Turns a checkpoint on disk (HF directory, GGUF file or llama2.c .bin) into a
// ModelConfig, a Vocab and canonical weight views into the memory-mapped files.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "formats/tensor.h"
#include "kernels/matmul.h"
#include "kernels/thread_pool.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace edgelm {

struct LayerWeights {
  const float* attn_norm = nullptr;
  WeightMatrix wq, wk, wv, wo;
  const float* bq = nullptr;  // Qwen2 biases (nullptr when absent)
  const float* bk = nullptr;
  const float* bv = nullptr;
  const float* ffn_norm = nullptr;
  WeightMatrix w_gate, w_up, w_down;
};

struct ModelWeights {
  WeightMatrix token_embedding;  // {vocab, dim}; rows read with dequantize_row
  std::vector<LayerWeights> layers;
  const float* output_norm = nullptr;
  WeightMatrix output;  // {vocab, dim}; same data as token_embedding when tied
};

// Sampling defaults a checkpoint ships (generation_config.json); NaN / -1 = unset.
struct GenerationDefaults {
  float temperature = -1, top_p = -1, repetition_penalty = -1;
  int top_k = -1;
};

struct LoadedModel {
  std::string path;
  std::string format;  // "gguf", "safetensors", "llama2c"
  int64_t file_bytes = 0;
  int64_t n_params = 0;
  int64_t weight_bytes_per_token = 0;  // bytes a decode step reads: all matrices + 1 embedding row
  std::vector<std::string> weight_dtypes;  // distinct types of the 2-D weights
  ModelConfig config;
  Vocab vocab;
  std::string chat_template_source;  // Jinja text from the checkpoint, if any
  GenerationDefaults generation_defaults;
  std::vector<float> rope_inv_freq;
  ModelWeights weights;
  // Counts re-layouts of the weights (interleave_matrices), so that state built
  // from them (the decode step's stages) knows to rebuild.
  int weights_version = 0;

  // Owners of the memory the views point into.
  std::vector<std::shared_ptr<const void>> keep_alive;
  std::vector<std::vector<float>> converted;  // small tensors converted to F32
};

// Re-lays the Q4_0, Q5_0, Q4_K and Q8_0 matrices of the layers and the output
// head (also when tied to the embedding table) whose rows are a multiple of 16
// in their interleaved layouts (Q4_0_X16, Q5_0_X16, Q4_K_X16, Q8_0_X16:
// kernels/quant_formats.h) in memory
// owned by the model, for the interleaved decode kernels, and releases their
// pages of the mapped file, so the resident size stays that of the file.
// Returns how many were re-laid.
// The copies go to one buffer of transparent huge pages where the system
// offers them, and `pool` (optional) shares the matrices out.
int interleave_matrices(LoadedModel& model, ThreadPool* pool = nullptr);

// Detects the format from the path (directory, GGUF magic, llama2.c header).
// Throws edgelm::Error naming the file and the problem.
std::unique_ptr<LoadedModel> load_model(const std::string& path);

}  // namespace edgelm
