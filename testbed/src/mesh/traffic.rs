//! The traffic simulator: what an Istio mesh under a load generator would record.
//!
//! Every tick, each traffic source sends `rps × elapsed` requests (fractions carried over):
//! every VirtualService (over `spec.http[0].route`, split by weight with per-destination
//! remainders so a 10% route gets exactly 10% over time), and every Service annotated
//! `testbed.flagger.app/rps` (straight to itself). A destination host resolves to a Service (same
//! namespace for short names), its selector to ready Pods, a Pod to its workload (the Deployment
//! owning its ReplicaSet). Requests go round-robin over the ready Pods; each Pod's annotations
//! (copied from the pod template) decide the outcome: `testbed.flagger.app/error-rate` (fraction
//! answered 500, applied exactly with a carried remainder) and `testbed.flagger.app/latency-ms`
//! (log-normal latency with that mean). A destination without ready endpoints answers 503,
//! recorded by the source proxy only (`reporter="source"`), as Istio does.
//!
//! The cluster view is kept incrementally from store events, drained at the start of each tick;
//! endpoint lists are cached per Service and rebuilt only after a change in their namespace, so
//! a tick costs O(requests + series) regardless of cluster size.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::sync::broadcast;

use super::tsdb::{Labels, SeriesRef, Tsdb};
use crate::store::{EventType, ResourceId, Store, StoreEvent};

pub const ANN_RPS: &str = "testbed.flagger.app/rps";
pub const ANN_ERROR_RATE: &str = "testbed.flagger.app/error-rate";
pub const ANN_LATENCY_MS: &str = "testbed.flagger.app/latency-ms";
pub const DEFAULT_LATENCY_MS: f64 = 20.0;
/// Spread (sigma of the underlying normal) of the log-normal latency: P99 ≈ 1.73 × mean.
const LATENCY_SIGMA: f64 = 0.25;
/// Who sends the simulated traffic.
pub const SOURCE_WORKLOAD: &str = "loadtester";

pub const REQUESTS_TOTAL: &str = "istio_requests_total";
pub const DURATION: &str = "istio_request_duration_milliseconds";
/// Istio's default buckets for `istio_request_duration_milliseconds`.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// `le` label values, formatted as Istio's proxies export them, `+Inf` last.
pub const LE: [&str; 20] = [
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
    "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
];
/// Series per response code of a flow: requests_total, 20 buckets, _sum, _count.
const SERIES_PER_CODE: usize = 23;

fn services() -> ResourceId {
    ResourceId::new("", "services")
}
fn pods() -> ResourceId {
    ResourceId::new("", "pods")
}
fn replicasets() -> ResourceId {
    ResourceId::new("apps", "replicasets")
}
fn virtualservices() -> ResourceId {
    ResourceId::new("networking.istio.io", "virtualservices")
}

type NsName = (String, String);

fn ns_name(obj: &Value) -> NsName {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or("").to_string(),
        m["name"].as_str().unwrap_or("").to_string(),
    )
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// How a Pod answers, from its annotations.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Behaviour {
    /// Errors per million requests.
    error_ppm: u64,
    latency_ms: f64,
}

impl Behaviour {
    fn of(pod: &Value) -> Behaviour {
        let error = annotation(pod, ANN_ERROR_RATE)
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite())
            .unwrap_or(0.0)
            .clamp(0.0, 1.0);
        let latency_ms = annotation(pod, ANN_LATENCY_MS)
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite() && *f > 0.0)
            .unwrap_or(DEFAULT_LATENCY_MS);
        Behaviour {
            error_ppm: (error * 1e6).round() as u64,
            latency_ms,
        }
    }
}

#[derive(Debug)]
struct PodInfo {
    labels: BTreeMap<String, String>,
    ready: bool,
    behaviour: Behaviour,
    owner: Option<(String, String)>, // (kind, name)
}

#[derive(Debug)]
struct ServiceInfo {
    selector: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Route {
    host: String,
    weight: f64,
    /// Requests owed to this destination but not yet sent (fraction < 1).
    carry: f64,
    /// Round-robin position over the destination's endpoints.
    cursor: usize,
}

#[derive(Debug)]
struct Source {
    namespace: String,
    rps: f64,
    carry: f64,
    routes: Vec<Route>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
enum SourceKey {
    VirtualService,
    Service,
}

/// A traffic source: kind, namespace, name.
type SourceId = (SourceKey, String, String);

#[derive(Debug)]
struct Endpoint {
    flow: usize,
    behaviour: Behaviour,
}

/// Counters of one response code within a flow.
#[derive(Debug)]
pub(super) struct CodeStats {
    pub code: u16,
    pub requests: u64,
    /// Observations per bucket (not cumulative), `+Inf` last.
    pub buckets: [u64; 20],
    pub sum_ms: f64,
    refs: Option<Box<[SeriesRef; SERIES_PER_CODE]>>,
}

impl CodeStats {
    /// Values of the 23 series in order: total, cumulative buckets, sum, count.
    pub fn values(&self) -> [f64; SERIES_PER_CODE] {
        let mut out = [0.0; SERIES_PER_CODE];
        out[0] = self.requests as f64;
        let mut cum = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            cum += b;
            out[1 + i] = cum as f64;
        }
        out[21] = self.sum_ms;
        out[22] = self.requests as f64;
        out
    }
}

/// One (reporter, destination workload, destination service, source) combination.
#[derive(Debug)]
pub(super) struct Flow {
    /// Labels shared by all its series (no `__name__`, `response_code` or `le`).
    pub labels: Vec<(Arc<str>, Arc<str>)>,
    pub codes: Vec<CodeStats>,
    error_carry: u64,
    last_request_ms: i64,
    /// Flows idle longer than the retention are neither sampled nor exported.
    pub active: bool,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct FlowKey {
    reporter: &'static str,
    workload: String,
    workload_ns: String,
    service_fqdn: String,
    source: &'static str,
}

/// The simulation state. Not synchronised: the mesh wraps it in a lock.
pub struct Sim {
    store: Store,
    rx: Option<broadcast::Receiver<Arc<StoreEvent>>>,
    default_rps: f64,
    retention_ms: i64,
    sample_every_ms: i64,
    sources: BTreeMap<SourceId, Source>,
    services: HashMap<NsName, ServiceInfo>,
    pods: HashMap<NsName, PodInfo>,
    /// (namespace, label, value) → pod names, to find a selector's pods without a scan.
    pods_by_label: HashMap<(String, String, String), BTreeSet<String>>,
    /// ReplicaSet → its owning Deployment (None when it has no Deployment owner).
    rs_owner: HashMap<NsName, Option<String>>,
    /// namespace → service → endpoints; a namespace's entry is dropped on any change there.
    endpoints: HashMap<String, HashMap<String, Arc<Vec<Endpoint>>>>,
    flow_index: HashMap<FlowKey, usize>,
    pub(super) flows: Vec<Flow>,
    interned: HashMap<String, Arc<str>>,
    rng: StdRng,
    last_tick_ms: Option<i64>,
    /// Requests simulated so far (all sources).
    pub requests: u64,
}

impl Sim {
    /// A simulator over `store`; it subscribes now and lists everything on its first tick.
    pub fn new(store: Store, default_rps: f64, sample_every_ms: i64, retention_ms: i64) -> Sim {
        let rx = Some(store.subscribe());
        let mut sim = Sim {
            store,
            rx,
            default_rps,
            retention_ms,
            sample_every_ms: sample_every_ms.max(1),
            sources: BTreeMap::new(),
            services: HashMap::new(),
            pods: HashMap::new(),
            pods_by_label: HashMap::new(),
            rs_owner: HashMap::new(),
            endpoints: HashMap::new(),
            flow_index: HashMap::new(),
            flows: Vec::new(),
            interned: HashMap::new(),
            rng: StdRng::seed_from_u64(0x5EED_F1A6),
            last_tick_ms: None,
            requests: 0,
        };
        sim.resync();
        sim
    }

    /// Rebuilds the cluster view from a full listing (start, or after missed events). Carried
    /// remainders of sources that still exist are kept.
    fn resync(&mut self) {
        self.services.clear();
        self.pods.clear();
        self.pods_by_label.clear();
        self.rs_owner.clear();
        self.endpoints.clear();
        let mut old = std::mem::take(&mut self.sources);
        let store = self.store.clone();
        for obj in store.list(&replicasets(), None) {
            self.apply(&replicasets(), EventType::Added, &obj);
        }
        for obj in store.list(&pods(), None) {
            self.apply(&pods(), EventType::Added, &obj);
        }
        for obj in store.list(&services(), None) {
            self.apply(&services(), EventType::Added, &obj);
        }
        for obj in store.list(&virtualservices(), None) {
            self.apply(&virtualservices(), EventType::Added, &obj);
        }
        for (k, s) in &mut self.sources {
            if let Some(o) = old.remove(k) {
                s.carry = o.carry;
                carry_routes(&o.routes, &mut s.routes);
            }
        }
    }

    /// Applies the store changes committed since the last call.
    fn drain_events(&mut self) {
        let mut lagged = false;
        if let Some(rx) = &mut self.rx {
            let mut batch = Vec::new();
            loop {
                match rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                    Err(broadcast::error::TryRecvError::Closed) => break,
                }
            }
            if !lagged {
                for ev in batch {
                    self.apply(&ev.resource, ev.kind, &ev.object);
                }
            }
        }
        if lagged {
            tracing::debug!("mesh: store events lagged, relisting");
            self.resync();
        }
    }

    fn apply(&mut self, r: &ResourceId, kind: EventType, obj: &Value) {
        let deleted = kind == EventType::Deleted;
        let (ns, name) = ns_name(obj);
        match (r.group.as_str(), r.plural.as_str()) {
            ("", "pods") => {
                self.remove_pod(&ns, &name);
                if !deleted {
                    let labels = string_map(&obj["metadata"]["labels"]);
                    let ready = obj["metadata"]["deletionTimestamp"].is_null()
                        && obj["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        });
                    let owner = obj["metadata"]["ownerReferences"]
                        .as_array()
                        .and_then(|os| {
                            os.iter()
                                .find(|o| o["controller"] == true)
                                .or_else(|| os.first())
                        })
                        .and_then(|o| {
                            Some((
                                o["kind"].as_str()?.to_string(),
                                o["name"].as_str()?.to_string(),
                            ))
                        });
                    for (k, v) in &labels {
                        self.pods_by_label
                            .entry((ns.clone(), k.clone(), v.clone()))
                            .or_default()
                            .insert(name.clone());
                    }
                    self.pods.insert(
                        (ns.clone(), name),
                        PodInfo {
                            labels,
                            ready,
                            behaviour: Behaviour::of(obj),
                            owner,
                        },
                    );
                }
                self.endpoints.remove(&ns);
            }
            ("apps", "replicasets") => {
                if deleted {
                    self.rs_owner.remove(&(ns.clone(), name));
                } else {
                    let dep = obj["metadata"]["ownerReferences"]
                        .as_array()
                        .and_then(|os| {
                            os.iter()
                                .find(|o| o["kind"] == "Deployment")
                                .and_then(|o| o["name"].as_str())
                                .map(str::to_string)
                        });
                    self.rs_owner.insert((ns.clone(), name), dep);
                }
                self.endpoints.remove(&ns);
            }
            ("", "services") => {
                let key = (SourceKey::Service, ns.clone(), name.clone());
                if deleted {
                    self.services.remove(&(ns.clone(), name));
                    self.sources.remove(&key);
                } else {
                    let selector = string_map(&obj["spec"]["selector"]);
                    match annotation(obj, ANN_RPS).map(parse_rps) {
                        Some(rps) => {
                            let routes = vec![Route {
                                host: name.clone(),
                                weight: 1.0,
                                carry: 0.0,
                                cursor: 0,
                            }];
                            self.upsert_source(key, ns.clone(), rps, routes);
                        }
                        None => {
                            self.sources.remove(&key);
                        }
                    }
                    self.services
                        .insert((ns.clone(), name), ServiceInfo { selector });
                }
                self.endpoints.remove(&ns);
            }
            ("networking.istio.io", "virtualservices") => {
                let key = (SourceKey::VirtualService, ns.clone(), name);
                if deleted {
                    self.sources.remove(&key);
                } else {
                    let rps = annotation(obj, ANN_RPS)
                        .map(parse_rps)
                        .unwrap_or(self.default_rps);
                    let routes = vs_routes(obj);
                    self.upsert_source(key, ns, rps, routes);
                }
            }
            _ => {}
        }
    }

    fn upsert_source(
        &mut self,
        key: SourceId,
        namespace: String,
        rps: f64,
        mut routes: Vec<Route>,
    ) {
        match self.sources.get_mut(&key) {
            Some(s) => {
                carry_routes(&s.routes, &mut routes);
                s.rps = rps;
                s.routes = routes;
            }
            None => {
                self.sources.insert(
                    key,
                    Source {
                        namespace,
                        rps,
                        carry: 0.0,
                        routes,
                    },
                );
            }
        }
    }

    fn remove_pod(&mut self, ns: &str, name: &str) {
        if let Some(old) = self.pods.remove(&(ns.to_string(), name.to_string())) {
            for (k, v) in old.labels {
                let key = (ns.to_string(), k, v);
                if let Some(set) = self.pods_by_label.get_mut(&key) {
                    set.remove(name);
                    if set.is_empty() {
                        self.pods_by_label.remove(&key);
                    }
                }
            }
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interned.insert(s.to_string(), a.clone());
        a
    }

    fn flow(&mut self, key: FlowKey) -> usize {
        if let Some(&i) = self.flow_index.get(&key) {
            return i;
        }
        let service_name = key
            .service_fqdn
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string();
        let pairs = [
            ("destination_service", key.service_fqdn.as_str()),
            ("destination_service_name", service_name.as_str()),
            ("destination_workload", key.workload.as_str()),
            ("destination_workload_namespace", key.workload_ns.as_str()),
            ("reporter", key.reporter),
            ("source_workload", key.source),
        ];
        let labels = pairs
            .iter()
            .map(|(k, v)| (self.intern(k), self.intern(v)))
            .collect();
        let i = self.flows.len();
        self.flows.push(Flow {
            labels,
            codes: Vec::new(),
            error_carry: 0,
            last_request_ms: i64::MIN,
            active: false,
        });
        self.flow_index.insert(key, i);
        i
    }

    fn workload_of(&self, ns: &str, pod_name: &str, pod: &PodInfo) -> String {
        match &pod.owner {
            Some((kind, rs)) if kind == "ReplicaSet" => {
                match self.rs_owner.get(&(ns.to_string(), rs.clone())) {
                    Some(Some(dep)) => dep.clone(),
                    Some(None) => rs.clone(),
                    // ReplicaSet not seen (yet): the app label is what Istio falls back to.
                    None => pod.labels.get("app").cloned().unwrap_or_else(|| rs.clone()),
                }
            }
            Some((_, owner)) => owner.clone(),
            None => pod
                .labels
                .get("app")
                .cloned()
                .unwrap_or_else(|| pod_name.to_string()),
        }
    }

    /// Ready endpoints of a Service (cached until something changes in its namespace).
    fn endpoints(&mut self, ns: &str, svc: &str) -> Arc<Vec<Endpoint>> {
        if let Some(e) = self.endpoints.get(ns).and_then(|m| m.get(svc)) {
            return e.clone();
        }
        let mut found: Vec<(String, Behaviour, String)> = Vec::new(); // (pod, behaviour, workload)
        if let Some(info) = self.services.get(&(ns.to_string(), svc.to_string()))
            && !info.selector.is_empty()
        {
            // Smallest posting list among the selector's pairs, then check the whole selector.
            let candidates = info
                .selector
                .iter()
                .map(|(k, v)| {
                    self.pods_by_label
                        .get(&(ns.to_string(), k.clone(), v.clone()))
                })
                .min_by_key(|s| s.map_or(0, BTreeSet::len))
                .flatten();
            for pod_name in candidates.into_iter().flatten() {
                let Some(pod) = self.pods.get(&(ns.to_string(), pod_name.clone())) else {
                    continue;
                };
                if pod.ready
                    && info
                        .selector
                        .iter()
                        .all(|(k, v)| pod.labels.get(k) == Some(v))
                {
                    found.push((
                        pod_name.clone(),
                        pod.behaviour,
                        self.workload_of(ns, pod_name, pod),
                    ));
                }
            }
        }
        let fqdn = format!("{svc}.{ns}.svc.cluster.local");
        let eps: Vec<Endpoint> = found
            .into_iter()
            .map(|(_, behaviour, workload)| {
                let flow = self.flow(FlowKey {
                    reporter: "destination",
                    workload,
                    workload_ns: ns.to_string(),
                    service_fqdn: fqdn.clone(),
                    source: SOURCE_WORKLOAD,
                });
                Endpoint { flow, behaviour }
            })
            .collect();
        let eps = Arc::new(eps);
        self.endpoints
            .entry(ns.to_string())
            .or_default()
            .insert(svc.to_string(), eps.clone());
        eps
    }

    /// Log-normal latency with the given mean.
    fn latency(&mut self, mean_ms: f64) -> f64 {
        let u1: f64 = 1.0 - self.rng.random::<f64>();
        let u2: f64 = self.rng.random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let mu = mean_ms.ln() - LATENCY_SIGMA * LATENCY_SIGMA / 2.0;
        (mu + LATENCY_SIGMA * z).exp()
    }

    fn record(&mut self, flow: usize, code: u16, latency_ms: f64, now: i64) {
        let Some(f) = self.flows.get_mut(flow) else {
            return;
        };
        f.last_request_ms = now;
        f.active = true;
        let stats = match f.codes.iter().position(|c| c.code == code) {
            Some(i) => &mut f.codes[i],
            None => {
                f.codes.push(CodeStats {
                    code,
                    requests: 0,
                    buckets: [0; 20],
                    sum_ms: 0.0,
                    refs: None,
                });
                f.codes.sort_by_key(|c| c.code);
                let Some(i) = f.codes.iter().position(|c| c.code == code) else {
                    return;
                };
                &mut f.codes[i]
            }
        };
        stats.requests += 1;
        stats.sum_ms += latency_ms;
        let b = DURATION_BUCKETS.partition_point(|&ub| ub < latency_ms);
        stats.buckets[b] += 1;
        self.requests += 1;
    }

    /// Sends `n` requests from a source in `from_ns` to `host`, starting the round-robin over
    /// the endpoints at `cursor`; returns the cursor to continue from.
    fn send(&mut self, from_ns: &str, host: &str, mut cursor: usize, n: u64, now: i64) -> usize {
        let (svc_ns, svc) = resolve_host(host, from_ns);
        let eps = self.endpoints(&svc_ns, &svc);
        if eps.is_empty() {
            // No healthy upstream: the client's proxy answers 503 itself.
            let flow = self.flow(FlowKey {
                reporter: "source",
                workload: "unknown".into(),
                workload_ns: "unknown".into(),
                service_fqdn: format!("{svc}.{svc_ns}.svc.cluster.local"),
                source: SOURCE_WORKLOAD,
            });
            for _ in 0..n {
                let l = self.latency(1.0);
                self.record(flow, 503, l, now);
            }
            return cursor;
        }
        for _ in 0..n {
            let ep = &eps[cursor % eps.len()];
            cursor = cursor.wrapping_add(1);
            let (flow, behaviour) = (ep.flow, ep.behaviour);
            let code = match self.flows.get_mut(flow) {
                Some(f) => {
                    f.error_carry += behaviour.error_ppm;
                    if f.error_carry >= 1_000_000 {
                        f.error_carry -= 1_000_000;
                        500
                    } else {
                        200
                    }
                }
                None => 200,
            };
            let l = self.latency(behaviour.latency_ms);
            self.record(flow, code, l, now);
        }
        cursor
    }

    /// One simulation step at `now` (ms since the epoch): apply store changes, send this
    /// step's requests, and record every active series into `tsdb` at `now`.
    pub fn tick(&mut self, now: i64, tsdb: &mut Tsdb) {
        self.step(now);
        self.sample(now, tsdb);
    }

    /// Applies store changes and sends the requests due since the previous step.
    pub fn step(&mut self, now: i64) {
        self.drain_events();
        let elapsed_ms = match self.last_tick_ms {
            Some(last) if now > last => (now - last).min(self.sample_every_ms * 10),
            Some(_) => 0,
            None => self.sample_every_ms,
        };
        self.last_tick_ms = Some(now);
        let secs = elapsed_ms as f64 / 1000.0;

        // Work out how many requests each route gets this step, then send them.
        let mut work: Vec<(SourceId, usize, String, String, usize, u64)> = Vec::new();
        for (key, src) in self.sources.iter_mut() {
            src.carry += src.rps * secs;
            let n = src.carry.floor();
            src.carry -= n;
            let total: f64 = src.routes.iter().map(|r| r.weight).sum();
            if total <= 0.0 || n <= 0.0 {
                continue;
            }
            for (ri, r) in src.routes.iter_mut().enumerate() {
                r.carry += n * r.weight / total;
                // Tolerate float noise so 0.1 * 10 counts as a whole request.
                let k = (r.carry + 1e-9).floor();
                r.carry = (r.carry - k).max(0.0);
                if k >= 1.0 {
                    work.push((
                        key.clone(),
                        ri,
                        src.namespace.clone(),
                        r.host.clone(),
                        r.cursor,
                        k as u64,
                    ));
                }
            }
        }
        for (key, ri, ns, host, cursor, n) in work {
            let cursor = self.send(&ns, &host, cursor, n, now);
            if let Some(r) = self
                .sources
                .get_mut(&key)
                .and_then(|s| s.routes.get_mut(ri))
            {
                r.cursor = cursor;
            }
        }
    }

    /// Records the current value of every active series into `tsdb` at `now` (like a scrape).
    pub fn sample(&mut self, now: i64, tsdb: &mut Tsdb) {
        if tsdb.gc(now) {
            for f in &mut self.flows {
                for c in &mut f.codes {
                    if c.refs.as_ref().is_some_and(|r| !tsdb.is_live(r[0])) {
                        c.refs = None;
                    }
                }
            }
        }
        let retention = self.retention_ms;
        for f in &mut self.flows {
            if !f.active {
                continue;
            }
            if now.saturating_sub(f.last_request_ms) > retention {
                f.active = false;
                for c in &mut f.codes {
                    c.refs = None;
                }
                continue;
            }
            for c in &mut f.codes {
                let values = c.values();
                let refs = c
                    .refs
                    .get_or_insert_with(|| Box::new(series_refs(&f.labels, c.code, tsdb)));
                for (r, v) in refs.iter().zip(values) {
                    tsdb.append(*r, now, v);
                }
            }
        }
    }

    /// Number of traffic sources (VirtualServices and annotated Services).
    pub fn num_sources(&self) -> usize {
        self.sources.len()
    }
}

fn parse_rps(s: &str) -> f64 {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .unwrap_or(0.0)
}

/// Keeps the remainders and round-robin positions of destinations that survive an update.
fn carry_routes(old: &[Route], new: &mut [Route]) {
    for r in new {
        if let Some(o) = old.iter().find(|o| o.host == r.host) {
            r.carry = o.carry;
            r.cursor = o.cursor;
        }
    }
}

/// `spec.http[0].route`: a single destination without a weight gets everything, otherwise a
/// missing weight is 0 (as Istio requires weights when there are several).
fn vs_routes(vs: &Value) -> Vec<Route> {
    let routes = vs["spec"]["http"][0]["route"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let single = routes.len() == 1;
    routes
        .iter()
        .filter_map(|r| {
            let host = r["destination"]["host"].as_str()?.to_string();
            let weight = match r["weight"].as_f64() {
                Some(w) if w.is_finite() && w >= 0.0 => w,
                Some(_) => 0.0,
                None if single => 100.0,
                None => 0.0,
            };
            Some(Route {
                host,
                weight,
                carry: 0.0,
                cursor: 0,
            })
        })
        .collect()
}

/// `name`, `name.ns`, `name.ns.svc[.cluster.local]` → (namespace, name).
fn resolve_host(host: &str, default_ns: &str) -> (String, String) {
    let mut parts = host.split('.');
    let name = parts.next().unwrap_or_default().to_string();
    let ns = parts.next().unwrap_or(default_ns).to_string();
    (ns, name)
}

fn series_refs(base: &[(Arc<str>, Arc<str>)], code: u16, tsdb: &mut Tsdb) -> [SeriesRef; 23] {
    let code = code.to_string();
    let make = |name: &str, le: Option<&str>| {
        let mut v: Vec<(Arc<str>, Arc<str>)> = base.to_vec();
        v.push((Arc::from("__name__"), Arc::from(name)));
        v.push((Arc::from("response_code"), Arc::from(code.as_str())));
        if let Some(le) = le {
            v.push((Arc::from("le"), Arc::from(le)));
        }
        Labels::from_vec(v)
    };
    let bucket = format!("{DURATION}_bucket");
    let sum = format!("{DURATION}_sum");
    let count = format!("{DURATION}_count");
    std::array::from_fn(|i| {
        let labels = match i {
            0 => make(REQUESTS_TOTAL, None),
            1..=20 => make(&bucket, Some(LE[i - 1])),
            21 => make(&sum, None),
            _ => make(&count, None),
        };
        tsdb.series_ref(&labels)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn hosts_resolve_in_the_sources_namespace_by_default() {
        assert_eq!(
            resolve_host("podinfo", "test"),
            ("test".into(), "podinfo".into())
        );
        assert_eq!(
            resolve_host("podinfo.prod", "test"),
            ("prod".into(), "podinfo".into())
        );
        assert_eq!(
            resolve_host("podinfo.prod.svc.cluster.local", "test"),
            ("prod".into(), "podinfo".into())
        );
    }

    #[test]
    fn route_weights_default_like_istio() {
        let vs =
            serde_json::json!({"spec": {"http": [{"route": [{"destination": {"host": "a"}}]}]}});
        assert_eq!(vs_routes(&vs)[0].weight, 100.0);
        let vs = serde_json::json!({"spec": {"http": [{"route": [
            {"destination": {"host": "a"}, "weight": 90},
            {"destination": {"host": "b"}}]}]}});
        let r = vs_routes(&vs);
        assert_eq!((r[0].weight, r[1].weight), (90.0, 0.0));
        assert!(vs_routes(&serde_json::json!({"spec": {}})).is_empty());
    }

    #[test]
    fn behaviour_from_annotations_with_safe_defaults() {
        let pod = |a: Value| serde_json::json!({"metadata": {"annotations": a}});
        let b = Behaviour::of(&pod(
            serde_json::json!({ANN_ERROR_RATE: "0.3", ANN_LATENCY_MS: "150"}),
        ));
        assert_eq!(
            b,
            Behaviour {
                error_ppm: 300_000,
                latency_ms: 150.0
            }
        );
        let b = Behaviour::of(&pod(
            serde_json::json!({ANN_ERROR_RATE: "7", ANN_LATENCY_MS: "-1"}),
        ));
        assert_eq!(
            b,
            Behaviour {
                error_ppm: 1_000_000,
                latency_ms: DEFAULT_LATENCY_MS
            }
        );
        let b = Behaviour::of(&pod(serde_json::json!({ANN_ERROR_RATE: "lots"})));
        assert_eq!(b.error_ppm, 0);
    }

    #[test]
    fn latency_is_log_normal_around_the_mean() {
        let mut sim = Sim::new(Store::default(), 10.0, 1000, 60_000);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| sim.latency(1000.0)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        assert!((mean - 1000.0).abs() < 15.0, "mean {mean}");
        let mut sorted = xs.clone();
        sorted.sort_by(f64::total_cmp);
        let p99 = sorted[n * 99 / 100];
        assert!(p99 > 1500.0 && p99 < 2000.0, "p99 {p99}");
        assert!(xs.iter().all(|x| *x > 0.0));
    }
}
