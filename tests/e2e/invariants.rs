//! The reliability invariants of docs/RELIABILITY.md, checked on every committed change of the
//! testbed while an end-to-end test runs.
//!
//! [`Invariants::start`] subscribes to the testbed store's change feed (in-process, in
//! resourceVersion order, never subject to the API fault injection) before the test creates
//! anything. Each change of a Canary, Deployment or VirtualService (and each object the operator
//! generates) is checked against the state the feed has built so far; violations are recorded
//! with the resourceVersion that caused them. [`Cluster::start`](super::Cluster::start) starts one
//! per test; when the `Cluster` is dropped the checker drains the feed, runs its end-of-test checks
//! (nothing left behind, no stalled wait) and panics with the list if anything was violated —
//! so every e2e test that uses the harness checks these without asking.
//!
//! The checker reads the manifests itself (defaults from upstream Flagger) rather than through
//! the operator's own spec conversion, so a bug there cannot pass on both sides.
//!
//! Invariants (see docs/RELIABILITY.md for the reasoning):
//! - `PrimaryOnlyByPromotion`: the `-primary` template changes (or is re-created with another
//!   template) only while initializing, with `skipAnalysis`, or from a run whose analysis passed:
//!   phase Progressing/WaitingPromotion at max weight (or all iterations done) with fewer failed
//!   checks than the threshold, or Promoting; and it then equals the target's containers.
//! - `WeightBounds`: every VirtualService route's weights sum to 100; the canary weight (route and
//!   `status.canaryWeight`) never exceeds maxWeight, except the failed-promotion case (all traffic
//!   on the canary while Promoting/Finalising/Failed).
//! - `TrafficToAvailable`: the catch-all route never sends 100 % to a Deployment without available
//!   replicas, through a route change or through the operator scaling that Deployment to 0.
//! - `StatusMonotonic`: within one revision (`lastAppliedSpec`) the phase does not go back, and
//!   while analysing failedChecks and iterations never decrease, nor the weight while Progressing.
//! - `WaitDeadlines`: every persisted wait has `since` and `deadline = since +
//!   progressDeadlineSeconds`; an open wait is never moved; no active canary sits on a wait more
//!   than a grace period past its deadline (a stall).
//! - `NothingLeftBehind`: every object generated for a Canary carries its controller owner
//!   reference, and none remains once the Canary is deleted.
//! - `RevertOnDeletion`: a Canary with `revertOnDeletion` is only removed once its target has
//!   replicas and available pods again.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use flagger_testbed::store::{EventType, ResourceId, Store, StoreEvent};
use serde_json::Value;
use tokio::sync::broadcast::{self, error::TryRecvError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    PrimaryOnlyByPromotion,
    WeightBounds,
    TrafficToAvailable,
    StatusMonotonic,
    WaitDeadlines,
    NothingLeftBehind,
    RevertOnDeletion,
    /// The checker itself missed changes (its feed lagged): nothing can be claimed.
    Checker,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: Invariant,
    /// resourceVersion of the change that broke it (0 for end-of-test checks).
    pub rv: u64,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:?} @rv {}] {}", self.invariant, self.rv, self.message)
    }
}

/// What the checker saw, for tests that print their figures.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Changes of Canaries, Deployments, VirtualServices and generated objects checked.
    pub changes_checked: u64,
    pub violations: Vec<Violation>,
}

type Key = (String, String);

/// How much past a persisted deadline an active canary may still show the wait.
fn stall_grace(interval: Duration) -> Duration {
    Duration::from_secs(10) + interval * 3
}

pub struct Invariants {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Set by [`Invariants::into_report`]: the caller judges the violations itself.
    disarmed: bool,
}

struct Shared {
    store: Store,
    state: Mutex<State>,
}

impl Invariants {
    /// Subscribes to `store` now; with a tokio runtime, also drains the feed in the background
    /// every 50 ms (the feed holds 16,384 changes, so the checker never lags a test).
    pub fn start(store: &Store) -> Invariants {
        let shared = Arc::new(Shared {
            store: store.clone(),
            state: Mutex::new(State::new(store.subscribe())),
        });
        let task = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let weak: Weak<Shared> = Arc::downgrade(&shared);
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let Some(shared) = weak.upgrade() else { return };
                    let mut st = shared.lock();
                    st.drain();
                    st.check_stalls(now_ms());
                }
            })
        });
        Invariants {
            shared,
            task,
            disarmed: false,
        }
    }

    /// Finishes and hands the report to the caller instead of failing on drop (for the
    /// checker's own tests, which feed it bad sequences on purpose).
    pub fn into_report(mut self) -> Report {
        self.disarmed = true;
        self.finish()
    }

    /// Processes every change committed so far.
    pub fn drain(&self) {
        self.shared.lock().drain();
    }

    /// Stall check at `now_ms` (unix milliseconds); the background task runs it with the clock.
    pub fn check_stalls_at(&self, now_ms: i64) {
        let mut st = self.shared.lock();
        st.drain();
        st.check_stalls(now_ms);
    }

    /// Keeps checking `invariant` but does not fail the test on it (a test that breaks it on
    /// purpose says so, with the reason printed in the report).
    pub fn tolerate(&self, invariant: Invariant, why: &str) {
        self.shared
            .lock()
            .tolerated
            .insert(invariant, why.to_owned());
    }

    /// Everything so far (drains first).
    pub fn report(&self) -> Report {
        let mut st = self.shared.lock();
        st.drain();
        Report {
            changes_checked: st.checked,
            violations: st.violations.clone(),
        }
    }

    /// Drains, runs the end-of-test checks and returns every violation, tolerated ones included.
    pub fn finish(&self) -> Report {
        let mut st = self.shared.lock();
        st.drain();
        if !st.finished {
            st.finished = true;
            st.check_stalls(now_ms());
            st.check_left_behind(&self.shared.store);
        }
        Report {
            changes_checked: st.checked,
            violations: st.violations.clone(),
        }
    }

    /// Panics listing the violations that are not tolerated.
    pub fn assert_clean(&self) {
        let report = self.finish();
        let st = self.shared.lock();
        let failing: Vec<String> = report
            .violations
            .iter()
            .filter(|v| !st.tolerated.contains_key(&v.invariant))
            .map(ToString::to_string)
            .collect();
        drop(st);
        println!(
            "reliability invariants: {} changes checked, {} violation(s), {} tolerated",
            report.changes_checked,
            failing.len(),
            report.violations.len() - failing.len()
        );
        assert!(
            failing.is_empty(),
            "{} reliability invariant violation(s) (docs/RELIABILITY.md) in {} checked changes:\n{}",
            failing.len(),
            report.changes_checked,
            failing.join("\n")
        );
    }
}

impl Drop for Invariants {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if self.disarmed {
            return;
        }
        if std::thread::panicking() {
            let report = self.finish();
            for v in &report.violations {
                eprintln!("invariant violation (test already failing): {v}");
            }
            return;
        }
        self.assert_clean();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

// ------------------------------------------------------------------------------------------------
// What the checker reads from a Canary (independently of the operator's conversion).
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Strategy {
    /// Progressive weights up to `max`.
    Canary { max: i64 },
    /// Blue/Green or A/B: `total` iterations; weights are all-or-nothing.
    Iterations { total: i64 },
}

#[derive(Debug, Clone)]
struct Facts {
    uid: String,
    namespace: String,
    name: String,
    target: String,
    service: String,
    strategy: Strategy,
    threshold: i64,
    progress_deadline_s: i64,
    skip_analysis: bool,
    revert_on_deletion: bool,
    interval: Duration,
    autoscaler: Option<String>,
    deleting: bool,
}

impl Facts {
    fn of(c: &Value) -> Facts {
        let spec = &c["spec"];
        let analysis = if spec["analysis"].is_object() {
            &spec["analysis"]
        } else {
            &spec["canaryAnalysis"]
        };
        let target = spec["targetRef"]["name"].as_str().unwrap_or("").to_owned();
        let service = spec["service"]["name"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(&target)
            .to_owned();
        let int = |v: &Value| v.as_i64().unwrap_or(0);
        let iterations = int(&analysis["iterations"]);
        let kubernetes = spec["provider"].as_str() == Some("kubernetes");
        let strategy = if iterations > 0 || kubernetes {
            Strategy::Iterations {
                total: iterations.max(if kubernetes { 10 } else { 0 }),
            }
        } else if int(&analysis["stepWeight"]) > 0 {
            let max = int(&analysis["maxWeight"]);
            Strategy::Canary {
                max: if max <= 0 { 100 } else { max.min(100) },
            }
        } else {
            let steps = analysis["stepWeights"].as_array();
            let last = steps
                .into_iter()
                .flatten()
                .filter_map(Value::as_i64)
                .max()
                .unwrap_or(100);
            Strategy::Canary { max: last.min(100) }
        };
        let threshold = int(&analysis["threshold"]);
        let pds = int(&spec["progressDeadlineSeconds"]);
        Facts {
            uid: c["metadata"]["uid"].as_str().unwrap_or("").to_owned(),
            namespace: c["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
            name: c["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            target,
            service,
            strategy,
            threshold: if threshold <= 0 { 1 } else { threshold },
            progress_deadline_s: if pds <= 0 { 600 } else { pds },
            skip_analysis: spec["skipAnalysis"].as_bool().unwrap_or(false) || !analysis.is_object(),
            revert_on_deletion: spec["revertOnDeletion"].as_bool().unwrap_or(false),
            interval: parse_interval(analysis["interval"].as_str().unwrap_or("")),
            autoscaler: spec["autoscalerRef"]["name"].as_str().map(str::to_owned),
            deleting: !c["metadata"]["deletionTimestamp"].is_null(),
        }
    }

    fn id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    fn primary(&self) -> String {
        format!("{}-primary", self.target)
    }

    /// Names of the objects the operator generates for this canary, by resource plural.
    fn generates(&self, plural: &str, name: &str) -> bool {
        let svc = &self.service;
        match plural {
            "deployments" => name == self.primary(),
            "services" => {
                name == svc || name == format!("{svc}-primary") || name == format!("{svc}-canary")
            }
            "virtualservices" => name == svc,
            "destinationrules" => {
                name == format!("{svc}-primary") || name == format!("{svc}-canary")
            }
            "horizontalpodautoscalers" => self
                .autoscaler
                .as_ref()
                .is_some_and(|a| name == format!("{a}-primary")),
            "configmaps" | "secrets" => name.ends_with("-primary"),
            _ => false,
        }
    }
}

fn parse_interval(s: &str) -> Duration {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().unwrap_or(60);
    match unit {
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "ms" => Duration::from_millis(n),
        _ => Duration::from_secs(n),
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Wait {
    since: Option<i64>,
    deadline: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
struct Status {
    phase: String,
    weight: i64,
    failed: i64,
    iterations: i64,
    applied: String,
    promoted: String,
    waits: BTreeMap<&'static str, Wait>,
}

fn parse_time(v: &Value) -> Option<i64> {
    v.as_str()?
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

impl Status {
    fn of(c: &Value) -> Status {
        let s = &c["status"];
        let mut waits = BTreeMap::new();
        for side in ["primary", "canary"] {
            let w = &s["progressWaits"][side];
            if w.is_object() {
                waits.insert(
                    side,
                    Wait {
                        since: parse_time(&w["since"]),
                        deadline: parse_time(&w["deadline"]),
                    },
                );
            }
        }
        Status {
            phase: s["phase"].as_str().unwrap_or("").to_owned(),
            weight: s["canaryWeight"].as_i64().unwrap_or(0),
            failed: s["failedChecks"].as_i64().unwrap_or(0),
            iterations: s["iterations"].as_i64().unwrap_or(0),
            applied: s["lastAppliedSpec"].as_str().unwrap_or("").to_owned(),
            promoted: s["lastPromotedSpec"].as_str().unwrap_or("").to_owned(),
            waits,
        }
    }

    fn analysing(&self) -> bool {
        matches!(self.phase.as_str(), "Progressing" | "WaitingPromotion")
    }

    fn active(&self) -> bool {
        matches!(
            self.phase.as_str(),
            "Initializing" | "" | "Progressing" | "WaitingPromotion" | "Promoting" | "Finalising"
        )
    }
}

/// Order of the phases within one run; `None` for phases outside the order.
fn rank(phase: &str) -> Option<u8> {
    Some(match phase {
        "" | "Initializing" => 0,
        "Initialized" => 1,
        "Progressing" | "WaitingPromotion" => 3,
        "Promoting" => 4,
        "Finalising" => 5,
        "Succeeded" | "Failed" => 6,
        _ => return None,
    })
}

// ------------------------------------------------------------------------------------------------
// VirtualService routes.
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    Primary,
    Canary,
    Other,
}

/// Each route entry (http, then tcp) as (destination, weight) pairs.
fn routes(vs: &Value, service: &str) -> Vec<Vec<(Dest, i64)>> {
    let (p, c) = (format!("{service}-primary"), format!("{service}-canary"));
    let mut out = Vec::new();
    for kind in ["http", "tcp"] {
        for entry in vs["spec"][kind].as_array().into_iter().flatten() {
            let Some(dests) = entry["route"].as_array() else {
                continue;
            };
            let single = dests.len() == 1;
            out.push(
                dests
                    .iter()
                    .map(|d| {
                        let host = d["destination"]["host"].as_str().unwrap_or("");
                        let short = host.split('.').next().unwrap_or("");
                        let dest = if short == p {
                            Dest::Primary
                        } else if short == c {
                            Dest::Canary
                        } else {
                            Dest::Other
                        };
                        let weight = d["weight"].as_i64().unwrap_or(if single { 100 } else { 0 });
                        (dest, weight)
                    })
                    .collect(),
            );
        }
    }
    out
}

fn available(d: Option<&Value>) -> i64 {
    d.and_then(|d| d["status"]["availableReplicas"].as_i64())
        .unwrap_or(0)
}

fn replicas(d: &Value) -> i64 {
    d["spec"]["replicas"].as_i64().unwrap_or(1)
}

fn images(d: &Value) -> Vec<String> {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["image"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn meta(o: &Value, field: &str) -> String {
    o["metadata"][field].as_str().unwrap_or("").to_owned()
}

fn key_of(o: &Value) -> Key {
    (meta(o, "namespace"), meta(o, "name"))
}

fn controlled_by(o: &Value, uid: &str) -> bool {
    o["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["uid"] == uid && r["controller"] == true)
}

// ------------------------------------------------------------------------------------------------
// The checker state machine.
// ------------------------------------------------------------------------------------------------

struct Generated {
    resource: ResourceId,
    namespace: String,
    name: String,
    owner_uid: String,
    owner: String,
}

struct State {
    rx: broadcast::Receiver<Arc<StoreEvent>>,
    canaries: HashMap<Key, Value>,
    deployments: HashMap<Key, Value>,
    virtual_services: HashMap<Key, Value>,
    /// Last template seen on each `-primary` Deployment (kept across deletions).
    primary_templates: HashMap<Key, Value>,
    dead_uids: HashSet<String>,
    generated: Vec<Generated>,
    violations: Vec<Violation>,
    tolerated: BTreeMap<Invariant, String>,
    stalls_reported: HashSet<(Key, i64)>,
    checked: u64,
    finished: bool,
}

fn is(r: &ResourceId, group: &str, plural: &str) -> bool {
    r.group == group && r.plural == plural
}

impl State {
    fn new(rx: broadcast::Receiver<Arc<StoreEvent>>) -> State {
        State {
            rx,
            canaries: HashMap::new(),
            deployments: HashMap::new(),
            virtual_services: HashMap::new(),
            primary_templates: HashMap::new(),
            dead_uids: HashSet::new(),
            generated: Vec::new(),
            violations: Vec::new(),
            tolerated: BTreeMap::new(),
            stalls_reported: HashSet::new(),
            checked: 0,
            finished: false,
        }
    }

    fn violate(&mut self, invariant: Invariant, rv: u64, message: String) {
        self.violations.push(Violation {
            invariant,
            rv,
            message,
        });
    }

    fn drain(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(event) => self.on_event(&event),
                Err(TryRecvError::Lagged(n)) => self.violate(
                    Invariant::Checker,
                    0,
                    format!("the checker's change feed lagged and lost {n} changes"),
                ),
                Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => return,
            }
        }
    }

    /// Live (not deleted) canaries in `ns`, with their facts and status.
    fn canaries_in(&self, ns: &str) -> Vec<(Facts, Status)> {
        self.canaries
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, c)| (Facts::of(c), Status::of(c)))
            .collect()
    }

    fn on_event(&mut self, e: &StoreEvent) {
        let r = &e.resource;
        let relevant = is(r, "flagger.app", "canaries")
            || is(r, "apps", "deployments")
            || is(r, "networking.istio.io", "virtualservices")
            || (e.kind == EventType::Added
                && (is(r, "", "services")
                    || is(r, "", "configmaps")
                    || is(r, "", "secrets")
                    || is(r, "networking.istio.io", "destinationrules")
                    || is(r, "autoscaling", "horizontalpodautoscalers")));
        if !relevant {
            return;
        }
        self.checked += 1;
        if e.kind == EventType::Added && !is(r, "flagger.app", "canaries") {
            self.on_added(e);
        }
        if is(r, "flagger.app", "canaries") {
            self.on_canary(e);
        } else if is(r, "apps", "deployments") {
            self.on_deployment(e);
        } else if is(r, "networking.istio.io", "virtualservices") {
            self.on_virtual_service(e);
        }
    }

    /// A generated object must carry its Canary as controller owner; remember it for deletion.
    /// (Two canaries may claim the same names while one of them is refused as a duplicate
    /// target, and config copies are matched by suffix only: one controlling canary suffices.)
    fn on_added(&mut self, e: &StoreEvent) {
        let (ns, name) = key_of(&e.object);
        let claimants: Vec<Facts> = self
            .canaries_in(&ns)
            .into_iter()
            .map(|(f, _)| f)
            .filter(|f| !f.deleting && f.generates(&e.resource.plural, &name))
            .collect();
        if claimants.is_empty() {
            return;
        }
        match claimants.iter().find(|f| controlled_by(&e.object, &f.uid)) {
            Some(owner) => self.generated.push(Generated {
                resource: e.resource.clone(),
                namespace: ns.clone(),
                name: name.clone(),
                owner_uid: owner.uid.clone(),
                owner: owner.id(),
            }),
            None => self.violate(
                Invariant::NothingLeftBehind,
                e.rv,
                format!(
                    "{} {name}.{ns} was created while canary {} exists but has no controller owner reference to it: {}",
                    e.resource.plural,
                    claimants[0].id(),
                    e.object["metadata"]["ownerReferences"]
                ),
            ),
        }
    }

    fn on_canary(&mut self, e: &StoreEvent) {
        let key = key_of(&e.object);
        let facts = Facts::of(&e.object);
        let new = Status::of(&e.object);
        if e.kind == EventType::Deleted {
            self.canaries.remove(&key);
            self.dead_uids.insert(facts.uid.clone());
            if facts.revert_on_deletion {
                let target = self
                    .deployments
                    .get(&(facts.namespace.clone(), facts.target.clone()))
                    .cloned();
                if let Some(t) = target
                    && (replicas(&t) < 1 || available(Some(&t)) < 1)
                {
                    self.violate(
                        Invariant::RevertOnDeletion,
                        e.rv,
                        format!(
                            "canary {} (revertOnDeletion) was removed while its target has {} replicas and {} available",
                            facts.id(),
                            replicas(&t),
                            available(Some(&t))
                        ),
                    );
                }
            }
            return;
        }
        self.check_status(e.rv, &facts, &new);
        let old = self.canaries.get(&key).map(Status::of);
        if let Some(old) = old {
            self.check_transition(e.rv, &facts, &old, &new);
        }
        self.canaries.insert(key, (*e.object).clone());
    }

    /// Checks of one status on its own.
    fn check_status(&mut self, rv: u64, f: &Facts, s: &Status) {
        if let Strategy::Canary { max } = f.strategy
            && s.weight > max
            && !(s.phase == "Failed" && s.weight == 100)
        {
            self.violate(
                Invariant::WeightBounds,
                rv,
                format!(
                    "canary {} status.canaryWeight {} exceeds maxWeight {max} (phase {})",
                    f.id(),
                    s.weight,
                    s.phase
                ),
            );
        }
        if s.weight < 0 || s.weight > 100 {
            self.violate(
                Invariant::WeightBounds,
                rv,
                format!(
                    "canary {} status.canaryWeight {} outside 0..=100",
                    f.id(),
                    s.weight
                ),
            );
        }
        for (side, w) in &s.waits {
            match (w.since, w.deadline) {
                (Some(since), Some(deadline)) => {
                    let expected = f.progress_deadline_s * 1000;
                    if (deadline - since - expected).abs() > 1000 {
                        self.violate(
                            Invariant::WaitDeadlines,
                            rv,
                            format!(
                                "canary {} {side} wait: deadline - since = {} ms, progressDeadlineSeconds is {} s",
                                f.id(),
                                deadline - since,
                                f.progress_deadline_s
                            ),
                        );
                    }
                }
                _ => self.violate(
                    Invariant::WaitDeadlines,
                    rv,
                    format!(
                        "canary {} has a {side} wait without a persisted since/deadline: {w:?}",
                        f.id()
                    ),
                ),
            }
        }
    }

    /// Checks of one status write against the previous one.
    fn check_transition(&mut self, rv: u64, f: &Facts, old: &Status, new: &Status) {
        let same_revision = !new.applied.is_empty() && new.applied == old.applied;
        if !same_revision {
            return;
        }
        let id = f.id();
        if let (Some(a), Some(b)) = (rank(&old.phase), rank(&new.phase))
            && (b < a || (old.phase == "Failed" && new.phase == "Succeeded"))
        {
            self.violate(
                Invariant::StatusMonotonic,
                rv,
                format!(
                    "canary {id}: phase went back from {} to {} within revision {}",
                    old.phase, new.phase, new.applied
                ),
            );
        }
        if old.analysing() && new.analysing() {
            if new.failed < old.failed {
                self.violate(
                    Invariant::StatusMonotonic,
                    rv,
                    format!(
                        "canary {id}: failedChecks went back from {} to {} within revision {}",
                        old.failed, new.failed, new.applied
                    ),
                );
            }
            if new.iterations < old.iterations {
                self.violate(
                    Invariant::StatusMonotonic,
                    rv,
                    format!(
                        "canary {id}: iterations went back from {} to {} within revision {}",
                        old.iterations, new.iterations, new.applied
                    ),
                );
            }
            if old.phase == "Progressing" && new.phase == "Progressing" && new.weight < old.weight {
                self.violate(
                    Invariant::StatusMonotonic,
                    rv,
                    format!(
                        "canary {id}: canaryWeight went back from {} to {} while Progressing revision {}",
                        old.weight, new.weight, new.applied
                    ),
                );
            }
        }
        for (side, w) in &new.waits {
            if let Some(before) = old.waits.get(side)
                && before != w
            {
                self.violate(
                    Invariant::WaitDeadlines,
                    rv,
                    format!(
                        "canary {id}: the open {side} wait moved from {before:?} to {w:?} (a deadline must survive every write and restart)"
                    ),
                );
            }
        }
    }

    fn canary_of_deployment(&self, ns: &str, name: &str) -> Option<(Facts, Status, Dest)> {
        self.canaries_in(ns).into_iter().find_map(|(f, s)| {
            if name == f.target {
                Some((f, s, Dest::Canary))
            } else if name == f.primary() {
                Some((f, s, Dest::Primary))
            } else {
                None
            }
        })
    }

    /// The workload that the catch-all route of `f`'s VirtualService sends all traffic to.
    fn all_traffic_to(&self, f: &Facts) -> Option<Dest> {
        let vs = self
            .virtual_services
            .get(&(f.namespace.clone(), f.service.clone()))?;
        if !controlled_by(vs, &f.uid) {
            return None;
        }
        let entries = routes(vs, &f.service);
        let last = entries.last()?;
        [Dest::Primary, Dest::Canary].into_iter().find(|d| {
            last.iter()
                .filter(|(dest, _)| dest == d)
                .map(|(_, w)| w)
                .sum::<i64>()
                >= 100
        })
    }

    fn workload_of(&self, f: &Facts, d: Dest) -> Option<&Value> {
        let name = match d {
            Dest::Primary => f.primary(),
            Dest::Canary => f.target.clone(),
            Dest::Other => return None,
        };
        self.deployments.get(&(f.namespace.clone(), name))
    }

    fn on_deployment(&mut self, e: &StoreEvent) {
        let key = key_of(&e.object);
        let previous = self.deployments.get(&key).cloned();
        if e.kind == EventType::Deleted {
            self.deployments.remove(&key);
        } else {
            self.deployments.insert(key.clone(), (*e.object).clone());
        }
        let Some((f, s, side)) = self.canary_of_deployment(&key.0, &key.1) else {
            return;
        };
        if f.deleting {
            return;
        }
        // Scaling (or deleting) the workload that has all the traffic.
        let emptied = match e.kind {
            EventType::Deleted => true,
            _ => replicas(&e.object) == 0 && previous.as_ref().is_some_and(|p| replicas(p) != 0),
        };
        if emptied && self.all_traffic_to(&f) == Some(side) {
            self.violate(
                Invariant::TrafficToAvailable,
                e.rv,
                format!(
                    "canary {}: Deployment {} was {} while the VirtualService sends it all traffic",
                    f.id(),
                    key.1,
                    if e.kind == EventType::Deleted {
                        "deleted"
                    } else {
                        "scaled to 0"
                    }
                ),
            );
        }
        if side == Dest::Primary && e.kind != EventType::Deleted {
            self.check_primary_template(e.rv, &f, &s, &e.object);
        }
    }

    fn check_primary_template(&mut self, rv: u64, f: &Facts, s: &Status, primary: &Value) {
        let key = key_of(primary);
        let template = primary["spec"]["template"].clone();
        let before = self.primary_templates.insert(key, template.clone());
        let Some(before) = before else { return };
        if before == template {
            return;
        }
        let initializing = s.promoted.is_empty();
        if initializing || f.skip_analysis {
            return;
        }
        let at_max = match f.strategy {
            Strategy::Canary { max } => {
                let vs_weight = self
                    .virtual_services
                    .get(&(f.namespace.clone(), f.service.clone()))
                    .map(|vs| {
                        routes(vs, &f.service)
                            .iter()
                            .flatten()
                            .filter(|(d, _)| *d == Dest::Canary)
                            .map(|(_, w)| *w)
                            .max()
                            .unwrap_or(0)
                    })
                    .unwrap_or(0);
                s.weight >= max || vs_weight >= max
            }
            Strategy::Iterations { total } => s.iterations >= total,
        };
        let passed = match s.phase.as_str() {
            "Progressing" | "WaitingPromotion" => at_max && s.failed < f.threshold,
            "Promoting" => true,
            _ => false,
        };
        if !passed {
            self.violate(
                Invariant::PrimaryOnlyByPromotion,
                rv,
                format!(
                    "canary {}: the primary's template changed outside a passed analysis (phase {}, canaryWeight {}, iterations {}, failedChecks {}/{}, strategy {:?})",
                    f.id(),
                    s.phase,
                    s.weight,
                    s.iterations,
                    s.failed,
                    f.threshold,
                    f.strategy
                ),
            );
            return;
        }
        let target = self
            .deployments
            .get(&(f.namespace.clone(), f.target.clone()));
        let target_images = target.map(images).unwrap_or_default();
        if images(primary) != target_images {
            self.violate(
                Invariant::PrimaryOnlyByPromotion,
                rv,
                format!(
                    "canary {}: the primary was promoted to {:?} but the analysed target runs {:?}",
                    f.id(),
                    images(primary),
                    target_images
                ),
            );
        }
    }

    fn on_virtual_service(&mut self, e: &StoreEvent) {
        let key = key_of(&e.object);
        if e.kind == EventType::Deleted {
            self.virtual_services.remove(&key);
            return;
        }
        self.virtual_services
            .insert(key.clone(), (*e.object).clone());
        let Some((f, s)) = self
            .canaries_in(&key.0)
            .into_iter()
            .find(|(f, _)| f.service == key.1 && controlled_by(&e.object, &f.uid))
        else {
            return;
        };
        if f.deleting {
            return;
        }
        let entries = routes(&e.object, &f.service);
        for (i, entry) in entries.iter().enumerate() {
            let sum: i64 = entry.iter().map(|(_, w)| w).sum();
            if sum != 100 {
                self.violate(
                    Invariant::WeightBounds,
                    e.rv,
                    format!(
                        "canary {}: VirtualService {} route {i} weights sum to {sum}: {entry:?}",
                        f.id(),
                        key.1
                    ),
                );
            }
            if let Strategy::Canary { max } = f.strategy {
                let canary: i64 = entry
                    .iter()
                    .filter(|(d, _)| *d == Dest::Canary)
                    .map(|(_, w)| w)
                    .sum();
                let failed_promotion =
                    matches!(s.phase.as_str(), "Promoting" | "Finalising" | "Failed");
                if canary > max && !failed_promotion {
                    self.violate(
                        Invariant::WeightBounds,
                        e.rv,
                        format!(
                            "canary {}: VirtualService {} sends {canary}% to the canary, maxWeight is {max} (phase {})",
                            f.id(),
                            key.1,
                            s.phase
                        ),
                    );
                }
            }
        }
        if let Some(side) = self.all_traffic_to(&f) {
            let workload = self.workload_of(&f, side);
            if available(workload) < 1 {
                self.violate(
                    Invariant::TrafficToAvailable,
                    e.rv,
                    format!(
                        "canary {}: VirtualService {} routes all traffic to the {side:?} Deployment, which has no available replicas (status: {})",
                        f.id(),
                        key.1,
                        workload.map(|w| w["status"].to_string()).unwrap_or_else(|| "<missing>".into())
                    ),
                );
            }
        }
    }

    fn check_stalls(&mut self, now: i64) {
        let mut found = Vec::new();
        for (key, c) in &self.canaries {
            let f = Facts::of(c);
            let s = Status::of(c);
            if f.deleting || !s.active() {
                continue;
            }
            let grace = stall_grace(f.interval).as_millis() as i64;
            for (side, w) in &s.waits {
                if let Some(deadline) = w.deadline
                    && now > deadline + grace
                    && !self.stalls_reported.contains(&(key.clone(), deadline))
                {
                    found.push((key.clone(), deadline, format!(
                        "canary {} stalled: phase {} still waits for the {side} {} ms after its persisted deadline",
                        f.id(),
                        s.phase,
                        now - deadline
                    )));
                }
            }
        }
        for (key, deadline, message) in found {
            self.stalls_reported.insert((key, deadline));
            self.violate(Invariant::WaitDeadlines, 0, message);
        }
    }

    fn check_left_behind(&mut self, store: &Store) {
        let live: HashSet<String> = self.canaries.values().map(|c| meta(c, "uid")).collect();
        let mut found = Vec::new();
        for g in &self.generated {
            if !self.dead_uids.contains(&g.owner_uid) {
                continue;
            }
            if let Some(obj) = store.get(&g.resource, &g.namespace, &g.name) {
                let adopted = live.iter().any(|uid| controlled_by(&obj, uid));
                if !adopted {
                    found.push(format!(
                        "{} {}.{} generated for canary {} is still there after the canary was deleted",
                        g.resource.plural, g.name, g.namespace, g.owner
                    ));
                }
            }
        }
        for m in found {
            self.violate(Invariant::NothingLeftBehind, 0, m);
        }
    }
}
