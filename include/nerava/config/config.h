// The proxy's configuration (DESIGN §8): a YAML file with ${VAR} interpolation, REGION and
// PRIMARY_REGION taken from the environment over the file, defaults for everything optional,
// and validation whose every error names the file, the key and what is wrong.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace nerava::config {

struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const;  // "host:port" ([v6]:port)
};

struct Node {
  std::string name;    // unique within its protocol
  std::string region;
  std::string host;
  uint16_t port = 0;
};

struct MaxLag {
  std::chrono::milliseconds seconds{5000};  // key "seconds", accepts "5", "5s", "500ms"
  uint64_t bytes = 16ull << 20;             // key "bytes", accepts "16MiB", "1048576", "1GB"
};

// Server-side TLS (clients -> proxy).
struct ServerTls {
  std::string cert_file;  // both empty: TLS off, SSLRequest answered 'N'
  std::string key_file;
  bool enabled() const { return !cert_file.empty(); }
};

// Client-side TLS (proxy -> servers), libpq's sslmode semantics.
enum class SslMode { kDisable, kPrefer, kRequire, kVerifyFull };
struct BackendTls {
  SslMode mode = SslMode::kPrefer;  // key "sslmode": disable|prefer|require|verify-full
  std::string root_cert;            // CA file for verify-full; empty = system store
};

enum class AuthMethod { kScramSha256, kMd5, kTrust };  // "scram-sha-256" | "md5" | "trust"

struct PgUser {
  std::string name;
  std::string password;          // checks clients; also used upstream unless backend_password
  std::string backend_password;  // optional: password for the servers, when it differs
};

struct Postgres {
  Endpoint listen_rw{"127.0.0.1", 6432};           // listen.rw
  std::optional<Endpoint> listen_ro;               // listen.ro (READ_DATABASE_URL)
  AuthMethod auth = AuthMethod::kScramSha256;      // auth
  std::vector<PgUser> users;                       // users
  std::vector<Node> nodes;                         // nodes (at least one)
  MaxLag max_lag;                                  // max_lag
  ServerTls tls;                                   // tls: {cert, key}
  BackendTls backend_tls;                          // backend_tls: {sslmode, root_cert}
  uint32_t max_message_bytes = 64u << 20;          // max_message_size
  int max_client_connections = 10000;              // max_client_connections
  std::chrono::milliseconds connect_timeout{5000}; // connect_timeout
  // server_idle_timeout: how long a server connection a finished session left clean is kept
  // for the next session with the same login. 0 (the default) closes them with their session:
  // a parked connection keeps its database in use (DROP DATABASE right after the client
  // disconnected fails with 55006) and the next client sees the same pg_backend_pid().
  std::chrono::milliseconds server_idle_timeout{0};
  std::vector<std::string> volatile_allowlist;     // functions that may run on replicas
  // monitor: {user, password, database}: how the monitor logs in to every node; defaults to
  // the first of `users` and database "postgres".
  std::string monitor_user;
  std::string monitor_password;
  std::string monitor_database = "postgres";
};

struct Redis {
  Endpoint listen{"127.0.0.1", 6379};              // listen
  std::vector<Node> nodes;                         // nodes (at least one)
  std::string password;                            // optional proxy-side password for clients
  std::string backend_username;                    // optional credentials for the servers
  std::string backend_password;
  ServerTls tls;
  bool backend_tls = false;
  std::string backend_root_cert;
  MaxLag max_lag;
  int max_pipeline = 1024;                         // pending requests per client
  int max_client_connections = 10000;
  std::chrono::milliseconds connect_timeout{5000};
  // Plain reads of clients in the default connection state share one pipelined server
  // connection per worker and node (fewer syscalls in the proxy and the server).
  bool shared_connections = true;
  std::vector<Endpoint> sentinels;                 // sentinel.addresses
  std::string sentinel_master;                     // sentinel.master
};

struct Monitor {
  std::chrono::milliseconds interval{250};
  int failure_threshold = 3;
  std::chrono::milliseconds timeout{0};  // 0 in the file: max(1 s, 0.8 x interval)
};

struct Failover {
  std::chrono::milliseconds wait{30000};
};

// TCP keepalive on the proxy's connections to PostgreSQL and Redis. A sidecar keeps idle server
// connections open across regions, through NAT gateways and load balancers that forget an idle
// flow after a few minutes (AWS NAT: 350 s): keepalive probes keep the flow known, and a path
// that died is found while the connection idles rather than when a request waits on it.
struct TcpKeepalive {
  std::chrono::milliseconds idle{60000};      // quiet time before the first probe; 0: off
  std::chrono::milliseconds interval{10000};  // between unanswered probes
  int count = 6;                              // unanswered probes before the connection fails
};

struct Admin {
  std::string socket = "/run/nerava-proxy/admin.sock";  // empty: no admin socket
  std::optional<Endpoint> http = Endpoint{"127.0.0.1", 9187};
};

struct Config {
  std::string source;  // file path it was loaded from, for messages
  std::string region;
  std::string primary_region;
  std::optional<Postgres> postgres;  // a section may be absent; at least one must be present
  std::optional<Redis> redis;
  Monitor monitor;
  Failover failover;
  TcpKeepalive server_keepalive;
  Admin admin;
  int workers = 0;                                   // 0: one per core
  std::chrono::milliseconds shutdown_timeout{10000}; // drain time on SIGTERM
  std::string log_level = "info";
};

// Looks up environment variables; injectable for tests.
using EnvLookup = std::function<std::optional<std::string>(std::string_view)>;
EnvLookup ProcessEnv();

// Loads and validates. Errors are InvalidArgument with "FILE: KEY: problem" messages
// (NotFound when the file cannot be read). ${VAR} and ${VAR:-default} are interpolated in
// scalar values before typing; an unset VAR without a default is an error naming the key.
absl::StatusOr<Config> LoadFile(const std::string& path, const EnvLookup& env = ProcessEnv());
// The same from text; `source` names it in messages.
absl::StatusOr<Config> LoadString(std::string_view yaml, std::string_view source,
                                  const EnvLookup& env = ProcessEnv());

// YAML of the effective config with every password replaced by "***" (for `show config`).
std::string DumpMasked(const Config& config);

}  // namespace nerava::config
