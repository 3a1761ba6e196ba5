// PostgreSQL statement classification (DESIGN §4): what a query string does, as far as routing
// cares, decided by the real PostgreSQL 15 grammar (libpg_query). Pure and stateless; the cost is
// the parse (a few µs), so sessions go through a ClassificationCache.
//
//   query text ──► hints (comment scan) ──► pg_query_parse ──► JSON tree ──► per statement:
//                                                                   kind, pins, session effects,
//                                                                   function names ──► accumulate
//
// The classifier does not decide volatility: it lists every function called and the router checks
// the names against a FunctionPolicy (pg_proc volatility loaded by the monitor + config allowlist).
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"

namespace nerava::routing {

// Ordered by precedence: a multi-statement string takes the highest kind of its parts
// (DESIGN §4: "primary if any part writes").
enum class StatementKind : uint8_t {
  kRead,               // SELECT / VALUES / TABLE / SHOW / EXPLAIN / COPY TO without side effects
  kSessionSet,         // SET / RESET / DISCARD: apply on every backend of the session (see
                       // session_effects); a string mixing them with reads is this too
  kProxyDirective,     // SET/RESET nerava.route: answered by the proxy, not forwarded
  kTransactionEnd,     // COMMIT / ROLLBACK / END / ABORT / PREPARE TRANSACTION
  kTransactionScoped,  // SAVEPOINT / RELEASE / ROLLBACK TO / SET LOCAL / SET TRANSACTION /
                       // SET CONSTRAINTS: meaningful only inside a transaction block
  kTransactionBegin,   // BEGIN / START TRANSACTION (see read_only_transaction)
  kWrite,              // DML, DDL, COPY FROM, NOTIFY, CALL, DO, VACUUM, anything not known to read
  kPin,                // pins the session to the primary (see pins)
  kUnparsable,         // the parser refused it: primary
};
const char* StatementKindName(StatementKind kind);

// Why a session is pinned to the primary (bit set); the same bits say which pins a statement
// releases (DISCARD ALL releases all).
enum PinReason : uint32_t {
  kPinNone = 0,
  kPinTempObject = 1u << 0,     // CREATE TEMP TABLE/VIEW/SEQUENCE, SELECT INTO TEMP, pg_temp.x
  kPinListen = 1u << 1,         // LISTEN
  kPinPrepare = 1u << 2,        // SQL-level PREPARE
  kPinHoldCursor = 1u << 3,     // DECLARE ... WITH HOLD
  kPinAdvisoryLock = 1u << 4,   // pg_advisory_lock*, pg_try_advisory_lock* (session level)
  kPinSessionConfig = 1u << 5,  // set_config(name, value, false): a SET we cannot replay
  kPinAll = (1u << 6) - 1,
};

enum class RouteHint : uint8_t { kNone, kPrimary, kReplica };
enum class RouteOverride : uint8_t { kAuto, kPrimary };  // SET nerava.route

// A change to per-session server state that every backend of the session must see.
struct SessionEffect {
  enum class Op : uint8_t {
    kSet,         // SET name ...            (replay `text` on backends opened later)
    kReset,       // RESET name              (drop earlier kSet of `name`, replay `text`)
    kResetAll,    // RESET ALL               (drop every kSet, replay `text`)
    kDiscardAll,  // DISCARD ALL             (drop every kSet and every pin, replay `text`)
    kDiscard,     // DISCARD PLANS|SEQUENCES|TEMP: apply to open backends, nothing to remember
  };
  Op op = Op::kSet;
  std::string name;  // lower-case parameter name for kSet/kReset ("role", "search_path", ...)
  std::string text;  // the statement as the client wrote it, trimmed, without ';'

  bool operator==(const SessionEffect&) const = default;
};

struct StatementClass {
  StatementKind kind = StatementKind::kRead;
  bool read_only_transaction = false;  // kTransactionBegin: READ ONLY
  uint32_t pins = kPinNone;            // PinReason bits this string establishes
  uint32_t unpins = kPinNone;          // PinReason bits it releases (DISCARD ALL, UNLISTEN *, ...)
  std::vector<SessionEffect> session_effects;
  // Every function called (FuncCall in the tree), lower-case as PostgreSQL folds them,
  // "schema.name" when qualified; duplicates removed, in order of appearance.
  std::vector<std::string> functions;
  RouteHint hint = RouteHint::kNone;
  std::optional<uint32_t> max_lag_ms;            // /* nerava:max_lag_ms=N */
  std::optional<RouteOverride> route_directive;  // SET nerava.route = 'primary'|'auto'
  int statement_count = 0;
  std::string error;  // kUnparsable: the parser's message

  bool Writes() const {
    return kind == StatementKind::kWrite || kind == StatementKind::kPin ||
           kind == StatementKind::kUnparsable;
  }
};

// Classifies a simple-protocol query string or an extended-protocol Parse text (same rules).
// Never fails: what cannot be understood is kUnparsable (routed to the primary).
StatementClass Classify(std::string_view sql);

// Only the comment hints of `sql` (cheap; used by Classify, exposed for tests).
void ScanHints(std::string_view sql, StatementClass& out);

// One row of pg_proc as the function loader reads it (`SELECT p.proname, n.nspname,
// p.provolatile FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace`).
struct CatalogFunction {
  std::string name;     // proname
  std::string schema;   // nspname
  char volatility = 'v';  // provolatile: 'v' volatile, 's' stable, 'i' immutable
};

// Which functions must run on the primary (DESIGN §4). Cheap to copy around as a snapshot:
// the function loader builds one from pg_proc and publishes it; sessions read it without locks.
// Names are compared case-insensitively (a quoted "MyFunc" and an unquoted myfunc are one entry;
// where they differ in volatility, volatile wins).
class FunctionPolicy {
 public:
  // Before pg_proc has been loaded: the built-in fallback (every function that PostgreSQL 15
  // marks volatile in pg_catalog) plus the built-in write list; other names may go to replicas.
  FunctionPolicy();

  // Replaces the fallback by the volatile functions read from pg_proc, as (proname, nspname)
  // pairs. Names not in the list may go to replicas (use SetCatalog to know every function).
  void SetVolatile(const std::vector<std::pair<std::string, std::string>>& proname_nspname);
  // Replaces the fallback by the whole catalog (every function with its volatility): volatile
  // functions require the primary, stable and immutable ones do not, and a name the catalog does
  // not know at all (created after the load, or in a database that was not read) requires the
  // primary, the safe side.
  void SetCatalog(const std::vector<CatalogFunction>& functions);
  // Functions the operator declared safe on replicas ("name" or "schema.name"); the built-in
  // write list still wins, since those fail on a standby whatever the configuration says.
  void SetAllowlist(const std::vector<std::string>& names);

  bool loaded() const { return loaded_; }           // SetVolatile or SetCatalog was called
  bool complete() const { return complete_; }       // SetCatalog: unknown names need the primary
  size_t known_functions() const { return by_qualified_.size(); }

  // True when `name` (as in StatementClass::functions) must run on the primary. An unqualified
  // name matches a function of that name in any schema (search_path is not known): volatile if
  // any of them is.
  bool RequiresPrimary(std::string_view name) const;
  // First function of `functions` that requires the primary, or nullptr.
  const std::string* FirstRequiringPrimary(const std::vector<std::string>& functions) const;

  // Built-in lists (exposed for tests and the admin interface).
  static const std::vector<std::string_view>& BuiltinWriteList();
  static const std::vector<std::string_view>& BuiltinVolatileFallback();

 private:
  void Add(std::string_view schema, std::string_view name, bool is_volatile);

  bool loaded_ = false;
  bool complete_ = false;
  // Lower-case name -> volatile (true when any function of that name is).
  absl::flat_hash_map<std::string, bool> by_name_;       // bare names
  absl::flat_hash_map<std::string, bool> by_qualified_;  // "schema.name"
  absl::flat_hash_set<std::string> allowlist_;           // as configured, lower-case
};

// Bounded LRU cache of classifications keyed by the exact statement text (DESIGN §4: libpg_query
// is the slow path). One per worker thread: NOT thread-safe, by design (no locks on the data path;
// each io_context owns its cache). Entries are shared_ptr so a session's named prepared statement
// can keep its class after eviction.
class ClassificationCache {
 public:
  // Statements longer than `max_statement_bytes` are classified but not cached, so a few huge
  // generated queries cannot evict the hot set; total cached text is bounded by `max_bytes`.
  explicit ClassificationCache(size_t max_entries = 4096, size_t max_bytes = 8u << 20,
                               size_t max_statement_bytes = 16u << 10);

  std::shared_ptr<const StatementClass> Classify(std::string_view sql);

  size_t size() const { return map_.size(); }
  size_t bytes() const { return bytes_; }
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }
  void Clear();

 private:
  std::shared_ptr<const StatementClass> Find(std::string_view key);
  void Insert(std::string_view key, std::shared_ptr<const StatementClass> value);
  struct Entry {
    std::string text;
    std::shared_ptr<const StatementClass> value;
  };
  using List = std::list<Entry>;

  size_t max_entries_;
  size_t max_bytes_;
  size_t max_statement_bytes_;
  size_t bytes_ = 0;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
  List lru_;  // front = most recently used
  // Keys view the text owned by the list node (std::list nodes never move).
  absl::flat_hash_map<absl::string_view, List::iterator> map_;
};

}  // namespace nerava::routing
