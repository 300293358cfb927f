// `edgelm bench`: load time, prefill and decode speed, peak memory, and decode
// speed as a fraction of the memory-bandwidth roofline, measured in one run.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "cli/commands.h"

namespace edgelm::cli {
namespace {

struct BenchFlags {
  ModelOptions model;
  int prompt_tokens = 128;
  int decode_tokens = 64;
  int repetitions = 3;
  std::string json_path;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double peak_rss_mib() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // ru_maxrss is in KiB on Linux
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int bench_command(const BenchFlags& f) {
  const auto t_load = std::chrono::steady_clock::now();
  auto model = load_model_from_options(f.model);
  const double load_seconds = seconds_since(t_load);
  const ModelInfo& info = model->info();
  const int threads = f.model.threads;

  // Random but fixed prompt tokens (avoid special tokens at the start of the vocab).
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> pick(std::min(100, info.vocab_size - 1), info.vocab_size - 1);
  std::vector<int32_t> prompt(f.prompt_tokens);
  for (int32_t& t : prompt) t = pick(rng);
  const int context = std::min(info.context_length, f.prompt_tokens + f.decode_tokens + 1);
  if (f.prompt_tokens + f.decode_tokens + 1 > info.context_length) {
    throw Error("bench: prompt + decode tokens exceed the model context of " +
                std::to_string(info.context_length));
  }

  Session session(model, context);
  std::vector<double> prefill_tps, decode_tps;
  GenerateOptions options;
  options.max_tokens = f.decode_tokens;
  options.ignore_eos = true;
  options.sampling = SamplingParams::greedy();
  ProgressBar progress("bench", f.repetitions + 1);
  for (int rep = 0; rep <= f.repetitions; ++rep) {  // rep 0 warms caches and pages
    session.reset();
    const GenerateResult r = session.generate(prompt, options);
    if (rep > 0) {
      prefill_tps.push_back(r.prompt_tokens / r.prompt_seconds);
      // The first sampled token comes from the prefill logits; decode steps = tokens - 1.
      decode_tps.push_back((r.completion_tokens - 1) / r.decode_seconds);
    }
    progress.update(rep + 1);
  }
  progress.finish();

  const double rss = peak_rss_mib();  // before the bandwidth test's own buffer
  const double bandwidth = measure_memory_bandwidth(threads);
  const double prefill = median(prefill_tps);
  const double decode = median(decode_tps);
  const double roofline_tps = bandwidth * 1e9 / static_cast<double>(info.weight_bytes_per_token);
  const double roofline_fraction = decode / roofline_tps;

  std::printf("model:              %s (%s, %s)\n", info.path.c_str(), info.format.c_str(),
              info.dtypes.empty() ? "?" : info.dtypes.front().c_str());
  std::printf("kernels:            %s, %d threads\n", active_kernel_isa().c_str(),
              threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()));
  std::printf("load time:          %.3f s\n", load_seconds);
  std::printf("prefill:            %.1f tok/s (%d-token prompt, median of %d)\n", prefill,
              f.prompt_tokens, f.repetitions);
  std::printf("decode:             %.1f tok/s (%d tokens, median of %d)\n", decode, f.decode_tokens,
              f.repetitions);
  std::printf("weights per token:  %.1f MiB\n", info.weight_bytes_per_token / 1048576.0);
  std::printf("memory bandwidth:   %.1f GB/s (measured)\n", bandwidth);
  std::printf("decode roofline:    %.1f tok/s -> achieved %.0f%% of roofline\n", roofline_tps,
              roofline_fraction * 100);
  std::printf("peak RSS:           %.1f MiB\n", rss);

  if (!f.json_path.empty()) {
    nlohmann::json j = {{"model", info.path},
                        {"format", info.format},
                        {"dtypes", info.dtypes},
                        {"isa", active_kernel_isa()},
                        {"threads", threads},
                        {"load_seconds", load_seconds},
                        {"prompt_tokens", f.prompt_tokens},
                        {"prefill_tokens_per_second", prefill},
                        {"decode_tokens", f.decode_tokens},
                        {"decode_tokens_per_second", decode},
                        {"weight_bytes_per_token", info.weight_bytes_per_token},
                        {"memory_bandwidth_gbs", bandwidth},
                        {"roofline_fraction", roofline_fraction},
                        {"peak_rss_mib", rss}};
    std::ofstream(f.json_path) << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace

void register_bench_command(CLI::App& app, std::vector<Command>& out) {
  auto flags = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand("bench", "measure load, prefill and decode speed and memory");
  add_model_options(cmd, flags->model);
  cmd->add_option("-p,--prompt-tokens", flags->prompt_tokens, "prompt length")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-n,--decode-tokens", flags->decode_tokens, "tokens to decode")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  cmd->add_option("-r,--repetitions", flags->repetitions, "measured repetitions")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--json", flags->json_path, "also write the results as JSON to this file");
  out.push_back({cmd, [flags] { return bench_command(*flags); }});
}

}  // namespace edgelm::cli
