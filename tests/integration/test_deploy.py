"""The deployment kit (deploy/, docs/deploy.md) checked like code:

    promtool check rules / test rules      deploy/prometheus/nerava-proxy.rules.yaml, tests/*.yaml
    node deploy/ci/validate.mjs            Helm values vs schema, example manifests vs Kubernetes
                                           schemas and the values, example config --check-config
    deploy/ci/check_metrics.py             names in rules and dashboard vs proxy/metrics.cc, and
                                           (here) vs a real proxy's /metrics, labels included
    deploy/docker/*.sh                     runtime package list vs the binary; the HEALTHCHECK probe

scripts/check-deploy.sh runs the static part without servers. Every subprocess and HTTP call has a
timeout; the per-test SIGALRM limit of conftest.py is the backstop.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from tests.harness.topology import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TOOL_TIMEOUT = 120
NPM_TIMEOUT = 300
SCRAPE_TIMEOUT = 5


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_metrics", DEPLOY / "ci/check_metrics.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_metrics"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check_metrics = _load_checker()


def _run(argv: list[str], timeout: float = TOOL_TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs)
    return proc


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} is not installed: run scripts/install-deps.sh")
    return path


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT) as r:
        assert r.status == 200
        return r.read().decode()


# ------------------------------------------------------------------------- static checks


def test_promtool_check_rules():
    promtool = _need("promtool")
    proc = _run([promtool, "check", "rules", str(DEPLOY / "prometheus/nerava-proxy.rules.yaml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_rule_unit_tests():
    promtool = _need("promtool")
    tests = sorted(str(p) for p in (DEPLOY / "prometheus/tests").glob("*.yaml"))
    assert len(tests) >= 4, tests
    proc = _run([promtool, "test", "rules", *tests])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test():
    import yaml

    rules = yaml.safe_load((DEPLOY / "prometheus/nerava-proxy.rules.yaml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    firing, quiet = set(), set()
    for path in (DEPLOY / "prometheus/tests").glob("*.yaml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested staying quiet"


def test_validate_mjs():
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        pytest.skip("node/npm not installed (scripts/check-deploy.sh requires them)")
    if not (DEPLOY / "ci/node_modules").is_dir():
        proc = _run([npm, "ci", "--prefix", str(DEPLOY / "ci"), "--no-audit", "--no-fund"],
                    timeout=NPM_TIMEOUT)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    env = dict(os.environ)
    proc = _run([node, str(DEPLOY / "ci/validate.mjs")], env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout


def test_metric_names_against_source():
    problems = check_metrics.run(check_metrics.exported_from_source(), check_labels=False)
    assert problems == []


def test_metric_checker_catches_mistakes(monkeypatch):
    # Every metric the rules use is exported now; a planned one is made up for the checks below.
    monkeypatch.setitem(check_metrics.PLANNED, "nerava_proxy_future_total", "a later issue")
    exposition = "\n".join([
        "# TYPE nerava_proxy_node_up gauge",
        'nerava_proxy_node_up{protocol="postgres",node="a",role="primary"} 1',
        "# TYPE nerava_proxy_query_duration_seconds histogram",
        'nerava_proxy_query_duration_seconds_bucket{protocol="redis",le="+Inf"} 3',
        'nerava_proxy_query_duration_seconds_sum{protocol="redis"} 0.1',
        'nerava_proxy_query_duration_seconds_count{protocol="redis"} 3',
        "",
    ])
    exported = check_metrics.exported_from_exposition(exposition)
    assert exported.labels_of("nerava_proxy_query_duration_seconds_bucket") == {"protocol", "le"}
    recorded = {"nerava_proxy:up:max": "max by (protocol, node) (nerava_proxy_node_up)"}
    E = check_metrics.Expr

    def problems(expr: str) -> list[str]:
        return check_metrics.check([E("t", expr)], recorded, exported, check_labels=True)

    assert problems('nerava_proxy_node_up{role="primary"} == 0') == []
    assert problems("histogram_quantile(0.99, sum by (le, protocol) "
                    "(rate(nerava_proxy_query_duration_seconds_bucket[5m])))") == []
    assert problems("sum by (pod_region) (nerava_proxy:up:max)") == []
    assert problems("rate(nerava_proxy_future_total[5m])") == []  # planned
    assert "not exported" in problems("nerava_proxy_nodes_up == 0")[0]
    assert "recording rule" in problems("nerava_proxy:up:min > 0")[0]
    assert "no label 'region'" in problems('nerava_proxy_node_up{region="x"}')[0]
    assert "groups by 'kind'" in problems("sum by (kind) (nerava_proxy_node_up)")[0]
    assert "no label 'role'" in problems('nerava_proxy:up:max{role="primary"}')[0]
    # A planned metric that is exported must leave the planned list.
    exported.families["nerava_proxy_future_total"] = ("counter", {"protocol"})
    assert any("delete it from PLANNED" in p for p in problems("nerava_proxy_node_up"))


def _binaries() -> list[str]:
    out = []
    for var in ("NERAVA_PROXY_BIN", "NERAVA_PROXYCTL_BIN"):
        if os.environ.get(var):
            out.append(os.environ[var])
    if not out:
        pytest.skip("NERAVA_PROXY_BIN is not set (ctest sets it)")
    return out


def test_runtime_packages_cover_the_binaries():
    proc = _run([str(DEPLOY / "docker/check-runtime-packages.sh"),
                 str(DEPLOY / "docker/runtime-packages.txt"), *_binaries()])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runtime_package_check_fails_on_a_missing_package(tmp_path):
    binaries = _binaries()
    listed = (DEPLOY / "docker/runtime-packages.txt").read_text().splitlines()
    short = tmp_path / "packages.txt"
    short.write_text("\n".join(p for p in listed if p != "libpq5") + "\n")
    proc = _run([str(DEPLOY / "docker/check-runtime-packages.sh"), str(short), binaries[0]])
    assert proc.returncode == 1
    assert "add libpq5" in proc.stderr


# ------------------------------------------------------------------ against a real proxy


def _traffic(proxy) -> None:
    """One statement per route and protocol, and one failed login, so that the families with
    labels per event (queries_total, errors_total, query_duration_seconds) have series."""
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("SELECT 1").fetchall()
        conn.execute("CREATE TEMP TABLE deploy_probe (x int)")
        conn.execute("INSERT INTO deploy_probe VALUES (1)")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(proxy.dsn(password="wrong-password")).close()
    r = proxy.redis_client(socket_timeout=5, socket_connect_timeout=5)
    r.set("deploy:probe", "1")
    assert r.get("deploy:probe") == b"1"


def test_rules_and_dashboard_use_only_exported_metrics(proxy):
    _traffic(proxy)
    wanted = {"nerava_proxy_node_up", "nerava_proxy_primary_info",
              "nerava_proxy_replica_lag_seconds", "nerava_proxy_queries_total",
              "nerava_proxy_query_duration_seconds"}
    state = {}

    def complete() -> bool:
        state["text"] = _scrape(proxy.http_port)
        state["exported"] = check_metrics.exported_from_exposition(state["text"])
        return wanted <= set(state["exported"].families)

    wait_until("the proxy to export topology and traffic metrics", complete, timeout=20)
    exported = state["exported"]
    # The source parser and the exporter agree (the static check in CI relies on the parser).
    from_source = check_metrics.exported_from_source()
    assert set(from_source.families) <= set(exported.families), state["text"][:2000]
    problems = check_metrics.run(exported, check_labels=True)
    assert problems == [], "\n".join(problems)


def test_container_healthcheck_probe(proxy):
    script = str(DEPLOY / "docker/healthcheck.sh")
    env = dict(os.environ, NERAVA_HEALTH_ADDR=f"127.0.0.1:{proxy.http_port}")
    ok = _run([script, "/healthz"], env=env, timeout=10)
    assert ok.returncode == 0, ok.stderr
    missing = _run([script, "/no-such-page"], env=env, timeout=10)
    assert missing.returncode == 1 and "404" in missing.stderr
    closed = _run([script], env=dict(env, NERAVA_HEALTH_ADDR=f"127.0.0.1:{free_port()}"),
                  timeout=10)
    assert closed.returncode != 0
    # The HEALTHCHECK must answer well within Docker's --timeout=3s.
    started = time.monotonic()
    _run([script, "/healthz"], env=env, timeout=10)
    assert time.monotonic() - started < 2.5
