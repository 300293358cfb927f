// HTTP routes over cpp-httplib (Debian's 0.11 build: compiled library, so
// timeouts and the thread pool are set at run time, not by macros).
//
// Request flow: the handler reads and validates the body, tokenizes, and
// submits a Job to the Scheduler (429 when the queue is full). The response
// is a chunked content provider that waits on the Job, checks every 100 ms
// whether the client is still there, and cancels the Job if not, which frees
// its slot at the next token.
#include <httplib.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <thread>

#include "server/metrics.h"
#include "server/openai_api.h"
#include "server/prompt.h"
#include "server/scheduler.h"
#include "server/server.h"
#include "server/static_assets.h"
#include "util/error.h"

namespace edgelm::server {
namespace {

constexpr std::chrono::milliseconds kPollInterval{100};

double seconds_between(Clock::time_point from, Clock::time_point to) {
  if (from == Clock::time_point{} || to < from) return 0;
  return std::chrono::duration<double>(to - from).count();
}

// Constant-time comparison: the key must not leak through response timing.
bool same_secret(const std::string& given, const std::string& expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) {
    diff |= uint8_t(given[i] ^ expected[i % std::max<size_t>(1, expected.size())]);
  }
  return diff == 0;
}

std::string route_label(const std::string& path) {
  static const char* kRoutes[] = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                                  "/v1/models",           "/health",         "/metrics"};
  for (const char* route : kRoutes) {
    if (path == route) return route;
  }
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  if (find_static_asset(path)) return "static";
  return "other";
}

std::string model_id_from_path(const std::string& path) {
  std::string name = path;
  while (!name.empty() && name.back() == '/') name.pop_back();
  size_t slash = name.find_last_of('/');
  if (slash != std::string::npos) name = name.substr(slash + 1);
  for (const char* ext : {".gguf", ".bin", ".safetensors"}) {
    std::string e = ext;
    if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0) {
      name.resize(name.size() - e.size());
    }
  }
  return name.empty() ? "edgelm" : name;
}

}  // namespace

class HttpServerImpl {
 public:
  HttpServerImpl(std::shared_ptr<Model> model, const ServerOptions& options);
  int bind();
  void serve();
  void shutdown();

 private:
  using Reader = httplib::ContentReader;
  void setup_routes();
  void send_error(httplib::Response& res, const ApiError& error);
  // Reads the body (bounded by max_body_bytes) and checks the API key;
  // answers the request itself and returns false on failure.
  bool accept_post(const httplib::Request& req, httplib::Response& res, const Reader& reader,
                   std::string& body);
  bool authorized(const httplib::Request& req) const;
  void check_model(const std::string& requested) const;
  void handle_completion(const httplib::Request& req, httplib::Response& res, const Reader& reader,
                         bool chat);
  void handle_embeddings(const httplib::Request& req, httplib::Response& res, const Reader& reader);
  void submit(const std::shared_ptr<Job>& job);
  void execute(int slot, Job& job);
  // Waits for the job while watching the connection; false if the client left.
  bool wait_for_job(const std::shared_ptr<Job>& job, httplib::DataSink& sink);
  void record_generation(const Job& job, const GenerateResult& result);
  void release_job(const std::shared_ptr<Job>& job);

  std::shared_ptr<Model> model_;
  ServerOptions options_;
  std::string model_id_;
  std::string model_path_id_;
  int64_t created_ = 0;
  int context_length_ = 0;
  std::vector<std::unique_ptr<Session>> sessions_;
  Metrics metrics_;
  std::unique_ptr<Scheduler> scheduler_;
  httplib::Server http_;
  std::atomic<bool> shutting_down_{false};
};

HttpServerImpl::HttpServerImpl(std::shared_ptr<Model> model, const ServerOptions& options)
    : model_(std::move(model)), options_(options) {
  if (!model_) fail("serve: no model");
  if (options_.parallel < 1 || options_.parallel > 256) {
    fail("serve: --parallel must be between 1 and 256, got ", options_.parallel);
  }
  if (options_.queue_limit < 0) fail("serve: --queue-limit must be >= 0");
  model_path_id_ = model_id_from_path(model_->info().path);
  model_id_ = options_.model_alias.empty() ? model_path_id_ : options_.model_alias;
  created_ = int64_t(std::time(nullptr));
  for (int slot = 0; slot < options_.parallel; ++slot) {
    sessions_.push_back(std::make_unique<Session>(model_, options_.context_length));
  }
  context_length_ = sessions_[0]->context_length();
  scheduler_ = std::make_unique<Scheduler>(options_.parallel, options_.queue_limit,
                                           [this](int slot, Job& job) { execute(slot, job); });
  setup_routes();
}

void HttpServerImpl::send_error(httplib::Response& res, const ApiError& error) {
  res.status = error.status;
  res.set_content(dump_json(error_json(error)), "application/json");
  metrics_.count_error(error.type);
}

bool HttpServerImpl::authorized(const httplib::Request& req) const {
  if (options_.api_key.empty()) return true;
  const std::string header = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (header.size() <= prefix.size() || header.compare(0, prefix.size(), prefix) != 0) {
    return false;
  }
  return same_secret(header.substr(prefix.size()), options_.api_key);
}

ApiError unauthorized() {
  return ApiError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                  "invalid_request_error", "", "invalid_api_key");
}

bool HttpServerImpl::accept_post(const httplib::Request& req, httplib::Response& res,
                                 const Reader& reader, std::string& body) {
  const bool allowed = authorized(req);
  bool too_large = false;
  // Read (or, if unauthorized, drain) the body so the connection stays usable.
  bool ok = reader([&](const char* data, size_t size) {
    if (body.size() + size > options_.max_body_bytes) {
      too_large = true;
      return false;
    }
    if (allowed) body.append(data, size);
    return true;
  });
  if (too_large || res.status == 413) {
    res.set_header("Connection", "close");
    send_error(res, ApiError(413,
                             str_cat("the request body is larger than the limit of ",
                                     options_.max_body_bytes, " bytes"),
                             "invalid_request_error", "", "request_too_large"));
    return false;
  }
  if (!ok) {
    res.set_header("Connection", "close");
    send_error(res, ApiError(400, "could not read the request body"));
    return false;
  }
  if (!allowed) {
    send_error(res, unauthorized());
    return false;
  }
  res.status = -1;
  return true;
}

void HttpServerImpl::check_model(const std::string& requested) const {
  if (requested.empty() || requested == model_id_ || requested == model_path_id_ ||
      requested == model_->info().path) {
    return;
  }
  throw ApiError(
      404,
      str_cat("the model '", requested, "' does not exist; this server serves '", model_id_, "'"),
      "invalid_request_error", "model", "model_not_found");
}

void HttpServerImpl::submit(const std::shared_ptr<Job>& job) {
  switch (scheduler_->submit(job)) {
    case Scheduler::Admission::kAccepted:
      return;
    case Scheduler::Admission::kQueueFull:
      throw ApiError(429,
                     str_cat("the server is busy: ", scheduler_->slots(), " slots and ",
                             options_.queue_limit, " queued requests are in use; retry later"),
                     "rate_limit_error", "", "queue_full");
    case Scheduler::Admission::kShuttingDown:
      break;
  }
  throw ApiError(503, "the server is shutting down", "server_error", "", "shutting_down");
}

void HttpServerImpl::execute(int slot, Job& job) {
  Session& session = *sessions_[size_t(slot)];
  try {
    if (job.kind == JobKind::kEmbed) {
      std::vector<std::vector<float>> vectors;
      for (const auto& tokens : job.embed_inputs) {
        if (job.cancelled) break;
        vectors.push_back(session.embed(tokens));
      }
      job.finish_embeddings(std::move(vectors));
      return;
    }
    session.reset();
    const int delay_ms = options_.debug_token_delay_ms;
    GenerateResult result =
        session.generate(job.prompt, job.options, [&job, delay_ms](const TokenEvent& event) {
          if (job.cancelled) return false;
          job.append_text(event.text);
          if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
          return !job.cancelled.load();
        });
    record_generation(job, result);  // before finish(): the client may read /metrics next
    job.finish(std::move(result));
  } catch (const ApiError& e) {
    job.fail(e.status, e.what());
  } catch (const Error& e) {
    job.fail(400, e.what());  // edgelm::Error: something about this request
  }
}

bool HttpServerImpl::wait_for_job(const std::shared_ptr<Job>& job, httplib::DataSink& sink) {
  std::string ignored;
  while (!job->wait(kPollInterval, ignored)) {
    ignored.clear();
    if (!sink.is_writable()) {
      scheduler_->cancel(job);
      return false;
    }
  }
  return true;
}

void HttpServerImpl::release_job(const std::shared_ptr<Job>& job) {
  // Runs once per admitted request, when httplib drops the response: a job
  // whose response never completed (client gone, write failed) is cancelled.
  if (!job->finished()) scheduler_->cancel(job);
  if (job->cancelled) metrics_.count_cancelled();
}

void HttpServerImpl::record_generation(const Job& job, const GenerateResult& result) {
  const Clock::time_point now = Clock::now();
  double decode =
      result.decode_seconds > 0 ? result.decode_seconds : seconds_between(job.first_token_at, now);
  metrics_.observe_generation(result.prompt_tokens, result.completion_tokens,
                              seconds_between(job.submitted_at, job.first_token_at), decode,
                              seconds_between(job.submitted_at, now));
}

void HttpServerImpl::handle_completion(const httplib::Request& req, httplib::Response& res,
                                       const Reader& reader, bool chat) {
  std::string body;
  if (!accept_post(req, res, reader, body)) return;
  const json parsed = parse_json_body(body);
  CompletionRequest request = parse_completion_request(parsed, chat);
  check_model(request.model);
  if (request.json_object) {
    throw ApiError(400,
                   "response_format {\"type\": \"json_object\"} is not supported by this server "
                   "(no constrained decoding yet); ask for JSON in the prompt instead",
                   "invalid_request_error", "response_format", "unsupported_response_format");
  }

  auto job = std::make_shared<Job>();
  PromptTokens prompt = chat ? chat_prompt_tokens(*model_, request.messages)
                             : completion_prompt_tokens(*model_, request);
  job->prompt = std::move(prompt.tokens);
  const int n_prompt = int(job->prompt.size());
  const char* prompt_param = chat ? "messages" : "prompt";
  if (n_prompt == 0)
    throw ApiError(400, "the prompt is empty", "invalid_request_error", prompt_param);
  if (n_prompt >= context_length_) {
    throw ApiError(400,
                   str_cat("this model's context is ", context_length_,
                           " tokens, but the prompt has ", n_prompt, " tokens; shorten the prompt"),
                   "invalid_request_error", prompt_param, "context_length_exceeded");
  }
  int max_tokens = request.max_tokens > 0 ? request.max_tokens : options_.default_max_tokens;
  if (max_tokens > context_length_) {
    throw ApiError(
        400,
        str_cat("max_tokens is ", max_tokens, ", but this model's context is only ",
                context_length_, " tokens"),
        "invalid_request_error",
        parsed.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
        "invalid_value");
  }
  // Generation stops when the context is full (finish_reason "length").
  const int room = context_length_ - n_prompt;
  job->options = request.options;
  job->options.max_tokens = max_tokens > 0 ? std::min(max_tokens, room) : room;
  if (!request.seed_given) {
    thread_local std::mt19937_64 rng(std::random_device{}());
    job->options.sampling.seed = rng();
  }
  submit(job);

  ResponseHeader header{random_id(chat ? "chatcmpl-" : "cmpl-"), int64_t(std::time(nullptr)),
                        request.model.empty() ? model_id_ : request.model};
  const std::string echo_text = request.echo ? prompt.text : "";
  auto release = [this, job](bool) { release_job(job); };

  if (!request.stream) {
    res.set_chunked_content_provider(
        "application/json",
        [this, job, header, chat, echo_text](size_t, httplib::DataSink& sink) {
          if (!wait_for_job(job, sink)) return false;
          json out;
          if (job->error_status != 0) {
            out = error_json(
                ApiError(job->error_status, job->error_message,
                         job->error_status >= 500 ? "server_error" : "invalid_request_error"));
          } else {
            const GenerateResult& r = job->result;
            std::string reason = finish_reason_string(r.finish_reason);
            out = chat ? chat_completion_json(header, r.text, reason, r.prompt_tokens,
                                              r.completion_tokens)
                       : text_completion_json(header, echo_text + r.text, reason, r.prompt_tokens,
                                              r.completion_tokens);
          }
          std::string text = dump_json(out);
          sink.write(text.data(), text.size());
          sink.done();
          return true;
        },
        release);
    return;
  }

  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");  // proxies must not buffer the stream
  const bool include_usage = request.include_usage;
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, job, header, chat, echo_text, include_usage](size_t, httplib::DataSink& sink) {
        auto send = [&](const std::string& event) {
          if (!sink.is_writable() || !sink.write(event.data(), event.size())) {
            scheduler_->cancel(job);
            return false;
          }
          return true;
        };
        // The first chunk goes out at once: it tells the client the request was admitted.
        std::string first =
            chat ? sse_event(chat_chunk_json(header, "assistant", "", "", include_usage))
                 : sse_event(text_chunk_json(header, echo_text, "", include_usage));
        if (!send(first)) return false;
        std::string text;
        for (;;) {
          bool done = job->wait(kPollInterval, text);
          if (!text.empty()) {
            std::string event =
                chat ? sse_event(chat_chunk_json(header, "", text, "", include_usage))
                     : sse_event(text_chunk_json(header, text, "", include_usage));
            text.clear();
            if (!send(event)) return false;
          } else if (!done && !sink.is_writable()) {
            scheduler_->cancel(job);
            return false;
          }
          if (done) break;
        }
        std::string tail;
        if (job->error_status != 0) {
          tail = sse_event(error_json(
              ApiError(job->error_status, job->error_message,
                       job->error_status >= 500 ? "server_error" : "invalid_request_error")));
        } else {
          const GenerateResult& r = job->result;
          std::string reason = finish_reason_string(r.finish_reason);
          tail = chat ? sse_event(chat_chunk_json(header, "", "", reason, include_usage))
                      : sse_event(text_chunk_json(header, "", reason, include_usage));
          if (include_usage) {
            tail += sse_event(usage_chunk_json(header, chat, r.prompt_tokens, r.completion_tokens));
          }
        }
        tail += kSseDone;
        if (!sink.write(tail.data(), tail.size())) return false;
        sink.done();
        return true;
      },
      release);
}

void HttpServerImpl::handle_embeddings(const httplib::Request& req, httplib::Response& res,
                                       const Reader& reader) {
  std::string body;
  if (!accept_post(req, res, reader, body)) return;
  EmbeddingRequest request = parse_embedding_request(parse_json_body(body));
  check_model(request.model);
  auto job = std::make_shared<Job>();
  job->kind = JobKind::kEmbed;
  for (const std::string& text : request.texts) {
    job->embed_inputs.push_back(model_->tokenize(text, /*add_special=*/true));
  }
  for (auto& tokens : request.token_lists) job->embed_inputs.push_back(std::move(tokens));
  int n_tokens = 0;
  for (size_t i = 0; i < job->embed_inputs.size(); ++i) {
    const auto& tokens = job->embed_inputs[i];
    check_token_ids(*model_, tokens, "input");
    if (tokens.empty())
      throw ApiError(400, "an input has no tokens", "invalid_request_error", "input");
    if (int(tokens.size()) > context_length_) {
      throw ApiError(400,
                     str_cat("input ", i, " has ", tokens.size(),
                             " tokens, more than this model's context of ", context_length_),
                     "invalid_request_error", "input", "context_length_exceeded");
    }
    n_tokens += int(tokens.size());
  }
  submit(job);
  const std::string model = request.model.empty() ? model_id_ : request.model;
  const bool base64 = request.base64;
  res.set_chunked_content_provider(
      "application/json",
      [this, job, model, base64, n_tokens](size_t, httplib::DataSink& sink) {
        if (!wait_for_job(job, sink)) return false;
        json out;
        if (job->error_status != 0) {
          out = error_json(
              ApiError(job->error_status, job->error_message,
                       job->error_status >= 500 ? "server_error" : "invalid_request_error"));
        } else {
          metrics_.observe_embedding(n_tokens,
                                     seconds_between(job->submitted_at, job->finished_at));
          out = embeddings_json(model, job->embeddings, base64, n_tokens);
        }
        std::string text = dump_json(out);
        sink.write(text.data(), text.size());
        sink.done();
        return true;
      },
      [this, job](bool) { release_job(job); });
}

void HttpServerImpl::setup_routes() {
  // Bounded everything: slow or hostile clients time out instead of holding threads.
  http_.set_read_timeout(options_.read_timeout_s, 0);
  http_.set_write_timeout(options_.write_timeout_s, 0);
  http_.set_keep_alive_timeout(5);
  http_.set_keep_alive_max_count(100);
  http_.set_payload_max_length(options_.max_body_bytes);
  http_.set_tcp_nodelay(true);
  // One thread per connection: every slot and queue place, plus spares so
  // /health, /metrics and 429s are answered while all slots are busy.
  const size_t threads = size_t(options_.parallel + options_.queue_limit + 8);
  http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };

  // Wraps handlers so that ApiError/edgelm::Error become OpenAI error bodies.
  auto on_error = [this](httplib::Response& res, const std::function<void()>& body) {
    try {
      body();
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const Error& e) {
      send_error(res, ApiError(400, e.what()));
    } catch (const std::bad_alloc&) {
      send_error(res, ApiError(500, "out of memory", "server_error"));
    }
  };
  auto guarded = [on_error](std::function<void(const httplib::Request&, httplib::Response&)> h) {
    return httplib::Server::Handler(
        [on_error, h](const httplib::Request& req, httplib::Response& res) {
          on_error(res, [&] { h(req, res); });
        });
  };
  auto guarded_post =
      [on_error](
          std::function<void(const httplib::Request&, httplib::Response&, const Reader&)> h) {
        return httplib::Server::HandlerWithContentReader(
            [on_error, h](const httplib::Request& req, httplib::Response& res,
                          const Reader& reader) { on_error(res, [&] { h(req, res, reader); }); });
      };
  auto require_key = [this](const httplib::Request& req) {
    if (!authorized(req)) throw unauthorized();
  };

  http_.Post(
      "/v1/chat/completions",
      guarded_post([this](const httplib::Request& req, httplib::Response& res,
                          const Reader& reader) { handle_completion(req, res, reader, true); }));
  http_.Post("/v1/completions", guarded_post([this](const httplib::Request& req,
                                                    httplib::Response& res, const Reader& reader) {
               handle_completion(req, res, reader, false);
             }));
  http_.Post("/v1/embeddings",
             guarded_post([this](const httplib::Request& req, httplib::Response& res,
                                 const Reader& reader) { handle_embeddings(req, res, reader); }));
  http_.Get("/v1/models",
            guarded([this, require_key](const httplib::Request& req, httplib::Response& res) {
              require_key(req);
              res.set_content(dump_json(models_json(model_id_, created_, model_->info())),
                              "application/json");
            }));
  http_.Get("/v1/models/(.+)",
            guarded([this, require_key](const httplib::Request& req, httplib::Response& res) {
              require_key(req);
              check_model(req.matches[1].str());
              res.set_content(dump_json(model_json(model_id_, created_, model_->info())),
                              "application/json");
            }));
  http_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    json out = {{"status", shutting_down_ ? "shutting_down" : "ok"},
                {"slots_idle", scheduler_->slots() - scheduler_->busy_slots()},
                {"slots_busy", scheduler_->busy_slots()},
                {"queue_depth", scheduler_->queue_depth()}};
    if (shutting_down_) res.status = 503;
    res.set_content(dump_json(out), "application/json");
  });
  http_.Get(
      "/metrics", guarded([this, require_key](const httplib::Request& req, httplib::Response& res) {
        require_key(req);
        Gauges gauges{scheduler_->queue_depth(), scheduler_->busy_slots(), scheduler_->slots()};
        res.set_content(metrics_.render(gauges), "text/plain; version=0.0.4");
      }));
  // The chat page: static, holds no data, so it is served without the API key
  // (the page itself asks for the key and sends it with its API calls).
  http_.Get("/|/[A-Za-z0-9_.-]+\\.(html|js|css|svg)", [](const httplib::Request& req,
                                                         httplib::Response& res) {
    const StaticAsset* asset = find_static_asset(req.path);
    if (!asset) {
      res.status = 404;
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_content(reinterpret_cast<const char*>(asset->data), asset->size, asset->content_type);
  });

  if (!options_.cors_origin.empty()) {
    http_.Options(".*", [](const httplib::Request&, httplib::Response& res) {
      res.status = 204;
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
      res.set_header("Access-Control-Max-Age", "600");
    });
  }
  http_.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options_.cors_origin.empty()) return;
    if (options_.cors_origin == "*") {
      res.set_header("Access-Control-Allow-Origin", "*");
      return;
    }
    // A comma-separated list: echo the request's origin if it is listed.
    const std::string origin = req.get_header_value("Origin");
    std::string list = "," + options_.cors_origin + ",";
    list.erase(std::remove(list.begin(), list.end(), ' '), list.end());
    if (!origin.empty() && list.find("," + origin + ",") != std::string::npos) {
      res.set_header("Access-Control-Allow-Origin", origin);
    }
    res.set_header("Vary", "Origin");
  });

  // Errors httplib produces itself (unknown route, malformed HTTP, 413) get
  // the OpenAI error shape too.
  http_.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.content_provider_) return;
    std::string message = str_cat("HTTP error ", res.status);
    std::string code;
    if (res.status == 404) {
      message = str_cat("no route for ", req.method, " ", req.path);
      code = "not_found";
    } else if (res.status == 413) {
      message = str_cat("the request body is larger than the limit of ", options_.max_body_bytes,
                        " bytes");
      code = "request_too_large";
    }
    send_error(res,
               ApiError(res.status, message,
                        res.status >= 500 ? "server_error" : "invalid_request_error", "", code));
  });
  http_.set_exception_handler(
      [this](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
        std::string message = "internal error";
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          message = e.what();
        } catch (...) {
        }
        send_error(res, ApiError(500, message, "server_error"));
      });
  http_.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics_.count_request(route_label(req.path), res.status);
    if (options_.log_requests) {
      std::fprintf(stderr, "%s %s %s %d\n", req.remote_addr.c_str(), req.method.c_str(),
                   req.path.c_str(), res.status);
    }
  });
}

int HttpServerImpl::bind() {
  int port = options_.port;
  if (port == 0) {
    port = http_.bind_to_any_port(options_.host);
    if (port <= 0) fail("serve: cannot bind to ", options_.host, " (any port)");
  } else if (!http_.bind_to_port(options_.host, port)) {
    fail("serve: cannot bind to ", options_.host, ":", port, " (in use or not permitted)");
  }
  return port;
}

void HttpServerImpl::serve() {
  if (!shutting_down_) http_.listen_after_bind();
}

void HttpServerImpl::shutdown() {
  if (shutting_down_.exchange(true)) return;
  scheduler_->stop_accepting();
  http_.stop();  // no new connections; in-flight handlers keep running
  auto deadline = Clock::now() + std::chrono::seconds(std::max(0, options_.shutdown_timeout_s));
  if (!scheduler_->wait_idle(deadline)) {
    std::fprintf(stderr, "serve: cancelling requests still running after %d s\n",
                 options_.shutdown_timeout_s);
    scheduler_->cancel_all();
  }
}

HttpServer::HttpServer(std::shared_ptr<Model> model, const ServerOptions& options)
    : impl_(std::make_unique<HttpServerImpl>(std::move(model), options)) {}
HttpServer::~HttpServer() = default;
int HttpServer::bind() {
  return impl_->bind();
}
void HttpServer::serve() {
  impl_->serve();
}
void HttpServer::shutdown() {
  impl_->shutdown();
}

}  // namespace edgelm::server
