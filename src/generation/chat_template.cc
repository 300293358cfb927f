#include "generation/chat_template.h"

#include "util/error.h"

namespace edgelm {

const char* chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::kNone:
      return "none";
    case ChatFormat::kChatML:
      return "chatml";
    case ChatFormat::kLlama2:
      return "llama2";
    case ChatFormat::kLlama3:
      return "llama3";
    case ChatFormat::kZephyr:
      return "zephyr";
    case ChatFormat::kMistral:
      return "mistral";
  }
  return "none";
}

ChatFormat chat_format_from_name(const std::string& name) {
  for (ChatFormat f : {ChatFormat::kNone, ChatFormat::kChatML, ChatFormat::kLlama2,
                       ChatFormat::kLlama3, ChatFormat::kZephyr, ChatFormat::kMistral}) {
    if (name == chat_format_name(f)) return f;
  }
  fail("unknown chat template '", name, "' (known: chatml, llama2, llama3, zephyr, mistral, none)");
}

ChatFormat detect_chat_format(const std::string& t) {
  auto has = [&](const char* s) { return t.find(s) != std::string::npos; };
  if (t.empty()) return ChatFormat::kNone;
  if (has("<|im_start|>")) return ChatFormat::kChatML;
  if (has("<|start_header_id|>")) return ChatFormat::kLlama3;
  if (has("<|user|>") && has("<|assistant|>")) return ChatFormat::kZephyr;
  if (has("[INST]")) return has("<<SYS>>") ? ChatFormat::kLlama2 : ChatFormat::kMistral;
  fail(
      "unrecognized chat template (not ChatML, Llama 2/3, Mistral or Zephyr); "
      "choose one with --chat-template");
}

namespace {

void check_role(const ChatMessage& m) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant") {
    fail("unknown chat role '", m.role, "' (expected system, user or assistant)");
  }
}

// Llama 2 and Mistral fold the system prompt into the first user turn.
std::string render_inst(const std::vector<ChatMessage>& messages, bool llama2_sys) {
  std::string out;
  std::string system;
  bool first_user = true;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      system = m.content;
      continue;
    }
    if (m.role == "user") {
      if (!first_user) out += "<s>";
      out += "[INST] ";
      if (first_user && !system.empty()) {
        out += llama2_sys ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" : system + "\n\n";
      }
      out += m.content + " [/INST]";
      first_user = false;
    } else {
      out += " " + m.content + " </s>";
    }
  }
  return out;
}

}  // namespace

std::string render_chat(ChatFormat format, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt) {
  for (const ChatMessage& m : messages) check_role(m);
  std::string out;
  switch (format) {
    case ChatFormat::kNone:
      for (const ChatMessage& m : messages) {
        if (!out.empty()) out += "\n";
        out += m.content;
      }
      return out;
    case ChatFormat::kChatML:
      for (const ChatMessage& m : messages) {
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatFormat::kLlama3:
      for (const ChatMessage& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case ChatFormat::kZephyr:
      for (const ChatMessage& m : messages) {
        out += "<|" + m.role + "|>\n" + m.content + "</s>\n";
      }
      if (add_generation_prompt) out += "<|assistant|>\n";
      return out;
    case ChatFormat::kLlama2:
      return render_inst(messages, true);
    case ChatFormat::kMistral:
      return render_inst(messages, false);
  }
  return out;
}

}  // namespace edgelm
