//! Actors.
#![forbid(unsafe_code)]
pub mod telemetry;
pub mod events;
