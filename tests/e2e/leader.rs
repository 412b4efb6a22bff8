//! Helpers of the leader-election end-to-end tests: operator roles from `/readyz`, identities
//! from the logs, each operator's writes from the testbed's per-User-Agent request stats, and the
//! weight steps recorded as events.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::Api;

use crate::harness::{Cluster, Operator, wait_for};

/// `flagger` flags for leader election on a Lease in `namespace` with short timings.
pub fn flags(namespace: &str, lease: Duration, renew: Duration, retry: Duration) -> Vec<String> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    vec![
        "--enable-leader-election".into(),
        format!("--leader-election-namespace={namespace}"),
        format!("--leader-election-lease-duration={}", ms(lease)),
        format!("--leader-election-renew-deadline={}", ms(renew)),
        format!("--leader-election-retry-period={}", ms(retry)),
    ]
}

/// `leader` / `follower` from `/readyz`; `None` while not ready or not answering.
pub async fn role(op: &Operator) -> Option<String> {
    let response = reqwest::Client::new()
        .get(format!("http://{}/readyz", op.admin))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

pub async fn wait_role(op: &Operator, expected: &str, timeout: Duration) {
    wait_for(&format!("/readyz to say {expected}"), timeout, || async {
        (role(op).await.as_deref() == Some(expected)).then_some(())
    })
    .await;
}

/// This operator's identity (`<hostname>_<uuid>`), as it logged it at start.
pub fn identity(op: &Operator) -> String {
    op.logs
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| {
            (l.json["msg"] == "Started operator workers")
                .then(|| l.json["identity"].as_str().map(str::to_owned))
                .flatten()
        })
        .expect("the operator logged its identity")
}

/// Requests that change something, other than its Lease, sent by the operator with `identity`
/// (its User-Agent carries the identity): `"PATCH deployments.apps" -> count`.
pub fn writes_by(cluster: &Cluster, identity: &str) -> BTreeMap<String, u64> {
    let stats = cluster.testbed.stats().snapshot();
    let mut out = BTreeMap::new();
    for (agent, requests) in &stats.by_user_agent_and_request {
        if !agent.contains(identity) {
            continue;
        }
        for (request, n) in requests {
            let read = ["GET ", "LIST ", "WATCH "]
                .iter()
                .any(|v| request.starts_with(v));
            if !read && !request.ends_with(" leases.coordination.k8s.io") {
                *out.entry(request.clone()).or_default() += n;
            }
        }
    }
    out
}

/// `N` and the event's `count` of every "Advance <canary> canary weight N" event, in the order
/// the events were created (their names end in the creation time in hex nanoseconds).
pub async fn advance_steps(cluster: &Cluster, ns: &str, name: &str) -> Vec<(u32, i32)> {
    let prefix = format!("Advance {name}.{ns} canary weight ");
    let api: Api<Event> = Api::namespaced(cluster.client.clone(), ns);
    let mut steps: Vec<(u128, u32, i32)> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter_map(|e| {
            let weight = e.message.as_deref()?.strip_prefix(&prefix)?.parse().ok()?;
            let created = e
                .metadata
                .name
                .as_deref()?
                .rsplit('.')
                .next()
                .and_then(|hex| u128::from_str_radix(hex, 16).ok())?;
            Some((created, weight, e.count.unwrap_or(1)))
        })
        .collect();
    steps.sort();
    steps.into_iter().map(|(_, w, c)| (w, c)).collect()
}
