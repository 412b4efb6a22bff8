//! What an installation relies on, checked end to end (issue 6, acceptance 2, and the README's
//! metrics): the real `flagger` binary runs a promotion and a rollback against the testbed, then
//! - every API call it made (the testbed's request stats, by User-Agent) is granted by the RBAC
//!   the Helm chart renders — the ClusterRole by default, the Role with `namespace=<ns>` — and the
//!   chart grants nothing this run did not use unless the list below says why;
//! - every `flagger_*` metric the README documents is on its `/metrics`, with the labels the
//!   README names, and the README's alert `flagger_canary_status > 1` fires for the failed canary
//!   only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/harness.rs"]
mod harness;
#[path = "support/helm.rs"]
mod helm;
#[path = "support/readme.rs"]
mod readme;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flagger_testbed::faults::ApiCall;
use harness::{Cluster, Operator, podinfo, serial};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const READY: Duration = Duration::from_millis(300);
/// Where `helm::render` installs the chart (`--namespace istio-system`, as in the seed).
const RELEASE_NAMESPACE: &str = "istio-system";

/// Grants the chart holds although this run may not use them, and why.
const UNUSED_GRANTS_NEEDED: &[(&str, &str, &str, &str)] = &[
    (
        "flagger.app",
        "canaries/status",
        "get",
        "a status patch that conflicts (409) re-reads the status; only some runs conflict",
    ),
    (
        "flagger.app",
        "canaries/finalizers",
        "update",
        "the OwnerReferencesPermissionEnforcement admission plugin requires it to create objects owned by a Canary with blockOwnerDeletion",
    ),
    (
        "networking.istio.io",
        "virtualservices",
        "update",
        "weight steps are merge patches conditioned on the cached resourceVersion; a stale cache (409) falls back to GET + PUT, and reconcile rewrites a drifted VirtualService with PUT; a clean run does neither",
    ),
];

/// The seed's workload with a tracked ConfigMap and Secret, an HPA and an apex Service of its
/// own, a Canary (revertOnDeletion) analysing the builtin metrics from the testbed's mesh; one
/// promotion that also changes the ConfigMap, the Secret and the HPA, then a release answering
/// HTTP 500 that is rolled back. Returns the operator (still running) for its /metrics.
async fn promotion_and_rollback(cluster: &Cluster, ns: &str, extra: &[&str]) -> Operator {
    cluster.namespace(ns).await;
    cluster
        .create::<ConfigMap>(
            ns,
            json!({"metadata": {"name": "podinfo-config"}, "data": {"color": "blue"}}),
        )
        .await;
    cluster
        .create::<Secret>(
            ns,
            json!({"metadata": {"name": "podinfo-token"}, "stringData": {"token": "s3cr3t"}}),
        )
        .await;
    let mut deployment = podinfo(ns, "quay.io/stefanprodan/podinfo:1.4.0");
    let pod = &mut deployment["spec"]["template"]["spec"];
    pod["containers"][0]["envFrom"] = json!([{"configMapRef": {"name": "podinfo-config"}}]);
    pod["containers"][0]["volumeMounts"] = json!([{"name": "token", "mountPath": "/token"}]);
    pod["volumes"] = json!([{"name": "token", "secret": {"secretName": "podinfo-token"}}]);
    cluster.create::<Deployment>(ns, deployment).await;
    cluster
        .create::<HorizontalPodAutoscaler>(
            ns,
            json!({
                "metadata": {"name": "podinfo"},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                    "minReplicas": 1,
                    "maxReplicas": 2
                }
            }),
        )
        .await;
    // A Service the user had before Flagger: taken over, and pointed back at the target when the
    // Canary is deleted.
    cluster
        .create::<Service>(
            ns,
            json!({
                "metadata": {"name": "podinfo"},
                "spec": {"selector": {"app": "podinfo"}, "ports": [{"name": "http", "port": 9898}]}
            }),
        )
        .await;
    let op = Operator::start(cluster, extra).await;
    cluster
        .create_canary(
            ns,
            json!({
                "apiVersion": "flagger.app/v1beta1",
                "kind": "Canary",
                "metadata": {"name": "podinfo", "namespace": ns},
                "spec": {
                    "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                    "autoscalerRef": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"},
                    "progressDeadlineSeconds": 30,
                    "revertOnDeletion": true,
                    "metricsServer": cluster.testbed.metrics_url(),
                    "service": {"port": 9898},
                    "analysis": {
                        "interval": "1s",
                        "threshold": 2,
                        "maxWeight": 50,
                        "stepWeight": 25,
                        "metrics": [
                            {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
                            {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"}
                        ]
                    }
                }
            }),
        )
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(30))
        .await;

    // A new image, ConfigMap, Secret and HPA: promoted, the -primary copies updated.
    cluster
        .set_image(ns, "podinfo", "quay.io/stefanprodan/podinfo:1.4.1")
        .await;
    merge_patch::<ConfigMap>(
        cluster,
        ns,
        "podinfo-config",
        json!({"data": {"color": "green"}}),
    )
    .await;
    merge_patch::<Secret>(
        cluster,
        ns,
        "podinfo-token",
        json!({"stringData": {"token": "n3w"}}),
    )
    .await;
    merge_patch::<HorizontalPodAutoscaler>(
        cluster,
        ns,
        "podinfo",
        json!({"spec": {"maxReplicas": 3}}),
    )
    .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Progressing", Duration::from_secs(20))
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Succeeded", Duration::from_secs(40))
        .await;
    let copy = cluster
        .config_map(ns, "podinfo-config-primary")
        .await
        .unwrap();
    assert_eq!(copy.data.unwrap()["color"], "green");
    let copy: Secret = Api::namespaced(cluster.client.clone(), ns)
        .get("podinfo-token-primary")
        .await
        .unwrap();
    assert_eq!(copy.data.unwrap()["token"].0, b"n3w");
    harness::wait_for(
        "podinfo-primary HPA follows the target's",
        Duration::from_secs(20),
        || async {
            let hpa: HorizontalPodAutoscaler = Api::namespaced(cluster.client.clone(), ns)
                .get("podinfo-primary")
                .await
                .ok()?;
            (hpa.spec?.max_replicas == 3).then_some(())
        },
    )
    .await;

    // Every request of the next image fails: halted, then rolled back.
    cluster
        .merge_patch_deployment(
            ns,
            "podinfo",
            json!({"spec": {"template": {"metadata": {"annotations": {"testbed.flagger.app/error-rate": "1"}}}}}),
        )
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Progressing", Duration::from_secs(20))
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Failed", Duration::from_secs(40))
        .await;
    let events = cluster.events(ns, "podinfo").await;
    assert!(
        events
            .iter()
            .any(|(_, m)| m.contains("failed checks threshold reached")),
        "rolled back for another reason: {events:?}"
    );
    op
}

async fn merge_patch<K>(cluster: &Cluster, ns: &str, name: &str, patch: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(cluster.client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// After the releases: the Canary's service settings change (the generated Services and
/// DestinationRules are updated), then the Canary is deleted and, with revertOnDeletion, the
/// target and the apex Service are given back.
async fn reconfigure_and_delete(cluster: &Cluster, op: &Operator, ns: &str) {
    let canaries = harness::canary_api(&cluster.client, ns);
    canaries
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"service": {
                "port": 9899,
                "targetPort": 9898,
                "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}
            }}})),
        )
        .await
        .unwrap();
    harness::wait_for(
        "the generated Services and DestinationRules updated",
        Duration::from_secs(20),
        || async {
            let port = cluster.service(ns, "podinfo-canary").await?.spec?.ports?[0].port;
            let dr = cluster
                .istio(ns, "DestinationRule", "destinationrules", "podinfo-canary")
                .await?;
            (port == 9899 && dr.data["spec"]["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL")
                .then_some(())
        },
    )
    .await;
    canaries
        .delete("podinfo", &Default::default())
        .await
        .unwrap();
    harness::wait_for(
        "the Canary finalized and gone",
        Duration::from_secs(20),
        || async { cluster.canary(ns, "podinfo").await.is_none().then_some(()) },
    )
    .await;
    let apex = cluster.service(ns, "podinfo").await.unwrap();
    assert_eq!(
        apex.spec.unwrap().selector.unwrap()["app"],
        "podinfo",
        "the apex Service points back at the target\n{}",
        op.tail(20)
    );
    let target = cluster.deployment(ns, "podinfo").await.unwrap();
    assert!(
        target.spec.unwrap().replicas.unwrap_or(1) > 0,
        "the target is scaled back up"
    );
}

/// The operator's User-Agent: `flagger-rs/<version> (<identity>)`.
const OPERATOR_AGENT: &str = concat!("flagger-rs/", env!("CARGO_PKG_VERSION"), " ");

/// The operator's calls (its User-Agent), without the User-Agent.
fn operator_calls(cluster: &Cluster) -> BTreeSet<ApiCall> {
    let calls: BTreeSet<ApiCall> = cluster
        .testbed
        .stats()
        .snapshot()
        .calls
        .into_iter()
        .filter(|c| c.call.user_agent.starts_with(OPERATOR_AGENT))
        .map(|c| ApiCall {
            user_agent: String::new(),
            ..c.call
        })
        .collect();
    assert!(
        calls.len() > 10,
        "too few operator calls recorded (User-Agent {OPERATOR_AGENT}...?): {calls:?}"
    );
    calls
}

/// `resource` or `resource/subresource`, as RBAC rules name it.
fn rbac_resource(call: &ApiCall) -> String {
    if call.subresource.is_empty() {
        call.resource.clone()
    } else {
        format!("{}/{}", call.resource, call.subresource)
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Checks the calls against the rules of the Role or ClusterRole `kind` that `helm template`
/// renders with `args`: no wildcards, every call granted, every grant used or explained.
/// `leases`: the leader election rules only, else every other rule.
fn assert_rules_cover(kind: &str, args: &[&str], calls: &BTreeSet<ApiCall>, leases: bool) {
    let rules: Vec<Value> = helm::rbac_rules(&helm::render("flagger", args))
        .into_iter()
        .filter(|(k, rule)| k == kind && strings(&rule["resources"]).contains(&"leases") == leases)
        .map(|(_, rule)| rule)
        .collect();
    assert!(!rules.is_empty(), "no {kind} rendered with {args:?}");
    let mut granted: BTreeSet<(String, String, String)> = BTreeSet::new();
    for rule in &rules {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(
                !strings(&rule[field]).contains(&"*"),
                "wildcard in {field}: {rule}"
            );
        }
        // A rule limited to resourceNames cannot grant list, watch or create; none is expected.
        assert!(rule.get("resourceNames").is_none(), "{rule}");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    granted.insert((group.to_owned(), resource.to_owned(), verb.to_owned()));
                }
            }
        }
    }
    let used: BTreeSet<(String, String, String)> = calls
        .iter()
        .map(|c| (c.group.clone(), rbac_resource(c), c.verb.clone()))
        .collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "the chart's {kind} ({args:?}) does not grant (group, resource, verb) the operator used: {missing:?}"
    );
    let explained: BTreeSet<(String, String, String)> = UNUSED_GRANTS_NEEDED
        .iter()
        .map(|(g, r, v, _)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    let unused: Vec<_> = granted
        .difference(&used)
        .filter(|g| !explained.contains(*g))
        .collect();
    assert!(
        unused.is_empty(),
        "the chart's {kind} grants (group, resource, verb) that a promotion and a rollback never used; remove them or say in UNUSED_GRANTS_NEEDED why they are needed: {unused:?}"
    );
}

/// Samples of a Prometheus text exposition: (family, labels, value).
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').unwrap();
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            (name, labels, value.parse().unwrap())
        })
        .collect()
}

fn family_of<'a>(sample: &'a str, families: &BTreeSet<&str>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix)
            && families.contains(base)
        {
            return base;
        }
    }
    sample
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_role_grants_every_call_and_the_readme_metrics_are_exported() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    let ns = "e2e-install";
    // As the chart runs it with leaderElection.enabled: the Lease in the release namespace.
    cluster.namespace(RELEASE_NAMESPACE).await;
    let op = promotion_and_rollback(
        &cluster,
        ns,
        &[
            "--enable-leader-election",
            "--leader-election-namespace",
            RELEASE_NAMESPACE,
        ],
    )
    .await;

    // The README's metrics, scraped from the operator.
    let text = reqwest::get(format!("http://{}/metrics", op.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let types: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let samples = samples(&text);
    let metrics = readme::section(&readme::readme(), "Metrics");
    let documented = readme::metric_references(&metrics, "flagger_");
    assert!(documented.len() >= 8, "{documented:?}");
    for (name, labels) in &documented {
        let series: Vec<&BTreeMap<String, String>> = samples
            .iter()
            .filter(|(s, _, _)| family_of(s, &types) == name)
            .map(|(_, l, _)| l)
            .collect();
        assert!(
            !series.is_empty(),
            "README documents {name}, /metrics has no such series:\n{text}"
        );
        if let Some(labels) = labels {
            let expected: BTreeSet<&str> = labels.iter().map(String::as_str).collect();
            for l in &series {
                let got: BTreeSet<&str> = l
                    .keys()
                    .map(String::as_str)
                    .filter(|k| *k != "le")
                    .collect();
                assert_eq!(got, expected, "labels of {name} on /metrics");
            }
        }
    }
    // The README's alert rule: `flagger_canary_status > 1` holds for the failed canary.
    let status = samples
        .iter()
        .find(|(s, l, _)| {
            s == "flagger_canary_status" && l.get("namespace").map(String::as_str) == Some(ns)
        })
        .map(|(_, _, v)| *v);
    assert_eq!(
        status,
        Some(2.0),
        "flagger_canary_status after the rollback"
    );

    reconfigure_and_delete(&cluster, &op, ns).await;
    let (leases, others): (BTreeSet<ApiCall>, BTreeSet<ApiCall>) = operator_calls(&cluster)
        .into_iter()
        .partition(|c| c.resource == "leases");
    assert!(!leases.is_empty(), "no Lease calls with leader election");
    assert!(
        leases.iter().all(|c| c.namespace == RELEASE_NAMESPACE),
        "{leases:?}"
    );
    let leader = ["--set", "leaderElection.enabled=true"];
    assert_rules_cover("ClusterRole", &leader, &others, false);
    assert_rules_cover("Role", &leader, &leases, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespaced_role_grants_every_call_of_an_operator_watching_one_namespace() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    let ns = "e2e-install-ns";
    let op = promotion_and_rollback(&cluster, ns, &["--namespace", ns]).await;
    reconfigure_and_delete(&cluster, &op, ns).await;

    let calls = operator_calls(&cluster);
    let elsewhere: Vec<&ApiCall> = calls.iter().filter(|c| c.namespace != ns).collect();
    assert!(
        elsewhere.is_empty(),
        "an operator watching {ns} made calls outside it (a Role cannot grant them): {elsewhere:?}"
    );
    assert_rules_cover(
        "Role",
        &["--set", &format!("namespace={ns}")],
        &calls,
        false,
    );
}
