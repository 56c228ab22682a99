#pragma once

// The HTTP session's request reading (http_server.cc): what a request carries, the parser that
// fills it (Beast's basic_parser, with the RFC 9112 checks Beast leaves to us and each route's
// body limit) and the answer to a request that could not be read. Internal to the HTTP front
// end.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/core/error.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "src/common/text.h"
#include "src/frontends/http/http_util.h"
#include "src/service/request_limits.h"

namespace floodgate::frontends::http_internal {

namespace beast = boost::beast;
namespace http = boost::beast::http;
using error_code = boost::beast::error_code;

// What a request carries that the handlers read. Owned by the session and reused, so that the
// strings keep their capacity from one request to the next.
struct RequestData {
  http::verb method = http::verb::unknown;
  int version = 11;
  std::string target;
  std::string authorization;
  std::string body;
  bool expect_continue = false;
  // Framing checks that Beast leaves to us (RFC 9112): Host lines seen, whether one was not a
  // host, every Transfer-Encoding line joined, whether a header line was folded.
  int host_lines = 0;
  bool bad_host = false;
  std::string transfer_encoding;
  bool obs_fold = false;
  // Why the header section was refused (set with a parse error): answered with its status.
  absl::Status refusal;
  // The body limit for this request's route (RequestParser sets it from the request line).
  size_t body_limit = 0;
  bool config_write = false;  // PUT /v1/config/{domain}, POST /v1/validate/{domain}

  void Reset() {
    method = http::verb::unknown;
    version = 11;
    target.clear();
    authorization.clear();
    body.clear();
    expect_continue = false;
    host_lines = 0;
    bad_host = false;
    transfer_encoding.clear();
    obs_fold = false;
    body_limit = 0;
    config_write = false;
    refusal = absl::OkStatus();
  }
};

// Returns why a parsed header section must be refused, or OK. Beast already refuses a bad or
// conflicting Content-Length and Content-Length with chunked; these are the rest of RFC 9112's
// musts a proxy in front relies on.
inline absl::Status CheckHeaderSection(const RequestData& data) {
  if (data.obs_fold) {
    return absl::InvalidArgumentError(
        "a header line is continued on the next line (obs-fold); send each header on one line");
  }
  if (data.host_lines > 1) {
    return absl::InvalidArgumentError("more than one Host header");
  }
  if (data.host_lines == 0 && data.version >= 11) {
    return absl::InvalidArgumentError("an HTTP/1.1 request needs a Host header");
  }
  if (data.bad_host) {
    return absl::InvalidArgumentError("the Host header is not a host name or address");
  }
  if (!data.transfer_encoding.empty()) {
    if (data.version < 11) {
      return absl::InvalidArgumentError("Transfer-Encoding is not allowed in an HTTP/1.0 request");
    }
    return CheckTransferEncoding(data.transfer_encoding);
  }
  return absl::OkStatus();
}

// A request parser that keeps only what RequestData holds: no header container, no allocation
// once the connection's strings are warm. Beast parsers parse one message; the session emplaces
// a fresh one (no heap) for every request.
//
// The body limit is the route's, set from the request line (before Beast checks a declared
// Content-Length against it): an admin config write (PUT /v1/config/{domain}) may carry as much
// YAML as a config file may hold (RequestLimits::max_config_body_bytes); every other body is
// held to max_body_bytes.
class RequestParser final : public http::basic_parser<true> {
 public:
  RequestParser(RequestData* data, const service::RequestLimits& limits)
      : data_(data), limits_(limits) {
    data_->body_limit = limits_.max_body_bytes;
    body_limit(data_->body_limit);
  }

 private:
  void on_request_impl(http::verb method, beast::string_view /*method_str*/,
                       beast::string_view target, int version, error_code& /*ec*/) override {
    data_->method = method;
    data_->version = version;
    data_->target.assign(target.data(), target.size());
    // A config's YAML (PUT /v1/config/{domain}, POST /v1/validate/{domain}) may be larger.
    data_->config_write = IsConfigBody(method, data_->target);
    data_->body_limit =
        data_->config_write ? limits_.max_config_body_bytes : limits_.max_body_bytes;
    body_limit(data_->body_limit);
  }
  static bool IsConfigBody(http::verb method, std::string_view target) {
    if (method != http::verb::put && method != http::verb::post) {
      return false;
    }
    std::string_view path;
    std::string_view query;
    SplitTarget(target, path, query);
    const Endpoint endpoint = MatchPath(path).endpoint;
    return method == http::verb::put ? endpoint == Endpoint::kConfigDomain
                                     : endpoint == Endpoint::kValidate;
  }
  void on_response_impl(int, beast::string_view, int, error_code& ec) override {
    ec = http::error::bad_method;  // unreachable for a request parser
  }
  void on_field_impl(http::field name, beast::string_view name_string, beast::string_view value,
                     error_code& /*ec*/) override {
    if (name == http::field::authorization) {
      data_->authorization.assign(value.data(), value.size());
    } else if (name == http::field::expect) {
      data_->expect_continue = beast::iequals(value, "100-continue");
    } else if (name == http::field::host) {
      ++data_->host_lines;
      data_->bad_host = data_->bad_host || !IsValidHost({value.data(), value.size()});
    } else if (name == http::field::transfer_encoding) {
      if (!data_->transfer_encoding.empty()) {
        data_->transfer_encoding.append(", ");
      }
      data_->transfer_encoding.append(value.data(), value.size());
    }
    data_->obs_fold = data_->obs_fold || IsFolded(name_string);
  }
  void on_header_impl(error_code& ec) override {
    data_->refusal = CheckHeaderSection(*data_);
    if (!data_->refusal.ok()) {
      ec = http::error::bad_value;
    }
  }
  // Returns whether the field line that starts with `name` goes on past its first line. Beast
  // replaces an obs-fold with a space (allowed too), so the raw bytes are looked at: Beast
  // parses fields only once the whole header section, which ends with CRLF CRLF, is in one
  // buffer, and `name` points into it; so the scan to the line's LF stays in the buffer, and
  // one byte follows that LF.
  static bool IsFolded(beast::string_view name) {
    const char* p = name.data() + name.size();
    while (*p != '\n') {
      ++p;
    }
    return p[1] == ' ' || p[1] == '\t';
  }
  void on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                         error_code& /*ec*/) override {
    // The parser has already refused a length above the body limit.
    if (content_length.has_value()) {
      data_->body.reserve(static_cast<size_t>(*content_length));
    }
  }
  size_t on_body_impl(beast::string_view body, error_code& /*ec*/) override {
    data_->body.append(body.data(), body.size());
    return body.size();
  }
  void on_chunk_header_impl(std::uint64_t, beast::string_view, error_code&) override {}
  size_t on_chunk_body_impl(std::uint64_t, beast::string_view body, error_code&) override {
    data_->body.append(body.data(), body.size());
    return body.size();
  }
  void on_finish_impl(error_code& /*ec*/) override {}

  RequestData* const data_;
  const service::RequestLimits& limits_;
};

inline bool IsParseError(const error_code& ec) {
  return ec.category() == beast::http::make_error_code(http::error::bad_target).category();
}

// What a request that could not be read is answered (the connection then closes).
struct ReadRefusal {
  int status;
  std::string message;
};

// Returns the answer to a request whose read failed with `ec`, or nullopt when there is none to
// give (the client went away or stopped mid-request, the connection idled out or is closing).
inline std::optional<ReadRefusal> RefusalFor(const RequestData& request, const error_code& ec,
                                             size_t max_body_bytes, uint32_t max_header_bytes) {
  if (!request.refusal.ok()) {
    return ReadRefusal{HttpStatusFor(request.refusal),
                       std::string(common::StdView(request.refusal.message()))};
  }
  if (ec == http::error::body_limit && request.config_write) {
    return ReadRefusal{413, absl::StrCat("config body is larger than ", request.body_limit,
                                         " bytes, the most a config file may hold")};
  }
  if (ec == http::error::body_limit) {
    return ReadRefusal{
        413, absl::StrCat("request body is larger than ",
                          request.body_limit != 0 ? request.body_limit : max_body_bytes, " bytes")};
  }
  if (ec == http::error::header_limit) {
    return ReadRefusal{
        431, absl::StrCat("request header section is larger than ", max_header_bytes, " bytes")};
  }
  if (IsParseError(ec) && ec != http::error::end_of_stream && ec != http::error::partial_message) {
    return ReadRefusal{400, absl::StrCat("malformed HTTP request: ", ec.message())};
  }
  return std::nullopt;
}

}  // namespace floodgate::frontends::http_internal
