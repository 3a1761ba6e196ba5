"""Ways a server fails under a test, shared by the failover tests."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Callable, Iterator

from tests.harness.topology import wait_until
from admin_helpers import metric, metrics

# "crash": the server process goes away and the kernel resets its connections.
# "unreachable": every process of the server is stopped (SIGSTOP); its connections stay open and
# nothing answers or resets them, as when its host or region drops off the network.
HOW = ["crash", "unreachable"]

# Proxy config overrides per way of failing. An unreachable node is marked down only after
# failure_threshold checks have each waited out the check timeout (1 s by default: ~3 s), about
# when Sentinel (down-after 2 s) or the test promotes a replica; a shorter timeout puts the
# mark well before, so "writes resume within 1 s of the promotion" measures the proxy.
MONITOR_FOR = {"crash": {}, "unreachable": {"monitor": {"timeout": "200ms"}}}


def _signal_all(node, sig: int) -> None:
    for pid in node.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def resume(node) -> None:
    """Lets an unreachable node answer again."""
    _signal_all(node, signal.SIGCONT)


@contextlib.contextmanager
def failing(node, how: str, stop: Callable[[], None]) -> Iterator[Callable[[], None]]:
    """Yields a function that makes `node` fail as `how` says (`stop` stops it for good). An
    unreachable node is resumed and stopped on exit, so teardown never waits on it."""
    def fail() -> None:
        if how == "crash":
            stop()
        else:
            _signal_all(node, signal.SIGSTOP)
    try:
        yield fail
    finally:
        if how == "unreachable":
            resume(node)
            stop()


def flap(proxy, protocol: str, node) -> None:
    """Makes `node` unreachable until the proxy marks it down, then lets it answer again and
    waits until the proxy sees it up."""
    def up():
        return metric(metrics(proxy), "node_up", protocol=protocol, node=node.name)

    _signal_all(node, signal.SIGSTOP)
    try:
        wait_until(f"the proxy to mark {node.name} down", lambda: up() == 0, timeout=15,
                   interval=0.05)
    finally:
        resume(node)
    wait_until(f"the proxy to see {node.name} up again", lambda: up() == 1, timeout=15,
               interval=0.05)
