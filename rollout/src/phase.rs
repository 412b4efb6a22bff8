//! The rollout state machine position (`status.phase`), with upstream's names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `status.phase`. An empty phase (a brand-new Canary) reads as [`Phase::Initializing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Phase {
    /// Primary, services and routes being created.
    #[default]
    Initializing,
    /// Bootstrap done; target at 0 replicas; all traffic on the primary.
    Initialized,
    /// New revision detected, a `confirm-rollout` hook is refusing; target not scaled up yet.
    Waiting,
    /// Analysis running.
    Progressing,
    /// Max weight/iterations reached, a `confirm-promotion` hook is refusing; analysis continues.
    WaitingPromotion,
    /// Target template copied to the primary; waiting for its rollout, then moving traffic back.
    Promoting,
    /// All traffic on the primary; the next tick scales the target to 0.
    Finalising,
    /// Promotion done.
    Succeeded,
    /// Rolled back (target at 0, traffic on the primary), or promotion failed (traffic on the canary).
    Failed,
    /// Being finalised on deletion (`revertOnDeletion`).
    Terminating,
    /// Declared by upstream but never written.
    Terminated,
}

impl Phase {
    pub const ALL: [Phase; 11] = [
        Phase::Initializing,
        Phase::Initialized,
        Phase::Waiting,
        Phase::Progressing,
        Phase::WaitingPromotion,
        Phase::Promoting,
        Phase::Finalising,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Terminating,
        Phase::Terminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initializing => "Initializing",
            Phase::Initialized => "Initialized",
            Phase::Waiting => "Waiting",
            Phase::Progressing => "Progressing",
            Phase::WaitingPromotion => "WaitingPromotion",
            Phase::Promoting => "Promoting",
            Phase::Finalising => "Finalising",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
            Phase::Terminated => "Terminated",
        }
    }

    /// A run is in flight: upstream's `shouldAdvance` phases.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Phase::Progressing
                | Phase::Waiting
                | Phase::WaitingPromotion
                | Phase::Promoting
                | Phase::Finalising
        )
    }

    /// A run has started (target scaled up) and has not ended: it holds one of the
    /// `--max-concurrent-canaries` slots. `Waiting` does not (the target is not scaled up yet).
    pub fn holds_rollout_slot(self) -> bool {
        matches!(
            self,
            Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
        )
    }

    /// The analysis (hooks, metrics, failed checks) is running.
    pub fn is_analysing(self) -> bool {
        matches!(self, Phase::Progressing | Phase::WaitingPromotion)
    }

    /// `flagger_canary_status`: 0 running, 2 failed, 1 anything else (as upstream).
    pub fn status_metric(self) -> i64 {
        match self {
            Phase::Progressing => 0,
            Phase::Failed => 2,
            _ => 1,
        }
    }

    /// Position within one revision's run, for "never moves backwards" checks: a run goes
    /// Waiting → Progressing → WaitingPromotion → Promoting → Finalising → Succeeded/Failed.
    pub fn run_rank(self) -> u8 {
        match self {
            Phase::Initializing => 0,
            Phase::Initialized => 1,
            Phase::Waiting => 2,
            Phase::Progressing => 3,
            Phase::WaitingPromotion => 4,
            Phase::Promoting => 5,
            Phase::Finalising => 6,
            Phase::Succeeded | Phase::Failed => 7,
            Phase::Terminating => 8,
            Phase::Terminated => 9,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `status.phase` string that is not one of upstream's phases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown canary phase {0:?}")]
pub struct UnknownPhase(pub String);

impl FromStr for Phase {
    type Err = UnknownPhase;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(Phase::Initializing);
        }
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPhase(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_round_trip_and_empty_is_initializing() {
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>().unwrap(), p);
        }
        assert_eq!("".parse::<Phase>().unwrap(), Phase::Initializing);
        assert!(
            "Finalizing".parse::<Phase>().is_err(),
            "upstream spells it Finalising"
        );
    }

    #[test]
    fn status_metric_as_upstream() {
        assert_eq!(Phase::Progressing.status_metric(), 0);
        assert_eq!(Phase::Failed.status_metric(), 2);
        assert_eq!(Phase::Promoting.status_metric(), 1);
        assert_eq!(Phase::Succeeded.status_metric(), 1);
    }
}
