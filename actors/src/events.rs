//! Kubernetes events on Canary objects, as upstream records them: core/v1 `Event`, reason `Synced`,
//! `source.component = flagger`, type `Normal` or `Warning`, so `kubectl describe canary` reads like the
//! seed. Every event is also logged (with `canary = name.namespace`) by the caller's span.
//!
//! Repeats of the same message on the same object within [`AGGREGATION_WINDOW`] bump `count` and
//! `lastTimestamp` on the existing Event (one merge patch) instead of creating a new object, as
//! client-go's correlator does. Recording is best effort: an API error is returned to the caller,
//! which logs it and carries on; an event never blocks a rollout.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Repeats closer together than this are folded into one Event.
pub const AGGREGATION_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Most remembered (object, message) pairs; the oldest are forgotten first.
const MAX_REMEMBERED: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Normal,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Normal => "Normal",
            Severity::Warning => "Warning",
        }
    }
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Regarding {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    severity: Severity,
    message: String,
}

struct Seen {
    event_name: String,
    count: i32,
    last: jiff::Timestamp,
}

/// Records events through the API server. Cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    instance: String,
    seen: Arc<Mutex<HashMap<Key, Seen>>>,
}

impl EventRecorder {
    /// `instance` identifies this operator replica (the pod name or host name).
    pub fn new(client: Client, instance: impl Into<String>) -> Self {
        Self {
            client,
            instance: instance.into(),
            seen: Arc::default(),
        }
    }

    /// Records one event (or folds it into a recent identical one).
    pub async fn record(
        &self,
        regarding: &Regarding,
        severity: Severity,
        message: &str,
    ) -> Result<(), kube::Error> {
        let now = jiff::Timestamp::now();
        let key = Key {
            uid: regarding.uid.clone(),
            severity,
            message: message.to_string(),
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &regarding.namespace);
        if let Some((event_name, count)) = self.repeat_of(&key, now) {
            let patch = serde_json::json!({
                "count": count,
                "lastTimestamp": Time(now),
            });
            match api
                .patch(&event_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // The event was garbage collected (TTL) or deleted: create a fresh one below.
                Err(kube::Error::Api(status)) if status.code == 404 => self.forget(&key),
                Err(other) => return Err(other),
            }
        }
        let event = self.new_event(regarding, severity, message, now);
        let created = api.create(&PostParams::default(), &event).await?;
        let event_name = created.metadata.name.unwrap_or_default();
        self.remember(key, event_name, now);
        Ok(())
    }

    fn new_event(
        &self,
        regarding: &Regarding,
        severity: Severity,
        message: &str,
        now: jiff::Timestamp,
    ) -> Event {
        // client-go names events `<object>.<hex unix nanos>`; unique enough and sorts by time.
        let nanos = now.as_nanosecond();
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", regarding.name, nanos)),
                namespace: Some(regarding.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(regarding.api_version.clone()),
                kind: Some(regarding.kind.clone()),
                name: Some(regarding.name.clone()),
                namespace: Some(regarding.namespace.clone()),
                uid: Some(regarding.uid.clone()),
                ..ObjectReference::default()
            },
            reason: Some("Synced".to_string()),
            message: Some(message.to_string()),
            type_: Some(severity.as_str().to_string()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource {
                component: Some("flagger".to_string()),
                host: None,
            }),
            reporting_component: Some("flagger".to_string()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        }
    }

    /// If `key` was recorded within the window: the event to bump and its new count.
    fn repeat_of(&self, key: &Key, now: jiff::Timestamp) -> Option<(String, i32)> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let entry = seen.get_mut(key)?;
        let age = now.duration_since(entry.last);
        if age.is_negative() || age.unsigned_abs() > AGGREGATION_WINDOW {
            return None;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        Some((entry.event_name.clone(), entry.count))
    }

    fn remember(&self, key: Key, event_name: String, now: jiff::Timestamp) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_REMEMBERED
            && let Some(oldest) = seen
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
        {
            seen.remove(&oldest);
        }
        seen.insert(
            key,
            Seen {
                event_name,
                count: 1,
                last: now,
            },
        );
    }

    fn forget(&self, key: &Key) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(key);
    }
}
