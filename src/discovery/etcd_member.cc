#include "src/discovery/etcd_member.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "src/common/json.h"

namespace floodgate::discovery {
namespace {

// A reader of the one JSON shape we store: a flat object of scalars. Nested values are refused
// rather than skipped: nothing we write has them.
class FlatJsonReader {
 public:
  explicit FlatJsonReader(std::string_view text) : text_(text) {}

  // Fills `strings` with the object's string members; false when the text is not a flat object.
  bool ReadObject(std::map<std::string, std::string>& strings) {
    SkipSpace();
    if (!Consume('{')) {
      return false;
    }
    SkipSpace();
    if (Consume('}')) {
      return AtEnd();
    }
    while (true) {
      std::string name;
      SkipSpace();
      if (!ReadString(name)) {
        return false;
      }
      SkipSpace();
      if (!Consume(':')) {
        return false;
      }
      SkipSpace();
      if (Peek() == '"') {
        std::string value;
        if (!ReadString(value)) {
          return false;
        }
        strings[name] = std::move(value);
      } else if (!SkipScalar()) {
        return false;
      }
      SkipSpace();
      if (Consume('}')) {
        return AtEnd();
      }
      if (!Consume(',')) {
        return false;
      }
    }
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool Consume(char c) {
    if (Peek() != c || pos_ >= text_.size()) {
      return false;
    }
    ++pos_;
    return true;
  }
  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool AtEnd() {
    SkipSpace();
    return pos_ == text_.size();
  }
  // A number, true, false or null: the characters they are made of, at least one.
  bool SkipScalar() {
    const size_t start = pos_;
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-' || c == '+' ||
                      c == '.' || c == 'E';
      if (!ok) {
        break;
      }
      ++pos_;
    }
    return pos_ > start;
  }
  bool ReadString(std::string& out) { return common::ReadJsonString(text_, pos_, out); }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

std::string EncodeMemberValue(const Node& node) {
  std::string out = "{\"id\":";
  common::AppendJsonString(node.id, out);
  out += ",\"address\":";
  common::AppendJsonString(node.address, out);
  out += "}";
  return out;
}

absl::StatusOr<Node> DecodeMemberValue(std::string_view value) {
  std::map<std::string, std::string> strings;
  if (!FlatJsonReader(value).ReadObject(strings)) {
    return absl::InvalidArgumentError(absl::StrCat("member value is not a flat JSON object: ",
                                                   std::string(value.substr(0, 200))));
  }
  Node node;
  node.id = strings["id"];
  node.address = strings["address"];
  if (node.address.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("member value has no \"address\": ", std::string(value.substr(0, 200))));
  }
  return node;
}

std::vector<Node> MemberList(const std::map<std::string, std::string>& values) {
  std::map<std::string, Node> by_id;
  for (const auto& [key, value] : values) {
    absl::StatusOr<Node> node = DecodeMemberValue(value);
    if (!node.ok()) {
      continue;
    }
    if (node->id.empty()) {
      const size_t slash = key.rfind('/');
      node->id = slash == std::string::npos ? key : key.substr(slash + 1);
    }
    if (node->id.empty()) {
      continue;
    }
    by_id[node->id] = *std::move(node);
  }
  std::vector<Node> members;
  members.reserve(by_id.size());
  for (auto& [id, node] : by_id) {
    members.push_back(std::move(node));
  }
  return members;
}

std::string PrefixRangeEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    unsigned char& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

}  // namespace floodgate::discovery
