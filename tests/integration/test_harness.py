"""Tests of the harness itself (tests/harness/topology.py, pgwire.py) against real servers.

They also pin down real PostgreSQL behaviour that test_pg_proxy.py expects the proxy to mirror
(SQLSTATEs of failed logins and of garbage startup packets)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.harness import pgwire
from tests.harness.topology import (APP_DB, APP_PASSWORD, APP_USER, HarnessTimeout, PgCluster,
                                    Topology, free_port, wait_until)

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY_PY = ROOT / "tests" / "harness" / "topology.py"
PY = "/usr/bin/python3"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _assert_gone(pids, what="process"):
    assert pids, "no pids collected: the check would prove nothing"
    wait_until(f"{what}es {pids} to exit", lambda: not any(_alive(p) for p in pids), timeout=10)


def _poll(what, fn, timeout=15.0):
    wait_until(what, fn, timeout=timeout, interval=0.05)


# ------------------------------------------------------------------------------ basics


def test_free_port_never_repeats():
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    for p in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # was free


def test_wait_until_timeout_names_what_and_shows_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    t0 = time.monotonic()
    with pytest.raises(HarnessTimeout) as exc:
        wait_until("the moon", lambda: 1 / 0, timeout=0.3, log=log)
    assert time.monotonic() - t0 < 5
    text = str(exc.value)
    assert "the moon" in text and "ZeroDivisionError" in text
    assert "line 99" in text and "line 10\n" not in text


# ------------------------------------------------------------------------------ PostgreSQL


def test_pg_nodes_and_roles(topology):
    pg = topology.pg
    assert [n.name for n in pg.nodes] == ["pg-primary", "pg-replica1"]
    assert pg.primary.role == "primary" and [n.role for n in pg.replicas] == ["replica"]
    assert pg.sql(pg.primary, "select pg_is_in_recovery()") == [(False,)]
    assert pg.sql(pg.replicas[0], "select pg_is_in_recovery()") == [(True,)]
    for n in pg.nodes:
        assert pg.sql(n, "show port") == [(str(n.port),)]
        assert n.data_dir.is_dir() and (n.data_dir.stat().st_mode & 0o777) == 0o700
        assert n.log_path.parent == n.data_dir.parent and n.log_path.exists()


def test_pg_replica_streams_and_sees_insert(topology):
    pg = topology.pg
    rows = pg.sql(pg.primary, "select application_name, state from pg_stat_replication")
    assert ("pg-replica1", "streaming") in rows
    pg.sql(pg.primary, "create table harness_stream(id int primary key, v text)", dbname=APP_DB)
    pg.sql(pg.primary, "insert into harness_stream values (1, 'hello')", dbname=APP_DB)
    replica = pg.replicas[0]
    _poll("the row on the replica",
          lambda: pg.sql(replica, "select v from harness_stream where id = 1",
                         dbname=APP_DB) == [("hello",)])


def test_pg_app_role_over_tcp_with_scram(topology):
    pg = topology.pg
    with psycopg.connect(pg.dsn(pg.primary, user=APP_USER, dbname=APP_DB),
                         connect_timeout=10) as conn:
        assert conn.execute("select current_user, current_database()").fetchone() == (
            APP_USER, APP_DB)
        assert conn.execute("select rolsuper from pg_roles where rolname = current_user"
                            ).fetchone() == (True,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.dsn(pg.primary, user=APP_USER, dbname=APP_DB, password="wrong"),
                        connect_timeout=10)


def test_pg_stop_and_start_replica(topology):
    pg = topology.pg
    replica = pg.replicas[0]
    pg.stop(replica, mode="fast")
    assert replica.pid() is None
    _poll("the replica to leave pg_stat_replication",
          lambda: pg.sql(pg.primary, "select count(*) from pg_stat_replication") == [(0,)])
    pg.sql(pg.primary, "create table harness_gap(x int)", dbname=APP_DB)
    pg.sql(pg.primary, "insert into harness_gap values (7)", dbname=APP_DB)
    pg.start(replica)
    pg.wait_streaming()
    _poll("the replica to catch up",
          lambda: pg.sql(replica, "select x from harness_gap", dbname=APP_DB) == [(7,)])


def test_pg_primary_crash_and_restart(topology):
    pg = topology.pg
    old_pid = pg.primary.pid()
    pg.stop(pg.primary, mode="immediate")
    assert pg.primary.pid() is None and not _alive(old_pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.dsn(pg.primary), connect_timeout=3)
    pg.start(pg.primary)
    assert pg.primary.pid() not in (None, old_pid)
    pg.wait_streaming()
    assert pg.sql(pg.primary, "select 1") == [(1,)]


def test_pg_set_replica_conf_delays_apply(topology):
    pg = topology.pg
    replica = pg.replicas[0]
    pg.sql(pg.primary, "create table harness_delay(x int)", dbname=APP_DB)
    _poll("the table on the replica", lambda: pg.sql(
        replica, "select count(*) from harness_delay", dbname=APP_DB) == [(0,)])
    pg.set_replica_conf(replica, "recovery_min_apply_delay", "2s")
    try:
        _poll("the setting to apply",
              lambda: pg.sql(replica, "show recovery_min_apply_delay") == [("2s",)])
        pg.sql(pg.primary, "insert into harness_delay values (1)", dbname=APP_DB)
        committed = time.monotonic()
        time.sleep(0.5)
        assert pg.sql(replica, "select count(*) from harness_delay", dbname=APP_DB) == [(0,)]
        _poll("the delayed row", lambda: pg.sql(
            replica, "select count(*) from harness_delay", dbname=APP_DB) == [(1,)])
        assert time.monotonic() - committed >= 1.5
    finally:
        pg.set_replica_conf(replica, "recovery_min_apply_delay", "0")
    _poll("the delay to be reset",
          lambda: pg.sql(replica, "show recovery_min_apply_delay") == [("0",)])


def test_pg_promote():
    pg = PgCluster(replicas=1)
    try:
        replica = pg.replicas[0]
        pg.sql(pg.primary, "create table before_promote(x int)")
        pg.sql(pg.primary, "insert into before_promote values (1)")
        _poll("the row on the replica",
              lambda: pg.sql(replica, "select x from before_promote") == [(1,)])
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            pg.sql(replica, "insert into before_promote values (2)")
        pg.stop(pg.primary, mode="immediate")
        pg.promote(replica)
        assert replica.role == "primary"
        assert pg.sql(replica, "select pg_is_in_recovery()") == [(False,)]
        pg.sql(replica, "insert into before_promote values (2)")
        assert pg.sql(replica, "select sum(x) from before_promote") == [(3,)]
    finally:
        pg.close()
    assert not pg.base_dir.exists()


# ------------------------------------------------------------------------------ Redis


def test_redis_replica_sees_set(topology):
    rc = topology.redis
    primary = rc.client(rc.primary)
    replica = rc.client(rc.replicas[0])
    assert replica.info("replication")["role"] == "slave"
    primary.set("harness:key", "v1")
    _poll("the key on the replica", lambda: replica.get("harness:key") == b"v1")
    import redis

    with pytest.raises(redis.exceptions.ReadOnlyError):
        replica.set("harness:key", "nope")


def test_redis_stop_and_start_replica(topology):
    rc = topology.redis
    node = rc.replicas[0]
    pid = node.pid()
    rc.stop(node)
    assert node.pid() is None and not _alive(pid)
    rc.client(rc.primary).set("harness:while-down", "x")
    rc.start(node)
    _poll("the key on the restarted replica",
          lambda: rc.client(node).get("harness:while-down") == b"x")


# ------------------------------------------------------------------------------ wire client
# These pin down what real PostgreSQL answers; test_pg_proxy.py expects the proxy to do the same.


def test_pgwire_scram_login_direct(topology):
    p = topology.pg.primary
    with pgwire.RawPg(p.host, p.port) as c:
        res = c.startup(APP_USER, APP_PASSWORD, APP_DB, application_name="raw")
        assert res.kinds == ["R10", "R11", "R12", "R0", "Z"]
        assert res.parameters["application_name"] == "raw"
        assert res.backend_key is not None
        msgs = c.query("select 40 + 2")
        assert [k for k, _ in msgs] == [b"T", b"D", b"C", b"Z"]
        assert msgs[1][1].endswith(b"42")


def test_pgwire_failed_logins_direct(topology):
    p = topology.pg.primary
    seen = {}
    for case, user, password in [("wrong password", APP_USER, "wrong"),
                                 ("unknown user", "no_such_user", "whatever")]:
        with pgwire.RawPg(p.host, p.port) as c:
            with pytest.raises(pgwire.ServerError) as exc:
                c.startup(user, password, APP_DB)
            assert exc.value.sqlstate == "28P01", case
            seen[case] = (exc.value.result.kinds,
                          exc.value.message.replace(user, "USER"))
            c.wait_closed()
    # PostgreSQL runs a mock SCRAM exchange for unknown users: nothing tells them apart.
    assert seen["wrong password"] == seen["unknown user"]


# Real PostgreSQL drops a startup packet with an impossible length without a word (COMMERROR is
# only logged); the proxy is held to more (DESIGN §9: never a silent close where a message can be
# sent), so test_pg_proxy.py expects 08P01 in every case.
@pytest.mark.parametrize("packet,expected", [
    (struct.pack("!II", 0x7FFFFFFF, pgwire.PROTOCOL_3_0), "silent close"),  # oversized length
    (struct.pack("!I", 3), "silent close"),                                # shorter than a header
    (struct.pack("!II", 64, pgwire.PROTOCOL_3_0) + bytes(range(1, 57)), "08P01"),  # no terminator
], ids=["oversized", "too-short", "unterminated"])
def test_pgwire_garbage_startup_direct(topology, packet, expected):
    p = topology.pg.primary
    with pgwire.RawPg(p.host, p.port) as c:
        c.send(packet)
        if expected == "silent close":
            assert c.wait_closed() == b""
        else:
            err = c.read_error()
            assert err.sqlstate == expected, err
            c.wait_closed()


def test_pgwire_unknown_message_type_direct(topology):
    p = topology.pg.primary
    with pgwire.RawPg(p.host, p.port) as c:
        c.startup(APP_USER, APP_PASSWORD, APP_DB)
        c.send(pgwire.message(b"\xfe", b"garbage!"))
        err = c.read_error()
        assert err.sqlstate == "08P01", err
        c.wait_closed()


# ------------------------------------------------------------------------------ teardown


def test_close_leaves_no_process_and_no_dir():
    topo = Topology(pg_replicas=1, redis_replicas=1)
    pids = topo.pids()
    base = topo.base_dir
    # Children come and go (the backend of a readiness check, an autovacuum worker): the servers
    # themselves must be running; after close() every listed process must be gone.
    servers = [n.pid() for n in [*topo.pg.nodes, *topo.redis.nodes]]
    assert len(pids) >= 4 and all(p is not None and _alive(p) for p in servers)
    topo.close()
    _assert_gone(pids)
    assert not base.exists()
    topo.close()  # idempotent


def test_with_block_tears_down_on_exception():
    pids, base = [], None
    with pytest.raises(RuntimeError, match="test body failed"):
        with Topology(pg_replicas=0, redis_replicas=0) as topo:
            pids, base = topo.pids(), topo.base_dir
            raise RuntimeError("test body failed")
    _assert_gone(pids)
    assert not base.exists()


def _reader(stream) -> "queue.Queue[str]":
    q: "queue.Queue[str]" = queue.Queue()

    def pump():
        for line in iter(stream.readline, ""):
            q.put(line)
        q.put("")  # EOF

    threading.Thread(target=pump, daemon=True).start()
    return q


def _wait_line(q, want: str, timeout: float, proc) -> list:
    lines, deadline = [], time.monotonic() + timeout
    while True:
        try:
            line = q.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            pytest.fail(f"no {want!r} within {timeout}s; output so far: {lines}")
        if line == "":
            pytest.fail(f"process ended (rc={proc.wait(timeout=10)}) before {want!r}: {lines}")
        lines.append(line.rstrip("\n"))
        if lines[-1] == want:
            return lines


def test_sigterm_tears_down_library_user():
    script = textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from tests.harness.topology import Topology
        topo = Topology(pg_replicas=1, redis_replicas=1)
        print(json.dumps({{"pids": topo.pids(), "dir": str(topo.base_dir)}}), flush=True)
        print("ready", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        lines = _wait_line(_reader(proc.stdout), "ready", 120, proc)
        info = json.loads(lines[-2])
        assert all(_alive(p) for p in info["pids"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM  # cleaned up, then died of the signal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    _assert_gone(info["pids"])
    assert not os.path.exists(info["dir"])


def test_cli_up_given_ports_env_file_and_sigterm(tmp_path):
    pg_ports = [free_port(), free_port()]
    redis_ports = [free_port(), free_port()]
    env_file = tmp_path / "sandbox.env"
    proc = subprocess.Popen(
        [PY, str(TOPOLOGY_PY), "up", "--pg-replicas", "1", "--redis-replicas", "1",
         "--pg-ports", ",".join(map(str, pg_ports)),
         "--redis-ports", ",".join(map(str, redis_ports)), "--env-file", str(env_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_line(_reader(proc.stdout), "ready", 120, proc)
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert env["SANDBOX_PG_PRIMARY_PORT"] == str(pg_ports[0])
        assert env["SANDBOX_PG_REPLICA_PORT"] == str(pg_ports[1])
        assert env["SANDBOX_REDIS_PRIMARY_PORT"] == str(redis_ports[0])
        assert env["SANDBOX_REDIS_REPLICA_PORT"] == str(redis_ports[1])
        assert Path(env["SANDBOX_DIR"]).is_dir()
        pids = [int(p) for p in env["SANDBOX_PIDS"].split(",")]
        dsn = (f"host=127.0.0.1 port={pg_ports[0]} user={APP_USER} password={APP_PASSWORD} "
               f"dbname={APP_DB}")
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        import redis

        with redis.Redis(port=redis_ports[1], socket_timeout=5) as r:
            assert r.info("replication")["master_link_status"] == "up"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    _assert_gone(pids)
    assert not Path(env["SANDBOX_DIR"]).exists()


def test_cli_up_refuses_a_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(
            [PY, str(TOPOLOGY_PY), "up", "--pg-ports", f"{free_port()},{port}"],
            capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert f"port {port} is already in use" in res.stderr
    assert "ready" not in res.stdout


# ------------------------------------------------------------------------------ failover helpers


def _pg_count(pg, node, table):
    return pg.sql(node, f"select count(*) from {table}", dbname=APP_DB)[0][0]


@pytest.mark.parametrize("crash", [False, True], ids=["clean-stop", "crash"])
def test_pg_failover_demote_and_split_brain(crash):
    """promote → old primary restarted un-demoted (two primaries, the promoted one on a higher
    timeline) → demote_to_replica brings it back as a streaming replica of the new primary,
    with the rows it wrote alone discarded (pg_rewind, or a new base backup)."""
    pg = PgCluster(replicas=1)
    try:
        old, new = pg.primary, pg.replicas[0]
        pg.sql(old, "create table fo(x int)", dbname=APP_DB)
        pg.sql(old, "insert into fo values (1)", dbname=APP_DB)
        _poll("the row on the replica", lambda: _pg_count(pg, new, "fo") == 1)
        tli_before = pg.timeline(old)
        assert pg.timeline(new) == tli_before
        pg.stop(old, mode="immediate" if crash else "fast")
        assert pg.timeline(old) == tli_before  # from pg_controldata while stopped
        pg.promote(new)
        assert pg.timeline(new) == tli_before + 1
        pg.sql(new, "insert into fo values (2)", dbname=APP_DB)

        pg.restart_as_primary_undemoted(old)
        assert pg.is_primary(old) and pg.is_primary(new)
        assert pg.timeline(old) == tli_before < pg.timeline(new)
        pg.sql(old, "insert into fo values (100)", dbname=APP_DB)  # diverges
        assert _pg_count(pg, old, "fo") == 2 and _pg_count(pg, new, "fo") == 2

        how = pg.demote_to_replica(old, new)
        assert how in ("rewind", "basebackup")
        assert old.role == "replica" and not pg.is_primary(old)
        assert pg.sql(old, "show port") == [(str(old.port),)]
        assert pg.sql(old, "show cluster_name") == [(old.name,)]
        pg.sql(new, "insert into fo values (3)", dbname=APP_DB)
        _poll("the new row on the demoted node",
              lambda: pg.sql(old, "select array_agg(x order by x) from fo",
                             dbname=APP_DB) == [([1, 2, 3],)])
        assert pg.timeline(old) == pg.timeline(new)
        # And back again (failback): the same two calls the other way round.
        pg.stop(new, mode="fast")
        pg.promote(old)
        pg.demote_to_replica(new, old)
        pg.sql(old, "insert into fo values (4)", dbname=APP_DB)
        _poll("failback row on the former new primary", lambda: _pg_count(pg, new, "fo") == 4)
        print(f"\ndemote_to_replica used {how}", file=sys.stderr)
    finally:
        pg.close()


def test_redis_replicaof_moves_and_restart_keeps_master():
    from tests.harness.topology import RedisCluster

    rc = RedisCluster(replicas=2)
    try:
        a, b, c = rc.nodes
        rc.replicaof(b, None)
        assert rc.role(b)[0] == "master" and b.role == "primary"
        rc.replicaof(a, b)
        rc.replicaof(c, b)
        assert rc.master_of(a) is b and rc.role(a)[:3] == ["slave", b.host, b.port]
        rc.client(b).set("moved", "1")
        _poll("the key on both replicas of the new master",
              lambda: rc.client(a).get("moved") == b"1" and rc.client(c).get("moved") == b"1")
        rc.stop(a)
        rc.start(a)  # comes back as a replica of b, not of nodes[0]
        assert rc.role(a)[:3] == ["slave", b.host, b.port]
        with pytest.raises(Exception, match="itself"):
            rc.replicaof(a, a)
    finally:
        rc.close()


def test_sentinel_set_fails_over_for_real():
    from tests.harness.topology import RedisCluster, SentinelSet

    rc = RedisCluster(replicas=1)
    sentinels = None
    try:
        sentinels = SentinelSet(rc, master_name="harness-master")
        assert len(sentinels.nodes) == 3 and len(set(sentinels.addresses)) == 3
        for i in range(3):
            assert sentinels.master_addr(i) == (rc.primary.host, rc.primary.port)
        old, replica = rc.primary, rc.replicas[0]
        rc.client(old).set("before", "1")
        _poll("the key on the replica", lambda: rc.client(replica).get("before") == b"1")
        t0 = time.monotonic()
        rc.stop(old)
        switched = sentinels.wait_master(replica, timeout=30)
        print(f"\nSentinel switched {switched - t0:.2f}s after the primary stopped",
              file=sys.stderr)
        _poll("the replica to become master", lambda: rc.role(replica)[0] == "master")
        rc.client(replica).set("after", "1")
        for i in range(3):
            _poll(f"sentinel {i} to agree", lambda i=i: sentinels.master_node(i) is replica)
        # The old primary, restarted, is turned into a replica by Sentinel: after 8 s of it
        # reporting itself master, and not while a Sentinel is in TILT mode (entered for 30 s
        # when its own timer ran over 2 s late: a starved machine; a CI run met it once).
        rc.start(old)
        wait_until("Sentinel to make the old primary a replica",
                   lambda: rc.role(old)[:3] == ["slave", replica.host, replica.port],
                   timeout=75, interval=0.05, log=sentinels.nodes[0].log_path)
        pids, base = sentinels.pids(), sentinels.base_dir
    finally:
        if sentinels is not None:
            sentinels.close()
        rc.close()
    _assert_gone(pids, "sentinel process")
    assert not base.exists()
