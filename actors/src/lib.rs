//! Actors.
#![forbid(unsafe_code)]
pub mod telemetry;
