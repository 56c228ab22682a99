#include "src/core/config.h"

#include <yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "floodgate/status_macros.h"

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
    "key", "value", "rate_limit", "rate_limits", "descriptors", "shadow_mode", "detailed_metric"};
const std::initializer_list<absl::string_view> kRateLimitFields = {
    "unit",  "requests_per_unit", "unlimited",   "name",        "replaces", "window", "algorithm",
    "burst", "block_duration",    "consistency", "failure_mode"};
const std::initializer_list<absl::string_view> kReplacesFields = {"name"};

// Debian's abseil is built with its own string_view, distinct from std::string_view.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr absl::string_view kAlgorithmNames =
    "fixed_window, sliding_window, token_bucket, gcra, leaky_bucket, concurrency";

constexpr int64_t kSecondNs = 1'000'000'000LL;
constexpr int64_t kDayNs = 86400 * kSecondNs;

// The fields of one YAML mapping, checked against the allowed names.
class Fields {
 public:
  struct Field {
    absl::string_view name;
    const yaml_node_t* key = nullptr;
    const yaml_node_t* value = nullptr;  // nullptr when the value is null (same as absent)
  };

  void Add(Field field) { fields_.push_back(field); }
  const Field* Find(absl::string_view name) const {
    for (const Field& field : fields_) {
      if (field.name == name) {
        return &field;
      }
    }
    return nullptr;
  }
  // Returns the value node, or nullptr when absent or null.
  const yaml_node_t* Value(absl::string_view name) const {
    const Field* field = Find(name);
    return field == nullptr ? nullptr : field->value;
  }

 private:
  std::vector<Field> fields_;
};

absl::string_view ScalarText(const yaml_node_t* node) {
  return absl::string_view(reinterpret_cast<const char*>(node->data.scalar.value),
                           node->data.scalar.length);
}

bool IsPlainScalar(const yaml_node_t* node) {
  return node->type == YAML_SCALAR_NODE && node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

// YAML 1.1 nulls, as yaml.v2 resolves them (an empty value is one).
bool IsNull(const yaml_node_t* node) {
  if (!IsPlainScalar(node)) {
    return false;
  }
  absl::string_view text = ScalarText(node);
  return text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL";
}

constexpr char kMalformedDuration[] =
    "must be whole numbers with units (ms, s, m, h, d, w), like 500ms, 30s or 1h30m";

// Parses "500ms", "30s", "5m", "2h", "1d", "1w" and sums like "1h30m". Returns false with
// `error` set when malformed or longer than kMaxPeriodNs.
bool ParseDuration(absl::string_view text, int64_t* out_ns, std::string* error) {
  if (text == "0") {
    *out_ns = 0;
    return true;
  }
  if (text.empty()) {
    *error = "is empty";
    return false;
  }
  if (text.front() == '-') {
    *error = "must not be negative";
    return false;
  }
  int64_t total_ns = 0;
  size_t i = 0;
  while (i < text.size()) {
    uint64_t count = 0;
    size_t digits = 0;
    while (i < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[i]))) {
      if (count > static_cast<uint64_t>(kMaxPeriodNs) / 10) {
        *error = "is too long (at most 100 years)";
        return false;
      }
      count = count * 10 + static_cast<uint64_t>(text[i] - '0');
      ++i;
      ++digits;
    }
    if (digits == 0) {
      *error = kMalformedDuration;
      return false;
    }
    size_t unit_start = i;
    while (i < text.size() && absl::ascii_isalpha(static_cast<unsigned char>(text[i]))) {
      ++i;
    }
    absl::string_view unit = text.substr(unit_start, i - unit_start);
    int64_t unit_ns = 0;
    if (unit == "ms") {
      unit_ns = 1'000'000LL;
    } else if (unit == "s") {
      unit_ns = kSecondNs;
    } else if (unit == "m") {
      unit_ns = 60 * kSecondNs;
    } else if (unit == "h") {
      unit_ns = 3600 * kSecondNs;
    } else if (unit == "d") {
      unit_ns = kDayNs;
    } else if (unit == "w") {
      unit_ns = 7 * kDayNs;
    } else {
      if (!unit.empty()) {
        *error = absl::StrCat("has an unknown unit '", unit, "' (allowed: ms, s, m, h, d, w)");
      } else if (i == text.size()) {
        *error = "needs a unit (ms, s, m, h, d, w), e.g. 30s";
      } else {
        *error = kMalformedDuration;
      }
      return false;
    }
    // count <= kMaxPeriodNs + 9 and total_ns <= kMaxPeriodNs: check before multiplying.
    if (count > static_cast<uint64_t>((kMaxPeriodNs - total_ns) / unit_ns)) {
      *error = "is too long (at most 100 years)";
      return false;
    }
    total_ns += static_cast<int64_t>(count) * unit_ns;
  }
  *out_ns = total_ns;
  return true;
}

// Walks one parsed YAML document and builds a DomainConfig. Single use.
class DocumentLoader {
 public:
  DocumentLoader(yaml_document_t* document, absl::string_view file)
      : document_(document),
        file_(file),
        label_(file.empty() ? std::string(kInlineLabel) : std::string(file)) {}

  absl::Status Load(DomainConfig* out) {
    const yaml_node_t* root = yaml_document_get_root_node(document_);
    if (root == nullptr || IsNull(root)) {
      return ErrorAtLine(1, "missing 'domain' (the file is empty)");
    }
    if (root->type != YAML_MAPPING_NODE) {
      return Error(root, "the top level must be a mapping with 'domain' and 'descriptors'");
    }
    FG_ASSIGN_OR_RETURN(Fields fields, ReadMapping(root, kRootFields, "the top level"));
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
    FG_RETURN_IF_ERROR(
        LoadDescriptors(fields.Value("descriptors"), out->domain, /*depth=*/1, &out->root));
    return absl::OkStatus();
  }

 private:
  static int Line(const yaml_node_t* node) { return static_cast<int>(node->start_mark.line) + 1; }

  absl::Status ErrorAtLine(int line, absl::string_view reason) const {
    return absl::InvalidArgumentError(absl::StrCat(label_, ":", line, ": ", reason));
  }
  absl::Status Error(const yaml_node_t* node, absl::string_view reason) const {
    return ErrorAtLine(Line(node), reason);
  }

  const yaml_node_t* Node(int index) const { return yaml_document_get_node(document_, index); }

  // Checks a mapping's field names (strings, allowed here, each once) and returns them.
  absl::StatusOr<Fields> ReadMapping(const yaml_node_t* node,
                                     std::initializer_list<absl::string_view> allowed,
                                     absl::string_view where) const {
    if (node->type != YAML_MAPPING_NODE) {
      return Error(node, absl::StrCat(where, " must be a mapping"));
    }
    Fields fields;
    for (const yaml_node_pair_t* pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; ++pair) {
      const yaml_node_t* key = Node(pair->key);
      const yaml_node_t* value = Node(pair->value);
      if (key->type != YAML_SCALAR_NODE) {
        return Error(key, absl::StrCat("field names in ", where, " must be strings"));
      }
      absl::string_view name = ScalarText(key);
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        return Error(key, absl::StrCat("unknown field '", name, "' in ", where,
                                       " (allowed: ", absl::StrJoin(allowed, ", "), ")"));
      }
      if (const Fields::Field* first = fields.Find(name); first != nullptr) {
        return Error(key, absl::StrCat("duplicate field '", name, "' (first at line ",
                                       Line(first->key), ")"));
      }
      fields.Add({name, key, IsNull(value) ? nullptr : value});
    }
    return fields;
  }

  absl::StatusOr<std::string> String(const yaml_node_t* node, absl::string_view what) const {
    if (node->type != YAML_SCALAR_NODE) {
      return Error(node, absl::StrCat("'", what, "' must be a string"));
    }
    return std::string(ScalarText(node));
  }

  absl::StatusOr<bool> Bool(const yaml_node_t* node, absl::string_view what) const {
    if (IsPlainScalar(node)) {
      absl::string_view text = ScalarText(node);
      for (absl::string_view word :
           {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y"}) {
        if (text == word) {
          return true;
        }
      }
      for (absl::string_view word :
           {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", "n", "N"}) {
        if (text == word) {
          return false;
        }
      }
    }
    return Error(node, absl::StrCat("'", what, "' must be true or false"));
  }

  // A plain decimal integer in [0, max] ("1_000" allowed, as YAML 1.1 does).
  absl::StatusOr<uint64_t> Uint(const yaml_node_t* node, absl::string_view what,
                                uint64_t max) const {
    std::string bad = absl::StrCat("'", what, "' must be a non-negative integer");
    if (!IsPlainScalar(node)) {
      return Error(node, bad);
    }
    absl::string_view text = ScalarText(node);
    absl::ConsumePrefix(&text, "+");
    uint64_t value = 0;
    size_t digits = 0;
    for (char c : text) {
      if (c == '_') {
        continue;
      }
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
        return Error(node, absl::StrCat(bad, ", got '", ScalarText(node), "'"));
      }
      if (value > (std::numeric_limits<uint64_t>::max() - 9) / 10) {
        return Error(node, absl::StrCat("'", what, "' is too large (at most ", max, ")"));
      }
      value = value * 10 + static_cast<uint64_t>(c - '0');
      ++digits;
    }
    if (digits == 0) {
      return Error(node, absl::StrCat(bad, ", got '", ScalarText(node), "'"));
    }
    if (digits > 1 && text.front() == '0') {
      return Error(node, absl::StrCat("'", what, "' has a leading zero (YAML 1.1 reads '",
                                      ScalarText(node), "' as octal); write it without"));
    }
    if (value > max) {
      return Error(node, absl::StrCat("'", what, "' is too large (at most ", max, ")"));
    }
    return value;
  }

  absl::StatusOr<int64_t> Duration(const yaml_node_t* node, absl::string_view what) const {
    FG_ASSIGN_OR_RETURN(std::string text, String(node, what));
    int64_t ns = 0;
    std::string error;
    if (!ParseDuration(text, &ns, &error)) {
      return Error(node, absl::StrCat("'", what, "' ", error, ", got '", text, "'"));
    }
    return ns;
  }

  // Returns the items of a list (empty for nullptr, i.e. an absent or null field).
  absl::StatusOr<std::vector<const yaml_node_t*>> List(const yaml_node_t* node,
                                                       absl::string_view what) const {
    std::vector<const yaml_node_t*> items;
    if (node == nullptr) {
      return items;
    }
    if (node->type != YAML_SEQUENCE_NODE) {
      return Error(node, absl::StrCat("'", what, "' must be a list"));
    }
    for (const yaml_node_item_t* item = node->data.sequence.items.start;
         item < node->data.sequence.items.top; ++item) {
      items.push_back(Node(*item));
    }
    return items;
  }

  absl::Status LoadDescriptors(const yaml_node_t* list, const std::string& parent_stats_key,
                               int depth, DescriptorNode* parent) {
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
      FG_ASSIGN_OR_RETURN(Fields fields, ReadMapping(item, kDescriptorFields, "a descriptor"));
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
      std::string stats_key = absl::StrCat(parent_stats_key, ".", composite);

      const Fields::Field* one = fields.Find("rate_limit");
      const Fields::Field* many = fields.Find("rate_limits");
      if (one != nullptr && many != nullptr) {
        const Fields::Field* later = Line(one->key) > Line(many->key) ? one : many;
        return Error(later->key, "give either 'rate_limit' or 'rate_limits', not both");
      }
      if (one != nullptr && one->value != nullptr) {
        FG_ASSIGN_OR_RETURN(RateLimitRule rule,
                            LoadRateLimit(one->value, Line(one->key), node, stats_key));
        node.limits.push_back(std::move(rule));
      }
      if (many != nullptr) {
        FG_ASSIGN_OR_RETURN(std::vector<const yaml_node_t*> limits,
                            List(many->value, "rate_limits"));
        for (const yaml_node_t* limit : limits) {
          if (limit->type != YAML_MAPPING_NODE) {
            return Error(limit, "each entry of 'rate_limits' must be a mapping");
          }
          FG_ASSIGN_OR_RETURN(RateLimitRule rule,
                              LoadRateLimit(limit, Line(limit), node, stats_key));
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

      FG_RETURN_IF_ERROR(LoadDescriptors(fields.Value("descriptors"), stats_key, depth + 1, &node));
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
      if (child.value.back() == '*') {
        node->wildcards.push_back(i);
      }
    }
  }

  absl::StatusOr<RateLimitRule> LoadRateLimit(const yaml_node_t* map, int line,
                                              const DescriptorNode& descriptor,
                                              const std::string& stats_key) const {
    FG_ASSIGN_OR_RETURN(Fields fields, ReadMapping(map, kRateLimitFields, "a rate limit"));
    RateLimitRule rule;
    rule.file = file_;
    rule.line = line;
    rule.stats_key = stats_key;
    rule.shadow_mode = descriptor.shadow_mode;
    rule.detailed_metric = descriptor.detailed_metric;

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

    // The window: Envoy's `unit` or our `window`.
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

    FG_ASSIGN_OR_RETURN(std::vector<const yaml_node_t*> replaces,
                        List(fields.Value("replaces"), "replaces"));
    for (const yaml_node_t* entry : replaces) {
      if (entry->type != YAML_MAPPING_NODE) {
        return Error(entry, "each entry of 'replaces' must be a mapping with 'name'");
      }
      FG_ASSIGN_OR_RETURN(Fields entry_fields, ReadMapping(entry, kReplacesFields, "replaces"));
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

    if (!rule.unlimited) {
      if (absl::Status status = ValidateLimitSpec(rule.spec); !status.ok()) {
        return ErrorAtLine(line, status.message());
      }
    }
    return rule;
  }

  yaml_document_t* document_;
  std::string file_;
  std::string label_;
  size_t descriptor_count_ = 0;
};

// Owns a yaml_parser_t and the documents it loads.
class YamlParser {
 public:
  explicit YamlParser(absl::string_view text) {
    ok_ = yaml_parser_initialize(&parser_) != 0;
    if (ok_) {
      yaml_parser_set_input_string(&parser_, reinterpret_cast<const unsigned char*>(text.data()),
                                   text.size());
    }
  }
  ~YamlParser() {
    if (ok_) {
      yaml_parser_delete(&parser_);
    }
  }
  YamlParser(const YamlParser&) = delete;
  YamlParser& operator=(const YamlParser&) = delete;

  bool initialized() const { return ok_; }
  yaml_parser_t* get() { return &parser_; }

 private:
  yaml_parser_t parser_;
  bool ok_ = false;
};

class YamlDocument {
 public:
  YamlDocument() = default;
  ~YamlDocument() {
    if (loaded_) {
      yaml_document_delete(&document_);
    }
  }
  YamlDocument(const YamlDocument&) = delete;
  YamlDocument& operator=(const YamlDocument&) = delete;

  // Loads the next document; false on a syntax error (see the parser's problem fields).
  bool Load(yaml_parser_t* parser) {
    loaded_ = yaml_parser_load(parser, &document_) != 0;
    return loaded_;
  }
  yaml_document_t* get() { return &document_; }

 private:
  yaml_document_t document_;
  bool loaded_ = false;
};

absl::Status SyntaxError(const yaml_parser_t& parser, absl::string_view label,
                         absl::string_view text) {
  size_t line = parser.problem_mark.line + 1;
  if (parser.error == YAML_READER_ERROR) {
    // Reader errors (bad encoding) carry a byte offset rather than a mark.
    size_t end = std::min(parser.problem_offset, text.size());
    line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + end, '\n'));
  }
  std::string reason = parser.problem != nullptr ? parser.problem : "unknown error";
  if (parser.context != nullptr) {
    reason =
        absl::StrCat(reason, " (", parser.context, " at line ", parser.context_mark.line + 1, ")");
  }
  return absl::InvalidArgumentError(
      absl::StrCat(label, ":", line, ": YAML syntax error: ", reason));
}

// FNV-1a: stable across processes and machines, unlike absl::Hash.
uint64_t Fingerprint(uint64_t hash, absl::string_view bytes) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return hash;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) {
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) {
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot read"));
  }
  return contents.str();
}

bool IsConfigFileName(const std::string& name) {
  return !name.empty() && name.front() != '.' &&
         (absl::EndsWith(name, ".yaml") || absl::EndsWith(name, ".yml"));
}

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
// wildcard (file order) whose prefix starts the value, else the key alone.
const DescriptorNode* FindChild(const DescriptorNode& node, const DescriptorEntry& entry) {
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
    absl::string_view prefix(child.value.data(), child.value.size() - 1);
    if (child.key == entry.key && absl::StartsWith(entry.value, prefix)) {
      return &child;
    }
  }
  if (auto it = node.key_only.find(entry.key); it != node.key_only.end()) {
    return &node.children[it->second];
  }
  return nullptr;
}

}  // namespace

const DescriptorNode* DomainConfig::Match(absl::Span<const DescriptorEntry> entries) const {
  // As envoyproxy/ratelimit's GetLimit: walk one level per entry; only the node reached by the
  // last entry may answer, and a walk that runs out of config (no child matches, or the node
  // has no children while entries remain) answers nothing.
  const DescriptorNode* level = &root;
  for (size_t i = 0; i < entries.size(); ++i) {
    const DescriptorNode* next = FindChild(*level, entries[i]);
    if (next == nullptr) {
      return nullptr;
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
  YamlParser parser(yaml);
  if (!parser.initialized()) {
    return absl::ResourceExhaustedError(absl::StrCat(label, ": cannot initialize the YAML parser"));
  }
  YamlDocument document;
  if (!document.Load(parser.get())) {
    return SyntaxError(*parser.get(), label, yaml);
  }
  // yaml.v2 would silently read only the first document; a second one is surely a mistake.
  {
    YamlDocument next;
    if (!next.Load(parser.get())) {
      return SyntaxError(*parser.get(), label, yaml);
    }
    if (const yaml_node_t* extra = yaml_document_get_root_node(next.get()); extra != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ":", extra->start_mark.line + 1,
                       ": a config file holds one YAML document (one domain)"));
    }
  }

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

absl::StatusOr<std::shared_ptr<const Config>> LoadConfig(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code error;
  fs::file_status status = fs::status(path, error);
  if (error) {
    return absl::ErrnoToStatus(error.value(), path);
  }
  std::vector<std::string> files;
  if (fs::is_directory(status)) {
    fs::directory_iterator it(path, error);
    for (; !error && it != fs::directory_iterator(); it.increment(error)) {
      std::string name = it->path().filename().string();
      std::error_code type_error;
      if (IsConfigFileName(name) && it->is_regular_file(type_error)) {
        files.push_back(it->path().string());
      }
    }
    if (error) {
      return absl::ErrnoToStatus(error.value(), path);
    }
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }

  std::vector<std::shared_ptr<const DomainConfig>> domains;
  for (const std::string& file : files) {
    FG_ASSIGN_OR_RETURN(std::string text, ReadFile(file));
    FG_ASSIGN_OR_RETURN(std::shared_ptr<const DomainConfig> domain, ParseDomainConfig(text, file));
    domains.push_back(std::move(domain));
  }
  // The version is a fingerprint of the content, so every node that loads the same files agrees.
  std::vector<const DomainConfig*> sorted;
  for (const auto& domain : domains) {
    sorted.push_back(domain.get());
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const DomainConfig* a, const DomainConfig* b) { return a->domain < b->domain; });
  uint64_t version = 14695981039346656037ULL;
  for (const DomainConfig* domain : sorted) {
    version = Fingerprint(version, domain->domain);
    version = Fingerprint(version, absl::string_view("\0", 1));
    version = Fingerprint(version, domain->source);
    version = Fingerprint(version, absl::string_view("\0", 1));
  }
  if (version == 0) {
    version = 1;
  }
  return BuildConfig(std::move(domains), version);
}

}  // namespace floodgate::core
