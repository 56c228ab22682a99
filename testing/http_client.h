#pragma once

// A tiny blocking HTTP/1.1 client over a raw TCP socket, for tests only: enough to drive the
// HTTP front end (Content-Length bodies, keep-alive reuse, raw bytes for malformed requests).
// Header-only so that any test target can use it without a library.
//
// Thread-safety: an HttpClient is used by one thread at a time; separate clients are
// independent. Every read and write has a timeout (10 s by default), so a broken server fails
// a test instead of hanging it.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace floodgate::testing {

struct HttpResponse {
  int status = 0;  // 0: no response (the reason is in `error`)
  std::vector<std::pair<std::string, std::string>> headers;  // in order, as received
  std::string body;
  std::string error;  // set when status == 0

  // Returns the first header named `name` (case-insensitive), or "" when absent.
  std::string Header(std::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (key.size() == name.size() && strncasecmp(key.data(), name.data(), name.size()) == 0) {
        return value;
      }
    }
    return "";
  }
  bool HasHeader(std::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (key.size() == name.size() && strncasecmp(key.data(), name.data(), name.size()) == 0) {
        return true;
      }
    }
    return false;
  }
};

// One keep-alive connection to 127.0.0.1:port, opened on first use and reopened when the server
// closed it.
class HttpClient {
 public:
  explicit HttpClient(int port, int timeout_ms = 10'000) : port_(port), timeout_ms_(timeout_ms) {}
  // A server on another IPv4 address (e.g. a node in a network namespace).
  HttpClient(const std::string& host, int port, int timeout_ms = 10'000)
      : port_(port), timeout_ms_(timeout_ms) {
    ::inet_pton(AF_INET, host.c_str(), &host_);
    host_name_ = host;
  }
  ~HttpClient() { Close(); }
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request (Host and Content-Length are added) and returns its response. A request
  // on a reused connection that the server had already closed is retried once on a new one.
  HttpResponse Request(std::string_view method, std::string_view target, std::string_view body = {},
                       const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    std::string request;
    request.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
    request.append("Host: ").append(host_name_).append(":").append(std::to_string(port_));
    request.append("\r\n");
    bool has_length = false;
    for (const auto& [key, value] : headers) {
      request.append(key).append(": ").append(value).append("\r\n");
      has_length = has_length || strcasecmp(key.c_str(), "Content-Length") == 0 ||
                   strcasecmp(key.c_str(), "Transfer-Encoding") == 0;
    }
    if (!has_length && (!body.empty() || method == "POST" || method == "PUT")) {
      request.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
    }
    request.append("\r\n").append(body);

    const bool reused = fd_ >= 0;
    const bool head = method == "HEAD";
    HttpResponse response = Exchange(request, head);
    if (response.status == 0 && reused && !partial_) {
      Close();
      response = Exchange(request, head);
    }
    return response;
  }

  // Writes `bytes` as they are (connecting first if needed) and reads one response.
  HttpResponse SendRaw(std::string_view bytes) { return Exchange(bytes); }

  // Writes `bytes` without reading; returns false when the connection failed.
  bool Send(std::string_view bytes) {
    if (fd_ < 0 && !Connect()) {
      return false;
    }
    return WriteAll(bytes);
  }

  // Reads one response from the connection. With `head_request` (the answer to a HEAD request) the
  // response has no body, whatever its Content-Length says.
  HttpResponse ReadResponse(bool head_request = false) {
    HttpResponse response;
    partial_ = false;
    if (fd_ < 0) {
      response.error = "not connected";
      return response;
    }
    size_t header_end;
    while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!ReadMore(response)) {
        partial_ = !buffer_.empty();
        Close();
        return response;
      }
    }
    partial_ = true;
    const std::string head = buffer_.substr(0, header_end);
    buffer_.erase(0, header_end + 4);
    size_t line_end = head.find("\r\n");
    const std::string status_line = head.substr(0, line_end);
    if (status_line.compare(0, 5, "HTTP/") != 0 || status_line.size() < 12) {
      response.error = "bad status line: " + status_line;
      Close();
      return response;
    }
    const int status = std::atoi(status_line.c_str() + 9);
    while (line_end != std::string::npos) {
      const size_t start = line_end + 2;
      line_end = head.find("\r\n", start);
      const std::string line =
          head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
      const size_t colon = line.find(':');
      if (colon == std::string::npos) {
        continue;
      }
      size_t value_start = colon + 1;
      while (value_start < line.size() && line[value_start] == ' ') {
        ++value_start;
      }
      response.headers.emplace_back(line.substr(0, colon), line.substr(value_start));
    }
    const std::string length = response.Header("Content-Length");
    if (head_request) {
      // No body follows the header of an answer to HEAD.
    } else if (!length.empty()) {
      const size_t want = std::strtoull(length.c_str(), nullptr, 10);
      while (buffer_.size() < want) {
        if (!ReadMore(response)) {
          response.headers.clear();
          Close();
          return response;
        }
      }
      response.body = buffer_.substr(0, want);
      buffer_.erase(0, want);
    } else if (status >= 200 && status != 204 && status != 304) {
      // No length: the body runs to the end of the connection.
      HttpResponse ignored;
      while (ReadMore(ignored)) {
      }
      response.body = std::move(buffer_);
      buffer_.clear();
      Close();
    }
    response.status = status;
    const std::string connection = response.Header("Connection");
    if (strcasecmp(connection.c_str(), "close") == 0) {
      Close();
    }
    return response;
  }

  // Returns true when the server has closed the connection (or it is not open): waits up to the
  // timeout for end-of-stream, ignoring (and dropping) any bytes that arrive first.
  bool WaitForClose() {
    if (fd_ < 0) {
      return true;
    }
    HttpResponse ignored;
    while (ReadMore(ignored)) {
    }
    const bool closed = ignored.error == "connection closed by the server" ||
                        ignored.error.find("reset") != std::string::npos;
    Close();
    return closed;
  }

  bool connected() const { return fd_ >= 0; }
  // Returns how many TCP connections this client has opened (to check keep-alive reuse).
  int connects() const { return connects_; }

  void Close() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    buffer_.clear();
  }

 private:
  HttpResponse Exchange(std::string_view bytes, bool head = false) {
    HttpResponse response;
    partial_ = false;
    if (fd_ < 0 && !Connect()) {
      response.error = "cannot connect: " + std::string(std::strerror(errno));
      return response;
    }
    // A failed write is not final: the server may have answered (413, 400) and stopped reading.
    WriteAll(bytes);
    return ReadResponse(head);
  }

  bool Connect() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      return false;
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    addr.sin_addr = host_;
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      const int saved = errno;
      Close();
      errno = saved;
      return false;
    }
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ++connects_;
    return true;
  }

  bool WriteAll(std::string_view bytes) {
    while (!bytes.empty()) {
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, timeout_ms_) <= 0) {
        return false;
      }
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        return false;
      }
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Appends what the socket has to buffer_; false (and `response.error`) at end or on error.
  bool ReadMore(HttpResponse& response) {
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, timeout_ms_);
    if (ready <= 0) {
      response.error = "timed out waiting for the server";
      return false;
    }
    char chunk[16 * 1024];
    ssize_t n;
    do {
      n = ::recv(fd_, chunk, sizeof(chunk), 0);
    } while (n < 0 && errno == EINTR);
    if (n == 0) {
      response.error = "connection closed by the server";
      return false;
    }
    if (n < 0) {
      response.error = std::string("read failed: ") + std::strerror(errno);
      if (errno == ECONNRESET) {
        response.error = "connection reset by the server";
      }
      return false;
    }
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  const int port_;
  const int timeout_ms_;
  in_addr host_{htonl(INADDR_LOOPBACK)};
  std::string host_name_ = "127.0.0.1";
  int fd_ = -1;
  int connects_ = 0;
  bool partial_ = false;  // the last read failed after part of a response arrived
  std::string buffer_;    // bytes received past the last response
};

// Sends one request on a new connection and returns the response.
inline HttpResponse Request(int port, std::string_view method, std::string_view target,
                            std::string_view body = {},
                            const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  HttpClient client(port);
  return client.Request(method, target, body, headers);
}

}  // namespace floodgate::testing
