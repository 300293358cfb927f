// Importance matrices (llama.cpp's "imatrix"): for every weight matrix, the mean of the
// squared input activation of each column over a calibration text. quantize passes them to
// quantize_row as `importance`, so that the columns that see large activations are rounded
// more carefully.
//
// Files: written in llama.cpp's legacy binary format (imatrix.dat, read by every llama-quantize);
// read from that format or from llama.cpp's newer GGUF imatrix format.
//
// Legacy format (little endian):
//   int32 n_entries
//   n_entries x { int32 name_len; char name[name_len]; int32 ncall; int32 nval;
//                 float values[nval] }            values = mean(x^2) * ncall
//   int32 chunks; int32 dataset_len; char dataset[dataset_len]   (optional trailer)
// GGUF format: general.type = "imatrix", tensors "<name>.in_sum2" (F32 [nval], sum of x^2)
// and "<name>.counts" (F32 [1], number of activations summed); importance = in_sum2 / counts.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "model/loader.h"
#include "model/transformer.h"

namespace edgelm {
class ThreadPool;
}

namespace edgelm::compression {

struct ImatrixEntry {
  std::vector<float> importance;  // mean squared activation per column (>= 0)
  int32_t ncall = 0;              // chunks that contributed (llama.cpp's ncall)
};

struct Imatrix {
  std::map<std::string, ImatrixEntry> entries;  // by weight tensor name ("blk.0.attn_q.weight")
  int32_t chunks = 0;
  std::string dataset;  // calibration file name
};

// Detects the format from the GGUF magic. Throws edgelm::Error naming the file and the problem
// (truncated, absurd sizes, negative or non-finite values).
Imatrix read_imatrix(const std::string& path);
// Legacy .dat format, atomically (PATH.tmp then rename).
void write_imatrix_dat(const Imatrix& imatrix, const std::string& path);

// Checks that every entry names a weight matrix of `model` with as many columns as it has
// values, and that at least one matrix is covered; throws edgelm::Error naming the first
// mismatch ("is this imatrix from another model?").
void check_imatrix_matches(const Imatrix& imatrix, const LoadedModel& model,
                           const std::string& source);

struct ImatrixOptions {
  int context = 512;   // tokens per chunk (llama-imatrix's -c)
  int max_chunks = 0;  // 0: every whole chunk of the text
  int threads = 0;     // 0: all cores
};

using ImatrixProgress = std::function<void(int chunks_done, int n_chunks)>;

// The calibration pass (of the imatrix and of GPTQ, gptq.h): runs the model over the text in
// chunks of options.context tokens (the first token of each chunk replaced by BOS when the
// tokenizer adds one, each chunk from an empty cache), batches of up to 128 tokens, with `hook`
// seeing the input of every layer matrix product and `head_input` (if set) the output head's
// input (the final norm's output) of each batch; `progress` gets (0, n) first, then (i, n)
// after chunk i. The hook may use `pool` (it runs between the
// pass's own dispatches). Returns the chunks run. Throws edgelm::Error if the text is shorter
// than one chunk or the context is invalid.
int run_calibration(const LoadedModel& model, const std::string& text,
                    const ImatrixOptions& options, ThreadPool& pool, ActivationHook hook,
                    void* hook_context,
                    const std::function<void(const float* x, int n)>& head_input,
                    const ImatrixProgress& progress);

// Runs the model over the text in chunks of options.context tokens (the first token of each
// chunk replaced by BOS when the tokenizer adds one, each chunk from an empty cache) and
// accumulates x^2 of the input of every matrix product, the output head included (under
// "token_embd.weight" when the embedding is tied). Throws edgelm::Error if the text is shorter
// than one chunk or the context is invalid.
Imatrix collect_imatrix(const LoadedModel& model, const std::string& text,
                        const ImatrixOptions& options, const ImatrixProgress& progress = nullptr);

}  // namespace edgelm::compression
