// The endpoints the web console needs: its files (GET /ui), the node's status, the top refused
// keys and config validation. POST /v1/simulate is in http_handlers.cc beside the JSON decoder.
// docs/http_api.md shows every answer.

#include <charconv>
#include <string>

#include "absl/strings/str_cat.h"
#include "src/common/json.h"
#include "src/common/text.h"
#include "src/frontends/http/http_handlers.h"
#include "src/frontends/http/http_util.h"
#include "src/frontends/http/ui_assets.h"

namespace floodgate::frontends {
namespace {

// The console's own files only: no CDN, no inline script or style, no frames.
constexpr char kUiCsp[] =
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'";
constexpr size_t kDefaultTopKeys = 20;
constexpr size_t kMaxTopKeys = 100;

HttpReply ErrorReply(int status, std::string_view message) {
  HttpReply reply;
  reply.status = status;
  reply.body = common::ErrorJson(message);
  return reply;
}

void AppendStrings(const std::vector<std::string>& values, std::string& out) {
  out.push_back('[');
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) {
      out.push_back(',');
    }
    common::AppendJsonString(values[i], out);
  }
  out.push_back(']');
}

// Returns the line of a config error ("file:LINE: reason"), or 0 when it has none.
int ErrorLine(std::string_view message) {
  for (size_t colon = message.find(':'); colon != std::string_view::npos;
       colon = message.find(':', colon + 1)) {
    const size_t end = message.find(':', colon + 1);
    if (end == std::string_view::npos) {
      break;
    }
    const std::string_view digits = message.substr(colon + 1, end - colon - 1);
    int line = 0;
    if (!digits.empty() &&
        std::from_chars(digits.data(), digits.data() + digits.size(), line).ptr ==
            digits.data() + digits.size() &&
        line > 0) {
      return line;
    }
  }
  return 0;
}

// Parses `n` from GET /v1/top's query: 1..kMaxTopKeys, kDefaultTopKeys when absent.
absl::StatusOr<size_t> TopCount(std::string_view query) {
  size_t n = kDefaultTopKeys;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (!pair.starts_with("n=")) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown parameter '", common::AbslView(pair), "'; this endpoint takes n"));
    }
    const std::string_view value = pair.substr(2);
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (value.empty() || ec != std::errc() || end != value.data() + value.size() || n < 1 ||
        n > kMaxTopKeys) {
      return absl::InvalidArgumentError(
          absl::StrCat("n must be a whole number from 1 to ", kMaxTopKeys));
    }
  }
  return n;
}

}  // namespace

HttpReply HttpHandlers::Ui(std::string_view file) const {
  if (file.empty()) {
    // Relative links in the page resolve under /ui/ only with the slash.
    HttpReply reply;
    reply.status = 308;
    reply.content_type = kTextType;
    reply.headers.emplace_back("Location", "/ui/");
    reply.body = "see /ui/";
    return reply;
  }
  std::string_view name = file.substr(1);  // after "/"
  if (name.empty()) {
    name = "index.html";
  }
  const http_internal::UiAsset* asset = http_internal::FindUiAsset(name);
  if (asset == nullptr) {
    return ErrorReply(404, absl::StrCat("no such console file: ", common::AbslView(name)));
  }
  HttpReply reply;
  reply.content_type = http_internal::UiContentType(asset->path);
  reply.headers.emplace_back("Cache-Control", "no-cache");
  reply.headers.emplace_back("Content-Security-Policy", kUiCsp);
  reply.headers.emplace_back("X-Content-Type-Options", "nosniff");
  reply.body = std::string(asset->content);
  return reply;
}

HttpReply HttpHandlers::Status(bool draining) const {
  const service::NodeStatus status = admin_->Status();
  HttpReply reply;
  std::string& json = reply.body;
  json = "{\"node_id\":";
  if (status.node_id.empty()) {
    json.append("null");
  } else {
    common::AppendJsonString(status.node_id, json);
  }
  json.append(",\"version\":");
  common::AppendJsonString(status.version, json);
  absl::StrAppend(
      &json, ",\"uptime_seconds\":", status.uptime_seconds,
      ",\"started_at\":", status.started_at_seconds, ",\"config_version\":", status.config_version,
      ",\"domains\":", status.domains, ",\"keys\":", status.keys, ",\"bytes\":", status.bytes,
      ",\"cap_bytes\":", status.cap_bytes, ",\"cluster\":", status.cluster ? "true" : "false",
      ",\"draining\":", draining ? "true" : "false", "}");
  return reply;
}

HttpReply HttpHandlers::Top(std::string_view query) const {
  absl::StatusOr<size_t> n = TopCount(query);
  if (!n.ok()) {
    return ErrorReply(400, common::StdView(n.status().message()));
  }
  const service::TopRefusedView top = admin_->TopRefused(*n);
  HttpReply reply;
  std::string& json = reply.body;
  absl::StrAppend(&json, "{\"window_seconds\":", top.window_seconds, ",\"nodes\":");
  AppendStrings(top.nodes, json);
  json.append(",\"missing\":");
  AppendStrings(top.missing, json);
  json.append(",\"keys\":[");
  for (size_t i = 0; i < top.keys.size(); ++i) {
    const service::RefusedKey& key = top.keys[i];
    json.append(i > 0 ? ",{\"domain\":" : "{\"domain\":");
    common::AppendJsonString(key.domain, json);
    json.append(",\"descriptor\":");
    common::AppendJsonString(key.descriptor, json);
    absl::StrAppend(&json, ",\"refused\":", key.refused, ",\"error\":", key.error, "}");
  }
  absl::StrAppend(&json, "],\"refusals\":", top.refusals, "}");
  return reply;
}

HttpReply HttpHandlers::Validate(std::string_view body, std::string_view raw_domain) const {
  std::string domain;
  if (!http_internal::PercentDecode(raw_domain, false, domain) || !common::IsValidUtf8(domain)) {
    return ErrorReply(400, "the domain in the path is not valid percent-encoded UTF-8");
  }
  absl::StatusOr<service::ValidationReport> report = admin_->ValidateDomain(domain, body);
  if (!report.ok()) {
    const std::string_view message = common::StdView(report.status().message());
    HttpReply reply;
    reply.status = http_internal::HttpStatusFor(report.status());
    reply.body = "{\"valid\":false,\"error\":";
    common::AppendJsonString(message, reply.body);
    if (const int line = ErrorLine(message); line > 0) {
      absl::StrAppend(&reply.body, ",\"line\":", line);
    }
    reply.body.push_back('}');
    return reply;
  }
  HttpReply reply;
  reply.body = "{\"valid\":true,\"domain\":";
  common::AppendJsonString(report->domain, reply.body);
  absl::StrAppend(&reply.body, ",\"descriptors\":", report->descriptors, "}");
  return reply;
}

}  // namespace floodgate::frontends
