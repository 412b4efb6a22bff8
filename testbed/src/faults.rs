//! Fault injection and request statistics (owner: testbed-api helper).
//!
//! [`Faults`] decides, per API request, whether to fail it with one of the configured codes
//! (`409`, `429` with `Retry-After`, `500`, `502`, `503`, `504`), whether to answer a write with a
//! `409 Conflict` on top of that (`conflictRate`), how much latency to add, and after how
//! long watch streams are cut. It is shared by the HTTP server (`POST /testbed/faults`, body: a
//! [`FaultConfig`] in camelCase JSON, plus `"compact": true` to drop the watch history) and the
//! library (`Testbed::faults()`). Faults apply to resource requests under `/api` and `/apis` only,
//! never to discovery, `/testbed/*` or in-process controllers. A 409 is injected on writes only
//! (a conflict on a read does not exist on a real server).
//!
//! [`Stats`] counts requests by verb (GET, LIST, WATCH, POST, PUT, PATCH, DELETE), by resource
//! (`deployments.apps`), by verb and resource, and by User-Agent (`GET /testbed/stats`); and per
//! [`ApiCall`] — what an RBAC authorizer is asked (verb, group, resource, subresource, namespace)
//! and who asked (User-Agent) — so a test can check a Role grants everything a client used.
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::store::Store;

/// The status codes that can be injected.
pub const INJECTABLE_CODES: &[u16] = &[409, 429, 500, 502, 503, 504];

/// What to inject. Defaults inject nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Fraction of requests (0.0..=1.0) that fail with one of `error_codes`.
    pub error_rate: f64,
    /// Codes to choose from (uniformly); empty means 500.
    pub error_codes: Vec<u16>,
    /// Only these verbs (GET, LIST, WATCH, POST, PUT, PATCH, DELETE) fail; empty means all.
    pub verbs: Vec<String>,
    /// Fraction of writes (POST, PUT, PATCH, DELETE) that fail with 409 Conflict, decided after
    /// (and independently of) `error_rate`, whatever `verbs` says.
    pub conflict_rate: f64,
    /// Added to every resource request.
    pub latency_ms: u64,
    /// Watch streams are closed after this many seconds (0 = never).
    pub watch_close_seconds: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    #[error("errorRate: must be between 0 and 1, got {0}")]
    ErrorRate(f64),
    #[error("conflictRate: must be between 0 and 1, got {0}")]
    ConflictRate(f64),
    #[error("errorCodes: {0} cannot be injected (supported: 409, 429, 500, 502, 503, 504)")]
    Code(u16),
    #[error("verbs: unknown verb {0:?} (supported: GET, LIST, WATCH, POST, PUT, PATCH, DELETE)")]
    Verb(String),
    #[error("watchCloseSeconds: must be a finite number >= 0, got {0}")]
    WatchClose(f64),
    #[error("latencyMs: must be at most 60000, got {0}")]
    Latency(u64),
}

const VERBS: &[&str] = &["GET", "LIST", "WATCH", "POST", "PUT", "PATCH", "DELETE"];

impl FaultConfig {
    pub fn validate(&self) -> Result<(), FaultError> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(FaultError::ErrorRate(self.error_rate));
        }
        if !(0.0..=1.0).contains(&self.conflict_rate) {
            return Err(FaultError::ConflictRate(self.conflict_rate));
        }
        if let Some(c) = self
            .error_codes
            .iter()
            .find(|c| !INJECTABLE_CODES.contains(c))
        {
            return Err(FaultError::Code(*c));
        }
        if let Some(v) = self.verbs.iter().find(|v| !VERBS.contains(&v.as_str())) {
            return Err(FaultError::Verb(v.clone()));
        }
        if !self.watch_close_seconds.is_finite() || self.watch_close_seconds < 0.0 {
            return Err(FaultError::WatchClose(self.watch_close_seconds));
        }
        if self.latency_ms > 60_000 {
            return Err(FaultError::Latency(self.latency_ms));
        }
        Ok(())
    }
}

/// An error to answer instead of serving the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    pub code: u16,
}

/// Shared fault switchboard; cheap to clone.
#[derive(Clone)]
pub struct Faults {
    config: Arc<Mutex<FaultConfig>>,
    store: Store,
}

impl Faults {
    pub fn new(store: Store) -> Self {
        Self {
            config: Arc::new(Mutex::new(FaultConfig::default())),
            store,
        }
    }

    fn lock(&self) -> MutexGuard<'_, FaultConfig> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the configuration (validated first; unchanged on error).
    pub fn set(&self, cfg: FaultConfig) -> Result<(), FaultError> {
        cfg.validate()?;
        *self.lock() = cfg;
        Ok(())
    }

    pub fn get(&self) -> FaultConfig {
        self.lock().clone()
    }

    /// Stops injecting anything.
    pub fn clear(&self) {
        *self.lock() = FaultConfig::default();
    }

    /// Drops the store's watch history: watches resumed from an older resourceVersion get 410.
    pub fn compact(&self) {
        self.store.compact();
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.lock().latency_ms)
    }

    /// How long a watch may stay open before the server cuts it.
    pub fn watch_close_after(&self) -> Option<Duration> {
        let s = self.lock().watch_close_seconds;
        (s > 0.0).then(|| Duration::from_secs_f64(s))
    }

    /// Whether to fail a request with this verb, and how.
    pub fn decide(&self, verb: &str) -> Option<InjectedFault> {
        let cfg = self.lock();
        let is_write = matches!(verb, "POST" | "PUT" | "PATCH" | "DELETE");
        let error = Self::decide_error(&cfg, verb, is_write);
        if error.is_some() {
            return error;
        }
        (is_write && cfg.conflict_rate > 0.0 && rand::rng().random_bool(cfg.conflict_rate))
            .then_some(InjectedFault { code: 409 })
    }

    fn decide_error(cfg: &FaultConfig, verb: &str, is_write: bool) -> Option<InjectedFault> {
        if cfg.error_rate <= 0.0 || !(cfg.verbs.is_empty() || cfg.verbs.iter().any(|v| v == verb)) {
            return None;
        }
        let codes: Vec<u16> = if cfg.error_codes.is_empty() {
            vec![500]
        } else {
            cfg.error_codes
                .iter()
                .copied()
                .filter(|c| *c != 409 || is_write)
                .collect()
        };
        if codes.is_empty() {
            return None;
        }
        let mut rng = rand::rng();
        if !rng.random_bool(cfg.error_rate) {
            return None;
        }
        Some(InjectedFault {
            code: codes[rng.random_range(0..codes.len())],
        })
    }
}

/// The attributes RBAC authorizes a resource request by, and the client's User-Agent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiCall {
    /// RBAC verb: get, list, watch, create, update, patch, delete or deletecollection.
    pub verb: String,
    /// API group, `""` for the core group.
    pub group: String,
    /// Plural resource name (`deployments`).
    pub resource: String,
    /// `status`, `scale`, or `""`.
    pub subresource: String,
    /// Namespace of the request, `""` for cluster-wide ones.
    pub namespace: String,
    pub user_agent: String,
}

/// How often one [`ApiCall`] was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallCount {
    #[serde(flatten)]
    pub call: ApiCall,
    pub count: u64,
}

/// Request counters (a snapshot is what `GET /testbed/stats` returns).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    pub total: u64,
    pub by_verb: BTreeMap<String, u64>,
    pub by_resource: BTreeMap<String, u64>,
    /// `"PATCH deployments.apps"` -> count.
    pub by_verb_and_resource: BTreeMap<String, u64>,
    pub by_user_agent: BTreeMap<String, u64>,
    /// User-Agent -> `"PATCH deployments.apps"` -> count: what each client did.
    #[serde(default)]
    pub by_user_agent_and_request: BTreeMap<String, BTreeMap<String, u64>>,
    /// Requests answered with an injected error.
    pub faults_injected: u64,
    /// Injected errors by status code (`"429"` -> count).
    pub faults_by_code: BTreeMap<String, u64>,
    /// Every distinct call, in [`ApiCall`] order.
    pub calls: Vec<CallCount>,
}

#[derive(Default)]
struct Counters {
    totals: StatsSnapshot,
    calls: BTreeMap<ApiCall, u64>,
}

#[derive(Clone, Default)]
pub struct Stats(Arc<Mutex<Counters>>);

impl Stats {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request; `verb` is the stats name (GET, LIST, WATCH, POST, PUT, PATCH, DELETE).
    pub fn record(&self, verb: &str, call: ApiCall) {
        let resource = if call.group.is_empty() {
            call.resource.clone()
        } else {
            format!("{}.{}", call.resource, call.group)
        };
        let user_agent = call.user_agent.clone();
        let mut counters = self.lock();
        *counters.calls.entry(call).or_default() += 1;
        let s = &mut counters.totals;
        s.total += 1;
        *s.by_verb.entry(verb.to_string()).or_default() += 1;
        *s.by_resource.entry(resource.to_string()).or_default() += 1;
        *s.by_verb_and_resource
            .entry(format!("{verb} {resource}"))
            .or_default() += 1;
        *s.by_user_agent.entry(user_agent.to_string()).or_default() += 1;
        *s.by_user_agent_and_request
            .entry(user_agent.to_string())
            .or_default()
            .entry(format!("{verb} {resource}"))
            .or_default() += 1;
    }

    pub fn record_fault(&self, code: u16) {
        let s = &mut self.lock().totals;
        s.faults_injected += 1;
        *s.faults_by_code.entry(code.to_string()).or_default() += 1;
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let counters = self.lock();
        StatsSnapshot {
            calls: counters
                .calls
                .iter()
                .map(|(call, count)| CallCount {
                    call: call.clone(),
                    count: *count,
                })
                .collect(),
            ..counters.totals.clone()
        }
    }

    pub fn reset(&self) {
        *self.lock() = Counters::default();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn stats_tell_clients_apart_by_user_agent() {
        let stats = Stats::default();
        let call = |verb: &str, group: &str, resource: &str, ua: &str| ApiCall {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: "default".into(),
            user_agent: ua.into(),
        };
        stats.record("GET", call("get", "coordination.k8s.io", "leases", "a"));
        stats.record("PUT", call("update", "coordination.k8s.io", "leases", "a"));
        stats.record("PATCH", call("patch", "apps", "deployments", "b"));
        stats.record("PATCH", call("patch", "apps", "deployments", "b"));
        let s = stats.snapshot();
        assert_eq!(s.by_user_agent["a"], 2);
        let a = &s.by_user_agent_and_request["a"];
        assert_eq!(a["GET leases.coordination.k8s.io"], 1);
        assert_eq!(a["PUT leases.coordination.k8s.io"], 1);
        assert_eq!(
            s.by_user_agent_and_request["b"]["PATCH deployments.apps"],
            2
        );
        assert_eq!(s.by_user_agent_and_request["b"].len(), 1);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let f = Faults::new(Store::default());
        let bad = [
            (
                FaultConfig {
                    error_rate: 1.5,
                    ..Default::default()
                },
                "errorRate",
            ),
            (
                FaultConfig {
                    error_codes: vec![404],
                    ..Default::default()
                },
                "errorCodes",
            ),
            (
                FaultConfig {
                    verbs: vec!["FETCH".into()],
                    ..Default::default()
                },
                "verbs",
            ),
            (
                FaultConfig {
                    conflict_rate: -0.1,
                    ..Default::default()
                },
                "conflictRate",
            ),
            (
                FaultConfig {
                    watch_close_seconds: -1.0,
                    ..Default::default()
                },
                "watchCloseSeconds",
            ),
        ];
        for (cfg, field) in bad {
            let err = f.set(cfg).unwrap_err().to_string();
            assert!(err.starts_with(field), "{err}");
        }
        assert_eq!(f.get(), FaultConfig::default());
    }

    #[test]
    fn rate_and_verbs_are_honoured() {
        let f = Faults::new(Store::default());
        assert_eq!(f.decide("GET"), None);
        f.set(FaultConfig {
            error_rate: 1.0,
            error_codes: vec![409],
            verbs: vec![],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.decide("GET"), None, "no conflicts on reads");
        assert_eq!(f.decide("PUT"), Some(InjectedFault { code: 409 }));
        f.set(FaultConfig {
            error_rate: 1.0,
            verbs: vec!["LIST".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.decide("GET"), None);
        assert_eq!(f.decide("LIST"), Some(InjectedFault { code: 500 }));
        f.set(FaultConfig {
            error_rate: 0.3,
            error_codes: vec![503],
            ..Default::default()
        })
        .unwrap();
        let hits = (0..10_000).filter(|_| f.decide("GET").is_some()).count();
        assert!((2500..3500).contains(&hits), "{hits}");
    }

    #[test]
    fn conflicts_come_on_top_of_errors_and_only_on_writes() {
        let f = Faults::new(Store::default());
        f.set(FaultConfig {
            error_rate: 0.1,
            error_codes: vec![500, 503, 429],
            conflict_rate: 0.05,
            ..Default::default()
        })
        .unwrap();
        let mut codes = std::collections::BTreeMap::<u16, u32>::new();
        for _ in 0..20_000 {
            if let Some(fault) = f.decide("PATCH") {
                *codes.entry(fault.code).or_default() += 1;
            }
        }
        let errors: u32 = [500, 503, 429]
            .iter()
            .map(|c| codes.get(c).copied().unwrap_or(0))
            .sum();
        // 10% errors; 5% of the remaining 90% conflicts.
        assert!((1700..2300).contains(&errors), "{codes:?}");
        let conflicts = codes.get(&409).copied().unwrap_or(0);
        assert!((650..1150).contains(&conflicts), "{codes:?}");
        let reads = (0..5_000)
            .filter_map(|_| f.decide("GET"))
            .filter(|x| x.code == 409)
            .count();
        assert_eq!(reads, 0, "no conflicts on reads");
        f.set(FaultConfig {
            conflict_rate: 1.0,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.decide("PUT"), Some(InjectedFault { code: 409 }));
        assert_eq!(f.decide("LIST"), None);
    }

    #[test]
    fn calls_are_counted_by_rbac_attributes_and_user_agent() {
        let stats = Stats::default();
        let call = |verb: &str, sub: &str, ua: &str| ApiCall {
            verb: verb.into(),
            group: "flagger.app".into(),
            resource: "canaries".into(),
            subresource: sub.into(),
            namespace: "test".into(),
            user_agent: ua.into(),
        };
        stats.record("PATCH", call("patch", "status", "flagger"));
        stats.record("PATCH", call("patch", "status", "flagger"));
        stats.record("GET", call("get", "", "kubectl"));
        let s = stats.snapshot();
        assert_eq!(s.by_verb_and_resource["PATCH canaries.flagger.app"], 2);
        assert_eq!(
            s.calls,
            vec![
                CallCount {
                    call: call("get", "", "kubectl"),
                    count: 1
                },
                CallCount {
                    call: call("patch", "status", "flagger"),
                    count: 2
                },
            ]
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["calls"][1]["subresource"], "status");
        assert_eq!(json["calls"][1]["userAgent"], "flagger");
        assert_eq!(json["calls"][1]["count"], 2);
        stats.reset();
        assert!(stats.snapshot().calls.is_empty());
    }
}
