// Which server reply answers which request, for one server connection.
//
// A session that routes batches to several servers, and that slips its own requests in front of
// a client's (replaying SET on a freshly opened server, preparing a named statement lazily),
// must know where each client batch's replies end and which replies belong to its own requests,
// so that those are swallowed. The extended protocol makes this exact: every request has a
// reply that completes it (ParseComplete for Parse, CommandComplete for Execute, ...), an error
// makes the server skip to the next Sync, and Query, FunctionCall and Sync end at ReadyForQuery.
//
//   client / proxy requests ─OnRequest─▶ pending_: [P B E S | Q ...] ◀─OnReply─ server replies
//
// Pure bookkeeping: no bytes are read or written here.
#pragma once

#include <cstddef>
#include <deque>

namespace nerava::pg {

enum class Origin { kClient, kProxy };

class ReplyTracker {
 public:
  struct Verdict {
    bool forward = false;        // send this reply to the client
    bool batch_done = false;     // a client's Query/Sync/FunctionCall got its ReadyForQuery
    bool proxy_error = false;    // an error answered a request the proxy made itself
    bool unexpected = false;     // a completion with no matching request (out of sync)
  };

  // Records a request sent to the server. Flush ('H') and COPY data are not requests.
  void OnRequest(char type, Origin origin);
  // Classifies one reply message by its type byte (call once per message, at its first piece).
  Verdict OnReply(char type);

  // Requests still waiting for their completion.
  bool idle() const { return pending_.empty(); }
  size_t pending() const { return pending_.size(); }
  // Client batches (Query, FunctionCall, Sync) not yet answered by ReadyForQuery.
  size_t client_batches() const { return client_batches_; }

 private:
  struct Request {
    char type;
    Origin origin;
  };
  void Pop();

  std::deque<Request> pending_;
  size_t client_batches_ = 0;
  bool skipping_ = false;  // an extended request failed and its Sync has not been sent yet
};

// True for the requests whose replies end with ReadyForQuery.
constexpr bool EndsWithReady(char type) { return type == 'Q' || type == 'S' || type == 'F'; }

}  // namespace nerava::pg
