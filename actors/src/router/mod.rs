//! RouterActor: the Kubernetes Services (`<svc>`, `<svc>-primary`, `<svc>-canary`) and the mesh
//! objects that split traffic (Istio VirtualService `<svc>`, DestinationRules `<svc>-primary` and
//! `<svc>-canary`), and reading/writing the weights.
//!
//! Contract (flagger-behavior §3.3, §3.4, §3.7):
//! - `ReconcileRoutes` creates what is missing and rewrites what drifted, keeping the current
//!   weights and mirror of an existing VirtualService; a steady-state call writes nothing;
//! - `GetRoutes` reads the weights from the mesh object (reflector store when given; weights are
//!   never remembered); `SetRoutes` writes them and skips the write when they already hold;
//! - `FinalizeRoutes` (revertOnDeletion) points the apex Service back at the target and restores
//!   the VirtualService from kubectl's last-applied or `flagger.kubernetes.io/original-configuration`;
//! - handlers run concurrently across canaries, bounded by a semaphore, every request under a
//!   timeout.
//!
//! A mesh is one type implementing [`MeshRouter`] plus one variant of [`Mesh`].

pub mod istio;
pub mod kubernetes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use flagger_rollout::{MeshProvider, Routes, Weights};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use tokio::sync::Semaphore;

pub use crate::kubeops::CanaryRef;
use crate::kubeops::{DEFAULT_API_TIMEOUT, KubeOpError};

// ------------------------------------------------------------------------------------------------
// Messages
// ------------------------------------------------------------------------------------------------

/// `Action::ReconcileRoutes`: create or update the three Services and the mesh objects.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), RouterError>")]
pub struct ReconcileRoutes {
    pub canary: Arc<CanaryRef>,
}

/// Current weights and mirror of the mesh object. `Ok(None)`: the mesh object does not exist
/// yet. With the `kubernetes` provider (no traffic shifting) always all-primary.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<Routes>, RouterError>")]
pub struct GetRoutes {
    pub canary: Arc<CanaryRef>,
}

/// `Action::SetWeights`: write the weights (and mirror flag) into the mesh object.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), RouterError>")]
pub struct SetRoutes {
    pub canary: Arc<CanaryRef>,
    pub weights: Weights,
    pub mirror: bool,
}

/// `Action::RevertRoutes` (revertOnDeletion): point the apex Service back at the target and
/// restore the mesh object's original spec.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), RouterError>")]
pub struct FinalizeRoutes {
    pub canary: Arc<CanaryRef>,
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Kube(#[from] KubeOpError),
    /// The route holds no weight for either destination (upstream's text).
    #[error("VirtualService {name}.{namespace} does not contain routes for {primary} and {canary}")]
    NoRoutes {
        namespace: String,
        name: String,
        primary: String,
        canary: String,
    },
    /// The mesh object does not exist (weights cannot be set before `ReconcileRoutes`).
    #[error("{kind} {name}.{namespace} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// A mesh object exists but cannot be interpreted.
    #[error("{kind} {name}.{namespace} is invalid: {problem}")]
    Invalid {
        kind: &'static str,
        namespace: String,
        name: String,
        problem: String,
    },
    #[error("the router actor is not available: {0}")]
    Unavailable(String),
}

impl RouterError {
    /// Low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RouterError::Kube(e) => e.metric_label(),
            RouterError::NoRoutes { .. } => "no_routes",
            RouterError::NotFound { .. } => "not_found",
            RouterError::Invalid { .. } => "invalid_object",
            RouterError::Unavailable(_) => "unavailable",
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The mesh interface
// ------------------------------------------------------------------------------------------------

/// What one mesh provider does (upstream's 4-method router interface). The Services are handled
/// by [`kubernetes::ServiceRouter`] for every provider.
pub trait MeshRouter {
    fn reconcile(&self, canary: &CanaryRef) -> impl Future<Output = Result<(), RouterError>>;
    fn get_routes(
        &self,
        canary: &CanaryRef,
    ) -> impl Future<Output = Result<Option<Routes>, RouterError>>;
    fn set_routes(
        &self,
        canary: &CanaryRef,
        weights: Weights,
        mirror: bool,
    ) -> impl Future<Output = Result<(), RouterError>>;
    fn finalize(&self, canary: &CanaryRef) -> impl Future<Output = Result<(), RouterError>>;
}

/// Settings of the RouterActor.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Timeout of every API request.
    pub api_timeout: Duration,
    /// Handlers running at once, across all canaries.
    pub max_concurrency: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            api_timeout: DEFAULT_API_TIMEOUT,
            max_concurrency: 16,
        }
    }
}

/// Reflector stores the router reads before (or instead of) a GET; any may be absent.
/// VirtualServices and DestinationRules are `networking.istio.io/v1beta1` `DynamicObject`s
/// (see [`istio::virtual_service_resource`], [`istio::destination_rule_resource`]).
#[derive(Clone, Default)]
pub struct RouterStores {
    pub services: Option<Store<Service>>,
    /// Targets, read only for `service.portDiscovery`.
    pub deployments: Option<Store<Deployment>>,
    pub virtual_services: Option<Store<DynamicObject>>,
    pub destination_rules: Option<Store<DynamicObject>>,
}

/// The I/O side, shared by every handler future.
#[derive(Clone)]
struct Routers {
    services: kubernetes::ServiceRouter,
    istio: istio::IstioRouter,
}

impl Routers {
    fn mesh(&self, canary: &CanaryRef) -> Mesh<'_> {
        match canary.spec.provider {
            MeshProvider::Istio => Mesh::Istio(&self.istio),
            MeshProvider::Kubernetes => Mesh::None,
        }
    }
}

/// The mesh of one canary.
enum Mesh<'a> {
    Istio(&'a istio::IstioRouter),
    /// Provider `kubernetes`: Services only, no traffic shifting.
    None,
}

impl Mesh<'_> {
    async fn reconcile(&self, canary: &CanaryRef) -> Result<(), RouterError> {
        match self {
            Mesh::Istio(r) => r.reconcile(canary).await,
            Mesh::None => Ok(()),
        }
    }
    async fn get_routes(&self, canary: &CanaryRef) -> Result<Option<Routes>, RouterError> {
        match self {
            Mesh::Istio(r) => r.get_routes(canary).await,
            Mesh::None => Ok(Some(Routes {
                weights: Weights::ALL_PRIMARY,
                mirrored: false,
            })),
        }
    }
    async fn set_routes(
        &self,
        canary: &CanaryRef,
        weights: Weights,
        mirror: bool,
    ) -> Result<(), RouterError> {
        match self {
            Mesh::Istio(r) => r.set_routes(canary, weights, mirror).await,
            Mesh::None => Ok(()),
        }
    }
    async fn finalize(&self, canary: &CanaryRef) -> Result<(), RouterError> {
        match self {
            Mesh::Istio(r) => r.finalize(canary).await,
            Mesh::None => Ok(()),
        }
    }
}

pub struct RouterActor {
    routers: Routers,
    permits: Arc<Semaphore>,
}

impl RouterActor {
    pub fn new(client: Client, config: RouterConfig, stores: RouterStores) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrency.max(1)));
        Self {
            routers: Routers {
                services: kubernetes::ServiceRouter::new(
                    client.clone(),
                    config.api_timeout,
                    stores.services.clone(),
                    stores.deployments.clone(),
                ),
                istio: istio::IstioRouter::new(
                    client,
                    config.api_timeout,
                    stores.virtual_services,
                    stores.destination_rules,
                ),
            },
            permits,
        }
    }

    fn run<T, F, Fut>(&self, f: F) -> ResponseFuture<Result<T, RouterError>>
    where
        T: 'static,
        F: FnOnce(Routers) -> Fut + 'static,
        Fut: Future<Output = Result<T, RouterError>> + 'static,
    {
        let routers = self.routers.clone();
        let permits = self.permits.clone();
        Box::pin(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|e| RouterError::Unavailable(e.to_string()))?;
            f(routers).await
        })
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;
}

impl Handler<ReconcileRoutes> for RouterActor {
    type Result = ResponseFuture<Result<(), RouterError>>;
    fn handle(&mut self, msg: ReconcileRoutes, _: &mut Self::Context) -> Self::Result {
        self.run(move |r| async move {
            r.services.reconcile(&msg.canary).await?;
            r.mesh(&msg.canary).reconcile(&msg.canary).await
        })
    }
}

impl Handler<GetRoutes> for RouterActor {
    type Result = ResponseFuture<Result<Option<Routes>, RouterError>>;
    fn handle(&mut self, msg: GetRoutes, _: &mut Self::Context) -> Self::Result {
        self.run(move |r| async move { r.mesh(&msg.canary).get_routes(&msg.canary).await })
    }
}

impl Handler<SetRoutes> for RouterActor {
    type Result = ResponseFuture<Result<(), RouterError>>;
    fn handle(&mut self, msg: SetRoutes, _: &mut Self::Context) -> Self::Result {
        self.run(move |r| async move {
            r.mesh(&msg.canary)
                .set_routes(&msg.canary, msg.weights, msg.mirror)
                .await
        })
    }
}

impl Handler<FinalizeRoutes> for RouterActor {
    type Result = ResponseFuture<Result<(), RouterError>>;
    fn handle(&mut self, msg: FinalizeRoutes, _: &mut Self::Context) -> Self::Result {
        self.run(move |r| async move {
            r.services.finalize(&msg.canary).await?;
            r.mesh(&msg.canary).finalize(&msg.canary).await
        })
    }
}
