#include "testing/history/record.h"

#include <cstdio>
#include <fstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/json.h"

namespace floodgate::history {
namespace {

// Debian's abseil has its own string_view type; this converts at the boundary.
absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

void AppendJsonString(std::string_view s, std::string& out) {
  out.push_back('"');
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
        } else {
          out.push_back(c);  // UTF-8 passes through unchanged
        }
    }
  }
  out.push_back('"');
}

// A cursor over one line. Parses just the JSON this format needs: one flat object whose values
// are strings, numbers, booleans or null.
class LineParser {
 public:
  explicit LineParser(std::string_view s) : s_(s) {}

  void SkipSpace() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Consume(char c) {
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool AtEnd() {
    SkipSpace();
    return pos_ == s_.size();
  }
  char Peek() {
    SkipSpace();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }

  absl::StatusOr<std::string> String() {
    if (Peek() != '"') {
      return Error("expected a string");
    }
    std::string out;
    if (!common::ReadJsonString(s_, pos_, out)) {
      return Error("bad string (an escape, a control character or no closing quote)");
    }
    return out;
  }

  // Returns the raw text of a number, `true`, `false` or `null`.
  absl::StatusOr<std::string_view> Scalar() {
    SkipSpace();
    const size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] != ',' && s_[pos_] != '}' && s_[pos_] != ' ' &&
           s_[pos_] != '\t') {
      ++pos_;
    }
    if (pos_ == start) {
      return Error("expected a value");
    }
    return s_.substr(start, pos_ - start);
  }

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(Absl(what), " at column ", pos_ + 1));
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

std::string ToJsonLine(const Record& record) {
  std::string out = "{\"node\":";
  AppendJsonString(record.node, out);
  out += ",\"key\":";
  AppendJsonString(record.key, out);
  absl::StrAppend(&out, ",\"time_ns\":", record.time_ns,
                  ",\"allowed\":", record.allowed ? "true" : "false", "}");
  return out;
}

absl::StatusOr<Record> ParseJsonLine(std::string_view line) {
  LineParser p(line);
  if (!p.Consume('{')) {
    return p.Error("expected '{'");
  }
  Record record;
  bool has_node = false, has_key = false, has_time = false, has_allowed = false;
  if (!p.Consume('}')) {
    while (true) {
      absl::StatusOr<std::string> name = p.String();
      if (!name.ok()) {
        return name.status();
      }
      if (!p.Consume(':')) {
        return p.Error("expected ':'");
      }
      if (*name == "node" || *name == "key") {
        absl::StatusOr<std::string> value = p.String();
        if (!value.ok()) {
          return value.status();
        }
        (*name == "node" ? record.node : record.key) = *std::move(value);
        (*name == "node" ? has_node : has_key) = true;
      } else if (p.Peek() == '"') {
        absl::StatusOr<std::string> ignored = p.String();
        if (!ignored.ok()) {
          return ignored.status();
        }
      } else {
        absl::StatusOr<std::string_view> value = p.Scalar();
        if (!value.ok()) {
          return value.status();
        }
        if (*name == "time_ns") {
          if (!absl::SimpleAtoi(Absl(*value), &record.time_ns)) {
            return p.Error("time_ns must be an integer");
          }
          has_time = true;
        } else if (*name == "allowed") {
          if (*value != "true" && *value != "false") {
            return p.Error("allowed must be true or false");
          }
          record.allowed = *value == "true";
          has_allowed = true;
        }
      }
      if (p.Consume('}')) {
        break;
      }
      if (!p.Consume(',')) {
        return p.Error("expected ',' or '}'");
      }
    }
  }
  if (!p.AtEnd()) {
    return p.Error("trailing characters");
  }
  if (!has_node || !has_key || !has_time || !has_allowed) {
    return absl::InvalidArgumentError("a record needs node, key, time_ns and allowed");
  }
  return record;
}

absl::Status WriteJsonLines(const std::string& path, const std::vector<Record>& records) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) {
    return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  for (const Record& r : records) {
    out << ToJsonLine(r) << '\n';
  }
  out.flush();
  if (!out) {
    return absl::InternalError(absl::StrCat("error writing ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Record>> ReadJsonLines(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  std::vector<Record> records;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      continue;
    }
    absl::StatusOr<Record> record = ParseJsonLine(line);
    if (!record.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": ", record.status().message()));
    }
    records.push_back(*std::move(record));
  }
  return records;
}

void Recorder::Record(std::string_view node, std::string_view key, int64_t time_ns, bool allowed) {
  history::Record record{std::string(node), std::string(key), time_ns, allowed};
  absl::MutexLock lock(&mu_);
  records_.push_back(std::move(record));
}

void Recorder::RecordCall(std::string_view node, std::string_view key, int64_t start_ns,
                          int64_t end_ns, bool allowed) {
  // Halves first so that no pair of int64 times can overflow.
  const int64_t mid_ns = start_ns / 2 + end_ns / 2 + (start_ns % 2 + end_ns % 2) / 2;
  Record(node, key, mid_ns, allowed);
}

void Recorder::Add(const std::vector<history::Record>& records) {
  absl::MutexLock lock(&mu_);
  records_.insert(records_.end(), records.begin(), records.end());
}

std::vector<Record> Recorder::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return records_;
}

size_t Recorder::size() const {
  absl::MutexLock lock(&mu_);
  return records_.size();
}

absl::Status Recorder::WriteJsonLines(const std::string& path) const {
  return history::WriteJsonLines(path, Snapshot());
}

}  // namespace floodgate::history
