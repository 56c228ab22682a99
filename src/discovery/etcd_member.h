#pragma once

// How EtcdDiscovery stores one member in etcd and turns the keys it sees into a member list:
// the key is `<prefix>/members/<id>`, the value a small JSON object
// `{"id":"<id>","address":"<host:port>"}` that other tools (etcdctl) can read.
//
// Thread-safety: pure functions.

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "src/discovery/discovery.h"

namespace floodgate::discovery {

// Returns the JSON value stored for `node`.
std::string EncodeMemberValue(const Node& node);

// Parses a value written by EncodeMemberValue (or by hand): a JSON object whose "id" and
// "address" are strings; other members (strings, numbers, true/false/null) are ignored.
// InvalidArgument when it is not such an object or the address is missing.
absl::StatusOr<Node> DecodeMemberValue(std::string_view value);

// Returns the member list for the values under `<prefix>/members/` (key -> value): the nodes
// that parse, sorted by id, one per id (the lexically last key wins). A value without an id
// takes the last segment of its key. Values that do not parse are left out.
std::vector<Node> MemberList(const std::map<std::string, std::string>& values);

// Returns the end of the key range holding every key that starts with `prefix` (etcd's
// range_end: the prefix with its last byte incremented, carries dropped); "\0" for all keys.
std::string PrefixRangeEnd(std::string_view prefix);

}  // namespace floodgate::discovery
