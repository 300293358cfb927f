#include "server/openai_api.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "util/error.h"

namespace edgelm::server {
namespace {

ApiError bad_field(const std::string& param, const std::string& message) {
  return ApiError(400, message, "invalid_request_error", param);
}

// A field that is absent or JSON null counts as "not given".
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

bool get_bool(const json& body, const char* name, bool fallback) {
  const json* value = field(body, name);
  if (!value) return fallback;
  if (!value->is_boolean()) throw bad_field(name, str_cat("'", name, "' must be a boolean"));
  return value->get<bool>();
}

double get_number(const json& body, const char* name, double fallback, double lo, double hi) {
  const json* value = field(body, name);
  if (!value) return fallback;
  if (!value->is_number()) throw bad_field(name, str_cat("'", name, "' must be a number"));
  double number = value->get<double>();
  if (!(number >= lo && number <= hi)) {
    throw bad_field(name,
                    str_cat("'", name, "' must be between ", lo, " and ", hi, ", got ", number));
  }
  return number;
}

// Integers may arrive as 5 or 5.0; anything fractional or out of range is refused.
int64_t get_integer(const json& body, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const json* value = field(body, name);
  if (!value) return fallback;
  int64_t number = 0;
  if (value->is_number_integer()) {
    if (value->is_number_unsigned() &&
        value->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
      number = std::numeric_limits<int64_t>::max();
    } else {
      number = value->get<int64_t>();
    }
  } else if (value->is_number_float()) {
    double d = value->get<double>();
    if (d != std::floor(d) || !std::isfinite(d) || std::fabs(d) > 9e18) {
      throw bad_field(name, str_cat("'", name, "' must be an integer"));
    }
    number = int64_t(d);
  } else {
    throw bad_field(name, str_cat("'", name, "' must be an integer"));
  }
  if (number < lo || number > hi) {
    throw bad_field(name,
                    str_cat("'", name, "' must be between ", lo, " and ", hi, ", got ", number));
  }
  return number;
}

std::string get_string(const json& body, const char* name) {
  const json* value = field(body, name);
  if (!value) return "";
  if (!value->is_string()) throw bad_field(name, str_cat("'", name, "' must be a string"));
  return value->get<std::string>();
}

std::vector<int32_t> token_list(const json& value, const std::string& param) {
  std::vector<int32_t> tokens;
  tokens.reserve(value.size());
  for (const json& item : value) {
    if (!item.is_number_integer() || item.get<int64_t>() < 0 ||
        item.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      throw bad_field(param, str_cat("'", param, "' token ids must be non-negative integers"));
    }
    tokens.push_back(int32_t(item.get<int64_t>()));
  }
  return tokens;
}

std::string message_content(const json& message, size_t index) {
  std::string param = str_cat("messages[", index, "].content");
  auto it = message.find("content");
  if (it == message.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) throw bad_field(param, str_cat("'", param, "' must be a string or array"));
  // Content parts: only text is supported (this is a text-only model).
  std::string text;
  for (const json& part : *it) {
    if (!part.is_object() || part.value("type", json()) != "text") {
      throw bad_field(param, str_cat("'", param, "' may only contain parts of type 'text'"));
    }
    auto text_it = part.find("text");
    if (text_it == part.end() || !text_it->is_string()) {
      throw bad_field(param, str_cat("'", param, "' text parts need a string 'text'"));
    }
    text += text_it->get<std::string>();
  }
  return text;
}

std::vector<ChatMessage> parse_messages(const json& body) {
  const json* messages = field(body, "messages");
  if (!messages) throw bad_field("messages", "'messages' is required");
  if (!messages->is_array()) throw bad_field("messages", "'messages' must be an array");
  if (messages->empty()) throw bad_field("messages", "'messages' must not be empty");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& message = (*messages)[i];
    std::string param = str_cat("messages[", i, "]");
    if (!message.is_object()) throw bad_field(param, str_cat("'", param, "' must be an object"));
    auto role = message.find("role");
    if (role == message.end() || !role->is_string()) {
      throw bad_field(param + ".role", str_cat("'", param, ".role' must be a string"));
    }
    std::string role_name = role->get<std::string>();
    if (role_name == "developer") role_name = "system";  // OpenAI's newer name for system
    if (role_name != "system" && role_name != "user" && role_name != "assistant") {
      throw bad_field(
          param + ".role",
          str_cat("'", param, ".role' must be system, user or assistant, got '", role_name, "'"));
    }
    out.push_back({role_name, message_content(message, i)});
  }
  return out;
}

std::vector<std::string> parse_stop(const json& body) {
  const json* stop = field(body, "stop");
  if (!stop) return {};
  std::vector<std::string> out;
  if (stop->is_string()) {
    out.push_back(stop->get<std::string>());
  } else if (stop->is_array()) {
    if (stop->size() > 16) throw bad_field("stop", "'stop' may hold at most 16 strings");
    for (const json& item : *stop) {
      if (!item.is_string()) throw bad_field("stop", "'stop' must be a string or array of strings");
      out.push_back(item.get<std::string>());
    }
  } else {
    throw bad_field("stop", "'stop' must be a string or array of strings");
  }
  for (const std::string& s : out) {
    if (s.empty()) throw bad_field("stop", "'stop' strings must not be empty");
  }
  return out;
}

void refuse_unsupported(const json& body, bool chat) {
  if (get_integer(body, "n", 1, 1, 128) != 1) {
    throw bad_field("n", "only n=1 is supported");
  }
  if (!chat && get_integer(body, "best_of", 1, 1, 128) != 1) {
    throw bad_field("best_of", "only best_of=1 is supported");
  }
  const json* logprobs = field(body, "logprobs");
  if (logprobs && !(logprobs->is_boolean() && !logprobs->get<bool>())) {
    throw bad_field("logprobs", "'logprobs' is not supported");
  }
  if (field(body, "top_logprobs"))
    throw bad_field("top_logprobs", "'top_logprobs' is not supported");
  if (field(body, "logit_bias") && !(*field(body, "logit_bias")).empty()) {
    throw bad_field("logit_bias", "'logit_bias' is not supported");
  }
  const json* tools = field(body, "tools");
  if (tools && !(tools->is_array() && tools->empty())) {
    throw bad_field("tools", "tool calling is not supported");
  }
  if (field(body, "functions")) throw bad_field("functions", "function calling is not supported");
  if (!chat && field(body, "suffix") && !get_string(body, "suffix").empty()) {
    throw bad_field("suffix", "'suffix' is not supported");
  }
}

}  // namespace

json error_json(const ApiError& error) {
  json inner = {{"message", error.what()}, {"type", error.type}};
  inner["param"] = error.param.empty() ? json(nullptr) : json(error.param);
  inner["code"] = error.code.empty() ? json(nullptr) : json(error.code);
  return {{"error", inner}};
}

std::string dump_json(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

int json_nesting_depth(std::string_view text) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

json parse_json_body(std::string_view body) {
  if (body.empty()) throw ApiError(400, "the request body is empty; expected a JSON object");
  if (json_nesting_depth(body) > kMaxJsonDepth) {
    throw ApiError(400, str_cat("the request JSON nests deeper than ", kMaxJsonDepth, " levels"));
  }
  json parsed;
  try {
    parsed = json::parse(body);
  } catch (const json::exception& e) {
    // nlohmann's message says where and why (also for ill-formed UTF-8).
    throw ApiError(400, str_cat("the request body is not valid JSON: ", e.what()));
  }
  if (!parsed.is_object()) throw ApiError(400, "the request body must be a JSON object");
  return parsed;
}

CompletionRequest parse_completion_request(const json& body, bool chat) {
  CompletionRequest request;
  request.chat = chat;
  request.model = get_string(body, "model");
  refuse_unsupported(body, chat);

  if (chat) {
    request.messages = parse_messages(body);
  } else {
    const json* prompt = field(body, "prompt");
    if (!prompt) throw bad_field("prompt", "'prompt' is required");
    if (prompt->is_string()) {
      request.prompt = prompt->get<std::string>();
    } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number()) {
      request.prompt_tokens = token_list(*prompt, "prompt");
      request.prompt_is_tokens = true;
    } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
      request.prompt = (*prompt)[0].get<std::string>();
    } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_array()) {
      request.prompt_tokens = token_list((*prompt)[0], "prompt");
      request.prompt_is_tokens = true;
    } else if (prompt->is_array() && prompt->size() > 1) {
      throw bad_field("prompt", "only one prompt per request is supported");
    } else {
      throw bad_field("prompt",
                      "'prompt' must be a string, an array of token ids, or a "
                      "one-element array of either");
    }
    request.echo = get_bool(body, "echo", false);
  }

  // max_completion_tokens is the newer name and wins when both are given.
  int64_t max_tokens = get_integer(body, "max_tokens", -1, 1, std::numeric_limits<int32_t>::max());
  max_tokens = get_integer(body, "max_completion_tokens", max_tokens, 1,
                           std::numeric_limits<int32_t>::max());
  request.max_tokens = int(max_tokens);

  request.stream = get_bool(body, "stream", false);
  if (const json* stream_options = field(body, "stream_options")) {
    if (!stream_options->is_object()) {
      throw bad_field("stream_options", "'stream_options' must be an object");
    }
    if (!request.stream) {
      throw bad_field("stream_options", "'stream_options' is only allowed with stream: true");
    }
    request.include_usage = get_bool(*stream_options, "include_usage", false);
  }

  if (const json* format = field(body, "response_format")) {
    if (!format->is_object() || !format->contains("type") || !(*format)["type"].is_string()) {
      throw bad_field("response_format", "'response_format' must be an object with a 'type'");
    }
    std::string type = (*format)["type"].get<std::string>();
    if (type == "json_object") {
      request.json_object = true;
    } else if (type != "text") {
      throw bad_field("response_format", str_cat("response_format type '", type,
                                                 "' is not supported (use 'text' or "
                                                 "'json_object')"));
    }
  }

  SamplingParams& sampling = request.options.sampling;
  sampling.temperature = float(get_number(body, "temperature", sampling.temperature, 0, 2));
  sampling.top_p = float(get_number(body, "top_p", sampling.top_p, 0, 1));
  sampling.top_k = int(get_integer(body, "top_k", sampling.top_k, 0, 1 << 20));
  sampling.min_p = float(get_number(body, "min_p", sampling.min_p, 0, 1));
  sampling.presence_penalty =
      float(get_number(body, "presence_penalty", sampling.presence_penalty, -2, 2));
  sampling.frequency_penalty =
      float(get_number(body, "frequency_penalty", sampling.frequency_penalty, -2, 2));
  sampling.repetition_penalty =
      float(get_number(body, "repetition_penalty", sampling.repetition_penalty, 0.01, 10));
  sampling.repetition_penalty =
      float(get_number(body, "repeat_penalty", sampling.repetition_penalty, 0.01, 10));
  if (field(body, "seed")) {
    request.seed_given = true;
    sampling.seed = uint64_t(get_integer(body, "seed", 0, std::numeric_limits<int64_t>::min(),
                                         std::numeric_limits<int64_t>::max()));
  }
  request.options.stop = parse_stop(body);
  return request;
}

EmbeddingRequest parse_embedding_request(const json& body) {
  EmbeddingRequest request;
  request.model = get_string(body, "model");
  std::string format = get_string(body, "encoding_format");
  if (format == "base64") {
    request.base64 = true;
  } else if (!format.empty() && format != "float") {
    throw bad_field("encoding_format", "'encoding_format' must be 'float' or 'base64'");
  }
  const json* input = field(body, "input");
  if (!input) throw bad_field("input", "'input' is required");
  auto check_count = [](size_t n) {
    if (n == 0) throw bad_field("input", "'input' must not be empty");
    if (n > 2048) throw bad_field("input", "'input' may hold at most 2048 items");
  };
  if (input->is_string()) {
    request.texts.push_back(input->get<std::string>());
  } else if (input->is_array()) {
    check_count(input->size());
    const json& first = (*input)[0];
    if (first.is_string()) {
      for (const json& item : *input) {
        if (!item.is_string()) throw bad_field("input", "'input' items must all be strings");
        request.texts.push_back(item.get<std::string>());
      }
    } else if (first.is_number()) {
      request.token_lists.push_back(token_list(*input, "input"));
    } else if (first.is_array()) {
      for (const json& item : *input) {
        if (!item.is_array() || item.empty()) {
          throw bad_field("input", "'input' token lists must be non-empty arrays");
        }
        request.token_lists.push_back(token_list(item, "input"));
      }
    } else {
      throw bad_field("input", "'input' must be a string, strings, or token ids");
    }
  } else {
    throw bad_field("input", "'input' must be a string, strings, or token ids");
  }
  for (const std::string& text : request.texts) {
    if (text.empty()) throw bad_field("input", "'input' strings must not be empty");
  }
  return request;
}

std::string finish_reason_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
    case FinishReason::kEndOfText:
    case FinishReason::kCancelled:
      break;
  }
  return "stop";
}

json usage_json(int prompt_tokens, int completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

namespace {
json response_base(const ResponseHeader& header, const char* object) {
  return {{"id", header.id},
          {"object", object},
          {"created", header.created},
          {"model", header.model},
          {"system_fingerprint", "edgelm"}};
}
json finish_json(const std::string& finish_reason) {
  return finish_reason.empty() ? json(nullptr) : json(finish_reason);
}
}  // namespace

json chat_completion_json(const ResponseHeader& header, const std::string& text,
                          const std::string& finish_reason, int prompt_tokens,
                          int completion_tokens) {
  json out = response_base(header, "chat.completion");
  json message = {{"role", "assistant"}, {"content", text}, {"refusal", nullptr}};
  out["choices"] = json::array({{{"index", 0},
                                 {"message", message},
                                 {"logprobs", nullptr},
                                 {"finish_reason", finish_reason}}});
  out["usage"] = usage_json(prompt_tokens, completion_tokens);
  return out;
}

json text_completion_json(const ResponseHeader& header, const std::string& text,
                          const std::string& finish_reason, int prompt_tokens,
                          int completion_tokens) {
  json out = response_base(header, "text_completion");
  out["choices"] = json::array(
      {{{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason}}});
  out["usage"] = usage_json(prompt_tokens, completion_tokens);
  return out;
}

json chat_chunk_json(const ResponseHeader& header, const std::string& role,
                     const std::string& content, const std::string& finish_reason,
                     bool include_usage) {
  json out = response_base(header, "chat.completion.chunk");
  json delta = json::object();
  if (!role.empty()) delta["role"] = role;
  if (!role.empty() || !content.empty()) delta["content"] = content;
  out["choices"] = json::array({{{"index", 0},
                                 {"delta", delta},
                                 {"logprobs", nullptr},
                                 {"finish_reason", finish_json(finish_reason)}}});
  if (include_usage) out["usage"] = nullptr;
  return out;
}

json text_chunk_json(const ResponseHeader& header, const std::string& text,
                     const std::string& finish_reason, bool include_usage) {
  json out = response_base(header, "text_completion");
  out["choices"] = json::array({{{"text", text},
                                 {"index", 0},
                                 {"logprobs", nullptr},
                                 {"finish_reason", finish_json(finish_reason)}}});
  if (include_usage) out["usage"] = nullptr;
  return out;
}

json usage_chunk_json(const ResponseHeader& header, bool chat, int prompt_tokens,
                      int completion_tokens) {
  json out = response_base(header, chat ? "chat.completion.chunk" : "text_completion");
  out["choices"] = json::array();
  out["usage"] = usage_json(prompt_tokens, completion_tokens);
  return out;
}

std::string sse_event(const json& data) {
  return "data: " + dump_json(data) + "\n\n";
}

std::string base64_encode(const void* data, size_t size) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* bytes = static_cast<const uint8_t*>(data);
  std::string out;
  out.reserve((size + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < size; i += 3) {
    uint32_t v = uint32_t(bytes[i]) << 16 | uint32_t(bytes[i + 1]) << 8 | bytes[i + 2];
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < size) {
    uint32_t v = uint32_t(bytes[i]) << 16;
    if (i + 1 < size) v |= uint32_t(bytes[i + 1]) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < size ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

json embeddings_json(const std::string& model, const std::vector<std::vector<float>>& vectors,
                     bool base64, int prompt_tokens) {
  json data = json::array();
  for (size_t i = 0; i < vectors.size(); ++i) {
    // base64: little-endian float32 bytes, as OpenAI sends them (x86/ARM are little-endian).
    json embedding =
        base64 ? json(base64_encode(vectors[i].data(), vectors[i].size() * 4)) : json(vectors[i]);
    data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", std::move(embedding)}});
  }
  return {{"object", "list"},
          {"data", std::move(data)},
          {"model", model},
          {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

json model_json(const std::string& model_id, int64_t created, const ModelInfo& info) {
  return {{"id", model_id},
          {"object", "model"},
          {"created", created},
          {"owned_by", "edgelm"},
          {"meta",
           {{"format", info.format},
            {"architecture", info.architecture},
            {"n_params", info.n_params},
            {"context_length", info.context_length},
            {"vocab_size", info.vocab_size},
            {"chat_template", info.chat_template}}}};
}

json models_json(const std::string& model_id, int64_t created, const ModelInfo& info) {
  return {{"object", "list"}, {"data", json::array({model_json(model_id, created, info)})}};
}

std::string render_plain_chat(const std::vector<ChatMessage>& messages) {
  std::string text;
  for (const ChatMessage& message : messages) {
    if (message.content.empty()) continue;
    if (!text.empty()) text += "\n\n";
    text += message.content;
  }
  return text;
}

std::string random_id(std::string_view prefix) {
  static constexpr char kChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng(std::random_device{}());
  std::string id(prefix);
  for (int i = 0; i < 24; ++i) id += kChars[rng() % (sizeof(kChars) - 1)];
  return id;
}

}  // namespace edgelm::server
