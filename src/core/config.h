#pragma once

// The limit model and its parser: envoyproxy/ratelimit's YAML, unchanged, plus our extensions.
// Pure: parses text, reads no files (src/admin/config_source.h reads the source).
//
// A Config is parsed and validated once, then immutable; the limiter holds it through a
// shared_ptr<const Config> and swaps the whole pointer on reload. Everything here is safe to
// share read-only between threads.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "floodgate/limit.h"
#include "floodgate/routing.h"

namespace floodgate::core {

// Envoy's units (numbering as envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit).
enum class TimeUnit : uint8_t {
  kUnknown = 0,
  kSecond = 1,
  kMinute = 2,
  kHour = 3,
  kDay = 4,
  kMonth = 5,
  kYear = 6,
  kWeek = 7,
};
// Returns the unit's length as envoyproxy/ratelimit counts it (month = 30 days, year = 365).
int64_t TimeUnitNs(TimeUnit unit);
std::string_view TimeUnitName(TimeUnit unit);  // "second", ..., "" for kUnknown

// Failure handling and consistency, used by the cluster: the public routing enums
// (floodgate/routing.h, docs/cluster.md).
using ::floodgate::Consistency;
using ::floodgate::FailureMode;

struct MetadataField;

// A descriptor's `metadata:` (any YAML under it), kept as a tree of JSON-like values: the
// service returns it in Envoy's dynamic metadata (google.protobuf.Struct) for descriptors that
// pass. Scalars are typed as YAML 1.1 reads them: null, booleans, numbers, else strings.
struct MetadataValue {
  enum class Kind : uint8_t { kNull, kBool, kNumber, kString, kList, kStruct };
  Kind kind = Kind::kNull;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<MetadataValue> list;
  std::vector<MetadataField> fields;  // kStruct, in file order
};

// One entry of a kStruct MetadataValue: its name and value.
struct MetadataField {
  std::string first;
  MetadataValue second;
};

// One limit from the file.
struct RateLimitRule {
  std::string name;                    // `name:`; may be empty
  LimitSpec spec;                      // what the algorithm enforces
  bool unlimited = false;              // `unlimited: true`: always allowed, never counted
  TimeUnit unit = TimeUnit::kUnknown;  // set when the window was given as `unit:`
  uint64_t requests_per_unit = 0;      // as written
  std::vector<std::string> replaces;   // names of limits this one replaces in the same request
  bool shadow_mode = false;            // from the descriptor: counted, never refuses
  // From the descriptor: a refusal makes the descriptor OVER_LIMIT but the request is refused
  // only when every quota descriptor of it is (or another, non-quota one refuses). A quota
  // limit that refuses does not undo the request's other limits.
  bool quota_mode = false;
  int64_t block_duration_ns = 0;  // extension: refuse this long after a refusal (0 = off)
  Consistency consistency = Consistency::kExact;
  FailureMode failure_mode = FailureMode::kLocal;
  // Envoy's stats key: "domain.key_value.key2" (values only where the config has them, or all
  // request values when detailed_metric is set: the limiter expands that).
  std::string stats_key;
  bool detailed_metric = false;
  // The stats key depends on the request: detailed_metric, or value_to_metric on a descriptor
  // of the path (RequestStatsKey).
  bool request_stats_key = false;
  // A descriptor of the path has share_threshold: every value its wildcard matches shares one
  // counter (the state key takes the pattern, StateEntries).
  bool shares_threshold = false;
  // The descriptor's `metadata:`; null when it has none.
  std::shared_ptr<const MetadataValue> metadata;
  // Distinguishes two limits of the same algorithm and period on one descriptor; part of the
  // state key together with algorithm and period, so counters survive reloads that keep them.
  uint32_t slot = 0;
  // Where it was defined, for errors and /v1/config.
  std::string file;
  int line = 0;
};

// One `descriptors:` entry.
struct DescriptorNode {
  std::string key;
  std::string value;  // empty: matches the key alone; with '*' (anywhere, any number): a wildcard
  std::vector<RateLimitRule> limits;  // empty: no limit at this node
  bool shadow_mode = false;
  bool quota_mode = false;
  bool detailed_metric = false;
  bool value_to_metric = false;  // stats keys take the request's value here (not the pattern)
  bool share_threshold = false;  // wildcard only: all values it matches share one counter
  std::shared_ptr<const MetadataValue> metadata;
  // A wildcard value split at each '*' ("a*b*" -> "a", "b", ""); empty for other values.
  std::vector<std::string> wildcard_parts;
  std::vector<DescriptorNode> children;
  int line = 0;

  // Lookup tables over `children`, built by the loader (indices into children).
  absl::flat_hash_map<std::string, size_t> exact;     // "key_value" -> child
  std::vector<size_t> wildcards;                      // children with a '*' value, file order
  absl::flat_hash_map<std::string, size_t> key_only;  // "key" -> child with no value
};

struct DescriptorEntry {
  std::string key;
  std::string value;
};

// How each request entry matched, level by level (DomainConfig::Match).
struct MatchStep {
  const DescriptorNode* node = nullptr;
  bool by_value = false;  // by its value (exact or wildcard), not by the key alone
};
using MatchPath = absl::InlinedVector<MatchStep, 8>;

// Returns whether `value` matches a wildcard split at its '*'s (DescriptorNode::wildcard_parts):
// it starts with the first part, ends with the last, and holds the parts between in order,
// without overlaps; each '*' stands for any text, the empty text included.
bool WildcardMatches(absl::Span<const std::string> parts, std::string_view value);

// One domain's limits (one file in a config directory).
struct DomainConfig {
  std::string domain;
  std::string file;     // where it came from ("" when given inline)
  std::string source;   // the YAML text, for GET /v1/config and persistence
  DescriptorNode root;  // root.children are the top-level descriptors

  // Returns the limits for a request descriptor under envoyproxy/ratelimit's rules: at each
  // level exact key+value, then wildcard values in file order, then the key alone; the node
  // reached by the request's last entry gives the limits (nullptr when it has none, or when the
  // request has more entries than the config is deep, or nothing matched). Keys must be equal at
  // every step (Envoy compares only "key_value" strings). Does not allocate for keys and values
  // shorter than about 250 bytes. See docs/config.md.
  // `path`, when given, gets one step per entry matched (filled only when a node is returned).
  const DescriptorNode* Match(absl::Span<const DescriptorEntry> entries,
                              MatchPath* path = nullptr) const;
};

// Returns Envoy's stats key for `rule` as a request that matched `path` counts it: with
// detailed_metric, the domain and every entry's "key_value" (a share_threshold wildcard's
// pattern in place of its value); otherwise the config's key with the request's value at levels
// with value_to_metric that matched a wildcard or the key alone. `rule.stats_key` when neither.
std::string RequestStatsKey(std::string_view domain, absl::Span<const DescriptorEntry> entries,
                            const MatchPath& path, const RateLimitRule& rule);

// Returns the entries a request's state is keyed by: the request's, except that an entry
// matched by a share_threshold wildcard takes the wildcard's pattern, so every value it matches
// shares one counter.
std::vector<DescriptorEntry> StateEntries(absl::Span<const DescriptorEntry> entries,
                                          const MatchPath& path);

// Every domain, immutable once built.
struct Config {
  std::map<std::string, std::shared_ptr<const DomainConfig>> domains;
  uint64_t version = 0;
  // Returns the domain or nullptr.
  const DomainConfig* FindDomain(std::string_view domain) const;
};

// Bounds on one config file (one domain), whatever it arrives by: a file, the admin API or a
// peer. The text is at most kMaxConfigFileBytes; once its YAML aliases are expanded (each use
// counts as a copy of what it names) at most kMaxExpandedYamlNodes nodes and
// kMaxExpandedYamlBytes of scalar text; and the descriptors built from it (keys, values and every
// limit's stats key, which repeats the keys above it) at most kMaxLoadedDescriptorBytes.
// Without them a 7 KB file of aliases that use the level below twice takes gigabytes.
inline constexpr size_t kMaxConfigFileBytes = size_t{1} << 20;             // 1 MiB
inline constexpr uint64_t kMaxExpandedYamlNodes = uint64_t{1} << 20;       // 1Mi nodes
inline constexpr uint64_t kMaxExpandedYamlBytes = uint64_t{16} << 20;      // 16 MiB
inline constexpr uint64_t kMaxLoadedDescriptorBytes = uint64_t{64} << 20;  // 64 MiB
inline constexpr int kMaxYamlDepth = 256;  // nesting of YAML lists and mappings

// Parses one domain's YAML. Errors are InvalidArgument with "file:line: reason" (unknown fields,
// duplicate keys or descriptors, impossible values, bad YAML, a file past the bounds above);
// `file` "" is shown as "<inline>".
absl::StatusOr<std::shared_ptr<const DomainConfig>> ParseDomainConfig(std::string_view yaml,
                                                                      std::string_view file);

// Builds a Config from parsed domains; InvalidArgument on duplicate domains.
absl::StatusOr<std::shared_ptr<const Config>> BuildConfig(
    std::vector<std::shared_ptr<const DomainConfig>> domains, uint64_t version);

}  // namespace floodgate::core
