// edgelm command line: run, chat, info, tokenize, bench (and more from other layers).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include "cli/commands.h"
#include "edgelm/edgelm.h"

namespace edgelm::cli {

std::string default_model_path() {
  if (const char* env = std::getenv("EDGELM_MODEL"); env != nullptr && *env != '\0') return env;
  namespace fs = std::filesystem;
  // Next to an installed binary (bin/../models) or in the source tree.
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  const fs::path candidates[] = {
      exe.parent_path().parent_path() / "models/stories260K/stories260K.bin",
      fs::path(EDGELM_SOURCE_DIR) / "models/stories260K/stories260K.bin",
  };
  for (const fs::path& p : candidates) {
    if (fs::exists(p)) return p.string();
  }
  return candidates[1].string();
}

void add_model_options(CLI::App* cmd, ModelOptions& m) {
  cmd->add_option("-m,--model", m.path,
                  "model: HF directory, .gguf or llama2.c .bin (default: bundled stories260K)");
  cmd->add_option("-t,--threads", m.threads, "threads (default: all cores)")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--chat-template", m.chat_template,
                  "override the chat template: chatml, llama2, llama3, zephyr, mistral, none");
}

namespace {
bool g_interleave_weights = true;
}  // namespace

LoadOptions base_load_options() {
  LoadOptions options;
  options.interleave_weights = g_interleave_weights;
  return options;
}

void set_interleave_weights(bool on) {
  g_interleave_weights = on;
}

std::shared_ptr<Model> load_model_from_options(const ModelOptions& m) {
  LoadOptions options = base_load_options();
  options.threads = m.threads;
  options.chat_template_override = m.chat_template;
  return Model::load(m.path.empty() ? default_model_path() : m.path, options);
}

std::vector<Command> register_commands(CLI::App& app) {
  std::vector<Command> commands;
  register_generation_commands(app, commands);
  register_model_commands(app, commands);
  register_bench_command(app, commands);
  register_serve_command(app, commands);
  register_eval_commands(app, commands);
  register_compress_commands(app, commands);
  return commands;
}

}  // namespace edgelm::cli

int main(int argc, char** argv) {
  using namespace edgelm::cli;
  CLI::App app{"edgelm: small language models on the edge, fast and private"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "edgelm 0.1.0");
  // Options of the main app also work after the subcommand name.
  app.fallthrough();
  std::string isa;
  app.add_option("--isa", isa,
                 "kernels' instruction set (default: the best this CPU has): scalar, avx2, "
                 "avx512, neon, neon-dotprod, neon-i8mm");
  bool no_interleave = false;
  app.add_flag("--no-interleave", no_interleave,
               "keep Q4_0/Q5_0 matrices row-major (by default they are re-laid at load where the "
               "kernels decode the interleaved layout faster: AVX-512 on Intel)");
  std::vector<Command> commands = register_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (!isa.empty()) edgelm::set_kernel_isa(isa);
    set_interleave_weights(!no_interleave);
    for (Command& c : commands) {
      if (c.app->parsed()) return c.run();
    }
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << "\nedgelm: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
