//! The MetricsActor: runs the analysis' metric queries for every canary.
//!
//! Contract:
//! - One shared actor; handlers return futures, so many canaries are served concurrently.
//! - At most [`MetricsConfig::max_in_flight`] requests are in flight (default 16); every request
//!   has a timeout ([`MetricsConfig::query_timeout`], default 5 s as upstream).
//! - Identical rendered queries against the same server (address, credentials, headers) started
//!   within [`MetricsConfig::share_window`] (default 1 s) share one HTTP request.
//! - No data (empty vector, NaN) and provider errors are different [`MetricsError`] variants; no
//!   text ever contains credentials.
//!
//! The caller (the CanaryActor's gather step) builds [`MetricQuery`]s with
//! [`MetricQuery::for_check`] (it resolves MetricTemplates and their Secrets) and turns the
//! [`MetricReply`]s into [`MetricOutcome`]s for `decide`.

pub mod builtin;
pub mod prometheus;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use flagger_rollout::template::{TemplateError, TemplateVars, render};
use flagger_rollout::{
    BuiltinMetric, CanarySpec, MetricCheck, MetricOutcome, MetricSource, MetricValue, ProviderCheck,
};
use futures::FutureExt;
use futures::future::{LocalBoxFuture, Shared, join_all};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span};

use crate::crd::metric_template::{MetricProvider, MetricProviderType};
use crate::http::HttpClients;
use crate::key::CanaryKey;
use crate::secret::SecretString;
pub use builtin::{BuiltinQuery, builtin_query};
pub use prometheus::{PrometheusAuth, PrometheusServer};

/// Why a metric has no value. `Clone` because one result can answer several shared queries.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// Empty result or NaN: the canary probably receives no traffic.
    #[error("no values found")]
    NoValues,
    #[error("request failed: timeout after {}", prometheus::timeout_text(*.0))]
    Timeout(Duration),
    /// Connection refused, DNS, TLS, reset.
    #[error("request failed: {0}")]
    Unreachable(String),
    /// Non-2xx status; `body` truncated and scrubbed.
    #[error("error response: Status {status}: {body}")]
    Status { status: String, body: String },
    /// Prometheus answered `status: error` (bad PromQL, timeout inside Prometheus).
    #[error("error response: {error_type}: {message}")]
    Query { error_type: String, message: String },
    #[error("error unmarshaling result: {0}")]
    InvalidResponse(String),
    #[error("query returned multiple values")]
    MultipleValues,
    /// The provider or query cannot be used (bad address, missing Secret key, unknown type).
    #[error("{0}")]
    Config(String),
    #[error("query render error: {0}")]
    Render(#[from] TemplateError),
}

impl MetricsError {
    /// True when the query worked but returned nothing.
    pub fn is_no_data(&self) -> bool {
        matches!(self, Self::NoValues)
    }
}

/// Where a query runs. One variant per backend; adding one is a new file and a new variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MetricsServer {
    Prometheus(PrometheusServer),
}

impl MetricsServer {
    /// The global `--metrics-server`, or a canary's `spec.metricsServer`.
    pub fn prometheus(address: impl Into<String>) -> Self {
        Self::Prometheus(PrometheusServer::new(address))
    }

    /// The server of builtin and inline queries: the canary's `spec.metricsServer` when set,
    /// otherwise the global `--metrics-server`.
    pub fn for_canary(spec: &CanarySpec, global: &str) -> Self {
        let address = spec
            .metrics_server
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .unwrap_or(global);
        Self::prometheus(address)
    }

    /// The server of a MetricTemplate's `spec.provider`. `secret` is the data of the Secret named
    /// by `provider.secretRef` (in the template's namespace), read by the caller.
    pub fn from_template_provider(
        provider: &MetricProvider,
        secret: Option<&BTreeMap<String, SecretString>>,
    ) -> Result<Self, MetricsError> {
        let kind = provider
            .kind()
            .map_err(|e| MetricsError::Config(e.to_string()))?;
        if kind != MetricProviderType::Prometheus {
            return Err(MetricsError::Config(format!(
                "metric provider type {kind} is not supported by flagger-rs, supported: prometheus"
            )));
        }
        let address = provider
            .address
            .clone()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| MetricsError::Config("prometheus address is empty".to_owned()))?;
        let auth = match (provider.secret_ref.is_some(), secret) {
            (false, _) => PrometheusAuth::None,
            (true, None) => {
                return Err(MetricsError::Config(
                    "prometheus secretRef is set but its Secret was not provided".to_owned(),
                ));
            }
            (true, Some(data)) => {
                if let Some(token) = data.get("token").filter(|t| !t.is_empty()) {
                    PrometheusAuth::Bearer(token.clone())
                } else {
                    match (data.get("username"), data.get("password")) {
                        (Some(u), Some(p)) => PrometheusAuth::Basic {
                            username: u.clone(),
                            password: p.clone(),
                        },
                        _ => {
                            return Err(MetricsError::Config(
                                "prometheus credentials contain neither a token nor a username and password"
                                    .to_owned(),
                            ));
                        }
                    }
                }
            }
        };
        let headers = provider
            .headers
            .iter()
            .flatten()
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |v| (name.clone(), SecretString::new(v.clone())))
            })
            .collect();
        Ok(Self::Prometheus(PrometheusServer {
            address,
            auth,
            headers,
            insecure_skip_verify: provider.insecure_skip_verify.unwrap_or(false),
        }))
    }

    /// Provider name for texts (`prometheus`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Prometheus(_) => "prometheus",
        }
    }
}

/// Where a query came from; decides the texts of its failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryOrigin {
    Builtin(BuiltinMetric),
    /// Deprecated inline `query`.
    Inline,
    Template,
}

/// One rendered query of one metric check.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricQuery {
    /// `analysis.metrics[].name`.
    pub metric: String,
    pub origin: QueryOrigin,
    pub server: MetricsServer,
    /// Rendered PromQL.
    pub query: String,
    /// Factor applied to the value (the kubernetes builtin duration is in seconds → ×1000).
    pub scale: f64,
}

/// A MetricTemplate as the caller resolved it: its provider and its (unrendered) query.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedTemplate {
    pub server: MetricsServer,
    pub query: String,
}

impl MetricQuery {
    /// The query of `check`: builtin and inline queries run on `metrics_server` (the canary's
    /// `metricsServer` or the global one), template queries on the template's own provider.
    /// `template` is required for template metrics.
    pub fn for_check(
        spec: &CanarySpec,
        check: &MetricCheck,
        metrics_server: &MetricsServer,
        template: Option<&ResolvedTemplate>,
    ) -> Result<Self, MetricsError> {
        let vars = TemplateVars::for_check(spec, check);
        let (origin, server, query, scale) = match &check.source {
            MetricSource::Builtin(metric) => {
                let b = builtin_query(spec.provider, *metric);
                (
                    QueryOrigin::Builtin(*metric),
                    metrics_server.clone(),
                    render(b.template, &vars)?,
                    b.scale,
                )
            }
            // Upstream sends inline queries as written (no template rendering).
            MetricSource::Query(q) => (QueryOrigin::Inline, metrics_server.clone(), q.clone(), 1.0),
            MetricSource::Template { name, namespace } => {
                let t = template.ok_or_else(|| {
                    MetricsError::Config(format!("metric template {name}.{namespace} not found"))
                })?;
                (
                    QueryOrigin::Template,
                    t.server.clone(),
                    render(&t.query, &vars)?,
                    1.0,
                )
            }
        };
        Ok(Self {
            metric: check.name.clone(),
            origin,
            server,
            query,
            scale,
        })
    }
}

/// The result of one [`MetricQuery`].
#[derive(Debug, Clone, PartialEq)]
pub struct MetricReply {
    pub metric: String,
    pub origin: QueryOrigin,
    pub result: Result<f64, MetricsError>,
}

/// Texts as upstream: builtin failures read `running query failed: ...` (the caller adds
/// `Prometheus query failed: `); the success-rate no-data text carries the cause, the duration
/// one does not (flagger-behavior §4.7).
impl From<MetricReply> for MetricOutcome {
    fn from(r: MetricReply) -> Self {
        let value = match (&r.result, r.origin) {
            (Ok(v), _) => MetricValue::Value(*v),
            (Err(MetricsError::NoValues), QueryOrigin::Builtin(BuiltinMetric::RequestDuration))
            | (Err(MetricsError::NoValues), QueryOrigin::Inline) => MetricValue::NoData(None),
            (Err(MetricsError::NoValues), QueryOrigin::Builtin(_)) => {
                MetricValue::NoData(Some("running query failed: no values found".to_owned()))
            }
            (Err(MetricsError::NoValues), QueryOrigin::Template) => {
                MetricValue::NoData(Some("no values found".to_owned()))
            }
            (Err(e), QueryOrigin::Builtin(_)) => {
                MetricValue::Failed(format!("running query failed: {e}"))
            }
            (Err(e), _) => MetricValue::Failed(e.to_string()),
        };
        MetricOutcome {
            name: r.metric,
            value,
        }
    }
}

/// Run these queries (one canary's metrics of one tick). Replies come in the same order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<MetricReply>")]
pub struct RunQueries {
    pub canary: CanaryKey,
    pub queries: Vec<MetricQuery>,
}

/// Check that each server answers `vector(1)` with 1 (at initialization).
#[derive(Debug, Message)]
#[rtype(result = "ProviderCheck")]
pub struct CheckProviders {
    pub canary: CanaryKey,
    pub servers: Vec<MetricsServer>,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub max_in_flight: usize,
    pub query_timeout: Duration,
    pub share_window: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 16,
            query_timeout: Duration::from_secs(5),
            share_window: Duration::from_secs(1),
        }
    }
}

type SharedQuery = Shared<LocalBoxFuture<'static, Result<f64, MetricsError>>>;

struct Inner {
    config: MetricsConfig,
    clients: HttpClients,
    permits: Arc<Semaphore>,
    /// Queries started within the share window, by (server, rendered query).
    recent: RefCell<HashMap<(MetricsServer, String), (Instant, SharedQuery)>>,
}

impl Inner {
    /// The running or just-finished request for (`server`, `query`), or a new one.
    fn query(self: &Rc<Self>, server: &MetricsServer, query: &str) -> SharedQuery {
        let now = Instant::now();
        let window = self.config.share_window;
        let mut recent = self.recent.borrow_mut();
        recent.retain(|_, (started, _)| now.duration_since(*started) < window);
        let key = (server.clone(), query.to_owned());
        if let Some((_, shared)) = recent.get(&key) {
            debug!(
                query,
                "sharing a query started less than the share window ago"
            );
            return shared.clone();
        }
        let inner = Rc::clone(self);
        let (server, query) = key.clone();
        let fut = async move { inner.execute(&server, &query).await }
            .boxed_local()
            .shared();
        recent.insert(key, (now, fut.clone()));
        fut
    }

    async fn execute(&self, server: &MetricsServer, query: &str) -> Result<f64, MetricsError> {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self.permits.acquire().await.ok();
        match server {
            MetricsServer::Prometheus(p) => {
                let client = self
                    .clients
                    .get(&p.client_options())
                    .map_err(|e| MetricsError::Config(e.to_string()))?;
                prometheus::run_query(&client, p, query, self.config.query_timeout).await
            }
        }
    }
}

/// See the module docs.
pub struct MetricsActor {
    inner: Rc<Inner>,
}

impl MetricsActor {
    pub fn new(config: MetricsConfig) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        Self {
            inner: Rc::new(Inner {
                config,
                clients: HttpClients::default(),
                permits,
                recent: RefCell::new(HashMap::new()),
            }),
        }
    }
}

impl Default for MetricsActor {
    fn default() -> Self {
        Self::new(MetricsConfig::default())
    }
}

impl Actor for MetricsActor {
    type Context = Context<Self>;
}

impl Handler<RunQueries> for MetricsActor {
    type Result = ResponseFuture<Vec<MetricReply>>;

    fn handle(&mut self, msg: RunQueries, _ctx: &mut Self::Context) -> Self::Result {
        let span = info_span!("metrics", canary = %msg.canary);
        let pending: Vec<_> = msg
            .queries
            .into_iter()
            .map(|q| {
                let shared = self.inner.query(&q.server, &q.query);
                async move {
                    let result = shared.await.map(|v| v * q.scale);
                    if let Err(e) = &result {
                        debug!(metric = %q.metric, error = %e, "metric query failed");
                    }
                    MetricReply {
                        metric: q.metric,
                        origin: q.origin,
                        result,
                    }
                }
            })
            .collect();
        Box::pin(join_all(pending).instrument(span))
    }
}

impl Handler<CheckProviders> for MetricsActor {
    type Result = ResponseFuture<ProviderCheck>;

    fn handle(&mut self, msg: CheckProviders, _ctx: &mut Self::Context) -> Self::Result {
        let mut servers = msg.servers;
        servers.dedup();
        let checks: Vec<_> = servers
            .into_iter()
            .map(|s| {
                let shared = self.inner.query(&s, "vector(1)");
                async move { (s.kind(), shared.await) }
            })
            .collect();
        let span = info_span!("metrics", canary = %msg.canary);
        Box::pin(
            async move {
                for (kind, result) in join_all(checks).await {
                    // "avaiable" is upstream's spelling; events are kept identical.
                    let why = match result {
                        Ok(1.0) => continue,
                        Ok(_) => {
                            format!("{kind} not avaiable: value is not 1 for query: vector(1)")
                        }
                        Err(e) => format!("{kind} not avaiable: running query failed: {e}"),
                    };
                    return ProviderCheck::Unavailable(why);
                }
                ProviderCheck::Available
            }
            .instrument(span),
        )
    }
}
