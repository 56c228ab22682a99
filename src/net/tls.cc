#include "src/net/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace floodgate::net {
namespace {

// Certificate and key files are small; anything larger is not one.
constexpr std::streamoff kMaxPemBytes = 1 << 20;

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

// "--tls-cert /etc/fg/cert.pem".
std::string Named(absl::string_view flag, const std::string& file) {
  return absl::StrCat(flag, " ", file);
}

absl::StatusOr<std::string> ReadPem(absl::string_view flag, const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(Named(flag, file), ": cannot read it: ", std::strerror(errno)));
  }
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0 || size > kMaxPemBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        Named(flag, file), ": cannot read it (not a regular file, or larger than 1 MiB)"));
  }
  in.seekg(0);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(Named(flag, file), ": cannot read it"));
  }
  return text.str();
}

Bio MemoryBio(const std::string& text) {
  return Bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// Returns the PEM certificates in `text`, in order (none when there is no PEM certificate).
std::vector<Cert> ReadCerts(const std::string& text) {
  std::vector<Cert> certs;
  Bio bio = MemoryBio(text);
  while (bio != nullptr) {
    Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) {
      break;
    }
    certs.push_back(std::move(cert));
  }
  ERR_clear_error();
  return certs;
}

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) {
    return "unknown OpenSSL error";
  }
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

// Returns whether `text` is an IPv4 or IPv6 address (then matched against IP SANs).
bool IsIpAddress(const std::string& text) {
  unsigned char address[16];
  return inet_pton(AF_INET, text.c_str(), address) == 1 ||
         inet_pton(AF_INET6, text.c_str(), address) == 1;
}

// A DNS name is at most 253 bytes; spaces, commas and control characters are a mistake (two
// names in one flag), not a name.
absl::Status CheckSan(absl::string_view flag, const std::string& san) {
  const bool printable = std::all_of(san.begin(), san.end(), [](char c) {
    return absl::ascii_isgraph(static_cast<unsigned char>(c)) && c != ',';
  });
  if (san.size() > 253 || !printable) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag,
                     " must be one DNS name (or IP address) a client certificate carries, such as "
                     "envoy.example.com (got '",
                     san, "')"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TlsCredentials> LoadTlsCredentials(const TlsFiles& files,
                                                  const TlsFlagNames& flags) {
  if (files.cert_file.empty() != files.key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        flags.cert, " and ", flags.key, " go together: give both (TLS) or neither (plain)"));
  }
  if (files.cert_file.empty()) {
    return absl::InvalidArgumentError(
        files.client_ca_file.empty()
            ? absl::StrCat("TLS needs ", flags.cert, " and ", flags.key)
            : absl::StrCat(flags.ca, " needs ", flags.cert, " and ", flags.key,
                           " (mTLS is TLS with client certificates)"));
  }
  if (!files.client_san.empty()) {
    if (files.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(flags.san, " needs ", flags.ca,
                       " (the name is checked on client certificates, which only mTLS asks for)"));
    }
    if (absl::Status san = CheckSan(flags.san, files.client_san); !san.ok()) {
      return san;
    }
  }
  TlsCredentials credentials;
  absl::StatusOr<std::string> cert_pem = ReadPem(flags.cert, files.cert_file);
  if (!cert_pem.ok()) {
    return cert_pem.status();
  }
  std::vector<Cert> chain = ReadCerts(*cert_pem);
  if (chain.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Named(flags.cert, files.cert_file),
                     " holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"));
  }
  absl::StatusOr<std::string> key_pem = ReadPem(flags.key, files.key_file);
  if (!key_pem.ok()) {
    return key_pem.status();
  }
  Bio key_bio = MemoryBio(*key_pem);
  // No password callback: an encrypted key fails here instead of prompting on the terminal.
  Key key(key_bio == nullptr
              ? nullptr
              : PEM_read_bio_PrivateKey(
                    key_bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        Named(flags.key, files.key_file),
        " holds no PEM private key, or an encrypted one (expected -----BEGIN PRIVATE KEY----- "
        "without a password)"));
  }
  if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(Named(flags.key, files.key_file),
                                                   " does not match the certificate in ",
                                                   Named(flags.cert, files.cert_file)));
  }
  credentials.cert_chain_pem = *std::move(cert_pem);
  credentials.key_pem = *std::move(key_pem);
  if (!files.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca_pem = ReadPem(flags.ca, files.client_ca_file);
    if (!ca_pem.ok()) {
      return ca_pem.status();
    }
    if (ReadCerts(*ca_pem).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(Named(flags.ca, files.client_ca_file),
                       " holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"));
    }
    credentials.client_ca_pem = *std::move(ca_pem);
    credentials.client_san = files.client_san;
  }
  return credentials;
}

absl::StatusOr<std::unique_ptr<TlsContext>> TlsContext::Make(TlsRole role,
                                                             const TlsCredentials& credentials,
                                                             const std::string& alpn_protocol) {
  namespace ssl = boost::asio::ssl;
  if (alpn_protocol.empty() || alpn_protocol.size() > 255) {
    return absl::InvalidArgumentError("an ALPN protocol name is 1 to 255 bytes");
  }
  const bool server = role == TlsRole::kServer;
  SSL_CTX* handle = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (handle == nullptr) {
    return absl::InternalError(absl::StrCat("cannot make a TLS context: ", OpenSslError()));
  }
  std::string wire(1, static_cast<char>(alpn_protocol.size()));
  wire += alpn_protocol;
  // The context takes `handle` over (and frees it).
  std::unique_ptr<TlsContext> tls(new TlsContext(handle, role, std::move(wire)));
  if (SSL_CTX_set_min_proto_version(handle, TLS1_2_VERSION) != 1) {
    return absl::InternalError(absl::StrCat("cannot require TLS 1.2: ", OpenSslError()));
  }
  SSL_CTX_set_options(handle, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                  (server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
  if (!server && credentials.cert_chain_pem.empty()) {
    return tls;  // a client that presents no certificate
  }
  boost::system::error_code ec;
  tls->context_.use_certificate_chain(
      boost::asio::buffer(credentials.cert_chain_pem.data(), credentials.cert_chain_pem.size()),
      ec);
  if (!ec) {
    tls->context_.use_private_key(
        boost::asio::buffer(credentials.key_pem.data(), credentials.key_pem.size()),
        ssl::context::pem, ec);
  }
  if (!ec && SSL_CTX_check_private_key(handle) != 1) {
    return absl::InvalidArgumentError("the TLS key does not match the certificate");
  }
  if (ec) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("OpenSSL refused the TLS certificate or key: ", ec.message()));
  }
  return tls;
}

absl::StatusOr<std::unique_ptr<TlsContext>> TlsContext::New(const TlsCredentials& credentials,
                                                            std::string alpn_protocol) {
  namespace ssl = boost::asio::ssl;
  absl::StatusOr<std::unique_ptr<TlsContext>> made =
      Make(TlsRole::kServer, credentials, alpn_protocol);
  if (!made.ok()) {
    return made.status();
  }
  std::unique_ptr<TlsContext> tls = *std::move(made);
  SSL_CTX* handle = tls->context_.native_handle();
  boost::system::error_code ec;
  if (credentials.mutual()) {
    tls->context_.add_certificate_authority(
        boost::asio::buffer(credentials.client_ca_pem.data(), credentials.client_ca_pem.size()),
        ec);
    if (ec) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat("OpenSSL refused the TLS client CA: ", ec.message()));
    }
    // Tells clients which CAs we take (the CertificateRequest's list), so that one holding
    // several certificates picks the right one.
    STACK_OF(X509_NAME)* names = sk_X509_NAME_new_null();
    for (const Cert& ca : ReadCerts(credentials.client_ca_pem)) {
      sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(ca.get())));
    }
    SSL_CTX_set_client_CA_list(handle, names);
    tls->context_.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
    if (!credentials.client_san.empty()) {
      // The context's verify parameters are copied into each connection's, and OpenSSL checks
      // their host (or IP) against the leaf certificate whichever side verifies it: here, the
      // client's. Flags as a TLS client checks a server's name (see the header).
      X509_VERIFY_PARAM* param = SSL_CTX_get0_param(handle);
      X509_VERIFY_PARAM_set_hostflags(
          param, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      const bool set =
          IsIpAddress(credentials.client_san)
              ? X509_VERIFY_PARAM_set1_ip_asc(param, credentials.client_san.c_str()) == 1
              : X509_VERIFY_PARAM_set1_host(param, credentials.client_san.data(),
                                            credentials.client_san.size()) == 1;
      if (!set) {
        return absl::InvalidArgumentError(absl::StrCat(
            "OpenSSL refused the client SAN '", credentials.client_san, "': ", OpenSslError()));
      }
    }
  } else {
    tls->context_.set_verify_mode(ssl::verify_none, ec);
  }
  SSL_CTX_set_alpn_select_cb(handle, &TlsContext::SelectAlpn, tls.get());
  return tls;
}

absl::StatusOr<std::unique_ptr<TlsContext>> TlsContext::NewClient(const TlsCredentials& credentials,
                                                                  std::string alpn_protocol) {
  namespace ssl = boost::asio::ssl;
  if (!credentials.mutual()) {
    return absl::InvalidArgumentError("a TLS client needs a CA to verify the server against");
  }
  if (!credentials.client_san.empty()) {
    return absl::InvalidArgumentError(
        "a client SAN is what an accepting side checks on its clients, not a TLS client's");
  }
  absl::StatusOr<std::unique_ptr<TlsContext>> made =
      Make(TlsRole::kClient, credentials, alpn_protocol);
  if (!made.ok()) {
    return made.status();
  }
  std::unique_ptr<TlsContext> tls = *std::move(made);
  boost::system::error_code ec;
  tls->context_.add_certificate_authority(
      boost::asio::buffer(credentials.client_ca_pem.data(), credentials.client_ca_pem.size()), ec);
  if (ec) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("OpenSSL refused the TLS CA: ", ec.message()));
  }
  // The chain is checked against the CA, with no name check (see the header).
  tls->context_.set_verify_mode(ssl::verify_peer, ec);
  // SSL_CTX_set_alpn_protos returns 0 on success.
  if (SSL_CTX_set_alpn_protos(tls->context_.native_handle(),
                              reinterpret_cast<const unsigned char*>(tls->alpn_wire_.data()),
                              static_cast<unsigned int>(tls->alpn_wire_.size())) != 0) {
    return absl::InternalError(absl::StrCat("cannot offer ALPN: ", OpenSslError()));
  }
  return tls;
}

int TlsContext::SelectAlpn(SSL* /*ssl*/, const unsigned char** out, unsigned char* out_len,
                           const unsigned char* in, unsigned int in_len, void* arg) {
  const auto* tls = static_cast<const TlsContext*>(arg);
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, out_len,
                            reinterpret_cast<const unsigned char*>(tls->alpn_wire_.data()),
                            static_cast<unsigned int>(tls->alpn_wire_.size()), in,
                            in_len) != OPENSSL_NPN_NEGOTIATED) {
    // None of the client's protocols is ours: go on without ALPN (the client decides whether
    // that will do) rather than fail the handshake.
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace floodgate::net
