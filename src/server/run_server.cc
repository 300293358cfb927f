// `edgelm serve` entry point: the signal-driven main loop (flags are parsed by the CLI).
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
