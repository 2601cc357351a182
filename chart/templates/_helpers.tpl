{{/* selectorLabels are the labels the Deployment, Service, PDB and spread
constraints select on; they never change between upgrades. */}}
{{- define "signal-gateway.selectorLabels" -}}
app.kubernetes.io/name: signal-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* labels go on every object the chart renders. */}}
{{- define "signal-gateway.labels" -}}
{{ include "signal-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: kubernaut
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "signal-gateway.lockNamespace" -}}
{{- default .Release.Namespace .Values.lockNamespace -}}
{{- end }}

{{- define "signal-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default .Release.Name .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end }}

{{- define "signal-gateway.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{/* url is the in-cluster base URL of the gateway's Service. */}}
{{- define "signal-gateway.url" -}}
http://{{ .Release.Name }}.{{ .Release.Namespace }}.svc:{{ .Values.service.port }}
{{- end }}

{{/* rules renders the PolicyRules of every file in .files (paths in the
chart), in order, as one YAML list: the body of a Role's "rules:". */}}
{{- define "signal-gateway.rules" -}}
{{- range $f := .files }}
{{ $.root.Files.Get $f | trim }}
{{- end }}
{{- end }}
