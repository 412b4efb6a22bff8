//! Properties: weights always add up to 100 and never exceed maxWeight on the way up; the status
//! never moves backwards within a revision; decide never panics, whatever it observes.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::action::Action;
use crate::observations::{
    HookResult, MetricOutcome, MetricValue, Observed, PrimaryObservation, ProviderCheck, Readiness,
    Routes, TargetObservation,
};
use crate::phase::Phase;
use crate::spec::Strategy as RolloutStrategy;
use crate::status::{CanaryStatus, ProgressWaits, Timestamp, Wait};
use crate::testing::{Canary, NEW, Obs, World, run_tick};
use crate::weights::Weights;

fn canaries() -> Vec<Canary> {
    let all_hooks = Canary::test()
        .with_hook("confirm-rollout", "cr")
        .with_hook("pre-rollout", "pre")
        .with_hook("rollout", "load")
        .with_hook("confirm-traffic-increase", "cti")
        .with_hook("confirm-promotion", "cp")
        .with_hook("rollback", "rb")
        .with_hook("post-rollout", "post");
    let mut explicit = Canary::test();
    {
        let a = explicit.input.analysis.as_mut().unwrap();
        a.step_weight = None;
        a.max_weight = None;
        a.step_weights = Some(vec![1, 2, 10, 30]);
    }
    vec![
        Canary::test(),
        Canary::test().with_steps(20, 50),
        all_hooks,
        Canary::test().with_iterations(3),
        Canary::test().with_iterations(2).with_ab_match(),
        Canary::test().with_iterations(2).with_mirror(),
        Canary::test().with_mirror(),
        Canary::test().with_step_weight_promotion(15),
        Canary::test().skipping_analysis(),
        Canary::test().on_kubernetes_provider(),
        Canary::test().with_custom_metric("errors", 1.0),
        Canary::test().suspended(),
        explicit,
    ]
}

fn revision() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("rev-1".to_owned()),
        Just("rev-2".to_owned()),
        Just("rev-3".to_owned())
    ]
}

fn readiness() -> impl Strategy<Value = Readiness> {
    prop_oneof![
        3 => Just(Readiness::Ready),
        1 => ".{0,20}".prop_map(Readiness::NotReady),
        1 => ".{0,20}".prop_map(Readiness::Failed),
    ]
}

fn observed<T: std::fmt::Debug + Clone>(
    inner: impl Strategy<Value = T>,
) -> impl Strategy<Value = Observed<T>> {
    prop_oneof![
        4 => inner.prop_map(Observed::Found),
        1 => Just(Observed::Missing),
        1 => ".{0,10}".prop_map(Observed::Error),
    ]
}

fn metric_value() -> impl Strategy<Value = MetricValue> {
    prop_oneof![
        any::<f64>().prop_map(MetricValue::Value),
        (0.0..2000.0f64).prop_map(MetricValue::Value),
        Just(MetricValue::Value(f64::NAN)),
        Just(MetricValue::Value(f64::INFINITY)),
        proptest::option::of(".{0,10}").prop_map(MetricValue::NoData),
        ".{0,10}".prop_map(MetricValue::Failed),
    ]
}

fn phase() -> impl Strategy<Value = Phase> {
    proptest::sample::select(Phase::ALL.to_vec())
}

fn wait() -> impl Strategy<Value = Option<Wait>> {
    proptest::option::of(
        (0i64..1_000_000_000, 0i64..1_000_000).prop_map(|(since, len)| Wait {
            since: Timestamp(since),
            deadline: Timestamp(since + len),
        }),
    )
}

prop_compose! {
    fn status()(
        phase in phase(),
        canary_weight in 0u8..=100,
        failed_checks in 0u32..12,
        iterations in 0u32..14,
        last_applied_spec in revision(),
        last_promoted_spec in revision(),
        primary in wait(),
        canary in wait(),
    ) -> CanaryStatus {
        CanaryStatus {
            phase, canary_weight, failed_checks, iterations, last_applied_spec, last_promoted_spec,
            progress_waits: ProgressWaits { primary, canary },
            ..Default::default()
        }
    }
}

prop_compose! {
    fn obs()(
        now in 0i64..2_000_000_000,
        target in observed((revision(), readiness()).prop_map(|(revision, readiness)| TargetObservation {
            revision, tracked_configs: BTreeMap::new(), readiness,
        })),
        primary in observed(readiness().prop_map(|readiness| PrimaryObservation {
            readiness,
            revision: None,
        })),
        routes in observed((0u8..=100, any::<bool>()).prop_map(|(w, mirrored)| Routes {
            weights: Weights::with_canary(w), mirrored,
        })),
        success in metric_value(),
        duration in metric_value(),
        errors in metric_value(),
        failing_hooks in proptest::collection::btree_set(
            proptest::sample::select(vec!["cr", "pre", "load", "cti", "cp", "rb", "post"]), 0..7),
        providers_up in any::<bool>(),
    ) -> Obs {
        let mut o = Obs::healthy().at(now);
        o.base.target = target;
        o.base.primary = primary;
        o.base.routes = routes;
        o.metrics = vec![
            MetricOutcome { name: "request-success-rate".into(), value: success },
            MetricOutcome { name: "request-duration".into(), value: duration },
            MetricOutcome { name: "errors".into(), value: errors },
        ];
        o.hook_answers = failing_hooks
            .into_iter()
            .map(|h| (h.to_owned(), HookResult::Failed("no".into())))
            .collect();
        o.providers = if providers_up { ProviderCheck::Available } else { ProviderCheck::Unavailable("down".into()) };
        o
    }
}

/// Weight changes that go up never pass maxWeight; only a failed promotion puts 100 on the canary.
fn check_weights(canary: &Canary, observed: &Obs, next_phase: Phase, actions: &[Action]) {
    let spec = canary.spec();
    let current = match &observed.base.routes {
        Observed::Found(r) => r.weights.canary(),
        _ => 0,
    };
    for a in actions {
        if let Action::SetWeights { weights, .. } = a {
            assert_eq!(
                u16::from(weights.primary()) + u16::from(weights.canary()),
                100
            );
            if let RolloutStrategy::Canary(steps) = &spec.analysis.strategy {
                let failed_promotion =
                    *weights == Weights::ALL_CANARY && next_phase == Phase::Failed;
                assert!(
                    weights.canary() <= steps.max_weight()
                        || weights.canary() < current
                        || failed_promotion,
                    "canary weight {} above max {}",
                    weights.canary(),
                    steps.max_weight()
                );
            }
        }
    }
    let writes: Vec<usize> = actions
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, Action::WriteStatus(_)))
        .map(|(i, _)| i)
        .collect();
    assert!(writes.len() <= 1, "status written more than once");
    if let Some(&i) = writes.first() {
        assert_eq!(i, actions.len() - 1, "status written last");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decide_never_panics_and_keeps_weights_valid(
        which in 0usize..13,
        status in status(),
        obs in obs(),
    ) {
        let canary = Canary { status, ..canaries()[which].clone() };
        let tick = run_tick(&canary.spec(), &canary.status, &obs);
        check_weights(&canary, &obs, tick.phase(), &tick.decision.actions);
        prop_assert!(!tick.decision.requeue_after.is_zero());
    }

    #[test]
    fn status_never_moves_backwards_within_a_revision(
        which in 0usize..13,
        target_delay in proptest::option::of(0u32..4),
        primary_delay in proptest::option::of(0u32..4),
        script in proptest::collection::vec((metric_value(), any::<bool>(), any::<bool>()), 30),
    ) {
        let canary = canaries()[which].clone();
        let mut world = World::new(canary.clone());
        world.target_ready_after = target_delay;
        world.primary_ready_after = primary_delay;
        world.set_image(NEW);
        let mut prev = world.status.clone();
        for (value, gate_open, rollback_quiet) in script {
            world.metrics[0].value = value;
            world.hook_answers.clear();
            if !gate_open {
                for h in ["cr", "cti", "cp", "pre", "load"] {
                    world.hook_answers.insert(h.into(), HookResult::Failed("closed".into()));
                }
            }
            if rollback_quiet {
                world.hook_answers.insert("rb".into(), HookResult::Failed("quiet".into()));
            }
            let observed = world.observe();
            let tick = world.tick();
            check_weights(&canary, &observed, world.phase(), &tick.decision.actions);
            let next = world.status.clone();
            prop_assert!(
                next.phase.run_rank() >= prev.phase.run_rank(),
                "phase went back from {} to {}", prev.phase, next.phase
            );
            let terminal = matches!(next.phase, Phase::Succeeded | Phase::Failed);
            if !terminal && prev.phase.is_active() && next.phase.is_active() {
                prop_assert!(next.failed_checks >= prev.failed_checks);
                prop_assert!(next.iterations >= prev.iterations);
            }
            if prev.last_applied_spec == NEW {
                prop_assert_eq!(&next.last_applied_spec, NEW);
            }
            prev = next;
        }
    }

    #[test]
    fn weights_always_sum_to_100_and_steps_stay_below_max(
        step in 1u8..=100,
        max in 1u8..=100,
        current in 0u8..=100,
        promo in 1u8..=100,
    ) {
        let step = step.min(max);
        let steps = crate::weights::WeightSteps::Linear { step, max };
        let next = steps.next_weight(current);
        prop_assert!(next <= max);
        if current < max {
            prop_assert!(next > current);
        }
        let w = Weights::with_canary(next);
        prop_assert_eq!(u16::from(w.primary()) + u16::from(w.canary()), 100);
        let back = w.toward_primary(promo);
        prop_assert!(back.canary() <= w.canary());
        prop_assert_eq!(u16::from(back.primary()) + u16::from(back.canary()), 100);
    }

    #[test]
    fn weights_from_the_mesh_are_checked(primary in -200i64..300, canary in -200i64..300) {
        match Weights::new(primary, canary) {
            Ok(w) => {
                prop_assert_eq!(i64::from(w.primary()), primary);
                prop_assert_eq!(i64::from(w.canary()), canary);
            }
            Err(_) => prop_assert!(primary + canary != 100 || !(0..=100).contains(&canary)),
        }
    }
}
