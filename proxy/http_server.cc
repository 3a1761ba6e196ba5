#include "proxy/http_server.h"

#include <spdlog/spdlog.h>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <string>

namespace nerava::proxy {
namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

constexpr auto kWriteTimeout = std::chrono::seconds(10);
constexpr const char* kMetricsType = "text/plain; version=0.0.4; charset=utf-8";
constexpr const char* kTextType = "text/plain; charset=utf-8";

Response MakeResponse(const Request& request, http::status status, std::string body,
                      const char* content_type) {
  Response response(status, request.version());
  response.set(http::field::server, "nerava-proxy");
  response.set(http::field::content_type, content_type);
  response.keep_alive(request.keep_alive());
  response.body() = std::move(body);
  response.prepare_payload();
  if (request.method() == http::verb::head) response.body().clear();  // length stays
  return response;
}

}  // namespace

absl::Status Readiness(const routing::Topology& topology, bool postgres, bool redis) {
  std::string missing;
  if (postgres && !topology.postgres.Primary()) missing += "postgres";
  if (redis && !topology.redis.Primary()) missing += missing.empty() ? "redis" : " and redis";
  if (missing.empty()) return absl::OkStatus();
  return absl::UnavailableError("no reachable primary for " + missing);
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Open(asio::io_context& io,
                                                             const config::Endpoint& endpoint,
                                                             const Metrics& metrics,
                                                             ReadyFn ready) {
  const std::string where = "admin.http: cannot listen on " + endpoint.ToString();
  error_code ec;
  auto address = asio::ip::make_address(endpoint.host, ec);
  if (ec) return absl::InvalidArgumentError(where + ": not an IP address");
  tcp::acceptor acceptor(io);
  const tcp::endpoint at(address, endpoint.port);
  acceptor.open(at.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(at, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return absl::UnavailableError(where + ": " + ec.message());
  return std::unique_ptr<HttpServer>(
      new HttpServer(std::move(acceptor), metrics, std::move(ready)));
}

void HttpServer::Start() { asio::co_spawn(acceptor_.get_executor(), AcceptLoop(), asio::detached); }

void HttpServer::Close() {
  error_code ignored;
  acceptor_.close(ignored);
}

awaitable<void> HttpServer::AcceptLoop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(kNoThrow);
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
    if (ec) {
      spdlog::warn("admin http: accept failed: {}", ec.message());
      asio::steady_timer pause(acceptor_.get_executor(), std::chrono::milliseconds(50));
      co_await pause.async_wait(kNoThrow);
      continue;
    }
    if (*connections_ >= kMaxConnections) continue;  // the socket closes as it goes
    asio::co_spawn(acceptor_.get_executor(), Serve(std::move(socket)), asio::detached);
  }
}

awaitable<void> HttpServer::Serve(tcp::socket socket) {
  struct Count {
    std::shared_ptr<int> count;
    explicit Count(std::shared_ptr<int> c) : count(std::move(c)) { ++*count; }
    ~Count() { --*count; }
  } count(connections_);
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer(kMaxRequestBytes);
  for (int served = 0; served < kMaxRequestsPerConnection; ++served) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kMaxRequestBytes);
    parser.body_limit(kMaxRequestBytes);
    // The deadline covers the whole request: a slow sender cannot hold the connection.
    stream.expires_after(kReadTimeout);
    auto [read_error, read_bytes] = co_await http::async_read(stream, buffer, parser, kNoThrow);
    if (read_error) break;  // EOF, timeout, or over a limit: nothing useful to answer
    const Request& request = parser.get();
    Response response;
    std::string_view target = request.target();
    target = target.substr(0, target.find('?'));
    if (request.method() != http::verb::get && request.method() != http::verb::head) {
      response = MakeResponse(request, http::status::method_not_allowed,
                              "only GET and HEAD are supported\n", kTextType);
      response.set(http::field::allow, "GET, HEAD");
    } else if (target == "/metrics") {
      response = MakeResponse(request, http::status::ok, metrics_.Serialize(), kMetricsType);
    } else if (target == "/healthz") {
      response = MakeResponse(request, http::status::ok, "ok\n", kTextType);
    } else if (target == "/readyz") {
      absl::Status ready = draining_ ? absl::UnavailableError("draining") : ready_();
      if (ready.ok()) {
        response = MakeResponse(request, http::status::ok, "ready\n", kTextType);
      } else {
        response = MakeResponse(request, http::status::service_unavailable,
                                std::string(ready.message()) + "\n", kTextType);
      }
    } else {
      response = MakeResponse(request, http::status::not_found, "not found\n", kTextType);
    }
    const bool keep_alive = response.keep_alive();
    stream.expires_after(kWriteTimeout);
    auto [write_error, written] = co_await http::async_write(stream, response, kNoThrow);
    if (write_error || !keep_alive) break;
  }
  error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream.socket().close(ignored);
}

}  // namespace nerava::proxy
