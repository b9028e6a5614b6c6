{{/* Names and labels shared by every object of the chart. */}}
{{- define "bedside.name" -}}bedside-operator{{- end }}

{{- define "bedside.labels" -}}
app.kubernetes.io/name: bedside-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: bedside
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "bedside.selector" -}}
app.kubernetes.io/name: bedside-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bedside.image" -}}
{{ .Values.operator.image.repository }}:{{ .Values.operator.image.tag | default .Chart.AppVersion }}
{{- end }}
