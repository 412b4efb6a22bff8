//! Conformance over raw HTTP (through the kube client's transport, no typed API): custom
//! resources (schema pruning, defaults, validation, several versions, printer columns), bad
//! input, Table output, fault injection and request statistics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use flagger_testbed::faults::FaultConfig;
use flagger_testbed::{Config, Testbed};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, WatchParams};
use serde_json::{Value, json};

async fn testbed() -> Testbed {
    // A bare API server: no controller writes status behind the tests' backs.
    Testbed::start(Config {
        bookmark_interval: Duration::from_millis(200),
        controllers: false,
        ..Config::default()
    })
    .await
    .unwrap()
}

struct Reply {
    code: u16,
    headers: http::HeaderMap,
    body: Value,
}

/// One request through a kube client with retries off (so injected 429/503 are seen as sent).
async fn call(
    tb: &Testbed,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let mut cfg = tb.kubeconfig().unwrap();
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).unwrap();
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .send(req.body(kube::client::Body::from(body)).unwrap())
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        code,
        headers,
        body,
    }
}

async fn post_json(tb: &Testbed, path: &str, v: &Value) -> Reply {
    call(
        tb,
        "POST",
        path,
        &[("content-type", "application/json")],
        v.to_string().into_bytes(),
    )
    .await
}

fn widget_crd() -> Value {
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["replicas"],
                "properties": {
                    "replicas": {"type": "integer", "minimum": 0, "maximum": 10},
                    "mode": {"type": "string", "enum": ["fast", "safe"], "default": "safe"},
                    "owner": {"type": "string", "pattern": "^[a-z]+$"},
                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                }
            },
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
        }
    });
    let version = |name: &str, storage: bool| {
        json!({
            "name": name, "served": true, "storage": storage,
            "schema": {"openAPIV3Schema": schema},
            "subresources": {"status": {}},
            "additionalPrinterColumns": [
                {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}
            ]
        })
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [version("v1", true), version("v1beta1", false)]
        }
    })
}

const WIDGETS: &str = "/apis/example.com/v1/namespaces/default/widgets";

async fn install_widgets(tb: &Testbed) {
    let r = post_json(
        tb,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        &widget_crd(),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let start = Instant::now();
    while call(tb, "GET", WIDGETS, &[], vec![]).await.code != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "CRD not served within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn widget(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn custom_resources_are_pruned_defaulted_and_validated() {
    let tb = testbed().await;
    install_widgets(&tb).await;

    let r = post_json(
        &tb,
        WIDGETS,
        &widget(
            "ok",
            json!({"replicas": 2, "unknown": 1, "extra": {"kept": true}}),
        ),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["spec"]["mode"], "safe", "default applied");
    assert!(
        r.body["spec"].get("unknown").is_none(),
        "unknown field pruned"
    );
    assert_eq!(
        r.body["spec"]["extra"]["kept"], true,
        "preserve-unknown-fields kept"
    );
    let warning = r
        .headers
        .get("warning")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        warning.contains("unknown field") && warning.contains("spec.unknown"),
        "{warning}"
    );

    let cases = [
        ("above maximum", json!({"replicas": 20}), "spec.replicas"),
        (
            "not in enum",
            json!({"replicas": 1, "mode": "wild"}),
            "spec.mode",
        ),
        (
            "pattern",
            json!({"replicas": 1, "owner": "Bob!"}),
            "spec.owner",
        ),
        ("required", json!({"mode": "fast"}), "spec.replicas"),
        ("type", json!({"replicas": "two"}), "spec.replicas"),
    ];
    for (i, (what, spec, field)) in cases.into_iter().enumerate() {
        let r = post_json(&tb, WIDGETS, &widget(&format!("bad-{i}"), spec)).await;
        assert_eq!(r.code, 422, "{what}: {}", r.body);
        assert_eq!(r.body["reason"], "Invalid", "{what}");
        let fields: Vec<&str> = r.body["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{what}: causes {fields:?}");
        assert_eq!(
            call(&tb, "GET", &format!("{WIDGETS}/bad-{i}"), &[], vec![])
                .await
                .code,
            404,
            "{what}: nothing stored"
        );
    }

    let strict = call(
        &tb,
        "POST",
        &format!("{WIDGETS}?fieldValidation=Strict"),
        &[("content-type", "application/json")],
        widget("strict", json!({"replicas": 1, "bogus": true}))
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(strict.code, 400, "{}", strict.body);
    assert!(
        strict.body["message"]
            .as_str()
            .unwrap()
            .contains("spec.bogus")
    );

    // Status subresource isolation applies to custom resources too.
    let r = call(
        &tb,
        "PATCH",
        &format!("{WIDGETS}/ok"),
        &[("content-type", "application/merge-patch+json")],
        json!({"status": {"phase": "Ready"}})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert!(
        r.body.get("status").is_none(),
        "status written through the main resource: {}",
        r.body
    );
    let r = call(
        &tb,
        "PATCH",
        &format!("{WIDGETS}/ok/status"),
        &[("content-type", "application/merge-patch+json")],
        json!({"status": {"phase": "Ready"}})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(r.body["status"]["phase"], "Ready");
    assert_eq!(r.body["metadata"]["generation"], 1);
    // Stats name the call as RBAC sees it: group, resource and subresource apart.
    let calls = tb.stats().snapshot().calls;
    let status_patch = calls
        .iter()
        .find(|c| c.call.verb == "patch" && c.call.subresource == "status")
        .expect("the status patch is counted");
    assert_eq!(
        (
            status_patch.call.group.as_str(),
            status_patch.call.resource.as_str(),
            status_patch.call.namespace.as_str()
        ),
        ("example.com", "widgets", "default")
    );

    // Strategic merge patch is not served for custom resources (as on a real server).
    let r = call(
        &tb,
        "PATCH",
        &format!("{WIDGETS}/ok"),
        &[("content-type", "application/strategic-merge-patch+json")],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.code, 415);
    tb.shutdown().await;
}

#[tokio::test]
async fn several_served_versions_rewrite_api_version_and_tables_show_printer_columns() {
    let tb = testbed().await;
    install_widgets(&tb).await;
    assert_eq!(
        post_json(&tb, WIDGETS, &widget("w", json!({"replicas": 3})))
            .await
            .code,
        201
    );
    let beta = call(
        &tb,
        "GET",
        "/apis/example.com/v1beta1/namespaces/default/widgets/w",
        &[],
        vec![],
    )
    .await;
    assert_eq!(beta.body["apiVersion"], "example.com/v1beta1");
    let list = call(&tb, "GET", "/apis/example.com/v1beta1/widgets", &[], vec![]).await;
    assert_eq!(list.body["items"][0]["apiVersion"], "example.com/v1beta1");
    assert_eq!(list.body["kind"], "WidgetList");

    let accept = [(
        "accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )];
    let table = call(&tb, "GET", WIDGETS, &accept, vec![]).await;
    assert_eq!(table.body["kind"], "Table", "{}", table.body);
    let columns: Vec<&str> = table.body["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        columns.starts_with(&["Name", "Replicas", "Mode"]),
        "{columns:?}"
    );
    assert_eq!(table.body["rows"][0]["cells"][0], "w");
    assert_eq!(table.body["rows"][0]["cells"][1], 3);
    assert_eq!(table.body["rows"][0]["cells"][2], "safe");

    // Built-in tables: deployments show READY / UP-TO-DATE / AVAILABLE.
    let d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    assert_eq!(
        post_json(&tb, "/apis/apps/v1/namespaces/default/deployments", &d)
            .await
            .code,
        201
    );
    let t = call(
        &tb,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments",
        &accept,
        vec![],
    )
    .await;
    let columns: Vec<&str> = t.body["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        columns.starts_with(&["Name", "Ready", "Up-to-date", "Available"]),
        "{columns:?}"
    );

    // Deleting the CRD stops serving its resources.
    let r = call(
        &tb,
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        &[],
        vec![],
    )
    .await;
    assert!(r.code < 300, "{}", r.body);
    let start = Instant::now();
    while call(&tb, "GET", WIDGETS, &[], vec![]).await.code != 404 {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "CRD still served a second after deletion"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_status_errors() {
    let tb = testbed().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let big = format!(
        "{{\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"k\":\"{}\"}}}}",
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    // (what, method, path, headers, body, expected code)
    type Case<'a> = (
        &'a str,
        &'a str,
        String,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            "POST",
            cms.into(),
            vec![("content-type", "application/json")],
            b"{\"metadata\":".to_vec(),
            400,
        ),
        (
            "not an object",
            "POST",
            cms.into(),
            vec![("content-type", "application/json")],
            b"[1,2]".to_vec(),
            400,
        ),
        (
            "CRD without a group",
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions".into(),
            vec![("content-type", "application/json")],
            br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"widgets.example.com"},"spec":{"names":{"plural":"widgets","kind":"Widget"},"scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object"}}}]}}"#.to_vec(),
            422,
        ),
        (
            "unknown resource",
            "GET",
            "/api/v1/namespaces/default/gizmos".into(),
            vec![],
            vec![],
            404,
        ),
        (
            "unknown group",
            "GET",
            "/apis/nope.io/v1/things".into(),
            vec![],
            vec![],
            404,
        ),
        (
            "unknown path",
            "GET",
            "/nothing/here".into(),
            vec![],
            vec![],
            404,
        ),
        (
            "unsupported media type",
            "POST",
            cms.into(),
            vec![("content-type", "text/plain")],
            b"{}".to_vec(),
            415,
        ),
        (
            "unsupported patch type",
            "PATCH",
            format!("{cms}/x"),
            vec![("content-type", "application/json")],
            b"{}".to_vec(),
            415,
        ),
        (
            "body over 3 MiB",
            "POST",
            cms.into(),
            vec![("content-type", "application/json")],
            big.into_bytes(),
            413,
        ),
        (
            "invalid name",
            "POST",
            cms.into(),
            vec![("content-type", "application/json")],
            br#"{"metadata":{"name":"UPPER case"}}"#.to_vec(),
            422,
        ),
        (
            "namespace mismatch",
            "POST",
            cms.into(),
            vec![("content-type", "application/json")],
            br#"{"metadata":{"name":"a","namespace":"kube-system"}}"#.to_vec(),
            400,
        ),
        (
            "kind mismatch",
            "POST",
            cms.into(),
            vec![("content-type", "application/json")],
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"}}"#.to_vec(),
            400,
        ),
        (
            "force on a non-apply patch",
            "PATCH",
            format!("{cms}/x?force=true"),
            vec![("content-type", "application/merge-patch+json")],
            b"{}".to_vec(),
            422,
        ),
        (
            "bad label selector",
            "GET",
            format!("{cms}?labelSelector=a%20in%20("),
            vec![],
            vec![],
            400,
        ),
        (
            "bad limit",
            "GET",
            format!("{cms}?limit=lots"),
            vec![],
            vec![],
            400,
        ),
        (
            "bad watch rv",
            "GET",
            format!("{cms}?watch=1&resourceVersion=abc"),
            vec![],
            vec![],
            400,
        ),
        (
            "method not allowed",
            "PUT",
            cms.into(),
            vec![("content-type", "application/json")],
            b"{}".to_vec(),
            405,
        ),
        (
            "bad propagation policy",
            "DELETE",
            format!("{cms}/x"),
            vec![("content-type", "application/json")],
            br#"{"propagationPolicy":"Sideways"}"#.to_vec(),
            422,
        ),
    ];
    for (what, method, path, headers, body, want) in cases {
        let r = call(&tb, method, &path, &headers, body).await;
        assert_eq!(r.code, want, "{what}: {}", r.body);
        assert_eq!(r.body["kind"], "Status", "{what}");
        assert_eq!(r.body["status"], "Failure", "{what}");
        assert_eq!(r.body["code"], want, "{what}");
    }
    let r = call(
        &tb,
        "DELETE",
        &format!("{cms}/x"),
        &[("content-type", "application/json")],
        br#"{"propagationPolicy":"Sideways"}"#.to_vec(),
    )
    .await;
    assert_eq!(r.body["details"]["causes"][0]["field"], "propagationPolicy");
    tb.store().check_consistency().unwrap();
    tb.shutdown().await;
}

#[tokio::test]
async fn faults_fail_delay_and_cut_watches_and_stats_count_requests() {
    let tb = testbed().await;
    let cms = "/api/v1/namespaces/default/configmaps";

    // Through HTTP: invalid configs are refused naming the field.
    let r = post_json(&tb, "/testbed/faults", &json!({"errorRate": 3})).await;
    assert_eq!(r.code, 400);
    assert!(r.body["message"].as_str().unwrap().contains("errorRate"));

    let r = post_json(
        &tb,
        "/testbed/faults",
        &json!({"errorRate": 1.0, "errorCodes": [429], "verbs": ["LIST"]}),
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.body);
    let r = call(&tb, "GET", cms, &[], vec![]).await;
    assert_eq!(r.code, 429);
    assert_eq!(r.headers.get("retry-after").unwrap(), "1");
    assert_eq!(
        call(&tb, "GET", "/api/v1/namespaces/default", &[], vec![])
            .await
            .code,
        200,
        "only LIST fails"
    );

    tb.faults()
        .set(FaultConfig {
            error_rate: 1.0,
            error_codes: vec![500, 503],
            ..FaultConfig::default()
        })
        .unwrap();
    for _ in 0..10 {
        let code = call(&tb, "GET", cms, &[], vec![]).await.code;
        assert!(code == 500 || code == 503, "{code}");
    }
    tb.faults().clear();

    tb.faults()
        .set(FaultConfig {
            latency_ms: 150,
            ..FaultConfig::default()
        })
        .unwrap();
    let t = Instant::now();
    assert_eq!(call(&tb, "GET", cms, &[], vec![]).await.code, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    tb.faults().clear();

    // Watches are cut after watchCloseSeconds.
    tb.faults()
        .set(FaultConfig {
            watch_close_seconds: 0.3,
            ..FaultConfig::default()
        })
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(tb.client().unwrap(), "default");
    let mut s = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while s.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "watch was not closed by the fault");
    tb.faults().clear();

    let stats = call(
        &tb,
        "GET",
        "/testbed/stats",
        &[("user-agent", "stats-test")],
        vec![],
    )
    .await
    .body;
    assert!(stats["byVerb"]["LIST"].as_u64().unwrap() >= 12, "{stats}");
    assert_eq!(stats["byVerb"]["WATCH"], 1);
    assert!(stats["byResource"]["configmaps"].as_u64().unwrap() >= 13);
    assert!(stats["faultsInjected"].as_u64().unwrap() >= 11);
    assert_eq!(tb.stats().snapshot().by_verb.get("GET"), Some(&1));
    let agents: Vec<&String> = stats["byUserAgent"].as_object().unwrap().keys().collect();
    assert!(!agents.is_empty());

    // Compaction on demand: an old RV becomes 410.
    let before = tb.store().current_rv();
    assert_eq!(
        post_json(&tb, cms, &json!({"metadata": {"name": "after"}}))
            .await
            .code,
        201
    );
    assert_eq!(
        post_json(&tb, "/testbed/faults", &json!({"compact": true}))
            .await
            .code,
        200
    );
    let mut s = api
        .watch(&WatchParams::default(), &before.to_string())
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(2), s.next()).await {
        Ok(Some(Ok(kube::api::WatchEvent::Error(e)))) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn the_binary_prints_its_urls_writes_a_kubeconfig_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_flagger-testbed"))
        .args(["serve", "--ready-delay", "200ms", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let api = lines.next_line().await.unwrap().unwrap();
    let metrics = lines.next_line().await.unwrap().unwrap();
    let api_url = api
        .strip_prefix("api: http://127.0.0.1:")
        .map(|p| format!("http://127.0.0.1:{p}"));
    assert!(api_url.is_some(), "{api}");
    assert!(
        metrics.starts_with("metrics: http://127.0.0.1:"),
        "{metrics}"
    );
    let yaml = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        yaml.contains(&format!("server: {}", api_url.clone().unwrap())),
        "{yaml}"
    );
    // The written kubeconfig works for a kube client.
    let kc: kube::config::Kubeconfig = serde_saphyr::from_str(&yaml).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    assert!(
        cms.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let pid = child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn the_metrics_port_serves_the_mesh() {
    let tb = testbed().await;
    let mut cfg = kube::Config::new(tb.metrics_url().parse().unwrap());
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).unwrap();
    let req = http::Request::get("/api/v1/query?query=vector(1)")
        .body(Vec::new())
        .unwrap();
    let v: Value = client.request(req).await.unwrap();
    assert_eq!(v["status"], "success", "{v}");
    tb.shutdown().await;
}
