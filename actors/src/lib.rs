//! Actors.
#![forbid(unsafe_code)]
pub mod admin;
pub mod cache;
pub mod canary;
pub mod crd;
pub mod events;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod gate;
pub mod http;
pub mod key;
pub mod kubeops;
pub mod leader;
pub mod messages;
pub mod metrics;
pub mod notifier;
pub mod operator;
pub mod ports;
pub mod router;
pub mod secret;
pub mod slots;
pub mod status;
pub mod supervisor;
pub mod telemetry;
pub mod webhook;
pub mod workload;
