#include "src/frontends/grpc/h2_session.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <utility>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "src/frontends/grpc/grpc_wire.h"

namespace floodgate::frontends::grpc_internal {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

// a + b, saturating (timeouts may be "infinite").
int64_t AddNs(int64_t a, int64_t b) {
  return b >= std::numeric_limits<int64_t>::max() - a ? std::numeric_limits<int64_t>::max() : a + b;
}

}  // namespace

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

H2Session::H2Session(net::Socket socket, Worker* worker, net::ConnectionSlot slot,
                     const H2Config* config, net::TlsContext* tls)
    : stream_(std::move(socket), tls),
      socket_(stream_.socket()),
      worker_(worker),
      slot_(std::move(slot)),
      config_(config) {
  accepted_ns_ = config_->Now();
  idle_since_ns_ = accepted_ns_;
  if (stream_.is_tls()) {
    tls_read_.resize(kTlsReadBytes);
  }
}

bool FrameTracker::Feed(const uint8_t* data, size_t n) {
  bool ended = false;
  while (n > 0) {
    size_t take = 0;
    if (preface_left_ > 0) {
      take = std::min(n, preface_left_);
      preface_left_ -= take;
      ended |= preface_left_ == 0;
    } else if (header_have_ < kFrameHeaderBytes) {
      take = std::min(n, kFrameHeaderBytes - header_have_);
      for (size_t i = 0; i < take; ++i, ++header_have_) {
        if (header_have_ < length_.size()) {
          length_[header_have_] = data[i];
        }
      }
      if (header_have_ == kFrameHeaderBytes) {
        payload_left_ = (size_t{length_[0]} << 16) | (size_t{length_[1]} << 8) | length_[2];
      }
    } else {
      take = std::min(n, payload_left_);
      payload_left_ -= take;
    }
    data += take;
    n -= take;
    if (preface_left_ == 0 && header_have_ == kFrameHeaderBytes && payload_left_ == 0) {
      header_have_ = 0;
      ++frames_;
      ended = true;
    }
  }
  return ended;
}

H2Session::~H2Session() {
  slot_.Release();  // first: the listener calls the session no more
  if (h2_ != nullptr) {
    nghttp2_session_del(h2_);  // calls no callbacks
  }
  while (head_ != nullptr) {
    Stream* s = head_;
    head_ = s->next;
    delete s;
  }
}

nghttp2_session_callbacks* H2Session::NewCallbacks() {
  nghttp2_session_callbacks* callbacks = nullptr;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, &H2Session::OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, &H2Session::OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &H2Session::OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &H2Session::OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &H2Session::OnStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, &H2Session::OnFrameSend);
  return callbacks;
}

int64_t H2Session::deadline_ns() const {
  if (closed_) {
    return net::kNoDeadline;
  }
  const int64_t timeout = config_->request_timeout_ns;
  int64_t deadline = goaway_sent_ ? close_deadline_ns_ : net::kNoDeadline;
  if (!frames_.handshake_done()) {
    deadline = std::min(deadline, AddNs(accepted_ns_, timeout));
  }
  if (frame_started_ns_ != net::kNoDeadline) {
    deadline = std::min(deadline, AddNs(frame_started_ns_, timeout));
  }
  if (head_ != nullptr) {
    // The oldest stream comes due first (one being decided only makes this early).
    deadline = std::min(deadline, AddNs(head_->opened_ns, timeout));
  } else if (!goaway_sent_) {
    deadline = std::min(deadline, AddNs(idle_since_ns_, config_->idle_timeout_ns));
  }
  return deadline;
}

void H2Session::OnDeadline(int64_t now_ns) {
  worker_->now_ns = std::max(worker_->now_ns, now_ns);  // the listener reads the same clock
  Sweep(now_ns);
}

void H2Session::Start(bool draining) {
  slot_.Register(this);
  error_code ec;
  socket_.non_blocking(true, ec);
  if (!ec) {
    socket_.set_option(tcp::no_delay(true), ec);
  }
  if (ec) {
    Close();
    return;
  }
  if (!stream_.is_tls()) {
    StartHttp2(draining);
    return;
  }
  // Sweep closes the connection if this takes longer than request_timeout (no frame yet).
  stream_.AsyncHandshake([self = shared_from_this(), draining](error_code ec) {
    if (ec || self->closed_) {
      self->Close();
      return;
    }
    self->StartHttp2(draining || self->goaway_pending_);
  });
}

void H2Session::StartHttp2(bool draining) {
  if (nghttp2_session_server_new2(&h2_, config_->callbacks, this, config_->option) != 0) {
    Close();
    return;
  }
  const std::array<nghttp2_settings_entry, 2> settings = {{
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, config_->max_concurrent_streams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(kMaxHeaderBytes)},
  }};
  if (nghttp2_submit_settings(h2_, NGHTTP2_FLAG_NONE, settings.data(), settings.size()) != 0 ||
      nghttp2_session_set_local_window_size(h2_, NGHTTP2_FLAG_NONE, 0, kConnectionWindowBytes) !=
          0) {
    Close();
    return;
  }
  if (draining) {
    GoAway();
  }
  Flush();
  WaitReadable();
}

void H2Session::ShutdownNotice() {
  if (!closed_ && h2_ != nullptr) {
    nghttp2_submit_shutdown_notice(h2_);
    Flush();
  }
}

void H2Session::GoAway() {
  if (!closed_ && h2_ == nullptr) {
    goaway_pending_ = true;  // still in the TLS handshake: sent once HTTP/2 starts
    return;
  }
  if (closed_ || goaway_sent_) {
    return;
  }
  goaway_sent_ = true;
  // The clock, not worker_->now_ns: a thread with no reads of late has not refreshed that.
  close_deadline_ns_ = AddNs(config_->Now(), kCloseGraceNs);
  nghttp2_submit_goaway(h2_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h2_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
  Flush();
}

void H2Session::Sweep(int64_t now_ns) {
  if (closed_) {
    return;
  }
  const int64_t timeout = config_->request_timeout_ns;
  // A read stalled inside the preface or a frame: nothing behind it can be read.
  if ((!frames_.handshake_done() && now_ns - accepted_ns_ >= timeout) ||
      (frame_started_ns_ != net::kNoDeadline && now_ns - frame_started_ns_ >= timeout)) {
    Close();
    return;
  }
  if (goaway_sent_ && now_ns >= close_deadline_ns_ && !draining_streams()) {
    Close();
    return;
  }
  bool reset = false;
  for (Stream* s = head_; s != nullptr; s = s->next) {
    if (s->cancelled || now_ns - s->opened_ns < timeout ||
        (s->request_done && !s->responded)) {  // in full, and being decided
      continue;
    }
    if (!s->headers_done) {
      Close();
      return;
    }
    // The request has not arrived in full, or the response has not left: the client holds it.
    s->cancelled = true;
    s->responded = true;
    ReleaseBody(*s);
    nghttp2_submit_rst_stream(h2_, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    reset = true;
  }
  if (head_ == nullptr && !goaway_sent_ && now_ns - idle_since_ns_ >= config_->idle_timeout_ns) {
    GoAway();
    return;
  }
  if (reset) {
    Flush();
  }
}

void H2Session::Close() {
  if (closed_) {
    return;
  }
  closed_ = true;
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

// nghttp2 callbacks (NewCallbacks), each forwarding to the session.
int H2Session::OnBeginHeaders(nghttp2_session* h2, const nghttp2_frame* frame, void* user) {
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    static_cast<H2Session*>(user)->OpenStream(frame->hd.stream_id);
  }
  return 0;
}
int H2Session::OnHeader(nghttp2_session* h2, const nghttp2_frame* frame, const uint8_t* name,
                        size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                        void* user) {
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
    return 0;  // request trailers: nothing in them matters to a unary call
  }
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id));
  if (s == nullptr) {
    return 0;
  }
  s->header_bytes += namelen + valuelen + 32;  // RFC 9113's accounting
  if (s->header_bytes > kMaxHeaderBytes) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets the stream
  }
  const std::string_view n(reinterpret_cast<const char*>(name), namelen);
  const std::string_view v(reinterpret_cast<const char*>(value), valuelen);
  if (n == ":method") {
    s->post = v == "POST";
  } else if (n == ":path") {
    s->method = v == kShouldRateLimitPath ? Method::kShouldRateLimit
                : v == kHealthCheckPath   ? Method::kHealthCheck
                                          : Method::kUnknown;
    if (s->method == Method::kUnknown) {
      s->path.assign(v.substr(0, 256));
    }
  } else if (n == "content-type") {
    s->grpc_content_type = grpc_wire::IsGrpcContentType(v);
  }
  return 0;
}
int H2Session::OnFrameRecv(nghttp2_session* h2, const nghttp2_frame* frame, void* user) {
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
    return 0;
  }
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id));
  if (s == nullptr) {
    return 0;
  }
  auto* self = static_cast<H2Session*>(user);
  const bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  s->request_done |= end;
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    s->headers_done = true;
    self->CheckHeaders(*s);
  }
  if (end) {
    self->HandleRequest(*s);
  }
  return 0;
}
int H2Session::OnDataChunk(nghttp2_session* h2, uint8_t flags, int32_t stream_id,
                           const uint8_t* data, size_t len, void* user) {
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2, stream_id));
  if (s != nullptr && !s->responded) {
    static_cast<H2Session*>(user)->AppendBody(*s, data, len);
  }
  return 0;
}
// Sends the RST_STREAM an early response asked for. Only after the response: queued together,
// nghttp2 would drop the response's HEADERS for a stream already being reset.
int H2Session::OnFrameSend(nghttp2_session* h2, const nghttp2_frame* frame, void* user) {
  if (frame->hd.type != NGHTTP2_HEADERS || (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
    return 0;
  }
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id));
  if (s != nullptr && s->reset_after_response && !s->request_done) {
    s->reset_after_response = false;
    nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
  }
  return 0;
}
int H2Session::OnStreamClose(nghttp2_session* h2, int32_t stream_id, uint32_t error_code,
                             void* user) {
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(h2, stream_id));
  if (s != nullptr) {
    static_cast<H2Session*>(user)->CloseStream(s);
  }
  return 0;
}
ssize_t H2Session::ReadResponse(nghttp2_session* h2, int32_t stream_id, uint8_t* buf, size_t length,
                                uint32_t* data_flags, nghttp2_data_source* source, void* user) {
  auto* s = static_cast<Stream*>(source->ptr);
  const size_t n = std::min(length, s->response.size() - s->response_offset);
  std::memcpy(buf, s->response.data() + s->response_offset, n);
  s->response_offset += n;
  if (s->response_offset == s->response.size()) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    static const nghttp2_nv kOkTrailers[] = {StaticHeader("grpc-status", "0")};
    if (nghttp2_submit_trailer(h2, stream_id, kOkTrailers, 1) != 0) {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
  }
  return static_cast<ssize_t>(n);
}

// Reads now, on a later turn of the loop, instead of waiting for readiness: for when bytes may
// already be buffered (the read cap was hit, or reading paused for a write). Asio's epoll
// reactor is edge-triggered and drops an edge that comes while no wait is queued, so waiting
// then could sleep until the client sends again.
void H2Session::ResumeReading() {
  if (stream_.is_tls()) {
    ReadTls();  // asynchronous already
    return;
  }
  if (closed_ || waiting_read_) {
    return;
  }
  waiting_read_ = true;
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    self->waiting_read_ = false;
    self->OnReadable();
  });
}

void H2Session::WaitReadable() {
  if (stream_.is_tls()) {
    ReadTls();
    return;
  }
  if (closed_ || waiting_read_) {
    return;
  }
  waiting_read_ = true;
  socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](error_code ec) {
    self->waiting_read_ = false;
    if (ec) {
      self->Close();
      return;
    }
    self->OnReadable();
  });
}

// One turn: read what the socket holds (bounded), let nghttp2 process it (calls are decided
// inside, in its callbacks), then write everything that produced at once.
void H2Session::OnReadable() {
  if (closed_) {
    return;
  }
  worker_->now_ns = config_->Now();
  size_t total = 0;
  bool fatal = false;
  bool drained = false;
  while (total < kMaxReadPerTurn) {
    error_code ec;
    const size_t n = socket_.read_some(asio::buffer(worker_->read_buffer), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      drained = true;
      break;
    }
    if (ec) {  // EOF or error: nothing more will arrive; nothing sent would be read
      Close();
      return;
    }
    total += n;
    if (!Consume(worker_->read_buffer.data(), n)) {
      fatal = true;
      break;
    }
    if (n < worker_->read_buffer.size()) {
      // Drained as of this read; bytes arriving from now on raise an edge that the wait
      // queued before this handler returns will see.
      drained = true;
      break;
    }
  }
  if (fatal) {
    // nghttp2 may have queued a GOAWAY: send it, then close.
    close_after_write_ = true;
  }
  Flush();
  if (!closed_ && !writing_) {
    if (drained || fatal) {
      WaitReadable();
    } else {
      ResumeReading();  // the read cap was hit: the rest after the other connections' turns
    }
  }
}

bool H2Session::Consume(const uint8_t* data, size_t n) {
  const ssize_t used = nghttp2_session_mem_recv(h2_, data, n);
  if (used < 0) {  // not HTTP/2, or a fatal protocol error
    return false;
  }
  // A frame that began in this read is due request_timeout from now; one still arriving from
  // an earlier read keeps its deadline however many bytes trickle in.
  const bool ended = frames_.Feed(data, n);
  if (!frames_.inside()) {
    frame_started_ns_ = net::kNoDeadline;
  } else if (ended || frame_started_ns_ == net::kNoDeadline) {
    frame_started_ns_ = worker_->now_ns;
  }
  return true;
}

void H2Session::ReadTls() {
  if (closed_ || waiting_read_) {
    return;
  }
  waiting_read_ = true;
  stream_.async_read_some(asio::buffer(tls_read_),
                          [self = shared_from_this()](error_code ec, size_t n) {
                            self->waiting_read_ = false;
                            if (self->closed_) {
                              return;
                            }
                            if (ec) {  // EOF, a TLS error, or closed: nothing more will arrive
                              self->Close();
                              return;
                            }
                            self->worker_->now_ns = self->config_->Now();
                            if (!self->Consume(self->tls_read_.data(), n)) {
                              self->close_after_write_ = true;
                            }
                            self->Flush();
                            // Reading waits while a write is pending (its completion resumes it),
                            // as in plain mode.
                            if (!self->closed_ && !self->writing_ && !self->close_after_write_) {
                              self->ReadTls();
                            }
                          });
}

void H2Session::Flush() {
  while (!closed_ && !writing_) {
    out_.clear();
    while (out_.size() < kMaxWriteBytes) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(h2_, &data);
      if (n < 0) {
        Close();
        return;
      }
      if (n == 0) {
        break;
      }
      out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    if (out_.empty()) {
      MaybeClose();
      return;
    }
    error_code ec;
    // Over TLS every write goes through the stream, asynchronously (below, with written 0).
    const size_t written = stream_.is_tls() ? 0 : socket_.write_some(asio::buffer(out_), ec);
    if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
      Close();
      return;
    }
    if (written < out_.size()) {
      writing_ = true;
      auto done = [self = shared_from_this()](error_code ec, size_t) {
        self->writing_ = false;
        if (ec) {
          self->Close();
          return;
        }
        self->Flush();
        if (!self->closed_ && !self->writing_) {
          self->ResumeReading();  // edges during the write were dropped
        }
      };
      const auto rest = asio::buffer(out_.data() + written, out_.size() - written);
      if (stream_.is_tls()) {
        asio::async_write(stream_, rest, std::move(done));
      } else {
        asio::async_write(socket_, rest, std::move(done));
      }
      return;
    }
  }
}

void H2Session::MaybeClose() {
  if (close_after_write_ ||
      (nghttp2_session_want_read(h2_) == 0 && nghttp2_session_want_write(h2_) == 0)) {
    Close();
  }
}

void H2Session::OpenStream(int32_t id) {
  auto* s = new Stream();
  s->id = id;
  s->opened_ns = worker_->now_ns;
  s->prev = tail_;
  (tail_ != nullptr ? tail_->next : head_) = s;
  tail_ = s;
  nghttp2_session_set_stream_user_data(h2_, id, s);
}

void H2Session::CloseStream(Stream* s) {
  ReleaseBody(*s);
  (s->prev != nullptr ? s->prev->next : head_) = s->next;
  (s->next != nullptr ? s->next->prev : tail_) = s->prev;
  nghttp2_session_set_stream_user_data(h2_, s->id, nullptr);
  delete s;
  if (head_ == nullptr) {
    idle_since_ns_ = config_->Now();
  }
}

void H2Session::ReleaseBody(Stream& s) {
  body_bytes_ -= s.body.size();
  std::string().swap(s.body);
}

}  // namespace floodgate::frontends::grpc_internal
