//! End-to-end tests of issue 7's bad input: Canaries the typed API cannot hold, invalid specs,
//! missing or unusable references and `--no-cross-namespace-refs`, with the real `flagger` binary
//! against the testbed. A user must always be told on the object itself (a `Valid=False` condition
//! naming the field and one Warning event), and no other canary may notice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/harness.rs"]
mod harness;

#[path = "e2e/badinput.rs"]
mod badinput;

use std::time::Duration;

use badinput::{
    canary_for, condition, create_raw_canary, deployment, events, patch_canary, primary_image,
    raw_canary,
};
use harness::{Cluster, Operator, canary, podinfo, serial, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

const READY: Duration = Duration::from_millis(300);
const IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const NEW_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";

/// Waits until the Canary has `Valid=False`; returns its message.
async fn wait_invalid(cluster: &Cluster, op: &Operator, ns: &str, name: &str) -> String {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let c = raw_canary(cluster, ns, name).await;
            if let Some(v) = condition(&c, "Valid")
                && v["status"] == "False"
            {
                return v["message"].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    match found {
        Ok(message) => message,
        Err(_) => panic!(
            "canary {name}.{ns} never got Valid=False\n{}\nlogs:\n{}",
            cluster.describe(ns, name).await,
            op.tail(40)
        ),
    }
}

/// The Warning events of one Canary (each with its count).
async fn warnings(cluster: &Cluster, ns: &str, name: &str) -> Vec<badinput::Seen> {
    events(cluster, ns, name)
        .await
        .into_iter()
        .filter(|e| e.type_ == "Warning")
        .collect()
}

/// Exactly one Warning event, recorded once (count 1), naming `field`.
async fn assert_one_warning(cluster: &Cluster, ns: &str, name: &str, field: &str) {
    let w = warnings(cluster, ns, name).await;
    assert_eq!(w.len(), 1, "Warning events of {name}.{ns}: {w:#?}");
    assert_eq!(w[0].count, 1, "Warning recorded again: {w:#?}");
    assert!(w[0].message.contains(field), "{w:#?}");
}

/// A Canary whose JSON passes the CRD schema (which does not check `int32` ranges, like a real
/// API server) but does not fit the operator's types: the typed reflector would fail on it.
fn undecodable(ns: &str, name: &str, spec_patch: Value) -> Value {
    let mut c = canary_for(
        ns,
        name,
        json!({"interval": "1s", "threshold": 2, "maxWeight": 20, "stepWeight": 10}),
    );
    merge(&mut c["spec"], spec_patch);
    c
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

/// Canaries that cannot be decoded — one present at the operator's first LIST, one arriving by
/// watch — are reported on the object (Valid=False naming the field, one Warning) and in the log
/// (naming object and field), while a good canary next to them initializes and promotes. Fixing a
/// broken one brings it to life.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_canaries_are_reported_and_never_hide_the_others() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    let ns = "e2e-undecodable";
    cluster.namespace(ns).await;
    cluster.create::<Deployment>(ns, podinfo(ns, IMAGE)).await;
    cluster
        .create::<Deployment>(ns, deployment(ns, "late", IMAGE))
        .await;
    cluster
        .create_canary(ns, canary(ns, "1s", 10, 20, 30))
        .await;
    create_raw_canary(
        &cluster,
        ns,
        undecodable(
            ns,
            "listed",
            json!({"analysis": {"maxWeight": 4_294_967_296_i64}}),
        ),
    )
    .await;

    let op = Operator::start(&cluster, &[]).await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;
    create_raw_canary(
        &cluster,
        ns,
        undecodable(ns, "late", json!({"service": {"port": 99_999_999_999_i64}})),
    )
    .await;

    for (name, field) in [
        ("listed", "spec.analysis.maxWeight"),
        ("late", "spec.service.port"),
    ] {
        let message = wait_invalid(&cluster, &op, ns, name).await;
        assert!(message.contains(field), "{message}");
        assert!(message.contains("cannot be read"), "{message}");
        let logged = format!("Canary {name}.{ns} cannot be read: {field}");
        wait_for(
            &format!("log line {logged:?}"),
            Duration::from_secs(5),
            || {
                let found = op
                    .messages(&format!("{name}.{ns}"))
                    .iter()
                    .any(|m| m.starts_with(&logged));
                async move { found.then_some(()) }
            },
        )
        .await;
    }

    // The good canary is unaffected: it promotes a new image.
    cluster.set_image(ns, "podinfo", NEW_IMAGE).await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(
        primary_image(&cluster, ns, "podinfo").await.as_deref(),
        Some(NEW_IMAGE)
    );

    // Over all those ticks, each broken canary was told once, and nothing was created for it.
    assert_one_warning(&cluster, ns, "listed", "spec.analysis.maxWeight").await;
    assert_one_warning(&cluster, ns, "late", "spec.service.port").await;
    assert!(cluster.deployment(ns, "late-primary").await.is_none());

    // A fix is picked up by watch: the canary initializes and the condition goes.
    patch_canary(
        &cluster,
        ns,
        "late",
        json!({"spec": {"service": {"port": 9898}}}),
    )
    .await;
    cluster
        .wait_phase(&op, ns, "late", "Initialized", Duration::from_secs(20))
        .await;
    let fixed = raw_canary(&cluster, ns, "late").await;
    assert!(condition(&fixed, "Valid").is_none(), "{fixed:#}");
    assert!(cluster.deployment(ns, "late-primary").await.is_some());
}

/// An invalid spec (valid JSON, wrong values) gets `Valid=False` naming the field and exactly one
/// Warning event across many ticks: edits that keep the same problem, and an operator restart.
/// Fixing it lets the canary initialize.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_told_once_across_ticks_and_restarts() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    let ns = "e2e-invalid";
    cluster.namespace(ns).await;
    cluster.create::<Deployment>(ns, podinfo(ns, IMAGE)).await;
    let mut op = Operator::start(&cluster, &[]).await;
    // stepWeight above maxWeight, and an A/B match header given as a plain string (the CRD keeps
    // `match` free-form, so only the operator can catch it).
    let mut c = canary(ns, "1s", 60, 50, 30);
    c["spec"]["analysis"]["match"] = json!([{"headers": {"x-canary": "insider"}}]);
    c["spec"]["provider"] = json!("linkerd");
    cluster.create_canary(ns, c).await;
    let message = wait_invalid(&cluster, &op, ns, "podinfo").await;
    for field in [
        "spec.provider",
        "spec.analysis.stepWeight",
        "spec.analysis.match[0].headers.x-canary",
    ] {
        assert!(message.contains(field), "{field} missing from {message}");
    }

    // Ticks: each edit is a spec change the actor re-validates at once.
    let invalid_ticks = |op: &Operator| {
        op.messages(&format!("podinfo.{ns}"))
            .iter()
            .filter(|m| m.starts_with("spec invalid"))
            .count()
    };
    for threshold in [6, 7, 8] {
        let before = invalid_ticks(&op);
        patch_canary(
            &cluster,
            ns,
            "podinfo",
            json!({"spec": {"analysis": {"threshold": threshold}}}),
        )
        .await;
        wait_for("a tick on the edited spec", Duration::from_secs(10), || {
            let n = invalid_ticks(&op);
            async move { (n > before).then_some(()) }
        })
        .await;
    }
    op.kill();
    let op = Operator::start(&cluster, &[]).await;
    wait_for("a tick after the restart", Duration::from_secs(20), || {
        let n = invalid_ticks(&op);
        async move { (n > 0).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_one_warning(&cluster, ns, "podinfo", "spec.analysis.stepWeight").await;
    assert!(cluster.deployment(ns, "podinfo-primary").await.is_none());

    // Fixed: initializes, and the Valid condition is gone.
    patch_canary(
        &cluster,
        ns,
        "podinfo",
        json!({"spec": {"provider": null, "analysis": {"stepWeight": 10, "match": null}}}),
    )
    .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;
    let c = raw_canary(&cluster, ns, "podinfo").await;
    assert!(condition(&c, "Valid").is_none(), "{c:#}");
}

/// References to objects that do not exist or cannot be used: a missing MetricTemplate, a
/// MetricTemplate with a provider flagger-rs does not support, a missing AlertProvider. Each is
/// named in an event; the analysis counts failed checks and rolls back (as upstream does for a
/// missing template) instead of promoting without data; a missing alert provider never blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_unusable_references_are_named_and_never_promote() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    let ns = "e2e-refs";
    cluster.namespace(ns).await;
    for name in ["missing-template", "graphite", "missing-alerts"] {
        cluster
            .create::<Deployment>(ns, deployment(ns, name, IMAGE))
            .await;
    }
    cluster
        .create_flagger(
            ns,
            "metrictemplates",
            json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
                "metadata": {"name": "graphite-errors", "namespace": ns},
                "spec": {"provider": {"type": "graphite", "address": "http://127.0.0.1:9"},
                         "query": "sumSeries(errors)"}
            }),
        )
        .await;
    let op = Operator::start(&cluster, &[]).await;
    let analysis = |metric: Value| {
        json!({"interval": "1s", "threshold": 2, "maxWeight": 20, "stepWeight": 10,
               "metrics": [metric]})
    };
    cluster
        .create_canary(
            ns,
            canary_for(
                ns,
                "missing-template",
                analysis(json!({"name": "errors", "templateRef": {"name": "nope"},
                                 "thresholdRange": {"max": 1}})),
            ),
        )
        .await;
    cluster
        .create_canary(
            ns,
            canary_for(
                ns,
                "graphite",
                analysis(
                    json!({"name": "errors", "templateRef": {"name": "graphite-errors"},
                                 "thresholdRange": {"max": 1}}),
                ),
            ),
        )
        .await;
    let mut alerts = canary_for(
        ns,
        "missing-alerts",
        json!({"interval": "1s", "threshold": 2, "maxWeight": 20, "stepWeight": 10}),
    );
    alerts["spec"]["analysis"]["alerts"] =
        json!([{"name": "on-call", "severity": "info", "providerRef": {"name": "slack"}}]);
    cluster.create_canary(ns, alerts).await;
    for name in ["missing-template", "graphite", "missing-alerts"] {
        cluster
            .wait_phase(&op, ns, name, "Initialized", Duration::from_secs(20))
            .await;
        cluster.set_image(ns, name, NEW_IMAGE).await;
    }

    let expected = [
        (
            "missing-template",
            format!("Metric query failed for errors: metric template nope.{ns} not found"),
        ),
        (
            "graphite",
            format!(
                "Metric query failed for errors: metric template graphite-errors.{ns}: metric provider type graphite is not supported by flagger-rs, supported: prometheus"
            ),
        ),
    ];
    for (name, text) in &expected {
        cluster
            .wait_phase(&op, ns, name, "Failed", Duration::from_secs(30))
            .await;
        let seen = events(&cluster, ns, name).await;
        assert!(
            seen.iter()
                .any(|e| e.type_ == "Warning" && &e.message == text),
            "{text:?} missing from {seen:#?}"
        );
        // Initialization already warned about the provider.
        assert!(
            seen.iter().any(|e| e
                .message
                .starts_with("Error checking metric providers: metric template")),
            "{seen:#?}"
        );
        assert!(
            seen.iter().any(|e| e.message.starts_with(&format!(
                "Rolling back {name}.{ns} failed checks threshold reached 2"
            ))),
            "{seen:#?}"
        );
        assert!(
            !seen.iter().any(|e| e.message.starts_with("Copying")),
            "{seen:#?}"
        );
        assert_eq!(
            primary_image(&cluster, ns, name).await.as_deref(),
            Some(IMAGE)
        );
    }

    // Alerts are not a gate: the rollout promotes and the user hears that the provider is missing.
    cluster
        .wait_phase(
            &op,
            ns,
            "missing-alerts",
            "Succeeded",
            Duration::from_secs(30),
        )
        .await;
    let seen = events(&cluster, ns, "missing-alerts").await;
    let text = format!(
        "Alert provider slack.{ns} of alert on-call (spec.analysis.alerts[0].providerRef) not found; alert skipped"
    );
    assert!(
        seen.iter()
            .any(|e| e.type_ == "Warning" && e.message == text),
        "{text:?} missing from {seen:#?}"
    );
}

/// `--no-cross-namespace-refs`: a templateRef or providerRef naming another namespace is refused
/// (Valid=False and one Warning naming the field) and nothing is created; without the flag the
/// same Canary runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cross_namespace_refs_refuses_references_to_other_namespaces() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    let ns = "e2e-xns";
    cluster.namespace(ns).await;
    cluster.namespace("shared").await;
    cluster.create::<Deployment>(ns, podinfo(ns, IMAGE)).await;
    let mut c = canary(ns, "1s", 10, 20, 30);
    c["spec"]["analysis"]["metrics"] = json!([
        {"name": "errors", "templateRef": {"name": "errors", "namespace": "shared"},
         "thresholdRange": {"max": 1}}
    ]);
    c["spec"]["analysis"]["alerts"] = json!([
        {"name": "on-call", "providerRef": {"name": "slack", "namespace": "shared"}}
    ]);
    cluster.create_canary(ns, c).await;

    let mut op = Operator::start(&cluster, &["--no-cross-namespace-refs"]).await;
    let message = wait_invalid(&cluster, &op, ns, "podinfo").await;
    for field in [
        "spec.analysis.metrics[0].templateRef.namespace",
        "spec.analysis.alerts[0].providerRef.namespace",
    ] {
        assert!(message.contains(field), "{field} missing from {message}");
    }
    assert!(
        message.contains(
            "can't access metric template errors.shared, cross-namespace references are blocked"
        ),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_one_warning(
        &cluster,
        ns,
        "podinfo",
        "spec.analysis.metrics[0].templateRef.namespace",
    )
    .await;
    assert!(cluster.deployment(ns, "podinfo-primary").await.is_none());

    // Without the flag the references are allowed.
    op.kill();
    let op = Operator::start(&cluster, &[]).await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;
    let c = raw_canary(&cluster, ns, "podinfo").await;
    assert!(condition(&c, "Valid").is_none(), "{c:#}");
}
