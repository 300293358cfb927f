#include "formats/tensor.h"

#include <algorithm>
#include <cctype>

#include "util/error.h"

namespace edgelm {
namespace {

struct Entry {
  uint32_t id;
  DTypeTraits traits;
};

constexpr Entry kTypes[] = {
    {0, {"f32", 1, 4}},
    {1, {"f16", 1, 2}},
    {2, {"q4_0", 32, 18}},
    {3, {"q4_1", 32, 20}},
    {6, {"q5_0", 32, 22}},
    {7, {"q5_1", 32, 24}},
    {8, {"q8_0", 32, 34}},
    {9, {"q8_1", 32, 36}},
    {10, {"q2_K", 256, 84}},
    {11, {"q3_K", 256, 110}},
    {12, {"q4_K", 256, 144}},
    {13, {"q5_K", 256, 176}},
    {14, {"q6_K", 256, 210}},
    {15, {"q8_K", 256, 292}},
    {16, {"iq2_xxs", 256, 66}},
    {17, {"iq2_xs", 256, 74}},
    {18, {"iq3_xxs", 256, 98}},
    {19, {"iq1_s", 256, 50}},
    {20, {"iq4_nl", 32, 18}},
    {21, {"iq3_s", 256, 110}},
    {22, {"iq2_s", 256, 82}},
    {23, {"iq4_xs", 256, 136}},
    {24, {"i8", 1, 1}},
    {25, {"i16", 1, 2}},
    {26, {"i32", 1, 4}},
    {27, {"i64", 1, 8}},
    {28, {"f64", 1, 8}},
    {29, {"iq1_m", 256, 56}},
    {30, {"bf16", 1, 2}},
    {34, {"tq1_0", 256, 54}},
    {35, {"tq2_0", 256, 66}},
    {1000, {"fp8_e4m3", 32, 34}},
    {1001, {"q4_0x16", 32, 18}},
    {1002, {"q5_0x16", 32, 22}},
    {1003, {"q4_Kx16", 256, 144}},
    {1004, {"q8_0x16", 32, 34}},
};

}  // namespace

const DTypeTraits* dtype_traits(uint32_t type_id) {
  for (const Entry& e : kTypes) {
    if (e.id == type_id) return &e.traits;
  }
  return nullptr;
}

const DTypeTraits& dtype_traits(DType type) {
  const DTypeTraits* t = dtype_traits(static_cast<uint32_t>(type));
  if (t == nullptr) fail("unknown tensor type id ", static_cast<uint32_t>(type));
  return *t;
}

const char* dtype_name(DType type) {
  return dtype_traits(type).name;
}

DType dtype_from_name(const std::string& name) {
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
  };
  const std::string wanted = lower(name);
  for (const Entry& e : kTypes) {
    if (lower(e.traits.name) == wanted) return static_cast<DType>(e.id);
  }
  fail("unknown tensor type '", name, "'");
}

size_t dtype_row_bytes(DType type, int64_t count) {
  const DTypeTraits& t = dtype_traits(type);
  if (count < 0 || count % t.block_size != 0) {
    fail(count, " elements is not a whole number of ", t.name, " blocks (", t.block_size, ")");
  }
  return static_cast<size_t>(count / t.block_size) * t.block_bytes;
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace edgelm
