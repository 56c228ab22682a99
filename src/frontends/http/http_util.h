#pragma once

// Pure helpers of the HTTP front end, exposed so that tests can reach them: request-target
// splitting, percent-decoding, the GET /v1/check query, routing, response framing and the small
// JSON writers of the hot path. Not an API for other modules; see http_server.h.
//
// Thread-safety: every function is pure (or writes only to its arguments).

#include <cstdint>
#include <string>
#include <string_view>

#include <boost/beast/http/verb.hpp>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "floodgate/v1/check.pb.h"
#include "google/protobuf/descriptor.h"
#include "src/common/json.h"
#include "src/common/text.h"
#include "src/limiter/limiter.h"
#include "src/service/request_limits.h"
#include "src/service/rls.h"

namespace floodgate::frontends::http_internal {

// Splits a request-target into its path and its query (without the '?'); drops a '#fragment'.
void SplitTarget(std::string_view target, std::string_view& path, std::string_view& query);

// Appends the percent-decoding of `in` to `out`; with `plus_is_space`, '+' decodes to ' ' (the
// form encoding of query strings). Returns false on a malformed escape ('%' not followed by two
// hex digits); `out` then holds a partial result.
bool PercentDecode(std::string_view in, bool plus_is_space, std::string& out);

// Fills `request` from the query of GET /v1/check: `domain=D`, optional `hits=N`, and one
// descriptor whose entries are every other parameter in query order (`KEY=VALUE`; a bare `KEY`
// has an empty value). Keys and values are percent-decoded ('+' is a space). Reuses the storage
// already in `request` so that a connection allocates nothing in the steady state.
// Returns InvalidArgument for a malformed escape, text that is not UTF-8 after decoding, a
// repeated `domain` or `hits`, a `hits` that is not a number, no entries, or more entries than
// `limits.max_entries`. The other limits are left to ValidateRequest.
absl::Status ParseCheckQuery(std::string_view query, const service::RequestLimits& limits,
                             limiter::CheckRequest& request);

enum class Endpoint : uint8_t {
  kNotFound,
  kEnvoyJson,     // POST /json
  kCheck,         // GET, POST /v1/check
  kAuth,          // GET /v1/auth: GET /v1/check for nginx auth_request (403 when refused)
  kRelease,       // POST /v1/release
  kHealthcheck,   // GET /healthcheck
  kMetrics,       // GET /metrics
  kConfig,        // GET /v1/config
  kConfigDomain,  // PUT, DELETE /v1/config/{domain}
  kCluster,       // GET /v1/cluster
  kUi,            // GET /ui, /ui/{file}: the web console (ui_assets.h)
  kStatus,        // GET /v1/status
  kRules,         // GET /v1/rules
  kTop,           // GET /v1/top
  kSimulate,      // POST /v1/simulate
  kValidate,      // POST /v1/validate/{domain}
};

struct Route {
  Endpoint endpoint = Endpoint::kNotFound;
  // kConfigDomain, kValidate: the {domain} path segment, still percent-encoded. kUi: the path
  // after "/ui" ("", "/", "/app.js").
  std::string_view domain;
};

// Returns the endpoint for a path (without query). Paths match exactly; no trailing slash.
Route MatchPath(std::string_view path);

// Returns whether some endpoint answers `method`: GET, HEAD, POST, PUT and DELETE. Any other
// method (OPTIONS, TRACE, CONNECT, PATCH, one Beast does not know) is answered 501.
bool MethodImplemented(boost::beast::http::verb method);

// Returns whether `endpoint` answers `method`. HEAD is answered wherever GET is.
bool MethodAllowed(Endpoint endpoint, boost::beast::http::verb method);

// Returns the value of the Allow header for `endpoint` ("GET, HEAD, POST", ...).
std::string_view AllowedMethods(Endpoint endpoint);

// Returns whether `target` is in a request-target form this server answers (RFC 9112 3.2):
// origin-form ("/path?query") or absolute-form ("http://host/path"). The asterisk form ("*")
// and the authority form ("host:port") belong to OPTIONS and CONNECT, which are not
// implemented.
bool IsServedTargetForm(std::string_view target);

// Returns whether `value` is a valid Host header value (RFC 9110 7.2): empty, or a host name,
// IPv4 address or bracketed IPv6 literal, with an optional ":port". Only the characters are
// checked, not the structure.
bool IsValidHost(std::string_view value);

// Checks the Transfer-Encoding of a request (every Transfer-Encoding line, joined with ", ").
// OK for "chunked" alone (any case); InvalidArgument when chunked is not the last coding (the
// body's length cannot be known: RFC 9112 6.3 says 400 and close); Unimplemented when other
// codings come before chunked (this server decodes none of them: 501).
absl::Status CheckTransferEncoding(std::string_view value);

// Returns the reason phrase for a status code ("OK", "Too Many Requests", ...).
std::string_view StatusReason(int status);

// Returns the HTTP status for a failed call: InvalidArgument 400, NotFound 404,
// FailedPrecondition and AlreadyExists 409, Unauthenticated 401, PermissionDenied 403,
// ResourceExhausted and Unavailable 503 (429 is kept for rate limit decisions), Unimplemented
// 501, else 500.
int HttpStatusFor(const absl::Status& status);

// How a response tells the client about the connection.
enum class Connection : uint8_t {
  kDefault,    // HTTP/1.1 keep-alive: no header
  kKeepAlive,  // an HTTP/1.0 client that asked for keep-alive
  kClose,      // the server closes after this response
};

// Appends to `out` a complete HTTP/1.1 response: status line, Content-Type (omitted when
// empty), Content-Length, Connection when needed, `headers`, then `body`. CR and LF in header
// values are replaced with spaces so that no value can split the header. With `head_request`
// (the answer to HEAD) the body is left out, but Content-Length still gives its size, as the
// answer to GET would.
void FormatResponse(int status, std::string_view content_type,
                    absl::Span<const service::Header> headers, std::string_view body,
                    Connection connection, std::string& out, bool head_request = false);

// Appends the proto3 JSON form of `response` with every field printed: the same JSON as
// MessageToJsonString with always_print_primitive_fields (lowerCamelCase names, 64-bit integers
// as strings, fields in proto order), except that doubles use the shortest exact form. Several
// times faster than MessageToJsonString.
void AppendCheckResponseJson(const floodgate::v1::CheckResponse& response, std::string& out);

// Returns the error of protobuf's JSON parser (JsonStringToMessage's message) for a body that
// was to be a `root` message, in the caller's terms: fields named as the JSON writes them
// (`hits`, `descriptors[0].entries[1].key`), what each takes ("a whole number from 0 to
// `max_hits`" for hits), the value given, and no protobuf type names. "Root element must be a
// message." becomes "the body must be a JSON object"; an unknown field lists the fields there;
// a syntax error keeps its first line behind "the body is not valid JSON: ".
std::string JsonErrorInOurTerms(std::string_view error, const google::protobuf::Descriptor& root,
                                uint64_t max_hits);

// Returns whether `authorization` is exactly "Bearer <token>" (constant time in the token).
bool BearerTokenMatches(std::string_view authorization, std::string_view token);

}  // namespace floodgate::frontends::http_internal
