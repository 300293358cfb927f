// In-process HTTP tests: HttpServer on a free loopback port with the bundled
// stories260K model, driven by httplib's client.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <thread>

#include "edgelm/edgelm.h"
#include "server/openai_api.h"
#include "server/server.h"

namespace edgelm::server {
namespace {

const char* kModel = EDGELM_SOURCE_DIR "/models/stories260K/stories260K.bin";

class HttpServerTest : public ::testing::Test {
 protected:
  void start(ServerOptions options) {
    options.port = 0;
    options.log_requests = false;
    server_ = std::make_unique<HttpServer>(Model::load(kModel), options);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->serve(); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
    client_->set_read_timeout(30, 0);
  }
  void TearDown() override {
    if (!server_) return;
    server_->shutdown();
    thread_.join();
  }

  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
  std::thread thread_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpServerTest, CompletionAndChat) {
  start({});
  auto res = client_->Post("/v1/completions",
                           R"({"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0})",
                           "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json out = json::parse(res->body);
  EXPECT_EQ(out["object"], "text_completion");
  EXPECT_EQ(out["model"], "stories260K");
  EXPECT_EQ(out["usage"]["completion_tokens"], 6);
  EXPECT_EQ(out["choices"][0]["finish_reason"], "length");
  const std::string text = out["choices"][0]["text"];
  EXPECT_FALSE(text.empty());

  res = client_->Post("/v1/chat/completions",
                      R"({"messages": [{"role": "user", "content": "Once upon a time"}],
                          "max_tokens": 6, "temperature": 0, "stream": true})",
                      "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  // Same greedy text as the completion, streamed as chunks ending in [DONE].
  std::string streamed;
  size_t pos = 0;
  int events = 0;
  while ((pos = res->body.find("data: ", pos)) != std::string::npos) {
    size_t end = res->body.find("\n\n", pos);
    std::string data = res->body.substr(pos + 6, end - pos - 6);
    pos = end;
    ++events;
    if (data == "[DONE]") break;
    json chunk = json::parse(data);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    streamed += chunk["choices"][0]["delta"].value("content", "");
  }
  EXPECT_EQ(streamed, text);
  EXPECT_GE(events, 4);
  EXPECT_EQ(res->body.substr(res->body.size() - 14), "data: [DONE]\n\n");
}

TEST_F(HttpServerTest, ErrorsAndEmbeddings) {
  start({});
  auto res = client_->Post("/v1/chat/completions", "{\"messages\": 5}", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["param"], "messages");
  res =
      client_->Post("/v1/completions", R"({"prompt": "x", "model": "other"})", "application/json");
  EXPECT_EQ(res->status, 404);
  res = client_->Get("/v1/nothing");
  EXPECT_EQ(res->status, 404);
  EXPECT_TRUE(json::parse(res->body).contains("error"));
  res = client_->Post("/v1/embeddings", R"({"input": ["a cat", "a dog"]})", "application/json");
  ASSERT_EQ(res->status, 200) << res->body;
  json out = json::parse(res->body);
  ASSERT_EQ(out["data"].size(), 2u);
  EXPECT_GT(out["data"][0]["embedding"].size(), 0u);
  // Requests are counted when logged, just after the response went out: the
  // client can ask for /metrics before that, so poll (bounded) for the line.
  const std::string line = "edgelm_requests_total{route=\"/v1/embeddings\",status=\"200\"} 1";
  bool counted = false;
  for (int attempt = 0; attempt < 200 && !counted; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    res = client_->Get("/metrics");
    ASSERT_TRUE(res);
    counted = res->body.find(line) != std::string::npos;
  }
  EXPECT_TRUE(counted) << res->body;
}

TEST_F(HttpServerTest, ApiKey) {
  ServerOptions options;
  options.api_key = "k";
  start(options);
  EXPECT_EQ(client_->Get("/health")->status, 200);
  EXPECT_EQ(client_->Get("/v1/models")->status, 401);
  auto res =
      client_->Post("/v1/completions", R"({"prompt": "x", "max_tokens": 1})", "application/json");
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "invalid_api_key");
  client_->set_bearer_token_auth("k");
  EXPECT_EQ(client_->Get("/v1/models")->status, 200);
}

TEST_F(HttpServerTest, BodyLimit) {
  ServerOptions options;
  options.max_body_bytes = 4096;
  start(options);
  std::string body = R"({"prompt": ")" + std::string(10000, 'a') + "\"}";
  auto res = client_->Post("/v1/completions", body, "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 413);
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "request_too_large");
}

}  // namespace
}  // namespace edgelm::server
