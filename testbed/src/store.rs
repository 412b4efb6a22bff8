//! The in-memory object store (owner: testbed-api helper).
//!
//! CONTRACT used by `workloads/` and `mesh/` (keep these signatures; add freely):
//!
//! ```text
//! #[derive(Clone)] pub struct Store { /* Arc inside; cheap to clone */ }
//! #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
//! pub struct ResourceId { pub group: String, pub plural: String }   // "" group = core; version-agnostic
//! impl ResourceId { pub fn new(group: &str, plural: &str) -> Self; }
//! pub enum EventType { Added, Modified, Deleted }
//! pub struct StoreEvent { pub kind: EventType, pub resource: ResourceId, pub object: Arc<Value> }
//! impl Store {
//!     pub fn get(&self, r: &ResourceId, namespace: &str, name: &str) -> Option<Arc<Value>>;
//!     pub fn list(&self, r: &ResourceId, namespace: Option<&str>) -> Vec<Arc<Value>>;
//!     /// Create; fills uid, creationTimestamp, resourceVersion, generation (1).
//!     pub fn create(&self, r: &ResourceId, obj: Value) -> Result<Arc<Value>, ApiError>;
//!     /// Replace the main resource (spec side; status is kept from the stored object) or only
//!     /// the status (`status_only = true`). If `metadata.resourceVersion` is set it must match
//!     /// (409 otherwise). A write that changes nothing returns the stored object and emits nothing.
//!     pub fn update(&self, r: &ResourceId, obj: Value, status_only: bool) -> Result<Arc<Value>, ApiError>;
//!     /// Read-modify-write under the store lock (no conflicts): the closure edits a copy.
//!     pub fn modify(&self, r: &ResourceId, ns: &str, name: &str, status_only: bool,
//!                   f: impl FnOnce(&mut Value)) -> Result<Arc<Value>, ApiError>;
//!     pub fn delete(&self, r: &ResourceId, namespace: &str, name: &str) -> Result<Arc<Value>, ApiError>;
//!     /// Every committed change, in resourceVersion order, for in-process controllers.
//!     pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<StoreEvent>>;
//! }
//! ```
//!
//! Semantics (as a real API server has them):
//! - One global, strictly increasing resourceVersion (a u64 printed as a string). Every committed
//!   change gets the next one, deletions included (the DELETED event carries the deletion's RV).
//! - A write whose result equals the stored object commits nothing: same RV, no event. Controllers
//!   that write back what they read would otherwise wake themselves up forever.
//! - `generation` starts at 1 and grows on changes outside `metadata` (and outside `status` for
//!   types registered with a status subresource, see [`Store::register_type`]), and when a
//!   deletion timestamp is set.
//! - Status isolation: a main-resource update keeps the stored status; a status update keeps
//!   everything but the status (for types with a status subresource).
//! - Deletion: an object with finalizers only gets `deletionTimestamp`; it is removed when an update
//!   leaves its finalizer list empty. Owner references are garbage-collected synchronously:
//!   background (dependents deleted after the owner is removed), foreground (owner held with the
//!   `foregroundDeletion` finalizer until its dependents are gone) and orphan (the references are
//!   removed from dependents). A dependent with another live owner only loses the dangling reference.
//! - Namespaces: namespaced writes into a missing namespace are 404, into a terminating one 403;
//!   deleting a namespace marks it Terminating, deletes its content and removes it once empty.
//! - A bounded history of events serves watch resumption; events older than the history (or
//!   dropped by [`Store::compact`]) make a watch from that RV fail with 410 Gone.
//!
//! Differences from a real cluster, on purpose: garbage collection and namespace cleanup happen
//! inside the write that triggers them (no controller delay); an object whose owner never existed
//! is not collected.
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// A resource type, independent of its version. `group` is "" for the core group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    pub group: String,
    pub plural: String,
}

impl ResourceId {
    pub fn new(group: &str, plural: &str) -> Self {
        Self {
            group: group.to_string(),
            plural: plural.to_string(),
        }
    }

    /// `deployments.apps`, or `configmaps` for the core group, as the API server prints it.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn namespaces() -> Self {
        Self::new("", "namespaces")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Clone, Debug)]
pub struct StoreEvent {
    pub kind: EventType,
    pub resource: ResourceId,
    pub object: Arc<Value>,
    /// The resourceVersion this event committed (for a synthetic ADDED of a watch start, the
    /// object's own RV).
    pub rv: u64,
    /// The object before this change (None for ADDED), so selector-filtered watches can turn a
    /// MODIFIED into ADDED/DELETED when an object enters or leaves the selection.
    pub old: Option<Arc<Value>>,
}

impl StoreEvent {
    /// Whether a watch on `r` (in `namespace`, or all namespaces with `None`) sees this event.
    pub fn matches(&self, r: &ResourceId, namespace: Option<&str>) -> bool {
        &self.resource == r && namespace.is_none_or(|ns| namespace_of(&self.object) == ns)
    }
}

/// One `Status.details.causes[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub field: String,
    pub message: String,
}

/// A failed API operation, rendered as a Kubernetes `Status` object by the HTTP layer. Boxed so
/// `Result`s stay small; fields are reached through `Deref`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.message)]
pub struct ApiError(pub Box<ErrorDetails>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorDetails {
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`, `Gone`, `Forbidden`, ...
    pub reason: String,
    pub message: String,
    pub name: String,
    pub group: String,
    /// The resource (plural) or the kind, as the real server puts in `details.kind`.
    pub kind: String,
    pub causes: Vec<Cause>,
    /// Seconds, for 429 and some 5xx (`Retry-After` header and `details.retryAfterSeconds`).
    pub retry_after: Option<u64>,
}

impl std::ops::Deref for ApiError {
    type Target = ErrorDetails;
    fn deref(&self) -> &ErrorDetails {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorDetails {
        &mut self.0
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self(Box::new(ErrorDetails {
            code,
            reason: reason.to_string(),
            message: message.into(),
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            causes: Vec::new(),
            retry_after: None,
        }))
    }

    fn about(mut self, r: &ResourceId, name: &str) -> Self {
        self.name = name.to_string();
        self.group = r.group.clone();
        self.kind = r.plural.clone();
        self
    }

    pub fn not_found(r: &ResourceId, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", r.qualified()),
        )
        .about(r, name)
    }

    pub fn already_exists(r: &ResourceId, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", r.qualified()),
        )
        .about(r, name)
    }

    pub fn conflict(r: &ResourceId, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                r.qualified()
            ),
        )
        .about(r, name)
    }

    pub fn stale(r: &ResourceId, name: &str) -> Self {
        Self::conflict(
            r,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 with one cause per field. `kind` is the object's Kind (as the real server reports it).
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{what} \"{name}\" is invalid: {}", list.join(", ")),
        );
        e.name = name.to_string();
        e.group = group.to_string();
        e.kind = kind.to_string();
        e.causes = causes;
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn forbidden(r: &ResourceId, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", r.qualified()),
        )
        .about(r, name)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` body (kind Status, apiVersion v1, status Failure).
    pub fn to_status(&self) -> Value {
        let mut details = Map::new();
        if !self.name.is_empty() {
            details.insert("name".into(), json!(self.name));
        }
        if !self.group.is_empty() {
            details.insert("group".into(), json!(self.group));
        }
        if !self.kind.is_empty() {
            details.insert("kind".into(), json!(self.kind));
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(s) = self.retry_after {
            details.insert("retryAfterSeconds".into(), json!(s));
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !details.is_empty()
            && let Some(m) = status.as_object_mut()
        {
            m.insert("details".into(), Value::Object(details));
        }
        status
    }
}

/// How dependents are handled when an owner is deleted (`DeleteOptions.propagationPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

impl std::str::FromStr for Propagation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Background" => Ok(Self::Background),
            "Foreground" => Ok(Self::Foreground),
            "Orphan" => Ok(Self::Orphan),
            other => Err(format!(
                "unsupported propagationPolicy {other:?}: supported values: \"Orphan\", \"Background\", \"Foreground\""
            )),
        }
    }
}

/// `DeleteOptions` the store understands.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub propagation: Propagation,
    pub precondition_rv: Option<String>,
    pub precondition_uid: Option<String>,
}

/// Per-type behaviour the store needs (registered by whoever knows the type: the registry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TypeInfo {
    pub status_subresource: bool,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Events kept for watch resumption; older RVs get 410 Gone.
    pub history: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { history: 10_000 }
    }
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFrom {
    /// Synthetic ADDED events for the current objects, then live changes (`resourceVersion` "" or "0").
    Current,
    /// Every change strictly after this RV (410 Gone if the history no longer has it).
    After(u64),
}

/// The start of a watch: past events to send first, then the live receiver (filter it with
/// [`StoreEvent::matches`]; a lagged receiver must end the watch, since events were lost).
pub struct WatchStart {
    pub initial: Vec<Arc<StoreEvent>>,
    pub live: broadcast::Receiver<Arc<StoreEvent>>,
    /// The store RV at the moment the watch started.
    pub rv: u64,
}

type Key = (String, String); // (namespace, name)
type ObjRef = (ResourceId, String, String);

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<StoreEvent>>,
}

struct State {
    rv: u64,
    objects: HashMap<ResourceId, BTreeMap<Key, Arc<Value>>>,
    types: HashMap<ResourceId, TypeInfo>,
    history: VecDeque<Arc<StoreEvent>>,
    history_limit: usize,
    /// Events with rv <= this are gone from the history.
    compacted: u64,
    by_uid: HashMap<String, ObjRef>,
    /// owner uid -> objects that name it in ownerReferences.
    dependents: HashMap<String, BTreeSet<ObjRef>>,
    /// Objects removed during the current delete call, by uid (to return the deleted object).
    removed: HashMap<String, Arc<Value>>,
}

const LIVE_BUFFER: usize = 16_384;

/// Namespaces the real API server refuses to delete.
const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

impl Default for Store {
    fn default() -> Self {
        Self::new(StoreConfig::default())
    }
}

impl Store {
    pub fn new(cfg: StoreConfig) -> Self {
        let (tx, _) = broadcast::channel(LIVE_BUFFER);
        let mut types = HashMap::new();
        for (g, p) in [
            ("", "namespaces"),
            ("", "pods"),
            ("", "services"),
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("autoscaling", "horizontalpodautoscalers"),
            ("apiextensions.k8s.io", "customresourcedefinitions"),
        ] {
            types.insert(
                ResourceId::new(g, p),
                TypeInfo {
                    status_subresource: true,
                },
            );
        }
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    rv: 0,
                    objects: HashMap::new(),
                    types,
                    history: VecDeque::new(),
                    history_limit: cfg.history.max(1),
                    compacted: 0,
                    by_uid: HashMap::new(),
                    dependents: HashMap::new(),
                    removed: HashMap::new(),
                }),
                tx,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written object (writes are a single
        // map insert), so a poisoned lock is still usable.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the store how a type behaves (status subresource or not). Built-in types with a
    /// status subresource are pre-registered; CRDs are registered by the registry.
    pub fn register_type(&self, r: &ResourceId, info: TypeInfo) {
        self.lock().types.insert(r.clone(), info);
    }

    pub fn type_info(&self, r: &ResourceId) -> TypeInfo {
        self.lock().types.get(r).copied().unwrap_or_default()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, r: &ResourceId, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.lock().get(r, namespace, name)
    }

    pub fn list(&self, r: &ResourceId, namespace: Option<&str>) -> Vec<Arc<Value>> {
        self.snapshot(r, namespace).0
    }

    /// The objects of a type (sorted by namespace, name) and the store RV they are consistent with.
    pub fn snapshot(&self, r: &ResourceId, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let st = self.lock();
        (st.list(r, namespace), st.rv)
    }

    /// Every type that currently has objects (for whole-store checks in tests).
    pub fn resources(&self) -> Vec<ResourceId> {
        let st = self.lock();
        let mut v: Vec<ResourceId> = st
            .objects
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    pub fn create(&self, r: &ResourceId, obj: Value) -> Result<Arc<Value>, ApiError> {
        let mut st = self.lock();
        st.create(&self.inner.tx, r, obj)
    }

    pub fn update(
        &self,
        r: &ResourceId,
        obj: Value,
        status_only: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let mut st = self.lock();
        st.update(&self.inner.tx, r, obj, status_only)
    }

    pub fn modify(
        &self,
        r: &ResourceId,
        ns: &str,
        name: &str,
        status_only: bool,
        f: impl FnOnce(&mut Value),
    ) -> Result<Arc<Value>, ApiError> {
        let mut st = self.lock();
        let current = st
            .get(r, ns, name)
            .ok_or_else(|| ApiError::not_found(r, name))?;
        let mut copy = (*current).clone();
        f(&mut copy);
        // The closure works on the latest object under the lock, so the RV always matches.
        set_str(
            &mut copy,
            &["metadata", "resourceVersion"],
            &rv_of(&current),
        );
        set_str(&mut copy, &["metadata", "name"], name);
        if !ns.is_empty() {
            set_str(&mut copy, &["metadata", "namespace"], ns);
        }
        st.update(&self.inner.tx, r, copy, status_only)
    }

    pub fn delete(
        &self,
        r: &ResourceId,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.delete_with(r, namespace, name, &DeleteOptions::default())
    }

    /// Delete with options. Returns the object as it is after the call: still present (with a
    /// deletionTimestamp) if finalizers hold it, or its last state (with the deletion's RV).
    pub fn delete_with(
        &self,
        r: &ResourceId,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let mut st = self.lock();
        let tx = &self.inner.tx;
        let current = st
            .get(r, namespace, name)
            .ok_or_else(|| ApiError::not_found(r, name))?;
        if *r == ResourceId::namespaces() && PROTECTED_NAMESPACES.contains(&name) {
            return Err(ApiError::forbidden(
                r,
                name,
                "this namespace may not be deleted",
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && *rv != rv_of(&current)
        {
            return Err(ApiError::conflict(
                r,
                name,
                &format!(
                    "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({}). The object might have been modified",
                    rv_of(&current)
                ),
            ));
        }
        if let Some(uid) = &opts.precondition_uid
            && *uid != uid_of(&current)
        {
            return Err(ApiError::conflict(
                r,
                name,
                &format!(
                    "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                    uid_of(&current)
                ),
            ));
        }
        st.removed.clear();
        st.delete_object(tx, r, namespace, name, opts.propagation);
        let uid = uid_of(&current);
        let after = st
            .get(r, namespace, name)
            .or_else(|| st.removed.remove(&uid));
        st.removed.clear();
        Ok(after.unwrap_or(current))
    }

    /// Subscribes to every future change (for in-process controllers).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoreEvent>> {
        self.inner.tx.subscribe()
    }

    /// Starts a watch on a type: the events to send first and the live receiver, taken atomically
    /// so nothing is missed or repeated.
    pub fn watch(
        &self,
        r: &ResourceId,
        namespace: Option<&str>,
        from: WatchFrom,
    ) -> Result<WatchStart, ApiError> {
        let st = self.lock();
        let live = self.inner.tx.subscribe();
        let initial = match from {
            WatchFrom::Current => st
                .list(r, namespace)
                .into_iter()
                .map(|o| {
                    Arc::new(StoreEvent {
                        kind: EventType::Added,
                        resource: r.clone(),
                        rv: rv_of(&o).parse().unwrap_or(0),
                        object: o,
                        old: None,
                    })
                })
                .collect(),
            WatchFrom::After(rv) => {
                if rv < st.compacted {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        st.compacted + 1
                    )));
                }
                st.history
                    .iter()
                    .filter(|e| e.rv > rv && e.matches(r, namespace))
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart {
            initial,
            live,
            rv: st.rv,
        })
    }

    /// Whether a watch from `rv` could still be served (false = 410 Gone).
    pub fn rv_available(&self, rv: u64) -> bool {
        rv >= self.lock().compacted
    }

    /// Drops the whole event history: every watch resumed from an older RV gets 410 Gone.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.history.clear();
        st.compacted = st.rv;
    }

    pub fn set_history_limit(&self, limit: usize) {
        let mut st = self.lock();
        st.history_limit = limit.max(1);
        st.trim_history();
    }

    /// Checks the store's internal invariants (for tests): indexes agree with the objects, RVs
    /// are unique and not above the current RV, namespaced objects have their namespace.
    pub fn check_consistency(&self) -> Result<(), String> {
        let st = self.lock();
        let mut uids = HashSet::new();
        let mut rvs = HashSet::new();
        let mut count = 0usize;
        for (r, objs) in &st.objects {
            for ((ns, name), o) in objs {
                count += 1;
                if name_of(o) != *name || namespace_of(o) != *ns {
                    return Err(format!("{r:?} {ns}/{name}: key differs from metadata"));
                }
                let uid = uid_of(o);
                if uid.is_empty() || !uids.insert(uid.clone()) {
                    return Err(format!("{r:?} {ns}/{name}: missing or duplicate uid"));
                }
                if st.by_uid.get(&uid) != Some(&(r.clone(), ns.clone(), name.clone())) {
                    return Err(format!("{r:?} {ns}/{name}: uid index out of date"));
                }
                let rv: u64 = rv_of(o)
                    .parse()
                    .map_err(|_| format!("{ns}/{name}: bad rv"))?;
                if rv == 0 || rv > st.rv || !rvs.insert(rv) {
                    return Err(format!("{r:?} {ns}/{name}: rv {rv} invalid or reused"));
                }
                if !ns.is_empty() && st.get(&ResourceId::namespaces(), "", ns).is_none() {
                    return Err(format!("{r:?} {ns}/{name}: namespace missing"));
                }
                for owner in owner_uids(o) {
                    if !st
                        .dependents
                        .get(&owner)
                        .is_some_and(|d| d.contains(&(r.clone(), ns.clone(), name.clone())))
                    {
                        return Err(format!("{r:?} {ns}/{name}: dependents index out of date"));
                    }
                }
            }
        }
        if st.by_uid.len() != count {
            return Err(format!(
                "uid index has {} entries for {count} objects",
                st.by_uid.len()
            ));
        }
        Ok(())
    }
}

impl State {
    fn get(&self, r: &ResourceId, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(r)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    fn list(&self, r: &ResourceId, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let Some(objs) = self.objects.get(r) else {
            return Vec::new();
        };
        match namespace {
            None => objs.values().cloned().collect(),
            Some(ns) => objs
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, o)| o.clone())
                .collect(),
        }
    }

    fn has_status_subresource(&self, r: &ResourceId) -> bool {
        self.types.get(r).is_some_and(|t| t.status_subresource)
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
    }

    /// Commits `obj` (Added/Modified) or its removal (Deleted) with the next RV, updates the
    /// indexes, records history and notifies subscribers.
    fn commit(
        &mut self,
        tx: &broadcast::Sender<Arc<StoreEvent>>,
        kind: EventType,
        r: &ResourceId,
        mut obj: Value,
    ) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        set_str(&mut obj, &["metadata", "resourceVersion"], &rv.to_string());
        let ns = namespace_of(&obj);
        let name = name_of(&obj);
        let key = (ns.clone(), name.clone());
        let oref: ObjRef = (r.clone(), ns, name);
        let obj = Arc::new(obj);
        let old = if kind == EventType::Deleted {
            self.objects.get_mut(r).and_then(|m| m.remove(&key))
        } else {
            self.objects
                .entry(r.clone())
                .or_default()
                .insert(key, obj.clone())
        };
        if let Some(old) = &old {
            for owner in owner_uids(old) {
                if let Some(set) = self.dependents.get_mut(&owner) {
                    set.remove(&oref);
                    if set.is_empty() {
                        self.dependents.remove(&owner);
                    }
                }
            }
            self.by_uid.remove(&uid_of(old));
        }
        if kind != EventType::Deleted {
            for owner in owner_uids(&obj) {
                self.dependents
                    .entry(owner)
                    .or_default()
                    .insert(oref.clone());
            }
            self.by_uid.insert(uid_of(&obj), oref);
        }
        let event = Arc::new(StoreEvent {
            kind,
            resource: r.clone(),
            object: obj.clone(),
            rv,
            old,
        });
        self.history.push_back(event.clone());
        self.trim_history();
        // No receivers is fine: nobody is watching.
        let _ = tx.send(event);
        obj
    }

    fn check_namespace(&self, r: &ResourceId, ns: &str, name: &str) -> Result<(), ApiError> {
        if ns.is_empty() || *r == ResourceId::namespaces() {
            return Ok(());
        }
        match self.get(&ResourceId::namespaces(), "", ns) {
            None => Err(ApiError::not_found(&ResourceId::namespaces(), ns)),
            Some(n) if has_deletion_timestamp(&n) => Err(ApiError::forbidden(
                r,
                name,
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    fn create(
        &mut self,
        tx: &broadcast::Sender<Arc<StoreEvent>>,
        r: &ResourceId,
        mut obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        let meta = obj
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
            .filter(|m| m.is_object())
            .is_some();
        if !meta {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        let mut name = name_of(&obj);
        if name.is_empty() {
            let generate = str_at(&obj, &["metadata", "generateName"]);
            if generate.is_empty() {
                return Err(invalid_for(
                    &obj,
                    r,
                    "",
                    "metadata.name",
                    "FieldValueRequired",
                    "Required value: name or generateName is required",
                ));
            }
            name = loop {
                let candidate = format!("{generate}{}", random_suffix());
                let ns = namespace_of(&obj);
                if self.get(r, &ns, &candidate).is_none() {
                    break candidate;
                }
            };
            set_str(&mut obj, &["metadata", "name"], &name);
        }
        validate_name(r, &obj, &name)?;
        let ns = namespace_of(&obj);
        if !ns.is_empty()
            && *r != ResourceId::namespaces()
            && let Some(msg) = dns_label_error(&ns)
        {
            return Err(invalid_for(
                &obj,
                r,
                &name,
                "metadata.namespace",
                "FieldValueInvalid",
                &format!("Invalid value: {ns:?}: {msg}"),
            ));
        }
        self.check_namespace(r, &ns, &name)?;
        if self.get(r, &ns, &name).is_some() {
            return Err(ApiError::already_exists(r, &name));
        }
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
            m.insert("generation".into(), json!(1));
            for k in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
                "managedFields",
            ] {
                m.remove(k);
            }
        }
        if *r == ResourceId::namespaces() {
            set_str(
                &mut obj,
                &["metadata", "labels", "kubernetes.io/metadata.name"],
                &name,
            );
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        Ok(self.commit(tx, EventType::Added, r, obj))
    }

    fn update(
        &mut self,
        tx: &broadcast::Sender<Arc<StoreEvent>>,
        r: &ResourceId,
        new: Value,
        status_only: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if !new.is_object() || !new.get("metadata").is_none_or(Value::is_object) {
            return Err(ApiError::bad_request(
                "the object must be a JSON object with object metadata",
            ));
        }
        let name = name_of(&new);
        if name.is_empty() {
            return Err(invalid_for(
                &new,
                r,
                "",
                "metadata.name",
                "FieldValueRequired",
                "Required value: name is required",
            ));
        }
        let ns = namespace_of(&new);
        let old = self
            .get(r, &ns, &name)
            .ok_or_else(|| ApiError::not_found(r, &name))?;
        let rv = str_at(&new, &["metadata", "resourceVersion"]);
        if !rv.is_empty() && rv != rv_of(&old) {
            return Err(ApiError::stale(r, &name));
        }
        let uid = str_at(&new, &["metadata", "uid"]);
        if !uid.is_empty() && uid != uid_of(&old) {
            return Err(ApiError::conflict(
                r,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {uid}",
                    uid_of(&old)
                ),
            ));
        }
        let has_status = self.has_status_subresource(r);
        let mut next: Value;
        if status_only {
            next = (*old).clone();
            match new.get("status") {
                Some(s) => next["status"] = s.clone(),
                None => {
                    if let Some(o) = next.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        } else {
            next = new;
            if has_status || *r == ResourceId::namespaces() {
                match old.get("status") {
                    Some(s) => next["status"] = s.clone(),
                    None => {
                        if let Some(o) = next.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            if *r == ResourceId::namespaces() {
                // spec.finalizers belongs to the namespace lifecycle (the `finalize` subresource).
                if let Some(s) = old.get("spec") {
                    next["spec"] = s.clone();
                }
            }
            // System-owned metadata comes from the stored object, whatever the client sent.
            let old_meta = old
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                for k in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                    "resourceVersion",
                    "generateName",
                    "managedFields",
                    "selfLink",
                ] {
                    match old_meta.get(k) {
                        Some(v) => m.insert(k.to_string(), v.clone()),
                        None => m.remove(k),
                    };
                }
            }
            if *r == ResourceId::namespaces() {
                set_str(
                    &mut next,
                    &["metadata", "labels", "kubernetes.io/metadata.name"],
                    &name,
                );
            }
            if spec_side_changed(&old, &next, has_status) {
                let g = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                next["metadata"]["generation"] = json!(g + 1);
            }
        }
        if has_deletion_timestamp(&old) {
            let before: BTreeSet<String> = finalizers(&old).into_iter().collect();
            if let Some(added) = finalizers(&next).into_iter().find(|f| !before.contains(f)) {
                return Err(invalid_for(
                    &next,
                    r,
                    &name,
                    "metadata.finalizers",
                    "FieldValueForbidden",
                    &format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]"
                    ),
                ));
            }
        }
        // Compare without the RV the client may have omitted.
        set_str(&mut next, &["metadata", "resourceVersion"], &rv_of(&old));
        if next == *old {
            return Ok(old);
        }
        if has_deletion_timestamp(&next) && finalizers(&next).is_empty() {
            let removed = self.remove_now(tx, r, next);
            return Ok(removed);
        }
        Ok(self.commit(tx, EventType::Modified, r, next))
    }

    /// Removes an object now (DELETED event), then garbage-collects what depended on it.
    fn remove_now(
        &mut self,
        tx: &broadcast::Sender<Arc<StoreEvent>>,
        r: &ResourceId,
        obj: Value,
    ) -> Arc<Value> {
        let uid = uid_of(&obj);
        let ns = namespace_of(&obj);
        let owners = owner_uids(&obj);
        let removed = self.commit(tx, EventType::Deleted, r, obj);
        self.removed.insert(uid.clone(), removed.clone());
        self.collect_dependents_of(tx, &uid);
        // Owners in foreground deletion may have been waiting for this object.
        for owner in owners {
            self.finish_foreground(tx, &owner);
        }
        if !ns.is_empty() {
            self.finish_namespace(tx, &ns);
        }
        removed
    }

    /// Background GC after `owner_uid` is gone: dependents with no other live owner are deleted,
    /// the others lose the dangling reference.
    fn collect_dependents_of(&mut self, tx: &broadcast::Sender<Arc<StoreEvent>>, owner_uid: &str) {
        let Some(deps) = self.dependents.get(owner_uid).cloned() else {
            return;
        };
        for (dr, dns, dname) in deps {
            let Some(dep) = self.get(&dr, &dns, &dname) else {
                continue;
            };
            let others_alive = owner_uids(&dep)
                .iter()
                .any(|u| u != owner_uid && self.by_uid.contains_key(u));
            if others_alive {
                let mut next = (*dep).clone();
                remove_owner_ref(&mut next, owner_uid);
                self.commit(tx, EventType::Modified, &dr, next);
            } else {
                let policy = if has_finalizer(&dep, "foregroundDeletion") {
                    Propagation::Foreground
                } else {
                    Propagation::Background
                };
                self.delete_object(tx, &dr, &dns, &dname, policy);
            }
        }
    }

    /// Removes the `foregroundDeletion` finalizer from a deleting owner whose dependents are gone.
    fn finish_foreground(&mut self, tx: &broadcast::Sender<Arc<StoreEvent>>, owner_uid: &str) {
        let Some((r, ns, name)) = self.by_uid.get(owner_uid).cloned() else {
            return;
        };
        let Some(owner) = self.get(&r, &ns, &name) else {
            return;
        };
        if !has_deletion_timestamp(&owner) || !has_finalizer(&owner, "foregroundDeletion") {
            return;
        }
        if self
            .dependents
            .get(owner_uid)
            .is_some_and(|d| !d.is_empty())
        {
            return;
        }
        let mut next = (*owner).clone();
        retain_finalizers(&mut next, |f| f != "foregroundDeletion");
        if finalizers(&next).is_empty() {
            self.remove_now(tx, &r, next);
        } else {
            self.commit(tx, EventType::Modified, &r, next);
        }
    }

    /// Removes a terminating namespace once nothing is left in it.
    fn finish_namespace(&mut self, tx: &broadcast::Sender<Arc<StoreEvent>>, ns: &str) {
        let nsr = ResourceId::namespaces();
        let Some(n) = self.get(&nsr, "", ns) else {
            return;
        };
        if !has_deletion_timestamp(&n) || !finalizers(&n).is_empty() {
            return;
        }
        let empty = self.objects.iter().all(|(r, objs)| {
            *r == nsr
                || objs
                    .range((ns.to_string(), String::new())..)
                    .next()
                    .is_none_or(|((n, _), _)| n != ns)
        });
        if empty {
            self.remove_now(tx, &nsr, (*n).clone());
        }
    }

    /// The deletion state machine shared by API deletes and garbage collection.
    fn delete_object(
        &mut self,
        tx: &broadcast::Sender<Arc<StoreEvent>>,
        r: &ResourceId,
        ns: &str,
        name: &str,
        policy: Propagation,
    ) {
        let Some(current) = self.get(r, ns, name) else {
            return;
        };
        let uid = uid_of(&current);
        if has_deletion_timestamp(&current) {
            // Already terminating: a second delete changes nothing (as on a real server, except
            // that asking for foreground on a background deletion is not upgraded).
            return;
        }
        if policy == Propagation::Orphan
            && let Some(deps) = self.dependents.get(&uid).cloned()
        {
            for (dr, dns, dname) in deps {
                if let Some(dep) = self.get(&dr, &dns, &dname) {
                    let mut next = (*dep).clone();
                    remove_owner_ref(&mut next, &uid);
                    self.commit(tx, EventType::Modified, &dr, next);
                }
            }
        }
        let mut next = (*current).clone();
        let is_namespace = *r == ResourceId::namespaces();
        let has_deps = self.dependents.get(&uid).is_some_and(|d| !d.is_empty());
        if policy == Propagation::Foreground && has_deps {
            let mut fins = finalizers(&next);
            fins.push("foregroundDeletion".to_string());
            next["metadata"]["finalizers"] = json!(fins);
        }
        let must_wait = !finalizers(&next).is_empty() || is_namespace;
        if !must_wait {
            self.remove_now(tx, r, next);
            return;
        }
        next["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        let g = next
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        next["metadata"]["generation"] = json!(g + 1);
        if is_namespace {
            next["status"] = json!({"phase": "Terminating"});
        }
        self.commit(tx, EventType::Modified, r, next);
        if policy == Propagation::Foreground
            && let Some(deps) = self.dependents.get(&uid).cloned()
        {
            for (dr, dns, dname) in deps {
                self.delete_object(tx, &dr, &dns, &dname, Propagation::Foreground);
            }
            self.finish_foreground(tx, &uid);
        }
        if is_namespace {
            let content: Vec<ObjRef> = self
                .objects
                .iter()
                .filter(|(rr, _)| **rr != ResourceId::namespaces())
                .flat_map(|(rr, objs)| {
                    objs.range((name.to_string(), String::new())..)
                        .take_while(|((n, _), _)| n == name)
                        .map(|((n, nm), _)| (rr.clone(), n.clone(), nm.clone()))
                        .collect::<Vec<_>>()
                })
                .collect();
            for (cr, cns, cname) in content {
                self.delete_object(tx, &cr, &cns, &cname, Propagation::Background);
            }
            self.finish_namespace(tx, name);
        }
    }
}

fn spec_side_changed(old: &Value, new: &Value, has_status: bool) -> bool {
    let empty = Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    let skip = |k: &str| k == "metadata" || (has_status && k == "status");
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).filter(|k| !skip(k)).collect();
    keys.into_iter().any(|k| o.get(k) != n.get(k))
}

fn invalid_for(
    obj: &Value,
    r: &ResourceId,
    name: &str,
    field: &str,
    reason: &str,
    message: &str,
) -> ApiError {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(&r.plural)
        .to_string();
    ApiError::invalid(
        &kind,
        &r.group,
        name,
        vec![Cause {
            reason: reason.into(),
            field: field.into(),
            message: message.into(),
        }],
    )
}

/// Names: DNS-1123 subdomain for most types, DNS-1123 label for namespaces and services.
fn validate_name(r: &ResourceId, obj: &Value, name: &str) -> Result<(), ApiError> {
    let label_only = r.group.is_empty() && (r.plural == "namespaces" || r.plural == "services");
    let err = if label_only {
        dns_label_error(name)
    } else {
        dns_subdomain_error(name)
    };
    match err {
        None => Ok(()),
        Some(msg) => Err(invalid_for(
            obj,
            r,
            name,
            "metadata.name",
            "FieldValueInvalid",
            &format!("Invalid value: {name:?}: {msg}"),
        )),
    }
}

/// DNS-1123 label: at most 63 lowercase alphanumerics or '-', starting and ending alphanumeric.
pub fn dns_label_error(s: &str) -> Option<String> {
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if s.is_empty() || !ok_chars || !ends(s.bytes().next()) || !ends(s.bytes().last()) {
        return Some("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into());
    }
    None
}

/// DNS-1123 subdomain: at most 253 characters, dot-separated labels.
pub fn dns_subdomain_error(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let ok = !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && part.bytes().next().is_some_and(|b| b != b'-')
                && part.bytes().last().is_some_and(|b| b != b'-')
        });
    if ok {
        None
    } else {
        Some("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into())
    }
}

fn random_suffix() -> String {
    // The API server's alphabet for generateName: no vowels, no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    use rand::Rng;
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Now, as the API server writes timestamps (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn str_at(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        match cur.get(*p) {
            Some(n) => cur = n,
            None => return String::new(),
        }
    }
    cur.as_str().unwrap_or_default().to_string()
}

/// Sets a string at a path of objects, creating (or replacing non-object) intermediate nodes.
fn set_str(v: &mut Value, path: &[&str], value: &str) {
    let mut cur = v;
    for (i, p) in path.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(m) = cur.as_object_mut() else { return };
        if i + 1 == path.len() {
            m.insert((*p).to_string(), json!(value));
            return;
        }
        cur = m.entry((*p).to_string()).or_insert_with(|| json!({}));
    }
}

pub fn name_of(o: &Value) -> String {
    str_at(o, &["metadata", "name"])
}

pub fn namespace_of(o: &Value) -> String {
    str_at(o, &["metadata", "namespace"])
}

pub fn rv_of(o: &Value) -> String {
    str_at(o, &["metadata", "resourceVersion"])
}

pub fn uid_of(o: &Value) -> String {
    str_at(o, &["metadata", "uid"])
}

fn has_deletion_timestamp(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

fn finalizers(o: &Value) -> Vec<String> {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn has_finalizer(o: &Value, f: &str) -> bool {
    finalizers(o).iter().any(|x| x == f)
}

fn retain_finalizers(o: &mut Value, keep: impl Fn(&str) -> bool) {
    if let Some(a) = o
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        a.retain(|f| f.as_str().is_some_and(&keep));
        if a.is_empty()
            && let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.remove("finalizers");
        }
    }
}

fn owner_uids(o: &Value) -> Vec<String> {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn remove_owner_ref(o: &mut Value, owner_uid: &str) {
    if let Some(a) = o
        .pointer_mut("/metadata/ownerReferences")
        .and_then(Value::as_array_mut)
    {
        a.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
        if a.is_empty()
            && let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.remove("ownerReferences");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cm() -> ResourceId {
        ResourceId::new("", "configmaps")
    }
    fn deploy() -> ResourceId {
        ResourceId::new("apps", "deployments")
    }
    fn store_with_ns() -> Store {
        let s = Store::default();
        s.create(
            &ResourceId::namespaces(),
            json!({"metadata": {"name": "ns"}}),
        )
        .unwrap();
        s
    }

    #[test]
    fn noop_write_keeps_rv_and_emits_nothing() {
        let s = store_with_ns();
        let o = s
            .create(
                &cm(),
                json!({"metadata": {"name": "a", "namespace": "ns"}, "data": {"k": "v"}}),
            )
            .unwrap();
        let mut rx = s.subscribe();
        let again = s.update(&cm(), (*o).clone(), false).unwrap();
        assert_eq!(rv_of(&again), rv_of(&o));
        assert!(rx.try_recv().is_err());
        let changed = s
            .modify(&cm(), "ns", "a", false, |o| o["data"]["k"] = json!("w"))
            .unwrap();
        assert!(rv_of(&changed).parse::<u64>().unwrap() > rv_of(&o).parse::<u64>().unwrap());
        assert_eq!(changed["metadata"]["generation"], json!(2));
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn status_isolation_and_generation() {
        let s = store_with_ns();
        let d = s.create(&deploy(), json!({"metadata": {"name": "d", "namespace": "ns"}, "spec": {"replicas": 1}, "status": {"x": 1}})).unwrap();
        let mut main = (*d).clone();
        main["status"] = json!({"x": 2});
        let after = s.update(&deploy(), main, false).unwrap();
        assert_eq!(after["status"], json!({"x": 1}));
        assert_eq!(
            rv_of(&after),
            rv_of(&d),
            "status-only change through main is a no-op"
        );
        let mut st = (*after).clone();
        st["status"] = json!({"x": 3});
        st["spec"]["replicas"] = json!(5);
        let after = s.update(&deploy(), st, true).unwrap();
        assert_eq!(after["status"], json!({"x": 3}));
        assert_eq!(after["spec"]["replicas"], json!(1));
        assert_eq!(after["metadata"]["generation"], json!(1));
    }

    #[test]
    fn stale_rv_conflicts() {
        let s = store_with_ns();
        let o = s
            .create(&cm(), json!({"metadata": {"name": "a", "namespace": "ns"}}))
            .unwrap();
        s.modify(&cm(), "ns", "a", false, |o| o["data"] = json!({"a": "b"}))
            .unwrap();
        let err = s.update(&cm(), (*o).clone(), false).unwrap_err();
        assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    }

    #[test]
    fn missing_namespace_is_404_and_namespace_deletion_cascades() {
        let s = store_with_ns();
        let err = s
            .create(
                &cm(),
                json!({"metadata": {"name": "a", "namespace": "nope"}}),
            )
            .unwrap_err();
        assert_eq!(err.code, 404);
        s.create(&cm(), json!({"metadata": {"name": "a", "namespace": "ns"}}))
            .unwrap();
        s.create(
            &cm(),
            json!({"metadata": {"name": "f", "namespace": "ns", "finalizers": ["x/y"]}}),
        )
        .unwrap();
        s.delete(&ResourceId::namespaces(), "", "ns").unwrap();
        assert!(s.get(&cm(), "ns", "a").is_none());
        let n = s.get(&ResourceId::namespaces(), "", "ns").unwrap();
        assert_eq!(n["status"]["phase"], json!("Terminating"));
        let err = s
            .create(&cm(), json!({"metadata": {"name": "b", "namespace": "ns"}}))
            .unwrap_err();
        assert_eq!(err.code, 403);
        s.modify(&cm(), "ns", "f", false, |o| {
            o["metadata"]["finalizers"] = json!([])
        })
        .unwrap();
        assert!(s.get(&cm(), "ns", "f").is_none());
        assert!(s.get(&ResourceId::namespaces(), "", "ns").is_none());
        s.check_consistency().unwrap();
    }

    #[test]
    fn garbage_collection_policies() {
        for policy in [
            Propagation::Background,
            Propagation::Foreground,
            Propagation::Orphan,
        ] {
            let s = store_with_ns();
            let owner = s
                .create(
                    &deploy(),
                    json!({"metadata": {"name": "o", "namespace": "ns"}}),
                )
                .unwrap();
            let oref = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "o", "uid": uid_of(&owner)}]);
            s.create(
                &cm(),
                json!({"metadata": {"name": "dep", "namespace": "ns", "ownerReferences": oref}}),
            )
            .unwrap();
            s.create(&cm(), json!({"metadata": {"name": "held", "namespace": "ns", "ownerReferences": oref, "finalizers": ["t/x"]}})).unwrap();
            s.delete_with(
                &deploy(),
                "ns",
                "o",
                &DeleteOptions {
                    propagation: policy,
                    ..Default::default()
                },
            )
            .unwrap();
            match policy {
                Propagation::Orphan => {
                    assert!(s.get(&deploy(), "ns", "o").is_none());
                    let dep = s.get(&cm(), "ns", "dep").unwrap();
                    assert!(dep["metadata"].get("ownerReferences").is_none());
                }
                Propagation::Background => {
                    assert!(s.get(&deploy(), "ns", "o").is_none());
                    assert!(s.get(&cm(), "ns", "dep").is_none());
                    assert!(
                        s.get(&cm(), "ns", "held").unwrap()["metadata"]["deletionTimestamp"]
                            .is_string()
                    );
                }
                Propagation::Foreground => {
                    let o = s.get(&deploy(), "ns", "o").unwrap();
                    assert!(has_finalizer(&o, "foregroundDeletion"));
                    assert!(s.get(&cm(), "ns", "dep").is_none());
                    s.modify(&cm(), "ns", "held", false, |o| {
                        o["metadata"]["finalizers"] = json!([])
                    })
                    .unwrap();
                    assert!(s.get(&deploy(), "ns", "o").is_none());
                }
            }
            s.check_consistency().unwrap();
        }
    }

    #[test]
    fn watch_history_and_compaction() {
        let s = Store::new(StoreConfig { history: 3 });
        s.create(
            &ResourceId::namespaces(),
            json!({"metadata": {"name": "ns"}}),
        )
        .unwrap();
        let start = s.current_rv();
        for i in 0..2 {
            s.create(
                &cm(),
                json!({"metadata": {"name": format!("c{i}"), "namespace": "ns"}}),
            )
            .unwrap();
        }
        let w = s.watch(&cm(), Some("ns"), WatchFrom::After(start)).unwrap();
        assert_eq!(w.initial.len(), 2);
        for i in 2..6 {
            s.create(
                &cm(),
                json!({"metadata": {"name": format!("c{i}"), "namespace": "ns"}}),
            )
            .unwrap();
        }
        assert_eq!(
            s.watch(&cm(), None, WatchFrom::After(start))
                .err()
                .map(|e| e.code),
            Some(410)
        );
        s.compact();
        let now = s.current_rv();
        assert!(s.watch(&cm(), None, WatchFrom::After(now)).is_ok());
        assert!(s.watch(&cm(), None, WatchFrom::After(now - 1)).is_err());
        assert_eq!(
            s.watch(&cm(), None, WatchFrom::Current)
                .unwrap()
                .initial
                .len(),
            6
        );
    }

    #[test]
    fn system_namespaces_cannot_be_deleted() {
        let s = Store::default();
        s.create(
            &ResourceId::namespaces(),
            json!({"metadata": {"name": "default"}}),
        )
        .unwrap();
        let e = s
            .delete(&ResourceId::namespaces(), "", "default")
            .unwrap_err();
        assert_eq!(e.code, 403);
        assert!(s.get(&ResourceId::namespaces(), "", "default").is_some());
    }

    #[test]
    fn names_are_validated_and_generated() {
        let s = store_with_ns();
        let e = s
            .create(
                &cm(),
                json!({"metadata": {"name": "Bad_Name", "namespace": "ns"}}),
            )
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(e.causes[0].field, "metadata.name");
        let o = s
            .create(
                &cm(),
                json!({"metadata": {"generateName": "x-", "namespace": "ns"}}),
            )
            .unwrap();
        assert!(name_of(&o).starts_with("x-") && name_of(&o).len() == 7);
    }
}
