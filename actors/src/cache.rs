//! Shared reflector caches of everything the operator reads on a steady-state tick.
//!
//! Contract:
//! - One watch per kind (Canaries, Deployments, ConfigMaps, Secrets, HPAs, Services, Istio
//!   VirtualServices and DestinationRules,
//!   MetricTemplates, AlertProviders), namespace-scoped when the operator watches one namespace.
//!   Ticks read these stores, never the API server, so a steady-state tick makes no GET or LIST.
//! - Objects are stored without `metadata.managedFields` and without kubectl's
//!   `last-applied-configuration` annotation (they are large and never read), which keeps memory
//!   per canary small.
//! - Every change is also reported to a [`CacheSink`] (the supervisor) as a [`CacheEvent`], after
//!   the store has applied it, so whoever is told about a change reads the new object.
//! - Watches restart by themselves with kube-runtime's default backoff; a restarted watch reports
//!   [`CacheEvent::CanariesResynced`] / [`CacheEvent::DependenciesResynced`] so changes missed
//!   while it was down are not lost.
//! - Flagger's own kinds (Canary, MetricTemplate, AlertProvider) are watched as untyped JSON and
//!   decoded one object at a time ([`crate::crd::decode`]): an object that does not fit the Rust
//!   types never fails the LIST or the watch, so it cannot hide the other objects. It is logged
//!   once (naming the object and the field) and recorded in [`DecodeErrors`]; an undecodable
//!   Canary stays in the store as a placeholder (metadata and status, empty spec) so its actor can
//!   tell the user on the object itself; an undecodable MetricTemplate or AlertProvider is absent
//!   from its store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::crd::decode::{Undecodable, canary_placeholder, decode};
use crate::crd::{AlertProvider, Canary, MetricTemplate};
use crate::key::CanaryKey;

/// kubectl's copy of the applied manifest; never read by the operator.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub use crate::router::istio::{destination_rule_resource, virtual_service_resource};

/// Kinds whose changes can give a canary a new revision or change its readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DependencyKind {
    Deployment,
    ConfigMap,
    Secret,
    HorizontalPodAutoscaler,
}

/// A change seen by a watch.
#[derive(Debug, Clone)]
pub enum CacheEvent {
    CanaryApplied(Arc<Canary>),
    CanaryDeleted(CanaryKey),
    /// The Canary watch (re)listed: the store holds every Canary that exists now.
    CanariesResynced,
    DependencyChanged {
        kind: DependencyKind,
        namespace: String,
        name: String,
    },
    /// A dependency watch (re)listed; changes in between may have been missed.
    DependenciesResynced(DependencyKind),
}

/// Receives [`CacheEvent`]s; must not block (it runs on the watch task).
pub trait CacheSink: Send + Sync + 'static {
    fn send(&self, event: CacheEvent);
}

impl<F: Fn(CacheEvent) + Send + Sync + 'static> CacheSink for F {
    fn send(&self, event: CacheEvent) {
        self(event)
    }
}

/// Readers of every cache. Cheap to clone.
#[derive(Clone)]
pub struct Caches {
    pub canaries: Store<Canary>,
    pub deployments: Store<Deployment>,
    pub config_maps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub services: Store<Service>,
    pub virtual_services: Store<DynamicObject>,
    pub destination_rules: Store<DynamicObject>,
    pub metric_templates: Store<MetricTemplate>,
    pub alert_providers: Store<AlertProvider>,
    /// Flagger objects that exist but do not decode, and why.
    pub decode_errors: DecodeErrors,
}

/// Flagger's own kinds, watched as JSON and decoded object by object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlaggerKind {
    Canary,
    MetricTemplate,
    AlertProvider,
}

impl FlaggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "Canary",
            Self::MetricTemplate => "MetricTemplate",
            Self::AlertProvider => "AlertProvider",
        }
    }
}

type DecodeKey = (FlaggerKind, String, String);

/// Flagger objects (by kind, namespace and name) whose JSON does not fit the Rust types, with the
/// field that does not. Cheap to clone; written only by the watches.
#[derive(Clone, Default)]
pub struct DecodeErrors(Arc<RwLock<HashMap<DecodeKey, Undecodable>>>);

impl DecodeErrors {
    /// Why `namespace/name` of `kind` cannot be read, if it cannot.
    pub fn get(&self, kind: FlaggerKind, namespace: &str, name: &str) -> Option<Undecodable> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Records (or clears, with `None`) the error of one object; true when it changed.
    fn set(&self, key: DecodeKey, error: Option<Undecodable>) -> bool {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match error {
            Some(e) => map.insert(key, e.clone()).as_ref() != Some(&e),
            None => map.remove(&key).is_some(),
        }
    }

    /// Forgets the objects of `kind` not in `seen` (a relist found them gone).
    fn retain(&self, kind: FlaggerKind, seen: &HashSet<DecodeKey>) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        map.retain(|k, _| k.0 != kind || seen.contains(k));
    }
}

/// A Flagger kind decoded object by object (see the module docs).
trait Tolerant:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    const KIND: FlaggerKind;
    /// An object of this kind carrying only `metadata` (what a Delete needs).
    fn empty(metadata: ObjectMeta) -> Self;
    /// What the store keeps of an object that does not decode; `None` leaves it out.
    fn placeholder(
        _metadata: ObjectMeta,
        _raw: &serde_json::Value,
        _error: &Undecodable,
    ) -> Option<Self> {
        None
    }
}

impl Tolerant for Canary {
    const KIND: FlaggerKind = FlaggerKind::Canary;
    fn empty(metadata: ObjectMeta) -> Self {
        let mut c = Canary::new("", Default::default());
        c.metadata = metadata;
        c
    }
    fn placeholder(
        metadata: ObjectMeta,
        raw: &serde_json::Value,
        error: &Undecodable,
    ) -> Option<Self> {
        Some(canary_placeholder(metadata, raw, error))
    }
}

impl Tolerant for MetricTemplate {
    const KIND: FlaggerKind = FlaggerKind::MetricTemplate;
    fn empty(metadata: ObjectMeta) -> Self {
        let mut t = MetricTemplate::new("", Default::default());
        t.metadata = metadata;
        t
    }
}

impl Tolerant for AlertProvider {
    const KIND: FlaggerKind = FlaggerKind::AlertProvider;
    fn empty(metadata: ObjectMeta) -> Self {
        let mut p = AlertProvider::new("", Default::default());
        p.metadata = metadata;
        p
    }
}

/// The running watches; dropping this does not stop them, [`Watches::abort`] does.
pub struct Watches {
    tasks: Vec<JoinHandle<()>>,
}

impl Watches {
    pub fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Which namespaces to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Caches {
    /// Starts every watch on the current tokio runtime. The stores fill asynchronously; await
    /// [`Caches::wait_until_ready`] before reading them.
    pub fn start(client: &Client, scope: &Scope, sink: Arc<dyn CacheSink>) -> (Caches, Watches) {
        let mut tasks = Vec::new();
        let decode_errors = DecodeErrors::default();
        let canaries = spawn_tolerant_watch::<Canary>(
            client,
            scope,
            &sink,
            &mut tasks,
            &decode_errors,
            canary_event,
        );
        let deployments = spawn_watch(api(client, scope), &sink, &mut tasks, |e| {
            dependency_event::<Deployment>(DependencyKind::Deployment, e)
        });
        let config_maps = spawn_watch(api(client, scope), &sink, &mut tasks, |e| {
            dependency_event::<ConfigMap>(DependencyKind::ConfigMap, e)
        });
        let secrets = spawn_watch(api(client, scope), &sink, &mut tasks, |e| {
            dependency_event::<Secret>(DependencyKind::Secret, e)
        });
        let hpas = spawn_watch(api(client, scope), &sink, &mut tasks, |e| {
            dependency_event::<HorizontalPodAutoscaler>(DependencyKind::HorizontalPodAutoscaler, e)
        });
        let metric_templates = spawn_tolerant_watch::<MetricTemplate>(
            client,
            scope,
            &sink,
            &mut tasks,
            &decode_errors,
            |_, _| None,
        );
        let alert_providers = spawn_tolerant_watch::<AlertProvider>(
            client,
            scope,
            &sink,
            &mut tasks,
            &decode_errors,
            |_, _| None,
        );

        let services = spawn_watch::<Service>(api(client, scope), &sink, &mut tasks, |_| None);
        let virtual_services =
            spawn_dynamic_watch(client, scope, virtual_service_resource(), &sink, &mut tasks);
        let destination_rules = spawn_dynamic_watch(
            client,
            scope,
            destination_rule_resource(),
            &sink,
            &mut tasks,
        );

        (
            Caches {
                canaries,
                deployments,
                config_maps,
                secrets,
                hpas,
                services,
                virtual_services,
                destination_rules,
                metric_templates,
                alert_providers,
                decode_errors,
            },
            Watches { tasks },
        )
    }

    /// Waits until every store has listed once. VirtualServices are not awaited: a cluster
    /// without Istio's CRDs still runs canaries with the `kubernetes` provider.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.canaries.wait_until_ready().await?;
        self.deployments.wait_until_ready().await?;
        self.config_maps.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        self.hpas.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.metric_templates.wait_until_ready().await?;
        self.alert_providers.wait_until_ready().await?;
        Ok(())
    }
}

fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match scope {
        Scope::All => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// Drops what the operator never reads before an object enters a store.
fn strip<K: ResourceExt>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().remove(LAST_APPLIED);
}

type ToEvent<K> = fn(&watcher::Event<K>) -> Option<CacheEvent>;
/// Like [`ToEvent`], with the store the event was just applied to (so an event can carry the
/// store's own `Arc` instead of a second copy of the object).
type ToStoreEvent<K> = fn(&watcher::Event<K>, &Store<K>) -> Option<CacheEvent>;

fn spawn_watch<K>(
    api: Api<K>,
    sink: &Arc<dyn CacheSink>,
    tasks: &mut Vec<JoinHandle<()>>,
    to_event: ToEvent<K>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    tasks.push(tokio::spawn(drive(
        std::any::type_name::<K>(),
        stream,
        sink.clone(),
        to_event,
    )));
    store
}

async fn drive<K, S>(kind: &'static str, stream: S, sink: Arc<dyn CacheSink>, to_event: ToEvent<K>)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                if let Some(e) = to_event(&event) {
                    sink.send(e);
                }
            }
            // The backoff retries; the error is only worth a line in the log.
            Err(error) => warn!(msg = "watch failed, retrying", kind, %error),
        }
    }
    debug!(msg = "watch ended", kind);
}

/// A watch of a Flagger kind as JSON, decoded object by object into a typed store.
fn spawn_tolerant_watch<K: Tolerant>(
    client: &Client,
    scope: &Scope,
    sink: &Arc<dyn CacheSink>,
    tasks: &mut Vec<JoinHandle<()>>,
    errors: &DecodeErrors,
    to_event: ToStoreEvent<K>,
) -> Store<K> {
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match scope {
        Scope::All => Api::all_with(client.clone(), &resource),
        Scope::Namespace(ns) => Api::namespaced_with(client.clone(), ns, &resource),
    };
    let (store, mut writer) = reflector::store::<K>();
    let reader = store.clone();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip);
    let (sink, errors) = (sink.clone(), errors.clone());
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut decoder = Decoder::<K>::new(errors);
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    let Some(event) = decoder.event(event) else {
                        continue;
                    };
                    writer.apply_watcher_event(&event);
                    if let Some(e) = to_event(&event, &reader) {
                        sink.send(e);
                    }
                }
                Err(error) => {
                    warn!(msg = "watch failed, retrying", kind = K::KIND.as_str(), %error)
                }
            }
        }
        debug!(msg = "watch ended", kind = K::KIND.as_str());
    }));
    store
}

/// Turns JSON watch events into typed ones, recording and logging the objects that do not decode.
struct Decoder<K> {
    errors: DecodeErrors,
    /// Objects seen since the current (re)list started.
    seen: HashSet<DecodeKey>,
    _kind: std::marker::PhantomData<K>,
}

impl<K: Tolerant> Decoder<K> {
    fn new(errors: DecodeErrors) -> Self {
        Self {
            errors,
            seen: HashSet::new(),
            _kind: std::marker::PhantomData,
        }
    }

    fn key(obj: &DynamicObject) -> DecodeKey {
        (K::KIND, obj.namespace().unwrap_or_default(), obj.name_any())
    }

    /// The typed object, or what stands for it when it does not decode (`Err`).
    fn decode(&self, obj: DynamicObject) -> Result<K, Option<K>> {
        let key = Self::key(&obj);
        let metadata = obj.metadata.clone();
        let raw = match serde_json::to_value(&obj) {
            Ok(raw) => raw,
            Err(e) => {
                return Err(self.undecodable(
                    key,
                    metadata,
                    &serde_json::Value::Null,
                    Undecodable {
                        field: "(object)".to_owned(),
                        problem: e.to_string(),
                    },
                ));
            }
        };
        match decode::<K>(raw.clone()) {
            Ok(k) => {
                self.errors.set(key, None);
                Ok(k)
            }
            Err(e) => Err(self.undecodable(key, metadata, &raw, e)),
        }
    }

    fn undecodable(
        &self,
        key: DecodeKey,
        metadata: ObjectMeta,
        raw: &serde_json::Value,
        error: Undecodable,
    ) -> Option<K> {
        if self.errors.set(key.clone(), Some(error.clone())) {
            let (kind, namespace, name) = &key;
            let msg = format!(
                "{} {name}.{namespace} cannot be read: {error}",
                kind.as_str()
            );
            match kind {
                // `canary` as in every other line about a canary, so `jq 'select(.canary==..)'`
                // finds it.
                FlaggerKind::Canary => warn!(
                    msg,
                    canary = %format!("{name}.{namespace}"),
                    field = %error.field,
                ),
                _ => warn!(msg, kind = kind.as_str(), field = %error.field),
            }
        }
        K::placeholder(metadata, raw, &error)
    }

    fn event(&mut self, event: watcher::Event<DynamicObject>) -> Option<watcher::Event<K>> {
        use watcher::Event;
        Some(match event {
            Event::Init => {
                self.seen.clear();
                Event::Init
            }
            Event::InitDone => {
                self.errors.retain(K::KIND, &self.seen);
                Event::InitDone
            }
            Event::InitApply(obj) => {
                self.seen.insert(Self::key(&obj));
                match self.decode(obj) {
                    Ok(k) | Err(Some(k)) => Event::InitApply(k),
                    Err(None) => return None,
                }
            }
            Event::Apply(obj) => {
                let metadata = obj.metadata.clone();
                match self.decode(obj) {
                    Ok(k) | Err(Some(k)) => Event::Apply(k),
                    // Unreadable now: what the store held of it must not be used either.
                    Err(None) => Event::Delete(K::empty(metadata)),
                }
            }
            Event::Delete(obj) => {
                self.errors.set(Self::key(&obj), None);
                Event::Delete(K::empty(obj.metadata))
            }
        })
    }
}

/// A watch of Istio objects (dynamic types; the CRDs may be missing, then it only retries).
fn spawn_dynamic_watch(
    client: &Client,
    scope: &Scope,
    resource: ApiResource,
    sink: &Arc<dyn CacheSink>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<DynamicObject> {
    let api: Api<DynamicObject> = match scope {
        Scope::All => Api::all_with(client.clone(), &resource),
        Scope::Namespace(ns) => Api::namespaced_with(client.clone(), ns, &resource),
    };
    let writer = reflector::store::Writer::new(resource);
    let store = writer.as_reader();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    tasks.push(tokio::spawn(drive("istio", stream, sink.clone(), |_| None)));
    store
}

/// `store` has already applied `event`: an applied Canary is sent as the store's own `Arc`, so
/// the supervisor and the CanaryActor share the cached copy instead of holding a second one
/// (a deep clone per Canary and per change was a few KB per canary at 10,000 canaries).
fn canary_event(event: &watcher::Event<Canary>, store: &Store<Canary>) -> Option<CacheEvent> {
    match event {
        watcher::Event::Apply(c) | watcher::Event::InitApply(c) => {
            let cached = store.get(&reflector::ObjectRef::from_obj(c));
            Some(CacheEvent::CanaryApplied(
                cached.unwrap_or_else(|| Arc::new(c.clone())),
            ))
        }
        watcher::Event::Delete(c) => Some(CacheEvent::CanaryDeleted(CanaryKey::new(
            c.namespace().unwrap_or_default(),
            c.name_any(),
        ))),
        watcher::Event::InitDone => Some(CacheEvent::CanariesResynced),
        watcher::Event::Init => None,
    }
}

fn dependency_event<K: ResourceExt>(
    kind: DependencyKind,
    event: &watcher::Event<K>,
) -> Option<CacheEvent> {
    match event {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
            Some(CacheEvent::DependencyChanged {
                kind,
                namespace: o.namespace().unwrap_or_default(),
                name: o.name_any(),
            })
        }
        watcher::Event::InitDone => Some(CacheEvent::DependenciesResynced(kind)),
        watcher::Event::Init | watcher::Event::InitApply(_) => None,
    }
}

/// The object `namespace/name` of a namespaced kind from a store.
pub fn lookup<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    store.get(&reflector::ObjectRef::new(name).within(namespace))
}

/// Caches filled by hand, for tests of what reads them (no API server, no watch).
#[cfg(test)]
pub(crate) mod fake {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Mutex;

    use kube::runtime::reflector::store::Writer;
    use serde_json::Value;

    use super::*;

    /// The stores of a [`Caches`] with their writers; [`FakeCaches::apply`] plays a watch event.
    pub struct FakeCaches {
        pub caches: Caches,
        canaries: Mutex<Writer<Canary>>,
        deployments: Mutex<Writer<Deployment>>,
        config_maps: Mutex<Writer<ConfigMap>>,
        secrets: Mutex<Writer<Secret>>,
        hpas: Mutex<Writer<HorizontalPodAutoscaler>>,
        // Writers of the kinds no test writes, kept alive with their stores.
        _services: Writer<Service>,
        _istio: [Writer<DynamicObject>; 2],
        _metric_templates: Writer<MetricTemplate>,
        _alert_providers: Writer<AlertProvider>,
    }

    fn put<K>(writer: &Mutex<Writer<K>>, obj: Value, delete: bool)
    where
        K: Resource + Clone + DeserializeOwned + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let obj: K = serde_json::from_value(obj).expect("a valid object");
        let event = if delete {
            watcher::Event::Delete(obj)
        } else {
            watcher::Event::Apply(obj)
        };
        writer.lock().unwrap().apply_watcher_event(&event);
    }

    impl FakeCaches {
        pub fn new() -> Self {
            let canaries = Writer::default();
            let deployments = Writer::default();
            let config_maps = Writer::default();
            let secrets = Writer::default();
            let hpas = Writer::default();
            let services = Writer::default();
            let virtual_services = Writer::new(virtual_service_resource());
            let destination_rules = Writer::new(destination_rule_resource());
            let metric_templates = Writer::default();
            let alert_providers = Writer::default();
            let caches = Caches {
                canaries: canaries.as_reader(),
                deployments: deployments.as_reader(),
                config_maps: config_maps.as_reader(),
                secrets: secrets.as_reader(),
                hpas: hpas.as_reader(),
                services: services.as_reader(),
                virtual_services: virtual_services.as_reader(),
                destination_rules: destination_rules.as_reader(),
                metric_templates: metric_templates.as_reader(),
                alert_providers: alert_providers.as_reader(),
                decode_errors: DecodeErrors::default(),
            };
            Self {
                caches,
                canaries: Mutex::new(canaries),
                deployments: Mutex::new(deployments),
                config_maps: Mutex::new(config_maps),
                secrets: Mutex::new(secrets),
                hpas: Mutex::new(hpas),
                _services: services,
                _istio: [virtual_services, destination_rules],
                _metric_templates: metric_templates,
                _alert_providers: alert_providers,
            }
        }

        /// Stores `obj` (a Canary, Deployment, ConfigMap, Secret or HorizontalPodAutoscaler,
        /// by its `kind`) as a watch would.
        pub fn apply(&self, obj: Value) {
            self.write(obj, false);
        }

        pub fn delete(&self, obj: Value) {
            self.write(obj, true);
        }

        pub fn apply_canary(&self, canary: &Canary) {
            self.canaries
                .lock()
                .unwrap()
                .apply_watcher_event(&watcher::Event::Apply(canary.clone()));
        }

        fn write(&self, obj: Value, delete: bool) {
            match obj["kind"].as_str() {
                Some("Canary") => put(&self.canaries, obj, delete),
                Some("Deployment") => put(&self.deployments, obj, delete),
                Some("ConfigMap") => put(&self.config_maps, obj, delete),
                Some("Secret") => put(&self.secrets, obj, delete),
                Some("HorizontalPodAutoscaler") => put(&self.hpas, obj, delete),
                other => panic!("FakeCaches has no store for kind {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    fn object(kind: &str, name: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": kind,
            "metadata": {"name": name, "namespace": "test", "resourceVersion": "1"},
            "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn undecodable_canaries_become_placeholders_and_relists_forget_the_gone() {
        let errors = DecodeErrors::default();
        let mut d = Decoder::<Canary>::new(errors.clone());
        let bad = object(
            "Canary",
            "bad",
            serde_json::json!({"service": {"port": 1e10}}),
        );
        let good = object(
            "Canary",
            "good",
            serde_json::json!({"service": {"port": 80}}),
        );
        assert!(matches!(
            d.event(watcher::Event::Init),
            Some(watcher::Event::Init)
        ));
        let Some(watcher::Event::InitApply(placeholder)) = d.event(watcher::Event::InitApply(bad))
        else {
            panic!("an undecodable Canary is kept as a placeholder");
        };
        assert_eq!(placeholder.name_any(), "bad");
        let why = crate::crd::decode::undecodable_of(&placeholder).unwrap();
        assert_eq!(why.field, "spec.service.port");
        assert_eq!(
            errors.get(FlaggerKind::Canary, "test", "bad"),
            Some(why.clone())
        );
        assert!(matches!(
            d.event(watcher::Event::InitApply(good.clone())),
            Some(watcher::Event::InitApply(_))
        ));
        d.event(watcher::Event::InitDone);
        assert!(errors.get(FlaggerKind::Canary, "test", "bad").is_some());
        // A relist without it forgets the error.
        d.event(watcher::Event::Init);
        d.event(watcher::Event::InitApply(good));
        d.event(watcher::Event::InitDone);
        assert_eq!(errors.get(FlaggerKind::Canary, "test", "bad"), None);
    }

    #[test]
    fn an_unreadable_template_leaves_the_store_and_says_why() {
        let errors = DecodeErrors::default();
        let mut d = Decoder::<MetricTemplate>::new(errors.clone());
        let good = object(
            "MetricTemplate",
            "errors",
            serde_json::json!({"provider": {"type": "prometheus"}, "query": "up"}),
        );
        let bad = object(
            "MetricTemplate",
            "errors",
            serde_json::json!({"provider": {"type": "prometheus", "headers": {"x": "not-a-list"}}}),
        );
        assert!(matches!(
            d.event(watcher::Event::Apply(good)),
            Some(watcher::Event::Apply(_))
        ));
        // Edited into something unreadable: removed from the store, not kept stale.
        let Some(watcher::Event::Delete(gone)) = d.event(watcher::Event::Apply(bad.clone())) else {
            panic!("an undecodable template is deleted from the store");
        };
        assert_eq!(gone.name_any(), "errors");
        let why = errors
            .get(FlaggerKind::MetricTemplate, "test", "errors")
            .unwrap();
        assert_eq!(why.field, "spec.provider.headers.x");
        // Not listed at all during a relist.
        d.event(watcher::Event::Init);
        assert!(d.event(watcher::Event::InitApply(bad)).is_none());
        // Deleted: forgotten.
        let deleted = object("MetricTemplate", "errors", serde_json::json!({}));
        d.event(watcher::Event::Delete(deleted));
        assert_eq!(
            errors.get(FlaggerKind::MetricTemplate, "test", "errors"),
            None
        );
    }

    #[test]
    fn strip_drops_managed_fields_and_last_applied_only() {
        let mut cm = ConfigMap::default();
        cm.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        cm.annotations_mut()
            .insert(LAST_APPLIED.to_owned(), "{\"big\":true}".to_owned());
        cm.annotations_mut()
            .insert("keep".to_owned(), "me".to_owned());
        strip(&mut cm);
        assert!(
            cm.metadata
                .managed_fields
                .as_ref()
                .is_none_or(Vec::is_empty)
        );
        assert_eq!(cm.annotations().len(), 1);
        assert_eq!(cm.annotations()["keep"], "me");
    }

    #[test]
    fn watch_events_map_to_supervisor_events() {
        let mut d = Deployment::default();
        d.metadata.name = Some("podinfo".into());
        d.metadata.namespace = Some("test".into());
        match dependency_event(
            DependencyKind::Deployment,
            &watcher::Event::Apply(d.clone()),
        ) {
            Some(CacheEvent::DependencyChanged {
                kind,
                namespace,
                name,
            }) => {
                assert_eq!(kind, DependencyKind::Deployment);
                assert_eq!((namespace.as_str(), name.as_str()), ("test", "podinfo"));
            }
            other => panic!("{other:?}"),
        }
        // Initial list items are not changes.
        assert!(
            dependency_event(DependencyKind::Deployment, &watcher::Event::InitApply(d)).is_none()
        );
        let mut c = Canary::new("podinfo", Default::default());
        c.metadata.namespace = Some("test".into());
        let (store, mut writer) = reflector::store::<Canary>();
        let applied = watcher::Event::Apply(c.clone());
        writer.apply_watcher_event(&applied);
        match canary_event(&applied, &store) {
            // The supervisor gets the cached object itself, not a second copy.
            Some(CacheEvent::CanaryApplied(sent)) => {
                let cached = lookup(&store, "test", "podinfo").unwrap();
                assert!(Arc::ptr_eq(&sent, &cached));
            }
            other => panic!("{other:?}"),
        }
        match canary_event(&watcher::Event::Delete(c), &store) {
            Some(CacheEvent::CanaryDeleted(key)) => assert_eq!(key.to_string(), "podinfo.test"),
            other => panic!("{other:?}"),
        }
    }
}
