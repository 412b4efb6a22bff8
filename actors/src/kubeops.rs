//! Small shared helpers for the portable write subset of the Kubernetes API (ARCHITECTURE §4):
//! GET, POST, PUT with `resourceVersion`, DELETE and JSON merge patch — no server-side apply, no
//! strategic merge patch.
//!
//! Contract of [`upsert`], the one write path of every generated object:
//! - it is idempotent: it computes the desired object from what is live and writes only when that
//!   differs, so a steady-state call makes no write;
//! - a cached copy (a reflector store) lets it decide "nothing to do" without any request; a write
//!   is always computed from a fresh GET, so fields a cache strips (kubectl's last-applied
//!   annotation, managedFields) are never lost;
//! - replaces carry the live `resourceVersion`; a 409 (someone wrote in between, or a concurrent
//!   create) re-reads and recomputes, up to [`MAX_ATTEMPTS`] times;
//! - every request has a timeout.
//!
//! [`CanaryRef`] is what every handler of the WorkloadActor and the RouterActor needs to know
//! about the canary it acts for.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flagger_rollout::CanarySpec;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::Canary;
use crate::key::CanaryKey;

/// Re-reads after a 409 before giving up.
pub const MAX_ATTEMPTS: usize = 5;

/// Default timeout of one API request.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(15);

/// Upstream's default `-selector-labels`.
pub const DEFAULT_SELECTOR_LABELS: &[&str] = &["app", "name", "app.kubernetes.io/name"];

/// The pod selector label of a target: `app: podinfo` → key `app`, value `podinfo`. The primary's
/// pods get `<value>-primary`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SelectorLabel {
    pub key: String,
    pub value: String,
}

impl SelectorLabel {
    /// The first of `selector_labels` (the operator's `--selector-labels`, in order) present in
    /// the target's `spec.selector.matchLabels`.
    pub fn of_deployment(
        target: &Deployment,
        selector_labels: &[String],
    ) -> Result<Self, MissingSelectorLabel> {
        let match_labels = target
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref());
        selector_labels
            .iter()
            .find_map(|key| {
                match_labels
                    .and_then(|m| m.get(key))
                    .map(|value| SelectorLabel {
                        key: key.clone(),
                        value: value.clone(),
                    })
            })
            .ok_or_else(|| MissingSelectorLabel {
                target: target.name_any(),
                namespace: target.namespace().unwrap_or_default(),
                selector_labels: selector_labels.to_vec(),
            })
    }

    /// `<value>-primary`.
    pub fn primary_value(&self) -> String {
        format!("{}-primary", self.value)
    }
}

/// The target's selector has none of the selector labels (upstream's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "deployment {target}.{namespace} spec.selector.matchLabels must contain one of [{}]",
    selector_labels.join(" ")
)]
pub struct MissingSelectorLabel {
    pub target: String,
    pub namespace: String,
    pub selector_labels: Vec<String>,
}

/// What every write needs about the canary it acts for. Built by the CanaryActor once per spec
/// (and target selector) and shared in an `Arc` with every message.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryRef {
    /// Namespace and name of the Canary.
    pub key: CanaryKey,
    /// `metadata.uid` of the Canary: owner references of generated objects point at it.
    pub uid: String,
    /// `flagger.app/v1beta1`.
    pub api_version: String,
    /// `Canary`.
    pub kind: String,
    /// The validated spec.
    pub spec: CanarySpec,
    /// The target's pod selector label (see [`SelectorLabel::of_deployment`]).
    pub selector: SelectorLabel,
}

impl CanaryRef {
    /// From the Canary object (for uid/apiVersion/kind), its validated spec and the selector label
    /// found on its target. `None` when the Canary has no name or uid (never the case for an
    /// object read from the API server).
    pub fn new(canary: &Canary, spec: CanarySpec, selector: SelectorLabel) -> Option<Self> {
        let owner = canary.controller_owner_ref(&())?;
        Some(Self {
            key: CanaryKey::new(canary.namespace().unwrap_or_default(), owner.name),
            uid: owner.uid,
            api_version: owner.api_version,
            kind: owner.kind,
            spec,
            selector,
        })
    }

    /// Owner reference to the Canary with `controller: true` (and `blockOwnerDeletion`, as
    /// client-go's `NewControllerRef`).
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.key.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// Is `obj` controlled by this Canary?
    pub fn controls<K: Resource>(&self, obj: &K) -> bool {
        obj.meta()
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == self.uid && o.controller == Some(true))
    }

    /// Namespace of the Canary, its target and every generated object.
    pub fn namespace(&self) -> &str {
        &self.key.namespace
    }
}

/// One API request that failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeOpError {
    #[error("{verb} {kind} {name}.{namespace} failed: {source}")]
    Api {
        verb: &'static str,
        kind: String,
        namespace: String,
        name: String,
        // Boxed: kube::Error is large and every Result of the actors carries this.
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{verb} {kind} {name}.{namespace} timed out after {timeout:?}")]
    Timeout {
        verb: &'static str,
        kind: String,
        namespace: String,
        name: String,
        timeout: Duration,
    },
    #[error(
        "{kind} {name}.{namespace} kept changing: {attempts} writes rejected with 409 Conflict"
    )]
    Conflict {
        kind: String,
        namespace: String,
        name: String,
        attempts: usize,
    },
}

impl KubeOpError {
    /// Low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            KubeOpError::Api { .. } => "api",
            KubeOpError::Timeout { .. } => "timeout",
            KubeOpError::Conflict { .. } => "conflict",
        }
    }

    /// HTTP status of an API error, if the server answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            KubeOpError::Api { source, .. } => match &**source {
                kube::Error::Api(s) => Some(s.code),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Names an object for requests and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectId {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn api_error(&self, verb: &'static str, source: kube::Error) -> KubeOpError {
        KubeOpError::Api {
            verb,
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source: Box::new(source),
        }
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}.{}", self.kind, self.name, self.namespace)
    }
}

/// Runs one request with a timeout, naming the object in the error.
pub async fn call<T>(
    id: &ObjectId,
    verb: &'static str,
    timeout: Duration,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, KubeOpError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(id.api_error(verb, source)),
        Err(_) => Err(KubeOpError::Timeout {
            verb,
            kind: id.kind.clone(),
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            timeout,
        }),
    }
}

/// GET, `None` on 404.
pub async fn get_opt<K>(
    api: &Api<K>,
    id: &ObjectId,
    timeout: Duration,
) -> Result<Option<K>, KubeOpError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    call(id, "get", timeout, api.get_opt(&id.name)).await
}

/// JSON merge patch (RFC 7386).
pub async fn merge_patch<K>(
    api: &Api<K>,
    id: &ObjectId,
    timeout: Duration,
    patch: &serde_json::Value,
) -> Result<K, KubeOpError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    call(
        id,
        "patch",
        timeout,
        api.patch(&id.name, &PatchParams::default(), &Patch::Merge(patch)),
    )
    .await
}

/// What [`upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Updated,
    Unchanged,
}

fn is_conflict(e: &KubeOpError) -> bool {
    e.status_code() == Some(409)
}

/// Create-or-update `id` (see the module contract). `create` builds the object when it is
/// missing; `update` returns the object to write given the live one, or `None` when the live one
/// is already as desired. `cached` (from a reflector) is only used to skip the call entirely.
pub async fn upsert<K>(
    api: &Api<K>,
    id: &ObjectId,
    timeout: Duration,
    cached: Option<Arc<K>>,
    create: impl Fn() -> K,
    update: impl Fn(&K) -> Option<K>,
) -> Result<Written, KubeOpError>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    if let Some(cached) = cached
        && update(&cached).is_none()
    {
        return Ok(Written::Unchanged);
    }
    for _ in 0..MAX_ATTEMPTS {
        match get_opt(api, id, timeout).await? {
            None => {
                let obj = create();
                match call(
                    id,
                    "create",
                    timeout,
                    api.create(&PostParams::default(), &obj),
                )
                .await
                {
                    Ok(_) => return Ok(Written::Created),
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            Some(live) => {
                let Some(mut obj) = update(&live) else {
                    return Ok(Written::Unchanged);
                };
                obj.meta_mut().resource_version = live.meta().resource_version.clone();
                match call(
                    id,
                    "update",
                    timeout,
                    api.replace(&id.name, &PostParams::default(), &obj),
                )
                .await
                {
                    Ok(_) => return Ok(Written::Updated),
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(KubeOpError::Conflict {
        kind: id.kind.clone(),
        namespace: id.namespace.clone(),
        name: id.name.clone(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Update an object that must exist: like [`upsert`] but a missing object is `Ok(None)`.
pub async fn update_existing<K>(
    api: &Api<K>,
    id: &ObjectId,
    timeout: Duration,
    update: impl Fn(&K) -> Option<K>,
) -> Result<Option<Written>, KubeOpError>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    for _ in 0..MAX_ATTEMPTS {
        let Some(live) = get_opt(api, id, timeout).await? else {
            return Ok(None);
        };
        let Some(mut obj) = update(&live) else {
            return Ok(Some(Written::Unchanged));
        };
        obj.meta_mut().resource_version = live.meta().resource_version.clone();
        match call(
            id,
            "update",
            timeout,
            api.replace(&id.name, &PostParams::default(), &obj),
        )
        .await
        {
            Ok(_) => return Ok(Some(Written::Updated)),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(KubeOpError::Conflict {
        kind: id.kind.clone(),
        namespace: id.namespace.clone(),
        name: id.name.clone(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Owner references of a generated object: this Canary as controller, plus pre-existing owners
/// that are not Canaries, demoted to `controller: false` (upstream does this for config copies).
pub fn merge_owner_references(
    canary: &CanaryRef,
    existing: Option<&Vec<OwnerReference>>,
) -> Vec<OwnerReference> {
    let mut refs = vec![canary.owner_reference()];
    for o in existing.into_iter().flatten() {
        if o.uid == canary.uid || o.kind == canary.kind {
            continue;
        }
        refs.push(OwnerReference {
            controller: Some(false),
            ..o.clone()
        });
    }
    refs
}

/// Does a label/annotation key belong to Flux (never copied from the target to generated objects)?
pub fn is_flux_key(key: &str) -> bool {
    key.contains("toolkit.fluxcd.io")
}

/// Annotations Flagger adds to generated Services and mesh objects so Flux leaves them alone.
pub const FLUX_DISABLE_ANNOTATIONS: &[(&str, &str)] = &[
    ("kustomize.toolkit.fluxcd.io/reconcile", "disabled"),
    ("helm.toolkit.fluxcd.io/driftDetection", "disabled"),
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn labels() -> Vec<String> {
        DEFAULT_SELECTOR_LABELS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn deployment(match_labels: &[(&str, &str)]) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some("podinfo".into());
        d.metadata.namespace = Some("test".into());
        d.spec = Some(DeploymentSpec {
            selector: LabelSelector {
                match_labels: Some(
                    match_labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        });
        d
    }

    #[test]
    fn selector_label_follows_the_flag_order() {
        let d = deployment(&[("name", "n"), ("app", "a")]);
        let s = SelectorLabel::of_deployment(&d, &labels()).unwrap();
        assert_eq!((s.key.as_str(), s.value.as_str()), ("app", "a"));
        assert_eq!(s.primary_value(), "a-primary");
        let d = deployment(&[("app.kubernetes.io/name", "x")]);
        assert_eq!(
            SelectorLabel::of_deployment(&d, &labels()).unwrap().key,
            "app.kubernetes.io/name"
        );
    }

    #[test]
    fn missing_selector_label_uses_upstreams_text() {
        let d = deployment(&[("tier", "web")]);
        let err = SelectorLabel::of_deployment(&d, &labels()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "deployment podinfo.test spec.selector.matchLabels must contain one of [app name app.kubernetes.io/name]"
        );
    }

    #[test]
    fn owner_references_keep_foreign_owners_as_non_controllers() {
        let canary = crate::kubeops::tests_support::canary_ref();
        let foreign = OwnerReference {
            api_version: "v1".into(),
            kind: "Foo".into(),
            name: "x".into(),
            uid: "u-foo".into(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let old_self = canary.owner_reference();
        let refs = merge_owner_references(&canary, Some(&vec![foreign, old_self]));
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0], canary.owner_reference());
        assert_eq!(refs[1].uid, "u-foo");
        assert_eq!(refs[1].controller, Some(false));
    }
}

/// Fixtures shared by the unit tests of the workload and router builders.
#[cfg(test)]
pub(crate) mod tests_support {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use flagger_rollout::{CanaryInput, MeshProvider, ObjectRefInput, ServiceInput};

    /// `podinfo.test` targeting Deployment `podinfo`, with `service`.
    pub fn input_with(service: ServiceInput) -> CanaryInput {
        CanaryInput {
            name: "podinfo".into(),
            namespace: "test".into(),
            target_ref: Some(ObjectRefInput {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: Some("podinfo".into()),
            }),
            service: Some(service),
            ..Default::default()
        }
    }

    pub fn spec_with(service: ServiceInput) -> CanarySpec {
        CanarySpec::new(&input_with(service), MeshProvider::Istio).unwrap()
    }

    pub fn canary_ref_with(spec: CanarySpec) -> CanaryRef {
        CanaryRef {
            key: CanaryKey::new("test", "podinfo"),
            uid: "uid-canary".into(),
            api_version: "flagger.app/v1beta1".into(),
            kind: "Canary".into(),
            spec,
            selector: SelectorLabel {
                key: "app".into(),
                value: "podinfo".into(),
            },
        }
    }

    pub fn canary_ref() -> CanaryRef {
        canary_ref_with(spec_with(ServiceInput {
            port: Some(9898),
            ..Default::default()
        }))
    }
}
