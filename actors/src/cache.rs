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

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

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
        let canaries = spawn_watch::<Canary>(api(client, scope), &sink, &mut tasks, canary_event);
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
        let metric_templates =
            spawn_watch::<MetricTemplate>(api(client, scope), &sink, &mut tasks, |_| None);
        let alert_providers =
            spawn_watch::<AlertProvider>(api(client, scope), &sink, &mut tasks, |_| None);

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

fn canary_event(event: &watcher::Event<Canary>) -> Option<CacheEvent> {
    match event {
        watcher::Event::Apply(c) | watcher::Event::InitApply(c) => {
            Some(CacheEvent::CanaryApplied(Arc::new(c.clone())))
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
        match canary_event(&watcher::Event::Delete(c)) {
            Some(CacheEvent::CanaryDeleted(key)) => assert_eq!(key.to_string(), "podinfo.test"),
            other => panic!("{other:?}"),
        }
    }
}
