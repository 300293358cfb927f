#include "formats/llama2c.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "util/error.h"

namespace edgelm {
namespace {

constexpr size_t kHeaderBytes = 7 * sizeof(int32_t);
// Plausibility limits: far above any llama2.c-style model, far below sizes that
// would overflow the arithmetic below.
constexpr int kMaxDim = 1 << 16;
constexpr int kMaxHiddenDim = 1 << 18;
constexpr int kMaxLayers = 1 << 10;
constexpr int kMaxHeads = 1 << 10;
constexpr int kMaxVocab = 1 << 22;
constexpr int kMaxSeqLen = 1 << 22;

struct Header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

Header decode_header(const uint8_t* p) {
  Header h;
  static_assert(sizeof(Header) == kHeaderBytes);
  std::memcpy(&h, p, kHeaderBytes);
  return h;
}

// Returns an empty string when the header is plausible, else the problem.
std::string check_header(const Header& h) {
  auto in_range = [](int32_t v, int32_t max) { return v > 0 && v <= max; };
  if (!in_range(h.dim, kMaxDim)) return str_cat("dim ", h.dim, " is out of range");
  if (!in_range(h.hidden_dim, kMaxHiddenDim))
    return str_cat("hidden_dim ", h.hidden_dim, " is out of range");
  if (!in_range(h.n_layers, kMaxLayers))
    return str_cat("n_layers ", h.n_layers, " is out of range");
  if (!in_range(h.n_heads, kMaxHeads)) return str_cat("n_heads ", h.n_heads, " is out of range");
  if (!in_range(h.n_kv_heads, kMaxHeads))
    return str_cat("n_kv_heads ", h.n_kv_heads, " is out of range");
  if (h.vocab_size == 0 || h.vocab_size < -kMaxVocab || h.vocab_size > kMaxVocab) {
    return str_cat("vocab_size ", h.vocab_size, " is out of range");
  }
  if (!in_range(h.seq_len, kMaxSeqLen)) return str_cat("seq_len ", h.seq_len, " is out of range");
  if (h.dim % h.n_heads != 0) return str_cat("n_heads ", h.n_heads, " does not divide dim ", h.dim);
  if (h.n_heads % h.n_kv_heads != 0) {
    return str_cat("n_kv_heads ", h.n_kv_heads, " does not divide n_heads ", h.n_heads);
  }
  if ((h.dim / h.n_heads) % 2 != 0) return str_cat("head size ", h.dim / h.n_heads, " is odd");
  return "";
}

struct Layout {
  uint64_t tied_floats;  // all weights when the classifier is shared
  uint64_t wcls_floats;  // the extra classifier when it is not
};

Layout layout_of(const Header& h) {
  const uint64_t dim = h.dim, hidden = h.hidden_dim, layers = h.n_layers;
  const uint64_t vocab = static_cast<uint64_t>(std::abs(h.vocab_size));
  const uint64_t head_size = dim / h.n_heads;
  const uint64_t kv_dim = head_size * h.n_kv_heads;
  uint64_t n = vocab * dim;                           // token_embedding_table
  n += layers * dim;                                  // rms_att_weight
  n += layers * dim * dim * 2;                        // wq, wo
  n += layers * kv_dim * dim * 2;                     // wk, wv
  n += layers * dim;                                  // rms_ffn_weight
  n += layers * hidden * dim * 3;                     // w1, w2, w3
  n += dim;                                           // rms_final_weight
  n += static_cast<uint64_t>(h.seq_len) * head_size;  // freq_cis_real + freq_cis_imag (unused)
  return {n, vocab * dim};
}

uint64_t expected_bytes(const Header& h, bool shared) {
  const Layout l = layout_of(h);
  return kHeaderBytes + 4 * (l.tied_floats + (shared ? 0 : l.wcls_floats));
}

}  // namespace

Llama2cFile open_llama2c(const std::string& path) {
  Llama2cFile file;
  file.mapping = MappedFile::open(path);
  const uint8_t* base = file.mapping->data();
  const size_t size = file.mapping->size();
  if (size < kHeaderBytes) {
    fail(path, ": file truncated: ", size, " bytes is too small for a llama2.c checkpoint");
  }
  const Header h = decode_header(base);
  const std::string problem = check_header(h);
  if (!problem.empty()) fail(path, ": not a plausible llama2.c checkpoint: ", problem);

  Llama2cConfig& c = file.config;
  c.dim = h.dim;
  c.hidden_dim = h.hidden_dim;
  c.n_layers = h.n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.vocab_size = std::abs(h.vocab_size);
  c.seq_len = h.seq_len;
  c.shared_classifier = h.vocab_size > 0;
  const uint64_t expected = expected_bytes(h, c.shared_classifier);
  if (size != expected) {
    fail(path, ": llama2.c file size mismatch: header (dim ", c.dim, ", hidden_dim ", c.hidden_dim,
         ", ", c.n_layers, " layers, vocab ", c.vocab_size,
         c.shared_classifier ? ", shared classifier" : ", separate classifier", ") expects ",
         expected, " bytes but the file has ", size);
  }

  const int64_t dim = c.dim, hidden = c.hidden_dim, vocab = c.vocab_size;
  const int64_t kv_dim = dim / c.n_heads * c.n_kv_heads;
  const int64_t layers = c.n_layers;
  const float* cursor = reinterpret_cast<const float*>(base + kHeaderBytes);
  auto add = [&](std::string name, std::vector<int64_t> shape, const float* data) {
    TensorView t;
    t.name = std::move(name);
    t.dtype = DType::F32;
    t.shape = std::move(shape);
    t.data = data;
    t.nbytes = static_cast<size_t>(t.numel()) * sizeof(float);
    file.tensors.push_back(std::move(t));
  };
  // One [L][rows][cols] block per weight kind, split into per-layer views.
  auto add_layers = [&](const char* suffix, std::vector<int64_t> shape) {
    int64_t per_layer = 1;
    for (int64_t d : shape) per_layer *= d;
    for (int64_t l = 0; l < layers; ++l) {
      add(str_cat("blk.", l, ".", suffix), shape, cursor + l * per_layer);
    }
    cursor += layers * per_layer;
  };
  add("token_embd.weight", {vocab, dim}, cursor);
  cursor += vocab * dim;
  add_layers("attn_norm.weight", {dim});
  add_layers("attn_q.weight", {dim, dim});
  add_layers("attn_k.weight", {kv_dim, dim});
  add_layers("attn_v.weight", {kv_dim, dim});
  add_layers("attn_output.weight", {dim, dim});
  add_layers("ffn_norm.weight", {dim});
  add_layers("ffn_gate.weight", {hidden, dim});
  add_layers("ffn_down.weight", {dim, hidden});
  add_layers("ffn_up.weight", {hidden, dim});
  add("output_norm.weight", {dim}, cursor);
  cursor += dim;
  cursor += static_cast<int64_t>(c.seq_len) * (dim / c.n_heads);  // freq_cis_real/imag
  if (!c.shared_classifier) add("output.weight", {vocab, dim}, cursor);
  return file;
}

bool looks_like_llama2c(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  uint8_t bytes[kHeaderBytes];
  const bool read_ok = std::fread(bytes, 1, kHeaderBytes, f) == kHeaderBytes;
  std::fclose(f);
  if (!read_ok) return false;
  const Header h = decode_header(bytes);
  if (!check_header(h).empty()) return false;
  return static_cast<uint64_t>(st.st_size) == expected_bytes(h, h.vocab_size > 0);
}

}  // namespace edgelm
