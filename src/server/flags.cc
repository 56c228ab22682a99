#include "src/server/flags.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <limits>
#include <optional>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "floodgate/status_macros.h"
#include "src/common/host_port.h"

#ifndef FLOODGATE_VERSION
#error "FLOODGATE_VERSION comes from project(... VERSION) in the top CMakeLists.txt"
#endif

namespace floodgate::server {
namespace {

// The smallest --max-memory other than 0 (no cap). The process itself takes about 15 MiB and
// the tables get the budget minus a headroom of at least 24 MiB (server.cc, TableBudget); below
// 64 MiB the tables would hold too few keys to be worth a cap, and the store would refuse a
// budget too small for its shards in its own terms ("StoreOptions.max_memory_bytes").
constexpr uint64_t kMinMaxMemory = uint64_t{64} << 20;
constexpr uint64_t kMaxConnections = 10'000'000;
constexpr uint64_t kMaxHits = 1'000'000'000;  // service::RequestLimits::max_hits

constexpr char kFooter[] =
    "Every flag may also come from the environment variable shown (Env:); the command line wins.\n"
    "serve also reads envoyproxy/ratelimit's variables (PORT, RUNTIME_ROOT, ...), below both:\n"
    "docs/config.md, \"Envoy's switches\".\n"
    "Sizes: 256MiB, 1GiB, 500MB or a number of bytes. Durations: 200ms, 5s, 1m.\n"
    "Exit codes: 0 done, 1 failed (bad config, over the limit, cannot start), 2 bad command line.";

// The text of every flag as CLI11 collected it, from the command line or the environment.
// Converted and checked after parsing (ToServe, ToCheck), so that every refusal is in our words.
struct ServeText {
  explicit ServeText(const ServerOptions& defaults)
      : http(defaults.http_address),
        grpc(defaults.grpc_address),
        http_threads(absl::StrCat(defaults.http_threads)),
        max_connections(absl::StrCat(defaults.max_connections)),
        max_connections_per_client(absl::StrCat(defaults.max_connections_per_client)),
        max_memory(defaults.max_memory_bytes == 0 ? "0"
                                                  : FormatByteSize(defaults.max_memory_bytes)),
        grpc_threads(absl::StrCat(defaults.grpc_threads)),
        config_poll(absl::FormatDuration(defaults.config_poll)),
        replicas(absl::StrCat(defaults.replicas)),
        peer_batch_delay(absl::FormatDuration(defaults.peer_batch_delay)) {}

  std::string config, http, grpc, admin_token, http_threads, max_connections,
      max_connections_per_client, max_memory,
      grpc_impl = "native", grpc_threads, config_poll, drain_timeout = "5s", node_id, peers, peer,
      cluster_key, replicas, state_dir, tls_cert, tls_key, tls_client_ca, peer_batch_delay,
      peer_tls_cert, peer_tls_key, peer_tls_ca, etcd, etcd_prefix, cluster_name = "default",
      advertise, peers_dns, dns_server;
  bool allow_empty_config = false;
  bool insecure_peers = false;
  bool require_discovery = false;
};

struct CheckText {
  std::string config, domain, hits = "1";
  std::vector<std::string> entries;
};

// "--max-connections-per-client" -> "FLOODGATE_MAX_CONNECTIONS_PER_CLIENT".
std::string EnvName(absl::string_view flag) {
  std::string name = absl::StrReplaceAll(absl::StripPrefix(flag, "--"), {{"-", "_"}});
  absl::AsciiStrToUpper(&name);
  return absl::StrCat("FLOODGATE_", name);
}

// Adds `name` (taking one value, collected into `text`) with its environment variable; the
// current `text`, if any, is shown as the default.
CLI::Option* AddFlag(CLI::App* app, const std::string& name, std::string* text,
                     const std::string& type, const std::string& meaning) {
  CLI::Option* option = app->add_option(name, *text, meaning)->type_name(type);
  option->envname(EnvName(name));
  if (!text->empty()) {
    option->default_str(*text);
  }
  return option;
}

absl::StatusOr<uint64_t> WholeNumber(absl::string_view flag, const std::string& text, uint64_t min,
                                     uint64_t max, absl::string_view note = "") {
  uint64_t value = 0;
  const bool digits = !text.empty() && std::isdigit(static_cast<unsigned char>(text[0]));
  if (!digits || !absl::SimpleAtoi(text, &value) || value < min || value > max) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " must be a whole number from ", min,
                                                   " to ", max, note, " (got '", text, "')"));
  }
  return value;
}

absl::StatusOr<absl::Duration> DurationOf(absl::string_view flag, const std::string& text,
                                          absl::Duration min, absl::Duration max) {
  absl::Duration value;
  if (!absl::ParseDuration(text, &value) || value == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " must be a duration such as 200ms, 5s or 1m (got '", text, "')"));
  }
  if (value < min || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " must be from ", absl::FormatDuration(min), " to ",
                     absl::FormatDuration(max), " (got ", absl::FormatDuration(value), ")"));
  }
  return value;
}

absl::StatusOr<uint64_t> MaxMemory(const std::string& text) {
  absl::StatusOr<uint64_t> bytes = ParseByteSize(text);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max-memory must be a size such as 256MiB, 1GiB, 500MB or a number of bytes (got '", text,
        "')"));
  }
  if (*bytes != 0 && *bytes < kMinMaxMemory) {
    return absl::InvalidArgumentError(absl::StrCat("--max-memory must be 0 (no cap) or at least ",
                                                   FormatByteSize(kMinMaxMemory), " (got ",
                                                   FormatByteSize(*bytes), ")"));
  }
  return *bytes;
}

// ---- envoyproxy/ratelimit's switches: our flags for them; their variables (envoy_env.h) are
// read after ours, at the lowest precedence. docs/config.md, "Envoy's switches". ----

constexpr uint64_t kMaxRefusalCacheSlots = uint64_t{1} << 30;

struct EnvoyText {
  explicit EnvoyText(const ServerOptions& defaults)
      : near_limit_ratio(absl::StrCat(defaults.near_limit_ratio)),
        refusal_cache_slots(absl::StrCat(defaults.refusal_cache_slots)),
        limit_header(defaults.envoy.limit_header),
        remaining_header(defaults.envoy.remaining_header),
        reset_header(defaults.envoy.reset_header),
        xds_node_id(defaults.xds_node_id),
        xds_initial_backoff(absl::FormatDuration(defaults.xds_initial_backoff)),
        xds_max_backoff(absl::FormatDuration(defaults.xds_max_backoff)),
        xds_backoff_jitter(absl::StrCat(defaults.xds_backoff_jitter)),
        statsd_flush_interval(absl::FormatDuration(defaults.statsd_flush_interval)) {}

  std::string near_limit_ratio, refusal_cache_slots, limit_header, remaining_header, reset_header,
      xds_server, xds_node_id, xds_node_metadata, xds_initial_backoff, xds_max_backoff,
      xds_backoff_jitter, xds_tls_ca, xds_tls_cert, xds_tls_key, xds_tls_server_name, statsd,
      statsd_flush_interval;
  bool shadow_mode = false, quota_mode = false, response_dynamic_metadata = false,
       limit_headers = false, healthy_with_config = false, xds_tls = false;
};

void AddSwitch(CLI::App* app, const std::string& name, bool* value, const std::string& meaning) {
  app->add_flag(name, *value, meaning)->envname(EnvName(name));
}

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

// ---- end of envoyproxy/ratelimit's switches ----

// The TLS flags' combinations; the files themselves are checked when the server starts
// (net::LoadTlsCredentials), before anything listens.
absl::Status CheckTls(const ServeText& text) {
  if (text.tls_cert.empty() != text.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together: give both (TLS) or neither (plain)");
  }
  if (!text.tls_client_ca.empty() && text.tls_cert.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca needs --tls-cert and --tls-key (mTLS is TLS with client certificates)");
  }
  return absl::OkStatus();
}

// Discovery flags: one source of members, and what each needs.
absl::Status CheckDiscovery(const ServerOptions& options) {
  const int sources = !options.peers.empty() + !options.etcd.empty() + !options.peers_dns.empty();
  if (sources > 1) {
    return absl::InvalidArgumentError(
        "--peers, --etcd and --peers-dns are three ways to find the members: give one");
  }
  if (options.require_discovery && !options.discovery()) {
    return absl::InvalidArgumentError("--require-discovery needs --etcd or --peers-dns");
  }
  if (!options.advertise.empty() && !options.discovery()) {
    return absl::InvalidArgumentError(
        "--advertise needs --etcd or --peers-dns (with --peers, each entry is the address)");
  }
  if (!options.etcd.empty()) {
    if (options.node_id.empty()) {
      return absl::InvalidArgumentError("--etcd needs --node-id (the id this node registers)");
    }
    if (options.peer_address.empty() && options.advertise.empty()) {
      return absl::InvalidArgumentError(
          "--etcd needs --peer HOST:PORT (where to listen for peers; --advertise when the "
          "others reach it at another address)");
    }
    if (options.etcd_prefix.empty() || options.etcd_prefix[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("--etcd-prefix must start with '/' (got '", options.etcd_prefix, "')"));
    }
  }
  if (!options.peers_dns.empty() && !options.node_id.empty()) {
    return absl::InvalidArgumentError(
        "--peers-dns names members by their IP: leave --node-id out (give --advertise IP:PORT "
        "when --peer listens on a wildcard)");
  }
  if (!options.peers_dns.empty() && options.peer_address.empty() && options.advertise.empty()) {
    return absl::InvalidArgumentError(
        "--peers-dns needs --peer HOST:PORT (where to listen) and, when it listens on a "
        "wildcard, --advertise IP:PORT (this node's address among the DNS records)");
  }
  return absl::OkStatus();
}

absl::Status ToServe(const ServeText& text, ServeCommand* serve) {
  ServerOptions& options = serve->options;
  if (text.config.empty() && options.xds_server.empty()) {
    return absl::InvalidArgumentError(
        "serve needs --config PATH (or FLOODGATE_CONFIG): the YAML file or folder to serve "
        "(envoyproxy/ratelimit's RUNTIME_ROOT names it too)");
  }
  options.config_path = text.config;
  options.http_address = text.http;
  options.grpc_address = text.grpc;
  options.admin_token = text.admin_token;
  options.state_dir = text.state_dir;
  options.allow_empty_config = text.allow_empty_config;
  FG_ASSIGN_OR_RETURN(options.http_threads,
                      WholeNumber("--http-threads", text.http_threads, 1, 256));
  FG_ASSIGN_OR_RETURN(options.grpc_threads,
                      WholeNumber("--grpc-threads", text.grpc_threads, 1, 256));
  FG_ASSIGN_OR_RETURN(options.max_connections,
                      WholeNumber("--max-connections", text.max_connections, 1, kMaxConnections));
  FG_ASSIGN_OR_RETURN(options.max_connections_per_client,
                      WholeNumber("--max-connections-per-client", text.max_connections_per_client,
                                  0, kMaxConnections, " (0: no cap)"));
  FG_ASSIGN_OR_RETURN(options.max_memory_bytes, MaxMemory(text.max_memory));
  if (text.grpc_impl != "native" && text.grpc_impl != "grpcpp") {
    return absl::InvalidArgumentError(
        absl::StrCat("--grpc-impl must be native or grpcpp (got '", text.grpc_impl, "')"));
  }
  options.grpc_impl = text.grpc_impl;
  FG_RETURN_IF_ERROR(CheckTls(text));
  options.tls = {
      .cert_file = text.tls_cert, .key_file = text.tls_key, .client_ca_file = text.tls_client_ca};
  FG_ASSIGN_OR_RETURN(options.config_poll, DurationOf("--config-poll", text.config_poll,
                                                      absl::Milliseconds(10), absl::Hours(1)));
  FG_ASSIGN_OR_RETURN(serve->drain_timeout, DurationOf("--drain-timeout", text.drain_timeout,
                                                       absl::ZeroDuration(), absl::Minutes(10)));
  options.node_id = text.node_id;
  options.peers = text.peers;
  options.peer_address = text.peer;
  options.cluster_key = text.cluster_key;
  FG_ASSIGN_OR_RETURN(options.replicas, WholeNumber("--replicas", text.replicas, 1, 8));
  FG_ASSIGN_OR_RETURN(options.peer_batch_delay,
                      DurationOf("--peer-batch-delay", text.peer_batch_delay, absl::ZeroDuration(),
                                 absl::Milliseconds(100)));
  options.insecure_peers = text.insecure_peers;
  options.etcd = text.etcd;
  options.cluster_name = text.cluster_name;
  options.etcd_prefix =
      text.etcd_prefix.empty() ? absl::StrCat("/floodgate/", text.cluster_name) : text.etcd_prefix;
  options.advertise = text.advertise;
  options.peers_dns = text.peers_dns;
  options.dns_servers = text.dns_server;
  if (!options.dns_servers.empty() && options.peers_dns.empty()) {
    return absl::InvalidArgumentError("--dns-server needs --peers-dns");
  }
  options.require_discovery = text.require_discovery;
  FG_RETURN_IF_ERROR(CheckDiscovery(options));
  options.peer_tls = {.cert_file = text.peer_tls_cert,
                      .key_file = text.peer_tls_key,
                      .client_ca_file = text.peer_tls_ca};
  FG_RETURN_IF_ERROR(CheckPeerTlsFiles(options.peer_tls));
  const bool cluster = !options.peers.empty() || options.discovery();
  if (!cluster && (!options.node_id.empty() || !options.peer_address.empty())) {
    return absl::InvalidArgumentError(
        "--node-id and --peer need --peers, --etcd or --peers-dns (the cluster's members)");
  }
  if (!cluster && !options.peer_tls.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--peer-tls-cert, --peer-tls-key and --peer-tls-ca need --peers, --etcd or --peers-dns "
        "(the cluster's members)");
  }
  if (cluster && options.cluster_key.empty() && !options.insecure_peers) {
    return absl::InvalidArgumentError(kNeedsClusterKey);
  }
  return absl::OkStatus();
}

absl::Status ToCheck(const CheckText& text, CheckCommand* check) {
  if (text.config.empty()) {
    return absl::InvalidArgumentError(
        "check needs --config PATH (or FLOODGATE_CONFIG): the YAML file or folder to decide with");
  }
  if (text.domain.empty()) {
    return absl::InvalidArgumentError("check needs --domain DOMAIN (or FLOODGATE_DOMAIN)");
  }
  check->config_path = text.config;
  check->domain = text.domain;
  FG_ASSIGN_OR_RETURN(check->hits, WholeNumber("--hits", text.hits, 0, kMaxHits));
  for (const std::string& entry : text.entries) {
    const size_t eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("check takes descriptor entries as KEY=VALUE (got '", entry, "')"));
    }
    check->entries.emplace_back(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return absl::OkStatus();
}

// Returns an unknown flag's refusal, with the flag it most likely meant (`--admin_token`,
// `-config`, `--Config` -> `--config`).
std::string UnknownFlag(const CLI::App& command, const std::string& flag) {
  std::string guess = absl::StrReplaceAll(absl::StripLeadingAsciiWhitespace(flag), {{"_", "-"}});
  guess = absl::StrCat("--", absl::StripPrefix(absl::StripPrefix(guess, "-"), "-"));
  absl::AsciiStrToLower(&guess);
  const std::string where = absl::StrCat("floodgate ", command.get_name());
  if (guess != flag && command.get_option_no_throw(guess) != nullptr) {
    return absl::StrCat("unknown flag ", flag, " for ", where, " (did you mean ", guess, "?)");
  }
  return absl::StrCat("unknown flag ", flag, " for ", where);
}

// CLI11 takes the word after a flag as its value even when that word is a flag (`--config
// --http x` would serve the config "--http"), and reports an unknown flag together with the
// words around it. Returns the refusal of the first unknown command or flag, flag without a
// value or value that looks like a flag; nullopt when CLI11 may go on (or must show help).
std::optional<std::string> FirstMisuse(const CLI::App& app, int argc, const char* const* argv,
                                       std::string* command_name) {
  int i = 1;
  if (i < argc && argv[i][0] == '-') {
    const absl::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help" || arg == "--version") {
      return std::nullopt;
    }
    return absl::StrCat("unknown flag ", arg, " (flags come after the command)");
  }
  if (i == argc) {
    return "a command is needed: serve, validate or check";
  }
  const CLI::App* command = nullptr;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (sub->get_name() == argv[i]) {
      command = sub;
    }
  }
  if (command == nullptr) {
    return absl::StrCat("unknown command '", argv[i], "' (commands: serve, validate, check)");
  }
  *command_name = command->get_name();
  std::vector<const CLI::Option*> seen;
  for (++i; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") {
      break;  // the rest are positional words
    }
    if (arg.size() < 2 || arg[0] != '-') {
      continue;
    }
    const std::string name(arg.substr(0, arg.find('=')));
    const CLI::Option* option = command->get_option_no_throw(name);
    if (option == nullptr) {
      return UnknownFlag(*command, name);
    }
    if (std::find(seen.begin(), seen.end(), option) != seen.end()) {
      return absl::StrCat(name, " is given twice");
    }
    seen.push_back(option);
    if (option->get_items_expected_max() == 0 || name.size() != arg.size()) {
      continue;  // a switch (--help), or --flag=value: the value is explicit
    }
    if (i + 1 == argc) {
      return absl::StrCat(name, " needs a value (", option->get_type_name(), ")");
    }
    const absl::string_view next = argv[i + 1];
    if (next.size() > 1 && next[0] == '-') {
      return absl::StrCat(name, " needs a value (", option->get_type_name(),
                          ") but is followed by '", next, "'; write ", name, "=", next,
                          " if that is the value");
    }
    ++i;
  }
  return std::nullopt;
}

CommandLine Refuse(absl::string_view message, absl::string_view command) {
  CommandLine line;
  line.exit_code = kExitUsage;
  line.err = absl::StrCat("floodgate: ", message, "\nRun 'floodgate ", command,
                          command.empty() ? "" : " ", "--help' for the flags.\n");
  return line;
}

void AddServeFlags(CLI::App* serve, ServeText* text) {
  AddFlag(serve, "--config", &text->config, "PATH",
          "The config to serve: a YAML file, or a folder of them (one domain each); "
          "reloaded when it changes. Required.");
  AddFlag(serve, "--http", &text->http, "HOST:PORT",
          "Where the HTTP API listens (checks, health, metrics, admin); port 0 picks one.");
  AddFlag(serve, "--grpc", &text->grpc, "HOST:PORT",
          "Where the gRPC API (Envoy RLS v3) listens; port 0 picks one.");
  AddFlag(serve, "--admin-token", &text->admin_token, "TOKEN",
          "Bearer token the admin endpoints need; without it only clients on this machine may "
          "call them.");
  AddFlag(serve, "--state-dir", &text->state_dir, "DIR",
          "Where admin config changes are kept (never in the config files); default: "
          ".floodgate-state beside the config (docs/config.md).");
  serve
      ->add_flag("--allow-empty-config", text->allow_empty_config,
                 "Serve (or reload to) a config source with no domains instead of refusing it.")
      ->envname(EnvName("--allow-empty-config"));
  AddFlag(serve, "--tls-cert", &text->tls_cert, "FILE",
          "PEM certificate (then intermediates): HTTPS and gRPC over TLS on --http and --grpc; "
          "needs --tls-key (docs/tls.md).");
  AddFlag(serve, "--tls-key", &text->tls_key, "FILE",
          "PEM private key of --tls-cert (not encrypted).");
  AddFlag(serve, "--tls-client-ca", &text->tls_client_ca, "FILE",
          "PEM CA certificates: clients must present a certificate one of them signed (mTLS).");
  AddFlag(serve, "--http-threads", &text->http_threads, "N", "HTTP io threads, 1 to 256.");
  AddFlag(serve, "--grpc-impl", &text->grpc_impl, "native|grpcpp",
          "gRPC server: ours (native) or grpc++'s.");
  AddFlag(serve, "--grpc-threads", &text->grpc_threads, "N",
          "The native gRPC server's io threads, 1 to 256.");
  AddFlag(serve, "--max-connections", &text->max_connections, "N",
          "Connections at once on each front end, 1 to 10000000.");
  AddFlag(serve, "--max-connections-per-client", &text->max_connections_per_client, "N",
          "Connections at once per client address on each front end; 0: no cap.");
  AddFlag(serve, "--max-memory", &text->max_memory, "SIZE",
          "The process's memory budget (256MiB, 1GiB, 500MB or bytes): the key tables get all "
          "but a headroom; 0: no cap, else at least 64MiB.");
  AddFlag(serve, "--config-poll", &text->config_poll, "DURATION",
          "How often the config is checked for changes, 10ms to 1h.");
  AddFlag(serve, "--drain-timeout", &text->drain_timeout, "DURATION",
          "On SIGTERM/SIGINT, how long requests in flight may take to finish, 0s to 10m.");
  AddFlag(serve, "--node-id", &text->node_id, "ID", "Cluster mode: this node's id among --peers.");
  AddFlag(serve, "--peers", &text->peers, "ID=HOST:PORT,...",
          "Cluster mode (docs/cluster.md): every member, this node included.");
  AddFlag(serve, "--peer", &text->peer, "HOST:PORT",
          "Cluster mode: where to listen for peers; default: this node's entry in --peers.");
  AddFlag(serve, "--cluster-key", &text->cluster_key, "SECRET",
          "Cluster mode: the members' shared secret; every peer connection proves it both ways, "
          "and it seeds key hashing. Required in cluster mode unless --insecure-peers.");
  serve
      ->add_flag("--insecure-peers", text->insecure_peers,
                 "Cluster mode without --cluster-key: peers are checked by node id only, so "
                 "anyone who reaches the peer port can act as a member. Tests and labs only.")
      ->envname(EnvName("--insecure-peers"));
  AddFlag(serve, "--peer-tls-cert", &text->peer_tls_cert, "FILE",
          "Cluster mode: PEM certificate (then intermediates) this member presents on every peer "
          "connection, both ways: peer traffic over TLS; needs --peer-tls-key and --peer-tls-ca "
          "(docs/tls.md).");
  AddFlag(serve, "--peer-tls-key", &text->peer_tls_key, "FILE",
          "Cluster mode: PEM private key of --peer-tls-cert (not encrypted).");
  AddFlag(serve, "--peer-tls-ca", &text->peer_tls_ca, "FILE",
          "Cluster mode: PEM CA certificates every member's --peer-tls-cert must chain to.");
  AddFlag(serve, "--etcd", &text->etcd, "URL,...",
          "Cluster mode, members found through etcd v3 (docs/cluster.md): its client URLs. Each "
          "node registers --node-id and its peer address under a lease and watches the others; "
          "needs --node-id and --peer.");
  AddFlag(serve, "--etcd-prefix", &text->etcd_prefix, "PATH",
          "Where in etcd the cluster lives; default /floodgate/<--cluster-name>.");
  AddFlag(serve, "--cluster-name", &text->cluster_name, "NAME",
          "The cluster's name, for the default --etcd-prefix.");
  AddFlag(serve, "--peers-dns", &text->peers_dns, "NAME:PORT",
          "Cluster mode, members found through DNS: the A/AAAA records of NAME (a Kubernetes "
          "headless Service), each at PORT, re-resolved every 2s and when a peer fails.");
  AddFlag(serve, "--dns-server", &text->dns_server, "IP:PORT,...",
          "With --peers-dns: the DNS servers to ask; default: the system's (/etc/resolv.conf).");
  AddFlag(serve, "--advertise", &text->advertise, "HOST:PORT",
          "With --etcd or --peers-dns: the peer address the others reach this node at, when it "
          "is not --peer (a wildcard listen, NAT).");
  serve
      ->add_flag("--require-discovery", text->require_discovery,
                 "With --etcd or --peers-dns: refuse to start when the source cannot be reached "
                 "(default: serve alone on the file config, with a warning, until it can).")
      ->envname(EnvName("--require-discovery"));
  AddFlag(serve, "--replicas", &text->replicas, "N",
          "Cluster mode: nodes that hold each key, 1 to 8.");
  AddFlag(serve, "--peer-batch-delay", &text->peer_batch_delay, "DURATION",
          "Cluster mode: how long replication and consistency: local reports gather before they "
          "leave for a member, 0 to 100ms (0: at once). Longer: fewer, larger frames; a larger "
          "bound on what a failover or a local share can over-admit (docs/cluster.md). Forwarded "
          "checks never wait.");
}

void AddCheckFlags(CLI::App* check, CheckText* text) {
  AddFlag(check, "--config", &text->config, "PATH",
          "The config to decide with: a YAML file or a folder of them. Required.");
  AddFlag(check, "--domain", &text->domain, "DOMAIN", "The domain to check. Required.");
  AddFlag(check, "--hits", &text->hits, "N", "Hits to add, 0 (only read) to 1000000000.");
  check->add_option("entries", text->entries, "The descriptor's entries, in order.")
      ->type_name("KEY=VALUE");
}

}  // namespace

absl::string_view Version() { return FLOODGATE_VERSION; }

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  absl::string_view rest = absl::StripAsciiWhitespace(text);
  size_t digits = 0;
  while (digits < rest.size() && std::isdigit(static_cast<unsigned char>(rest[digits]))) {
    ++digits;
  }
  uint64_t number = 0;
  if (digits == 0 || !absl::SimpleAtoi(rest.substr(0, digits), &number)) {
    return absl::InvalidArgumentError(absl::StrCat("not a size: '", text, "'"));
  }
  std::string unit(absl::StripLeadingAsciiWhitespace(rest.substr(digits)));
  absl::AsciiStrToLower(&unit);
  struct Unit {
    absl::string_view name;
    uint64_t bytes;
  };
  static constexpr Unit kUnits[] = {
      {"", 1},
      {"b", 1},
      {"byte", 1},
      {"bytes", 1},
      {"kb", 1000},
      {"mb", 1000 * 1000},
      {"gb", 1000 * 1000 * 1000},
      {"tb", uint64_t{1000} * 1000 * 1000 * 1000},
      {"kib", uint64_t{1} << 10},
      {"mib", uint64_t{1} << 20},
      {"gib", uint64_t{1} << 30},
      {"tib", uint64_t{1} << 40},
  };
  for (const Unit& u : kUnits) {
    if (unit == u.name) {
      if (number > std::numeric_limits<uint64_t>::max() / u.bytes) {
        return absl::InvalidArgumentError(absl::StrCat("size too large: '", text, "'"));
      }
      return number * u.bytes;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown size unit '", unit, "' in '", text,
                                                 "' (B, KB, MB, GB, TB, KiB, MiB, "
                                                 "GiB, TiB)"));
}

std::string FormatByteSize(uint64_t bytes) {
  static constexpr std::pair<absl::string_view, int> kUnits[] = {
      {"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}};
  for (const auto& [name, shift] : kUnits) {
    if (bytes != 0 && bytes % (uint64_t{1} << shift) == 0) {
      return absl::StrCat(bytes >> shift, name);
    }
  }
  return absl::StrCat(bytes, bytes == 1 ? " byte" : " bytes");
}

CommandLine ParseCommandLine(int argc, const char* const* argv) {
  return ParseCommandLine(argc, argv, ProcessEnv());
}

CommandLine ParseCommandLine(int argc, const char* const* argv, const EnvGetter& envoy_env) {
  ServerOptions defaults;
  ServeText serve_text(defaults);
  std::string validate_path;
  CheckText check_text;
  EnvoyText envoy_text(defaults);
  std::string command_name;

  CLI::App app("Floodgate: a distributed rate limiter (README.md, docs/).", "floodgate");
  CLI::App* serve = nullptr;
  CLI::App* validate = nullptr;
  CLI::App* check = nullptr;
  try {  // CLI11 reports a mistake in the definitions (two flags of one name) by exception.
    app.get_formatter()->column_width(36);
    app.footer(kFooter);
    app.set_version_flag("--version", absl::StrCat("floodgate ", Version()));
    app.require_subcommand(1);
    serve = app.add_subcommand("serve", "Run a node: the HTTP and gRPC APIs.");
    validate = app.add_subcommand("validate",
                                  "Check a config (a YAML file or a folder of them) and exit.");
    check = app.add_subcommand("check", "Decide one request against a config, without a server.");
    for (CLI::App* sub : {serve, validate, check}) {
      sub->footer(kFooter);
    }
    AddServeFlags(serve, &serve_text);
    AddEnvoyFlags(serve, &envoy_text);
    validate->add_option("PATH", validate_path, "The config: a YAML file or a folder of them.")
        ->type_name("");
    AddCheckFlags(check, &check_text);
  } catch (const CLI::Error& e) {
    return Refuse(absl::StrCat("internal error in the flag definitions: ", e.what()), "");
  }

  if (std::optional<std::string> misuse = FirstMisuse(app, argc, argv, &command_name)) {
    return Refuse(*misuse, command_name);
  }
  // CLI11 reports by exceptions; they end here (house style: no throw escapes our code).
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() != 0) {
      return Refuse(e.what(), command_name);
    }
    // --help or --version: CLI11 renders them.
    std::ostringstream out;
    std::ostringstream err;
    CommandLine line;
    line.exit_code = app.exit(e, out, err);
    line.out = out.str();
    line.err = err.str();
    return line;
  }

  CommandLine line;
  absl::Status status;
  if (serve->parsed()) {
    line.kind = CommandLine::Kind::kServe;
    status = ApplyEnvoyEnv(serve, envoy_env);
    if (status.ok()) {
      status = ToEnvoy(envoy_text, &line.serve.options);
    }
    if (status.ok()) {
      status = ToServe(serve_text, &line.serve);
    }
  } else if (validate->parsed()) {
    line.kind = CommandLine::Kind::kValidate;
    line.validate.path = validate_path;
    if (validate_path.empty()) {
      status = absl::InvalidArgumentError(
          "validate needs a PATH: the YAML file or folder of them to check");
    }
  } else {
    line.kind = CommandLine::Kind::kCheck;
    status = ToCheck(check_text, &line.check);
  }
  if (!status.ok()) {
    return Refuse(status.message(), command_name);
  }
  return line;
}

}  // namespace floodgate::server
