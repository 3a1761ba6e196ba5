"""What the proxy's own connections to PostgreSQL and Redis look like from the outside.

A sidecar keeps server connections open across regions: TCP keepalive (server_keepalive) keeps
their flows known to the NAT gateways and load balancers on the way, which forget quiet ones.
"""
from __future__ import annotations

import re
import subprocess

import psycopg
import redis

from conftest import start_proxy


def keepalive_seconds_left(pid: int, port: int) -> list[float]:
    """Seconds left on the keepalive timers of process `pid`'s connections to 127.0.0.1:`port`
    (a connection without keepalive has no such timer)."""
    out = subprocess.run(["ss", "-tnpoH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    left = []
    for line in out.splitlines():
        if f"pid={pid}," not in line:
            continue
        m = re.search(r"timer:\(keepalive,(?:(\d+)min)?(?:(\d+(?:\.\d+)?)sec)?(?:(\d+)ms)?,", line)
        if m:
            minutes, seconds, millis = (float(g) if g else 0.0 for g in m.groups())
            left.append(minutes * 60 + seconds + millis / 1000)
    return left


def connect(proxy) -> psycopg.Connection:
    return psycopg.connect(proxy.dsn(), autocommit=True)


def test_server_connections_probe_an_idle_path(topology):
    """Every connection the proxy opens to PostgreSQL and Redis has TCP keepalive with the
    configured times: idle cross-region connections pass NAT gateways that forget quiet flows.
    (The monitor's own libpq connections keep libpq's default: keepalive after two hours.)"""
    nodes = topology.pg.nodes + topology.redis.nodes
    for idle, expect_probed in (("45s", True), ("0s", False)):
        with start_proxy(topology, server_keepalive={"idle": idle, "interval": "5s",
                                                     "count": 3}) as proxy:
            writer = redis.Redis(host="127.0.0.1", port=proxy.redis_port, socket_timeout=10)
            reader = redis.Redis(host="127.0.0.1", port=proxy.redis_port, socket_timeout=10)
            writer.set("keepalive-probe", "1")  # the primary
            reader.get("keepalive-probe")  # a session that wrote nothing reads from the replica
            # A session's server connections last as long as it does: look while it is open.
            with connect(proxy) as c:
                c.execute("select 1")  # a read: the replica
                with c.transaction():
                    c.execute("create temp table keepalive_probe (x int)")  # the primary
                    for node in nodes:
                        probed = [s for s in keepalive_seconds_left(proxy.proc.pid, node.port)
                                  if s <= 45]
                        assert bool(probed) == expect_probed, (idle, node.name, probed)
            writer.close()
            reader.close()
