//! Gathering a tick's observations from the reflector caches (no API calls).
//!
//! Contract:
//! - [`observe_target`] reads the target's tracked ConfigMaps/Secrets from the caches and
//!   observes it with [`build::target_observation`]: the revision over its pod template and,
//!   with config tracking on, the checksums of what [`build::tracked_configs`] tracks (the
//!   references [`build::config_refs`] finds, the same the WorkloadActor copies to `-primary`).
//!   A missing mandatory reference is an error; a missing optional one is ignored.
//! - Readiness comes from [`flagger_rollout::readiness::deployment_readiness`], with the desired
//!   replicas of the autoscaler (`autoscalerRef` for the target, its `-primary` for the primary)
//!   so a canary halts while its autoscaler is scaling.
//! - Everything here is synchronous and reads only the stores, so it is cheap enough to run on
//!   every Poke to decide whether the revision changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use flagger_rollout::{
    CanarySpec, HookOutcome, HookResult, HookType, MetricOutcome, MetricSource, MetricValue,
    Observed, Phase, PrimaryObservation, ProviderCheck, TargetObservation, Timestamp,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;

use crate::cache::{Caches, FlaggerKind, lookup};
use crate::key::CanaryKey;
use crate::messages::{CallHook, CheckProviders, RunQueries};
use crate::metrics::{MetricQuery, MetricsServer, ResolvedTemplate};
use crate::notifier::{AlertRoute, Destination};
use crate::ports::Ports;
use crate::secret::SecretString;
use crate::webhook::{HookPayload, hook_outcome};
use crate::workload::{Tracked, WorkloadError, build};

/// The ConfigMaps/Secrets `deployment` tracks, from the caches (none with tracking off).
fn tracked_from_cache(
    caches: &Caches,
    deployment: &Deployment,
    track_configs: bool,
) -> Result<Tracked, WorkloadError> {
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref());
    let (true, Some(pod)) = (track_configs, pod) else {
        return Ok(Tracked::default());
    };
    let namespace = deployment.namespace().unwrap_or_default();
    build::tracked_configs(
        &build::config_refs(pod),
        &namespace,
        &deployment.name_any(),
        |name| lookup(&caches.config_maps, &namespace, name),
        |name| lookup(&caches.secrets, &namespace, name),
    )
}

fn autoscaler(
    caches: &Caches,
    namespace: &str,
    name: Option<&str>,
) -> Option<Arc<HorizontalPodAutoscaler>> {
    lookup(&caches.hpas, namespace, name?)
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
    let hpa = autoscaler(
        caches,
        &spec.namespace,
        spec.autoscaler_ref.as_ref().map(|a| a.name.as_str()),
    );
    match tracked_from_cache(caches, d, track_configs)
        .and_then(|tracked| build::target_observation(spec, d, &tracked, hpa.as_deref(), now))
    {
        Ok(observation) => Observed::Found(observation),
        Err(e) => Observed::Error(e.to_string()),
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
        Some(d) => {
            let hpa = autoscaler(
                caches,
                &spec.namespace,
                spec.primary_autoscaler_name().as_deref(),
            );
            Observed::Found(build::primary_observation(spec, d, hpa.as_deref(), now))
        }
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
    let template = lookup(&caches.metric_templates, namespace, name).ok_or_else(|| match caches
        .decode_errors
        .get(FlaggerKind::MetricTemplate, namespace, name)
    {
        Some(e) => format!("metric template {name}.{namespace} cannot be read: {e}"),
        None => format!("metric template {name}.{namespace} not found"),
    })?;
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

/// The canary's `analysis.alerts` resolved to destinations (`None` when it has none: the global
/// notifier is used), and a problem text for each alert that cannot be delivered (its provider is
/// missing, unreadable or unusable); those alerts are skipped, the others still go out.
pub fn alert_routes(caches: &Caches, spec: &CanarySpec) -> (Option<Vec<AlertRoute>>, Vec<String>) {
    if spec.analysis.alerts.is_empty() {
        return (None, Vec::new());
    }
    let mut routes = Vec::new();
    let mut problems = Vec::new();
    for (i, alert) in spec.analysis.alerts.iter().enumerate() {
        let (name, namespace) = (&alert.provider_name, &alert.provider_namespace);
        let field = format!("spec.analysis.alerts[{i}].providerRef");
        let Some(provider) = lookup(&caches.alert_providers, namespace, name) else {
            let why = match caches
                .decode_errors
                .get(FlaggerKind::AlertProvider, namespace, name)
            {
                Some(e) => format!("cannot be read: {e}"),
                None => "not found".to_owned(),
            };
            problems.push(format!(
                "Alert provider {name}.{namespace} of alert {} ({field}) {why}; alert skipped",
                alert.name
            ));
            continue;
        };
        let secret_name = provider
            .spec
            .secret_ref
            .as_ref()
            .and_then(|r| r.name.as_deref());
        let secret = secret_name.and_then(|s| secret_data(caches, namespace, s));
        if let (Some(secret_name), None) = (secret_name, &secret) {
            problems.push(format!(
                "Alert provider {name}.{namespace} of alert {} ({field}): secret {secret_name}.{namespace} not found; alert skipped",
                alert.name
            ));
            continue;
        }
        match Destination::from_alert_provider(name, namespace, &provider.spec, secret.as_ref()) {
            Ok(destination) => routes.push(AlertRoute {
                severity: alert.severity,
                destination,
            }),
            Err(error) => problems.push(format!(
                "Alert provider {name}.{namespace} of alert {} ({field}) is unusable: {error}; alert skipped",
                alert.name
            )),
        }
    }
    (Some(routes), problems)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::cache::fake::FakeCaches;
    use crate::kubeops::tests_support::input_with;
    use flagger_rollout::{AutoscalerRefInput, CanaryInput, MeshProvider, Readiness, ServiceInput};
    use serde_json::{Value, json};

    fn spec(with_hpa: bool) -> CanarySpec {
        let input = CanaryInput {
            autoscaler_ref: with_hpa.then(|| AutoscalerRefInput {
                kind: Some("HorizontalPodAutoscaler".into()),
                name: Some("podinfo".into()),
                ..Default::default()
            }),
            ..input_with(ServiceInput {
                port: Some(9898),
                ..Default::default()
            })
        };
        CanarySpec::new(&input, MeshProvider::Istio).unwrap()
    }

    fn deployment(name: &str, pod: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "test", "generation": 1},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": pod}},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                       "availableReplicas": 2, "readyReplicas": 2}
        })
    }

    fn podinfo_pod(image: &str) -> Value {
        json!({
            "containers": [{"name": "podinfod", "image": image,
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "podinfo-token", "key": "token"}}}],
                "envFrom": [{"configMapRef": {"name": "untracked"}}, {"secretRef": {"name": "sa-token"}}]}],
            "volumes": [
                {"name": "config", "configMap": {"name": "podinfo-config"}},
                {"name": "extra", "configMap": {"name": "absent", "optional": true}}
            ]
        })
    }

    fn config_map(name: &str, data: Value, annotations: Value) -> Value {
        json!({"kind": "ConfigMap", "metadata": {"name": name, "namespace": "test",
               "annotations": annotations}, "data": data})
    }

    fn cluster() -> FakeCaches {
        let fake = FakeCaches::new();
        fake.apply(config_map(
            "podinfo-config",
            json!({"color": "blue"}),
            json!({}),
        ));
        fake.apply(config_map(
            "untracked",
            json!({"a": "b"}),
            json!({"flagger.app/config-tracking": "disabled"}),
        ));
        fake.apply(
            json!({"kind": "Secret", "metadata": {"name": "podinfo-token", "namespace": "test"},
                          "type": "Opaque", "data": {"token": "czNjcjN0"}}),
        );
        fake.apply(json!({"kind": "Secret", "metadata": {"name": "sa-token", "namespace": "test"},
                          "type": "kubernetes.io/service-account-token", "data": {"token": "eA=="}}));
        fake.apply(deployment("podinfo", podinfo_pod("podinfo:6.0.0")));
        fake
    }

    fn observe(fake: &FakeCaches, spec: &CanarySpec) -> Observed<TargetObservation> {
        let workloads = Workloads::from_cache(&fake.caches, spec);
        observe_target(&fake.caches, spec, &workloads, true, Timestamp(0))
    }

    fn found(o: Observed<TargetObservation>) -> TargetObservation {
        match o {
            Observed::Found(t) => t,
            other => panic!("target not observed: {other:?}"),
        }
    }

    #[test]
    fn the_revision_covers_tracked_configs_only_and_follows_their_data() {
        let fake = cluster();
        let spec = spec(false);
        let first = found(observe(&fake, &spec));
        // Opted-out ConfigMaps, untracked Secret types and absent optional references are not
        // tracked; the same objects the WorkloadActor copies to -primary.
        assert_eq!(
            first.tracked_configs.keys().cloned().collect::<Vec<_>>(),
            ["configmap/podinfo-config", "secret/podinfo-token"]
        );
        assert_eq!(first.readiness, Readiness::Ready);
        assert_eq!(found(observe(&fake, &spec)), first, "stable");

        fake.apply(config_map(
            "untracked",
            json!({"a": "changed"}),
            json!({"flagger.app/config-tracking": "disabled"}),
        ));
        assert_eq!(
            found(observe(&fake, &spec)).revision,
            first.revision,
            "opted out"
        );

        fake.apply(config_map(
            "podinfo-config",
            json!({"color": "green"}),
            json!({}),
        ));
        let changed = found(observe(&fake, &spec));
        assert_ne!(changed.revision, first.revision);
        assert_ne!(
            changed.tracked_configs["configmap/podinfo-config"],
            first.tracked_configs["configmap/podinfo-config"]
        );
        assert_eq!(
            changed.tracked_configs["secret/podinfo-token"],
            first.tracked_configs["secret/podinfo-token"]
        );

        // With tracking off only the template counts.
        let workloads = Workloads::from_cache(&fake.caches, &spec);
        let Observed::Found(untracked) =
            observe_target(&fake.caches, &spec, &workloads, false, Timestamp(0))
        else {
            panic!()
        };
        assert!(untracked.tracked_configs.is_empty());
        fake.apply(config_map(
            "podinfo-config",
            json!({"color": "red"}),
            json!({}),
        ));
        let again = observe_target(&fake.caches, &spec, &workloads, false, Timestamp(0));
        assert_eq!(again, Observed::Found(untracked));
    }

    #[test]
    fn a_missing_mandatory_reference_is_an_error_naming_it() {
        let fake = cluster();
        fake.delete(config_map("podinfo-config", json!({}), json!({})));
        match observe(&fake, &spec(false)) {
            Observed::Error(e) => {
                assert!(e.contains("configmap podinfo-config.test"), "{e}");
                assert!(e.contains("deployment podinfo.test"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_autoscalers_scaling_halts_readiness_of_its_workload() {
        let fake = cluster();
        fake.apply(deployment(
            "podinfo-primary",
            json!({"containers": [{"name": "podinfod"}]}),
        ));
        let hpa = |name: &str, target: &str, desired: i32| {
            json!({"kind": "HorizontalPodAutoscaler",
                   "metadata": {"name": name, "namespace": "test"},
                   "spec": {"scaleTargetRef": {"kind": "Deployment", "name": target}, "maxReplicas": 4},
                   "status": {"desiredReplicas": desired, "currentReplicas": 2}})
        };
        fake.apply(hpa("podinfo", "podinfo", 4));
        fake.apply(hpa("podinfo-primary", "podinfo-primary", 2));
        let with_hpa = spec(true);
        let workloads = Workloads::from_cache(&fake.caches, &with_hpa);
        let target = found(observe(&fake, &with_hpa));
        assert!(
            matches!(target.readiness, Readiness::NotReady(_)),
            "target HPA wants 4 of 2: {:?}",
            target.readiness
        );
        let primary = observe_primary(&fake.caches, &with_hpa, &workloads, Timestamp(0));
        assert_eq!(
            primary,
            Observed::Found(PrimaryObservation {
                readiness: Readiness::Ready,
                revision: None,
            })
        );
        // Without autoscalerRef the HPA is not consulted.
        assert_eq!(
            found(observe(&fake, &spec(false))).readiness,
            Readiness::Ready
        );
    }
}
