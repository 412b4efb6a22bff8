//! Conversion of a `Canary` object into the validated domain spec of `flagger-rollout`.
//!
//! Contract: [`canary_input`] copies what the user wrote, losslessly and without judging it, into a
//! [`CanaryInput`]; [`canary_spec`] then validates it with [`CanarySpec::new`] (defaults, ranges,
//! legacy `threshold` semantics). `spec.analysis` is read when present, else the legacy v1alpha3
//! `spec.canaryAnalysis`; errors then name the field the user actually wrote
//! (`spec.canaryAnalysis.maxWeight`). Fields only other meshes use (`ingressRef`, `gatewayRefs`,
//! `meshName`, ...) are not carried over.

use flagger_rollout::spec::{
    AlertInput, AnalysisInput, AutoscalerRefInput, CanaryInput, CanarySpec, InvalidSpec,
    MeshProvider, MetricInput, ObjectRefInput, ServiceInput, TemplateRefInput, WebhookInput,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde::Serialize;

use super::canary::{
    AutoscalerRef, Canary, CanaryAlert, CanaryAnalysis, CanaryMetric, CanaryService, CanaryWebhook,
    LocalObjectReference,
};

/// JSON path prefix of the modern analysis field.
const ANALYSIS_FIELD: &str = "spec.analysis";
/// JSON path prefix of the legacy v1alpha3 analysis field.
const LEGACY_ANALYSIS_FIELD: &str = "spec.canaryAnalysis";

/// Validates a Canary; `default_provider` is the operator's `--mesh-provider`.
pub fn canary_spec(
    canary: &Canary,
    default_provider: MeshProvider,
) -> Result<CanarySpec, InvalidSpec> {
    let input = canary_input(canary);
    CanarySpec::new(&input, default_provider).map_err(|mut invalid| {
        if uses_legacy_analysis(canary) {
            for error in &mut invalid.errors {
                if let Some(rest) = error.field.strip_prefix(ANALYSIS_FIELD) {
                    error.field = format!("{LEGACY_ANALYSIS_FIELD}{rest}");
                }
            }
        }
        invalid
    })
}

/// True when the analysis comes from the deprecated `spec.canaryAnalysis`.
pub fn uses_legacy_analysis(canary: &Canary) -> bool {
    canary.spec.analysis.is_none() && canary.spec.canary_analysis.is_some()
}

/// What the user wrote, in the rollout crate's input shape.
pub fn canary_input(canary: &Canary) -> CanaryInput {
    let spec = &canary.spec;
    CanaryInput {
        name: canary.name_any(),
        namespace: canary.namespace().unwrap_or_default(),
        provider: spec.provider.clone(),
        metrics_server: spec.metrics_server.clone(),
        target_ref: spec.target_ref.as_ref().map(object_ref),
        autoscaler_ref: spec.autoscaler_ref.as_ref().map(autoscaler_ref),
        service: spec.service.as_ref().map(service),
        analysis: spec
            .analysis
            .as_ref()
            .or(spec.canary_analysis.as_ref())
            .map(analysis),
        progress_deadline_seconds: spec.progress_deadline_seconds.map(i64::from),
        skip_analysis: spec.skip_analysis.unwrap_or(false),
        revert_on_deletion: spec.revert_on_deletion.unwrap_or(false),
        suspend: spec.suspend.unwrap_or(false),
    }
}

fn object_ref(r: &LocalObjectReference) -> ObjectRefInput {
    ObjectRefInput {
        api_version: r.api_version.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
    }
}

fn autoscaler_ref(r: &AutoscalerRef) -> AutoscalerRefInput {
    let replicas = r.primary_scaler_replicas.as_ref();
    AutoscalerRefInput {
        api_version: r.api_version.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
        primary_min_replicas: replicas.and_then(|r| r.min_replicas).map(i64::from),
        primary_max_replicas: replicas.and_then(|r| r.max_replicas).map(i64::from),
    }
}

fn service(s: &CanaryService) -> ServiceInput {
    ServiceInput {
        name: s.name.clone(),
        port: s.port.map(i64::from),
        port_name: s.port_name.clone(),
        target_port: s.target_port.as_ref().map(|p| match p {
            IntOrString::Int(n) => serde_json::Value::from(*n),
            IntOrString::String(name) => serde_json::Value::from(name.as_str()),
        }),
        app_protocol: s.app_protocol.clone(),
        port_discovery: s.port_discovery.unwrap_or(false),
        headless: s.headless.unwrap_or(false),
        timeout: s.timeout.clone(),
        gateways: s.gateways.clone().unwrap_or_default(),
        hosts: s.hosts.clone().unwrap_or_default(),
        traffic_policy: s.traffic_policy.clone(),
        matches: s.match_.clone().unwrap_or_default(),
        rewrite: to_json(s.rewrite.as_ref()),
        retries: to_json(s.retries.as_ref()),
        headers: to_json(s.headers.as_ref()),
        cors_policy: to_json(s.cors_policy.as_ref()),
        apex: to_json(s.apex.as_ref()),
        primary: to_json(s.primary.as_ref()),
        canary: to_json(s.canary.as_ref()),
    }
}

/// Typed Istio blocks are handed to the router as the JSON the user wrote. Serialising these plain
/// structs (string keys, finite numbers) cannot fail; `None` would only drop an empty block.
fn to_json<T: Serialize>(value: Option<&T>) -> Option<serde_json::Value> {
    value.and_then(|v| serde_json::to_value(v).ok())
}

fn analysis(a: &CanaryAnalysis) -> AnalysisInput {
    AnalysisInput {
        interval: a.interval.clone(),
        threshold: a.threshold.map(i64::from),
        iterations: a.iterations.map(i64::from),
        max_weight: a.max_weight.map(i64::from),
        step_weight: a.step_weight.map(i64::from),
        step_weights: a
            .step_weights
            .as_ref()
            .map(|steps| steps.iter().copied().map(i64::from).collect()),
        step_weight_promotion: a.step_weight_promotion.map(i64::from),
        mirror: a.mirror.unwrap_or(false),
        mirror_weight: a.mirror_weight.map(i64::from),
        primary_ready_threshold: a.primary_ready_threshold.map(i64::from),
        canary_ready_threshold: a.canary_ready_threshold.map(i64::from),
        matches: a.match_.clone().unwrap_or_default(),
        session_affinity: to_json(a.session_affinity.as_ref()),
        metrics: a.metrics.iter().flatten().map(metric).collect(),
        webhooks: a.webhooks.iter().flatten().map(webhook).collect(),
        alerts: a.alerts.iter().flatten().map(alert).collect(),
    }
}

fn metric(m: &CanaryMetric) -> MetricInput {
    let range = m.threshold_range.unwrap_or_default();
    MetricInput {
        name: m.name.clone(),
        interval: m.interval.clone(),
        threshold_min: range.min,
        threshold_max: range.max,
        threshold: m.threshold,
        query: m.query.clone(),
        template_ref: m.template_ref.as_ref().map(|t| TemplateRefInput {
            name: t.name.clone(),
            namespace: t.namespace.clone(),
        }),
        template_variables: m.template_variables.clone().unwrap_or_default(),
    }
}

fn webhook(w: &CanaryWebhook) -> WebhookInput {
    WebhookInput {
        name: w.name.clone(),
        hook_type: w.type_.clone(),
        url: w.url.clone(),
        timeout: w.timeout.clone(),
        retries: w.retries.map(i64::from),
        mute_alert: w.mute_alert.unwrap_or(false),
        disable_tls: w.disable_tls.unwrap_or(false),
        metadata: w.metadata.clone().unwrap_or_default(),
    }
}

fn alert(a: &CanaryAlert) -> AlertInput {
    let provider = a.provider_ref.as_ref();
    AlertInput {
        name: a.name.clone(),
        severity: a.severity.clone(),
        provider_name: provider.and_then(|p| p.name.clone()),
        provider_namespace: provider.and_then(|p| p.namespace.clone()),
    }
}
