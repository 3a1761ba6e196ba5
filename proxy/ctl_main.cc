// nerava-proxyctl: sends one command to a running proxy's admin socket and prints the reply.
//
//   nerava-proxyctl [--socket PATH | --config FILE] COMMAND...
//   e.g. nerava-proxyctl status --json
//
// Exit status: 0 on an OK reply, 1 on an ERR reply, 2 on a usage or connection problem.
#include <poll.h>

#include <cstdlib>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "nerava/config/config.h"

namespace {

constexpr auto kTimeout = std::chrono::seconds(10);
constexpr size_t kMaxReply = 64 << 20;

constexpr const char* kUsage =
    "usage: nerava-proxyctl [--socket PATH | --config FILE] COMMAND...\n"
    "commands: status | show nodes | show clients | show config | help, each with --json\n"
    "The socket defaults to /run/nerava-proxy/admin.sock (admin.socket of --config FILE).\n";

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Waits for `events` on fd until the deadline; false on timeout or error.
bool Wait(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{fd, events, 0};
    const int rc = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return false;
  }
}

// Sends `request` and returns the whole reply; on failure an empty string and `error` set.
std::string Exchange(const std::string& path, const std::string& request,
                     std::chrono::seconds timeout, std::string& error) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) {
    error = "socket path too long: " + path;
    return {};
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return {};
  }
  // A local connect either succeeds or fails at once (or EAGAIN on a full backlog).
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    error = "cannot connect to " + path + ": " + std::strerror(errno);
    return {};
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t sent = 0;
  while (sent < request.size()) {
    if (!Wait(fd.get(), POLLOUT, deadline)) {
      error = "timed out sending the command";
      return {};
    }
    const ssize_t n =
        ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) {
      error = std::string("send: ") + std::strerror(errno);
      return {};
    }
    sent += static_cast<size_t>(n);
  }
  std::string reply;
  char buffer[16384];
  for (;;) {
    if (!Wait(fd.get(), POLLIN, deadline)) {
      error = "timed out waiting for the reply";
      return {};
    }
    const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) {
      error = std::string("recv: ") + std::strerror(errno);
      return {};
    }
    if (n == 0) break;
    reply.append(buffer, static_cast<size_t>(n));
    if (reply.size() > kMaxReply) {
      error = "reply too large";
      return {};
    }
  }
  if (reply.empty()) error = "the proxy closed the connection without a reply";
  return reply;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path;
  std::string config_path;
  std::vector<std::string> words;
  // Hand-parsed: the command's own flags (--json) must pass through untouched.
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool takes_value = arg == "--socket" || arg == "--config";
    if (words.empty() && takes_value) {
      if (i + 1 >= argc) {
        std::cerr << "nerava-proxyctl: " << arg << " needs a value\n" << kUsage;
        return 2;
      }
      (arg == "--socket" ? socket_path : config_path) = argv[++i];
    } else if (words.empty() && arg.starts_with("--socket=")) {
      socket_path = arg.substr(9);
    } else if (words.empty() && arg.starts_with("--config=")) {
      config_path = arg.substr(9);
    } else if (words.empty() && (arg == "-h" || arg == "--help")) {
      std::cout << kUsage;
      return 0;
    } else {
      words.push_back(arg);
    }
  }
  if (words.empty()) {
    std::cerr << kUsage;
    return 2;
  }
  if (socket_path.empty() && !config_path.empty()) {
    auto config = nerava::config::LoadFile(config_path);
    if (!config.ok()) {
      std::cerr << "nerava-proxyctl: " << config.status().message() << "\n";
      return 2;
    }
    socket_path = config->admin.socket;
    if (socket_path.empty()) {
      std::cerr << "nerava-proxyctl: " << config_path << " configures no admin.socket\n";
      return 2;
    }
  }
  if (socket_path.empty()) socket_path = nerava::config::Admin{}.socket;

  std::string request;
  for (const auto& word : words) {
    if (word.find_first_of("\r\n") != std::string::npos) {
      std::cerr << "nerava-proxyctl: a command word cannot contain a newline\n";
      return 2;
    }
    request += (request.empty() ? "" : " ") + word;
  }
  request += "\n";
  // A switchover answers when it is done: up to its own timeout (default 10 s) and the wait
  // for the monitor after it.
  auto timeout = kTimeout;
  if (words.front() == "switch-primary") {
    double switch_timeout = 10;
    for (size_t i = 1; i + 1 < words.size(); ++i) {
      if (words[i] == "--timeout") switch_timeout = std::atof(words[i + 1].c_str());
    }
    timeout += std::chrono::seconds(static_cast<int64_t>(switch_timeout * 2) + 30);
  }
  std::string error;
  const std::string reply = Exchange(socket_path, request, timeout, error);
  if (!error.empty()) {
    std::cerr << "nerava-proxyctl: " << error << "\n";
    return 2;
  }
  const size_t end_of_status = reply.find('\n');
  const std::string status = reply.substr(0, end_of_status);
  const std::string body =
      end_of_status == std::string::npos ? std::string() : reply.substr(end_of_status + 1);
  if (status == "OK") {
    std::cout << body << std::flush;
    return 0;
  }
  if (status.starts_with("ERR")) {
    std::cerr << "nerava-proxyctl: error: " << status.substr(status.size() > 3 ? 4 : 3) << "\n"
              << body << std::flush;
    return 1;
  }
  std::cerr << "nerava-proxyctl: unexpected reply: " << status << "\n";
  return 2;
}
