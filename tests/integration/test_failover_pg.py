"""PostgreSQL failover and planned switchover through nerava-proxy (issue 6, DESIGN §7), against
real servers under load:

    clients ──▶ nerava-proxy ──▶ pg-primary (us-east-1) ──WAL──▶ pg-replica1 (eu-west-1)
                     ▲
    nerava-proxyctl switch-primary / pause / resume (admin socket)

  planned     switch-primary pg-replica1 --promote during pgbench TPC-B: 0 failed transactions,
              every counted transaction on the new primary, writes held < 2 s
  unplanned   the primary crashes (pg_ctl stop -m immediate) or becomes unreachable (SIGSTOP: no
              reset, nothing answers) under INSERT load, promote after 3 s: writes resume within
              1 s of the promotion on the same client connections; the in-flight statement's
              error is retryable (08xxx / 40001 naming the failover, or 25006)
  split brain the old primary restarted un-demoted after the promotion receives no writes
  pause       pause writes holds a write while reads flow; resume releases it; bad targets fail
  region      switch-primary eu-west-1 moves both protocols; failback with us-east-1

Failover tests change roles, so each gets a fresh topology and proxy. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import psycopg
import pytest

from tests.harness.topology import APP_DB, Topology, wait_until
from admin_helpers import ctl, ctl_ok, metric, metric_values, metrics
from conftest import start_proxy
from node_failures import HOW, MONITOR_FOR, failing, flap, resume

WRITES_HELD_LIMIT_MS = 2000.0
RESUME_LIMIT_S = 1.0
PRIMARY, REPLICA = "pg-primary", "pg-replica1"


# ---------------------------------------------------------------------------------- helpers


def switch_primary(proxy, target: str, *flags: str) -> list[dict]:
    """switch-primary TARGET FLAGS --json → the list of per-protocol reports."""
    out = ctl_ok(proxy, "switch-primary", target, *flags, "--json")
    doc = json.loads(out)
    assert isinstance(doc, list) and doc, f"expected a non-empty JSON list, got {out!r}"
    return doc


def report_for(reports: list[dict], protocol: str) -> dict:
    found = [r for r in reports if r.get("protocol") == protocol]
    assert len(found) == 1, f"one {protocol} report expected in {reports}"
    return found[0]


def primaries_in_metrics(proxy, protocol_nodes: set[str]) -> set[str]:
    """Nodes (of protocol_nodes) that nerava_proxy_primary_info reports with value 1."""
    return {lbl.get("node") for lbl, v in metrics(proxy).get("nerava_proxy_primary_info", [])
            if v == 1 and lbl.get("node") in protocol_nodes}


def wait_primary_metric(proxy, node: str, nodes: set[str], timeout: float = 10.0) -> None:
    wait_until(f"/metrics primary_info to name only {node}",
               lambda: primaries_in_metrics(proxy, nodes) == {node}, timeout=timeout,
               interval=0.1)


def status_primary(proxy, protocol: str) -> Optional[str]:
    """The current primary that `status --json` reports for protocol: an explicit per-protocol
    entry if the document has one ({"primaries": {proto: node}}, {proto: {"primary": node}} or
    {"protocol": proto, "primary": "node"}), else the one node entry of that protocol flagged
    "primary": true (the monitor's "role" is what the node says, and in a split brain two
    say primary)."""
    doc = json.loads(ctl_ok(proxy, "status", "--json"))
    explicit: list[str] = []
    flagged: list[str] = []

    def name_of(v):
        return (v.get("node") or v.get("name")) if isinstance(v, dict) else v

    def walk(x):
        if isinstance(x, dict):
            if isinstance(x.get("primaries"), dict) and protocol in x["primaries"]:
                explicit.append(name_of(x["primaries"][protocol]))
            if isinstance(x.get(protocol), dict) and "primary" in x[protocol]:
                explicit.append(name_of(x[protocol]["primary"]))
            if x.get("protocol") == protocol and isinstance(x.get("primary"), (str, dict)):
                explicit.append(name_of(x["primary"]))
            if x.get("protocol") == protocol and "node" in x and x.get("primary") is True:
                flagged.append(x["node"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    found = explicit or flagged
    assert len(set(found)) == 1, f"status --json does not name one {protocol} primary: {doc}"
    return found[0]


def monitor_view(proxy, protocol: str, node: str) -> tuple[Optional[str], Optional[bool]]:
    """(role, up) of a node as `status --json` shows it."""
    doc = json.loads(ctl_ok(proxy, "status", "--json"))
    for n in doc.get("nodes", []):
        if n.get("protocol") == protocol and n.get("node") == node:
            return n.get("role"), n.get("up")
    return None, None


def is_primary(pg, node) -> bool:
    return pg.sql(node, "select pg_is_in_recovery()")[0][0] is False


def count(pg, node, table: str, where: str = "true") -> int:
    return pg.sql(node, f"select count(*) from {table} where {where}", dbname=APP_DB)[0][0]


@pytest.fixture
def pg_topology() -> Iterator[Topology]:
    """A fresh PostgreSQL primary + replica (no Redis) for one test that changes roles."""
    with Topology(pg_replicas=1, redis=False) as topo:
        yield topo


class InsertLoad:
    """`clients` threads, each on ONE autocommit connection through the proxy opened up front,
    inserting (client, seq) rows in a loop. Records when each insert was acknowledged and
    every error with its SQLSTATE; a thread whose connection dies stops and records that."""

    def __init__(self, proxy, table: str, clients: int = 4, pause: float = 0.01):
        self.table = table
        self.pause = pause
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: list[tuple[float, int, int]] = []        # (monotonic, client, seq)
        self.errors: list[tuple[float, int, Optional[str], str]] = []  # (t, client, state, msg)
        self.dead: list[tuple[int, str]] = []
        self.conns = [psycopg.connect(proxy.dsn(), autocommit=True) for _ in range(clients)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                         name=f"insert-load-{i}") for i in range(clients)]

    def __enter__(self) -> "InsertLoad":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)
        for c in self.conns:
            with contextlib.suppress(Exception):
                c.close()

    def _run(self, i: int) -> None:
        conn = self.conns[i]
        seq = 0
        while not self.stop.is_set():
            seq += 1
            try:
                conn.execute(f"insert into {self.table}(client, seq) values (%s, %s)", (i, seq))
                with self.lock:
                    self.acked.append((time.monotonic(), i, seq))
            except psycopg.Error as e:
                with self.lock:
                    self.errors.append((time.monotonic(), i, e.sqlstate, str(e).strip()))
                if conn.closed or conn.broken:
                    with self.lock:
                        self.dead.append((i, f"{e.sqlstate}: {e}"))
                    return
            time.sleep(self.pause)

    def acked_after(self, t: float, client: Optional[int] = None) -> list[tuple[float, int, int]]:
        with self.lock:
            return [a for a in self.acked if a[0] > t and (client is None or a[1] == client)]


def assert_retryable(errors) -> None:
    """Errors of in-flight statements at a failover: class 08 or 40001 naming the failover, or
    25006 (read-only transaction). Anything else failed the client for no good reason."""
    bad = []
    for _, client, state, msg in errors:
        if state is None:
            bad.append(f"client {client}: no SQLSTATE: {msg}")
        elif state.startswith("08") or state == "40001":
            if "failover" not in msg.lower():
                bad.append(f"client {client}: {state} does not mention the failover: {msg}")
        elif state != "25006":
            bad.append(f"client {client}: SQLSTATE {state} is not retryable: {msg}")
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------------------------- planned


def test_planned_switchover_under_pgbench(pg_topology):
    pg = pg_topology.pg
    with start_proxy(pg_topology) as proxy:
        init = subprocess.run(["pgbench", "-i", "-s", "1"], env=proxy.pg_env(),
                              capture_output=True, text=True, timeout=180)
        assert init.returncode == 0, f"pgbench -i failed:\n{init.stderr}"
        with tempfile.TemporaryFile("w+") as out:
            bench = subprocess.Popen(["pgbench", "-c", "8", "-j", "2", "-T", "30"],
                                     env=proxy.pg_env(), stdout=out, stderr=subprocess.STDOUT,
                                     text=True)
            try:
                time.sleep(10)
                assert bench.poll() is None, "pgbench ended before the switchover"
                t0 = time.monotonic()
                reports = switch_primary(proxy, REPLICA, "--promote", "--timeout", "10")
                took = time.monotonic() - t0
                assert bench.poll() is None, "pgbench ended during the switchover"
                bench.wait(timeout=60)
            finally:
                if bench.poll() is None:
                    bench.kill()
                    bench.wait(timeout=10)
            out.seek(0)
            text = out.read()

        rep = report_for(reports, "postgres")
        print(f"\nplanned PostgreSQL switchover: {rep} (command took {took:.2f}s)",
              file=sys.stderr)
        assert rep["from"] == PRIMARY and rep["to"] == REPLICA, rep
        assert rep["promoted"] is True, rep
        assert rep["aborted"] == 0, rep
        assert 0 <= rep["writes_held_ms"] < WRITES_HELD_LIMIT_MS, rep

        assert bench.returncode == 0, f"pgbench exited {bench.returncode}:\n{text}"
        assert "aborted" not in text, text
        processed = re.search(r"number of transactions actually processed: (\d+)", text)
        assert processed and int(processed.group(1)) > 0, text
        failed = re.search(r"number of failed transactions: (\d+)", text)
        assert failed is None or int(failed.group(1)) == 0, text

        new = pg.node(REPLICA)
        assert is_primary(pg, new), "the former replica is not out of recovery"
        # pgbench -i emptied pgbench_history; each TPC-B transaction adds one row to it.
        in_history = count(pg, new, "pgbench_history")
        assert in_history == int(processed.group(1)), (
            f"pgbench counted {processed.group(1)} transactions, the new primary has "
            f"{in_history} in pgbench_history\n{text}")

        wait_primary_metric(proxy, REPLICA, {PRIMARY, REPLICA})
        parsed = metrics(proxy)
        assert metric(parsed, "failovers_total", protocol="postgres", kind="planned") == 1
        assert metric(parsed, "writes_held", protocol="postgres") == 0
        assert status_primary(proxy, "postgres") == REPLICA
        # And the proxy's writes now land there.
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            conn.execute("create table after_switch(x int)")
            conn.execute("insert into after_switch values (1)")
        assert count(pg, new, "after_switch") == 1


# ---------------------------------------------------------------------------------- unplanned


def _create_table(pg, name: str) -> None:
    pg.sql(pg.primary, f"create table {name}(id bigserial primary key, client int, seq int, "
                       "at timestamptz default clock_timestamp())", dbname=APP_DB)
    replica = pg.replicas[0]
    wait_until(f"{name} on the replica", lambda: count(pg, replica, name) == 0, timeout=15)


@pytest.mark.parametrize("how", HOW)
def test_unplanned_failover_writes_resume_on_same_connections(pg_topology, how):
    pg = pg_topology.pg
    old, new = pg.node(PRIMARY), pg.node(REPLICA)
    _create_table(pg, "unplanned")
    with start_proxy(pg_topology, **MONITOR_FOR[how]) as proxy, \
            failing(old, how, lambda: pg.stop(old, mode="immediate")) as fail:
        clients = 4
        with InsertLoad(proxy, "unplanned", clients=clients) as load:
            wait_until("inserts through the proxy", lambda: len(load.acked) >= 20, timeout=15)
            fail()
            t_crash = time.monotonic()
            time.sleep(3)
            pg.promote(new)
            t_promoted = time.monotonic()
            wait_until("a write through the proxy after the promotion",
                       lambda: load.acked_after(t_promoted) or len(load.dead) == clients,
                       timeout=35, interval=0.01)
            assert not load.dead, f"client connections lost: {load.dead}"
            first = min(a[0] for a in load.acked_after(t_promoted))
            # Every client, on the connection it opened before the crash, writes again.
            wait_until("every client to write again after the promotion",
                       lambda: all(load.acked_after(t_promoted, i)
                                   for i in range(clients)) or load.dead,
                       timeout=15)
            time.sleep(1)
        resumed = first - t_promoted
        print(f"\nunplanned PostgreSQL failover ({how}): first write {resumed * 1000:.0f} ms after the "
              f"promotion; {len(load.errors)} errors on in-flight statements: "
              f"{sorted({e[2] for e in load.errors}, key=str)}", file=sys.stderr)
        assert not load.dead, f"client connections lost: {load.dead}"
        assert resumed < RESUME_LIMIT_S, f"writes resumed {resumed:.2f}s after the promotion"
        assert_retryable(load.errors)
        # Nothing can have been acknowledged while no primary existed.
        during = [a for a in load.acked if t_crash + 0.5 < a[0] < t_promoted - 0.5]
        assert not during, f"inserts acknowledged while no primary was up: {during[:5]}"
        # Every insert acknowledged after the promotion is on the new primary.
        after = load.acked_after(t_promoted)
        rows = set(pg.sql(new, "select client, seq from unplanned", dbname=APP_DB))
        missing = [(c, s) for _, c, s in after if (c, s) not in rows]
        assert not missing, f"{len(missing)} acknowledged inserts missing: {missing[:10]}"

        wait_primary_metric(proxy, REPLICA, {PRIMARY, REPLICA})
        parsed = metrics(proxy)
        assert (metric(parsed, "failovers_total", protocol="postgres", kind="unplanned")
                or 0) >= 1, parsed.get("nerava_proxy_failovers_total")
        assert metric(parsed, "failovers_total", protocol="postgres", kind="planned") in (0, None)


def test_read_in_flight_on_an_unreachable_replica_is_answered_by_the_primary(pg_topology):
    """A read sent to a replica that stops answering (no reset: SIGSTOP) is run again on the
    primary once the monitor marks the replica down: the client sees its answer, late, and no
    error. Without that, it would wait for the replica until TCP gives up (minutes)."""
    pg = pg_topology.pg
    replica = pg.node(REPLICA)
    port_query = "select current_setting('port')"  # stable: a splitting proxy reads a replica
    with start_proxy(pg_topology) as proxy, \
            failing(replica, "unreachable", lambda: pg.stop(replica, mode="immediate")) as fail:
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            assert conn.execute(port_query).fetchone()[0] == str(replica.port)
            fail()
            t0 = time.monotonic()
            answered = conn.execute(port_query).fetchone()[0]
            took = time.monotonic() - t0
            print(f"\nread in flight on the unreachable replica answered after {took:.2f}s",
                  file=sys.stderr)
            assert answered == str(pg.node(PRIMARY).port)
            assert took < 10, f"the read waited {took:.1f}s for the unreachable replica"
            # The session goes on: the next read too (the replica is down), without an error.
            assert conn.execute(port_query).fetchone()[0] == str(pg.node(PRIMARY).port)


def test_statement_in_flight_on_a_primary_marked_down_is_cancelled_there(pg_topology):
    """A primary too slow to answer its checks (stopped here for ~2 s; a loaded or paused host)
    is marked down and the session drops its connection: the client is told its write may or
    may not have happened (08007). The proxy also sends the server a CancelRequest for that
    statement, so that once the server runs again the write does not go on and commit behind
    the client's back. Without the cancel the INSERT below finishes its 15 s sleep and commits."""
    pg = pg_topology.pg
    primary = pg.node(PRIMARY)
    pg.sql(primary, "create table cancelled_writes(id int)", dbname=APP_DB)
    monitor = {"monitor": {"interval": "250ms", "timeout": "500ms", "failure_threshold": 3}}
    with start_proxy(pg_topology, **monitor) as proxy, \
            failing(primary, "unreachable", lambda: pg.stop(primary, mode="immediate")) as fail, \
            psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        outcome: dict[str, object] = {}

        def slow_write():
            try:
                conn.execute("INSERT INTO cancelled_writes SELECT 1 FROM pg_sleep(15)")
                outcome["write"] = "acknowledged"
            except psycopg.Error as e:
                outcome["write"] = e

        thread = threading.Thread(target=slow_write)
        thread.start()
        time.sleep(0.5)  # the INSERT is running on the primary
        fail()
        try:
            wait_until("the proxy to mark the primary down",
                       lambda: monitor_view(proxy, "postgres", PRIMARY)[1] is False, timeout=15,
                       interval=0.05)
        finally:
            resume(primary)
        thread.join(timeout=20)
        assert not thread.is_alive()
        error = outcome["write"]
        assert isinstance(error, psycopg.Error), error
        assert error.sqlstate == "08007", (error.sqlstate, str(error))
        # Uncancelled, the INSERT runs its 15 s and commits; cancelled, it is gone at once.
        running = ("select count(*) from pg_stat_activity "
                   "where state = 'active' and query like 'INSERT INTO cancelled_writes%'")
        wait_until("the INSERT to end on the primary",
                   lambda: pg.sql(primary, running)[0][0] == 0, timeout=30, interval=0.1)
        assert count(pg, primary, "cancelled_writes") == 0


def test_connection_parked_before_its_node_was_marked_down_is_not_reused(pg_topology):
    """With server connection reuse on, a connection parked before the primary was marked down
    (it stopped answering for a while) is not handed to the next session once the node is back:
    the server behind it may have restarted meanwhile. One worker, so one pool."""
    pg = pg_topology.pg
    primary = pg.node(PRIMARY)

    def backend_pid(proxy) -> int:
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            # pg_current_wal_lsn() is volatile (and fails on a standby): the primary answers.
            return conn.execute("select pg_backend_pid(), pg_current_wal_lsn()").fetchone()[0]

    with start_proxy(pg_topology, workers=1, postgres={"server_idle_timeout": "60s"},
                     **MONITOR_FOR["unreachable"]) as proxy:
        seen = {backend_pid(proxy)}

        def reused() -> bool:
            # The pool hands out its newest connection: a session that starts before the last
            # one's DISCARD ALL is done opens another, so any earlier pid counts.
            pid = backend_pid(proxy)
            hit = pid in seen
            seen.add(pid)
            return hit

        wait_until("a parked connection to be reused", reused, timeout=10, interval=0.1)
        flap(proxy, "postgres", primary)
        after = backend_pid(proxy)
        assert after not in seen, "a connection parked before the node was marked down was reused"


# ---------------------------------------------------------------------------------- split brain


def test_split_brain_old_primary_restarted_undemoted_gets_no_writes(pg_topology):
    pg = pg_topology.pg
    old, new = pg.node(PRIMARY), pg.node(REPLICA)
    _create_table(pg, "brain")
    pg.sql(old, "insert into brain(client, seq) values (-1, 0)", dbname=APP_DB)
    wait_until("the seed row on the replica", lambda: count(pg, new, "brain") == 1, timeout=15)
    with start_proxy(pg_topology) as proxy:
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            conn.execute("insert into brain(client, seq) values (-1, 1)")
        wait_until("the row on the replica", lambda: count(pg, new, "brain") == 2, timeout=15)

        pg.stop(old, mode="immediate")
        pg.promote(new)

        def write_ok() -> bool:
            with psycopg.connect(proxy.dsn(), autocommit=True, connect_timeout=5) as c:
                c.execute("insert into brain(client, seq) values (-1, 2)")
            return True

        wait_until("a write through the proxy after the promotion", write_ok, timeout=35)
        wait_primary_metric(proxy, REPLICA, {PRIMARY, REPLICA})

        pg.restart_as_primary_undemoted(old)
        assert is_primary(pg, old) and is_primary(pg, new), "not a split brain"
        assert pg.timeline(new) > pg.timeline(old)
        old_rows_before = count(pg, old, "brain")

        # 5 s of writes: two connections kept open across the restart, and a new connection
        # per write (a new session must not be routed to the old primary either).
        acked, errors = [], []
        with psycopg.connect(proxy.dsn(), autocommit=True) as c1, \
                psycopg.connect(proxy.dsn(), autocommit=True) as c2:
            deadline = time.monotonic() + 5
            seq = 0
            while time.monotonic() < deadline:
                seq += 1
                for client, conn in ((1, c1), (2, c2), (3, None)):
                    try:
                        if conn is None:
                            with psycopg.connect(proxy.dsn(), autocommit=True) as c3:
                                c3.execute("insert into brain(client, seq) values (%s, %s)",
                                           (client, seq))
                        else:
                            conn.execute("insert into brain(client, seq) values (%s, %s)",
                                         (client, seq))
                        acked.append((client, seq))
                    except psycopg.Error as e:
                        errors.append(f"client {client}: {e.sqlstate}: {e}")
                time.sleep(0.02)

        assert not errors, "\n".join(errors[:10])
        assert len(acked) > 30, acked
        assert count(pg, old, "brain") == old_rows_before, (
            "the un-demoted old primary received writes: "
            f"{pg.sql(old, 'select client, seq from brain where client > 0', dbname=APP_DB)}")
        assert count(pg, old, "brain", "client > 0") == 0
        rows = set(pg.sql(new, "select client, seq from brain where client > 0", dbname=APP_DB))
        assert rows == set(acked), f"{len(set(acked) - rows)} acknowledged writes missing"

        # Hard: the promoted node is the one primary the proxy exports.
        assert primaries_in_metrics(proxy, {PRIMARY, REPLICA}) == {REPLICA}
        assert status_primary(proxy, "postgres") == REPLICA
        # The split brain is reported: the gauge while both say primary, and the log.
        assert any(v == 1 for v in metric_values(metrics(proxy), "split_brain")), \
            "nerava_proxy_split_brain is not 1 while two nodes say they are primary"
        assert "split brain" in Path(proxy.log_path).read_text(errors="replace").lower()


# ---------------------------------------------------------------------------------- pause


@pytest.fixture(scope="module")
def paused_setup() -> Iterator[tuple[Topology, object]]:
    with Topology(pg_replicas=1, redis=False) as topo:
        topo.pg.sql(topo.pg.primary, "create table held(x int)", dbname=APP_DB)
        wait_until("held on the replica",
                   lambda: count(topo.pg, topo.pg.replicas[0], "held") == 0, timeout=15)
        with start_proxy(topo) as proxy:
            yield topo, proxy


def _in_thread(fn) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            box["error"] = e
        box["done"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def test_pause_writes_holds_writes_not_reads_and_resume_releases(paused_setup):
    topo, proxy = paused_setup
    pg = topo.pg
    with psycopg.connect(proxy.dsn(), autocommit=True) as writer, \
            psycopg.connect(proxy.dsn(), autocommit=True) as reader:
        writer.execute("insert into held values (1)")
        ctl_ok(proxy, "pause", "writes")
        try:
            t, box = _in_thread(lambda: writer.execute("insert into held values (2)"))
            t0 = time.monotonic()
            # Reads keep flowing: on a session of the rw listener, and on a new ro session.
            assert reader.execute("select 42").fetchone() == (42,)
            if proxy.pg_ro_port:
                with psycopg.connect(proxy.ro_dsn(), autocommit=True) as ro:
                    assert ro.execute("select count(*) >= 0 from held").fetchone() == (True,)
            assert time.monotonic() - t0 < 2, "reads were held by pause writes"
            time.sleep(1.0)
            assert "done" not in box, f"the write was not held: {box}"
            assert count(pg, pg.primary, "held", "x = 2") == 0
            held = metric(metrics(proxy), "writes_held", protocol="postgres")
            assert held is not None and held > 0, held
        finally:
            resumed_at = time.monotonic()
            ctl_ok(proxy, "resume")
        t.join(timeout=10)
        assert "done" in box, "resume did not release the held write"
        assert "error" not in box, f"the held write failed: {box['error']!r}"
        assert box["done"] - resumed_at < 2
        assert count(pg, pg.primary, "held", "x = 2") == 1
        assert metric(metrics(proxy), "writes_held", protocol="postgres") == 0
        writer.execute("insert into held values (3)")  # not paused any more


def test_pause_all_holds_reads_too(paused_setup):
    topo, proxy = paused_setup
    with psycopg.connect(proxy.dsn(), autocommit=True) as reader:
        assert reader.execute("select 1").fetchone() == (1,)
        ctl_ok(proxy, "pause", "all")
        try:
            t, box = _in_thread(lambda: reader.execute("select 2").fetchone())
            time.sleep(1.0)
            assert "done" not in box, f"the read was not held by pause all: {box}"
        finally:
            ctl_ok(proxy, "resume")
        t.join(timeout=10)
        assert box.get("result") == (2,), box


@pytest.mark.parametrize("target", ["no-such-node", "mars-north-1"])
def test_switch_primary_unknown_target_fails(paused_setup, target):
    topo, proxy = paused_setup
    res = ctl(proxy, "switch-primary", target, "--promote", "--timeout", "5")
    assert res.returncode != 0, res.stdout
    assert res.stderr.strip(), "no error message on stderr"
    # Refused as an unknown target, not as an unknown command.
    assert "unknown command" not in res.stderr, res.stderr
    assert target in res.stderr or "unknown" in res.stderr.lower(), res.stderr
    # Nothing moved and nothing stays held.
    assert is_primary(topo.pg, topo.pg.primary)
    assert not is_primary(topo.pg, topo.pg.replicas[0])
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("insert into held values (9)")


# ---------------------------------------------------------------------------------- region


def test_region_switch_moves_both_protocols_and_fails_back():
    """switch-primary REGION switches every protocol with a node there; switching back to the
    recovered old region (failback) is the same command once the old primaries replicate."""
    with Topology(pg_replicas=1, redis_replicas=1) as topo, start_proxy(topo) as proxy:
        pg, rc = topo.pg, topo.redis
        pg_old, pg_new = pg.node(PRIMARY), pg.node(REPLICA)
        r_old, r_new = rc.node("redis-primary"), rc.node("redis-replica1")
        r = proxy.redis_client(socket_timeout=40)
        every_node = [("postgres", pg_old.name), ("postgres", pg_new.name),
                      ("redis", r_old.name), ("redis", r_new.name)]

        def all_up() -> bool:
            return all(monitor_view(proxy, *node)[1] is True for node in every_node)

        # All or nothing: with the region's PostgreSQL replica down, Redis does not move alone.
        pg.stop(pg_new)
        wait_until("the monitor to see the replica down",
                   lambda: monitor_view(proxy, "postgres", pg_new.name)[1] is False, timeout=15)
        res = ctl(proxy, "switch-primary", "eu-west-1", "--promote", "--timeout", "10")
        assert res.returncode != 0, res.stdout
        assert "postgres" in res.stderr and "nothing was switched" in res.stderr, res.stderr
        assert rc.role(r_old)[0] == "master" and rc.role(r_new)[0] == "slave"
        assert is_primary(pg, pg_old)
        pg.start(pg_new)
        wait_until("the monitor to see every node up", all_up, timeout=30)

        reports = switch_primary(proxy, "eu-west-1", "--promote", "--timeout", "10")
        by_proto = {rep["protocol"]: rep for rep in reports}
        assert set(by_proto) == {"postgres", "redis"}, reports
        assert (by_proto["postgres"]["from"], by_proto["postgres"]["to"]) == (PRIMARY, REPLICA)
        assert (by_proto["redis"]["from"], by_proto["redis"]["to"]) == (r_old.name, r_new.name)
        for rep in reports:
            assert rep["promoted"] is True and rep["writes_held_ms"] < WRITES_HELD_LIMIT_MS, rep
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            conn.execute("create table region_switch(x int)")
            conn.execute("insert into region_switch values (1)")
        assert r.set("region-switch", "eu")
        assert count(pg, pg_new, "region_switch") == 1
        assert rc.client(r_new).get("region-switch") == b"eu"

        # The old region recovers as replicas of the new primaries.
        pg.demote_to_replica(pg_old, pg_new)
        if rc.role(r_old)[:3] != ["slave", r_new.host, r_new.port]:
            rc.replicaof(r_old, r_new)
        else:
            rc.wait_link_up([r_old])
        # The roles are read, not assumed: wait until the monitor has seen the demotions.
        wait_until("the monitor to see the old primaries as replicas",
                   lambda: monitor_view(proxy, "postgres", PRIMARY) == ("replica", True) and
                   monitor_view(proxy, "redis", r_old.name) == ("replica", True), timeout=15)

        back = switch_primary(proxy, "us-east-1", "--promote", "--timeout", "10")
        by_proto = {rep["protocol"]: rep for rep in back}
        assert set(by_proto) == {"postgres", "redis"}, back
        assert by_proto["postgres"]["to"] == PRIMARY and by_proto["redis"]["to"] == r_old.name
        assert is_primary(pg, pg_old)
        assert rc.role(r_old)[0] == "master"
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            conn.execute("insert into region_switch values (2)")
        assert r.set("region-switch", "us")
        # Nothing written in eu-west-1 was lost on the way back.
        assert pg.sql(pg_old, "select array_agg(x order by x) from region_switch",
                      dbname=APP_DB) == [([1, 2],)]
        assert rc.client(r_old).get("region-switch") == b"us"
        wait_primary_metric(proxy, PRIMARY, {PRIMARY, REPLICA})
        parsed = metrics(proxy)
        for proto in ("postgres", "redis"):
            assert metric(parsed, "failovers_total", protocol=proto, kind="planned") == 2
