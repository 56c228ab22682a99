#include "src/core/yaml_reader.h"

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "floodgate/limit.h"
#include "floodgate/status_macros.h"

namespace floodgate::core {
namespace {

constexpr int64_t kSecondNs = 1'000'000'000LL;
constexpr int64_t kDayNs = 86400 * kSecondNs;

absl::string_view ScalarText(const yaml_node_t* node) {
  return absl::string_view(reinterpret_cast<const char*>(node->data.scalar.value),
                           node->data.scalar.length);
}

bool IsPlainScalar(const yaml_node_t* node) {
  return node->type == YAML_SCALAR_NODE && node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

}  // namespace

// YAML 1.1 nulls, as yaml.v2 resolves them (an empty value is one).
bool IsNull(const yaml_node_t* node) {
  if (!IsPlainScalar(node)) {
    return false;
  }
  absl::string_view text = ScalarText(node);
  return text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL";
}

std::optional<bool> YamlBoolWord(absl::string_view text) {
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
  return std::nullopt;
}

namespace {

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

}  // namespace

absl::Status YamlSyntaxError(const yaml_parser_t& parser, absl::string_view label,
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

namespace {

uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max()
                                                      : a + b;
}

// Measures the document's nodes once each (memoized by node index: an alias shares the node it
// names, so a node's size is computed once however often it is used) with saturating sums.
class ExpansionCounter {
 public:
  struct Size {
    uint64_t nodes = 0;
    uint64_t bytes = 0;
  };

  ExpansionCounter(yaml_document_t* document, absl::string_view label,
                   const YamlExpansionLimits& limits)
      : document_(document),
        label_(label),
        limits_(limits),
        sizes_(static_cast<size_t>(document->nodes.top - document->nodes.start) + 1),
        state_(sizes_.size(), kUnvisited) {}

  absl::Status Check() {
    const yaml_node_t* root = yaml_document_get_root_node(document_);
    if (root == nullptr) {
      return absl::OkStatus();
    }
    FG_ASSIGN_OR_RETURN(Size total, Measure(1, /*depth=*/0));
    if (total.nodes <= limits_.max_nodes && total.bytes <= limits_.max_scalar_bytes) {
      return absl::OkStatus();
    }
    // Point at the innermost node past a limit: where the doubling crosses it.
    auto too_big = [this](const Size& size) {
      return size.nodes > limits_.max_nodes || size.bytes > limits_.max_scalar_bytes;
    };
    int index = 1;
    for (bool descended = true; descended;) {
      descended = false;
      for (int child : Children(index)) {
        if (too_big(sizes_[child])) {
          index = child;
          descended = true;
          break;
        }
      }
    }
    const Size& at = sizes_[index];
    const bool by_bytes = at.bytes > limits_.max_scalar_bytes;
    return absl::InvalidArgumentError(absl::StrCat(
        label_, ":", Node(index)->start_mark.line + 1, ": the YAML here expands to ",
        by_bytes ? absl::StrCat(Count(at.bytes), " bytes")
                 : absl::StrCat(Count(at.nodes), " nodes"),
        " once its aliases are expanded (each use of an alias counts as a copy); a config file "
        "may expand to at most ",
        by_bytes ? absl::StrCat(limits_.max_scalar_bytes, " bytes of text")
                 : absl::StrCat(limits_.max_nodes, " nodes")));
  }

 private:
  enum State : uint8_t { kUnvisited, kInProgress, kDone };

  static std::string Count(uint64_t n) {
    return n == std::numeric_limits<uint64_t>::max() ? "more than 2^64" : absl::StrCat(n);
  }

  const yaml_node_t* Node(int index) const { return yaml_document_get_node(document_, index); }

  std::vector<int> Children(int index) const {
    std::vector<int> out;
    const yaml_node_t* node = Node(index);
    if (node->type == YAML_SEQUENCE_NODE) {
      for (const yaml_node_item_t* item = node->data.sequence.items.start;
           item < node->data.sequence.items.top; ++item) {
        out.push_back(*item);
      }
    } else if (node->type == YAML_MAPPING_NODE) {
      for (const yaml_node_pair_t* pair = node->data.mapping.pairs.start;
           pair < node->data.mapping.pairs.top; ++pair) {
        out.push_back(pair->key);
        out.push_back(pair->value);
      }
    }
    return out;
  }

  absl::StatusOr<Size> Measure(int index, int depth) {
    if (state_[index] == kDone) {
      return sizes_[index];
    }
    const yaml_node_t* node = Node(index);
    if (state_[index] == kInProgress) {
      return absl::InvalidArgumentError(
          absl::StrCat(label_, ":", node->start_mark.line + 1,
                       ": an alias refers to a node that contains it (recursive aliases expand "
                       "forever)"));
    }
    if (depth > limits_.max_depth) {
      return absl::InvalidArgumentError(absl::StrCat(
          label_, ":", node->start_mark.line + 1, ": the YAML is nested too deeply (at most ",
          limits_.max_depth, " levels of lists and mappings)"));
    }
    state_[index] = kInProgress;
    Size size{1, node->type == YAML_SCALAR_NODE ? node->data.scalar.length : 0};
    for (int child : Children(index)) {
      FG_ASSIGN_OR_RETURN(Size child_size, Measure(child, depth + 1));
      size.nodes = SaturatingAdd(size.nodes, child_size.nodes);
      size.bytes = SaturatingAdd(size.bytes, child_size.bytes);
    }
    state_[index] = kDone;
    sizes_[index] = size;
    return size;
  }

  yaml_document_t* document_;
  absl::string_view label_;
  const YamlExpansionLimits limits_;
  std::vector<Size> sizes_;  // by node index (1-based)
  std::vector<State> state_;
};

}  // namespace

absl::Status CheckYamlExpansion(yaml_document_t* document, absl::string_view label,
                                const YamlExpansionLimits& limits) {
  return ExpansionCounter(document, label, limits).Check();
}

int YamlReader::Line(const yaml_node_t* node) {
  return static_cast<int>(node->start_mark.line) + 1;
}

absl::Status YamlReader::ErrorAtLine(int line, absl::string_view reason) const {
  return absl::InvalidArgumentError(absl::StrCat(label_, ":", line, ": ", reason));
}
absl::Status YamlReader::Error(const yaml_node_t* node, absl::string_view reason) const {
  return ErrorAtLine(Line(node), reason);
}

const yaml_node_t* YamlReader::Node(int index) const {
  return yaml_document_get_node(document_, index);
}

// Checks a mapping's field names (strings, allowed here, each once) and returns them.
absl::StatusOr<YamlFields> YamlReader::ReadMapping(const yaml_node_t* node,
                                                   std::initializer_list<absl::string_view> allowed,
                                                   absl::string_view where) const {
  if (node->type != YAML_MAPPING_NODE) {
    return Error(node, absl::StrCat(where, " must be a mapping"));
  }
  YamlFields fields;
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
    if (const YamlFields::Field* first = fields.Find(name); first != nullptr) {
      return Error(
          key, absl::StrCat("duplicate field '", name, "' (first at line ", Line(first->key), ")"));
    }
    fields.Add({name, key, IsNull(value) ? nullptr : value});
  }
  return fields;
}

absl::StatusOr<std::string> YamlReader::String(const yaml_node_t* node,
                                               absl::string_view what) const {
  if (node->type != YAML_SCALAR_NODE) {
    return Error(node, absl::StrCat("'", what, "' must be a string"));
  }
  return std::string(ScalarText(node));
}

absl::StatusOr<bool> YamlReader::Bool(const yaml_node_t* node, absl::string_view what) const {
  if (IsPlainScalar(node)) {
    if (std::optional<bool> value = YamlBoolWord(ScalarText(node)); value.has_value()) {
      return *value;
    }
  }
  return Error(node, absl::StrCat("'", what, "' must be true or false"));
}

// A plain decimal integer in [0, max] ("1_000" allowed, as YAML 1.1 does).
absl::StatusOr<uint64_t> YamlReader::Uint(const yaml_node_t* node, absl::string_view what,
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

absl::StatusOr<int64_t> YamlReader::Duration(const yaml_node_t* node,
                                             absl::string_view what) const {
  FG_ASSIGN_OR_RETURN(std::string text, String(node, what));
  int64_t ns = 0;
  std::string error;
  if (!ParseDuration(text, &ns, &error)) {
    return Error(node, absl::StrCat("'", what, "' ", error, ", got '", text, "'"));
  }
  return ns;
}

// Returns the items of a list (empty for nullptr, i.e. an absent or null field).
absl::StatusOr<std::vector<const yaml_node_t*>> YamlReader::List(const yaml_node_t* node,
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

}  // namespace floodgate::core
