//! Acceptance for the query API (issue 3, item 2): the same queries, evaluated by the mesh's own
//! Prometheus API and by a real Prometheus (the Debian package) scraping the mesh's `/metrics`
//! every second, agree within 1%.
//!
//! To compare like with like, both stores must hold the same samples. The test learns the phase
//! of Prometheus's scrapes and drives the mesh's clock itself: each traffic step runs halfway
//! between two scrapes and the mesh records its samples with the timestamp of the next scrape,
//! which then reads the same counters. Queries are evaluated 250 ms after a scrape.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod mesh_support;

use flagger_testbed::mesh::{Mesh, MeshConfig};
use flagger_testbed::store::Store;
use mesh_support::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(target: &str) -> Prometheus {
    let bin = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mesh\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `{bin}` ({e}): install the Debian package `prometheus` (scripts/install-deps) or set PROMETHEUS")
        });
    Prometheus {
        child,
        addr,
        _dir: dir,
    }
}

fn get_json(addr: &str, path: &str) -> Option<Value> {
    let (status, body) = std::panic::catch_unwind(|| http(addr, "GET", path, None)).ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

fn query_at(addr: &str, q: &str, t_ms: i64) -> Value {
    let path = format!(
        "/api/v1/query?query={}&time={}.{:03}",
        urlencode(q),
        t_ms / 1000,
        t_ms % 1000
    );
    let (status, body) = http(addr, "GET", &path, None);
    assert_eq!(status, 200, "{addr} {q}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{addr} {q}: {body}");
    v["data"].clone()
}

/// Result as labels (without the `job`/`instance` labels a scrape adds) → value.
fn normalise(data: &Value) -> (String, BTreeMap<String, f64>) {
    let kind = data["resultType"].as_str().unwrap().to_string();
    let parse = |s: &Value| -> f64 {
        match s.as_str().unwrap() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            x => x.parse().unwrap(),
        }
    };
    let mut out = BTreeMap::new();
    if kind == "scalar" {
        out.insert(String::new(), parse(&data["result"][1]));
    } else {
        for r in data["result"].as_array().unwrap() {
            let mut m = r["metric"].as_object().unwrap().clone();
            m.remove("job");
            m.remove("instance");
            out.insert(serde_json::to_string(&m).unwrap(), parse(&r["value"][1]));
        }
    }
    (kind, out)
}

fn agree(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 0.01 * a.abs().max(b.abs())
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

const NS: &str = "test";

fn queries() -> Vec<String> {
    let mut q = vec![
        success_rate_query(NS, "podinfo", "1m"),
        success_rate_query(NS, "podinfo-primary", "1m"),
        p99_query(NS, "podinfo", "1m"),
        p99_query(NS, "podinfo-primary", "1m"),
        success_rate_query(NS, "podinfo", "10s"),
        p99_query(NS, "podinfo", "15s"),
    ];
    q.extend(
        [
            r#"sum by (destination_workload, response_code) (rate(istio_requests_total{reporter="destination"}[20s]))"#,
            r#"increase(istio_requests_total{destination_workload="podinfo"}[10s])"#,
            r#"irate(istio_requests_total{reporter="destination"}[5s])"#,
            r#"histogram_quantile(0.5, sum by (le, destination_workload) (rate(istio_request_duration_milliseconds_bucket[1m])))"#,
            r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{destination_workload="podinfo"}[1m] offset 5s)) by (le))"#,
            r#"sum(istio_request_duration_milliseconds_sum) / sum(istio_request_duration_milliseconds_count)"#,
            r#"count by (response_code) (istio_requests_total)"#,
            r#"max(rate(istio_requests_total[30s])) - min(rate(istio_requests_total[30s]))"#,
            r#"rate(istio_requests_total{response_code="500"}[1m]) / ignoring(response_code) rate(istio_requests_total{response_code="200"}[1m])"#,
            r#"sum(rate(istio_requests_total[1m])) > bool 40"#,
            r#"avg without (response_code) (rate(istio_request_duration_milliseconds_count{reporter="destination"}[1m]))"#,
            r#"sum(rate(istio_requests_total{reporter="source",response_code="503"}[1m]))"#,
            r#"istio_requests_total{destination_workload!="podinfo",response_code=~"2.."}"#,
            r#"min by (destination_workload) (istio_request_duration_milliseconds_bucket{le="25"}) < 1e9"#,
            r#"-sum(istio_requests_total) % 7 + 2 ^ 3"#,
            r#"vector(1)"#,
            r#"1 + 1"#,
        ]
        .map(String::from),
    );
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_query_api_agrees_with_a_real_prometheus() {
    let store = Store::default();
    ns(&store, NS);
    flagger_canary(
        &store,
        NS,
        "podinfo",
        90,
        json!({"testbed.flagger.app/latency-ms": "30"}),
        json!({"testbed.flagger.app/error-rate": "0.3", "testbed.flagger.app/latency-ms": "200"}),
        json!({"testbed.flagger.app/rps": "50"}),
    );
    virtual_service(&store, NS, "ghost", &[("ghost", 100)], json!({}));
    let mesh = Mesh::new(store, MeshConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mesh_addr = listener.local_addr().unwrap().to_string();
    let router = mesh.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let prom = start_prometheus(&mesh_addr);
    let prom_addr = prom.addr.clone();

    // Learn the scrape phase from Prometheus's own `up` samples.
    let phase = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "Prometheus did not scrape the mesh within 60 s"
            );
            std::thread::sleep(Duration::from_millis(500));
            let Some(v) = get_json(
                &prom_addr,
                &format!(
                    "/api/v1/query?query={}",
                    urlencode(r#"up{job="mesh"}[30s]"#)
                ),
            ) else {
                continue;
            };
            let Some(values) = v["data"]["result"][0]["values"].as_array() else {
                continue;
            };
            if values.len() < 2 || values.last().unwrap()[1] != "1" {
                continue;
            }
            let ts: Vec<i64> = values
                .iter()
                .map(|p| (p[0].as_f64().unwrap() * 1000.0).round() as i64)
                .collect();
            let n = ts.len();
            assert!(
                (ts[n - 1] - ts[n - 2] - 1000).abs() <= 5,
                "scrapes not 1 s apart: {ts:?}"
            );
            break ts[n - 1].rem_euclid(1000);
        }
    })
    .await
    .unwrap();

    // Traffic steps halfway between scrapes; samples stamped with the following scrape's time.
    let mut t = now_ms() + 200;
    t += (phase + 500 - t).rem_euclid(1000);
    let steps = 30;
    for _ in 0..steps {
        let wait = t - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        mesh.step(t);
        mesh.sample(t + 500);
        t += 1000;
    }
    let last_step = t - 1000;
    // Let Prometheus scrape the last state and ingest it.
    tokio::time::sleep(Duration::from_millis(
        (last_step + 2000 - now_ms()).max(0) as u64
    ))
    .await;

    let prom_addr = prom.addr.clone();
    let failures = tokio::task::spawn_blocking(move || {
        // Evaluate 250 ms after the scrape that followed a step; if that scrape was missed
        // (overloaded machine), fall back to an earlier aligned instant where it was not.
        let mut eval = None;
        for back in 0..5 {
            let at = last_step - back * 1000 + 750;
            let d = query_at(&prom_addr, r#"timestamp(up{job="mesh"})"#, at);
            let ts = d["result"][0]["value"][1]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap();
            if ((ts * 1000.0).round() as i64 - (at - 250)).abs() <= 5 {
                eval = Some(at);
                break;
            }
        }
        let at = eval.expect("Prometheus missed the scrapes after the last 5 mesh steps");
        let mut failures = Vec::new();
        let mut compared = 0;
        let mut worst: f64 = 0.0;
        let mut worst_query = String::new();
        for q in queries() {
            let ours = normalise(&query_at(&mesh_addr, &q, at));
            let theirs = normalise(&query_at(&prom_addr, &q, at));
            assert!(
                !theirs.1.is_empty() || q.contains("> bool"),
                "Prometheus has no data for {q}"
            );
            compared += 1;
            let same = ours.0 == theirs.0
                && ours.1.len() == theirs.1.len()
                && ours
                    .1
                    .iter()
                    .all(|(k, a)| theirs.1.get(k).is_some_and(|b| agree(*a, *b)));
            for (k, a) in &ours.1 {
                if let Some(b) = theirs.1.get(k)
                    && a.is_finite()
                    && b.is_finite()
                    && a != b
                {
                    let d = (a - b).abs() / a.abs().max(b.abs());
                    if d > worst {
                        worst = d;
                        worst_query = q.clone();
                    }
                }
            }
            if !same {
                failures.push(format!(
                    "{q}\n  mesh:       {ours:?}\n  prometheus: {theirs:?}"
                ));
            }
        }
        assert!(compared >= 10);
        eprintln!(
            "compared {compared} queries; largest relative difference {worst:e} ({worst_query})"
        );
        failures
    })
    .await
    .unwrap();
    server.abort();
    drop(prom);
    assert!(
        failures.is_empty(),
        "disagreements:\n{}",
        failures.join("\n")
    );
}
