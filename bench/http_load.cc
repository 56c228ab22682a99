// http_load: an open-loop HTTP/1.1 load generator for GET /v1/check, for latency at a chosen
// rate (wrk is closed loop, so its latency at saturation says little about latency at a rate).
//
//   http_load --port P [--rate 20000] [--connections 50] [--seconds 10] [--users 100000]
//             [--domain bench] [--key user] [--server-pid PID] [--max-requests N]
//
// Requests are due on a fixed schedule of `rate` per second and go out on an idle keep-alive
// connection; a request that finds none waits, and its latency counts from when it was due
// (no coordinated omission). Bounded in time and count. Prints one key=value line.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "bench/proc_stats.h"

namespace {

using Clock = std::chrono::steady_clock;
using ::floodgate::bench::CpuSeconds;

struct Options {
  int port = 0, connections = 50, server_pid = 0;
  double rate = 20000, seconds = 10;
  uint64_t users = 100000, max_requests = 5'000'000;
  std::string domain = "bench", key = "user";
};

struct Conn {
  int fd = -1;
  bool busy = false;
  Clock::time_point due;
  std::string in;
};

// Returns the length of one complete response at the start of `buf`, or 0 if incomplete.
size_t CompleteResponse(const std::string& buf, int* status) {
  const size_t end = buf.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  *status = std::atoi(buf.c_str() + 9);
  size_t length = 0;
  const char* cl = strcasestr(buf.c_str(), "\r\ncontent-length:");
  if (cl != nullptr && cl < buf.c_str() + end) length = std::strtoul(cl + 17, nullptr, 10);
  return buf.size() >= end + 4 + length ? end + 4 + length : 0;
}

// Parses the command line into `o`. Returns false, after printing why, on an unknown flag.
bool ParseFlags(int argc, char** argv, Options* o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], v = argv[i + 1];
    if (flag == "--port") {
      o->port = std::stoi(v);
    } else if (flag == "--rate") {
      o->rate = std::stod(v);
    } else if (flag == "--connections") {
      o->connections = std::stoi(v);
    } else if (flag == "--seconds") {
      o->seconds = std::stod(v);
    } else if (flag == "--users") {
      o->users = std::stoull(v);
    } else if (flag == "--domain") {
      o->domain = v;
    } else if (flag == "--key") {
      o->key = v;
    } else if (flag == "--server-pid") {
      o->server_pid = std::stoi(v);
    } else if (flag == "--max-requests") {
      o->max_requests = std::stoull(v);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return false;
    }
  }
  return true;
}

struct Results {
  uint64_t done = 0, ok = 0, limited = 0, other = 0;
  std::vector<uint32_t> lat_us;
  double seconds = 0;
  double server_cpu_s = 0;  // with --server-pid
};

// One run of the load: requests due on a fixed schedule, each sent on an idle keep-alive
// connection (or waiting for one), until the schedule is over and every answer is in.
class LoadRun {
 public:
  explicit LoadRun(const Options& o) : o_(o) {}

  // Opens --connections connections to 127.0.0.1:--port. Returns false after printing why.
  bool Connect();
  // Runs the load into `results`. Returns false, after printing why, when a connection breaks.
  bool Run(Results* results);

 private:
  // Queues the requests due by `now`.
  void Schedule(Clock::time_point now);
  // Sends waiting requests on idle connections. Returns false after printing why.
  bool SendWaiting();
  // Waits up to `timeout_ms` for answers and counts the complete ones. Returns false after
  // printing why.
  bool ReadAnswers(int timeout_ms, Results* results);

  const Options& o_;
  int ep_ = -1;
  std::vector<Conn> conns_;
  std::deque<int> idle_;
  std::mt19937_64 rng_{42};
  std::deque<Clock::time_point> waiting_;  // due requests with no idle connection yet
  uint64_t scheduled_ = 0;
  Clock::time_point end_, next_due_;
  Clock::duration interval_{};
  char buf_[16384];
};

bool LoadRun::Connect() {
  ep_ = epoll_create1(0);
  conns_.resize(o_.connections);
  for (int i = 0; i < o_.connections; ++i) {
    Conn& c = conns_[i];
    c.fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(o_.port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      std::perror("connect");
      return false;
    }
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(c.fd, F_SETFL, O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(i);
    epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
    idle_.push_back(i);
  }
  return true;
}

bool LoadRun::Run(Results* results) {
  results->lat_us.reserve(1 << 20);
  const double cpu0 = o_.server_pid ? CpuSeconds(o_.server_pid) : 0;
  const Clock::time_point t0 = Clock::now();
  end_ =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.seconds));
  interval_ =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / o_.rate));
  next_due_ = t0;
  while (true) {
    Schedule(Clock::now());
    if (!SendWaiting()) {
      return false;
    }
    const bool schedule_left = next_due_ < end_ && scheduled_ < o_.max_requests;
    if (!schedule_left && waiting_.empty() && idle_.size() == conns_.size()) {
      break;
    }
    int timeout_ms = 1;
    if (!schedule_left) {
      timeout_ms = 100;
    }
    if (!ReadAnswers(timeout_ms, results)) {
      return false;
    }
  }
  results->seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu1 = o_.server_pid ? CpuSeconds(o_.server_pid) : 0;
  results->server_cpu_s = cpu1 - cpu0;
  return true;
}

void LoadRun::Schedule(Clock::time_point now) {
  while (next_due_ <= now && next_due_ < end_ && scheduled_ < o_.max_requests) {
    waiting_.push_back(next_due_);
    next_due_ += interval_;
    ++scheduled_;
  }
}

bool LoadRun::SendWaiting() {
  while (!waiting_.empty() && !idle_.empty()) {
    Conn& c = conns_[idle_.front()];
    idle_.pop_front();
    c.due = waiting_.front();
    waiting_.pop_front();
    const std::string req = "GET /v1/check?domain=" + o_.domain + "&" + o_.key + "=" +
                            std::to_string(rng_() % o_.users + 1) +
                            " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(c.fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
      std::perror("write");
      return false;
    }
    c.busy = true;
  }
  return true;
}

bool LoadRun::ReadAnswers(int timeout_ms, Results* results) {
  epoll_event events[64];
  const int n = epoll_wait(ep_, events, 64, timeout_ms);
  for (int e = 0; e < n; ++e) {
    const int i = static_cast<int>(events[e].data.u32);
    Conn& c = conns_[i];
    const ssize_t got = read(c.fd, buf_, sizeof(buf_));
    if (got <= 0) {
      std::fprintf(stderr, "connection %d closed\n", i);
      return false;
    }
    c.in.append(buf_, static_cast<size_t>(got));
    int status = 0;
    if (const size_t len = CompleteResponse(c.in, &status); len > 0) {
      c.in.erase(0, len);
      results->lat_us.push_back(static_cast<uint32_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - c.due).count()));
      ++results->done;
      (status == 200 ? results->ok : status == 429 ? results->limited : results->other)++;
      c.busy = false;
      idle_.push_back(i);
    }
  }
  return true;
}

// Prints the key=value line.
void PrintResults(const Options& o, Results& r) {
  std::vector<uint32_t>& lat_us = r.lat_us;
  const uint64_t done = r.done;
  std::sort(lat_us.begin(), lat_us.end());
  auto pct = [&](double p) {
    return lat_us.empty() ? 0.0
                          : lat_us[std::min(lat_us.size() - 1, size_t(p * lat_us.size()))] / 1e3;
  };
  std::printf(
      "requests=%llu seconds=%.2f rps=%.0f status200=%llu status429=%llu other=%llu "
      "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f",
      (unsigned long long)done, r.seconds, done / r.seconds, (unsigned long long)r.ok,
      (unsigned long long)r.limited, (unsigned long long)r.other, pct(0.5), pct(0.9), pct(0.99),
      lat_us.empty() ? 0.0 : lat_us.back() / 1e3);
  if (o.server_pid) {
    std::printf(" server_cpu_us_per_req=%.2f", done ? r.server_cpu_s * 1e6 / done : 0);
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseFlags(argc, argv, &o)) {
    return 2;
  }
  LoadRun run(o);
  if (!run.Connect()) {
    return 1;
  }
  Results results;
  if (!run.Run(&results)) {
    return 1;
  }
  PrintResults(o, results);
  return results.other == 0 ? 0 : 1;
}
