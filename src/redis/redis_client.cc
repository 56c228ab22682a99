// The --store URL, Redis Cluster's hash slot, and NewClient with the single-server client (one
// Node on one io thread). Sentinel and Cluster clients live in their own files.

#include "src/redis/redis_client.h"

#include <array>
#include <limits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "src/common/host_port.h"
#include "src/common/text.h"
#include "src/net/io_threads.h"
#include "src/redis/redis_client_internal.h"
#include "src/redis/redis_node.h"

namespace floodgate::redis {
namespace {

using common::AbslView;

constexpr uint16_t kRedisPort = 6379;
constexpr uint16_t kSentinelPort = 26379;

// Decodes %XX escapes; InvalidArgument naming `what` for a broken one.
absl::StatusOr<std::string> PercentDecode(std::string_view text, std::string_view what) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    int value = 0;
    for (size_t j = 1; j <= 2; ++j) {
      const char c = i + j < text.size() ? text[i + j] : '\0';
      int digit = -1;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        digit = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        digit = c - 'A' + 10;
      }
      if (digit < 0) {
        return absl::InvalidArgumentError(absl::StrCat("store URL: bad percent escape in the ",
                                                       AbslView(what), " (expected %XX)"));
      }
      value = value * 16 + digit;
    }
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  return out;
}

// Parses "host:port", "host", "[v6]:port" or "[v6]".
absl::StatusOr<Endpoint> ParseEndpoint(std::string_view text, uint16_t default_port) {
  Endpoint endpoint;
  endpoint.port = default_port;
  const size_t bracket = text.rfind(']');
  const size_t colon = text.rfind(':');
  const bool has_port =
      colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket);
  if (text.empty()) {
    return absl::InvalidArgumentError("store URL: an empty host");
  }
  if (has_port) {
    absl::Status split = common::SplitHostPort(text, endpoint.host, endpoint.port);
    if (!split.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("store URL: bad address '", AbslView(text), "': ", split.message()));
    }
    if (endpoint.port == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("store URL: port 0 in '", AbslView(text), "'"));
    }
  } else if (text.front() == '[' && text.back() == ']') {
    endpoint.host = std::string(text.substr(1, text.size() - 2));
  } else if (bracket != std::string_view::npos || text.find('[') != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("store URL: bad address '", AbslView(text), "'"));
  } else {
    endpoint.host = std::string(text);
  }
  if (endpoint.host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("store URL: no host in '", AbslView(text), "'"));
  }
  return endpoint;
}

absl::Status ParseDb(std::string_view text, int& db) {
  if (!absl::SimpleAtoi(AbslView(text), &db) || db < 0 || db > 1'000'000 || text.front() == '+') {
    return absl::InvalidArgumentError(
        absl::StrCat("store URL: the database '", AbslView(text), "' is not a number from 0"));
  }
  return absl::OkStatus();
}

absl::Status ParsePositive(std::string_view name, std::string_view text, int64_t max,
                           int64_t& value) {
  if (!absl::SimpleAtoi(AbslView(text), &value) || value < 1 || value > max) {
    return absl::InvalidArgumentError(absl::StrCat("store URL: ", AbslView(name), "=",
                                                   AbslView(text),
                                                   " is not a whole number from 1 to ", max));
  }
  return absl::OkStatus();
}

absl::Status ApplyQuery(std::string_view query, ClientOptions& options) {
  for (absl::string_view absl_pair : absl::StrSplit(AbslView(query), '&', absl::SkipEmpty())) {
    const std::string_view pair = common::StdView(absl_pair);
    const size_t eq = pair.find('=');
    const std::string_view name = pair.substr(0, eq);
    if (eq == std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("store URL: query parameter '", AbslView(name),
                                                     "' has no value (name=value)"));
    }
    absl::StatusOr<std::string> value = PercentDecode(pair.substr(eq + 1), name);
    if (!value.ok()) {
      return value.status();
    }
    int64_t number = 0;
    absl::Status status;
    if (name == "timeout_ms") {
      status = ParsePositive(name, *value, 3'600'000, number);
      options.timeout_ms = number;
    } else if (name == "connect_timeout_ms") {
      status = ParsePositive(name, *value, 3'600'000, number);
      options.connect_timeout_ms = number;
    } else if (name == "connections") {
      status = ParsePositive(name, *value, 64, number);
      options.connections_per_node = static_cast<int>(number);
    } else if (name == "max_pending") {
      status = ParsePositive(name, *value, 100'000'000, number);
      options.max_pending_per_node = static_cast<int>(number);
    } else if (name == "tls") {  // TLS to Sentinels or cluster nodes; rediss:// says it alone
      if (*value != "true" && *value != "false") {
        return absl::InvalidArgumentError(
            absl::StrCat("store URL: tls=", AbslView(*value), " is not true or false"));
      }
      if (*value == "false" && options.tls) {
        return absl::InvalidArgumentError("store URL: rediss:// is TLS; tls=false contradicts it");
      }
      options.tls = *value == "true";
    } else if (name == "tls_ca") {
      options.tls_ca_file = *value;
    } else if (name == "tls_cert") {
      options.tls_cert_file = *value;
    } else if (name == "tls_key") {
      options.tls_key_file = *value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "store URL: unknown query parameter '", AbslView(name),
          "' (known: timeout_ms, connect_timeout_ms, connections, max_pending, tls, tls_ca, "
          "tls_cert, tls_key)"));
    }
    if (!status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

// One Node on one io thread.
class SingleClient : public Client {
 public:
  explicit SingleClient(const ClientOptions& options) : io_(net::IoModel::kShared, 1) {
    io_.Start();
    node_ = std::make_unique<Node>(io_.context(0), options.endpoints.front(), options);
  }
  ~SingleClient() override { Stop(); }

  void Send(absl::Span<const std::string_view> args, std::string_view /*slot_key*/,
            Callback callback) override {
    {
      absl::ReaderMutexLock lock(&mu_);
      if (!stopped_) {
        node_->Send(args, std::move(callback));
        return;
      }
    }
    // No io thread is left to run it: the one case where a callback runs inline.
    std::move(callback)(absl::CancelledError("redis client stopped"));
  }

  bool Healthy() const override { return node_->Healthy(); }

  ClientStats GetStats() const override {
    ClientStats stats;
    node_->AddStats(stats);
    return stats;
  }

  // Not from a callback (it joins the io thread). The lock is released before the node stops:
  // a callback that sends again then finds `stopped_` instead of waiting on the lock.
  void Stop() override {
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) {
        return;
      }
      stopped_ = true;
    }
    // No Send reaches the node any more (each held the lock while handing over its command).
    node_->Stop();  // fails what is pending (Cancelled) on the io thread
    io_.Stop();
  }

 private:
  net::IoThreads io_;
  std::unique_ptr<Node> node_;
  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

absl::Status CheckOptions(const ClientOptions& options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("redis client: no address");
  }
  if (options.mode == ClientOptions::Mode::kSingle && options.endpoints.size() != 1) {
    return absl::InvalidArgumentError("redis client: one address for a single server");
  }
  if (options.mode == ClientOptions::Mode::kSentinel && options.master_name.empty()) {
    return absl::InvalidArgumentError("redis client: Sentinel needs the master's name");
  }
  if (options.mode == ClientOptions::Mode::kCluster && options.db != 0) {
    return absl::InvalidArgumentError("redis client: Redis Cluster has database 0 only");
  }
  if (options.timeout_ms < 1 || options.connect_timeout_ms < 1 ||
      options.connections_per_node < 1 || options.max_pending_per_node < 1 || options.db < 0 ||
      options.reconnect_min_ms < 1 || options.reconnect_max_ms < options.reconnect_min_ms ||
      options.breaker_open_ms < 0 || options.io_threads < 1) {
    return absl::InvalidArgumentError(
        "redis client: timeouts, connections, max_pending, reconnect delays and io_threads must "
        "be positive (reconnect_max_ms at least reconnect_min_ms), db and breaker_open_ms not "
        "negative");
  }
  if (options.tls) {
    absl::StatusOr<std::unique_ptr<net::TlsContext>> tls = MakeRedisTlsContext(options);
    if (!tls.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("redis client: ", tls.status().message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ClientOptions> ParseStoreUrl(std::string_view url) {
  ClientOptions options;
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("store URL '", AbslView(url),
                     "' has no scheme (redis://, rediss://, redis-sentinel://, redis-cluster://)"));
  }
  const std::string_view scheme = url.substr(0, scheme_end);
  if (scheme == "redis") {
    options.mode = ClientOptions::Mode::kSingle;
  } else if (scheme == "rediss") {
    options.mode = ClientOptions::Mode::kSingle;
    options.tls = true;
  } else if (scheme == "redis-sentinel") {
    options.mode = ClientOptions::Mode::kSentinel;
  } else if (scheme == "redis-cluster") {
    options.mode = ClientOptions::Mode::kCluster;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("store URL: unknown scheme '", AbslView(scheme),
                     "://' (redis://, rediss://, redis-sentinel://, redis-cluster://)"));
  }
  std::string_view rest = url.substr(scheme_end + 3);
  if (rest.find('#') != std::string_view::npos) {
    return absl::InvalidArgumentError("store URL: a fragment (#...) means nothing here");
  }
  std::string_view query;
  if (const size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  std::string_view path;
  if (const size_t slash = rest.find('/'); slash != std::string_view::npos) {
    path = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
  }
  // The password may hold '@' (escaped or not): the last '@' ends the user info.
  if (const size_t at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      return absl::InvalidArgumentError(
          "store URL: credentials must be USER:PASSWORD@ or :PASSWORD@ (percent-encoded)");
    }
    absl::StatusOr<std::string> user = PercentDecode(userinfo.substr(0, colon), "user name");
    if (!user.ok()) {
      return user.status();
    }
    absl::StatusOr<std::string> password = PercentDecode(userinfo.substr(colon + 1), "password");
    if (!password.ok()) {
      return password.status();
    }
    if (password->empty()) {
      return absl::InvalidArgumentError("store URL: a user name without a password");
    }
    options.username = *std::move(user);
    options.password = *std::move(password);
  }
  const uint16_t default_port =
      options.mode == ClientOptions::Mode::kSentinel ? kSentinelPort : kRedisPort;
  for (absl::string_view host : absl::StrSplit(AbslView(rest), ',')) {
    absl::StatusOr<Endpoint> endpoint = ParseEndpoint(common::StdView(host), default_port);
    if (!endpoint.ok()) {
      return endpoint.status();
    }
    options.endpoints.push_back(*std::move(endpoint));
  }
  if (options.mode == ClientOptions::Mode::kSingle && options.endpoints.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("store URL: ", AbslView(scheme),
                     ":// takes one address (several: redis-sentinel:// or "
                     "redis-cluster://)"));
  }
  std::vector<std::string_view> parts;
  for (absl::string_view part : absl::StrSplit(AbslView(path), '/')) {
    parts.push_back(common::StdView(part));
  }
  if (parts.empty()) {
    parts.push_back("");  // absl::StrSplit gives nothing for a null view
  }
  switch (options.mode) {
    case ClientOptions::Mode::kSingle:
      if (parts.size() > 1) {
        return absl::InvalidArgumentError("store URL: the path is /DB alone");
      }
      if (!parts[0].empty()) {
        if (absl::Status db = ParseDb(parts[0], options.db); !db.ok()) {
          return db;
        }
      }
      break;
    case ClientOptions::Mode::kSentinel: {
      if (parts[0].empty() || parts.size() > 2) {
        return absl::InvalidArgumentError(
            "store URL: redis-sentinel:// needs the master's name: "
            "redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]");
      }
      absl::StatusOr<std::string> master = PercentDecode(parts[0], "master name");
      if (!master.ok()) {
        return master.status();
      }
      options.master_name = *std::move(master);
      if (parts.size() == 2) {
        if (absl::Status db = ParseDb(parts[1], options.db); !db.ok()) {
          return db;
        }
      }
      break;
    }
    case ClientOptions::Mode::kCluster:
      if (!path.empty() && path != "0") {
        return absl::InvalidArgumentError(
            "store URL: Redis Cluster has database 0 only (no /DB in redis-cluster://)");
      }
      break;
  }
  if (absl::Status applied = ApplyQuery(query, options); !applied.ok()) {
    return applied;
  }
  const bool tls_files = !options.tls_ca_file.empty() || !options.tls_cert_file.empty() ||
                         !options.tls_key_file.empty();
  if (tls_files && !options.tls) {
    return absl::InvalidArgumentError(
        "store URL: tls_ca, tls_cert and tls_key go with TLS (rediss:// or tls=true)");
  }
  if (options.tls && options.tls_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "store URL: TLS (rediss:// or tls=true) needs ?tls_ca=FILE (the CA the server's "
        "certificate chains to)");
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("store URL: tls_cert and tls_key go together");
  }
  return options;
}

uint16_t HashSlot(std::string_view key) {
  // CRC16-XMODEM: polynomial 0x1021, initial value 0, no reflection (Redis Cluster's spec).
  static constexpr std::array<uint16_t, 256> kTable = [] {
    std::array<uint16_t, 256> table{};
    for (int i = 0; i < 256; ++i) {
      uint16_t crc = static_cast<uint16_t>(i << 8);
      for (int bit = 0; bit < 8; ++bit) {
        crc = static_cast<uint16_t>((crc & 0x8000) != 0 ? (crc << 1) ^ 0x1021 : crc << 1);
      }
      table[i] = crc;
    }
    return table;
  }();
  // Hash tag: the bytes between the first '{' and the first '}' after it, when not empty.
  if (const size_t open = key.find('{'); open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  uint16_t crc = 0;
  for (unsigned char c : key) {
    crc = static_cast<uint16_t>((crc << 8) ^ kTable[((crc >> 8) ^ c) & 0xff]);
  }
  return crc & 16383;
}

absl::StatusOr<std::unique_ptr<Client>> NewClient(const ClientOptions& options) {
  if (absl::Status checked = CheckOptions(options); !checked.ok()) {
    return checked;
  }
  switch (options.mode) {
    case ClientOptions::Mode::kSingle:
      return std::unique_ptr<Client>(new SingleClient(options));
    case ClientOptions::Mode::kSentinel:
      return NewSentinelClient(options);
    case ClientOptions::Mode::kCluster:
      return NewClusterClient(options);
  }
  return absl::InvalidArgumentError("redis client: unknown mode");
}

}  // namespace floodgate::redis
