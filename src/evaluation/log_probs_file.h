// Base-model log-probabilities saved for later comparisons (`edgelm perplexity --save-logits`),
// so that a quantized model can be compared without loading its base again. Only the top-k
// log-probabilities of each scored position are kept: a full row is vocab floats per token.
//
// Little-endian binary file:
//   char[8] "EDGELMLP"
//   u32 version (1), u32 vocab_size, u32 context, u32 n_chunks, u32 top_k, i32 bos (-1: none)
//   u64 n_tokens                  = n_chunks * context
//   i32 tokens[n_tokens]          the text's first n_chunks * context tokens (before BOS)
//   then for each chunk, for each scored position (context - 1 - context / 2 of them):
//     f32 nll                     -log p_base(actual next token)
//     i32 ids[top_k]              most probable first (ties: lower id first)
//     f32 log_probs[top_k]
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "evaluation/perplexity.h"

namespace edgelm {
class AtomicFile;
}

namespace edgelm::evaluation {

// One chunk's records, as parallel arrays (scored_per_chunk rows).
struct LogProbsChunk {
  std::vector<float> nll;        // rows
  std::vector<int32_t> ids;      // rows x top_k
  std::vector<float> log_probs;  // rows x top_k
};

class LogProbsWriter {
 public:
  // `tokens`: the text's tokens (at least plan.n_chunks * plan.context of them).
  LogProbsWriter(const std::string& path, const ChunkPlan& plan, int vocab_size, int top_k,
                 const std::vector<int32_t>& tokens);
  ~LogProbsWriter();
  void write_chunk(const LogProbsChunk& chunk);  // chunks in order
  void commit();                                 // throws if not every chunk was written

 private:
  std::unique_ptr<AtomicFile> file_;
  ChunkPlan plan_;
  int top_k_ = 0;
  int chunks_written_ = 0;
};

class LogProbsReader {
 public:
  // Validates the header, the tokens and the file size; throws edgelm::Error naming the file.
  explicit LogProbsReader(const std::string& path);
  const ChunkPlan& plan() const { return plan_; }
  int vocab_size() const { return vocab_size_; }
  int top_k() const { return top_k_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  // Reads the next chunk's records (chunks in order), checking ids and values.
  void read_chunk(LogProbsChunk& chunk);

 private:
  std::string path_;
  std::ifstream in_;
  ChunkPlan plan_;
  int vocab_size_ = 0;
  int top_k_ = 0;
  std::vector<int32_t> tokens_;
  int chunks_read_ = 0;
  std::vector<char> buffer_;
};

}  // namespace edgelm::evaluation
