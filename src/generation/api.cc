// Implementation of the public API (include/edgelm/edgelm.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>
#include <utility>

#include "edgelm/edgelm.h"
#include "generation/chat_template.h"
#include "generation/impl.h"
#include "generation/sampler.h"
#include "kernels/bandwidth.h"
#include "kernels/matmul.h"
#include "util/error.h"

namespace edgelm {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kEndOfText:
      return "stop";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "stop";
}

double measure_memory_bandwidth(int threads, int64_t bytes) {
  if (bytes < 0) fail("measure_memory_bandwidth: negative size ", bytes);
  ThreadPool pool(threads);
  return measure_read_bandwidth_gbs(pool,
                                    bytes == 0 ? kMainMemoryBytes : static_cast<size_t>(bytes));
}

std::string active_kernel_isa() {
  return isa_name(active_isa());
}

std::vector<std::string> supported_kernel_isas() {
  std::vector<std::string> names;
  for (Isa isa : supported_isas()) names.push_back(isa_name(isa));
  return names;
}

void set_kernel_isa(const std::string& name) {
  Isa isa;
  if (!isa_from_name(name, &isa) || !isa_supported(isa)) {
    std::string usable;
    for (const std::string& n : supported_kernel_isas()) usable += (usable.empty() ? "" : ", ") + n;
    fail("instruction set '", name, "' is unknown or not supported by this CPU (this CPU: ", usable,
         ")");
  }
  set_active_isa(isa);
}

// ---------------------------------------------------------------- Model

std::shared_ptr<Model> Model::load(const std::string& path, const LoadOptions& options) {
  std::shared_ptr<Model> model(new Model());
  model->impl_ = std::make_unique<ModelImpl>();
  ModelImpl& m = *model->impl_;
  m.loaded = load_model(path);
  m.threads =
      options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  int interleaved = 0;
  if (options.interleave_weights && interleaved_weights_preferred()) {
    ThreadPool pool(m.threads);
    interleaved = interleave_matrices(*m.loaded, &pool);
  }
  if (interleaved_weights_preferred()) {
    // The Intel decode kernels' prefetch distance follows where the weights
    // will come from: the last-level cache if they fit in it, else DRAM.
    const StreamPrefetch mode =
        stream_prefetch_for(static_cast<size_t>(m.loaded->weight_bytes_per_token));
    set_stream_prefetch(mode);
    m.info.weight_prefetch = stream_prefetch_name(mode);
  }
  // The tokenizer takes the vocabulary rather than a copy (tokens and merges are
  // tens of MB for 150k-token vocabularies); m.loaded->vocab is empty from here on.
  m.tokenizer = std::make_unique<Tokenizer>(std::move(m.loaded->vocab));
  m.chat_format = options.chat_template_override.empty()
                      ? detect_chat_format(m.loaded->chat_template_source)
                      : chat_format_from_name(options.chat_template_override);

  const LoadedModel& l = *m.loaded;
  const ModelConfig& c = l.config;
  ModelInfo& info = m.info;
  info.path = l.path;
  info.format = l.format;
  info.architecture = c.architecture;
  info.name = c.name;
  info.n_params = l.n_params;
  info.file_bytes = l.file_bytes;
  info.dtypes = l.weight_dtypes;
  info.interleaved_matrices = interleaved;
  info.dim = c.dim;
  info.n_layers = c.n_layers;
  info.n_heads = c.n_heads;
  info.n_kv_heads = c.n_kv_heads;
  info.head_dim = c.head_dim;
  info.hidden_dim = c.hidden_dim;
  info.vocab_size = c.vocab_size;
  info.context_length = c.context_length;
  info.rope_theta = c.rope_theta;
  info.tied_embeddings = c.tied_embeddings;
  info.tokenizer = tokenizer_kind_name(m.tokenizer->vocab().kind);
  info.chat_template = chat_format_name(m.chat_format);
  info.weight_bytes_per_token = l.weight_bytes_per_token;
  const GenerationDefaults& d = l.generation_defaults;
  if (d.temperature >= 0) info.default_sampling.temperature = d.temperature;
  if (d.top_p >= 0) info.default_sampling.top_p = d.top_p;
  if (d.top_k >= 0) info.default_sampling.top_k = d.top_k;
  if (d.repetition_penalty > 0) info.default_sampling.repetition_penalty = d.repetition_penalty;
  return model;
}

Model::~Model() = default;

const ModelInfo& Model::info() const {
  return impl_->info;
}

std::vector<int32_t> Model::tokenize(const std::string& text, bool add_special,
                                     bool parse_special) const {
  return impl_->tokenizer->encode(text, add_special, parse_special);
}

std::string Model::detokenize(const std::vector<int32_t>& tokens) const {
  return impl_->tokenizer->decode(tokens);
}

std::string Model::token_piece(int32_t token) const {
  return impl_->tokenizer->token_to_piece(token, true);
}

int32_t Model::bos_token() const {
  return impl_->tokenizer->vocab().bos;
}
int32_t Model::eos_token() const {
  return impl_->tokenizer->vocab().eos;
}
bool Model::is_end_of_generation(int32_t token) const {
  return impl_->tokenizer->is_end_of_generation(token);
}
int Model::vocab_size() const {
  return impl_->loaded->config.vocab_size;
}
int Model::context_length() const {
  return impl_->loaded->config.context_length;
}

std::string Model::apply_chat_template(const std::vector<ChatMessage>& messages,
                                       bool add_generation_prompt) const {
  return render_chat(impl_->chat_format, messages, add_generation_prompt);
}

// ---------------------------------------------------------------- Session

SessionImpl::SessionImpl(std::shared_ptr<const Model> m, const SessionOptions& options)
    : model(std::move(m)),
      loaded(*model->impl().loaded),
      pool(options.threads > 0 ? options.threads : model->impl().threads) {
  const ModelConfig& c = loaded.config;
  const int context = options.context_length;
  if (context < 0) fail("context length must be >= 0, got ", context);
  capacity = context == 0 ? c.context_length : std::min(context, c.context_length);
  cache.allocate(c, capacity, dtype_from_name(options.kv_type));
  buffers.allocate(c, std::min(kMaxBatch, capacity), capacity, pool.size());
  buffers.decode_in_one_dispatch = options.decode_in_one_dispatch;
  logits.assign(c.vocab_size, 0.0f);
  sample_logits.assign(c.vocab_size, 0.0f);
  tokens.reserve(capacity);  // no reallocation while generating
}

// Runs tokens[0..n) after what is already evaluated; logits of the last one
// (or of all of them, into `all`) are kept.
void SessionImpl::run(const int32_t* tokens, int n, std::vector<float>* all) {
  const int vocab = loaded.config.vocab_size;
  if (n_evaluated + n > capacity) {
    fail("context full: ", n_evaluated + n, " tokens do not fit a context of ", capacity);
  }
  for (int i = 0; i < n; ++i) {  // check all first: a bad token must not leave half a batch run
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      fail("token id ", tokens[i], " is out of range (vocab size ", vocab, ")");
    }
  }
  for (int done = 0; done < n;) {
    const int chunk = std::min(n - done, buffers.max_batch);
    float* out = all != nullptr ? all->data() + static_cast<size_t>(done) * vocab : logits.data();
    forward(loaded, tokens + done, chunk, n_evaluated, cache, buffers, pool, out, all != nullptr);
    n_evaluated += chunk;
    done += chunk;
  }
  if (all != nullptr && n > 0) {
    std::copy(all->end() - vocab, all->end(), logits.begin());
  }
  has_logits = n > 0;
}

Session::Session(std::shared_ptr<const Model> model, int context_length)
    : Session(std::move(model), SessionOptions{context_length, "f16", 0}) {}
Session::Session(std::shared_ptr<const Model> model, const SessionOptions& options)
    : impl_(std::make_unique<SessionImpl>(std::move(model), options)) {}
Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

void Session::reset() {
  impl_->tokens.clear();
  impl_->n_evaluated = 0;
  impl_->has_logits = false;
}

void Session::rewind(int n_tokens) {
  SessionImpl& s = *impl_;
  if (n_tokens < 0 || n_tokens > static_cast<int>(s.tokens.size())) {
    fail("rewind: ", n_tokens, " is outside the context of ", s.tokens.size(), " tokens");
  }
  if (n_tokens == static_cast<int>(s.tokens.size())) return;
  s.tokens.resize(n_tokens);
  s.n_evaluated = std::min(s.n_evaluated, n_tokens);
  s.has_logits = false;  // logits of the new last token are not kept
  if (s.n_evaluated == n_tokens && n_tokens > 0) {
    // The last token runs again (overwriting its cache entry) to get its logits.
    --s.n_evaluated;
  }
}

const std::vector<int32_t>& Session::tokens() const {
  return impl_->tokens;
}

int Session::n_past() const {
  return static_cast<int>(impl_->tokens.size());
}
int Session::context_length() const {
  return impl_->capacity;
}

const float* Session::evaluate(const std::vector<int32_t>& tokens) {
  SessionImpl& s = *impl_;
  // Tokens sampled but not yet run (generation stopped right after them) go first.
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
  const int pending = static_cast<int>(s.tokens.size()) - s.n_evaluated;
  if (pending == 0) {
    if (!s.has_logits) fail("evaluate: no tokens");
    return s.logits.data();
  }
  try {
    s.run(s.tokens.data() + s.n_evaluated, pending, nullptr);
  } catch (...) {
    s.tokens.resize(s.n_evaluated);  // keep the context consistent with the cache
    throw;
  }
  return s.logits.data();
}

std::vector<float> Session::evaluate_all(const std::vector<int32_t>& tokens) {
  SessionImpl& s = *impl_;
  if (s.n_evaluated != static_cast<int>(s.tokens.size())) {
    evaluate({});  // flush pending tokens first
  }
  std::vector<float> all(tokens.size() * static_cast<size_t>(s.loaded.config.vocab_size));
  s.run(tokens.data(), static_cast<int>(tokens.size()), &all);  // throws before changing state
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
  return all;
}

namespace {

// Length of the longest suffix of `text` that is a proper prefix of a stop string:
// those bytes are held back until it is clear they do not start a stop string.
size_t stop_prefix_overlap(const std::string& text, const std::vector<std::string>& stops) {
  size_t best = 0;
  for (const std::string& stop : stops) {
    for (size_t len = std::min(stop.size() - 1, text.size()); len > best; --len) {
      if (text.compare(text.size() - len, len, stop, 0, len) == 0) {
        best = len;
        break;
      }
    }
  }
  return best;
}

}  // namespace

GenerateResult Session::generate(const std::vector<int32_t>& prompt_in,
                                 const GenerateOptions& options, const TokenCallback& on_token) {
  SessionImpl& s = *impl_;
  const Model& model = *s.model;
  using Clock = std::chrono::steady_clock;
  GenerateResult result;
  for (const std::string& stop : options.stop) {
    if (stop.empty()) fail("stop strings must not be empty");
  }

  std::vector<int32_t> prompt = prompt_in;
  const int room = s.capacity - static_cast<int>(s.tokens.size());
  if (static_cast<int>(prompt.size()) >= room) {
    if (!options.truncate_prompt || room <= 1) {
      fail("prompt of ", prompt.size(), " tokens does not fit the context (", room, " of ",
           s.capacity, " positions free, and at least one is needed to generate)");
    }
    const int keep = room - 1;
    result.prompt_truncated_tokens = static_cast<int>(prompt.size()) - keep;
    prompt.erase(prompt.begin(), prompt.end() - keep);
  }
  if (prompt.empty() && !s.has_logits && s.n_evaluated == static_cast<int>(s.tokens.size())) {
    fail("generate: empty prompt");
  }
  result.prompt_tokens = static_cast<int>(prompt.size());

  const auto t0 = Clock::now();
  const float* logits = evaluate(prompt);
  const auto t1 = Clock::now();
  result.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();

  Sampler sampler(options.sampling, model.vocab_size());
  StreamingDecoder decoder(*model.impl().tokenizer);
  std::string& text = result.text;  // everything decoded so far
  size_t emitted = 0;               // bytes of `text` already given to the callback
  const int max_tokens = options.max_tokens < 0 ? s.capacity : options.max_tokens;
  std::vector<float>& scratch = s.sample_logits;
  scratch.resize(model.vocab_size());
  result.finish_reason = FinishReason::kLength;

  auto emit = [&](int32_t token, size_t upto) -> bool {
    TokenEvent event;
    event.token = token;
    event.text = text.substr(emitted, upto - emitted);
    emitted = upto;
    return on_token ? on_token(event) : true;
  };

  while (result.completion_tokens < max_tokens) {
    std::copy(logits, logits + model.vocab_size(), scratch.begin());
    const int32_t token = sampler.sample(scratch.data(), s.tokens);
    if (!options.ignore_eos && model.is_end_of_generation(token)) {
      result.finish_reason = FinishReason::kEndOfText;
      break;
    }
    s.tokens.push_back(token);
    result.tokens.push_back(token);
    ++result.completion_tokens;
    text += decoder.push(token);

    bool stopped = false;
    size_t safe = text.size();
    if (!options.stop.empty()) {
      const size_t search_from = emitted;
      for (const std::string& stop : options.stop) {
        const size_t at = text.find(stop, search_from);
        if (at != std::string::npos && at < safe) {
          safe = at;
          stopped = true;
        }
      }
      if (!stopped) safe = text.size() - stop_prefix_overlap(text, options.stop);
    }
    if (stopped) {
      text.resize(safe);
      emit(token, safe);
      result.finish_reason = FinishReason::kStop;
      break;
    }
    if (!emit(token, safe)) {
      result.finish_reason = FinishReason::kCancelled;
      break;
    }
    if (result.completion_tokens >= max_tokens) break;
    if (static_cast<int>(s.tokens.size()) >= s.capacity) break;  // context full: length
    logits = evaluate({});
  }
  if (result.finish_reason == FinishReason::kLength ||
      result.finish_reason == FinishReason::kEndOfText) {
    text += decoder.flush();
    if (emitted < text.size()) emit(-1, text.size());
  }
  result.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return result;
}

std::vector<float> Session::embed(const std::vector<int32_t>& tokens) {
  SessionImpl& s = *impl_;
  if (tokens.empty()) fail("embed: no tokens");
  if (static_cast<int>(tokens.size()) > s.capacity) {
    fail("embed: ", tokens.size(), " tokens do not fit the context of ", s.capacity);
  }
  reset();
  const int dim = s.loaded.config.dim;
  std::vector<double> sum(dim, 0.0);
  for (size_t done = 0; done < tokens.size();) {
    const int chunk = static_cast<int>(std::min<size_t>(tokens.size() - done, s.buffers.max_batch));
    forward_hidden(s.loaded, tokens.data() + done, chunk, static_cast<int>(done), s.cache,
                   s.buffers, s.pool);
    for (int i = 0; i < chunk; ++i) {
      const float* h = s.buffers.x_norm.data() + static_cast<size_t>(i) * dim;
      for (int d = 0; d < dim; ++d) sum[d] += h[d];
    }
    done += chunk;
  }
  reset();
  std::vector<float> out(dim);
  double norm = 0;
  for (int d = 0; d < dim; ++d) norm += sum[d] * sum[d];
  norm = std::sqrt(norm);
  for (int d = 0; d < dim; ++d) out[d] = static_cast<float>(norm > 0 ? sum[d] / norm : 0.0);
  return out;
}

}  // namespace edgelm
