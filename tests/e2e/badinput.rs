//! Helpers shared by the bad-input and fault end-to-end tests: raw (untyped) Canary writes, event
//! listings with counts, workloads under any name, condition lookups.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::harness::{Cluster, podinfo};

/// The Canary resource, untyped: objects the typed `Canary` cannot hold can still be written.
pub fn canary_resource() -> ApiResource {
    ApiResource::erase::<flagger_actors::crd::Canary>(&())
}

pub fn raw_canaries(cluster: &Cluster, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(cluster.client.clone(), ns, &canary_resource())
}

/// Creates a Canary from JSON as written (no typed round trip).
pub async fn create_raw_canary(cluster: &Cluster, ns: &str, canary: Value) {
    let obj: DynamicObject = serde_json::from_value(canary).unwrap();
    raw_canaries(cluster, ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
}

/// JSON merge patch of a Canary.
pub async fn patch_canary(cluster: &Cluster, ns: &str, name: &str, patch: Value) {
    raw_canaries(cluster, ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// A Canary as untyped JSON.
pub async fn raw_canary(cluster: &Cluster, ns: &str, name: &str) -> Value {
    serde_json::to_value(raw_canaries(cluster, ns).get(name).await.unwrap()).unwrap()
}

/// The condition `type` of a Canary's status.
pub fn condition(canary: &Value, type_: &str) -> Option<Value> {
    canary["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// One Kubernetes Event as a test looks at it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub type_: String,
    pub message: String,
    pub count: i32,
    pub object: String,
}

/// Every Event of `ns` regarding `name` (all of `ns` when `name` is empty).
pub async fn events(cluster: &Cluster, ns: &str, name: &str) -> Vec<Seen> {
    let api: Api<Event> = Api::namespaced(cluster.client.clone(), ns);
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| name.is_empty() || e.involved_object.name.as_deref() == Some(name))
        .map(|e| Seen {
            type_: e.type_.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count: e.count.unwrap_or(1),
            object: e.involved_object.name.clone().unwrap_or_default(),
        })
        .collect()
}

/// Every Event of the cluster, serialised whole (for secret scans).
pub async fn all_events_json(cluster: &Cluster) -> Vec<String> {
    let api: Api<Event> = Api::all(cluster.client.clone());
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| serde_json::to_string(&e).unwrap())
        .collect()
}

/// The harness' podinfo Deployment under another name (labels follow the name).
pub fn deployment(ns: &str, name: &str, image: &str) -> Value {
    let mut d = podinfo(ns, image);
    d["metadata"]["name"] = json!(name);
    d["metadata"]["labels"] = json!({"app": name});
    d["spec"]["selector"]["matchLabels"] = json!({"app": name});
    d["spec"]["template"]["metadata"]["labels"] = json!({"app": name});
    d
}

/// A Canary for target `name` (service port 9898) with this `analysis`.
pub fn canary_for(ns: &str, name: &str, analysis: Value) -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898},
            "analysis": analysis
        }
    })
}

/// The image of `<name>-primary`.
pub async fn primary_image(cluster: &Cluster, ns: &str, name: &str) -> Option<String> {
    let d = cluster.deployment(ns, &format!("{name}-primary")).await?;
    d.spec?.template.spec?.containers[0].image.clone()
}
