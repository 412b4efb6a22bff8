//! `flagger-loadtester`: the webhook companion of flagger-rs (flagger-behavior §2.10.4).
//!
//! - `POST /` (any path not listed below) takes a webhook payload and runs `metadata.cmd` through
//!   `sh -c` (`metadata.type: cmd`, the default) or `bash -c` (`type: bash`, always blocking).
//!   `cmd` runs in the background (202) unless `metadata.blocking: "true"`; blocking commands
//!   answer 200 (with stdout when `returnCmdOutput: "true"`) or 500 with the error. Identical
//!   background commands of one canary are deduplicated while queued or running. At most
//!   `--max-concurrent` commands run at once; each has `metadata.timeout` or `--timeout`.
//! - Gates: `/gate/approve` 200, `/gate/halt` 403, `/gate/check` 200 `Approved` / 403
//!   `Forbidden`, `/gate/open` and `/gate/close` 202; the same under `/rollback/` with keys
//!   `rollback.<name>.<namespace>`. With `--gate-state PATH` the gates survive a restart.
//! - `/healthz` answers `OK`.
//!
//! The first stdout line is `flagger-loadtester listening on http://<addr>`; logs go to stderr.
#![forbid(unsafe_code)]

mod gate;
mod runner;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use clap::Parser;
use serde::Deserialize;
use tracing::{info, warn};

use gate::GateStore;
use runner::{Runner, Shell};

#[derive(Debug, Parser)]
#[command(
    name = "flagger-loadtester",
    version,
    about = "Runs load tests and gates for flagger-rs webhooks"
)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    bind: String,
    /// Default command timeout (Go duration).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    timeout: Duration,
    /// Commands running at the same time, at most.
    #[arg(long, default_value_t = 8)]
    max_concurrent: usize,
    /// File keeping the gate state across restarts (JSON, written atomically).
    #[arg(long)]
    gate_state: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    flagger_rollout::duration::parse_go_duration(s)
}

struct App {
    gates: GateStore,
    runner: Runner,
    timeout: Duration,
}

/// The fields of the webhook payload the load tester uses.
#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    phase: String,
    #[serde(default, rename = "type")]
    hook_type: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let Args {
        port,
        bind,
        timeout,
        max_concurrent,
        gate_state,
    } = Args::parse();
    let app = Arc::new(App {
        gates: GateStore::load(gate_state)?,
        runner: Runner::new(max_concurrent),
        timeout,
    });
    let listener = tokio::net::TcpListener::bind((bind.as_str(), port)).await?;
    let addr = listener.local_addr()?;
    println!("flagger-loadtester listening on http://{addr}");
    info!(%addr, max_concurrent, "listening");
    let router = Router::new()
        .route("/healthz", any(|| async { "OK" }))
        .route("/gate/approve", any(|| async { "OK" }))
        .route(
            "/gate/halt",
            any(|| async { (StatusCode::FORBIDDEN, "Forbidden") }),
        )
        .route("/gate/check", any(gate_check))
        .route("/gate/open", any(gate_open))
        .route("/gate/close", any(gate_close))
        .route("/rollback/check", any(rollback_check))
        .route("/rollback/open", any(rollback_open))
        .route("/rollback/close", any(rollback_close))
        .fallback(run_task)
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// The payload, or the 400 text.
fn parse(body: &Bytes) -> Result<Payload, String> {
    serde_json::from_slice(body).map_err(|e| format!("decoding the request body failed: {e}"))
}

fn bad_request(text: String) -> Response {
    (StatusCode::BAD_REQUEST, text).into_response()
}

fn check(app: &App, body: &Bytes, prefix: &str) -> Response {
    let p = match parse(body) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let key = format!("{prefix}{}.{}", p.name, p.namespace);
    let open = app.gates.is_open(&key);
    info!(gate = key, approved = open, "gate check");
    if open {
        (StatusCode::OK, "Approved").into_response()
    } else {
        (StatusCode::FORBIDDEN, "Forbidden").into_response()
    }
}

fn set(app: &App, body: &Bytes, prefix: &str, open: bool) -> Response {
    let p = match parse(body) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let key = format!("{prefix}{}.{}", p.name, p.namespace);
    match app.gates.set(&key, open) {
        Ok(()) => {
            info!(gate = key, open, "gate changed");
            StatusCode::ACCEPTED.into_response()
        }
        Err(e) => {
            warn!(gate = key, error = %e, "persisting the gate state failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response()
        }
    }
}

async fn gate_check(State(app): State<Arc<App>>, body: Bytes) -> Response {
    check(&app, &body, "")
}
async fn gate_open(State(app): State<Arc<App>>, body: Bytes) -> Response {
    set(&app, &body, "", true)
}
async fn gate_close(State(app): State<Arc<App>>, body: Bytes) -> Response {
    set(&app, &body, "", false)
}
async fn rollback_check(State(app): State<Arc<App>>, body: Bytes) -> Response {
    check(&app, &body, "rollback.")
}
async fn rollback_open(State(app): State<Arc<App>>, body: Bytes) -> Response {
    set(&app, &body, "rollback.", true)
}
async fn rollback_close(State(app): State<Arc<App>>, body: Bytes) -> Response {
    set(&app, &body, "rollback.", false)
}

async fn run_task(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let p = match parse(&body) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let canary = format!("{}.{}", p.name, p.namespace);
    // One line per webhook call, so an operator can see every analysis step reached the tester.
    info!(
        canary,
        phase = p.phase,
        hook_type = p.hook_type,
        "task request received"
    );
    let Some(meta) = p.metadata.filter(|m| !m.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "metadata not found in payload").into_response();
    };
    let flag = |k: &str| meta.get(k).is_some_and(|v| v == "true");
    let kind = meta.get("type").map_or("cmd", String::as_str);
    let (shell, blocking) = match kind {
        "cmd" => (Shell::Sh, flag("blocking")),
        "bash" => (Shell::Bash, true),
        other => {
            return (
                StatusCode::BAD_REQUEST,
                format!("unknown task type {other}, supported: cmd, bash"),
            )
                .into_response();
        }
    };
    let Some(cmd) = meta.get("cmd").filter(|c| !c.trim().is_empty()).cloned() else {
        return (StatusCode::BAD_REQUEST, "cmd not found in metadata").into_response();
    };
    let timeout = match meta.get("timeout").map(|t| parse_duration(t)) {
        None => app.timeout,
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            return (StatusCode::BAD_REQUEST, format!("metadata.timeout: {e}")).into_response();
        }
    };
    if !blocking {
        if !app.runner.spawn(&canary, cmd.clone(), shell, timeout) {
            info!(canary, cmd, "command already running, not started again");
        }
        return StatusCode::ACCEPTED.into_response();
    }
    info!(canary, cmd, "running blocking command");
    match app.runner.run(&cmd, shell, timeout).await {
        Ok(out) if flag("returnCmdOutput") => (StatusCode::OK, out).into_response(),
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => {
            warn!(canary, error = %e, "blocking command failed");
            (StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
        }
    }
}
