"""Fixtures for integration tests against real PostgreSQL/Redis and the real proxy binary.

    topology (module)  ── PgCluster + RedisCluster from tests/harness/topology.py
    proxy    (module)  ── nerava-proxy ($NERAVA_PROXY_BIN --config FILE) in front of it
    start_proxy(topology, **overrides)  ── the same as a context manager, for custom configs

Every wait is bounded; a proxy that dies during a module fails that module's teardown, and a
failing test gets the proxy's log tail attached to its report.
"""

from __future__ import annotations

import contextlib
import copy
import faulthandler
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.harness.topology import (  # noqa: E402
    APP_DB, APP_PASSWORD, APP_USER, Topology, free_port, log_tail, wait_until)

PROXY_START_SECONDS = 20.0
PROXY_STOP_SECONDS = 5.0
# Per-test limit: a hang (a reply that never comes) must become a failure, not a stuck run.
TEST_TIMEOUT_SECONDS = int(os.environ.get("NERAVA_TEST_TIMEOUT", "120"))
# Set by ctest in a -DNERAVA_SANITIZE=ON build: the proxy runs under ASan+UBSan, whose shadow
# memory and quarantine make peak-RSS bounds meaningless (correctness checks still apply).
SANITIZED = os.environ.get("NERAVA_PROXY_SANITIZED") == "1"
# ASan/LSan headers, and UBSan's "file.cc:LINE:COL: runtime error:" (not a relayed server text).
_SANITIZER_ERROR = re.compile(r"ERROR: (Address|Leak)Sanitizer|\.\w+:\d+:\d+: runtime error:")

_active_proxies: list["ProxyProcess"] = []


def _region(i: int) -> str:
    return "us-east-1" if i == 0 else "eu-west-1"


def _merge(base: dict, overrides: dict) -> dict:
    """Deep merge: dicts merge, anything else replaces, None deletes the key."""
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def proxy_config(topology: Topology, run_dir: Path, **overrides) -> dict:
    """The proxy config for topology on fresh free ports (see config/examples/sandbox.yaml)."""
    cfg: dict = {
        "region": "us-east-1",
        "primary_region": "us-east-1",
        "monitor": {"interval": "250ms", "failure_threshold": 3},
        "admin": {"socket": str(run_dir / "admin.sock"), "http": f"127.0.0.1:{free_port()}"},
        "log_level": "debug",
    }
    if topology.pg is not None:
        cfg["postgres"] = {
            "listen": {"rw": f"127.0.0.1:{free_port()}", "ro": f"127.0.0.1:{free_port()}"},
            "auth": "scram-sha-256",
            "users": [{"name": APP_USER, "password": APP_PASSWORD}],
            "nodes": [{"name": n.name, "region": _region(i), "host": n.host, "port": n.port}
                      for i, n in enumerate(topology.pg.nodes)],
            "backend_tls": {"sslmode": "disable"},
        }
    if topology.redis is not None:
        cfg["redis"] = {
            "listen": f"127.0.0.1:{free_port()}",
            "nodes": [{"name": n.name, "region": _region(i), "host": n.host, "port": n.port}
                      for i, n in enumerate(topology.redis.nodes)],
        }
    return _merge(cfg, overrides)


def _port_of(address: Optional[str]) -> Optional[int]:
    return int(address.rsplit(":", 1)[1]) if address else None


def _accepts(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError):
        with socket.create_connection((host, port), timeout=0.5):
            return True
    return False


class ProxyProcess:
    """A running proxy: ports, admin socket, log, and DSN helpers."""

    def __init__(self, config: dict, run_dir: Path, proc: subprocess.Popen, log_path: Path,
                 config_path: Path):
        self.config = config
        self.run_dir = run_dir
        self.proc = proc
        self.log_path = log_path
        self.config_path = config_path
        pg = config.get("postgres") or {}
        listen = pg.get("listen") or {}
        self.host = "127.0.0.1"
        self.pg_port = _port_of(listen.get("rw"))
        self.pg_ro_port = _port_of(listen.get("ro"))
        self.redis_port = _port_of((config.get("redis") or {}).get("listen"))
        self.http_port = _port_of((config.get("admin") or {}).get("http"))
        self.admin_socket = (config.get("admin") or {}).get("socket")
        self._redis_clients: list = []

    def redis_client(self, **kwargs):
        """A redis-py client of the proxy's Redis listener, disconnected before the proxy stops
        (its drain waits for connected clients, and redis-py 4's close() keeps the socket in
        the client's pool)."""
        import redis

        kwargs.setdefault("socket_timeout", 20)
        kwargs.setdefault("socket_connect_timeout", 10)
        client = redis.Redis(host=self.host, port=self.redis_port, **kwargs)
        self._redis_clients.append(client)
        return client

    def disconnect_clients(self) -> None:
        while self._redis_clients:
            disconnect_redis(self._redis_clients.pop())


    def dsn(self, user: str = APP_USER, password: Optional[str] = APP_PASSWORD,
            dbname: str = APP_DB, port: Optional[int] = None, **extra) -> str:
        from psycopg.conninfo import make_conninfo

        params = {"host": self.host, "port": port or self.pg_port, "user": user,
                  "dbname": dbname, "connect_timeout": 10}
        if password is not None:
            params["password"] = password
        params.update(extra)
        return make_conninfo("", **params)

    def ro_dsn(self, **kwargs) -> str:
        return self.dsn(port=self.pg_ro_port, **kwargs)

    def pg_env(self, **overrides) -> dict:
        """Environment for libpq command-line tools (psql, pgbench) pointed at the proxy."""
        env = dict(os.environ)
        env.update({"PGHOST": self.host, "PGPORT": str(self.pg_port), "PGUSER": APP_USER,
                    "PGPASSWORD": APP_PASSWORD, "PGDATABASE": APP_DB,
                    "PGCONNECT_TIMEOUT": "10"})
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)


def disconnect_redis(client) -> None:
    """Closes a redis-py client's connections for good (close() only returns them to its pool)."""
    with contextlib.suppress(Exception):
        client.close()
    with contextlib.suppress(Exception):
        client.connection_pool.disconnect()


def _write_yaml(path: Path, cfg: dict) -> None:
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False))


def _proxy_binary() -> str:
    binary = os.environ.get("NERAVA_PROXY_BIN")
    if not binary:
        pytest.skip("NERAVA_PROXY_BIN is not set (ctest sets it to the built nerava-proxy)")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"NERAVA_PROXY_BIN={binary} is not an executable file")
    return binary


def sanitizer_report(log_path: Path) -> Optional[str]:
    """The proxy log from the first ASan/LSan/UBSan report on, or None. The sanitizers print to
    stderr, which the harness sends to the log; a report means a memory or UB bug even when
    every client got the right answer."""
    with contextlib.suppress(OSError):
        text = log_path.read_text(errors="replace")
        found = _SANITIZER_ERROR.search(text)
        if found:
            start = text.rfind("\n", 0, found.start()) + 1
            return text[start:start + 6000]
    return None


def check_sanitizer_report(proxy: "ProxyProcess", body_ok: bool) -> bool:
    """After the proxy stopped: raises if it printed a sanitizer report and the body passed
    (a failing body's own error is already on its way out; the report is printed either way).
    Returns whether the run dir may go."""
    report = sanitizer_report(proxy.log_path)
    if not report:
        return body_ok
    print(f"\nnerava-proxy sanitizer report ({proxy.run_dir}):\n{report}", file=sys.stderr)
    if body_ok:
        raise AssertionError(f"nerava-proxy reported a sanitizer error:\n{report}")
    return False


def _stop(proc: subprocess.Popen, tail: Callable[[], str]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=PROXY_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        # The drain waits for clients still connected: a test that leaves one open lands here.
        test = os.environ.get("PYTEST_CURRENT_TEST", "?")
        print(f"\nnerava-proxy pid {proc.pid} ignored SIGTERM for {PROXY_STOP_SECONDS:.0f}s "
              f"({test}): killing it\n{tail()}", file=sys.stderr)
        proc.kill()
        proc.wait(timeout=10)


def _launch(topology: Topology, **overrides) -> ProxyProcess:
    """Writes the config (overrides deep-merged in) to a fresh run dir and starts the proxy."""
    binary = _proxy_binary()
    run_dir = Path(tempfile.mkdtemp(prefix="nerava-proxy-", dir="/tmp"))
    os.chmod(run_dir, 0o755)
    cfg = proxy_config(topology, run_dir, **overrides)
    config_path = run_dir / "proxy.yaml"
    _write_yaml(config_path, cfg)
    log_path = run_dir / "proxy.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("REGION", "PRIMARY_REGION")}  # they would override the file
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([binary, "--config", str(config_path)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run_dir)
    return ProxyProcess(cfg, run_dir, proc, log_path, config_path)


def _finish(proxy: ProxyProcess, ok: bool) -> None:
    """Teardown shared by both context managers once the proxy has stopped: the sanitizer
    check, then the run dir goes (passed) or stays with its log printed (failed)."""
    if check_sanitizer_report(proxy, body_ok=ok):
        shutil.rmtree(proxy.run_dir, ignore_errors=True)
    else:
        print(f"\nproxy run dir kept: {proxy.run_dir}\n{proxy.log_tail()}", file=sys.stderr)


@contextlib.contextmanager
def start_proxy(topology: Topology, wait_ready: bool = True,
                **overrides) -> Iterator[ProxyProcess]:
    """Starts the proxy for topology with config overrides deep-merged in, e.g.
    `start_proxy(topo, postgres={"auth": "md5", "tls": {"cert": c, "key": k}})`.
    Stops it on exit (SIGTERM, 5 s, SIGKILL). Raises if the proxy died while in use."""
    proxy = _launch(topology, **overrides)
    _active_proxies.append(proxy)
    ok = False
    try:
        if wait_ready:
            _wait_ready(proxy)
        yield proxy
        # Reached only when the body did not raise.
        if not proxy.alive():
            raise AssertionError(f"the proxy exited with code {proxy.proc.returncode} while in "
                                 f"use\n{proxy.log_tail()}")
        ok = True
    finally:
        _active_proxies.remove(proxy)
        proxy.disconnect_clients()
        _stop(proxy.proc, proxy.log_tail)
        _finish(proxy, ok)


@contextlib.contextmanager
def unmanaged_proxy(topology: Topology, **overrides) -> Iterator[ProxyProcess]:
    """Like start_proxy, but the test may stop the proxy itself (start_proxy treats a proxy
    that exited inside the body as a failure). Killed on exit if still running."""
    proxy = _launch(topology, **overrides)
    _active_proxies.append(proxy)
    ok = False
    try:
        _wait_ready(proxy)
        yield proxy
        ok = True
    finally:
        _active_proxies.remove(proxy)
        if proxy.alive():
            proxy.proc.kill()
            proxy.proc.wait(timeout=10)
        _finish(proxy, ok)


def port_refuses(port: int) -> bool:
    """Whether a connection to 127.0.0.1:port is refused (nothing listens any more)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def _wait_ready(proxy: ProxyProcess) -> None:
    def listening() -> bool:
        if not proxy.alive():
            raise AssertionError(f"the proxy exited with code {proxy.proc.returncode} at "
                                 f"start-up\n{proxy.log_tail()}")
        port = proxy.pg_port or proxy.redis_port
        return _accepts(port)

    try:
        wait_until("the proxy to accept connections", listening, timeout=PROXY_START_SECONDS,
                   log=proxy.log_path)
    except AssertionError:
        raise
    except Exception as e:
        pytest.fail(str(e))
    # Best effort: give the monitor time to learn the roles (/readyz turns 200 once a primary
    # is known). Sessions would wait for a primary anyway; this only keeps first queries fast.
    if proxy.http_port and _accepts(proxy.http_port):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                url = f"http://127.0.0.1:{proxy.http_port}/readyz"
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        break
            time.sleep(0.1)
        _wait_nodes_seen_up(proxy)


def _wait_nodes_seen_up(proxy: ProxyProcess, timeout: float = 3.0) -> None:
    """Best effort: a primary is known, but a replica's first check may still be on its way, and a
    test that acts at once (a region switch, a read meant for the replica) would race it. Nodes a
    test stopped on purpose cost it `timeout`."""
    if not proxy.http_port:
        return
    configured = sum(len((proxy.config.get(proto) or {}).get("nodes") or [])
                     for proto in ("postgres", "redis"))
    up_line = re.compile(r'^nerava_proxy_node_up\{[^}]*\} 1(\.0)?$', re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            url = f"http://127.0.0.1:{proxy.http_port}/metrics"
            with urllib.request.urlopen(url, timeout=1) as r:
                if len(up_line.findall(r.read().decode())) >= configured:
                    return
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    with Topology(pg_replicas=1, redis_replicas=1) as topo:
        yield topo


@pytest.fixture(scope="module")
def proxy(topology) -> Iterator[ProxyProcess]:
    with start_proxy(topology) as p:
        yield p


@pytest.fixture(autouse=True)
def _per_test_timeout(request):
    """SIGALRM turns a blocked test body into a TimeoutError failure; faulthandler is the
    backstop that dumps stacks and exits if even that cannot interrupt it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"{request.node.nodeid} exceeded the per-test limit of "
                           f"{TEST_TIMEOUT_SECONDS}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT_SECONDS)
    faulthandler.dump_traceback_later(TEST_TIMEOUT_SECONDS + 60, exit=True)
    try:
        yield
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def self_signed_cert(tmp_path_factory) -> tuple[str, str]:
    """(cert, key) paths of a fresh self-signed certificate for CN=localhost."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "server.crt", d / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=localhost", "-days", "1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o600)
    return str(cert), str(key)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _active_proxies:
        for p in _active_proxies:
            state = "running" if p.alive() else f"exited with code {p.proc.returncode}"
            report.sections.append((f"proxy log ({state}, pg port {p.pg_port})",
                                    p.log_tail()))
