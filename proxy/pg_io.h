// Small I/O steps shared by the PostgreSQL client and server sides during start-up, where the
// proxy reads whole messages one at a time (the data phase streams instead).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "nerava/protocol/pg/framer.h"
#include "proxy/asio.h"
#include "proxy/byte_buffer.h"
#include "proxy/stream.h"

namespace nerava::proxy {

// Reads until one whole typed message is at the front of `buffer` and returns its header; the
// caller consumes header.total_size() bytes when done with it. Unavailable on EOF or a socket
// error; InvalidArgument / ResourceExhausted from the framing checks.
awaitable<absl::StatusOr<pg::MessageHeader>> ReadPgMessage(Stream& stream, ByteBuffer& buffer,
                                                           uint32_t max_length);

// Body of the message whose header is at the front of `buffer`.
inline std::string_view MessageBody(const ByteBuffer& buffer, const pg::MessageHeader& header) {
  return buffer.data().substr(5, header.body_size());
}

// Writes all of `bytes`; false when the peer is gone.
awaitable<bool> WriteAll(Stream& stream, std::string_view bytes);

}  // namespace nerava::proxy
