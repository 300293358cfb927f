// edgelm quantize end to end: files read back with the edgelm loader, compared with the input
// model, with the convert_hf_to_gguf layout written by tools/make_random_checkpoint.py, and
// with the type's error bound.
#include "compression/quantize.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "compression/imatrix.h"
#include "compression/quant_plan.h"
#include "compression/test_helpers.h"
#include "formats/gguf.h"
#include "kernels/matmul.h"
#include "kernels/quant_formats.h"

namespace edgelm::compression {
namespace {

using namespace testing;

QuantizeSummary quantize(const std::string& in, const std::string& out, const std::string& type,
                         bool pure = false) {
  QuantizeOptions o;
  o.input = in;
  o.output = out;
  o.type = type;
  o.pure = pure;
  o.threads = 2;
  return quantize_model(o);
}

std::vector<int32_t> some_tokens(int vocab, int n) {
  std::vector<int32_t> t;
  uint32_t s = 12345;
  for (int i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    t.push_back(static_cast<int32_t>((s >> 8) % static_cast<uint32_t>(vocab)));
  }
  return t;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Decode logits `b` against `a` ([positions][vocab]): within 5% of a's largest
// logit, and the same greedy token at all but `misses` positions.
void expect_close_logits(const std::vector<float>& a, const std::vector<float>& b, size_t vocab,
                         int misses) {
  float scale = 0;
  for (float v : a) scale = std::max(scale, std::fabs(v));
  EXPECT_LE(max_abs_diff(a, b), 0.05f * scale);
  const size_t positions = a.size() / vocab;
  int same_top1 = 0;
  for (size_t i = 0; i < positions; ++i) {
    const auto argmax = [&](const std::vector<float>& l) {
      return std::max_element(l.begin() + i * vocab, l.begin() + (i + 1) * vocab) - l.begin();
    };
    same_top1 += argmax(a) == argmax(b);
  }
  EXPECT_GE(same_top1, static_cast<int>(positions) - misses);
}

// Every tensor the reference converter wrote must be in our file, same type and bytes.
void expect_same_tensors_as_converter(const std::string& reference, const std::string& ours) {
  auto ref = GgufFile::open(reference);
  auto out = GgufFile::open(ours);
  EXPECT_EQ(ref->tensors().size(), out->tensors().size());
  for (const TensorView& r : ref->tensors()) {
    const TensorView* o = out->find_tensor(r.name);
    ASSERT_NE(o, nullptr) << r.name;
    EXPECT_EQ(o->dtype, r.dtype) << r.name;
    EXPECT_EQ(o->shape, r.shape) << r.name;
    ASSERT_EQ(o->nbytes, r.nbytes) << r.name;
    if (r.name == "rope_freqs.weight") {  // computed in float vs double: within an ulp or two
      for (int64_t i = 0; i < r.numel(); ++i) {
        EXPECT_NEAR(static_cast<const float*>(o->data)[i], static_cast<const float*>(r.data)[i],
                    1e-5f * static_cast<const float*>(r.data)[i]);
      }
    } else {
      EXPECT_EQ(std::memcmp(o->data, r.data, r.nbytes), 0) << r.name << " differs";
    }
  }
}

// Every metadata key of the reference converter's file, with the same value.
void expect_same_metadata_as_converter(const std::string& reference, const std::string& ours) {
  auto ref = GgufFile::open(reference);
  auto out = GgufFile::open(ours);
  for (const std::string& key : ref->keys()) {
    if (key == "general.name") continue;
    const GgufValue* o = out->find(key);
    ASSERT_NE(o, nullptr) << "missing metadata key " << key;
    EXPECT_EQ(gguf_value_to_string(*o), gguf_value_to_string(*ref->find(key))) << key;
  }
}

// Q4_0 / Q5_0 / Q4_K / Q8_0 matrices re-laid in their interleaved layouts at load
// give the same model: prefill logits bit for bit (same GEMM panels); decode logits bit for
// bit on the scalar ISA (the row-major kernels on de-interleaved groups); and
// on the best ISA (the interleaved decode kernels, another summation order)
// close, with the same greedy token at nearly every position. Not bit for bit
// there: a one-ulp difference in a projection can move an activation across a
// Q8_0 rounding step in the next product, and the network carries that on
// (the same effect as between edgelm and llama.cpp, docs/QUANTIZATION.md).
// Only whole 16-row groups are re-laid (`expected` matrices of `source`).
void expect_interleaving_keeps_logits(const std::string& source, const std::string& type,
                                      DType interleaved_type, int expected) {
  SCOPED_TRACE(type);
  TempDir dir;
  const std::string out = dir.file(type + ".gguf");
  quantize(source, out, type, /*pure=*/true);
  auto a = load_model(out);
  auto b = load_model(out);
  const int interleaved = interleave_matrices(*b);
  EXPECT_EQ(interleaved, expected);
  EXPECT_EQ(b->weights.layers[0].wq.type, interleaved_type);
  EXPECT_EQ(b->weights.output.type, interleaved_type);
  if (a->weights.output.data == a->weights.token_embedding.data) {  // tied: one matrix still
    EXPECT_EQ(b->weights.token_embedding.data, b->weights.output.data);
    EXPECT_EQ(b->weights.token_embedding.type, interleaved_type);
  }
  {  // Shared out over threads, the same bytes.
    auto c = load_model(out);
    ThreadPool pool(3);
    EXPECT_EQ(interleave_matrices(*c, &pool), expected);
    for (size_t l = 0; l < b->weights.layers.size(); ++l) {
      const LayerWeights& lb = b->weights.layers[l];
      const LayerWeights& lc = c->weights.layers[l];
      for (auto [mb, mc] :
           {std::pair{&lb.wq, &lc.wq}, {&lb.wo, &lc.wo}, {&lb.w_down, &lc.w_down}}) {
        ASSERT_EQ(mb->type, mc->type);
        EXPECT_EQ(std::memcmp(mb->data, mc->data, mb->row_bytes * mb->rows), 0) << "layer " << l;
      }
    }
  }
  // Norm weights no longer point into the mapped file (whose matrix pages were released).
  auto owned = [&](const float* p) {
    return std::any_of(b->converted.begin(), b->converted.end(),
                       [&](const std::vector<float>& v) { return v.data() == p; });
  };
  EXPECT_TRUE(owned(b->weights.layers[0].attn_norm));
  EXPECT_TRUE(owned(b->weights.layers.back().ffn_norm));
  EXPECT_TRUE(owned(b->weights.output_norm));
  const std::vector<int32_t> tokens = some_tokens(512, 24);
  EXPECT_EQ(all_logits(*a, tokens), all_logits(*b, tokens));

  const int vocab = a->config.vocab_size;
  auto decode = [&](const LoadedModel& m) {
    ThreadPool pool(2);
    KvCache cache;
    cache.allocate(m.config, static_cast<int>(tokens.size()), DType::F32);
    ForwardBuffers buffers;
    buffers.allocate(m.config, 1, static_cast<int>(tokens.size()), pool.size());
    std::vector<float> logits(tokens.size() * static_cast<size_t>(vocab));
    for (size_t i = 0; i < tokens.size(); ++i) {
      forward(m, &tokens[i], 1, static_cast<int>(i), cache, buffers, pool,
              logits.data() + i * vocab, false);
    }
    return logits;
  };
  {
    const Isa saved = active_isa();
    set_active_isa(Isa::kScalar);
    EXPECT_EQ(decode(*a), decode(*b));
    set_active_isa(saved);
  }
  expect_close_logits(decode(*a), decode(*b), static_cast<size_t>(vocab), 3);
}

TEST(Quantize, InterleavedMatricesGiveTheSameLogits) {
  // stories260K: q, k, v, o of each layer and the output head, tied to the
  // embedding table (read through the re-laid matrix); its ffn has 172 rows or columns.
  const std::string stories = kStories + "/stories260K.bin";
  expect_interleaving_keeps_logits(stories, "q4_0", DType::Q4_0_X16, 4 * 5 + 1);
  expect_interleaving_keeps_logits(stories, "q5_0", DType::Q5_0_X16, 4 * 5 + 1);
  expect_interleaving_keeps_logits(stories, "q8_0", DType::Q8_0_X16, 4 * 5 + 1);
  // Q4_K needs rows of 256: 2 layers of 7 matrices and the untied output head.
  const std::string wide = random_checkpoint(
      "tinyllama-1.1b", "--layers 2 --vocab 512 --hidden 256 --heads 4 --kv-heads 2 --ffn 512");
  expect_interleaving_keeps_logits(wide, "q4_k", DType::Q4_K_X16, 2 * 7 + 1);
}

// Logits of `tokens` on `threads` threads: a prefill of the first `prefill`,
// then decode steps of one token (with an activation hook, or a dispatch per
// product instead of one per step, where asked).
struct DecodeRun {
  int threads = 1;
  DType kv = DType::F16;
  int prefill = 0;
  bool hook = false;
  bool one_dispatch = true;
};
std::vector<float> decode_logits(const LoadedModel& m, const std::vector<int32_t>& tokens,
                                 const DecodeRun& run) {
  ThreadPool pool(run.threads);
  KvCache cache;
  cache.allocate(m.config, static_cast<int>(tokens.size()), run.kv);
  ForwardBuffers buffers;
  buffers.allocate(m.config, std::max(1, run.prefill), static_cast<int>(tokens.size()),
                   pool.size());
  if (run.hook) buffers.hook = [](void*, int, MatrixKind, const float*, int, int) {};
  buffers.decode_in_one_dispatch = run.one_dispatch;
  const size_t vocab = static_cast<size_t>(m.config.vocab_size);
  std::vector<float> logits(tokens.size() * vocab);
  if (run.prefill > 0) {
    forward(m, tokens.data(), run.prefill, 0, cache, buffers, pool, logits.data(), false);
  }
  for (size_t i = static_cast<size_t>(run.prefill); i < tokens.size(); ++i) {
    forward(m, &tokens[i], 1, static_cast<int>(i), cache, buffers, pool, logits.data() + i * vocab,
            false);
  }
  return logits;
}

// Decode projects the attention output per KV head inside the attention pass
// (model/transformer.h, projects_output_per_kv_head) where wo is interleaved and
// each KV head's columns are whole blocks: 2 KV heads of 4 x 64 columns here,
// for Q4_0 and Q4_K (not for row-major matrices such as Q8_0), with F16 and
// Q8_0 KV caches. The heads' parts are summed in head order, so 1, 2 and 3
// threads (1, 2 and 3 row slabs per head) give the same logits bit for bit; and
// they stay close to the one-product projection (taken when an activation hook
// watches the inputs): only float summation order differs (the slices quantize
// the same activation blocks), which a Q8_0 rounding step in a later product
// could amplify (here they differ by 0 and 3e-6 of 13; batch against
// token-by-token evaluation by 2.7%; leaving out one head's part by 100%).
TEST(Quantize, DecodeProjectsAttentionOutputPerKvHead) {
  const std::string source = random_checkpoint(
      "smollm2-135m", "--layers 2 --vocab 512 --hidden 512 --heads 8 --kv-heads 2 --ffn 512");
  const std::vector<int32_t> tokens = some_tokens(512, 20);
  auto decode = [&](const LoadedModel& m, int threads, bool hook, DType kv) {
    return decode_logits(m, tokens, {.threads = threads, .kv = kv, .hook = hook});
  };
  for (const char* type : {"q8_0", "q4_0", "q4_k"}) {
    SCOPED_TRACE(type);
    TempDir dir;
    const std::string out = dir.file(std::string(type) + ".gguf");
    quantize(source, out, type, /*pure=*/true);
    auto m = load_model(out);
    EXPECT_FALSE(projects_output_per_kv_head(m->config, m->weights.layers[0].wo));  // row-major
    ASSERT_GT(interleave_matrices(*m), 0);
    ASSERT_TRUE(projects_output_per_kv_head(m->config, m->weights.layers[0].wo));
    for (DType kv : {DType::F16, DType::Q8_0}) {  // values stored by the items, or before
      SCOPED_TRACE(dtype_name(kv));
      const std::vector<float> one = decode(*m, 1, false, kv);
      EXPECT_EQ(decode(*m, 2, false, kv), one);
      EXPECT_EQ(decode(*m, 3, false, kv), one);
      // A missing head's part moves the logits by about the largest one.
      expect_close_logits(decode(*m, 2, true, kv), one, 512, 2);
    }
  }
  // stories260K's 2 x 8 columns per KV head are not whole blocks of any type.
  TempDir dir;
  quantize(kStories + "/stories260K.bin", dir.file("s.gguf"), "q4_0", /*pure=*/true);
  auto stories = load_model(dir.file("s.gguf"));
  ASSERT_GT(interleave_matrices(*stories), 0);
  EXPECT_FALSE(projects_output_per_kv_head(stories->config, stories->weights.layers[0].wo));
}

// Decode on several threads runs each step in one dispatch of the pool, its
// products and attention as stages of work items (DecodeStepState); the items
// and the serial steps between them are those of a dispatch per product, so the
// logits must match bit for bit: row-major (a separate output-projection stage)
// and interleaved matrices (the projection per KV head), mixed activation forms in one stage
// (q4_k's q4_K + q5_0 + q8_0), float weights, both KV caches, one KV head split into runs of query
// heads, 2 to 4 threads.
TEST(Quantize, DecodeInOneDispatchEqualsDispatchPerProduct) {
  const std::vector<int32_t> tokens = some_tokens(512, 12);
  auto decode = [&](const LoadedModel& m, int threads, bool one_dispatch, DType kv) {
    return decode_logits(
        m, tokens, {.threads = threads, .kv = kv, .prefill = 4, .one_dispatch = one_dispatch});
  };
  struct Case {
    const char* shape;
    const char* type;
    bool interleave = true;
  };
  const Case cases[] = {
      {"--layers 2 --vocab 512 --hidden 512 --heads 8 --kv-heads 2 --ffn 512", "q8_0", false},
      {"--layers 2 --vocab 512 --hidden 512 --heads 8 --kv-heads 2 --ffn 512", "q8_0"},
      {"--layers 2 --vocab 512 --hidden 512 --heads 8 --kv-heads 2 --ffn 512", "q4_0"},
      {"--layers 2 --vocab 512 --hidden 512 --heads 8 --kv-heads 2 --ffn 512", "q4_k"},
      {"--layers 2 --vocab 512 --hidden 256 --heads 4 --kv-heads 1 --ffn 512", "q4_0"},
      {"--layers 2 --vocab 512 --hidden 64 --heads 4 --kv-heads 2 --ffn 128", "f32"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(std::string(k.type) + (k.interleave ? " interleaved " : " row-major ") + k.shape);
    TempDir dir;
    const std::string out = dir.file("m.gguf");
    quantize(random_checkpoint("smollm2-135m", k.shape), out, k.type);
    auto m = load_model(out);
    if (k.interleave) interleave_matrices(*m);
    ASSERT_EQ(projects_output_per_kv_head(m->config, m->weights.layers[0].wo),
              k.interleave && std::string(k.type) != "f32");
    for (DType kv : {DType::F16, DType::Q8_0}) {
      SCOPED_TRACE(dtype_name(kv));
      if (kv == DType::Q8_0 && m->config.head_dim % 32 != 0) continue;
      for (int threads : {2, 3, 4}) {
        SCOPED_TRACE(threads);
        const std::vector<float> per_product = decode(*m, threads, false, kv);
        EXPECT_EQ(decode(*m, threads, true, kv), per_product);
      }
    }
  }
}

// The decode step's stages copy the weight matrices when first built, and
// whether wo has a stage of its own depends on its layout; buffers used before
// the weights are re-laid (interleave_matrices: wo then projects per KV head)
// rebuild them, and decode as fresh buffers do.
TEST(Quantize, DecodeStateFollowsReLaidWeights) {
  TempDir dir;
  quantize(
      random_checkpoint("smollm2-135m",
                        "--layers 2 --vocab 512 --hidden 512 --heads 8 --kv-heads 2 --ffn 512"),
      dir.file("m.gguf"), "q4_0", /*pure=*/true);
  auto m = load_model(dir.file("m.gguf"));
  const std::vector<int32_t> tokens = some_tokens(512, 6);
  ThreadPool pool(2);
  ForwardBuffers buffers;
  buffers.allocate(m->config, 1, 16, pool.size());
  auto decode = [&](ForwardBuffers& b) {
    KvCache cache;
    cache.allocate(m->config, 16, DType::F16);
    std::vector<float> logits(static_cast<size_t>(m->config.vocab_size));
    for (size_t i = 0; i < tokens.size(); ++i) {
      forward(*m, &tokens[i], 1, static_cast<int>(i), cache, b, pool, logits.data(), false);
    }
    return logits;
  };
  decode(buffers);
  ASSERT_GT(interleave_matrices(*m), 0);
  ASSERT_TRUE(projects_output_per_kv_head(m->config, m->weights.layers[0].wo));
  const std::vector<float> reused = decode(buffers);
  ForwardBuffers fresh;
  fresh.allocate(m->config, 1, 16, pool.size());
  EXPECT_EQ(reused, decode(fresh));
}

TEST(Quantize, Stories260KToF32IsBitExact) {
  TempDir dir;
  const std::string out = dir.file("s.gguf");
  const QuantizeSummary s = quantize(kStories + "/stories260K.bin", out, "f32");
  EXPECT_FALSE(s.permuted_qk);  // llama2.c weights are interleaved already
  EXPECT_TRUE(s.fallbacks.empty());
  auto a = load_model(kStories + "/stories260K.bin");
  auto b = load_model(out);
  EXPECT_EQ(b->format, "gguf");
  EXPECT_EQ(b->config.dim, 64);
  EXPECT_EQ(b->config.hidden_dim, 172);
  EXPECT_TRUE(b->config.rope_interleaved);
  EXPECT_EQ(b->vocab.tokens, a->vocab.tokens);
  EXPECT_EQ(b->vocab.scores, a->vocab.scores);
  EXPECT_EQ(b->vocab.bos, a->vocab.bos);
  EXPECT_EQ(b->vocab.add_bos, a->vocab.add_bos);
  const std::vector<int32_t> tokens = some_tokens(512, 40);
  EXPECT_EQ(all_logits(*a, tokens), all_logits(*b, tokens));  // bit for bit

  // Same tokenizer metadata as the llama.cpp-made stories260K.gguf.
  auto ours = GgufFile::open(out);
  auto theirs = GgufFile::open(kStories + "/stories260K.gguf");
  for (const char* key :
       {"tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "llama.embedding_length", "llama.block_count",
        "llama.feed_forward_length", "llama.attention.head_count", "llama.rope.dimension_count"}) {
    ASSERT_NE(ours->find(key), nullptr) << key;
    if (theirs->find(key) == nullptr) continue;
    EXPECT_EQ(gguf_value_to_string(*ours->find(key)), gguf_value_to_string(*theirs->find(key)))
        << key;
  }
}

TEST(Quantize, MetadataIsComplete) {
  TempDir dir;
  const std::string out = dir.file("m.gguf");
  quantize(random_checkpoint("smollm2-135m", kSmallShape), out, "q8_0");
  auto g = GgufFile::open(out);
  EXPECT_EQ(g->version(), 3u);
  for (const char* key : {"general.architecture",
                          "general.file_type",
                          "general.quantization_version",
                          "llama.context_length",
                          "llama.embedding_length",
                          "llama.feed_forward_length",
                          "llama.block_count",
                          "llama.attention.head_count",
                          "llama.attention.head_count_kv",
                          "llama.attention.layer_norm_rms_epsilon",
                          "llama.rope.freq_base",
                          "llama.rope.dimension_count",
                          "llama.attention.key_length",
                          "tokenizer.ggml.model",
                          "tokenizer.ggml.pre",
                          "tokenizer.ggml.tokens",
                          "tokenizer.ggml.token_type",
                          "tokenizer.ggml.merges",
                          "tokenizer.ggml.bos_token_id",
                          "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.padding_token_id",
                          "tokenizer.ggml.add_bos_token",
                          "tokenizer.chat_template"}) {
    EXPECT_TRUE(g->has(key)) << key;
  }
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  EXPECT_EQ(g->get_int("general.file_type"), 7);  // LLAMA_FTYPE_MOSTLY_Q8_0
  EXPECT_EQ(g->get_int("general.quantization_version"), 2);
  EXPECT_EQ(g->get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(g->get_string("tokenizer.ggml.pre"), "smollm");
  EXPECT_EQ(g->get_string_array("tokenizer.ggml.tokens").size(), 512u);
}

// HF "llama" checkpoint: q/k rows permuted exactly as convert_hf_to_gguf does, every tensor
// and metadata value equal to the reference converter's, same logits as the HF input.
TEST(Quantize, LlamaHfToF32MatchesConverterAndLogits) {
  TempDir dir;
  const std::string hf = random_checkpoint("smollm2-135m", kSmallShape);
  const std::string out = dir.file("llama.gguf");
  const QuantizeSummary s = quantize(hf, out, "f32");
  EXPECT_TRUE(s.permuted_qk);
  expect_same_tensors_as_converter(hf + ".gguf", out);
  expect_same_metadata_as_converter(hf + ".gguf", out);
  auto a = load_model(hf);
  auto b = load_model(out);
  EXPECT_FALSE(a->config.rope_interleaved);
  EXPECT_TRUE(b->config.rope_interleaved);
  EXPECT_EQ(b->vocab.tokens, a->vocab.tokens);
  EXPECT_EQ(b->vocab.merges, a->vocab.merges);
  EXPECT_EQ(b->vocab.end_of_generation, a->vocab.end_of_generation);
  EXPECT_EQ(b->chat_template_source, a->chat_template_source);
  const std::vector<int32_t> tokens = some_tokens(512, 48);
  const std::vector<float> la = all_logits(*a, tokens), lb = all_logits(*b, tokens);
  // The same math; only the order of the q.k sums differs.
  EXPECT_LT(max_abs_diff(la, lb), 1e-4f);
}

TEST(Quantize, Qwen2KeepsHfLayoutAndBiases) {
  TempDir dir;
  const std::string hf = random_checkpoint("qwen2.5-0.5b", kSmallShape);
  const std::string out = dir.file("qwen.gguf");
  const QuantizeSummary s = quantize(hf, out, "f32");
  EXPECT_FALSE(s.permuted_qk);
  EXPECT_EQ(s.architecture, "qwen2");
  expect_same_tensors_as_converter(hf + ".gguf", out);
  expect_same_metadata_as_converter(hf + ".gguf", out);
  auto a = load_model(hf);
  auto b = load_model(out);
  EXPECT_TRUE(b->config.attention_bias);
  const std::vector<int32_t> tokens = some_tokens(512, 32);
  EXPECT_EQ(all_logits(*a, tokens), all_logits(*b, tokens));  // same layout, same arithmetic
}

TEST(Quantize, Llama3RopeScalingBecomesRopeFreqs) {
  TempDir dir;
  const std::string hf = random_checkpoint("llama-3.2-1b", kSmallShape);
  const std::string out = dir.file("l3.gguf");
  quantize(hf, out, "f32");
  expect_same_tensors_as_converter(hf + ".gguf", out);
  auto g = GgufFile::open(out);
  ASSERT_NE(g->find_tensor("rope_freqs.weight"), nullptr);
  EXPECT_FALSE(g->has("llama.rope.scaling.type"));
  auto a = load_model(hf);
  auto b = load_model(out);
  ASSERT_EQ(a->rope_inv_freq.size(), b->rope_inv_freq.size());
  for (size_t i = 0; i < a->rope_inv_freq.size(); ++i) {
    EXPECT_NEAR(b->rope_inv_freq[i], a->rope_inv_freq[i], 1e-6f * a->rope_inv_freq[i]) << i;
  }
  const std::vector<int32_t> tokens = some_tokens(512, 32);
  EXPECT_LT(max_abs_diff(all_logits(*a, tokens), all_logits(*b, tokens)), 1e-3f);
  // A GGUF input keeps its rope_freqs.
  const std::string again = dir.file("l3b.gguf");
  quantize(out, again, "f32");
  expect_same_tensors_as_converter(out, again);
}

// Relative RMS error of the dequantized weights that random (uniform) weights must stay under.
double error_bound(DType t) {
  switch (t) {
    case DType::F16:
      return 1e-3;
    case DType::BF16:
      return 5e-3;
    case DType::Q8_0:
      return 0.01;
    case DType::FP8_E4M3:
    case DType::Q6_K:
      return 0.04;
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q5_K:
      return 0.06;
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q4_K:
      return 0.12;
    case DType::Q3_K:
      return 0.25;
    case DType::Q2_K:
      return 0.5;
    default:
      return 0;
  }
}

// Every type: the file holds exactly quantize_row of the (permuted) input rows, and the
// dequantized weights are within the type's error bound of the input.
TEST(Quantize, EveryTypeRoundTripsWithinItsErrorBound) {
  const std::string hf = random_checkpoint(
      "smollm2-135m", "--layers 1 --vocab 512 --hidden 256 --heads 4 --kv-heads 2 --ffn 256");
  auto original = load_model(hf);
  const ModelConfig& c = original->config;
  for (const char* type : {"f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k",
                           "q4_k", "q5_k", "q6_k", "fp8_e4m3"}) {
    SCOPED_TRACE(type);
    TempDir dir;
    const std::string out = dir.file("t.gguf");
    const QuantizeSummary s = quantize(hf, out, type, /*pure=*/true);
    EXPECT_TRUE(s.fallbacks.empty());
    auto q = load_model(out);  // the edgelm loader accepts it
    const DType want = parse_scheme(type).base;
    EXPECT_EQ(s.tensors_per_type.at(dtype_name(want)), 8);  // 7 per layer + embedding
    auto check = [&](const std::string& name, const WeightMatrix& in, const WeightMatrix& got,
                     int heads) {
      ASSERT_EQ(got.type, want) << name;
      std::vector<float> x(static_cast<size_t>(in.cols)), y(x.size());
      std::vector<uint8_t> expected(got.row_bytes);
      double err = 0, ref = 0;
      for (int64_t r = 0; r < in.rows; ++r) {
        const int64_t src = heads ? source_row_for_interleaved(r, in.rows, heads) : r;
        std::memcpy(x.data(), static_cast<const uint8_t*>(in.data) + src * in.row_bytes,
                    x.size() * sizeof(float));
        const auto* row = static_cast<const uint8_t*>(got.data) + r * got.row_bytes;
        if (want == DType::FP8_E4M3) {
          quantize_row_fp8_e4m3(x.data(), expected.data(), in.cols);
          dequantize_row_fp8_e4m3(row, y.data(), in.cols);
        } else {
          quantize_row(want, x.data(), expected.data(), in.cols);
          dequantize_row_quant(want, row, y.data(), in.cols);
        }
        ASSERT_EQ(std::memcmp(row, expected.data(), got.row_bytes), 0) << name << " row " << r;
        for (int64_t i = 0; i < in.cols; ++i) {
          err += (y[i] - x[i]) * (y[i] - x[i]);
          ref += x[i] * x[i];
        }
      }
      EXPECT_LT(std::sqrt(err / ref), error_bound(want)) << name;
      if (want == DType::F16 || want == DType::Q8_0) {
        EXPECT_GT(std::sqrt(err / ref), 0) << name;  // really converted
      }
    };
    const LayerWeights& a = original->weights.layers[0];
    const LayerWeights& b = q->weights.layers[0];
    check("token_embd", original->weights.token_embedding, q->weights.token_embedding, 0);
    check("attn_q", a.wq, b.wq, c.n_heads);
    check("attn_k", a.wk, b.wk, c.n_kv_heads);
    check("attn_v", a.wv, b.wv, 0);
    check("attn_output", a.wo, b.wo, 0);
    check("ffn_gate", a.w_gate, b.w_gate, 0);
    check("ffn_up", a.w_up, b.w_up, 0);
    check("ffn_down", a.w_down, b.w_down, 0);
    for (int i = 0; i < c.dim; ++i) EXPECT_EQ(b.attn_norm[i], a.attn_norm[i]);  // 1-D: F32
  }
}

TEST(Quantize, Stories260KFallbacksAreReported) {
  TempDir dir;
  const QuantizeSummary s = quantize(kStories + "/stories260K.bin", dir.file("q.gguf"), "q4_0");
  // ffn_down rows are 172 wide: no 32-block fits, F16; the tied embedding is the output head
  // (Q6_K, which needs 256-wide rows -> Q8_0).
  ASSERT_EQ(s.fallbacks.size(), 6u);
  EXPECT_NE(s.fallbacks[0].find("token_embd.weight: q6_K -> q8_0"), std::string::npos)
      << s.fallbacks[0];
  EXPECT_NE(s.fallbacks[1].find("blk.0.ffn_down.weight: q4_0 -> f16"), std::string::npos)
      << s.fallbacks[1];
  EXPECT_EQ(s.tensors_per_type.at("q4_0"), 30);
  EXPECT_EQ(s.tensors_per_type.at("f16"), 5);
  EXPECT_EQ(s.tensors_per_type.at("q8_0"), 1);
  EXPECT_EQ(s.tensors_per_type.at("f32"), 11);
  EXPECT_EQ(s.matrix_params, 259328);
  EXPECT_NEAR(s.bits_per_weight_in(), 32.0, 1e-9);
  EXPECT_GT(s.bits_per_weight_out(), 4.5);
  EXPECT_LT(s.bits_per_weight_out(), 8.0);
  EXPECT_GT(s.output_bytes, 0);
  EXPECT_LT(s.output_bytes, s.input_bytes / 3);

  // Requantizing a quantized file needs --allow-requantize; converting it to F32 does not.
  const std::string e = error_of([&] { quantize(dir.file("q.gguf"), dir.file("r.gguf"), "q8_0"); });
  EXPECT_NE(e.find("already quantized"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir.file("r.gguf")));
  quantize(dir.file("q.gguf"), dir.file("f.gguf"), "f32");
  EXPECT_TRUE(fs::exists(dir.file("f.gguf")));
}

// Failed runs leave neither OUT nor OUT.tmp, and an existing OUT untouched.
TEST(Quantize, ErrorsAreClearAndLeaveNoOutput) {
  TempDir dir;
  const std::string in = kStories + "/stories260K.bin";
  const std::string out = dir.file("out.gguf");
  auto run = [&](const std::function<void(QuantizeOptions&)>& edit) {
    QuantizeOptions o;
    o.input = in;
    o.output = out;
    o.type = "q8_0";
    edit(o);
    const std::string e = error_of([&] { quantize_model(o); });
    EXPECT_FALSE(fs::exists(out + ".tmp"));
    return e;
  };
  std::ofstream(out) << "old";
  EXPECT_NE(run([](QuantizeOptions& o) { o.type = "q4_2"; }).find("unknown quantization type"),
            std::string::npos);
  EXPECT_NE(
      run([](QuantizeOptions& o) { o.input = "/nonexistent/model.bin"; }).find("model not found"),
      std::string::npos);
  EXPECT_NE(run([&](QuantizeOptions& o) {
              o.output = dir.file("no/such/dir/out.gguf");
            }).find("does not exist"),
            std::string::npos);
  EXPECT_NE(run([&](QuantizeOptions& o) { o.output = dir.file(""); }).find("is a directory"),
            std::string::npos);
  std::string e = run([](QuantizeOptions& o) { o.overrides = {"ffn_down=q8_0"}; });
  EXPECT_NE(e.find("blk.0.ffn_down.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("172"), std::string::npos) << e;
  e = run([](QuantizeOptions& o) { o.overrides = {"attn_qq=q8_0"}; });
  EXPECT_NE(e.find("matches no weight matrix"), std::string::npos) << e;
  e = run([](QuantizeOptions& o) { o.imatrix = "/nonexistent.dat"; });
  EXPECT_NE(e.find("imatrix file not found"), std::string::npos) << e;

  // An imatrix of another model: names or sizes that do not fit.
  Imatrix other;
  other.entries["blk.0.attn_q.weight"].importance.assign(128, 1.0f);
  other.entries["blk.0.attn_q.weight"].ncall = 1;
  write_imatrix_dat(other, dir.file("other.dat"));
  e = run([&](QuantizeOptions& o) { o.imatrix = dir.file("other.dat"); });
  EXPECT_NE(e.find("'blk.0.attn_q.weight' has 128 values but the tensor has rows of 64"),
            std::string::npos)
      << e;
  Imatrix deeper;
  deeper.entries["blk.9.attn_q.weight"].importance.assign(64, 1.0f);
  write_imatrix_dat(deeper, dir.file("deeper.dat"));
  e = run([&](QuantizeOptions& o) { o.imatrix = dir.file("deeper.dat"); });
  EXPECT_NE(e.find("'blk.9.attn_q.weight' is not a weight matrix"), std::string::npos) << e;

  EXPECT_EQ(read_text(out), "old");  // never replaced by a failed run

  // An unwritable output directory is refused before any work.
  if (::geteuid() != 0) {
    fs::create_directories(dir.file("ro"));
    fs::permissions(dir.file("ro"), fs::perms::owner_read | fs::perms::owner_exec);
    e = run([&](QuantizeOptions& o) { o.output = dir.file("ro/out.gguf"); });
    EXPECT_NE(e.find("not writable"), std::string::npos) << e;
    fs::permissions(dir.file("ro"), fs::perms::owner_all);
  }

  // A successful run replaces OUT atomically and leaves no temporary.
  quantize(in, out, "q8_0");
  EXPECT_FALSE(fs::exists(out + ".tmp"));
  EXPECT_EQ(GgufFile::open(out)->get_int("general.file_type"), 7);
}

}  // namespace
}  // namespace edgelm::compression
