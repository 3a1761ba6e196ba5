// Keeps the published FunctionPolicy in step with pg_proc on the current primary (DESIGN §4):
// functions marked volatile go to the primary unless allowlisted, stable and immutable ones may go
// to replicas, and a name pg_proc did not know at the last load goes to the primary.
//
//   topology snapshot ──► primary? ──► libpq (monitor credentials, own thread, deadlines)
//        (polled)            │            pg_database: every database that accepts connections
//                            │            pg_proc of each: (proname, nspname, provolatile)
//                            ▼                         │
//      at start, every kReloadInterval, and at once    ▼
//      when the primary changes            FunctionPolicy::SetCatalog + SetAllowlist
//                                                      │
//                                          FunctionPolicyHolder::Publish ──► sessions
//
// Functions live per database, while sessions ask about names without one: the catalog is the
// union of every database's pg_proc (volatile wins), which errs on the primary's side.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "nerava/config/config.h"
#include "nerava/routing/sql_classifier.h"
#include "nerava/routing/topology.h"
#include "proxy/function_policy_holder.h"
#include "proxy/topology_holder.h"

namespace nerava::proxy {

class FunctionLoader {
 public:
  static constexpr std::chrono::seconds kReloadInterval{10};
  static constexpr std::chrono::seconds kRetryInterval{1};        // after a failed load
  static constexpr std::chrono::milliseconds kPollInterval{100};  // watching the topology
  static constexpr std::chrono::seconds kStepTimeout{5};          // each connect and each query
  static constexpr size_t kMaxDatabases = 256;                    // beyond: unknown, so primary

  // `config.postgres` must be set. The holders must outlive the loader.
  FunctionLoader(const config::Config& config, const TopologyHolder& topology,
                 FunctionPolicyHolder& policies);
  ~FunctionLoader();  // stops and joins the thread (a load in progress is abandoned)

  FunctionLoader(const FunctionLoader&) = delete;
  FunctionLoader& operator=(const FunctionLoader&) = delete;

  void Start();

  // The policy for `catalog` with this loader's allowlist (exposed for tests).
  routing::FunctionPolicy MakePolicy(const std::vector<routing::CatalogFunction>& catalog) const;

 private:
  void Run(std::stop_token stop);
  // Reads the catalog of every database of `primary`; fails only when the monitor database
  // cannot be read.
  absl::StatusOr<std::vector<routing::CatalogFunction>> Load(const routing::NodeState& primary,
                                                             std::stop_token stop,
                                                             size_t& databases) const;

  config::Postgres settings_;
  const TopologyHolder& topology_;
  FunctionPolicyHolder& policies_;
  std::jthread thread_;  // last: stops before the members it uses go away
};

}  // namespace nerava::proxy
