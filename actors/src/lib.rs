//! Actors.
#![forbid(unsafe_code)]
pub mod crd;
pub mod events;
pub mod telemetry;
