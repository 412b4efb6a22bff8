//! The WebhookActor: calls the analysis webhooks and the event webhook (flagger-behavior §2.10).
//!
//! Contract:
//! - `POST <url>` with `Content-Type: application/json` and the body
//!   `{"name","namespace","phase","checksum","type","metadata"}` (`metadata` omitted when empty).
//! - Passed iff the status is 2xx (the rule; upstream accepts only 200–202).
//! - Every attempt has the hook's `timeout` (default 10 s). Connection errors, timeouts, 429 and
//!   5xx other than 501 are retried up to `retries` times with exponential backoff (1 s … 30 s,
//!   `Retry-After` honoured); when they run out the error reads as upstream's
//!   `POST <url> giving up after N attempt(s)`, followed by the reason (the last status and the
//!   start of its body, or the transport error), so a 5xx, a timeout and a refused connection
//!   read differently. Other statuses are a [`HookResponse::Rejected`]
//!   whose text is the response body.
//! - `disableTLS` skips certificate verification. Requests per host are bounded.
//! - Events ([`ForwardEvent`]) are queued and the handler returns at once (a slow event webhook
//!   never delays a tick). Each (destination, canary) pair has its own queue, delivered one at a
//!   time, so a canary's events arrive in the order they happened, as upstream's synchronous calls
//!   do; at most [`WebhookConfig::event_queue_capacity`] wait per pair, then the oldest is dropped
//!   with a log line.
//! - Texts show URLs without userinfo and query; the global event webhook URL is a secret and is
//!   never shown at all.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use flagger_rollout::duration::format_go_duration;
use flagger_rollout::{EventType, HookOutcome, HookType, Phase, Webhook};
use serde::Serialize;
use tracing::{Instrument, debug, info_span, warn};

use crate::http::{
    ClientOptions, HostLimiter, HttpClients, HttpError, describe_error, display_url,
};
use crate::key::CanaryKey;
use crate::secret::{SecretString, redact};

/// The JSON body of a webhook call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookPayload {
    pub name: String,
    pub namespace: String,
    pub phase: String,
    pub checksum: String,
    #[serde(rename = "type")]
    pub hook_type: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl HookPayload {
    /// The payload of `hook` for canary `canary` in `phase`; `checksum` identifies the revision
    /// (target template + tracked configs).
    pub fn new(canary: &CanaryKey, phase: Phase, checksum: &str, hook: &Webhook) -> Self {
        Self {
            name: canary.name.clone(),
            namespace: canary.namespace.clone(),
            phase: phase.as_str().to_owned(),
            checksum: checksum.to_owned(),
            hook_type: hook.hook_type.as_str().to_owned(),
            metadata: hook.metadata.clone(),
        }
    }

    /// The payload of an event webhook (§2.10.3): the hook's metadata plus `eventMessage`,
    /// `eventType` and `timestamp` (unix milliseconds), which the hook's metadata cannot override.
    pub fn event(
        canary: &CanaryKey,
        phase: Phase,
        checksum: &str,
        hook_metadata: &BTreeMap<String, String>,
        event_type: EventType,
        message: &str,
        timestamp_ms: i64,
    ) -> Self {
        let mut metadata = hook_metadata.clone();
        metadata.insert("eventMessage".into(), message.to_owned());
        metadata.insert(
            "eventType".into(),
            match event_type {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_owned(),
        );
        metadata.insert("timestamp".into(), timestamp_ms.to_string());
        Self {
            name: canary.name.clone(),
            namespace: canary.namespace.clone(),
            phase: phase.as_str().to_owned(),
            checksum: checksum.to_owned(),
            hook_type: HookType::Event.as_str().to_owned(),
            metadata,
        }
    }
}

/// How a webhook answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookResponse {
    /// 2xx.
    Passed { status: u16 },
    /// Any other final status; `body` is what the hook said (the text used in events).
    Rejected { status: u16, body: String },
}

impl HookResponse {
    pub fn passed(&self) -> bool {
        matches!(self, Self::Passed { .. })
    }
}

/// The call did not produce a final answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Retryable statuses (429, 5xx except 501) until the retries ran out; `last` is the last
    /// answer (`status 503: <body>`, body truncated, credentials of the URL scrubbed).
    #[error("POST {url} giving up after {attempts} attempt(s): {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },
    /// Timeouts or connection errors until the retries ran out.
    #[error("POST {url} giving up after {attempts} attempt(s): {reason}")]
    Unreachable {
        url: String,
        attempts: u32,
        reason: String,
    },
    #[error("invalid webhook URL {url}")]
    InvalidUrl { url: String },
    #[error("{0}")]
    Client(#[from] HttpError),
}

/// Longest part of a response body quoted in an error.
const MAX_BODY_IN_ERROR: usize = 200;

/// `status 503: <first 200 bytes of the body on one line>`, without the URL's password or query
/// values (a server may echo its request).
fn last_answer(url: &str, status: u16, body: &str) -> String {
    let mut text: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.len() > MAX_BODY_IN_ERROR {
        let mut end = MAX_BODY_IN_ERROR;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    let secrets: Vec<SecretString> = reqwest::Url::parse(url)
        .map(|u| {
            u.password()
                .map(str::to_owned)
                .into_iter()
                .chain(u.query_pairs().map(|(_, v)| v.into_owned()))
                .map(SecretString::new)
                .collect()
        })
        .unwrap_or_default();
    let text = redact(&text, &secrets);
    if text.is_empty() {
        format!("status {status}")
    } else {
        format!("status {status}: {text}")
    }
}

/// The result of one hook call in the form `decide` consumes.
pub fn hook_outcome(hook_name: &str, result: &Result<HookResponse, WebhookError>) -> HookOutcome {
    match result {
        Ok(HookResponse::Passed { .. }) => HookOutcome::passed(hook_name),
        Ok(HookResponse::Rejected { status, body }) => {
            let why = if body.trim().is_empty() {
                format!("status {status}")
            } else {
                body.trim().to_owned()
            };
            HookOutcome::failed(hook_name, &why)
        }
        Err(e) => HookOutcome::failed(hook_name, &e.to_string()),
    }
}

/// Call one webhook of a canary.
#[derive(Debug, Message)]
#[rtype(result = "Result<HookResponse, WebhookError>")]
pub struct CallHook {
    pub canary: CanaryKey,
    pub hook: Webhook,
    pub payload: HookPayload,
}

/// Forward one Kubernetes event: to the canary's `event` webhooks if it has any, otherwise to the
/// global `--event-webhook`. Queued (see the module docs); errors are only logged.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ForwardEvent {
    pub canary: CanaryKey,
    /// The canary's `type: event` hooks (may be empty).
    pub hooks: Vec<Webhook>,
    pub phase: Phase,
    pub checksum: String,
    pub event_type: EventType,
    pub message: String,
    pub timestamp_ms: i64,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Requests in flight per `host:port`.
    pub per_host: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// `--event-webhook` / `EVENT_WEBHOOK_URL`.
    pub event_webhook: Option<SecretString>,
    /// Events waiting per (destination, canary) before the oldest is dropped.
    pub event_queue_capacity: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            per_host: 8,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            event_webhook: None,
            event_queue_capacity: 100,
        }
    }
}

/// Timeout of the global event webhook (upstream: 10 s, no retries).
pub const EVENT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

struct Inner {
    config: WebhookConfig,
    clients: HttpClients,
    limiter: HostLimiter,
    /// Event queues by (destination URL, canary); a queue goes away when it is drained.
    event_lanes: RefCell<HashMap<LaneKey, EventLane>>,
}

/// (destination URL, canary): the unit of ordered event delivery.
type LaneKey = (String, CanaryKey);
/// Events waiting for one [`LaneKey`], oldest first.
type EventLane = Rc<RefCell<VecDeque<EventCall>>>;

/// One event delivery waiting in its lane.
struct EventCall {
    /// Hook name for logs (`events` for the global webhook).
    name: String,
    url: SecretString,
    shown: UrlDisplay,
    timeout: Duration,
    retries: u32,
    disable_tls: bool,
    payload: HookPayload,
}

/// See the module docs.
pub struct WebhookActor {
    inner: Rc<Inner>,
}

impl WebhookActor {
    pub fn new(config: WebhookConfig) -> Self {
        Self {
            inner: Rc::new(Inner {
                limiter: HostLimiter::new(config.per_host),
                clients: HttpClients::default(),
                config,
                event_lanes: RefCell::new(HashMap::new()),
            }),
        }
    }
}

impl Default for WebhookActor {
    fn default() -> Self {
        Self::new(WebhookConfig::default())
    }
}

impl Actor for WebhookActor {
    type Context = Context<Self>;
}

/// What a call is told about its URL: shown without secrets, or hidden entirely.
#[derive(Clone, Copy)]
enum UrlDisplay {
    Redacted,
    Hidden,
}

impl Inner {
    async fn call(
        &self,
        url: &str,
        shown: UrlDisplay,
        timeout: Duration,
        retries: u32,
        disable_tls: bool,
        payload: &HookPayload,
    ) -> Result<HookResponse, WebhookError> {
        let shown_url = match shown {
            UrlDisplay::Redacted => display_url(url),
            UrlDisplay::Hidden => "<redacted>".to_owned(),
        };
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| WebhookError::InvalidUrl {
                url: shown_url.clone(),
            })?;
        let client = self.clients.get(&ClientOptions {
            insecure_skip_verify: disable_tls,
            proxy: None,
        })?;
        let attempts = retries.saturating_add(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= attempts;
            let sent = {
                let _permit = self.limiter.acquire(url).await;
                client
                    .post(parsed.clone())
                    .timeout(timeout)
                    .json(payload)
                    .send()
                    .await
            };
            let retry_after = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if response.status().is_success() {
                        return Ok(HookResponse::Passed { status });
                    }
                    let retryable = status == 429 || (status >= 500 && status != 501);
                    if !retryable {
                        let body = response.text().await.unwrap_or_default();
                        return Ok(HookResponse::Rejected { status, body });
                    }
                    if last {
                        let body = response.text().await.unwrap_or_default();
                        return Err(WebhookError::GaveUp {
                            url: shown_url,
                            attempts,
                            last: last_answer(url, status, &body),
                        });
                    }
                    response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs)
                }
                Err(e) => {
                    if last {
                        let reason = if e.is_timeout() {
                            format!("timeout after {}", format_go_duration(timeout))
                        } else {
                            describe_error(&e)
                        };
                        return Err(WebhookError::Unreachable {
                            url: shown_url,
                            attempts,
                            reason,
                        });
                    }
                    None
                }
            };
            let backoff = self.backoff(attempt, retry_after);
            debug!(attempt, ?backoff, "retrying webhook");
            tokio::time::sleep(backoff).await;
        }
    }

    /// Queues `call` behind the earlier events of `canary` to the same destination; starts the
    /// lane's sender when the lane was idle.
    fn enqueue_event(self: &Rc<Self>, canary: &CanaryKey, call: EventCall) {
        let key = (call.url.expose().to_owned(), canary.clone());
        let mut lanes = self.event_lanes.borrow_mut();
        if let Some(lane) = lanes.get(&key) {
            let mut queue = lane.borrow_mut();
            if queue.len() >= self.config.event_queue_capacity.max(1)
                && let Some(dropped) = queue.pop_front()
            {
                warn!(canary = %canary, hook = dropped.name, "event webhook queue full, dropping the oldest event");
            }
            queue.push_back(call);
            return;
        }
        let lane = Rc::new(RefCell::new(VecDeque::from([call])));
        lanes.insert(key.clone(), Rc::clone(&lane));
        let inner = Rc::clone(self);
        let span = info_span!("event_webhook", canary = %canary);
        actix::spawn(async move { inner.drain_events(key, lane).await }.instrument(span));
    }

    /// Sends a lane's events one at a time, in order; removes the lane once it is empty (no
    /// await between the emptiness check and the removal, so no event is stranded).
    async fn drain_events(self: Rc<Self>, key: LaneKey, lane: EventLane) {
        loop {
            let next = lane.borrow_mut().pop_front();
            let Some(call) = next else {
                self.event_lanes.borrow_mut().remove(&key);
                return;
            };
            let r = self
                .call(
                    call.url.expose(),
                    call.shown,
                    call.timeout,
                    call.retries,
                    call.disable_tls,
                    &call.payload,
                )
                .await;
            log_event_result(&call.name, &r);
        }
    }

    /// `min · 2^(attempt-1)` capped at `max`; a `Retry-After` wins when it is longer (capped too).
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .config
            .backoff_min
            .saturating_mul(1u32 << (attempt - 1).min(16));
        let wait = retry_after.map_or(exp, |r| r.max(exp));
        wait.min(self.config.backoff_max)
    }
}

impl Handler<CallHook> for WebhookActor {
    type Result = ResponseFuture<Result<HookResponse, WebhookError>>;

    fn handle(&mut self, msg: CallHook, _ctx: &mut Self::Context) -> Self::Result {
        let inner = Rc::clone(&self.inner);
        let span = info_span!("webhook", canary = %msg.canary, hook = %msg.hook.name);
        Box::pin(
            async move {
                let h = &msg.hook;
                let result = inner
                    .call(
                        &h.url,
                        UrlDisplay::Redacted,
                        h.timeout,
                        h.retries,
                        h.disable_tls,
                        &msg.payload,
                    )
                    .await;
                debug!(result = ?result, "webhook called");
                result
            }
            .instrument(span),
        )
    }
}

impl Handler<ForwardEvent> for WebhookActor {
    type Result = ();

    fn handle(&mut self, msg: ForwardEvent, _ctx: &mut Self::Context) {
        let payload_for = |metadata: &BTreeMap<String, String>| {
            HookPayload::event(
                &msg.canary,
                msg.phase,
                &msg.checksum,
                metadata,
                msg.event_type,
                &msg.message,
                msg.timestamp_ms,
            )
        };
        if msg.hooks.is_empty() {
            let Some(url) = self.inner.config.event_webhook.clone() else {
                return;
            };
            let call = EventCall {
                name: "events".to_owned(),
                url,
                shown: UrlDisplay::Hidden,
                timeout: EVENT_WEBHOOK_TIMEOUT,
                retries: 0,
                disable_tls: false,
                payload: payload_for(&BTreeMap::new()),
            };
            self.inner.enqueue_event(&msg.canary, call);
            return;
        }
        for hook in &msg.hooks {
            let call = EventCall {
                name: hook.name.clone(),
                url: SecretString::new(hook.url.clone()),
                shown: UrlDisplay::Redacted,
                timeout: hook.timeout,
                retries: hook.retries,
                disable_tls: hook.disable_tls,
                payload: payload_for(&hook.metadata),
            };
            self.inner.enqueue_event(&msg.canary, call);
        }
    }
}

fn log_event_result(name: &str, result: &Result<HookResponse, WebhookError>) {
    match result {
        Ok(HookResponse::Passed { .. }) => {}
        Ok(HookResponse::Rejected { status, .. }) => {
            warn!(hook = name, status, "event webhook rejected the event");
        }
        Err(e) => warn!(hook = name, error = %e, "event webhook failed"),
    }
}
