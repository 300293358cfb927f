// `edgelm serve` entry points: flag parsing and the signal-driven main loop.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "edgelm/edgelm.h"
#include "server/server.h"
#include "util/error.h"

namespace edgelm::server {
namespace {

int64_t parse_int(const std::string& flag, const std::string& value, int64_t lo, int64_t hi) {
  size_t used = 0;
  long long number = 0;
  try {
    number = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size())
    fail("serve: ", flag, " expects an integer, got '", value, "'");
  if (number < lo || number > hi) {
    fail("serve: ", flag, " must be between ", lo, " and ", hi, ", got ", number);
  }
  return number;
}

// Self-pipe: the handler only writes a byte; a normal thread does the work.
int g_signal_pipe[2] = {-1, -1};
volatile sig_atomic_t g_signals_seen = 0;

extern "C" void on_stop_signal(int) {
  g_signals_seen = g_signals_seen + 1;
  if (g_signals_seen >= 2) _exit(130);  // a second Ctrl-C: stop waiting
  const char byte = 1;
  ssize_t ignored = write(g_signal_pipe[1], &byte, 1);
  (void)ignored;
}

}  // namespace

std::string server_usage() {
  return "usage: edgelm serve -m MODEL [options]\n"
         "  -m, --model PATH          model: HF directory, .gguf or llama2.c .bin\n"
         "  --host ADDR               address to listen on (default 127.0.0.1)\n"
         "  --port N                  port (default 8080; 0 picks a free one)\n"
         "  --api-key KEY             require 'Authorization: Bearer KEY' (default: "
         "$EDGELM_API_KEY)\n"
         "  -np, --parallel N         requests generating at once, one KV cache each (default 2)\n"
         "  --queue-limit N           requests that may wait for a slot; more get 429 (default "
         "16)\n"
         "  -c, --ctx-size N          context length per slot (default: the model's)\n"
         "  --max-tokens N            default max_tokens when a request sets none (default: fill "
         "the context)\n"
         "  --max-body-bytes N        largest accepted request body (default 1048576)\n"
         "  --cors-origin ORIGIN      send CORS headers for ORIGIN ('*' or a comma list; default "
         "off)\n"
         "  --alias NAME              model id reported by /v1/models (default: the file name)\n"
         "  --timeout S               socket read/write timeout in seconds (default 15)\n"
         "  --shutdown-timeout S      on SIGINT/SIGTERM, cancel requests still running after S "
         "(default 10)\n"
         "  --quiet                   no per-request log lines\n"
         "  --debug-token-delay-ms N  testing only: sleep N ms after each generated token\n";
}

bool parse_server_flags(int argc, char** argv, ServerOptions& options, std::string& model_path) {
  constexpr int64_t kMaxInt = 1 << 30;
  for (int i = 0; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail("serve: ", flag, " needs a value");
      return argv[++i];
    };
    if (flag == "-h" || flag == "--help") {
      std::fputs(server_usage().c_str(), stdout);
      return false;
    } else if (flag == "-m" || flag == "--model") {
      model_path = value();
    } else if (flag == "--host") {
      options.host = value();
    } else if (flag == "--port") {
      options.port = int(parse_int(flag, value(), 0, 65535));
    } else if (flag == "--api-key") {
      options.api_key = value();
    } else if (flag == "-np" || flag == "--parallel") {
      options.parallel = int(parse_int(flag, value(), 1, 256));
    } else if (flag == "--queue-limit") {
      options.queue_limit = int(parse_int(flag, value(), 0, 100000));
    } else if (flag == "-c" || flag == "--ctx-size" || flag == "--context-length") {
      options.context_length = int(parse_int(flag, value(), 0, kMaxInt));
    } else if (flag == "--max-tokens") {
      options.default_max_tokens = int(parse_int(flag, value(), -1, kMaxInt));
    } else if (flag == "--max-body-bytes") {
      options.max_body_bytes = size_t(parse_int(flag, value(), 1024, int64_t(1) << 32));
    } else if (flag == "--cors-origin") {
      options.cors_origin = value();
    } else if (flag == "--alias") {
      options.model_alias = value();
    } else if (flag == "--timeout") {
      options.read_timeout_s = options.write_timeout_s = int(parse_int(flag, value(), 1, 3600));
    } else if (flag == "--shutdown-timeout") {
      options.shutdown_timeout_s = int(parse_int(flag, value(), 0, 3600));
    } else if (flag == "--debug-token-delay-ms") {
      options.debug_token_delay_ms = int(parse_int(flag, value(), 0, 10000));
    } else if (flag == "--quiet") {
      options.log_requests = false;
    } else {
      fail("serve: unknown flag '", flag, "' (see edgelm serve --help)");
    }
  }
  if (model_path.empty()) fail("serve: -m MODEL is required (see edgelm serve --help)");
  return true;
}

int run_server(std::shared_ptr<Model> model, const ServerOptions& given_options) {
  ServerOptions options = given_options;
  if (options.api_key.empty()) {
    if (const char* key = std::getenv("EDGELM_API_KEY")) options.api_key = key;
  }
  HttpServer server(std::move(model), options);
  const int port = server.bind();

  // Writes to closed sockets must fail with EPIPE, not kill the process.
  signal(SIGPIPE, SIG_IGN);
  if (pipe(g_signal_pipe) != 0) fail("serve: pipe() failed");
  fcntl(g_signal_pipe[0], F_SETFD, FD_CLOEXEC);
  fcntl(g_signal_pipe[1], F_SETFD, FD_CLOEXEC);
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  struct sigaction old_int {
  }, old_term{};
  sigaction(SIGINT, &action, &old_int);
  sigaction(SIGTERM, &action, &old_term);

  std::thread watcher([&server] {
    char byte = 0;
    while (read(g_signal_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    if (byte == 1) {
      std::fprintf(stderr, "serve: shutting down\n");
      server.shutdown();
    }
  });

  std::printf("edgelm server listening on http://%s:%d\n", options.host.c_str(), port);
  std::fflush(stdout);
  server.serve();

  const char wake = 0;  // serve() ended on its own: release the watcher
  ssize_t ignored = write(g_signal_pipe[1], &wake, 1);
  (void)ignored;
  watcher.join();
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  close(g_signal_pipe[0]);
  close(g_signal_pipe[1]);
  std::fprintf(stderr, "serve: stopped\n");
  return 0;
}

}  // namespace edgelm::server
