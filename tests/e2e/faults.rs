//! Loopback fault servers for end-to-end tests: a Prometheus query API and webhook endpoints that
//! answer the way broken ones do (too late, garbage, `status: error`, 5xx), and a port that refuses
//! connections. Built on the programmable sink of the actors' provider tests (one copy of the
//! server code), each on its own thread and runtime.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::time::Duration;

#[path = "../../actors/tests/sink/mod.rs"]
pub mod sink;

pub use sink::{Reply, Sink, closed_port_url};

/// Longer than any timeout the operator uses (metrics 5 s, webhooks as configured): a request
/// that gets this reply never gets an answer in time.
pub const NEVER: Duration = Duration::from_secs(120);

/// How a fake Prometheus misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromFault {
    /// Accepts the connection and never answers in time.
    Timeout,
    /// `200 OK` with a body that is not JSON.
    Garbage,
    /// `200 OK` with Prometheus' `{"status":"error"}` (bad PromQL, a query that timed out inside
    /// Prometheus).
    ErrorBody,
    /// `503` with a plain-text body, as an overloaded Prometheus or a proxy in front of it.
    Unavailable,
}

impl PromFault {
    pub const ALL: [PromFault; 4] = [
        Self::Timeout,
        Self::Garbage,
        Self::ErrorBody,
        Self::Unavailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Timeout => "prom-timeout",
            Self::Garbage => "prom-garbage",
            Self::ErrorBody => "prom-error",
            Self::Unavailable => "prom-503",
        }
    }

    fn reply(self) -> Reply {
        match self {
            Self::Timeout => Reply::ok(vector(1.0)).after(NEVER),
            Self::Garbage => Reply::ok("<html><body>Bad Gateway</body></html>"),
            Self::ErrorBody => Reply::ok(
                r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:1: parse error: unexpected character"}"#,
            ),
            Self::Unavailable => Reply::status(503, "service unavailable: too many queries"),
        }
    }
}

/// A Prometheus instant-query answer with one sample.
pub fn vector(value: f64) -> String {
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000,"{value}"]}}]}}}}"#
    )
}

/// A fake Prometheus that answers every query with `fault`.
pub fn prometheus(fault: PromFault) -> Sink {
    let reply = fault.reply();
    Sink::start(move |_, _| reply.clone())
}

/// A healthy fake Prometheus: every query returns `value`.
pub fn healthy_prometheus(value: f64) -> Sink {
    Sink::always(Reply::ok(vector(value)))
}

/// How a webhook endpoint misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookFault {
    /// Never answers within the hook's timeout.
    Timeout,
    /// `500` with a body.
    ServerError,
    /// Nothing listens on the port.
    Refused,
}

impl HookFault {
    pub const ALL: [HookFault; 3] = [Self::Timeout, Self::ServerError, Self::Refused];

    pub fn name(self) -> &'static str {
        match self {
            Self::Timeout => "hook-timeout",
            Self::ServerError => "hook-500",
            Self::Refused => "hook-refused",
        }
    }
}

/// The endpoint of a faulty webhook: its base URL and the server behind it (none when refused).
pub fn webhook(fault: HookFault) -> (String, Option<Sink>) {
    match fault {
        HookFault::Timeout => {
            let sink = Sink::always(Reply::ok("").after(NEVER));
            (sink.url.clone(), Some(sink))
        }
        HookFault::ServerError => {
            let sink = Sink::always(Reply::status(500, "load test failed: 37% errors"));
            (sink.url.clone(), Some(sink))
        }
        HookFault::Refused => (closed_port_url(), None),
    }
}
