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
#include "src/server/envoy_flags.h"
#include "src/server/flag_helpers.h"
#include "src/server/store_flags.h"

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
      cluster_key, replicas, state_dir, tls_cert, tls_key, tls_client_ca, tls_client_san,
      peer_batch_delay, peer_tls_cert, peer_tls_key, peer_tls_ca, etcd, etcd_prefix,
      cluster_name = "default", advertise, peers_dns, dns_server, log_format = "plain",
      log_level = "info";
  bool allow_empty_config = false;
  bool insecure_peers = false;
  bool require_discovery = false;
};

struct CheckText {
  std::string config, domain, hits = "1";
  std::vector<std::string> entries;
};

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
  if (!text.tls_client_san.empty() && text.tls_client_ca.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-san needs --tls-client-ca (the name is checked on client certificates, "
        "which only mTLS asks for)");
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
  if (!common::ParseLogFormat(text.log_format, &serve->log_format)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format must be plain or json (got '", text.log_format, "')"));
  }
  if (!common::ParseLogLevel(text.log_level, &serve->log_level)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-level must be info, warn or error (got '", text.log_level, "')"));
  }
  FG_RETURN_IF_ERROR(CheckTls(text));
  options.tls = {.cert_file = text.tls_cert,
                 .key_file = text.tls_key,
                 .client_ca_file = text.tls_client_ca,
                 .client_san = text.tls_client_san};
  // grpc++'s server cannot check a client's SAN (frontends/grpc/grpc_service.h): say so now.
  const std::string& grpc_san =
      options.grpc_tls.cert_file.empty() ? options.tls.client_san : options.grpc_tls.client_san;
  if (options.grpc_impl == "grpcpp" && !grpc_san.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.grpc_tls.cert_file.empty() ? "--tls-client-san"
                                           : "--grpc-tls-client-san (Envoy's GRPC_CLIENT_TLS_SAN)",
        " needs the native gRPC server: grpc++'s (--grpc-impl grpcpp) cannot check "
        "a client certificate's SAN"));
  }
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
          "PEM certificate (then intermediates): HTTPS and gRPC over TLS on --http and --grpc "
          "(--grpc-tls-* replace them on --grpc); needs --tls-key (docs/tls.md).");
  AddFlag(serve, "--tls-key", &text->tls_key, "FILE",
          "PEM private key of --tls-cert (not encrypted).");
  AddFlag(serve, "--tls-client-ca", &text->tls_client_ca, "FILE",
          "PEM CA certificates: clients must present a certificate one of them signed (mTLS).");
  AddFlag(serve, "--tls-client-san", &text->tls_client_san, "NAME",
          "With --tls-client-ca: the DNS name (or IP) a client certificate must carry as a "
          "subject alternative name; others fail the handshake.");
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
  AddFlag(serve, "--log-format", &text->log_format, "plain|json",
          "The log on stderr: one line per event, as `TIME LEVEL event key=value ...` (plain) or "
          "one JSON object (json); docs/operations.md.");
  AddFlag(serve, "--log-level", &text->log_level, "info|warn|error",
          "The lowest level of the events logged.");
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
  StoreText store_text(defaults);
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
    AddStoreFlags(serve, &store_text);
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
    if (status.ok()) {
      status = ToStore(store_text, &line.serve.options);  // after ToServe: it knows cluster mode
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
