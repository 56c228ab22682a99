#include "src/frontends/http/http_handlers.h"

#include <google/protobuf/util/json_util.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "floodgate/status_macros.h"
#include "src/common/json.h"
#include "src/common/log.h"
#include "src/common/rate_limited_log.h"
#include "src/common/text.h"
#include "src/frontends/http/http_util.h"
#include "src/service/rules_json.h"
#include "src/service/simulate_json.h"

namespace floodgate::frontends {
namespace {

namespace http = boost::beast::http;
using http_internal::Endpoint;

HttpReply Error(int status, std::string_view message) {
  HttpReply reply;
  reply.status = status;
  reply.body = common::ErrorJson(message);
  return reply;
}

HttpReply Error(const absl::Status& status) {
  return Error(http_internal::HttpStatusFor(status), common::StdView(status.message()));
}

// Decodes a JSON body into `message`; InvalidArgument in the caller's terms otherwise (see
// JsonErrorInOurTerms): protobuf's own messages name its types, not our fields.
absl::Status DecodeJson(std::string_view body, google::protobuf::Message& message,
                        uint64_t max_hits) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return absl::InvalidArgumentError("the body is empty; it must be a JSON object");
  }
  google::protobuf::util::JsonParseOptions options;
  auto parsed = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(body.data(), body.size()), &message, options);
  if (!parsed.ok()) {
    const google::protobuf::StringPiece error = parsed.message();
    return absl::InvalidArgumentError(http_internal::JsonErrorInOurTerms(
        std::string_view(error.data(), error.size()), *message.GetDescriptor(), max_hits));
  }
  return absl::OkStatus();
}

}  // namespace

HttpHandlers::HttpHandlers(std::string admin_token, service::RateLimitService* service,
                           service::AdminApi* admin, service::FrontendMetrics* metrics)
    : admin_token_(std::move(admin_token)), service_(service), admin_(admin), metrics_(metrics) {}

HttpReply HttpHandlers::Malformed(const absl::Status& status) const {
  service_->CountMalformed(service::Frontend::kHttp);
  return Error(400, common::StdView(status.message()));
}

bool HttpHandlers::IsRateLimitCall(std::string_view target) {
  std::string_view path;
  std::string_view query;
  http_internal::SplitTarget(target, path, query);
  switch (http_internal::MatchPath(path).endpoint) {
    case Endpoint::kCheck:
    case Endpoint::kAuth:
    case Endpoint::kEnvoyJson:
    case Endpoint::kRelease:
      return true;
    default:
      return false;
  }
}

HttpReply HttpHandlers::Handle(const HttpRequest& request, HttpScratch& scratch) const {
  return *Answer(request, scratch, Async{});  // never suspends without a loop
}

void HttpHandlers::HandleAsync(const HttpRequest& request, HttpScratch& scratch,
                               boost::asio::io_context& loop, ReplyDone done) const {
  std::optional<HttpReply> reply = Answer(request, scratch, Async{&loop, &done});
  if (reply.has_value()) {
    std::move(done)(*std::move(reply));
  }
}

bool HttpHandlers::Suspends(Async async) const {
  return async.loop != nullptr && service_->may_suspend();
}

std::optional<HttpReply> HttpHandlers::Answer(const HttpRequest& request, HttpScratch& scratch,
                                              Async async) const {
  std::string_view path;
  std::string_view query;
  http_internal::SplitTarget(request.target, path, query);
  const http_internal::Route route = http_internal::MatchPath(path);

  HttpReply reply;
  if (!http_internal::MethodImplemented(request.method)) {
    // No endpoint takes it (RFC 9110 15.6.2); Allow still says what this path takes.
    reply = Error(501,
                  "method not implemented; this server answers GET, HEAD, POST, PUT and "
                  "DELETE");
    if (route.endpoint != Endpoint::kNotFound) {
      reply.headers.emplace_back("Allow",
                                 std::string(http_internal::AllowedMethods(route.endpoint)));
    }
  } else if (!http_internal::IsServedTargetForm(request.target)) {
    reply =
        Error(400, "the request target must be a path (/v1/check?...) or an absolute http:// URL");
  } else if (route.endpoint == Endpoint::kNotFound) {
    reply = Error(404, absl::StrCat("no such endpoint: ", common::AbslView(path)));
  } else if (!http_internal::MethodAllowed(route.endpoint, request.method)) {
    const std::string_view allowed = http_internal::AllowedMethods(route.endpoint);
    reply = Error(405, absl::StrCat("method not allowed; use ", common::AbslView(allowed)));
    reply.headers.emplace_back("Allow", std::string(allowed));
  } else {
    switch (route.endpoint) {
      // Rate limit calls are counted by the service's pipeline, and may be suspended.
      case Endpoint::kCheck:
      case Endpoint::kAuth:
        return Check(request, query, route.endpoint == Endpoint::kAuth, scratch, async);
      case Endpoint::kEnvoyJson:
        return EnvoyJson(request, scratch, async);
      case Endpoint::kRelease:
        return Release(request, scratch, async);
      case Endpoint::kHealthcheck:
        reply.content_type = kTextType;
        if (request.draining) {
          reply.status = 503;
          reply.body = "DRAINING";
        } else if (request.ready != nullptr && *request.ready && !(*request.ready)()) {
          reply.status = 503;
          reply.body = "NOT READY";
        } else {
          reply.body = "OK";
        }
        break;
      case Endpoint::kMetrics:
        reply = Metrics();
        break;
      case Endpoint::kCluster:
        reply = Cluster();
        break;
      case Endpoint::kConfig:
        reply = ConfigView();
        break;
      case Endpoint::kConfigDomain:
        reply = ConfigChange(request, route.domain);
        break;
      case Endpoint::kUi:
        reply = Ui(route.domain);
        break;
      case Endpoint::kStatus:
        reply = Status(request.draining);
        break;
      case Endpoint::kRules:
        reply = Rules();
        break;
      case Endpoint::kTop:
        reply = Top(query);
        break;
      case Endpoint::kSimulate:
        reply = Simulate(request.body);
        break;
      case Endpoint::kValidate:
        reply = Validate(request.body, route.domain);
        break;
      case Endpoint::kNotFound:
        break;
    }
  }
  Count(reply, route.endpoint == Endpoint::kHealthcheck);
  return reply;
}

void HttpHandlers::Count(const HttpReply& reply, bool healthcheck) const {
  metrics_->requests.fetch_add(1, std::memory_order_relaxed);
  if (reply.status >= 400 && reply.status < 500) {
    metrics_->bad_requests.fetch_add(1, std::memory_order_relaxed);
  } else if (reply.status >= 500 && !healthcheck) {
    metrics_->errors.fetch_add(1, std::memory_order_relaxed);
  }
}

std::optional<HttpReply> HttpHandlers::Check(const HttpRequest& request, std::string_view query,
                                             bool auth, HttpScratch& scratch, Async async) const {
  bool release = false;
  if (request.method != http::verb::post) {  // GET or HEAD
    // The hot path: no JSON parsing; the query is decoded into reused storage.
    if (absl::Status parsed =
            http_internal::ParseCheckQuery(query, service_->limits(), scratch.check);
        !parsed.ok()) {
      return Malformed(parsed);
    }
  } else {
    if (absl::Status parsed = DecodeNative(request.body, scratch); !parsed.ok()) {
      return Malformed(parsed);
    }
    release = scratch.native_request.release();
  }
  if (release) {
    return ReleaseSlots(request, scratch, async);
  }
  const service::FieldNames names = request.method == http::verb::post
                                        ? service::FieldNames::kNative
                                        : service::FieldNames::kQuery;
  const service::CallContext call{service::Frontend::kHttp, request.shed, names};
  if (Suspends(async)) {
    scratch.check_response.emplace();
    service_->CheckAsync(
        call, scratch.check, *scratch.check_response, *async.loop,
        [this, &scratch, auth, done = std::move(*async.done)](absl::Status status) mutable {
          HttpReply reply = CheckOutcome(status, &*scratch.check_response, auth, scratch);
          scratch.check_response.reset();  // holds the config: let it go
          std::move(done)(std::move(reply));
        });
    return std::nullopt;
  }
  absl::StatusOr<limiter::CheckResponse> response = service_->Check(call, scratch.check);
  return CheckOutcome(response.status(), response.ok() ? &*response : nullptr, auth, scratch);
}

HttpReply HttpHandlers::CheckOutcome(const absl::Status& status,
                                     const limiter::CheckResponse* response, bool auth,
                                     HttpScratch& scratch) const {
  if (!status.ok()) {
    return Error(status);
  }
  HttpReply reply = CheckReply(*response, scratch);
  // nginx's auth_request passes on 2xx and denies on 401/403 (other codes are errors).
  if (auth && (reply.status == 429 || reply.status == 503)) {
    reply.status = 403;
  }
  return reply;
}

HttpReply HttpHandlers::CheckReply(const limiter::CheckResponse& response,
                                   HttpScratch& scratch) const {
  scratch.native_response.Clear();
  service::ToNative(response, &scratch.native_response);
  HttpReply reply;
  http_internal::AppendCheckResponseJson(scratch.native_response, reply.body);
  reply.headers = service::RateLimitHeaders(response);
  if (response.unknown_domain) {
    // No configured limit applied: say so where a proxy or a person will see it.
    reply.headers.emplace_back("Floodgate-Warning",
                               "unknown domain: the config has no such domain, no limit applied");
  }
  switch (service::RefusalOf(response)) {
    case service::Refusal::kNone:
      reply.status = 200;
      break;
    case service::Refusal::kOverLimit:
      reply.status = 429;
      break;
    case service::Refusal::kNever:
      // Still 429 (over a limit), but without Retry-After: waiting does not help.
      reply.status = 429;
      reply.headers.emplace_back(
          "Floodgate-Refusal",
          "never; these hits can never pass: a limit allows fewer (0, or less than the hits)");
      break;
    case service::Refusal::kUnavailable:
      // Not over any limit: a limit with `failure_mode: closed` whose counter could not be
      // asked (in a cluster, its owner is down or unreachable) refused it. Retry-After stays.
      reply.status = 503;
      reply.headers.emplace_back(
          "Floodgate-Refusal",
          "unavailable; failure_mode closed: the limit's counter could not be asked");
      break;
  }
  return reply;
}

std::optional<HttpReply> HttpHandlers::EnvoyJson(const HttpRequest& request, HttpScratch& scratch,
                                                 Async async) const {
  if (absl::Status parsed =
          DecodeJson(request.body, scratch.envoy_request, service_->limits().max_hits);
      !parsed.ok()) {
    return Malformed(parsed);
  }
  const service::CallContext call{service::Frontend::kHttp, request.shed};
  scratch.envoy_response.Clear();
  if (Suspends(async)) {
    service_->ShouldRateLimitAsync(
        call, scratch.envoy_request, &scratch.envoy_response, *async.loop,
        [this, &scratch, done = std::move(*async.done)](absl::Status status) mutable {
          std::move(done)(EnvoyOutcome(status, scratch.envoy_response));
        });
    return std::nullopt;
  }
  const absl::Status decided =
      service_->ShouldRateLimit(call, scratch.envoy_request, &scratch.envoy_response);
  return EnvoyOutcome(decided, scratch.envoy_response);
}

HttpReply HttpHandlers::EnvoyOutcome(
    const absl::Status& status, const envoy::service::ratelimit::v3::RateLimitResponse& out) const {
  if (!status.ok()) {
    return Error(status);
  }
  HttpReply reply;
  auto printed = google::protobuf::util::MessageToJsonString(out, &reply.body);
  if (!printed.ok()) {
    return Error(500, absl::StrCat("cannot print response: ", printed.message().as_string()));
  }
  reply.status = out.overall_code() == envoy::service::ratelimit::v3::RateLimitResponse::OVER_LIMIT
                     ? 429
                     : 200;
  return reply;
}

std::optional<HttpReply> HttpHandlers::Release(const HttpRequest& request, HttpScratch& scratch,
                                               Async async) const {
  if (absl::Status parsed = DecodeNative(request.body, scratch); !parsed.ok()) {
    return Malformed(parsed);
  }
  return ReleaseSlots(request, scratch, async);
}

absl::Status HttpHandlers::DecodeNative(std::string_view body, HttpScratch& scratch) const {
  FG_RETURN_IF_ERROR(DecodeJson(body, scratch.native_request, service_->limits().max_hits));
  scratch.check = service::FromNative(scratch.native_request);
  return absl::OkStatus();
}

std::optional<HttpReply> HttpHandlers::ReleaseSlots(const HttpRequest& request,
                                                    HttpScratch& scratch, Async async) const {
  const service::CallContext call{service::Frontend::kHttp, request.shed};
  const auto outcome = [](const absl::Status& released) {
    if (!released.ok()) {
      return Error(released);
    }
    HttpReply reply;
    reply.body = "{}";
    return reply;
  };
  if (Suspends(async)) {
    service_->ReleaseAsync(call, scratch.check, scratch.native_request.lease(), *async.loop,
                           [outcome, done = std::move(*async.done)](absl::Status status) mutable {
                             std::move(done)(outcome(status));
                           });
    return std::nullopt;
  }
  return outcome(service_->Release(call, scratch.check, scratch.native_request.lease()));
}

HttpReply HttpHandlers::Metrics() const {
  HttpReply reply;
  reply.content_type = kPrometheusType;
  reply.body = admin_->PrometheusText();
  return reply;
}

HttpReply HttpHandlers::Cluster() const {
  absl::StatusOr<std::string> json = admin_->ClusterJson();
  if (!json.ok()) {
    return Error(json.status());
  }
  HttpReply reply;
  reply.body = *std::move(json);
  return reply;
}

HttpReply HttpHandlers::ConfigView() const {
  std::shared_ptr<const core::Config> config = service_->config();
  HttpReply reply;
  std::string& json = reply.body;
  json = "{\"version\":";
  absl::StrAppend(&json, config != nullptr ? config->version : 0, ",\"domains\":{");
  if (config != nullptr) {
    bool first = true;
    for (const auto& [name, domain] : config->domains) {
      if (!first) {
        json.push_back(',');
      }
      first = false;
      common::AppendJsonString(name, json);
      json.push_back(':');
      common::AppendJsonString(domain != nullptr ? domain->source : "", json);
    }
  }
  json.append("}}");
  return reply;
}

HttpReply HttpHandlers::Rules() const {
  std::shared_ptr<const core::Config> config = service_->config();
  HttpReply reply;
  reply.body = config != nullptr ? service::RulesJson(*config)
                                 : std::string("{\"version\":0,\"domains\":[]}");
  return reply;
}

HttpReply HttpHandlers::ConfigChange(const HttpRequest& request,
                                     std::string_view raw_domain) const {
  // The audit: every admin change, and every refused attempt, with who asked (the client's
  // address, whether it presented a token: never the token itself).
  const std::string client =
      request.client_address != nullptr ? (*request.client_address)() : "unknown";
  const std::string_view action = request.method == http::verb::put ? "put" : "delete";
  const bool token = !request.authorization.empty();
  const auto refused = [&](int status, std::string_view why) {
    // Anyone who reaches the port can trigger these: rate-limited.
    common::RateLimitedLog::Default().Log(common::LogLevel::kWarn, "admin_refused",
                                          {{"action", action},
                                           {"client", client},
                                           {"token", token},
                                           {"status", status},
                                           {"why", why}});
  };
  if (!admin_token_.empty() &&
      !http_internal::BearerTokenMatches(request.authorization, admin_token_)) {
    refused(401, token ? "wrong token" : "no token");
    return Error(401, "admin calls need the header `Authorization: Bearer <admin token>`");
  }
  // Without a token, only callers on this machine may change limits: a server listening on a
  // public address must not hand its config to anyone who can reach the port.
  if (admin_token_.empty() && !request.from_loopback()) {
    refused(403, "not from this machine and no --admin-token");
    return Error(403, "admin calls from other hosts need --admin-token");
  }
  std::string domain;
  if (!http_internal::PercentDecode(raw_domain, false, domain) || !common::IsValidUtf8(domain)) {
    refused(400, "domain not valid percent-encoded UTF-8");
    return Error(400, "the domain in the path is not valid percent-encoded UTF-8");
  }
  absl::StatusOr<uint64_t> version = request.method == http::verb::put
                                         ? admin_->PutDomain(domain, request.body)
                                         : admin_->DeleteDomain(domain);
  if (!version.ok()) {
    common::Log(common::LogLevel::kWarn, "config_change",
                {{"source", "admin"},
                 {"action", action},
                 {"domain", domain},
                 {"outcome", absl::StatusCodeToString(version.status().code())},
                 {"error", version.status().message()},
                 {"client", client},
                 {"token", token}});
    return Error(version.status());
  }
  common::Log(common::LogLevel::kInfo, "config_change",
              {{"source", "admin"},
               {"action", action},
               {"domain", domain},
               {"outcome", "ok"},
               {"version", *version},
               {"client", client},
               {"token", token}});
  HttpReply reply;
  reply.body = "{\"domain\":";
  common::AppendJsonString(domain, reply.body);
  absl::StrAppend(&reply.body, ",\"version\":", *version, "}");
  return reply;
}

HttpReply HttpHandlers::Simulate(std::string_view body) const {
  floodgate::v1::SimulateRequest request;
  if (absl::Status parsed = DecodeJson(body, request, service_->limits().max_hits); !parsed.ok()) {
    return Error(parsed);
  }
  absl::StatusOr<std::string> json = service::SimulateJson(request);
  if (!json.ok()) {
    return Error(json.status());
  }
  HttpReply reply;
  reply.body = *std::move(json);
  return reply;
}

}  // namespace floodgate::frontends
