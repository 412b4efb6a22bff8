//! Test fixtures that read like English: `Canary::test().with_phase(..)`,
//! `Obs::healthy().with_metric(..)`, and a small simulated world that folds ticks through
//! `decide` for scenario tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::action::{Action, EventType, Scale};
use crate::decide::{Decision, Gather, Outcome, decide};
use crate::observations::{
    HookOutcome, HookResult, MetricOutcome, MetricValue, Observations, Observed,
    PrimaryObservation, ProviderCheck, Readiness, RolloutSlot, Routes, TargetObservation,
};
use crate::phase::Phase;
use crate::spec::{
    AnalysisInput, CanaryInput, CanarySpec, HookType, MeshProvider, MetricInput, ObjectRefInput,
    ServiceInput, WebhookInput,
};
use crate::status::{
    CanaryStatus, PROMOTED_CONDITION, Timestamp, promoted_condition, set_condition,
};
use crate::weights::Weights;

/// The revision the primary runs in the fixtures.
pub const PROMOTED: &str = "rev-1";
/// A new revision of the target.
pub const NEW: &str = "rev-2";

pub const MINUTE: i64 = 60_000;

/// A Canary (spec input + status), like the object in the cluster.
#[derive(Debug, Clone)]
pub struct Canary {
    pub input: CanaryInput,
    pub status: CanaryStatus,
}

impl Canary {
    /// podinfo.test: stepWeight 5, maxWeight 50, threshold 5, interval 1m, progressDeadline 60s,
    /// success rate ≥ 99 %, P99 ≤ 500 ms; initialized with the primary on [`PROMOTED`].
    pub fn test() -> Self {
        let input = CanaryInput {
            name: "podinfo".into(),
            namespace: "test".into(),
            target_ref: Some(ObjectRefInput {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: Some("podinfo".into()),
            }),
            progress_deadline_seconds: Some(60),
            service: Some(ServiceInput {
                port: Some(9898),
                ..Default::default()
            }),
            analysis: Some(AnalysisInput {
                interval: Some("1m".into()),
                threshold: Some(5),
                max_weight: Some(50),
                step_weight: Some(5),
                metrics: vec![
                    MetricInput {
                        name: Some("request-success-rate".into()),
                        threshold_min: Some(99.0),
                        interval: Some("1m".into()),
                        ..Default::default()
                    },
                    MetricInput {
                        name: Some("request-duration".into()),
                        threshold_max: Some(500.0),
                        interval: Some("30s".into()),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = CanaryStatus {
            phase: Phase::Initialized,
            last_applied_spec: PROMOTED.into(),
            last_promoted_spec: PROMOTED.into(),
            ..Default::default()
        };
        Canary { input, status }
    }

    /// A Canary that was just applied: empty status.
    pub fn new_object() -> Self {
        Canary {
            status: CanaryStatus::default(),
            ..Canary::test()
        }
    }

    fn analysis(&mut self) -> &mut AnalysisInput {
        self.input.analysis.as_mut().unwrap()
    }

    pub fn with_phase(mut self, phase: Phase) -> Self {
        self.status.phase = phase;
        self
    }

    /// In the middle of analysing [`NEW`].
    pub fn analysing(self) -> Self {
        self.with_phase(Phase::Progressing).with_last_applied(NEW)
    }

    pub fn with_last_applied(mut self, rev: &str) -> Self {
        self.status.last_applied_spec = rev.into();
        self
    }

    pub fn with_failed_checks(mut self, n: u32) -> Self {
        self.status.failed_checks = n;
        self
    }

    pub fn with_iterations_done(mut self, n: u32) -> Self {
        self.status.iterations = n;
        self
    }

    pub fn with_status_weight(mut self, w: u8) -> Self {
        self.status.canary_weight = w;
        self
    }

    pub fn with_primary_wait(mut self, since: i64) -> Self {
        self.status.progress_waits.primary = Some(crate::status::Wait {
            since: Timestamp(since),
            deadline: Timestamp(since + MINUTE),
        });
        self
    }

    pub fn with_canary_wait(mut self, since: i64) -> Self {
        self.status.progress_waits.canary = Some(crate::status::Wait {
            since: Timestamp(since),
            deadline: Timestamp(since + MINUTE),
        });
        self
    }

    pub fn with_steps(mut self, step: i64, max: i64) -> Self {
        let a = self.analysis();
        a.step_weight = Some(step);
        a.max_weight = Some(max);
        self
    }

    pub fn with_threshold(mut self, n: i64) -> Self {
        self.analysis().threshold = Some(n);
        self
    }

    pub fn with_iterations(mut self, n: i64) -> Self {
        let a = self.analysis();
        a.step_weight = None;
        a.max_weight = None;
        a.iterations = Some(n);
        self
    }

    pub fn with_ab_match(mut self) -> Self {
        self.analysis().matches =
            vec![serde_json::json!({"headers": {"x-canary": {"exact": "insider"}}})];
        self
    }

    pub fn with_mirror(mut self) -> Self {
        self.analysis().mirror = true;
        self
    }

    pub fn with_step_weight_promotion(mut self, step: i64) -> Self {
        self.analysis().step_weight_promotion = Some(step);
        self
    }

    pub fn with_hook(mut self, hook_type: &str, name: &str) -> Self {
        self.analysis().webhooks.push(WebhookInput {
            name: Some(name.into()),
            hook_type: Some(hook_type.into()),
            url: Some(format!("http://flagger-loadtester.test/{name}")),
            ..Default::default()
        });
        self
    }

    pub fn with_muted_hook(mut self, hook_type: &str, name: &str) -> Self {
        self = self.with_hook(hook_type, name);
        self.analysis().webhooks.last_mut().unwrap().mute_alert = true;
        self
    }

    pub fn with_custom_metric(mut self, name: &str, max: f64) -> Self {
        self.analysis().metrics.push(MetricInput {
            name: Some(name.into()),
            query: Some("sum(rate(errors[1m]))".into()),
            threshold_max: Some(max),
            ..Default::default()
        });
        self
    }

    pub fn without_metrics(mut self) -> Self {
        self.analysis().metrics.clear();
        self
    }

    pub fn skipping_analysis(mut self) -> Self {
        self.input.skip_analysis = true;
        self
    }

    pub fn suspended(mut self) -> Self {
        self.input.suspend = true;
        self
    }

    pub fn on_kubernetes_provider(mut self) -> Self {
        self.input.provider = Some("kubernetes".into());
        self
    }

    pub fn spec(&self) -> CanarySpec {
        CanarySpec::new(&self.input, MeshProvider::Istio).expect("fixture spec is valid")
    }

    /// The status as the operator would have written it: with the `Promoted` condition of its
    /// phase (unless it is a brand-new object).
    pub fn current_status(&self) -> CanaryStatus {
        let mut status = self.status.clone();
        if status.conditions.is_empty() && status != CanaryStatus::default() {
            let (st, msg) = promoted_condition(status.phase, crate::spec::TargetKind::Deployment);
            set_condition(
                &mut status.conditions,
                PROMOTED_CONDITION,
                st,
                status.phase.as_str(),
                &msg,
                Timestamp(0),
            );
        }
        status
    }

    /// One full tick: answers every gather from `obs`; returns the decision and what was gathered.
    pub fn decide(&self, obs: &Obs) -> Tick {
        run_tick(&self.spec(), &self.current_status(), obs)
    }
}

/// Result of one fixture tick.
#[derive(Debug, Clone)]
pub struct Tick {
    pub decision: Decision,
    pub gathered: Vec<Gather>,
}

impl Tick {
    pub fn events(&self) -> Vec<&str> {
        self.decision.events()
    }

    pub fn warnings(&self) -> Vec<&str> {
        self.of_type(EventType::Warning)
    }

    pub fn of_type(&self, t: EventType) -> Vec<&str> {
        self.decision
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Event {
                    event_type,
                    message,
                } if *event_type == t => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn next(&self) -> &CanaryStatus {
        &self.decision.next_state
    }

    pub fn phase(&self) -> Phase {
        self.decision.next_state.phase
    }

    pub fn has(&self, action: &Action) -> bool {
        self.decision.actions.contains(action)
    }

    pub fn set_weights(&self) -> Vec<(u8, bool)> {
        self.decision
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::SetWeights { weights, mirror } => Some((weights.canary(), *mirror)),
                _ => None,
            })
            .collect()
    }

    pub fn notifications(&self) -> Vec<&str> {
        self.decision
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Notify { message, .. } => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn writes_status(&self) -> bool {
        self.decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::WriteStatus(_)))
    }

    pub fn asked_for_metrics(&self) -> bool {
        self.gathered.contains(&Gather::Metrics)
    }

    pub fn asked_for_hooks(&self, t: HookType) -> bool {
        self.gathered
            .iter()
            .any(|g| matches!(g, Gather::Hooks { hook_type, .. } if *hook_type == t))
    }
}

/// Observations plus the answers to give when `decide` asks to gather something.
#[derive(Debug, Clone)]
pub struct Obs {
    pub base: Observations,
    pub metrics: Vec<MetricOutcome>,
    /// Per hook type: answer per hook name (absent = passes).
    pub hook_answers: BTreeMap<String, HookResult>,
    pub providers: ProviderCheck,
    /// Answer to a rollout slot request (granted unless a test says otherwise).
    pub slot: RolloutSlot,
}

impl Obs {
    /// Target on [`PROMOTED`], everything ready, routes 100/0, metrics well within bounds.
    pub fn healthy() -> Self {
        Obs {
            base: Observations::new(
                Timestamp(10 * MINUTE),
                Observed::Found(TargetObservation {
                    revision: PROMOTED.into(),
                    tracked_configs: BTreeMap::new(),
                    readiness: Readiness::Ready,
                }),
                Observed::Found(PrimaryObservation {
                    readiness: Readiness::Ready,
                    revision: None,
                }),
                Observed::Found(Routes {
                    weights: Weights::ALL_PRIMARY,
                    mirrored: false,
                }),
            ),
            metrics: vec![
                MetricOutcome {
                    name: "request-success-rate".into(),
                    value: MetricValue::Value(99.9),
                },
                MetricOutcome {
                    name: "request-duration".into(),
                    value: MetricValue::Value(120.0),
                },
            ],
            hook_answers: BTreeMap::new(),
            providers: ProviderCheck::Available,
            slot: RolloutSlot::Granted,
        }
    }

    pub fn at(mut self, ms: i64) -> Self {
        self.base.now = Timestamp(ms);
        self
    }

    fn target(&mut self) -> &mut TargetObservation {
        match &mut self.base.target {
            Observed::Found(t) => t,
            _ => panic!("target not found in fixture"),
        }
    }

    /// The target runs [`NEW`].
    pub fn with_new_revision(self) -> Self {
        self.with_revision(NEW)
    }

    pub fn with_revision(mut self, rev: &str) -> Self {
        self.target().revision = rev.into();
        self
    }

    pub fn with_config(mut self, key: &str, checksum: &str) -> Self {
        self.target()
            .tracked_configs
            .insert(key.into(), checksum.into());
        self
    }

    pub fn with_target(mut self, readiness: Readiness) -> Self {
        self.target().readiness = readiness;
        self
    }

    pub fn with_target_missing(mut self) -> Self {
        self.base.target = Observed::Missing;
        self
    }

    pub fn with_primary(mut self, readiness: Readiness) -> Self {
        self.base.primary = Observed::Found(PrimaryObservation {
            readiness,
            revision: None,
        });
        self
    }

    pub fn with_primary_missing(mut self) -> Self {
        self.base.primary = Observed::Missing;
        self
    }

    pub fn with_canary_weight(mut self, w: u8) -> Self {
        self.base.routes = Observed::Found(Routes {
            weights: Weights::with_canary(w),
            mirrored: false,
        });
        self
    }

    pub fn mirrored(mut self) -> Self {
        if let Observed::Found(r) = &mut self.base.routes {
            r.mirrored = true;
        }
        self
    }

    pub fn with_routes(mut self, routes: Observed<Routes>) -> Self {
        self.base.routes = routes;
        self
    }

    pub fn with_metric(mut self, name: &str, value: MetricValue) -> Self {
        self.metrics.retain(|m| m.name != name);
        self.metrics.push(MetricOutcome {
            name: name.into(),
            value,
        });
        self
    }

    pub fn with_success_rate(self, v: f64) -> Self {
        self.with_metric("request-success-rate", MetricValue::Value(v))
    }

    pub fn with_latency_ms(self, v: f64) -> Self {
        self.with_metric("request-duration", MetricValue::Value(v))
    }

    pub fn with_hook_failing(mut self, name: &str, why: &str) -> Self {
        self.hook_answers
            .insert(name.into(), HookResult::Failed(why.into()));
        self
    }

    /// `in_progress` of `limit` rollout slots are taken by other canaries.
    pub fn with_slots_busy(mut self, in_progress: u32, limit: u32) -> Self {
        self.slot = RolloutSlot::Busy { in_progress, limit };
        self
    }

    pub fn with_providers(mut self, p: ProviderCheck) -> Self {
        self.providers = p;
        self
    }
}

/// Runs `decide` until it decides, answering each gather from `obs` like an actor would.
pub fn run_tick(spec: &CanarySpec, status: &CanaryStatus, obs: &Obs) -> Tick {
    let mut base = obs.base.clone();
    let mut gathered = Vec::new();
    for _ in 0..16 {
        match decide(spec, status, &base) {
            Outcome::Decided(decision) => return Tick { decision, gathered },
            Outcome::Gather(g) => {
                assert!(!gathered.contains(&g), "decide asked twice for {g:?}");
                match &g {
                    Gather::Metrics => base.metrics = Some(obs.metrics.clone()),
                    Gather::MetricProviders => base.metric_providers = Some(obs.providers.clone()),
                    Gather::RolloutSlot => base.rollout_slot = Some(obs.slot),
                    Gather::Hooks { hook_type, .. } => {
                        base.hooks
                            .insert(*hook_type, answer_hooks(spec, *hook_type, obs));
                    }
                }
                gathered.push(g);
            }
        }
    }
    panic!("decide did not converge: {gathered:?}");
}

/// Calls the hooks of one type in spec order, stopping like the actor must.
fn answer_hooks(spec: &CanarySpec, hook_type: HookType, obs: &Obs) -> Vec<HookOutcome> {
    let mut out = Vec::new();
    for hook in spec.analysis.hooks(hook_type) {
        let result = obs
            .hook_answers
            .get(&hook.name)
            .cloned()
            .unwrap_or(HookResult::Passed);
        let stop = match result {
            HookResult::Passed => hook_type.stops_on_success(),
            HookResult::Failed(_) => !hook_type.stops_on_success(),
        };
        out.push(HookOutcome {
            name: hook.name.clone(),
            result,
        });
        if stop {
            break;
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// A small simulated world for multi-tick scenarios.
// ------------------------------------------------------------------------------------------------

/// Deployments, routes, metrics and hooks that react to the actions, so scenarios can fold ticks.
#[derive(Debug, Clone)]
pub struct World {
    pub spec: CanarySpec,
    pub status: CanaryStatus,
    pub now: i64,
    /// Revision in the target's template.
    pub target_revision: String,
    pub target_replicas: u32,
    /// Ticks until the target is ready after a scale-up or template change (`None` = never).
    pub target_ready_after: Option<u32>,
    target_pending: u32,
    /// Revision in the primary's template.
    pub primary_revision: String,
    /// Ticks until the primary is ready after a promotion (`None` = never).
    pub primary_ready_after: Option<u32>,
    primary_pending: u32,
    pub primary_exists: bool,
    pub routes: Routes,
    /// Metric answers of the canary.
    pub metrics: Vec<MetricOutcome>,
    pub hook_answers: BTreeMap<String, HookResult>,
    /// Every event so far, in order.
    pub events: Vec<String>,
    pub notifications: Vec<String>,
    pub gathers: Vec<Gather>,
    pub hooks_run: Vec<(HookType, Phase)>,
    pub status_writes: usize,
}

impl World {
    pub fn new(canary: Canary) -> Self {
        let status = canary.current_status();
        let spec = canary.spec();
        World {
            spec,
            primary_exists: status.is_initialized(),
            status,
            now: 0,
            target_revision: PROMOTED.into(),
            target_replicas: 0,
            target_ready_after: Some(1),
            target_pending: 0,
            primary_revision: PROMOTED.into(),
            primary_ready_after: Some(1),
            primary_pending: 0,
            routes: Routes {
                weights: Weights::ALL_PRIMARY,
                mirrored: false,
            },
            metrics: Obs::healthy().metrics,
            hook_answers: BTreeMap::new(),
            events: Vec::new(),
            notifications: Vec::new(),
            gathers: Vec::new(),
            hooks_run: Vec::new(),
            status_writes: 0,
        }
    }

    /// `kubectl set image`: the target gets a new template.
    pub fn set_image(&mut self, rev: &str) {
        self.target_revision = rev.into();
        if self.target_replicas > 0 {
            self.target_pending = self.target_ready_after.map_or(u32::MAX, |n| n);
        }
    }

    fn readiness(pending: u32, what: &str) -> Readiness {
        if pending == 0 {
            Readiness::Ready
        } else {
            Readiness::NotReady(format!(
                "waiting for rollout to finish: 0 of 1 (readyThreshold 100%) updated {what} are available"
            ))
        }
    }

    pub fn observe(&self) -> Obs {
        let mut obs = Obs::healthy().at(self.now);
        obs.base.target = Observed::Found(TargetObservation {
            revision: self.target_revision.clone(),
            tracked_configs: BTreeMap::new(),
            readiness: Self::readiness(self.target_pending, "replicas"),
        });
        obs.base.primary = if self.primary_exists {
            Observed::Found(PrimaryObservation {
                readiness: Self::readiness(self.primary_pending, "replicas"),
                revision: Some(self.primary_revision.clone()),
            })
        } else {
            Observed::Missing
        };
        obs.base.routes = Observed::Found(self.routes);
        obs.metrics = self.metrics.clone();
        obs.hook_answers = self.hook_answers.clone();
        obs
    }

    /// One tick: observe, decide, execute; then time passes by `requeue_after`.
    pub fn tick(&mut self) -> Tick {
        self.tick_with(true)
    }

    /// A tick whose status write is lost: the operator died right after its other writes (or
    /// the status write failed). The next tick starts from the previous status.
    pub fn tick_losing_the_status_write(&mut self) -> Tick {
        self.tick_with(false)
    }

    fn tick_with(&mut self, write_status: bool) -> Tick {
        // Rollouts progress between ticks.
        self.target_pending = self.target_pending.saturating_sub(1);
        self.primary_pending = self.primary_pending.saturating_sub(1);
        let tick = run_tick(&self.spec, &self.status, &self.observe());
        self.gathers.extend(tick.gathered.iter().cloned());
        for action in &tick.decision.actions {
            if write_status || !matches!(action, Action::WriteStatus(_)) {
                self.execute(action);
            }
        }
        self.now += i64::try_from(tick.decision.requeue_after.as_millis()).unwrap();
        tick
    }

    /// Ticks until `stop` holds or `max` ticks passed; returns the number of ticks run.
    pub fn run_until(&mut self, max: usize, stop: impl Fn(&World) -> bool) -> usize {
        for i in 0..max {
            self.tick();
            if stop(self) {
                return i + 1;
            }
        }
        max
    }

    fn execute(&mut self, action: &Action) {
        match action {
            Action::EnsurePrimary => {
                if !self.primary_exists {
                    self.primary_exists = true;
                    self.primary_revision = self.target_revision.clone();
                    self.primary_pending = self.primary_ready_after.map_or(u32::MAX, |n| n);
                }
            }
            Action::ReconcileRoutes => {}
            Action::ScaleCanary(Scale::ToZero) => {
                self.target_replicas = 0;
                self.target_pending = 0;
            }
            Action::ScaleCanary(Scale::Up) => {
                if self.target_replicas == 0 {
                    self.target_replicas = 1;
                    self.target_pending = self.target_ready_after.map_or(u32::MAX, |n| n);
                }
            }
            Action::SetWeights { weights, mirror } => {
                self.routes = Routes {
                    weights: *weights,
                    mirrored: *mirror,
                };
            }
            Action::PromoteToPrimary => {
                self.primary_revision = self.target_revision.clone();
                self.primary_pending = self.primary_ready_after.map_or(u32::MAX, |n| n);
            }
            Action::RunHooks {
                hook_type, phase, ..
            } => self.hooks_run.push((*hook_type, *phase)),
            Action::Event { message, .. } => self.events.push(message.clone()),
            Action::Notify { message, .. } => self.notifications.push(message.clone()),
            Action::RevertTarget | Action::RevertRoutes | Action::RemoveFinalizer => {}
            Action::WriteStatus(s) => {
                self.status = (**s).clone();
                self.status_writes += 1;
            }
        }
    }

    /// What was gathered for the analysis (metrics, hooks, providers), without rollout slots.
    pub fn analysis_gathers(&self) -> Vec<&Gather> {
        self.gathers
            .iter()
            .filter(|g| **g != Gather::RolloutSlot)
            .collect()
    }

    pub fn phase(&self) -> Phase {
        self.status.phase
    }

    pub fn canary_weight(&self) -> u8 {
        self.routes.weights.canary()
    }

    /// Events that match one of the prefixes, in order.
    pub fn events_starting_with(&self, prefixes: &[&str]) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| prefixes.iter().any(|p| e.starts_with(p)))
            .cloned()
            .collect()
    }

    pub fn interval(&self) -> Duration {
        self.spec.analysis.interval
    }
}
