//! The one status write per tick.
//!
//! Contract: [`write_status`] makes `.status` of a Canary equal to a rollout status with one JSON
//! merge patch on the status subresource ([`crate::crd::convert::status_merge_patch`], which
//! leaves fields the core does not own untouched), guarded by the `resourceVersion` the tick
//! decided from. On a 409 it re-reads the Canary: if the status there is still the one the tick
//! decided from (only the spec or metadata moved), the same status is written once more with the
//! fresh `resourceVersion`; otherwise nothing is written ([`StatusError::Stale`], carrying the
//! object as re-read) and the CanaryActor decides again from it at once. A stale decision never
//! overwrites a newer status. A conflict is ordinary concurrency, not a failure of the rollout:
//! it is logged at debug level and never becomes a Kubernetes event.

use actix::{Actor, Context, Handler, ResponseFuture};
use flagger_rollout::{CanaryStatus, EventType};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use crate::events::{EventRecorder, Regarding, Severity};
use crate::messages::{RecordEvent, SetFinalizer, WriteCanaryStatus};

use crate::crd::Canary;
use crate::crd::convert::status_merge_patch;
use crate::crd::decode::canary_or_placeholder;

/// Failure to persist a status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Someone else changed the object since this tick read it; nothing was written. `fresh` is
    /// the object as re-read after the conflict, when it was.
    #[error("canary {name} changed concurrently; deciding again from the fresh object")]
    Stale {
        name: String,
        fresh: Option<Box<Canary>>,
    },
    #[error("writing status of canary {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl StatusError {
    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Stale { .. } => "stale",
            Self::Api { .. } => "api",
        }
    }
}

/// The merge patch for `status`, with `resourceVersion` as an optimistic-concurrency guard.
pub fn guarded_patch(status: &CanaryStatus, resource_version: Option<String>) -> serde_json::Value {
    let mut patch = status_merge_patch(status);
    if let (Some(rv), Some(obj)) = (resource_version, patch.as_object_mut()) {
        obj.insert(
            "metadata".to_owned(),
            serde_json::json!({ "resourceVersion": rv }),
        );
    }
    patch
}

/// Persists `status` on `canary` (the object the tick decided from). Returns the written object.
pub async fn write_status(
    client: &Client,
    canary: &Canary,
    status: &CanaryStatus,
) -> Result<Canary, StatusError> {
    let name = canary.name_any();
    let namespace = canary.namespace().unwrap_or_default();
    // Untyped, so the answer for a Canary whose spec does not decode is still read back (as a
    // placeholder) instead of failing a write that succeeded.
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace,
        &ApiResource::erase::<Canary>(&()),
    );
    let api_error = |source| StatusError::Api {
        name: format!("{name}.{namespace}"),
        source,
    };
    let params = PatchParams::default();
    let patch = guarded_patch(status, canary.resource_version());
    match api
        .patch_status(&name, &params, &Patch::Merge(&patch))
        .await
    {
        Ok(written) => Ok(read_back(written)),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let fresh = read_back(api.get_status(&name).await.map_err(api_error)?);
            if fresh.status != canary.status {
                return Err(StatusError::Stale {
                    name: format!("{name}.{namespace}"),
                    fresh: Some(Box::new(fresh)),
                });
            }
            let patch = guarded_patch(status, fresh.resource_version());
            match api
                .patch_status(&name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(written) => Ok(read_back(written)),
                // Changed once more in between: decide again (the watch brings the object).
                Err(kube::Error::Api(e)) if e.code == 409 => Err(StatusError::Stale {
                    name: format!("{name}.{namespace}"),
                    fresh: None,
                }),
                Err(e) => Err(api_error(e)),
            }
        }
        Err(e) => Err(api_error(e)),
    }
}

fn read_back(obj: DynamicObject) -> Canary {
    canary_or_placeholder(serde_json::to_value(obj).unwrap_or_default())
}

/// The finalizer that makes deletion wait for `revertOnDeletion`.
pub const FINALIZER: &str = "finalizer.flagger.app";

/// Adds or removes [`FINALIZER`] with a merge patch guarded by `resourceVersion`, so a concurrent change of the finalizer list is never overwritten.
pub async fn set_finalizer(
    client: &Client,
    canary: &Canary,
    present: bool,
) -> Result<(), StatusError> {
    let name = canary.name_any();
    let namespace = canary.namespace().unwrap_or_default();
    let mut finalizers = canary.finalizers().to_vec();
    let has = finalizers.iter().any(|f| f == FINALIZER);
    if has == present {
        return Ok(());
    }
    if present {
        finalizers.push(FINALIZER.to_owned());
    } else {
        finalizers.retain(|f| f != FINALIZER);
    }
    // A merge patch replaces the whole list; the resourceVersion makes it fail instead of
    // dropping a finalizer someone added meanwhile.
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": canary.resource_version(),
        "finalizers": finalizers,
    }});
    let api: Api<Canary> = Api::namespaced(client.clone(), &namespace);
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile, or changed meanwhile (the next tick sees the fresh object).
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 || e.code == 422 => {
            Err(StatusError::Stale {
                name: format!("{name}.{namespace}"),
                fresh: None,
            })
        }
        Err(source) => Err(StatusError::Api {
            name: format!("{name}.{namespace}"),
            source,
        }),
    }
}

/// Performs the writes on Canary objects (status, finalizer) and records their events, for
/// every CanaryActor. Handlers run concurrently.
pub struct CanaryWriter {
    client: Client,
    recorder: EventRecorder,
}

impl CanaryWriter {
    pub fn new(client: Client, recorder: EventRecorder) -> Self {
        Self { client, recorder }
    }
}

impl Actor for CanaryWriter {
    type Context = Context<Self>;
}

impl Handler<WriteCanaryStatus> for CanaryWriter {
    type Result = ResponseFuture<Result<Canary, StatusError>>;
    fn handle(&mut self, msg: WriteCanaryStatus, _: &mut Self::Context) -> Self::Result {
        let client = self.client.clone();
        Box::pin(async move { write_status(&client, &msg.canary, &msg.status).await })
    }
}

impl Handler<SetFinalizer> for CanaryWriter {
    type Result = ResponseFuture<Result<(), StatusError>>;
    fn handle(&mut self, msg: SetFinalizer, _: &mut Self::Context) -> Self::Result {
        let client = self.client.clone();
        Box::pin(async move { set_finalizer(&client, &msg.canary, msg.present).await })
    }
}

impl Handler<RecordEvent> for CanaryWriter {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: RecordEvent, _: &mut Self::Context) -> Self::Result {
        let recorder = self.recorder.clone();
        Box::pin(async move {
            let c = &msg.canary;
            let regarding = Regarding {
                api_version: Canary::api_version(&()).into_owned(),
                kind: Canary::kind(&()).into_owned(),
                namespace: c.namespace().unwrap_or_default(),
                name: c.name_any(),
                uid: c.uid().unwrap_or_default(),
            };
            let severity = match msg.event_type {
                EventType::Normal => Severity::Normal,
                EventType::Warning => Severity::Warning,
            };
            if let Err(error) = recorder.record(&regarding, severity, &msg.message).await {
                warn!(msg = "recording event failed", %error, event = %msg.message);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use flagger_rollout::Phase;

    #[test]
    fn patch_carries_the_resource_version_it_decided_from() {
        let status = CanaryStatus {
            phase: Phase::Progressing,
            canary_weight: 10,
            ..Default::default()
        };
        let patch = guarded_patch(&status, Some("42".into()));
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["status"]["phase"], "Progressing");
        assert_eq!(patch["status"]["canaryWeight"], 10);
        // Fields the core owns but that are empty are cleared, not left behind.
        assert!(patch["status"]["progressWaits"].is_null());
        assert!(guarded_patch(&status, None).get("metadata").is_none());
    }
}
