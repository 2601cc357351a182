{{/* otelEnv is the OTLP export's environment (values: otel). An empty endpoint
renders nothing: the gateway then pushes nothing. */}}
{{- define "signal-gateway.otelEnv" -}}
{{- with .Values.otel }}
{{- if .endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .protocol | quote }}
- name: OTEL_METRIC_EXPORT_INTERVAL
  value: {{ .exportIntervalMs | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .serviceName | quote }}
{{- if .headersSecret }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom: {secretKeyRef: {name: {{ .headersSecret }}, key: headers}}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
