#include "formats/llama2c.h"

#include <gtest/gtest.h>

#include <cstring>

#include "formats/gguf.h"
#include "formats/test_util.h"

namespace edgelm {
namespace {

using testing::Bytes;
using testing::error_of;
using testing::TempDir;
using testing::write_bytes;

std::string stories(const std::string& ext) {
  return testing::shared_dir() + "/models/stories260K/stories260K" + ext;
}

TEST(Llama2c, ReadsStories260K) {
  const Llama2cFile f = open_llama2c(stories(".bin"));
  const Llama2cConfig& c = f.config;
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.seq_len, 512);
  EXPECT_TRUE(c.shared_classifier);
  ASSERT_EQ(f.tensors.size(), 1u + 5 * 9 + 1);  // embedding, 9 per layer, final norm
  EXPECT_EQ(f.tensors.front().name, "token_embd.weight");
  EXPECT_EQ(f.tensors.back().name, "output_norm.weight");
  const uint8_t* begin = f.mapping->data();
  for (const TensorView& t : f.tensors) {
    EXPECT_EQ(t.dtype, DType::F32);
    EXPECT_EQ(t.nbytes, static_cast<size_t>(t.numel()) * 4);
    EXPECT_GE(static_cast<const uint8_t*>(t.data), begin + 28);
    EXPECT_LE(static_cast<const uint8_t*>(t.data) + t.nbytes, begin + f.mapping->size());
  }
}

TEST(Llama2c, SameWeightsAsTheGgufConversion) {
  const Llama2cFile bin = open_llama2c(stories(".bin"));
  auto gguf = GgufFile::open(stories(".gguf"));
  for (const TensorView& t : bin.tensors) {
    SCOPED_TRACE(t.name);
    const TensorView* g = gguf->find_tensor(t.name);
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(g->dtype, t.dtype);
    EXPECT_EQ(g->shape, t.shape);
    ASSERT_EQ(g->nbytes, t.nbytes);
    EXPECT_EQ(std::memcmp(g->data, t.data, t.nbytes), 0);
  }
  // Tied classifier: the GGUF conversion stores a copy of the embedding as output.weight.
  const TensorView* output = gguf->find_tensor("output.weight");
  ASSERT_NE(output, nullptr);
  EXPECT_EQ(std::memcmp(output->data, bin.tensors.front().data, output->nbytes), 0);
}

TEST(Llama2c, FormatDetection) {
  EXPECT_TRUE(looks_like_llama2c(stories(".bin")));
  EXPECT_FALSE(looks_like_llama2c(stories(".gguf")));
  EXPECT_FALSE(looks_like_llama2c(testing::shared_dir() + "/models/stories260K/tok512.bin"));
  EXPECT_FALSE(looks_like_llama2c(testing::shared_dir() + "/models/stories260K/missing.bin"));
  EXPECT_FALSE(looks_like_llama2c(testing::shared_dir() + "/models/stories260K"));
}

// A tiny synthetic checkpoint whose floats are their own index, so every view's
// position can be checked.
struct Tiny {
  int32_t dim = 8, hidden = 12, layers = 2, heads = 2, kv_heads = 1, vocab = 6, seq = 4;
  bool shared = false;
  int64_t kv_dim() const { return dim / heads * kv_heads; }
  int64_t float_count() const {
    int64_t n =
        int64_t{vocab} * dim +
        layers * (2 * dim + 2 * dim * dim + 2 * kv_dim() * dim + 3 * int64_t{hidden} * dim) + dim +
        int64_t{seq} * (dim / heads);
    return shared ? n : n + int64_t{vocab} * dim;
  }
  Bytes bytes() const {
    const int32_t header[7] = {dim, hidden, layers, heads, kv_heads, shared ? vocab : -vocab, seq};
    Bytes b(28 + float_count() * 4);
    std::memcpy(b.data(), header, 28);
    for (int64_t i = 0; i < float_count(); ++i) {
      const float x = static_cast<float>(i);
      std::memcpy(b.data() + 28 + 4 * i, &x, 4);
    }
    return b;
  }
};

float first_float(const Llama2cFile& f, const std::string& name) {
  for (const TensorView& t : f.tensors) {
    if (t.name == name) return *static_cast<const float*>(t.data);
  }
  ADD_FAILURE() << name << " not found";
  return -1;
}

TEST(Llama2c, UntiedClassifierAndLayerOrder) {
  TempDir dir;
  Tiny tiny;
  write_bytes(dir.file("tiny.bin"), tiny.bytes());
  EXPECT_TRUE(looks_like_llama2c(dir.file("tiny.bin")));
  const Llama2cFile f = open_llama2c(dir.file("tiny.bin"));
  EXPECT_FALSE(f.config.shared_classifier);
  EXPECT_EQ(f.config.vocab_size, 6);
  ASSERT_EQ(f.tensors.size(), 1u + 2 * 9 + 2);
  // Offsets (in floats) following run.c's memory_map_weights.
  const int64_t emb = 6 * 8, rms = 8, wq = 64, wk = 4 * 8, w1 = 12 * 8;
  int64_t at = 0;
  EXPECT_EQ(first_float(f, "token_embd.weight"), at);
  at += emb;
  EXPECT_EQ(first_float(f, "blk.0.attn_norm.weight"), at);
  EXPECT_EQ(first_float(f, "blk.1.attn_norm.weight"), at + rms);
  at += 2 * rms;
  EXPECT_EQ(first_float(f, "blk.0.attn_q.weight"), at);
  EXPECT_EQ(first_float(f, "blk.1.attn_q.weight"), at + wq);
  at += 2 * wq;
  EXPECT_EQ(first_float(f, "blk.0.attn_k.weight"), at);
  EXPECT_EQ(first_float(f, "blk.1.attn_k.weight"), at + wk);
  at += 2 * wk;
  EXPECT_EQ(first_float(f, "blk.0.attn_v.weight"), at);
  at += 2 * wk;
  EXPECT_EQ(first_float(f, "blk.0.attn_output.weight"), at);
  at += 2 * wq;
  EXPECT_EQ(first_float(f, "blk.1.ffn_norm.weight"), at + rms);
  at += 2 * rms;
  EXPECT_EQ(first_float(f, "blk.0.ffn_gate.weight"), at);
  at += 2 * w1;
  EXPECT_EQ(first_float(f, "blk.0.ffn_down.weight"), at);
  at += 2 * w1;
  EXPECT_EQ(first_float(f, "blk.1.ffn_up.weight"), at + w1);
  at += 2 * w1;
  EXPECT_EQ(first_float(f, "output_norm.weight"), at);
  at += 8 + 4 * 4;  // final norm, then freq_cis_real/imag (seq_len * head_size / 2 each)
  EXPECT_EQ(first_float(f, "output.weight"), at);
  const TensorView& out = f.tensors.back();
  EXPECT_EQ(out.name, "output.weight");
  EXPECT_EQ(out.shape, (std::vector<int64_t>{6, 8}));
  EXPECT_EQ(static_cast<const uint8_t*>(out.data) + out.nbytes,
            f.mapping->data() + f.mapping->size());
  EXPECT_EQ(f.tensors[1 + 2 * 3].shape, (std::vector<int64_t>{4, 8}));   // blk.1.attn_k
  EXPECT_EQ(f.tensors[1 + 2 * 7].shape, (std::vector<int64_t>{8, 12}));  // blk.0.ffn_down
}

TEST(Llama2cHostile, ImplausibleHeadersAndSizes) {
  TempDir dir;
  struct Case {
    const char* name;
    int field;  // header index to overwrite, or -1
    int32_t value;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"zero dim", 0, 0, "dim 0 is out of range"},
      {"negative hidden", 1, -5, "hidden_dim -5 is out of range"},
      {"zero layers", 2, 0, "n_layers 0 is out of range"},
      {"huge layers", 2, 1 << 30, "n_layers 1073741824 is out of range"},
      {"heads not dividing dim", 3, 3, "n_heads 3 does not divide dim 8"},
      {"kv heads not dividing heads", 4, 3, "n_kv_heads 3 does not divide n_heads 2"},
      {"odd head size", 3, 8, "head size 1 is odd"},
      {"zero vocab", 5, 0, "vocab_size 0 is out of range"},
      {"huge vocab", 5, INT32_MIN, "vocab_size -2147483648 is out of range"},
      {"zero seq_len", 6, 0, "seq_len 0 is out of range"},
      {"bigger layers", 2, 3, "expects"},
      {"tied flag flipped", 5, 6, "expects 4284 bytes but the file has 4476"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Bytes bytes = Tiny().bytes();
    std::memcpy(bytes.data() + 4 * c.field, &c.value, 4);
    write_bytes(dir.file("bad.bin"), bytes);
    const std::string message = error_of([&] { open_llama2c(dir.file("bad.bin")); });
    EXPECT_NE(message.find(c.expected), std::string::npos) << message;
    EXPECT_NE(message.find("bad.bin: "), std::string::npos) << message;
    EXPECT_FALSE(looks_like_llama2c(dir.file("bad.bin")));
  }
  Bytes longer = Tiny().bytes();
  longer.resize(longer.size() + 4);
  write_bytes(dir.file("long.bin"), longer);
  EXPECT_NE(error_of([&] {
              open_llama2c(dir.file("long.bin"));
            }).find("expects 4476 bytes but the file has 4480"),
            std::string::npos);
  EXPECT_FALSE(looks_like_llama2c(dir.file("long.bin")));
}

TEST(Llama2cHostile, TruncationAtEveryOffsetThrows) {
  TempDir dir;
  Tiny tiny;  // an even smaller model: 137 floats
  tiny.dim = 4;
  tiny.hidden = 4;
  tiny.layers = 1;
  tiny.heads = 2;
  tiny.kv_heads = 1;
  tiny.vocab = 2;
  tiny.seq = 2;
  const Bytes bytes = tiny.bytes();
  write_bytes(dir.file("cut.bin"), bytes);
  ASSERT_NO_THROW(open_llama2c(dir.file("cut.bin")));
  for (size_t n = 0; n < bytes.size(); ++n) {
    write_bytes(dir.file("cut.bin"), bytes, n);
    EXPECT_THROW(open_llama2c(dir.file("cut.bin")), Error) << n;
    if (n % 97 == 0) {
      EXPECT_FALSE(looks_like_llama2c(dir.file("cut.bin")));
    }
  }
  EXPECT_NE(error_of([&] { open_llama2c(dir.file("cut.bin")); }).find("size mismatch"),
            std::string::npos);
  write_bytes(dir.file("cut.bin"), bytes, 27);
  EXPECT_NE(error_of([&] { open_llama2c(dir.file("cut.bin")); }).find("too small"),
            std::string::npos);
}

}  // namespace
}  // namespace edgelm
