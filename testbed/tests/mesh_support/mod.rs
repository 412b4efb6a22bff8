//! Cluster fixtures for the mesh tests and benchmark: Flagger-shaped objects written straight
//! into the store (Deployment → ReplicaSet → ready Pods, Services, VirtualServices), so the mesh
//! is exercised without depending on the workload controllers' timing.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
use flagger_testbed::store::{ResourceId, Store};
use serde_json::{Value, json};
use std::io::{Read, Write};

pub fn ns(store: &Store, name: &str) {
    store
        .create(
            &ResourceId::new("", "namespaces"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .unwrap();
}

fn uid(v: &Value) -> String {
    v["metadata"]["uid"].as_str().unwrap().to_string()
}

/// A Deployment `name` (pods labelled `app=<name>`) with `replicas` ready Pods carrying
/// `annotations` (the mesh's behaviour annotations), owned through a ReplicaSet.
pub fn deployment(store: &Store, ns: &str, name: &str, replicas: usize, annotations: Value) {
    let dep = store
        .create(
            &ResourceId::new("apps", "deployments"),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}, "annotations": annotations},
                        "spec": {"containers": [{"name": "app", "image": "podinfo:1"}]}}}}),
        )
        .unwrap();
    let rs_name = format!("{name}-5d4f8b7c9");
    let rs = store
        .create(
            &ResourceId::new("apps", "replicasets"),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": ns,
                    "labels": {"app": name, "pod-template-hash": "5d4f8b7c9"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                        "uid": uid(&dep), "controller": true}]},
                "spec": {"replicas": replicas}}),
        )
        .unwrap();
    for i in 0..replicas {
        pod(
            store,
            ns,
            &format!("{rs_name}-{i:05}"),
            name,
            &rs_name,
            &uid(&rs),
            annotations.clone(),
            true,
        );
    }
}

#[allow(clippy::too_many_arguments)]
pub fn pod(
    store: &Store,
    ns: &str,
    name: &str,
    app: &str,
    rs_name: &str,
    rs_uid: &str,
    annotations: Value,
    ready: bool,
) {
    store
        .create(
            &ResourceId::new("", "pods"),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns,
                    "labels": {"app": app, "pod-template-hash": "5d4f8b7c9"},
                    "annotations": annotations,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                        "uid": rs_uid, "controller": true}]},
                "spec": {"containers": [{"name": "app", "image": "podinfo:1"}]},
                "status": {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}),
        )
        .unwrap();
}

/// A ClusterIP Service selecting `app=<app>`, with optional annotations.
pub fn service(store: &Store, ns: &str, name: &str, app: &str, annotations: Value) {
    store
        .create(
            &ResourceId::new("", "services"),
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "annotations": annotations},
                "spec": {"selector": {"app": app}, "ports": [{"port": 9898}]}}),
        )
        .unwrap();
}

pub fn vs_routes(routes: &[(&str, u32)]) -> Value {
    routes
        .iter()
        .map(|(h, w)| json!({"destination": {"host": h}, "weight": w}))
        .collect()
}

pub fn virtual_service(
    store: &Store,
    ns: &str,
    name: &str,
    routes: &[(&str, u32)],
    annotations: Value,
) {
    store
        .create(
            &ResourceId::new("networking.istio.io", "virtualservices"),
            json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                "metadata": {"name": name, "namespace": ns, "annotations": annotations},
                "spec": {"hosts": [name], "http": [{"route": vs_routes(routes)}]}}),
        )
        .unwrap();
}

pub fn set_weights(store: &Store, ns: &str, name: &str, routes: &[(&str, u32)]) {
    let routes = vs_routes(routes);
    store
        .modify(
            &ResourceId::new("networking.istio.io", "virtualservices"),
            ns,
            name,
            false,
            |vs| vs["spec"]["http"][0]["route"] = routes,
        )
        .unwrap();
}

/// What Flagger's operator sets up for a canary `name`: `<name>-primary` and `<name>` (canary)
/// Deployments, Services `<name>-primary`, `<name>-canary` and `<name>`, and a VirtualService
/// `<name>` routing `primary_weight`/`100 - primary_weight`.
pub fn flagger_canary(
    store: &Store,
    ns: &str,
    name: &str,
    primary_weight: u32,
    primary: Value,
    canary: Value,
    vs_annotations: Value,
) {
    let primary_name = format!("{name}-primary");
    let canary_svc = format!("{name}-canary");
    deployment(store, ns, &primary_name, 2, primary);
    deployment(store, ns, name, 1, canary);
    service(store, ns, &primary_name, &primary_name, json!({}));
    service(store, ns, &canary_svc, name, json!({}));
    service(store, ns, name, &primary_name, json!({}));
    virtual_service(
        store,
        ns,
        name,
        &[
            (&primary_name, primary_weight),
            (&canary_svc, 100 - primary_weight),
        ],
        vs_annotations,
    );
}

/// Flagger's builtin Istio `request-success-rate` query (flagger-behavior.md §4.1), rendered.
pub fn success_rate_query(ns: &str, target: &str, interval: &str) -> String {
    format!(
        r#"sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="{ns}",destination_workload=~"{target}",response_code!~"5.*"}}[{interval}])) / sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="{ns}",destination_workload=~"{target}"}}[{interval}])) * 100"#
    )
}

/// Flagger's builtin Istio `request-duration` (P99) query, rendered.
pub fn p99_query(ns: &str, target: &str, interval: &str) -> String {
    format!(
        r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{reporter="destination",destination_workload_namespace="{ns}",destination_workload=~"{target}"}}[{interval}])) by (le))"#
    )
}

/// Minimal blocking HTTP/1.1 client for loopback tests: returns (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
