// Bad checkpoints give errors that name the problem; good ones load.
#include "model/loader.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "formats/test_util.h"
#include "kernels/thread_pool.h"
#include "model/transformer.h"

namespace edgelm {
namespace {

using testing::TempDir;

std::string error_of(const std::string& path) {
  try {
    load_model(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// A tiny HF llama directory: dim 8, 2 heads, 1 layer, vocab = SmolLM2 tokenizer's.
struct TinyHf {
  TempDir dir;
  std::vector<std::vector<float>> storage;
  std::vector<TensorView> tensors;

  void add(const std::string& name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    storage.emplace_back(n);
    uint32_t state = 12345u + static_cast<uint32_t>(storage.size());
    for (float& v : storage.back()) {  // small pseudo-random weights
      state = state * 1664525u + 1013904223u;
      v = (static_cast<float>(state >> 8) / 16777216.0f - 0.5f) * 0.5f;
    }
    TensorView t;
    t.name = name;
    t.dtype = DType::F32;
    t.shape = shape;
    t.data = storage.back().data();
    t.nbytes = n * sizeof(float);
    tensors.push_back(t);
  }

  explicit TinyHf(const std::string& config, bool skip_q = false, int64_t q_rows = 8) {
    storage.reserve(32);
    const int64_t vocab = 49152;
    add("model.embed_tokens.weight", {vocab, 8});
    add("model.norm.weight", {8});
    add("model.layers.0.input_layernorm.weight", {8});
    if (!skip_q) add("model.layers.0.self_attn.q_proj.weight", {q_rows, 8});
    add("model.layers.0.self_attn.k_proj.weight", {8, 8});
    add("model.layers.0.self_attn.v_proj.weight", {8, 8});
    add("model.layers.0.self_attn.o_proj.weight", {8, 8});
    add("model.layers.0.post_attention_layernorm.weight", {8});
    add("model.layers.0.mlp.gate_proj.weight", {16, 8});
    add("model.layers.0.mlp.up_proj.weight", {16, 8});
    add("model.layers.0.mlp.down_proj.weight", {8, 16});
    write_safetensors(dir.file("model.safetensors"), tensors);
    write_text(dir.file("config.json"), config);
    std::filesystem::copy_file(
        std::string(EDGELM_SHARED_DIR) + "/tokenizers/smollm2-135m-instruct/tokenizer.json",
        dir.file("tokenizer.json"));
  }
  std::string path() const { return dir.path().string(); }
};

const char* kGoodConfig = R"({"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1,
  "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 16,
  "vocab_size": 49152, "tie_word_embeddings": true, "max_position_embeddings": 64})";

TEST(Loader, TinyHfDirectoryLoads) {
  TinyHf hf(kGoodConfig);
  auto model = load_model(hf.path());
  EXPECT_EQ(model->format, "safetensors");
  EXPECT_EQ(model->config.head_dim, 4);
  EXPECT_FALSE(model->config.rope_interleaved);
  EXPECT_TRUE(model->config.tied_embeddings);
  EXPECT_EQ(model->weights.output.data, model->weights.token_embedding.data);
}

TEST(Loader, RejectsUnknownArchitectureByName) {
  TinyHf hf(R"({"model_type": "gpt2", "hidden_size": 8})");
  EXPECT_NE(error_of(hf.path()).find("unsupported architecture 'gpt2'"), std::string::npos);
}

TEST(Loader, RejectsInvalidJson) {
  TinyHf hf(R"({"model_type": "llama", "hidden_size": )");
  EXPECT_NE(error_of(hf.path()).find("invalid JSON"), std::string::npos);
}

TEST(Loader, RejectsWrongFieldType) {
  TinyHf hf(R"({"model_type": "llama", "hidden_size": "eight"})");
  EXPECT_NE(error_of(hf.path()).find("'hidden_size' has the wrong type"), std::string::npos);
}

TEST(Loader, RejectsInconsistentHeads) {
  TinyHf hf(R"({"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1,
    "num_attention_heads": 3, "num_key_value_heads": 2, "intermediate_size": 16,
    "vocab_size": 49152})");
  EXPECT_NE(error_of(hf.path()).find("invalid model config"), std::string::npos);
}

TEST(Loader, NamesMissingTensor) {
  TinyHf hf(kGoodConfig, /*skip_q=*/true);
  EXPECT_NE(error_of(hf.path()).find("missing tensor 'blk.0.attn_q.weight'"), std::string::npos);
}

TEST(Loader, NamesTensorWithWrongShape) {
  TinyHf hf(kGoodConfig, false, /*q_rows=*/6);
  const std::string error = error_of(hf.path());
  EXPECT_NE(
      error.find("'model.layers.0.self_attn.q_proj.weight' has shape [6, 8], expected [8, 8]"),
      std::string::npos)
      << error;
}

TEST(Loader, RejectsUnknownGgufArchitecture) {
  TempDir dir;
  GgufWriter writer;
  writer.set_string("general.architecture", "falcon");
  writer.write(dir.file("m.gguf"));
  EXPECT_NE(error_of(dir.file("m.gguf")).find("unsupported architecture 'falcon'"),
            std::string::npos);
}

TEST(Loader, RejectsUnrecognizedAndMissingFiles) {
  TempDir dir;
  write_text(dir.file("notes.txt"), "hello, not a model");
  EXPECT_NE(error_of(dir.file("notes.txt")).find("is not a recognized model"), std::string::npos);
  EXPECT_NE(error_of(dir.file("absent.gguf")).find("model not found"), std::string::npos);
  EXPECT_NE(error_of(dir.path().string()).find("no config.json"), std::string::npos);
}

TEST(Loader, Llama2cAndGgufAgreeOnConfig) {
  const std::string dir = std::string(EDGELM_SOURCE_DIR) + "/models/stories260K/";
  auto bin = load_model(dir + "stories260K.bin");
  auto gguf = load_model(dir + "stories260K.gguf");
  EXPECT_EQ(bin->config.dim, gguf->config.dim);
  EXPECT_EQ(bin->config.n_kv_heads, 4);
  EXPECT_EQ(gguf->config.n_kv_heads, 4);
  EXPECT_TRUE(bin->config.rope_interleaved);
  EXPECT_TRUE(gguf->config.rope_interleaved);
  EXPECT_EQ(bin->n_params, 260032);  // the published parameter count
  EXPECT_EQ(bin->rope_inv_freq, gguf->rope_inv_freq);
}

// Attention splits its work by KV head, and splits a KV head's query heads into
// runs only when there are fewer KV heads than threads: stories260K (8 heads,
// 4 KV heads) decodes to the same logits, bit for bit, on 1 thread (whole KV
// heads), 3 (whole KV heads, shared unevenly) and 8 (one query head per run),
// with F16 and F32 caches (its head_dim of 8 rules out Q8_0); and so do both
// ways of running a decode step on several threads (one dispatch per step, or
// per product).
TEST(Attention, ThreadCountsGiveTheSameLogits) {
  auto model = load_model(std::string(EDGELM_SOURCE_DIR) + "/models/stories260K/stories260K.bin");
  ASSERT_EQ(model->config.n_heads / model->config.n_kv_heads, 2);
  const std::vector<int32_t> tokens = {1, 403, 407, 261, 378, 500, 77, 8, 300, 42, 9, 17};
  for (DType kv : {DType::F16, DType::F32}) {
    auto decode = [&](int threads, bool one_dispatch = true) {
      ThreadPool pool(threads);
      KvCache cache;
      cache.allocate(model->config, 64, kv);
      ForwardBuffers buffers;
      buffers.allocate(model->config, 4, 64, threads);
      buffers.decode_in_one_dispatch = one_dispatch;
      const int vocab = model->config.vocab_size;
      std::vector<float> logits(tokens.size() * vocab);
      // A 4-token prefill, then one token at a time.
      forward(*model, tokens.data(), 4, 0, cache, buffers, pool, logits.data(), false);
      for (size_t i = 4; i < tokens.size(); ++i) {
        forward(*model, &tokens[i], 1, static_cast<int>(i), cache, buffers, pool,
                logits.data() + i * vocab, false);
      }
      return logits;
    };
    const std::vector<float> one = decode(1);
    for (bool one_dispatch : {true, false}) {
      EXPECT_EQ(decode(2, one_dispatch), one) << dtype_name(kv) << one_dispatch;
      EXPECT_EQ(decode(3, one_dispatch), one) << dtype_name(kv) << one_dispatch;
      EXPECT_EQ(decode(8, one_dispatch), one) << dtype_name(kv) << one_dispatch;
    }
  }
}

// With one layer, the last token's logits under a sliding window of W equal those of
// a fresh run over just the last W tokens (RoPE scores depend on relative positions only).
TEST(SlidingWindow, OneLayerWindowEqualsTruncatedSequence) {
  TinyHf hf(R"({"model_type": "mistral", "hidden_size": 8, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 16,
    "vocab_size": 49152, "tie_word_embeddings": true, "max_position_embeddings": 64,
    "sliding_window": 4})");
  auto model = load_model(hf.path());
  ASSERT_EQ(model->config.sliding_window, 4);
  ThreadPool pool(1);
  auto last_logits = [&](const std::vector<int32_t>& tokens) {
    KvCache cache;
    cache.allocate(model->config, 64, DType::F32);
    ForwardBuffers buffers;
    buffers.allocate(model->config, 16, 64, 1);
    std::vector<float> logits(model->config.vocab_size);
    forward(*model, tokens.data(), static_cast<int>(tokens.size()), 0, cache, buffers, pool,
            logits.data(), false);
    return logits;
  };
  const std::vector<int32_t> all = {5, 17, 300, 42, 9, 1000, 77, 8};
  const std::vector<float> windowed = last_logits(all);
  const std::vector<float> exact = last_logits({9, 1000, 77, 8});
  model->config.sliding_window = 0;
  const std::vector<float> full = last_logits(all);
  float max_diff = 0, max_diff_wrong = 0;
  for (size_t v = 0; v < windowed.size(); ++v) {
    max_diff = std::max(max_diff, std::abs(windowed[v] - exact[v]));
    max_diff_wrong = std::max(max_diff_wrong, std::abs(windowed[v] - full[v]));
  }
  EXPECT_LT(max_diff, 1e-4f);
  EXPECT_GT(max_diff_wrong, 1e-3f);  // without the window the result differs
}

TEST(RopeFrequencies, Llama3ScalingMatchesTransformers) {
  // Values from transformers' _compute_llama3_parameters for head_dim 64, theta 500000,
  // factor 32, low 1, high 4, original 8192 (spot checks computed with numpy).
  ModelConfig c;
  c.head_dim = 64;
  c.rope_theta = 500000.0f;
  c.rope_scaling = "llama3";
  c.rope_factor = 32.0f;
  c.rope_low_freq_factor = 1.0f;
  c.rope_high_freq_factor = 4.0f;
  c.rope_original_context = 8192;
  const std::vector<float> f = rope_inverse_frequencies(c);
  ASSERT_EQ(f.size(), 32u);
  EXPECT_FLOAT_EQ(f[0], 1.0f);  // high frequency: unchanged
  // Lowest frequency: wavelength > 8192, so divided by the factor.
  const double plain = 1.0 / std::pow(500000.0, 62.0 / 64.0);
  EXPECT_NEAR(f[31], plain / 32.0, plain * 1e-5);
}

}  // namespace
}  // namespace edgelm
