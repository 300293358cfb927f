#include "model/transformer.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "kernels/ops.h"
#include "kernels/quant_formats.h"
#include "kernels/thread_pool.h"
#include "util/error.h"
#include "util/half.h"

namespace edgelm {

// Attention products take the query heads of a KV head this many at a time:
// the matmul kernels' short-row tiles read each key or value row once for up
// to 4 tokens (kernels/matmul_internal.h, kShortRowTokens).
constexpr int kHeadsPerProduct = 4;
// Decode projects the attention output per KV head (attend()) for up to this many.
constexpr int kMaxProjectedKvHeads = 64;

void KvCache::allocate(const ModelConfig& config, int new_capacity, DType new_type) {
  if (new_type != DType::F16 && new_type != DType::F32 && new_type != DType::Q8_0) {
    fail("KV cache type ", dtype_name(new_type), " is not supported (use f16, f32 or q8_0)");
  }
  if (new_type == DType::Q8_0 && config.head_dim % 32 != 0) {
    fail("KV cache type q8_0 needs head_dim to be a multiple of 32 (this model has ",
         config.head_dim, ")");
  }
  type = new_type;
  n_layers = config.n_layers;
  n_kv_heads = config.n_kv_heads;
  head_dim = config.head_dim;
  capacity = new_capacity;
  const int64_t block = block_size();
  value_columns = static_cast<int>((capacity + block - 1) / block * block);
  key_row_bytes = dtype_row_bytes(type, head_dim);
  value_row_bytes = dtype_row_bytes(type, value_columns);
  const size_t matrices = static_cast<size_t>(n_layers) * n_kv_heads;
  keys.reset(new uint8_t[matrices * capacity * key_row_bytes]);
  values.reset(new uint8_t[matrices * head_dim * value_row_bytes]);
  if (type == DType::Q8_0) {
    staging.assign(matrices * head_dim * 32, 0.0f);
    next_position.assign(n_layers, 0);
  } else {
    staging.clear();
    next_position.clear();
  }
}

void KvCache::store(int layer, int position, const float* k, const float* v) {
  if (type == DType::Q8_0) {
    for (int g = 0; g < n_kv_heads; ++g) {
      uint8_t* key_row = key_matrix(layer, g) + static_cast<size_t>(position) * key_row_bytes;
      quantize_row_q8_0_reference(k + g * head_dim, key_row, head_dim);
    }
    store_q8_0_values(layer, position, v);
    return;
  }
  store_keys(layer, position, k);
  for (int g = 0; g < n_kv_heads; ++g) store_values(layer, g, position, v + g * head_dim);
}

void KvCache::store_keys(int layer, int position, const float* k) {
  if (type == DType::Q8_0) {
    fail("KvCache::store_keys: a q8_0 cache stores keys and values at once");
  }
  for (int g = 0; g < n_kv_heads; ++g) {
    const float* kh = k + g * head_dim;
    uint8_t* key_row = key_matrix(layer, g) + static_cast<size_t>(position) * key_row_bytes;
    if (type == DType::F32) {
      std::copy(kh, kh + head_dim, reinterpret_cast<float*>(key_row));
    } else {
      convert_to_f16(kh, reinterpret_cast<uint16_t*>(key_row), head_dim);
    }
  }
}

void KvCache::store_values(int layer, int kv_head, int position, const float* vh) {
  if (type == DType::Q8_0) {
    fail("KvCache::store_values: a q8_0 cache stores keys and values at once");
  }
  uint8_t* column =
      value_matrix(layer, kv_head) + static_cast<size_t>(position) * (type == DType::F32 ? 4 : 2);
  if (type == DType::F32) {
    for (int d = 0; d < head_dim; ++d) {
      std::memcpy(column + d * value_row_bytes, &vh[d], sizeof(float));
    }
    return;
  }
  // Convert a run of them, then scatter.
  uint16_t h[64];
  for (int d0 = 0; d0 < head_dim; d0 += 64) {
    const int count = std::min(64, head_dim - d0);
    convert_to_f16(vh + d0, h, count);
    for (int d = 0; d < count; ++d) {
      std::memcpy(column + (d0 + d) * value_row_bytes, &h[d], sizeof(uint16_t));
    }
  }
}

// Values are transposed, so one position is one element of 32-wide blocks in
// every row: keep the block being filled in F32 and re-quantize it whole.
void KvCache::store_q8_0_values(int layer, int position, const float* v) {
  const int slot = position % 32;
  const int block = position / 32;
  const size_t block_bytes = dtype_row_bytes(DType::Q8_0, 32);
  const bool continues = next_position[layer] == position;
  for (int g = 0; g < n_kv_heads; ++g) {
    for (int d = 0; d < head_dim; ++d) {
      float* stage = staging.data() + ((matrix_index(layer, g) * head_dim) + d) * 32;
      uint8_t* dst = value_matrix(layer, g) + d * value_row_bytes + block * block_bytes;
      if (slot == 0) {
        std::fill(stage, stage + 32, 0.0f);
      } else if (!continues) {
        // After a rewind: rebuild the block's earlier positions from the cache.
        dequantize_row_q8_0(dst, stage, 32);
        std::fill(stage + slot, stage + 32, 0.0f);
      }
      stage[slot] = v[g * head_dim + d];
      quantize_row_q8_0_reference(stage, dst, 32);
    }
  }
  next_position[layer] = position + 1;
}

void ForwardBuffers::allocate(const ModelConfig& c, int batch, int capacity, int threads) {
  max_batch = batch;
  const size_t b = static_cast<size_t>(batch);
  x.assign(b * c.dim, 0.0f);
  x_norm.assign(b * c.dim, 0.0f);
  q.assign(b * c.q_dim(), 0.0f);
  k.assign(b * c.kv_dim(), 0.0f);
  v.assign(b * c.kv_dim(), 0.0f);
  attention.assign(b * c.q_dim(), 0.0f);
  ffn_gate.assign(b * c.hidden_dim, 0.0f);
  ffn_up.assign(b * c.hidden_dim, 0.0f);
  rope_cos.assign(b * (c.head_dim / 2), 0.0f);
  rope_sin.assign(b * (c.head_dim / 2), 0.0f);
  // Per thread, the scores and attention weights of one KV head's query heads
  // (weights padded to whole 32-blocks for Q8_0 caches), and one value row.
  const size_t group = static_cast<size_t>(c.n_heads / c.n_kv_heads);
  const size_t padded = (static_cast<size_t>(capacity) + 31) / 32 * 32;
  scores.assign(static_cast<size_t>(threads) * group * capacity, 0.0f);
  attention_weights.assign(static_cast<size_t>(threads) * group * padded, 0.0f);
  value_rows.assign(static_cast<size_t>(threads) * (padded + group), 0.0f);
  projection_parts.assign(static_cast<size_t>(c.n_kv_heads) * c.dim, 0.0f);
}

std::string matrix_tensor_name(int layer, MatrixKind kind) {
  static const char* kNames[] = {"attn_q",   "attn_k", "attn_v",   "attn_output",
                                 "ffn_gate", "ffn_up", "ffn_down", "output"};
  const char* name = kNames[static_cast<int>(kind)];
  if (kind == MatrixKind::kOutput) return "output.weight";
  return "blk." + std::to_string(layer) + "." + name + ".weight";
}

namespace {

// y = x W^T for a batch, telling the hook (if any) what went in.
void project(const WeightMatrix& w, const float* x, int n, float* y, ForwardBuffers& buf,
             ThreadPool& pool, int layer, MatrixKind kind) {
  if (buf.hook != nullptr) buf.hook(buf.hook_context, layer, kind, x, n, static_cast<int>(w.cols));
  matmul(w, x, n, y, &pool);
}

// Several projections of the same input (Q/K/V, gate/up) in one pass.
void project_many(const WeightMatrix* ws, float* const* ys, const MatrixKind* kinds, int count,
                  const float* x, int n, ForwardBuffers& buf, ThreadPool& pool, int layer) {
  if (buf.hook != nullptr) {
    for (int i = 0; i < count; ++i) {
      buf.hook(buf.hook_context, layer, kinds[i], x, n, static_cast<int>(ws[i].cols));
    }
  }
  matmul_many(ws, ys, count, x, n, &pool);
}

// Prefetches `count` rows of `bytes` bytes, `stride` bytes apart.
void prefetch_rows(const void* data, int64_t count, size_t bytes, size_t stride) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (int64_t r = 0; r < count; ++r, p += stride) {
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o);
  }
}

// What the token at `position` attends to: positions [first, end) (all of them,
// or a sliding window); the value product runs over whole blocks [vfirst, vend)
// around them, with zero weights on the padding.
struct AttendedRange {
  int first, end, vfirst, vend;
};
AttendedRange attended_range(const ModelConfig& c, const KvCache& cache, int position) {
  AttendedRange r;
  r.end = position + 1;
  const int window = c.sliding_window;
  r.first = window > 0 && r.end > window ? r.end - window : 0;
  const int64_t block = cache.block_size();
  r.vfirst = static_cast<int>(r.first / block * block);
  r.vend = static_cast<int>((r.end + block - 1) / block * block);
  return r;
}

// Prefetches the keys of positions [first, end) and the values of the block-
// aligned columns [vfirst, vend) of one KV head.
void prefetch_kv_head(KvCache& cache, int layer, int kv_head, int first, int end, int vfirst,
                      int vend) {
  prefetch_rows(cache.key_matrix(layer, kv_head) + static_cast<size_t>(first) * cache.key_row_bytes,
                end - first, cache.key_row_bytes, cache.key_row_bytes);
  prefetch_rows(cache.value_matrix(layer, kv_head) + dtype_row_bytes(cache.type, vfirst),
                cache.head_dim, dtype_row_bytes(cache.type, vend - vfirst), cache.value_row_bytes);
}

void add_bias(float* rows, const float* bias, int n, int width) {
  if (bias == nullptr) return;
  for (int i = 0; i < n; ++i) add_inplace(rows + static_cast<size_t>(i) * width, bias, width);
}

}  // namespace

bool projects_output_per_kv_head(const ModelConfig& c, const WeightMatrix& wo) {
  const int64_t width = static_cast<int64_t>(c.n_heads / c.n_kv_heads) * c.head_dim;
  // Row-major slices read part of each row, and the lines at the slices' edges
  // twice: SmolLM2 Q8_0 decoded 2% slower so (2 threads), where the interleaved
  // layouts' slices (whole 16-row groups' blocks) made Q4_0 5% faster.
  return is_x16_layout(wo.type) && c.n_kv_heads <= kMaxProjectedKvHeads &&
         wo.cols == width * c.n_kv_heads && wo.rows == c.dim &&
         column_slice_supported(wo, 0, width);
}

// Causal attention of n new tokens (at positions [position, position+n)) over
// the cache. A work item is one token and the query heads that share a KV head,
// whose keys and values are read once per kHeadsPerProduct heads (and, where
// bursts of prefetches pay, prefetched once: the weights streamed since the
// last layer have evicted them). Only when there are fewer such items than
// threads (decode of a model with few KV heads) are a KV head's query heads
// split into runs: each run reads the KV head again, which for 3 KV heads on 2
// threads made attention no faster than on one.
//
// `new_values` (decode with an F16/F32 cache: the token's values, not yet
// stored) are stored by the item of their KV head, just before its value
// product. Values are stored transposed, so a token's are one element in each
// of head_dim rows, whose lines the weights streamed since have evicted: stored
// on one thread before attention, a step's 192 of them (SmolLM2) filled the
// store buffer and waited for every line (1.1 us per layer); spread over the
// items, the stores overlap the key products.
//
// `projection` (decode, where its layout allows: projects_output_per_kv_head)
// is the output projection, done in the same pass: its columns for a KV head's
// query heads are projected (split into row slabs) as soon as that head's
// attention is done, into buf.projection_parts[kv head], while other heads are
// still attending. With SmolLM2's 3 KV heads on 2 threads one thread would
// otherwise wait a whole item's time, and the projection a hand-off.
//
// The items run in any order on any thread (run_item), each at most once; a
// projection item waits for its KV head's attention items, which come first.
struct AttentionPass {
  const ModelConfig* c = nullptr;
  KvCache* cache = nullptr;
  ForwardBuffers* buf = nullptr;
  int layer = 0, position = 0, group = 0, heads_per_item = 0, runs_per_kv_head = 0, threads = 0;
  const float* new_values = nullptr;
  bool prefetch = false;
  float scale = 0;
  int64_t items = 0, attention_items = 0;
  size_t scores_per_thread = 0, weights_per_thread = 0, value_row_floats = 0;
  const WeightMatrix* projection = nullptr;
  int slabs = 0;
  std::atomic<int> runs_done[kMaxProjectedKvHeads];  // per KV head

  void setup(const ModelConfig& config, int layer, int n, int position, KvCache& cache,
             ForwardBuffers& buf, int threads, const float* new_values,
             const WeightMatrix* projection);
  void run_item(int thread, int64_t item);
};

void AttentionPass::setup(const ModelConfig& config, int layer_index, int n, int first_position,
                          KvCache& kv_cache, ForwardBuffers& buffers, int thread_count,
                          const float* values_to_store, const WeightMatrix* output_projection) {
  c = &config;
  cache = &kv_cache;
  buf = &buffers;
  layer = layer_index;
  position = first_position;
  threads = thread_count;
  group = config.n_heads / config.n_kv_heads;
  const int kv_items = n * config.n_kv_heads;
  const int wanted_runs = std::clamp((threads + kv_items - 1) / kv_items, 1, group);
  heads_per_item = (group + wanted_runs - 1) / wanted_runs;
  runs_per_kv_head = (group + heads_per_item - 1) / heads_per_item;
  new_values = values_to_store;
  if (new_values != nullptr && (n != 1 || runs_per_kv_head != 1)) {
    // Several items share a KV head: store first.
    for (int g = 0; g < config.n_kv_heads; ++g) {
      cache->store_values(layer, g, position, new_values + g * config.head_dim);
    }
    new_values = nullptr;
  }
  prefetch = burst_prefetch_helps();
  scale = 1.0f / std::sqrt(static_cast<float>(config.head_dim));
  attention_items = static_cast<int64_t>(n) * config.n_kv_heads * runs_per_kv_head;
  items = attention_items;
  scores_per_thread = buf->scores.size() / threads;
  weights_per_thread = buf->attention_weights.size() / threads;
  value_row_floats = buf->value_rows.size() / threads;
  // Projection items follow the attention items; each waits for its KV head.
  projection = output_projection;
  slabs = projection == nullptr ? 0 : std::max(1, 2 * threads / config.n_kv_heads);
  if (projection != nullptr) {
    for (int g = 0; g < config.n_kv_heads; ++g) runs_done[g].store(0, std::memory_order_relaxed);
    items += static_cast<int64_t>(config.n_kv_heads) * slabs;
  }
}

void AttentionPass::run_item(int thread, int64_t item) {
  const int head_dim = c->head_dim;
  const int q_dim = c->q_dim();
  float* scores = buf->scores.data() + thread * scores_per_thread;
  float* weights = buf->attention_weights.data() + thread * weights_per_thread;
  if (item >= attention_items) {
    // One row slab of the output projection's columns for one KV head.
    const int64_t p = item - attention_items;
    const int g = static_cast<int>(p / slabs);
    const int slab = static_cast<int>(p % slabs);
    SpinWait wait;
    while (runs_done[g].load(std::memory_order_acquire) < runs_per_kv_head) wait.pause();
    const WeightMatrix& w = *projection;
    const int64_t unit = matvec_row_unit(w);
    const int64_t units = (w.rows + unit - 1) / unit;
    const int64_t r0 = std::min(w.rows, units * slab / slabs * unit);
    const int64_t r1 = std::min(w.rows, units * (slab + 1) / slabs * unit);
    const int64_t width = static_cast<int64_t>(group) * c->head_dim;
    matvec_column_slice(w, g * width, (g + 1) * width, buf->attention.data() + g * width,
                        buf->projection_parts.data() + g * w.rows + r0, r0, r1);
    return;
  }
  const int per_token = c->n_kv_heads * runs_per_kv_head;
  const int i = static_cast<int>(item / per_token);
  const int g = static_cast<int>(item % per_token) / runs_per_kv_head;  // KV head
  const int run = static_cast<int>(item % runs_per_kv_head);
  // Counted when the run ends, also by an exception (which the pool passes
  // on once every thread is done), so a projection item never waits forever.
  struct RunDone {
    std::atomic<int>* count;
    ~RunDone() {
      if (count != nullptr) count->fetch_add(1, std::memory_order_release);
    }
  } run_done{projection != nullptr ? &runs_done[g] : nullptr};
  const int h0 = g * group + run * heads_per_item;  // first query head of the run
  const int heads = std::min(heads_per_item, (g + 1) * group - h0);
  const AttendedRange range = attended_range(*c, *cache, position + i);
  const int first = range.first, end = range.end, vfirst = range.vfirst, vend = range.vend;
  const int length = end - first;
  const int width = vend - vfirst;
  const int lead = first - vfirst;
  if (new_values != nullptr) cache->store_values(layer, g, position, new_values + g * head_dim);
  const size_t offset = static_cast<size_t>(i) * q_dim + static_cast<size_t>(h0) * head_dim;
  WeightMatrix keys;
  keys.type = cache->type;
  keys.rows = length;
  keys.cols = head_dim;
  keys.data = cache->key_matrix(layer, g) + static_cast<size_t>(first) * cache->key_row_bytes;
  keys.row_bytes = cache->key_row_bytes;
  WeightMatrix values;
  values.type = cache->type;
  values.rows = head_dim;
  values.cols = width;
  values.data = cache->value_matrix(layer, g) + dtype_row_bytes(cache->type, vfirst);
  values.row_bytes = cache->value_row_bytes;
  // The keys and values are read from memory (the weights streamed since
  // the last layer have evicted them): where bursts of prefetches pay, ask
  // for all of them now, so the misses overlap instead of stalling the
  // kernels one tile at a time.
  if (prefetch) prefetch_kv_head(*cache, layer, g, first, end, vfirst, vend);
  // scores: [heads][length]; weights: [heads][width], zero outside [lead, lead + length).
  // Several heads per product: this made the key and value products 1.5x
  // faster than one head at a time.
  for (int h = 0; h < heads; h += kHeadsPerProduct) {
    matmul(keys, buf->q.data() + offset + static_cast<size_t>(h) * head_dim,
           std::min(kHeadsPerProduct, heads - h), scores + static_cast<size_t>(h) * length,
           nullptr);
  }
  for (int h = 0; h < heads; ++h) {
    float* row = weights + static_cast<size_t>(h) * width;
    const float* s = scores + static_cast<size_t>(h) * length;
    std::fill(row, row + lead, 0.0f);
    std::fill(row + lead + length, row + width, 0.0f);
    float* live = row + lead;
    for (int t = 0; t < length; ++t) live[t] = s[t] * scale;
    softmax(live, length);
  }
  // While this item's products work from cache, the memory system can
  // already bring in the KV head of the item this thread is likely to take
  // next (items are claimed in turn: `threads` further on).
  const int64_t guess = item + threads;
  if (prefetch && guess < items) {
    const int gi = static_cast<int>(guess / per_token);
    const int gg = static_cast<int>(guess % per_token) / runs_per_kv_head;
    if (gi != i || gg != g) {
      const AttendedRange r = attended_range(*c, *cache, position + gi);
      prefetch_kv_head(*cache, layer, gg, r.first, r.end, r.vfirst, r.vend);
    }
  }
  float* out = buf->attention.data() + offset;  // [heads][head_dim]
  if (cache->type != DType::Q8_0) {
    for (int h = 0; h < heads; h += kHeadsPerProduct) {
      matmul(values, weights + static_cast<size_t>(h) * width,
             std::min(kHeadsPerProduct, heads - h), out + static_cast<size_t>(h) * head_dim,
             nullptr);
    }
    return;
  }
  // The quantized matmul would also round the attention weights to 8 bits;
  // dequantize each value row instead and keep the weights in F32.
  float* value_row = buf->value_rows.data() + thread * value_row_floats;
  float* dots = value_row + width;  // [heads]
  WeightMatrix dense;
  dense.type = DType::F32;
  dense.rows = 1;
  dense.cols = width;
  dense.data = value_row;
  dense.row_bytes = static_cast<size_t>(width) * sizeof(float);
  for (int d = 0; d < head_dim; ++d) {
    dequantize_row(DType::Q8_0, static_cast<const uint8_t*>(values.data) + d * values.row_bytes,
                   value_row, width);
    matmul(dense, weights, heads, dots, nullptr);
    for (int h = 0; h < heads; ++h) out[static_cast<size_t>(h) * head_dim + d] = dots[h];
  }
}

namespace {

// Items are handed out one by one, so a thread that starts late (or not at
// all, on a busy machine) leaves its share to the others.
void attend(const ModelConfig& c, int layer, int n, int position, KvCache& cache,
            ForwardBuffers& buf, ThreadPool& pool, const float* new_values,
            const WeightMatrix* projection) {
  AttentionPass pass;
  pass.setup(c, layer, n, position, cache, buf, pool.size(), new_values, projection);
  std::atomic<int64_t> next_item{0};
  pool.run_shared([&](int thread) {
    for (int64_t item = next_item.fetch_add(1, std::memory_order_relaxed); item < pass.items;
         item = next_item.fetch_add(1, std::memory_order_relaxed)) {
      pass.run_item(thread, item);
    }
  });
}

// Checks the batch and writes its embeddings to buf.x and its RoPE angles.
void embed(const LoadedModel& model, const int32_t* tokens, int n, int position,
           const KvCache& cache, ForwardBuffers& buf) {
  const ModelConfig& c = model.config;
  const ModelWeights& w = model.weights;
  if (n <= 0) fail("forward: empty batch");
  if (n > buf.max_batch) fail("forward: batch of ", n, " exceeds buffers of ", buf.max_batch);
  if (position < 0 || position + n > cache.capacity) {
    fail("context full: ", position + n, " tokens do not fit a context of ", cache.capacity);
  }
  const int half = c.head_dim / 2;
  for (int i = 0; i < n; ++i) {
    const int32_t token = tokens[i];
    if (token < 0 || token >= c.vocab_size) {
      fail("token id ", token, " is out of range (vocab size ", c.vocab_size, ")");
    }
    dequantize_matrix_row(w.token_embedding, token, buf.x.data() + static_cast<size_t>(i) * c.dim);
    rope_angles(position + i, model.rope_inv_freq.data(), half,
                buf.rope_cos.data() + static_cast<size_t>(i) * half,
                buf.rope_sin.data() + static_cast<size_t>(i) * half);
  }
}

// Elementwise work of a batch split over the pool by tokens; one token inline.
// SmolLM2's 128-token prefill: 1.047x faster than with the norms, RoPE, SiLU
// and residual adds on one thread while the others waited (2 threads, the two
// alternating in one process).
template <typename Fn>
void for_tokens(ThreadPool* pool, int n, const Fn& fn) {
  if (pool == nullptr || n < 2) return fn(0, n);
  pool->parallel_for(n, 1, [&](int64_t begin, int64_t end) {
    fn(static_cast<int>(begin), static_cast<int>(end));
  });
}

void rmsnorm_rows(const ModelConfig& c, const float* weight, int n, ForwardBuffers& buf,
                  ThreadPool* pool = nullptr) {
  for_tokens(pool, n, [&](int begin, int end) {
    for (int i = begin; i < end; ++i) {
      rmsnorm(buf.x_norm.data() + static_cast<size_t>(i) * c.dim,
              buf.x.data() + static_cast<size_t>(i) * c.dim, weight, c.dim, c.rms_eps);
    }
  });
}

// x += x_norm (the residual add of a product's output) for n tokens.
void add_residual(const ModelConfig& c, int n, ForwardBuffers& buf, ThreadPool* pool) {
  for_tokens(pool, n, [&](int begin, int end) {
    const size_t at = static_cast<size_t>(begin) * c.dim;
    add_inplace(buf.x.data() + at, buf.x_norm.data() + at,
                static_cast<int64_t>(end - begin) * c.dim);
  });
}

// Decode: the first KV head's cache comes in while Q/K/V stream (the other
// heads are prefetched by attention itself, one item ahead).
void prefetch_first_kv_head(const ModelConfig& c, KvCache& cache, int layer, int position) {
  if (!burst_prefetch_helps()) return;
  const AttendedRange r = attended_range(c, cache, position);
  prefetch_kv_head(cache, layer, 0, r.first, r.end - 1, r.vfirst, r.vend);
}

// Biases, RoPE and the KV store after the Q/K/V products; with defer_values
// (decode, F16/F32 cache) the values are left to attend(). The biases and RoPE
// are split over the pool by tokens; the cache stores stay on one thread
// (values are stored transposed: tokens share their lines and a Q8_0 cache's blocks).
void position_and_store(const ModelConfig& c, const LayerWeights& L, int layer, int n, int position,
                        bool defer_values, KvCache& cache, ForwardBuffers& buf,
                        ThreadPool* pool = nullptr) {
  const int half = c.head_dim / 2;
  for_tokens(pool, n, [&](int begin, int end) {
    const int count = end - begin;
    float* q_rows = buf.q.data() + static_cast<size_t>(begin) * c.q_dim();
    float* k_rows = buf.k.data() + static_cast<size_t>(begin) * c.kv_dim();
    add_bias(q_rows, L.bq, count, c.q_dim());
    add_bias(k_rows, L.bk, count, c.kv_dim());
    add_bias(buf.v.data() + static_cast<size_t>(begin) * c.kv_dim(), L.bv, count, c.kv_dim());
    for (int i = begin; i < end; ++i) {
      const float* cos = buf.rope_cos.data() + static_cast<size_t>(i) * half;
      const float* sin = buf.rope_sin.data() + static_cast<size_t>(i) * half;
      float* q = buf.q.data() + static_cast<size_t>(i) * c.q_dim();
      float* k = buf.k.data() + static_cast<size_t>(i) * c.kv_dim();
      for (int h = 0; h < c.n_heads; ++h) {
        rope(q + h * c.head_dim, c.head_dim, cos, sin, c.rope_interleaved);
      }
      for (int h = 0; h < c.n_kv_heads; ++h) {
        rope(k + h * c.head_dim, c.head_dim, cos, sin, c.rope_interleaved);
      }
    }
  });
  for (int i = 0; i < n; ++i) {
    const float* k = buf.k.data() + static_cast<size_t>(i) * c.kv_dim();
    if (defer_values) {
      cache.store_keys(layer, position, k);
    } else {
      cache.store(layer, position + i, k, buf.v.data() + static_cast<size_t>(i) * c.kv_dim());
    }
  }
}

// x += the output projection of each KV head's query heads (decode, where
// attend() projected them), summed in head order whatever the thread count.
void add_projection_parts(const ModelConfig& c, ForwardBuffers& buf) {
  float* parts = buf.projection_parts.data();
  for (int g = 1; g < c.n_kv_heads; ++g) add_inplace(parts, parts + g * c.dim, c.dim);
  add_inplace(buf.x.data(), parts, c.dim);
}

// Everything up to and including the final norm; result in buf.x_norm.
void run_layers(const LoadedModel& model, const int32_t* tokens, int n, int position,
                KvCache& cache, ForwardBuffers& buf, ThreadPool& pool) {
  const ModelConfig& c = model.config;
  const ModelWeights& w = model.weights;
  embed(model, tokens, n, position, cache, buf);
  // Decode stores a token's values in the attention items (attend()).
  const bool defer_values = n == 1 && cache.type != DType::Q8_0;
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    // Attention block.
    rmsnorm_rows(c, L.attn_norm, n, buf, &pool);
    if (n == 1) prefetch_first_kv_head(c, cache, l, position);
    {
      const WeightMatrix ws[] = {L.wq, L.wk, L.wv};
      float* const ys[] = {buf.q.data(), buf.k.data(), buf.v.data()};
      const MatrixKind kinds[] = {MatrixKind::kAttnQ, MatrixKind::kAttnK, MatrixKind::kAttnV};
      project_many(ws, ys, kinds, 3, buf.x_norm.data(), n, buf, pool, l);
    }
    position_and_store(c, L, l, n, position, defer_values, cache, buf, &pool);
    // Decode projects the attention output per KV head inside attend(); an
    // activation hook (imatrix) needs the whole input of the projection.
    const bool per_kv_head = n == 1 && buf.hook == nullptr && projects_output_per_kv_head(c, L.wo);
    attend(c, l, n, position, cache, buf, pool, defer_values ? buf.v.data() : nullptr,
           per_kv_head ? &L.wo : nullptr);
    if (per_kv_head) {
      add_projection_parts(c, buf);
    } else {
      project(L.wo, buf.attention.data(), n, buf.x_norm.data(), buf, pool, l,
              MatrixKind::kAttnOutput);
      add_residual(c, n, buf, &pool);
    }

    // Feed-forward block (SwiGLU).
    rmsnorm_rows(c, L.ffn_norm, n, buf, &pool);
    {
      const WeightMatrix ws[] = {L.w_gate, L.w_up};
      float* const ys[] = {buf.ffn_gate.data(), buf.ffn_up.data()};
      const MatrixKind kinds[] = {MatrixKind::kFfnGate, MatrixKind::kFfnUp};
      project_many(ws, ys, kinds, 2, buf.x_norm.data(), n, buf, pool, l);
    }
    for_tokens(&pool, n, [&](int begin, int end) {
      const size_t at = static_cast<size_t>(begin) * c.hidden_dim;
      silu_mul(buf.ffn_gate.data() + at, buf.ffn_gate.data() + at, buf.ffn_up.data() + at,
               static_cast<int64_t>(end - begin) * c.hidden_dim);
    });
    project(L.w_down, buf.ffn_gate.data(), n, buf.x_norm.data(), buf, pool, l,
            MatrixKind::kFfnDown);
    add_residual(c, n, buf, &pool);
  }
  rmsnorm_rows(c, w.output_norm, n, buf, &pool);
}

}  // namespace

// ---- decode on several threads in one dispatch ----
//
// A decode step on several threads runs as one dispatch of the pool: the
// products and the attention pass of every layer are stages of work items that
// the threads claim from per-stage counters, and the small serial steps between
// stages (norms, residual adds, RoPE and the key store, SiLU, quantizing the
// next product's input) run on the thread that finishes a stage's last item,
// while the others wait for the next stage to open. A dispatch per product
// costs each stage a start (the worker sees the job 0.2-0.3 us after the
// caller), an end (the caller sees the worker finish) and the caller's serial
// step alone; here a stage ends with one counter and opens with one flag.
// The items and the serial steps are those of run_layers(), so the logits are
// the same bit for bit.

enum class StageKind : uint8_t { kQkv, kAttention, kOutput, kGateUp, kDown, kHead };

struct DecodeStage {
  StageKind kind;
  int layer;  // n_layers for the head
  // Products: the matrices sharing the stage's input, split into `chunks`
  // items of about equal bytes (a row unit goes to the item holding its first byte).
  WeightMatrix ws[3];
  int count = 0;
  int chunks = 0;
  int64_t first_byte[4] = {0, 0, 0, 0};  // matrix m: bytes [first_byte[m], first_byte[m + 1])
};

// Each stage's counters on a line of their own: the items claimed (low 32
// bits) and finished (high 32 bits) in one word, so that a thread reports an
// item done and claims its next in one atomic step. Every such step moves the
// line between cores: 0.3-0.4 us measured inside a decode step on the 2-core
// Xeon here, where a bare hand-off takes ~60 ns (bench/machine_bench.cc): an
// x86 atomic read-modify-write first drains the item's pending stores. With
// separate counters an item cost two.
constexpr uint64_t kItemDone = uint64_t{1} << 32;
struct alignas(64) StageCounters {
  std::atomic<uint64_t> claimed_done{0};
  int items = 0;  // set when the stage opens
};

struct DecodeStepState {
  const LoadedModel* model = nullptr;
  int threads = 0;
  int weights_version = 0;  // the model's at build: weights re-laid since rebuild the stages
  std::vector<DecodeStage> stages;
  std::unique_ptr<StageCounters[]> counters;
  alignas(64) std::atomic<int> open{0};  // stages before it are done; it can be worked on
  alignas(64) std::atomic<bool> failed{false};
  // The step being run.
  int position = 0;
  KvCache* cache = nullptr;
  ForwardBuffers* buf = nullptr;
  float* logits = nullptr;
  MatvecInput input;  // the open product stage's
  AttentionPass attention;

  void build(const LoadedModel& m, int thread_count);
  void run_item(int stage, int item, int thread);
  void finish_stage(int stage);
  void open_stage(int stage);
  void work(int thread);
};

namespace {

// Stages split into about this many bytes per item at least, at most
// kChunksPerThread items per thread. Every item starts a weight stream and
// costs an atomic step whose line moves between cores; one item per thread
// decoded SmolLM2 1-1.5% faster than two (q4_0, q4_k, q8_0 at 2 threads, the
// two alternating in one process), although the threads then finish a stage
// further apart.
constexpr int64_t kMinChunkBytes = 32 * 1024;
constexpr int kChunksPerThread = 1;

DecodeStage product_stage(StageKind kind, int layer, std::initializer_list<WeightMatrix> ws,
                          int threads) {
  DecodeStage s{kind, layer, {}, 0, 0, {0, 0, 0, 0}};
  for (const WeightMatrix& w : ws) {
    s.ws[s.count] = w;
    s.first_byte[s.count + 1] = s.first_byte[s.count] + static_cast<int64_t>(w.row_bytes) * w.rows;
    ++s.count;
  }
  const int64_t bytes = s.first_byte[s.count];
  s.chunks = static_cast<int>(
      std::clamp<int64_t>(bytes / kMinChunkBytes, 1, int64_t{kChunksPerThread} * threads));
  return s;
}

}  // namespace

void DecodeStepState::build(const LoadedModel& m, int thread_count) {
  model = &m;
  threads = thread_count;
  weights_version = m.weights_version;
  const ModelConfig& c = m.config;
  stages.clear();
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = m.weights.layers[l];
    stages.push_back(product_stage(StageKind::kQkv, l, {L.wq, L.wk, L.wv}, threads));
    stages.push_back(DecodeStage{StageKind::kAttention, l, {}, 0, 0, {0, 0, 0, 0}});
    if (!projects_output_per_kv_head(c, L.wo)) {
      stages.push_back(product_stage(StageKind::kOutput, l, {L.wo}, threads));
    }
    stages.push_back(product_stage(StageKind::kGateUp, l, {L.w_gate, L.w_up}, threads));
    stages.push_back(product_stage(StageKind::kDown, l, {L.w_down}, threads));
  }
  stages.push_back(product_stage(StageKind::kHead, c.n_layers, {m.weights.output}, threads));
  counters = std::make_unique<StageCounters[]>(stages.size());
  // Grows the input's buffers to their largest now, so that no step allocates.
  std::vector<float> zeros(static_cast<size_t>(std::max(c.dim, c.hidden_dim)), 0.0f);
  for (const DecodeStage& s : stages) {
    if (s.count > 0) input.prepare(s.ws, s.count, zeros.data());
  }
}

void DecodeStepState::run_item(int stage, int item, int thread) {
  const DecodeStage& s = stages[static_cast<size_t>(stage)];
  if (s.kind == StageKind::kAttention) return attention.run_item(thread, item);
  float* ys[3] = {};
  switch (s.kind) {
    case StageKind::kQkv:
      ys[0] = buf->q.data(), ys[1] = buf->k.data(), ys[2] = buf->v.data();
      break;
    case StageKind::kGateUp:
      ys[0] = buf->ffn_gate.data(), ys[1] = buf->ffn_up.data();
      break;
    case StageKind::kHead:
      ys[0] = logits;
      break;
    default:  // kOutput, kDown
      ys[0] = buf->x_norm.data();
  }
  const int64_t total = s.first_byte[s.count];
  const int64_t b0 = total * item / s.chunks;
  const int64_t b1 = total * (item + 1) / s.chunks;
  for (int m = 0; m < s.count; ++m) {
    const WeightMatrix& w = s.ws[m];
    const int64_t lo = std::clamp(b0 - s.first_byte[m], int64_t{0}, s.first_byte[m + 1]);
    const int64_t hi = std::clamp(b1 - s.first_byte[m], int64_t{0}, s.first_byte[m + 1]);
    if (lo >= hi) continue;
    const int64_t unit = matvec_row_unit(w);
    const int64_t unit_bytes = static_cast<int64_t>(w.row_bytes) * unit;
    const int64_t r0 = std::min(w.rows, (lo + unit_bytes - 1) / unit_bytes * unit);
    const int64_t r1 = std::min(w.rows, (hi + unit_bytes - 1) / unit_bytes * unit);
    if (r0 < r1) matvec_rows(w, input, ys[m] + r0, r0, r1);
  }
}

// The serial step after `stage`, then opening the next one.
void DecodeStepState::finish_stage(int stage) {
  const DecodeStage& s = stages[static_cast<size_t>(stage)];
  const ModelConfig& c = model->config;
  switch (s.kind) {
    case StageKind::kQkv:
      position_and_store(c, model->weights.layers[s.layer], s.layer, 1, position,
                         cache->type != DType::Q8_0, *cache, *buf);
      break;
    case StageKind::kAttention:
      if (attention.projection != nullptr) {
        add_projection_parts(c, *buf);
        rmsnorm_rows(c, model->weights.layers[s.layer].ffn_norm, 1, *buf);
      }
      break;
    case StageKind::kOutput:
      add_residual(c, 1, *buf, nullptr);
      rmsnorm_rows(c, model->weights.layers[s.layer].ffn_norm, 1, *buf);
      break;
    case StageKind::kGateUp:
      silu_mul(buf->ffn_gate.data(), buf->ffn_gate.data(), buf->ffn_up.data(), c.hidden_dim);
      break;
    case StageKind::kDown:
      add_residual(c, 1, *buf, nullptr);
      if (s.layer + 1 < c.n_layers) {
        rmsnorm_rows(c, model->weights.layers[s.layer + 1].attn_norm, 1, *buf);
        prefetch_first_kv_head(c, *cache, s.layer + 1, position);
      } else {
        rmsnorm_rows(c, model->weights.output_norm, 1, *buf);
      }
      break;
    case StageKind::kHead:
      break;
  }
  open_stage(stage + 1);
}

// Prepares the input of `stage` (or attention's items) and lets threads claim its items.
void DecodeStepState::open_stage(int stage) {
  if (stage < static_cast<int>(stages.size())) {
    const DecodeStage& s = stages[static_cast<size_t>(stage)];
    int items = s.chunks;
    switch (s.kind) {
      case StageKind::kQkv:
      case StageKind::kGateUp:
      case StageKind::kHead:
        input.prepare(s.ws, s.count, buf->x_norm.data());
        break;
      case StageKind::kAttention: {
        const LayerWeights& L = model->weights.layers[s.layer];
        const bool per_kv_head = projects_output_per_kv_head(model->config, L.wo);
        attention.setup(model->config, s.layer, 1, position, *cache, *buf, threads,
                        cache->type != DType::Q8_0 ? buf->v.data() : nullptr,
                        per_kv_head ? &L.wo : nullptr);
        items = static_cast<int>(attention.items);
        break;
      }
      case StageKind::kOutput:
        input.prepare(s.ws, s.count, buf->attention.data());
        break;
      case StageKind::kDown:
        input.prepare(s.ws, s.count, buf->ffn_gate.data());
        break;
    }
    counters[stage].items = items;
  }
  open.store(stage, std::memory_order_release);
}

// A thread's part of the step: items of the open stage until none are left,
// then the next stage once it opens; a thread that joins late starts at the
// open stage.
void DecodeStepState::work(int thread) {
  const int n = static_cast<int>(stages.size());
  try {
    for (int s = 0;;) {
      int opened = open.load(std::memory_order_acquire);
      SpinWait wait;
      while (opened < s) {
        if (failed.load(std::memory_order_relaxed)) return;
        wait.pause();
        opened = open.load(std::memory_order_acquire);
      }
      if (opened >= n) return;
      s = opened;
      StageCounters& sc = counters[s];
      const auto items = static_cast<uint64_t>(sc.items);
      uint64_t claimed_done = sc.claimed_done.fetch_add(1, std::memory_order_relaxed);
      while ((claimed_done & 0xffffffffu) < items) {
        run_item(s, static_cast<int>(claimed_done & 0xffffffffu), thread);
        // This item done and the next claimed; the thread finishing the last
        // item runs the serial step.
        claimed_done = sc.claimed_done.fetch_add(kItemDone + 1, std::memory_order_acq_rel);
        if ((claimed_done >> 32) + 1 == items) finish_stage(s);
      }
      ++s;
    }
  } catch (...) {
    // The others stop waiting; the pool rethrows once every thread is done.
    failed.store(true, std::memory_order_relaxed);
    throw;
  }
}

void DecodeStepStateDeleter::operator()(DecodeStepState* state) const {
  delete state;
}

namespace {

bool decodes_in_one_dispatch(const ForwardBuffers& buf, const ThreadPool& pool) {
  return buf.decode_in_one_dispatch && pool.size() > 1 && buf.hook == nullptr;
}

// The state for the model and thread count, built at the first call (a
// prefill, usually, so that decode steps do not allocate).
DecodeStepState& decode_state(const LoadedModel& model, ForwardBuffers& buf, ThreadPool& pool) {
  if (!buf.decode_state) buf.decode_state.reset(new DecodeStepState);
  DecodeStepState& state = *buf.decode_state;
  if (state.model != &model || state.threads != pool.size() ||
      state.weights_version != model.weights_version) {
    state.build(model, pool.size());
  }
  return state;
}

// Decode of one token on several threads (see DecodeStepState); logits of it.
void decode_in_one_dispatch(const LoadedModel& model, int32_t token, int position, KvCache& cache,
                            ForwardBuffers& buf, ThreadPool& pool, float* logits) {
  DecodeStepState& state = decode_state(model, buf, pool);
  embed(model, &token, 1, position, cache, buf);
  state.position = position;
  state.cache = &cache;
  state.buf = &buf;
  state.logits = logits;
  state.failed.store(false, std::memory_order_relaxed);
  for (size_t s = 0; s < state.stages.size(); ++s) {
    state.counters[s].claimed_done.store(0, std::memory_order_relaxed);
  }
  rmsnorm_rows(model.config, model.weights.layers[0].attn_norm, 1, buf);
  prefetch_first_kv_head(model.config, cache, 0, position);
  state.open_stage(0);
  pool.run_shared([&state](int thread) { state.work(thread); });
}

}  // namespace

void forward(const LoadedModel& model, const int32_t* tokens, int n, int position, KvCache& cache,
             ForwardBuffers& buf, ThreadPool& pool, float* logits, bool all_logits) {
  if (decodes_in_one_dispatch(buf, pool)) {
    if (n == 1) return decode_in_one_dispatch(model, tokens[0], position, cache, buf, pool, logits);
    decode_state(model, buf, pool);
  }
  run_layers(model, tokens, n, position, cache, buf, pool);
  const int dim = model.config.dim;
  const int last = model.config.n_layers;
  if (all_logits) {
    project(model.weights.output, buf.x_norm.data(), n, logits, buf, pool, last,
            MatrixKind::kOutput);
  } else {
    project(model.weights.output, buf.x_norm.data() + static_cast<size_t>(n - 1) * dim, 1, logits,
            buf, pool, last, MatrixKind::kOutput);
  }
}

void forward_hidden(const LoadedModel& model, const int32_t* tokens, int n, int position,
                    KvCache& cache, ForwardBuffers& buf, ThreadPool& pool) {
  run_layers(model, tokens, n, position, cache, buf, pool);
}

}  // namespace edgelm
