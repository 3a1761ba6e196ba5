#!/usr/bin/python3
"""Real PostgreSQL 15 / Redis 7 topologies for integration tests and the sandbox.

    Topology
     ├── PgCluster      pg-primary ──WAL──▶ pg-replica1 … (pg_basebackup -R)
     └── RedisCluster   redis-primary ──repl──▶ redis-replica1 …

Everything lives in one temp dir under /tmp (0755 so the postgres user can traverse it):

    /tmp/nerava-topo-XXXX/
      pg-primary/   data/ (0700, postgres)  postgres.log  .s.PGSQL.<port>
      pg-replica1/  …
      redis-primary/  redis.log
      …

PostgreSQL refuses to run as root, so when euid is 0 its tools run via `runuser -u postgres --`.
Teardown is guaranteed three ways (close() in try/finally or `with`, atexit, SIGTERM handler),
because pg_ctl detaches the postmaster into its own session: a killed test runner would
otherwise leave servers behind.

Library use:
    with Topology(pg_replicas=1, redis_replicas=1) as topo:
        topo.pg.sql(topo.pg.primary, "select 1")

CLI (used by the sandbox script):
    /usr/bin/python3 tests/harness/topology.py up [--pg-replicas N] [--redis-replicas N]
        [--pg-ports P,R] [--redis-ports P,R] [--env-file FILE]
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

PG_USER = "postgres"
APP_USER = "nerava"
APP_PASSWORD = "nerava-secret"
APP_DB = "nerava"
WAIT_SECONDS = 30.0
LOG_TAIL_LINES = 30


class HarnessError(RuntimeError):
    """A server could not be started, stopped or reached."""


class HarnessTimeout(HarnessError):
    """A bounded wait ran out; the message carries the server log tail."""


# ---------------------------------------------------------------------------------------------
# Ports

_issued_ports: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago and that this process never handed out."""
    with _ports_lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _issued_ports:
                _issued_ports.add(port)
                return port
    raise HarnessError("could not find a free port that was not already handed out")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing may bind host:port (a listener exists). SO_REUSEADDR so that a port in
    TIME_WAIT, which the servers can bind, is not reported as taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def reserve_port(port: int) -> None:
    """Marks an explicitly chosen port as handed out, so free_port() never returns it."""
    with _ports_lock:
        _issued_ports.add(port)


# ---------------------------------------------------------------------------------------------
# Small helpers


def log_tail(path: Optional[Path], lines: int = LOG_TAIL_LINES) -> str:
    if path is None:
        return "(no log)"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    tail = text.splitlines()[-lines:]
    return f"--- last {len(tail)} lines of {path} ---\n" + "\n".join(tail)


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = WAIT_SECONDS,
               interval: float = 0.1, log: Optional[Path] = None) -> None:
    """Polls predicate until it returns true; exceptions count as "not yet". On timeout raises
    HarnessTimeout naming what was awaited, the last exception and the log tail."""
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while True:
        try:
            if predicate():
                return
            last_error = None
        except HarnessError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise HarnessTimeout(
                f"timed out after {timeout:.0f}s waiting for {what}{detail}\n{log_tail(log)}")
        time.sleep(interval)


def _is_root() -> bool:
    return os.geteuid() == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (it only waits for its parent to reap it).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    """Direct children of pid, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _mkdir(path: Path, mode: int, owner: Optional[str] = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner and _is_root():
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def _new_base_dir(prefix: str) -> Path:
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(base, 0o755)  # postgres must traverse it
    return base


# ---------------------------------------------------------------------------------------------
# Node


@dataclass
class Node:
    name: str
    host: str
    port: int
    data_dir: Path           # PostgreSQL data dir, or Redis --dir
    role: str                # "primary" | "replica"
    kind: str                # "pg" | "redis"
    node_dir: Path = field(repr=False, default=Path())  # parent: log file and unix socket
    log_path: Path = field(repr=False, default=Path())
    proc: Optional[subprocess.Popen] = field(repr=False, default=None)  # Redis only

    @property
    def socket_dir(self) -> Path:
        return self.node_dir

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def pid(self) -> Optional[int]:
        """The server process id (postmaster / redis-server), or None when it is not running."""
        if self.kind == "redis":
            if self.proc is not None and self.proc.poll() is None:
                return self.proc.pid
            return None
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def pids(self) -> list[int]:
        """The server process and its children (PostgreSQL backends and auxiliaries)."""
        pid = self.pid()
        if pid is None:
            return []
        return [pid] + _children(pid)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


class PgCluster:
    """A PostgreSQL primary with `replicas` streaming replicas."""

    def __init__(self, replicas: int = 1, base_dir: Optional[os.PathLike] = None,
                 ports: Optional[Iterable[int]] = None):
        self.bindir = Path(subprocess.run(["pg_config", "--bindir"], check=True, text=True,
                                          capture_output=True, timeout=30).stdout.strip())
        self._owns_base = base_dir is None
        self.base_dir = _new_base_dir("nerava-pg-") if base_dir is None else Path(base_dir)
        ports = list(ports) if ports else []
        if ports and len(ports) != replicas + 1:
            raise HarnessError(f"{replicas + 1} PostgreSQL ports needed, got {len(ports)}")
        for p in ports:
            reserve_port(p)
        names = ["pg-primary"] + [f"pg-replica{i}" for i in range(1, replicas + 1)]
        self.nodes: list[Node] = []
        for i, name in enumerate(names):
            node_dir = self.base_dir / name
            self.nodes.append(Node(
                name=name, host="127.0.0.1", port=ports[i] if ports else free_port(),
                data_dir=node_dir / "data", role="primary" if i == 0 else "replica", kind="pg",
                node_dir=node_dir, log_path=node_dir / "postgres.log"))
        self._closed = False
        _register(self)
        try:
            self._init_primary()
            for node in self.replicas:
                self._init_replica(node)
        except BaseException:
            self.close()
            raise

    # -- accessors

    @property
    def primary(self) -> Node:
        return self.nodes[0]

    @property
    def replicas(self) -> list[Node]:
        return self.nodes[1:]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def dsn(self, node: Node, user: str = PG_USER, dbname: str = "postgres",
            password: Optional[str] = None, **extra) -> str:
        """A TCP libpq DSN for node. The nerava role gets its password filled in."""
        if password is None and user == APP_USER:
            password = APP_PASSWORD
        parts = {"host": node.host, "port": node.port, "user": user, "dbname": dbname}
        if password is not None:
            parts["password"] = password
        parts.update(extra)
        return " ".join(f"{k}={_dsn_quote(str(v))}" for k, v in parts.items())

    def sql(self, node: Node, query: str, params=None, dbname: str = "postgres",
            timeout: float = 30.0):
        """Runs query as postgres over node's unix socket (autocommit). Returns the rows, or None
        for a statement without a result set."""
        import psycopg

        with psycopg.connect(host=str(node.socket_dir), port=node.port, user=PG_USER,
                             dbname=dbname, autocommit=True, connect_timeout=10,
                             options=f"-c statement_timeout={int(timeout * 1000)}") as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else None

    # -- lifecycle

    def start(self, node: Node) -> None:
        self._pg_ctl(node, "start", "-w", "-t", str(int(WAIT_SECONDS)), "-l", str(node.log_path))
        wait_until(f"{node.name} to accept connections",
                   lambda: self.sql(node, "select 1") is not None, log=node.log_path)

    def stop(self, node: Node, mode: str = "fast") -> None:
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"bad stop mode {mode!r}")
        pid = node.pid()
        if pid is None:
            return
        self._pg_ctl(node, "stop", "-w", "-t", str(int(WAIT_SECONDS)), "-m", mode)
        wait_until(f"{node.name} (pid {pid}) to exit", lambda: not _pid_alive(pid),
                   log=node.log_path)

    def promote(self, node: Node) -> None:
        self._pg_ctl(node, "promote", "-w", "-t", str(int(WAIT_SECONDS)))
        wait_until(f"{node.name} to leave recovery",
                   lambda: self.sql(node, "select pg_is_in_recovery()")[0][0] is False,
                   log=node.log_path)
        node.role = "primary"

    def set_replica_conf(self, node: Node, key: str, value) -> None:
        """Appends `key = 'value'` to node's postgresql.conf and reloads (ALTER SYSTEM is refused on
        a standby). The last occurrence of a key wins."""
        quoted = str(value).replace("'", "''")
        self._append_conf(node, {key: f"'{quoted}'"})
        self._pg_ctl(node, "reload")

    def reload(self, node: Node) -> None:
        """pg_ctl reload, then waits until a new session sees the new configuration (a reload is
        only a signal: the postmaster rereads its files some time later)."""
        before = self.sql(node, "select pg_conf_load_time()")[0][0]
        self._pg_ctl(node, "reload")
        wait_until(f"{node.name} to reload its configuration",
                   lambda: self.sql(node, "select pg_conf_load_time()")[0][0] > before,
                   log=node.log_path)

    def add_hba_lines(self, node: Node, lines: Iterable[str], reload: bool = True) -> None:
        """Inserts pg_hba.conf lines ahead of the catch-all `host all all` line (the first
        matching line wins), then reloads."""
        hba = node.data_dir / "pg_hba.conf"
        old = hba.read_text().splitlines()
        at = next((i for i, line in enumerate(old) if line.split()[:3] == ["host", "all", "all"]),
                  len(old))
        hba.write_text("\n".join(old[:at] + list(lines) + old[at:]) + "\n")
        if reload:
            self.reload(node)

    def create_md5_user(self, node: Node, name: str, password: str,
                        hba_method: Optional[str] = "md5") -> None:
        """A LOGIN role whose password is stored as an MD5 hash, and (unless hba_method is None)
        a pg_hba line that makes the server ask it for `hba_method` ("md5" or "password")."""
        digest = "md5" + hashlib.md5((password + name).encode()).hexdigest()
        self.sql(node, f"CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{digest}'")
        if hba_method:
            self.add_hba_lines(node, [f"host all {name} 127.0.0.1/32 {hba_method}"])

    def enable_ssl(self, node: Node, cert: os.PathLike, key: os.PathLike,
                   hostssl: bool = True) -> None:
        """Turns on ssl with the given certificate and key (copied into the data dir, owned by
        postgres, key mode 0600) and reloads. With hostssl, a `hostssl all all` scram line goes
        ahead of the plain ones; plain connections keep working either way."""
        self.set_ssl_cert(node, cert, key, reload=False)
        self._append_conf(node, {"ssl": "on", "ssl_cert_file": "'server.crt'",
                                 "ssl_key_file": "'server.key'"})
        if hostssl:
            self.add_hba_lines(node, ["hostssl all all 127.0.0.1/32 scram-sha-256"], reload=False)
        self.reload(node)
        wait_until(f"{node.name} to turn ssl on",
                   lambda: self.sql(node, "show ssl")[0][0] == "on", log=node.log_path)

    def set_ssl_cert(self, node: Node, cert: os.PathLike, key: os.PathLike,
                     reload: bool = True) -> None:
        """Replaces the server certificate and key (the files enable_ssl configured)."""
        for src, name in ((cert, "server.crt"), (key, "server.key")):
            dst = node.data_dir / name
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o600)
            if _is_root():
                pw = pwd.getpwnam(PG_USER)
                os.chown(dst, pw.pw_uid, pw.pw_gid)
        if reload:
            self.reload(node)

    def wait_streaming(self, nodes: Optional[list[Node]] = None,
                       timeout: float = WAIT_SECONDS, primary: Optional[Node] = None) -> None:
        """Waits until pg_stat_replication on the primary (nodes[0] unless given: after a
        failover pass the promoted node) shows every given replica streaming."""
        primary = self.primary if primary is None else primary
        nodes = self.replicas if nodes is None else nodes
        if not nodes:
            return
        want = {n.name for n in nodes}

        def streaming() -> bool:
            rows = self.sql(primary, "select application_name, state from pg_stat_replication")
            return want <= {name for name, state in rows if state == "streaming"}

        wait_until(f"replicas {sorted(want)} to stream from {primary.name}", streaming,
                   timeout=timeout, log=nodes[0].log_path)

    # -- failover helpers

    def timeline(self, node: Node) -> int:
        """The timeline node is on: the one it writes (a primary), receives or replays (a
        standby), or, when it is stopped, the one of its last checkpoint (pg_controldata)."""
        if node.pid() is None:
            out = self._run([str(self.bindir / "pg_controldata"), "-D", str(node.data_dir)],
                            node, timeout=30)
            for line in out.splitlines():
                if line.startswith("Latest checkpoint's TimeLineID:"):
                    return int(line.split(":", 1)[1])
            raise HarnessError(f"no TimeLineID in pg_controldata output of {node.name}:\n{out}")
        in_recovery = self.sql(node, "select pg_is_in_recovery()")[0][0]
        if not in_recovery:
            # The WAL file name starts with the timeline in hex; pg_control_checkpoint() would
            # lag behind a promotion until the next checkpoint.
            name = self.sql(node, "select pg_walfile_name(pg_current_wal_lsn())")[0][0]
            return int(name[:8], 16)
        rows = self.sql(node, "select greatest((select max(received_tli) from "
                              "pg_stat_wal_receiver), (select timeline_id from "
                              "pg_control_checkpoint()))")
        return int(rows[0][0])

    def is_primary(self, node: Node) -> bool:
        """True if node is running and out of recovery."""
        return node.pid() is not None and \
            self.sql(node, "select pg_is_in_recovery()")[0][0] is False

    def restart_as_primary_undemoted(self, node: Node) -> None:
        """Starts a stopped old primary as it is, without standby.signal: after a promotion
        elsewhere this is the split-brain case (two nodes out of recovery)."""
        self.start(node)
        node.role = "primary"

    def demote_to_replica(self, old_primary: Node, new_primary: Node,
                          timeout: float = WAIT_SECONDS) -> str:
        """Turns old_primary (stopped, or stopped here with -m fast) into a streaming replica of
        new_primary and waits until it streams. pg_rewind first (wal_log_hints is on since
        _init_primary); if that fails, a fresh pg_basebackup. Returns "rewind" or
        "basebackup", whichever did it."""
        if old_primary is new_primary:
            raise HarnessError(f"{old_primary.name} cannot replicate from itself")
        self.stop(old_primary, mode="fast")
        # pg_rewind refuses a source without full_page_writes (the harness turns it off for
        # speed); it is a reload-time setting.
        self.sql(new_primary, "alter system set full_page_writes = on")
        self.sql(new_primary, "select pg_reload_conf()")
        wait_until(f"{new_primary.name} to turn full_page_writes on",
                   lambda: self.sql(new_primary, "show full_page_writes")[0][0] == "on",
                   log=new_primary.log_path)
        # A checkpoint makes the source's control file show the new timeline; pg_rewind reads it.
        self.sql(new_primary, "checkpoint")
        how = "rewind"
        try:
            self._run([str(self.bindir / "pg_rewind"), "-D", str(old_primary.data_dir),
                       "--source-server", self.dsn(new_primary), "--no-sync"],
                      old_primary, timeout=120)
        except HarnessError as e:
            print(f"nerava harness: pg_rewind of {old_primary.name} failed, taking a new base "
                  f"backup instead: {str(e).splitlines()[0]}", file=sys.stderr)
            how = "basebackup"
            shutil.rmtree(old_primary.data_dir)
            self._run([str(self.bindir / "pg_basebackup"), "-h", new_primary.host,
                       "-p", str(new_primary.port), "-U", PG_USER,
                       "-D", str(old_primary.data_dir), "-X", "stream", "--checkpoint=fast",
                       "--no-sync"], old_primary)
        # Both ways copied new_primary's configuration files: make them this node's again.
        self._append_conf(old_primary, self._node_conf(old_primary))
        self._make_standby(old_primary, new_primary)
        self.start(old_primary)
        old_primary.role = "replica"
        self.wait_streaming([old_primary], timeout=timeout, primary=new_primary)
        return how

    def _make_standby(self, node: Node, upstream: Node) -> None:
        # postgresql.auto.conf is read last, so these lines win over anything copied along.
        conninfo = (f"host={upstream.host} port={upstream.port} user={PG_USER} "
                    f"application_name={node.name}")
        with open(node.data_dir / "postgresql.auto.conf", "a") as f:
            f.write(f"\n# nerava harness: standby of {upstream.name}\n"
                    f"primary_conninfo = '{conninfo}'\n"
                    "primary_slot_name = ''\n")
        signal_file = node.data_dir / "standby.signal"
        signal_file.write_text("")
        if _is_root():
            pw = pwd.getpwnam(PG_USER)
            for path in (signal_file, node.data_dir / "postgresql.auto.conf"):
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def close(self) -> None:
        """Stops every node (immediate) and deletes what the cluster created. Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for node in reversed(self.nodes):
            try:
                self._kill(node)
            except Exception as e:  # noqa: BLE001 - keep tearing down the others
                errors.append(f"{node.name}: {e}")
        if self._owns_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        else:
            for node in self.nodes:
                shutil.rmtree(node.node_dir, ignore_errors=True)
        _unregister(self)
        if errors:
            raise HarnessError("teardown problems: " + "; ".join(errors))

    # -- internals

    def _kill(self, node: Node) -> None:
        pids = node.pids()
        if not pids:
            return
        try:
            self._pg_ctl(node, "stop", "-w", "-t", "10", "-m", "immediate")
        except HarnessError:
            pass
        # pg_ctl should have done it; make sure nothing survives either way.
        for pid in pids:
            if _pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        wait_until(f"{node.name} processes {pids} to exit",
                   lambda: not any(_pid_alive(p) for p in pids), timeout=10, log=node.log_path)

    def _as_pg(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", PG_USER, "--"] + argv if _is_root() else argv

    def _run(self, argv: list[str], node: Optional[Node], timeout: float = 120.0) -> str:
        cmd = self._as_pg(argv)
        try:
            # Output goes to a file rather than a pipe: a daemonised postmaster that inherited the
            # pipe would keep communicate() waiting.
            with tempfile.TemporaryFile() as out:
                res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, timeout=timeout, cwd="/tmp")
                out.seek(0)
                text = out.read().decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            raise HarnessTimeout(f"{' '.join(cmd)} did not finish within {timeout:.0f}s\n"
                                 f"{log_tail(node.log_path if node else None)}") from None
        if res.returncode != 0:
            raise HarnessError(f"{' '.join(cmd)} failed with exit code {res.returncode}:\n"
                               f"{text.strip()}\n{log_tail(node.log_path if node else None)}")
        return text

    def _pg_ctl(self, node: Node, *args: str) -> str:
        return self._run([str(self.bindir / "pg_ctl"), "-D", str(node.data_dir), *args], node,
                         timeout=WAIT_SECONDS + 30)

    def _append_conf(self, node: Node, settings: dict) -> None:
        conf = node.data_dir / "postgresql.conf"
        with open(conf, "a") as f:
            f.write("\n# nerava harness\n")
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")

    def _node_conf(self, node: Node) -> dict:
        return {
            "listen_addresses": "'127.0.0.1'",
            "port": str(node.port),
            "unix_socket_directories": f"'{node.socket_dir}'",
            # The walreceiver uses cluster_name as its application_name: that is how
            # pg_stat_replication tells the replicas apart.
            "cluster_name": f"'{node.name}'",
        }

    def _init_primary(self) -> None:
        node = self.primary
        _mkdir(node.node_dir, 0o755, PG_USER)
        self._run([str(self.bindir / "initdb"), "-D", str(node.data_dir), "-U", PG_USER,
                   "--locale=C", "-E", "UTF8", "--auth-local=trust",
                   "--auth-host=scram-sha-256", "--no-sync"], node)
        settings = self._node_conf(node)
        settings.update({
            "wal_level": "replica",
            "max_wal_senders": "10",
            "hot_standby": "on",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            # pg_rewind (demote_to_replica) needs hint-bit changes in the WAL; it also wants
            # full_page_writes on the source, which demote_to_replica turns on when it runs.
            "wal_log_hints": "on",
            "wal_keep_size": "'256MB'",
            "max_connections": "200",
            "logging_collector": "off",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
        })
        self._append_conf(node, settings)
        (node.data_dir / "pg_hba.conf").write_text(
            "# nerava harness\n"
            "local all all trust\n"
            "host replication all 127.0.0.1/32 trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        self.start(node)
        self.sql(node, f"CREATE ROLE {APP_USER} LOGIN SUPERUSER PASSWORD '{APP_PASSWORD}'")
        self.sql(node, f"CREATE DATABASE {APP_DB} OWNER {APP_USER}")

    def _init_replica(self, node: Node) -> None:
        _mkdir(node.node_dir, 0o755, PG_USER)
        p = self.primary
        # --checkpoint=fast: the default spread checkpoint makes a base backup take minutes.
        self._run([str(self.bindir / "pg_basebackup"), "-h", p.host, "-p", str(p.port),
                   "-U", PG_USER, "-D", str(node.data_dir), "-R", "-X", "stream",
                   "--checkpoint=fast", "--no-sync"], node)
        self._append_conf(node, self._node_conf(node))  # later lines override the primary's
        self.start(node)
        self.wait_streaming([node])


def _dsn_quote(value: str) -> str:
    if value and all(c.isalnum() or c in "._-/:@" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------------------------------------------------------------------------------------------
# Redis


class RedisCluster:
    """A Redis primary with `replicas` replicas."""

    def __init__(self, replicas: int = 1, base_dir: Optional[os.PathLike] = None,
                 ports: Optional[Iterable[int]] = None):
        self._owns_base = base_dir is None
        self.base_dir = _new_base_dir("nerava-redis-") if base_dir is None else Path(base_dir)
        ports = list(ports) if ports else []
        if ports and len(ports) != replicas + 1:
            raise HarnessError(f"{replicas + 1} Redis ports needed, got {len(ports)}")
        for p in ports:
            reserve_port(p)
        names = ["redis-primary"] + [f"redis-replica{i}" for i in range(1, replicas + 1)]
        self.nodes: list[Node] = []
        for i, name in enumerate(names):
            node_dir = self.base_dir / name
            self.nodes.append(Node(
                name=name, host="127.0.0.1", port=ports[i] if ports else free_port(),
                data_dir=node_dir, role="primary" if i == 0 else "replica", kind="redis",
                node_dir=node_dir, log_path=node_dir / "redis.log"))
        self._closed = False
        # Which node each replica follows (start() uses it); replicaof() changes it.
        self._masters: dict[str, Optional[str]] = {
            n.name: (None if n.role == "primary" else names[0]) for n in self.nodes}
        _register(self)
        try:
            for node in self.nodes:
                _mkdir(node.node_dir, 0o755)
                self.start(node)
        except BaseException:
            self.close()
            raise

    @property
    def primary(self) -> Node:
        return self.nodes[0]

    @property
    def replicas(self) -> list[Node]:
        return self.nodes[1:]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def client(self, node: Node, **kwargs):
        import redis

        kwargs.setdefault("socket_timeout", 10)
        kwargs.setdefault("socket_connect_timeout", 10)
        return redis.Redis(host=node.host, port=node.port, **kwargs)

    def start(self, node: Node) -> None:
        if node.pid() is not None:
            return
        argv = ["redis-server", "--port", str(node.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", str(node.data_dir),
                # A replica's first full sync otherwise waits 5 s for more replicas to join.
                "--repl-diskless-sync-delay", "0"]
        if node.role == "replica":
            master = self.master_of(node) or self.primary
            argv += ["--replicaof", master.host, str(master.port)]
        with open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=node.data_dir)

        def up() -> bool:
            if node.proc.poll() is not None:
                raise HarnessError(f"redis-server {node.name} exited with code "
                                   f"{node.proc.returncode}\n{log_tail(node.log_path)}")
            with self.client(node, socket_timeout=2) as c:
                return c.ping()

        wait_until(f"{node.name} on port {node.port} to answer PING", up, log=node.log_path)
        if node.role == "replica":
            self.wait_link_up([node])

    def wait_link_up(self, nodes: Optional[list[Node]] = None,
                     timeout: float = WAIT_SECONDS) -> None:
        for node in self.replicas if nodes is None else nodes:
            def link_up(n=node) -> bool:
                with self.client(n, socket_timeout=2) as c:
                    return c.info("replication").get("master_link_status") == "up"

            wait_until(f"{node.name} master_link_status:up", link_up, timeout=timeout,
                       log=node.log_path)

    def stop(self, node: Node, timeout: float = 10.0) -> None:
        proc = node.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def promote(self, node: Node) -> None:
        with self.client(node) as c:
            c.execute_command("REPLICAOF", "NO", "ONE")
        node.role = "primary"
        self._masters[node.name] = None

    def master_of(self, node: Node) -> Optional[Node]:
        """The node `node` was last told to replicate from (None for a primary)."""
        name = self._masters.get(node.name)
        return None if name is None else self.node(name)

    def replicaof(self, node: Node, master: Optional[Node], wait: bool = True,
                  timeout: float = WAIT_SECONDS) -> None:
        """REPLICAOF master (and, with wait, until master_link_status is up), or REPLICAOF NO
        ONE when master is None. A later start() of node keeps following the same master."""
        if master is node:
            raise HarnessError(f"{node.name} cannot replicate from itself")
        with self.client(node) as c:
            if master is None:
                c.execute_command("REPLICAOF", "NO", "ONE")
            else:
                c.execute_command("REPLICAOF", master.host, str(master.port))
        node.role = "primary" if master is None else "replica"
        self._masters[node.name] = None if master is None else master.name
        if master is not None and wait:
            self.wait_link_up([node], timeout=timeout)

    def role(self, node: Node) -> list:
        """The node's ROLE reply with bytes decoded: ["master", offset, [[host, port, off]..]]
        or ["slave", host, port, state, offset]."""
        def dec(v):
            if isinstance(v, bytes):
                return v.decode()
            if isinstance(v, list):
                return [dec(x) for x in v]
            return v

        with self.client(node) as c:
            return dec(c.execute_command("ROLE"))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for node in reversed(self.nodes):
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                try:
                    node.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        if self._owns_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        else:
            for node in self.nodes:
                shutil.rmtree(node.node_dir, ignore_errors=True)
        _unregister(self)


# ---------------------------------------------------------------------------------------------
# Redis Sentinel


def _sentinel_argv(conf: Path) -> list[str]:
    """redis-sentinel if installed (Debian's separate package), else the same binary's sentinel
    mode: redis-sentinel is only redis-server started with --sentinel."""
    exe = shutil.which("redis-sentinel")
    if exe:
        return [exe, str(conf)]
    exe = shutil.which("redis-server")
    if not exe:
        raise HarnessError("neither redis-sentinel nor redis-server is on PATH")
    return [exe, str(conf), "--sentinel"]


class SentinelSet:
    """`count` real Sentinel processes on loopback monitoring a RedisCluster's current primary
    under `master_name` (quorum 2, down after 2 s by default, as in Redis's own Sentinel tests: at
    1 s a CI run saw the just-promoted master miss a second of pings on a loaded machine and be
    failed over again, back to the restarted old primary), each in its own temp dir:

        /tmp/nerava-sentinel-XXXX/sentinel-0/  sentinel.conf (Sentinel rewrites it)  sentinel.log

    The constructor returns once every Sentinel knows the replicas and the other Sentinels, so a
    failover can succeed right away. Torn down like the servers (close(), `with`, atexit,
    SIGTERM)."""

    def __init__(self, redis_cluster: "RedisCluster", master_name: str = "nerava",
                 count: int = 3, quorum: int = 2, down_after_ms: int = 2000,
                 failover_timeout_ms: int = 4000, master: Optional[Node] = None):
        self.redis = redis_cluster
        self.master_name = master_name
        self.quorum = quorum
        master = master or next((n for n in redis_cluster.nodes if n.role == "primary"),
                                redis_cluster.primary)
        self.base_dir = _new_base_dir("nerava-sentinel-")
        self.nodes: list[Node] = []
        for i in range(count):
            node_dir = self.base_dir / f"sentinel-{i}"
            self.nodes.append(Node(name=f"sentinel-{i}", host="127.0.0.1", port=free_port(),
                                   data_dir=node_dir, role="sentinel", kind="redis",
                                   node_dir=node_dir, log_path=node_dir / "sentinel.log"))
        self._closed = False
        _register(self)
        try:
            for node in self.nodes:
                _mkdir(node.node_dir, 0o755)
                (node.node_dir / "sentinel.conf").write_text(
                    "# nerava harness\n"
                    f"port {node.port}\n"
                    "bind 127.0.0.1\n"
                    "daemonize no\n"
                    f"dir {node.node_dir}\n"
                    f"sentinel monitor {master_name} {master.host} {master.port} {quorum}\n"
                    f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
                    f"sentinel failover-timeout {master_name} {failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {master_name} 1\n")
                self._spawn(node)
            for node in self.nodes:
                self._wait_up(node)
            self.wait_discovered()
        except BaseException:
            self.close()
            raise

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def client(self, index_or_node=0, **kwargs):
        import redis

        node = self.nodes[index_or_node] if isinstance(index_or_node, int) else index_or_node
        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("socket_connect_timeout", 5)
        return redis.Redis(host=node.host, port=node.port, **kwargs)

    def master_addr(self, index: int = 0) -> Optional[tuple[str, int]]:
        """What Sentinel `index` answers to SENTINEL get-master-addr-by-name."""
        with self.client(index) as c:
            reply = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        if not reply:
            return None
        host, port = reply
        host = host.decode() if isinstance(host, bytes) else host
        return host, int(port)

    def master_node(self, index: int = 0) -> Optional[Node]:
        """The cluster node Sentinel `index` names as master, or None."""
        addr = self.master_addr(index)
        return next((n for n in self.redis.nodes if (n.host, n.port) == addr), None)

    def wait_master(self, node: Node, timeout: float = WAIT_SECONDS, index: int = 0,
                    interval: float = 0.02) -> float:
        """Polls Sentinel `index` until it names node as master; returns time.monotonic() of
        the first answer that did."""
        seen: list[float] = []

        def names_it() -> bool:
            if self.master_addr(index) == (node.host, node.port):
                seen.append(time.monotonic())
                return True
            return False

        wait_until(f"Sentinel {index} to name {node.name} master of {self.master_name}",
                   names_it, timeout=timeout, interval=interval, log=self.nodes[index].log_path)
        return seen[0]

    def wait_discovered(self, timeout: float = WAIT_SECONDS) -> None:
        """Until each Sentinel lists every replica of the master and the other Sentinels (they
        learn them from the master's INFO and hello messages, every few seconds)."""
        master = self.master_node()
        want_replicas = {n.port for n in self.redis.nodes if n is not master}

        def ready(node: Node) -> bool:
            with self.client(node) as c:
                replicas = c.execute_command("SENTINEL", "REPLICAS", self.master_name)
                sentinels = c.execute_command("SENTINEL", "SENTINELS", self.master_name)
            ports = {int(_flat_dict(r).get("port", 0)) for r in replicas}
            return want_replicas <= ports and len(sentinels) >= len(self.nodes) - 1

        for node in self.nodes:
            wait_until(f"{node.name} to discover replicas and sentinels",
                       lambda n=node: ready(n), timeout=timeout, interval=0.2,
                       log=node.log_path)

    def pids(self) -> list[int]:
        return [p for n in self.nodes for p in n.pids()]

    def stop(self, node: Node, timeout: float = 10.0) -> None:
        proc = node.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def __enter__(self) -> "SentinelSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                try:
                    node.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        shutil.rmtree(self.base_dir, ignore_errors=True)
        _unregister(self)

    def _spawn(self, node: Node) -> None:
        with open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen(_sentinel_argv(node.node_dir / "sentinel.conf"),
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=node.node_dir)

    def _wait_up(self, node: Node) -> None:
        def up() -> bool:
            if node.proc.poll() is not None:
                raise HarnessError(f"sentinel {node.name} exited with code "
                                   f"{node.proc.returncode}\n{log_tail(node.log_path)}")
            with self.client(node, socket_timeout=2) as c:
                return c.ping()

        wait_until(f"{node.name} on port {node.port} to answer PING", up, log=node.log_path)


def _flat_dict(reply) -> dict[str, str]:
    """A Sentinel reply as a flat [k1, v1, k2, v2 ...] list (or a dict) → {str: str}."""
    if isinstance(reply, dict):
        items = list(reply.items())
    else:
        items = list(zip(reply[::2], reply[1::2]))
    return {(k.decode() if isinstance(k, bytes) else str(k)):
            (v.decode() if isinstance(v, bytes) else str(v)) for k, v in items}


# ---------------------------------------------------------------------------------------------
# Topology


class Topology:
    """PostgreSQL and Redis together, in one temp dir. A context manager."""

    def __init__(self, pg_replicas: int = 1, redis_replicas: int = 1,
                 pg_ports: Optional[Iterable[int]] = None,
                 redis_ports: Optional[Iterable[int]] = None,
                 postgres: bool = True, redis: bool = True):
        self.base_dir = _new_base_dir("nerava-topo-")
        self.pg: Optional[PgCluster] = None
        self.redis: Optional[RedisCluster] = None
        self._closed = False
        _register(self)
        try:
            if postgres:
                self.pg = PgCluster(pg_replicas, base_dir=self.base_dir, ports=pg_ports)
            if redis:
                self.redis = RedisCluster(redis_replicas, base_dir=self.base_dir,
                                          ports=redis_ports)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def pids(self) -> list[int]:
        out = []
        for cluster in (self.pg, self.redis):
            if cluster is not None:
                for node in cluster.nodes:
                    out += node.pids()
        return out

    def env(self) -> dict[str, str]:
        def first(nodes):
            return str(nodes[0].port) if nodes else ""

        env = {"SANDBOX_DIR": str(self.base_dir)}
        if self.pg:
            env["SANDBOX_PG_PRIMARY_PORT"] = str(self.pg.primary.port)
            env["SANDBOX_PG_REPLICA_PORT"] = first(self.pg.replicas)
            env["SANDBOX_PG_REPLICA_PORTS"] = ",".join(str(n.port) for n in self.pg.replicas)
        if self.redis:
            env["SANDBOX_REDIS_PRIMARY_PORT"] = str(self.redis.primary.port)
            env["SANDBOX_REDIS_REPLICA_PORT"] = first(self.redis.replicas)
            env["SANDBOX_REDIS_REPLICA_PORTS"] = ",".join(
                str(n.port) for n in self.redis.replicas)
        return env

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        for cluster in (self.redis, self.pg):
            if cluster is not None:
                try:
                    cluster.close()
                except Exception as e:  # noqa: BLE001
                    errors.append(str(e))
        shutil.rmtree(self.base_dir, ignore_errors=True)
        _unregister(self)
        if errors:
            raise HarnessError("; ".join(errors))


# ---------------------------------------------------------------------------------------------
# Guaranteed teardown: atexit and SIGTERM close whatever is still open.

_live: list = []
_live_lock = threading.RLock()
_sigterm_installed = False
_previous_sigterm = None


def _register(obj) -> None:
    with _live_lock:
        _live.append(obj)
    _install_sigterm()


def _unregister(obj) -> None:
    with _live_lock:
        if obj in _live:
            _live.remove(obj)


def close_all() -> None:
    """Closes every topology/cluster of this process that is still open (newest first)."""
    with _live_lock:
        objs = list(reversed(_live))
    for obj in objs:
        try:
            obj.close()
        except Exception as e:  # noqa: BLE001
            print(f"nerava harness teardown: {e}", file=sys.stderr)


def _on_sigterm(signum, frame) -> None:
    close_all()
    prev = _previous_sigterm
    if callable(prev):
        prev(signum, frame)
        return
    if prev == signal.SIG_IGN:
        return
    # Die of the signal, as the default action would have.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_sigterm() -> None:
    global _sigterm_installed, _previous_sigterm
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:
        _sigterm_installed = True
        return
    _previous_sigterm = current
    signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True


atexit.register(close_all)


# ---------------------------------------------------------------------------------------------
# CLI


def _parse_ports(text: Optional[str], flag: str) -> Optional[list[int]]:
    if not text:
        return None
    try:
        ports = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise SystemExit(f"{flag}: expected comma-separated port numbers, got {text!r}")
    for p in ports:
        if not 0 < p < 65536:
            raise SystemExit(f"{flag}: port {p} out of range")
    return ports


def _write_env_file(path: str, env: dict[str, str]) -> None:
    # Written to a temp file and renamed so a script polling for it never reads half of it.
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    os.replace(tmp, target)


def _cmd_up(args) -> int:
    pg_ports = _parse_ports(args.pg_ports, "--pg-ports")
    redis_ports = _parse_ports(args.redis_ports, "--redis-ports")
    pg_replicas = args.pg_replicas if args.pg_replicas is not None else (
        len(pg_ports) - 1 if pg_ports else 1)
    redis_replicas = args.redis_replicas if args.redis_replicas is not None else (
        len(redis_ports) - 1 if redis_ports else 1)
    if pg_ports and len(pg_ports) != pg_replicas + 1:
        print(f"--pg-ports needs {pg_replicas + 1} ports (primary first), got {len(pg_ports)}",
              file=sys.stderr)
        return 2
    if redis_ports and len(redis_ports) != redis_replicas + 1:
        print(f"--redis-ports needs {redis_replicas + 1} ports (primary first), "
              f"got {len(redis_ports)}", file=sys.stderr)
        return 2
    wanted = (pg_ports or []) + (redis_ports or [])
    if len(set(wanted)) != len(wanted):
        print("the same port is given twice", file=sys.stderr)
        return 2
    for p in wanted:
        if port_in_use(p):
            print(f"port {p} is already in use", file=sys.stderr)
            return 1

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    # The CLI tears down from its main loop, so the library's SIGTERM handler (which would close
    # clusters under the feet of a constructor still running) stays out of the way.
    global _sigterm_installed
    _sigterm_installed = True
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    topo = None
    try:
        topo = Topology(pg_replicas=pg_replicas, redis_replicas=redis_replicas,
                        pg_ports=pg_ports, redis_ports=redis_ports)
        if stop.is_set():
            return 0
        env = topo.env()
        env["SANDBOX_PIDS"] = ",".join(str(p) for p in topo.pids())
        if args.env_file:
            _write_env_file(args.env_file, env)
        for k, v in env.items():
            print(f"{k}={v}")
        print("ready", flush=True)
        while not stop.wait(1.0):
            pass
        print("stopping", flush=True)
        return 0
    except HarnessError as e:
        print(f"topology failed: {e}", file=sys.stderr)
        return 1
    finally:
        if topo is not None:
            topo.close()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="topology.py",
                                     description="Run a PostgreSQL + Redis test topology.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start servers, print 'ready', run until SIGINT/SIGTERM")
    up.add_argument("--pg-replicas", type=int, default=None)
    up.add_argument("--redis-replicas", type=int, default=None)
    up.add_argument("--pg-ports", help="primary,replica1,... (default: free ports)")
    up.add_argument("--redis-ports", help="primary,replica1,... (default: free ports)")
    up.add_argument("--env-file", help="write SANDBOX_* KEY=VALUE lines here")
    args = parser.parse_args(argv)
    if args.command == "up":
        return _cmd_up(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
