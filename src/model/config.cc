#include "model/config.h"

#include <cmath>

#include "util/error.h"

namespace edgelm {

void validate_config(const ModelConfig& c, const std::string& source) {
  auto require = [&](bool ok, const char* what) {
    if (!ok) fail(source, ": invalid model config: ", what);
  };
  require(c.dim > 0 && c.dim <= 65536, "hidden size must be in 1..65536");
  require(c.n_layers > 0 && c.n_layers <= 1024, "layer count must be in 1..1024");
  require(c.n_heads > 0 && c.n_heads <= 1024, "head count must be in 1..1024");
  require(c.n_kv_heads > 0 && c.n_kv_heads <= c.n_heads, "kv head count must be in 1..heads");
  require(c.n_heads % c.n_kv_heads == 0, "head count must be a multiple of the kv head count");
  require(c.head_dim > 0 && c.head_dim % 2 == 0 && c.head_dim <= 1024,
          "head_dim must be even and in 2..1024");
  require(c.hidden_dim > 0 && c.hidden_dim <= 1 << 20, "intermediate size must be in 1..2^20");
  require(c.vocab_size > 0 && c.vocab_size <= 1 << 22, "vocab size must be in 1..2^22");
  require(c.context_length > 0 && c.context_length <= 1 << 24, "context length must be in 1..2^24");
  require(c.rope_theta > 0 && std::isfinite(c.rope_theta), "rope theta must be positive");
  require(c.rms_eps > 0 && c.rms_eps < 1, "rms_norm_eps must be in (0, 1)");
  require(c.rope_factor > 0, "rope scaling factor must be positive");
  if (c.rope_scaling == "llama3") {
    require(c.rope_high_freq_factor > c.rope_low_freq_factor,
            "llama3 rope scaling needs high_freq_factor > low_freq_factor");
    require(c.rope_original_context > 0, "llama3 rope scaling needs original context > 0");
  }
}

std::vector<float> rope_inverse_frequencies(const ModelConfig& c,
                                            const std::vector<float>& freq_factors) {
  const int half = c.head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    // HF computes this in float32: base ** (arange(0, dim, 2).float() / dim).
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    inv_freq[i] = 1.0f / std::pow(c.rope_theta, exponent);
  }
  if (c.rope_scaling == "linear") {
    for (float& f : inv_freq) f /= c.rope_factor;
  } else if (c.rope_scaling == "llama3") {
    const float low_freq_wavelen = c.rope_original_context / c.rope_low_freq_factor;
    const float high_freq_wavelen = c.rope_original_context / c.rope_high_freq_factor;
    for (float& f : inv_freq) {
      const float wavelen = 2.0f * static_cast<float>(M_PI) / f;
      if (wavelen > low_freq_wavelen) {
        f = f / c.rope_factor;
      } else if (wavelen >= high_freq_wavelen) {
        const float smooth = (c.rope_original_context / wavelen - c.rope_low_freq_factor) /
                             (c.rope_high_freq_factor - c.rope_low_freq_factor);
        f = (1.0f - smooth) * f / c.rope_factor + smooth * f;
      }
    }
  }
  if (!freq_factors.empty()) {
    if (static_cast<int>(freq_factors.size()) != half) {
      fail("rope_freqs has ", freq_factors.size(), " values, expected head_dim/2 = ", half);
    }
    for (int i = 0; i < half; ++i) inv_freq[i] /= freq_factors[i];
  }
  return inv_freq;
}

}  // namespace edgelm
