#pragma once

// TLS for the connection layer (OpenSSL through boost::asio::ssl), written once for every server
// and client of ours: loading and checking the certificate files (LoadTlsCredentials), the
// OpenSSL contexts (TlsContext: the accepting side, or the dialling side), and the byte stream a
// connection reads and writes (Stream: the plain socket, or TLS over it). A session starts with
// Stream::AsyncHandshake under its own read deadline, so a client that connects and sends
// nothing (or dribbles a ClientHello) is closed by the listener's sweeper like any idle
// connection, and counts under the connection caps while it handshakes. Nothing here knows what
// is served over the stream. docs/tls.md.
//
// Thread-safety: TlsCredentials is a value; a TlsContext is immutable once made and may be
// shared by every thread; a Stream belongs to its connection's single chain of operations (one
// read and one write at a time, as with a socket; with TLS, every operation on one thread at a
// time: one io thread, or a strand), and only its socket's shutdown may come from another
// thread.

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "src/net/listener.h"

namespace floodgate::net {

// The files an operator names: --tls-cert, --tls-key, --tls-client-ca for the front ends (the
// flag names appear in errors, since these files come from nowhere else), and the name a
// client's certificate must carry.
struct TlsFiles {
  std::string cert_file;  // PEM: our certificate, then any intermediates
  std::string key_file;   // PEM: its private key (not encrypted)
  // PEM: CA certificates the other end's certificate must chain to; "": no mTLS.
  std::string client_ca_file;
  // With client_ca_file, on an accepting side: a DNS name (or an IP address) the client's
  // certificate must carry as a subject alternative name; "": any certificate the CA signed.
  std::string client_san;
};

// The flags TlsFiles came from, for errors: the front ends' by default.
struct TlsFlagNames {
  std::string cert = "--tls-cert";
  std::string key = "--tls-key";
  std::string ca = "--tls-client-ca";
  std::string san = "--tls-client-san";
};

// The checked contents of TlsFiles, PEM text, as both OpenSSL contexts and grpc++ take them.
struct TlsCredentials {
  std::string cert_chain_pem;
  std::string key_pem;
  // The CA the other end's certificate must chain to: on an accepting side, its clients'
  // (empty: clients are not asked for a certificate); on a dialling side, the server's.
  std::string client_ca_pem;
  // Accepting side, with client_ca_pem: the DNS name (or IP address) a client's certificate
  // must carry as a subject alternative name (TlsFiles::client_san); "": no name check.
  std::string client_san;
  bool mutual() const { return !client_ca_pem.empty(); }
};

// Reads and checks the files: each readable and PEM, the key the certificate's, the CA file at
// least one certificate; a client SAN only with a CA, and a name (no spaces, at most 253
// bytes). InvalidArgument naming the flag and the file otherwise
// ("--tls-key /etc/fg/key.pem does not match the certificate in --tls-cert /etc/fg/cert.pem").
absl::StatusOr<TlsCredentials> LoadTlsCredentials(const TlsFiles& files,
                                                  const TlsFlagNames& flags = {});

// Which end of the handshake a context (and the streams made with it) plays.
enum class TlsRole { kServer, kClient };

// An OpenSSL context, TLS 1.2 at least, for one role:
//  - New (server): the certificate and key, and with a client CA a required and verified client
//    certificate (a missing or untrusted one fails the handshake); with a client SAN as well,
//    a client certificate that does not carry that name fails it too. The name is matched as
//    a TLS client matches a server's name: DNS subject alternative names only (never the
//    subject's CN), case-insensitively, a certificate's "*.example.com" matching one label
//    (no partial wildcards such as "f*.example.com"); an IP address against IP SANs. ALPN: the
//    server picks `alpn_protocol` ("http/1.1", "h2") when the client offers it, and goes on
//    without ALPN when the client offers none it serves.
//  - NewClient: verifies the server's certificate against the CA (client_ca_pem, required), and
//    presents the certificate and key when given (for a server asking for one). The server's
//    name is not checked: a caller that needs to know whom it reached proves it otherwise (the
//    peer transport's handshake does). Offers `alpn_protocol`.
class TlsContext {
 public:
  // InvalidArgument when OpenSSL refuses the credentials (LoadTlsCredentials has checked them).
  static absl::StatusOr<std::unique_ptr<TlsContext>> New(const TlsCredentials& credentials,
                                                         std::string alpn_protocol);
  // InvalidArgument as New, without a CA, and with a client SAN (an accepting side's check).
  static absl::StatusOr<std::unique_ptr<TlsContext>> NewClient(const TlsCredentials& credentials,
                                                               std::string alpn_protocol);

  boost::asio::ssl::context& native() { return context_; }
  TlsRole role() const { return role_; }

 private:
  // Takes `handle` over.
  TlsContext(SSL_CTX* handle, TlsRole role, std::string alpn_wire)
      : context_(handle), role_(role), alpn_wire_(std::move(alpn_wire)) {}
  // Returns a context of `role` with the protocol floor, the options, and the certificate and
  // key when given (required for a server).
  static absl::StatusOr<std::unique_ptr<TlsContext>> Make(TlsRole role,
                                                          const TlsCredentials& credentials,
                                                          const std::string& alpn_protocol);
  static int SelectAlpn(SSL* ssl, const unsigned char** out, unsigned char* out_len,
                        const unsigned char* in, unsigned int in_len, void* arg);

  boost::asio::ssl::context context_;
  const TlsRole role_;
  const std::string alpn_wire_;  // the protocol as ALPN writes it: length byte, then name
};

// A connection's bytes: the socket itself, or TLS over it when made with a TlsContext. Models
// Asio's AsyncReadStream and AsyncWriteStream, so Beast and asio::async_write take it as they
// take a socket. Not movable (the TLS layer refers to the socket): keep it in the session.
class Stream {
 public:
  using executor_type = Executor;
  using lowest_layer_type = Socket;

  // `tls` null: plain. Otherwise `tls` must outlive the stream, whose handshake plays its role.
  Stream(Socket socket, TlsContext* tls) : socket_(std::move(socket)) {
    if (tls != nullptr) {
      tls_.emplace(socket_, tls->native());
      client_ = tls->role() == TlsRole::kClient;
    }
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  executor_type get_executor() { return socket_.get_executor(); }
  Socket& socket() { return socket_; }
  bool is_tls() const { return tls_.has_value(); }

  // Runs the TLS handshake in the context's role and calls `handler(error_code)`; for a plain
  // stream, posts success. Never blocks: put a deadline on it as on a read.
  template <class Handler>
  void AsyncHandshake(Handler&& handler) {
    if (tls_.has_value()) {
      tls_->async_handshake(
          client_ ? boost::asio::ssl::stream_base::client : boost::asio::ssl::stream_base::server,
          std::forward<Handler>(handler));
    } else {
      boost::asio::post(socket_.get_executor(), [h = std::forward<Handler>(handler)]() mutable {
        h(boost::system::error_code());
      });
    }
  }

  template <class MutableBuffers, class Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    if (tls_.has_value()) {
      tls_->async_read_some(buffers, std::forward<Handler>(handler));
    } else {
      socket_.async_read_some(buffers, std::forward<Handler>(handler));
    }
  }

  template <class ConstBuffers, class Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    if (tls_.has_value()) {
      tls_->async_write_some(buffers, std::forward<Handler>(handler));
    } else {
      socket_.async_write_some(buffers, std::forward<Handler>(handler));
    }
  }

 private:
  Socket socket_;
  std::optional<boost::asio::ssl::stream<Socket&>> tls_;
  bool client_ = false;
};

}  // namespace floodgate::net
