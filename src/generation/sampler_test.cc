#include "generation/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

namespace edgelm {
namespace {

std::vector<float> logits_of(std::initializer_list<float> values) {
  return values;
}

TEST(Sampler, GreedyPicksArgmax) {
  Sampler s(SamplingParams::greedy(), 5);
  auto l = logits_of({0.1f, 2.0f, -1.0f, 1.9f, 0.0f});
  EXPECT_EQ(s.sample(l.data(), {}), 1);
}

TEST(Sampler, TopKOfOneIsGreedyAtAnyTemperature) {
  SamplingParams p;
  p.temperature = 5.0f;
  p.top_k = 1;
  Sampler s(p, 4);
  for (int i = 0; i < 50; ++i) {
    auto l = logits_of({0.5f, 0.4f, 0.7f, 0.1f});
    EXPECT_EQ(s.sample(l.data(), {}), 2);
  }
}

// Top-k keeps exactly the k highest logits, the lower token first among equal
// ones: at a temperature that makes the kept ones about equally likely, 4000
// draws hit every one of them and nothing else (a vocabulary of 49152 with
// many ties, and a small one with a tie across the cut).
TEST(Sampler, TopKKeepsTheKHighestLowerTokensFirstOnTies) {
  SamplingParams p;
  p.temperature = 1000.0f;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  {
    p.top_k = 3;
    Sampler s(p, 6);
    std::map<int32_t, int> seen;
    for (int i = 0; i < 2000; ++i) {
      auto l = logits_of({1, 5, 5, 3, 5, 5});
      ++seen[s.sample(l.data(), {})];
    }
    EXPECT_EQ(seen.size(), 3u);
    EXPECT_TRUE(seen.count(1) && seen.count(2) && seen.count(4));
  }
  p.top_k = 40;
  const int vocab = 49152;
  std::vector<float> logits(vocab);
  uint32_t state = 7;
  for (float& v : logits) {  // values on a 0.25 grid: many ties
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>((state >> 8) % 64) * 0.25f;
  }
  std::vector<int32_t> order(vocab);
  for (int32_t t = 0; t < vocab; ++t) order[t] = t;
  // (std::sort with the tie order spelled out: libstdc++ 12's stable_sort trips ASan's
  // alloc-dealloc-mismatch check in its temporary buffer.)
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  const std::set<int32_t> expected(order.begin(), order.begin() + 40);
  Sampler s(p, vocab);
  std::set<int32_t> seen;
  for (int i = 0; i < 4000; ++i) {
    std::vector<float> l = logits;
    seen.insert(s.sample(l.data(), {}));
  }
  EXPECT_EQ(seen, expected);
}

TEST(Sampler, SameSeedSameSequence) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 42;
  Sampler a(p, 6), b(p, 6);
  p.seed = 43;
  Sampler c(p, 6);
  int differences = 0;
  for (int i = 0; i < 100; ++i) {
    auto la = logits_of({0, 0, 0, 0, 0, 0});
    auto lb = la, lc = la;
    const int ta = a.sample(la.data(), {});
    EXPECT_EQ(ta, b.sample(lb.data(), {}));
    differences += ta != c.sample(lc.data(), {});
  }
  EXPECT_GT(differences, 10);  // another seed gives another sequence
}

TEST(Sampler, FrequenciesFollowSoftmaxAtTemperature) {
  SamplingParams p;
  p.temperature = 0.5f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  Sampler s(p, 3);
  const float raw[3] = {1.0f, 0.5f, 0.0f};
  double expected[3], sum = 0;
  for (int i = 0; i < 3; ++i) sum += expected[i] = std::exp(raw[i] / 0.5);
  std::map<int, int> counts;
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) {
    std::vector<float> l(raw, raw + 3);
    ++counts[s.sample(l.data(), {})];
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(counts[i] / static_cast<double>(draws), expected[i] / sum, 0.015) << "token " << i;
  }
}

TEST(Sampler, TopPKeepsSmallestSetReachingP) {
  // probs ~ 0.64, 0.24, 0.09, 0.03: top_p 0.8 keeps the first two only.
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 0.8f;
  p.min_p = 0.0f;
  Sampler s(p, 4);
  for (int i = 0; i < 2000; ++i) {
    auto l = logits_of({3.0f, 2.0f, 1.0f, 0.0f});
    EXPECT_LT(s.sample(l.data(), {}), 2);
  }
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.2f;  // keeps tokens with p >= 0.2 * p_max
  Sampler s(p, 3);
  for (int i = 0; i < 2000; ++i) {
    auto l = logits_of({2.0f, 1.0f, -2.0f});  // p ratio of token 2 to token 0 is e^-4
    EXPECT_NE(s.sample(l.data(), {}), 2);
  }
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  SamplingParams p = SamplingParams::greedy();
  p.repetition_penalty = 2.0f;
  Sampler s(p, 3);
  // Token 0 was seen: 3.0 -> 1.5 < 2.0, so token 1 wins.
  auto l = logits_of({3.0f, 2.0f, -1.0f});
  EXPECT_EQ(s.sample(l.data(), {0}), 1);
  EXPECT_FLOAT_EQ(l[0], 1.5f);
  auto l2 = logits_of({-1.0f, -1.5f, -3.0f});
  EXPECT_EQ(s.sample(l2.data(), {0}), 1);  // -1 * 2 = -2 < -1.5
  EXPECT_FLOAT_EQ(l2[0], -2.0f);
}

TEST(Sampler, FrequencyAndPresencePenalties) {
  SamplingParams p = SamplingParams::greedy();
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  Sampler s(p, 3);
  auto l = logits_of({3.0f, 2.0f, 0.0f});
  s.sample(l.data(), {0, 0, 1});
  EXPECT_FLOAT_EQ(l[0], 3.0f - 2 * 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(l[1], 2.0f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(l[2], 0.0f);
}

TEST(Sampler, PenaltyWindowOnlyCoversLastN) {
  SamplingParams p = SamplingParams::greedy();
  p.presence_penalty = 1.0f;
  p.penalty_last_n = 2;
  Sampler s(p, 3);
  auto l = logits_of({1.0f, 1.0f, 1.0f});
  s.sample(l.data(), {0, 1, 2, 2});
  EXPECT_FLOAT_EQ(l[0], 1.0f);  // outside the window
  EXPECT_FLOAT_EQ(l[1], 1.0f);
  EXPECT_FLOAT_EQ(l[2], 0.0f);
}

TEST(Sampler, RejectsBadParameters) {
  SamplingParams p;
  p.top_p = 1.5f;
  EXPECT_THROW(Sampler(p, 3), Error);
  p = SamplingParams();
  p.repetition_penalty = 0.0f;
  EXPECT_THROW(Sampler(p, 3), Error);
  p = SamplingParams();
  p.temperature = NAN;
  EXPECT_THROW(Sampler(p, 3), Error);
}

}  // namespace
}  // namespace edgelm
