//! The demo's cluster: a simulated one ([`flagger_testbed::Testbed`]) in this process, with
//! Flagger's CRDs and the seed's manifests applied over HTTP, and the reads the live view needs
//! (the Canary's status, its events, the `kubectl get` table, the primary's image).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use flagger_testbed::{Config, Testbed};
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

/// Flagger's CRDs, as the Helm chart installs them (embedded: the demo runs from anywhere).
const CRDS: [(&str, &str); 3] = [
    (
        "canaries.flagger.app",
        include_str!("../../charts/flagger/crds/canary.yaml"),
    ),
    (
        "metrictemplates.flagger.app",
        include_str!("../../charts/flagger/crds/metrictemplate.yaml"),
    ),
    (
        "alertproviders.flagger.app",
        include_str!("../../charts/flagger/crds/alertprovider.yaml"),
    ),
];

/// The seed's manifests, applied in this order.
pub const MANIFESTS: [(&str, &str); 4] = [
    ("namespace/test", include_str!("manifests/namespace.yaml")),
    (
        "deployment/podinfo",
        include_str!("manifests/deployment.yaml"),
    ),
    ("hpa/podinfo", include_str!("manifests/hpa.yaml")),
    ("canary/podinfo", include_str!("manifests/canary.yaml")),
];

pub const NAMESPACE: &str = "test";
pub const NAME: &str = "podinfo";
/// The container `kubectl set image deployment/podinfo podinfod=...` changes.
pub const CONTAINER: &str = "podinfod";

/// How long the simulated Deployments take to become ready after a change (plus the seed's
/// `minReadySeconds`).
const READY_DELAY: Duration = Duration::from_millis(500);
/// Requests per second the simulated mesh sends to podinfo (split by the VirtualService).
pub const RPS: u32 = 40;

pub struct Cluster {
    pub testbed: Testbed,
    pub client: Client,
    pub kubeconfig: PathBuf,
}

/// What `status` says, as `kubectl get canary` would show it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub phase: String,
    pub weight: i64,
    pub failed_checks: i64,
    pub last_applied_spec: String,
}

impl Status {
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }
}

/// One Kubernetes Event about the Canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub uid: String,
    pub type_: String,
    pub reason: String,
    pub from: String,
    pub message: String,
    pub count: i64,
    /// Unix seconds.
    pub first_seen: i64,
    pub last_seen: i64,
    /// Order of the last write (events of the same second sort by it).
    pub resource_version: u64,
}

/// A `meta.k8s.io/v1` Table as kubectl prints it: headers and rows of text cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// Plural and scope of the kinds the demo applies.
fn resource_of(api_version: &str, kind: &str) -> anyhow::Result<(ApiResource, bool)> {
    let (plural, namespaced) = match kind {
        "Namespace" => ("namespaces", false),
        "CustomResourceDefinition" => ("customresourcedefinitions", false),
        "Deployment" => ("deployments", true),
        "HorizontalPodAutoscaler" => ("horizontalpodautoscalers", true),
        "Canary" => ("canaries", true),
        other => bail!("the demo cannot apply a {other}"),
    };
    Ok((
        ApiResource::from_gvk_with_plural(&gvk(api_version, kind), plural),
        namespaced,
    ))
}

fn canary_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&gvk("flagger.app/v1beta1", "Canary"), "canaries")
}

fn vs_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &gvk("networking.istio.io/v1beta1", "VirtualService"),
        "virtualservices",
    )
}

fn unix(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
}

impl Cluster {
    /// Starts the simulated cluster and writes its kubeconfig into `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Cluster> {
        let testbed = Testbed::start(Config {
            ready_delay: READY_DELAY,
            rps: RPS,
            ..Config::default()
        })
        .await
        .context("starting the simulated cluster")?;
        let client = testbed
            .client()
            .context("connecting to the simulated cluster")?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, testbed.kubeconfig_yaml())
            .with_context(|| format!("writing {}", kubeconfig.display()))?;
        Ok(Cluster {
            testbed,
            client,
            kubeconfig,
        })
    }

    /// Creates an object from a YAML manifest, as `kubectl create -f` would.
    async fn create(&self, what: &str, yaml: &str) -> anyhow::Result<()> {
        let obj: DynamicObject =
            serde_saphyr::from_str(yaml).with_context(|| format!("parsing {what}"))?;
        let types = obj
            .types
            .as_ref()
            .ok_or_else(|| anyhow!("{what}: no apiVersion/kind"))?;
        let (resource, namespaced) = resource_of(&types.api_version, &types.kind)?;
        let api: Api<DynamicObject> = match (namespaced, obj.metadata.namespace.as_deref()) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &resource),
            (true, None) => bail!("{what}: metadata.namespace is missing"),
            (false, _) => Api::all_with(self.client.clone(), &resource),
        };
        api.create(&PostParams::default(), &obj)
            .await
            .with_context(|| format!("creating {what}"))?;
        Ok(())
    }

    /// Installs the CRDs and waits until the API server serves Canaries.
    pub async fn install_crds(&self) -> anyhow::Result<()> {
        for (name, yaml) in CRDS {
            self.create(name, yaml).await?;
        }
        let canaries: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), "default", &canary_resource());
        let deadline = Instant::now() + Duration::from_secs(10);
        while canaries.list(&ListParams::default()).await.is_err() {
            if Instant::now() > deadline {
                bail!("the simulated cluster did not serve canaries.flagger.app within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Applies the seed's namespace, Deployment, HPA and Canary.
    pub async fn apply_manifests(&self) -> anyhow::Result<()> {
        for (name, yaml) in MANIFESTS {
            self.create(name, yaml).await?;
        }
        Ok(())
    }

    fn canaries(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), NAMESPACE, &canary_resource())
    }

    pub async fn status(&self) -> anyhow::Result<Status> {
        let canary = self
            .canaries()
            .get(NAME)
            .await
            .context("reading canary/podinfo")?;
        let s = &canary.data["status"];
        Ok(Status {
            phase: s["phase"].as_str().unwrap_or_default().to_owned(),
            weight: s["canaryWeight"].as_i64().unwrap_or(0),
            failed_checks: s["failedChecks"].as_i64().unwrap_or(0),
            last_applied_spec: s["lastAppliedSpec"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// `spec.analysis.threshold` and `maxWeight` of the applied Canary.
    pub async fn analysis_limits(&self) -> anyhow::Result<(i64, i64)> {
        let canary = self
            .canaries()
            .get(NAME)
            .await
            .context("reading canary/podinfo")?;
        let a = &canary.data["spec"]["analysis"];
        Ok((
            a["threshold"].as_i64().unwrap_or(0),
            a["maxWeight"].as_i64().unwrap_or(0),
        ))
    }

    /// The Events about canary/podinfo, least recently seen first (as `kubectl describe` lists
    /// them).
    pub async fn events(&self) -> anyhow::Result<Vec<EventRow>> {
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), NAMESPACE);
        let list = events
            .list(&ListParams::default())
            .await
            .context("listing events")?;
        let mut rows: Vec<EventRow> = list
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object.kind.as_deref() == Some("Canary")
                    && e.involved_object.name.as_deref() == Some(NAME)
            })
            .map(|e| {
                let v = serde_json::to_value(&e).unwrap_or(Value::Null);
                let first = unix(&v["firstTimestamp"]).or_else(|| unix(&v["eventTime"]));
                let last = unix(&v["lastTimestamp"]).or(first);
                EventRow {
                    resource_version: e
                        .metadata
                        .resource_version
                        .as_deref()
                        .and_then(|rv| rv.parse().ok())
                        .unwrap_or(0),
                    uid: e.metadata.uid.unwrap_or_default(),
                    type_: e.type_.unwrap_or_default(),
                    reason: e.reason.unwrap_or_default(),
                    from: e
                        .source
                        .and_then(|s| s.component)
                        .or(e.reporting_component)
                        .unwrap_or_default(),
                    message: e.message.unwrap_or_default(),
                    count: i64::from(e.count.unwrap_or(1)),
                    first_seen: first.unwrap_or(0),
                    last_seen: last.unwrap_or(0),
                }
            })
            .collect();
        rows.sort_by_key(|e| (e.last_seen, e.resource_version));
        Ok(rows)
    }

    /// `kubectl -n test set image deployment/podinfo podinfod=<image>`, plus pod-template
    /// annotations (the simulated mesh reads a pod's behaviour from them).
    pub async fn release(
        &self,
        image: &str,
        annotations: &BTreeMap<&str, &str>,
    ) -> anyhow::Result<()> {
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(self.client.clone(), NAMESPACE);
        let d = deployments
            .get(NAME)
            .await
            .context("reading deployment/podinfo")?;
        let mut containers = d
            .spec
            .and_then(|s| s.template.spec)
            .map(|s| s.containers)
            .unwrap_or_default();
        let container = containers
            .iter_mut()
            .find(|c| c.name == CONTAINER)
            .ok_or_else(|| anyhow!("deployment/podinfo has no container {CONTAINER}"))?;
        container.image = Some(image.to_owned());
        // A merge patch replaces lists whole, so the containers go back complete.
        let patch = json!({"spec": {"template": {
            "metadata": {"annotations": annotations},
            "spec": {"containers": containers},
        }}});
        deployments
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("updating deployment/podinfo")?;
        Ok(())
    }

    /// Image and pod-template annotations of `deployment/<name>`.
    pub async fn template_of(
        &self,
        name: &str,
    ) -> anyhow::Result<(String, BTreeMap<String, String>)> {
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(self.client.clone(), NAMESPACE);
        let d = deployments
            .get(name)
            .await
            .with_context(|| format!("reading deployment/{name}"))?;
        let template = d.spec.map(|s| s.template).unwrap_or_default();
        let image = template
            .spec
            .and_then(|s| s.containers.into_iter().find(|c| c.name == CONTAINER))
            .and_then(|c| c.image)
            .unwrap_or_default();
        let annotations = template
            .metadata
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        Ok((image, annotations))
    }

    /// `(primary, canary)` weights of the VirtualService podinfo.
    pub async fn weights(&self) -> anyhow::Result<(i64, i64)> {
        let vs: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), NAMESPACE, &vs_resource());
        let vs = vs
            .get(NAME)
            .await
            .context("reading virtualservice/podinfo")?;
        let routes = vs.data["spec"]["http"][0]["route"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let weight = |host: String| {
            routes
                .iter()
                .find(|r| r["destination"]["host"] == host.as_str())
                .and_then(|r| r["weight"].as_i64())
                .unwrap_or(0)
        };
        Ok((
            weight(format!("{NAME}-primary")),
            weight(format!("{NAME}-canary")),
        ))
    }

    /// `kubectl get canaries -A`: the server's Table (the CRD's printer columns), priority-0
    /// columns only, with a NAMESPACE column first.
    pub async fn canaries_table(&self) -> anyhow::Result<Table> {
        let request = http::Request::get("/apis/flagger.app/v1beta1/canaries")
            .header(
                http::header::ACCEPT,
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            )
            .body(Vec::new())?;
        let text = self
            .client
            .request_text(request)
            .await
            .context("kubectl get canaries -A")?;
        let table: Value = serde_json::from_str(&text).context("parsing the Table")?;
        Ok(table_from(&table))
    }
}

/// Text cells of a server-side Table, as kubectl prints them.
fn table_from(table: &Value) -> Table {
    let columns = table["columnDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let shown: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut headers = vec!["NAMESPACE".to_owned()];
    headers.extend(
        shown
            .iter()
            .map(|i| columns[*i]["name"].as_str().unwrap_or("").to_uppercase()),
    );
    let rows = table["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|row| {
            let mut cells = vec![
                row["object"]["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            ];
            cells.extend(shown.iter().map(|i| match &row["cells"][*i] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }));
            cells
        })
        .collect();
    Table { headers, rows }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn tables_show_priority_zero_columns_with_the_namespace_first() {
        let table = json!({
            "columnDefinitions": [
                {"name": "Name", "priority": 0},
                {"name": "Status", "priority": 0},
                {"name": "FailedChecks", "priority": 1},
                {"name": "Weight", "priority": 0}
            ],
            "rows": [{
                "cells": ["podinfo", "Failed", 5, null],
                "object": {"metadata": {"namespace": "test"}}
            }]
        });
        assert_eq!(
            table_from(&table),
            Table {
                headers: vec!["NAMESPACE", "NAME", "STATUS", "WEIGHT"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                rows: vec![
                    vec!["test", "podinfo", "Failed", ""]
                        .into_iter()
                        .map(String::from)
                        .collect()
                ],
            }
        );
    }

    #[test]
    fn every_manifest_is_a_kind_the_demo_can_apply() {
        for (name, yaml) in MANIFESTS.iter().chain(CRDS.iter()) {
            let obj: DynamicObject = serde_saphyr::from_str(yaml).unwrap();
            let types = obj.types.unwrap();
            let (_, namespaced) = resource_of(&types.api_version, &types.kind).unwrap();
            assert_eq!(namespaced, obj.metadata.namespace.is_some(), "{name}");
        }
    }
}
