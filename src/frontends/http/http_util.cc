#include "src/frontends/http/http_util.h"

#include <charconv>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "src/common/json.h"
#include "src/common/text.h"

namespace floodgate::frontends::http_internal {
namespace {

using common::AbslView;
using common::AppendJsonDouble;
using common::AppendJsonString;
using common::IsValidUtf8;

namespace http = boost::beast::http;

int HexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

template <typename Int>
void AppendInt(Int value, std::string& out) {
  char buf[24];
  auto result = std::to_chars(buf, buf + sizeof(buf), value);
  out.append(buf, result.ptr);
}

// Appends a header value without CR, LF or NUL, which could otherwise end the header early.
void AppendHeaderValue(std::string_view value, std::string& out) {
  for (char c : value) {
    out.push_back(c == '\r' || c == '\n' || c == '\0' ? ' ' : c);
  }
}

void AppendBool(bool value, std::string& out) { out.append(value ? "true" : "false"); }

// Appends a 64-bit integer as proto3 JSON writes it: a quoted decimal.
template <typename Int>
void AppendQuotedInt(Int value, std::string& out) {
  out.push_back('"');
  AppendInt(value, out);
  out.push_back('"');
}

void AppendLimitStatusJson(const floodgate::v1::LimitStatus& limit, std::string& out) {
  out.append("{\"name\":");
  AppendJsonString(limit.name(), out);
  out.append(",\"algorithm\":");
  AppendJsonString(limit.algorithm(), out);
  out.append(",\"allowed\":");
  AppendBool(limit.allowed(), out);
  out.append(",\"shadow\":");
  AppendBool(limit.shadow(), out);
  out.append(",\"limit\":");
  AppendQuotedInt(limit.limit(), out);
  out.append(",\"remaining\":");
  AppendQuotedInt(limit.remaining(), out);
  out.append(",\"windowSeconds\":");
  AppendJsonDouble(limit.window_seconds(), out);
  out.append(",\"resetAfterSeconds\":");
  AppendJsonDouble(limit.reset_after_seconds(), out);
  out.append(",\"retryAfterSeconds\":");
  AppendJsonDouble(limit.retry_after_seconds(), out);
  out.append(",\"delaySeconds\":");
  AppendJsonDouble(limit.delay_seconds(), out);
  out.push_back('}');
}

}  // namespace

void SplitTarget(std::string_view target, std::string_view& path, std::string_view& query) {
  // absolute-form ("http://host/path", sent to proxies): keep only the path and query.
  if (absl::StartsWithIgnoreCase(AbslView(target), "http://") ||
      absl::StartsWithIgnoreCase(AbslView(target), "https://")) {
    const size_t authority = target.find("//") + 2;
    const size_t slash = target.find_first_of("/?#", authority);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  const size_t hash = target.find('#');
  if (hash != std::string_view::npos) {
    target = target.substr(0, hash);
  }
  const size_t question = target.find('?');
  if (question == std::string_view::npos) {
    path = target;
    query = {};
  } else {
    path = target.substr(0, question);
    query = target.substr(question + 1);
  }
}

bool PercentDecode(std::string_view in, bool plus_is_space, std::string& out) {
  size_t i = 0;
  while (i < in.size()) {
    size_t j = i;
    while (j < in.size() && in[j] != '%' && !(plus_is_space && in[j] == '+')) {
      ++j;
    }
    out.append(in.data() + i, j - i);
    i = j;
    if (i == in.size()) {
      break;
    }
    if (in[i] == '+') {
      out.push_back(' ');
      ++i;
      continue;
    }
    if (in.size() - i < 3) {
      return false;
    }
    const int hi = HexValue(in[i + 1]);
    const int lo = HexValue(in[i + 2]);
    if (hi < 0 || lo < 0) {
      return false;
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 3;
  }
  return true;
}

absl::Status ParseCheckQuery(std::string_view query, const service::RequestLimits& limits,
                             limiter::CheckRequest& request) {
  request.domain.clear();
  request.hits_addend = 0;
  request.descriptors.resize(1);
  limiter::DescriptorRequest& descriptor = request.descriptors[0];
  descriptor.limit.reset();
  descriptor.hits_addend.reset();
  std::vector<core::DescriptorEntry>& entries = descriptor.entries;

  bool have_domain = false;
  size_t count = 0;  // entries filled so far; entries past it are reused scratch space
  size_t index = 0;  // 1-based position of the parameter, for errors
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view param = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (param.empty()) {
      continue;
    }
    ++index;
    const size_t eq = param.find('=');
    const std::string_view raw_key = param.substr(0, eq);
    const std::string_view raw_value =
        eq == std::string_view::npos ? std::string_view() : param.substr(eq + 1);

    // Decode the key into the next entry's storage: it is kept unless the key is special.
    if (count == entries.size()) {
      entries.emplace_back();
    }
    core::DescriptorEntry& entry = entries[count];
    entry.key.clear();
    entry.value.clear();
    if (!PercentDecode(raw_key, true, entry.key) || !PercentDecode(raw_value, true, entry.value)) {
      entries.resize(count);
      return absl::InvalidArgumentError(
          absl::StrCat("query parameter ", index, ": malformed percent-escape"));
    }
    if (!IsValidUtf8(entry.key) || !IsValidUtf8(entry.value)) {
      entries.resize(count);
      return absl::InvalidArgumentError(
          absl::StrCat("query parameter ", index, ": not valid UTF-8 after percent-decoding"));
    }
    if (entry.key == "domain") {
      if (have_domain) {
        entries.resize(count);
        return absl::InvalidArgumentError("query parameter `domain` given more than once");
      }
      have_domain = true;
      request.domain.swap(entry.value);
      continue;
    }
    if (entry.key == "hits") {
      if (descriptor.hits_addend.has_value()) {
        entries.resize(count);
        return absl::InvalidArgumentError("query parameter `hits` given more than once");
      }
      uint64_t hits = 0;
      const std::string& v = entry.value;
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), hits);
      if (v.empty() || ec != std::errc() || end != v.data() + v.size()) {
        entries.resize(count);
        return absl::InvalidArgumentError("query parameter `hits` must be a non-negative integer");
      }
      descriptor.hits_addend = hits;
      continue;
    }
    if (count == limits.max_entries) {
      entries.resize(count);
      return absl::InvalidArgumentError(
          absl::StrCat("too many KEY=VALUE query parameters (at most ", limits.max_entries, ")"));
    }
    ++count;
  }
  entries.resize(count);
  if (!have_domain) {
    return absl::InvalidArgumentError("missing query parameter `domain`");
  }
  if (count == 0) {
    return absl::InvalidArgumentError(
        "GET /v1/check needs at least one KEY=VALUE query parameter besides domain and hits");
  }
  return absl::OkStatus();
}

Route MatchPath(std::string_view path) {
  Route route;
  if (path == "/v1/check") {
    route.endpoint = Endpoint::kCheck;
  } else if (path == "/v1/auth") {
    route.endpoint = Endpoint::kAuth;
  } else if (path == "/json") {
    route.endpoint = Endpoint::kEnvoyJson;
  } else if (path == "/v1/release") {
    route.endpoint = Endpoint::kRelease;
  } else if (path == "/healthcheck") {
    route.endpoint = Endpoint::kHealthcheck;
  } else if (path == "/metrics") {
    route.endpoint = Endpoint::kMetrics;
  } else if (path == "/v1/config") {
    route.endpoint = Endpoint::kConfig;
  } else if (path == "/v1/cluster") {
    route.endpoint = Endpoint::kCluster;
  } else if (path.starts_with("/v1/config/")) {
    const std::string_view domain = path.substr(sizeof("/v1/config/") - 1);
    if (!domain.empty() && domain.find('/') == std::string_view::npos) {
      route.endpoint = Endpoint::kConfigDomain;
      route.domain = domain;
    }
  }
  return route;
}

bool MethodImplemented(http::verb method) {
  switch (method) {
    case http::verb::get:
    case http::verb::head:
    case http::verb::post:
    case http::verb::put:
    case http::verb::delete_:
      return true;
    default:
      return false;
  }
}

bool MethodAllowed(Endpoint endpoint, http::verb method) {
  if (method == http::verb::head) {
    method = http::verb::get;
  }
  switch (endpoint) {
    case Endpoint::kCheck:
      return method == http::verb::get || method == http::verb::post;
    case Endpoint::kEnvoyJson:
    case Endpoint::kRelease:
      return method == http::verb::post;
    case Endpoint::kAuth:
    case Endpoint::kHealthcheck:
    case Endpoint::kMetrics:
    case Endpoint::kConfig:
    case Endpoint::kCluster:
      return method == http::verb::get;
    case Endpoint::kConfigDomain:
      return method == http::verb::put || method == http::verb::delete_;
    case Endpoint::kNotFound:
      return false;
  }
  return false;
}

std::string_view AllowedMethods(Endpoint endpoint) {
  switch (endpoint) {
    case Endpoint::kCheck:
      return "GET, HEAD, POST";
    case Endpoint::kEnvoyJson:
    case Endpoint::kRelease:
      return "POST";
    case Endpoint::kAuth:
    case Endpoint::kHealthcheck:
    case Endpoint::kMetrics:
    case Endpoint::kConfig:
    case Endpoint::kCluster:
      return "GET, HEAD";
    case Endpoint::kConfigDomain:
      return "PUT, DELETE";
    case Endpoint::kNotFound:
      return "";
  }
  return "";
}

bool IsServedTargetForm(std::string_view target) {
  return target.starts_with('/') || absl::StartsWithIgnoreCase(AbslView(target), "http://") ||
         absl::StartsWithIgnoreCase(AbslView(target), "https://");
}

bool IsValidHost(std::string_view value) {
  for (char c : value) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    std::string_view("-._~!$&'()*+,;=:[]%").find(c) != std::string_view::npos;
    if (!ok) {
      return false;
    }
  }
  return true;
}

absl::Status CheckTransferEncoding(std::string_view value) {
  // The codings, in order; the last one must be chunked.
  size_t codings = 0;
  std::string_view last;
  while (!value.empty()) {
    const size_t comma = value.find(',');
    std::string_view coding = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
    while (!coding.empty() && (coding.front() == ' ' || coding.front() == '\t')) {
      coding.remove_prefix(1);
    }
    while (!coding.empty() && (coding.back() == ' ' || coding.back() == '\t')) {
      coding.remove_suffix(1);
    }
    if (!coding.empty()) {
      ++codings;
      last = coding;
    }
  }
  if (!absl::EqualsIgnoreCase(AbslView(last), "chunked")) {
    return absl::InvalidArgumentError(
        "Transfer-Encoding must end with chunked (the length of the body cannot be known "
        "otherwise)");
  }
  if (codings > 1) {
    return absl::UnimplementedError(
        "Transfer-Encoding: only chunked is supported, with no other coding");
  }
  return absl::OkStatus();
}

std::string_view StatusReason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
      return 409;
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kUnimplemented:
      return 501;
    default:
      return 500;
  }
}

void FormatResponse(int status, std::string_view content_type,
                    absl::Span<const service::Header> headers, std::string_view body,
                    Connection connection, std::string& out, bool head_request) {
  out.append("HTTP/1.1 ");
  AppendInt(status, out);
  out.push_back(' ');
  out.append(StatusReason(status));
  out.append("\r\n");
  if (!content_type.empty()) {
    out.append("Content-Type: ");
    out.append(content_type);
    out.append("\r\n");
  }
  out.append("Content-Length: ");
  AppendInt(body.size(), out);
  out.append("\r\n");
  if (connection == Connection::kClose) {
    out.append("Connection: close\r\n");
  } else if (connection == Connection::kKeepAlive) {
    out.append("Connection: keep-alive\r\n");
  }
  for (const service::Header& header : headers) {
    AppendHeaderValue(header.first, out);
    out.append(": ");
    AppendHeaderValue(header.second, out);
    out.append("\r\n");
  }
  out.append("\r\n");
  if (!head_request) {
    out.append(body);
  }
}

void AppendCheckResponseJson(const floodgate::v1::CheckResponse& response, std::string& out) {
  out.append("{\"allowed\":");
  AppendBool(response.allowed(), out);
  out.append(",\"code\":");
  AppendJsonString(response.code(), out);
  out.append(",\"descriptors\":[");
  for (int i = 0; i < response.descriptors_size(); ++i) {
    const floodgate::v1::DescriptorStatus& descriptor = response.descriptors(i);
    if (i > 0) {
      out.push_back(',');
    }
    out.append("{\"code\":");
    AppendJsonString(descriptor.code(), out);
    out.append(",\"limits\":[");
    for (int j = 0; j < descriptor.limits_size(); ++j) {
      if (j > 0) {
        out.push_back(',');
      }
      AppendLimitStatusJson(descriptor.limits(j), out);
    }
    out.append("],\"unlimited\":");
    AppendBool(descriptor.unlimited(), out);
    out.push_back('}');
  }
  out.append("],\"retryAfterSeconds\":");
  AppendJsonDouble(response.retry_after_seconds(), out);
  out.append(",\"lease\":");
  AppendQuotedInt(response.lease(), out);
  out.append(",\"unknownDomain\":");
  AppendBool(response.unknown_domain(), out);
  out.push_back('}');
}

bool BearerTokenMatches(std::string_view authorization, std::string_view token) {
  constexpr std::string_view kScheme = "Bearer ";
  if (token.empty() || !absl::StartsWithIgnoreCase(AbslView(authorization), AbslView(kScheme))) {
    return false;
  }
  std::string_view given = authorization.substr(kScheme.size());
  while (!given.empty() && (given.front() == ' ' || given.front() == '\t')) {
    given.remove_prefix(1);
  }
  while (!given.empty() && (given.back() == ' ' || given.back() == '\t')) {
    given.remove_suffix(1);
  }
  // Touch every byte of the given token whatever the mismatch, so timing says nothing about
  // how much of it was right.
  unsigned diff = given.size() == token.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) {
    diff |=
        static_cast<unsigned char>(given[i]) ^ static_cast<unsigned char>(token[i % token.size()]);
  }
  return diff == 0;
}

}  // namespace floodgate::frontends::http_internal
