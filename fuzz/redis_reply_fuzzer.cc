// Fuzzes what the Redis client reads from a server: the byte stream cut into replies by
// ReplyParser (src/redis/resp.h), fed in chunks whose size the first input byte picks (1 to 64
// bytes, or all at once). Beyond the sanitizers, it checks the parser's promises: an error
// sticks; bytes are never lost (what is buffered never exceeds what was fed); every reply is
// within the limits (depth, elements, bulk size); and a reply written back in RESP parses to
// the same reply (a whole feed, then byte by byte).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "src/redis/resp.h"

namespace {

using floodgate::redis::Reply;
using floodgate::redis::ReplyLimits;
using floodgate::redis::ReplyParser;

void Check(bool ok) {
  if (!ok) {
    abort();
  }
}

// Small limits, so the fuzzer reaches them.
ReplyLimits Limits() {
  ReplyLimits limits;
  limits.max_bulk_bytes = 4096;
  limits.max_depth = 4;
  limits.max_array_elements = 64;
  limits.max_total_elements = 256;
  limits.max_line_bytes = 256;
  return limits;
}

void Encode(const Reply& reply, std::string& out) {
  switch (reply.type) {
    case Reply::Type::kStatus:
      absl::StrAppend(&out, "+", reply.str, "\r\n");
      return;
    case Reply::Type::kError:
      absl::StrAppend(&out, "-", reply.str, "\r\n");
      return;
    case Reply::Type::kInteger:
      absl::StrAppend(&out, ":", reply.integer, "\r\n");
      return;
    case Reply::Type::kString:
      absl::StrAppend(&out, "$", reply.str.size(), "\r\n", reply.str, "\r\n");
      return;
    case Reply::Type::kNil:
      out += "$-1\r\n";
      return;
    case Reply::Type::kArray:
      absl::StrAppend(&out, "*", reply.elements.size(), "\r\n");
      for (const Reply& element : reply.elements) {
        Encode(element, out);
      }
      return;
  }
}

bool Same(const Reply& a, const Reply& b) {
  if (a.type != b.type || a.integer != b.integer || a.str != b.str ||
      a.elements.size() != b.elements.size()) {
    return false;
  }
  for (size_t i = 0; i < a.elements.size(); ++i) {
    if (!Same(a.elements[i], b.elements[i])) {
      return false;
    }
  }
  return true;
}

// Checks the limits; returns the number of values in `reply`.
int64_t CheckBounds(const Reply& reply, int depth) {
  const ReplyLimits limits = Limits();
  Check(static_cast<int64_t>(reply.str.size()) <= std::max<int64_t>(limits.max_bulk_bytes, 256));
  if (reply.type != Reply::Type::kArray) {
    return 1;
  }
  Check(depth < limits.max_depth);
  Check(static_cast<int64_t>(reply.elements.size()) <= limits.max_array_elements);
  int64_t values = 1;
  for (const Reply& element : reply.elements) {
    values += CheckBounds(element, depth + 1);
  }
  return values;
}

void CheckRoundTrip(const Reply& reply) {
  std::string encoded;
  Encode(reply, encoded);
  for (size_t chunk : {encoded.size(), size_t{1}}) {
    ReplyParser parser(Limits());
    Reply again;
    bool got = false;
    for (size_t at = 0; at < encoded.size() && !got; at += chunk) {
      parser.Feed(std::string_view(encoded).substr(at, chunk));
      Check(parser.Next(again, &got).ok());
    }
    Check(got && Same(reply, again) && parser.buffered() == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  const size_t chunk = data[0] % 65 == 0 ? size : data[0] % 65;
  const std::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);
  ReplyParser parser(Limits());
  size_t fed = 0;
  while (true) {
    Reply reply;
    bool got = false;
    if (!parser.Next(reply, &got).ok()) {
      // Sticky: more bytes change nothing.
      parser.Feed("+OK\r\n");
      Check(!parser.Next(reply, &got).ok() && !got);
      return 0;
    }
    Check(parser.buffered() <= fed);
    if (!got) {
      if (fed == stream.size()) {
        break;
      }
      const size_t n = std::min(chunk, stream.size() - fed);
      parser.Feed(stream.substr(fed, n));
      fed += n;
      continue;
    }
    Check(CheckBounds(reply, 0) <= Limits().max_total_elements);
    CheckRoundTrip(reply);
  }
  return 0;
}
