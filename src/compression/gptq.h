// GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
// Transformers", 2022) into ggml's block formats, so that its output is an ordinary GGUF that
// llama.cpp runs.
//
// Plain rounding minimises each weight's own error. What matters is the error of the product,
// (W - Q) x, over the inputs x the matrix sees: with H = mean(x x^T) on a calibration text that
// is trace((W - Q) H (W - Q)^T). GPTQ rounds a row one column at a time and moves each column's
// rounding error onto the columns not yet rounded, in the proportions H^-1 gives, so that the
// later roundings compensate it. Rows are independent (they share H), so the work is split by
// rows. A block's scales are chosen by the format's own search (quantize_row) from the block's
// weights as they stand when GPTQ first reaches one of its columns; every weight of the block is
// then rounded to the nearest level of those scales (kernels/quant_formats.h LevelGrid).
//
// Memory: the Hessians, one per distinct input (the Q/K/V input, the output projection's, the
// gate/up input, the down projection's), take 4 x (3 x dim^2 + ffn^2) bytes per layer (and
// 4 x dim^2 for the output head): 400 MB for SmolLM2-135M, 3.9 GB for TinyLlama-1.1B. quantize
// calibrates as many layers per pass as its memory budget holds.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "compression/imatrix.h"
#include "formats/tensor.h"
#include "model/loader.h"

namespace edgelm {
class ThreadPool;
}

namespace edgelm::compression {

// Mean of x x^T of the input of every matrix of some layers and the output head, over a
// calibration text.
struct Hessians {
  int first_layer = 0, end_layer = 0;  // the layers covered (and the output head)
  int chunks = 0;
  int64_t tokens = 0;
  std::vector<std::vector<float>> matrices;  // cols x cols each, row-major, symmetric
  std::vector<int64_t> cols;                 // of each entry of `matrices`
  std::map<std::string, int> by_tensor;      // "blk.0.attn_q.weight" -> entry

  // The Hessian of a tensor's input, or nullptr if there is none (an untied embedding) or it
  // has other than `cols` columns. A tied embedding has the output head's.
  const float* find(const std::string& tensor, int64_t cols) const;
};

// Bytes of memory the OS reports as available (Linux MemAvailable), or -1 where it cannot tell.
int64_t available_memory_bytes();

// Bytes of the Hessians of layers [first_layer, end_layer) and of the output head.
int64_t hessian_bytes(const ModelConfig& config, int first_layer, int end_layer);

// Runs the calibration pass (imatrix.h run_calibration) and accumulates x x^T of the four
// inputs of layers [first_layer, end_layer) and of the output head (the others' inputs pass by:
// a model too large for all its Hessians at once is calibrated in several passes). Throws
// edgelm::Error as run_calibration does, and, before any work, when those Hessians need more
// memory than the OS reports available.
Hessians collect_hessians(const LoadedModel& model, const std::string& text,
                          const ImatrixOptions& options, int first_layer, int end_layer,
                          const ImatrixProgress& progress = nullptr);

struct GptqOptions {
  // Added to H's diagonal, as a fraction of its mean (the paper's lambda): keeps H invertible
  // when inputs are correlated or some columns see little input.
  double damp = 0.01;
  // Each block's scale search weights the block's columns by diag(H) (the imatrix statistic)
  // rather than equally.
  bool weighted_scales = true;
  // Sweep the columns by decreasing diag(H) ("act-order", the paper's later heuristic) rather
  // than in order; a block's scales are still chosen when the sweep first reaches one of its
  // columns.
  bool act_order = false;
};

// Types GPTQ can write: those whose levels can be set with fixed scales.
bool gptq_supported(DType type);

// What GPTQ needs of one input's Hessian, made once for all the matrices that share the input
// (Q/K/V, gate/up): U with H^-1 = U^T U for H damped (options.damp), the columns that saw no
// input, and the scale search's column weights.
struct GptqFactor {
  int64_t cols = 0;
  std::vector<int64_t> order;     // the sweep's column order
  std::vector<float> u;           // cols x cols, upper triangular, rows and columns in `order`
  std::vector<bool> dead;         // by column
  std::vector<float> importance;  // diag(H) + the damping
};

// Throws edgelm::Error for a Hessian that is not positive definite even damped (non-finite or
// negative entries) or a damping that is negative or not finite.
GptqFactor gptq_factor(const float* hessian, int64_t cols, const GptqOptions& options,
                       ThreadPool* pool);

// GPTQ of a rows x cols matrix `w` (row-major F32; used as work space: it is left holding the
// error-compensated weights) into rows of `type` blocks (dtype_row_bytes(type, cols) bytes
// each) at `out`, with the factor of its input's Hessian. Throws edgelm::Error for an
// unsupported type, cols not a whole number of blocks or other than the factor's.
void gptq_quantize(DType type, float* w, int64_t rows, int64_t cols, const GptqFactor& factor,
                   const GptqOptions& options, void* out, ThreadPool* pool);

// The upper triangular U with H^-1 = U^T U (the "Cholesky of the inverse" GPTQ steps with) of
// H damped as gptq_factor does; `dead` marks the columns with H_ii = 0. cols x cols, F32.
std::vector<float> gptq_inverse_cholesky(const float* hessian, int64_t cols, double damp,
                                         std::vector<bool>& dead, ThreadPool* pool);

// trace((W - Q) H (W - Q)^T) / rows: the mean squared output error per row over the calibration
// inputs that H summarises (what GPTQ minimises), with Q dequantized from `quantized` (rows of
// `type`). For tests and reports.
double output_error(DType type, const float* w, const void* quantized, int64_t rows, int64_t cols,
                    const float* hessian);

}  // namespace edgelm::compression
