// Statement classification over libpg_query's JSON parse tree (see pg_json.h for why JSON).
//
// Each statement of the string is classified on its own, then the string takes the strongest kind
// (StatementKind order) while pins, releases, session effects and function names accumulate.
// Whatever is not recognised as reading is a write: the cost of a wrong "write" is a primary
// round trip; the cost of a wrong "read" is an error or a stale answer.
#include "nerava/routing/sql_classifier.h"

#include <pg_query.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "routing/pg_json.h"

namespace nerava::routing {
namespace {

using internal::JsonTree;
constexpr uint32_t kNone = JsonTree::kNone;

// libpg_query's JSON for a 1 MiB statement is ~10 MiB and takes tens of milliseconds; such
// statements (bulk loads, mostly) go to the primary unparsed.
constexpr size_t kMaxParseBytes = 1u << 20;
// Deeper nesting than any real query; bounds the tree walk.
constexpr size_t kMaxJsonDepth = 4096;
// parsenodes.h: CURSOR_OPT_HOLD (PostgreSQL 15).
constexpr int64_t kCursorOptHold = 0x0020;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (std::isspace(static_cast<unsigned char>(s.front())) != 0)) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (std::isspace(static_cast<unsigned char>(s.back())) != 0 || s.back() == ';')) {
    s.remove_suffix(1);
  }
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsIdentChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' ||
         static_cast<unsigned char>(c) >= 0x80 || c == '$';
}

// ---------------------------------------------------------------------------------------------
// Hints: /* nerava:primary */, /* nerava:replica */, /* nerava:max_lag_ms=200 */ (also in --
// comments). Only real comments count: the same text inside a string literal is data.

void ParseHintBody(std::string_view body, StatementClass& out) {
  constexpr std::string_view kPrefix = "nerava:";
  size_t at = 0;
  while ((at = body.find(kPrefix, at)) != std::string_view::npos) {
    at += kPrefix.size();
    size_t end = at;
    while (end < body.size() && (std::isalnum(static_cast<unsigned char>(body[end])) != 0 ||
                                 body[end] == '_' || body[end] == '=')) {
      ++end;
    }
    std::string word = Lower(body.substr(at, end - at));
    at = end;
    if (word == "primary") {
      out.hint = RouteHint::kPrimary;  // the safe direction wins over a conflicting replica hint
    } else if (word == "replica") {
      if (out.hint == RouteHint::kNone) out.hint = RouteHint::kReplica;
    } else if (word.rfind("max_lag_ms=", 0) == 0) {
      std::string_view digits = std::string_view(word).substr(11);
      if (digits.empty() || digits.size() > 9) continue;
      uint32_t value = 0;
      bool ok = true;
      for (char c : digits) {
        if (c < '0' || c > '9') {
          ok = false;
          break;
        }
        value = value * 10 + static_cast<uint32_t>(c - '0');
      }
      if (ok) out.max_lag_ms = out.max_lag_ms ? std::min(*out.max_lag_ms, value) : value;
    }
  }
}

}  // namespace

void ScanHints(std::string_view sql, StatementClass& out) {
  if (sql.find("nerava:") == std::string_view::npos) return;  // the common case: no lexing
  size_t i = 0;
  const size_t n = sql.size();
  while (i < n) {
    char c = sql[i];
    if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
      size_t end = sql.find('\n', i + 2);
      if (end == std::string_view::npos) end = n;
      ParseHintBody(sql.substr(i + 2, end - i - 2), out);
      i = end;
    } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
      // PostgreSQL block comments nest.
      size_t start = i + 2;
      int depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql[i] == '/' && i + 1 < n && sql[i + 1] == '*') {
          ++depth;
          i += 2;
        } else if (sql[i] == '*' && i + 1 < n && sql[i + 1] == '/') {
          --depth;
          i += 2;
        } else {
          ++i;
        }
      }
      size_t end = depth == 0 ? i - 2 : n;
      ParseHintBody(sql.substr(start, end - start), out);
    } else if (c == '\'') {
      // E'...' strings allow backslash escapes; standard strings only double the quote.
      bool backslashes =
          i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e') && (i < 2 || !IsIdentChar(sql[i - 2]));
      ++i;
      while (i < n) {
        if (backslashes && sql[i] == '\\') {
          i += 2;
        } else if (sql[i] == '\'') {
          if (i + 1 < n && sql[i + 1] == '\'') {
            i += 2;
          } else {
            ++i;
            break;
          }
        } else {
          ++i;
        }
      }
    } else if (c == '"') {
      ++i;
      while (i < n) {
        if (sql[i] == '"') {
          if (i + 1 < n && sql[i + 1] == '"') {
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        ++i;
      }
    } else if (c == '$' && (i == 0 || !IsIdentChar(sql[i - 1]))) {
      // $tag$ ... $tag$ (a $1 parameter has a digit first and is not a tag).
      size_t j = i + 1;
      while (j < n && sql[j] != '$' &&
             (std::isalpha(static_cast<unsigned char>(sql[j])) != 0 || sql[j] == '_' ||
              (j > i + 1 && std::isdigit(static_cast<unsigned char>(sql[j])) != 0) ||
              static_cast<unsigned char>(sql[j]) >= 0x80)) {
        ++j;
      }
      if (j < n && sql[j] == '$') {
        std::string_view tag = sql.substr(i, j - i + 1);
        size_t close = sql.find(tag, j + 1);
        i = close == std::string_view::npos ? n : close + tag.size();
      } else {
        i = j;
      }
    } else {
      ++i;
    }
  }
}

namespace {

// ---------------------------------------------------------------------------------------------
// Tree walk.

struct ScanResult {
  bool modifies = false;  // INSERT/UPDATE/DELETE/MERGE anywhere (data-modifying CTE, COPY (...))
  bool locking = false;   // FOR UPDATE / FOR SHARE / ... anywhere
  bool into = false;      // SELECT INTO
  bool writes_by_function = false;  // advisory lock functions
  uint32_t pins = kPinNone;
  uint32_t unpins = kPinNone;
};

class Walker {
 public:
  Walker(const JsonTree& tree, std::string_view sql, StatementClass& out)
      : tree_(tree), sql_(sql), out_(out) {}

  // Classifies one statement: `node` is the Node wrapper object {"SelectStmt": {...}}.
  StatementKind Statement(uint32_t node, std::string_view text);

 private:
  // The single member of a Node wrapper (its key is the node type), or kNone.
  uint32_t Inner(uint32_t wrapper) const {
    if (wrapper == kNone || tree_.at(wrapper).type != JsonTree::Type::kObject) return kNone;
    return tree_.at(wrapper).first_child;
  }
  uint32_t First(uint32_t container) const {
    return container == kNone ? kNone : tree_.at(container).first_child;
  }
  std::string_view TypeOf(uint32_t inner) const {
    return inner == kNone ? std::string_view() : tree_.at(inner).key;
  }
  std::string_view Str(uint32_t obj, std::string_view key) const {
    uint32_t i = tree_.Get(obj, key);
    return i == kNone ? std::string_view() : tree_.at(i).text;
  }

  StatementKind ByType(std::string_view type, uint32_t body, std::string_view text);
  // Collects function names and side effects anywhere below `node`.
  ScanResult Scan(uint32_t node);
  void OnFuncCall(uint32_t body, ScanResult& result);
  bool IsTemp(uint32_t range_var) const {
    return Str(range_var, "relpersistence") == "t" || Str(range_var, "schemaname") == "pg_temp";
  }
  StatementKind FromScan(const ScanResult& scan) {
    out_.pins |= scan.pins;
    out_.unpins |= scan.unpins;
    if (scan.pins != kPinNone) return StatementKind::kPin;
    if (scan.modifies || scan.locking || scan.into || scan.writes_by_function) {
      return StatementKind::kWrite;
    }
    return StatementKind::kRead;
  }
  StatementKind Pin(uint32_t reason) {
    out_.pins |= reason;
    return StatementKind::kPin;
  }
  StatementKind TransactionStmt(uint32_t body);
  StatementKind VariableSetStmt(uint32_t body, std::string_view text);
  StatementKind ExplainStmt(uint32_t body, std::string_view text);
  void AddEffect(SessionEffect::Op op, std::string name, std::string_view text) {
    out_.session_effects.push_back({op, std::move(name), std::string(text)});
  }

  const JsonTree& tree_;
  std::string_view sql_;
  StatementClass& out_;

 public:
  int directives = 0;
};

ScanResult Walker::Scan(uint32_t node) {
  ScanResult result;
  if (node == kNone) return result;
  std::vector<uint32_t> stack;
  stack.push_back(node);
  while (!stack.empty()) {
    uint32_t i = stack.back();
    stack.pop_back();
    const JsonTree::Node& n = tree_.at(i);
    std::string_view key = n.key;
    if (!key.empty()) {
      if (key == "FuncCall") {
        OnFuncCall(i, result);
      } else if (key == "InsertStmt" || key == "UpdateStmt" || key == "DeleteStmt" ||
                 key == "MergeStmt") {
        result.modifies = true;
      } else if (key == "lockingClause") {
        if (n.first_child != kNone) result.locking = true;
      } else if (key == "intoClause") {
        result.into = true;
        if (IsTemp(tree_.Get(i, "rel"))) result.pins |= kPinTempObject;
      }
    }
    // Children in reverse so that they pop in source order (function names keep their order).
    size_t mark = stack.size();
    for (uint32_t c = n.first_child; c != kNone; c = tree_.at(c).next) {
      if (tree_.at(c).first_child != kNone) stack.push_back(c);  // scalars hold nothing of ours
    }
    std::reverse(stack.begin() + static_cast<ptrdiff_t>(mark), stack.end());
  }
  return result;
}

void Walker::OnFuncCall(uint32_t body, ScanResult& result) {
  std::string name;
  for (uint32_t part = First(tree_.Get(body, "funcname")); part != kNone;
       part = tree_.at(part).next) {
    if (!name.empty()) name.push_back('.');
    name += tree_.String(tree_.Get(tree_.Get(part, "String"), "sval"));
  }
  if (name.empty()) return;
  if (std::find(out_.functions.begin(), out_.functions.end(), name) == out_.functions.end()) {
    out_.functions.push_back(name);
  }
  // Built-in functions matter whether called bare or as pg_catalog.x.
  std::string_view bare = name;
  if (bare.rfind("pg_catalog.", 0) == 0) bare.remove_prefix(11);
  if (bare.rfind("pg_", 0) == 0 && bare.find("advisory") != std::string_view::npos) {
    result.writes_by_function = true;  // every advisory lock function needs the primary
    if (bare == "pg_advisory_lock" || bare == "pg_advisory_lock_shared" ||
        bare == "pg_try_advisory_lock" || bare == "pg_try_advisory_lock_shared") {
      result.pins |= kPinAdvisoryLock;  // held until unlocked or the session ends
    } else if (bare == "pg_advisory_unlock_all") {
      result.unpins |= kPinAdvisoryLock;
    }
  } else if (bare == "set_config") {
    // set_config(name, value, is_local): unless is_local is literally true, it changes the
    // session like SET does, but inside a query we cannot replay: pin.
    uint32_t args = tree_.Get(body, "args");
    uint32_t third = kNone;
    int index = 0;
    for (uint32_t a = First(args); a != kNone; a = tree_.at(a).next, ++index) {
      if (index == 2) third = a;
    }
    uint32_t boolval = tree_.Get(tree_.Get(tree_.Get(third, "A_Const"), "boolval"), "boolval");
    if (!tree_.Bool(boolval)) result.pins |= kPinSessionConfig;
  }
}

StatementKind Walker::TransactionStmt(uint32_t body) {
  std::string_view kind = Str(body, "kind");
  if (kind == "TRANS_STMT_BEGIN" || kind == "TRANS_STMT_START") {
    bool read_only = false;
    for (uint32_t opt = First(tree_.Get(body, "options")); opt != kNone; opt = tree_.at(opt).next) {
      uint32_t def = tree_.Get(opt, "DefElem");
      if (Str(def, "defname") != "transaction_read_only") continue;
      // A_Const {"ival": {"ival": 1}}; READ WRITE is {"ival": {}} (zero is omitted).
      uint32_t ival =
          tree_.Get(tree_.Get(tree_.Get(tree_.Get(def, "arg"), "A_Const"), "ival"), "ival");
      read_only = tree_.Int(ival) != 0;
    }
    out_.read_only_transaction = read_only;
    return StatementKind::kTransactionBegin;
  }
  if (kind == "TRANS_STMT_COMMIT" || kind == "TRANS_STMT_ROLLBACK" ||
      kind == "TRANS_STMT_PREPARE") {
    return StatementKind::kTransactionEnd;
  }
  if (kind == "TRANS_STMT_SAVEPOINT" || kind == "TRANS_STMT_RELEASE" ||
      kind == "TRANS_STMT_ROLLBACK_TO") {
    return StatementKind::kTransactionScoped;
  }
  return StatementKind::kWrite;  // COMMIT PREPARED / ROLLBACK PREPARED run outside a block
}

StatementKind Walker::VariableSetStmt(uint32_t body, std::string_view text) {
  std::string_view kind = Str(body, "kind");
  std::string name = Lower(tree_.String(tree_.Get(body, "name")));
  if (name == "nerava.route") {
    ++directives;
    RouteOverride value = RouteOverride::kAuto;
    if (kind == "VAR_SET_VALUE") {
      uint32_t first = First(tree_.Get(body, "args"));
      uint32_t sval = tree_.Get(tree_.Get(tree_.Get(first, "A_Const"), "sval"), "sval");
      if (Lower(tree_.String(sval)) == "primary") value = RouteOverride::kPrimary;
    }
    out_.route_directive = value;
    return StatementKind::kRead;  // neutral; the whole string is kProxyDirective if only these
  }
  if (tree_.Bool(tree_.Get(body, "is_local")) || name == "transaction" ||
      name == "transaction snapshot") {
    return StatementKind::kTransactionScoped;
  }
  if (kind == "VAR_RESET_ALL") {
    AddEffect(SessionEffect::Op::kResetAll, "", text);
  } else if (kind == "VAR_RESET") {
    AddEffect(SessionEffect::Op::kReset, name, text);
  } else {
    AddEffect(SessionEffect::Op::kSet, name, text);  // VALUE / DEFAULT / CURRENT / MULTI
  }
  return StatementKind::kSessionSet;
}

StatementKind Walker::ExplainStmt(uint32_t body, std::string_view text) {
  bool analyze = false;
  uint32_t options = tree_.Get(body, "options");
  for (uint32_t opt = First(options); opt != kNone; opt = tree_.at(opt).next) {
    uint32_t def = tree_.Get(opt, "DefElem");
    if (Lower(Str(def, "defname")) != "analyze") continue;
    uint32_t arg = tree_.Get(def, "arg");
    if (arg == kNone) {
      analyze = true;
      continue;
    }
    // defGetBoolean: false/off/0 (as words or integers) turn it off; anything else is on.
    // The argument is a raw value node: {"String": {"sval": "off"}} or {"Integer": {}} (a zero
    // ival is omitted).
    std::string word = Lower(tree_.String(tree_.Get(tree_.Get(arg, "String"), "sval")));
    uint32_t integer = tree_.Get(arg, "Integer");
    if (integer != kNone) word = std::to_string(tree_.Int(tree_.Get(integer, "ival")));
    analyze = !(word == "false" || word == "off" || word == "0" || word == "no");
  }
  if (!analyze) return StatementKind::kRead;  // only plans: nothing inside runs
  uint32_t query = Inner(tree_.Get(body, "query"));
  StatementKind inner = ByType(TypeOf(query), query, text);
  return inner >= StatementKind::kWrite ? inner : StatementKind::kRead;
}

StatementKind Walker::ByType(std::string_view type, uint32_t body, std::string_view text) {
  if (type == "ExplainStmt") return ExplainStmt(body, text);  // scans only what runs
  ScanResult scan = Scan(body);
  if (type == "SelectStmt") return FromScan(scan);
  if (type == "VariableShowStmt") return StatementKind::kRead;
  if (type == "CopyStmt") {
    StatementKind kind = FromScan(scan);
    return tree_.Bool(tree_.Get(body, "is_from")) ? std::max(kind, StatementKind::kWrite) : kind;
  }
  if (type == "TransactionStmt") return TransactionStmt(body);
  if (type == "VariableSetStmt") return VariableSetStmt(body, text);
  if (type == "DiscardStmt") {
    std::string_view target = Str(body, "target");
    if (target == "DISCARD_ALL") {
      out_.unpins |= kPinAll;
      AddEffect(SessionEffect::Op::kDiscardAll, "", text);
    } else {
      if (target == "DISCARD_TEMP") out_.unpins |= kPinTempObject;
      AddEffect(SessionEffect::Op::kDiscard, "", text);
    }
    return StatementKind::kSessionSet;
  }
  if (type == "ConstraintsSetStmt") return StatementKind::kTransactionScoped;

  StatementKind kind = std::max(FromScan(scan), StatementKind::kWrite);
  if (type == "ListenStmt") return Pin(kPinListen);
  if (type == "PrepareStmt") return Pin(kPinPrepare);
  if (type == "UnlistenStmt") {
    if (tree_.Get(body, "conditionname") == kNone) out_.unpins |= kPinListen;  // UNLISTEN *
    return kind;
  }
  if (type == "DeallocateStmt") {
    if (tree_.Get(body, "name") == kNone) out_.unpins |= kPinPrepare;  // DEALLOCATE ALL
    return kind;
  }
  if (type == "DeclareCursorStmt") {
    if ((tree_.Int(tree_.Get(body, "options")) & kCursorOptHold) != 0) {
      return Pin(kPinHoldCursor);  // outlives the transaction: the session stays on its backend
    }
    return FromScan(scan);  // a plain cursor lives inside its (sticky) transaction
  }
  if ((type == "CreateStmt" && IsTemp(tree_.Get(body, "relation"))) ||
      (type == "ViewStmt" && IsTemp(tree_.Get(body, "view"))) ||
      (type == "CreateSeqStmt" && IsTemp(tree_.Get(body, "sequence"))) ||
      (type == "CreateTableAsStmt" && IsTemp(tree_.Get(tree_.Get(body, "into"), "rel")))) {
    return Pin(kPinTempObject);
  }
  // DML, DDL, NOTIFY, CALL, DO, VACUUM, LOCK, FETCH, EXECUTE, ... and anything unknown.
  return kind;
}

StatementKind Walker::Statement(uint32_t node, std::string_view text) {
  uint32_t inner = Inner(node);
  if (inner == kNone) return StatementKind::kWrite;
  return ByType(TypeOf(inner), inner, text);
}

}  // namespace

const char* StatementKindName(StatementKind kind) {
  switch (kind) {
    case StatementKind::kRead:
      return "read";
    case StatementKind::kSessionSet:
      return "session_set";
    case StatementKind::kProxyDirective:
      return "proxy_directive";
    case StatementKind::kTransactionEnd:
      return "transaction_end";
    case StatementKind::kTransactionScoped:
      return "transaction_scoped";
    case StatementKind::kTransactionBegin:
      return "transaction_begin";
    case StatementKind::kWrite:
      return "write";
    case StatementKind::kPin:
      return "pin";
    case StatementKind::kUnparsable:
      return "unparsable";
  }
  return "unknown";
}

StatementClass Classify(std::string_view sql) {
  StatementClass out;
  ScanHints(sql, out);
  if (sql.size() > kMaxParseBytes) {
    out.kind = StatementKind::kUnparsable;
    out.error = "statement too long to classify";
    return out;
  }
  std::string text(sql);  // pg_query wants a NUL-terminated string
  PgQueryParseResult result = pg_query_parse(text.c_str());
  if (result.error != nullptr) {
    out.kind = StatementKind::kUnparsable;
    out.error = result.error->message != nullptr ? result.error->message : "parse error";
    pg_query_free_parse_result(result);
    return out;
  }
  JsonTree tree;
  bool ok = result.parse_tree != nullptr && tree.Parse(result.parse_tree, kMaxJsonDepth);
  if (!ok) {
    pg_query_free_parse_result(result);
    out.kind = StatementKind::kUnparsable;
    out.error = "unexpected parse tree";
    return out;
  }

  Walker walker(tree, sql, out);
  StatementKind kind = StatementKind::kRead;
  bool all_read_only_begins = true;
  uint32_t stmts = tree.Get(JsonTree::root(), "stmts");
  for (uint32_t raw = stmts == kNone ? kNone : tree.at(stmts).first_child; raw != kNone;
       raw = tree.at(raw).next) {
    // Statement text for replay: locations are byte offsets into the original string.
    auto offset = [&](std::string_view key) {
      return static_cast<size_t>(std::max<int64_t>(0, tree.Int(tree.Get(raw, key))));
    };
    size_t location = offset("stmt_location");
    size_t length = offset("stmt_len");
    std::string_view piece;
    if (location <= sql.size()) {
      piece = length == 0 ? sql.substr(location) : sql.substr(location, length);
    }
    ++out.statement_count;
    out.read_only_transaction = false;
    StatementKind part = walker.Statement(tree.Get(raw, "stmt"), Trim(piece));
    if (part == StatementKind::kTransactionBegin && !out.read_only_transaction) {
      all_read_only_begins = false;
    }
    kind = std::max(kind, part);
  }
  pg_query_free_parse_result(result);

  out.read_only_transaction = kind == StatementKind::kTransactionBegin && all_read_only_begins;
  if (out.statement_count > 0 && walker.directives == out.statement_count) {
    kind = StatementKind::kProxyDirective;
  }
  out.kind = kind;
  return out;
}

}  // namespace nerava::routing
