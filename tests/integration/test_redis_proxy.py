"""End-to-end Redis tests through nerava-proxy ($NERAVA_PROXY_BIN) against a real Redis primary
with a replica. Every command goes to the primary in this issue, so results are checked against
the primary directly.

Real clients: redis-cli (RESP2 and -3), redis-benchmark, python3-redis (4.3, which speaks RESP2
only: RESP3 is checked with the raw-socket client below). Every call is bounded (socket timeouts,
subprocess timeouts, the per-test SIGALRM limit in conftest.py): a hang fails the test.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import signal
import socket
import subprocess
import threading
import time
from typing import Any

import pytest
import redis

from tests.harness.topology import Topology, wait_until
from conftest import SANITIZED, disconnect_redis, port_refuses, start_proxy, unmanaged_proxy

CMD_TIMEOUT = 60
PASSWORD = "proxy-s3cret"


@pytest.fixture(scope="module")
def topology():
    # Redis only: the PostgreSQL half has its own module.
    with Topology(postgres=False, redis_replicas=1) as topo:
        yield topo


_open_clients: list[redis.Redis] = []


@pytest.fixture(autouse=True)
def _close_clients():
    # Idle connections would hold the proxy's drain (and its stop) for shutdown_timeout.
    yield
    while _open_clients:
        disconnect_redis(_open_clients.pop())


def client(proxy, **kwargs) -> redis.Redis:
    c = proxy.redis_client(**kwargs)
    _open_clients.append(c)
    return c


def direct(topology, **kwargs) -> redis.Redis:
    c = topology.redis.client(topology.redis.primary, **kwargs)
    _open_clients.append(c)
    return c


# ------------------------------------------------------------------------ raw RESP2/RESP3 client


class Push(list):
    """A RESP3 push ('>'), told apart from an array reply."""


class RawRedis:
    """A byte-level client: sends exactly what a test says and reads one RESP value at a time."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> "RawRedis":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, *args) -> None:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))

    def call(self, *args) -> Any:
        self.send(*args)
        return self.read()

    def _line(self) -> bytes:
        line = self.file.readline()
        if not line:
            raise EOFError("connection closed")
        assert line.endswith(b"\r\n"), line
        return line[:-2]

    def read(self) -> Any:
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return redis.ResponseError(rest.decode())
        if t in (b":", b"("):
            return int(rest)
        if t in (b"$", b"=", b"!"):
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)[:-2]
            return redis.ResponseError(data.decode()) if t == b"!" else data
        if t in (b"*", b"~", b">"):
            n = int(rest)
            if n < 0:
                return None
            items = [self.read() for _ in range(n)]
            return Push(items) if t == b">" else items
        if t == b"%":
            return {self._key(self.read()): self.read() for _ in range(int(rest))}
        if t == b"|":
            for _ in range(int(rest) * 2):
                self.read()
            return self.read()
        if t == b"_":
            return None
        if t == b",":
            return float(rest)
        if t == b"#":
            return rest == b"t"
        raise AssertionError(f"unexpected RESP type {line!r}")

    @staticmethod
    def _key(k):
        return k if not isinstance(k, list) else tuple(k)

    def at_eof(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.file.read(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


def run(argv: list[str], timeout: float = CMD_TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def cli(proxy, *args: str, resp3: bool = False) -> str:
    argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(proxy.redis_port)]
    if resp3:
        argv.append("-3")
    res = run(argv + list(args))
    assert res.returncode == 0, f"redis-cli {args} failed: {res.stderr}"
    return res.stdout.strip()


def proxy_peak_rss_kib(proxy) -> int:
    with open(f"/proc/{proxy.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


# ------------------------------------------------------------------------------- command-line


def test_redis_cli_resp2(proxy, topology):
    assert cli(proxy, "PING") == "PONG"
    assert cli(proxy, "SET", "cli:k", "hello") == "OK"
    # Each redis-cli is a new session: its GET may go to the replica, which has the write a
    # moment later (read-your-writes is per session, DESIGN §6).
    wait_until("the replica to have cli:k", lambda: cli(proxy, "GET", "cli:k") == "hello",
               timeout=10, interval=0.02)
    assert direct(topology).get("cli:k") == b"hello"
    assert cli(proxy, "GET", "cli:missing") == ""
    assert "ERR" in cli(proxy, "NOSUCHCOMMAND")


def test_redis_cli_resp3(proxy):
    cli(proxy, "DEL", "cli:h")
    assert cli(proxy, "HSET", "cli:h", "f1", "v1", "f2", "v2", resp3=True) == "2"
    out = cli(proxy, "HGETALL", "cli:h", resp3=True)
    # redis-cli prints a RESP3 map as "key => value" pairs; RESP2 would be a flat list.
    assert "f1" in out and "v1" in out
    with RawRedis(proxy.redis_port) as r:
        hello = r.call("HELLO", "3")
        assert hello[b"proto"] == 3
        assert r.call("HGETALL", "cli:h") == {b"f1": b"v1", b"f2": b"v2"}


def _bench(port: int, *args: str, timeout: float = 240) -> str:
    res = run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), *args], timeout=timeout)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    return out


def test_redis_benchmark_pipelined(proxy):
    tests = ["SET", "GET", "INCR", "LPUSH", "LPOP"]
    out = _bench(proxy.redis_port, "-t", "set,get,incr,lpush,lpop", "-n", "100000", "-P", "16",
                 "-q")
    # -q prints progress lines ending in \r, then "NAME: N requests per second, ...".
    final = {m.group(1): float(m.group(2))
             for m in re.finditer(r"(?:^|\r|\n)\s*([A-Z]+[A-Z_ ()0-9]*?): ([\d.]+) requests per "
                                  r"second", out)}
    for name in tests:
        assert name in final and final[name] > 0, out[-2000:]
    assert "error" not in out.lower(), out[-2000:]

    out = _bench(proxy.redis_port, "-t", "set,get,incr,lpush,lpop", "-n", "20000", "-P", "16",
                 "--csv")
    rows = list(csv.reader(io.StringIO(out.strip())))
    assert rows[0][:2] == ["test", "rps"], out
    by_name = {row[0]: float(row[1]) for row in rows[1:]}
    for name in tests:
        key = next(k for k in by_name if k.startswith(name))
        assert by_name[key] > 0, out


# --------------------------------------------------------------------------------- redis-py


def test_pipeline_1000_in_order(proxy):
    r = client(proxy)
    pipe = r.pipeline(transaction=False)
    for i in range(1000):
        if i % 3 == 0:
            pipe.set(f"pipe:{i}", i)
        elif i % 3 == 1:
            pipe.incr("pipe:counter")
        else:
            pipe.get(f"pipe:{i - 2}")
    r.delete("pipe:counter")
    results = pipe.execute()
    assert len(results) == 1000
    counter = 0
    for i, value in enumerate(results):
        if i % 3 == 0:
            assert value is True
        elif i % 3 == 1:
            counter += 1
            assert value == counter
        else:
            assert value == str(i - 2).encode()


def test_pipeline_backpressure_small_queue(topology):
    # A queue of 4 pending requests: a 1000-command pipeline must still complete in order.
    with start_proxy(topology, redis={"max_pipeline": 4}) as p:
        r = client(p)
        pipe = r.pipeline(transaction=False)
        for i in range(1000):
            pipe.echo(f"v{i}")
        assert pipe.execute() == [f"v{i}".encode() for i in range(1000)]


def test_transaction_and_watch_conflict(proxy):
    a, b = client(proxy), client(proxy)
    a.set("tx:k", "0")
    with a.pipeline() as pipe:
        pipe.multi()
        pipe.incr("tx:k")
        pipe.incr("tx:k")
        assert pipe.execute() == [1, 2]
    with a.pipeline() as pipe:
        pipe.watch("tx:k")
        assert pipe.get("tx:k") == b"2"
        b.set("tx:k", "changed")  # another client touches the watched key
        pipe.multi()
        pipe.set("tx:k", "mine")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert a.get("tx:k") == b"changed"
    # Errors inside MULTI abort EXEC (EXECABORT) and the connection stays usable.
    with RawRedis(proxy.redis_port) as raw:
        assert raw.call("MULTI") == "OK"
        assert isinstance(raw.call("NOSUCHCMD"), redis.ResponseError)
        err = raw.call("EXEC")
        assert isinstance(err, redis.ResponseError) and "EXECABORT" in str(err)
        assert raw.call("PING") == "PONG"


def test_pubsub_across_two_clients(proxy):
    publisher = client(proxy)
    subscriber = client(proxy)
    ps = subscriber.pubsub()
    ps.subscribe("news")
    ps.psubscribe("alerts.*")
    confirmations = [ps.get_message(timeout=5) for _ in range(2)]
    assert [m["type"] for m in confirmations] == ["subscribe", "psubscribe"]
    assert publisher.publish("news", "hello") == 1
    assert publisher.publish("alerts.fire", "hot") == 1
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        m = ps.get_message(timeout=1)
        if m:
            got.append(m)
    assert [(m["type"], m["data"]) for m in got] == [("message", b"hello"), ("pmessage", b"hot")]
    ps.close()

    # The same over one raw connection: after unsubscribing from everything, it is an ordinary
    # connection again.
    with RawRedis(proxy.redis_port) as raw:
        assert raw.call("SUBSCRIBE", "c1", "c2") == [b"subscribe", b"c1", 1]
        assert raw.read() == [b"subscribe", b"c2", 2]
        assert raw.call("PING") == [b"pong", b""]  # RESP2 PING while subscribed
        assert publisher.publish("c2", "m") == 1
        assert raw.read() == [b"message", b"c2", b"m"]
        raw.send("UNSUBSCRIBE")  # no arguments: one confirmation per channel
        assert sorted(x[1] for x in [raw.read(), raw.read()]) == [b"c1", b"c2"]
        assert raw.call("PING") == "PONG"
        assert raw.call("SET", "ps:k", "v") == "OK"
        assert raw.call("GET", "ps:k") == b"v"
        assert publisher.publish("c2", "lost") == 0


def test_blocking_pop_does_not_stall_others(proxy):
    blocker, pusher, reader = client(proxy), client(proxy), client(proxy)
    blocker.delete("bq")
    reader.set("bq:probe", "x")
    result: dict = {}

    def blpop():
        t = time.monotonic()
        result["value"] = blocker.blpop(["bq"], timeout=15)
        result["elapsed"] = time.monotonic() - t

    thread = threading.Thread(target=blpop, daemon=True)
    thread.start()
    time.sleep(0.3)
    worst = 0.0
    start = time.monotonic()
    count = 0
    while time.monotonic() - start < 1.5:
        t = time.monotonic()
        assert reader.get("bq:probe") == b"x"
        worst = max(worst, time.monotonic() - t)
        count += 1
    assert thread.is_alive(), "BLPOP returned before anything was pushed"
    assert count > 20 and worst < 0.5, (count, worst)
    pusher.rpush("bq", "item")
    thread.join(timeout=10)
    assert result.get("value") == (b"bq", b"item")
    assert result["elapsed"] < 10


def test_resp3_hello_map_and_pushes(proxy):
    other = client(proxy)
    with RawRedis(proxy.redis_port) as r:
        hello = r.call("HELLO", "3", "SETNAME", "resp3-client")
        assert isinstance(hello, dict) and hello[b"proto"] == 3
        assert r.call("CLIENT", "GETNAME") == b"resp3-client"
        r.call("DEL", "r3:h")
        assert r.call("HSET", "r3:h", "a", "1") == 1
        assert r.call("HGETALL", "r3:h") == {b"a": b"1"}
        assert r.call("GET", "r3:none") is None  # RESP3 null
        # Client-side caching: the invalidation arrives as a push, with no request pending.
        assert r.call("CLIENT", "TRACKING", "ON") == "OK"
        other.set("r3:tracked", "1")
        assert r.call("GET", "r3:tracked") == b"1"
        other.set("r3:tracked", "2")
        push = r.read()
        assert isinstance(push, Push) and push[0] == b"invalidate" and push[1] == [b"r3:tracked"]
        # RESP3 pub/sub: confirmations and messages are pushes; ordinary commands keep working.
        assert r.call("SUBSCRIBE", "r3ch") == Push([b"subscribe", b"r3ch", 1])
        assert r.call("PING") == "PONG"
        assert other.publish("r3ch", "hi") == 1
        assert r.read() == Push([b"message", b"r3ch", b"hi"])
        assert r.call("UNSUBSCRIBE", "r3ch") == Push([b"unsubscribe", b"r3ch", 0])
        assert r.call("HGETALL", "r3:h") == {b"a": b"1"}


def test_large_value_100mb_round_trip(proxy):
    r = client(proxy, socket_timeout=60)
    block = hashlib.sha256(b"nerava").digest() * 32  # 1 KiB
    value = (block * 1024) * 100  # 100 MiB
    assert len(value) == 100 << 20
    assert r.set("big", value) is True
    got = r.get("big")
    assert len(got) == len(value)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(value).hexdigest()
    r.delete("big")
    del got, value
    # Streamed, never held whole: the proxy's peak memory stays far below the value's size
    # (not measurable under ASan, whose shadow memory and quarantine set the peak).
    if not SANITIZED:
        assert proxy_peak_rss_kib(proxy) < 80 * 1024, proxy_peak_rss_kib(proxy)


def test_select_persists(proxy, topology):
    with RawRedis(proxy.redis_port) as r:
        assert r.call("SELECT", "1") == "OK"
        assert r.call("SET", "sel:k", "in-db-1") == "OK"
        assert r.call("GET", "sel:k") == b"in-db-1"
        assert "db=1" in r.call("CLIENT", "INFO").decode()
    assert direct(topology, db=1).get("sel:k") == b"in-db-1"
    assert direct(topology, db=0).get("sel:k") is None
    assert client(proxy, db=1).get("sel:k") == b"in-db-1"


def test_client_setname(proxy):
    with RawRedis(proxy.redis_port) as r:
        assert r.call("CLIENT", "SETNAME", "my-app") == "OK"
        assert r.call("CLIENT", "GETNAME") == b"my-app"


def test_state_replayed_after_server_connection_loss(proxy, topology):
    with RawRedis(proxy.redis_port) as r:
        assert r.call("SELECT", "2") == "OK"
        assert r.call("CLIENT", "SETNAME", "replayed") == "OK"
        assert r.call("SET", "replay:k", "db2") == "OK"
        # Kill the proxy's server connection behind the client's back.
        killed = direct(topology).execute_command("CLIENT", "KILL", "USER", "default",
                                                  "SKIPME", "yes")
        assert killed >= 1
        time.sleep(0.5)
        # The session survives; a new server connection gets SELECT and the name replayed.
        assert r.call("GET", "replay:k") == b"db2"
        assert r.call("CLIENT", "GETNAME") == b"replayed"


def test_proxy_password(topology):
    with start_proxy(topology, redis={"password": PASSWORD}) as p:
        with RawRedis(p.redis_port) as r:
            err = r.call("PING")
            assert isinstance(err, redis.ResponseError) and str(err).startswith("NOAUTH"), err
            err = r.call("SET", "pw:k", "v")
            assert str(err).startswith("NOAUTH")
            err = r.call("AUTH", "wrong")
            assert isinstance(err, redis.ResponseError) and str(err).startswith("WRONGPASS")
            assert r.call("AUTH", PASSWORD) == "OK"
            assert r.call("PING") == "PONG"
            assert r.call("SET", "pw:k", "v") == "OK"
        with RawRedis(p.redis_port) as r:
            err = r.call("HELLO", "3", "AUTH", "default", "wrong")
            assert str(err).startswith("WRONGPASS")
            hello = r.call("HELLO", "3", "AUTH", "default", PASSWORD)
            assert hello[b"proto"] == 3
            assert r.call("GET", "pw:k") == b"v"
        assert client(p, password=PASSWORD).get("pw:k") == b"v"
        # redis-py 4.3 reports WRONGPASS as a plain ResponseError, as it does against Redis.
        with pytest.raises(redis.ResponseError, match="WRONGPASS"):
            client(p, password="nope").ping()
        assert "NOAUTH" in run(["redis-cli", "-p", str(p.redis_port), "GET", "pw:k"]).stdout
        out = run(["redis-cli", "-p", str(p.redis_port), "--no-auth-warning", "-a", PASSWORD,
                   "GET", "pw:k"]).stdout
        assert out.strip() == "v"


@pytest.mark.parametrize("garbage", [b"*-5\r\n", b"$abc\r\n", b"*1\r\n$99999999999\r\n",
                                     b"*1\r\n*1\r\n$4\r\nPING\r\n"])
def test_garbage_closes_only_that_connection(proxy, garbage):
    other = client(proxy)
    other.set("garbage:k", "ok")
    with RawRedis(proxy.redis_port) as r:
        # A valid request first: its reply comes before the error, in order.
        r.send_raw(b"PING\r\n" + garbage + b"PING\r\n")
        assert r.read() == "PONG"
        err = r.read()
        assert isinstance(err, redis.ResponseError), err
        assert str(err).startswith("ERR Protocol error"), err
        assert r.at_eof()
    for _ in range(50):
        assert other.get("garbage:k") == b"ok"


def test_quit(proxy):
    with RawRedis(proxy.redis_port) as r:
        r.send_raw(b"SET quit:k 1\r\nQUIT\r\nGET quit:k\r\n")
        assert r.read() == "OK"
        assert r.read() == "OK"
        assert r.at_eof()


def test_sigterm_serves_connected_clients_then_closes_them(topology):
    """SIGTERM: new connections are refused at once, connected clients are still served until
    shutdown_timeout, then every one is closed (a BLPOP blocked forever included) and the proxy
    exits 0."""
    timeout_s = 3.0
    watcher = direct(topology)
    with unmanaged_proxy(topology, shutdown_timeout="3s") as p, \
            RawRedis(p.redis_port, timeout=timeout_s + 5) as idle, \
            RawRedis(p.redis_port, timeout=timeout_s + 5) as blocked:
        assert idle.call("PING") == "PONG"
        blocked.send("BLPOP", "drain:never", 0)
        wait_until("the BLPOP to block on the server", lambda: any(
            c.get("cmd") == "blpop" for c in watcher.client_list()), timeout=5)

        sigterm_at = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        wait_until("the listener to close", lambda: port_refuses(p.redis_port), timeout=3)

        # Still served while draining.
        assert idle.call("SET", "drain:k", "v") == "OK"
        assert idle.call("GET", "drain:k") == b"v"

        # Closed at the shutdown timeout, not before and not much after; the blocked one after
        # the proxy's one-second grace for replies on their way.
        assert idle.at_eof(timeout=timeout_s + 3)
        idle_closed = time.monotonic() - sigterm_at
        assert timeout_s - 0.5 <= idle_closed <= timeout_s + 1.0, f"closed after {idle_closed}"
        assert blocked.at_eof(timeout=4.0)
        blocked_closed = time.monotonic() - sigterm_at
        # Without the grace it stayed open until the drain's hard stop, 2 s after the timeout.
        assert timeout_s + 0.8 <= blocked_closed <= timeout_s + 1.8, \
            f"BLPOP closed after {blocked_closed:.2f}s"

        try:
            code = p.proc.wait(timeout=max(timeout_s + 5.0 - (time.monotonic() - sigterm_at), 0.1))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the proxy still runs {timeout_s + 5:.0f}s after SIGTERM\n{p.log_tail()}")
        assert code == 0, f"exit code {code}\n{p.log_tail()}"
        log = p.log_path.read_text()
        assert "closing a session at shutdown with 1 replies still due" in log, p.log_tail()
        assert "drain: closing 2 remaining sessions" in log, p.log_tail()


def test_client_tls(topology, self_signed_cert):
    cert, key = self_signed_cert
    with start_proxy(topology, redis={"tls": {"cert": cert, "key": key}}) as p:
        res = run(["redis-cli", "--tls", "--insecure", "-p", str(p.redis_port), "PING"])
        assert res.stdout.strip() == "PONG", res.stdout + res.stderr
        res = run(["redis-cli", "--tls", "--insecure", "-p", str(p.redis_port), "SET", "tls:k",
                   "v"])
        assert res.stdout.strip() == "OK", res.stdout + res.stderr


def test_reset_clears_remembered_state(proxy):
    with RawRedis(proxy.redis_port) as r:
        assert r.call("SELECT", "3") == "OK"
        assert r.call("CLIENT", "SETNAME", "before-reset") == "OK"
        assert r.call("SUBSCRIBE", "reset-ch") == [b"subscribe", b"reset-ch", 1]
        assert r.call("RESET") == "RESET"
        assert r.call("PING") == "PONG"  # no longer in subscribed mode
        assert r.call("CLIENT", "GETNAME") is None
        assert "db=0" in r.call("CLIENT", "INFO").decode()


def test_backend_credentials_with_proxy_password(topology):
    backend_password = "backend-pw"
    primary = topology.redis.primary
    nodes = [topology.redis.client(n) for n in topology.redis.nodes]
    for n in nodes:
        n.config_set("requirepass", backend_password)
    try:
        with start_proxy(topology, redis={"password": PASSWORD,
                                          "backend_password": backend_password}) as p:
            with RawRedis(p.redis_port) as r:
                assert r.call("AUTH", PASSWORD) == "OK"
                assert r.call("SET", "bpw:k", "v") == "OK"
                # RESET logs the client out (the proxy password is required again) while the
                # proxy logs its server connection back in with the backend credentials.
                assert r.call("RESET") == "RESET"
                assert str(r.call("GET", "bpw:k")).startswith("NOAUTH")
                assert r.call("AUTH", PASSWORD) == "OK"
                assert r.call("GET", "bpw:k") == b"v"
    finally:
        for n in topology.redis.nodes:
            c = topology.redis.client(n, password=backend_password)
            c.config_set("requirepass", "")
            c.close()
        for n in nodes:
            n.close()
    assert topology.redis.client(primary).ping()
