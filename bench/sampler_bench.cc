// Sampling one token from a vocabulary of logits: greedy (argmax) and the
// default top-k 40 / top-p / min-p chain, at SmolLM2's (49152) and Qwen2.5's
// (151936) vocabulary sizes. The sampler runs once per generated token on one
// thread while the others wait, so its time adds straight to decode's.
//
//   build/bin/sampler_bench
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "generation/sampler.h"

namespace edgelm {
namespace {

void run_sampler(benchmark::State& state, bool greedy) {
  const int vocab = static_cast<int>(state.range(0));
  std::vector<float> logits(static_cast<size_t>(vocab)), work(logits.size());
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (float& v : logits) v = dist(rng);
  SamplingParams params = greedy ? SamplingParams::greedy() : SamplingParams{};
  Sampler sampler(params, vocab);
  const std::vector<int32_t> history;
  for (auto _ : state) {
    state.PauseTiming();
    work = logits;
    state.ResumeTiming();
    benchmark::DoNotOptimize(sampler.sample(work.data(), history));
  }
}

BENCHMARK_CAPTURE(run_sampler, greedy, true)
    ->Arg(49152)
    ->Arg(151936)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run_sampler, top_k_40, false)
    ->Arg(49152)
    ->Arg(151936)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace edgelm

BENCHMARK_MAIN();
