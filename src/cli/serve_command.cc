// `edgelm serve`: the OpenAI-compatible HTTP server (src/server) on one model.
#include "cli/commands.h"
#include "server/server.h"

namespace edgelm::cli {

void register_serve_command(CLI::App& app, std::vector<Command>& out) {
  struct Flags {
    ModelOptions model;
    server::ServerOptions server;
  };
  auto f = std::make_shared<Flags>();
  server::ServerOptions& s = f->server;
  CLI::App* cmd = app.add_subcommand(
      "serve", "OpenAI-compatible HTTP server (/v1/chat/completions, ...) with a chat page at /");
  add_model_options(cmd, f->model);
  cmd->add_option("--host", s.host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", s.port, "port (0: any free port)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", s.api_key, "require this bearer key (default: $EDGELM_API_KEY)");
  cmd->add_option("--parallel", s.parallel, "requests generating at once (one KV cache each)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  cmd->add_option("--queue-limit", s.queue_limit, "requests that may wait; more get 429")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  cmd->add_option("-c,--ctx-size", s.context_length, "context per slot (0: the model's)")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--max-tokens", s.default_max_tokens,
                  "default max_tokens when a request gives none (-1: until the context is full)");
  cmd->add_option("--max-body-bytes", s.max_body_bytes, "larger request bodies get 413")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30));
  cmd->add_option("--cors-origin", s.cors_origin, "send CORS headers for this origin (or *)");
  cmd->add_option("--alias", s.model_alias, "model id reported by /v1/models");
  cmd->add_option_function<int>(
         "--timeout", [&s](int t) { s.read_timeout_s = s.write_timeout_s = t; },
         "socket read/write timeout in seconds (default 15)")
      ->check(CLI::Range(1, 3600));
  cmd->add_option("--shutdown-timeout", s.shutdown_timeout_s,
                  "seconds in-flight requests may finish after SIGINT/SIGTERM")
      ->capture_default_str()
      ->check(CLI::Range(0, 3600));
  cmd->add_flag(
      "--quiet", [&s](int64_t) { s.log_requests = false; }, "no per-request log lines");
  cmd->add_option("--debug-token-delay-ms", s.debug_token_delay_ms,
                  "testing only: sleep after each generated token")
      ->check(CLI::Range(0, 10000));
  out.push_back(
      {cmd, [f] { return server::run_server(load_model_from_options(f->model), f->server); }});
}

}  // namespace edgelm::cli
