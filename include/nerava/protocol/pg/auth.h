// Password authentication helpers: SCRAM-SHA-256 (RFC 5802 / RFC 7677, as PostgreSQL speaks it,
// without channel binding) on both sides, and PostgreSQL's MD5 scheme. OpenSSL does the crypto.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nerava::pg {

inline constexpr std::string_view kScramSha256 = "SCRAM-SHA-256";

// "md5" + md5hex(md5hex(password + user) + salt), what a client sends for AuthenticationMD5.
std::string Md5PasswordResponse(std::string_view user, std::string_view password,
                                std::string_view salt4);

// A random printable nonce (base64 of 18 random bytes), for either side.
std::string MakeScramNonce();

// Proxy -> PostgreSQL server: the client side of the exchange.
class ScramClient {
 public:
  explicit ScramClient(std::string password, std::string nonce = MakeScramNonce());

  // "n,,n=,r=<nonce>" (PostgreSQL ignores the SCRAM user name; the startup user counts).
  std::string ClientFirstMessage() const;
  // Checks the server-first message and returns the client-final message (with the proof).
  absl::StatusOr<std::string> HandleServerFirst(std::string_view server_first);
  // Checks the server's signature: PermissionDenied when it does not match.
  absl::Status HandleServerFinal(std::string_view server_final) const;

 private:
  std::string password_;
  std::string nonce_;
  std::string client_first_bare_;
  std::string expected_server_signature_;  // raw bytes, set by HandleServerFirst
};

// What a server stores for a SCRAM user (pg_authid's "SCRAM-SHA-256$iter:salt$stored:server").
struct ScramSecret {
  int iterations = 4096;
  std::string salt;        // raw bytes
  std::string stored_key;  // raw bytes
  std::string server_key;  // raw bytes
};

// Derives a secret from a plain password with a random salt.
ScramSecret MakeScramSecret(std::string_view password, int iterations = 4096);
// Parses the pg_authid text form; InvalidArgument when malformed.
absl::StatusOr<ScramSecret> ParseScramSecret(std::string_view text);

// Client -> proxy: the server side of the exchange.
class ScramServer {
 public:
  explicit ScramServer(ScramSecret secret, std::string nonce = MakeScramNonce());

  // Takes the client-first message (from SASLInitialResponse), returns server-first.
  // InvalidArgument when malformed or when it asks for channel binding ("p=").
  absl::StatusOr<std::string> HandleClientFirst(std::string_view client_first);
  // Takes client-final, verifies the proof, returns server-final ("v=...").
  // PermissionDenied when the proof is wrong (wrong password), InvalidArgument when malformed.
  absl::StatusOr<std::string> HandleClientFinal(std::string_view client_final);

 private:
  ScramSecret secret_;
  std::string server_nonce_part_;
  std::string combined_nonce_;
  std::string client_first_bare_;
  std::string server_first_;
  std::string gs2_header_;
};

}  // namespace nerava::pg
