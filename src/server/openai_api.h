// OpenAI wire format: request parsing/validation and response objects.
// Pure functions of JSON in, JSON out: nothing here needs a model.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "edgelm/edgelm.h"

namespace edgelm::server {

using nlohmann::json;

// An error answered to the client as {"error":{"message","type","param","code"}}.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string type = "invalid_request_error",
           std::string param = "", std::string code = "")
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string type;   // "invalid_request_error", "authentication_error", "server_error", ...
  std::string param;  // the offending field, "" if none
  std::string code;   // machine-readable code, "" if none
};

json error_json(const ApiError& error);
// Serializes for the wire: invalid UTF-8 (never expected) is replaced, not thrown.
std::string dump_json(const json& value);

// Deepest nesting of arrays/objects in a JSON text (strings are skipped), so
// hostile inputs can be refused before the parser builds them.
int json_nesting_depth(std::string_view text);
constexpr int kMaxJsonDepth = 32;
// Parses a request body; throws ApiError 400 on bad JSON, a non-object or deep nesting.
json parse_json_body(std::string_view body);

struct CompletionRequest {
  bool chat = true;   // /v1/chat/completions (messages) or /v1/completions (prompt)
  std::string model;  // as given ("" if absent)
  std::vector<ChatMessage> messages;
  std::string prompt;                  // completions: text prompt
  std::vector<int32_t> prompt_tokens;  // completions: token-id prompt
  bool prompt_is_tokens = false;
  bool echo = false;    // completions: prepend the prompt to the text
  int max_tokens = -1;  // -1: not given
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool seed_given = false;
  bool json_object = false;  // response_format {"type":"json_object"}
  GenerateOptions options;   // stop strings and sampling (max_tokens decided later)
};

// Validates types and ranges of every supported field; unsupported features
// (n > 1, logprobs, tools, ...) are refused with a 400 naming the field.
CompletionRequest parse_completion_request(const json& body, bool chat);

struct EmbeddingRequest {
  std::string model;
  std::vector<std::string> texts;                 // input given as strings
  std::vector<std::vector<int32_t>> token_lists;  // input given as token ids
  bool base64 = false;                            // encoding_format "base64"
};
EmbeddingRequest parse_embedding_request(const json& body);

std::string finish_reason_string(FinishReason reason);  // OpenAI names: "stop", "length"

json usage_json(int prompt_tokens, int completion_tokens);

struct ResponseHeader {
  std::string id;  // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;
  std::string model;
};

json chat_completion_json(const ResponseHeader& header, const std::string& text,
                          const std::string& finish_reason, int prompt_tokens,
                          int completion_tokens);
json text_completion_json(const ResponseHeader& header, const std::string& text,
                          const std::string& finish_reason, int prompt_tokens,
                          int completion_tokens);
// One streaming chunk. `role` is set on the first chat chunk only;
// finish_reason "" means null; usage is null unless include_usage.
json chat_chunk_json(const ResponseHeader& header, const std::string& role,
                     const std::string& content, const std::string& finish_reason,
                     bool include_usage);
json text_chunk_json(const ResponseHeader& header, const std::string& text,
                     const std::string& finish_reason, bool include_usage);
// The final usage-only chunk of a stream (choices: []).
json usage_chunk_json(const ResponseHeader& header, bool chat, int prompt_tokens,
                      int completion_tokens);

std::string sse_event(const json& data);  // "data: {...}\n\n"
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

std::string base64_encode(const void* data, size_t size);
json embeddings_json(const std::string& model, const std::vector<std::vector<float>>& vectors,
                     bool base64, int prompt_tokens);
json models_json(const std::string& model_id, int64_t created, const ModelInfo& info);
json model_json(const std::string& model_id, int64_t created, const ModelInfo& info);

std::string random_id(std::string_view prefix);

// Models without a chat template (chat_template "none", e.g. base story
// models) get the message contents joined by blank lines, so a chat client
// still works as a plain continuation.
std::string render_plain_chat(const std::vector<ChatMessage>& messages);
// prefix + 24 random alphanumerics

}  // namespace edgelm::server
