#include "formats/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <sstream>

#include "formats/atomic_file.h"
#include "util/error.h"

namespace edgelm {
namespace {

static_assert(std::endian::native == std::endian::little,
              "GGUF is little-endian; this reader copies fields as-is");

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint32_t kWriteVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;
constexpr int kMaxDims = 4;
// Limits that no real file reaches but that keep hostile files from making us
// allocate absurd amounts or recurse deeply.
constexpr uint64_t kMaxKeyLength = uint64_t{1} << 16;
constexpr uint64_t kMaxTensorNameLength = uint64_t{1} << 16;
constexpr uint64_t kMaxMetadataValues = uint64_t{1} << 23;  // all array elements together
constexpr int kMaxArrayDepth = 16;
// Smallest possible encodings, used to reject counts the remaining bytes cannot hold.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;  // key length, type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes =
    8 + 4 + 8 + 4 + 8;  // name len, n_dims, 1 dim, type, offset

bool is_valid_type(uint32_t t) {
  return t <= static_cast<uint32_t>(GgufType::kFloat64);
}

bool is_integer_type(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64:
      return true;
    default:
      return false;
  }
}

bool is_unsigned_type(GgufType t) {
  return t == GgufType::kUint8 || t == GgufType::kUint16 || t == GgufType::kUint32 ||
         t == GgufType::kUint64;
}

bool is_float_type(GgufType t) {
  return t == GgufType::kFloat32 || t == GgufType::kFloat64;
}

// Bytes the smallest value of this type occupies in a file.
uint64_t min_encoded_bytes(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
    case GgufType::kString:
      return 8;
    case GgufType::kArray:
      return 4 + 8;
  }
  return 1;
}

void set_signed(GgufValue& v, int64_t x) {
  v.i = x;
  v.u = x >= 0 ? static_cast<uint64_t>(x) : 0;
}

void set_unsigned(GgufValue& v, uint64_t x) {
  v.u = x;
  v.i =
      x <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? static_cast<int64_t>(x) : 0;
}

// Bytes of one element in a packed number/bool array; 0 for strings and arrays.
size_t packed_size(GgufType t) {
  return t == GgufType::kString || t == GgufType::kArray ? 0 : min_encoded_bytes(t);
}

template <typename T>
T load(const char* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// Decodes a number or bool from its little-endian bytes (packed_size(t) of them).
GgufValue decode_packed(GgufType t, const char* p) {
  GgufValue v;
  v.type = t;
  switch (t) {
    case GgufType::kUint8:
      set_unsigned(v, load<uint8_t>(p));
      break;
    case GgufType::kInt8:
      set_signed(v, load<int8_t>(p));
      break;
    case GgufType::kUint16:
      set_unsigned(v, load<uint16_t>(p));
      break;
    case GgufType::kInt16:
      set_signed(v, load<int16_t>(p));
      break;
    case GgufType::kUint32:
      set_unsigned(v, load<uint32_t>(p));
      break;
    case GgufType::kInt32:
      set_signed(v, load<int32_t>(p));
      break;
    case GgufType::kUint64:
      set_unsigned(v, load<uint64_t>(p));
      break;
    case GgufType::kInt64:
      set_signed(v, load<int64_t>(p));
      break;
    case GgufType::kFloat32:
      v.f = load<float>(p);
      break;
    case GgufType::kFloat64:
      v.f = load<double>(p);
      break;
    case GgufType::kBool:
      v.b = load<uint8_t>(p) != 0;
      set_unsigned(v, v.b ? 1 : 0);
      break;
    case GgufType::kString:
    case GgufType::kArray:
      break;
  }
  return v;
}

std::string u128_to_string(unsigned __int128 x) {
  if (x == 0) return "0";
  std::string s;
  while (x > 0) {
    s.push_back(static_cast<char>('0' + static_cast<int>(x % 10)));
    x /= 10;
  }
  std::reverse(s.begin(), s.end());
  return s;
}

// Bounds-checked little-endian cursor over the file image.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& name)
      : data_(data), size_(size), name_(name) {}

  size_t pos() const { return pos_; }
  void seek(size_t pos) { pos_ = pos; }
  size_t remaining() const { return size_ - pos_; }
  const std::string& name() const { return name_; }
  // What is being read, for error messages ("header", "key 'x'", "tensor 'y'").
  std::string context = "header";

  void need(uint64_t n) const {
    if (n > remaining()) {
      fail(name_, ": file truncated while reading ", context, ": need ", n, " bytes at offset ",
           pos_, " but the file has ", size_, " bytes");
    }
  }

  template <typename T>
  T read() {
    need(sizeof(T));
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  // Returns the next n bytes and moves past them.
  const char* take(uint64_t n) {
    need(n);
    const char* p = reinterpret_cast<const char*>(data_ + pos_);
    pos_ += n;
    return p;
  }

  std::string read_string(uint64_t max_length, const char* what) {
    const uint64_t length = read<uint64_t>();
    if (length > max_length) {
      fail(name_, ": ", context, ": ", what, " length ", length, " exceeds the limit of ",
           max_length);
    }
    need(length);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& name_;
};

void check_bool_byte(const Reader& r, uint8_t b) {
  if (b > 1) fail(r.name(), ": ", r.context, ": bool value ", int{b}, " is not 0 or 1");
}

// Strings of an array, packed: a first pass checks the lengths against the
// file so that the bytes are allocated once, at their exact size.
void read_string_array(Reader& r, uint64_t count, GgufValue& out) {
  const size_t start = r.pos();
  uint64_t total_bytes = 0;  // <= file size: each string was checked to fit
  for (uint64_t k = 0; k < count; ++k) {
    const uint64_t length = r.read<uint64_t>();
    r.take(length);
    total_bytes += length;
  }
  r.seek(start);
  out.array_bytes.reserve(total_bytes);
  out.string_ends.reserve(count);
  for (uint64_t k = 0; k < count; ++k) {
    const uint64_t length = r.read<uint64_t>();
    out.array_bytes.append(r.take(length), length);
    out.string_ends.push_back(out.array_bytes.size());
  }
}

void read_value(Reader& r, GgufType type, int depth, uint64_t& budget, GgufValue& out) {
  out.type = type;
  if (const size_t size = packed_size(type); size != 0) {
    const char* p = r.take(size);
    if (type == GgufType::kBool) check_bool_byte(r, load<uint8_t>(p));
    out = decode_packed(type, p);
    return;
  }
  if (type == GgufType::kString) {
    out.str = r.read_string(std::numeric_limits<uint64_t>::max(), "string");
    return;
  }
  if (depth >= kMaxArrayDepth) {
    fail(r.name(), ": ", r.context, ": arrays nested deeper than ", kMaxArrayDepth);
  }
  const uint32_t elem_type = r.read<uint32_t>();
  if (!is_valid_type(elem_type)) {
    fail(r.name(), ": ", r.context, ": unknown array element type ", elem_type);
  }
  out.array_type = static_cast<GgufType>(elem_type);
  const uint64_t count = r.read<uint64_t>();
  const uint64_t min_bytes = min_encoded_bytes(out.array_type);
  if (count > r.remaining() / min_bytes) {
    fail(r.name(), ": ", r.context, ": array of ", count, " ", gguf_type_name(out.array_type),
         " elements cannot fit in the ", r.remaining(), " bytes left in the file");
  }
  if (count > budget) {
    fail(r.name(), ": ", r.context, ": too-large metadata (more than ", kMaxMetadataValues,
         " values in all arrays)");
  }
  budget -= count;
  if (const size_t size = packed_size(out.array_type); size != 0) {
    // Numbers and bools are kept in their file encoding: one copy, no decoding.
    out.array_bytes.assign(r.take(count * size), count * size);
    if (out.array_type == GgufType::kBool) {
      for (const char c : out.array_bytes) check_bool_byte(r, static_cast<uint8_t>(c));
    }
  } else if (out.array_type == GgufType::kString) {
    read_string_array(r, count, out);
  } else {
    out.nested_arrays.resize(count);
    for (GgufValue& inner : out.nested_arrays) {
      read_value(r, GgufType::kArray, depth + 1, budget, inner);
    }
  }
}

const char* const kTypeNames[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                  "int32",  "float32", "bool",   "string", "array",
                                  "uint64", "int64",   "float64"};

void put_bytes(std::string& out, const void* p, size_t n) {
  out.append(static_cast<const char*>(p), n);
}

template <typename T>
void put(std::string& out, T value) {
  put_bytes(out, &value, sizeof(T));
}

void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.append(s);
}

uint64_t align_up(uint64_t x, uint64_t alignment) {
  return (x + alignment - 1) / alignment * alignment;
}

// Integer payload of a writer value: signed types use `i`, unsigned `u`; either
// field is accepted so values built by hand with the "other" field still work.
// `where` names the value in errors ("GGUF key 'x'").
uint64_t writer_unsigned(std::string_view where, const GgufValue& v, uint64_t max) {
  uint64_t x = v.u;
  if (x == 0 && v.i != 0) {
    if (v.i < 0) fail(where, ": negative value ", v.i, " for ", gguf_type_name(v.type));
    x = static_cast<uint64_t>(v.i);
  }
  if (x > max) fail(where, ": value ", x, " does not fit ", gguf_type_name(v.type));
  return x;
}

int64_t writer_signed(std::string_view where, const GgufValue& v, int64_t min, int64_t max) {
  int64_t x = v.i;
  if (x == 0 && v.u != 0) {
    if (v.u > static_cast<uint64_t>(max)) {
      fail(where, ": value ", v.u, " does not fit ", gguf_type_name(v.type));
    }
    x = static_cast<int64_t>(v.u);
  }
  if (x < min || x > max) fail(where, ": value ", x, " does not fit ", gguf_type_name(v.type));
  return x;
}

// Appends the little-endian encoding of a number or bool (the inverse of decode_packed).
void encode_packed(std::string& out, std::string_view where, const GgufValue& v) {
  switch (v.type) {
    case GgufType::kUint8:
      put<uint8_t>(out, static_cast<uint8_t>(writer_unsigned(where, v, UINT8_MAX)));
      break;
    case GgufType::kInt8:
      put<int8_t>(out, static_cast<int8_t>(writer_signed(where, v, INT8_MIN, INT8_MAX)));
      break;
    case GgufType::kUint16:
      put<uint16_t>(out, static_cast<uint16_t>(writer_unsigned(where, v, UINT16_MAX)));
      break;
    case GgufType::kInt16:
      put<int16_t>(out, static_cast<int16_t>(writer_signed(where, v, INT16_MIN, INT16_MAX)));
      break;
    case GgufType::kUint32:
      put<uint32_t>(out, static_cast<uint32_t>(writer_unsigned(where, v, UINT32_MAX)));
      break;
    case GgufType::kInt32:
      put<int32_t>(out, static_cast<int32_t>(writer_signed(where, v, INT32_MIN, INT32_MAX)));
      break;
    case GgufType::kUint64:
      put<uint64_t>(out, writer_unsigned(where, v, UINT64_MAX));
      break;
    case GgufType::kInt64:
      put<int64_t>(out, writer_signed(where, v, INT64_MIN, INT64_MAX));
      break;
    case GgufType::kFloat32:
      put<float>(out, static_cast<float>(v.f));
      break;
    case GgufType::kFloat64:
      put<double>(out, v.f);
      break;
    case GgufType::kBool:
      put<uint8_t>(out, v.b ? 1 : 0);
      break;
    case GgufType::kString:
    case GgufType::kArray:
      fail(where, ": ", gguf_type_name(v.type), " is not a number");
  }
}

void put_value(std::string& out, std::string_view where, const GgufValue& v) {
  if (v.type == GgufType::kString) {
    put_string(out, v.str);
    return;
  }
  if (v.type != GgufType::kArray) {
    encode_packed(out, where, v);
    return;
  }
  put<uint32_t>(out, static_cast<uint32_t>(v.array_type));
  put<uint64_t>(out, v.array_size());
  if (packed_size(v.array_type) != 0) {
    out.append(v.array_bytes);  // already in file encoding
  } else if (v.array_type == GgufType::kString) {
    for (size_t k = 0; k < v.string_ends.size(); ++k) {
      const std::string_view s = v.string_element(k);
      put<uint64_t>(out, s.size());
      out.append(s);
    }
  } else {
    for (const GgufValue& inner : v.nested_arrays) put_value(out, where, inner);
  }
}

// Arrays built by hand must have consistent packed storage (see GgufValue).
void check_writer_value(std::string_view where, const GgufValue& v, int depth) {
  if (!is_valid_type(static_cast<uint32_t>(v.type))) {
    fail(where, ": unknown value type ", static_cast<uint32_t>(v.type));
  }
  if (v.type != GgufType::kArray) return;
  if (depth >= kMaxArrayDepth) fail(where, ": arrays nested too deeply");
  if (!is_valid_type(static_cast<uint32_t>(v.array_type))) {
    fail(where, ": unknown array element type ", static_cast<uint32_t>(v.array_type));
  }
  const char* elem_name = gguf_type_name(v.array_type);
  const size_t size = packed_size(v.array_type);
  bool consistent = true;
  if (size != 0) {
    consistent =
        v.string_ends.empty() && v.nested_arrays.empty() && v.array_bytes.size() % size == 0;
    if (consistent && v.array_type == GgufType::kBool) {
      for (const char c : v.array_bytes) {
        const uint8_t byte = static_cast<uint8_t>(c);
        if (byte > 1) fail(where, ": array of bool holds byte ", int{byte});
      }
    }
  } else if (v.array_type == GgufType::kString) {
    consistent = v.nested_arrays.empty() &&
                 std::is_sorted(v.string_ends.begin(), v.string_ends.end()) &&
                 (v.string_ends.empty() ? v.array_bytes.empty()
                                        : v.string_ends.back() == v.array_bytes.size());
  } else {
    consistent = v.array_bytes.empty() && v.string_ends.empty();
    for (const GgufValue& inner : v.nested_arrays) {
      if (inner.type != GgufType::kArray) {
        fail(where, ": array of array holds a ", gguf_type_name(inner.type), " element");
      }
      check_writer_value(where, inner, depth + 1);
    }
  }
  if (!consistent) {
    fail(where, ": array of ", elem_name, " has inconsistent storage (", v.array_bytes.size(),
         " bytes, ", v.string_ends.size(), " string ends, ", v.nested_arrays.size(),
         " nested arrays)");
  }
}

bool valid_alignment(uint64_t a) {
  return a > 0 && a <= UINT32_MAX && (a & (a - 1)) == 0;
}

}  // namespace

const char* gguf_type_name(GgufType type) {
  const uint32_t t = static_cast<uint32_t>(type);
  return is_valid_type(t) ? kTypeNames[t] : "unknown";
}

GgufValue GgufValue::make_array(GgufType element_type) {
  GgufValue v;
  v.type = GgufType::kArray;
  v.array_type = element_type;
  return v;
}

size_t GgufValue::array_size() const {
  if (type != GgufType::kArray) return 0;
  if (const size_t size = packed_size(array_type); size != 0) return array_bytes.size() / size;
  return array_type == GgufType::kString ? string_ends.size() : nested_arrays.size();
}

GgufValue GgufValue::element(size_t index) const {
  if (index >= array_size()) {
    fail("GGUF array element ", index, " is out of range (", array_size(), " elements)");
  }
  if (const size_t size = packed_size(array_type); size != 0) {
    return decode_packed(array_type, array_bytes.data() + index * size);
  }
  if (array_type == GgufType::kArray) return nested_arrays[index];
  GgufValue v;
  v.type = GgufType::kString;
  v.str = string_element(index);
  return v;
}

std::string_view GgufValue::string_element(size_t index) const {
  if (type != GgufType::kArray || array_type != GgufType::kString) {
    fail("GGUF value of type ", gguf_type_name(type), " is not an array of strings");
  }
  if (index >= string_ends.size()) {
    fail("GGUF array element ", index, " is out of range (", string_ends.size(), " elements)");
  }
  const uint64_t begin = index == 0 ? 0 : string_ends[index - 1];
  const uint64_t end = string_ends[index];
  if (begin > end || end > array_bytes.size()) {
    fail("GGUF array of string has inconsistent string ends at element ", index);
  }
  return std::string_view(array_bytes).substr(begin, end - begin);
}

void GgufValue::append(const GgufValue& element) {
  if (type != GgufType::kArray) {
    fail("GGUF value of type ", gguf_type_name(type), " is not an array");
  }
  if (element.type != array_type) {
    fail("GGUF array of ", gguf_type_name(array_type), " cannot hold a ",
         gguf_type_name(element.type), " element");
  }
  if (array_type == GgufType::kString) {
    append_string(element.str);
  } else if (array_type == GgufType::kArray) {
    nested_arrays.push_back(element);
  } else {
    encode_packed(array_bytes, str_cat("GGUF array of ", gguf_type_name(array_type)), element);
  }
}

void GgufValue::append_string(std::string_view element) {
  if (type != GgufType::kArray || array_type != GgufType::kString) {
    fail("GGUF value of type ", gguf_type_name(type), " is not an array of strings");
  }
  array_bytes.append(element);
  string_ends.push_back(array_bytes.size());
}

std::string gguf_value_to_string(const GgufValue& v) {
  constexpr size_t kMaxStringChars = 120;
  constexpr size_t kMaxArrayItems = 8;
  std::ostringstream out;
  switch (v.type) {
    case GgufType::kUint8:
    case GgufType::kUint16:
    case GgufType::kUint32:
    case GgufType::kUint64:
      out << v.u;
      break;
    case GgufType::kInt8:
    case GgufType::kInt16:
    case GgufType::kInt32:
    case GgufType::kInt64:
      out << v.i;
      break;
    case GgufType::kFloat32:
    case GgufType::kFloat64:
      out << v.f;
      break;
    case GgufType::kBool:
      out << (v.b ? "true" : "false");
      break;
    case GgufType::kString:
      if (v.str.size() > kMaxStringChars) {
        out << '"' << v.str.substr(0, kMaxStringChars) << "...\" (" << v.str.size() << " bytes)";
      } else {
        out << '"' << v.str << '"';
      }
      break;
    case GgufType::kArray: {
      out << '[';
      const size_t count = v.array_size();
      const size_t shown = std::min(count, kMaxArrayItems);
      for (size_t i = 0; i < shown; ++i) {
        out << (i ? ", " : "") << gguf_value_to_string(v.element(i));
      }
      if (shown < count) out << ", ... (" << count << " " << gguf_type_name(v.array_type) << ")";
      out << ']';
      break;
    }
  }
  return out.str();
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  file->mapping_ = MappedFile::open(path);
  file->parse_image(file->mapping_->data(), file->mapping_->size());
  return file;
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* data, size_t size,
                                          const std::string& name) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = name;
  file->parse_image(data, size);
  return file;
}

void GgufFile::parse_image(const uint8_t* data, size_t size) {
  const std::string& name = path_;
  if (size < sizeof(kMagic) || std::memcmp(data, kMagic, sizeof(kMagic)) != 0) {
    fail(name, ": not a GGUF file (bad magic)");
  }
  Reader r(data, size, name);
  r.seek(sizeof(kMagic));
  version_ = r.read<uint32_t>();
  if (version_ == 1) {
    fail(name, ": GGUF version 1 is not supported (only versions 2 and 3); re-convert the file ",
         "with a current llama.cpp");
  }
  if (version_ != 2 && version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(version_);
    if (swapped >= 1 && swapped <= 3) fail(name, ": big-endian GGUF files are not supported");
    fail(name, ": unsupported GGUF version ", version_, " (supported: 2 and 3)");
  }
  const uint64_t n_tensors = r.read<uint64_t>();
  const uint64_t n_kv = r.read<uint64_t>();
  if (n_kv > r.remaining() / kMinKvBytes) {
    fail(name, ": metadata count ", n_kv, " is impossible for a file of ", size, " bytes");
  }
  if (n_tensors > r.remaining() / kMinTensorInfoBytes) {
    fail(name, ": tensor count ", n_tensors, " is impossible for a file of ", size, " bytes");
  }

  // Metadata.
  keys_.reserve(n_kv);
  uint64_t budget = kMaxMetadataValues;
  for (uint64_t i = 0; i < n_kv; ++i) {
    r.context = str_cat("metadata entry #", i);
    std::string key = r.read_string(kMaxKeyLength, "key");
    r.context = str_cat("key '", key, "'");
    const uint32_t type = r.read<uint32_t>();
    if (!is_valid_type(type)) fail(name, ": ", r.context, ": unknown value type ", type);
    GgufValue value;
    read_value(r, static_cast<GgufType>(type), 0, budget, value);
    if (values_.count(key)) fail(name, ": duplicate key '", key, "'");
    keys_.push_back(key);
    values_.emplace(std::move(key), std::move(value));
  }

  alignment_ = kDefaultAlignment;
  if (const GgufValue* a = find("general.alignment")) {
    if (!is_integer_type(a->type)) {
      fail(name, ": general.alignment has type ", gguf_type_name(a->type), ", expected uint32");
    }
    if ((!is_unsigned_type(a->type) && a->i < 0) || !valid_alignment(a->u)) {
      fail(name, ": general.alignment ", gguf_value_to_string(*a),
           " is not a power of two between 1 and 2^31");
    }
    alignment_ = a->u;
  }

  // Tensor infos.
  tensors_.reserve(n_tensors);
  std::vector<uint64_t> offsets;
  offsets.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    r.context = str_cat("tensor info #", i);
    TensorView t;
    t.name = r.read_string(kMaxTensorNameLength, "tensor name");
    r.context = str_cat("tensor '", t.name, "'");
    const std::string& where = r.context;
    const uint32_t n_dims = r.read<uint32_t>();
    if (n_dims == 0 || n_dims > kMaxDims) {
      fail(name, ": ", where, " has ", n_dims, " dimensions (expected 1 to ", kMaxDims, ")");
    }
    int64_t ne[kMaxDims] = {};
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = r.read<uint64_t>();
      if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail(name, ": ", where, " has invalid dimension ", d, " = ", dim);
      }
      ne[d] = static_cast<int64_t>(dim);
      if (__builtin_mul_overflow(numel, ne[d], &numel)) {
        fail(name, ": ", where, ": element count overflows");
      }
    }
    const uint32_t type = r.read<uint32_t>();
    const DTypeTraits* traits = dtype_traits(type);
    if (traits == nullptr || is_in_memory_layout(type)) {
      fail(name, ": ", where, " has unknown tensor type id ", type);
    }
    offsets.push_back(r.read<uint64_t>());

    if (ne[0] % traits->block_size != 0) {
      fail(name, ": ", where, ": row length ", ne[0], " is not a multiple of the ", traits->name,
           " block size ", traits->block_size);
    }
    uint64_t row_bytes = 0;
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(ne[0] / traits->block_size),
                               static_cast<uint64_t>(traits->block_bytes), &row_bytes) ||
        __builtin_mul_overflow(row_bytes, static_cast<uint64_t>(numel / ne[0]), &nbytes)) {
      fail(name, ": ", where, ": byte size overflows");
    }
    t.dtype = static_cast<DType>(type);
    t.nbytes = nbytes;
    t.shape.assign(std::make_reverse_iterator(ne + n_dims), std::make_reverse_iterator(ne));
    if (tensor_index_.count(t.name)) fail(name, ": duplicate tensor name '", t.name, "'");
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // Data section: starts at the next multiple of the alignment; offsets are relative to it.
  data_offset_ = align_up(r.pos(), alignment_);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TensorView& t = tensors_[i];
    if (offsets[i] % alignment_ != 0) {
      fail(name, ": tensor '", t.name, "' data offset ", offsets[i],
           " is not a multiple of the alignment ", alignment_);
    }
    const unsigned __int128 start = static_cast<unsigned __int128>(data_offset_) + offsets[i];
    const unsigned __int128 end = start + t.nbytes;
    if (end > size) {
      fail(name, ": tensor '", t.name, "' data [", u128_to_string(start), ", ", u128_to_string(end),
           ") extends past end of file (size ", size, ")");
    }
  }
  std::vector<size_t> order(tensors_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return offsets[a] < offsets[b]; });
  for (size_t k = 1; k < order.size(); ++k) {
    const size_t prev = order[k - 1], cur = order[k];
    if (offsets[cur] < offsets[prev] + tensors_[prev].nbytes) {
      fail(name, ": tensors '", tensors_[prev].name, "' and '", tensors_[cur].name,
           "' overlap in the data section");
    }
  }
  for (size_t i = 0; i < tensors_.size(); ++i) tensors_[i].data = data + data_offset_ + offsets[i];
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

const TensorView* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

[[noreturn]] void wrong_type(const std::string& file, const std::string& key, const GgufValue& v,
                             const char* expected) {
  std::string actual = gguf_type_name(v.type);
  if (v.type == GgufType::kArray) actual = str_cat("array of ", gguf_type_name(v.array_type));
  fail(file, ": key '", key, "' has type ", actual, ", expected ", expected);
}

int64_t value_as_int(const std::string& file, const std::string& key, const GgufValue& v) {
  if (!is_integer_type(v.type)) wrong_type(file, key, v, "an integer");
  if (is_unsigned_type(v.type)) {
    if (v.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(file, ": key '", key, "' value ", v.u, " does not fit in int64");
    }
    return static_cast<int64_t>(v.u);
  }
  return v.i;
}

double value_as_float(const std::string& file, const std::string& key, const GgufValue& v) {
  if (is_float_type(v.type)) return v.f;
  if (is_unsigned_type(v.type)) return static_cast<double>(v.u);
  if (is_integer_type(v.type)) return static_cast<double>(v.i);
  wrong_type(file, key, v, "a number");
}

const GgufValue& require_array(const std::string& file, const std::string& key, const GgufValue* v,
                               const char* expected) {
  if (v == nullptr) fail(file, ": missing key '", key, "'");
  if (v->type != GgufType::kArray) wrong_type(file, key, *v, expected);
  return *v;
}

}  // namespace

std::optional<std::string> GgufFile::get_string_opt(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != GgufType::kString) wrong_type(path_, key, *v, "string");
  return v->str;
}

std::optional<int64_t> GgufFile::get_int_opt(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  return value_as_int(path_, key, *v);
}

std::optional<double> GgufFile::get_float_opt(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  return value_as_float(path_, key, *v);
}

std::optional<bool> GgufFile::get_bool_opt(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != GgufType::kBool) wrong_type(path_, key, *v, "bool");
  return v->b;
}

std::string GgufFile::get_string(const std::string& key) const {
  auto v = get_string_opt(key);
  if (!v) fail(path_, ": missing key '", key, "'");
  return *v;
}

int64_t GgufFile::get_int(const std::string& key) const {
  auto v = get_int_opt(key);
  if (!v) fail(path_, ": missing key '", key, "'");
  return *v;
}

double GgufFile::get_float(const std::string& key) const {
  auto v = get_float_opt(key);
  if (!v) fail(path_, ": missing key '", key, "'");
  return *v;
}

bool GgufFile::get_bool(const std::string& key) const {
  auto v = get_bool_opt(key);
  if (!v) fail(path_, ": missing key '", key, "'");
  return *v;
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue& v = require_array(path_, key, find(key), "array of string");
  if (v.array_type != GgufType::kString) wrong_type(path_, key, v, "array of string");
  std::vector<std::string> out;
  out.reserve(v.array_size());
  for (size_t k = 0; k < v.array_size(); ++k) out.emplace_back(v.string_element(k));
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue& v = require_array(path_, key, find(key), "array of integers");
  if (!is_integer_type(v.array_type)) wrong_type(path_, key, v, "array of integers");
  const size_t size = packed_size(v.array_type);
  std::vector<int64_t> out;
  out.reserve(v.array_size());
  for (size_t k = 0; k < v.array_size(); ++k) {
    out.push_back(value_as_int(path_, key, decode_packed(v.array_type, &v.array_bytes[k * size])));
  }
  return out;
}

std::vector<float> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue& v = require_array(path_, key, find(key), "array of numbers");
  if (!is_float_type(v.array_type) && !is_integer_type(v.array_type)) {
    wrong_type(path_, key, v, "array of numbers");
  }
  const size_t size = packed_size(v.array_type);
  std::vector<float> out;
  out.reserve(v.array_size());
  for (size_t k = 0; k < v.array_size(); ++k) {
    const GgufValue e = decode_packed(v.array_type, &v.array_bytes[k * size]);
    out.push_back(static_cast<float>(value_as_float(path_, key, e)));
  }
  return out;
}

// ---------------------------------------------------------------------------
// Writer

void GgufWriter::set(const std::string& key, const GgufValue& value) {
  set_value(key, value);
}

void GgufWriter::set_value(const std::string& key, GgufValue value) {
  if (key.empty()) fail("GGUF writer: empty key");
  const std::string where = str_cat("GGUF key '", key, "'");
  check_writer_value(where, value, 0);
  if (key == "general.alignment") {
    if (!is_integer_type(value.type)) fail("GGUF key 'general.alignment' must be an integer");
    const uint64_t a = writer_unsigned(where, value, UINT32_MAX);
    if (!valid_alignment(a)) fail("GGUF alignment ", a, " is not a power of two");
    alignment_ = static_cast<uint32_t>(a);
  }
  for (auto& kv : values_) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  values_.emplace_back(key, std::move(value));
}

void GgufWriter::set_string(const std::string& key, const std::string& value) {
  GgufValue v;
  v.type = GgufType::kString;
  v.str = value;
  set_value(key, std::move(v));
}

void GgufWriter::set_u32(const std::string& key, uint32_t value) {
  GgufValue v;
  v.type = GgufType::kUint32;
  set_unsigned(v, value);
  set_value(key, std::move(v));
}

void GgufWriter::set_i32(const std::string& key, int32_t value) {
  GgufValue v;
  v.type = GgufType::kInt32;
  set_signed(v, value);
  set_value(key, std::move(v));
}

void GgufWriter::set_u64(const std::string& key, uint64_t value) {
  GgufValue v;
  v.type = GgufType::kUint64;
  set_unsigned(v, value);
  set_value(key, std::move(v));
}

void GgufWriter::set_f32(const std::string& key, float value) {
  GgufValue v;
  v.type = GgufType::kFloat32;
  v.f = value;
  set_value(key, std::move(v));
}

void GgufWriter::set_bool(const std::string& key, bool value) {
  GgufValue v;
  v.type = GgufType::kBool;
  v.b = value;
  set_unsigned(v, value ? 1 : 0);
  set_value(key, std::move(v));
}

void GgufWriter::set_string_array(const std::string& key, const std::vector<std::string>& values) {
  GgufValue v = GgufValue::make_array(GgufType::kString);
  size_t total_bytes = 0;
  for (const std::string& s : values) total_bytes += s.size();
  v.array_bytes.reserve(total_bytes);
  v.string_ends.reserve(values.size());
  for (const std::string& s : values) v.append_string(s);
  set_value(key, std::move(v));
}

void GgufWriter::set_f32_array(const std::string& key, const std::vector<float>& values) {
  GgufValue v = GgufValue::make_array(GgufType::kFloat32);
  v.array_bytes.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  set_value(key, std::move(v));
}

void GgufWriter::set_i32_array(const std::string& key, const std::vector<int32_t>& values) {
  GgufValue v = GgufValue::make_array(GgufType::kInt32);
  v.array_bytes.assign(reinterpret_cast<const char*>(values.data()),
                       values.size() * sizeof(int32_t));
  set_value(key, std::move(v));
}

void GgufWriter::set_alignment(uint32_t alignment) {
  if (!valid_alignment(alignment)) fail("GGUF alignment ", alignment, " is not a power of two");
  set_u32("general.alignment", alignment);
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            const void* data, size_t nbytes) {
  if (name.empty()) fail("GGUF writer: empty tensor name");
  for (const TensorView& t : tensors_) {
    if (t.name == name) fail("GGUF writer: duplicate tensor '", name, "'");
  }
  if (shape.empty() || shape.size() > kMaxDims) {
    fail("GGUF writer: tensor '", name, "' has ", shape.size(), " dimensions (expected 1 to 4)");
  }
  const DTypeTraits* traits = dtype_traits(static_cast<uint32_t>(dtype));
  if (traits == nullptr) {
    fail("GGUF writer: tensor '", name, "' has unknown type ", static_cast<uint32_t>(dtype));
  }
  int64_t rows = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] <= 0) fail("GGUF writer: tensor '", name, "' has shape ", shape_to_string(shape));
    if (d + 1 < shape.size() && __builtin_mul_overflow(rows, shape[d], &rows)) {
      fail("GGUF writer: tensor '", name, "' is too large");
    }
  }
  if (shape.back() % traits->block_size != 0) {
    fail("GGUF writer: tensor '", name, "': row length ", shape.back(),
         " is not a multiple of the ", traits->name, " block size ", traits->block_size);
  }
  uint64_t expected = 0;
  if (__builtin_mul_overflow(dtype_row_bytes(dtype, shape.back()), static_cast<uint64_t>(rows),
                             &expected)) {
    fail("GGUF writer: tensor '", name, "' is too large");
  }
  if (expected != nbytes) {
    fail("GGUF writer: tensor '", name, "' has ", nbytes, " bytes but shape ",
         shape_to_string(shape), " of ", traits->name, " needs ", expected);
  }
  if (data == nullptr) fail("GGUF writer: tensor '", name, "' has no data");
  TensorView t;
  t.name = name;
  t.dtype = dtype;
  t.shape = shape;
  t.data = data;
  t.nbytes = nbytes;
  tensors_.push_back(std::move(t));
}

void GgufWriter::write(const std::string& path) const {
  std::string header;
  header.append(kMagic, sizeof(kMagic));
  put<uint32_t>(header, kWriteVersion);
  put<uint64_t>(header, tensors_.size());
  put<uint64_t>(header, values_.size());
  for (const auto& [key, value] : values_) {
    put_string(header, key);
    put<uint32_t>(header, static_cast<uint32_t>(value.type));
    put_value(header, str_cat("GGUF key '", key, "'"), value);
  }
  uint64_t offset = 0;
  for (const TensorView& t : tensors_) {
    put_string(header, t.name);
    put<uint32_t>(header, static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) {
      put<uint64_t>(header, static_cast<uint64_t>(*it));
    }
    put<uint32_t>(header, static_cast<uint32_t>(t.dtype));
    put<uint64_t>(header, offset);
    offset = align_up(offset + t.nbytes, alignment_);
  }

  AtomicFile out(path);
  out.write(header.data(), header.size());
  out.write_zeros(align_up(header.size(), alignment_) - header.size());
  for (const TensorView& t : tensors_) {
    out.write(t.data, t.nbytes);
    out.write_zeros(align_up(t.nbytes, alignment_) - t.nbytes);
  }
  out.commit();
}

}  // namespace edgelm
