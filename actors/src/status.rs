//! The one status write per tick.
//!
//! Contract: [`write_status`] makes `.status` of a Canary equal to a rollout status with one JSON
//! merge patch on the status subresource ([`crate::crd::convert::status_merge_patch`], which
//! leaves fields the core does not own untouched), guarded by the `resourceVersion` the tick
//! decided from. On a 409 it re-reads the Canary: if the status there is still the one the tick
//! decided from (only the spec or metadata moved), the same status is written once more with the
//! fresh `resourceVersion`; otherwise nothing is written ([`StatusError::Stale`]) and the next
//! tick decides again from the fresh status. A stale decision never overwrites a newer status.

use flagger_rollout::CanaryStatus;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::crd::Canary;
use crate::crd::convert::status_merge_patch;

/// Failure to persist a status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Someone else wrote the status since this tick read it; nothing was written.
    #[error("status of canary {0} changed concurrently; deciding again on the next tick")]
    Stale(String),
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
            Self::Stale(_) => "stale",
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
    let api: Api<Canary> = Api::namespaced(client.clone(), &namespace);
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
        Ok(written) => Ok(written),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let fresh = api.get_status(&name).await.map_err(api_error)?;
            if fresh.status != canary.status {
                return Err(StatusError::Stale(format!("{name}.{namespace}")));
            }
            let patch = guarded_patch(status, fresh.resource_version());
            api.patch_status(&name, &params, &Patch::Merge(&patch))
                .await
                .map_err(api_error)
        }
        Err(e) => Err(api_error(e)),
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
