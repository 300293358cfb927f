#include "generation/chat_template.h"

#include <gtest/gtest.h>

#include "util/mapped_file.h"

namespace edgelm {
namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Name a color"}};

TEST(ChatTemplate, ChatML) {
  EXPECT_EQ(render_chat(ChatFormat::kChatML, kConversation, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a color<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplate, Llama3) {
  EXPECT_EQ(render_chat(ChatFormat::kLlama3, {{"user", "Hi"}}, true),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, Llama2FoldsSystemIntoFirstTurn) {
  EXPECT_EQ(render_chat(ChatFormat::kLlama2, kConversation, true),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Name a color "
            "[/INST]");
}

TEST(ChatTemplate, Zephyr) {
  EXPECT_EQ(render_chat(ChatFormat::kZephyr, {{"system", "S"}, {"user", "U"}}, true),
            "<|system|>\nS</s>\n<|user|>\nU</s>\n<|assistant|>\n");
}

TEST(ChatTemplate, NoGenerationPrompt) {
  EXPECT_EQ(render_chat(ChatFormat::kChatML, {{"user", "Hi"}}, false),
            "<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatTemplate, RejectsUnknownRole) {
  EXPECT_THROW(render_chat(ChatFormat::kChatML, {{"tool", "x"}}, true), Error);
}

TEST(ChatTemplate, DetectsFamilies) {
  EXPECT_EQ(detect_chat_format(""), ChatFormat::kNone);
  EXPECT_EQ(detect_chat_format("{% for m in messages %}<|im_start|>{{ m.role }}"),
            ChatFormat::kChatML);
  EXPECT_EQ(detect_chat_format("{{ '<|start_header_id|>' + message['role'] }}"),
            ChatFormat::kLlama3);
  EXPECT_EQ(detect_chat_format("{{ '<|user|>\\n' }}{{ '<|assistant|>' }}"), ChatFormat::kZephyr);
  EXPECT_EQ(detect_chat_format("[INST] <<SYS>>"), ChatFormat::kLlama2);
  EXPECT_EQ(detect_chat_format("{{ '[INST] ' + content }}"), ChatFormat::kMistral);
  EXPECT_THROW(detect_chat_format("{{ something else }}"), Error);
  EXPECT_EQ(chat_format_from_name("llama3"), ChatFormat::kLlama3);
  EXPECT_THROW(chat_format_from_name("alpaca"), Error);
}

}  // namespace
}  // namespace edgelm
