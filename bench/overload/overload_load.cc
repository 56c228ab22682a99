// overload_load: the HTTP load driver of the overload scenarios (bench/overload/run.sh,
// docs/overload.md). One thread, epoll, GET /v1/check over keep-alive connections.
//
//   overload_load --port P --phase RATE:SECONDS[:NAME[:MAX]] [--phase ...]
//       [--server-pid PID] [--connections 50] [--depth 1] [--deadline-ms 0] [--fail-fast]
//       [--domain overload] [--key user] [--users 100000] [--new-keys PREFIX]
//       [--hot FRACTION] [--hot-key K] [--hot-value V]
//       [--tracked N] [--tracked-key user] [--tracked-rate 20] [--tracked-limit 10]
//       [--tracked-window 1] [--tracked-connections 8]
//       [--tick 0.5] [--series FILE.csv] [--windows FILE.csv] [--metrics] [--drain 5]
//
// Phases run one after the other. RATE is a number (open loop: requests are due on a fixed
// schedule and latency counts from when a request was due, so queueing in the driver is not
// hidden), `closed` (every connection keeps --depth requests in flight) or `idle` (no background
// traffic). MAX ends the phase early after that many background requests.
//
// Background requests go to `--key` with a value drawn at random from [1, users], or a new value
// every time with --new-keys PREFIX (PREFIX0, PREFIX1, ...); a fraction --hot of them goes to
// --hot-key=--hot-value instead. A request may wait for a connection with fewer than --depth in
// flight (HTTP/1.1 pipelining); with --deadline-ms it is dropped ("abandoned") once it has waited
// that long unsent, as a proxy with a timeout would. With --fail-fast a request that finds every
// connection at --depth is failed at once instead ("overflow"): the caller applies its failure
// mode without waiting, as Envoy does when its circuit breaker on outstanding requests to the
// rate limit cluster (max_requests, 1024 by default) is full.
//
// Tracked users (--tracked N) are N keys `--tracked-key=t<i>`, each checked at --tracked-rate per
// second on their own connections, over every phase. Their limit is --tracked-limit per fixed
// window of --tracked-window seconds (as in the config served). Each answer is attributed to its
// window from the body's resetAfterSeconds (window end = decision time + reset), so the driver
// can count admissions per user and window: a window with a refusal must have admitted exactly
// the limit, and no window may admit more.
//
// Every --tick seconds one CSV row: offered and answered rate, p50/p99 of that tick, statuses,
// tracked admissions, the server's RSS and CPU (with --server-pid), the driver's CPU, the CPU
// everything else on the machine used (other_cpu, in cores: a shared machine's noise) and, with
// --metrics, store figures polled from GET /metrics on a connection of its own. Prints one
// `phase ...` line per phase, a `tracked ...` line and a `total ...` line (key=value). Exit
// status 1 on a broken connection or an answer other than 200/429.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
Clock::duration FromSeconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Returns the fields of /proc/PID/stat after the command name.
std::vector<std::string> StatFields(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> f;
  size_t pos = s.rfind(')');
  if (pos == std::string::npos) {
    return f;
  }
  for (pos += 2; pos < s.size();) {
    size_t next = s.find(' ', pos);
    if (next == std::string::npos) {
      next = s.size();
    }
    f.push_back(s.substr(pos, next - pos));
    pos = next + 1;
  }
  return f;
}

double CpuSeconds(int pid) {
  const std::vector<std::string> f = StatFields(pid);
  return f.size() < 13 ? 0 : (std::stod(f[11]) + std::stod(f[12])) / sysconf(_SC_CLK_TCK);
}

// Returns the seconds every CPU of the machine spent busy (not idle or waiting for I/O).
double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  double v[10] = {};
  in >> cpu;
  for (double& x : v) {
    in >> x;
  }
  double busy = 0;
  for (int i = 0; i < 8; ++i) {  // user nice system idle iowait irq softirq steal
    busy += (i == 3 || i == 4) ? 0 : v[i];
  }
  return busy / sysconf(_SC_CLK_TCK);
}

// Returns the value in kB of a /proc/PID/status line such as VmRSS or VmHWM (0 if absent).
long StatusKb(int pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') {
      return std::atol(line.c_str() + n + 1);
    }
  }
  return 0;
}

double Percentile(std::vector<uint32_t>& v, double p) {
  if (v.empty()) {
    return 0;
  }
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k] / 1e3;
}

struct Phase {
  enum Kind { kOpen, kClosed, kIdle } kind = kOpen;
  double rate = 0;
  double seconds = 0;
  std::string name;
  uint64_t max_requests = 0;  // 0: none
};

struct Pending {
  Clock::time_point due;
  Clock::time_point sent;
  int32_t user;    // tracked user index, -1 for background
  uint32_t phase;  // the phase it was due in
};

struct Conn {
  int fd = -1;
  bool tracked = false;
  bool dead = false;
  bool ready = false;  // in the ready list (fewer than depth in flight)
  std::deque<Pending> inflight;
  std::string out;
  std::string in;
  size_t in_off = 0;
};

// Finds one complete response at `buf[off..]`: returns its length (0 if incomplete) and sets the
// status and the body's offset and length.
size_t CompleteResponse(const std::string& buf, size_t off, int* status, size_t* body,
                        size_t* body_len) {
  const size_t end = buf.find("\r\n\r\n", off);
  if (end == std::string::npos) {
    return 0;
  }
  *status = std::atoi(buf.c_str() + off + 9);
  size_t length = 0;
  const char* cl = strcasestr(buf.c_str() + off, "\r\ncontent-length:");
  if (cl != nullptr && cl < buf.c_str() + end) {
    length = std::strtoul(cl + 17, nullptr, 10);
  }
  if (buf.size() < end + 4 + length) {
    return 0;
  }
  *body = end + 4;
  *body_len = length;
  return end + 4 + length - off;
}

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::perror("connect");
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

// Latest values read from GET /metrics.
struct ServerMetrics {
  double store_keys = 0, store_bytes = 0, evicted = 0, refused_full = 0, fast_refusals = 0;
  double shed = 0, connections = 0;
};

void ParseMetrics(const std::string& text, ServerMetrics& m) {
  ServerMetrics out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) {
      eol = text.size();
    }
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.empty() || line[0] == '#') {
      continue;
    }
    const size_t sp = line.rfind(' ');
    if (sp == std::string::npos) {
      continue;
    }
    const double v = std::atof(line.c_str() + sp + 1);
    auto is = [&](const char* name) {
      const size_t n = std::strlen(name);
      return line.compare(0, n, name) == 0 && (line[n] == ' ' || line[n] == '{');
    };
    if (is("floodgate_store_keys")) {
      out.store_keys = v;
    } else if (is("floodgate_store_bytes")) {
      out.store_bytes = v;
    } else if (is("floodgate_store_evicted_total")) {
      out.evicted = v;
    } else if (is("floodgate_store_refused_full_total")) {
      out.refused_full = v;
    } else if (is("floodgate_fast_refusals_total")) {
      out.fast_refusals = v;
    } else if (is("floodgate_shed_total")) {
      out.shed += v;
    } else if (is("floodgate_http_connections")) {
      out.connections = v;
    }
  }
  m = out;
}

struct PhaseStats {
  uint64_t offered = 0, answered = 0, ok = 0, limited = 0, other = 0, abandoned = 0;
  uint64_t overflow = 0;              // failed at once by the caller (--fail-fast)
  std::vector<uint32_t> lat_us;       // from when due
  std::vector<uint32_t> wire_lat_us;  // from when sent
  double seconds = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int port = 0, server_pid = 0, connections = 50, depth = 1, tracked_connections = 8;
  double deadline_ms = 0, hot = 0, tick_s = 0.5, drain_s = 5;
  double tracked_rate = 20, tracked_window_s = 1;
  uint64_t users = 100000, tracked = 0, tracked_limit = 10;
  std::string domain = "overload", key = "user", new_keys, hot_key, hot_value = "hot";
  std::string tracked_key = "user", series_path, windows_path;
  bool metrics = false, fail_fast = false;
  std::vector<Phase> phases;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--metrics") {
      metrics = true;
      continue;
    }
    if (flag == "--fail-fast") {
      fail_fast = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "flag %s needs a value\n", flag.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    if (flag == "--port") {
      port = std::stoi(v);
    } else if (flag == "--server-pid") {
      server_pid = std::stoi(v);
    } else if (flag == "--connections") {
      connections = std::stoi(v);
    } else if (flag == "--depth") {
      depth = std::max(1, std::stoi(v));
    } else if (flag == "--deadline-ms") {
      deadline_ms = std::stod(v);
    } else if (flag == "--domain") {
      domain = v;
    } else if (flag == "--key") {
      key = v;
    } else if (flag == "--users") {
      users = std::stoull(v);
    } else if (flag == "--new-keys") {
      new_keys = v;
    } else if (flag == "--hot") {
      hot = std::stod(v);
    } else if (flag == "--hot-key") {
      hot_key = v;
    } else if (flag == "--hot-value") {
      hot_value = v;
    } else if (flag == "--tracked") {
      tracked = std::stoull(v);
    } else if (flag == "--tracked-key") {
      tracked_key = v;
    } else if (flag == "--tracked-rate") {
      tracked_rate = std::stod(v);
    } else if (flag == "--tracked-limit") {
      tracked_limit = std::stoull(v);
    } else if (flag == "--tracked-window") {
      tracked_window_s = std::stod(v);
    } else if (flag == "--tracked-connections") {
      tracked_connections = std::max(1, std::stoi(v));
    } else if (flag == "--tick") {
      tick_s = std::stod(v);
    } else if (flag == "--series") {
      series_path = v;
    } else if (flag == "--windows") {
      windows_path = v;
    } else if (flag == "--drain") {
      drain_s = std::stod(v);
    } else if (flag == "--phase") {
      Phase p;
      std::vector<std::string> parts;
      for (size_t s = 0;;) {
        const size_t c = v.find(':', s);
        parts.push_back(v.substr(s, c == std::string::npos ? std::string::npos : c - s));
        if (c == std::string::npos) {
          break;
        }
        s = c + 1;
      }
      if (parts.size() < 2) {
        std::fprintf(stderr, "--phase RATE:SECONDS[:NAME[:MAX]]\n");
        return 2;
      }
      if (parts[0] == "closed") {
        p.kind = Phase::kClosed;
      } else if (parts[0] == "idle") {
        p.kind = Phase::kIdle;
      } else {
        p.rate = std::stod(parts[0]);
      }
      p.seconds = std::stod(parts[1]);
      p.name = parts.size() > 2 ? parts[2] : "phase" + std::to_string(phases.size());
      p.max_requests = parts.size() > 3 ? std::stoull(parts[3]) : 0;
      phases.push_back(p);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (port == 0 || phases.empty()) {
    std::fprintf(stderr, "need --port and at least one --phase\n");
    return 2;
  }
  if (hot_key.empty()) {
    hot_key = key;
  }

  prctl(PR_SET_TIMERSLACK, 1UL);  // wake when a request is due, not up to 50 us later
  const int ep = epoll_create1(0);
  std::vector<Conn> conns(connections + (tracked > 0 ? tracked_connections : 0));
  std::deque<int> ready_bg, ready_tr;  // connections with fewer than depth in flight
  const int tracked_depth = 16;
  for (size_t i = 0; i < conns.size(); ++i) {
    Conn& c = conns[i];
    c.tracked = static_cast<int>(i) >= connections;
    c.fd = Connect(port);
    if (c.fd < 0) {
      return 1;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(i);
    epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
    c.ready = true;
    (c.tracked ? ready_tr : ready_bg).push_back(static_cast<int>(i));
  }
  // The /metrics connection: one request at a time, epoll tag = UINT32_MAX.
  int metrics_fd = -1;
  bool metrics_busy = false;
  std::string metrics_in;
  ServerMetrics server_metrics;
  if (metrics) {
    metrics_fd = Connect(port);
    if (metrics_fd < 0) {
      return 1;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = UINT32_MAX;
    epoll_ctl(ep, EPOLL_CTL_ADD, metrics_fd, &ev);
  }

  std::FILE* series = nullptr;
  if (!series_path.empty()) {
    series = std::fopen(series_path.c_str(), "w");
    std::fprintf(series,
                 "t_s,phase,offered_rps,rps,ok,limited,other,abandoned,p50_ms,p99_ms,"
                 "tracked_ok,tracked_limited,rss_kb,server_cpu,store_keys,store_bytes,evicted,"
                 "refused_full,fast_refusals,shed,other_cpu,driver_cpu,overflow\n");
  }

  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<PhaseStats> stats(phases.size());
  // Tracked admissions: (user, window end index) -> {admitted, refused}.
  std::unordered_map<uint64_t, std::pair<uint32_t, uint32_t>> windows;
  uint64_t tracked_sent = 0, tracked_answered = 0, tracked_unattributed = 0;
  uint64_t new_key_counter = 0, errors = 0, lost = 0;
  long rss_max_kb = 0;

  const std::string bg_prefix = "GET /v1/check?domain=" + domain + "&" + key + "=";
  const std::string hot_request = "GET /v1/check?domain=" + domain + "&" + hot_key + "=" +
                                  hot_value + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  const std::string tr_prefix = "GET /v1/check?domain=" + domain + "&" + tracked_key + "=t";
  const std::string suffix = " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

  std::deque<Clock::time_point> waiting;     // due background requests not yet sent
  std::deque<Clock::time_point> waiting_tr;  // due tracked requests not yet sent
  std::vector<int> dirty;                    // connections with bytes to write
  size_t in_flight = 0;                      // requests sent and not answered

  // Wall clock = steady + offset (to attribute answers to the server's epoch-aligned windows).
  const double wall_offset =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() -
      Seconds(Clock::now().time_since_epoch());

  const Clock::time_point t0 = Clock::now();
  size_t phase = 0;
  Clock::time_point phase_start = t0;
  Clock::time_point phase_end = t0 + FromSeconds(phases[0].seconds);
  Clock::time_point next_due = t0;
  Clock::time_point next_tr_due = t0;
  const auto tr_interval =
      tracked > 0 ? FromSeconds(1.0 / (tracked_rate * tracked)) : Clock::duration{};
  uint64_t tr_next_user = 0;
  const auto deadline = FromSeconds(deadline_ms / 1e3);
  bool schedule_over = false;
  Clock::time_point drain_end{};

  // Per-tick figures.
  Clock::time_point next_tick = t0 + FromSeconds(tick_s);
  uint64_t tick_offered = 0, tick_answered = 0, tick_ok = 0, tick_limited = 0, tick_other = 0;
  uint64_t tick_abandoned = 0, tick_tr_ok = 0, tick_tr_limited = 0, tick_overflow = 0;
  std::vector<uint32_t> tick_lat;
  double cpu_prev = server_pid ? CpuSeconds(server_pid) : 0;
  const double cpu_start = cpu_prev;
  // CPU used by anything but the server and this driver (other work on a shared machine).
  const int self_pid = getpid();
  double busy_prev = MachineBusySeconds(), self_prev = CpuSeconds(self_pid);
  double other_sum = 0;
  uint64_t other_ticks = 0;

  auto enqueue = [&](Conn& c, int32_t user, Clock::time_point due, Clock::time_point now) {
    if (user >= 0) {
      c.out += tr_prefix;
      c.out += std::to_string(user + 1);
      c.out += suffix;
    } else if (hot > 0 && unit(rng) < hot) {
      c.out += hot_request;
    } else {
      c.out += bg_prefix;
      if (!new_keys.empty()) {
        c.out += new_keys;
        c.out += std::to_string(new_key_counter++);
      } else {
        c.out += std::to_string(rng() % users + 1);
      }
      c.out += suffix;
    }
    dirty.push_back(static_cast<int>(&c - conns.data()));
    c.inflight.push_back(Pending{due, now, user, static_cast<uint32_t>(phase)});
    ++in_flight;
  };
  // A connection the server closed (or that failed): its requests in flight are lost.
  auto drop = [&](Conn& c) {
    std::fprintf(stderr, "connection %d closed with %zu in flight\n",
                 static_cast<int>(&c - conns.data()), c.inflight.size());
    ++errors;
    lost += c.inflight.size();
    in_flight -= c.inflight.size();
    c.inflight.clear();
    c.dead = true;
    epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
  };
  auto take_ready = [&](std::deque<int>& ready, int max_depth) -> Conn* {
    while (!ready.empty()) {
      Conn& c = conns[ready.front()];
      if (c.dead || static_cast<int>(c.inflight.size()) >= max_depth) {
        c.ready = false;
        ready.pop_front();
        continue;
      }
      if (static_cast<int>(c.inflight.size()) + 1 >= max_depth) {
        c.ready = false;
        ready.pop_front();
      } else {
        // Round robin: move it to the back so load spreads over connections.
        ready.pop_front();
        ready.push_back(static_cast<int>(&c - conns.data()));
      }
      return &c;
    }
    return nullptr;
  };

  char buf[1 << 16];
  while (true) {
    const Clock::time_point now = Clock::now();
    // Phase changes.
    while (!schedule_over &&
           (now >= phase_end || (phases[phase].max_requests > 0 &&
                                 stats[phase].offered >= phases[phase].max_requests))) {
      stats[phase].seconds = Seconds(std::min(now, phase_end) - phase_start);
      if (++phase == phases.size()) {
        schedule_over = true;
        drain_end = now + FromSeconds(drain_s);
        phase = phases.size() - 1;
        break;
      }
      phase_start = now;
      phase_end = now + FromSeconds(phases[phase].seconds);
      next_due = now;
    }
    const Phase& ph = phases[phase];
    PhaseStats& ps = stats[phase];
    if (!schedule_over) {
      if (ph.kind == Phase::kOpen && ph.rate > 0) {
        const auto interval = FromSeconds(1.0 / ph.rate);
        while (next_due <= now && (ph.max_requests == 0 || ps.offered < ph.max_requests)) {
          waiting.push_back(next_due);
          next_due += interval;
          ++ps.offered;
          ++tick_offered;
        }
      } else if (ph.kind == Phase::kClosed) {
        while (ph.max_requests == 0 || ps.offered < ph.max_requests) {
          Conn* c = take_ready(ready_bg, depth);
          if (c == nullptr) {
            break;
          }
          enqueue(*c, -1, now, now);
          ++ps.offered;
          ++tick_offered;
        }
      }
      if (tracked > 0) {
        while (next_tr_due <= now) {
          waiting_tr.push_back(next_tr_due);
          next_tr_due += tr_interval;
        }
      }
    }
    if (deadline_ms > 0) {
      while (!waiting.empty() && now - waiting.front() > deadline) {
        waiting.pop_front();
        ++ps.abandoned;
        ++tick_abandoned;
      }
    }
    while (!waiting.empty()) {
      Conn* c = take_ready(ready_bg, depth);
      if (c == nullptr) {
        break;
      }
      enqueue(*c, -1, waiting.front(), now);
      waiting.pop_front();
    }
    if (fail_fast) {
      ps.overflow += waiting.size();
      tick_overflow += waiting.size();
      waiting.clear();
    }
    while (!waiting_tr.empty()) {
      Conn* c = take_ready(ready_tr, tracked_depth);
      if (c == nullptr) {
        break;
      }
      enqueue(*c, static_cast<int32_t>(tr_next_user++ % tracked), waiting_tr.front(), now);
      waiting_tr.pop_front();
      ++tracked_sent;
    }
    for (int i : dirty) {
      Conn& c = conns[i];
      if (c.out.empty() || c.dead) {
        continue;
      }
      const ssize_t w = write(c.fd, c.out.data(), c.out.size());
      if (w > 0) {
        c.out.erase(0, static_cast<size_t>(w));
      } else if (w < 0 && errno != EAGAIN) {
        drop(c);
      }
    }
    // Keep the ones the socket did not take whole (rare: the kernel buffer was full).
    dirty.erase(std::remove_if(dirty.begin(), dirty.end(),
                               [&](int i) { return conns[i].out.empty() || conns[i].dead; }),
                dirty.end());
    std::sort(dirty.begin(), dirty.end());
    dirty.erase(std::unique(dirty.begin(), dirty.end()), dirty.end());

    // Ticks: one CSV row each.
    if (now >= next_tick) {
      const double t = Seconds(next_tick - t0);
      long rss = server_pid ? StatusKb(server_pid, "VmRSS") : 0;
      rss_max_kb = std::max(rss_max_kb, rss);
      const double cpu = server_pid ? CpuSeconds(server_pid) : 0;
      const double busy = MachineBusySeconds(), self = CpuSeconds(self_pid);
      const double other =
          std::max(0.0, (busy - busy_prev) - (self - self_prev) - (cpu - cpu_prev)) / tick_s;
      const double driver = (self - self_prev) / tick_s;
      busy_prev = busy;
      self_prev = self;
      other_sum += other;
      ++other_ticks;
      if (series != nullptr) {
        std::fprintf(series,
                     "%.2f,%s,%.0f,%.0f,%llu,%llu,%llu,%llu,%.3f,%.3f,%llu,%llu,%ld,%.2f,%.0f,%.0f,"
                     "%.0f,%.0f,%.0f,%.0f,%.2f,%.2f,%llu\n",
                     t, phases[phase].name.c_str(), tick_offered / tick_s, tick_answered / tick_s,
                     (unsigned long long)tick_ok, (unsigned long long)tick_limited,
                     (unsigned long long)tick_other, (unsigned long long)tick_abandoned,
                     Percentile(tick_lat, 0.5), Percentile(tick_lat, 0.99),
                     (unsigned long long)tick_tr_ok, (unsigned long long)tick_tr_limited, rss,
                     (cpu - cpu_prev) / tick_s, server_metrics.store_keys,
                     server_metrics.store_bytes, server_metrics.evicted,
                     server_metrics.refused_full, server_metrics.fast_refusals, server_metrics.shed,
                     other, driver, (unsigned long long)tick_overflow);
        std::fflush(series);
      }
      cpu_prev = cpu;
      tick_offered = tick_answered = tick_ok = tick_limited = tick_other = tick_abandoned = 0;
      tick_overflow = 0;
      tick_tr_ok = tick_tr_limited = 0;
      tick_lat.clear();
      next_tick += FromSeconds(tick_s);
      if (metrics_fd >= 0 && !metrics_busy) {
        const std::string req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        if (write(metrics_fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
          metrics_busy = true;
        }
      }
    }

    if (schedule_over &&
        ((waiting.empty() && waiting_tr.empty() && in_flight == 0) || now >= drain_end)) {
      lost += in_flight + waiting.size() + waiting_tr.size();
      break;
    }

    // Sleep until the next request is due (or the next tick, at most 1 ms) unless woken by an
    // answer: a fixed 1 ms timeout would delay due requests by up to 1 ms.
    Clock::time_point wake = std::min(next_tick, now + std::chrono::milliseconds(1));
    if (!schedule_over && ph.kind == Phase::kOpen && ph.rate > 0) {
      wake = std::min(wake, next_due);
    }
    if (!schedule_over && tracked > 0) {
      wake = std::min(wake, next_tr_due);
    }
    const int64_t wait_ns = std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::nanoseconds>(wake - Clock::now()).count());
    const timespec timeout{0, static_cast<long>(wait_ns)};
    epoll_event events[256];
    const int n = epoll_pwait2(ep, events, 256, &timeout, nullptr);
    const Clock::time_point got_at = Clock::now();
    for (int e = 0; e < n; ++e) {
      if (events[e].data.u32 == UINT32_MAX) {
        const ssize_t got = read(metrics_fd, buf, sizeof(buf));
        if (got <= 0) {
          epoll_ctl(ep, EPOLL_CTL_DEL, metrics_fd, nullptr);
          close(metrics_fd);
          metrics_fd = -1;
          continue;
        }
        metrics_in.append(buf, static_cast<size_t>(got));
        int status = 0;
        size_t body = 0, body_len = 0;
        if (const size_t len = CompleteResponse(metrics_in, 0, &status, &body, &body_len);
            len > 0) {
          ParseMetrics(metrics_in.substr(body, body_len), server_metrics);
          metrics_in.erase(0, len);
          metrics_busy = false;
        }
        continue;
      }
      const int i = static_cast<int>(events[e].data.u32);
      Conn& c = conns[i];
      const ssize_t got = read(c.fd, buf, sizeof(buf));
      if (got <= 0) {
        if (got < 0 && errno == EAGAIN) {
          continue;
        }
        drop(c);
        continue;
      }
      c.in.append(buf, static_cast<size_t>(got));
      int status = 0;
      size_t body = 0, body_len = 0;
      while (!c.inflight.empty()) {
        const size_t len = CompleteResponse(c.in, c.in_off, &status, &body, &body_len);
        if (len == 0) {
          break;
        }
        const Pending p = c.inflight.front();
        c.inflight.pop_front();
        --in_flight;
        if (p.user >= 0) {
          ++tracked_answered;
          const bool ok = status == 200;
          (ok ? tick_tr_ok : tick_tr_limited)++;
          if (status != 200 && status != 429) {
            ++errors;
          }
          const std::string_view b(c.in.data() + body, body_len);
          const size_t r = b.find("\"resetAfterSeconds\":");
          if (r == std::string_view::npos) {
            ++tracked_unattributed;
          } else {
            const double reset = std::atof(b.data() + r + 20);
            const double mid =
                wall_offset + Seconds(p.sent.time_since_epoch()) + Seconds(got_at - p.sent) / 2;
            const int64_t window = std::llround((mid + reset) / tracked_window_s);
            auto& w = windows[(static_cast<uint64_t>(p.user) << 40) | (window & ((1LL << 40) - 1))];
            (ok ? w.first : w.second)++;
          }
        } else {
          PhaseStats& cur = stats[p.phase];
          ++cur.answered;
          ++tick_answered;
          const uint32_t lat = static_cast<uint32_t>(
              std::chrono::duration_cast<std::chrono::microseconds>(got_at - p.due).count());
          const uint32_t wire = static_cast<uint32_t>(
              std::chrono::duration_cast<std::chrono::microseconds>(got_at - p.sent).count());
          cur.lat_us.push_back(lat);
          cur.wire_lat_us.push_back(wire);
          tick_lat.push_back(lat);
          if (status == 200) {
            ++cur.ok;
            ++tick_ok;
          } else if (status == 429) {
            ++cur.limited;
            ++tick_limited;
          } else {
            ++cur.other;
            ++tick_other;
          }
        }
        c.in_off += len;
        if (!c.ready) {
          c.ready = true;
          (c.tracked ? ready_tr : ready_bg).push_back(i);
        }
      }
      if (c.in_off > 0 && c.in_off == c.in.size()) {
        c.in.clear();
        c.in_off = 0;
      } else if (c.in_off > (1 << 16)) {
        c.in.erase(0, c.in_off);
        c.in_off = 0;
      }
    }
  }
  const double total_s = Seconds(Clock::now() - t0);
  const double cpu_end = server_pid ? CpuSeconds(server_pid) : 0;
  if (series != nullptr) {
    std::fclose(series);
  }

  uint64_t total_answered = 0, total_other = 0;
  for (size_t i = 0; i < phases.size(); ++i) {
    PhaseStats& s = stats[i];
    if (s.seconds == 0) {
      s.seconds = phases[i].seconds;
    }
    total_answered += s.answered;
    total_other += s.other;
    std::printf(
        "phase=%s seconds=%.2f offered_rps=%.0f rps=%.0f requests=%llu status200=%llu "
        "status429=%llu other=%llu abandoned=%llu overflow=%llu p50_ms=%.3f p90_ms=%.3f "
        "p99_ms=%.3f "
        "p999_ms=%.3f max_ms=%.3f wire_p50_ms=%.3f wire_p99_ms=%.3f\n",
        phases[i].name.c_str(), s.seconds, s.offered / s.seconds, s.answered / s.seconds,
        (unsigned long long)s.answered, (unsigned long long)s.ok, (unsigned long long)s.limited,
        (unsigned long long)s.other, (unsigned long long)s.abandoned,
        (unsigned long long)s.overflow, Percentile(s.lat_us, 0.5), Percentile(s.lat_us, 0.9),
        Percentile(s.lat_us, 0.99), Percentile(s.lat_us, 0.999), Percentile(s.lat_us, 1.0),
        Percentile(s.wire_lat_us, 0.5), Percentile(s.wire_lat_us, 0.99));
  }
  if (tracked > 0) {
    // Only windows with a refusal had more demand than the limit: those must admit exactly it
    // (min_admitted is over those). No window may admit more (max_admitted is over all).
    uint64_t checked = 0, exact = 0, over = 0, under = 0, unsaturated = 0;
    uint32_t min_admitted = UINT32_MAX, max_admitted = 0;
    std::map<std::pair<int64_t, uint64_t>, std::pair<uint32_t, uint32_t>> sorted;
    for (const auto& [k, v] : windows) {
      sorted[{static_cast<int64_t>(k & ((1ULL << 40) - 1)), k >> 40}] = v;
      max_admitted = std::max(max_admitted, v.first);
      if (v.first > tracked_limit) {
        ++over;
      }
      if (v.second == 0) {
        ++unsaturated;
        continue;
      }
      ++checked;
      min_admitted = std::min(min_admitted, v.first);
      if (v.first == tracked_limit) {
        ++exact;
      } else if (v.first < tracked_limit) {
        ++under;
      }
    }
    if (!windows_path.empty()) {
      std::FILE* f = std::fopen(windows_path.c_str(), "w");
      // window_end_s: wall clock; t_s: the same since the driver started (the series' t_s).
      const double t0_wall = wall_offset + Seconds(t0.time_since_epoch());
      std::fprintf(f, "window_end_s,t_s,user,admitted,refused\n");
      for (const auto& [k, v] : sorted) {
        std::fprintf(f, "%.3f,%.3f,t%llu,%u,%u\n", k.first * tracked_window_s,
                     k.first * tracked_window_s - t0_wall, (unsigned long long)k.second + 1,
                     v.first, v.second);
      }
      std::fclose(f);
    }
    std::printf(
        "tracked users=%llu limit=%llu window_s=%g sent=%llu answered=%llu unattributed=%llu "
        "windows_checked=%llu exact=%llu over=%llu under=%llu unsaturated=%llu "
        "min_admitted=%u max_admitted=%u\n",
        (unsigned long long)tracked, (unsigned long long)tracked_limit, tracked_window_s,
        (unsigned long long)tracked_sent, (unsigned long long)tracked_answered,
        (unsigned long long)tracked_unattributed, (unsigned long long)checked,
        (unsigned long long)exact, (unsigned long long)over, (unsigned long long)under,
        (unsigned long long)unsaturated, checked ? min_admitted : 0, max_admitted);
  }
  std::printf(
      "total seconds=%.2f answered=%llu other=%llu lost=%llu conn_errors=%llu rss_max_kb=%ld "
      "hwm_kb=%ld server_cpu_us_per_req=%.2f other_cpu=%.2f\n",
      total_s, (unsigned long long)total_answered, (unsigned long long)total_other,
      (unsigned long long)lost, (unsigned long long)errors, rss_max_kb,
      server_pid ? StatusKb(server_pid, "VmHWM") : 0,
      total_answered ? (cpu_end - cpu_start) * 1e6 / total_answered : 0.0,
      other_ticks ? other_sum / other_ticks : 0.0);
  return errors == 0 && total_other == 0 ? 0 : 1;
}
