// Request -> prompt tokens: chat templates, completion prompts, token checks.
#pragma once

#include <string>
#include <vector>

#include "edgelm/edgelm.h"
#include "server/openai_api.h"

namespace edgelm::server {

struct PromptTokens {
  std::vector<int32_t> tokens;
  std::string text;  // the prompt as text (for `echo`)
};

PromptTokens chat_prompt_tokens(const Model& model, const std::vector<ChatMessage>& messages);
PromptTokens completion_prompt_tokens(const Model& model, const CompletionRequest& request);

// Throws ApiError 400 naming `param` if any id is outside the vocabulary.
void check_token_ids(const Model& model, const std::vector<int32_t>& tokens, const char* param);

}  // namespace edgelm::server
