//! The resource registry (owner: testbed-discovery helper): which resources the API server serves,
//! under which group/versions, with their kind, names, scope, subresources, schemas and printer
//! columns.
//!
//! CONTRACT (used by the API handlers, discovery and the OpenAPI documents):
//! - [`Registry::builtin`] serves the built-in resources (core/v1, events.k8s.io/v1, apps/v1,
//!   autoscaling/v2, coordination.k8s.io/v1, apiextensions.k8s.io/v1) and the Istio
//!   `networking.istio.io` CRDs of `crds/` (VirtualService, DestinationRule, Gateway).
//! - [`Registry::resolve`] answers only for *served* versions; a resource is stored once, whatever
//!   version it is read or written through (`conversion: None`: only `apiVersion` differs).
//! - [`Registry::spawn_crd_controller`] keeps the registry equal to the CRD objects in the store:
//!   a created/updated CRD is served within a second, a deleted one stops being served.
//!
//! HorizontalPodAutoscalers are served as autoscaling/v2 (preferred and storage) and, for
//! manifests written for older clusters (the seed's HPA is autoscaling/v2beta1), as v2beta2 and
//! v2beta1 aliases of the same storage. The aliases do no field conversion: a v2beta1 object is
//! stored as written, with `apiVersion` rewritten to the version it is read through.
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::schema::Schema;
use crate::store::{EventType, ResourceId, Store, TypeInfo};
use crate::table::{self, Column};

/// The verbs every served resource supports.
pub const RESOURCE_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// The order the real API server lists the built-in groups in.
const BUILTIN_GROUP_ORDER: &[&str] = &[
    "",
    "apps",
    "events.k8s.io",
    "autoscaling",
    "coordination.k8s.io",
    "apiextensions.k8s.io",
];
/// The verbs of the `status` and `scale` subresources.
pub const SUBRESOURCE_VERBS: &[&str] = &["get", "patch", "update"];

/// One resource type (e.g. `deployments.apps`), with every version it is served under.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// "" for the core group.
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// In the order of Kubernetes version priority: the first served version is the preferred one.
    pub versions: Vec<VersionInfo>,
    pub status_subresource: bool,
    pub scale_subresource: bool,
    /// Where the `scale` subresource reads and writes replicas (set iff `scale_subresource`).
    pub scale_paths: Option<ScalePaths>,
    /// The CRD that defines this resource (`<plural>.<group>`); `None` for built-ins.
    pub crd_name: Option<String>,
}

/// One version of a resource type.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    /// The structural schema of a CRD version (pruning, defaults, validation); `None` for built-ins.
    pub schema: Option<Arc<Schema>>,
    /// Table columns for this version (`additionalPrinterColumns` for CRDs).
    pub columns: Vec<Column>,
    /// The raw `openAPIV3Schema` of a CRD version, for the OpenAPI v3 documents.
    pub openapi_schema: Option<Arc<Value>>,
}

/// `subresources.scale` of a CRD (JSON paths in the `.spec.replicas` form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

impl ResourceType {
    /// `deployments.apps`, or `configmaps` for the core group.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The version clients should use (the first served one by Kubernetes version priority).
    pub fn preferred_version(&self) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.served)
    }

    /// The version objects are stored in.
    pub fn storage_version(&self) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.storage)
    }

    /// A served version by name.
    pub fn version(&self, name: &str) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.served && v.name == name)
    }

    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }
}

/// Why a CRD cannot be served; messages name the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CrdError {
    #[error("spec.{field}: Required value")]
    Missing { field: String },
    #[error("spec.{field}: Invalid value: {message}")]
    Invalid { field: String, message: String },
    #[error(
        "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group ({expected:?})"
    )]
    NameMismatch { name: String, expected: String },
    #[error("spec.versions[{index}].schema.openAPIV3Schema: Invalid value: {message}")]
    Schema { index: usize, message: String },
    #[error("{resource} is already served by {owner}")]
    NameConflict { resource: String, owner: String },
}

/// The set of served resources; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Registry(Arc<RwLock<Inner>>);

#[derive(Default)]
struct Inner {
    types: BTreeMap<(String, String), Arc<ResourceType>>,
    /// Bumped on every change, so discovery/OpenAPI documents can be cached and hashed.
    generation: u64,
    /// CRD name -> (the spec it was served from, its resource), to skip unchanged re-applies.
    crds: BTreeMap<String, (Value, Arc<ResourceType>)>,
}

/// The Istio CRDs installed at start, as a real mesh installation would have them.
pub const ISTIO_CRDS: &[&str] = &[
    include_str!("crds/virtualservices.networking.istio.io.yaml"),
    include_str!("crds/destinationrules.networking.istio.io.yaml"),
    include_str!("crds/gateways.networking.istio.io.yaml"),
];

/// The Istio CRD objects (parsed from [`ISTIO_CRDS`]).
pub fn istio_crds() -> Vec<Value> {
    ISTIO_CRDS
        .iter()
        .filter_map(|y| match serde_saphyr::from_str::<Value>(y) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(error = %e, "embedded Istio CRD does not parse");
                None
            }
        })
        .collect()
}

struct Builtin {
    group: &'static str,
    versions: &'static [&'static str],
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    scale: bool,
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        versions: &["v1"],
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        status: true,
        scale: false,
    },
    Builtin {
        group: "",
        versions: &["v1"],
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        status: false,
        scale: false,
    },
    Builtin {
        group: "",
        versions: &["v1"],
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
        scale: false,
    },
    Builtin {
        group: "",
        versions: &["v1"],
        plural: "services",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        status: true,
        scale: false,
    },
    Builtin {
        group: "",
        versions: &["v1"],
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        status: false,
        scale: false,
    },
    Builtin {
        group: "",
        versions: &["v1"],
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        status: true,
        scale: false,
    },
    Builtin {
        group: "events.k8s.io",
        versions: &["v1"],
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        status: false,
        scale: false,
    },
    Builtin {
        group: "apps",
        versions: &["v1"],
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        status: true,
        scale: true,
    },
    Builtin {
        group: "apps",
        versions: &["v1"],
        plural: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        status: true,
        scale: true,
    },
    Builtin {
        group: "autoscaling",
        versions: &["v2", "v2beta2", "v2beta1"],
        plural: "horizontalpodautoscalers",
        kind: "HorizontalPodAutoscaler",
        namespaced: true,
        short_names: &["hpa"],
        categories: &["all"],
        status: true,
        scale: false,
    },
    Builtin {
        group: "coordination.k8s.io",
        versions: &["v1"],
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
        scale: false,
    },
    Builtin {
        group: "apiextensions.k8s.io",
        versions: &["v1"],
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        status: true,
        scale: false,
    },
];

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

fn builtin_type(b: &Builtin) -> ResourceType {
    let columns = table::builtin_columns(b.group, b.plural);
    let versions = b
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| VersionInfo {
            name: v.to_string(),
            served: true,
            storage: i == 0,
            schema: None,
            columns: columns.clone(),
            openapi_schema: None,
        })
        .collect();
    ResourceType {
        group: b.group.to_string(),
        plural: b.plural.to_string(),
        singular: b.kind.to_lowercase(),
        kind: b.kind.to_string(),
        list_kind: format!("{}List", b.kind),
        namespaced: b.namespaced,
        short_names: strings(b.short_names),
        categories: strings(b.categories),
        versions,
        status_subresource: b.status,
        scale_subresource: b.scale,
        scale_paths: b.scale.then(|| ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: Some(".status.selector".into()),
        }),
        crd_name: None,
    }
}

impl Registry {
    /// An empty registry (serves nothing).
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// The built-in resources plus the Istio CRDs.
    pub fn builtin() -> Registry {
        let reg = Registry::default();
        {
            let mut inner = reg.write();
            for b in BUILTINS {
                let t = builtin_type(b);
                inner
                    .types
                    .insert((t.group.clone(), t.plural.clone()), Arc::new(t));
            }
            inner.generation += 1;
        }
        for crd in istio_crds() {
            if let Err(e) = reg.apply_crd(&crd) {
                tracing::error!(error = %e, "embedded Istio CRD is not servable");
            }
        }
        reg
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Writers replace whole map entries, so a poisoned lock still holds a consistent map.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Callers bump `generation` when they change something.
    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The resource served at `/apis/<group>/<version>/<plural>` (group "" = `/api/v1`), if that
    /// version is served.
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        let inner = self.read();
        let t = inner.types.get(&(group.to_string(), plural.to_string()))?;
        t.version(version).is_some().then(|| t.clone())
    }

    /// The resource of `kind` served in `group`/`version` (e.g. for ownerReferences).
    pub fn resolve_kind(
        &self,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Option<Arc<ResourceType>> {
        let inner = self.read();
        inner
            .types
            .values()
            .find(|t| t.group == group && t.kind == kind && t.version(version).is_some())
            .cloned()
    }

    /// The resource `group`/`plural`, whatever its versions.
    pub fn get(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.read()
            .types
            .get(&(group.to_string(), plural.to_string()))
            .cloned()
    }

    /// Every resource, ordered by (group, plural).
    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        self.read().types.values().cloned().collect()
    }

    /// Changes whenever a resource is registered or removed.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Every served group with its served versions, preferred first. The core group ("") is
    /// included; groups are in the order the real server lists them (built-ins first, by name).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let inner = self.read();
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in inner.types.values() {
            let vs = groups.entry(t.group.clone()).or_default();
            for v in t.versions.iter().filter(|v| v.served) {
                if !vs.contains(&v.name) {
                    vs.push(v.name.clone());
                }
            }
        }
        let mut out: Vec<(String, Vec<String>)> = groups
            .into_iter()
            .filter(|(_, vs)| !vs.is_empty())
            .map(|(g, mut vs)| {
                vs.sort_by(|a, b| version_priority(a, b));
                (g, vs)
            })
            .collect();
        // kubectl resolves an ambiguous short name (`ev`) to the first group listed.
        let rank = |g: &str| {
            BUILTIN_GROUP_ORDER
                .iter()
                .position(|b| *b == g)
                .unwrap_or(BUILTIN_GROUP_ORDER.len())
        };
        out.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
        out
    }

    /// Registers (or updates) the resource a CRD defines. Fails, leaving the registry unchanged,
    /// if the CRD is malformed or its names are taken by another resource.
    pub fn apply_crd(&self, crd: &Value) -> Result<Arc<ResourceType>, CrdError> {
        let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
        {
            // Status writes and resyncs re-apply unchanged CRDs: keep the generation still.
            let inner = self.read();
            if let Some(name) = str_at(crd, &["metadata", "name"])
                && let Some((s, t)) = inner.crds.get(name)
                && *s == spec
            {
                return Ok(t.clone());
            }
        }
        let t = Arc::new(resource_from_crd(crd)?);
        let key = (t.group.clone(), t.plural.clone());
        let mut inner = self.write();
        if let Some(existing) = inner.types.get(&key)
            && existing.crd_name != t.crd_name
        {
            return Err(CrdError::NameConflict {
                resource: t.qualified(),
                owner: existing
                    .crd_name
                    .clone()
                    .unwrap_or_else(|| "a built-in resource".into()),
            });
        }
        if let Some(other) = inner
            .types
            .values()
            .find(|o| o.group == t.group && o.kind == t.kind && o.crd_name != t.crd_name)
        {
            return Err(CrdError::NameConflict {
                resource: format!("kind {} in group {}", t.kind, t.group),
                owner: other.qualified(),
            });
        }
        // A CRD whose names changed stops serving the old ones.
        inner
            .types
            .retain(|k, o| *k == key || o.crd_name.is_none() || o.crd_name != t.crd_name);
        inner.crds.retain(|_, (_, o)| o.crd_name != t.crd_name);
        inner.types.insert(key, t.clone());
        if let Some(name) = &t.crd_name {
            inner.crds.insert(name.clone(), (spec, t.clone()));
        }
        inner.generation += 1;
        Ok(t)
    }

    /// Serves the CRDs stored in `store` and keeps following them: a created or updated
    /// CustomResourceDefinition is served as soon as its event arrives (well within a second) and
    /// gets its status written (`NamesAccepted` and `Established` conditions, `acceptedNames`,
    /// `storedVersions`); a deleted one stops being served and its objects are deleted.
    ///
    /// Also installs the Istio CRDs ([`ISTIO_CRDS`]) into the store if they are absent, as a mesh
    /// installation would have. Must be called from within a Tokio runtime; the task ends with
    /// `shutdown`.
    pub fn spawn_crd_controller(&self, store: Store, shutdown: CancellationToken) {
        let crds = crd_resource_id();
        // Subscribe before the initial sync so no change falls between the two.
        let mut rx = store.subscribe();
        for crd in istio_crds() {
            let name = str_at(&crd, &["metadata", "name"])
                .unwrap_or_default()
                .to_string();
            if store.get(&crds, "", &name).is_none()
                && let Err(e) = store.create(&crds, crd)
            {
                tracing::error!(crd = %name, error = ?e, "cannot install Istio CRD");
            }
        }
        self.resync(&store);
        let reg = self.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    ev = rx.recv() => ev,
                };
                match ev {
                    Ok(ev) if ev.resource == crds => match ev.kind {
                        EventType::Deleted => {
                            reg.crd_deleted(&store, &ev.object);
                            // A CRD refused for a name conflict may be servable now.
                            reg.resync(&store);
                        }
                        EventType::Added | EventType::Modified => reg.reconcile(&store, &ev.object),
                    },
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => reg.resync(&store),
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// Makes the CRD-defined part of the registry equal to the CRDs in the store.
    fn resync(&self, store: &Store) {
        let stored = store.list(&crd_resource_id(), None);
        let names: Vec<String> = stored
            .iter()
            .filter_map(|c| str_at(c, &["metadata", "name"]).map(str::to_string))
            .collect();
        let orphans: Vec<String> = self
            .all()
            .into_iter()
            .filter_map(|t| t.crd_name.clone())
            .filter(|n| !names.contains(n))
            .collect();
        for name in orphans {
            self.remove_crd(&name);
        }
        for crd in stored {
            self.reconcile(store, &crd);
        }
    }

    /// Serves one CRD (unless it is being deleted) and writes its status.
    fn reconcile(&self, store: &Store, crd: &Value) {
        let Some(name) = str_at(crd, &["metadata", "name"]).map(str::to_string) else {
            return;
        };
        if crd
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            // Terminating: stop serving new objects, as the real server stops accepting them.
            self.remove_crd(&name);
            return;
        }
        let outcome = self.apply_crd(crd);
        if let Ok(t) = &outcome {
            store.register_type(
                &ResourceId::new(&t.group, &t.plural),
                TypeInfo {
                    status_subresource: t.status_subresource,
                },
            );
        }
        let conditions: [(&str, bool, &str, String); 2] = match &outcome {
            Ok(_) => [
                (
                    "NamesAccepted",
                    true,
                    "NoConflicts",
                    "no conflicts found".into(),
                ),
                (
                    "Established",
                    true,
                    "InitialNamesAccepted",
                    "the initial names have been accepted".into(),
                ),
            ],
            Err(e @ CrdError::NameConflict { .. }) => [
                ("NamesAccepted", false, "NameConflict", e.to_string()),
                (
                    "Established",
                    false,
                    "NotAccepted",
                    "not all names are accepted".into(),
                ),
            ],
            Err(e) => [
                ("NamesAccepted", false, "InvalidSpec", e.to_string()),
                (
                    "Established",
                    false,
                    "NotAccepted",
                    "the CRD is not valid".into(),
                ),
            ],
        };
        let accepted = outcome.as_ref().ok().map(|t| {
            let mut names = serde_json::json!({
                "plural": t.plural, "singular": t.singular, "kind": t.kind, "listKind": t.list_kind,
            });
            if let Some(m) = names.as_object_mut() {
                if !t.short_names.is_empty() {
                    m.insert("shortNames".into(), serde_json::json!(t.short_names));
                }
                if !t.categories.is_empty() {
                    m.insert("categories".into(), serde_json::json!(t.categories));
                }
            }
            (names, t.storage_version().map(|v| v.name.clone()))
        });
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let res = store.modify(&crd_resource_id(), "", &name, true, |obj| {
            write_crd_status(obj, &conditions, accepted, &now);
        });
        if let Err(e) = res
            && e.code != 404
        {
            tracing::warn!(crd = %name, error = ?e, "cannot write CRD status");
        }
    }

    /// A CRD is gone: stop serving it and delete its objects, as the real server does.
    fn crd_deleted(&self, store: &Store, crd: &Value) {
        let Some(name) = str_at(crd, &["metadata", "name"]) else {
            return;
        };
        let Some(t) = self.remove_crd(name) else {
            return;
        };
        let rid = ResourceId::new(&t.group, &t.plural);
        for obj in store.list(&rid, None) {
            let ns = str_at(&obj, &["metadata", "namespace"]).unwrap_or_default();
            let n = str_at(&obj, &["metadata", "name"]).unwrap_or_default();
            if let Err(e) = store.delete(&rid, ns, n)
                && e.code != 404
            {
                tracing::warn!(resource = %rid.qualified(), name = %n, error = ?e, "cannot delete object of a deleted CRD");
            }
        }
    }

    /// Stops serving the resources of the CRD named `crd_name`; returns what was removed.
    pub fn remove_crd(&self, crd_name: &str) -> Option<Arc<ResourceType>> {
        let mut inner = self.write();
        let key = inner
            .types
            .iter()
            .find(|(_, t)| t.crd_name.as_deref() == Some(crd_name))
            .map(|(k, _)| k.clone())?;
        inner.crds.remove(crd_name);
        inner.generation += 1;
        inner.types.remove(&key)
    }
}

fn crd_resource_id() -> ResourceId {
    ResourceId::new("apiextensions.k8s.io", "customresourcedefinitions")
}

/// Sets the CRD status conditions (keeping `lastTransitionTime` when a condition's status does not
/// change, so an unchanged CRD gets an unchanged status and the store emits nothing).
fn write_crd_status(
    obj: &mut Value,
    conditions: &[(&str, bool, &str, String)],
    accepted: Option<(Value, Option<String>)>,
    now: &str,
) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let status = root
        .entry("status")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !status.is_object() {
        *status = Value::Object(serde_json::Map::new());
    }
    let Some(status) = status.as_object_mut() else {
        return;
    };
    let old: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut new_conditions = Vec::new();
    for (type_, ok, reason, message) in conditions {
        let s = if *ok { "True" } else { "False" };
        let since = old
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
            .filter(|c| c.get("status").and_then(Value::as_str) == Some(s))
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| Value::String(now.to_string()));
        new_conditions.push(serde_json::json!({
            "type": type_, "status": s, "lastTransitionTime": since, "reason": reason, "message": message,
        }));
    }
    // Conditions of other types (set by someone else) are kept.
    for c in old {
        let t = c.get("type").and_then(Value::as_str).unwrap_or_default();
        if !conditions.iter().any(|(ty, ..)| *ty == t) {
            new_conditions.push(c);
        }
    }
    status.insert("conditions".into(), Value::Array(new_conditions));
    if let Some((names, storage)) = accepted {
        status.insert("acceptedNames".into(), names);
        let mut stored: Vec<Value> = status
            .get("storedVersions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(v) = storage
            && !stored.iter().any(|s| s.as_str() == Some(v.as_str()))
        {
            stored.push(Value::String(v));
        }
        status.insert("storedVersions".into(), Value::Array(stored));
    } else if !status.contains_key("acceptedNames") {
        status.insert(
            "acceptedNames".into(),
            serde_json::json!({ "plural": "", "kind": "" }),
        );
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn string_list(v: Option<&Value>, field: &str) -> Result<Vec<String>, CrdError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(xs)) => xs
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| CrdError::Invalid {
                        field: field.into(),
                        message: "must be a list of strings".into(),
                    })
            })
            .collect(),
        Some(_) => Err(CrdError::Invalid {
            field: field.into(),
            message: "must be a list of strings".into(),
        }),
    }
}

/// The resource a `apiextensions.k8s.io/v1` CustomResourceDefinition defines.
pub fn resource_from_crd(crd: &Value) -> Result<ResourceType, CrdError> {
    let req = |path: &[&str], field: &str| -> Result<String, CrdError> {
        match str_at(crd, path) {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(CrdError::Missing {
                field: field.into(),
            }),
        }
    };
    let group = req(&["spec", "group"], "group")?;
    let plural = req(&["spec", "names", "plural"], "names.plural")?;
    let kind = req(&["spec", "names", "kind"], "names.kind")?;
    let singular = str_at(crd, &["spec", "names", "singular"])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let list_kind = str_at(crd, &["spec", "names", "listKind"])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{kind}List"));
    let namespaced = match str_at(crd, &["spec", "scope"]) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        None => {
            return Err(CrdError::Missing {
                field: "scope".into(),
            });
        }
        Some(other) => {
            return Err(CrdError::Invalid {
                field: "scope".into(),
                message: format!("{other:?}: supported values: \"Cluster\", \"Namespaced\""),
            });
        }
    };
    let expected = format!("{plural}.{group}");
    let name = str_at(crd, &["metadata", "name"]).unwrap_or_default();
    if name != expected {
        return Err(CrdError::NameMismatch {
            name: name.to_string(),
            expected,
        });
    }
    let names = crd.pointer("/spec/names");
    let short_names = string_list(names.and_then(|n| n.get("shortNames")), "names.shortNames")?;
    let categories = string_list(names.and_then(|n| n.get("categories")), "names.categories")?;

    let Some(raw_versions) = crd.pointer("/spec/versions").and_then(Value::as_array) else {
        return Err(CrdError::Missing {
            field: "versions".into(),
        });
    };
    if raw_versions.is_empty() {
        return Err(CrdError::Missing {
            field: "versions".into(),
        });
    }
    let mut versions = Vec::new();
    let mut status_subresource = false;
    let mut scale_paths = None;
    for (i, v) in raw_versions.iter().enumerate() {
        let vname = match v.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => {
                return Err(CrdError::Missing {
                    field: format!("versions[{i}].name"),
                });
            }
        };
        let flag = |k: &str| -> Result<bool, CrdError> {
            match v.get(k) {
                Some(Value::Bool(b)) => Ok(*b),
                None => Ok(false),
                Some(_) => Err(CrdError::Invalid {
                    field: format!("versions[{i}].{k}"),
                    message: "must be a boolean".into(),
                }),
            }
        };
        let (served, storage) = (flag("served")?, flag("storage")?);
        let raw_schema = v.pointer("/schema/openAPIV3Schema");
        let schema = match raw_schema {
            Some(s) => Some(Arc::new(
                Schema::new(s).map_err(|message| CrdError::Schema { index: i, message })?,
            )),
            None => None,
        };
        let printer = v
            .get("additionalPrinterColumns")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        if let Some(sub) = v.get("subresources") {
            status_subresource |= sub.get("status").is_some_and(|s| !s.is_null());
            if let Some(scale) = sub.get("scale").filter(|s| !s.is_null()) {
                let spec_replicas = scale
                    .get("specReplicasPath")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CrdError::Missing {
                        field: format!("versions[{i}].subresources.scale.specReplicasPath"),
                    })?;
                let status_replicas = scale
                    .get("statusReplicasPath")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CrdError::Missing {
                        field: format!("versions[{i}].subresources.scale.statusReplicasPath"),
                    })?;
                scale_paths = Some(ScalePaths {
                    spec_replicas: spec_replicas.into(),
                    status_replicas: status_replicas.into(),
                    label_selector: scale
                        .get("labelSelectorPath")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                });
            }
        }
        versions.push(VersionInfo {
            name: vname,
            served,
            storage,
            schema,
            columns: table::crd_columns(&printer),
            openapi_schema: raw_schema.cloned().map(Arc::new),
        });
    }
    let storage_count = versions.iter().filter(|v| v.storage).count();
    if storage_count != 1 {
        return Err(CrdError::Invalid {
            field: "versions".into(),
            message: format!(
                "must have exactly one version marked as storage version, found {storage_count}"
            ),
        });
    }
    versions.sort_by(|a, b| version_priority(&a.name, &b.name));
    Ok(ResourceType {
        group,
        plural,
        singular,
        kind,
        list_kind,
        namespaced,
        short_names,
        categories,
        versions,
        status_subresource,
        scale_subresource: scale_paths.is_some(),
        scale_paths,
        crd_name: Some(expected),
    })
}

/// Kubernetes version priority (`Less` = `a` comes first): GA versions (v2 before v1), then betas,
/// then alphas (higher major, then higher minor first), then anything else alphabetically.
pub fn version_priority(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((0, major, 0));
        }
        for (rank, word) in [(1u8, "beta"), (2u8, "alpha")] {
            if let Some(minor) = tail.strip_prefix(word) {
                return Some((rank, major, minor.parse().ok()?));
            }
        }
        None
    }
    match (parse(a), parse(b)) {
        (Some((ra, ma, na)), Some((rb, mb, nb))) => ra.cmp(&rb).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn crd(name_plural: &str, versions: Value) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": { "name": format!("{name_plural}.example.com") },
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": { "plural": name_plural, "kind": "Widget", "shortNames": ["wd"], "categories": ["all"] },
                "versions": versions,
            }
        })
    }

    fn open_schema() -> Value {
        json!({ "openAPIV3Schema": { "type": "object", "properties": {
            "spec": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } } })
    }

    #[test]
    fn version_priority_orders_like_kubernetes() {
        let mut vs = vec![
            "v1alpha3",
            "v1",
            "v1beta1",
            "v2beta2",
            "v2",
            "foo",
            "v2beta1",
            "v10alpha1",
        ];
        vs.sort_by(|a, b| version_priority(a, b));
        assert_eq!(
            vs,
            vec![
                "v2",
                "v1",
                "v2beta2",
                "v2beta1",
                "v1beta1",
                "v10alpha1",
                "v1alpha3",
                "foo"
            ]
        );
    }

    #[test]
    fn builtins_have_kubectl_names_and_subresources() {
        let reg = Registry::builtin();
        let d = reg.resolve("apps", "v1", "deployments").unwrap();
        assert_eq!(d.kind, "Deployment");
        assert_eq!(d.short_names, vec!["deploy"]);
        assert_eq!(d.categories, vec!["all"]);
        assert!(d.status_subresource && d.scale_subresource);
        assert!(reg.resolve("apps", "v1beta1", "deployments").is_none());
        let ns = reg.resolve("", "v1", "namespaces").unwrap();
        assert!(!ns.namespaced);
        assert_eq!(ns.short_names, vec!["ns"]);
        for (g, v, p, short) in [
            ("", "v1", "services", "svc"),
            ("", "v1", "configmaps", "cm"),
            ("", "v1", "pods", "po"),
            ("", "v1", "events", "ev"),
            ("events.k8s.io", "v1", "events", "ev"),
            ("apps", "v1", "replicasets", "rs"),
            ("autoscaling", "v2", "horizontalpodautoscalers", "hpa"),
            (
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "crd",
            ),
        ] {
            let t = reg
                .resolve(g, v, p)
                .unwrap_or_else(|| panic!("{g}/{v} {p}"));
            assert!(
                t.short_names.iter().any(|s| s == short),
                "{p}: {:?}",
                t.short_names
            );
        }
        assert!(reg.resolve("coordination.k8s.io", "v1", "leases").is_some());
        assert!(reg.resolve("", "v1", "secrets").is_some());
        // The seed's HPA manifests (v2beta1) are accepted through aliases of the v2 storage.
        let hpa = reg
            .resolve("autoscaling", "v2beta1", "horizontalpodautoscalers")
            .unwrap();
        assert_eq!(hpa.preferred_version().unwrap().name, "v2");
        assert_eq!(hpa.storage_version().unwrap().name, "v2");
        assert!(
            reg.resolve("autoscaling", "v2beta2", "horizontalpodautoscalers")
                .is_some()
        );
        let groups = reg.groups();
        assert_eq!(groups[0].0, "", "core group first");
        let autoscaling = groups.iter().find(|(g, _)| g == "autoscaling").unwrap();
        assert_eq!(autoscaling.1, vec!["v2", "v2beta2", "v2beta1"]);
    }

    #[test]
    fn istio_resources_are_served_in_all_three_versions() {
        let reg = Registry::builtin();
        for (plural, kind, short) in [
            ("virtualservices", "VirtualService", "vs"),
            ("destinationrules", "DestinationRule", "dr"),
            ("gateways", "Gateway", "gw"),
        ] {
            for v in ["v1alpha3", "v1beta1", "v1"] {
                let t = reg
                    .resolve("networking.istio.io", v, plural)
                    .unwrap_or_else(|| panic!("{plural} {v}"));
                assert_eq!(t.kind, kind);
                assert_eq!(t.short_names, vec![short]);
                assert_eq!(t.categories, vec!["istio-io", "networking-istio-io"]);
                assert!(t.status_subresource);
                assert!(t.version(v).unwrap().schema.is_some());
            }
            let t = reg.get("networking.istio.io", plural).unwrap();
            assert_eq!(t.preferred_version().unwrap().name, "v1");
            assert_eq!(t.storage_version().unwrap().name, "v1alpha3");
            assert_eq!(
                t.crd_name.as_deref(),
                Some(&*format!("{plural}.networking.istio.io"))
            );
        }
        let vs = reg
            .resolve("networking.istio.io", "v1beta1", "virtualservices")
            .unwrap();
        let cols: Vec<_> = vs
            .version("v1beta1")
            .unwrap()
            .columns
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(cols, vec!["Name", "Gateways", "Hosts", "Age"]);
    }

    #[test]
    fn canary_crd_fixture_is_served_with_its_printer_columns() {
        let reg = Registry::empty();
        let yaml = include_str!("../tests/fixtures/canary-crd.yaml");
        let crd: Value = serde_saphyr::from_str(yaml).unwrap();
        let t = reg.apply_crd(&crd).unwrap();
        assert_eq!(t.qualified(), "canaries.flagger.app");
        assert_eq!(
            (t.kind.as_str(), t.list_kind.as_str(), t.singular.as_str()),
            ("Canary", "CanaryList", "canary")
        );
        assert!(t.namespaced && t.status_subresource && !t.scale_subresource);
        let v = t.version("v1beta1").unwrap();
        let names: Vec<_> = v
            .columns
            .iter()
            .filter(|c| c.priority == 0)
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(
            names,
            vec!["Name", "Status", "Weight", "LastTransitionTime"]
        );
        assert!(v.schema.is_some() && v.openapi_schema.is_some());
        assert!(reg.resolve("flagger.app", "v1beta1", "canaries").is_some());
        // Re-applying an unchanged CRD (as status writes do) keeps cached documents valid.
        let generation = reg.generation();
        let mut with_status = crd.clone();
        with_status["status"] = json!({ "conditions": [] });
        reg.apply_crd(&with_status).unwrap();
        assert_eq!(reg.generation(), generation);
        with_status["spec"]["names"]["shortNames"] = json!(["cn"]);
        assert_eq!(reg.apply_crd(&with_status).unwrap().short_names, vec!["cn"]);
        assert_ne!(reg.generation(), generation);
    }

    #[test]
    fn several_versions_scale_and_renames() {
        let reg = Registry::empty();
        let scale = json!({ "status": {}, "scale": {
            "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector" } });
        let c = crd(
            "widgets",
            json!([
                { "name": "v1alpha1", "served": true, "storage": false, "schema": open_schema() },
                { "name": "v1", "served": true, "storage": true, "schema": open_schema(), "subresources": scale },
                { "name": "v2", "served": false, "storage": false, "schema": open_schema() },
            ]),
        );
        let t = reg.apply_crd(&c).unwrap();
        assert_eq!(
            t.versions
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>(),
            ["v2", "v1", "v1alpha1"]
        );
        assert_eq!(
            t.preferred_version().unwrap().name,
            "v1",
            "v2 is not served"
        );
        assert!(reg.resolve("example.com", "v1alpha1", "widgets").is_some());
        assert!(reg.resolve("example.com", "v2", "widgets").is_none());
        assert!(t.scale_subresource && t.status_subresource);
        assert_eq!(
            t.scale_paths.as_ref().unwrap().label_selector.as_deref(),
            Some(".status.selector")
        );
        assert_eq!(
            reg.groups(),
            vec![(
                "example.com".to_string(),
                vec!["v1".to_string(), "v1alpha1".to_string()]
            )]
        );

        // Renaming the plural (a new CRD name) is a different CRD; the old one stays.
        let mut renamed = c.clone();
        renamed["spec"]["names"]["kind"] = json!("Gadget");
        renamed["spec"]["names"]["plural"] = json!("gadgets");
        renamed["metadata"]["name"] = json!("gadgets.example.com");
        reg.apply_crd(&renamed).unwrap();
        assert!(reg.resolve("example.com", "v1", "widgets").is_some());
        assert!(reg.resolve("example.com", "v1", "gadgets").is_some());
        assert_eq!(
            reg.remove_crd("widgets.example.com").unwrap().plural,
            "widgets"
        );
        assert!(reg.resolve("example.com", "v1", "widgets").is_none());
        assert!(reg.remove_crd("widgets.example.com").is_none());
    }

    #[test]
    fn bad_crds_are_refused_naming_the_field() {
        let reg = Registry::builtin();
        let ok_versions =
            json!([{ "name": "v1", "served": true, "storage": true, "schema": open_schema() }]);
        let mut c = crd("widgets", ok_versions.clone());
        c["metadata"]["name"] = json!("wrong.example.com");
        assert!(
            reg.apply_crd(&c)
                .unwrap_err()
                .to_string()
                .contains("metadata.name")
        );

        let mut c = crd("widgets", ok_versions.clone());
        c["spec"]["scope"] = json!("Galaxy");
        assert!(
            reg.apply_crd(&c)
                .unwrap_err()
                .to_string()
                .contains("spec.scope")
        );

        let mut c = crd("widgets", ok_versions.clone());
        c["spec"].as_object_mut().unwrap().remove("group");
        c["metadata"]["name"] = json!("widgets.");
        assert!(
            reg.apply_crd(&c)
                .unwrap_err()
                .to_string()
                .contains("spec.group")
        );

        let c = crd(
            "widgets",
            json!([{ "name": "v1", "served": true, "storage": false }]),
        );
        assert!(
            reg.apply_crd(&c)
                .unwrap_err()
                .to_string()
                .contains("storage version")
        );

        let c = crd("widgets", json!([]));
        assert!(
            reg.apply_crd(&c)
                .unwrap_err()
                .to_string()
                .contains("spec.versions")
        );

        let c = crd(
            "widgets",
            json!([{ "name": "v1", "served": true, "storage": true,
            "schema": { "openAPIV3Schema": { "type": 7 } } }]),
        );
        assert!(
            reg.apply_crd(&c)
                .unwrap_err()
                .to_string()
                .contains("spec.versions[0].schema.openAPIV3Schema")
        );

        // A CRD cannot take over a built-in resource.
        let mut c = crd("deployments", ok_versions);
        c["spec"]["group"] = json!("apps");
        c["metadata"]["name"] = json!("deployments.apps");
        assert!(matches!(
            reg.apply_crd(&c),
            Err(CrdError::NameConflict { .. })
        ));
        assert_eq!(
            reg.resolve("apps", "v1", "deployments").unwrap().crd_name,
            None
        );
    }

    async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        for _ in 0..100 {
            if let Some(x) = f() {
                return x;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within a second: {what}");
    }

    #[tokio::test]
    async fn crd_controller_serves_created_crds_and_forgets_deleted_ones() {
        let store = Store::default();
        let reg = Registry::builtin();
        let stop = CancellationToken::new();
        reg.spawn_crd_controller(store.clone(), stop.clone());
        let crds = crd_resource_id();

        // The Istio CRDs are installed as objects, with status.
        let vs = eventually("Istio CRD established", || {
            store
                .get(&crds, "", "virtualservices.networking.istio.io")
                .filter(|o| o.pointer("/status/conditions").is_some())
        })
        .await;
        assert_eq!(vs["status"]["acceptedNames"]["kind"], "VirtualService");

        let yaml = include_str!("../tests/fixtures/canary-crd.yaml");
        store
            .create(&crds, serde_saphyr::from_str(yaml).unwrap())
            .unwrap();
        eventually("canaries served", || {
            reg.resolve("flagger.app", "v1beta1", "canaries")
        })
        .await;
        let stored = eventually("status written", || {
            store
                .get(&crds, "", "canaries.flagger.app")
                .filter(|o| o.pointer("/status/conditions").is_some())
        })
        .await;
        let conds = stored["status"]["conditions"].as_array().unwrap();
        for t in ["NamesAccepted", "Established"] {
            let c = conds.iter().find(|c| c["type"] == t).unwrap();
            assert_eq!(c["status"], "True", "{t}");
        }
        assert_eq!(stored["status"]["acceptedNames"]["plural"], "canaries");
        assert_eq!(stored["status"]["storedVersions"], json!(["v1beta1"]));
        // Status subresource registered with the store.
        assert!(
            store
                .type_info(&ResourceId::new("flagger.app", "canaries"))
                .status_subresource
        );
        // Writing the status once settles: a no-op afterwards.
        let rv = stored["metadata"]["resourceVersion"].clone();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            store.get(&crds, "", "canaries.flagger.app").unwrap()["metadata"]["resourceVersion"],
            rv
        );

        // A conflicting CRD is not served and says why.
        let mut clash = crd(
            "deployments",
            json!([{ "name": "v1", "served": true, "storage": true, "schema": open_schema() }]),
        );
        clash["spec"]["group"] = json!("apps");
        clash["metadata"]["name"] = json!("deployments.apps");
        store.create(&crds, clash).unwrap();
        let c = eventually("conflict reported", || {
            store
                .get(&crds, "", "deployments.apps")
                .filter(|o| o.pointer("/status/conditions").is_some())
        })
        .await;
        assert_eq!(c["status"]["conditions"][0]["status"], "False");
        assert_eq!(c["status"]["conditions"][0]["reason"], "NameConflict");

        // Objects of the CRD go with it.
        let canaries = ResourceId::new("flagger.app", "canaries");
        store
            .create(
                &ResourceId::new("", "namespaces"),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "test"}}),
            )
            .unwrap();
        store.create(&canaries, json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo", "namespace": "test"}, "spec": {}})).unwrap();
        store.delete(&crds, "", "canaries.flagger.app").unwrap();
        eventually("canaries gone", || {
            reg.resolve("flagger.app", "v1beta1", "canaries")
                .is_none()
                .then_some(())
        })
        .await;
        eventually("canary objects deleted", || {
            store.list(&canaries, None).is_empty().then_some(())
        })
        .await;
        stop.cancel();
    }
}
