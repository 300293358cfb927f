// The chat page (web/*), compiled into the binary by embed_assets.cmake so
// the server works offline and needs no install step.
#pragma once

#include <cstddef>
#include <string_view>

namespace edgelm::server {

struct StaticAsset {
  const char* path;  // URL path, e.g. "/app.js"
  const char* content_type;
  const unsigned char* data;
  size_t size;
};

// Defined in the generated web_assets.cc.
extern const StaticAsset kStaticAssets[];
extern const size_t kStaticAssetCount;

// "/" maps to "/index.html"; nullptr if there is no such file.
const StaticAsset* find_static_asset(std::string_view path);

}  // namespace edgelm::server
