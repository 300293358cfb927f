// edgelm quantize: any checkpoint load_model accepts -> a GGUF v3 file llama.cpp can load,
// with llama.cpp's metadata keys and weight layout (convert_hf_to_gguf: q/k rows of HF
// "llama"/"mistral" checkpoints permuted to the interleaved RoPE layout, llama3 RoPE scaling as
// rope_freqs.weight) and every 2-D weight converted to the type the plan chose
// (quant_plan.h). 1-D tensors (norms, biases) stay F32.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "compression/gptq.h"
#include "compression/imatrix.h"
#include "formats/gguf.h"
#include "model/loader.h"

namespace edgelm::compression {

struct QuantizeOptions {
  std::string input;                   // HF directory, GGUF or llama2.c .bin
  std::string output;                  // GGUF file, written atomically (OUTPUT.tmp then rename)
  std::string type = "q8_0";           // plain type or mix (quant_plan.h scheme_names())
  std::string imatrix;                 // optional importance matrix file (imatrix.h)
  std::vector<std::string> overrides;  // "PATTERN=TYPE"
  bool pure = false;                   // no mixing rules (llama-quantize --pure)
  bool allow_requantize = false;       // accept already block-quantized input weights
  int threads = 0;                     // 0: all cores
  // GPTQ (gptq.h) for the layer matrices of a type it can write, calibrated on this text file;
  // the other tensors are rounded as without it.
  std::string gptq_text;
  // Chunks of the text (its `threads` is ignored: `threads`); context 0: 512 tokens, or the
  // model's context if shorter.
  ImatrixOptions gptq_calibration{.context = 0};
  GptqOptions gptq;
  // Memory for the Hessians of one calibration pass; layers beyond it are calibrated in further
  // passes. 0: 60% of what the OS reports available.
  int64_t gptq_memory_bytes = 0;
};

struct TensorReport {
  std::string name;
  std::vector<int64_t> shape;
  DType from = DType::F32, to = DType::F32;
  std::string note;  // fallback or override explanation; empty otherwise
  bool used_imatrix = false;
  bool used_gptq = false;
  // GPTQ's output error on the calibration inputs, trace((W - Q) H (W - Q)^T), over that of the
  // rounding without --gptq (with the imatrix if given), on up to 64 rows spread over the matrix.
  double gptq_error_ratio = 0;
};

struct QuantizeSummary {
  std::string output;
  int64_t input_bytes = 0;                      // the input file(s)
  int64_t output_bytes = 0;                     // the written GGUF
  int64_t matrix_params = 0;                    // elements of the 2-D weights
  int64_t matrix_bytes_in = 0;                  // their bytes in the input
  int64_t matrix_bytes_out = 0;                 // and in the output
  std::map<std::string, int> tensors_per_type;  // output type name -> tensor count (all tensors)
  std::vector<TensorReport> tensors;
  std::vector<std::string> fallbacks;  // "tensor: q4_K -> q5_0 (why)"
  bool permuted_qk = false;
  int gptq_chunks = 0;  // calibration chunks run for GPTQ (0: no GPTQ)
  int64_t gptq_tokens = 0;
  int gptq_passes = 0;  // calibration passes, each for up to gptq_layers_per_pass layers
  int gptq_layers_per_pass = 0;
  int64_t gptq_widest_input = 0;  // columns of the widest GPTQ'd matrix
  std::string architecture;
  double seconds = 0;

  double bits_per_weight_in() const;  // of the 2-D weights
  double bits_per_weight_out() const;
};

// done/total are weight elements converted so far; `tensor` the one just finished.
using QuantizeProgress =
    std::function<void(int64_t done, int64_t total, const std::string& tensor)>;

// Throws edgelm::Error (never leaving a partial OUTPUT) for unknown types, bad overrides, an
// imatrix that does not fit the model, a missing or too short GPTQ text, an unwritable output
// and write errors. `calibration` reports GPTQ's calibration pass, before any tensor.
QuantizeSummary quantize_model(const QuantizeOptions& options,
                               const QuantizeProgress& progress = nullptr,
                               const ImatrixProgress& calibration = nullptr);

// The llama.cpp metadata of `model` (general.*, {arch}.*, tokenizer.ggml.*, chat template).
// The GGUF architecture is "llama" for llama/mistral, "qwen2" for qwen2.
void add_model_metadata(const LoadedModel& model, uint32_t file_type, GgufWriter& writer);

// Row order of llama.cpp's LlamaModel.permute: output row r of a q/k projection with n_heads
// heads comes from input row source_row_for_interleaved(r, ...). HF rotate-half pairs
// (i, i + d/2) become adjacent pairs (2i, 2i + 1).
int64_t source_row_for_interleaved(int64_t row, int64_t rows, int n_heads);

// convert_hf_to_gguf's llama3 rope_freqs.weight: per-frequency divisors (head_dim / 2 values).
std::vector<float> llama3_rope_factors(const ModelConfig& config);

}  // namespace edgelm::compression
