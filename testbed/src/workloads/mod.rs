//! Workload controllers: what kube-controller-manager and the kubelet do for Deployments,
//! ReplicaSets, Pods and HorizontalPodAutoscalers, simulated over the in-memory [`Store`].
//!
//! Contract (used by `Testbed::start`): [`run`] with a [`WorkloadConfig`] runs until the
//! cancellation token fires. While it runs:
//! - every Deployment gets a ReplicaSet per pod template (`<deployment>-<pod-template-hash>`) and
//!   Pods (`<rs>-<5 chars>`) that become `Running`/`Ready` with a loopback `podIP` `ready_delay`
//!   after they are created (never Ready with template annotation
//!   `testbed.flagger.app/never-ready: "true"`); rollouts follow the Deployment's strategy and
//!   its status and conditions move as a real Deployment's do (see [`deployment`]);
//! - every HorizontalPodAutoscaler keeps its target Deployment's `spec.replicas` within
//!   `[minReplicas, maxReplicas]`, leaves a target at 0 alone, and fills its status (see [`hpa`]).
//!
//! The driver reacts to store events and to its own timers (a sorted set of deadlines), never by
//! scanning every object, and writes only what changes. Objects in a terminating namespace, or
//! being deleted, are left alone. Decisions are pure functions in the submodules; this module
//! does the I/O.

pub mod deployment;
pub mod hpa;
mod meta;
pub mod pod;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{EventType, ResourceId, Store, StoreEvent};
use meta::{controller_owner, is_deleting, name, namespace};

/// Settings of the workload controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// How long a new Pod takes to become Ready (and so how long a rollout step takes).
    pub ready_delay: Duration,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            ready_delay: Duration::from_secs(1),
        }
    }
}

/// Runs the Deployment/ReplicaSet/Pod/HPA controllers until `shutdown` is cancelled.
pub async fn run(store: Store, cfg: WorkloadConfig, shutdown: CancellationToken) {
    // Subscribe before the initial listing so no change falls between the two.
    let mut events = store.subscribe();
    let mut ctl = Controller::new(store, cfg);
    ctl.resync();
    loop {
        if ctl.dirty.is_empty() {
            let wake = ctl.timers.next();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                ev = events.recv() => match ev {
                    Ok(ev) => ctl.observe(&ev),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "workloads: event stream lagged, relisting");
                        ctl.resync();
                    }
                    Err(RecvError::Closed) => return,
                },
                () = sleep_until(wake) => {}
            }
        } else if shutdown.is_cancelled() {
            return;
        }
        loop {
            match events.try_recv() {
                Ok(ev) => ctl.observe(&ev),
                Err(TryRecvError::Lagged(_)) => ctl.resync(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        ctl.fire_timers(Instant::now());
        // Work in slices so a burst (10,000 Deployments created at once) neither starves the
        // runtime nor lets the event stream lag.
        ctl.process(256);
        tokio::task::yield_now().await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

type Key = (String, String); // (namespace, name)

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Work {
    Deployment(Key),
    Pod(Key),
    Hpa(Key),
}

/// Pending deadlines, earliest first; one per work item (the earliest wins).
#[derive(Default)]
struct Timers {
    by_time: BTreeSet<(Instant, Work)>,
    by_work: HashMap<Work, Instant>,
}

impl Timers {
    fn schedule(&mut self, work: Work, at: Instant) {
        if let Some(existing) = self.by_work.get(&work) {
            if *existing <= at {
                return;
            }
            self.by_time.remove(&(*existing, work.clone()));
        }
        self.by_time.insert((at, work.clone()));
        self.by_work.insert(work, at);
    }

    fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Work> {
        let (at, _) = self.by_time.first()?;
        if *at > now {
            return None;
        }
        let (_, work) = self.by_time.pop_first()?;
        self.by_work.remove(&work);
        Some(work)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_time.len()
    }
}

fn deployments() -> ResourceId {
    ResourceId::new("apps", "deployments")
}
fn replica_sets() -> ResourceId {
    ResourceId::new("apps", "replicasets")
}
fn pods() -> ResourceId {
    ResourceId::new("", "pods")
}
fn hpas() -> ResourceId {
    ResourceId::new("autoscaling", "horizontalpodautoscalers")
}
fn namespaces() -> ResourceId {
    ResourceId::new("", "namespaces")
}

fn key_of(obj: &Value) -> Key {
    (namespace(obj).to_owned(), name(obj).to_owned())
}

/// The name of the `kind` object controlling `obj`, if any.
fn owner_named<'a>(obj: &'a Value, kind: &str) -> Option<&'a str> {
    controller_owner(obj).and_then(|(k, n, _)| (k == kind).then_some(n))
}

/// A one-to-many index kept from events (and from our own writes, which are visible before
/// their events arrive). Entries may be stale; readers confirm them in the store.
#[derive(Default)]
struct Children {
    children: HashMap<Key, BTreeSet<String>>,
    parent: HashMap<Key, String>,
}

impl Children {
    fn set(&mut self, child: &Key, parent: Option<&str>) {
        let old = match parent {
            Some(p) => self.parent.insert(child.clone(), p.to_owned()),
            None => self.parent.remove(child),
        };
        if let Some(old) = old
            && Some(old.as_str()) != parent
        {
            let k = (child.0.clone(), old);
            if let Some(set) = self.children.get_mut(&k) {
                set.remove(&child.1);
                if set.is_empty() {
                    self.children.remove(&k);
                }
            }
        }
        if let Some(p) = parent {
            self.children
                .entry((child.0.clone(), p.to_owned()))
                .or_default()
                .insert(child.1.clone());
        }
    }

    fn parent_of(&self, child: &Key) -> Option<&String> {
        self.parent.get(child)
    }

    fn of(&self, parent: &Key) -> Vec<String> {
        self.children
            .get(parent)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn clear(&mut self) {
        self.children.clear();
        self.parent.clear();
    }
}

struct Controller {
    store: Store,
    cfg: WorkloadConfig,
    dirty: VecDeque<Work>,
    queued: HashSet<Work>,
    timers: Timers,
    /// ReplicaSets by controlling Deployment.
    replica_sets: Children,
    /// Pods by controlling ReplicaSet.
    pods: Children,
    /// HPAs by target Deployment.
    hpas: Children,
    terminating: HashSet<String>,
    /// When each Pod started, to the nanosecond (creationTimestamp has whole seconds only).
    born: HashMap<Key, Timestamp>,
    /// Precise time of each Deployment's last recorded progress (for the progress deadline).
    progress: HashMap<Key, Timestamp>,
    next_ip: u32,
    rng: StdRng,
}

impl Controller {
    fn new(store: Store, cfg: WorkloadConfig) -> Self {
        Self {
            store,
            cfg,
            dirty: VecDeque::new(),
            queued: HashSet::new(),
            timers: Timers::default(),
            replica_sets: Children::default(),
            pods: Children::default(),
            hpas: Children::default(),
            terminating: HashSet::new(),
            born: HashMap::new(),
            progress: HashMap::new(),
            next_ip: 0,
            rng: StdRng::from_os_rng(),
        }
    }

    fn enqueue(&mut self, work: Work) {
        if self.queued.insert(work.clone()) {
            self.dirty.push_back(work);
        }
    }

    fn schedule(&mut self, work: Work, at: Timestamp) {
        let now = Timestamp::now();
        let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
        // A millisecond of slack so the wall clock has passed `at` when the timer fires.
        self.timers
            .schedule(work, Instant::now() + wait + Duration::from_millis(1));
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(work) = self.timers.pop_due(now) {
            self.enqueue(work);
        }
    }

    fn process(&mut self, budget: usize) {
        for _ in 0..budget {
            let Some(work) = self.dirty.pop_front() else {
                return;
            };
            self.queued.remove(&work);
            match work {
                Work::Deployment(key) => self.reconcile_deployment(&key),
                Work::Pod(key) => self.reconcile_pod(&key),
                Work::Hpa(key) => self.reconcile_hpa(&key),
            }
        }
    }

    /// Rebuilds the indexes from a full listing and queues everything (start, or lost events).
    fn resync(&mut self) {
        self.replica_sets.clear();
        self.pods.clear();
        self.hpas.clear();
        self.terminating.clear();
        for r in [namespaces(), deployments(), replica_sets(), pods(), hpas()] {
            for obj in self.store.list(&r, None) {
                self.observe_object(&r, &obj, false);
            }
        }
    }

    fn observe(&mut self, ev: &StoreEvent) {
        let gone = matches!(ev.kind, EventType::Deleted);
        self.observe_object(&ev.resource, &ev.object, gone);
    }

    /// Updates the indexes for one object of type `r` (`gone`: it was deleted) and queues the
    /// work it affects.
    fn observe_object(&mut self, r: &ResourceId, obj: &Value, gone: bool) {
        if *r == deployments() {
            let key = key_of(obj);
            for hpa in self.hpas.of(&key) {
                self.enqueue(Work::Hpa((key.0.clone(), hpa)));
            }
            if gone {
                self.progress.remove(&key);
            } else {
                self.enqueue(Work::Deployment(key));
            }
        } else if *r == replica_sets() {
            let key = key_of(obj);
            let before = self.replica_sets.parent_of(&key).cloned();
            let owner = if gone {
                None
            } else {
                owner_named(obj, "Deployment")
            };
            self.replica_sets.set(&key, owner);
            for dep in before.into_iter().chain(owner.map(str::to_owned)) {
                self.enqueue(Work::Deployment((key.0.clone(), dep)));
            }
        } else if *r == pods() {
            let key = key_of(obj);
            let before = self.pods.parent_of(&key).cloned();
            let owner = if gone {
                None
            } else {
                owner_named(obj, "ReplicaSet")
            };
            self.pods.set(&key, owner);
            for rs in before.into_iter().chain(owner.map(str::to_owned)) {
                let rs_key = (key.0.clone(), rs);
                if let Some(dep) = self.replica_sets.parent_of(&rs_key).cloned() {
                    self.enqueue(Work::Deployment((key.0.clone(), dep)));
                }
            }
            if gone {
                self.born.remove(&key);
            } else {
                self.enqueue(Work::Pod(key));
            }
        } else if *r == hpas() {
            let key = key_of(obj);
            let target = if gone {
                None
            } else {
                hpa::target_deployment(obj)
            };
            self.hpas.set(&key, target);
            if !gone {
                self.enqueue(Work::Hpa(key));
            }
        } else if *r == namespaces() {
            let ns = name(obj).to_owned();
            let terminating =
                is_deleting(obj) || meta::str_at(obj, &["status", "phase"]) == Some("Terminating");
            if terminating && !gone {
                self.terminating.insert(ns);
            } else {
                self.terminating.remove(&ns);
            }
        }
    }

    /// Live objects of `r` named in `names` (in namespace `ns`) controlled by `owner`.
    fn controlled(
        &self,
        r: &ResourceId,
        ns: &str,
        names: Vec<String>,
        owner: &Value,
    ) -> Vec<Arc<Value>> {
        names
            .into_iter()
            .filter_map(|n| self.store.get(r, ns, &n))
            .filter(|o| deployment::controls(owner, o))
            .collect()
    }

    fn reconcile_deployment(&mut self, key: &Key) {
        let (ns, dep_name) = key;
        let Some(dep) = self.store.get(&deployments(), ns, dep_name) else {
            self.progress.remove(key);
            return;
        };
        if self.terminating.contains(ns) || is_deleting(&dep) {
            return;
        }
        // Two rounds: creating the ReplicaSet for a new template, then syncing it.
        for _ in 0..2 {
            let sets = self.controlled(&replica_sets(), ns, self.replica_sets.of(key), &dep);
            let owned_pods: Vec<Vec<Arc<Value>>> = sets
                .iter()
                .map(|rs| self.controlled(&pods(), ns, self.pods.of(&key_of(rs)), rs))
                .collect();
            let pod_refs: Vec<Vec<&Value>> = owned_pods
                .iter()
                .map(|ps| ps.iter().map(|p| &**p).collect())
                .collect();
            let owned: Vec<deployment::Owned<'_>> = sets
                .iter()
                .zip(&pod_refs)
                .map(|(rs, ps)| deployment::Owned {
                    replica_set: rs,
                    pods: ps,
                })
                .collect();
            let now = Timestamp::now();
            let hint = self.progress.get(key).copied();
            match deployment::plan(&dep, &owned, now, hint, &mut self.rng) {
                deployment::Step::CreateReplicaSet(rs) => {
                    match self.store.create(&replica_sets(), rs) {
                        Ok(created) => self
                            .replica_sets
                            .set(&key_of(&created), Some(dep_name.as_str())),
                        Err(error) => {
                            // Typically a namesake from a deleted Deployment not yet collected:
                            // its deletion event brings us back here.
                            tracing::debug!(deployment = %dep_name, namespace = %ns, %error,
                                "workloads: cannot create ReplicaSet");
                            return;
                        }
                    }
                }
                deployment::Step::Sync(plan) => {
                    self.apply(key, plan);
                    return;
                }
            }
        }
    }

    fn apply(&mut self, key: &Key, plan: deployment::Plan) {
        let (ns, dep_name) = key;
        let now = Timestamp::now();
        let mut generations: HashMap<String, i64> = HashMap::new();
        for s in &plan.scale {
            let res = self
                .store
                .modify(&replica_sets(), ns, &s.name, false, |rs| {
                    rs["spec"]["replicas"] = json!(s.replicas);
                    for (k, v) in &s.annotations {
                        if !rs["metadata"]["annotations"].is_object() {
                            rs["metadata"]["annotations"] = json!({});
                        }
                        rs["metadata"]["annotations"][k] = json!(v);
                    }
                });
            match res {
                Ok(rs) => {
                    generations.insert(s.name.clone(), meta::generation(&rs));
                }
                Err(error) => {
                    tracing::debug!(replicaset = %s.name, %error, "workloads: cannot scale");
                }
            }
        }
        for p in &plan.delete_pods {
            match self.store.delete(&pods(), ns, p) {
                Ok(_) => self.pods.set(&(ns.clone(), p.clone()), None),
                Err(error) if error.code == 404 => self.pods.set(&(ns.clone(), p.clone()), None),
                Err(error) => tracing::debug!(pod = %p, %error, "workloads: cannot delete pod"),
            }
        }
        for mut p in plan.create_pods {
            let next_ip = &mut self.next_ip;
            let (status, wake) = pod::desired_status(&p, now, now, self.cfg.ready_delay, || {
                let ip = pod::loopback_ip(*next_ip);
                *next_ip = next_ip.wrapping_add(1);
                ip
            });
            p["status"] = status;
            let pod_key = key_of(&p);
            let owner = owner_named(&p, "ReplicaSet").map(str::to_owned);
            match self.store.create(&pods(), p) {
                Ok(_) => {
                    self.pods.set(&pod_key, owner.as_deref());
                    self.born.insert(pod_key.clone(), now);
                    if let Some(wake) = wake {
                        self.schedule(Work::Pod(pod_key), wake);
                    }
                }
                Err(error) => tracing::debug!(%error, "workloads: cannot create pod"),
            }
        }
        for (rs_name, mut status) in plan.replica_set_status {
            let generation = generations.get(&rs_name).copied().or_else(|| {
                self.store
                    .get(&replica_sets(), ns, &rs_name)
                    .map(|rs| meta::generation(&rs))
            });
            if let Some(g) = generation {
                status["observedGeneration"] = json!(g);
            }
            if let Err(error) = self
                .store
                .modify(&replica_sets(), ns, &rs_name, true, |rs| {
                    rs["status"] = status
                })
            {
                tracing::debug!(replicaset = %rs_name, %error, "workloads: cannot write status");
            }
        }
        if let Some(revision) = plan.revision {
            let res = self.store.modify(&deployments(), ns, dep_name, false, |d| {
                if !d["metadata"]["annotations"].is_object() {
                    d["metadata"]["annotations"] = json!({});
                }
                d["metadata"]["annotations"][deployment::REVISION_ANNOTATION] = json!(revision);
            });
            if let Err(error) = res {
                tracing::debug!(deployment = %dep_name, %error, "workloads: cannot set revision");
            }
        }
        if let Some(status) = plan.status {
            let res = self
                .store
                .modify(&deployments(), ns, dep_name, true, |d| d["status"] = status);
            if let Err(error) = res {
                tracing::debug!(deployment = %dep_name, %error, "workloads: cannot write status");
            }
        }
        if let Some(t) = plan.progressed_at {
            self.progress.insert(key.clone(), t);
        }
        if let Some(wake) = plan.wake_at {
            self.schedule(Work::Deployment(key.clone()), wake);
        }
    }

    fn reconcile_pod(&mut self, key: &Key) {
        let (ns, pod_name) = key;
        let Some(p) = self.store.get(&pods(), ns, pod_name) else {
            self.born.remove(key);
            return;
        };
        if self.terminating.contains(ns) || is_deleting(&p) {
            return;
        }
        // A Pod someone else created starts when we first see it.
        let born = *self.born.entry(key.clone()).or_insert_with(Timestamp::now);
        let next_ip = &mut self.next_ip;
        let (status, wake) =
            pod::desired_status(&p, born, Timestamp::now(), self.cfg.ready_delay, || {
                let ip = pod::loopback_ip(*next_ip);
                *next_ip = next_ip.wrapping_add(1);
                ip
            });
        if p.get("status") != Some(&status)
            && let Err(error) = self
                .store
                .modify(&pods(), ns, pod_name, true, |p| p["status"] = status)
        {
            tracing::debug!(pod = %pod_name, %error, "workloads: cannot write pod status");
        }
        if let Some(wake) = wake {
            self.schedule(Work::Pod(key.clone()), wake);
        }
    }

    fn reconcile_hpa(&mut self, key: &Key) {
        let (ns, hpa_name) = key;
        let Some(h) = self.store.get(&hpas(), ns, hpa_name) else {
            return;
        };
        if self.terminating.contains(ns) || is_deleting(&h) {
            return;
        }
        let target_name = hpa::target_deployment(&h).map(str::to_owned);
        let target_obj = target_name
            .as_deref()
            .and_then(|t| self.store.get(&deployments(), ns, t));
        let target = match (&target_name, &target_obj) {
            (Some(_), Some(d)) => hpa::Target::Deployment(d),
            (Some(_), None) => hpa::Target::Missing,
            (None, _) => hpa::Target::Unsupported,
        };
        let plan = hpa::plan(&h, target, Timestamp::now());
        if let (Some(replicas), Some(t)) = (plan.scale_target_to, &target_name) {
            let res = self.store.modify(&deployments(), ns, t, false, |d| {
                d["spec"]["replicas"] = json!(replicas);
            });
            if let Err(error) = res {
                tracing::debug!(hpa = %hpa_name, %error, "workloads: cannot scale target");
            }
        }
        if let Some(status) = plan.status
            && let Err(error) = self
                .store
                .modify(&hpas(), ns, hpa_name, true, |h| h["status"] = status)
        {
            tracing::debug!(hpa = %hpa_name, %error, "workloads: cannot write HPA status");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn timers_keep_the_earliest_deadline_per_item_and_pop_in_order() {
        let mut t = Timers::default();
        let base = Instant::now();
        let a = Work::Pod(("ns".into(), "a".into()));
        let b = Work::Pod(("ns".into(), "b".into()));
        t.schedule(a.clone(), base + Duration::from_secs(5));
        t.schedule(b.clone(), base + Duration::from_secs(2));
        t.schedule(a.clone(), base + Duration::from_secs(1));
        t.schedule(a.clone(), base + Duration::from_secs(9));
        assert_eq!(t.len(), 2);
        assert_eq!(t.next(), Some(base + Duration::from_secs(1)));
        assert_eq!(t.pop_due(base), None);
        assert_eq!(t.pop_due(base + Duration::from_secs(3)), Some(a));
        assert_eq!(t.pop_due(base + Duration::from_secs(3)), Some(b));
        assert_eq!(t.pop_due(base + Duration::from_secs(30)), None);
    }

    #[test]
    fn the_child_index_follows_owner_changes() {
        let mut c = Children::default();
        let pod = ("ns".to_string(), "p".to_string());
        c.set(&pod, Some("rs1"));
        assert_eq!(c.of(&("ns".into(), "rs1".into())), vec!["p".to_string()]);
        c.set(&pod, Some("rs2"));
        assert!(c.of(&("ns".into(), "rs1".into())).is_empty());
        assert_eq!(c.parent_of(&pod).map(String::as_str), Some("rs2"));
        c.set(&pod, None);
        assert!(c.of(&("ns".into(), "rs2".into())).is_empty());
        assert_eq!(c.parent_of(&pod), None);
    }
}
