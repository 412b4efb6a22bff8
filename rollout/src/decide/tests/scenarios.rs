//! Multi-tick scenarios: fold observations through `decide` in a small simulated world whose
//! Deployments, routes and metrics react to the actions.

use crate::observations::{HookResult, MetricValue};
use crate::phase::Phase;
use crate::spec::HookType;
use crate::status::CanaryStatus;
use crate::testing::{Canary, NEW, PROMOTED, World};
use crate::weights::Weights;

/// The seed's promotion with stepWeight 5 / maxWeight 50.
#[test]
fn seed_promotion_produces_the_seed_event_sequence() {
    let mut world = World::new(Canary::test().with_steps(5, 50));
    // Rollouts take two ticks, so the waits show.
    world.target_ready_after = Some(2);
    world.primary_ready_after = Some(2);
    world.tick();
    assert!(world.events.is_empty(), "idle before the change");
    world.set_image(NEW);
    let ticks = world.run_until(40, |w| w.phase() == Phase::Succeeded);
    assert_eq!(
        world.phase(),
        Phase::Succeeded,
        "events: {:#?}",
        world.events
    );

    let mut expected = vec!["New revision detected! Scaling up podinfo.test".to_owned()];
    expected.extend((1..=10).map(|i| format!("Advance podinfo.test canary weight {}", i * 5)));
    expected.push("Copying podinfo.test template spec to podinfo-primary.test".to_owned());
    expected.push("Promotion completed! Scaling down podinfo.test".to_owned());
    assert_eq!(
        world.events_starting_with(&["New revision", "Advance", "Copying", "Promotion"]),
        expected
    );
    // The readiness waits show up as warnings, as in the seed.
    assert!(world.events.iter().any(|e| {
        e.starts_with("canary deployment podinfo.test not ready: waiting for rollout to finish")
    }));
    assert!(world.events.iter().any(|e| e.starts_with(
        "podinfo-primary.test not ready: waiting for rollout to finish"
    )));
    assert!(
        world
            .events
            .contains(&"Routing all traffic to primary".to_owned())
    );

    // End state: primary runs the new revision, canary at 0, all traffic on the primary.
    assert_eq!(world.primary_revision, NEW);
    assert_eq!(world.target_replicas, 0);
    assert_eq!(world.canary_weight(), 0);
    assert_eq!(world.status.last_promoted_spec, NEW);
    assert_eq!(world.status.failed_checks, 0);
    assert!(ticks <= 20, "took {ticks} ticks");
    assert_eq!(
        world.notifications,
        vec![
            "New revision detected, progressing canary analysis.",
            "Canary analysis completed successfully, promotion finished."
        ]
    );

    // Then it waits for the next revision.
    let before = world.events.len();
    world.run_until(3, |_| false);
    assert_eq!(world.events.len(), before, "{:?}", &world.events[before..]);
}

#[test]
fn new_object_initializes_then_promotes_a_change() {
    let mut world = World::new(Canary::new_object());
    world.run_until(5, |w| w.phase() == Phase::Initialized);
    assert_eq!(world.phase(), Phase::Initialized);
    assert!(
        world
            .events
            .contains(&"Initialization done! podinfo.test".to_owned())
    );
    assert_eq!(world.target_replicas, 0);
    world.set_image(NEW);
    world.run_until(40, |w| w.phase() == Phase::Succeeded);
    assert_eq!(world.phase(), Phase::Succeeded);
    assert_eq!(world.primary_revision, NEW);
}

#[test]
fn failing_success_rate_rolls_back_after_threshold_checks() {
    let mut world = World::new(Canary::test().with_threshold(5));
    world.set_image(NEW);
    // Healthy for the first few steps, then errors.
    world.run_until(5, |w| w.canary_weight() >= 15);
    assert_eq!(world.canary_weight(), 15);
    let rates = [69.17, 61.39, 55.06, 47.0, 38.08];
    for rate in rates {
        world.metrics[0].value = MetricValue::Value(rate);
        world.tick();
    }
    assert_eq!(world.status.failed_checks, 5);
    assert_eq!(
        world.phase(),
        Phase::Progressing,
        "rollback happens on the next tick"
    );
    world.tick();
    assert_eq!(world.phase(), Phase::Failed);
    let halts = world.events_starting_with(&["Halt"]);
    assert_eq!(
        halts,
        rates
            .iter()
            .map(|r| format!("Halt podinfo.test advancement success rate {r:.2}% < 99%"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        world.events_starting_with(&["Rolling back", "Canary failed"]),
        vec![
            "Rolling back podinfo.test failed checks threshold reached 5",
            "Canary failed! Scaling down podinfo.test"
        ]
    );
    assert_eq!(world.canary_weight(), 0);
    assert_eq!(world.target_replicas, 0);
    assert_eq!(world.primary_revision, PROMOTED, "primary untouched");
    // Stays failed until a new revision.
    let before = world.events.len();
    world.run_until(3, |_| false);
    assert_eq!(world.phase(), Phase::Failed);
    assert_eq!(world.events.len(), before);
    // A fixed revision starts over.
    world.metrics[0].value = MetricValue::Value(100.0);
    world.set_image("rev-3");
    world.run_until(40, |w| w.phase() == Phase::Succeeded);
    assert_eq!(world.primary_revision, "rev-3");
}

#[test]
fn unreachable_metrics_never_promote() {
    let mut world = World::new(Canary::test());
    world.set_image(NEW);
    for m in &mut world.metrics {
        m.value =
            MetricValue::Failed("running query failed: request failed: connection refused".into());
    }
    world.run_until(40, |w| {
        matches!(w.phase(), Phase::Failed | Phase::Succeeded)
    });
    assert_eq!(world.phase(), Phase::Failed);
    assert!(
        world.events.contains(
            &"Prometheus query failed: running query failed: request failed: connection refused"
                .to_owned()
        )
    );
    assert_eq!(world.primary_revision, PROMOTED);
}

#[test]
fn a_change_during_analysis_restarts_it() {
    let mut world = World::new(Canary::test());
    world.set_image(NEW);
    world.run_until(10, |w| w.canary_weight() >= 20);
    assert_eq!(world.canary_weight(), 20);
    world.set_image("rev-3");
    world.tick();
    assert_eq!(
        world.events.last().map(String::as_str),
        Some("New revision detected! Restarting analysis for podinfo.test")
    );
    assert_eq!(world.canary_weight(), 0);
    assert_eq!(world.status.last_applied_spec, "rev-3");
    world.run_until(40, |w| w.phase() == Phase::Succeeded);
    assert_eq!(world.primary_revision, "rev-3");
    let fives = world
        .events
        .iter()
        .filter(|e| *e == "Advance podinfo.test canary weight 5")
        .count();
    assert_eq!(fives, 2, "the weights start over");
}

#[test]
fn a_never_ready_canary_rolls_back_after_the_progress_deadline() {
    let mut world = World::new(Canary::test());
    world.target_ready_after = None;
    world.set_image(NEW);
    world.run_until(10, |w| w.phase() == Phase::Failed);
    assert_eq!(world.phase(), Phase::Failed);
    // Scale-up tick, then not-ready ticks for 60 s (interval 60 s), then the rollback.
    assert!(world.now <= 4 * 60_000, "rolled back at {} ms", world.now);
    assert!(
        world
            .events
            .iter()
            .any(|e| e.starts_with("Rolling back podinfo.test progress deadline exceeded"))
    );
    assert_eq!(world.target_replicas, 0);
    assert_eq!(world.primary_revision, PROMOTED, "primary untouched");
    assert!(
        world.analysis_gathers().is_empty(),
        "no metric or hook while the canary never got ready: {:?}",
        world.gathers
    );
}

/// The promotion is written but its status is lost (crash or failed write): the next tick sees
/// the primary already on the analysed revision and goes on as Promoting, so the outcome is the
/// uninterrupted one — whether the primary becomes ready (Succeeded) or never does (Failed, all
/// traffic on the canary).
#[test]
fn a_promotion_whose_status_write_was_lost_goes_on_as_promoting() {
    for primary_ready in [true, false] {
        let mut world = World::new(Canary::test().with_steps(25, 50));
        if !primary_ready {
            world.primary_ready_after = None;
        }
        world.set_image(NEW);
        world.run_until(30, |w| {
            w.primary_revision == NEW || w.routes.weights.canary() == 50
        });
        // The next tick promotes; its status write is lost.
        while world.primary_revision != NEW {
            world.tick_losing_the_status_write();
        }
        assert_eq!(
            world.phase(),
            Phase::Progressing,
            "the status still says Progressing"
        );
        let next = world.tick();
        assert!(
            matches!(
                next.decision.next_state.phase,
                Phase::Promoting | Phase::Finalising
            ),
            "{:?} {:#?}",
            next.decision.next_state.phase,
            world.events
        );
        let done = |w: &World| matches!(w.phase(), Phase::Succeeded | Phase::Failed);
        world.run_until(40, done);
        if primary_ready {
            assert_eq!(world.phase(), Phase::Succeeded, "{:#?}", world.events);
            assert_eq!(world.routes.weights, Weights::ALL_PRIMARY);
        } else {
            assert_eq!(world.phase(), Phase::Failed, "{:#?}", world.events);
            assert_eq!(
                world.routes.weights,
                Weights::ALL_CANARY,
                "{:#?}",
                world.events
            );
            assert_eq!(world.canary_weight(), 100);
            assert!(world.target_replicas > 0);
        }
        let copies = world
            .events
            .iter()
            .filter(|e| e.starts_with("Copying"))
            .count();
        assert_eq!(copies, 1, "promoted once: {:#?}", world.events);
    }
}

#[test]
fn promotion_fails_when_the_primary_rollout_hangs() {
    let mut world = World::new(
        Canary::test()
            .with_steps(25, 50)
            .with_hook("post-rollout", "report"),
    );
    world.primary_ready_after = None;
    world.set_image(NEW);
    world.run_until(30, |w| w.phase() == Phase::Failed);
    assert_eq!(world.phase(), Phase::Failed, "events: {:#?}", world.events);
    assert_eq!(world.canary_weight(), 100);
    assert!(world.target_replicas > 0);
    assert!(
        world
            .events
            .iter()
            .any(|e| e.starts_with("Promotion of podinfo.test failed, primary not ready: "))
    );
    assert!(
        !world
            .events
            .iter()
            .any(|e| e == "Routing all traffic to primary")
    );
    assert!(
        world
            .hooks_run
            .contains(&(HookType::PostRollout, Phase::Failed))
    );
    assert_eq!(world.primary_revision, NEW, "the promotion was attempted");
}

#[test]
fn skip_analysis_promotes_without_checks() {
    let mut world = World::new(Canary::test().skipping_analysis());
    world.set_image(NEW);
    world.run_until(10, |w| w.phase() == Phase::Succeeded);
    assert_eq!(world.phase(), Phase::Succeeded);
    assert_eq!(
        world.events_starting_with(&["New revision", "Copying", "Promotion"]),
        vec![
            "New revision detected! Scaling up podinfo.test",
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Promotion completed! Canary analysis was skipped for podinfo.test"
        ]
    );
    assert!(world.analysis_gathers().is_empty(), "{:?}", world.gathers);
    assert_eq!(world.primary_revision, NEW);
    assert_eq!(world.target_replicas, 0);
}

#[test]
fn suspend_pauses_and_resume_continues() {
    let mut world = World::new(Canary::test());
    world.set_image(NEW);
    world.run_until(10, |w| w.canary_weight() >= 15);
    let paused_status = world.status.clone();
    world.spec.suspend = true;
    world.run_until(5, |_| false);
    assert_eq!(world.status, paused_status, "nothing moves while suspended");
    assert_eq!(world.canary_weight(), 15);
    assert_eq!(
        world.events.last().map(String::as_str),
        Some("skipping canary run as object is suspended")
    );
    world.spec.suspend = false;
    world.run_until(40, |w| w.phase() == Phase::Succeeded);
    assert_eq!(world.phase(), Phase::Succeeded);
}

#[test]
fn iterations_are_counted_then_promoted() {
    let mut world = World::new(Canary::test().with_iterations(4));
    world.set_image(NEW);
    world.run_until(20, |w| w.phase() == Phase::Succeeded);
    assert_eq!(world.phase(), Phase::Succeeded);
    assert_eq!(
        world.events_starting_with(&["Advance", "Routing", "Copying"]),
        vec![
            "Advance podinfo.test canary iteration 1/4",
            "Advance podinfo.test canary iteration 2/4",
            "Advance podinfo.test canary iteration 3/4",
            "Advance podinfo.test canary iteration 4/4",
            "Routing all traffic to canary",
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Routing all traffic to primary",
        ]
    );
    assert_eq!(world.status.iterations, 0, "reset on success");
}

#[test]
fn a_gate_holds_the_rollout_until_opened() {
    let mut world = World::new(Canary::test().with_hook("confirm-rollout", "gate"));
    world
        .hook_answers
        .insert("gate".into(), HookResult::Failed("Forbidden".into()));
    world.set_image(NEW);
    world.run_until(5, |_| false);
    assert_eq!(world.phase(), Phase::Waiting);
    assert_eq!(world.target_replicas, 0, "not scaled up while waiting");
    assert_eq!(
        world.events_starting_with(&["Halt"]).len(),
        1,
        "said once, not every tick"
    );
    world.hook_answers.clear();
    world.run_until(40, |w| w.phase() == Phase::Succeeded);
    assert_eq!(world.phase(), Phase::Succeeded);
}

/// A restarted operator resumes from `.status` alone: serialize it mid-run, rebuild, continue.
#[test]
fn a_restart_mid_analysis_finishes_the_same_rollout() {
    let mut world = World::new(Canary::test());
    world.set_image(NEW);
    world.run_until(10, |w| w.canary_weight() >= 25);
    let persisted = serde_json::to_string(&world.status).unwrap();
    let mut uninterrupted = world.clone();

    world.status = serde_json::from_str::<CanaryStatus>(&persisted).unwrap();
    world.run_until(40, |w| w.phase() == Phase::Succeeded);
    uninterrupted.run_until(40, |w| w.phase() == Phase::Succeeded);
    assert_eq!(world.phase(), Phase::Succeeded);
    assert_eq!(world.events, uninterrupted.events);
    assert_eq!(world.status, uninterrupted.status);
}

#[test]
fn the_status_is_written_at_most_once_per_tick() {
    let mut world = World::new(Canary::test());
    world.set_image(NEW);
    for _ in 0..25 {
        let tick = world.tick();
        let writes = tick
            .decision
            .actions
            .iter()
            .filter(|a| matches!(a, crate::action::Action::WriteStatus(_)))
            .count();
        assert!(writes <= 1);
    }
}
