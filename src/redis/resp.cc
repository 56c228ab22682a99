#include "src/redis/resp.h"

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "src/common/text.h"

namespace floodgate::redis {
namespace {

// Parses a RESP integer exactly: an optional '-', then 1 to 19 digits, no overflow.
bool ParseInteger(std::string_view text, int64_t& value) {
  bool negative = false;
  if (!text.empty() && text[0] == '-') {
    negative = true;
    text.remove_prefix(1);
  }
  if (text.empty() || text.size() > 19) {
    return false;
  }
  // Accumulated as a negative number, so INT64_MIN parses too.
  int64_t result = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return false;
    }
    const int digit = c - '0';
    if (result < (INT64_MIN + digit) / 10) {
      return false;
    }
    result = result * 10 - digit;
  }
  if (!negative) {
    if (result == INT64_MIN) {
      return false;
    }
    result = -result;
  }
  value = result;
  return true;
}

std::string Shown(std::string_view bytes) {
  constexpr size_t kMax = 32;
  std::string shown = absl::CHexEscape(common::AbslView(bytes.substr(0, kMax)));
  if (bytes.size() > kMax) {
    shown += "...";
  }
  return shown;
}

}  // namespace

void AppendCommand(absl::Span<const std::string_view> args, std::string& out) {
  size_t size = 16;
  for (std::string_view arg : args) {
    size += arg.size() + 16;
  }
  out.reserve(out.size() + size);
  absl::StrAppend(&out, "*", args.size(), "\r\n");
  for (std::string_view arg : args) {
    absl::StrAppend(&out, "$", arg.size(), "\r\n");
    out.append(arg);
    out.append("\r\n");
  }
}

std::string EncodeCommand(absl::Span<const std::string_view> args) {
  std::string out;
  AppendCommand(args, out);
  return out;
}

void ReplyParser::Feed(std::string_view bytes) {
  if (!error_.ok()) {
    return;
  }
  // Drops what was consumed before growing, so the buffer holds about one reply's bytes.
  if (pos_ > 0 && (pos_ == buffer_.size() || pos_ >= 4096)) {
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  buffer_.append(bytes);
}

void ReplyParser::Reset() {
  buffer_.clear();
  pos_ = 0;
  stack_.clear();
  elements_ = 0;
  error_ = absl::OkStatus();
}

absl::Status ReplyParser::Fail(std::string message) {
  error_ = absl::InvalidArgumentError(absl::StrCat("malformed RESP reply: ", message));
  return error_;
}

absl::Status ReplyParser::ParseOne(Reply& value, bool* complete, bool* need_more) {
  *complete = false;
  *need_more = false;
  const std::string_view rest(buffer_.data() + pos_, buffer_.size() - pos_);
  const size_t end = rest.find("\r\n");
  if (end == std::string_view::npos) {
    if (rest.size() > limits_.max_line_bytes + 1) {  // room for a CR alone
      return Fail(absl::StrCat("a line longer than ", limits_.max_line_bytes, " bytes"));
    }
    // A lone '\n' means no CRLF can come before it: the stream is broken.
    if (rest.find('\n') != std::string_view::npos) {
      return Fail(absl::StrCat("a line ending in LF alone: '", Shown(rest), "'"));
    }
    *need_more = true;
    return absl::OkStatus();
  }
  if (end == 0) {
    return Fail("an empty line where a reply was expected");
  }
  if (end > limits_.max_line_bytes) {
    return Fail(absl::StrCat("a line longer than ", limits_.max_line_bytes, " bytes"));
  }
  const char type = rest[0];
  const std::string_view line = rest.substr(1, end - 1);
  if (line.find('\n') != std::string_view::npos || line.find('\r') != std::string_view::npos) {
    return Fail(absl::StrCat("a bare CR or LF inside a line: '", Shown(rest.substr(0, end)), "'"));
  }
  const size_t line_bytes = end + 2;
  switch (type) {
    case '+':
    case '-':
      value.type = type == '+' ? Reply::Type::kStatus : Reply::Type::kError;
      value.str.assign(line);
      pos_ += line_bytes;
      *complete = true;
      return absl::OkStatus();
    case ':':
      if (!ParseInteger(line, value.integer)) {
        return Fail(absl::StrCat("integer reply ':", Shown(line), "' is not a 64-bit integer"));
      }
      value.type = Reply::Type::kInteger;
      pos_ += line_bytes;
      *complete = true;
      return absl::OkStatus();
    case '$': {
      int64_t length = 0;
      if (!ParseInteger(line, length) || length < -1) {
        return Fail(absl::StrCat("bulk string length '", Shown(line), "'"));
      }
      if (length == -1) {
        value.type = Reply::Type::kNil;
        pos_ += line_bytes;
        *complete = true;
        return absl::OkStatus();
      }
      if (length > limits_.max_bulk_bytes) {
        return Fail(absl::StrCat("a bulk string of ", length, " bytes (at most ",
                                 limits_.max_bulk_bytes, ")"));
      }
      const size_t total = line_bytes + static_cast<size_t>(length) + 2;
      if (rest.size() < total) {
        buffer_.reserve(pos_ + total);
        *need_more = true;
        return absl::OkStatus();
      }
      if (rest.substr(total - 2, 2) != "\r\n") {
        return Fail(absl::StrCat("a bulk string of ", length, " bytes not followed by CRLF"));
      }
      value.type = Reply::Type::kString;
      value.str.assign(rest.substr(line_bytes, static_cast<size_t>(length)));
      pos_ += total;
      *complete = true;
      return absl::OkStatus();
    }
    case '*': {
      int64_t count = 0;
      if (!ParseInteger(line, count) || count < -1) {
        return Fail(absl::StrCat("array length '", Shown(line), "'"));
      }
      pos_ += line_bytes;
      if (count == -1) {
        value.type = Reply::Type::kNil;  // RESP2's null array
        *complete = true;
        return absl::OkStatus();
      }
      if (count > limits_.max_array_elements) {
        return Fail(absl::StrCat("an array of ", count, " elements (at most ",
                                 limits_.max_array_elements, ")"));
      }
      if (static_cast<int>(stack_.size()) >= limits_.max_depth) {
        return Fail(absl::StrCat("arrays nested deeper than ", limits_.max_depth));
      }
      if (count == 0) {
        value.type = Reply::Type::kArray;
        *complete = true;
        return absl::OkStatus();
      }
      Frame frame;
      frame.array.type = Reply::Type::kArray;
      // The count is the sender's word: reserve a little, let the bytes that arrive grow it.
      frame.array.elements.reserve(static_cast<size_t>(std::min<int64_t>(count, 64)));
      frame.remaining = count;
      stack_.push_back(std::move(frame));
      return absl::OkStatus();
    }
    default:
      return Fail(absl::StrCat("unexpected type byte '", Shown(rest.substr(0, 1)), "' in '",
                               Shown(rest.substr(0, end)), "'"));
  }
}

absl::Status ReplyParser::Next(Reply& reply, bool* got) {
  *got = false;
  if (!error_.ok()) {
    return error_;
  }
  while (true) {
    Reply value;
    bool complete = false;
    bool need_more = false;
    if (absl::Status parsed = ParseOne(value, &complete, &need_more); !parsed.ok()) {
      return parsed;
    }
    if (need_more) {
      return absl::OkStatus();
    }
    if (++elements_ > limits_.max_total_elements) {
      return Fail(absl::StrCat("a reply of more than ", limits_.max_total_elements, " values"));
    }
    if (!complete) {
      continue;  // an array was opened: its elements follow
    }
    // Hands the value to the array it belongs to, closing every array it completes.
    while (!stack_.empty()) {
      Frame& top = stack_.back();
      top.array.elements.push_back(std::move(value));
      if (--top.remaining > 0) {
        break;
      }
      value = std::move(top.array);
      stack_.pop_back();
    }
    if (stack_.empty()) {
      reply = std::move(value);
      elements_ = 0;
      *got = true;
      return absl::OkStatus();
    }
  }
}

}  // namespace floodgate::redis
