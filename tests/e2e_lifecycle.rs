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
    let _serial = serial();
    let cluster = Cluster::start(READY).await;
    let ns = "e2e-init";
    cluster.namespace(ns).await;
    cluster
        .create::<Deployment>(ns, podinfo(ns, "ghcr.io/stefanprodan/podinfo:6.0.0"))
        .await;
    let op = Operator::start(&cluster, &[]).await;
    cluster.create_canary(ns, canary(ns, "1s", 10, 50, 30)).await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;

    let c = cluster.canary(ns, "podinfo").await.unwrap();
    let uid = c["metadata"]["uid"].as_str().unwrap().to_owned();
    let owned = |meta: &serde_json::Value| {
        meta["ownerReferences"]
            .as_array()
            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid.as_str() && r["kind"] == "Canary" && r["controller"] == true))
    };

    let primary = cluster.deployment(ns, "podinfo-primary").await.expect("primary");
    let pj = serde_json::to_value(&primary).unwrap();
    assert!(owned(&pj["metadata"]), "primary owner refs: {}", pj["metadata"]);
    assert_eq!(pj["spec"]["selector"]["matchLabels"], json!({"app": "podinfo-primary"}));
    assert_eq!(pj["spec"]["template"]["metadata"]["labels"]["app"], "podinfo-primary");
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
        events.iter().any(|(t, m)| t == "Normal" && m == &format!("Initialization done! podinfo.{ns}")),
        "{events:?}"
    );
    assert!(op.messages(&format!("podinfo.{ns}")).contains(&format!("Initialization done! podinfo.{ns}")));
}
