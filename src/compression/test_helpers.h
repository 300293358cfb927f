// Helpers shared by the compression tests (not part of the library).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "formats/test_util.h"
#include "kernels/thread_pool.h"
#include "model/loader.h"
#include "model/transformer.h"
#include "util/error.h"

namespace edgelm::compression::testing {

namespace fs = std::filesystem;

inline const std::string kStories = std::string(EDGELM_SOURCE_DIR) + "/models/stories260K";

using edgelm::testing::TempDir;

// A directory that lives for the whole test binary (random checkpoints are made once).
inline const TempDir& suite_dir() {
  static TempDir dir;
  return dir;
}

// tools/make_random_checkpoint.py (python3 + numpy): an HF checkpoint DIR with random weights
// and the same weights as convert_hf_to_gguf would lay them out in DIR.gguf.
inline std::string random_checkpoint(const std::string& preset, const std::string& shape_args) {
  const std::string dir =
      suite_dir().file(preset + "_" + std::to_string(std::hash<std::string>{}(shape_args)));
  if (fs::exists(dir + "/config.json")) return dir;
  const std::string cmd = "/usr/bin/python3 " + std::string(EDGELM_SOURCE_DIR) +
                          "/tools/make_random_checkpoint.py --preset " + preset + " " + shape_args +
                          " --out " + dir + " --gguf " + dir + ".gguf > /dev/null";
  if (std::system(cmd.c_str()) != 0) {
    ADD_FAILURE() << "failed: " << cmd;
  }
  return dir;
}

inline const char* kSmallShape =
    "--layers 1 --vocab 512 --hidden 64 --heads 4 --kv-heads 2 --ffn 128";

// Logits of every position of `tokens`, run with the model layer directly (F32 KV cache).
inline std::vector<float> all_logits(const LoadedModel& model, const std::vector<int32_t>& tokens) {
  ThreadPool pool(1);
  KvCache cache;
  cache.allocate(model.config, static_cast<int>(tokens.size()), DType::F32);
  ForwardBuffers buffers;
  buffers.allocate(model.config, static_cast<int>(tokens.size()), static_cast<int>(tokens.size()),
                   pool.size());
  std::vector<float> logits(tokens.size() * static_cast<size_t>(model.config.vocab_size));
  forward(model, tokens.data(), static_cast<int>(tokens.size()), 0, cache, buffers, pool,
          logits.data(), true);
  return logits;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The TinyStories sample (../shared): calibration and evaluation text for stories260K.
inline const std::string& stories_text() {
  static const std::string text =
      read_text(std::string(EDGELM_SHARED_DIR) + "/data/tinystories-sample/TinyStories-valid.txt");
  return text;
}

// The first `bytes` of stories_text() as a file in `dir`; returns its path.
inline std::string write_calibration_text(const TempDir& dir, size_t bytes) {
  const std::string path = dir.file("calib.txt");
  std::ofstream(path) << stories_text().substr(0, bytes);
  return path;
}

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error thrown>";
}

}  // namespace edgelm::compression::testing
