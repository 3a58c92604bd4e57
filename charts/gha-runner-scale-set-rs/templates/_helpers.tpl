{{/*
Names. The scale set name is what workflows put in `runs-on`; Kubernetes object names
derive from it with "_" replaced by "-".
*/}}
{{- define "ghars.scaleSetName" -}}
{{- .Values.runnerScaleSetName | default .Release.Name -}}
{{- end }}

{{- define "ghars.resourceName" -}}
{{- include "ghars.scaleSetName" . | replace "_" "-" -}}
{{- end }}

{{- define "ghars.namespace" -}}
{{- .Values.namespaceOverride | default .Release.Namespace -}}
{{- end }}

{{- define "ghars.fullname" -}}
{{- printf "%s-gha-rs" (include "ghars.resourceName" .) | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "ghars.githubSecretName" -}}
{{- if kindIs "string" .Values.githubConfigSecret -}}
{{- .Values.githubConfigSecret -}}
{{- else -}}
{{- printf "%s-github-secret" (include "ghars.fullname" .) -}}
{{- end -}}
{{- end }}

{{- define "ghars.noPermissionServiceAccountName" -}}
{{- printf "%s-no-permission" (include "ghars.fullname" .) -}}
{{- end }}

{{- define "ghars.managerRoleName" -}}
{{- printf "%s-manager" (include "ghars.fullname" .) -}}
{{- end }}

{{/*
The installed controller's Deployment, as JSON ("{}" when none is found, e.g. under
`helm template`). Controllers are found by the label their chart sets
(app.kubernetes.io/part-of=gha-rs-controller); one watching only this namespace wins over
cluster-wide ones; more than one candidate is an error.
*/}}
{{- define "ghars.controllerDeployment" -}}
{{- $ns := include "ghars.namespace" . -}}
{{- $single := list -}}
{{- $cluster := list -}}
{{- range $d := (lookup "apps/v1" "Deployment" "" "").items -}}
{{- $labels := $d.metadata.labels | default dict -}}
{{- if eq (get $labels "app.kubernetes.io/part-of") "gha-rs-controller" -}}
{{- if hasKey $labels "actions.github.com/controller-watch-single-namespace" -}}
{{- if eq (get $labels "actions.github.com/controller-watch-single-namespace") $ns -}}
{{- $single = append $single $d -}}
{{- end -}}
{{- else -}}
{{- $cluster = append $cluster $d -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $candidates := $single | default $cluster -}}
{{- if gt (len $candidates) 1 -}}
{{- fail "several gha-rs-controller Deployments found: set controllerServiceAccount.namespace, controllerServiceAccount.name and controllerVersion" -}}
{{- end -}}
{{- if $candidates -}}
{{- first $candidates | toJson -}}
{{- else -}}
{{- "{}" -}}
{{- end -}}
{{- end }}

{{- define "ghars.controllerLabel" -}}
{{- $deployment := include "ghars.controllerDeployment" .root | fromJson -}}
{{- $labels := dig "metadata" "labels" dict $deployment -}}
{{- get $labels .key -}}
{{- end }}

{{- define "ghars.controllerServiceAccountName" -}}
{{- $csa := .Values.controllerServiceAccount | default dict -}}
{{- $name := $csa.name | default (include "ghars.controllerLabel" (dict "root" . "key" "actions.github.com/controller-service-account-name")) -}}
{{- required "controllerServiceAccount.name is required: no gha-rs-controller Deployment was found to discover it" $name -}}
{{- end }}

{{- define "ghars.controllerServiceAccountNamespace" -}}
{{- $csa := .Values.controllerServiceAccount | default dict -}}
{{- $ns := $csa.namespace | default (include "ghars.controllerLabel" (dict "root" . "key" "actions.github.com/controller-service-account-namespace")) -}}
{{- required "controllerServiceAccount.namespace is required: no gha-rs-controller Deployment was found to discover it" $ns -}}
{{- end }}

{{/*
The controller refuses (deletes) AutoscalingRunnerSets whose app.kubernetes.io/version label
is not its own major.minor, so the label carries the controller's version, not ours.
*/}}
{{- define "ghars.controllerVersion" -}}
{{- $v := .Values.controllerVersion | default (include "ghars.controllerLabel" (dict "root" . "key" "app.kubernetes.io/version")) -}}
{{- required "controllerVersion is required (the installed ARC controller's version, e.g. 0.14.2): no gha-rs-controller Deployment was found to discover it" $v | trimPrefix "v" -}}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "ghars.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ghars.resourceName" . }}
app.kubernetes.io/instance: {{ include "ghars.resourceName" . }}
app.kubernetes.io/version: {{ include "ghars.controllerVersion" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gha-rs
actions.github.com/scale-set-name: {{ include "ghars.resourceName" . }}
actions.github.com/scale-set-namespace: {{ include "ghars.namespace" . }}
{{- end }}

{{/*
metadata.labels and metadata.annotations of one object: the user's global labels and
annotations, minus keys the chart or the controller own, then the chart's labels.
Call with (dict "root" $ "component" "...").
*/}}
{{- define "ghars.metadata" -}}
{{- $root := .root -}}
{{- $reserved := include "ghars.labels" $root | fromYaml -}}
{{- $userLabels := mustMergeOverwrite (deepCopy ($root.Values.labels | default dict)) (.extraLabels | default dict) -}}
labels:
{{- range $k, $v := $userLabels }}
{{- if not (or (hasKey $reserved $k) (hasPrefix "actions.github.com/" $k) (eq $k "app.kubernetes.io/component")) }}
  {{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}
  {{- include "ghars.labels" $root | nindent 2 }}
{{- with .component }}
  app.kubernetes.io/component: {{ . }}
{{- end }}
{{- $annotations := dict -}}
{{- range $k, $v := ($root.Values.annotations | default dict) -}}
{{- if not (hasPrefix "actions.github.com/" $k) -}}
{{- $_ := set $annotations $k ($v | toString) -}}
{{- end -}}
{{- end -}}
{{- range $k, $v := (.annotations | default dict) -}}
{{- $_ := set $annotations $k $v -}}
{{- end -}}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "ghars.listenerImage" -}}
{{- $img := .Values.listener.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository ($img.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end }}

{{/*
The listener container as the chart builds it. ARC's controller starts from its own
container (LISTENER_CONFIG_PATH, the config volume, the `metrics` port when enabled) and
overrides image, command, resources and securityContext with these, appending env.
*/}}
{{- define "ghars.listenerContainer" -}}
{{- $l := .Values.listener -}}
name: listener
image: {{ include "ghars.listenerImage" . | quote }}
imagePullPolicy: {{ $l.image.pullPolicy }}
command: ["/ghalistener"]
env:
{{- with .Values.otel }}
{{- if .endpoint }}
  - name: OTEL_ENDPOINT
    value: {{ .endpoint | quote }}
  - name: OTEL_EXPORTER_OTLP_INSECURE
    value: {{ .insecure | toString | quote }}
  - name: GHALISTENER_OTEL_ID_SCHEME
    value: {{ .idScheme | default "otel-explorer" | quote }}
{{- end }}
{{- end }}
{{- with $l.extraEnv }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $l.probes.enabled }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .Values.metrics.port }}
  periodSeconds: {{ $l.probes.readiness.periodSeconds }}
  failureThreshold: {{ $l.probes.readiness.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .Values.metrics.port }}
  initialDelaySeconds: 30
  periodSeconds: {{ $l.probes.liveness.periodSeconds }}
  failureThreshold: {{ $l.probes.liveness.failureThreshold }}
{{- end }}
{{- with $l.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $l.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The AutoscalingRunnerSet's listenerTemplate: the chart's pod template with the user's
listenerTemplate merged over it.
*/}}
{{- define "ghars.listenerTemplate" -}}
{{- $l := .Values.listener -}}
{{- $user := deepCopy (.Values.listenerTemplate | default dict) -}}
{{- $userMeta := $user.metadata | default dict -}}
{{- $userSpec := $user.spec | default dict -}}
{{- /* metadata */ -}}
{{- $annotations := dict -}}
{{- if .Values.metrics.scrapeAnnotations -}}
{{- $_ := set $annotations "prometheus.io/scrape" "true" -}}
{{- $_ := set $annotations "prometheus.io/port" (.Values.metrics.port | toString) -}}
{{- $_ := set $annotations "prometheus.io/path" .Values.metrics.path -}}
{{- end -}}
{{- $annotations = mustMergeOverwrite $annotations ($l.podAnnotations | default dict) ($userMeta.annotations | default dict) -}}
{{- $labels := mustMergeOverwrite dict ($l.podLabels | default dict) ($userMeta.labels | default dict) -}}
{{- /* the listener container, then sidecars */ -}}
{{- $ours := include "ghars.listenerContainer" . | fromYaml -}}
{{- $containers := list -}}
{{- $sidecars := list -}}
{{- range $c := ($userSpec.containers | default list) -}}
{{- if eq $c.name "listener" -}}
{{- $env := concat ($ours.env | default list) ($c.env | default list) -}}
{{- $ours = mustMergeOverwrite $ours (omit $c "env") -}}
{{- $_ := set $ours "env" $env -}}
{{- else -}}
{{- $sidecars = append $sidecars $c -}}
{{- end -}}
{{- end -}}
{{- if not $ours.env -}}
{{- $_ := unset $ours "env" -}}
{{- end -}}
{{- $containers = prepend $sidecars $ours -}}
{{- /* pod spec */ -}}
{{- $spec := dict "terminationGracePeriodSeconds" $l.terminationGracePeriodSeconds -}}
{{- with $l.podSecurityContext }}{{ $_ := set $spec "securityContext" . }}{{ end -}}
{{- with $l.nodeSelector }}{{ $_ := set $spec "nodeSelector" . }}{{ end -}}
{{- with $l.tolerations }}{{ $_ := set $spec "tolerations" . }}{{ end -}}
{{- with $l.affinity }}{{ $_ := set $spec "affinity" . }}{{ end -}}
{{- with $l.priorityClassName }}{{ $_ := set $spec "priorityClassName" . }}{{ end -}}
{{- with $l.imagePullSecrets }}{{ $_ := set $spec "imagePullSecrets" . }}{{ end -}}
{{- $spec = mustMergeOverwrite $spec (omit $userSpec "containers") -}}
{{- $_ := set $spec "containers" $containers -}}
{{- $tmpl := dict "spec" $spec -}}
{{- $meta := dict -}}
{{- with $annotations }}{{ $_ := set $meta "annotations" . }}{{ end -}}
{{- with $labels }}{{ $_ := set $meta "labels" . }}{{ end -}}
{{- with $meta }}{{ $_ := set $tmpl "metadata" . }}{{ end -}}
{{- toYaml $tmpl -}}
{{- end }}

{{/* The runner pod template, with ARC's defaults for restartPolicy and the service account. */}}
{{- define "ghars.runnerTemplate" -}}
{{- $tmpl := deepCopy .Values.template -}}
{{- $spec := $tmpl.spec -}}
{{- if not $spec.restartPolicy -}}
{{- $_ := set $spec "restartPolicy" "Never" -}}
{{- end -}}
{{- if not $spec.serviceAccountName -}}
{{- $_ := set $spec "serviceAccountName" (include "ghars.noPermissionServiceAccountName" .) -}}
{{- end -}}
{{- toYaml $tmpl -}}
{{- end }}
