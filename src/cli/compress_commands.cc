// `edgelm quantize` (any checkpoint -> llama.cpp-compatible GGUF of a chosen type) and
// `edgelm imatrix` (calibration statistics for --imatrix). See docs/QUANTIZATION.md.
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include "compression/imatrix.h"
#include "compression/quant_plan.h"
#include "compression/quantize.h"
#include "util/error.h"

namespace edgelm::cli {
namespace {

namespace cmp = edgelm::compression;

// An interrupted run must not leave OUT.tmp behind. The writer only renames a complete file
// over OUT, so removing the temporary on SIGINT/SIGTERM is all that is needed; unlink() is
// async-signal-safe. The path lives in a fixed buffer because handlers must not allocate.
char g_tmp_path[4096];

extern "C" void remove_tmp_and_die(int sig) {
  if (g_tmp_path[0] != '\0') ::unlink(g_tmp_path);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

class TmpCleanup {
 public:
  explicit TmpCleanup(const std::string& output) {
    const std::string tmp = output + ".tmp";
    if (tmp.size() < sizeof(g_tmp_path)) std::memcpy(g_tmp_path, tmp.c_str(), tmp.size() + 1);
    previous_int_ = std::signal(SIGINT, remove_tmp_and_die);
    previous_term_ = std::signal(SIGTERM, remove_tmp_and_die);
  }
  ~TmpCleanup() {
    std::signal(SIGINT, previous_int_);
    std::signal(SIGTERM, previous_term_);
    g_tmp_path[0] = '\0';
  }

 private:
  void (*previous_int_)(int) = SIG_DFL;
  void (*previous_term_)(int) = SIG_DFL;
};

struct QuantizeFlags {
  cmp::QuantizeOptions options;
  int64_t gptq_memory_mib = 0;
  bool verbose = false;
};

int quantize_command(const QuantizeFlags& flags) {
  cmp::QuantizeOptions o = flags.options;
  o.gptq_memory_bytes = flags.gptq_memory_mib << 20;
  TmpCleanup cleanup(o.output);
  std::unique_ptr<ProgressBar> live, calibration;
  const cmp::QuantizeSummary s = cmp::quantize_model(
      o,
      [&](int64_t done, int64_t total, const std::string& tensor) {
        if (calibration) calibration->finish(), calibration.reset();
        if (!live) live = std::make_unique<ProgressBar>("quantize", total);
        live->update(done, tensor);
      },
      [&](int done, int n) {
        if (!calibration) calibration = std::make_unique<ProgressBar>("gptq calibration", n);
        calibration->update(done);
      });
  if (live) live->finish();

  std::printf("input:   %s (%s)\n", o.input.c_str(), human_bytes(s.input_bytes).c_str());
  std::printf("output:  %s (%s, GGUF v3, arch %s%s)\n", s.output.c_str(),
              human_bytes(s.output_bytes).c_str(), s.architecture.c_str(),
              s.permuted_qk ? ", q/k permuted to the interleaved RoPE layout" : "");
  std::printf("type:    %s%s%s\n", o.type.c_str(), o.pure ? " (pure)" : "",
              o.imatrix.empty() ? "" : (" with imatrix " + o.imatrix).c_str());
  if (s.gptq_chunks > 0) {
    int gptq_tensors = 0;
    double log_ratio = 0;
    for (const cmp::TensorReport& t : s.tensors) {
      if (!t.used_gptq) continue;
      ++gptq_tensors;
      log_ratio += std::log(std::max(t.gptq_error_ratio, 1e-30));
    }
    std::printf("gptq:    %d tensors, calibrated on %lld tokens (%d chunks) of %s", gptq_tensors,
                static_cast<long long>(s.gptq_tokens), s.gptq_chunks, o.gptq_text.c_str());
    if (s.gptq_passes > 1) {
      std::printf(" in %d passes of up to %d layers", s.gptq_passes, s.gptq_layers_per_pass);
    }
    std::printf("\n");
    if (gptq_tensors > 0) {
      std::printf(
          "         output error on the calibration text %.2fx that of plain rounding "
          "(geometric mean over tensors; -v: each)\n",
          std::exp(log_ratio / gptq_tensors));
    }
    if (s.gptq_tokens < s.gptq_widest_input) {
      // H = mean(x x^T) over fewer tokens than columns is singular: GPTQ then fits the
      // calibration text more than the inputs it stands for.
      std::printf(
          "note:    %lld calibration tokens are fewer than the %lld columns of the widest "
          "input; a longer text (or more --gptq-chunks) generalizes better\n",
          static_cast<long long>(s.gptq_tokens), static_cast<long long>(s.gptq_widest_input));
    }
  }
  std::printf("weights: %lld in 2-D tensors, %.3f -> %.3f bits per weight (%s -> %s)\n",
              static_cast<long long>(s.matrix_params), s.bits_per_weight_in(),
              s.bits_per_weight_out(), human_bytes(s.matrix_bytes_in).c_str(),
              human_bytes(s.matrix_bytes_out).c_str());
  std::printf("size:    %s -> %s (%.1f%%)\n", human_bytes(s.input_bytes).c_str(),
              human_bytes(s.output_bytes).c_str(),
              s.input_bytes > 0 ? 100.0 * s.output_bytes / s.input_bytes : 0.0);
  std::string counts;
  for (const auto& [type, n] : s.tensors_per_type) {
    counts += (counts.empty() ? "" : ", ") + type + ": " + std::to_string(n);
  }
  std::printf("tensors: %s\n", counts.c_str());
  if (!s.fallbacks.empty()) {
    std::printf("fallbacks (%zu tensors whose rows are not a whole number of blocks):\n",
                s.fallbacks.size());
    for (const std::string& f : s.fallbacks) std::printf("  %s\n", f.c_str());
  }
  if (flags.verbose) {
    for (const cmp::TensorReport& t : s.tensors) {
      char how[64] = "";
      if (t.used_gptq) {
        std::snprintf(how, sizeof how, " gptq (output error %.2fx)", t.gptq_error_ratio);
      } else if (t.used_imatrix) {
        std::snprintf(how, sizeof how, " imatrix");
      }
      std::printf("  %-28s %-14s %6s -> %-8s%s%s\n", t.name.c_str(),
                  shape_to_string(t.shape).c_str(), dtype_name(t.from), dtype_name(t.to), how,
                  t.note.empty() ? "" : ("  " + t.note).c_str());
    }
  }
  std::printf("time:    %.2f s\n", s.seconds);
  return 0;
}

struct ImatrixFlags {
  std::string model;
  std::string text_path;
  std::string output = "imatrix.dat";
  cmp::ImatrixOptions options;
};

int imatrix_command(const ImatrixFlags& flags) {
  std::ifstream in(flags.text_path, std::ios::binary);
  if (!in) fail("cannot open text file '", flags.text_path, "'");
  std::stringstream text;
  text << in.rdbuf();
  const std::string model_path = flags.model.empty() ? default_model_path() : flags.model;
  std::unique_ptr<LoadedModel> model = load_model(model_path);
  TmpCleanup cleanup(flags.output);
  std::unique_ptr<ProgressBar> bar;
  cmp::Imatrix m = cmp::collect_imatrix(*model, text.str(), flags.options, [&](int done, int n) {
    if (!bar) bar = std::make_unique<ProgressBar>("imatrix", n);
    bar->update(done);
  });
  if (bar) bar->finish();
  m.dataset = flags.text_path;
  cmp::write_imatrix_dat(m, flags.output);
  std::printf("wrote %s: %zu matrices, %d chunks of %d tokens from %s\n", flags.output.c_str(),
              m.entries.size(), m.chunks, flags.options.context, flags.text_path.c_str());
  return 0;
}

}  // namespace

void register_compress_commands(CLI::App& app, std::vector<Command>& out) {
  auto q = std::make_shared<QuantizeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "quantize", "convert a model (HF dir, GGUF, llama2.c .bin) to a quantized GGUF v3 file");
  cmd->add_option("input", q->options.input, "input model")->required();
  cmd->add_option("output", q->options.output, "output .gguf")->required();
  std::string types;
  for (const std::string& n : cmp::scheme_names()) types += (types.empty() ? "" : ", ") + n;
  cmd->add_option("--type", q->options.type, "target type: " + types)->required();
  cmd->add_option("--imatrix", q->options.imatrix,
                  "importance matrix from `edgelm imatrix` or llama-imatrix (.dat or .gguf)");
  cmd->add_option("--override", q->options.overrides,
                  "PATTERN=TYPE: tensors whose name matches the regex get TYPE (repeatable)")
      ->allow_extra_args(false);
  cmd->add_flag("--pure", q->options.pure,
                "every matrix gets TYPE (no llama.cpp mixing, no output/embedding bump)");
  cmd->add_flag("--allow-requantize", q->options.allow_requantize,
                "accept input weights that are already quantized");
  cmd->add_option(
      "--gptq", q->options.gptq_text,
      "calibration text: round the layer matrices with GPTQ (see docs/QUANTIZATION.md)");
  cmd->add_option("--gptq-ctx", q->options.gptq_calibration.context,
                  "GPTQ: tokens per chunk (default: 512, or the model's context if shorter)")
      ->check(CLI::Range(2, 1 << 24));
  cmd->add_option("--gptq-chunks", q->options.gptq_calibration.max_chunks,
                  "GPTQ: use at most this many chunks of the text (0: all)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--gptq-damp", q->options.gptq.damp,
                  "GPTQ: added to the Hessian's diagonal, as a fraction of its mean")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 10.0));
  cmd->add_option("--gptq-memory", q->gptq_memory_mib,
                  "GPTQ: MiB for one calibration pass's Hessians; more layers take more passes "
                  "(default: 60% of the memory available)")
      ->check(CLI::Range(1, 1 << 30));
  cmd->add_flag("--gptq-act-order", q->options.gptq.act_order,
                "GPTQ: round the columns with the largest inputs first");
  cmd->add_option("-t,--threads", q->options.threads, "threads (default: all cores)")
      ->check(CLI::Range(0, 1024));
  cmd->add_flag("-v,--verbose", q->verbose, "list every tensor with its type");
  out.push_back({cmd, [q] { return quantize_command(*q); }});

  auto im = std::make_shared<ImatrixFlags>();
  CLI::App* icmd = app.add_subcommand(
      "imatrix", "collect activation statistics on a text for `quantize --imatrix`");
  icmd->add_option("-m,--model", im->model, "model (default: bundled stories260K)");
  icmd->add_option("-f,--file", im->text_path, "calibration text file")->required();
  icmd->add_option("-o,--output", im->output, "output file (llama.cpp legacy imatrix format)")
      ->capture_default_str();
  icmd->add_option("--chunks", im->options.max_chunks, "use at most this many chunks (0: all)")
      ->check(CLI::Range(0, 1 << 30));
  icmd->add_option("-c,--ctx", im->options.context, "tokens per chunk")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 24));
  icmd->add_option("-t,--threads", im->options.threads, "threads (default: all cores)")
      ->check(CLI::Range(0, 1024));
  out.push_back({icmd, [im] { return imatrix_command(*im); }});
}

}  // namespace edgelm::cli
