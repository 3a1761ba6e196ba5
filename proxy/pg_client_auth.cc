#include "proxy/pg_client_auth.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "absl/status/status.h"
#include "nerava/protocol/pg/auth.h"
#include "nerava/protocol/pg/messages.h"
#include "proxy/pg_io.h"

namespace nerava::proxy {
namespace {

awaitable<absl::Status> SendFatal(Stream& client, std::string code, std::string message,
                                  absl::Status status) {
  std::string out;
  pg::AppendErrorResponse(out, pg::Error{"FATAL", std::move(code), std::move(message), "", ""});
  co_await WriteAll(client, out);
  co_return status;
}

awaitable<absl::Status> PasswordFailed(Stream& client, const std::string& user,
                                       std::string why) {
  // The same words whether the user is unknown or the password wrong, as PostgreSQL does.
  co_return co_await SendFatal(client, "28P01",
                               "password authentication failed for user \"" + user + "\"",
                               absl::PermissionDeniedError(std::move(why)));
}

awaitable<absl::Status> ProtocolViolation(Stream& client, const absl::Status& status) {
  co_return co_await SendFatal(client, "08P01",
                               "invalid authentication message: " + std::string(status.message()),
                               status);
}

// Reads the next password-type ('p') message; its body stays at the front of `buffer`.
awaitable<absl::StatusOr<std::string_view>> ReadPasswordMessage(Stream& client,
                                                                ByteBuffer& buffer,
                                                                const PgContext& context,
                                                                pg::MessageHeader& header) {
  auto read = co_await ReadPgMessage(client, buffer, context.limits.max_startup_packet);
  if (!read.ok()) co_return read.status();
  header = *read;
  if (header.type != pg::msg::kPassword) {
    co_return absl::InvalidArgumentError("expected a password message");
  }
  co_return MessageBody(buffer, header);
}

awaitable<absl::Status> RunScram(Stream& client, ByteBuffer& buffer, const std::string& user,
                                 const PgUserEntry* entry, const PgContext& context) {
  std::string out;
  pg::AppendAuthenticationSasl(out, {pg::kScramSha256});
  if (!co_await WriteAll(client, out)) co_return absl::UnavailableError("client went away");

  pg::ScramServer server(entry ? entry->scram : context.unknown_user_scram);
  pg::MessageHeader header;
  auto first = co_await ReadPasswordMessage(client, buffer, context, header);
  if (!first.ok()) co_return co_await ProtocolViolation(client, first.status());
  auto initial = pg::ParseSaslInitialResponse(*first);
  if (!initial.ok()) co_return co_await ProtocolViolation(client, initial.status());
  if (initial->mechanism != pg::kScramSha256) {
    co_return co_await ProtocolViolation(
        client, absl::InvalidArgumentError("client selected an invalid SASL mechanism"));
  }
  auto server_first = server.HandleClientFirst(initial->data);
  buffer.Consume(header.total_size());
  if (!server_first.ok()) co_return co_await ProtocolViolation(client, server_first.status());
  out.clear();
  pg::AppendAuthenticationSaslContinue(out, *server_first);
  if (!co_await WriteAll(client, out)) co_return absl::UnavailableError("client went away");

  auto final_body = co_await ReadPasswordMessage(client, buffer, context, header);
  if (!final_body.ok()) co_return co_await ProtocolViolation(client, final_body.status());
  auto server_final = server.HandleClientFinal(*final_body);
  buffer.Consume(header.total_size());
  if (!server_final.ok()) {
    if (server_final.status().code() == absl::StatusCode::kPermissionDenied) {
      co_return co_await PasswordFailed(client, user, "SCRAM proof did not match");
    }
    co_return co_await ProtocolViolation(client, server_final.status());
  }
  if (!entry) co_return co_await PasswordFailed(client, user, "unknown user");
  out.clear();
  pg::AppendAuthenticationSaslFinal(out, *server_final);
  if (!co_await WriteAll(client, out)) co_return absl::UnavailableError("client went away");
  co_return absl::OkStatus();
}

awaitable<absl::Status> RunMd5(Stream& client, ByteBuffer& buffer, const std::string& user,
                               const PgUserEntry* entry, const PgContext& context) {
  std::string salt(4, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), 4);
  std::string out;
  pg::AppendAuthenticationMd5(out, salt);
  if (!co_await WriteAll(client, out)) co_return absl::UnavailableError("client went away");
  pg::MessageHeader header;
  auto body = co_await ReadPasswordMessage(client, buffer, context, header);
  if (!body.ok()) co_return co_await ProtocolViolation(client, body.status());
  auto sent = pg::ParsePasswordMessage(*body);
  if (!sent.ok()) co_return co_await ProtocolViolation(client, sent.status());
  const std::string answer(*sent);
  buffer.Consume(header.total_size());
  if (!entry) co_return co_await PasswordFailed(client, user, "unknown user");
  const std::string expected = pg::Md5PasswordResponse(user, entry->password, salt);
  if (answer.size() != expected.size() ||
      CRYPTO_memcmp(answer.data(), expected.data(), expected.size()) != 0) {
    co_return co_await PasswordFailed(client, user, "MD5 response did not match");
  }
  co_return absl::OkStatus();
}

}  // namespace

awaitable<absl::StatusOr<const PgUserEntry*>> AuthenticateClient(Stream& client,
                                                                 ByteBuffer& buffer,
                                                                 const std::string& user,
                                                                 const PgContext& context) {
  auto it = context.users.find(user);
  const PgUserEntry* entry = it == context.users.end() ? nullptr : &it->second;
  absl::Status status;
  switch (context.settings.auth) {
    case config::AuthMethod::kTrust:
      co_return entry;
    case config::AuthMethod::kMd5:
      status = co_await RunMd5(client, buffer, user, entry, context);
      break;
    case config::AuthMethod::kScramSha256:
      status = co_await RunScram(client, buffer, user, entry, context);
      break;
  }
  if (!status.ok()) co_return status;
  co_return entry;
}

}  // namespace nerava::proxy
