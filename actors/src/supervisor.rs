//! The CanarySupervisor: one per operator. Starts, updates, stops and restarts the CanaryActors,
//! and routes dependency changes to the canaries that use them.
//!
//! Contract:
//! - One CanaryActor per Canary object; `CanaryApplied` starts it or forwards `SpecChanged`,
//!   `CanaryDeleted` stops it and drops its telemetry series. A CanaryActor that stopped because
//!   its tick panicked is started again from the Canary's `.status` (its actor state is only a
//!   cache of it), after a delay that doubles with each crash in a row (0.2 s, 0.4 s, … capped at
//!   [`MAX_RESTART_DELAY`]; the count resets after a minute without a crash), so a tick that
//!   always panics cannot spin the arbiter that the other canaries' actors share.
//! - Index target → canaries: a Deployment change pokes the canaries whose target (or whose
//!   `-primary`) it is; an HPA change pokes the canaries of the Deployment it scales; a ConfigMap
//!   or Secret change pokes the canaries whose target's pod spec references it. The actor decides
//!   whether a poke is worth a tick now (see [`crate::canary`]).
//! - Two Canaries on one target: the oldest (creationTimestamp, then name) owns it; the others
//!   run in "conflict" mode (Warning event, `Valid=False` naming `spec.targetRef.name`, no object
//!   touched) until the owner goes away.
//! - With `--max-concurrent-canaries` it owns the [`SlotTable`]: every Canary it hears about
//!   updates the count from `.status.phase` (seeded from the synced cache when it starts), and
//!   canaries waiting for a slot get [`RolloutSlotFreed`] when one frees up.
//! - Leadership ([`LeadershipChanged`]): CanaryActors run only while this process leads. A
//!   supervisor built [`CanarySupervisor::following`] starts none until `leader: true`, then starts
//!   one per Canary in the cache (oldest first, so a shared target keeps its owner), each resuming
//!   from `.status`. On `leader: false` it cancels every running tick at once (through the term's
//!   cancellation token: a tick holds its actor's mailbox, so a message alone would wait for it),
//!   stops every CanaryActor and ignores Canary events until leader again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use kube::ResourceExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cache::{DependencyKind, lookup};
use crate::canary::{CanaryActor, Env};
use crate::crd::Canary;
use crate::crd::convert::status_from_crd;
use crate::key::CanaryKey;
use crate::messages::{
    CanariesResynced, CanaryApplied, CanaryDeleted, CanaryStopped, DependenciesResynced,
    DependencyChanged, LeadershipChanged, Poke, ReleaseRolloutSlot, RequestRolloutSlot,
    RolloutSlotFreed, SpecChanged, StopCanary,
};
use crate::slots::{RolloutSlots, SlotTable};
use crate::workload::build::config_refs;

struct Child {
    addr: Addr<CanaryActor>,
    canary: Arc<Canary>,
    incarnation: u64,
    conflict: Option<String>,
    /// Panics in a row (reset after [`CRASH_RESET`] without one) and when the last one was.
    crashes: u32,
    last_crash: Option<Instant>,
}

/// Delay before restarting an actor after its first panic; doubled for each further one.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(200);
/// Longest delay before restarting a crashed actor.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);
/// A crash this long after the previous one counts as the first again.
const CRASH_RESET: Duration = Duration::from_secs(60);

/// Delay before the restart that follows the `crashes`-th panic in a row (1-based).
fn restart_delay(crashes: u32) -> Duration {
    FIRST_RESTART_DELAY
        .saturating_mul(2u32.saturating_pow(crashes.saturating_sub(1)))
        .min(MAX_RESTART_DELAY)
}

/// (namespace, target Deployment name)
type TargetKey = (String, String);

pub struct CanarySupervisor {
    env: Env,
    children: HashMap<CanaryKey, Child>,
    targets: HashMap<TargetKey, BTreeSet<CanaryKey>>,
    next_incarnation: u64,
    /// Namespaces that had canaries, so their `flagger_canary_total` drops to 0 when emptied.
    namespaces: BTreeSet<String>,
    /// `--max-concurrent-canaries` accounting; `None` without a limit.
    slots: Option<SlotTable>,
    /// CanaryActors run only while leading.
    leading: bool,
    /// Cancelled when leadership ends: stops the running ticks of this term's actors.
    term: CancellationToken,
}

impl CanarySupervisor {
    pub fn new(env: Env) -> Self {
        let slots = env.settings.max_concurrent_canaries.map(SlotTable::new);
        Self {
            env,
            children: HashMap::new(),
            targets: HashMap::new(),
            next_incarnation: 0,
            namespaces: BTreeSet::new(),
            slots,
            leading: true,
            term: CancellationToken::new(),
        }
    }

    fn phase_of(canary: &Canary) -> flagger_rollout::Phase {
        status_from_crd(canary.status.as_ref()).phase
    }

    /// Tells the canaries a freed slot is waiting for to tick now.
    fn wake(&self, keys: Vec<CanaryKey>) {
        for key in keys {
            if let Some(child) = self.children.get(&key) {
                child.addr.do_send(RolloutSlotFreed);
            }
        }
    }

    fn forget_slot(&mut self, key: &CanaryKey) {
        if let Some(slots) = &mut self.slots {
            let wake = slots.forget(key);
            self.wake(wake);
        }
    }

    /// Starts as a follower (leader election): no CanaryActor until `LeadershipChanged{leader: true}`.
    pub fn following(mut self) -> Self {
        self.leading = false;
        self
    }

    fn key_of(canary: &Canary) -> CanaryKey {
        CanaryKey::new(canary.namespace().unwrap_or_default(), canary.name_any())
    }

    fn target_of(canary: &Canary) -> Option<TargetKey> {
        let name = canary.spec.target_ref.as_ref()?.name.clone()?;
        Some((canary.namespace().unwrap_or_default(), name))
    }

    fn spawn(
        &mut self,
        canary: Arc<Canary>,
        conflict: Option<String>,
        ctx: &mut Context<Self>,
    ) -> Child {
        self.next_incarnation += 1;
        let incarnation = self.next_incarnation;
        let addr = CanaryActor::new(
            canary.clone(),
            conflict.clone(),
            self.env.clone(),
            Some(ctx.address().recipient()),
            incarnation,
        )
        .stop_on(self.term.clone())
        .start();
        Child {
            addr,
            canary,
            incarnation,
            conflict,
            crashes: 0,
            last_crash: None,
        }
    }

    /// The conflict text of each canary on `target` (None for the owner). `incoming` is a
    /// Canary on `target` not yet among the children (being started): it competes for
    /// ownership like the others, so an older Canary heard of after a younger one still owns
    /// the target.
    fn conflicts(
        &self,
        target: &TargetKey,
        incoming: Option<(&CanaryKey, &Canary)>,
    ) -> BTreeMap<CanaryKey, Option<String>> {
        let Some(keys) = self.targets.get(target) else {
            return BTreeMap::new();
        };
        let owner = keys
            .iter()
            .filter_map(|k| match incoming {
                Some((ik, ic)) if ik == k => Some((k, ic)),
                _ => self.children.get(k).map(|c| (k, &*c.canary)),
            })
            .min_by(|(ka, a), (kb, b)| Self::age_order(a, ka).cmp(&Self::age_order(b, kb)))
            .map(|(k, _)| k.clone());
        keys.iter()
            .map(|k| {
                let conflict = match &owner {
                    Some(o) if o != k => Some(format!(
                        "Deployment {}.{} is already the target of canary {}; two canaries cannot share a target",
                        target.1, target.0, o
                    )),
                    _ => None,
                };
                (k.clone(), conflict)
            })
            .collect()
    }

    /// Oldest first: creationTimestamp, then namespace/name.
    fn age_order<'a>(
        canary: &Canary,
        key: &'a CanaryKey,
    ) -> (Option<jiff::Timestamp>, &'a CanaryKey) {
        (
            canary.metadata.creation_timestamp.as_ref().map(|t| t.0),
            key,
        )
    }

    /// Tells every canary on `target` whose conflict state changed.
    fn refresh_conflicts(&mut self, target: &TargetKey, skip: Option<&CanaryKey>) {
        for (key, conflict) in self.conflicts(target, None) {
            if Some(&key) == skip {
                continue;
            }
            if let Some(child) = self.children.get_mut(&key)
                && child.conflict != conflict
            {
                if conflict.is_some() {
                    warn!(msg = "Bad things will happen! Found more than one canary with the same target", canary = %key, target = %format!("{}.{}", target.1, target.0));
                }
                child.conflict = conflict.clone();
                child.addr.do_send(SpecChanged {
                    canary: child.canary.clone(),
                    conflict,
                });
            }
        }
    }

    fn update_totals(&mut self) {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for key in self.children.keys() {
            *counts.entry(key.namespace.clone()).or_default() += 1;
        }
        for ns in counts.keys() {
            self.namespaces.insert(ns.clone());
        }
        for ns in &self.namespaces {
            self.env
                .telemetry
                .set_canary_total(ns, counts.get(ns).copied().unwrap_or(0));
        }
    }

    fn remove(&mut self, key: &CanaryKey) {
        let Some(child) = self.children.remove(key) else {
            return;
        };
        info!(msg = format!("Deleting {key} from cache"), canary = %key);
        child.addr.do_send(StopCanary);
        self.forget_slot(key);
        if let Some(target) = Self::target_of(&child.canary) {
            if let Some(set) = self.targets.get_mut(&target) {
                set.remove(key);
                if set.is_empty() {
                    self.targets.remove(&target);
                }
            }
            self.env.telemetry.forget_canary(&target.1, &target.0);
            self.refresh_conflicts(&target, None);
        }
        self.update_totals();
    }

    fn poke_target(&self, target: &TargetKey) {
        for key in self.targets.get(target).into_iter().flatten() {
            if let Some(child) = self.children.get(key) {
                child.addr.do_send(Poke);
            }
        }
    }

    /// Canaries whose target references the ConfigMap/Secret `namespace/name`.
    fn poke_config_users(&self, kind: DependencyKind, namespace: &str, name: &str) {
        for target in self.targets.keys().filter(|(ns, _)| ns == namespace) {
            let Some(d) = lookup(&self.env.caches.deployments, namespace, &target.1) else {
                continue;
            };
            let uses =
                d.spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .is_some_and(|pod| {
                        let refs = config_refs(pod);
                        match kind {
                            DependencyKind::ConfigMap => refs.config_maps.contains_key(name),
                            DependencyKind::Secret => refs.secrets.contains_key(name),
                            DependencyKind::Deployment
                            | DependencyKind::HorizontalPodAutoscaler => false,
                        }
                    });
            if uses {
                self.poke_target(target);
            }
        }
    }
}

impl Actor for CanarySupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(slots) = &mut self.slots else {
            return;
        };
        // Runs in flight before a restart hold their slots: count them from the synced cache
        // before any canary can ask.
        let now = Instant::now();
        for canary in self.env.caches.canaries.state() {
            slots.observe(&Self::key_of(&canary), Self::phase_of(&canary), now);
        }
        self.env.slots = Some(RolloutSlots {
            limit: slots.limit(),
            request: ctx.address().recipient(),
            release: ctx.address().recipient(),
        });
    }
}

impl Handler<RequestRolloutSlot> for CanarySupervisor {
    type Result = MessageResult<RequestRolloutSlot>;
    fn handle(&mut self, msg: RequestRolloutSlot, _: &mut Self::Context) -> Self::Result {
        MessageResult(match &mut self.slots {
            Some(slots) => slots.request(&msg.key, Instant::now()),
            None => flagger_rollout::RolloutSlot::Granted,
        })
    }
}

impl Handler<ReleaseRolloutSlot> for CanarySupervisor {
    type Result = ();
    fn handle(&mut self, msg: ReleaseRolloutSlot, _: &mut Self::Context) {
        if let Some(slots) = &mut self.slots {
            let wake = slots.release(&msg.key);
            self.wake(wake);
        }
    }
}

impl Handler<CanaryApplied> for CanarySupervisor {
    type Result = ();
    fn handle(&mut self, msg: CanaryApplied, ctx: &mut Self::Context) {
        if !self.leading {
            return;
        }
        let canary = msg.0;
        let key = Self::key_of(&canary);
        if let Some(slots) = &mut self.slots {
            let wake = slots.observe(&key, Self::phase_of(&canary), Instant::now());
            self.wake(wake);
        }
        let new_target = Self::target_of(&canary);
        let old_target = self
            .children
            .get(&key)
            .and_then(|c| Self::target_of(&c.canary));
        if old_target != new_target
            && let Some(old) = &old_target
        {
            if let Some(set) = self.targets.get_mut(old) {
                set.remove(&key);
                if set.is_empty() {
                    self.targets.remove(old);
                }
            }
            self.refresh_conflicts(old, None);
        }
        if let Some(t) = &new_target {
            self.targets
                .entry(t.clone())
                .or_default()
                .insert(key.clone());
        }
        let conflict = new_target
            .as_ref()
            .and_then(|t| self.conflicts(t, Some((&key, &canary))).remove(&key))
            .flatten();
        match self.children.get_mut(&key) {
            Some(child) => {
                child.canary = canary.clone();
                child.conflict = conflict.clone();
                child.addr.do_send(SpecChanged { canary, conflict });
            }
            None => {
                info!(msg = format!("Synced {}/{}", key.namespace, key.name), canary = %key);
                if conflict.is_some() {
                    warn!(msg = "Bad things will happen! Found more than one canary with the same target", canary = %key);
                }
                let child = self.spawn(canary, conflict, ctx);
                self.children.insert(key.clone(), child);
                self.update_totals();
            }
        }
        if let Some(t) = &new_target {
            self.refresh_conflicts(t, Some(&key));
        }
    }
}

impl Handler<CanaryDeleted> for CanarySupervisor {
    type Result = ();
    fn handle(&mut self, msg: CanaryDeleted, _: &mut Self::Context) {
        self.remove(&msg.0);
    }
}

impl Handler<CanariesResynced> for CanarySupervisor {
    type Result = ();
    fn handle(&mut self, _: CanariesResynced, _: &mut Self::Context) {
        let gone: Vec<CanaryKey> = self
            .children
            .keys()
            .filter(|k| lookup(&self.env.caches.canaries, &k.namespace, &k.name).is_none())
            .cloned()
            .collect();
        for key in gone {
            self.remove(&key);
        }
    }
}

impl Handler<DependencyChanged> for CanarySupervisor {
    type Result = ();
    fn handle(&mut self, msg: DependencyChanged, _: &mut Self::Context) {
        let DependencyChanged {
            kind,
            namespace,
            name,
        } = msg;
        match kind {
            DependencyKind::Deployment => {
                self.poke_target(&(namespace.clone(), name.clone()));
                if let Some(target) = name.strip_suffix("-primary") {
                    self.poke_target(&(namespace, target.to_owned()));
                }
            }
            DependencyKind::HorizontalPodAutoscaler => {
                let scaled = lookup(&self.env.caches.hpas, &namespace, &name)
                    .and_then(|h| h.spec.as_ref().map(|s| s.scale_target_ref.name.clone()));
                if let Some(deployment) = scaled {
                    let target = deployment
                        .strip_suffix("-primary")
                        .unwrap_or(&deployment)
                        .to_owned();
                    self.poke_target(&(namespace, target));
                }
            }
            DependencyKind::ConfigMap | DependencyKind::Secret => {
                self.poke_config_users(kind, &namespace, &name)
            }
        }
    }
}

impl Handler<DependenciesResynced> for CanarySupervisor {
    type Result = ();
    fn handle(&mut self, _: DependenciesResynced, _: &mut Self::Context) {
        for child in self.children.values() {
            child.addr.do_send(Poke);
        }
    }
}

impl Handler<CanaryStopped> for CanarySupervisor {
    type Result = ();
    fn handle(&mut self, msg: CanaryStopped, ctx: &mut Self::Context) {
        let Some(child) = self.children.get(&msg.key) else {
            return;
        };
        if child.incarnation != msg.incarnation {
            return;
        }
        if msg.crashed {
            // The new actor asks again for a rollout slot; its status still counts if the run
            // had started.
            let now = Instant::now();
            let crashes = match child.last_crash {
                Some(at) if now.duration_since(at) < CRASH_RESET => child.crashes + 1,
                _ => 1,
            };
            self.forget_slot(&msg.key);
            let delay = restart_delay(crashes);
            warn!(
                msg = "restarting canary actor after a panic",
                canary = %msg.key,
                crashes,
                delay_ms = delay.as_millis() as u64
            );
            let (key, incarnation) = (msg.key, msg.incarnation);
            ctx.run_later(delay, move |act, ctx| {
                let Some(child) = act.children.get(&key) else {
                    return; // deleted meanwhile
                };
                if child.incarnation != incarnation {
                    return;
                }
                // Restart from the freshest object we know: its `.status` is the durable truth.
                let canary = lookup(&act.env.caches.canaries, &key.namespace, &key.name)
                    .unwrap_or_else(|| child.canary.clone());
                let conflict = child.conflict.clone();
                if let Some(slots) = &mut act.slots {
                    let wake = slots.observe(&key, Self::phase_of(&canary), Instant::now());
                    act.wake(wake);
                }
                let mut fresh = act.spawn(canary, conflict, ctx);
                fresh.crashes = crashes;
                fresh.last_crash = Some(now);
                act.children.insert(key, fresh);
            });
        } else {
            self.children.remove(&msg.key);
            self.forget_slot(&msg.key);
            self.update_totals();
        }
    }
}

impl Handler<LeadershipChanged> for CanarySupervisor {
    type Result = ();
    fn handle(&mut self, msg: LeadershipChanged, ctx: &mut Self::Context) {
        if msg.leader == self.leading {
            return;
        }
        self.leading = msg.leader;
        // The slot count of a new term comes from the cache, like at start.
        if let Some(slots) = &self.slots {
            self.slots = Some(SlotTable::new(slots.limit()));
        }
        if msg.leader {
            self.term = CancellationToken::new();
            let mut canaries = self.env.caches.canaries.state();
            canaries.sort_by_cached_key(|c| {
                let key = Self::key_of(c);
                (c.metadata.creation_timestamp.as_ref().map(|t| t.0), key)
            });
            info!(
                msg = format!("Starting {} canary actors as leader", canaries.len()),
                canaries = canaries.len()
            );
            for canary in canaries {
                self.handle(CanaryApplied(canary), ctx);
            }
        } else {
            self.term.cancel();
            info!(
                msg = format!("Stopping {} canary actors", self.children.len()),
                canaries = self.children.len()
            );
            for (_, child) in self.children.drain() {
                child.addr.do_send(StopCanary);
            }
            self.targets.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_doubles_up_to_the_cap() {
        let delays: Vec<u128> = (1..=8).map(|n| restart_delay(n).as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(restart_delay(u32::MAX), MAX_RESTART_DELAY);
    }
}
