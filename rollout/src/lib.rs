//! `flagger-rollout`: the pure decision core of flagger-rs.
//!
//! No I/O, no clock, no async. The actors convert the Canary CRD into a validated
//! [`spec::CanarySpec`] ([`CanarySpec::new`]), gather [`Observations`], call [`decide`] and execute
//! the [`Action`]s it returns, in order; `.status` ([`CanaryStatus`]) is the only state carried
//! between ticks.
//!
//! One tick, as an actor runs it (gathering hooks/metrics only when asked):
//!
//! ```
//! use flagger_rollout::*;
//!
//! let input = CanaryInput {
//!     name: "podinfo".into(),
//!     namespace: "test".into(),
//!     target_ref: Some(ObjectRefInput { kind: Some("Deployment".into()), name: Some("podinfo".into()), ..Default::default() }),
//!     service: Some(ServiceInput { port: Some(9898), ..Default::default() }),
//!     analysis: Some(AnalysisInput { step_weight: Some(10), max_weight: Some(50), ..Default::default() }),
//!     ..Default::default()
//! };
//! let spec = CanarySpec::new(&input, MeshProvider::Istio).expect("valid");
//! let status = CanaryStatus::default(); // a brand-new Canary
//! let mut obs = Observations::new(
//!     Timestamp::from_unix_millis(1_700_000_000_000),
//!     Observed::Found(TargetObservation { revision: "abc".into(), tracked_configs: Default::default(), readiness: Readiness::Ready }),
//!     Observed::Found(PrimaryObservation { readiness: Readiness::Ready, revision: None }),
//!     Observed::Missing,
//! );
//! let decision = loop {
//!     match decide(&spec, &status, &obs) {
//!         Outcome::Decided(d) => break d,
//!         Outcome::Gather(Gather::Metrics) => obs.metrics = Some(vec![]),
//!         Outcome::Gather(Gather::MetricProviders) => obs.metric_providers = Some(ProviderCheck::Available),
//!         Outcome::Gather(Gather::RolloutSlot) => obs.rollout_slot = Some(RolloutSlot::Granted),
//!         Outcome::Gather(Gather::Hooks { hook_type, .. }) => { obs.hooks.insert(hook_type, vec![]); }
//!     }
//! };
//! assert_eq!(decision.next_state.phase, Phase::Initialized);
//! assert!(decision.events().contains(&"Initialization done! podinfo.test"));
//! ```
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
pub mod template;
pub mod weights;

#[cfg(test)]
mod testing;

pub use action::{Action, EventType, Scale};
pub use decide::{Decision, Gather, Outcome, decide, decide_invalid, finalize};
pub use observations::{
    HookOutcome, HookResult, MetricOutcome, MetricValue, Observations, Observed,
    PrimaryObservation, ProviderCheck, Readiness, RolloutSlot, Routes, TargetObservation,
};
pub use phase::Phase;
pub use spec::{
    AlertInput, AnalysisInput, AnalysisSpec, AutoscalerRef, AutoscalerRefInput, BuiltinMetric,
    CanaryInput, CanarySpec, HookType, InvalidSpec, MeshProvider, MetricCheck, MetricInput,
    MetricSource, ObjectRefInput, PortRef, ServiceInput, ServiceSpec, Severity, SpecError,
    Strategy, TargetKind, TargetRef, TemplateRefInput, ThresholdRange, ValidationOptions, Webhook,
    WebhookInput,
};
pub use status::{CanaryStatus, Condition, ConditionStatus, Timestamp};
pub use weights::{WeightSteps, Weights};
