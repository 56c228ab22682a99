#include "src/common/protobuf_log.h"

#include <atomic>
#include <cstdio>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace floodgate::common {
namespace {

namespace pb = google::protobuf;

// A plain function pointer is all SetLogHandler takes, hence a global.
std::atomic<RateLimitedLog*> g_log{nullptr};

void Route(pb::LogLevel level, const char* /*filename*/, int /*line*/, const std::string& message) {
  if (level == pb::LOGLEVEL_INFO) {
    return;
  }
  const absl::string_view text = absl::StripTrailingAsciiWhitespace(message);
  const LogLevel ours = level == pb::LOGLEVEL_WARNING ? LogLevel::kWarn : LogLevel::kError;
  RateLimitedLog* log = g_log.load(std::memory_order_acquire);
  if (level == pb::LOGLEVEL_FATAL || log == nullptr) {
    Log(ours, "protobuf", {{"msg", text}});
    return;
  }
  log->Log(ours, "protobuf", {{"msg", text}});
}

}  // namespace

void RouteProtobufLog(RateLimitedLog* log) {
  g_log.store(log, std::memory_order_release);
  static pb::LogHandler* const original = pb::SetLogHandler(&Route);
  if (log == nullptr) {
    pb::SetLogHandler(original);
  } else {
    pb::SetLogHandler(&Route);
  }
}

}  // namespace floodgate::common
