// `edgelm run` and `edgelm chat`.
#include <cstdio>
#include <iostream>

#include "cli/commands.h"

namespace edgelm::cli {
namespace {

struct SamplingFlags {
  int max_tokens = 256;
  float temperature = 0.8f;
  int top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int repeat_last_n = 64;
  uint64_t seed = 0xED6E11;
  std::vector<std::string> stop;
  int context = 0;
  std::string kv_type = "f16";
  bool ignore_eos = false;
  bool truncate_prompt = false;
  bool stats = false;
  CLI::App* command = nullptr;  // to tell flags given from defaults
};

void add_sampling_flags(CLI::App* cmd, SamplingFlags& f) {
  f.command = cmd;
  cmd->add_option("-n,--max-tokens", f.max_tokens, "tokens to generate (-1: until EOS/context)")
      ->capture_default_str();
  cmd->add_option("--temp,--temperature", f.temperature, "temperature (0: greedy)")
      ->capture_default_str()
      ->check(CLI::Range(0.0f, 100.0f));
  cmd->add_option("--top-k", f.top_k, "top-k (0: off)")->capture_default_str();
  cmd->add_option("--top-p", f.top_p, "top-p (1: off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--min-p", f.min_p, "min-p (0: off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--repeat-penalty", f.repeat_penalty, "repetition penalty (1: off)")
      ->capture_default_str()
      ->check(CLI::Range(0.01f, 100.0f));
  cmd->add_option("--frequency-penalty", f.frequency_penalty)->capture_default_str();
  cmd->add_option("--presence-penalty", f.presence_penalty)->capture_default_str();
  cmd->add_option("--repeat-last-n", f.repeat_last_n, "penalty window (-1: whole context)")
      ->capture_default_str();
  cmd->add_option("-s,--seed", f.seed, "random seed (same seed, same output)")
      ->capture_default_str();
  cmd->add_option("--stop", f.stop, "stop string (repeatable)");
  cmd->add_option("-c,--ctx", f.context, "context length (default: the model's)")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--kv-type", f.kv_type, "KV cache type: f16, f32 or q8_0")->capture_default_str();
  cmd->add_flag("--ignore-eos", f.ignore_eos, "keep generating after end-of-text tokens");
  cmd->add_flag("--truncate-prompt", f.truncate_prompt,
                "keep the end of a prompt longer than the context (reported) instead of failing");
  cmd->add_flag("--stats", f.stats, "print timing statistics to stderr");
}

// Flags given on the command line win; otherwise the checkpoint's
// generation_config.json defaults (ModelInfo::default_sampling) apply.
SessionOptions session_options(const SamplingFlags& f) {
  SessionOptions o;
  o.context_length = f.context;
  o.kv_type = f.kv_type;
  return o;
}

GenerateOptions to_options(const SamplingFlags& f, const Model& model) {
  GenerateOptions o;
  o.max_tokens = f.max_tokens;
  o.stop = f.stop;
  o.ignore_eos = f.ignore_eos;
  o.truncate_prompt = f.truncate_prompt;
  SamplingParams& s = o.sampling;
  s = model.info().default_sampling;
  auto given = [&](const char* flag) { return f.command->count(flag) > 0; };
  if (given("--temp")) s.temperature = f.temperature;
  if (given("--top-k")) s.top_k = f.top_k;
  if (given("--top-p")) s.top_p = f.top_p;
  if (given("--min-p")) s.min_p = f.min_p;
  if (given("--repeat-penalty")) s.repetition_penalty = f.repeat_penalty;
  s.frequency_penalty = f.frequency_penalty;
  s.presence_penalty = f.presence_penalty;
  s.penalty_last_n = f.repeat_last_n;
  s.seed = f.seed;
  return o;
}

void print_stats(const GenerateResult& r) {
  std::fprintf(stderr,
               "\n[prompt: %d tokens in %.3f s (%.1f tok/s); generated: %d tokens in %.3f s "
               "(%.1f tok/s); finish: %s]\n",
               r.prompt_tokens, r.prompt_seconds,
               r.prompt_seconds > 0 ? r.prompt_tokens / r.prompt_seconds : 0.0, r.completion_tokens,
               r.decode_seconds,
               r.decode_seconds > 0 ? r.completion_tokens / r.decode_seconds : 0.0,
               finish_reason_name(r.finish_reason));
}

bool stream_to_stdout(const TokenEvent& ev) {
  std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
  std::fflush(stdout);
  return true;
}

struct RunFlags {
  ModelOptions model;
  SamplingFlags sampling;
  std::string prompt;
  bool no_bos = false;
  bool raw = false;
};

int run_command(const RunFlags& f) {
  auto model = load_model_from_options(f.model);
  Session session(model, session_options(f.sampling));
  const std::vector<int32_t> prompt = model->tokenize(f.prompt, !f.no_bos, f.raw);
  // The prompt is echoed once generation has started, so a rejected prompt shows only the error.
  bool echoed = false;
  auto echo_prompt = [&] {
    if (!echoed) std::fwrite(f.prompt.data(), 1, f.prompt.size(), stdout);
    echoed = true;
  };
  const GenerateResult r =
      session.generate(prompt, to_options(f.sampling, *model), [&](const TokenEvent& ev) {
        echo_prompt();
        return stream_to_stdout(ev);
      });
  echo_prompt();
  std::printf("\n");
  if (r.prompt_truncated_tokens > 0) {
    std::fprintf(stderr, "[prompt truncated: dropped its first %d tokens to fit the context]\n",
                 r.prompt_truncated_tokens);
  }
  if (f.sampling.stats) print_stats(r);
  return 0;
}

struct ChatFlags {
  ModelOptions model;
  SamplingFlags sampling;
  std::string system;
};

int chat_command(const ChatFlags& f) {
  auto model = load_model_from_options(f.model);
  Session session(model, session_options(f.sampling));
  std::vector<ChatMessage> history;
  if (!f.system.empty()) history.push_back({"system", f.system});
  const GenerateOptions options = to_options(f.sampling, *model);
  std::fprintf(stderr,
               "edgelm chat: %s (%s template). /reset clears the history, /exit or "
               "Ctrl-D quits.\n",
               model->info().name.c_str(), model->info().chat_template.c_str());
  std::string line;
  while (true) {
    std::fprintf(stderr, "\n> ");
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      history.resize(f.system.empty() ? 0 : 1);
      session.reset();
      continue;
    }
    if (line.empty()) continue;
    history.push_back({"user", line});
    // Re-tokenize the whole conversation; the unchanged prefix stays in the cache.
    const std::vector<int32_t> all =
        model->tokenize(model->apply_chat_template(history, true), true, true);
    const std::vector<int32_t>& cached = session.tokens();
    size_t common = 0;
    while (common < cached.size() && common < all.size() && cached[common] == all[common]) {
      ++common;
    }
    if (common == all.size()) --common;  // keep at least one token to evaluate
    session.rewind(static_cast<int>(common));
    const std::vector<int32_t> rest(all.begin() + common, all.end());
    const GenerateResult r = session.generate(rest, options, stream_to_stdout);
    std::printf("\n");
    history.push_back({"assistant", r.text});
    if (f.sampling.stats) print_stats(r);
  }
  return 0;
}

}  // namespace

void register_generation_commands(CLI::App& app, std::vector<Command>& out) {
  auto run_flags = std::make_shared<RunFlags>();
  CLI::App* run = app.add_subcommand("run", "generate a continuation of a prompt, streamed");
  add_model_options(run, run_flags->model);
  add_sampling_flags(run, run_flags->sampling);
  run->add_option("-p,--prompt", run_flags->prompt, "prompt text")->required();
  run->add_flag("--no-bos", run_flags->no_bos, "do not add the BOS token");
  run->add_flag("--special", run_flags->raw, "parse special tokens written in the prompt");
  out.push_back({run, [run_flags] { return run_command(*run_flags); }});

  auto chat_flags = std::make_shared<ChatFlags>();
  CLI::App* chat = app.add_subcommand("chat", "interactive chat with history");
  add_model_options(chat, chat_flags->model);
  add_sampling_flags(chat, chat_flags->sampling);
  chat->add_option("--system", chat_flags->system, "system prompt");
  out.push_back({chat, [chat_flags] { return chat_command(*chat_flags); }});
}

}  // namespace edgelm::cli
