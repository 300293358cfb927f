// Perplexity and model-vs-model comparison (KL divergence, top-1 agreement), computed the
// way llama.cpp's llama-perplexity does so numbers are comparable (docs/EVALUATION.md):
//
//   tokens = model.tokenize(text, add_special = true)      // BOS first if the model adds one
//   chunk i = tokens[i*ctx, (i+1)*ctx), its first token replaced by BOS (if the model has one)
//   score positions ctx/2 .. ctx-2 of each chunk: NLL of the token that follows
//   PPL = exp(mean NLL) +/- PPL * sqrt(var(NLL) / (N - 1))
//
// Everything is computed in double from float logits, with the row maximum subtracted.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "edgelm/edgelm.h"

namespace edgelm::evaluation {

// ------------------------------------------------------------------ math on one row of logits

// log(sum_i exp(logits[i])), computed in double after subtracting the maximum.
double log_sum_exp(const float* logits, int n);
// out[i] = log softmax(logits)[i] in double.
void log_softmax(const float* logits, int n, double* out);
// KL(P || Q) = sum_i P_i (log P_i - log Q_i) in nats, from log-probabilities.
double kl_divergence(const double* log_p, const double* log_q, int n);

// The k most probable tokens of log_p, most probable first (ties: lower id first).
// `scratch` is reused between calls to avoid allocating per token.
void top_k_log_probs(const double* log_p, int n, int k, int32_t* ids, float* log_probs,
                     std::vector<int32_t>& scratch);
// KL(P || Q) when only P's top-k (ids, log-probs as stored, float) is known: those k outcomes
// plus one bucket holding the rest of the mass. Merging outcomes never increases KL, so this is
// a lower bound of the full KL (exact, up to float rounding, when k is the whole vocabulary).
// Q's log-probs are rounded to float like P's so that KL(P || P) is exactly 0.
double kl_divergence_top_k(const int32_t* ids, const float* base_log_probs, int k,
                           const double* log_q);

// ------------------------------------------------------------------ statistics

// Mean of per-token values and its standard error as llama.cpp computes it:
// sqrt((E[x^2] - E[x]^2) / (n - 1)).
class MeanAccumulator {
 public:
  void add(double x) {
    sum_ += x;
    sum_squares_ += x * x;
    ++count_;
  }
  int64_t count() const { return count_; }
  double sum() const { return sum_; }
  double mean() const;
  double variance() const;        // population variance E[x^2] - E[x]^2 (>= 0)
  double standard_error() const;  // 0 with fewer than 2 values

 private:
  double sum_ = 0, sum_squares_ = 0;
  int64_t count_ = 0;
};

struct Perplexity {
  int64_t tokens = 0;                             // scored tokens
  double mean_nll = 0, mean_nll_uncertainty = 0;  // nats per token
  double value = 0, uncertainty = 0;              // exp(mean_nll) and its standard error
};
Perplexity perplexity_from(const MeanAccumulator& nll);

// Value at quantile q in [0, 1] of `sorted` (ascending), linearly interpolated; 0 if empty.
double quantile(const std::vector<double>& sorted, double q);

// One scored position compared between a base model and a model.
struct TokenComparison {
  double nll_base = 0, nll = 0;  // -log p(actual next token)
  double kld = 0;                // KL(base || model) over the vocabulary
  bool same_top1 = false;        // the two argmax tokens agree
};

struct ComparisonStats {
  Perplexity base, model;
  double nll_correlation = 0;                       // Pearson correlation of per-token NLLs
  double ppl_ratio = 0, ppl_ratio_uncertainty = 0;  // PPL(model) / PPL(base)
  double delta_ppl = 0, delta_ppl_uncertainty = 0;  // PPL(model) - PPL(base)
  double mean_kld = 0, mean_kld_uncertainty = 0;
  double kld_median = 0, kld_p90 = 0, kld_p99 = 0, kld_p999 = 0, kld_max = 0;
  double top1_agreement = 0, top1_agreement_uncertainty = 0;  // fractions in [0, 1]
  double mean_delta_p = 0, rms_delta_p = 0;  // p_model - p_base of the actual next token
};

class ComparisonAccumulator {
 public:
  void add(const TokenComparison& t);
  int64_t count() const { return nll_.count(); }
  double mean_kld() const { return kld_.mean(); }
  double model_perplexity() const;
  ComparisonStats finish() const;  // delta-method uncertainties (docs/EVALUATION.md)

 private:
  MeanAccumulator nll_, nll_base_, kld_, same_top1_, delta_p_;
  MeanAccumulator nll_diff_;          // nll - nll_base: exactly 0 for identical models
  double sum_nll_product_ = 0;        // sum of nll * nll_base, for the correlation
  double sum_diff_base_product_ = 0;  // sum of (nll - nll_base) * nll_base
  std::vector<double> klds_;          // for the percentiles
};

// ------------------------------------------------------------------ chunking

struct PerplexityOptions {
  int context = 512;   // tokens per chunk (llama.cpp's --ctx-size)
  int max_chunks = 0;  // 0: every whole chunk of the text
  // KV cache of the evaluated model ("f16", "f32", "q8_0"); a base model of a
  // comparison always uses the default F16, so its effect shows in the KLD.
  std::string kv_type = "f16";
};

struct ChunkPlan {
  int64_t text_tokens = 0;  // tokens of the whole text
  int context = 0;          // tokens per chunk
  int n_chunks = 0;
  int first_scored = 0;      // context / 2: positions [first_scored, context - 1) are scored
  int scored_per_chunk = 0;  // context - 1 - first_scored
  int32_t bos = -1;          // written over the first token of every chunk; -1: none
  int64_t scored_tokens() const { return static_cast<int64_t>(n_chunks) * scored_per_chunk; }
};

// Tokenizes a text as llama.cpp's perplexity does (special tokens added, so BOS first when the
// model's tokenizer adds one).
std::vector<int32_t> tokenize_text(const Model& model, const std::string& text);
// The BOS token to start every chunk with, or -1 when the model's tokenizer adds none.
int32_t chunk_bos_token(const Model& model);
// Throws edgelm::Error if the context is < 4 or larger than the model's, or if the text has
// fewer than 2 * context tokens.
ChunkPlan plan_chunks(int64_t text_tokens, int model_context, int32_t bos,
                      const PerplexityOptions& options);
// The tokens the model sees for chunk i (context - 1 of them: the last one is never needed).
std::vector<int32_t> chunk_input(const std::vector<int32_t>& tokens, const ChunkPlan& plan,
                                 int chunk);

// ------------------------------------------------------------------ drivers

struct EvalProgress {
  int chunks_done = 0, n_chunks = 0;
  double perplexity = 0;  // running PPL of the (compared) model
  double mean_kld = -1;   // running mean KLD; < 0 when not comparing
};
using ProgressCallback = std::function<void(const EvalProgress&)>;

struct PerplexityResult {
  ChunkPlan plan;
  Perplexity ppl;
  std::vector<double> running_perplexity;  // PPL after each chunk (llama.cpp's [1]x,[2]y,...)
  double seconds = 0;
};

struct ComparisonResult {
  ChunkPlan plan;
  ComparisonStats stats;
  std::vector<double> running_perplexity;  // of the model
  int base_top_k = 0;  // 0: full base distributions; k: base top-k from a file (KLD lower bound)
  double seconds = 0;
};

PerplexityResult evaluate_perplexity(const std::shared_ptr<const Model>& model,
                                     const std::vector<int32_t>& tokens,
                                     const PerplexityOptions& options,
                                     const ProgressCallback& progress = nullptr);

// KL(base || model) etc. chunk by chunk, both models loaded. Throws edgelm::Error if the
// vocabulary sizes differ. `tokens` come from tokenize_text (the two tokenizers must agree:
// see tokenize_shared_text).
ComparisonResult compare_models(const std::shared_ptr<const Model>& base,
                                const std::shared_ptr<const Model>& model,
                                const std::vector<int32_t>& tokens,
                                const PerplexityOptions& options,
                                const ProgressCallback& progress = nullptr);
// Tokenizes with both models and throws edgelm::Error naming the first differing token if the
// tokenizers disagree, or if the vocabulary sizes differ.
std::vector<int32_t> tokenize_shared_text(const Model& base, const Model& model,
                                          const std::string& text);

// Perplexity of the base model that also writes, for every scored token, the NLL of the actual
// next token and the base's top_k log-probabilities to `path` (format: log_probs_file.h).
PerplexityResult save_base_log_probs(const std::shared_ptr<const Model>& base,
                                     const std::vector<int32_t>& tokens,
                                     const PerplexityOptions& options, int top_k,
                                     const std::string& path,
                                     const ProgressCallback& progress = nullptr);
// Compares `model` with a file written by save_base_log_probs; the tokens, context and BOS
// handling come from the file. max_chunks > 0 limits the chunks used.
ComparisonResult compare_with_saved(const std::shared_ptr<const Model>& model,
                                    const std::string& path, int max_chunks = 0,
                                    const ProgressCallback& progress = nullptr);

}  // namespace edgelm::evaluation
