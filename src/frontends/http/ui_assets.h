#pragma once

// The web console's files (the top-level ui/ folder), embedded into the binary at build time
// (cmake/EmbedFiles.cmake writes ui_assets_data.cc), served by GET /ui/{file}.
//
// Thread-safety: immutable data; safe from any thread.

#include <string_view>

#include "absl/types/span.h"

namespace floodgate::frontends::http_internal {

struct UiAsset {
  std::string_view path;  // relative to ui/, '/'-separated ("index.html", "img/logo.svg")
  std::string_view content;
};

// Returns every embedded file, sorted by path.
absl::Span<const UiAsset> UiAssets();

// Returns the file at `path` (relative to ui/), or null. Only embedded paths match: nothing is
// read from disk, so "..", "//" or an absolute path can name nothing else.
const UiAsset* FindUiAsset(std::string_view path);

// Returns the Content-Type for a file name by its extension (html, js, css, svg, png, json;
// anything else application/octet-stream).
std::string_view UiContentType(std::string_view path);

}  // namespace floodgate::frontends::http_internal
