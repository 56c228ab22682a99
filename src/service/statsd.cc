#include "src/service/statsd.h"

#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/host_port.h"

namespace floodgate::service {
namespace {

// envoyproxy/ratelimit's scopes: the rules and service counters live under
// "ratelimit.service", the gRPC server's per-method stats under "ratelimit_server".
constexpr char kRulePrefix[] = "ratelimit.service.rate_limit.";
constexpr char kServicePrefix[] = "ratelimit.service.";
constexpr char kShouldRateLimitPrefix[] = "ratelimit.service.call.should_rate_limit.";
constexpr char kServerPrefix[] = "ratelimit_server.ShouldRateLimit.";

class UdpSender final : public DatagramSender {
 public:
  explicit UdpSender(int fd) : fd_(fd) {}
  ~UdpSender() override { ::close(fd_); }

  absl::Status Send(std::string_view datagram) override {
    const ssize_t sent = ::send(fd_, datagram.data(), datagram.size(), 0);
    if (sent < 0) {
      return absl::UnavailableError(std::strerror(errno));
    }
    if (static_cast<size_t>(sent) != datagram.size()) {
      return absl::UnavailableError("short send");
    }
    return absl::OkStatus();
  }

 private:
  const int fd_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DatagramSender>> NewUdpSender(std::string_view address) {
  std::string host;
  uint16_t port = 0;
  if (absl::Status split = common::SplitHostPort(address, host, port); !split.ok()) {
    return split;
  }
  if (host.empty()) {
    host = "localhost";
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = absl::StrCat(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return absl::NotFoundError(
        absl::StrCat("statsd address ", std::string(address), ": ", ::gai_strerror(rc)));
  }
  std::string last_error = "no address";
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    const int fd =
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    // Connected, so that send() needs no address and an ICMP refusal surfaces as an error.
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      last_error = std::strerror(errno);
      ::close(fd);
      continue;
    }
    ::freeaddrinfo(found);
    return std::make_unique<UdpSender>(fd);
  }
  ::freeaddrinfo(found);
  return absl::UnavailableError(
      absl::StrCat("statsd socket to ", std::string(address), ": ", last_error));
}

std::vector<std::string> PackDatagrams(const std::vector<std::string>& lines, size_t max_bytes) {
  std::vector<std::string> datagrams;
  std::string current;
  for (const std::string& line : lines) {
    if (!current.empty() && current.size() + line.size() > max_bytes) {
      datagrams.push_back(std::move(current));
      current.clear();
    }
    current += line;
  }
  if (!current.empty()) {
    datagrams.push_back(std::move(current));
  }
  return datagrams;
}

StatsdSink::StatsdSink(StatsdOptions options, StatsdSources sources,
                       std::unique_ptr<DatagramSender> sender)
    : options_(std::move(options)),
      sources_(std::move(sources)),
      // One line a minute at most: a collector that is down must not flood the log.
      log_(
          1, 60'000'000'000,
          [clock = options_.clock != nullptr ? options_.clock : SystemClock::Get()] {
            return clock->NowNs();
          },
          options_.log_sink),
      sender_(std::move(sender)) {}

StatsdSink::~StatsdSink() { Stop(); }

void StatsdSink::Start() {
  thread_ = std::thread([this] { Run(); });
}

void StatsdSink::Stop() {
  if (stopped_) {
    return;
  }
  stopped_ = true;
  if (thread_.joinable()) {
    {
      absl::MutexLock lock(&run_mu_);
      stopping_ = true;
    }
    run_cv_.SignalAll();
    thread_.join();
  }
  Flush();  // what was counted since the last flush
}

void StatsdSink::Run() {
  while (true) {
    {
      absl::MutexLock lock(&run_mu_);
      const absl::Time deadline = absl::Now() + options_.flush_interval;
      // WaitWithDeadline returns true once the deadline passed; Stop signals to end it early.
      while (!stopping_ && !run_cv_.WaitWithDeadline(&run_mu_, deadline)) {
      }
      if (stopping_) {
        return;
      }
    }
    Flush();
  }
}

void StatsdSink::Counter(const std::string& name, uint64_t value, std::vector<std::string>& lines) {
  uint64_t& last = last_[name];
  // A counter never goes down; if it did (a counter replaced), its whole value is new.
  const uint64_t delta = value >= last ? value - last : value;
  last = value;
  if (delta != 0) {
    lines.push_back(absl::StrCat(name, ":", delta, "|c\n"));
  }
}

void StatsdSink::Timer(const std::string& name, const LatencyHistogram& histogram,
                       std::vector<std::string>& lines) {
  // We keep a histogram, not every sample: each bucket that gained n samples since the last
  // flush is one sample at the bucket's upper bound with sample rate 1/n, which a StatsD server
  // counts as n samples. The overflow bucket is reported at the last bound.
  const Buckets now = histogram.BucketCounts();
  constexpr auto& kBounds = LatencyHistogram::kBoundsSeconds;
  for (size_t i = 0; i < now.size(); ++i) {
    const uint64_t n = now[i] >= last_latency_[i] ? now[i] - last_latency_[i] : now[i];
    if (n == 0) {
      continue;
    }
    const double ms = kBounds[i < kBounds.size() ? i : kBounds.size() - 1] * 1000.0;
    std::string line = absl::StrCat(name, ":", absl::StrFormat("%g", ms), "|ms");
    if (n > 1) {
      // Just under 1/n, so that a server truncating 1/rate to an integer still counts n.
      absl::StrAppend(&line, "|@",
                      absl::StrFormat("%.17g", (1.0 / static_cast<double>(n)) * (1.0 - 1e-12)));
    }
    line += '\n';
    lines.push_back(std::move(line));
  }
  last_latency_ = now;
}

std::vector<std::string> StatsdSink::Flush() {
  absl::MutexLock lock(&flush_mu_);
  std::vector<std::string> lines;
  const ServerMetrics& m = *sources_.metrics;

  // Per rule (envoyproxy/ratelimit's stats/manager: one scope per stats key).
  struct Rule {
    std::string name;
    uint64_t values[6];
  };
  std::vector<Rule> rules;
  sources_.limiter->ForEachRuleCounters([&](const std::string& key,
                                            const limiter::RuleCounters& c) {
    rules.push_back(Rule{
        absl::StrCat(kRulePrefix, EnvoyStatName(key), "."),
        {c.total_hits.load(std::memory_order_relaxed), c.over_limit.load(std::memory_order_relaxed),
         c.near_limit.load(std::memory_order_relaxed),
         c.over_limit_with_local_cache.load(std::memory_order_relaxed),
         c.within_limit.load(std::memory_order_relaxed),
         c.shadow_mode.load(std::memory_order_relaxed)}});
  });
  static constexpr const char* kRuleStats[6] = {"total_hits",   "over_limit",
                                                "near_limit",   "over_limit_with_local_cache",
                                                "within_limit", "shadow_mode"};
  for (const Rule& rule : rules) {
    for (int s = 0; s < 6; ++s) {
      Counter(absl::StrCat(rule.name, kRuleStats[s]), rule.values[s], lines);
    }
  }

  // The service's counters.
  if (sources_.config_stats) {
    const ConfigStats config = sources_.config_stats();
    Counter(absl::StrCat(kServicePrefix, "config_load_success"), config.reload_success, lines);
    Counter(absl::StrCat(kServicePrefix, "config_load_error"), config.reload_failure, lines);
  }
  Counter(absl::StrCat(kServicePrefix, "global_shadow_mode"), m.global_shadow_mode.load(), lines);
  std::vector<std::pair<std::string, uint64_t>> not_found;
  m.domain_not_found.ForEach([&not_found](const std::string& domain, uint64_t count) {
    not_found.emplace_back(domain, count);
  });
  for (const auto& [domain, count] : not_found) {
    Counter(absl::StrCat(kRulePrefix, EnvoyStatName(domain), ".domain_not_found"), count, lines);
  }
  Counter(absl::StrCat(kShouldRateLimitPrefix, "redis_error"),
          m.grpc.errors.load() + m.http.errors.load(), lines);
  Counter(absl::StrCat(kShouldRateLimitPrefix, "service_error"),
          m.grpc.bad_requests.load() + m.http.bad_requests.load(), lines);
  Counter(absl::StrCat(kServerPrefix, "total_requests"), m.grpc.requests.load(), lines);
  Timer(absl::StrCat(kServerPrefix, "response_time"), m.grpc.latency, lines);

  // Ours, with no envoyproxy/ratelimit counterpart.
  Counter("floodgate.shed", m.grpc.shed.load() + m.http.shed.load(), lines);
  Counter("floodgate.unknown_domain", m.grpc.unknown_domain.load() + m.http.unknown_domain.load(),
          lines);
  Counter("floodgate.fast_refusals", sources_.limiter->GetStats().fast_refusals, lines);
  const StoreStats store = sources_.limiter->store()->GetStats();
  Counter("floodgate.store.evicted", store.evicted, lines);
  lines.push_back(absl::StrCat("floodgate.store.keys:", store.keys, "|g\n"));
  lines.push_back(absl::StrCat("floodgate.store.bytes:", store.bytes, "|g\n"));
  lines.push_back(absl::StrCat("floodgate.http_connections:", m.http_connections.load(), "|g\n"));
  lines.push_back(absl::StrCat(
      "floodgate.config_version:", sources_.limiter->GetStats().config_version, "|g\n"));

  for (const std::string& datagram : PackDatagrams(lines, options_.max_datagram_bytes)) {
    if (absl::Status sent = sender_->Send(datagram); sent.ok()) {
      sources_.metrics->statsd_datagrams.fetch_add(1, std::memory_order_relaxed);
    } else {
      sources_.metrics->statsd_send_errors.fetch_add(1, std::memory_order_relaxed);
      log_.Log(
          absl::StrCat("statsd: a datagram to ", options_.address, " was lost: ", sent.message()));
    }
  }
  return lines;
}

absl::StatusOr<std::unique_ptr<StatsdSink>> NewStatsdSink(StatsdOptions options,
                                                          StatsdSources sources) {
  if (options.flush_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("statsd flush interval must be positive");
  }
  auto sender = NewUdpSender(options.address);
  if (!sender.ok()) {
    return sender.status();
  }
  return std::make_unique<StatsdSink>(std::move(options), std::move(sources), std::move(*sender));
}

}  // namespace floodgate::service
