#include "compression/gptq.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/matmul.h"
#include "kernels/quant_formats.h"
#include "kernels/thread_pool.h"
#include "model/transformer.h"
#include "util/error.h"

namespace edgelm::compression {
namespace {

// The four distinct inputs of a layer's products (Q/K/V share one, gate/up another).
constexpr int kInputsPerLayer = 4;

int input_of(MatrixKind kind) {
  switch (kind) {
    case MatrixKind::kAttnQ:
    case MatrixKind::kAttnK:
    case MatrixKind::kAttnV:
      return 0;
    case MatrixKind::kAttnOutput:
      return 1;
    case MatrixKind::kFfnGate:
    case MatrixKind::kFfnUp:
      return 2;
    case MatrixKind::kFfnDown:
      return 3;
    default:
      return -1;
  }
}

struct HessianCollector {
  Hessians* hessians = nullptr;
  ThreadPool* pool = nullptr;
  std::vector<float> transposed, product;  // scratch, grown to the largest input

  static void hook(void* context, int layer, MatrixKind kind, const float* x, int n, int cols) {
    // The hook sees Q, K and V (gate and up) with the same input: count it once.
    if (kind != MatrixKind::kAttnQ && kind != MatrixKind::kAttnOutput &&
        kind != MatrixKind::kFfnGate && kind != MatrixKind::kFfnDown) {
      return;
    }
    auto* self = static_cast<HessianCollector*>(context);
    self->add(layer * kInputsPerLayer + input_of(kind), x, n, cols);
    if (layer == 0 && kind == MatrixKind::kAttnQ) self->hessians->tokens += n;
  }

  // H += x^T x through the F32 product kernel: with W = x^T (cols rows of n values) and the
  // rows of x^T as the batch, y[a][b] = sum_t x[t][a] * x[t][b].
  void add(int entry, const float* x, int n, int cols) {
    std::vector<float>& h = hessians->matrices[static_cast<size_t>(entry)];
    const auto c = static_cast<size_t>(cols);
    if (h.empty()) {
      h.assign(c * c, 0.0f);
      hessians->cols[static_cast<size_t>(entry)] = cols;
    }
    transposed.resize(c * static_cast<size_t>(n));
    for (int t = 0; t < n; ++t) {
      for (size_t a = 0; a < c; ++a) transposed[a * n + t] = x[t * c + a];
    }
    product.resize(c * c);
    const WeightMatrix xt{DType::F32, cols, n, transposed.data(), static_cast<size_t>(n) * 4};
    matmul(xt, transposed.data(), cols, product.data(), pool);
    for (size_t i = 0; i < c * c; ++i) h[i] += product[i];
  }
};

// Dot product of doubles with independent partial sums (the compiler keeps FP order).
double dot(const double* a, const double* b, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace

// With J the reversal permutation, J H J = L L^T (Cholesky), so
// H = (J L J)(J L J)^T with J L J upper triangular, H^-1 = U^T U for U = (J L J)^-1 = J L^-1 J:
// one Cholesky and one triangular inverse, no full inverse.
std::vector<float> gptq_inverse_cholesky(const float* hessian, int64_t n, double damp_fraction,
                                         std::vector<bool>& dead, ThreadPool* pool) {
  const auto un = static_cast<size_t>(n);
  dead.assign(un, false);
  double mean_diag = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float d = hessian[i * n + i];
    if (!std::isfinite(d) || d < 0) {
      fail("gptq: the Hessian has a bad diagonal entry (", d, " at column ", i, ")");
    }
    dead[static_cast<size_t>(i)] = d == 0;  // a column that never saw input
    mean_diag += d == 0 ? 1.0 : d;
  }
  mean_diag /= static_cast<double>(n);
  const double damp = damp_fraction * mean_diag;

  // a = J H J, damped; dead columns get H_ii = 1 (their weights are zeroed).
  std::vector<double> a(un * un);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const float h = hessian[i * n + j];
      if (!std::isfinite(h)) fail("gptq: the Hessian has a non-finite entry at (", i, ", ", j, ")");
      double v = dead[static_cast<size_t>(i)] || dead[static_cast<size_t>(j)] ? 0.0 : h;
      if (i == j) v = (dead[static_cast<size_t>(i)] ? 1.0 : v) + damp;
      a[static_cast<size_t>((n - 1 - i) * n + (n - 1 - j))] = v;
    }
  }

  // Cholesky in place (lower triangle), a column at a time, its rows in parallel.
  for (int64_t j = 0; j < n; ++j) {
    double* row_j = a.data() + j * n;
    const double s = row_j[j] - dot(row_j, row_j, j);
    if (!(s > 0) || !std::isfinite(s)) {
      fail("gptq: the Hessian is not positive definite at column ", n - 1 - j,
           " (raise --gptq-damp)");
    }
    row_j[j] = std::sqrt(s);
    const double inv = 1.0 / row_j[j];
    const int64_t below = n - 1 - j;
    const int64_t grain = std::max<int64_t>(1, 16384 / (j + 1));
    pool->parallel_for(below, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = j + 1 + begin; i < j + 1 + end; ++i) {
        double* row_i = a.data() + i * n;
        row_i[j] = (row_i[j] - dot(row_i, row_j, j)) * inv;
      }
    });
  }

  // L^-1 by columns: column c of it is xt[c][c..n). Column c costs (n - c)^2 / 2, so threads
  // take every size()-th column rather than contiguous runs.
  std::vector<double> xt(un * un);
  const int threads = pool->size();
  pool->run_on_all([&](int t) {
    for (int64_t c = t; c < n; c += threads) {
      double* x = xt.data() + c * n;
      x[c] = 1.0 / a[static_cast<size_t>(c * n + c)];
      for (int64_t i = c + 1; i < n; ++i) {
        const double* row_i = a.data() + i * n;
        x[i] = -dot(row_i + c, x + c, i - c) / row_i[i];
      }
    }
  });

  // U[p][q] = L^-1[n-1-p][n-1-q] for q >= p.
  std::vector<float> u(un * un, 0.0f);
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t q = p; q < n; ++q) {
      u[static_cast<size_t>(p * n + q)] =
          static_cast<float>(xt[static_cast<size_t>((n - 1 - q) * n + (n - 1 - p))]);
    }
  }
  return u;
}

const float* Hessians::find(const std::string& tensor, int64_t want_cols) const {
  auto it = by_tensor.find(tensor);
  if (it == by_tensor.end()) return nullptr;
  const auto e = static_cast<size_t>(it->second);
  if (matrices[e].empty() || cols[e] != want_cols) return nullptr;
  return matrices[e].data();
}

Hessians collect_hessians(const LoadedModel& model, const std::string& text,
                          const ImatrixOptions& options, const ImatrixProgress& progress) {
  const ModelConfig& c = model.config;
  Hessians h;
  const auto entries = static_cast<size_t>(c.n_layers) * kInputsPerLayer;
  h.matrices.resize(entries);
  h.cols.assign(entries, 0);
  for (int l = 0; l < c.n_layers; ++l) {
    for (int k = 0; k < 7; ++k) {
      const auto kind = static_cast<MatrixKind>(k);
      h.by_tensor[matrix_tensor_name(l, kind)] = l * kInputsPerLayer + input_of(kind);
    }
  }
  ThreadPool pool(options.threads);
  HessianCollector collector;
  collector.hessians = &h;
  collector.pool = &pool;
  // The output head's input, when the head is a matrix of its own (a tied embedding is also
  // looked up by token, which GPTQ's output error does not weigh).
  const int head_entry = static_cast<int>(entries);
  if (!c.tied_embeddings) {
    h.matrices.emplace_back();
    h.cols.push_back(0);
    h.by_tensor["output.weight"] = head_entry;
  }
  h.chunks = run_calibration(
      model, text, options, pool, &HessianCollector::hook, &collector,
      [&](const float* x, int n) {
        if (!c.tied_embeddings) collector.add(head_entry, x, n, c.dim);
      },
      progress);
  const float scale = h.tokens > 0 ? 1.0f / static_cast<float>(h.tokens) : 0.0f;
  for (std::vector<float>& m : h.matrices) {
    for (float& v : m) v *= scale;
  }
  return h;
}

bool gptq_supported(DType type) {
  return block_levels_supported(type);
}

void gptq_quantize(DType type, float* w, int64_t rows, int64_t cols, const float* hessian,
                   const GptqOptions& options, void* out, ThreadPool* pool) {
  if (!gptq_supported(type)) fail("gptq: cannot write type ", dtype_name(type));
  const DTypeTraits& traits = dtype_traits(type);
  const int64_t block = traits.block_size;
  if (cols <= 0 || cols % block != 0) {
    fail("gptq: rows of ", cols, " values are not a whole number of ", dtype_name(type),
         " blocks of ", block);
  }
  if (options.damp < 0 || !std::isfinite(options.damp)) {
    fail("gptq: damping ", options.damp, " must be finite and >= 0");
  }
  std::vector<bool> dead;
  const std::vector<float> u = gptq_inverse_cholesky(hessian, cols, options.damp, dead, pool);
  // Importance for the block scale search: the diagonal (the mean squared input per column).
  std::vector<float> importance(static_cast<size_t>(cols));
  double mean_diag = 0;
  for (int64_t i = 0; i < cols; ++i) mean_diag += hessian[i * cols + i];
  mean_diag /= static_cast<double>(cols);
  for (int64_t i = 0; i < cols; ++i) {
    importance[static_cast<size_t>(i)] =
        hessian[i * cols + i] + static_cast<float>(std::max(options.damp, 1e-6) * mean_diag);
  }

  const size_t row_bytes = dtype_row_bytes(type, cols);
  auto* out_bytes = static_cast<uint8_t*>(out);
  constexpr int64_t kTile = 16;  // rows swept together: U's row is read once per tile
  const int64_t tiles = (rows + kTile - 1) / kTile;
  pool->parallel_for(tiles, 1, [&](int64_t tile_begin, int64_t tile_end) {
    std::vector<int> levels(static_cast<size_t>(kTile * block));
    float err[kTile];
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t r0 = tile * kTile;
      const int64_t count = std::min(kTile, rows - r0);
      float* tile_w = w + r0 * cols;
      for (int64_t r = 0; r < count; ++r) {
        for (int64_t i = 0; i < cols; ++i) {
          if (dead[static_cast<size_t>(i)]) tile_w[r * cols + i] = 0.0f;
        }
      }
      for (int64_t i = 0; i < cols; ++i) {
        const int64_t b = i % block;
        const size_t block_offset = static_cast<size_t>(i / block) * traits.block_bytes;
        const float* u_row = u.data() + i * cols;
        for (int64_t r = 0; r < count; ++r) {
          float* wr = tile_w + r * cols;
          uint8_t* blk = out_bytes + static_cast<size_t>(r0 + r) * row_bytes + block_offset;
          if (b == 0) {
            quantize_row(type, wr + i, blk, block,
                         options.weighted_scales ? importance.data() + i : nullptr);
          }
          const LevelGrid g = block_level_grid(type, blk, static_cast<int>(b));
          const int level = g.nearest(wr[i]);
          levels[static_cast<size_t>(r * block + b)] = level;
          const float q = g.value(level);
          err[r] = (wr[i] - q) / u_row[i];
          wr[i] = q;
        }
        for (int64_t r = 0; r < count; ++r) {
          const float e = err[r];
          if (e == 0) continue;
          float* wr = tile_w + r * cols;
          for (int64_t j = i + 1; j < cols; ++j) wr[j] -= e * u_row[j];
        }
        if (b == block - 1) {
          for (int64_t r = 0; r < count; ++r) {
            pack_block_levels(type, levels.data() + r * block,
                              out_bytes + static_cast<size_t>(r0 + r) * row_bytes + block_offset);
          }
        }
      }
    }
  });
}

double output_error(DType type, const float* w, const void* quantized, int64_t rows, int64_t cols,
                    const float* hessian) {
  const size_t row_bytes = dtype_row_bytes(type, cols);
  std::vector<float> q(static_cast<size_t>(cols));
  std::vector<double> delta(static_cast<size_t>(cols));
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row_quant(type, static_cast<const uint8_t*>(quantized) + r * row_bytes, q.data(),
                         cols);
    for (int64_t i = 0; i < cols; ++i) {
      delta[static_cast<size_t>(i)] = static_cast<double>(w[r * cols + i]) - q[i];
    }
    for (int64_t i = 0; i < cols; ++i) {
      double hd = 0;
      for (int64_t j = 0; j < cols; ++j)
        hd += static_cast<double>(hessian[i * cols + j]) * delta[j];
      total += delta[static_cast<size_t>(i)] * hd;
    }
  }
  return rows > 0 ? total / static_cast<double>(rows) : 0.0;
}

}  // namespace edgelm::compression
