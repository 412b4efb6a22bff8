//! CanaryActor: one per Canary.
pub mod gather;
