// Every shipped example config must load with the environment its deployment provides.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "nerava/config/config.h"
#include "tests/unit/config/test_env.h"

namespace nerava::config {
namespace {

using ::nerava::config::testing::FakeEnv;
using std::chrono::milliseconds;

const std::filesystem::path kExamples =
    std::filesystem::path(NERAVA_SOURCE_DIR) / "config" / "examples";

TEST(ExamplesTest, EveryExampleValidates) {
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kExamples)) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    absl::StatusOr<Config> c = LoadFile(
        entry.path().string(),
        FakeEnv({{"REGION", "us-east-1"}, {"PRIMARY_REGION", "us-east-1"}, {"PGPASSWORD", "pw"}}));
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(c->postgres.has_value());
    EXPECT_TRUE(c->redis.has_value());
    ++loaded;
  }
  EXPECT_GE(loaded, 3);
}

TEST(ExamplesTest, SandboxDefaults) {
  absl::StatusOr<Config> c = LoadFile((kExamples / "sandbox.yaml").string(), FakeEnv({}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->region, "eu-west-1");
  EXPECT_EQ(c->primary_region, "us-east-1");
  const Postgres& pg = *c->postgres;
  EXPECT_EQ(pg.listen_rw.ToString(), "127.0.0.1:6432");
  ASSERT_TRUE(pg.listen_ro.has_value());
  EXPECT_EQ(pg.listen_ro->ToString(), "127.0.0.1:6433");
  ASSERT_EQ(pg.users.size(), 1u);
  EXPECT_EQ(pg.users[0].name, "nerava");
  EXPECT_EQ(pg.users[0].password, "nerava");
  ASSERT_EQ(pg.nodes.size(), 2u);
  EXPECT_EQ(pg.nodes[0].name, "pg-use1");
  EXPECT_EQ(pg.nodes[0].region, "us-east-1");
  EXPECT_EQ(pg.nodes[0].port, 15432);
  EXPECT_EQ(pg.nodes[1].name, "pg-euw1");
  EXPECT_EQ(pg.nodes[1].region, "eu-west-1");
  EXPECT_EQ(pg.nodes[1].port, 15433);
  EXPECT_EQ(pg.backend_tls.mode, SslMode::kDisable);
  const Redis& r = *c->redis;
  EXPECT_EQ(r.listen.ToString(), "127.0.0.1:6379");
  EXPECT_EQ(r.nodes[0].name, "redis-use1");
  EXPECT_EQ(r.nodes[0].port, 16379);
  EXPECT_EQ(r.nodes[1].name, "redis-euw1");
  EXPECT_EQ(r.nodes[1].port, 16380);
  EXPECT_EQ(c->admin.socket, "/tmp/nerava-sandbox/admin.sock");
  EXPECT_EQ(c->admin.http->ToString(), "127.0.0.1:9187");
}

TEST(ExamplesTest, SandboxPortsFollowTheEnvironment) {
  absl::StatusOr<Config> c = LoadFile((kExamples / "sandbox.yaml").string(),
                                      FakeEnv({{"SANDBOX_PG_PRIMARY_PORT", "25432"},
                                               {"SANDBOX_PG_REPLICA_PORT", "25433"},
                                               {"SANDBOX_REDIS_PRIMARY_PORT", "26379"},
                                               {"SANDBOX_REDIS_REPLICA_PORT", "26380"},
                                               {"SANDBOX_DIR", "/tmp/sb"},
                                               {"PGPASSWORD", "pw"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->postgres->nodes[0].port, 25432);
  EXPECT_EQ(c->postgres->nodes[1].port, 25433);
  EXPECT_EQ(c->redis->nodes[0].port, 26379);
  EXPECT_EQ(c->redis->nodes[1].port, 26380);
  EXPECT_EQ(c->admin.socket, "/tmp/sb/admin.sock");
  EXPECT_EQ(c->postgres->users[0].password, "pw");
}

TEST(ExamplesTest, RegionFilesTakeRegionsAndSecretsFromTheEnvironment) {
  for (const char* file : {"us-east-1.yaml", "eu-west-1.yaml"}) {
    SCOPED_TRACE(file);
    const std::string path = (kExamples / file).string();
    absl::StatusOr<Config> c = LoadFile(
        path,
        FakeEnv({{"REGION", "eu-west-1"}, {"PRIMARY_REGION", "us-east-1"}, {"PGPASSWORD", "pw"}}));
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->region, "eu-west-1");
    EXPECT_EQ(c->primary_region, "us-east-1");
    EXPECT_EQ(c->postgres->nodes[0].host, "primary-db");
    EXPECT_EQ(c->postgres->nodes[1].host, "secondary-db");
    EXPECT_EQ(c->redis->nodes[0].host, "primary-redis");
    EXPECT_EQ(c->redis->nodes[1].host, "secondary-redis");
    EXPECT_EQ(c->redis->backend_password, "");
    EXPECT_EQ(c->admin.socket, "/run/nerava-proxy/admin.sock");
    EXPECT_EQ(c->admin.http->ToString(), "0.0.0.0:9187");

    absl::StatusOr<Config> missing = LoadFile(path, FakeEnv({{"PRIMARY_REGION", "us-east-1"}}));
    ASSERT_FALSE(missing.ok());
    EXPECT_THAT(std::string(missing.status().message()),
                ::testing::HasSubstr(path + ": region: environment variable REGION is not set"));
    EXPECT_THAT(std::string(missing.status().message()),
                ::testing::HasSubstr(path + ": postgres.users[0].password: environment variable "
                                            "PGPASSWORD is not set"));
  }
}

}  // namespace
}  // namespace nerava::config
