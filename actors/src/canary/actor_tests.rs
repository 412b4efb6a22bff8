//! `execute`, the CanaryActor and the CanarySupervisor with a recorder behind every port
//! (`support::Recorder`) and hand-filled caches: no API server, no HTTP.
//!
//! Covered: a failing action ends the sequence with a Warning and no status write; events,
//! notifications and post-rollout hooks never fail it; a conflicting status write is quiet and
//! the actor decides again from the fresh object; a poke without a new revision keeps the
//! cadence; a panic in one canary's tick restarts only that actor, from `.status`; a second
//! Canary on a target is invalid naming `spec.targetRef.name` until the first goes away.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use flagger_rollout::{
    Action, CanaryStatus, ConditionStatus, Decision, EventType, HookType, MeshProvider, Observed,
    Phase, Routes, Scale, Timestamp, Weights,
};
use kube::ResourceExt;
use serde_json::json;

use super::CanaryActor;
use super::execute::{Executed, Target, execute};
use super::gather::{Workloads, observe_target};
use crate::crd::Canary;
use crate::crd::convert::canary_spec;
use crate::key::CanaryKey;
use crate::kubeops::{CanaryRef, SelectorLabel};
use crate::messages::{CanaryApplied, CanaryDeleted, LeadershipChanged, Poke};
use crate::ports::Ports;
use crate::supervisor::CanarySupervisor;
use support::{Call, Capture, Gone, World, canary, deployment, object};

const SECOND: Duration = Duration::from_secs(1);

/// Canary `podinfo.test` on Deployment `podinfo`, 1 s interval.
fn podinfo() -> serde_json::Value {
    canary("podinfo", "podinfo", "1s", "2024-01-01T00:00:00Z")
}

/// What `execute` needs besides the decision.
struct Parts {
    key: CanaryKey,
    canary: Arc<Canary>,
    spec: flagger_rollout::CanarySpec,
    canary_ref: Arc<CanaryRef>,
}

impl Parts {
    fn of(canary: Arc<Canary>) -> Self {
        let spec = canary_spec(&canary, MeshProvider::Istio).unwrap();
        let selector = SelectorLabel {
            key: "app".into(),
            value: spec.target_ref.name.clone(),
        };
        let canary_ref = Arc::new(CanaryRef::new(&canary, spec.clone(), selector).unwrap());
        Parts {
            key: CanaryKey::new("test", canary.name_any()),
            canary,
            spec,
            canary_ref,
        }
    }

    fn target(&self, phase: Phase) -> Target<'_> {
        Target {
            key: &self.key,
            canary: &self.canary,
            spec: &self.spec,
            canary_ref: Some(&self.canary_ref),
            phase,
            checksum: "rev-1",
            occurrence: "rev-1/0",
        }
    }
}

fn event(event_type: EventType, message: &str) -> Action {
    Action::Event {
        event_type,
        message: message.to_owned(),
    }
}

/// Executes `actions` for `p` and waits until the recorder saw everything they sent.
async fn run(w: &World, ports: &Ports, p: &Parts, phase: Phase, actions: Vec<Action>) -> Executed {
    let decision = Decision {
        next_state: CanaryStatus::default(),
        actions,
        requeue_after: SECOND,
    };
    let done = execute(ports, &w.env.caches, &p.target(phase), &decision).await;
    w.flush().await;
    done
}

fn write(phase: Phase, weight: u8) -> Action {
    Action::WriteStatus(Box::new(CanaryStatus {
        phase,
        canary_weight: weight,
        ..Default::default()
    }))
}

// ------------------------------------------------------------------------------------------------
// execute
// ------------------------------------------------------------------------------------------------

#[actix::test]
async fn a_failing_action_warns_and_ends_the_sequence_before_the_status_write() {
    let w = World::new();
    let refused = "VirtualService podinfo.test: connection refused";
    w.fail("reconcile_routes", refused);
    let p = Parts::of(object(podinfo()));
    let actions = vec![
        Action::EnsurePrimary,
        Action::ReconcileRoutes,
        Action::ScaleCanary(Scale::ToZero),
        event(EventType::Normal, "Initialization done! podinfo.test"),
        write(Phase::Initialized, 0),
    ];
    let done = run(&w, &w.env.ports, &p, Phase::Initialized, actions).await;

    let error = format!("the router actor is not available: {refused}");
    assert_eq!(done.failed.as_deref(), Some(error.as_str()));
    assert!(done.written.is_none() && done.conflict.is_none());
    assert_eq!(
        w.calls("podinfo"),
        [
            Call::EnsurePrimary,
            Call::ReconcileRoutes,
            Call::Event(EventType::Warning, error.clone()),
            Call::ForwardEvent(error),
        ],
        "nothing after the failed action runs; the status is not written"
    );
}

#[actix::test]
async fn events_and_notifications_never_fail_the_sequence() {
    let w = World::new();
    let gone = Gone.start();
    actix::clock::sleep(Duration::from_millis(20)).await;
    assert!(!gone.connected(), "the event and chat ports are closed");
    let ports = Ports {
        record_event: gone.clone().recipient(),
        forward_event: gone.clone().recipient(),
        notify: gone.recipient(),
        ..(*w.env.ports).clone()
    };
    let p = Parts::of(object(podinfo()));
    let actions = vec![
        event(EventType::Normal, "Advance podinfo.test canary weight 10"),
        Action::Notify {
            severity: flagger_rollout::Severity::Info,
            message: "New revision detected".into(),
            fields: Vec::new(),
        },
        Action::SetWeights {
            weights: Weights::with_canary(10),
            mirror: false,
        },
        event(EventType::Warning, "Halt podinfo.test advancement"),
        write(Phase::Progressing, 10),
    ];
    let done = run(&w, &ports, &p, Phase::Progressing, actions).await;
    assert_eq!(done.failed, None);
    assert_eq!(
        done.written.unwrap().status.unwrap().canary_weight,
        Some(10)
    );
    assert_eq!(done.weights, Some(Weights::with_canary(10)));
    let calls = w.calls("podinfo");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], Call::SetRoutes(10));
    assert!(matches!(&calls[1], Call::WriteStatus(..)));
}

#[actix::test]
async fn a_failing_post_rollout_hook_is_reported_and_the_sequence_goes_on() {
    let w = World::new();
    w.fail("call_hook", "team chat is down");
    let mut manifest = podinfo();
    manifest["spec"]["analysis"]["webhooks"] = json!([
        {"name": "notify-team", "type": "post-rollout", "url": "http://hooks.test/"}
    ]);
    let p = Parts::of(object(manifest));
    let promoted = "Promotion completed! Scaling down podinfo.test";
    let actions = vec![
        Action::RunHooks {
            hook_type: HookType::PostRollout,
            phase: Phase::Succeeded,
            checksum: "rev-1".into(),
        },
        event(EventType::Normal, promoted),
        write(Phase::Succeeded, 0),
    ];
    let done = run(&w, &w.env.ports, &p, Phase::Succeeded, actions).await;
    assert_eq!(done.failed, None);
    assert!(done.written.is_some());
    assert_eq!(
        w.events("podinfo"),
        [
            (
                EventType::Warning,
                "Post-rollout hook notify-team failed team chat is down".to_owned()
            ),
            (EventType::Normal, promoted.to_owned()),
        ]
    );
    assert_eq!(w.calls("podinfo")[0], Call::Hook("notify-team".into()));
}

#[actix::test]
async fn a_conflicting_status_write_ends_the_sequence_quietly() {
    let w = World::new();
    let mut fresh = podinfo();
    fresh["metadata"]["resourceVersion"] = json!("7");
    w.fake.lock().unwrap().conflict = Some(serde_json::from_value(fresh).unwrap());
    let p = Parts::of(object(podinfo()));
    let advanced = "Advance podinfo.test canary weight 20";
    let actions = vec![
        Action::SetWeights {
            weights: Weights::with_canary(20),
            mirror: false,
        },
        event(EventType::Normal, advanced),
        write(Phase::Progressing, 20),
    ];
    let done = run(&w, &w.env.ports, &p, Phase::Progressing, actions).await;
    assert_eq!(done.failed, None, "a conflict is not a failure");
    assert!(done.written.is_none());
    let fresh = done
        .conflict
        .expect("the conflict is reported")
        .fresh
        .unwrap();
    assert_eq!(fresh.resource_version().as_deref(), Some("7"));
    assert_eq!(
        w.events("podinfo"),
        [(EventType::Normal, advanced.to_owned())],
        "no Warning for the conflict"
    );
}

// ------------------------------------------------------------------------------------------------
// CanaryActor
// ------------------------------------------------------------------------------------------------

fn initialized(w: &World, canary: &str) -> bool {
    w.statuses(canary)
        .iter()
        .any(|(_, s)| s.phase == Phase::Initialized)
}

#[actix::test]
async fn a_poke_with_an_unchanged_revision_does_not_tick_early() {
    let w = World::new();
    w.workloads("podinfo", "podinfo:6.0.0");
    let c = object(canary("podinfo", "podinfo", "30s", "2024-01-01T00:00:00Z"));
    w.caches.apply_canary(&c);
    let actor = CanaryActor::new(c, None, w.env.clone(), None, 1).start();
    w.until("initialization", 5 * SECOND, |w| initialized(w, "podinfo"))
        .await;
    actix::clock::sleep(Duration::from_millis(300)).await;
    let ticks = w.count("podinfo", &Call::GetRoutes);

    for _ in 0..3 {
        actor.send(Poke).await.unwrap();
    }
    actix::clock::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        w.count("podinfo", &Call::GetRoutes),
        ticks,
        "pokes without a new revision keep the 30 s cadence"
    );

    w.caches.apply(deployment("podinfo", "podinfo:6.0.1"));
    let poked = Instant::now();
    actor.send(Poke).await.unwrap();
    w.until("the new revision", 2 * SECOND, |w| {
        w.events("podinfo")
            .iter()
            .any(|(_, m)| m == "New revision detected! Scaling up podinfo.test")
    })
    .await;
    assert!(poked.elapsed() < 2 * SECOND);
    assert_eq!(w.count("podinfo", &Call::GetRoutes), ticks + 1);
    assert!(
        w.calls("podinfo")
            .contains(&Call::Scale(flagger_rollout::Scale::Up))
    );
}

#[actix::test]
async fn a_tick_that_fails_midway_warns_keeps_the_status_and_retries() {
    let w = World::new();
    w.workloads("podinfo", "podinfo:6.0.0");
    let refused = "VirtualService podinfo.test: connection refused";
    w.fail("reconcile_routes", refused);
    let c = object(canary("podinfo", "podinfo", "10s", "2024-01-01T00:00:00Z"));
    let _actor = CanaryActor::new(c, None, w.env.clone(), None, 1).start();
    w.until("two failed attempts", 5 * SECOND, |w| {
        w.count("podinfo", &Call::ReconcileRoutes) >= 2
    })
    .await;
    w.flush().await;
    assert!(w.statuses("podinfo").is_empty(), "no status written");
    let warnings: Vec<String> = w
        .events("podinfo")
        .into_iter()
        .filter(|(t, _)| *t == EventType::Warning)
        .map(|(_, m)| m)
        .collect();
    assert!(
        !warnings.is_empty() && warnings.iter().all(|m| m.contains(refused)),
        "{warnings:?}"
    );
    // Retried with backoff, well before the 10 s interval; once the router answers, it goes on.
    w.fake.lock().unwrap().failing.clear();
    w.until("initialization after the failure", 5 * SECOND, |w| {
        initialized(w, "podinfo")
    })
    .await;
}

#[actix::test]
async fn a_status_conflict_decides_again_from_the_fresh_object_without_a_warning() {
    let w = World::new();
    w.workloads("podinfo", "podinfo:6.0.0");
    let mut fresh = canary("podinfo", "podinfo", "30s", "2024-01-01T00:00:00Z");
    fresh["metadata"]["resourceVersion"] = json!("7");
    fresh["status"] = json!({"phase": "Initializing", "failedChecks": 0});
    w.fake.lock().unwrap().conflict = Some(serde_json::from_value(fresh).unwrap());
    let c = object(canary("podinfo", "podinfo", "30s", "2024-01-01T00:00:00Z"));
    let started = Instant::now();
    let _actor = CanaryActor::new(c, None, w.env.clone(), None, 1).start();
    w.until("a second status write", 3 * SECOND, |w| {
        w.statuses("podinfo").len() >= 2
    })
    .await;
    assert!(started.elapsed() < 3 * SECOND, "not at the 30 s cadence");
    let statuses = w.statuses("podinfo");
    assert_eq!(statuses[0].0, "1", "the first write conflicted");
    assert_eq!(
        statuses[1].0, "7",
        "decided again from the object as re-read"
    );
    assert_eq!(statuses[1].1.phase, Phase::Initialized);
    w.flush().await;
    assert!(
        w.events("podinfo")
            .iter()
            .all(|(t, _)| *t == EventType::Normal),
        "{:?}",
        w.events("podinfo")
    );
}

/// The revision the tick computes for `canary`'s target in the caches.
fn revision_of(w: &World, canary: &Canary) -> String {
    let spec = canary_spec(canary, MeshProvider::Istio).unwrap();
    let workloads = Workloads::from_cache(&w.env.caches, &spec);
    match observe_target(&w.env.caches, &spec, &workloads, true, Timestamp(0)) {
        Observed::Found(t) => t.revision,
        other => panic!("{other:?}"),
    }
}

#[actix::test]
async fn a_panic_in_a_tick_restarts_only_that_canary_from_its_status() {
    let capture = Capture::default();
    let _subscriber = capture.install();
    // The tick of `a` that advances to 30 panics after setting the weight, before its status
    // write; `b` is another canary on another target.
    *capture.panic_on.lock().unwrap() = Some("Advance a.test canary weight 30".into());
    let w = World::new();
    w.workloads("podinfo-a", "a:2");
    w.workloads("podinfo-b", "b:1");
    let mut a = canary("a", "podinfo-a", "1s", "2024-01-01T00:00:00Z");
    let revision = revision_of(&w, &object(a.clone()));
    a["status"] = json!({"phase": "Progressing", "canaryWeight": 20, "failedChecks": 0,
        "iterations": 0, "lastAppliedSpec": revision, "lastPromotedSpec": "a-1"});
    w.fake.lock().unwrap().routes.insert(
        "a".into(),
        Routes {
            weights: Weights::with_canary(20),
            mirrored: false,
        },
    );
    let (a, b) = (
        object(a),
        object(canary("b", "podinfo-b", "1s", "2024-01-01T00:00:00Z")),
    );
    w.caches.apply_canary(&a);
    w.caches.apply_canary(&b);
    let supervisor = CanarySupervisor::new(w.env.clone()).start();
    supervisor.send(CanaryApplied(a)).await.unwrap();
    supervisor.send(CanaryApplied(b)).await.unwrap();

    w.until("a resumed after the panic", 10 * SECOND, |w| {
        w.count("a", &Call::SetRoutes(40)) == 1
    })
    .await;
    w.until("b initialized and ticking", 5 * SECOND, |w| {
        initialized(w, "b") && w.count("b", &Call::GetRoutes) >= 3
    })
    .await;

    let panicked = capture.lines("canary tick panicked");
    assert_eq!(panicked.len(), 1, "{panicked:?}");
    assert_eq!(panicked[0].0, "a.test");
    let restarted = capture.lines("restarting canary actor after a panic");
    assert_eq!(
        restarted
            .iter()
            .map(|(c, _)| c.as_str())
            .collect::<Vec<_>>(),
        ["a.test"]
    );
    // The panicking tick set the weight and wrote nothing; the new actor started from .status
    // (weight 20, Progressing), read 30 from the mesh and went on to 40: no new run, no repeat.
    let a_routes: Vec<Call> = w
        .calls("a")
        .into_iter()
        .filter(|c| matches!(c, Call::SetRoutes(_)))
        .collect();
    assert_eq!(&a_routes[..2], [Call::SetRoutes(30), Call::SetRoutes(40)]);
    let a_status = w.statuses("a");
    assert_eq!(a_status[0].1.phase, Phase::Progressing);
    assert_eq!(a_status[0].1.canary_weight, 40);
    assert!(a_status.iter().all(|(_, s)| s.canary_weight != 30));
    let a_events: Vec<String> = w.events("a").into_iter().map(|(_, m)| m).collect();
    assert!(
        !a_events.iter().any(|m| m.contains("weight 30")
            || m.starts_with("New revision")
            || m.starts_with("Initialization")),
        "{a_events:?}"
    );
    let b_initializations = w
        .events("b")
        .iter()
        .filter(|(_, m)| m.starts_with("Initialization done!"))
        .count();
    assert_eq!(b_initializations, 1, "b was not restarted");
}

// ------------------------------------------------------------------------------------------------
// CanarySupervisor: one Canary per target
// ------------------------------------------------------------------------------------------------

fn invalid_naming_target_ref(status: &CanaryStatus) -> bool {
    status.condition("Valid").is_some_and(|c| {
        c.status == ConditionStatus::False && c.message.contains("spec.targetRef.name")
    })
}

/// In which order the supervisor hears of the two Canaries.
#[derive(Clone, Copy)]
enum Heard {
    OlderFirst,
    YoungerFirst,
}

/// `first` (older) and `second` on Deployment `podinfo`, both applied to a supervisor in the
/// order `heard`; returns once `second` is reported invalid and `first` initialized.
async fn two_canaries_on_one_target(w: &World, heard: Heard) -> Addr<CanarySupervisor> {
    w.workloads("podinfo", "podinfo:6.0.0");
    let first = object(canary("first", "podinfo", "1s", "2024-01-01T00:00:00Z"));
    let second = object(canary("second", "podinfo", "1s", "2024-01-02T00:00:00Z"));
    w.caches.apply_canary(&first);
    w.caches.apply_canary(&second);
    let supervisor = CanarySupervisor::new(w.env.clone()).start();
    let order = match heard {
        Heard::OlderFirst => [first, second],
        Heard::YoungerFirst => [second, first],
    };
    for canary in order {
        supervisor.send(CanaryApplied(canary)).await.unwrap();
    }
    w.until("second reported invalid", 5 * SECOND, |w| {
        w.statuses("second")
            .iter()
            .any(|(_, s)| invalid_naming_target_ref(s))
    })
    .await;
    w.until("first initialized", 5 * SECOND, |w| initialized(w, "first"))
        .await;
    supervisor
}

#[actix::test]
async fn a_second_canary_on_a_target_is_invalid_naming_target_ref_and_touches_nothing() {
    let w = World::new();
    let _supervisor = two_canaries_on_one_target(&w, Heard::OlderFirst).await;
    // Several of its 1 s ticks later: still one Warning, still nothing touched.
    actix::clock::sleep(Duration::from_millis(2500)).await;
    w.flush().await;
    let status = w.statuses("second").pop().unwrap().1;
    let valid = status.condition("Valid").unwrap();
    assert!(
        valid.message.contains("first.test") && valid.message.contains("podinfo"),
        "{}",
        valid.message
    );
    let warnings: Vec<(EventType, String)> = w.events("second");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].0, EventType::Warning);
    assert!(
        warnings[0].1.contains("spec.targetRef.name"),
        "{warnings:?}"
    );
    assert!(
        w.calls("second")
            .iter()
            .all(|c| matches!(c, Call::Event(..) | Call::WriteStatus(..))),
        "the second canary touched objects: {:?}",
        w.calls("second")
    );
    assert!(w.calls("first").contains(&Call::EnsurePrimary));
    assert!(
        w.statuses("first")
            .iter()
            .all(|(_, s)| s.condition("Valid").is_none())
    );
}

/// The watch may list the younger Canary first (it does when its name sorts first): the older one
/// still owns the target and is never reported invalid itself.
#[actix::test]
async fn the_older_canary_owns_the_target_when_the_younger_is_heard_of_first() {
    let w = World::new();
    let _supervisor = two_canaries_on_one_target(&w, Heard::YoungerFirst).await;
    w.flush().await;
    assert!(
        !w.statuses("first")
            .iter()
            .any(|(_, s)| invalid_naming_target_ref(s)),
        "the owner was reported invalid: {:?}",
        w.statuses("first")
    );
    assert!(
        w.events("first")
            .iter()
            .all(|(t, _)| *t != EventType::Warning),
        "{:?}",
        w.events("first")
    );
}

/// Leading starts from the synced cache oldest first (so does `flagger run` without leader
/// election): the younger Canary on a shared target never touches anything, not even briefly.
#[actix::test]
async fn leading_starts_the_older_canary_first_so_the_younger_touches_nothing() {
    let w = World::new();
    w.workloads("podinfo", "podinfo:6.0.0");
    // Younger first in the cache's own order.
    for (name, created) in [
        ("a-young", "2024-01-02T00:00:00Z"),
        ("z-old", "2024-01-01T00:00:00Z"),
    ] {
        w.caches
            .apply_canary(&object(canary(name, "podinfo", "1s", created)));
    }
    let supervisor = CanarySupervisor::new(w.env.clone()).following().start();
    supervisor
        .send(LeadershipChanged { leader: true })
        .await
        .unwrap();
    w.until("z-old initialized", 5 * SECOND, |w| initialized(w, "z-old"))
        .await;
    w.until("a-young reported invalid", 5 * SECOND, |w| {
        w.statuses("a-young")
            .iter()
            .any(|(_, s)| invalid_naming_target_ref(s))
    })
    .await;
    w.flush().await;
    assert!(
        w.calls("a-young")
            .iter()
            .all(|c| matches!(c, Call::Event(..) | Call::WriteStatus(..))),
        "the younger canary touched objects: {:?}",
        w.calls("a-young")
    );
    assert!(
        w.statuses("a-young")
            .iter()
            .all(|(_, s)| invalid_naming_target_ref(s)),
        "every status the younger wrote says it is invalid: {:?}",
        w.statuses("a-young")
    );
}

#[actix::test]
async fn deleting_the_first_canary_frees_the_target_for_the_second() {
    let w = World::new();
    let supervisor = two_canaries_on_one_target(&w, Heard::OlderFirst).await;
    assert!(!w.calls("second").contains(&Call::EnsurePrimary));
    supervisor
        .send(CanaryDeleted(CanaryKey::new("test", "first")))
        .await
        .unwrap();
    w.until("second initialized", 5 * SECOND, |w| {
        initialized(w, "second")
    })
    .await;
    assert!(w.calls("second").contains(&Call::EnsurePrimary));
    let status = w.statuses("second").pop().unwrap().1;
    assert!(
        status.condition("Valid").is_none(),
        "the Valid=False condition is gone: {:?}",
        status.conditions
    );
}

#[actix::test]
async fn an_invalid_spec_warns_once_and_counts_as_idle() {
    let w = World::new();
    w.workloads("podinfo", "podinfo:6.0.0");
    let mut manifest = podinfo();
    manifest["spec"]["analysis"]["stepWeight"] = json!(0);
    let _actor = CanaryActor::new(object(manifest), None, w.env.clone(), None, 1).start();
    w.until("the Valid condition", 5 * SECOND, |w| {
        w.statuses("podinfo").iter().any(|(_, s)| {
            s.condition("Valid").is_some_and(|c| {
                c.status == ConditionStatus::False && c.message.contains("stepWeight")
            })
        })
    })
    .await;
    w.flush().await;
    assert!(
        w.calls("podinfo")
            .iter()
            .all(|c| matches!(c, Call::Event(..) | Call::WriteStatus(..))),
        "{:?}",
        w.calls("podinfo")
    );
    assert_eq!(w.events("podinfo").len(), 1);
    let metrics = w.env.telemetry.render();
    assert!(
        metrics.contains(r#"flagger_canary_status{name="podinfo",namespace="test"} 1"#),
        "{metrics}"
    );
}
