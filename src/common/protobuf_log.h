#pragma once

// Routes protobuf's own log lines through a RateLimitedLog. libprotobuf writes an ERROR line
// for input a caller controls (a proto3 string that is not valid UTF-8 logs "String field ...
// contains invalid UTF-8 data" on every such request), so unrouted, any caller could flood the
// log. Lines become the event `protobuf` (level warn or error, field `msg`); FATAL lines are
// written at once, never suppressed (protobuf aborts after them).
//
// Thread-safety: call RouteProtobufLog at start, before other threads use protobuf
// (google::protobuf::SetLogHandler is not thread-safe); the routed lines may come from any
// thread.

#include "src/common/rate_limited_log.h"

namespace floodgate::common {

// Sends protobuf's WARNING and ERROR lines to `log` (INFO lines are dropped). `log` must outlive
// every later use of protobuf; null restores protobuf's own handler (stderr).
void RouteProtobufLog(RateLimitedLog* log);

}  // namespace floodgate::common
