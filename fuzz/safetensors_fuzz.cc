// libFuzzer target: safetensors parsing from memory. Malformed input must end
// in edgelm::Error; tensor views of a parsed file must lie inside the input.
#include <cstddef>
#include <cstdint>

#include "formats/safetensors.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = edgelm::SafetensorsFile::parse(data, size, "fuzz.safetensors");
    volatile uint8_t sink = 0;
    for (const edgelm::TensorView& t : file->tensors()) {
      if (file->find_tensor(t.name) != &t) __builtin_trap();
      if (t.nbytes == 0) continue;  // empty tensors (a 0 in the shape) are valid
      const auto* p = static_cast<const uint8_t*>(t.data);
      if (p < data || p + t.nbytes > data + size) __builtin_trap();
      sink = sink ^ p[0] ^ p[t.nbytes - 1];
    }
    for (const auto& [key, value] : file->metadata()) sink = sink ^ key.size() ^ value.size();
  } catch (const edgelm::Error&) {
  }
  return 0;
}
