//! `flagger demo`: the seed's canary release on a simulated cluster, in one process.
//!
//! It starts the testbed (a Kubernetes API server, Deployment/HPA controllers, an Istio mesh that
//! sends traffic and answers Prometheus queries) on 127.0.0.1, installs Flagger's CRDs and the
//! seed's namespace, podinfo Deployment, HPA and Canary, and runs the operator exactly as
//! `flagger run --kubeconfig <testbed>` does (same flags, same code path, over HTTP) on a thread
//! of this process. Then two releases: a healthy image, which is promoted, and an image whose pods
//! answer a third of the requests with HTTP 500, which is halted and rolled back. It ends with
//! `kubectl get canaries -A` and the events of `kubectl describe canary`, and exits non-zero when
//! the outcome is anything but promotion then rollback.

mod cluster;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use tokio::sync::oneshot;

use crate::cli::{Cli, Command, DemoArgs, LogLevel};
use cluster::{Cluster, EventRow, NAME, NAMESPACE, Status};
use view::Screen;

const INITIAL_IMAGE: &str = "quay.io/stefanprodan/podinfo:1.4.0";
const HEALTHY_IMAGE: &str = "quay.io/stefanprodan/podinfo:1.4.1";
const FAULTY_IMAGE: &str = "quay.io/stefanprodan/podinfo:1.4.2";
/// The simulated mesh answers this fraction of a pod's requests with HTTP 500.
const ERROR_RATE_ANNOTATION: &str = "testbed.flagger.app/error-rate";
const FAULTY_ERROR_RATE: &str = "0.33";

const INIT_TIMEOUT: Duration = Duration::from_secs(30);
const RELEASE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(demo(args));
    // The testbed's open connections need not drain: the process ends here.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let DemoArgs { keep } = args;
    let screen = Screen::detect();
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("flagger-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let log_path = dir.path().join("flagger.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    crate::logging::init_json_to(LogLevel::Info, log);

    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let outcome = tokio::select! {
        outcome = scenario(&screen, dir.path(), &log_path) => outcome,
        _ = &mut interrupted => Err(anyhow!("interrupted")),
    };
    match outcome {
        Ok(cluster) => {
            screen.line("");
            screen.done(
                "Promotion, then rollback: the demo went as expected",
                started.elapsed(),
            );
            if keep {
                screen.line(format!(
                    "\nThe cluster and the operator keep running (--keep). Try:\n  kubectl --kubeconfig {} -n test get all\nPress Ctrl-C to stop.",
                    cluster.kubeconfig.display()
                ));
                let _ = interrupted.await;
            }
            Ok(())
        }
        Err(e) => {
            // The logs explain the failure; keep them.
            let kept = dir.keep();
            screen.failed(&format!(
                "The demo failed after {:.1} s: {e:#}",
                started.elapsed().as_secs_f64()
            ));
            screen.line(format!(
                "  operator logs: {}",
                kept.join("flagger.log").display()
            ));
            Err(e)
        }
    }
}

/// Starts the operator as `flagger run` with these flags, on its own thread (it runs its own
/// actix system). The receiver gets its result if it ever stops.
fn start_operator(argv: &[String]) -> anyhow::Result<oneshot::Receiver<anyhow::Result<()>>> {
    let args = match Cli::try_parse_from(argv)
        .context("operator flags")?
        .into_command()
    {
        Command::Run(args) => args,
        other => bail!("expected the run command, got {other:?}"),
    };
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("flagger-operator".to_owned())
        .spawn(move || {
            let _ = tx.send(crate::run_operator(args));
        })
        .context("starting the operator thread")?;
    Ok(rx)
}

/// A free port on 127.0.0.1 for the operator's /metrics (it logs its address; the demo prints it).
fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port for /metrics")?;
    Ok(listener.local_addr()?.port())
}

async fn scenario(screen: &Screen, dir: &Path, log_path: &Path) -> anyhow::Result<Cluster> {
    screen.line(format!(
        "{}",
        console::style(
            "flagger demo: a canary release on a simulated Kubernetes cluster (nothing to install)"
        )
        .bold()
    ));
    let step = Instant::now();
    let cluster = Cluster::start(dir).await?;
    let port = free_port()?;
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let argv: Vec<String> = [
        "flagger",
        "run",
        "--kubeconfig",
        &kubeconfig,
        "--metrics-server",
        &cluster.testbed.metrics_url(),
        "--listen-address",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    screen.line(format!(
        "
  cluster     {api}  a simulated Kubernetes API server with Deployment and HPA controllers
  mesh        {metrics}  simulated Istio traffic ({rps} requests/s to podinfo) and a Prometheus API
  kubeconfig  {kubeconfig}
  operator    {cmd}
              (on a thread of this process, talking to the cluster over HTTP as in production)
  logs        {log}
  metrics     http://127.0.0.1:{port}/metrics
  (all of it goes away when the demo ends; --keep keeps it running until Ctrl-C)

  Follow along from another terminal:
    kubectl --kubeconfig {kubeconfig} get canaries -A --watch
    kubectl --kubeconfig {kubeconfig} -n test describe canary/podinfo
",
        api = cluster.testbed.api_url(),
        rps = cluster::RPS,
        metrics = cluster.testbed.metrics_url(),
        cmd = argv.join(" "),
        log = log_path.display(),
    ));
    cluster.install_crds().await?;
    cluster.apply_manifests().await?;
    screen.done(
        "Installed Flagger's CRDs and the seed's namespace test, deployment/podinfo, hpa/podinfo and canary/podinfo",
        step.elapsed(),
    );
    let mut operator = start_operator(&argv)?;
    let (threshold, max_weight) = cluster.analysis_limits().await?;
    let story = async {
        let mut seen = HashMap::new();
        initialize(screen, &cluster, &mut seen, threshold, max_weight).await?;
        promote(screen, &cluster, &mut seen, threshold, max_weight).await?;
        roll_back(screen, &cluster, &mut seen, threshold, max_weight).await?;
        show_final_state(screen, &cluster).await
    };
    tokio::select! {
        done = story => done?,
        stopped = &mut operator => match stopped {
            Ok(Ok(())) => bail!("the operator stopped"),
            Ok(Err(e)) => return Err(e.context("the operator stopped")),
            Err(_) => bail!("the operator thread panicked"),
        },
    }
    Ok(cluster)
}

/// Follows the canary until `done` holds, printing events and status changes.
async fn follow(
    screen: &Screen,
    cluster: &Cluster,
    seen: &mut HashMap<String, i64>,
    label: &str,
    limits: (i64, i64),
    timeout: Duration,
    mut done: impl FnMut(&Status) -> bool,
) -> anyhow::Result<(Status, Vec<EventRow>, Duration)> {
    let (threshold, max_weight) = limits;
    let mut stage = screen.stage(label, max_weight, threshold);
    let mut events = Vec::new();
    loop {
        let status = cluster.status().await?;
        for e in cluster.events().await? {
            if seen.get(&e.uid) != Some(&e.count) {
                seen.insert(e.uid.clone(), e.count);
                stage.event(&e, &status);
                events.push(e);
            }
        }
        stage.status(&status);
        if done(&status) {
            let took = stage.elapsed();
            stage.finish();
            return Ok((status, events, took));
        }
        if stage.elapsed() > timeout {
            stage.finish();
            bail!(
                "{label}: not finished after {} s (phase {:?}, canary weight {}, failed checks {})",
                timeout.as_secs(),
                status.phase,
                status.weight,
                status.failed_checks
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn initialize(
    screen: &Screen,
    cluster: &Cluster,
    seen: &mut HashMap<String, i64>,
    threshold: i64,
    max_weight: i64,
) -> anyhow::Result<()> {
    screen.heading("Initialization: Flagger takes over deployment/podinfo");
    let (_, _, took) = follow(
        screen,
        cluster,
        seen,
        "initializing",
        (threshold, max_weight),
        INIT_TIMEOUT,
        |s| s.phase == "Initialized",
    )
    .await?;
    let (primary, canary) = cluster.weights().await?;
    if (primary, canary) != (100, 0) {
        bail!("after initialization the VirtualService routes {primary}/{canary}, not 100/0");
    }
    screen.done(
        &format!(
            "Initialized: podinfo-primary ({INITIAL_IMAGE}) serves 100% of the traffic, podinfo is scaled to zero"
        ),
        took,
    );
    Ok(())
}

/// Waits for the release that begins now: a phase that is not a resting one, or a new
/// `lastAppliedSpec`, then a terminal phase.
fn release_done(before: Status) -> impl FnMut(&Status) -> bool {
    let mut started = false;
    move |s| {
        started |= !matches!(s.phase.as_str(), "Initialized" | "Succeeded" | "Failed")
            || (s.last_applied_spec != before.last_applied_spec && !s.last_applied_spec.is_empty());
        started && s.is_terminal()
    }
}

async fn promote(
    screen: &Screen,
    cluster: &Cluster,
    seen: &mut HashMap<String, i64>,
    threshold: i64,
    max_weight: i64,
) -> anyhow::Result<()> {
    screen.heading(&format!(
        "Release 1 of 2: {HEALTHY_IMAGE}, a healthy version"
    ));
    screen.command(&format!(
        "kubectl -n test set image deployment/podinfo podinfod={HEALTHY_IMAGE}"
    ));
    let before = cluster.status().await?;
    cluster.release(HEALTHY_IMAGE, &BTreeMap::new()).await?;
    let (status, _, took) = follow(
        screen,
        cluster,
        seen,
        "release 1/2",
        (threshold, max_weight),
        RELEASE_TIMEOUT,
        release_done(before),
    )
    .await?;
    if status.phase != "Succeeded" {
        bail!(
            "release 1 (healthy) ended {}, expected Succeeded (a promotion)",
            status.phase
        );
    }
    let (image, _) = cluster.template_of(&format!("{NAME}-primary")).await?;
    if image != HEALTHY_IMAGE {
        bail!("release 1 was reported promoted but podinfo-primary runs {image}");
    }
    let (primary, canary) = cluster.weights().await?;
    if (primary, canary) != (100, 0) {
        bail!("after the promotion the VirtualService routes {primary}/{canary}, not 100/0");
    }
    screen.done(
        &format!("Promoted: podinfo-primary now runs {HEALTHY_IMAGE}"),
        took,
    );
    Ok(())
}

async fn roll_back(
    screen: &Screen,
    cluster: &Cluster,
    seen: &mut HashMap<String, i64>,
    threshold: i64,
    max_weight: i64,
) -> anyhow::Result<()> {
    screen.heading(&format!(
        "Release 2 of 2: {FAULTY_IMAGE}, whose pods answer a third of the requests with HTTP 500"
    ));
    screen.command(&format!(
        "kubectl -n test set image deployment/podinfo podinfod={FAULTY_IMAGE}"
    ));
    screen.line(format!(
        "  {}",
        console::style(format!(
            "(and the pod-template annotation {ERROR_RATE_ANNOTATION}: \"{FAULTY_ERROR_RATE}\", which the simulated mesh obeys)"
        ))
        .dim()
    ));
    let before = cluster.status().await?;
    let annotations = BTreeMap::from([(ERROR_RATE_ANNOTATION, FAULTY_ERROR_RATE)]);
    cluster.release(FAULTY_IMAGE, &annotations).await?;
    let (status, events, took) = follow(
        screen,
        cluster,
        seen,
        "release 2/2",
        (threshold, max_weight),
        RELEASE_TIMEOUT,
        release_done(before),
    )
    .await?;
    if status.phase != "Failed" {
        bail!(
            "release 2 (HTTP 500 for a third of the requests) ended {}, expected Failed (a rollback)",
            status.phase
        );
    }
    let halts = events
        .iter()
        .filter(|e| e.message.starts_with("Halt "))
        .count();
    let rollback = events
        .iter()
        .find(|e| e.message.contains("failed checks threshold reached"))
        .ok_or_else(|| {
            anyhow!("release 2 failed, but not because its checks failed (no \"failed checks threshold reached\" event)")
        })?;
    let (image, annotations) = cluster.template_of(&format!("{NAME}-primary")).await?;
    if image != HEALTHY_IMAGE || annotations.contains_key(ERROR_RATE_ANNOTATION) {
        bail!(
            "after the rollback podinfo-primary runs {image} {annotations:?}, expected {HEALTHY_IMAGE}"
        );
    }
    let (primary, canary) = cluster.weights().await?;
    if (primary, canary) != (100, 0) {
        bail!("after the rollback the VirtualService routes {primary}/{canary}, not 100/0");
    }
    screen.done(
        &format!(
            "Rolled back after {halts} halted checks ({}): podinfo-primary still runs {HEALTHY_IMAGE}",
            rollback.message
        ),
        took,
    );
    Ok(())
}

async fn show_final_state(screen: &Screen, cluster: &Cluster) -> anyhow::Result<()> {
    screen.heading("The final state");
    screen.command("kubectl get canaries -A");
    screen.table(&cluster.canaries_table().await?);
    screen.line("");
    screen.command(&format!("kubectl -n {NAMESPACE} describe canary/{NAME}"));
    screen.line("  ...");
    screen.events(&cluster.events().await?, jiff::Timestamp::now().as_second());
    Ok(())
}
