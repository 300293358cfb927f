// The statistics on hand-made logits, checked against formulas written out independently.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "evaluation/perplexity.h"
#include "kernels/ops.h"

namespace edgelm::evaluation {
namespace {

std::vector<double> log_probs_of(const std::vector<float>& logits) {
  std::vector<double> out(logits.size());
  log_softmax(logits.data(), static_cast<int>(logits.size()), out.data());
  return out;
}

// Deterministic pseudo-random logits in [-scale, scale].
std::vector<float> pseudo_random_logits(int n, uint32_t seed, float scale) {
  std::vector<float> v(n);
  for (float& x : v) {
    seed = seed * 1664525u + 1013904223u;
    x = scale * (static_cast<float>(seed >> 8) / 8388608.0f - 1.0f);
  }
  return v;
}

TEST(PerplexityMath, LogSoftmaxMatchesTheDefinition) {
  const std::vector<float> logits = {1.0f, 2.0f, 3.0f, -1.0f};
  long double z = 0;
  for (float l : logits) z += std::exp(static_cast<long double>(l));
  const std::vector<double> lp = log_probs_of(logits);
  for (size_t i = 0; i < logits.size(); ++i) {
    EXPECT_NEAR(lp[i], static_cast<double>(logits[i] - std::log(z)), 1e-12) << i;
  }
  EXPECT_NEAR(log_sum_exp(logits.data(), 4), static_cast<double>(std::log(z)), 1e-12);
  EXPECT_EQ(argmax(logits.data(), 4), 2);
}

TEST(PerplexityMath, LogSoftmaxIsStableForHugeLogits) {
  const std::vector<float> logits = {1000.0f, 1001.0f, -1000.0f};
  const std::vector<double> lp = log_probs_of(logits);
  // p = (1, e, ~0) / (1 + e)
  EXPECT_NEAR(lp[0], -std::log1p(std::exp(1.0)), 1e-12);
  EXPECT_NEAR(lp[1], -std::log1p(std::exp(-1.0)), 1e-12);
  EXPECT_TRUE(std::isfinite(lp[2]));
  EXPECT_LT(lp[2], -1999.0);
}

TEST(PerplexityMath, KlDivergenceOfHandMadeDistributions) {
  // P = (1/2, 1/4, 1/4), Q = (1/4, 1/2, 1/4): KL(P||Q) = 1/2 ln 2 - 1/4 ln 2 = ln(2) / 4.
  const std::vector<float> p_logits = {std::log(0.5f), std::log(0.25f), std::log(0.25f)};
  const std::vector<float> q_logits = {std::log(0.25f) + 7, std::log(0.5f) + 7,
                                       std::log(0.25f) + 7};  // shift: same distribution
  const std::vector<double> lp = log_probs_of(p_logits), lq = log_probs_of(q_logits);
  EXPECT_NEAR(kl_divergence(lp.data(), lq.data(), 3), std::log(2.0) / 4, 1e-7);
  EXPECT_NEAR(kl_divergence(lq.data(), lp.data(), 3), std::log(2.0) / 4, 1e-7);  // symmetric here
  EXPECT_EQ(kl_divergence(lp.data(), lp.data(), 3), 0.0);
}

TEST(PerplexityMath, TopKKlIsALowerBoundAndExactForTheWholeVocabulary) {
  const int n = 50;
  const std::vector<float> p_logits = pseudo_random_logits(n, 1, 4.0f);
  const std::vector<float> q_logits = pseudo_random_logits(n, 2, 4.0f);
  const std::vector<double> lp = log_probs_of(p_logits), lq = log_probs_of(q_logits);
  const double full = kl_divergence(lp.data(), lq.data(), n);
  ASSERT_GT(full, 0.1);
  std::vector<int32_t> ids(n), scratch;
  std::vector<float> top(n);
  double previous = 0;
  for (int k : {1, 5, 20, n}) {
    top_k_log_probs(lp.data(), n, k, ids.data(), top.data(), scratch);
    EXPECT_EQ(ids[0], argmax(p_logits.data(), n));
    for (int i = 1; i < k; ++i) EXPECT_GE(top[i - 1], top[i]);
    const double approx = kl_divergence_top_k(ids.data(), top.data(), k, lq.data());
    EXPECT_GE(approx, 0.0) << k;
    EXPECT_LE(approx, full + 1e-6) << k;
    EXPECT_GE(approx, previous - 1e-6) << k;  // more outcomes kept, tighter bound
    previous = approx;
    EXPECT_EQ(kl_divergence_top_k(ids.data(), top.data(), k, lp.data()), 0.0) << k;
  }
  EXPECT_NEAR(previous, full, 1e-5);  // k = n
}

TEST(PerplexityMath, PerplexityAndItsUncertainty) {
  MeanAccumulator nll;
  for (double x : {1.0, 2.0, 3.0}) nll.add(x);
  const Perplexity p = perplexity_from(nll);
  EXPECT_EQ(p.tokens, 3);
  EXPECT_DOUBLE_EQ(p.mean_nll, 2.0);
  // Population variance 2/3; standard error sqrt((2/3) / (3 - 1)).
  EXPECT_NEAR(p.mean_nll_uncertainty, std::sqrt(1.0 / 3.0), 1e-12);
  EXPECT_NEAR(p.value, std::exp(2.0), 1e-12);
  EXPECT_NEAR(p.uncertainty, std::exp(2.0) * std::sqrt(1.0 / 3.0), 1e-12);
}

TEST(PerplexityMath, Quantiles) {
  const std::vector<double> v = {0, 1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(quantile(v, 0.0), 0);
  EXPECT_DOUBLE_EQ(quantile(v, 0.5), 2);
  EXPECT_DOUBLE_EQ(quantile(v, 0.9), 3.6);
  EXPECT_DOUBLE_EQ(quantile(v, 1.0), 4);
  EXPECT_DOUBLE_EQ(quantile({}, 0.5), 0);
}

TEST(PerplexityMath, ComparisonStatistics) {
  ComparisonAccumulator acc;
  // nll_base, nll, kld, same_top1
  const TokenComparison rows[] = {
      {1.0, 1.5, 0.1, true}, {2.0, 2.0, 0.0, true}, {0.5, 1.0, 0.4, false}, {3.0, 2.5, 0.3, true}};
  for (const TokenComparison& t : rows) acc.add(t);
  const ComparisonStats s = acc.finish();
  EXPECT_EQ(s.model.tokens, 4);
  EXPECT_NEAR(s.base.value, std::exp(6.5 / 4), 1e-12);
  EXPECT_NEAR(s.model.value, std::exp(7.0 / 4), 1e-12);
  EXPECT_NEAR(s.delta_ppl, std::exp(7.0 / 4) - std::exp(6.5 / 4), 1e-12);
  EXPECT_NEAR(s.ppl_ratio, std::exp(0.5 / 4), 1e-12);
  // ln(ratio) is the mean of d = nll - nll_base = (0.5, 0, 0.5, -0.5): its standard error.
  const double d_mean = 0.125, d_var = (0.25 + 0 + 0.25 + 0.25) / 4 - d_mean * d_mean;
  EXPECT_NEAR(s.ppl_ratio_uncertainty, s.ppl_ratio * std::sqrt(d_var / 3), 1e-12);
  // PPL(model) - PPL(base): standard error of the mean of pa * nll - pb * nll_base.
  const double pa = s.model.value, pb = s.base.value;
  double g_sum = 0, g2_sum = 0;
  for (const TokenComparison& t : rows) {
    const double g = pa * t.nll - pb * t.nll_base;
    g_sum += g;
    g2_sum += g * g;
  }
  const double g_var = g2_sum / 4 - (g_sum / 4) * (g_sum / 4);
  EXPECT_NEAR(s.delta_ppl_uncertainty, std::sqrt(g_var / 3), 1e-12);
  EXPECT_NEAR(s.mean_kld, 0.2, 1e-12);
  const double kld_var = (0.01 + 0 + 0.16 + 0.09) / 4 - 0.04;
  EXPECT_NEAR(s.mean_kld_uncertainty, std::sqrt(kld_var / 3), 1e-12);
  EXPECT_DOUBLE_EQ(s.kld_max, 0.4);
  EXPECT_NEAR(s.kld_median, 0.2, 1e-12);
  EXPECT_DOUBLE_EQ(s.top1_agreement, 0.75);
  EXPECT_NEAR(s.top1_agreement_uncertainty, std::sqrt(0.75 * 0.25 / 3), 1e-12);
  double dp2 = 0;
  for (const TokenComparison& t : rows)
    dp2 += std::pow(std::exp(-t.nll) - std::exp(-t.nll_base), 2);
  EXPECT_NEAR(s.rms_delta_p, std::sqrt(dp2 / 4), 1e-12);
}

TEST(PerplexityMath, IdenticalModelsHaveNoDifferenceAndNoUncertainty) {
  ComparisonAccumulator acc;
  for (double x : {0.3, 1.7, 2.2, 0.9}) acc.add({x, x, 0.0, true});
  const ComparisonStats s = acc.finish();
  EXPECT_EQ(s.delta_ppl, 0.0);
  EXPECT_EQ(s.delta_ppl_uncertainty, 0.0);
  EXPECT_EQ(s.ppl_ratio_uncertainty, 0.0);
  EXPECT_EQ(s.ppl_ratio, 1.0);
  EXPECT_NEAR(s.nll_correlation, 1.0, 1e-12);
  EXPECT_EQ(s.top1_agreement, 1.0);
  EXPECT_EQ(s.kld_max, 0.0);
}

TEST(PerplexityMath, ChunkPlanFollowsLlamaCpp) {
  const ChunkPlan plan = plan_chunks(1000, 512, 1, {128, 0});
  EXPECT_EQ(plan.n_chunks, 7);  // 1000 / 128
  EXPECT_EQ(plan.first_scored, 64);
  EXPECT_EQ(plan.scored_per_chunk, 63);
  EXPECT_EQ(plan.scored_tokens(), 7 * 63);
  EXPECT_EQ(plan_chunks(1000, 512, 1, {128, 3}).n_chunks, 3);
  EXPECT_EQ(plan_chunks(1000, 512, 1, {128, 30}).n_chunks, 7);

  std::vector<int32_t> tokens(300);
  for (int i = 0; i < 300; ++i) tokens[i] = 10 + i;
  const ChunkPlan p2 = plan_chunks(300, 512, 1, {100, 0});
  const std::vector<int32_t> input = chunk_input(tokens, p2, 2);
  ASSERT_EQ(input.size(), 99u);
  EXPECT_EQ(input[0], 1);    // BOS over the chunk's first token
  EXPECT_EQ(input[1], 211);  // tokens[201]
  const ChunkPlan no_bos = plan_chunks(300, 512, -1, {100, 0});
  EXPECT_EQ(chunk_input(tokens, no_bos, 1)[0], 110);
}

TEST(PerplexityMath, ChunkPlanErrors) {
  EXPECT_THROW(plan_chunks(255, 512, 1, {128, 0}), Error);  // shorter than 2 x ctx
  EXPECT_NO_THROW(plan_chunks(256, 512, 1, {128, 0}));
  EXPECT_THROW(plan_chunks(5000, 512, 1, {1024, 0}), Error);  // larger than the model's
  EXPECT_THROW(plan_chunks(5000, 512, 1, {3, 0}), Error);
  EXPECT_THROW(plan_chunks(5000, 512, 1, {128, -1}), Error);
  try {
    plan_chunks(100, 512, 1, {128, 0});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("256"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace edgelm::evaluation
