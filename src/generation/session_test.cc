// Session behaviour on the bundled stories260K model (a real trained model).
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "edgelm/edgelm.h"

namespace edgelm {
namespace {

std::shared_ptr<Model> stories() {
  static std::shared_ptr<Model> model = [] {
    LoadOptions options;
    options.threads = 2;
    return Model::load(std::string(EDGELM_SOURCE_DIR) + "/models/stories260K/stories260K.bin",
                       options);
  }();
  return model;
}

GenerateOptions greedy(int max_tokens) {
  GenerateOptions o;
  o.max_tokens = max_tokens;
  o.sampling = SamplingParams::greedy();
  return o;
}

TEST(Session, BatchedAndIncrementalLogitsAgree) {
  auto model = stories();
  const auto tokens = model->tokenize("Once upon a time, there was a cat", true);
  Session batched(model), incremental(model);
  const std::vector<float> all = batched.evaluate_all(tokens);
  const int vocab = model->vocab_size();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const float* step = incremental.evaluate({tokens[i]});
    for (int v = 0; v < vocab; ++v) {
      // Batched (prefill) and single-token kernels sum in different orders (NEON's
      // differ by up to ~1.1e-4 here); cache bugs give errors of order 0.1-10.
      const float tolerance = 5e-4f;
      ASSERT_NEAR(step[v], all[i * vocab + v], tolerance) << "token " << i << " vocab " << v;
    }
  }
}

TEST(Session, CallbackTextConcatenatesToResult) {
  auto model = stories();
  Session s(model);
  std::string streamed;
  const auto r =
      s.generate(model->tokenize("Once upon a time", true), greedy(40), [&](const TokenEvent& e) {
        streamed += e.text;
        return true;
      });
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.completion_tokens, 40);
  EXPECT_EQ(r.finish_reason, FinishReason::kLength);
  EXPECT_EQ(model->detokenize(r.tokens), r.text);
}

TEST(Session, StopStringEndsGenerationAndIsNotEmitted) {
  auto model = stories();
  Session s(model);
  const auto prompt = model->tokenize("Once upon a time", true);
  const auto free_run = s.generate(prompt, greedy(60));
  const size_t dot = free_run.text.find('.');
  ASSERT_NE(dot, std::string::npos);
  s.reset();
  GenerateOptions o = greedy(60);
  o.stop = {"."};
  std::string streamed;
  const auto r = s.generate(prompt, o, [&](const TokenEvent& e) {
    streamed += e.text;
    return true;
  });
  EXPECT_EQ(r.finish_reason, FinishReason::kStop);
  EXPECT_EQ(r.text, free_run.text.substr(0, dot));
  EXPECT_EQ(streamed, r.text);
}

TEST(Session, CallbackCanCancel) {
  auto model = stories();
  Session s(model);
  int calls = 0;
  const auto r = s.generate(model->tokenize("Once", true), greedy(50),
                            [&](const TokenEvent&) { return ++calls < 5; });
  EXPECT_EQ(r.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(r.completion_tokens, 5);
}

TEST(Session, SameSeedSameTextDifferentSeedDifferentText) {
  auto model = stories();
  GenerateOptions o;
  o.max_tokens = 48;
  o.sampling.temperature = 1.0f;
  o.sampling.seed = 7;
  const auto prompt = model->tokenize("Once upon a time", true);
  Session a(model), b(model);
  const auto ra = a.generate(prompt, o);
  const auto rb = b.generate(prompt, o);
  EXPECT_EQ(ra.text, rb.text);
  b.reset();
  o.sampling.seed = 8;
  EXPECT_NE(b.generate(prompt, o).text, ra.text);
}

TEST(Session, PromptLongerThanContextIsAnErrorOrTruncated) {
  auto model = stories();
  Session s(model, 16);
  std::vector<int32_t> prompt(20, 100);
  prompt[0] = model->bos_token();
  EXPECT_THROW(s.generate(prompt, greedy(4)), Error);
  GenerateOptions o = greedy(4);
  o.truncate_prompt = true;
  const auto r = s.generate(prompt, o);
  EXPECT_EQ(r.prompt_truncated_tokens, 5);
  EXPECT_EQ(r.prompt_tokens, 15);
  EXPECT_EQ(r.completion_tokens, 1);  // one position left
  EXPECT_EQ(r.finish_reason, FinishReason::kLength);
}

TEST(Session, RewindReusesPrefix) {
  auto model = stories();
  const auto prompt = model->tokenize("Once upon a time, there was a dog", true);
  Session s(model);
  const auto first = s.generate(prompt, greedy(10));
  s.rewind(static_cast<int>(prompt.size()));
  const auto again = s.generate({}, greedy(10));
  EXPECT_EQ(first.text, again.text);
  EXPECT_THROW(s.rewind(100000), Error);
}

TEST(Session, SessionsShareOneModelAcrossThreads) {
  auto model = stories();
  const auto prompt = model->tokenize("Once upon a time", true);
  Session reference(model);
  const std::string expected = reference.generate(prompt, greedy(30)).text;
  std::vector<std::string> results(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      Session s(model);
      results[i] = s.generate(prompt, greedy(30)).text;
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_EQ(r, expected);
}

TEST(Session, EmbeddingIsNormalizedAndDeterministic) {
  auto model = stories();
  Session s(model);
  const auto a = s.embed(model->tokenize("The cat sat.", true));
  const auto b = s.embed(model->tokenize("The cat sat.", true));
  const auto c = s.embed(model->tokenize("A big red ball", true));
  ASSERT_EQ(static_cast<int>(a.size()), model->info().dim);
  double norm = 0, dot_ab = 0, dot_ac = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    norm += a[i] * a[i];
    dot_ab += a[i] * b[i];
    dot_ac += a[i] * c[i];
  }
  EXPECT_NEAR(norm, 1.0, 1e-5);
  EXPECT_NEAR(dot_ab, 1.0, 1e-5);
  EXPECT_LT(dot_ac, 0.9999);
}

TEST(Session, OutOfRangeTokenIsAnError) {
  auto model = stories();
  Session s(model);
  EXPECT_THROW(s.evaluate({model->vocab_size()}), Error);
  EXPECT_THROW(s.evaluate({-1}), Error);
}

}  // namespace
}  // namespace edgelm

namespace edgelm {
namespace {

// Every instruction set this CPU has gives the same greedy text on the real
// model, and a name it lacks is refused with the usable ones listed.
TEST(KernelIsa, EverySupportedIsaGeneratesTheSameText) {
  const std::string start = active_kernel_isa();
  const std::vector<std::string> isas = supported_kernel_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), "scalar");
  EXPECT_EQ(isas.back(), start);  // the best one is the default
  std::string reference;
  for (const std::string& isa : isas) {
    set_kernel_isa(isa);
    EXPECT_EQ(active_kernel_isa(), isa);
    Session session(stories());
    const std::string text =
        session.generate(stories()->tokenize("Once upon a time", true), greedy(24)).text;
    if (reference.empty()) reference = text;
    EXPECT_EQ(text, reference) << isa;
  }
  set_kernel_isa(start);
  try {
    set_kernel_isa("no-such-isa");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scalar"), std::string::npos) << e.what();
  }
  EXPECT_EQ(active_kernel_isa(), start);
}

}  // namespace
}  // namespace edgelm
