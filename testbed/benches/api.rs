//! API benchmark of the testbed (not a timed test; it prints figures):
//! - LIST latency of 10,000 objects over HTTP, as JSON and as a `meta.k8s.io` Table
//!   (ConfigMaps with built-in columns, Canaries with CRD printer columns);
//! - watch fan-out: 1,000 open watches, one write, time until every watcher has the event;
//! - resident memory (VmRSS) of the process holding the testbed, empty and with the objects.
//!
//! Run: `cargo bench -p flagger-testbed --bench api` (`BENCH_OBJECTS`, `BENCH_WATCHERS` and
//! `BENCH_ROUNDS` override the sizes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagger_testbed::store::ResourceId;
use flagger_testbed::{Config, Testbed};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process in KiB.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// GETs `path` and reads the whole body; returns (elapsed, bytes).
async fn timed_get(client: &kube::Client, path: &str, accept: &str) -> (Duration, usize) {
    let req = http::Request::get(path)
        .header("Accept", accept)
        .body(kube::client::Body::empty())
        .unwrap();
    let start = Instant::now();
    let resp = client.send(req).await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), usize::MAX)
        .await
        .unwrap();
    (start.elapsed(), body.len())
}

struct Stats {
    median: Duration,
    p95: Duration,
    max: Duration,
}

fn stats(mut xs: Vec<Duration>) -> Stats {
    xs.sort();
    let at = |q: f64| xs[((xs.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        median: at(0.5),
        p95: at(0.95),
        max: *xs.last().unwrap(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let objects = env_usize("BENCH_OBJECTS", 10_000);
    let watchers = env_usize("BENCH_WATCHERS", 1_000);
    let rounds = env_usize("BENCH_ROUNDS", 20);
    // kube links rustls without choosing a crypto provider; Err = one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let rss_start = vm_rss_kib();
    let tb = Testbed::start(Config::default()).await.unwrap();
    let client = tb.client().unwrap();
    let store = tb.store().clone();
    let rss_empty = vm_rss_kib();

    // Objects: ConfigMaps (built-in) and Canaries (a CRD with printer columns), in one namespace.
    store
        .create(
            &ResourceId::new("", "namespaces"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
        )
        .unwrap();
    let crd: serde_json::Value =
        serde_saphyr::from_str(include_str!("../tests/fixtures/canary-crd.yaml")).unwrap();
    store
        .create(
            &ResourceId::new("apiextensions.k8s.io", "customresourcedefinitions"),
            crd,
        )
        .unwrap();
    let wait_crd = Instant::now();
    while tb
        .registry()
        .resolve("flagger.app", "v1beta1", "canaries")
        .is_none()
    {
        assert!(
            wait_crd.elapsed() < Duration::from_secs(5),
            "CRD not served"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cms = ResourceId::new("", "configmaps");
    let canaries = ResourceId::new("flagger.app", "canaries");
    let fill = Instant::now();
    for i in 0..objects {
        store
            .create(
                &cms,
                json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("cm-{i:05}"), "namespace": "bench",
                                 "labels": {"app": "podinfo", "shard": format!("{}", i % 10)}},
                    "data": {"color": "blue", "message": "greetings from podinfo", "index": i.to_string()}
                }),
            )
            .unwrap();
        store
            .create(
                &canaries,
                json!({
                    "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                    "metadata": {"name": format!("canary-{i:05}"), "namespace": "bench"},
                    "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("app-{i}")},
                             "service": {"port": 9898},
                             "analysis": {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10}},
                    "status": {"phase": "Succeeded", "canaryWeight": 0, "failedChecks": 0,
                               "lastTransitionTime": "2019-01-16T14:05:07Z"}
                }),
            )
            .unwrap();
    }
    let fill_time = fill.elapsed();
    let rss_full = vm_rss_kib();

    // LIST latency.
    let mut list_rows = Vec::new();
    for (what, path, accept) in [
        (
            "ConfigMaps JSON",
            "/api/v1/namespaces/bench/configmaps",
            "application/json",
        ),
        (
            "ConfigMaps Table",
            "/api/v1/namespaces/bench/configmaps",
            TABLE,
        ),
        (
            "Canaries JSON",
            "/apis/flagger.app/v1beta1/namespaces/bench/canaries",
            "application/json",
        ),
        (
            "Canaries Table",
            "/apis/flagger.app/v1beta1/namespaces/bench/canaries",
            TABLE,
        ),
    ] {
        // One warm-up request, then the measured rounds.
        let (_, bytes) = timed_get(&client, path, accept).await;
        let mut times = Vec::new();
        for _ in 0..rounds {
            times.push(timed_get(&client, path, accept).await.0);
        }
        list_rows.push((what, bytes, stats(times)));
    }

    // Watch fan-out: every watcher reports when it sees the one write.
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "bench");
    let rv = store.current_rv().to_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let open = Instant::now();
    let mut streams = Vec::new();
    for _ in 0..watchers {
        let wp = WatchParams::default().fields("metadata.name=fanout");
        streams.push(api.watch(&wp, &rv).await.unwrap().boxed());
    }
    let open_time = open.elapsed();
    let rss_watching = vm_rss_kib();
    let ready = Arc::new(tokio::sync::Barrier::new(watchers + 1));
    for mut s in streams {
        let tx = tx.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            ready.wait().await;
            while let Ok(Some(ev)) = s.try_next().await {
                if let WatchEvent::Added(cm) = ev
                    && cm.metadata.name.as_deref() == Some("fanout")
                {
                    let _ = tx.send(Instant::now());
                    break;
                }
            }
        });
    }
    ready.wait().await;
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "fanout", "namespace": "bench"}, "data": {"k": "v"}
    }))
    .unwrap();
    let write = Instant::now();
    api.create(&PostParams::default(), &cm).await.unwrap();
    let mut arrivals = Vec::new();
    while arrivals.len() < watchers {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(t)) => arrivals.push(t.duration_since(write)),
            _ => break,
        }
    }
    let received = arrivals.len();
    let fanout = stats(arrivals);

    println!();
    let profile = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    };
    println!(
        "flagger-testbed API benchmark ({objects} objects per type, {rounds} rounds, {profile})"
    );
    println!();
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>12}",
        "LIST", "median", "p95", "max", "body"
    );
    for (what, bytes, s) in &list_rows {
        println!(
            "{:<22} {:>10} {:>10} {:>10} {:>9} KiB",
            what,
            ms(s.median),
            ms(s.p95),
            ms(s.max),
            bytes / 1024
        );
    }
    println!();
    println!(
        "watch fan-out: {received}/{watchers} watchers got the write; all within {}, median {}, p95 {} (opening the watches took {})",
        ms(fanout.max),
        ms(fanout.median),
        ms(fanout.p95),
        ms(open_time)
    );
    println!();
    println!("{:<44} {:>10}", "resident memory (VmRSS)", "MiB");
    for (what, kib) in [
        ("process before the testbed", rss_start),
        ("testbed started, empty", rss_empty),
        (
            &*format!("with {objects} ConfigMaps + {objects} Canaries"),
            rss_full,
        ),
        (&*format!("plus {watchers} open watches"), rss_watching),
    ] {
        println!("{:<44} {:>10.1}", what, kib as f64 / 1024.0);
    }
    println!(
        "(storing the {} objects took {})",
        2 * objects,
        ms(fill_time)
    );
    assert_eq!(received, watchers, "some watchers never saw the write");
    tb.shutdown().await;
}
