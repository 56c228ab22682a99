#include "src/server/envoy_flags.h"

#include <CLI/CLI.hpp>

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "floodgate/status_macros.h"
#include "src/common/host_port.h"
#include "src/server/flag_helpers.h"

namespace floodgate::server {
namespace {

constexpr uint64_t kMaxRefusalCacheSlots = uint64_t{1} << 30;

// The gRPC port's own TLS: a set that replaces --tls-* there, so every part needs the one
// before it. The files themselves are checked when the server starts.
absl::Status ToGrpcTls(const EnvoyText& text, net::TlsFiles* files) {
  if (text.grpc_tls_cert.empty() != text.grpc_tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--grpc-tls-cert and --grpc-tls-key go together: give both (the gRPC port's own TLS) or "
        "neither (the gRPC port follows --tls-*)");
  }
  if (!text.grpc_tls_client_ca.empty() && text.grpc_tls_cert.empty()) {
    return absl::InvalidArgumentError(
        "--grpc-tls-client-ca needs --grpc-tls-cert and --grpc-tls-key (the --grpc-tls-* flags "
        "replace --tls-* on the gRPC port as a set; mTLS is TLS with client certificates)");
  }
  if (!text.grpc_tls_client_san.empty() && text.grpc_tls_client_ca.empty()) {
    return absl::InvalidArgumentError(
        "--grpc-tls-client-san needs --grpc-tls-client-ca (the name is checked on client "
        "certificates, which only mTLS asks for)");
  }
  *files = {.cert_file = text.grpc_tls_cert,
            .key_file = text.grpc_tls_key,
            .client_ca_file = text.grpc_tls_client_ca,
            .client_san = text.grpc_tls_client_san};
  return absl::OkStatus();
}

}  // namespace

void AddEnvoyFlags(CLI::App* serve, EnvoyText* text) {
  AddSwitch(serve, "--shadow-mode", &text->shadow_mode,
            "Answer OK where the answer would be OVER_LIMIT (descriptor statuses still say it); "
            "Envoy's SHADOW_MODE.");
  AddSwitch(serve, "--quota-mode", &text->quota_mode,
            "Every descriptor in quota mode (docs/config.md); Envoy's QUOTA_MODE.");
  AddSwitch(serve, "--response-dynamic-metadata", &text->response_dynamic_metadata,
            "Envoy RLS answers carry dynamic_metadata; Envoy's RESPONSE_DYNAMIC_METADATA.");
  AddSwitch(serve, "--limit-response-headers", &text->limit_headers,
            "Envoy RLS answers carry the limit, remaining and reset headers named below instead "
            "of ours; Envoy's LIMIT_RESPONSE_HEADERS_ENABLED.");
  AddFlag(serve, "--limit-limit-header", &text->limit_header, "NAME",
          "With --limit-response-headers: the limit's header.");
  AddFlag(serve, "--limit-remaining-header", &text->remaining_header, "NAME",
          "With --limit-response-headers: the remaining hits' header.");
  AddFlag(serve, "--limit-reset-header", &text->reset_header, "NAME",
          "With --limit-response-headers: the seconds-to-reset header.");
  AddFlag(serve, "--near-limit-ratio", &text->near_limit_ratio, "RATIO",
          "near_limit is counted when usage passes this fraction of a limit, 0 to 1.");
  AddFlag(serve, "--refusal-cache-slots", &text->refusal_cache_slots, "N",
          "Slots of the over-limit fast path (refused keys answered without the store), 0 (off) "
          "to 2^30; rounded up to a power of two, at least 64. Envoy's "
          "LOCAL_CACHE_SIZE_IN_BYTES, in slots of 24 bytes.");
  AddSwitch(serve, "--healthy-with-config", &text->healthy_with_config,
            "/healthcheck (and gRPC health) fail until a config with at least one domain is "
            "loaded, and whenever the config has none; Envoy's "
            "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED.");
  AddFlag(serve, "--xds-server", &text->xds_server, "HOST:PORT",
          "Take the config from this xDS server (state of the world); Envoy's "
          "CONFIG_TYPE=GRPC_XDS_SOTW with CONFIG_GRPC_XDS_SERVER_URL.");
  AddFlag(serve, "--xds-node-id", &text->xds_node_id, "ID", "With --xds-server: our node id.");
  AddFlag(serve, "--xds-node-metadata", &text->xds_node_metadata, "K=V,...",
          "With --xds-server: our node's metadata.");
  AddFlag(serve, "--xds-initial-backoff", &text->xds_initial_backoff, "DURATION",
          "With --xds-server: the first wait before reconnecting, 1ms to 1h.");
  AddFlag(serve, "--xds-max-backoff", &text->xds_max_backoff, "DURATION",
          "With --xds-server: the longest wait before reconnecting, --xds-initial-backoff to 24h.");
  AddFlag(serve, "--xds-backoff-jitter", &text->xds_backoff_jitter, "J",
          "With --xds-server: each wait is drawn from [d * (1 - J), d], J from 0 to 1.");
  AddSwitch(serve, "--xds-tls", &text->xds_tls, "With --xds-server: TLS to the xDS server.");
  AddFlag(serve, "--xds-tls-ca", &text->xds_tls_ca, "FILE",
          "With --xds-tls: the CAs to trust (PEM; default: gRPC's roots).");
  AddFlag(serve, "--xds-tls-cert", &text->xds_tls_cert, "FILE",
          "With --xds-tls: our client certificate (PEM), for mutual TLS.");
  AddFlag(serve, "--xds-tls-key", &text->xds_tls_key, "FILE", "With --xds-tls-cert: its key.");
  AddFlag(serve, "--xds-tls-server-name", &text->xds_tls_server_name, "NAME",
          "With --xds-tls: the name the server's certificate must carry.");
  AddFlag(serve, "--statsd", &text->statsd, "HOST:PORT",
          "Send the metrics to this statsd server (UDP); Envoy's STATSD_HOST and STATSD_PORT.");
  AddFlag(serve, "--statsd-flush-interval", &text->statsd_flush_interval, "DURATION",
          "With --statsd: how often the metrics are sent, 100ms to 1h.");
  AddFlag(serve, "--grpc-tls-cert", &text->grpc_tls_cert, "FILE",
          "PEM certificate (then intermediates) of the gRPC port alone, replacing --tls-* there "
          "(the HTTP port keeps --tls-*, or plain); needs --grpc-tls-key. Envoy's "
          "GRPC_SERVER_USE_TLS with GRPC_SERVER_TLS_CERT.");
  AddFlag(serve, "--grpc-tls-key", &text->grpc_tls_key, "FILE",
          "PEM private key of --grpc-tls-cert (not encrypted); Envoy's GRPC_SERVER_TLS_KEY.");
  AddFlag(serve, "--grpc-tls-client-ca", &text->grpc_tls_client_ca, "FILE",
          "With --grpc-tls-cert: gRPC clients must present a certificate these CAs signed "
          "(mTLS); Envoy's GRPC_CLIENT_TLS_CACERT.");
  AddFlag(serve, "--grpc-tls-client-san", &text->grpc_tls_client_san, "NAME",
          "With --grpc-tls-client-ca: the DNS name (or IP) a gRPC client's certificate must "
          "carry as a subject alternative name; Envoy's GRPC_CLIENT_TLS_SAN.");
}

absl::Status ToEnvoy(const EnvoyText& text, ServerOptions* options) {
  options->envoy.global_shadow_mode = text.shadow_mode;
  options->envoy.global_quota_mode = text.quota_mode;
  options->envoy.response_dynamic_metadata = text.response_dynamic_metadata;
  options->envoy.limit_headers = text.limit_headers;
  FG_RETURN_IF_ERROR(CheckHeaderName("--limit-limit-header", text.limit_header));
  FG_RETURN_IF_ERROR(CheckHeaderName("--limit-remaining-header", text.remaining_header));
  FG_RETURN_IF_ERROR(CheckHeaderName("--limit-reset-header", text.reset_header));
  options->envoy.limit_header = text.limit_header;
  options->envoy.remaining_header = text.remaining_header;
  options->envoy.reset_header = text.reset_header;
  if (!absl::SimpleAtod(text.near_limit_ratio, &options->near_limit_ratio) ||
      !(options->near_limit_ratio >= 0 && options->near_limit_ratio <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--near-limit-ratio must be a number from 0 to 1 (got '", text.near_limit_ratio, "')"));
  }
  FG_ASSIGN_OR_RETURN(options->refusal_cache_slots,
                      WholeNumber("--refusal-cache-slots", text.refusal_cache_slots, 0,
                                  kMaxRefusalCacheSlots, " (0: off)"));
  options->healthy_with_config = text.healthy_with_config;
  options->xds_server = text.xds_server;
  options->xds_node_id = text.xds_node_id;
  if (options->xds_node_id.empty()) {
    return absl::InvalidArgumentError("--xds-node-id must not be empty");
  }
  FG_ASSIGN_OR_RETURN(options->xds_node_metadata,
                      ParseKeyValues("--xds-node-metadata", text.xds_node_metadata));
  FG_ASSIGN_OR_RETURN(options->xds_initial_backoff,
                      DurationOf("--xds-initial-backoff", text.xds_initial_backoff,
                                 absl::Milliseconds(1), absl::Hours(1)));
  FG_ASSIGN_OR_RETURN(options->xds_max_backoff,
                      DurationOf("--xds-max-backoff", text.xds_max_backoff,
                                 options->xds_initial_backoff, absl::Hours(24)));
  if (!absl::SimpleAtod(text.xds_backoff_jitter, &options->xds_backoff_jitter) ||
      !(options->xds_backoff_jitter >= 0 && options->xds_backoff_jitter <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--xds-backoff-jitter must be a number from 0 to 1 (got '", text.xds_backoff_jitter, "')"));
  }
  if (text.xds_tls_cert.empty() != text.xds_tls_key.empty()) {
    return absl::InvalidArgumentError("--xds-tls-cert and --xds-tls-key go together");
  }
  options->xds_tls = text.xds_tls;
  options->xds_tls_ca = text.xds_tls_ca;
  options->xds_tls_cert = text.xds_tls_cert;
  options->xds_tls_key = text.xds_tls_key;
  options->xds_tls_server_name = text.xds_tls_server_name;
  if (!text.statsd.empty()) {
    std::string host;
    uint16_t port = 0;
    if (!common::SplitHostPort(text.statsd, host, port).ok() || host.empty() || port == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--statsd must be HOST:PORT (got '", text.statsd, "')"));
    }
  }
  options->statsd = text.statsd;
  FG_RETURN_IF_ERROR(ToGrpcTls(text, &options->grpc_tls));
  FG_ASSIGN_OR_RETURN(options->statsd_flush_interval,
                      DurationOf("--statsd-flush-interval", text.statsd_flush_interval,
                                 absl::Milliseconds(100), absl::Hours(1)));
  return absl::OkStatus();
}

// Gives every serve flag that neither the command line nor its FLOODGATE_* variable set the
// value of its Envoy variables, if any, as if CLI11 had read it: the option converts and stores
// it as it would its own.
absl::Status ApplyEnvoyEnv(CLI::App* serve, const EnvGetter& env) {
  FG_ASSIGN_OR_RETURN(std::vector<EnvoyValue> values,
                      ReadEnvoyEnv(env, [serve](absl::string_view flag) {
                        const CLI::Option* option = serve->get_option_no_throw(std::string(flag));
                        return option != nullptr && option->count() > 0;
                      }));
  for (const EnvoyValue& value : values) {
    CLI::Option* option = serve->get_option_no_throw(value.flag);
    if (option == nullptr) {
      return absl::InternalError(absl::StrCat("no flag ", value.flag, " for ", value.from));
    }
    try {
      option->add_result(value.text);
      option->run_callback();
    } catch (const CLI::Error& e) {
      return absl::InvalidArgumentError(absl::StrCat(value.from, ": ", e.what()));
    }
  }
  return absl::OkStatus();
}

}  // namespace floodgate::server
