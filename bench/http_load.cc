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
#include <cstring>
#include <deque>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double CpuSeconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = s.rfind(')');
  if (pos == std::string::npos) return 0;
  std::vector<std::string> f;
  for (pos += 2; pos < s.size();) {
    size_t next = s.find(' ', pos);
    if (next == std::string::npos) next = s.size();
    f.push_back(s.substr(pos, next - pos));
    pos = next + 1;
  }
  return f.size() < 13 ? 0 : (std::stod(f[11]) + std::stod(f[12])) / sysconf(_SC_CLK_TCK);
}

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

}  // namespace

int main(int argc, char** argv) {
  int port = 0, connections = 50, server_pid = 0;
  double rate = 20000, seconds = 10;
  uint64_t users = 100000, max_requests = 5'000'000;
  std::string domain = "bench", key = "user";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], v = argv[i + 1];
    if (flag == "--port")
      port = std::stoi(v);
    else if (flag == "--rate")
      rate = std::stod(v);
    else if (flag == "--connections")
      connections = std::stoi(v);
    else if (flag == "--seconds")
      seconds = std::stod(v);
    else if (flag == "--users")
      users = std::stoull(v);
    else if (flag == "--domain")
      domain = v;
    else if (flag == "--key")
      key = v;
    else if (flag == "--server-pid")
      server_pid = std::stoi(v);
    else if (flag == "--max-requests")
      max_requests = std::stoull(v);
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  const int ep = epoll_create1(0);
  std::vector<Conn> conns(connections);
  std::deque<int> idle;
  for (int i = 0; i < connections; ++i) {
    Conn& c = conns[i];
    c.fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      std::perror("connect");
      return 1;
    }
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(c.fd, F_SETFL, O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(i);
    epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
    idle.push_back(i);
  }
  std::mt19937_64 rng(42);
  std::vector<uint32_t> lat_us;
  lat_us.reserve(1 << 20);
  std::deque<Clock::time_point> waiting;  // due requests with no idle connection yet
  uint64_t scheduled = 0, done = 0, ok = 0, limited = 0, other = 0;
  const double cpu0 = server_pid ? CpuSeconds(server_pid) : 0;
  const Clock::time_point t0 = Clock::now();
  const auto end =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  const auto interval =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / rate));
  Clock::time_point next_due = t0;
  char buf[16384];
  while (true) {
    Clock::time_point now = Clock::now();
    while (next_due <= now && next_due < end && scheduled < max_requests) {
      waiting.push_back(next_due);
      next_due += interval;
      ++scheduled;
    }
    while (!waiting.empty() && !idle.empty()) {
      Conn& c = conns[idle.front()];
      idle.pop_front();
      c.due = waiting.front();
      waiting.pop_front();
      const std::string req = "GET /v1/check?domain=" + domain + "&" + key + "=" +
                              std::to_string(rng() % users + 1) +
                              " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
      if (write(c.fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
        std::perror("write");
        return 1;
      }
      c.busy = true;
    }
    const bool schedule_left = next_due < end && scheduled < max_requests;
    if (!schedule_left && waiting.empty() && idle.size() == conns.size()) break;
    int timeout_ms = 1;
    if (!schedule_left) timeout_ms = 100;
    epoll_event events[64];
    const int n = epoll_wait(ep, events, 64, timeout_ms);
    for (int e = 0; e < n; ++e) {
      const int i = static_cast<int>(events[e].data.u32);
      Conn& c = conns[i];
      const ssize_t got = read(c.fd, buf, sizeof(buf));
      if (got <= 0) {
        std::fprintf(stderr, "connection %d closed\n", i);
        return 1;
      }
      c.in.append(buf, static_cast<size_t>(got));
      int status = 0;
      if (const size_t len = CompleteResponse(c.in, &status); len > 0) {
        c.in.erase(0, len);
        lat_us.push_back(static_cast<uint32_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - c.due).count()));
        ++done;
        (status == 200 ? ok : status == 429 ? limited : other)++;
        c.busy = false;
        idle.push_back(i);
      }
    }
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu1 = server_pid ? CpuSeconds(server_pid) : 0;
  std::sort(lat_us.begin(), lat_us.end());
  auto pct = [&](double p) {
    return lat_us.empty() ? 0.0
                          : lat_us[std::min(lat_us.size() - 1, size_t(p * lat_us.size()))] / 1e3;
  };
  std::printf(
      "requests=%llu seconds=%.2f rps=%.0f status200=%llu status429=%llu other=%llu "
      "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f",
      (unsigned long long)done, secs, done / secs, (unsigned long long)ok,
      (unsigned long long)limited, (unsigned long long)other, pct(0.5), pct(0.9), pct(0.99),
      lat_us.empty() ? 0.0 : lat_us.back() / 1e3);
  if (server_pid) std::printf(" server_cpu_us_per_req=%.2f", done ? (cpu1 - cpu0) * 1e6 / done : 0);
  std::printf("\n");
  return other == 0 ? 0 : 1;
}
