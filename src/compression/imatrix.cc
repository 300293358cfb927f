#include "compression/imatrix.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "formats/atomic_file.h"
#include "formats/gguf.h"
#include "kernels/thread_pool.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace edgelm::compression {
namespace {

constexpr int32_t kMaxEntries = 1 << 20;
constexpr int32_t kMaxNameLength = 1 << 16;
constexpr int32_t kMaxValues = 1 << 24;

// Bounds-checked little-endian reader over a mapped legacy file.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}
  bool at_end() const { return pos_ == size_; }
  int32_t i32(const char* what) {
    int32_t v;
    bytes(&v, sizeof v, what);
    return v;
  }
  void bytes(void* out, size_t n, const char* what) {
    if (n > size_ - pos_) {
      fail(path_, ": truncated imatrix file (reading ", what, " at byte ", pos_, ")");
    }
    std::memcpy(out, data_ + pos_, n);
    pos_ += n;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;
};

void check_values(const std::string& path, const std::string& name,
                  const std::vector<float>& values) {
  for (float v : values) {
    if (!std::isfinite(v) || v < 0) {
      fail(path, ": imatrix entry '", name, "' has a negative or non-finite value (", v, ")");
    }
  }
}

Imatrix read_legacy(const MappedFile& file, const std::string& path) {
  Reader in(file.data(), file.size(), path);
  Imatrix m;
  const int32_t n = in.i32("entry count");
  if (n <= 0 || n > kMaxEntries) fail(path, ": not an imatrix file (entry count ", n, ")");
  for (int32_t e = 0; e < n; ++e) {
    const int32_t len = in.i32("name length");
    if (len <= 0 || len > kMaxNameLength) {
      fail(path, ": not an imatrix file (entry ", e, " has a name of ", len, " bytes)");
    }
    std::string name(static_cast<size_t>(len), '\0');
    in.bytes(name.data(), name.size(), "entry name");
    ImatrixEntry entry;
    entry.ncall = in.i32("call count");
    const int32_t nval = in.i32("value count");
    if (entry.ncall < 0 || nval <= 0 || nval > kMaxValues) {
      fail(path, ": imatrix entry '", name, "' has ", nval, " values and ", entry.ncall, " calls");
    }
    entry.importance.resize(static_cast<size_t>(nval));
    in.bytes(entry.importance.data(), entry.importance.size() * sizeof(float), "entry values");
    check_values(path, name, entry.importance);
    // Stored as mean * ncall; llama-quantize divides by ncall again.
    if (entry.ncall > 0) {
      for (float& v : entry.importance) v /= static_cast<float>(entry.ncall);
    }
    if (!m.entries.emplace(name, std::move(entry)).second) {
      fail(path, ": imatrix entry '", name, "' appears twice");
    }
  }
  if (!in.at_end()) {  // optional trailer: chunk count and dataset name
    m.chunks = in.i32("chunk count");
    const int32_t len = in.i32("dataset name length");
    if (len < 0 || len > kMaxNameLength) fail(path, ": bad dataset name length ", len);
    m.dataset.resize(static_cast<size_t>(len));
    in.bytes(m.dataset.data(), m.dataset.size(), "dataset name");
  }
  return m;
}

Imatrix read_gguf(const std::string& path) {
  auto gguf = GgufFile::open(path);
  Imatrix m;
  if (auto type = gguf->get_string_opt("general.type"); type && *type != "imatrix") {
    fail(path, ": a GGUF file of type '", *type, "', not an imatrix");
  }
  m.chunks = static_cast<int32_t>(gguf->get_int_opt("imatrix.chunk_count").value_or(0));
  if (gguf->has("imatrix.datasets")) {
    for (const std::string& d : gguf->get_string_array("imatrix.datasets")) {
      m.dataset += (m.dataset.empty() ? "" : ", ") + d;
    }
  }
  const std::string kSums = ".in_sum2";
  for (const TensorView& t : gguf->tensors()) {
    if (!t.name.ends_with(kSums)) continue;
    const std::string name = t.name.substr(0, t.name.size() - kSums.size());
    const TensorView* counts = gguf->find_tensor(name + ".counts");
    if (counts == nullptr) fail(path, ": imatrix tensor '", t.name, "' has no '.counts'");
    if (t.dtype != DType::F32 || counts->dtype != DType::F32) {
      fail(path, ": imatrix tensors of '", name, "' must be F32");
    }
    // Mixture-of-experts files hold one row per expert; edgelm models have one.
    if (t.rows() != 1 || counts->numel() != 1) {
      fail(path, ": imatrix entry '", name, "' has ", t.rows(),
           " rows (expert models are not supported)");
    }
    float count;
    std::memcpy(&count, counts->data, sizeof count);
    if (!std::isfinite(count) || count < 0) fail(path, ": bad count for '", name, "'");
    ImatrixEntry entry;
    entry.importance.resize(static_cast<size_t>(t.cols()));
    std::memcpy(entry.importance.data(), t.data, entry.importance.size() * sizeof(float));
    check_values(path, name, entry.importance);
    if (count > 0) {
      for (float& v : entry.importance) v /= count;
    }
    entry.ncall = m.chunks;
    m.entries.emplace(name, std::move(entry));
  }
  if (m.entries.empty()) fail(path, ": GGUF file without imatrix entries (<name>.in_sum2)");
  return m;
}

// Names and column counts of every weight matrix, as the loader bound them.
std::map<std::string, int64_t> matrix_columns(const LoadedModel& model) {
  std::map<std::string, int64_t> cols;
  const ModelWeights& w = model.weights;
  cols["token_embd.weight"] = w.token_embedding.cols;
  if (!model.config.tied_embeddings) cols["output.weight"] = w.output.cols;
  const MatrixKind kinds[] = {MatrixKind::kAttnQ,      MatrixKind::kAttnK,   MatrixKind::kAttnV,
                              MatrixKind::kAttnOutput, MatrixKind::kFfnGate, MatrixKind::kFfnUp,
                              MatrixKind::kFfnDown};
  for (int l = 0; l < model.config.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    const WeightMatrix* ms[] = {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down};
    for (int k = 0; k < 7; ++k) cols[matrix_tensor_name(l, kinds[k])] = ms[k]->cols;
  }
  return cols;
}

// Sums of x^2 per column, in double so long calibration runs do not lose precision.
struct Accumulator {
  std::vector<double> sum;
  int64_t count = 0;
  int32_t ncall = 0;
};

struct Collector {
  std::map<std::string, Accumulator> stats;
  std::vector<std::string> names;  // [layer * 8 + kind]
  int n_layers = 0;
  bool tied = false;

  void add(const std::string& name, const float* x, int n, int cols) {
    Accumulator& a = stats[name];
    if (a.sum.empty()) a.sum.assign(static_cast<size_t>(cols), 0.0);
    for (int t = 0; t < n; ++t) {
      const float* row = x + static_cast<size_t>(t) * cols;
      for (int c = 0; c < cols; ++c) a.sum[c] += static_cast<double>(row[c]) * row[c];
    }
    a.count += n;
  }

  static void hook(void* context, int layer, MatrixKind kind, const float* x, int n, int cols) {
    auto* self = static_cast<Collector*>(context);
    self->add(self->names[static_cast<size_t>(layer) * 8 + static_cast<int>(kind)], x, n, cols);
  }
};

}  // namespace

Imatrix read_imatrix(const std::string& path) {
  if (!std::filesystem::exists(path)) fail("imatrix file not found: '", path, "'");
  auto file = MappedFile::open(path);
  if (file->size() >= 4 && std::memcmp(file->data(), "GGUF", 4) == 0) return read_gguf(path);
  return read_legacy(*file, path);
}

void write_imatrix_dat(const Imatrix& m, const std::string& path) {
  AtomicFile out(path);
  auto put_i32 = [&](int64_t v) {
    const auto x = static_cast<int32_t>(v);
    out.write(&x, sizeof x);
  };
  put_i32(static_cast<int64_t>(m.entries.size()));
  std::vector<float> values;
  for (const auto& [name, e] : m.entries) {
    put_i32(static_cast<int64_t>(name.size()));
    out.write(name.data(), name.size());
    const int32_t ncall = std::max<int32_t>(e.ncall, 1);
    put_i32(ncall);
    put_i32(static_cast<int64_t>(e.importance.size()));
    values.resize(e.importance.size());
    for (size_t i = 0; i < values.size(); ++i) values[i] = e.importance[i] * ncall;
    out.write(values.data(), values.size() * sizeof(float));
  }
  put_i32(m.chunks);
  put_i32(static_cast<int64_t>(m.dataset.size()));
  out.write(m.dataset.data(), m.dataset.size());
  out.commit();
}

void check_imatrix_matches(const Imatrix& m, const LoadedModel& model, const std::string& source) {
  const std::map<std::string, int64_t> cols = matrix_columns(model);
  int covered = 0;
  for (const auto& [name, e] : m.entries) {
    auto it = cols.find(name);
    if (it == cols.end()) {
      fail(source, ": imatrix entry '", name, "' is not a weight matrix of '", model.path,
           "' (is this imatrix from another model?)");
    }
    if (static_cast<int64_t>(e.importance.size()) != it->second) {
      fail(source, ": imatrix entry '", name, "' has ", e.importance.size(),
           " values but the tensor has rows of ", it->second,
           " (is this imatrix from another model?)");
    }
    ++covered;
  }
  if (covered == 0) fail(source, ": the imatrix covers no tensor of '", model.path, "'");
}

int run_calibration(const LoadedModel& model, const std::string& text,
                    const ImatrixOptions& options, ThreadPool& pool, ActivationHook hook,
                    void* hook_context,
                    const std::function<void(const float* x, int n)>& head_input,
                    const ImatrixProgress& progress) {
  const ModelConfig& c = model.config;
  if (options.context < 2 || options.context > c.context_length) {
    fail("calibration: a context of ", options.context,
         " tokens (--ctx, --gptq-ctx) must be in 2..", c.context_length, " (the model's context)");
  }
  const Tokenizer tokenizer(model.vocab);
  const std::vector<int32_t> tokens = tokenizer.encode(text, /*add_special=*/true);
  const int ctx = options.context;
  int n_chunks = static_cast<int>(tokens.size() / static_cast<size_t>(ctx));
  if (options.max_chunks > 0) n_chunks = std::min(n_chunks, options.max_chunks);
  if (n_chunks == 0) {
    fail("calibration: the text has ", tokens.size(), " tokens, fewer than one chunk of ", ctx,
         " (lower --ctx or give more text)");
  }
  const int32_t bos = model.vocab.add_bos ? model.vocab.bos : -1;

  const int batch = std::min(ctx, 128);
  KvCache cache;
  cache.allocate(c, ctx, DType::F32);
  ForwardBuffers buffers;
  buffers.allocate(c, batch, ctx, pool.size());
  buffers.hook = hook;
  buffers.hook_context = hook_context;

  std::vector<int32_t> chunk(static_cast<size_t>(ctx));
  if (progress) progress(0, n_chunks);  // a bar made now measures the first chunk's rate too
  for (int i = 0; i < n_chunks; ++i) {
    std::copy(tokens.begin() + static_cast<ptrdiff_t>(i) * ctx,
              tokens.begin() + static_cast<ptrdiff_t>(i + 1) * ctx, chunk.begin());
    if (bos >= 0) chunk[0] = bos;
    for (int pos = 0; pos < ctx; pos += batch) {
      const int n = std::min(batch, ctx - pos);
      forward_hidden(model, chunk.data() + pos, n, pos, cache, buffers, pool);
      // The output head's input; its product itself is not needed.
      if (head_input) head_input(buffers.x_norm.data(), n);
    }
    if (progress) progress(i + 1, n_chunks);
  }
  return n_chunks;
}

Imatrix collect_imatrix(const LoadedModel& model, const std::string& text,
                        const ImatrixOptions& options, const ImatrixProgress& progress) {
  const ModelConfig& c = model.config;
  Collector collector;
  collector.n_layers = c.n_layers;
  collector.names.resize(static_cast<size_t>(c.n_layers + 1) * 8);
  for (int l = 0; l < c.n_layers; ++l) {
    for (int k = 0; k < 7; ++k) {
      collector.names[static_cast<size_t>(l) * 8 + k] =
          matrix_tensor_name(l, static_cast<MatrixKind>(k));
    }
  }
  const std::string output_name = c.tied_embeddings ? "token_embd.weight" : "output.weight";
  ThreadPool pool(options.threads);
  const int n_chunks = run_calibration(
      model, text, options, pool, &Collector::hook, &collector,
      [&](const float* x, int n) { collector.add(output_name, x, n, c.dim); }, progress);

  Imatrix m;
  m.chunks = n_chunks;
  for (auto& [name, a] : collector.stats) {
    ImatrixEntry e;
    e.ncall = n_chunks;
    e.importance.resize(a.sum.size());
    for (size_t j = 0; j < a.sum.size(); ++j) {
      e.importance[j] = a.count > 0 ? static_cast<float>(a.sum[j] / a.count) : 0.0f;
    }
    m.entries.emplace(name, std::move(e));
  }
  return m;
}

}  // namespace edgelm::compression
