//! The e2e invariant checker (tests/e2e/invariants.rs) can fail: bad sequences of changes, written
//! straight into a testbed store, each produce the violation they should — and a correct
//! promotion produces none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/invariants.rs"]
mod invariants;

use flagger_testbed::store::{ResourceId, Store};
use invariants::{Invariant, Invariants};
use serde_json::{Value, json};

const NS: &str = "checker";

fn canaries() -> ResourceId {
    ResourceId::new("flagger.app", "canaries")
}
fn deployments() -> ResourceId {
    ResourceId::new("apps", "deployments")
}
fn vss() -> ResourceId {
    ResourceId::new("networking.istio.io", "virtualservices")
}
fn services() -> ResourceId {
    ResourceId::new("", "services")
}

struct World {
    store: Store,
    checker: Invariants,
    uid: String,
}

fn deployment(
    name: &str,
    image: &str,
    replicas: i64,
    available: i64,
    owner: Option<&str>,
) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
        "status": {"availableReplicas": available}
    });
    if let Some(uid) = owner {
        d["metadata"]["ownerReferences"] = json!([{"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "name": "podinfo", "uid": uid, "controller": true}]);
    }
    d
}

impl World {
    /// A namespace, the target podinfo:1 (1 replica, available) and a Canary (max 50, step 10,
    /// threshold 2, deadline 60 s) with `extra` merged into its spec.
    fn new(extra: Value) -> World {
        let store = Store::default();
        let checker = Invariants::start(&store);
        store
            .create(
                &ResourceId::new("", "namespaces"),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
            )
            .unwrap();
        store
            .create(
                &deployments(),
                deployment("podinfo", "podinfo:1", 1, 1, None),
            )
            .unwrap();
        let mut spec = json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898},
            "analysis": {"interval": "1s", "threshold": 2, "maxWeight": 50, "stepWeight": 10}
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        let c = store
            .create(
                &canaries(),
                json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                       "metadata": {"name": "podinfo", "namespace": NS}, "spec": spec}),
            )
            .unwrap();
        let uid = c["metadata"]["uid"].as_str().unwrap().to_owned();
        World {
            store,
            checker,
            uid,
        }
    }

    fn status(&self, status: Value) {
        self.store
            .modify(&canaries(), NS, "podinfo", false, |c| c["status"] = status)
            .unwrap();
    }

    /// Primary (owned, podinfo:1, available), VS 100/0, status Initialized.
    fn initialized(&self) {
        self.store
            .create(
                &deployments(),
                deployment("podinfo-primary", "podinfo:1", 1, 1, Some(&self.uid)),
            )
            .unwrap();
        let mut vs = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": "podinfo", "namespace": NS, "ownerReferences": [{"apiVersion": "flagger.app/v1beta1",
                "kind": "Canary", "name": "podinfo", "uid": self.uid, "controller": true}]},
            "spec": {"http": []}});
        vs["spec"]["http"] = routes(100, 0)["http"].clone();
        self.store.create(&vss(), vs).unwrap();
        self.status(
            json!({"phase": "Initialized", "canaryWeight": 0, "failedChecks": 0,
            "lastAppliedSpec": "r1", "lastPromotedSpec": "r1"}),
        );
    }

    fn weights(&self, primary: i64, canary: i64) {
        self.store
            .modify(&vss(), NS, "podinfo", false, |vs| {
                vs["spec"]["http"] = routes(primary, canary)["http"].clone()
            })
            .unwrap();
    }

    fn set_image(&self, name: &str, image: &str) {
        self.store
            .modify(&deployments(), NS, name, false, |d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image)
            })
            .unwrap();
    }

    fn progressing(&self, weight: i64, failed: i64) {
        self.status(
            json!({"phase": "Progressing", "canaryWeight": weight, "failedChecks": failed,
            "lastAppliedSpec": "r2", "lastPromotedSpec": "r1"}),
        );
    }

    fn violations(self) -> Vec<(Invariant, String)> {
        self.checker
            .into_report()
            .violations
            .into_iter()
            .map(|v| (v.invariant, v.message))
            .collect()
    }
}

fn routes(primary: i64, canary: i64) -> Value {
    json!({"http": [{"route": [
        {"destination": {"host": "podinfo-primary"}, "weight": primary},
        {"destination": {"host": "podinfo-canary"}, "weight": canary}
    ]}]})
}

fn kinds(v: &[(Invariant, String)]) -> Vec<Invariant> {
    let mut k: Vec<Invariant> = v.iter().map(|(i, _)| *i).collect();
    k.dedup();
    k
}

/// The seed's promotion, step by step, breaks nothing.
#[test]
fn a_correct_promotion_has_no_violation() {
    let w = World::new(json!({}));
    w.initialized();
    w.set_image("podinfo", "podinfo:2");
    w.progressing(0, 0);
    for weight in [10, 20, 30, 40, 50] {
        w.weights(100 - weight, weight);
        w.progressing(weight, 0);
    }
    w.set_image("podinfo-primary", "podinfo:2");
    w.status(json!({"phase": "Promoting", "canaryWeight": 50, "lastAppliedSpec": "r2", "lastPromotedSpec": "r1"}));
    w.weights(100, 0);
    w.status(json!({"phase": "Finalising", "lastAppliedSpec": "r2", "lastPromotedSpec": "r1"}));
    w.store
        .modify(&deployments(), NS, "podinfo", false, |d| {
            d["spec"]["replicas"] = json!(0)
        })
        .unwrap();
    w.status(json!({"phase": "Succeeded", "lastAppliedSpec": "r2", "lastPromotedSpec": "r2"}));
    let report = w.checker.report();
    assert!(report.changes_checked >= 20, "{report:?}");
    assert_eq!(w.violations(), vec![]);
}

#[test]
fn promotion_before_max_weight_is_caught() {
    let w = World::new(json!({}));
    w.initialized();
    w.set_image("podinfo", "podinfo:2");
    w.weights(80, 20);
    w.progressing(20, 0);
    w.set_image("podinfo-primary", "podinfo:2");
    let v = w.violations();
    assert_eq!(kinds(&v), vec![Invariant::PrimaryOnlyByPromotion], "{v:#?}");
    assert!(v[0].1.contains("outside a passed analysis"), "{v:#?}");
}

#[test]
fn promotion_with_failed_checks_at_threshold_or_of_another_template_is_caught() {
    let w = World::new(json!({}));
    w.initialized();
    w.set_image("podinfo", "podinfo:2");
    w.weights(50, 50);
    w.progressing(50, 2);
    w.set_image("podinfo-primary", "podinfo:2");
    w.progressing(50, 0);
    w.set_image("podinfo-primary", "podinfo:3");
    let v = w.violations();
    assert_eq!(v.len(), 3, "{v:#?}");
    assert!(v[0].1.contains("failedChecks 2/2"), "{v:#?}");
    assert_eq!(
        v[1].0,
        Invariant::StatusMonotonic,
        "failedChecks 2 -> 0: {v:#?}"
    );
    assert!(v[2].1.contains("but the analysed target runs"), "{v:#?}");
}

#[test]
fn weights_over_max_or_not_summing_to_100_are_caught() {
    let w = World::new(json!({}));
    w.initialized();
    w.progressing(0, 0);
    w.weights(40, 60);
    w.weights(50, 40);
    w.progressing(70, 0);
    let v = w.violations();
    assert_eq!(kinds(&v), vec![Invariant::WeightBounds], "{v:#?}");
    assert_eq!(v.len(), 3, "{v:#?}");
    assert!(v[1].1.contains("sum to 90"), "{v:#?}");
}

#[test]
fn all_traffic_to_a_workload_without_available_replicas_is_caught() {
    let w = World::new(json!({}));
    w.initialized();
    // The canary has no available pod and gets everything (in a Blue/Green-like switch).
    w.store
        .modify(&deployments(), NS, "podinfo", true, |d| {
            d["status"]["availableReplicas"] = json!(0)
        })
        .unwrap();
    w.status(json!({"phase": "Failed", "canaryWeight": 100, "lastAppliedSpec": "r2", "lastPromotedSpec": "r1"}));
    w.weights(0, 100);
    // And the operator scales the primary, which has all traffic, to 0.
    w.weights(100, 0);
    w.store
        .modify(&deployments(), NS, "podinfo-primary", false, |d| {
            d["spec"]["replicas"] = json!(0)
        })
        .unwrap();
    let v = w.violations();
    assert_eq!(kinds(&v), vec![Invariant::TrafficToAvailable], "{v:#?}");
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(v[1].1.contains("scaled to 0"), "{v:#?}");
}

#[test]
fn status_going_backwards_within_a_revision_is_caught() {
    let w = World::new(json!({}));
    w.initialized();
    w.progressing(30, 1);
    w.progressing(20, 1);
    w.status(json!({"phase": "Succeeded", "lastAppliedSpec": "r2", "lastPromotedSpec": "r2"}));
    w.status(json!({"phase": "Progressing", "lastAppliedSpec": "r2", "lastPromotedSpec": "r2"}));
    // A new revision may start over.
    w.status(json!({"phase": "Progressing", "lastAppliedSpec": "r3", "lastPromotedSpec": "r2"}));
    let v = w.violations();
    assert_eq!(kinds(&v), vec![Invariant::StatusMonotonic], "{v:#?}");
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(
        v[0].1.contains("canaryWeight went back from 30 to 20"),
        "{v:#?}"
    );
    assert!(v[1].1.contains("from Succeeded to Progressing"), "{v:#?}");
}

#[test]
fn waits_without_deadline_moved_or_stalled_are_caught() {
    let w = World::new(json!({}));
    w.initialized();
    let wait = |since: &str, deadline: &str| {
        json!({"phase": "Progressing", "lastAppliedSpec": "r2", "lastPromotedSpec": "r1",
               "progressWaits": {"canary": {"since": since, "deadline": deadline}}})
    };
    w.status(wait("2030-01-01T00:00:00Z", "2030-01-01T00:01:00Z"));
    // Moved after a restart: the deadline must survive.
    w.status(wait("2030-01-01T00:00:30Z", "2030-01-01T00:01:30Z"));
    // Not progressDeadlineSeconds after since.
    w.status(json!({"phase": "Progressing", "lastAppliedSpec": "r3", "lastPromotedSpec": "r1",
        "progressWaits": {"primary": {"since": "2030-01-01T00:00:00Z", "deadline": "2030-01-01T00:10:00Z"}}}));
    // No deadline at all.
    w.status(
        json!({"phase": "Progressing", "lastAppliedSpec": "r4", "lastPromotedSpec": "r1",
        "progressWaits": {"canary": {"since": "2030-01-01T00:00:00Z"}}}),
    );
    w.status(wait("2030-01-01T00:00:00Z", "2030-01-01T00:01:00Z"));
    let deadline = "2030-01-01T00:01:00Z"
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond();
    // Within the grace period: fine; far past it: a stall, reported once.
    w.checker.check_stalls_at(deadline + 5_000);
    w.checker.check_stalls_at(deadline + 60_000);
    w.checker.check_stalls_at(deadline + 70_000);
    let v = w.violations();
    assert_eq!(kinds(&v), vec![Invariant::WaitDeadlines], "{v:#?}");
    let texts: Vec<&str> = v.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(texts.len(), 4, "{texts:#?}");
    assert!(texts[0].contains("wait moved"), "{texts:#?}");
    assert!(
        texts[1].contains("progressDeadlineSeconds is 60 s"),
        "{texts:#?}"
    );
    assert!(
        texts[2].contains("without a persisted since/deadline"),
        "{texts:#?}"
    );
    assert!(texts[3].contains("stalled"), "{texts:#?}");
}

#[test]
fn generated_objects_without_owner_or_left_behind_are_caught() {
    let w = World::new(json!({}));
    w.initialized();
    w.store
        .create(
            &services(),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podinfo-canary", "namespace": NS}}),
        )
        .unwrap();
    w.store.delete(&canaries(), NS, "podinfo").unwrap();
    let v = w.violations();
    assert_eq!(kinds(&v), vec![Invariant::NothingLeftBehind], "{v:#?}");
    assert!(v[0].1.contains("no controller owner reference"), "{v:#?}");
    // Owned objects were garbage-collected; the unowned one is not tracked as the canary's.
    assert_eq!(v.len(), 1, "{v:#?}");
}

#[test]
fn owned_object_surviving_its_canary_is_caught() {
    let w = World::new(json!({}));
    w.initialized();
    // An owner reference to another uid with the canary's name: the store does not collect it,
    // so it survives the canary — exactly what must not happen.
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo-primary", "namespace": NS,
            "ownerReferences": [{"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
                "uid": w.uid, "controller": true}]}});
    w.store.create(&services(), svc).unwrap();
    // Orphan it (as a buggy finalizer or a racing write would), then delete the canary.
    w.store
        .modify(&services(), NS, "podinfo-primary", false, |s| {
            s["metadata"]["ownerReferences"] = json!([])
        })
        .unwrap();
    w.store.delete(&canaries(), NS, "podinfo").unwrap();
    let v = w.violations();
    assert_eq!(kinds(&v), vec![Invariant::NothingLeftBehind], "{v:#?}");
    assert!(
        v[0].1.contains("still there after the canary was deleted"),
        "{v:#?}"
    );
}

#[test]
fn revert_on_deletion_leaving_the_target_at_zero_is_caught() {
    let w = World::new(json!({"revertOnDeletion": true}));
    w.initialized();
    w.store
        .modify(&deployments(), NS, "podinfo", false, |d| {
            d["spec"]["replicas"] = json!(0)
        })
        .unwrap();
    w.store
        .modify(&deployments(), NS, "podinfo", true, |d| {
            d["status"]["availableReplicas"] = json!(0)
        })
        .unwrap();
    w.store.delete(&canaries(), NS, "podinfo").unwrap();
    let v = w.violations();
    assert_eq!(kinds(&v), vec![Invariant::RevertOnDeletion], "{v:#?}");
}

/// Dropping an armed checker with a violation fails the test it belongs to.
#[test]
fn a_violation_fails_the_test_on_drop() {
    let result = std::panic::catch_unwind(|| {
        let w = World::new(json!({}));
        w.initialized();
        w.weights(30, 80);
        drop(w);
    });
    let err = result.expect_err("the checker must panic on drop");
    let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("WeightBounds"), "{text}");
    assert!(text.contains("docs/RELIABILITY.md"), "{text}");
}
