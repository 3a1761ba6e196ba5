#include "proxy/pg_server_pool.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <set>
#include <string_view>
#include <vector>

#include "nerava/protocol/pg/messages.h"
#include "proxy/pg_io.h"

namespace nerava::proxy {
namespace {

using namespace asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;

// DISCARD ALL answers within a round trip; a server that takes longer is not worth keeping.
constexpr auto kResetTimeout = std::chrono::seconds(5);
// Per worker and login: more idle connections than a burst of this many is waste. Per worker
// in all: parked connections must not take the server's connection slots from other logins.
constexpr size_t kMaxParkedPerLogin = 64;
constexpr size_t kMaxParkedPerWorker = 256;

struct Parked {
  std::unique_ptr<PgBackend> backend;
  Clock::time_point since;
};

// Says goodbye before closing, as a client would (the server logs no "unexpected EOF"). Best
// effort: only on a plain socket, and only what the socket takes at once.
void Close(PgBackend& backend) {
  if (!backend.stream.is_tls()) {
    std::string terminate;
    pg::AppendTerminate(terminate);
    error_code ignored;
    backend.stream.socket().write_some(asio::buffer(terminate), ignored);
  }
  backend.stream.Close();
}

// One per worker thread: its sessions and their server connections share the thread, so the
// pool needs no lock (as the Redis shared links, redis_shared_link.cc).
struct WorkerPark {
  std::map<std::string, std::vector<Parked>, std::less<>> idle;  // newest last
  bool reaper_running = false;

  ~WorkerPark() {
    for (auto& [key, list] : idle) {
      for (Parked& parked : list) Close(*parked.backend);
    }
  }
  size_t size() const {
    size_t n = 0;
    for (const auto& [key, list] : idle) n += list.size();
    return n;
  }
  // Closes what stayed longer than `timeout`; returns when the oldest left expires.
  std::optional<Clock::time_point> Evict(Clock::time_point now, Clock::duration timeout) {
    std::optional<Clock::time_point> next;
    for (auto it = idle.begin(); it != idle.end();) {
      auto& list = it->second;
      auto expired = std::find_if(list.begin(), list.end(),
                                  [&](const Parked& p) { return now - p.since < timeout; });
      for (auto p = list.begin(); p != expired; ++p) Close(*p->backend);
      list.erase(list.begin(), expired);  // oldest first: the expired ones are a prefix
      if (list.empty()) {
        it = idle.erase(it);
        continue;
      }
      const Clock::time_point due = list.front().since + timeout;
      next = next ? std::min(*next, due) : due;
      ++it;
    }
    return next;
  }
};

WorkerPark& ThisWorker() {
  thread_local WorkerPark park;
  return park;
}

// Everything that makes a new connection differ: the node, its role and how often it was marked
// down, the login, the start-up parameters (database, options, application_name...) in the
// order the client sent them.
std::string LoginKey(const PgBackendTarget& target, const StartupParameters& parameters,
                     const std::string& user) {
  std::string key = target.node_name + '\0' + target.host + ':' + std::to_string(target.port) +
                    '\0' + routing::RoleName(target.role) + '\0' +
                    std::to_string(target.times_marked_down) + '\0' + user;
  for (const auto& [name, value] : parameters) key += '\0' + name + '=' + value;
  return key;
}

// Nothing arrived while it was parked (a NOTICE, a ParameterStatus after a promotion, the
// server's goodbye) and the server has not closed it.
bool Quiet(PgBackend& backend) {
  char byte = 0;
  const ssize_t n = ::recv(backend.stream.socket().native_handle(), &byte, 1,
                           MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

awaitable<void> Reap(Clock::duration timeout) {
  WorkerPark& park = ThisWorker();
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    const auto next = park.Evict(Clock::now(), timeout);
    if (!next) break;
    timer.expires_at(*next);
    co_await timer.async_wait(kNoThrow);
  }
  park.reaper_running = false;
}

// The ParameterStatus messages of the connection's start-up, as "name\0value" entries.
std::set<std::string> StartupSettings(std::string_view replay, uint32_t max_message) {
  std::set<std::string> settings;
  for (;;) {
    auto header = pg::PeekHeader(replay, max_message);
    if (!header.ok() || !header->has_value() || (*header)->total_size() > replay.size()) break;
    if ((*header)->type == pg::msg::kParameterStatus) {
      auto status = pg::ParseParameterStatus(replay.substr(5, (*header)->body_size()));
      if (status.ok()) {
        settings.insert(std::string(status->name) + '\0' + std::string(status->value));
      }
    }
    replay.remove_prefix((*header)->total_size());
  }
  return settings;
}

// Runs DISCARD ALL and reads its replies up to ReadyForQuery; true when the server is idle and
// clean again. The settings it reports on the way must go back to their start-up values: the
// next client is greeted with those. Another value (a configuration reload changed a default)
// makes the connection not worth keeping.
awaitable<bool> Reset(PgBackend& backend, uint32_t max_message) {
  std::string request;
  pg::AppendQuery(request, "DISCARD ALL");
  if (!co_await WriteAll(backend.stream, request)) co_return false;
  const std::set<std::string> startup = StartupSettings(backend.startup_replay, max_message);
  bool failed = false;
  for (;;) {
    auto header = co_await ReadPgMessage(backend.stream, backend.buffer, max_message);
    if (!header.ok()) co_return false;
    const char type = header->type;
    if (type == pg::msg::kErrorResponse) failed = true;
    if (type == pg::msg::kParameterStatus) {
      auto status = pg::ParseParameterStatus(MessageBody(backend.buffer, *header));
      failed = failed || !status.ok() ||
               !startup.contains(std::string(status->name) + '\0' + std::string(status->value));
    }
    if (type == pg::msg::kReadyForQuery) {
      const auto status = pg::ParseReadyForQuery(MessageBody(backend.buffer, *header));
      backend.buffer.Consume(header->total_size());
      co_return !failed && status.ok() && *status == 'I' && backend.buffer.empty();
    }
    backend.buffer.Consume(header->total_size());
  }
}

awaitable<void> ResetAndPark(std::unique_ptr<PgBackend> backend, std::string key,
                             Clock::duration timeout, uint32_t max_message) {
  asio::steady_timer deadline(co_await asio::this_coro::executor, kResetTimeout);
  auto outcome = co_await (Reset(*backend, max_message) || deadline.async_wait(kNoThrow));
  if (outcome.index() != 0 || !std::get<0>(outcome)) {
    spdlog::debug("pg: server connection to {} not reusable (DISCARD ALL failed)",
                  backend->target.node_name);
    Close(*backend);
    co_return;
  }
  WorkerPark& park = ThisWorker();
  if (park.size() >= kMaxParkedPerWorker) {
    Close(*backend);
    co_return;
  }
  std::vector<Parked>& list = park.idle[key];
  if (list.size() >= kMaxParkedPerLogin) {
    Close(*list.front().backend);
    list.erase(list.begin());
  }
  list.push_back(Parked{std::move(backend), Clock::now()});
  if (!park.reaper_running) {
    park.reaper_running = true;
    auto executor = co_await asio::this_coro::executor;  // GCC 12: no co_await inside co_spawn(...)
    asio::co_spawn(executor, Reap(timeout), asio::detached);
  }
}

}  // namespace

awaitable<PgBackendResult> OpenPgServer(const PgContext& context, const PgBackendTarget& target,
                                        const StartupParameters& parameters,
                                        const std::string& user, const std::string& password) {
  if (context.settings.server_idle_timeout.count() > 0) {
    WorkerPark& park = ThisWorker();
    if (auto it = park.idle.find(LoginKey(target, parameters, user)); it != park.idle.end()) {
      std::vector<Parked>& list = it->second;
      while (!list.empty()) {
        std::unique_ptr<PgBackend> backend = std::move(list.back().backend);
        list.pop_back();
        if (Quiet(*backend)) co_return PgBackendResult{std::move(backend), {}};
        Close(*backend);
      }
    }
  }
  PgBackendOptions options{context.settings.backend_tls, context.backend_tls,
                           context.settings.connect_timeout, context.limits, context.metrics,
                           context.server_keepalive};
  co_return co_await ConnectPgBackend(target, options, parameters, user, password);
}

void ParkServer(const PgContext& context, std::unique_ptr<PgBackend> backend,
                const StartupParameters& parameters, const std::string& user) {
  if (context.settings.server_idle_timeout.count() <= 0) {
    Close(*backend);
    return;
  }
  backend->stream.Cancel();  // a watch the session left armed
  std::string key = LoginKey(backend->target, parameters, user);
  auto executor = backend->stream.socket().get_executor();
  asio::co_spawn(executor,
                 ResetAndPark(std::move(backend), std::move(key),
                              context.settings.server_idle_timeout, context.limits.max_message),
                 asio::detached);
}

}  // namespace nerava::proxy
