"""The proxy's admin socket (nerava-proxyctl) and /metrics as the failover tests read them."""
from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from typing import Optional

import pytest

CTL_TIMEOUT = 60


def ctl_binary() -> str:
    binary = os.environ.get("NERAVA_PROXYCTL_BIN")
    if not binary:
        pytest.skip("NERAVA_PROXYCTL_BIN is not set (ctest sets it to the built nerava-proxyctl)")
    return binary


def ctl(proxy, *words: str, timeout: float = CTL_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([ctl_binary(), "--socket", proxy.admin_socket, *words],
                          capture_output=True, text=True, timeout=timeout)


def ctl_ok(proxy, *words: str, timeout: float = CTL_TIMEOUT) -> str:
    res = ctl(proxy, *words, timeout=timeout)
    assert res.returncode == 0, (f"nerava-proxyctl {' '.join(words)} exited {res.returncode}\n"
                                 f"stdout: {res.stdout}\nstderr: {res.stderr}")
    return res.stdout


def metrics(proxy) -> dict[str, list[tuple[dict[str, str], float]]]:
    """/metrics as {name: [(labels, value)]} (a lenient reader; test_monitor checks the format)."""
    url = f"http://127.0.0.1:{proxy.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        body = r.read().decode()
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in body.splitlines():
        m = sample.match(line)
        if m and not line.startswith("#"):
            labels = dict(label.findall(m.group(2) or ""))
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def metric_values(parsed, name: str, **labels) -> list[float]:
    return [v for lbl, v in parsed.get("nerava_proxy_" + name, [])
            if all(lbl.get(k) == want for k, want in labels.items())]


def metric(parsed, name: str, **labels) -> Optional[float]:
    found = metric_values(parsed, name, **labels)
    assert len(found) <= 1, f"{name}{labels}: {len(found)} samples"
    return found[0] if found else None
