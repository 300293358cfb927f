#include "evaluation/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "evaluation/log_probs_file.h"
#include "kernels/ops.h"
#include "util/error.h"

namespace edgelm::evaluation {

// ------------------------------------------------------------------ math on one row of logits

double log_sum_exp(const float* logits, int n) {
  float max_logit = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - max_logit);
  return max_logit + std::log(sum);
}

void log_softmax(const float* logits, int n, double* out) {
  const double lse = log_sum_exp(logits, n);
  for (int i = 0; i < n; ++i) out[i] = static_cast<double>(logits[i]) - lse;
}

double kl_divergence(const double* log_p, const double* log_q, int n) {
  double kl = 0;
  for (int i = 0; i < n; ++i) kl += std::exp(log_p[i]) * (log_p[i] - log_q[i]);
  return kl;
}

void top_k_log_probs(const double* log_p, int n, int k, int32_t* ids, float* log_probs,
                     std::vector<int32_t>& scratch) {
  k = std::min(k, n);
  scratch.resize(n);
  for (int i = 0; i < n; ++i) scratch[i] = i;
  std::partial_sort(scratch.begin(), scratch.begin() + k, scratch.end(), [&](int32_t a, int32_t b) {
    return log_p[a] > log_p[b] || (log_p[a] == log_p[b] && a < b);
  });
  for (int i = 0; i < k; ++i) {
    ids[i] = scratch[i];
    log_probs[i] = static_cast<float>(log_p[scratch[i]]);
  }
}

double kl_divergence_top_k(const int32_t* ids, const float* base_log_probs, int k,
                           const double* log_q) {
  // Tails below this are rounding noise of the float log-probs: skip (P) or clamp (Q).
  constexpr double kTailFloor = 1e-9;
  double kl = 0, p_mass = 0, q_mass = 0;
  for (int i = 0; i < k; ++i) {
    const double lp = base_log_probs[i];
    const double lq = static_cast<float>(log_q[ids[i]]);  // rounded like the stored base
    const double p = std::exp(lp);
    kl += p * (lp - lq);
    p_mass += p;
    q_mass += std::exp(lq);
  }
  const double p_tail = 1.0 - p_mass;
  if (p_tail > kTailFloor) {
    const double q_tail = std::max(1.0 - q_mass, kTailFloor);
    kl += p_tail * (std::log(p_tail) - std::log(q_tail));
  }
  return kl;
}

// ------------------------------------------------------------------ statistics

double MeanAccumulator::mean() const {
  return count_ > 0 ? sum_ / count_ : 0.0;
}

double MeanAccumulator::variance() const {
  if (count_ == 0) return 0;
  const double m = mean();
  return std::max(0.0, sum_squares_ / count_ - m * m);
}

double MeanAccumulator::standard_error() const {
  return count_ > 1 ? std::sqrt(variance() / (count_ - 1)) : 0.0;
}

Perplexity perplexity_from(const MeanAccumulator& nll) {
  Perplexity p;
  p.tokens = nll.count();
  p.mean_nll = nll.mean();
  p.mean_nll_uncertainty = nll.standard_error();
  p.value = std::exp(p.mean_nll);
  p.uncertainty = p.value * p.mean_nll_uncertainty;  // delta method: d exp(x) = exp(x) dx
  return p;
}

double quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double pos = std::clamp(q, 0.0, 1.0) * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return sorted[lo] + frac * (sorted[hi] - sorted[lo]);
}

void ComparisonAccumulator::add(const TokenComparison& t) {
  nll_.add(t.nll);
  nll_base_.add(t.nll_base);
  kld_.add(t.kld);
  same_top1_.add(t.same_top1 ? 1.0 : 0.0);
  delta_p_.add(std::exp(-t.nll) - std::exp(-t.nll_base));
  nll_diff_.add(t.nll - t.nll_base);
  sum_nll_product_ += t.nll * t.nll_base;
  sum_diff_base_product_ += (t.nll - t.nll_base) * t.nll_base;
  klds_.push_back(t.kld);
}

double ComparisonAccumulator::model_perplexity() const {
  return std::exp(nll_.mean());
}

ComparisonStats ComparisonAccumulator::finish() const {
  ComparisonStats s;
  s.base = perplexity_from(nll_base_);
  s.model = perplexity_from(nll_);
  const int64_t n = nll_.count();
  if (n == 0) return s;

  // Both models score the same tokens, so their NLLs are correlated: the uncertainties of the
  // ratio and the difference come from the per-token differences d = nll - nll_base (delta
  // method), which also makes them exactly 0 for identical models.
  const double population_cov = sum_nll_product_ / n - nll_.mean() * nll_base_.mean();
  const double var_product = nll_.variance() * nll_base_.variance();
  s.nll_correlation = var_product > 0 ? population_cov / std::sqrt(var_product) : 1.0;

  s.ppl_ratio = std::exp(nll_diff_.mean());
  s.ppl_ratio_uncertainty = s.ppl_ratio * nll_diff_.standard_error();
  // PPL(model) - PPL(base) ~ mean of g = pa * nll - pb * nll_base = pa * d + (pa - pb) * nll_base.
  const double pa = s.model.value, pb = s.base.value;
  s.delta_ppl = pa - pb;
  if (n > 1) {
    const double cov_d_base = sum_diff_base_product_ / n - nll_diff_.mean() * nll_base_.mean();
    const double var_g = pa * pa * nll_diff_.variance() +
                         (pa - pb) * (pa - pb) * nll_base_.variance() +
                         2 * pa * (pa - pb) * cov_d_base;
    s.delta_ppl_uncertainty = std::sqrt(std::max(0.0, var_g) / (n - 1));
  }

  s.mean_kld = kld_.mean();
  s.mean_kld_uncertainty = kld_.standard_error();
  std::vector<double> sorted = klds_;
  std::sort(sorted.begin(), sorted.end());
  s.kld_median = quantile(sorted, 0.5);
  s.kld_p90 = quantile(sorted, 0.9);
  s.kld_p99 = quantile(sorted, 0.99);
  s.kld_p999 = quantile(sorted, 0.999);
  s.kld_max = sorted.back();

  s.top1_agreement = same_top1_.mean();
  s.top1_agreement_uncertainty =
      n > 1 ? std::sqrt(s.top1_agreement * (1 - s.top1_agreement) / (n - 1)) : 0.0;
  s.mean_delta_p = delta_p_.mean();
  s.rms_delta_p = std::sqrt(std::max(0.0, delta_p_.variance() + s.mean_delta_p * s.mean_delta_p));
  return s;
}

// ------------------------------------------------------------------ chunking

std::vector<int32_t> tokenize_text(const Model& model, const std::string& text) {
  return model.tokenize(text, /*add_special=*/true);
}

int32_t chunk_bos_token(const Model& model) {
  const int32_t bos = model.bos_token();
  if (bos < 0) return -1;
  const std::vector<int32_t> empty = model.tokenize("", true);
  return !empty.empty() && empty.front() == bos ? bos : -1;
}

ChunkPlan plan_chunks(int64_t text_tokens, int model_context, int32_t bos,
                      const PerplexityOptions& options) {
  const int ctx = options.context;
  if (ctx < 4) fail("perplexity: the context must be at least 4 tokens, got ", ctx);
  if (ctx > model_context) {
    fail("perplexity: a context of ", ctx, " tokens is larger than the model's context of ",
         model_context);
  }
  if (options.max_chunks < 0)
    fail("perplexity: the chunk count must be >= 0, got ", options.max_chunks);
  if (text_tokens < 2 * static_cast<int64_t>(ctx)) {
    fail("perplexity: the text has ", text_tokens, " tokens; at least ",
         2 * static_cast<int64_t>(ctx), " (2 x context ", ctx, ") are needed");
  }
  ChunkPlan plan;
  plan.text_tokens = text_tokens;
  plan.context = ctx;
  const int64_t whole = text_tokens / ctx;
  plan.n_chunks =
      static_cast<int>(options.max_chunks > 0 ? std::min<int64_t>(whole, options.max_chunks)
                                              : std::min<int64_t>(whole, 1 << 30));
  plan.first_scored = ctx / 2;
  plan.scored_per_chunk = ctx - 1 - plan.first_scored;
  plan.bos = bos;
  return plan;
}

std::vector<int32_t> chunk_input(const std::vector<int32_t>& tokens, const ChunkPlan& plan,
                                 int chunk) {
  const size_t start = static_cast<size_t>(chunk) * plan.context;
  std::vector<int32_t> input(tokens.begin() + start, tokens.begin() + start + plan.context - 1);
  if (plan.bos >= 0) input[0] = plan.bos;
  return input;
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Logits of the scored positions of one chunk: scored_per_chunk rows x vocab. The first half
// runs without keeping its logits, which halves the memory for big vocabularies.
std::vector<float> scored_logits(Session& session, const std::vector<int32_t>& tokens,
                                 const ChunkPlan& plan, int chunk) {
  const std::vector<int32_t> input = chunk_input(tokens, plan, chunk);
  session.reset();
  session.evaluate(std::vector<int32_t>(input.begin(), input.begin() + plan.first_scored));
  return session.evaluate_all(std::vector<int32_t>(input.begin() + plan.first_scored, input.end()));
}

// The actual next token of scored row r of chunk i.
int32_t target_token(const std::vector<int32_t>& tokens, const ChunkPlan& plan, int chunk, int r) {
  return tokens[static_cast<size_t>(chunk) * plan.context + plan.first_scored + r + 1];
}

void check_tokens(const std::vector<int32_t>& tokens, int vocab, const char* what) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      fail(what, ": token ", i, " has id ", tokens[i], ", outside the vocabulary of ", vocab);
    }
  }
}

void check_vocabularies(const Model& base, const Model& model) {
  if (base.vocab_size() != model.vocab_size()) {
    fail("KL divergence: the vocabularies differ: base model '", base.info().path, "' has ",
         base.vocab_size(), " tokens, model '", model.info().path, "' has ", model.vocab_size());
  }
}

}  // namespace

// ------------------------------------------------------------------ drivers

PerplexityResult evaluate_perplexity(const std::shared_ptr<const Model>& model,
                                     const std::vector<int32_t>& tokens,
                                     const PerplexityOptions& options,
                                     const ProgressCallback& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  PerplexityResult result;
  result.plan = plan_chunks(static_cast<int64_t>(tokens.size()), model->context_length(),
                            chunk_bos_token(*model), options);
  const ChunkPlan& plan = result.plan;
  const int vocab = model->vocab_size();
  check_tokens(tokens, vocab, "perplexity");
  Session session(model, SessionOptions{plan.context, options.kv_type});
  MeanAccumulator nll;
  for (int c = 0; c < plan.n_chunks; ++c) {
    const std::vector<float> logits = scored_logits(session, tokens, plan, c);
    for (int r = 0; r < plan.scored_per_chunk; ++r) {
      const float* row = logits.data() + static_cast<size_t>(r) * vocab;
      nll.add(log_sum_exp(row, vocab) - row[target_token(tokens, plan, c, r)]);
    }
    result.running_perplexity.push_back(std::exp(nll.mean()));
    if (progress) progress({c + 1, plan.n_chunks, result.running_perplexity.back(), -1});
  }
  result.ppl = perplexity_from(nll);
  result.seconds = seconds_since(t0);
  return result;
}

std::vector<int32_t> tokenize_shared_text(const Model& base, const Model& model,
                                          const std::string& text) {
  check_vocabularies(base, model);
  std::vector<int32_t> tokens = tokenize_text(model, text);
  const std::vector<int32_t> base_tokens = tokenize_text(base, text);
  const size_t n = std::min(tokens.size(), base_tokens.size());
  for (size_t i = 0; i <= n; ++i) {
    if (i == n && tokens.size() == base_tokens.size()) break;
    if (i == n || tokens[i] != base_tokens[i]) {
      fail("KL divergence: the tokenizers of base '", base.info().path, "' and model '",
           model.info().path, "' disagree at token ", i, " of the text (", base_tokens.size(),
           " vs ", tokens.size(), " tokens)");
    }
  }
  if (chunk_bos_token(base) != chunk_bos_token(model)) {
    fail("KL divergence: the base and the model use different BOS tokens");
  }
  return tokens;
}

ComparisonResult compare_models(const std::shared_ptr<const Model>& base,
                                const std::shared_ptr<const Model>& model,
                                const std::vector<int32_t>& tokens,
                                const PerplexityOptions& options,
                                const ProgressCallback& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  check_vocabularies(*base, *model);
  if (chunk_bos_token(*base) != chunk_bos_token(*model)) {
    fail("KL divergence: the base and the model use different BOS tokens");
  }
  ComparisonResult result;
  result.plan = plan_chunks(static_cast<int64_t>(tokens.size()),
                            std::min(base->context_length(), model->context_length()),
                            chunk_bos_token(*model), options);
  const ChunkPlan& plan = result.plan;
  const int vocab = model->vocab_size();
  check_tokens(tokens, vocab, "KL divergence");
  Session base_session(base, plan.context);
  Session session(model, SessionOptions{plan.context, options.kv_type});
  std::vector<double> log_p(vocab), log_q(vocab);
  ComparisonAccumulator acc;
  for (int c = 0; c < plan.n_chunks; ++c) {
    const std::vector<float> base_logits = scored_logits(base_session, tokens, plan, c);
    const std::vector<float> logits = scored_logits(session, tokens, plan, c);
    for (int r = 0; r < plan.scored_per_chunk; ++r) {
      const float* base_row = base_logits.data() + static_cast<size_t>(r) * vocab;
      const float* row = logits.data() + static_cast<size_t>(r) * vocab;
      log_softmax(base_row, vocab, log_p.data());
      log_softmax(row, vocab, log_q.data());
      const int32_t target = target_token(tokens, plan, c, r);
      TokenComparison t;
      t.nll_base = -log_p[target];
      t.nll = -log_q[target];
      t.kld = kl_divergence(log_p.data(), log_q.data(), vocab);
      t.same_top1 = argmax(base_row, vocab) == argmax(row, vocab);
      acc.add(t);
    }
    result.running_perplexity.push_back(acc.model_perplexity());
    if (progress) progress({c + 1, plan.n_chunks, acc.model_perplexity(), acc.mean_kld()});
  }
  result.stats = acc.finish();
  result.seconds = seconds_since(t0);
  return result;
}

PerplexityResult save_base_log_probs(const std::shared_ptr<const Model>& base,
                                     const std::vector<int32_t>& tokens,
                                     const PerplexityOptions& options, int top_k,
                                     const std::string& path, const ProgressCallback& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  const int vocab = base->vocab_size();
  if (top_k < 1) fail("--kl-top-k must be at least 1, got ", top_k);
  top_k = std::min(top_k, vocab);
  PerplexityResult result;
  result.plan = plan_chunks(static_cast<int64_t>(tokens.size()), base->context_length(),
                            chunk_bos_token(*base), options);
  const ChunkPlan& plan = result.plan;
  check_tokens(tokens, vocab, "perplexity");
  LogProbsWriter writer(path, plan, vocab, top_k, tokens);
  Session session(base, plan.context);
  std::vector<double> log_p(vocab);
  std::vector<int32_t> scratch;
  LogProbsChunk records;
  records.nll.resize(plan.scored_per_chunk);
  records.ids.resize(static_cast<size_t>(plan.scored_per_chunk) * top_k);
  records.log_probs.resize(records.ids.size());
  MeanAccumulator nll;
  for (int c = 0; c < plan.n_chunks; ++c) {
    const std::vector<float> logits = scored_logits(session, tokens, plan, c);
    for (int r = 0; r < plan.scored_per_chunk; ++r) {
      log_softmax(logits.data() + static_cast<size_t>(r) * vocab, vocab, log_p.data());
      const double token_nll = -log_p[target_token(tokens, plan, c, r)];
      nll.add(token_nll);
      records.nll[r] = static_cast<float>(token_nll);
      const size_t offset = static_cast<size_t>(r) * top_k;
      top_k_log_probs(log_p.data(), vocab, top_k, records.ids.data() + offset,
                      records.log_probs.data() + offset, scratch);
    }
    writer.write_chunk(records);
    result.running_perplexity.push_back(std::exp(nll.mean()));
    if (progress) progress({c + 1, plan.n_chunks, result.running_perplexity.back(), -1});
  }
  writer.commit();
  result.ppl = perplexity_from(nll);
  result.seconds = seconds_since(t0);
  return result;
}

ComparisonResult compare_with_saved(const std::shared_ptr<const Model>& model,
                                    const std::string& path, int max_chunks,
                                    const ProgressCallback& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  LogProbsReader reader(path);
  const int vocab = model->vocab_size();
  if (reader.vocab_size() != vocab) {
    fail("KL divergence: the vocabularies differ: base log-probs '", path, "' have ",
         reader.vocab_size(), " tokens, model '", model->info().path, "' has ", vocab);
  }
  if (reader.plan().bos != chunk_bos_token(*model)) {
    fail("KL divergence: '", path, "' was written with BOS ", reader.plan().bos, " but the model '",
         model->info().path, "' uses ", chunk_bos_token(*model));
  }
  ComparisonResult result;
  result.base_top_k = reader.top_k();
  const std::vector<int32_t>& tokens = reader.tokens();
  PerplexityOptions options;
  options.context = reader.plan().context;
  options.max_chunks =
      max_chunks > 0 ? std::min(max_chunks, reader.plan().n_chunks) : reader.plan().n_chunks;
  result.plan = plan_chunks(static_cast<int64_t>(tokens.size()), model->context_length(),
                            reader.plan().bos, options);
  const ChunkPlan& plan = result.plan;
  const int k = reader.top_k();
  Session session(model, plan.context);
  std::vector<double> log_q(vocab);
  LogProbsChunk records;
  ComparisonAccumulator acc;
  for (int c = 0; c < plan.n_chunks; ++c) {
    reader.read_chunk(records);
    const std::vector<float> logits = scored_logits(session, tokens, plan, c);
    for (int r = 0; r < plan.scored_per_chunk; ++r) {
      const float* row = logits.data() + static_cast<size_t>(r) * vocab;
      log_softmax(row, vocab, log_q.data());
      const size_t offset = static_cast<size_t>(r) * k;
      TokenComparison t;
      t.nll_base = records.nll[r];
      t.nll = -log_q[target_token(tokens, plan, c, r)];
      t.kld = kl_divergence_top_k(records.ids.data() + offset, records.log_probs.data() + offset, k,
                                  log_q.data());
      t.same_top1 = records.ids[offset] == argmax(row, vocab);
      acc.add(t);
    }
    result.running_perplexity.push_back(acc.model_perplexity());
    if (progress) progress({c + 1, plan.n_chunks, acc.model_perplexity(), acc.mean_kld()});
  }
  result.stats = acc.finish();
  result.seconds = seconds_since(t0);
  return result;
}

}  // namespace edgelm::evaluation
