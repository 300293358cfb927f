#include "formats/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "formats/atomic_file.h"
#include "util/error.h"

namespace edgelm {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100u
                                     << 20;  // the reference implementation also caps at 100 MB
constexpr int kMaxJsonDepth = 64;
constexpr size_t kMaxDims = 16;

struct DtypeName {
  const char* name;
  DType dtype;
};
constexpr DtypeName kDtypes[] = {
    {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"F64", DType::F64},
    {"I8", DType::I8},   {"I16", DType::I16}, {"I32", DType::I32},   {"I64", DType::I64},
};

const DtypeName* find_dtype(const std::string& name) {
  for (const DtypeName& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const char* safetensors_dtype_name(DType dtype) {
  for (const DtypeName& d : kDtypes) {
    if (d.dtype == dtype) return d.name;
  }
  return nullptr;
}

// Parses JSON text, turning every parse problem into edgelm::Error. Rejects
// nesting deeper than kMaxJsonDepth and duplicate keys in the top-level object
// (nlohmann would silently keep the last one).
json parse_json(const char* begin, const char* end, const std::string& name) {
  std::set<std::string> top_level_keys;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth) {
      throw Error(str_cat(name, ": JSON nested deeper than ", kMaxJsonDepth, " levels"));
    }
    if (event == json::parse_event_t::key && depth == 1) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!top_level_keys.insert(key).second) {
        throw Error(str_cat(name, ": duplicate key '", key, "' in JSON header"));
      }
    }
    return true;
  };
  try {
    return json::parse(begin, end, callback);
  } catch (const json::exception& e) {
    fail(name, ": invalid JSON: ", e.what());
  }
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string join_path(const std::string& dir, const std::string& file) {
  if (dir.empty() || dir.back() == '/') return dir + file;
  return dir + "/" + file;
}

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->mapping_ = MappedFile::open(path);
  file->parse_image(file->mapping_->data(), file->mapping_->size(), path);
  return file;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::parse(const uint8_t* data, size_t size,
                                                        const std::string& name) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->parse_image(data, size, name);
  return file;
}

void SafetensorsFile::parse_image(const uint8_t* data, size_t size, const std::string& name) {
  if (size < 8)
    fail(name, ": file truncated: ", size, " bytes is too small for a safetensors file");
  const uint64_t header_len = read_u64_le(data);
  if (header_len > kMaxHeaderBytes) {
    fail(name, ": header length ", header_len, " exceeds the limit of ", kMaxHeaderBytes,
         " bytes (not a safetensors file?)");
  }
  if (header_len > size - 8) {
    fail(name, ": header length ", header_len, " extends past end of file (size ", size, ")");
  }
  const char* header = reinterpret_cast<const char*>(data + 8);
  const json root = parse_json(header, header + header_len, name);
  if (!root.is_object()) fail(name, ": JSON header is not an object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  for (const auto& [key, entry] : root.items()) {
    if (key == "__metadata__") {
      if (!entry.is_object()) fail(name, ": __metadata__ is not an object");
      for (const auto& [mkey, mvalue] : entry.items()) {
        if (!mvalue.is_string())
          fail(name, ": __metadata__ value for '", mkey, "' is not a string");
        metadata_[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    const std::string where = str_cat(name, ": tensor '", key, "'");
    if (!entry.is_object()) fail(where, ": entry is not an object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) fail(where, ": missing string 'dtype'");
    if (shape_it == entry.end() || !shape_it->is_array()) fail(where, ": missing array 'shape'");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
      fail(where, ": 'data_offsets' must be two non-negative integers");
    }
    const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
    const DtypeName* dtype = find_dtype(dtype_name);
    if (dtype == nullptr) fail(where, ": unsupported dtype ", dtype_name);

    TensorView t;
    t.name = key;
    t.dtype = dtype->dtype;
    if (shape_it->size() > kMaxDims) fail(where, ": too many dimensions (", shape_it->size(), ")");
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& dim : *shape_it) {
      if (!dim.is_number_unsigned()) fail(where, ": shape entries must be non-negative integers");
      const uint64_t d = dim.get<uint64_t>();
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
      t.shape.push_back(static_cast<int64_t>(d));
      overflow = overflow || __builtin_mul_overflow(numel, d, &numel);
    }
    const size_t elem_bytes = dtype_traits(t.dtype).block_bytes;
    uint64_t nbytes = 0;
    if (overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(numel, elem_bytes, &nbytes)) {
      fail(where, ": shape ", shape_it->dump(), " overflows");
    }
    const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
    const uint64_t end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end) fail(where, ": data_offsets [", begin, ", ", end, "] are reversed");
    if (end > data_size) {
      fail(where, ": data_offsets [", begin, ", ", end, "] extend past the data section (",
           data_size, " bytes; file size ", size, ")");
    }
    if (end - begin != nbytes) {
      fail(where, ": size mismatch: data_offsets give ", end - begin, " bytes but shape ",
           shape_to_string(t.shape), " of ", dtype_name, " needs ", nbytes);
    }
    t.nbytes = nbytes;
    t.data = data + data_start + begin;
    ranges.push_back({begin, end, tensors_.size()});
    tensors_.push_back(std::move(t));
  }

  // Keep file order (by offset), and reject overlapping ranges.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t prev_end = 0;
  size_t prev_index = 0;
  for (const Range& r : ranges) {
    if (r.begin == r.end) continue;  // empty tensors occupy nothing
    if (r.begin < prev_end) {
      fail(name, ": tensors '", tensors_[prev_index].name, "' and '", tensors_[r.index].name,
           "' overlap in the data section");
    }
    prev_end = r.end;
    prev_index = r.index;
  }
  std::vector<TensorView> ordered;
  ordered.reserve(tensors_.size());
  for (const Range& r : ranges) ordered.push_back(std::move(tensors_[r.index]));
  tensors_ = std::move(ordered);
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorView* SafetensorsFile::find_tensor(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

SafetensorsSet SafetensorsSet::open_dir(const std::string& dir) {
  SafetensorsSet set;
  std::map<std::string, std::string> owner;  // tensor name -> shard file
  auto add_file = [&](const std::string& file_name) {
    set.files_.push_back(SafetensorsFile::open(join_path(dir, file_name)));
    for (const TensorView& t : set.files_.back()->tensors()) {
      auto [it, inserted] = owner.emplace(t.name, file_name);
      if (!inserted) {
        fail(dir, ": tensor '", t.name, "' appears in both '", it->second, "' and '", file_name,
             "'");
      }
      set.index_[t.name] = set.tensors_.size();
      set.tensors_.push_back(t);
      set.total_bytes_ += static_cast<int64_t>(t.nbytes);
    }
  };

  const std::string index_path = join_path(dir, "model.safetensors.index.json");
  if (file_exists(index_path)) {
    struct stat st {};
    if (::stat(index_path.c_str(), &st) == 0 &&
        static_cast<uint64_t>(st.st_size) > kMaxHeaderBytes) {
      fail(index_path, ": index file is larger than ", kMaxHeaderBytes, " bytes");
    }
    const std::string text = read_file(index_path);
    const json index = parse_json(text.data(), text.data() + text.size(), index_path);
    if (!index.is_object()) fail(index_path, ": not a JSON object");
    auto map_it = index.find("weight_map");
    if (map_it == index.end() || !map_it->is_object()) {
      fail(index_path, ": missing object 'weight_map'");
    }
    std::vector<std::string> shards;  // in first-mention order
    std::set<std::string> seen;
    for (const auto& [tensor, shard] : map_it->items()) {
      if (!shard.is_string()) fail(index_path, ": weight_map entry '", tensor, "' is not a string");
      const std::string& file_name = shard.get_ref<const std::string&>();
      if (file_name.empty() || file_name.find('/') != std::string::npos || file_name == "." ||
          file_name == "..") {
        fail(index_path, ": shard name '", file_name, "' for tensor '", tensor,
             "' is not a plain file name");
      }
      if (seen.insert(file_name).second) shards.push_back(file_name);
    }
    if (shards.empty()) fail(index_path, ": weight_map is empty");
    for (const std::string& shard : shards) add_file(shard);
    for (const auto& [tensor, shard] : map_it->items()) {
      const std::string& file_name = shard.get_ref<const std::string&>();
      auto it = owner.find(tensor);
      if (it == owner.end() || it->second != file_name) {
        fail(index_path, ": tensor '", tensor, "' is listed in shard '", file_name,
             "' but that shard does not contain it");
      }
    }
    return set;
  }
  const std::string single = join_path(dir, "model.safetensors");
  if (!file_exists(single)) {
    fail(dir, ": no model.safetensors or model.safetensors.index.json in this directory");
  }
  add_file("model.safetensors");
  return set;
}

const TensorView* SafetensorsSet::find_tensor(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) {
    json meta = json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const TensorView& t : tensors) {
    const std::string where = str_cat(path, ": tensor '", t.name, "'");
    if (t.name.empty() || t.name == "__metadata__") fail(where, ": invalid tensor name");
    if (header.contains(t.name)) fail(where, ": duplicate tensor name");
    const char* dtype = safetensors_dtype_name(t.dtype);
    if (dtype == nullptr) {
      fail(where, ": dtype ", dtype_name(t.dtype), " cannot be stored in safetensors");
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || __builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
        fail(where, ": invalid shape ", shape_to_string(t.shape));
      }
    }
    const uint64_t expected = numel * dtype_traits(t.dtype).block_bytes;
    if (expected != t.nbytes) {
      fail(where, ": has ", t.nbytes, " bytes but shape ", shape_to_string(t.shape), " of ", dtype,
           " needs ", expected);
    }
    if (t.nbytes > 0 && t.data == nullptr) fail(where, ": has no data");
    header[t.name] = {
        {"dtype", dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  // nlohmann keeps object keys sorted; the data order follows `tensors`, which
  // the offsets record, so readers do not care.
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    fail(path, ": cannot encode the header (tensor names and metadata must be UTF-8): ", e.what());
  }
  // Pad with spaces so the data section starts 8-byte aligned (as HF's writer does).
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));

  AtomicFile out(path);
  out.write(len, sizeof(len));
  out.write(text.data(), text.size());
  for (const TensorView& t : tensors) out.write(t.data, t.nbytes);
  out.commit();
}

}  // namespace edgelm
