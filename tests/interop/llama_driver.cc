// llama.cpp side of the interoperability check (tests/interop/run.sh).
//
// Compiled by run.sh against the llama.h/ggml headers of the exact llama.cpp release that
// node-llama-cpp's prebuilt libraries were built from (extracted from its source bundle), and
// linked with those libraries. Not part of the edgelm build.
//
//   llama_driver info
//   llama_driver quantize IN.gguf OUT.gguf FTYPE_ID      llama_model_quantize, no imatrix
//   llama_driver greedy MODEL PROMPT N LOGITS_OUT [FORCED]  BOS + prompt, then N argmax tokens
//   llama_driver tensors FILE.gguf                       name, type, bytes, FNV-1a of the data
//   llama_driver kv FILE.gguf                            metadata: key, type, value (or hash)
//   llama_driver bench MODEL PROMPT_TOKENS DECODE_TOKENS THREADS REPS
//                                                        prefill and decode speed
//                                                        (tools/bench_vs_llama.sh)
//
// greedy prints "prompt: ids", "tokens: ids" and writes the N logit rows (f32, vocab each)
// that chose the tokens; the argmax takes the lowest id among equal maxima, as
// edgelm_interop_greedy does. FORCED (N comma-separated ids) is fed instead of the argmax
// tokens (teacher forcing), so two engines can be compared on the same context.
// INTEROP_KV_F32=1 uses an F32 KV cache, INTEROP_NO_FA=1 turns flash attention off.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"
#include "llama.h"

namespace {

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "llama_driver: %s\n", message.c_str());
  std::exit(1);
}

// llama.cpp logs a lot at INFO; keep warnings and errors (fallback notices included).
void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

// The CPU backend variants (libggml-cpu-haswell.so, ...) sit beside libllama.so; ggml picks the
// best one this CPU supports.
void load_backends() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&llama_backend_init), &info) == 0 || !info.dli_fname) {
    die("cannot locate libllama");
  }
  std::string dir = info.dli_fname;
  dir = dir.substr(0, dir.find_last_of('/'));
  llama_log_set(quiet_log, nullptr);
  ggml_backend_load_all_from_path(dir.c_str());
  llama_backend_init();
}

void print_backends() {
  for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
    ggml_backend_dev_t dev = ggml_backend_dev_get(i);
    std::printf("device %zu: %s (%s)\n", i, ggml_backend_dev_name(dev),
                ggml_backend_dev_description(dev));
  }
  std::printf("system: %s\n", llama_print_system_info());
}

int quantize(const char* in, const char* out, int ftype) {
  llama_model_quantize_params params = llama_model_quantize_default_params();
  params.nthread = 1;
  params.ftype = static_cast<llama_ftype>(ftype);
  if (llama_model_quantize(in, out, &params) != 0) die(std::string("quantizing failed: ") + in);
  return 0;
}

int32_t argmax(const float* logits, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

void print_ids(const char* label, const std::vector<llama_token>& ids) {
  std::printf("%s:", label);
  for (llama_token id : ids) std::printf(" %d", id);
  std::printf("\n");
}

std::vector<llama_token> parse_ids(const char* text) {
  std::vector<llama_token> ids;
  for (const char* p = text; *p;) {
    char* end = nullptr;
    ids.push_back(static_cast<llama_token>(std::strtol(p, &end, 10)));
    if (end == p) die(std::string("bad token list: ") + text);
    p = *end == ',' ? end + 1 : end;
  }
  return ids;
}

int greedy(const char* path, const std::string& prompt, int n_new, const char* logits_path,
           const std::vector<llama_token>& forced) {
  if (!forced.empty() && static_cast<int>(forced.size()) != n_new) die("need N forced tokens");
  llama_model_params model_params = llama_model_default_params();
  llama_model* model = llama_model_load_from_file(path, model_params);
  if (!model) die(std::string("cannot load ") + path);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int n_vocab = llama_vocab_n_tokens(vocab);

  std::vector<llama_token> tokens(prompt.size() + 8);
  const int n_prompt = llama_tokenize(vocab, prompt.data(), static_cast<int32_t>(prompt.size()),
                                      tokens.data(), static_cast<int32_t>(tokens.size()),
                                      /*add_special=*/true, /*parse_special=*/false);
  if (n_prompt <= 0) die("tokenizing the prompt failed");
  tokens.resize(n_prompt);

  llama_context_params ctx_params = llama_context_default_params();
  ctx_params.n_ctx = static_cast<uint32_t>(n_prompt + n_new + 16);
  ctx_params.n_batch = ctx_params.n_ctx;
  ctx_params.n_ubatch = ctx_params.n_ctx;
  ctx_params.n_threads = 1;
  ctx_params.n_threads_batch = 1;
  if (std::getenv("INTEROP_KV_F32")) {
    ctx_params.type_k = GGML_TYPE_F32;
    ctx_params.type_v = GGML_TYPE_F32;
  }
  if (std::getenv("INTEROP_NO_FA")) ctx_params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  llama_context* ctx = llama_init_from_model(model, ctx_params);
  if (!ctx) die("cannot create a context");

  FILE* logits_file = std::fopen(logits_path, "wb");
  if (!logits_file) die(std::string("cannot write ") + logits_path);
  std::vector<llama_token> generated;
  std::vector<llama_token> next = tokens;
  for (int step = 0; step < n_new; ++step) {
    if (llama_decode(ctx, llama_batch_get_one(next.data(), static_cast<int32_t>(next.size()))) !=
        0) {
      die("llama_decode failed");
    }
    const float* logits = llama_get_logits_ith(ctx, -1);
    std::fwrite(logits, sizeof(float), n_vocab, logits_file);
    const llama_token token = argmax(logits, n_vocab);
    generated.push_back(token);
    next.assign(1, forced.empty() ? token : forced[step]);
  }
  std::fclose(logits_file);
  print_ids("prompt", tokens);
  print_ids("tokens", generated);
  llama_free(ctx);
  llama_model_free(model);
  return 0;
}

// FNV-1a: enough to tell equal bytes from different ones.
uint64_t fnv1a(const void* data, size_t n, uint64_t hash = 1469598103934665603ull) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) hash = (hash ^ bytes[i]) * 1099511628211ull;
  return hash;
}

int tensors(const char* path) {
  gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
  gguf_context* gguf = gguf_init_from_file(path, params);
  if (!gguf) die(std::string("cannot parse ") + path);
  FILE* file = std::fopen(path, "rb");
  if (!file) die(std::string("cannot open ") + path);
  const size_t data_offset = gguf_get_data_offset(gguf);
  std::vector<unsigned char> bytes;
  for (int64_t i = 0; i < gguf_get_n_tensors(gguf); ++i) {
    bytes.resize(gguf_get_tensor_size(gguf, i));
    const long offset = static_cast<long>(data_offset + gguf_get_tensor_offset(gguf, i));
    if (std::fseek(file, offset, SEEK_SET) != 0 ||
        std::fread(bytes.data(), 1, bytes.size(), file) != bytes.size()) {
      die(std::string("short read in ") + path);
    }
    std::printf("%s %s %zu %016" PRIx64 "\n", gguf_get_tensor_name(gguf, i),
                ggml_type_name(gguf_get_tensor_type(gguf, i)), bytes.size(),
                fnv1a(bytes.data(), bytes.size()));
  }
  std::fclose(file);
  gguf_free(gguf);
  return 0;
}

size_t scalar_size(gguf_type type) {
  switch (type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL:
      return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16:
      return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32:
      return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64:
      return 8;
    default:
      die("not a scalar GGUF type");
  }
}

// One line per key: "key type value"; strings longer than 64 bytes and arrays as a hash.
int key_values(const char* path) {
  gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
  gguf_context* gguf = gguf_init_from_file(path, params);
  if (!gguf) die(std::string("cannot parse ") + path);
  for (int64_t i = 0; i < gguf_get_n_kv(gguf); ++i) {
    const gguf_type type = gguf_get_kv_type(gguf, i);
    std::printf("%s %s ", gguf_get_key(gguf, i), gguf_type_name(type));
    switch (type) {
      case GGUF_TYPE_STRING: {
        const std::string value = gguf_get_val_str(gguf, i);
        if (value.size() <= 64 && value.find('\n') == std::string::npos) {
          std::printf("\"%s\"\n", value.c_str());
        } else {
          std::printf("%zu bytes, fnv %016" PRIx64 "\n", value.size(),
                      fnv1a(value.data(), value.size()));
        }
        break;
      }
      case GGUF_TYPE_ARRAY: {
        const gguf_type elem = gguf_get_arr_type(gguf, i);
        const size_t n = gguf_get_arr_n(gguf, i);
        uint64_t hash = 1469598103934665603ull;
        if (elem == GGUF_TYPE_STRING) {
          for (size_t j = 0; j < n; ++j) {
            const char* item = gguf_get_arr_str(gguf, i, j);
            hash = fnv1a(item, std::strlen(item) + 1, hash);  // the NUL separates items
          }
        } else {
          hash = fnv1a(gguf_get_arr_data(gguf, i), n * scalar_size(elem));
        }
        std::printf("[%s x %zu], fnv %016" PRIx64 "\n", gguf_type_name(elem), n, hash);
        break;
      }
      case GGUF_TYPE_FLOAT32:
        std::printf("%.9g\n", gguf_get_val_f32(gguf, i));
        break;
      case GGUF_TYPE_FLOAT64:
        std::printf("%.17g\n", gguf_get_val_f64(gguf, i));
        break;
      case GGUF_TYPE_BOOL:
        std::printf("%s\n", gguf_get_val_bool(gguf, i) ? "true" : "false");
        break;
      default: {  // integers: little-endian bytes as an unsigned or signed number
        const size_t size = scalar_size(type);
        uint64_t raw = 0;
        std::memcpy(&raw, gguf_get_val_data(gguf, i), size);
        const bool is_signed = type == GGUF_TYPE_INT8 || type == GGUF_TYPE_INT16 ||
                               type == GGUF_TYPE_INT32 || type == GGUF_TYPE_INT64;
        if (is_signed && size < 8 && (raw >> (8 * size - 1)) != 0) raw |= ~0ull << (8 * size);
        if (is_signed) {
          std::printf("%" PRId64 "\n", static_cast<int64_t>(raw));
        } else {
          std::printf("%" PRIu64 "\n", raw);
        }
      }
    }
  }
  gguf_free(gguf);
  return 0;
}

// llama-bench's pp/tg measurement: per repetition an empty cache, PROMPT_TOKENS in one batch,
// then DECODE_TOKENS one at a time (fixed token ids: no sampling is timed); prints the median
// tokens/s of each, and the slowest and fastest repetition.
int bench(const char* path, int n_prompt, int n_decode, int threads, int reps) {
  if (n_prompt < 1 || n_decode < 1 || threads < 1 || reps < 1) die("bad bench arguments");
  llama_model_params model_params = llama_model_default_params();
  llama_model* model = llama_model_load_from_file(path, model_params);
  if (!model) die(std::string("cannot load ") + path);
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  llama_context_params ctx_params = llama_context_default_params();
  ctx_params.n_ctx = static_cast<uint32_t>(n_prompt + n_decode + 16);
  ctx_params.n_batch = static_cast<uint32_t>(n_prompt);
  ctx_params.n_ubatch = static_cast<uint32_t>(n_prompt);
  ctx_params.n_threads = threads;
  ctx_params.n_threads_batch = threads;
  llama_context* ctx = llama_init_from_model(model, ctx_params);
  if (!ctx) die("cannot create a context");
  std::vector<llama_token> prompt(static_cast<size_t>(n_prompt));
  for (int i = 0; i < n_prompt; ++i) prompt[i] = 1 + (i * 37) % (n_vocab - 1);
  using clock = std::chrono::steady_clock;
  std::vector<double> prefill, decode;
  for (int rep = 0; rep <= reps; ++rep) {  // repetition 0 warms up
    llama_memory_clear(llama_get_memory(ctx), true);
    const auto t0 = clock::now();
    if (llama_decode(ctx, llama_batch_get_one(prompt.data(), n_prompt)) != 0) die("prefill failed");
    llama_synchronize(ctx);
    const auto t1 = clock::now();
    for (int i = 0; i < n_decode; ++i) {
      llama_token token = 1 + (i * 91) % (n_vocab - 1);
      if (llama_decode(ctx, llama_batch_get_one(&token, 1)) != 0) die("decode failed");
    }
    llama_synchronize(ctx);
    const auto t2 = clock::now();
    if (rep == 0) continue;
    prefill.push_back(n_prompt / std::chrono::duration<double>(t1 - t0).count());
    decode.push_back(n_decode / std::chrono::duration<double>(t2 - t1).count());
  }
  std::sort(prefill.begin(), prefill.end());
  std::sort(decode.begin(), decode.end());
  std::printf("prefill %.1f %.1f %.1f\ndecode %.1f %.1f %.1f\n", prefill[prefill.size() / 2],
              prefill.front(), prefill.back(), decode[decode.size() / 2], decode.front(),
              decode.back());
  llama_free(ctx);
  llama_model_free(model);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "tensors" && argc == 3) return tensors(argv[2]);
  if (command == "kv" && argc == 3) return key_values(argv[2]);
  load_backends();
  if (command == "info" && argc == 2) {
    print_backends();
    return 0;
  }
  if (command == "quantize" && argc == 5) return quantize(argv[2], argv[3], std::atoi(argv[4]));
  if (command == "bench" && argc == 7) {
    return bench(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), std::atoi(argv[5]),
                 std::atoi(argv[6]));
  }
  if (command == "greedy" && (argc == 6 || argc == 7)) {
    return greedy(argv[2], argv[3], std::atoi(argv[4]), argv[5],
                  argc == 7 ? parse_ids(argv[6]) : std::vector<llama_token>{});
  }
  std::fprintf(stderr,
               "usage: llama_driver info | quantize IN OUT FTYPE_ID | greedy MODEL PROMPT N "
               "LOGITS_OUT [FORCED] | tensors FILE | kv FILE | bench MODEL PROMPT_TOKENS "
               "DECODE_TOKENS THREADS REPS\n");
  return 2;
}
