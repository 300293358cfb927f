// GPTQ: the fixed-scale levels it rounds to, the inverse Cholesky it steps with, the output
// error it lowers, the Hessians it is calibrated with, and `quantize --gptq` end to end.
#include "compression/gptq.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "compression/quantize.h"
#include "compression/test_helpers.h"
#include "kernels/quant_formats.h"

namespace edgelm::compression {
namespace {

using namespace testing;
using edgelm::testing::gaussian;

const DType kTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                        DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// Inputs with strongly correlated columns (x = z A, A mixing neighbouring columns, and a few
// columns far larger than the rest), as real activations have; H = x^T x / n.
std::vector<float> correlated_hessian(int64_t cols, int n, uint32_t seed) {
  const std::vector<float> z = gaussian(static_cast<size_t>(n * cols), seed);
  std::vector<float> x(static_cast<size_t>(n * cols), 0.0f);
  for (int t = 0; t < n; ++t) {
    for (int64_t c = 0; c < cols; ++c) {
      float v = 0;
      for (int64_t k = std::max<int64_t>(0, c - 3); k <= c; ++k) v += z[t * cols + k];
      v += 0.8f * z[t * cols + (c * 7) % cols];
      x[t * cols + c] = v * (c % 17 == 0 ? 6.0f : 1.0f);
    }
  }
  std::vector<float> h(static_cast<size_t>(cols * cols), 0.0f);
  for (int t = 0; t < n; ++t) {
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) h[i * cols + j] += x[t * cols + i] * x[t * cols + j] / n;
    }
  }
  return h;
}

std::vector<uint8_t> plain(DType type, const std::vector<float>& w, int64_t rows, int64_t cols,
                           const float* importance) {
  const size_t row_bytes = dtype_row_bytes(type, cols);
  std::vector<uint8_t> out(row_bytes * rows);
  for (int64_t r = 0; r < rows; ++r) {
    quantize_row(type, w.data() + r * cols, out.data() + r * row_bytes, cols, importance);
  }
  return out;
}

std::vector<uint8_t> gptq(DType type, std::vector<float> w, int64_t rows, int64_t cols,
                          const std::vector<float>& h, GptqOptions options = {}, int threads = 2) {
  ThreadPool pool(threads);
  std::vector<uint8_t> out(dtype_row_bytes(type, cols) * rows);
  gptq_quantize(type, w.data(), rows, cols, gptq_factor(h.data(), cols, options, &pool), options,
                out.data(), &pool);
  return out;
}

// The level grid is the dequantizer's: a block packed with the nearest levels of its own
// scales dequantizes to exactly those levels' values, and rounds each value no worse than the
// format's own quantizer did with the same scales.
TEST(Gptq, LevelsWithFixedScalesAreTheDequantizersValues) {
  for (DType type : kTypes) {
    SCOPED_TRACE(dtype_name(type));
    const int64_t block = dtype_traits(type).block_size;
    const std::vector<float> x = gaussian(static_cast<size_t>(4 * block), 7, 0.3f);
    std::vector<uint8_t> blocks(dtype_row_bytes(type, 4 * block));
    quantize_row(type, x.data(), blocks.data(), 4 * block);
    std::vector<float> reference(x.size());
    dequantize_row_quant(type, blocks.data(), reference.data(), 4 * block);

    std::vector<float> expected(x.size());
    std::vector<int> levels(static_cast<size_t>(block));
    for (int64_t b = 0; b < 4; ++b) {
      uint8_t* blk = blocks.data() + b * dtype_traits(type).block_bytes;
      for (int64_t j = 0; j < block; ++j) {
        const LevelGrid g = block_level_grid(type, blk, static_cast<int>(j));
        levels[j] = g.nearest(x[b * block + j]);
        ASSERT_GE(levels[j], g.min_level);
        ASSERT_LE(levels[j], g.max_level);
        expected[b * block + j] = g.value(levels[j]);
      }
      pack_block_levels(type, levels.data(), blk);
    }
    std::vector<float> packed(x.size());
    dequantize_row_quant(type, blocks.data(), packed.data(), 4 * block);
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(packed[i], expected[i]) << i;
      EXPECT_LE(std::fabs(packed[i] - x[i]), std::fabs(reference[i] - x[i]) + 1e-6f) << i;
    }
  }
  EXPECT_FALSE(block_levels_supported(DType::Q2_K));
  EXPECT_FALSE(block_levels_supported(DType::F16));
}

// U^T U is the damped H's inverse, U upper triangular; a dead column (H_ii = 0) is marked.
TEST(Gptq, InverseCholeskyInvertsTheDampedHessian) {
  const int64_t n = 96;
  std::vector<float> h = correlated_hessian(n, 300, 3);
  for (int64_t j = 0; j < n; ++j) h[5 * n + j] = h[j * n + 5] = 0.0f;  // column 5 never sees input
  ThreadPool pool(2);
  std::vector<bool> dead;
  const double damp = 0.01;
  const std::vector<float> u = gptq_inverse_cholesky(h.data(), n, damp, dead, &pool);
  ASSERT_EQ(dead.size(), static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(dead[i], i == 5) << i;
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += i == 5 ? 1.0 : h[i * n + i];
  mean /= n;
  std::vector<double> damped(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      damped[i * n + j] = h[i * n + j] + (i == j ? damp * mean + (i == 5 ? 1.0 : 0.0) : 0.0);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < i; ++j) ASSERT_EQ(u[i * n + j], 0.0f);
  }
  // H (U^T U) = I.
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k) {
        double inv_kj = 0;  // (U^T U)[k][j]
        for (int64_t m = 0; m <= std::min(k, j); ++m) inv_kj += u[m * n + k] * u[m * n + j];
        s += damped[i * n + k] * inv_kj;
      }
      worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
    }
  }
  EXPECT_LT(worst, 1e-3);
}

// With a diagonal H there is no error to move (U is diagonal): every weight is rounded to the
// nearest level of the scales the format's own search picks, which is never worse than that
// search's own rounding, in either column order (act-order sorts by the diagonal).
TEST(Gptq, DiagonalHessianIsPlainRounding) {
  for (DType type : kTypes) {
    for (bool act_order : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(type)) + (act_order ? " act-order" : ""));
      const int64_t rows = 20, cols = 2 * kQK_K;
      const std::vector<float> w = gaussian(static_cast<size_t>(rows * cols), 11, 0.05f);
      std::vector<float> diagonal(static_cast<size_t>(cols * cols), 0.0f);
      for (int64_t i = 0; i < cols; ++i) diagonal[i * cols + i] = 1.0f + static_cast<float>(i % 7);
      GptqOptions o;
      o.weighted_scales = false;
      o.act_order = act_order;
      const std::vector<uint8_t> g = gptq(type, w, rows, cols, diagonal, o);
      const std::vector<uint8_t> p = plain(type, w, rows, cols, nullptr);
      std::vector<float> gv(static_cast<size_t>(cols)), pv(static_cast<size_t>(cols));
      const size_t row_bytes = dtype_row_bytes(type, cols);
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row_quant(type, g.data() + r * row_bytes, gv.data(), cols);
        dequantize_row_quant(type, p.data() + r * row_bytes, pv.data(), cols);
        for (int64_t i = 0; i < cols; ++i) {
          ASSERT_LE(std::fabs(gv[i] - w[r * cols + i]), std::fabs(pv[i] - w[r * cols + i]) + 1e-7f)
              << r << " " << i;
        }
      }
    }
  }
}

// On correlated inputs GPTQ's output error is well below plain and importance-weighted
// rounding's, at the same size, for every type; threads do not change the result.
TEST(Gptq, LowersOutputErrorOnCorrelatedInputs) {
  const int64_t rows = 48, cols = kQK_K;
  const std::vector<float> h = correlated_hessian(cols, 1024, 5);
  const std::vector<float> w = gaussian(static_cast<size_t>(rows * cols), 13, 0.05f);
  std::vector<float> diag(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) diag[i] = h[i * cols + i];
  for (DType type : kTypes) {
    SCOPED_TRACE(dtype_name(type));
    const double e_plain = output_error(type, w.data(), plain(type, w, rows, cols, nullptr).data(),
                                        rows, cols, h.data());
    const double e_weighted = output_error(
        type, w.data(), plain(type, w, rows, cols, diag.data()).data(), rows, cols, h.data());
    const std::vector<uint8_t> g = gptq(type, w, rows, cols, h);
    const double e_gptq = output_error(type, w.data(), g.data(), rows, cols, h.data());
    EXPECT_LT(e_gptq, 0.75 * std::min(e_plain, e_weighted))
        << "plain " << e_plain << " weighted " << e_weighted << " gptq " << e_gptq;
    EXPECT_EQ(gptq(type, w, rows, cols, h, {}, 1), g);
    GptqOptions act_order;
    act_order.act_order = true;
    const double e_act = output_error(
        type, w.data(), gptq(type, w, rows, cols, h, act_order).data(), rows, cols, h.data());
    EXPECT_LT(e_act, 0.75 * std::min(e_plain, e_weighted)) << "act-order " << e_act;
  }
}

// The paper's sweep written out plainly: one row at a time, every update applied to the whole
// rest of the row at once, a block's scales chosen when the sweep first reaches one of its
// columns (`order`: the sweep's columns, `u` in that order).
std::vector<uint8_t> column_by_column(DType type, const std::vector<float>& w, int64_t rows,
                                      int64_t cols, const std::vector<int64_t>& order,
                                      const std::vector<float>& u) {
  const int64_t block = dtype_traits(type).block_size;
  const size_t row_bytes = dtype_row_bytes(type, cols);
  std::vector<uint8_t> out(row_bytes * rows);
  std::vector<int> levels(static_cast<size_t>(cols));
  std::vector<float> values(static_cast<size_t>(block));
  std::vector<int64_t> position(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) position[order[i]] = i;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> ws(static_cast<size_t>(cols));  // in sweep order
    for (int64_t i = 0; i < cols; ++i) ws[i] = w[r * cols + order[i]];
    std::vector<bool> started(static_cast<size_t>(cols / block), false);
    for (int64_t i = 0; i < cols; ++i) {
      const int64_t c = order[i], b = c / block;
      uint8_t* blk = out.data() + r * row_bytes + b * dtype_traits(type).block_bytes;
      if (!started[b]) {
        for (int64_t k = 0; k < block; ++k) values[k] = ws[position[b * block + k]];
        quantize_row(type, values.data(), blk, block);
        started[b] = true;
      }
      const LevelGrid g = block_level_grid(type, blk, static_cast<int>(c % block));
      levels[c] = g.nearest(ws[i]);
      const float e = (ws[i] - g.value(levels[c])) / u[i * cols + i];
      for (int64_t j = i; j < cols; ++j) ws[j] -= e * u[i * cols + j];
    }
    for (int64_t b = 0; b < cols / block; ++b) {
      pack_block_levels(type, levels.data() + b * block,
                        out.data() + r * row_bytes + b * dtype_traits(type).block_bytes);
    }
  }
  return out;
}

// The sweep in lazy batches (in-batch updates at once, the rest by one product per batch; in
// act-order a block's columns past the batch brought up to date when its scales are chosen) is
// the plain sweep reordered: against it, on 4 batches of correlated columns.
TEST(Gptq, LazyBatchesMatchTheColumnByColumnSweep) {
  const int64_t rows = 40, cols = 4 * kQK_K;
  const std::vector<float> h = correlated_hessian(cols, 256, 17);
  const std::vector<float> w = gaussian(static_cast<size_t>(rows * cols), 19, 0.05f);
  ThreadPool pool(2);
  for (bool act_order : {false, true}) {
    GptqOptions o;
    o.weighted_scales = false;
    o.act_order = act_order;
    const GptqFactor f = gptq_factor(h.data(), cols, o, &pool);
    for (DType type : {DType::Q4_0, DType::Q4_K, DType::Q6_K}) {
      SCOPED_TRACE(std::string(dtype_name(type)) + (act_order ? " act-order" : ""));
      const size_t row_bytes = dtype_row_bytes(type, cols);
      const std::vector<uint8_t> expected = column_by_column(type, w, rows, cols, f.order, f.u);
      const std::vector<uint8_t> got = gptq(type, w, rows, cols, h, o);
      const double e_expected = output_error(type, w.data(), expected.data(), rows, cols, h.data());
      const double e_got = output_error(type, w.data(), got.data(), rows, cols, h.data());
      EXPECT_NEAR(e_got, e_expected, 0.01 * e_expected);
      // Float sums in another order move some weights across a rounding boundary, and each such
      // move changes the errors that later columns take up (0.5-2.4% of the weights here).
      std::vector<float> a(static_cast<size_t>(cols)), b(static_cast<size_t>(cols));
      int64_t differ = 0;
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row_quant(type, expected.data() + r * row_bytes, a.data(), cols);
        dequantize_row_quant(type, got.data() + r * row_bytes, b.data(), cols);
        for (int64_t i = 0; i < cols; ++i) differ += a[i] != b[i];
      }
      EXPECT_LT(differ, rows * cols / 20)
          << differ << " of " << rows * cols << " " << e_got << " " << e_expected;
    }
  }
}

// A matrix whose input was always zero: every column is dead, the weights go to zero (any
// value costs nothing), and nothing is NaN.
TEST(Gptq, ZeroHessianGivesZeroWeights) {
  const int64_t rows = 16, cols = kQK_K;
  const std::vector<float> zero(static_cast<size_t>(cols * cols), 0.0f);
  const std::vector<float> w = gaussian(static_cast<size_t>(rows * cols), 23);
  for (DType type : kTypes) {
    SCOPED_TRACE(dtype_name(type));
    const std::vector<uint8_t> g = gptq(type, w, rows, cols, zero);
    std::vector<float> v(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row_quant(type, g.data() + r * dtype_row_bytes(type, cols), v.data() + r * cols,
                           cols);
    }
    for (float x : v) ASSERT_EQ(x, 0.0f);
  }
}

TEST(Gptq, BadInputIsAnError) {
  const int64_t cols = 64;
  std::vector<float> h(static_cast<size_t>(cols * cols), 0.0f);
  for (int64_t i = 0; i < cols; ++i) h[i * cols + i] = 1.0f;
  const std::vector<float> w = gaussian(static_cast<size_t>(4 * cols), 1);
  ThreadPool pool(1);
  std::vector<float> scratch = w;
  std::vector<uint8_t> out(4096);
  const GptqFactor f = gptq_factor(h.data(), cols, {}, &pool);
  EXPECT_NE(error_of([&] {
              gptq_quantize(DType::Q2_K, scratch.data(), 1, cols, f, {}, out.data(), &pool);
            }).find("cannot write type q2_K"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              gptq_quantize(DType::Q4_K, scratch.data(), 1, cols, f, {}, out.data(), &pool);
            }).find("not a whole number of q4_K blocks"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              gptq_quantize(DType::Q4_0, scratch.data(), 2, cols / 2, f, {}, out.data(), &pool);
            }).find("factor has 64 columns"),
            std::string::npos);
  GptqOptions negative;
  negative.damp = -1;
  EXPECT_NE(error_of([&] { gptq_factor(h.data(), cols, negative, &pool); }).find("damping"),
            std::string::npos);
  std::vector<float> bad = h;
  bad[3 * cols + 4] = std::nanf("");
  EXPECT_NE(error_of([&] { gptq(DType::Q4_0, w, 4, cols, bad); }).find("non-finite"),
            std::string::npos);
  bad = h;
  bad[2 * cols + 2] = -1.0f;
  EXPECT_NE(error_of([&] { gptq(DType::Q4_0, w, 4, cols, bad); }).find("bad diagonal"),
            std::string::npos);
  // Symmetric with a unit diagonal but indefinite: the damping cannot save it.
  bad = h;
  bad[0 * cols + 1] = bad[1 * cols + 0] = 3.0f;
  GptqOptions o;
  o.damp = 0.0;
  EXPECT_NE(error_of([&] { gptq(DType::Q4_0, w, 4, cols, bad, o); }).find("not positive definite"),
            std::string::npos);
}

// The Hessians' diagonals are the imatrix of the same text (two accumulations of the same
// activations: x^T x by the product kernel against sums of squares in double).
TEST(Gptq, HessianDiagonalIsTheImatrix) {
  auto model = load_model(kStories + "/stories260K.bin");
  const std::string& text = stories_text();
  ImatrixOptions o;
  o.context = 128;
  o.max_chunks = 4;
  o.threads = 2;
  const Hessians h = collect_hessians(*model, text, o, 0, 5);
  const Imatrix m = collect_imatrix(*model, text, o);
  EXPECT_EQ(h.chunks, 4);
  EXPECT_EQ(h.tokens, 4 * 128);
  EXPECT_NE(h.find("token_embd.weight", 64), nullptr);  // tied: GPTQ'd as the output head
  EXPECT_EQ(h.find("blk.0.attn_q.weight", 65), nullptr);
  EXPECT_EQ(h.find("blk.0.attn_q.weight", 64), h.find("blk.0.attn_v.weight", 64));
  int checked = 0;
  for (const auto& [name, e] : m.entries) {
    const auto cols = static_cast<int64_t>(e.importance.size());
    const float* hm = h.find(name, cols);
    ASSERT_NE(hm, nullptr) << name;
    for (int64_t i = 0; i < cols; ++i) {
      ASSERT_NEAR(hm[i * cols + i], e.importance[i], 1e-4f * (1.0f + e.importance[i])) << name;
      ASSERT_EQ(hm[i * cols + (i + 1) % cols], hm[((i + 1) % cols) * cols + i]) << name;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 5 * 7 + 1);
  // What the memory check counts is what is held.
  int64_t held = 0;
  for (const std::vector<float>& m : h.matrices) held += static_cast<int64_t>(m.size());
  EXPECT_EQ(hessian_bytes(model->config, 0, 5), held * 4);
  EXPECT_EQ(held, 5 * (3 * 64 * 64 + 172 * 172) + 64 * 64);
}

// `quantize --gptq` on stories260K: every layer matrix of the type goes through GPTQ, and each
// one's output error on the calibration text is below plain rounding's (the file is otherwise
// the same: same types, same size).
TEST(Gptq, QuantizeWithGptqLowersEveryMatrixsOutputError) {
  TempDir dir;
  const std::string calib = write_calibration_text(dir, 20000);
  QuantizeOptions o;
  o.input = kStories + "/stories260K.bin";
  o.type = "q4_0";
  o.pure = true;
  o.threads = 2;
  o.output = dir.file("plain.gguf");
  const QuantizeSummary plain_summary = quantize_model(o);
  o.output = dir.file("gptq.gguf");
  o.gptq_text = calib;
  o.gptq_calibration.context = 128;
  std::vector<int> calibration_done;
  const QuantizeSummary s =
      quantize_model(o, nullptr, [&](int done, int) { calibration_done.push_back(done); });
  EXPECT_GT(s.gptq_chunks, 10);
  ASSERT_EQ(calibration_done.size(), static_cast<size_t>(s.gptq_chunks) + 1);
  EXPECT_EQ(calibration_done.front(), 0);
  EXPECT_EQ(calibration_done.back(), s.gptq_chunks);
  EXPECT_EQ(s.output_bytes, plain_summary.output_bytes);
  int gptq_tensors = 0;
  for (const TensorReport& t : s.tensors) {
    if (!t.used_gptq) continue;
    ++gptq_tensors;
    EXPECT_GT(t.gptq_error_ratio, 0.0) << t.name;
    EXPECT_LT(t.gptq_error_ratio, 0.9) << t.name;  // on 64 sampled rows, as the full check below
  }
  EXPECT_EQ(gptq_tensors, 5 * 6 + 1);  // ffn_down (172 wide) falls back to F16; the tied head

  auto source = load_model(o.input);
  auto plain_model = load_model(dir.file("plain.gguf"));
  auto gptq_model = load_model(dir.file("gptq.gguf"));
  ImatrixOptions co = o.gptq_calibration;
  co.threads = 2;
  const Hessians h = collect_hessians(*source, read_text(calib), co, 0, 5);
  for (int l = 0; l < 5; ++l) {
    const LayerWeights& src = source->weights.layers[l];
    const LayerWeights& a = plain_model->weights.layers[l];
    const LayerWeights& b = gptq_model->weights.layers[l];
    const WeightMatrix* srcs[] = {&src.wq, &src.wk, &src.wv, &src.wo, &src.w_gate, &src.w_up};
    const WeightMatrix* as[] = {&a.wq, &a.wk, &a.wv, &a.wo, &a.w_gate, &a.w_up};
    const WeightMatrix* bs[] = {&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up};
    for (int k = 0; k < 6; ++k) {
      const WeightMatrix& m = *srcs[k];
      const std::string name = matrix_tensor_name(l, static_cast<MatrixKind>(k));
      SCOPED_TRACE(name);
      std::vector<float> w(static_cast<size_t>(m.rows * m.cols));
      for (int64_t r = 0; r < m.rows; ++r) dequantize_matrix_row(m, r, w.data() + r * m.cols);
      // dequantize_matrix_row reads interleaved layouts too (load_model may re-lay q4_0).
      auto error_of_model = [&](const WeightMatrix& q) {
        std::vector<float> deq(static_cast<size_t>(q.cols));
        std::vector<double> delta(static_cast<size_t>(q.cols));
        const float* hm = h.find(name, q.cols);
        double total = 0;
        for (int64_t r = 0; r < q.rows; ++r) {
          dequantize_matrix_row(q, r, deq.data());
          for (int64_t i = 0; i < q.cols; ++i) delta[i] = w[r * q.cols + i] - deq[i];
          for (int64_t i = 0; i < q.cols; ++i) {
            double s = 0;
            for (int64_t j = 0; j < q.cols; ++j) s += hm[i * q.cols + j] * delta[j];
            total += delta[i] * s;
          }
        }
        return total;
      };
      EXPECT_LT(error_of_model(*bs[k]), 0.9 * error_of_model(*as[k]));
    }
  }
}

// A memory budget below all the Hessians calibrates the layers in several passes, with the
// same result: each pass runs the same forward pass. Partial passes hold only their layers.
TEST(Gptq, PassesOfFewerLayersGiveTheSameFile) {
  TempDir dir;
  const std::string calib = write_calibration_text(dir, 8000);
  auto model = load_model(kStories + "/stories260K.bin");
  ImatrixOptions co;
  co.context = 128;
  co.threads = 2;
  const Hessians part = collect_hessians(*model, read_text(calib), co, 2, 4);
  EXPECT_EQ(part.find("blk.1.attn_q.weight", 64), nullptr);
  EXPECT_NE(part.find("blk.2.attn_q.weight", 64), nullptr);
  EXPECT_NE(part.find("blk.3.ffn_down.weight", 172), nullptr);
  EXPECT_EQ(part.find("blk.4.attn_q.weight", 64), nullptr);
  EXPECT_NE(part.find("token_embd.weight", 64), nullptr);
  EXPECT_GT(part.tokens, 0);
  EXPECT_NE(error_of([&] { collect_hessians(*model, "x", co, 3, 6); }).find("not layers"),
            std::string::npos);

  QuantizeOptions o;
  o.input = kStories + "/stories260K.bin";
  o.type = "q4_0";
  o.threads = 2;
  o.gptq_text = calib;
  o.gptq_calibration.context = 128;
  o.output = dir.file("one.gguf");
  const QuantizeSummary one = quantize_model(o);
  EXPECT_EQ(one.gptq_passes, 1);
  o.output = dir.file("three.gguf");
  o.gptq_memory_bytes = hessian_bytes(model->config, 0, 2);  // two layers per pass
  const QuantizeSummary three = quantize_model(o);
  EXPECT_EQ(three.gptq_passes, 3);
  EXPECT_EQ(three.gptq_layers_per_pass, 2);
  EXPECT_EQ(read_text(dir.file("one.gguf")), read_text(dir.file("three.gguf")));
  o.gptq_memory_bytes = hessian_bytes(model->config, 0, 1) - 1;
  EXPECT_NE(error_of([&] { quantize_model(o); }).find("one layer's Hessians need"),
            std::string::npos);
}

TEST(Gptq, QuantizeGptqErrorsLeaveNoOutput) {
  TempDir dir;
  QuantizeOptions o;
  o.input = kStories + "/stories260K.bin";
  o.type = "q4_0";
  o.output = dir.file("out.gguf");
  o.gptq_text = dir.file("missing.txt");
  EXPECT_NE(error_of([&] { quantize_model(o); }).find("cannot open the GPTQ calibration text"),
            std::string::npos);
  {
    std::ofstream out(dir.file("short.txt"));
    out << "Once upon a time.";
  }
  o.gptq_text = dir.file("short.txt");
  EXPECT_NE(error_of([&] { quantize_model(o); }).find("fewer than one chunk"), std::string::npos);
  EXPECT_FALSE(fs::exists(o.output));
  EXPECT_FALSE(fs::exists(o.output + ".tmp"));
}

}  // namespace
}  // namespace edgelm::compression
