// Validates what can be validated of deploy/helm without helm (not packaged by Debian):
//
//   values.yaml + values-<region>.yaml ──merge (Helm rules)──▶ values.schema.json (ajv)
//   templates/*.{yaml,tpl} ── every .Values.x.y they read ──▶ exists in values.yaml
//   examples/<region>.yaml ── each object ──▶ kubernetes-models .validate() (Kubernetes schemas)
//                          ── ConfigMap, Deployment ──▶ agree with the merged values
//                          ── config.yaml ──▶ `nerava-proxy --check-config` (REGION etc. set)
//
// Each check also runs once on a deliberately broken input that it must reject, so a check that
// silently stopped working fails here too.
//
// Usage: node deploy/ci/validate.mjs [--proxy PATH]   (default $NERAVA_PROXY_BIN, then
//        build/proxy/nerava-proxy). Exit 0 when everything passes, 1 otherwise.

import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import Ajv from "ajv";
import YAML from "yaml";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const chartDir = path.join(root, "deploy/helm/nerava-proxy");
const examplesDir = path.join(root, "deploy/helm/examples");
const regions = ["us-east-1", "eu-west-1"];
const CHECK_CONFIG_TIMEOUT_MS = 15000;

let failures = 0;
let passes = 0;
function fail(what, detail) {
  failures += 1;
  console.error(`FAIL ${what}${detail ? `\n     ${String(detail).replace(/\n/g, "\n     ")}` : ""}`);
}
function pass(what) {
  passes += 1;
  console.log(`ok   ${what}`);
}
function check(what, fn) {
  try {
    const detail = fn();
    if (detail) fail(what, detail);
    else pass(what);
  } catch (e) {
    fail(what, e.stack || e.message);
  }
}

function parseArgs() {
  const args = process.argv.slice(2);
  let proxy = process.env.NERAVA_PROXY_BIN || path.join(root, "build/proxy/nerava-proxy");
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--proxy" && i + 1 < args.length) proxy = args[++i];
    else {
      console.error(`usage: node validate.mjs [--proxy PATH]`);
      process.exit(2);
    }
  }
  return { proxy };
}

const readYaml = (file) => YAML.parse(readFileSync(file, "utf8"));
const isMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// Helm's coalescing of -f files over the chart defaults: maps merge key by key, anything else
// (lists included) replaces, null deletes the key.
function helmMerge(base, over) {
  const out = structuredClone(base);
  for (const [k, v] of Object.entries(over ?? {})) {
    if (v === null) delete out[k];
    else if (isMap(v) && isMap(out[k])) out[k] = helmMerge(out[k], v);
    else out[k] = structuredClone(v);
  }
  return out;
}

// Key order does not matter in YAML maps (toYaml sorts them); list order does.
const canonical = (v) => Array.isArray(v) ? v.map(canonical)
  : isMap(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical(v[k])])) : v;
const deepEqual = (a, b) => JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
function diff(what, actual, expected) {
  return deepEqual(actual, expected)
    ? ""
    : `${what}: example has ${JSON.stringify(actual)}, values give ${JSON.stringify(expected)}`;
}

// ---------------------------------------------------------------------------------------------
// 1. values against values.schema.json

const schema = JSON.parse(readFileSync(path.join(chartDir, "values.schema.json"), "utf8"));
const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false, allowUnionTypes: true });
const validateValues = ajv.compile(schema);
const schemaErrors = () =>
  (validateValues.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message}`).join("\n");

const defaults = readYaml(path.join(chartDir, "values.yaml"));
check("values.yaml matches values.schema.json", () =>
  validateValues(defaults) ? "" : schemaErrors());

const merged = {};
for (const region of regions) {
  const file = `values-${region}.yaml`;
  const values = helmMerge(defaults, readYaml(path.join(chartDir, file)));
  merged[region] = values;
  check(`${file} (merged over values.yaml) matches values.schema.json`, () =>
    validateValues(values) ? "" : schemaErrors());
  check(`${file} sets region ${region} and lists nodes`, () => {
    const c = values.config;
    if (values.region !== region) return `region is ${JSON.stringify(values.region)}`;
    if (!c.postgres.nodes.length || (c.redis.enabled && !c.redis.nodes.length))
      return "postgres/redis node lists are empty";
    const hosts = [...c.postgres.nodes, ...c.redis.nodes].map((n) => n.host).sort();
    return diff("upstream hosts", hosts,
      ["primary-db", "primary-redis", "secondary-db", "secondary-redis"]);
  });
}

check("values.schema.json rejects broken values", () => {
  const broken = [
    ["DATABASE_URL off the sidecar", { appEnv: { DATABASE_URL: "postgresql://u@primary-db:5432/x" } }],
    ["unknown key", { bogus: 1 }],
    ["port as a string", { ports: { postgres: "6432" } }],
    ["node without host", { config: { postgres: { nodes: [{ name: "a", region: "us-east-1", port: 1 }] } } }],
    ["no postgres Secret name", { secrets: { postgresPassword: { name: "", key: "password" } } }],
  ];
  const accepted = broken
    .filter(([, over]) => validateValues(helmMerge(merged[regions[0]], over)))
    .map(([name]) => name);
  return accepted.length ? `accepted: ${accepted.join(", ")}` : "";
});

// ---------------------------------------------------------------------------------------------
// 2. every value the templates read exists in values.yaml (a typo renders as empty in Helm)

function valuePathsIn(text) {
  const paths = new Set();
  for (const m of text.matchAll(/\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) paths.add(m[1].slice(1));
  // `$c := .Values.config` in _helpers.tpl
  for (const m of text.matchAll(/\$c((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) paths.add(`config${m[1]}`);
  return [...paths];
}
function lookup(obj, dotted) {
  let cur = obj;
  for (const key of dotted.split(".")) {
    if (!isMap(cur) || !(key in cur)) return false;
    cur = cur[key];
  }
  return true;
}
const templatesDir = path.join(chartDir, "templates");
const templateText = readdirSync(templatesDir)
  .map((f) => readFileSync(path.join(templatesDir, f), "utf8"))
  .join("\n");
check("every .Values path the templates read is defined in values.yaml", () => {
  const paths = valuePathsIn(templateText);
  if (paths.length < 20) return `only ${paths.length} paths found: the scanner is broken`;
  const missing = paths.filter((p) => !lookup(defaults, p));
  return missing.length ? `undefined: ${missing.join(", ")}` : "";
});
check("the template scanner notices an undefined value", () =>
  valuePathsIn("{{ .Values.config.postgres.usr }}").filter((p) => !lookup(defaults, p)).length === 1
    ? "" : "a typo went unnoticed");

// ---------------------------------------------------------------------------------------------
// 3. example manifests: Kubernetes schemas and agreement with the values

const models = { "v1/ConfigMap": ConfigMap, "apps/v1/Deployment": Deployment };
function k8sErrors(doc) {
  const Model = models[`${doc.apiVersion}/${doc.kind}`];
  if (!Model) return `no model for ${doc.apiVersion} ${doc.kind} (add it to validate.mjs)`;
  try {
    new Model(doc).validate();
    return "";
  } catch (e) {
    return e.message;
  }
}
check("kubernetes-models rejects an invalid Deployment", () => {
  const bad = { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" },
    spec: { selector: {}, template: { spec: { containers: [{ name: "c", ports: [{ containerPort: "http" }] }] } } } };
  return k8sErrors(bad) ? "" : "accepted containerPort: \"http\"";
});

// The pod annotation Helm computes: sha256 of the "nerava-proxy.configMapData" text.
function configChecksum(data) {
  const config = data["config.yaml"].replace(/\n$/, "").split("\n").map((l) => `  ${l}`).join("\n");
  const text = `REGION: ${JSON.stringify(data.REGION)}\nPRIMARY_REGION: ${JSON.stringify(data.PRIMARY_REGION)}\n` +
    `config.yaml: |\n${config}`;
  return createHash("sha256").update(text).digest("hex");
}

function checkExampleAgainstValues(region, docs, v) {
  const problems = [];
  const want = (what, actual, expected) => {
    const d = diff(what, actual, expected);
    if (d) problems.push(d);
  };
  const fullname = v.fullnameOverride || "nerava-api-nerava-proxy";
  const cm = docs.find((d) => d.kind === "ConfigMap");
  const dep = docs.find((d) => d.kind === "Deployment");
  if (!cm || !dep) return "needs one ConfigMap and one Deployment";
  want("ConfigMap name", cm.metadata.name, fullname);
  want("REGION", cm.data.REGION, v.region);
  want("PRIMARY_REGION", cm.data.PRIMARY_REGION, v.primaryRegion);

  const cfg = YAML.parse(cm.data["config.yaml"]);
  const node = (n) => ({ name: n.name, region: n.region, host: n.host, port: n.port });
  want("postgres nodes", cfg.postgres.nodes, v.config.postgres.nodes.map(node));
  want("redis nodes", cfg.redis?.nodes ?? [], v.config.redis.enabled ? v.config.redis.nodes.map(node) : []);
  want("listeners", [cfg.postgres.listen.rw, cfg.postgres.listen.ro, cfg.redis?.listen, cfg.admin.http],
    [`127.0.0.1:${v.ports.postgres}`, `127.0.0.1:${v.ports.postgresReadOnly}`,
     `127.0.0.1:${v.ports.redis}`, `0.0.0.0:${v.ports.http}`]);
  want("postgres user", cfg.postgres.users.map((u) => u.name), [v.config.postgres.user]);
  want("max_lag", cfg.postgres.max_lag, v.config.postgres.maxLag);
  want("monitor", cfg.monitor, { interval: v.config.monitor.interval,
    failure_threshold: v.config.monitor.failureThreshold });
  want("failover", cfg.failover, v.config.failover);
  want("server_keepalive", cfg.server_keepalive, v.config.serverKeepalive);
  want("log_level/shutdown_timeout/workers", [cfg.log_level, cfg.shutdown_timeout, cfg.workers],
    [v.config.logLevel, v.config.shutdownTimeout, v.config.workers]);

  const pod = dep.spec.template;
  want("pod region label", pod.metadata.labels["nerava.io/region"], v.region);
  want("config checksum annotation", pod.metadata.annotations["checksum/nerava-proxy-config"],
    configChecksum(cm.data));
  if (v.metrics.annotations) {
    want("scrape annotations", [pod.metadata.annotations["prometheus.io/scrape"],
      pod.metadata.annotations["prometheus.io/port"], pod.metadata.annotations["prometheus.io/path"]],
      ["true", String(v.ports.http), "/metrics"]);
  }
  const containers = [...(pod.spec.initContainers ?? []), ...pod.spec.containers];
  const sidecar = containers.find((c) => c.name === "nerava-proxy");
  const app = pod.spec.containers.find((c) => c.name === v.exampleDeployment.name);
  if (!sidecar || !app) return [...problems, "missing the nerava-proxy or the app container"].join("\n");
  want("sidecar image", sidecar.image, `${v.image.repository}:${v.image.tag}`);
  want("sidecar args", sidecar.args, ["--config", "/etc/nerava-proxy/config.yaml"]);
  want("liveness", [sidecar.livenessProbe.httpGet.path, sidecar.livenessProbe.periodSeconds,
    sidecar.livenessProbe.failureThreshold], ["/healthz", v.probes.liveness.periodSeconds,
    v.probes.liveness.failureThreshold]);
  want("readiness", [sidecar.readinessProbe.httpGet.path, sidecar.readinessProbe.periodSeconds,
    sidecar.readinessProbe.failureThreshold], ["/readyz", v.probes.readiness.periodSeconds,
    v.probes.readiness.failureThreshold]);
  want("resources", sidecar.resources, v.resources);
  want("sidecar ports", sidecar.ports.map((p) => p.containerPort),
    [v.ports.postgres, v.ports.postgresReadOnly, ...(v.config.redis.enabled ? [v.ports.redis] : []),
     v.ports.http]);
  const secretEnv = (env, name) => env.find((e) => e.name === name)?.valueFrom?.secretKeyRef;
  want("PGPASSWORD Secret", secretEnv(sidecar.env, "PGPASSWORD"), v.secrets.postgresPassword);
  want("app PGPASSWORD Secret", secretEnv(app.env, "PGPASSWORD"), v.secrets.postgresPassword);
  if (v.secrets.redisPassword.name) {
    want("REDIS_PASSWORD Secret", secretEnv(sidecar.env, "REDIS_PASSWORD"), v.secrets.redisPassword);
  }
  const appVars = Object.fromEntries(app.env.filter((e) => "value" in e).map((e) => [e.name, e.value]));
  want("app env", appVars, v.appEnv);
  // The kubelet expands $(VAR) only from variables defined earlier in the list.
  const order = app.env.map((e) => e.name);
  for (const [name, value] of Object.entries(v.appEnv)) {
    for (const m of value.matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
      if (!(order.indexOf(m[1]) >= 0 && order.indexOf(m[1]) < order.indexOf(name)))
        problems.push(`app env ${name} uses $(${m[1]}), which is not defined before it`);
    }
  }
  const mounts = Object.fromEntries(sidecar.volumeMounts.map((m) => [m.name, m.mountPath]));
  want("sidecar mounts", mounts, { "nerava-proxy-config": "/etc/nerava-proxy",
    "nerava-proxy-admin": "/run/nerava-proxy" });
  const volumes = Object.fromEntries(pod.spec.volumes.map((vol) => [vol.name, vol]));
  want("config volume", volumes["nerava-proxy-config"]?.configMap?.name, fullname);
  want("admin volume is an emptyDir", isMap(volumes["nerava-proxy-admin"]?.emptyDir), true);
  const anti = pod.spec.affinity?.podAntiAffinity ?? {};
  const keys = [...(anti.requiredDuringSchedulingIgnoredDuringExecution ?? []).map((t) => t.topologyKey),
    ...(anti.preferredDuringSchedulingIgnoredDuringExecution ?? []).map((t) => t.podAffinityTerm.topologyKey)];
  want("anti-affinity topology keys", keys.sort(), ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]);
  return problems.join("\n");
}

function checkConfig(proxy, configText, region, primaryRegion) {
  const dir = mkdtempSync(path.join(tmpdir(), "nerava-deploy-"));
  try {
    const file = path.join(dir, "config.yaml");
    writeFileSync(file, configText);
    const env = { ...process.env, REGION: region, PRIMARY_REGION: primaryRegion,
      PGPASSWORD: "example-password", REDIS_PASSWORD: "example-password" };
    const r = spawnSync(proxy, ["--check-config", file], { env, encoding: "utf8",
      timeout: CHECK_CONFIG_TIMEOUT_MS });
    if (r.error) return { ok: false, output: r.error.message };
    return { ok: r.status === 0, output: `${r.stdout}${r.stderr}`.trim() };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const { proxy } = parseArgs();
const haveProxy = existsSync(proxy);
if (!haveProxy) fail(`nerava-proxy binary ${proxy}`, "not found: build it first or pass --proxy PATH");

for (const region of regions) {
  const file = path.join(examplesDir, `${region}.yaml`);
  const docs = YAML.parseAllDocuments(readFileSync(file, "utf8"))
    .map((d) => {
      if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
      return d.toJS();
    })
    .filter((d) => d !== null);
  for (const doc of docs) {
    check(`examples/${region}.yaml ${doc.kind} ${doc.metadata?.name}: Kubernetes schema`,
      () => k8sErrors(doc));
  }
  check(`examples/${region}.yaml agrees with values-${region}.yaml`,
    () => checkExampleAgainstValues(region, docs, merged[region]));
  const cm = docs.find((d) => d.kind === "ConfigMap");
  if (haveProxy && cm) {
    check(`examples/${region}.yaml config.yaml passes nerava-proxy --check-config`, () => {
      const r = checkConfig(proxy, cm.data["config.yaml"], cm.data.REGION, cm.data.PRIMARY_REGION);
      return r.ok ? "" : r.output;
    });
    check(`nerava-proxy --check-config rejects a broken ${region} config`, () => {
      const broken = cm.data["config.yaml"].replace("failure_threshold:", "failure_treshold:");
      const r = checkConfig(proxy, broken, cm.data.REGION, cm.data.PRIMARY_REGION);
      return r.ok ? "a misspelt key was accepted" : "";
    });
  }
}

console.log(`\nvalidate.mjs: ${passes} passed, ${failures} failed`);
console.log("not validated here: helm rendering itself (helm is not in Debian), admission by a live " +
  "API server, and the Docker image build (no Docker engine)");
process.exit(failures ? 1 : 0);
