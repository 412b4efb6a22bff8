//! `flagger run`: builds the kube client, the caches, the shared actors, the supervisor and the
//! admin server inside one actix system, and runs until SIGINT/SIGTERM.
//!
//! Start-up order: client → admin server (so `/healthz` answers while caches sync) → watches →
//! wait until every cache listed once → shared actors → supervisor → `/readyz` turns ready.
//! Watch events that arrive before the supervisor runs are buffered, not lost.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use actix::Actor;
use flagger_rollout::MeshProvider;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::mpsc;
use tracing::info;

use crate::admin::{self, Readiness};
use crate::cache::{CacheEvent, Caches, Scope};
use crate::canary::{Env, Settings};
use crate::events::EventRecorder;
use crate::messages::{
    CanariesResynced, CanaryApplied, CanaryDeleted, DependenciesResynced, DependencyChanged,
};
use crate::metrics::{MetricsActor, MetricsConfig};
use crate::notifier::{Destination, NotifierActor, NotifierConfig};
use crate::ports::Ports;
use crate::router::{RouterActor, RouterConfig, RouterStores};
use crate::secret::SecretString;
use crate::status::CanaryWriter;
use crate::supervisor::CanarySupervisor;
use crate::telemetry::Telemetry;
use crate::webhook::{WebhookActor, WebhookConfig};
use crate::workload::{WorkloadActor, WorkloadConfig, WorkloadStores};

/// Everything `flagger run` needs, already parsed and validated.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Kubeconfig file; `None` uses the in-cluster config or `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    pub scope: Scope,
    pub mesh_provider: MeshProvider,
    pub metrics_server: String,
    /// Address of the admin server; port 0 picks a free port (logged).
    pub listen: SocketAddr,
    pub selector_labels: Vec<String>,
    pub config_tracking: bool,
    pub include_label_prefixes: Vec<String>,
    pub cluster_name: Option<String>,
    pub global_notifier: Option<Destination>,
    pub event_webhook: Option<SecretString>,
    /// At most this many canary runs in progress at once (None: unlimited).
    pub max_concurrent_canaries: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("Kubernetes configuration: {0}")]
    Config(String),
    #[error("starting the HTTP server on {address}: {source}")]
    Admin {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("registering metrics: {0}")]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error("the caches stopped before they synced")]
    Caches,
    #[error("running the actor system: {0}")]
    System(#[from] std::io::Error),
}

/// Runs the operator until SIGINT or SIGTERM.
pub fn run(config: OperatorConfig) -> Result<(), OperatorError> {
    crate::http::install_crypto_provider();
    let system = actix::System::new();
    system.block_on(run_in_system(config))
}

async fn client(kubeconfig: &Option<PathBuf>) -> Result<Client, OperatorError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| OperatorError::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| OperatorError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| OperatorError::Config(e.to_string()))?,
    };
    Ok(Client::try_from(config)?)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run_in_system(config: OperatorConfig) -> Result<(), OperatorError> {
    let OperatorConfig {
        kubeconfig,
        scope,
        mesh_provider,
        metrics_server,
        listen,
        selector_labels,
        config_tracking,
        include_label_prefixes,
        cluster_name,
        global_notifier,
        event_webhook,
        max_concurrent_canaries,
    } = config;
    let version = env!("CARGO_PKG_VERSION");
    info!(
        msg = format!("Starting flagger version {version} mesh provider {mesh_provider}"),
        version,
        mesh_provider = %mesh_provider
    );
    let client = client(&kubeconfig).await?;
    let telemetry = Telemetry::new(version, &mesh_provider.to_string())?;
    let readiness = Readiness::default();
    let server = admin::start(listen, telemetry.clone(), readiness.clone()).map_err(|source| {
        OperatorError::Admin {
            address: listen,
            source,
        }
    })?;
    info!(
        msg = format!("Starting HTTP server on {}", server.address),
        address = %server.address
    );
    if let Scope::Namespace(ns) = &scope {
        info!(msg = format!("Watching namespace {ns}"));
    }

    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<CacheEvent>();
    let sink = Arc::new(move |event: CacheEvent| {
        // The receiver lives as long as the operator; a send error only happens at shutdown.
        let _ = events_tx.send(event);
    });
    let (caches, watches) = Caches::start(&client, &scope, sink);
    caches
        .wait_until_ready()
        .await
        .map_err(|_| OperatorError::Caches)?;
    info!(msg = "caches synced");

    let workload = WorkloadActor::new(
        client.clone(),
        WorkloadConfig {
            include_label_prefixes,
            config_tracking,
            ..WorkloadConfig::default()
        },
        WorkloadStores {
            deployments: Some(caches.deployments.clone()),
            config_maps: Some(caches.config_maps.clone()),
            secrets: Some(caches.secrets.clone()),
            hpas: Some(caches.hpas.clone()),
        },
    )
    .start();
    let router = RouterActor::new(
        client.clone(),
        RouterConfig::default(),
        RouterStores {
            services: Some(caches.services.clone()),
            deployments: Some(caches.deployments.clone()),
            virtual_services: Some(caches.virtual_services.clone()),
            destination_rules: Some(caches.destination_rules.clone()),
        },
    )
    .start();
    let metrics = MetricsActor::new(MetricsConfig::default()).start();
    let webhook = WebhookActor::new(WebhookConfig {
        event_webhook,
        ..WebhookConfig::default()
    })
    .start();
    let notifier = NotifierActor::new(NotifierConfig {
        global: global_notifier,
        cluster_name,
        ..NotifierConfig::default()
    })
    .start();
    let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| "flagger".to_owned());
    let writer =
        CanaryWriter::new(client.clone(), EventRecorder::new(client.clone(), instance)).start();
    let ports = Ports::new(&workload, &router, &metrics, &webhook, &notifier, &writer);
    let env = Env {
        caches,
        ports,
        telemetry,
        settings: Arc::new(Settings {
            default_provider: mesh_provider,
            metrics_server,
            selector_labels,
            config_tracking,
            max_concurrent_canaries,
        }),
        client: Some(client),
        slots: None,
    };
    let supervisor = CanarySupervisor::new(env).start();
    let forward = supervisor.clone();
    actix::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            match event {
                CacheEvent::CanaryApplied(c) => forward.do_send(CanaryApplied(c)),
                CacheEvent::CanaryDeleted(k) => forward.do_send(CanaryDeleted(k)),
                CacheEvent::CanariesResynced => forward.do_send(CanariesResynced),
                CacheEvent::DependencyChanged {
                    kind,
                    namespace,
                    name,
                } => forward.do_send(DependencyChanged {
                    kind,
                    namespace,
                    name,
                }),
                CacheEvent::DependenciesResynced(_) => forward.do_send(DependenciesResynced),
            }
        }
    });
    readiness.set(true);
    info!(msg = "Started operator workers");

    shutdown_signal().await;
    info!(msg = "Shutting down");
    readiness.set(false);
    watches.abort();
    server.handle.stop(true).await;
    Ok(())
}
