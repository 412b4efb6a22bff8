//! API faults (issue 7): while 10 % of the operator's API requests fail with 500, 503 or 429
//! (with `Retry-After`), 1 % of its writes fail with 409, every watch is cut after 5 s and the
//! watch history is compacted every 5 s, 20 canaries initialize and run at once — 10 promotions,
//! 5 rollbacks on failed metric checks, 5 rollbacks on the progress deadline — and each reaches
//! its correct outcome within a bounded time, with the reliability invariants held on every
//! change.
//!
//! The test's own writes go straight into the testbed store (no faults on them); only the operator
//! talks to the faulty API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use flagger_testbed::faults::FaultConfig;
use flagger_testbed::store::{ResourceId, Store};
use harness::{Cluster, Operator, podinfo, serial};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

const READY: Duration = Duration::from_millis(300);
const CANARIES: usize = 20;
const V0: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const V1: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
/// Bound on the time from the changes to the last canary's final phase.
const CONVERGE_WITHIN: Duration = Duration::from_secs(150);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Promotion,
    MetricsRollback,
    DeadlineRollback,
}

fn kind(i: usize) -> Kind {
    match i % 4 {
        1 => Kind::MetricsRollback,
        3 => Kind::DeadlineRollback,
        _ => Kind::Promotion,
    }
}

fn ns(i: usize) -> String {
    format!("faults-{i:02}")
}

fn canaries() -> ResourceId {
    ResourceId::new("flagger.app", "canaries")
}
fn deployments() -> ResourceId {
    ResourceId::new("apps", "deployments")
}

fn canary(i: usize, metrics_url: &str) -> Value {
    let mut analysis = json!({"interval": "1s", "threshold": 2, "maxWeight": 30, "stepWeight": 10});
    if kind(i) == Kind::MetricsRollback {
        analysis["metrics"] = json!([{
            "name": "request-success-rate",
            "thresholdRange": {"min": 99},
            "interval": "10s"
        }]);
    }
    json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": ns(i)},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "progressDeadlineSeconds": if kind(i) == Kind::DeadlineRollback { 5 } else { 60 },
            "metricsServer": metrics_url,
            "service": {"port": 9898},
            "analysis": analysis
        }
    })
}

fn get(store: &Store, r: &ResourceId, ns: &str, name: &str) -> Option<Value> {
    store.get(r, ns, name).map(|o| (*o).clone())
}

fn phase(store: &Store, i: usize) -> String {
    get(store, &canaries(), &ns(i), "podinfo")
        .and_then(|c| c["status"]["phase"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn vs_weights(store: &Store, ns: &str) -> Option<(i64, i64)> {
    let vs = get(
        store,
        &ResourceId::new("networking.istio.io", "virtualservices"),
        ns,
        "podinfo",
    )?;
    let route = vs["spec"]["http"][0]["route"].as_array()?.clone();
    let weight = |host: &str| {
        route
            .iter()
            .find(|r| r["destination"]["host"] == host)
            .and_then(|r| r["weight"].as_i64())
            .unwrap_or(0)
    };
    Some((weight("podinfo-primary"), weight("podinfo-canary")))
}

/// Waits (reading the store, which has no faults) until `done` holds for every canary.
async fn wait_all(
    cluster: &Cluster,
    op: &Operator,
    what: &str,
    within: Duration,
    done: impl Fn(usize) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let pending: Vec<usize> = (0..CANARIES).filter(|i| !done(*i)).collect();
        if pending.is_empty() {
            return started.elapsed();
        }
        if started.elapsed() > within {
            let mut dump = String::new();
            for i in pending.iter().take(3) {
                dump.push_str(&format!(
                    "--- {} ({:?})\n{}\n",
                    ns(*i),
                    kind(*i),
                    cluster.describe(&ns(*i), "podinfo").await
                ));
            }
            panic!(
                "{what}: {} canaries not there after {within:?}: {:?}\n{dump}\nlast operator logs:\n{}",
                pending.len(),
                pending.iter().map(|i| ns(*i)).collect::<Vec<_>>(),
                op.tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_canaries_reach_their_outcome_through_api_faults() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    let store = cluster.testbed.store().clone();
    for i in 0..CANARIES {
        cluster.namespace(&ns(i)).await;
        cluster
            .create::<Deployment>(&ns(i), podinfo(&ns(i), V0))
            .await;
    }
    let faults = cluster.testbed.faults();
    faults
        .set(FaultConfig {
            error_rate: 0.10,
            error_codes: vec![500, 503, 429],
            conflict_rate: 0.01,
            watch_close_seconds: 5.0,
            ..FaultConfig::default()
        })
        .unwrap();
    let compactor = {
        let faults = faults.clone();
        tokio::spawn(async move {
            let mut compactions = 0u32;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                faults.compact();
                compactions += 1;
                if compactions > 1000 {
                    return;
                }
            }
        })
    };
    cluster.testbed.stats().reset();
    let started = Instant::now();
    let op = Operator::start(&cluster, &[]).await;
    let metrics_url = cluster.testbed.metrics_url();
    for i in 0..CANARIES {
        store.create(&canaries(), canary(i, &metrics_url)).unwrap();
    }
    let init = wait_all(&cluster, &op, "Initialized", CONVERGE_WITHIN, |i| {
        phase(&store, i) == "Initialized"
    })
    .await;

    for i in 0..CANARIES {
        let annotations = match kind(i) {
            Kind::Promotion => json!({}),
            Kind::MetricsRollback => json!({"testbed.flagger.app/error-rate": "0.5"}),
            Kind::DeadlineRollback => json!({"testbed.flagger.app/never-ready": "true"}),
        };
        store
            .modify(&deployments(), &ns(i), "podinfo", false, |d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(V1);
                d["spec"]["template"]["metadata"]["annotations"] = annotations;
            })
            .unwrap();
    }
    let converge = wait_all(&cluster, &op, "final phase", CONVERGE_WITHIN, |i| {
        let p = phase(&store, i);
        match kind(i) {
            Kind::Promotion => p == "Succeeded",
            Kind::MetricsRollback | Kind::DeadlineRollback => p == "Failed",
        }
    })
    .await;
    let stats = cluster.testbed.stats().snapshot();
    faults.clear();
    compactor.abort();

    for i in 0..CANARIES {
        let n = ns(i);
        let c = get(&store, &canaries(), &n, "podinfo").unwrap();
        let primary = get(&store, &deployments(), &n, "podinfo-primary").unwrap();
        let target = get(&store, &deployments(), &n, "podinfo").unwrap();
        let image = primary["spec"]["template"]["spec"]["containers"][0]["image"].clone();
        let expected_image = if kind(i) == Kind::Promotion { V1 } else { V0 };
        assert_eq!(image, expected_image, "{n} ({:?})", kind(i));
        assert_eq!(
            vs_weights(&store, &n),
            Some((100, 0)),
            "{n} ({:?})",
            kind(i)
        );
        assert_eq!(target["spec"]["replicas"], 0, "{n} ({:?})", kind(i));
        if kind(i) == Kind::MetricsRollback {
            assert_eq!(c["status"]["failedChecks"], 2, "{n}: {}", c["status"]);
        }
    }
    let report = cluster.invariants.finish();
    assert!(
        report.violations.is_empty(),
        "invariants broken under API faults:\n{}",
        report
            .violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let injected = stats.faults_injected;
    assert!(
        injected as f64 > stats.total as f64 * 0.05,
        "too few faults to mean anything: {injected} of {}",
        stats.total
    );
    for code in ["429", "500", "503", "409"] {
        assert!(
            stats.faults_by_code.get(code).copied().unwrap_or(0) > 0,
            "no {code} injected: {:?}",
            stats.faults_by_code
        );
    }
    println!(
        "API faults: {CANARIES} canaries (10 promotions, 5 metric rollbacks, 5 deadline rollbacks); \
         {} operator requests, {injected} faults injected ({:.1} %: {:?}), requests by verb {:?}; \
         all initialized {:.1} s after start, all final {:.1} s after the change ({:.1} s in all); \
         {} changes checked by the invariants, 0 violations",
        stats.total,
        injected as f64 * 100.0 / stats.total.max(1) as f64,
        stats.faults_by_code,
        stats.by_verb,
        init.as_secs_f64(),
        converge.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        report.changes_checked
    );
}
