//! Istio mesh simulation, recorded Istio series, `/metrics` and the Prometheus query API
//! (owner: testbed-mesh helper). Entry points used by `Testbed::start`:
//!
//! ```text
//! pub struct MeshConfig { pub rps: u32, pub sample_every: Duration, pub retention: Duration }
//! pub struct Mesh { /* cheap to clone */ }
//! impl Mesh {
//!     pub fn start(store: crate::store::Store, cfg: MeshConfig, shutdown: CancellationToken) -> Mesh;
//!     /// `GET /metrics`, `GET|POST /api/v1/query` (+ whatever else the mesh serves).
//!     pub fn router(&self) -> axum::Router;
//! }
//! ```
//!
//! Every `sample_every` the simulator ([`traffic`]) sends each VirtualService's requests, then
//! records every Istio series into the in-memory store ([`tsdb`]) at that instant, as a
//! Prometheus scraping the proxies that often would. The query API ([`api`], [`promql`])
//! evaluates over those samples; `/metrics` ([`exposition`]) exposes the live counters for a
//! real Prometheus. `rps = 0` turns the simulation off (the APIs then answer from an empty store).
//!
//! Tests and benchmarks can build a [`Mesh`] with [`Mesh::new`] and drive simulated time with
//! [`Mesh::tick`] instead of waiting for the wall clock.
pub mod api;
pub mod exposition;
pub mod promql;
pub mod traffic;
pub mod tsdb;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use api::ApiError;
use promql::{QueryError, Value};
use traffic::Sim;
use tsdb::Tsdb;

/// Mesh settings. `Default`: 10 requests/s per VirtualService, sampled every second, kept 30 min.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// Requests per second per VirtualService (annotation `testbed.flagger.app/rps` overrides
    /// it per VirtualService); 0 disables the simulation.
    pub rps: u32,
    /// Simulation step and sampling period.
    pub sample_every: Duration,
    /// How long samples are kept.
    pub retention: Duration,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            rps: 10,
            sample_every: Duration::from_secs(1),
            retention: Duration::from_secs(30 * 60),
        }
    }
}

/// Size figures, for benchmarks and logs.
#[derive(Clone, Copy, Debug, Default)]
pub struct MeshStats {
    pub sources: usize,
    pub series: usize,
    pub samples: usize,
    pub sample_bytes: usize,
    pub requests: u64,
    /// Requests answered by the Prometheus query API (`/api/v1/query`), errors included.
    pub queries: u64,
}

/// The running mesh; cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

struct Inner {
    sim: Option<Mutex<Sim>>,
    tsdb: RwLock<Tsdb>,
    cfg: MeshConfig,
    queries: AtomicU64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Mesh {
    /// A mesh without a clock: nothing happens until [`Mesh::tick`] is called. It has subscribed
    /// to `store` already, so every change from now on is seen by the next tick.
    pub fn new(store: Store, cfg: MeshConfig) -> Mesh {
        let sim = (cfg.rps > 0).then(|| {
            Mutex::new(Sim::new(
                store,
                f64::from(cfg.rps),
                ms(cfg.sample_every),
                ms(cfg.retention),
            ))
        });
        Mesh {
            inner: Arc::new(Inner {
                sim,
                tsdb: RwLock::new(Tsdb::new(cfg.retention)),
                cfg,
                queries: AtomicU64::new(0),
            }),
        }
    }

    /// A mesh ticking on the wall clock every `sample_every` until `shutdown` is cancelled.
    /// Must be called inside a tokio runtime.
    pub fn start(store: Store, cfg: MeshConfig, shutdown: CancellationToken) -> Mesh {
        let mesh = Mesh::new(store, cfg);
        if mesh.inner.sim.is_some() {
            let m = mesh.clone();
            let period = mesh.inner.cfg.sample_every.max(Duration::from_millis(1));
            tokio::spawn(async move {
                let mut every = tokio::time::interval(period);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = every.tick() => m.tick(now_ms()),
                    }
                }
            });
        }
        mesh
    }

    fn sim(&self) -> Option<MutexGuard<'_, Sim>> {
        // A panic inside a tick leaves counters consistent enough to keep serving.
        self.inner
            .sim
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// One simulation step at `now_ms` (milliseconds since the epoch): applies the store
    /// changes since the last step, sends the step's requests and records all series at `now_ms`.
    pub fn tick(&self, now_ms: i64) {
        let Some(mut sim) = self.sim() else { return };
        let mut db = self.inner.tsdb.write().unwrap_or_else(|e| e.into_inner());
        sim.tick(now_ms, &mut db);
    }

    /// The traffic half of [`Mesh::tick`]: applies store changes and sends the requests due.
    pub fn step(&self, now_ms: i64) {
        if let Some(mut sim) = self.sim() {
            sim.step(now_ms);
        }
    }

    /// The recording half of [`Mesh::tick`]: stores every series' current value at `now_ms`,
    /// as a scrape at that instant would (the differential test samples at Prometheus's
    /// scrape timestamps so both stores hold identical data).
    pub fn sample(&self, now_ms: i64) {
        let Some(mut sim) = self.sim() else { return };
        let mut db = self.inner.tsdb.write().unwrap_or_else(|e| e.into_inner());
        sim.sample(now_ms, &mut db);
    }

    /// Evaluates an instant query at `t_ms`.
    pub fn query(&self, query: &str, t_ms: i64) -> Result<Value, QueryError> {
        let db = self.inner.tsdb.read().unwrap_or_else(|e| e.into_inner());
        promql::query(&db, query, t_ms)
    }

    /// The current counters in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        match self.sim() {
            Some(sim) => exposition::render(&sim.flows),
            None => exposition::render(&[]),
        }
    }

    pub fn stats(&self) -> MeshStats {
        let (sources, requests) = self
            .sim()
            .map(|s| (s.num_sources(), s.requests))
            .unwrap_or_default();
        let db = self.inner.tsdb.read().unwrap_or_else(|e| e.into_inner());
        MeshStats {
            sources,
            requests,
            series: db.num_series(),
            samples: db.num_samples(),
            sample_bytes: db.sample_bytes(),
            queries: self.queries(),
        }
    }

    /// Requests answered by the Prometheus query API so far (cheap: no lock, unlike
    /// [`Mesh::stats`]).
    pub fn queries(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    /// `GET /metrics`, `GET|POST /api/v1/query`, `GET /-/healthy`, `GET /-/ready`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/api/v1/query", get(query).post(query))
            .route("/-/healthy", get(|| async { "Healthy.\n" }))
            .route("/-/ready", get(|| async { "Ready.\n" }))
            .with_state(self.clone())
    }
}

async fn metrics(State(mesh): State<Mesh>) -> Response {
    (
        [(header::CONTENT_TYPE, exposition::CONTENT_TYPE)],
        mesh.metrics_text(),
    )
        .into_response()
}

async fn query(
    State(mesh): State<Mesh>,
    method: Method,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    match answer(&mesh, &method, raw.as_deref().unwrap_or(""), &body) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn answer(mesh: &Mesh, method: &Method, raw: &str, body: &[u8]) -> Result<String, ApiError> {
    mesh.inner.queries.fetch_add(1, Ordering::Relaxed);
    // Like Go's FormValue: form-body values take precedence over the URL's.
    let mut params = Vec::new();
    if *method == Method::POST {
        params.extend(api::parse_form(&String::from_utf8_lossy(body)));
    }
    params.extend(api::parse_form(raw));
    let param = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let t = match param("time") {
        Some(s) => api::parse_time(s)?,
        None => now_ms(),
    };
    if let Some(s) = param("timeout") {
        api::parse_timeout(s)?;
    }
    let q = param("query").unwrap_or("");
    let value = mesh.query(q, t)?;
    Ok(api::success_body(&value, t))
}
