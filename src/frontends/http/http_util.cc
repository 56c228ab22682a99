#include "src/frontends/http/http_util.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

// Returns `text` cut to at most `max` bytes (with "..." when cut), for echoing a caller's value.
std::string Shorten(std::string_view text, size_t max = 64) {
  return text.size() <= max ? std::string(text)
                            : absl::StrCat(AbslView(text.substr(0, max)), "...");
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
        // The message quotes v, which lives in the entry that resize drops: write it first.
        absl::Status error = absl::InvalidArgumentError(
            absl::StrCat("query parameter `hits` must be a whole number from 0 to ",
                         limits.max_hits, ", got \"", Shorten(v), "\""));
        entries.resize(count);
        return error;
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
  } else if (path == "/v1/status") {
    route.endpoint = Endpoint::kStatus;
  } else if (path == "/v1/rules") {
    route.endpoint = Endpoint::kRules;
  } else if (path == "/v1/top") {
    route.endpoint = Endpoint::kTop;
  } else if (path == "/v1/simulate") {
    route.endpoint = Endpoint::kSimulate;
  } else if (path == "/ui" || path.starts_with("/ui/")) {
    route.endpoint = Endpoint::kUi;
    route.domain = path.substr(3);
  } else if (path.starts_with("/v1/validate/")) {
    const std::string_view domain = path.substr(sizeof("/v1/validate/") - 1);
    if (!domain.empty() && domain.find('/') == std::string_view::npos) {
      route.endpoint = Endpoint::kValidate;
      route.domain = domain;
    }
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
    case Endpoint::kSimulate:
    case Endpoint::kValidate:
      return method == http::verb::post;
    case Endpoint::kAuth:
    case Endpoint::kHealthcheck:
    case Endpoint::kMetrics:
    case Endpoint::kConfig:
    case Endpoint::kCluster:
    case Endpoint::kUi:
    case Endpoint::kStatus:
    case Endpoint::kRules:
    case Endpoint::kTop:
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
    case Endpoint::kSimulate:
    case Endpoint::kValidate:
      return "POST";
    case Endpoint::kAuth:
    case Endpoint::kHealthcheck:
    case Endpoint::kMetrics:
    case Endpoint::kConfig:
    case Endpoint::kCluster:
    case Endpoint::kUi:
    case Endpoint::kStatus:
    case Endpoint::kRules:
    case Endpoint::kTop:
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
    case 308:
      return "Permanent Redirect";
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

namespace {

using google::protobuf::FieldDescriptor;

// A field path as protobuf's JSON parser reports it ("descriptors[0].entries[1].key", proto
// names), resolved against the message types.
struct ResolvedPath {
  std::string json;                        // the same path with JSON names
  const FieldDescriptor* field = nullptr;  // the last field; null when it did not resolve
  bool indexed = false;                    // the last segment names one element ("[3]")
};

ResolvedPath ResolvePath(std::string_view path, const google::protobuf::Descriptor& root) {
  ResolvedPath out;
  const google::protobuf::Descriptor* message = &root;
  while (!path.empty()) {
    const size_t dot = path.find('.');
    std::string_view segment = path.substr(0, dot);
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
    std::string_view index;
    if (const size_t bracket = segment.find('['); bracket != std::string_view::npos) {
      index = segment.substr(bracket);
      segment = segment.substr(0, bracket);
    }
    const FieldDescriptor* field =
        message == nullptr ? nullptr : message->FindFieldByName(std::string(segment));
    if (field == nullptr) {
      return ResolvedPath{};
    }
    absl::StrAppend(&out.json, out.json.empty() ? "" : ".", field->json_name(), AbslView(index));
    out.field = field;
    out.indexed = !index.empty();
    message = field->message_type();
  }
  return out;
}

// Returns what a JSON value for `field` must be ("a whole number from 0 to 100", "a string").
std::string WhatFieldTakes(const FieldDescriptor& field, bool indexed, uint64_t max_hits) {
  if (field.is_repeated() && !indexed) {
    return "a JSON array";
  }
  // hits, hits_addend, and the wrapper Envoy uses for a descriptor's hits_addend.
  const bool hits = field.name() == "hits" || field.name() == "hits_addend" ||
                    (field.name() == "value" &&
                     field.containing_type()->full_name() == "google.protobuf.UInt64Value");
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64: {
      const uint64_t max = field.cpp_type() == FieldDescriptor::CPPTYPE_UINT32
                               ? std::numeric_limits<uint32_t>::max()
                               : std::numeric_limits<uint64_t>::max();
      return absl::StrCat("a whole number from 0 to ", hits ? std::min(max, max_hits) : max);
    }
    case FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat("a whole number from ", std::numeric_limits<int32_t>::min(), " to ",
                          std::numeric_limits<int32_t>::max());
    case FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat("a whole number from ", std::numeric_limits<int64_t>::min(), " to ",
                          std::numeric_limits<int64_t>::max());
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT:
      return "a number";
    case FieldDescriptor::CPPTYPE_BOOL:
      return "true or false";
    case FieldDescriptor::CPPTYPE_STRING:
      return "a string";
    case FieldDescriptor::CPPTYPE_ENUM: {
      std::vector<std::string> names;
      for (int i = 0; i < field.enum_type()->value_count(); ++i) {
        names.push_back(field.enum_type()->value(i)->name());
      }
      return absl::StrCat("one of ", absl::StrJoin(names, ", "));
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      // Wrappers (google.protobuf.UInt64Value) are written as their value.
      if (field.message_type()->full_name() == "google.protobuf.UInt64Value") {
        return absl::StrCat("a whole number from 0 to ",
                            hits || field.name() == "hits_addend"
                                ? max_hits
                                : std::numeric_limits<uint64_t>::max());
      }
      return "a JSON object";
  }
  return "something else";
}

// Returns the JSON names of the fields of `message`, quoted: "`domain`, `descriptors`, ...".
std::string FieldList(const google::protobuf::Descriptor& message) {
  std::vector<std::string> names;
  for (int i = 0; i < message.field_count(); ++i) {
    names.push_back(absl::StrCat("`", message.field(i)->json_name(), "`"));
  }
  return absl::StrJoin(names, ", ");
}

}  // namespace

std::string JsonErrorInOurTerms(std::string_view error, const google::protobuf::Descriptor& root,
                                uint64_t max_hits) {
  constexpr std::string_view kNotObject = "Root element must be a message.";
  constexpr std::string_view kInvalidValue = "): invalid value ";
  constexpr std::string_view kForType = " for type ";
  constexpr std::string_view kNoField = ": Cannot find field.";
  if (error.find(kNotObject) != std::string_view::npos) {
    return "the body must be a JSON object";
  }
  // "(descriptors[0].hits): invalid value -1 for type TYPE_UINT64"
  if (const size_t at = error.find(kInvalidValue);
      error.starts_with('(') && at != std::string_view::npos) {
    const size_t type = error.rfind(kForType);
    const std::string_view value =
        type != std::string_view::npos && type > at + kInvalidValue.size()
            ? error.substr(at + kInvalidValue.size(), type - at - kInvalidValue.size())
            : std::string_view();
    const ResolvedPath path = ResolvePath(error.substr(1, at - 1), root);
    if (path.field != nullptr) {
      return absl::StrCat("`", path.json, "` must be ",
                          WhatFieldTakes(*path.field, path.indexed, max_hits), ", got ",
                          Shorten(value));
    }
  }
  // "unknownField: Cannot find field." or "(descriptors[0].entries[0]) kee: Cannot find field."
  if (error.ends_with(kNoField)) {
    std::string_view rest = error.substr(0, error.size() - kNoField.size());
    const google::protobuf::Descriptor* message = &root;
    std::string where;
    if (rest.starts_with('(')) {
      const size_t close = rest.find(") ");
      if (close != std::string_view::npos) {
        const ResolvedPath path = ResolvePath(rest.substr(1, close - 1), root);
        message = path.field != nullptr ? path.field->message_type() : nullptr;
        where = absl::StrCat(" in `", path.json, "`");
        rest = rest.substr(close + 2);
      }
    }
    if (message != nullptr) {
      return absl::StrCat("unknown field `", Shorten(rest), "`", where, "; the fields are ",
                          FieldList(*message));
    }
  }
  // A syntax error: its first line ("Expected : between key:value pair.").
  std::string_view first = error.substr(0, error.find('\n'));
  if (first.ends_with('.')) {
    first.remove_suffix(1);
  }
  return absl::StrCat("the body is not valid JSON: ", Shorten(first, 200));
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
