//! Crash safety (issue 7): the operator is killed with SIGKILL at random moments of four flows —
//! promotion, rollback on failed checks, restart on a change mid-analysis, and a promotion whose
//! primary never becomes ready — and restarted each time. Each flow's outcome (phase, revisions,
//! failed checks, primary image, routes, target replicas) must equal its uninterrupted run, and the
//! reliability invariants (tests/e2e/invariants.rs) must hold on every change of every run.
//!
//! A second test kills the operator right after the promotion's write of the primary, before the
//! status can say `Promoting` (the narrowest window; it found a divergence, now fixed).
//!
//! CI kills 8 times in total (2 per flow). `FLAGGER_KILL_TEST_KILLS=32` runs the full count (a
//! flow that finishes before its share of kills is run again until the share is used);
//! `FLAGGER_KILL_TEST_SEED` replays a run. The results are printed either way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{Cluster, Operator, podinfo, serial};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

const READY: Duration = Duration::from_millis(300);
const NS: &str = "crash";
const V0: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const V1: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
const V2: &str = "ghcr.io/stefanprodan/podinfo:6.0.2";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Promotion,
    Rollback,
    RestartOnChange,
    PromotionFailure,
}

const FLOWS: [Flow; 4] = [
    Flow::Promotion,
    Flow::Rollback,
    Flow::RestartOnChange,
    Flow::PromotionFailure,
];

/// What a user sees once a flow is over.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    phase: String,
    failed_checks: i64,
    last_applied: String,
    last_promoted: String,
    primary_image: String,
    weights: Option<(i64, i64)>,
    target_replicas: Option<i32>,
}

/// A tiny xorshift generator: the kill moments are random but replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `[lo, hi)`.
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(self.next() % span.max(1))
    }
}

fn canary_manifest(flow: Flow, metrics_url: &str) -> Value {
    let mut analysis = json!({"interval": "1s", "threshold": 2, "maxWeight": 50, "stepWeight": 10});
    if flow == Flow::Rollback {
        analysis["metrics"] = json!([{
            "name": "request-success-rate",
            "thresholdRange": {"min": 99},
            "interval": "10s"
        }]);
    }
    let deadline = if flow == Flow::PromotionFailure {
        5
    } else {
        30
    };
    json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "progressDeadlineSeconds": deadline,
            "metricsServer": metrics_url,
            "service": {"port": 9898},
            "analysis": analysis
        }
    })
}

/// The target's new pod template of a flow's (first) change.
async fn change(cluster: &Cluster, image: &str, annotations: Value) {
    let d = cluster.deployment(NS, "podinfo").await.unwrap();
    let mut containers =
        serde_json::to_value(&d.spec.unwrap().template.spec.unwrap().containers).unwrap();
    containers[0]["image"] = json!(image);
    cluster
        .merge_patch_deployment(
            NS,
            "podinfo",
            json!({"spec": {"template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": containers}
            }}}),
        )
        .await;
}

async fn trigger(cluster: &Cluster, flow: Flow) {
    match flow {
        Flow::Promotion | Flow::RestartOnChange => change(cluster, V1, json!({})).await,
        // Half of the canary's requests fail: the success-rate check fails at the first step.
        Flow::Rollback => {
            change(
                cluster,
                V1,
                json!({"testbed.flagger.app/error-rate": "0.5"}),
            )
            .await
        }
        // Healthy as the canary; its pods never become ready once promoted to the primary.
        Flow::PromotionFailure => {
            change(
                cluster,
                V1,
                json!({"testbed.flagger.app/never-ready": "app=podinfo-primary"}),
            )
            .await
        }
    }
}

async fn outcome(cluster: &Cluster) -> Outcome {
    let c = cluster.canary(NS, "podinfo").await.unwrap();
    let s = &c["status"];
    let primary = cluster.deployment(NS, "podinfo-primary").await.unwrap();
    let target = cluster.deployment(NS, "podinfo").await.unwrap();
    Outcome {
        phase: s["phase"].as_str().unwrap_or("").to_owned(),
        failed_checks: s["failedChecks"].as_i64().unwrap_or(0),
        last_applied: s["lastAppliedSpec"].as_str().unwrap_or("").to_owned(),
        last_promoted: s["lastPromotedSpec"].as_str().unwrap_or("").to_owned(),
        primary_image: primary.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default(),
        weights: cluster.vs_weights(NS, "podinfo").await,
        target_replicas: target.spec.unwrap().replicas,
    }
}

struct Run {
    outcome: Outcome,
    kills: usize,
    took: Duration,
}

/// One run of `flow`, killing the operator up to `kills` times at random moments until the flow
/// is over.
async fn run(flow: Flow, kills: usize, rng: &mut Rng) -> Run {
    let cluster = Cluster::start(READY).await;
    cluster.namespace(NS).await;
    cluster.create::<Deployment>(NS, podinfo(NS, V0)).await;
    let mut op = Operator::start(&cluster, &[]).await;
    cluster
        .create_canary(NS, canary_manifest(flow, &cluster.testbed.metrics_url()))
        .await;
    cluster
        .wait_phase(&op, NS, "podinfo", "Initialized", Duration::from_secs(30))
        .await;
    let initial = cluster.canary(NS, "podinfo").await.unwrap()["status"]["lastAppliedSpec"]
        .as_str()
        .unwrap()
        .to_owned();

    let started = Instant::now();
    trigger(&cluster, flow).await;
    // The second change of RestartOnChange, once the analysis has moved traffic.
    let mut second_change_pending = flow == Flow::RestartOnChange;
    // The revision under analysis when the second change came (it must not be the one promoted).
    let mut first_revision = String::new();
    let mut done_kills = 0;
    let mut next_kill =
        Instant::now() + rng.between(Duration::from_millis(50), Duration::from_millis(1500));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = cluster.canary(NS, "podinfo").await.unwrap();
        let status = &c["status"];
        let phase = status["phase"].as_str().unwrap_or("");
        let applied = status["lastAppliedSpec"].as_str().unwrap_or("");
        if second_change_pending && status["canaryWeight"].as_i64().unwrap_or(0) >= 20 {
            first_revision = applied.to_owned();
            change(&cluster, V2, json!({})).await;
            second_change_pending = false;
        }
        let finished = match flow {
            Flow::RestartOnChange => {
                phase == "Succeeded"
                    && !second_change_pending
                    && applied != initial
                    && applied != first_revision
                    && status["lastPromotedSpec"] == applied
            }
            Flow::Promotion => phase == "Succeeded" && applied != initial,
            Flow::Rollback | Flow::PromotionFailure => phase == "Failed",
        };
        if finished {
            break;
        }
        if done_kills < kills && Instant::now() >= next_kill {
            op.kill();
            done_kills += 1;
            op = Operator::start(&cluster, &[]).await;
            next_kill = Instant::now()
                + rng.between(Duration::from_millis(50), Duration::from_millis(1500));
        }
        assert!(
            Instant::now() < deadline,
            "{flow:?} with {done_kills} kills did not finish within 90 s\n{}\nlast operator logs:\n{}",
            cluster.describe(NS, "podinfo").await,
            op.tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let first = outcome(&cluster).await;
    // Nothing moves once the flow is over (no restarted operator redoing a step).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = outcome(&cluster).await;
    assert_eq!(
        first, settled,
        "{flow:?}: the outcome moved after the flow ended"
    );
    let report = cluster.invariants.finish();
    assert!(
        report.violations.is_empty(),
        "{flow:?} with {done_kills} kills broke invariants:\n{}\nlast operator logs:\n{}",
        report
            .violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        op.tail(60)
    );
    Run {
        outcome: settled,
        kills: done_kills,
        took,
    }
}

/// What each uninterrupted flow must end in (besides equalling it under kills).
fn assert_expected(flow: Flow, o: &Outcome) {
    match flow {
        Flow::Promotion | Flow::RestartOnChange => {
            let image = if flow == Flow::Promotion { V1 } else { V2 };
            assert_eq!(o.phase, "Succeeded", "{o:?}");
            assert_eq!(o.primary_image, image, "{o:?}");
            assert_eq!(o.last_applied, o.last_promoted, "{o:?}");
            assert_eq!(o.weights, Some((100, 0)), "{o:?}");
            assert_eq!(o.target_replicas, Some(0), "{o:?}");
        }
        Flow::Rollback => {
            assert_eq!(o.phase, "Failed", "{o:?}");
            assert_eq!(o.failed_checks, 2, "{o:?}");
            assert_eq!(o.primary_image, V0, "{o:?}");
            assert_eq!(o.weights, Some((100, 0)), "{o:?}");
            assert_eq!(o.target_replicas, Some(0), "{o:?}");
        }
        Flow::PromotionFailure => {
            assert_eq!(o.phase, "Failed", "{o:?}");
            assert_eq!(o.primary_image, V1, "{o:?}");
            assert_ne!(o.last_applied, o.last_promoted, "{o:?}");
            assert_eq!(
                o.weights,
                Some((0, 100)),
                "traffic stays on the canary: {o:?}"
            );
            assert_eq!(
                o.target_replicas,
                Some(1),
                "the canary is not scaled down: {o:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_changes_no_outcome() {
    let _serial = serial().await;
    let total: usize = std::env::var("FLAGGER_KILL_TEST_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("FLAGGER_KILL_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("kill test: {total} kills, seed {seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut lines = Vec::new();
    for (i, flow) in FLOWS.iter().copied().enumerate() {
        let share = total / FLOWS.len() + usize::from(i < total % FLOWS.len());
        let clean = run(flow, 0, &mut rng).await;
        assert_expected(flow, &clean.outcome);
        let mut killed = 0;
        let mut rounds = Vec::new();
        while killed < share {
            let r = run(flow, share - killed, &mut rng).await;
            assert_eq!(
                r.outcome, clean.outcome,
                "{flow:?}: the outcome with {} kills differs from the uninterrupted run",
                r.kills
            );
            killed += r.kills;
            rounds.push(r);
            assert!(
                rounds.len() <= share,
                "{flow:?}: {} rounds landed only {killed} of {share} kills",
                rounds.len()
            );
        }
        let line = format!(
            "{flow:?}: uninterrupted {:.1}s -> {} ({} failed checks, weights {:?}); {} kills over {} run(s) taking {} -> same outcome",
            clean.took.as_secs_f64(),
            clean.outcome.phase,
            clean.outcome.failed_checks,
            clean.outcome.weights,
            killed,
            rounds.len(),
            rounds
                .iter()
                .map(|r| format!("{:.1}s/{} kills", r.took.as_secs_f64(), r.kills))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("{line}");
        lines.push(line);
    }
    println!(
        "kill test: {total} kills, seed {seed}, {:.0}s in all\n{}",
        started.elapsed().as_secs_f64(),
        lines.join("\n")
    );
}

/// The narrowest window: SIGKILL as soon as the promotion's write of the primary template is
/// committed, before the operator can persist `Promoting`. The restarted operator must still end
/// each flow as the uninterrupted run does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_the_promotion_write_changes_no_outcome() {
    let _serial = serial().await;
    let mut lines = Vec::new();
    for flow in [Flow::Promotion, Flow::PromotionFailure] {
        let cluster = Cluster::start(READY).await;
        cluster.namespace(NS).await;
        cluster.create::<Deployment>(NS, podinfo(NS, V0)).await;
        let mut op = Operator::start(&cluster, &[]).await;
        cluster
            .create_canary(NS, canary_manifest(flow, &cluster.testbed.metrics_url()))
            .await;
        cluster
            .wait_phase(&op, NS, "podinfo", "Initialized", Duration::from_secs(30))
            .await;
        let mut feed = cluster.testbed.store().subscribe();
        trigger(&cluster, flow).await;
        let promoted = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let e = feed.recv().await.unwrap();
                let o = &e.object;
                if e.resource.plural == "deployments"
                    && o["metadata"]["name"] == "podinfo-primary"
                    && o["spec"]["template"]["spec"]["containers"][0]["image"] == V1
                {
                    return;
                }
            }
        })
        .await;
        op.kill();
        assert!(promoted.is_ok(), "{flow:?}: no promotion within 60 s");
        let phase_at_kill = cluster.phase(NS, "podinfo").await.unwrap_or_default();
        let op = Operator::start(&cluster, &[]).await;
        let final_phase = if flow == Flow::Promotion {
            "Succeeded"
        } else {
            "Failed"
        };
        cluster
            .wait_phase(&op, NS, "podinfo", final_phase, Duration::from_secs(60))
            .await;
        let o = outcome(&cluster).await;
        lines.push(format!(
            "{flow:?}: killed in phase {phase_at_kill} -> {o:?}"
        ));
        println!("{}", lines.last().unwrap());
        assert_expected(flow, &o);
    }
}
