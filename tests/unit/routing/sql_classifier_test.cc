#include "nerava/routing/sql_classifier.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "nerava/routing/router.h"
#include "routing/pg_json.h"

namespace nerava::routing {
namespace {

constexpr StatementKind R = StatementKind::kRead;
constexpr StatementKind W = StatementKind::kWrite;
constexpr StatementKind B = StatementKind::kTransactionBegin;
constexpr StatementKind E = StatementKind::kTransactionEnd;
constexpr StatementKind T = StatementKind::kTransactionScoped;
constexpr StatementKind S = StatementKind::kSessionSet;
constexpr StatementKind D = StatementKind::kProxyDirective;
constexpr StatementKind P = StatementKind::kPin;
constexpr StatementKind U = StatementKind::kUnparsable;

// Where the statement goes outside a transaction, with the built-in function policy.
enum Target { kRep, kPri, kSes };

Target TargetOf(const StatementClass& c, const FunctionPolicy& policy) {
  RouteIntent intent = IntentFor(c, policy);
  if (intent.session_state) return kSes;
  if (intent.hint == RouteHint::kPrimary) return kPri;
  return intent.replica_ok ? kRep : kPri;
}

const char* TargetName(Target t) {
  return t == kRep ? "replica" : t == kPri ? "primary" : "session";
}

struct Case {
  const char* sql;
  StatementKind kind;
  Target target;
  uint32_t pins = kPinNone;
  uint32_t unpins = kPinNone;
};

// One statement per line (DESIGN §4).
// clang-format off
const Case kCases[] = {
    // Plain reads.
    {"SELECT 1", R, kRep},
    {"select * from users where id = $1", R, kRep},
    {"SELECT a, b FROM t WHERE id = 42 ORDER BY a LIMIT 10", R, kRep},
    {"SELECT count(*) FROM orders GROUP BY customer_id HAVING count(*) > 1", R, kRep},
    {"SELECT * FROM a JOIN b USING (id) LEFT JOIN c ON c.id = a.cid", R, kRep},
    {"SELECT * FROM t WHERE id IN (SELECT id FROM u)", R, kRep},
    {"SELECT EXISTS (SELECT 1 FROM t)", R, kRep},
    {"SELECT 1 UNION ALL SELECT 2", R, kRep},
    {"SELECT * FROM t1 INTERSECT SELECT * FROM t2", R, kRep},
    {"SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b DESC", R, kRep},
    {"SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t", R, kRep},
    {"SELECT * FROM generate_series(1, 10)", R, kRep},
    {"SELECT * FROM t TABLESAMPLE SYSTEM (10)", R, kRep},
    {"SELECT jsonb_build_object('a', 1)", R, kRep},
    {"SELECT $1::int + $2::int", R, kRep},
    {"SELECT * FROM t WHERE name LIKE 'a%' AND created_at > now() - interval '1 day'", R, kRep},
    {"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", R, kRep},
    {"  SELECT 1  ;  ", R, kRep},
    {"SELECT 'it''s', E'a\\'b', $$dollar$$", R, kRep},
    {"SELECT * FROM \"Weird Table\"", R, kRep},
    {"SELECT * FROM l, LATERAL (SELECT * FROM u WHERE u.x = l.x) s", R, kRep},
    {"SELECT CASE WHEN a THEN 1 ELSE 2 END FROM t", R, kRep},
    {"SELECT * FROM t FETCH FIRST 5 ROWS ONLY", R, kRep},
    {"SELECT current_user, session_user, current_database()", R, kRep},
    {"SELECT CURRENT_TIMESTAMP, CURRENT_DATE, LOCALTIME", R, kRep},
    {"SELECT lower(name), length(name), coalesce(a, 0) FROM t", R, kRep},
    {"SELECT FROM t", R, kRep},
    // VALUES, TABLE, SHOW.
    {"VALUES (1, 'a'), (2, 'b')", R, kRep},
    {"TABLE users", R, kRep},
    {"SHOW search_path", R, kRep},
    {"SHOW ALL", R, kRep},
    {"SHOW transaction_isolation", R, kRep},
    // CTEs.
    {"WITH x AS (SELECT 1 AS a) SELECT a FROM x", R, kRep},
    {"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r",
     R, kRep},
    {"WITH x AS MATERIALIZED (SELECT * FROM t) SELECT * FROM x", R, kRep},
    {"WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d", W, kPri},
    {"WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i", W, kPri},
    {"WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT count(*) FROM u", W, kPri},
    {"WITH a AS (SELECT 1), b AS (INSERT INTO log VALUES (1)) SELECT * FROM a", W, kPri},
    // Locking clauses.
    {"SELECT * FROM t WHERE id = 1 FOR UPDATE", W, kPri},
    {"SELECT * FROM t FOR SHARE", W, kPri},
    {"SELECT * FROM t FOR NO KEY UPDATE", W, kPri},
    {"SELECT * FROM t FOR KEY SHARE", W, kPri},
    {"SELECT * FROM t FOR UPDATE SKIP LOCKED", W, kPri},
    {"SELECT * FROM t FOR UPDATE NOWAIT", W, kPri},
    {"SELECT * FROM (SELECT * FROM t FOR UPDATE) s", W, kPri},
    {"SELECT * FROM t1 JOIN t2 ON t1.id = t2.id FOR UPDATE OF t1", W, kPri},
    // SELECT INTO.
    {"SELECT * INTO new_table FROM t", W, kPri},
    {"SELECT 1 INTO TEMP tmp_x", P, kPri, kPinTempObject},
    {"SELECT 1 AS a INTO TEMPORARY TABLE tmp_y", P, kPri, kPinTempObject},
    // EXPLAIN.
    {"EXPLAIN SELECT * FROM t", R, kRep},
    {"EXPLAIN (FORMAT JSON) SELECT * FROM t", R, kRep},
    {"EXPLAIN ANALYZE SELECT * FROM t", R, kRep},
    {"EXPLAIN (ANALYZE, BUFFERS) SELECT 1", R, kRep},
    {"EXPLAIN INSERT INTO t VALUES (1)", R, kRep},
    {"EXPLAIN SELECT nextval('s')", R, kRep},
    {"EXPLAIN ANALYZE INSERT INTO t VALUES (1)", W, kPri},
    {"EXPLAIN (ANALYZE true) UPDATE t SET a = 1", W, kPri},
    {"EXPLAIN (ANALYZE false) DELETE FROM t", R, kRep},
    {"EXPLAIN (ANALYZE off) DELETE FROM t", R, kRep},
    {"EXPLAIN (ANALYZE 0) DELETE FROM t", R, kRep},
    {"EXPLAIN (ANALYZE 1) DELETE FROM t", W, kPri},
    {"EXPLAIN (ANALYZE on) DELETE FROM t", W, kPri},
    {"EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", W, kPri},
    {"EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", W, kPri},
    {"EXPLAIN ANALYZE SELECT nextval('s')", R, kPri},
    // DML.
    {"INSERT INTO t (a) VALUES (1)", W, kPri},
    {"INSERT INTO t (a) VALUES ($1) RETURNING id", W, kPri},
    {"INSERT INTO t SELECT * FROM u", W, kPri},
    {"INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = EXCLUDED.a", W, kPri},
    {"INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", W, kPri},
    {"UPDATE t SET a = a + 1 WHERE id = 1", W, kPri},
    {"UPDATE t SET a = 1 RETURNING *", W, kPri},
    {"UPDATE t SET a = u.a FROM u WHERE t.id = u.id", W, kPri},
    {"DELETE FROM t WHERE id = 1", W, kPri},
    {"DELETE FROM t USING u WHERE t.id = u.id RETURNING t.*", W, kPri},
    {"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a "
     "WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.a)",
     W, kPri},
    {"TRUNCATE t", W, kPri},
    {"TRUNCATE t1, t2 RESTART IDENTITY CASCADE", W, kPri},
    // DDL.
    {"CREATE TABLE t (id serial PRIMARY KEY, a text)", W, kPri},
    {"CREATE TABLE IF NOT EXISTS t2 (LIKE t)", W, kPri},
    {"CREATE UNLOGGED TABLE u (a int)", W, kPri},
    {"CREATE TABLE t3 AS SELECT * FROM t", W, kPri},
    {"CREATE MATERIALIZED VIEW mv AS SELECT 1", W, kPri},
    {"REFRESH MATERIALIZED VIEW mv", W, kPri},
    {"CREATE VIEW v AS SELECT 1", W, kPri},
    {"CREATE INDEX CONCURRENTLY i ON t (a)", W, kPri},
    {"DROP TABLE t", W, kPri},
    {"DROP TABLE IF EXISTS t CASCADE", W, kPri},
    {"ALTER TABLE t ADD COLUMN b int", W, kPri},
    {"ALTER TABLE t RENAME TO u", W, kPri},
    {"CREATE SCHEMA s", W, kPri},
    {"CREATE SEQUENCE s", W, kPri},
    {"ALTER SEQUENCE s RESTART", W, kPri},
    {"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", W, kPri},
    {"CREATE EXTENSION IF NOT EXISTS pgcrypto", W, kPri},
    {"COMMENT ON TABLE t IS 'x'", W, kPri},
    {"GRANT SELECT ON t TO bob", W, kPri},
    {"REVOKE ALL ON t FROM bob", W, kPri},
    {"CREATE ROLE bob LOGIN", W, kPri},
    {"ALTER SYSTEM SET work_mem = '64MB'", W, kPri},
    {"CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", W, kPri},
    {"CREATE TYPE mood AS ENUM ('a', 'b')", W, kPri},
    // Temporary objects pin the session.
    {"CREATE TEMP TABLE tmp (a int)", P, kPri, kPinTempObject},
    {"CREATE TEMPORARY TABLE tmp2 AS SELECT 1", P, kPri, kPinTempObject},
    {"CREATE TEMP VIEW tv AS SELECT 1", P, kPri, kPinTempObject},
    {"CREATE TEMP SEQUENCE ts", P, kPri, kPinTempObject},
    {"CREATE TABLE pg_temp.tmp3 (a int)", P, kPri, kPinTempObject},
    {"CREATE TEMP TABLE tmp4 (a int) ON COMMIT DROP", P, kPri, kPinTempObject},
    // COPY both ways.
    {"COPY t FROM STDIN", W, kPri},
    {"COPY t (a, b) FROM STDIN WITH (FORMAT csv)", W, kPri},
    {"COPY t FROM '/tmp/x.csv'", W, kPri},
    {"COPY t TO STDOUT", R, kRep},
    {"COPY (SELECT * FROM t WHERE a > 1) TO STDOUT WITH CSV HEADER", R, kRep},
    {"COPY t TO STDOUT (FORMAT binary)", R, kRep},
    {"COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT", W, kPri},
    {"COPY (SELECT * FROM t FOR UPDATE) TO STDOUT", W, kPri},
    // LISTEN / NOTIFY.
    {"LISTEN chan", P, kPri, kPinListen},
    {"NOTIFY chan", W, kPri},
    {"NOTIFY chan, 'payload'", W, kPri},
    {"UNLISTEN chan", W, kPri},
    {"UNLISTEN *", W, kPri, kPinNone, kPinListen},
    {"SELECT pg_notify('chan', 'x')", R, kPri},
    // Advisory locks.
    {"SELECT pg_advisory_lock(1)", P, kPri, kPinAdvisoryLock},
    {"SELECT pg_try_advisory_lock(1, 2)", P, kPri, kPinAdvisoryLock},
    {"SELECT pg_advisory_lock_shared(42)", P, kPri, kPinAdvisoryLock},
    {"SELECT pg_catalog.pg_advisory_lock(7)", P, kPri, kPinAdvisoryLock},
    {"SELECT pg_advisory_xact_lock(1)", W, kPri},
    {"SELECT pg_try_advisory_xact_lock(1)", W, kPri},
    {"SELECT pg_advisory_unlock(1)", W, kPri},
    {"SELECT pg_advisory_unlock_all()", W, kPri, kPinNone, kPinAdvisoryLock},
    // Transactions.
    {"BEGIN", B, kPri},
    {"BEGIN TRANSACTION", B, kPri},
    {"BEGIN WORK", B, kPri},
    {"START TRANSACTION", B, kPri},
    {"BEGIN READ ONLY", B, kRep},
    {"START TRANSACTION READ ONLY", B, kRep},
    {"BEGIN ISOLATION LEVEL SERIALIZABLE", B, kPri},
    {"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", B, kRep},
    {"BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", B, kRep},
    {"BEGIN READ WRITE", B, kPri},
    {"START TRANSACTION ISOLATION LEVEL READ COMMITTED READ WRITE", B, kPri},
    {"COMMIT", E, kPri},
    {"END", E, kPri},
    {"ROLLBACK", E, kPri},
    {"ABORT", E, kPri},
    {"COMMIT AND CHAIN", E, kPri},
    {"PREPARE TRANSACTION 'tx1'", E, kPri},
    {"COMMIT PREPARED 'tx1'", W, kPri},
    {"ROLLBACK PREPARED 'tx1'", W, kPri},
    {"SAVEPOINT sp", T, kPri},
    {"RELEASE SAVEPOINT sp", T, kPri},
    {"ROLLBACK TO SAVEPOINT sp", T, kPri},
    {"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", T, kPri},
    {"SET LOCAL search_path = s", T, kPri},
    {"SET CONSTRAINTS ALL DEFERRED", T, kPri},
    // Session state: applied on every backend.
    {"SET search_path = a, b", S, kSes},
    {"SET search_path TO DEFAULT", S, kSes},
    {"SET SESSION statement_timeout = '5s'", S, kSes},
    {"SET statement_timeout TO 5000", S, kSes},
    {"SET TIME ZONE 'UTC'", S, kSes},
    {"SET NAMES 'UTF8'", S, kSes},
    {"SET application_name = 'x'", S, kSes},
    {"SET ROLE bob", S, kSes},
    {"SET ROLE NONE", S, kSes},
    {"RESET ROLE", S, kSes},
    {"SET SESSION AUTHORIZATION bob", S, kSes},
    {"RESET SESSION AUTHORIZATION", S, kSes},
    {"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", S, kSes},
    {"SET work_mem FROM CURRENT", S, kSes},
    {"RESET work_mem", S, kSes},
    {"RESET ALL", S, kSes},
    {"DISCARD ALL", S, kSes, kPinNone, kPinAll},
    {"DISCARD PLANS", S, kSes},
    {"DISCARD TEMP", S, kSes, kPinNone, kPinTempObject},
    {"DISCARD SEQUENCES", S, kSes},
    // Proxy directives.
    {"SET nerava.route = 'primary'", D, kSes},
    {"SET nerava.route = 'auto'", D, kSes},
    {"RESET nerava.route", D, kSes},
    {"SET nerava.route TO 'PRIMARY'", D, kSes},
    // Prepared statements and cursors.
    {"PREPARE p (int) AS SELECT * FROM t WHERE id = $1", P, kPri, kPinPrepare},
    {"EXECUTE p(1)", W, kPri},
    {"DEALLOCATE p", W, kPri},
    {"DEALLOCATE ALL", W, kPri, kPinNone, kPinPrepare},
    {"DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t", P, kPri, kPinHoldCursor},
    {"DECLARE c CURSOR FOR SELECT * FROM t", R, kRep},
    {"DECLARE c SCROLL CURSOR WITHOUT HOLD FOR SELECT 1", R, kRep},
    {"FETCH 10 FROM c", W, kPri},
    {"CLOSE c", W, kPri},
    {"MOVE NEXT IN c", W, kPri},
    // Other writes.
    {"CALL do_something(1)", W, kPri},
    {"DO $$BEGIN PERFORM 1; END$$", W, kPri},
    {"VACUUM t", W, kPri},
    {"VACUUM (VERBOSE, ANALYZE) t", W, kPri},
    {"ANALYZE t", W, kPri},
    {"CHECKPOINT", W, kPri},
    {"CLUSTER t USING i", W, kPri},
    {"REINDEX TABLE t", W, kPri},
    {"LOCK TABLE t IN ACCESS EXCLUSIVE MODE", W, kPri},
    {"LOAD 'auto_explain'", W, kPri},
    // Functions: the class is a read, the policy sends it to the primary.
    {"SELECT nextval('seq')", R, kPri},
    {"SELECT currval('seq')", R, kPri},
    {"SELECT setval('seq', 10)", R, kPri},
    {"SELECT txid_current()", R, kPri},
    {"SELECT pg_current_xact_id()", R, kPri},
    {"SELECT txid_current_if_assigned()", R, kPri},
    {"SELECT set_config('search_path', 'x', false)", P, kPri, kPinSessionConfig},
    {"SELECT set_config('app.user', '42', true)", R, kPri},
    {"SELECT lo_creat(-1)", R, kPri},
    {"SELECT lo_import('/tmp/x')", R, kPri},
    {"SELECT pg_is_in_recovery()", R, kPri},
    {"SELECT inet_server_port()", R, kRep},
    {"SELECT now()", R, kRep},
    {"SELECT random()", R, kPri},
    {"SELECT clock_timestamp()", R, kPri},
    {"SELECT gen_random_uuid()", R, kPri},
    {"SELECT uuid_generate_v4()", R, kPri},
    {"SELECT pg_sleep(1)", R, kPri},
    {"SELECT pg_backend_pid()", R, kRep},
    {"SELECT current_setting('work_mem')", R, kRep},
    {"SELECT pg_catalog.now()", R, kRep},
    {"SELECT id FROM t WHERE id = (SELECT nextval('s'))", R, kPri},
    {"SELECT * FROM t ORDER BY random() LIMIT 1", R, kPri},
    {"SELECT pg_current_wal_lsn()", R, kPri},
    {"SELECT pg_walfile_name('0/0')", R, kPri},
    {"SELECT * FROM t WHERE id = ANY(SELECT lastval())", R, kPri},
    // Hints.
    {"/* nerava:primary */ SELECT 1", R, kPri},
    {"SELECT 1 /* nerava:primary */", R, kPri},
    {"-- nerava:primary\nSELECT 1", R, kPri},
    {"/* nerava:replica */ SELECT nextval('s')", R, kRep},
    {"/* nerava:replica */ INSERT INTO t VALUES (1)", W, kPri},
    {"SELECT '/* nerava:primary */'", R, kRep},
    {"/* nerava:max_lag_ms=200 */ SELECT 1", R, kRep},
    {"/* nerava:replica */ BEGIN", B, kRep},
    // Multi-statement strings are routed as a whole.
    {"SELECT 1; SELECT 2", R, kRep},
    {"SELECT 1; INSERT INTO t VALUES (1)", W, kPri},
    {"INSERT INTO t VALUES (1); SELECT * FROM t", W, kPri},
    {"BEGIN; INSERT INTO t VALUES (1); COMMIT", W, kPri},
    {"BEGIN READ ONLY; SELECT 1", B, kRep},
    {"BEGIN READ ONLY; BEGIN", B, kPri},
    {"SET search_path = a; SELECT 1", S, kSes},
    {"SELECT 1; CREATE TEMP TABLE x (a int)", P, kPri, kPinTempObject},
    {"LISTEN a; NOTIFY a", P, kPri, kPinListen},
    {"SET x.y = 1; SET nerava.route = 'primary'", S, kSes},
    {"SELECT 1; SELECT pg_advisory_lock(1)", P, kPri, kPinAdvisoryLock},
    {"DISCARD ALL; LISTEN a", P, kPri, kPinListen, kPinAll},
    // Unparsable: primary.
    {"SELEC 1", U, kPri},
    {"SELECT * FROM", U, kPri},
    {"INSERT INTO", U, kPri},
    {"'unterminated", U, kPri},
    {"SELECT 1; garbage here", U, kPri},
    {"\\dt", U, kPri},
    {"/* nerava:replica */ SELEC 1", U, kPri},
    // Empty strings (EmptyQueryResponse): anywhere.
    {"", R, kRep},
    {";", R, kRep},
};
// clang-format on

TEST(SqlClassifierTest, Table) {
  FunctionPolicy policy;
  size_t n = 0;
  for (const Case& c : kCases) {
    StatementClass got = Classify(c.sql);
    EXPECT_EQ(StatementKindName(got.kind), std::string(StatementKindName(c.kind)))
        << c.sql << " " << got.error;
    EXPECT_EQ(TargetName(TargetOf(got, policy)), std::string(TargetName(c.target))) << c.sql;
    EXPECT_EQ(got.pins, c.pins) << c.sql;
    EXPECT_EQ(got.unpins, c.unpins) << c.sql;
    ++n;
  }
  EXPECT_GE(n, 150u);
}

// Every prefix of every statement of the table classifies without crashing, and a prefix that
// the parser refuses is never sent to a replica.
TEST(SqlClassifierTest, EveryPrefixIsSafe) {
  FunctionPolicy policy;
  for (const Case& c : kCases) {
    std::string_view sql = c.sql;
    for (size_t cut = 0; cut <= sql.size(); ++cut) {
      StatementClass got = Classify(sql.substr(0, cut));
      if (got.kind == StatementKind::kUnparsable) {
        EXPECT_EQ(TargetOf(got, policy), kPri) << sql.substr(0, cut);
      }
    }
  }
}

TEST(SqlClassifierTest, ReadOnlyTransactionFlag) {
  EXPECT_TRUE(Classify("BEGIN READ ONLY").read_only_transaction);
  EXPECT_TRUE(Classify("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE")
                  .read_only_transaction);
  EXPECT_FALSE(Classify("BEGIN").read_only_transaction);
  EXPECT_FALSE(Classify("BEGIN READ WRITE").read_only_transaction);
  EXPECT_FALSE(Classify("SELECT 1").read_only_transaction);
  EXPECT_FALSE(Classify("BEGIN READ ONLY; BEGIN").read_only_transaction);
}

TEST(SqlClassifierTest, FunctionNamesInOrderQualifiedDeduplicated) {
  StatementClass c = Classify(
      "SELECT pg_catalog.nextval('s'), lower(x), nextval('s'), \"MixedCase\"(1), "
      "Upper(y) FROM generate_series(1, 2) WHERE a = ANY(SELECT myschema.f(2))");
  EXPECT_EQ(c.functions,
            (std::vector<std::string>{"pg_catalog.nextval", "lower", "nextval", "MixedCase",
                                      "upper", "generate_series", "myschema.f"}));
  EXPECT_TRUE(Classify("SELECT 1").functions.empty());
  // Plain EXPLAIN runs nothing: its functions do not count.
  EXPECT_TRUE(Classify("EXPLAIN SELECT nextval('s')").functions.empty());
}

TEST(SqlClassifierTest, SessionEffectsCarryReplayText) {
  StatementClass c = Classify(
      "SET search_path = a, b;  reset ROLE ;\nSET SESSION AUTHORIZATION bob; RESET ALL; "
      "DISCARD ALL; DISCARD PLANS; SET Statement_Timeout TO 5000");
  using Op = SessionEffect::Op;
  std::vector<SessionEffect> want = {
      {Op::kSet, "search_path", "SET search_path = a, b"},
      {Op::kReset, "role", "reset ROLE"},
      {Op::kSet, "session_authorization", "SET SESSION AUTHORIZATION bob"},
      {Op::kResetAll, "", "RESET ALL"},
      {Op::kDiscardAll, "", "DISCARD ALL"},
      {Op::kDiscard, "", "DISCARD PLANS"},
      {Op::kSet, "statement_timeout", "SET Statement_Timeout TO 5000"},
  };
  EXPECT_EQ(c.kind, StatementKind::kSessionSet);
  ASSERT_EQ(c.session_effects.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(c.session_effects[i].op, want[i].op) << i;
    EXPECT_EQ(c.session_effects[i].name, want[i].name) << i;
    EXPECT_EQ(c.session_effects[i].text, want[i].text) << i;
  }
  EXPECT_EQ(c.statement_count, 7);
  // SET LOCAL and SET TRANSACTION end with the transaction: nothing to replay.
  EXPECT_TRUE(Classify("SET LOCAL work_mem = '1MB'").session_effects.empty());
  EXPECT_TRUE(Classify("SET TRANSACTION READ ONLY").session_effects.empty());
}

TEST(SqlClassifierTest, ProxyDirective) {
  StatementClass primary = Classify("SET nerava.route = 'primary'");
  EXPECT_EQ(primary.kind, StatementKind::kProxyDirective);
  EXPECT_EQ(primary.route_directive, RouteOverride::kPrimary);
  EXPECT_TRUE(primary.session_effects.empty());  // not forwarded, not replayed
  EXPECT_EQ(Classify("SET nerava.route = 'auto'").route_directive, RouteOverride::kAuto);
  EXPECT_EQ(Classify("RESET nerava.route").route_directive, RouteOverride::kAuto);
  EXPECT_EQ(Classify("SET nerava.route = 'bogus'").route_directive, RouteOverride::kAuto);
  EXPECT_FALSE(Classify("SET search_path = x").route_directive.has_value());
  // Mixed with other statements the string is forwarded (PostgreSQL accepts the placeholder).
  StatementClass mixed = Classify("SET nerava.route = 'primary'; SELECT 1");
  EXPECT_EQ(mixed.kind, StatementKind::kRead);
  EXPECT_EQ(mixed.route_directive, RouteOverride::kPrimary);
}

TEST(SqlClassifierTest, Hints) {
  struct HintCase {
    const char* sql;
    RouteHint hint;
    std::optional<uint32_t> max_lag_ms;
  };
  const HintCase cases[] = {
      {"SELECT 1", RouteHint::kNone, std::nullopt},
      {"/* nerava:primary */ SELECT 1", RouteHint::kPrimary, std::nullopt},
      {"/*nerava:replica*/SELECT 1", RouteHint::kReplica, std::nullopt},
      {"SELECT 1 -- nerava:replica", RouteHint::kReplica, std::nullopt},
      {"/* nerava:replica nerava:primary */ SELECT 1", RouteHint::kPrimary, std::nullopt},
      {"/* nerava:max_lag_ms=200 */ SELECT 1", RouteHint::kNone, 200u},
      {"/* nerava:replica, nerava:max_lag_ms=50 */ SELECT 1", RouteHint::kReplica, 50u},
      {"/* nerava:max_lag_ms=300 */ SELECT 1 /* nerava:max_lag_ms=100 */", RouteHint::kNone, 100u},
      {"/* nerava:max_lag_ms=abc */ SELECT 1", RouteHint::kNone, std::nullopt},
      {"/* nerava:max_lag_ms=99999999999 */ SELECT 1", RouteHint::kNone, std::nullopt},
      {"/* outer /* nested */ nerava:primary */ SELECT 1", RouteHint::kPrimary, std::nullopt},
      {"SELECT '/* nerava:primary */'", RouteHint::kNone, std::nullopt},
      {"SELECT 'a''/* nerava:primary */'", RouteHint::kNone, std::nullopt},
      {"SELECT E'\\' /* nerava:primary */'", RouteHint::kNone, std::nullopt},
      {"SELECT $$ /* nerava:primary */ $$", RouteHint::kNone, std::nullopt},
      {"SELECT $tag$ $$ /* nerava:primary */ $tag$", RouteHint::kNone, std::nullopt},
      {"SELECT 1 AS \"/* nerava:primary */\"", RouteHint::kNone, std::nullopt},
      {"SELECT $1 /* nerava:primary */", RouteHint::kPrimary, std::nullopt},
      {"SELECT 'x' -- nerava:primary", RouteHint::kPrimary, std::nullopt},
      {"SELECT 1 /* nerava:PRIMARY */", RouteHint::kPrimary, std::nullopt},
  };
  for (const HintCase& c : cases) {
    StatementClass got = Classify(c.sql);
    EXPECT_EQ(static_cast<int>(got.hint), static_cast<int>(c.hint)) << c.sql;
    EXPECT_EQ(got.max_lag_ms, c.max_lag_ms) << c.sql;
  }
}

TEST(SqlClassifierTest, UnparsableKeepsTheParserMessage) {
  StatementClass c = Classify("SELEC 1");
  EXPECT_EQ(c.kind, StatementKind::kUnparsable);
  EXPECT_NE(c.error.find("syntax error"), std::string::npos) << c.error;
  EXPECT_TRUE(c.Writes());
}

TEST(SqlClassifierTest, TooLongIsNotParsed) {
  std::string big = "SELECT 1 /* " + std::string((1u << 20) + 1, 'x') + " */";
  StatementClass c = Classify(big);
  EXPECT_EQ(c.kind, StatementKind::kUnparsable);
  EXPECT_EQ(c.error, "statement too long to classify");
}

TEST(SqlClassifierTest, DeeplyNestedExpressionIsSafe) {
  // Nesting beyond what the parser accepts must come back unparsable, not crash.
  std::string deep = "SELECT " + std::string(100000, '(') + "1" + std::string(100000, ')');
  StatementClass c = Classify(deep);
  EXPECT_EQ(c.kind, StatementKind::kUnparsable);
  std::string fine = "SELECT " + std::string(200, '(') + "random()" + std::string(200, ')');
  StatementClass f = Classify(fine);
  EXPECT_EQ(f.kind, StatementKind::kRead) << f.error;
  EXPECT_EQ(f.functions, std::vector<std::string>{"random"});
}

// ---------------------------------------------------------------------------------------------

TEST(FunctionPolicyTest, FallbackBeforePgProcIsLoaded) {
  FunctionPolicy policy;
  EXPECT_FALSE(policy.loaded());
  EXPECT_TRUE(policy.RequiresPrimary("nextval"));
  EXPECT_TRUE(policy.RequiresPrimary("pg_catalog.random"));
  EXPECT_TRUE(policy.RequiresPrimary("pg_is_in_recovery"));
  EXPECT_TRUE(policy.RequiresPrimary("txid_current"));  // stable, but the write list
  EXPECT_FALSE(policy.RequiresPrimary("now"));
  EXPECT_FALSE(policy.RequiresPrimary("inet_server_port"));
  EXPECT_FALSE(policy.RequiresPrimary("lower"));
  EXPECT_FALSE(policy.RequiresPrimary("myschema.random"));  // not pg_catalog's random
  EXPECT_GE(FunctionPolicy::BuiltinVolatileFallback().size(), 150u);
}

TEST(FunctionPolicyTest, LoadedVolatileSetAllowlistAndWriteList) {
  FunctionPolicy policy;
  policy.SetVolatile({{"nextval", "pg_catalog"},
                      {"random", "pg_catalog"},
                      {"create_order", "app"},
                      {"audit", "public"}});
  EXPECT_TRUE(policy.loaded());
  EXPECT_TRUE(policy.RequiresPrimary("create_order"));  // unqualified: any schema
  EXPECT_TRUE(policy.RequiresPrimary("app.create_order"));
  EXPECT_FALSE(policy.RequiresPrimary("other.create_order"));
  EXPECT_FALSE(policy.RequiresPrimary("clock_timestamp"));  // the fallback is gone
  EXPECT_TRUE(policy.RequiresPrimary("txid_current"));      // the write list stays
  EXPECT_TRUE(policy.RequiresPrimary("pg_catalog.pg_current_xact_id"));
  EXPECT_FALSE(policy.RequiresPrimary("myschema.txid_current"));

  policy.SetAllowlist({"audit", "APP.create_order", "random", "nextval", "txid_current"});
  EXPECT_FALSE(policy.RequiresPrimary("audit"));
  EXPECT_FALSE(policy.RequiresPrimary("public.audit"));
  EXPECT_FALSE(policy.RequiresPrimary("app.create_order"));
  EXPECT_TRUE(policy.RequiresPrimary("create_order"));  // only the qualified name is allowed
  EXPECT_FALSE(policy.RequiresPrimary("random"));
  EXPECT_TRUE(policy.RequiresPrimary("nextval"));  // write list beats the allowlist
  EXPECT_TRUE(policy.RequiresPrimary("txid_current"));

  std::vector<std::string> names = {"lower", "create_order", "nextval"};
  const std::string* first = policy.FirstRequiringPrimary(names);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(*first, "create_order");
  EXPECT_EQ(policy.FirstRequiringPrimary({"lower", "upper"}), nullptr);
}

// ---------------------------------------------------------------------------------------------

TEST(ClassificationCacheTest, HitsMissesAndLruEviction) {
  ClassificationCache cache(/*max_entries=*/3);
  auto a = cache.Classify("SELECT c1 FROM t");
  auto a2 = cache.Classify("SELECT c1 FROM t");
  EXPECT_EQ(a.get(), a2.get());
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.misses(), 1u);
  cache.Classify("SELECT c2 FROM t");
  cache.Classify("SELECT c3 FROM t");
  cache.Classify("SELECT c1 FROM t");  // refresh: now "SELECT c2 FROM t" is the oldest
  cache.Classify("SELECT c4 FROM t");  // evicts "SELECT c2 FROM t"
  EXPECT_EQ(cache.size(), 3u);
  uint64_t misses = cache.misses();
  cache.Classify("SELECT c1 FROM t");
  cache.Classify("SELECT c3 FROM t");
  cache.Classify("SELECT c4 FROM t");
  EXPECT_EQ(cache.misses(), misses);
  cache.Classify("SELECT c2 FROM t");
  EXPECT_EQ(cache.misses(), misses + 1);
  // Evicted entries stay alive for whoever holds them.
  EXPECT_EQ(a->kind, StatementKind::kRead);
  EXPECT_EQ(cache.Classify("INSERT INTO t VALUES (1)")->kind, StatementKind::kWrite);
}

TEST(ClassificationCacheTest, ByteBoundsAndExactKeys) {
  ClassificationCache cache(/*max_entries=*/100, /*max_bytes=*/40, /*max_statement_bytes=*/30);
  cache.Classify("SELECT 1");   // 8 bytes
  cache.Classify("SELECT  1");  // different text, different entry
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.bytes(), 17u);
  cache.Classify("SELECT 'this statement is too long to cache'");
  EXPECT_EQ(cache.size(), 2u);
  cache.Classify("SELECT 'abcdefghijklmnop'");  // 25 bytes: 17 + 25 > 40 evicts the oldest
  EXPECT_LE(cache.bytes(), 40u);
  EXPECT_EQ(cache.size(), 2u);
  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);
}

// Measured cost (printed, not asserted): classification uncached vs through the cache.
TEST(ClassificationCacheTest, CostUncachedVsCached) {
  const char* statements[] = {
      "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
      "SELECT u.id, u.name, count(o.id) FROM users u JOIN orders o ON o.user_id = u.id WHERE "
      "u.created_at > now() - interval '1 day' GROUP BY u.id, u.name ORDER BY 3 DESC LIMIT 10",
      "INSERT INTO t (a, b) VALUES ($1, $2) RETURNING id",
  };
  for (const char* sql : statements) {
    constexpr int kUncached = 2000;
    constexpr int kCached = 200000;
    auto t0 = std::chrono::steady_clock::now();
    size_t sink = 0;
    for (int i = 0; i < kUncached; ++i) sink += Classify(sql).functions.size();
    auto t1 = std::chrono::steady_clock::now();
    ClassificationCache cache;
    for (int i = 0; i < kCached; ++i) sink += cache.Classify(sql)->functions.size();
    auto t2 = std::chrono::steady_clock::now();
    double uncached = std::chrono::duration<double, std::nano>(t1 - t0).count() / kUncached;
    double cached = std::chrono::duration<double, std::nano>(t2 - t1).count() / kCached;
    std::printf("[ cost ] uncached %8.0f ns/op  cached %6.0f ns/op  (%zu)  %.40s...\n", uncached,
                cached, sink, sql);
    EXPECT_LT(cached, uncached);
  }
}

// ---------------------------------------------------------------------------------------------

TEST(PgJsonTest, ParsesAndRejectsEveryTruncation) {
  const std::string json =
      R"({"version":150001,"stmts":[{"stmt":{"SelectStmt":{"targetList":[{"ResTarget":)"
      R"({"val":{"A_Const":{"sval":{"sval":"a\"b\\c\u00e9\ud83d\ude00"},"location":7}}}}],)"
      R"("x":true,"y":false,"z":null,"n":-1.5e3,"e":[],"o":{}}}}]})";
  internal::JsonTree tree;
  ASSERT_TRUE(tree.Parse(json));
  uint32_t stmts = tree.Get(internal::JsonTree::root(), "stmts");
  EXPECT_EQ(tree.Count(stmts), 1u);
  EXPECT_EQ(tree.Int(tree.Get(internal::JsonTree::root(), "version")), 150001);
  uint32_t select = tree.Get(tree.Get(tree.at(stmts).first_child, "stmt"), "SelectStmt");
  uint32_t target = tree.at(tree.Get(select, "targetList")).first_child;
  uint32_t sval = tree.Get(
      tree.Get(tree.Get(tree.Get(tree.Get(target, "ResTarget"), "val"), "A_Const"), "sval"),
      "sval");
  EXPECT_EQ(tree.String(sval), "a\"b\\c\xC3\xA9\xF0\x9F\x98\x80");
  EXPECT_TRUE(tree.Bool(tree.Get(select, "x")));
  EXPECT_FALSE(tree.Bool(tree.Get(select, "y")));
  EXPECT_EQ(tree.at(tree.Get(select, "z")).type, internal::JsonTree::Type::kNull);
  EXPECT_EQ(tree.Count(tree.Get(select, "e")), 0u);
  EXPECT_EQ(tree.Count(tree.Get(select, "o")), 0u);
  // Every proper prefix is malformed.
  for (size_t cut = 0; cut < json.size(); ++cut) {
    internal::JsonTree partial;
    EXPECT_FALSE(partial.Parse(std::string_view(json).substr(0, cut))) << cut;
  }
}

TEST(PgJsonTest, RejectsMalformedAndTooDeep) {
  const char* bad[] = {"{",          "}",          "[1,]",    "{\"a\":1,}",  "{\"a\" 1}",
                       "{a:1}",      "[1 2]",      "\"\\x\"", "\"\\u12G4\"", "[tru]",
                       "{\"a\":1}}", "[\"\x01\"]", "01x"};
  for (const char* json : bad) {
    internal::JsonTree tree;
    EXPECT_FALSE(tree.Parse(json)) << json;
  }
  internal::JsonTree tree;
  std::string deep = std::string(100, '[') + std::string(100, ']');
  EXPECT_TRUE(tree.Parse(deep, 100));
  EXPECT_FALSE(tree.Parse(deep, 99));
}

// ---------------------------------------------------------------------------------------------
// FunctionPolicy from the whole pg_proc catalog (issue 5): volatile -> primary, stable and
// immutable -> replica, unknown to the loaded catalog -> primary.

std::vector<CatalogFunction> SampleCatalog() {
  return {
      {"lower", "pg_catalog", 'i'},
      {"count", "pg_catalog", 'i'},
      {"now", "pg_catalog", 's'},
      {"extract", "pg_catalog", 'i'},
      {"inet_server_port", "pg_catalog", 's'},
      {"random", "pg_catalog", 'v'},
      {"nextval", "pg_catalog", 'v'},
      {"txid_current", "pg_catalog", 's'},  // stable, yet on the built-in write list
      {"app_stable", "app", 's'},
      {"app_immutable", "public", 'i'},
      {"app_volatile", "app", 'v'},
      {"overloaded", "app", 's'},  // one overload stable ...
      {"overloaded", "app", 'v'},  // ... another volatile: the name needs the primary
      {"same_name", "a", 's'},
      {"same_name", "b", 'v'},
      {"MixedCase", "public", 's'},  // created as "MixedCase" (quoted)
      {"mixedcase", "public", 'v'},  // and as mixedcase: folding must not lose the volatile one
  };
}

struct CatalogCase {
  const char* name;
  bool primary;
};

TEST(FunctionPolicyTest, CatalogDecidesEveryName) {
  FunctionPolicy policy;
  policy.SetCatalog(SampleCatalog());
  EXPECT_TRUE(policy.loaded());
  EXPECT_TRUE(policy.complete());
  // clang-format off
  const CatalogCase cases[] = {
      {"lower", false}, {"pg_catalog.lower", false}, {"count", false}, {"now", false},
      {"inet_server_port", false}, {"pg_catalog.extract", false},
      {"random", true}, {"pg_catalog.random", true}, {"nextval", true},
      {"txid_current", true},              // the write list
      {"app_stable", false}, {"app.app_stable", false}, {"app_immutable", false},
      {"public.app_immutable", false},
      {"app_volatile", true}, {"app.app_volatile", true},
      {"overloaded", true}, {"app.overloaded", true},
      {"same_name", true},                 // unqualified: volatile in any schema
      {"a.same_name", false}, {"b.same_name", true},
      {"MixedCase", true}, {"mixedcase", true}, {"public.MIXEDCASE", true},
      {"APP_STABLE", false}, {"App.App_Stable", false},
      // Unknown to the catalog: created after the load, or a schema it does not have.
      {"brand_new", true}, {"app.brand_new", true}, {"other.app_stable", true},
      {"pg_catalog.app_stable", true}, {"clock_timestamp", true},
      {"mydb.app.app_stable", false},      // catalog.schema.name: the database part is ignored
  };
  // clang-format on
  for (const CatalogCase& c : cases) {
    EXPECT_EQ(policy.RequiresPrimary(c.name), c.primary) << c.name;
  }
  EXPECT_EQ(policy.known_functions(), 15u);  // overloads share an entry; case variants fold
}

TEST(FunctionPolicyTest, AllowlistOverCatalogButNotOverTheWriteList) {
  FunctionPolicy policy;
  policy.SetCatalog(SampleCatalog());
  policy.SetAllowlist({"app_volatile", "B.Same_Name", "random", "nextval", "txid_current",
                       "not_yet_created"});
  EXPECT_FALSE(policy.RequiresPrimary("app_volatile"));
  EXPECT_FALSE(policy.RequiresPrimary("app.app_volatile"));
  EXPECT_FALSE(policy.RequiresPrimary("b.same_name"));
  EXPECT_TRUE(policy.RequiresPrimary("same_name"));  // only the qualified one is allowed
  EXPECT_FALSE(policy.RequiresPrimary("random"));
  EXPECT_FALSE(policy.RequiresPrimary("not_yet_created"));  // the operator vouches for it
  EXPECT_TRUE(policy.RequiresPrimary("nextval"));           // write list wins
  EXPECT_TRUE(policy.RequiresPrimary("pg_catalog.txid_current"));
  EXPECT_TRUE(policy.RequiresPrimary("overloaded"));  // not allowlisted
}

TEST(FunctionPolicyTest, ReloadReplacesTheCatalogAndSetVolatileKeepsUnknownOnReplicas) {
  FunctionPolicy policy;
  EXPECT_FALSE(policy.complete());
  EXPECT_FALSE(policy.RequiresPrimary("brand_new"));  // fallback: only known volatiles
  policy.SetCatalog(SampleCatalog());
  EXPECT_TRUE(policy.RequiresPrimary("brand_new"));
  EXPECT_TRUE(policy.RequiresPrimary("app_volatile"));
  // The next load: app_volatile became stable (CREATE OR REPLACE), brand_new exists now.
  std::vector<CatalogFunction> next;
  for (CatalogFunction f : SampleCatalog()) {
    if (f.name == "app_volatile") f.volatility = 's';
    next.push_back(f);
  }
  next.push_back({"brand_new", "public", 'i'});
  policy.SetCatalog(next);
  EXPECT_FALSE(policy.RequiresPrimary("app_volatile"));
  EXPECT_FALSE(policy.RequiresPrimary("brand_new"));
  EXPECT_TRUE(policy.RequiresPrimary("dropped_and_unknown"));
  // SetVolatile knows only the volatile ones: everything else may go to replicas.
  policy.SetVolatile({{"app_volatile", "app"}});
  EXPECT_FALSE(policy.complete());
  EXPECT_TRUE(policy.RequiresPrimary("app_volatile"));
  EXPECT_FALSE(policy.RequiresPrimary("brand_new"));
  EXPECT_FALSE(policy.RequiresPrimary("dropped_and_unknown"));
}

// End to end through the classifier and the router's intent: the whole statement goes to the
// primary when any function in it does.
TEST(FunctionPolicyTest, StatementsWithACatalogPolicy) {
  FunctionPolicy policy;
  policy.SetCatalog(SampleCatalog());
  struct StatementCase {
    const char* sql;
    Target target;
  };
  // clang-format off
  const StatementCase cases[] = {
      {"SELECT inet_server_port()", kRep},
      {"SELECT app_stable(1), lower('X'), now()", kRep},
      {"SELECT count(*) FROM t WHERE app.app_stable(c) > 0", kRep},
      {"SELECT extract(year FROM now())", kRep},
      {"SELECT app_volatile()", kPri},
      {"SELECT lower(app.app_volatile())", kPri},
      {"SELECT x FROM t WHERE id = (SELECT max_id FROM app_volatile())", kPri},
      {"SELECT brand_new()", kPri},
      {"SELECT 1 FROM t WHERE other.app_stable(c)", kPri},
      {"SELECT \"MixedCase\"()", kPri},
      {"SELECT 1; SELECT app_volatile()", kPri},
      {"SELECT 1", kRep},
  };
  // clang-format on
  for (const StatementCase& c : cases) {
    StatementClass got = Classify(c.sql);
    EXPECT_EQ(TargetName(TargetOf(got, policy)), std::string(TargetName(c.target))) << c.sql;
  }
  FunctionPolicy allowed = policy;
  allowed.SetAllowlist({"app_volatile", "brand_new"});
  EXPECT_EQ(TargetOf(Classify("SELECT app_volatile(), brand_new()"), allowed), kRep);
  EXPECT_EQ(TargetOf(Classify("SELECT app_volatile(), nextval('s')"), allowed), kPri);
}

}  // namespace
}  // namespace nerava::routing
