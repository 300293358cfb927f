#include "model/loader.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "formats/gguf.h"
#include "formats/llama2c.h"
#include "formats/safetensors.h"
#include "kernels/quant_formats.h"
#include "util/error.h"
#include "util/half.h"
#include "util/mapped_file.h"

namespace edgelm {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using TensorLookup = std::function<const TensorView*(const std::string& name)>;

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool has_gguf_magic(const std::string& path) {
  auto file = MappedFile::open(path);
  return file->size() >= 4 && std::memcmp(file->data(), "GGUF", 4) == 0;
}

// Small 1-D tensors (norm weights, biases) are converted to F32 once at load.
const float* as_f32(LoadedModel& model, const TensorView& t, int64_t expected) {
  if (t.numel() != expected) {
    fail(model.path, ": tensor '", t.name, "' has shape ", shape_to_string(t.shape), ", expected ",
         expected, " values");
  }
  if (t.dtype == DType::F32 && reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0) {
    return static_cast<const float*>(t.data);
  }
  std::vector<float> values(expected);
  if (t.dtype == DType::F32) {
    std::memcpy(values.data(), t.data, expected * sizeof(float));
  } else if (t.dtype == DType::F16 || t.dtype == DType::BF16) {
    dequantize_row(t.dtype, t.data, values.data(), expected);
  } else {
    fail(model.path, ": tensor '", t.name, "' has type ", dtype_name(t.dtype),
         "; norm weights and biases must be F32, F16 or BF16");
  }
  model.converted.push_back(std::move(values));
  return model.converted.back().data();
}

WeightMatrix as_matrix(const LoadedModel& model, const TensorView& t, int64_t rows, int64_t cols) {
  if (t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols) {
    fail(model.path, ": tensor '", t.name, "' has shape ", shape_to_string(t.shape), ", expected [",
         rows, ", ", cols, "]");
  }
  WeightMatrix w;
  w.type = t.dtype;
  w.rows = rows;
  w.cols = cols;
  w.data = t.data;
  w.row_bytes = dtype_row_bytes(t.dtype, cols);
  if (w.row_bytes * static_cast<size_t>(rows) != t.nbytes) {
    fail(model.path, ": tensor '", t.name, "' holds ", t.nbytes, " bytes, expected ",
         w.row_bytes * rows);
  }
  return w;
}

// Canonical (GGUF) tensor names -> ModelWeights, checking every shape.
void bind_weights(LoadedModel& model, const TensorLookup& find) {
  const ModelConfig& c = model.config;
  auto need = [&](const std::string& name) -> const TensorView& {
    const TensorView* t = find(name);
    if (t == nullptr) fail(model.path, ": missing tensor '", name, "'");
    return *t;
  };
  std::set<std::string> dtypes;
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    const TensorView& t = need(name);
    WeightMatrix w = as_matrix(model, t, rows, cols);
    model.n_params += rows * cols;
    model.weight_bytes_per_token += static_cast<int64_t>(t.nbytes);
    dtypes.insert(dtype_name(t.dtype));
    return w;
  };
  auto vector = [&](const std::string& name, int64_t n) {
    model.n_params += n;
    return as_f32(model, need(name), n);
  };

  ModelWeights& w = model.weights;
  w.token_embedding = matrix("token_embd.weight", c.vocab_size, c.dim);
  // A decode step reads one embedding row, not the whole table.
  model.weight_bytes_per_token += static_cast<int64_t>(w.token_embedding.row_bytes) -
                                  static_cast<int64_t>(w.token_embedding.row_bytes) * c.vocab_size;
  w.layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& L = w.layers[l];
    L.attn_norm = vector(p + "attn_norm.weight", c.dim);
    L.wq = matrix(p + "attn_q.weight", c.q_dim(), c.dim);
    L.wk = matrix(p + "attn_k.weight", c.kv_dim(), c.dim);
    L.wv = matrix(p + "attn_v.weight", c.kv_dim(), c.dim);
    L.wo = matrix(p + "attn_output.weight", c.dim, c.q_dim());
    if (c.attention_bias) {
      L.bq = vector(p + "attn_q.bias", c.q_dim());
      L.bk = vector(p + "attn_k.bias", c.kv_dim());
      L.bv = vector(p + "attn_v.bias", c.kv_dim());
    }
    L.ffn_norm = vector(p + "ffn_norm.weight", c.dim);
    L.w_gate = matrix(p + "ffn_gate.weight", c.hidden_dim, c.dim);
    L.w_up = matrix(p + "ffn_up.weight", c.hidden_dim, c.dim);
    L.w_down = matrix(p + "ffn_down.weight", c.dim, c.hidden_dim);
  }
  w.output_norm = vector("output_norm.weight", c.dim);
  if (c.tied_embeddings) {
    w.output = w.token_embedding;
    model.weight_bytes_per_token +=
        static_cast<int64_t>(w.output.row_bytes) * static_cast<int64_t>(c.vocab_size);
  } else {
    w.output = matrix("output.weight", c.vocab_size, c.dim);
  }
  model.weight_dtypes.assign(dtypes.begin(), dtypes.end());
}

// ---------------------------------------------------------------- GGUF

void load_gguf(LoadedModel& model) {
  std::shared_ptr<GgufFile> gguf(GgufFile::open(model.path).release());
  model.keep_alive.push_back(gguf);
  model.format = "gguf";
  model.file_bytes = static_cast<int64_t>(gguf->mapping()->size());

  ModelConfig& c = model.config;
  c.architecture = gguf->get_string("general.architecture");
  const std::string& arch = c.architecture;
  if (arch != "llama" && arch != "qwen2" && arch != "mistral") {
    fail(model.path, ": unsupported architecture '", arch,
         "' (supported: llama, mistral, qwen2 decoders)");
  }
  c.name = gguf->get_string_opt("general.name").value_or("");
  auto key = [&](const char* suffix) { return arch + "." + suffix; };
  c.dim = static_cast<int>(gguf->get_int(key("embedding_length")));
  c.n_layers = static_cast<int>(gguf->get_int(key("block_count")));
  c.hidden_dim = static_cast<int>(gguf->get_int(key("feed_forward_length")));
  c.n_heads = static_cast<int>(gguf->get_int(key("attention.head_count")));
  c.n_kv_heads =
      static_cast<int>(gguf->get_int_opt(key("attention.head_count_kv")).value_or(c.n_heads));
  c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
  c.head_dim =
      static_cast<int>(gguf->get_int_opt(key("attention.key_length")).value_or(c.head_dim));
  c.context_length = static_cast<int>(gguf->get_int_opt(key("context_length")).value_or(2048));
  c.rope_theta = static_cast<float>(gguf->get_float_opt(key("rope.freq_base")).value_or(10000.0));
  c.rms_eps = static_cast<float>(
      gguf->get_float_opt(key("attention.layer_norm_rms_epsilon")).value_or(1e-5));
  // llama.cpp's converter permutes q/k of "llama" into the interleaved layout;
  // qwen2 keeps HF's layout and runs NEOX-style rope.
  c.rope_interleaved = arch != "qwen2";
  c.sliding_window =
      static_cast<int>(gguf->get_int_opt(key("attention.sliding_window")).value_or(0));
  c.attention_bias = gguf->find_tensor("blk.0.attn_q.bias") != nullptr;
  c.tied_embeddings = gguf->find_tensor("output.weight") == nullptr;
  if (auto type = gguf->get_string_opt(key("rope.scaling.type"))) {
    if (*type == "linear") {
      c.rope_scaling = "linear";
      c.rope_factor = static_cast<float>(gguf->get_float(key("rope.scaling.factor")));
    } else if (*type != "none") {
      fail(model.path, ": unsupported rope scaling type '", *type, "'");
    }
  }
  const TensorView* embd = gguf->find_tensor("token_embd.weight");
  if (embd == nullptr || embd->shape.size() != 2) {
    fail(model.path, ": missing or malformed tensor 'token_embd.weight'");
  }
  c.vocab_size = static_cast<int>(embd->shape[0]);
  validate_config(c, model.path);

  std::vector<float> freq_factors;
  if (const TensorView* rf = gguf->find_tensor("rope_freqs.weight")) {
    freq_factors.resize(rf->numel());
    const float* src = as_f32(model, *rf, rf->numel());
    std::copy(src, src + rf->numel(), freq_factors.begin());
  }
  model.rope_inv_freq = rope_inverse_frequencies(c, freq_factors);
  model.vocab = load_vocab_from_gguf(*gguf);
  model.chat_template_source = gguf->get_string_opt("tokenizer.chat_template").value_or("");
  bind_weights(model, [&](const std::string& name) { return gguf->find_tensor(name); });
}

// ---------------------------------------------------------------- llama2.c

std::string find_llama2c_tokenizer(const std::string& model_path, int vocab_size) {
  const fs::path dir = fs::path(model_path).parent_path();
  const std::string n = std::to_string(vocab_size);
  for (const char* name : {"tokenizer.bin", "tokenizer.model"}) {
    if (fs::exists(dir / name)) return (dir / name).string();
  }
  for (const std::string& name : {"tok" + n + ".bin", "tok" + n + ".model"}) {
    if (fs::exists(dir / name)) return (dir / name).string();
  }
  fail(model_path,
       ": no tokenizer found beside the llama2.c checkpoint (looked for tokenizer.bin, "
       "tokenizer.model, tok",
       n, ".bin, tok", n, ".model in '", dir.string(), "')");
}

void load_llama2c(LoadedModel& model) {
  auto file = std::make_shared<Llama2cFile>(open_llama2c(model.path));
  model.keep_alive.push_back(file);
  model.format = "llama2c";
  model.file_bytes = static_cast<int64_t>(file->mapping->size());
  const Llama2cConfig& h = file->config;
  ModelConfig& c = model.config;
  c.architecture = "llama";
  c.name = fs::path(model.path).stem().string();
  c.dim = h.dim;
  c.n_layers = h.n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.head_dim = h.n_heads > 0 ? h.dim / h.n_heads : 0;
  c.hidden_dim = h.hidden_dim;
  c.vocab_size = h.vocab_size;
  c.context_length = h.seq_len;
  c.rope_theta = 10000.0f;
  c.rms_eps = 1e-5f;
  c.rope_interleaved = true;
  c.tied_embeddings = h.shared_classifier;
  validate_config(c, model.path);
  model.rope_inv_freq = rope_inverse_frequencies(c);

  const std::string tok = find_llama2c_tokenizer(model.path, h.vocab_size);
  model.vocab = tok.ends_with(".model") ? load_vocab_from_sentencepiece_model(tok)
                                        : load_vocab_from_llama2c(tok);
  std::map<std::string, const TensorView*> by_name;
  for (const TensorView& t : file->tensors) by_name[t.name] = &t;
  bind_weights(model, [&](const std::string& name) -> const TensorView* {
    auto it = by_name.find(name);
    return it == by_name.end() ? nullptr : it->second;
  });
}

// ---------------------------------------------------------------- HF directory

json read_json(const std::string& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail(path, ": invalid JSON: ", e.what());
  }
}

template <typename T>
T json_get(const json& j, const char* key, T fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail(source, ": field '", key, "' has the wrong type (", it->type_name(), ")");
  }
}

// HF tensor name -> canonical (GGUF) name; "" if not a weight we use.
std::string canonical_hf_name(const std::string& name) {
  static const std::pair<const char*, const char*> kLayer[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  if (name == "model.embed_tokens.weight") return "token_embd.weight";
  if (name == "model.norm.weight") return "output_norm.weight";
  if (name == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return "";
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return "";
  const std::string layer = name.substr(prefix.size(), dot - prefix.size());
  const std::string rest = name.substr(dot + 1);
  for (const auto& [hf, gguf] : kLayer) {
    if (rest == hf) return "blk." + layer + "." + gguf;
  }
  return "";
}

std::string read_chat_template(const std::string& dir) {
  const fs::path path = fs::path(dir) / "tokenizer_config.json";
  if (!fs::exists(path)) return "";
  json config = read_json(path.string());
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {  // [{"name": "default", "template": "..."}, ...]
    for (const json& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
  }
  fail(path.string(), ": 'chat_template' must be a string or a list with a 'default' entry");
}

void load_generation_config(LoadedModel& model, const std::string& dir) {
  const fs::path path = fs::path(dir) / "generation_config.json";
  if (!fs::exists(path)) return;
  const std::string source = path.string();
  json g = read_json(source);
  if (!g.is_object()) fail(source, ": expected a JSON object");
  GenerationDefaults& d = model.generation_defaults;
  d.temperature = json_get<float>(g, "temperature", -1, source);
  d.top_p = json_get<float>(g, "top_p", -1, source);
  d.top_k = json_get<int>(g, "top_k", -1, source);
  d.repetition_penalty = json_get<float>(g, "repetition_penalty", -1, source);
  auto add_eog = [&](int64_t id) {
    if (id < 0 || id >= static_cast<int64_t>(model.vocab.tokens.size())) return;
    auto& eog = model.vocab.end_of_generation;
    if (std::find(eog.begin(), eog.end(), id) == eog.end()) eog.push_back(static_cast<int32_t>(id));
  };
  if (auto it = g.find("eos_token_id"); it != g.end()) {
    if (it->is_number_integer()) add_eog(it->get<int64_t>());
    if (it->is_array()) {
      for (const json& v : *it) {
        if (v.is_number_integer()) add_eog(v.get<int64_t>());
      }
    }
  }
}

void load_hf_dir(LoadedModel& model) {
  const std::string dir = model.path;
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(config_path)) fail(dir, ": not a model directory (no config.json)");
  json j = read_json(config_path);
  if (!j.is_object()) fail(config_path, ": expected a JSON object");
  const std::string& src = config_path;

  ModelConfig& c = model.config;
  std::string arch = json_get<std::string>(j, "model_type", "", src);
  if (arch.empty()) {
    auto archs = j.find("architectures");
    if (archs != j.end() && archs->is_array() && !archs->empty() && (*archs)[0].is_string()) {
      arch = (*archs)[0].get<std::string>();
    }
  }
  static const std::map<std::string, std::string> kArchitectures = {
      {"llama", "llama"},     {"LlamaForCausalLM", "llama"},
      {"mistral", "mistral"}, {"MistralForCausalLM", "mistral"},
      {"qwen2", "qwen2"},     {"Qwen2ForCausalLM", "qwen2"},
  };
  auto known = kArchitectures.find(arch);
  if (known == kArchitectures.end()) {
    fail(config_path, ": unsupported architecture '", arch,
         "' (supported: llama, mistral, qwen2 decoders)");
  }
  c.architecture = known->second;
  c.name = fs::path(dir).filename().string();
  c.dim = json_get<int>(j, "hidden_size", 0, src);
  c.n_layers = json_get<int>(j, "num_hidden_layers", 0, src);
  c.n_heads = json_get<int>(j, "num_attention_heads", 0, src);
  c.n_kv_heads = json_get<int>(j, "num_key_value_heads", c.n_heads, src);
  c.head_dim = json_get<int>(j, "head_dim", c.n_heads > 0 ? c.dim / c.n_heads : 0, src);
  c.hidden_dim = json_get<int>(j, "intermediate_size", 0, src);
  c.vocab_size = json_get<int>(j, "vocab_size", 0, src);
  c.context_length = json_get<int>(j, "max_position_embeddings", 2048, src);
  c.rope_theta = json_get<float>(j, "rope_theta", 10000.0f, src);
  c.rms_eps = json_get<float>(j, "rms_norm_eps", 1e-6f, src);
  c.tied_embeddings = json_get<bool>(j, "tie_word_embeddings", false, src);
  c.attention_bias = c.architecture == "qwen2" || json_get<bool>(j, "attention_bias", false, src);
  c.rope_interleaved = false;
  // Mistral attends to a sliding window; Qwen2 configs carry one but only use it when
  // use_sliding_window is set.
  if (c.architecture == "mistral" || json_get<bool>(j, "use_sliding_window", false, src)) {
    c.sliding_window = json_get<int>(j, "sliding_window", 0, src);
    if (c.sliding_window < 0) fail(config_path, ": 'sliding_window' must be >= 0");
  }
  if (json_get<std::string>(j, "hidden_act", "silu", src) != "silu") {
    fail(config_path, ": unsupported hidden_act '", j["hidden_act"].get<std::string>(),
         "' (only silu)");
  }
  if (auto rs = j.find("rope_scaling"); rs != j.end() && !rs->is_null()) {
    if (!rs->is_object()) fail(config_path, ": 'rope_scaling' must be an object");
    std::string type = json_get<std::string>(*rs, "rope_type", "", src);
    if (type.empty()) type = json_get<std::string>(*rs, "type", "", src);
    if (type == "llama3") {
      c.rope_scaling = "llama3";
      c.rope_factor = json_get<float>(*rs, "factor", 1.0f, src);
      c.rope_low_freq_factor = json_get<float>(*rs, "low_freq_factor", 1.0f, src);
      c.rope_high_freq_factor = json_get<float>(*rs, "high_freq_factor", 4.0f, src);
      c.rope_original_context = json_get<int>(*rs, "original_max_position_embeddings", 8192, src);
    } else if (type == "linear") {
      c.rope_scaling = "linear";
      c.rope_factor = json_get<float>(*rs, "factor", 1.0f, src);
    } else if (type != "default") {
      fail(config_path, ": unsupported rope_scaling type '", type, "'");
    }
  }
  validate_config(c, config_path);
  model.rope_inv_freq = rope_inverse_frequencies(c);

  auto set = std::make_shared<SafetensorsSet>(SafetensorsSet::open_dir(dir));
  model.keep_alive.push_back(set);
  model.format = "safetensors";
  model.file_bytes = set->total_bytes();
  std::map<std::string, const TensorView*> by_name;
  for (const TensorView& t : set->tensors()) {
    const std::string name = canonical_hf_name(t.name);
    if (!name.empty()) by_name[name] = &t;
  }
  // Some tied checkpoints still store lm_head; others untied ones must have it.
  if (!c.tied_embeddings && by_name.count("output.weight") == 0) {
    fail(dir, ": tie_word_embeddings is false but there is no 'lm_head.weight'");
  }
  model.vocab = load_vocab_from_hf_dir(dir);
  model.chat_template_source = read_chat_template(dir);
  load_generation_config(model, dir);
  bind_weights(model, [&](const std::string& name) -> const TensorView* {
    auto it = by_name.find(name);
    return it == by_name.end() ? nullptr : it->second;
  });
}

}  // namespace

std::unique_ptr<LoadedModel> load_model(const std::string& path) {
  auto model = std::make_unique<LoadedModel>();
  model->path = path;
  if (!fs::exists(path)) fail("model not found: '", path, "'");
  if (is_directory(path)) {
    load_hf_dir(*model);
  } else if (path.ends_with(".safetensors") || path.ends_with(".json")) {
    model->path = fs::path(path).parent_path().string();
    if (model->path.empty()) model->path = ".";
    load_hf_dir(*model);
  } else if (has_gguf_magic(path)) {
    load_gguf(*model);
  } else if (looks_like_llama2c(path)) {
    load_llama2c(*model);
  } else {
    fail("'", path,
         "' is not a recognized model: expected a Hugging Face directory (config.json + "
         "*.safetensors), a GGUF file or a llama2.c .bin checkpoint");
  }
  if (model->vocab.tokens.empty()) fail(path, ": the tokenizer has no tokens");
  if (static_cast<int>(model->vocab.tokens.size()) > model->config.vocab_size) {
    fail(path, ": the tokenizer has ", model->vocab.tokens.size(),
         " tokens but the embedding only ", model->config.vocab_size, " rows");
  }
  return model;
}

int interleave_matrices(LoadedModel& model, ThreadPool* pool) {
  ModelWeights& w = model.weights;
  std::vector<WeightMatrix*> matrices;
  for (LayerWeights& l : w.layers) {
    for (WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      matrices.push_back(m);
    }
  }
  // A tied output matrix is also the embedding table: both views follow the
  // re-laid matrix (the embedding's rows are read with dequantize_matrix_row).
  const bool tied = w.output.data == w.token_embedding.data;
  matrices.push_back(&w.output);
  std::vector<WeightMatrix*> chosen;
  size_t total = 0;
  for (WeightMatrix* m : matrices) {
    if (x16_layout(m->type) == DType::F32 || m->rows % kX16Rows != 0 ||
        m->cols % dtype_traits(m->type).block_size != 0) {
      continue;
    }
    chosen.push_back(m);
    total += m->row_bytes * static_cast<size_t>(m->rows);
  }
  if (chosen.empty()) return 0;
  // The norm weights and biases between the matrices would still be read from
  // the mapping, and a page fault there can map a whole large page-cache folio
  // back in, released matrix pages and all (80 MB more resident for TinyLlama
  // on Linux 6.18): give them copies of their own, before any page is released.
  const ModelConfig& c = model.config;
  auto own = [&](const float*& values, int64_t count) {
    if (values == nullptr) return;
    model.converted.emplace_back(values, values + count);
    values = model.converted.back().data();
  };
  for (LayerWeights& l : w.layers) {
    own(l.attn_norm, c.dim);
    own(l.ffn_norm, c.dim);
    own(l.bq, c.q_dim());
    own(l.bk, c.kv_dim());
    own(l.bv, c.kv_dim());
  }
  own(w.output_norm, c.dim);
  // Huge pages where the system gives them on request (Linux THP "madvise"):
  // faulting in 4 KB pages was half of the interleaving time (TinyLlama: 150k
  // faults), and the decode stream then needs a TLB entry per 2 MB, not per 4 KB.
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t capacity = (total + kHugePage - 1) / kHugePage * kHugePage;
  std::shared_ptr<void> buffer(std::aligned_alloc(kHugePage, capacity), std::free);
  if (!buffer) fail("cannot allocate ", total, " bytes to interleave the weight matrices");
#ifdef MADV_HUGEPAGE
  madvise(buffer.get(), capacity, MADV_HUGEPAGE);  // advice only: failure changes nothing
#endif
  std::vector<uint8_t*> outs;
  auto* out = static_cast<uint8_t*>(buffer.get());
  for (WeightMatrix* m : chosen) {
    outs.push_back(out);
    out += m->row_bytes * static_cast<size_t>(m->rows);
  }
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  auto relayout = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      WeightMatrix* m = chosen[static_cast<size_t>(i)];
      const size_t bytes = m->row_bytes * static_cast<size_t>(m->rows);
      interleave_x16(m->type, m->data, m->rows, m->cols, outs[static_cast<size_t>(i)]);
      // The mapped pages wholly inside the matrix are not read again: drop them
      // from this process (clean file pages; reading them would fault them back).
      const auto from = reinterpret_cast<uintptr_t>(m->data);
      const uintptr_t first = (from + page - 1) / page * page;
      const uintptr_t last = (from + bytes) / page * page;
      if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
      m->type = x16_layout(m->type);
      m->data = outs[static_cast<size_t>(i)];
    }
  };
  const auto count = static_cast<int64_t>(chosen.size());
  if (pool != nullptr) {
    pool->parallel_for(count, 1, relayout);
  } else {
    relayout(0, count);
  }
  if (tied) w.token_embedding = w.output;
  model.keep_alive.push_back(std::move(buffer));
  ++model.weights_version;
  return static_cast<int>(chosen.size());
}

}  // namespace edgelm
