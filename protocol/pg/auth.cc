#include "nerava/protocol/pg/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <charconv>
#include <cstdlib>
#include <optional>
#include <utility>

#include "concat.h"

namespace nerava::pg {
namespace {

using internal::Cat;

constexpr size_t kKeySize = 32;  // SHA-256 output
constexpr size_t kNonceRandomBytes = 18;
constexpr size_t kSaltBytes = 16;  // what PostgreSQL uses
constexpr std::string_view kB64Chars =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

const unsigned char* Bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

std::string Base64Encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (uint32_t{Bytes(in)[i]} << 16) | (uint32_t{Bytes(in)[i + 1]} << 8) |
                       uint32_t{Bytes(in)[i + 2]};
    out.push_back(kB64Chars[(v >> 18) & 63]);
    out.push_back(kB64Chars[(v >> 12) & 63]);
    out.push_back(kB64Chars[(v >> 6) & 63]);
    out.push_back(kB64Chars[v & 63]);
  }
  const size_t left = in.size() - i;
  if (left > 0) {
    uint32_t v = uint32_t{Bytes(in)[i]} << 16;
    if (left == 2) v |= uint32_t{Bytes(in)[i + 1]} << 8;
    out.push_back(kB64Chars[(v >> 18) & 63]);
    out.push_back(kB64Chars[(v >> 12) & 63]);
    out.push_back(left == 2 ? kB64Chars[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

int B64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Strict decoder: padded groups of four, no whitespace; nullopt when malformed.
std::optional<std::string> Base64Decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    int pad = 0;
    if (last && in[i + 3] == '=') pad = in[i + 2] == '=' ? 2 : 1;
    uint32_t v = 0;
    for (size_t j = 0; j < 4; ++j) {
      int d = 0;
      if (j < 4 - static_cast<size_t>(pad)) {
        d = B64Value(in[i + j]);
        if (d < 0) return std::nullopt;
      }
      v = (v << 6) | static_cast<uint32_t>(d);
    }
    out.push_back(static_cast<char>(v >> 16));
    if (pad < 2) out.push_back(static_cast<char>(v >> 8));
    if (pad < 1) out.push_back(static_cast<char>(v));
  }
  return out;
}

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  // A predictable nonce or salt would break the exchange's security; there is no sane fallback.
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    std::abort();
  }
  return out;
}

std::string Hmac(std::string_view key, std::string_view data) {
  std::string out(EVP_MAX_MD_SIZE, '\0');
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), Bytes(data), data.size(),
       reinterpret_cast<unsigned char*>(out.data()), &len);
  out.resize(len);
  return out;
}

std::string Digest(const EVP_MD* md, std::string_view data) {
  std::string out(EVP_MAX_MD_SIZE, '\0');
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(out.data()), &len, md,
             nullptr);
  out.resize(len);
  return out;
}

std::string SaltedPassword(std::string_view password, std::string_view salt, int iterations) {
  std::string out(kKeySize, '\0');
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), Bytes(salt),
                    static_cast<int>(salt.size()), iterations, EVP_sha256(), kKeySize,
                    reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string Xor(std::string_view a, std::string_view b) {
  std::string out(a);
  for (size_t i = 0; i < out.size() && i < b.size(); ++i) out[i] = static_cast<char>(a[i] ^ b[i]);
  return out;
}

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string Hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

// A SCRAM nonce is printable ASCII other than ',' (RFC 5802 "printable").
bool ValidNonce(std::string_view nonce) {
  if (nonce.empty()) return false;
  for (char c : nonce) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

std::optional<int> ParsePositiveInt(std::string_view s) {
  int value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || value <= 0) return std::nullopt;
  return value;
}

// Splits off the next "x=value" attribute of a comma-separated SCRAM message.
bool NextAttribute(std::string_view& rest, char name, std::string_view& value) {
  if (rest.size() < 2 || rest[0] != name || rest[1] != '=') return false;
  const size_t comma = rest.find(',');
  value = rest.substr(2, comma == std::string_view::npos ? std::string_view::npos : comma - 2);
  rest.remove_prefix(comma == std::string_view::npos ? rest.size() : comma + 1);
  return true;
}

absl::Status Malformed(std::string_view what) {
  return absl::InvalidArgumentError(Cat("malformed SCRAM ", what));
}

}  // namespace

std::string Md5PasswordResponse(std::string_view user, std::string_view password,
                                std::string_view salt4) {
  const std::string inner = Hex(Digest(EVP_md5(), Cat(password, user)));
  return Cat("md5", Hex(Digest(EVP_md5(), Cat(inner, salt4))));
}

std::string MakeScramNonce() { return Base64Encode(RandomBytes(kNonceRandomBytes)); }

// ---- ScramClient -----------------------------------------------------------------------------

ScramClient::ScramClient(std::string password, std::string nonce)
    : password_(std::move(password)),
      nonce_(std::move(nonce)),
      client_first_bare_(Cat("n=,r=", nonce_)) {}

std::string ScramClient::ClientFirstMessage() const { return Cat("n,,", client_first_bare_); }

absl::StatusOr<std::string> ScramClient::HandleServerFirst(std::string_view server_first) {
  std::string_view rest = server_first;
  std::string_view nonce, salt_b64, iter_text;
  if (!NextAttribute(rest, 'r', nonce) || !NextAttribute(rest, 's', salt_b64) ||
      !NextAttribute(rest, 'i', iter_text)) {
    return Malformed("server-first-message");
  }
  // Extensions after i= are allowed by RFC 5802 and ignored.
  if (!ValidNonce(nonce) || nonce.size() <= nonce_.size() ||
      nonce.substr(0, nonce_.size()) != nonce_) {
    return absl::InvalidArgumentError("SCRAM server nonce does not extend the client nonce");
  }
  std::optional<std::string> salt = Base64Decode(salt_b64);
  std::optional<int> iterations = ParsePositiveInt(iter_text);
  if (!salt || salt->empty() || !iterations) return Malformed("server-first-message");

  const std::string salted = SaltedPassword(password_, *salt, *iterations);
  const std::string client_key = Hmac(salted, "Client Key");
  const std::string stored_key = Digest(EVP_sha256(), client_key);
  const std::string final_without_proof = Cat("c=biws,r=", nonce);
  const std::string auth_message =
      Cat(client_first_bare_, ",", server_first, ",", final_without_proof);
  const std::string proof = Xor(client_key, Hmac(stored_key, auth_message));
  expected_server_signature_ = Hmac(Hmac(salted, "Server Key"), auth_message);
  return Cat(final_without_proof, ",p=", Base64Encode(proof));
}

absl::Status ScramClient::HandleServerFinal(std::string_view server_final) const {
  if (expected_server_signature_.empty()) {
    return absl::FailedPreconditionError("SCRAM server-final before server-first");
  }
  std::string_view rest = server_final;
  std::string_view value;
  if (NextAttribute(rest, 'e', value)) {
    return absl::PermissionDeniedError(Cat("SCRAM authentication failed: ", value));
  }
  if (!NextAttribute(rest, 'v', value) || !rest.empty() || value.find(',') != value.npos) {
    return Malformed("server-final-message");
  }
  std::optional<std::string> signature = Base64Decode(value);
  if (!signature) return Malformed("server-final-message");
  if (!ConstantTimeEqual(*signature, expected_server_signature_)) {
    return absl::PermissionDeniedError("SCRAM server signature does not match");
  }
  return absl::OkStatus();
}

// ---- Secrets ---------------------------------------------------------------------------------

ScramSecret MakeScramSecret(std::string_view password, int iterations) {
  ScramSecret secret;
  secret.iterations = iterations;
  secret.salt = RandomBytes(kSaltBytes);
  const std::string salted = SaltedPassword(password, secret.salt, iterations);
  secret.stored_key = Digest(EVP_sha256(), Hmac(salted, "Client Key"));
  secret.server_key = Hmac(salted, "Server Key");
  return secret;
}

absl::StatusOr<ScramSecret> ParseScramSecret(std::string_view text) {
  // SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
  const auto invalid = [] { return absl::InvalidArgumentError("malformed SCRAM secret"); };
  constexpr std::string_view kPrefix = "SCRAM-SHA-256$";
  if (text.substr(0, kPrefix.size()) != kPrefix) return invalid();
  text.remove_prefix(kPrefix.size());
  const size_t dollar = text.find('$');
  if (dollar == text.npos) return invalid();
  std::string_view params = text.substr(0, dollar);
  std::string_view keys = text.substr(dollar + 1);
  const size_t colon1 = params.find(':');
  const size_t colon2 = keys.find(':');
  if (colon1 == params.npos || colon2 == keys.npos) return invalid();
  std::optional<int> iterations = ParsePositiveInt(params.substr(0, colon1));
  std::optional<std::string> salt = Base64Decode(params.substr(colon1 + 1));
  std::optional<std::string> stored = Base64Decode(keys.substr(0, colon2));
  std::optional<std::string> server = Base64Decode(keys.substr(colon2 + 1));
  if (!iterations || !salt || salt->empty() || !stored || stored->size() != kKeySize || !server ||
      server->size() != kKeySize) {
    return invalid();
  }
  ScramSecret secret;
  secret.iterations = *iterations;
  secret.salt = std::move(*salt);
  secret.stored_key = std::move(*stored);
  secret.server_key = std::move(*server);
  return secret;
}

// ---- ScramServer -----------------------------------------------------------------------------

ScramServer::ScramServer(ScramSecret secret, std::string nonce)
    : secret_(std::move(secret)), server_nonce_part_(std::move(nonce)) {}

absl::StatusOr<std::string> ScramServer::HandleClientFirst(std::string_view client_first) {
  if (!server_first_.empty()) return absl::FailedPreconditionError("SCRAM client-first repeated");
  std::string_view rest = client_first;
  // gs2-header: cbind-flag "," [authzid] ","
  if (rest.substr(0, 2) == "p=") {
    return absl::InvalidArgumentError("SCRAM channel binding is not supported");
  }
  if (rest.substr(0, 3) != "n,," && rest.substr(0, 3) != "y,,") {
    // "n,a=..." (an authorization identity) is refused like PostgreSQL does.
    return Malformed("client-first-message");
  }
  gs2_header_ = std::string(rest.substr(0, 3));
  rest.remove_prefix(3);
  client_first_bare_ = std::string(rest);
  if (rest.substr(0, 2) == "m=") return Malformed("client-first-message");
  std::string_view user, client_nonce;
  // The SCRAM user name is ignored: the startup packet's user is the one that counts.
  if (!NextAttribute(rest, 'n', user) || !NextAttribute(rest, 'r', client_nonce) ||
      !ValidNonce(client_nonce) || !ValidNonce(server_nonce_part_)) {
    return Malformed("client-first-message");
  }
  combined_nonce_ = Cat(client_nonce, server_nonce_part_);
  server_first_ =
      Cat("r=", combined_nonce_, ",s=", Base64Encode(secret_.salt), ",i=", secret_.iterations);
  return server_first_;
}

absl::StatusOr<std::string> ScramServer::HandleClientFinal(std::string_view client_final) {
  if (server_first_.empty()) return absl::FailedPreconditionError("SCRAM client-final too early");
  const size_t proof_at = client_final.rfind(",p=");
  if (proof_at == client_final.npos) return Malformed("client-final-message");
  const std::string_view without_proof = client_final.substr(0, proof_at);
  const std::string_view proof_b64 = client_final.substr(proof_at + 3);
  std::string_view rest = without_proof;
  std::string_view binding, nonce;
  if (!NextAttribute(rest, 'c', binding) || !NextAttribute(rest, 'r', nonce)) {
    return Malformed("client-final-message");
  }
  std::optional<std::string> binding_raw = Base64Decode(binding);
  if (!binding_raw || *binding_raw != gs2_header_) {
    return absl::InvalidArgumentError("SCRAM channel binding does not match the gs2 header");
  }
  if (nonce != combined_nonce_) return absl::InvalidArgumentError("SCRAM nonce does not match");
  std::optional<std::string> proof = Base64Decode(proof_b64);
  if (!proof || proof->size() != kKeySize) return Malformed("client-final-message");

  const std::string auth_message = Cat(client_first_bare_, ",", server_first_, ",", without_proof);
  const std::string client_key = Xor(*proof, Hmac(secret_.stored_key, auth_message));
  if (!ConstantTimeEqual(Digest(EVP_sha256(), client_key), secret_.stored_key)) {
    return absl::PermissionDeniedError("password authentication failed");
  }
  return Cat("v=", Base64Encode(Hmac(secret_.server_key, auth_message)));
}

}  // namespace nerava::pg
