#![allow(clippy::unwrap_used, clippy::expect_used)]
//! One or more tests per rule of `decide` and per transition of the phase diagram
//! (flagger-behavior §2.3). Multi-tick scenarios are in `scenarios.rs`, properties in `properties.rs`.

use super::*;
use crate::observations::MetricValue;
use crate::spec::CanaryInput;
use crate::status::Timestamp;
use crate::testing::{Canary, MINUTE, NEW, Obs, PROMOTED};

mod properties;
mod scenarios;

const UNREADY: &str =
    "waiting for rollout to finish: 0 of 1 (readyThreshold 100%) updated replicas are available";

fn not_ready() -> Readiness {
    Readiness::NotReady(UNREADY.into())
}

// ---- suspend -----------------------------------------------------------------------------------

#[test]
fn suspended_canary_only_says_so() {
    let tick = Canary::test()
        .analysing()
        .suspended()
        .decide(&Obs::healthy().with_new_revision().with_canary_weight(10));
    assert_eq!(
        tick.events(),
        vec!["skipping canary run as object is suspended"]
    );
    assert_eq!(
        tick.decision.actions.len(),
        1,
        "no other action: {:?}",
        tick.decision.actions
    );
    assert!(
        tick.gathered.is_empty(),
        "no metrics or hooks while suspended"
    );
    assert_eq!(tick.next(), &Canary::test().analysing().current_status());
    assert!(!tick.writes_status());
}

// ---- invalid spec ------------------------------------------------------------------------------

#[test]
fn invalid_spec_warns_names_the_field_and_touches_nothing() {
    let mut input: CanaryInput = Canary::test().input;
    input.analysis.as_mut().unwrap().max_weight = Some(150);
    let invalid = CanarySpec::new(&input, MeshProvider::Istio).unwrap_err();
    let status = CanaryStatus::default();
    let d = decide_invalid(&invalid, &status, &Obs::healthy().base);
    assert_eq!(
        d.events(),
        vec!["invalid canary spec: spec.analysis.maxWeight: must be within 1-100, got 150"]
    );
    let cond = d.next_state.condition(VALID_CONDITION).unwrap();
    assert_eq!(cond.status, ConditionStatus::False);
    assert!(cond.message.contains("spec.analysis.maxWeight"));
    assert!(
        d.actions
            .iter()
            .all(|a| matches!(a, Action::Event { .. } | Action::WriteStatus(_))),
        "no object is created or changed: {:?}",
        d.actions
    );
    // Same problem next tick: event again, but no new status write.
    let again = decide_invalid(
        &invalid,
        &d.next_state,
        &Obs::healthy().at(20 * MINUTE).base,
    );
    assert!(
        !again
            .actions
            .iter()
            .any(|a| matches!(a, Action::WriteStatus(_)))
    );
}

#[test]
fn fixing_the_spec_removes_the_valid_condition() {
    let mut input: CanaryInput = Canary::test().input;
    input.target_ref = None;
    let invalid = CanarySpec::new(&input, MeshProvider::Istio).unwrap_err();
    let broken = decide_invalid(&invalid, &Canary::test().status, &Obs::healthy().base).next_state;
    let fixed = Canary {
        status: broken,
        ..Canary::test()
    }
    .decide(&Obs::healthy());
    assert!(fixed.next().condition(VALID_CONDITION).is_none());
    assert!(fixed.writes_status());
}

// ---- target missing ----------------------------------------------------------------------------

#[test]
fn missing_target_is_a_warning_and_nothing_else() {
    let tick = Canary::test().decide(&Obs::healthy().with_target_missing());
    assert_eq!(
        tick.warnings(),
        vec!["deployments.apps \"podinfo\" not found"]
    );
    assert!(!tick.has(&Action::EnsurePrimary));
}

// ---- initialization ----------------------------------------------------------------------------

#[test]
fn initialization_creates_the_primary_then_waits_for_it() {
    let tick = Canary::new_object().decide(&Obs::healthy().with_primary_missing());
    assert!(tick.has(&Action::EnsurePrimary));
    assert!(
        !tick.has(&Action::ReconcileRoutes),
        "routes only once the primary is ready"
    );
    assert_eq!(tick.phase(), Phase::Initializing);
    assert_eq!(
        tick.warnings(),
        vec![
            "podinfo-primary.test not ready: waiting for rollout to finish: deployment podinfo-primary.test not found"
        ]
    );
    let cond = tick.next().condition(PROMOTED_CONDITION).unwrap();
    assert_eq!(
        (cond.status, cond.reason.as_str()),
        (ConditionStatus::Unknown, "Initializing")
    );
    assert_eq!(
        cond.message,
        "New Deployment detected, starting initialization."
    );
    assert!(tick.writes_status());
    assert_eq!(tick.events()[0], "all the metrics providers are available!");
}

#[test]
fn initialization_completes_when_the_primary_is_ready() {
    let tick = Canary::new_object().decide(&Obs::healthy());
    let order: Vec<&Action> = tick
        .decision
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::EnsurePrimary | Action::ReconcileRoutes | Action::ScaleCanary(_)
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            &Action::EnsurePrimary,
            &Action::ReconcileRoutes,
            &Action::ScaleCanary(Scale::ToZero)
        ]
    );
    assert_eq!(tick.phase(), Phase::Initialized);
    assert_eq!(tick.next().last_applied_spec, PROMOTED);
    assert_eq!(tick.next().last_promoted_spec, PROMOTED);
    assert!(tick.events().contains(&"Initialization done! podinfo.test"));
    assert_eq!(
        tick.notifications(),
        vec!["New Deployment detected, initialization completed."]
    );
    let fields = tick.decision.actions.iter().find_map(|a| match a {
        Action::Notify { fields, .. } => Some(fields.clone()),
        _ => None,
    });
    assert_eq!(
        fields.unwrap(),
        vec![
            ("Target".to_owned(), "Deployment/podinfo.test".to_owned()),
            ("Failed checks threshold".to_owned(), "5".to_owned()),
            ("Progress deadline".to_owned(), "60s".to_owned()),
            (
                "Traffic routing".to_owned(),
                "Weight step: 5 max: 50".to_owned()
            ),
        ]
    );
    let cond = tick.next().condition(PROMOTED_CONDITION).unwrap();
    assert_eq!(
        (cond.status, cond.message.as_str()),
        (
            ConditionStatus::True,
            "Deployment initialization completed."
        )
    );
}

#[test]
fn unreachable_metric_providers_warn_but_do_not_block_initialization() {
    let tick = Canary::new_object().decide(&Obs::healthy().with_providers(
        ProviderCheck::Unavailable("prometheus not avaiable: connection refused".into()),
    ));
    assert!(
        tick.warnings().contains(
            &"Error checking metric providers: prometheus not avaiable: connection refused"
        )
    );
    assert_eq!(tick.phase(), Phase::Initialized);
}

#[test]
fn initialization_gives_up_at_the_deadline_without_touching_the_target() {
    let waiting = Canary::new_object()
        .with_phase(Phase::Initializing)
        .with_primary_wait(0);
    let tick = waiting.decide(&Obs::healthy().with_primary(not_ready()).at(2 * MINUTE));
    assert_eq!(tick.phase(), Phase::Failed);
    assert!(
        !tick.has(&Action::ScaleCanary(Scale::ToZero)),
        "the target still serves"
    );
    assert!(tick.set_weights().is_empty());
    assert!(
        tick.warnings()
            .iter()
            .any(|w| w.starts_with("Canary podinfo.test failed, primary not ready: "))
    );
    // When the primary recovers, initialization completes.
    let later = Canary {
        status: tick.next().clone(),
        ..Canary::new_object()
    }
    .decide(&Obs::healthy().at(5 * MINUTE));
    assert_eq!(later.phase(), Phase::Initialized);
}

#[test]
fn skip_analysis_does_not_wait_for_the_primary_at_initialization() {
    let tick = Canary::new_object()
        .skipping_analysis()
        .decide(&Obs::healthy().with_primary(not_ready()));
    assert_eq!(tick.phase(), Phase::Initialized);
    assert!(tick.gathered.is_empty());
}

// ---- idle / revision detection -----------------------------------------------------------------

#[test]
fn idle_canary_reconciles_and_waits_for_a_new_revision() {
    for phase in [Phase::Initialized, Phase::Succeeded, Phase::Failed] {
        let tick = Canary::test().with_phase(phase).decide(&Obs::healthy());
        assert_eq!(
            tick.decision.actions,
            vec![Action::EnsurePrimary, Action::ReconcileRoutes],
            "{phase}"
        );
        assert!(tick.gathered.is_empty());
        assert_eq!(tick.decision.requeue_after, Duration::from_secs(60));
    }
}

#[test]
fn new_revision_scales_up_and_starts_progressing() {
    for phase in [Phase::Initialized, Phase::Succeeded, Phase::Failed] {
        let tick = Canary::test()
            .with_phase(phase)
            .with_failed_checks(3)
            .decide(
                &Obs::healthy()
                    .with_new_revision()
                    .with_config("configmap/podinfo-config", "abc"),
            );
        assert_eq!(
            tick.events(),
            vec!["New revision detected! Scaling up podinfo.test"],
            "{phase}"
        );
        assert!(tick.has(&Action::ScaleCanary(Scale::Up)));
        assert_eq!(tick.phase(), Phase::Progressing);
        let next = tick.next();
        assert_eq!(
            (next.failed_checks, next.iterations, next.canary_weight),
            (0, 0, 0)
        );
        assert_eq!(next.last_applied_spec, NEW);
        assert_eq!(next.last_promoted_spec, PROMOTED);
        assert_eq!(
            next.tracked_configs
                .get("configmap/podinfo-config")
                .map(String::as_str),
            Some("abc")
        );
        assert_eq!(
            tick.notifications(),
            vec!["New revision detected, progressing canary analysis."]
        );
        assert!(!tick.asked_for_metrics());
    }
}

#[test]
fn going_back_to_the_promoted_revision_is_not_a_new_revision() {
    let failed = Canary::test()
        .with_phase(Phase::Failed)
        .with_last_applied(NEW);
    let tick = failed.decide(&Obs::healthy());
    assert_eq!(tick.phase(), Phase::Failed);
    assert!(tick.events().is_empty());
    // ...but it is remembered, so re-applying the failed revision starts a new run.
    assert_eq!(tick.next().last_applied_spec, PROMOTED);
    let again = Canary {
        status: tick.next().clone(),
        ..Canary::test()
    }
    .decide(&Obs::healthy().with_new_revision());
    assert_eq!(again.phase(), Phase::Progressing);
}

#[test]
fn a_failed_revision_is_not_retried() {
    let tick = Canary::test()
        .with_phase(Phase::Failed)
        .with_last_applied(NEW)
        .decide(&Obs::healthy().with_new_revision());
    assert_eq!(tick.phase(), Phase::Failed);
    assert!(tick.events().is_empty());
}

// ---- confirm-rollout ---------------------------------------------------------------------------

#[test]
fn confirm_rollout_refusal_waits_and_says_so_once() {
    let canary = Canary::test().with_hook("confirm-rollout", "gate");
    let obs = Obs::healthy()
        .with_new_revision()
        .with_hook_failing("gate", "Forbidden");
    let tick = canary.clone().decide(&obs);
    assert_eq!(tick.phase(), Phase::Waiting);
    assert_eq!(
        tick.warnings(),
        vec!["Halt podinfo.test advancement waiting for approval gate"]
    );
    assert_eq!(
        tick.notifications(),
        vec!["Canary is waiting for approval."]
    );
    assert!(!tick.has(&Action::ScaleCanary(Scale::Up)));
    match &tick.gathered[0] {
        Gather::Hooks {
            hook_type,
            phase,
            checksum,
        } => {
            assert_eq!(
                (*hook_type, *phase, checksum.as_str()),
                (HookType::ConfirmRollout, Phase::Initialized, NEW)
            );
        }
        other => panic!("{other:?}"),
    }
    let still = canary.clone().with_phase(Phase::Waiting).decide(&obs);
    assert_eq!(still.phase(), Phase::Waiting);
    assert!(still.events().is_empty(), "no repeat: {:?}", still.events());
    let approved = canary
        .with_phase(Phase::Waiting)
        .decide(&Obs::healthy().with_new_revision());
    assert_eq!(
        approved.events(),
        vec![
            "Confirm-rollout check gate passed",
            "New revision detected! Scaling up podinfo.test"
        ]
    );
    assert_eq!(approved.phase(), Phase::Progressing);
}

#[test]
fn muted_gates_do_not_notify() {
    let tick = Canary::test()
        .with_muted_hook("confirm-rollout", "gate")
        .decide(
            &Obs::healthy()
                .with_new_revision()
                .with_hook_failing("gate", "Forbidden"),
        );
    assert_eq!(tick.phase(), Phase::Waiting);
    assert!(tick.notifications().is_empty());
}

// ---- rollout slots (--max-concurrent-canaries) ------------------------------------------------

#[test]
fn a_new_run_waits_for_a_rollout_slot_and_says_so_once() {
    let busy = Obs::healthy().with_new_revision().with_slots_busy(2, 2);
    let tick = Canary::test().decide(&busy);
    assert!(tick.gathered.contains(&Gather::RolloutSlot));
    assert_eq!(tick.phase(), Phase::Waiting);
    assert_eq!(
        tick.events(),
        vec!["Halt podinfo.test advancement waiting for a rollout slot (2 of 2 in progress)"]
    );
    assert!(
        !tick.has(&Action::ScaleCanary(Scale::Up)),
        "the target stays at 0 replicas while waiting"
    );
    assert!(tick.set_weights().is_empty(), "routes untouched");
    let cond = tick.next().condition(PROMOTED_CONDITION).unwrap();
    assert_eq!(
        (cond.reason.as_str(), cond.message.as_str()),
        ("Waiting", "waiting for a rollout slot (2 of 2 in progress)")
    );
    assert_eq!(
        tick.next().last_applied_spec,
        PROMOTED,
        "the run has not started: the new revision is not recorded yet"
    );
    assert!(tick.writes_status(), "the wait is visible in .status");

    // Still busy: no repeated event, no status write.
    let waiting = Canary {
        status: tick.next().clone(),
        ..Canary::test()
    };
    let again = waiting.decide(&busy.clone().at(11 * MINUTE));
    assert_eq!(again.phase(), Phase::Waiting);
    assert!(again.events().is_empty(), "{:?}", again.events());
    assert!(!again.writes_status());

    // A slot frees up: the run starts as usual.
    let granted = waiting.decide(&Obs::healthy().with_new_revision().at(12 * MINUTE));
    assert_eq!(granted.phase(), Phase::Progressing);
    assert_eq!(
        granted.events(),
        vec!["New revision detected! Scaling up podinfo.test"]
    );
    assert!(granted.has(&Action::ScaleCanary(Scale::Up)));
    assert_eq!(granted.next().last_applied_spec, NEW);
    let cond = granted.next().condition(PROMOTED_CONDITION).unwrap();
    assert_eq!(
        cond.message,
        "New revision detected, progressing canary analysis."
    );
}

#[test]
fn a_rollout_slot_is_asked_for_only_when_a_run_would_start() {
    let cases = [
        ("idle", Canary::test(), Obs::healthy()),
        (
            "analysing",
            Canary::test().analysing(),
            Obs::healthy().with_new_revision().with_canary_weight(10),
        ),
        (
            "promoting",
            Canary::test().analysing().with_phase(Phase::Promoting),
            Obs::healthy().with_new_revision().with_canary_weight(50),
        ),
        (
            "restart during analysis",
            Canary::test().analysing(),
            Obs::healthy().with_revision("rev-3").with_canary_weight(10),
        ),
        (
            "confirm-rollout refuses",
            Canary::test().with_hook("confirm-rollout", "gate"),
            Obs::healthy()
                .with_new_revision()
                .with_hook_failing("gate", "Forbidden"),
        ),
    ];
    for (what, canary, obs) in cases {
        let tick = canary.decide(&obs.with_slots_busy(1, 1));
        assert!(
            !tick.gathered.contains(&Gather::RolloutSlot),
            "{what}: asked for a slot"
        );
        assert!(
            !tick.events().iter().any(|e| e.contains("rollout slot")),
            "{what}: {:?}",
            tick.events()
        );
    }
}

#[test]
fn only_started_runs_hold_a_rollout_slot() {
    for phase in Phase::ALL {
        let expected = matches!(
            phase,
            Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
        );
        assert_eq!(phase.holds_rollout_slot(), expected, "{phase}");
    }
}

// ---- restart -----------------------------------------------------------------------------------

#[test]
fn a_change_during_analysis_restarts_it() {
    for phase in [Phase::Progressing, Phase::WaitingPromotion] {
        let tick = Canary::test()
            .analysing()
            .with_phase(phase)
            .with_failed_checks(2)
            .with_status_weight(25)
            .decide(&Obs::healthy().with_revision("rev-3").with_canary_weight(25));
        assert_eq!(
            tick.events(),
            vec!["New revision detected! Restarting analysis for podinfo.test"]
        );
        assert_eq!(tick.set_weights(), vec![(0, false)]);
        assert_eq!(tick.phase(), Phase::Progressing);
        let next = tick.next();
        assert_eq!(
            (next.failed_checks, next.canary_weight, next.iterations),
            (0, 0, 0)
        );
        assert_eq!(next.last_applied_spec, "rev-3");
        assert!(!tick.asked_for_metrics());
    }
}

#[test]
fn a_change_during_promotion_waits_for_the_next_run() {
    let tick = Canary::test()
        .analysing()
        .with_phase(Phase::Promoting)
        .decide(&Obs::healthy().with_revision("rev-3").with_canary_weight(50));
    assert!(!tick.events().iter().any(|e| e.contains("Restarting")));
    assert_eq!(tick.phase(), Phase::Finalising);
}

// ---- readiness halts ---------------------------------------------------------------------------

#[test]
fn canary_rollout_underway_halts_without_checks() {
    let tick = Canary::test().analysing().decide(
        &Obs::healthy()
            .with_new_revision()
            .with_target(not_ready())
            .with_canary_weight(10),
    );
    assert_eq!(
        tick.warnings(),
        vec![format!(
            "canary deployment podinfo.test not ready: {UNREADY}"
        )]
    );
    assert!(tick.set_weights().is_empty());
    assert!(tick.gathered.is_empty(), "no metrics while not ready");
    assert_eq!(tick.next().failed_checks, 0, "not a failed check");
    let wait = tick.next().progress_waits.canary.unwrap();
    assert_eq!(wait.since, Timestamp(10 * MINUTE));
    assert_eq!(
        wait.deadline,
        Timestamp(11 * MINUTE),
        "since + progressDeadlineSeconds"
    );
}

#[test]
fn unhealthy_primary_halts_the_analysis() {
    let tick = Canary::test().analysing().decide(
        &Obs::healthy()
            .with_new_revision()
            .with_primary(not_ready())
            .with_canary_weight(10),
    );
    assert_eq!(
        tick.warnings(),
        vec![format!("podinfo-primary.test not ready: {UNREADY}")]
    );
    assert!(tick.set_weights().is_empty());
    assert!(tick.next().progress_waits.primary.is_some());
}

#[test]
fn autoscaler_scaling_halts_like_any_rollout() {
    let scaling = Readiness::NotReady(
        "waiting for the autoscaler to finish scaling: 3 desired, 2 current replicas".into(),
    );
    let tick = Canary::test().analysing().decide(
        &Obs::healthy()
            .with_new_revision()
            .with_target(scaling)
            .with_canary_weight(10),
    );
    assert_eq!(
        tick.warnings(),
        vec![
            "canary deployment podinfo.test not ready: waiting for the autoscaler to finish scaling: 3 desired, 2 current replicas"
        ]
    );
    assert!(tick.set_weights().is_empty());
}

#[test]
fn readiness_clears_the_wait() {
    let tick = Canary::test()
        .analysing()
        .with_canary_wait(9 * MINUTE)
        .decide(&Obs::healthy().with_new_revision().with_canary_weight(10));
    assert!(tick.next().progress_waits.canary.is_none());
    assert_eq!(tick.set_weights(), vec![(15, false)]);
}

#[test]
fn progress_deadline_rolls_back() {
    let tick = Canary::test().analysing().with_canary_wait(0).decide(
        &Obs::healthy()
            .with_new_revision()
            .with_target(not_ready())
            .with_canary_weight(10)
            .at(MINUTE),
    );
    let full = format!(
        "canary deployment podinfo.test not ready: {UNREADY} (progressDeadlineSeconds 60 exceeded)"
    );
    assert_eq!(
        tick.warnings(),
        vec![
            full.clone(),
            format!("Rolling back podinfo.test progress deadline exceeded {full}"),
            "Canary failed! Scaling down podinfo.test".to_owned(),
        ]
    );
    assert_eq!(tick.set_weights(), vec![(0, false)]);
    assert!(tick.has(&Action::ScaleCanary(Scale::ToZero)));
    assert_eq!(tick.phase(), Phase::Failed);
}

#[test]
fn kubernetes_deadline_is_final_at_once() {
    let tick = Canary::test()
        .analysing()
        .decide(
            &Obs::healthy()
                .with_new_revision()
                .with_target(Readiness::Failed(
                    "deployment \"podinfo\" exceeded its progress deadline".into(),
                )),
        );
    assert_eq!(tick.phase(), Phase::Failed);
    assert!(tick.has(&Action::ScaleCanary(Scale::ToZero)));
}

// ---- failed checks threshold -------------------------------------------------------------------

#[test]
fn threshold_of_failed_checks_rolls_back() {
    let tick = Canary::test()
        .analysing()
        .with_failed_checks(5)
        .decide(&Obs::healthy().with_new_revision().with_canary_weight(15));
    assert_eq!(
        tick.warnings(),
        vec![
            "Rolling back podinfo.test failed checks threshold reached 5",
            "Canary failed! Scaling down podinfo.test"
        ]
    );
    assert_eq!(
        tick.notifications(),
        vec!["Failed checks threshold reached 5"]
    );
    assert_eq!(tick.set_weights(), vec![(0, false)]);
    assert!(tick.has(&Action::ScaleCanary(Scale::ToZero)));
    assert!(!tick.has(&Action::PromoteToPrimary));
    assert_eq!(tick.phase(), Phase::Failed);
    assert_eq!(
        tick.next().failed_checks,
        5,
        "kept for kubectl describe, as the seed shows"
    );
    assert!(
        !tick.asked_for_metrics(),
        "no analysis on the rollback tick"
    );
    let cond = tick.next().condition(PROMOTED_CONDITION).unwrap();
    assert_eq!(
        (cond.status, cond.message.as_str()),
        (
            ConditionStatus::False,
            "Canary analysis failed, Deployment scaled to zero."
        )
    );
}

#[test]
fn below_threshold_the_analysis_continues() {
    let tick = Canary::test()
        .analysing()
        .with_failed_checks(4)
        .decide(&Obs::healthy().with_new_revision().with_canary_weight(15));
    assert_eq!(tick.set_weights(), vec![(20, false)]);
    assert_eq!(tick.next().failed_checks, 4);
}

// ---- metric checks -----------------------------------------------------------------------------

#[test]
fn metric_failures_halt_with_upstream_texts_and_count() {
    let nd = || MetricValue::NoData(Some("running query failed: no values found".into()));
    let cases: Vec<(Obs, &str)> = vec![
        (
            Obs::healthy().with_success_rate(69.1712),
            "Halt podinfo.test advancement success rate 69.17% < 99%",
        ),
        (
            Obs::healthy().with_latency_ms(1515.9),
            "Halt podinfo.test advancement request duration 1.515s > 500ms",
        ),
        (
            Obs::healthy().with_metric("request-success-rate", nd()),
            "Halt advancement no values found for istio metric request-success-rate probably podinfo.test is not receiving traffic: running query failed: no values found",
        ),
        (
            Obs::healthy().with_metric("request-duration", MetricValue::NoData(None)),
            "Halt advancement no values found for istio metric request-duration probably podinfo.test is not receiving traffic",
        ),
        (
            Obs::healthy().with_success_rate(f64::NAN),
            "Halt advancement no values found for istio metric request-success-rate probably podinfo.test is not receiving traffic",
        ),
        (
            Obs::healthy().with_metric(
                "request-success-rate",
                MetricValue::Failed(
                    "running query failed: request failed: connection refused".into(),
                ),
            ),
            "Prometheus query failed: running query failed: request failed: connection refused",
        ),
    ];
    for (obs, text) in cases {
        let tick = Canary::test()
            .analysing()
            .decide(&obs.with_new_revision().with_canary_weight(10));
        assert_eq!(tick.warnings(), vec![text]);
        assert_eq!(tick.next().failed_checks, 1, "{text}");
        assert!(tick.set_weights().is_empty(), "{text}: halted");
        assert_eq!(tick.phase(), Phase::Progressing);
    }
}

#[test]
fn custom_metric_texts() {
    let canary = Canary::test()
        .analysing()
        .with_custom_metric("error-budget", 10.0);
    let at = |v| {
        Obs::healthy()
            .with_new_revision()
            .with_canary_weight(10)
            .with_metric("error-budget", v)
    };
    let over = canary.clone().decide(&at(MetricValue::Value(12.345)));
    assert_eq!(
        over.warnings(),
        vec!["Halt podinfo.test advancement error-budget 12.35 > 10"]
    );
    let none = canary.clone().decide(&at(MetricValue::NoData(None)));
    assert_eq!(
        none.warnings(),
        vec!["Halt advancement no values found for metric: error-budget"]
    );
    let err = canary
        .clone()
        .decide(&at(MetricValue::Failed("bad_data: parse error".into())));
    assert_eq!(
        err.warnings(),
        vec!["Prometheus query failed for error-budget: bad_data: parse error"]
    );
    let missing = canary.decide(&Obs::healthy().with_new_revision().with_canary_weight(10));
    assert_eq!(
        missing.warnings(),
        vec!["Metric query failed for error-budget: no result"],
        "a metric without a result never passes"
    );
}

#[test]
fn the_first_step_runs_pre_rollout_hooks_not_metrics() {
    let canary = Canary::test()
        .analysing()
        .with_hook("pre-rollout", "db-migration");
    let ok = canary
        .clone()
        .decide(&Obs::healthy().with_new_revision().with_success_rate(10.0));
    assert_eq!(
        ok.events(),
        vec![
            "Starting canary analysis for podinfo.test",
            "Pre-rollout check db-migration passed",
            "Advance podinfo.test canary weight 5"
        ]
    );
    assert!(!ok.asked_for_metrics());
    let failing = canary.decide(
        &Obs::healthy()
            .with_new_revision()
            .with_hook_failing("db-migration", "exit status 1"),
    );
    assert_eq!(
        failing.warnings(),
        vec!["Halt podinfo.test advancement pre-rollout check db-migration failed exit status 1"]
    );
    assert_eq!(failing.next().failed_checks, 1);
    assert!(failing.set_weights().is_empty());
}

#[test]
fn rollout_hooks_run_before_metrics_and_fail_the_check() {
    let canary = Canary::test().analysing().with_hook("rollout", "load-test");
    let tick = canary.decide(
        &Obs::healthy()
            .with_new_revision()
            .with_canary_weight(10)
            .with_hook_failing("load-test", "connection refused"),
    );
    assert_eq!(
        tick.warnings(),
        vec!["Halt podinfo.test advancement external check load-test failed connection refused"]
    );
    assert!(
        !tick.asked_for_metrics(),
        "metrics not queried after a failed hook"
    );
    assert_eq!(tick.next().failed_checks, 1);
}

// ---- confirm-traffic-increase & advance --------------------------------------------------------

#[test]
fn advance_by_step_weight_up_to_max_weight() {
    let cases = [(0, 5), (5, 10), (45, 50)];
    for (from, to) in cases {
        let tick = Canary::test()
            .analysing()
            .decide(&Obs::healthy().with_new_revision().with_canary_weight(from));
        assert_eq!(tick.set_weights(), vec![(to, false)], "{from}");
        assert!(
            tick.events()
                .contains(&format!("Advance podinfo.test canary weight {to}").as_str())
        );
        assert_eq!(tick.next().canary_weight, to);
    }
    let overshoot = Canary::test()
        .with_steps(20, 50)
        .analysing()
        .decide(&Obs::healthy().with_new_revision().with_canary_weight(40));
    assert_eq!(
        overshoot.set_weights(),
        vec![(50, false)],
        "clamped to maxWeight"
    );
}

#[test]
fn confirm_traffic_increase_gates_every_step() {
    let canary = Canary::test()
        .analysing()
        .with_hook("confirm-traffic-increase", "approve-step");
    let refused = canary.clone().decide(
        &Obs::healthy()
            .with_new_revision()
            .with_canary_weight(10)
            .with_hook_failing("approve-step", "Forbidden"),
    );
    assert_eq!(
        refused.warnings(),
        vec!["Halt podinfo.test advancement waiting for traffic increase approval approve-step"]
    );
    assert_eq!(
        refused.notifications(),
        vec!["Canary traffic increase is waiting for approval."]
    );
    assert!(refused.set_weights().is_empty());
    assert_eq!(
        refused.next().failed_checks,
        0,
        "a closed gate is not a failed check"
    );
    let open = canary.decide(&Obs::healthy().with_new_revision().with_canary_weight(10));
    assert_eq!(
        open.events(),
        vec![
            "Confirm-traffic-increase check approve-step passed",
            "Advance podinfo.test canary weight 15"
        ]
    );
}

#[test]
fn mirroring_takes_one_mirror_step_first() {
    let canary = Canary::test().analysing().with_mirror();
    let first = canary.clone().decide(&Obs::healthy().with_new_revision());
    assert_eq!(first.set_weights(), vec![(0, true)]);
    assert!(
        first
            .events()
            .contains(&"Advance podinfo.test canary weight 0")
    );
    let second = canary.decide(&Obs::healthy().with_new_revision().mirrored());
    assert!(second.asked_for_metrics(), "analysis runs while mirrored");
    assert_eq!(second.set_weights(), vec![(5, false)]);
}

// ---- promotion ---------------------------------------------------------------------------------

#[test]
fn max_weight_reached_promotes() {
    let tick = Canary::test()
        .analysing()
        .decide(&Obs::healthy().with_new_revision().with_canary_weight(50));
    assert!(
        tick.asked_for_metrics(),
        "checks pass at max weight before promoting"
    );
    assert_eq!(
        tick.events(),
        vec!["Copying podinfo.test template spec to podinfo-primary.test"]
    );
    assert!(tick.has(&Action::PromoteToPrimary));
    assert!(
        tick.set_weights().is_empty(),
        "traffic stays until the primary is rolled out"
    );
    assert_eq!(tick.phase(), Phase::Promoting);
}

#[test]
fn never_promote_with_failing_checks_at_max_weight() {
    let tick = Canary::test().analysing().decide(
        &Obs::healthy()
            .with_new_revision()
            .with_canary_weight(50)
            .with_metric("request-success-rate", MetricValue::NoData(None)),
    );
    assert!(!tick.has(&Action::PromoteToPrimary));
    assert_eq!(tick.phase(), Phase::Progressing);
}

#[test]
fn confirm_promotion_refusal_waits_for_promotion() {
    let canary = Canary::test()
        .analysing()
        .with_hook("confirm-promotion", "approve");
    let obs = Obs::healthy()
        .with_new_revision()
        .with_canary_weight(50)
        .with_hook_failing("approve", "Forbidden");
    let tick = canary.clone().decide(&obs);
    assert_eq!(tick.phase(), Phase::WaitingPromotion);
    assert_eq!(
        tick.warnings(),
        vec!["Halt podinfo.test advancement waiting for promotion approval approve"]
    );
    assert_eq!(
        tick.notifications(),
        vec!["Canary promotion is waiting for approval."]
    );
    let waiting = canary.clone().with_phase(Phase::WaitingPromotion);
    let again = waiting.clone().decide(&obs);
    assert!(
        again.asked_for_metrics(),
        "the analysis keeps running while waiting"
    );
    assert!(again.warnings().is_empty());
    let failing = waiting.clone().with_failed_checks(5).decide(&obs);
    assert_eq!(
        failing.phase(),
        Phase::Failed,
        "failed checks still roll back while waiting"
    );
    let approved = waiting.decide(&Obs::healthy().with_new_revision().with_canary_weight(50));
    assert_eq!(approved.phase(), Phase::Promoting);
    assert!(
        approved
            .events()
            .contains(&"Confirm-promotion check approve passed")
    );
}

#[test]
fn promoting_waits_for_the_primary_rollout() {
    let canary = Canary::test().analysing().with_phase(Phase::Promoting);
    let rolling = Readiness::NotReady(
        "waiting for rollout to finish: 1 old replicas are pending termination".into(),
    );
    let tick = canary.clone().decide(
        &Obs::healthy()
            .with_new_revision()
            .with_canary_weight(50)
            .with_primary(rolling),
    );
    assert_eq!(
        tick.warnings(),
        vec![
            "podinfo-primary.test not ready: waiting for rollout to finish: 1 old replicas are pending termination"
        ]
    );
    assert!(tick.set_weights().is_empty());
    assert_eq!(tick.phase(), Phase::Promoting);
    let done = canary.decide(&Obs::healthy().with_new_revision().with_canary_weight(50));
    assert_eq!(done.events(), vec!["Routing all traffic to primary"]);
    assert_eq!(done.set_weights(), vec![(0, false)]);
    assert_eq!(done.phase(), Phase::Finalising);
}

#[test]
fn step_weight_promotion_moves_traffic_back_gradually() {
    let canary = Canary::test()
        .analysing()
        .with_phase(Phase::Promoting)
        .with_step_weight_promotion(20);
    let tick = canary
        .clone()
        .decide(&Obs::healthy().with_new_revision().with_canary_weight(50));
    assert_eq!(
        tick.events(),
        vec!["Advance podinfo.test primary weight 70"]
    );
    assert_eq!(tick.set_weights(), vec![(30, false)]);
    assert_eq!(tick.phase(), Phase::Promoting);
    let last = canary.decide(&Obs::healthy().with_new_revision().with_canary_weight(10));
    assert_eq!(last.set_weights(), vec![(0, false)]);
    assert_eq!(last.phase(), Phase::Finalising);
}

#[test]
fn primary_never_ready_fails_the_promotion_with_traffic_on_the_canary() {
    for phase in [Phase::Promoting, Phase::Finalising] {
        let tick = Canary::test()
            .analysing()
            .with_phase(phase)
            .with_primary_wait(0)
            .decide(
                &Obs::healthy()
                    .with_new_revision()
                    .with_canary_weight(50)
                    .with_primary(not_ready())
                    .at(2 * MINUTE),
            );
        assert_eq!(tick.phase(), Phase::Failed, "{phase}");
        assert_eq!(
            tick.set_weights(),
            vec![(100, false)],
            "all traffic on the canary, never on a broken primary"
        );
        assert!(
            !tick.has(&Action::ScaleCanary(Scale::ToZero)),
            "the canary is the only healthy copy"
        );
        assert!(
            tick.warnings()
                .iter()
                .any(|w| w.starts_with("Promotion of podinfo.test failed, primary not ready: "))
        );
        assert!(tick.notifications()[0].starts_with("Promotion failed, primary not ready: "));
        assert_eq!(tick.next().canary_weight, 100);
    }
}

#[test]
fn primary_failing_outside_promotion_does_not_move_traffic() {
    let tick = Canary::test().analysing().with_primary_wait(0).decide(
        &Obs::healthy()
            .with_new_revision()
            .with_canary_weight(20)
            .with_primary(not_ready())
            .at(2 * MINUTE),
    );
    assert_eq!(tick.phase(), Phase::Failed);
    assert!(tick.set_weights().is_empty());
    assert!(!tick.has(&Action::ScaleCanary(Scale::ToZero)));
}

#[test]
fn finalising_scales_down_and_succeeds() {
    let canary = Canary::test()
        .analysing()
        .with_phase(Phase::Finalising)
        .with_hook("post-rollout", "notify-release");
    let tick = canary.decide(&Obs::healthy().with_new_revision());
    assert!(tick.has(&Action::ScaleCanary(Scale::ToZero)));
    assert_eq!(
        tick.events(),
        vec!["Promotion completed! Scaling down podinfo.test"]
    );
    assert_eq!(
        tick.notifications(),
        vec!["Canary analysis completed successfully, promotion finished."]
    );
    assert!(tick.has(&Action::RunHooks {
        hook_type: HookType::PostRollout,
        phase: Phase::Succeeded,
        checksum: NEW.into()
    }));
    assert_eq!(tick.phase(), Phase::Succeeded);
    assert_eq!(tick.next().last_promoted_spec, NEW);
    assert!(
        matches!(tick.decision.actions.last(), Some(Action::WriteStatus(_))),
        "status written last"
    );
    assert_eq!(
        tick.decision
            .actions
            .iter()
            .filter(|a| matches!(a, Action::WriteStatus(_)))
            .count(),
        1
    );
}

// ---- rollback hooks ----------------------------------------------------------------------------

#[test]
fn a_rollback_hook_that_answers_rolls_back() {
    let canary = Canary::test()
        .analysing()
        .with_hook("rollback", "manual")
        .with_hook("post-rollout", "report");
    let fired = canary
        .clone()
        .decide(&Obs::healthy().with_new_revision().with_canary_weight(20));
    assert_eq!(
        fired.warnings(),
        vec![
            "Rollback check manual passed",
            "Rolling back podinfo.test manual webhook invoked",
            "Canary failed! Scaling down podinfo.test"
        ]
    );
    assert_eq!(fired.phase(), Phase::Failed);
    assert!(fired.has(&Action::RunHooks {
        hook_type: HookType::PostRollout,
        phase: Phase::Failed,
        checksum: NEW.into()
    }));
    let quiet = canary.decide(
        &Obs::healthy()
            .with_new_revision()
            .with_canary_weight(20)
            .with_hook_failing("manual", "Forbidden"),
    );
    assert!(
        quiet
            .events()
            .contains(&"Rollback hook manual not signaling a rollback")
    );
    assert_eq!(quiet.set_weights(), vec![(25, false)]);
}

// ---- skipAnalysis ------------------------------------------------------------------------------

#[test]
fn skip_analysis_promotes_once_the_canary_is_ready() {
    let canary = Canary::test().skipping_analysis().analysing();
    let waiting = canary
        .clone()
        .decide(&Obs::healthy().with_new_revision().with_target(not_ready()));
    assert_eq!(waiting.phase(), Phase::Progressing);
    let tick = canary.decide(&Obs::healthy().with_new_revision().with_primary(not_ready()));
    assert_eq!(
        tick.events(),
        vec![
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Promotion completed! Canary analysis was skipped for podinfo.test"
        ]
    );
    assert!(tick.has(&Action::PromoteToPrimary));
    assert!(tick.has(&Action::ScaleCanary(Scale::ToZero)));
    assert_eq!(tick.phase(), Phase::Succeeded);
    assert!(tick.gathered.is_empty(), "no metrics, no hooks");
}

// ---- iterations (Blue/Green, A/B) --------------------------------------------------------------

#[test]
fn blue_green_counts_iterations_then_switches_then_promotes() {
    let canary = Canary::test().with_iterations(3).analysing();
    let first = canary.clone().decide(&Obs::healthy().with_new_revision());
    assert_eq!(
        first.events(),
        vec![
            "Starting canary analysis for podinfo.test",
            "Advance podinfo.test canary iteration 1/3"
        ]
    );
    assert_eq!(first.next().iterations, 1);
    assert!(first.set_weights().is_empty());
    let third = canary
        .clone()
        .with_iterations_done(2)
        .decide(&Obs::healthy().with_new_revision());
    assert!(third.asked_for_metrics());
    assert_eq!(
        third.events(),
        vec!["Advance podinfo.test canary iteration 3/3"]
    );
    let switch = canary
        .clone()
        .with_iterations_done(3)
        .decide(&Obs::healthy().with_new_revision());
    assert_eq!(switch.events(), vec!["Routing all traffic to canary"]);
    assert_eq!(switch.set_weights(), vec![(100, false)]);
    assert_eq!(switch.next().iterations, 4);
    let promote = canary
        .with_iterations_done(4)
        .decide(&Obs::healthy().with_new_revision().with_canary_weight(100));
    assert_eq!(
        promote.events(),
        vec!["Copying podinfo.test template spec to podinfo-primary.test"]
    );
    assert_eq!(promote.phase(), Phase::Promoting);
}

#[test]
fn ab_testing_routes_matching_requests_each_iteration() {
    let canary = Canary::test()
        .with_iterations(2)
        .with_ab_match()
        .analysing();
    let first = canary.clone().decide(&Obs::healthy().with_new_revision());
    assert_eq!(first.set_weights(), vec![(100, false)]);
    assert!(
        first
            .events()
            .contains(&"Advance podinfo.test canary iteration 1/2")
    );
    let promote = canary
        .with_iterations_done(2)
        .decide(&Obs::healthy().with_new_revision().with_canary_weight(100));
    assert_eq!(promote.phase(), Phase::Promoting);
}

#[test]
fn kubernetes_provider_never_writes_weights() {
    let canary = Canary::test().on_kubernetes_provider().analysing();
    let tick = canary.clone().decide(
        &Obs::healthy()
            .with_new_revision()
            .with_routes(Observed::Missing),
    );
    assert_eq!(
        tick.events(),
        vec![
            "Starting canary analysis for podinfo.test",
            "Advance podinfo.test canary iteration 1/10"
        ]
    );
    assert!(tick.set_weights().is_empty());
    let promoting = canary
        .with_phase(Phase::Promoting)
        .decide(&Obs::healthy().with_new_revision());
    assert_eq!(promoting.phase(), Phase::Finalising);
    assert!(promoting.set_weights().is_empty());
}

// ---- routes ------------------------------------------------------------------------------------

#[test]
fn unreadable_routes_halt_with_a_warning() {
    let tick = Canary::test().analysing().decide(&Obs::healthy().with_new_revision().with_routes(Observed::Error(
        "VirtualService podinfo.test does not contain routes for podinfo-primary and podinfo-canary".into(),
    )));
    assert_eq!(
        tick.warnings(),
        vec![
            "VirtualService podinfo.test does not contain routes for podinfo-primary and podinfo-canary"
        ]
    );
    assert!(tick.set_weights().is_empty());
    let missing = Canary::test().analysing().decide(
        &Obs::healthy()
            .with_new_revision()
            .with_routes(Observed::Missing),
    );
    assert_eq!(
        missing.warnings(),
        vec!["VirtualService podinfo.test not found"]
    );
}

// ---- finalize (revertOnDeletion) ---------------------------------------------------------------

#[test]
fn deletion_reverts_the_target_then_the_routes() {
    let spec = Canary::test().spec();
    let first = finalize(&spec, &Canary::test().status, &Obs::healthy().base);
    assert_eq!(first.events(), vec!["Terminating canary podinfo.test"]);
    assert!(first.actions.contains(&Action::RevertTarget));
    assert_eq!(first.next_state.phase, Phase::Terminating);
    let waiting = finalize(
        &spec,
        &first.next_state,
        &Obs::healthy().with_target(not_ready()).base,
    );
    assert!(
        !waiting.actions.contains(&Action::RemoveFinalizer),
        "never cut traffic over to an unready target"
    );
    let done = finalize(&spec, &first.next_state, &Obs::healthy().base);
    assert_eq!(done.events(), vec!["Terminated canary podinfo.test"]);
    let tail: Vec<&Action> = done
        .actions
        .iter()
        .filter(|a| !matches!(a, Action::Event { .. }))
        .collect();
    assert_eq!(tail, vec![&Action::RevertRoutes, &Action::RemoveFinalizer]);
}

// ---- phase diagram (§2.3), one row per transition ----------------------------------------------

#[test]
fn phase_transitions_of_the_diagram() {
    let unready_primary = |obs: Obs| obs.with_primary(not_ready()).at(2 * MINUTE);
    let rows: Vec<(&str, Canary, Obs, Phase)> = vec![
        (
            "'' -> Initialized",
            Canary::new_object(),
            Obs::healthy(),
            Phase::Initialized,
        ),
        (
            "Initialized -> Progressing",
            Canary::test(),
            Obs::healthy().with_new_revision(),
            Phase::Progressing,
        ),
        (
            "Succeeded -> Progressing",
            Canary::test().with_phase(Phase::Succeeded),
            Obs::healthy().with_new_revision(),
            Phase::Progressing,
        ),
        (
            "Failed -> Progressing",
            Canary::test().with_phase(Phase::Failed),
            Obs::healthy().with_new_revision(),
            Phase::Progressing,
        ),
        (
            "Initialized -> Waiting",
            Canary::test().with_hook("confirm-rollout", "g"),
            Obs::healthy()
                .with_new_revision()
                .with_hook_failing("g", "no"),
            Phase::Waiting,
        ),
        (
            "Waiting -> Progressing",
            Canary::test()
                .with_hook("confirm-rollout", "g")
                .with_phase(Phase::Waiting),
            Obs::healthy().with_new_revision(),
            Phase::Progressing,
        ),
        (
            "Progressing -> Progressing (step)",
            Canary::test().analysing(),
            Obs::healthy().with_new_revision().with_canary_weight(5),
            Phase::Progressing,
        ),
        (
            "Progressing -> Failed (threshold)",
            Canary::test().analysing().with_failed_checks(5),
            Obs::healthy().with_new_revision().with_canary_weight(5),
            Phase::Failed,
        ),
        (
            "Progressing -> Failed (rollback hook)",
            Canary::test().analysing().with_hook("rollback", "r"),
            Obs::healthy().with_new_revision().with_canary_weight(5),
            Phase::Failed,
        ),
        (
            "Progressing -> Failed (deadline)",
            Canary::test().analysing().with_canary_wait(0),
            Obs::healthy()
                .with_new_revision()
                .with_target(not_ready())
                .at(2 * MINUTE),
            Phase::Failed,
        ),
        (
            "Progressing -> WaitingPromotion",
            Canary::test()
                .analysing()
                .with_hook("confirm-promotion", "p"),
            Obs::healthy()
                .with_new_revision()
                .with_canary_weight(50)
                .with_hook_failing("p", "no"),
            Phase::WaitingPromotion,
        ),
        (
            "Progressing -> Promoting",
            Canary::test().analysing(),
            Obs::healthy().with_new_revision().with_canary_weight(50),
            Phase::Promoting,
        ),
        (
            "WaitingPromotion -> Promoting",
            Canary::test()
                .analysing()
                .with_phase(Phase::WaitingPromotion),
            Obs::healthy().with_new_revision().with_canary_weight(50),
            Phase::Promoting,
        ),
        (
            "WaitingPromotion -> Progressing (restart)",
            Canary::test()
                .analysing()
                .with_phase(Phase::WaitingPromotion),
            Obs::healthy().with_revision("rev-3").with_canary_weight(50),
            Phase::Progressing,
        ),
        (
            "Promoting -> Finalising",
            Canary::test().analysing().with_phase(Phase::Promoting),
            Obs::healthy().with_new_revision().with_canary_weight(50),
            Phase::Finalising,
        ),
        (
            "Promoting -> Failed (primary)",
            Canary::test()
                .analysing()
                .with_phase(Phase::Promoting)
                .with_primary_wait(0),
            unready_primary(Obs::healthy().with_new_revision()),
            Phase::Failed,
        ),
        (
            "Finalising -> Failed (primary)",
            Canary::test()
                .analysing()
                .with_phase(Phase::Finalising)
                .with_primary_wait(0),
            unready_primary(Obs::healthy().with_new_revision()),
            Phase::Failed,
        ),
        (
            "Finalising -> Succeeded",
            Canary::test().analysing().with_phase(Phase::Finalising),
            Obs::healthy().with_new_revision(),
            Phase::Succeeded,
        ),
        (
            "skipAnalysis: Progressing -> Succeeded",
            Canary::test().skipping_analysis().analysing(),
            Obs::healthy().with_new_revision(),
            Phase::Succeeded,
        ),
    ];
    for (name, canary, obs, to) in rows {
        let tick = canary.decide(&obs);
        assert_eq!(tick.phase(), to, "{name}: events {:?}", tick.events());
        let cond = tick.next().condition(PROMOTED_CONDITION).unwrap();
        assert_eq!(
            cond.reason,
            to.as_str(),
            "{name}: condition reason is the phase"
        );
    }
}

#[test]
fn requeue_after_is_the_interval() {
    let mut canary = Canary::test().analysing();
    canary.input.analysis.as_mut().unwrap().interval = Some("30s".into());
    let tick = canary.decide(&Obs::healthy().with_new_revision());
    assert_eq!(tick.decision.requeue_after, Duration::from_secs(30));
}

#[test]
fn decide_never_asks_for_the_same_thing_twice_and_gathers_only_what_the_spec_uses() {
    let tick = Canary::test()
        .without_metrics()
        .analysing()
        .decide(&Obs::healthy().with_new_revision().with_canary_weight(10));
    assert!(
        tick.gathered.is_empty(),
        "no metrics, no hooks configured: nothing to gather"
    );
    assert_eq!(tick.set_weights(), vec![(15, false)]);
}
