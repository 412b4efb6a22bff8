//! Istio: VirtualService `<svc>` and DestinationRules `<svc>-primary` / `<svc>-canary`
//! (`networking.istio.io/v1beta1`, flagger-behavior §3.4).
//!
//! The VirtualService spec is built as JSON ([`virtual_service_spec`]); reconcile compares it with
//! the live one ignoring destination weights and mirror fields, and a rewrite keeps the live
//! weights. Taking over a VirtualService that Flagger did not create saves its spec in
//! `flagger.kubernetes.io/original-configuration` (unless kubectl's last-applied annotation is
//! there), which `finalize` restores.
//!
//! A weight step is one request when the cached VirtualService is current: a merge patch of
//! `spec.http` carrying the cached `metadata.resourceVersion` as a precondition. A stale cache
//! (409) or no cache falls back to GET + PUT of the live object.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flagger_rollout::{CanarySpec, Routes, Weights};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Map, Value, json};

use super::{MeshRouter, RouterError};
use crate::kubeops::{
    CanaryRef, FLUX_DISABLE_ANNOTATIONS, ObjectId, Written, get_opt, merge_owner_references,
    merge_patch, update_existing, upsert,
};

/// The Istio API version the router reads and writes (served by real clusters and the testbed).
pub const ISTIO_API_VERSION: &str = "v1beta1";
/// Where the spec of a taken-over VirtualService is kept for revertOnDeletion.
pub const ORIGINAL_CONFIGURATION: &str = "flagger.kubernetes.io/original-configuration";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `networking.istio.io/v1beta1` VirtualService.
pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", ISTIO_API_VERSION, "VirtualService"),
        "virtualservices",
    )
}

/// `networking.istio.io/v1beta1` DestinationRule.
pub fn destination_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", ISTIO_API_VERSION, "DestinationRule"),
        "destinationrules",
    )
}

#[derive(Clone)]
pub struct IstioRouter {
    client: Client,
    timeout: Duration,
    virtual_services: Option<Store<DynamicObject>>,
    destination_rules: Option<Store<DynamicObject>>,
    written: WriteFloors,
}

/// Read-your-writes for VirtualServices. After this router writes one, its cached copy is used
/// again only once it is at least as new as that write; until then reads go to the API server.
/// A lagging watch (cut, relisting) would otherwise show the weights from before the write: the
/// next tick would apply the same step twice, or skip a rollback's write because the stale copy
/// already says 100/0.
#[derive(Clone, Default)]
struct WriteFloors(Arc<Mutex<HashMap<(String, String), u64>>>);

fn version_of(o: &DynamicObject) -> Option<u64> {
    o.metadata.resource_version.as_deref()?.parse().ok()
}

impl WriteFloors {
    /// This process replaced `ns/name` on top of version `based_on`.
    fn wrote(&self, ns: &str, name: &str, based_on: u64) {
        // A PUT with a resourceVersion lands right after `based_on`, so any later version
        // includes it.
        let floor = based_on.saturating_add(1);
        if let Ok(mut floors) = self.0.lock() {
            floors.insert((ns.to_owned(), name.to_owned()), floor);
        }
    }

    /// Is `cached` at least as new as this process's last write of it? Forgets the write once
    /// the cache has caught up, so the map only holds objects with a write in flight.
    fn caught_up(&self, ns: &str, name: &str, cached: Option<&DynamicObject>) -> bool {
        let Ok(mut floors) = self.0.lock() else {
            return false;
        };
        let key = (ns.to_owned(), name.to_owned());
        let Some(floor) = floors.get(&key).copied() else {
            return true;
        };
        let ok = cached.and_then(version_of).is_some_and(|v| v >= floor);
        if ok {
            floors.remove(&key);
        }
        ok
    }
}

impl IstioRouter {
    pub fn new(
        client: Client,
        timeout: Duration,
        virtual_services: Option<Store<DynamicObject>>,
        destination_rules: Option<Store<DynamicObject>>,
    ) -> Self {
        Self {
            client,
            timeout,
            virtual_services,
            destination_rules,
            written: WriteFloors::default(),
        }
    }

    fn api(&self, ns: &str, ar: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, ar)
    }

    /// Notes a write of `ns/name` (made on top of the version in `based_on`) for [`WriteFloors`].
    fn record(&self, ns: &str, name: &str, written: Written, based_on: &Mutex<Option<u64>>) {
        // A created object is not in the cache until the watch brings it, and reads fall back
        // to the API server meanwhile; versions that are not numbers cannot be compared.
        if written == Written::Updated
            && let Some(v) = based_on.lock().ok().and_then(|v| *v)
        {
            self.written.wrote(ns, name, v);
        }
    }

    /// The cached VirtualService, unless the cache has not yet seen this router's last write of
    /// it (then `None`: callers read it from the API server).
    fn cached_vs(&self, ns: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let cached = self.virtual_services.as_ref().and_then(|s| {
            s.get(&ObjectRef::new_with(name, virtual_service_resource()).within(ns))
        })?;
        self.written
            .caught_up(ns, name, Some(&cached))
            .then_some(cached)
    }

    /// One weight step as a single request: a merge patch replacing `spec.http`, conditioned on
    /// the cached version `rv` (the patch carries `metadata.resourceVersion`, so the server
    /// answers 409 when the cache is stale). `Ok(false)`: the precondition failed or the object
    /// is gone; the caller falls back to GET + PUT, which re-reads the live object.
    async fn patch_http(
        &self,
        c: &CanaryRef,
        id: &ObjectId,
        rv: u64,
        weights: Weights,
        mirror: bool,
    ) -> Result<bool, RouterError> {
        let desired = virtual_service_spec(&c.spec, weights, mirror);
        let patch = json!({
            "metadata": { "resourceVersion": rv.to_string() },
            "spec": { "http": desired.get("http").cloned().unwrap_or(Value::Null) },
        });
        let api = self.api(&id.namespace, &virtual_service_resource());
        match merge_patch(&api, id, self.timeout, &patch).await {
            Ok(_) => {
                // Made on top of `rv`: the write floor is rv + 1, as for a PUT.
                self.written.wrote(&id.namespace, &id.name, rv);
                Ok(true)
            }
            Err(e) if matches!(e.status_code(), Some(409 | 404)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn reconcile_destination_rules(&self, c: &CanaryRef) -> Result<(), RouterError> {
        let ns = c.namespace();
        let ar = destination_rule_resource();
        let api = self.api(ns, &ar);
        for name in [c.spec.service.canary_name(), c.spec.service.primary_name()] {
            let spec = destination_rule_spec(&name, c.spec.service.traffic_policy.as_ref());
            let id = ObjectId::new("DestinationRule", ns, &name);
            let cached = self
                .destination_rules
                .as_ref()
                .and_then(|s| s.get(&ObjectRef::new_with(&name, ar.clone()).within(ns)));
            let create = || {
                let mut o = DynamicObject::new(&name, &ar).within(ns);
                o.metadata.owner_references = Some(vec![c.owner_reference()]);
                o.data = json!({ "spec": spec });
                o
            };
            upsert(&api, &id, self.timeout, cached, create, |live| {
                if pruned(live.data.get("spec")) == pruned(Some(&spec)) {
                    return None;
                }
                let mut o = live.clone();
                set_field(&mut o.data, "spec", spec.clone());
                Some(o)
            })
            .await?;
        }
        Ok(())
    }
}

impl MeshRouter for IstioRouter {
    async fn reconcile(&self, c: &CanaryRef) -> Result<(), RouterError> {
        self.reconcile_destination_rules(c).await?;
        let ns = c.namespace();
        let ar = virtual_service_resource();
        let name = &c.spec.service.name;
        let id = ObjectId::new("VirtualService", ns, name);
        let create = || {
            let mut o = DynamicObject::new(name, &ar).within(ns);
            let (labels, annotations) = vs_metadata(&c.spec);
            o.metadata.labels = Some(labels);
            o.metadata.annotations = Some(annotations);
            o.metadata.owner_references = Some(vec![c.owner_reference()]);
            o.data = json!({ "spec": virtual_service_spec(&c.spec, Weights::ALL_PRIMARY, false) });
            o
        };
        let based_on = Mutex::new(None);
        let written = upsert(
            &self.api(ns, &ar),
            &id,
            self.timeout,
            self.cached_vs(ns, name),
            create,
            |live| {
                remember_version(&based_on, live);
                update_virtual_service(c, live)
            },
        )
        .await?;
        self.record(ns, name, written, &based_on);
        Ok(())
    }

    async fn get_routes(&self, c: &CanaryRef) -> Result<Option<Routes>, RouterError> {
        let ns = c.namespace();
        let name = &c.spec.service.name;
        let live = match self.cached_vs(ns, name) {
            Some(o) => Some((*o).clone()),
            None => {
                let id = ObjectId::new("VirtualService", ns, name);
                get_opt(
                    &self.api(ns, &virtual_service_resource()),
                    &id,
                    self.timeout,
                )
                .await?
            }
        };
        live.map(|vs| routes_of(&c.spec, &vs)).transpose()
    }

    async fn set_routes(
        &self,
        c: &CanaryRef,
        weights: Weights,
        mirror: bool,
    ) -> Result<(), RouterError> {
        let ns = c.namespace();
        let name = &c.spec.service.name;
        let wanted = Routes {
            weights,
            mirrored: mirror,
        };
        let id = ObjectId::new("VirtualService", ns, name);
        if let Some(cached) = self.cached_vs(ns, name) {
            if routes_of(&c.spec, &cached).ok() == Some(wanted) {
                return Ok(());
            }
            if let Some(rv) = version_of(&cached)
                && self.patch_http(c, &id, rv, weights, mirror).await?
            {
                return Ok(());
            }
        }
        let based_on = Mutex::new(None);
        let written = update_existing(
            &self.api(ns, &virtual_service_resource()),
            &id,
            self.timeout,
            |live| {
                remember_version(&based_on, live);
                if routes_of(&c.spec, live).ok() == Some(wanted) {
                    return None;
                }
                let desired = virtual_service_spec(&c.spec, weights, mirror);
                let mut o = live.clone();
                let spec = o
                    .data
                    .as_object_mut()
                    .map(|d| d.entry("spec").or_insert_with(|| json!({})));
                if let Some(spec) = spec {
                    set_field(
                        spec,
                        "http",
                        desired.get("http").cloned().unwrap_or(Value::Null),
                    );
                }
                Some(o)
            },
        )
        .await?;
        match written {
            Some(written) => {
                self.record(ns, name, written, &based_on);
                Ok(())
            }
            None => Err(RouterError::NotFound {
                kind: "VirtualService",
                namespace: ns.to_owned(),
                name: name.clone(),
            }),
        }
    }

    async fn finalize(&self, c: &CanaryRef) -> Result<(), RouterError> {
        let ns = c.namespace();
        let name = &c.spec.service.name;
        let id = ObjectId::new("VirtualService", ns, name);
        let based_on = Mutex::new(None);
        let written = update_existing(&self.api(ns, &virtual_service_resource()), &id, self.timeout, |live| {
            remember_version(&based_on, live);
            let Some(original) = original_spec(live) else {
                tracing::info!(canary = %c.key, "original configuration not found, unable to revert");
                return None;
            };
            if pruned(live.data.get("spec")) == pruned(Some(&original)) {
                return None;
            }
            let mut o = live.clone();
            set_field(&mut o.data, "spec", original);
            Some(o)
        })
        .await?;
        if let Some(written) = written {
            self.record(ns, name, written, &based_on);
        }
        Ok(())
    }
}

/// Keeps the version of the live object an update closure was handed (the last one, after
/// conflict retries).
fn remember_version(slot: &Mutex<Option<u64>>, live: &DynamicObject) {
    if let Ok(mut v) = slot.lock() {
        *v = version_of(live);
    }
}

fn set_field(obj: &mut Value, key: &str, v: Value) {
    if !obj.is_object() {
        *obj = json!({});
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert(key.to_owned(), v);
    }
}

/// The spec saved before takeover: kubectl's last-applied spec, else the original-configuration
/// annotation.
fn original_spec(vs: &DynamicObject) -> Option<Value> {
    let annotations = vs.metadata.annotations.as_ref()?;
    if let Some(raw) = annotations.get(LAST_APPLIED) {
        let v: Value = serde_json::from_str(raw).ok()?;
        return v.get("spec").cloned();
    }
    serde_json::from_str(annotations.get(ORIGINAL_CONFIGURATION)?).ok()
}

/// `{host, trafficPolicy}` of a DestinationRule.
pub fn destination_rule_spec(host: &str, traffic_policy: Option<&Value>) -> Value {
    let mut spec = json!({ "host": host });
    if let Some(tp) = traffic_policy {
        set_field(&mut spec, "trafficPolicy", tp.clone());
    }
    spec
}

fn vs_metadata(spec: &CanarySpec) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let field = |f: &str| -> BTreeMap<String, String> {
        spec.service
            .apex
            .as_ref()
            .and_then(|a| a.get(f))
            .and_then(|m| serde_json::from_value(m.clone()).ok())
            .unwrap_or_default()
    };
    let mut annotations = field("annotations");
    for (k, v) in FLUX_DISABLE_ANNOTATIONS {
        annotations.insert((*k).to_owned(), (*v).to_owned());
    }
    (field("labels"), annotations)
}

/// A/B match: each service match copied with `headers`/`sourceLabels` from the analysis match.
fn merge_matches(analysis: &[Value], service: &[Value]) -> Vec<Value> {
    if service.is_empty() {
        return analysis.to_vec();
    }
    let mut out = Vec::new();
    for a in analysis {
        for s in service {
            let mut m = s.clone();
            for key in ["headers", "sourceLabels"] {
                if let Some(v) = a.get(key) {
                    set_field(&mut m, key, v.clone());
                }
            }
            out.push(m);
        }
    }
    out
}

fn destination(host: &str, weight: u8) -> Value {
    json!({ "destination": { "host": host }, "weight": weight })
}

/// The VirtualService spec for these weights and mirror flag.
pub fn virtual_service_spec(spec: &CanarySpec, weights: Weights, mirror: bool) -> Value {
    let s = &spec.service;
    let (primary, canary) = (s.primary_name(), s.canary_name());
    let mut hosts = s.hosts.clone();
    if !hosts.iter().any(|h| h == &s.name || h == "*") {
        hosts.push(s.name.clone());
    }
    let mut base = Map::new();
    for (key, v) in [
        ("rewrite", &s.rewrite),
        ("retries", &s.retries),
        ("corsPolicy", &s.cors_policy),
        ("headers", &s.headers),
    ] {
        if let Some(v) = v {
            base.insert(key.to_owned(), v.clone());
        }
    }
    if let Some(t) = &s.timeout {
        base.insert("timeout".into(), json!(t));
    }
    let with = |matches: &[Value], route: Vec<Value>, mirrored: bool| {
        let mut r = base.clone();
        if !matches.is_empty() {
            r.insert("match".into(), json!(matches));
        }
        r.insert("route".into(), json!(route));
        if mirrored {
            r.insert("mirror".into(), json!({ "host": canary }));
            if let Some(p) = spec.analysis.mirror_weight {
                r.insert("mirrorPercentage".into(), json!({ "value": p }));
            }
        }
        Value::Object(r)
    };
    let weighted = vec![
        destination(&primary, weights.primary()),
        destination(&canary, weights.canary()),
    ];
    let http = if spec.analysis.matches.is_empty() {
        vec![with(&s.matches, weighted, mirror)]
    } else {
        vec![
            with(
                &merge_matches(&spec.analysis.matches, &s.matches),
                weighted,
                mirror,
            ),
            with(&s.matches, vec![destination(&primary, 100)], false),
        ]
    };
    json!({ "hosts": hosts, "gateways": s.gateways, "http": http })
}

/// Drops nulls, empty objects/arrays, and (with `ignore_weights`) route weights and mirrors, so
/// server defaults and weight changes do not count as drift.
fn normalize(v: &Value, ignore_weights: bool) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                if ignore_weights && matches!(k.as_str(), "weight" | "mirror" | "mirrorPercentage")
                {
                    continue;
                }
                let n = normalize(v, ignore_weights);
                let empty = match &n {
                    Value::Null => true,
                    Value::Object(o) => o.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    _ => false,
                };
                if !empty {
                    out.insert(k.clone(), n);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| normalize(v, ignore_weights)).collect()),
        other => other.clone(),
    }
}

fn pruned(v: Option<&Value>) -> Value {
    v.map(|v| normalize(v, false)).unwrap_or(Value::Null)
}

/// `live` rewritten when anything but weights/mirror drifted (weights and mirror kept), and
/// metadata/owner added on takeover; `None` when it already matches.
pub fn update_virtual_service(c: &CanaryRef, live: &DynamicObject) -> Option<DynamicObject> {
    let current = routes_of(&c.spec, live).unwrap_or(Routes {
        weights: Weights::ALL_PRIMARY,
        mirrored: false,
    });
    let desired = virtual_service_spec(&c.spec, current.weights, current.mirrored);
    let live_spec = live.data.get("spec").cloned().unwrap_or(Value::Null);
    let spec_same = normalize(&live_spec, true) == normalize(&desired, true);
    let (labels, annotations) = vs_metadata(&c.spec);
    let live_labels = live.metadata.labels.clone().unwrap_or_default();
    let live_annotations = live.metadata.annotations.clone().unwrap_or_default();
    let meta_same = labels.iter().all(|(k, v)| live_labels.get(k) == Some(v))
        && annotations
            .iter()
            .all(|(k, v)| live_annotations.get(k) == Some(v));
    let owned = c.controls(live);
    if spec_same && meta_same && owned {
        return None;
    }
    let mut o = live.clone();
    let mut new_annotations = live_annotations.clone();
    new_annotations.extend(annotations);
    if !owned
        && !spec_same
        && !live_annotations.contains_key(LAST_APPLIED)
        && !live_annotations.contains_key(ORIGINAL_CONFIGURATION)
        && let Ok(saved) = serde_json::to_string(&live_spec)
    {
        new_annotations.insert(ORIGINAL_CONFIGURATION.to_owned(), saved);
    }
    let mut new_labels = live_labels;
    new_labels.extend(labels);
    o.metadata.labels = Some(new_labels);
    o.metadata.annotations = Some(new_annotations);
    o.metadata.owner_references = Some(merge_owner_references(
        c,
        live.metadata.owner_references.as_ref(),
    ));
    if !spec_same {
        set_field(&mut o.data, "spec", desired);
    }
    Some(o)
}

/// Weights and mirror of the http route that sends to the canary.
pub fn routes_of(spec: &CanarySpec, vs: &DynamicObject) -> Result<Routes, RouterError> {
    let (primary, canary) = (spec.service.primary_name(), spec.service.canary_name());
    let invalid = |problem: String| RouterError::Invalid {
        kind: "VirtualService",
        namespace: spec.namespace.clone(),
        name: spec.service.name.clone(),
        problem,
    };
    let http = vs
        .data
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let host_of = |d: &Value| {
        d.pointer("/destination/host")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let route = http.iter().find(|r| {
        r.get("route").and_then(Value::as_array).is_some_and(|ds| {
            ds.iter()
                .any(|d| host_of(d).as_deref() == Some(canary.as_str()))
        })
    });
    let (mut p, mut cw) = (0_i64, 0_i64);
    let mut mirrored = false;
    if let Some(route) = route {
        for d in route
            .get("route")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let w = d.get("weight").and_then(Value::as_i64).unwrap_or(0);
            match host_of(d) {
                Some(h) if h == primary => p = w,
                Some(h) if h == canary => cw = w,
                _ => {}
            }
        }
        mirrored = route
            .pointer("/mirror/host")
            .and_then(Value::as_str)
            .is_some();
    }
    if p == 0 && cw == 0 {
        return Err(RouterError::NoRoutes {
            namespace: spec.namespace.clone(),
            name: spec.service.name.clone(),
            primary,
            canary,
        });
    }
    let weights = Weights::new(p, cw).map_err(|e| invalid(e.to_string()))?;
    Ok(Routes { weights, mirrored })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::kubeops::tests_support::{canary_ref_with, spec_with};
    use flagger_rollout::ServiceInput;

    fn canary() -> CanaryRef {
        canary_ref_with(spec_with(ServiceInput {
            port: Some(9898),
            hosts: vec!["app.example.com".into()],
            gateways: vec!["public-gateway".into()],
            timeout: Some("30s".into()),
            retries: Some(json!({"attempts": 3})),
            traffic_policy: Some(json!({"tls": {"mode": "ISTIO_MUTUAL"}})),
            ..Default::default()
        }))
    }

    fn vs(c: &CanaryRef, spec: Value) -> DynamicObject {
        let mut o = DynamicObject::new("podinfo", &virtual_service_resource()).within("test");
        o.metadata.owner_references = Some(vec![c.owner_reference()]);
        let (labels, annotations) = vs_metadata(&c.spec);
        o.metadata.labels = Some(labels);
        o.metadata.annotations = Some(annotations);
        o.data = json!({ "spec": spec });
        o
    }

    #[test]
    fn virtual_service_routes_all_traffic_to_primary_with_the_service_options() {
        let c = canary();
        let spec = virtual_service_spec(&c.spec, Weights::ALL_PRIMARY, false);
        assert_eq!(spec["hosts"], json!(["app.example.com", "podinfo"]));
        assert_eq!(spec["gateways"], json!(["public-gateway"]));
        let route = &spec["http"][0];
        assert_eq!(route["timeout"], "30s");
        assert_eq!(route["retries"], json!({"attempts": 3}));
        assert_eq!(
            route["route"],
            json!([
                {"destination": {"host": "podinfo-primary"}, "weight": 100},
                {"destination": {"host": "podinfo-canary"}, "weight": 0}
            ])
        );
        assert_eq!(
            destination_rule_spec("podinfo-canary", c.spec.service.traffic_policy.as_ref()),
            json!({"host": "podinfo-canary", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}})
        );
    }

    #[test]
    fn routes_are_read_back_and_weight_changes_are_not_drift() {
        let c = canary();
        let live = vs(
            &c,
            virtual_service_spec(&c.spec, Weights::with_canary(30), true),
        );
        let routes = routes_of(&c.spec, &live).unwrap();
        assert_eq!(routes.weights.canary(), 30);
        assert!(routes.mirrored);
        assert!(update_virtual_service(&c, &live).is_none());
    }

    #[test]
    fn drift_is_rewritten_keeping_the_weights_and_a_foreign_spec_is_saved() {
        let c = canary();
        let mut spec = virtual_service_spec(&c.spec, Weights::with_canary(20), false);
        spec["gateways"] = json!(["other"]);
        let mut live = vs(&c, spec.clone());
        live.metadata.owner_references = None;
        let updated = update_virtual_service(&c, &live).unwrap();
        assert_eq!(updated.data["spec"]["gateways"], json!(["public-gateway"]));
        assert_eq!(routes_of(&c.spec, &updated).unwrap().weights.canary(), 20);
        let saved = &updated.metadata.annotations.as_ref().unwrap()[ORIGINAL_CONFIGURATION];
        assert_eq!(serde_json::from_str::<Value>(saved).unwrap(), spec);
        assert_eq!(original_spec(&updated), Some(spec));
    }

    #[test]
    fn no_weights_is_upstreams_error() {
        let c = canary();
        let live = vs(
            &c,
            json!({"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo-canary"}}]}]}),
        );
        assert_eq!(
            routes_of(&c.spec, &live).unwrap_err().to_string(),
            "VirtualService podinfo.test does not contain routes for podinfo-primary and podinfo-canary"
        );
    }
}
