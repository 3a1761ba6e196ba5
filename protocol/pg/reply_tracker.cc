#include "nerava/protocol/pg/reply_tracker.h"

namespace nerava::pg {

void ReplyTracker::OnRequest(char type, Origin origin) {
  if (skipping_) {
    // After an error the server ignores everything up to Sync: those requests get no reply.
    if (type != 'S') return;
    skipping_ = false;
  }
  switch (type) {
    case 'Q':  // Query
    case 'S':  // Sync
    case 'F':  // FunctionCall
      if (origin == Origin::kClient) ++client_batches_;
      [[fallthrough]];
    case 'P':  // Parse
    case 'B':  // Bind
    case 'D':  // Describe
    case 'E':  // Execute
    case 'C':  // Close
      pending_.push_back({type, origin});
      break;
    default:
      break;  // Flush, CopyData/Done/Fail, Terminate: no reply of their own
  }
}

void ReplyTracker::Pop() {
  if (EndsWithReady(pending_.front().type) && pending_.front().origin == Origin::kClient) {
    --client_batches_;
  }
  pending_.pop_front();
}

ReplyTracker::Verdict ReplyTracker::OnReply(char type) {
  Verdict verdict;
  if (pending_.empty()) {
    // Asynchronous messages (NotificationResponse, NoticeResponse, ParameterStatus, a FATAL
    // error before the server closes) arrive without a request.
    verdict.forward = true;
    verdict.unexpected = !(type == 'A' || type == 'N' || type == 'S' || type == 'E');
    return verdict;
  }
  const Request front = pending_.front();
  const bool from_client = front.origin == Origin::kClient;
  // Notifications are for the session whoever asked; everything else follows the request.
  verdict.forward = from_client || type == 'A';

  auto complete_if = [&](bool matches) {
    if (matches) {
      Pop();
    } else {
      verdict.unexpected = true;
    }
  };

  switch (type) {
    case 'Z':  // ReadyForQuery
      // Ends a Query, FunctionCall or Sync. After an error, the skipped requests were popped.
      if (EndsWithReady(front.type)) {
        verdict.batch_done = from_client;
        Pop();
      } else {
        verdict.unexpected = true;
      }
      break;
    case 'E':  // ErrorResponse
      verdict.proxy_error = !from_client;
      if (front.type == 'Q' || front.type == 'F') break;  // ReadyForQuery still follows
      if (front.type == 'S') break;                       // an error reported at Sync
      // The server discards every extended request up to the next Sync. When one of them was
      // the client's, the client must see the error that cost it its request.
      while (!pending_.empty() && !EndsWithReady(pending_.front().type)) {
        verdict.forward = verdict.forward || pending_.front().origin == Origin::kClient;
        pending_.pop_front();
      }
      skipping_ = pending_.empty();  // the Sync is still to come
      break;
    case '1':  // ParseComplete
      complete_if(front.type == 'P');
      break;
    case '2':  // BindComplete
      complete_if(front.type == 'B');
      break;
    case '3':  // CloseComplete
      complete_if(front.type == 'C');
      break;
    case 'T':  // RowDescription
    case 'n':  // NoData
      if (front.type == 'D') Pop();  // completes a Describe; inside a Query it is just a reply
      break;
    case 'C':  // CommandComplete
    case 'I':  // EmptyQueryResponse
    case 's':  // PortalSuspended
      if (front.type == 'E') Pop();  // completes an Execute; a Query goes on to ReadyForQuery
      break;
    default:
      // DataRow, ParameterDescription, CopyIn/Out/Both, CopyData, CopyDone, FunctionCallResponse,
      // NoticeResponse, ParameterStatus, NotificationResponse: part of the current reply.
      break;
  }
  return verdict;
}

}  // namespace nerava::pg
