#!/usr/bin/env python3
"""Fails when an alert, a recording rule or a dashboard panel refers to a metric the proxy does not
export (other than the PLANNED ones below), or to a recording rule nobody defines.

    rules  deploy/prometheus/nerava-proxy.rules.yaml ─┐  nerava_proxy_* names,   ┌─ proxy/metrics.cc (default)
    dash   deploy/grafana/nerava-proxy.json ──────────┴─ label matchers, by() ──▶┤  or a live scrape:
                                                                               └─ --metrics-file / --metrics-url

With a live scrape it also checks label names: every `metric{label=...}` matcher and every
`by (...)` / `without (...)` label must exist on the metrics of that expression (or be a label the
scrape adds: pod_region, instance, ...). tests/integration/test_deploy.py runs it against a real
proxy; scripts/check-deploy.sh runs it against the source.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/nerava-proxy.rules.yaml"
DASHBOARD = ROOT / "deploy/grafana/nerava-proxy.json"
METRICS_SOURCE = ROOT / "proxy/metrics.cc"
PREFIX = "nerava_proxy_"

# Metrics the alerts and the dashboard already use but the proxy does not export yet. The issue
# that implements one deletes its line here; from then on the check holds it to the real
# exporter (and fails while the line is still here, so the list cannot go stale).
PLANNED: dict[str, str] = {}  # everything the alerts and dashboard use is exported now

# Labels the scrape adds to every series (the chart's pod label nerava.io/region becomes
# pod_region, docs/deploy.md) and labels PromQL itself produces.
TARGET_LABELS = {"pod_region", "instance", "job", "namespace", "pod", "container", "le",
                 "__name__", "alertname", "alertstate"}

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_RE = re.compile(r"\b(nerava_proxy_[A-Za-z0-9_]+)\b")
RECORDED_RE = re.compile(r"\b(nerava_proxy:[A-Za-z0-9_:]+)")
SELECTOR_RE = re.compile(r"\b((?:nerava_proxy_|nerava_proxy:)[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING_RE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


@dataclass
class Exported:
    """Metric families the proxy exports: name -> (type, label names or None when unknown)."""
    families: dict[str, tuple[str, set[str] | None]] = field(default_factory=dict)

    def family_of(self, name: str) -> str | None:
        if name in self.families:
            return name
        for suffix in HISTOGRAM_SUFFIXES:
            base = name[: -len(suffix)]
            if name.endswith(suffix) and self.families.get(base, ("",))[0] == "histogram":
                return base
        return None

    def labels_of(self, name: str) -> set[str] | None:
        family = self.family_of(name)
        return self.families[family][1] if family else None


def exported_from_source(path: Path = METRICS_SOURCE) -> Exported:
    """Names registered in proxy/metrics.cc: MakeFamily<prometheus::Gauge>(registry, "node_up", ...)."""
    text = path.read_text()
    out = Exported()
    for kind, name in re.findall(r"MakeFamily<prometheus::(\w+)>\(\s*\*?\w+\s*,\s*\"(\w+)\"", text):
        out.families[PREFIX + name] = (kind.lower(), None)
    if not out.families:
        raise SystemExit(f"check_metrics: found no MakeFamily(...) in {path}: update the parser")
    return out


def exported_from_exposition(text: str) -> Exported:
    """Families and their label names from the Prometheus text format."""
    out = Exported()
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
            out.families.setdefault(name, (kind.strip(), set()))
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{([^}]*)\})?\s", line)
        if not m:
            continue
        name, labels = m.group(1), m.group(3) or ""
        family = name
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "summary"):
                family = name[: -len(suffix)]
        kind, label_set = out.families.setdefault(family, (types.get(family, "untyped"), set()))
        label_set.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=\"", labels))
    return out


@dataclass
class Expr:
    where: str
    text: str


def rule_exprs(path: Path = RULES) -> tuple[list[Expr], dict[str, str]]:
    """Every expression of the rules file, and the recording rules it defines (name -> expr)."""
    doc = yaml.safe_load(path.read_text())
    exprs, recorded = [], {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            exprs.append(Expr(f"{path.name}: {'alert' if 'alert' in rule else 'record'} {name}",
                              rule["expr"]))
            if "record" in rule:
                recorded[rule["record"]] = rule["expr"]
    return exprs, recorded


def dashboard_exprs(path: Path = DASHBOARD) -> tuple[list[Expr], list[str]]:
    """Every query of the dashboard (panels, rows' panels, variables) and structural problems."""
    dash = json.loads(path.read_text())
    exprs, problems = [], []
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append(f"{path.name}: needs a `datasource` variable of type datasource/prometheus")
    for name, var in variables.items():
        if var.get("type") == "query":
            q = var.get("query")
            exprs.append(Expr(f"{path.name}: variable {name}", q["query"] if isinstance(q, dict) else q))

    def walk(panels):
        for p in panels:
            if p.get("type") == "row":
                walk(p.get("panels", []))
                continue
            title = p.get("title", f"panel {p.get('id')}")
            if (p.get("datasource") or {}).get("uid") != "${datasource}":
                problems.append(f"{path.name}: panel {title!r} does not use ${{datasource}}")
            targets = p.get("targets") or []
            if not targets:
                problems.append(f"{path.name}: panel {title!r} has no query")
            for t in targets:
                if not t.get("expr"):
                    problems.append(f"{path.name}: panel {title!r} target {t.get('refId')} has no expr")
                else:
                    exprs.append(Expr(f"{path.name}: panel {title!r}", t["expr"]))

    walk(dash.get("panels", []))
    ids = [p.get("id") for p in dash.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append(f"{path.name}: duplicate panel ids")
    return exprs, problems


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def recorded_labels(recorded: dict[str, str]) -> dict[str, set[str] | None]:
    """Labels a recording rule's output keeps: its outermost `by (...)`, else unknown (None)."""
    out: dict[str, set[str] | None] = {}
    for name, expr in recorded.items():
        m = re.search(r"\bby\s*\(([^)]*)\)", _strip_strings(expr))
        out[name] = ({s.strip() for s in m.group(1).split(",") if s.strip()} - {"le"}) if m else None
    return out


def check(exprs: list[Expr], recorded: dict[str, str], exported: Exported,
          check_labels: bool) -> list[str]:
    problems = []
    rec_labels = recorded_labels(recorded)
    for e in exprs:
        text = _strip_strings(e.text)
        names = set(METRIC_RE.findall(text))
        for name in sorted(names):
            family = exported.family_of(name)
            base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES
                         if name.endswith(s) and name[: -len(s)] in PLANNED), name)
            if family:
                continue
            if base in PLANNED:
                continue
            problems.append(f"{e.where}: {name} is not exported by the proxy (and not in PLANNED)")
        for name in sorted(set(RECORDED_RE.findall(text))):
            if name not in recorded:
                problems.append(f"{e.where}: recording rule {name} is not defined in {RULES.name}")
        if not check_labels:
            continue
        # Label names of every metric in the expression; unknown (planned) ones disable the
        # grouping check rather than guess.
        universe: set[str] | None = set(TARGET_LABELS)
        for name in names:
            labels = exported.labels_of(name)
            if labels is None:
                universe = None
                break
            universe |= labels
        for name in set(RECORDED_RE.findall(text)):
            labels = rec_labels.get(name)
            if labels is None or universe is None:
                universe = None
                break
            universe |= labels
        for metric, matchers in SELECTOR_RE.findall(text):
            known = (rec_labels.get(metric) if metric.startswith("nerava_proxy:")
                     else exported.labels_of(metric))
            if known is None:
                continue
            for label in MATCHER_RE.findall(matchers):
                if label not in known | TARGET_LABELS:
                    problems.append(f"{e.where}: {metric} has no label {label!r} "
                                    f"(it has {sorted(known)})")
        if universe is not None:
            for group in GROUPING_RE.findall(text):
                for label in (s.strip() for s in group.split(",")):
                    if label and label not in universe:
                        problems.append(f"{e.where}: groups by {label!r}, which none of its "
                                        f"metrics carries")
    for name in sorted(PLANNED):
        if exported.family_of(name):
            problems.append(f"{name} is exported now: delete it from PLANNED in {Path(__file__).name}")
    return sorted(set(problems))


def run(exported: Exported, check_labels: bool) -> list[str]:
    rule_list, recorded = rule_exprs()
    dash_list, problems = dashboard_exprs()
    return problems + check(rule_list + dash_list, recorded, exported, check_labels)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--source", type=Path, default=METRICS_SOURCE,
                     help="proxy/metrics.cc to read metric names from (default)")
    src.add_argument("--metrics-file", type=Path, help="a saved /metrics scrape")
    src.add_argument("--metrics-url", help="http://127.0.0.1:9187/metrics of a running proxy")
    args = ap.parse_args()
    if args.metrics_url:
        with urllib.request.urlopen(args.metrics_url, timeout=10) as r:
            exported, labels = exported_from_exposition(r.read().decode()), True
    elif args.metrics_file:
        exported, labels = exported_from_exposition(args.metrics_file.read_text()), True
    else:
        exported, labels = exported_from_source(args.source), False
    problems = run(exported, labels)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    source = args.metrics_url or args.metrics_file or args.source
    print(f"check_metrics: {len(exported.families)} exported families ({source}), "
          f"{len(PLANNED)} planned, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
