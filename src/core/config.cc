#include "src/core/config.h"

#include <yaml.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "floodgate/status_macros.h"
#include "src/core/yaml_reader.h"

namespace floodgate::core {

// How the loader works.
//
// libyaml builds the whole document as a node graph (yaml_parser_load); we then walk it once,
// checking every mapping against the fields allowed at that level, and build the DescriptorNode
// tree bottom-up: a node's children, limits and lookup tables are complete before the node is
// moved into its parent. Nothing is published until the whole file is valid, so a refused file
// changes nothing.
//
// Scalars are typed the way envoyproxy/ratelimit's YAML library (gopkg.in/yaml.v2, YAML 1.1)
// reads them into its structs, so Envoy files load unchanged: a string field takes any scalar's
// text (`value: 50.0.0.5`, `value: 2061234567`), a boolean field takes the YAML 1.1 words (yes,
// on, true, ...), a null or empty value is the same as an absent field. Deliberately stricter
// than Envoy: fields are checked per level (Envoy accepts any known field name anywhere and
// ignores misplaced ones), requests_per_unit is required (the README says so; Envoy's code reads
// a missing one as 0, which refuses everything), and numbers with leading zeros (YAML 1.1
// octal) or fractions are refused rather than silently converted.

namespace {

constexpr int kMaxDepth = 64;                // nesting of `descriptors:`
constexpr size_t kMaxDescriptors = 1 << 20;  // per file; aliases could otherwise explode it

constexpr absl::string_view kInlineLabel = "<inline>";

const std::initializer_list<absl::string_view> kRootFields = {"domain", "descriptors"};
const std::initializer_list<absl::string_view> kDescriptorFields = {
    "key",         "value",      "rate_limit",      "rate_limits",     "descriptors",
    "shadow_mode", "quota_mode", "detailed_metric", "value_to_metric", "share_threshold",
    "metadata"};
const std::initializer_list<absl::string_view> kRateLimitFields = {
    "unit",  "requests_per_unit", "unlimited",   "name",        "replaces", "window", "algorithm",
    "burst", "block_duration",    "consistency", "failure_mode"};
const std::initializer_list<absl::string_view> kReplacesFields = {"name"};

constexpr int64_t kSecondNs = 1'000'000'000LL;
constexpr int64_t kDayNs = 86400 * kSecondNs;

constexpr absl::string_view kAlgorithmNames =
    "fixed_window, sliding_window, token_bucket, gcra, leaky_bucket, concurrency";

// Walks one parsed YAML document and builds a DomainConfig. Single use.
class DocumentLoader : private YamlReader {
 public:
  DocumentLoader(yaml_document_t* document, absl::string_view file)
      : YamlReader(document, file.empty() ? std::string(kInlineLabel) : std::string(file)),
        file_(file) {}

  absl::Status Load(DomainConfig* out) {
    const yaml_node_t* root = Root();
    if (root == nullptr || IsNull(root)) {
      return ErrorAtLine(1, "missing 'domain' (the file is empty)");
    }
    if (root->type != YAML_MAPPING_NODE) {
      return Error(root, "the top level must be a mapping with 'domain' and 'descriptors'");
    }
    FG_ASSIGN_OR_RETURN(YamlFields fields, ReadMapping(root, kRootFields, "the top level"));
    const yaml_node_t* domain = fields.Value("domain");
    if (domain == nullptr) {
      return Error(root, "missing 'domain'");
    }
    FG_ASSIGN_OR_RETURN(out->domain, String(domain, "domain"));
    if (out->domain.empty()) {
      return Error(domain, "'domain' must not be empty");
    }
    out->file = file_;
    out->root.line = Line(root);
    FG_RETURN_IF_ERROR(LoadDescriptors(fields.Value("descriptors"), PathFlags{out->domain},
                                       /*depth=*/1, &out->root));
    return absl::OkStatus();
  }

 private:
  // What the descriptors above a level pass down to the limits below them.
  struct PathFlags {
    std::string stats_key;         // "domain.key_value...", the parent's
    bool value_to_metric = false;  // some descriptor above has value_to_metric
    bool share_threshold = false;  // some descriptor above has share_threshold
  };

  absl::Status LoadDescriptors(const yaml_node_t* list, const PathFlags& above, int depth,
                               DescriptorNode* parent) {
    const std::string& parent_stats_key = above.stats_key;
    FG_ASSIGN_OR_RETURN(std::vector<const yaml_node_t*> items, List(list, "descriptors"));
    if (!items.empty() && depth > kMaxDepth) {
      return Error(
          list, absl::StrCat("descriptors are nested too deeply (at most ", kMaxDepth, " levels)"));
    }
    // Envoy keys a level by "key" or "key_value" and refuses a repeat, so we do too; that also
    // keeps DescriptorNode::exact unambiguous.
    absl::flat_hash_map<std::string, int> seen;  // composite key -> line
    for (const yaml_node_t* item : items) {
      if (++descriptor_count_ > kMaxDescriptors) {
        return Error(item,
                     absl::StrCat("too many descriptors (at most ", kMaxDescriptors, " per file)"));
      }
      if (item->type != YAML_MAPPING_NODE) {
        return Error(item, "each entry of 'descriptors' must be a mapping with 'key'");
      }
      FG_ASSIGN_OR_RETURN(YamlFields fields, ReadMapping(item, kDescriptorFields, "a descriptor"));
      DescriptorNode node;
      node.line = Line(item);
      const yaml_node_t* key = fields.Value("key");
      if (key == nullptr) {
        return Error(item, "descriptor has no 'key'");
      }
      FG_ASSIGN_OR_RETURN(node.key, String(key, "key"));
      if (node.key.empty()) {
        return Error(key, "descriptor has an empty 'key'");
      }
      if (const yaml_node_t* value = fields.Value("value"); value != nullptr) {
        FG_ASSIGN_OR_RETURN(node.value, String(value, "value"));
      }
      std::string composite =
          node.value.empty() ? node.key : absl::StrCat(node.key, "_", node.value);
      if (auto [it, inserted] = seen.emplace(composite, node.line); !inserted) {
        return Error(item, absl::StrCat("duplicate descriptor '", composite,
                                        "' at this level (first at line ", it->second, ")"));
      }
      if (const yaml_node_t* v = fields.Value("shadow_mode"); v != nullptr) {
        FG_ASSIGN_OR_RETURN(node.shadow_mode, Bool(v, "shadow_mode"));
      }
      if (const yaml_node_t* v = fields.Value("detailed_metric"); v != nullptr) {
        FG_ASSIGN_OR_RETURN(node.detailed_metric, Bool(v, "detailed_metric"));
      }
      FG_RETURN_IF_ERROR(LoadEnvoyFlags(fields, composite, node));
      PathFlags below{"", above.value_to_metric || node.value_to_metric,
                      above.share_threshold || node.share_threshold};
      // Count what this descriptor builds before building it: its key and value, and its
      // stats key once for the node and once per limit (rate_limits' items, counted unexpanded).
      const YamlFields::Field* limits_field = fields.Find("rate_limits");
      const uint64_t limit_count =
          1 + (limits_field != nullptr && limits_field->value != nullptr &&
                       limits_field->value->type == YAML_SEQUENCE_NODE
                   ? static_cast<uint64_t>(limits_field->value->data.sequence.items.top -
                                           limits_field->value->data.sequence.items.start)
                   : 1);
      loaded_bytes_ +=
          sizeof(DescriptorNode) + node.key.size() + node.value.size() +
          limit_count * (parent_stats_key.size() + 1 + composite.size() + sizeof(RateLimitRule));
      if (loaded_bytes_ > kMaxLoadedDescriptorBytes) {
        return Error(item,
                     absl::StrCat("the descriptors take more than ", kMaxLoadedDescriptorBytes,
                                  " bytes once loaded (at most that per file: long keys "
                                  "nested deeply, or aliases used many times, repeat them)"));
      }
      std::string stats_key = absl::StrCat(parent_stats_key, ".", composite);
      below.stats_key = stats_key;

      const YamlFields::Field* one = fields.Find("rate_limit");
      const YamlFields::Field* many = fields.Find("rate_limits");
      if (one != nullptr && many != nullptr) {
        const YamlFields::Field* later = Line(one->key) > Line(many->key) ? one : many;
        return Error(later->key, "give either 'rate_limit' or 'rate_limits', not both");
      }
      if (one != nullptr && one->value != nullptr) {
        FG_ASSIGN_OR_RETURN(RateLimitRule rule,
                            LoadRateLimit(one->value, Line(one->key), node, below));
        node.limits.push_back(std::move(rule));
      }
      if (many != nullptr) {
        FG_ASSIGN_OR_RETURN(std::vector<const yaml_node_t*> limits,
                            List(many->value, "rate_limits"));
        for (const yaml_node_t* limit : limits) {
          if (limit->type != YAML_MAPPING_NODE) {
            return Error(limit, "each entry of 'rate_limits' must be a mapping");
          }
          FG_ASSIGN_OR_RETURN(RateLimitRule rule, LoadRateLimit(limit, Line(limit), node, below));
          node.limits.push_back(std::move(rule));
        }
      }
      // Slots tell apart limits that share an algorithm and period on this descriptor.
      for (size_t i = 0; i < node.limits.size(); ++i) {
        uint32_t slot = 0;
        for (size_t j = 0; j < i; ++j) {
          if (node.limits[j].spec.algorithm == node.limits[i].spec.algorithm &&
              node.limits[j].spec.period_ns == node.limits[i].spec.period_ns) {
            ++slot;
          }
        }
        node.limits[i].slot = slot;
      }

      FG_RETURN_IF_ERROR(LoadDescriptors(fields.Value("descriptors"), below, depth + 1, &node));
      parent->children.push_back(std::move(node));
    }
    BuildLookupTables(parent);
    return absl::OkStatus();
  }

  static void BuildLookupTables(DescriptorNode* node) {
    for (size_t i = 0; i < node->children.size(); ++i) {
      const DescriptorNode& child = node->children[i];
      if (child.value.empty()) {
        node->key_only.emplace(child.key, i);
        continue;
      }
      // A wildcard child is also reachable by its literal value, as in Envoy.
      node->exact.emplace(absl::StrCat(child.key, "_", child.value), i);
      if (!child.wildcard_parts.empty()) {
        node->wildcards.push_back(i);
      }
    }
  }

  // Envoy's per-descriptor switches: quota_mode, value_to_metric, share_threshold (a wildcard
  // value only), metadata; and the wildcard's parts.
  absl::Status LoadEnvoyFlags(const YamlFields& fields, const std::string& composite,
                              DescriptorNode& node) const {
    if (const yaml_node_t* v = fields.Value("quota_mode"); v != nullptr) {
      FG_ASSIGN_OR_RETURN(node.quota_mode, Bool(v, "quota_mode"));
    }
    if (const yaml_node_t* v = fields.Value("value_to_metric"); v != nullptr) {
      FG_ASSIGN_OR_RETURN(node.value_to_metric, Bool(v, "value_to_metric"));
    }
    if (absl::StrContains(node.value, '*')) {
      node.wildcard_parts = absl::StrSplit(node.value, '*');
    }
    if (const yaml_node_t* v = fields.Value("share_threshold"); v != nullptr) {
      FG_ASSIGN_OR_RETURN(node.share_threshold, Bool(v, "share_threshold"));
      if (node.share_threshold && node.wildcard_parts.empty()) {
        return Error(v, absl::StrCat("share_threshold can only be used with wildcard values "
                                     "(containing '*'), but found key '",
                                     composite, "'"));
      }
    }
    if (const yaml_node_t* v = fields.Value("metadata"); v != nullptr && !IsNull(v)) {
      if (v->type != YAML_MAPPING_NODE) {
        return Error(v, "'metadata' must be a mapping");
      }
      auto metadata = std::make_shared<MetadataValue>();
      FG_RETURN_IF_ERROR(LoadMetadata(v, *metadata));
      node.metadata = std::move(metadata);
    }
    return absl::OkStatus();
  }

  // Any YAML under `metadata:`, as JSON-like values (keys of any scalar become their text).
  absl::Status LoadMetadata(const yaml_node_t* node, MetadataValue& out) const {
    switch (node->type) {
      case YAML_MAPPING_NODE:
        out.kind = MetadataValue::Kind::kStruct;
        for (const yaml_node_pair_t* pair = node->data.mapping.pairs.start;
             pair < node->data.mapping.pairs.top; ++pair) {
          const yaml_node_t* key = Node(pair->key);
          const yaml_node_t* value = Node(pair->value);
          if (key == nullptr || value == nullptr) {
            return Error(node, "bad 'metadata' mapping");
          }
          if (key->type != YAML_SCALAR_NODE) {
            return Error(key, "'metadata' keys must be scalars");
          }
          std::string name(reinterpret_cast<const char*>(key->data.scalar.value),
                           key->data.scalar.length);
          MetadataField& field = out.fields.emplace_back();
          field.first = std::move(name);
          FG_RETURN_IF_ERROR(LoadMetadata(value, field.second));
        }
        return absl::OkStatus();
      case YAML_SEQUENCE_NODE:
        out.kind = MetadataValue::Kind::kList;
        for (const yaml_node_item_t* item = node->data.sequence.items.start;
             item < node->data.sequence.items.top; ++item) {
          const yaml_node_t* child = Node(*item);
          if (child == nullptr) {
            return Error(node, "bad 'metadata' list");
          }
          FG_RETURN_IF_ERROR(LoadMetadata(child, out.list.emplace_back()));
        }
        return absl::OkStatus();
      case YAML_SCALAR_NODE:
        LoadMetadataScalar(node, out);
        return absl::OkStatus();
      default:
        return Error(node, "bad 'metadata' value");
    }
  }

  // A scalar as yaml.v2 types it: quoted is a string; plain null, booleans and numbers are
  // those; anything else a string.
  static void LoadMetadataScalar(const yaml_node_t* node, MetadataValue& out) {
    std::string text(reinterpret_cast<const char*>(node->data.scalar.value),
                     node->data.scalar.length);
    if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
      out.kind = MetadataValue::Kind::kString;
      out.string = std::move(text);
      return;
    }
    if (IsNull(node)) {
      out.kind = MetadataValue::Kind::kNull;
      return;
    }
    if (std::optional<bool> value = YamlBoolWord(text); value.has_value()) {
      out.kind = MetadataValue::Kind::kBool;
      out.boolean = *value;
      return;
    }
    double number = 0;
    if (absl::SimpleAtod(text, &number) && !absl::StrContains(text, "inf") &&
        !absl::StrContains(text, "nan") && !absl::StrContains(text, "INF") &&
        !absl::StrContains(text, "NAN") && !absl::StrContains(text, "Inf") &&
        !absl::StrContains(text, "NaN")) {
      out.kind = MetadataValue::Kind::kNumber;
      out.number = number;
      return;
    }
    out.kind = MetadataValue::Kind::kString;
    out.string = std::move(text);
  }

  absl::StatusOr<RateLimitRule> LoadRateLimit(const yaml_node_t* map, int line,
                                              const DescriptorNode& descriptor,
                                              const PathFlags& path) const {
    FG_ASSIGN_OR_RETURN(YamlFields fields, ReadMapping(map, kRateLimitFields, "a rate limit"));
    RateLimitRule rule;
    rule.file = file_;
    rule.line = line;
    rule.stats_key = path.stats_key;
    rule.shadow_mode = descriptor.shadow_mode;
    rule.quota_mode = descriptor.quota_mode;
    rule.detailed_metric = descriptor.detailed_metric;
    rule.request_stats_key = descriptor.detailed_metric || path.value_to_metric;
    rule.shares_threshold = path.share_threshold;
    rule.metadata = descriptor.metadata;

    if (const yaml_node_t* v = fields.Value("name"); v != nullptr) {
      FG_ASSIGN_OR_RETURN(rule.name, String(v, "name"));
    }
    if (const yaml_node_t* v = fields.Value("unlimited"); v != nullptr) {
      FG_ASSIGN_OR_RETURN(rule.unlimited, Bool(v, "unlimited"));
    }
    if (const yaml_node_t* v = fields.Value("algorithm"); v != nullptr) {
      FG_ASSIGN_OR_RETURN(std::string name, String(v, "algorithm"));
      absl::StatusOr<Algorithm> algorithm = ParseAlgorithm(absl::AsciiStrToLower(name));
      if (!algorithm.ok()) {
        return Error(
            v, absl::StrCat("unknown algorithm '", name, "' (allowed: ", kAlgorithmNames, ")"));
      }
      rule.spec.algorithm = *algorithm;
    }

    FG_RETURN_IF_ERROR(LoadWindow(fields, line, rule));
    FG_RETURN_IF_ERROR(LoadCounts(fields, line, rule));
    FG_RETURN_IF_ERROR(LoadBehaviour(fields, rule));
    FG_RETURN_IF_ERROR(LoadReplaces(fields.Value("replaces"), rule));

    if (!rule.unlimited) {
      if (absl::Status status = ValidateLimitSpec(rule.spec); !status.ok()) {
        return ErrorAtLine(line, status.message());
      }
    }
    return rule;
  }

  // The window: Envoy's `unit` or our `window` (neither for an unlimited rule).
  absl::Status LoadWindow(const YamlFields& fields, int line, RateLimitRule& rule) const {
    const yaml_node_t* unit = fields.Value("unit");
    const yaml_node_t* window = fields.Value("window");
    if (unit != nullptr) {
      FG_ASSIGN_OR_RETURN(std::string text, String(unit, "unit"));
      if (text.empty()) {
        unit = nullptr;  // as Envoy: an empty unit is no unit
      } else {
        std::string lower = absl::AsciiStrToLower(text);
        for (TimeUnit u : {TimeUnit::kSecond, TimeUnit::kMinute, TimeUnit::kHour, TimeUnit::kDay,
                           TimeUnit::kWeek, TimeUnit::kMonth, TimeUnit::kYear}) {
          if (lower == AbslView(TimeUnitName(u))) {
            rule.unit = u;
          }
        }
        if (rule.unit == TimeUnit::kUnknown) {
          return Error(unit, absl::StrCat("invalid unit '", text,
                                          "' (allowed: second, minute, hour, day, week, month, "
                                          "year)"));
        }
        rule.spec.period_ns = TimeUnitNs(rule.unit);
      }
    }
    if (window != nullptr) {
      if (unit != nullptr) {
        return Error(window, "give either 'unit' or 'window', not both");
      }
      FG_ASSIGN_OR_RETURN(rule.spec.period_ns, Duration(window, "window"));
      if (rule.spec.period_ns == 0) {
        return Error(window, "'window' must be longer than zero");
      }
    }
    if (rule.unlimited && (unit != nullptr || window != nullptr)) {
      return Error(unit != nullptr ? unit : window,
                   "an unlimited rate limit takes no 'unit' or 'window'");
    }
    if (!rule.unlimited && unit == nullptr && window == nullptr) {
      return ErrorAtLine(line, "rate limit needs a 'unit' (or a 'window')");
    }
    return absl::OkStatus();
  }

  // requests_per_unit (required unless unlimited) and burst (buckets only).
  absl::Status LoadCounts(const YamlFields& fields, int line, RateLimitRule& rule) const {
    if (const yaml_node_t* v = fields.Value("requests_per_unit"); v != nullptr) {
      FG_ASSIGN_OR_RETURN(rule.requests_per_unit,
                          Uint(v, "requests_per_unit", kMaxRequestsPerPeriod));
    } else if (!rule.unlimited) {
      return ErrorAtLine(line, "rate limit needs 'requests_per_unit' (0 refuses everything)");
    }
    rule.spec.requests_per_period = rule.requests_per_unit;

    if (const yaml_node_t* v = fields.Value("burst"); v != nullptr) {
      FG_ASSIGN_OR_RETURN(rule.spec.burst, Uint(v, "burst", kMaxRequestsPerPeriod));
      if (rule.spec.algorithm != Algorithm::kTokenBucket &&
          rule.spec.algorithm != Algorithm::kLeakyBucket) {
        return Error(v, absl::StrCat("'burst' applies only to token_bucket and leaky_bucket, not ",
                                     AbslView(AlgorithmName(rule.spec.algorithm))));
      }
    }
    return absl::OkStatus();
  }

  // Our extensions: block_duration, consistency and failure_mode.
  absl::Status LoadBehaviour(const YamlFields& fields, RateLimitRule& rule) const {
    if (const yaml_node_t* v = fields.Value("block_duration"); v != nullptr) {
      FG_ASSIGN_OR_RETURN(rule.block_duration_ns, Duration(v, "block_duration"));
    }
    if (const yaml_node_t* v = fields.Value("consistency"); v != nullptr) {
      FG_ASSIGN_OR_RETURN(std::string text, String(v, "consistency"));
      std::string lower = absl::AsciiStrToLower(text);
      if (lower == "exact") {
        rule.consistency = Consistency::kExact;
      } else if (lower == "local") {
        rule.consistency = Consistency::kLocal;
      } else {
        return Error(v, absl::StrCat("invalid consistency '", text, "' (allowed: exact, local)"));
      }
    }
    if (const yaml_node_t* v = fields.Value("failure_mode"); v != nullptr) {
      FG_ASSIGN_OR_RETURN(std::string text, String(v, "failure_mode"));
      std::string lower = absl::AsciiStrToLower(text);
      if (lower == "open") {
        rule.failure_mode = FailureMode::kOpen;
      } else if (lower == "closed") {
        rule.failure_mode = FailureMode::kClosed;
      } else if (lower == "local") {
        rule.failure_mode = FailureMode::kLocal;
      } else {
        return Error(
            v, absl::StrCat("invalid failure_mode '", text, "' (allowed: open, closed, local)"));
      }
    }
    return absl::OkStatus();
  }

  // `replaces: [{name: ...}]`: names of other limits, never the rule's own.
  absl::Status LoadReplaces(const yaml_node_t* list, RateLimitRule& rule) const {
    FG_ASSIGN_OR_RETURN(std::vector<const yaml_node_t*> replaces, List(list, "replaces"));
    for (const yaml_node_t* entry : replaces) {
      if (entry->type != YAML_MAPPING_NODE) {
        return Error(entry, "each entry of 'replaces' must be a mapping with 'name'");
      }
      FG_ASSIGN_OR_RETURN(YamlFields entry_fields, ReadMapping(entry, kReplacesFields, "replaces"));
      std::string name;
      if (const yaml_node_t* v = entry_fields.Value("name"); v != nullptr) {
        FG_ASSIGN_OR_RETURN(name, String(v, "name"));
      }
      if (name.empty()) {
        return Error(entry, "'replaces' entry has no 'name'");
      }
      if (name == rule.name) {
        return Error(entry, absl::StrCat("rate limit '", name, "' replaces itself"));
      }
      rule.replaces.push_back(std::move(name));
    }
    return absl::OkStatus();
  }

  std::string file_;
  size_t descriptor_count_ = 0;
  uint64_t loaded_bytes_ = 0;  // an estimate of what the descriptors built so far take
};

// Owns a yaml_parser_t and the documents it loads.
}  // namespace

int64_t TimeUnitNs(TimeUnit unit) {
  switch (unit) {
    case TimeUnit::kSecond:
      return kSecondNs;
    case TimeUnit::kMinute:
      return 60 * kSecondNs;
    case TimeUnit::kHour:
      return 3600 * kSecondNs;
    case TimeUnit::kDay:
      return kDayNs;
    case TimeUnit::kWeek:
      return 7 * kDayNs;
    case TimeUnit::kMonth:
      return 30 * kDayNs;
    case TimeUnit::kYear:
      return 365 * kDayNs;
    case TimeUnit::kUnknown:
      break;
  }
  return 0;
}

std::string_view TimeUnitName(TimeUnit unit) {
  switch (unit) {
    case TimeUnit::kSecond:
      return "second";
    case TimeUnit::kMinute:
      return "minute";
    case TimeUnit::kHour:
      return "hour";
    case TimeUnit::kDay:
      return "day";
    case TimeUnit::kWeek:
      return "week";
    case TimeUnit::kMonth:
      return "month";
    case TimeUnit::kYear:
      return "year";
    case TimeUnit::kUnknown:
      break;
  }
  return "";
}

namespace {

// Returns the child of `node` that `entry` selects: exact key and value, else the first
// wildcard (file order) that matches the value, else the key alone. `by_value` says which.
const DescriptorNode* FindChild(const DescriptorNode& node, const DescriptorEntry& entry,
                                bool& by_value) {
  by_value = true;
  // "key_value" without allocating for the usual short keys.
  std::array<char, 256> buffer;
  std::string heap;
  absl::string_view composite;
  size_t size = entry.key.size() + 1 + entry.value.size();
  if (size <= buffer.size()) {
    std::memcpy(buffer.data(), entry.key.data(), entry.key.size());
    buffer[entry.key.size()] = '_';
    std::memcpy(buffer.data() + entry.key.size() + 1, entry.value.data(), entry.value.size());
    composite = absl::string_view(buffer.data(), size);
  } else {
    heap = absl::StrCat(entry.key, "_", entry.value);
    composite = heap;
  }
  // The key must match too: Envoy compares only the joined string, so with keys containing '_'
  // ("a_b" / "c" against "a" / "b_c") it could pick another key's descriptor.
  if (auto it = node.exact.find(composite); it != node.exact.end()) {
    const DescriptorNode& child = node.children[it->second];
    if (child.key == entry.key) {
      return &child;
    }
  }
  for (size_t index : node.wildcards) {
    const DescriptorNode& child = node.children[index];
    if (child.key == entry.key && WildcardMatches(child.wildcard_parts, entry.value)) {
      return &child;
    }
  }
  by_value = false;
  if (auto it = node.key_only.find(entry.key); it != node.key_only.end()) {
    return &node.children[it->second];
  }
  return nullptr;
}

}  // namespace

bool WildcardMatches(absl::Span<const std::string> parts, std::string_view text) {
  absl::string_view value = AbslView(text);
  if (parts.size() < 2) {
    return parts.size() == 1 && value == parts[0];
  }
  const std::string& first = parts.front();
  const std::string& last = parts.back();
  if (value.size() < first.size() + last.size() || !absl::StartsWith(value, first) ||
      !absl::EndsWith(value, last)) {
    return false;
  }
  // The parts between are found in order, each after the one before, in what lies between the
  // first part and the last (leftmost matches: if any placement fits, this one does).
  absl::string_view rest = value.substr(first.size(), value.size() - first.size() - last.size());
  for (size_t i = 1; i + 1 < parts.size(); ++i) {
    const size_t at = rest.find(parts[i]);
    if (at == absl::string_view::npos) {
      return false;
    }
    rest.remove_prefix(at + parts[i].size());
  }
  return true;
}

std::string RequestStatsKey(std::string_view domain, absl::Span<const DescriptorEntry> entries,
                            const MatchPath& path, const RateLimitRule& rule) {
  if (!rule.request_stats_key || path.size() != entries.size()) {
    return rule.stats_key;
  }
  std::string key(domain);
  for (size_t i = 0; i < entries.size(); ++i) {
    const DescriptorEntry& entry = entries[i];
    const DescriptorNode& node = *path[i].node;
    absl::StrAppend(&key, ".", entry.key);
    if (rule.detailed_metric) {
      // Envoy writes "key_value" for every entry, an empty value included, except that a
      // share_threshold wildcard shows its pattern (then an empty request value is omitted).
      if (node.share_threshold && path[i].by_value) {
        absl::StrAppend(&key, "_", node.value);
      } else if (!rule.shares_threshold || !entry.value.empty()) {
        absl::StrAppend(&key, "_", entry.value);
      }
      continue;
    }
    std::string_view value;
    if (!path[i].by_value) {
      value = node.value_to_metric ? std::string_view(entry.value) : std::string_view();
    } else if (!node.wildcard_parts.empty()) {
      value = node.value_to_metric && !node.share_threshold ? std::string_view(entry.value)
                                                            : std::string_view(node.value);
    } else {
      value = entry.value;
    }
    if (!value.empty()) {
      absl::StrAppend(&key, "_", AbslView(value));
    }
  }
  return key;
}

std::vector<DescriptorEntry> StateEntries(absl::Span<const DescriptorEntry> entries,
                                          const MatchPath& path) {
  std::vector<DescriptorEntry> out(entries.begin(), entries.end());
  for (size_t i = 0; i < out.size() && i < path.size(); ++i) {
    if (path[i].node->share_threshold && path[i].by_value) {
      out[i].value = path[i].node->value;
    }
  }
  return out;
}

const DescriptorNode* DomainConfig::Match(absl::Span<const DescriptorEntry> entries,
                                          MatchPath* path) const {
  // As envoyproxy/ratelimit's GetLimit: walk one level per entry; only the node reached by the
  // last entry may answer, and a walk that runs out of config (no child matches, or the node
  // has no children while entries remain) answers nothing.
  const DescriptorNode* level = &root;
  if (path != nullptr) {
    path->clear();
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    bool by_value = false;
    const DescriptorNode* next = FindChild(*level, entries[i], by_value);
    if (next == nullptr) {
      return nullptr;
    }
    if (path != nullptr) {
      path->push_back(MatchStep{next, by_value});
    }
    if (i + 1 == entries.size()) {
      return next->limits.empty() ? nullptr : next;
    }
    if (next->children.empty()) {
      return nullptr;
    }
    level = next;
  }
  return nullptr;
}

const DomainConfig* Config::FindDomain(std::string_view domain) const {
  auto it = domains.find(std::string(domain));
  return it == domains.end() ? nullptr : it->second.get();
}

absl::StatusOr<std::shared_ptr<const DomainConfig>> ParseDomainConfig(std::string_view yaml_text,
                                                                      std::string_view file_name) {
  absl::string_view yaml = AbslView(yaml_text);
  absl::string_view file = AbslView(file_name);
  std::string label = file.empty() ? std::string(kInlineLabel) : std::string(file);
  if (yaml.size() > kMaxConfigFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": is ", yaml.size(),
                                                   " bytes; a config file may hold at most ",
                                                   kMaxConfigFileBytes, " bytes (1 MiB)"));
  }
  YamlParser parser(yaml);
  if (!parser.initialized()) {
    return absl::ResourceExhaustedError(absl::StrCat(label, ": cannot initialize the YAML parser"));
  }
  YamlDocument document;
  if (!document.Load(parser.get())) {
    return YamlSyntaxError(*parser.get(), label, yaml);
  }
  // yaml.v2 would silently read only the first document; a second one is surely a mistake.
  {
    YamlDocument next;
    if (!next.Load(parser.get())) {
      return YamlSyntaxError(*parser.get(), label, yaml);
    }
    if (const yaml_node_t* extra = yaml_document_get_root_node(next.get()); extra != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ":", extra->start_mark.line + 1,
                       ": a config file holds one YAML document (one domain)"));
    }
  }

  // Before the loader walks the document: it would build every use of an alias as a copy.
  FG_RETURN_IF_ERROR(CheckYamlExpansion(
      document.get(), label, {kMaxExpandedYamlNodes, kMaxExpandedYamlBytes, kMaxYamlDepth}));
  auto config = std::make_shared<DomainConfig>();
  DocumentLoader loader(document.get(), file);
  FG_RETURN_IF_ERROR(loader.Load(config.get()));
  config->source = std::string(yaml);
  return std::shared_ptr<const DomainConfig>(std::move(config));
}

absl::StatusOr<std::shared_ptr<const Config>> BuildConfig(
    std::vector<std::shared_ptr<const DomainConfig>> domains, uint64_t version) {
  auto config = std::make_shared<Config>();
  config->version = version;
  for (std::shared_ptr<const DomainConfig>& domain : domains) {
    if (domain == nullptr) {
      return absl::InvalidArgumentError("BuildConfig: null domain");
    }
    auto [it, inserted] = config->domains.emplace(domain->domain, domain);
    if (!inserted) {
      absl::string_view first = it->second->file.empty() ? kInlineLabel : it->second->file;
      absl::string_view second = domain->file.empty() ? kInlineLabel : domain->file;
      return absl::InvalidArgumentError(
          absl::StrCat(second, ": duplicate domain '", domain->domain, "' (also in ", first, ")"));
    }
  }
  return std::shared_ptr<const Config>(std::move(config));
}

}  // namespace floodgate::core
