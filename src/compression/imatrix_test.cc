// Importance matrices: collection on stories260K, the llama.cpp file formats, and the
// quantization error they reduce.
#include "compression/imatrix.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "compression/quantize.h"
#include "compression/test_helpers.h"
#include "formats/gguf.h"
#include "kernels/quant_formats.h"

namespace edgelm::compression {
namespace {

using namespace testing;

const Imatrix& stories_imatrix() {
  static const Imatrix m = [] {
    auto model = load_model(kStories + "/stories260K.bin");
    ImatrixOptions o;
    o.context = 128;
    o.max_chunks = 8;
    o.threads = 2;
    return collect_imatrix(*model, stories_text().substr(0, stories_text().size() / 2), o);
  }();
  return m;
}

TEST(Imatrix, CollectsEveryMatrixOfStories260K) {
  const Imatrix& m = stories_imatrix();
  EXPECT_EQ(m.chunks, 8);
  EXPECT_EQ(m.entries.size(), 5u * 7u + 1u);  // 7 per layer + the tied output head
  auto model = load_model(kStories + "/stories260K.bin");
  check_imatrix_matches(m, *model, "collected");
  EXPECT_EQ(m.entries.at("blk.0.ffn_down.weight").importance.size(), 172u);
  EXPECT_EQ(m.entries.at("token_embd.weight").importance.size(), 64u);
  for (const auto& [name, e] : m.entries) {
    EXPECT_EQ(e.ncall, 8) << name;
    double sum = 0;
    for (float v : e.importance) {
      EXPECT_TRUE(std::isfinite(v) && v >= 0) << name;
      sum += v;
    }
    EXPECT_GT(sum, 0) << name;
  }
  // q, k and v see the same input.
  EXPECT_EQ(m.entries.at("blk.2.attn_q.weight").importance,
            m.entries.at("blk.2.attn_v.weight").importance);
}

TEST(Imatrix, MeanSquaresAreTheInputStatistics) {
  // attn_q's input is rmsnorm(x) * w: per token, the squares of rmsnorm(x) average to 1, so
  // mean over columns of importance / w^2 must be 1 (up to rms_eps).
  auto model = load_model(kStories + "/stories260K.bin");
  const std::vector<float>& imp = stories_imatrix().entries.at("blk.0.attn_q.weight").importance;
  const float* w = model->weights.layers[0].attn_norm;
  double mean = 0;
  for (int i = 0; i < 64; ++i) {
    ASSERT_NE(w[i], 0.0f);
    mean += imp[i] / (static_cast<double>(w[i]) * w[i]) / 64.0;
  }
  EXPECT_NEAR(mean, 1.0, 1e-2);
}

TEST(Imatrix, LegacyFormatRoundTrips) {
  TempDir dir;
  const Imatrix& m = stories_imatrix();
  Imatrix named = m;
  named.dataset = "tinystories.txt";
  write_imatrix_dat(named, dir.file("i.dat"));
  EXPECT_FALSE(fs::exists(dir.file("i.dat.tmp")));
  const Imatrix r = read_imatrix(dir.file("i.dat"));
  EXPECT_EQ(r.chunks, 8);
  EXPECT_EQ(r.dataset, "tinystories.txt");
  ASSERT_EQ(r.entries.size(), m.entries.size());
  for (const auto& [name, e] : m.entries) {
    const ImatrixEntry& got = r.entries.at(name);
    EXPECT_EQ(got.ncall, e.ncall);
    ASSERT_EQ(got.importance.size(), e.importance.size());
    for (size_t i = 0; i < e.importance.size(); ++i) {
      EXPECT_FLOAT_EQ(got.importance[i], e.importance[i]) << name << " " << i;
    }
  }
  // Layout check: first entry's name length follows the entry count.
  const std::string bytes = read_text(dir.file("i.dat"));
  int32_t n = 0;
  std::memcpy(&n, bytes.data(), 4);
  EXPECT_EQ(n, static_cast<int32_t>(m.entries.size()));
}

TEST(Imatrix, ReadsLlamaCppGgufFormat) {
  TempDir dir;
  GgufWriter w;
  w.set_string("general.type", "imatrix");
  w.set_u32("imatrix.chunk_count", 4);
  w.set_string_array("imatrix.datasets", {"calib.txt"});
  const std::vector<float> sums = {4, 8, 0, 2};
  const std::vector<float> counts = {4};
  w.add_tensor("blk.0.attn_q.weight.in_sum2", DType::F32, {1, 4}, sums.data(), 16);
  w.add_tensor("blk.0.attn_q.weight.counts", DType::F32, {1, 1}, counts.data(), 4);
  w.write(dir.file("i.gguf"));
  const Imatrix r = read_imatrix(dir.file("i.gguf"));
  EXPECT_EQ(r.chunks, 4);
  EXPECT_EQ(r.dataset, "calib.txt");
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.entries.at("blk.0.attn_q.weight").importance, (std::vector<float>{1, 2, 0, 0.5f}));
}

TEST(Imatrix, MalformedFilesAreErrors) {
  TempDir dir;
  const std::string path = dir.file("bad.dat");
  auto write = [&](const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; };
  auto expect_error = [&](const std::string& what) {
    const std::string e = error_of([&] { read_imatrix(path); });
    EXPECT_NE(e.find(what), std::string::npos) << e;
    EXPECT_NE(e.find(path), std::string::npos) << e;
  };
  write("");
  expect_error("truncated");
  write(std::string("\xff\xff\xff\x7f", 4));
  expect_error("entry count");
  Imatrix one;
  one.entries["blk.0.attn_q.weight"].importance = {1, 2, 3};
  one.entries["blk.0.attn_q.weight"].ncall = 2;
  write_imatrix_dat(one, path);
  std::string good = read_text(path);
  write(good.substr(0, good.size() - 20));  // cut inside the values
  expect_error("truncated");
  std::string negative = good;
  const float minus = -1;
  std::memcpy(negative.data() + 4 + 4 + 19 + 4 + 4, &minus, 4);
  write(negative);
  expect_error("negative or non-finite");
  std::string huge = good;
  const int32_t n = 1 << 30;
  std::memcpy(huge.data() + 4 + 4 + 19 + 4, &n, 4);
  write(huge);
  expect_error("values");
}

TEST(Imatrix, ShortTextOrBadContextIsAnError) {
  auto model = load_model(kStories + "/stories260K.bin");
  ImatrixOptions o;
  o.context = 128;
  EXPECT_NE(error_of([&] {
              collect_imatrix(*model, "Once upon a time.", o);
            }).find("fewer than one chunk"),
            std::string::npos);
  o.context = 100000;
  EXPECT_NE(error_of([&] { collect_imatrix(*model, stories_text(), o); }).find("--ctx"),
            std::string::npos);
}

// The weighted quantizers minimize sum_j imp_j (w_j - q_j)^2: with the imatrix that error
// is lower than with plain rounding, at the same size.
TEST(Imatrix, LowersActivationWeightedErrorAtEqualSize) {
  TempDir dir;
  write_imatrix_dat(stories_imatrix(), dir.file("i.dat"));
  auto original = load_model(kStories + "/stories260K.bin");
  for (const char* type : {"q4_0", "q4_1", "q5_0"}) {
    SCOPED_TRACE(type);
    QuantizeOptions o;
    o.input = kStories + "/stories260K.bin";
    o.type = type;
    o.pure = true;
    o.output = dir.file("plain.gguf");
    const QuantizeSummary plain = quantize_model(o);
    o.imatrix = dir.file("i.dat");
    o.output = dir.file("imatrix.gguf");
    const QuantizeSummary weighted = quantize_model(o);
    EXPECT_EQ(plain.output_bytes, weighted.output_bytes);
    auto a = load_model(dir.file("plain.gguf"));
    auto b = load_model(dir.file("imatrix.gguf"));
    const Imatrix& m = stories_imatrix();
    double err_plain = 0, err_weighted = 0;
    int used = 0;
    for (int l = 0; l < 5; ++l) {
      const LayerWeights* sets[3] = {&original->weights.layers[l], &a->weights.layers[l],
                                     &b->weights.layers[l]};
      auto mats = [](const LayerWeights& L) {
        return std::vector<const WeightMatrix*>{&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up};
      };
      const char* names[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"};
      for (int k = 0; k < 6; ++k) {
        const WeightMatrix& w = *mats(*sets[0])[k];
        const WeightMatrix& qa = *mats(*sets[1])[k];
        const WeightMatrix& qb = *mats(*sets[2])[k];
        const std::vector<float>& imp =
            m.entries.at("blk." + std::to_string(l) + "." + names[k] + ".weight").importance;
        std::vector<float> ra(w.cols), rb(w.cols);
        for (int64_t r = 0; r < w.rows; ++r) {
          const float* x = static_cast<const float*>(w.data) + r * w.cols;
          dequantize_row_quant(qa.type, static_cast<const uint8_t*>(qa.data) + r * qa.row_bytes,
                               ra.data(), w.cols);
          dequantize_row_quant(qb.type, static_cast<const uint8_t*>(qb.data) + r * qb.row_bytes,
                               rb.data(), w.cols);
          for (int64_t i = 0; i < w.cols; ++i) {
            err_plain += imp[i] * (ra[i] - x[i]) * (ra[i] - x[i]);
            err_weighted += imp[i] * (rb[i] - x[i]) * (rb[i] - x[i]);
          }
        }
        ++used;
      }
    }
    EXPECT_EQ(used, 30);
    EXPECT_LT(err_weighted, 0.95 * err_plain) << err_weighted << " vs " << err_plain;
  }
}

}  // namespace
}  // namespace edgelm::compression
