// The Llama-family forward pass (llm.c style: one function, top to bottom).
// Works on a batch of consecutive tokens so that prefill runs matrix-matrix
// products; decode is the batch of one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/loader.h"

namespace edgelm {

class ThreadPool;

// Keys and values of every layer, F16 (default) or F32. Per layer and KV head,
// keys are a [capacity][head_dim] matrix and values are stored transposed,
// [head_dim][capacity], so that both attention products (q.K^T and p.V) are
// plain matrix products for the matmul kernels.
struct KvCache {
  DType type = DType::F16;
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int capacity = 0;
  // Left uninitialized on purpose: pages of a long context cost memory only
  // once a position is written.
  std::unique_ptr<uint8_t[]> keys, values;

  void allocate(const ModelConfig& config, int capacity, DType type);
  size_t element_bytes() const { return type == DType::F32 ? 4 : 2; }
  size_t bytes() const {
    return 2 * element_bytes() * n_layers * static_cast<size_t>(n_kv_heads) * head_dim * capacity;
  }
  // Start of the key matrix / transposed value matrix of one layer and KV head.
  uint8_t* key_matrix(int layer, int kv_head) { return keys.get() + block_offset(layer, kv_head); }
  uint8_t* value_matrix(int layer, int kv_head) {
    return values.get() + block_offset(layer, kv_head);
  }
  // Stores one token's keys and values (kv_dim floats each) at `position`.
  void store(int layer, int position, const float* k, const float* v);

 private:
  size_t block_offset(int layer, int kv_head) const {
    return (static_cast<size_t>(layer) * n_kv_heads + kv_head) * head_dim * capacity *
           element_bytes();
  }
};

// The weight matrices of a layer (and the output head), for hooks and names.
enum class MatrixKind { kAttnQ, kAttnK, kAttnV, kAttnOutput, kFfnGate, kFfnUp, kFfnDown, kOutput };
// Canonical tensor name, e.g. "blk.3.ffn_down.weight" or "output.weight".
std::string matrix_tensor_name(int layer, MatrixKind kind);

// Observes the input of every matrix product: x is [n][cols] (used to collect
// activation statistics for calibrated quantization).
using ActivationHook = void (*)(void* context, int layer, MatrixKind kind, const float* x, int n,
                                int cols);

// Activation buffers for batches of up to max_batch tokens, allocated once.
struct ForwardBuffers {
  ActivationHook hook = nullptr;  // optional
  void* hook_context = nullptr;
  int max_batch = 0;
  std::vector<float> x, x_norm, q, k, v, attention, ffn_gate, ffn_up;
  std::vector<float> rope_cos, rope_sin;  // [max_batch][head_dim/2]
  std::vector<float> scores;              // [threads][heads per KV head][capacity]

  void allocate(const ModelConfig& config, int max_batch, int capacity, int threads);
};

// Runs tokens[0..n) at positions [position, position + n), appending their keys
// and values to the cache. Writes logits (vocab_size floats per token) for every
// token if all_logits, else for the last one only.
// Throws edgelm::Error on out-of-range tokens or a full cache.
void forward(const LoadedModel& model, const int32_t* tokens, int n, int position, KvCache& cache,
             ForwardBuffers& buffers, ThreadPool& pool, float* logits, bool all_logits);

// Final hidden states (after the output norm) instead of logits, [n][dim] in
// buffers.x_norm; used for embeddings.
void forward_hidden(const LoadedModel& model, const int32_t* tokens, int n, int position,
                    KvCache& cache, ForwardBuffers& buffers, ThreadPool& pool);

}  // namespace edgelm
