#include "nerava/config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/unit/config/test_env.h"

namespace nerava::config {
namespace {

using ::nerava::config::testing::FakeEnv;
using std::chrono::milliseconds;
using ::testing::AllOf;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

using Env = std::map<std::string, std::string, std::less<>>;

constexpr char kPostgres[] = R"(
postgres:
  users: [{name: app, password: pw}]
  nodes:
    - {name: pg-a, region: r1, host: db-a, port: 5432}
    - {name: pg-b, region: r2, host: db-b, port: 5432}
)";

absl::StatusOr<Config> Load(const std::string& yaml, Env env = {}) {
  return LoadString(yaml, "test.yaml", FakeEnv(std::move(env)));
}

// A valid file: region plus the postgres section, with `extra` appended.
std::string Valid(const std::string& extra = "") { return "region: r1\n" + extra + kPostgres; }

std::vector<std::string> ErrorLines(const absl::StatusOr<Config>& c) {
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<std::string> lines;
  std::istringstream text{std::string(c.status().message())};
  for (std::string line; std::getline(text, line);) lines.push_back(line);
  return lines;
}

// The single error of a file that must be refused.
std::string OneError(const std::string& yaml, Env env = {}) {
  absl::StatusOr<Config> c = Load(yaml, std::move(env));
  if (c.ok()) return "(loaded)";
  std::vector<std::string> lines = ErrorLines(c);
  EXPECT_EQ(lines.size(), 1u) << c.status().message();
  return lines.front();
}

// --- happy path and defaults -----------------------------------------------------------------

TEST(ConfigTest, MinimalFileGetsDefaults) {
  absl::StatusOr<Config> c = Load(Valid());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->source, "test.yaml");
  EXPECT_EQ(c->region, "r1");
  EXPECT_EQ(c->primary_region, "");
  ASSERT_TRUE(c->postgres.has_value());
  EXPECT_FALSE(c->redis.has_value());
  const Postgres& pg = *c->postgres;
  EXPECT_EQ(pg.listen_rw.ToString(), "127.0.0.1:6432");
  EXPECT_FALSE(pg.listen_ro.has_value());
  EXPECT_EQ(pg.auth, AuthMethod::kScramSha256);
  EXPECT_EQ(pg.server_idle_timeout, std::chrono::seconds(0));  // reuse is opt-in
  ASSERT_EQ(pg.nodes.size(), 2u);
  EXPECT_EQ(pg.nodes[1].name, "pg-b");
  EXPECT_EQ(pg.nodes[1].region, "r2");
  EXPECT_EQ(pg.nodes[1].host, "db-b");
  EXPECT_EQ(pg.nodes[1].port, 5432);
  EXPECT_EQ(pg.max_lag.seconds, milliseconds(5000));
  EXPECT_EQ(pg.max_lag.bytes, 16ull << 20);
  EXPECT_FALSE(pg.tls.enabled());
  EXPECT_EQ(pg.backend_tls.mode, SslMode::kPrefer);
  EXPECT_EQ(pg.max_message_bytes, 64u << 20);
  EXPECT_EQ(pg.monitor_database, "postgres");
  EXPECT_EQ(c->monitor.interval, milliseconds(250));
  EXPECT_EQ(c->monitor.failure_threshold, 3);
  EXPECT_EQ(c->monitor.timeout, milliseconds(1000));  // at least 1 s
  EXPECT_EQ(c->failover.wait, milliseconds(30000));
  EXPECT_EQ(c->server_keepalive.idle, milliseconds(60000));
  EXPECT_EQ(c->server_keepalive.interval, milliseconds(10000));
  EXPECT_EQ(c->server_keepalive.count, 6);
  EXPECT_EQ(c->admin.socket, "/run/nerava-proxy/admin.sock");
  ASSERT_TRUE(c->admin.http.has_value());
  EXPECT_EQ(c->admin.http->ToString(), "127.0.0.1:9187");
  EXPECT_EQ(c->workers, 0);
  EXPECT_EQ(c->log_level, "info");
}

TEST(ConfigTest, EveryKeyIsRead) {
  const std::string yaml = R"(
region: eu
primary_region: us
postgres:
  listen: {rw: "0.0.0.0:7000", ro: {host: "::1", port: 7001}}
  auth: md5
  users:
    - {name: app, password: pw, backend_password: upstream}
    - {name: ro, password: pw2}
  nodes:
    - {name: a, region: us, host: "[fd00::1]", port: "5432"}
    - {name: b, region: eu, host: db-b, port: 5433}
  max_lag: {seconds: 500ms, bytes: 1GB}
  tls: {cert: /c.pem, key: /k.pem}
  backend_tls: {sslmode: verify-full, root_cert: /ca.pem}
  max_message_size: 1MiB
  max_client_connections: 50
  connect_timeout: 2s
  server_idle_timeout: 30s
  volatile_allowlist: [now, random]
  monitor: {user: mon, password: monpw, database: admin}
redis:
  listen: "[::1]:7379"
  nodes: [{name: a, region: us, host: r-a, port: 6379}]
  password: cpw
  backend_username: default
  backend_password: bpw
  tls: {cert: /rc.pem, key: /rk.pem}
  backend_tls: true
  backend_root_cert: /rca.pem
  max_lag: {seconds: 1, bytes: 1000}
  max_pipeline: 16
  max_client_connections: 60
  connect_timeout: 1500ms
  sentinel: {addresses: ["s1:26379", {host: s2, port: 26380}], master: mymaster}
monitor: {interval: 1s, failure_threshold: 5, timeout: 900ms}
failover: {wait: 2m}
server_keepalive: {idle: 2m, interval: 5s, count: 3}
admin: {socket: "", http: ""}
workers: 4
shutdown_timeout: 1h
log_level: debug
)";
  absl::StatusOr<Config> c = Load(yaml);
  ASSERT_TRUE(c.ok()) << c.status();
  const Postgres& pg = *c->postgres;
  EXPECT_EQ(c->primary_region, "us");
  EXPECT_EQ(pg.listen_rw.ToString(), "0.0.0.0:7000");
  ASSERT_TRUE(pg.listen_ro.has_value());
  EXPECT_EQ(pg.listen_ro->ToString(), "[::1]:7001");
  EXPECT_EQ(pg.auth, AuthMethod::kMd5);
  ASSERT_EQ(pg.users.size(), 2u);
  EXPECT_EQ(pg.users[0].backend_password, "upstream");
  EXPECT_EQ(pg.nodes[0].host, "fd00::1");  // brackets dropped in the map form
  EXPECT_EQ(pg.nodes[1].port, 5433);
  EXPECT_EQ(pg.max_lag.seconds, milliseconds(500));
  EXPECT_EQ(pg.max_lag.bytes, 1000000000u);
  EXPECT_EQ(pg.tls.cert_file, "/c.pem");
  EXPECT_EQ(pg.tls.key_file, "/k.pem");
  EXPECT_EQ(pg.backend_tls.mode, SslMode::kVerifyFull);
  EXPECT_EQ(pg.backend_tls.root_cert, "/ca.pem");
  EXPECT_EQ(pg.max_message_bytes, 1u << 20);
  EXPECT_EQ(pg.max_client_connections, 50);
  EXPECT_EQ(pg.connect_timeout, milliseconds(2000));
  EXPECT_EQ(pg.server_idle_timeout, milliseconds(30000));
  EXPECT_EQ(pg.volatile_allowlist, (std::vector<std::string>{"now", "random"}));
  EXPECT_EQ(pg.monitor_user, "mon");
  EXPECT_EQ(pg.monitor_password, "monpw");
  EXPECT_EQ(pg.monitor_database, "admin");
  const Redis& r = *c->redis;
  EXPECT_EQ(r.listen.ToString(), "[::1]:7379");
  EXPECT_EQ(r.password, "cpw");
  EXPECT_EQ(r.backend_username, "default");
  EXPECT_EQ(r.backend_password, "bpw");
  EXPECT_TRUE(r.tls.enabled());
  EXPECT_TRUE(r.backend_tls);
  EXPECT_EQ(r.backend_root_cert, "/rca.pem");
  EXPECT_EQ(r.max_lag.seconds, milliseconds(1000));
  EXPECT_EQ(r.max_lag.bytes, 1000u);
  EXPECT_EQ(r.max_pipeline, 16);
  EXPECT_EQ(r.max_client_connections, 60);
  EXPECT_EQ(r.connect_timeout, milliseconds(1500));
  ASSERT_EQ(r.sentinels.size(), 2u);
  EXPECT_EQ(r.sentinels[1].ToString(), "s2:26380");
  EXPECT_EQ(r.sentinel_master, "mymaster");
  EXPECT_EQ(c->monitor.interval, milliseconds(1000));
  EXPECT_EQ(c->monitor.failure_threshold, 5);
  EXPECT_EQ(c->monitor.timeout, milliseconds(900));
  EXPECT_EQ(c->failover.wait, milliseconds(120000));
  EXPECT_EQ(c->server_keepalive.idle, milliseconds(120000));
  EXPECT_EQ(c->server_keepalive.interval, milliseconds(5000));
  EXPECT_EQ(c->server_keepalive.count, 3);
  EXPECT_EQ(c->admin.socket, "");
  EXPECT_FALSE(c->admin.http.has_value());
  EXPECT_EQ(c->workers, 4);
  EXPECT_EQ(c->shutdown_timeout, milliseconds(3600000));
  EXPECT_EQ(c->log_level, "debug");
}

TEST(ConfigTest, RedisAloneIsEnough) {
  absl::StatusOr<Config> c =
      Load("region: r1\nredis:\n  nodes: [{name: a, region: r1, host: h, port: 6379}]\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->postgres.has_value());
  EXPECT_EQ(c->redis->listen.ToString(), "127.0.0.1:6379");
  EXPECT_EQ(c->redis->max_pipeline, 1024);
}

TEST(ConfigTest, BareListenIsTheReadWriteListener) {
  absl::StatusOr<Config> c = Load(Valid() + "  listen: 127.0.0.1:7777\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->postgres->listen_rw.port, 7777);
  EXPECT_FALSE(c->postgres->listen_ro.has_value());
}

// --- YAML syntax -----------------------------------------------------------------------------

TEST(ConfigTest, SyntaxErrorNamesFileLineAndColumn) {
  const std::string line = OneError("region: r1\npostgres:\n  users: [a, b\n");
  EXPECT_THAT(line, ContainsRegex("^test\\.yaml:[0-9]+:[0-9]+: "));
  EXPECT_THAT(OneError("region: r1\n  bad: indent\n"), StartsWith("test.yaml:2:"));
}

TEST(ConfigTest, UnquotedInterpolationInFlowStyleIsASyntaxError) {
  // DESIGN §8 writes `{..., password: ${PGPASSWORD}}`: in flow style the braces of ${...} are
  // YAML syntax. The loader reports it instead of throwing; quoting fixes it.
  const std::string flow =
      "region: r1\npostgres:\n  users: [{name: a, password: ${PW}}]\n"
      "  nodes: [{name: a, region: r1, host: h, port: 1}]\n";
  absl::StatusOr<Config> c = Load(flow, {{"PW", "x"}});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(std::string(c.status().message()),
            "test.yaml:3:32: end of map flow not found (quote values that contain ${...} inside "
            "{...} or [...])");
  const std::string quoted =
      "region: r1\npostgres:\n  users: [{name: a, password: \"${PW}\"}]\n"
      "  nodes: [{name: a, region: r1, host: h, port: 1}]\n";
  c = Load(quoted, {{"PW", "x"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->postgres->users[0].password, "x");
}

TEST(ConfigTest, NoExceptionEscapesOnMalformedInput) {
  const std::string kInputs[] = {
      "\t- tab",
      "a: 'unterminated",
      "a: \"bad \\q escape\"",
      "[[[[",
      std::string(5000, '[') + std::string(5000, ']'),
      std::string(5000, '{'),
      "a: &x\nb: *y\n",
      "? [a]\n: 1\n",
      std::string("\0\xff\xfe", 3),
      "%YAML 9.9\n---\na: 1\n",
      "a: !!binary ===\n",
  };
  for (const std::string& in : kInputs) {
    SCOPED_TRACE(in.substr(0, 20));
    absl::StatusOr<Config> c = Load(in);
    EXPECT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()), StartsWith("test.yaml"));
  }
}

TEST(ConfigTest, EveryPrefixOfAValidFileLoadsOrFailsCleanly) {
  // Like splitting a codec fixture at every offset: truncation must never throw or crash.
  const std::string full = Valid("primary_region: r2\n") +
                           "redis:\n  nodes: [{name: a, region: r1, host: h, port: 1}]\n"
                           "monitor: {interval: 100ms}\n";
  ASSERT_TRUE(Load(full).ok());
  for (size_t n = 0; n < full.size(); ++n) {
    absl::StatusOr<Config> c = Load(full.substr(0, n));
    if (!c.ok()) {
      EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << n;
      EXPECT_THAT(std::string(c.status().message()), StartsWith("test.yaml")) << n;
    }
  }
}

TEST(ConfigTest, SeveralDocumentsAreRefused) {
  EXPECT_THAT(OneError(Valid() + "---\nregion: r2\n"), HasSubstr("one YAML document"));
}

TEST(ConfigTest, WrongShapesAreNamed) {
  EXPECT_EQ(OneError("- a\n- b\n"), "test.yaml: (top level): expected a map, got a list");
  EXPECT_EQ(OneError(Valid("monitor: 5\n")),
            "test.yaml: monitor: expected a map, got a single value");
  EXPECT_EQ(OneError(Valid() + "  volatile_allowlist: now\n"),
            "test.yaml: postgres.volatile_allowlist: expected a list, got a single value");
  EXPECT_EQ(OneError(Valid("region2: [a]\n")),
            "test.yaml: region2: unknown key (did you mean \"region\"?)");
  EXPECT_EQ(OneError(Valid("log_level: [a]\n")),
            "test.yaml: log_level: expected a single value, got a list");
}

// --- interpolation ---------------------------------------------------------------------------

TEST(ConfigTest, InterpolatesBeforeTyping) {
  const std::string yaml = R"(
region: ${REGION_NAME}
postgres:
  users: [{name: app, password: "${PW:-default-pw}"}]
  nodes:
    - {name: a, region: r1, host: "${HOST}", port: "${PORT:-5432}"}
  max_lag: {seconds: "${LAG}", bytes: "${BYTES:-16}MiB"}
monitor: {interval: "${INTERVAL}ms"}
admin: {http: "${HTTP_HOST:-127.0.0.1}:${HTTP_PORT}", socket: "$${HOME}/$$x"}
)";
  absl::StatusOr<Config> c = Load(yaml, {{"REGION_NAME", "r1"},
                                         {"HOST", "db"},
                                         {"LAG", "2s"},
                                         {"INTERVAL", "100"},
                                         {"HTTP_PORT", "9999"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->region, "r1");
  EXPECT_EQ(c->postgres->users[0].password, "default-pw");
  EXPECT_EQ(c->postgres->nodes[0].host, "db");
  EXPECT_EQ(c->postgres->nodes[0].port, 5432);
  EXPECT_EQ(c->postgres->max_lag.seconds, milliseconds(2000));
  EXPECT_EQ(c->postgres->max_lag.bytes, 16ull << 20);
  EXPECT_EQ(c->monitor.interval, milliseconds(100));
  EXPECT_EQ(c->admin.http->ToString(), "127.0.0.1:9999");
  EXPECT_EQ(c->admin.socket, "${HOME}/$x");
}

TEST(ConfigTest, KeysAreNotInterpolated) {
  EXPECT_EQ(OneError(Valid("${K}: 1\n"), {{"K", "workers"}}), "test.yaml: ${K}: unknown key");
}

TEST(ConfigTest, UnsetVariableNamesFileKeyAndVariable) {
  const std::string yaml =
      "region: r1\npostgres:\n  users: [{name: app, password: \"${PGPASSWORD}\"}]\n"
      "  nodes: [{name: a, region: r1, host: h, port: 1}]\n";
  EXPECT_EQ(OneError(yaml),
            "test.yaml: postgres.users[0].password: environment variable PGPASSWORD is not set");
}

TEST(ConfigTest, InterpolatedValueIsTypeChecked) {
  EXPECT_EQ(OneError(Valid("workers: \"${W}\"\n"), {{"W", "many"}}),
            "test.yaml: workers: expected an integer, got \"many\"");
  EXPECT_EQ(OneError(Valid("workers: \"${W:-}\"\n")),
            "test.yaml: workers: expected an integer, got \"\"");
}

// --- REGION / PRIMARY_REGION from the environment ---------------------------------------------

TEST(ConfigTest, EnvironmentOverridesRegions) {
  absl::StatusOr<Config> c =
      Load(Valid("primary_region: r1\n"), {{"REGION", "r2"}, {"PRIMARY_REGION", "r2"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->region, "r2");
  EXPECT_EQ(c->primary_region, "r2");
}

TEST(ConfigTest, EmptyEnvironmentDoesNotOverride) {
  absl::StatusOr<Config> c =
      Load(Valid("primary_region: r2\n"), {{"REGION", ""}, {"PRIMARY_REGION", ""}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->region, "r1");
  EXPECT_EQ(c->primary_region, "r2");
}

TEST(ConfigTest, EnvironmentSuppliesMissingRegion) {
  absl::StatusOr<Config> c = Load(kPostgres, {{"REGION", "r2"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->region, "r2");
}

TEST(ConfigTest, RegionIsRequired) {
  EXPECT_EQ(OneError(kPostgres),
            "test.yaml: region: required (in the file or the REGION environment variable)");
}

TEST(ConfigTest, PrimaryRegionMustBeSomeNodesRegion) {
  EXPECT_EQ(OneError(Valid("primary_region: r9\n")),
            "test.yaml: primary_region: \"r9\" is not the region of any node; regions: r1, r2");
  EXPECT_EQ(OneError(Valid(), {{"PRIMARY_REGION", "r9"}}),
            "test.yaml: primary_region: \"r9\" (from PRIMARY_REGION) is not the region of any "
            "node; regions: r1, r2");
  // Regions of redis nodes count too.
  EXPECT_TRUE(Load(Valid("primary_region: r3\n") +
                   "redis:\n  nodes: [{name: x, region: r3, host: h, port: 1}]\n")
                  .ok());
}

// --- exact keys ------------------------------------------------------------------------------

TEST(ConfigTest, UnknownKeyIsNamedWithItsPath) {
  const std::string yaml =
      "region: r1\npostgres:\n  users: [{name: a, password: p}]\n"
      "  nodes: [{name: a, region: r1, hots: h, port: 1}]\n";
  const std::vector<std::string> lines = ErrorLines(Load(yaml));
  EXPECT_THAT(lines,
              ::testing::Contains(
                  "test.yaml: postgres.nodes[0].hots: unknown key (did you mean \"host\"?)"));
  EXPECT_THAT(lines, ::testing::Contains("test.yaml: postgres.nodes[0].host: required"));
}

TEST(ConfigTest, UnknownKeysEverywhere) {
  EXPECT_EQ(OneError(Valid("colour: blue\n")), "test.yaml: colour: unknown key");
  EXPECT_EQ(OneError(Valid("monitor: {intervall: 1s}\n")),
            "test.yaml: monitor.intervall: unknown key (did you mean \"interval\"?)");
  EXPECT_EQ(OneError(Valid() + "  max_lag: {secs: 1}\n"),
            "test.yaml: postgres.max_lag.secs: unknown key");
  EXPECT_EQ(OneError(Valid() + "  listen: {rw: \"h:1\", rx: \"h:2\"}\n"),
            "test.yaml: postgres.listen.rx: unknown key (did you mean \"rw\"?)");
  EXPECT_THAT(ErrorLines(Load(Valid("redis:\n  nodes: [{name: a, region: r1, host: h, port: 1}]\n"
                                    "  sentinel: {master: m, adresses: []}\n"))),
              ::testing::Contains(
                  "test.yaml: redis.sentinel.adresses: unknown key (did you mean \"addresses\"?)"));
}

TEST(ConfigTest, DuplicateKeyIsRefused) {
  EXPECT_EQ(OneError(Valid("workers: 1\nworkers: 2\n")), "test.yaml: workers: duplicate key");
}

// --- errors are collected ---------------------------------------------------------------------

TEST(ConfigTest, AllErrorsAreReportedAtOnce) {
  const std::string yaml = R"(
region: r1
workers: -1
postgres:
  auth: kerberos
  users: [{name: app, password: "${PW}"}]
  nodes:
    - {name: a, region: r1, host: h, port: 0}
    - {name: a, region: "", host: h, prot: 1}
monitor: {interval: 5ms, failure_threshold: 0}
)";
  const std::vector<std::string> lines = ErrorLines(Load(yaml));
  const std::vector<std::string> expected = {
      "test.yaml: workers: must be at least 0, got -1",
      "test.yaml: postgres.auth: expected one of scram-sha-256, md5, trust, got \"kerberos\"",
      "test.yaml: postgres.users[0].password: environment variable PW is not set",
      "test.yaml: postgres.nodes[0].port: expected a port number 1..65535, got \"0\"",
      "test.yaml: postgres.nodes[1].prot: unknown key (did you mean \"port\"?)",
      "test.yaml: postgres.nodes[1].region: must not be empty",
      "test.yaml: postgres.nodes[1].port: required",
      "test.yaml: postgres.nodes[1].name: duplicate node name \"a\" (also postgres.nodes[0])",
      "test.yaml: monitor.interval: must be at least 10ms",
      "test.yaml: monitor.failure_threshold: must be at least 1, got 0",
  };
  for (const std::string& e : expected) EXPECT_THAT(lines, ::testing::Contains(e));
  // Each line has the FILE: KEY: problem form.
  for (const std::string& l : lines) EXPECT_THAT(l, ContainsRegex("^test\\.yaml: []a-z_.[0-9]+: "));
}

// --- types and units -------------------------------------------------------------------------

TEST(ConfigTest, DurationsAndSizesInContext) {
  absl::StatusOr<Config> c =
      Load(Valid("shutdown_timeout: 1.5\nfailover: {wait: 250ms}\n") +
           "  max_lag: {seconds: 5, bytes: 1048576}\n  max_message_size: 1KiB\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->shutdown_timeout, milliseconds(1500));
  EXPECT_EQ(c->failover.wait, milliseconds(250));
  EXPECT_EQ(c->postgres->max_lag.seconds, milliseconds(5000));
  EXPECT_EQ(c->postgres->max_lag.bytes, 1048576u);
  EXPECT_EQ(c->postgres->max_message_bytes, 1024u);
  EXPECT_THAT(OneError(Valid("shutdown_timeout: 5 minutes\n")),
              StartsWith("test.yaml: shutdown_timeout: expected a duration"));
  EXPECT_THAT(OneError(Valid() + "  max_lag: {bytes: 16mb}\n"),
              StartsWith("test.yaml: postgres.max_lag.bytes: expected a size"));
  EXPECT_EQ(OneError(Valid() + "  max_message_size: 8GiB\n"),
            "test.yaml: postgres.max_message_size: must be at most 4294967295 bytes");
}

TEST(ConfigTest, PortsAreChecked) {
  for (const char* port : {"0", "65536", "-5", "http"}) {
    SCOPED_TRACE(port);
    const std::string yaml = std::string(
                                 "region: r1\nredis:\n  nodes: [{name: a, region: r1, "
                                 "host: h, port: ") +
                             port + "}]\n";
    EXPECT_EQ(OneError(yaml), std::string("test.yaml: redis.nodes[0].port: expected a port number "
                                          "1..65535, got \"") +
                                  port + "\"");
  }
}

TEST(ConfigTest, EndpointForms) {
  absl::StatusOr<Config> c = Load(Valid() +
                                  "  listen: {rw: \"[::1]:6432\", ro: {host: localhost, "
                                  "port: 6433}}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->postgres->listen_rw.host, "::1");
  EXPECT_EQ(c->postgres->listen_ro->host, "localhost");
  EXPECT_THAT(OneError(Valid() + "  listen: {rw: \"::1:6432\"}\n"),
              AllOf(StartsWith("test.yaml: postgres.listen.rw: expected host:port"),
                    HasSubstr("brackets")));
  EXPECT_EQ(OneError(Valid() + "  listen: {rw: {host: h}}\n"),
            "test.yaml: postgres.listen.rw.port: required");
  EXPECT_EQ(OneError(Valid("admin: {http: {host: h, port: 1, path: /}}\n")),
            "test.yaml: admin.http.path: unknown key");
}

TEST(ConfigTest, EnumsListTheAllowedValues) {
  EXPECT_EQ(OneError(Valid() + "  backend_tls: {sslmode: verify-ca}\n"),
            "test.yaml: postgres.backend_tls.sslmode: expected one of disable, prefer, require, "
            "verify-full, got \"verify-ca\"");
  EXPECT_THAT(OneError(Valid("log_level: loud\n")),
              StartsWith("test.yaml: log_level: expected one of"));
  EXPECT_EQ(OneError(Valid("redis:\n  nodes: [{name: a, region: r1, host: h, port: 1}]\n"
                           "  backend_tls: maybe\n")),
            "test.yaml: redis.backend_tls: expected true or false, got \"maybe\"");
}

// --- validation rules ------------------------------------------------------------------------

TEST(ConfigTest, AtLeastOneProtocol) {
  EXPECT_EQ(OneError("region: r1\n"),
            "test.yaml: postgres: missing: configure at least one of the postgres and redis "
            "sections");
  EXPECT_EQ(OneError("region: r1\npostgres:\nredis: ~\n"),
            "test.yaml: postgres: missing: configure at least one of the postgres and redis "
            "sections");
  EXPECT_EQ(ErrorLines(Load("")),
            (std::vector<std::string>{
                "test.yaml: postgres: missing: configure at least one of the postgres and redis "
                "sections",
                "test.yaml: region: required (in the file or the REGION environment variable)"}));
}

TEST(ConfigTest, EverySectionNeedsANode) {
  EXPECT_EQ(OneError("region: r1\npostgres:\n  auth: trust\n"),
            "test.yaml: postgres.nodes: at least one node is required");
  EXPECT_EQ(OneError("region: r1\nredis:\n  nodes: []\n"),
            "test.yaml: redis.nodes: at least one node is required");
}

TEST(ConfigTest, NodeFieldsAreRequiredAndNonEmpty) {
  const std::vector<std::string> lines = ErrorLines(Load("region: r1\nredis:\n  nodes: [{}]\n"));
  EXPECT_EQ(lines, (std::vector<std::string>{"test.yaml: redis.nodes[0].name: required",
                                             "test.yaml: redis.nodes[0].region: required",
                                             "test.yaml: redis.nodes[0].host: required",
                                             "test.yaml: redis.nodes[0].port: required"}));
  EXPECT_EQ(OneError("region: r1\nredis:\n  nodes: [{name: '', region: r1, host: h, port: 1}]\n"),
            "test.yaml: redis.nodes[0].name: must not be empty");
  EXPECT_EQ(OneError("region: r1\nredis:\n  nodes: [{name: a, region: r1, host: '', port: 1}]\n"),
            "test.yaml: redis.nodes[0].host: must not be empty");
}

TEST(ConfigTest, NodeNamesAreUniquePerProtocol) {
  EXPECT_EQ(OneError("region: r1\nredis:\n  nodes:\n"
                     "    - {name: a, region: r1, host: h, port: 1}\n"
                     "    - {name: b, region: r1, host: h, port: 2}\n"
                     "    - {name: a, region: r2, host: h, port: 3}\n"),
            "test.yaml: redis.nodes[2].name: duplicate node name \"a\" (also redis.nodes[0])");
  // The same name under both protocols is fine.
  EXPECT_TRUE(Load(Valid("redis:\n  nodes: [{name: pg-a, region: r1, host: h, port: 1}]\n")).ok());
}

TEST(ConfigTest, UsersRequiredUnlessTrust) {
  const std::string nodes = "  nodes: [{name: a, region: r1, host: h, port: 1}]\n";
  EXPECT_EQ(OneError("region: r1\npostgres:\n" + nodes),
            "test.yaml: postgres.users: at least one user is required unless auth is trust");
  absl::StatusOr<Config> c = Load("region: r1\npostgres:\n  auth: trust\n" + nodes);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->postgres->users.empty());
  EXPECT_EQ(OneError("region: r1\npostgres:\n  users: [{name: a}]\n" + nodes),
            "test.yaml: postgres.users[0].password: required unless auth is trust");
  EXPECT_TRUE(Load("region: r1\npostgres:\n  auth: trust\n  users: [{name: a}]\n" + nodes).ok());
}

TEST(ConfigTest, UserNamesAreUnique) {
  EXPECT_EQ(OneError("region: r1\npostgres:\n  users: [{name: a, password: x}, {name: a, "
                     "password: y}]\n  nodes: [{name: a, region: r1, host: h, port: 1}]\n"),
            "test.yaml: postgres.users[1].name: duplicate user \"a\" (also postgres.users[0])");
  EXPECT_EQ(OneError("region: r1\npostgres:\n  users: [{password: x}]\n"
                     "  nodes: [{name: a, region: r1, host: h, port: 1}]\n"),
            "test.yaml: postgres.users[0].name: required");
}

TEST(ConfigTest, MonitorRules) {
  EXPECT_EQ(OneError(Valid("monitor: {interval: 9ms}\n")),
            "test.yaml: monitor.interval: must be at least 10ms");
  EXPECT_TRUE(Load(Valid("monitor: {interval: 10ms}\n")).ok());
  EXPECT_EQ(OneError(Valid("monitor: {failure_threshold: 0}\n")),
            "test.yaml: monitor.failure_threshold: must be at least 1, got 0");
  // A node's checks run one after another: a timeout above the interval spaces them out.
  absl::StatusOr<Config> c = Load(Valid("monitor: {interval: 250ms, timeout: 2s}\n"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->monitor.timeout, milliseconds(2000));
  c = Load(Valid("monitor: {interval: 250ms}\n"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->monitor.timeout, milliseconds(1000));
  c = Load(Valid("monitor: {interval: 2s}\n"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->monitor.timeout, milliseconds(1600));
}

TEST(ConfigTest, KeepaliveTimesAreWholeSecondsTheKernelTakes) {
  absl::StatusOr<Config> c = Load(Valid("server_keepalive: {idle: 0}\n"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server_keepalive.idle, milliseconds(0));  // off
  EXPECT_EQ(OneError(Valid("server_keepalive: {idle: 1500ms}\n")),
            "test.yaml: server_keepalive.idle: must be 0 (off) or whole seconds from 1s to "
            "32767s");
  EXPECT_EQ(OneError(Valid("server_keepalive: {idle: 32768s}\n")),
            "test.yaml: server_keepalive.idle: must be 0 (off) or whole seconds from 1s to "
            "32767s");
  EXPECT_EQ(OneError(Valid("server_keepalive: {interval: 0}\n")),
            "test.yaml: server_keepalive.interval: must be whole seconds from 1s to 32767s");
  EXPECT_EQ(OneError(Valid("server_keepalive: {count: 0}\n")),
            "test.yaml: server_keepalive.count: must be at least 1, got 0");
  EXPECT_EQ(OneError(Valid("server_keepalive: {count: 128}\n")),
            "test.yaml: server_keepalive.count: must be at most 127, got 128");
  EXPECT_THAT(OneError(Valid("server_keepalive: {probes: 3}\n")),
              StartsWith("test.yaml: server_keepalive.probes: unknown key"));
}

TEST(ConfigTest, WorkersNotNegative) {
  EXPECT_EQ(OneError(Valid("workers: -1\n")), "test.yaml: workers: must be at least 0, got -1");
  EXPECT_TRUE(Load(Valid("workers: 0\n")).ok());
}

TEST(ConfigTest, TlsCertAndKeyTogether) {
  EXPECT_EQ(OneError(Valid() + "  tls: {cert: /c.pem}\n"),
            "test.yaml: postgres.tls.key: required when tls.cert is set");
  EXPECT_EQ(OneError(Valid() + "  tls: {key: /k.pem}\n"),
            "test.yaml: postgres.tls.cert: required when tls.key is set");
  EXPECT_EQ(OneError(Valid("redis:\n  nodes: [{name: a, region: r1, host: h, port: 1}]\n"
                           "  tls: {cert: /c.pem, key: ''}\n")),
            "test.yaml: redis.tls.key: required when tls.cert is set");
}

TEST(ConfigTest, VerifyFullWithoutRootCertUsesTheSystemStore) {
  absl::StatusOr<Config> c = Load(Valid() + "  backend_tls: {sslmode: verify-full}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->postgres->backend_tls.mode, SslMode::kVerifyFull);
  EXPECT_EQ(c->postgres->backend_tls.root_cert, "");
}

TEST(ConfigTest, ListenersMustDiffer) {
  EXPECT_EQ(OneError(Valid() + "  listen: {rw: \"127.0.0.1:6432\", ro: \"127.0.0.1:6432\"}\n"),
            "test.yaml: postgres.listen.ro: must differ from postgres.listen.rw (both are "
            "127.0.0.1:6432)");
  EXPECT_EQ(OneError(Valid("admin: {http: \"127.0.0.1:6432\"}\n")),
            "test.yaml: admin.http: must differ from postgres.listen.rw (both are 127.0.0.1:6432)");
}

TEST(ConfigTest, MaxPipelineAtLeastOne) {
  EXPECT_EQ(OneError("region: r1\nredis:\n  nodes: [{name: a, region: r1, host: h, port: 1}]\n"
                     "  max_pipeline: 0\n"),
            "test.yaml: redis.max_pipeline: must be at least 1, got 0");
}

TEST(ConfigTest, SentinelNeedsBothParts) {
  const std::string base =
      "region: r1\nredis:\n  nodes: [{name: a, region: r1, host: h, port: 1}]\n";
  EXPECT_EQ(OneError(base + "  sentinel: {addresses: [\"s:26379\"]}\n"),
            "test.yaml: redis.sentinel.master: required when sentinel.addresses are given");
  EXPECT_EQ(OneError(base + "  sentinel: {master: m}\n"),
            "test.yaml: redis.sentinel.addresses: required when sentinel.master is given");
  EXPECT_EQ(OneError(base + "  sentinel: {master: m, addresses: [\"s\"]}\n"),
            "test.yaml: redis.sentinel.addresses[0]: expected host:port or [ipv6]:port, got \"s\" "
            "(missing :port)");
}

TEST(ConfigTest, MonitorLoginDefaultsToTheFirstUser) {
  absl::StatusOr<Config> c = Load(Valid());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->postgres->monitor_user, "app");
  EXPECT_EQ(c->postgres->monitor_password, "pw");

  // The monitor logs in upstream, so a backend_password wins.
  const std::string nodes = "  nodes: [{name: a, region: r1, host: h, port: 1}]\n";
  c = Load(
      "region: r1\npostgres:\n  users: [{name: a, password: x, backend_password: up}, "
      "{name: b, password: y}]\n" +
      nodes);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->postgres->monitor_user, "a");
  EXPECT_EQ(c->postgres->monitor_password, "up");

  // A named monitor user that is one of the users gets that user's password.
  c = Load(
      "region: r1\npostgres:\n  users: [{name: a, password: x}, {name: b, password: y}]\n"
      "  monitor: {user: b}\n" +
      nodes);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->postgres->monitor_user, "b");
  EXPECT_EQ(c->postgres->monitor_password, "y");
  EXPECT_EQ(c->postgres->monitor_database, "postgres");
}

// --- DumpMasked ------------------------------------------------------------------------------

constexpr char kSecretFile[] = R"(
region: r1
primary_region: r1
postgres:
  listen: {rw: "[::1]:6432", ro: "127.0.0.1:6433"}
  users: [{name: app, password: s3cret-a, backend_password: s3cret-b}]
  nodes: [{name: a, region: r1, host: "::1", port: 5432}]
  monitor: {user: mon, password: s3cret-c}
  volatile_allowlist: [now]
redis:
  nodes: [{name: a, region: r1, host: h, port: 6379}]
  password: s3cret-d
  backend_password: s3cret-e
  sentinel: {addresses: ["[::1]:26379"], master: m}
monitor: {interval: 1500ms}
admin: {http: ""}
)";

TEST(ConfigTest, DumpMaskedHidesEveryPassword) {
  absl::StatusOr<Config> c = Load(kSecretFile);
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string dump = DumpMasked(*c);
  EXPECT_THAT(dump, Not(HasSubstr("s3cret")));
  EXPECT_THAT(dump, HasSubstr("***"));
  // An empty password is shown as empty, not as "***" (which would suggest one is set).
  Config plain = *c;
  plain.redis->password.clear();
  EXPECT_THAT(DumpMasked(plain), ContainsRegex("\n  password: ['\"]{2}\n"));
}

TEST(ConfigTest, DumpMaskedReadsBack) {
  absl::StatusOr<Config> c = Load(kSecretFile);
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string dump = DumpMasked(*c);
  absl::StatusOr<Config> again = LoadString(dump, "dump", FakeEnv({}));
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << dump;
  EXPECT_EQ(DumpMasked(*again), dump);
  EXPECT_EQ(again->postgres->listen_rw.ToString(), "[::1]:6432");
  EXPECT_EQ(again->postgres->nodes[0].host, "::1");
  EXPECT_EQ(again->postgres->users[0].password, "***");
  EXPECT_EQ(again->redis->sentinels[0].ToString(), "[::1]:26379");
  EXPECT_EQ(again->monitor.interval, milliseconds(1500));
  EXPECT_EQ(again->monitor.timeout, milliseconds(1200));
  EXPECT_FALSE(again->admin.http.has_value());
  EXPECT_EQ(again->postgres->max_lag.bytes, c->postgres->max_lag.bytes);
}

// --- LoadFile --------------------------------------------------------------------------------

TEST(ConfigTest, LoadFileReadsAndNamesTheFile) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("nerava-config-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "proxy.yaml").string();
  {
    std::ofstream out(path);
    out << Valid("workers: x\n");
  }
  absl::StatusOr<Config> c = LoadFile(path, FakeEnv({}));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(std::string(c.status().message()), path + ": workers: expected an integer, got \"x\"");
  {
    std::ofstream out(path);
    out << Valid();
  }
  c = LoadFile(path, FakeEnv({}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->source, path);

  EXPECT_EQ(LoadFile((dir / "missing.yaml").string(), FakeEnv({})).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadFile(dir.string(), FakeEnv({})).status().code(), absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace nerava::config
