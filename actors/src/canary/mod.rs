//! The CanaryActor: one per Canary object; runs its ticks.
//!
//! Contract:
//! - Owns its timer, its rollout state (a cache of `.status`, rebuilt from the object when the
//!   actor starts) and nothing else; weights are read from the mesh every tick.
//! - A tick is an [`AtomicResponse`]: no two ticks of one canary interleave, and no message is
//!   handled while a tick runs. The tick reschedules the next one when it ends
//!   (`requeue_after`, the analysis interval).
//! - A tick: gather from the caches (target revision and readiness, primary readiness, routes
//!   through the RouterActor), `decide` (answering its hook/metric/provider requests through the
//!   ports), execute the actions in order, write the status once, update telemetry.
//! - [`Poke`] (a watched dependency changed) ticks now when that can matter — the target's
//!   revision differs from the one the last tick saw, or the canary is still initializing —
//!   and otherwise keeps the cadence, so dependency noise never speeds up an analysis. Pokes
//!   during a tick are checked once when it ends.
//! - [`CanaryActor::stop_on`]: when the token is cancelled (leadership lost), a running tick is
//!   dropped at its next await point and the actor stops, as if the process had crashed there:
//!   every action is idempotent and `.status` is the durable truth.
//! - A panic inside a tick is caught: the actor stops with `crashed = true` and the supervisor
//!   starts a new one from `.status`. Other canaries are not affected.
//! - Invalid specs (and a second Canary on a target) get one Warning event and a `Valid=False`
//!   condition naming the field when the problem first appears, not one per tick; no object is
//!   created or changed. `flagger_canary_status` reports such a canary as 1 (idle: nothing rolls
//!   out), not 2: failed means a rollout was rolled back, which alerts page on.
//! - A write of the Canary that conflicts (409: the object changed since the tick read it) is not
//!   a failure: no event, a debug log, and the next tick (at once) decides from the fresh object.

pub mod execute;
pub mod gather;

#[cfg(test)]
mod actor_tests;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use flagger_rollout::spec::{InvalidSpec, SpecError, ValidationOptions};
use flagger_rollout::{
    BuiltinMetric, CanarySpec, CanaryStatus, Decision, Gather, MeshProvider, MetricOutcome,
    MetricSource, MetricValue, Observations, Observed, Outcome, Phase, Routes, Timestamp, decide,
    decide_invalid, finalize,
};
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info_span, warn};

use crate::cache::Caches;
use crate::crd::Canary;
use crate::crd::convert::{canary_spec_with, status_from_crd};
use crate::key::CanaryKey;
use crate::kubeops::{CanaryRef, SelectorLabel};
use crate::messages::{
    CanaryStopped, GetRoutes, Poke, RolloutSlotFreed, SetFinalizer, SpecChanged, StopCanary,
};
use crate::ports::Ports;
use crate::slots::{RolloutSlots, after_tick, request_slot};
use crate::status::FINALIZER;
use crate::telemetry::{StatusGauge, Telemetry};
use execute::{Executed, Target, execute, notification_occurrence};
use gather::{Workloads, check_providers, observe_primary, observe_target, run_hooks, run_metrics};

/// Operator-wide settings every canary uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--mesh-provider`, for Canaries without `spec.provider`.
    pub default_provider: MeshProvider,
    /// `--metrics-server`.
    pub metrics_server: String,
    /// `--selector-labels`.
    pub selector_labels: Vec<String>,
    /// `--enable-config-tracking`.
    pub config_tracking: bool,
    /// `--max-concurrent-canaries` (None: unlimited).
    pub max_concurrent_canaries: Option<u32>,
    /// `--no-cross-namespace-refs`.
    pub no_cross_namespace_refs: bool,
}

impl Settings {
    /// What a valid Canary is under these settings.
    pub fn validation(&self) -> ValidationOptions {
        ValidationOptions {
            default_provider: self.default_provider,
            no_cross_namespace_refs: self.no_cross_namespace_refs,
        }
    }
}

/// What every CanaryActor shares.
#[derive(Clone)]
pub struct Env {
    pub caches: Caches,
    /// Shared by every actor and tick: a `Ports` is ~17 `Recipient`s, and cloning one allocates
    /// for each, so an `Env` clone (per actor and per tick) shares it instead of copying it.
    pub ports: Arc<Ports>,
    pub telemetry: Telemetry,
    pub settings: Arc<Settings>,
    /// For reading workloads fresh right after this canary wrote them; `None` reads the caches.
    pub client: Option<Client>,
    /// Rollout slot accounting (set by the supervisor when there is a limit).
    pub slots: Option<RolloutSlots>,
}

/// Delay after a failed tick that wrote nothing, so a broken dependency is not hammered.
const MIN_REQUEUE: Duration = Duration::from_millis(500);
/// Longest delay before retrying a failed tick (never longer than the analysis interval).
const MAX_RETRY: Duration = Duration::from_secs(5);

/// When to retry after the `failures`-th failed tick in a row (an action's API call failed): a
/// capped exponential backoff (0.5 s, 1 s, 2 s, … up to [`MAX_RETRY`] or the interval) minus a
/// random jitter of up to 20 %, so canaries that failed together do not retry together.
pub fn retry_delay(failures: u32, interval: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = MIN_REQUEUE
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(MAX_RETRY)
        .min(interval.max(MIN_REQUEUE));
    // RandomState is seeded afresh for each instance: a cheap source of jitter.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let jitter = base.mul_f64((random % 1000) as f64 / 1000.0 * 0.2);
    base - jitter
}

/// One tick, from the actor itself.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Tick {
    seq: u64,
}

pub struct CanaryActor {
    key: CanaryKey,
    env: Env,
    canary: Arc<Canary>,
    conflict: Option<String>,
    status: CanaryStatus,
    supervisor: Option<Recipient<CanaryStopped>>,
    incarnation: u64,
    /// Only the Tick carrying this number runs; older scheduled ones are ignored.
    seq: u64,
    timer: Option<SpawnHandle>,
    running: bool,
    poke_pending: bool,
    /// Re-tick right after the running one (the spec changed meanwhile).
    retick: bool,
    fresh_reads: bool,
    /// How far this canary's own fresh reads of its workloads got; see [`WorkloadFloors`].
    floors: WorkloadFloors,
    /// The target revision the last tick observed.
    last_revision: Option<String>,
    crashed: bool,
    /// Waiting in the rollout slot queue.
    queued_for_slot: bool,
    /// Ticks in a row whose actions failed (for the retry backoff).
    failed_ticks: u32,
    /// Cancelled when this process stops leading: the running tick is dropped, the actor stops.
    term: Option<CancellationToken>,
}

impl CanaryActor {
    pub fn new(
        canary: Arc<Canary>,
        conflict: Option<String>,
        env: Env,
        supervisor: Option<Recipient<CanaryStopped>>,
        incarnation: u64,
    ) -> Self {
        let key = CanaryKey::new(canary.namespace().unwrap_or_default(), canary.name_any());
        let status = status_from_crd(canary.status.as_ref());
        Self {
            key,
            env,
            canary,
            conflict,
            status,
            supervisor,
            incarnation,
            seq: 0,
            timer: None,
            running: false,
            poke_pending: false,
            retick: false,
            fresh_reads: false,
            floors: WorkloadFloors::default(),
            last_revision: None,
            crashed: false,
            queued_for_slot: false,
            failed_ticks: 0,
            term: None,
        }
    }

    /// Stops the actor, dropping a running tick, when `term` is cancelled.
    pub fn stop_on(mut self, term: CancellationToken) -> Self {
        self.term = Some(term);
        self
    }

    fn schedule(&mut self, ctx: &mut Context<Self>, delay: Duration) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        self.seq += 1;
        self.timer = Some(ctx.notify_later(Tick { seq: self.seq }, delay));
    }

    /// Would a tick now do something the cadence should not wait for?
    fn poke_matters(&self) -> bool {
        let Ok(spec) = canary_spec_with(&self.canary, self.env.settings.validation()) else {
            return false;
        };
        if !self.status.is_initialized() {
            return true;
        }
        let workloads = Workloads::from_cache(&self.env.caches, &spec);
        let config_tracking = self.env.settings.config_tracking;
        match observe_target(&self.env.caches, &spec, &workloads, config_tracking, now()) {
            Observed::Found(target) => self.last_revision.as_deref() != Some(&target.revision),
            Observed::Missing | Observed::Error(_) => false,
        }
    }

    fn finish_tick(&mut self, out: TickOutput, ctx: &mut Context<Self>) {
        self.running = false;
        if let Some(written) = out.written {
            self.canary = Arc::new(written);
            self.status = status_from_crd(self.canary.status.as_ref());
        } else if let Some(fresh) = out.fresh.filter(|f| !is_older(f, &self.canary)) {
            self.canary = Arc::new(fresh);
            self.status = status_from_crd(self.canary.status.as_ref());
        }
        // A tick that could not read its workloads fresh reads them fresh again next time.
        self.fresh_reads = out.wrote_workloads || (self.fresh_reads && out.floors.is_none());
        if let Some(floors) = out.floors {
            self.floors = floors;
        }
        if out.revision.is_some() {
            self.last_revision = out.revision;
        }
        after_tick(
            self.env.slots.as_ref(),
            &self.key,
            out.slot,
            self.status.phase.holds_rollout_slot(),
            &mut self.queued_for_slot,
        );
        let poked = std::mem::take(&mut self.poke_pending) && self.poke_matters();
        let next = if out.failed {
            self.failed_ticks = self.failed_ticks.saturating_add(1);
            retry_delay(self.failed_ticks, out.requeue_after)
        } else {
            self.failed_ticks = 0;
            out.requeue_after.max(MIN_REQUEUE)
        };
        if std::mem::take(&mut self.retick) || poked {
            self.schedule(ctx, Duration::ZERO);
        } else {
            self.schedule(ctx, next);
        }
    }
}

impl Actor for CanaryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.term.as_ref().is_some_and(|t| t.is_cancelled()) {
            ctx.stop();
            return;
        }
        // Timers vanish on restart, so the first tick is armed here.
        self.schedule(ctx, Duration::ZERO);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(supervisor) = &self.supervisor {
            supervisor.do_send(CanaryStopped {
                key: self.key.clone(),
                incarnation: self.incarnation,
                crashed: self.crashed,
            });
        }
    }
}

impl Handler<Tick> for CanaryActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Tick, _: &mut Self::Context) -> Self::Result {
        if msg.seq != self.seq || self.running {
            return AtomicResponse::new(Box::pin(actix::fut::ready(())));
        }
        self.running = true;
        self.timer = None;
        let input = TickInput {
            key: self.key.clone(),
            canary: self.canary.clone(),
            conflict: self.conflict.clone(),
            status: self.status.clone(),
            fresh_reads: self.fresh_reads,
            floors: self.floors,
        };
        let span = info_span!("canary", canary = %self.key);
        let tick = run_tick(self.env.clone(), input).instrument(span);
        let guarded = AssertUnwindSafe(tick).catch_unwind();
        let term = self.term.clone();
        let cancellable = async move {
            match term {
                Some(term) => tokio::select! {
                    // A cancelled term never starts a tick.
                    biased;
                    _ = term.cancelled() => None,
                    result = guarded => Some(result),
                },
                None => Some(guarded.await),
            }
        };
        AtomicResponse::new(Box::pin(cancellable.into_actor(self).map(
            |result, act, ctx| match result {
                None => {
                    debug!(msg = "tick cancelled: no longer the leader", canary = %act.key);
                    ctx.stop();
                }
                Some(Ok(out)) => act.finish_tick(out, ctx),
                Some(Err(_)) => {
                    error!(msg = "canary tick panicked; restarting its actor from .status", canary = %act.key);
                    act.crashed = true;
                    ctx.stop();
                }
            },
        )))
    }
}

impl Handler<RolloutSlotFreed> for CanaryActor {
    type Result = ();
    fn handle(&mut self, _: RolloutSlotFreed, ctx: &mut Self::Context) {
        if self.running {
            self.retick = true;
        } else {
            self.schedule(ctx, Duration::ZERO);
        }
    }
}

impl Handler<Poke> for CanaryActor {
    type Result = ();
    fn handle(&mut self, _: Poke, ctx: &mut Self::Context) {
        if self.running {
            self.poke_pending = true;
        } else if self.poke_matters() {
            self.schedule(ctx, Duration::ZERO);
        }
    }
}

/// `resourceVersion`s compared as numbers when both are (etcd's and the testbed's are), so an
/// object from a lagging watch never replaces the one this actor just wrote.
fn is_older(candidate: &Canary, current: &Canary) -> bool {
    match (
        candidate
            .resource_version()
            .and_then(|v| v.parse::<u64>().ok()),
        current
            .resource_version()
            .and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

impl Handler<SpecChanged> for CanaryActor {
    type Result = ();
    fn handle(&mut self, msg: SpecChanged, ctx: &mut Self::Context) {
        let conflict_changed = msg.conflict != self.conflict;
        self.conflict = msg.conflict;
        if is_older(&msg.canary, &self.canary) {
            if conflict_changed && !self.running {
                self.schedule(ctx, Duration::ZERO);
            }
            return;
        }
        let spec_changed = msg.canary.spec != self.canary.spec
            || msg.canary.metadata.deletion_timestamp != self.canary.metadata.deletion_timestamp
            || conflict_changed;
        self.canary = msg.canary;
        self.status = status_from_crd(self.canary.status.as_ref());
        if spec_changed {
            if self.running {
                self.retick = true;
            } else {
                self.schedule(ctx, Duration::ZERO);
            }
        }
    }
}

impl Handler<StopCanary> for CanaryActor {
    type Result = ();
    fn handle(&mut self, _: StopCanary, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

// ------------------------------------------------------------------------------------------------
// The tick itself (async, owns its inputs).
// ------------------------------------------------------------------------------------------------

struct TickInput {
    key: CanaryKey,
    canary: Arc<Canary>,
    conflict: Option<String>,
    status: CanaryStatus,
    fresh_reads: bool,
    floors: WorkloadFloors,
}

/// Read-your-writes across ticks. After this canary writes its target or primary, the next tick
/// reads both from the API server, and the resourceVersions it sees become floors: until the
/// reflector cache shows an object at least that new, later ticks keep reading it fresh. So a
/// lagging watch (cut, relisting, compacted) never shows a tick the world before its own scale-up
/// or promotion — a canary at zero replicas, say, passing for a healthy one. Versions that are not
/// numbers (etcd's and the testbed's are) cannot be compared and set no floor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WorkloadFloors {
    target: Option<u64>,
    primary: Option<u64>,
}

fn resource_version(d: &Deployment) -> Option<u64> {
    d.resource_version().and_then(|v| v.parse().ok())
}

impl WorkloadFloors {
    fn of(workloads: &Workloads) -> Self {
        Self {
            target: workloads.target.as_deref().and_then(resource_version),
            primary: workloads.primary.as_deref().and_then(resource_version),
        }
    }

    /// Is the cached view older than what this canary already read fresh?
    fn cache_is_behind(&self, cached: &Workloads) -> bool {
        let behind = |floor: Option<u64>, cached: &Option<Arc<Deployment>>| match floor {
            None => false,
            Some(floor) => cached
                .as_deref()
                .and_then(resource_version)
                .is_none_or(|rv| rv < floor),
        };
        behind(self.target, &cached.target) || behind(self.primary, &cached.primary)
    }
}

struct TickOutput {
    /// An action failed: retry with backoff instead of waiting the interval.
    failed: bool,
    written: Option<Canary>,
    /// The object re-read after a conflicting write (nothing was written).
    fresh: Option<Canary>,
    wrote_workloads: bool,
    revision: Option<String>,
    requeue_after: Duration,
    /// Set when this tick read its workloads from the API server.
    floors: Option<WorkloadFloors>,
    /// The rollout slot answer this tick got, if it asked.
    slot: Option<flagger_rollout::RolloutSlot>,
}

impl TickOutput {
    /// A tick that wrote nothing and learnt nothing.
    fn nothing(failed: bool, requeue_after: Duration) -> Self {
        Self {
            failed,
            written: None,
            fresh: None,
            wrote_workloads: false,
            revision: None,
            requeue_after,
            floors: None,
            slot: None,
        }
    }
}

fn now() -> Timestamp {
    Timestamp::from_unix_millis(jiff::Timestamp::now().as_millisecond())
}

/// The spec, or why the canary cannot run (including a second Canary on the same target).
fn validated(input: &TickInput, settings: &Settings) -> Result<CanarySpec, InvalidSpec> {
    let spec = canary_spec_with(&input.canary, settings.validation());
    match (&input.conflict, spec) {
        (None, spec) => spec,
        (Some(conflict), Ok(_)) => Err(InvalidSpec {
            name: input.key.name.clone(),
            namespace: input.key.namespace.clone(),
            errors: vec![SpecError {
                field: "spec.targetRef.name".to_owned(),
                problem: conflict.clone(),
            }],
        }),
        (Some(conflict), Err(mut invalid)) => {
            invalid.errors.insert(
                0,
                SpecError {
                    field: "spec.targetRef.name".to_owned(),
                    problem: conflict.clone(),
                },
            );
            Err(invalid)
        }
    }
}

async fn read_fresh(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<Deployment>>, kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(name).await?.map(Arc::new))
}

/// The workloads from the API server; an error is not "missing" (that would re-create or
/// mis-route), it fails the tick.
async fn read_workloads_fresh(
    client: &Client,
    spec: &CanarySpec,
) -> Result<Workloads, kube::Error> {
    Ok(Workloads {
        target: read_fresh(client, &spec.namespace, &spec.target_ref.name).await?,
        primary: read_fresh(client, &spec.namespace, &spec.primary_name()).await?,
    })
}

async fn run_tick(env: Env, input: TickInput) -> TickOutput {
    #[cfg(feature = "fault-injection")]
    crate::fault::panic_if_asked(&input.canary);
    let started = Instant::now();
    let spec = match validated(&input, &env.settings) {
        Ok(spec) => spec,
        Err(invalid) => return invalid_tick(&env, &input, &invalid).await,
    };
    let deleting = input.canary.metadata.deletion_timestamp.is_some();
    let has_finalizer = input.canary.finalizers().iter().any(|f| f == FINALIZER);
    if !deleting && spec.revert_on_deletion != has_finalizer {
        let _ = env
            .ports
            .set_finalizer
            .send(SetFinalizer {
                canary: input.canary.clone(),
                present: spec.revert_on_deletion,
            })
            .await;
    }
    if deleting && !has_finalizer {
        // Nothing to do: the object goes away and the supervisor stops this actor.
        return TickOutput::nothing(false, spec.analysis.interval);
    }

    let now = now();
    let cached = Workloads::from_cache(&env.caches, &spec);
    let (workloads, floors) = match &env.client {
        Some(client) if input.fresh_reads || input.floors.cache_is_behind(&cached) => {
            match read_workloads_fresh(client, &spec).await {
                Ok(fresh) => {
                    let floors = WorkloadFloors::of(&fresh);
                    (fresh, Some(floors))
                }
                Err(error) => {
                    warn!(msg = "reading the workloads failed; retrying", error = %error);
                    return TickOutput::nothing(true, spec.analysis.interval);
                }
            }
        }
        _ => (cached, None),
    };
    let mut target = observe_target(
        &env.caches,
        &spec,
        &workloads,
        env.settings.config_tracking,
        now,
    );
    let primary = observe_primary(&env.caches, &spec, &workloads, now);
    let canary_ref = match workloads
        .target
        .as_deref()
        .map(|d| SelectorLabel::of_deployment(d, &env.settings.selector_labels))
    {
        Some(Ok(selector)) => CanaryRef::new(&input.canary, spec.clone(), selector).map(Arc::new),
        Some(Err(missing)) => {
            target = Observed::Error(missing.to_string());
            None
        }
        None => None,
    };
    let routes = match &canary_ref {
        Some(canary) => match env
            .ports
            .get_routes
            .send(GetRoutes {
                canary: canary.clone(),
            })
            .await
        {
            Ok(Ok(Some(routes))) => Observed::Found(routes),
            Ok(Ok(None)) => Observed::Missing,
            Ok(Err(e)) => Observed::Error(e.to_string()),
            Err(e) => Observed::Error(format!("router actor unavailable: {e}")),
        },
        None => Observed::Missing,
    };
    let revision = match &target {
        Observed::Found(t) => Some(t.revision.clone()),
        _ => None,
    };
    let current_routes = match &routes {
        Observed::Found(r) => Some(*r),
        _ => None,
    };
    let mut obs = Observations::new(now, target, primary, routes);
    let mut slot = None;

    let decision = if deleting {
        finalize(&spec, &input.status, &obs)
    } else {
        loop {
            match decide(&spec, &input.status, &obs) {
                Outcome::Decided(d) => break d,
                Outcome::Gather(Gather::Hooks {
                    hook_type,
                    phase,
                    checksum,
                }) => {
                    let outcomes =
                        run_hooks(&env.ports, &input.key, &spec, hook_type, phase, &checksum).await;
                    obs.hooks.insert(hook_type, outcomes);
                }
                Outcome::Gather(Gather::Metrics) => {
                    let results = run_metrics(
                        &env.ports,
                        &env.caches,
                        &input.key,
                        &spec,
                        &env.settings.metrics_server,
                    )
                    .await;
                    record_metric_values(&env.telemetry, &spec, &results);
                    obs.metrics = Some(results);
                }
                Outcome::Gather(Gather::RolloutSlot) => {
                    let answer = request_slot(env.slots.as_ref(), &input.key).await;
                    obs.rollout_slot = Some(answer);
                    slot = Some(answer);
                }
                Outcome::Gather(Gather::MetricProviders) => {
                    obs.metric_providers = Some(
                        check_providers(
                            &env.ports,
                            &env.caches,
                            &input.key,
                            &spec,
                            &env.settings.metrics_server,
                        )
                        .await,
                    );
                }
            }
        }
    };
    debug!(msg = "decided", phase = %decision.next_state.phase, actions = decision.actions.len());

    let checksum = revision
        .clone()
        .unwrap_or_else(|| input.status.last_applied_spec.clone());
    let occurrence = notification_occurrence(&checksum, &input.status);
    let target_info = Target {
        key: &input.key,
        canary: &input.canary,
        spec: &spec,
        canary_ref: canary_ref.as_ref(),
        phase: decision.next_state.phase,
        checksum: &checksum,
        occurrence: &occurrence,
    };
    let executed = execute(&env.ports, &env.caches, &target_info, &decision).await;
    record_telemetry(
        &env.telemetry,
        &spec,
        &input.status,
        &decision,
        &executed,
        current_routes,
    );
    env.telemetry.observe_tick(
        &spec.target_ref.name,
        &spec.namespace,
        started.elapsed().as_secs_f64(),
    );
    // A conflict decides again from the fresh object (at most every MIN_REQUEUE); a failure is
    // retried with backoff (see `finish_tick`).
    let requeue_after = if executed.conflict.is_some() {
        Duration::ZERO
    } else {
        decision.requeue_after
    };
    TickOutput {
        failed: executed.failed.is_some(),
        written: executed.written,
        fresh: executed.conflict.and_then(|c| c.fresh),
        wrote_workloads: executed.wrote_workloads,
        revision,
        requeue_after,
        floors,
        slot,
    }
}

/// An invalid spec: the Warning event only when the `Valid` condition changes (not every tick).
async fn invalid_tick(env: &Env, input: &TickInput, invalid: &InvalidSpec) -> TickOutput {
    let obs = Observations::new(
        now(),
        Observed::Missing,
        Observed::Missing,
        Observed::Missing,
    );
    let decision = decide_invalid(invalid, &input.status, &obs);
    debug!(msg = "spec invalid, nothing to do until it is fixed", error = %invalid);
    let first_report = decision
        .actions
        .iter()
        .any(|a| matches!(a, flagger_rollout::Action::WriteStatus(_)));
    let target_name = input
        .canary
        .spec
        .target_ref
        .as_ref()
        .and_then(|t| t.name.clone())
        .unwrap_or_else(|| input.key.name.clone());
    let (mut written, mut fresh) = (None, None);
    for action in &decision.actions {
        match action {
            flagger_rollout::Action::Event {
                event_type,
                message,
            } if first_report => {
                // No valid spec to take event webhooks from: only log and record.
                match event_type {
                    flagger_rollout::EventType::Normal => tracing::info!(msg = %message),
                    flagger_rollout::EventType::Warning => tracing::warn!(msg = %message),
                }
                env.ports
                    .record_event
                    .do_send(crate::messages::RecordEvent {
                        canary: input.canary.clone(),
                        event_type: *event_type,
                        message: message.clone(),
                    });
            }
            flagger_rollout::Action::WriteStatus(status) => {
                match env
                    .ports
                    .write_status
                    .send(crate::messages::WriteCanaryStatus {
                        canary: input.canary.clone(),
                        status: status.clone(),
                    })
                    .await
                {
                    Ok(Ok(c)) => written = Some(c),
                    Ok(Err(crate::status::StatusError::Stale { fresh: f, .. })) => {
                        debug!(msg = "the canary changed concurrently; deciding again");
                        fresh = f.map(|c| *c);
                    }
                    Ok(Err(e)) => tracing::warn!(msg = "writing status failed", error = %e),
                    Err(e) => tracing::warn!(msg = "status writer unavailable", error = %e),
                }
            }
            _ => {}
        }
    }
    // Nothing rolls out while the spec is invalid: idle, not failed (see the module docs).
    env.telemetry
        .set_status(&target_name, &input.key.namespace, StatusGauge::Settled);
    TickOutput {
        failed: false,
        written,
        fresh,
        wrote_workloads: false,
        revision: None,
        requeue_after: decision.requeue_after,
        floors: None,
        slot: None,
    }
}

/// `flagger_canary_metric_analysis`: each value as checked, except the builtin request
/// duration, which the analysis reads in milliseconds and upstream exports in seconds.
fn record_metric_values(telemetry: &Telemetry, spec: &CanarySpec, results: &[MetricOutcome]) {
    for r in results {
        let MetricValue::Value(v) = r.value else {
            continue;
        };
        let is_duration = spec.analysis.metrics.iter().any(|c| {
            c.name == r.name && c.source == MetricSource::Builtin(BuiltinMetric::RequestDuration)
        });
        let exported = if is_duration { v / 1000.0 } else { v };
        telemetry.set_metric(&spec.target_ref.name, &spec.namespace, &r.name, exported);
    }
}

fn gauge(phase: Phase) -> StatusGauge {
    match phase.status_metric() {
        0 => StatusGauge::Progressing,
        2 => StatusGauge::Failed,
        _ => StatusGauge::Settled,
    }
}

fn record_telemetry(
    telemetry: &Telemetry,
    spec: &CanarySpec,
    prev: &CanaryStatus,
    decision: &Decision,
    executed: &Executed,
    routes: Option<Routes>,
) {
    let (target, namespace) = (&spec.target_ref.name, &spec.namespace);
    let persisted = executed.written.is_some();
    let phase = if persisted {
        decision.next_state.phase
    } else {
        prev.phase
    };
    telemetry.set_status(target, namespace, gauge(phase));
    if let Some(w) = executed.weights.or(routes.map(|r| r.weights)) {
        telemetry.set_weights(target, namespace, w.primary(), w.canary());
    }
    if persisted && prev.phase != phase {
        let strategy = spec.analysis.strategy.label();
        match phase {
            Phase::Succeeded => {
                telemetry.record_success(target, namespace, strategy, spec.skip_analysis)
            }
            Phase::Failed => telemetry.record_failure(target, namespace, strategy),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_ticks_retry_with_capped_exponential_backoff_and_jitter() {
        let minute = Duration::from_secs(60);
        for (failures, base_ms) in [
            (1, 500),
            (2, 1000),
            (3, 2000),
            (4, 4000),
            (5, 5000),
            (30, 5000),
        ] {
            let base = Duration::from_millis(base_ms);
            let delays: Vec<Duration> = (0..50).map(|_| retry_delay(failures, minute)).collect();
            for d in &delays {
                assert!(*d <= base && *d >= base.mul_f64(0.8), "{failures}: {d:?}");
            }
            let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
            assert!(distinct.len() > 10, "jittered: {delays:?}");
        }
        // Never longer than the interval (but not below the minimum requeue).
        assert!(retry_delay(10, Duration::from_secs(1)) <= Duration::from_secs(1));
        assert!(retry_delay(10, Duration::from_millis(100)) <= MIN_REQUEUE);
    }
}
