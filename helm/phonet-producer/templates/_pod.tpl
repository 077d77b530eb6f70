{{/* The producer's pod, shared by the Deployment (spool in memory or an emptyDir) and the
StatefulSet (spool on a claim per replica). Rendered at column 0: include it with nindent. */}}
{{- define "phonet-producer.podTemplate" -}}
metadata:
  labels:
    {{- include "phonet-producer.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Roll the pod when the settings or the chart-managed secret change.
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "phonet-producer.serviceAccountName" . }}
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  # Above PHONET_SHUTDOWN_TIMEOUT, so SIGTERM can drain the buffer before SIGKILL.
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  containers:
    - name: producer
      image: {{ include "phonet-producer.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      envFrom:
        - configMapRef:
            name: {{ include "phonet-producer.fullname" . }}
      env:
        # The key is read from a file mounted from the Secret, never an env value.
        - name: PHONET_API_KEY_FILE
          value: /etc/phonet-producer/api-key/{{ include "phonet-producer.apiKeySecretKey" . }}
        - name: AMQP_URL
          valueFrom:
            secretKeyRef:
              name: {{ include "phonet-producer.amqpSecretName" . }}
              key: {{ include "phonet-producer.amqpSecretKey" . }}
        # The pod name: unique per replica, and in a StatefulSet the same after a restart
        # (what the host name gives by default, made explicit).
        - name: PHONET_REPLICA_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: metrics
          containerPort: 9120
          protocol: TCP
      startupProbe:
        httpGet:
          path: /healthz
          port: metrics
        periodSeconds: {{ .Values.startupProbe.periodSeconds }}
        failureThreshold: {{ .Values.startupProbe.failureThreshold }}
        timeoutSeconds: {{ .Values.startupProbe.timeoutSeconds }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: metrics
        periodSeconds: {{ .Values.livenessProbe.periodSeconds }}
        failureThreshold: {{ .Values.livenessProbe.failureThreshold }}
        timeoutSeconds: {{ .Values.livenessProbe.timeoutSeconds }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: metrics
        periodSeconds: {{ .Values.readinessProbe.periodSeconds }}
        failureThreshold: {{ .Values.readinessProbe.failureThreshold }}
        timeoutSeconds: {{ .Values.readinessProbe.timeoutSeconds }}
      {{- with (include "phonet-producer.resources" . | fromYaml) }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        # A directory mount (no subPath), so a rotated key reaches the running pod.
        - name: api-key
          mountPath: /etc/phonet-producer/api-key
          readOnly: true
        {{- if .Values.amqp.tls.secretName }}
        - name: amqp-tls
          mountPath: /etc/phonet-producer/amqp-tls
          readOnly: true
        {{- end }}
        {{- if .Values.spool.enabled }}
        - name: spool
          mountPath: {{ include "phonet-producer.spoolDir" . }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    - name: api-key
      secret:
        secretName: {{ include "phonet-producer.apiKeySecretName" . }}
        items:
          - key: {{ include "phonet-producer.apiKeySecretKey" . }}
            path: {{ include "phonet-producer.apiKeySecretKey" . }}
    {{- with .Values.amqp.tls.secretName }}
    - name: amqp-tls
      secret:
        secretName: {{ . }}
    {{- end }}
    {{- if not .Values.spool.enabled }}
    {{- else if not .Values.spool.persistence.enabled }}
    - name: spool
      emptyDir:
        sizeLimit: {{ .Values.spool.emptyDir.sizeLimit }}
    {{- else if .Values.spool.persistence.existingClaim }}
    # One replica at most (the chart refuses more): one producer per spool directory.
    - name: spool
      persistentVolumeClaim:
        claimName: {{ .Values.spool.persistence.existingClaim }}
    {{- end }}
    {{- /* Otherwise the StatefulSet's volumeClaimTemplates give each replica its claim. */}}
  {{- if gt (int .Values.replicaCount) 1 }}
  topologySpreadConstraints:
    {{- if .Values.topologySpreadConstraints }}
    {{- toYaml .Values.topologySpreadConstraints | nindent 4 }}
    {{- else }}
    # Replicas on different nodes when possible: a node loss takes one owner, not all.
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "phonet-producer.selectorLabels" . | nindent 10 }}
    {{- end }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
