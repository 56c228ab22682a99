#pragma once

// A throw-away PKI for TLS tests, made at test time with the `openssl` command line (nothing
// checked in): a CA, a server certificate for localhost / 127.0.0.1 it signed, a client
// certificate it signed, a member certificate for cluster peers (both server and client use, as
// a member both accepts and dials) it signed, and a second CA with a client certificate and a
// member certificate of its own (which the first CA does not trust), and a client certificate
// with subject alternative names (DNS:envoy.example.internal, DNS:*.mesh.example.internal,
// IP:10.1.2.3) for the client SAN checks. EC P-256 keys, valid for a day.

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace floodgate::testing {

struct TestPki {
  std::string dir;
  std::string ca_cert;  // the CA the server trusts for clients (and clients for it)
  std::string server_cert, server_key;
  std::string client_cert, client_key;              // signed by ca_cert; CN=client, no SAN
  std::string san_client_cert, san_client_key;      // signed by ca_cert; the SANs above
  std::string other_ca_cert;                        // another CA
  std::string other_client_cert, other_client_key;  // signed by other_ca_cert
  std::string peer_cert, peer_key;                  // signed by ca_cert; serverAuth, clientAuth
  std::string other_peer_cert, other_peer_key;      // the same, signed by other_ca_cert
};

// Returns the PEM text of `path` ("" when unreadable).
inline std::string ReadFileText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Writes the PKI into `dir` (which must exist). Unavailable when openssl fails.
inline absl::StatusOr<TestPki> MakeTestPki(const std::string& dir) {
  const std::string script = absl::StrCat(
      "set -e; cd '", dir, "'\n",
      "key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$1\"; }\n",
      "ca() { key $1.key; openssl req -x509 -new -key $1.key -out $1.pem -days 1 -subj /CN=$1; }\n",
      // sign NAME CA EXTENSIONS
      "sign() { key $1.key; openssl req -new -key $1.key -out $1.csr -subj /CN=$1;\n"
      "  printf '%s\\n' \"$3\" > $1.ext;\n"
      "  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days 1 "
      "-extfile $1.ext -out $1.pem; }\n",
      "ca ca; ca other-ca\n",
      "sign server ca 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth'\n",
      "sign client ca 'extendedKeyUsage=clientAuth'\n",
      "sign san-client ca 'subjectAltName=DNS:envoy.example.internal,DNS:*.mesh.example.internal,"
      "IP:10.1.2.3\nextendedKeyUsage=clientAuth'\n",
      "sign other-client other-ca 'extendedKeyUsage=clientAuth'\n",
      "sign peer ca 'extendedKeyUsage=serverAuth,clientAuth'\n",
      "sign other-peer other-ca 'extendedKeyUsage=serverAuth,clientAuth'\n");
  const std::string script_path = dir + "/make-pki.sh";
  std::ofstream(script_path) << script;
  const std::string command =
      absl::StrCat("bash '", script_path, "' > '", dir, "/make-pki.log' 2>&1");
  if (std::system(command.c_str()) != 0) {
    return absl::UnavailableError(
        absl::StrCat("openssl could not make the test PKI: ", ReadFileText(dir + "/make-pki.log")));
  }
  TestPki pki;
  pki.dir = dir;
  pki.ca_cert = dir + "/ca.pem";
  pki.server_cert = dir + "/server.pem";
  pki.server_key = dir + "/server.key";
  pki.client_cert = dir + "/client.pem";
  pki.client_key = dir + "/client.key";
  pki.san_client_cert = dir + "/san-client.pem";
  pki.san_client_key = dir + "/san-client.key";
  pki.other_ca_cert = dir + "/other-ca.pem";
  pki.other_client_cert = dir + "/other-client.pem";
  pki.other_client_key = dir + "/other-client.key";
  pki.peer_cert = dir + "/peer.pem";
  pki.peer_key = dir + "/peer.key";
  pki.other_peer_cert = dir + "/other-peer.pem";
  pki.other_peer_key = dir + "/other-peer.key";
  return pki;
}

}  // namespace floodgate::testing
