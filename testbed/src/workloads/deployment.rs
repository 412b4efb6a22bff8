//! The Deployment (and ReplicaSet) controller's decisions, as a pure function of the Deployment,
//! the ReplicaSets it controls with their Pods, and the time.
//!
//! It follows the real controller closely enough for clients that read Deployment status:
//! - one ReplicaSet per pod template, named `<deployment>-<pod-template-hash>`, labelled
//!   `pod-template-hash`, controlled by the Deployment; a template seen before re-uses its RS;
//! - `RollingUpdate` honours `maxSurge` (rounded up) and `maxUnavailable` (rounded down), both
//!   25% by default: the new RS grows while the total stays under `replicas + maxSurge`, old RSs
//!   shrink while available Pods stay at or above `replicas - maxUnavailable`; `Recreate` drops the
//!   old RSs first. A Pod is available once Ready for `minReadySeconds`;
//! - status as the real controller computes it (`replicas`, `updatedReplicas`, `readyReplicas`,
//!   `availableReplicas`, `unavailableReplicas`, zeros omitted), the `Available` condition
//!   (`MinimumReplicasAvailable` / `MinimumReplicasUnavailable`) and the `Progressing` condition
//!   (`NewReplicaSetCreated`/`FoundNewReplicaSet` when a rollout starts, `ReplicaSetUpdated` on
//!   each step of progress, `NewReplicaSetAvailable` when complete, and `ProgressDeadlineExceeded`
//!   once `progressDeadlineSeconds` pass without progress).
//!
//! Not modelled: proportional scaling of several old RSs during a scale mid-rollout (old RSs just
//! shrink as availability allows), `paused`, `revisionHistoryLimit` (old RSs are kept at 0),
//! hash collisions (`collisionCount`), Pod termination grace (Pods are deleted at once).

use std::collections::BTreeMap;

use jiff::Timestamp;
use rand::Rng;
use serde_json::{Map, Value, json};

use super::meta::{
    add_secs, at, cond_field, conditions, controller_owner, find_condition, generation, i64_at,
    name, namespace, owner_reference, parse_time, random_suffix, str_at, string_map, template_hash,
    time_str,
};
use super::pod;

pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
const DEFAULT_PROGRESS_DEADLINE_SECS: i64 = 600;

/// A ReplicaSet the Deployment controls, with the Pods that ReplicaSet controls.
#[derive(Debug, Clone, Copy)]
pub struct Owned<'a> {
    pub replica_set: &'a Value,
    pub pods: &'a [&'a Value],
}

/// What the controller does next for one Deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The current template has no ReplicaSet yet: create this one (0 replicas), then plan again.
    CreateReplicaSet(Value),
    /// Anything else; every field lists changes only (an empty plan writes nothing).
    Sync(Plan),
}

/// The writes that bring a Deployment's world to its desired state. Apply in field order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// ReplicaSet main-resource changes: new `spec.replicas` and annotations to set.
    pub scale: Vec<ScaleReplicaSet>,
    /// Pods (by name) to delete.
    pub delete_pods: Vec<String>,
    /// Pods to create (no status: the kubelet fills it).
    pub create_pods: Vec<Value>,
    /// ReplicaSet statuses that change (without `observedGeneration`, which the caller sets from
    /// the stored RS after its scale write).
    pub replica_set_status: Vec<(String, Value)>,
    /// New value of the Deployment's revision annotation.
    pub revision: Option<String>,
    /// New Deployment status.
    pub status: Option<Value>,
    /// The precise time this plan records as the Progressing condition's `lastUpdateTime`
    /// (which the API shows truncated to seconds); pass it back as `progress_hint`.
    pub progressed_at: Option<Timestamp>,
    /// When the outcome can change with no event (a Pod becoming available, the deadline).
    pub wake_at: Option<Timestamp>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.scale.is_empty()
            && self.delete_pods.is_empty()
            && self.create_pods.is_empty()
            && self.replica_set_status.is_empty()
            && self.revision.is_none()
            && self.status.is_none()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScaleReplicaSet {
    pub name: String,
    pub replicas: i64,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy)]
enum Strategy {
    Recreate,
    Rolling { surge: i64, unavailable: i64 },
}

/// Spec fields the controller reads, with API defaults applied.
struct Spec<'a> {
    replicas: i64,
    strategy: Strategy,
    template: &'a Value,
    min_ready_secs: i64,
    deadline_secs: i64,
}

impl<'a> Spec<'a> {
    fn of(dep: &'a Value) -> Self {
        static EMPTY: Value = Value::Null;
        let replicas = i64_at(dep, &["spec", "replicas"]).unwrap_or(1).max(0);
        let strategy = match str_at(dep, &["spec", "strategy", "type"]) {
            Some("Recreate") => Strategy::Recreate,
            _ => {
                let ru = at(dep, &["spec", "strategy", "rollingUpdate"]);
                let mut surge = super::meta::int_or_percent(
                    ru.and_then(|r| r.get("maxSurge")),
                    replicas,
                    "25%",
                    true,
                );
                let mut unavailable = super::meta::int_or_percent(
                    ru.and_then(|r| r.get("maxUnavailable")),
                    replicas,
                    "25%",
                    false,
                );
                // As in Kubernetes: both zero would deadlock, so one Pod may be unavailable.
                if surge == 0 && unavailable == 0 {
                    unavailable = 1;
                }
                unavailable = unavailable.min(replicas);
                surge = surge.max(0);
                Strategy::Rolling { surge, unavailable }
            }
        };
        Spec {
            replicas,
            strategy,
            template: at(dep, &["spec", "template"]).unwrap_or(&EMPTY),
            min_ready_secs: i64_at(dep, &["spec", "minReadySeconds"])
                .unwrap_or(0)
                .max(0),
            deadline_secs: i64_at(dep, &["spec", "progressDeadlineSeconds"])
                .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECS),
        }
    }

    fn max_unavailable(&self) -> i64 {
        match self.strategy {
            Strategy::Rolling { unavailable, .. } if self.replicas > 0 => unavailable,
            _ => 0,
        }
    }

    fn max_surge(&self) -> i64 {
        match self.strategy {
            Strategy::Rolling { surge, .. } => surge,
            Strategy::Recreate => 0,
        }
    }
}

/// A Pod as the planner sees it. `name` is `None` for Pods this plan creates.
#[derive(Debug, Clone)]
struct PodView {
    name: Option<String>,
    ready: bool,
    available: bool,
}

#[derive(Debug, Clone)]
struct RsView<'a> {
    obj: &'a Value,
    name: String,
    is_new: bool,
    revision: i64,
    replicas: i64,
    pods: Vec<PodView>,
}

impl RsView<'_> {
    fn available(&self) -> i64 {
        count(&self.pods, |p| p.available)
    }
    fn ready(&self) -> i64 {
        count(&self.pods, |p| p.ready)
    }
}

fn count(pods: &[PodView], f: impl Fn(&PodView) -> bool) -> i64 {
    i64::try_from(pods.iter().filter(|p| f(p)).count()).unwrap_or(i64::MAX)
}

fn len_i64<T>(v: &[T]) -> i64 {
    i64::try_from(v.len()).unwrap_or(i64::MAX)
}

fn revision_of(rs: &Value) -> i64 {
    str_at(rs, &["metadata", "annotations", REVISION_ANNOTATION])
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Plans the next writes for `dep`. `owned` must hold only ReplicaSets controlled by `dep` and
/// only Pods controlled by each RS. `progress_hint` is a previous plan's `progressed_at`.
pub fn plan(
    dep: &Value,
    owned: &[Owned<'_>],
    now: Timestamp,
    progress_hint: Option<Timestamp>,
    rng: &mut impl Rng,
) -> Step {
    let spec = Spec::of(dep);
    let hash = template_hash(spec.template);
    let new_name = format!("{}-{}", name(dep), hash);
    let max_revision = owned
        .iter()
        .map(|o| revision_of(o.replica_set))
        .max()
        .unwrap_or(0);

    let Some(new_owned) = owned.iter().find(|o| {
        str_at(o.replica_set, &["metadata", "labels", HASH_LABEL]) == Some(hash.as_str())
            || name(o.replica_set) == new_name
    }) else {
        return Step::CreateReplicaSet(new_replica_set(
            dep,
            &spec,
            &new_name,
            &hash,
            max_revision + 1,
        ));
    };
    let new_rs_name = name(new_owned.replica_set).to_owned();

    let mut sets: Vec<RsView<'_>> = owned
        .iter()
        .map(|o| RsView {
            obj: o.replica_set,
            name: name(o.replica_set).to_owned(),
            is_new: name(o.replica_set) == new_rs_name,
            revision: revision_of(o.replica_set),
            replicas: i64_at(o.replica_set, &["spec", "replicas"])
                .unwrap_or(1)
                .max(0),
            pods: o
                .pods
                .iter()
                .map(|p| {
                    let ready = pod::is_ready(p) && !super::meta::is_deleting(p);
                    // Without minReadySeconds a Ready Pod is available at once.
                    let available = ready
                        && (spec.min_ready_secs == 0
                            || pod::ready_since(p)
                                .is_some_and(|since| add_secs(since, spec.min_ready_secs) <= now));
                    PodView {
                        name: Some(name(p).to_owned()),
                        ready,
                        available,
                    }
                })
                .collect(),
        })
        .collect();
    // Old ReplicaSets are drained oldest revision first, as the real controller does.
    sets.sort_by_key(|s| (s.is_new, s.revision, s.name.clone()));
    let original: Vec<(i64, Vec<Option<String>>)> = sets
        .iter()
        .map(|s| (s.replicas, s.pods.iter().map(|p| p.name.clone()).collect()))
        .collect();

    // Repeat until nothing moves: creating Pods never makes them available, so this settles in
    // two or three rounds; the bound only guards against a logic slip.
    for _ in 0..8 {
        let before: Vec<i64> = sets.iter().map(|s| s.replicas).collect();
        rollout_step(&spec, &mut sets);
        for s in &mut sets {
            sync_pods(s);
        }
        if before == sets.iter().map(|s| s.replicas).collect::<Vec<_>>() {
            break;
        }
    }

    let mut plan = Plan::default();
    let new_revision = if sets
        .iter()
        .any(|s| !s.is_new && s.revision >= revision_of(new_owned.replica_set))
    {
        max_revision + 1
    } else {
        revision_of(new_owned.replica_set).max(1)
    };
    let max_replicas = spec.replicas + spec.max_surge();
    for (s, (orig_replicas, orig_pods)) in sets.iter().zip(&original) {
        let mut annotations = BTreeMap::new();
        // Like the real controller, size annotations are refreshed on the RSs it scales.
        let sized = s.is_new || s.replicas != *orig_replicas;
        let want_annotations = [
            (
                REVISION_ANNOTATION,
                s.is_new.then(|| new_revision.to_string()),
            ),
            (
                DESIRED_REPLICAS_ANNOTATION,
                sized.then(|| spec.replicas.to_string()),
            ),
            (
                MAX_REPLICAS_ANNOTATION,
                sized.then(|| max_replicas.to_string()),
            ),
        ];
        for (key, want) in want_annotations {
            if let Some(want) = want
                && str_at(s.obj, &["metadata", "annotations", key]) != Some(want.as_str())
            {
                annotations.insert(key.to_owned(), want);
            }
        }
        if s.replicas != *orig_replicas || !annotations.is_empty() {
            plan.scale.push(ScaleReplicaSet {
                name: s.name.clone(),
                replicas: s.replicas,
                annotations,
            });
        }
        let kept: Vec<&String> = s.pods.iter().filter_map(|p| p.name.as_ref()).collect();
        plan.delete_pods.extend(
            orig_pods
                .iter()
                .flatten()
                .filter(|n| !kept.contains(n))
                .cloned(),
        );
        let to_create = s.pods.iter().filter(|p| p.name.is_none()).count();
        plan.create_pods
            .extend((0..to_create).map(|_| new_pod(s.obj, &s.name, rng)));

        let status = replica_set_status(s);
        let current = s.obj.get("status").cloned().unwrap_or(Value::Null);
        if !same_ignoring(&current, &status, "observedGeneration")
            || s.replicas != *orig_replicas
            || i64_at(s.obj, &["status", "observedGeneration"]) != Some(generation(s.obj))
        {
            plan.replica_set_status.push((s.name.clone(), status));
        }
    }
    if str_at(dep, &["metadata", "annotations", REVISION_ANNOTATION])
        != Some(new_revision.to_string().as_str())
    {
        plan.revision = Some(new_revision.to_string());
    }

    let (status, progressed_at, wake_at) =
        deployment_status(dep, &spec, &sets, &new_rs_name, now, progress_hint);
    if dep.get("status") != Some(&status) {
        plan.status = Some(status);
    }
    plan.progressed_at = progressed_at;
    plan.wake_at = [wake_at, next_availability(&spec, owned, now)]
        .into_iter()
        .flatten()
        .min();
    Step::Sync(plan)
}

/// One pass of the rollout strategy over the ReplicaSets' desired sizes.
fn rollout_step(spec: &Spec<'_>, sets: &mut [RsView<'_>]) {
    let r = spec.replicas;
    let olds_active = sets.iter().any(|s| !s.is_new && s.replicas > 0);
    let Some(new_idx) = sets.iter().position(|s| s.is_new) else {
        return;
    };
    match spec.strategy {
        Strategy::Recreate => {
            for s in sets.iter_mut().filter(|s| !s.is_new) {
                s.replicas = 0;
            }
            sets[new_idx].replicas = r;
        }
        Strategy::Rolling { surge, unavailable } => {
            if !olds_active || sets[new_idx].replicas > r {
                sets[new_idx].replicas = r;
                if !olds_active {
                    return;
                }
            }
            // Grow the new ReplicaSet within the surge budget.
            let total: i64 = sets.iter().map(|s| s.replicas).sum();
            let new = &mut sets[new_idx];
            if new.replicas < r && total < r + surge {
                new.replicas += (r + surge - total).min(r - new.replicas);
            }
            // Shrink old ReplicaSets while enough Pods stay available.
            let all: i64 = sets.iter().map(|s| s.replicas).sum();
            let min_available = r - unavailable;
            let new_unavailable = (sets[new_idx].replicas - sets[new_idx].available()).max(0);
            let max_scaled_down = all - min_available - new_unavailable;
            if max_scaled_down <= 0 {
                return;
            }
            // First the old Pods that are not available anyway.
            let mut cleaned = 0;
            for s in sets.iter_mut().filter(|s| !s.is_new) {
                let unhealthy = (s.replicas - s.available()).max(0);
                let d = unhealthy.min(max_scaled_down - cleaned);
                if d > 0 {
                    s.replicas -= d;
                    cleaned += d;
                    sync_pods(s);
                }
            }
            let available: i64 = sets.iter().map(RsView::available).sum();
            let mut budget = (available - min_available).min(max_scaled_down - cleaned);
            for s in sets.iter_mut().filter(|s| !s.is_new) {
                let d = s.replicas.min(budget);
                if d > 0 {
                    s.replicas -= d;
                    budget -= d;
                }
            }
        }
    }
}

/// Creates placeholders or drops Pods so the RS has `replicas` Pods. Drops the least useful
/// first: Pods not created yet, then not ready, then not available, then by name.
fn sync_pods(s: &mut RsView<'_>) {
    let want = usize::try_from(s.replicas).unwrap_or(0);
    while s.pods.len() < want {
        s.pods.push(PodView {
            name: None,
            ready: false,
            available: false,
        });
    }
    if s.pods.len() > want {
        s.pods.sort_by(|a, b| {
            (a.name.is_some(), a.ready, a.available, &a.name).cmp(&(
                b.name.is_some(),
                b.ready,
                b.available,
                &b.name,
            ))
        });
        let excess = s.pods.len() - want;
        s.pods.drain(..excess);
    }
}

fn replica_set_status(s: &RsView<'_>) -> Value {
    let mut status = Map::new();
    let pods = len_i64(&s.pods);
    status.insert("replicas".into(), json!(pods));
    for (key, n) in [
        ("fullyLabeledReplicas", pods),
        ("readyReplicas", s.ready()),
        ("availableReplicas", s.available()),
    ] {
        if n > 0 {
            status.insert(key.into(), json!(n));
        }
    }
    Value::Object(status)
}

fn same_ignoring(a: &Value, b: &Value, key: &str) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove(key);
            m.remove("conditions");
        }
        v
    };
    strip(a) == strip(b)
}

/// The earliest time a Ready Pod becomes available through `minReadySeconds`.
fn next_availability(spec: &Spec<'_>, owned: &[Owned<'_>], now: Timestamp) -> Option<Timestamp> {
    if spec.min_ready_secs == 0 {
        return None;
    }
    owned
        .iter()
        .flat_map(|o| o.pods.iter())
        .filter_map(|p| pod::ready_since(p))
        .map(|since| add_secs(since, spec.min_ready_secs))
        .filter(|t| *t > now)
        .min()
}

/// The Deployment status after this plan, the precise progress time it records, and when the
/// progress deadline falls (if the rollout is still going).
fn deployment_status(
    dep: &Value,
    spec: &Spec<'_>,
    sets: &[RsView<'_>],
    new_rs: &str,
    now: Timestamp,
    progress_hint: Option<Timestamp>,
) -> (Value, Option<Timestamp>, Option<Timestamp>) {
    let old_status = dep.get("status").cloned().unwrap_or_else(|| json!({}));
    let old = |k: &str| old_status.get(k).and_then(Value::as_i64).unwrap_or(0);
    let replicas: i64 = sets.iter().map(|s| len_i64(&s.pods)).sum();
    let updated: i64 = sets
        .iter()
        .filter(|s| s.is_new)
        .map(|s| len_i64(&s.pods))
        .sum();
    let ready: i64 = sets.iter().map(RsView::ready).sum();
    let available: i64 = sets.iter().map(RsView::available).sum();
    let desired_total: i64 = sets.iter().map(|s| s.replicas).sum();
    let unavailable = (desired_total - available).max(0);

    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(generation(dep)));
    for (key, n) in [
        ("replicas", replicas),
        ("updatedReplicas", updated),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("unavailableReplicas", unavailable),
    ] {
        if n > 0 {
            status.insert(key.into(), json!(n));
        }
    }
    if let Some(c) = old_status.get("collisionCount") {
        status.insert("collisionCount".into(), c.clone());
    }

    let now_s = time_str(now);
    let mut conds = conditions(&old_status);
    let mut progressed_at = None;

    // A rollout starts when the Progressing condition speaks of another ReplicaSet.
    let quoted = format!("\"{new_rs}\"");
    let progressing = find_condition(&conds, "Progressing");
    let rollout_started = !cond_field(progressing, "message").is_some_and(|m| m.contains(&quoted));
    if rollout_started {
        let fresh = sets
            .iter()
            .find(|s| s.is_new)
            .is_some_and(|s| s.pods.iter().all(|p| p.name.is_none()));
        let (reason, message) = if fresh || progressing.is_none() {
            (
                "NewReplicaSetCreated",
                format!("Created new replica set {quoted}"),
            )
        } else {
            (
                "FoundNewReplicaSet",
                format!("Found new replica set {quoted}"),
            )
        };
        set_condition(&mut conds, "Progressing", "True", reason, &message, &now_s);
        progressed_at = Some(now);
    }

    let available_ok = available >= spec.replicas - spec.max_unavailable();
    if available_ok {
        set_condition(
            &mut conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            &now_s,
        );
    } else {
        set_condition(
            &mut conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            &now_s,
        );
    }

    let complete =
        updated == spec.replicas && replicas == spec.replicas && available == spec.replicas;
    // Progress as the real controller measures it: more updated, ready or available Pods, or
    // fewer old ones.
    // A new ReplicaSet starts from zero updated replicas (the real controller writes that
    // intermediate status before the RS reports its Pods).
    let old_updated = if rollout_started {
        0
    } else {
        old("updatedReplicas")
    };
    let made_progress = updated > old_updated
        || replicas - updated < old("replicas") - old_updated
        || ready > old("readyReplicas")
        || available > old("availableReplicas");
    let mut deadline = None;
    if complete {
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet {quoted} has successfully progressed."),
            &now_s,
        );
    } else if made_progress {
        // Unlike other conditions, Progressing refreshes lastUpdateTime on every step.
        let transition = match find_condition(&conds, "Progressing") {
            Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => c
                .get("lastTransitionTime")
                .and_then(Value::as_str)
                .unwrap_or(&now_s)
                .to_owned(),
            _ => now_s.clone(),
        };
        conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("Progressing"));
        conds.push(json!({
            "type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
            "message": format!("ReplicaSet {quoted} is progressing."),
            "lastUpdateTime": now_s, "lastTransitionTime": transition,
        }));
        progressed_at = Some(now);
        deadline = Some(add_secs(now, spec.deadline_secs));
    } else {
        let cond = find_condition(&conds, "Progressing");
        match cond_field(cond, "reason") {
            Some("NewReplicaSetAvailable") | Some("ProgressDeadlineExceeded") | None => {}
            Some(_) => {
                let recorded = parse_time(cond.and_then(|c| c.get("lastUpdateTime")));
                // The hint keeps sub-second precision when it matches the recorded second.
                let from = match (progress_hint, recorded) {
                    (Some(h), Some(r)) if time_str(h) == time_str(r) => h,
                    (_, Some(r)) => r,
                    (Some(h), None) => h,
                    (None, None) => now,
                };
                let due = add_secs(from, spec.deadline_secs);
                if due <= now {
                    set_condition(
                        &mut conds,
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        &format!("ReplicaSet {quoted} has timed out progressing."),
                        &now_s,
                    );
                } else {
                    deadline = Some(due);
                }
            }
        }
    }
    if progressed_at.is_some() && deadline.is_none() && !complete {
        deadline = progressed_at.map(|t| add_secs(t, spec.deadline_secs));
    }
    status.insert("conditions".into(), Value::Array(conds));
    (Value::Object(status), progressed_at, deadline)
}

/// Kubernetes' `SetDeploymentCondition`: no change when status and reason are the same; the
/// transition time is kept when only the reason changes; the condition moves to the end.
fn set_condition(
    conds: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    let current = find_condition(conds, kind);
    if cond_field(current, "status") == Some(status)
        && cond_field(current, "reason") == Some(reason)
    {
        return;
    }
    let transition = match current {
        Some(c) if cond_field(Some(c), "status") == Some(status) => {
            cond_field(Some(c), "lastTransitionTime")
                .unwrap_or(now)
                .to_owned()
        }
        _ => now.to_owned(),
    };
    conds.retain(|c| c.get("type").and_then(Value::as_str) != Some(kind));
    conds.push(json!({
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": transition,
    }));
}

/// The pod template with the hash label added, as a ReplicaSet (and its Pods) carry it.
fn labelled_template(template: &Value, hash: &str) -> Value {
    let mut t = if template.is_object() {
        template.clone()
    } else {
        json!({})
    };
    let mut labels = string_map(at(&t, &["metadata", "labels"]));
    labels.insert(HASH_LABEL.into(), json!(hash));
    match t.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => {
            m.insert("labels".into(), Value::Object(labels));
        }
        None => {
            t["metadata"] = json!({ "labels": labels });
        }
    }
    t
}

fn new_replica_set(
    dep: &Value,
    spec: &Spec<'_>,
    rs_name: &str,
    hash: &str,
    revision: i64,
) -> Value {
    let template = labelled_template(spec.template, hash);
    let mut selector = at(dep, &["spec", "selector"])
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut match_labels = string_map(selector.get("matchLabels"));
    match_labels.insert(HASH_LABEL.into(), json!(hash));
    selector["matchLabels"] = Value::Object(match_labels);
    let mut rs_spec = json!({
        "replicas": 0,
        "selector": selector,
        "template": template,
    });
    if spec.min_ready_secs > 0 {
        rs_spec["minReadySeconds"] = json!(spec.min_ready_secs);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": rs_name,
            "namespace": namespace(dep),
            "labels": template["metadata"]["labels"].clone(),
            "annotations": {
                REVISION_ANNOTATION: revision.to_string(),
                DESIRED_REPLICAS_ANNOTATION: spec.replicas.to_string(),
                MAX_REPLICAS_ANNOTATION: (spec.replicas + spec.max_surge()).to_string(),
            },
            "ownerReferences": [owner_reference("apps/v1", "Deployment", dep)],
        },
        "spec": rs_spec,
    })
}

/// A Pod of `rs`: `<rs>-<5 random chars>`, the RS template's labels, annotations and spec.
fn new_pod(rs: &Value, rs_name: &str, rng: &mut impl Rng) -> Value {
    let template = at(rs, &["spec", "template"])
        .cloned()
        .unwrap_or(Value::Null);
    let mut metadata = Map::new();
    metadata.insert(
        "name".into(),
        json!(format!("{rs_name}-{}", random_suffix(rng, 5))),
    );
    metadata.insert("generateName".into(), json!(format!("{rs_name}-")));
    metadata.insert("namespace".into(), json!(namespace(rs)));
    metadata.insert(
        "labels".into(),
        Value::Object(string_map(at(&template, &["metadata", "labels"]))),
    );
    let annotations = string_map(at(&template, &["metadata", "annotations"]));
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    metadata.insert(
        "ownerReferences".into(),
        json!([owner_reference("apps/v1", "ReplicaSet", rs)]),
    );
    let mut spec = template
        .get("spec")
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or_else(|| json!({"containers": []}));
    spec["nodeName"] = json!(pod::NODE_NAME);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// Whether `rs` is controlled by `dep` (by uid, so a recreated namesake is not adopted).
pub fn controls(owner: &Value, child: &Value) -> bool {
    controller_owner(child)
        .is_some_and(|(_, n, u)| n == name(owner) && u == super::meta::uid(owner))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::time::Duration;

    /// A tiny in-memory world that applies plans and runs the kubelet, so scenarios can fold
    /// several ticks the way the driver does, with a controlled clock.
    struct World {
        dep: Value,
        sets: Vec<Value>,
        pods: Vec<(Value, Timestamp)>,
        now: Timestamp,
        delay: Duration,
        hint: Option<Timestamp>,
        rng: StdRng,
        uids: u32,
        next_wake: Option<Timestamp>,
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "dep-uid", "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {
                    "metadata": {"labels": {"app": "podinfo"}, "annotations": {"prometheus.io/scrape": "true"}},
                    "spec": {"containers": [{"name": "podinfod", "image": image}]},
                },
            },
        })
    }

    impl World {
        fn new(dep: Value) -> Self {
            Self {
                dep,
                sets: vec![],
                pods: vec![],
                now: "2024-05-01T10:00:00Z".parse().unwrap(),
                delay: Duration::from_secs(1),
                hint: None,
                rng: StdRng::seed_from_u64(7),
                uids: 0,
                next_wake: None,
            }
        }

        fn uid(&mut self) -> String {
            self.uids += 1;
            format!("uid-{}", self.uids)
        }

        fn advance(&mut self, millis: i64) {
            self.now = self
                .now
                .checked_add(jiff::SignedDuration::from_millis(millis))
                .unwrap();
        }

        fn edit_spec(&mut self, f: impl FnOnce(&mut Value)) {
            f(&mut self.dep["spec"]);
            let g = generation(&self.dep);
            self.dep["metadata"]["generation"] = json!(g + 1);
        }

        fn kubelet(&mut self) {
            let mut n = 0;
            for (p, born) in &mut self.pods {
                let (status, _) = pod::desired_status(p, *born, self.now, self.delay, || {
                    n += 1;
                    format!("127.0.0.{n}")
                });
                p["status"] = status;
            }
        }

        /// One reconcile, applied; returns the Sync plan.
        fn tick(&mut self) -> Plan {
            self.kubelet();
            for _ in 0..2 {
                let pods: Vec<Vec<&Value>> = self
                    .sets
                    .iter()
                    .map(|rs| {
                        self.pods
                            .iter()
                            .map(|(p, _)| p)
                            .filter(|p| controls(rs, p))
                            .collect()
                    })
                    .collect();
                let owned: Vec<Owned<'_>> = self
                    .sets
                    .iter()
                    .zip(&pods)
                    .map(|(rs, pods)| Owned {
                        replica_set: rs,
                        pods,
                    })
                    .collect();
                let step = plan(&self.dep, &owned, self.now, self.hint, &mut self.rng);
                match step {
                    Step::CreateReplicaSet(mut rs) => {
                        rs["metadata"]["uid"] = json!(self.uid());
                        rs["metadata"]["generation"] = json!(1);
                        assert!(controls(&self.dep, &rs));
                        self.sets.push(rs);
                    }
                    Step::Sync(plan) => {
                        self.apply(&plan);
                        return plan;
                    }
                }
            }
            panic!("no sync after creating the ReplicaSet");
        }

        fn apply(&mut self, plan: &Plan) {
            for s in &plan.scale {
                let rs = self.sets.iter_mut().find(|r| name(r) == s.name).unwrap();
                if rs["spec"]["replicas"] != json!(s.replicas) {
                    rs["spec"]["replicas"] = json!(s.replicas);
                    let g = generation(rs);
                    rs["metadata"]["generation"] = json!(g + 1);
                }
                for (k, v) in &s.annotations {
                    rs["metadata"]["annotations"][k] = json!(v);
                }
            }
            self.pods
                .retain(|(p, _)| !plan.delete_pods.iter().any(|d| d == name(p)));
            for p in &plan.create_pods {
                let mut p = p.clone();
                p["metadata"]["uid"] = json!(self.uid());
                assert!(self.pods.iter().all(|(q, _)| name(q) != name(&p)));
                self.pods.push((p, self.now));
            }
            self.kubelet();
            for (n, status) in &plan.replica_set_status {
                let rs = self.sets.iter_mut().find(|r| name(r) == n).unwrap();
                let mut status = status.clone();
                status["observedGeneration"] = json!(generation(rs));
                rs["status"] = status;
            }
            if let Some(r) = &plan.revision {
                self.dep["metadata"]["annotations"] = json!({ REVISION_ANNOTATION: r });
            }
            if let Some(s) = &plan.status {
                self.dep["status"] = s.clone();
            }
            if plan.progressed_at.is_some() {
                self.hint = plan.progressed_at;
            }
            self.next_wake = plan.wake_at;
        }

        fn status(&self, field: &str) -> i64 {
            self.dep["status"]
                .get(field)
                .and_then(Value::as_i64)
                .unwrap_or(0)
        }

        fn counts(&self) -> [i64; 5] {
            [
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
                "unavailableReplicas",
            ]
            .map(|f| self.status(f))
        }

        fn condition(&self, kind: &str) -> (String, String, String) {
            let c = self.dep["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == kind)
                .unwrap();
            let s = |f: &str| c[f].as_str().unwrap().to_owned();
            (s("status"), s("reason"), s("message"))
        }

        fn new_rs_name(&self) -> String {
            format!("podinfo-{}", template_hash(&self.dep["spec"]["template"]))
        }

        fn pods_of(&self, rs: &str) -> Vec<&Value> {
            self.pods
                .iter()
                .map(|(p, _)| p)
                .filter(|p| controller_owner(p).is_some_and(|(_, n, _)| n == rs))
                .collect()
        }
    }

    #[test]
    fn a_new_deployment_becomes_available_after_the_ready_delay() {
        let mut w = World::new(deployment(2, "podinfo:6.0.0"));
        w.tick();
        let rs = w.new_rs_name();
        assert_eq!(w.sets.len(), 1);
        let set = &w.sets[0];
        assert_eq!(name(set), rs);
        assert_eq!(set["spec"]["replicas"], 2);
        assert_eq!(
            set["metadata"]["labels"][HASH_LABEL],
            rs.trim_start_matches("podinfo-")
        );
        assert_eq!(set["spec"]["selector"]["matchLabels"]["app"], "podinfo");
        assert_eq!(set["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(set["metadata"]["annotations"][REVISION_ANNOTATION], "1");
        assert_eq!(w.pods.len(), 2);
        for (p, _) in &w.pods {
            assert!(name(p).starts_with(&format!("{rs}-")));
            assert_eq!(name(p).len(), rs.len() + 6);
            assert_eq!(p["metadata"]["labels"]["app"], "podinfo");
            assert_eq!(p["metadata"]["annotations"]["prometheus.io/scrape"], "true");
            assert_eq!(p["spec"]["containers"][0]["image"], "podinfo:6.0.0");
            assert_eq!(p["status"]["phase"], "Pending");
        }
        // Before the delay: rolled out, nothing ready.
        assert_eq!(w.dep["status"]["observedGeneration"], 1);
        assert_eq!(w.counts(), [2, 2, 0, 0, 2]);
        assert_eq!(w.condition("Available").1, "MinimumReplicasUnavailable");
        assert_eq!(
            w.condition("Progressing"),
            (
                "True".into(),
                "ReplicaSetUpdated".into(),
                format!("ReplicaSet \"{rs}\" is progressing.")
            )
        );

        w.advance(999);
        let plan = w.tick();
        assert!(
            plan.is_empty(),
            "nothing changes before the delay: {plan:?}"
        );

        w.advance(1);
        w.tick();
        assert_eq!(w.counts(), [2, 2, 2, 2, 0]);
        assert!(w.dep["status"].get("unavailableReplicas").is_none());
        assert_eq!(
            w.condition("Available"),
            (
                "True".into(),
                "MinimumReplicasAvailable".into(),
                "Deployment has minimum availability.".into()
            )
        );
        assert_eq!(
            w.condition("Progressing"),
            (
                "True".into(),
                "NewReplicaSetAvailable".into(),
                format!("ReplicaSet \"{rs}\" has successfully progressed.")
            )
        );
        assert_eq!(w.sets[0]["status"]["readyReplicas"], 2);
        assert_eq!(w.dep["metadata"]["annotations"][REVISION_ANNOTATION], "1");

        // Settled: no writes, no timer.
        w.advance(60_000);
        let plan = w.tick();
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn a_template_change_rolls_out_through_a_new_replica_set() {
        let mut w = World::new(deployment(2, "podinfo:6.0.0"));
        w.tick();
        w.advance(1000);
        w.tick();
        let old_rs = w.new_rs_name();
        w.edit_spec(|s| s["template"]["spec"]["containers"][0]["image"] = json!("podinfo:6.0.1"));
        let new_rs = w.new_rs_name();
        assert_ne!(old_rs, new_rs);

        w.advance(10);
        w.tick();
        // In progress, as a real Deployment shows it: generation observed, one surge Pod.
        assert_eq!(w.dep["status"]["observedGeneration"], 2);
        assert_eq!(w.counts(), [3, 1, 2, 2, 1]);
        assert_eq!(w.pods_of(&new_rs).len(), 1);
        assert_eq!(w.pods_of(&old_rs).len(), 2);
        let (status, reason, message) = w.condition("Progressing");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "ReplicaSetUpdated")
        );
        assert_eq!(message, format!("ReplicaSet \"{new_rs}\" is progressing."));
        assert_eq!(w.condition("Available").1, "MinimumReplicasAvailable");
        let new_set = w.sets.iter().find(|s| name(s) == new_rs).unwrap();
        assert_eq!(new_set["metadata"]["annotations"][REVISION_ANNOTATION], "2");
        assert_eq!(
            new_set["spec"]["template"]["spec"]["containers"][0]["image"],
            "podinfo:6.0.1"
        );

        // Step two: the surge Pod is ready, one old Pod goes, a second new Pod starts.
        w.advance(1000);
        w.tick();
        assert_eq!(w.counts(), [3, 2, 2, 2, 1]);
        assert_eq!(w.pods_of(&old_rs).len(), 1);

        w.advance(1000);
        w.tick();
        assert_eq!(w.counts(), [2, 2, 2, 2, 0]);
        assert!(w.pods_of(&old_rs).is_empty());
        let old_set = w.sets.iter().find(|s| name(s) == old_rs).unwrap();
        assert_eq!(old_set["spec"]["replicas"], 0);
        assert_eq!(old_set["status"]["replicas"], 0);
        assert_eq!(w.condition("Progressing").1, "NewReplicaSetAvailable");
        assert_eq!(w.dep["metadata"]["annotations"][REVISION_ANNOTATION], "2");
        assert!(w.tick().is_empty());

        // Rolling back re-uses the first ReplicaSet under a new revision.
        w.edit_spec(|s| s["template"]["spec"]["containers"][0]["image"] = json!("podinfo:6.0.0"));
        w.tick();
        assert_eq!(w.new_rs_name(), old_rs);
        assert_eq!(w.sets.len(), 2);
        let back = w.sets.iter().find(|s| name(s) == old_rs).unwrap();
        assert_eq!(back["metadata"]["annotations"][REVISION_ANNOTATION], "3");
        assert_eq!(
            w.condition("Progressing").2,
            format!("ReplicaSet \"{old_rs}\" is progressing.")
        );
    }

    #[test]
    fn never_ready_pods_exceed_the_progress_deadline() {
        let mut dep = deployment(1, "podinfo:broken");
        dep["spec"]["progressDeadlineSeconds"] = json!(2);
        dep["spec"]["template"]["metadata"]["annotations"][pod::NEVER_READY_ANNOTATION] =
            json!("true");
        let mut w = World::new(dep);
        w.advance(300); // not on a whole second, to check the deadline keeps sub-second precision
        let start = w.now;
        w.tick();
        assert_eq!(w.condition("Progressing").1, "ReplicaSetUpdated");
        assert_eq!(w.next_wake, Some(add_secs(start, 2)));

        w.advance(1500);
        w.tick();
        assert_eq!(w.pods[0].0["status"]["phase"], "Running");
        assert_eq!(w.counts(), [1, 1, 0, 0, 1]);
        assert_eq!(w.condition("Progressing").1, "ReplicaSetUpdated");

        w.advance(499);
        w.tick();
        assert_eq!(w.condition("Progressing").1, "ReplicaSetUpdated");
        w.advance(1);
        w.tick();
        let rs = w.new_rs_name();
        assert_eq!(
            w.condition("Progressing"),
            (
                "False".into(),
                "ProgressDeadlineExceeded".into(),
                format!("ReplicaSet \"{rs}\" has timed out progressing.")
            )
        );
        assert_eq!(w.condition("Available").1, "MinimumReplicasUnavailable");
        assert_eq!(w.status("availableReplicas"), 0);
        assert_eq!(w.next_wake, None);
        w.advance(60_000);
        assert!(w.tick().is_empty());

        // A fixed template starts a new rollout and recovers.
        w.edit_spec(|s| {
            s["template"]["metadata"]["annotations"] = json!({});
            s["template"]["spec"]["containers"][0]["image"] = json!("podinfo:fixed");
        });
        w.tick();
        assert_eq!(w.condition("Progressing").1, "ReplicaSetUpdated");
        w.advance(1000);
        w.tick();
        assert_eq!(w.condition("Progressing").1, "NewReplicaSetAvailable");
        assert_eq!(w.counts(), [1, 1, 1, 1, 0]);
    }

    #[test]
    fn scaling_to_zero_removes_the_pods_and_zeroes_the_status() {
        let mut w = World::new(deployment(3, "podinfo:6.0.0"));
        w.tick();
        w.advance(1000);
        w.tick();
        assert_eq!(w.counts(), [3, 3, 3, 3, 0]);
        w.edit_spec(|s| s["replicas"] = json!(0));
        w.tick();
        assert!(w.pods.is_empty());
        assert_eq!(w.counts(), [0; 5]);
        for field in [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ] {
            assert!(
                w.dep["status"].get(field).is_none(),
                "{field} is omitted at zero"
            );
        }
        assert_eq!(w.dep["status"]["observedGeneration"], 2);
        assert_eq!(w.condition("Available").0, "True");
        assert_eq!(w.sets[0]["spec"]["replicas"], 0);
        assert_eq!(w.sets[0]["status"]["replicas"], 0);

        // And back up: ready after the delay again.
        w.edit_spec(|s| s["replicas"] = json!(2));
        w.tick();
        assert_eq!(w.counts(), [2, 2, 0, 0, 2]);
        w.advance(1000);
        w.tick();
        assert_eq!(w.counts(), [2, 2, 2, 2, 0]);
    }

    #[test]
    fn recreate_replaces_all_pods_at_once() {
        let mut dep = deployment(3, "podinfo:6.0.0");
        dep["spec"]["strategy"] = json!({"type": "Recreate"});
        let mut w = World::new(dep);
        w.tick();
        w.advance(1000);
        w.tick();
        w.edit_spec(|s| s["template"]["spec"]["containers"][0]["image"] = json!("podinfo:6.0.1"));
        w.tick();
        assert_eq!(w.counts(), [3, 3, 0, 0, 3]);
        assert_eq!(w.pods_of(&w.new_rs_name()).len(), 3);
        assert_eq!(w.condition("Available").1, "MinimumReplicasUnavailable");
    }

    #[test]
    fn max_unavailable_without_surge_removes_old_pods_first() {
        let mut dep = deployment(4, "podinfo:6.0.0");
        dep["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "50%"}});
        let mut w = World::new(dep);
        w.tick();
        w.advance(1000);
        w.tick();
        let old_rs = w.new_rs_name();
        w.edit_spec(|s| s["template"]["spec"]["containers"][0]["image"] = json!("podinfo:6.0.1"));
        w.tick();
        // Two old Pods go, two new Pods start; never more than four Pods.
        assert_eq!(w.pods_of(&old_rs).len(), 2);
        assert_eq!(w.pods_of(&w.new_rs_name()).len(), 2);
        assert_eq!(w.counts(), [4, 2, 2, 2, 2]);
        assert_eq!(w.condition("Available").1, "MinimumReplicasAvailable");
        w.advance(1000);
        w.tick();
        w.advance(1000);
        w.tick();
        assert_eq!(w.counts(), [4, 4, 4, 4, 0]);
        assert!(w.pods_of(&old_rs).is_empty());
    }

    #[test]
    fn min_ready_seconds_delays_availability() {
        let mut dep = deployment(1, "podinfo:6.0.0");
        dep["spec"]["minReadySeconds"] = json!(5);
        let mut w = World::new(dep);
        w.tick();
        w.advance(1000);
        w.tick();
        assert_eq!(w.counts(), [1, 1, 1, 0, 1]);
        assert_eq!(
            w.next_wake,
            Some(add_secs("2024-05-01T10:00:01Z".parse().unwrap(), 5))
        );
        w.advance(5000);
        w.tick();
        assert_eq!(w.counts(), [1, 1, 1, 1, 0]);
        assert_eq!(w.condition("Progressing").1, "NewReplicaSetAvailable");
    }

    #[test]
    fn a_deleted_pod_is_replaced() {
        let mut w = World::new(deployment(2, "podinfo:6.0.0"));
        w.tick();
        w.advance(1000);
        w.tick();
        let gone = name(&w.pods[0].0).to_owned();
        w.pods.remove(0);
        w.tick();
        assert_eq!(w.pods.len(), 2);
        assert!(w.pods.iter().all(|(p, _)| name(p) != gone));
        assert_eq!(w.counts(), [2, 2, 1, 1, 1]);
    }

    #[test]
    fn a_template_without_labels_or_spec_does_not_panic() {
        let dep = json!({"metadata": {"name": "odd", "namespace": "test", "uid": "u"},
                         "spec": {"template": "not an object", "replicas": -3,
                                  "strategy": {"rollingUpdate": {"maxSurge": "x%"}}}});
        let mut w = World::new(dep);
        w.tick();
        assert_eq!(w.sets.len(), 1);
        assert!(w.pods.is_empty());
    }
}
