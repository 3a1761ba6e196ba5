// A read of a plain TCP socket that remembers when it drained the socket, as edge-triggered event
// loops do (nginx, twemproxy): a read that returns less than it asked for took everything the
// kernel had, so the next read waits for the reactor's next edge instead of trying a `recv`
// first. Asio's own read tries that `recv` before every wait, and on a proxy's request/reply
// traffic it returns EAGAIN nearly every time: one wasted system call per message, a fifth of
// the proxy's system calls.
//
// Asio already has the mechanism (its epoll reactor is edge-triggered and stops speculating on a
// descriptor after an operation reports `done_and_exhausted`, which it uses for EOF); only its
// socket reads never report a short read that way. This is that read, as a reactor operation of
// our own. It relies on Asio's reactor internals (asio::detail), so it is compiled only for the
// epoll reactor of the Boost version it was written against; anything else uses
// `async_read_some`.
//
// Alone it is not safe: a close or reset queued behind the last bytes raises no edge after the
// short read. Stream pairs it with proxy/peer_close_watch.h, which sees that close; use it only
// through Stream::ReadSome.
#pragma once

#include <boost/version.hpp>

#include "proxy/asio.h"

#if BOOST_VERSION == 108100 && defined(BOOST_ASIO_HAS_EPOLL) && \
    !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
#define NERAVA_DRAINED_READ 1
#include <boost/asio/detail/bind_handler.hpp>
#include <boost/asio/detail/epoll_reactor.hpp>
#include <boost/asio/detail/fenced_block.hpp>
#include <boost/asio/detail/handler_work.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/asio/detail/socket_ops.hpp>
#endif

namespace boost::asio::detail {
class epoll_reactor;  // defined only where Asio uses epoll; null elsewhere (DrainedReadReactor)
}  // namespace boost::asio::detail

namespace nerava::proxy {

#ifdef NERAVA_DRAINED_READ
namespace drained_read_detail {

namespace detail = asio::detail;

template <typename Handler, typename IoExecutor>
class RecvOp : public detail::reactor_op {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(RecvOp);

  RecvOp(int socket, asio::mutable_buffer buffer, Handler& handler, const IoExecutor& io_ex)
      : reactor_op(error_code(), &RecvOp::Perform, &RecvOp::Complete),
        socket_(socket),
        buffer_(buffer),
        handler_(std::move(handler)),
        work_(handler_, io_ex) {}

 private:
  static status Perform(reactor_op* base) {
    auto* op = static_cast<RecvOp*>(base);
    if (!detail::socket_ops::non_blocking_recv1(op->socket_, op->buffer_.data(),
                                                op->buffer_.size(), 0, true, op->ec_,
                                                op->bytes_transferred_)) {
      return not_done;  // EAGAIN: wait for the next edge
    }
    if (op->ec_ == asio::error::eof) return done_and_exhausted;
    if (op->ec_) return done;
    // Short read: the socket is drained, and data arriving from now on raises a new edge.
    return op->bytes_transferred_ < op->buffer_.size() ? done_and_exhausted : done;
  }

  // Called by the scheduler to deliver the result (owner set) or to destroy the operation
  // (owner null, at shutdown).
  static void Complete(void* owner, detail::operation* base, const error_code&, std::size_t) {
    auto* op = static_cast<RecvOp*>(base);
    ptr p = {std::addressof(op->handler_), op, op};
    detail::handler_work<Handler, IoExecutor> work(std::move(op->work_));
    // The handler moves out before the operation's memory is released: it may own that memory.
    detail::binder2<Handler, error_code, std::size_t> call(op->handler_, op->ec_,
                                                            op->bytes_transferred_);
    p.h = std::addressof(call.handler_);
    p.reset();
    if (owner) {
      detail::fenced_block fence(detail::fenced_block::half);
      work.complete(call, call.handler_);
    }
  }

  int socket_;
  asio::mutable_buffer buffer_;
  Handler handler_;
  detail::handler_work<Handler, IoExecutor> work_;
};

// Per-operation cancellation (`||` of awaitables cancels the loser through its slot).
class Cancellation {
 public:
  Cancellation(detail::epoll_reactor* reactor, detail::epoll_reactor::per_descriptor_data* data,
               int socket)
      : reactor_(reactor), data_(data), socket_(socket) {}
  void operator()(asio::cancellation_type_t type) {
    constexpr auto kAny = asio::cancellation_type::terminal | asio::cancellation_type::partial |
                          asio::cancellation_type::total;
    if (!!(type & kAny)) {
      reactor_->cancel_ops_by_key(socket_, *data_, detail::epoll_reactor::read_op, this);
    }
  }

 private:
  detail::epoll_reactor* reactor_;
  detail::epoll_reactor::per_descriptor_data* data_;
  int socket_;
};

// The socket's implementation is a protected member of basic_socket; a derived class may name it.
struct SocketAccess : tcp::socket {
  static auto& Impl(tcp::socket& socket) { return socket.*(&SocketAccess::impl_); }
};

struct Initiate {
  template <typename Handler>
  void operator()(Handler&& handler_in, tcp::socket* socket, detail::epoll_reactor* reactor_ptr,
                  asio::mutable_buffer buffer) const {
    using HandlerType = std::decay_t<Handler>;
    HandlerType handler(std::forward<Handler>(handler_in));
    auto& impl = SocketAccess::Impl(*socket).get_implementation();
    detail::epoll_reactor& reactor = *reactor_ptr;
    const bool is_continuation = boost_asio_handler_cont_helpers::is_continuation(handler);
    auto slot = asio::get_associated_cancellation_slot(handler);

    using Op = RecvOp<HandlerType, tcp::socket::executor_type>;
    typename Op::ptr p = {std::addressof(handler), Op::ptr::allocate(handler), nullptr};
    p.p = new (p.v) Op(impl.socket_, buffer, handler, socket->get_executor());
    if (slot.is_connected()) {
      p.p->cancellation_key_ =
          &slot.template emplace<Cancellation>(&reactor, &impl.reactor_data_, impl.socket_);
    }
    reactor.start_op(detail::epoll_reactor::read_op, impl.socket_, impl.reactor_data_, p.p,
                     is_continuation, /*allow_speculative=*/true);
    p.v = p.p = nullptr;
  }
};

}  // namespace drained_read_detail
#endif

// The reactor a socket's drained reads register with. Look it up once per socket, not per read:
// use_service locks the context's service registry and compares type names on every call.
inline asio::detail::epoll_reactor* DrainedReadReactor([[maybe_unused]] tcp::socket& socket) {
#ifdef NERAVA_DRAINED_READ
  return &asio::use_service<asio::detail::epoll_reactor>(
      asio::query(socket.get_executor(), asio::execution::context));
#else
  return nullptr;
#endif
}

// Reads some bytes like `socket.async_read_some`. The socket must be in non-blocking mode
// (Stream puts it there) and `reactor` its DrainedReadReactor; otherwise, and for an empty
// buffer, this is `async_read_some`.
template <typename Token>
auto AsyncReadDrained(tcp::socket& socket, [[maybe_unused]] asio::detail::epoll_reactor* reactor,
                      asio::mutable_buffer buffer, Token&& token) {
#ifdef NERAVA_DRAINED_READ
  if (reactor != nullptr && socket.non_blocking() && buffer.size() > 0) {
    return asio::async_initiate<Token, void(error_code, std::size_t)>(
        drained_read_detail::Initiate{}, token, &socket, reactor, buffer);
  }
#endif
  return socket.async_read_some(buffer, std::forward<Token>(token));
}

}  // namespace nerava::proxy
