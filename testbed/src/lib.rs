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

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::faults::{Faults, Stats};
use crate::registry::Registry;
use crate::store::{ApiError, ResourceId, Store, StoreConfig, TypeInfo};

/// How to run a testbed. `Default` binds free ports.
#[derive(Clone, Debug)]
pub struct Config {
    /// API port on 127.0.0.1 (0 = pick a free one).
    pub api_port: u16,
    /// Metrics/Prometheus port on 127.0.0.1 (0 = pick a free one).
    pub metrics_port: u16,
    /// How long Deployments take to become ready.
    pub ready_delay: Duration,
    /// Simulated requests per second per mesh host.
    pub rps: u32,
    /// Mesh simulation step and Prometheus sampling period.
    pub mesh_sample_every: Duration,
    /// How long the mesh keeps samples.
    pub mesh_retention: Duration,
    /// Events kept for watch resumption (older resourceVersions get 410 Gone).
    pub history: usize,
    /// Period of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Run the workload controllers (Deployments, ReplicaSets, Pods, HPAs). Off gives a bare API
    /// server, as a cluster without kube-controller-manager.
    pub controllers: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_port: 0,
            metrics_port: 0,
            ready_delay: Duration::from_secs(1),
            rps: 10,
            mesh_sample_every: mesh::MeshConfig::default().sample_every,
            mesh_retention: mesh::MeshConfig::default().retention,
            history: 10_000,
            bookmark_interval: Duration::from_secs(5),
            controllers: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("cannot listen on 127.0.0.1:{port} ({what}): {source}")]
    Bind {
        what: &'static str,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the initial namespace {name}: {source}")]
    Setup {
        name: String,
        #[source]
        source: ApiError,
    },
    #[error("invalid API URL {0}")]
    Url(String),
    #[error("cannot build a kube client: {0}")]
    Client(#[from] kube::Error),
}

/// A running simulated cluster. Dropping it without [`Testbed::shutdown`] leaves its tasks running
/// until the runtime ends.
pub struct Testbed {
    api_addr: SocketAddr,
    metrics_addr: SocketAddr,
    store: Store,
    registry: Registry,
    faults: Faults,
    stats: Stats,
    mesh: mesh::Mesh,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// The namespaces every cluster starts with.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

impl Testbed {
    /// Starts the API server (and the metrics port) on 127.0.0.1.
    pub async fn start(cfg: Config) -> Result<Testbed, TestbedError> {
        let shutdown = CancellationToken::new();
        let store = Store::new(StoreConfig {
            history: cfg.history,
        });
        for name in INITIAL_NAMESPACES {
            store
                .create(
                    &ResourceId::new("", "namespaces"),
                    serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                )
                .map_err(|source| TestbedError::Setup { name: name.to_string(), source })?;
        }
        let registry = Registry::builtin();
        for t in registry.all() {
            store.register_type(
                &ResourceId::new(&t.group, &t.plural),
                TypeInfo {
                    status_subresource: t.status_subresource,
                },
            );
        }
        registry.spawn_crd_controller(store.clone(), shutdown.clone());
        let faults = Faults::new(store.clone());
        let stats = Stats::default();
        let state = ApiState {
            store: store.clone(),
            registry: registry.clone(),
            faults: faults.clone(),
            stats: stats.clone(),
            bookmark_interval: cfg.bookmark_interval,
            shutdown: shutdown.clone(),
        };
        let api = bind("api", cfg.api_port).await?;
        let metrics = bind("metrics", cfg.metrics_port).await?;
        let api_addr = local_addr("api", &api, cfg.api_port)?;
        let metrics_addr = local_addr("metrics", &metrics, cfg.metrics_port)?;
        let mesh = mesh::Mesh::start(
            store.clone(),
            mesh::MeshConfig {
                rps: cfg.rps,
                sample_every: cfg.mesh_sample_every,
                retention: cfg.mesh_retention,
            },
            shutdown.clone(),
        );
        let mut tasks = vec![
            serve(api, api::router(state), shutdown.clone()),
            serve(metrics, mesh.router(), shutdown.clone()),
        ];
        if cfg.controllers {
            let wcfg = workloads::WorkloadConfig {
                ready_delay: cfg.ready_delay,
            };
            tasks.push(tokio::spawn(workloads::run(
                store.clone(),
                wcfg,
                shutdown.clone(),
            )));
        }
        Ok(Testbed {
            api_addr,
            metrics_addr,
            store,
            registry,
            faults,
            stats,
            mesh,
            shutdown,
            tasks,
        })
    }

    /// `http://127.0.0.1:PORT` of the Kubernetes API.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// `http://127.0.0.1:PORT` of `/metrics` and the Prometheus query API.
    pub fn metrics_url(&self) -> String {
        format!("http://{}", self.metrics_addr)
    }

    /// A kube client configuration for this cluster (namespace `default`, no auth).
    pub fn kubeconfig(&self) -> Result<kube::Config, TestbedError> {
        let uri: http::Uri = self
            .api_url()
            .parse()
            .map_err(|_| TestbedError::Url(self.api_url()))?;
        Ok(kube::Config::new(uri))
    }

    /// A kubeconfig file for kubectl and other clients (any bearer token is accepted).
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.api_url())
    }

    pub fn client(&self) -> Result<kube::Client, TestbedError> {
        Ok(kube::Client::try_from(self.kubeconfig()?)?)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The mesh simulation behind the metrics port.
    pub fn mesh(&self) -> &mesh::Mesh {
        &self.mesh
    }

    /// A token that is cancelled when the testbed shuts down (for tasks started alongside it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops serving: open watches end, listeners close, background tasks stop.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            // Connections that do not close in time are dropped with the task.
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                tracing::warn!("testbed server did not stop within 5s");
            }
        }
    }
}

/// The kubeconfig YAML for an API URL.
pub fn kubeconfig_yaml(api_url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: {api_url}
contexts:
- name: testbed
  context:
    cluster: testbed
    user: testbed
    namespace: default
current-context: testbed
users:
- name: testbed
  user:
    token: testbed
"
    )
}

async fn bind(what: &'static str, port: u16) -> Result<tokio::net::TcpListener, TestbedError> {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| TestbedError::Bind { what, port, source })
}

fn local_addr(
    what: &'static str,
    l: &tokio::net::TcpListener,
    port: u16,
) -> Result<SocketAddr, TestbedError> {
    l.local_addr()
        .map_err(|source| TestbedError::Bind { what, port, source })
}

fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let r = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "testbed server stopped");
        }
    })
}
