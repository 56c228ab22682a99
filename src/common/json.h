#pragma once

// The small JSON writers of the hot paths and the admin views: faster than printing through
// protobuf, and free of its escaping quirks.
//
// Thread-safety: every function is pure (or writes only to its arguments).

#include <string>
#include <string_view>

namespace floodgate::common {

// Appends `text` as a JSON string literal. Bytes that are not UTF-8 become U+FFFD.
void AppendJsonString(std::string_view text, std::string& out);

// Returns `{"error":"<message>"}`.
std::string ErrorJson(std::string_view message);

// Appends a double for proto3 JSON: the shortest text that reads back exactly; "NaN",
// "Infinity" and "-Infinity" as strings.
void AppendJsonDouble(double value, std::string& out);

}  // namespace floodgate::common
