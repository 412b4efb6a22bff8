//! Panic isolation (issue 7): a panic in one canary's tick (the test-only fault switch
//! `fault.flagger.app/panic-tick`, compiled in with the `fault-injection` feature that the
//! workspace's tests enable) restarts only that canary's actor, from `.status`; the other
//! canaries keep their cadence; once the fault is cleared the canary finishes its rollout where it
//! stood.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{Cluster, Operator, canary, canary_api, podinfo, serial, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const READY: Duration = Duration::from_millis(300);
const V1: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
const FAULT: &str = "fault.flagger.app/panic-tick";
const NAMESPACES: [&str; 3] = ["panic-a", "panic-b", "panic-c"];

async fn set_fault(cluster: &Cluster, ns: &str, on: bool) {
    let value = if on { json!("true") } else { json!(null) };
    canary_api(&cluster.client, ns)
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {FAULT: value}}})),
        )
        .await
        .unwrap();
}

/// When the operator logged a tick decision of `canary`, within `[from, to]`.
fn ticks(op: &Operator, canary: &str, from: Instant, to: Instant) -> Vec<Instant> {
    op.logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.json["canary"] == canary && l.json["msg"] == "decided")
        .map(|l| l.at)
        .filter(|at| *at >= from && *at <= to)
        .collect()
}

fn count(op: &Operator, canary: &str, msg: &str) -> usize {
    op.messages(canary).iter().filter(|m| *m == msg).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_tick_restarts_only_its_canary() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    for ns in NAMESPACES {
        cluster.namespace(ns).await;
        cluster
            .create::<Deployment>(ns, podinfo(ns, "ghcr.io/stefanprodan/podinfo:6.0.0"))
            .await;
    }
    let op = Operator::start(&cluster, &[]).await;
    for ns in NAMESPACES {
        cluster
            .create_canary(ns, canary(ns, "1s", 10, 50, 30))
            .await;
    }
    for ns in NAMESPACES {
        cluster
            .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(30))
            .await;
    }
    for ns in NAMESPACES {
        cluster.set_image(ns, "podinfo", V1).await;
    }
    let (faulty, others) = (NAMESPACES[0], &NAMESPACES[1..]);
    let id = |ns: &str| format!("podinfo.{ns}");
    wait_for("canary a at weight 20", Duration::from_secs(30), || async {
        let c = cluster.canary(faulty, "podinfo").await?;
        (c["status"]["canaryWeight"].as_i64()? >= 20).then_some(())
    })
    .await;

    set_fault(&cluster, faulty, true).await;
    let panicked = "canary tick panicked; restarting its actor from .status";
    wait_for(
        "the first injected panic",
        Duration::from_secs(10),
        || async { (count(&op, &id(faulty), panicked) > 0).then_some(()) },
    )
    .await;
    let from = Instant::now();
    let frozen = cluster.canary(faulty, "podinfo").await.unwrap()["status"].clone();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let to = Instant::now();

    // The faulty canary: restarted again and again, never got to decide, status untouched.
    let panics = count(&op, &id(faulty), panicked);
    assert!(panics >= 3, "only {panics} panics in 6 s");
    assert!(
        ticks(&op, &id(faulty), from, to).is_empty(),
        "a panicking canary decided something"
    );
    let status = cluster.canary(faulty, "podinfo").await.unwrap()["status"].clone();
    assert_eq!(status, frozen, "the faulty canary's status moved");
    // The others: not restarted, ticking every interval (1 s) throughout.
    let mut figures = Vec::new();
    for ns in others {
        assert_eq!(count(&op, &id(ns), panicked), 0, "{ns} panicked too");
        let t = ticks(&op, &id(ns), from, to);
        let gaps: Vec<f64> = t.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        assert!(gaps.len() >= 3, "{ns} ticked only {} times in 6 s", t.len());
        let max = gaps.iter().copied().fold(0.0, f64::max);
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!(max < 2.5, "{ns}: a {max:.2} s gap between ticks: {gaps:?}");
        assert!(
            (0.5..1.6).contains(&mean),
            "{ns}: mean tick interval {mean:.2} s: {gaps:?}"
        );
        figures.push(format!(
            "{ns}: {} ticks, interval mean {mean:.2} s max {max:.2} s",
            t.len()
        ));
    }

    // Fault cleared: the next restart resumes the run from `.status` and finishes it.
    set_fault(&cluster, faulty, false).await;
    let cleared = Instant::now();
    let weight = frozen["canaryWeight"].as_i64().unwrap();
    cluster
        .wait_phase(&op, faulty, "podinfo", "Succeeded", Duration::from_secs(40))
        .await;
    let recovery = cleared.elapsed();
    let messages = op.messages(&id(faulty));
    let resumed = format!("Advance {} canary weight {}", id(faulty), weight + 10);
    assert!(messages.contains(&resumed), "{messages:#?}");
    assert!(
        !messages.iter().any(|m| m.contains("Restarting analysis")),
        "the run restarted instead of resuming: {messages:#?}"
    );
    for ns in NAMESPACES {
        cluster
            .wait_phase(&op, ns, "podinfo", "Succeeded", Duration::from_secs(30))
            .await;
        let primary = cluster.deployment(ns, "podinfo-primary").await.unwrap();
        let image = primary.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone();
        assert_eq!(image.as_deref(), Some(V1), "{ns}");
    }
    println!(
        "panic isolation: {panics} panics of {} in 6 s (status frozen at weight {weight}); resumed and Succeeded {:.1} s after the fault was cleared; {}",
        id(faulty),
        recovery.as_secs_f64(),
        figures.join("; ")
    );
}
