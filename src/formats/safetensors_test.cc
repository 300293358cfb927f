#include "formats/safetensors.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "formats/test_util.h"

namespace edgelm {
namespace {

using testing::Bytes;
using testing::error_of;
using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

// Owns the data behind a set of views.
struct Sample {
  std::vector<float> f32 = {1.0f, -2.5f, 3.25f, 0.0f, 5.0f, 6.0f};
  std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x7BFF, 0x0001};
  std::vector<uint16_t> bf16 = {0x3F80, 0xBF80};
  std::vector<double> f64 = {1e300, -1e-300};
  std::vector<int8_t> i8 = {-128, 0, 127};
  std::vector<int16_t> i16 = {-32768, 32767};
  std::vector<int32_t> i32 = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<int64_t> i64 = {INT64_MIN, INT64_MAX};

  static TensorView view(std::string name, DType dtype, std::vector<int64_t> shape,
                         const void* data, size_t nbytes) {
    TensorView t;
    t.name = std::move(name);
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.data = data;
    t.nbytes = nbytes;
    return t;
  }
  std::vector<TensorView> views() const {
    return {
        view("model.f32", DType::F32, {2, 3}, f32.data(), f32.size() * 4),
        view("model.f16", DType::F16, {4}, f16.data(), f16.size() * 2),
        view("model.bf16", DType::BF16, {1, 2}, bf16.data(), bf16.size() * 2),
        view("model.f64", DType::F64, {2}, f64.data(), f64.size() * 8),
        view("model.i8", DType::I8, {3}, i8.data(), i8.size()),
        view("model.i16", DType::I16, {2}, i16.data(), i16.size() * 2),
        view("model.i32", DType::I32, {2, 2, 2}, i32.data(), i32.size() * 4),
        view("model.i64", DType::I64, {2}, i64.data(), i64.size() * 8),
        view("model.empty", DType::F32, {0, 4}, nullptr, 0),
        view("model.scalar", DType::F32, {}, f32.data(), 4),
    };
  }
};

void expect_views_equal(const TensorView& expected, const TensorView* actual) {
  SCOPED_TRACE(expected.name);
  ASSERT_NE(actual, nullptr);
  EXPECT_EQ(actual->dtype, expected.dtype);
  EXPECT_EQ(actual->shape, expected.shape);
  ASSERT_EQ(actual->nbytes, expected.nbytes);
  if (expected.nbytes > 0) {
    EXPECT_EQ(std::memcmp(actual->data, expected.data, expected.nbytes), 0);
  }
}

TEST(Safetensors, RoundTripsAllDtypesAndMetadata) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  Sample sample;
  write_safetensors(path, sample.views(), {{"format", "pt"}, {"note", "x\"y"}});
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), sample.views().size());
  for (const TensorView& t : sample.views()) expect_views_equal(t, f->find_tensor(t.name));
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("note"), "x\"y");
  EXPECT_EQ(f->find_tensor("missing"), nullptr);
  // Tensors come back in data order; the data section starts 8-byte aligned.
  const Bytes bytes = read_bytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);
  EXPECT_EQ(f->tensors().front().name, "model.f32");
  EXPECT_EQ(static_cast<const uint8_t*>(f->tensors().front().data),
            f->mapping()->data() + 8 + header_len);
}

TEST(Safetensors, WriterRejectsBadViews) {
  TempDir dir;
  std::vector<uint8_t> data(64);
  auto write = [&](TensorView t) { write_safetensors(dir.file("x.safetensors"), {t}); };
  EXPECT_NE(error_of([&] {
              write(Sample::view("q", DType::Q8_0, {32}, data.data(), 34));
            }).find("tensor 'q': dtype q8_0 cannot be stored in safetensors"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write(Sample::view("w", DType::F32, {4}, data.data(), 15));
            }).find("has 15 bytes but shape [4] of F32 needs 16"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write_safetensors(dir.file("x.safetensors"),
                                {Sample::view("a", DType::F32, {1}, data.data(), 4),
                                 Sample::view("a", DType::F32, {1}, data.data(), 4)});
            }).find("duplicate tensor name"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write(Sample::view("bad\xff", DType::F32, {1}, data.data(), 4));
            }).find("must be UTF-8"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.safetensors.tmp")));
}

// ---------------------------------------------------------------------------
// Directories: single file and sharded sets.

void write_json(const std::string& path, const std::string& text) {
  write_bytes(path, Bytes(text.begin(), text.end()));
}

TEST(SafetensorsSet, OpensSingleFileDirectory) {
  TempDir dir;
  Sample sample;
  write_safetensors(dir.file("model.safetensors"), sample.views());
  SafetensorsSet set = SafetensorsSet::open_dir(dir.path().string());
  EXPECT_EQ(set.tensors().size(), sample.views().size());
  int64_t total = 0;
  for (const TensorView& t : sample.views()) {
    expect_views_equal(t, set.find_tensor(t.name));
    total += static_cast<int64_t>(t.nbytes);
  }
  EXPECT_EQ(set.total_bytes(), total);
}

struct ShardedDir {
  TempDir dir;
  Sample sample;
  std::vector<TensorView> all = sample.views();
  std::vector<TensorView> first{all.begin(), all.begin() + 4};
  std::vector<TensorView> second{all.begin() + 4, all.end()};
  nlohmann::json index;
  ShardedDir() {
    write_safetensors(dir.file("model-00001-of-00002.safetensors"), first);
    write_safetensors(dir.file("model-00002-of-00002.safetensors"), second);
    index["metadata"] = {{"total_size", 123}};
    for (const auto& t : first) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
    for (const auto& t : second) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
    write_index();
  }
  void write_index() { write_json(dir.file("model.safetensors.index.json"), index.dump(2)); }
  std::string open_error() {
    return error_of([&] { SafetensorsSet::open_dir(dir.path().string()); });
  }
};

TEST(SafetensorsSet, OpensShardedDirectory) {
  ShardedDir d;
  SafetensorsSet set = SafetensorsSet::open_dir(d.dir.path().string() + "/");
  ASSERT_EQ(set.tensors().size(), d.all.size());
  for (const TensorView& t : d.all) expect_views_equal(t, set.find_tensor(t.name));
  // Moving the set keeps the views valid (the mappings move with it).
  SafetensorsSet moved = std::move(set);
  expect_views_equal(d.all[0], moved.find_tensor(d.all[0].name));
}

TEST(SafetensorsSet, IndexedTensorMissingFromItsShard) {
  ShardedDir d;
  d.index["weight_map"]["model.not_there"] = "model-00001-of-00002.safetensors";
  d.write_index();
  EXPECT_NE(
      d.open_error().find("tensor 'model.not_there' is listed in shard "
                          "'model-00001-of-00002.safetensors' but that shard does not contain it"),
      std::string::npos);
}

TEST(SafetensorsSet, IndexedTensorInTheWrongShard) {
  ShardedDir d;
  d.index["weight_map"]["model.f32"] = "model-00002-of-00002.safetensors";
  d.write_index();
  EXPECT_NE(d.open_error().find("tensor 'model.f32' is listed in shard"), std::string::npos);
}

TEST(SafetensorsSet, DuplicateAcrossShards) {
  ShardedDir d;
  write_safetensors(d.dir.file("model-00002-of-00002.safetensors"), d.all);
  EXPECT_NE(
      d.open_error().find("tensor 'model.f32' appears in both 'model-00001-of-00002.safetensors' "
                          "and 'model-00002-of-00002.safetensors'"),
      std::string::npos);
}

TEST(SafetensorsSet, BadIndexFiles) {
  ShardedDir d;
  d.index["weight_map"]["model.f32"] = "../model-00001-of-00002.safetensors";
  d.write_index();
  EXPECT_NE(d.open_error().find("is not a plain file name"), std::string::npos);
  d.index["weight_map"]["model.f32"] = 7;
  d.write_index();
  EXPECT_NE(d.open_error().find("weight_map entry 'model.f32' is not a string"), std::string::npos);
  d.index.erase("weight_map");
  d.write_index();
  EXPECT_NE(d.open_error().find("missing object 'weight_map'"), std::string::npos);
  write_json(d.dir.file("model.safetensors.index.json"), "{\"weight_map\": {");
  EXPECT_NE(d.open_error().find("model.safetensors.index.json: invalid JSON"), std::string::npos);
  d.index["weight_map"] = {{"x", "model-00003-of-00003.safetensors"}};
  d.write_index();
  EXPECT_NE(d.open_error().find("cannot open"), std::string::npos);
}

TEST(SafetensorsSet, EmptyDirectory) {
  TempDir dir;
  EXPECT_NE(error_of([&] {
              SafetensorsSet::open_dir(dir.path().string());
            }).find("no model.safetensors or model.safetensors.index.json"),
            std::string::npos);
}

// ---------------------------------------------------------------------------
// Hostile input.

// A valid two-tensor file split into its JSON header and data section.
struct Parts {
  std::string header;
  Bytes data;
};

Parts make_base() {
  TempDir dir;
  std::vector<float> a = {1, 2, 3, 4}, b = {5, 6};
  write_safetensors(dir.file("base.safetensors"),
                    {Sample::view("a", DType::F32, {2, 2}, a.data(), 16),
                     Sample::view("b", DType::F32, {2}, b.data(), 8)},
                    {{"format", "pt"}});
  const Bytes bytes = read_bytes(dir.file("base.safetensors"));
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  return {std::string(bytes.begin() + 8, bytes.begin() + 8 + static_cast<ptrdiff_t>(n)),
          Bytes(bytes.begin() + 8 + static_cast<ptrdiff_t>(n), bytes.end())};
}

Bytes assemble(const std::string& header, const Bytes& data) {
  const uint64_t n = header.size();
  Bytes out(8 + header.size() + data.size());
  std::memcpy(out.data(), &n, 8);
  std::copy(header.begin(), header.end(), out.begin() + 8);
  std::copy(data.begin(), data.end(), out.begin() + 8 + static_cast<ptrdiff_t>(n));
  return out;
}

std::string parse_error(const Bytes& bytes) {
  return error_of(
      [&] { SafetensorsFile::parse(bytes.data(), bytes.size(), "hostile.safetensors"); });
}

void replace_once(std::string& s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from << " not in " << s;
  s.replace(at, from.size(), to);
}

TEST(SafetensorsHostile, CorruptedHeadersThrowClearErrors) {
  const Parts base = make_base();
  ASSERT_NO_THROW(SafetensorsFile::parse(assemble(base.header, base.data).data(),
                                         assemble(base.header, base.data).size()));
  // Each case edits the JSON header text of the valid file.
  struct Case {
    const char* from;
    const char* to;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"\"dtype\":\"F32\",\"shape\":[2,2]", "\"dtype\":\"F8_E4M3\",\"shape\":[2,2]",
       "tensor 'a': unsupported dtype F8_E4M3"},
      {"\"dtype\":\"F32\",\"shape\":[2]", "\"dtype\":\"U8\",\"shape\":[2]",
       "tensor 'b': unsupported dtype U8"},
      {"\"dtype\":\"F32\",\"shape\":[2]", "\"dtype\":\"BOOL\",\"shape\":[2]",
       "unsupported dtype BOOL"},
      {"\"dtype\":\"F32\",\"shape\":[2,2]", "\"dtype\":7,\"shape\":[2,2]",
       "tensor 'a': missing string 'dtype'"},
      {"\"shape\":[2,2]", "\"shape\":[2,-2]", "shape entries must be non-negative integers"},
      {"\"shape\":[2,2]", "\"shape\":[2,2.0]", "shape entries must be non-negative integers"},
      {"\"shape\":[2,2]", "\"shape\":{}", "missing array 'shape'"},
      {"\"shape\":[2,2]", "\"shape\":[4294967296,4294967296,16]", "overflows"},
      {"\"shape\":[2,2]", "\"shape\":[9223372036854775807,2]", "overflows"},
      {"\"shape\":[2,2]", "\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]",
       "too many dimensions"},
      {"\"shape\":[2,2]", "\"shape\":[2,3]",
       "tensor 'a': size mismatch: data_offsets give 16 bytes but shape [2, 3] of F32 needs 24"},
      {"\"data_offsets\":[0,16]", "\"data_offsets\":[16,0]", "data_offsets [16, 0] are reversed"},
      {"\"data_offsets\":[0,16]", "\"data_offsets\":[0,16,24]",
       "'data_offsets' must be two non-negative integers"},
      {"\"data_offsets\":[0,16]", "\"data_offsets\":[0,-16]",
       "'data_offsets' must be two non-negative integers"},
      {"\"data_offsets\":[16,24]", "\"data_offsets\":[24,32]",
       "tensor 'b': data_offsets [24, 32] extend past the data section (24 bytes"},
      {"\"data_offsets\":[16,24]", "\"data_offsets\":[18446744073709551608,18446744073709551615]",
       "extend past the data section"},
      {"\"data_offsets\":[16,24]", "\"data_offsets\":[8,16]", "tensors 'a' and 'b' overlap"},
      {"\"format\":\"pt\"", "\"format\":1", "__metadata__ value for 'format' is not a string"},
      {"\"__metadata__\":{\"format\":\"pt\"}", "\"__metadata__\":[]",
       "__metadata__ is not an object"},
      {"\"b\":{", "\"a\":{", "duplicate key 'a' in JSON header"},
      {"\"b\":{\"data_offsets\":[16,24],\"dtype\":\"F32\",\"shape\":[2]}", "\"b\":[]",
       "tensor 'b': entry is not an object"},
      {"}}", "}", "invalid JSON"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.to);
    std::string header = base.header;
    replace_once(header, c.from, c.to);
    const std::string message = parse_error(assemble(header, base.data));
    EXPECT_NE(message.find(c.expected), std::string::npos) << message;
    EXPECT_EQ(message.rfind("hostile.safetensors: ", 0), 0u) << message;
  }
}

TEST(SafetensorsHostile, BadHeaderLengthsAndShapes) {
  const Parts base = make_base();
  Bytes bytes = assemble(base.header, base.data);
  auto with_length = [&](uint64_t n) {
    Bytes b = bytes;
    std::memcpy(b.data(), &n, 8);
    return b;
  };
  EXPECT_NE(parse_error(with_length(bytes.size())).find("extends past end of file (size"),
            std::string::npos);
  EXPECT_NE(parse_error(with_length(~uint64_t{0})).find("exceeds the limit of 104857600"),
            std::string::npos);
  EXPECT_NE(parse_error(Bytes{1, 2, 3}).find("too small"), std::string::npos);
  EXPECT_NE(parse_error(assemble("[1, 2]", {})).find("JSON header is not an object"),
            std::string::npos);
  EXPECT_NE(parse_error(assemble("", {})).find("invalid JSON"), std::string::npos);
  EXPECT_NE(parse_error(assemble("{\"a\": 1} trailing", {})).find("invalid JSON"),
            std::string::npos);
  // An empty header object is a valid file with no tensors.
  EXPECT_TRUE(SafetensorsFile::parse(assemble("{}", {}).data(), 10)->tensors().empty());
}

TEST(SafetensorsHostile, DeepNestingIsRejected) {
  const std::string deep = "{\"x\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_NE(parse_error(assemble(deep, {})).find("JSON nested deeper than 64 levels"),
            std::string::npos);
  const std::string deep_objects = [] {
    std::string s;
    for (int i = 0; i < 5000; ++i) s += "{\"k\":";
    s += "1";
    for (int i = 0; i < 5000; ++i) s += "}";
    return s;
  }();
  EXPECT_NE(parse_error(assemble(deep_objects, {})).find("nested deeper"), std::string::npos);
  // Moderate nesting inside metadata-like values is fine for the parser (then rejected as a bad
  // entry).
  const std::string ok_depth = "{\"x\":" + std::string(10, '[') + std::string(10, ']') + "}";
  EXPECT_NE(parse_error(assemble(ok_depth, {})).find("tensor 'x': entry is not an object"),
            std::string::npos);
}

TEST(SafetensorsHostile, TruncationAtEveryOffsetThrows) {
  const Parts base = make_base();
  const Bytes bytes = assemble(base.header, base.data);
  for (size_t n = 0; n < bytes.size(); ++n) {
    const Bytes prefix(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(n));
    EXPECT_THROW(SafetensorsFile::parse(prefix.data(), prefix.size()), Error) << n;
  }
}

TEST(SafetensorsHostile, OpenNamesTheFile) {
  TempDir dir;
  const Parts base = make_base();
  Bytes bytes = assemble(base.header, base.data);
  write_bytes(dir.file("model.safetensors"), bytes, bytes.size() - 1);
  const std::string message = error_of([&] { SafetensorsSet::open_dir(dir.path().string()); });
  EXPECT_NE(
      message.find("model.safetensors: tensor 'b': data_offsets [16, 24] extend past the data "
                   "section (23 bytes"),
      std::string::npos)
      << message;
}

}  // namespace
}  // namespace edgelm
