{{/* name is the app.kubernetes.io/name label: nameOverride, else signal-gateway. */}}
{{- define "signal-gateway.name" -}}
{{- default "signal-gateway" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* fullname names every object of the release: fullnameOverride; else, with a
nameOverride, "<release>-<nameOverride>" (the release name alone when it
already contains it); else the release name alone, as every earlier version
named them, so that an upgrade renames nothing. */}}
{{- define "signal-gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if and .Values.nameOverride (not (contains .Values.nameOverride .Release.Name)) -}}
{{- printf "%s-%s" .Release.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{/* selectorLabels are the labels the Deployment, Service, PDB and spread
constraints select on; they never change between upgrades. */}}
{{- define "signal-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signal-gateway.name" . }}
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
{{- default (include "signal-gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end }}

{{- /* subjects of every binding that grants the gateway its rights: its
ServiceAccount, and rbac.extraSubjects (e.g. the Kubernetes group that an EKS
access entry maps a Lambda function's role to, docs/lambda.md). */}}
{{- define "signal-gateway.subjects" -}}
- kind: ServiceAccount
  name: {{ include "signal-gateway.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- with .Values.rbac.extraSubjects }}
{{ toYaml . }}
{{- end }}
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
{{ include "signal-gateway.scheme" . }}://{{ include "signal-gateway.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.service.port }}
{{- end }}

{{/* scheme is the gateway's own: https when tls.enabled. */}}
{{- define "signal-gateway.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end -}}
{{- end }}

{{/* portName names the serving port of the container and the Service. */}}
{{- define "signal-gateway.portName" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end -}}
{{- end }}

{{/* tlsSecret is the Secret holding tls.crt and tls.key: tls.existingSecret, or
the one cert-manager writes for the chart's Certificate. */}}
{{- define "signal-gateway.tlsSecret" -}}
{{- if .Values.tls.existingSecret -}}
{{- .Values.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-tls" (include "signal-gateway.fullname" .) -}}
{{- end -}}
{{- end }}

{{/* authResource is what senders must be allowed to create (GATEWAY_AUTH_RESOURCE). */}}
{{- define "signal-gateway.authResource" -}}
{{- if .Values.senders.group -}}
{{- printf "%s.%s" .Values.senders.resource .Values.senders.group -}}
{{- else -}}
{{- .Values.senders.resource -}}
{{- end -}}
{{- end }}

{{/* rules renders the PolicyRules of every file in .files (paths in the
chart), in order, as one YAML list: the body of a Role's "rules:". */}}
{{- define "signal-gateway.rules" -}}
{{- range $f := .files }}
{{ $.root.Files.Get $f | trim }}
{{- end }}
{{- end }}
