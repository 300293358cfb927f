// Chat templates. Checkpoints ship Jinja templates; rather than embed a Jinja
// interpreter, edgelm recognizes the template family from its text (as
// llama.cpp does) and renders it with a built-in formatter.
#pragma once

#include <string>
#include <vector>

#include "edgelm/edgelm.h"

namespace edgelm {

enum class ChatFormat { kNone, kChatML, kLlama2, kLlama3, kZephyr, kMistral };

const char* chat_format_name(ChatFormat format);
// "chatml", "llama2", "llama3", "zephyr", "mistral", "none"; throws edgelm::Error otherwise.
ChatFormat chat_format_from_name(const std::string& name);
// Family of a Jinja chat template; kNone for an empty one. Throws edgelm::Error
// for a non-empty template of an unknown family (pass an override instead).
ChatFormat detect_chat_format(const std::string& jinja_source);

// Renders messages. The model's BOS is not included (the tokenizer adds it).
// kNone joins the contents with newlines (for base models without a template).
std::string render_chat(ChatFormat format, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt);

}  // namespace edgelm
