#include "server/openai_api.h"

#include <gtest/gtest.h>

#include <cstring>

#include "server/prompt.h"

namespace edgelm::server {
namespace {

// Runs `fn`, expects an ApiError, returns it.
template <typename Fn>
ApiError expect_api_error(Fn fn) {
  try {
    fn();
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "no ApiError thrown";
  return ApiError(0, "");
}

CompletionRequest parse_chat(const std::string& text) {
  return parse_completion_request(parse_json_body(text), /*chat=*/true);
}

TEST(ParseJsonBody, RejectsBadJson) {
  EXPECT_EQ(expect_api_error([] { parse_json_body(""); }).status, 400);
  EXPECT_EQ(expect_api_error([] { parse_json_body("{\"model\": "); }).status, 400);
  EXPECT_EQ(expect_api_error([] { parse_json_body("[1, 2]"); }).status, 400);
  EXPECT_EQ(expect_api_error([] { parse_json_body("\"text\""); }).status, 400);
  ApiError error = expect_api_error([] { parse_json_body("{\"a\": tru}"); });
  EXPECT_NE(std::string(error.what()).find("not valid JSON"), std::string::npos);
}

TEST(ParseJsonBody, RejectsInvalidUtf8InStrings) {
  std::string body = "{\"prompt\": \"ab\xff\xfe\"}";
  EXPECT_EQ(expect_api_error([&] { parse_json_body(body); }).status, 400);
  // A lone surrogate escape is not a character either.
  EXPECT_EQ(expect_api_error([] { parse_json_body("{\"prompt\": \"\\ud800\"}"); }).status, 400);
}

TEST(ParseJsonBody, LimitsNesting) {
  std::string deep(100000, '[');
  ApiError error = expect_api_error([&] { parse_json_body("{\"a\":" + deep); });
  EXPECT_EQ(error.status, 400);
  EXPECT_NE(std::string(error.what()).find("nests deeper"), std::string::npos);
  // Brackets inside strings do not count.
  EXPECT_NO_THROW(parse_json_body("{\"prompt\": \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}"));
}

TEST(JsonNestingDepth, CountsOnlyStructure) {
  EXPECT_EQ(json_nesting_depth("{}"), 1);
  EXPECT_EQ(json_nesting_depth("{\"a\":[{\"b\":[]}]}"), 4);
  EXPECT_EQ(json_nesting_depth("{\"a\":\"[{\\\"[\"}"), 1);
  EXPECT_EQ(json_nesting_depth("\"\\\\\"[[["), 3);  // escaped backslash ends before the quote
}

TEST(ParseCompletionRequest, ChatDefaultsAndFields) {
  CompletionRequest r = parse_chat(R"({
    "model": "m", "messages": [{"role": "system", "content": "be brief"},
                               {"role": "user", "content": [{"type": "text", "text": "hi"},
                                                            {"type": "text", "text": "!"}]}],
    "max_tokens": 12, "temperature": 0.5, "top_p": 0.9, "top_k": 7, "min_p": 0.1,
    "seed": 42, "presence_penalty": 0.5, "frequency_penalty": -0.5,
    "stop": ["\n\n", "END"], "stream": true, "stream_options": {"include_usage": true}})");
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "hi!");
  EXPECT_EQ(r.max_tokens, 12);
  EXPECT_FLOAT_EQ(r.options.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.options.sampling.top_p, 0.9f);
  EXPECT_EQ(r.options.sampling.top_k, 7);
  EXPECT_FLOAT_EQ(r.options.sampling.min_p, 0.1f);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.options.sampling.seed, 42u);
  EXPECT_FLOAT_EQ(r.options.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.options.sampling.frequency_penalty, -0.5f);
  EXPECT_EQ(r.options.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(ParseCompletionRequest, OmittedFieldsKeepLibraryDefaults) {
  CompletionRequest r = parse_chat(R"({"messages": [{"role": "user", "content": "x"}],
                                      "temperature": null, "stop": "END"})");
  SamplingParams defaults;
  EXPECT_EQ(r.max_tokens, -1);
  EXPECT_FLOAT_EQ(r.options.sampling.temperature, defaults.temperature);
  EXPECT_FALSE(r.seed_given);
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.options.stop, std::vector<std::string>{"END"});
}

TEST(ParseCompletionRequest, MaxCompletionTokensWins) {
  CompletionRequest r = parse_chat(R"({"messages": [{"role": "user", "content": "x"}],
                                      "max_tokens": 5, "max_completion_tokens": 9})");
  EXPECT_EQ(r.max_tokens, 9);
  r = parse_chat(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 5.0})");
  EXPECT_EQ(r.max_tokens, 5);
}

TEST(ParseCompletionRequest, WrongTypesNameTheField) {
  struct Case {
    const char* body;
    const char* param;
  };
  const Case cases[] = {
      {R"({"messages": "hi"})", "messages"},
      {R"({"messages": []})", "messages"},
      {R"({})", "messages"},
      {R"({"messages": [{"role": "wizard", "content": "x"}]})", "messages[0].role"},
      {R"({"messages": [{"content": "x"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})", "temperature"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": 3})", "temperature"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_p": 1.5})", "top_p"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0})", "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": -3})", "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2.5})", "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": "10"})", "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stream": "yes"})", "stream"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop": 3})", "stop"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop": [""]})", "stop"},
      {R"({"messages": [{"role": "user", "content": "x"}], "n": 2})", "n"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})", "logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})",
       "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "seed": "abc"})", "seed"},
      {R"({"messages": [{"role": "user", "content": "x"}], "model": 7})", "model"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stream_options": {}})",
       "stream_options"},
      {R"({"messages": [{"role": "user", "content": "x"}],
           "response_format": {"type": "json_schema"}})",
       "response_format"},
  };
  for (const Case& c : cases) {
    ApiError error = expect_api_error([&] { parse_chat(c.body); });
    EXPECT_EQ(error.status, 400) << c.body;
    EXPECT_EQ(error.param, c.param) << c.body;
    EXPECT_EQ(error.type, "invalid_request_error");
  }
}

TEST(ParseCompletionRequest, JsonObjectFormatIsRecognized) {
  CompletionRequest r = parse_chat(R"({"messages": [{"role": "user", "content": "x"}],
                                      "response_format": {"type": "json_object"}})");
  EXPECT_TRUE(r.json_object);
}

TEST(ParseCompletionRequest, CompletionPrompts) {
  auto parse = [](const char* text) {
    return parse_completion_request(parse_json_body(text), /*chat=*/false);
  };
  CompletionRequest r = parse(R"({"prompt": "Once upon", "echo": true})");
  EXPECT_EQ(r.prompt, "Once upon");
  EXPECT_TRUE(r.echo);
  r = parse(R"({"prompt": ["Once"]})");
  EXPECT_EQ(r.prompt, "Once");
  r = parse(R"({"prompt": [1, 2, 3]})");
  EXPECT_TRUE(r.prompt_is_tokens);
  EXPECT_EQ(r.prompt_tokens, (std::vector<int32_t>{1, 2, 3}));
  r = parse(R"({"prompt": [[4, 5]]})");
  EXPECT_EQ(r.prompt_tokens, (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(expect_api_error([&] { parse(R"({"prompt": ["a", "b"]})"); }).param, "prompt");
  EXPECT_EQ(expect_api_error([&] { parse(R"({"prompt": [1, -2]})"); }).param, "prompt");
  EXPECT_EQ(expect_api_error([&] { parse(R"({"prompt": 5})"); }).param, "prompt");
  EXPECT_EQ(expect_api_error([&] { parse(R"({})"); }).param, "prompt");
  EXPECT_EQ(expect_api_error([&] { parse(R"({"prompt": "x", "best_of": 3})"); }).param, "best_of");
}

TEST(ParseEmbeddingRequest, InputShapes) {
  auto parse = [](const char* text) { return parse_embedding_request(parse_json_body(text)); };
  EmbeddingRequest r = parse(R"({"input": "hello", "model": "m"})");
  EXPECT_EQ(r.texts, std::vector<std::string>{"hello"});
  EXPECT_FALSE(r.base64);
  r = parse(R"({"input": ["a", "b"], "encoding_format": "base64"})");
  EXPECT_EQ(r.texts.size(), 2u);
  EXPECT_TRUE(r.base64);
  r = parse(R"({"input": [1, 2]})");
  ASSERT_EQ(r.token_lists.size(), 1u);
  r = parse(R"({"input": [[1], [2, 3]]})");
  EXPECT_EQ(r.token_lists.size(), 2u);
  EXPECT_EQ(expect_api_error([&] { parse(R"({"input": []})"); }).param, "input");
  EXPECT_EQ(expect_api_error([&] { parse(R"({"input": ""})"); }).param, "input");
  EXPECT_EQ(expect_api_error([&] { parse(R"({"input": ["a", 1]})"); }).param, "input");
  EXPECT_EQ(expect_api_error([&] { parse(R"({})"); }).param, "input");
  EXPECT_EQ(expect_api_error([&] { parse(R"({"input": "a", "encoding_format": "hex"})"); }).param,
            "encoding_format");
}

TEST(Responses, ErrorShape) {
  json e = error_json(ApiError(429, "busy", "rate_limit_error", "", "queue_full"));
  EXPECT_EQ(e["error"]["message"], "busy");
  EXPECT_EQ(e["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(e["error"]["param"].is_null());
  EXPECT_EQ(e["error"]["code"], "queue_full");
}

TEST(Responses, ChatCompletionObject) {
  ResponseHeader header{"chatcmpl-1", 1700000000, "stories"};
  json out = chat_completion_json(header, "Hello", "length", 5, 3);
  EXPECT_EQ(out["object"], "chat.completion");
  EXPECT_EQ(out["id"], "chatcmpl-1");
  EXPECT_EQ(out["created"], 1700000000);
  EXPECT_EQ(out["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(out["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(out["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(out["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(out["usage"]["completion_tokens"], 3);
  EXPECT_EQ(out["usage"]["total_tokens"], 8);
  json text = text_completion_json(header, "Hi", "stop", 1, 1);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "Hi");
}

TEST(Responses, StreamChunks) {
  ResponseHeader header{"chatcmpl-1", 1, "m"};
  json first = chat_chunk_json(header, "assistant", "", "", false);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(first.contains("usage"));
  json middle = chat_chunk_json(header, "", "tok", "", true);
  EXPECT_FALSE(middle["choices"][0]["delta"].contains("role"));
  EXPECT_EQ(middle["choices"][0]["delta"]["content"], "tok");
  EXPECT_TRUE(middle["usage"].is_null());
  json last = chat_chunk_json(header, "", "", "stop", false);
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  json usage = usage_chunk_json(header, true, 4, 2);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 6);

  std::string event = sse_event(json{{"a", 1}});
  EXPECT_EQ(event, "data: {\"a\":1}\n\n");
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
}

TEST(Responses, InvalidUtf8IsReplacedNotThrown) {
  json out = {{"text", std::string("ok\xff")}};
  std::string text;
  EXPECT_NO_THROW(text = dump_json(out));
  EXPECT_NE(text.find("ok"), std::string::npos);
}

TEST(Responses, FinishReasons) {
  EXPECT_EQ(finish_reason_string(FinishReason::kLength), "length");
  EXPECT_EQ(finish_reason_string(FinishReason::kStop), "stop");
  EXPECT_EQ(finish_reason_string(FinishReason::kEndOfText), "stop");
}

TEST(Responses, Base64MatchesKnownVectors) {
  EXPECT_EQ(base64_encode("", 0), "");
  EXPECT_EQ(base64_encode("f", 1), "Zg==");
  EXPECT_EQ(base64_encode("fo", 2), "Zm8=");
  EXPECT_EQ(base64_encode("foo", 3), "Zm9v");
  EXPECT_EQ(base64_encode("foobar", 6), "Zm9vYmFy");
  float one = 1.0f;  // 0x3f800000, little-endian bytes 00 00 80 3f
  EXPECT_EQ(base64_encode(&one, 4), "AACAPw==");
}

TEST(Responses, Embeddings) {
  json out = embeddings_json("m", {{1.0f, 0.0f}, {0.5f, 0.5f}}, false, 7);
  EXPECT_EQ(out["object"], "list");
  ASSERT_EQ(out["data"].size(), 2u);
  EXPECT_EQ(out["data"][1]["index"], 1);
  EXPECT_EQ(out["data"][1]["embedding"][0], 0.5);
  EXPECT_EQ(out["usage"]["prompt_tokens"], 7);
  json b64 = embeddings_json("m", {{1.0f}}, true, 1);
  EXPECT_EQ(b64["data"][0]["embedding"], "AACAPw==");
}

TEST(Responses, RandomIdsDiffer) {
  std::string a = random_id("chatcmpl-"), b = random_id("chatcmpl-");
  EXPECT_EQ(a.rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(a.size(), std::strlen("chatcmpl-") + 24);
  EXPECT_NE(a, b);
}

TEST(Prompt, PlainChatJoinsContents) {
  EXPECT_EQ(render_plain_chat({{"system", "S"}, {"user", "U"}, {"assistant", ""}}), "S\n\nU");
  EXPECT_EQ(render_plain_chat({}), "");
}

}  // namespace
}  // namespace edgelm::server
