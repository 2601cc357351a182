{{- define "signal-gateway.labels" -}}
app.kubernetes.io/name: signal-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- define "signal-gateway.lockNamespace" -}}
{{- default .Release.Namespace .Values.lockNamespace -}}
{{- end }}
