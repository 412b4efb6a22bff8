//! The generic resource handler: every `/api/v1/...` and `/apis/<g>/<v>/...` request that
//! discovery does not answer. One code path for all types; what differs per type comes from the
//! registry (scope, kind, subresources, CRD schema, printer columns).
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

use crate::faults::ApiCall;
use crate::patch::{self, PatchError};
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{
    ApiError, Cause, DeleteOptions, Propagation, ResourceId, TypeInfo, WatchFrom, name_of,
    namespace_of, rv_of, uid_of,
};
use crate::table::Column;

use super::ApiState;
use super::request::{Query, Target, parse_path};
use super::watch::{self, WatchSpec};

/// Request bodies above this are refused with 413, as the real API server does.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Retries of a PATCH whose read-modify-write raced another writer.
const PATCH_RETRIES: usize = 8;

pub async fn handle(State(st): State<ApiState>, req: Request) -> Response {
    match serve(&st, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

pub fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut resp = (code, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(code, &e.to_status());
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn path_not_found() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        format!("the server does not allow this method on the requested resource ({method})"),
    )
}

/// The object as a client reading through `version` sees it.
pub fn present(rt: &ResourceType, version: &str, obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(m) = out.as_object_mut() {
        m.insert("apiVersion".into(), json!(rt.api_version(version)));
        m.insert("kind".into(), json!(rt.kind));
    }
    out
}

/// The verb of a request, as counted in stats and matched by faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    fn stat_name(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::List => "LIST",
            Verb::Watch => "WATCH",
            Verb::Create => "POST",
            Verb::Update => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete | Verb::DeleteCollection => "DELETE",
        }
    }

    /// The verb an RBAC rule must grant.
    fn rbac_name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

struct Ctx<'a> {
    st: &'a ApiState,
    rt: Arc<ResourceType>,
    rid: ResourceId,
    target: Target,
    query: Query,
    headers: HeaderMap,
}

async fn serve(st: &ApiState, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let target = parse_path(parts.uri.path()).ok_or_else(path_not_found)?;
    let query = Query::parse(parts.uri.query()).map_err(ApiError::bad_request)?;
    let rt = st
        .registry
        .resolve(&target.group, &target.version, &target.plural)
        .ok_or_else(path_not_found)?;
    let rid = ResourceId::new(&rt.group, &rt.plural);
    let info = TypeInfo {
        status_subresource: rt.status_subresource,
    };
    if st.store.type_info(&rid) != info {
        st.store.register_type(&rid, info);
    }
    // Scope: namespaced items live under /namespaces/<ns>/; cluster-scoped types never do.
    if (target.namespace.is_some() && !rt.namespaced)
        || (rt.namespaced && target.namespace.is_none() && target.name.is_some())
    {
        return Err(path_not_found());
    }
    match target.subresource.as_deref() {
        None => {}
        Some("status") if rt.status_subresource => {}
        Some("scale") if rt.scale_subresource => {}
        Some(_) => return Err(path_not_found()),
    }
    let watch = query.flag("watch");
    let verb = match (&parts.method, target.name.is_some()) {
        (&Method::GET, true) if watch => Verb::Watch,
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) if watch => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, false) if target.namespace.is_some() || !rt.namespaced => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) if target.subresource.is_none() => Verb::Delete,
        (&Method::DELETE, false) if target.namespace.is_some() || !rt.namespaced => {
            Verb::DeleteCollection
        }
        (m, _) => return Err(method_not_allowed(m)),
    };
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    st.stats.record(
        verb.stat_name(),
        ApiCall {
            verb: verb.rbac_name().to_owned(),
            group: rt.group.clone(),
            resource: rt.plural.clone(),
            subresource: target.subresource.clone().unwrap_or_default(),
            namespace: target.namespace.clone().unwrap_or_default(),
            user_agent: user_agent.to_owned(),
        },
    );
    let latency = st.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(f) = st.faults.decide(verb.stat_name()) {
        st.stats.record_fault(f.code);
        return Err(injected(
            f.code,
            &rid,
            target.name.as_deref().unwrap_or_default(),
        ));
    }
    if query.get("dryRun").is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::bad_request(
            "dryRun is not supported by the testbed",
        ));
    }
    let ctx = Ctx {
        st,
        rt,
        rid,
        target,
        query,
        headers: parts.headers,
    };
    let body = match verb {
        Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection => {
            read_body(&ctx.headers, body).await?
        }
        _ => bytes::Bytes::new(),
    };
    match verb {
        Verb::Get => ctx.get(),
        Verb::List => ctx.list(),
        Verb::Watch => ctx.watch(),
        Verb::Create => ctx.create(&body),
        Verb::Update => ctx.update(&body),
        Verb::Patch => ctx.patch(&body),
        Verb::Delete => ctx.delete(&body),
        Verb::DeleteCollection => ctx.delete_collection(&body),
    }
}

fn injected(code: u16, r: &ResourceId, name: &str) -> ApiError {
    let mut e = match code {
        409 => ApiError::conflict(r, name, "injected conflict (testbed fault)"),
        429 => {
            let mut e = ApiError::new(
                429,
                "TooManyRequests",
                "injected: too many requests (testbed fault)",
            );
            e.retry_after = Some(1);
            e
        }
        503 => ApiError::new(
            503,
            "ServiceUnavailable",
            "injected: service unavailable (testbed fault)",
        ),
        504 => ApiError::new(504, "Timeout", "injected: timeout (testbed fault)"),
        c => ApiError::new(
            c,
            "InternalError",
            "injected: internal error (testbed fault)",
        ),
    };
    if code == 503 {
        e.retry_after = Some(1);
    }
    e
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {MAX_BODY}"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = src {
            if s.to_string().contains("length limit exceeded") {
                return too_large();
            }
            src = s.source();
        }
        ApiError::bad_request(format!("reading the request body failed: {e}"))
    })
}

/// `orphanDependents: false` in a DeleteOptions body.
fn body_requests_cascade(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("orphanDependents").and_then(Value::as_bool))
        == Some(false)
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn unsupported_media(got: &str, accepted: &str) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format ({got:?}) - accepted media types include: {accepted}"
        ),
    )
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn parse_yaml(body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))
}

/// Items of a LIST page after the `continue` key, and the token for the next page.
fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let ns = v
        .get("ns")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .to_string();
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .to_string();
    Ok((rv, ns, name))
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    let raw = json!({"rv": rv, "ns": ns, "name": name}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Reads `.a.b` (a CRD scale path) from an object.
fn at_path<'v>(obj: &'v Value, path: &str) -> Option<&'v Value> {
    path.trim_start_matches('.')
        .split('.')
        .try_fold(obj, |v, k| v.get(k))
}

fn set_path(obj: &mut Value, path: &str, value: Value) {
    let keys: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let mut cur = obj;
    for (i, k) in keys.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(m) = cur.as_object_mut() else { return };
        if i + 1 == keys.len() {
            m.insert((*k).to_string(), value);
            return;
        }
        cur = m.entry((*k).to_string()).or_insert_with(|| json!({}));
    }
}

/// `a=b,c=d` from a `LabelSelector` object's matchLabels/matchExpressions (for Scale.status).
fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
            {
                "In" => parts.push(format!("{key} in ({})", values.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
                "Exists" => parts.push(key.to_string()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    parts.join(",")
}

impl Ctx<'_> {
    fn ns(&self) -> &str {
        self.target.namespace.as_deref().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }

    fn version(&self) -> &str {
        &self.target.version
    }

    fn out(&self, obj: &Value) -> Value {
        present(&self.rt, self.version(), obj)
    }

    fn columns(&self) -> Vec<Column> {
        self.rt
            .version(self.version())
            .map(|v| v.columns.clone())
            .unwrap_or_default()
    }

    /// `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` (first acceptable entry wins).
    fn wants_table(&self) -> bool {
        self.headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|entry| {
                let params: Vec<String> = entry
                    .split(';')
                    .map(|p| p.trim().replace(' ', ""))
                    .collect();
                params.iter().any(|p| p == "as=Table")
                    && params.iter().any(|p| p == "g=meta.k8s.io")
            })
    }

    fn table(&self, objects: &[Value], list_meta: Value) -> Value {
        let include = self.query.get("includeObject").unwrap_or("Metadata");
        let refs: Vec<&Value> = objects.iter().collect();
        crate::table::render(
            &self.columns(),
            &refs,
            include,
            list_meta,
            jiff::Timestamp::now().as_second(),
        )
    }

    fn ok(&self, code: StatusCode, obj: &Value, warnings: &[String]) -> Response {
        let mut resp = json_response(code, obj);
        for w in warnings {
            let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
            if let Ok(v) = HeaderValue::from_str(&text) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
        resp
    }

    fn fetch(&self) -> Result<Arc<Value>, ApiError> {
        self.st
            .store
            .get(&self.rid, self.ns(), self.name())
            .ok_or_else(|| ApiError::not_found(&self.rid, self.name()))
    }

    fn selectors(&self) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(self.query.str("labelSelector")).map_err(|e| {
            ApiError::bad_request(format!("unable to parse requirement: labelSelector: {e}"))
        })?;
        let fields = FieldSelector::parse(self.query.str("fieldSelector"))
            .map_err(|e| ApiError::bad_request(format!("fieldSelector: {e}")))?;
        Ok((labels, fields))
    }

    fn get(&self) -> Result<Response, ApiError> {
        let obj = self.fetch()?;
        if self.target.subresource.as_deref() == Some("scale") {
            return Ok(json_response(StatusCode::OK, &self.scale_of(&obj)));
        }
        let shown = self.out(&obj);
        if self.wants_table() {
            let meta = json!({"resourceVersion": rv_of(&obj)});
            return Ok(json_response(StatusCode::OK, &self.table(&[shown], meta)));
        }
        Ok(json_response(StatusCode::OK, &shown))
    }

    fn list(&self) -> Result<Response, ApiError> {
        let (labels, fields) = self.selectors()?;
        let limit = self
            .query
            .u64("limit")
            .map_err(ApiError::bad_request)?
            .filter(|l| *l > 0);
        let cont = match self.query.get("continue").filter(|c| !c.is_empty()) {
            Some(t) => Some(decode_continue(t)?),
            None => None,
        };
        let (objects, store_rv) = self
            .st
            .store
            .snapshot(&self.rid, self.target.namespace.as_deref());
        // Pages after the first keep the first page's RV (the list as a whole is one version);
        // the store keeps no snapshots, so later pages read current state.
        let list_rv = cont.as_ref().map_or(store_rv, |c| c.0);
        let mut selected = objects.iter().filter(|o| {
            if let Some((_, ns, name)) = &cont
                && (namespace_of(o), name_of(o)) <= (ns.clone(), name.clone())
            {
                return false;
            }
            labels.matches_object(o) && fields.matches(o)
        });
        let mut items: Vec<Value> = Vec::new();
        let mut next = None;
        while let Some(o) = selected.next() {
            if limit.is_some_and(|l| items.len() as u64 >= l) {
                let remaining = 1 + selected.count();
                let last = items
                    .last()
                    .map(|l| (namespace_of(l), name_of(l)))
                    .unwrap_or_default();
                next = Some((encode_continue(list_rv, &last.0, &last.1), remaining));
                break;
            }
            items.push(self.out(o));
        }
        let mut meta = json!({"resourceVersion": list_rv.to_string()});
        if let Some((token, remaining)) = next {
            meta["continue"] = json!(token);
            meta["remainingItemCount"] = json!(remaining);
        }
        if self.wants_table() {
            return Ok(json_response(StatusCode::OK, &self.table(&items, meta)));
        }
        let list = json!({
            "kind": self.rt.list_kind,
            "apiVersion": self.rt.api_version(self.version()),
            "metadata": meta,
            "items": items,
        });
        Ok(json_response(StatusCode::OK, &list))
    }

    fn watch(&self) -> Result<Response, ApiError> {
        let (labels, mut fields) = self.selectors()?;
        if let Some(name) = &self.target.name {
            // Legacy single-object watch: the same as a metadata.name field selector.
            fields = FieldSelector::parse(&format!("metadata.name={name}"))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        let send_initial = self.query.flag("sendInitialEvents");
        let from = match self.query.get("resourceVersion").unwrap_or("") {
            _ if send_initial => WatchFrom::Current,
            "" | "0" => WatchFrom::Current,
            rv => WatchFrom::After(rv.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "resourceVersion: Invalid value: {rv:?}: must be an unsigned integer"
                ))
            })?),
        };
        let timeout = self
            .query
            .u64("timeoutSeconds")
            .map_err(ApiError::bad_request)?
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let table = self.wants_table().then(|| {
            (
                self.columns(),
                self.query
                    .get("includeObject")
                    .unwrap_or("Metadata")
                    .to_string(),
            )
        });
        watch::start(
            self.st,
            WatchSpec {
                rt: self.rt.clone(),
                version: self.version().to_string(),
                namespace: self.target.namespace.clone(),
                labels,
                fields,
                from,
                bookmarks: self.query.flag("allowWatchBookmarks"),
                initial_events_end: send_initial,
                timeout,
                table,
            },
        )
    }

    /// Decodes a create/update body (JSON or YAML).
    fn decode(&self, body: &[u8]) -> Result<Value, ApiError> {
        match media_type(&self.headers).as_str() {
            "" | "application/json" => parse_json(body),
            "application/yaml" => parse_yaml(body),
            other => Err(unsupported_media(
                other,
                "application/json, application/yaml",
            )),
        }
    }

    /// Checks and normalises an incoming object: type meta, namespace and name against the URL,
    /// then (for custom resources) prune, default and validate with the version's schema.
    /// Returns the object to store and the warnings to send.
    fn prepare(
        &self,
        mut obj: Value,
        url_name: Option<&str>,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let want_av = self.rt.api_version(self.version());
        let Some(m) = obj.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        };
        match m.get("apiVersion") {
            None | Some(Value::Null) => {}
            Some(Value::String(av)) if av.is_empty() || *av == want_av => {}
            Some(av) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({}) does not match the expected API version ({want_av})",
                    av.as_str().unwrap_or("non-string")
                )));
            }
        }
        match m.get("kind") {
            None | Some(Value::Null) => {}
            Some(Value::String(k)) if k.is_empty() || *k == self.rt.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({}) does not match the expected kind ({})",
                    k.as_str().unwrap_or("non-string"),
                    self.rt.kind
                )));
            }
        }
        let meta = m.entry("metadata").or_insert_with(|| json!({}));
        let Some(meta) = meta.as_object_mut() else {
            return Err(ApiError::bad_request("metadata: must be an object"));
        };
        for (k, want) in [
            ("name", "string"),
            ("namespace", "string"),
            ("resourceVersion", "string"),
        ] {
            if meta.get(k).is_some_and(|v| !v.is_string() && !v.is_null()) {
                return Err(ApiError::bad_request(format!(
                    "metadata.{k}: must be a {want}"
                )));
            }
        }
        for (k, want) in [("labels", "object"), ("annotations", "object")] {
            match meta.get(k) {
                None | Some(Value::Null) => {}
                Some(Value::Object(map)) if map.values().all(Value::is_string) => {}
                Some(_) => {
                    return Err(ApiError::bad_request(format!(
                        "metadata.{k}: must be an {want} of strings"
                    )));
                }
            }
        }
        for k in ["finalizers", "ownerReferences"] {
            if meta.get(k).is_some_and(|v| !v.is_array() && !v.is_null()) {
                return Err(ApiError::bad_request(format!(
                    "metadata.{k}: must be a list"
                )));
            }
        }
        meta.retain(|_, v| !v.is_null());
        if self.rt.namespaced {
            let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
            if !body_ns.is_empty() && body_ns != self.ns() {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".into(), json!(self.ns()));
        } else {
            meta.remove("namespace");
        }
        if let Some(url_name) = url_name {
            let body_name = meta.get("name").and_then(Value::as_str).unwrap_or("");
            if !body_name.is_empty() && body_name != url_name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
                )));
            }
            meta.insert("name".into(), json!(url_name));
        }
        let storage = self
            .rt
            .storage_version()
            .map_or(self.version(), |v| v.name.as_str());
        m.insert("apiVersion".into(), json!(self.rt.api_version(storage)));
        m.insert("kind".into(), json!(self.rt.kind));
        let mut warnings = Vec::new();
        if let Some(schema) = self
            .rt
            .version(self.version())
            .and_then(|v| v.schema.clone())
        {
            let pruned = schema.prune(&mut obj);
            if !pruned.is_empty() {
                let msgs: Vec<String> = pruned
                    .iter()
                    .map(|p| format!("unknown field {p:?}"))
                    .collect();
                match self.query.get("fieldValidation").unwrap_or("Warn") {
                    "Strict" => {
                        return Err(ApiError::bad_request(format!(
                            "strict decoding error: {}",
                            msgs.join(", ")
                        )));
                    }
                    "Ignore" => {}
                    _ => warnings = msgs,
                }
            }
            schema.apply_defaults(&mut obj);
            let errors = schema.validate(&obj);
            if !errors.is_empty() {
                let causes = errors
                    .into_iter()
                    .map(|e| Cause {
                        reason: e.reason,
                        field: e.field,
                        message: e.message,
                    })
                    .collect();
                let name = url_name
                    .map(str::to_string)
                    .unwrap_or_else(|| name_of(&obj));
                return Err(ApiError::invalid(
                    &self.rt.kind,
                    &self.rt.group,
                    &name,
                    causes,
                ));
            }
        }
        // A real API server validates CRDs on write; refusing a malformed one here names the field
        // instead of leaving a stored CRD that is silently never served.
        if self.rid == ResourceId::new("apiextensions.k8s.io", "customresourcedefinitions")
            && let Err(e) = crate::registry::resource_from_crd(&obj)
        {
            let name = url_name
                .map(str::to_string)
                .unwrap_or_else(|| name_of(&obj));
            return Err(ApiError::invalid(
                &self.rt.kind,
                &self.rt.group,
                &name,
                vec![crd_error_cause(&e)],
            ));
        }
        super::defaults::apply(&self.rid, &mut obj);
        Ok((obj, warnings))
    }

    fn create(&self, body: &[u8]) -> Result<Response, ApiError> {
        if self.target.subresource.is_some() {
            return Err(method_not_allowed(&Method::POST));
        }
        let obj = self.decode(body)?;
        let (obj, warnings) = self.prepare(obj, None)?;
        let created = self.st.store.create(&self.rid, obj)?;
        Ok(self.ok(StatusCode::CREATED, &self.out(&created), &warnings))
    }

    fn update(&self, body: &[u8]) -> Result<Response, ApiError> {
        let obj = self.decode(body)?;
        if self.target.subresource.as_deref() == Some("scale") {
            let current = self.fetch()?;
            let want_rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !want_rv.is_empty() && want_rv != rv_of(&current) {
                return Err(ApiError::stale(&self.rid, self.name()));
            }
            return self.write_scale(&current, &obj);
        }
        let (obj, warnings) = self.prepare(obj, Some(self.name()))?;
        let status_only = self.target.subresource.as_deref() == Some("status");
        let stored = self.st.store.update(&self.rid, obj, status_only)?;
        Ok(self.ok(StatusCode::OK, &self.out(&stored), &warnings))
    }

    /// The `autoscaling/v1` Scale view of an object.
    fn scale_of(&self, obj: &Value) -> Value {
        let (spec_path, status_path, selector_path) = match &self.rt.scale_paths {
            Some(p) => (
                p.spec_replicas.as_str(),
                p.status_replicas.as_str(),
                p.label_selector.clone(),
            ),
            None => (".spec.replicas", ".status.replicas", None),
        };
        // Built-ins derive the selector from spec.selector; CRDs name a path holding the string.
        let selector = match selector_path {
            Some(p) if self.rt.crd_name.is_some() => at_path(obj, &p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            _ => obj
                .pointer("/spec/selector")
                .map(selector_string)
                .unwrap_or_default(),
        };
        let mut meta = Map::new();
        for k in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "creationTimestamp",
        ] {
            if let Some(v) = obj.pointer(&format!("/metadata/{k}")) {
                meta.insert(k.into(), v.clone());
            }
        }
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": meta,
            "spec": {"replicas": at_path(obj, spec_path).and_then(Value::as_i64).unwrap_or(0)},
            "status": {
                "replicas": at_path(obj, status_path).and_then(Value::as_i64).unwrap_or(0),
                "selector": selector,
            },
        })
    }

    /// Applies a Scale's `spec.replicas` to the object (`current` is the version it was based on).
    fn write_scale(&self, current: &Value, scale: &Value) -> Result<Response, ApiError> {
        let replicas = match scale.pointer("/spec/replicas") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_i64()
                .filter(|r| *r >= 0 && *r <= i64::from(i32::MAX))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Scale",
                        "autoscaling",
                        self.name(),
                        vec![Cause {
                            reason: "FieldValueInvalid".into(),
                            field: "spec.replicas".into(),
                            message: format!(
                                "Invalid value: {v}: must be greater than or equal to 0"
                            ),
                        }],
                    )
                })?,
        };
        let spec_path = self
            .rt
            .scale_paths
            .as_ref()
            .map_or(".spec.replicas", |p| p.spec_replicas.as_str());
        let mut next = current.clone();
        set_path(&mut next, spec_path, json!(replicas));
        let stored = self.st.store.update(&self.rid, next, false)?;
        Ok(json_response(StatusCode::OK, &self.scale_of(&stored)))
    }

    fn patch(&self, body: &[u8]) -> Result<Response, ApiError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Kind {
            Merge,
            Json,
            Strategic,
            Apply,
        }
        let accepted = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";
        let kind = match media_type(&self.headers).as_str() {
            "application/merge-patch+json" => Kind::Merge,
            "application/json-patch+json" => Kind::Json,
            "application/strategic-merge-patch+json" if self.rt.crd_name.is_none() => {
                Kind::Strategic
            }
            "application/apply-patch+yaml" => Kind::Apply,
            other => {
                let accepted = if self.rt.crd_name.is_none() {
                    format!("{accepted}, application/strategic-merge-patch+json")
                } else {
                    accepted.to_string()
                };
                return Err(unsupported_media(other, &accepted));
            }
        };
        if kind != Kind::Apply && self.query.get("force").is_some() {
            return Err(ApiError::invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                vec![Cause {
                    reason: "FieldValueForbidden".into(),
                    field: "force".into(),
                    message: "Forbidden: may not be specified for non-apply patch".into(),
                }],
            ));
        }
        let doc = if kind == Kind::Apply {
            parse_yaml(body)?
        } else {
            parse_json(body)?
        };
        if kind == Kind::Apply && self.query.str("fieldManager").is_empty() {
            return Err(ApiError::invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    field: "fieldManager".into(),
                    message: "Required value: is required for apply patch".into(),
                }],
            ));
        }
        let apply = |target: &mut Value| -> Result<(), ApiError> {
            let r = match kind {
                Kind::Merge => {
                    patch::merge_patch(target, &doc);
                    Ok(())
                }
                Kind::Json => patch::json_patch(target, &doc),
                Kind::Strategic => patch::strategic_merge_patch(target, &doc),
                Kind::Apply => patch::apply_patch(target, &doc),
            };
            r.map_err(|e| match e {
                PatchError::Invalid(m) => ApiError::bad_request(m),
                PatchError::Failed(m) => ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {m}"),
                ),
            })
        };
        let sub = self.target.subresource.as_deref();
        for _ in 0..PATCH_RETRIES {
            let Some(current) = self.st.store.get(&self.rid, self.ns(), self.name()) else {
                if kind == Kind::Apply && sub.is_none() {
                    let (obj, warnings) = self.prepare(doc.clone(), Some(self.name()))?;
                    let created = self.st.store.create(&self.rid, obj)?;
                    return Ok(self.ok(StatusCode::CREATED, &self.out(&created), &warnings));
                }
                return Err(ApiError::not_found(&self.rid, self.name()));
            };
            let result = if sub == Some("scale") {
                let mut scale = self.scale_of(&current);
                apply(&mut scale)?;
                let want_rv = scale
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !want_rv.is_empty() && want_rv != rv_of(&current) {
                    return Err(ApiError::stale(&self.rid, self.name()));
                }
                self.write_scale(&current, &scale)
            } else {
                let mut obj = self.out(&current);
                apply(&mut obj)?;
                // A patch that names a resourceVersion is a precondition: no retry on conflict.
                let patched_rv = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if patched_rv != rv_of(&current) && !patched_rv.is_empty() {
                    let (obj, warnings) = self.prepare(obj, Some(self.name()))?;
                    let stored = self
                        .st
                        .store
                        .update(&self.rid, obj, sub == Some("status"))?;
                    return Ok(self.ok(StatusCode::OK, &self.out(&stored), &warnings));
                }
                let (mut obj, warnings) = self.prepare(obj, Some(self.name()))?;
                obj["metadata"]["resourceVersion"] = json!(rv_of(&current));
                if uid_of(&obj) != uid_of(&current) {
                    obj["metadata"]["uid"] = json!(uid_of(&current));
                }
                self.st
                    .store
                    .update(&self.rid, obj, sub == Some("status"))
                    .map(|stored| self.ok(StatusCode::OK, &self.out(&stored), &warnings))
            };
            match result {
                Err(e) if e.code == 409 && e.reason == "Conflict" => continue,
                r => return r,
            }
        }
        Err(ApiError::conflict(
            &self.rid,
            self.name(),
            "too many concurrent writes, the patch could not be applied",
        ))
    }

    fn delete_options(&self, body: &[u8]) -> Result<DeleteOptions, ApiError> {
        let mut opts = DeleteOptions::default();
        let mut policy = self.query.get("propagationPolicy").map(str::to_string);
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v = parse_json(body)?;
            if !v.is_object() {
                return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
            }
            if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
                policy = Some(p.to_string());
            }
            if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
                policy.get_or_insert_with(|| "Orphan".to_string());
            }
            opts.precondition_rv = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            opts.precondition_uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            if v.get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                return Err(ApiError::bad_request(
                    "dryRun is not supported by the testbed",
                ));
            }
        }
        if self.query.get("orphanDependents") == Some("true") {
            policy.get_or_insert_with(|| "Orphan".to_string());
        }
        if let Some(p) = policy.filter(|p| !p.is_empty()) {
            opts.propagation = p.parse::<Propagation>().map_err(|m| {
                ApiError::invalid(
                    "DeleteOptions",
                    "meta.k8s.io",
                    "",
                    vec![Cause {
                        reason: "FieldValueNotSupported".into(),
                        field: "propagationPolicy".into(),
                        message: m,
                    }],
                )
            })?;
        }
        Ok(opts)
    }

    fn delete(&self, body: &[u8]) -> Result<Response, ApiError> {
        let opts = self.delete_options(body)?;
        let after = self
            .st
            .store
            .delete_with(&self.rid, self.ns(), self.name(), &opts)?;
        let still_there = self
            .st
            .store
            .get(&self.rid, self.ns(), self.name())
            .is_some_and(|o| uid_of(&o) == uid_of(&after));
        // As the real handler: 200 with the object while finalizers hold it (202 only for the
        // legacy orphanDependents=false), and after removal a Success Status for built-ins or the
        // object for custom resources.
        if still_there || self.rt.crd_name.is_some() {
            let legacy_cascade = body_requests_cascade(body);
            let code = if still_there && legacy_cascade {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            return Ok(json_response(code, &self.out(&after)));
        }
        let mut details =
            json!({"name": self.name(), "kind": self.rt.plural, "uid": uid_of(&after)});
        if !self.rt.group.is_empty() {
            details["group"] = json!(self.rt.group);
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
        ))
    }

    fn delete_collection(&self, body: &[u8]) -> Result<Response, ApiError> {
        if self.target.subresource.is_some() {
            return Err(method_not_allowed(&Method::DELETE));
        }
        let opts = self.delete_options(body)?;
        let (labels, fields) = self.selectors()?;
        let (objects, _) = self
            .st
            .store
            .snapshot(&self.rid, self.target.namespace.as_deref());
        let mut items = Vec::new();
        for o in objects
            .iter()
            .filter(|o| labels.matches_object(o) && fields.matches(o))
        {
            match self
                .st
                .store
                .delete_with(&self.rid, &namespace_of(o), &name_of(o), &opts)
            {
                Ok(after) => items.push(self.out(&after)),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let list = json!({
            "kind": self.rt.list_kind,
            "apiVersion": self.rt.api_version(self.version()),
            "metadata": {"resourceVersion": self.st.store.current_rv().to_string()},
            "items": items,
        });
        Ok(json_response(StatusCode::OK, &list))
    }
}

/// The 422 cause for a CRD the registry cannot serve.
fn crd_error_cause(e: &crate::registry::CrdError) -> Cause {
    use crate::registry::CrdError;
    let (reason, field) = match e {
        CrdError::Missing { field } => ("FieldValueRequired", format!("spec.{field}")),
        CrdError::Invalid { field, .. } => ("FieldValueInvalid", format!("spec.{field}")),
        CrdError::NameMismatch { .. } => ("FieldValueInvalid", "metadata.name".to_string()),
        CrdError::Schema { index, .. } => (
            "FieldValueInvalid",
            format!("spec.versions[{index}].schema.openAPIV3Schema"),
        ),
        CrdError::NameConflict { .. } => ("FieldValueInvalid", "spec.names".to_string()),
    };
    Cause {
        reason: reason.to_string(),
        field,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "ns", "a");
        assert_eq!(decode_continue(&t).unwrap(), (42, "ns".into(), "a".into()));
        assert_eq!(decode_continue("%%%").unwrap_err().code, 400);
    }

    #[test]
    fn selector_strings() {
        let sel = json!({"matchLabels": {"app": "x"}, "matchExpressions": [{"key": "t", "operator": "In", "values": ["a", "b"]}]});
        assert_eq!(selector_string(&sel), "app=x,t in (a,b)");
    }
}
