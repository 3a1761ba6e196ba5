#!/usr/bin/python3
"""pgbench -S through nerava-proxy (reads split to the replica) vs direct to the primary,
alternating target by target in one run, on a throwaway harness topology (issue 5's note).

    NERAVA_PROXY_BIN=$PWD/build/proxy/nerava-proxy /usr/bin/python3 bench/pgbench_split_vs_direct.py

Not a test and not a gate: numbers on a busy machine mean nothing; bench/compare.sh is the full
comparison against the peers.
"""
import os, re, subprocess, sys, statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "tests/integration"))
from tests.harness.topology import Topology, APP_USER, APP_PASSWORD, APP_DB
from conftest import start_proxy

def env_for(host, port):
    return dict(os.environ, PGHOST=host, PGPORT=str(port), PGUSER=APP_USER,
                PGPASSWORD=APP_PASSWORD, PGDATABASE=APP_DB)

def tps(env, clients, seconds=10):
    jobs = "1" if clients == 1 else "2"
    out = subprocess.run(["pgbench", "-n", "-S", "-c", str(clients), "-j", jobs, "-T", str(seconds)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    assert failed is None or failed.group(1) == "0", out.stdout
    return float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))

with Topology(pg_replicas=1, redis=False) as topo:
    primary = topo.pg.primary
    with start_proxy(topo, log_level="info") as p:
        direct = env_for("127.0.0.1", primary.port)
        proxied = env_for("127.0.0.1", p.pg_port)
        subprocess.run(["pgbench", "-i", "-s", "10", "-q"], env=direct, check=True,
                       capture_output=True, timeout=300)
        topo.pg.wait_streaming()
        results = {}
        for rnd in range(2):
            for clients in (1, 16):
                for name, env in (("direct", direct), ("proxy", proxied)):
                    results.setdefault((clients, name), []).append(tps(env, clients))
        for clients in (1, 16):
            d = results[(clients, "direct")]; q = results[(clients, "proxy")]
            print(f"-c {clients}: direct-to-primary {[round(x) for x in d]} tps, proxy "
                  f"{[round(x) for x in q]} tps, ratio of medians "
                  f"{statistics.median(q) / statistics.median(d):.2f}")
