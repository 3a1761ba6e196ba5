"""PostgreSQL read/write splitting end to end (issue 5, DESIGN §4–§6): a real primary, a real
streaming replica, nerava-proxy ($NERAVA_PROXY_BIN) in front, real clients (psycopg, pgbench).

Where a statement ran is seen by the client itself: `inet_server_port()` is stable, so a read
that calls it may run on the replica and returns that server's port. The proxy's region is the
replica's (eu-west-1), so local reads prefer the replica.

    client ──▶ nerava-proxy ──┬──▶ pg-primary  (us-east-1)   writes, volatile functions, pins
                              └──▶ pg-replica1 (eu-west-1)   reads

Tests run in file order and share one topology and one proxy; each leaves the servers as it
found them (apply delay reset, replay resumed, stopped replica restarted). Every wait is bounded
(wait_until, connect/statement timeouts, subprocess timeouts, the per-test SIGALRM limit).
"""

from __future__ import annotations

import contextlib
import faulthandler
import random
import re
import signal
import statistics
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Iterator, Optional

import psycopg
import pytest
from psycopg import errors

from tests.harness.topology import APP_DB, APP_USER, Topology, wait_until
from conftest import start_proxy

LOCAL_REGION = "eu-west-1"  # the replica's region (conftest: primary us-east-1)
INTERVAL_S = 0.25           # monitor.interval
MONITOR = {"interval": f"{int(INTERVAL_S * 1000)}ms", "timeout": "240ms", "failure_threshold": 12}
APPLY_DELAY = "500ms"
STALE_ITERATIONS = 2000
THINK_ITERATIONS = 60
CMD_TIMEOUT = 90
ROLE = "split_reader"


# ------------------------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class Ports:
    primary: int
    replica: int

    def name(self, port) -> str:
        return {self.primary: "primary", self.replica: "replica"}.get(port, f"port {port!r}")


def connect(proxy, port: Optional[int] = None, **kwargs) -> psycopg.Connection:
    kwargs.setdefault("autocommit", True)
    return psycopg.connect(proxy.dsn(port=port), **kwargs)


def direct(topology, node=None, **kwargs) -> psycopg.Connection:
    pg = topology.pg
    kwargs.setdefault("autocommit", True)
    return psycopg.connect(pg.dsn(node or pg.primary, user=APP_USER, dbname=APP_DB,
                                  connect_timeout=10), **kwargs)


def last_row(conn: psycopg.Connection, sql: str, params=None, **kwargs):
    """The first row of the last result set (multi-statement strings return several)."""
    cur = conn.execute(sql, params, **kwargs)
    row = cur.fetchone() if cur.description is not None else None
    while cur.nextset():
        row = cur.fetchone() if cur.description is not None else None
    return row


def port_of(conn: psycopg.Connection, sql: str = "select inet_server_port()", params=None,
            **kwargs) -> int:
    """Where `sql` ran: its last column is inet_server_port()."""
    return last_row(conn, sql, params, **kwargs)[-1]


def wait_port(conn, want: int, ports: Ports, what: str, timeout: float = 5.0,
              sql: str = "select inet_server_port()") -> float:
    """Polls `sql` on conn until it runs on `want`; returns how long that took."""
    started = time.monotonic()
    seen: list = []

    def there() -> bool:
        seen.append(port_of(conn, sql))
        return seen[-1] == want

    try:
        wait_until(what, there, timeout=timeout, interval=0.05)
    except Exception as e:
        raise AssertionError(f"{what}: still on {ports.name(seen[-1] if seen else None)} "
                             f"after {timeout}s ({e})") from None
    return time.monotonic() - started


def replica_caught_up(topology, timeout: float = 30.0) -> None:
    """Waits until the replica has replayed everything the primary has written so far."""
    pg = topology.pg
    lsn = pg.sql(pg.primary, "select pg_current_wal_insert_lsn()::text")[0][0]
    wait_until("the replica to replay the primary's WAL",
               lambda: pg.sql(pg.replicas[0], "select pg_last_wal_replay_lsn() >= %s::pg_lsn",
                              (lsn,))[0][0], timeout=timeout, interval=0.05)


def scrape(proxy) -> list[tuple[str, dict, float]]:
    """/metrics as (name, labels, value) samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)", line)
        assert m, f"unreadable /metrics line {line!r}"
        labels = dict(re.findall(r'([A-Za-z_]\w*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def metric_sum(samples, name: str, **labels) -> float:
    return sum(v for n, lbl, v in samples
               if n == "nerava_proxy_" + name and all(lbl.get(k) == w for k, w in labels.items()))


def metric_value(samples, name: str, **labels) -> Optional[float]:
    found = [v for n, lbl, v in samples
             if n == "nerava_proxy_" + name and all(lbl.get(k) == w for k, w in labels.items())]
    return found[0] if found else None


def queries_by_node(samples) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for n, lbl, v in samples:
        if n == "nerava_proxy_queries_total" and lbl.get("protocol") == "postgres":
            key = (lbl.get("route", "?"), lbl.get("node", "?"))
            out[key] = out.get(key, 0.0) + v
    return out


def extend_time_limit(seconds: int) -> None:
    """Re-arms conftest's per-test SIGALRM (and its faulthandler backstop) for a long test."""
    if threading.current_thread() is threading.main_thread():
        signal.alarm(seconds)
        faulthandler.dump_traceback_later(seconds + 60, exit=True)


@contextlib.contextmanager
def steady_writes(topology, period: float = 0.02) -> Iterator[None]:
    """A thread inserting one row every `period` seconds directly on the primary."""
    stop = threading.Event()
    failures: list[BaseException] = []
    with direct(topology) as conn:
        conn.execute("create table if not exists split_writes"
                     "(id bigserial primary key, at timestamptz default clock_timestamp())")

        def run() -> None:
            try:
                while not stop.is_set():
                    conn.execute("insert into split_writes default values")
                    stop.wait(period)
            except BaseException as e:  # noqa: BLE001 - reported below
                failures.append(e)

        thread = threading.Thread(target=run, name="split-writes", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)
    assert not failures, f"the direct writer failed: {failures[0]!r}"


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    # Overrides conftest's: PostgreSQL only (Redis splitting has its own module).
    with Topology(pg_replicas=1, redis=False) as topo:
        yield topo


@pytest.fixture(scope="module")
def ports(topology) -> Ports:
    return Ports(primary=topology.pg.primary.port, replica=topology.pg.replicas[0].port)


@pytest.fixture(scope="module")
def schema(topology) -> None:
    """Objects the tests read, created directly on the primary and replayed by the replica."""
    with direct(topology) as conn:
        conn.execute("create table split_rows(id bigserial primary key, v text)")
        conn.execute("insert into split_rows(v) select 'row ' || g from generate_series(1, 10) g")
        conn.execute("create sequence split_seq")
        conn.execute(f"create role {ROLE} nologin")
        conn.execute("create table stale_rows(id bigserial primary key, v text not null)")
        # 25006 safety net: a STABLE function (so the proxy may send it to a replica) that
        # writes through a VOLATILE helper. (A STABLE *SQL* function containing INSERT is refused
        # with 0A000 on every server, so it cannot show the retry.)
        conn.execute("create table retry_rows(id bigserial primary key, tag text)")
        conn.execute("create function split_log_write(t text) returns int language plpgsql "
                     "volatile as $$ begin insert into retry_rows(tag) values (t); "
                     "return 1; end $$")
        conn.execute("create function split_stable_writer(t text) returns int language plpgsql "
                     "stable as $$ begin return split_log_write(t); end $$")
        # A user function marked volatile: DESIGN §4 sends it to the primary.
        conn.execute("create function split_volatile_port() returns int language sql volatile "
                     "as 'select inet_server_port()'")
        conn.execute("create table ro_rows(id int)")
    replica_caught_up(topology)


@pytest.fixture(scope="module")
def proxy(topology, schema, ports) -> Iterator:
    # MONITOR: with the defaults (a 200 ms check timeout, down after 3 failures) the nodes flap
    # down and up while pgbench saturates this machine's two cores, and reads go to the primary
    # for reasons this module does not test (test_monitor.py covers health).
    with start_proxy(topology, region=LOCAL_REGION, monitor=MONITOR) as p:
        # Best effort: let the monitor see the replica as up and caught up, so that the first
        # test does not measure the start-up. The tests assert on their own.
        with contextlib.suppress(Exception):
            with connect(p) as conn:
                wait_port(conn, ports.replica, ports, "the first read to reach the replica",
                          timeout=10)
        yield p


# ------------------------------------------------------------------------ where statements run


def test_plain_reads_run_on_the_replica(proxy, ports):
    with connect(proxy) as conn:
        seen = [port_of(conn) for _ in range(20)]
    assert all(p == ports.replica for p in seen), [ports.name(p) for p in seen]


def test_an_idle_session_outlives_its_replica_connection_being_terminated(proxy, topology, ports):
    # The replica connection is the proxy's, not the client's: its FATAL and close while the
    # session is idle must not reach the client (the idle session waits on that connection's
    # socket, to be woken by the next reply without a wake-up of its own).
    pg = topology.pg
    with connect(proxy) as conn:
        pid, port = conn.execute("select pg_backend_pid(), inet_server_port()").fetchone()
        assert port == ports.replica
        with direct(topology, pg.replicas[0]) as admin:
            assert admin.execute("select pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
            wait_until("the terminated backend to leave", lambda: admin.execute(
                "select count(*) from pg_stat_activity where pid = %s", (pid,)).fetchone() == (0,))
        time.sleep(0.2)  # the proxy reads the FATAL and the close while the session is idle
        assert port_of(conn) in (ports.replica, ports.primary)
        assert conn.execute("select 'still here'").fetchone() == ("still here",)


def test_pg_is_in_recovery_is_volatile_and_runs_on_the_primary(proxy):
    with connect(proxy) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (False,)
        assert conn.execute("select pg_is_in_recovery()", binary=True).fetchone() == (False,)


# (statement whose last result's last column is inet_server_port(), expected node)
ROUTES = [
    ("select inet_server_port()", "replica"),
    ("values (inet_server_port())", "replica"),
    ("select now(), inet_server_port()", "replica"),
    ("select count(*), inet_server_port() from split_rows", "replica"),
    ("select current_setting('search_path'), inet_server_port()", "replica"),
    ("select pg_is_in_recovery(), inet_server_port()", "primary"),
    ("select random(), inet_server_port()", "primary"),
    ("select clock_timestamp(), inet_server_port()", "primary"),
    ("select nextval('split_seq'), inet_server_port()", "primary"),
    ("select txid_current(), inet_server_port()", "primary"),
    ("select pg_current_xact_id()::text, inet_server_port()", "primary"),
    ("select set_config('application_name', 'split', true), inet_server_port()", "primary"),
    pytest.param("select split_volatile_port(), inet_server_port()", "primary",
                 id="user_volatile_function"),
    ("select inet_server_port() from split_rows where id = 1 for update", "primary"),
    ("select inet_server_port() from split_rows where id = 1 for share", "primary"),
    ("select inet_server_port() from split_rows where id = 1 for no key update", "primary"),
    ("with w as (insert into split_rows(v) values ('cte') returning id) "
     "select inet_server_port() from w", "primary"),
    ("with w as (update split_rows set v = v where id = 1 returning id) "
     "select inet_server_port() from w", "primary"),
    ("/* nerava:primary */ select inet_server_port()", "primary"),
    ("/* nerava:replica */ select inet_server_port()", "replica"),
    ("select inet_server_port() /* nerava:primary */", "primary"),
    ("/* nerava:replica */ select pg_is_in_recovery(), inet_server_port()", "replica"),
]
MULTI_ROUTES = [
    ("select 1; select inet_server_port()", "replica"),
    ("select nextval('split_seq'); select inet_server_port()", "primary"),
    ("insert into split_rows(v) values ('multi'); select inet_server_port()", "primary"),
]


def _route_id(value) -> Optional[str]:
    return re.sub(r"\W+", "_", value)[:60].strip("_") if value not in ("primary", "replica") \
        else None


@pytest.mark.parametrize("protocol", ["simple", "extended", "prepared"])
@pytest.mark.parametrize("sql,expected", ROUTES, ids=_route_id)
def test_statement_runs_where_design_says(proxy, ports, sql, expected, protocol):
    kwargs = {"simple": {}, "extended": {"binary": True},
              "prepared": {"binary": True, "prepare": True}}[protocol]
    with connect(proxy) as conn:
        for _ in range(2 if protocol == "prepared" else 1):  # prepared: the second run uses it
            got = port_of(conn, sql, **kwargs)
            assert ports.name(got) == expected, f"{sql!r} over the {protocol} protocol"


@pytest.mark.parametrize("sql,expected", MULTI_ROUTES, ids=_route_id)
def test_multi_statement_string_is_routed_as_a_whole(proxy, ports, sql, expected):
    with connect(proxy) as conn:
        assert ports.name(port_of(conn, sql)) == expected, sql


def test_extended_protocol_with_parameters_runs_on_the_replica(proxy, ports):
    sql = "select inet_server_port() where %s = 1"
    with connect(proxy) as conn:
        plain = [port_of(conn, sql, (1,)) for _ in range(5)]
        prepared = [port_of(conn, sql, (1,), prepare=True) for _ in range(5)]
        assert conn.execute(sql, (2,), prepare=True).fetchone() is None
    assert [ports.name(p) for p in plain + prepared] == ["replica"] * 10


def test_prepared_statement_follows_the_session_to_each_node(proxy, ports):
    """A named prepared statement is prepared lazily on whichever node runs it."""
    sql = "select %s::int + 1, inet_server_port()"
    with connect(proxy) as conn:
        for i in range(3):
            assert last_row(conn, sql, (i,), prepare=True) == (i + 1, ports.replica)
        conn.execute("SET nerava.route = 'primary'")
        for i in range(3):
            assert last_row(conn, sql, (i,), prepare=True) == (i + 1, ports.primary)
        conn.execute("SET nerava.route = 'auto'")
        assert last_row(conn, sql, (7,), prepare=True) == (8, ports.replica)


def test_begin_read_only_runs_on_the_replica(proxy, ports):
    with connect(proxy) as conn:
        conn.execute("BEGIN READ ONLY")
        first = port_of(conn)
        # The whole transaction stays on its backend, volatile functions included.
        in_recovery = conn.execute("select pg_is_in_recovery()").fetchone()[0]
        second = port_of(conn, "select inet_server_port() where %s", (True,))
        conn.execute("COMMIT")
        assert (ports.name(first), in_recovery, ports.name(second)) == ("replica", True, "replica")
    with connect(proxy) as conn:
        conn.execute("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        assert ports.name(port_of(conn)) == "replica"
        conn.execute("COMMIT")
    # psycopg's own read-only transactions (it sends BEGIN READ ONLY itself).
    with connect(proxy, autocommit=False) as conn:
        conn.read_only = True
        assert ports.name(port_of(conn)) == "replica"
        assert ports.name(port_of(conn, "select inet_server_port() where %s", (True,))) == \
            "replica"
        conn.commit()


def test_read_only_transaction_is_not_a_write(proxy, ports):
    """A READ ONLY transaction cannot write: its COMMIT must not send the session's next reads
    to the primary (read-your-writes has nothing to wait for)."""
    with connect(proxy) as conn:
        seen = []
        for _ in range(3):
            conn.execute("BEGIN READ ONLY")
            seen.append(port_of(conn))
            conn.execute("COMMIT")
            seen.append(port_of(conn))
        assert [ports.name(p) for p in seen] == ["replica"] * 6


def test_read_write_transaction_runs_on_the_primary(proxy, ports):
    with connect(proxy) as conn:
        conn.execute("BEGIN")
        first = port_of(conn)
        second = port_of(conn, "select inet_server_port() where %s", (True,))
        conn.execute("COMMIT")
        assert (ports.name(first), ports.name(second)) == ("primary", "primary")
        # Back in autocommit, reads return to the replica (after read-your-writes has seen the
        # replica pass the primary's position: the proxy cannot know that nothing was written).
        wait_port(conn, ports.replica, ports, "reads to return to the replica after COMMIT",
                  timeout=2)
    with connect(proxy, autocommit=False) as conn:  # psycopg sends BEGIN before the select
        assert ports.name(port_of(conn)) == "primary"
        conn.rollback()


def test_set_nerava_route_pins_and_auto_releases(proxy, ports):
    with connect(proxy) as conn:
        assert ports.name(port_of(conn)) == "replica"
        conn.execute("SET nerava.route = 'primary'")
        seen = [port_of(conn) for _ in range(5)]
        seen.append(port_of(conn, "select inet_server_port() where %s = 1", (1,)))
        assert [ports.name(p) for p in seen] == ["primary"] * 6
        conn.execute("SET nerava.route = 'auto'")
        assert ports.name(port_of(conn)) == "replica"


def test_local_region_preference_with_the_only_replica_elsewhere(topology, schema, ports):
    """region us-east-1 (the primary's): the only replica is remote, yet reads still go to it."""
    with start_proxy(topology, region="us-east-1", monitor=MONITOR) as p:
        with connect(p) as conn:
            wait_port(conn, ports.replica, ports, "a read through a us-east-1 proxy to reach "
                      "the eu-west-1 replica", timeout=10)
            assert [ports.name(port_of(conn)) for _ in range(5)] == ["replica"] * 5


# ------------------------------------------------------------------------ session state follows


def test_set_search_path_and_timezone_follow_reads_to_the_replica(proxy, ports):
    with connect(proxy) as conn:
        # The replica backend exists before the SETs: they must be applied to it.
        assert ports.name(port_of(conn)) == "replica"
        conn.execute("SET search_path = foo, public")
        conn.execute("SET TimeZone = 'Asia/Tokyo'")
        assert conn.execute("show search_path").fetchone() == ("foo, public",)
        assert conn.execute("show TimeZone").fetchone() == ("Asia/Tokyo",)
        assert last_row(conn, "select current_setting('search_path'), "
                        "current_setting('TimeZone'), inet_server_port()") == \
            ("foo, public", "Asia/Tokyo", ports.replica)
        assert last_row(conn, "/* nerava:primary */ select current_setting('search_path'), "
                        "current_setting('TimeZone'), inet_server_port()") == \
            ("foo, public", "Asia/Tokyo", ports.primary)
    with connect(proxy) as conn:
        # SET before any read: replayed on the replica backend opened later.
        conn.execute("SET search_path = bar, public")
        assert last_row(conn, "select current_setting('search_path'), inet_server_port()") == \
            ("bar, public", ports.replica)
        assert last_row(conn, "select current_setting('search_path'), inet_server_port() "
                        "where %s", (True,)) == ("bar, public", ports.replica)


ROLE_QUERY = ("select current_user::text, current_setting('search_path'), "
              "current_setting('TimeZone'), inet_server_port()")


def _wait_role_replicated(topology) -> None:
    pg = topology.pg
    wait_until(f"role {ROLE} on the replica", lambda: pg.sql(
        pg.replicas[0], "select count(*) from pg_roles where rolname = %s", (ROLE,))[0][0] == 1)


def test_set_role_follows_reads_and_reset_all_keeps_it(proxy, topology, ports):
    """SET ROLE runs on every backend. RESET ALL restores the other settings but, as in
    PostgreSQL (role is GUC_NO_RESET_ALL), not the role."""
    _wait_role_replicated(topology)
    with connect(proxy) as conn:
        before = last_row(conn, ROLE_QUERY)
        assert before[0] == APP_USER and before[-1] == ports.replica
        conn.execute(f"SET ROLE {ROLE}")
        conn.execute("SET search_path = foo, public")
        conn.execute("SET TimeZone = 'America/Lima'")
        changed = (ROLE, "foo, public", "America/Lima")
        assert last_row(conn, ROLE_QUERY) == changed + (ports.replica,)
        assert last_row(conn, "/* nerava:primary */ " + ROLE_QUERY) == changed + (ports.primary,)
        conn.execute("RESET ALL")
        after_reset_all = (ROLE,) + before[1:-1]
        assert last_row(conn, ROLE_QUERY) == after_reset_all + (ports.replica,)
        assert last_row(conn, "/* nerava:primary */ " + ROLE_QUERY) == \
            after_reset_all + (ports.primary,)


@pytest.mark.parametrize("undo", ["RESET ROLE", "SET ROLE NONE", "DISCARD ALL"])
def test_undoing_set_role_reaches_every_backend(proxy, topology, ports, undo):
    """The replica backend has run SET ROLE (a read after it); the undo must reach it too,
    or the session's replica reads keep running as the role it left."""
    _wait_role_replicated(topology)
    with connect(proxy) as conn:
        before = last_row(conn, ROLE_QUERY)
        conn.execute(f"SET ROLE {ROLE}")
        assert last_row(conn, ROLE_QUERY)[0::3] == (ROLE, ports.replica)
        assert last_row(conn, "/* nerava:primary */ " + ROLE_QUERY)[0::3] == (ROLE, ports.primary)
        conn.execute(undo)
        wait_port(conn, ports.replica, ports, f"reads to return to the replica after {undo}",
                  timeout=3)
        on_replica = last_row(conn, ROLE_QUERY)
        on_primary = last_row(conn, "/* nerava:primary */ " + ROLE_QUERY)
    assert on_primary[:-1] == before[:-1], on_primary
    assert on_replica == before, f"after SET ROLE; {undo}: primary {on_primary[:-1]}, " \
        f"replica {on_replica[:-1]}"


@pytest.mark.parametrize("statement", ["SET ROLE " + ROLE,
                                       "SET SESSION AUTHORIZATION " + ROLE])
def test_reset_all_keeps_the_role_on_a_backend_opened_later(proxy, topology, ports, statement):
    """The replica backend is first used after RESET ALL: the state replayed on it must be the
    session's state, which in PostgreSQL still has the role (RESET ALL does not reset role or
    session_authorization). Otherwise reads on the replica run as the login role."""
    _wait_role_replicated(topology)
    with connect(proxy) as conn:
        conn.execute(statement)
        conn.execute("SET search_path = foo, public")
        conn.execute("RESET ALL")
        on_primary = last_row(conn, "/* nerava:primary */ " + ROLE_QUERY)
        on_replica = last_row(conn, ROLE_QUERY)
    assert on_primary[0] == ROLE, on_primary  # PostgreSQL's own behaviour
    assert on_replica[-1] == ports.replica
    assert on_replica[:-1] == on_primary[:-1], \
        f"after {statement}; RESET ALL: primary {on_primary[:-1]}, replica {on_replica[:-1]}"


# ------------------------------------------------------------------------------------- pins


def _stays_on_primary(conn, ports, why: str) -> None:
    # Longer than read-your-writes needs (a monitor sample after the write, replayed by an idle
    # replica), so a primary answer here is the pin, not the write.
    time.sleep(4 * INTERVAL_S + 0.5)
    seen = [port_of(conn) for _ in range(3)]
    assert [ports.name(p) for p in seen] == ["primary"] * 3, why


def test_temp_table_pins_to_the_primary_until_discard_all(proxy, ports):
    with connect(proxy) as conn:
        assert ports.name(port_of(conn)) == "replica"
        conn.execute("CREATE TEMP TABLE t(x int)")
        conn.execute("insert into t values (1), (2)")
        assert conn.execute("select x from t order by x").fetchall() == [(1,), (2,)]
        assert conn.execute("select sum(x) from t where x > %s", (0,)).fetchone() == (3,)
        _stays_on_primary(conn, ports, "a session with a temp table")
        conn.execute("DISCARD ALL")
        wait_port(conn, ports.replica, ports, "reads to return to the replica after DISCARD ALL",
                  timeout=3)
        with pytest.raises(errors.UndefinedTable):
            conn.execute("/* nerava:primary */ select * from t")


def test_listen_pins_to_the_primary_until_discard_all(proxy, ports):
    with connect(proxy) as conn:
        assert ports.name(port_of(conn)) == "replica"
        conn.execute("LISTEN split_channel")
        _stays_on_primary(conn, ports, "a session with LISTEN active")
        conn.execute("DISCARD ALL")
        wait_port(conn, ports.replica, ports, "reads to return to the replica after DISCARD ALL",
                  timeout=3)


def test_session_set_config_pins_to_the_primary(proxy, ports):
    with connect(proxy) as conn:
        assert last_row(conn, "select set_config('search_path', 'baz, public', false), "
                        "inet_server_port()") == ("baz, public", ports.primary)
        # The proxy cannot replay set_config on other backends: the session stays on the primary.
        _stays_on_primary(conn, ports, "a session that called set_config(..., false)")
        assert conn.execute("show search_path").fetchone() == ("baz, public",)


# ---------------------------------------------------------------------- read-your-writes, lag


def _visible_after(topology, table: str = "stale_rows", timeout: float = 10.0) -> float:
    """Seconds between a commit on the primary and the row appearing on the replica."""
    with direct(topology) as w, direct(topology, topology.pg.replicas[0]) as r:
        row_id = w.execute(f"insert into {table}(v) values ('probe') returning id").fetchone()[0]
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if r.execute(f"select 1 from {table} where id = %s", (row_id,)).fetchone():
                return time.monotonic() - started
            time.sleep(0.005)
    return timeout


@contextlib.contextmanager
def delayed_replica(topology, delay: str = APPLY_DELAY) -> Iterator[float]:
    """recovery_min_apply_delay on the replica; yields a measured commit→visible delay."""
    pg = topology.pg
    replica = pg.replicas[0]
    pg.set_replica_conf(replica, "recovery_min_apply_delay", delay)
    try:
        measured: list[float] = []

        def lagging() -> bool:
            measured.append(_visible_after(topology))
            return measured[-1] > 0.3

        wait_until(f"rows to take > 300 ms to reach the replica (apply delay {delay})", lagging,
                   timeout=20, interval=0.1)
        yield measured[-1]
    finally:
        pg.set_replica_conf(replica, "recovery_min_apply_delay", "0")
        wait_until("the apply delay to go away", lambda: _visible_after(topology, timeout=2) < 0.3,
                   timeout=20, interval=0.1)


def _reader(proxy, ports, stop: threading.Event, counts: dict, failures: list) -> None:
    """A session that never writes: reads inet_server_port() until stopped."""
    try:
        with connect(proxy) as conn:
            while not stop.is_set():
                name = ports.name(port_of(conn))
                counts[name] = counts.get(name, 0) + 1
                stop.wait(0.005)
    except BaseException as e:  # noqa: BLE001 - reported by the test
        failures.append(e)


def test_stale_read_0_misses_with_a_delayed_replica(proxy, topology, ports):
    extend_time_limit(300)
    with delayed_replica(topology) as measured_delay:
        before = scrape(proxy)
        counts: dict[str, int] = {}
        failures: list[BaseException] = []
        stop = threading.Event()
        reader = threading.Thread(target=_reader, args=(proxy, ports, stop, counts, failures),
                                  daemon=True)
        misses: list[int] = []
        took: list[float] = []
        reader.start()
        started = time.monotonic()
        try:
            with connect(proxy) as conn:
                for i in range(STALE_ITERATIONS):
                    t0 = time.monotonic()
                    if i % 2:  # extended protocol
                        row_id = conn.execute("insert into stale_rows(v) values (%s) returning id",
                                              (f"v{i}",)).fetchone()[0]
                        row = conn.execute("select v from stale_rows where id = %s",
                                           (row_id,)).fetchone()
                    else:  # simple protocol
                        row_id = conn.execute(f"insert into stale_rows(v) values ('v{i}') "
                                              "returning id").fetchone()[0]
                        row = conn.execute(f"select v from stale_rows where id = {row_id}"
                                           ).fetchone()
                    took.append(time.monotonic() - t0)
                    if row != (f"v{i}",):
                        misses.append(i)
        finally:
            stop.set()
            reader.join(timeout=10)
        elapsed = time.monotonic() - started
        after = scrape(proxy)
    avoided = (metric_sum(after, "stale_read_avoided_total")
               - metric_sum(before, "stale_read_avoided_total"))
    reads = sum(counts.values())
    share = counts.get("replica", 0) / reads if reads else 0.0
    took_ms = sorted(t * 1000 for t in took)
    print(f"\nstale-read: {STALE_ITERATIONS} INSERT+SELECT pairs through the proxy with "
          f"recovery_min_apply_delay={APPLY_DELAY} (measured commit->visible on the replica "
          f"{measured_delay * 1000:.0f} ms): misses {len(misses)}, {elapsed:.1f} s total, "
          f"pair mean {statistics.mean(took_ms):.2f} ms, p50 {took_ms[len(took_ms) // 2]:.2f} "
          f"ms, p99 {took_ms[int(len(took_ms) * 0.99)]:.2f} ms, max {took_ms[-1]:.2f} ms; "
          f"stale_read_avoided_total +{avoided:.0f}")
    print(f"non-writing session: {reads} reads, {counts} -> replica share {share:.1%}")
    assert not failures, f"the non-writing reader failed: {failures[0]!r}"
    assert not misses, f"{len(misses)} reads missed the row just written (first: {misses[:10]})"
    assert reads >= 50, counts
    assert share >= 0.90, counts


def test_stale_read_avoided_is_counted(proxy, topology):
    """Issue 5, metrics: a read sent to the primary because the replica has not replayed the
    session's write counts in stale_read_avoided_total."""
    with delayed_replica(topology):
        before = metric_sum(scrape(proxy), "stale_read_avoided_total")
        with connect(proxy) as conn:
            for i in range(5):
                row_id = conn.execute("insert into stale_rows(v) values (%s) returning id",
                                      (f"m{i}",)).fetchone()[0]
                assert conn.execute("select v from stale_rows where id = %s",
                                    (row_id,)).fetchone() == (f"m{i}",)
        after = metric_sum(scrape(proxy), "stale_read_avoided_total")
    assert after - before >= 5, (before, after)


@pytest.mark.parametrize("synchronous_commit", ["on", "off"])
def test_read_your_writes_after_think_time(proxy, topology, ports, synchronous_commit):
    """Reads 0–0.9 s after the write: some land while the replica is still behind the write,
    others after it has replayed it (the watermark must tell them apart). The harness runs the
    primary with synchronous_commit = off, as some production sites do: a commit is then
    acknowledged before its WAL is written, and pg_current_wal_lsn() (the write position) stays
    behind it for up to wal_writer_delay; `on` is set per session through the proxy."""
    extend_time_limit(200)
    rng = random.Random(5)
    with delayed_replica(topology):
        misses, on_replica = [], 0
        with connect(proxy) as conn:
            conn.execute(f"SET synchronous_commit = {synchronous_commit}")
            for i in range(THINK_ITERATIONS):
                row_id = conn.execute("insert into stale_rows(v) values (%s) returning id",
                                      (f"t{i}",)).fetchone()[0]
                t_write = time.monotonic()
                time.sleep(rng.uniform(0.0, 0.9))
                waited = time.monotonic() - t_write
                # Always one row, so that a miss still says where it ran.
                v, port = last_row(conn, "select (select v from stale_rows where id = %s), "
                                   "inet_server_port()", (row_id,))
                if v != f"t{i}":
                    misses.append((i, f"{waited * 1000:.0f} ms", ports.name(port)))
                elif port == ports.replica:
                    on_replica += 1
    print(f"\nthink-time read-your-writes, synchronous_commit={synchronous_commit}: "
          f"{THINK_ITERATIONS} pairs, misses {len(misses)} "
          f"(iteration, time since the write was acknowledged, node): {misses}; "
          f"{on_replica} reads served by the replica once it had replayed the write")
    assert not misses, f"{len(misses)} stale reads: {misses}"


def test_lag_over_max_lag_bans_the_replica_and_resume_restores(topology, schema, ports):
    pg = topology.pg
    replica = pg.replicas[0]
    extend_time_limit(180)
    with start_proxy(topology, region=LOCAL_REGION, postgres={"max_lag": {"seconds": "1s"}},
                     monitor=MONITOR) as p, \
            steady_writes(topology), connect(p) as conn:
        wait_port(conn, ports.replica, ports, "reads to reach the replica under steady writes",
                  timeout=15)
        paused = False
        try:
            pg.sql(replica, "select pg_wal_replay_pause()")
            paused = True
            t_pause = time.monotonic()
            timeline = []  # (seconds since pause, where the read ran, lag from /metrics)
            switched = None
            while time.monotonic() - t_pause < 10:
                where = ports.name(port_of(conn))
                lag = metric_value(scrape(p), "replica_lag_seconds", protocol="postgres",
                                   node=replica.name)
                timeline.append((round(time.monotonic() - t_pause, 2), where, lag))
                if where == "primary":
                    switched = time.monotonic() - t_pause
                    break
                time.sleep(0.05)
            print(f"\nlag ban (max_lag 1 s, interval {INTERVAL_S}s): reads moved to the primary "
                  f"{switched if switched is None else round(switched, 2)} s after the pause; "
                  f"timeline tail {timeline[-6:]}")
            assert switched is not None, f"reads never left the paused replica: {timeline[-10:]}"
            # The lag passes 1 s about 1 s after the pause; allow two monitor intervals after
            # that, plus one for the polling granularity here.
            assert switched <= 1.0 + 3 * INTERVAL_S + 0.2, timeline
            assert switched >= 0.5, f"moved before the lag could exceed 1 s: {timeline}"
            time.sleep(1.0)
            assert [ports.name(port_of(conn)) for _ in range(5)] == ["primary"] * 5
        finally:
            if paused:
                pg.sql(replica, "select pg_wal_replay_resume()")
        t_resume = time.monotonic()
        back = wait_port(conn, ports.replica, ports, "reads to return to the replica after "
                         "pg_wal_replay_resume()", timeout=15)
        print(f"after resume: back on the replica in {back:.2f} s "
              f"({time.monotonic() - t_resume:.2f} s)")


# ---------------------------------------------------------------------------------- pgbench -S


def _db_stat(topology, column: str = "xact_commit") -> dict[str, int]:
    """A pg_stat_database counter of database nerava on each node (the monitor logs in to
    `postgres`, so the counts are the clients' own)."""
    pg = topology.pg
    return {name: pg.sql(node, f"select {column} from pg_stat_database where datname = %s",
                         (APP_DB,))[0][0]
            for name, node in (("primary", pg.primary), ("replica", pg.replicas[0]))}


def _settled_stat(topology, column: str = "xact_commit") -> dict[str, int]:
    # Backends flush their statistics when they exit or go idle (at most ~1 s later).
    last = _db_stat(topology, column)
    for _ in range(10):
        time.sleep(0.6)
        now = _db_stat(topology, column)
        if now == last:
            return now
        last = now
    return last


@pytest.fixture(scope="module")
def pgbench_initialized(proxy, topology):
    res = subprocess.run(["pgbench", "-i", "-s", "1"], env=proxy.pg_env(), capture_output=True,
                         text=True, timeout=180)
    assert res.returncode == 0, f"pgbench -i through the proxy failed:\n{res.stderr}"
    replica_caught_up(topology)
    return res


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_select_only_runs_on_the_replica(proxy, topology, pgbench_initialized, mode):
    before, metrics_before = _settled_stat(topology), queries_by_node(scrape(proxy))
    res = subprocess.run(["pgbench", "-S", "-M", mode, "-c", "4", "-j", "2", "-T", "5"],
                         env=proxy.pg_env(), capture_output=True, text=True, timeout=CMD_TIMEOUT)
    out = res.stdout + res.stderr
    after, metrics_after = _settled_stat(topology), queries_by_node(scrape(proxy))
    assert res.returncode == 0, f"pgbench -S -M {mode} exited {res.returncode}:\n{out}"
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    tps = re.search(r"tps = ([\d.]+)", out)
    assert processed and failed, f"unexpected pgbench output:\n{out}"
    delta = {k: after[k] - before[k] for k in after}
    total = sum(delta.values())
    share = delta["replica"] / total if total else 0.0
    by_node = {k: metrics_after.get(k, 0) - metrics_before.get(k, 0) for k in metrics_after}
    by_node = {k: v for k, v in by_node.items() if v}
    m_total = sum(by_node.values())
    m_share = (sum(v for (route, _), v in by_node.items() if route == "replica") / m_total
               if m_total else 0.0)
    print(f"\npgbench -S -M {mode} -c 4 -j 2 -T 5: {processed.group(1)} transactions, "
          f"{failed.group(1)} failed, tps {tps.group(1) if tps else '?'}; xact_commit deltas "
          f"{delta} -> replica share {share:.2%}; queries_total deltas {by_node} -> "
          f"route=replica share {m_share:.2%}")
    assert int(failed.group(1)) == 0, out
    assert int(processed.group(1)) > 0, out
    # Once fell to 85 % when 200 ms monitor checks timed out under this load and the replica
    # was marked down; checks now get at least 1 s.
    assert share >= 0.95, f"only {share:.2%} of the transactions ran on the replica: {delta}"


# ------------------------------------------------------------------------- 25006 safety net


def test_25006_on_the_replica_is_retried_on_the_primary(proxy, topology, ports):
    pg = topology.pg
    wait_until("split_stable_writer on the replica", lambda: pg.sql(
        pg.replicas[0], "select count(*) from pg_proc where proname = 'split_stable_writer'",
        dbname=APP_DB)[0][0] == 1)
    # Precondition: the replica refuses it with 25006 (the primary runs it).
    with direct(topology, pg.replicas[0]) as r:
        with pytest.raises(errors.ReadOnlySqlTransaction):
            r.execute("select split_stable_writer('direct')")
    rollbacks_before = _settled_stat(topology, "xact_rollback")
    with connect(proxy) as conn:
        # A fresh session that never wrote: a stable function goes to the replica, fails there
        # with 25006 before any row reached the client, and is retried once on the primary.
        assert conn.execute("select split_stable_writer('simple')").fetchone() == (1,)
    with connect(proxy) as conn:
        assert conn.execute("select split_stable_writer(%s)", ("extended",)).fetchone() == (1,)
    rollbacks = {k: v - rollbacks_before[k]
                 for k, v in _settled_stat(topology, "xact_rollback").items()}
    print(f"\n25006 retry: xact_rollback deltas {rollbacks} (the replica's are the refusals)")
    rows = pg.sql(pg.primary, "select tag, count(*) from retry_rows group by tag order by tag",
                  dbname=APP_DB)
    assert rows == [("extended", 1), ("simple", 1)], rows
    # Both statements were tried on the replica first (else this test proves nothing).
    assert rollbacks["replica"] == 2, rollbacks


# ------------------------------------------------------------------- the read-only listener


def _ro_insert_refused(proxy, sql: str = "insert into ro_rows values (1)") -> str:
    with connect(proxy, port=proxy.pg_ro_port) as conn:
        with pytest.raises(psycopg.Error) as info:
            conn.execute(sql)
        return info.value.sqlstate


# Ways a client could try to make a read-only connection write: each is a list of statements
# sent one by one on a fresh connection to the read-only listener; {n} is a unique value.
RO_TRICKS = [
    ["insert into ro_rows values ({n})"],
    ["select nextval('split_seq')"],
    ["begin read write", "insert into ro_rows values ({n})", "commit"],
    ["start transaction read write", "insert into ro_rows values ({n})", "commit"],
    ["begin", "set transaction read write", "insert into ro_rows values ({n})", "commit"],
    ["set default_transaction_read_only = off", "insert into ro_rows values ({n})"],
    ["set session characteristics as transaction read write",
     "insert into ro_rows values ({n})"],
    ["/* nerava:primary */ insert into ro_rows values ({n})"],
    ["SET nerava.route = 'primary'", "begin read write", "insert into ro_rows values ({n})",
     "commit"],
]


def _try_ro_tricks(proxy, topology, first: int) -> dict[str, str]:
    """{trick: SQLSTATE of the refusal, or 'WROTE'} and no row may reach the primary."""
    outcome = {}
    for i, trick in enumerate(RO_TRICKS):
        statements = [st.format(n=first + i) for st in trick]
        with connect(proxy, port=proxy.pg_ro_port) as conn:
            try:
                for st in statements:
                    conn.execute(st)
                outcome["; ".join(statements)] = "WROTE"
            except psycopg.Error as e:
                outcome["; ".join(statements)] = e.sqlstate or type(e).__name__
    return outcome


def _ro_rows(topology, first: int) -> list:
    return [r[0] for r in topology.pg.sql(
        topology.pg.primary, "select id from ro_rows where id between %s and %s order by id",
        (first, first + 99), dbname=APP_DB)]


def test_read_only_listener_refuses_writes_and_reads_on_the_replica(proxy, topology, ports):
    with connect(proxy, port=proxy.pg_ro_port) as conn:
        assert [ports.name(port_of(conn)) for _ in range(3)] == ["replica"] * 3
        assert ports.name(port_of(conn, "select inet_server_port() where %s = 1", (1,))) == \
            "replica"
        assert conn.execute("select count(*) from split_rows where id <= 10").fetchone() == (10,)
    outcome = _try_ro_tricks(proxy, topology, first=100)
    rows = _ro_rows(topology, 100)
    print(f"\nro listener, replica up: {outcome}; rows written: {rows}")
    assert not rows, f"the read-only listener wrote {rows}: {outcome}"
    assert "WROTE" not in outcome.values(), outcome
    # A plain write gets 25006; a tricked one may be refused earlier (0A000: a standby cannot
    # start a read-write transaction).
    assert list(outcome.values())[:2] == ["25006", "25006"], outcome


def test_read_only_listener_falls_back_to_a_read_only_primary(proxy, topology, ports):
    """Last in the module: stops the replica (and restarts it)."""
    pg = topology.pg
    replica = pg.replicas[0]
    pg.stop(replica)
    try:
        with connect(proxy, port=proxy.pg_ro_port) as conn:
            wait_port(conn, ports.primary, ports, "ro reads to fall back to the primary",
                      timeout=10)
            assert conn.execute("select pg_is_in_recovery()").fetchone() == (False,)
            assert conn.execute("select count(*) from split_rows where id <= 10").fetchone() == \
                (10,)
        assert _ro_insert_refused(proxy) == "25006"
        # Nor can a client talk the fallback primary into writing.
        outcome = _try_ro_tricks(proxy, topology, first=200)
        # The read-write listener's reads fall back to the primary as well.
        with connect(proxy) as conn:
            wait_port(conn, ports.primary, ports, "rw reads to fall back to the primary",
                      timeout=10)
    finally:
        pg.start(replica)
        pg.wait_streaming([replica])
    rows = _ro_rows(topology, 200)
    print(f"\nro listener on the primary: {outcome}; rows written: {rows}")
    with connect(proxy, port=proxy.pg_ro_port) as conn:
        wait_port(conn, ports.replica, ports, "ro reads to return to the restarted replica",
                  timeout=15)
    assert not rows, f"the read-only listener wrote {rows} on the primary: {outcome}"
    assert "WROTE" not in outcome.values(), outcome
    assert list(outcome.values())[:2] == ["25006", "25006"], outcome


# ------------------------------------------------------------- function volatility from pg_proc
# The proxy reads pg_proc of the primary at start, every 10 s and when the primary changes:
# VOLATILE functions run on the primary unless allowlisted, STABLE/IMMUTABLE ones may run on a
# replica, and a name the last load did not know runs on the primary.

RELOAD_WAIT_S = 15.0  # a bound on "the next pg_proc reload" (every 10 s) plus slack


def _create_port_function(topology, name: str, volatility: str) -> None:
    """A SQL function returning the port of the server that runs it, replayed by the replica."""
    with direct(topology) as conn:
        conn.execute(f"create or replace function {name}() returns int language sql "
                     f"{volatility} as 'select inet_server_port()'")
    replica_caught_up(topology)


def _where(conn, ports: Ports, sql: str, times: int = 5) -> list[str]:
    out = []
    for kwargs in ({}, {"binary": True}, {"binary": True, "prepare": True}):
        out += [ports.name(port_of(conn, sql, **kwargs)) for _ in range(times)]
    return out


def test_user_volatile_function_from_pg_proc_runs_on_the_primary(proxy, ports):
    """split_volatile_port (schema fixture) is VOLATILE in pg_proc; the built-in list does not
    know it, so it reaches the primary only once the loader has read pg_proc."""
    sql = "select split_volatile_port()"
    with connect(proxy) as conn:
        wait_port(conn, ports.primary, ports, "a user VOLATILE function to run on the primary",
                  timeout=RELOAD_WAIT_S, sql=sql)
        assert _where(conn, ports, sql) == ["primary"] * 15
        # Plain reads of the same session still reach the replica.
        wait_port(conn, ports.replica, ports, "a plain read after the volatile calls to reach "
                  "the replica", timeout=5)


def test_function_created_a_moment_ago_runs_on_the_primary(proxy, topology, ports):
    """A STABLE function created after the last pg_proc load is unknown, hence the primary. A
    reload may land between CREATE and the call (a few ms of a 10 s period): three fresh names
    make that race negligible, while a proxy that sends unknown names to a replica fails all."""
    seen = []
    for attempt in range(3):
        name = f"split_fresh_port_{attempt}"
        _create_port_function(topology, name, "stable")
        with connect(proxy) as conn:
            seen.append(ports.name(port_of(conn, f"select {name}()")))
        if seen[-1] == "primary":
            break
    assert "primary" in seen, f"functions unknown to the last load ran on {seen}"


def test_user_stable_function_runs_on_the_replica_once_reloaded(proxy, topology, ports):
    name = "split_stable_port"
    _create_port_function(topology, name, "stable")
    sql = f"select lower('X'), now(), {name}()"  # with built-in stable/immutable ones
    with connect(proxy) as conn:
        took = wait_port(conn, ports.replica, ports, f"{name}() to reach the replica after a "
                         "pg_proc reload", timeout=RELOAD_WAIT_S, sql=f"select {name}()")
        print(f"\n{name}() on the replica {took:.2f} s after CREATE FUNCTION")
        assert _where(conn, ports, f"select {name}()") == ["replica"] * 15
        assert _where(conn, ports, sql) == ["replica"] * 15
        # Volatile next to it: the whole statement goes to the primary.
        assert _where(conn, ports, f"select {name}(), split_volatile_port(), "
                      "inet_server_port()") == ["primary"] * 15


def test_allowlisted_volatile_function_runs_on_the_replica(topology, schema, ports):
    control = "split_volatile_control"  # VOLATILE, not allowlisted: shows pg_proc was loaded
    _create_port_function(topology, control, "volatile")
    allow = ["split_volatile_port", "txid_current"]
    with start_proxy(topology, region=LOCAL_REGION, monitor=MONITOR,
                     postgres={"volatile_allowlist": allow}) as p, connect(p) as conn:
        wait_port(conn, ports.primary, ports, f"{control}() to run on the primary once pg_proc "
                  "is loaded", timeout=RELOAD_WAIT_S, sql=f"select {control}()")
        wait_port(conn, ports.replica, ports, "the allowlisted VOLATILE split_volatile_port() "
                  "to run on the replica", timeout=10, sql="select split_volatile_port()")
        assert _where(conn, ports, "select split_volatile_port()") == ["replica"] * 15
        assert _where(conn, ports, f"select {control}()") == ["primary"] * 15
        # The built-in write list wins over the allowlist: a standby cannot assign an xid.
        assert _where(conn, ports, "select txid_current(), inet_server_port()") == \
            ["primary"] * 15
