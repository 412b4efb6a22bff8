//! Acceptance for the mesh (issue 3, item 1): traffic split by VirtualService weights, error rate
//! and latency per workload as Flagger's builtin Istio queries see them, on the real store.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod mesh_support;

use flagger_testbed::mesh::promql::Value;
use flagger_testbed::mesh::{Mesh, MeshConfig};
use flagger_testbed::store::{ResourceId, Store};
use mesh_support::*;
use serde_json::json;
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;

fn scalar_of(mesh: &Mesh, q: &str, t: i64) -> Option<f64> {
    match mesh.query(q, t).unwrap() {
        Value::Vector(v) if v.len() == 1 => Some(v[0].value),
        Value::Vector(v) if v.is_empty() => None,
        other => panic!("{q}: unexpected {other:?}"),
    }
}

fn by_workload(mesh: &Mesh, q: &str, t: i64) -> std::collections::BTreeMap<String, f64> {
    match mesh.query(q, t).unwrap() {
        Value::Vector(v) => v
            .into_iter()
            .map(|s| (s.labels.get("destination_workload").to_string(), s.value))
            .collect(),
        other => panic!("{q}: unexpected {other:?}"),
    }
}

fn canary_setup(store: &Store, canary: serde_json::Value) {
    ns(store, "test");
    flagger_canary(store, "test", "podinfo", 90, json!({}), canary, json!({}));
}

#[test]
fn weights_error_rate_and_latency_show_in_flaggers_queries() {
    let store = Store::default();
    canary_setup(
        &store,
        json!({"testbed.flagger.app/error-rate": "0.5", "testbed.flagger.app/latency-ms": "1000"}),
    );
    let mesh = Mesh::new(store.clone(), MeshConfig::default());
    for i in 1..=20 {
        mesh.tick(T0 + i * 1000);
    }
    let t = T0 + 20_000;
    let canary_sr = scalar_of(&mesh, &success_rate_query("test", "podinfo", "1m"), t).unwrap();
    assert!(
        (45.0..=55.0).contains(&canary_sr),
        "canary success rate {canary_sr}"
    );
    let primary_sr = scalar_of(
        &mesh,
        &success_rate_query("test", "podinfo-primary", "1m"),
        t,
    )
    .unwrap();
    assert_eq!(primary_sr, 100.0);
    let p99 = scalar_of(&mesh, &p99_query("test", "podinfo", "1m"), t).unwrap();
    assert!((1000.0..=2500.0).contains(&p99), "canary P99 {p99}");
    let primary_p99 = scalar_of(&mesh, &p99_query("test", "podinfo-primary", "1m"), t).unwrap();
    assert!(
        primary_p99 > 10.0 && primary_p99 < 100.0,
        "primary P99 {primary_p99}"
    );

    // 90/10 exactly: 10 rps over the last 10 s.
    let split = by_workload(
        &mesh,
        r#"sum by (destination_workload) (increase(istio_requests_total{reporter="destination"}[10s]))"#,
        t,
    );
    assert_eq!(split["podinfo-primary"], 90.0, "{split:?}");
    assert_eq!(split["podinfo"], 10.0, "{split:?}");

    // Shift to 50/50: visible in the next 2 s.
    set_weights(
        &store,
        "test",
        "podinfo",
        &[("podinfo-primary", 50), ("podinfo-canary", 50)],
    );
    mesh.tick(T0 + 21_000);
    mesh.tick(T0 + 22_000);
    let split = by_workload(
        &mesh,
        r#"sum by (destination_workload) (increase(istio_requests_total{reporter="destination"}[2s]))"#,
        T0 + 22_000,
    );
    assert_eq!(split["podinfo-primary"], 10.0, "{split:?}");
    assert_eq!(split["podinfo"], 10.0, "{split:?}");

    // The series carry Istio's labels.
    let Value::Vector(v) = mesh
        .query(
            r#"istio_requests_total{destination_workload="podinfo",response_code="500"}"#,
            t,
        )
        .unwrap()
    else {
        panic!()
    };
    let l = &v[0].labels;
    assert_eq!(l.get("reporter"), "destination");
    assert_eq!(l.get("destination_workload_namespace"), "test");
    assert_eq!(
        l.get("destination_service"),
        "podinfo-canary.test.svc.cluster.local"
    );
    assert_eq!(l.get("destination_service_name"), "podinfo-canary");
    assert_eq!(l.get("source_workload"), "loadtester");
}

#[test]
fn thirty_percent_errors_read_as_seventy_percent_success() {
    let store = Store::default();
    canary_setup(&store, json!({"testbed.flagger.app/error-rate": "0.3"}));
    let mesh = Mesh::new(store, MeshConfig::default());
    for i in 1..=120 {
        mesh.tick(T0 + i * 1000);
    }
    let sr = scalar_of(
        &mesh,
        &success_rate_query("test", "podinfo", "1m"),
        T0 + 120_000,
    )
    .unwrap();
    assert!((sr - 70.0).abs() < 1.0, "{sr}");
}

#[test]
fn no_ready_endpoints_gives_source_side_503s_only() {
    let store = Store::default();
    ns(&store, "test");
    // a Service whose only pod is not ready, and a host with no Service at all
    service(&store, "test", "broken", "broken", json!({}));
    pod(
        &store,
        "test",
        "broken-0",
        "broken",
        "broken-rs",
        "uid-x",
        json!({}),
        false,
    );
    virtual_service(&store, "test", "broken", &[("broken", 100)], json!({}));
    virtual_service(
        &store,
        "test",
        "ghost",
        &[("ghost.test.svc.cluster.local", 100)],
        json!({}),
    );
    let mesh = Mesh::new(store, MeshConfig::default());
    for i in 1..=10 {
        mesh.tick(T0 + i * 1000);
    }
    let t = T0 + 10_000;
    let Value::Vector(v) = mesh.query(r#"istio_requests_total"#, t).unwrap() else {
        panic!()
    };
    assert_eq!(v.len(), 2, "{v:?}");
    for s in &v {
        assert_eq!(s.labels.get("reporter"), "source");
        assert_eq!(s.labels.get("response_code"), "503");
        assert_eq!(s.labels.get("destination_workload"), "unknown");
        assert_eq!(s.value, 100.0);
    }
    assert_eq!(
        v.iter()
            .map(|s| s.labels.get("destination_service_name"))
            .collect::<Vec<_>>(),
        vec!["broken", "ghost"]
    );
}

#[test]
fn annotated_services_get_direct_traffic_without_a_virtual_service() {
    let store = Store::default();
    ns(&store, "test");
    deployment(&store, "test", "podinfo", 2, json!({}));
    service(
        &store,
        "test",
        "podinfo-canary",
        "podinfo",
        json!({"testbed.flagger.app/rps": "5"}),
    );
    let mesh = Mesh::new(store.clone(), MeshConfig::default());
    for i in 1..=60 {
        mesh.tick(T0 + i * 1000);
    }
    let r = scalar_of(
        &mesh,
        r#"sum(rate(istio_requests_total{destination_service_name="podinfo-canary"}[30s]))"#,
        T0 + 60_000,
    )
    .unwrap();
    assert!((r - 5.0).abs() < 1e-9, "{r}");
    // per-VS rps annotation overrides the default; pods deleted → traffic turns into 503s
    virtual_service(
        &store,
        "test",
        "fast",
        &[("podinfo-canary", 100)],
        json!({"testbed.flagger.app/rps": "20"}),
    );
    for name in ["podinfo-5d4f8b7c9-00000", "podinfo-5d4f8b7c9-00001"] {
        store
            .delete(&ResourceId::new("", "pods"), "test", name)
            .unwrap();
    }
    for i in 61..=70 {
        mesh.tick(T0 + i * 1000);
    }
    let r = scalar_of(
        &mesh,
        r#"sum(increase(istio_requests_total{reporter="source",response_code="503"}[5s]))"#,
        T0 + 70_000,
    )
    .unwrap();
    assert_eq!(r, 125.0);
}

#[test]
fn rps_zero_disables_the_simulation() {
    let store = Store::default();
    canary_setup(&store, json!({}));
    let mesh = Mesh::new(
        store,
        MeshConfig {
            rps: 0,
            ..MeshConfig::default()
        },
    );
    for i in 1..=5 {
        mesh.tick(T0 + i * 1000);
    }
    assert_eq!(mesh.stats().series, 0);
    assert!(!mesh.metrics_text().contains("istio_requests_total{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_time_mesh_serves_metrics_and_the_query_api() {
    let store = Store::default();
    canary_setup(&store, json!({"testbed.flagger.app/error-rate": "1"}));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let cfg = MeshConfig {
        sample_every: Duration::from_millis(200),
        ..MeshConfig::default()
    };
    let mesh = Mesh::start(store, cfg, shutdown.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let router = mesh.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let a = addr.clone();
    let (status, body) = tokio::task::spawn_blocking(move || {
        http(
            &a,
            "GET",
            &format!(
                "/api/v1/query?query={}",
                urlencode("sum(istio_requests_total)")
            ),
            None,
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    let total: f64 = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // ~1.5 s at 10 rps
    assert!((5.0..=25.0).contains(&total), "{total}");

    let a = addr.clone();
    let (status, body) = tokio::task::spawn_blocking(move || {
        let q = format!("query={}&time=1700000000.5", urlencode("vector(1) * 2"));
        http(&a, "POST", "/api/v1/query", Some(&q))
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.500,"2"]}]}}"#
    );

    let a = addr.clone();
    let (status, body) = tokio::task::spawn_blocking(move || http(&a, "GET", "/metrics", None))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE istio_requests_total counter"),
        "{body}"
    );
    assert!(body.contains(r#"destination_workload="podinfo""#));
    assert!(body.contains(r#"response_code="500""#));
    assert!(body.contains(r#"istio_request_duration_milliseconds_bucket{"#));
    assert!(body.contains(r#"le="+Inf"} "#));
    shutdown.cancel();
    server.abort();
}
