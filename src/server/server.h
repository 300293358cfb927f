// `edgelm serve`: an OpenAI-compatible HTTP server over one shared Model.
//
// Routes: POST /v1/chat/completions, /v1/completions, /v1/embeddings;
// GET /v1/models, /health, /metrics, and the chat page at /.
// Up to `parallel` requests generate at once (one Session each); up to
// `queue_limit` more wait; anything beyond is answered 429.
#pragma once

#include <functional>
#include <memory>
#include <string>

namespace edgelm {
class Model;
}

namespace edgelm::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (the chosen one is printed)
  // Empty: no authentication. run_server falls back to $EDGELM_API_KEY.
  std::string api_key;
  int parallel = 2;                 // generation slots, each with its own Session (KV cache)
  int queue_limit = 16;             // requests that may wait for a slot; more get 429
  size_t max_body_bytes = 1 << 20;  // larger request bodies get 413
  std::string cors_origin;          // empty: no CORS headers; "*" or an origin
  int context_length = 0;           // per slot; 0: the model's maximum
  std::string model_alias;          // id in /v1/models; empty: the model file's name
  int default_max_tokens = -1;      // when a request gives none; < 0: until the context is full
  int read_timeout_s = 15;          // per socket read/write: slow clients cannot hold threads
  int write_timeout_s = 15;
  int shutdown_timeout_s = 10;  // on SIGINT/SIGTERM, in-flight requests are cancelled after this
  bool log_requests = true;     // one line per request on stderr
  // Testing only: sleep this long after each token, so tests can disconnect,
  // press stop or shut down in the middle of a generation from a tiny model.
  int debug_token_delay_ms = 0;
};

// Serves until SIGINT/SIGTERM; returns the process exit code (0 on a clean shutdown).
int run_server(std::shared_ptr<edgelm::Model> model, const ServerOptions& options);

// The server without signal handling, for tests and embedding.
class HttpServerImpl;
class HttpServer {
 public:
  HttpServer(std::shared_ptr<edgelm::Model> model, const ServerOptions& options);
  ~HttpServer();
  // Binds (port 0 picks a free one) and returns the bound port; throws on failure.
  int bind();
  // Serves on the calling thread until shutdown() completes.
  void serve();
  // Stops accepting, lets in-flight requests finish for up to
  // options.shutdown_timeout_s, then cancels them. Safe from any thread.
  void shutdown();

 private:
  std::unique_ptr<HttpServerImpl> impl_;
};

}  // namespace edgelm::server
