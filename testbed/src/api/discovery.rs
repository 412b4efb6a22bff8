//! API discovery (owner: testbed-discovery helper): `/version`, `/api`, `/apis`, `/api/v1`,
//! `/apis/<group>` and `/apis/<group>/<version>`, generated from the [`Registry`] on every request
//! (so a CRD shows up as soon as it is registered).
//!
//! `/api` and `/apis` also answer aggregated discovery (`apidiscovery.k8s.io/v2`
//! `APIGroupDiscoveryList`) when the client asks for it in `Accept`, as kubectl 1.32 does first;
//! other clients get the classic `APIVersions`/`APIGroupList` and then walk the group versions.
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::registry::{RESOURCE_VERBS, Registry, ResourceType, SUBRESOURCE_VERBS};

/// The Kubernetes version the testbed reports (kubectl warns beyond one minor version of skew).
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";
pub const GIT_VERSION: &str = "v1.32.0-flagger-testbed";

/// Content type of an aggregated discovery answer.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Discovery routes; merge them into the API router.
pub fn routes(registry: Registry) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/api", get(api_versions))
        .route("/api/", get(api_versions))
        .route("/api/v1", get(core_v1))
        .route("/api/v1/", get(core_v1))
        .route("/apis", get(api_groups))
        .route("/apis/", get(api_groups))
        .route("/apis/{group}", get(api_group))
        .route("/apis/{group}/", get(api_group))
        .route("/apis/{group}/{version}", get(group_version))
        .route("/apis/{group}/{version}/", get(group_version))
        .with_state(registry)
}

fn json_response(status: StatusCode, content_type: &'static str, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn ok(body: &Value) -> Response {
    json_response(StatusCode::OK, "application/json", body)
}

/// A `Status` 404 in the shape the API server uses for unknown paths.
fn not_found(path: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        "application/json",
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("the server could not find the requested resource ({path})"),
            "reason": "NotFound",
            "details": {},
            "code": 404
        }),
    )
}

/// Whether the client accepts aggregated discovery v2 (any `Accept` entry with
/// `g=apidiscovery.k8s.io`, `v=v2`, `as=APIGroupDiscoveryList`).
pub fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| {
            let params: Vec<(String, String)> = entry
                .split(';')
                .skip(1)
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let has = |k: &str, v: &str| params.iter().any(|(pk, pv)| pk == k && pv == v);
            has("g", "apidiscovery.k8s.io") && has("v", "v2") && has("as", "APIGroupDiscoveryList")
        })
}

async fn version() -> Response {
    ok(&version_info())
}

/// The `/version` document.
pub fn version_info() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

async fn api_versions(State(reg): State<Registry>, headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return json_response(StatusCode::OK, AGGREGATED_V2, &aggregated(&reg, true));
    }
    ok(&json!({ "kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [] }))
}

async fn api_groups(State(reg): State<Registry>, headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return json_response(StatusCode::OK, AGGREGATED_V2, &aggregated(&reg, false));
    }
    ok(&api_group_list(&reg))
}

/// The `APIGroupList` of `/apis` (every group but core).
pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_json(&g, &vs))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({ "name": group, "versions": vs, "preferredVersion": preferred })
}

async fn api_group(State(reg): State<Registry>, Path(group): Path<String>) -> Response {
    match reg
        .groups()
        .into_iter()
        .find(|(g, _)| !g.is_empty() && *g == group)
    {
        Some((g, vs)) => {
            let mut body = group_json(&g, &vs);
            if let Some(m) = body.as_object_mut() {
                m.insert("kind".into(), json!("APIGroup"));
                m.insert("apiVersion".into(), json!("v1"));
            }
            ok(&body)
        }
        None => not_found(&format!("/apis/{group}")),
    }
}

async fn core_v1(State(reg): State<Registry>) -> Response {
    ok(&resource_list(&reg, "", "v1"))
}

async fn group_version(
    State(reg): State<Registry>,
    Path((group, version)): Path<(String, String)>,
) -> Response {
    let served = reg
        .groups()
        .into_iter()
        .any(|(g, vs)| !g.is_empty() && g == group && vs.contains(&version));
    if !served {
        return not_found(&format!("/apis/{group}/{version}"));
    }
    ok(&resource_list(&reg, &group, &version))
}

fn types_in(reg: &Registry, group: &str, version: &str) -> Vec<std::sync::Arc<ResourceType>> {
    reg.all()
        .into_iter()
        .filter(|t| t.group == group && t.version(version).is_some())
        .collect()
}

fn strs(xs: &[&str]) -> Value {
    json!(xs)
}

/// The `APIResourceList` of `/api/v1` (group "") or `/apis/<group>/<version>`.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for t in types_in(reg, group, version) {
        let mut main = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": strs(RESOURCE_VERBS),
        });
        if let Some(m) = main.as_object_mut() {
            if !t.short_names.is_empty() {
                m.insert("shortNames".into(), json!(t.short_names));
            }
            if !t.categories.is_empty() {
                m.insert("categories".into(), json!(t.categories));
            }
        }
        resources.push(main);
        if t.scale_subresource {
            resources.push(json!({
                "name": format!("{}/scale", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": strs(SUBRESOURCE_VERBS),
            }));
        }
        if t.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": strs(SUBRESOURCE_VERBS),
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

/// The aggregated `APIGroupDiscoveryList` of `/api` (`core = true`) or `/apis`.
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let items: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = types_in(reg, &g, v)
                        .iter()
                        .map(|t| aggregated_resource(t))
                        .collect();
                    json!({ "version": v, "resources": resources, "freshness": "Current" })
                })
                .collect();
            let metadata = if g.is_empty() {
                json!({ "creationTimestamp": null })
            } else {
                json!({ "name": g, "creationTimestamp": null })
            };
            json!({ "metadata": metadata, "versions": versions })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

fn aggregated_resource(t: &ResourceType) -> Value {
    let mut subresources = Vec::new();
    if t.scale_subresource {
        subresources.push(json!({
            "subresource": "scale",
            "responseKind": { "group": "autoscaling", "version": "v1", "kind": "Scale" },
            "verbs": strs(SUBRESOURCE_VERBS),
        }));
    }
    if t.status_subresource {
        subresources.push(json!({
            "subresource": "status",
            "responseKind": { "group": "", "version": "", "kind": t.kind },
            "verbs": strs(SUBRESOURCE_VERBS),
        }));
    }
    let mut r = json!({
        "resource": t.plural,
        "responseKind": { "group": "", "version": "", "kind": t.kind },
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": strs(RESOURCE_VERBS),
    });
    if let Some(m) = r.as_object_mut() {
        if !t.short_names.is_empty() {
            m.insert("shortNames".into(), json!(t.short_names));
        }
        if !t.categories.is_empty() {
            m.insert("categories".into(), json!(t.categories));
        }
        if !subresources.is_empty() {
            m.insert("subresources".into(), json!(subresources));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use kube::core::GroupVersionKind;
    use kube::discovery::{Discovery, Scope, verbs};

    /// Serves discovery and OpenAPI for `reg` on a loopback port; returns a kube client for it.
    pub(crate) async fn serve(reg: Registry) -> (kube::Client, String) {
        // kube links rustls without choosing a crypto provider; Err = one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let app = routes(reg.clone()).merge(super::super::openapi::routes(reg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let cfg = kube::Config::new(url.parse().unwrap());
        (kube::Client::try_from(cfg).unwrap(), url)
    }

    async fn get(
        client: &kube::Client,
        path: &str,
        accept: &str,
    ) -> (http::StatusCode, String, Value) {
        let req = http::Request::get(path)
            .header("Accept", accept)
            .body(Vec::new())
            .unwrap();
        let resp = client
            .send(req.map(kube::client::Body::from))
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), usize::MAX)
            .await
            .unwrap();
        (status, ct, serde_json::from_slice(&body).unwrap())
    }

    fn check(d: &Discovery) {
        let (ar, caps) = d
            .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
            .expect("deployments discovered");
        assert_eq!(ar.plural, "deployments");
        assert_eq!(caps.scope, Scope::Namespaced);
        assert!(caps.supports_operation(verbs::WATCH) && caps.supports_operation(verbs::PATCH));
        let subs: Vec<_> = caps
            .subresources
            .iter()
            .map(|(r, _)| r.plural.clone())
            .collect();
        assert!(
            subs.contains(&"scale".to_string()) && subs.contains(&"status".to_string()),
            "{subs:?}"
        );
        let (ns, caps) = d
            .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Namespace"))
            .unwrap();
        assert_eq!(
            (ns.plural.as_str(), caps.scope),
            ("namespaces", Scope::Cluster)
        );
        for (g, v, k) in [
            ("networking.istio.io", "v1alpha3", "VirtualService"),
            ("networking.istio.io", "v1beta1", "DestinationRule"),
            ("networking.istio.io", "v1", "Gateway"),
            ("autoscaling", "v2", "HorizontalPodAutoscaler"),
            ("autoscaling", "v2beta1", "HorizontalPodAutoscaler"),
            ("coordination.k8s.io", "v1", "Lease"),
            ("events.k8s.io", "v1", "Event"),
            ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        ] {
            assert!(
                d.resolve_gvk(&GroupVersionKind::gvk(g, v, k)).is_some(),
                "{g}/{v} {k}"
            );
        }
        let autoscaling = d.get("autoscaling").unwrap();
        assert_eq!(autoscaling.preferred_version_or_latest(), "v2");
    }

    #[tokio::test]
    async fn kube_rs_discovers_builtins_and_istio_both_ways() {
        let (client, _) = serve(Registry::builtin()).await;
        check(&Discovery::new(client.clone()).run().await.unwrap());
        check(&Discovery::new(client).run_aggregated().await.unwrap());
    }

    #[tokio::test]
    async fn resource_lists_carry_names_verbs_and_subresources() {
        let (client, _) = serve(Registry::builtin()).await;
        let (status, _, apps) = get(&client, "/apis/apps/v1", "application/json").await;
        assert_eq!(status, 200);
        assert_eq!(apps["kind"], "APIResourceList");
        assert_eq!(apps["groupVersion"], "apps/v1");
        let res = apps["resources"].as_array().unwrap();
        let find = |n: &str| {
            res.iter()
                .find(|r| r["name"] == n)
                .unwrap_or_else(|| panic!("{n}"))
                .clone()
        };
        let d = find("deployments");
        assert_eq!(d["singularName"], "deployment");
        assert_eq!(d["kind"], "Deployment");
        assert_eq!(d["namespaced"], true);
        assert_eq!(d["shortNames"], json!(["deploy"]));
        assert_eq!(d["categories"], json!(["all"]));
        assert_eq!(d["verbs"].as_array().unwrap().len(), 8);
        let scale = find("deployments/scale");
        assert_eq!(
            (
                scale["group"].as_str(),
                scale["version"].as_str(),
                scale["kind"].as_str()
            ),
            (Some("autoscaling"), Some("v1"), Some("Scale"))
        );
        assert_eq!(
            find("deployments/status")["verbs"],
            json!(["get", "patch", "update"])
        );

        let (_, _, core) = get(&client, "/api/v1", "application/json").await;
        assert_eq!(core["groupVersion"], "v1");
        let ns = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "namespaces")
            .unwrap()
            .clone();
        assert_eq!(ns["namespaced"], false);

        let (_, _, group) = get(&client, "/apis/networking.istio.io", "application/json").await;
        assert_eq!(group["kind"], "APIGroup");
        assert_eq!(group["preferredVersion"]["version"], "v1");
        assert_eq!(group["versions"].as_array().unwrap().len(), 3);

        let (_, _, version) = get(&client, "/version", "application/json").await;
        assert_eq!(version["major"], "1");

        let (status, _, body) = get(&client, "/apis/nope.example.com/v1", "application/json").await;
        assert_eq!(status, 404);
        assert_eq!(body["reason"], "NotFound");
        let (status, _, _) = get(&client, "/apis/apps/v7", "application/json").await;
        assert_eq!(status, 404);
        let (status, _, _) = get(&client, "/apis/nope.example.com", "application/json").await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn aggregated_discovery_only_when_asked() {
        let (client, _) = serve(Registry::builtin()).await;
        let kubectl_accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        let (_, ct, body) = get(&client, "/apis", kubectl_accept).await;
        assert_eq!(ct, AGGREGATED_V2);
        assert_eq!(body["kind"], "APIGroupDiscoveryList");
        let (_, ct, body) = get(&client, "/apis", "application/json").await;
        assert_eq!(ct, "application/json");
        assert_eq!(body["kind"], "APIGroupList");
        let names: Vec<_> = body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            &names[..2],
            ["apps", "events.k8s.io"],
            "built-in groups in server order"
        );
        assert!(names.contains(&"networking.istio.io"));
        let (_, _, body) = get(&client, "/api", "application/json").await;
        assert_eq!(
            body,
            json!({ "kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [] })
        );
        // Only v2 is offered; a v2beta1-only client gets the classic document.
        let (_, ct, _) = get(
            &client,
            "/api",
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
        )
        .await;
        assert_eq!(ct, "application/json");
    }

    #[tokio::test]
    async fn crds_appear_and_disappear_in_discovery() {
        let reg = Registry::builtin();
        let (client, _) = serve(reg.clone()).await;
        let crd: Value =
            serde_saphyr::from_str(include_str!("../../tests/fixtures/canary-crd.yaml")).unwrap();
        reg.apply_crd(&crd).unwrap();
        let d = Discovery::new(client.clone()).run().await.unwrap();
        let (ar, caps) = d
            .resolve_gvk(&GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary"))
            .unwrap();
        assert_eq!(ar.plural, "canaries");
        assert_eq!(caps.subresources.len(), 1);
        reg.remove_crd("canaries.flagger.app");
        let d = Discovery::new(client).run_aggregated().await.unwrap();
        assert!(
            d.resolve_gvk(&GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary"))
                .is_none()
        );
        assert!(!d.has_group("flagger.app"));
    }
}
