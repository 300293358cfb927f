// safetensors reader (single file and Hugging Face sharded sets) and writer.
// Layout: u64 little-endian header length N, N bytes of JSON, then raw data.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/tensor.h"
#include "util/mapped_file.h"

namespace edgelm {

class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  // Parses an image in memory (caller keeps it alive); used by fuzzers.
  static std::unique_ptr<SafetensorsFile> parse(const uint8_t* data, size_t size,
                                                const std::string& name = "<memory>");

  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find_tensor(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::shared_ptr<MappedFile> mapping() const { return mapping_; }

 private:
  SafetensorsFile() = default;
  void parse_image(const uint8_t* data, size_t size, const std::string& name);
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  std::shared_ptr<MappedFile> mapping_;
};

// All tensors of a HF model directory: model.safetensors, or the shards named
// by model.safetensors.index.json (each shard checked against its index).
class SafetensorsSet {
 public:
  static SafetensorsSet open_dir(const std::string& dir);
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find_tensor(const std::string& name) const;
  int64_t total_bytes() const { return total_bytes_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  int64_t total_bytes_ = 0;
};

// Writes tensors (F32/F16/BF16 and the other safetensors dtypes) atomically
// (PATH.tmp then rename).
void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace edgelm
