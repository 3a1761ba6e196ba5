"""Ways a server fails under a test, shared by the failover tests."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Callable, Iterator

# "crash": the server process goes away and the kernel resets its connections.
# "unreachable": every process of the server is stopped (SIGSTOP); its connections stay open and
# nothing answers or resets them, as when its host or region drops off the network.
HOW = ["crash", "unreachable"]


def _signal_all(node, sig: int) -> None:
    for pid in node.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


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
            _signal_all(node, signal.SIGCONT)
            stop()
