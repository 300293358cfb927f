#include "generation/sampler.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "util/error.h"

namespace edgelm {

Sampler::Sampler(const SamplingParams& params, int vocab_size)
    : params_(params), vocab_size_(vocab_size), rng_(params.seed) {
  if (std::isnan(params.temperature)) fail("temperature must be a number");
  if (params.top_p < 0 || params.top_p > 1 || std::isnan(params.top_p)) {
    fail("top_p must be in [0, 1], got ", params.top_p);
  }
  if (params.min_p < 0 || params.min_p > 1 || std::isnan(params.min_p)) {
    fail("min_p must be in [0, 1], got ", params.min_p);
  }
  if (params.repetition_penalty <= 0 || std::isnan(params.repetition_penalty)) {
    fail("repetition_penalty must be > 0, got ", params.repetition_penalty);
  }
  candidates_.reserve(vocab_size);
  probs_.reserve(vocab_size);
  counts_.assign(vocab_size, 0);
}

void Sampler::apply_penalties(float* logits, const std::vector<int32_t>& history) {
  const bool active = params_.repetition_penalty != 1.0f || params_.frequency_penalty != 0.0f ||
                      params_.presence_penalty != 0.0f;
  if (!active || params_.penalty_last_n == 0 || history.empty()) return;
  const size_t window = params_.penalty_last_n < 0
                            ? history.size()
                            : std::min(history.size(), static_cast<size_t>(params_.penalty_last_n));
  const size_t start = history.size() - window;
  for (size_t i = start; i < history.size(); ++i) {
    if (history[i] >= 0 && history[i] < vocab_size_) ++counts_[history[i]];
  }
  for (size_t i = start; i < history.size(); ++i) {
    const int32_t t = history[i];
    if (t < 0 || t >= vocab_size_ || counts_[t] == 0) continue;
    float& logit = logits[t];
    // Same as llama.cpp: divide positive logits, multiply negative ones.
    logit = logit > 0 ? logit / params_.repetition_penalty : logit * params_.repetition_penalty;
    logit -= counts_[t] * params_.frequency_penalty + params_.presence_penalty;
    counts_[t] = 0;  // each distinct token is penalized once
  }
}

int32_t Sampler::sample(float* logits, const std::vector<int32_t>& history) {
  apply_penalties(logits, history);
  if (params_.temperature <= 0) {
    return static_cast<int32_t>(argmax(logits, vocab_size_));
  }

  auto by_logit = [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.token < b.token);
  };
  candidates_.clear();
  if (params_.top_k > 0 && params_.top_k < vocab_size_) {
    // The k best in a heap whose top is the worst of them: past the first k,
    // nearly every logit is below that and costs one comparison, where
    // copying and partially sorting the whole vocabulary cost 3.5x more. A
    // later token with an equal logit never displaces an earlier one, as in
    // by_logit; NaN logits never enter past the first k.
    const size_t k = static_cast<size_t>(params_.top_k);
    for (int32_t t = 0; t < static_cast<int32_t>(k); ++t) candidates_.push_back({logits[t], t});
    std::make_heap(candidates_.begin(), candidates_.end(), by_logit);
    float worst = candidates_.front().logit;
    for (int32_t t = static_cast<int32_t>(k); t < vocab_size_; ++t) {
      if (!(logits[t] > worst)) continue;
      std::pop_heap(candidates_.begin(), candidates_.end(), by_logit);
      candidates_.back() = {logits[t], t};
      std::push_heap(candidates_.begin(), candidates_.end(), by_logit);
      worst = candidates_.front().logit;
    }
    std::sort_heap(candidates_.begin(), candidates_.end(), by_logit);
  } else {
    for (int32_t t = 0; t < vocab_size_; ++t) candidates_.push_back({logits[t], t});
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }

  // Probabilities at temperature 1 decide the top-p / min-p cut (llama.cpp order).
  auto softmax_into_probs = [&](float temperature) {
    probs_.resize(candidates_.size());
    const float max_logit = candidates_[0].logit;
    double sum = 0;
    for (size_t i = 0; i < candidates_.size(); ++i) {
      probs_[i] = std::exp((candidates_[i].logit - max_logit) / temperature);
      sum += probs_[i];
    }
    for (float& p : probs_) p = static_cast<float>(p / sum);
  };
  softmax_into_probs(1.0f);
  if (params_.top_p < 1.0f) {
    double cumulative = 0;
    size_t cut = candidates_.size();
    for (size_t i = 0; i < candidates_.size(); ++i) {
      cumulative += probs_[i];
      if (cumulative >= params_.top_p) {
        cut = i + 1;
        break;
      }
    }
    candidates_.resize(cut);
    probs_.resize(cut);
  }
  if (params_.min_p > 0.0f) {
    const float threshold = probs_[0] * params_.min_p;
    size_t cut = 1;
    while (cut < candidates_.size() && probs_[cut] >= threshold) ++cut;
    candidates_.resize(cut);
  }
  softmax_into_probs(params_.temperature);

  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const double r = uniform(rng_);
  double cumulative = 0;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    cumulative += probs_[i];
    if (r < cumulative) return candidates_[i].token;
  }
  return candidates_.back().token;
}

}  // namespace edgelm
