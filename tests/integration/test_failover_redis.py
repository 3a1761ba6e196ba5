"""Redis failover and planned switchover through nerava-proxy (issue 6, DESIGN §7), against real
servers:

    clients ──▶ nerava-proxy ──▶ redis-primary (us-east-1) ──repl──▶ redis-replica1 (eu-west-1)
                     ▲                   ▲
    nerava-proxyctl switch-primary       3 × redis-sentinel (quorum 2, down after 2 s)

  planned     switch-primary redis-replica1 --promote during redis-benchmark -t set: no error
              replies, every acknowledged INCR kept, new primary ROLE master, old one its replica,
              writes held < 2 s
  unplanned   the primary crashes or becomes unreachable (SIGSTOP: no reset, nothing answers) and
              Sentinel fails it over: the first SET through the proxy succeeds within 1 s
              of Sentinel naming the new master, on the same client connection (in-flight
              commands may get -TRYAGAIN, nothing else)

Each test changes roles, so each gets a fresh topology and proxy. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterator, Optional

import pytest
import redis

from tests.harness.topology import SentinelSet, Topology, wait_until
from admin_helpers import ctl_ok, metric, metrics
from conftest import start_proxy
from node_failures import HOW, MONITOR_FOR, failing, flap

WRITES_HELD_LIMIT_MS = 2000.0
RESUME_LIMIT_S = 1.0
PRIMARY, REPLICA = "redis-primary", "redis-replica1"
BENCH_REQUESTS = 200000  # about 17 s through the proxy here


# ---------------------------------------------------------------------------------- helpers


def primaries_in_metrics(proxy) -> set[str]:
    return {lbl.get("node") for lbl, v in metrics(proxy).get("nerava_proxy_primary_info", [])
            if v == 1 and lbl.get("node") in (PRIMARY, REPLICA)}


def proxy_client(proxy, **kwargs) -> redis.Redis:
    kwargs.setdefault("socket_timeout", 40)  # > failover.wait: a held command is not a timeout
    return proxy.redis_client(**kwargs)


@pytest.fixture
def redis_topology() -> Iterator[Topology]:
    """A fresh Redis primary + replica (no PostgreSQL) for one test that changes roles."""
    with Topology(postgres=False, redis_replicas=1) as topo:
        yield topo


class Writer:
    """One thread on ONE raw connection through the proxy running `command(i)` in a loop.
    Records acknowledgement times, error replies, and whether the connection dropped (a
    dropped connection stops the thread: the proxy must keep client connections)."""

    def __init__(self, proxy, command, pause: float = 0.005):
        self.command = command
        self.pause = pause
        self.conn = redis.Connection(host="127.0.0.1", port=proxy.redis_port,
                                     socket_timeout=40, socket_connect_timeout=10)
        self.conn.connect()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: list[tuple[float, int]] = []
        self.errors: list[tuple[float, str]] = []
        self.dropped: Optional[str] = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="redis-writer")

    def __enter__(self) -> "Writer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=45)
        with contextlib.suppress(Exception):
            self.conn.disconnect()

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                self.conn.send_command(*self.command(i))
                self.conn.read_response()
                with self.lock:
                    self.acked.append((time.monotonic(), i))
            except redis.exceptions.ResponseError as e:
                with self.lock:
                    self.errors.append((time.monotonic(), str(e)))
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                self.dropped = f"{type(e).__name__}: {e}"
                return
            time.sleep(self.pause)

    def acked_after(self, t: float) -> list[tuple[float, int]]:
        with self.lock:
            return [a for a in self.acked if a[0] > t]


# ---------------------------------------------------------------------------------- planned


def test_planned_switchover_under_redis_benchmark(redis_topology):
    rc = redis_topology.redis
    old, new = rc.node(PRIMARY), rc.node(REPLICA)
    with start_proxy(redis_topology) as proxy:
        assert proxy_client(proxy).set("before-switch", "1")
        with tempfile.TemporaryFile("w+") as out, \
                Writer(proxy, lambda i: ("INCR", "acked-incrs")) as incr:
            # Redis 7's redis-benchmark prints the first error reply and exits non-zero.
            bench = subprocess.Popen(
                ["redis-benchmark", "-h", "127.0.0.1", "-p", str(proxy.redis_port), "-t", "set",
                 "-n", str(BENCH_REQUESTS), "-c", "20", "-r", "100000", "-q"],
                stdout=out, stderr=subprocess.STDOUT, text=True)
            try:
                time.sleep(2)
                assert bench.poll() is None, "redis-benchmark ended before the switchover"
                t0 = time.monotonic()
                reports = json.loads(ctl_ok(proxy, "switch-primary", REPLICA, "--promote",
                                            "--timeout", "10", "--json"))
                took = time.monotonic() - t0
                assert bench.poll() is None, (
                    "redis-benchmark ended during the switchover: raise BENCH_REQUESTS")
                bench.wait(timeout=120)
                time.sleep(0.5)
            finally:
                if bench.poll() is None:
                    bench.kill()
                    bench.wait(timeout=10)
            out.seek(0)
            text = out.read()

        assert isinstance(reports, list), reports
        found = [r for r in reports if r.get("protocol") == "redis"]
        assert len(found) == 1, reports
        rep = found[0]
        print(f"\nplanned Redis switchover: {rep} (command took {took:.2f}s); "
              f"{len(incr.acked)} INCRs alongside; benchmark: {text.strip()[-200:]}",
              file=sys.stderr)
        assert rep["from"] == PRIMARY and rep["to"] == REPLICA, rep
        assert rep["promoted"] is True, rep
        assert rep["aborted"] == 0, rep
        assert 0 <= rep["writes_held_ms"] < WRITES_HELD_LIMIT_MS, rep

        assert bench.returncode == 0, f"redis-benchmark exited {bench.returncode}:\n{text}"
        assert "error" not in text.lower(), text
        assert "requests per second" in text, text

        assert incr.dropped is None, incr.dropped
        assert not incr.errors, incr.errors[:5]
        assert rc.role(new)[0] == "master"
        wait_until("the old primary to replicate from the new one",
                   lambda: rc.role(old)[:3] == ["slave", new.host, new.port], timeout=10)
        # No acknowledged write lost: the counter on the new primary equals the acked INCRs.
        value = int(rc.client(new).get("acked-incrs"))
        assert value == len(incr.acked), f"{len(incr.acked)} INCRs acknowledged, value {value}"
        assert rc.client(new).get("before-switch") == b"1"

        wait_until("/metrics primary_info to name the new primary",
                   lambda: primaries_in_metrics(proxy) == {REPLICA}, timeout=10)
        parsed = metrics(proxy)
        assert metric(parsed, "failovers_total", protocol="redis", kind="planned") == 1
        assert metric(parsed, "writes_held", protocol="redis") == 0
        assert proxy_client(proxy).set("after-switch", "1")
        assert rc.client(new).get("after-switch") == b"1"


def test_wait_after_a_switchover_does_not_count_writes_left_on_the_old_primary(redis_topology):
    """A SET over a shared connection reached the old primary; after a switchover the session's
    WAIT goes to the new one, whose replicas the proxy cannot vouch for: it answers 0 (never
    more than a direct connection to the old primary could have counted) and the session goes
    on."""
    rc = redis_topology.redis
    with start_proxy(redis_topology) as proxy:
        c = proxy_client(proxy, single_connection_client=True)
        for _ in range(4):  # the shared connections are open: the SET below goes over one
            assert proxy_client(proxy, single_connection_client=True).set("wait-warm", "1")
        time.sleep(0.5)
        assert c.set("wait-before-switch", "1")
        ctl_ok(proxy, "switch-primary", REPLICA, "--promote", "--timeout", "10")
        wait_until("/metrics primary_info to name the new primary",
                   lambda: primaries_in_metrics(proxy) == {REPLICA}, timeout=10)
        # The old primary replicates from the new one by now: a fenced WAIT would say 1.
        wait_until("the old primary to replicate from the new one",
                   lambda: rc.role(rc.node(PRIMARY))[0] == "slave", timeout=10)
        assert c.execute_command("WAIT", 1, 2000) == 0
        assert c.set("wait-after-switch", "1")
        assert rc.client(rc.node(REPLICA)).get("wait-after-switch") == b"1"


# ---------------------------------------------------------------------------------- unplanned


@pytest.mark.parametrize("how", HOW)
def test_unplanned_failover_follows_sentinel(redis_topology, how):
    rc = redis_topology.redis
    old, new = rc.node(PRIMARY), rc.node(REPLICA)
    with SentinelSet(rc, master_name="nerava-redis") as sentinels:
        overrides = {"redis": {"sentinel": {"addresses": sentinels.addresses,
                                            "master": "nerava-redis"}}}
        with start_proxy(redis_topology, **overrides, **MONITOR_FOR[how]) as proxy, \
                failing(old, how, lambda: rc.stop(old)) as fail:
            assert proxy_client(proxy).set("before-failover", "1")
            with Writer(proxy, lambda i: ("SET", f"k{i % 1000}", str(i))) as writer:
                wait_until("SETs through the proxy", lambda: len(writer.acked) >= 20,
                           timeout=15)
                fail()
                t_stop = time.monotonic()
                t_switch = sentinels.wait_master(new, timeout=30, interval=0.01)
                wait_until("a SET through the proxy after Sentinel's switch",
                           lambda: writer.acked_after(t_switch) or writer.dropped,
                           timeout=35, interval=0.01)
                time.sleep(1)
            assert writer.dropped is None, f"the client connection dropped: {writer.dropped}"
            # Measured from the switch: a reply already on its way when the primary stopped
            # arrives after t_stop and says nothing about the failover. The proxy may follow the
            # promoted replica before Sentinel announces it; then this is the writer's own pace.
            first = min(a[0] for a in writer.acked_after(t_switch))
            resumed = first - t_switch
            print(f"\nunplanned Redis failover ({how}): Sentinel switched "
                  f"{t_switch - t_stop:.2f}s after "
                  f"the primary stopped; first SET {resumed * 1000:.0f} ms after the switch; "
                  f"{len(writer.errors)} error replies", file=sys.stderr)
            assert resumed < RESUME_LIMIT_S, f"writes resumed {resumed:.2f}s after the switch"
            bad = [e for _, e in writer.errors if not e.startswith("TRYAGAIN")]
            assert not bad, f"non-retryable errors: {bad[:5]}"
            # Only the SET in flight when the primary stopped may fail (its outcome is unknown);
            # the ones after it wait for the new primary, as a refused connect does not answer
            # them with an error before the monitor has seen the primary go.
            assert len(writer.errors) <= 2, [e for _, e in writer.errors][:5]
            # Acknowledged after the switch: on the new primary.
            _, last = writer.acked[-1]
            assert rc.client(new).get(f"k{last % 1000}") == str(last).encode()
            assert rc.role(new)[0] == "master"

            wait_until("/metrics primary_info to name the new primary",
                       lambda: primaries_in_metrics(proxy) == {REPLICA}, timeout=10)
            parsed = metrics(proxy)
            assert (metric(parsed, "failovers_total", protocol="redis", kind="unplanned")
                    or 0) >= 1, parsed.get("nerava_proxy_failovers_total")
            # A new client connection writes to the new primary too.
            assert proxy_client(proxy).set("after-failover", "1")
            assert rc.client(new).get("after-failover") == b"1"


def test_connections_dropped_for_an_unreachable_node_are_reopened_when_it_answers_again(
        redis_topology):
    """The primary stops answering (SIGSTOP) long enough to be marked down, then answers
    again. A client whose own connection to it sat idle (its last command went to the replica)
    writes again without an error: the connection closed at the mark is opened anew, not reused
    closed (that failed the next write with a -TRYAGAIN for a command that never ran)."""
    rc = redis_topology.redis
    old = rc.node(PRIMARY)

    with start_proxy(redis_topology, redis={"shared_connections": False},
                     **MONITOR_FOR["unreachable"]) as proxy:
        client = proxy_client(proxy, single_connection_client=True)
        assert client.set("flap", "1")

        def replica_reads() -> float:
            return metric(metrics(proxy), "queries_total", protocol="redis", route="replica",
                          node=REPLICA) or 0

        before = replica_reads()
        # Once the replica has the write (read-your-writes), GETs stay there: the session's
        # last command ran on the replica, and its primary connection sits idle.
        wait_until("a GET served by the replica",
                   lambda: client.get("flap") == b"1" and replica_reads() > before, timeout=10)
        flap(proxy, "redis", old)
        assert client.set("flap", "2")
        assert rc.client(old).get("flap") == b"2"
        client.close()


def test_replica_flagged_down_by_sentinel_serves_no_reads(redis_topology):
    """A replica Sentinel flags s_down is out of service: reads through the proxy still
    succeed, none goes to it, and the proxy says Sentinel is why."""
    rc = redis_topology.redis
    with SentinelSet(rc, master_name="nerava-redis") as sentinels:
        overrides = {"redis": {"sentinel": {"addresses": sentinels.addresses,
                                            "master": "nerava-redis"}}}
        with start_proxy(redis_topology, **overrides) as proxy:
            # Closed on the way out: an idle client would hold the proxy's drain at exit.
            client = proxy_client(proxy, socket_timeout=10)
            try:
                check_flagged_replica(proxy, client, rc, sentinels)
            finally:
                client.close()


def check_flagged_replica(proxy, client: redis.Redis, rc, sentinels) -> None:
    replica = rc.node(REPLICA)
    assert client.set("flagged-key", "v")

    def replica_flags() -> str:
        with sentinels.client(0) as c:
            reply = c.execute_command("SENTINEL", "REPLICAS", "nerava-redis")
        for r in reply:
            fields = {(k.decode() if isinstance(k, bytes) else k):
                      (v.decode() if isinstance(v, bytes) else v)
                      for k, v in zip(r[::2], r[1::2])}
            if int(fields.get("port", 0)) == replica.port:
                return fields.get("flags", "")
        return ""

    rc.stop(replica)
    wait_until("Sentinel to flag the stopped replica s_down",
               lambda: "s_down" in replica_flags().split(","), timeout=15,
               interval=0.1, log=sentinels.nodes[0].log_path)

    def replica_node() -> dict:
        nodes = json.loads(ctl_ok(proxy, "show", "nodes", "--json"))["nodes"]
        return next(n for n in nodes if n["node"] == REPLICA)

    wait_until("the proxy to blame Sentinel for the replica being down",
               lambda: "sentinel" in (replica_node().get("last_error") or "").lower(),
               timeout=5, interval=0.05)
    status = {(n["protocol"], n["node"]): n
              for n in json.loads(ctl_ok(proxy, "status", "--json"))["nodes"]}
    assert status[("redis", REPLICA)]["up"] is False, status[("redis", REPLICA)]
    node = replica_node()
    assert node["up"] is False, node

    def replica_reads() -> float:
        return sum(v for lbl, v in metrics(proxy).get("nerava_proxy_queries_total", [])
                   if lbl.get("node") == REPLICA)

    before = replica_reads()
    for _ in range(50):
        assert client.get("flagged-key") == b"v"
    assert replica_reads() == before, "reads were routed to the flagged replica"
    # Still flagged after those reads (Sentinel's view, not one failed check).
    assert "sentinel" in (replica_node().get("last_error") or "").lower()
