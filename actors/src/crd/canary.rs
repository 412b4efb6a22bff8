//! The `Canary` custom resource (`flagger.app/v1beta1`, legacy `v1alpha3`).
//!
//! Field names, shapes and printer columns follow upstream Flagger (flagger-behavior.md §1). Every
//! field is optional in Rust so a manifest that upstream accepts never fails to deserialise; the
//! controller validates (see [`super::convert`]). Cached for every Canary in the cluster, so the types
//! hold `Option`s and no defaults.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FreeFormObject, with_conversion_none};

/// Desired state of a canary release.
// The large optional blocks are boxed: every Canary is cached, and an unused block (most never set
// `canaryAnalysis`) then costs a pointer instead of its full size.
// clippy reads the repeated `type_ = "string"` of kube's printcolumns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "Canary",
    plural = "canaries",
    namespaced,
    status = "CanaryStatus",
    category = "all",
    annotation("helm.sh/resource-policy", "keep"),
    doc = "Canary is the Schema for the Canary API: a progressive delivery of one workload.",
    derive = "Default",
    derive = "PartialEq",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Weight", type_ = "string", json_path = ".status.canaryWeight"),
    printcolumn(
        name = "Suspended",
        type_ = "boolean",
        json_path = ".spec.suspend",
        priority = 1
    ),
    printcolumn(
        name = "FailedChecks",
        type_ = "string",
        json_path = ".status.failedChecks",
        priority = 1
    ),
    printcolumn(
        name = "Interval",
        type_ = "string",
        json_path = ".spec.analysis.interval",
        priority = 1
    ),
    printcolumn(
        name = "Mirror",
        type_ = "boolean",
        json_path = ".spec.analysis.mirror",
        priority = 1
    ),
    printcolumn(
        name = "StepWeight",
        type_ = "string",
        json_path = ".spec.analysis.stepWeight",
        priority = 1
    ),
    printcolumn(
        name = "StepWeights",
        type_ = "string",
        json_path = ".spec.analysis.stepWeights",
        priority = 1
    ),
    printcolumn(
        name = "MaxWeight",
        type_ = "string",
        json_path = ".spec.analysis.maxWeight",
        priority = 1
    ),
    printcolumn(
        name = "LastTransitionTime",
        type_ = "string",
        json_path = ".status.lastTransitionTime"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// Routing provider for this canary (defaults to the global `--mesh-provider`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Prometheus URL for the builtin metrics of this canary (defaults to `--metrics-server`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_server: Option<String>,
    /// The workload to release (Deployment).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub target_ref: Option<LocalObjectReference>,
    /// The autoscaler of the workload; a `-primary` copy is made for the primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaler_ref: Option<AutoscalerRef>,
    /// NGINX provider: the Ingress to clone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_ref: Option<LocalObjectReference>,
    /// APISIX provider: the route to clone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_ref: Option<LocalObjectReference>,
    /// Gloo provider: the upstream to copy settings from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ref: Option<CrossNamespaceObjectReference>,
    /// How the Services and mesh objects are generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub service: Option<Box<CanaryService>>,
    /// The analysis run on every new revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Box<CanaryAnalysis>>,
    /// Deprecated v1alpha3 name of `analysis`, read when `analysis` is absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_analysis: Option<Box<CanaryAnalysis>>,
    /// Seconds the workload may take to make progress before the release fails (default 600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
    /// Promote without running the analysis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_analysis: Option<bool>,
    /// Restore the workload and routing when the Canary is deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revert_on_deletion: Option<bool>,
    /// Pause the canary: ticks do nothing until this is false again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// Reference to an object in the Canary's namespace. The shape of v1alpha3's
/// `CrossVersionObjectReference` and v1beta1's `LocalObjectReference` alike.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
}

/// Reference to an object that may live in another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceObjectReference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Reference to the workload's autoscaler (HorizontalPodAutoscaler or KEDA ScaledObject).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    /// KEDA only: trigger id -> query for the primary's ScaledObject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_scaler_queries: Option<BTreeMap<String, String>>,
    /// Replica bounds for the primary's autoscaler.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_scaler_replicas: Option<ScalerReplicas>,
}

/// Replica bounds of a generated primary autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalerReplicas {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
}

/// `spec.service`: the generated Services (`<svc>`, `<svc>-primary`, `<svc>-canary`) and mesh routes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryService {
    /// Apex Service name (defaults to the target's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Service port.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub port: Option<i32>,
    /// Name of the Service port (default `http`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// Container port number or name (defaults to `port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// Copied to the Service port's `appProtocol`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Copied to the Services' `trafficDistribution`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
    /// Also expose every other container port of the workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_discovery: Option<bool>,
    /// Generate headless Services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headless: Option<bool>,
    /// Istio HTTP route timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Gateway API backend request timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_timeout: Option<String>,
    /// Istio gateways of the VirtualService (default `[mesh]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateways: Option<Vec<String>>,
    /// Gateway API parent references.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<FreeFormObject>>")]
    pub gateway_refs: Option<Vec<serde_json::Value>>,
    /// Host names of the VirtualService; the apex Service name is always added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Istio: generate a delegate VirtualService.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation: Option<bool>,
    /// Istio TrafficPolicy copied as-is into both DestinationRules.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<FreeFormObject>")]
    pub traffic_policy: Option<serde_json::Value>,
    /// Istio HTTPMatchRequests of the generated route.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<FreeFormObject>>")]
    pub match_: Option<Vec<serde_json::Value>>,
    /// Istio URI/authority rewrite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Istio HTTP retry policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Istio header manipulation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    /// Gateway API extra mirror filters.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<FreeFormObject>>")]
    pub mirror: Option<Vec<serde_json::Value>>,
    /// Istio CORS policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// App Mesh mesh name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh_name: Option<String>,
    /// App Mesh virtual node backends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<String>>,
    /// Extra metadata for the apex Service (and the mesh objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apex: Option<CustomMetadata>,
    /// Extra metadata for the `-primary` Service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<CustomMetadata>,
    /// Extra metadata for the `-canary` Service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CustomMetadata>,
    /// Label and annotation keys Flagger leaves untouched on the Services it owns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmanaged_metadata: Option<UnmanagedMetadata>,
}

/// Istio HTTPRewrite (and Gateway API rewrite `type`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRewrite {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// Istio HTTPRetry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
}

/// Istio request/response header operations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Headers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Headers to set, add or remove.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct HeaderOperations {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove: Option<Vec<String>>,
}

/// Istio CorsPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_origin: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<FreeFormObject>>")]
    pub allow_origins: Option<Vec<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
}

/// Extra labels and annotations of a generated object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CustomMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Keys of labels and annotations that Flagger must not manage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct UnmanagedMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<String>>,
}

/// `spec.analysis` (and legacy `spec.canaryAnalysis`): how a new revision is checked and promoted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAnalysis {
    /// Tick period, e.g. `1m` or `30s` (default 60s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Number of iterations (Blue/Green, or A/B testing with `match`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<i32>,
    /// Failed checks tolerated before rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i32>,
    /// Maximum canary weight (percent) before promotion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<i32>,
    /// Canary weight increment per step (percent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<i32>,
    /// Explicit ascending weight steps, used when `stepWeight` is unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_weights: Option<Vec<i32>>,
    /// Weight step used to move traffic back to the primary during promotion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_weight_promotion: Option<i32>,
    /// Mirror traffic to the canary before shifting weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<bool>,
    /// Percentage of traffic mirrored (0 = all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_weight: Option<i32>,
    /// Percent of primary replicas that must be available (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_ready_threshold: Option<i32>,
    /// Percent of canary replicas that must be available (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_ready_threshold: Option<i32>,
    /// A/B testing match conditions (Istio HTTPMatchRequests).
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<FreeFormObject>>")]
    pub match_: Option<Vec<serde_json::Value>>,
    /// Cookie-based session affinity during the analysis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// Metric checks run on every tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<CanaryMetric>>,
    /// Webhooks called during the release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<CanaryWebhook>>,
    /// Alert providers notified about this canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<CanaryAlert>>,
}

/// Session affinity cookies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_cookie_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i32>,
}

/// One metric check of the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMetric {
    /// `request-success-rate`, `request-duration`, or any name with `templateRef` or `query`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    /// Window of the query, e.g. `1m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Deprecated single bound: minimum for `request-success-rate` (percent), maximum otherwise
    /// (milliseconds for `request-duration`). Used only without `thresholdRange`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Inclusive range the value must fall in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    /// Deprecated inline PromQL query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The MetricTemplate to run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<CrossNamespaceRef>,
    /// Values exposed to the template as `{{ variables.<key> }}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_variables: Option<BTreeMap<String, String>>,
}

/// Inclusive bounds of a metric value.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, JsonSchema)]
pub struct ThresholdRange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// Reference by name, optionally in another namespace (defaults to the Canary's).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CrossNamespaceRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One webhook of the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryWebhook {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    /// When the hook is called (empty = `rollout`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [
        "", "confirm-rollout", "pre-rollout", "rollout", "confirm-promotion",
        "post-rollout", "event", "rollback", "confirm-traffic-increase"
    ]))]
    pub type_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub url: Option<String>,
    /// HTTP timeout, e.g. `10s` (default 10s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retries after a failed call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<i32>,
    /// Do not alert while a gate is waiting for approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mute_alert: Option<bool>,
    /// Skip TLS verification.
    #[serde(rename = "disableTLS", skip_serializing_if = "Option::is_none")]
    pub disable_tls: Option<bool>,
    /// Sent as the payload's `metadata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// One alert of the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAlert {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    /// Lowest severity delivered: `info`, `warn` or `error` (empty = `info`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "info", "warn", "error"]))]
    pub severity: Option<String>,
    /// The AlertProvider to send to.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub provider_ref: Option<CrossNamespaceRef>,
}

// Read leniently (see `LenientStatus`): a status field that does not fit its type (a counter
// beyond `i32`, an unknown phase, a malformed condition) is dropped instead of failing the whole
// Canary, so a status someone else wrote can never hide a Canary from the operator.
/// Observed state of a canary release; the durable truth the operator resumes from.
#[derive(Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// Position in the release state machine.
    // `default` keeps the schema from requiring it (schemars cannot see the Option through
    // `schema_with`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "phase_schema")]
    pub phase: Option<CanaryPhase>,
    /// Canary weight last written by the operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,
    /// Failed checks in the current analysis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_checks: Option<i32>,
    /// Completed iterations in the current analysis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<i32>,
    /// Checksums of tracked ConfigMaps and Secrets (`configmap/<name>`, `secret/<name>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracked_configs: Option<BTreeMap<String, String>>,
    /// Revision (hash of template and tracked configs) of the target at the last sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    /// Revision currently promoted to the primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    /// Time of the last status write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Readiness waits in progress and their deadlines (`since + progressDeadlineSeconds`),
    /// persisted so a restarted operator keeps the same deadline. Not in upstream Flagger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_waits: Option<ProgressWaits>,
    /// Session affinity cookie of the canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_affinity_cookie: Option<String>,
    /// Session affinity cookie of the primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_session_affinity_cookie: Option<String>,
    /// Canary cookie of the previous analysis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_session_affinity_cookie: Option<String>,
    /// Conditions; `Promoted` as upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<CanaryCondition>>,
}

/// Open readiness waits, one per workload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ProgressWaits {
    /// Waiting for the `-primary` Deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<ProgressWait>,
    /// Waiting for the target (canary) Deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<ProgressWait>,
}

/// One readiness wait.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ProgressWait {
    /// When the wait started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// When the release fails if the workload is still not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Time>,
}

/// Phase of a canary release (`status.phase`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum CanaryPhase {
    Initializing,
    Initialized,
    Waiting,
    Progressing,
    WaitingPromotion,
    Promoting,
    Finalising,
    Succeeded,
    Failed,
    Terminating,
    Terminated,
}

/// Upstream's enum, including `""` (a Canary nobody has handled yet).
fn phase_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": [
            "", "Initializing", "Initialized", "Waiting", "Progressing", "WaitingPromotion",
            "Promoting", "Finalising", "Succeeded", "Failed", "Terminating", "Terminated"
        ],
    })
}

/// The JSON of a `.status`, decoded field by field into [`CanaryStatus`] (anything but an object
/// reads as an empty status).
#[derive(Deserialize)]
#[serde(transparent)]
struct LenientStatus(serde_json::Value);

impl<'de> Deserialize<'de> for CanaryStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        LenientStatus::deserialize(d).map(Self::from)
    }
}

impl From<LenientStatus> for CanaryStatus {
    fn from(LenientStatus(value): LenientStatus) -> Self {
        let serde_json::Value::Object(map) = value else {
            return CanaryStatus::default();
        };
        fn field<T: serde::de::DeserializeOwned>(
            map: &serde_json::Map<String, serde_json::Value>,
            key: &str,
        ) -> Option<T> {
            map.get(key).and_then(|v| T::deserialize(v).ok())
        }
        // Unknown or empty phases (`""` is upstream's "new") read as no phase.
        let phase = field::<String>(&map, "phase")
            .and_then(|s| serde_json::from_value::<CanaryPhase>(serde_json::Value::String(s)).ok());
        let conditions = map
            .get("conditions")
            .and_then(|v| v.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|c| CanaryCondition::deserialize(c).ok())
                    .collect()
            });
        CanaryStatus {
            phase,
            canary_weight: field(&map, "canaryWeight"),
            failed_checks: field(&map, "failedChecks"),
            iterations: field(&map, "iterations"),
            tracked_configs: field(&map, "trackedConfigs"),
            last_applied_spec: field(&map, "lastAppliedSpec"),
            last_promoted_spec: field(&map, "lastPromotedSpec"),
            last_transition_time: field(&map, "lastTransitionTime"),
            progress_waits: field(&map, "progressWaits"),
            session_affinity_cookie: field(&map, "sessionAffinityCookie"),
            primary_session_affinity_cookie: field(&map, "primarySessionAffinityCookie"),
            previous_session_affinity_cookie: field(&map, "previousSessionAffinityCookie"),
            conditions,
        }
    }
}

/// A status condition of any Flagger resource (a Canary gets exactly one, type `Promoted`, from
/// upstream). Every field optional-tolerant, unlike `meta/v1 Condition`, so odd statuses never fail
/// deserialisation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryCondition {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub type_: Option<String>,
    /// `True`, `False` or `Unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub status: Option<String>,
    /// Last time the condition was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// Last time `status` changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The phase name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Printer columns of the legacy `v1alpha3` version, which read `spec.canaryAnalysis`.
fn legacy_columns(
    columns: &[CustomResourceColumnDefinition],
) -> Vec<CustomResourceColumnDefinition> {
    columns
        .iter()
        .cloned()
        .map(|mut c| {
            c.json_path = c
                .json_path
                .replace(".spec.analysis.", ".spec.canaryAnalysis.");
            c
        })
        .collect()
}

/// The Canary CRD: `v1beta1` (served, storage) and `v1alpha3` (served) with one schema, so manifests
/// written for Flagger 0.x (`apiVersion: flagger.app/v1alpha3`, `canaryAnalysis`) apply unchanged.
pub(super) fn canary_crd() -> CustomResourceDefinition {
    let mut crd = with_conversion_none(Canary::crd());
    let legacy = crd.spec.versions.first().cloned().map(|mut v| {
        v.name = "v1alpha3".to_owned();
        v.storage = false;
        v.served = true;
        v.additional_printer_columns = v.additional_printer_columns.as_deref().map(legacy_columns);
        v
    });
    crd.spec.versions.extend(legacy);
    crd
}
