//! The workload controllers running against the real in-memory store: Deployments become ready
//! after the ready delay, roll out through new ReplicaSets, miss their progress deadline when
//! their Pods never get ready, scale to zero, and HPAs keep replicas within bounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagger_testbed::store::{ResourceId, Store};
use flagger_testbed::workloads::{WorkloadConfig, run};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "test";

fn deployments() -> ResourceId {
    ResourceId::new("apps", "deployments")
}
fn replica_sets() -> ResourceId {
    ResourceId::new("apps", "replicasets")
}
fn pods() -> ResourceId {
    ResourceId::new("", "pods")
}
fn hpas() -> ResourceId {
    ResourceId::new("autoscaling", "horizontalpodautoscalers")
}

/// A store with namespace `test` and the controllers running with `ready_delay`.
struct Cluster {
    store: Store,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Cluster {
    fn start(ready_delay: Duration) -> Self {
        let store = Store::default();
        store
            .create(
                &ResourceId::new("", "namespaces"),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
            )
            .unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            store.clone(),
            WorkloadConfig { ready_delay },
            stop.clone(),
        ));
        Self { store, stop, task }
    }

    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the controllers stop when cancelled")
            .unwrap();
    }

    fn deployment(&self, name: &str) -> Arc<Value> {
        self.store.get(&deployments(), NS, name).unwrap()
    }

    fn pods(&self) -> Vec<Arc<Value>> {
        self.store.list(&pods(), Some(NS))
    }

    fn edit(&self, name: &str, f: impl FnOnce(&mut Value)) {
        self.store
            .modify(&deployments(), NS, name, false, f)
            .unwrap();
    }

    /// Polls until `check` holds for the Deployment, returning it; fails after `within`.
    async fn wait_for(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Arc<Value> {
        let deadline = Instant::now() + within;
        loop {
            let dep = self.deployment(name);
            if check(&dep) {
                return dep;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; deployment: {dep:#}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn podinfo(name: &str, replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "podinfod", "image": image}]},
            },
        },
    })
}

fn count(dep: &Value, field: &str) -> i64 {
    dep["status"][field].as_i64().unwrap_or(0)
}

fn condition<'a>(dep: &'a Value, kind: &str) -> Option<(&'a str, &'a str)> {
    dep["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default(),
                c["reason"].as_str().unwrap_or_default(),
            )
        })
}

fn rolled_out(dep: &Value) -> bool {
    let want = dep["spec"]["replicas"].as_i64().unwrap_or(1);
    dep["status"]["observedGeneration"] == dep["metadata"]["generation"]
        && count(dep, "updatedReplicas") == want
        && count(dep, "replicas") == want
        && count(dep, "availableReplicas") == want
        && condition(dep, "Progressing") == Some(("True", "NewReplicaSetAvailable"))
}

fn is_ready_pod(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_becomes_ready_after_the_ready_delay() {
    let c = Cluster::start(Duration::from_millis(700));
    let started = Instant::now();
    c.store
        .create(&deployments(), podinfo("podinfo", 2, "podinfo:6.0.0"))
        .unwrap();

    // Observed quickly, with Pods created but not ready.
    let dep = c
        .wait_for(
            "podinfo",
            Duration::from_secs(2),
            "the rollout to start",
            |d| count(d, "updatedReplicas") == 2,
        )
        .await;
    assert!(started.elapsed() < Duration::from_millis(700));
    assert_eq!(dep["status"]["observedGeneration"], 1);
    assert_eq!(count(&dep, "availableReplicas"), 0);
    assert_eq!(
        condition(&dep, "Available"),
        Some(("False", "MinimumReplicasUnavailable"))
    );
    let pending = c.pods();
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().all(|p| p["status"]["phase"] == "Pending"));

    let dep = c
        .wait_for(
            "podinfo",
            Duration::from_secs(5),
            "the rollout to finish",
            rolled_out,
        )
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "ready before the delay: {:?}",
        started.elapsed()
    );
    assert_eq!(count(&dep, "readyReplicas"), 2);
    assert!(dep["status"].get("unavailableReplicas").is_none());
    assert_eq!(
        condition(&dep, "Available"),
        Some(("True", "MinimumReplicasAvailable"))
    );

    // The ReplicaSet and Pods a user would see with kubectl.
    let sets = c.store.list(&replica_sets(), Some(NS));
    assert_eq!(sets.len(), 1);
    let rs = &sets[0];
    let rs_name = rs["metadata"]["name"].as_str().unwrap();
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(rs_name, format!("podinfo-{hash}"));
    assert_eq!(
        rs["metadata"]["ownerReferences"][0]["uid"],
        dep["metadata"]["uid"]
    );
    assert_eq!(rs["status"]["readyReplicas"], 2);
    let message = format!("ReplicaSet \"{rs_name}\" has successfully progressed.");
    assert!(
        dep["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["message"] == message.as_str())
    );
    let pods = c.pods();
    assert_eq!(pods.len(), 2);
    let mut ips = vec![];
    for p in &pods {
        assert!(
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{rs_name}-"))
        );
        assert_eq!(p["metadata"]["labels"]["app"], "podinfo");
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash);
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["uid"],
            rs["metadata"]["uid"]
        );
        assert_eq!(p["status"]["phase"], "Running");
        assert!(is_ready_pod(p));
        let ip = p["status"]["podIP"].as_str().unwrap();
        assert!(ip.starts_with("127."), "{ip}");
        ips.push(ip.to_owned());
    }
    ips.dedup();
    assert_eq!(ips.len(), 2, "pods have distinct addresses");

    // Settled: the controllers stop writing.
    let rv = c.store.current_rv();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.store.current_rv(), rv, "no writes once settled");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_rolls_out_through_a_new_replica_set() {
    let c = Cluster::start(Duration::from_millis(400));
    c.store
        .create(&deployments(), podinfo("podinfo", 2, "podinfo:6.0.0"))
        .unwrap();
    c.wait_for(
        "podinfo",
        Duration::from_secs(5),
        "the first rollout",
        rolled_out,
    )
    .await;
    let mut events = c.store.subscribe();

    c.edit("podinfo", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("podinfo:6.0.1");
    });
    let dep = c
        .wait_for(
            "podinfo",
            Duration::from_secs(2),
            "the rollout to start",
            |d| d["status"]["observedGeneration"] == 2,
        )
        .await;
    // What Flagger's "rolling update underway" check reads: generation observed, not all
    // replicas updated or old ones still there, Progressing=True ReplicaSetUpdated.
    assert!(!rolled_out(&dep), "{dep:#}");
    assert!(
        count(&dep, "updatedReplicas") < 2
            || count(&dep, "replicas") > count(&dep, "updatedReplicas")
    );
    assert_eq!(
        condition(&dep, "Progressing"),
        Some(("True", "ReplicaSetUpdated"))
    );

    let dep = c
        .wait_for(
            "podinfo",
            Duration::from_secs(5),
            "the second rollout",
            rolled_out,
        )
        .await;
    assert_eq!(
        dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let sets = c.store.list(&replica_sets(), Some(NS));
    assert_eq!(sets.len(), 2);
    let (new, old): (Vec<_>, Vec<_>) = sets.iter().partition(|rs| {
        rs["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:6.0.1"
    });
    assert_eq!(new[0]["spec"]["replicas"], 2);
    assert_eq!(old[0]["spec"]["replicas"], 0);
    let pods = c.pods();
    assert_eq!(pods.len(), 2);
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "podinfo:6.0.1")
    );

    // The rollout never went below the available minimum (maxUnavailable 25% of 2 = 0).
    while let Ok(ev) = events.try_recv() {
        if ev.resource == deployments() && ev.object["status"]["observedGeneration"] == 2 {
            assert!(
                count(&ev.object, "availableReplicas") >= 2,
                "{:#}",
                ev.object
            );
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_pods_exceed_the_progress_deadline() {
    let c = Cluster::start(Duration::from_millis(200));
    let mut dep = podinfo("broken", 1, "podinfo:broken");
    dep["spec"]["progressDeadlineSeconds"] = json!(2);
    dep["spec"]["template"]["metadata"]["annotations"] =
        json!({"testbed.flagger.app/never-ready": "true"});
    let started = Instant::now();
    c.store.create(&deployments(), dep).unwrap();

    tokio::time::sleep(Duration::from_millis(800)).await;
    let dep = c.deployment("broken");
    assert_eq!(count(&dep, "availableReplicas"), 0);
    assert_eq!(count(&dep, "unavailableReplicas"), 1);
    assert_eq!(
        condition(&dep, "Progressing"),
        Some(("True", "ReplicaSetUpdated"))
    );
    let pods = c.pods();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["status"]["phase"], "Running");
    assert!(!is_ready_pod(&pods[0]));

    let dep = c
        .wait_for(
            "broken",
            Duration::from_secs(4),
            "the progress deadline",
            |d| condition(d, "Progressing") == Some(("False", "ProgressDeadlineExceeded")),
        )
        .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "deadline hit early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "deadline hit late: {elapsed:?}"
    );
    assert_eq!(
        condition(&dep, "Available"),
        Some(("False", "MinimumReplicasUnavailable"))
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_to_zero_removes_the_pods() {
    let c = Cluster::start(Duration::from_millis(100));
    c.store
        .create(&deployments(), podinfo("podinfo", 3, "podinfo:6.0.0"))
        .unwrap();
    c.wait_for("podinfo", Duration::from_secs(5), "the rollout", rolled_out)
        .await;
    assert_eq!(c.pods().len(), 3);

    c.edit("podinfo", |d| d["spec"]["replicas"] = json!(0));
    let dep = c
        .wait_for("podinfo", Duration::from_secs(5), "the scale-down", |d| {
            d["status"]["observedGeneration"] == d["metadata"]["generation"]
                && d["status"].get("replicas").is_none()
        })
        .await;
    assert!(c.pods().is_empty());
    for field in ["updatedReplicas", "readyReplicas", "availableReplicas"] {
        assert_eq!(count(&dep, field), 0, "{field}");
    }
    let rs = &c.store.list(&replica_sets(), Some(NS))[0];
    assert_eq!(rs["spec"]["replicas"], 0);

    // Scaling up again brings new Pods that become ready.
    c.edit("podinfo", |d| d["spec"]["replicas"] = json!(1));
    c.wait_for(
        "podinfo",
        Duration::from_secs(5),
        "the scale-up",
        rolled_out,
    )
    .await;
    assert_eq!(c.pods().len(), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_keeps_replicas_within_bounds_and_leaves_zero_alone() {
    let c = Cluster::start(Duration::from_millis(100));
    c.store
        .create(&deployments(), podinfo("podinfo", 1, "podinfo:6.0.0"))
        .unwrap();
    c.store
        .create(
            &hpas(),
            json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "podinfo", "namespace": NS},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                    "minReplicas": 2, "maxReplicas": 4,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                 "target": {"type": "Utilization", "averageUtilization": 99}}}],
                },
            }),
        )
        .unwrap();

    // Below min: scaled up to 2, and the Pods follow.
    c.wait_for(
        "podinfo",
        Duration::from_secs(5),
        "the HPA to scale up",
        |d| d["spec"]["replicas"] == 2 && rolled_out(d),
    )
    .await;
    assert_eq!(c.pods().len(), 2);
    let hpa = c.store.get(&hpas(), NS, "podinfo").unwrap();
    assert_eq!(hpa["status"]["desiredReplicas"], 2);
    assert!(hpa["status"]["lastScaleTime"].is_string());

    // Above max: scaled down to 4.
    c.edit("podinfo", |d| d["spec"]["replicas"] = json!(7));
    c.wait_for(
        "podinfo",
        Duration::from_secs(5),
        "the HPA to scale down",
        |d| d["spec"]["replicas"] == 4 && rolled_out(d),
    )
    .await;
    assert_eq!(c.pods().len(), 4);

    // Zero (Flagger scaling a canary down) is left alone.
    c.edit("podinfo", |d| d["spec"]["replicas"] = json!(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let hpa = c.store.get(&hpas(), NS, "podinfo").unwrap();
        let disabled = hpa["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "ScalingActive" && c["reason"] == "ScalingDisabled")
        });
        if disabled {
            assert_eq!(hpa["status"]["desiredReplicas"], 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HPA never reported ScalingDisabled: {hpa:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.deployment("podinfo")["spec"]["replicas"], 0);
    assert!(c.pods().is_empty());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_namespace_is_left_alone() {
    let c = Cluster::start(Duration::from_millis(100));
    let mut dep = podinfo("held", 2, "podinfo:6.0.0");
    dep["metadata"]["finalizers"] = json!(["test.flagger.app/hold"]);
    c.store.create(&deployments(), dep).unwrap();
    c.wait_for("held", Duration::from_secs(5), "the rollout", rolled_out)
        .await;
    assert_eq!(c.pods().len(), 2);

    c.store
        .delete(&ResourceId::new("", "namespaces"), "", NS)
        .unwrap();
    // The store removes the Pods and ReplicaSets; the held Deployment stays, being deleted.
    let dep = c.deployment("held");
    assert!(dep["metadata"]["deletionTimestamp"].is_string());
    let rv = c.store.current_rv();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.store.current_rv(),
        rv,
        "nothing is written in a terminating namespace"
    );
    assert!(c.pods().is_empty());
    assert!(c.store.list(&replica_sets(), Some(NS)).is_empty());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_deployments_become_ready_together() {
    let c = Cluster::start(Duration::from_millis(500));
    let started = Instant::now();
    for i in 0..1000 {
        c.store
            .create(
                &deployments(),
                podinfo(&format!("app-{i}"), 1, "podinfo:6.0.0"),
            )
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = c
            .store
            .list(&deployments(), Some(NS))
            .iter()
            .filter(|d| rolled_out(d))
            .count();
        if ready == 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "only {ready} of 1000 ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("1000 deployments ready after {:?}", started.elapsed());
    assert_eq!(c.pods().len(), 1000);
    let rv = c.store.current_rv();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.store.current_rv(), rv, "no writes once settled");
    c.shutdown().await;
}

/// Through the whole testbed and the kube client, as the operator sees it.
mod through_the_api {
    use super::*;
    use flagger_testbed::{Config, Testbed};
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

    async fn wait_deployment(
        api: &Api<Deployment>,
        name: &str,
        what: &str,
        check: impl Fn(&Deployment) -> bool,
    ) -> Deployment {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let d = api.get(name).await.unwrap();
            if check(&d) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {d:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn complete(d: &Deployment) -> bool {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let Some(s) = &d.status else { return false };
        s.observed_generation == d.metadata.generation
            && s.updated_replicas.unwrap_or(0) == want
            && s.replicas.unwrap_or(0) == want
            && s.available_replicas.unwrap_or(0) == want
            && s.conditions.iter().flatten().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
            })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deployments_and_hpas_behave_for_a_kube_client() {
        let tb = Testbed::start(Config {
            ready_delay: Duration::from_millis(300),
            rps: 0,
            ..Config::default()
        })
        .await
        .unwrap();
        let client = tb.client().unwrap();
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
            )
            .await
            .unwrap();
        let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        deps.create(
            &PostParams::default(),
            &serde_json::from_value(podinfo("podinfo", 1, "podinfo:6.0.0")).unwrap(),
        )
        .await
        .unwrap();
        wait_deployment(&deps, "podinfo", "the first rollout", complete).await;

        // The Service selector a mesh would use finds ready Pods with addresses.
        let ready = pods
            .list(&ListParams::default().labels("app=podinfo"))
            .await
            .unwrap();
        assert_eq!(ready.items.len(), 1);
        let status = ready.items[0].status.clone().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(status.pod_ip.unwrap().starts_with("127."));

        // An HPA created through the API scales the Deployment up to its minimum.
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), NS);
        hpas.create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "podinfo"},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                    "minReplicas": 2, "maxReplicas": 4,
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
        wait_deployment(&deps, "podinfo", "the HPA minimum", |d| {
            d.spec.as_ref().and_then(|s| s.replicas) == Some(2) && complete(d)
        })
        .await;
        let hpa = hpas.get("podinfo").await.unwrap();
        assert_eq!(hpa.status.unwrap().desired_replicas, 2);

        // `kubectl set image` style patch: the rollout shows as underway, then completes.
        deps.patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "podinfod", "image": "podinfo:6.0.1"}]}}}})),
        )
        .await
        .unwrap();
        let underway = deps.get("podinfo").await.unwrap();
        let generation = underway.metadata.generation;
        let underway = wait_deployment(&deps, "podinfo", "the rollout to be observed", |d| {
            d.status.as_ref().and_then(|s| s.observed_generation) == generation
        })
        .await;
        assert!(!complete(&underway), "{underway:?}");
        wait_deployment(&deps, "podinfo", "the second rollout", complete).await;
        let images: Vec<String> = pods
            .list(&ListParams::default().labels("app=podinfo"))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.spec.unwrap().containers[0].image.clone().unwrap())
            .collect();
        assert_eq!(images, vec!["podinfo:6.0.1".to_string(); 2]);

        // Flagger's scale-to-zero of a canary: a merge patch; the HPA leaves it at zero.
        deps.patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
        wait_deployment(&deps, "podinfo", "the scale to zero", |d| {
            d.status.as_ref().is_some_and(|s| {
                s.observed_generation == d.metadata.generation && s.replicas.unwrap_or(0) == 0
            })
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let dep = deps.get("podinfo").await.unwrap();
        assert_eq!(dep.spec.unwrap().replicas, Some(0));
        assert!(
            pods.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        tb.shutdown().await;
    }
}
