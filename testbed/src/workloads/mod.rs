//! Workload controllers (owner: testbed-workloads helper): Deployments -> ReplicaSets/Pods/status,
//! HPAs. Entry point used by `Testbed::start`:
//!
//! ```ignore
//! pub struct WorkloadConfig { pub ready_delay: std::time::Duration }
//! /// Runs until `shutdown` is cancelled.
//! pub async fn run(store: crate::store::Store, cfg: WorkloadConfig, shutdown: tokio_util::sync::CancellationToken);
//! ```
