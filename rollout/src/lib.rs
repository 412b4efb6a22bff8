//! `flagger-rollout`: the pure decision core of flagger-rs.
//!
//! No I/O, no clock, no async. The actors convert the Canary CRD into a validated
//! [`spec::CanarySpec`], gather observations, call the decision function and execute the actions
//! it returns.
#![forbid(unsafe_code)]

pub mod action;
pub mod duration;
pub mod observations;
pub mod phase;
pub mod readiness;
pub mod revision;
pub mod spec;
pub mod status;
pub mod weights;

pub use spec::{
    AlertInput, AnalysisInput, AnalysisSpec, AutoscalerRef, AutoscalerRefInput, BuiltinMetric,
    CanaryInput, CanarySpec, HookType, InvalidSpec, MeshProvider, MetricCheck, MetricInput,
    MetricSource, ObjectRefInput, PortRef, ServiceInput, ServiceSpec, Severity, SpecError,
    Strategy, TargetKind, TargetRef, TemplateRefInput, ThresholdRange, Webhook, WebhookInput,
};
pub use weights::{WeightSteps, Weights};
