//! End-to-end tests of issue 7's metrics and webhook faults and secret handling: the real
//! `flagger` binary against the testbed, with loopback fault servers (tests/e2e/faults.rs).
//!
//! - Every way a Prometheus or a webhook can fail (timing out, garbage, `status: error`, 5xx,
//!   refused connections; plain "Prometheus unreachable" is in e2e_analysis.rs) halts the
//!   analysis with a failed check and a Warning event that says which fault it was; the canary
//!   rolls back after `threshold` checks and is never promoted without passing data.
//! - Secret material handed to the operator (a Slack URL with its token, AlertProvider addresses
//!   from Secrets, Prometheus bearer tokens and basic-auth passwords from Secrets, credentials in
//!   a metrics server URL, an event-webhook token) reaches the loopback sinks and appears in no
//!   log line, no Kubernetes event and no admin endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/harness.rs"]
mod harness;

#[path = "e2e/badinput.rs"]
mod badinput;

#[path = "e2e/faults.rs"]
mod faults;

use std::collections::BTreeMap;
use std::time::Duration;

use badinput::{all_events_json, canary_for, deployment, events, primary_image};
use faults::{HookFault, PromFault, Reply, Sink, closed_port_url, vector};
use harness::{Cluster, Operator, serial};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

const READY: Duration = Duration::from_millis(300);
const IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const NEW_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";

/// Credentials placed in the URLs of the faulty servers; they must never be shown.
const URL_PASSWORD: &str = "prom-url-pass-5150";
const HOOK_TOKEN: &str = "hook-url-token-8086";

fn with_credentials(url: &str) -> String {
    url.replace("http://", &format!("http://admin:{URL_PASSWORD}@"))
}

/// The event text with the parts that differ per canary (names, ports) taken out.
fn shape(message: &str, name: &str, ns: &str) -> String {
    let text = message.replace(&format!("{name}.{ns}"), "<canary>");
    without_port(&text).unwrap_or(text)
}

/// `127.0.0.1:43121` → `127.0.0.1:<port>`, so texts compare across servers.
fn without_port(text: &str) -> Option<String> {
    let at = text.find("127.0.0.1:")? + "127.0.0.1:".len();
    let end = text[at..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(text.len(), |e| at + e);
    Some(format!("{}<port>{}", &text[..at], &text[end..]))
}

/// Prometheus timing out, answering garbage, answering `status: error` and answering 503;
/// webhooks timing out, answering 500 and refusing connections. Each canary halts with failed
/// checks, rolls back, keeps its primary, and its halt event names its own fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_webhook_faults_halt_with_distinct_events_and_never_promote() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    let ns = "e2e-faults";
    cluster.namespace(ns).await;
    let op = Operator::start(&cluster, &[]).await;

    let mut servers: Vec<Sink> = Vec::new();
    let mut expected: Vec<(&'static str, &'static str)> = Vec::new();
    for fault in PromFault::ALL {
        let server = faults::prometheus(fault);
        let name = fault.name();
        cluster
            .create::<Deployment>(ns, deployment(ns, name, IMAGE))
            .await;
        let mut c = canary_for(
            ns,
            name,
            json!({"interval": "1s", "threshold": 2, "maxWeight": 20, "stepWeight": 10,
                   "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                                "interval": "1m"}]}),
        );
        c["spec"]["metricsServer"] = json!(with_credentials(&server.url));
        cluster.create_canary(ns, c).await;
        servers.push(server);
        expected.push((
            name,
            match fault {
                PromFault::Timeout => "Prometheus query failed: running query failed: request failed: timeout after 5s",
                PromFault::Garbage => "Prometheus query failed: running query failed: error unmarshaling result",
                PromFault::ErrorBody => {
                    "Prometheus query failed: running query failed: error response: bad_data: invalid parameter"
                }
                PromFault::Unavailable => {
                    "Prometheus query failed: running query failed: error response: Status 503 Service Unavailable: service unavailable: too many queries"
                }
            },
        ));
    }
    for fault in HookFault::ALL {
        let (url, server) = faults::webhook(fault);
        let name = fault.name();
        cluster
            .create::<Deployment>(ns, deployment(ns, name, IMAGE))
            .await;
        cluster
            .create_canary(
                ns,
                canary_for(
                    ns,
                    name,
                    json!({"interval": "1s", "threshold": 2, "maxWeight": 20, "stepWeight": 10,
                           "webhooks": [{"name": "load-test", "type": "rollout", "timeout": "1s",
                                         "url": format!("{url}/?token={HOOK_TOKEN}")}]}),
                ),
            )
            .await;
        servers.extend(server);
        expected.push((
            name,
            match fault {
                HookFault::Timeout => "giving up after 1 attempt(s): timeout after 1s",
                HookFault::ServerError => {
                    "giving up after 1 attempt(s): status 500: load test failed: 37% errors"
                }
                HookFault::Refused => "giving up after 1 attempt(s): ",
            },
        ));
    }
    for (name, _) in &expected {
        cluster
            .wait_phase(&op, ns, name, "Initialized", Duration::from_secs(30))
            .await;
        cluster.set_image(ns, name, NEW_IMAGE).await;
    }

    let mut halts = BTreeMap::new();
    for (name, fragment) in &expected {
        cluster
            .wait_phase(&op, ns, name, "Failed", Duration::from_secs(60))
            .await;
        let seen = events(&cluster, ns, name).await;
        let halt = seen
            .iter()
            .find(|e| e.type_ == "Warning" && e.message.contains(fragment))
            .unwrap_or_else(|| panic!("{name}: no Warning containing {fragment:?}: {seen:#?}"))
            .message
            .clone();
        if name.starts_with("hook") {
            assert!(
                halt.starts_with(&format!(
                    "Halt {name}.{ns} advancement external check load-test failed POST http://127.0.0.1:"
                )),
                "{halt}"
            );
        }
        if *name == "hook-refused" {
            // Whatever the OS calls it, it is not a status or a timeout.
            assert!(
                !halt.contains("status") && !halt.contains("timeout"),
                "{halt}"
            );
        }
        assert!(
            seen.iter().any(|e| e.message
                == format!("Rolling back {name}.{ns} failed checks threshold reached 2")),
            "{name}: {seen:#?}"
        );
        // The first step (weight 10) is taken before there is traffic to measure, as upstream;
        // no step after it and no promotion happen without passing data.
        let second_step = format!("Advance {name}.{ns} canary weight 20");
        assert!(
            !seen
                .iter()
                .any(|e| e.message.starts_with("Copying") || e.message == second_step),
            "{name} advanced or promoted without passing data: {seen:#?}"
        );
        assert_eq!(
            primary_image(&cluster, ns, name).await.as_deref(),
            Some(IMAGE),
            "{name}"
        );
        halts.insert(*name, shape(&halt, name, ns));
    }
    println!("halt events: {halts:#?}");
    let distinct: std::collections::BTreeSet<&String> = halts.values().collect();
    assert_eq!(
        distinct.len(),
        halts.len(),
        "fault texts collide: {halts:#?}"
    );

    // No credential of the URLs leaked into events or logs.
    let logs = op.tail(usize::MAX);
    for secret in [URL_PASSWORD, HOOK_TOKEN] {
        for e in all_events_json(&cluster).await {
            assert!(!e.contains(secret), "{secret} in event {e}");
        }
        assert!(!logs.contains(secret), "{secret} in the operator's logs");
    }
    drop(servers);
}

/// A Prometheus that checks credentials the way a real one behind a proxy does: answers the
/// builtin success-rate query with 100 and anything else with 1, and 401 (echoing the
/// Authorization header, as careless proxies do) when `echo` is part of the query.
fn prometheus_with_auth() -> Sink {
    Sink::start(|req, _| {
        let query = req.param("query").unwrap_or_default();
        if query.contains("echo") {
            let auth = req.header("authorization").unwrap_or("none").to_owned();
            Reply::status(401, format!("bad credentials: {auth}"))
        } else if query.contains("istio_requests_total") {
            Reply::ok(vector(100.0))
        } else {
            Reply::ok(vector(1.0))
        }
    })
}

async fn secret(cluster: &Cluster, ns: &str, name: &str, data: Value) {
    cluster
        .create::<Secret>(
            ns,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
                   "stringData": data}),
        )
        .await;
}

async fn get_text(url: String) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Secrets given to the operator reach their destinations and nothing else: 0 hits in every log
/// line, every Kubernetes event, `/metrics`, `/readyz` and `/healthz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_events_or_admin_endpoints() {
    use base64::Engine as _;
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    let ns = "e2e-secrets";
    cluster.namespace(ns).await;

    const SLACK: &str = "xoxb-slack-token-0a1b2c";
    const ALERT: &str = "alert-hook-secret-3d4e5f";
    const DOWN: &str = "down-hook-secret-778899";
    const BEARER: &str = "prom-bearer-token-112233";
    const PASSWORD: &str = "prom-basic-password-445566";
    const URL_PASS: &str = "metrics-url-password-ddeeff";
    const EVENT: &str = "event-webhook-token-aabbcc";
    const ECHO: &str = "prom-echo-token-998877";
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("svc-reader:{PASSWORD}"));

    // Sinks: a Slack that refuses (error path), a working alert webhook, an event webhook.
    let slack = Sink::always(Reply::status(500, "invalid_token"));
    let alert = Sink::always(Reply::ok("ok"));
    let event_hook = Sink::always(Reply::ok(""));
    let prometheus = prometheus_with_auth();
    let slack_url = format!("{}/services/T000/B000/{SLACK}", slack.url);
    let event_url = format!("{}/events?token={EVENT}", event_hook.url);

    secret(
        &cluster,
        ns,
        "team-slack",
        json!({"address": format!("{}/hooks/{ALERT}", alert.url)}),
    )
    .await;
    secret(
        &cluster,
        ns,
        "down-slack",
        json!({"address": format!("{}/hooks/{DOWN}", closed_port_url())}),
    )
    .await;
    secret(&cluster, ns, "prom-bearer", json!({"token": BEARER})).await;
    secret(
        &cluster,
        ns,
        "prom-basic",
        json!({"username": "svc-reader", "password": PASSWORD}),
    )
    .await;
    secret(&cluster, ns, "prom-echo", json!({"token": ECHO})).await;
    for (name, secret) in [("team", "team-slack"), ("down", "down-slack")] {
        cluster
            .create_flagger(
                ns,
                "alertproviders",
                json!({
                    "apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"type": "slack", "channel": "releases", "secretRef": {"name": secret}}
                }),
            )
            .await;
    }
    for (name, secret, query) in [
        ("bearer", "prom-bearer", "sum(errors_total)"),
        ("basic", "prom-basic", "sum(errors_total)"),
        ("echo", "prom-echo", "sum(echo_total)"),
    ] {
        cluster
            .create_flagger(
                ns,
                "metrictemplates",
                json!({
                    "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"provider": {"type": "prometheus", "address": prometheus.url,
                                          "secretRef": {"name": secret}},
                             "query": query}
                }),
            )
            .await;
    }

    let op = Operator::start(
        &cluster,
        &[
            "--slack-url",
            &slack_url,
            "--slack-channel",
            "releases",
            "--event-webhook",
            &event_url,
        ],
    )
    .await;
    let metrics_server = prometheus
        .url
        .replace("http://", &format!("http://reader:{URL_PASS}@"));
    cluster
        .create::<Deployment>(ns, deployment(ns, "podinfo", IMAGE))
        .await;
    cluster
        .create::<Deployment>(ns, deployment(ns, "echo", IMAGE))
        .await;
    let mut good = canary_for(
        ns,
        "podinfo",
        json!({"interval": "1s", "threshold": 3, "maxWeight": 20, "stepWeight": 10,
        "metrics": [
            {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
            {"name": "errors-bearer", "templateRef": {"name": "bearer"}, "thresholdRange": {"max": 5}},
            {"name": "errors-basic", "templateRef": {"name": "basic"}, "thresholdRange": {"max": 5}}
        ],
        "alerts": [
            {"name": "team", "severity": "info", "providerRef": {"name": "team"}},
            {"name": "down", "severity": "info", "providerRef": {"name": "down"}}
        ]}),
    );
    good["spec"]["metricsServer"] = json!(metrics_server);
    cluster.create_canary(ns, good).await;
    // Uses the global Slack (no alerts of its own) and fails on the echoing Prometheus.
    cluster
        .create_canary(
            ns,
            canary_for(
                ns,
                "echo",
                json!({"interval": "1s", "threshold": 2, "maxWeight": 20, "stepWeight": 10,
                       "metrics": [{"name": "echo", "templateRef": {"name": "echo"},
                                    "thresholdRange": {"max": 5}}]}),
            ),
        )
        .await;
    for name in ["podinfo", "echo"] {
        cluster
            .wait_phase(&op, ns, name, "Initialized", Duration::from_secs(20))
            .await;
        cluster.set_image(ns, name, NEW_IMAGE).await;
    }
    cluster
        .wait_phase(&op, ns, "podinfo", "Succeeded", Duration::from_secs(40))
        .await;
    cluster
        .wait_phase(&op, ns, "echo", "Failed", Duration::from_secs(40))
        .await;
    // Let the last notifications and forwarded events go out.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Each secret was used: it reached its sink.
    let requests = prometheus.requests();
    let auth: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.header("authorization"))
        .collect();
    assert!(
        auth.contains(&format!("Bearer {BEARER}").as_str()),
        "{auth:?}"
    );
    assert!(
        auth.contains(&format!("Basic {basic}").as_str()),
        "{auth:?}"
    );
    assert!(
        auth.contains(&format!("Bearer {ECHO}").as_str()),
        "{auth:?}"
    );
    let url_basic = base64::engine::general_purpose::STANDARD.encode(format!("reader:{URL_PASS}"));
    assert!(
        auth.contains(&format!("Basic {url_basic}").as_str()),
        "{auth:?}"
    );
    assert!(
        alert
            .requests()
            .iter()
            .any(|r| r.path == format!("/hooks/{ALERT}")),
        "alert sink: {:#?}",
        alert.requests()
    );
    assert!(
        slack.requests().iter().any(|r| r.path.ends_with(SLACK)),
        "slack sink: {:#?}",
        slack.requests()
    );
    assert!(
        event_hook
            .requests()
            .iter()
            .any(|r| r.query.as_deref() == Some(&format!("token={EVENT}"))),
        "event sink: {:#?}",
        event_hook.requests()
    );
    // The echoing Prometheus made the error path run (its text is in an event, scrubbed).
    let echo_events = events(&cluster, ns, "echo").await;
    assert!(
        echo_events
            .iter()
            .any(|e| e.message.contains("Status 401") && e.message.contains("bad credentials")),
        "{echo_events:#?}"
    );

    // And it appears nowhere else.
    let admin = format!("http://{}", op.admin);
    let surfaces: Vec<(String, String)> = vec![
        ("logs".into(), op.tail(usize::MAX)),
        ("events".into(), all_events_json(&cluster).await.join("\n")),
        (
            "/metrics".into(),
            get_text(format!("{admin}/metrics")).await,
        ),
        ("/readyz".into(), get_text(format!("{admin}/readyz")).await),
        (
            "/healthz".into(),
            get_text(format!("{admin}/healthz")).await,
        ),
    ];
    let url_basic_secret = url_basic.clone();
    let secrets = [
        SLACK,
        ALERT,
        DOWN,
        BEARER,
        PASSWORD,
        URL_PASS,
        EVENT,
        ECHO,
        &basic,
        &url_basic_secret,
    ];
    let mut hits = Vec::new();
    for (surface, text) in &surfaces {
        assert!(!text.is_empty(), "{surface} is empty");
        for s in secrets {
            if text.contains(s) {
                hits.push(format!("{s} in {surface}"));
            }
        }
    }
    let log_lines = op.logs.lock().unwrap().len();
    let event_count = all_events_json(&cluster).await.len();
    println!(
        "secret scan: {log_lines} log lines, {event_count} events, {} secrets, {} hits",
        secrets.len(),
        hits.len()
    );
    assert!(hits.is_empty(), "secrets leaked: {hits:#?}");
}
