// Hyper-parameters of a Llama-family decoder, independent of the file format.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgelm {

struct ModelConfig {
  std::string architecture;  // "llama", "mistral", "qwen2"
  std::string name;
  int dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int hidden_dim = 0;
  int vocab_size = 0;
  int context_length = 0;
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;
  bool rope_interleaved = false;  // see kernels/ops.h rope()
  bool tied_embeddings = false;
  bool attention_bias = false;  // Qwen2: q/k/v projections have biases
  int sliding_window = 0;       // Mistral: attend to at most this many positions (0: all)

  // RoPE scaling: "" (none), "linear" or "llama3".
  std::string rope_scaling;
  float rope_factor = 1.0f;
  float rope_low_freq_factor = 1.0f;
  float rope_high_freq_factor = 4.0f;
  int rope_original_context = 8192;

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

// Checks that the numbers are consistent (heads divide, positive sizes, ...);
// throws edgelm::Error naming the offending field and `source`.
void validate_config(const ModelConfig& config, const std::string& source);

// head_dim/2 inverse frequencies after rope scaling (HF's
// _compute_default_rope_parameters / _compute_llama3_parameters).
// freq_factors (GGUF rope_freqs.weight) divide the frequencies when given.
std::vector<float> rope_inverse_frequencies(const ModelConfig& config,
                                            const std::vector<float>& freq_factors = {});

}  // namespace edgelm
