//! Lease-based leader election against the in-process testbed: one leader at a time, takeover
//! after a crash (within lease duration + retry period) and after a graceful release (within about
//! a retry period), stepping down before the lease can expire when the API fails, config validation
//! and `leaseTransitions`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flagger_actors::leader::{
    DEFAULT_LEASE_NAME, LeaderElector, LeaderError, LeaderHandle, Leadership, LeaseConfig,
};
use flagger_testbed::faults::FaultConfig;
use flagger_testbed::{Config, Testbed};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_millis(1500);
const RENEW: Duration = Duration::from_millis(1000);
const RETRY: Duration = Duration::from_millis(200);

async fn testbed() -> Testbed {
    Testbed::start(Config {
        rps: 0,
        controllers: false,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn config(identity: &str, release_on_cancel: bool) -> LeaseConfig {
    LeaseConfig {
        identity: identity.to_string(),
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
        release_on_cancel,
        ..LeaseConfig::new("kube-system")
    }
}

struct Replica {
    handle: LeaderHandle,
    stop: CancellationToken,
}

fn start(client: kube::Client, identity: &str, release_on_cancel: bool) -> Replica {
    let stop = CancellationToken::new();
    let handle = LeaderElector::new(client, config(identity, release_on_cancel))
        .unwrap()
        .spawn(stop.clone());
    Replica { handle, stop }
}

/// Polls every 5 ms until `cond` holds, failing after `limit`; asserts at every sample that
/// `a` and `b` are never leaders at once. Returns the time it took.
async fn wait_for(
    a: &LeaderHandle,
    b: &LeaderHandle,
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        assert!(
            !(a.is_leader() && b.is_leader()),
            "{what}: both replicas claim leadership"
        );
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Samples for `period`, asserting that `a` and `b` never lead at once and leadership does not move.
async fn hold(a: &LeaderHandle, b: &LeaderHandle, period: Duration, what: &str) {
    let (la, lb) = (a.is_leader(), b.is_leader());
    let start = Instant::now();
    while start.elapsed() < period {
        assert!(
            !(a.is_leader() && b.is_leader()),
            "{what}: both replicas claim leadership"
        );
        assert_eq!(
            (a.is_leader(), b.is_leader()),
            (la, lb),
            "{what}: leadership moved"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn lease(tb: &Testbed) -> Lease {
    Api::<Lease>::namespaced(tb.client().unwrap(), "kube-system")
        .get(DEFAULT_LEASE_NAME)
        .await
        .unwrap()
}

fn holder(l: &Lease) -> Option<String> {
    l.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

fn transitions(l: &Lease) -> i32 {
    l.spec.as_ref().and_then(|s| s.lease_transitions).unwrap()
}

/// Starts two replicas and waits until exactly one leads; returns (leader, follower).
async fn elect(tb: &Testbed, release_on_cancel: bool) -> (Replica, Replica, &'static str) {
    let a = start(tb.client().unwrap(), "a", release_on_cancel);
    let b = start(tb.client().unwrap(), "b", release_on_cancel);
    wait_for(
        &a.handle,
        &b.handle,
        Duration::from_secs(3),
        "first election",
        || a.handle.is_leader() || b.handle.is_leader(),
    )
    .await;
    // Hold for several renewals (longer than the lease): exactly one leader, always the same.
    let first = a.handle.is_leader();
    hold(&a.handle, &b.handle, LEASE + RETRY, "steady state").await;
    assert_ne!(
        a.handle.is_leader(),
        b.handle.is_leader(),
        "exactly one leader"
    );
    if first { (a, b, "a") } else { (b, a, "b") }
}

#[tokio::test]
async fn exactly_one_leads_and_a_crashed_leader_is_replaced_after_the_lease_expires() {
    let tb = testbed().await;
    let (leader, follower, name) = elect(&tb, false).await;
    let l = lease(&tb).await;
    assert_eq!(holder(&l).as_deref(), Some(name));
    assert_eq!(transitions(&l), 0, "the first holder created the lease");
    assert_eq!(
        *follower.handle.subscribe().borrow(),
        Leadership::Follower {
            holder: Some(name.to_string())
        }
    );
    let err = follower.handle.guard().unwrap_err();
    assert!(err.to_string().contains(name), "{err}");
    leader.handle.guard().unwrap();

    // SIGKILL: the loop ends without releasing the lease.
    leader.stop.cancel();
    leader.handle.finished().await;
    assert!(!leader.handle.is_leader());
    let took = wait_for(
        &leader.handle,
        &follower.handle,
        LEASE + RETRY + Duration::from_millis(500),
        "takeover after a crash",
        || follower.handle.is_leader(),
    )
    .await;
    eprintln!("takeover after crash: {took:?}");
    // The follower must have waited for the lease to expire (it last saw a renewal at most one
    // retry period before the crash).
    assert!(
        took >= LEASE - RETRY - Duration::from_millis(100),
        "took over too early: {took:?}"
    );
    let l = lease(&tb).await;
    assert_ne!(holder(&l).as_deref(), Some(name));
    assert_eq!(transitions(&l), 1, "one takeover");
    follower.stop.cancel();
    follower.handle.finished().await;
}

#[tokio::test]
async fn graceful_release_hands_over_within_a_retry_period() {
    let tb = testbed().await;
    let (leader, follower, name) = elect(&tb, true).await;
    let mut seen = follower.handle.subscribe();
    leader.stop.cancel();
    leader.handle.finished().await;
    assert!(!leader.handle.is_leader());
    let took = wait_for(
        &leader.handle,
        &follower.handle,
        RETRY + Duration::from_millis(400),
        "takeover after release",
        || follower.handle.is_leader(),
    )
    .await;
    eprintln!("takeover after release: {took:?}");
    seen.changed().await.unwrap();
    assert_eq!(*seen.borrow_and_update(), Leadership::Leader);
    let l = lease(&tb).await;
    assert_ne!(holder(&l).as_deref(), Some(name));
    assert_eq!(transitions(&l), 1);

    // And back: a third replica takes over from the second after its release.
    let third = start(tb.client().unwrap(), "c", true);
    follower.stop.cancel();
    follower.handle.finished().await;
    wait_for(
        &follower.handle,
        &third.handle,
        RETRY + Duration::from_millis(400),
        "second takeover after release",
        || third.handle.is_leader(),
    )
    .await;
    assert_eq!(transitions(&lease(&tb).await), 2, "two takeovers");
    third.stop.cancel();
    third.handle.finished().await;
    // Released: nobody holds it.
    assert_eq!(holder(&lease(&tb).await), None);
}

#[tokio::test]
async fn a_leader_that_cannot_reach_the_api_steps_down_before_the_lease_expires() {
    let tb = testbed().await;
    let (leader, follower, _) = elect(&tb, true).await;
    let mut seen = leader.handle.subscribe();
    assert_eq!(*seen.borrow_and_update(), Leadership::Leader);

    tb.faults()
        .set(FaultConfig {
            error_rate: 1.0,
            error_codes: vec![503],
            ..Default::default()
        })
        .unwrap();
    let outage = Instant::now();
    let stepped = wait_for(&leader.handle, &follower.handle, LEASE, "step down", || {
        !leader.handle.is_leader()
    })
    .await;
    eprintln!("stepped down {stepped:?} after the API started failing");
    assert!(stepped <= RENEW + Duration::from_millis(50), "{stepped:?}");
    assert!(leader.handle.guard().is_err());
    // The loss is published to subscribers too (the operator stops canary actors on it).
    tokio::time::timeout(Duration::from_millis(200), seen.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(*seen.borrow(), Leadership::Follower { .. }));
    // While the API fails nobody may lead, well past the lease duration.
    wait_for(
        &leader.handle,
        &follower.handle,
        LEASE + Duration::from_millis(500),
        "outage",
        || {
            assert!(!leader.handle.is_leader() && !follower.handle.is_leader());
            outage.elapsed() > LEASE + Duration::from_millis(300)
        },
    )
    .await;

    tb.faults().clear();
    wait_for(
        &leader.handle,
        &follower.handle,
        LEASE + RETRY + Duration::from_millis(500),
        "recovery",
        || leader.handle.is_leader() || follower.handle.is_leader(),
    )
    .await;
    leader.stop.cancel();
    follower.stop.cancel();
    leader.handle.finished().await;
    follower.handle.finished().await;
}

/// A TCP proxy to the testbed that can black-hole traffic: once partitioned, bytes stop flowing
/// in both directions and new connections hang (so API calls time out rather than fail fast).
struct Proxy {
    addr: std::net::SocketAddr,
    partitioned: Arc<AtomicBool>,
}

async fn proxy(upstream: std::net::SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let partitioned = Arc::new(AtomicBool::new(false));
    let flag = partitioned.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let flag = flag.clone();
            tokio::spawn(async move {
                let Ok(up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                let _ = tokio::join!(pump(dr, uw, flag.clone()), pump(ur, dw, flag));
            });
        }
    });
    Proxy { addr, partitioned }
}

/// Copies bytes one way, swallowing them while partitioned.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    flag: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if !flag.load(Ordering::SeqCst) {
            w.write_all(&buf[..n]).await?;
        }
    }
}

#[tokio::test]
async fn a_partitioned_leader_steps_down_before_the_other_takes_over() {
    let tb = testbed().await;
    let upstream: std::net::SocketAddr =
        tb.api_url().trim_start_matches("http://").parse().unwrap();
    let p = proxy(upstream).await;
    let cut_off = kube::Client::try_from(kube::Config::new(
        format!("http://{}", p.addr).parse().unwrap(),
    ))
    .unwrap();
    // "a" talks through the proxy and starts first, so it leads.
    let a = start(cut_off, "a", true);
    let started = Instant::now();
    while !a.handle.is_leader() {
        assert!(started.elapsed() < Duration::from_secs(3), "a never led");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let b = start(tb.client().unwrap(), "b", true);
    hold(&a.handle, &b.handle, Duration::from_millis(600), "steady").await;
    assert!(a.handle.is_leader());

    p.partitioned.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    let mut a_lost = None;
    let mut b_won = None;
    wait_for(
        &a.handle,
        &b.handle,
        LEASE + RETRY + Duration::from_millis(800),
        "failover",
        || {
            if a_lost.is_none() && !a.handle.is_leader() {
                a_lost = Some(cut.elapsed());
            }
            if b_won.is_none() && b.handle.is_leader() {
                b_won = Some(cut.elapsed());
            }
            b_won.is_some()
        },
    )
    .await;
    let (a_lost, b_won) = (a_lost.unwrap(), b_won.unwrap());
    eprintln!("partition: a stepped down after {a_lost:?}, b took over after {b_won:?}");
    assert!(a_lost <= RENEW + Duration::from_millis(50), "{a_lost:?}");
    assert!(b_won > a_lost);
    assert_eq!(holder(&lease(&tb).await).as_deref(), Some("b"));
    a.stop.cancel();
    b.stop.cancel();
    b.handle.finished().await;
}

type Mutate = Box<dyn Fn(&mut LeaseConfig)>;

#[tokio::test]
async fn invalid_configuration_is_rejected_naming_the_field() {
    // Never contacted: construction fails before any request.
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let cases: Vec<(&str, Mutate)> = vec![
        (
            "renewDeadline",
            Box::new(|c| c.renew_deadline = c.lease_duration),
        ),
        (
            "renewDeadline",
            Box::new(|c| c.renew_deadline = Duration::from_secs(20)),
        ),
        (
            "retryPeriod",
            Box::new(|c| c.retry_period = c.renew_deadline),
        ),
        ("retryPeriod", Box::new(|c| c.retry_period = Duration::ZERO)),
        (
            "leaseDuration",
            Box::new(|c| c.lease_duration = Duration::from_millis(500)),
        ),
        ("identity", Box::new(|c| c.identity.clear())),
        ("namespace", Box::new(|c| c.namespace.clear())),
        ("name", Box::new(|c| c.name.clear())),
    ];
    for (field, mutate) in cases {
        let mut c = LeaseConfig::new("kube-system");
        mutate(&mut c);
        match LeaderElector::new(client.clone(), c) {
            Err(e @ LeaderError::InvalidConfig { .. }) => {
                assert!(e.to_string().contains(field), "{field}: {e}");
            }
            Err(e) => panic!("{field}: unexpected error {e}"),
            Ok(_) => panic!("{field}: accepted"),
        }
    }
    let defaults = LeaseConfig::new("kube-system");
    assert_eq!(defaults.name, "flagger-leader-election");
    assert_eq!(
        (
            defaults.lease_duration,
            defaults.renew_deadline,
            defaults.retry_period
        ),
        (
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(2)
        )
    );
    let (host, id) = defaults.identity.rsplit_once('_').unwrap();
    assert!(!host.is_empty());
    assert!(uuid_like(id), "{}", defaults.identity);
    LeaderElector::new(client, defaults).unwrap();
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}
