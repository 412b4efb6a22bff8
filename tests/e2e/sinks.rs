//! A loopback HTTP sink that records the JSON bodies POSTed to it (a Slack incoming webhook, an
//! event webhook), answering 200 `ok` as Slack does. It runs on its own thread and runtime so it
//! keeps serving while the test's runtime is busy.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::routing::any;
use serde_json::Value;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Value,
    pub at: Instant,
}

type Log = Arc<Mutex<Vec<Received>>>;

pub struct Sink {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    received: Log,
}

impl Sink {
    pub fn start() -> Sink {
        let received: Log = Arc::default();
        let log = received.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new().fallback(any(record)).with_state(log);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Sink {
            url: format!("http://{addr}"),
            received,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the bodies received so far; panics with them otherwise.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "sink did not receive {what} within {timeout:?}; received: {:#?}",
                got.iter().map(|r| &r.body).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn record(State(log): State<Log>, uri: Uri, body: Bytes) -> &'static str {
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    log.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        body,
        at: Instant::now(),
    });
    "ok"
}

/// The text of each Slack message (`attachments[0].text`), in arrival order.
pub fn slack_texts(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .filter_map(|r| r.body["attachments"][0]["text"].as_str().map(str::to_owned))
        .collect()
}
