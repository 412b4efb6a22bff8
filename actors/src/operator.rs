//! `flagger run`: builds the kube client, the caches, the shared actors, the supervisor and the
//! admin server inside one actix system, and runs until SIGINT/SIGTERM.
//!
//! Start-up order: client → admin server (so `/healthz` answers while caches sync) → watches →
//! wait until every cache listed once → shared actors → supervisor → `/readyz` turns ready.
//! Watch events that arrive before the supervisor runs are buffered, not lost.
//!
//! Leader election (`--enable-leader-election`, flagger-behavior §9.1): every replica runs the
//! watches, the caches, the shared actors and the admin server; only the holder of the Lease runs
//! CanaryActors and writes.
//! - Writes: the operator's kube client is built with the [`crate::gate`] layer, so every write
//!   request of every actor is refused unless this process holds the lease at that instant (the
//!   renew deadline of its last renewal has not passed). The elector has its own, ungated client.
//! - Becoming leader: `LeadershipChanged{leader: true}` → the supervisor starts a CanaryActor per
//!   Canary in the cache; each resumes from `.status` and reads the weights from the mesh, so a
//!   step the previous leader applied is observed, not applied again.
//! - Losing leadership (renew deadline passed, or the lease was taken): the elector steps down
//!   before the lease can expire; the write gate closes at that instant; the supervisor cancels
//!   every running tick and stops every CanaryActor; then the process exits with an error
//!   ("Leadership lost", as upstream), and the pod restarts as a follower. Exiting is the safe
//!   choice: side effects that are not Kubernetes writes — queued Slack messages, webhook retries,
//!   in-flight load-test calls — cannot outlive the term that started them, and the next term
//!   starts from fresh caches. Followers whose election calls fail stay followers.
//! - SIGTERM: the canary actors stop first, then the leader releases the lease, so a follower takes
//!   over at its next retry instead of waiting for the lease to expire.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use flagger_rollout::MeshProvider;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::{self, Readiness};
use crate::cache::{CacheEvent, Caches, Scope};
use crate::canary::{Env, Settings};
use crate::events::EventRecorder;
use crate::gate::{WriteGate, gated_client};
use crate::leader::{LeaderElector, LeaderError, LeaderHandle, Leadership, LeaseConfig};
use crate::messages::{
    CanariesResynced, CanaryApplied, CanaryDeleted, DependenciesResynced, DependencyChanged,
    LeadershipChanged,
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
    /// `--no-cross-namespace-refs`: Canaries may reference MetricTemplates and AlertProviders in
    /// their own namespace only.
    pub no_cross_namespace_refs: bool,
    pub include_label_prefixes: Vec<String>,
    pub cluster_name: Option<String>,
    pub global_notifier: Option<Destination>,
    pub event_webhook: Option<SecretString>,
    /// At most this many canary runs in progress at once (None: unlimited).
    pub max_concurrent_canaries: Option<u32>,
    /// `None`: no leader election, this process always acts. `Some`: the Lease to hold (its
    /// `identity` is replaced by [`OperatorConfig::identity`]).
    pub leader_election: Option<LeaseConfig>,
    /// This replica's name (`<hostname>_<uuid>`, [`crate::leader::default_identity`]): the Lease
    /// holder and part of the User-Agent, so the API server's audit log tells replicas apart.
    pub identity: String,
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
    #[error(transparent)]
    LeaderElection(#[from] LeaderError),
    /// This replica was the leader and no longer is; it exits so it restarts as a follower.
    #[error("Leadership lost")]
    LeadershipLost,
    #[error("running the actor system: {0}")]
    System(#[from] std::io::Error),
}

/// Runs the operator until SIGINT or SIGTERM.
pub fn run(config: OperatorConfig) -> Result<(), OperatorError> {
    crate::http::install_crypto_provider();
    let system = actix::System::new();
    system.block_on(run_in_system(config))
}

async fn kube_config(
    kubeconfig: &Option<PathBuf>,
    identity: &str,
) -> Result<kube::Config, OperatorError> {
    let mut config = match kubeconfig {
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
    // Names this replica in the API server's audit log (and the testbed's request stats).
    let agent = format!("flagger-rs/{} ({identity})", env!("CARGO_PKG_VERSION"));
    let agent = ::http::HeaderValue::from_str(&agent)
        .map_err(|e| OperatorError::Config(format!("user agent {agent:?}: {e}")))?;
    config.headers.push((::http::header::USER_AGENT, agent));
    Ok(config)
}

/// Resolves when this replica, having been the leader, no longer is. Tells the supervisor of
/// every change first.
async fn follow_leadership(handle: LeaderHandle, supervisor: Addr<CanarySupervisor>) {
    let mut changes = handle.subscribe();
    let mut leading = false;
    loop {
        let now_leader = matches!(*changes.borrow_and_update(), Leadership::Leader);
        if now_leader != leading {
            leading = now_leader;
            // `send`: once this returns, no canary actor of the lost term runs a tick.
            let _ = supervisor.send(LeadershipChanged { leader: leading }).await;
            if !leading {
                return;
            }
        }
        if changes.changed().await.is_err() {
            // The election ended (shutdown); the caller stops everything.
            if leading {
                let _ = supervisor.send(LeadershipChanged { leader: false }).await;
            }
            std::future::pending::<()>().await;
        }
    }
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
        no_cross_namespace_refs,
        include_label_prefixes,
        cluster_name,
        global_notifier,
        event_webhook,
        max_concurrent_canaries,
        leader_election,
        identity,
    } = config;
    let version = env!("CARGO_PKG_VERSION");
    info!(
        msg = format!("Starting flagger version {version} mesh provider {mesh_provider}"),
        version,
        mesh_provider = %mesh_provider
    );
    let kube_config = kube_config(&kubeconfig, &identity).await?;
    // The elector campaigns only once the caches have synced: a replica that cannot see the
    // cluster must not take the lease from one that can.
    let elector = match leader_election {
        None => None,
        Some(lease) => Some(LeaderElector::new(
            Client::try_from(kube_config.clone())?,
            LeaseConfig {
                identity: identity.clone(),
                ..lease
            },
        )?),
    };
    let election = elector.as_ref().map(LeaderElector::handle);
    let gate = election
        .clone()
        .map(WriteGate::leader)
        .unwrap_or_else(WriteGate::open);
    let client = gated_client(kube_config, gate.clone())?;
    let telemetry = Telemetry::new(version, &mesh_provider.to_string())?;
    let readiness = Readiness::new(gate);
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
        ports: Arc::new(ports),
        telemetry,
        settings: Arc::new(Settings {
            default_provider: mesh_provider,
            metrics_server,
            selector_labels,
            config_tracking,
            max_concurrent_canaries,
            no_cross_namespace_refs,
        }),
        client: Some(client),
        slots: None,
    };
    let supervisor = CanarySupervisor::new(env).following().start();
    if election.is_none() {
        // Without leader election this process leads from the start. Leading begins from the
        // synced cache, oldest Canary first, so the owner of a shared target is the same whatever
        // order the watch listed them in; the buffered watch events that follow only update them.
        let _ = supervisor.send(LeadershipChanged { leader: true }).await;
    }
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
    let election_stop = CancellationToken::new();
    if let Some(elector) = elector {
        elector.spawn(election_stop.clone());
    }
    readiness.set(true);
    info!(msg = "Started operator workers", identity = %identity);

    let lost = {
        let supervisor = supervisor.clone();
        let election = election.clone();
        async move {
            match election {
                Some(handle) => follow_leadership(handle, supervisor).await,
                None => std::future::pending().await,
            }
        }
    };
    let outcome = tokio::select! {
        _ = shutdown_signal() => {
            info!(msg = "Shutting down");
            Ok(())
        }
        _ = lost => {
            warn!(msg = "Leadership lost");
            Err(OperatorError::LeadershipLost)
        }
    };
    readiness.set(false);
    // Canary actors stop (running ticks dropped) before the lease is released.
    let _ = supervisor.send(LeadershipChanged { leader: false }).await;
    election_stop.cancel();
    let graceful = outcome.is_ok();
    if graceful && let Some(handle) = &election {
        // The release is one GET and one PUT, each under a timeout shorter than this.
        let _ = tokio::time::timeout(Duration::from_secs(10), handle.finished()).await;
    }
    watches.abort();
    // After a lost leadership nothing is left to release or finish: exit at once.
    server.handle.stop(graceful).await;
    outcome
}
