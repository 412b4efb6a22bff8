//! The NotifierActor: chat notifications (flagger-behavior §6).
//!
//! Contract:
//! - [`Notify`] is fire and forget: the handler only formats and queues, so a notification can
//!   never block or fail a rollout. Delivery errors are logged (`alert provider <label> send
//!   error: ...`) and dropped.
//! - Destinations: the canary's resolved `analysis.alerts` (filtered by severity: `info` → all,
//!   `warn` → warn + error, `error` → error only), or, for canaries without alerts, the global
//!   notifier from the flags (every severity).
//! - Per destination URL at most one message per [`NotifierConfig::min_interval`] (1 s); messages
//!   wait in a bounded queue ([`NotifierConfig::queue_capacity`]); when it is full the oldest
//!   waiting message is dropped with a log line.
//! - The same message for the same occurrence (see [`Notify::occurrence`]) is sent once per
//!   destination, so a transition retried after a failed status write does not notify twice.
//! - Webhook URLs, tokens and proxy URLs are [`SecretString`]s; logs and errors name a
//!   destination only by its label (`global slack`, `alertprovider on-call.test`).

pub mod discord;
pub mod gchat;
pub mod generic;
pub mod rocket;
pub mod slack;
pub mod teams;

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::str::FromStr;
use std::time::Duration;

use actix::{Actor, Context, Handler, Message};
use flagger_rollout::Severity;
use tracing::{debug, info, warn};

use crate::crd::alert_provider::{AlertProviderSpec, AlertProviderType};
use crate::http::{ClientOptions, HttpClients, describe_error};
use crate::key::CanaryKey;
use crate::secret::SecretString;

/// A chat system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatKind {
    Slack,
    MsTeams,
    Discord,
    Rocket,
    GChat,
    /// Plain JSON ([`generic`]); not an upstream AlertProvider type.
    Generic,
}

impl ChatKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::MsTeams => "msteams",
            Self::Discord => "discord",
            Self::Rocket => "rocket",
            Self::GChat => "gchat",
            Self::Generic => "generic",
        }
    }
}

impl fmt::Display for ChatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<AlertProviderType> for ChatKind {
    fn from(t: AlertProviderType) -> Self {
        match t {
            AlertProviderType::Slack => Self::Slack,
            AlertProviderType::MsTeams => Self::MsTeams,
            AlertProviderType::Discord => Self::Discord,
            AlertProviderType::Rocket => Self::Rocket,
            AlertProviderType::GChat => Self::GChat,
        }
    }
}

impl FromStr for ChatKind {
    type Err = NotifierError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "generic" {
            return Ok(Self::Generic);
        }
        s.parse::<AlertProviderType>()
            .map(Self::from)
            .map_err(|e| NotifierError::Config(format!("{e}, generic")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifierError {
    #[error("{0}")]
    Config(String),
}

/// Where messages go. `Debug` never shows the address, token or proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub kind: ChatKind,
    pub address: SecretString,
    /// Slack/Discord/Rocket channel.
    pub channel: String,
    pub username: String,
    pub proxy: Option<SecretString>,
    /// `Authorization: Bearer <token>` (Slack bot tokens).
    pub token: Option<SecretString>,
    /// Names the destination in logs (`global slack`, `alertprovider on-call.test`).
    pub label: String,
}

impl Destination {
    /// A resolved `AlertProvider` `name`.`namespace`. `secret` is the data of its `secretRef`
    /// Secret (keys `address`, mandatory, and `token`), read by the caller.
    pub fn from_alert_provider(
        name: &str,
        namespace: &str,
        spec: &AlertProviderSpec,
        secret: Option<&BTreeMap<String, SecretString>>,
    ) -> Result<Self, NotifierError> {
        let label = format!("alertprovider {name}.{namespace}");
        let kind = ChatKind::from(
            spec.kind()
                .map_err(|e| NotifierError::Config(format!("{label}: {e}")))?,
        );
        let (address, token) = match (&spec.secret_ref, secret) {
            (Some(_), Some(data)) => (
                data.get("address")
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .ok_or_else(|| {
                        NotifierError::Config(format!("{label}: secret has no key \"address\""))
                    })?,
                data.get("token").filter(|t| !t.is_empty()).cloned(),
            ),
            (Some(_), None) => {
                return Err(NotifierError::Config(format!(
                    "{label}: secretRef is set but its Secret was not provided"
                )));
            }
            (None, _) => (
                spec.address
                    .clone()
                    .filter(|a| !a.is_empty())
                    .map(SecretString::new)
                    .ok_or_else(|| {
                        NotifierError::Config(format!("{label}: neither address nor secretRef set"))
                    })?,
                None,
            ),
        };
        let dest = Self {
            kind,
            address,
            channel: spec
                .channel
                .clone()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "general".into()),
            username: spec
                .username
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "flagger".into()),
            proxy: spec
                .proxy
                .clone()
                .filter(|p| !p.is_empty())
                .map(SecretString::new),
            token,
            label,
        };
        dest.validate()?;
        Ok(dest)
    }

    /// The global notifier from the flags (§6.1): Slack when `slack_url` is set (a channel is
    /// required), otherwise MS Teams when `msteams_url` is set, otherwise none.
    #[allow(clippy::too_many_arguments)]
    pub fn global_from_flags(
        slack_url: Option<SecretString>,
        slack_token: Option<SecretString>,
        slack_channel: Option<String>,
        slack_user: Option<String>,
        slack_proxy: Option<SecretString>,
        msteams_url: Option<SecretString>,
        msteams_proxy: Option<SecretString>,
    ) -> Result<Option<Self>, NotifierError> {
        if let Some(url) = slack_url.filter(|u| !u.is_empty()) {
            let channel = slack_channel
                .filter(|c| !c.is_empty())
                .ok_or_else(|| NotifierError::Config("Notifier empty Slack channel".into()))?;
            let dest = Self {
                kind: ChatKind::Slack,
                address: url,
                channel,
                username: slack_user
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| "flagger".into()),
                proxy: slack_proxy.filter(|p| !p.is_empty()),
                token: slack_token.filter(|t| !t.is_empty()),
                label: "global slack".into(),
            };
            dest.validate()?;
            return Ok(Some(dest));
        }
        if let Some(url) = msteams_url.filter(|u| !u.is_empty()) {
            let dest = Self {
                kind: ChatKind::MsTeams,
                address: url,
                channel: String::new(),
                username: String::new(),
                proxy: msteams_proxy.filter(|p| !p.is_empty()),
                token: None,
                label: "global msteams".into(),
            };
            dest.validate()?;
            return Ok(Some(dest));
        }
        Ok(None)
    }

    fn validate(&self) -> Result<(), NotifierError> {
        let ok = reqwest::Url::parse(self.address.expose())
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if ok {
            Ok(())
        } else {
            Err(NotifierError::Config(format!(
                "{}: invalid {} webhook URL",
                self.label, self.kind
            )))
        }
    }

    /// Where the payload is posted.
    fn post_url(&self) -> String {
        match self.kind {
            ChatKind::Discord => discord::url(self.address.expose()),
            _ => self.address.expose().to_owned(),
        }
    }

    fn payload(&self, msg: &ChatMessage<'_>) -> serde_json::Value {
        match self.kind {
            ChatKind::Slack | ChatKind::Discord => {
                slack::payload(msg, &self.channel, &self.username)
            }
            ChatKind::Rocket => rocket::payload(msg, &self.channel, &self.username),
            ChatKind::MsTeams => teams::payload(msg),
            ChatKind::GChat => gchat::payload(msg),
            ChatKind::Generic => generic::payload(msg),
        }
    }
}

/// One resolved `analysis.alerts[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRoute {
    /// The entry's `severity` (empty means info).
    pub severity: Severity,
    pub destination: Destination,
}

/// What the payload builders see.
#[derive(Debug, Clone, Copy)]
pub struct ChatMessage<'a> {
    pub canary: &'a CanaryKey,
    pub severity: Severity,
    pub text: &'a str,
    /// Name/value pairs, `Cluster` first when configured.
    pub fields: &'a [(String, String)],
}

/// Send a notification about a canary. Fire and forget.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Notify {
    pub canary: CanaryKey,
    /// Identifies the transition the message announces: the canary revision and the status the
    /// transition started from. Identical messages with one occurrence are sent once; the same
    /// revision released again later is a new occurrence and notifies again.
    pub occurrence: String,
    pub severity: Severity,
    pub message: String,
    pub fields: Vec<(String, String)>,
    /// `None`: the canary has no `analysis.alerts`, use the global notifier. `Some`: only these.
    pub alerts: Option<Vec<AlertRoute>>,
}

#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub global: Option<Destination>,
    /// `--cluster-name`: adds a `Cluster` field to every message.
    pub cluster_name: Option<String>,
    pub min_interval: Duration,
    pub queue_capacity: usize,
    pub timeout: Duration,
    /// Remembered (destination, canary, occurrence, message) keys for deduplication.
    pub dedupe_capacity: usize,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            global: None,
            cluster_name: None,
            min_interval: Duration::from_secs(1),
            queue_capacity: 32,
            timeout: Duration::from_secs(5),
            dedupe_capacity: 4096,
        }
    }
}

struct Job {
    canary: CanaryKey,
    body: serde_json::Value,
    token: Option<SecretString>,
    proxy: Option<SecretString>,
}

/// The queue and worker of one destination URL.
struct Lane {
    label: String,
    jobs: RefCell<VecDeque<Job>>,
    wake: tokio::sync::Notify,
}

struct Shared {
    config: NotifierConfig,
    clients: HttpClients,
    lanes: RefCell<HashMap<String, Rc<Lane>>>,
    seen: RefCell<(HashSet<u64>, VecDeque<u64>)>,
}

/// See the module docs.
pub struct NotifierActor {
    shared: Rc<Shared>,
}

impl NotifierActor {
    pub fn new(config: NotifierConfig) -> Self {
        Self {
            shared: Rc::new(Shared {
                config,
                clients: HttpClients::default(),
                lanes: RefCell::new(HashMap::new()),
                seen: RefCell::new((HashSet::new(), VecDeque::new())),
            }),
        }
    }
}

impl Actor for NotifierActor {
    type Context = Context<Self>;
}

impl Shared {
    /// True the first time (destination, canary, occurrence, message) is seen.
    fn first_time(&self, url: &str, msg: &Notify) -> bool {
        let mut h = DefaultHasher::new();
        (url, &msg.canary, &msg.occurrence, &msg.message).hash(&mut h);
        let key = h.finish();
        let mut seen = self.seen.borrow_mut();
        let (set, order) = &mut *seen;
        if !set.insert(key) {
            return false;
        }
        order.push_back(key);
        while order.len() > self.config.dedupe_capacity.max(1) {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }

    fn enqueue(self: &Rc<Self>, url: String, label: &str, job: Job) {
        let lane = {
            let mut lanes = self.lanes.borrow_mut();
            match lanes.get(&url) {
                Some(l) => Rc::clone(l),
                None => {
                    let lane = Rc::new(Lane {
                        label: label.to_owned(),
                        jobs: RefCell::new(VecDeque::new()),
                        wake: tokio::sync::Notify::new(),
                    });
                    lanes.insert(url.clone(), Rc::clone(&lane));
                    actix::spawn(Rc::clone(self).drain(url, Rc::clone(&lane)));
                    lane
                }
            }
        };
        {
            let mut jobs = lane.jobs.borrow_mut();
            if jobs.len() >= self.config.queue_capacity.max(1)
                && let Some(dropped) = jobs.pop_front()
            {
                warn!(
                    destination = %lane.label,
                    canary = %dropped.canary,
                    "notification queue full, dropping the oldest message"
                );
            }
            jobs.push_back(job);
        }
        lane.wake.notify_one();
    }

    /// The worker of one lane: send, wait `min_interval`, repeat; sleep while empty.
    async fn drain(self: Rc<Self>, url: String, lane: Rc<Lane>) {
        loop {
            let next = lane.jobs.borrow_mut().pop_front();
            let Some(job) = next else {
                lane.wake.notified().await;
                continue;
            };
            self.send(&url, &lane.label, job).await;
            tokio::time::sleep(self.config.min_interval).await;
        }
    }

    async fn send(&self, url: &str, label: &str, job: Job) {
        let client = match self.clients.get(&ClientOptions {
            insecure_skip_verify: false,
            proxy: job.proxy.clone(),
        }) {
            Ok(c) => c,
            Err(e) => {
                warn!(canary = %job.canary, "alert provider {label} send error: {e}");
                return;
            }
        };
        let mut request = client
            .post(url)
            .timeout(self.config.timeout)
            .json(&job.body);
        if let Some(token) = &job.token {
            request = request.bearer_auth(token.expose());
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                debug!(canary = %job.canary, destination = label, "notification sent");
            }
            Ok(r) => warn!(
                canary = %job.canary,
                "alert provider {label} send error: status {}",
                r.status()
            ),
            Err(e) => warn!(
                canary = %job.canary,
                "alert provider {label} send error: {}",
                describe_error(&e)
            ),
        }
    }
}

impl Handler<Notify> for NotifierActor {
    type Result = ();

    fn handle(&mut self, msg: Notify, _ctx: &mut Self::Context) {
        let shared = &self.shared;
        let mut fields = Vec::with_capacity(msg.fields.len() + 1);
        if let Some(cluster) = shared
            .config
            .cluster_name
            .as_ref()
            .filter(|c| !c.is_empty())
        {
            fields.push(("Cluster".to_owned(), cluster.clone()));
        }
        fields.extend(msg.fields.iter().cloned());
        let chat = ChatMessage {
            canary: &msg.canary,
            severity: msg.severity,
            text: &msg.message,
            fields: &fields,
        };
        let destinations: Vec<&Destination> = match &msg.alerts {
            None => shared.config.global.iter().collect(),
            Some(alerts) => alerts
                .iter()
                .filter(|a| a.severity.delivers(msg.severity))
                .map(|a| &a.destination)
                .collect(),
        };
        for dest in destinations {
            let url = dest.post_url();
            if !shared.first_time(&url, &msg) {
                debug!(canary = %msg.canary, destination = %dest.label, "already sent for this revision");
                continue;
            }
            info!(canary = %msg.canary, destination = %dest.label, severity = %msg.severity, "notifying");
            let job = Job {
                canary: msg.canary.clone(),
                body: dest.payload(&chat),
                token: dest.token.clone(),
                proxy: dest.proxy.clone(),
            };
            shared.enqueue(url, &dest.label, job);
        }
    }
}
