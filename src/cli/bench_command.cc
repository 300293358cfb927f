// `edgelm bench`: load time, prefill and decode speed, peak memory, and decode
// speed as a fraction of the memory-bandwidth roofline, measured in one run.
// Several -m and -t values give a matrix (models x thread counts) as one table;
// with --quality-text and --base, every model also gets KLD / top-1 / PPL
// against the base. tools/plot_bench.py turns the JSON into a PNG.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "evaluation/perplexity.h"
#include "util/mapped_file.h"

namespace edgelm::cli {
namespace {

struct BenchFlags {
  std::vector<std::string> models;
  std::vector<int> threads;
  std::string chat_template;
  int prompt_tokens = 128;
  int decode_tokens = 64;
  int repetitions = 3;
  std::string kv_type = "f16";
  std::string json_path;
  std::string markdown_path;
  std::string quality_text;  // with base: KLD / top-1 / PPL per model
  std::string base_model;
  int quality_context = 256;
  int quality_chunks = 8;
  bool alternate_decode_paths = false;
  bool paired_bandwidth = false;
};

struct Row {
  ModelInfo info;
  int threads = 0;
  double load_seconds = 0, prefill = 0, decode = 0, bandwidth = 0, roofline = 0, rss = 0;
  double decode_min = 0, decode_max = 0;             // over the repetitions
  double bandwidth_before = 0, bandwidth_after = 0;  // `bandwidth` is the higher one
  double kv_bytes_per_token = 0;  // KV cache read by a decode step, averaged over the run
  double decode_per_product = 0;  // --alternate-decode-paths: median decode of the other path
  // --paired-bandwidth: each of extra repetitions against a reading right before it.
  double paired_roofline = 0, paired_roofline_min = 0, paired_roofline_max = 0;
  double bits_per_weight = 0;
  bool has_quality = false;
  double ppl = 0, ppl_uncertainty = 0, kld = 0, top1 = 0;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Peak RSS since the last reset_peak_rss() (VmHWM), so each row of a matrix gets
// its own peak rather than the largest model's.
void reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // kB
  }
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int effective_threads(int t) {
  return t > 0 ? t : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Random but fixed prompt tokens (avoiding the special tokens at the start of most vocabs).
std::vector<int32_t> bench_prompt(const ModelInfo& info, const BenchFlags& f) {
  if (f.prompt_tokens + f.decode_tokens + 1 > info.context_length) {
    throw Error("bench: prompt + decode tokens exceed the model context of " +
                std::to_string(info.context_length));
  }
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> pick(std::min(100, info.vocab_size - 1), info.vocab_size - 1);
  std::vector<int32_t> prompt(f.prompt_tokens);
  for (int32_t& t : prompt) t = pick(rng);
  return prompt;
}

SessionOptions bench_session_options(const BenchFlags& f, int threads) {
  SessionOptions options;
  options.context_length = f.prompt_tokens + f.decode_tokens + 1;
  options.kv_type = f.kv_type;
  options.threads = threads;
  return options;
}

GenerateOptions bench_generate_options(const BenchFlags& f) {
  GenerateOptions options;
  options.max_tokens = f.decode_tokens;
  options.ignore_eos = true;
  options.sampling = SamplingParams::greedy();
  return options;
}

// Decode tokens per second of one generation (its first token comes from the
// prefill logits: decode steps = tokens - 1).
double decode_speed(const GenerateResult& r) {
  return (r.completion_tokens - 1) / r.decode_seconds;
}

// Prefill and decode speed of one model at one thread count.
void measure_speed(const std::shared_ptr<Model>& model, const BenchFlags& f, Row& row) {
  const std::vector<int32_t> prompt = bench_prompt(model->info(), f);
  const SessionOptions session_options = bench_session_options(f, row.threads);
  Session session(model, session_options);
  const GenerateOptions options = bench_generate_options(f);
  std::vector<double> prefill_tps, decode_tps;
  // --alternate-decode-paths: odd repetitions with one dispatch per decode
  // step (the default), even ones with a second session that dispatches per
  // product, so that a slow phase of a shared machine hits both alike.
  SessionOptions per_product_options = session_options;
  per_product_options.decode_in_one_dispatch = false;
  std::optional<Session> per_product;
  if (f.alternate_decode_paths) {
    per_product.emplace(model, per_product_options);
    per_product->generate(prompt, options);  // warms its cache and buffers, as rep 0 does
  }
  std::vector<double> per_product_tps;

  const int runs = f.alternate_decode_paths ? 2 * f.repetitions : f.repetitions;
  ProgressBar progress(model->info().name + " t" + std::to_string(row.threads), runs + 1);
  for (int rep = 0; rep <= runs; ++rep) {  // rep 0 warms caches and pages
    Session& s = per_product && rep % 2 == 0 && rep > 0 ? *per_product : session;
    s.reset();
    const GenerateResult r = s.generate(prompt, options);
    const double decode = decode_speed(r);
    if (rep > 0 && &s != &session) {
      per_product_tps.push_back(decode);
    } else if (rep > 0) {
      prefill_tps.push_back(r.prompt_tokens / r.prompt_seconds);
      decode_tps.push_back(decode);
    }
    progress.update(rep + 1);
  }
  if (!per_product_tps.empty()) row.decode_per_product = median(per_product_tps);
  progress.finish();
  row.prefill = median(prefill_tps);
  row.decode = median(decode_tps);
  row.decode_min = *std::min_element(decode_tps.begin(), decode_tps.end());
  row.decode_max = *std::max_element(decode_tps.begin(), decode_tps.end());
}

// --paired-bandwidth: f.repetitions more generations, each right after a read
// bandwidth reading of its own, so that a machine whose bandwidth changes in
// phases (docs/BENCHMARKS.md, Zen 4 host) holds each repetition to the phase
// it ran in, where the row's roofline holds all of them to the best reading
// before or after the row. Runs after the row's peak RSS is taken: each
// reading allocates a buffer of the working set's size.
void measure_paired(const std::shared_ptr<Model>& model, const BenchFlags& f, int64_t working_set,
                    double bytes_per_token, Row& row) {
  const std::vector<int32_t> prompt = bench_prompt(model->info(), f);
  Session session(model, bench_session_options(f, row.threads));
  const GenerateOptions options = bench_generate_options(f);
  session.generate(prompt, options);  // warms caches and pages, as measure_speed's rep 0
  std::vector<double> fractions;
  ProgressBar progress(model->info().name + " t" + std::to_string(row.threads) + " paired",
                       f.repetitions);
  for (int rep = 0; rep < f.repetitions; ++rep) {
    const double gbs = measure_memory_bandwidth(row.threads, working_set);
    session.reset();
    const double decode = decode_speed(session.generate(prompt, options));
    fractions.push_back(decode / (gbs * 1e9 / bytes_per_token));
    progress.update(rep + 1);
  }
  progress.finish();
  row.paired_roofline = median(fractions);
  row.paired_roofline_min = *std::min_element(fractions.begin(), fractions.end());
  row.paired_roofline_max = *std::max_element(fractions.begin(), fractions.end());
}

void measure_quality(const std::shared_ptr<Model>& base, const std::shared_ptr<Model>& model,
                     const std::string& text, const BenchFlags& f, Row& row) {
  namespace ev = edgelm::evaluation;
  const std::vector<int32_t> tokens = ev::tokenize_shared_text(*base, *model, text);
  ev::PerplexityOptions options;
  options.context = f.quality_context;
  options.max_chunks = f.quality_chunks;
  const ev::ComparisonResult r = ev::compare_models(base, model, tokens, options);
  row.has_quality = true;
  row.ppl = r.stats.model.value;
  row.ppl_uncertainty = r.stats.model.uncertainty;
  row.kld = r.stats.mean_kld;
  row.top1 = r.stats.top1_agreement;
}

std::string markdown_table(const std::vector<Row>& rows, bool quality) {
  std::ostringstream out;
  out << "| model | types | size MiB | bpw | threads | prefill tok/s | decode tok/s | bandwidth "
         "GB/s "
         "| roofline | peak RSS MiB |";
  if (quality) out << " PPL | KLD | top-1 |";
  out << "\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|";
  if (quality) out << "---:|---:|---:|";
  out << "\n";
  char buf[512];
  for (const Row& r : rows) {
    std::string types;
    for (const std::string& d : r.info.dtypes) types += (types.empty() ? "" : "+") + d;
    // Decode: median (slowest-fastest repetition); bandwidth: the readings
    // before and after the row (the roofline uses the higher).
    std::snprintf(buf, sizeof buf,
                  "| %s | %s | %.1f | %.2f | %d | %.1f | %.1f (%.1f-%.1f) | %.1f / %.1f | %.0f%%",
                  std::filesystem::path(r.info.path).filename().c_str(), types.c_str(),
                  r.info.file_bytes / 1048576.0, r.bits_per_weight, r.threads, r.prefill, r.decode,
                  r.decode_min, r.decode_max, r.bandwidth_before, r.bandwidth_after,
                  r.roofline * 100);
    out << buf;
    if (r.paired_roofline > 0) {  // --paired-bandwidth
      std::snprintf(buf, sizeof buf, " (paired %.0f%%: %.0f-%.0f%%)", r.paired_roofline * 100,
                    r.paired_roofline_min * 100, r.paired_roofline_max * 100);
      out << buf;
    }
    std::snprintf(buf, sizeof buf, " | %.0f |", r.rss);
    out << buf;
    if (quality) {
      if (r.has_quality) {
        std::snprintf(buf, sizeof buf, " %.3f ± %.3f | %.5f | %.1f%% |", r.ppl, r.ppl_uncertainty,
                      r.kld, r.top1 * 100);
      } else {
        std::snprintf(buf, sizeof buf, " | | |");
      }
      out << buf;
    }
    out << "\n";
  }
  return out.str();
}

nlohmann::json row_json(const Row& r) {
  nlohmann::json j = {{"model", r.info.path},
                      {"name", r.info.name},
                      {"format", r.info.format},
                      {"dtypes", r.info.dtypes},
                      {"interleaved_matrices", r.info.interleaved_matrices},
                      {"weight_prefetch", r.info.weight_prefetch},
                      {"file_bytes", r.info.file_bytes},
                      {"n_params", r.info.n_params},
                      {"bits_per_weight", r.bits_per_weight},
                      {"threads", r.threads},
                      {"load_seconds", r.load_seconds},
                      {"prefill_tokens_per_second", r.prefill},
                      {"decode_tokens_per_second", r.decode},
                      {"decode_tokens_per_second_min", r.decode_min},
                      {"decode_tokens_per_second_max", r.decode_max},
                      {"weight_bytes_per_token", r.info.weight_bytes_per_token},
                      {"kv_bytes_per_token", r.kv_bytes_per_token},
                      {"memory_bandwidth_gbs", r.bandwidth},
                      {"memory_bandwidth_before_gbs", r.bandwidth_before},
                      {"memory_bandwidth_after_gbs", r.bandwidth_after},
                      {"roofline_fraction", r.roofline},
                      {"peak_rss_mib", r.rss}};
  if (r.decode_per_product > 0) j["decode_per_product_tokens_per_second"] = r.decode_per_product;
  if (r.paired_roofline > 0) {
    j["paired_roofline_fraction"] = r.paired_roofline;
    j["paired_roofline_fraction_min"] = r.paired_roofline_min;
    j["paired_roofline_fraction_max"] = r.paired_roofline_max;
  }
  if (r.has_quality) {
    j["perplexity"] = r.ppl;
    j["perplexity_uncertainty"] = r.ppl_uncertainty;
    j["mean_kld"] = r.kld;
    j["top1_agreement"] = r.top1;
  }
  return j;
}

int bench_command(const BenchFlags& f) {
  std::vector<std::string> models = f.models;
  if (models.empty()) models.push_back(default_model_path());
  std::vector<int> thread_counts = f.threads;
  if (thread_counts.empty()) thread_counts.push_back(0);
  const bool quality = !f.quality_text.empty();
  if (quality != !f.base_model.empty()) {
    throw Error("bench: --quality-text and --base go together");
  }
  std::shared_ptr<Model> base;
  std::string text;
  if (quality) {
    base = Model::load(f.base_model, base_load_options());
    text = read_file(f.quality_text);
  }

  // A decode step must stream every weight once and the KV cache of all
  // earlier positions (keys and values of every layer): that is the roofline.
  const double kv_element_bytes = f.kv_type == "f32" ? 4.0 : f.kv_type == "q8_0" ? 34.0 / 32 : 2.0;
  const double mean_context = f.prompt_tokens + (f.decode_tokens + 1) / 2.0;

  // The roofline's denominator: read bandwidth with the row's thread count over
  // a working set of the row's bytes per token (a model that fits the
  // last-level cache is read from it, and so is the measurement), measured
  // right before and right after the row and the higher value kept. On a
  // shared machine the bandwidth available changes over a long run, and a
  // measurement slowed by another program would flatter the fraction.
  std::vector<Row> rows;
  for (const std::string& path : models) {
    LoadOptions load_options = base_load_options();
    load_options.chat_template_override = f.chat_template;
    const auto t0 = std::chrono::steady_clock::now();
    std::shared_ptr<Model> model = Model::load(path, load_options);
    const double load_seconds = seconds_since(t0);
    Row quality_row;
    if (quality) measure_quality(base, model, text, f, quality_row);
    const ModelInfo& m = model->info();
    const double kv_bytes_per_token =
        2.0 * m.n_layers * m.n_kv_heads * m.head_dim * kv_element_bytes * mean_context;
    const double bytes_per_token =
        static_cast<double>(m.weight_bytes_per_token) + kv_bytes_per_token;
    const auto working_set = static_cast<int64_t>(bytes_per_token);
    for (int threads : thread_counts) {
      const double bandwidth_before =
          measure_memory_bandwidth(effective_threads(threads), working_set);
      reset_peak_rss();
      Row row;
      row.info = m;
      row.threads = effective_threads(threads);
      row.load_seconds = load_seconds;
      row.bits_per_weight =
          row.info.n_params > 0 ? 8.0 * row.info.file_bytes / row.info.n_params : 0;
      row.kv_bytes_per_token = kv_bytes_per_token;
      measure_speed(model, f, row);
      row.rss = peak_rss_mib();  // before the bandwidth test's own buffer
      row.bandwidth_before = bandwidth_before;
      row.bandwidth_after = measure_memory_bandwidth(row.threads, working_set);
      row.bandwidth = std::max(row.bandwidth_before, row.bandwidth_after);
      row.roofline = row.decode / (row.bandwidth * 1e9 / bytes_per_token);
      if (f.paired_bandwidth) measure_paired(model, f, working_set, bytes_per_token, row);
      row.has_quality = quality_row.has_quality;
      row.ppl = quality_row.ppl;
      row.ppl_uncertainty = quality_row.ppl_uncertainty;
      row.kld = quality_row.kld;
      row.top1 = quality_row.top1;
      rows.push_back(row);
    }
  }

  if (rows.size() == 1) {
    const Row& r = rows[0];
    std::printf("model:              %s (%s)\n", r.info.path.c_str(), r.info.format.c_str());
    std::printf("kernels:            %s, %d threads, KV cache %s\n", active_kernel_isa().c_str(),
                r.threads, f.kv_type.c_str());
    std::printf("load time:          %.3f s\n", r.load_seconds);
    std::printf("prefill:            %.1f tok/s (%d-token prompt, median of %d)\n", r.prefill,
                f.prompt_tokens, f.repetitions);
    std::printf("decode:             %.1f tok/s (%d tokens, median of %d: %.1f-%.1f)\n", r.decode,
                f.decode_tokens, f.repetitions, r.decode_min, r.decode_max);
    if (r.decode_per_product > 0) {
      std::printf(
          "decode per product: %.1f tok/s (a dispatch per matrix product, alternating with the "
          "above: one dispatch per step is %.3fx)\n",
          r.decode_per_product, r.decode / r.decode_per_product);
    }
    std::printf("bytes per token:    %.1f MiB weights + %.2f MiB KV cache (mean context)\n",
                r.info.weight_bytes_per_token / 1048576.0, r.kv_bytes_per_token / 1048576.0);
    std::printf(
        "memory bandwidth:   %.1f GB/s (measured, %d threads, reading a %.1f MiB working set; "
        "%.1f before, %.1f after)\n",
        r.bandwidth, r.threads, (r.info.weight_bytes_per_token + r.kv_bytes_per_token) / 1048576.0,
        r.bandwidth_before, r.bandwidth_after);
    std::printf("decode roofline:    %.1f tok/s -> achieved %.0f%% of roofline\n",
                r.bandwidth * 1e9 / (r.info.weight_bytes_per_token + r.kv_bytes_per_token),
                r.roofline * 100);
    if (r.paired_roofline > 0) {
      std::printf(
          "paired roofline:    %.0f%% (median of %d more repetitions, each against a bandwidth "
          "reading right before it: %.0f-%.0f%%)\n",
          r.paired_roofline * 100, f.repetitions, r.paired_roofline_min * 100,
          r.paired_roofline_max * 100);
    }
    std::printf("peak RSS:           %.1f MiB\n", r.rss);
  }
  const std::string table = markdown_table(rows, quality);
  if (rows.size() > 1) std::printf("%s", table.c_str());
  if (!f.markdown_path.empty()) std::ofstream(f.markdown_path) << table;
  if (!f.json_path.empty()) {
    nlohmann::json j;
    j["isa"] = active_kernel_isa();
    j["kv_type"] = f.kv_type;
    j["prompt_tokens"] = f.prompt_tokens;
    j["decode_tokens"] = f.decode_tokens;
    j["rows"] = nlohmann::json::array();
    for (const Row& r : rows) j["rows"].push_back(row_json(r));
    std::ofstream out(f.json_path);
    out << j.dump(2) << "\n";
    if (!out) throw Error("bench: cannot write '" + f.json_path + "'");
  }
  return 0;
}

}  // namespace

void register_bench_command(CLI::App& app, std::vector<Command>& out) {
  auto flags = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "measure load, prefill and decode speed, memory, roofline (models x threads)");
  cmd->add_option("-m,--model", flags->models, "model(s) (repeatable; default: bundled model)");
  cmd->add_option("-t,--threads", flags->threads, "thread count(s), e.g. -t 1,2 (default: all)")
      ->delimiter(',')
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--chat-template", flags->chat_template, "override the chat template");
  cmd->add_option("-p,--prompt-tokens", flags->prompt_tokens, "prompt length")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-n,--decode-tokens", flags->decode_tokens, "tokens to decode")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  cmd->add_option("-r,--repetitions", flags->repetitions, "measured repetitions")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--kv-type", flags->kv_type, "KV cache type: f16, f32 or q8_0")
      ->capture_default_str();
  cmd->add_option("--json", flags->json_path,
                  "write the results as JSON (for tools/plot_bench.py)");
  cmd->add_option("--markdown", flags->markdown_path, "write the table as markdown");
  cmd->add_option("--quality-text", flags->quality_text,
                  "text for KLD / top-1 / PPL of each model against --base");
  cmd->add_option("--base", flags->base_model, "base model for --quality-text");
  cmd->add_option("--quality-ctx", flags->quality_context, "context per quality chunk")
      ->capture_default_str();
  cmd->add_option("--quality-chunks", flags->quality_chunks, "chunks of the quality text")
      ->capture_default_str();
  cmd->add_flag("--alternate-decode-paths", flags->alternate_decode_paths,
                "also decode with a thread-pool dispatch per matrix product (the earlier way), "
                "alternating repetitions with the default one dispatch per step");
  cmd->add_flag("--paired-bandwidth", flags->paired_bandwidth,
                "after each row, decode -r more times, each right after a bandwidth reading of "
                "its own, and report those repetitions' roofline fractions too (for machines "
                "whose bandwidth changes in phases)");
  out.push_back({cmd, [flags] { return bench_command(*flags); }});
}

}  // namespace edgelm::cli
