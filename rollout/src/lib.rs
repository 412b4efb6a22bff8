//! `flagger-rollout`: the pure decision core of flagger-rs.
//!
//! No I/O, no clock, no async. The actors convert the Canary CRD into a validated
//! [`spec::CanarySpec`], gather observations, call the decision function and execute the actions
//! it returns.
#![forbid(unsafe_code)]

pub mod action;
pub mod decide;
pub mod duration;
pub mod observations;
pub mod phase;
pub mod readiness;
pub mod revision;
pub mod spec;
pub mod status;
pub mod weights;

#[cfg(test)]
mod testing;

pub use action::{Action, EventType, Scale};
pub use decide::{Decision, Gather, Outcome, decide, decide_invalid, finalize};
pub use observations::{
    HookOutcome, HookResult, MetricOutcome, MetricValue, Observations, Observed,
    PrimaryObservation, ProviderCheck, Readiness, Routes, TargetObservation,
};
pub use phase::Phase;
pub use spec::{
    AlertInput, AnalysisInput, AnalysisSpec, AutoscalerRef, AutoscalerRefInput, BuiltinMetric,
    CanaryInput, CanarySpec, HookType, InvalidSpec, MeshProvider, MetricCheck, MetricInput,
    MetricSource, ObjectRefInput, PortRef, ServiceInput, ServiceSpec, Severity, SpecError,
    Strategy, TargetKind, TargetRef, TemplateRefInput, ThresholdRange, Webhook, WebhookInput,
};
pub use status::{CanaryStatus, Condition, ConditionStatus, Timestamp};
pub use weights::{WeightSteps, Weights};
