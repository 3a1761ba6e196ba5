// libFuzzer target for the PostgreSQL codec: the startup parser, the framer in both directions
// with small limits (so limit paths are reached), and every body parser on every whole message.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "nerava/protocol/pg/auth.h"
#include "nerava/protocol/pg/framer.h"
#include "nerava/protocol/pg/messages.h"
#include "nerava/protocol/pg/startup.h"

namespace {

using nerava::pg::Direction;
using nerava::pg::Framer;
using nerava::pg::Limits;
using nerava::pg::Piece;

void ParseBody(std::string_view body) {
  // Each parser sees each body: they must reject what is not theirs without crashing.
  (void)nerava::pg::ParseAuthRequest(body);
  (void)nerava::pg::ParseBackendKeyData(body);
  (void)nerava::pg::ParseParameterStatus(body);
  (void)nerava::pg::ParseReadyForQuery(body);
  (void)nerava::pg::ParseErrorFields(body);
  (void)nerava::pg::ParseQuery(body);
  (void)nerava::pg::ParseParse(body);
  (void)nerava::pg::ParseBind(body);
  (void)nerava::pg::ParseCloseOrDescribe(body);
  (void)nerava::pg::ParsePasswordMessage(body);
  (void)nerava::pg::ParseSaslInitialResponse(body);
  (void)nerava::pg::ParseSaslMechanisms(body);
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// Feeds `input` in chunks whose sizes come from `split` and checks the framer's promises.
void Frame(Direction direction, std::string_view input, size_t split) {
  Limits limits;
  limits.max_message = 4096;
  limits.max_streamed_message = 1 << 16;
  Framer framer(direction, limits);
  std::string buffer;
  size_t fed = 0;
  size_t chunk = split % 7 + 1;
  while (true) {
    absl::StatusOr<Piece> piece = framer.Next(buffer);
    if (!piece.ok()) return;
    if (piece->kind == Piece::Kind::kNeedMore) {
      if (fed == input.size()) return;
      const size_t n = std::min(chunk, input.size() - fed);
      buffer.append(input.substr(fed, n));
      fed += n;
      chunk = chunk * 3 % 11 + 1;
      continue;
    }
    Check(piece->size > 0 && piece->size <= buffer.size());
    if (piece->kind == Piece::Kind::kMessage) {
      Check(piece->starts_message && piece->ends_message && piece->size >= 5);
      ParseBody(std::string_view(buffer).substr(5, piece->size - 5));
    }
    buffer.erase(0, piece->size);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  Limits startup_limits;
  absl::StatusOr<std::optional<nerava::pg::ParsedStartup>> startup =
      nerava::pg::ParseStartupPacket(input, startup_limits);
  if (startup.ok() && startup->has_value()) {
    Check((*startup)->consumed <= input.size());
    (void)(*startup)->packet.Get("user");
  }

  const size_t split = size > 0 ? data[0] : 0;
  Frame(Direction::kFrontend, input, split);
  Frame(Direction::kBackend, input, split);
  // The whole input as a single body, and as SCRAM messages for the exchange parsers.
  ParseBody(input);
  (void)nerava::pg::ParseScramSecret(input);
  nerava::pg::ScramServer server(
      nerava::pg::ScramSecret{1, "salt", std::string(32, 'k'), std::string(32, 'v')},
      "servernonce");
  const size_t cut = input.find('\n');
  const std::string_view first = input.substr(0, cut);
  if (server.HandleClientFirst(first).ok() && cut != std::string_view::npos) {
    (void)server.HandleClientFinal(input.substr(cut + 1));
  }
  // A server may legitimately ask for millions of PBKDF2 iterations; keep fuzz runs fast.
  const size_t iter_at = first.find(",i=");
  if (iter_at != std::string_view::npos && first.size() - iter_at > 7) return 0;
  nerava::pg::ScramClient client("pw", "clientnonce");
  if (client.HandleServerFirst(first).ok() && cut != std::string_view::npos) {
    (void)client.HandleServerFinal(input.substr(cut + 1));
  }
  return 0;
}
