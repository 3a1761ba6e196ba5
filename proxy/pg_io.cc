#include "proxy/pg_io.h"

#include "absl/status/status.h"

namespace nerava::proxy {

awaitable<absl::StatusOr<pg::MessageHeader>> ReadPgMessage(Stream& stream, ByteBuffer& buffer,
                                                           uint32_t max_length) {
  for (;;) {
    auto header = pg::PeekHeader(buffer.data(), max_length);
    if (!header.ok()) co_return header.status();
    size_t wanted = 5;
    if (header->has_value()) {
      if (buffer.size() >= (*header)->total_size()) co_return **header;
      wanted = (*header)->total_size();
    }
    auto space = buffer.Prepare(std::max<size_t>(4096, wanted - buffer.size()));
    auto [ec, n] = co_await stream.ReadSome(space);
    if (ec) co_return absl::UnavailableError("connection closed: " + ec.message());
    buffer.Commit(n);
  }
}

awaitable<bool> WriteAll(Stream& stream, std::string_view bytes) {
  auto [ec, n] = co_await stream.Write(asio::buffer(bytes.data(), bytes.size()));
  co_return !ec;
}

}  // namespace nerava::proxy
