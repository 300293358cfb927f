#include "compression/gptq.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
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
    const Hessians& h = *self->hessians;
    if (layer < h.first_layer || layer >= h.end_layer) return;
    self->add((layer - h.first_layer) * kInputsPerLayer + input_of(kind), x, n, cols);
  }

  // H += x^T x through the F32 product kernel, its upper triangle only (mirrored once the pass
  // is over): by bands of kBand rows of H from the diagonal right, with W = x^T's rows
  // [a0, cols) and the band's rows of x^T as the batch, y[p][q] = sum_t x[t][a0+p] x[t][a0+q].
  void add(int entry, const float* x, int n, int cols) {
    constexpr int64_t kBand = 256;
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
    product.resize(static_cast<size_t>(kBand) * c);
    for (int64_t a0 = 0; a0 < cols; a0 += kBand) {
      const int64_t band = std::min<int64_t>(kBand, cols - a0);
      const int64_t width = cols - a0;
      const float* rows = transposed.data() + a0 * n;
      const WeightMatrix xt{DType::F32, width, n, rows, static_cast<size_t>(n) * 4};
      matmul(xt, rows, band, product.data(), pool);
      for (int64_t p = 0; p < band; ++p) {
        float* h_row = h.data() + (a0 + p) * cols + a0;
        const float* y = product.data() + p * width;
        for (int64_t q = p; q < width; ++q) h_row[q] += y[q];
      }
    }
  }
};

// Dot product with sixteen independent partial sums, which the compiler keeps in vector
// registers (it may not reorder one sum); they also keep float's rounding error small.
float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int k = 0; k < 16; ++k) acc[k] += a[i + k] * b[i + k];
  }
  for (; i < n; ++i) acc[0] += a[i] * b[i];
  for (int width = 8; width > 0; width /= 2) {
    for (int k = 0; k < width; ++k) acc[k] += acc[k + width];
  }
  return acc[0];
}

// Columns handled together by the factorizations below: a row's prefix is read once per panel
// (for its kPanel dot products, from cache) rather than once per column (from memory).
constexpr int64_t kPanel = 16;

// Cholesky A = L L^T in place (lower triangle of row-major a, n x n), left-looking by panels.
void cholesky_lower(std::vector<float>& a, int64_t n, ThreadPool* pool) {
  float* const m = a.data();
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const int64_t j1 = std::min(n, j0 + kPanel);
    // The columns before the panel, for every row from the panel's first down.
    const int64_t grain = std::max<int64_t>(1, 65536 / (j0 + 1));
    pool->parallel_for(n - j0, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = j0 + begin; i < j0 + end; ++i) {
        float* row_i = m + i * n;
        for (int64_t jj = j0; jj < std::min(j1, i + 1); ++jj)
          row_i[jj] -= dot(row_i, m + jj * n, j0);
      }
    });
    // The panel's own columns: its diagonal block in order, then the rows below in parallel.
    for (int64_t jj = j0; jj < j1; ++jj) {
      float* row_jj = m + jj * n;
      const float s = row_jj[jj] - dot(row_jj + j0, row_jj + j0, jj - j0);
      if (!(s > 0) || !std::isfinite(s)) {
        fail("gptq: the Hessian is not positive definite at column ", n - 1 - jj,
             " (raise --gptq-damp)");
      }
      row_jj[jj] = std::sqrt(s);
      for (int64_t i = jj + 1; i < j1; ++i) {
        float* row_i = m + i * n;
        row_i[jj] = (row_i[jj] - dot(row_i + j0, row_jj + j0, jj - j0)) / row_jj[jj];
      }
    }
    pool->parallel_for(n - j1, 64, [&](int64_t begin, int64_t end) {
      for (int64_t i = j1 + begin; i < j1 + end; ++i) {
        float* row_i = m + i * n;
        for (int64_t jj = j0; jj < j1; ++jj) {
          const float* row_jj = m + jj * n;
          row_i[jj] = (row_i[jj] - dot(row_i + j0, row_jj + j0, jj - j0)) / row_jj[jj];
        }
      }
    });
  }
}

// L^-1 of the lower triangular l (n x n, row-major), by columns: column c of the inverse goes
// to xt[c][c..n). A panel of columns is one thread's; threads take every size()-th panel,
// since a panel costs about (n - c)^2 / 2 per column.
void invert_lower(const std::vector<float>& l, int64_t n, std::vector<float>& xt,
                  ThreadPool* pool) {
  const int threads = pool->size();
  const int64_t panels = (n + kPanel - 1) / kPanel;
  pool->run_on_all([&](int t) {
    for (int64_t p = t; p < panels; p += threads) {
      const int64_t c0 = p * kPanel, c1 = std::min(n, c0 + kPanel);
      for (int64_t i = c0; i < n; ++i) {
        const float* row_i = l.data() + i * n;
        for (int64_t c = c0; c < std::min(c1, i + 1); ++c) {
          float* x = xt.data() + c * n;
          x[i] = i == c ? 1.0f / row_i[i] : -dot(row_i + c, x + c, i - c) / row_i[i];
        }
      }
    }
  });
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
  std::vector<float> a(un * un);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const float h = hessian[i * n + j];
      if (!std::isfinite(h)) fail("gptq: the Hessian has a non-finite entry at (", i, ", ", j, ")");
      double v = dead[static_cast<size_t>(i)] || dead[static_cast<size_t>(j)] ? 0.0 : h;
      if (i == j) v = (dead[static_cast<size_t>(i)] ? 1.0 : v) + damp;
      a[static_cast<size_t>((n - 1 - i) * n + (n - 1 - j))] = static_cast<float>(v);
    }
  }

  cholesky_lower(a, n, pool);
  std::vector<float> xt(un * un);
  invert_lower(a, n, xt, pool);
  std::vector<float>().swap(a);  // peak memory: two n x n arrays, not three

  // U[p][q] = L^-1[n-1-p][n-1-q] for q >= p.
  std::vector<float> u(un * un, 0.0f);
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t q = p; q < n; ++q) {
      u[static_cast<size_t>(p * n + q)] = xt[static_cast<size_t>((n - 1 - q) * n + (n - 1 - p))];
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

int64_t available_memory_bytes() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return -1;
  char line[256];
  int64_t kib = -1;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    long long v = 0;
    if (std::sscanf(line, "MemAvailable: %lld kB", &v) == 1) {
      kib = v;
      break;
    }
  }
  std::fclose(f);
  return kib < 0 ? -1 : kib * 1024;
}

int64_t hessian_bytes(const ModelConfig& c, int first_layer, int end_layer) {
  const int64_t dim = c.dim, q_dim = c.q_dim(), ffn = c.hidden_dim;
  const int64_t per_layer = 2 * dim * dim + q_dim * q_dim + ffn * ffn;
  return static_cast<int64_t>(sizeof(float)) * ((end_layer - first_layer) * per_layer + dim * dim);
}

Hessians collect_hessians(const LoadedModel& model, const std::string& text,
                          const ImatrixOptions& options, int first_layer, int end_layer,
                          const ImatrixProgress& progress) {
  const ModelConfig& c = model.config;
  if (first_layer < 0 || end_layer > c.n_layers || first_layer > end_layer) {
    fail("gptq: layers [", first_layer, ", ", end_layer, ") are not layers of a ", c.n_layers,
         "-layer model");
  }
  // They live until their matrices are quantized: fail now, not out of memory later.
  const int64_t needed = hessian_bytes(c, first_layer, end_layer);
  const int64_t available = available_memory_bytes();
  if (available >= 0 && needed > available) {
    fail("gptq: the Hessians of layers ", first_layer, "-", end_layer - 1, " need ", needed >> 20,
         " MiB, more than the ", available >> 20,
         " MiB of memory available (lower --gptq-memory, or use --imatrix)");
  }
  Hessians h;
  h.first_layer = first_layer;
  h.end_layer = end_layer;
  const auto entries = static_cast<size_t>(end_layer - first_layer) * kInputsPerLayer;
  h.matrices.resize(entries);
  h.cols.assign(entries, 0);
  for (int l = first_layer; l < end_layer; ++l) {
    for (int k = 0; k < 7; ++k) {
      const auto kind = static_cast<MatrixKind>(k);
      h.by_tensor[matrix_tensor_name(l, kind)] =
          (l - first_layer) * kInputsPerLayer + input_of(kind);
    }
  }
  ThreadPool pool(options.threads);
  HessianCollector collector;
  collector.hessians = &h;
  collector.pool = &pool;
  // The output head's input. A tied embedding is GPTQ'd as the head: its error in the token
  // lookup is not weighed, and on stories260K (q4_0/q4_1/q5_0/q5_1 --pure) KLD fell 13-25%.
  const int head_entry = static_cast<int>(entries);
  h.matrices.emplace_back();
  h.cols.push_back(0);
  h.by_tensor[c.tied_embeddings ? "token_embd.weight" : "output.weight"] = head_entry;
  h.chunks = run_calibration(
      model, text, options, pool, &HessianCollector::hook, &collector,
      [&](const float* x, int n) {
        collector.add(head_entry, x, n, c.dim);
        h.tokens += n;
      },
      progress);
  const float scale = h.tokens > 0 ? 1.0f / static_cast<float>(h.tokens) : 0.0f;
  for (size_t e = 0; e < h.matrices.size(); ++e) {
    std::vector<float>& m = h.matrices[e];
    const int64_t n = h.cols[e];
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = i; j < n; ++j) m[i * n + j] = m[j * n + i] = m[i * n + j] * scale;
    }
  }
  return h;
}

bool gptq_supported(DType type) {
  return block_levels_supported(type);
}

GptqFactor gptq_factor(const float* hessian, int64_t cols, const GptqOptions& options,
                       ThreadPool* pool) {
  if (options.damp < 0 || !std::isfinite(options.damp)) {
    fail("gptq: damping ", options.damp, " must be finite and >= 0");
  }
  GptqFactor f;
  f.cols = cols;
  f.order.resize(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) f.order[static_cast<size_t>(i)] = i;
  if (options.act_order) {
    // Columns that see the largest inputs first, while the most columns are left to take up
    // their error; ties keep their order.
    std::stable_sort(f.order.begin(), f.order.end(), [&](int64_t a, int64_t b) {
      return hessian[a * cols + a] > hessian[b * cols + b];
    });
  }
  std::vector<float> permuted;
  const float* h = hessian;
  if (options.act_order) {
    permuted.resize(static_cast<size_t>(cols * cols));
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        permuted[static_cast<size_t>(i * cols + j)] = hessian[f.order[i] * cols + f.order[j]];
      }
    }
    h = permuted.data();
  }
  std::vector<bool> dead_in_order;
  f.u = gptq_inverse_cholesky(h, cols, options.damp, dead_in_order, pool);
  f.dead.assign(static_cast<size_t>(cols), false);
  for (int64_t i = 0; i < cols; ++i) f.dead[static_cast<size_t>(f.order[i])] = dead_in_order[i];
  // The scale search's weights: the diagonal (the mean squared input per column), damped so
  // that no block has all-zero weights.
  double mean_diag = 0;
  for (int64_t i = 0; i < cols; ++i) mean_diag += hessian[i * cols + i];
  mean_diag /= static_cast<double>(cols);
  if (!(mean_diag > 0)) mean_diag = 1.0;  // no input at all: equal weights
  f.importance.resize(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) {
    f.importance[static_cast<size_t>(i)] =
        hessian[i * cols + i] + static_cast<float>(std::max(options.damp, 1e-6) * mean_diag);
  }
  return f;
}

void gptq_quantize(DType type, float* w, int64_t rows, int64_t cols, const GptqFactor& factor,
                   const GptqOptions& options, void* out, ThreadPool* pool) {
  if (!gptq_supported(type)) fail("gptq: cannot write type ", dtype_name(type));
  const DTypeTraits& traits = dtype_traits(type);
  const int64_t block = traits.block_size;
  if (cols <= 0 || cols % block != 0) {
    fail("gptq: rows of ", cols, " values are not a whole number of ", dtype_name(type),
         " blocks of ", block);
  }
  if (factor.cols != cols) {
    fail("gptq: the Hessian's factor has ", factor.cols, " columns, the matrix ", cols);
  }
  const std::vector<float>& u = factor.u;
  const std::vector<bool>& dead = factor.dead;
  const std::vector<float>& importance = factor.importance;

  const size_t row_bytes = dtype_row_bytes(type, cols);
  auto* out_bytes = static_cast<uint8_t*>(out);
  // The sweep's order: position i is column order[i] (U is in that order too).
  const std::vector<int64_t>& order = factor.order;
  std::vector<int64_t> position(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) position[static_cast<size_t>(order[i])] = i;
  const int64_t blocks = cols / block;

  // Lazy batches (the paper's): a batch of kBatch positions is swept with its updates applied
  // at once only within the batch; the columns after it get the batch's updates in one matrix
  // product, E U[batch, after]. kBatch is a multiple of every block size, so in column order a
  // block lies inside one batch; in act-order a block's columns after the batch get the batch's
  // pending updates computed when its scales are chosen. Rows go in chunks (bounded scratch),
  // a chunk's rows in tiles of kTile across the threads.
  constexpr int64_t kBatch = 256, kChunk = 512, kTile = 16;
  const int64_t chunk_rows = std::min(kChunk, rows);
  std::vector<float> ws(static_cast<size_t>(chunk_rows * cols));       // weights in sweep order
  std::vector<int8_t> levels(static_cast<size_t>(chunk_rows * cols));  // in column order
  std::vector<float> errors(static_cast<size_t>(chunk_rows * kBatch));
  std::vector<float> update(static_cast<size_t>(chunk_rows * cols));
  std::vector<float> u_after(static_cast<size_t>(kBatch * cols));  // U[batch, after]^T
  std::vector<bool> started(static_cast<size_t>(blocks));
  for (int64_t c0 = 0; c0 < rows; c0 += kChunk) {
    const int64_t count = std::min(kChunk, rows - c0);
    for (int64_t r = 0; r < count; ++r) {
      for (int64_t i = 0; i < cols; ++i) {
        const int64_t c = order[static_cast<size_t>(i)];
        ws[r * cols + i] = dead[static_cast<size_t>(c)] ? 0.0f : w[(c0 + r) * cols + c];
      }
    }
    std::fill(started.begin(), started.end(), false);
    for (int64_t b0 = 0; b0 < cols; b0 += kBatch) {
      const int64_t b1 = std::min(cols, b0 + kBatch);
      // Blocks first reached in this batch, in the order they are reached (same for every row).
      const int64_t tiles = (count + kTile - 1) / kTile;
      pool->parallel_for(tiles, 1, [&](int64_t tile_begin, int64_t tile_end) {
        std::vector<float> block_values(static_cast<size_t>(block));
        for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
          const int64_t t0 = tile * kTile, t1 = std::min(count, t0 + kTile);
          std::vector<bool> tile_started(started);  // every tile starts the same blocks
          for (int64_t i = b0; i < b1; ++i) {
            const int64_t c = order[static_cast<size_t>(i)];
            const int64_t b = c / block;
            const size_t block_offset = static_cast<size_t>(b) * traits.block_bytes;
            const float* u_row = u.data() + i * cols;
            for (int64_t r = t0; r < t1; ++r) {
              float* wr = ws.data() + r * cols;
              float* er = errors.data() + r * kBatch;
              uint8_t* blk = out_bytes + static_cast<size_t>(c0 + r) * row_bytes + block_offset;
              if (!tile_started[static_cast<size_t>(b)]) {
                // The block's scales, from its weights as they stand now.
                for (int64_t k = 0; k < block; ++k) {
                  const int64_t p = position[static_cast<size_t>(b * block + k)];
                  float v = wr[p];
                  for (int64_t m = b0; p >= b1 && m < i; ++m) v -= er[m - b0] * u[m * cols + p];
                  block_values[static_cast<size_t>(k)] = v;
                }
                quantize_row(type, block_values.data(), blk, block,
                             options.weighted_scales ? importance.data() + b * block : nullptr);
              }
              const LevelGrid g = block_level_grid(type, blk, static_cast<int>(c % block));
              const int level = g.nearest(wr[i]);
              levels[static_cast<size_t>(r * cols + c)] = static_cast<int8_t>(level);
              const float q = g.value(level);
              const float e = (wr[i] - q) / u_row[i];
              er[i - b0] = e;
              wr[i] = q;
              if (e != 0) {
                for (int64_t j = i + 1; j < b1; ++j) wr[j] -= e * u_row[j];
              }
            }
            tile_started[static_cast<size_t>(b)] = true;
          }
        }
      });
      for (int64_t i = b0; i < b1; ++i) {
        started[static_cast<size_t>(order[static_cast<size_t>(i)] / block)] = true;
      }
      const int64_t after = cols - b1;
      if (after == 0) continue;
      // ws[:, b1:] -= E U[b0:b1, b1:]: y[r][q] = sum_k E[r][k] U[b0 + k][b1 + q].
      const int64_t k_count = b1 - b0;
      for (int64_t q = 0; q < after; ++q) {
        for (int64_t k = 0; k < k_count; ++k) {
          u_after[static_cast<size_t>(q * k_count + k)] = u[(b0 + k) * cols + b1 + q];
        }
      }
      std::vector<float>& e = errors;
      if (k_count < kBatch) {  // the product's input rows are k_count wide
        for (int64_t r = 0; r < count; ++r) {
          std::copy(e.begin() + r * kBatch, e.begin() + r * kBatch + k_count,
                    e.begin() + r * k_count);
        }
      }
      const WeightMatrix ut{DType::F32, after, k_count, u_after.data(),
                            static_cast<size_t>(k_count) * sizeof(float)};
      matmul(ut, e.data(), count, update.data(), pool);
      pool->parallel_for(count, 16, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          float* wr = ws.data() + r * cols + b1;
          const float* y = update.data() + r * after;
          for (int64_t q = 0; q < after; ++q) wr[q] -= y[q];
        }
      });
    }
    pool->parallel_for(count, 16, [&](int64_t begin, int64_t end) {
      int block_levels[kQK_K];
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t b = 0; b < blocks; ++b) {
          for (int64_t k = 0; k < block; ++k) {
            block_levels[k] = levels[static_cast<size_t>(r * cols + b * block + k)];
          }
          pack_block_levels(type, block_levels,
                            out_bytes + static_cast<size_t>(c0 + r) * row_bytes +
                                static_cast<size_t>(b) * traits.block_bytes);
        }
        for (int64_t i = 0; i < cols; ++i) {
          w[(c0 + r) * cols + order[static_cast<size_t>(i)]] = ws[r * cols + i];
        }
      }
    });
  }
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
