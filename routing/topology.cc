#include "nerava/routing/topology.h"

namespace nerava::routing {

const char* ProtocolName(Protocol protocol) {
  return protocol == Protocol::kPostgres ? "postgres" : "redis";
}

const char* RoleName(Role role) {
  switch (role) {
    case Role::kPrimary:
      return "primary";
    case Role::kReplica:
      return "replica";
    case Role::kUnknown:
      break;
  }
  return "unknown";
}

}  // namespace nerava::routing
