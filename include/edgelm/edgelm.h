// edgelm public C++ API: load a model, open sessions on it, generate.
//
//   auto model = edgelm::Model::load("models/stories260K/stories260K.bin");
//   edgelm::Session session(model);
//   edgelm::GenerateOptions opts;
//   opts.max_tokens = 64;
//   session.generate(model->tokenize("Once upon a time", true), opts,
//                    [](const edgelm::TokenEvent& ev) { std::cout << ev.text; return true; });
//
// A Model is immutable after load and may be shared by any number of Sessions
// on any threads; a Session (KV cache + sampler state) is used by one thread at
// a time. All failures are reported as edgelm::Error (a std::runtime_error).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "edgelm/error.h"

namespace edgelm {

struct LoadOptions {
  int threads = 0;  // 0: one per available core
  // Re-lay Q4_0 / Q5_0 matrices in memory for the interleaved decode kernels
  // where the active kernels prefer it (AVX-512 on Intel; see
  // interleaved_weights_preferred in kernels/matmul.h). Costs a copy at load;
  // the resident size is unchanged.
  bool interleave_weights = true;
  std::string chat_template_override;  // "chatml", "llama2", "llama3", "zephyr" or "" (auto)
};

struct SamplingParams {
  float temperature = 0.8f;         // <= 0: greedy
  int top_k = 40;                   // <= 0: off
  float top_p = 0.95f;              // >= 1: off
  float min_p = 0.05f;              // <= 0: off
  float repetition_penalty = 1.0f;  // 1: off (llama.cpp's repeat_penalty)
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int penalty_last_n = 64;  // window for the three penalties
  uint64_t seed = 0xED6E11;

  static SamplingParams greedy() {
    SamplingParams p;
    p.temperature = 0;
    return p;
  }
};

struct ModelInfo {
  std::string path;
  std::string format;        // "gguf", "safetensors", "llama2c"
  std::string architecture;  // "llama", "qwen2", "mistral", ...
  std::string name;
  int64_t n_params = 0;
  int64_t file_bytes = 0;
  std::vector<std::string> dtypes;  // distinct weight types, e.g. {"f16", "f32"}
  int interleaved_matrices = 0;  // Q4_0/Q5_0/Q4_K matrices re-laid for the decode kernels at load
  std::string weight_prefetch;   // Intel decode kernels' prefetch: "near" (the LLC holds the
                                 // weights), "far", or "" (other CPUs)
  int dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, hidden_dim = 0;
  int vocab_size = 0;
  int context_length = 0;
  float rope_theta = 0;
  bool tied_embeddings = false;
  std::string tokenizer;      // "sentencepiece", "bpe", "wordpiece"
  std::string chat_template;  // detected family: "chatml", "llama2", "llama3", "zephyr" or "none"
  int64_t weight_bytes_per_token = 0;  // weight bytes one decode step reads
  // edgelm's defaults, overridden by the checkpoint's generation_config.json.
  SamplingParams default_sampling;
};

// Measured read bandwidth in GB/s (10^9 bytes/s) using `threads` threads (0: all
// cores), streaming a working set of `bytes` (0: main memory, well above the
// caches). Pass the bytes a decode step reads (weights + KV cache) to get the
// roofline of bandwidth-bound decoding: a model that fits a cache is read from
// that cache, and so is the measurement.
double measure_memory_bandwidth(int threads = 0, int64_t bytes = 0);
// The SIMD instruction set the kernels use on this CPU ("avx512", "avx2", "neon", ...).
std::string active_kernel_isa();
// The instruction sets this CPU can run, best last ("scalar" is always there).
std::vector<std::string> supported_kernel_isas();
// Runs every later computation with the named instruction set's kernels (for
// comparisons, or to rule a SIMD path out); throws edgelm::Error for a name that
// is unknown or not in supported_kernel_isas(). Process-wide: not while models run.
void set_kernel_isa(const std::string& name);

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

enum class FinishReason { kStop, kLength, kEndOfText, kCancelled };
const char* finish_reason_name(FinishReason reason);  // "stop", "length", ...

struct GenerateOptions {
  int max_tokens = 256;           // < 0: until EOS or the context is full
  std::vector<std::string> stop;  // stop strings; not included in the output
  SamplingParams sampling;
  // If the prompt does not fit the context: throw (default) or keep its last tokens.
  bool truncate_prompt = false;
  bool ignore_eos = false;  // keep going past end-of-generation tokens (benchmarks)
};

struct TokenEvent {
  int32_t token = -1;
  std::string text;  // UTF-8 text that became final with this token (may be empty)
};

struct GenerateResult {
  std::string text;
  std::vector<int32_t> tokens;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int prompt_truncated_tokens = 0;  // > 0 if truncate_prompt dropped tokens
  FinishReason finish_reason = FinishReason::kLength;
  double prompt_seconds = 0, decode_seconds = 0;
};

// Return false to stop generation (FinishReason::kCancelled).
using TokenCallback = std::function<bool(const TokenEvent&)>;

class ModelImpl;

class Model {
 public:
  // path: a Hugging Face directory, a .gguf file or a llama2.c .bin file.
  static std::shared_ptr<Model> load(const std::string& path, const LoadOptions& options = {});
  ~Model();

  const ModelInfo& info() const;
  std::vector<int32_t> tokenize(const std::string& text, bool add_special,
                                bool parse_special = false) const;
  std::string detokenize(const std::vector<int32_t>& tokens) const;
  std::string token_piece(int32_t token) const;  // raw bytes of one token
  int32_t bos_token() const;
  int32_t eos_token() const;
  bool is_end_of_generation(int32_t token) const;
  int vocab_size() const;
  int context_length() const;

  // Renders messages with the model's chat template (or the override).
  std::string apply_chat_template(const std::vector<ChatMessage>& messages,
                                  bool add_generation_prompt = true) const;

  ModelImpl& impl() const { return *impl_; }

 private:
  Model() = default;
  std::unique_ptr<ModelImpl> impl_;
};

class SessionImpl;

struct SessionOptions {
  int context_length = 0;       // 0: the model's maximum
  std::string kv_type = "f16";  // KV cache element type: "f16", "f32" or "q8_0"
  int threads = 0;              // 0: the model's LoadOptions::threads
  // Decode on several threads runs each step in one dispatch of the thread
  // pool (same logits, faster); false: one dispatch per matrix product, the
  // earlier way, for comparison (edgelm bench --alternate-decode-paths).
  bool decode_in_one_dispatch = true;
};

class Session {
 public:
  // context_length 0: the model's maximum.
  explicit Session(std::shared_ptr<const Model> model, int context_length = 0);
  Session(std::shared_ptr<const Model> model, const SessionOptions& options);
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  // Forgets all tokens (the KV cache is reused, not freed).
  void reset();
  // Keeps only the first n tokens of the context (e.g. the part of a chat that
  // did not change), so they need not be evaluated again.
  void rewind(int n_tokens);
  const std::vector<int32_t>& tokens() const;  // the context
  int n_past() const;                          // tokens in the context
  int context_length() const;

  // Appends tokens to the context (batched prefill) and returns the logits for
  // the last one (vocab_size floats, valid until the next call).
  const float* evaluate(const std::vector<int32_t>& tokens);
  // As evaluate, but returns logits for every token: tokens.size() x vocab_size.
  std::vector<float> evaluate_all(const std::vector<int32_t>& tokens);

  // Evaluates the prompt on top of what is already in the context, then samples.
  GenerateResult generate(const std::vector<int32_t>& prompt, const GenerateOptions& options,
                          const TokenCallback& on_token = nullptr);

  // Mean-pooled, L2-normalized final hidden states of `tokens` (resets the session).
  std::vector<float> embed(const std::vector<int32_t>& tokens);

 private:
  std::unique_ptr<SessionImpl> impl_;
};

}  // namespace edgelm
