"""Redis read/write splitting end to end (issue 5, DESIGN §5–§6): a real Redis primary and
replica, nerava-proxy ($NERAVA_PROXY_BIN) in front, python3-redis as the client.

    client ──▶ nerava-proxy ──┬──▶ redis-primary  (us-east-1)   writes, MULTI, scripts, blocking
                              └──▶ redis-replica1 (eu-west-1)   readonly commands

Where a command ran is read from the servers' own `INFO commandstats`. The stale-read test puts
a delaying TCP relay between the primary and the replica (the replica replicates through it), so
the replica is a known time behind.

Every wait is bounded.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import threading
import time
from typing import Iterator, Optional

import pytest
import redis

from tests.harness.topology import Topology, free_port, wait_until
from conftest import disconnect_redis, start_proxy

LOCAL_REGION = "eu-west-1"  # the replica's region (conftest: primary us-east-1)
LINK_DELAY_S = 0.5
STALE_ITERATIONS = 2000

_open_clients: list[redis.Redis] = []


# ------------------------------------------------------------------------------------ helpers


def client(proxy, **kwargs) -> redis.Redis:
    c = proxy.redis_client(**kwargs)
    _open_clients.append(c)
    return c


def node_client(topology, node, **kwargs) -> redis.Redis:
    c = topology.redis.client(node, **kwargs)
    _open_clients.append(c)
    return c


def reset_stats(topology) -> None:
    for node in topology.redis.nodes:
        node_client(topology, node).config_resetstat()


def replicated(topology, key: str, value: bytes) -> None:
    replica = topology.redis.replicas[0]
    wait_until(f"{key} on the replica",
               lambda: node_client(topology, replica).get(key) == value)


def command_calls(topology, node, command: str) -> int:
    """How many times `node` executed `command` (INFO commandstats), 0 if never."""
    stats = node_client(topology, node).info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


class DelayRelay:
    """A TCP relay that holds every byte from the upstream (the primary) for `delay` seconds
    before passing it on, and passes the other direction at once. Each accepted connection
    gets its own upstream connection; all threads are daemons and stop on close()."""

    def __init__(self, upstream_port: int, delay: float):
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = free_port()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for s in self._sockets + [self._listener]:
                with contextlib.suppress(OSError):
                    s.close()

    def _track(self, s: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(s)
        return s

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                downstream, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                downstream.close()
                continue
            for s in (downstream, upstream):
                s.settimeout(0.2)
                self._track(s)
            held: collections.deque = collections.deque()
            cond = threading.Condition()
            threading.Thread(target=self._read_delayed, args=(upstream, held, cond),
                             daemon=True).start()
            threading.Thread(target=self._send_delayed, args=(downstream, held, cond),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(downstream, upstream), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            with contextlib.suppress(OSError):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()

    def _read_delayed(self, src: socket.socket, held: collections.deque,
                      cond: threading.Condition) -> None:
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            with cond:
                held.append((time.monotonic() + self.delay, data))
                cond.notify()
            if not data:
                return

    def _send_delayed(self, dst: socket.socket, held: collections.deque,
                      cond: threading.Condition) -> None:
        while not self._stop.is_set():
            with cond:
                while not held and not self._stop.is_set():
                    cond.wait(0.2)
                if not held:
                    return
                due, data = held[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with cond:
                held.popleft()
            if not data:  # upstream closed: close downstream once the held bytes are out
                with contextlib.suppress(OSError):
                    dst.close()
                return
            try:
                dst.sendall(data)
            except OSError:
                return


@contextlib.contextmanager
def delayed_link(topology, delay: float = LINK_DELAY_S) -> Iterator[DelayRelay]:
    """Makes the replica replicate through a DelayRelay; restores the direct link after."""
    rc = topology.redis
    primary, replica = rc.primary, rc.replicas[0]
    relay = DelayRelay(primary.port, delay)
    r = node_client(topology, replica)
    try:
        r.execute_command("REPLICAOF", "127.0.0.1", str(relay.port))
        wait_until("the replica to sync through the delaying relay",
                   lambda: r.info("replication").get("master_link_status") == "up"
                   and r.info("replication").get("master_port") == relay.port, timeout=30)
        yield relay
    finally:
        r.execute_command("REPLICAOF", primary.host, str(primary.port))
        relay.close()
        rc.wait_link_up([replica])


def visible_after(topology, key: str, timeout: float = 10.0) -> float:
    """Seconds between a SET on the primary and the value showing on the replica."""
    rc = topology.redis
    p, r = node_client(topology, rc.primary), node_client(topology, rc.replicas[0])
    value = f"probe-{time.monotonic_ns()}"
    p.set(key, value)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if r.get(key) == value.encode():
            return time.monotonic() - started
        time.sleep(0.005)
    return timeout


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    # Redis only: PostgreSQL splitting has its own module.
    with Topology(postgres=False, redis_replicas=1) as topo:
        yield topo


@pytest.fixture(scope="module")
def proxy(topology) -> Iterator:
    with start_proxy(topology, region=LOCAL_REGION, monitor={"interval": "250ms"}) as p:
        yield p


@pytest.fixture(autouse=True)
def _close_clients():
    # Idle connections would hold the proxy's drain (and its stop) for shutdown_timeout.
    yield
    while _open_clients:
        disconnect_redis(_open_clients.pop())


# ------------------------------------------------------------------------------ correctness


def test_writes_then_reads_return_correct_data(proxy, topology):
    c = client(proxy)
    c.delete("s:str", "s:n", "s:h", "s:l", "s:set", "s:a", "s:b")
    assert c.set("s:str", "héllo") is True
    assert c.get("s:str") == "héllo".encode()
    assert c.incrby("s:n", 5) == 5 and c.incr("s:n") == 6 and c.get("s:n") == b"6"
    assert c.hset("s:h", mapping={"a": "1", "b": "2"}) == 2
    assert c.hgetall("s:h") == {b"a": b"1", b"b": b"2"}
    assert c.rpush("s:l", "x", "y", "z") == 3 and c.lrange("s:l", 0, -1) == [b"x", b"y", b"z"]
    assert c.sadd("s:set", "m1", "m2") == 2 and c.smembers("s:set") == {b"m1", b"m2"}
    assert c.mset({"s:a": "A", "s:b": "B"}) is True
    assert c.mget("s:a", "s:b", "s:missing") == [b"A", b"B", None]
    assert c.exists("s:a", "s:b", "s:missing") == 2

    # Write then read back at once, one by one and pipelined: never an older value.
    for i in range(500):
        c.set("s:ryw", i)
        assert c.get("s:ryw") == str(i).encode(), i
    pipe = c.pipeline(transaction=False)
    for i in range(300):
        pipe.set(f"s:p{i}", i)
        pipe.get(f"s:p{i}")
        pipe.incr("s:pn")
    replies = pipe.execute()
    assert replies[0::3] == [True] * 300
    assert replies[1::3] == [str(i).encode() for i in range(300)]
    assert replies[2::3] == list(range(1, 301))

    # The primary holds what the proxy wrote.
    direct = node_client(topology, topology.redis.primary)
    assert direct.get("s:ryw") == b"499" and direct.get("s:pn") == b"300"


# -------------------------------------------------------------------------------- the split


def test_reads_are_served_by_the_replica(proxy, topology):
    rc = topology.redis
    replica = rc.replicas[0]
    node_client(topology, rc.primary).set("split:get", "v")
    wait_until("split:get on the replica",
               lambda: node_client(topology, replica).get("split:get") == b"v")
    for node in rc.nodes:
        node_client(topology, node).config_resetstat()
    c = client(proxy)  # a connection that never writes
    for _ in range(200):
        assert c.get("split:get") == b"v"
    on_replica = command_calls(topology, replica, "get")
    on_primary = command_calls(topology, rc.primary, "get")
    print(f"\n200 GETs through the proxy: replica executed {on_replica}, primary {on_primary}")
    assert on_replica >= 190, (on_replica, on_primary)

    # Writes, MULTI and blocking commands stay on the primary.
    c.set("split:w", "1")
    with c.pipeline(transaction=True) as tx:
        tx.get("split:w").incr("split:w")
        assert tx.execute() == [b"1", 2]
    assert c.blpop(["split:empty"], timeout=0.1) is None
    assert command_calls(topology, replica, "multi") == 0
    assert command_calls(topology, replica, "blpop") == 0
    assert command_calls(topology, rc.primary, "blpop") == 1


def test_stale_read_0_misses_with_a_delayed_link(proxy, topology):
    rc = topology.redis
    replica = rc.replicas[0]
    with delayed_link(topology) as relay:
        wait_until(f"SETs to take > 300 ms to reach the replica (relay delay {relay.delay} s)",
                   lambda: visible_after(topology, "split:probe") > 0.3, timeout=20)
        node_client(topology, rc.primary).set("split:reader", "r" * 10)
        wait_until("split:reader on the replica",
                   lambda: node_client(topology, replica).get("split:reader") is not None)
        strlen_before = command_calls(topology, replica, "strlen")
        counts = {"reads": 0}
        failures: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:  # a connection that never writes
            try:
                rcl = client(proxy)
                while not stop.is_set():
                    assert rcl.strlen("split:reader") == 10
                    counts["reads"] += 1
                    stop.wait(0.005)
            except BaseException as e:  # noqa: BLE001 - reported below
                failures.append(e)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        misses: list[int] = []
        started = time.monotonic()
        try:
            c = client(proxy)
            for i in range(STALE_ITERATIONS):
                c.set("split:ryw", i)
                if c.get("split:ryw") != str(i).encode():
                    misses.append(i)
        finally:
            stop.set()
            thread.join(timeout=10)
        elapsed = time.monotonic() - started
        on_replica = command_calls(topology, replica, "strlen") - strlen_before
    share = on_replica / counts["reads"] if counts["reads"] else 0.0
    print(f"\nredis stale-read: {STALE_ITERATIONS} SET+GET pairs through the proxy with a "
          f"{LINK_DELAY_S} s replication delay: misses {len(misses)}, {elapsed:.1f} s; "
          f"non-writing connection: {counts['reads']} STRLEN, {on_replica} on the replica "
          f"({share:.1%})")
    assert not failures, f"the non-writing reader failed: {failures[0]!r}"
    assert not misses, f"{len(misses)} GETs returned an older value (first: {misses[:10]})"
    assert counts["reads"] >= 50 and share >= 0.90, (counts, on_replica)



def test_pins_scripts_and_blocking_stay_on_the_primary(proxy, topology):
    rc = topology.redis
    replica, primary = rc.replicas[0], rc.primary
    direct = node_client(topology, primary)
    direct.set("pin:k", "1")
    direct.xadd("pin:stream", {"f": "v"})
    replicated(topology, "pin:k", b"1")
    wait_until("pin:stream on the replica",
               lambda: node_client(topology, replica).xlen("pin:stream") == 1)
    reset_stats(topology)

    # WATCH ... EXEC: every command in between on the primary, the GET included.
    c = client(proxy)
    with c.pipeline(transaction=True) as tx:
        tx.watch("pin:k")  # immediate mode until MULTI: WATCH and GET run one by one
        assert tx.get("pin:k") == b"1"
        tx.multi()
        tx.incr("pin:k")
        assert tx.execute() == [2]
    assert command_calls(topology, replica, "get") == 0
    assert command_calls(topology, primary, "get") == 1
    assert command_calls(topology, primary, "watch") == 1
    assert command_calls(topology, replica, "exec") == 0

    # Scripts: EVAL and EVALSHA_RO (not replicated in Redis 7) on the primary, EVAL_RO on a replica.
    r = client(proxy, single_connection_client=True)  # never writes
    replicated(topology, "pin:k", b"2")
    assert r.execute_command("EVAL_RO", "return redis.call('GET', KEYS[1])", 1, "pin:k") == b"2"
    sha = r.script_load("return 7")
    assert r.execute_command("EVALSHA_RO", sha, 0) == 7
    assert command_calls(topology, replica, "eval_ro") == 1
    assert command_calls(topology, primary, "evalsha_ro") == 1
    assert command_calls(topology, replica, "evalsha_ro") == 0
    w = client(proxy, single_connection_client=True)
    assert w.eval("return redis.call('INCR', KEYS[1])", 1, "pin:k") == 3
    assert command_calls(topology, primary, "eval") == 1
    assert command_calls(topology, replica, "eval") == 0

    # XREAD reads on a replica unless it blocks; BLPOP (a blocking write) on the primary.
    assert r.xread({"pin:stream": "0"}, count=1)[0][0] == b"pin:stream"
    assert r.xread({"pin:stream": "$"}, count=1, block=50) == []
    assert command_calls(topology, replica, "xread") == 1
    assert command_calls(topology, primary, "xread") == 1
    assert r.blpop(["pin:empty"], timeout=0.1) is None
    assert command_calls(topology, replica, "blpop") == 0

    # CLIENT TRACKING pins while it is on.
    t = client(proxy, single_connection_client=True)
    before = command_calls(topology, primary, "strlen")
    t.execute_command("CLIENT", "TRACKING", "ON")
    assert t.strlen("pin:k") == 1
    assert command_calls(topology, primary, "strlen") == before + 1
    t.execute_command("CLIENT", "TRACKING", "OFF")
    on_replica = command_calls(topology, replica, "strlen")
    assert t.strlen("pin:k") == 1
    assert command_calls(topology, replica, "strlen") == on_replica + 1


def test_pipeline_is_split_with_replies_in_order(proxy, topology):
    rc = topology.redis
    replica, primary = rc.replicas[0], rc.primary
    direct = node_client(topology, primary)
    for i in range(50):
        direct.set(f"pl:{i}", i)
    replicated(topology, "pl:49", b"49")
    reset_stats(topology)
    c = client(proxy)  # never writes
    pipe = c.pipeline(transaction=False)
    for i in range(50):
        pipe.get(f"pl:{i}")
        pipe.echo(f"e{i}")  # not readonly: the primary answers
    replies = pipe.execute()
    assert replies[0::2] == [str(i).encode() for i in range(50)]
    assert replies[1::2] == [f"e{i}".encode() for i in range(50)]
    assert command_calls(topology, replica, "get") == 50
    assert command_calls(topology, primary, "echo") == 50
    assert command_calls(topology, primary, "get") == 0


def test_select_is_replayed_on_the_replica(proxy, topology):
    rc = topology.redis
    replica = rc.replicas[0]
    node_client(topology, rc.primary, db=1).set("db:k", "one")
    node_client(topology, rc.primary, db=2).set("db:k", "two")
    wait_until("db:k on the replica",
               lambda: node_client(topology, replica, db=2).get("db:k") == b"two")
    reset_stats(topology)
    c = client(proxy, db=1, single_connection_client=True)
    assert c.get("db:k") == b"one"
    c.execute_command("SELECT", 2)
    assert c.get("db:k") == b"two"
    c.execute_command("SELECT", 0)
    assert c.get("db:k") is None
    assert command_calls(topology, replica, "get") == 3


# ------------------------------------------------------------------- shared server connections


def server_connections_running(topology, node, command: str) -> list[dict]:
    """The connections of `node` whose last command was `command` (CLIENT LIST)."""
    me = node_client(topology, node)
    return [c for c in me.client_list() if c.get("cmd") == command]


def connections_received(topology, node) -> int:
    """How many connections `node` has accepted so far (this INFO client included)."""
    return int(node_client(topology, node).info("stats")["total_connections_received"])


def run_together(clients: list, body) -> list[str]:
    """Runs body(i, client) for every client at the same time (a barrier starts them all);
    returns the errors the bodies returned."""
    errors: list[str] = []
    start = threading.Barrier(len(clients))

    def run(i: int) -> None:
        start.wait(timeout=20)
        if (error := body(i, clients[i])) is not None:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def test_plain_reads_of_many_clients_share_a_server_connection(proxy, topology):
    rc = topology.redis
    replica = rc.replicas[0]
    direct = node_client(topology, rc.primary)
    clients_n, reads = 24, 150
    for i in range(clients_n):
        direct.set(f"sh:{i}", f"value-{i}")
    replicated(topology, f"sh:{clients_n - 1}", f"value-{clients_n - 1}".encode())
    # The first read of a worker opens its shared connection in the background (that read and
    # those right behind it use the client's own connection): open them before counting.
    for _ in range(4):  # sessions go round-robin over the workers
        warm = client(proxy, single_connection_client=True)
        assert warm.get("sh:0") == b"value-0"
    time.sleep(0.5)
    opened_before = connections_received(topology, replica)
    clients = [client(proxy, single_connection_client=True) for _ in range(clients_n)]

    def reader(i: int, c) -> Optional[str]:
        for n in range(reads):
            got = c.get(f"sh:{i}")
            if got != f"value-{i}".encode():  # another client's reply would show here
                return f"client {i} read {got!r} at {n}"
        return None

    errors = run_together(clients, reader)
    assert not errors, errors[:5]
    # The replica served them all over the shared connections: 24 new clients made no new
    # server connections (24 without sharing); the INFO client that counts them is 1.
    opened = connections_received(topology, replica) - opened_before
    getters = server_connections_running(topology, replica, "get")
    print(f"\n{clients_n} clients x {reads} GETs: {opened} new replica connections, "
          f"{len(getters)} connections ran GET")
    assert opened <= 3, opened


def test_plain_writes_of_many_clients_share_a_server_connection(proxy, topology):
    rc = topology.redis
    primary = node_client(topology, rc.primary)
    for _ in range(4):  # one warm shared connection to the primary per worker
        assert client(proxy, single_connection_client=True).set("shw:warm", "1")
    time.sleep(0.5)
    opened_before = connections_received(topology, rc.primary)
    clients_n, writes = 24, 100
    clients = [client(proxy, single_connection_client=True) for _ in range(clients_n)]

    def writer(i: int, c) -> Optional[str]:
        for n in range(writes):
            # Steps unique to each client: another client's reply would show here.
            if (got := c.incrby(f"shw:{i}", i + 1)) != (n + 1) * (i + 1):
                return f"client {i}: INCRBY answered {got} at {n}"
        c.rpush(f"shw:list:{i}", *range(3))
        return None

    errors = run_together(clients, writer)
    assert not errors, errors[:5]
    opened = connections_received(topology, rc.primary) - opened_before
    print(f"\n{clients_n} clients x {writes} INCRs: {opened} new primary connections")
    assert opened <= 3, opened
    for i in range(clients_n):
        assert primary.get(f"shw:{i}") == str(writes * (i + 1)).encode()
        assert primary.lrange(f"shw:list:{i}", 0, -1) == [b"0", b"1", b"2"]


def test_a_shared_write_waits_for_the_sessions_shared_read_on_a_replica(proxy, topology):
    """GET k then INCR k in one pipeline: the GET goes to a replica's shared connection, the
    INCR to the primary's. The INCR must not run before the GET is answered (a direct
    connection runs them in order), even when the replica is slow."""
    rc = topology.redis
    replica = rc.replicas[0]
    node_client(topology, rc.primary).set("shw:order", "1")
    replicated(topology, "shw:order", b"1")
    for _ in range(4):  # each worker's shared connections to both nodes are open
        warm = client(proxy, single_connection_client=True)
        assert warm.get("shw:order") == b"1" and warm.set("shw:order-warm", "1")
    time.sleep(0.5)
    pid = replica.pid()
    with socket.create_connection(("127.0.0.1", proxy.redis_port), timeout=20) as s:
        os.kill(pid, signal.SIGSTOP)
        try:
            s.sendall(b"*2\r\n$3\r\nGET\r\n$9\r\nshw:order\r\n"
                      b"*2\r\n$4\r\nINCR\r\n$9\r\nshw:order\r\n")
            time.sleep(0.5)
            # The GET waits at the frozen replica; the INCR must still be waiting behind it.
            assert node_client(topology, rc.primary).get("shw:order") == b"1"
        finally:
            os.kill(pid, signal.SIGCONT)
        replies = b""
        deadline = time.monotonic() + 20
        while replies.count(b"\r\n") < 3 and time.monotonic() < deadline:
            replies += s.recv(4096)
    assert replies == b"$1\r\n1\r\n:2\r\n", replies


def test_wait_covers_writes_made_over_a_shared_connection(proxy, topology):
    """WAIT counts the replicas that have its connection's last write; the proxy sends a
    replicated no-op on the client's own connection first, so writes that went over a shared
    connection count. With the replica frozen WAIT must time out, not claim a copy."""
    rc = topology.redis
    replica = rc.replicas[0]
    c = client(proxy, single_connection_client=True)
    for _ in range(4):  # the shared connections are open: the SET below goes over one
        assert client(proxy, single_connection_client=True).set("shw:wait-warm", "1")
    time.sleep(0.5)
    primary = node_client(topology, rc.primary)

    def publishes() -> int:
        return int(primary.info("commandstats").get("cmdstat_publish", {}).get("calls", 0))

    before = publishes()
    pid = replica.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        assert c.set("shw:wait", "1")
        started = time.monotonic()
        assert c.execute_command("WAIT", 1, 400) == 0
        assert time.monotonic() - started >= 0.35
    finally:
        os.kill(pid, signal.SIGCONT)
    # The SET went over a shared connection: WAIT was fenced, once.
    assert publishes() == before + 1
    assert c.execute_command("WAIT", 1, 10000) == 1
    assert publishes() == before + 1  # no shared write since: no second fence
    # The fence is a PUBLISH nobody hears; the data is unchanged.
    assert node_client(topology, rc.primary).get("shw:wait") == b"1"


def test_wait_errs_when_the_fence_is_refused(proxy, topology):
    """Without channel rights the fence (a PUBLISH) is refused: a WAIT after shared writes cannot
    know what the replicas have, so it gets an error instead of a count that would overstate it;
    the session goes on."""
    rc = topology.redis
    primary = node_client(topology, rc.primary)
    c = client(proxy, single_connection_client=True)
    for _ in range(4):  # the shared connections are open: the SET below goes over one
        assert client(proxy, single_connection_client=True).set("shw:refused-warm", "1")
    time.sleep(0.5)
    primary.execute_command("ACL", "SETUSER", "default", "resetchannels")
    try:
        assert c.set("shw:refused", "1")
        with pytest.raises(redis.ResponseError, match="refused the proxy's PUBLISH fence"):
            c.execute_command("WAIT", 1, 5000)
        assert c.get("shw:refused") in (b"1", None)  # the session is still usable
        # No shared write since the refused WAIT: the next one needs no fence and counts.
        assert c.execute_command("WAIT", 1, 10000) == 1
    finally:
        primary.execute_command("ACL", "SETUSER", "default", "allchannels")


def test_clients_that_label_their_connection_still_share(proxy, topology):
    """redis-py >= 5 and go-redis 9 send CLIENT SETINFO when they connect (Redis 7.0 answers it
    with an error, 7.2 with OK): it only labels the connection, so their reads still share."""
    rc = topology.redis
    replica = rc.replicas[0]
    node_client(topology, rc.primary).set("sh:label", "v")
    replicated(topology, "sh:label", b"v")
    for _ in range(4):  # one warm shared connection per worker
        assert client(proxy, single_connection_client=True).get("sh:label") == b"v"
    time.sleep(0.5)
    opened_before = connections_received(topology, replica)
    clients_n, reads = 12, 150
    clients = [client(proxy, single_connection_client=True) for _ in range(clients_n)]
    for c in clients:
        for field, value in (("LIB-NAME", "redis-py"), ("LIB-VER", "5.0.0")):
            try:
                assert c.execute_command("CLIENT", "SETINFO", field, value) == b"OK"
            except redis.ResponseError as e:  # Redis < 7.2
                assert "SETINFO" in str(e).upper(), e
        assert c.execute_command("CLIENT", "GETNAME") is None

    def reader(i: int, c) -> Optional[str]:
        for n in range(reads):
            if (got := c.get("sh:label")) != b"v":
                return f"client {i} read {got!r} at {n}"
        return None

    errors = run_together(clients, reader)
    assert not errors, errors[:5]
    opened = connections_received(topology, replica) - opened_before
    # Without sharing the clients would have opened their own replica connections (12 here).
    print(f"\n{clients_n} labelled clients: {opened} new replica connections")
    assert opened <= 3, opened


def test_a_client_in_resp3_or_another_db_keeps_its_own_connection(proxy, topology):
    rc = topology.redis
    node_client(topology, rc.primary).hset("sh:h", mapping={"a": "1"})
    node_client(topology, rc.primary, db=3).set("sh:db3", "three")
    wait_until("sh:db3 on the replica",
               lambda: node_client(topology, rc.replicas[0], db=3).get("sh:db3") == b"three")
    wait_until("sh:h on the replica",
               lambda: node_client(topology, rc.replicas[0]).hget("sh:h", "a") == b"1")
    # RESP3: HGETALL answers with a map ('%'), which a shared RESP2 connection would not.
    with socket.create_connection(("127.0.0.1", proxy.redis_port), timeout=10) as s:
        s.sendall(b"HELLO 3\r\n")
        hello = b""
        while b"modules" not in hello:
            hello += s.recv(65536)
        s.sendall(b"*2\r\n$7\r\nHGETALL\r\n$4\r\nsh:h\r\n")
        reply = s.recv(65536)
        assert reply.startswith(b"%1\r\n"), reply
    # Another database: the read must not run in db 0.
    c = client(proxy, db=3, single_connection_client=True)
    for _ in range(20):
        assert c.get("sh:db3") == b"three"


def test_a_lost_shared_connection_is_replaced(proxy, topology):
    rc = topology.redis
    replica = rc.replicas[0]
    node_client(topology, rc.primary).set("sh:lost", "v")
    replicated(topology, "sh:lost", b"v")
    c = client(proxy, single_connection_client=True)
    for _ in range(20):
        assert c.get("sh:lost") == b"v"
    killed = 0
    for conn in server_connections_running(topology, replica, "get"):
        killed += node_client(topology, replica).client_kill_filter(_id=conn["id"])
    assert killed >= 1
    # Nothing was in flight: every read succeeds, on the client's own connection until a new
    # shared one is open.
    for _ in range(200):
        assert c.get("sh:lost") == b"v"
    time.sleep(1.2)
    for _ in range(50):
        assert c.get("sh:lost") == b"v"
    assert server_connections_running(topology, replica, "get")


def test_lagging_replica_is_banned_and_comes_back(topology):
    rc = topology.redis
    replica = rc.replicas[0]
    direct = node_client(topology, rc.primary)
    direct.set("lag:k", "v")
    replicated(topology, "lag:k", b"v")
    with start_proxy(topology, region=LOCAL_REGION, monitor={"interval": "250ms"},
                     redis={"max_lag": {"seconds": "1s"}}) as p:
        c = client(p)  # never writes

        def replica_share(n: int = 20) -> int:
            before = command_calls(topology, replica, "get")
            for _ in range(n):
                assert c.get("lag:k") == b"v"
            return command_calls(topology, replica, "get") - before

        wait_until("reads on the replica", lambda: replica_share() == 20, timeout=10)
        stop = threading.Event()

        def writer() -> None:  # keeps the primary moving so that the delay is lag
            w = node_client(topology, rc.primary)
            n = 0
            while not stop.is_set():
                w.set("lag:tick", n)
                n += 1
                stop.wait(0.02)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        try:
            with delayed_link(topology, delay=2.0):
                wait_until("the lagging replica to be banned", lambda: replica_share() == 0,
                           timeout=15)
                assert replica_share(50) == 0
        finally:
            stop.set()
            thread.join(timeout=5)
        wait_until("reads back on the replica", lambda: replica_share() == 20, timeout=15)
