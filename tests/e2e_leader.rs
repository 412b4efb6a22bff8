//! End-to-end test of leader election (issue 7): operators with `--enable-leader-election` against
//! the testbed, a rollout in progress; the leader is SIGKILLed mid-rollout, later the next leader
//! gets SIGTERM. Each time the follower takes over (after the lease expired, respectively at once
//! because the lease was released), it wrote nothing before, and the rollout finishes with every
//! weight step applied once, in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/leader.rs"]
mod leader;

use std::time::{Duration, Instant};

use harness::{Cluster, Operator, canary, podinfo, serial, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use leader::{advance_steps, identity, role, wait_role, writes_by};

const READY: Duration = Duration::from_millis(300);
const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);
const NS: &str = "e2e-leader";

/// When `op` logged `msg` first (not canary-scoped lines).
fn logged_at(op: &Operator, msg: &str) -> Option<Instant> {
    op.logs
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.json["msg"] == msg)
        .map(|l| l.at)
}

/// Log lines of `op` about a canary (`canary` field) before it became leader: a follower runs no
/// CanaryActor.
fn canary_lines_before_leading(op: &Operator) -> Vec<String> {
    let logs = op.logs.lock().unwrap();
    logs.iter()
        .take_while(|l| l.json["msg"] != "Acting as elected leader")
        .filter(|l| l.json.get("canary").is_some())
        .map(|l| l.json.to_string())
        .collect()
}

/// Waits until `next` says it leads; at every sample where it still says `follower` (read after
/// the request stats), asserts it has written nothing. Returns the time from `since` to its
/// "Acting as elected leader" log line.
async fn takeover(cluster: &Cluster, next: &Operator, id: &str, since: Instant) -> Duration {
    let limit = LEASE + RETRY + Duration::from_secs(15);
    loop {
        let writes = writes_by(cluster, id);
        match role(next).await.as_deref() {
            Some("leader") => break,
            Some("follower") => assert!(
                writes.is_empty(),
                "the follower wrote before it took over: {writes:?}"
            ),
            _ => {}
        }
        assert!(
            since.elapsed() < limit,
            "no takeover within {limit:?}\n{}",
            next.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elected = wait_for("the election log line", Duration::from_secs(5), || async {
        logged_at(next, "Acting as elected leader")
    })
    .await;
    elected.duration_since(since)
}

async fn canary_weight(cluster: &Cluster) -> i64 {
    cluster
        .vs_weights(NS, "podinfo")
        .await
        .map(|(_, c)| c)
        .unwrap_or(0)
}

async fn wait_weight(cluster: &Cluster, op: &Operator, at_least: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let w = canary_weight(cluster).await;
        if w >= at_least {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "canary weight stayed at {w} (< {at_least})\n{}\n{}",
            cluster.describe(NS, "podinfo").await,
            op.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lease_holder(cluster: &Cluster) -> Option<String> {
    Api::<Lease>::namespaced(cluster.client.clone(), NS)
        .get("flagger-leader-election")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_mid_rollout_applies_every_step_once() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    cluster.namespace(NS).await;
    cluster
        .create::<Deployment>(NS, podinfo(NS, "ghcr.io/stefanprodan/podinfo:6.0.0"))
        .await;
    let flags = leader::flags(NS, LEASE, RENEW, RETRY);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();

    let mut a = Operator::start(&cluster, &args).await;
    wait_role(&a, "leader", Duration::from_secs(20)).await;
    let mut b = Operator::start(&cluster, &args).await;
    wait_role(&b, "follower", Duration::from_secs(20)).await;
    let (id_a, id_b) = (identity(&a), identity(&b));
    assert_eq!(lease_holder(&cluster).await.as_deref(), Some(id_a.as_str()));

    cluster.create_canary(NS, canary(NS, "1s", 5, 50, 60)).await;
    cluster
        .wait_phase(&a, NS, "podinfo", "Initialized", Duration::from_secs(30))
        .await;
    cluster
        .set_image(NS, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
        .await;
    wait_weight(&cluster, &a, 15).await;

    // The follower keeps its caches warm (it watches) and writes nothing.
    let seen = cluster.testbed.stats().snapshot().by_user_agent_and_request;
    let b_requests = seen
        .iter()
        .find(|(agent, _)| agent.contains(&id_b))
        .map(|(_, r)| r.clone())
        .expect("the follower's requests are in the stats");
    for watch in ["WATCH canaries.flagger.app", "WATCH deployments.apps"] {
        assert!(b_requests.contains_key(watch), "{watch}: {b_requests:?}");
    }
    assert_eq!(writes_by(&cluster, &id_b), Default::default());
    assert!(!writes_by(&cluster, &id_a).is_empty(), "the leader wrote");

    // 1. SIGKILL of the leader mid-rollout: the follower takes over once the lease expired.
    let killed = Instant::now();
    let weight_at_kill = canary_weight(&cluster).await;
    a.kill();
    let took = takeover(&cluster, &b, &id_b, killed).await;
    assert_eq!(canary_lines_before_leading(&b), Vec::<String>::new());
    eprintln!(
        "takeover after SIGKILL of the leader at canary weight {weight_at_kill}: {took:?} \
         (lease {LEASE:?}, retry {RETRY:?})"
    );
    assert!(
        took >= LEASE - RETRY - Duration::from_millis(200),
        "took over before the lease could have expired: {took:?}"
    );
    assert!(
        took <= LEASE + RETRY + Duration::from_secs(2),
        "takeover took {took:?}, lease {LEASE:?}"
    );
    assert_eq!(lease_holder(&cluster).await.as_deref(), Some(id_b.as_str()));
    // The new leader resumes from .status and the mesh: it advances further.
    let resumed = wait_weight(&cluster, &b, weight_at_kill + 10).await;

    // 2. A new follower; SIGTERM of the leader hands over at once (the lease is released).
    let c = Operator::start(&cluster, &args).await;
    wait_role(&c, "follower", Duration::from_secs(20)).await;
    let id_c = identity(&c);
    let weight_at_term = canary_weight(&cluster).await;
    assert!(
        weight_at_term < 50,
        "the rollout must still be in progress (weight {weight_at_term}, resumed at {resumed})"
    );
    let terminated = Instant::now();
    let status = b
        .terminate(Duration::from_secs(15))
        .await
        .expect("the leader exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", b.tail(20));
    let took_term = takeover(&cluster, &c, &id_c, terminated).await;
    assert_eq!(canary_lines_before_leading(&c), Vec::<String>::new());
    eprintln!(
        "takeover after SIGTERM of the leader at canary weight {weight_at_term}: {took_term:?}"
    );
    assert!(
        logged_at(&b, "leader election: released the lease").is_some(),
        "{}",
        b.tail(20)
    );
    assert!(
        took_term < LEASE,
        "a released lease is taken at the next retry, took {took_term:?}"
    );
    assert_eq!(lease_holder(&cluster).await.as_deref(), Some(id_c.as_str()));

    cluster
        .wait_phase(&c, NS, "podinfo", "Succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(cluster.vs_weights(NS, "podinfo").await, Some((100, 0)));
    let primary = cluster.deployment(NS, "podinfo-primary").await.unwrap();
    assert_eq!(
        primary.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("ghcr.io/stefanprodan/podinfo:6.0.1")
    );

    // No weight step applied twice: every "Advance ... canary weight N" once, N increasing.
    let steps = advance_steps(&cluster, NS, "podinfo").await;
    let weights: Vec<u32> = steps.iter().map(|(w, _)| *w).collect();
    for (w, count) in &steps {
        assert_eq!(*count, 1, "weight {w} applied more than once: {steps:?}");
    }
    assert!(
        weights.windows(2).all(|p| p[0] < p[1]),
        "weights repeated or out of order: {weights:?}"
    );
    let expected: Vec<u32> = (1..=10).map(|i| i * 5).collect();
    assert!(weights.iter().all(|w| expected.contains(w)), "{weights:?}");
    // A step's event can only go missing with a process that died right after applying it
    // (events are best effort): at most one per handover.
    let missing: Vec<u32> = expected
        .iter()
        .copied()
        .filter(|w| !weights.contains(w))
        .collect();
    eprintln!("weight steps: {weights:?} (events missing: {missing:?})");
    assert!(missing.len() <= 2, "steps missing: {missing:?}");
    let events = cluster.events(NS, "podinfo").await;
    assert!(
        events
            .iter()
            .any(|(_, m)| m == &format!("Promotion completed! Scaling down podinfo.{NS}")),
        "{events:?}"
    );
}

/// A leader that cannot renew (every PUT fails, so the Lease cannot be renewed) stops its canary
/// actors and exits with an error before its lease can expire, so no other replica can take over
/// while it still acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_and_exits_before_the_lease_expires() {
    let _serial = serial().await;
    let cluster = Cluster::start(READY).await;
    cluster.namespace(NS).await;
    cluster
        .create::<Deployment>(NS, podinfo(NS, "ghcr.io/stefanprodan/podinfo:6.0.0"))
        .await;
    let flags = leader::flags(NS, LEASE, RENEW, RETRY);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut a = Operator::start(&cluster, &args).await;
    wait_role(&a, "leader", Duration::from_secs(20)).await;
    cluster.create_canary(NS, canary(NS, "1s", 5, 50, 60)).await;
    cluster
        .wait_phase(&a, NS, "podinfo", "Initialized", Duration::from_secs(30))
        .await;

    let faulted = Instant::now();
    cluster
        .testbed
        .faults()
        .set(flagger_testbed::faults::FaultConfig {
            error_rate: 1.0,
            error_codes: vec![503],
            verbs: vec!["PUT".into()],
            ..Default::default()
        })
        .unwrap();
    let mut exited = None;
    while faulted.elapsed() < LEASE + Duration::from_secs(10) {
        if let Some(status) = a.wait_exit(Duration::from_millis(10)).await {
            exited = Some((status, jiff::Timestamp::now(), faulted.elapsed()));
            break;
        }
    }
    let (status, exited_at, after) = exited.unwrap_or_else(|| {
        panic!(
            "the leader still runs {:?} after its renewals started failing\n{}",
            faulted.elapsed(),
            a.tail(20)
        )
    });
    cluster.testbed.faults().clear();
    eprintln!(
        "the leader exited {after:?} after its renewals started failing (renew deadline {RENEW:?})"
    );
    assert!(
        !status.success(),
        "losing leadership is an error exit: {status:?}"
    );
    let renewed = Api::<Lease>::namespaced(cluster.client.clone(), NS)
        .get("flagger-leader-election")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.renew_time)
        .expect("the lease was renewed")
        .0;
    let expires = renewed + jiff::SignedDuration::try_from(LEASE).unwrap();
    let stopped_at: jiff::Timestamp = {
        let logs = a.logs.lock().unwrap();
        let line = logs
            .iter()
            .find(|l| l.json["msg"] == "Stopping 1 canary actors")
            .expect("the canary actor was stopped");
        line.json["ts"].as_str().unwrap().parse().unwrap()
    };
    eprintln!(
        "lease last renewed {renewed}: canary actors stopped {:?} and the process exited {:?} \
         before the lease could expire",
        expires.duration_since(stopped_at),
        expires.duration_since(exited_at)
    );
    assert!(
        stopped_at < expires,
        "canary actors stopped at {stopped_at}, the lease could expire at {expires}"
    );
    // The exit itself follows at once (no release, no graceful drain); generous bound on a
    // loaded machine.
    assert!(
        exited_at.duration_since(stopped_at) < jiff::SignedDuration::from_secs(3),
        "exited at {exited_at}, {:?} after stopping the canary actors",
        exited_at.duration_since(stopped_at)
    );
    let stopped = logged_at(&a, "Stopping 1 canary actors").unwrap();
    let lost = logged_at(&a, "Leadership lost").expect("logged the loss");
    assert!(stopped <= lost, "{}", a.tail(20));
}
