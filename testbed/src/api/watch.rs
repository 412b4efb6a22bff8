//! WATCH: a chunked stream of JSON lines (`{"type": ..., "object": ...}`).
//!
//! Guarantees: events strictly after the requested resourceVersion, in RV order, none missed or
//! repeated (history and live receiver are taken atomically from the store); ""/"0" (or
//! `sendInitialEvents=true`) starts with ADDED for the current objects; with selectors, an object
//! entering the selection arrives as ADDED and one leaving it as DELETED, as on a real server;
//! BOOKMARKs carry the RV up to which every change has been seen, so resuming from them is
//! safe. An expired RV is answered with an ERROR event holding a 410 `Status`. The stream ends at
//! `timeoutSeconds`, at the injected watch-close time, at shutdown, or when the server cannot
//! keep up (the client then resumes from its last RV, like after any dropped watch).
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ApiError, EventType, ResourceId, StoreEvent, WatchFrom};
use crate::table::Column;

use super::ApiState;
use super::resources::present;
use crate::faults::Faults;

/// Everything a watch needs, decided by the request handler.
pub struct WatchSpec {
    pub rt: Arc<ResourceType>,
    pub version: String,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub from: WatchFrom,
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: end the initial ADDED events with an annotated BOOKMARK.
    pub initial_events_end: bool,
    pub timeout: Option<Duration>,
    /// `Some((columns, includeObject))` to send each object as a one-row Table.
    pub table: Option<(Vec<Column>, String)>,
}

pub fn start(st: &ApiState, spec: WatchSpec) -> Result<Response, ApiError> {
    let rid = ResourceId::new(&spec.rt.group, &spec.rt.plural);
    let start = match st.store.watch(&rid, spec.namespace.as_deref(), spec.from) {
        Ok(s) => s,
        Err(e) if e.code == 410 => {
            let line = event_line("ERROR", e.to_status());
            return Ok(stream_response(Body::from(line)));
        }
        Err(e) => return Err(e),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let deadline = spec.timeout.map(|d| Instant::now() + d);
    let task = Stream {
        tx,
        spec,
        rid,
        bookmark_interval: st.bookmark_interval,
        shutdown: st.shutdown.clone(),
        faults: st.faults.clone(),
    };
    tokio::spawn(task.run(start.initial, start.live, start.rv, deadline));
    Ok(stream_response(Body::from_stream(ReceiverStream::new(rx))))
}

fn stream_response(body: Body) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn event_line(kind: &str, object: Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

struct Stream {
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    spec: WatchSpec,
    rid: ResourceId,
    bookmark_interval: Duration,
    shutdown: CancellationToken,
    /// Read while the watch runs, so a watch-close fault also cuts watches opened before it.
    faults: Faults,
}

/// How often an open watch re-reads the watch-close fault.
const FAULT_CHECK: Duration = Duration::from_millis(50);

impl Stream {
    fn selected(&self, obj: &Value) -> bool {
        self.spec.labels.matches_object(obj) && self.spec.fields.matches(obj)
    }

    /// The event type a client with these selectors sees for a store event (None: not shown).
    fn visible_type(&self, ev: &StoreEvent) -> Option<&'static str> {
        let now = self.selected(&ev.object);
        match ev.kind {
            EventType::Added | EventType::Deleted => now.then(|| ev.kind.as_str()),
            EventType::Modified => {
                let before = ev.old.as_deref().is_some_and(|o| self.selected(o));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }

    fn render(&self, obj: &Value) -> Value {
        let shown = present(&self.spec.rt, &self.spec.version, obj);
        match &self.spec.table {
            None => shown,
            Some((columns, include)) => {
                let rv = crate::store::rv_of(obj);
                crate::table::render(
                    columns,
                    &[&shown],
                    include,
                    json!({"resourceVersion": rv}),
                    jiff::Timestamp::now().as_second(),
                )
            }
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.spec.rt.kind,
            "apiVersion": self.spec.rt.api_version(&self.spec.version),
            "metadata": meta,
        });
        event_line("BOOKMARK", object)
    }

    async fn send(&self, line: Bytes) -> bool {
        self.tx.send(Ok(line)).await.is_ok()
    }

    async fn run(
        self,
        initial: Vec<Arc<StoreEvent>>,
        mut live: broadcast::Receiver<Arc<StoreEvent>>,
        start_rv: u64,
        deadline: Option<Instant>,
    ) {
        let after = match self.spec.from {
            WatchFrom::After(rv) => rv,
            WatchFrom::Current => 0,
        };
        for ev in &initial {
            if let Some(t) = self.visible_type(ev)
                && !self.send(event_line(t, self.render(&ev.object))).await
            {
                return;
            }
        }
        if self.spec.initial_events_end && !self.send(self.bookmark(start_rv, true)).await {
            return;
        }
        let mut last_rv = start_rv;
        let mut ticker = tokio::time::interval_at(
            Instant::now() + self.bookmark_interval,
            self.bookmark_interval,
        );
        let opened = Instant::now();
        let mut fault_check = tokio::time::interval(FAULT_CHECK);
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let deadline = deadline.unwrap_or(far);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = self.tx.closed() => return,
                _ = fault_check.tick() => {
                    if self.faults.watch_close_after().is_some_and(|d| opened.elapsed() >= d) {
                        return;
                    }
                }
                _ = ticker.tick(), if self.spec.bookmarks && self.spec.table.is_none() => {
                    if !self.send(self.bookmark(last_rv.max(after), false)).await {
                        return;
                    }
                }
                r = live.recv() => match r {
                    Ok(ev) => {
                        last_rv = last_rv.max(ev.rv);
                        if ev.rv <= after || !ev.matches(&self.rid, self.spec.namespace.as_deref()) {
                            continue;
                        }
                        if let Some(t) = self.visible_type(&ev)
                            && !self.send(event_line(t, self.render(&ev.object))).await
                        {
                            return;
                        }
                    }
                    // Lagged: events were lost for this watcher, so the stream must end; the
                    // client resumes from its last RV (or relists on 410).
                    Err(_) => return,
                },
            }
        }
    }
}
