// libFuzzer target: GGUF parsing from memory. Any malformed input must end in
// edgelm::Error; anything that parses must have every tensor view inside the
// input (ASan catches a stray first/last byte read).
#include <cstddef>
#include <cstdint>

#include "formats/gguf.h"
#include "util/error.h"

namespace {

template <typename Fn>
void ignore_errors(Fn&& fn) {
  try {
    fn();
  } catch (const edgelm::Error&) {
  }
}

void touch_values(const edgelm::GgufFile& file) {
  for (const std::string& key : file.keys()) {
    const edgelm::GgufValue* value = file.find(key);
    if (value == nullptr) __builtin_trap();  // keys() and find() must agree
    (void)edgelm::gguf_value_to_string(*value);
    // Every getter either returns or throws edgelm::Error.
    ignore_errors([&] { (void)file.get_int_opt(key); });
    ignore_errors([&] { (void)file.get_float_opt(key); });
    ignore_errors([&] { (void)file.get_string_opt(key); });
    ignore_errors([&] { (void)file.get_bool_opt(key); });
    ignore_errors([&] { (void)file.get_string_array(key); });
    ignore_errors([&] { (void)file.get_int_array(key); });
    ignore_errors([&] { (void)file.get_float_array(key); });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = edgelm::GgufFile::parse(data, size, "fuzz.gguf");
    touch_values(*file);
    volatile uint8_t sink = 0;
    for (const edgelm::TensorView& t : file->tensors()) {
      const auto* p = static_cast<const uint8_t*>(t.data);
      if (t.nbytes == 0 || p < data || p + t.nbytes > data + size) __builtin_trap();
      if (file->find_tensor(t.name) != &t) __builtin_trap();
      sink = sink ^ p[0] ^ p[t.nbytes - 1];
    }
  } catch (const edgelm::Error&) {
  }
  return 0;
}
