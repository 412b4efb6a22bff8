//! Gathering a tick's observations from the reflector caches (no API calls).
//!
//! Contract:
//! - [`observe_target`] computes the target's revision with [`flagger_rollout::revision::revision`]
//!   over its pod template and, with config tracking on, the checksums of the ConfigMaps and
//!   Secrets it references (volumes, projected sources, `env[].valueFrom`, `envFrom`, in
//!   containers and init containers), skipping objects annotated
//!   `flagger.app/config-tracking: disabled` and Secrets of types upstream does not track. A
//!   missing mandatory reference is an error; a missing optional one is ignored.
//! - Readiness comes from [`flagger_rollout::readiness::deployment_readiness`], with the HPA's
//!   desired replicas so a canary halts while its autoscaler is scaling.
//! - Everything here is synchronous and reads only the stores, so it is cheap enough to run on
//!   every Poke to decide whether the revision changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use flagger_rollout::readiness::{DeploymentView, deployment_readiness};
use flagger_rollout::revision::{config_checksum, revision};
use flagger_rollout::{
    CanarySpec, HookOutcome, HookResult, HookType, MetricOutcome, MetricSource, MetricValue,
    Observed, Phase, PrimaryObservation, ProviderCheck, Readiness, TargetObservation, Timestamp,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret};
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::cache::{Caches, lookup};
use crate::key::CanaryKey;
use crate::messages::{CallHook, CheckProviders, RunQueries};
use crate::metrics::{MetricQuery, MetricsServer, ResolvedTemplate};
use crate::notifier::{AlertRoute, Destination};
use crate::ports::Ports;
use crate::secret::SecretString;
use crate::webhook::{HookPayload, hook_outcome};

/// Annotation that opts a ConfigMap or Secret out of tracking (values starting with `disable`).
pub const CONFIG_TRACKING_ANNOTATION: &str = "flagger.app/config-tracking";

/// Secret types whose content is tracked, as upstream.
const TRACKED_SECRET_TYPES: &[&str] = &[
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
];

/// Kind of a referenced config object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    /// The prefix of its `trackedConfigs` key (`configmap/<name>`, `secret/<name>`).
    pub fn key_prefix(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmap",
            Self::Secret => "secret",
        }
    }
}

/// One reference from a pod spec to a ConfigMap or Secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
    /// The pod starts without it (`optional: true` on every reference).
    pub optional: bool,
}

/// Every ConfigMap/Secret the pod spec references, deduplicated; a name referenced both
/// optionally and mandatorily counts as mandatory.
pub fn config_refs(pod: &PodSpec) -> Vec<ConfigRef> {
    let mut found: BTreeMap<(ConfigKind, String), bool> = BTreeMap::new();
    let mut add = |kind, name: Option<&String>, optional: Option<bool>| {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            let optional = optional.unwrap_or(false);
            found
                .entry((kind, name.clone()))
                .and_modify(|o| *o = *o && optional)
                .or_insert(optional);
        }
    };
    for volume in pod.volumes.iter().flatten() {
        if let Some(cm) = &volume.config_map {
            add(ConfigKind::ConfigMap, Some(&cm.name), cm.optional);
        }
        if let Some(s) = &volume.secret {
            add(ConfigKind::Secret, s.secret_name.as_ref(), s.optional);
        }
        if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(cm) = &source.config_map {
                    add(ConfigKind::ConfigMap, Some(&cm.name), cm.optional);
                }
                if let Some(s) = &source.secret {
                    add(ConfigKind::Secret, Some(&s.name), s.optional);
                }
            }
        }
    }
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    for c in containers {
        for env in c.env.iter().flatten() {
            if let Some(from) = &env.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    add(ConfigKind::ConfigMap, Some(&r.name), r.optional);
                }
                if let Some(r) = &from.secret_key_ref {
                    add(ConfigKind::Secret, Some(&r.name), r.optional);
                }
            }
        }
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                add(ConfigKind::ConfigMap, Some(&r.name), r.optional);
            }
            if let Some(r) = &from.secret_ref {
                add(ConfigKind::Secret, Some(&r.name), r.optional);
            }
        }
    }
    found
        .into_iter()
        .map(|((kind, name), optional)| ConfigRef {
            kind,
            name,
            optional,
        })
        .collect()
}

fn tracking_disabled<K: ResourceExt>(obj: &K) -> bool {
    obj.annotations()
        .get(CONFIG_TRACKING_ANNOTATION)
        .is_some_and(|v| v.starts_with("disable"))
}

/// `trackedConfigs` of a pod spec: `configmap/<name>` / `secret/<name>` → checksum of `.data`.
pub fn tracked_configs(
    caches: &Caches,
    namespace: &str,
    pod: &PodSpec,
) -> Result<BTreeMap<String, String>, String> {
    let mut tracked = BTreeMap::new();
    for r in config_refs(pod) {
        let checksum = match r.kind {
            ConfigKind::ConfigMap => match lookup(&caches.config_maps, namespace, &r.name) {
                Some(cm) if tracking_disabled(cm.as_ref()) => None,
                Some(cm) => Some(config_map_checksum(&cm)),
                None => missing(&r, namespace)?,
            },
            ConfigKind::Secret => match lookup(&caches.secrets, namespace, &r.name) {
                Some(s) if tracking_disabled(s.as_ref()) => None,
                Some(s) if !secret_is_tracked(&s) => None,
                Some(s) => Some(secret_checksum(&s)),
                None => missing(&r, namespace)?,
            },
        };
        if let Some(sum) = checksum {
            tracked.insert(format!("{}/{}", r.kind.key_prefix(), r.name), sum);
        }
    }
    Ok(tracked)
}

fn missing(r: &ConfigRef, namespace: &str) -> Result<Option<String>, String> {
    if r.optional {
        return Ok(None);
    }
    let kind = match r.kind {
        ConfigKind::ConfigMap => "configmaps",
        ConfigKind::Secret => "secrets",
    };
    Err(format!(
        "{kind} \"{}\" not found in namespace {namespace}",
        r.name
    ))
}

fn secret_is_tracked(s: &Secret) -> bool {
    TRACKED_SECRET_TYPES.contains(&s.type_.as_deref().unwrap_or("Opaque"))
}

fn config_map_checksum(cm: &ConfigMap) -> String {
    config_checksum(&cm.data.clone().unwrap_or_default())
}

/// Checksum over the base64 text of each value, i.e. the `.data` map as the API shows it.
fn secret_checksum(s: &Secret) -> String {
    let data: BTreeMap<String, String> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| {
            let text = serde_json::to_value(v)
                .ok()
                .and_then(|j| j.as_str().map(str::to_owned))
                .unwrap_or_default();
            (k.clone(), text)
        })
        .collect();
    config_checksum(&data)
}

/// Revision and tracked configs of the target Deployment (readiness filled by the caller).
pub fn target_revision(
    caches: &Caches,
    deployment: &Deployment,
    track_configs: bool,
) -> Result<(String, BTreeMap<String, String>), String> {
    let namespace = deployment.namespace().unwrap_or_default();
    let template = deployment
        .spec
        .as_ref()
        .map(|s| &s.template)
        .ok_or_else(|| format!("deployment {} has no spec", deployment.name_any()))?;
    let configs = match (track_configs, template.spec.as_ref()) {
        (true, Some(pod)) => tracked_configs(caches, &namespace, pod)?,
        _ => BTreeMap::new(),
    };
    let template_json = serde_json::to_value(template)
        .map_err(|e| format!("deployment {} template: {e}", deployment.name_any()))?;
    Ok((revision(&template_json, &configs), configs))
}

/// The numbers readiness is computed from; `hpa` is the autoscaler that scales `d`, if any.
pub fn deployment_view(d: &Deployment, hpa: Option<&HorizontalPodAutoscaler>) -> DeploymentView {
    let status = d.status.clone().unwrap_or_default();
    let conditions = status.conditions.clone().unwrap_or_default();
    let progress_deadline_exceeded = conditions.iter().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    let unavailable_since = conditions
        .iter()
        .find(|c| {
            c.type_ == "Available"
                && c.status == "False"
                && c.reason.as_deref() == Some("MinimumReplicasUnavailable")
        })
        .and_then(|c| {
            c.last_update_time
                .as_ref()
                .or(c.last_transition_time.as_ref())
        })
        .map(|t| Timestamp::from_unix_millis(t.0.as_millisecond()));
    let autoscaler_desired_replicas = hpa
        .and_then(|h| h.status.as_ref())
        .map(|s| s.desired_replicas)
        .filter(|&desired| desired > 0);
    DeploymentView {
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: status.observed_generation.unwrap_or(0),
        replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        status_replicas: status.replicas.unwrap_or(0),
        updated_replicas: status.updated_replicas.unwrap_or(0),
        available_replicas: status.available_replicas.unwrap_or(0),
        progress_deadline_exceeded,
        unavailable_since,
        autoscaler_desired_replicas,
    }
}

/// The HPA of `namespace` that scales Deployment `name` (by `scaleTargetRef`).
fn hpa_for(
    hpas: &Store<HorizontalPodAutoscaler>,
    namespace: &str,
    name: &str,
) -> Option<Arc<HorizontalPodAutoscaler>> {
    hpas.find(|h| {
        h.namespace().as_deref() == Some(namespace)
            && h.spec.as_ref().is_some_and(|s| {
                s.scale_target_ref.kind == "Deployment" && s.scale_target_ref.name == name
            })
    })
}

fn readiness(
    d: &Deployment,
    hpas: &Store<HorizontalPodAutoscaler>,
    threshold: u8,
    spec: &CanarySpec,
    now: Timestamp,
) -> Readiness {
    let namespace = d.namespace().unwrap_or_default();
    let hpa = spec
        .autoscaler_ref
        .as_ref()
        .and_then(|_| hpa_for(hpas, &namespace, &d.name_any()));
    deployment_readiness(
        &d.name_any(),
        &deployment_view(d, hpa.as_deref()),
        threshold,
        spec.progress_deadline,
        now,
    )
}

/// Where a tick reads the workloads from: the caches, or objects read fresh from the API server
/// right after this canary wrote them (so a stale cache cannot report the old, ready state).
#[derive(Debug, Clone, Default)]
pub struct Workloads {
    pub target: Option<Arc<Deployment>>,
    pub primary: Option<Arc<Deployment>>,
}

impl Workloads {
    pub fn from_cache(caches: &Caches, spec: &CanarySpec) -> Self {
        Self {
            target: lookup(&caches.deployments, &spec.namespace, &spec.target_ref.name),
            primary: lookup(&caches.deployments, &spec.namespace, &spec.primary_name()),
        }
    }
}

/// The target's observation: revision, tracked configs, readiness.
pub fn observe_target(
    caches: &Caches,
    spec: &CanarySpec,
    workloads: &Workloads,
    track_configs: bool,
    now: Timestamp,
) -> Observed<TargetObservation> {
    let Some(d) = &workloads.target else {
        return Observed::Missing;
    };
    match target_revision(caches, d, track_configs) {
        Ok((revision, tracked_configs)) => Observed::Found(TargetObservation {
            revision,
            tracked_configs,
            readiness: readiness(
                d,
                &caches.hpas,
                spec.analysis.canary_ready_threshold,
                spec,
                now,
            ),
        }),
        Err(e) => Observed::Error(e),
    }
}

/// The `<t>-primary` observation.
pub fn observe_primary(
    caches: &Caches,
    spec: &CanarySpec,
    workloads: &Workloads,
    now: Timestamp,
) -> Observed<PrimaryObservation> {
    match &workloads.primary {
        None => Observed::Missing,
        Some(d) => Observed::Found(PrimaryObservation {
            readiness: readiness(
                d,
                &caches.hpas,
                spec.analysis.primary_ready_threshold,
                spec,
                now,
            ),
        }),
    }
}

// ------------------------------------------------------------------------------------------------
// Gathering what `decide` asks for: hooks, metrics, metric providers (through the ports).
// ------------------------------------------------------------------------------------------------

/// Calls the hooks of `hook_type` in spec order, stopping as [`HookType::stops_on_success`] says.
pub async fn run_hooks(
    ports: &Ports,
    key: &CanaryKey,
    spec: &CanarySpec,
    hook_type: HookType,
    phase: Phase,
    checksum: &str,
) -> Vec<HookOutcome> {
    let mut outcomes = Vec::new();
    for hook in spec.analysis.hooks(hook_type) {
        let payload = HookPayload::new(key, phase, checksum, hook);
        let call = CallHook {
            canary: key.clone(),
            hook: hook.clone(),
            payload,
        };
        let outcome = match ports.call_hook.send(call).await {
            Ok(result) => hook_outcome(&hook.name, &result),
            Err(e) => HookOutcome::failed(&hook.name, &format!("webhook actor unavailable: {e}")),
        };
        let passed = outcome.result == HookResult::Passed;
        outcomes.push(outcome);
        if passed == hook_type.stops_on_success() {
            break;
        }
    }
    outcomes
}

/// The data of a Secret as secret strings (values that are not UTF-8 are skipped).
pub fn secret_data(
    caches: &Caches,
    namespace: &str,
    name: &str,
) -> Option<BTreeMap<String, SecretString>> {
    let secret = lookup(&caches.secrets, namespace, name)?;
    let mut data: BTreeMap<String, SecretString> = secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| {
            String::from_utf8(v.0.clone())
                .ok()
                .map(|s| (k.clone(), SecretString::new(s)))
        })
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), SecretString::new(v.clone()));
    }
    Some(data)
}

/// The MetricTemplate of a template metric, with its provider resolved.
fn resolve_template(
    caches: &Caches,
    name: &str,
    namespace: &str,
) -> Result<ResolvedTemplate, String> {
    let template = lookup(&caches.metric_templates, namespace, name)
        .ok_or_else(|| format!("metric template {name}.{namespace} not found"))?;
    let provider = template
        .spec
        .provider
        .as_ref()
        .ok_or_else(|| format!("metric template {name}.{namespace} has no provider"))?;
    let secret = match provider.secret_ref.as_ref().and_then(|r| r.name.as_deref()) {
        Some(secret_name) => Some(secret_data(caches, namespace, secret_name).ok_or_else(
            || format!("secret {secret_name}.{namespace} of metric template {name}.{namespace} not found"),
        )?),
        None => None,
    };
    let server = MetricsServer::from_template_provider(provider, secret.as_ref())
        .map_err(|e| format!("metric template {name}.{namespace}: {e}"))?;
    Ok(ResolvedTemplate {
        server,
        query: template.spec.query.clone().unwrap_or_default(),
    })
}

/// Runs every metric of the analysis; results in spec order, one per metric.
pub async fn run_metrics(
    ports: &Ports,
    caches: &Caches,
    key: &CanaryKey,
    spec: &CanarySpec,
    global_server: &str,
) -> Vec<MetricOutcome> {
    let server = MetricsServer::for_canary(spec, global_server);
    let mut results: Vec<Option<MetricOutcome>> = Vec::new();
    let mut queries = Vec::new();
    for check in &spec.analysis.metrics {
        let template = match &check.source {
            MetricSource::Template { name, namespace } => {
                match resolve_template(caches, name, namespace) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        results.push(Some(MetricOutcome {
                            name: check.name.clone(),
                            value: MetricValue::Failed(e),
                        }));
                        continue;
                    }
                }
            }
            _ => None,
        };
        match MetricQuery::for_check(spec, check, &server, template.as_ref()) {
            Ok(q) => {
                queries.push(q);
                results.push(None);
            }
            Err(e) => results.push(Some(MetricOutcome {
                name: check.name.clone(),
                value: MetricValue::Failed(e.to_string()),
            })),
        }
    }
    let mut replies = if queries.is_empty() {
        Vec::new()
    } else {
        let names: Vec<String> = queries.iter().map(|q| q.metric.clone()).collect();
        match ports
            .run_queries
            .send(RunQueries {
                canary: key.clone(),
                queries,
            })
            .await
        {
            Ok(replies) => replies.into_iter().map(MetricOutcome::from).collect(),
            Err(e) => names
                .into_iter()
                .map(|name| MetricOutcome {
                    name,
                    value: MetricValue::Failed(format!("metrics actor unavailable: {e}")),
                })
                .collect(),
        }
    }
    .into_iter();
    results
        .into_iter()
        .filter_map(|slot| slot.or_else(|| replies.next()))
        .collect()
}

/// Are the metric providers of the analysis reachable?
pub async fn check_providers(
    ports: &Ports,
    caches: &Caches,
    key: &CanaryKey,
    spec: &CanarySpec,
    global_server: &str,
) -> ProviderCheck {
    let mut servers = Vec::new();
    for check in &spec.analysis.metrics {
        let server = match &check.source {
            MetricSource::Template { name, namespace } => {
                match resolve_template(caches, name, namespace) {
                    Ok(t) => t.server,
                    Err(e) => return ProviderCheck::Unavailable(e),
                }
            }
            _ => MetricsServer::for_canary(spec, global_server),
        };
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    match ports
        .check_providers
        .send(CheckProviders {
            canary: key.clone(),
            servers,
        })
        .await
    {
        Ok(check) => check,
        Err(e) => ProviderCheck::Unavailable(format!("metrics actor unavailable: {e}")),
    }
}

/// The canary's `analysis.alerts` resolved to destinations; `None` when it has none (the global
/// notifier is used). Unresolvable ones are logged and skipped.
pub fn alert_routes(caches: &Caches, spec: &CanarySpec) -> Option<Vec<AlertRoute>> {
    if spec.analysis.alerts.is_empty() {
        return None;
    }
    let mut routes = Vec::new();
    for alert in &spec.analysis.alerts {
        let (name, namespace) = (&alert.provider_name, &alert.provider_namespace);
        let Some(provider) = lookup(&caches.alert_providers, namespace, name) else {
            tracing::warn!(msg = "alert provider not found", provider = %format!("{name}.{namespace}"));
            continue;
        };
        let secret = provider
            .spec
            .secret_ref
            .as_ref()
            .and_then(|r| r.name.as_deref())
            .and_then(|s| secret_data(caches, namespace, s));
        match Destination::from_alert_provider(name, namespace, &provider.spec, secret.as_ref()) {
            Ok(destination) => routes.push(AlertRoute {
                severity: alert.severity,
                destination,
            }),
            Err(error) => tracing::warn!(msg = "alert provider unusable", %error),
        }
    }
    Some(routes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn config_refs_cover_volumes_projected_env_and_init_containers() {
        let p = pod(json!({
            "volumes": [
                {"name": "a", "configMap": {"name": "cm-vol"}},
                {"name": "b", "secret": {"secretName": "s-vol", "optional": true}},
                {"name": "c", "projected": {"sources": [
                    {"configMap": {"name": "cm-proj"}}, {"secret": {"name": "s-proj"}}
                ]}}
            ],
            "containers": [{"name": "app",
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "s-envfrom"}}]}],
            "initContainers": [{"name": "init",
                "env": [{"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s-vol", "key": "k"}}}]}]
        }));
        let refs: Vec<(ConfigKind, String, bool)> = config_refs(&p)
            .into_iter()
            .map(|r| (r.kind, r.name, r.optional))
            .collect();
        assert_eq!(
            refs,
            vec![
                (ConfigKind::ConfigMap, "cm-env".into(), false),
                (ConfigKind::ConfigMap, "cm-proj".into(), false),
                (ConfigKind::ConfigMap, "cm-vol".into(), false),
                (ConfigKind::Secret, "s-envfrom".into(), false),
                (ConfigKind::Secret, "s-proj".into(), false),
                // optional in the volume, mandatory in the init container: mandatory.
                (ConfigKind::Secret, "s-vol".into(), false),
            ]
        );
    }

    #[test]
    fn deployment_view_reads_status_conditions_and_hpa() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "podinfo", "namespace": "test", "generation": 3},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2,
                "availableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                     "lastUpdateTime": "2024-01-01T00:00:00Z"},
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
                ]}
        }))
        .unwrap();
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "podinfo"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "podinfo"}, "maxReplicas": 4},
            "status": {"desiredReplicas": 4, "currentReplicas": 2}
        }))
        .unwrap();
        let v = deployment_view(&d, Some(&hpa));
        assert_eq!((v.generation, v.observed_generation, v.replicas), (3, 3, 2));
        assert_eq!((v.updated_replicas, v.available_replicas), (2, 1));
        assert!(v.progress_deadline_exceeded);
        assert_eq!(v.unavailable_since, Some(Timestamp(1_704_067_200_000)));
        assert_eq!(v.autoscaler_desired_replicas, Some(4));
    }
}
