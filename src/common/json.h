#pragma once

// The small JSON writers of the hot paths and the admin views: faster than printing through
// protobuf, and free of its escaping quirks; and the one string-literal reader our own small
// readers share (etcd member values, test histories).
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

// Reads the JSON string literal that starts at text[pos] (its opening quote): on success
// appends its unescaped UTF-8 to `out`, moves `pos` past the closing quote and returns true.
// False for anything else (no quote, a raw control character, a bad escape, no end); `pos` is
// then unspecified. A surrogate pair spells one code point; a lone half becomes U+FFFD.
bool ReadJsonString(std::string_view text, size_t& pos, std::string& out);

}  // namespace floodgate::common
