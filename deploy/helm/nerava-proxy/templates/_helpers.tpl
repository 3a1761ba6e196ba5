{{/*
Helpers shared by the sidecar templates and the chart's own manifests.

Every named template here takes a context with .Values (this chart's values) and .Release, so the
nerava-api chart can call them with
  (dict "Values" (index .Values "nerava-proxy") "Release" .Release)
where Helm has already merged this chart's defaults into .Values["nerava-proxy"].
*/}}

{{/* Name of the ConfigMap (and prefix of everything else this chart creates). */}}
{{- define "nerava-proxy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-nerava-proxy" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "nerava-proxy.labels" -}}
app.kubernetes.io/name: nerava-proxy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/component: database-proxy
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
The proxy's config.yaml. REGION, PRIMARY_REGION and the passwords stay ${...}: the proxy
interpolates them from the container environment (config/examples/us-east-1.yaml has the same shape).
*/}}
{{- define "nerava-proxy.configYaml" -}}
{{- $c := .Values.config -}}
region: "${REGION}"
primary_region: "${PRIMARY_REGION}"
log_level: {{ $c.logLevel }}
shutdown_timeout: {{ $c.shutdownTimeout }}
workers: {{ $c.workers }}
postgres:
  listen:
    rw: 127.0.0.1:{{ .Values.ports.postgres }}
    ro: 127.0.0.1:{{ .Values.ports.postgresReadOnly }}
  auth: {{ $c.postgres.auth }}
  users:
    - name: {{ $c.postgres.user }}
      password: "${PGPASSWORD}"
  nodes:
{{- range $c.postgres.nodes }}
    - name: {{ .name }}
      region: {{ .region }}
      host: {{ .host }}
      port: {{ .port }}
{{- end }}
  max_lag:
    seconds: {{ $c.postgres.maxLag.seconds }}
    bytes: {{ $c.postgres.maxLag.bytes }}
  backend_tls:
    sslmode: {{ $c.postgres.backendTls.sslmode }}
{{- if $c.redis.enabled }}
redis:
  listen: 127.0.0.1:{{ .Values.ports.redis }}
  password: "${REDIS_PASSWORD:-}"
  backend_password: "${REDIS_PASSWORD:-}"
  nodes:
{{- range $c.redis.nodes }}
    - name: {{ .name }}
      region: {{ .region }}
      host: {{ .host }}
      port: {{ .port }}
{{- end }}
{{- end }}
monitor:
  interval: {{ $c.monitor.interval }}
  failure_threshold: {{ $c.monitor.failureThreshold }}
failover:
  wait: {{ $c.failover.wait }}
server_keepalive:
  idle: {{ $c.serverKeepalive.idle }}
  interval: {{ $c.serverKeepalive.interval }}
  count: {{ $c.serverKeepalive.count }}
admin:
  socket: /run/nerava-proxy/admin.sock
  http: 0.0.0.0:{{ .Values.ports.http }}
{{- end -}}

{{/* The ConfigMap's data; its hash is the pod's checksum annotation. */}}
{{- define "nerava-proxy.configMapData" -}}
{{- if not .Values.region }}
{{- fail "nerava-proxy: set `region` (this cluster's region, e.g. -f values-us-east-1.yaml)" }}
{{- end -}}
REGION: {{ .Values.region | quote }}
PRIMARY_REGION: {{ .Values.primaryRegion | quote }}
config.yaml: |
  {{- include "nerava-proxy.configYaml" . | nindent 2 }}
{{- end -}}
