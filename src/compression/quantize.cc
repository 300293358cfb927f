#include "compression/quantize.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "compression/imatrix.h"
#include "compression/quant_plan.h"
#include "kernels/quant_formats.h"
#include "kernels/thread_pool.h"
#include "model/transformer.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace edgelm::compression {
namespace {

namespace fs = std::filesystem;

// One tensor of the output file, before conversion.
struct Item {
  std::string name;
  const WeightMatrix* matrix = nullptr;  // 2-D weights
  const float* vector = nullptr;         // 1-D tensors (already F32 in the loaded model)
  int64_t length = 0;
  int permute_heads = 0;  // > 0: reorder rows for the interleaved RoPE layout
  int layer = -1;         // of a layer's matrix
};

void check_output_path(const std::string& path) {
  if (path.empty()) fail("no output path given");
  if (fs::is_directory(path)) fail("output '", path, "' is a directory");
  fs::path parent = fs::path(path).parent_path();
  if (parent.empty()) parent = ".";
  if (!fs::is_directory(parent)) {
    fail("cannot write '", path, "': directory '", parent.string(), "' does not exist");
  }
  if (::access(parent.c_str(), W_OK) != 0) {
    fail("cannot write '", path, "': directory '", parent.string(), "' is not writable");
  }
}

void dequantize_any(DType type, const void* src, float* dst, int64_t n) {
  if (type == DType::FP8_E4M3) {
    dequantize_row_fp8_e4m3(src, dst, n);
  } else {
    dequantize_row_quant(type, src, dst, n);
  }
}

void quantize_any(DType type, const float* x, void* dst, int64_t n, const float* importance) {
  if (type == DType::FP8_E4M3) {
    quantize_row_fp8_e4m3(x, dst, n);
  } else {
    quantize_row(type, x, dst, n, importance);
  }
}

// GPTQ's output error over plain rounding's (quantize_any with `importance`), on the rows of
// `quantized` every `step` apart, whose original values `originals` holds in order.
double sampled_error_ratio(DType type, const std::vector<float>& originals, int64_t step,
                           const std::vector<uint8_t>& quantized, int64_t cols,
                           const float* importance, const float* hessian) {
  const size_t row_bytes = dtype_row_bytes(type, cols);
  const int64_t rows = static_cast<int64_t>(originals.size()) / cols;
  std::vector<uint8_t> plain(row_bytes * static_cast<size_t>(rows));
  std::vector<uint8_t> gptq(plain.size());
  for (int64_t k = 0; k < rows; ++k) {
    quantize_any(type, originals.data() + k * cols, plain.data() + k * row_bytes, cols, importance);
    std::memcpy(gptq.data() + k * row_bytes, quantized.data() + k * step * row_bytes, row_bytes);
  }
  const double plain_error =
      output_error(type, originals.data(), plain.data(), rows, cols, hessian);
  if (!(plain_error > 0)) return 1.0;
  return output_error(type, originals.data(), gptq.data(), rows, cols, hessian) / plain_error;
}

std::vector<float> gguf_rope_freqs(const LoadedModel& model) {
  auto gguf = GgufFile::open(model.path);
  const TensorView* t = gguf->find_tensor("rope_freqs.weight");
  if (t == nullptr) return {};
  std::vector<float> values(static_cast<size_t>(t->numel()));
  dequantize_any(t->dtype, t->data, values.data(), t->numel());
  return values;
}

}  // namespace

double QuantizeSummary::bits_per_weight_in() const {
  return matrix_params > 0 ? 8.0 * static_cast<double>(matrix_bytes_in) / matrix_params : 0;
}

double QuantizeSummary::bits_per_weight_out() const {
  return matrix_params > 0 ? 8.0 * static_cast<double>(matrix_bytes_out) / matrix_params : 0;
}

int64_t source_row_for_interleaved(int64_t row, int64_t rows, int n_heads) {
  const int64_t head_dim = rows / n_heads;
  const int64_t head = row / head_dim, k = row % head_dim;
  return head * head_dim + (k % 2) * (head_dim / 2) + k / 2;
}

std::vector<float> llama3_rope_factors(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  const double low_wavelen = c.rope_original_context / c.rope_low_freq_factor;
  const double high_wavelen = c.rope_original_context / c.rope_high_freq_factor;
  std::vector<float> factors(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    const float freq = 1.0f / std::pow(c.rope_theta, static_cast<float>(2 * i) / c.head_dim);
    const double wavelen = 2 * M_PI / freq;
    double f;
    if (wavelen < high_wavelen) {
      f = 1;
    } else if (wavelen > low_wavelen) {
      f = c.rope_factor;
    } else {
      const double smooth = (c.rope_original_context / wavelen - c.rope_low_freq_factor) /
                            (c.rope_high_freq_factor - c.rope_low_freq_factor);
      f = 1 / ((1 - smooth) / c.rope_factor + smooth);
    }
    factors[i] = static_cast<float>(f);
  }
  return factors;
}

void add_model_metadata(const LoadedModel& model, uint32_t file_type, GgufWriter& w) {
  const ModelConfig& c = model.config;
  const std::string arch = c.architecture == "qwen2" ? "qwen2" : "llama";
  w.set_string("general.architecture", arch);
  w.set_string("general.type", "model");
  if (!c.name.empty()) w.set_string("general.name", c.name);
  w.set_u32("general.file_type", file_type);
  w.set_u32("general.quantization_version", 2);
  auto key = [&](const char* suffix) { return arch + "." + suffix; };
  w.set_u32(key("vocab_size"), static_cast<uint32_t>(c.vocab_size));
  w.set_u32(key("context_length"), static_cast<uint32_t>(c.context_length));
  w.set_u32(key("embedding_length"), static_cast<uint32_t>(c.dim));
  w.set_u32(key("feed_forward_length"), static_cast<uint32_t>(c.hidden_dim));
  w.set_u32(key("block_count"), static_cast<uint32_t>(c.n_layers));
  w.set_u32(key("attention.head_count"), static_cast<uint32_t>(c.n_heads));
  w.set_u32(key("attention.head_count_kv"), static_cast<uint32_t>(c.n_kv_heads));
  w.set_u32(key("attention.key_length"), static_cast<uint32_t>(c.head_dim));
  w.set_u32(key("attention.value_length"), static_cast<uint32_t>(c.head_dim));
  w.set_f32(key("attention.layer_norm_rms_epsilon"), c.rms_eps);
  w.set_f32(key("rope.freq_base"), c.rope_theta);
  w.set_u32(key("rope.dimension_count"), static_cast<uint32_t>(c.head_dim));
  if (c.rope_scaling == "linear") {
    w.set_string(key("rope.scaling.type"), "linear");
    w.set_f32(key("rope.scaling.factor"), c.rope_factor);
  }

  // Tokenizer, as convert_hf_to_gguf writes it. Ids the tokenizer lacks (embedding rows past
  // the vocabulary) become "[PAD<id>]" tokens of type UNUSED, since llama.cpp wants one token
  // per embedding row.
  const Vocab& v = model.vocab;
  std::string tokenizer_model;
  switch (v.kind) {
    case TokenizerKind::kSentencePiece:
      tokenizer_model = "llama";
      break;
    case TokenizerKind::kBytePairBpe:
      tokenizer_model = "gpt2";
      break;
    case TokenizerKind::kWordPiece:
      tokenizer_model = "bert";
      break;
  }
  w.set_string("tokenizer.ggml.model", tokenizer_model);
  if (v.kind == TokenizerKind::kBytePairBpe) {
    if (v.pre == "custom") {
      fail(model.path,
           ": the tokenizer's pre-tokenizer regex matches none that llama.cpp knows by name, so "
           "it cannot be stored in GGUF (tokenizer.ggml.pre)");
    }
    w.set_string("tokenizer.ggml.pre", v.pre);
  }
  std::vector<std::string> tokens = v.tokens;
  std::vector<int32_t> types;
  for (TokenType t : v.types) types.push_back(static_cast<int32_t>(t));
  types.resize(tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  for (size_t i = tokens.size(); i < static_cast<size_t>(c.vocab_size); ++i) {
    tokens.push_back("[PAD" + std::to_string(i) + "]");
    types.push_back(static_cast<int32_t>(TokenType::kUnused));
  }
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  if (!v.scores.empty()) {
    std::vector<float> scores = v.scores;
    scores.resize(tokens.size(), -1000.0f);
    w.set_f32_array("tokenizer.ggml.scores", scores);
  }
  w.set_i32_array("tokenizer.ggml.token_type", types);
  if (!v.merges.empty()) w.set_string_array("tokenizer.ggml.merges", v.merges);
  auto id = [&](const char* name, int32_t value) {
    if (value >= 0) w.set_u32(name, static_cast<uint32_t>(value));
  };
  id("tokenizer.ggml.bos_token_id", v.bos);
  id("tokenizer.ggml.eos_token_id", v.eos);
  id("tokenizer.ggml.unknown_token_id", v.unk);
  id("tokenizer.ggml.padding_token_id", v.pad);
  id("tokenizer.ggml.seperator_token_id", v.sep);  // sic: llama.cpp's key
  id("tokenizer.ggml.cls_token_id", v.cls);
  id("tokenizer.ggml.mask_token_id", v.mask);
  // Further end-of-generation tokens (e.g. <|eot_id|>, <|im_end|> next to <|endoftext|>).
  std::vector<int32_t> extra_eog;
  for (int32_t t : v.end_of_generation) {
    if (t != v.eos) extra_eog.push_back(t);
  }
  if (!extra_eog.empty()) id("tokenizer.ggml.eot_token_id", extra_eog[0]);
  if (extra_eog.size() > 1) id("tokenizer.ggml.eom_token_id", extra_eog[1]);
  w.set_bool("tokenizer.ggml.add_bos_token", v.add_bos);
  w.set_bool("tokenizer.ggml.add_eos_token", v.add_eos);
  if (v.kind == TokenizerKind::kSentencePiece) {
    w.set_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
  }
  if (!model.chat_template_source.empty()) {
    w.set_string("tokenizer.chat_template", model.chat_template_source);
  }
}

QuantizeSummary quantize_model(const QuantizeOptions& options, const QuantizeProgress& progress,
                               const ImatrixProgress& calibration) {
  const auto start = std::chrono::steady_clock::now();
  const QuantScheme scheme = parse_scheme(options.type);
  std::vector<TypeOverride> overrides = parse_overrides(options.overrides);
  check_output_path(options.output);
  if (options.threads < 0) fail("--threads must be >= 0");

  std::unique_ptr<LoadedModel> model = load_model(options.input);
  const ModelConfig& c = model->config;
  Imatrix imatrix;
  const bool has_imatrix = !options.imatrix.empty();
  if (has_imatrix) {
    imatrix = read_imatrix(options.imatrix);
    check_imatrix_matches(imatrix, *model, options.imatrix);
  }

  QuantizeSummary summary;
  summary.output = options.output;
  summary.input_bytes = model->file_bytes;
  summary.architecture = c.architecture == "qwen2" ? "qwen2" : "llama";
  // convert_hf_to_gguf permutes q/k of "llama" models from HF's rotate-half layout; llama2.c
  // and GGUF "llama" weights are interleaved already, qwen2 stays rotate-half.
  const bool permute = summary.architecture == "llama" && !c.rope_interleaved;
  summary.permuted_qk = permute;

  // Output tensors in llama.cpp's order.
  std::vector<float> rope_freqs;
  if (model->format == "gguf") {
    rope_freqs = gguf_rope_freqs(*model);
  } else if (c.rope_scaling == "llama3") {
    rope_freqs = llama3_rope_factors(c);
  }
  std::vector<Item> items;
  auto vec = [&](const std::string& name, const float* data, int64_t n, int heads = 0) {
    if (data != nullptr) items.push_back({name, nullptr, data, n, heads});
  };
  int layer = -1;  // of the matrices added now
  auto mat = [&](const std::string& name, const WeightMatrix& m, int heads = 0) {
    items.push_back({name, &m, nullptr, 0, heads, layer});
  };
  const ModelWeights& W = model->weights;
  if (!rope_freqs.empty()) {
    vec("rope_freqs.weight", rope_freqs.data(), static_cast<int64_t>(rope_freqs.size()));
  }
  mat("token_embd.weight", W.token_embedding);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = W.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    layer = l;
    const int qh = permute ? c.n_heads : 0, kh = permute ? c.n_kv_heads : 0;
    vec(p + "attn_norm.weight", L.attn_norm, c.dim);
    mat(p + "attn_q.weight", L.wq, qh);
    vec(p + "attn_q.bias", L.bq, c.q_dim(), qh);
    mat(p + "attn_k.weight", L.wk, kh);
    vec(p + "attn_k.bias", L.bk, c.kv_dim(), kh);
    mat(p + "attn_v.weight", L.wv);
    vec(p + "attn_v.bias", L.bv, c.kv_dim());
    mat(p + "attn_output.weight", L.wo);
    vec(p + "ffn_norm.weight", L.ffn_norm, c.dim);
    mat(p + "ffn_gate.weight", L.w_gate);
    mat(p + "ffn_up.weight", L.w_up);
    mat(p + "ffn_down.weight", L.w_down);
  }
  layer = -1;
  vec("output_norm.weight", W.output_norm, c.dim);
  if (!c.tied_embeddings) mat("output.weight", W.output);

  int64_t total = 0;
  for (const Item& it : items) total += it.matrix ? it.matrix->rows * it.matrix->cols : it.length;

  ModelShape shape;
  shape.n_layers = c.n_layers;
  shape.n_gqa = c.n_heads / c.n_kv_heads;
  shape.tied_embeddings = c.tied_embeddings;

  // Decide every type first, so that bad overrides fail before any work.
  std::vector<TypeChoice> choices(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const WeightMatrix* m = items[i].matrix;
    if (m == nullptr) continue;
    choices[i] = choose_tensor_type(scheme, items[i].name, m->cols, shape, has_imatrix,
                                    options.pure, overrides);
    if (m->type != choices[i].type && is_block_quantized(m->type) &&
        is_block_quantized(choices[i].type) && !options.allow_requantize) {
      fail(options.input, ": tensor '", items[i].name, "' is already quantized (",
           dtype_name(m->type), "); converting it to ", dtype_name(choices[i].type),
           " loses quality twice (pass --allow-requantize to do it anyway)");
    }
  }
  for (const TypeOverride& o : overrides) {
    if (o.matches == 0) {
      fail("--override '", o.pattern, "=", dtype_name(o.type), "' matches no weight matrix of '",
           options.input, "' (names look like blk.0.attn_v.weight)");
    }
  }

  // GPTQ: as many layers per calibration pass as the memory budget holds Hessians for.
  Hessians hessians;
  std::string gptq_text;
  ImatrixOptions gptq_calibration = options.gptq_calibration;
  int layers_per_pass = c.n_layers;
  auto calibrate = [&](int first_layer) {
    const int end_layer = std::min(c.n_layers, first_layer + layers_per_pass);
    hessians = Hessians();  // the previous pass's first: they are not needed any more
    hessians =
        collect_hessians(*model, gptq_text, gptq_calibration, first_layer, end_layer, calibration);
    summary.gptq_chunks = hessians.chunks;
    summary.gptq_tokens = hessians.tokens;
    ++summary.gptq_passes;
  };
  if (!options.gptq_text.empty()) {
    if (!file_exists(options.gptq_text)) {
      fail("cannot open the GPTQ calibration text '", options.gptq_text, "'");
    }
    gptq_text = read_file(options.gptq_text);
    gptq_calibration.threads = options.threads;
    if (gptq_calibration.context == 0) gptq_calibration.context = std::min(512, c.context_length);
    int64_t budget = options.gptq_memory_bytes;
    if (budget <= 0) {
      const int64_t available = available_memory_bytes();
      budget = available > 0 ? available / 10 * 6 : std::numeric_limits<int64_t>::max();
    }
    const int64_t head = hessian_bytes(c, 0, 0);
    const int64_t per_layer = hessian_bytes(c, 0, 1) - head;
    if (head + per_layer > budget) {
      fail("gptq: one layer's Hessians need ", (head + per_layer) >> 20, " MiB, more than the ",
           budget >> 20, " MiB budget (--gptq-memory, default 60% of the memory available)");
    }
    layers_per_pass = static_cast<int>(std::min<int64_t>(c.n_layers, (budget - head) / per_layer));
    summary.gptq_layers_per_pass = layers_per_pass;
    calibrate(0);
  }

  ThreadPool pool(options.threads);
  GptqFactor factor;
  const float* factored = nullptr;  // the Hessian `factor` was made from
  GgufWriter writer;
  add_model_metadata(*model, scheme.file_type, writer);
  std::vector<std::vector<uint8_t>> buffers;  // output data, alive until writer.write()
  buffers.reserve(items.size());
  int64_t done = 0;
  if (progress) progress(0, total, "");
  for (size_t index = 0; index < items.size(); ++index) {
    const Item& it = items[index];
    TensorReport report;
    report.name = it.name;
    buffers.emplace_back();
    std::vector<uint8_t>& out = buffers.back();
    if (it.matrix == nullptr) {
      // 1-D: F32, with the q/k bias permuted like its weight rows.
      report.shape = {it.length};
      out.resize(static_cast<size_t>(it.length) * sizeof(float));
      auto* dst = reinterpret_cast<float*>(out.data());
      for (int64_t i = 0; i < it.length; ++i) {
        dst[i] = it.vector[it.permute_heads > 0
                               ? source_row_for_interleaved(i, it.length, it.permute_heads)
                               : i];
      }
      writer.add_tensor(it.name, DType::F32, report.shape, out.data(), out.size());
    } else {
      const WeightMatrix& m = *it.matrix;
      report.shape = {m.rows, m.cols};
      report.from = m.type;
      const TypeChoice& choice = choices[index];
      const DType to = choice.type;
      report.to = to;
      if (!choice.fallback.empty()) {
        report.note =
            str_cat(dtype_name(choice.wanted), " -> ", dtype_name(to), ": ", choice.fallback);
        summary.fallbacks.push_back(it.name + ": " + report.note);
      } else if (choice.override_rule != nullptr) {
        report.note = "--override " + choice.override_rule->pattern;
      }
      const bool copy = m.type == to;
      const float* importance = nullptr;
      if (has_imatrix && !copy) {
        auto e = imatrix.entries.find(it.name);
        if (e != imatrix.entries.end()) {
          importance = e->second.importance.data();
          report.used_imatrix = true;
        }
      }
      const size_t row_bytes = dtype_row_bytes(to, m.cols);
      out.resize(row_bytes * static_cast<size_t>(m.rows));
      const int heads = it.permute_heads;
      const bool gptq = !options.gptq_text.empty() && !copy && gptq_supported(to);
      if (gptq && it.layer >= hessians.end_layer) {
        calibrate(it.layer);
        factored = nullptr;
      }
      const float* hessian = gptq ? hessians.find(it.name, m.cols) : nullptr;
      if (hessian != nullptr) {
        // GPTQ works on the whole matrix (rows in output order) at once.
        std::vector<float> w(static_cast<size_t>(m.rows * m.cols));
        pool.parallel_for(m.rows, 16, [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const int64_t src_row = heads > 0 ? source_row_for_interleaved(r, m.rows, heads) : r;
            dequantize_any(m.type, static_cast<const uint8_t*>(m.data) + src_row * m.row_bytes,
                           w.data() + r * m.cols, m.cols);
          }
        });
        if (hessian != factored) {  // Q/K/V and gate/up come in a row and share their input
          factor = gptq_factor(hessian, m.cols, options.gptq, &pool);
          factored = hessian;
        }
        // Up to 64 rows spread over the matrix, rounded plainly too, for the report.
        const int64_t sample_step = std::max<int64_t>(1, m.rows / 64);
        std::vector<float> sample;
        for (int64_t r = 0; r < m.rows; r += sample_step) {
          sample.insert(sample.end(), w.begin() + r * m.cols, w.begin() + (r + 1) * m.cols);
        }
        gptq_quantize(to, w.data(), m.rows, m.cols, factor, options.gptq, out.data(), &pool);
        report.used_gptq = true;
        report.used_imatrix = false;
        report.gptq_error_ratio =
            sampled_error_ratio(to, sample, sample_step, out, m.cols, importance, hessian);
        summary.gptq_widest_input = std::max(summary.gptq_widest_input, m.cols);
      } else {
        const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, m.cols));
        pool.parallel_for(m.rows, grain, [&](int64_t begin, int64_t end) {
          std::vector<float> row(copy ? 0 : static_cast<size_t>(m.cols));
          for (int64_t r = begin; r < end; ++r) {
            const int64_t src_row = heads > 0 ? source_row_for_interleaved(r, m.rows, heads) : r;
            const auto* src = static_cast<const uint8_t*>(m.data) + src_row * m.row_bytes;
            uint8_t* dst = out.data() + static_cast<size_t>(r) * row_bytes;
            if (copy) {
              std::memcpy(dst, src, row_bytes);
            } else {
              dequantize_any(m.type, src, row.data(), m.cols);
              quantize_any(to, row.data(), dst, m.cols, importance);
            }
          }
        });
      }
      writer.add_tensor(it.name, to, report.shape, out.data(), out.size());
      summary.matrix_params += m.rows * m.cols;
      summary.matrix_bytes_in += static_cast<int64_t>(m.row_bytes) * m.rows;
      summary.matrix_bytes_out += static_cast<int64_t>(out.size());
    }
    ++summary.tensors_per_type[dtype_name(report.to)];
    done += it.matrix ? it.matrix->rows * it.matrix->cols : it.length;
    if (progress) progress(done, total, it.name);
    summary.tensors.push_back(std::move(report));
  }
  writer.write(options.output);
  summary.output_bytes = static_cast<int64_t>(fs::file_size(options.output));
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace edgelm::compression
