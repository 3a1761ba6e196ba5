{{/*
Named templates the nerava-api chart includes in its pod template (docs/deploy.md, "Add the
sidecar to nerava-api"). Each takes (dict "Values" <this chart's values> "Release" .Release):

  metadata.annotations      include "nerava-proxy.podAnnotations" $p   | nindent 8
  metadata.labels           include "nerava-proxy.podLabels" $p       | nindent 8
  spec.affinity             include "nerava-proxy.affinity" (merge (dict "selector" <pod labels>) $p)
  spec.containers (app) env include "nerava-proxy.appEnv" $p          | nindent 12
  spec.containers           include "nerava-proxy.sidecar" $p         | nindent 8
     (or spec.initContainers when nativeSidecar is true)
  spec.volumes              include "nerava-proxy.volumes" $p         | nindent 8

templates/example-deployment.yaml uses exactly these, so it shows the result.
*/}}

{{/* The sidecar container (one list item). */}}
{{- define "nerava-proxy.sidecar" -}}
- name: nerava-proxy
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["--config", "/etc/nerava-proxy/config.yaml"]
  {{- if .Values.nativeSidecar }}
  restartPolicy: Always
  {{- end }}
  env:
    - name: REGION
      valueFrom:
        configMapKeyRef:
          name: {{ include "nerava-proxy.fullname" . }}
          key: REGION
    - name: PRIMARY_REGION
      valueFrom:
        configMapKeyRef:
          name: {{ include "nerava-proxy.fullname" . }}
          key: PRIMARY_REGION
    {{- include "nerava-proxy.passwordEnv" . | nindent 4 }}
  ports:
    - name: proxy-pg
      containerPort: {{ .Values.ports.postgres }}
      protocol: TCP
    - name: proxy-pg-ro
      containerPort: {{ .Values.ports.postgresReadOnly }}
      protocol: TCP
    {{- if .Values.config.redis.enabled }}
    - name: proxy-redis
      containerPort: {{ .Values.ports.redis }}
      protocol: TCP
    {{- end }}
    - name: proxy-metrics
      containerPort: {{ .Values.ports.http }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /readyz
      port: proxy-metrics
    periodSeconds: {{ .Values.probes.startup.periodSeconds }}
    timeoutSeconds: {{ .Values.probes.startup.timeoutSeconds }}
    failureThreshold: {{ .Values.probes.startup.failureThreshold }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: proxy-metrics
    periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
    timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
    failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: proxy-metrics
    periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
    timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
    failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
  {{- if .Values.preStopSleepSeconds }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ .Values.preStopSleepSeconds }}"]
  {{- end }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
    seccompProfile:
      type: RuntimeDefault
  volumeMounts:
    - name: nerava-proxy-config
      mountPath: /etc/nerava-proxy
      readOnly: true
    - name: nerava-proxy-admin
      mountPath: /run/nerava-proxy
{{- end -}}

{{/* PGPASSWORD (and REDIS_PASSWORD when a Secret is named) from the existing Secrets. */}}
{{- define "nerava-proxy.passwordEnv" -}}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.postgresPassword.name }}
      key: {{ .Values.secrets.postgresPassword.key }}
{{- if .Values.secrets.redisPassword.name }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.redisPassword.name }}
      key: {{ .Values.secrets.redisPassword.key }}
{{- end }}
{{- end -}}

{{/* The app container's env: the passwords first (the URLs expand $(PGPASSWORD)), then appEnv. */}}
{{- define "nerava-proxy.appEnv" -}}
{{ include "nerava-proxy.passwordEnv" . }}
{{- range $name, $value := .Values.appEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Volumes: the config from the ConfigMap, the admin socket on an emptyDir the pod shares. */}}
{{- define "nerava-proxy.volumes" -}}
- name: nerava-proxy-config
  configMap:
    name: {{ include "nerava-proxy.fullname" . }}
    items:
      - key: config.yaml
        path: config.yaml
- name: nerava-proxy-admin
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end -}}

{{/* For another container of the pod that runs nerava-proxyctl (it must run as uid 10001: the
socket is mode 0600). */}}
{{- define "nerava-proxy.adminSocketMount" -}}
- name: nerava-proxy-admin
  mountPath: /run/nerava-proxy
{{- end -}}

{{/* Pod annotations: restart on config change; Prometheus scrape. */}}
{{- define "nerava-proxy.podAnnotations" -}}
checksum/nerava-proxy-config: {{ include "nerava-proxy.configMapData" . | sha256sum }}
{{- if .Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ports.http | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* Pod anti-affinity over .selector (the API pods' labels): zones first, then nodes. Each of
antiAffinity.zone / .host is "required", "preferred" or "none". */}}
{{- define "nerava-proxy.affinity" -}}
{{- $zone := .Values.antiAffinity.zone -}}
{{- $host := .Values.antiAffinity.host -}}
podAntiAffinity:
  {{- if or (eq $zone "required") (eq $host "required") }}
  requiredDuringSchedulingIgnoredDuringExecution:
    {{- if eq $zone "required" }}
    - topologyKey: topology.kubernetes.io/zone
      labelSelector:
        matchLabels:
          {{- toYaml .selector | nindent 10 }}
    {{- end }}
    {{- if eq $host "required" }}
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- toYaml .selector | nindent 10 }}
    {{- end }}
  {{- end }}
  {{- if or (eq $zone "preferred") (eq $host "preferred") }}
  preferredDuringSchedulingIgnoredDuringExecution:
    {{- if eq $zone "preferred" }}
    - weight: 100
      podAffinityTerm:
        topologyKey: topology.kubernetes.io/zone
        labelSelector:
          matchLabels:
            {{- toYaml .selector | nindent 12 }}
    {{- end }}
    {{- if eq $host "preferred" }}
    - weight: 50
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- toYaml .selector | nindent 12 }}
    {{- end }}
  {{- end }}
{{- end -}}

{{/* Pod labels: the scrape config turns nerava.io/region into `pod_region` on every series, which
the cross-region alerts and the dashboard group by (docs/deploy.md, "Prometheus"). */}}
{{- define "nerava-proxy.podLabels" -}}
nerava.io/region: {{ .Values.region }}
{{- end -}}
