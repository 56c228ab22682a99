#pragma once

// The YAML layer of the config parser (src/core/config.cc): libyaml's parser and document as
// owning objects, and typed reading of one document's nodes with "file:line: reason" errors.
// Scalars are typed as gopkg.in/yaml.v2 (envoyproxy/ratelimit's YAML library, YAML 1.1) reads
// them; config.cc's opening comment says how. Internal to core: pure, no I/O. Not thread-safe:
// one reader per document, on one thread.

#include <yaml.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace floodgate::core {

// Debian's abseil is built with its own string_view, distinct from std::string_view.
inline absl::string_view AbslView(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

// The fields of one YAML mapping, checked against the allowed names.
class YamlFields {
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

// Returns whether `node` is a YAML 1.1 null, as yaml.v2 resolves them (an empty value is one).
bool IsNull(const yaml_node_t* node);
// Returns the boolean a plain scalar's text is in YAML 1.1 (true/yes/on/y, false/no/off/n, in
// lower, capitalised or upper case), or nullopt for any other text.
std::optional<bool> YamlBoolWord(absl::string_view text);

// Owns a libyaml parser reading `text` (which must outlive it).
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

// Owns one loaded document.
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

// Returns InvalidArgument "label:line: YAML syntax error: reason" for the parser's error.
absl::Status YamlSyntaxError(const yaml_parser_t& parser, absl::string_view label,
                             absl::string_view text);

// Bounds on one document once its aliases are expanded: an alias counts as a copy of what it
// names at each use, as the loader builds it (a few KB of nested aliases can otherwise stand for
// gigabytes).
struct YamlExpansionLimits {
  uint64_t max_nodes = 0;         // scalars, sequences and mappings
  uint64_t max_scalar_bytes = 0;  // the text of every scalar
  int max_depth = 0;              // nesting of sequences and mappings
};

// Returns InvalidArgument "label:line: ..." naming the limit, the size and the innermost node
// whose expansion passes it, when the document (as loaded) breaks `limits`, or when an alias
// refers to a node that contains it.
absl::Status CheckYamlExpansion(yaml_document_t* document, absl::string_view label,
                                const YamlExpansionLimits& limits);

// Reads the nodes of one document (which must outlive it); errors name `label` and the line.
class YamlReader {
 public:
  YamlReader(yaml_document_t* document, std::string label)
      : document_(document), label_(std::move(label)) {}

  // Returns the node's 1-based line.
  static int Line(const yaml_node_t* node);
  // Return InvalidArgument "label:line: reason".
  absl::Status ErrorAtLine(int line, absl::string_view reason) const;
  absl::Status Error(const yaml_node_t* node, absl::string_view reason) const;

  // Returns the document's root node, nullptr for an empty document.
  const yaml_node_t* Root() const { return yaml_document_get_root_node(document_); }

  // Checks a mapping's field names (strings, allowed here, each once) and returns them.
  absl::StatusOr<YamlFields> ReadMapping(const yaml_node_t* node,
                                         std::initializer_list<absl::string_view> allowed,
                                         absl::string_view where) const;
  // Typed scalars; `what` names the field in errors.
  absl::StatusOr<std::string> String(const yaml_node_t* node, absl::string_view what) const;
  absl::StatusOr<bool> Bool(const yaml_node_t* node, absl::string_view what) const;
  // A plain decimal integer in [0, max] ("1_000" allowed, as YAML 1.1 does).
  absl::StatusOr<uint64_t> Uint(const yaml_node_t* node, absl::string_view what,
                                uint64_t max) const;
  // "500ms", "30s", "5m", "2h", "1d", "1w" and sums like "1h30m", at most 100 years.
  absl::StatusOr<int64_t> Duration(const yaml_node_t* node, absl::string_view what) const;
  // Returns the items of a list (empty for nullptr, i.e. an absent or null field).
  absl::StatusOr<std::vector<const yaml_node_t*>> List(const yaml_node_t* node,
                                                       absl::string_view what) const;

 protected:
  // Returns the node at `index` of the document (a mapping's or list's item), nullptr if none.
  const yaml_node_t* Node(int index) const;

 private:
  yaml_document_t* document_;
  std::string label_;
};

}  // namespace floodgate::core
