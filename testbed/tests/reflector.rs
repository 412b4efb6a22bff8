//! A kube-runtime reflector stays equal to the server through 1,000 random writes while its
//! watches are cut, its LISTs and WATCHes fail now and then, and the watch history is short and
//! compacted while the reflectors are cut off (forcing 410 Gone and relists). Checked at
//! checkpoints (every 250 writes) and at the end, for a classic LIST+WATCH reflector and a
//! streaming-list (sendInitialEvents) one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flagger_testbed::faults::FaultConfig;
use flagger_testbed::store::{ResourceId, name_of, rv_of};
use flagger_testbed::{Config, Testbed};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn server_state(tb: &Testbed) -> BTreeMap<String, String> {
    tb.store()
        .list(&ResourceId::new("", "configmaps"), Some("default"))
        .iter()
        .map(|o| (name_of(o), rv_of(o)))
        .collect()
}

fn reflected(reader: &Store<ConfigMap>) -> BTreeMap<String, String> {
    reader
        .state()
        .iter()
        .map(|o| {
            (
                o.metadata.name.clone().unwrap(),
                o.metadata.resource_version.clone().unwrap(),
            )
        })
        .collect()
}

async fn converge(tb: &Testbed, readers: &[(&str, &Store<ConfigMap>)], at: &str) {
    let start = Instant::now();
    loop {
        let want = server_state(tb);
        let lagging: Vec<&str> = readers
            .iter()
            .filter(|(_, r)| reflected(r) != want)
            .map(|(n, _)| *n)
            .collect();
        if lagging.is_empty() {
            eprintln!("{at}: converged in {:?}", start.elapsed());
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{at}: reflectors {lagging:?} differ from the server after 20s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A short fixed retry delay: kube's default backoff grows to 30s under repeated faults, which
/// would measure the client's patience rather than the server's correctness.
struct QuickRetry;

impl Iterator for QuickRetry {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(50))
    }
}

impl kube::runtime::utils::Backoff for QuickRetry {
    fn reset(&mut self) {}
}

fn spawn_reflector(api: Api<ConfigMap>, cfg: watcher::Config) -> Store<ConfigMap> {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, cfg)).backoff(QuickRetry);
    tokio::spawn(async move {
        // Errors (injected faults, 410s) are retried by the watcher with backoff.
        stream.for_each(|_| async {}).await;
    });
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_tracks_the_server_through_faults_and_compaction() {
    let tb = Testbed::start(Config {
        history: 10,
        bookmark_interval: Duration::from_millis(300),
        ..Config::default()
    })
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(tb.client().unwrap(), "default");
    let classic = spawn_reflector(api.clone(), watcher::Config::default().page_size(7));
    let streaming = spawn_reflector(api.clone(), watcher::Config::default().streaming_lists());
    let readers = [("classic", &classic), ("streaming", &streaming)];

    // Faults hit the reflectors' reads only, so every write below lands.
    let background = FaultConfig {
        error_rate: 0.25,
        error_codes: vec![500],
        verbs: vec!["LIST".into(), "WATCH".into()],
        watch_close_seconds: 0.25,
        latency_ms: 0,
        conflict_rate: 0.0,
    };
    tb.faults().set(background.clone()).unwrap();
    let marker: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "marker"}})).unwrap();
    api.create(&PostParams::default(), &marker).await.unwrap();

    let mut rng = StdRng::seed_from_u64(7);
    let names: Vec<String> = (0..40).map(|i| format!("cm-{i}")).collect();
    for i in 0..1000 {
        let name = &names[rng.random_range(0..names.len())];
        let exists = api.get_opt(name).await.unwrap().is_some();
        match (exists, rng.random_range(0..10)) {
            (false, _) => {
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"round": i.to_string()}},
                    "data": {"v": i.to_string()}
                }))
                .unwrap();
                api.create(&PostParams::default(), &cm).await.unwrap();
            }
            (true, 0..=1) => {
                api.delete(name, &DeleteParams::default()).await.unwrap();
            }
            (true, 2..=3) => {
                // A write that changes nothing: no event, same RV, reflectors unaffected.
                let cur = api.get(name).await.unwrap();
                api.replace(name, &PostParams::default(), &cur)
                    .await
                    .unwrap();
            }
            (true, _) => {
                let p = Patch::Merge(json!({"data": {"v": i.to_string()}}));
                api.patch(name, &PatchParams::default(), &p).await.unwrap();
            }
        }
        // Spread the writes over a few seconds so many watches are cut and restarted meanwhile.
        tokio::time::sleep(Duration::from_millis(2)).await;
        if i % 100 == 99 {
            // Cut the reflectors off, write on without them and drop the history they would
            // resume from: their next watch gets 410 Gone and they must relist.
            tb.faults()
                .set(FaultConfig {
                    error_rate: 1.0,
                    verbs: vec!["WATCH".into()],
                    watch_close_seconds: 0.01,
                    ..FaultConfig::default()
                })
                .unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            let p = Patch::Merge(json!({"data": {"round": i.to_string()}}));
            api.patch("marker", &PatchParams::default(), &p)
                .await
                .unwrap();
            tb.faults().compact();
            tb.faults().set(background.clone()).unwrap();
        }
        if i % 250 == 249 {
            converge(&tb, &readers, &format!("after write {}", i + 1)).await;
        }
    }
    tb.faults().clear();
    converge(&tb, &readers, "at the end").await;
    let stats = tb.stats().snapshot();
    assert!(
        stats.faults_injected > 0,
        "no faults were injected: the test proved nothing"
    );
    let count = |verb: &str| stats.by_verb.get(verb).copied().unwrap_or(0);
    assert!(count("WATCH") > 10, "watches were not restarted: {stats:?}");
    assert!(count("LIST") > 2, "no relist after 410 Gone: {stats:?}");
    tb.store().check_consistency().unwrap();
    tb.shutdown().await;
}
