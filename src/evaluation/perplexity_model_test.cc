// Perplexity and KL divergence on the bundled stories260K model and the TinyStories sample.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "evaluation/log_probs_file.h"
#include "evaluation/perplexity.h"
#include "formats/test_util.h"

namespace edgelm::evaluation {
namespace {

namespace fs = std::filesystem;

const std::string kModelDir = std::string(EDGELM_SOURCE_DIR) + "/models/stories260K";

std::shared_ptr<Model> load(const std::string& path) {
  LoadOptions options;
  options.threads = 2;
  return Model::load(path, options);
}

std::shared_ptr<Model> stories() {
  static std::shared_ptr<Model> model = load(kModelDir + "/stories260K.bin");
  return model;
}

std::shared_ptr<Model> stories_gguf() {
  static std::shared_ptr<Model> model = load(kModelDir + "/stories260K.gguf");
  return model;
}

const std::string& tinystories_text() {
  static const std::string text = [] {
    std::ifstream in(std::string(EDGELM_SHARED_DIR) +
                     "/data/tinystories-sample/TinyStories-valid.txt");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }();
  return text;
}

using edgelm::testing::TempDir;

// Writes a small llama2.c checkpoint with pseudo-random weights and the stories260K tokenizer
// (512 tokens) beside it; vocab_size >= 512.
std::string write_random_model(const TempDir& dir, int vocab_size, uint32_t seed) {
  const int dim = 16, hidden = 32, layers = 1, heads = 2, kv_heads = 2, seq_len = 256;
  const int32_t header[7] = {dim, hidden, layers, heads, kv_heads, vocab_size, seq_len};
  const int head_size = dim / heads, kv_dim = kv_heads * head_size;
  std::vector<float> w;
  auto random = [&](size_t n, float scale) {
    for (size_t i = 0; i < n; ++i) {
      seed = seed * 1664525u + 1013904223u;
      w.push_back(scale * (static_cast<float>(seed >> 8) / 8388608.0f - 1.0f));
    }
  };
  auto ones = [&](size_t n) { w.insert(w.end(), n, 1.0f); };
  random(static_cast<size_t>(vocab_size) * dim, 1.0f);  // token embedding (tied classifier)
  ones(layers * dim);                                   // attention norms
  random(layers * dim * dim, 0.3f);                     // wq
  random(layers * dim * kv_dim, 0.3f);                  // wk
  random(layers * dim * kv_dim, 0.3f);                  // wv
  random(layers * dim * dim, 0.3f);                     // wo
  ones(layers * dim);                                   // ffn norms
  random(layers * hidden * dim, 0.3f);                  // w1
  random(layers * dim * hidden, 0.3f);                  // w2
  random(layers * hidden * dim, 0.3f);                  // w3
  ones(dim);                                            // final norm
  w.insert(w.end(), static_cast<size_t>(seq_len) * head_size, 0.0f);  // unused freq_cis
  const std::string path = dir.file("random" + std::to_string(vocab_size) + ".bin");
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header), sizeof(header));
  out.write(reinterpret_cast<const char*>(w.data()), static_cast<std::streamsize>(w.size() * 4));
  out.close();
  fs::copy_file(kModelDir + "/tok512.bin", dir.file("tokenizer.bin"),
                fs::copy_options::overwrite_existing);
  return path;
}

PerplexityOptions ctx(int context, int max_chunks = 0) {
  PerplexityOptions o;
  o.context = context;
  o.max_chunks = max_chunks;
  return o;
}

TEST(Perplexity, Stories260KOnTinyStoriesIsPlausible) {
  const std::vector<int32_t> tokens = tokenize_text(*stories(), tinystories_text());
  ASSERT_GT(tokens.size(), 10000u);
  EXPECT_EQ(tokens[0], stories()->bos_token());
  for (int context : {128, 256}) {
    int calls = 0;
    const PerplexityResult r =
        evaluate_perplexity(stories(), tokens, ctx(context), [&](const EvalProgress& p) {
          ++calls;
          EXPECT_EQ(p.chunks_done, calls);
          EXPECT_TRUE(std::isfinite(p.perplexity));
        });
    EXPECT_EQ(r.plan.n_chunks, static_cast<int>(tokens.size() / context));
    EXPECT_EQ(calls, r.plan.n_chunks);
    EXPECT_EQ(r.ppl.tokens, r.plan.n_chunks * (context - 1 - context / 2));
    ASSERT_EQ(r.running_perplexity.size(), static_cast<size_t>(r.plan.n_chunks));
    EXPECT_NEAR(r.running_perplexity.back(), r.ppl.value, 1e-9 * r.ppl.value);
    // Measured: 5.86 (ctx 128) and 6.21 (ctx 256; chunks span several short stories);
    // a uniform guess over the 512 tokens would give 512.
    EXPECT_TRUE(std::isfinite(r.ppl.value));
    EXPECT_GT(r.ppl.value, 3.0) << context;
    EXPECT_LT(r.ppl.value, 9.0) << context;
    EXPECT_GT(r.ppl.uncertainty, 0.0);
    EXPECT_LT(r.ppl.uncertainty, 0.05 * r.ppl.value);
  }
}

// Recomputes the first chunk's NLL directly from Session::evaluate_all on the whole chunk.
TEST(Perplexity, FirstChunkMatchesADirectComputation) {
  const int context = 64;
  std::vector<int32_t> tokens = tokenize_text(*stories(), tinystories_text());
  tokens.resize(3 * context);
  const PerplexityResult r = evaluate_perplexity(stories(), tokens, ctx(context, 1));
  Session session(stories());
  const std::vector<float> logits =
      session.evaluate_all(std::vector<int32_t>(tokens.begin(), tokens.begin() + context));
  const int vocab = stories()->vocab_size();
  double sum = 0;
  int n = 0;
  for (int pos = context / 2; pos < context - 1; ++pos) {
    const float* row = logits.data() + static_cast<size_t>(pos) * vocab;
    long double z = 0;
    for (int v = 0; v < vocab; ++v) z += std::exp(static_cast<long double>(row[v]));
    sum += static_cast<double>(std::log(z) - row[tokens[pos + 1]]);
    ++n;
  }
  EXPECT_EQ(r.ppl.tokens, n);
  EXPECT_NEAR(r.ppl.mean_nll, sum / n, 1e-4);
}

TEST(Perplexity, ModelAgainstItselfHasZeroKl) {
  const std::vector<int32_t> tokens = tokenize_text(*stories(), tinystories_text());
  const ComparisonResult r = compare_models(stories(), stories(), tokens, ctx(128, 20));
  const ComparisonStats& s = r.stats;
  EXPECT_EQ(s.model.tokens, 20 * 63);
  EXPECT_EQ(s.mean_kld, 0.0);
  EXPECT_EQ(s.kld_max, 0.0);
  EXPECT_EQ(s.top1_agreement, 1.0);
  EXPECT_EQ(s.delta_ppl, 0.0);
  EXPECT_EQ(s.base.value, s.model.value);
  EXPECT_EQ(r.base_top_k, 0);
}

TEST(Perplexity, BinAndGgufOfTheSameWeightsAgree) {
  const std::vector<int32_t> tokens =
      tokenize_shared_text(*stories(), *stories_gguf(), tinystories_text());
  const ComparisonResult r = compare_models(stories(), stories_gguf(), tokens, ctx(256, 20));
  const ComparisonStats& s = r.stats;
  EXPECT_EQ(s.model.tokens, 20 * 127);
  EXPECT_GE(s.mean_kld, -1e-9);
  EXPECT_LT(s.mean_kld, 1e-7);
  EXPECT_LT(s.kld_max, 1e-5);
  EXPECT_EQ(s.top1_agreement, 1.0);
  EXPECT_NEAR(s.delta_ppl, 0.0, 1e-4);
}

// --kv-type reaches the evaluated model's session only: an F32 cache differs
// from the F16 base by rounding alone, and q8_0 is refused for head_dim 8.
TEST(Perplexity, KvTypeAppliesToTheEvaluatedModel) {
  const std::vector<int32_t> tokens = tokenize_text(*stories(), tinystories_text());
  PerplexityOptions options = ctx(128, 4);
  options.kv_type = "f32";
  const ComparisonResult r = compare_models(stories(), stories(), tokens, options);
  EXPECT_GT(r.stats.mean_kld, 0.0);
  EXPECT_LT(r.stats.mean_kld, 1e-4);
  options.kv_type = "q8_0";
  EXPECT_THROW(compare_models(stories(), stories(), tokens, options), Error);
  EXPECT_THROW(evaluate_perplexity(stories(), tokens, options), Error);
}

TEST(Perplexity, DifferentModelsHavePositiveKl) {
  TempDir dir;
  auto random = load(write_random_model(dir, 512, 7));
  const std::vector<int32_t> tokens = tokenize_shared_text(*stories(), *random, tinystories_text());
  const ComparisonResult r = compare_models(stories(), random, tokens, ctx(128, 4));
  EXPECT_GT(r.stats.mean_kld, 0.5);
  EXPECT_LT(r.stats.top1_agreement, 0.5);
  EXPECT_GT(r.stats.delta_ppl, 10.0);
  EXPECT_GE(r.stats.kld_max, r.stats.kld_p99);
  EXPECT_GE(r.stats.kld_p99, r.stats.kld_median);
}

TEST(Perplexity, SavedLogProbsRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("base.lp");
  const std::vector<int32_t> tokens = tokenize_text(*stories(), tinystories_text());
  const PerplexityResult saved = save_base_log_probs(stories(), tokens, ctx(128, 6), 16, path);
  const PerplexityResult direct = evaluate_perplexity(stories(), tokens, ctx(128, 6));
  EXPECT_NEAR(saved.ppl.value, direct.ppl.value, 1e-9 * direct.ppl.value);
  {
    LogProbsReader reader(path);
    EXPECT_EQ(reader.top_k(), 16);
    EXPECT_EQ(reader.plan().n_chunks, 6);
    EXPECT_EQ(reader.tokens(), std::vector<int32_t>(tokens.begin(), tokens.begin() + 6 * 128));
  }
  // Against itself: exactly zero, whatever the top-k.
  const ComparisonResult self = compare_with_saved(stories(), path);
  EXPECT_EQ(self.base_top_k, 16);
  EXPECT_EQ(self.stats.model.tokens, 6 * 63);
  EXPECT_EQ(self.stats.mean_kld, 0.0);
  EXPECT_EQ(self.stats.top1_agreement, 1.0);
  EXPECT_NEAR(self.stats.base.value, direct.ppl.value, 1e-5 * direct.ppl.value);
  EXPECT_NEAR(self.stats.model.value, direct.ppl.value, 1e-9 * direct.ppl.value);
  EXPECT_EQ(compare_with_saved(stories(), path, 2).stats.model.tokens, 2 * 63);
}

TEST(Perplexity, SavedLogProbsMatchTheTwoModelComparison) {
  TempDir dir;
  auto random = load(write_random_model(dir, 512, 7));
  const std::vector<int32_t> tokens = tokenize_text(*stories(), tinystories_text());
  const ComparisonResult both = compare_models(stories(), random, tokens, ctx(128, 3));
  const std::string full = dir.file("full.lp"), top4 = dir.file("top4.lp");
  save_base_log_probs(stories(), tokens, ctx(128, 3), 512, full);
  save_base_log_probs(stories(), tokens, ctx(128, 3), 4, top4);
  const ComparisonResult from_full = compare_with_saved(random, full);
  const ComparisonResult from_top4 = compare_with_saved(random, top4);
  EXPECT_NEAR(from_full.stats.mean_kld, both.stats.mean_kld, 1e-5 * both.stats.mean_kld);
  EXPECT_EQ(from_full.stats.top1_agreement, both.stats.top1_agreement);
  EXPECT_EQ(from_top4.stats.top1_agreement, both.stats.top1_agreement);
  EXPECT_NEAR(from_full.stats.delta_ppl, both.stats.delta_ppl, 1e-4 * both.stats.delta_ppl);
  EXPECT_LE(from_top4.stats.mean_kld, both.stats.mean_kld);  // a lower bound
  EXPECT_GT(from_top4.stats.mean_kld, 0.1 * both.stats.mean_kld);
}

TEST(Perplexity, ErrorsUsersCanCause) {
  // Text shorter than 2 x ctx.
  const std::vector<int32_t> few = tokenize_text(*stories(), "Once upon a time, there was a cat.");
  EXPECT_THROW(evaluate_perplexity(stories(), few, ctx(128)), Error);
  const std::vector<int32_t> tokens = tokenize_text(*stories(), tinystories_text());
  // A context larger than the model's (512).
  try {
    evaluate_perplexity(stories(), tokens, ctx(1024));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("512"), std::string::npos) << e.what();
  }
  EXPECT_THROW(compare_models(stories(), stories(), tokens, ctx(1024)), Error);
  EXPECT_THROW(save_base_log_probs(stories(), tokens, ctx(128), 0, "/nonexistent/x"), Error);
  // Tokens outside the vocabulary.
  std::vector<int32_t> bad = tokens;
  bad[300] = 100000;
  EXPECT_THROW(evaluate_perplexity(stories(), bad, ctx(128)), Error);
}

TEST(Perplexity, MismatchedVocabulariesAreRejected) {
  TempDir dir;
  auto other = load(write_random_model(dir, 600, 3));
  ASSERT_EQ(other->vocab_size(), 600);
  const std::vector<int32_t> tokens = tokenize_text(*stories(), tinystories_text());
  try {
    compare_models(stories(), other, tokens, ctx(128, 2));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vocabularies differ"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tokenize_shared_text(*stories(), *other, tinystories_text()), Error);
  const std::string path = dir.file("base.lp");
  save_base_log_probs(stories(), tokens, ctx(128, 2), 8, path);
  EXPECT_THROW(compare_with_saved(other, path), Error);
}

TEST(Perplexity, CorruptLogProbsFilesAreRejected) {
  TempDir dir;
  const std::string path = dir.file("base.lp");
  const std::vector<int32_t> tokens = tokenize_text(*stories(), tinystories_text());
  save_base_log_probs(stories(), tokens, ctx(64, 2), 8, path);
  std::ifstream in(path, std::ios::binary);
  const std::vector<char> good((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
  auto write_variant = [&](const std::vector<char>& bytes) {
    const std::string p = dir.file("variant.lp");
    std::ofstream(p, std::ios::binary | std::ios::trunc)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  };
  EXPECT_NO_THROW(LogProbsReader{write_variant(good)});
  EXPECT_THROW(compare_with_saved(stories(), dir.file("missing.lp")), Error);
  std::vector<char> truncated(good.begin(), good.end() - 1);
  EXPECT_THROW(LogProbsReader{write_variant(truncated)}, Error);
  std::vector<char> magic = good;
  magic[0] = 'X';
  EXPECT_THROW(LogProbsReader{write_variant(magic)}, Error);
  std::vector<char> huge_chunks = good;
  const uint32_t n_chunks = 0x7fffffff;
  std::memcpy(huge_chunks.data() + 20, &n_chunks, 4);
  EXPECT_THROW(LogProbsReader{write_variant(huge_chunks)}, Error);
  std::vector<char> bad_token = good;
  const int32_t token = 9999;
  std::memcpy(bad_token.data() + 40 + 4 * 5, &token, 4);
  EXPECT_THROW(LogProbsReader{write_variant(bad_token)}, Error);
  std::vector<char> bad_id = good;
  const size_t first_record = 40 + 4 * 128;
  std::memcpy(bad_id.data() + first_record + 4, &token, 4);
  LogProbsReader reader(write_variant(bad_id));
  LogProbsChunk chunk;
  EXPECT_THROW(reader.read_chunk(chunk), Error);
  std::vector<char> bad_value = good;
  const float nan = std::nanf("");
  std::memcpy(bad_value.data() + first_record, &nan, 4);
  LogProbsReader reader2(write_variant(bad_value));
  EXPECT_THROW(reader2.read_chunk(chunk), Error);
}

}  // namespace
}  // namespace edgelm::evaluation
