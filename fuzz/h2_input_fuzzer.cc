// Fuzzes HTTP/2 input to the native gRPC server: the real server (NewNativeGrpcServer: our
// nghttp2 session code in h2_session.cc, grpc_native.cc's calls, the service) listens on
// 127.0.0.1 in this process, and each input is what one client sends on a new connection after
// the connection preface (frames: SETTINGS, HEADERS with HPACK, DATA, RST_STREAM, GOAWAY...).
// The target then closes its sending side and reads what the server answers until it closes
// the connection, or for at most 2 s. ASan and UBSan watch the server's io threads as well.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "fuzz/fuzz_node.h"
#include "src/frontends/grpc/grpc_native.h"
#include "src/frontends/grpc/grpc_service.h"
#include "src/net/server.h"

namespace {

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Returns the port of the process's server, started on first use.
int ServerPort() {
  static const int port = [] {
    floodgate::fuzz::Node& node = floodgate::fuzz::Node::Get();
    floodgate::frontends::GrpcServerOptions options;
    options.address = "127.0.0.1:0";
    options.io_threads = 1;
    options.request_timeout = absl::Seconds(1);
    options.idle_timeout = absl::Seconds(2);
    options.max_receive_bytes = 64 * 1024;
    auto* server = floodgate::frontends::NewNativeGrpcServer(options, &node.service(),
                                                             &node.metrics())
                       .release();  // never stopped: libFuzzer exits without unwinding
    if (absl::Status started = server->Start(); !started.ok()) {
      std::fprintf(stderr, "h2_input_fuzzer: %s\n", started.ToString().c_str());
      std::abort();
    }
    return server->port();
  }();
  return port;
}

bool SendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) {
      return false;  // the server closed early: a valid answer to bad input
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int port = ServerPort();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = -1;
  // A connect can fail for a moment when the machine is short of something (the listener's
  // backlog, ephemeral ports): retry, and give up loudly only if it keeps failing.
  for (int attempt = 0; fd < 0; ++attempt) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd);
      fd = -1;
    }
    if (fd < 0) {
      if (attempt == 100) {
        std::perror("h2_input_fuzzer: cannot connect to its server");
        std::abort();
      }
      ::usleep(10'000);
    }
  }
  // Closing with a reset leaves no TIME_WAIT behind: a long run opens a connection per input
  // and would otherwise run out of ephemeral ports.
  const linger reset{.l_onoff = 1, .l_linger = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  const timeval read_timeout{.tv_sec = 2, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &read_timeout, sizeof(read_timeout));
  if (SendAll(fd, kPreface) &&
      SendAll(fd, std::string_view(reinterpret_cast<const char*>(data), size))) {
    ::shutdown(fd, SHUT_WR);
  }
  char buffer[16 * 1024];
  while (::recv(fd, buffer, sizeof(buffer), 0) > 0) {
  }
  ::close(fd);
  return 0;
}
