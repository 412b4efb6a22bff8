//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Contract:
//! - One Lease (`flagger-leader-election` by default) names the holder. An instance acquires it when
//!   it is absent, released (empty `holderIdentity`), held by itself, or expired. Expiry is judged
//!   as client-go does: by the local monotonic time at which this process last *observed a change*
//!   of the lease record, plus this replica's configured lease duration (replicas share flags;
//!   `leaseDurationSeconds` is written rounded up for other readers), so wall-clock skew between
//!   replicas does not matter.
//! - Writes are only GET, POST (create) and PUT carrying the `resourceVersion` read; a stale write
//!   gets 409 and the next attempt re-reads. `leaderTransitions` grows by one on every takeover.
//! - The leader renews every retry period. If it cannot renew within the renew deadline (counted
//!   from the moment its last successful renewal was *sent*), it steps down; since the renew
//!   deadline is shorter than the lease duration, it stops before any other replica may take over.
//!   [`LeaderHandle::is_leader`] also checks that deadline itself, so a stalled task cannot leave a
//!   stale "leader" answer behind.
//! - Every API call has a timeout shorter than the renew deadline.
//! - On shutdown (the cancellation token) a leader first stops reporting leadership, then releases
//!   the lease (empty holder, 1 s duration) so a follower takes over at its next retry, unless
//!   [`LeaseConfig::release_on_cancel`] is off.
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Name of the Lease, as upstream Flagger.
pub const DEFAULT_LEASE_NAME: &str = "flagger-leader-election";
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// How to elect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity, written to `holderIdentity`.
    pub identity: String,
    /// How long a lease holds without renewal (written as `leaseDurationSeconds`, whole seconds,
    /// rounded up).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down; must be < `lease_duration`.
    pub renew_deadline: Duration,
    /// Interval between acquire/renew attempts; must be < `renew_deadline`.
    pub retry_period: Duration,
    /// Release the lease when the shutdown token is cancelled (true by default).
    pub release_on_cancel: bool,
}

impl LeaseConfig {
    /// Defaults: lease `flagger-leader-election`, identity `<hostname>_<uuid>`, 15 s / 10 s / 2 s.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: DEFAULT_LEASE_NAME.to_string(),
            identity: default_identity(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
            release_on_cancel: true,
        }
    }

    pub fn validate(&self) -> Result<(), LeaderError> {
        let invalid =
            |field: &'static str, reason: String| LeaderError::InvalidConfig { field, reason };
        if self.namespace.is_empty() {
            return Err(invalid("namespace", "must not be empty".into()));
        }
        if self.name.is_empty() {
            return Err(invalid("name", "must not be empty".into()));
        }
        if self.identity.is_empty() {
            return Err(invalid("identity", "must not be empty".into()));
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(invalid(
                "leaseDuration",
                format!("must be at least 1s, got {:?}", self.lease_duration),
            ));
        }
        if self.retry_period.is_zero() {
            return Err(invalid("retryPeriod", "must be greater than 0".into()));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(invalid(
                "renewDeadline",
                format!(
                    "must be shorter than leaseDuration ({:?}), got {:?}",
                    self.lease_duration, self.renew_deadline
                ),
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(invalid(
                "retryPeriod",
                format!(
                    "must be shorter than renewDeadline ({:?}), got {:?}",
                    self.renew_deadline, self.retry_period
                ),
            ));
        }
        Ok(())
    }

    /// Timeout of one API call: short enough that a renewal attempt can be retried before the
    /// renew deadline.
    fn call_timeout(&self) -> Duration {
        (self.renew_deadline / 2).max(self.retry_period)
    }

    fn lease_seconds(&self) -> i32 {
        let ms = self.lease_duration.as_millis();
        i32::try_from(ms.div_ceil(1000)).unwrap_or(i32::MAX)
    }
}

/// `<hostname>_<uuid>`, as upstream.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "flagger".to_string());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("not the leader (current leader: {})", holder.as_deref().unwrap_or("none"))]
    NotLeader { holder: Option<String> },
}

/// What this replica currently is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    Leader,
    /// `holder` is the identity of the current leader as last seen, if any.
    Follower {
        holder: Option<String>,
    },
}

/// Runs the election; see the module docs.
pub struct LeaderElector {
    client: kube::Client,
    config: LeaseConfig,
    shared: Arc<Shared>,
}

impl LeaderElector {
    /// Validates the configuration (errors name the field).
    pub fn new(client: kube::Client, config: LeaseConfig) -> Result<Self, LeaderError> {
        config.validate()?;
        let (tx, _) = watch::channel(Leadership::Follower { holder: None });
        let shared = Arc::new(Shared {
            valid_until: Mutex::new(None),
            tx,
            identity: config.identity.clone(),
            finished: CancellationToken::new(),
        });
        Ok(Self {
            client,
            config,
            shared,
        })
    }

    /// The handle, before the election starts (a follower until [`LeaderElector::spawn`]).
    pub fn handle(&self) -> LeaderHandle {
        LeaderHandle {
            shared: self.shared.clone(),
        }
    }

    /// Starts the election loop on the current tokio runtime. It runs until `shutdown` is
    /// cancelled, then (if leader) releases the lease.
    pub fn spawn(self, shutdown: CancellationToken) -> LeaderHandle {
        let handle = self.handle();
        let task = Task {
            api: Api::namespaced(self.client, &self.config.namespace),
            config: self.config,
            shared: self.shared,
            observed: None,
        };
        tokio::spawn(task.run(shutdown));
        handle
    }
}

struct Shared {
    /// `Some(deadline)` while leader: leadership is only claimed before that instant.
    valid_until: Mutex<Option<Instant>>,
    tx: watch::Sender<Leadership>,
    identity: String,
    finished: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<Instant>> {
        self.valid_until.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Cheap to clone; the view of the election for the rest of the operator.
#[derive(Clone)]
pub struct LeaderHandle {
    shared: Arc<Shared>,
}

impl LeaderHandle {
    /// True only while this replica holds a lease it renewed within the renew deadline.
    pub fn is_leader(&self) -> bool {
        matches!(*self.shared.lock(), Some(until) if Instant::now() < until)
    }

    /// `Ok` while leader; for write paths to check right before writing.
    pub fn guard(&self) -> Result<(), LeaderError> {
        if self.is_leader() {
            return Ok(());
        }
        let holder = match &*self.shared.tx.borrow() {
            Leadership::Follower { holder } => holder.clone(),
            // The deadline passed but the loop has not published the loss yet.
            Leadership::Leader => None,
        };
        Err(LeaderError::NotLeader { holder })
    }

    /// Leadership changes (`Leader` / `Follower{holder}`), starting from the current value.
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.shared.tx.subscribe()
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.shared.identity
    }

    /// Resolves once the election loop has ended (after the release, if any).
    pub async fn finished(&self) {
        self.shared.finished.cancelled().await;
    }
}

/// The part of a lease record whose change resets the expiry clock.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: Option<String>,
    duration_seconds: Option<i32>,
    acquire: Option<MicroTime>,
    renew: Option<MicroTime>,
    transitions: Option<i32>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            duration_seconds: spec.lease_duration_seconds,
            acquire: spec.acquire_time,
            renew: spec.renew_time,
            transitions: spec.lease_transitions,
        }
    }
}

struct Observed {
    record: Record,
    at: Instant,
}

enum Attempt {
    /// We hold the lease; the renewal was sent at this instant.
    Held,
    /// Someone else holds it (or a race was lost).
    Other(Option<String>),
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

struct Task {
    api: Api<Lease>,
    config: LeaseConfig,
    shared: Arc<Shared>,
    observed: Option<Observed>,
}

impl Task {
    async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(
            "Starting leader election id: {} lease: {} namespace: {}",
            self.config.identity,
            self.config.name,
            self.config.namespace
        );
        let mut last_holder: Option<String> = None;
        'outer: loop {
            // Follower: try to acquire every retry period.
            let renewed_at = loop {
                let sent = Instant::now();
                // Shutdown does not wait for a slow attempt (at worst an acquisition is left
                // unreleased, as after a crash).
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => break 'outer,
                    r = self.attempt(self.config.call_timeout()) => r,
                };
                match outcome {
                    Ok(Attempt::Held) => break sent,
                    Ok(Attempt::Other(holder)) => {
                        if holder.is_some() && holder != last_holder {
                            tracing::info!(
                                "Another instance has been elected as leader: {}",
                                holder.as_deref().unwrap_or_default()
                            );
                        }
                        self.publish_follower(holder.clone());
                        last_holder = holder;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "leader election: cannot acquire the lease")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break 'outer,
                    _ = tokio::time::sleep(self.config.retry_period) => {}
                }
            };
            self.set_leader(renewed_at + self.config.renew_deadline);
            tracing::info!("Acting as elected leader");
            last_holder = Some(self.config.identity.clone());

            // Leader: renew every retry period until the renew deadline passes without success.
            let mut deadline = renewed_at + self.config.renew_deadline;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        self.step_down(None);
                        if self.config.release_on_cancel {
                            self.release().await;
                        }
                        break 'outer;
                    }
                    // Wake at the deadline too, so the loss is published on time.
                    _ = tokio::time::sleep_until((Instant::now() + self.config.retry_period).min(deadline)) => {}
                }
                let sent = Instant::now();
                let budget = deadline.saturating_duration_since(sent);
                if budget.is_zero() {
                    tracing::warn!("Leadership lost: renew deadline passed");
                    self.step_down(None);
                    break;
                }
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => {
                        self.step_down(None);
                        if self.config.release_on_cancel {
                            self.release().await;
                        }
                        break 'outer;
                    }
                    r = self.attempt(self.config.call_timeout().min(budget)) => r,
                };
                match outcome {
                    Ok(Attempt::Held) => {
                        deadline = sent + self.config.renew_deadline;
                        self.set_leader(deadline);
                    }
                    Ok(Attempt::Other(holder)) => {
                        tracing::warn!(
                            "Leadership lost: the lease is held by {}",
                            holder.as_deref().unwrap_or("nobody")
                        );
                        self.step_down(holder.clone());
                        last_holder = holder;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "leader election: cannot renew the lease");
                        if Instant::now() >= deadline {
                            tracing::warn!("Leadership lost: renew deadline passed");
                            self.step_down(None);
                            break;
                        }
                    }
                }
            }
        }
        self.shared.finished.cancel();
    }

    fn set_leader(&self, until: Instant) {
        *self.shared.lock() = Some(until);
        self.shared.tx.send_if_modified(|l| {
            let changed = *l != Leadership::Leader;
            *l = Leadership::Leader;
            changed
        });
    }

    fn step_down(&self, holder: Option<String>) {
        *self.shared.lock() = None;
        self.publish_follower(holder);
    }

    fn publish_follower(&self, holder: Option<String>) {
        let next = Leadership::Follower { holder };
        self.shared.tx.send_if_modified(|l| {
            let changed = *l != next;
            *l = next;
            changed
        });
    }

    async fn call<T>(
        limit: Duration,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(CallError::Timeout(limit)),
        }
    }

    /// One acquire-or-renew round: read, decide, write with the read resourceVersion.
    async fn attempt(&mut self, limit: Duration) -> Result<Attempt, CallError> {
        let start = Instant::now();
        let name = self.config.name.clone();
        let current = Self::call(limit, self.api.get_opt(&name)).await?;
        let now = jiff::Timestamp::now();
        let Some(current) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec_for(now, 0, now)),
            };
            let left = limit.saturating_sub(start.elapsed());
            return match Self::call(left, self.api.create(&PostParams::default(), &lease)).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(Attempt::Held)
                }
                Err(CallError::Kube(kube::Error::Api(s))) if s.is_already_exists() => {
                    Ok(Attempt::Other(None))
                }
                Err(e) => Err(e),
            };
        };
        let record = Record::of(&current);
        self.observe(&current);
        let mine = record.holder.as_deref() == Some(self.config.identity.as_str());
        if let Some(holder) = &record.holder
            && !mine
        {
            // Our own lease duration, as client-go: replicas share flags, and the record only
            // holds whole seconds.
            let lease_for = self.config.lease_duration;
            let seen_at = self.observed.as_ref().map(|o| o.at).unwrap_or(start);
            if Instant::now() < seen_at + lease_for {
                return Ok(Attempt::Other(Some(holder.clone())));
            }
        }
        let (acquired, transitions) = if mine {
            (
                record.acquire.as_ref().map(|t| t.0).unwrap_or(now),
                record.transitions.unwrap_or(0),
            )
        } else {
            (now, record.transitions.unwrap_or(0).saturating_add(1))
        };
        let mut next = current;
        next.spec = Some(self.spec_for(acquired, transitions, now));
        let left = limit.saturating_sub(start.elapsed());
        match Self::call(left, self.api.replace(&name, &PostParams::default(), &next)).await {
            Ok(written) => {
                self.observe(&written);
                if !mine {
                    tracing::debug!(transitions, "leader election: took over the lease");
                }
                Ok(Attempt::Held)
            }
            Err(CallError::Kube(kube::Error::Api(s))) if s.is_conflict() => {
                // Someone wrote in between: re-read on the next round.
                Ok(Attempt::Other(record.holder))
            }
            Err(e) => Err(e),
        }
    }

    fn spec_for(
        &self,
        acquired: jiff::Timestamp,
        transitions: i32,
        now: jiff::Timestamp,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_seconds()),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Records the lease; returns whether its record differs from the last one seen.
    fn observe(&mut self, lease: &Lease) -> bool {
        let record = Record::of(lease);
        match &self.observed {
            Some(o) if o.record == record => false,
            _ => {
                self.observed = Some(Observed {
                    record,
                    at: Instant::now(),
                });
                true
            }
        }
    }

    /// Gives the lease up so a follower takes over at its next retry.
    async fn release(&mut self) {
        let limit = self.config.call_timeout();
        let name = self.config.name.clone();
        let result = async {
            let Some(mut lease) = Self::call(limit, self.api.get_opt(&name)).await? else {
                return Ok(false);
            };
            let record = Record::of(&lease);
            if record.holder.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(false);
            }
            let now = MicroTime(jiff::Timestamp::now());
            lease.spec = Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: record.transitions,
                ..Default::default()
            });
            Self::call(
                limit,
                self.api.replace(&name, &PostParams::default(), &lease),
            )
            .await?;
            Ok::<bool, CallError>(true)
        }
        .await;
        match result {
            Ok(true) => tracing::info!("leader election: released the lease"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election: cannot release the lease"),
        }
    }
}
