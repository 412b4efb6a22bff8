//! The rollout decision: `decide(&spec, &status, &observations)`.
//!
//! One call moves a canary's state machine by at most one step, following upstream's tick order
//! (flagger-behavior §2.2). It is a pure function: same inputs, same outcome. Each stage of the
//! seed's "gated canary promotion stages" is one named rule below (`rule_*` functions), each
//! tested on its own in `decide/tests.rs`.
//!
//! Two-phase gathering: when a rule needs webhook results, metric values or the metric providers'
//! availability that are not yet in the observations, `decide` returns [`Outcome::Gather`] naming
//! exactly one missing group. The caller gathers it, adds it to the observations and calls
//! `decide` again. `decide` only ever asks for a group whose slot is empty, so the loop ends after
//! at most one round per hook type plus two (metrics, providers). Ticks that do not analyse never
//! ask.
//!
//! Deviations from upstream, on purpose:
//! - the canary weight never exceeds `maxWeight` (upstream can overshoot on the last step);
//! - `confirm-traffic-increase` hooks run only before an actual increase, not on the promoting tick;
//! - a revision is template + tracked configs in one hash, so reverting both to what the primary
//!   runs is "no change";
//! - readiness waits have their own persisted deadline (`progressDeadlineSeconds` from the first
//!   not-ready observation), so a canary never waits forever for a rollout;
//! - a progress-deadline rollback says so (`Rolling back ... progress deadline exceeded ...`);
//! - the target's readiness is not checked once the primary has the new template (Promoting,
//!   Finalising): rolling back then would be meaningless;
//! - a primary that stays unready outside promotion fails the canary **without** moving traffic
//!   or scaling the canary down (never route everything to a broken primary), and it retries by
//!   itself when the primary recovers;
//! - `failedChecks` keeps its value in `Failed` (as the seed shows), instead of resetting to 0;
//! - with `stepWeightPromotion` and a canary weight already 0, promotion proceeds to Finalising
//!   (upstream stays in Promoting).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::action::{Action, EventType, Scale};
use crate::duration::format_go_duration;
use crate::observations::{
    HookOutcome, HookResult, MetricOutcome, MetricValue, Observations, Observed, ProviderCheck,
    Readiness, RolloutSlot, Routes, TargetObservation,
};
use crate::phase::Phase;
use crate::spec::{
    BuiltinMetric, CanarySpec, DEFAULT_INTERVAL, HookType, InvalidSpec, MeshProvider, MetricCheck,
    MetricSource, Severity, Strategy,
};
use crate::status::{
    CanaryStatus, ConditionStatus, PROMOTED_CONDITION, VALID_CONDITION, Wait, Workload,
    promoted_condition, set_condition,
};
use crate::weights::{WeightSteps, Weights};

/// What one tick decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The status after this tick (equal to the input when nothing changed).
    pub next_state: CanaryStatus,
    /// To execute in order (see [`crate::action`] for the contract).
    pub actions: Vec<Action>,
    /// When to tick again unless something changes before: the analysis interval.
    pub requeue_after: Duration,
}

impl Decision {
    /// The messages of the events, in order (convenient for logs and tests).
    pub fn events(&self) -> Vec<&str> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Event { message, .. } => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Something `decide` needs before it can decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gather {
    /// Call the webhooks of `hook_type` in spec order (stopping as
    /// [`HookType::stops_on_success`] says) with payload `phase` and `checksum`; put the results in
    /// `observations.hooks[hook_type]`.
    Hooks {
        hook_type: HookType,
        phase: Phase,
        checksum: String,
    },
    /// Run every metric of `analysis.metrics`; put the results in `observations.metrics`.
    Metrics,
    /// Check that the metric providers answer; put the result in `observations.metric_providers`.
    MetricProviders,
    /// A new run is about to start: ask for one of the `--max-concurrent-canaries` slots; put the
    /// answer in `observations.rollout_slot` (always [`RolloutSlot::Granted`] without a limit).
    RolloutSlot,
}

/// Result of [`decide`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Decided(Decision),
    Gather(Gather),
}

/// Decides one tick of a valid canary. See the module docs.
pub fn decide(spec: &CanarySpec, status: &CanaryStatus, obs: &Observations) -> Outcome {
    let mut tick = Tick::new(spec, status, obs);
    match rule_tick(&mut tick) {
        Ok(()) => Outcome::Decided(tick.finish()),
        Err(gather) => Outcome::Gather(gather),
    }
}

/// Decides a tick for a Canary whose spec failed validation: a Warning event naming the fields,
/// a `Valid=False` condition; no object is created or changed.
pub fn decide_invalid(
    invalid: &InvalidSpec,
    status: &CanaryStatus,
    obs: &Observations,
) -> Decision {
    let mut next = status.clone();
    let message = invalid.to_string();
    set_condition(
        &mut next.conditions,
        VALID_CONDITION,
        ConditionStatus::False,
        "InvalidSpec",
        &message,
        obs.now,
    );
    let mut actions = vec![Action::Event {
        event_type: EventType::Warning,
        message,
    }];
    if next != *status {
        next.last_transition_time = Some(obs.now);
        actions.push(Action::WriteStatus(Box::new(next.clone())));
    }
    Decision {
        next_state: next,
        actions,
        requeue_after: DEFAULT_INTERVAL,
    }
}

/// Decides one step of deleting a Canary that has `revertOnDeletion`: `Terminating`, give the
/// target its replicas back, wait for it to be ready, point routes back at it, drop the finalizer.
pub fn finalize(spec: &CanarySpec, status: &CanaryStatus, obs: &Observations) -> Decision {
    let mut tick = Tick::new(spec, status, obs);
    let cid = spec.canary_id();
    if status.phase != Phase::Terminating {
        tick.normal(format!("Terminating canary {cid}"));
        tick.next.phase = Phase::Terminating;
        tick.act(Action::RevertTarget);
    } else {
        match &obs.target {
            Observed::Found(target) => match &target.readiness {
                Readiness::Ready => {
                    tick.act(Action::RevertRoutes);
                    tick.act(Action::RemoveFinalizer);
                    tick.normal(format!("Terminated canary {cid}"));
                }
                Readiness::NotReady(m) | Readiness::Failed(m) => {
                    tick.warning(format!(
                        "canary deployment {} not ready: {m}",
                        spec.target_id()
                    ));
                    tick.act(Action::RevertTarget);
                }
            },
            // Nothing to give traffic back to; let the deletion proceed.
            Observed::Missing => {
                tick.act(Action::RemoveFinalizer);
                tick.normal(format!("Terminated canary {cid}"));
            }
            Observed::Error(e) => tick.warning(e.clone()),
        }
    }
    let mut decision = tick.finish();
    decision.requeue_after = Duration::from_secs(3).min(spec.analysis.interval);
    decision
}

// ------------------------------------------------------------------------------------------------
// The tick, rule by rule, in upstream's order.
// ------------------------------------------------------------------------------------------------

type Step = Result<(), Gather>;

fn rule_tick(t: &mut Tick) -> Step {
    if t.spec.suspend {
        return rule_suspended(t);
    }
    let target = match &t.obs.target {
        Observed::Found(target) => target,
        Observed::Missing => {
            t.warning(format!(
                "deployments.apps \"{}\" not found",
                t.spec.target_ref.name
            ));
            return Ok(());
        }
        Observed::Error(e) => {
            t.warning(e.clone());
            return Ok(());
        }
    };
    t.act(Action::EnsurePrimary);
    if !t.prev.is_initialized() {
        return rule_initialize(t, target);
    }
    t.act(Action::ReconcileRoutes);

    let phase = t.prev.phase;
    let new_revision =
        target.revision != t.prev.last_applied_spec && target.revision != t.prev.last_promoted_spec;
    if !phase.is_active() && !new_revision {
        rule_idle(t, target);
        return Ok(());
    }

    let phase = if promotion_already_written(t, target) {
        t.next.phase = Phase::Promoting;
        Phase::Promoting
    } else {
        phase
    };

    if !t.spec.skip_analysis {
        match t.readiness(Workload::Primary, &primary_readiness(t.obs, t.spec)) {
            Verdict::Ready => {}
            Verdict::Halt(message) => {
                t.warning(message);
                return Ok(());
            }
            Verdict::Expired { full, inner } => {
                t.warning(full);
                if matches!(phase, Phase::Promoting | Phase::Finalising) {
                    rule_failed_promotion(t, &inner);
                } else {
                    rule_primary_failed(t, &inner);
                }
                return Ok(());
            }
        }
    }

    let Some(routes) = t.routes() else {
        return Ok(());
    };

    if !matches!(
        phase,
        Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
    ) {
        return rule_start_run(t, target);
    }
    if phase.is_analysing() && target.revision != t.prev.last_applied_spec {
        rule_restart(t, target);
        return Ok(());
    }

    if !matches!(phase, Phase::Promoting | Phase::Finalising) {
        match t.readiness(Workload::Canary, &target.readiness) {
            Verdict::Ready => {}
            Verdict::Halt(message) => {
                t.warning(message);
                return Ok(());
            }
            Verdict::Expired { full, .. } => {
                t.warning(full.clone());
                rule_rollback(t, RollbackCause::ProgressDeadline(full));
                return Ok(());
            }
        }
    }

    if t.spec.skip_analysis {
        rule_skip_analysis_promotion(t);
        return Ok(());
    }
    if phase.is_analysing() && rule_rollback_hooks(t)? {
        return Ok(());
    }
    match phase {
        Phase::Promoting => {
            rule_promotion_traffic(t, routes);
            return Ok(());
        }
        Phase::Finalising => {
            rule_finalise(t);
            return Ok(());
        }
        _ => {}
    }
    if t.prev.failed_checks >= t.spec.analysis.threshold {
        rule_rollback(t, RollbackCause::FailedChecks(t.prev.failed_checks));
        return Ok(());
    }
    if !rule_analysis(t, routes)? {
        return Ok(());
    }
    match &t.spec.analysis.strategy {
        Strategy::Canary(steps) => rule_advance_weight(t, steps, routes),
        Strategy::BlueGreen { iterations } => rule_blue_green(t, *iterations, routes),
        Strategy::AbTesting { iterations } => rule_ab_testing(t, *iterations),
    }
}

/// The status says the analysis runs, but the primary already carries the revision under
/// analysis: the promotion was written and the status saying `Promoting` was not (the operator
/// died in between, or the status write failed). The run goes on as Promoting, so a primary that
/// never becomes ready fails the promotion (traffic to the canary) instead of the analysis.
fn promotion_already_written(t: &Tick, target: &TargetObservation) -> bool {
    let Observed::Found(primary) = &t.obs.primary else {
        return false;
    };
    t.prev.phase.is_analysing()
        && !t.prev.last_applied_spec.is_empty()
        && target.revision == t.prev.last_applied_spec
        && target.revision != t.prev.last_promoted_spec
        && primary.revision.as_deref() == Some(target.revision.as_str())
}

/// `spec.suspend`: nothing but an event, every tick.
fn rule_suspended(t: &mut Tick) -> Step {
    t.normal("skipping canary run as object is suspended".to_owned());
    Ok(())
}

/// Initialization: primary created and ready, routes in place, target scaled to 0.
fn rule_initialize(t: &mut Tick, target: &TargetObservation) -> Step {
    if t.prev.phase != Phase::Failed {
        t.next.phase = Phase::Initializing;
    }
    if !t.spec.skip_analysis {
        rule_check_metric_providers(t)?;
        match t.readiness(Workload::Primary, &primary_readiness(t.obs, t.spec)) {
            Verdict::Ready => {}
            Verdict::Halt(message) => {
                t.warning(message);
                return Ok(());
            }
            Verdict::Expired { full, inner } => {
                t.warning(full);
                rule_primary_failed(t, &inner);
                return Ok(());
            }
        }
    }
    t.act(Action::ReconcileRoutes);
    t.act(Action::ScaleCanary(Scale::ToZero));
    t.next.phase = Phase::Initialized;
    t.next.last_applied_spec = target.revision.clone();
    t.next.last_promoted_spec = target.revision.clone();
    t.next.tracked_configs = target.tracked_configs.clone();
    t.reset_counters();
    t.next.progress_waits = Default::default();
    let cid = t.spec.canary_id();
    t.normal(format!("Initialization done! {cid}"));
    let kind = t.spec.target_ref.kind;
    t.notify_with_fields(
        Severity::Info,
        format!("New {kind} detected, initialization completed."),
    );
    Ok(())
}

/// While initializing: are the metric providers reachable? Never blocks initialization.
fn rule_check_metric_providers(t: &mut Tick) -> Step {
    if t.spec.analysis.metrics.is_empty() {
        return Ok(());
    }
    match &t.obs.metric_providers {
        None => Err(Gather::MetricProviders),
        Some(ProviderCheck::Available) => {
            t.normal("all the metrics providers are available!".to_owned());
            Ok(())
        }
        Some(ProviderCheck::Unavailable(e)) => {
            t.warning(format!("Error checking metric providers: {e}"));
            Ok(())
        }
    }
}

/// Initialized/Succeeded/Failed with no new revision: nothing to do. When the target went back to
/// the promoted revision, remember it, so re-applying the failed revision later starts a new run.
fn rule_idle(t: &mut Tick, target: &TargetObservation) {
    if target.revision == t.prev.last_promoted_spec && target.revision != t.prev.last_applied_spec {
        t.next.last_applied_spec = target.revision.clone();
        t.next.tracked_configs = target.tracked_configs.clone();
    }
}

/// New revision (after the `confirm-rollout` gate): scale the target up and start a run.
fn rule_start_run(t: &mut Tick, target: &TargetObservation) -> Step {
    let phase = t.prev.phase;
    if let Some(refused) = t.gate(HookType::ConfirmRollout, phase, "Confirm-rollout")? {
        if phase != Phase::Waiting {
            t.next.phase = Phase::Waiting;
            let cid = t.spec.canary_id();
            t.warning(format!(
                "Halt {cid} advancement waiting for approval {refused}"
            ));
            t.notify_unless_muted(&refused, Severity::Warn, "Canary is waiting for approval.");
        }
        return Ok(());
    }
    match t.obs.rollout_slot {
        None => return Err(Gather::RolloutSlot),
        Some(RolloutSlot::Granted) => {}
        Some(RolloutSlot::Busy { in_progress, limit }) => {
            rule_wait_for_slot(t, in_progress, limit);
            return Ok(());
        }
    }
    let tid = t.spec.target_id();
    t.normal(format!("New revision detected! Scaling up {tid}"));
    t.notify_with_fields(
        Severity::Info,
        "New revision detected, progressing canary analysis.".to_owned(),
    );
    t.act(Action::ScaleCanary(Scale::Up));
    t.begin_run(target);
    Ok(())
}

/// `--max-concurrent-canaries` runs are in progress: stay in `Waiting` (target not scaled up)
/// with the reason in the `Promoted` condition; one event when the wait begins.
fn rule_wait_for_slot(t: &mut Tick, in_progress: u32, limit: u32) {
    let message = waiting_for_slot_message(in_progress, limit);
    let already_waiting = t.prev.phase == Phase::Waiting
        && t.prev
            .condition(PROMOTED_CONDITION)
            .is_some_and(|c| c.message.starts_with(WAITING_FOR_SLOT));
    if !already_waiting {
        let cid = t.spec.canary_id();
        t.normal(format!("Halt {cid} advancement {message}"));
    }
    t.next.phase = Phase::Waiting;
    t.promoted_message = Some(message);
}

/// Start of the `Promoted` condition's message while a canary waits for a rollout slot.
pub const WAITING_FOR_SLOT: &str = "waiting for a rollout slot";

/// `waiting for a rollout slot (N of M in progress)`.
pub fn waiting_for_slot_message(in_progress: u32, limit: u32) -> String {
    format!("{WAITING_FOR_SLOT} ({in_progress} of {limit} in progress)")
}

/// A change during the analysis restarts it: routes back to 100/0, counters reset.
fn rule_restart(t: &mut Tick, target: &TargetObservation) {
    let tid = t.spec.target_id();
    t.normal(format!(
        "New revision detected! Restarting analysis for {tid}"
    ));
    t.set_weights(Weights::ALL_PRIMARY, false);
    t.begin_run(target);
}

/// `skipAnalysis`: promote as soon as the target is ready.
fn rule_skip_analysis_promotion(t: &mut Tick) {
    let (tid, pid) = (t.spec.target_id(), t.spec.primary_id());
    t.set_weights(Weights::ALL_PRIMARY, false);
    t.normal(format!("Copying {tid} template spec to {pid}"));
    t.act(Action::PromoteToPrimary);
    t.act(Action::ScaleCanary(Scale::ToZero));
    t.succeed();
    t.normal(format!(
        "Promotion completed! Canary analysis was skipped for {tid}"
    ));
    t.notify(
        Severity::Info,
        "Canary analysis was skipped, promotion finished.".to_owned(),
    );
}

/// `rollback` hooks: the first one that answers 2xx rolls the canary back. Returns true when it did.
fn rule_rollback_hooks(t: &mut Tick) -> Result<bool, Gather> {
    if !t.spec.analysis.has_hooks(HookType::Rollback) {
        return Ok(false);
    }
    let outcomes = t.hooks(HookType::Rollback, t.prev.phase)?;
    for o in outcomes {
        match &o.result {
            HookResult::Passed => {
                let cid = t.spec.canary_id();
                t.warning(format!("Rollback check {} passed", o.name));
                t.warning(format!("Rolling back {cid} manual webhook invoked"));
                t.notify(
                    Severity::Warn,
                    "Rolling back manual webhook invoked".to_owned(),
                );
                rule_rollback(t, RollbackCause::Manual);
                return Ok(true);
            }
            HookResult::Failed(_) => {
                t.normal(format!("Rollback hook {} not signaling a rollback", o.name));
            }
        }
    }
    Ok(false)
}

enum RollbackCause {
    FailedChecks(u32),
    /// The full readiness text.
    ProgressDeadline(String),
    /// A rollback hook fired (its events are already recorded).
    Manual,
}

/// Rollback: all traffic to the primary, canary scaled to 0, phase Failed.
fn rule_rollback(t: &mut Tick, cause: RollbackCause) {
    let cid = t.spec.canary_id();
    match cause {
        RollbackCause::FailedChecks(n) => {
            t.warning(format!(
                "Rolling back {cid} failed checks threshold reached {n}"
            ));
            t.notify(
                Severity::Error,
                format!("Failed checks threshold reached {n}"),
            );
        }
        RollbackCause::ProgressDeadline(why) => {
            t.warning(format!(
                "Rolling back {cid} progress deadline exceeded {why}"
            ));
            t.notify(Severity::Error, format!("Progress deadline exceeded {why}"));
        }
        RollbackCause::Manual => {}
    }
    t.set_weights(Weights::ALL_PRIMARY, false);
    t.warning(format!("Canary failed! Scaling down {cid}"));
    t.act(Action::ScaleCanary(Scale::ToZero));
    t.next.phase = Phase::Failed;
    t.next.canary_weight = 0;
    t.next.iterations = 0;
    t.next.progress_waits = Default::default();
    t.post_rollout(Phase::Failed);
}

/// The primary did not become ready during promotion: keep the traffic on the canary (the only
/// healthy copy), do not scale it down, phase Failed.
fn rule_failed_promotion(t: &mut Tick, why: &str) {
    let tid = t.spec.target_id();
    t.warning(format!(
        "Promotion of {tid} failed, primary not ready: {why}"
    ));
    t.notify(
        Severity::Error,
        format!("Promotion failed, primary not ready: {why}"),
    );
    t.set_weights(Weights::ALL_CANARY, false);
    t.next.phase = Phase::Failed;
    t.next.canary_weight = Weights::ALL_CANARY.canary();
    t.next.progress_waits = Default::default();
    t.post_rollout(Phase::Failed);
}

/// The primary stayed unready past the deadline outside promotion: fail without touching traffic
/// or replicas; notify once. The readiness check keeps running, so the canary recovers by itself.
fn rule_primary_failed(t: &mut Tick, why: &str) {
    if t.prev.phase == Phase::Failed {
        return;
    }
    let cid = t.spec.canary_id();
    t.warning(format!("Canary {cid} failed, primary not ready: {why}"));
    t.notify(
        Severity::Error,
        format!("Canary failed, primary not ready: {why}"),
    );
    t.next.phase = Phase::Failed;
}

/// Promoting (primary rollout finished): move traffic back to the primary, all at once or in
/// `stepWeightPromotion` steps.
fn rule_promotion_traffic(t: &mut Tick, routes: Routes) {
    if t.spec.provider == MeshProvider::Kubernetes {
        t.next.phase = Phase::Finalising;
        return;
    }
    match t.spec.analysis.step_weight_promotion {
        None => {
            t.normal("Routing all traffic to primary".to_owned());
            t.set_weights(Weights::ALL_PRIMARY, false);
            t.next.canary_weight = 0;
            t.next.phase = Phase::Finalising;
        }
        Some(step) => {
            let weights = routes.weights.toward_primary(step);
            if routes.weights.canary() > 0 {
                t.set_weights(weights, false);
                let cid = t.spec.canary_id();
                t.normal(format!(
                    "Advance {cid} primary weight {}",
                    weights.primary()
                ));
            }
            t.next.canary_weight = weights.canary();
            if weights.canary() == 0 {
                t.next.phase = Phase::Finalising;
            }
        }
    }
}

/// Finalising: scale the canary to 0, Succeeded.
fn rule_finalise(t: &mut Tick) {
    let tid = t.spec.target_id();
    t.act(Action::ScaleCanary(Scale::ToZero));
    t.succeed();
    t.normal(format!("Promotion completed! Scaling down {tid}"));
    t.notify(
        Severity::Info,
        "Canary analysis completed successfully, promotion finished.".to_owned(),
    );
}

/// The checks of one analysis tick. The first step of a run runs `pre-rollout` hooks; later steps
/// run `rollout` hooks, then the metrics. The first failure halts and counts a failed check.
/// Returns true when the checks passed.
fn rule_analysis(t: &mut Tick, routes: Routes) -> Result<bool, Gather> {
    let cid = t.spec.canary_id();
    let first_step = routes.weights.canary() == 0
        && t.prev.iterations == 0
        && !(t.spec.analysis.mirror && routes.mirrored);
    if first_step {
        let tid = t.spec.target_id();
        t.normal(format!("Starting canary analysis for {tid}"));
        if let Some((hook, why)) = t.checks(HookType::PreRollout, "Pre-rollout")? {
            t.warning(format!(
                "Halt {cid} advancement pre-rollout check {hook} failed {why}"
            ));
            t.next.failed_checks += 1;
            return Ok(false);
        }
        return Ok(true);
    }
    if let Some((hook, why)) = t.checks(HookType::Rollout, "")? {
        t.warning(format!(
            "Halt {cid} advancement external check {hook} failed {why}"
        ));
        t.next.failed_checks += 1;
        return Ok(false);
    }
    if let Some(message) = rule_metric_checks(t)? {
        t.warning(message);
        t.next.failed_checks += 1;
        return Ok(false);
    }
    Ok(true)
}

/// Metric checks: builtin and inline-query metrics first, then template metrics, each in spec
/// order; returns the halt text of the first failure. No data and provider errors fail too: a
/// canary is never promoted without data.
fn rule_metric_checks(t: &Tick) -> Result<Option<String>, Gather> {
    let checks = &t.spec.analysis.metrics;
    if checks.is_empty() {
        return Ok(None);
    }
    let Some(results) = &t.obs.metrics else {
        return Err(Gather::Metrics);
    };
    let ordered = checks
        .iter()
        .filter(|c| !matches!(c.source, MetricSource::Template { .. }))
        .chain(
            checks
                .iter()
                .filter(|c| matches!(c.source, MetricSource::Template { .. })),
        );
    for check in ordered {
        if let Some(message) = metric_failure(t.spec, check, results) {
            return Ok(Some(message));
        }
    }
    Ok(None)
}

/// Canary strategy: confirm-traffic-increase, then one weight step (or the mirror step); at max
/// weight, confirm-promotion and promote.
fn rule_advance_weight(t: &mut Tick, steps: &WeightSteps, routes: Routes) -> Step {
    let cid = t.spec.canary_id();
    let current = routes.weights.canary();
    if current < steps.max_weight() {
        if !routes.mirrored
            && t.prev.phase == Phase::Progressing
            && let Some(refused) = t.gate(
                HookType::ConfirmTrafficIncrease,
                Phase::Progressing,
                "Confirm-traffic-increase",
            )?
        {
            t.warning(format!(
                "Halt {cid} advancement waiting for traffic increase approval {refused}"
            ));
            t.notify_unless_muted(
                &refused,
                Severity::Warn,
                "Canary traffic increase is waiting for approval.",
            );
            return Ok(());
        }
        if t.spec.analysis.mirror && current == 0 && !routes.mirrored {
            t.set_weights(Weights::ALL_PRIMARY, true);
            t.next.canary_weight = 0;
            t.normal(format!("Advance {cid} canary weight 0"));
        } else {
            let weight = steps.next_weight(current);
            t.set_weights(Weights::with_canary(weight), false);
            t.next.canary_weight = weight;
            t.normal(format!("Advance {cid} canary weight {weight}"));
        }
        return Ok(());
    }
    if !rule_confirm_promotion(t)? {
        return Ok(());
    }
    t.next.canary_weight = current;
    rule_promote(t);
    Ok(())
}

/// Blue/Green: count iterations (mirroring if asked), then switch all traffic to the canary, then
/// promote.
fn rule_blue_green(t: &mut Tick, total: u32, routes: Routes) -> Step {
    let done = t.prev.iterations;
    let istio = t.spec.provider != MeshProvider::Kubernetes;
    if done < total {
        if istio && t.spec.analysis.mirror && !routes.mirrored {
            t.set_weights(Weights::ALL_PRIMARY, true);
        }
        rule_count_iteration(t, total);
        return Ok(());
    }
    if !rule_confirm_promotion(t)? {
        return Ok(());
    }
    if done == total {
        if istio {
            t.normal(if t.spec.analysis.mirror {
                "Stop traffic mirroring and route all traffic to canary".to_owned()
            } else {
                "Routing all traffic to canary".to_owned()
            });
            t.set_weights(Weights::ALL_CANARY, false);
            t.next.canary_weight = Weights::ALL_CANARY.canary();
        }
        t.next.iterations = total + 1;
        return Ok(());
    }
    rule_promote(t);
    Ok(())
}

/// A/B testing: the matching requests go to the canary for `iterations` rounds, then promote.
fn rule_ab_testing(t: &mut Tick, total: u32) -> Step {
    if t.prev.iterations < total {
        t.set_weights(Weights::ALL_CANARY, false);
        rule_count_iteration(t, total);
        return Ok(());
    }
    if !rule_confirm_promotion(t)? {
        return Ok(());
    }
    rule_promote(t);
    Ok(())
}

fn rule_count_iteration(t: &mut Tick, total: u32) {
    let cid = t.spec.canary_id();
    let n = t.prev.iterations + 1;
    t.next.iterations = n;
    t.normal(format!("Advance {cid} canary iteration {n}/{total}"));
}

/// `confirm-promotion` gate at max weight/iterations. Refusal: WaitingPromotion (the analysis goes
/// on every tick). Returns true when promotion may proceed.
fn rule_confirm_promotion(t: &mut Tick) -> Result<bool, Gather> {
    let Some(refused) = t.gate(
        HookType::ConfirmPromotion,
        Phase::Progressing,
        "Confirm-promotion",
    )?
    else {
        return Ok(true);
    };
    if t.prev.phase != Phase::WaitingPromotion {
        t.next.phase = Phase::WaitingPromotion;
        let cid = t.spec.canary_id();
        t.warning(format!(
            "Halt {cid} advancement waiting for promotion approval {refused}"
        ));
        t.notify_unless_muted(
            &refused,
            Severity::Warn,
            "Canary promotion is waiting for approval.",
        );
    }
    Ok(false)
}

/// Promotion: copy configs and template to the primary; Promoting.
fn rule_promote(t: &mut Tick) {
    let (tid, pid) = (t.spec.target_id(), t.spec.primary_id());
    t.normal(format!("Copying {tid} template spec to {pid}"));
    t.act(Action::PromoteToPrimary);
    t.next.phase = Phase::Promoting;
}

// ------------------------------------------------------------------------------------------------
// Texts of metric failures (flagger-behavior §4.1, §4.7, §7).
// ------------------------------------------------------------------------------------------------

fn metric_failure(
    spec: &CanarySpec,
    check: &MetricCheck,
    results: &[MetricOutcome],
) -> Option<String> {
    let name = &check.name;
    let Some(outcome) = results.iter().find(|r| &r.name == name) else {
        return Some(format!("Metric query failed for {name}: no result"));
    };
    let no_data = |detail: Option<&str>| match &check.source {
        MetricSource::Builtin(_) => format!(
            "Halt advancement no values found for {} metric {name} probably {} is not receiving traffic{}",
            spec.provider,
            spec.target_id(),
            detail.map(|d| format!(": {d}")).unwrap_or_default()
        ),
        MetricSource::Query(_) => format!("Halt advancement no values found for metric: {name}"),
        MetricSource::Template { .. } => format!(
            "Halt advancement no values found for custom metric: {name}: {}",
            detail.unwrap_or("no values found")
        ),
    };
    match &outcome.value {
        MetricValue::Value(v) if v.is_nan() => Some(no_data(None)),
        MetricValue::Value(v) if check.accepts(*v) => None,
        MetricValue::Value(v) => Some(threshold_halt(spec, check, *v)),
        MetricValue::NoData(detail) => Some(no_data(detail.as_deref())),
        MetricValue::Failed(e) => Some(match &check.source {
            MetricSource::Builtin(_) => format!("Prometheus query failed: {e}"),
            MetricSource::Query(_) => format!("Prometheus query failed for {name}: {e}"),
            MetricSource::Template { .. } => format!("Metric query failed for {name}: {e}"),
        }),
    }
}

fn threshold_halt(spec: &CanarySpec, check: &MetricCheck, value: f64) -> String {
    let cid = spec.canary_id();
    let below = check.range.min.filter(|min| value < *min);
    let (op, bound) = match below {
        Some(min) => ("<", min),
        None => (">", check.range.max.unwrap_or(f64::INFINITY)),
    };
    match check.source {
        MetricSource::Builtin(BuiltinMetric::RequestSuccessRate) => {
            format!("Halt {cid} advancement success rate {value:.2}% {op} {bound}%")
        }
        MetricSource::Builtin(BuiltinMetric::RequestDuration) => format!(
            "Halt {cid} advancement request duration {} {op} {}",
            millis_to_go(value),
            millis_to_go(bound)
        ),
        _ => format!(
            "Halt {cid} advancement {} {value:.2} {op} {bound}",
            check.name
        ),
    }
}

/// Upstream truncates the float to whole milliseconds before formatting.
fn millis_to_go(ms: f64) -> String {
    if ms.is_finite() && ms >= 0.0 {
        format_go_duration(Duration::from_millis(ms.trunc() as u64))
    } else {
        format!("{ms}ms")
    }
}

// ------------------------------------------------------------------------------------------------
// Tick: accumulates actions and the next status.
// ------------------------------------------------------------------------------------------------

enum Verdict {
    Ready,
    /// Still waiting; the full Warning text.
    Halt(String),
    /// Will not become ready (deadline passed): the full text and the workload's own message.
    Expired {
        full: String,
        inner: String,
    },
}

fn primary_readiness(obs: &Observations, spec: &CanarySpec) -> Readiness {
    match &obs.primary {
        Observed::Found(p) => p.readiness.clone(),
        Observed::Missing => Readiness::NotReady(format!(
            "waiting for rollout to finish: deployment {} not found",
            spec.primary_id()
        )),
        Observed::Error(e) => Readiness::NotReady(e.clone()),
    }
}

struct Tick<'a> {
    spec: &'a CanarySpec,
    prev: &'a CanaryStatus,
    obs: &'a Observations,
    next: CanaryStatus,
    actions: Vec<Action>,
    /// Replaces the phase's usual `Promoted` condition message.
    promoted_message: Option<String>,
}

impl<'a> Tick<'a> {
    fn new(spec: &'a CanarySpec, prev: &'a CanaryStatus, obs: &'a Observations) -> Self {
        Self {
            spec,
            prev,
            obs,
            next: prev.clone(),
            actions: Vec::new(),
            promoted_message: None,
        }
    }

    fn act(&mut self, action: Action) {
        self.actions.push(action);
    }

    fn normal(&mut self, message: String) {
        self.act(Action::Event {
            event_type: EventType::Normal,
            message,
        });
    }

    fn warning(&mut self, message: String) {
        self.act(Action::Event {
            event_type: EventType::Warning,
            message,
        });
    }

    fn notify(&mut self, severity: Severity, message: String) {
        self.act(Action::Notify {
            severity,
            message,
            fields: Vec::new(),
        });
    }

    /// Notification with upstream's metadata fields (Target, threshold, deadline, routing).
    fn notify_with_fields(&mut self, severity: Severity, message: String) {
        let spec = self.spec;
        let routing = match &spec.analysis.strategy {
            Strategy::Canary(steps) => steps.describe(),
            Strategy::BlueGreen { .. } => "Blue/Green".to_owned(),
            Strategy::AbTesting { .. } => "A/B Testing".to_owned(),
        };
        let fields = vec![
            (
                "Target".to_owned(),
                format!("{}/{}", spec.target_ref.kind, spec.target_id()),
            ),
            (
                "Failed checks threshold".to_owned(),
                spec.analysis.threshold.to_string(),
            ),
            (
                "Progress deadline".to_owned(),
                format!("{}s", spec.progress_deadline.as_secs()),
            ),
            ("Traffic routing".to_owned(), routing),
        ];
        self.act(Action::Notify {
            severity,
            message,
            fields,
        });
    }

    fn notify_unless_muted(&mut self, hook: &str, severity: Severity, message: &str) {
        let muted = self
            .spec
            .analysis
            .webhooks
            .iter()
            .any(|h| h.name == hook && h.mute_alert);
        if !muted {
            self.notify(severity, message.to_owned());
        }
    }

    fn set_weights(&mut self, weights: Weights, mirror: bool) {
        // The kubernetes provider has no mesh object: the apex Service always selects the primary.
        if self.spec.provider != MeshProvider::Kubernetes {
            self.act(Action::SetWeights { weights, mirror });
        }
    }

    fn checksum(&self) -> String {
        match &self.obs.target {
            Observed::Found(t) => t.revision.clone(),
            _ => self.prev.last_applied_spec.clone(),
        }
    }

    /// Results of a hook group, or a request to gather them.
    fn hooks(&self, hook_type: HookType, phase: Phase) -> Result<&'a [HookOutcome], Gather> {
        match self.obs.hooks.get(&hook_type) {
            Some(outcomes) => Ok(outcomes.as_slice()),
            None => Err(Gather::Hooks {
                hook_type,
                phase,
                checksum: self.checksum(),
            }),
        }
    }

    /// A gate (confirm-* hooks): `Some(hook)` names the first refusing hook; passing hooks get a
    /// `<Label> check <hook> passed` event. No hooks of that type: open.
    fn gate(
        &mut self,
        hook_type: HookType,
        phase: Phase,
        label: &str,
    ) -> Result<Option<String>, Gather> {
        if !self.spec.analysis.has_hooks(hook_type) {
            return Ok(None);
        }
        for o in self.hooks(hook_type, phase)? {
            match &o.result {
                HookResult::Passed => self.normal(format!("{label} check {} passed", o.name)),
                HookResult::Failed(_) => return Ok(Some(o.name.clone())),
            }
        }
        Ok(None)
    }

    /// A check group (pre-rollout, rollout): `Some((hook, error))` for the first failure. Passing
    /// hooks get a `<Label> check <hook> passed` event when `label` is not empty.
    fn checks(
        &mut self,
        hook_type: HookType,
        label: &str,
    ) -> Result<Option<(String, String)>, Gather> {
        if !self.spec.analysis.has_hooks(hook_type) {
            return Ok(None);
        }
        for o in self.hooks(hook_type, Phase::Progressing)? {
            match &o.result {
                HookResult::Passed if label.is_empty() => {}
                HookResult::Passed => self.normal(format!("{label} check {} passed", o.name)),
                HookResult::Failed(why) => return Ok(Some((o.name.clone(), why.clone()))),
            }
        }
        Ok(None)
    }

    /// Current routes: read from the mesh (Istio) or implied by the iterations (kubernetes).
    fn routes(&mut self) -> Option<Routes> {
        if self.spec.provider == MeshProvider::Kubernetes {
            let weights = if self.prev.iterations > 0 {
                Weights::ALL_CANARY
            } else {
                Weights::ALL_PRIMARY
            };
            return Some(Routes {
                weights,
                mirrored: false,
            });
        }
        match &self.obs.routes {
            Observed::Found(r) => Some(*r),
            Observed::Missing => {
                self.warning(format!(
                    "VirtualService {}.{} not found",
                    self.spec.service.name, self.spec.namespace
                ));
                None
            }
            Observed::Error(e) => {
                self.warning(e.clone());
                None
            }
        }
    }

    /// Readiness of one workload, with the persisted progress deadline.
    fn readiness(&mut self, who: Workload, readiness: &Readiness) -> Verdict {
        let prefix = match who {
            Workload::Primary => format!("{} not ready: ", self.spec.primary_id()),
            Workload::Canary => format!("canary deployment {} not ready: ", self.spec.target_id()),
        };
        match readiness {
            Readiness::Ready => {
                self.next.progress_waits.set(who, None);
                Verdict::Ready
            }
            Readiness::Failed(inner) => Verdict::Expired {
                full: format!("{prefix}{inner}"),
                inner: inner.clone(),
            },
            Readiness::NotReady(inner) => match self.prev.progress_waits.get(who) {
                Some(wait) if self.obs.now >= wait.deadline => {
                    let inner = format!(
                        "{inner} (progressDeadlineSeconds {} exceeded)",
                        self.spec.progress_deadline.as_secs()
                    );
                    Verdict::Expired {
                        full: format!("{prefix}{inner}"),
                        inner,
                    }
                }
                Some(_) => Verdict::Halt(format!("{prefix}{inner}")),
                None => {
                    self.next.progress_waits.set(
                        who,
                        Some(Wait {
                            since: self.obs.now,
                            deadline: self.obs.now.plus(self.spec.progress_deadline),
                        }),
                    );
                    Verdict::Halt(format!("{prefix}{inner}"))
                }
            },
        }
    }

    fn reset_counters(&mut self) {
        self.next.canary_weight = 0;
        self.next.failed_checks = 0;
        self.next.iterations = 0;
    }

    /// A run of `target`'s revision starts (or restarts): Progressing, counters at 0.
    fn begin_run(&mut self, target: &TargetObservation) {
        self.next.phase = Phase::Progressing;
        self.reset_counters();
        self.next.last_applied_spec = target.revision.clone();
        self.next.tracked_configs = target.tracked_configs.clone();
        self.next.progress_waits.canary = None;
    }

    fn succeed(&mut self) {
        self.next.phase = Phase::Succeeded;
        self.next.last_promoted_spec = self.next.last_applied_spec.clone();
        self.reset_counters();
        self.next.progress_waits = Default::default();
        self.post_rollout(Phase::Succeeded);
    }

    fn post_rollout(&mut self, phase: Phase) {
        if self.spec.analysis.has_hooks(HookType::PostRollout) {
            let checksum = self.checksum();
            self.act(Action::RunHooks {
                hook_type: HookType::PostRollout,
                phase,
                checksum,
            });
        }
    }

    fn finish(mut self) -> Decision {
        let now = self.obs.now;
        self.next
            .conditions
            .retain(|c| c.condition_type != VALID_CONDITION);
        let (status, message) = promoted_condition(self.next.phase, self.spec.target_ref.kind);
        let message = self.promoted_message.take().unwrap_or(message);
        set_condition(
            &mut self.next.conditions,
            PROMOTED_CONDITION,
            status,
            self.next.phase.as_str(),
            &message,
            now,
        );
        if self.next != *self.prev {
            self.next.last_transition_time = Some(now);
            self.actions
                .push(Action::WriteStatus(Box::new(self.next.clone())));
        }
        Decision {
            next_state: self.next,
            actions: self.actions,
            requeue_after: self.spec.analysis.interval,
        }
    }
}

#[cfg(test)]
mod tests;
