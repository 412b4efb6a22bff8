//! End-to-end tests of issue 5 (acceptance 2 a–g and 3): the real `flagger` and
//! `flagger-loadtester` binaries as child processes against the in-process testbed, whose mesh
//! answers the Prometheus query API (or, for acceptance 3, a real Prometheus scraping it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/loadtester.rs"]
mod loadtester;
#[path = "e2e/prometheus.rs"]
mod prometheus;
#[path = "e2e/scrape.rs"]
mod scrape;
#[path = "e2e/sinks.rs"]
mod sinks;

use std::time::{Duration, Instant};

use flagger_actors::crd::{AlertProvider, MetricTemplate};
use flagger_testbed::Config;
use harness::{Cluster, Operator, assert_in_order, canary_api, podinfo, serial};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use loadtester::LoadTester;
use prometheus::Prometheus;
use regex::Regex;
use scrape::{Metrics, scrape};
use serde_json::{Value, json};
use sinks::{Sink, slack_texts};

const READY: Duration = Duration::from_millis(300);
const THRESHOLD: u32 = 3;
/// The canary weights of one run (stepWeight 10, maxWeight 50).
const STEPS: [u8; 5] = [10, 20, 30, 40, 50];
const IMAGE_0: &str = "ghcr.io/stefanprodan/podinfo:6.0.0";
const IMAGE_1: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
const IMAGE_2: &str = "ghcr.io/stefanprodan/podinfo:6.0.2";

const INIT_MSG: &str = "New Deployment detected, initialization completed.";
const NEW_REVISION_MSG: &str = "New revision detected, progressing canary analysis.";
const SUCCESS_MSG: &str = "Canary analysis completed successfully, promotion finished.";

/// The seed's metrics: success rate ≥ 99 % (`thresholdRange`) and P99 ≤ 500 ms (the legacy
/// `threshold` form), with windows `window`. The windows are seconds, not the seed's minutes:
/// with a 1 s analysis interval a 1m window would still be averaging the previous run.
fn seed_metrics(window: &str) -> Value {
    json!([
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": window},
        {"name": "request-duration", "threshold": 500, "interval": window}
    ])
}

/// The seed's load-test webhook, aimed at the load tester itself (loopback only): `hey` sends a
/// little load to the tester's `/healthz` in the background.
fn load_test_hook(tester: &LoadTester) -> Value {
    json!({
        "name": "load-test",
        "url": format!("{}/", tester.url),
        "timeout": "5s",
        "metadata": {"cmd": format!("hey -z 2s -q 10 -c 2 {}/healthz", tester.url)}
    })
}

/// The seed's Canary with analysis (interval 1s, step 10, max 50, threshold 3).
fn analysed_canary(ns: &str, metrics: Value, webhooks: Value) -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": ns},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "progressDeadlineSeconds": 30,
            "service": {"port": 9898},
            "analysis": {
                "interval": "1s",
                "threshold": THRESHOLD,
                "maxWeight": 50,
                "stepWeight": 10,
                "metrics": metrics,
                "webhooks": webhooks
            }
        }
    })
}

/// Starts a testbed with podinfo 6.0.0 in `ns`. 100 requests/s per VirtualService, so even a
/// canary at 10 % answers a few errors every second and each 1 s analysis tick sees them.
async fn cluster_with_podinfo(ns: &str) -> Cluster {
    let cluster = Cluster::start_with(Config {
        ready_delay: READY,
        rps: 100,
        ..Config::default()
    })
    .await;
    cluster.namespace(ns).await;
    cluster.create::<Deployment>(ns, podinfo(ns, IMAGE_0)).await;
    cluster
}

/// A new revision: `image`, and pod annotations that set the testbed pods' behaviour.
async fn roll_out(cluster: &Cluster, ns: &str, image: &str, annotations: Value) {
    let d = cluster.deployment(ns, "podinfo").await.unwrap();
    let mut containers =
        serde_json::to_value(&d.spec.unwrap().template.spec.unwrap().containers).unwrap();
    containers[0]["image"] = json!(image);
    cluster
        .merge_patch_deployment(
            ns,
            "podinfo",
            json!({"spec": {"template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": containers}
            }}}),
        )
        .await;
}

/// How a release should end.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// `Succeeded`, never passing through `Failed`.
    Promoted,
    /// `Failed`, never passing through `Succeeded`.
    RolledBack,
}

/// Rolls out `image` (see [`roll_out`]) and waits up to 45 s for the release to end as `outcome`.
async fn release(
    cluster: &Cluster,
    op: &Operator,
    ns: &str,
    image: &str,
    annotations: Value,
    outcome: Outcome,
) -> Seen {
    roll_out(cluster, ns, image, annotations).await;
    let (phase, never) = match outcome {
        Outcome::Promoted => ("Succeeded", "Failed"),
        Outcome::RolledBack => ("Failed", "Succeeded"),
    };
    wait_phase_watching(cluster, op, ns, phase, Some(never), Duration::from_secs(45)).await
}

/// Messages the analysis halted with (each one counts a failed check).
fn halts(messages: &[String]) -> Vec<&String> {
    messages
        .iter()
        .filter(|m| {
            m.starts_with("Halt ")
                || m.starts_with("Prometheus query failed")
                || m.starts_with("Metric query failed")
        })
        .collect()
}

/// What `/metrics` showed while a rollout ran.
#[derive(Debug, Default)]
struct Seen {
    progressing_status: bool,
    /// Canary weights seen, each with the primary weight seen in the same scrape.
    weights: Vec<(f64, f64)>,
    /// Phases in the order observed.
    phases: Vec<Option<String>>,
}

/// Waits for `phase` (for its next occurrence when the canary is in it already), scraping the
/// operator's `/metrics` every 100 ms meanwhile. Panics if the canary passes through `never`
/// once it has left the phase it had when the wait began.
async fn wait_phase_watching(
    cluster: &Cluster,
    op: &Operator,
    ns: &str,
    phase: &str,
    never: Option<&str>,
    timeout: Duration,
) -> Seen {
    let deadline = Instant::now() + timeout;
    let mut seen = Seen::default();
    let initial = cluster.phase(ns, "podinfo").await;
    let mut left_initial = false;
    loop {
        let current = cluster.phase(ns, "podinfo").await;
        left_initial |= current != initial;
        if seen.phases.last() != Some(&current) {
            seen.phases.push(current.clone());
        }
        let m = scrape(op.admin).await;
        let labels = [("name", "podinfo"), ("namespace", ns)];
        if m.value("flagger_canary_status", &labels) == Some(0.0) {
            seen.progressing_status = true;
        }
        let canary = m.value(
            "flagger_canary_weight",
            &[("workload", "podinfo"), ("namespace", ns)],
        );
        let primary = m.value(
            "flagger_canary_weight",
            &[("workload", "podinfo-primary"), ("namespace", ns)],
        );
        if let (Some(c), Some(p)) = (canary, primary)
            && !seen.weights.contains(&(c, p))
        {
            seen.weights.push((c, p));
        }
        if let Some(bad) = never.filter(|_| left_initial) {
            assert_ne!(
                current.as_deref(),
                Some(bad),
                "canary reached {bad}; phases seen {:?}\n{}\nlast operator logs:\n{}",
                seen.phases,
                cluster.describe(ns, "podinfo").await,
                op.tail(60)
            );
        }
        // Waiting for the phase the canary is in already means: for the next time it gets there.
        if current.as_deref() == Some(phase) && (left_initial || initial.as_deref() != Some(phase))
        {
            return seen;
        }
        if Instant::now() > deadline {
            panic!(
                "canary podinfo.{ns} did not reach {phase} within {timeout:?}\n{}\nlast operator logs:\n{}",
                cluster.describe(ns, "podinfo").await,
                op.tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shape upstream's Slack notifier posts (flagger-behavior §6.4).
fn assert_slack_shape(body: &Value, id: &str, color: &str, fields: &[(&str, &str)]) {
    assert_eq!(body["channel"], "releases", "{body}");
    assert_eq!(body["username"], "flagger", "{body}");
    assert_eq!(body["icon_emoji"], ":rocket:", "{body}");
    assert!(body.get("text").is_none(), "no top-level text: {body}");
    let a = &body["attachments"][0];
    assert_eq!(a["author_name"], id, "{body}");
    assert_eq!(a["color"], color, "{body}");
    assert_eq!(a["mrkdwn_in"], json!(["text"]), "{body}");
    let expected: Vec<Value> = fields
        .iter()
        .map(|(t, v)| json!({"title": t, "value": v, "short": false}))
        .collect();
    assert_eq!(a["fields"], json!(expected), "{body}");
}

fn assert_halt_shape(messages: &[String], pattern: &str) -> String {
    let re = Regex::new(pattern).unwrap();
    messages
        .iter()
        .find(|m| re.is_match(m))
        .unwrap_or_else(|| panic!("no message matches {pattern}: {messages:#?}"))
        .clone()
}

/// 2a, 2b, 2d, 2g: the seed's canary promotes (the load tester gets every analysis step), then a
/// revision answering 30 % errors halts with the seed's text and rolls back after the threshold;
/// Slack gets initialization, new revision, success, new revision, failure in order; `/metrics`
/// shows every family through both, and drops the canary's series when it is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_canary_promotes_then_rolls_back_on_errors() {
    let _serial = serial().await;
    let ns = "e2e-analysis";
    let id = format!("podinfo.{ns}");
    let cluster = cluster_with_podinfo(ns).await;
    let slack = Sink::start();
    let tester = LoadTester::start(&[]);
    let slack_url = format!("{}/services/T000/B000/XXX", slack.url);
    let metrics_url = cluster.testbed.metrics_url();
    let op = Operator::start(
        &cluster,
        &[
            "--metrics-server",
            &metrics_url,
            "--slack-url",
            &slack_url,
            "--slack-channel",
            "releases",
            "--slack-user",
            "flagger",
        ],
    )
    .await;
    cluster
        .create_canary(
            ns,
            analysed_canary(ns, seed_metrics("5s"), json!([load_test_hook(&tester)])),
        )
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;
    assert!(
        op.messages(&id)
            .contains(&"all the metrics providers are available!".to_owned()),
        "{:#?}",
        op.messages(&id)
    );
    let m = scrape(op.admin).await;
    let canary_labels = [("name", "podinfo"), ("namespace", ns)];
    assert_eq!(
        m.value(
            "flagger_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("mesh_provider", "istio")
            ]
        ),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(
        m.value("flagger_canary_total", &[("namespace", ns)]),
        Some(1.0)
    );
    assert_eq!(m.value("flagger_canary_status", &canary_labels), Some(1.0));

    // 2a: promotion.
    let seen = release(&cluster, &op, ns, IMAGE_1, json!({}), Outcome::Promoted).await;
    let promotion = op.messages(&id);
    let mut expected = vec![
        format!("New revision detected! Scaling up {id}"),
        format!("Starting canary analysis for {id}"),
    ];
    expected.extend(STEPS.map(|w| format!("Advance {id} canary weight {w}")));
    expected.push(format!(
        "Copying {id} template spec to podinfo-primary.{ns}"
    ));
    expected.push(format!("Promotion completed! Scaling down {id}"));
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_in_order(&promotion, &expected);
    assert_eq!(cluster.image(ns, "podinfo-primary").await, IMAGE_1);
    // The load tester got the rollout hook on every analysis tick after the first (which runs
    // pre-rollout hooks only): one per weight step reached plus one per halted tick.
    let advances = promotion
        .iter()
        .filter(|m| m.starts_with(&format!("Advance {id} canary weight")))
        .count();
    let calls = tester.task_requests();
    assert!(
        calls
            .iter()
            .all(|c| *c == (id.clone(), "Progressing".into(), "rollout".into())),
        "{calls:?}"
    );
    assert_eq!(
        calls.len(),
        advances + halts(&promotion).len(),
        "load tester calls {calls:?} for messages {promotion:#?}"
    );
    assert!(calls.len() >= 2, "{calls:?}");
    // The load itself ran (`hey` against the tester's loopback address).
    assert!(
        tester.logged("command failed").is_empty() && !tester.logged("command finished").is_empty(),
        "load test command: finished {:?}, failed {:?}",
        tester.logged("command finished"),
        tester.logged("command failed")
    );

    // 2g, promotion half.
    assert!(
        seen.progressing_status,
        "flagger_canary_status 0 while progressing"
    );
    for w in STEPS {
        let w = f64::from(w);
        assert!(
            seen.weights.contains(&(w, 100.0 - w)),
            "weights seen: {:?}",
            seen.weights
        );
    }
    let m = scrape(op.admin).await;
    assert_eq!(m.value("flagger_canary_status", &canary_labels), Some(1.0));
    let outcome_labels = |status: &'static str| {
        [
            ("name", "podinfo"),
            ("namespace", ns),
            ("deployment_strategy", "canary"),
            ("analysis_status", status),
        ]
    };
    assert_eq!(
        m.value(
            "flagger_canary_successes_total",
            &outcome_labels("completed")
        ),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(
        m.value(
            "flagger_canary_weight",
            &[("workload", "podinfo"), ("namespace", ns)]
        ),
        Some(0.0)
    );
    assert_eq!(
        m.value(
            "flagger_canary_weight",
            &[("workload", "podinfo-primary"), ("namespace", ns)]
        ),
        Some(100.0)
    );
    let metric = |m: &Metrics, name: &'static str| {
        m.value(
            "flagger_canary_metric_analysis",
            &[("name", "podinfo"), ("namespace", ns), ("metric", name)],
        )
    };
    assert_eq!(metric(&m, "request-success-rate"), Some(100.0));
    let p99 = metric(&m, "request-duration").unwrap();
    assert!(p99 > 0.0 && p99 < 0.5, "P99 in seconds: {p99}");
    assert!(
        m.value("flagger_canary_duration_seconds_count", &canary_labels)
            .unwrap()
            >= 3.0
    );

    // 2b: 30 % errors → halts with the seed's text, rollback after the threshold.
    release(
        &cluster,
        &op,
        ns,
        IMAGE_2,
        json!({"testbed.flagger.app/error-rate": "0.3"}),
        Outcome::RolledBack,
    )
    .await;
    let all = op.messages(&id);
    let rollback = &all[promotion.len()..];
    let halt = assert_halt_shape(
        rollback,
        &format!(r"^Halt {id} advancement success rate \d+\.\d\d% < 99%$"),
    );
    assert_in_order(
        rollback,
        &[
            &format!("New revision detected! Scaling up {id}"),
            &format!("Advance {id} canary weight 10"),
            &halt,
            &format!("Rolling back {id} failed checks threshold reached {THRESHOLD}"),
            &format!("Canary failed! Scaling down {id}"),
        ],
    );
    assert_eq!(halts(rollback).len(), THRESHOLD as usize, "{rollback:#?}");
    let events: Vec<String> = cluster
        .events(ns, "podinfo")
        .await
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert!(events.contains(&halt), "{events:#?}");
    let c = cluster.canary(ns, "podinfo").await.unwrap();
    assert_eq!(c["status"]["failedChecks"], THRESHOLD);
    assert_eq!(cluster.image(ns, "podinfo-primary").await, IMAGE_1);
    assert_eq!(cluster.replicas(ns, "podinfo").await, Some(0));
    assert_eq!(cluster.vs_weights(ns, "podinfo").await, Some((100, 0)));

    // 2g, rollback half: the seed's alert `flagger_canary_status > 1` fires.
    let m = scrape(op.admin).await;
    assert_eq!(m.value("flagger_canary_status", &canary_labels), Some(2.0));
    assert_eq!(
        m.value(
            "flagger_canary_failures_total",
            &outcome_labels("completed")
        ),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(
        m.value(
            "flagger_canary_successes_total",
            &outcome_labels("completed")
        ),
        Some(1.0)
    );
    let rate = metric(&m, "request-success-rate").unwrap();
    assert!(rate < 99.0, "last success rate {rate}");

    // 2d: Slack got, in order, initialization, new revision, success, new revision, failure.
    let failure_msg = format!("Failed checks threshold reached {THRESHOLD}");
    let received = slack
        .wait_until("the failure message", Duration::from_secs(15), |r| {
            slack_texts(r).contains(&failure_msg)
        })
        .await;
    assert_eq!(
        slack_texts(&received),
        vec![
            INIT_MSG.to_owned(),
            NEW_REVISION_MSG.to_owned(),
            SUCCESS_MSG.to_owned(),
            NEW_REVISION_MSG.to_owned(),
            failure_msg,
        ]
    );
    assert!(received.iter().all(|r| r.path == "/services/T000/B000/XXX"));
    let fields = [
        ("Target", format!("Deployment/{id}")),
        ("Failed checks threshold", THRESHOLD.to_string()),
        ("Progress deadline", "30s".to_owned()),
        ("Traffic routing", "Weight step: 10 max: 50".to_owned()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(t, v)| (*t, v.as_str())).collect();
    assert_slack_shape(&received[0].body, &id, "good", &fields);
    assert_slack_shape(&received[1].body, &id, "good", &fields);
    assert_slack_shape(&received[2].body, &id, "good", &[]);
    assert_slack_shape(&received[4].body, &id, "danger", &[]);
    // Secrets stay out of the logs.
    assert!(!op.tail(usize::MAX).contains("T000/B000/XXX"));

    // Series of a deleted canary are removed.
    canary_api(&cluster.client, ns)
        .delete("podinfo", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(op.admin).await;
        let gone = m
            .matching("flagger_canary_status", &canary_labels)
            .is_empty()
            && m.matching("flagger_canary_weight", &[("namespace", ns)])
                .is_empty()
            && m.value("flagger_canary_total", &[("namespace", ns)]) == Some(0.0);
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "series left after delete:\n{}",
            m.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 2c: a canary answering in ~1 s halts with `request duration ... > 500ms` and rolls back;
/// `flagger_canary_metric_analysis` carries the P99 in seconds. The canary's own
/// `spec.metricsServer` is used instead of the (unreachable) global `--metrics-server`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_canary_halts_on_request_duration_and_rolls_back() {
    let _serial = serial().await;
    let ns = "e2e-latency";
    let id = format!("podinfo.{ns}");
    let cluster = cluster_with_podinfo(ns).await;
    let tester = LoadTester::start(&[]);
    let op = Operator::start(&cluster, &["--metrics-server", "http://127.0.0.1:9"]).await;
    let mut canary = analysed_canary(ns, seed_metrics("5s"), json!([load_test_hook(&tester)]));
    canary["spec"]["metricsServer"] = json!(cluster.testbed.metrics_url());
    cluster.create_canary(ns, canary).await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;
    release(
        &cluster,
        &op,
        ns,
        IMAGE_1,
        json!({"testbed.flagger.app/latency-ms": "1000"}),
        Outcome::RolledBack,
    )
    .await;
    let messages = op.messages(&id);
    assert!(
        messages.contains(&"all the metrics providers are available!".to_owned()),
        "{messages:#?}"
    );
    let halt = assert_halt_shape(
        &messages,
        &format!(r"^Halt {id} advancement request duration \d+(\.\d+)?s > 500ms$"),
    );
    assert_in_order(
        &messages,
        &[
            &halt,
            &format!("Rolling back {id} failed checks threshold reached {THRESHOLD}"),
            &format!("Canary failed! Scaling down {id}"),
        ],
    );
    assert_eq!(cluster.image(ns, "podinfo-primary").await, IMAGE_0);
    assert_eq!(cluster.vs_weights(ns, "podinfo").await, Some((100, 0)));
    let m = scrape(op.admin).await;
    let p99 = m
        .value(
            "flagger_canary_metric_analysis",
            &[
                ("name", "podinfo"),
                ("namespace", ns),
                ("metric", "request-duration"),
            ],
        )
        .unwrap();
    assert!((1.0..=2.5).contains(&p99), "P99 in seconds: {p99}");
    assert_eq!(
        m.value(
            "flagger_canary_status",
            &[("name", "podinfo"), ("namespace", ns)]
        ),
        Some(2.0)
    );
}

/// 2e: a `confirm-rollout` gate on the load tester holds a new revision in Waiting (the canary
/// is not even scaled up) until `/gate/open`; then the canary is promoted. Reverting to the old
/// image and releasing the new one again notifies Slack for each release (a revision released a
/// second time is a new occurrence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_rollout_gate_holds_in_waiting_until_opened() {
    let _serial = serial().await;
    let ns = "e2e-gate";
    let id = format!("podinfo.{ns}");
    let cluster = cluster_with_podinfo(ns).await;
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("gates.json");
    let tester = LoadTester::start(&["--gate-state", state_file.to_str().unwrap()]);
    let slack = Sink::start();
    let metrics_url = cluster.testbed.metrics_url();
    let op = Operator::start(
        &cluster,
        &[
            "--metrics-server",
            &metrics_url,
            "--slack-url",
            &slack.url,
            "--slack-channel",
            "releases",
        ],
    )
    .await;
    let gate = json!({
        "name": "gate",
        "type": "confirm-rollout",
        "url": format!("{}/gate/check", tester.url)
    });
    let mut canary = analysed_canary(
        ns,
        seed_metrics("5s"),
        json!([gate, load_test_hook(&tester)]),
    );
    // One step to max weight: this test is about the gate and the releases, not the steps.
    canary["spec"]["analysis"]["stepWeight"] = json!(50);
    cluster.create_canary(ns, canary).await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;
    roll_out(&cluster, ns, IMAGE_1, json!({})).await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Waiting", Duration::from_secs(20))
        .await;
    // Held for several intervals: still Waiting, the canary not scaled up, routes untouched.
    let checks_before = tester.logged("gate check").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cluster.phase(ns, "podinfo").await.as_deref(),
        Some("Waiting")
    );
    assert_eq!(cluster.replicas(ns, "podinfo").await, Some(0));
    assert_eq!(cluster.vs_weights(ns, "podinfo").await, Some((100, 0)));
    assert!(
        tester.logged("gate check").len() >= checks_before + 2,
        "the gate is asked every interval"
    );
    let waiting = format!("Halt {id} advancement waiting for approval gate");
    let messages = op.messages(&id);
    assert!(messages.contains(&waiting), "{messages:#?}");
    assert!(
        !messages
            .iter()
            .any(|m| m.starts_with("New revision detected! Scaling up")),
        "{messages:#?}"
    );

    let (status, _) = tester
        .post("/gate/open", json!({"name": "podinfo", "namespace": ns}))
        .await;
    assert_eq!(status, 202);
    cluster
        .wait_phase(&op, ns, "podinfo", "Succeeded", Duration::from_secs(45))
        .await;
    assert_in_order(
        &op.messages(&id),
        &[
            &waiting,
            "Confirm-rollout check gate passed",
            &format!("New revision detected! Scaling up {id}"),
            &format!("Promotion completed! Scaling down {id}"),
        ],
    );
    assert_eq!(cluster.image(ns, "podinfo-primary").await, IMAGE_1);

    // Revert, then release the same revision again: each release is announced.
    for image in [IMAGE_0, IMAGE_1] {
        release(&cluster, &op, ns, image, json!({}), Outcome::Promoted).await;
        assert_eq!(cluster.image(ns, "podinfo-primary").await, image);
    }
    let expected = [
        INIT_MSG,
        "Canary is waiting for approval.",
        NEW_REVISION_MSG,
        SUCCESS_MSG,
        NEW_REVISION_MSG,
        SUCCESS_MSG,
        NEW_REVISION_MSG,
        SUCCESS_MSG,
    ];
    let received = slack
        .wait_until("three releases", Duration::from_secs(15), |r| {
            slack_texts(r).len() >= expected.len()
        })
        .await;
    assert_eq!(slack_texts(&received), expected);
    // The waiting alert is a warning without metadata fields.
    assert_slack_shape(&received[1].body, &id, "good", &[]);
}

/// 2f: with the metrics server unreachable, initialization warns, every analysis tick is a
/// failed check with a clear event, and the canary is rolled back, never promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_metrics_server_fails_checks_and_never_promotes() {
    let _serial = serial().await;
    let ns = "e2e-nometrics";
    let id = format!("podinfo.{ns}");
    let cluster = cluster_with_podinfo(ns).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let op = Operator::start(&cluster, &["--metrics-server", &closed]).await;
    cluster
        .create_canary(ns, analysed_canary(ns, seed_metrics("5s"), json!([])))
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;
    let messages = op.messages(&id);
    assert!(
        messages.iter().any(|m| m
            == &format!(
                "Error checking metric providers: prometheus not avaiable: running query failed: \
                 request failed: GET {closed}/api/v1/query: error sending request: \
                 client error (Connect): tcp connect error: Connection refused (os error 111)"
            )),
        "{messages:#?}"
    );
    release(&cluster, &op, ns, IMAGE_1, json!({}), Outcome::RolledBack).await;
    let messages = op.messages(&id);
    let failed = halts(&messages);
    assert_eq!(failed.len(), THRESHOLD as usize, "{messages:#?}");
    let re = Regex::new(&format!(
        "^Prometheus query failed: running query failed: request failed: GET {}/api/v1/query: .*Connection refused",
        regex::escape(&closed)
    ))
    .unwrap();
    assert!(failed.iter().all(|m| re.is_match(m)), "{failed:#?}");
    assert!(
        messages.contains(&format!(
            "Rolling back {id} failed checks threshold reached {THRESHOLD}"
        )),
        "{messages:#?}"
    );
    assert!(
        !messages
            .iter()
            .any(|m| m.starts_with("Advance ") && !m.ends_with("canary weight 10")),
        "never advanced past the first step: {messages:#?}"
    );
    let events = cluster.events(ns, "podinfo").await;
    assert!(
        events.iter().any(|(t, m)| t == "Warning" && re.is_match(m)),
        "{events:#?}"
    );
    assert_eq!(cluster.image(ns, "podinfo-primary").await, IMAGE_0);
    assert_eq!(cluster.replicas(ns, "podinfo").await, Some(0));
}

/// 3: the same promotion and rollback with `--metrics-server` at a real Prometheus scraping the
/// testbed's Istio series every second (10 s windows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_and_rollback_against_a_real_prometheus() {
    let _serial = serial().await;
    let started = Instant::now();
    let ns = "e2e-prometheus";
    let id = format!("podinfo.{ns}");
    let cluster = cluster_with_podinfo(ns).await;
    let target = cluster
        .testbed
        .metrics_url()
        .trim_start_matches("http://")
        .to_owned();
    let prometheus = Prometheus::start(&[target]).await;
    prometheus
        .wait_for_data(r#"up{job="testbed"} == 1"#, Duration::from_secs(20))
        .await;
    let tester = LoadTester::start(&[]);
    let op = Operator::start(&cluster, &["--metrics-server", &prometheus.url]).await;
    cluster
        .create_canary(
            ns,
            analysed_canary(ns, seed_metrics("10s"), json!([load_test_hook(&tester)])),
        )
        .await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;
    assert!(
        op.messages(&id)
            .contains(&"all the metrics providers are available!".to_owned())
    );

    release(&cluster, &op, ns, IMAGE_1, json!({}), Outcome::Promoted).await;
    let promotion = op.messages(&id);
    let mut expected: Vec<String> = STEPS
        .map(|w| format!("Advance {id} canary weight {w}"))
        .to_vec();
    expected.push(format!("Promotion completed! Scaling down {id}"));
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_in_order(&promotion, &expected);
    assert_eq!(cluster.image(ns, "podinfo-primary").await, IMAGE_1);
    let m = scrape(op.admin).await;
    let value = m
        .value(
            "flagger_canary_metric_analysis",
            &[
                ("name", "podinfo"),
                ("namespace", ns),
                ("metric", "request-success-rate"),
            ],
        )
        .unwrap();
    assert_eq!(value, 100.0);

    release(
        &cluster,
        &op,
        ns,
        IMAGE_2,
        json!({"testbed.flagger.app/error-rate": "0.3"}),
        Outcome::RolledBack,
    )
    .await;
    let rollback = op.messages(&id)[promotion.len()..].to_vec();
    let halt = assert_halt_shape(
        &rollback,
        &format!(r"^Halt {id} advancement success rate \d+\.\d\d% < 99%$"),
    );
    assert_in_order(
        &rollback,
        &[
            &halt,
            &format!("Rolling back {id} failed checks threshold reached {THRESHOLD}"),
        ],
    );
    assert_eq!(cluster.image(ns, "podinfo-primary").await, IMAGE_1);
    assert_eq!(
        scrape(op.admin).await.value(
            "flagger_canary_status",
            &[("name", "podinfo"), ("namespace", ns)]
        ),
        Some(2.0)
    );
    eprintln!(
        "real-Prometheus promotion and rollback took {:?}",
        started.elapsed()
    );
}

/// The rest of the analysis wiring through one promotion and one manual rollback: a
/// MetricTemplate metric with variables, `pre-rollout`, `confirm-promotion`, `post-rollout` and
/// `rollback` hooks on the load tester, per-canary AlertProviders with severity filtering (one
/// address from a Secret), and `--event-webhook` receiving every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_gates_rollback_hook_alert_providers_and_event_webhook() {
    let _serial = serial().await;
    let ns = "e2e-wiring";
    let id = format!("podinfo.{ns}");
    let cluster = cluster_with_podinfo(ns).await;
    let sink = Sink::start();
    let tester = LoadTester::start(&[]);
    let events_url = format!("{}/events", sink.url);
    let op = Operator::start(
        &cluster,
        &[
            "--metrics-server",
            "http://127.0.0.1:9",
            "--event-webhook",
            &events_url,
        ],
    )
    .await;
    let metrics_url = cluster.testbed.metrics_url();
    cluster
        .create::<MetricTemplate>(
            ns,
            json!({
                "apiVersion": "flagger.app/v1beta1",
                "kind": "MetricTemplate",
                "metadata": {"name": "error-percentage", "namespace": ns},
                "spec": {
                    "provider": {"type": "prometheus", "address": metrics_url},
                    "query": concat!(
                        "100 - sum(rate(istio_requests_total{reporter=\"destination\",",
                        "destination_workload_namespace=\"{{ namespace }}\",",
                        "destination_workload=\"{{ target }}\",",
                        "response_code!~\"{{ variables.failure }}\"}[{{ interval }}]))\n",
                        "/ sum(rate(istio_requests_total{reporter=\"destination\",",
                        "destination_workload_namespace=\"{{- namespace -}}\",",
                        "destination_workload=\"{{ target }}\"}[{{ interval }}])) * 100"
                    )
                }
            }),
        )
        .await;
    cluster
        .create::<Secret>(
            ns,
            json!({
                "metadata": {"name": "on-call-url", "namespace": ns},
                "stringData": {"address": format!("{}/on-call", sink.url)}
            }),
        )
        .await;
    for (name, spec) in [
        (
            "on-call",
            json!({"type": "slack", "channel": "on-call", "secretRef": {"name": "on-call-url"}}),
        ),
        (
            "team",
            json!({"type": "slack", "address": format!("{}/team", sink.url)}),
        ),
    ] {
        cluster
            .create::<AlertProvider>(
                ns,
                json!({
                    "apiVersion": "flagger.app/v1beta1",
                    "kind": "AlertProvider",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": spec
                }),
            )
            .await;
    }
    let hook = |name: &str, hook_type: &str, path: &str| json!({"name": name, "type": hook_type, "url": format!("{}{path}", tester.url)});
    let mut canary = analysed_canary(
        ns,
        json!([{
            "name": "error-percentage",
            "templateRef": {"name": "error-percentage"},
            "templateVariables": {"failure": "5.*"},
            "thresholdRange": {"max": 1},
            "interval": "5s"
        }]),
        json!([
            hook("pre", "pre-rollout", "/gate/approve"),
            load_test_hook(&tester),
            hook("promote", "confirm-promotion", "/gate/check"),
            hook("post", "post-rollout", "/gate/approve"),
            hook("rb", "rollback", "/rollback/check"),
        ]),
    );
    canary["spec"]["analysis"]["alerts"] = json!([
        {"name": "on-call", "severity": "warn", "providerRef": {"name": "on-call"}},
        {"name": "team", "severity": "info", "providerRef": {"name": "team", "namespace": ns}}
    ]);
    cluster.create_canary(ns, canary).await;
    cluster
        .wait_phase(&op, ns, "podinfo", "Initialized", Duration::from_secs(20))
        .await;
    assert!(
        op.messages(&id)
            .contains(&"all the metrics providers are available!".to_owned()),
        "the template's own provider is checked, not --metrics-server: {:#?}",
        op.messages(&id)
    );

    // Promotion held at max weight by confirm-promotion, then approved.
    roll_out(&cluster, ns, IMAGE_1, json!({})).await;
    cluster
        .wait_phase(
            &op,
            ns,
            "podinfo",
            "WaitingPromotion",
            Duration::from_secs(30),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        cluster.phase(ns, "podinfo").await.as_deref(),
        Some("WaitingPromotion")
    );
    assert_eq!(cluster.vs_weights(ns, "podinfo").await, Some((50, 50)));
    assert_eq!(cluster.image(ns, "podinfo-primary").await, IMAGE_0);
    let (status, _) = tester
        .post("/gate/open", json!({"name": "podinfo", "namespace": ns}))
        .await;
    assert_eq!(status, 202);
    cluster
        .wait_phase(&op, ns, "podinfo", "Succeeded", Duration::from_secs(30))
        .await;
    let promotion = op.messages(&id);
    assert_in_order(
        &promotion,
        &[
            &format!("Starting canary analysis for {id}"),
            "Pre-rollout check pre passed",
            &format!("Advance {id} canary weight 10"),
            &format!("Advance {id} canary weight 50"),
            &format!("Halt {id} advancement waiting for promotion approval promote"),
            "Confirm-promotion check promote passed",
            &format!("Copying {id} template spec to podinfo-primary.{ns}"),
            // Upstream runs post-rollout hooks before recording the completion.
            "Post-rollout check post passed",
            &format!("Promotion completed! Scaling down {id}"),
        ],
    );
    assert!(
        promotion
            .iter()
            .any(|m| m == "Rollback hook rb not signaling a rollback"),
        "{promotion:#?}"
    );
    assert!(
        halts(&promotion).iter().all(|m| m
            .starts_with("Halt advancement no values found for custom metric: ")
            || m.contains("waiting for promotion approval")),
        "only the first check may lack data: {promotion:#?}"
    );
    assert_eq!(
        scrape(op.admin).await.value(
            "flagger_canary_metric_analysis",
            &[
                ("name", "podinfo"),
                ("namespace", ns),
                ("metric", "error-percentage")
            ]
        ),
        Some(0.0)
    );

    // The rollback hook fires once the load tester's rollback gate is opened.
    roll_out(&cluster, ns, IMAGE_2, json!({})).await;
    wait_for_canary_weight(&cluster, ns, 20).await;
    let (status, _) = tester
        .post(
            "/rollback/open",
            json!({"name": "podinfo", "namespace": ns}),
        )
        .await;
    assert_eq!(status, 202);
    cluster
        .wait_phase(&op, ns, "podinfo", "Failed", Duration::from_secs(30))
        .await;
    let rollback = op.messages(&id)[promotion.len()..].to_vec();
    assert_in_order(
        &rollback,
        &[
            "Rollback check rb passed",
            &format!("Rolling back {id} manual webhook invoked"),
            &format!("Canary failed! Scaling down {id}"),
            "Post-rollout check post passed",
        ],
    );
    assert_eq!(cluster.image(ns, "podinfo-primary").await, IMAGE_1);
    assert_eq!(cluster.vs_weights(ns, "podinfo").await, Some((100, 0)));

    // Alerts: `info` gets everything, `warn` only warnings and errors.
    let received = sink
        .wait_until("the manual rollback alert", Duration::from_secs(15), |r| {
            r.iter().any(|r| {
                r.path == "/on-call"
                    && r.body["attachments"][0]["text"] == "Rolling back manual webhook invoked"
            })
        })
        .await;
    let texts_at = |path: &str| {
        slack_texts(
            &received
                .iter()
                .filter(|r| r.path == path)
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        texts_at("/on-call"),
        vec![
            "Canary promotion is waiting for approval.".to_owned(),
            "Rolling back manual webhook invoked".to_owned(),
        ]
    );
    assert_eq!(
        texts_at("/team"),
        vec![
            INIT_MSG.to_owned(),
            NEW_REVISION_MSG.to_owned(),
            "Canary promotion is waiting for approval.".to_owned(),
            SUCCESS_MSG.to_owned(),
            NEW_REVISION_MSG.to_owned(),
            "Rolling back manual webhook invoked".to_owned(),
        ]
    );
    let on_call = received.iter().find(|r| r.path == "/on-call").unwrap();
    assert_eq!(on_call.body["channel"], "on-call");
    assert_eq!(on_call.body["username"], "flagger");
    let team = received.iter().find(|r| r.path == "/team").unwrap();
    assert_eq!(team.body["channel"], "general");

    // The event webhook got every event, with upstream's payload.
    let events: Vec<Value> = received
        .iter()
        .filter(|r| r.path == "/events")
        .map(|r| r.body.clone())
        .collect();
    for e in &events {
        assert_eq!(e["name"], "podinfo", "{e}");
        assert_eq!(e["namespace"], ns, "{e}");
        assert_eq!(e["type"], "event", "{e}");
        assert!(e["checksum"].as_str().is_some_and(|c| !c.is_empty()), "{e}");
        assert!(e["phase"].as_str().is_some(), "{e}");
        assert!(
            matches!(
                e["metadata"]["eventType"].as_str(),
                Some("Normal" | "Warning")
            ),
            "{e}"
        );
        assert!(
            e["metadata"]["timestamp"]
                .as_str()
                .is_some_and(|t| t.parse::<i64>().is_ok()),
            "{e}"
        );
    }
    let forwarded: Vec<&str> = events
        .iter()
        .filter_map(|e| e["metadata"]["eventMessage"].as_str())
        .collect();
    for (_, message) in cluster.events(ns, "podinfo").await {
        assert!(
            forwarded.contains(&message.as_str()),
            "event {message:?} not forwarded; forwarded: {forwarded:#?}"
        );
    }
    // Webhook and alert addresses are secrets: never in the operator's logs or events.
    let logs = op.tail(usize::MAX);
    let recorded: Vec<String> = cluster
        .events(ns, "podinfo")
        .await
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    for secret in [
        events_url.clone(),
        format!("{}/on-call", sink.url),
        format!("{}/team", sink.url),
    ] {
        assert!(!logs.contains(&secret), "{secret} in the logs");
        assert!(
            !recorded.iter().any(|m| m.contains(&secret)),
            "{secret} in an event"
        );
    }
    let rolled_back = events
        .iter()
        .find(|e| e["metadata"]["eventMessage"] == format!("Canary failed! Scaling down {id}"))
        .unwrap();
    assert_eq!(rolled_back["phase"], "Failed");
    assert_eq!(rolled_back["metadata"]["eventType"], "Warning");
}

async fn wait_for_canary_weight(cluster: &Cluster, ns: &str, at_least: i64) {
    harness::wait_for(
        &format!("canary weight {at_least}"),
        Duration::from_secs(30),
        || async move {
            let (_, canary) = cluster.vs_weights(ns, "podinfo").await?;
            (canary >= at_least).then_some(())
        },
    )
    .await;
}
