//! What the actor gathered for one tick. Everything time-dependent comes in here (`now`).
//!
//! Hook and metric results are gathered **only when a decision asks for them**: `decide` returns
//! [`crate::Outcome::Gather`] naming one group (a hook type, or the metrics) whose slot here is
//! still empty; the actor runs it, stores the result in [`Observations::hooks`] /
//! [`Observations::metrics`] and calls `decide` again with the same spec and status. Ticks that do
//! not analyse (waiting for readiness, idle, suspended) never query a metrics provider or a hook.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::HookType;
use crate::status::Timestamp;
use crate::weights::Weights;

/// The result of reading one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Observed<T> {
    Found(T),
    /// The object does not exist.
    Missing,
    /// It could not be read or interpreted; the text is shown in a Warning event.
    Error(String),
}

/// Is a workload's rollout done? Messages are the inner text (`waiting for rollout to finish: 0 of
/// 1 (readyThreshold 100%) updated replicas are available`); `decide` adds the workload prefix.
/// See [`crate::readiness`] for computing this from a Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Readiness {
    Ready,
    /// Retriable: still rolling out, pods unhealthy, autoscaler scaling.
    NotReady(String),
    /// Will not become ready by itself (Kubernetes' own progress deadline exceeded).
    Failed(String),
}

/// The target (canary) Deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetObservation {
    /// [`crate::revision::revision`] of its pod template and tracked configs.
    pub revision: String,
    /// `configmap/<name>` / `secret/<name>` → checksum of the configs it references.
    pub tracked_configs: BTreeMap<String, String>,
    pub readiness: Readiness,
}

/// The `<t>-primary` Deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrimaryObservation {
    pub readiness: Readiness,
    /// The target revision the primary was last created or promoted from (recorded on the
    /// Deployment by the operator; `None` when it carries none). Lets a tick see that a
    /// promotion was written although the status saying so was not (a crash or a failed status
    /// write in between).
    #[serde(default)]
    pub revision: Option<String>,
}

/// Current routes as read from the mesh object (never remembered between ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes {
    pub weights: Weights,
    /// The route mirrors traffic to the canary.
    pub mirrored: bool,
}

/// Outcome of one webhook call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookResult {
    /// HTTP status ≤ 202.
    Passed,
    /// Anything else; the text (response body or transport error) goes into events.
    Failed(String),
}

/// One webhook of a group, in the order called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookOutcome {
    pub name: String,
    pub result: HookResult,
}

impl HookOutcome {
    pub fn passed(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            result: HookResult::Passed,
        }
    }
    pub fn failed(name: &str, why: &str) -> Self {
        Self {
            name: name.to_owned(),
            result: HookResult::Failed(why.to_owned()),
        }
    }
}

/// Value of one metric check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricValue {
    /// The query returned this number (success rate in percent, duration in milliseconds).
    Value(f64),
    /// Empty vector or NaN: the canary probably receives no traffic. Optional detail
    /// (e.g. `running query failed: no values found`).
    NoData(Option<String>),
    /// The provider could not be reached, the query or template failed. Must not contain
    /// credentials.
    Failed(String),
}

/// Result of one metric of `analysis.metrics`, matched to the spec by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricOutcome {
    pub name: String,
    pub value: MetricValue,
}

/// Everything one tick observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observations {
    pub now: Timestamp,
    pub target: Observed<TargetObservation>,
    pub primary: Observed<PrimaryObservation>,
    /// Routes of the mesh object. Ignored with the `kubernetes` provider.
    pub routes: Observed<Routes>,
    /// Results of the hook groups `decide` asked for this tick, per type, in call order. The
    /// caller walks a group in spec order and stops at the first failure (for `rollback` hooks:
    /// at the first success, see [`HookType::stops_on_success`]).
    pub hooks: BTreeMap<HookType, Vec<HookOutcome>>,
    /// Results of all metrics, when `decide` asked for them this tick.
    pub metrics: Option<Vec<MetricOutcome>>,
    /// Availability of the metric providers the analysis uses (Prometheus `vector(1)`, template
    /// providers), when `decide` asked for it (only while initializing).
    pub metric_providers: Option<ProviderCheck>,
    /// Whether a new run may start, when `decide` asked for it (only when a run would start).
    pub rollout_slot: Option<RolloutSlot>,
}

/// Answer to "may a new run start now?" under `--max-concurrent-canaries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutSlot {
    /// Start the run (no limit, or a slot is free and this canary is first in line).
    Granted,
    /// `in_progress` runs hold the `limit` slots (or others queued earlier): keep waiting.
    Busy { in_progress: u32, limit: u32 },
}

/// Result of checking the metric providers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderCheck {
    Available,
    /// Why not (shown as `Error checking metric providers: <text>`).
    Unavailable(String),
}

impl Observations {
    /// Observations before any hook or metric was gathered.
    pub fn new(
        now: Timestamp,
        target: Observed<TargetObservation>,
        primary: Observed<PrimaryObservation>,
        routes: Observed<Routes>,
    ) -> Self {
        Self {
            now,
            target,
            primary,
            routes,
            hooks: BTreeMap::new(),
            metrics: None,
            metric_providers: None,
            rollout_slot: None,
        }
    }
}
