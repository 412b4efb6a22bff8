//! End-to-end tests of issue 4 (acceptance 2 a–h): the real `flagger` binary against the testbed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Cluster, Operator, canary, podinfo, serial};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

const READY: Duration = Duration::from_millis(300);

/// a. Initialization creates exactly the generated objects, routes 100/0, scales the target to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialization_creates_the_primary_services_and_routes() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    let ns = "e2e-init";
    cluster.namespace(ns).await;
    cluster
        .create::<Deployment>(ns, podinfo(ns, "ghcr.io/stefanprodan/podinfo:6.0.0"))
        .await;
    let op = Operator::start(&cluster, &[]).await;
    cluster
        .create_canary(ns, canary(ns, "1s", 10, 50, 30))
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;

    let c = cluster.canary(ns, "podinfo").await.unwrap();
    let uid = c["metadata"]["uid"].as_str().unwrap().to_owned();
    let owned = |meta: &serde_json::Value| {
        meta["ownerReferences"].as_array().is_some_and(|refs| {
            refs.iter().any(|r| {
                r["uid"] == uid.as_str() && r["kind"] == "Canary" && r["controller"] == true
            })
        })
    };

    let primary = cluster
        .deployment(ns, "podinfo-primary")
        .await
        .expect("primary");
    let pj = serde_json::to_value(&primary).unwrap();
    assert!(
        owned(&pj["metadata"]),
        "primary owner refs: {}",
        pj["metadata"]
    );
    assert_eq!(
        pj["spec"]["selector"]["matchLabels"],
        json!({"app": "podinfo-primary"})
    );
    assert_eq!(
        pj["spec"]["template"]["metadata"]["labels"]["app"],
        "podinfo-primary"
    );
    assert_eq!(
        pj["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/stefanprodan/podinfo:6.0.0"
    );

    for (svc, selector) in [
        ("podinfo", "podinfo-primary"),
        ("podinfo-primary", "podinfo-primary"),
        ("podinfo-canary", "podinfo"),
    ] {
        let s = serde_json::to_value(cluster.service(ns, svc).await.expect(svc)).unwrap();
        assert_eq!(s["spec"]["selector"], json!({"app": selector}), "{svc}");
        assert_eq!(s["spec"]["ports"][0]["port"], 9898, "{svc}");
        assert_eq!(s["spec"]["ports"][0]["name"], "http", "{svc}");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 9898, "{svc}");
        assert!(owned(&s["metadata"]), "{svc} owner refs");
    }
    assert_eq!(cluster.vs_weights(ns, "podinfo").await, Some((100, 0)));
    let vs = cluster
        .istio(ns, "VirtualService", "virtualservices", "podinfo")
        .await
        .unwrap();
    assert_eq!(vs.data["spec"]["hosts"], json!(["podinfo"]));
    assert_eq!(vs.data["spec"]["gateways"], json!(["mesh"]));
    for dr in ["podinfo-primary", "podinfo-canary"] {
        let d = cluster
            .istio(ns, "DestinationRule", "destinationrules", dr)
            .await
            .expect(dr);
        assert_eq!(d.data["spec"]["host"], dr);
    }
    let target = cluster.deployment(ns, "podinfo").await.unwrap();
    assert_eq!(target.spec.unwrap().replicas, Some(0), "target scaled to 0");
    let events = cluster.events(ns, "podinfo").await;
    assert!(
        events
            .iter()
            .any(|(t, m)| t == "Normal" && m == &format!("Initialization done! podinfo.{ns}")),
        "{events:?}"
    );
    assert!(
        op.messages(&format!("podinfo.{ns}"))
            .contains(&format!("Initialization done! podinfo.{ns}"))
    );
}

/// Starts a cluster with podinfo 6.0.0 in `ns`, the operator and an initialized canary.
async fn initialized(
    ns: &str,
    interval: &str,
    step: u32,
    max: u32,
    deadline: u32,
) -> (Cluster, Operator) {
    let cluster = Cluster::start(READY).await;
    cluster.namespace(ns).await;
    cluster
        .create::<Deployment>(ns, podinfo(ns, "ghcr.io/stefanprodan/podinfo:6.0.0"))
        .await;
    let op = Operator::start(&cluster, &[]).await;
    cluster
        .create_canary(ns, canary(ns, interval, step, max, deadline))
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;
    (cluster, op)
}

/// Asserts `expected` appear in `actual` in this order (other lines may come between).
fn assert_in_order(actual: &[String], expected: &[String]) {
    let mut it = actual.iter();
    for e in expected {
        assert!(
            it.any(|a| a == e),
            "missing or out of order: {e:?}\nexpected order: {expected:#?}\nactual: {actual:#?}"
        );
    }
}

async fn primary_image(cluster: &Cluster, ns: &str) -> String {
    let d = cluster.deployment(ns, "podinfo-primary").await.unwrap();
    d.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

async fn target_replicas(cluster: &Cluster, ns: &str) -> Option<i32> {
    cluster
        .deployment(ns, "podinfo")
        .await
        .unwrap()
        .spec
        .unwrap()
        .replicas
}

/// b. `set image` → promotion with the seed's event sequence (step 5, max 50).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_image_is_promoted_with_the_seed_event_sequence() {
    let _serial = serial().await;
    let ns = "e2e-promote";
    let (cluster, op) = initialized(ns, "1s", 5, 50, 30).await;
    cluster
        .set_image(ns, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Succeeded", Duration::from_secs(45))
        .await;

    let id = format!("podinfo.{ns}");
    let mut expected = vec![format!("New revision detected! Scaling up {id}")];
    expected.extend((1..=10).map(|i| format!("Advance {id} canary weight {}", i * 5)));
    expected.push(format!(
        "Copying {id} template spec to podinfo-primary.{ns}"
    ));
    expected.push(format!("Promotion completed! Scaling down {id}"));
    assert_in_order(&op.messages(&id), &expected);
    let events: Vec<String> = cluster
        .events(ns, "podinfo")
        .await
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    for e in &expected {
        assert!(events.contains(e), "event {e:?} missing from {events:#?}");
    }
    assert_eq!(
        primary_image(&cluster, ns).await,
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    assert_eq!(target_replicas(&cluster, ns).await, Some(0));
    assert_eq!(cluster.vs_weights(ns, "podinfo").await, Some((100, 0)));
    let c = cluster.canary(ns, "podinfo").await.unwrap();
    assert_eq!(c["status"]["canaryWeight"], 0);
    assert_eq!(c["status"]["conditions"][0]["type"], "Promoted");
    assert_eq!(c["status"]["conditions"][0]["status"], "True");
}

/// c. A never-ready image is rolled back after progressDeadlineSeconds; the primary is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_image_rolls_back_after_the_progress_deadline() {
    let _serial = serial().await;
    let ns = "e2e-deadline";
    let (cluster, op) = initialized(ns, "1s", 10, 50, 4).await;
    let d = cluster.deployment(ns, "podinfo").await.unwrap();
    let mut containers =
        serde_json::to_value(&d.spec.unwrap().template.spec.unwrap().containers).unwrap();
    containers[0]["image"] = json!("ghcr.io/stefanprodan/podinfo:broken");
    cluster
        .merge_patch_deployment(
            ns,
            "podinfo",
            json!({"spec": {"template": {
                "metadata": {"annotations": {"testbed.flagger.app/never-ready": "true"}},
                "spec": {"containers": containers}
            }}}),
        )
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Failed", Duration::from_secs(30))
        .await;
    let id = format!("podinfo.{ns}");
    let messages = op.messages(&id);
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with(&format!("Rolling back {id} progress deadline exceeded"))),
        "{messages:#?}"
    );
    assert!(messages.contains(&format!("Canary failed! Scaling down {id}")));
    assert!(
        !messages.iter().any(|m| m.starts_with("Advance")),
        "{messages:#?}"
    );
    assert_eq!(
        primary_image(&cluster, ns).await,
        "ghcr.io/stefanprodan/podinfo:6.0.0"
    );
    assert_eq!(target_replicas(&cluster, ns).await, Some(0));
    assert_eq!(cluster.vs_weights(ns, "podinfo").await, Some((100, 0)));
}

/// e. A change during the analysis restarts it; the last revision is the one promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_during_analysis_restarts_it() {
    let _serial = serial().await;
    let ns = "e2e-restart";
    let (cluster, op) = initialized(ns, "1s", 10, 30, 30).await;
    let id = format!("podinfo.{ns}");
    cluster
        .set_image(ns, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
        .await;
    let advanced = format!("Advance {id} canary weight 20");
    harness::wait_for("weight 20", Duration::from_secs(20), || async {
        op.messages(&id).contains(&advanced).then_some(())
    })
    .await;
    cluster
        .set_image(ns, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.2")
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Succeeded", Duration::from_secs(30))
        .await;
    assert_in_order(
        &op.messages(&id),
        &[
            format!("New revision detected! Scaling up {id}"),
            advanced.clone(),
            format!("New revision detected! Restarting analysis for {id}"),
            format!("Advance {id} canary weight 10"),
            format!("Advance {id} canary weight 30"),
            format!("Promotion completed! Scaling down {id}"),
        ],
    );
    assert_eq!(
        primary_image(&cluster, ns).await,
        "ghcr.io/stefanprodan/podinfo:6.0.2"
    );
}

/// g. With `interval: 30s`, a new revision is noticed through the watch well before the tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_revision_is_detected_within_two_seconds_with_a_30s_interval() {
    let _serial = serial().await;
    let ns = "e2e-detect";
    let (cluster, op) = initialized(ns, "30s", 10, 50, 60).await;
    let id = format!("podinfo.{ns}");
    // Let the initialization tick's follow-ups settle so the next tick is 30 s away.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let changed = std::time::Instant::now();
    cluster
        .set_image(ns, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
        .await;
    let detected_msg = format!("New revision detected! Scaling up {id}");
    let seen = harness::wait_for("New revision detected", Duration::from_secs(5), || async {
        op.first_seen(&id, &detected_msg)
    })
    .await;
    let latency = seen.saturating_duration_since(changed);
    println!("detection latency: {latency:?}");
    assert!(
        latency < Duration::from_secs(2),
        "detected after {latency:?}"
    );
    let events: Vec<String> = cluster
        .events(ns, "podinfo")
        .await
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert!(events.contains(&detected_msg), "{events:#?}");
}
