#include "src/frontends/http/ui_assets.h"

#include <algorithm>

namespace floodgate::frontends::http_internal {

const UiAsset* FindUiAsset(std::string_view path) {
  const absl::Span<const UiAsset> assets = UiAssets();
  auto it = std::lower_bound(assets.begin(), assets.end(), path,
                             [](const UiAsset& a, std::string_view p) { return a.path < p; });
  return it != assets.end() && it->path == path ? &*it : nullptr;
}

std::string_view UiContentType(std::string_view path) {
  static constexpr std::pair<std::string_view, std::string_view> kTypes[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".json", "application/json"},
  };
  for (const auto& [extension, type] : kTypes) {
    if (path.ends_with(extension)) {
      return type;
    }
  }
  return "application/octet-stream";
}

}  // namespace floodgate::frontends::http_internal
