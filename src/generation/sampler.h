// Token sampling: penalties, then top-k, top-p, min-p, temperature, then a
// seeded draw (llama.cpp's order). Buffers are allocated once per vocab size.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "edgelm/edgelm.h"

namespace edgelm {

class Sampler {
 public:
  Sampler(const SamplingParams& params, int vocab_size);

  // Picks the next token from logits (vocab_size floats; modified in place by
  // the penalties). `history` is every token so far (prompt + generated).
  int32_t sample(float* logits, const std::vector<int32_t>& history);

 private:
  void apply_penalties(float* logits, const std::vector<int32_t>& history);

  SamplingParams params_;
  int vocab_size_;
  std::mt19937_64 rng_;
  struct Candidate {
    float logit;
    int32_t token;
  };
  std::vector<Candidate> candidates_;
  std::vector<float> probs_;
  std::vector<int32_t> counts_;  // per-token counts in the penalty window
};

}  // namespace edgelm
