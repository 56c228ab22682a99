#include "src/server/envoy_env.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "floodgate/status_macros.h"

namespace floodgate::server {
namespace {

// Envoy's defaults, used when a row's variables are set only in part (PORT without HOST).
constexpr char kEnvoyHost[] = "0.0.0.0";
constexpr char kEnvoyHttpPort[] = "8080";
constexpr char kEnvoyGrpcPort[] = "8081";
constexpr char kEnvoyRuntimeRoot[] = "/srv/runtime_data/current";
constexpr char kEnvoyAppDirectory[] = "config";
constexpr char kEnvoyXdsServer[] = "localhost:18000";
constexpr char kEnvoyStatsdHost[] = "localhost";
constexpr char kEnvoyStatsdPort[] = "8125";
// --refusal-cache-slots' bound (flags.cc): 2^30 slots of 24 bytes, 24GiB.
constexpr uint64_t kMaxRefusalSlots = uint64_t{1} << 30;

// A row's view of the environment: what it read, for EnvoyValue::from.
class Vars {
 public:
  Vars(const EnvGetter& env, absl::FunctionRef<bool(absl::string_view flag)> given)
      : env_(env), given_(given) {}

  std::optional<std::string> Get(const char* name) {
    std::optional<std::string> value = env_(name);
    if (value.has_value() && value->empty()) {
      value.reset();
    }
    if (value.has_value()) {
      read_.push_back(absl::StrCat(name, "=", *value));
    }
    return value;
  }
  bool any() const { return !read_.empty(); }
  std::string from() const { return absl::StrJoin(read_, ", "); }
  // Returns whether the flag was given our ways (its row, and Envoy's variables for it, skipped).
  bool Given(absl::string_view flag) const { return given_(flag); }

 private:
  const EnvGetter& env_;
  absl::FunctionRef<bool(absl::string_view flag)> given_;
  std::vector<std::string> read_;
};

absl::Status Bad(absl::string_view name, absl::string_view value, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(name, "=", value, ": ", why));
}

// A converter: the flag's text from the row's variables, or nullopt when none is set.
using Convert = std::function<absl::StatusOr<std::optional<std::string>>(Vars&)>;

struct Row {
  std::string flag;  // empty: the variables are only checked (no flag of ours to set)
  Convert convert;
};

absl::StatusOr<bool> BoolVar(const char* name, const std::string& value) {
  absl::StatusOr<bool> b = ParseGoBool(value);
  if (!b.ok()) {
    return Bad(name, value, "not a boolean (true, false, 1, 0, t, f)");
  }
  return *b;
}

Row BoolRow(std::string flag, const char* name) {
  return {std::move(flag), [name](Vars& v) -> absl::StatusOr<std::optional<std::string>> {
            std::optional<std::string> value = v.Get(name);
            if (!value.has_value()) {
              return std::nullopt;
            }
            FG_ASSIGN_OR_RETURN(bool b, BoolVar(name, *value));
            return std::string(b ? "true" : "false");
          }};
}

Row TextRow(std::string flag, const char* name) {
  return {std::move(flag),
          [name](Vars& v) -> absl::StatusOr<std::optional<std::string>> { return v.Get(name); }};
}

Row DurationRow(std::string flag, const char* name) {
  return {std::move(flag), [name](Vars& v) -> absl::StatusOr<std::optional<std::string>> {
            std::optional<std::string> value = v.Get(name);
            if (!value.has_value()) {
              return std::nullopt;
            }
            absl::StatusOr<absl::Duration> d = ParseGoDuration(*value);
            if (!d.ok()) {
              return Bad(name, *value, "not a duration (such as 10s, 1m30s, 500ms)");
            }
            return absl::FormatDuration(*d);
          }};
}

// HOST:PORT from two variables, each defaulting to Envoy's default when the other is set.
absl::StatusOr<std::string> JoinHostPort(Vars& v, const char* host_name, const char* port_name,
                                         absl::string_view default_port) {
  const std::optional<std::string> host = v.Get(host_name);
  const std::optional<std::string> port = v.Get(port_name);
  uint32_t number = 0;
  if (port.has_value() && (!absl::SimpleAtoi(*port, &number) || number > 65535 ||
                           !absl::ascii_isdigit(static_cast<unsigned char>((*port)[0])))) {
    return Bad(port_name, *port, "not a port number (0 to 65535)");
  }
  const std::string h = host.value_or(kEnvoyHost);
  const std::string p = port.has_value() ? absl::StrCat(number) : std::string(default_port);
  // An IPv6 address gets its brackets, as Go's net.JoinHostPort gives them.
  if (h.find(':') != std::string::npos && h.front() != '[') {
    return absl::StrCat("[", h, "]:", p);
  }
  return absl::StrCat(h, ":", p);
}

Row AddressRow(std::string flag, const char* host_name, const char* port_name,
               const char* default_port) {
  return {std::move(flag), [=](Vars& v) -> absl::StatusOr<std::optional<std::string>> {
            FG_ASSIGN_OR_RETURN(std::string address,
                                JoinHostPort(v, host_name, port_name, default_port));
            if (!v.any()) {
              return std::nullopt;
            }
            return address;
          }};
}

// GRPC_SERVER_USE_TLS=true turns TLS on the gRPC port alone on, with GRPC_SERVER_TLS_CERT and
// _KEY (required, as Envoy exits without them), GRPC_CLIENT_TLS_CACERT (mTLS) and
// GRPC_CLIENT_TLS_SAN (the name a client certificate must carry). Unset or false, Envoy reads
// none of the four, and neither do we. Returns the row of `flag`, made from the variable `name`.
Row GrpcTlsRow(std::string flag, const char* name) {
  return {
      std::move(flag), [name](Vars& v) -> absl::StatusOr<std::optional<std::string>> {
        const std::optional<std::string> use = v.Get("GRPC_SERVER_USE_TLS");
        if (!use.has_value()) {
          return std::nullopt;
        }
        FG_ASSIGN_OR_RETURN(bool on, BoolVar("GRPC_SERVER_USE_TLS", *use));
        if (!on) {
          return std::nullopt;
        }
        std::optional<std::string> value = v.Get(name);
        const absl::string_view var = name;
        if (!value.has_value() && (var == "GRPC_SERVER_TLS_CERT" || var == "GRPC_SERVER_TLS_KEY")) {
          return Bad("GRPC_SERVER_USE_TLS", *use,
                     absl::StrCat("needs ", name,
                                  " (GRPC_SERVER_TLS_CERT and GRPC_SERVER_TLS_KEY: the "
                                  "server's certificate chain and key)"));
        }
        // Envoy asks for client certificates only with a CA, so a SAN alone checks nothing
        // there; refused here rather than let in every client.
        if (value.has_value() && var == "GRPC_CLIENT_TLS_SAN" && !v.Given("--grpc-tls-client-ca") &&
            !v.Get("GRPC_CLIENT_TLS_CACERT").has_value()) {
          return Bad(name, *value,
                     "needs GRPC_CLIENT_TLS_CACERT: the name is checked on client "
                     "certificates, which are asked for only with a client CA");
        }
        return value;
      }};
}

// Percent-encodes what a URL's user or password may not hold as is.
std::string UrlEscape(absl::string_view text) {
  std::string out;
  for (const char c : text) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
        c == '~') {
      out.push_back(c);
    } else {
      absl::StrAppend(&out, "%", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
    }
  }
  return out;
}

// --store from BACKEND_TYPE, REDIS_SOCKET_TYPE, REDIS_TYPE, REDIS_URL, REDIS_AUTH, REDIS_TLS and
// its files: envoyproxy/ratelimit's Redis, as one of our store URLs (docs/backends.md). Read
// when REDIS_URL is set (Envoy's default, a unix socket of nutcracker's, is not one we reach).
absl::StatusOr<std::optional<std::string>> EnvoyStore(Vars& v) {
  const std::optional<std::string> backend = v.Get("BACKEND_TYPE");
  if (backend.has_value() && absl::AsciiStrToLower(*backend) != "redis") {
    return Bad("BACKEND_TYPE", *backend,
               "only redis is supported (or leave it unset for Floodgate's own store)");
  }
  if (const std::optional<std::string> per_second = v.Get("REDIS_PERSECOND")) {
    FG_ASSIGN_OR_RETURN(const bool on, BoolVar("REDIS_PERSECOND", *per_second));
    if (on) {
      return Bad("REDIS_PERSECOND", *per_second,
                 "a second Redis for per-second limits is not supported: one Redis (or Redis "
                 "Cluster) takes every limit");
    }
  }
  const std::optional<std::string> url = v.Get("REDIS_URL");
  if (!url.has_value()) {
    if (backend.has_value()) {
      return Bad("BACKEND_TYPE", *backend, "needs REDIS_URL (HOST:PORT)");
    }
    return std::nullopt;
  }
  if (const std::optional<std::string> socket = v.Get("REDIS_SOCKET_TYPE");
      socket.has_value() && absl::AsciiStrToLower(*socket) != "tcp") {
    return Bad("REDIS_SOCKET_TYPE", *socket, "only tcp is supported (REDIS_URL=HOST:PORT)");
  }
  if (absl::StartsWith(*url, "/")) {
    return Bad("REDIS_URL", *url, "a unix socket is not supported: give HOST:PORT");
  }
  const std::string type = absl::AsciiStrToUpper(v.Get("REDIS_TYPE").value_or("SINGLE"));
  std::string user_info;
  if (const std::optional<std::string> auth = v.Get("REDIS_AUTH")) {
    const size_t colon = auth->find(':');  // "password" or "user:password", as Envoy reads it
    user_info = colon == std::string::npos ? absl::StrCat(":", UrlEscape(*auth), "@")
                                           : absl::StrCat(UrlEscape(auth->substr(0, colon)), ":",
                                                          UrlEscape(auth->substr(colon + 1)), "@");
  }
  bool tls = false;
  if (const std::optional<std::string> use_tls = v.Get("REDIS_TLS")) {
    FG_ASSIGN_OR_RETURN(tls, BoolVar("REDIS_TLS", *use_tls));
  }
  std::string query;
  if (tls) {
    const std::optional<std::string> ca = v.Get("REDIS_TLS_CACERT");
    if (!ca.has_value()) {
      return Bad("REDIS_TLS", "true",
                 "needs REDIS_TLS_CACERT (the CA Redis' certificate is "
                 "checked against)");
    }
    absl::StrAppend(&query, "?tls=true&tls_ca=", *ca);
    if (const std::optional<std::string> cert = v.Get("REDIS_TLS_CLIENT_CERT")) {
      absl::StrAppend(&query, "&tls_cert=", *cert);
    }
    if (const std::optional<std::string> key = v.Get("REDIS_TLS_CLIENT_KEY")) {
      absl::StrAppend(&query, "&tls_key=", *key);
    }
  }
  if (type == "SINGLE") {
    return absl::StrCat(tls ? "rediss://" : "redis://", user_info, *url, query);
  }
  if (type == "CLUSTER") {
    return absl::StrCat("redis-cluster://", user_info, *url, query);
  }
  if (type == "SENTINEL") {
    // "MASTER,HOST:PORT,HOST:PORT...": the master's name, then the sentinels.
    const size_t comma = url->find(',');
    if (comma == std::string::npos || comma == 0) {
      return Bad("REDIS_URL", *url, "with REDIS_TYPE=SENTINEL, give MASTER,HOST:PORT[,HOST:PORT]");
    }
    return absl::StrCat("redis-sentinel://", user_info, url->substr(comma + 1), "/",
                        url->substr(0, comma), query);
  }
  return Bad("REDIS_TYPE", type, "not one of SINGLE, SENTINEL, CLUSTER");
}

// The rows, in the order their values are applied. docs/config.md, "Envoy's switches", says
// the same for operators; keep them in step.
const std::vector<Row>& Table() {
  static const std::vector<Row>* const kTable = new std::vector<Row>{
      AddressRow("--http", "HOST", "PORT", kEnvoyHttpPort),
      AddressRow("--grpc", "GRPC_HOST", "GRPC_PORT", kEnvoyGrpcPort),
      {"",
       [](Vars& v) -> absl::StatusOr<std::optional<std::string>> {
         if (std::optional<std::string> uds = v.Get("GRPC_UDS")) {
           return Bad("GRPC_UDS", *uds,
                      "gRPC on a unix socket is not supported; use GRPC_HOST and GRPC_PORT "
                      "(or --grpc)");
         }
         return std::nullopt;
       }},
      // The config directory: <RUNTIME_ROOT>/<RUNTIME_SUBDIRECTORY>/<RUNTIME_APPDIRECTORY>.
      {"--config",
       [](Vars& v) -> absl::StatusOr<std::optional<std::string>> {
         const std::optional<std::string> root = v.Get("RUNTIME_ROOT");
         const std::optional<std::string> sub = v.Get("RUNTIME_SUBDIRECTORY");
         const std::optional<std::string> app = v.Get("RUNTIME_APPDIRECTORY");
         if (!v.any()) {
           return std::nullopt;
         }
         // Joined as Go's filepath.Join does: a part starting with '/' does not restart the path.
         const std::string path =
             absl::StrCat(root.value_or(kEnvoyRuntimeRoot), "/", sub.value_or(""), "/",
                          app.value_or(kEnvoyAppDirectory));
         return std::filesystem::path(path).lexically_normal().string();
       }},
      // Checked only: our loader always skips hidden files and always polls the path (through
      // any symlink), which covers both of RUNTIME_WATCH_ROOT's modes.
      {"",
       [](Vars&
              v) -> absl::
                     StatusOr<std::optional<std::string>> {
                       for (const char* name : {"RUNTIME_IGNOREDOTFILES", "RUNTIME_WATCH_ROOT"}) {
                         if (std::optional<std::string> value = v.Get(name)) {
                           FG_RETURN_IF_ERROR(BoolVar(name, *value).status());
                         }
                       }
                       return std::nullopt;
                     }},
      BoolRow("--shadow-mode", "SHADOW_MODE"),
      BoolRow("--quota-mode", "QUOTA_MODE"),
      BoolRow("--response-dynamic-metadata", "RESPONSE_DYNAMIC_METADATA"),
      {"--near-limit-ratio",
       [](Vars& v) -> absl::
                       StatusOr<std::optional<std::string>> {
                         std::optional<std::string> value = v.Get("NEAR_LIMIT_RATIO");
                         if (!value.has_value()) {
                           return std::nullopt;
                         }
                         double ratio = 0;
                         if (!absl::SimpleAtod(*value, &ratio)) {
                           return Bad("NEAR_LIMIT_RATIO", *value, "not a number");
                         }
                         if (!(ratio >= 0 && ratio <= 1)) {
                           return Bad("NEAR_LIMIT_RATIO", *value, "must be from 0 to 1");
                         }
                         return absl::StrCat(ratio);
                       }},
      BoolRow("--limit-response-headers", "LIMIT_RESPONSE_HEADERS_ENABLED"),
      TextRow("--limit-limit-header", "LIMIT_LIMIT_HEADER"),
      TextRow("--limit-remaining-header", "LIMIT_REMAINING_HEADER"),
      TextRow("--limit-reset-header", "LIMIT_RESET_HEADER"),
      // Envoy's local cache of over-limit keys is our over-limit fast path. Set, its size in
      // bytes becomes slots of 24 bytes (0: off, as in Envoy); unset, ours stays on at its
      // default size (Envoy's default, 0, is not taken to mean "off" here).
      {"--refusal-cache-slots",
       [](Vars& v)
           -> absl::
               StatusOr<std::optional<std::string>> {
                 std::optional<std::string> value = v.Get("LOCAL_CACHE_SIZE_IN_BYTES");
                 if (!value.has_value()) {
                   return std::nullopt;
                 }
                 uint64_t bytes = 0;
                 if (!absl::ascii_isdigit(static_cast<unsigned char>((*value)[0])) ||
                     !absl::SimpleAtoi(*value, &bytes)) {
                   return Bad("LOCAL_CACHE_SIZE_IN_BYTES", *value, "not a whole number of bytes");
                 }
                 const uint64_t slots = bytes / kRefusalSlotBytes;
                 if (slots > kMaxRefusalSlots) {
                   return Bad("LOCAL_CACHE_SIZE_IN_BYTES", *value,
                              absl::StrCat("at most ", kMaxRefusalSlots * kRefusalSlotBytes,
                                           " bytes (2^30 slots of 24 bytes)"));
                 }
                 return absl::StrCat(bytes != 0 && slots == 0 ? 1 : slots);
               }},
      BoolRow("--healthy-with-config", "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED"),
      BoolRow("--allow-empty-config", "FORCE_START_WITHOUT_INITIAL_CONFIG"),
      {"",
       [](Vars& v)
           -> absl::
               StatusOr<std::optional<std::string>> {
                 if (std::optional<std::string> value = v.Get("MERGE_DOMAIN_CONFIG")) {
                   FG_ASSIGN_OR_RETURN(bool merge, BoolVar("MERGE_DOMAIN_CONFIG", *value));
                   if (merge) {
                     return Bad(
                         "MERGE_DOMAIN_CONFIG", *value,
                         "not supported: a domain must be defined in one file (a domain in two "
                         "files is refused); merge them, then unset it");
                   }
                 }
                 return std::nullopt;
               }},
      // CONFIG_TYPE=GRPC_XDS_SOTW: the config comes from the xDS server.
      {
          "--xds-server",
          [](Vars& v) -> absl::
                          StatusOr<std::optional<std::string>> {
                            const std::optional<std::string> type = v.Get("CONFIG_TYPE");
                            if (!type.has_value() || *type == "FILE") {
                              return std::nullopt;
                            }
                            if (*type != "GRPC_XDS_SOTW") {
                              return Bad("CONFIG_TYPE", *type, "must be FILE or GRPC_XDS_SOTW");
                            }
                            return v.Get("CONFIG_GRPC_XDS_SERVER_URL").value_or(kEnvoyXdsServer);
                          }},
      TextRow("--xds-node-id", "CONFIG_GRPC_XDS_NODE_ID"),
      // "k1=v1,k2=v2". As Envoy, an entry without '=' is skipped (its own example "key1:val1"
      // is one), and the value is what follows the first '='; so is one with an empty key.
      {"--xds-node-metadata",
       [](Vars& v)
           -> absl::
               StatusOr<std::optional<std::string>> {
                 std::optional<std::string> value = v.Get("CONFIG_GRPC_XDS_NODE_METADATA");
                 if (!value.has_value()) {
                   return std::nullopt;
                 }
                 std::vector<std::string> kept;
                 for (absl::string_view entry : absl::StrSplit(*value, ',')) {
                   const size_t eq = entry.find('=');
                   if (eq != absl::string_view::npos && eq > 0) {  // Envoy would keep an empty key
                     kept.emplace_back(entry);
                   }
                 }
                 return absl::StrJoin(kept, ",");
               }},
      DurationRow("--xds-initial-backoff", "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL"),
      DurationRow("--xds-max-backoff", "XDS_CLIENT_BACKOFF_MAX_INTERVAL"),
      // XDS_CLIENT_BACKOFF_JITTER=false is no jitter; else RANDOM_FACTOR is its size.
      {"--xds-backoff-jitter",
       [](Vars& v)
           -> absl::
               StatusOr<std::optional<std::string>> {
                 if (std::optional<std::string> jitter = v.Get("XDS_CLIENT_BACKOFF_JITTER")) {
                   FG_ASSIGN_OR_RETURN(bool on, BoolVar("XDS_CLIENT_BACKOFF_JITTER", *jitter));
                   if (!on) {
                     return std::string("0");
                   }
                 }
                 return v.Get("XDS_CLIENT_BACKOFF_RANDOM_FACTOR");
               }},
      BoolRow("--xds-tls", "CONFIG_GRPC_XDS_SERVER_USE_TLS"),
      TextRow("--xds-tls-ca", "CONFIG_GRPC_XDS_SERVER_TLS_CACERT"),
      TextRow("--xds-tls-cert", "CONFIG_GRPC_XDS_CLIENT_TLS_CERT"),
      TextRow("--xds-tls-key", "CONFIG_GRPC_XDS_CLIENT_TLS_KEY"),
      TextRow("--xds-tls-server-name", "CONFIG_GRPC_XDS_SERVER_TLS_SAN"),
      // Envoy sends statsd to localhost:8125 unless USE_STATSD=false; we send it only when asked:
      // USE_STATSD=true, or STATSD_HOST or STATSD_PORT set (and USE_STATSD not false).
      {
          "--statsd",
          [](Vars& v) -> absl::
                          StatusOr<std::optional<std::string>> {
                            bool use = false;
                            const std::optional<std::string> flag = v.Get("USE_STATSD");
                            if (flag.has_value()) {
                              FG_ASSIGN_OR_RETURN(use, BoolVar("USE_STATSD", *flag));
                            }
                            const std::optional<std::string> host = v.Get("STATSD_HOST");
                            const std::optional<std::string> port = v.Get("STATSD_PORT");
                            if (flag.has_value() ? !use : !host.has_value() && !port.has_value()) {
                              return std::nullopt;
                            }
                            uint32_t number = 0;
                            if (port.has_value() && (!absl::SimpleAtoi(*port, &number) ||
                                                     number == 0 || number > 65535)) {
                              return Bad("STATSD_PORT", *port, "not a port number (1 to 65535)");
                            }
                            const std::string h = host.value_or(kEnvoyStatsdHost);
                            const std::string p =
                                port.has_value() ? absl::StrCat(number) : kEnvoyStatsdPort;
                            return h.find(':') != std::string::npos ? absl::StrCat("[", h, "]:", p)
                                                                    : absl::StrCat(h, ":", p);
                          }},
      DurationRow("--statsd-flush-interval", "STATS_FLUSH_INTERVAL"),
      // envoyproxy/ratelimit's Redis: its fixed windows are counted under its own keys there.
      {"--store", EnvoyStore},
      {"--store-envoy-keys",
       [](Vars& v) -> absl::
                       StatusOr<std::optional<std::string>> {
                         if (v.Given("--store") || !v.Get("REDIS_URL").has_value()) {
                           return std::nullopt;  // only with the Redis Envoy's variables name
                         }
                         return std::string("true");
                       }},
      TextRow("--store-envoy-prefix", "CACHE_KEY_PREFIX"),
      GrpcTlsRow("--grpc-tls-cert", "GRPC_SERVER_TLS_CERT"),
      GrpcTlsRow("--grpc-tls-key", "GRPC_SERVER_TLS_KEY"),
      GrpcTlsRow("--grpc-tls-client-ca", "GRPC_CLIENT_TLS_CACERT"),
      GrpcTlsRow("--grpc-tls-client-san", "GRPC_CLIENT_TLS_SAN"),
  };
  return *kTable;
}

}  // namespace

EnvGetter ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) {
      return std::nullopt;
    }
    return std::string(value);
  };
}

absl::StatusOr<std::vector<EnvoyValue>> ReadEnvoyEnv(
    const EnvGetter& env, absl::FunctionRef<bool(absl::string_view flag)> given) {
  std::vector<EnvoyValue> values;
  for (const Row& row : Table()) {
    if (!row.flag.empty() && given(row.flag)) {
      continue;
    }
    Vars vars(env, given);
    FG_ASSIGN_OR_RETURN(std::optional<std::string> text, row.convert(vars));
    if (text.has_value() && !row.flag.empty()) {
      values.push_back(EnvoyValue{row.flag, *std::move(text), vars.from()});
    }
  }
  return values;
}

std::vector<std::string> EnvoyEnvFlags() {
  std::vector<std::string> flags;
  for (const Row& row : Table()) {
    if (!row.flag.empty()) {
      flags.push_back(row.flag);
    }
  }
  return flags;
}

absl::StatusOr<absl::Duration> ParseGoDuration(absl::string_view text) {
  // Go's syntax is abseil's (which also takes "inf", which Go does not), but for the micro sign.
  std::string ascii = absl::StrReplaceAll(text, {{"\xC2\xB5s", "us"}, {"\xCE\xBCs", "us"}});
  absl::Duration d;
  if (ascii.empty() || absl::StrContains(ascii, "inf") || !absl::ParseDuration(ascii, &d)) {
    return absl::InvalidArgumentError(absl::StrCat("not a duration: '", text, "'"));
  }
  return d;
}

absl::StatusOr<std::map<std::string, std::string>> ParseKeyValues(absl::string_view flag,
                                                                  absl::string_view text) {
  std::map<std::string, std::string> values;
  if (text.empty()) {
    return values;
  }
  for (absl::string_view entry : absl::StrSplit(text, ',')) {
    const size_t eq = entry.find('=');
    if (eq == 0 || eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " must be KEY=VALUE,... (got the entry '", entry, "')"));
    }
    values[std::string(entry.substr(0, eq))] = std::string(entry.substr(eq + 1));
  }
  return values;
}

absl::Status CheckHeaderName(absl::string_view flag, absl::string_view name) {
  const bool token = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
           absl::string_view("!#$%&'*+-.^_`|~").find(c) != absl::string_view::npos;
  });
  if (!token) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " must be an HTTP header name (got '", name, "')"));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> ParseGoBool(absl::string_view text) {
  for (absl::string_view t : {"1", "t", "T", "TRUE", "true", "True"}) {
    if (text == t) {
      return true;
    }
  }
  for (absl::string_view f : {"0", "f", "F", "FALSE", "false", "False"}) {
    if (text == f) {
      return false;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("not a boolean: '", text, "'"));
}

}  // namespace floodgate::server
