#include "server/static_assets.h"

namespace edgelm::server {

const StaticAsset* find_static_asset(std::string_view path) {
  if (path == "/") path = "/index.html";
  for (size_t i = 0; i < kStaticAssetCount; ++i) {
    if (path == kStaticAssets[i].path) return &kStaticAssets[i];
  }
  return nullptr;
}

}  // namespace edgelm::server
