//! OpenAPI v3 documents (owner: testbed-discovery helper): the `/openapi/v3` index and one
//! document per group version, generated from the [`Registry`].
//!
//! They are minimal, but carry what kubectl reads:
//! - every PATCH operation names its `x-kubernetes-group-version-kind` and declares the
//!   `fieldValidation` query parameter, so `kubectl apply`/`create` (default `--validate=strict`)
//!   leave validation to the server (`?fieldValidation=Strict`) instead of validating client-side;
//! - PATCH request bodies do not offer `application/strategic-merge-patch+json`, so kubectl builds
//!   strategic merge patches from its compiled-in types for built-ins and JSON merge patches for
//!   custom resources, rather than from these (schema-less) documents;
//! - `components.schemas` has one schema per kind (a CRD's `openAPIV3Schema`, a bare object for
//!   built-ins) tagged with its GVK, so `kubectl explain` finds the type.
//!
//! `/openapi/v2` is not served (404): kubectl treats that as "no OpenAPI v2" and carries on.
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceType};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";

/// OpenAPI routes; merge them into the API router.
pub fn routes(registry: Registry) -> Router {
    let state = Docs {
        registry,
        cache: Arc::new(Mutex::new(None)),
    };
    Router::new()
        .route("/openapi/v3", get(index))
        .route("/openapi/v3/", get(index))
        .route("/openapi/v3/api/v1", get(core_doc))
        .route("/openapi/v3/apis/{group}/{version}", get(group_doc))
        .with_state(state)
}

/// The registry plus the documents rendered for its current generation (rendering them all takes
/// a while, and kubectl asks for the index on every command).
#[derive(Clone)]
struct Docs {
    registry: Registry,
    cache: Arc<Mutex<Option<Rendered>>>,
}

struct Rendered {
    generation: u64,
    index: Arc<String>,
    /// `api/v1`/`apis/<g>/<v>` -> document text.
    docs: BTreeMap<String, Arc<String>>,
}

impl Docs {
    fn rendered<T>(&self, f: impl FnOnce(&Rendered) -> T) -> T {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.registry.generation();
        if cache.as_ref().is_none_or(|r| r.generation != generation) {
            *cache = Some(render_all(&self.registry, generation));
        }
        match cache.as_ref() {
            Some(r) => f(r),
            None => f(&render_all(&self.registry, generation)),
        }
    }
}

fn render_all(reg: &Registry, generation: u64) -> Rendered {
    let mut paths = Map::new();
    let mut docs = BTreeMap::new();
    for (group, versions) in reg.groups() {
        for version in versions {
            let Some(doc) = gv_doc(reg, &group, &version) else {
                continue;
            };
            let text = doc.to_string();
            let mut h = DefaultHasher::new();
            text.hash(&mut h);
            let key = gv_path(&group, &version);
            paths.insert(
                key.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{key}?hash={:016X}", h.finish()) }),
            );
            docs.insert(key, Arc::new(text));
        }
    }
    Rendered {
        generation,
        index: Arc::new(json!({ "paths": paths }).to_string()),
        docs,
    }
}

fn text_ok(text: Arc<String>) -> Response {
    let mut resp = (StatusCode::OK, (*text).clone()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn not_found(path: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("the server could not find the requested resource ({path})"),
        "reason": "NotFound", "details": {}, "code": 404
    });
    let mut resp = (StatusCode::NOT_FOUND, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `api/v1` or `apis/<group>/<version>`: the key of a group version in the index.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

async fn index(State(docs): State<Docs>) -> Response {
    text_ok(docs.rendered(|r| r.index.clone()))
}

/// The `/openapi/v3` index; each URL carries a hash of its document so clients can cache it.
pub fn index_doc(reg: &Registry) -> Value {
    let r = render_all(reg, reg.generation());
    serde_json::from_str(&r.index).unwrap_or(Value::Null)
}

fn serve_doc(docs: &Docs, key: String) -> Response {
    match docs.rendered(|r| r.docs.get(&key).cloned()) {
        Some(text) => text_ok(text),
        None => not_found(&format!("/openapi/v3/{key}")),
    }
}

async fn core_doc(State(docs): State<Docs>) -> Response {
    serve_doc(&docs, gv_path("", "v1"))
}

async fn group_doc(
    State(docs): State<Docs>,
    Path((group, version)): Path<(String, String)>,
) -> Response {
    serve_doc(&docs, gv_path(&group, &version))
}

/// `io.k8s.api.apps.v1.Deployment`-style schema name: the group reversed, then version and kind.
fn schema_name(t: &ResourceType, version: &str) -> String {
    let group = match t.group.as_str() {
        "" => "io.k8s.api.core".to_string(),
        g if t.crd_name.is_none() => {
            let first = g.split('.').next().unwrap_or(g);
            format!("io.k8s.api.{first}")
        }
        g => g.split('.').rev().collect::<Vec<_>>().join("."),
    };
    format!("{group}.{version}.{}", t.kind)
}

fn gvk(t: &ResourceType, version: &str, kind: &str) -> Value {
    json!({ "group": t.group, "version": version, "kind": kind })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn query_param(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "query", "description": description,
        "schema": { "type": "string", "uniqueItems": true }
    })
}

fn write_params() -> Vec<Value> {
    vec![
        query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
        ),
        query_param(
            "fieldManager",
            "A name associated with the actor or entity that is making these changes.",
        ),
        query_param(
            "fieldValidation",
            "Ignore, Warn or Strict: how to treat unknown or duplicate fields in the object.",
        ),
    ]
}

fn response(schema: &Value) -> Value {
    json!({ "200": { "description": "OK", "content": { "application/json": { "schema": schema } } } })
}

fn operation(
    t: &ResourceType,
    version: &str,
    action: &str,
    op_kind: &str,
    kind: &str,
    body: Option<Vec<&str>>,
    schema: &Value,
) -> Value {
    let mut params = if matches!(action, "put" | "post" | "patch") {
        write_params()
    } else {
        Vec::new()
    };
    if action == "patch" {
        params.push(json!({
            "name": "force", "in": "query",
            "description": "Force is going to \"force\" Apply requests.",
            "schema": { "type": "boolean", "uniqueItems": true }
        }));
    }
    let mut op = json!({
        "operationId": format!("{op_kind}{}{}", t.kind, version_suffix(version)),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(t, version, kind),
        "parameters": params,
        "responses": response(schema),
    });
    if let (Some(types), Some(m)) = (body, op.as_object_mut()) {
        let content: Map<String, Value> = types
            .into_iter()
            .map(|ct| (ct.to_string(), json!({ "schema": schema })))
            .collect();
        m.insert(
            "requestBody".into(),
            json!({ "content": content, "required": true }),
        );
    }
    op
}

fn version_suffix(version: &str) -> String {
    let mut c = version.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];

/// The OpenAPI v3 document of one group version, or `None` if it is not served.
pub fn gv_doc(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types: Vec<_> = reg
        .all()
        .into_iter()
        .filter(|t| t.group == group && t.version(version).is_some())
        .collect();
    if types.is_empty() {
        return None;
    }
    let prefix = format!("/{}", gv_path(group, version));
    let mut paths = BTreeMap::new();
    let mut schemas = Map::new();
    schemas.insert(
        OBJECT_META.into(),
        json!({
            "description": "ObjectMeta is metadata that all persisted resources must have.",
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        }),
    );
    schemas.insert(
        STATUS.into(),
        json!({ "description": "Status is a return value for calls that don't return other objects.", "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
    );
    let scale_name = "io.k8s.api.autoscaling.v1.Scale";
    for t in &types {
        let name = schema_name(t, version);
        schemas.insert(name.clone(), kind_schema(t, version));
        let list_name = format!("{name}List");
        schemas.insert(
            list_name.clone(),
            json!({
                "description": format!("{} is a list of {}.", t.list_kind, t.kind),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": { "type": "string" },
                    "kind": { "type": "string" },
                    "items": { "type": "array", "items": reference(&name) },
                    "metadata": { "type": "object" }
                },
                "x-kubernetes-group-version-kind": [gvk(t, version, &t.list_kind)]
            }),
        );
        let obj = reference(&name);
        let list = reference(&list_name);
        let collection = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{prefix}/{}", t.plural)
        };
        let item = format!("{collection}/{{name}}");
        let mut ns_params = Vec::new();
        if t.namespaced {
            ns_params.push(json!({ "name": "namespace", "in": "path", "required": true, "schema": { "type": "string", "uniqueItems": true } }));
        }
        let mut item_params = vec![
            json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string", "uniqueItems": true } }),
        ];
        item_params.extend(ns_params.iter().cloned());
        paths.insert(
            collection,
            json!({
                "get": operation(t, version, "list", "list", &t.kind, None, &list),
                "post": operation(t, version, "post", "create", &t.kind, Some(vec!["*/*"]), &obj),
                "parameters": ns_params,
            }),
        );
        paths.insert(
            item.clone(),
            json!({
                "get": operation(t, version, "get", "read", &t.kind, None, &obj),
                "put": operation(t, version, "put", "replace", &t.kind, Some(vec!["*/*"]), &obj),
                "patch": operation(t, version, "patch", "patch", &t.kind, Some(PATCH_TYPES.to_vec()), &obj),
                "delete": operation(t, version, "delete", "delete", &t.kind, None, &reference(STATUS)),
                "parameters": item_params.clone(),
            }),
        );
        if t.status_subresource {
            paths.insert(
                format!("{item}/status"),
                json!({
                    "get": operation(t, version, "get", "read", &t.kind, None, &obj),
                    "put": operation(t, version, "put", "replace", &t.kind, Some(vec!["*/*"]), &obj),
                    "patch": operation(t, version, "patch", "patch", &t.kind, Some(PATCH_TYPES.to_vec()), &obj),
                    "parameters": item_params.clone(),
                }),
            );
        }
        if t.scale_subresource {
            let scale = reference(scale_name);
            let scale_gvk = json!({ "group": "autoscaling", "version": "v1", "kind": "Scale" });
            let mut ops = json!({
                "get": operation(t, version, "get", "read", "Scale", None, &scale),
                "put": operation(t, version, "put", "replace", "Scale", Some(vec!["*/*"]), &scale),
                "patch": operation(t, version, "patch", "patch", "Scale", Some(PATCH_TYPES.to_vec()), &scale),
                "parameters": item_params,
            });
            for verb in ["get", "put", "patch"] {
                if let Some(op) = ops.get_mut(verb).and_then(Value::as_object_mut) {
                    op.insert("x-kubernetes-group-version-kind".into(), scale_gvk.clone());
                }
            }
            paths.insert(format!("{item}/scale"), ops);
            schemas.insert(
                scale_name.into(),
                json!({
                    "description": "Scale represents a scaling request for a resource.",
                    "type": "object",
                    "properties": {
                        "apiVersion": { "type": "string" },
                        "kind": { "type": "string" },
                        "metadata": { "allOf": [reference(OBJECT_META)], "default": {} },
                        "spec": { "type": "object", "properties": { "replicas": { "type": "integer", "format": "int32" } } },
                        "status": { "type": "object", "properties": { "replicas": { "type": "integer", "format": "int32" }, "selector": { "type": "string" } } }
                    },
                    "x-kubernetes-group-version-kind": [{ "group": "autoscaling", "version": "v1", "kind": "Scale" }]
                }),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": super::discovery::GIT_VERSION },
        "paths": paths,
        "components": { "schemas": schemas },
    }))
}

/// The schema of one kind: a CRD version's `openAPIV3Schema` (with `metadata` as ObjectMeta), or
/// an open object for built-ins.
fn kind_schema(t: &ResourceType, version: &str) -> Value {
    let mut schema = t
        .version(version)
        .and_then(|v| v.openapi_schema.as_deref().cloned())
        .unwrap_or_else(|| {
            json!({
                "description": format!("{} ({}).", t.kind, t.api_version(version)),
                "type": "object",
                "properties": {
                    "spec": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                    "status": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
                },
                "x-kubernetes-preserve-unknown-fields": true
            })
        });
    if let Some(m) = schema.as_object_mut() {
        let props = m
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(props) = props {
            props.insert(
                "apiVersion".into(),
                json!({ "description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string" }),
            );
            props.insert(
                "kind".into(),
                json!({ "description": "Kind is a string value representing the REST resource this object represents.", "type": "string" }),
            );
            props.insert(
                "metadata".into(),
                json!({ "description": "Standard object's metadata.", "allOf": [reference(OBJECT_META)], "default": {} }),
            );
        }
        m.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([gvk(t, version, &t.kind)]),
        );
    }
    schema
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// What kubectl's `queryParamVerifierV3` does: find the PATCH operation of the GVK and look
    /// for the `fieldValidation` query parameter. Every PATCH of the GVK must agree, since kubectl
    /// stops at the first one it meets in (random) map order.
    fn supports_field_validation(doc: &Value, group: &str, version: &str, kind: &str) -> bool {
        let mut seen = false;
        for (_, item) in doc["paths"].as_object().unwrap() {
            let Some(patch) = item.get("patch") else {
                continue;
            };
            let gvk = &patch["x-kubernetes-group-version-kind"];
            if gvk["group"] != group || gvk["version"] != version || gvk["kind"] != kind {
                continue;
            }
            let has = patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query");
            if !has {
                return false;
            }
            seen = true;
        }
        seen
    }

    #[test]
    fn every_served_kind_supports_server_side_field_validation() {
        let reg = Registry::builtin();
        let index = index_doc(&reg);
        let paths = index["paths"].as_object().unwrap();
        for t in reg.all() {
            for v in t.versions.iter().filter(|v| v.served) {
                let key = gv_path(&t.group, &v.name);
                let url = paths[&key]["serverRelativeURL"].as_str().unwrap();
                assert!(
                    url.starts_with(&format!("/openapi/v3/{key}?hash=")),
                    "{url}"
                );
                let doc = gv_doc(&reg, &t.group, &v.name).unwrap();
                assert_eq!(doc["openapi"], "3.0.0");
                assert!(
                    supports_field_validation(&doc, &t.group, &v.name, &t.kind),
                    "{} {}",
                    t.qualified(),
                    v.name
                );
                // No strategic merge patch is advertised (kubectl would then need full schemas).
                let s = doc.to_string();
                assert!(!s.contains("strategic-merge-patch"));
            }
        }
        let apps = gv_doc(&reg, "apps", "v1").unwrap();
        assert!(supports_field_validation(
            &apps,
            "autoscaling",
            "v1",
            "Scale"
        ));
        let d = &apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        assert!(
            apps["paths"]
                .get("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale")
                .is_some()
        );
        let core = gv_doc(&reg, "", "v1").unwrap();
        assert!(core["paths"].get("/api/v1/namespaces/{name}").is_some());
        assert!(gv_doc(&reg, "apps", "v2").is_none());
    }

    #[test]
    fn crd_documents_carry_the_crd_schema_and_change_the_index_hash() {
        let reg = Registry::builtin();
        let before = index_doc(&reg);
        assert!(before["paths"].get("apis/flagger.app/v1beta1").is_none());
        let crd: Value =
            serde_saphyr::from_str(include_str!("../../tests/fixtures/canary-crd.yaml")).unwrap();
        reg.apply_crd(&crd).unwrap();
        let after = index_doc(&reg);
        assert!(after["paths"].get("apis/flagger.app/v1beta1").is_some());
        let doc = gv_doc(&reg, "flagger.app", "v1beta1").unwrap();
        assert!(supports_field_validation(
            &doc,
            "flagger.app",
            "v1beta1",
            "Canary"
        ));
        let canary = &doc["components"]["schemas"]["app.flagger.v1beta1.Canary"];
        assert_eq!(canary["required"], json!(["spec"]));
        assert_eq!(
            canary["properties"]["spec"]["properties"]["targetRef"]["required"],
            json!(["apiVersion", "kind", "name"])
        );
        assert!(
            doc["paths"]
                .get("/apis/flagger.app/v1beta1/namespaces/{namespace}/canaries/{name}/status")
                .is_some()
        );
        // An unrelated group's hash does not move when the Canary CRD changes.
        let mut changed = crd.clone();
        changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = json!("x");
        reg.apply_crd(&changed).unwrap();
        let again = index_doc(&reg);
        assert_eq!(
            again["paths"]["apis/apps/v1"],
            after["paths"]["apis/apps/v1"]
        );
        assert_ne!(
            again["paths"]["apis/flagger.app/v1beta1"],
            after["paths"]["apis/flagger.app/v1beta1"]
        );
    }
}
