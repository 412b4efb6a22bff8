//! Conformance of the testbed API server with a real API server's semantics, driven by the
//! kube-rs client over HTTP: what a controller written against a real cluster relies on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use flagger_testbed::{Config, Testbed};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::Status;
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

fn status_of(e: kube::Error) -> Box<Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }))
    .unwrap()
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                    {"name": "sidecar", "image": "side:1"}
                ]}
            }
        }
    }))
    .unwrap()
}

fn rv<K: kube::Resource>(o: &K) -> u64 {
    o.meta()
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

/// Next watch event within a deadline (None: nothing arrived).
async fn next_event_or_bookmark<S, K>(s: &mut S, within: Duration) -> Option<WatchEvent<K>>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    tokio::time::timeout(within, s.next())
        .await
        .ok()
        .flatten()
        .map(|r| r.unwrap())
}

/// Next non-BOOKMARK watch event within a deadline (None: nothing arrived).
async fn next_event<S, K>(s: &mut S, within: Duration) -> Option<WatchEvent<K>>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_event_or_bookmark(s, left).await {
            Some(WatchEvent::Bookmark(_)) => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn create_get_and_errors_have_real_shapes() {
    let tb = testbed().await;
    let cms: Api<ConfigMap> = Api::namespaced(tb.client().unwrap(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", &[("k", "v")]))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert!(rv(&created) > 0);
    let got = cms.get("a").await.unwrap();
    assert_eq!(got.data, created.data);

    let dup = status_of(
        cms.create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    let missing = status_of(cms.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    let details = missing.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("nope", "configmaps")
    );

    // generateName gets a 5-character random suffix.
    let mut g = cm("", &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let made = cms.create(&PostParams::default(), &g).await.unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    // Invalid names are 422 naming the field; writes into a missing namespace are 404.
    let bad = status_of(
        cms.create(&PostParams::default(), &cm("Not_A_Name", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(bad.code, 422);
    assert_eq!(bad.details.unwrap().causes[0].field, "metadata.name");
    let elsewhere: Api<ConfigMap> = Api::namespaced(tb.client().unwrap(), "missing");
    let e = status_of(
        elsewhere
            .create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    tb.shutdown().await;
}

#[tokio::test]
async fn writes_that_change_nothing_keep_the_rv_and_emit_no_event() {
    let tb = testbed().await;
    let cms: Api<ConfigMap> = Api::namespaced(tb.client().unwrap(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", &[("k", "v")]))
        .await
        .unwrap();
    let mut events = cms
        .watch(
            &WatchParams::default(),
            &created.metadata.resource_version.clone().unwrap(),
        )
        .await
        .unwrap()
        .boxed();

    let cases: Vec<(&str, Patch<Value>)> = vec![
        (
            "merge patch with the same value",
            Patch::Merge(json!({"data": {"k": "v"}})),
        ),
        (
            "json patch replacing with the same value",
            Patch::Json(
                serde_json::from_value(json!([{"op": "replace", "path": "/data/k", "value": "v"}]))
                    .unwrap(),
            ),
        ),
        (
            "strategic patch with the same value",
            Patch::Strategic(json!({"data": {"k": "v"}})),
        ),
    ];
    for (what, p) in &cases {
        let after = cms.patch("a", &PatchParams::default(), p).await.unwrap();
        assert_eq!(rv(&after), rv(&created), "{what}");
    }
    let replaced = cms
        .replace("a", &PostParams::default(), &created)
        .await
        .unwrap();
    assert_eq!(rv(&replaced), rv(&created), "replace with the object read");
    assert!(
        next_event(&mut events, Duration::from_millis(300))
            .await
            .is_none(),
        "no-op writes emitted an event"
    );

    let changed = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "w"}})),
        )
        .await
        .unwrap();
    assert!(rv(&changed) > rv(&created));
    match next_event(&mut events, Duration::from_secs(2)).await {
        Some(WatchEvent::Modified(o)) => assert_eq!(rv(&o), rv(&changed)),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn stale_replace_conflicts_and_rvs_increase_globally() {
    let tb = testbed().await;
    let client = tb.client().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let b = cms
        .create(&PostParams::default(), &cm("b", &[]))
        .await
        .unwrap();
    assert!(rv(&b) > rv(&a), "resourceVersion is global and increasing");
    let mut first = a.clone();
    first.data = Some([("x".to_string(), "1".to_string())].into());
    cms.replace("a", &PostParams::default(), &first)
        .await
        .unwrap();
    let mut stale = a.clone();
    stale.data = Some([("x".to_string(), "2".to_string())].into());
    let e = status_of(
        cms.replace("a", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("the object has been modified"),
        "{}",
        e.message
    );
    // A merge patch carrying a stale resourceVersion is a precondition too.
    let p = Patch::Merge(
        json!({"metadata": {"resourceVersion": rv(&a).to_string()}, "data": {"y": "1"}}),
    );
    assert_eq!(
        status_of(
            cms.patch("a", &PatchParams::default(), &p)
                .await
                .unwrap_err()
        )
        .code,
        409
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn generation_status_isolation_and_scale() {
    let tb = testbed().await;
    let deps: Api<Deployment> = Api::namespaced(tb.client().unwrap(), "default");
    let d = deps
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    // Server-side defaults a client relies on.
    let spec = d.spec.clone().unwrap();
    assert_eq!(spec.progress_deadline_seconds, Some(600));

    // Label change: no new generation. Spec change: new generation.
    let labelled = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let scaled = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));

    // Status through the main resource is ignored; status subresource changes only status.
    let main = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(main.status.as_ref().and_then(|s| s.ready_replicas), None);
    assert_eq!(rv(&main), rv(&scaled));
    let st = deps
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 3}, "spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().ready_replicas, Some(3));
    assert_eq!(
        st.spec.unwrap().replicas,
        Some(3),
        "spec is not written through status"
    );
    assert_eq!(st.metadata.generation, Some(2));
    let mut with_status = deps.get_status("web").await.unwrap();
    with_status.status.as_mut().unwrap().observed_generation = Some(2);
    let replaced = deps
        .replace_status("web", &PostParams::default(), &with_status)
        .await
        .unwrap();
    assert_eq!(replaced.status.unwrap().observed_generation, Some(2));

    // Scale subresource (autoscaling/v1 Scale).
    let scale = deps.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    let patched = deps
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().replicas, Some(5));
    assert_eq!(
        deps.get("web").await.unwrap().spec.unwrap().replicas,
        Some(5)
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let tb = testbed().await;
    let cms: Api<ConfigMap> = Api::namespaced(tb.client().unwrap(), "default");
    let mut o = cm("held", &[]);
    o.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    cms.create(&PostParams::default(), &o).await.unwrap();
    let r = cms.delete("held", &DeleteParams::default()).await.unwrap();
    let still = r.left().expect("object returned while finalizers hold it");
    assert!(still.metadata.deletion_timestamp.is_some());
    let again = cms.get("held").await.unwrap();
    assert!(again.metadata.deletion_timestamp.is_some());
    let e = status_of(
        cms.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["a/b", "example.com/cleanup"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422, "no new finalizers on a deleting object");
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(status_of(cms.get("held").await.unwrap_err()).code, 404);
    tb.shutdown().await;
}

#[tokio::test]
async fn owner_references_are_garbage_collected_per_policy() {
    let tb = testbed().await;
    let client = tb.client().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cases = [
        ("background", DeleteParams::background(), false, true),
        ("foreground", DeleteParams::foreground(), false, true),
        ("orphan", DeleteParams::orphan(), true, true),
    ];
    for (what, dp, dependent_survives, owner_gone) in cases {
        let owner = cms
            .create(&PostParams::default(), &cm(&format!("owner-{what}"), &[]))
            .await
            .unwrap();
        let mut dep = cm(&format!("dep-{what}"), &[]);
        dep.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid,
            "blockOwnerDeletion": true
        }))
        .unwrap()]);
        cms.create(&PostParams::default(), &dep).await.unwrap();
        cms.delete(&format!("owner-{what}"), &dp).await.unwrap();
        let dep_now = cms.get_opt(&format!("dep-{what}")).await.unwrap();
        assert_eq!(dep_now.is_some(), dependent_survives, "{what}");
        if let Some(d) = dep_now {
            assert!(
                d.metadata.owner_references.unwrap_or_default().is_empty(),
                "{what}: orphaned dependents lose the reference"
            );
        }
        assert_eq!(
            cms.get_opt(&format!("owner-{what}"))
                .await
                .unwrap()
                .is_none(),
            owner_gone,
            "{what}"
        );
    }

    // Foreground deletion waits for dependents held by finalizers.
    let owner = cms
        .create(&PostParams::default(), &cm("fg-owner", &[]))
        .await
        .unwrap();
    let mut dep = cm("fg-dep", &[]);
    dep.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    dep.metadata.owner_references =
        Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "fg-owner", "uid": owner.metadata.uid
    }))
    .unwrap()]);
    cms.create(&PostParams::default(), &dep).await.unwrap();
    cms.delete("fg-owner", &DeleteParams::foreground())
        .await
        .unwrap();
    let waiting = cms.get("fg-owner").await.unwrap();
    assert!(
        waiting
            .metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    cms.patch(
        "fg-dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("fg-owner").await.unwrap().is_none());
    tb.store().check_consistency().unwrap();
    tb.shutdown().await;
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_objects() {
    let tb = testbed().await;
    let client = tb.client().unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "team");
    cms.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    deps.create(&PostParams::default(), &deployment("d", 1))
        .await
        .unwrap();
    nss.delete("team", &DeleteParams::default()).await.unwrap();
    assert!(nss.get_opt("team").await.unwrap().is_none());
    assert!(
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        deps.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let e = status_of(
        cms.create(&PostParams::default(), &cm("b", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    tb.shutdown().await;
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let tb = testbed().await;
    let cms: Api<ConfigMap> = Api::namespaced(tb.client().unwrap(), "default");
    for (name, tier, env) in [
        ("a", "web", "prod"),
        ("b", "web", "dev"),
        ("c", "db", "prod"),
        ("d", "", ""),
    ] {
        let mut o = cm(name, &[]);
        let mut labels = BTreeMap::new();
        if !tier.is_empty() {
            labels.insert("tier".to_string(), tier.to_string());
            labels.insert("env".to_string(), env.to_string());
        }
        o.metadata.labels = Some(labels);
        cms.create(&PostParams::default(), &o).await.unwrap();
    }
    let cases = [
        ("tier=web", "", vec!["a", "b"]),
        ("tier in (web,db),env!=dev", "", vec!["a", "c"]),
        ("!tier", "", vec!["d"]),
        ("tier,env notin (prod)", "", vec!["b"]),
        ("", "metadata.name=c", vec!["c"]),
        ("tier=web", "metadata.name!=a", vec!["b"]),
        ("", "metadata.namespace=other", vec![]),
    ];
    for (labels, fields, want) in cases {
        let lp = ListParams::default().labels(labels).fields(fields);
        let got: Vec<String> = cms
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|o| o.metadata.name.unwrap())
            .collect();
        assert_eq!(got, want, "labels {labels:?} fields {fields:?}");
    }
    let e = status_of(
        cms.list(&ListParams::default().labels("tier in ("))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    tb.shutdown().await;
}

#[tokio::test]
async fn lists_paginate_with_limit_and_continue() {
    let tb = testbed().await;
    let cms: Api<ConfigMap> = Api::namespaced(tb.client().unwrap(), "default");
    for i in 0..25 {
        cms.create(&PostParams::default(), &cm(&format!("cm-{i:02}"), &[]))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut list_rv = None;
    loop {
        let mut lp = ListParams::default().limit(10);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 10);
        list_rv.get_or_insert(page.metadata.resource_version.clone());
        assert_eq!(
            Some(page.metadata.resource_version.clone()),
            list_rv,
            "one RV for the whole list"
        );
        names.extend(page.items.into_iter().map(|o| o.metadata.name.unwrap()));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!(names, want);
    let e = status_of(
        cms.list(&ListParams::default().continue_token("garbage"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    tb.shutdown().await;
}

#[tokio::test]
async fn watches_resume_bookmark_and_expire() {
    let tb = testbed().await;
    let cms: Api<ConfigMap> = Api::namespaced(tb.client().unwrap(), "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let b = cms
        .create(&PostParams::default(), &cm("b", &[]))
        .await
        .unwrap();

    // "0": ADDED for what exists.
    let mut s = cms
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut added = Vec::new();
    for _ in 0..2 {
        match next_event(&mut s, Duration::from_secs(2)).await {
            Some(WatchEvent::Added(o)) => added.push(o.metadata.name.unwrap()),
            other => panic!("expected ADDED, got {other:?}"),
        }
    }
    added.sort();
    assert_eq!(added, ["a", "b"]);

    // From a's RV: exactly the events after it (b's creation, then c's).
    let mut s = cms
        .watch(&WatchParams::default(), &rv(&a).to_string())
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("c", &[]))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        match next_event(&mut s, Duration::from_secs(2)).await {
            Some(WatchEvent::Added(o)) => seen.push(o.metadata.name.unwrap()),
            other => panic!("expected ADDED, got {other:?}"),
        }
    }
    assert_eq!(seen, ["b", "c"]);

    // Bookmarks carry a resumable RV.
    let mut s = cms
        .watch(&WatchParams::default(), &rv(&b).to_string())
        .await
        .unwrap()
        .boxed();
    let bookmark_rv = loop {
        match next_event_or_bookmark(&mut s, Duration::from_secs(2)).await {
            Some(WatchEvent::Bookmark(bm)) => break bm.metadata.resource_version,
            Some(_) => continue,
            None => panic!("no bookmark within 2s"),
        }
    };
    assert!(bookmark_rv.parse::<u64>().unwrap() > rv(&b));

    // Label-selected watch: leaving the selection is a DELETED.
    let mut s = cms
        .watch(&WatchParams::default().labels("sel=yes"), "0")
        .await
        .unwrap()
        .boxed();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "yes"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        next_event(&mut s, Duration::from_secs(2)).await,
        Some(WatchEvent::Added(_))
    ));
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "no"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        next_event(&mut s, Duration::from_secs(2)).await,
        Some(WatchEvent::Deleted(_))
    ));

    // timeoutSeconds ends the stream.
    let mut s = cms
        .watch(
            &WatchParams::default().timeout(1),
            &tb.store().current_rv().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while s.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "watch did not end at timeoutSeconds");

    // After compaction an old RV is 410 Gone, delivered as an ERROR event.
    tb.faults().compact();
    let mut s = cms
        .watch(&WatchParams::default(), &rv(&a).to_string())
        .await
        .unwrap()
        .boxed();
    match next_event(&mut s, Duration::from_secs(2)).await {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn patch_types_behave_like_the_real_server() {
    let tb = testbed().await;
    let deps: Api<Deployment> = Api::namespaced(tb.client().unwrap(), "default");
    deps.create(&PostParams::default(), &deployment("web", 1))
        .await
        .unwrap();

    // Strategic merge: containers merge by name, env by name.
    let smp = Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]}
    ]}}}}));
    let d = deps
        .patch("web", &PatchParams::default(), &smp)
        .await
        .unwrap();
    let containers = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(containers.len(), 2, "sidecar kept");
    assert_eq!(containers[0].image.as_deref(), Some("app:2"));
    let mut env: Vec<String> = containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    env.sort();
    assert_eq!(env, ["A", "B"], "env merged by name");

    // Merge patch: lists replace.
    let merge = Patch::Merge(
        json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x:1"}]}}}}),
    );
    let d = deps
        .patch("web", &PatchParams::default(), &merge)
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().template.spec.unwrap().containers.len(), 1);

    // JSON patch, with a failing `test` (422, nothing changed).
    let jp = |v: Value| Patch::Json::<Value>(serde_json::from_value(v).unwrap());
    let d = deps
        .patch(
            "web",
            &PatchParams::default(),
            &jp(json!([{"op": "replace", "path": "/spec/replicas", "value": 4}])),
        )
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(4));
    let e = status_of(
        deps.patch(
            "web",
            &PatchParams::default(),
            &jp(json!([{"op": "test", "path": "/spec/replicas", "value": 1}, {"op": "replace", "path": "/spec/replicas", "value": 9}])),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert_eq!(
        deps.get("web").await.unwrap().spec.unwrap().replicas,
        Some(4)
    );

    // Server-side apply: creates when absent, merges when present; fieldManager is required.
    let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "applied"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
    let pp = PatchParams::apply("conformance");
    let d = deps
        .patch("applied", &pp, &Patch::Apply(applied.clone()))
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(2));
    let mut again = applied.clone();
    again["spec"]["replicas"] = json!(3);
    let d = deps
        .patch("applied", &pp, &Patch::Apply(again))
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    let e = status_of(
        deps.patch("applied", &PatchParams::default(), &Patch::Apply(applied))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);

    // Patching what does not exist is 404 (except apply).
    let e = status_of(
        deps.patch("ghost", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    tb.shutdown().await;
}

#[tokio::test]
async fn delete_collection_and_preconditions() {
    let tb = testbed().await;
    let cms: Api<ConfigMap> = Api::namespaced(tb.client().unwrap(), "default");
    for (n, l) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let mut o = cm(n, &[]);
        o.metadata.labels = Some([("g".to_string(), l.to_string())].into());
        cms.create(&PostParams::default(), &o).await.unwrap();
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("g=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["c"]);
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some("1".into()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(status_of(cms.delete("c", &dp).await.unwrap_err()).code, 409);
    assert!(cms.get_opt("c").await.unwrap().is_some());
    tb.shutdown().await;
}

#[tokio::test]
async fn list_has_kind_api_version_and_rv() {
    let tb = testbed().await;
    let client = tb.client().unwrap();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deps.create(&PostParams::default(), &deployment("web", 1))
        .await
        .unwrap();
    let req = http::Request::get("/apis/apps/v1/namespaces/default/deployments")
        .body(Vec::new())
        .unwrap();
    let v: Value = client.request(req).await.unwrap();
    assert_eq!(v["kind"], "DeploymentList");
    assert_eq!(v["apiVersion"], "apps/v1");
    assert_eq!(
        v["metadata"]["resourceVersion"],
        json!(tb.store().current_rv().to_string())
    );
    assert_eq!(v["items"][0]["kind"], "Deployment");
    let all: Api<Deployment> = Api::all(client);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn watch_with_send_initial_events_ends_with_an_annotated_bookmark() {
    let tb = testbed().await;
    let cms: Api<ConfigMap> = Api::namespaced(tb.client().unwrap(), "default");
    cms.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let wp = WatchParams::default().initial_events();
    let mut s = cms.watch(&wp, "").await.unwrap().boxed();
    assert!(matches!(
        next_event(&mut s, Duration::from_secs(2)).await,
        Some(WatchEvent::Added(_))
    ));
    match next_event_or_bookmark(&mut s, Duration::from_secs(2)).await {
        Some(WatchEvent::Bookmark(bm)) => {
            assert_eq!(
                bm.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            );
        }
        other => panic!("expected the initial-events-end BOOKMARK, got {other:?}"),
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn testbed_runs_the_workload_controllers_by_default() {
    let tb = Testbed::start(Config {
        ready_delay: Duration::from_millis(100),
        ..Config::default()
    })
    .await
    .unwrap();
    let deps: Api<Deployment> = Api::namespaced(tb.client().unwrap(), "default");
    deps.create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        let d = deps.get("web").await.unwrap();
        let st = d.status.unwrap_or_default();
        if st.ready_replicas == Some(2) && st.observed_generation == d.metadata.generation {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "deployment not ready: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tb.shutdown().await;
}
