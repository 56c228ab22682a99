#include "bench/overload/overload_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace floodgate::overload {

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

ServerMetrics ParseMetrics(const std::string& text) {
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
  return out;
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

bool LoadClient::Open(int port, int background, int tracked, bool metrics) {
  epoll_fd_ = epoll_create1(0);
  conns_.resize(background + tracked);
  for (size_t i = 0; i < conns_.size(); ++i) {
    Conn& c = conns_[i];
    c.tracked = static_cast<int>(i) >= background;
    c.fd = Connect(port);
    if (c.fd < 0) {
      return false;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(i);
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c.fd, &ev);
    c.ready = true;
    (c.tracked ? ready_tr_ : ready_bg_).push_back(static_cast<int>(i));
  }
  if (metrics) {
    metrics_fd_ = Connect(port);
    if (metrics_fd_ < 0) {
      return false;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = UINT32_MAX;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, metrics_fd_, &ev);
  }
  return true;
}

Conn* LoadClient::TakeReady(bool tracked, int max_depth) {
  std::deque<int>& ready = tracked ? ready_tr_ : ready_bg_;
  while (!ready.empty()) {
    Conn& c = conns_[ready.front()];
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
      ready.push_back(Index(c));
    }
    return &c;
  }
  return nullptr;
}

std::string& LoadClient::Enqueue(Conn& c, const Pending& request) {
  dirty_.push_back(Index(c));
  c.inflight.push_back(request);
  ++in_flight_;
  return c.out;
}

void LoadClient::Flush() {
  for (int i : dirty_) {
    Conn& c = conns_[i];
    if (c.out.empty() || c.dead) {
      continue;
    }
    const ssize_t w = write(c.fd, c.out.data(), c.out.size());
    if (w > 0) {
      c.out.erase(0, static_cast<size_t>(w));
    } else if (w < 0 && errno != EAGAIN) {
      Drop(c);
    }
  }
  // Keep the ones the socket did not take whole (rare: the kernel buffer was full).
  dirty_.erase(std::remove_if(dirty_.begin(), dirty_.end(),
                              [&](int i) { return conns_[i].out.empty() || conns_[i].dead; }),
               dirty_.end());
  std::sort(dirty_.begin(), dirty_.end());
  dirty_.erase(std::unique(dirty_.begin(), dirty_.end()), dirty_.end());
}

void LoadClient::RequestMetrics() {
  if (metrics_fd_ >= 0 && !metrics_busy_) {
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(metrics_fd_, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      metrics_busy_ = true;
    }
  }
}

void LoadClient::Wait(const timespec& timeout, const ResponseHandler& on_response) {
  epoll_event events[256];
  const int n = epoll_pwait2(epoll_fd_, events, 256, &timeout, nullptr);
  const Clock::time_point got_at = Clock::now();
  for (int e = 0; e < n; ++e) {
    if (events[e].data.u32 == UINT32_MAX) {
      ReadMetrics();
    } else {
      ReadAnswers(static_cast<int>(events[e].data.u32), got_at, on_response);
    }
  }
}

void LoadClient::Drop(Conn& c) {
  std::fprintf(stderr, "connection %d closed with %zu in flight\n", Index(c), c.inflight.size());
  ++broken_;
  lost_ += c.inflight.size();
  in_flight_ -= c.inflight.size();
  c.inflight.clear();
  c.dead = true;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
  close(c.fd);
}

void LoadClient::ReadMetrics() {
  const ssize_t got = read(metrics_fd_, buf_, sizeof(buf_));
  if (got <= 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, metrics_fd_, nullptr);
    close(metrics_fd_);
    metrics_fd_ = -1;
    return;
  }
  metrics_in_.append(buf_, static_cast<size_t>(got));
  int status = 0;
  size_t body = 0, body_len = 0;
  if (const size_t len = CompleteResponse(metrics_in_, 0, &status, &body, &body_len); len > 0) {
    server_metrics_ = ParseMetrics(metrics_in_.substr(body, body_len));
    metrics_in_.erase(0, len);
    metrics_busy_ = false;
  }
}

void LoadClient::ReadAnswers(int i, Clock::time_point got_at, const ResponseHandler& on_response) {
  Conn& c = conns_[i];
  const ssize_t got = read(c.fd, buf_, sizeof(buf_));
  if (got <= 0) {
    if (got < 0 && errno == EAGAIN) {
      return;
    }
    Drop(c);
    return;
  }
  c.in.append(buf_, static_cast<size_t>(got));
  int status = 0;
  size_t body = 0, body_len = 0;
  while (!c.inflight.empty()) {
    const size_t len = CompleteResponse(c.in, c.in_off, &status, &body, &body_len);
    if (len == 0) {
      break;
    }
    const Pending p = c.inflight.front();
    c.inflight.pop_front();
    --in_flight_;
    on_response(p, status, std::string_view(c.in.data() + body, body_len), got_at);
    c.in_off += len;
    if (!c.ready) {
      c.ready = true;
      (c.tracked ? ready_tr_ : ready_bg_).push_back(i);
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

}  // namespace floodgate::overload
