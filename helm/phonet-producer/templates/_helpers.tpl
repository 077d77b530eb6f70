{{/* Chart name, overridable. */}}
{{- define "phonet-producer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "phonet-producer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "phonet-producer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release. */}}
{{- define "phonet-producer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "phonet-producer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels. */}}
{{- define "phonet-producer.labels" -}}
{{ include "phonet-producer.labelsFor" (dict "root" . "component" "producer") }}
{{- end }}

{{/* Common labels with another component: (dict "root" $ "component" "...").
The Services' component tells the ServiceMonitor which one to scrape. */}}
{{- define "phonet-producer.labelsFor" -}}
helm.sh/chart: {{ include "phonet-producer.chart" .root }}
{{ include "phonet-producer.selectorLabels" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: phonet-producer
{{- end }}

{{/* The `helm test` pod's labels: another app.kubernetes.io/name, so that no selector of the
producer's pods (workload, PodDisruptionBudget, Service, NetworkPolicy, topology spread)
picks it up; a PodDisruptionBudget that selects a pod without a controller stops allowing
evictions ("found no controller ref"), and a failed test pod is kept. */}}
{{- define "phonet-producer.testLabels" -}}
helm.sh/chart: {{ include "phonet-producer.chart" . }}
app.kubernetes.io/name: {{ printf "%s-test" (include "phonet-producer.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: phonet-producer
{{- end }}

{{/* True when the spool lives on persistent volumes: the pods then run in a StatefulSet,
each replica with its own claim (one producer per spool directory). */}}
{{- define "phonet-producer.persistentSpool" -}}
{{- if and .Values.spool.enabled .Values.spool.persistence.enabled }}true{{ end }}
{{- end }}

{{/* The StatefulSet's governing (headless) Service. */}}
{{- define "phonet-producer.headlessName" -}}
{{- printf "%s-headless" (include "phonet-producer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where the spool is mounted (PHONET_SPOOL_DIR). */}}
{{- define "phonet-producer.spoolDir" -}}
/var/lib/phonet-producer/spool
{{- end }}

{{- define "phonet-producer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "phonet-producer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "phonet-producer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* True when the chart must create a Secret (for the API key or the broker URL). */}}
{{- define "phonet-producer.createSecret" -}}
{{- if or (not .Values.phonet.existingSecret) (not .Values.amqp.existingSecret) }}true{{ end }}
{{- end }}

{{- define "phonet-producer.secretName" -}}
{{- printf "%s-secrets" (include "phonet-producer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where the API key comes from: existingSecret/key, or the chart's Secret. */}}
{{- define "phonet-producer.apiKeySecretName" -}}
{{- default (include "phonet-producer.secretName" .) .Values.phonet.existingSecret }}
{{- end }}
{{- define "phonet-producer.apiKeySecretKey" -}}
{{- if .Values.phonet.existingSecret }}{{ .Values.phonet.existingSecretKey }}{{ else }}api-key{{ end }}
{{- end }}
{{- define "phonet-producer.amqpSecretName" -}}
{{- default (include "phonet-producer.secretName" .) .Values.amqp.existingSecret }}
{{- end }}
{{- define "phonet-producer.amqpSecretKey" -}}
{{- if .Values.amqp.existingSecret }}{{ .Values.amqp.existingSecretKey }}{{ else }}amqp-url{{ end }}
{{- end }}

{{/* Settings that are not secret, as environment variables (rendered into the ConfigMap). */}}
{{- define "phonet-producer.config" -}}
PHONET_DOMAIN: {{ .Values.phonet.domain | quote }}
PHONET_SUBSCRIBERS: {{ join "," .Values.phonet.subscribers | quote }}
{{- with .Values.phonet.url }}
PHONET_URL: {{ . | quote }}
{{- end }}
PHONET_EXCHANGE: {{ .Values.exchange | quote }}
PHONET_CLICK2CALL_QUEUE: {{ .Values.click2callQueue | quote }}
METRICS_HOST: "0.0.0.0"
METRICS_PORT: "9120"
LOG_LEVEL: {{ .Values.logLevel | quote }}
LOG_FORMAT: {{ .Values.logFormat | quote }}
PHONET_SHUTDOWN_TIMEOUT: {{ .Values.shutdownTimeout | quote }}
PHONET_STANDBY: {{ .Values.standby | quote }}
PHONET_CLICK2CALL_ALLOWED_USERS: {{ join "," .Values.click2call.allowedUsers | quote }}
PHONET_CLICK2CALL_ALLOWED_NUMBERS: {{ .Values.click2call.allowedNumbers | quote }}
PHONET_CLICK2CALL_RATE_LIMIT: {{ .Values.click2call.rateLimit | quote }}
{{- with .Values.amqp.tls.secretName }}
AMQP_CA_FILE: {{ printf "/etc/phonet-producer/amqp-tls/%s" $.Values.amqp.tls.caKey | quote }}
{{- if $.Values.amqp.tls.certKey }}
AMQP_CERT_FILE: {{ printf "/etc/phonet-producer/amqp-tls/%s" $.Values.amqp.tls.certKey | quote }}
AMQP_KEY_FILE: {{ printf "/etc/phonet-producer/amqp-tls/%s" $.Values.amqp.tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- if .Values.spool.enabled }}
PHONET_SPOOL_DIR: {{ include "phonet-producer.spoolDir" . | quote }}
PHONET_SPOOL_MAX_BYTES: {{ .Values.spool.maxBytes | int64 | quote }}
PHONET_SPOOL_FSYNC: {{ .Values.spool.fsync | quote }}
{{- end }}
{{- end }}

{{/* Fail early on values that cannot work together. */}}
{{- define "phonet-producer.validate" -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) (addf .Values.shutdownTimeout 2) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed shutdownTimeout (%v) + 2 so the producer can drain before it is killed" .Values.terminationGracePeriodSeconds .Values.shutdownTimeout) }}
{{- end }}
{{- /* The chart sets these itself; an extraEnv copy would win over it unseen. */ -}}
{{- $managed := dict "PHONET_SHUTDOWN_TIMEOUT" "set shutdownTimeout instead (the grace period is checked against it)" "PHONET_SPOOL_DIR" "set spool.enabled instead (the chart mounts the spool volume there)" "PHONET_REPLICA_ID" "the chart sets it to the pod name, unique per replica" }}
{{- range .Values.extraEnv }}
{{- if hasKey $managed .name }}
{{- fail (printf "extraEnv sets %s: %s" .name (get $managed .name)) }}
{{- end }}
{{- end }}
{{- $fullname := include "phonet-producer.fullname" . }}
{{- if and (include "phonet-producer.persistentSpool" .) (gt (len $fullname) 52) }}
{{- /* kubernetes/kubernetes#64023: the label would pass 63 characters and no pod would start. */ -}}
{{- fail (printf "the StatefulSet's name %s has %d characters, more than 52: Kubernetes labels each of its pods with the name, a hyphen and a 10-character revision hash (at most 63 in all), so no pod would start. Set fullnameOverride (or a shorter release name)" $fullname (len $fullname)) }}
{{- end }}
{{- if and (include "phonet-producer.persistentSpool" .) .Values.spool.persistence.existingClaim (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "spool.persistence.existingClaim (%s) is one claim and replicaCount is %d: each replica needs a spool of its own (one producer per spool directory; a second one stops at start). Leave spool.persistence.existingClaim empty for a claim per replica, or set replicaCount to 1" .Values.spool.persistence.existingClaim (int .Values.replicaCount)) }}
{{- end }}
{{- end }}

{{/*
The container's resources: .Values.resources, with the memory request and limit derived
from sizing.subscribers when resources sets neither (values.yaml gives the formula).
*/}}
{{- define "phonet-producer.resources" -}}
{{- $res := deepCopy (.Values.resources | default dict) }}
{{- $n := int (.Values.sizing.subscribers | default 0) }}
{{- if gt $n 0 }}
{{- $request := add (int .Values.sizing.baseMi) (div (add (mul (int .Values.sizing.perThousandMi) $n) 999) 1000) }}
{{- $limit := add $request (int .Values.sizing.headroomMi) }}
{{- $requests := get $res "requests" | default dict }}
{{- $limits := get $res "limits" | default dict }}
{{- /* Either memory value set by hand: both are the user's (a derived one could contradict it). */ -}}
{{- if not (or (hasKey $requests "memory") (hasKey $limits "memory")) }}
{{- $_ := set $requests "memory" (printf "%dMi" $request) }}
{{- $_ := set $limits "memory" (printf "%dMi" $limit) }}
{{- $_ := set $res "requests" $requests }}
{{- $_ := set $res "limits" $limits }}
{{- end }}
{{- end }}
{{- toYaml $res }}
{{- end }}
