#include "model/transformer.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "kernels/thread_pool.h"
#include "util/error.h"

namespace edgelm {

void KvCache::allocate(const ModelConfig& config, int new_capacity) {
  n_layers = config.n_layers;
  capacity = new_capacity;
  kv_dim = config.kv_dim();
  const size_t n = static_cast<size_t>(n_layers) * capacity * kv_dim;
  keys.reset(new float[n]);
  values.reset(new float[n]);
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
  scores.assign(static_cast<size_t>(threads) * capacity, 0.0f);
}

namespace {

void add_bias(float* rows, const float* bias, int n, int width) {
  if (bias == nullptr) return;
  for (int i = 0; i < n; ++i) add_inplace(rows + static_cast<size_t>(i) * width, bias, width);
}

// Causal attention of n new tokens (at positions [position, position+n)) over
// the cache, one (token, head) pair at a time, split across threads.
void attend(const ModelConfig& c, int layer, int n, int position, KvCache& cache,
            ForwardBuffers& buf, ThreadPool& pool) {
  const int head_dim = c.head_dim;
  const int group = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int64_t pairs = static_cast<int64_t>(n) * c.n_heads;
  const int threads = pool.size();
  pool.run_on_all([&](int thread) {
    float* scores = buf.scores.data() + static_cast<size_t>(thread) * cache.capacity;
    const int64_t begin = pairs * thread / threads;
    const int64_t end = pairs * (thread + 1) / threads;
    for (int64_t pair = begin; pair < end; ++pair) {
      const int i = static_cast<int>(pair / c.n_heads);
      const int h = static_cast<int>(pair % c.n_heads);
      const int kv_head = h / group;
      const int last = position + i;  // attends to positions 0..last
      const float* q = buf.q.data() + static_cast<size_t>(i) * c.q_dim() + h * head_dim;
      for (int t = 0; t <= last; ++t) {
        const float* k = cache.key(layer, t) + kv_head * head_dim;
        float dot = 0.0f;
        for (int d = 0; d < head_dim; ++d) dot += q[d] * k[d];
        scores[t] = dot * scale;
      }
      softmax(scores, last + 1);
      float* out = buf.attention.data() + static_cast<size_t>(i) * c.q_dim() + h * head_dim;
      std::fill(out, out + head_dim, 0.0f);
      for (int t = 0; t <= last; ++t) {
        const float* v = cache.value(layer, t) + kv_head * head_dim;
        const float w = scores[t];
        for (int d = 0; d < head_dim; ++d) out[d] += w * v[d];
      }
    }
  });
}

// Everything up to and including the final norm; result in buf.x_norm.
void run_layers(const LoadedModel& model, const int32_t* tokens, int n, int position,
                KvCache& cache, ForwardBuffers& buf, ThreadPool& pool) {
  const ModelConfig& c = model.config;
  const ModelWeights& w = model.weights;
  if (n <= 0) fail("forward: empty batch");
  if (n > buf.max_batch) fail("forward: batch of ", n, " exceeds buffers of ", buf.max_batch);
  if (position < 0 || position + n > cache.capacity) {
    fail("context full: ", position + n, " tokens do not fit a context of ", cache.capacity);
  }
  const int dim = c.dim;
  const int half = c.head_dim / 2;

  for (int i = 0; i < n; ++i) {
    const int32_t token = tokens[i];
    if (token < 0 || token >= c.vocab_size) {
      fail("token id ", token, " is out of range (vocab size ", c.vocab_size, ")");
    }
    const auto* row = static_cast<const uint8_t*>(w.token_embedding.data) +
                      static_cast<size_t>(token) * w.token_embedding.row_bytes;
    dequantize_row(w.token_embedding.type, row, buf.x.data() + static_cast<size_t>(i) * dim, dim);
    rope_angles(position + i, model.rope_inv_freq.data(), half,
                buf.rope_cos.data() + static_cast<size_t>(i) * half,
                buf.rope_sin.data() + static_cast<size_t>(i) * half);
  }

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    // Attention block.
    for (int i = 0; i < n; ++i) {
      rmsnorm(buf.x_norm.data() + static_cast<size_t>(i) * dim,
              buf.x.data() + static_cast<size_t>(i) * dim, L.attn_norm, dim, c.rms_eps);
    }
    matmul(L.wq, buf.x_norm.data(), n, buf.q.data(), &pool);
    matmul(L.wk, buf.x_norm.data(), n, buf.k.data(), &pool);
    matmul(L.wv, buf.x_norm.data(), n, buf.v.data(), &pool);
    add_bias(buf.q.data(), L.bq, n, c.q_dim());
    add_bias(buf.k.data(), L.bk, n, c.kv_dim());
    add_bias(buf.v.data(), L.bv, n, c.kv_dim());
    for (int i = 0; i < n; ++i) {
      const float* cos = buf.rope_cos.data() + static_cast<size_t>(i) * half;
      const float* sin = buf.rope_sin.data() + static_cast<size_t>(i) * half;
      float* q = buf.q.data() + static_cast<size_t>(i) * c.q_dim();
      float* k = buf.k.data() + static_cast<size_t>(i) * c.kv_dim();
      for (int h = 0; h < c.n_heads; ++h) rope(q + h * c.head_dim, c.head_dim, cos, sin, c.rope_interleaved);
      for (int h = 0; h < c.n_kv_heads; ++h) rope(k + h * c.head_dim, c.head_dim, cos, sin, c.rope_interleaved);
      std::copy(k, k + c.kv_dim(), cache.key(l, position + i));
      const float* v = buf.v.data() + static_cast<size_t>(i) * c.kv_dim();
      std::copy(v, v + c.kv_dim(), cache.value(l, position + i));
    }
    attend(c, l, n, position, cache, buf, pool);
    matmul(L.wo, buf.attention.data(), n, buf.x_norm.data(), &pool);
    add_inplace(buf.x.data(), buf.x_norm.data(), static_cast<int64_t>(n) * dim);

    // Feed-forward block (SwiGLU).
    for (int i = 0; i < n; ++i) {
      rmsnorm(buf.x_norm.data() + static_cast<size_t>(i) * dim,
              buf.x.data() + static_cast<size_t>(i) * dim, L.ffn_norm, dim, c.rms_eps);
    }
    matmul(L.w_gate, buf.x_norm.data(), n, buf.ffn_gate.data(), &pool);
    matmul(L.w_up, buf.x_norm.data(), n, buf.ffn_up.data(), &pool);
    silu_mul(buf.ffn_gate.data(), buf.ffn_gate.data(), buf.ffn_up.data(),
             static_cast<int64_t>(n) * c.hidden_dim);
    matmul(L.w_down, buf.ffn_gate.data(), n, buf.x_norm.data(), &pool);
    add_inplace(buf.x.data(), buf.x_norm.data(), static_cast<int64_t>(n) * dim);
  }
  for (int i = 0; i < n; ++i) {
    rmsnorm(buf.x_norm.data() + static_cast<size_t>(i) * dim,
            buf.x.data() + static_cast<size_t>(i) * dim, w.output_norm, dim, c.rms_eps);
  }
}

}  // namespace

void forward(const LoadedModel& model, const int32_t* tokens, int n, int position,
             KvCache& cache, ForwardBuffers& buf, ThreadPool& pool, float* logits,
             bool all_logits) {
  run_layers(model, tokens, n, position, cache, buf, pool);
  const int dim = model.config.dim;
  if (all_logits) {
    matmul(model.weights.output, buf.x_norm.data(), n, logits, &pool);
  } else {
    matmul(model.weights.output, buf.x_norm.data() + static_cast<size_t>(n - 1) * dim, 1, logits,
           &pool);
  }
}

void forward_hidden(const LoadedModel& model, const int32_t* tokens, int n, int position,
                    KvCache& cache, ForwardBuffers& buf, ThreadPool& pool) {
  run_layers(model, tokens, n, position, cache, buf, pool);
}

}  // namespace edgelm
