#include "server/prompt.h"

#include "util/error.h"

namespace edgelm::server {

PromptTokens chat_prompt_tokens(const Model& model, const std::vector<ChatMessage>& messages) {
  PromptTokens prompt;
  const std::string& family = model.info().chat_template;
  if (family.empty() || family == "none") {
    prompt.text = render_plain_chat(messages);
    prompt.tokens = model.tokenize(prompt.text, /*add_special=*/true);
    return prompt;
  }
  prompt.text = model.apply_chat_template(messages, /*add_generation_prompt=*/true);
  // Templates that spell out the BOS token must not get a second one.
  bool has_bos = false;
  if (model.bos_token() >= 0) {
    const std::string bos = model.token_piece(model.bos_token());
    has_bos = !bos.empty() && prompt.text.compare(0, bos.size(), bos) == 0;
  }
  prompt.tokens = model.tokenize(prompt.text, /*add_special=*/!has_bos, /*parse_special=*/true);
  return prompt;
}

PromptTokens completion_prompt_tokens(const Model& model, const CompletionRequest& request) {
  PromptTokens prompt;
  if (request.prompt_is_tokens) {
    check_token_ids(model, request.prompt_tokens, "prompt");
    prompt.tokens = request.prompt_tokens;
    if (request.echo) prompt.text = model.detokenize(prompt.tokens);
    return prompt;
  }
  prompt.text = request.prompt;
  prompt.tokens = model.tokenize(prompt.text, /*add_special=*/true);
  return prompt;
}

void check_token_ids(const Model& model, const std::vector<int32_t>& tokens, const char* param) {
  const int vocab = model.vocab_size();
  for (int32_t token : tokens) {
    if (token < 0 || token >= vocab) {
      throw ApiError(400,
                     str_cat("token id ", token, " is outside the vocabulary (0..", vocab - 1, ")"),
                     "invalid_request_error", param);
    }
  }
}

}  // namespace edgelm::server
