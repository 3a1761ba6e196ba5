// The admin Unix socket (admin.socket): one request per connection, for nerava-proxyctl.
//
//   client ── "status --json\n" ──▶ proxy          request: one line of command words
//   client ◀── "OK\n" + body ────── proxy, close   reply: a status line, then the body
//   client ◀── "ERR message\n" ──── proxy, close          ("ERR ..." for a failed command)
//
// Mode 0600 (the socket file is chmod-ed between bind and listen, so nobody can connect
// before it is private); the parent directory is created; a stale socket file left by a dead
// proxy is removed, a live one refuses the start. Accepts on the main io_context and runs each
// command on a thread of its own, since a switchover blocks while the databases catch up.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "proxy/admin_commands.h"
#include "proxy/asio.h"

namespace nerava::proxy {

inline constexpr std::string_view kAdminOk = "OK";
inline constexpr std::string_view kAdminError = "ERR";

class AdminSocket {
 public:
  using Handler = std::function<AdminReply(std::string_view line)>;

  static constexpr size_t kMaxRequestBytes = 4096;
  static constexpr auto kTimeout = std::chrono::seconds(5);

  static absl::StatusOr<std::unique_ptr<AdminSocket>> Open(asio::io_context& io,
                                                           const std::string& path,
                                                           Handler handler);
  ~AdminSocket();  // closes and removes the socket file
  void Start();
  void Close();

 private:
  using Protocol = asio::local::stream_protocol;
  AdminSocket(Protocol::acceptor acceptor, std::string path, Handler handler)
      : acceptor_(std::move(acceptor)), path_(std::move(path)), handler_(std::move(handler)) {}
  awaitable<void> AcceptLoop();
  awaitable<void> Serve(Protocol::socket socket);
  awaitable<AdminReply> RunHandler(std::string line);

  Protocol::acceptor acceptor_;
  std::string path_;
  Handler handler_;
  bool removed_ = false;
  asio::thread_pool blocking_{1};  // runs the handler: one command at a time
};

}  // namespace nerava::proxy
