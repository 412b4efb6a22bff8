//! WorkloadActor: the `<t>-primary` Deployment, its HPA, the `-primary` copies of tracked
//! ConfigMaps/Secrets, scaling of the target, and what a tick observes about both Deployments.
//!
//! Contract (flagger-behavior §2.4, §2.6, §2.9, §3.2, §3.5, §3.7):
//! - every handler is idempotent and writes nothing when the cluster already matches (compare
//!   before write; reads come from the reflector stores given at construction when present);
//! - handlers run concurrently across canaries (`ResponseFuture`), at most
//!   [`WorkloadConfig::max_concurrency`] at a time, every API request under a timeout;
//! - the object builders ([`build`]) are pure functions of the target and the spec, tested
//!   without a cluster.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use flagger_rollout::Observed;
use flagger_rollout::{PrimaryObservation, TargetObservation, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::runtime::reflector::Store;
use tokio::sync::Semaphore;

pub use crate::kubeops::{CanaryRef, SelectorLabel};
use crate::kubeops::{DEFAULT_API_TIMEOUT, KubeOpError};

// ------------------------------------------------------------------------------------------------
// Messages
// ------------------------------------------------------------------------------------------------

/// `Action::EnsurePrimary`: create `<t>-primary` from the target if missing, with the `-primary`
/// copies of the tracked ConfigMaps/Secrets and, when `autoscalerRef` is set, the `-primary` HPA.
/// Never modifies an existing primary Deployment or HPA (promotion does that).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), WorkloadError>")]
pub struct EnsurePrimary {
    pub canary: Arc<CanaryRef>,
}

/// Create or update the `-primary` copies of the ConfigMaps/Secrets the target references.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), WorkloadError>")]
pub struct SyncConfigs {
    pub canary: Arc<CanaryRef>,
}

/// `Action::PromoteToPrimary`: copy the tracked configs, then the target's template to the
/// primary (new `flagger-id`), then reconcile the primary HPA fully.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), WorkloadError>")]
pub struct PromoteToPrimary {
    pub canary: Arc<CanaryRef>,
}

/// `Action::ScaleCanary`: scale the target Deployment (merge patch of `spec.replicas`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), WorkloadError>")]
pub struct Scale {
    pub canary: Arc<CanaryRef>,
    pub to: flagger_rollout::Scale,
}

/// `Action::RevertTarget` (revertOnDeletion): give the target the primary's replicas (1 when the
/// primary has none set), or the scale-from-zero replicas when the primary is gone.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), WorkloadError>")]
pub struct RevertTarget {
    pub canary: Arc<CanaryRef>,
}

/// Gather what a tick needs about the target and the primary: revision (pod template + tracked
/// config checksums), tracked configs and readiness of both. Reads the stores; no GET when they
/// are given.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<WorkloadObservation, WorkloadError>")]
pub struct Observe {
    pub canary: Arc<CanaryRef>,
    /// Clock of the tick (readiness deadlines).
    pub now: Timestamp,
}

/// Reply of [`Observe`].
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadObservation {
    pub target: Observed<TargetObservation>,
    pub primary: Observed<PrimaryObservation>,
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(transparent)]
    Kube(#[from] KubeOpError),
    /// The target Deployment does not exist.
    #[error("deployment {name}.{namespace} not found")]
    TargetNotFound { namespace: String, name: String },
    /// The primary Deployment does not exist (promotion before initialization).
    #[error("deployment {name}.{namespace} not found")]
    PrimaryNotFound { namespace: String, name: String },
    /// The HPA named by `autoscalerRef` does not exist.
    #[error("HorizontalPodAutoscaler {name}.{namespace} not found")]
    AutoscalerNotFound { namespace: String, name: String },
    /// A mandatory (non-optional) ConfigMap/Secret reference points at nothing.
    #[error("{kind} {name}.{namespace} referenced by deployment {target}.{namespace} not found")]
    ConfigNotFound {
        kind: &'static str,
        namespace: String,
        name: String,
        target: String,
    },
    /// The target object cannot be used (no pod template, ...); names the field.
    #[error("deployment {name}.{namespace} is invalid: {problem}")]
    InvalidTarget {
        namespace: String,
        name: String,
        problem: String,
    },
    #[error("the workload actor is not available: {0}")]
    Unavailable(String),
}

impl WorkloadError {
    /// Low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            WorkloadError::Kube(e) => e.metric_label(),
            WorkloadError::TargetNotFound { .. } => "target_not_found",
            WorkloadError::PrimaryNotFound { .. } => "primary_not_found",
            WorkloadError::AutoscalerNotFound { .. } => "autoscaler_not_found",
            WorkloadError::ConfigNotFound { .. } => "config_not_found",
            WorkloadError::InvalidTarget { .. } => "invalid_target",
            WorkloadError::Unavailable(_) => "unavailable",
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Actor
// ------------------------------------------------------------------------------------------------

/// Operator-wide settings of the WorkloadActor.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// `--include-label-prefix`: target labels (and, on promotion, annotations) copied to the
    /// primary; `*` = all; empty = none.
    pub include_label_prefixes: Vec<String>,
    /// `--enable-config-tracking`.
    pub config_tracking: bool,
    /// Timeout of every API request.
    pub api_timeout: Duration,
    /// Handlers running at once, across all canaries.
    pub max_concurrency: usize,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            include_label_prefixes: Vec::new(),
            config_tracking: true,
            api_timeout: DEFAULT_API_TIMEOUT,
            max_concurrency: 16,
        }
    }
}

/// Reflector stores the actor reads before (or instead of) a GET. Any may be absent: it then
/// reads from the API server.
#[derive(Clone, Default)]
pub struct WorkloadStores {
    pub deployments: Option<Store<Deployment>>,
    pub config_maps: Option<Store<ConfigMap>>,
    pub secrets: Option<Store<Secret>>,
    pub hpas: Option<Store<HorizontalPodAutoscaler>>,
}

/// The I/O side, shared by every handler future.
#[derive(Clone)]
struct Workloads {
    client: Client,
    config: WorkloadConfig,
    stores: WorkloadStores,
}

pub struct WorkloadActor {
    workloads: Workloads,
    permits: Arc<Semaphore>,
}

impl WorkloadActor {
    pub fn new(client: Client, config: WorkloadConfig, stores: WorkloadStores) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrency.max(1)));
        Self {
            workloads: Workloads {
                client,
                config,
                stores,
            },
            permits,
        }
    }

    fn run<T, F, Fut>(&self, f: F) -> ResponseFuture<Result<T, WorkloadError>>
    where
        T: 'static,
        F: FnOnce(Workloads) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<T, WorkloadError>> + 'static,
    {
        let workloads = self.workloads.clone();
        let permits = self.permits.clone();
        Box::pin(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|e| WorkloadError::Unavailable(e.to_string()))?;
            f(workloads).await
        })
    }
}

impl Actor for WorkloadActor {
    type Context = Context<Self>;
}

impl Handler<EnsurePrimary> for WorkloadActor {
    type Result = ResponseFuture<Result<(), WorkloadError>>;
    fn handle(&mut self, msg: EnsurePrimary, _: &mut Self::Context) -> Self::Result {
        self.run(move |w| async move { w.ensure_primary(&msg.canary).await })
    }
}

impl Handler<SyncConfigs> for WorkloadActor {
    type Result = ResponseFuture<Result<(), WorkloadError>>;
    fn handle(&mut self, msg: SyncConfigs, _: &mut Self::Context) -> Self::Result {
        self.run(move |w| async move { w.sync_configs(&msg.canary).await.map(|_| ()) })
    }
}

impl Handler<PromoteToPrimary> for WorkloadActor {
    type Result = ResponseFuture<Result<(), WorkloadError>>;
    fn handle(&mut self, msg: PromoteToPrimary, _: &mut Self::Context) -> Self::Result {
        self.run(move |w| async move { w.promote(&msg.canary).await })
    }
}

impl Handler<Scale> for WorkloadActor {
    type Result = ResponseFuture<Result<(), WorkloadError>>;
    fn handle(&mut self, msg: Scale, _: &mut Self::Context) -> Self::Result {
        self.run(move |w| async move { w.scale(&msg.canary, msg.to).await })
    }
}

impl Handler<RevertTarget> for WorkloadActor {
    type Result = ResponseFuture<Result<(), WorkloadError>>;
    fn handle(&mut self, msg: RevertTarget, _: &mut Self::Context) -> Self::Result {
        self.run(move |w| async move { w.revert_target(&msg.canary).await })
    }
}

impl Handler<Observe> for WorkloadActor {
    type Result = ResponseFuture<Result<WorkloadObservation, WorkloadError>>;
    fn handle(&mut self, msg: Observe, _: &mut Self::Context) -> Self::Result {
        self.run(move |w| async move { w.observe(&msg.canary, msg.now).await })
    }
}

impl Workloads {
    async fn ensure_primary(&self, _canary: &CanaryRef) -> Result<(), WorkloadError> {
        let _ = (&self.client, &self.config, &self.stores);
        Err(WorkloadError::Unavailable(
            "EnsurePrimary is not implemented yet".into(),
        ))
    }

    async fn sync_configs(&self, _canary: &CanaryRef) -> Result<bool, WorkloadError> {
        Err(WorkloadError::Unavailable(
            "SyncConfigs is not implemented yet".into(),
        ))
    }

    async fn promote(&self, _canary: &CanaryRef) -> Result<(), WorkloadError> {
        Err(WorkloadError::Unavailable(
            "PromoteToPrimary is not implemented yet".into(),
        ))
    }

    async fn scale(
        &self,
        _canary: &CanaryRef,
        _to: flagger_rollout::Scale,
    ) -> Result<(), WorkloadError> {
        Err(WorkloadError::Unavailable(
            "Scale is not implemented yet".into(),
        ))
    }

    async fn revert_target(&self, _canary: &CanaryRef) -> Result<(), WorkloadError> {
        Err(WorkloadError::Unavailable(
            "RevertTarget is not implemented yet".into(),
        ))
    }

    async fn observe(
        &self,
        _canary: &CanaryRef,
        _now: Timestamp,
    ) -> Result<WorkloadObservation, WorkloadError> {
        Err(WorkloadError::Unavailable(
            "Observe is not implemented yet".into(),
        ))
    }
}
