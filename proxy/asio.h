// The Asio vocabulary every proxy file uses: awaitables whose errors are values, not exceptions
// (EOF and resets are normal events on a proxy's data path).
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>

namespace nerava::proxy {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = boost::asio::ip::tcp;
using error_code = boost::system::error_code;
template <typename T = void>
using awaitable = boost::asio::awaitable<T>;

// Completion token: `auto [ec, n] = co_await sock.async_read_some(buf, kNoThrow);`
inline constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

}  // namespace nerava::proxy
