// Private state behind the public Model and Session handles.
#pragma once

#include <memory>
#include <vector>

#include "edgelm/edgelm.h"
#include "generation/chat_template.h"
#include "kernels/thread_pool.h"
#include "model/loader.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"

namespace edgelm {

class ModelImpl {
 public:
  std::unique_ptr<LoadedModel> loaded;
  std::unique_ptr<Tokenizer> tokenizer;
  ModelInfo info;
  ChatFormat chat_format = ChatFormat::kNone;
  int threads = 1;
};

class SessionImpl {
 public:
  static constexpr int kMaxBatch = 128;  // prefill chunk: bounds scratch memory

  SessionImpl(std::shared_ptr<const Model> model, const SessionOptions& options);
  void run(const int32_t* tokens, int n, std::vector<float>* all_logits);

  std::shared_ptr<const Model> model;
  const LoadedModel& loaded;
  ThreadPool pool;
  int capacity = 0;
  KvCache cache;
  ForwardBuffers buffers;
  std::vector<int32_t> tokens;  // the context; [0, n_evaluated) are in the cache
  int n_evaluated = 0;
  std::vector<float> logits;         // of the last evaluated token
  std::vector<float> sample_logits;  // scratch the sampler may modify
  bool has_logits = false;
};

}  // namespace edgelm
