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

// Keys and values of every layer: F16 (default), F32 or Q8_0. Per layer and KV
// head, keys are a [capacity][head_dim] matrix and values are stored transposed,
// [head_dim][value_columns], so that both attention products (q.K^T and p.V)
// are plain matrix products for the matmul kernels.
//
// Q8_0 values are quantized in blocks of 32 positions; the block being filled
// is kept in F32 (`staging`) and re-quantized as each position arrives.
struct KvCache {
  DType type = DType::F16;
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int capacity = 0;
  int value_columns = 0;  // capacity rounded up to the type's block size
  size_t key_row_bytes = 0, value_row_bytes = 0;
  // Left uninitialized on purpose: pages of a long context cost memory only
  // once a position is written.
  std::unique_ptr<uint8_t[]> keys, values;
  std::vector<float> staging;      // Q8_0: [layer][kv_head][head_dim][32]
  std::vector<int> next_position;  // Q8_0: per layer, the position staging continues at

  // Throws edgelm::Error for types other than f16/f32/q8_0, or q8_0 with head_dim % 32 != 0.
  void allocate(const ModelConfig& config, int capacity, DType type);
  int64_t block_size() const { return type == DType::Q8_0 ? 32 : 1; }
  size_t bytes() const {
    const size_t matrices = static_cast<size_t>(n_layers) * n_kv_heads;
    return matrices * (capacity * key_row_bytes + head_dim * value_row_bytes);
  }
  uint8_t* key_matrix(int layer, int kv_head) {
    return keys.get() + matrix_index(layer, kv_head) * capacity * key_row_bytes;
  }
  uint8_t* value_matrix(int layer, int kv_head) {
    return values.get() + matrix_index(layer, kv_head) * head_dim * value_row_bytes;
  }
  // Stores one token's keys and values (kv_dim floats each) at `position`.
  void store(int layer, int position, const float* k, const float* v);
  // The two halves of store() for an F16 or F32 cache: all of a token's keys,
  // and one KV head's values (head_dim floats). Values are stored transposed,
  // one element in each of head_dim rows, so decode attention has each work
  // item store its own head's (see attend() in transformer.cc).
  void store_keys(int layer, int position, const float* k);
  void store_values(int layer, int kv_head, int position, const float* v_head);

 private:
  size_t matrix_index(int layer, int kv_head) const {
    return static_cast<size_t>(layer) * n_kv_heads + kv_head;
  }
  void store_q8_0_values(int layer, int position, const float* v);
};

// The weight matrices of a layer (and the output head), for hooks and names.
enum class MatrixKind { kAttnQ, kAttnK, kAttnV, kAttnOutput, kFfnGate, kFfnUp, kFfnDown, kOutput };
// Canonical tensor name, e.g. "blk.3.ffn_down.weight" or "output.weight".
std::string matrix_tensor_name(int layer, MatrixKind kind);

// Observes the input of every matrix product: x is [n][cols] (used to collect
// activation statistics for calibrated quantization).
using ActivationHook = void (*)(void* context, int layer, MatrixKind kind, const float* x, int n,
                                int cols);

struct DecodeStepState;  // transformer.cc
struct DecodeStepStateDeleter {
  void operator()(DecodeStepState* state) const;
};

// Activation buffers for batches of up to max_batch tokens, allocated once.
struct ForwardBuffers {
  ActivationHook hook = nullptr;  // optional
  void* hook_context = nullptr;
  int max_batch = 0;
  std::vector<float> x, x_norm, q, k, v, attention, ffn_gate, ffn_up;
  std::vector<float> rope_cos, rope_sin;  // [max_batch][head_dim/2]
  // Per thread, for one run of query heads (see attend() in transformer.cc):
  std::vector<float> scores;             // [threads][heads][capacity]
  std::vector<float> attention_weights;  // [threads][heads][capacity, padded to 32]
  std::vector<float> value_rows;         // [threads][capacity + heads]: Q8_0 values in F32
  // Decode: the output projection of each KV head's query heads, [n_kv_heads][dim].
  std::vector<float> projection_parts;
  // Decode (one token, no activation hook) on several threads runs each step
  // in one dispatch of the pool, its products and attention as stages of work
  // items (DecodeStepState in transformer.cc), with the same logits as one
  // dispatch per product (false: that way, for comparison).
  bool decode_in_one_dispatch = true;
  // The stages of such a step and their counters, built at the first call for
  // the model and thread count (one owner: the buffers are move-only).
  std::unique_ptr<DecodeStepState, DecodeStepStateDeleter> decode_state;

  void allocate(const ModelConfig& config, int max_batch, int capacity, int threads);
};

// Whether decode projects the attention output per KV head, inside the
// attention pass (attend() in transformer.cc): wo must be in an interleaved
// layout (Q4_0_X16, Q5_0_X16, Q4_K_X16, Q8_0_X16: loaded so where the CPU's kernels read
// those faster) and each KV head's query heads span whole blocks of it (32
// columns, 256 for Q4_K). Otherwise, and with an activation hook, the
// projection follows attention as one product.
bool projects_output_per_kv_head(const ModelConfig& config, const WeightMatrix& wo);

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
