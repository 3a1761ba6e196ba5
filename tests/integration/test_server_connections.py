"""What the proxy's own connections to PostgreSQL and Redis look like from the outside.

A sidecar keeps server connections open across regions: TCP keepalive (server_keepalive) keeps
their flows known to the NAT gateways and load balancers on the way, which forget quiet ones.
"""
from __future__ import annotations

import re
import subprocess
from typing import Optional

import psycopg

from conftest import start_proxy
from tests.harness.topology import wait_until


def keepalive_timers(pid: int, port: int, local: bool = False) -> dict[int, Optional[float]]:
    """Process `pid`'s established TCP connections to (or, with `local`, from) 127.0.0.1:`port`,
    by the other end's port: seconds left on each one's keepalive timer, None without one."""
    side = "sport" if local else "dport"
    out = subprocess.run(["ss", "-tnpoH", "state", "established", f"( {side} = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    timers: dict[int, Optional[float]] = {}
    for line in out.splitlines():
        if f"pid={pid}," not in line:
            continue
        # Local address, peer address: the columns after Recv-Q and Send-Q.
        peer_port = int(line.split()[3 if local else 2].rsplit(":", 1)[1])
        m = re.search(r"timer:\(keepalive,([^,]+),", line)
        timers[peer_port] = _seconds(m.group(1)) if m else None
    return timers


def _seconds(text: str) -> float:
    # ss prints "1min14sec", "44sec", and below 10 s "7.692ms" (seconds, despite the unit).
    m = re.fullmatch(r"(?:(\d+)min)?(?:(\d+)sec)?", text)
    if m and text:
        return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)
    return float(re.sub(r"[a-z]+$", "", text))


def connect(proxy) -> psycopg.Connection:
    return psycopg.connect(proxy.dsn(), autocommit=True)


def test_server_connections_probe_an_idle_path(topology):
    """The proxy's connections to PostgreSQL (found by the port the server sees) and to Redis
    have TCP keepalive with the configured times; with idle 0 they have none at all."""
    pg_ports = {n.port for n in topology.pg.nodes}
    for idle, probed in (("45s", True), ("0s", False)):
        with start_proxy(topology, server_keepalive={"idle": idle, "interval": "5s",
                                                     "count": 3}) as proxy:
            pid = proxy.proc.pid
            writer = proxy.redis_client(socket_timeout=10)
            reader = proxy.redis_client(socket_timeout=10)
            writer.set("keepalive-probe", "1")  # the primary
            with connect(proxy) as c:
                # Reads go to the replica once the monitor knows its lag.
                replica_port = str(topology.pg.replicas[0].port)
                wait_until("reads reach the replica",
                           lambda: c.execute("select current_setting('port')").fetchone()[0]
                           == replica_port, timeout=10)
                replica_side = c.execute("select inet_client_port()").fetchone()[0]
                with c.transaction():  # the primary
                    primary_side = c.execute("select inet_client_port()").fetchone()[0]
                    for proxy_port in (replica_side, primary_side):
                        timers = keepalive_timers(pid, proxy_port, local=True)
                        (server_port, left), = timers.items()
                        assert server_port in pg_ports
                        if probed:
                            assert left is not None and left <= 45, (idle, proxy_port, left)
                        else:
                            assert left is None, (idle, proxy_port, left)
                # A session that wrote nothing reads from the replica (once its lag is known).
                replica = topology.redis.replicas[0]
                if probed:
                    wait_until("a Redis read reaches the replica",
                               lambda: reader.get("keepalive-probe") is not None and any(
                                   keepalive_timers(pid, replica.port).values()), timeout=10)
                else:
                    reader.get("keepalive-probe")
                for node in topology.redis.nodes:
                    timers = keepalive_timers(pid, node.port)
                    # The monitor's hiredis checks have no keepalive; the proxy's data
                    # connections (own and shared) to every node have it, or nothing has.
                    left = [t for t in timers.values() if t is not None]
                    if probed:
                        assert left and all(t <= 45 for t in left), (idle, node.name, timers)
                    else:
                        assert not left, (idle, node.name, timers)
