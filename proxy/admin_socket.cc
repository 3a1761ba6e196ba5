#include "proxy/admin_socket.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <filesystem>
#include <system_error>

#include "absl/status/status.h"

namespace nerava::proxy {
namespace {

using namespace asio::experimental::awaitable_operators;
using Protocol = asio::local::stream_protocol;

// Removes a socket file nobody listens on; refuses when a live process answers on it, and
// never deletes anything that is not a socket.
absl::Status ClearStaleSocket(asio::io_context& io, const std::string& path) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) return absl::OkStatus();  // nothing there
  if (!S_ISSOCK(info.st_mode)) {
    return absl::FailedPreconditionError("admin.socket: " + path +
                                         " exists and is not a socket; remove it or change "
                                         "the config");
  }
  Protocol::socket probe(io);
  error_code ec;
  probe.connect(Protocol::endpoint(path), ec);
  if (!ec) {
    return absl::UnavailableError("admin.socket: " + path +
                                  " is in use by a running process (another nerava-proxy?)");
  }
  std::error_code remove_error;
  std::filesystem::remove(path, remove_error);
  if (remove_error) {
    return absl::UnavailableError("admin.socket: cannot remove stale " + path + ": " +
                                  remove_error.message());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdminSocket>> AdminSocket::Open(asio::io_context& io,
                                                               const std::string& path,
                                                               Handler handler) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code mkdir_error;
    std::filesystem::create_directories(parent, mkdir_error);
    if (mkdir_error) {
      return absl::UnavailableError("admin.socket: cannot create " + parent.string() + ": " +
                                    mkdir_error.message());
    }
  }
  if (auto status = ClearStaleSocket(io, path); !status.ok()) return status;
  Protocol::acceptor acceptor(io);
  error_code ec;
  acceptor.open(Protocol(), ec);
  if (!ec) acceptor.bind(Protocol::endpoint(path), ec);
  // Private before anyone can connect: connecting needs listen(), which comes after.
  if (!ec && ::chmod(path.c_str(), 0600) != 0) {
    ec = error_code(errno, boost::system::system_category());
  }
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::error_code ignored;
    if (acceptor.is_open()) std::filesystem::remove(path, ignored);
    return absl::UnavailableError("admin.socket: cannot listen on " + path + ": " + ec.message());
  }
  return std::unique_ptr<AdminSocket>(
      new AdminSocket(std::move(acceptor), path, std::move(handler)));
}

AdminSocket::~AdminSocket() { Close(); }

void AdminSocket::Start() {
  asio::co_spawn(acceptor_.get_executor(), AcceptLoop(), asio::detached);
}

void AdminSocket::Close() {
  error_code ignored;
  acceptor_.close(ignored);
  if (!removed_) {
    std::error_code remove_error;
    std::filesystem::remove(path_, remove_error);
    removed_ = true;
  }
}

awaitable<void> AdminSocket::AcceptLoop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(kNoThrow);
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
    if (ec) {
      spdlog::warn("admin socket: accept failed: {}", ec.message());
      asio::steady_timer pause(acceptor_.get_executor(), std::chrono::milliseconds(50));
      co_await pause.async_wait(kNoThrow);
      continue;
    }
    asio::co_spawn(acceptor_.get_executor(), Serve(std::move(socket)), asio::detached);
  }
}

awaitable<AdminReply> AdminSocket::RunHandler(std::string line) { co_return handler_(line); }

awaitable<void> AdminSocket::Serve(Protocol::socket socket) {
  std::string request;
  asio::steady_timer deadline(socket.get_executor(), kTimeout);
  auto read =
      co_await (asio::async_read_until(socket, asio::dynamic_buffer(request, kMaxRequestBytes),
                                       '\n', kNoThrow) ||
                deadline.async_wait(kNoThrow));
  std::string reply;
  if (read.index() == 1) {
    reply = std::string(kAdminError) + " timed out waiting for a request line\n";
  } else {
    auto [ec, n] = std::get<0>(read);
    if (ec == asio::error::not_found) {
      reply = std::string(kAdminError) + " request line longer than " +
              std::to_string(kMaxRequestBytes) + " bytes\n";
    } else if (ec && ec != asio::error::eof) {
      co_return;
    } else {
      // Without a newline at EOF the whole input is the line.
      std::string_view line(request.data(), ec ? request.size() : n);
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
      // Commands may block (a switchover waits for the databases): off the main io_context.
      // (A member coroutine with the line by value: GCC 12 double-frees lambda captures here.)
      AdminReply result = co_await asio::co_spawn(blocking_.get_executor(),
                                                  RunHandler(std::string(line)),
                                                  asio::use_awaitable);
      if (!result.text.empty() && result.text.back() != '\n') result.text += '\n';
      reply = std::string(result.ok ? kAdminOk : kAdminError);
      reply += result.ok ? "\n" + result.text : " " + result.text;
    }
  }
  deadline.expires_after(kTimeout);
  co_await (asio::async_write(socket, asio::buffer(reply), kNoThrow) ||
            deadline.async_wait(kNoThrow));
  error_code ignored;
  socket.shutdown(Protocol::socket::shutdown_send, ignored);
  socket.close(ignored);
}

}  // namespace nerava::proxy
