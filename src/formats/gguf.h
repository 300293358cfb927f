// GGUF v2/v3 reader and writer (ggml's container: typed key/value metadata,
// then tensor infos, then aligned tensor data). Tensors are views into the
// memory map; nothing is copied.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "formats/tensor.h"
#include "util/mapped_file.h"

namespace edgelm {

enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* gguf_type_name(GgufType type);

// One metadata value. Scalars use the field matching their type (all integer
// types in `i` or `u`, floats in `f`); the reader fills both `i` and `u` when
// the integer fits (signed types: `u` is 0 for negatives; uint64 above
// INT64_MAX: `i` is 0); the writer reads whichever of the two is non-zero.
//
// Arrays (type kArray) of `array_type` elements are stored packed, because a
// vocabulary holds hundreds of thousands of elements (one GgufValue per element
// made a 150k-token vocabulary cost ~35 MB):
// - numbers and bools: `array_bytes` holds the elements' little-endian
//   encodings back to back, exactly as in the file (bools are bytes 0 / 1);
// - strings: `array_bytes` holds the strings' bytes back to back and string k
//   ends at `string_ends[k]` (it starts where string k-1 ends, or at 0);
// - arrays of arrays: `nested_arrays` holds the inner arrays (type kArray).
// Build arrays with make_array() and append(); the writer checks that the
// three fields are consistent.
struct GgufValue {
  GgufType type = GgufType::kUint32;
  GgufType array_type = GgufType::kUint32;
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  bool b = false;
  std::string str;
  std::string array_bytes;
  std::vector<uint64_t> string_ends;
  std::vector<GgufValue> nested_arrays;

  // An empty array of `element_type` elements.
  static GgufValue make_array(GgufType element_type);
  // Element count of an array (0 for scalars).
  size_t array_size() const;
  // Element `index` (< array_size()) as a standalone value, for generic code.
  GgufValue element(size_t index) const;
  // Element `index` (< array_size()) of an array of strings, without copying.
  std::string_view string_element(size_t index) const;
  // Appends to an array; throws edgelm::Error when `element` is not of
  // `array_type` or its value does not fit the element type.
  void append(const GgufValue& element);
  void append_string(std::string_view element);  // array of strings only
};
// Short human-readable rendering (long arrays are summarized).
std::string gguf_value_to_string(const GgufValue& value);

class GgufFile {
 public:
  // Throws edgelm::Error naming the file and the problem for any malformed input.
  static std::unique_ptr<GgufFile> open(const std::string& path);
  // Parses a GGUF image in memory (the caller keeps `data` alive); used by fuzzers.
  static std::unique_ptr<GgufFile> parse(const uint8_t* data, size_t size,
                                         const std::string& name = "<memory>");

  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }
  const std::string& path() const { return path_; }

  const std::vector<std::string>& keys() const { return keys_; }  // file order
  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }
  // Typed getters throw edgelm::Error naming the key when it is missing or of an
  // incompatible type; integer widths convert when the value fits.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;  // accepts integers too
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<float> get_float_array(const std::string& key) const;
  // Optional variants: nullopt when missing, error when present with a bad type.
  std::optional<std::string> get_string_opt(const std::string& key) const;
  std::optional<int64_t> get_int_opt(const std::string& key) const;
  std::optional<double> get_float_opt(const std::string& key) const;
  std::optional<bool> get_bool_opt(const std::string& key) const;

  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find_tensor(const std::string& name) const;
  size_t data_offset() const { return data_offset_; }
  std::shared_ptr<MappedFile> mapping() const { return mapping_; }

 private:
  GgufFile() = default;
  void parse_image(const uint8_t* data, size_t size);

  std::string path_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::vector<std::string> keys_;
  std::map<std::string, GgufValue> values_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> tensor_index_;
  std::shared_ptr<MappedFile> mapping_;
};

// Builds a GGUF v3 file. write() goes to PATH.tmp and renames, so an
// interrupted write never leaves a half-written file under the final name.
class GgufWriter {
 public:
  void set(const std::string& key, const GgufValue& value);
  void set_string(const std::string& key, const std::string& value);
  void set_u32(const std::string& key, uint32_t value);
  void set_i32(const std::string& key, int32_t value);
  void set_u64(const std::string& key, uint64_t value);
  void set_f32(const std::string& key, float value);
  void set_bool(const std::string& key, bool value);
  void set_string_array(const std::string& key, const std::vector<std::string>& values);
  void set_f32_array(const std::string& key, const std::vector<float>& values);
  void set_i32_array(const std::string& key, const std::vector<int32_t>& values);
  void set_alignment(uint32_t alignment);
  // `data` must stay valid until write(); shape is row-major (outermost first).
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                  const void* data, size_t nbytes);
  void write(const std::string& path) const;

 private:
  void set_value(const std::string& key, GgufValue value);  // moves large arrays in

  std::vector<std::pair<std::string, GgufValue>> values_;
  std::vector<TensorView> tensors_;
  uint32_t alignment_ = 32;
};

}  // namespace edgelm
