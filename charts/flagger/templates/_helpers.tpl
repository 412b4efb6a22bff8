{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "flagger.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "flagger.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "flagger.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "flagger.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "flagger.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flagger.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "flagger.labels" -}}
{{ include "flagger.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
The operator's API calls, one rule each, and nothing else (no wildcards). Shared by the ClusterRole
(all namespaces) and the Role (namespaced mode). Verbs follow the operator's portable API subset:
reads come from watches (get/list/watch), writes are create/update/patch, and delete only where
finalization removes objects the operator created.
*/}}
{{- define "flagger.rules" -}}
# Exactly the calls the operator makes (tests/e2e_install.rs compares them with a real run).
# Writes use create, update (with resourceVersion) and JSON merge patch; nothing is deleted:
# generated objects go with their Canary through owner references (garbage collection).
# Canaries: watched; a merge patch adds/removes the revertOnDeletion finalizer.
- apiGroups: ["flagger.app"]
  resources: ["canaries"]
  verbs: ["list", "watch", "patch"]
# Progress is kept in .status (merge patch; re-read after a conflict).
- apiGroups: ["flagger.app"]
  resources: ["canaries/status"]
  verbs: ["get", "patch"]
# Owner references with blockOwnerDeletion on generated objects need update on the owner's finalizers.
- apiGroups: ["flagger.app"]
  resources: ["canaries/finalizers"]
  verbs: ["update"]
- apiGroups: ["flagger.app"]
  resources: ["metrictemplates", "alertproviders"]
  verbs: ["list", "watch"]
# Targets and their -primary clones: created and updated; the target's replicas patched (scaling).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "update"]
# Apex, -primary and -canary Services; a pre-existing apex Service's selector is patched back on
# deletion (revertOnDeletion).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "update", "patch"]
# Config tracking reads the target's ConfigMaps/Secrets and writes their -primary copies; Secrets are
# also read for metric-provider credentials and alert-provider addresses.
- apiGroups: [""]
  resources: ["configmaps", "secrets"]
  verbs: ["get", "list", "watch", "create", "update"]
# Events on Canaries; repeats are folded into a count bump (patch).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# Istio traffic routing. A weight step is a merge patch of the VirtualService's routes
# (conditioned on its resourceVersion); drift and a stale cache are rewritten with update.
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "watch", "create", "update", "patch"]
- apiGroups: ["networking.istio.io"]
  resources: ["destinationrules"]
  verbs: ["get", "list", "watch", "create", "update"]
{{- end -}}
