//! WorkloadActor: the `<t>-primary` Deployment, its HPA, the `-primary` copies of tracked
//! ConfigMaps/Secrets and scaling of the target; and, in [`build`], the one definition of what
//! the target tracks (config references, opt-outs, checksums) and of what a tick observes about
//! both Deployments (revision, readiness), which the CanaryActor's cache reads use too.
//!
//! Contract (flagger-behavior §2.4, §2.6, §2.9, §3.2, §3.5, §3.7):
//! - every handler is idempotent and writes nothing when the cluster already matches (compare
//!   before write; reads come from the reflector stores given at construction when present);
//! - handlers run concurrently across canaries (`ResponseFuture`), at most
//!   [`WorkloadConfig::max_concurrency`] at a time, every API request under a timeout;
//! - the object builders ([`build`]) are pure functions of the target and the spec, tested
//!   without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use flagger_rollout::readiness::{DeploymentView, canary_readiness, deployment_readiness};
use flagger_rollout::revision::{config_checksum, revision};
use flagger_rollout::{CanarySpec, PrimaryObservation, TargetObservation, Timestamp};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

pub use crate::kubeops::{CanaryRef, SelectorLabel};
use crate::kubeops::{
    DEFAULT_API_TIMEOUT, KubeOpError, ObjectId, Written, get_opt, merge_patch, update_existing,
    upsert,
};

// ------------------------------------------------------------------------------------------------
// Messages
// ------------------------------------------------------------------------------------------------

/// `Action::EnsurePrimary`: create `<t>-primary` from the target if missing, with the `-primary`
/// copies of the tracked ConfigMaps/Secrets and, when `autoscalerRef` is set, the `-primary` HPA.
/// Never modifies an existing primary Deployment or HPA (promotion does that).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), WorkloadError>")]
pub struct EnsurePrimary {
    pub canary: Arc<CanaryRef>,
}

/// `Action::PromoteToPrimary`: copy the tracked configs, then the target's template to the
/// primary (new `flagger-id`), then reconcile the primary HPA fully.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), WorkloadError>")]
pub struct PromoteToPrimary {
    pub canary: Arc<CanaryRef>,
}

/// `Action::ScaleCanary`: scale the target Deployment (merge patch of `spec.replicas`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), WorkloadError>")]
pub struct Scale {
    pub canary: Arc<CanaryRef>,
    pub to: flagger_rollout::Scale,
}

/// `Action::RevertTarget` (revertOnDeletion): give the target the primary's replicas (1 when the
/// primary has none set), or the scale-from-zero replicas when the primary is gone.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), WorkloadError>")]
pub struct RevertTarget {
    pub canary: Arc<CanaryRef>,
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(transparent)]
    Kube(#[from] KubeOpError),
    /// The target Deployment does not exist.
    #[error("deployment {name}.{namespace} not found")]
    TargetNotFound { namespace: String, name: String },
    /// The primary Deployment does not exist (promotion before initialization).
    #[error("deployment {name}.{namespace} not found")]
    PrimaryNotFound { namespace: String, name: String },
    /// The HPA named by `autoscalerRef` does not exist.
    #[error("HorizontalPodAutoscaler {name}.{namespace} not found")]
    AutoscalerNotFound { namespace: String, name: String },
    /// A mandatory (non-optional) ConfigMap/Secret reference points at nothing.
    #[error("{kind} {name}.{namespace} referenced by deployment {target}.{namespace} not found")]
    ConfigNotFound {
        kind: &'static str,
        namespace: String,
        name: String,
        target: String,
    },
    /// The target object cannot be used (no pod template, ...); names the field.
    #[error("deployment {name}.{namespace} is invalid: {problem}")]
    InvalidTarget {
        namespace: String,
        name: String,
        problem: String,
    },
    #[error("the workload actor is not available: {0}")]
    Unavailable(String),
}

impl WorkloadError {
    /// Low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            WorkloadError::Kube(e) => e.metric_label(),
            WorkloadError::TargetNotFound { .. } => "target_not_found",
            WorkloadError::PrimaryNotFound { .. } => "primary_not_found",
            WorkloadError::AutoscalerNotFound { .. } => "autoscaler_not_found",
            WorkloadError::ConfigNotFound { .. } => "config_not_found",
            WorkloadError::InvalidTarget { .. } => "invalid_target",
            WorkloadError::Unavailable(_) => "unavailable",
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Actor
// ------------------------------------------------------------------------------------------------

/// Operator-wide settings of the WorkloadActor.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// `--include-label-prefix`: target labels (and, on promotion, annotations) copied to the
    /// primary; `*` = all; empty = none.
    pub include_label_prefixes: Vec<String>,
    /// `--enable-config-tracking`.
    pub config_tracking: bool,
    /// Timeout of every API request.
    pub api_timeout: Duration,
    /// Handlers running at once, across all canaries.
    pub max_concurrency: usize,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            include_label_prefixes: Vec::new(),
            config_tracking: true,
            api_timeout: DEFAULT_API_TIMEOUT,
            max_concurrency: 16,
        }
    }
}

/// Reflector stores the actor reads before (or instead of) a GET. Any may be absent: it then
/// reads from the API server.
#[derive(Clone, Default)]
pub struct WorkloadStores {
    pub deployments: Option<Store<Deployment>>,
    pub config_maps: Option<Store<ConfigMap>>,
    pub secrets: Option<Store<Secret>>,
    pub hpas: Option<Store<HorizontalPodAutoscaler>>,
}

/// The I/O side, shared by every handler future.
#[derive(Clone)]
struct Workloads {
    client: Client,
    config: WorkloadConfig,
    stores: WorkloadStores,
}

pub struct WorkloadActor {
    workloads: Workloads,
    permits: Arc<Semaphore>,
}

impl WorkloadActor {
    pub fn new(client: Client, config: WorkloadConfig, stores: WorkloadStores) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrency.max(1)));
        Self {
            workloads: Workloads {
                client,
                config,
                stores,
            },
            permits,
        }
    }

    fn run<T, F, Fut>(&self, f: F) -> ResponseFuture<Result<T, WorkloadError>>
    where
        T: 'static,
        F: FnOnce(Workloads) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<T, WorkloadError>> + 'static,
    {
        let workloads = self.workloads.clone();
        let permits = self.permits.clone();
        Box::pin(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|e| WorkloadError::Unavailable(e.to_string()))?;
            f(workloads).await
        })
    }
}

impl Actor for WorkloadActor {
    type Context = Context<Self>;
}

impl Handler<EnsurePrimary> for WorkloadActor {
    type Result = ResponseFuture<Result<(), WorkloadError>>;
    fn handle(&mut self, msg: EnsurePrimary, _: &mut Self::Context) -> Self::Result {
        self.run(move |w| async move { w.ensure_primary(&msg.canary).await })
    }
}

impl Handler<PromoteToPrimary> for WorkloadActor {
    type Result = ResponseFuture<Result<(), WorkloadError>>;
    fn handle(&mut self, msg: PromoteToPrimary, _: &mut Self::Context) -> Self::Result {
        self.run(move |w| async move { w.promote(&msg.canary).await })
    }
}

impl Handler<Scale> for WorkloadActor {
    type Result = ResponseFuture<Result<(), WorkloadError>>;
    fn handle(&mut self, msg: Scale, _: &mut Self::Context) -> Self::Result {
        self.run(move |w| async move { w.scale(&msg.canary, msg.to).await })
    }
}

impl Handler<RevertTarget> for WorkloadActor {
    type Result = ResponseFuture<Result<(), WorkloadError>>;
    fn handle(&mut self, msg: RevertTarget, _: &mut Self::Context) -> Self::Result {
        self.run(move |w| async move { w.revert_target(&msg.canary).await })
    }
}

impl Workloads {
    fn deployments(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Cached copy, or a GET when no store was given (or the store does not have it yet).
    async fn read<K>(
        &self,
        store: Option<&Store<K>>,
        api: &Api<K>,
        id: &ObjectId,
    ) -> Result<Option<K>, KubeOpError>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if let Some(store) = store
            && let Some(obj) = store.get(&ObjectRef::new(&id.name).within(&id.namespace))
        {
            return Ok(Some((*obj).clone()));
        }
        get_opt(api, id, self.config.api_timeout).await
    }

    fn cached<K>(store: Option<&Store<K>>, id: &ObjectId) -> Option<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone,
    {
        store.and_then(|s| s.get(&ObjectRef::new(&id.name).within(&id.namespace)))
    }

    async fn target(&self, c: &CanaryRef) -> Result<Deployment, WorkloadError> {
        let ns = c.namespace();
        let id = ObjectId::new("Deployment", ns, &c.spec.target_ref.name);
        self.read(self.stores.deployments.as_ref(), &self.deployments(ns), &id)
            .await?
            .ok_or_else(|| WorkloadError::TargetNotFound {
                namespace: ns.to_owned(),
                name: c.spec.target_ref.name.clone(),
            })
    }

    async fn primary(&self, c: &CanaryRef) -> Result<Option<Deployment>, WorkloadError> {
        let ns = c.namespace();
        let id = ObjectId::new("Deployment", ns, &c.spec.primary_name());
        Ok(self
            .read(self.stores.deployments.as_ref(), &self.deployments(ns), &id)
            .await?)
    }

    async fn hpa(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<HorizontalPodAutoscaler>, WorkloadError> {
        let id = ObjectId::new("HorizontalPodAutoscaler", ns, name);
        let api = Api::namespaced(self.client.clone(), ns);
        Ok(self.read(self.stores.hpas.as_ref(), &api, &id).await?)
    }

    /// The tracked ConfigMaps/Secrets of `target` (empty when config tracking is off): every
    /// referenced object read (store, else GET), then chosen by [`build::tracked_configs`].
    async fn tracked(&self, c: &CanaryRef, target: &Deployment) -> Result<Tracked, WorkloadError> {
        if !self.config.config_tracking {
            return Ok(Tracked::default());
        }
        let ns = c.namespace();
        let Some(pod) = target.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
            return Ok(Tracked::default());
        };
        let refs = build::config_refs(pod);
        let cm_api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let mut config_maps = BTreeMap::new();
        for name in refs.config_maps.keys() {
            let id = ObjectId::new("ConfigMap", ns, name);
            if let Some(cm) = self
                .read(self.stores.config_maps.as_ref(), &cm_api, &id)
                .await?
            {
                config_maps.insert(name.clone(), Arc::new(cm));
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let mut secrets = BTreeMap::new();
        for name in refs.secrets.keys() {
            let id = ObjectId::new("Secret", ns, name);
            if let Some(s) = self
                .read(self.stores.secrets.as_ref(), &secret_api, &id)
                .await?
            {
                secrets.insert(name.clone(), Arc::new(s));
            }
        }
        build::tracked_configs(
            &refs,
            ns,
            &c.spec.target_ref.name,
            |name| config_maps.get(name).cloned(),
            |name| secrets.get(name).cloned(),
        )
    }

    /// Upserts the `-primary` copies; true when any was written.
    async fn copy_configs(&self, c: &CanaryRef, tracked: &Tracked) -> Result<bool, WorkloadError> {
        let maps = self
            .copy_each(
                c,
                self.stores.config_maps.as_ref(),
                tracked.config_maps.values().map(|m| &**m),
                build::primary_config_map,
                build::update_config_map,
            )
            .await?;
        let secrets = self
            .copy_each(
                c,
                self.stores.secrets.as_ref(),
                tracked.secrets.values().map(|s| &**s),
                build::primary_secret,
                build::update_secret,
            )
            .await?;
        Ok(maps || secrets)
    }

    /// Creates or updates the `-primary` copy of each of `sources`; true when anything was written.
    async fn copy_each<'a, K>(
        &self,
        c: &CanaryRef,
        store: Option<&Store<K>>,
        sources: impl Iterator<Item = &'a K>,
        copy_of: fn(&CanaryRef, &K) -> K,
        update: fn(&CanaryRef, &K, &K) -> Option<K>,
    ) -> Result<bool, WorkloadError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + Debug
            + 'a,
    {
        let ns = c.namespace();
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let mut wrote = false;
        for source in sources {
            let desired = copy_of(c, source);
            let name = desired.meta().name.clone().unwrap_or_default();
            let id = ObjectId::new(K::kind(&()).as_ref(), ns, &name);
            let w = upsert(
                &api,
                &id,
                self.config.api_timeout,
                Self::cached(store, &id),
                || desired.clone(),
                |live| update(c, live, &desired),
            )
            .await?;
            wrote |= w != Written::Unchanged;
        }
        Ok(wrote)
    }

    async fn ensure_primary(&self, c: &CanaryRef) -> Result<(), WorkloadError> {
        let ns = c.namespace();
        if self.primary(c).await?.is_none() {
            let target = self.target(c).await?;
            let tracked = self.tracked(c, &target).await?;
            self.copy_configs(c, &tracked).await?;
            let mut desired = build::primary_deployment(
                c,
                &target,
                &tracked.names(),
                &self.config.include_label_prefixes,
                &uuid::Uuid::new_v4().to_string(),
            )?;
            build::stamp_revision(&mut desired, &tracked.revision_of(&target));
            let id = ObjectId::new("Deployment", ns, &c.spec.primary_name());
            // Never modify an existing primary here: promotion does that.
            upsert(
                &self.deployments(ns),
                &id,
                self.config.api_timeout,
                None,
                || desired.clone(),
                |_| None,
            )
            .await?;
        }
        self.reconcile_primary_hpa(c, false).await
    }

    /// Creates the primary HPA when missing; with `full`, also updates an existing one.
    async fn reconcile_primary_hpa(&self, c: &CanaryRef, full: bool) -> Result<(), WorkloadError> {
        let (Some(autoscaler), Some(primary_name)) = (
            c.spec.autoscaler_ref.as_ref(),
            c.spec.primary_autoscaler_name(),
        ) else {
            return Ok(());
        };
        let ns = c.namespace();
        let target_hpa = self.hpa(ns, &autoscaler.name).await?.ok_or_else(|| {
            WorkloadError::AutoscalerNotFound {
                namespace: ns.to_owned(),
                name: autoscaler.name.clone(),
            }
        })?;
        let desired = build::primary_hpa(c, &target_hpa, &self.config.include_label_prefixes);
        let id = ObjectId::new("HorizontalPodAutoscaler", ns, &primary_name);
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), ns);
        let cached = Self::cached(self.stores.hpas.as_ref(), &id);
        upsert(
            &api,
            &id,
            self.config.api_timeout,
            cached,
            || desired.clone(),
            |live| {
                if full {
                    build::update_hpa(live, &desired)
                } else {
                    None
                }
            },
        )
        .await?;
        Ok(())
    }

    async fn promote(&self, c: &CanaryRef) -> Result<(), WorkloadError> {
        let ns = c.namespace();
        let target = self.target(c).await?;
        let tracked = self.tracked(c, &target).await?;
        let configs_changed = self.copy_configs(c, &tracked).await?;
        let names = tracked.names();
        let prefixes = &self.config.include_label_prefixes;
        let flagger_id = uuid::Uuid::new_v4().to_string();
        let mut desired = build::primary_deployment(c, &target, &names, prefixes, &flagger_id)?;
        build::stamp_revision(&mut desired, &tracked.revision_of(&target));
        let id = ObjectId::new("Deployment", ns, &c.spec.primary_name());
        let written = update_existing(
            &self.deployments(ns),
            &id,
            self.config.api_timeout,
            |live| build::promote_primary(c, live, &desired, configs_changed),
        )
        .await?;
        if written.is_none() {
            return Err(WorkloadError::PrimaryNotFound {
                namespace: ns.to_owned(),
                name: c.spec.primary_name(),
            });
        }
        self.reconcile_primary_hpa(c, true).await
    }

    async fn scale_up_replicas(
        &self,
        c: &CanaryRef,
        target: &Deployment,
    ) -> Result<i32, WorkloadError> {
        let primary = if c.spec.autoscaler_ref.is_none() {
            self.primary(c).await?
        } else {
            None
        };
        let hpa = match &c.spec.autoscaler_ref {
            Some(a) => self.hpa(c.namespace(), &a.name).await?,
            None => None,
        };
        Ok(build::scale_from_zero(
            target,
            primary.as_ref(),
            hpa.as_ref(),
        ))
    }

    async fn patch_target_replicas(
        &self,
        c: &CanaryRef,
        target: &Deployment,
        replicas: i32,
    ) -> Result<(), WorkloadError> {
        if build::replicas(target) == Some(replicas) {
            return Ok(());
        }
        let ns = c.namespace();
        let id = ObjectId::new("Deployment", ns, &c.spec.target_ref.name);
        merge_patch(
            &self.deployments(ns),
            &id,
            self.config.api_timeout,
            &serde_json::json!({"spec": {"replicas": replicas}}),
        )
        .await?;
        Ok(())
    }

    async fn scale(&self, c: &CanaryRef, to: flagger_rollout::Scale) -> Result<(), WorkloadError> {
        let target = self.target(c).await?;
        let replicas = match to {
            flagger_rollout::Scale::ToZero => 0,
            flagger_rollout::Scale::Up => {
                if build::replicas(&target).unwrap_or(1) > 0 {
                    return Ok(());
                }
                self.scale_up_replicas(c, &target).await?
            }
        };
        self.patch_target_replicas(c, &target, replicas).await
    }

    async fn revert_target(&self, c: &CanaryRef) -> Result<(), WorkloadError> {
        let target = self.target(c).await?;
        let replicas = match self.primary(c).await? {
            Some(p) => build::replicas(&p).unwrap_or(1),
            None => self.scale_up_replicas(c, &target).await?,
        };
        self.patch_target_replicas(c, &target, replicas).await
    }
}

/// The ConfigMaps/Secrets a target tracks, by name.
#[derive(Debug, Clone, Default)]
pub struct Tracked {
    pub config_maps: BTreeMap<String, Arc<ConfigMap>>,
    pub secrets: BTreeMap<String, Arc<Secret>>,
}

impl Tracked {
    /// The revision of `target` with these tracked configs (pod template + config checksums).
    pub fn revision_of(&self, target: &Deployment) -> String {
        let template =
            serde_json::to_value(target.spec.as_ref().map(|s| &s.template)).unwrap_or_default();
        revision(&template, &self.checksums())
    }

    pub fn names(&self) -> build::TrackedNames {
        build::TrackedNames {
            config_maps: self.config_maps.keys().cloned().collect(),
            secrets: self.secrets.keys().cloned().collect(),
        }
    }

    /// `configmap/<name>` / `secret/<name>` → checksum of `.data`.
    pub fn checksums(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, cm) in &self.config_maps {
            out.insert(
                format!("configmap/{name}"),
                config_checksum(&cm.data.clone().unwrap_or_default()),
            );
        }
        for (name, s) in &self.secrets {
            let data: BTreeMap<String, String> = s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::to_value(v)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                    )
                })
                .collect();
            out.insert(format!("secret/{name}"), config_checksum(&data));
        }
        out
    }
}

/// Pure functions: the desired objects, what the target tracks, what a tick observes.
pub mod build {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::autoscaling::v2::{
        CrossVersionObjectReference, HorizontalPodAutoscalerSpec,
    };
    use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    use crate::kubeops::{is_flux_key, merge_owner_references};

    /// Annotation of the primary pod template that changes on every promotion.
    pub const FLAGGER_ID: &str = "flagger-id";
    /// Annotation of the primary Deployment (not its pods): the target revision it was created
    /// or last promoted from. A tick that finds it equal to the revision under analysis knows
    /// the promotion was written even if the status saying so was lost.
    pub const PROMOTED_REVISION: &str = "flagger.app/promoted-revision";

    /// Records on `primary` the target revision it is built from (see [`PROMOTED_REVISION`]).
    pub fn stamp_revision(primary: &mut Deployment, revision: &str) {
        primary
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(PROMOTED_REVISION.to_owned(), revision.to_owned());
    }

    /// The revision recorded by [`stamp_revision`].
    pub fn promoted_revision(primary: &Deployment) -> Option<String> {
        primary
            .metadata
            .annotations
            .as_ref()?
            .get(PROMOTED_REVISION)
            .cloned()
    }
    /// ConfigMaps/Secrets annotated with a value starting with `disable` are not tracked.
    pub const CONFIG_TRACKING_ANNOTATION: &str = "flagger.app/config-tracking";

    /// Names referenced by a pod spec; the value is `true` when the reference is optional.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct ConfigRefs {
        pub config_maps: BTreeMap<String, bool>,
        pub secrets: BTreeMap<String, bool>,
    }

    impl ConfigRefs {
        fn add(map: &mut BTreeMap<String, bool>, name: &str, optional: Option<bool>) {
            if name.is_empty() {
                return;
            }
            // Mandatory wins when the same object is referenced twice.
            let opt = optional.unwrap_or(false);
            map.entry(name.to_owned())
                .and_modify(|o| *o &= opt)
                .or_insert(opt);
        }
    }

    /// The names of the tracked (copied) configs.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct TrackedNames {
        pub config_maps: BTreeSet<String>,
        pub secrets: BTreeSet<String>,
    }

    /// ConfigMaps/Secrets a pod spec references: volumes, projected sources, and env/envFrom of
    /// containers and init containers.
    pub fn config_refs(pod: &PodSpec) -> ConfigRefs {
        let mut r = ConfigRefs::default();
        for v in pod.volumes.iter().flatten() {
            if let Some(cm) = &v.config_map {
                ConfigRefs::add(&mut r.config_maps, &cm.name, cm.optional);
            }
            if let Some(s) = &v.secret {
                ConfigRefs::add(
                    &mut r.secrets,
                    s.secret_name.as_deref().unwrap_or_default(),
                    s.optional,
                );
            }
            for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                if let Some(cm) = &src.config_map {
                    ConfigRefs::add(&mut r.config_maps, &cm.name, cm.optional);
                }
                if let Some(s) = &src.secret {
                    ConfigRefs::add(&mut r.secrets, &s.name, s.optional);
                }
            }
        }
        for c in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            for e in c.env.iter().flatten() {
                if let Some(vf) = &e.value_from {
                    if let Some(k) = &vf.config_map_key_ref {
                        ConfigRefs::add(&mut r.config_maps, &k.name, k.optional);
                    }
                    if let Some(k) = &vf.secret_key_ref {
                        ConfigRefs::add(&mut r.secrets, &k.name, k.optional);
                    }
                }
            }
            for e in c.env_from.iter().flatten() {
                if let Some(k) = &e.config_map_ref {
                    ConfigRefs::add(&mut r.config_maps, &k.name, k.optional);
                }
                if let Some(k) = &e.secret_ref {
                    ConfigRefs::add(&mut r.secrets, &k.name, k.optional);
                }
            }
        }
        r
    }

    /// Renames every reference to a tracked config to `<name>-primary`.
    pub fn rewrite_config_refs(pod: &mut PodSpec, tracked: &TrackedNames) {
        let cm = |n: &mut String| {
            if tracked.config_maps.contains(n.as_str()) {
                n.push_str("-primary");
            }
        };
        let sec = |n: &mut String| {
            if tracked.secrets.contains(n.as_str()) {
                n.push_str("-primary");
            }
        };
        for v in pod.volumes.iter_mut().flatten() {
            if let Some(c) = &mut v.config_map {
                cm(&mut c.name);
            }
            if let Some(s) = v.secret.as_mut().and_then(|s| s.secret_name.as_mut()) {
                sec(s);
            }
            for src in v
                .projected
                .iter_mut()
                .flat_map(|p| p.sources.iter_mut().flatten())
            {
                if let Some(c) = &mut src.config_map {
                    cm(&mut c.name);
                }
                if let Some(s) = &mut src.secret {
                    sec(&mut s.name);
                }
            }
        }
        let init = pod.init_containers.iter_mut().flatten();
        for c in pod.containers.iter_mut().chain(init) {
            for e in c.env.iter_mut().flatten() {
                if let Some(vf) = &mut e.value_from {
                    if let Some(k) = &mut vf.config_map_key_ref {
                        cm(&mut k.name);
                    }
                    if let Some(k) = &mut vf.secret_key_ref {
                        sec(&mut k.name);
                    }
                }
            }
            for e in c.env_from.iter_mut().flatten() {
                if let Some(k) = &mut e.config_map_ref {
                    cm(&mut k.name);
                }
                if let Some(k) = &mut e.secret_ref {
                    sec(&mut k.name);
                }
            }
        }
    }

    /// Not opted out with `flagger.app/config-tracking: disabled`.
    pub fn is_tracked(meta: &ObjectMeta) -> bool {
        !meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(CONFIG_TRACKING_ANNOTATION))
            .is_some_and(|v| v.starts_with("disable"))
    }

    /// Secret types upstream copies.
    pub fn is_tracked_secret_type(t: Option<&str>) -> bool {
        matches!(
            t.unwrap_or("Opaque"),
            "Opaque" | "kubernetes.io/basic-auth" | "kubernetes.io/ssh-auth" | "kubernetes.io/tls"
        )
    }

    /// The tracked ConfigMaps/Secrets among `refs`, given how to find each by name (a reflector
    /// store, or objects read just before): opted-out objects and Secret types upstream does not
    /// copy are skipped; a missing optional reference is ignored, a missing mandatory one is an
    /// error naming it.
    pub fn tracked_configs(
        refs: &ConfigRefs,
        namespace: &str,
        target: &str,
        config_map: impl Fn(&str) -> Option<Arc<ConfigMap>>,
        secret: impl Fn(&str) -> Option<Arc<Secret>>,
    ) -> Result<Tracked, WorkloadError> {
        let missing = |kind: &'static str, name: &str| WorkloadError::ConfigNotFound {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            target: target.to_owned(),
        };
        let mut tracked = Tracked::default();
        for (name, optional) in &refs.config_maps {
            match config_map(name) {
                Some(cm) if is_tracked(&cm.metadata) => {
                    tracked.config_maps.insert(name.clone(), cm);
                }
                Some(_) => {}
                None if *optional => {}
                None => return Err(missing("configmap", name)),
            }
        }
        for (name, optional) in &refs.secrets {
            match secret(name) {
                Some(s)
                    if is_tracked(&s.metadata) && is_tracked_secret_type(s.type_.as_deref()) =>
                {
                    tracked.secrets.insert(name.clone(), s);
                }
                Some(_) => {}
                None if *optional => {}
                None => return Err(missing("secret", name)),
            }
        }
        Ok(tracked)
    }

    fn include(key: &str, prefixes: &[String]) -> bool {
        !is_flux_key(key)
            && prefixes
                .iter()
                .any(|p| p == "*" || key.starts_with(p.as_str()))
    }

    fn filtered(
        m: Option<&BTreeMap<String, String>>,
        prefixes: &[String],
    ) -> BTreeMap<String, String> {
        m.into_iter()
            .flatten()
            .filter(|(k, _)| include(k, prefixes))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn without_flux(m: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
        m.into_iter()
            .flatten()
            .filter(|(k, _)| !is_flux_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn replicas(d: &Deployment) -> Option<i32> {
        d.spec.as_ref().and_then(|s| s.replicas)
    }

    /// For keys in the selector labels, a value equal to the target name gets `-primary`
    /// (topologySpreadConstraints and pod anti-affinity label selectors).
    fn rewrite_affinity_selectors(pod: &mut PodSpec, c: &CanaryRef) {
        let target = &c.spec.target_ref.name;
        let fix = |sel: &mut LabelSelector| {
            if let Some(ml) = &mut sel.match_labels {
                for (k, v) in ml.iter_mut() {
                    if *k == c.selector.key && v == target {
                        v.push_str("-primary");
                    }
                }
            }
            for e in sel.match_expressions.iter_mut().flatten() {
                if e.key == c.selector.key
                    && let Some(v) = e.values.iter_mut().flatten().find(|v| *v == target)
                {
                    v.push_str("-primary");
                }
            }
        };
        for t in pod.topology_spread_constraints.iter_mut().flatten() {
            if let Some(s) = &mut t.label_selector {
                fix(s);
            }
        }
        if let Some(anti) = pod
            .affinity
            .as_mut()
            .and_then(|a| a.pod_anti_affinity.as_mut())
        {
            for t in anti
                .required_during_scheduling_ignored_during_execution
                .iter_mut()
                .flatten()
            {
                if let Some(s) = &mut t.label_selector {
                    fix(s);
                }
            }
            for w in anti
                .preferred_during_scheduling_ignored_during_execution
                .iter_mut()
                .flatten()
            {
                if let Some(s) = &mut w.pod_affinity_term.label_selector {
                    fix(s);
                }
            }
        }
    }

    /// The desired `<t>-primary` Deployment (flagger-behavior §3.2).
    pub fn primary_deployment(
        c: &CanaryRef,
        target: &Deployment,
        tracked: &TrackedNames,
        include_prefixes: &[String],
        flagger_id: &str,
    ) -> Result<Deployment, WorkloadError> {
        let ns = c.namespace();
        let spec = target
            .spec
            .as_ref()
            .ok_or_else(|| WorkloadError::InvalidTarget {
                namespace: ns.to_owned(),
                name: c.spec.target_ref.name.clone(),
                problem: "spec is missing".into(),
            })?;
        let primary_value = c.selector.primary_value();
        let mut labels = filtered(target.metadata.labels.as_ref(), include_prefixes);
        labels.insert(c.selector.key.clone(), primary_value.clone());
        let mut pod_labels = without_flux(
            spec.template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref()),
        );
        pod_labels.insert(c.selector.key.clone(), primary_value.clone());
        let mut pod_annotations = without_flux(
            spec.template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref()),
        );
        pod_annotations.insert(FLAGGER_ID.to_owned(), flagger_id.to_owned());
        let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
        rewrite_config_refs(&mut pod_spec, tracked);
        rewrite_affinity_selectors(&mut pod_spec, c);
        Ok(Deployment {
            metadata: ObjectMeta {
                name: Some(c.spec.primary_name()),
                namespace: Some(ns.to_owned()),
                labels: Some(labels),
                annotations: Some(without_flux(target.metadata.annotations.as_ref()))
                    .filter(|a| !a.is_empty()),
                owner_references: Some(vec![c.owner_reference()]),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                progress_deadline_seconds: spec.progress_deadline_seconds,
                min_ready_seconds: spec.min_ready_seconds,
                revision_history_limit: spec.revision_history_limit,
                strategy: spec.strategy.clone(),
                replicas: Some(spec.replicas.filter(|r| *r > 0).unwrap_or(1)),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([(c.selector.key.clone(), primary_value)])),
                    match_expressions: None,
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        annotations: Some(pod_annotations),
                        ..Default::default()
                    }),
                    spec: Some(pod_spec),
                },
                ..Default::default()
            }),
            status: None,
        })
    }

    fn template_without_id(t: &PodTemplateSpec) -> serde_json::Value {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        if let Some(a) = v
            .pointer_mut("/metadata/annotations")
            .and_then(|a| a.as_object_mut())
        {
            a.remove(FLAGGER_ID);
        }
        v
    }

    /// Promotion of `live` to `desired` (built by [`primary_deployment`]): the copied spec fields,
    /// the template, replicas only without an autoscaler, labels/annotations replaced. `None` when
    /// nothing but the `flagger-id` would change and no config copy changed.
    pub fn promote_primary(
        c: &CanaryRef,
        live: &Deployment,
        desired: &Deployment,
        configs_changed: bool,
    ) -> Option<Deployment> {
        let (ls, ds) = (live.spec.as_ref()?, desired.spec.as_ref()?);
        let mut out = live.clone();
        let os = out.spec.as_mut()?;
        os.progress_deadline_seconds = ds.progress_deadline_seconds;
        os.min_ready_seconds = ds.min_ready_seconds;
        os.revision_history_limit = ds.revision_history_limit;
        os.strategy = ds.strategy.clone();
        if c.spec.autoscaler_ref.is_none() {
            os.replicas = ds.replicas;
        }
        os.template = ds.template.clone();
        out.metadata.labels = desired.metadata.labels.clone();
        out.metadata.annotations = desired.metadata.annotations.clone();
        let same_template = template_without_id(&ls.template) == template_without_id(&ds.template);
        let same_rest = serde_json::to_value(&live.metadata.labels).ok()
            == serde_json::to_value(&out.metadata.labels).ok()
            && live.metadata.annotations.clone().unwrap_or_default()
                == out.metadata.annotations.clone().unwrap_or_default()
            && ls.replicas == os.replicas
            && ls.strategy == os.strategy
            && ls.min_ready_seconds == os.min_ready_seconds
            && ls.progress_deadline_seconds == os.progress_deadline_seconds
            && ls.revision_history_limit == os.revision_history_limit;
        if same_template && same_rest && !configs_changed {
            return None;
        }
        Some(out)
    }

    /// The `-primary` copy of a tracked ConfigMap.
    pub fn primary_config_map(c: &CanaryRef, cm: &ConfigMap) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}-primary",
                    cm.metadata.name.clone().unwrap_or_default()
                )),
                namespace: Some(c.namespace().to_owned()),
                labels: cm.metadata.labels.clone(),
                annotations: cm.metadata.annotations.clone(),
                owner_references: Some(vec![c.owner_reference()]),
                ..Default::default()
            },
            data: cm.data.clone(),
            binary_data: cm.binary_data.clone(),
            immutable: None,
        }
    }

    /// `live` updated to `desired`'s content, or `None` when it already matches.
    pub fn update_config_map(
        c: &CanaryRef,
        live: &ConfigMap,
        desired: &ConfigMap,
    ) -> Option<ConfigMap> {
        let owners = merge_owner_references(c, live.metadata.owner_references.as_ref());
        if live.data == desired.data
            && live.binary_data == desired.binary_data
            && live.metadata.labels == desired.metadata.labels
            && live.metadata.annotations == desired.metadata.annotations
            && live.metadata.owner_references.as_ref() == Some(&owners)
        {
            return None;
        }
        let mut out = live.clone();
        out.data = desired.data.clone();
        out.binary_data = desired.binary_data.clone();
        out.metadata.labels = desired.metadata.labels.clone();
        out.metadata.annotations = desired.metadata.annotations.clone();
        out.metadata.owner_references = Some(owners);
        Some(out)
    }

    /// The `-primary` copy of a tracked Secret.
    pub fn primary_secret(c: &CanaryRef, s: &Secret) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}-primary",
                    s.metadata.name.clone().unwrap_or_default()
                )),
                namespace: Some(c.namespace().to_owned()),
                labels: s.metadata.labels.clone(),
                annotations: s.metadata.annotations.clone(),
                owner_references: Some(vec![c.owner_reference()]),
                ..Default::default()
            },
            data: s.data.clone(),
            type_: s.type_.clone(),
            ..Default::default()
        }
    }

    /// `live` updated to `desired`'s content, or `None` when it already matches.
    pub fn update_secret(c: &CanaryRef, live: &Secret, desired: &Secret) -> Option<Secret> {
        let owners = merge_owner_references(c, live.metadata.owner_references.as_ref());
        if live.data == desired.data
            && live.metadata.labels == desired.metadata.labels
            && live.metadata.annotations == desired.metadata.annotations
            && live.metadata.owner_references.as_ref() == Some(&owners)
        {
            return None;
        }
        let mut out = live.clone();
        out.data = desired.data.clone();
        out.metadata.labels = desired.metadata.labels.clone();
        out.metadata.annotations = desired.metadata.annotations.clone();
        out.metadata.owner_references = Some(owners);
        Some(out)
    }

    /// The `<hpa>-primary` HPA scaling `<t>-primary` (flagger-behavior §3.5).
    pub fn primary_hpa(
        c: &CanaryRef,
        target_hpa: &HorizontalPodAutoscaler,
        include_prefixes: &[String],
    ) -> HorizontalPodAutoscaler {
        let ts = target_hpa.spec.clone().unwrap_or_default();
        let a = c.spec.autoscaler_ref.as_ref();
        let min = a
            .and_then(|a| a.primary_min_replicas)
            .and_then(|m| i32::try_from(m).ok())
            .or(ts.min_replicas);
        let max = a
            .and_then(|a| a.primary_max_replicas)
            .and_then(|m| i32::try_from(m).ok())
            .unwrap_or(ts.max_replicas);
        HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                name: c.spec.primary_autoscaler_name(),
                namespace: Some(c.namespace().to_owned()),
                labels: Some(without_flux(target_hpa.metadata.labels.as_ref()))
                    .filter(|l| !l.is_empty()),
                annotations: Some(filtered(
                    target_hpa.metadata.annotations.as_ref(),
                    include_prefixes,
                ))
                .filter(|a| !a.is_empty()),
                owner_references: Some(vec![c.owner_reference()]),
                ..Default::default()
            },
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: ts.scale_target_ref.api_version.clone(),
                    kind: ts.scale_target_ref.kind.clone(),
                    name: c.spec.primary_name(),
                },
                min_replicas: min,
                max_replicas: max,
                metrics: ts.metrics.clone(),
                behavior: ts.behavior.clone(),
            }),
            status: None,
        }
    }

    /// Full update of a primary HPA (promotion), or `None` when it matches.
    pub fn update_hpa(
        live: &HorizontalPodAutoscaler,
        desired: &HorizontalPodAutoscaler,
    ) -> Option<HorizontalPodAutoscaler> {
        if live.spec == desired.spec
            && live.metadata.labels.clone().unwrap_or_default()
                == desired.metadata.labels.clone().unwrap_or_default()
            && live.metadata.annotations.clone().unwrap_or_default()
                == desired.metadata.annotations.clone().unwrap_or_default()
        {
            return None;
        }
        let mut out = live.clone();
        out.spec = desired.spec.clone();
        out.metadata.labels = desired.metadata.labels.clone();
        out.metadata.annotations = desired.metadata.annotations.clone();
        Some(out)
    }

    /// Scale-from-zero replicas (flagger-behavior §2.6.3): target's if > 0; else the primary's
    /// if > 0 (`primary` is only given without an autoscaler); else HPA `minReplicas` if > 1;
    /// else 1.
    pub fn scale_from_zero(
        target: &Deployment,
        primary: Option<&Deployment>,
        hpa: Option<&HorizontalPodAutoscaler>,
    ) -> i32 {
        if let Some(r) = replicas(target).filter(|r| *r > 0) {
            return r;
        }
        if let Some(r) = primary.and_then(replicas).filter(|r| *r > 0) {
            return r;
        }
        if let Some(m) = hpa
            .and_then(|h| h.spec.as_ref())
            .and_then(|s| s.min_replicas)
            .filter(|m| *m > 1)
        {
            return m;
        }
        1
    }

    /// The numbers readiness depends on.
    pub fn deployment_view(
        d: &Deployment,
        hpa: Option<&HorizontalPodAutoscaler>,
    ) -> DeploymentView {
        let status = d.status.clone().unwrap_or_default();
        let conditions = status.conditions.clone().unwrap_or_default();
        let progress_deadline_exceeded = conditions.iter().any(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        let unavailable_since = conditions
            .iter()
            .find(|c| {
                c.type_ == "Available"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("MinimumReplicasUnavailable")
            })
            .and_then(|c| {
                c.last_update_time
                    .as_ref()
                    .or(c.last_transition_time.as_ref())
            })
            .map(|t| Timestamp::from_unix_millis(t.0.as_millisecond()));
        DeploymentView {
            generation: d.metadata.generation.unwrap_or(0),
            observed_generation: status.observed_generation.unwrap_or(0),
            replicas: replicas(d).unwrap_or(1),
            status_replicas: status.replicas.unwrap_or(0),
            updated_replicas: status.updated_replicas.unwrap_or(0),
            available_replicas: status.available_replicas.unwrap_or(0),
            progress_deadline_exceeded,
            unavailable_since,
            autoscaler_desired_replicas: hpa
                .and_then(|h| h.status.as_ref())
                .map(|s| s.desired_replicas)
                .filter(|r| *r > 0),
        }
    }

    /// The target's observation: revision over its pod template and the checksums of `tracked`,
    /// readiness with its autoscaler's desired replicas (`hpa`, so a canary halts while it is
    /// scaling).
    pub fn target_observation(
        spec: &CanarySpec,
        target: &Deployment,
        tracked: &Tracked,
        hpa: Option<&HorizontalPodAutoscaler>,
        now: Timestamp,
    ) -> Result<TargetObservation, WorkloadError> {
        let invalid = |problem: String| WorkloadError::InvalidTarget {
            namespace: spec.namespace.clone(),
            name: spec.target_ref.name.clone(),
            problem,
        };
        let template = target
            .spec
            .as_ref()
            .map(|s| &s.template)
            .ok_or_else(|| invalid("spec is missing".into()))?;
        let template =
            serde_json::to_value(template).map_err(|e| invalid(format!("spec.template: {e}")))?;
        let checksums = tracked.checksums();
        Ok(TargetObservation {
            revision: revision(&template, &checksums),
            tracked_configs: checksums,
            readiness: canary_readiness(
                &spec.target_ref.name,
                &deployment_view(target, hpa),
                spec.analysis.canary_ready_threshold,
                spec.progress_deadline,
                now,
            ),
        })
    }

    /// The `<t>-primary` observation; `hpa` is the `-primary` autoscaler.
    pub fn primary_observation(
        spec: &CanarySpec,
        primary: &Deployment,
        hpa: Option<&HorizontalPodAutoscaler>,
        now: Timestamp,
    ) -> PrimaryObservation {
        PrimaryObservation {
            readiness: deployment_readiness(
                &spec.primary_name(),
                &deployment_view(primary, hpa),
                spec.analysis.primary_ready_threshold,
                spec.progress_deadline,
                now,
            ),
            revision: promoted_revision(primary),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::build::*;
    use crate::kubeops::tests_support::canary_ref;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::core::v1::PodSpec;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn config_refs_cover_volumes_projections_env_and_init_containers() {
        let p = pod(json!({
            "containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "s-env"}}]}],
            "initContainers": [{"name": "i", "env": [
                {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm-init", "key": "k", "optional": true}}},
                {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s-vol", "key": "k"}}}
            ]}],
            "volumes": [
                {"name": "v1", "configMap": {"name": "cm-vol"}},
                {"name": "v2", "secret": {"secretName": "s-vol", "optional": true}},
                {"name": "v3", "projected": {"sources": [{"configMap": {"name": "cm-proj"}}, {"secret": {"name": "s-proj"}}]}}
            ]
        }));
        let refs = config_refs(&p);
        assert_eq!(
            refs.config_maps.into_iter().collect::<Vec<_>>(),
            vec![
                ("cm-init".into(), true),
                ("cm-proj".into(), false),
                ("cm-vol".into(), false)
            ]
        );
        // s-vol is optional in the volume and mandatory in the init container: mandatory.
        assert_eq!(
            refs.secrets.into_iter().collect::<Vec<_>>(),
            vec![
                ("s-env".into(), false),
                ("s-proj".into(), false),
                ("s-vol".into(), false)
            ]
        );

        let mut rewritten = p.clone();
        let tracked = TrackedNames {
            config_maps: ["cm-proj".to_string()].into(),
            secrets: ["s-env".to_string()].into(),
        };
        rewrite_config_refs(&mut rewritten, &tracked);
        let v = serde_json::to_value(&rewritten).unwrap();
        assert_eq!(
            v["volumes"][2]["projected"]["sources"][0]["configMap"]["name"],
            "cm-proj-primary"
        );
        assert_eq!(
            v["volumes"][0]["configMap"]["name"], "cm-vol",
            "untracked names stay"
        );
        assert_eq!(
            v["containers"][0]["envFrom"][0]["secretRef"]["name"],
            "s-env-primary"
        );
    }

    #[test]
    fn primary_drops_flux_metadata_and_rewrites_anti_affinity() {
        let c = canary_ref();
        let target: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "podinfo", "labels": {"app": "podinfo", "team": "x", "kustomize.toolkit.fluxcd.io/name": "f"},
                          "annotations": {"kustomize.toolkit.fluxcd.io/checksum": "1", "note": "n"}},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "podinfo"}},
                     "template": {"metadata": {"labels": {"app": "podinfo"}, "annotations": {"flagger-id": "old"}},
                                  "spec": {"containers": [{"name": "a"}],
                                           "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                                                                          "labelSelector": {"matchLabels": {"app": "podinfo"}}}]}}}
        }))
        .unwrap();
        let all = vec!["*".to_string()];
        let d = primary_deployment(&c, &target, &TrackedNames::default(), &all, "new-id").unwrap();
        let labels = d.metadata.labels.clone().unwrap();
        assert_eq!(labels["app"], "podinfo-primary");
        assert_eq!(labels["team"], "x");
        assert!(!labels.keys().any(|k| k.contains("toolkit.fluxcd.io")));
        assert_eq!(d.metadata.annotations.clone().unwrap().len(), 1);
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(1), "a target at 0 gives a primary of 1");
        assert_eq!(
            spec.template.metadata.unwrap().annotations.unwrap()["flagger-id"],
            "new-id"
        );
        let tsc = &spec
            .template
            .spec
            .unwrap()
            .topology_spread_constraints
            .unwrap()[0];
        assert_eq!(
            tsc.label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app"],
            "podinfo-primary"
        );
        // Without include prefixes no target label is copied, only the selector label.
        let d = primary_deployment(&c, &target, &TrackedNames::default(), &[], "id").unwrap();
        assert_eq!(d.metadata.labels.unwrap().len(), 1);
    }

    #[test]
    fn deployment_view_reads_status_conditions_and_hpa() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "podinfo", "namespace": "test", "generation": 3},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2,
                "availableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                     "lastTransitionTime": "2024-01-01T00:00:00Z"},
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
                ]}
        }))
        .unwrap();
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "podinfo"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "podinfo"}, "maxReplicas": 4},
            "status": {"desiredReplicas": 4, "currentReplicas": 2}
        }))
        .unwrap();
        let v = deployment_view(&d, Some(&hpa));
        assert_eq!((v.generation, v.observed_generation, v.replicas), (3, 3, 2));
        assert_eq!((v.updated_replicas, v.available_replicas), (2, 1));
        assert!(v.progress_deadline_exceeded);
        // Without lastUpdateTime the transition time dates the unavailability.
        assert_eq!(
            v.unavailable_since,
            Some(flagger_rollout::Timestamp(1_704_067_200_000))
        );
        assert_eq!(v.autoscaler_desired_replicas, Some(4));
        assert_eq!(deployment_view(&d, None).autoscaler_desired_replicas, None);
    }

    #[test]
    fn scale_from_zero_rules() {
        let dep = |r: i32| -> Deployment {
            serde_json::from_value(json!({"spec": {"replicas": r, "selector": {}, "template": {}}}))
                .unwrap()
        };
        let hpa = |min: i32| -> HorizontalPodAutoscaler {
            serde_json::from_value(json!({"spec": {"minReplicas": min, "maxReplicas": 5, "scaleTargetRef": {"kind": "Deployment", "name": "x"}}})).unwrap()
        };
        assert_eq!(scale_from_zero(&dep(3), Some(&dep(5)), None), 3);
        assert_eq!(scale_from_zero(&dep(0), Some(&dep(5)), None), 5);
        assert_eq!(scale_from_zero(&dep(0), None, Some(&hpa(2))), 2);
        assert_eq!(scale_from_zero(&dep(0), None, Some(&hpa(1))), 1);
        assert_eq!(scale_from_zero(&dep(0), Some(&dep(0)), None), 1);
    }

    #[test]
    fn secret_types_and_opt_out() {
        assert!(is_tracked_secret_type(None));
        assert!(is_tracked_secret_type(Some("kubernetes.io/tls")));
        assert!(!is_tracked_secret_type(Some(
            "kubernetes.io/service-account-token"
        )));
        let meta = serde_json::from_value(
            json!({"annotations": {"flagger.app/config-tracking": "disabled-for-now"}}),
        )
        .unwrap();
        assert!(!is_tracked(&meta));
    }
}
