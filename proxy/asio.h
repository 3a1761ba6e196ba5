// The Asio vocabulary every proxy file uses: awaitables whose errors are values, not exceptions
// (EOF and resets are normal events on a proxy's data path).
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>

// The recycling cache size sizes an array in Asio's per-thread state: every file of one binary
// must agree on it. The build sets it for everything that links nerava_proxy_core
// (proxy/CMakeLists.txt); a file that missed it would have Asio's default of 2 and stop here.
static_assert(boost::asio::detail::thread_info_base::default_tag::cache_size == 16,
              "build with BOOST_ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE=16 (link nerava_proxy_core)");

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
