//! `--max-concurrent-canaries`: a change hitting many canaries at once starts them one slot at a
//! time, the waiting ones say so in `.status`, and the limit holds across an operator restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use harness::{Cluster, Operator, canary, canary_api, podinfo, serial};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::runtime::watcher;

const READY: Duration = Duration::from_millis(300);
const SLOT_HOLDING: &[&str] = &["Progressing", "WaitingPromotion", "Promoting", "Finalising"];

/// Every phase change of every Canary, in the API server's order.
#[derive(Default)]
struct PhaseLog {
    current: BTreeMap<String, String>,
    /// The largest number of canaries in a slot-holding phase at once.
    max_in_progress: usize,
    /// `(namespace, phase, Promoted condition message)` of each change.
    changes: Vec<(String, String, String)>,
}

fn watch_phases(cluster: &Cluster) -> (Arc<Mutex<PhaseLog>>, tokio::task::JoinHandle<()>) {
    let log: Arc<Mutex<PhaseLog>> = Arc::default();
    let sink = log.clone();
    let api: Api<flagger_actors::crd::Canary> = Api::all(cluster.client.clone());
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(event) = events.next().await {
            let Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) = event else {
                continue;
            };
            let c = serde_json::to_value(c).unwrap();
            let ns = c["metadata"]["namespace"].as_str().unwrap().to_owned();
            let phase = c["status"]["phase"].as_str().unwrap_or("").to_owned();
            let message = c["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Promoted"))
                .and_then(|c| c["message"].as_str())
                .unwrap_or("")
                .to_owned();
            let mut log = sink.lock().unwrap();
            if log.current.get(&ns) != Some(&phase) {
                log.changes.push((ns.clone(), phase.clone(), message));
            }
            log.current.insert(ns, phase);
            let running = log
                .current
                .values()
                .filter(|p| SLOT_HOLDING.contains(&p.as_str()))
                .count();
            log.max_in_progress = log.max_in_progress.max(running);
        }
    });
    (log, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slot_three_canaries_run_one_at_a_time_across_a_restart() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    let namespaces = ["e2e-slot-a", "e2e-slot-b", "e2e-slot-c"];
    for ns in namespaces {
        cluster.namespace(ns).await;
        cluster
            .create::<Deployment>(ns, podinfo(ns, "ghcr.io/stefanprodan/podinfo:6.0.0"))
            .await;
    }
    let flags = ["--max-concurrent-canaries", "1"];
    let mut op = Operator::start(&cluster, &flags).await;
    for ns in namespaces {
        cluster
            .create_canary(ns, canary(ns, "1s", 50, 50, 30))
            .await;
    }
    for ns in namespaces {
        cluster
            .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(30))
            .await;
    }
    let (log, watch) = watch_phases(&cluster);

    // One change for all of them at once (a shared ConfigMap would do the same).
    for ns in namespaces {
        cluster
            .set_image(ns, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
            .await;
    }
    // While the first runs, the others wait and say why.
    let waiting_message = "waiting for a rollout slot (1 of 1 in progress)";
    harness::wait_for(
        "one canary progressing and two waiting for a slot",
        Duration::from_secs(30),
        || {
            let log = log.clone();
            async move {
                let log = log.lock().unwrap();
                let running = log
                    .current
                    .values()
                    .filter(|p| SLOT_HOLDING.contains(&p.as_str()))
                    .count();
                let waiting = log.current.values().filter(|p| *p == "Waiting").count();
                (running == 1 && waiting == 2).then_some(())
            }
        },
    )
    .await;
    let waiting_ns: Vec<String> = {
        let log = log.lock().unwrap();
        log.current
            .iter()
            .filter(|(_, p)| *p == "Waiting")
            .map(|(ns, _)| ns.clone())
            .collect()
    };
    for ns in &waiting_ns {
        let c = cluster.canary(ns, "podinfo").await.unwrap();
        let promoted = c["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Promoted").cloned())
            .unwrap();
        assert_eq!(promoted["message"], waiting_message, "{ns}: {promoted}");
        assert_eq!(
            cluster
                .deployment(ns, "podinfo")
                .await
                .unwrap()
                .spec
                .unwrap()
                .replicas,
            Some(0),
            "{ns}: a waiting canary is not scaled up"
        );
        let events = cluster.events(ns, "podinfo").await;
        assert!(
            events
                .iter()
                .any(|(_, m)| m == &format!("Halt podinfo.{ns} advancement {waiting_message}")),
            "{ns}: {events:?}"
        );
    }

    // The count comes from .status: a restarted operator keeps the limit.
    op.kill();
    let op = Operator::start(&cluster, &flags).await;

    for ns in namespaces {
        cluster
            .wait_phase(&op, ns, "podinfo", "Succeeded", Duration::from_secs(90))
            .await;
    }
    watch.abort();
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(
        log.max_in_progress, 1,
        "more than one canary in progress at once: {:#?}",
        log.changes
    );
    // Each canary went through Waiting (except the first) and Progressing exactly once.
    for ns in namespaces {
        let runs = log
            .changes
            .iter()
            .filter(|(n, p, _)| n == ns && p == "Progressing")
            .count();
        assert_eq!(runs, 1, "{ns}: {:#?}", log.changes);
    }
    let waited = log
        .changes
        .iter()
        .filter(|(_, p, m)| p == "Waiting" && m == waiting_message)
        .count();
    assert_eq!(waited, 2, "{:#?}", log.changes);
    for ns in namespaces {
        let c = canary_api(&cluster.client, ns)
            .get("podinfo")
            .await
            .unwrap();
        let c = serde_json::to_value(c).unwrap();
        assert_eq!(c["status"]["phase"], "Succeeded", "{ns}");
    }
}
