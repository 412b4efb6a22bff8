//! Traffic weights and how they step.
//!
//! Invariant: `primary + canary == 100`, always — [`Weights`] stores only the canary side, so an
//! inconsistent pair cannot be represented. [`WeightSteps`] never proposes a canary weight above
//! its own maximum (upstream Flagger can overshoot `maxWeight`, e.g. 20, 40, 60 with max 50; we
//! clamp to 50 instead).

use serde::{Deserialize, Serialize};

/// Total weight of a route, as upstream (`totalWeight` is hard-coded 100).
pub const TOTAL_WEIGHT: u8 = 100;

/// A traffic split between the primary and the canary. `primary() + canary() == 100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Weights {
    canary: u8,
}

/// A pair of weights that does not add up to 100, or a weight above 100.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("weights must add up to 100 (primary {primary}, canary {canary})")]
pub struct WeightsError {
    pub primary: i64,
    pub canary: i64,
}

impl Weights {
    /// All traffic on the primary (100/0): the resting state.
    pub const ALL_PRIMARY: Weights = Weights { canary: 0 };
    /// All traffic on the canary (0/100): Blue/Green switch-over, failed promotion.
    pub const ALL_CANARY: Weights = Weights {
        canary: TOTAL_WEIGHT,
    };

    /// Builds weights from what a mesh object says; rejects pairs that do not add up to 100.
    pub fn new(primary: i64, canary: i64) -> Result<Self, WeightsError> {
        match u8::try_from(canary) {
            Ok(c) if c <= TOTAL_WEIGHT && primary + canary == i64::from(TOTAL_WEIGHT) => {
                Ok(Self { canary: c })
            }
            _ => Err(WeightsError { primary, canary }),
        }
    }

    /// Weights with the given canary share (clamped to 100); the primary gets the rest.
    pub fn with_canary(canary: u8) -> Self {
        Self {
            canary: canary.min(TOTAL_WEIGHT),
        }
    }

    pub fn canary(self) -> u8 {
        self.canary
    }

    pub fn primary(self) -> u8 {
        TOTAL_WEIGHT - self.canary
    }

    /// One promotion step (`stepWeightPromotion`): `step` points move from the canary back to the
    /// primary, never below 0.
    pub fn toward_primary(self, step: u8) -> Self {
        Self {
            canary: self.canary.saturating_sub(step),
        }
    }
}

impl std::fmt::Display for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "primary {} canary {}", self.primary(), self.canary())
    }
}

/// How the canary weight grows during a progressive (canary-strategy) analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightSteps {
    /// `stepWeight` + `maxWeight`: 0 → step → 2·step … up to `max` (the last step is clamped to `max`).
    /// Invariant (checked by the spec constructor): `1 <= step <= max <= 100`.
    Linear { step: u8, max: u8 },
    /// `stepWeights`: explicit, strictly ascending, each within 1–100; the maximum is the last one.
    Explicit(Vec<u8>),
}

impl WeightSteps {
    /// The canary weight at which the analysis stops increasing traffic and promotes.
    pub fn max_weight(&self) -> u8 {
        match self {
            WeightSteps::Linear { max, .. } => (*max).min(TOTAL_WEIGHT),
            WeightSteps::Explicit(steps) => steps.last().copied().unwrap_or(TOTAL_WEIGHT),
        }
    }

    /// The canary weight after one advance from `current`, never above [`Self::max_weight`].
    /// With explicit steps this is the first step above `current` (so a hand-edited weight between
    /// two steps continues at the next one).
    pub fn next_weight(&self, current: u8) -> u8 {
        let max = self.max_weight();
        let next = match self {
            WeightSteps::Linear { step, .. } => current.saturating_add((*step).max(1)),
            WeightSteps::Explicit(steps) => {
                steps.iter().copied().find(|&w| w > current).unwrap_or(max)
            }
        };
        next.min(max).max(current.min(max))
    }

    /// The comma list upstream shows in the `Traffic routing` alert field and the printer column.
    pub fn describe(&self) -> String {
        match self {
            WeightSteps::Linear { step, max } => format!("Weight step: {step} max: {max}"),
            WeightSteps::Explicit(steps) => {
                let list: Vec<String> = steps.iter().map(u8::to_string).collect();
                format!(
                    "Weight steps: {} max: {}",
                    list.join(","),
                    self.max_weight()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn weights_always_add_up_to_100() {
        assert!(Weights::new(90, 10).is_ok());
        assert!(Weights::new(100, 0).is_ok());
        assert_eq!(
            Weights::new(90, 20),
            Err(WeightsError {
                primary: 90,
                canary: 20
            })
        );
        assert!(Weights::new(110, -10).is_err());
        assert!(Weights::new(-1, 101).is_err());
        let w = Weights::with_canary(250);
        assert_eq!((w.primary(), w.canary()), (0, 100));
    }

    #[test]
    fn linear_steps_reach_max_exactly_and_never_pass_it() {
        let steps = WeightSteps::Linear { step: 5, max: 50 };
        let mut w = 0;
        let mut seen = vec![];
        while w < steps.max_weight() {
            w = steps.next_weight(w);
            seen.push(w);
        }
        assert_eq!(seen, vec![5, 10, 15, 20, 25, 30, 35, 40, 45, 50]);

        let overshooting = WeightSteps::Linear { step: 20, max: 50 };
        assert_eq!(overshooting.next_weight(40), 50);
        assert_eq!(overshooting.next_weight(50), 50);
    }

    #[test]
    fn explicit_steps_follow_the_list() {
        let steps = WeightSteps::Explicit(vec![1, 2, 10, 80]);
        assert_eq!(steps.max_weight(), 80);
        assert_eq!(steps.next_weight(0), 1);
        assert_eq!(steps.next_weight(1), 2);
        assert_eq!(steps.next_weight(2), 10);
        assert_eq!(
            steps.next_weight(5),
            10,
            "between steps continue at the next one"
        );
        assert_eq!(steps.next_weight(10), 80);
        assert_eq!(steps.next_weight(80), 80);
        assert_eq!(steps.next_weight(95), 80, "never above max");
    }

    #[test]
    fn promotion_steps_move_traffic_back_to_primary() {
        let w = Weights::with_canary(50);
        assert_eq!(w.toward_primary(20).canary(), 30);
        assert_eq!(w.toward_primary(80).canary(), 0);
    }

    #[test]
    fn describe_matches_upstream_alert_field() {
        assert_eq!(
            WeightSteps::Linear { step: 10, max: 50 }.describe(),
            "Weight step: 10 max: 50"
        );
        assert_eq!(
            WeightSteps::Explicit(vec![1, 2, 10, 80]).describe(),
            "Weight steps: 1,2,10,80 max: 80"
        );
    }
}
