//! Shared harness of the end-to-end tests: an in-process testbed, the real `flagger` binary as a
//! child process, manifests applied with kube-rs, waits with timeouts that dump the canary's
//! status and events when they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flagger_testbed::{Config, Testbed};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

/// Reliability invariants checked on every change of every e2e test (docs/RELIABILITY.md).
#[path = "invariants.rs"]
pub mod invariants;

/// End-to-end tests run one at a time: they share two cores with everything else, and timing
/// assertions (detection latency) must not measure the neighbours.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

pub struct Cluster {
    pub testbed: Testbed,
    pub client: Client,
    pub kubeconfig: tempfile::NamedTempFile,
    /// Checks the reliability invariants on every change; fails the test on drop if one broke.
    pub invariants: invariants::Invariants,
}

impl Cluster {
    /// A testbed whose Deployments become ready `ready_delay` after a change, with Flagger's CRDs.
    pub async fn start(ready_delay: Duration) -> Cluster {
        Self::start_with(Config {
            ready_delay,
            ..Config::default()
        })
        .await
    }

    /// A testbed with `config` (e.g. more simulated traffic), with Flagger's CRDs.
    pub async fn start_with(config: Config) -> Cluster {
        let testbed = Testbed::start(config).await.expect("testbed starts");
        let invariants = invariants::Invariants::start(testbed.store());
        let client = testbed.client().expect("client");
        let kubeconfig = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(kubeconfig.path(), testbed.kubeconfig_yaml()).unwrap();
        let cluster = Cluster {
            testbed,
            client,
            kubeconfig,
            invariants,
        };
        cluster.install_crds().await;
        cluster
    }

    async fn install_crds(&self) {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for file in ["canary.yaml", "metrictemplate.yaml", "alertprovider.yaml"] {
            let path = format!("{}/charts/flagger/crds/{file}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
            api.create(&PostParams::default(), &crd).await.unwrap();
        }
        // Served once the testbed's CRD controller registered them.
        let canaries = canary_api(&self.client, "default");
        wait_for("Canary CRD served", Duration::from_secs(10), || async {
            canaries.list(&Default::default()).await.ok().map(|_| ())
        })
        .await;
    }

    pub async fn namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &ns).await.unwrap();
    }

    pub async fn create<K>(&self, ns: &str, obj: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let obj: K = serde_json::from_value(obj).unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap()
    }

    pub async fn create_canary(&self, ns: &str, canary: Value) {
        canary_api(&self.client, ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(canary).unwrap(),
            )
            .await
            .unwrap();
    }

    /// Creates any `flagger.app/v1beta1` object (`kind` from `obj`, `plural` its resource) as it
    /// is, without going through the operator's Rust types (for manifests those would refuse).
    pub async fn create_flagger(&self, ns: &str, plural: &str, obj: Value) {
        let kind = obj["kind"].as_str().unwrap().to_owned();
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("flagger.app", "v1beta1", &kind),
            plural,
        );
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(obj).unwrap(),
        )
        .await
        .unwrap();
    }

    pub async fn deployment(&self, ns: &str, name: &str) -> Option<Deployment> {
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .unwrap()
    }

    /// The first container's image of Deployment `name`.
    pub async fn image(&self, ns: &str, name: &str) -> String {
        let d = self.deployment(ns, name).await.unwrap();
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    }

    /// `spec.replicas` of Deployment `name`.
    pub async fn replicas(&self, ns: &str, name: &str) -> Option<i32> {
        self.deployment(ns, name)
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas
    }

    pub async fn service(&self, ns: &str, name: &str) -> Option<Service> {
        Api::<Service>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .unwrap()
    }

    pub async fn config_map(&self, ns: &str, name: &str) -> Option<ConfigMap> {
        Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .unwrap()
    }

    pub async fn istio(
        &self,
        ns: &str,
        kind: &str,
        plural: &str,
        name: &str,
    ) -> Option<DynamicObject> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.istio.io", "v1beta1", kind),
            plural,
        );
        Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &ar)
            .get_opt(name)
            .await
            .unwrap()
    }

    /// (primary, canary) weights of the VirtualService `name`.
    pub async fn vs_weights(&self, ns: &str, name: &str) -> Option<(i64, i64)> {
        let vs = self
            .istio(ns, "VirtualService", "virtualservices", name)
            .await?;
        let route = vs.data["spec"]["http"][0]["route"].as_array()?.clone();
        let weight_of = |suffix: &str| {
            route
                .iter()
                .find(|r| r["destination"]["host"] == format!("{name}-{suffix}"))
                .and_then(|r| r["weight"].as_i64())
                .unwrap_or(0)
        };
        Some((weight_of("primary"), weight_of("canary")))
    }

    pub async fn canary(&self, ns: &str, name: &str) -> Option<Value> {
        canary_api(&self.client, ns)
            .get_opt(name)
            .await
            .unwrap()
            .map(|c| serde_json::to_value(c).unwrap())
    }

    pub async fn phase(&self, ns: &str, name: &str) -> Option<String> {
        self.canary(ns, name)
            .await
            .and_then(|c| c["status"]["phase"].as_str().map(str::to_owned))
    }

    /// Messages of the Events regarding Canary `name`, oldest first.
    pub async fn events(&self, ns: &str, name: &str) -> Vec<(String, String)> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let mut events: Vec<Event> = api
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .collect();
        events.sort_by_key(|e| e.first_timestamp.as_ref().map(|t| t.0));
        events
            .into_iter()
            .map(|e| (e.type_.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }

    pub async fn merge_patch_deployment(&self, ns: &str, name: &str, patch: Value) {
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// `kubectl set image deployment/<name> podinfod=<image>`.
    pub async fn set_image(&self, ns: &str, name: &str, image: &str) {
        let d = self.deployment(ns, name).await.unwrap();
        let mut containers =
            serde_json::to_value(&d.spec.unwrap().template.spec.unwrap().containers).unwrap();
        containers[0]["image"] = json!(image);
        self.merge_patch_deployment(
            ns,
            name,
            json!({"spec": {"template": {"spec": {"containers": containers}}}}),
        )
        .await;
    }

    /// Dumps what a failing wait needs to be understood.
    pub async fn describe(&self, ns: &str, name: &str) -> String {
        let status = self
            .canary(ns, name)
            .await
            .map(|c| serde_json::to_string_pretty(&c["status"]).unwrap())
            .unwrap_or_else(|| "<canary missing>".into());
        let events = self
            .events(ns, name)
            .await
            .into_iter()
            .map(|(t, m)| format!("  {t:7} {m}"))
            .collect::<Vec<_>>()
            .join("\n");
        format!("status: {status}\nevents:\n{events}")
    }

    /// Waits until the canary's phase is `phase`; dumps status, events and logs on timeout.
    pub async fn wait_phase(
        &self,
        op: &Operator,
        ns: &str,
        name: &str,
        phase: &str,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.phase(ns, name).await.as_deref() == Some(phase) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "canary {name}.{ns} did not reach {phase} within {timeout:?}\n{}\nlast operator logs:\n{}",
                    self.describe(ns, name).await,
                    op.tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Asserts `expected` appear in `actual` in this order (other lines may come between).
pub fn assert_in_order<S: AsRef<str> + std::fmt::Debug>(actual: &[String], expected: &[S]) {
    let mut it = actual.iter();
    for e in expected {
        assert!(
            it.any(|a| a == e.as_ref()),
            "missing or out of order: {e:?}\nexpected order: {expected:#?}\nactual: {actual:#?}"
        );
    }
}

pub fn canary_api(client: &Client, ns: &str) -> Api<flagger_actors::crd::Canary> {
    Api::namespaced(client.clone(), ns)
}

/// Polls `check` every 100 ms until it returns `Some`, or panics naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One log line of the operator with the time the harness read it.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub at: Instant,
    pub json: Value,
}

/// The `flagger` binary running against a cluster. Killed (SIGKILL) on drop.
pub struct Operator {
    child: Child,
    pub logs: Arc<Mutex<Vec<LogLine>>>,
    pub admin: SocketAddr,
}

impl Operator {
    /// `extra` flags are appended; without a `--metrics-server` among them the operator gets an
    /// address where nothing listens (lifecycle tests use canaries without metrics).
    pub async fn start(cluster: &Cluster, extra: &[&str]) -> Operator {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flagger"));
        command
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig.path())
            .args(["--port", "0", "--listen-address", "127.0.0.1"]);
        if !extra.contains(&"--metrics-server") {
            command.args(["--metrics-server", "http://127.0.0.1:9"]);
        }
        let mut child = command
            .args(["--log-level", "debug"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("flagger binary starts");
        let stdout = child.stdout.take().unwrap();
        let logs: Arc<Mutex<Vec<LogLine>>> = Arc::default();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let json = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().unwrap().push(LogLine {
                    at: Instant::now(),
                    json,
                });
            }
        });
        let mut op = Operator {
            child,
            logs,
            admin: "127.0.0.1:0".parse().unwrap(),
        };
        let logs = op.logs.clone();
        op.admin = wait_for(
            "the operator's HTTP server address",
            Duration::from_secs(20),
            || {
                let logs = logs.clone();
                async move {
                    logs.lock()
                        .unwrap()
                        .iter()
                        .find_map(|l| l.json["address"].as_str().and_then(|a| a.parse().ok()))
                }
            },
        )
        .await;
        op
    }

    /// SIGKILL, as a crashing node would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as Kubernetes sends on pod deletion; the exit status if it exits within `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        self.wait_exit(timeout).await
    }

    /// The exit status if the process exits within `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `msg` of every log line about `canary` (`name.namespace`), in order.
    pub fn messages(&self, canary: &str) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.json["canary"] == canary)
            .filter_map(|l| l.json["msg"].as_str().map(str::to_owned))
            .collect()
    }

    /// When a log line about `canary` with exactly `msg` was first read.
    pub fn first_seen(&self, canary: &str, msg: &str) -> Option<Instant> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.json["canary"] == canary && l.json["msg"] == msg)
            .map(|l| l.at)
    }

    pub fn tail(&self, n: usize) -> String {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .skip(logs.len().saturating_sub(n))
            .map(|l| l.json.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

// ------------------------------------------------------------------------------------------------
// Manifests
// ------------------------------------------------------------------------------------------------

pub fn podinfo(ns: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "podinfo", "namespace": ns, "labels": {"app": "podinfo"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {"labels": {"app": "podinfo"}},
                "spec": {"containers": [{
                    "name": "podinfod",
                    "image": image,
                    "ports": [{"name": "http", "containerPort": 9898}]
                }]}
            }
        }
    })
}

/// The seed's Canary (no metrics: the core treats an analysis without metrics as passing).
pub fn canary(ns: &str, interval: &str, step: u32, max: u32, deadline: u32) -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": ns},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "progressDeadlineSeconds": deadline,
            "service": {"port": 9898},
            "analysis": {"interval": interval, "threshold": 5, "maxWeight": max, "stepWeight": step}
        }
    })
}
