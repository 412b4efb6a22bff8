//! Acceptance for the query API's failure modes (issue 3, item 3): unsupported PromQL answers a
//! Prometheus-shaped `bad_data` error naming the construct, malformed queries answer `bad_data`,
//! and 10,000 random query strings never panic the evaluator.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod mesh_support;

use flagger_testbed::mesh::api::{ApiError, success_body};
use flagger_testbed::mesh::{Mesh, MeshConfig};
use flagger_testbed::store::Store;
use mesh_support::*;
use proptest::prelude::*;
use serde_json::{Value, json};

const T0: i64 = 1_700_000_000_000;

fn mesh_with_traffic() -> Mesh {
    let store = Store::default();
    ns(&store, "test");
    flagger_canary(
        &store,
        "test",
        "podinfo",
        80,
        json!({}),
        json!({"testbed.flagger.app/error-rate": "0.2"}),
        json!({}),
    );
    let mesh = Mesh::new(store, MeshConfig::default());
    for i in 1..=30 {
        mesh.tick(T0 + i * 1000);
    }
    mesh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_prometheus_shape_over_http() {
    let mesh = mesh_with_traffic();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let router = mesh.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let cases: Vec<(&str, u16, &str, Option<&str>)> = vec![
        (
            "abs(istio_requests_total)",
            400,
            "bad_data",
            Some("unsupported: function abs()"),
        ),
        (
            "topk(1, istio_requests_total)",
            400,
            "bad_data",
            Some("unsupported: aggregation topk"),
        ),
        (
            "istio_requests_total and istio_requests_total",
            400,
            "bad_data",
            Some("unsupported: binary operator and"),
        ),
        (
            "sum_over_time(istio_requests_total[1m])",
            400,
            "bad_data",
            Some("unsupported: function sum_over_time()"),
        ),
        (
            "rate(istio_requests_total[5m:30s])",
            400,
            "bad_data",
            Some("unsupported: subquery"),
        ),
        ("sum(rate(istio_requests_total[1m])", 400, "bad_data", None),
        ("istio_requests_total{", 400, "bad_data", None),
        ("", 400, "bad_data", None),
        (
            r#"istio_requests_total / on() istio_requests_total"#,
            422,
            "execution",
            Some("many-to-many matching not allowed"),
        ),
    ];
    for (q, status, kind, msg) in cases {
        let a = addr.clone();
        let path = format!("/api/v1/query?query={}&time=1700000030", urlencode(q));
        let (got, body) = tokio::task::spawn_blocking(move || http(&a, "GET", &path, None))
            .await
            .unwrap();
        assert_eq!(got, status, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "error", "{q}");
        assert_eq!(v["errorType"], kind, "{q}");
        let err = v["error"].as_str().unwrap();
        if let Some(m) = msg {
            assert!(err.contains(m), "{q}: {err}");
        }
        assert_eq!(v.as_object().unwrap().len(), 3, "{q}: {body}");
    }
    // bad parameters
    for path in [
        "/api/v1/query?query=vector(1)&time=yesterday",
        "/api/v1/query?query=vector(1)&timeout=soon",
    ] {
        let a = addr.clone();
        let (got, body) = tokio::task::spawn_blocking(move || http(&a, "GET", path, None))
            .await
            .unwrap();
        assert_eq!(got, 400, "{body}");
        assert!(body.contains(r#""errorType":"bad_data""#), "{body}");
    }
    server.abort();
}

fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "up",
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        "[1m]",
        "[5s]",
        "[0s]",
        "[1m:10s]",
        ",",
        "reporter=\"destination\"",
        "response_code!~\"5.*\"",
        "destination_workload=~\"podinfo\"",
        "le=\"+Inf\"",
        "le!=\"\"",
        "__name__=~\".+\"",
        "=~\"(\"",
        "rate",
        "irate",
        "increase",
        "vector",
        "histogram_quantile",
        "abs",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "topk",
        "by",
        "without",
        "(le)",
        "(destination_workload)",
        "on",
        "ignoring",
        "group_left",
        "bool",
        "offset",
        "offset 1m",
        "offset -5m",
        "@ 100",
        "@ end()",
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "==",
        "!=",
        ">",
        "<",
        ">=",
        "<=",
        "and",
        "or",
        "unless",
        "0",
        "1",
        "0.99",
        "-1",
        "1e308",
        "NaN",
        "Inf",
        "0x1f",
        "\"str\"",
        "'x'",
        "`raw`",
        "#",
        "\\",
        ":",
        "99999999999999999999y",
    ])
}

fn query_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec((token(), prop::bool::ANY), 1..24).prop_map(|ts| {
            ts.into_iter()
                .map(|(t, space)| if space { format!("{t} ") } else { t.to_string() })
                .collect::<String>()
        }),
        1 => "\\PC{0,60}",
        1 => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_queries_never_panic_and_answer_valid_json(q in query_string()) {
        thread_local! {
            static MESH: Mesh = mesh_with_traffic();
        }
        MESH.with(|mesh| {
            let body = match mesh.query(&q, T0 + 30_000) {
                Ok(v) => success_body(&v, T0 + 30_000),
                Err(e) => ApiError::from(e).body(),
            };
            let v: Value = serde_json::from_str(&body).unwrap();
            prop_assert!(v["status"] == "success" || v["errorType"] == "bad_data" || v["errorType"] == "execution", "{q}: {body}");
            Ok(())
        })?;
    }
}
