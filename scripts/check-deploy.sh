#!/usr/bin/env bash
# Checks the deployment kit without a cluster, Docker or helm (none of which CI has):
#   promtool check rules + promtool test rules   deploy/prometheus/
#   node deploy/ci/validate.mjs                  Helm values vs schema, example manifests vs the
#                                                Kubernetes schemas and the values, example
#                                                configs through nerava-proxy --check-config
#   deploy/ci/check_metrics.py                   every metric the alerts and the dashboard use is
#                                                exported by proxy/metrics.cc (or listed as planned)
#   deploy/docker/check-runtime-packages.sh      the image's runtime packages cover the binaries
# Needs the built proxy ($NERAVA_PROXY_BIN, default build/proxy/nerava-proxy), promtool
# (scripts/install-deps.sh) and node + npm. tests/integration/test_deploy.py runs the same checks
# under ctest and adds a scrape of a real proxy.
set -euo pipefail
cd "$(dirname "$0")/.."

proxy_bin=${NERAVA_PROXY_BIN:-build/proxy/nerava-proxy}
status=0
step() { echo "== $*"; }
run() {
  if ! "$@"; then
    echo "check-deploy: FAILED: $*" >&2
    status=1
  fi
}

for tool in promtool node npm; do
  command -v "$tool" >/dev/null || { echo "check-deploy: $tool is not installed" >&2; exit 1; }
done
[ -x "$proxy_bin" ] || { echo "check-deploy: $proxy_bin is missing: build first" >&2; exit 1; }

step "promtool check rules"
run timeout 120 promtool check rules deploy/prometheus/nerava-proxy.rules.yaml
step "promtool test rules"
run timeout 300 promtool test rules deploy/prometheus/tests/*.yaml

step "helm values, example manifests, example configs"
run timeout 300 npm ci --prefix deploy/ci --no-audit --no-fund --loglevel=error
run timeout 120 node deploy/ci/validate.mjs --proxy "$proxy_bin"

step "metric names in alerts and dashboard"
run timeout 60 python3 deploy/ci/check_metrics.py

step "runtime packages of the container image"
binaries=("$proxy_bin")
ctl_bin="$(dirname "$proxy_bin")/nerava-proxyctl"
[ -x "$ctl_bin" ] && binaries+=("$ctl_bin")
run timeout 60 deploy/docker/check-runtime-packages.sh deploy/docker/runtime-packages.txt \
  "${binaries[@]}"

if [ "$status" -ne 0 ]; then
  echo "check-deploy: FAILED" >&2
  exit 1
fi
echo "check-deploy: all checks passed (not covered here: docker build, helm template, a live cluster)"
