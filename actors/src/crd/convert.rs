//! Conversion of a `Canary` object into the validated domain spec of `flagger-rollout`.
//!
//! Contract: a placeholder for a Canary whose JSON did not decode ([`super::decode`]) is
//! invalid with the field that did not fit. [`canary_input`] copies what the user wrote, losslessly and without judging it, into a
//! [`CanaryInput`]; [`canary_spec`] then validates it with [`CanarySpec::new`] (defaults, ranges,
//! legacy `threshold` semantics). `spec.analysis` is read when present, else the legacy v1alpha3
//! `spec.canaryAnalysis`; errors then name the field the user actually wrote
//! (`spec.canaryAnalysis.maxWeight`). Fields only other meshes use (`ingressRef`, `gatewayRefs`,
//! `meshName`, ...) are not carried over.
//!
//! Status goes both ways: [`status_from_crd`] rebuilds the rollout status a restarted actor resumes
//! from (lenient: odd values are clamped or dropped, never an error), and [`status_merge_patch`]
//! builds the JSON merge patch that makes `.status` equal to a rollout status.

use flagger_rollout::phase::Phase;
use flagger_rollout::spec::{
    AlertInput, AnalysisInput, AutoscalerRefInput, CanaryInput, CanarySpec, InvalidSpec,
    MeshProvider, MetricInput, ObjectRefInput, ServiceInput, SpecError, TemplateRefInput,
    ValidationOptions, WebhookInput,
};
use flagger_rollout::status::{
    CanaryStatus as DomainStatus, Condition, ConditionStatus, ProgressWaits as DomainWaits,
    Timestamp, Wait,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde::Serialize;

use super::canary::{
    AutoscalerRef, Canary, CanaryAlert, CanaryAnalysis, CanaryCondition, CanaryMetric, CanaryPhase,
    CanaryService, CanaryStatus, CanaryWebhook, LocalObjectReference, ProgressWait, ProgressWaits,
};
use super::decode::undecodable_of;

/// JSON path prefix of the modern analysis field.
const ANALYSIS_FIELD: &str = "spec.analysis";
/// JSON path prefix of the legacy v1alpha3 analysis field.
const LEGACY_ANALYSIS_FIELD: &str = "spec.canaryAnalysis";

/// Validates a Canary; `default_provider` is the operator's `--mesh-provider`.
pub fn canary_spec(
    canary: &Canary,
    default_provider: MeshProvider,
) -> Result<CanarySpec, InvalidSpec> {
    canary_spec_with(canary, ValidationOptions::new(default_provider))
}

/// Validates a Canary with the operator's options (`--mesh-provider`, `--no-cross-namespace-refs`).
pub fn canary_spec_with(
    canary: &Canary,
    options: ValidationOptions,
) -> Result<CanarySpec, InvalidSpec> {
    if let Some(undecodable) = undecodable_of(canary) {
        return Err(InvalidSpec {
            name: canary.name_any(),
            namespace: canary.namespace().unwrap_or_default(),
            errors: vec![SpecError {
                field: undecodable.field,
                problem: format!("cannot be read: {}", undecodable.problem),
            }],
        });
    }
    let input = canary_input(canary);
    CanarySpec::new_with(&input, options).map_err(|mut invalid| {
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
        service: spec.service.as_deref().map(service),
        analysis: spec
            .analysis
            .as_deref()
            .or(spec.canary_analysis.as_deref())
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

/// The rollout status stored in `.status`. A Canary without status (or with fields this version
/// does not understand) reads as a fresh, `Initializing` one; counters are clamped to their range.
pub fn status_from_crd(status: Option<&CanaryStatus>) -> DomainStatus {
    let Some(s) = status else {
        return DomainStatus::default();
    };
    let waits = s.progress_waits.as_ref();
    DomainStatus {
        phase: s.phase.map_or(Phase::Initializing, phase_from_crd),
        canary_weight: s
            .canary_weight
            .map_or(0, |w| u8::try_from(w.clamp(0, 100)).unwrap_or(0)),
        failed_checks: s.failed_checks.map_or(0, |n| u32::try_from(n).unwrap_or(0)),
        // Upstream can leave -1 here; a negative count means none done.
        iterations: s.iterations.map_or(0, |n| u32::try_from(n).unwrap_or(0)),
        last_applied_spec: s.last_applied_spec.clone().unwrap_or_default(),
        last_promoted_spec: s.last_promoted_spec.clone().unwrap_or_default(),
        last_transition_time: s.last_transition_time.as_ref().map(timestamp_from_time),
        tracked_configs: s.tracked_configs.clone().unwrap_or_default(),
        conditions: s
            .conditions
            .iter()
            .flatten()
            .filter_map(condition_from_crd)
            .collect(),
        progress_waits: DomainWaits {
            primary: waits
                .and_then(|w| w.primary.as_ref())
                .and_then(wait_from_crd),
            canary: waits
                .and_then(|w| w.canary.as_ref())
                .and_then(wait_from_crd),
        },
    }
}

/// The `.status` that represents `status`, with upstream's omissions: counters always, strings,
/// maps and lists only when non-empty. Session-affinity cookies are not part of the rollout status
/// and are left unset.
pub fn status_to_crd(status: &DomainStatus) -> CanaryStatus {
    let DomainStatus {
        phase,
        canary_weight,
        failed_checks,
        iterations,
        last_applied_spec,
        last_promoted_spec,
        last_transition_time,
        tracked_configs,
        conditions,
        progress_waits,
    } = status;
    let waits = ProgressWaits {
        primary: progress_waits.primary.map(wait_to_crd),
        canary: progress_waits.canary.map(wait_to_crd),
    };
    CanaryStatus {
        phase: Some(phase_to_crd(*phase)),
        canary_weight: Some(i32::from(*canary_weight)),
        failed_checks: Some(i32::try_from(*failed_checks).unwrap_or(i32::MAX)),
        iterations: Some(i32::try_from(*iterations).unwrap_or(i32::MAX)),
        tracked_configs: (!tracked_configs.is_empty()).then(|| tracked_configs.clone()),
        last_applied_spec: (!last_applied_spec.is_empty()).then(|| last_applied_spec.clone()),
        last_promoted_spec: (!last_promoted_spec.is_empty()).then(|| last_promoted_spec.clone()),
        last_transition_time: last_transition_time.and_then(time_from_timestamp),
        progress_waits: (waits != ProgressWaits::default()).then_some(waits),
        conditions: (!conditions.is_empty())
            .then(|| conditions.iter().map(condition_to_crd).collect()),
        ..CanaryStatus::default()
    }
}

/// Fields of `.status` the rollout status owns; a merge patch sets the absent ones to null so a
/// value from an earlier write (an old wait, a stale revision) does not survive.
const OWNED_STATUS_FIELDS: [&str; 10] = [
    "phase",
    "canaryWeight",
    "failedChecks",
    "iterations",
    "trackedConfigs",
    "lastAppliedSpec",
    "lastPromotedSpec",
    "lastTransitionTime",
    "progressWaits",
    "conditions",
];

/// A JSON merge patch (`{"status": {...}}`, for the status subresource) that makes `.status`
/// represent `status` whatever was written before, leaving fields it does not own untouched.
pub fn status_merge_patch(status: &DomainStatus) -> serde_json::Value {
    let mut body = match serde_json::to_value(status_to_crd(status)) {
        Ok(serde_json::Value::Object(map)) => map,
        // Serialising plain data cannot fail; an empty patch would change nothing.
        _ => serde_json::Map::new(),
    };
    for field in OWNED_STATUS_FIELDS {
        body.entry(field).or_insert(serde_json::Value::Null);
    }
    // Close the wait of one workload while the other stays open.
    if let Some(serde_json::Value::Object(waits)) = body.get_mut("progressWaits") {
        for side in ["primary", "canary"] {
            waits.entry(side).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": body })
}

fn phase_from_crd(phase: CanaryPhase) -> Phase {
    match phase {
        CanaryPhase::Initializing => Phase::Initializing,
        CanaryPhase::Initialized => Phase::Initialized,
        CanaryPhase::Waiting => Phase::Waiting,
        CanaryPhase::Progressing => Phase::Progressing,
        CanaryPhase::WaitingPromotion => Phase::WaitingPromotion,
        CanaryPhase::Promoting => Phase::Promoting,
        CanaryPhase::Finalising => Phase::Finalising,
        CanaryPhase::Succeeded => Phase::Succeeded,
        CanaryPhase::Failed => Phase::Failed,
        CanaryPhase::Terminating => Phase::Terminating,
        CanaryPhase::Terminated => Phase::Terminated,
    }
}

fn phase_to_crd(phase: Phase) -> CanaryPhase {
    match phase {
        Phase::Initializing => CanaryPhase::Initializing,
        Phase::Initialized => CanaryPhase::Initialized,
        Phase::Waiting => CanaryPhase::Waiting,
        Phase::Progressing => CanaryPhase::Progressing,
        Phase::WaitingPromotion => CanaryPhase::WaitingPromotion,
        Phase::Promoting => CanaryPhase::Promoting,
        Phase::Finalising => CanaryPhase::Finalising,
        Phase::Succeeded => CanaryPhase::Succeeded,
        Phase::Failed => CanaryPhase::Failed,
        Phase::Terminating => CanaryPhase::Terminating,
        Phase::Terminated => CanaryPhase::Terminated,
    }
}

fn timestamp_from_time(time: &Time) -> Timestamp {
    Timestamp::from_unix_millis(time.0.as_millisecond())
}

/// `None` only for instants outside what Kubernetes can represent.
fn time_from_timestamp(ts: Timestamp) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ts.unix_millis())
        .ok()
        .map(Time)
}

fn wait_from_crd(wait: &ProgressWait) -> Option<Wait> {
    Some(Wait {
        since: timestamp_from_time(wait.since.as_ref()?),
        deadline: timestamp_from_time(wait.deadline.as_ref()?),
    })
}

fn wait_to_crd(wait: Wait) -> ProgressWait {
    ProgressWait {
        since: time_from_timestamp(wait.since),
        deadline: time_from_timestamp(wait.deadline),
    }
}

/// Conditions without a type or with a status other than True/False/Unknown are dropped.
fn condition_from_crd(c: &CanaryCondition) -> Option<Condition> {
    let status = match c.status.as_deref()? {
        "True" => ConditionStatus::True,
        "False" => ConditionStatus::False,
        "Unknown" => ConditionStatus::Unknown,
        _ => return None,
    };
    let time = |t: &Option<Time>| t.as_ref().map_or(Timestamp::default(), timestamp_from_time);
    Some(Condition {
        condition_type: c.type_.clone().filter(|t| !t.is_empty())?,
        status,
        reason: c.reason.clone().unwrap_or_default(),
        message: c.message.clone().unwrap_or_default(),
        last_update_time: time(&c.last_update_time),
        last_transition_time: time(&c.last_transition_time),
    })
}

fn condition_to_crd(c: &Condition) -> CanaryCondition {
    CanaryCondition {
        type_: Some(c.condition_type.clone()),
        status: Some(c.status.to_string()),
        last_update_time: time_from_timestamp(c.last_update_time),
        last_transition_time: time_from_timestamp(c.last_transition_time),
        reason: Some(c.reason.clone()),
        message: Some(c.message.clone()),
    }
}
