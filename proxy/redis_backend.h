// A proxy-owned connection to one Redis server, opened lazily by a client session and kept for
// that session's life, so that blocking commands, MULTI and subscriptions behave as direct.
//
//   ConnectRedisBackend:  TCP connect ─▶ [TLS] ─▶ replay: AUTH, HELLO 3, CLIENT SETNAME, SELECT
//                         (the session's remembered state) ─▶ every replay reply checked ─▶ ready
//
//   data phase (driven by the session):
//     session reader ──request bytes, as sent──▶ stream
//     stream ──read──▶ in ──decoder (one top-level value at a time)──▶ session writer ──▶ client
// The whole connect, replay included, is bounded by one deadline.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "nerava/protocol/redis/decoder.h"
#include "proxy/asio.h"
#include "proxy/byte_buffer.h"
#include "proxy/metrics.h"
#include "proxy/stream.h"

namespace nerava::proxy {

struct RedisBackendTarget {
  std::string node_name;
  std::string host;
  uint16_t port = 0;
};

struct RedisBackendOptions {
  std::shared_ptr<ssl::context> tls_context;  // null: plain TCP
  std::chrono::milliseconds connect_timeout{5000};
  redis::Limits limits;
  Metrics* metrics = nullptr;  // counts the open connection in backend_connections when set
  config::TcpKeepalive keepalive;
};

struct RedisBackend {
  RedisBackend(tcp::socket socket, const redis::Limits& limits)
      : stream(std::move(socket)), decoder(limits, /*capture_args=*/1, /*capture_bytes=*/16) {}

  std::string node_name;
  Stream stream;
  ByteBuffer in;
  // Replies: the first element of an aggregate is captured to tell pub/sub messages and
  // (un)subscribe confirmations from ordinary replies.
  redis::Decoder decoder;
  size_t value_bytes = 0;  // bytes at the front of `in` already fed for the value in progress
  bool broken = false;     // a read or write failed: no further use
  // The session's connection-state generation this connection has (or will have, once the
  // requests written to it ran).
  uint64_t state_generation = 0;
  GaugeHold open_gauge;  // backend_connections{protocol="redis",node} while it exists
};

struct RedisBackendResult {
  std::shared_ptr<RedisBackend> backend;  // null on failure
  // On failure: an error line for the client without the leading '-' (the server's own when
  // a replayed command was refused, e.g. "WRONGPASS ...").
  std::string error;
  // The TCP connect failed or the whole connect timed out: the node may be down, and the
  // monitor may not have seen it yet.
  bool unreachable = false;
};

// One replayed command: its arguments, e.g. {"SELECT", "3"}.
using RedisCommand = std::vector<std::string>;

awaitable<RedisBackendResult> ConnectRedisBackend(const RedisBackendTarget& target,
                                                  const RedisBackendOptions& options,
                                                  const std::vector<RedisCommand>& replay);

}  // namespace nerava::proxy
