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
    cluster.install_crds().await?;
    cluster.apply_manifests().await?;
    screen.done(
        "Installed Flagger's CRDs and the seed's namespace test, deployment/podinfo, hpa/podinfo and canary/podinfo",
        step.elapsed(),
    );
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
    kubectl --kubeconfig {kubeconfig} -n test describe canary/podinfo",
        api = cluster.testbed.api_url(),
        rps = cluster::RPS,
        metrics = cluster.testbed.metrics_url(),
        cmd = argv.join(" "),
        log = log_path.display(),
    ));
    let mut operator = start_operator(&argv)?;
    let (threshold, max_weight) = cluster.analysis_limits().await?;
    let story = async {
        let mut seen = HashMap::new();
        initialize(screen, &cluster, &mut seen, threshold, max_weight).await?;
        let limits = (threshold, max_weight);
        release(screen, &cluster, &mut seen, limits, healthy_release()).await?;
        release(screen, &cluster, &mut seen, limits, faulty_release()).await?;
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

/// What a release must end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// Succeeded, the release's image on the primary.
    Promotion,
    /// Failed because its checks failed, the primary untouched.
    Rollback,
}

struct Release {
    label: &'static str,
    heading: String,
    image: &'static str,
    annotations: BTreeMap<&'static str, &'static str>,
    expected: Expected,
    /// The primary's image once the release is over.
    primary_after: &'static str,
}

/// How a release ended, read from the cluster.
#[derive(Debug, Clone)]
struct Ending {
    status: Status,
    /// Events of this release.
    events: Vec<EventRow>,
    primary_image: String,
    primary_annotations: BTreeMap<String, String>,
    weights: (i64, i64),
}

/// Whether the ending is what the release expects; the sentence that says so.
fn judge(release: &Release, ending: &Ending) -> anyhow::Result<String> {
    let Ending {
        status,
        events,
        primary_image,
        primary_annotations,
        weights,
    } = ending;
    let (phase, verdict) = match release.expected {
        Expected::Promotion => ("Succeeded", "a promotion"),
        Expected::Rollback => ("Failed", "a rollback"),
    };
    if status.phase != phase {
        bail!(
            "{} ended {:?}, expected {phase} ({verdict})",
            release.label,
            status.phase
        );
    }
    if primary_image != release.primary_after
        || primary_annotations
            .keys()
            .any(|k| k == ERROR_RATE_ANNOTATION)
    {
        bail!(
            "after {} podinfo-primary runs {primary_image} {primary_annotations:?}, expected {}",
            release.label,
            release.primary_after
        );
    }
    if *weights != (100, 0) {
        bail!(
            "after {} the VirtualService routes {}/{} (primary/canary), expected 100/0",
            release.label,
            weights.0,
            weights.1
        );
    }
    match release.expected {
        Expected::Promotion => Ok(format!(
            "Promoted: podinfo-primary now runs {}",
            release.primary_after
        )),
        Expected::Rollback => {
            let rollback = events
                .iter()
                .find(|e| e.message.contains("failed checks threshold reached"))
                .ok_or_else(|| {
                    anyhow!(
                        "{} failed, but not because its checks failed (no \"failed checks threshold reached\" event)",
                        release.label
                    )
                })?;
            let halts = events
                .iter()
                .filter(|e| e.message.starts_with("Halt "))
                .count();
            Ok(format!(
                "Rolled back after {halts} halted checks ({}): podinfo-primary still runs {}",
                rollback.message, release.primary_after
            ))
        }
    }
}

async fn release(
    screen: &Screen,
    cluster: &Cluster,
    seen: &mut HashMap<String, i64>,
    limits: (i64, i64),
    release: Release,
) -> anyhow::Result<()> {
    screen.heading(&release.heading);
    screen.command(&format!(
        "kubectl -n {NAMESPACE} set image deployment/{NAME} {}={}",
        cluster::CONTAINER,
        release.image
    ));
    for (key, value) in &release.annotations {
        screen.line(format!(
            "  {}",
            console::style(format!(
                "(and the pod-template annotation {key}: \"{value}\", which the simulated mesh obeys)"
            ))
            .dim()
        ));
    }
    let before = cluster.status().await?;
    cluster.release(release.image, &release.annotations).await?;
    let (status, events, took) = follow(
        screen,
        cluster,
        seen,
        release.label,
        limits,
        RELEASE_TIMEOUT,
        release_done(before),
    )
    .await?;
    let (primary_image, primary_annotations) =
        cluster.template_of(&format!("{NAME}-primary")).await?;
    let ending = Ending {
        status,
        events,
        primary_image,
        primary_annotations,
        weights: cluster.weights().await?,
    };
    screen.done(&judge(&release, &ending)?, took);
    Ok(())
}

fn healthy_release() -> Release {
    Release {
        label: "release 1/2",
        heading: format!("Release 1 of 2: {HEALTHY_IMAGE}, a healthy version"),
        image: HEALTHY_IMAGE,
        annotations: BTreeMap::new(),
        expected: Expected::Promotion,
        primary_after: HEALTHY_IMAGE,
    }
}

fn faulty_release() -> Release {
    Release {
        label: "release 2/2",
        heading: format!(
            "Release 2 of 2: {FAULTY_IMAGE}, whose pods answer a third of the requests with HTTP 500"
        ),
        image: FAULTY_IMAGE,
        annotations: BTreeMap::from([(ERROR_RATE_ANNOTATION, FAULTY_ERROR_RATE)]),
        expected: Expected::Rollback,
        primary_after: HEALTHY_IMAGE,
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn event(message: &str) -> EventRow {
        EventRow {
            uid: message.to_owned(),
            type_: "Warning".into(),
            reason: "Synced".into(),
            from: "flagger".into(),
            message: message.to_owned(),
            count: 1,
            first_seen: 0,
            last_seen: 0,
            resource_version: 0,
        }
    }

    fn ending(phase: &str, primary_image: &str, events: &[&str]) -> Ending {
        Ending {
            status: Status {
                phase: phase.into(),
                ..Status::default()
            },
            events: events.iter().map(|m| event(m)).collect(),
            primary_image: primary_image.into(),
            primary_annotations: BTreeMap::new(),
            weights: (100, 0),
        }
    }

    #[test]
    fn the_healthy_release_must_be_promoted() {
        let r = healthy_release();
        assert!(judge(&r, &ending("Succeeded", HEALTHY_IMAGE, &[])).is_ok());
        let err = judge(&r, &ending("Failed", INITIAL_IMAGE, &[])).unwrap_err();
        assert!(err.to_string().contains("expected Succeeded"), "{err}");
        let err = judge(&r, &ending("Succeeded", INITIAL_IMAGE, &[])).unwrap_err();
        assert!(err.to_string().contains("podinfo-primary runs"), "{err}");
        let mut split = ending("Succeeded", HEALTHY_IMAGE, &[]);
        split.weights = (50, 50);
        assert!(judge(&r, &split).is_err());
    }

    #[test]
    fn the_faulty_release_must_be_rolled_back_by_its_failed_checks() {
        let r = faulty_release();
        let rolled_back = [
            "Halt podinfo.test advancement success rate 98.22% < 99%",
            "Halt podinfo.test advancement success rate 97.38% < 99%",
            "Rolling back podinfo.test failed checks threshold reached 2",
        ];
        let verdict = judge(&r, &ending("Failed", HEALTHY_IMAGE, &rolled_back)).unwrap();
        assert!(
            verdict.starts_with("Rolled back after 2 halted checks"),
            "{verdict}"
        );
        // Promoted although it fails a third of its requests.
        let err = judge(&r, &ending("Succeeded", FAULTY_IMAGE, &[])).unwrap_err();
        assert!(err.to_string().contains("expected Failed"), "{err}");
        // Rolled back for another reason (the progress deadline).
        let deadline = ["Rolling back podinfo.test progress deadline exceeded"];
        let err = judge(&r, &ending("Failed", HEALTHY_IMAGE, &deadline)).unwrap_err();
        assert!(
            err.to_string().contains("not because its checks failed"),
            "{err}"
        );
        // The faulty pod template reached the primary.
        let mut leaked = ending("Failed", HEALTHY_IMAGE, &rolled_back);
        leaked
            .primary_annotations
            .insert(ERROR_RATE_ANNOTATION.into(), FAULTY_ERROR_RATE.into());
        assert!(judge(&r, &leaked).is_err());
    }
}
