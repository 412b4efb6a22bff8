//! flagger-bench: runs the release `flagger` binary against the in-process testbed with N canaries
//! and measures what issue 8 asks for (docs/BENCHMARKS.md):
//!
//! 1. starts the testbed (Istio traffic simulation scaled down: `--rps` per VirtualService, samples
//!    every `--sample-every`) and installs Flagger's CRDs;
//! 2. starts the operator as a child process and, once it watches Canaries, reads its baseline RSS;
//! 3. creates N namespaces `bench-NNNNN`, each with Deployment `podinfo` and a Service-less Canary
//!    analysing the builtin `request-success-rate` metric, and waits for all to be Initialized
//!    (`init_seconds` counts from the first create);
//! 4. updates every Deployment's image and follows each Canary to Succeeded
//!    (`promote_all_seconds` counts from the first update).
//!
//! Timestamps come from a subscriber to the testbed's store (in-process, no API requests): the
//! commit of each Deployment update and of each Canary status change. API request counts are the
//! testbed's stats for the operator's User-Agent (`flagger-rs/...`) only; the bench's own client
//! sends `flagger-bench`.
//!
//! The steady-state window is from the moment every canary has made its first weight step to the
//! moment the first canary makes its last one (reaches `maxWeight`; its next tick promotes): in
//! between every canary is ticking in the analysis (the edges are moved half an interval inward so
//! they fall between ticks). Requests per canary per tick = requests in the window / ticks seen in
//! it (weight steps plus failed checks, from the Canaries' status).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use flagger_testbed::faults::{Stats, StatsSnapshot};
use flagger_testbed::store::{EventType, ResourceId, StoreEvent};
use flagger_testbed::{Config, Testbed};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde::Serialize;
use serde_json::{Value, json};

/// The operator's User-Agent prefix (actors/src/operator.rs).
pub const OPERATOR_AGENT: &str = "flagger-rs/";
/// The bench's own User-Agent: its requests are not the operator's.
pub const BENCH_AGENT: &str = "flagger-bench";
const IMAGE_OLD: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const IMAGE_NEW: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
const NAMESPACE_PREFIX: &str = "bench-";
const CRDS: [&str; 3] = [
    include_str!("../../charts/flagger/crds/canary.yaml"),
    include_str!("../../charts/flagger/crds/metrictemplate.yaml"),
    include_str!("../../charts/flagger/crds/alertprovider.yaml"),
];
/// Verbs of the testbed's stats, in the JSON's order.
pub const VERBS: [&str; 7] = ["GET", "LIST", "WATCH", "POST", "PUT", "PATCH", "DELETE"];

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub canaries: usize,
    /// `analysis.interval` of every Canary.
    pub interval: Duration,
    /// The operator binary (`target/release/flagger`).
    pub flagger_bin: PathBuf,
    pub step_weight: u32,
    pub max_weight: u32,
    /// Simulated requests per second per VirtualService.
    pub rps: u32,
    /// Mesh simulation step and sampling period.
    pub sample_every: Duration,
    /// How long the testbed's Deployments take to become ready.
    pub ready_delay: Duration,
    /// Create/update requests of the bench in flight at once.
    pub concurrency: usize,
    /// Longest wait for all canaries to initialize, and again for all to finish.
    pub timeout: Duration,
    /// Where the operator's log goes (discarded without).
    pub operator_log: Option<PathBuf>,
    /// More flags for `flagger run`.
    pub operator_args: Vec<String>,
}

impl Options {
    /// Defaults for `canaries` canaries with the release binary.
    pub fn new(canaries: usize, flagger_bin: PathBuf) -> Self {
        Self {
            canaries,
            interval: Duration::from_secs(10),
            flagger_bin,
            step_weight: 10,
            max_weight: 50,
            rps: 10,
            sample_every: Duration::from_secs(1),
            ready_delay: Duration::from_millis(500),
            concurrency: 32,
            timeout: Duration::from_secs(900),
            operator_log: None,
            operator_args: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Cadence {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct ByVerb {
    #[serde(rename = "GET")]
    pub get: f64,
    #[serde(rename = "LIST")]
    pub list: f64,
    #[serde(rename = "WATCH")]
    pub watch: f64,
    #[serde(rename = "POST")]
    pub post: f64,
    #[serde(rename = "PUT")]
    pub put: f64,
    #[serde(rename = "PATCH")]
    pub patch: f64,
    #[serde(rename = "DELETE")]
    pub delete: f64,
}

impl ByVerb {
    fn set(&mut self, verb: &str, v: f64) {
        match verb {
            "GET" => self.get = v,
            "LIST" => self.list = v,
            "WATCH" => self.watch = v,
            "POST" => self.post = v,
            "PUT" => self.put = v,
            "PATCH" => self.patch = v,
            "DELETE" => self.delete = v,
            _ => {}
        }
    }
}

/// The JSON of a run (`--json`): exactly these keys, so runs can be compared over time.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Report {
    pub canaries: usize,
    pub interval_s: f64,
    pub detection_latency_ms: Latency,
    pub step_cadence_error_ms: Cadence,
    pub api_requests_per_canary_per_tick: ByVerb,
    pub writes_per_weight_step: f64,
    pub metric_queries_per_canary_per_step: f64,
    pub operator_peak_rss_mb: f64,
    pub operator_cpu_seconds: f64,
    pub rss_per_canary_kb: f64,
    pub init_seconds: f64,
    pub promote_all_seconds: f64,
}

/// What the table shows beyond the JSON.
#[derive(Clone, Debug, Default)]
pub struct Details {
    pub create_seconds: f64,
    pub trigger_seconds: f64,
    pub promoted: usize,
    pub failed: Vec<String>,
    pub window_seconds: f64,
    pub weight_steps_in_window: usize,
    /// Analysis ticks per canary in the window (weight steps and failed checks).
    pub ticks_in_window: f64,
    /// Ticks that counted a failed check instead of stepping.
    pub halts_in_window: usize,
    /// Operator CPU in the window / window length.
    pub window_cores: f64,
    /// Operator CPU from the trigger to the last promotion / that time.
    pub promotion_cores: f64,
    pub baseline_rss_mb: f64,
    pub clk_tck: u64,
    /// Operator requests in the window by RBAC verb and resource(/subresource), per canary per tick.
    pub requests_per_canary_per_tick: BTreeMap<String, f64>,
    /// Every operator request of the whole run (start, initialization, analysis, promotion) per
    /// canary, by RBAC verb and resource(/subresource).
    pub requests_per_canary_whole_run: BTreeMap<String, f64>,
    /// Store events the recorder missed (it lagged behind); 0 for a valid run.
    pub lagged_events: u64,
    pub detection_samples: usize,
    pub cadence_samples: usize,
}

/// The counters at one instant: the operator's requests by `"GET canaries.flagger.app"` and by
/// `"patch canaries.flagger.app/status"` (RBAC verb and subresource), metric queries, CPU ticks.
#[derive(Clone, Debug)]
struct Mark {
    at: Instant,
    requests: BTreeMap<String, u64>,
    calls: BTreeMap<String, u64>,
    queries: u64,
    cpu_ticks: Option<u64>,
}

impl Mark {
    fn take(stats: &Stats, mesh: &flagger_testbed::mesh::Mesh, pid: u32) -> Mark {
        let snapshot = stats.snapshot();
        Mark {
            at: Instant::now(),
            requests: operator_requests(&snapshot),
            calls: operator_calls(&snapshot),
            queries: mesh.queries(),
            cpu_ticks: cpu_ticks(pid),
        }
    }
}

#[derive(Default)]
struct Track {
    phase: String,
    weight: i64,
    /// When the bench's image update of the target committed.
    updated_at: Option<Instant>,
    /// First Progressing after the update.
    progressing_at: Option<Instant>,
    /// (when, weight) of every canaryWeight increase while Progressing, after the update.
    steps: Vec<(Instant, i64)>,
    failed_checks: i64,
    /// When `failedChecks` grew while Progressing, after the update: ticks that did not step.
    halts: Vec<Instant>,
}

#[derive(Default)]
struct Recorded {
    tracks: HashMap<String, Track>,
    /// When every canary had made its first weight step.
    all_stepped: Option<Instant>,
    /// When the first canary made its last weight step (reached maxWeight).
    first_at_max: Option<Instant>,
    lagged: u64,
}

/// Follows the store's changes on its own thread.
struct Recorder {
    state: Arc<Mutex<Recorded>>,
    armed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count_phase(&self, phases: &[&str]) -> usize {
        self.lock()
            .tracks
            .values()
            .filter(|t| phases.contains(&t.phase.as_str()))
            .count()
    }
}

struct RecorderCtx {
    canaries: usize,
    step_weight: i64,
    max_weight: i64,
}

fn start_recorder(
    mut rx: tokio::sync::broadcast::Receiver<Arc<StoreEvent>>,
    ctx: RecorderCtx,
) -> Recorder {
    let state: Arc<Mutex<Recorded>> = Arc::default();
    let armed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let rec = Recorder {
        state: state.clone(),
        armed: armed.clone(),
        stop: stop.clone(),
    };
    let canaries_r = ResourceId::new("flagger.app", "canaries");
    let deployments_r = ResourceId::new("apps", "deployments");
    std::thread::spawn(move || {
        use tokio::sync::broadcast::error::RecvError;
        while !stop.load(Ordering::Relaxed) {
            let e = match rx.blocking_recv() {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    state.lock().unwrap_or_else(|e| e.into_inner()).lagged += n;
                    continue;
                }
                Err(RecvError::Closed) => break,
            };
            if e.kind == EventType::Deleted {
                continue;
            }
            let ns = e.object["metadata"]["namespace"].as_str().unwrap_or("");
            if !ns.starts_with(NAMESPACE_PREFIX) {
                continue;
            }
            let now = Instant::now();
            if e.resource == deployments_r {
                if e.object["metadata"]["name"] != "podinfo" || !armed.load(Ordering::Relaxed) {
                    continue;
                }
                let image = &e.object["spec"]["template"]["spec"]["containers"][0]["image"];
                if image == IMAGE_NEW {
                    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                    let t = st.tracks.entry(ns.to_owned()).or_default();
                    t.updated_at.get_or_insert(now);
                }
                continue;
            }
            if e.resource != canaries_r {
                continue;
            }
            let phase = e.object["status"]["phase"].as_str().unwrap_or("");
            let weight = e.object["status"]["canaryWeight"].as_i64().unwrap_or(0);
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            let t = st.tracks.entry(ns.to_owned()).or_default();
            let after_update = t.updated_at.is_some();
            if after_update && phase == "Progressing" && t.progressing_at.is_none() {
                t.progressing_at = Some(now);
            }
            if after_update && phase == "Progressing" && weight > t.weight {
                t.steps.push((now, weight));
            }
            let failed_checks = e.object["status"]["failedChecks"].as_i64().unwrap_or(0);
            if after_update && phase == "Progressing" && failed_checks > t.failed_checks {
                t.halts.push(now);
            }
            t.failed_checks = failed_checks;
            let at_max = after_update && phase == "Progressing" && weight >= ctx.max_weight;
            t.phase = phase.to_owned();
            t.weight = weight;
            if !armed.load(Ordering::Relaxed) {
                continue;
            }
            if st.first_at_max.is_none() && at_max {
                st.first_at_max = Some(now);
            }
            if st.all_stepped.is_none() && st.first_at_max.is_none() {
                let stepped = st
                    .tracks
                    .values()
                    .filter(|t| t.phase == "Progressing" && t.weight >= ctx.step_weight)
                    .count();
                if stepped == ctx.canaries {
                    st.all_stepped = Some(now);
                }
            }
        }
    });
    rec
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Vm*` line of /proc/<pid>/status, in kB.
pub fn vm_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        v.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100, Linux's value everywhere, if that fails).
pub fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(100)
}

/// Nearest-rank percentile of sorted `v` (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn canary_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary"),
        "canaries",
    )
}

fn namespace_name(i: usize) -> String {
    format!("{NAMESPACE_PREFIX}{i:05}")
}

fn deployment(ns: &str) -> Value {
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
                    "image": IMAGE_OLD,
                    "ports": [{"name": "http", "containerPort": 9898}]
                }]}
            }
        }
    })
}

fn canary(ns: &str, o: &Options) -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": ns},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "progressDeadlineSeconds": 3600,
            "service": {"port": 9898},
            "analysis": {
                "interval": format!("{}ms", o.interval.as_millis()),
                "threshold": 5,
                "maxWeight": o.max_weight,
                "stepWeight": o.step_weight,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}
                ]
            }
        }
    })
}

struct Operator {
    child: Child,
}

impl Operator {
    fn start(o: &Options, kubeconfig: &std::path::Path, metrics_url: &str) -> Result<Operator> {
        let stdout = match &o.operator_log {
            Some(p) => Stdio::from(
                std::fs::File::create(p)
                    .with_context(|| format!("--operator-log {}", p.display()))?,
            ),
            None => Stdio::null(),
        };
        let child = Command::new(&o.flagger_bin)
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--metrics-server", metrics_url])
            .args(["--port", "0", "--listen-address", "127.0.0.1"])
            .args(&o.operator_args)
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("--flagger-bin {} does not start", o.flagger_bin.display()))?;
        Ok(Operator { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => bail!("the operator exited: {status}"),
            Ok(None) => Ok(()),
            Err(e) => bail!("cannot wait for the operator: {e}"),
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn operator_requests(s: &StatsSnapshot) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (agent, requests) in &s.by_user_agent_and_request {
        if !agent.starts_with(OPERATOR_AGENT) {
            continue;
        }
        for (request, n) in requests {
            *out.entry(request.clone()).or_default() += n;
        }
    }
    out
}

/// Operator calls by `"<rbac verb> <resource>[/<subresource>]"`.
fn operator_calls(s: &StatsSnapshot) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in &s.calls {
        if !c.call.user_agent.starts_with(OPERATOR_AGENT) {
            continue;
        }
        let mut resource = if c.call.group.is_empty() {
            c.call.resource.clone()
        } else {
            format!("{}.{}", c.call.resource, c.call.group)
        };
        if !c.call.subresource.is_empty() {
            resource = format!("{resource}/{}", c.call.subresource);
        }
        *out.entry(format!("{} {resource}", c.call.verb))
            .or_default() += c.count;
    }
    out
}

fn delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(a.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

async fn for_each<F, Fut>(n: usize, concurrency: usize, f: F) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    futures::stream::iter((0..n).map(f))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for text in CRDS {
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(text).context("a CRD of charts/flagger/crds")?;
        api.create(&PostParams::default(), &crd).await?;
    }
    let canaries: Api<DynamicObject> = Api::all_with(client.clone(), &canary_resource());
    let deadline = Instant::now() + Duration::from_secs(20);
    while canaries.list(&Default::default()).await.is_err() {
        if Instant::now() > deadline {
            bail!("the Canary CRD is not served after 20s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits until `done()` or fails after `timeout`, checking the operator is alive.
async fn wait(
    what: &str,
    timeout: Duration,
    op: &mut Operator,
    mut progress: impl FnMut() -> (usize, usize),
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_print = Instant::now();
    loop {
        let (done, of) = progress();
        if done >= of {
            return Ok(());
        }
        op.check_alive()?;
        if Instant::now() > deadline {
            bail!("{what}: only {done} of {of} after {timeout:?}");
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!("  {what}: {done}/{of}");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One benchmark run.
pub async fn run(o: &Options) -> Result<(Report, Details)> {
    if o.canaries == 0 {
        bail!("--canaries must be at least 1");
    }
    if o.step_weight == 0 || o.max_weight < 3 * o.step_weight || o.max_weight > 100 {
        bail!(
            "--max-weight must be at most 100 and at least 3 × --step-weight (the steps between the first and the last make the measurement window)"
        );
    }
    let n = o.canaries;
    let clk = clk_tck();
    let testbed = Testbed::start(Config {
        ready_delay: o.ready_delay,
        rps: o.rps,
        mesh_sample_every: o.sample_every,
        mesh_retention: Duration::from_secs(600),
        history: (n * 50).max(10_000),
        ..Config::default()
    })
    .await
    .map_err(|e| anyhow!("the testbed does not start: {e}"))?;
    let mut kcfg = testbed
        .kubeconfig()
        .map_err(|e| anyhow!("testbed kubeconfig: {e}"))?;
    kcfg.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(BENCH_AGENT),
    ));
    let client = Client::try_from(kcfg)?;
    install_crds(&client).await?;
    let kubeconfig = tempfile::NamedTempFile::new()?;
    std::fs::write(kubeconfig.path(), testbed.kubeconfig_yaml())?;

    let rec = start_recorder(
        testbed.store().subscribe(),
        RecorderCtx {
            canaries: n,
            step_weight: i64::from(o.step_weight),
            max_weight: i64::from(o.max_weight),
        },
    );

    let mut op = Operator::start(o, kubeconfig.path(), &testbed.metrics_url())?;
    // Ready once it watches Canaries; its baseline memory is read a moment later.
    let stats = testbed.stats().clone();
    wait(
        "operator watching Canaries",
        Duration::from_secs(60),
        &mut op,
        || {
            let watching =
                operator_requests(&stats.snapshot()).contains_key("WATCH canaries.flagger.app");
            (usize::from(watching), 1)
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_rss_kb = vm_kb(op.pid(), "VmRSS").unwrap_or(0);

    eprintln!("creating {n} namespaces, Deployments and Canaries");
    let created_at = Instant::now();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let canaries = canary_resource();
    for_each(n, o.concurrency, |i| {
        let client = client.clone();
        let ns_api = ns_api.clone();
        let canaries = canaries.clone();
        async move {
            let ns = namespace_name(i);
            let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
            ns_api.create(&PostParams::default(), &namespace).await?;
            let d: Deployment = serde_json::from_value(deployment(&ns))?;
            Api::<Deployment>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &d)
                .await?;
            let c: DynamicObject = serde_json::from_value(canary(&ns, o))?;
            Api::<DynamicObject>::namespaced_with(client, &ns, &canaries)
                .create(&PostParams::default(), &c)
                .await?;
            Ok(())
        }
    })
    .await
    .context("creating the canaries")?;
    let create_seconds = created_at.elapsed().as_secs_f64();
    eprintln!("created in {create_seconds:.1}s; waiting for all to be Initialized");
    wait("canaries Initialized", o.timeout, &mut op, || {
        (rec.count_phase(&["Initialized"]), n)
    })
    .await?;
    let init_seconds = created_at.elapsed().as_secs_f64();
    eprintln!("all {n} Initialized after {init_seconds:.1}s; updating every Deployment's image");

    // Settle: the initialization's last writes and events are not part of the analysis.
    tokio::time::sleep(Duration::from_secs(2)).await;
    rec.armed.store(true, Ordering::Relaxed);
    let pid = op.pid();
    let cpu_at_trigger = cpu_ticks(pid);
    let triggered_at = Instant::now();
    for_each(n, o.concurrency, |i| {
        let client = client.clone();
        async move {
            let ns = namespace_name(i);
            let patch = json!({"spec": {"template": {"spec": {"containers": [
                {"name": "podinfod", "image": IMAGE_NEW, "ports": [{"name": "http", "containerPort": 9898}]}
            ]}}}});
            Api::<Deployment>::namespaced(client, &ns)
                .patch("podinfo", &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(())
        }
    })
    .await
    .context("updating the Deployments")?;
    let trigger_seconds = triggered_at.elapsed().as_secs_f64();
    eprintln!("updated in {trigger_seconds:.1}s; following the canaries to promotion");
    // Counters every `period` from when every canary has stepped until one reaches maxWeight;
    // the window is those marks at least half an interval inside that span, so that its edges
    // fall between ticks rather than on them.
    let period = (o.interval / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mesh = testbed.mesh().clone();
    let mut marks: Vec<Mark> = Vec::new();
    let mut next_mark = Instant::now();
    wait("canaries Succeeded or Failed", o.timeout, &mut op, || {
        let (stepped, at_max) = {
            let st = rec.lock();
            (st.all_stepped, st.first_at_max)
        };
        if at_max.is_none() && Instant::now() >= next_mark {
            let m = Mark::take(&stats, &mesh, pid);
            if stepped.is_none() {
                marks.clear();
            }
            marks.push(m);
            next_mark = Instant::now() + period;
        }
        (rec.count_phase(&["Succeeded", "Failed"]), n)
    })
    .await?;
    let promote_all_seconds = triggered_at.elapsed().as_secs_f64();
    let cpu_end = cpu_ticks(op.pid());
    let peak_rss_kb = vm_kb(op.pid(), "VmHWM").unwrap_or(0);
    let whole_run = operator_calls(&stats.snapshot());
    // Let the recorder see the last events before reading it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    rec.stop.store(true, Ordering::Relaxed);
    drop(op);

    let recorded = std::mem::take(&mut *rec.lock());
    let half = o.interval / 2;
    let start = recorded
        .all_stepped
        .and_then(|t| marks.iter().find(|m| m.at >= t + half));
    let end = recorded
        .first_at_max
        .and_then(|t| marks.iter().rev().find(|m| m.at + half <= t));
    let (start, end) = match (start, end) {
        (Some(s), Some(e)) if e.at > s.at => (s.clone(), e.clone()),
        _ => bail!(
            "no steady-state window: a canary reached --max-weight less than an interval after every canary had made its first weight step; raise --max-weight/--step-weight"
        ),
    };
    let window = end.at.duration_since(start.at).as_secs_f64();
    let inside = |at: &Instant| *at >= start.at && *at <= end.at;
    let steps_in_window: usize = recorded
        .tracks
        .values()
        .map(|t| t.steps.iter().filter(|(at, _)| inside(at)).count())
        .sum();
    let halts_in_window: usize = recorded
        .tracks
        .values()
        .map(|t| t.halts.iter().filter(|at| inside(at)).count())
        .sum();
    // Ticks observed: each analysis tick either steps the weight or counts a failed check. (The
    // window's length over the interval would be biased: the canaries started together, so their
    // ticks are not spread evenly over the window.)
    if steps_in_window + halts_in_window == 0 {
        bail!("no analysis tick in the steady-state window ({window:.1} s)");
    }
    let ticks_per_canary = (steps_in_window + halts_in_window) as f64 / n as f64;
    let per_tick = |count: u64| count as f64 / (n as f64 * ticks_per_canary);
    let requests = delta(&start.requests, &end.requests);
    let mut by_verb = ByVerb::default();
    let mut verb_counts: BTreeMap<&str, u64> = BTreeMap::new();
    for (request, count) in &requests {
        let verb = request.split(' ').next().unwrap_or("");
        *verb_counts.entry(verb).or_default() += count;
    }
    for verb in VERBS {
        by_verb.set(verb, per_tick(verb_counts.get(verb).copied().unwrap_or(0)));
    }
    let requests_per_canary_per_tick = delta(&start.calls, &end.calls)
        .into_iter()
        .map(|(k, v)| (k, per_tick(v)))
        .collect();
    let writes: u64 = ["POST", "PUT", "PATCH"]
        .iter()
        .map(|v| verb_counts.get(v).copied().unwrap_or(0))
        .sum();
    let per_step = |count: u64| {
        if steps_in_window == 0 {
            0.0
        } else {
            count as f64 / steps_in_window as f64
        }
    };
    let mut detection: Vec<f64> = recorded
        .tracks
        .values()
        .filter_map(|t| {
            Some(
                t.progressing_at?
                    .duration_since(t.updated_at?)
                    .as_secs_f64()
                    * 1e3,
            )
        })
        .collect();
    detection.sort_by(f64::total_cmp);
    let interval_ms = o.interval.as_secs_f64() * 1e3;
    let mut cadence: Vec<f64> = recorded
        .tracks
        .values()
        .flat_map(|t| {
            t.steps
                .windows(2)
                .map(|w| w[1].0.duration_since(w[0].0).as_secs_f64() * 1e3 - interval_ms)
                .collect::<Vec<_>>()
        })
        .collect();
    cadence.sort_by(f64::total_cmp);
    let cores = |a: Option<u64>, b: Option<u64>, secs: f64| match (a, b) {
        (Some(a), Some(b)) if secs > 0.0 => b.saturating_sub(a) as f64 / clk as f64 / secs,
        _ => 0.0,
    };
    let failed: Vec<String> = recorded
        .tracks
        .iter()
        .filter(|(_, t)| t.phase == "Failed")
        .map(|(ns, _)| ns.clone())
        .collect();
    let report = Report {
        canaries: n,
        interval_s: o.interval.as_secs_f64(),
        detection_latency_ms: Latency {
            p50: percentile(&detection, 50.0),
            p99: percentile(&detection, 99.0),
            max: detection.last().copied().unwrap_or(0.0),
        },
        step_cadence_error_ms: Cadence {
            p50: percentile(&cadence, 50.0),
            p99: percentile(&cadence, 99.0),
        },
        api_requests_per_canary_per_tick: by_verb,
        writes_per_weight_step: per_step(writes),
        metric_queries_per_canary_per_step: per_step(end.queries.saturating_sub(start.queries)),
        operator_peak_rss_mb: peak_rss_kb as f64 / 1024.0,
        operator_cpu_seconds: cpu_end.unwrap_or(0) as f64 / clk as f64,
        rss_per_canary_kb: peak_rss_kb.saturating_sub(baseline_rss_kb) as f64 / n as f64,
        init_seconds,
        promote_all_seconds,
    };
    let details = Details {
        create_seconds,
        trigger_seconds,
        promoted: recorded
            .tracks
            .values()
            .filter(|t| t.phase == "Succeeded")
            .count(),
        failed,
        window_seconds: window,
        weight_steps_in_window: steps_in_window,
        ticks_in_window: ticks_per_canary,
        halts_in_window,
        window_cores: cores(start.cpu_ticks, end.cpu_ticks, window),
        promotion_cores: cores(cpu_at_trigger, cpu_end, promote_all_seconds),
        baseline_rss_mb: baseline_rss_kb as f64 / 1024.0,
        clk_tck: clk,
        requests_per_canary_per_tick,
        requests_per_canary_whole_run: whole_run
            .into_iter()
            .map(|(k, v)| (k, v as f64 / n as f64))
            .collect(),
        lagged_events: recorded.lagged,
        detection_samples: detection.len(),
        cadence_samples: cadence.len(),
    };
    testbed.shutdown().await;
    Ok((report, details))
}

/// Writes `report` as pretty JSON to `path`.
pub fn write_json(report: &Report, path: &std::path::Path) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("--json {}", path.display()))
}

/// The table printed after a run.
pub fn table(r: &Report, d: &Details) -> String {
    let v = &r.api_requests_per_canary_per_tick;
    let mut rows: Vec<(String, String)> = vec![
        ("canaries".into(), r.canaries.to_string()),
        ("interval".into(), format!("{} s", r.interval_s)),
        (
            "promoted / failed".into(),
            format!("{} / {}", d.promoted, d.failed.len()),
        ),
        (
            "detection latency p50 / p99 / max".into(),
            format!(
                "{:.0} / {:.0} / {:.0} ms ({} canaries)",
                r.detection_latency_ms.p50,
                r.detection_latency_ms.p99,
                r.detection_latency_ms.max,
                d.detection_samples
            ),
        ),
        (
            "step cadence error p50 / p99".into(),
            format!(
                "{:+.0} / {:+.0} ms ({} intervals)",
                r.step_cadence_error_ms.p50, r.step_cadence_error_ms.p99, d.cadence_samples
            ),
        ),
        (
            "steady window".into(),
            format!(
                "{:.1} s ({:.2} intervals): {:.2} ticks per canary = {} weight steps + {} failed checks",
                d.window_seconds,
                d.window_seconds / r.interval_s,
                d.ticks_in_window,
                d.weight_steps_in_window,
                d.halts_in_window
            ),
        ),
        (
            "API requests / canary / tick".into(),
            format!(
                "GET {:.3}  LIST {:.3}  WATCH {:.3}  POST {:.3}  PUT {:.3}  PATCH {:.3}  DELETE {:.3}",
                v.get, v.list, v.watch, v.post, v.put, v.patch, v.delete
            ),
        ),
    ];
    for (request, per) in &d.requests_per_canary_per_tick {
        rows.push((format!("  {request}"), format!("{per:.3}")));
    }
    rows.extend([
        (
            "writes / weight step".into(),
            format!("{:.2}", r.writes_per_weight_step),
        ),
        (
            "metric queries / canary / step".into(),
            format!("{:.2}", r.metric_queries_per_canary_per_step),
        ),
        (
            "operator peak RSS".into(),
            format!(
                "{:.1} MB (baseline {:.1} MB, {:.1} kB per canary)",
                r.operator_peak_rss_mb, d.baseline_rss_mb, r.rss_per_canary_kb
            ),
        ),
        (
            "operator CPU".into(),
            format!(
                "{:.1} s total; {:.3} cores in the window, {:.3} from update to last promotion (CLK_TCK {})",
                r.operator_cpu_seconds, d.window_cores, d.promotion_cores, d.clk_tck
            ),
        ),
        (
            "init (create + initialize)".into(),
            format!("{:.1} s (creating took {:.1} s)", r.init_seconds, d.create_seconds),
        ),
        (
            "promote all".into(),
            format!(
                "{:.1} s (updating took {:.1} s)",
                r.promote_all_seconds, d.trigger_seconds
            ),
        ),
        ("recorder lagged events".into(), d.lagged_events.to_string()),
        (
            "whole run, requests / canary".into(),
            "(operator start, initialization, analysis, promotion)".into(),
        ),
    ]);
    for (request, per) in &d.requests_per_canary_whole_run {
        rows.push((format!("  {request}"), format!("{per:.3}")));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect()
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_and_percentiles() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("0s").is_err());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn json_has_exactly_the_issue_keys() {
        let v = serde_json::to_value(Report::default()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "canaries",
            "interval_s",
            "detection_latency_ms",
            "step_cadence_error_ms",
            "api_requests_per_canary_per_tick",
            "writes_per_weight_step",
            "metric_queries_per_canary_per_step",
            "operator_peak_rss_mb",
            "operator_cpu_seconds",
            "rss_per_canary_kb",
            "init_seconds",
            "promote_all_seconds",
        ];
        let mut got = keys.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        let verbs: Vec<&str> = v["api_requests_per_canary_per_tick"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(verbs.len(), 7);
        for verb in VERBS {
            assert!(verbs.contains(&verb), "{verb}");
        }
    }
}
