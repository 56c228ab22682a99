#include "src/common/log.h"

#include <atomic>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "spdlog/logger.h"
#include "spdlog/sinks/base_sink.h"
#include "spdlog/sinks/dist_sink.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "src/common/json.h"

namespace floodgate::common {
namespace {

std::atomic<int> g_format{static_cast<int>(LogFormat::kPlain)};

spdlog::level::level_enum SpdlogLevel(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarn:
      return spdlog::level::warn;
    case LogLevel::kError:
      break;
  }
  return spdlog::level::err;
}

// A plain value needs quotes when a reader splitting on spaces and '=' would misread it.
bool NeedsQuotes(std::string_view text) {
  if (text.empty()) {
    return true;
  }
  for (const unsigned char c : text) {
    if (c <= ' ' || c == '"' || c == '=' || c == 0x7f) {
      return true;
    }
  }
  return false;
}

// spdlog writes what we formatted: "%v" is the line itself, the sink adds the newline. The dist
// sink lets a LogCapture swap stderr for itself while other threads log.
struct Logger {
  std::shared_ptr<spdlog::sinks::dist_sink_mt> sinks;
  std::shared_ptr<spdlog::sinks::sink> stderr_sink;
  std::unique_ptr<spdlog::logger> logger;
};

Logger& TheLogger() {
  static Logger* const the = [] {
    auto* l = new Logger;
    l->stderr_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    l->sinks = std::make_shared<spdlog::sinks::dist_sink_mt>();
    l->sinks->add_sink(l->stderr_sink);
    l->logger = std::make_unique<spdlog::logger>("floodgate", l->sinks);
    l->logger->set_pattern("%v");
    l->logger->set_level(spdlog::level::info);
    l->logger->flush_on(spdlog::level::trace);
    return l;
  }();
  return *the;
}

class CaptureSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit CaptureSink(LogCapture* capture) : capture_(capture) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    capture_->Add(std::string_view(msg.payload.data(), msg.payload.size()));
  }
  void flush_() override {}

 private:
  LogCapture* const capture_;
};

}  // namespace

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      break;
  }
  return "error";
}

bool ParseLogLevel(std::string_view text, LogLevel* level) {
  for (const LogLevel l : {LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError}) {
    if (text == LogLevelName(l)) {
      *level = l;
      return true;
    }
  }
  return false;
}

bool ParseLogFormat(std::string_view text, LogFormat* format) {
  if (text == "plain") {
    *format = LogFormat::kPlain;
    return true;
  }
  if (text == "json") {
    *format = LogFormat::kJson;
    return true;
  }
  return false;
}

LogValue::LogValue(absl::Duration value)
    : kind_(Kind::kString), owned_(absl::FormatDuration(value)) {}

void LogValue::AppendJson(std::string& out) const {
  switch (kind_) {
    case Kind::kString:
      AppendJsonString(owned_.empty() ? text_ : owned_, out);
      return;
    case Kind::kInt:
      absl::StrAppend(&out, int_);
      return;
    case Kind::kUint:
      absl::StrAppend(&out, uint_);
      return;
    case Kind::kDouble:
      AppendJsonDouble(double_, out);
      return;
    case Kind::kBool:
      out += bool_ ? "true" : "false";
      return;
  }
}

void LogValue::AppendPlain(std::string& out) const {
  if (kind_ != Kind::kString) {
    AppendJson(out);  // numbers and booleans read the same; NaN comes out quoted
    return;
  }
  const std::string_view text = owned_.empty() ? text_ : owned_;
  if (NeedsQuotes(text)) {
    AppendJsonString(text, out);
  } else {
    out += text;
  }
}

std::string FormatLogLine(LogFormat format, absl::Time time, LogLevel level, std::string_view event,
                          absl::Span<const LogField> fields) {
  const std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
  std::string out;
  out.reserve(64 + 24 * fields.size());
  if (format == LogFormat::kJson) {
    out.append("{\"ts\":\"").append(ts).append("\",\"level\":\"");
    out.append(LogLevelName(level)).append("\",\"event\":");
    AppendJsonString(event, out);
    for (const LogField& field : fields) {
      out.push_back(',');
      AppendJsonString(field.key, out);
      out.push_back(':');
      field.value.AppendJson(out);
    }
    out.push_back('}');
    return out;
  }
  out.append(ts).append(level == LogLevel::kInfo   ? " INFO "
                        : level == LogLevel::kWarn ? " WARN "
                                                   : " ERROR ");
  out.append(event);
  for (const LogField& field : fields) {
    out.append(" ").append(field.key).append("=");
    field.value.AppendPlain(out);
  }
  return out;
}

void SetLogFormat(LogFormat format) {
  g_format.store(static_cast<int>(format), std::memory_order_relaxed);
}

void SetLogLevel(LogLevel level) { TheLogger().logger->set_level(SpdlogLevel(level)); }

LogFormat log_format() { return static_cast<LogFormat>(g_format.load(std::memory_order_relaxed)); }

bool LogEnabled(LogLevel level) { return TheLogger().logger->should_log(SpdlogLevel(level)); }

void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) {
  Log(level, event, absl::Span<const LogField>(fields.begin(), fields.size()));
}

void Log(LogLevel level, std::string_view event, absl::Span<const LogField> fields) {
  Logger& logger = TheLogger();
  const spdlog::level::level_enum spdlog_level = SpdlogLevel(level);
  if (!logger.logger->should_log(spdlog_level)) {
    return;
  }
  const std::string line = FormatLogLine(log_format(), absl::Now(), level, event, fields);
  logger.logger->log(spdlog_level, spdlog::string_view_t(line.data(), line.size()));
}

LogCapture::LogCapture() {
  Logger& logger = TheLogger();
  logger.sinks->set_sinks({std::make_shared<CaptureSink>(this)});
}

LogCapture::~LogCapture() {
  Logger& logger = TheLogger();
  logger.sinks->set_sinks({logger.stderr_sink});
}

void LogCapture::Add(std::string_view line) {
  absl::MutexLock lock(&mu_);
  lines_.emplace_back(line);
}

std::vector<std::string> LogCapture::lines() const {
  absl::MutexLock lock(&mu_);
  return lines_;
}

std::vector<std::string> LogCapture::Events(std::string_view event) const {
  std::string json_key = "\"event\":";
  AppendJsonString(event, json_key);
  std::vector<std::string> out;
  for (std::string& line : lines()) {
    // Plain: "<ts> <LEVEL> <event>[ fields]".
    const size_t level_end = line.find(' ', line.find(' ') + 1);
    const bool plain_match =
        level_end != std::string::npos && line.compare(level_end + 1, event.size(), event) == 0 &&
        (line.size() == level_end + 1 + event.size() || line[level_end + 1 + event.size()] == ' ');
    if (plain_match || line.find(json_key) != std::string::npos) {
      out.push_back(std::move(line));
    }
  }
  return out;
}

}  // namespace floodgate::common
