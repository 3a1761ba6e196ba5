#include "nerava/protocol/pg/auth.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pg_test_util.h"

namespace nerava::pg {
namespace {

using testing::Cat;

// RFC 7677 section 3 test vector.
constexpr std::string_view kRfcClientNonce = "rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view kRfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr std::string_view kRfcSaltB64 = "W22ZaJ0SNY7soEsUEjb6gQ==";
constexpr std::string_view kRfcProof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr std::string_view kRfcServerSignature = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
// The stored form of password "pencil" with the RFC salt, computed independently (Python
// hashlib.pbkdf2_hmac / hmac / sha256).
constexpr std::string_view kPencilSecret =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

std::string RfcServerFirst() {
  return Cat("r=", kRfcClientNonce, kRfcServerNonce, ",s=", kRfcSaltB64, ",i=4096");
}

std::string RfcClientFinalWithoutProof() {
  return Cat("c=biws,r=", kRfcClientNonce, kRfcServerNonce);
}

TEST(ScramServerTest, Rfc7677Vector) {
  absl::StatusOr<ScramSecret> secret = ParseScramSecret(kPencilSecret);
  ASSERT_TRUE(secret.ok()) << secret.status();
  ScramServer server(*secret, std::string(kRfcServerNonce));
  // The RFC client sends n=user; the server ignores the name but signs the bare message as sent.
  absl::StatusOr<std::string> server_first =
      server.HandleClientFirst(Cat("n,,n=user,r=", kRfcClientNonce));
  ASSERT_TRUE(server_first.ok()) << server_first.status();
  EXPECT_EQ(*server_first, RfcServerFirst());
  absl::StatusOr<std::string> server_final =
      server.HandleClientFinal(Cat(RfcClientFinalWithoutProof(), ",p=", kRfcProof));
  ASSERT_TRUE(server_final.ok()) << server_final.status();
  EXPECT_EQ(*server_final, Cat("v=", kRfcServerSignature));
}

TEST(ScramClientTest, Rfc7677VectorWithPostgresUserName) {
  // Same inputs as RFC 7677 but client-first-bare is "n=,r=..." as PostgreSQL clients send it;
  // expected values computed with Python's hashlib/hmac.
  ScramClient client("pencil", std::string(kRfcClientNonce));
  EXPECT_EQ(client.ClientFirstMessage(), Cat("n,,n=,r=", kRfcClientNonce));
  absl::StatusOr<std::string> client_final = client.HandleServerFirst(RfcServerFirst());
  ASSERT_TRUE(client_final.ok()) << client_final.status();
  EXPECT_EQ(*client_final,
            Cat(RfcClientFinalWithoutProof(), ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k="));
  EXPECT_TRUE(client.HandleServerFinal("v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=").ok());
  EXPECT_EQ(client.HandleServerFinal(Cat("v=", kRfcServerSignature)).code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(ScramClientTest, AgainstRfcServerVector) {
  ScramServer server(*ParseScramSecret(kPencilSecret), std::string(kRfcServerNonce));
  ScramClient client("pencil", std::string(kRfcClientNonce));
  absl::StatusOr<std::string> sf = server.HandleClientFirst(client.ClientFirstMessage());
  ASSERT_TRUE(sf.ok());
  absl::StatusOr<std::string> cf = client.HandleServerFirst(*sf);
  ASSERT_TRUE(cf.ok());
  absl::StatusOr<std::string> sfinal = server.HandleClientFinal(*cf);
  ASSERT_TRUE(sfinal.ok()) << sfinal.status();
  EXPECT_TRUE(client.HandleServerFinal(*sfinal).ok());
}

struct RoundTrip {
  absl::Status server_final_status;
  absl::Status client_final_status;
};

RoundTrip Exchange(const ScramSecret& secret, std::string_view client_password) {
  ScramClient client{std::string(client_password)};
  ScramServer server(secret);
  RoundTrip rt;
  absl::StatusOr<std::string> sf = server.HandleClientFirst(client.ClientFirstMessage());
  if (!sf.ok()) return {sf.status(), {}};
  absl::StatusOr<std::string> cf = client.HandleServerFirst(*sf);
  if (!cf.ok()) return {cf.status(), {}};
  absl::StatusOr<std::string> sfinal = server.HandleClientFinal(*cf);
  rt.server_final_status = sfinal.status();
  if (sfinal.ok()) rt.client_final_status = client.HandleServerFinal(*sfinal);
  return rt;
}

TEST(ScramTest, RoundTripRightAndWrongPassword) {
  const ScramSecret secret = MakeScramSecret("correct horse", 1000);
  EXPECT_EQ(secret.iterations, 1000);
  EXPECT_EQ(secret.salt.size(), 16u);
  EXPECT_EQ(secret.stored_key.size(), 32u);
  EXPECT_EQ(secret.server_key.size(), 32u);

  RoundTrip ok = Exchange(secret, "correct horse");
  EXPECT_TRUE(ok.server_final_status.ok()) << ok.server_final_status;
  EXPECT_TRUE(ok.client_final_status.ok()) << ok.client_final_status;

  RoundTrip bad = Exchange(secret, "correct horsf");
  EXPECT_EQ(bad.server_final_status.code(), absl::StatusCode::kPermissionDenied);
  RoundTrip empty = Exchange(secret, "");
  EXPECT_EQ(empty.server_final_status.code(), absl::StatusCode::kPermissionDenied);
}

TEST(ScramTest, SecretsUseFreshSalts) {
  const ScramSecret a = MakeScramSecret("pw", 1);
  const ScramSecret b = MakeScramSecret("pw", 1);
  EXPECT_NE(a.salt, b.salt);
  EXPECT_NE(a.stored_key, b.stored_key);
}

TEST(ScramTest, NoncesArePrintableAndFresh) {
  const std::string a = MakeScramNonce();
  const std::string b = MakeScramNonce();
  EXPECT_EQ(a.size(), 24u);
  EXPECT_NE(a, b);
  for (char c : a) {
    EXPECT_TRUE(c > 0x20 && c < 0x7f && c != ',') << c;
  }
}

TEST(ScramSecretTest, ParseRejectsMalformed) {
  const std::string_view valid = kPencilSecret;
  const std::vector<std::string> bad = {
      "",
      "md5abcdef",
      "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$a:b",
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==",  // no keys
      "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$" +
          std::string(valid.substr(valid.find('$', 15) + 1)),
      "SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$" +
          std::string(valid.substr(valid.find('$', 15) + 1)),
      "SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$" +
          std::string(valid.substr(valid.find('$', 15) + 1)),
      "SCRAM-SHA-256$4096:$" + std::string(valid.substr(valid.find('$', 15) + 1)),  // empty salt
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=$" +
          std::string(valid.substr(valid.find('$', 15) + 1)),    // bad base64
      std::string(valid.substr(0, valid.rfind(':'))) + ":AAAA",  // short server key
      std::string(valid.substr(0, valid.rfind(':'))),            // one key only
      std::string(valid) + "x",
  };
  for (const std::string& text : bad) {
    EXPECT_EQ(ParseScramSecret(text).status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

TEST(ScramSecretTest, ParseValid) {
  absl::StatusOr<ScramSecret> s = ParseScramSecret(kPencilSecret);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->iterations, 4096);
  EXPECT_EQ(s->salt.size(), 16u);
  EXPECT_EQ(s->stored_key.size(), 32u);
  EXPECT_EQ(s->server_key.size(), 32u);
}

// ---- Server-side malformations -------------------------------------------------------------

struct ClientFirstCase {
  const char* name;
  std::string message;
  absl::StatusCode code;
};

TEST(ScramServerTest, ClientFirstFixtures) {
  const std::vector<ClientFirstCase> cases = {
      {"no channel binding", "n,,n=,r=abc", absl::StatusCode::kOk},
      {"client supports binding, server does not", "y,,n=,r=abc", absl::StatusCode::kOk},
      {"user name ignored", "n,,n=someone,r=abc", absl::StatusCode::kOk},
      {"extension after nonce", "n,,n=,r=abc,x=1", absl::StatusCode::kOk},
      {"channel binding requested", "p=tls-server-end-point,,n=,r=abc",
       absl::StatusCode::kInvalidArgument},
      {"authzid", "n,a=bob,n=,r=abc", absl::StatusCode::kInvalidArgument},
      {"bad cbind flag", "x,,n=,r=abc", absl::StatusCode::kInvalidArgument},
      {"empty", "", absl::StatusCode::kInvalidArgument},
      {"mandatory extension", "n,,m=x,n=,r=abc", absl::StatusCode::kInvalidArgument},
      {"missing n=", "n,,r=abc", absl::StatusCode::kInvalidArgument},
      {"missing nonce", "n,,n=", absl::StatusCode::kInvalidArgument},
      {"empty nonce", "n,,n=,r=", absl::StatusCode::kInvalidArgument},
      {"nonce with control char",
       "n,,n=,r=a\x01"
       "b",
       absl::StatusCode::kInvalidArgument},
  };
  for (const ClientFirstCase& c : cases) {
    ScramServer server(MakeScramSecret("pw", 1));
    EXPECT_EQ(server.HandleClientFirst(c.message).status().code(), c.code) << c.name;
  }
}

TEST(ScramServerTest, ClientFinalFixtures) {
  const ScramSecret secret = *ParseScramSecret(kPencilSecret);
  const std::string nonce = Cat(kRfcClientNonce, kRfcServerNonce);
  const std::string proof = Cat(",p=", kRfcProof);
  struct Case {
    const char* name;
    std::string client_first;
    std::string client_final;
    absl::StatusCode code;
  };
  const std::string first = Cat("n,,n=user,r=", kRfcClientNonce);
  const std::vector<Case> cases = {
      {"valid", first, Cat("c=biws,r=", nonce, proof), absl::StatusCode::kOk},
      {"wrong proof", first,
       Cat("c=biws,r=", nonce, ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
       absl::StatusCode::kPermissionDenied},
      {"binding echo of y,, when n,, was sent", first, Cat("c=eSws,r=", nonce, proof),
       absl::StatusCode::kInvalidArgument},
      {"binding not base64", first, Cat("c=b!ws,r=", nonce, proof),
       absl::StatusCode::kInvalidArgument},
      {"nonce without server part", first, Cat("c=biws,r=", kRfcClientNonce, proof),
       absl::StatusCode::kInvalidArgument},
      {"nonce altered", first, Cat("c=biws,r=", nonce, "x", proof),
       absl::StatusCode::kInvalidArgument},
      {"no proof", first, Cat("c=biws,r=", nonce), absl::StatusCode::kInvalidArgument},
      {"short proof", first, Cat("c=biws,r=", nonce, ",p=AAAA"),
       absl::StatusCode::kInvalidArgument},
      {"proof not base64", first, Cat("c=biws,r=", nonce, ",p=****"),
       absl::StatusCode::kInvalidArgument},
      {"missing c=", first, Cat("r=", nonce, proof), absl::StatusCode::kInvalidArgument},
      {"empty", first, "", absl::StatusCode::kInvalidArgument},
  };
  for (const Case& c : cases) {
    ScramServer server(secret, std::string(kRfcServerNonce));
    ASSERT_TRUE(server.HandleClientFirst(c.client_first).ok()) << c.name;
    EXPECT_EQ(server.HandleClientFinal(c.client_final).status().code(), c.code) << c.name;
  }
}

TEST(ScramServerTest, YFlagEchoIsChecked) {
  ScramClient client("pw", "clientnonce");
  ScramServer server(MakeScramSecret("pw", 1), "servernonce");
  ASSERT_TRUE(server.HandleClientFirst("y,,n=,r=clientnonce").ok());
  // A client-final with c=biws (base64 of "n,,") does not match the "y,," header it sent.
  EXPECT_EQ(
      server
          .HandleClientFinal(
              "c=biws,r=clientnonceservernonce,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(ScramServerTest, OutOfOrderCalls) {
  ScramServer server(MakeScramSecret("pw", 1));
  EXPECT_EQ(server.HandleClientFinal("c=biws,r=x,p=AAAA").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// ---- Client-side malformations -------------------------------------------------------------

TEST(ScramClientTest, ServerFirstFixtures) {
  struct Case {
    const char* name;
    std::string server_first;
    absl::StatusCode code;
  };
  const std::vector<Case> cases = {
      {"valid", "r=abcXYZ,s=QUJD,i=1", absl::StatusCode::kOk},
      {"valid with extension", "r=abcXYZ,s=QUJD,i=1,x=y", absl::StatusCode::kOk},
      {"nonce not extended", "r=abc,s=QUJD,i=1", absl::StatusCode::kInvalidArgument},
      {"nonce replaced", "r=xyzXYZ,s=QUJD,i=1", absl::StatusCode::kInvalidArgument},
      {"mandatory extension", "m=1,r=abcXYZ,s=QUJD,i=1", absl::StatusCode::kInvalidArgument},
      {"missing salt", "r=abcXYZ,i=1", absl::StatusCode::kInvalidArgument},
      {"empty salt", "r=abcXYZ,s=,i=1", absl::StatusCode::kInvalidArgument},
      {"bad salt", "r=abcXYZ,s=QUJ,i=1", absl::StatusCode::kInvalidArgument},
      {"zero iterations", "r=abcXYZ,s=QUJD,i=0", absl::StatusCode::kInvalidArgument},
      {"negative iterations", "r=abcXYZ,s=QUJD,i=-5", absl::StatusCode::kInvalidArgument},
      {"iterations overflow", "r=abcXYZ,s=QUJD,i=99999999999", absl::StatusCode::kInvalidArgument},
      {"iterations not a number", "r=abcXYZ,s=QUJD,i=1x", absl::StatusCode::kInvalidArgument},
      {"server error", "e=other-error", absl::StatusCode::kInvalidArgument},
      {"empty", "", absl::StatusCode::kInvalidArgument},
  };
  for (const Case& c : cases) {
    ScramClient client("pw", "abc");
    EXPECT_EQ(client.HandleServerFirst(c.server_first).status().code(), c.code) << c.name;
  }
}

TEST(ScramClientTest, ServerFinalFixtures) {
  ScramClient client("pencil", std::string(kRfcClientNonce));
  EXPECT_EQ(client.HandleServerFinal("v=AAAA").code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(client.HandleServerFirst(RfcServerFirst()).ok());
  const std::string good = "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=";
  EXPECT_TRUE(client.HandleServerFinal(good).ok());
  EXPECT_EQ(client.HandleServerFinal("e=invalid-proof").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(client.HandleServerFinal(good + ",x=1").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client.HandleServerFinal("v=3HO").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client.HandleServerFinal("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client.HandleServerFinal("v=AAAA").code(), absl::StatusCode::kPermissionDenied);
}

TEST(Md5Test, KnownAnswer) {
  // md5(md5hex("s3cret" + "nerava") + "\x01\x02\x03\x04"), computed with Python hashlib.
  EXPECT_EQ(Md5PasswordResponse("nerava", "s3cret", "\x01\x02\x03\x04"),
            "md5b78916c9bcd6fd1666e6ec95e2a72453");
  EXPECT_NE(Md5PasswordResponse("nerava", "s3cret", "\x01\x02\x03\x05"),
            "md5b78916c9bcd6fd1666e6ec95e2a72453");
}

}  // namespace
}  // namespace nerava::pg
