//! End-to-end tests of issue 4 (acceptance 2 a–h): the real `flagger` binary against the testbed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/kubectl.rs"]
mod kubectl;

use std::time::Duration;

use harness::{Cluster, Operator, assert_in_order, canary, podinfo, serial};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
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
        cluster.image(ns, "podinfo-primary").await,
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    assert_eq!(cluster.replicas(ns, "podinfo").await, Some(0));
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
        cluster.image(ns, "podinfo-primary").await,
        "ghcr.io/stefanprodan/podinfo:6.0.0"
    );
    assert_eq!(cluster.replicas(ns, "podinfo").await, Some(0));
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
        cluster.image(ns, "podinfo-primary").await,
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

/// The Deployment `podinfo` reading ConfigMap `podinfo-config` through a volume and `envFrom`.
fn podinfo_with_config(ns: &str, image: &str) -> serde_json::Value {
    let mut d = podinfo(ns, image);
    d["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "config", "configMap": {"name": "podinfo-config"}}]);
    let container = &mut d["spec"]["template"]["spec"]["containers"][0];
    container["envFrom"] = json!([{"configMapRef": {"name": "podinfo-config"}}]);
    container["volumeMounts"] = json!([{"name": "config", "mountPath": "/etc/podinfo"}]);
    d
}

/// Names of the ConfigMaps a pod template references (volumes and envFrom), sorted.
fn config_names(d: &Deployment) -> Vec<String> {
    let pod =
        serde_json::to_value(d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()).unwrap();
    let mut names: Vec<String> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["configMap"]["name"].as_str().map(str::to_owned))
        .chain(
            pod["containers"][0]["envFrom"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["configMapRef"]["name"].as_str().map(str::to_owned)),
        )
        .collect();
    names.sort();
    names
}

/// d. A change of a tracked ConfigMap starts an analysis; promotion updates the `-primary` copy,
/// which the primary references.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_map_change_is_analysed_and_promoted_to_the_primary_copy() {
    let _serial = serial().await;
    let ns = "e2e-config";
    let cluster = Cluster::start(READY).await;
    cluster.namespace(ns).await;
    cluster
        .create::<k8s_openapi::api::core::v1::ConfigMap>(
            ns,
            json!({"metadata": {"name": "podinfo-config"}, "data": {"color": "blue"}}),
        )
        .await;
    cluster
        .create::<Deployment>(
            ns,
            podinfo_with_config(ns, "ghcr.io/stefanprodan/podinfo:6.0.0"),
        )
        .await;
    let op = Operator::start(&cluster, &[]).await;
    cluster
        .create_canary(ns, canary(ns, "1s", 10, 30, 30))
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;

    let copy = cluster
        .config_map(ns, "podinfo-config-primary")
        .await
        .expect("-primary copy created at initialization");
    assert_eq!(copy.data.unwrap()["color"], "blue");
    let primary = cluster.deployment(ns, "podinfo-primary").await.unwrap();
    assert_eq!(
        config_names(&primary),
        ["podinfo-config-primary", "podinfo-config-primary"],
        "the primary reads the -primary copy"
    );
    let c = cluster.canary(ns, "podinfo").await.unwrap();
    let tracked = c["status"]["trackedConfigs"]["configmap/podinfo-config"].clone();
    assert!(tracked.is_string(), "trackedConfigs: {}", c["status"]);

    // Steady-state ticks (1 s) read the target, its ConfigMap and the routes from the caches:
    // no GET, no LIST, no write.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.testbed.stats().reset();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = cluster.testbed.stats().snapshot();
    let requests: u64 = ["GET", "LIST", "POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .map(|v| stats.by_verb.get(*v).copied().unwrap_or(0))
        .sum();
    assert_eq!(
        requests, 0,
        "steady ticks made requests: {:?}",
        stats.by_verb_and_resource
    );

    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(cluster.client.clone(), ns)
        .patch(
            "podinfo-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"color": "green"}})),
        )
        .await
        .unwrap();
    let id = format!("podinfo.{ns}");
    let advanced = format!("Advance {id} canary weight 10");
    harness::wait_for(
        "analysis of the config change",
        Duration::from_secs(20),
        || async { op.messages(&id).contains(&advanced).then_some(()) },
    )
    .await;
    // Mid-analysis the primary still runs the old configuration.
    assert_eq!(
        cluster
            .config_map(ns, "podinfo-config-primary")
            .await
            .unwrap()
            .data
            .unwrap()["color"],
        "blue"
    );
    cluster
        .wait_phase(&op, ns, "podinfo", "Succeeded", Duration::from_secs(30))
        .await;

    assert_in_order(
        &op.messages(&id),
        &[
            format!("New revision detected! Scaling up {id}"),
            advanced,
            format!("Advance {id} canary weight 30"),
            format!("Copying {id} template spec to podinfo-primary.{ns}"),
            format!("Promotion completed! Scaling down {id}"),
        ],
    );
    let copy = cluster
        .config_map(ns, "podinfo-config-primary")
        .await
        .unwrap();
    assert_eq!(
        copy.data.unwrap()["color"],
        "green",
        "copy updated on promotion"
    );
    let primary = cluster.deployment(ns, "podinfo-primary").await.unwrap();
    assert_eq!(
        config_names(&primary),
        ["podinfo-config-primary", "podinfo-config-primary"]
    );
    let c = cluster.canary(ns, "podinfo").await.unwrap();
    assert_ne!(
        c["status"]["trackedConfigs"]["configmap/podinfo-config"], tracked,
        "trackedConfigs follows the new data"
    );
    assert_eq!(cluster.replicas(ns, "podinfo").await, Some(0));
    assert_eq!(cluster.vs_weights(ns, "podinfo").await, Some((100, 0)));
}

/// The weights of the `Advance <id> canary weight N` messages, in order.
fn advances(messages: &[String], id: &str) -> Vec<u32> {
    let prefix = format!("Advance {id} canary weight ");
    messages
        .iter()
        .filter_map(|m| m.strip_prefix(&prefix).and_then(|w| w.parse().ok()))
        .collect()
}

/// f. The operator killed with SIGKILL mid-analysis and started again finishes the same rollout
/// from `.status`: no new analysis, no step skipped, at most the step at the kill repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_mid_analysis_resumes_the_same_rollout() {
    let _serial = serial().await;
    let ns = "e2e-sigkill";
    let (cluster, mut first) = initialized(ns, "1s", 10, 50, 30).await;
    let id = format!("podinfo.{ns}");
    cluster
        .set_image(ns, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
        .await;
    let at_20 = format!("Advance {id} canary weight 20");
    harness::wait_for("weight 20", Duration::from_secs(20), || async {
        first.messages(&id).contains(&at_20).then_some(())
    })
    .await;
    first.kill();
    let before = first.messages(&id);

    let c = cluster.canary(ns, "podinfo").await.unwrap();
    assert_eq!(c["status"]["phase"], "Progressing", "{}", c["status"]);
    let weight = c["status"]["canaryWeight"].as_u64().unwrap();
    assert!(
        (10..=30).contains(&weight),
        "killed mid-analysis at {weight}"
    );
    assert_eq!(
        cluster.image(ns, "podinfo-primary").await,
        "ghcr.io/stefanprodan/podinfo:6.0.0"
    );

    let second = Operator::start(&cluster, &[]).await;
    cluster
        .wait_phase(&second, ns, "podinfo", "Succeeded", Duration::from_secs(30))
        .await;
    let after = second.messages(&id);

    println!(
        "advances before the kill: {:?}, after the restart: {:?}",
        advances(&before, &id),
        advances(&after, &id)
    );
    let all: Vec<String> = before.iter().chain(after.iter()).cloned().collect();
    let mut steps = advances(&all, &id);
    let total = steps.len();
    steps.dedup();
    assert_eq!(
        steps,
        [10, 20, 30, 40, 50],
        "no step skipped or reordered:\nbefore the kill: {before:#?}\nafter: {after:#?}"
    );
    assert!(
        total <= steps.len() + 1,
        "at most the step at the kill repeats: {all:#?}"
    );
    let count = |m: &str| all.iter().filter(|a| a.starts_with(m)).count();
    assert_eq!(count("New revision detected!"), 1, "{all:#?}");
    assert!(
        !after.iter().any(|m| m.starts_with("New revision detected")
            || m.starts_with("Initialization done")),
        "the restarted operator resumes, it does not start over: {after:#?}"
    );
    assert_eq!(count(&format!("Promotion completed! Scaling down {id}")), 1);
    assert_eq!(
        cluster.image(ns, "podinfo-primary").await,
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    assert_eq!(cluster.replicas(ns, "podinfo").await, Some(0));
    assert_eq!(cluster.vs_weights(ns, "podinfo").await, Some((100, 0)));
    let events: Vec<String> = cluster
        .events(ns, "podinfo")
        .await
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    // Events are best effort and posted after the status write, so the Event of the step the
    // kill interrupted (its status already written, `weight`) may be lost; every other step has one.
    for w in [10u64, 20, 30, 40, 50] {
        let e = format!("Advance {id} canary weight {w}");
        assert!(
            events.contains(&e) || w == weight,
            "event {e:?} missing (killed at weight {weight}): {events:#?}"
        );
    }
}

const FIXTURES_TESTBED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testbed/tests/fixtures");
const FIXTURES_ACTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/actors/tests/fixtures");

/// h. The seed's manifests applied with the real kubectl: namespace, Deployment, the
/// `autoscaling/v2beta1` HPA and the `flagger.app/v1alpha3` Canary with `canaryAnalysis`, its
/// metrics and webhook. The Canary is accepted unchanged and initialized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_v1alpha3_canary_applied_with_kubectl_is_initialized() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    let op = Operator::start(&cluster, &[]).await;
    for file in [
        format!("{FIXTURES_TESTBED}/namespace-test.yaml"),
        format!("{FIXTURES_TESTBED}/podinfo-deployment.yaml"),
        format!("{FIXTURES_TESTBED}/podinfo-hpa.yaml"),
        format!("{FIXTURES_ACTORS}/podinfo-canary-v1alpha3.yaml"),
    ] {
        let out = kubectl::kubectl_ok(&cluster, &["apply", "-f", &file]).await;
        assert!(out.contains("created"), "{file}: {out}");
    }
    cluster
        .wait_phase(
            &op,
            "test",
            "podinfo",
            "Initialized",
            Duration::from_secs(40),
        )
        .await;

    let printed = kubectl::kubectl_ok(&cluster, &["-n", "test", "get", "canaries"]).await;
    let row = printed.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("podinfo") && row.contains("Initialized"),
        "{printed}"
    );
    // The object reads the same through the legacy version it was written with.
    let legacy = kubectl::kubectl_ok(
        &cluster,
        &[
            "-n",
            "test",
            "get",
            "canaries.v1alpha3.flagger.app",
            "podinfo",
            "-o",
            "jsonpath={.spec.canaryAnalysis.stepWeight} {.spec.canaryAnalysis.metrics[*].name} {.spec.canaryAnalysis.webhooks[0].metadata.cmd} {.status.phase}",
        ],
    )
    .await;
    assert_eq!(
        legacy,
        "10 request-success-rate request-duration hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/ Initialized"
    );

    let primary = cluster.deployment("test", "podinfo-primary").await.unwrap();
    assert_eq!(
        primary
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .as_deref(),
        Some("quay.io/stefanprodan/podinfo:1.4.0")
    );
    assert_eq!(cluster.replicas("test", "podinfo").await, Some(0));
    let hpa = kubectl::kubectl_ok(
        &cluster,
        &[
            "-n",
            "test",
            "get",
            "hpa",
            "podinfo-primary",
            "-o",
            "jsonpath={.spec.scaleTargetRef.name} {.spec.minReplicas} {.spec.maxReplicas}",
        ],
    )
    .await;
    assert_eq!(hpa, "podinfo-primary 2 4");
    let vs = cluster
        .istio("test", "VirtualService", "virtualservices", "podinfo")
        .await
        .unwrap();
    assert_eq!(
        vs.data["spec"]["gateways"],
        json!(["public-gateway.istio-system.svc.cluster.local", "mesh"])
    );
    let hosts = vs.data["spec"]["hosts"].as_array().unwrap();
    assert!(
        hosts.contains(&json!("podinfo")) && hosts.contains(&json!("app.istio.example.com")),
        "{hosts:?}"
    );
    assert_eq!(cluster.vs_weights("test", "podinfo").await, Some((100, 0)));
    let dr = cluster
        .istio(
            "test",
            "DestinationRule",
            "destinationrules",
            "podinfo-canary",
        )
        .await
        .unwrap();
    assert_eq!(dr.data["spec"]["trafficPolicy"]["tls"]["mode"], "DISABLE");
    let described =
        kubectl::kubectl_ok(&cluster, &["-n", "test", "describe", "canary", "podinfo"]).await;
    assert!(
        described.contains("Initialization done! podinfo.test"),
        "{described}"
    );
}

/// A pre-existing apex Service `podinfo` (as a user would have before installing Flagger).
fn apex_service(ns: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": "podinfo", "namespace": ns},
        "spec": {"selector": {"app": "podinfo"}, "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]}
    })
}

async fn service_selector(cluster: &Cluster, ns: &str, name: &str) -> Option<serde_json::Value> {
    let s = cluster.service(ns, name).await?;
    Some(serde_json::to_value(s).unwrap()["spec"]["selector"].clone())
}

/// revertOnDeletion: deleting the Canary gives the target its replicas back, points the apex
/// Service at it and then lets the deletion finish (finalizer removed); the generated objects
/// go with the owner references.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_canary_with_revert_on_deletion_restores_the_target() {
    let _serial = serial().await;
    let ns = "e2e-revert";
    let cluster = Cluster::start(READY).await;
    cluster.namespace(ns).await;
    cluster
        .create::<k8s_openapi::api::core::v1::Service>(ns, apex_service(ns))
        .await;
    cluster
        .create::<Deployment>(ns, podinfo(ns, "ghcr.io/stefanprodan/podinfo:6.0.0"))
        .await;
    let op = Operator::start(&cluster, &[]).await;
    let mut manifest = canary(ns, "1s", 10, 50, 30);
    manifest["spec"]["revertOnDeletion"] = json!(true);
    cluster.create_canary(ns, manifest).await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;
    let finalizers = harness::wait_for("the finalizer", Duration::from_secs(10), || async {
        let c = cluster.canary(ns, "podinfo").await?;
        c["metadata"]["finalizers"]
            .as_array()
            .filter(|f| f.contains(&json!("finalizer.flagger.app")))
            .cloned()
    })
    .await;
    assert_eq!(finalizers, [json!("finalizer.flagger.app")]);
    assert_eq!(cluster.replicas(ns, "podinfo").await, Some(0));
    assert_eq!(
        service_selector(&cluster, ns, "podinfo").await,
        Some(json!({"app": "podinfo-primary"})),
        "taken over"
    );

    harness::canary_api(&cluster.client, ns)
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    harness::wait_for("the Canary to be gone", Duration::from_secs(20), || async {
        cluster.canary(ns, "podinfo").await.is_none().then_some(())
    })
    .await;

    assert_eq!(
        cluster.replicas(ns, "podinfo").await,
        Some(1),
        "target scaled back up"
    );
    let target = cluster.deployment(ns, "podinfo").await.unwrap();
    assert_eq!(
        target.status.and_then(|s| s.ready_replicas),
        Some(1),
        "the finalizer waits for the target to be ready"
    );
    assert_eq!(
        service_selector(&cluster, ns, "podinfo").await,
        Some(json!({"app": "podinfo"})),
        "the apex Service routes to the target again"
    );
    let id = format!("podinfo.{ns}");
    assert_in_order(
        &op.messages(&id),
        &[
            format!("Terminating canary {id}"),
            format!("Terminated canary {id}"),
        ],
    );
    // Generated objects are owned by the Canary and collected with it.
    assert!(cluster.deployment(ns, "podinfo-primary").await.is_none());
    assert!(cluster.service(ns, "podinfo-canary").await.is_none());
}

/// Without revertOnDeletion, deleting the Canary leaves the target at 0 replicas (as upstream)
/// and the generated objects are garbage-collected through their owner references.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_canary_without_revert_collects_the_generated_objects() {
    let _serial = serial().await;
    let ns = "e2e-delete";
    let (cluster, op) = initialized(ns, "1s", 10, 50, 30).await;
    let c = cluster.canary(ns, "podinfo").await.unwrap();
    assert!(
        c["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "no finalizer without revertOnDeletion: {}",
        c["metadata"]
    );
    harness::canary_api(&cluster.client, ns)
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    harness::wait_for("the Canary to be gone", Duration::from_secs(10), || async {
        cluster.canary(ns, "podinfo").await.is_none().then_some(())
    })
    .await;
    assert!(cluster.deployment(ns, "podinfo-primary").await.is_none());
    for svc in ["podinfo", "podinfo-primary", "podinfo-canary"] {
        assert!(cluster.service(ns, svc).await.is_none(), "{svc} collected");
    }
    assert!(
        cluster
            .istio(ns, "VirtualService", "virtualservices", "podinfo")
            .await
            .is_none()
    );
    for dr in ["podinfo-primary", "podinfo-canary"] {
        assert!(
            cluster
                .istio(ns, "DestinationRule", "destinationrules", dr)
                .await
                .is_none(),
            "{dr} collected"
        );
    }
    assert_eq!(cluster.replicas(ns, "podinfo").await, Some(0));
    let id = format!("podinfo.{ns}");
    harness::wait_for("the actor to stop", Duration::from_secs(5), || async {
        op.messages(&id)
            .contains(&format!("Deleting {id} from cache"))
            .then_some(())
    })
    .await;
    // The operator keeps running and writes nothing more about the deleted canary.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cluster.deployment(ns, "podinfo-primary").await.is_none());
}
