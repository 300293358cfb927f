// Sub-commands of the edgelm CLI. Each registers its flags on the CLI11 app and
// runs through the public API only.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "edgelm/edgelm.h"

namespace edgelm::cli {

struct ModelOptions {
  std::string path;
  int threads = 0;
  std::string chat_template;
};

struct Command {
  CLI::App* app;             // the sub-command, with its flags
  std::function<int()> run;  // runs it after parsing; returns the exit code
};

std::string default_model_path();
// LoadOptions with the main app's --no-interleave applied (every command that loads a model).
LoadOptions base_load_options();
void set_interleave_weights(bool on);
void add_model_options(CLI::App* cmd, ModelOptions& m);
std::shared_ptr<Model> load_model_from_options(const ModelOptions& m);

// Adds every sub-command to `app`.
std::vector<Command> register_commands(CLI::App& app);
// Each group of commands lives in its own file.
void register_generation_commands(CLI::App& app, std::vector<Command>& out);  // run, chat
void register_model_commands(CLI::App& app, std::vector<Command>& out);       // info, tokenize
void register_bench_command(CLI::App& app, std::vector<Command>& out);
void register_serve_command(CLI::App& app, std::vector<Command>& out);
void register_eval_commands(CLI::App& app, std::vector<Command>& out);  // perplexity
void register_compress_commands(CLI::App&, std::vector<Command>&);      // quantize, imatrix

// "1.50 MiB": sizes for people (binary units).
std::string human_bytes(double bytes);

// One line of progress on stderr: "label [=====>    ] 42% 12.3 it/s ETA 5s".
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total);
  // `note` (e.g. a running metric) is printed after the ETA.
  void update(int64_t done, const std::string& note = {});
  void finish();

 private:
  std::string label_;
  int64_t total_;
  double start_;
  double last_draw_ = -1;
  int64_t last_done_ = -1;
};

}  // namespace edgelm::cli
