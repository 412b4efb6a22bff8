//! Readiness of a Deployment, computed from its status the way upstream's `isDeploymentReady`
//! does (flagger-behavior §2.6.1), so the actor only has to copy numbers out of the object.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::observations::Readiness;
use crate::status::Timestamp;

/// The parts of a Deployment (and its autoscaler) that readiness depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeploymentView {
    pub generation: i64,
    pub observed_generation: i64,
    /// `spec.replicas` (Kubernetes defaults it to 1).
    pub replicas: i32,
    /// `status.replicas`.
    pub status_replicas: i32,
    pub updated_replicas: i32,
    pub available_replicas: i32,
    /// `Progressing` condition has reason `ProgressDeadlineExceeded`.
    pub progress_deadline_exceeded: bool,
    /// `Available` condition is `False` with reason `MinimumReplicasUnavailable`: its
    /// `lastUpdateTime`.
    pub unavailable_since: Option<Timestamp>,
    /// Desired replicas of the HPA scaling this Deployment, when one exists and is active.
    pub autoscaler_desired_replicas: Option<i32>,
}

/// Readiness of `d`. `ready_threshold` is the percentage of updated replicas that must be
/// available (`primaryReadyThreshold`/`canaryReadyThreshold`); `progress_deadline` is the Canary's.
pub fn deployment_readiness(
    name: &str,
    d: &DeploymentView,
    ready_threshold: u8,
    progress_deadline: Duration,
    now: Timestamp,
) -> Readiness {
    if d.generation > d.observed_generation {
        return Readiness::NotReady(
            "waiting for rollout to finish: observed deployment generation less than desired generation"
                .to_owned(),
        );
    }
    let stuck = d
        .unavailable_since
        .is_some_and(|since| since.plus(progress_deadline) < now);
    let wrap = |msg: String| {
        if stuck {
            Readiness::Failed(msg)
        } else {
            Readiness::NotReady(msg)
        }
    };
    if d.progress_deadline_exceeded {
        return Readiness::Failed(format!(
            "deployment {name:?} exceeded its progress deadline"
        ));
    }
    if d.updated_replicas < d.replicas {
        return wrap(format!(
            "waiting for rollout to finish: {} out of {} new replicas have been updated",
            d.updated_replicas, d.replicas
        ));
    }
    if d.status_replicas > d.updated_replicas {
        return wrap(format!(
            "waiting for rollout to finish: {} old replicas are pending termination",
            d.status_replicas - d.updated_replicas
        ));
    }
    let needed = (i64::from(d.updated_replicas) * i64::from(ready_threshold)) / 100;
    if i64::from(d.available_replicas) < needed {
        return wrap(format!(
            "waiting for rollout to finish: {} of {} (readyThreshold {}%) updated replicas are available",
            d.available_replicas, d.updated_replicas, ready_threshold
        ));
    }
    if let Some(desired) = d.autoscaler_desired_replicas
        && d.replicas > 0
        && desired != d.replicas
    {
        return wrap(format!(
            "waiting for the autoscaler to finish scaling: {} desired, {} current replicas",
            desired, d.replicas
        ));
    }
    Readiness::Ready
}

/// Readiness of the canary (the target Deployment) wherever it is checked: during analysis and
/// before routes are given back to it on deletion. Unlike [`deployment_readiness`] (upstream's
/// rule, under which a Deployment scaled to zero is trivially ready), a target that wants zero
/// replicas is not ready: it has nothing to serve traffic with. This also keeps a stale view of
/// the target (a cache that has not yet seen its scale-up) from passing for a healthy canary.
pub fn canary_readiness(
    name: &str,
    d: &DeploymentView,
    ready_threshold: u8,
    progress_deadline: Duration,
    now: Timestamp,
) -> Readiness {
    match deployment_readiness(name, d, ready_threshold, progress_deadline, now) {
        Readiness::Ready if d.replicas <= 0 => Readiness::NotReady(
            "waiting for rollout to finish: the deployment is scaled to zero".to_owned(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn healthy() -> DeploymentView {
        DeploymentView {
            generation: 2,
            observed_generation: 2,
            replicas: 2,
            status_replicas: 2,
            updated_replicas: 2,
            available_replicas: 2,
            ..Default::default()
        }
    }

    fn check(d: &DeploymentView) -> Readiness {
        deployment_readiness(
            "podinfo",
            d,
            100,
            Duration::from_secs(60),
            Timestamp(1_000_000),
        )
    }

    #[test]
    fn rules_in_upstream_order() {
        assert_eq!(check(&healthy()), Readiness::Ready);
        let cases: Vec<(DeploymentView, &str)> = vec![
            (
                DeploymentView {
                    generation: 3,
                    ..healthy()
                },
                "observed deployment generation less than desired generation",
            ),
            (
                DeploymentView {
                    updated_replicas: 1,
                    ..healthy()
                },
                "1 out of 2 new replicas have been updated",
            ),
            (
                DeploymentView {
                    status_replicas: 3,
                    ..healthy()
                },
                "1 old replicas are pending termination",
            ),
            (
                DeploymentView {
                    available_replicas: 0,
                    ..healthy()
                },
                "0 of 2 (readyThreshold 100%) updated replicas are available",
            ),
            (
                DeploymentView {
                    autoscaler_desired_replicas: Some(4),
                    ..healthy()
                },
                "waiting for the autoscaler to finish scaling: 4 desired, 2 current replicas",
            ),
        ];
        for (d, text) in cases {
            match check(&d) {
                Readiness::NotReady(m) => assert!(m.contains(text), "{m}"),
                other => panic!("expected not ready with {text}, got {other:?}"),
            }
        }
    }

    #[test]
    fn ready_threshold_is_a_floor_percentage() {
        let d = DeploymentView {
            replicas: 3,
            status_replicas: 3,
            updated_replicas: 3,
            available_replicas: 1,
            ..healthy()
        };
        let at = |t| deployment_readiness("p", &d, t, Duration::from_secs(60), Timestamp(0));
        assert_eq!(at(66), Readiness::Ready, "floor(3 * 0.66) = 1");
        assert!(
            matches!(at(67), Readiness::NotReady(_)),
            "floor(3 * 0.67) = 2"
        );
    }

    #[test]
    fn kubernetes_deadline_and_long_unavailability_are_not_retriable() {
        let d = DeploymentView {
            progress_deadline_exceeded: true,
            ..healthy()
        };
        assert_eq!(
            check(&d),
            Readiness::Failed("deployment \"podinfo\" exceeded its progress deadline".into())
        );
        let stuck = DeploymentView {
            available_replicas: 0,
            unavailable_since: Some(Timestamp(0)),
            ..healthy()
        };
        assert!(matches!(check(&stuck), Readiness::Failed(_)));
        let recent = DeploymentView {
            available_replicas: 0,
            unavailable_since: Some(Timestamp(999_000)),
            ..healthy()
        };
        assert!(matches!(check(&recent), Readiness::NotReady(_)));
    }

    #[test]
    fn a_scaled_to_zero_deployment_is_ready() {
        let d = DeploymentView {
            replicas: 0,
            status_replicas: 0,
            updated_replicas: 0,
            available_replicas: 0,
            ..healthy()
        };
        assert_eq!(check(&d), Readiness::Ready);
    }

    #[test]
    fn a_scaled_to_zero_canary_is_not_ready() {
        let zero = DeploymentView {
            replicas: 0,
            status_replicas: 0,
            updated_replicas: 0,
            available_replicas: 0,
            ..healthy()
        };
        let canary = |d: &DeploymentView| {
            canary_readiness("podinfo", d, 100, Duration::from_secs(60), Timestamp(0))
        };
        assert_eq!(
            canary(&zero),
            Readiness::NotReady(
                "waiting for rollout to finish: the deployment is scaled to zero".into()
            )
        );
        assert_eq!(canary(&healthy()), Readiness::Ready);
        let unavailable = DeploymentView {
            available_replicas: 0,
            ..healthy()
        };
        assert_eq!(canary(&unavailable), check(&unavailable));
    }
}
