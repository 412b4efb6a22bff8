//! The Kubernetes Services of a canary: `<svc>` (apex, selects the primary pods),
//! `<svc>-primary` and `<svc>-canary` (flagger-behavior §3.3).

use std::collections::BTreeMap;
use std::time::Duration;

use flagger_rollout::{PortRef, ServiceSpec as CanaryService};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};

use super::RouterError;
use crate::kubeops::{CanaryRef, FLUX_DISABLE_ANNOTATIONS, ObjectId, get_opt, merge_patch, upsert};

/// Reconciles the three Services of a canary.
#[derive(Clone)]
pub struct ServiceRouter {
    client: Client,
    timeout: Duration,
    store: Option<Store<Service>>,
    deployments: Option<Store<Deployment>>,
}

impl ServiceRouter {
    /// `deployments` is read (else a GET) only for `service.portDiscovery`.
    pub fn new(
        client: Client,
        timeout: Duration,
        store: Option<Store<Service>>,
        deployments: Option<Store<Deployment>>,
    ) -> Self {
        Self {
            client,
            timeout,
            store,
            deployments,
        }
    }

    /// Container ports of the target to expose besides the main one (`service.portDiscovery`).
    async fn extra_ports(&self, c: &CanaryRef) -> Result<Vec<ServicePort>, RouterError> {
        if !c.spec.service.port_discovery {
            return Ok(Vec::new());
        }
        let ns = c.namespace();
        let name = &c.spec.target_ref.name;
        let target = match self
            .deployments
            .as_ref()
            .and_then(|s| s.get(&ObjectRef::new(name).within(ns)))
        {
            Some(d) => Some((*d).clone()),
            None => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
                get_opt(&api, &ObjectId::new("Deployment", ns, name), self.timeout).await?
            }
        };
        Ok(target
            .and_then(|d| d.spec)
            .and_then(|s| s.template.spec)
            .map(|pod| discovered_ports(&pod, &c.spec.service))
            .unwrap_or_default())
    }

    /// Creates or updates `<svc>-canary`, `<svc>-primary` and `<svc>`.
    pub async fn reconcile(&self, c: &CanaryRef) -> Result<(), RouterError> {
        let ns = c.namespace();
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let extra = self.extra_ports(c).await?;
        for desired in desired_services(c, &extra) {
            let name = desired.metadata.name.clone().unwrap_or_default();
            let id = ObjectId::new("Service", ns, &name);
            let cached = self
                .store
                .as_ref()
                .and_then(|s| s.get(&ObjectRef::new(&name).within(ns)));
            upsert(
                &api,
                &id,
                self.timeout,
                cached,
                || desired.clone(),
                |live| update_service(c, live, &desired),
            )
            .await?;
        }
        Ok(())
    }

    /// revertOnDeletion: an apex Service that no Canary controls (it was there before Flagger)
    /// selects the target's pods again.
    pub async fn finalize(&self, c: &CanaryRef) -> Result<(), RouterError> {
        let ns = c.namespace();
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let id = ObjectId::new("Service", ns, &c.spec.service.name);
        let Some(live) = get_opt(&api, &id, self.timeout).await? else {
            return Ok(());
        };
        let owned_by_a_canary = live
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == c.kind && o.controller == Some(true));
        if owned_by_a_canary {
            return Ok(());
        }
        let selector = last_applied_selector(&live).unwrap_or_else(|| {
            BTreeMap::from([(c.selector.key.clone(), c.selector.value.clone())])
        });
        if live.spec.as_ref().and_then(|s| s.selector.as_ref()) == Some(&selector) {
            return Ok(());
        }
        merge_patch(
            &api,
            &id,
            self.timeout,
            &serde_json::json!({"spec": {"selector": selector}}),
        )
        .await?;
        Ok(())
    }
}

fn last_applied_selector(svc: &Service) -> Option<BTreeMap<String, String>> {
    let raw = svc
        .metadata
        .annotations
        .as_ref()?
        .get("kubectl.kubernetes.io/last-applied-configuration")?;
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    serde_json::from_value(v.pointer("/spec/selector")?.clone()).ok()
}

fn custom_metadata(block: Option<&serde_json::Value>, field: &str) -> BTreeMap<String, String> {
    block
        .and_then(|b| b.get(field))
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default()
}

/// Sidecars whose ports are never exposed by port discovery.
const SIDECARS: &[&str] = &["istio-proxy", "envoy", "linkerd-proxy"];

/// Ports of the pod's containers other than the main service port / target port, named after
/// the container port (or `tcp-<container>-<index>`), sorted by name.
pub fn discovered_ports(pod: &PodSpec, s: &CanaryService) -> Vec<ServicePort> {
    let mut out: BTreeMap<String, i32> = BTreeMap::new();
    for c in pod
        .containers
        .iter()
        .filter(|c| !SIDECARS.contains(&c.name.as_str()))
    {
        for (i, p) in c.ports.iter().flatten().enumerate() {
            let is_main = p.container_port == i32::from(s.port)
                || match &s.target_port {
                    PortRef::Number(n) => p.container_port == i32::from(*n),
                    PortRef::Name(n) => p.name.as_deref() == Some(n.as_str()),
                };
            if is_main {
                continue;
            }
            let name = p
                .name
                .clone()
                .unwrap_or_else(|| format!("tcp-{}-{i}", c.name));
            out.entry(name).or_insert(p.container_port);
        }
    }
    out.into_iter()
        .map(|(name, port)| ServicePort {
            name: Some(name),
            protocol: Some("TCP".into()),
            port,
            target_port: Some(IntOrString::Int(port)),
            ..Default::default()
        })
        .collect()
}

/// The three Services, in creation order: canary, primary, apex. `extra_ports` are the
/// discovered ports (empty without `portDiscovery`).
pub fn desired_services(c: &CanaryRef, extra_ports: &[ServicePort]) -> Vec<Service> {
    let s = &c.spec.service;
    let primary = c.selector.primary_value();
    vec![
        service(
            c,
            &s.canary_name(),
            &c.selector.value,
            s.canary.as_ref(),
            extra_ports,
        ),
        service(
            c,
            &s.primary_name(),
            &primary,
            s.primary.as_ref(),
            extra_ports,
        ),
        service(c, &s.name, &primary, s.apex.as_ref(), extra_ports),
    ]
}

fn service(
    c: &CanaryRef,
    name: &str,
    selects: &str,
    meta: Option<&serde_json::Value>,
    extra_ports: &[ServicePort],
) -> Service {
    let s = &c.spec.service;
    let mut labels = custom_metadata(meta, "labels");
    labels.insert(c.selector.key.clone(), name.to_owned());
    let mut annotations = custom_metadata(meta, "annotations");
    for (k, v) in FLUX_DISABLE_ANNOTATIONS {
        annotations.insert((*k).to_owned(), (*v).to_owned());
    }
    let target_port = match &s.target_port {
        PortRef::Number(n) => IntOrString::Int(i32::from(*n)),
        PortRef::Name(n) => IntOrString::String(n.clone()),
    };
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(c.namespace().to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![c.owner_reference()]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: s.headless.then(|| "None".to_owned()),
            selector: Some(BTreeMap::from([(
                c.selector.key.clone(),
                selects.to_owned(),
            )])),
            ports: Some(
                std::iter::once(ServicePort {
                    name: Some(s.port_name.clone()),
                    protocol: Some("TCP".into()),
                    port: i32::from(s.port),
                    target_port: Some(target_port),
                    app_protocol: s.app_protocol.clone(),
                    ..Default::default()
                })
                .chain(extra_ports.iter().cloned())
                .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

fn same_port(a: &ServicePort, b: &ServicePort) -> bool {
    a.name == b.name
        && a.port == b.port
        && a.target_port == b.target_port
        && a.protocol.as_deref().unwrap_or("TCP") == b.protocol.as_deref().unwrap_or("TCP")
        && a.app_protocol == b.app_protocol
}

/// `live` with the desired selector and ports (node ports kept by name), and the desired
/// labels/annotations when this Canary controls it; `None` when nothing differs.
pub fn update_service(c: &CanaryRef, live: &Service, desired: &Service) -> Option<Service> {
    let ls = live.spec.clone().unwrap_or_default();
    let ds = desired.spec.clone().unwrap_or_default();
    let live_ports = ls.ports.clone().unwrap_or_default();
    let desired_ports = ds.ports.clone().unwrap_or_default();
    let ports_same = live_ports.len() == desired_ports.len()
        && live_ports
            .iter()
            .zip(&desired_ports)
            .all(|(a, b)| same_port(a, b));
    let selector_same = ls.selector == ds.selector;
    let owned = c.controls(live);
    let meta_same = !owned
        || (live.metadata.labels == desired.metadata.labels
            && live.metadata.annotations == desired.metadata.annotations);
    if ports_same && selector_same && meta_same {
        return None;
    }
    let mut out = live.clone();
    let spec = out.spec.get_or_insert_with(Default::default);
    spec.selector = ds.selector.clone();
    spec.ports = Some(
        desired_ports
            .into_iter()
            .map(|mut p| {
                p.node_port = live_ports
                    .iter()
                    .find(|l| l.name == p.name)
                    .and_then(|l| l.node_port);
                p
            })
            .collect(),
    );
    if owned {
        out.metadata.labels = desired.metadata.labels.clone();
        out.metadata.annotations = desired.metadata.annotations.clone();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::kubeops::tests_support::{canary_ref_with, spec_with};
    use flagger_rollout::ServiceInput;

    fn canary() -> CanaryRef {
        canary_ref_with(spec_with(ServiceInput {
            port: Some(9898),
            target_port: Some(serde_json::json!("http")),
            app_protocol: Some("http".into()),
            apex: Some(serde_json::json!({"labels": {"team": "a"}})),
            ..Default::default()
        }))
    }

    #[test]
    fn three_services_select_primary_and_canary_pods() {
        let c = canary();
        let svcs = desired_services(&c, &[]);
        let names: Vec<_> = svcs
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["podinfo-canary", "podinfo-primary", "podinfo"]);
        let sel =
            |i: usize| svcs[i].spec.as_ref().unwrap().selector.clone().unwrap()["app"].clone();
        assert_eq!(
            (sel(0), sel(1), sel(2)),
            (
                "podinfo".into(),
                "podinfo-primary".into(),
                "podinfo-primary".into()
            )
        );
        let port = &svcs[2].spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(port.name.as_deref(), Some("http"));
        assert_eq!(port.port, 9898);
        assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
        assert_eq!(port.app_protocol.as_deref(), Some("http"));
        let labels = svcs[2].metadata.labels.clone().unwrap();
        assert_eq!(labels["app"], "podinfo");
        assert_eq!(labels["team"], "a");
        assert_eq!(
            svcs[0].metadata.annotations.clone().unwrap()["kustomize.toolkit.fluxcd.io/reconcile"],
            "disabled"
        );
        assert_eq!(
            svcs[1].metadata.owner_references.clone().unwrap()[0].uid,
            "uid-canary"
        );
    }

    #[test]
    fn port_discovery_exposes_other_container_ports() {
        let c = canary();
        let pod: PodSpec = serde_json::from_value(serde_json::json!({"containers": [
            {"name": "app", "ports": [{"name": "http", "containerPort": 9898}, {"name": "grpc", "containerPort": 9999}, {"containerPort": 8080}]},
            {"name": "istio-proxy", "ports": [{"name": "http-envoy-prom", "containerPort": 15090}]}
        ]}))
        .unwrap();
        let ports = discovered_ports(&pod, &c.spec.service);
        let got: Vec<_> = ports
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.port))
            .collect();
        assert_eq!(
            got,
            [("grpc".to_string(), 9999), ("tcp-app-2".to_string(), 8080)]
        );
        let svc = desired_services(&c, &ports).remove(0);
        assert_eq!(svc.spec.unwrap().ports.unwrap().len(), 3);
    }

    #[test]
    fn a_matching_service_needs_no_write_and_a_taken_over_one_keeps_its_metadata() {
        let c = canary();
        let desired = desired_services(&c, &[]).remove(2);
        assert!(update_service(&c, &desired, &desired).is_none());
        let mut foreign = desired.clone();
        foreign.metadata.owner_references = None;
        foreign.metadata.labels = Some(BTreeMap::from([("mine".into(), "yes".into())]));
        foreign.spec.as_mut().unwrap().selector =
            Some(BTreeMap::from([("app".into(), "podinfo".into())]));
        let updated = update_service(&c, &foreign, &desired).unwrap();
        assert_eq!(
            updated.spec.unwrap().selector.unwrap()["app"],
            "podinfo-primary"
        );
        assert_eq!(updated.metadata.labels.unwrap()["mine"], "yes");
    }
}
