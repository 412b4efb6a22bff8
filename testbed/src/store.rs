//! The in-memory object store (owner: testbed-api helper).
//!
//! CONTRACT used by `workloads/` and `mesh/` (keep these signatures; add freely):
//!
//! ```ignore
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
