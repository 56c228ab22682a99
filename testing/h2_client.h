#pragma once

// A tiny blocking HTTP/2 (h2c, prior knowledge) client on libnghttp2, for tests only: sends raw
// gRPC-shaped requests (any path, headers and body bytes, malformed ones included), many at
// once on one connection, and collects each stream's response headers, body, trailers and
// reset code. Header-only so that any test target linking nghttp2 can use it.
//
// Thread-safety: one H2Client per thread. Every wait has a timeout, so a broken server fails
// a test instead of hanging it.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace floodgate::testing {

struct H2Request {
  std::string path = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
  std::string method = "POST";
  std::string content_type = "application/grpc";
  std::string body;        // sent as is: include the 5-byte gRPC prefix yourself
  bool end_stream = true;  // false: the request stays open (a slow client)
};

struct H2Response {
  bool done = false;        // the stream closed
  uint32_t reset_code = 0;  // the RST_STREAM code, if the stream was reset
  std::map<std::string, std::string> headers;
  std::map<std::string, std::string> trailers;
  std::string body;
  // grpc-status from the trailers, else from a Trailers-Only response; -1 if none.
  int grpc_status() const {
    auto it = trailers.find("grpc-status");
    if (it == trailers.end()) {
      it = headers.find("grpc-status");
      if (it == headers.end()) {
        return -1;
      }
    }
    return std::stoi(it->second);
  }
  std::string grpc_message() const {
    if (auto it = trailers.find("grpc-message"); it != trailers.end()) {
      return it->second;
    }
    auto it = headers.find("grpc-message");
    return it == headers.end() ? std::string() : it->second;
  }
};

// Returns the 5-byte gRPC prefix plus `message`.
inline std::string GrpcFrame(const std::string& message, uint8_t flag = 0) {
  std::string out(5, '\0');
  out[0] = static_cast<char>(flag);
  const uint32_t n = static_cast<uint32_t>(message.size());
  out[1] = static_cast<char>(n >> 24);
  out[2] = static_cast<char>(n >> 16);
  out[3] = static_cast<char>(n >> 8);
  out[4] = static_cast<char>(n);
  return out + message;
}

// Returns a connected blocking TCP socket to 127.0.0.1:port, or -1.
inline int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// Returns whether the peer closed `fd` (read returns 0 or an error) within `timeout_ms`.
inline bool ClosedByPeer(int fd, int timeout_ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[4096];
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          end - std::chrono::steady_clock::now())
                                          .count());
    if (poll(&p, 1, std::max(left, 1)) <= 0) {
      continue;
    }
    if (read(fd, buf, sizeof(buf)) <= 0) {
      return true;
    }
  }
  return false;
}

class H2Client {
 public:
  // `stream_window`: the SETTINGS_INITIAL_WINDOW_SIZE it announces (0: the server may send no
  // response DATA, as from a client that stops reading).
  explicit H2Client(int port, uint32_t stream_window = 1 << 20) : fd_(ConnectLoopback(port)) {
    nghttp2_session_callbacks* cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, &OnHeader);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, &OnData);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, &OnClose);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, &OnFrame);
    nghttp2_session_client_new(&h2_, cb, this);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry window{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, stream_window};
    nghttp2_submit_settings(h2_, NGHTTP2_FLAG_NONE, &window, 1);
  }
  ~H2Client() {
    nghttp2_session_del(h2_);
    if (fd_ >= 0) {
      close(fd_);
    }
  }
  H2Client(const H2Client&) = delete;
  H2Client& operator=(const H2Client&) = delete;

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  bool goaway_received() const { return goaway_; }
  bool connection_closed() const { return eof_; }

  // Starts the requests; returns their stream ids (-1 where nghttp2 refused).
  std::vector<int32_t> Start(const std::vector<H2Request>& requests) {
    std::vector<int32_t> ids;
    for (const H2Request& r : requests) {
      bodies_.push_back(Body{r.body, 0, r.end_stream});
      Body* body = &bodies_.back();
      const nghttp2_nv nva[] = {Nv(":method", r.method),
                                Nv(":scheme", "http"),
                                Nv(":path", r.path),
                                Nv(":authority", "localhost"),
                                Nv("content-type", r.content_type),
                                Nv("te", "trailers")};
      nghttp2_data_provider provider;
      provider.source.ptr = body;
      provider.read_callback = &ReadBody;
      const int32_t id = nghttp2_submit_request(h2_, nullptr, nva, 6, &provider, nullptr);
      ids.push_back(id);
      if (id > 0) {
        responses_[id];
        open_bodies_[id] = body;
      }
    }
    Pump(0);
    return ids;
  }

  // Pumps I/O until the streams are done (or the connection closes, or the timeout passes).
  bool Wait(const std::vector<int32_t>& ids, int timeout_ms = 10000) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      bool all = true;
      for (int32_t id : ids) {
        all &= id <= 0 || responses_[id].done;
      }
      if (all) {
        return true;
      }
      if (eof_ || std::chrono::steady_clock::now() >= end) {
        return false;
      }
      Pump(20);
    }
  }

  // Sends and waits for one request.
  H2Response Call(const H2Request& request, int timeout_ms = 10000) {
    std::vector<int32_t> ids = Start({request});
    Wait(ids, timeout_ms);
    return ids[0] > 0 ? responses_[ids[0]] : H2Response{};
  }

  const H2Response& response(int32_t id) { return responses_[id]; }

  // Sends `more` body bytes on a stream started with end_stream = false, and ends it.
  void Finish(int32_t id, const std::string& more) {
    Body* body = open_bodies_[id];
    body->bytes += more;
    body->end_stream = true;
    nghttp2_session_resume_data(h2_, id);
    Pump(0);
  }

  // Writes pending frames, then reads for up to `timeout_ms`.
  void Pump(int timeout_ms) {
    while (!eof_) {
      const uint8_t* data;
      const ssize_t n = nghttp2_session_mem_send(h2_, &data);
      if (n <= 0) {
        break;
      }
      if (send(fd_, data, static_cast<size_t>(n), MSG_NOSIGNAL) != n) {
        eof_ = true;
      }
    }
    pollfd p{fd_, POLLIN, 0};
    if (eof_ || poll(&p, 1, timeout_ms) <= 0) {
      return;
    }
    uint8_t buf[16384];
    const ssize_t n = read(fd_, buf, sizeof(buf));
    if (n <= 0) {
      eof_ = true;
      return;
    }
    if (nghttp2_session_mem_recv(h2_, buf, static_cast<size_t>(n)) < 0) {
      eof_ = true;
    }
  }

 private:
  struct Body {
    std::string bytes;
    size_t offset;
    bool end_stream;
  };

  // `value` must outlive the submit call: a literal or a caller's string.
  static nghttp2_nv Nv(const char* name, std::string_view value) {
    return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name)),
                      reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), strlen(name),
                      value.size(), NGHTTP2_NV_FLAG_NONE};
  }
  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                          nghttp2_data_source* source, void*) {
    auto* body = static_cast<Body*>(source->ptr);
    const size_t n = std::min(length, body->bytes.size() - body->offset);
    memcpy(buf, body->bytes.data() + body->offset, n);
    body->offset += n;
    if (body->offset == body->bytes.size()) {
      if (!body->end_stream) {
        return n == 0 ? NGHTTP2_ERR_DEFERRED : static_cast<ssize_t>(n);
      }
      *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return static_cast<ssize_t>(n);
  }
  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* user) {
    auto* self = static_cast<H2Client*>(user);
    H2Response& r = self->responses_[frame->hd.stream_id];
    std::string n(reinterpret_cast<const char*>(name), namelen);
    std::string v(reinterpret_cast<const char*>(value), valuelen);
    (frame->headers.cat == NGHTTP2_HCAT_HEADERS ? r.trailers : r.headers)[n] = v;
    return 0;
  }
  static int OnData(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len,
                    void* user) {
    static_cast<H2Client*>(user)->responses_[id].body.append(reinterpret_cast<const char*>(data),
                                                             len);
    return 0;
  }
  static int OnClose(nghttp2_session*, int32_t id, uint32_t code, void* user) {
    H2Response& r = static_cast<H2Client*>(user)->responses_[id];
    r.done = true;
    r.reset_code = code;
    return 0;
  }
  static int OnFrame(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      static_cast<H2Client*>(user)->goaway_ = true;
    }
    return 0;
  }

  int fd_;
  nghttp2_session* h2_ = nullptr;
  bool eof_ = false;
  bool goaway_ = false;
  std::deque<Body> bodies_;  // a deque: nghttp2 holds pointers to its elements
  std::map<int32_t, H2Response> responses_;
  std::map<int32_t, Body*> open_bodies_;
};

}  // namespace floodgate::testing
