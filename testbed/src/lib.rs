//! flagger-testbed: a simulated Kubernetes cluster that real clients (kube-rs, kubectl, Prometheus)
//! talk to over HTTP on 127.0.0.1. It serves the Kubernetes REST API (with CRDs, watches, patches,
//! finalizers, garbage collection), moves Deployment/HPA status like controllers would, simulates
//! Istio traffic split by VirtualService weights and answers the Prometheus query API over the
//! series it records.
//!
//! It is a test and demo harness, not a product store: everything lives in memory. It depends on
//! nothing of flagger-rs (it reads the operator's CRDs as YAML, like a real cluster does).
#![forbid(unsafe_code)]

pub mod api;
pub mod faults;
mod jsonpath;
pub mod mesh;
pub mod patch;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod store;
pub mod table;
pub mod workloads;
