//! Validated domain types of a Canary spec.
//!
//! Contract: the CRD layer (actors) fills a plain [`CanaryInput`] — every field optional, integers
//! wide, strings unparsed, exactly as the user wrote them — and calls [`CanarySpec::new`]. That is the
//! only way to get a [`CanarySpec`]; it either returns a spec in which every invariant below holds or
//! an [`InvalidSpec`] listing every problem, each naming the field as a JSON path
//! (`spec.analysis.maxWeight`). Validation never panics.
//!
//! Invariants of a [`CanarySpec`]:
//! - `target_ref.kind` is `Deployment`; names are non-empty.
//! - `analysis.interval >= 1s` (upstream clamps to 10 s; we clamp to 1 s and say so in the docs).
//! - `analysis.threshold >= 1`.
//! - the strategy is exactly one of `stepWeight`(+`maxWeight`), `stepWeights`, `iterations`, and its
//!   numbers are in range (`1 <= stepWeight <= maxWeight <= 100`, steps strictly ascending in 1–100,
//!   `iterations >= 1`).
//! - every metric has a way to be queried (builtin name, inline `query`, or `templateRef`).
//! - every webhook has a known type, a name, a URL and a parsable timeout.
//!
//! Defaults follow upstream (flagger-behavior §1): interval 60 s, threshold 1, maxWeight 100,
//! progressDeadlineSeconds 600, service.portName `http`, targetPort = port, gateways `["mesh"]`,
//! webhook timeout 10 s, metric interval `1m` (builtin and inline-query metrics only), ready
//! thresholds 100 %. A missing `analysis` means `skipAnalysis`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::parse_go_duration;
use crate::weights::WeightSteps;

// ------------------------------------------------------------------------------------------------
// Input: what the user wrote (filled by the CRD layer).
// ------------------------------------------------------------------------------------------------

/// A Canary as written by the user, before validation. Field names follow the CRD (camelCase there).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryInput {
    /// `metadata.name` of the Canary.
    pub name: String,
    /// `metadata.namespace` of the Canary.
    pub namespace: String,
    /// `spec.provider`; `None` means the operator's `--mesh-provider`.
    pub provider: Option<String>,
    pub metrics_server: Option<String>,
    pub target_ref: Option<ObjectRefInput>,
    pub autoscaler_ref: Option<AutoscalerRefInput>,
    pub service: Option<ServiceInput>,
    /// `spec.analysis`, or the legacy `spec.canaryAnalysis` when `analysis` is absent.
    pub analysis: Option<AnalysisInput>,
    pub progress_deadline_seconds: Option<i64>,
    pub skip_analysis: bool,
    pub revert_on_deletion: bool,
    pub suspend: bool,
}

/// `{apiVersion, kind, name}` reference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectRefInput {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoscalerRefInput {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub primary_min_replicas: Option<i64>,
    pub primary_max_replicas: Option<i64>,
}

/// `spec.service`. Mesh-specific blocks are passed through as JSON for the router.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceInput {
    pub name: Option<String>,
    pub port: Option<i64>,
    pub port_name: Option<String>,
    /// `targetPort` as written: a number or a port name.
    pub target_port: Option<serde_json::Value>,
    pub app_protocol: Option<String>,
    pub port_discovery: bool,
    pub headless: bool,
    pub timeout: Option<String>,
    pub gateways: Vec<String>,
    pub hosts: Vec<String>,
    pub traffic_policy: Option<serde_json::Value>,
    /// `service.match` (Istio HTTPMatchRequest list).
    pub matches: Vec<serde_json::Value>,
    pub rewrite: Option<serde_json::Value>,
    pub retries: Option<serde_json::Value>,
    pub headers: Option<serde_json::Value>,
    pub cors_policy: Option<serde_json::Value>,
    /// `service.apex`, `service.primary`, `service.canary` metadata blocks.
    pub apex: Option<serde_json::Value>,
    pub primary: Option<serde_json::Value>,
    pub canary: Option<serde_json::Value>,
}

/// `spec.analysis`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalysisInput {
    pub interval: Option<String>,
    pub threshold: Option<i64>,
    pub iterations: Option<i64>,
    pub max_weight: Option<i64>,
    pub step_weight: Option<i64>,
    pub step_weights: Option<Vec<i64>>,
    pub step_weight_promotion: Option<i64>,
    pub mirror: bool,
    pub mirror_weight: Option<i64>,
    pub primary_ready_threshold: Option<i64>,
    pub canary_ready_threshold: Option<i64>,
    /// `analysis.match` (A/B conditions), passed through for the router.
    pub matches: Vec<serde_json::Value>,
    pub session_affinity: Option<serde_json::Value>,
    pub metrics: Vec<MetricInput>,
    pub webhooks: Vec<WebhookInput>,
    pub alerts: Vec<AlertInput>,
}

/// `analysis.metrics[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricInput {
    pub name: Option<String>,
    pub interval: Option<String>,
    pub threshold_min: Option<f64>,
    pub threshold_max: Option<f64>,
    /// Legacy single `threshold` (used only when no `thresholdRange` bound is set).
    pub threshold: Option<f64>,
    pub query: Option<String>,
    pub template_ref: Option<TemplateRefInput>,
    pub template_variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateRefInput {
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// `analysis.webhooks[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookInput {
    pub name: Option<String>,
    /// `type`; empty or absent means `rollout`.
    pub hook_type: Option<String>,
    pub url: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<i64>,
    pub mute_alert: bool,
    pub disable_tls: bool,
    pub metadata: BTreeMap<String, String>,
}

/// `analysis.alerts[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertInput {
    pub name: Option<String>,
    pub severity: Option<String>,
    pub provider_name: Option<String>,
    pub provider_namespace: Option<String>,
}

// ------------------------------------------------------------------------------------------------
// Errors.
// ------------------------------------------------------------------------------------------------

/// One problem in a Canary spec, naming the field as a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    /// JSON path of the offending field, e.g. `spec.analysis.maxWeight`.
    pub field: String,
    pub problem: String,
}

/// A Canary spec that cannot be run; lists every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid canary spec: {}", join_errors(.errors))]
pub struct InvalidSpec {
    pub name: String,
    pub namespace: String,
    /// Never empty.
    pub errors: Vec<SpecError>,
}

fn join_errors(errors: &[SpecError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl InvalidSpec {
    /// The fields named by the errors, in order (for conditions and tests).
    pub fn fields(&self) -> Vec<&str> {
        self.errors.iter().map(|e| e.field.as_str()).collect()
    }
}

// ------------------------------------------------------------------------------------------------
// Validated domain types.
// ------------------------------------------------------------------------------------------------

/// Routing provider. Only the providers flagger-rs implements parse; upstream's other names are
/// recognised and rejected with a message that says so and lists the supported ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MeshProvider {
    Istio,
    /// No traffic shifting: Blue/Green through the `<svc>-canary` Service only.
    Kubernetes,
}

/// A provider name that flagger-rs does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("unknown provider {0:?}, valid providers: istio, kubernetes")]
    Unknown(String),
    #[error(
        "provider {0:?} is an upstream Flagger provider that flagger-rs does not support, valid providers: istio, kubernetes"
    )]
    Unsupported(String),
}

const UPSTREAM_ONLY_PROVIDERS: &[&str] = &[
    "apisix",
    "appmesh",
    "appmesh:v1beta2",
    "contour",
    "gatewayapi",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
    "gloo",
    "knative",
    "kuma",
    "linkerd",
    "nginx",
    "osm",
    "skipper",
    "smi",
    "smi:v1alpha1",
    "smi:v1alpha2",
    "smi:v1alpha3",
    "traefik",
];

impl FromStr for MeshProvider {
    type Err = ProviderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "istio" => Ok(Self::Istio),
            "kubernetes" => Ok(Self::Kubernetes),
            other if UPSTREAM_ONLY_PROVIDERS.contains(&other) => {
                Err(ProviderError::Unsupported(other.to_owned()))
            }
            other => Err(ProviderError::Unknown(other.to_owned())),
        }
    }
}

impl fmt::Display for MeshProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Istio => "istio",
            Self::Kubernetes => "kubernetes",
        })
    }
}

/// Workload kinds flagger-rs can canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TargetKind {
    Deployment,
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Deployment")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    pub api_version: String,
    pub kind: TargetKind,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoscalerRef {
    pub api_version: String,
    /// Always `HorizontalPodAutoscaler`.
    pub kind: String,
    pub name: String,
    pub primary_min_replicas: Option<u32>,
    pub primary_max_replicas: Option<u32>,
}

/// Container port reference of `service.targetPort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// `spec.service` with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Apex service name (`service.name`, defaults to the target name).
    pub name: String,
    pub port: u16,
    /// Defaults to `http`.
    pub port_name: String,
    /// Defaults to `port`.
    pub target_port: PortRef,
    pub app_protocol: Option<String>,
    pub port_discovery: bool,
    pub headless: bool,
    pub timeout: Option<String>,
    /// Defaults to `["mesh"]` when empty.
    pub gateways: Vec<String>,
    /// As written; the router appends `<svc>` unless present or `*` is present.
    pub hosts: Vec<String>,
    pub traffic_policy: Option<serde_json::Value>,
    pub matches: Vec<serde_json::Value>,
    pub rewrite: Option<serde_json::Value>,
    pub retries: Option<serde_json::Value>,
    pub headers: Option<serde_json::Value>,
    pub cors_policy: Option<serde_json::Value>,
    pub apex: Option<serde_json::Value>,
    pub primary: Option<serde_json::Value>,
    pub canary: Option<serde_json::Value>,
}

impl ServiceSpec {
    pub fn primary_name(&self) -> String {
        format!("{}-primary", self.name)
    }
    pub fn canary_name(&self) -> String {
        format!("{}-canary", self.name)
    }
}

/// How an analysis moves traffic (upstream `DeploymentStrategy()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Strategy {
    /// Progressive weights (`stepWeight`/`stepWeights`).
    Canary(WeightSteps),
    /// `iterations` rounds with no traffic on the canary (or mirrored), then a full switch.
    BlueGreen { iterations: u32 },
    /// `iterations` rounds with the requests matching `analysis.match` on the canary.
    AbTesting { iterations: u32 },
}

impl Strategy {
    /// The label upstream uses in `flagger_canary_*_total{deployment_strategy}`.
    pub fn label(&self) -> &'static str {
        match self {
            Strategy::Canary(_) => "canary",
            Strategy::BlueGreen { .. } => "blue-green",
            Strategy::AbTesting { .. } => "ab-testing",
        }
    }

    /// Total iterations of an iteration-based strategy.
    pub fn iterations(&self) -> Option<u32> {
        match self {
            Strategy::Canary(_) => None,
            Strategy::BlueGreen { iterations } | Strategy::AbTesting { iterations } => {
                Some(*iterations)
            }
        }
    }
}

/// The two metrics every provider knows without a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BuiltinMetric {
    /// Percent (0–100) of non-5xx responses of the canary workload.
    RequestSuccessRate,
    /// P99 request duration of the canary workload, in milliseconds.
    RequestDuration,
}

impl BuiltinMetric {
    pub fn name(self) -> &'static str {
        match self {
            Self::RequestSuccessRate => "request-success-rate",
            Self::RequestDuration => "request-duration",
        }
    }

    /// Builtin names, including the pre-v1alpha3 aliases upstream still accepts.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "request-success-rate" | "istio_requests_total" | "envoy_cluster_upstream_rq" => {
                Some(Self::RequestSuccessRate)
            }
            "request-duration"
            | "istio_request_duration_seconds_bucket"
            | "envoy_cluster_upstream_rq_time_bucket" => Some(Self::RequestDuration),
            _ => None,
        }
    }
}

/// Where a metric's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricSource {
    Builtin(BuiltinMetric),
    /// Deprecated inline PromQL, run against the canary's (or the global) metrics server.
    Query(String),
    /// A MetricTemplate; `namespace` defaults to the Canary's.
    Template {
        name: String,
        namespace: String,
    },
}

/// Inclusive bounds a metric value must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ThresholdRange {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// One metric check of the analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricCheck {
    pub name: String,
    pub source: MetricSource,
    /// Window substituted into `{{ interval }}`: the metric's `interval`, defaulting to `1m` for
    /// builtin and inline-query metrics, empty for template metrics (as upstream).
    pub window: String,
    /// Bounds after converting the legacy `threshold` (success rate: min; duration and custom: max).
    pub range: ThresholdRange,
    pub template_variables: BTreeMap<String, String>,
}

impl MetricCheck {
    /// Is `value` inside the bounds? Bounds are inclusive, as upstream.
    pub fn accepts(&self, value: f64) -> bool {
        !value.is_nan()
            && self.range.min.is_none_or(|min| value >= min)
            && self.range.max.is_none_or(|max| value <= max)
    }
}

/// When a webhook is called (flagger-behavior §2.10.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HookType {
    /// Before scaling up a new revision; refusal keeps the canary `Waiting`.
    ConfirmRollout,
    /// First analysis tick of a run; failure is a failed check.
    PreRollout,
    /// Every later analysis tick before the metrics (type `rollout` or empty); failure is a failed check.
    Rollout,
    /// Before each weight increase; refusal halts without a failed check.
    ConfirmTrafficIncrease,
    /// When max weight/iterations are reached; refusal keeps the canary `WaitingPromotion`.
    ConfirmPromotion,
    /// After Succeeded or Failed; failures only produce events.
    PostRollout,
    /// Each analysis tick; a **success** triggers a rollback.
    Rollback,
    /// Receives every Kubernetes event recorded for the canary.
    Event,
}

/// A webhook `type` that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown webhook type {0:?}, valid types: confirm-rollout, pre-rollout, rollout, confirm-traffic-increase, confirm-promotion, post-rollout, rollback, event"
)]
pub struct UnknownHookType(pub String);

impl FromStr for HookType {
    type Err = UnknownHookType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "confirm-rollout" => Self::ConfirmRollout,
            "pre-rollout" => Self::PreRollout,
            "" | "rollout" => Self::Rollout,
            "confirm-traffic-increase" => Self::ConfirmTrafficIncrease,
            "confirm-promotion" => Self::ConfirmPromotion,
            "post-rollout" => Self::PostRollout,
            "rollback" => Self::Rollback,
            "event" => Self::Event,
            other => return Err(UnknownHookType(other.to_owned())),
        })
    }
}

impl HookType {
    /// The name as written in manifests and sent in the payload's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfirmRollout => "confirm-rollout",
            Self::PreRollout => "pre-rollout",
            Self::Rollout => "rollout",
            Self::ConfirmTrafficIncrease => "confirm-traffic-increase",
            Self::ConfirmPromotion => "confirm-promotion",
            Self::PostRollout => "post-rollout",
            Self::Rollback => "rollback",
            Self::Event => "event",
        }
    }

    /// How the caller walks a group of hooks of this type (spec order): it stops at the first
    /// failure, except for `rollback` hooks, where it stops at the first **success** (that is
    /// the signal).
    pub fn stops_on_success(self) -> bool {
        self == Self::Rollback
    }
}

impl fmt::Display for HookType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One webhook of the analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub name: String,
    pub hook_type: HookType,
    pub url: String,
    /// Defaults to 10 s.
    pub timeout: Duration,
    pub retries: u32,
    pub mute_alert: bool,
    pub disable_tls: bool,
    pub metadata: BTreeMap<String, String>,
}

/// Severity of a notification, and the filter level of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    Info,
    Warn,
    Error,
}

impl Severity {
    /// Does an alert configured at `self` deliver a message of `message` severity?
    /// `info` → all, `warn` → warn + error, `error` → error only.
    pub fn delivers(self, message: Severity) -> bool {
        message >= self
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            // Upstream docs say empty means info (the code drops them; we follow the docs).
            "" | "info" => Ok(Self::Info),
            "warn" => Ok(Self::Warn),
            "error" => Ok(Self::Error),
            other => Err(format!(
                "unknown severity {other:?}, valid severities: info, warn, error"
            )),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        })
    }
}

/// One per-canary alert (`analysis.alerts[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub name: String,
    pub severity: Severity,
    pub provider_name: String,
    /// Defaults to the Canary's namespace.
    pub provider_namespace: String,
}

/// `spec.analysis` with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSpec {
    /// Tick period; at least 1 s.
    pub interval: Duration,
    /// Failed checks that trigger a rollback; at least 1.
    pub threshold: u32,
    pub strategy: Strategy,
    /// Promotion moves traffic back in steps of this size; `None` = all at once.
    pub step_weight_promotion: Option<u8>,
    pub mirror: bool,
    pub mirror_weight: Option<u8>,
    /// Percent of updated primary replicas that must be available (default 100).
    pub primary_ready_threshold: u8,
    /// Percent of updated canary replicas that must be available (default 100).
    pub canary_ready_threshold: u8,
    /// A/B match conditions, for the router.
    pub matches: Vec<serde_json::Value>,
    pub session_affinity: Option<serde_json::Value>,
    pub metrics: Vec<MetricCheck>,
    pub webhooks: Vec<Webhook>,
    pub alerts: Vec<Alert>,
}

impl AnalysisSpec {
    /// Webhooks of one type, in spec order.
    pub fn hooks(&self, hook_type: HookType) -> impl Iterator<Item = &Webhook> {
        self.webhooks
            .iter()
            .filter(move |h| h.hook_type == hook_type)
    }

    pub fn has_hooks(&self, hook_type: HookType) -> bool {
        self.hooks(hook_type).next().is_some()
    }
}

/// A validated Canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanarySpec {
    pub name: String,
    pub namespace: String,
    pub provider: MeshProvider,
    pub metrics_server: Option<String>,
    pub target_ref: TargetRef,
    pub autoscaler_ref: Option<AutoscalerRef>,
    pub service: ServiceSpec,
    pub analysis: AnalysisSpec,
    pub progress_deadline: Duration,
    /// `spec.skipAnalysis`, or no `analysis` at all.
    pub skip_analysis: bool,
    pub revert_on_deletion: bool,
    pub suspend: bool,
    /// Adjustments made while validating that the user should hear about (e.g. the kubernetes
    /// provider forcing Blue/Green). Texts as upstream's warnings.
    pub warnings: Vec<String>,
}

/// Interval used when a spec is invalid or has no analysis.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Interval floor (upstream: 10 s).
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: u64 = 600;
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Iterations forced by the kubernetes provider when none are set (upstream).
pub const KUBERNETES_PROVIDER_ITERATIONS: u32 = 10;

/// Operator-wide settings that change what a valid Canary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationOptions {
    /// `--mesh-provider`, used when `spec.provider` is absent.
    pub default_provider: MeshProvider,
    /// `--no-cross-namespace-refs`: a `templateRef` or `providerRef` naming another namespace
    /// is an error (upstream's message: "can't access ..., cross-namespace references are
    /// blocked").
    pub no_cross_namespace_refs: bool,
}

impl ValidationOptions {
    pub fn new(default_provider: MeshProvider) -> Self {
        Self {
            default_provider,
            no_cross_namespace_refs: false,
        }
    }
}

impl CanarySpec {
    /// Validates `input`. `default_provider` is the operator's `--mesh-provider`, used when
    /// `spec.provider` is absent.
    pub fn new(input: &CanaryInput, default_provider: MeshProvider) -> Result<Self, InvalidSpec> {
        Self::new_with(input, ValidationOptions::new(default_provider))
    }

    /// Validates `input` with the operator's [`ValidationOptions`].
    pub fn new_with(input: &CanaryInput, options: ValidationOptions) -> Result<Self, InvalidSpec> {
        let default_provider = options.default_provider;
        let mut v = Validator {
            errors: Vec::new(),
            no_cross_namespace_refs: options.no_cross_namespace_refs,
        };
        if input.name.is_empty() {
            v.error("metadata.name", "must not be empty");
        }
        let provider = match input.provider.as_deref() {
            None | Some("") => default_provider,
            Some(p) => match p.parse() {
                Ok(p) => p,
                Err(e) => {
                    v.error("spec.provider", e);
                    default_provider
                }
            },
        };
        let target_ref = v.target_ref(input.target_ref.as_ref());
        let autoscaler_ref = input
            .autoscaler_ref
            .as_ref()
            .and_then(|a| v.autoscaler_ref(a));
        let target_name = target_ref.as_ref().map(|t| t.name.clone());
        let service = v.service(input.service.as_ref(), target_name.as_deref());
        let progress_deadline = match input.progress_deadline_seconds {
            None => Duration::from_secs(DEFAULT_PROGRESS_DEADLINE_SECONDS),
            Some(s) if s >= 1 => Duration::from_secs(s.unsigned_abs()),
            Some(s) => {
                v.error(
                    "spec.progressDeadlineSeconds",
                    format!("must be at least 1, got {s}"),
                );
                Duration::from_secs(DEFAULT_PROGRESS_DEADLINE_SECONDS)
            }
        };
        let mut warnings = Vec::new();
        let skip_analysis = input.skip_analysis || input.analysis.is_none();
        let analysis = match &input.analysis {
            Some(a) => v.analysis(a, &input.namespace, provider, &mut warnings),
            None => Some(AnalysisSpec::skipped()),
        };
        match (target_ref, service, analysis, v.errors.is_empty()) {
            (Some(target_ref), Some(service), Some(analysis), true) => Ok(CanarySpec {
                name: input.name.clone(),
                namespace: input.namespace.clone(),
                provider,
                metrics_server: input.metrics_server.clone().filter(|s| !s.is_empty()),
                target_ref,
                autoscaler_ref,
                service,
                analysis,
                progress_deadline,
                skip_analysis,
                revert_on_deletion: input.revert_on_deletion,
                suspend: input.suspend,
                warnings,
            }),
            _ => Err(InvalidSpec {
                name: input.name.clone(),
                namespace: input.namespace.clone(),
                errors: if v.errors.is_empty() {
                    // Unreachable in practice: every `None` above records an error.
                    vec![SpecError {
                        field: "spec".to_owned(),
                        problem: "invalid".to_owned(),
                    }]
                } else {
                    v.errors
                },
            }),
        }
    }

    /// `<c>.<ns>`: the name upstream uses in most event texts.
    pub fn canary_id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// `<t>.<ns>`.
    pub fn target_id(&self) -> String {
        format!("{}.{}", self.target_ref.name, self.namespace)
    }

    /// `<t>-primary`.
    pub fn primary_name(&self) -> String {
        format!("{}-primary", self.target_ref.name)
    }

    /// `<t>-primary.<ns>`.
    pub fn primary_id(&self) -> String {
        format!("{}-primary.{}", self.target_ref.name, self.namespace)
    }

    /// `<autoscaler>-primary`, when an autoscaler is referenced.
    pub fn primary_autoscaler_name(&self) -> Option<String> {
        self.autoscaler_ref
            .as_ref()
            .map(|a| format!("{}-primary", a.name))
    }
}

impl AnalysisSpec {
    /// The analysis of a Canary without `analysis` (implicit skipAnalysis).
    fn skipped() -> Self {
        AnalysisSpec {
            interval: DEFAULT_INTERVAL,
            threshold: 1,
            strategy: Strategy::Canary(WeightSteps::Linear {
                step: 100,
                max: 100,
            }),
            step_weight_promotion: None,
            mirror: false,
            mirror_weight: None,
            primary_ready_threshold: 100,
            canary_ready_threshold: 100,
            matches: Vec::new(),
            session_affinity: None,
            metrics: Vec::new(),
            webhooks: Vec::new(),
            alerts: Vec::new(),
        }
    }
}

struct Validator {
    errors: Vec<SpecError>,
    no_cross_namespace_refs: bool,
}

impl Validator {
    fn error(&mut self, field: impl Into<String>, problem: impl ToString) {
        self.errors.push(SpecError {
            field: field.into(),
            problem: problem.to_string(),
        });
    }

    fn required_name(&mut self, field: &str, value: Option<&String>) -> Option<String> {
        match value {
            Some(n) if !n.trim().is_empty() => Some(n.clone()),
            _ => {
                self.error(field, "is required");
                None
            }
        }
    }

    fn target_ref(&mut self, input: Option<&ObjectRefInput>) -> Option<TargetRef> {
        let Some(t) = input else {
            self.error("spec.targetRef", "is required");
            return None;
        };
        let name = self.required_name("spec.targetRef.name", t.name.as_ref());
        let kind = match t.kind.as_deref() {
            Some("Deployment") => Some(TargetKind::Deployment),
            Some(other) => {
                self.error(
                    "spec.targetRef.kind",
                    format!("unsupported kind {other:?}, flagger-rs supports: Deployment"),
                );
                None
            }
            None => {
                self.error("spec.targetRef.kind", "is required");
                None
            }
        };
        Some(TargetRef {
            api_version: t
                .api_version
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "apps/v1".to_owned()),
            kind: kind?,
            name: name?,
        })
    }

    fn autoscaler_ref(&mut self, a: &AutoscalerRefInput) -> Option<AutoscalerRef> {
        let name = self.required_name("spec.autoscalerRef.name", a.name.as_ref());
        match a.kind.as_deref() {
            Some("HorizontalPodAutoscaler") => {}
            other => {
                self.error(
                    "spec.autoscalerRef.kind",
                    format!(
                        "unsupported kind {:?}, flagger-rs supports: HorizontalPodAutoscaler",
                        other.unwrap_or("")
                    ),
                );
                return None;
            }
        }
        let min = self.replicas(
            "spec.autoscalerRef.primaryScalerReplicas.minReplicas",
            a.primary_min_replicas,
        );
        let max = self.replicas(
            "spec.autoscalerRef.primaryScalerReplicas.maxReplicas",
            a.primary_max_replicas,
        );
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            self.error(
                "spec.autoscalerRef.primaryScalerReplicas",
                format!("minReplicas {min} is greater than maxReplicas {max}"),
            );
        }
        Some(AutoscalerRef {
            api_version: a
                .api_version
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "autoscaling/v2".to_owned()),
            kind: "HorizontalPodAutoscaler".to_owned(),
            name: name?,
            primary_min_replicas: min,
            primary_max_replicas: max,
        })
    }

    fn replicas(&mut self, field: &str, value: Option<i64>) -> Option<u32> {
        let v = value?;
        match u32::try_from(v) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                self.error(field, format!("must be at least 1, got {v}"));
                None
            }
        }
    }

    fn service(
        &mut self,
        input: Option<&ServiceInput>,
        target: Option<&str>,
    ) -> Option<ServiceSpec> {
        let Some(s) = input else {
            self.error("spec.service", "is required");
            return None;
        };
        let port = match s.port {
            Some(p) => match u16::try_from(p) {
                Ok(p) if p >= 1 => Some(p),
                _ => {
                    self.error(
                        "spec.service.port",
                        format!("must be within 1-65535, got {p}"),
                    );
                    None
                }
            },
            None => {
                self.error("spec.service.port", "is required");
                None
            }
        };
        let target_port = match &s.target_port {
            None | Some(serde_json::Value::Null) => port.map(PortRef::Number),
            Some(serde_json::Value::Number(n)) => {
                match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                    Some(p) if p >= 1 => Some(PortRef::Number(p)),
                    _ => {
                        self.error(
                            "spec.service.targetPort",
                            format!("must be within 1-65535, got {n}"),
                        );
                        None
                    }
                }
            }
            Some(serde_json::Value::String(name)) if !name.is_empty() => {
                match name.parse::<u16>() {
                    Ok(p) if p >= 1 => Some(PortRef::Number(p)),
                    _ => Some(PortRef::Name(name.clone())),
                }
            }
            Some(other) => {
                self.error(
                    "spec.service.targetPort",
                    format!("must be a port number or name, got {other}"),
                );
                None
            }
        };
        if let Some(t) = &s.timeout
            && let Err(e) = parse_go_duration(t)
        {
            self.error("spec.service.timeout", e);
        }
        for (i, m) in s.matches.iter().enumerate() {
            passthrough::check_http_match(&format!("spec.service.match[{i}]"), m, &mut self.errors);
        }
        let origins = s.cors_policy.as_ref().and_then(|c| c.get("allowOrigins"));
        for (i, o) in origins
            .and_then(|o| o.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            passthrough::check_string_match(
                &format!("spec.service.corsPolicy.allowOrigins[{i}]"),
                o,
                &mut self.errors,
            );
        }
        let name = s
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| target.map(str::to_owned))?;
        Some(ServiceSpec {
            name,
            port: port?,
            port_name: s
                .port_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "http".to_owned()),
            target_port: target_port?,
            app_protocol: s.app_protocol.clone(),
            port_discovery: s.port_discovery,
            headless: s.headless,
            timeout: s.timeout.clone(),
            gateways: if s.gateways.is_empty() {
                vec!["mesh".to_owned()]
            } else {
                s.gateways.clone()
            },
            hosts: s.hosts.clone(),
            traffic_policy: s.traffic_policy.clone(),
            matches: s.matches.clone(),
            rewrite: s.rewrite.clone(),
            retries: s.retries.clone(),
            headers: s.headers.clone(),
            cors_policy: s.cors_policy.clone(),
            apex: s.apex.clone(),
            primary: s.primary.clone(),
            canary: s.canary.clone(),
        })
    }

    fn percent(&mut self, field: &str, value: Option<i64>, default: u8, min: i64) -> u8 {
        match value {
            None => default,
            Some(v) if (min..=100).contains(&v) => u8::try_from(v).unwrap_or(default),
            Some(v) => {
                self.error(field, format!("must be within {min}-100, got {v}"));
                default
            }
        }
    }

    fn analysis(
        &mut self,
        a: &AnalysisInput,
        namespace: &str,
        provider: MeshProvider,
        warnings: &mut Vec<String>,
    ) -> Option<AnalysisSpec> {
        let interval = match a.interval.as_deref() {
            None | Some("") => DEFAULT_INTERVAL,
            Some(text) => match parse_go_duration(text) {
                Ok(d) => d.max(MIN_INTERVAL),
                Err(e) => {
                    self.error("spec.analysis.interval", e);
                    DEFAULT_INTERVAL
                }
            },
        };
        let threshold = match a.threshold {
            None => 1,
            Some(t) => match u32::try_from(t) {
                Ok(t) if t >= 1 => t,
                _ => {
                    self.error(
                        "spec.analysis.threshold",
                        format!("must be at least 1, got {t}"),
                    );
                    1
                }
            },
        };
        for (i, m) in a.matches.iter().enumerate() {
            passthrough::check_http_match(
                &format!("spec.analysis.match[{i}]"),
                m,
                &mut self.errors,
            );
        }
        if let Some(affinity) = &a.session_affinity
            && let Some(cookie) = affinity.get("cookieName").and_then(|c| c.as_str())
            && affinity.get("primaryCookieName").and_then(|c| c.as_str()) == Some(cookie)
        {
            self.error(
                "spec.analysis.sessionAffinity.primaryCookieName",
                format!("must differ from cookieName, both are {cookie:?}"),
            );
        }
        let strategy = self.strategy(a, provider, warnings);
        let step_weight_promotion = match a.step_weight_promotion {
            None | Some(0) => None,
            Some(s) => match u8::try_from(s) {
                Ok(s) if (1..=100).contains(&s) => Some(s),
                _ => {
                    self.error(
                        "spec.analysis.stepWeightPromotion",
                        format!("must be within 0-100, got {s}"),
                    );
                    None
                }
            },
        };
        let mirror_weight = match a.mirror_weight {
            None | Some(0) => None,
            Some(w) => Some(self.percent("spec.analysis.mirrorWeight", Some(w), 100, 0)),
        };
        let primary_ready_threshold = self.percent(
            "spec.analysis.primaryReadyThreshold",
            a.primary_ready_threshold,
            100,
            0,
        );
        let canary_ready_threshold = self.percent(
            "spec.analysis.canaryReadyThreshold",
            a.canary_ready_threshold,
            100,
            0,
        );
        let metrics = a
            .metrics
            .iter()
            .enumerate()
            .filter_map(|(i, m)| self.metric(i, m, namespace))
            .collect();
        let webhooks = a
            .webhooks
            .iter()
            .enumerate()
            .filter_map(|(i, w)| self.webhook(i, w))
            .collect();
        let alerts = a
            .alerts
            .iter()
            .enumerate()
            .filter_map(|(i, al)| self.alert(i, al, namespace))
            .collect();
        let mirror = a.mirror && provider != MeshProvider::Kubernetes;
        Some(AnalysisSpec {
            interval,
            threshold,
            strategy: strategy?,
            step_weight_promotion,
            mirror,
            mirror_weight,
            primary_ready_threshold,
            canary_ready_threshold,
            matches: if provider == MeshProvider::Kubernetes {
                Vec::new()
            } else {
                a.matches.clone()
            },
            session_affinity: a.session_affinity.clone(),
            metrics,
            webhooks,
            alerts,
        })
    }

    fn strategy(
        &mut self,
        a: &AnalysisInput,
        provider: MeshProvider,
        warnings: &mut Vec<String>,
    ) -> Option<Strategy> {
        let max_weight = match a.max_weight {
            None => None,
            Some(m) => match u8::try_from(m) {
                Ok(m) if (1..=100).contains(&m) => Some(m),
                _ => {
                    self.error(
                        "spec.analysis.maxWeight",
                        format!("must be within 1-100, got {m}"),
                    );
                    return None;
                }
            },
        };
        let iterations = match a.iterations {
            None => None,
            Some(i) => match u32::try_from(i) {
                Ok(i) if i >= 1 => Some(i),
                _ => {
                    self.error(
                        "spec.analysis.iterations",
                        format!("must be at least 1, got {i}"),
                    );
                    return None;
                }
            },
        };
        let step_weight = a.step_weight;
        let step_weights = a.step_weights.as_ref().filter(|s| !s.is_empty());
        let set = [
            iterations.is_some(),
            step_weight.is_some(),
            step_weights.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            self.error(
                "spec.analysis",
                "iterations, stepWeight and stepWeights are mutually exclusive, set exactly one",
            );
            return None;
        }
        if provider == MeshProvider::Kubernetes {
            if !a.matches.is_empty() {
                warnings.push(
                    "A/B testing is not supported when using the kubernetes provider".to_owned(),
                );
            }
            return Some(Strategy::BlueGreen {
                iterations: match iterations {
                    Some(i) => i,
                    None => {
                        warnings.push(
                            "Progressive traffic is not supported when using the kubernetes provider"
                                .to_owned(),
                        );
                        warnings.push(format!(
                            "Setting canaryAnalysis.iterations: {KUBERNETES_PROVIDER_ITERATIONS}"
                        ));
                        KUBERNETES_PROVIDER_ITERATIONS
                    }
                },
            });
        }
        if let Some(iterations) = iterations {
            return Some(if a.matches.is_empty() {
                Strategy::BlueGreen { iterations }
            } else {
                Strategy::AbTesting { iterations }
            });
        }
        if let Some(step) = step_weight {
            let max = max_weight.unwrap_or(100);
            return match u8::try_from(step) {
                Ok(s) if s >= 1 && s <= max => {
                    Some(Strategy::Canary(WeightSteps::Linear { step: s, max }))
                }
                _ => {
                    self.error(
                        "spec.analysis.stepWeight",
                        format!("must be within 1-{max} (maxWeight), got {step}"),
                    );
                    None
                }
            };
        }
        if let Some(steps) = step_weights {
            let mut out: Vec<u8> = Vec::with_capacity(steps.len());
            for (i, &w) in steps.iter().enumerate() {
                match u8::try_from(w) {
                    Ok(w) if (1..=100).contains(&w) && out.last().is_none_or(|&p| w > p) => {
                        out.push(w)
                    }
                    _ => {
                        self.error(
                            format!("spec.analysis.stepWeights[{i}]"),
                            format!("steps must be strictly ascending within 1-100, got {w}"),
                        );
                        return None;
                    }
                }
            }
            return Some(Strategy::Canary(WeightSteps::Explicit(out)));
        }
        self.error(
            "spec.analysis",
            "one of stepWeight, stepWeights or iterations is required",
        );
        None
    }

    fn metric(&mut self, i: usize, m: &MetricInput, namespace: &str) -> Option<MetricCheck> {
        let field = format!("spec.analysis.metrics[{i}]");
        let name = self.required_name(&format!("{field}.name"), m.name.as_ref())?;
        if let Some(interval) = m.interval.as_deref().filter(|s| !s.is_empty())
            && let Err(e) = parse_go_duration(interval)
        {
            self.error(format!("{field}.interval"), e);
            return None;
        }
        let source = if let Some(t) = &m.template_ref {
            let tname =
                self.required_name(&format!("{field}.templateRef.name"), t.name.as_ref())?;
            let tnamespace = t
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| namespace.to_owned());
            if self.no_cross_namespace_refs && tnamespace != namespace {
                self.error(
                    format!("{field}.templateRef.namespace"),
                    format!(
                        "can't access metric template {tname}.{tnamespace}, cross-namespace references are blocked (--no-cross-namespace-refs)"
                    ),
                );
                return None;
            }
            MetricSource::Template {
                name: tname,
                namespace: tnamespace,
            }
        } else if let Some(q) = m.query.as_ref().filter(|q| !q.trim().is_empty()) {
            MetricSource::Query(q.clone())
        } else if let Some(b) = BuiltinMetric::from_name(&name) {
            MetricSource::Builtin(b)
        } else {
            self.error(
                format!("{field}.templateRef"),
                format!(
                    "metric {name:?} is not a builtin metric (request-success-rate, request-duration) and has neither templateRef nor query"
                ),
            );
            return None;
        };
        let window = match (&m.interval, &source) {
            (Some(w), _) if !w.is_empty() => w.clone(),
            (_, MetricSource::Template { .. }) => String::new(),
            _ => "1m".to_owned(),
        };
        if let (Some(min), Some(max)) = (m.threshold_min, m.threshold_max)
            && min > max
        {
            self.error(
                format!("{field}.thresholdRange"),
                format!("min {min} is greater than max {max}"),
            );
            return None;
        }
        let range = if m.threshold_min.is_some() || m.threshold_max.is_some() {
            ThresholdRange {
                min: m.threshold_min,
                max: m.threshold_max,
            }
        } else {
            let legacy = m.threshold.unwrap_or(0.0);
            match source {
                MetricSource::Builtin(BuiltinMetric::RequestSuccessRate) => ThresholdRange {
                    min: Some(legacy),
                    max: None,
                },
                _ => ThresholdRange {
                    min: None,
                    max: Some(legacy),
                },
            }
        };
        Some(MetricCheck {
            name,
            source,
            window,
            range,
            template_variables: m.template_variables.clone(),
        })
    }

    fn webhook(&mut self, i: usize, w: &WebhookInput) -> Option<Webhook> {
        let field = format!("spec.analysis.webhooks[{i}]");
        let name = self.required_name(&format!("{field}.name"), w.name.as_ref());
        let url = self.required_name(&format!("{field}.url"), w.url.as_ref());
        let hook_type = match w.hook_type.as_deref().unwrap_or("").parse::<HookType>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(format!("{field}.type"), e);
                None
            }
        };
        let timeout = match w.timeout.as_deref() {
            // Upstream replaces strings shorter than 2 characters with the default.
            None => Some(DEFAULT_WEBHOOK_TIMEOUT),
            Some(t) if t.trim().len() < 2 => Some(DEFAULT_WEBHOOK_TIMEOUT),
            Some(t) => match parse_go_duration(t) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    self.error(format!("{field}.timeout"), "must be greater than 0");
                    None
                }
                Err(e) => {
                    self.error(format!("{field}.timeout"), e);
                    None
                }
            },
        };
        let retries = match w.retries {
            None => Some(0),
            Some(r) => match u32::try_from(r) {
                Ok(r) => Some(r),
                Err(_) => {
                    self.error(
                        format!("{field}.retries"),
                        format!("must be at least 0, got {r}"),
                    );
                    None
                }
            },
        };
        Some(Webhook {
            name: name?,
            hook_type: hook_type?,
            url: url?,
            timeout: timeout?,
            retries: retries?,
            mute_alert: w.mute_alert,
            disable_tls: w.disable_tls,
            metadata: w.metadata.clone(),
        })
    }

    fn alert(&mut self, i: usize, a: &AlertInput, namespace: &str) -> Option<Alert> {
        let field = format!("spec.analysis.alerts[{i}]");
        let name = self.required_name(&format!("{field}.name"), a.name.as_ref());
        let provider_name = self.required_name(
            &format!("{field}.providerRef.name"),
            a.provider_name.as_ref(),
        );
        let severity = match a.severity.as_deref().unwrap_or("").parse::<Severity>() {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(format!("{field}.severity"), e);
                None
            }
        };
        let provider_namespace = a
            .provider_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| namespace.to_owned());
        if self.no_cross_namespace_refs && provider_namespace != namespace {
            self.error(
                format!("{field}.providerRef.namespace"),
                format!(
                    "can't access alert provider {}.{provider_namespace}, cross-namespace references are blocked (--no-cross-namespace-refs)",
                    provider_name.as_deref().unwrap_or("")
                ),
            );
            return None;
        }
        Some(Alert {
            name: name?,
            severity: severity?,
            provider_name: provider_name?,
            provider_namespace,
        })
    }
}

mod passthrough;

#[cfg(test)]
mod tests;
