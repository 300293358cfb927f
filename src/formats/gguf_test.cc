#include "formats/gguf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>

#include "formats/test_util.h"

namespace edgelm {
namespace {

using testing::Bytes;
using testing::error_of;
using testing::offset_after;
using testing::poke;
using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

std::string stories_gguf() {
  return testing::shared_dir() + "/models/stories260K/stories260K.gguf";
}

TEST(Gguf, ReadsStories260K) {
  auto f = GgufFile::open(stories_gguf());
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->keys().size(), 19u);
  EXPECT_EQ(f->keys()[0], "tokenizer.ggml.tokens");
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_int("llama.embedding_length"), 64);  // stored as uint32
  EXPECT_EQ(f->get_int("llama.block_count"), 5);
  EXPECT_EQ(f->get_int("tokenizer.ggml.seperator_token_id"), 4294967295);
  EXPECT_NEAR(f->get_float("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-9);
  EXPECT_EQ(f->get_float("llama.context_length"), 2048.0);  // float getter accepts ints
  const auto tokens = f->get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 512u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(f->get_float_array("tokenizer.ggml.scores").size(), 512u);
  const auto types = f->get_int_array("tokenizer.ggml.token_type");
  ASSERT_EQ(types.size(), 512u);
  EXPECT_EQ(types[0], 2);
  EXPECT_EQ(types[1], 3);
  EXPECT_FALSE(f->get_bool_opt("no.such.key").has_value());
  EXPECT_FALSE(f->get_int_opt("no.such.key").has_value());

  ASSERT_EQ(f->tensors().size(), 48u);
  const TensorView* emb = f->find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dtype, DType::F32);
  EXPECT_EQ(emb->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(emb->nbytes, 512u * 64 * 4);
  const TensorView* down = f->find_tensor("blk.0.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->shape, (std::vector<int64_t>{64, 172}));
  EXPECT_EQ(f->find_tensor("blk.4.ffn_norm.weight")->shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(f->find_tensor("nope"), nullptr);
  EXPECT_EQ(f->data_offset(), 14176u);
  const uint8_t* begin = f->mapping()->data();
  for (const TensorView& t : f->tensors()) {
    const auto* p = static_cast<const uint8_t*>(t.data);
    EXPECT_GE(p, begin + f->data_offset());
    EXPECT_LE(p + t.nbytes, begin + f->mapping()->size());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 32, 0u) << t.name;
  }
  // The last tensor ends exactly at the end of the file.
  const TensorView* last = f->find_tensor("blk.4.ffn_norm.weight");
  EXPECT_EQ(static_cast<const uint8_t*>(last->data) + last->nbytes, begin + f->mapping()->size());
}

TEST(Gguf, TypedGetterErrorsNameFileAndKey) {
  auto f = GgufFile::open(stories_gguf());
  EXPECT_NE(error_of([&] {
              f->get_string("llama.block_count");
            }).find("stories260K.gguf: key 'llama.block_count' has type uint32, expected string"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f->get_int("missing.key"); }).find("missing key 'missing.key'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f->get_int("general.name"); }).find("expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f->get_bool("llama.block_count"); }).find("expected bool"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              f->get_string_array("tokenizer.ggml.scores");
            }).find("has type array of float32, expected array of string"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f->get_int_array("general.name"); }).find("expected array of integers"),
            std::string::npos);
}

TEST(Gguf, ReadsVocabOnlyFiles) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(testing::shared_dir() +
                                                               "/tokenizers/llamacpp-vectors")) {
    if (entry.path().extension() != ".gguf") continue;
    SCOPED_TRACE(entry.path().string());
    auto f = GgufFile::open(entry.path().string());
    EXPECT_TRUE(f->tensors().empty());
    const auto tokens = f->get_string_array("tokenizer.ggml.tokens");
    EXPECT_GT(tokens.size(), 1000u);
    EXPECT_FALSE(f->get_string("tokenizer.ggml.model").empty());
    ++count;
  }
  EXPECT_GE(count, 3);
  auto gpt2 =
      GgufFile::open(testing::shared_dir() + "/tokenizers/llamacpp-vectors/ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(gpt2->get_string_array("tokenizer.ggml.tokens").size(), 50257u);
  EXPECT_GT(gpt2->get_string_array("tokenizer.ggml.merges").size(), 40000u);
  EXPECT_EQ(gpt2->get_int("tokenizer.ggml.bos_token_id"), 50256);
}

Bytes make_hostile_base();

GgufValue scalar(GgufType type) {
  GgufValue v;
  v.type = type;
  return v;
}

GgufValue array_of(GgufType elem_type, const std::vector<GgufValue>& elems) {
  GgufValue v = GgufValue::make_array(elem_type);
  for (const GgufValue& e : elems) v.append(e);
  return v;
}

void expect_same_value(const GgufValue& a, const GgufValue& b, const std::string& key) {
  SCOPED_TRACE(key);
  ASSERT_EQ(a.type, b.type);
  switch (a.type) {
    case GgufType::kFloat32:
    case GgufType::kFloat64:
      EXPECT_EQ(a.f, b.f);
      break;
    case GgufType::kBool:
      EXPECT_EQ(a.b, b.b);
      break;
    case GgufType::kString:
      EXPECT_EQ(a.str, b.str);
      break;
    case GgufType::kArray:
      ASSERT_EQ(a.array_type, b.array_type);
      ASSERT_EQ(a.array_size(), b.array_size());
      for (size_t i = 0; i < a.array_size(); ++i) {
        expect_same_value(a.element(i), b.element(i), key);
      }
      break;
    default:
      EXPECT_EQ(a.i, b.i);
      EXPECT_EQ(a.u, b.u);
  }
}

GgufValue int_value(GgufType type, int64_t x) {
  GgufValue v = scalar(type);
  v.i = x;
  v.u = x >= 0 ? static_cast<uint64_t>(x) : 0;
  return v;
}

GgufValue uint_value(GgufType type, uint64_t x) {
  GgufValue v = scalar(type);
  v.u = x;
  v.i = x <= INT64_MAX ? static_cast<int64_t>(x) : 0;
  return v;
}

// Sets every value type, including nested arrays.
void add_all_value_types(GgufWriter& w) {
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", std::string("round trip \xE2\x9C\x93 with \0 nul", 24));
  w.set_u32("test.u32", 4000000000u);
  w.set_i32("test.i32", -123456);
  w.set_u64("test.u64", 18000000000000000000ull);
  w.set_f32("test.f32", 0.25f);
  w.set_bool("test.bool", true);
  w.set_bool("test.bool_false", false);
  w.set("test.u8", uint_value(GgufType::kUint8, 250));
  w.set("test.i8", int_value(GgufType::kInt8, -100));
  w.set("test.u16", uint_value(GgufType::kUint16, 65000));
  w.set("test.i16", int_value(GgufType::kInt16, -32000));
  w.set("test.i64", int_value(GgufType::kInt64, -9000000000000000000ll));
  GgufValue f64 = scalar(GgufType::kFloat64);
  f64.f = 3.141592653589793;
  w.set("test.f64", f64);
  w.set_string_array("test.strings", {"a", "", "longer string"});
  w.set_f32_array("test.floats", {1.5f, -2.0f});
  w.set_i32_array("test.ints", {1, -2, 3});
  w.set("test.empty", array_of(GgufType::kUint8, {}));
  // [[1, 2], [], [3]] as uint16, and an array of arrays of strings.
  GgufValue nested =
      array_of(GgufType::kArray, {array_of(GgufType::kUint16, {uint_value(GgufType::kUint16, 1),
                                                               uint_value(GgufType::kUint16, 2)}),
                                  array_of(GgufType::kUint16, {}),
                                  array_of(GgufType::kUint16, {uint_value(GgufType::kUint16, 3)})});
  w.set("test.nested", nested);
  GgufValue s = scalar(GgufType::kString);
  s.str = "x";
  w.set("test.nested_strings", array_of(GgufType::kArray, {array_of(GgufType::kString, {s, s})}));
  GgufValue b = scalar(GgufType::kBool);
  b.b = true;
  w.set("test.bools", array_of(GgufType::kBool, {b, scalar(GgufType::kBool)}));
}

// Arrays of every number type, with extreme values.
void add_typed_arrays(GgufWriter& w) {
  w.set("test.i8s", array_of(GgufType::kInt8,
                             {int_value(GgufType::kInt8, -128), int_value(GgufType::kInt8, 127)}));
  w.set("test.u64s",
        array_of(GgufType::kUint64, {uint_value(GgufType::kUint64, 18000000000000000000ull)}));
  w.set("test.i64s", array_of(GgufType::kInt64, {int_value(GgufType::kInt64, -5)}));
  GgufValue d = scalar(GgufType::kFloat64);
  d.f = -0.1;
  w.set("test.f64s", array_of(GgufType::kFloat64, {d, d}));
  w.set("test.u32s", array_of(GgufType::kUint32, {uint_value(GgufType::kUint32, 4000000000u)}));
  w.set("test.i16s", array_of(GgufType::kInt16, {int_value(GgufType::kInt16, -300)}));
  w.set("test.u8s", array_of(GgufType::kUint8, {uint_value(GgufType::kUint8, 255)}));
  GgufValue f = scalar(GgufType::kFloat32);
  f.f = 0.1f;
  w.set("test.f32s", array_of(GgufType::kFloat32, {f}));
}

uint64_t fnv1a(const Bytes& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (const uint8_t c : bytes) h = (h ^ c) * 1099511628211ull;
  return h;
}

struct SampleTensors {
  std::vector<float> f32 = std::vector<float>(3 * 8);
  std::vector<uint16_t> f16 = std::vector<uint16_t>(5);
  std::vector<uint8_t> q8 = std::vector<uint8_t>(2 * 34);
  std::vector<int32_t> i32 = std::vector<int32_t>(2 * 3 * 4);
  std::vector<float> f32_4d = std::vector<float>(2 * 1 * 3 * 2);
  SampleTensors() {
    for (size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<float>(i) * 0.5f - 3;
    for (size_t i = 0; i < f16.size(); ++i) f16[i] = static_cast<uint16_t>(0x3C00 + i);
    for (size_t i = 0; i < q8.size(); ++i) q8[i] = static_cast<uint8_t>(i * 7);
    for (size_t i = 0; i < i32.size(); ++i) i32[i] = static_cast<int32_t>(i) - 10;
    for (size_t i = 0; i < f32_4d.size(); ++i) f32_4d[i] = static_cast<float>(i);
  }
  void add_to(GgufWriter& w) const {
    w.add_tensor("weight.f32", DType::F32, {3, 8}, f32.data(), f32.size() * 4);
    w.add_tensor("weight.f16", DType::F16, {5}, f16.data(), f16.size() * 2);
    w.add_tensor("weight.q8_0", DType::Q8_0, {1, 64}, q8.data(), q8.size());
    w.add_tensor("weight.i32", DType::I32, {2, 3, 4}, i32.data(), i32.size() * 4);
    w.add_tensor("weight.4d", DType::F32, {2, 1, 3, 2}, f32_4d.data(), f32_4d.size() * 4);
  }
};

void expect_tensor(const GgufFile& f, const std::string& name, DType dtype,
                   std::vector<int64_t> shape, const void* data, size_t nbytes) {
  SCOPED_TRACE(name);
  const TensorView* t = f.find_tensor(name);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, dtype);
  EXPECT_EQ(t->shape, shape);
  ASSERT_EQ(t->nbytes, nbytes);
  EXPECT_EQ(std::memcmp(t->data, data, nbytes), 0);
}

void round_trip(uint32_t alignment) {
  TempDir dir;
  const std::string path = dir.file("round_trip.gguf");
  GgufWriter w;
  add_all_value_types(w);
  if (alignment != 32) w.set_alignment(alignment);
  SampleTensors data;
  data.add_to(w);
  w.write(path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  auto f = GgufFile::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), alignment);
  EXPECT_EQ(f->data_offset() % alignment, 0u);
  EXPECT_EQ(f->mapping()->size() % alignment, 0u);

  const size_t expected_keys = alignment != 32 ? 22 : 21;
  ASSERT_EQ(f->keys().size(), expected_keys);
  EXPECT_EQ(f->keys()[0], "general.architecture");
  EXPECT_EQ(f->get_string("general.name"), std::string("round trip \xE2\x9C\x93 with \0 nul", 24));
  EXPECT_EQ(f->get_int("test.u32"), 4000000000);
  EXPECT_EQ(f->get_int("test.i32"), -123456);
  EXPECT_EQ(f->find("test.u64")->u, 18000000000000000000ull);
  EXPECT_NE(error_of([&] { f->get_int("test.u64"); }).find("does not fit in int64"),
            std::string::npos);
  EXPECT_EQ(f->get_float("test.f32"), 0.25);
  EXPECT_TRUE(f->get_bool("test.bool"));
  EXPECT_FALSE(f->get_bool("test.bool_false"));
  EXPECT_EQ(f->get_int("test.u8"), 250);
  EXPECT_EQ(f->get_int("test.i8"), -100);
  EXPECT_EQ(f->get_int("test.u16"), 65000);
  EXPECT_EQ(f->get_int("test.i16"), -32000);
  EXPECT_EQ(f->get_int("test.i64"), -9000000000000000000ll);
  EXPECT_EQ(f->get_float("test.f64"), 3.141592653589793);
  EXPECT_EQ(f->get_string_array("test.strings"),
            (std::vector<std::string>{"a", "", "longer string"}));
  EXPECT_EQ(f->get_float_array("test.floats"), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(f->get_int_array("test.ints"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f->get_float_array("test.ints"), (std::vector<float>{1, -2, 3}));
  EXPECT_TRUE(f->get_int_array("test.empty").empty());
  const GgufValue* nested = f->find("test.nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->array_size(), 3u);
  EXPECT_EQ(nested->element(0).element(1).u, 2u);
  EXPECT_EQ(gguf_value_to_string(*nested), "[[1, 2], [], [3]]");
  expect_tensor(*f, "weight.f32", DType::F32, {3, 8}, data.f32.data(), data.f32.size() * 4);
  expect_tensor(*f, "weight.f16", DType::F16, {5}, data.f16.data(), data.f16.size() * 2);
  expect_tensor(*f, "weight.q8_0", DType::Q8_0, {1, 64}, data.q8.data(), data.q8.size());
  expect_tensor(*f, "weight.i32", DType::I32, {2, 3, 4}, data.i32.data(), data.i32.size() * 4);
  expect_tensor(*f, "weight.4d", DType::F32, {2, 1, 3, 2}, data.f32_4d.data(),
                data.f32_4d.size() * 4);
  for (const TensorView& t : f->tensors()) {
    const size_t offset = static_cast<const uint8_t*>(t.data) - f->mapping()->data();
    EXPECT_EQ(offset % alignment, 0u) << t.name;
  }
}

TEST(GgufWriter, RoundTripsAllTypes) {
  round_trip(32);
}
TEST(GgufWriter, RoundTripsWithAlignment64) {
  round_trip(64);
}
TEST(GgufWriter, RoundTripsWithAlignment1) {
  round_trip(1);
}

TEST(GgufWriter, ReadBackEqualsWrittenValues) {
  // A file read and rewritten value by value is byte-identical (writer and
  // reader agree on every encoding).
  TempDir dir;
  GgufWriter w;
  add_all_value_types(w);
  add_typed_arrays(w);
  SampleTensors data;
  data.add_to(w);
  w.write(dir.file("a.gguf"));
  auto a = GgufFile::open(dir.file("a.gguf"));
  GgufWriter copy;
  for (const std::string& key : a->keys()) copy.set(key, *a->find(key));
  for (const TensorView& t : a->tensors())
    copy.add_tensor(t.name, t.dtype, t.shape, t.data, t.nbytes);
  copy.write(dir.file("b.gguf"));
  EXPECT_EQ(read_bytes(dir.file("a.gguf")), read_bytes(dir.file("b.gguf")));
  auto b = GgufFile::open(dir.file("b.gguf"));
  for (const std::string& key : a->keys()) expect_same_value(*a->find(key), *b->find(key), key);
}

TEST(GgufWriter, WritesTheSameBytesAsTheUnpackedWriter) {
  // Checksum of the file the writer produced when every array element was a
  // GgufValue of its own: packing must not change a single byte.
  TempDir dir;
  GgufWriter w;
  add_all_value_types(w);
  add_typed_arrays(w);
  static const float t[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  w.add_tensor("weight.f32", DType::F32, {2, 4}, t, sizeof(t));
  w.write(dir.file("w.gguf"));
  const Bytes bytes = read_bytes(dir.file("w.gguf"));
  EXPECT_EQ(bytes.size(), 1216u);
  EXPECT_EQ(fnv1a(bytes), 0xe5f11a20bd606e60ull);
}

TEST(GgufValue, ArraysArePackedAndCopiesOwnThem) {
  auto f = GgufFile::open(stories_gguf());
  const GgufValue* tokens = f->find("tokenizer.ggml.tokens");
  ASSERT_NE(tokens, nullptr);
  EXPECT_EQ(tokens->type, GgufType::kArray);
  EXPECT_EQ(tokens->array_type, GgufType::kString);
  ASSERT_EQ(tokens->array_size(), 512u);
  ASSERT_EQ(tokens->string_ends.size(), 512u);
  EXPECT_TRUE(tokens->nested_arrays.empty());
  EXPECT_EQ(tokens->string_ends.back(), tokens->array_bytes.size());
  EXPECT_EQ(tokens->array_bytes.substr(0, 8), "<unk><s>");
  EXPECT_EQ(tokens->string_element(1), "<s>");
  EXPECT_EQ(tokens->element(0).type, GgufType::kString);
  EXPECT_EQ(tokens->element(0).str, "<unk>");

  const GgufValue* types = f->find("tokenizer.ggml.token_type");
  ASSERT_NE(types, nullptr);
  EXPECT_EQ(types->array_type, GgufType::kInt32);
  EXPECT_EQ(types->array_bytes.size(), 512u * 4);  // the file's encoding, 4 bytes each
  EXPECT_TRUE(types->string_ends.empty());
  EXPECT_EQ(types->element(1).type, GgufType::kInt32);
  EXPECT_EQ(types->element(1).i, 3);
  EXPECT_EQ(f->find("tokenizer.ggml.scores")->array_bytes.size(), 512u * 4);
  EXPECT_EQ(f->find("llama.block_count")->array_size(), 0u);  // scalars have no elements

  // A copy outlives the file and is written back identically.
  GgufValue copy = *tokens;
  f.reset();
  EXPECT_EQ(copy.string_element(511),
            GgufFile::open(stories_gguf())->get_string_array("tokenizer.ggml.tokens")[511]);
  TempDir dir;
  GgufWriter w;
  w.set("tokens", copy);
  w.write(dir.file("t.gguf"));
  EXPECT_EQ(GgufFile::open(dir.file("t.gguf"))->get_string_array("tokens").size(), 512u);
}

TEST(GgufValue, ElementsOfEveryTypeReadBack) {
  TempDir dir;
  GgufWriter w;
  add_all_value_types(w);
  add_typed_arrays(w);
  w.write(dir.file("a.gguf"));
  auto f = GgufFile::open(dir.file("a.gguf"));
  EXPECT_EQ(f->find("test.i8s")->element(0).i, -128);
  EXPECT_EQ(f->find("test.i8s")->element(1).u, 127u);
  EXPECT_EQ(f->find("test.u64s")->element(0).u, 18000000000000000000ull);
  EXPECT_EQ(f->find("test.i64s")->element(0).i, -5);
  EXPECT_EQ(f->find("test.f64s")->element(1).f, -0.1);
  EXPECT_EQ(f->find("test.u32s")->element(0).u, 4000000000u);
  EXPECT_EQ(f->find("test.i16s")->element(0).i, -300);
  EXPECT_EQ(f->find("test.u8s")->element(0).u, 255u);
  EXPECT_EQ(f->find("test.f32s")->element(0).f, static_cast<double>(0.1f));
  EXPECT_TRUE(f->find("test.bools")->element(0).b);
  EXPECT_FALSE(f->find("test.bools")->element(1).b);
  EXPECT_EQ(f->get_int_array("test.i8s"), (std::vector<int64_t>{-128, 127}));
  EXPECT_EQ(f->get_float_array("test.f64s"), (std::vector<float>{-0.1f, -0.1f}));
  EXPECT_NE(error_of([&] { f->get_int_array("test.u64s"); }).find("does not fit in int64"),
            std::string::npos);
  const GgufValue* strings = f->find("test.nested_strings");
  EXPECT_EQ(strings->element(0).string_element(1), "x");
  EXPECT_EQ(gguf_value_to_string(*strings), "[[\"x\", \"x\"]]");
  EXPECT_EQ(gguf_value_to_string(*f->find("test.strings")), "[\"a\", \"\", \"longer string\"]");
  EXPECT_NE(error_of([&] { f->find("test.strings")->element(3); }).find("out of range"),
            std::string::npos);
  EXPECT_NE(
      error_of([&] { f->find("test.ints")->string_element(0); }).find("not an array of strings"),
      std::string::npos);
}

TEST(GgufValue, AppendChecksTypeAndRange) {
  GgufValue bytes = GgufValue::make_array(GgufType::kUint8);
  bytes.append(uint_value(GgufType::kUint8, 7));
  EXPECT_EQ(bytes.array_bytes, std::string(1, '\x07'));
  EXPECT_NE(error_of([&] {
              bytes.append(uint_value(GgufType::kUint8, 300));
            }).find("GGUF array of uint8: value 300 does not fit uint8"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              bytes.append(int_value(GgufType::kUint8, -1));
            }).find("negative value -1 for uint8"),
            std::string::npos);
  EXPECT_NE(error_of([&] { bytes.append_string("x"); }).find("not an array of strings"),
            std::string::npos);
  EXPECT_NE(error_of([&] { scalar(GgufType::kUint8).append(bytes); }).find("is not an array"),
            std::string::npos);
  EXPECT_EQ(bytes.array_size(), 1u);  // failed appends leave the array as it was
}

TEST(GgufWriter, RejectsInconsistentPackedArrays) {
  auto err = [](const GgufValue& v) { return error_of([&] { GgufWriter().set("k", v); }); };
  GgufValue strings = GgufValue::make_array(GgufType::kString);
  strings.array_bytes = "abc";
  strings.string_ends = {1, 4};
  EXPECT_NE(err(strings).find("GGUF key 'k': array of string has inconsistent storage"),
            std::string::npos);
  strings.string_ends = {2, 1, 3};
  EXPECT_NE(err(strings).find("inconsistent storage"), std::string::npos);
  strings.array_bytes.clear();
  strings.string_ends.clear();
  strings.nested_arrays.push_back(GgufValue::make_array(GgufType::kString));
  EXPECT_NE(err(strings).find("inconsistent storage"), std::string::npos);

  GgufValue ints = GgufValue::make_array(GgufType::kInt32);
  ints.array_bytes = "abc";  // not a whole int32
  EXPECT_NE(err(ints).find("array of int32 has inconsistent storage (3 bytes"), std::string::npos);
  GgufValue bools = GgufValue::make_array(GgufType::kBool);
  bools.array_bytes = std::string("\x01\x02", 2);
  EXPECT_NE(err(bools).find("array of bool holds byte 2"), std::string::npos);
  GgufValue nested = GgufValue::make_array(GgufType::kArray);
  nested.nested_arrays.push_back(scalar(GgufType::kUint8));
  EXPECT_NE(err(nested).find("array of array holds a uint8 element"), std::string::npos);
  nested.nested_arrays = {ints};
  EXPECT_NE(err(nested).find("array of int32 has inconsistent storage"), std::string::npos);
}

TEST(GgufWriter, RewritesStories260KIdentically) {
  auto src = GgufFile::open(stories_gguf());
  GgufWriter w;
  for (const std::string& key : src->keys()) w.set(key, *src->find(key));
  for (const TensorView& t : src->tensors())
    w.add_tensor(t.name, t.dtype, t.shape, t.data, t.nbytes);
  TempDir dir;
  w.write(dir.file("copy.gguf"));
  EXPECT_EQ(read_bytes(dir.file("copy.gguf")), read_bytes(stories_gguf()));
}

TEST(Gguf, ReadsVersion2) {
  Bytes bytes = make_hostile_base();
  poke<uint32_t>(bytes, 4, 2);
  auto f = GgufFile::parse(bytes.data(), bytes.size());
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->get_int("aa.other"), 8);
  EXPECT_EQ(f->tensors().size(), 2u);
}

TEST(GgufWriter, RejectsBadInput) {
  std::vector<float> data(64);
  auto err = [](const std::function<void()>& fn) { return error_of(fn); };
  EXPECT_NE(err([&] {
              GgufWriter w;
              w.add_tensor("t", DType::F32, {64}, data.data(), 64 * 4);
              w.add_tensor("t", DType::F32, {64}, data.data(), 64 * 4);
            }).find("duplicate tensor 't'"),
            std::string::npos);
  EXPECT_NE(err([&] {
              GgufWriter w;
              w.add_tensor("t", DType::F32, {64}, data.data(), 100);
            }).find("needs 256"),
            std::string::npos);
  EXPECT_NE(err([&] {
              GgufWriter w;
              w.add_tensor("t", DType::Q8_0, {2, 33}, data.data(), 68);
            }).find("not a multiple of the q8_0 block size 32"),
            std::string::npos);
  EXPECT_NE(err([&] {
              GgufWriter w;
              w.add_tensor("t", DType::F32, {1, 1, 1, 1, 1}, data.data(), 4);
            }).find("5 dimensions"),
            std::string::npos);
  EXPECT_NE(err([&] {
              GgufWriter w;
              w.add_tensor("t", DType::F32, {0, 4}, data.data(), 0);
            }).find("has shape [0, 4]"),
            std::string::npos);
  EXPECT_NE(err([&] { GgufWriter().set_alignment(48); }).find("not a power of two"),
            std::string::npos);
  EXPECT_NE(err([&] {
              GgufWriter().set("k", array_of(GgufType::kInt32, {uint_value(GgufType::kUint8, 1)}));
            }).find("GGUF array of int32 cannot hold a uint8 element"),
            std::string::npos);
  EXPECT_NE(err([&] {
              TempDir dir;
              GgufWriter w;
              w.set("k", uint_value(GgufType::kUint8, 300));
              w.write(dir.file("x.gguf"));
            }).find("value 300 does not fit uint8"),
            std::string::npos);
  EXPECT_NE(err([] { GgufWriter().write("/nonexistent-dir/x.gguf"); }).find("cannot create"),
            std::string::npos);
}

// ---------------------------------------------------------------------------
// Hostile input: a valid file from the writer with one field corrupted.

// Key/tensor names are chosen so each appears exactly once in the file.
Bytes make_hostile_base() {
  TempDir dir;
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_u32("aa.first", 7);
  w.set_u32("aa.other", 8);
  w.set_string_array("zz.strings", {"one", "two"});
  w.set("cc.bools", array_of(GgufType::kBool, {scalar(GgufType::kBool), scalar(GgufType::kBool)}));
  w.set_bool("bb.flag", true);
  static const std::vector<float> a(8, 1.0f), b(16, 2.0f);
  w.add_tensor("ta.weight", DType::F32, {2, 4}, a.data(), a.size() * 4);
  w.add_tensor("tb.weight", DType::F32, {4, 4}, b.data(), b.size() * 4);
  w.write(dir.file("base.gguf"));
  return read_bytes(dir.file("base.gguf"));
}

std::string parse_error(const Bytes& bytes) {
  return error_of([&] { GgufFile::parse(bytes.data(), bytes.size(), "hostile.gguf"); });
}

struct Corruption {
  const char* name;
  std::function<void(Bytes&)> corrupt;
  const char* expected;
};

// Field offsets inside a tensor info, counted from the end of its name.
constexpr size_t kNdims = 0, kDim0 = 4;
size_t type_field(size_t n_dims) {
  return 4 + 8 * n_dims;
}
size_t offset_field(size_t n_dims) {
  return 8 + 8 * n_dims;
}

TEST(GgufHostile, CorruptedFieldsThrowClearErrors) {
  const Bytes base = make_hostile_base();
  ASSERT_NO_THROW(GgufFile::parse(base.data(), base.size()));
  const std::vector<Corruption> cases = {
      {"magic", [](Bytes& b) { b[0] = 'X'; }, "not a GGUF file (bad magic)"},
      {"version 1", [](Bytes& b) { poke<uint32_t>(b, 4, 1); }, "GGUF version 1 is not supported"},
      {"version 4", [](Bytes& b) { poke<uint32_t>(b, 4, 4); }, "unsupported GGUF version 4"},
      {"big endian", [](Bytes& b) { poke<uint32_t>(b, 4, 0x03000000); }, "big-endian"},
      {"tensor count", [](Bytes& b) { poke<uint64_t>(b, 8, uint64_t{1} << 40); },
       "tensor count 1099511627776 is impossible"},
      {"kv count", [](Bytes& b) { poke<uint64_t>(b, 16, ~uint64_t{0}); }, "metadata count"},
      {"more kvs than present", [](Bytes& b) { poke<uint64_t>(b, 16, 7); }, "hostile.gguf: "},
      {"key length", [](Bytes& b) { poke<uint64_t>(b, 24, uint64_t{1} << 62); },
       "key length 4611686018427387904 exceeds the limit"},
      {"key length past end", [](Bytes& b) { poke<uint64_t>(b, 24, 60000); }, "file truncated"},
      {"value type", [](Bytes& b) { poke<uint32_t>(b, offset_after(b, "aa.first"), 13); },
       "key 'aa.first': unknown value type 13"},
      {"array element type",
       [](Bytes& b) { poke<uint32_t>(b, offset_after(b, "zz.strings") + 4, 99); },
       "unknown array element type 99"},
      {"array count",
       [](Bytes& b) { poke<uint64_t>(b, offset_after(b, "zz.strings") + 8, uint64_t{1} << 61); },
       "cannot fit in the"},
      {"string length",
       [](Bytes& b) { poke<uint64_t>(b, offset_after(b, "zz.strings") + 16, uint64_t{1} << 50); },
       "file truncated while reading key 'zz.strings'"},
      {"bool value", [](Bytes& b) { b[offset_after(b, "bb.flag") + 4] = 2; }, "bool value 2"},
      {"bool array element", [](Bytes& b) { b[offset_after(b, "cc.bools") + 4 + 4 + 8 + 1] = 3; },
       "key 'cc.bools': bool value 3 is not 0 or 1"},
      {"string array count past end",
       [](Bytes& b) { poke<uint64_t>(b, offset_after(b, "zz.strings") + 8, 4); }, "hostile.gguf: "},
      {"duplicate key",
       [](Bytes& b) { std::memcpy(&b[offset_after(b, "aa.other") - 8], "aa.first", 8); },
       "duplicate key 'aa.first'"},
      {"n_dims 5", [](Bytes& b) { poke<uint32_t>(b, offset_after(b, "ta.weight") + kNdims, 5); },
       "tensor 'ta.weight' has 5 dimensions"},
      {"n_dims 0", [](Bytes& b) { poke<uint32_t>(b, offset_after(b, "ta.weight") + kNdims, 0); },
       "has 0 dimensions"},
      {"dim 0", [](Bytes& b) { poke<uint64_t>(b, offset_after(b, "ta.weight") + kDim0, 0); },
       "invalid dimension 0 = 0"},
      {"negative dim",
       [](Bytes& b) { poke<uint64_t>(b, offset_after(b, "ta.weight") + kDim0, ~uint64_t{0}); },
       "invalid dimension 0"},
      {"element count overflow",
       [](Bytes& b) {
         const size_t at = offset_after(b, "tb.weight");
         poke<uint64_t>(b, at + kDim0, uint64_t{1} << 32);
         poke<uint64_t>(b, at + kDim0 + 8, uint64_t{1} << 32);
       },
       "element count overflows"},
      {"byte size overflow",
       [](Bytes& b) {
         const size_t at = offset_after(b, "tb.weight");
         poke<uint64_t>(b, at + kDim0, uint64_t{1} << 31);
         poke<uint64_t>(b, at + kDim0 + 8, uint64_t{1} << 31);
       },
       "byte size overflows"},
      {"unknown tensor type",
       [](Bytes& b) { poke<uint32_t>(b, offset_after(b, "ta.weight") + type_field(2), 5); },
       "tensor 'ta.weight' has unknown tensor type id 5"},
      {"in-memory layout type",
       [](Bytes& b) { poke<uint32_t>(b, offset_after(b, "ta.weight") + type_field(2), 1001); },
       "tensor 'ta.weight' has unknown tensor type id 1001"},
      {"in-memory layout type (q5_0)",
       [](Bytes& b) { poke<uint32_t>(b, offset_after(b, "ta.weight") + type_field(2), 1002); },
       "tensor 'ta.weight' has unknown tensor type id 1002"},
      {"in-memory layout type (q4_K)",
       [](Bytes& b) { poke<uint32_t>(b, offset_after(b, "ta.weight") + type_field(2), 1003); },
       "tensor 'ta.weight' has unknown tensor type id 1003"},
      {"row not whole blocks",
       [](Bytes& b) { poke<uint32_t>(b, offset_after(b, "ta.weight") + type_field(2), 8); },
       "row length 4 is not a multiple of the q8_0 block size 32"},
      {"unaligned offset",
       [](Bytes& b) { poke<uint64_t>(b, offset_after(b, "tb.weight") + offset_field(2), 36); },
       "tensor 'tb.weight' data offset 36 is not a multiple of the alignment 32"},
      {"offset past end",
       [](Bytes& b) { poke<uint64_t>(b, offset_after(b, "tb.weight") + offset_field(2), 1 << 20); },
       "tensor 'tb.weight' data ["},
      {"offset wraps",
       [](Bytes& b) {
         poke<uint64_t>(b, offset_after(b, "tb.weight") + offset_field(2), ~uint64_t{31});
       },
       "extends past end of file"},
      {"overlap",
       [](Bytes& b) { poke<uint64_t>(b, offset_after(b, "tb.weight") + offset_field(2), 0); },
       "tensors 'ta.weight' and 'tb.weight' overlap"},
      {"duplicate tensor", [](Bytes& b) { b[offset_after(b, "tb.weight") - 8] = 'a'; },
       "duplicate tensor name 'ta.weight'"},
      {"tensor name length",
       [](Bytes& b) { poke<uint64_t>(b, offset_after(b, "bb.flag") + 5, uint64_t{1} << 40); },
       "tensor name length 1099511627776 exceeds the limit"},
  };
  for (const Corruption& c : cases) {
    SCOPED_TRACE(c.name);
    Bytes bytes = base;
    c.corrupt(bytes);
    const std::string message = parse_error(bytes);
    EXPECT_NE(message.find(c.expected), std::string::npos) << message;
    EXPECT_EQ(message.rfind("hostile.gguf: ", 0), 0u) << message;
  }
}

TEST(GgufHostile, TruncationAtEveryOffsetThrows) {
  const Bytes base = make_hostile_base();
  // The last tensor is 64 bytes (a multiple of the alignment), so every prefix cuts real data.
  for (size_t n = 0; n < base.size(); ++n) {
    SCOPED_TRACE(n);
    const Bytes prefix(base.begin(), base.begin() + static_cast<ptrdiff_t>(n));
    EXPECT_THROW(GgufFile::parse(prefix.data(), prefix.size()), Error);
  }
}

TEST(GgufHostile, VocabOnlyFileTruncatedAnywhereThrows) {
  TempDir dir;
  GgufWriter w;
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string_array("tokenizer.ggml.tokens", {"<unk>", "<s>", "a", "bc"});
  w.set_f32_array("tokenizer.ggml.scores", {0, 0, -1, -2});
  w.write(dir.file("v.gguf"));
  const Bytes base = read_bytes(dir.file("v.gguf"));
  // Without tensors the file ends with the metadata, except for padding.
  size_t meta_end = base.size();
  while (meta_end > 0 && base[meta_end - 1] == 0) --meta_end;
  for (size_t n = 0; n < meta_end; ++n) {
    const Bytes prefix(base.begin(), base.begin() + static_cast<ptrdiff_t>(n));
    EXPECT_THROW(GgufFile::parse(prefix.data(), prefix.size()), Error) << n;
  }
}

// Builds GGUF bytes by hand for shapes the writer refuses to produce.
struct RawGguf {
  Bytes bytes;
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
  RawGguf(uint64_t n_tensors, uint64_t n_kv) {
    bytes = {'G', 'G', 'U', 'F'};
    put<uint32_t>(3);
    put<uint64_t>(n_tensors);
    put<uint64_t>(n_kv);
  }
};

TEST(GgufHostile, DeeplyNestedArraysAreRejectedWithoutRecursingForever) {
  RawGguf g(0, 1);
  g.put_string("deep");
  g.put<uint32_t>(static_cast<uint32_t>(GgufType::kArray));
  for (int i = 0; i < 100000; ++i) {
    g.put<uint32_t>(static_cast<uint32_t>(GgufType::kArray));
    g.put<uint64_t>(1);
  }
  EXPECT_NE(parse_error(g.bytes).find("arrays nested deeper than 16"), std::string::npos);
}

TEST(GgufHostile, TooMuchMetadataIsRejectedBeforeAllocating) {
  RawGguf g(0, 1);
  g.put_string("huge");
  g.put<uint32_t>(static_cast<uint32_t>(GgufType::kArray));
  g.put<uint32_t>(static_cast<uint32_t>(GgufType::kUint8));
  const uint64_t count = (uint64_t{1} << 23) + 1;
  g.put<uint64_t>(count);
  g.bytes.resize(g.bytes.size() + count);
  EXPECT_NE(parse_error(g.bytes).find("too-large metadata"), std::string::npos);
}

TEST(GgufHostile, AlignmentMustBeAPowerOfTwoInteger) {
  RawGguf g(0, 1);
  g.put_string("general.alignment");
  g.put<uint32_t>(static_cast<uint32_t>(GgufType::kUint32));
  g.put<uint32_t>(48);
  EXPECT_NE(parse_error(g.bytes).find("general.alignment 48 is not a power of two"),
            std::string::npos);
  RawGguf s(0, 1);
  s.put_string("general.alignment");
  s.put<uint32_t>(static_cast<uint32_t>(GgufType::kString));
  s.put_string("32");
  EXPECT_NE(parse_error(s.bytes).find("general.alignment has type string, expected uint32"),
            std::string::npos);
}

TEST(GgufHostile, TruncatedRealFileNamesTensorAndRange) {
  TempDir dir;
  Bytes bytes = read_bytes(stories_gguf());
  write_bytes(dir.file("stories260K.gguf"), bytes, bytes.size() - 100);
  const std::string message = error_of([&] { GgufFile::open(dir.file("stories260K.gguf")); });
  EXPECT_NE(message.find("stories260K.gguf: tensor 'blk.4.ffn_norm.weight' data [1185120, 1185376) "
                         "extends past end of file (size 1185276)"),
            std::string::npos)
      << message;
  EXPECT_NE(error_of([&] { GgufFile::open(dir.file("missing.gguf")); }).find("cannot open"),
            std::string::npos);
  write_bytes(dir.file("empty.gguf"), {});
  EXPECT_NE(error_of([&] { GgufFile::open(dir.file("empty.gguf")); }).find("bad magic"),
            std::string::npos);
}

}  // namespace
}  // namespace edgelm
