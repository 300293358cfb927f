// The Llama-family forward pass (llm.c style: one function, top to bottom).
// Works on a batch of consecutive tokens so that prefill runs matrix-matrix
// products; decode is the batch of one.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "model/loader.h"

namespace edgelm {

class ThreadPool;

// Keys and values of every layer for positions [0, capacity), F32,
// laid out [layer][position][kv_dim].
struct KvCache {
  int n_layers = 0;
  int capacity = 0;
  int kv_dim = 0;
  // Left uninitialized on purpose: pages of a long context cost memory only
  // once a position is written.
  std::unique_ptr<float[]> keys, values;

  void allocate(const ModelConfig& config, int capacity);
  size_t bytes() const { return 2 * sizeof(float) * n_layers * static_cast<size_t>(capacity) * kv_dim; }
  float* key(int layer, int position) {
    return keys.get() + (static_cast<size_t>(layer) * capacity + position) * kv_dim;
  }
  float* value(int layer, int position) {
    return values.get() + (static_cast<size_t>(layer) * capacity + position) * kv_dim;
  }
};

// Activation buffers for batches of up to max_batch tokens, allocated once.
struct ForwardBuffers {
  int max_batch = 0;
  std::vector<float> x, x_norm, q, k, v, attention, ffn_gate, ffn_up;
  std::vector<float> rope_cos, rope_sin;  // [max_batch][head_dim/2]
  std::vector<float> scores;              // [threads][capacity]

  void allocate(const ModelConfig& config, int max_batch, int capacity, int threads);
};

// Runs tokens[0..n) at positions [position, position + n), appending their keys
// and values to the cache. Writes logits (vocab_size floats per token) for every
// token if all_logits, else for the last one only.
// Throws edgelm::Error on out-of-range tokens or a full cache.
void forward(const LoadedModel& model, const int32_t* tokens, int n, int position,
             KvCache& cache, ForwardBuffers& buffers, ThreadPool& pool, float* logits,
             bool all_logits);

// Final hidden states (after the output norm) instead of logits, [n][dim] in
// buffers.x_norm; used for embeddings.
void forward_hidden(const LoadedModel& model, const int32_t* tokens, int n, int position,
                    KvCache& cache, ForwardBuffers& buffers, ThreadPool& pool);

}  // namespace edgelm
