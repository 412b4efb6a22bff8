//! The durable status of a Canary: what the actor persists in `.status` and rebuilds from after a
//! restart. Everything a decision needs to resume is here; traffic weights are not (they are read
//! from the mesh every tick).
//!
//! Fields beyond upstream's (`progressWaits`) must be persisted by the CRD layer too, so that a
//! restarted operator keeps counting towards the same progress deadline.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::phase::Phase;
use crate::spec::TargetKind;

/// A point in time, in milliseconds since the Unix epoch. The core never reads a clock: every
/// timestamp comes from the observations.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }
}

/// The type of the one condition upstream maintains.
pub const PROMOTED_CONDITION: &str = "Promoted";
/// Extra condition (not upstream) present only while the spec is invalid; names the field.
pub const VALID_CONDITION: &str = "Valid";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        })
    }
}

/// `status.conditions[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// `Promoted` (or `Valid` while the spec is invalid).
    pub condition_type: String,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    pub last_update_time: Timestamp,
    pub last_transition_time: Timestamp,
}

/// Which workload a readiness wait is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Workload {
    Primary,
    Canary,
}

/// A readiness wait in progress: started at `since`, gives up at `deadline`
/// (`since + progressDeadlineSeconds`). Persisted so that the deadline survives restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    pub since: Timestamp,
    pub deadline: Timestamp,
}

/// Open readiness waits, one slot per workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProgressWaits {
    pub primary: Option<Wait>,
    pub canary: Option<Wait>,
}

impl ProgressWaits {
    pub fn get(&self, w: Workload) -> Option<Wait> {
        match w {
            Workload::Primary => self.primary,
            Workload::Canary => self.canary,
        }
    }

    pub fn set(&mut self, w: Workload, wait: Option<Wait>) {
        match w {
            Workload::Primary => self.primary = wait,
            Workload::Canary => self.canary = wait,
        }
    }
}

/// `Canary.status`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CanaryStatus {
    pub phase: Phase,
    /// Weight last written by flagger-rs (informational: decisions read the mesh).
    pub canary_weight: u8,
    /// Failed checks of the current run.
    pub failed_checks: u32,
    /// Completed iterations (Blue/Green, A/B).
    pub iterations: u32,
    /// Revision (template + tracked configs) of the current/last run; empty before initialization.
    pub last_applied_spec: String,
    /// Revision currently promoted to the primary; empty until initialized.
    pub last_promoted_spec: String,
    /// Set on every status write (upstream semantics: really "last update").
    pub last_transition_time: Option<Timestamp>,
    /// `configmap/<name>` / `secret/<name>` → checksum, at the last sync.
    pub tracked_configs: BTreeMap<String, String>,
    pub conditions: Vec<Condition>,
    /// Readiness waits and their deadlines (flagger-rs addition).
    pub progress_waits: ProgressWaits,
}

impl CanaryStatus {
    pub fn condition(&self, condition_type: &str) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| c.condition_type == condition_type)
    }

    /// Has this canary ever finished initialization?
    pub fn is_initialized(&self) -> bool {
        !self.last_promoted_spec.is_empty()
    }

    /// Equal except for the bookkeeping a write itself changes (`lastTransitionTime`, conditions).
    pub fn same_content(&self, other: &CanaryStatus) -> bool {
        let strip = |s: &CanaryStatus| CanaryStatus {
            last_transition_time: None,
            conditions: Vec::new(),
            ..s.clone()
        };
        strip(self) == strip(other)
    }
}

/// The `Promoted` condition upstream shows for a phase: (status, message). Reason = phase name.
pub fn promoted_condition(phase: Phase, kind: TargetKind) -> (ConditionStatus, String) {
    use ConditionStatus::{False, True, Unknown};
    match phase {
        Phase::Initialized => (True, format!("{kind} initialization completed.")),
        Phase::Waiting | Phase::WaitingPromotion => (Unknown, "Waiting for approval.".to_owned()),
        Phase::Progressing => (
            Unknown,
            "New revision detected, progressing canary analysis.".to_owned(),
        ),
        Phase::Promoting => (
            Unknown,
            "Canary analysis completed, starting primary rolling update.".to_owned(),
        ),
        Phase::Finalising => (
            Unknown,
            "Canary analysis completed, routing all traffic to primary.".to_owned(),
        ),
        Phase::Succeeded => (
            True,
            "Canary analysis completed successfully, promotion finished.".to_owned(),
        ),
        Phase::Failed => (
            False,
            format!("Canary analysis failed, {kind} scaled to zero."),
        ),
        Phase::Initializing | Phase::Terminating | Phase::Terminated => (
            Unknown,
            format!("New {kind} detected, starting initialization."),
        ),
    }
}

/// Sets (or replaces) the condition of `condition_type`. Keeps `lastTransitionTime` when the
/// status did not change; leaves the list untouched when status, reason and message are the same.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    condition_type: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    match conditions
        .iter_mut()
        .find(|c| c.condition_type == condition_type)
    {
        Some(c) if c.status == status && c.reason == reason && c.message == message => {}
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status;
            c.reason = reason.to_owned();
            c.message = message.to_owned();
            c.last_update_time = now;
        }
        None => conditions.push(Condition {
            condition_type: condition_type.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_update_time: now,
            last_transition_time: now,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn promoted_condition_per_phase_as_upstream() {
        let k = TargetKind::Deployment;
        let cases = [
            (
                Phase::Initializing,
                ConditionStatus::Unknown,
                "New Deployment detected, starting initialization.",
            ),
            (
                Phase::Initialized,
                ConditionStatus::True,
                "Deployment initialization completed.",
            ),
            (
                Phase::Waiting,
                ConditionStatus::Unknown,
                "Waiting for approval.",
            ),
            (
                Phase::WaitingPromotion,
                ConditionStatus::Unknown,
                "Waiting for approval.",
            ),
            (
                Phase::Progressing,
                ConditionStatus::Unknown,
                "New revision detected, progressing canary analysis.",
            ),
            (
                Phase::Promoting,
                ConditionStatus::Unknown,
                "Canary analysis completed, starting primary rolling update.",
            ),
            (
                Phase::Finalising,
                ConditionStatus::Unknown,
                "Canary analysis completed, routing all traffic to primary.",
            ),
            (
                Phase::Succeeded,
                ConditionStatus::True,
                "Canary analysis completed successfully, promotion finished.",
            ),
            (
                Phase::Failed,
                ConditionStatus::False,
                "Canary analysis failed, Deployment scaled to zero.",
            ),
        ];
        for (phase, status, message) in cases {
            assert_eq!(
                promoted_condition(phase, k),
                (status, message.to_owned()),
                "{phase}"
            );
        }
    }

    #[test]
    fn condition_transition_time_moves_only_when_status_changes() {
        let mut cs = Vec::new();
        set_condition(
            &mut cs,
            PROMOTED_CONDITION,
            ConditionStatus::Unknown,
            "Progressing",
            "a",
            Timestamp(1),
        );
        set_condition(
            &mut cs,
            PROMOTED_CONDITION,
            ConditionStatus::Unknown,
            "Promoting",
            "b",
            Timestamp(2),
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, Timestamp(1));
        assert_eq!(cs[0].last_update_time, Timestamp(2));
        set_condition(
            &mut cs,
            PROMOTED_CONDITION,
            ConditionStatus::True,
            "Succeeded",
            "c",
            Timestamp(3),
        );
        assert_eq!(cs[0].last_transition_time, Timestamp(3));
        assert_eq!(cs[0].reason, "Succeeded");
    }
}
