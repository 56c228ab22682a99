#pragma once

// RESP2, the wire format of Redis: commands go out as an array of bulk strings
// (AppendCommand); replies come back as a byte stream that ReplyParser cuts into Reply values,
// however the stream is split across reads. The parser is bounded (ReplyLimits): a reply that
// would exceed a limit, or any byte the protocol does not allow where it stands, is an error
// that sticks: the connection it came from can no longer be trusted and must be closed.
//
// Thread-safety: AppendCommand is a pure function; a ReplyParser belongs to one connection (one
// thread at a time).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "src/redis/redis_client.h"

namespace floodgate::redis {

// Appends `args` to `out` as one RESP2 command: *<n>\r\n then $<len>\r\n<arg>\r\n for each
// argument (binary safe).
void AppendCommand(absl::Span<const std::string_view> args, std::string& out);

// Returns AppendCommand's output for `args`.
std::string EncodeCommand(absl::Span<const std::string_view> args);

// What a parser accepts at most.
struct ReplyLimits {
  int64_t max_bulk_bytes = int64_t{512} << 20;  // Redis' own proto-max-bulk-len default
  int max_depth = 16;                           // arrays within arrays
  int64_t max_array_elements = 1 << 20;         // one array's length
  int64_t max_total_elements = 1 << 20;         // all the values of one reply
  size_t max_line_bytes = 64 << 10;             // a status, error or integer line
};

class ReplyParser {
 public:
  explicit ReplyParser(ReplyLimits limits = {}) : limits_(limits) {}

  // Adds bytes read from the connection.
  void Feed(std::string_view bytes);

  // Moves the next complete reply into `reply` and sets `*got`; leaves `*got` false when more
  // bytes are needed. InvalidArgument (naming what is wrong, and every later call too) for a
  // malformed stream or one past the limits.
  absl::Status Next(Reply& reply, bool* got);

  // Returns the bytes fed and not yet returned as part of a reply.
  size_t buffered() const { return buffer_.size() - pos_; }
  const absl::Status& error() const { return error_; }

  // Forgets everything (for a new connection).
  void Reset();

 private:
  // One array being filled.
  struct Frame {
    Reply array;
    int64_t remaining = 0;
  };

  // Parses one value (or an array's header) at pos_. Sets `*complete` when `value` holds a whole
  // value; `*need_more` when the bytes end first; neither when an array was opened.
  absl::Status ParseOne(Reply& value, bool* complete, bool* need_more);
  absl::Status Fail(std::string message);

  ReplyLimits limits_;
  std::string buffer_;
  size_t pos_ = 0;  // first byte not yet consumed
  std::vector<Frame> stack_;
  int64_t elements_ = 0;  // values in the reply being parsed
  absl::Status error_;
};

}  // namespace floodgate::redis
