//! Property: 10,000 random requests (methods, paths, query strings, content types and bodies,
//! from plausible objects and patches to random bytes) never crash the server, never get a 5xx
//! (no faults are injected here), always get a response, and leave the store consistent.
//! Requests go over raw TCP so paths and bodies are exactly what the generator made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use flagger_testbed::{Config, Testbed};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "x", "web", "default", "Bad_Name", "", "a.b", "-x"]).prop_map(String::from),
        1 => ".{0,12}",
        1 => "[a-z0-9-]{1,70}",
    ]
}

/// Served (prefix, plural, namespaced) combinations, so most requests reach the handlers.
const SERVED: &[(&str, &str, bool)] = &[
    ("/api/v1", "configmaps", true),
    ("/api/v1", "namespaces", false),
    ("/api/v1", "services", true),
    ("/api/v1", "secrets", true),
    ("/api/v1", "pods", true),
    ("/api/v1", "events", true),
    ("/apis/apps/v1", "deployments", true),
    ("/apis/autoscaling/v2", "horizontalpodautoscalers", true),
    ("/apis/coordination.k8s.io/v1", "leases", true),
    ("/apis/networking.istio.io/v1beta1", "virtualservices", true),
    (
        "/apis/apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        false,
    ),
];

fn path() -> impl Strategy<Value = String> {
    let random_prefix = prop::sample::select(vec![
        "/api/v1",
        "/apis/apps/v1",
        "/apis/unknown.io/v1",
        "/api",
        "/apis",
        "",
    ]);
    let resource = prop_oneof![
        8 => (prop::sample::select(SERVED), prop::bool::weighted(0.9)).prop_map(|((p, r, namespaced), keep)| {
            // Mostly the right scope; sometimes the wrong one on purpose.
            (p.to_string(), r.to_string(), namespaced == keep)
        }),
        1 => (random_prefix, word(), any::<bool>()).prop_map(|(p, r, ns)| (p.to_string(), r, ns)),
    ];
    let ns = prop_oneof![
        3 => prop::sample::select(vec!["default", "team"]).prop_map(String::from),
        1 => word(),
    ];
    let name = prop::option::of(prop_oneof![
        4 => prop::sample::select(vec!["a", "web", "x", "b"]).prop_map(String::from),
        1 => word(),
    ]);
    let sub = prop::option::weighted(
        0.2,
        prop_oneof![
            3 => prop::sample::select(vec!["status", "scale", "finalize"]).prop_map(String::from),
            1 => word(),
        ],
    );
    let query = prop::collection::vec(
        (
            prop::sample::select(vec![
                "labelSelector",
                "fieldSelector",
                "limit",
                "continue",
                "resourceVersion",
                "propagationPolicy",
                "fieldValidation",
                "fieldManager",
                "includeObject",
                "force",
            ]),
            prop_oneof![
                word(),
                "[0-9]{1,4}",
                Just("app in (a,b),!x".to_string()),
                Just("Strict".to_string())
            ],
        ),
        0..3,
    );
    (resource, ns, name, sub, query).prop_map(
        |((prefix, plural, namespaced), ns, name, sub, query)| {
            let mut p = prefix;
            if namespaced {
                p.push_str(&format!("/namespaces/{}", encode(&ns)));
            }
            p.push_str(&format!("/{}", encode(&plural)));
            if let Some(n) = name {
                p.push_str(&format!("/{}", encode(&n)));
                if let Some(s) = sub {
                    p.push_str(&format!("/{}", encode(&s)));
                }
            }
            if !query.is_empty() {
                let q: Vec<String> = query
                    .iter()
                    .map(|(k, v)| format!("{k}={}", encode(v)))
                    .collect();
                p.push('?');
                p.push_str(&q.join("&"));
            }
            p
        },
    )
}

/// JSON with the keys and shapes the server looks at, nested at random.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        word().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        let key = prop::sample::select(vec![
            "apiVersion",
            "kind",
            "metadata",
            "name",
            "namespace",
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
            "uid",
            "resourceVersion",
            "generateName",
            "spec",
            "status",
            "replicas",
            "selector",
            "matchLabels",
            "data",
            "op",
            "path",
            "value",
            "from",
            "propagationPolicy",
            "preconditions",
            "deletionTimestamp",
            "$patch",
            "$retainKeys",
            "containers",
            "image",
            "env",
            "template",
            "x",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..5).prop_map(|kv| Value::Object(
                kv.into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Map<_, _>>()
            )),
        ]
    })
}

/// A plausible object (often valid) with random parts.
fn object() -> impl Strategy<Value = Value> {
    (
        word(),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
    )
        .prop_map(|(name, spec, meta_extra, status)| {
            let mut o = json!({"metadata": {"name": name, "labels": {"app": "x"}}});
            if let Some(s) = spec {
                o["spec"] = s;
            }
            if let Some(Value::Object(m)) = meta_extra {
                for (k, v) in m {
                    o["metadata"][k] = v;
                }
            }
            if let Some(s) = status {
                o["status"] = s;
            }
            o
        })
}

fn json_patch_ops() -> impl Strategy<Value = Value> {
    let op = (
        prop::sample::select(vec!["add", "remove", "replace", "move", "copy", "test", "bogus"]),
        prop::sample::select(vec!["/metadata/labels/a", "/spec/replicas", "/metadata/finalizers/-", "/data/k", "/metadata/name", "", "/x~1y", "/metadata/ownerReferences"]),
        json_value(),
    )
        .prop_map(|(op, path, value)| json!({"op": op, "path": path, "value": value, "from": "/metadata/labels"}));
    prop::collection::vec(op, 0..4).prop_map(Value::Array)
}

fn request() -> impl Strategy<Value = Req> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE"]);
    let content_type = prop::sample::select(vec![
        "application/json",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
        "application/yaml",
        "text/plain",
        "",
    ]);
    let body = prop_oneof![
        4 => object().prop_map(|v| v.to_string().into_bytes()),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        2 => json_patch_ops().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => Just(Vec::new()),
    ];
    (method, path(), content_type, body).prop_map(|(method, path, content_type, body)| Req {
        method,
        path,
        content_type,
        body,
    })
}

/// Sends one request on a fresh connection and returns the status code (None: no response).
async fn send(addr: SocketAddr, req: &Req) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
        req.method,
        if req.path.is_empty() { "/" } else { &req.path }
    );
    if !req.content_type.is_empty() {
        head.push_str(&format!("Content-Type: {}\r\n", req.content_type));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    s.write_all(head.as_bytes()).await.ok()?;
    s.write_all(&req.body).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Only the status line is needed; a watch would stream forever, so stop at the head.
    let read = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()??;
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn random_requests_never_crash_or_corrupt() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tb = rt.block_on(Testbed::start(Config::default())).unwrap();
    let addr: SocketAddr = tb.api_url().trim_start_matches("http://").parse().unwrap();
    // Some objects for updates, patches and deletes to find.
    for (path, body) in [
        ("/api/v1/namespaces", json!({"metadata": {"name": "team"}})),
        (
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": "a"}, "data": {"k": "v"}}),
        ),
        (
            "/api/v1/namespaces/team/configmaps",
            json!({"metadata": {"name": "x", "finalizers": ["f/g"]}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}}}),
        ),
    ] {
        let req = Req {
            method: "POST",
            path: path.into(),
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        };
        assert_eq!(rt.block_on(send(addr, &req)), Some(201), "{path}");
    }

    let mut runner = TestRunner::new(RunnerConfig {
        cases: 10_000,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let codes = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let result = runner.run(&request(), |req| {
        let code = rt.block_on(send(addr, &req));
        let Some(code) = code else {
            return Err(TestCaseError::fail(format!("no response to {req:?}")));
        };
        *codes.borrow_mut().entry(code).or_default() += 1;
        prop_assert!(code < 500, "{code} for {req:?}");
        tb.store()
            .check_consistency()
            .map_err(|e| TestCaseError::fail(format!("after {req:?}: {e}")))?;
        Ok(())
    });
    let codes = codes.into_inner();
    eprintln!("status codes: {codes:?}");
    result.unwrap();
    // The server still serves normally afterwards.
    let req = Req {
        method: "GET",
        path: "/api/v1/namespaces/default".into(),
        content_type: "",
        body: vec![],
    };
    assert_eq!(rt.block_on(send(addr, &req)), Some(200));
    assert!(
        codes.keys().any(|c| (200..300).contains(c)),
        "no request succeeded: {codes:?}"
    );
    for c in [400, 404, 415, 422] {
        assert!(
            codes.contains_key(&c),
            "no {c} seen: the generator misses a class of input: {codes:?}"
        );
    }
    rt.block_on(tb.shutdown());
}
