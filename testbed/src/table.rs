//! `meta.k8s.io/v1` Table rendering, for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! A Table has `columnDefinitions` (`name`, `type`, `format`, `description`, `priority`; kubectl
//! shows priority 0 columns, `-o wide` all) and `rows` of `cells` in column order plus, per
//! `?includeObject=`, the row's `object`: `None` → no `object` member, `Metadata` (the default,
//! also for unknown values) → a `PartialObjectMetadata` (`apiVersion: meta.k8s.io/v1`) holding the
//! object's `metadata`, `Object` → the full object.
//!
//! Columns:
//! - CRDs ([`crd_columns`]): `Name`, then the version's `additionalPrinterColumns`. As upstream's
//!   `serveDefaultColumnsIfEmpty`, a single `Age` column (type `date`, `.metadata.creationTimestamp`)
//!   is served only when the CRD declares no printer columns; a CRD that declares columns gets no
//!   AGE unless it declares one itself. Cells follow upstream's convertor: the first JSONPath
//!   result only; `string` columns print it as kubectl's jsonpath does (strings as-is, numbers and
//!   booleans as text, maps/arrays as compact JSON); `integer`/`number`/`boolean` columns give a
//!   JSON value of that type (or `null` on mismatch); `date` columns give the age (`5m2s`) or
//!   `<invalid>`; a missing value gives `null`.
//! - Built-ins ([`builtin_columns`]) follow `pkg/printers/internalversion` of kube 1.32 for
//!   namespaces, configmaps, secrets, services, pods, deployments, replicasets,
//!   horizontalpodautoscalers, events (core and events.k8s.io), leases; customresourcedefinitions
//!   print `Name` and `Created At` (RFC 3339). Any other resource gets `Name` and `Age`.
//!
//! Ages are rendered like `duration.HumanDuration` (`45s`, `5m2s`, `3h10m`, `2d3h`, `400d`,
//! `2y10d`) from `now_unix`, so tests are deterministic.
use crate::jsonpath::JsonPath;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
pub enum Cell {
    /// A JSONPath as in `additionalPrinterColumns[].jsonPath` (`.status.phase`, `.spec.ports[0].port`).
    JsonPath(String),
    /// `metadata.name`.
    Name,
    /// Age from `metadata.creationTimestamp` (`5m2s`, `3h`, `2d`, as kubectl prints).
    Age,
    /// Deployment READY: `readyReplicas/replicas`.
    ReadyOfReplicas,
    /// `metadata.creationTimestamp` as RFC 3339 (CRDs' `Created At`).
    CreatedAt,
    /// The first of these dotted paths holding a non-empty string (or number), else the fallback.
    Text(&'static [&'static str], &'static str),
    /// An integer at a dotted path, the fallback when missing.
    Integer(&'static str, i64),
    /// ConfigMap/Secret DATA: number of keys in `data` plus `binaryData`.
    DataCount,
    /// A label map at a dotted path as `a=b,c=d` (`<none>` when empty), e.g. a Service selector.
    MapSelector(&'static str),
    /// A `metav1.LabelSelector` at a dotted path in selector syntax (`<none>` when empty).
    LabelSelector(&'static str),
    /// Container names of the pod spec at a dotted path, joined by `,`.
    Containers(&'static str),
    /// Container images of the pod spec at a dotted path, joined by `,`.
    Images(&'static str),
    ServiceExternalIp,
    ServicePorts,
    PodReady,
    PodStatus,
    PodRestarts,
    PodReadinessGates,
    HpaReference,
    HpaTargets,
    HpaMinPods,
    EventLastSeen,
    EventFirstSeen,
    EventObject,
    EventSource,
    EventCount,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// OpenAPI type: string, integer, number, boolean, date.
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
    pub cell: Cell,
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

fn col(name: &str, type_: &str, priority: i32, description: &str, cell: Cell) -> Column {
    Column {
        name: name.to_string(),
        type_: type_.to_string(),
        format: String::new(),
        description: description.to_string(),
        priority,
        cell,
    }
}

fn name_col() -> Column {
    Column {
        format: "name".to_string(),
        ..col("Name", "string", 0, NAME_DESC, Cell::Name)
    }
}

fn age_col() -> Column {
    col("Age", "string", 0, AGE_DESC, Cell::Age)
}

/// Columns for a CRD version: NAME, its `additionalPrinterColumns` (AGE only if none is declared,
/// as the real server does... see module docs). Accepts the `additionalPrinterColumns` list, the
/// version object holding it, or `null`.
pub fn crd_columns(printer_columns: &Value) -> Vec<Column> {
    let list = match printer_columns {
        Value::Array(a) => a.as_slice(),
        Value::Object(m) => m
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]),
        _ => &[],
    };
    let mut cols = vec![name_col()];
    for pc in list {
        let text = |k: &str| pc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let path = text("jsonPath");
        let description = match text("description") {
            d if d.is_empty() => {
                format!("Custom resource definition column (in JSONPath format): {path}")
            }
            d => d,
        };
        cols.push(Column {
            name: text("name"),
            type_: text("type"),
            format: text("format"),
            description,
            priority: pc
                .get("priority")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            cell: Cell::JsonPath(path),
        });
    }
    if list.is_empty() {
        cols.push(Column {
            type_: "date".to_string(),
            cell: Cell::JsonPath(".metadata.creationTimestamp".to_string()),
            ..age_col()
        });
    }
    cols
}

/// Columns for a built-in resource (`group`, `plural`), e.g. deployments: NAME READY UP-TO-DATE AVAILABLE AGE.
pub fn builtin_columns(group: &str, plural: &str) -> Vec<Column> {
    let s = "string";
    let i = "integer";
    match (group, plural) {
        ("", "namespaces") => vec![
            name_col(),
            col(
                "Status",
                s,
                0,
                "The status of the namespace",
                Cell::Text(&["status.phase"], ""),
            ),
            age_col(),
        ],
        ("", "configmaps") => vec![
            name_col(),
            col(
                "Data",
                s,
                0,
                "Data contains the configuration data.",
                Cell::DataCount,
            ),
            age_col(),
        ],
        ("", "secrets") => vec![
            name_col(),
            col(
                "Type",
                s,
                0,
                "Used to facilitate programmatic handling of secret data.",
                Cell::Text(&["type"], ""),
            ),
            col(
                "Data",
                s,
                0,
                "Data contains the secret data.",
                Cell::DataCount,
            ),
            age_col(),
        ],
        ("", "services") => vec![
            name_col(),
            col(
                "Type",
                s,
                0,
                "type determines how the Service is exposed.",
                Cell::Text(&["spec.type"], "ClusterIP"),
            ),
            col(
                "Cluster-IP",
                s,
                0,
                "clusterIP is the IP address of the service.",
                Cell::Text(&["spec.clusterIP"], "<none>"),
            ),
            col(
                "External-IP",
                s,
                0,
                "List of IP addresses for which nodes in the cluster will also accept traffic for this service.",
                Cell::ServiceExternalIp,
            ),
            col(
                "Port(s)",
                s,
                0,
                "The list of ports that are exposed by this service.",
                Cell::ServicePorts,
            ),
            age_col(),
            col(
                "Selector",
                s,
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
                Cell::MapSelector("spec.selector"),
            ),
        ],
        ("", "pods") => vec![
            name_col(),
            col(
                "Ready",
                s,
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
                Cell::PodReady,
            ),
            col(
                "Status",
                s,
                0,
                "The aggregate status of the containers in this pod.",
                Cell::PodStatus,
            ),
            col(
                "Restarts",
                s,
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                Cell::PodRestarts,
            ),
            age_col(),
            col(
                "IP",
                s,
                1,
                "IP address allocated to the pod. Routable at least within the cluster.",
                Cell::Text(&["status.podIP"], "<none>"),
            ),
            col(
                "Node",
                s,
                1,
                "NodeName is a request to schedule this pod onto a specific node.",
                Cell::Text(&["spec.nodeName"], "<none>"),
            ),
            col(
                "Nominated Node",
                s,
                1,
                "nominatedNodeName is set when this pod preempts other pods on the node.",
                Cell::Text(&["status.nominatedNodeName"], "<none>"),
            ),
            col(
                "Readiness Gates",
                s,
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
                Cell::PodReadinessGates,
            ),
        ],
        ("apps", "deployments") => vec![
            name_col(),
            col(
                "Ready",
                s,
                0,
                "Number of the pod with ready state",
                Cell::ReadyOfReplicas,
            ),
            col(
                "Up-to-date",
                i,
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                Cell::Integer("status.updatedReplicas", 0),
            ),
            col(
                "Available",
                i,
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                Cell::Integer("status.availableReplicas", 0),
            ),
            age_col(),
            col(
                "Containers",
                s,
                1,
                "Names of each container in the template.",
                Cell::Containers("spec.template.spec"),
            ),
            col(
                "Images",
                s,
                1,
                "Images referenced by each container in the template.",
                Cell::Images("spec.template.spec"),
            ),
            col(
                "Selector",
                s,
                1,
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
                Cell::LabelSelector("spec.selector"),
            ),
        ],
        ("apps", "replicasets") => vec![
            name_col(),
            col(
                "Desired",
                i,
                0,
                "Replicas is the number of desired replicas.",
                Cell::Integer("spec.replicas", 1),
            ),
            col(
                "Current",
                i,
                0,
                "Replicas is the most recently observed number of replicas.",
                Cell::Integer("status.replicas", 0),
            ),
            col(
                "Ready",
                i,
                0,
                "readyReplicas is the number of pods targeted by this ReplicaSet with a Ready Condition.",
                Cell::Integer("status.readyReplicas", 0),
            ),
            age_col(),
            col(
                "Containers",
                s,
                1,
                "Names of each container in the template.",
                Cell::Containers("spec.template.spec"),
            ),
            col(
                "Images",
                s,
                1,
                "Images referenced by each container in the template.",
                Cell::Images("spec.template.spec"),
            ),
            col(
                "Selector",
                s,
                1,
                "Selector is a label query over pods that should match the replica count.",
                Cell::LabelSelector("spec.selector"),
            ),
        ],
        ("autoscaling", "horizontalpodautoscalers") => vec![
            name_col(),
            col(
                "Reference",
                s,
                0,
                "reference to scaled resource; horizontal pod autoscaler will learn the current resource consumption and will set the desired number of pods by using its Scale subresource.",
                Cell::HpaReference,
            ),
            col(
                "Targets",
                s,
                0,
                "metrics contains the specifications for which to use to calculate the desired replica count.",
                Cell::HpaTargets,
            ),
            col(
                "MinPods",
                s,
                0,
                "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
                Cell::HpaMinPods,
            ),
            col(
                "MaxPods",
                i,
                0,
                "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
                Cell::Integer("spec.maxReplicas", 0),
            ),
            col(
                "Replicas",
                i,
                0,
                "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.",
                Cell::Integer("status.currentReplicas", 0),
            ),
            age_col(),
        ],
        ("", "events") | ("events.k8s.io", "events") => vec![
            col(
                "Last Seen",
                s,
                0,
                "The time at which the most recent occurrence of this event was recorded.",
                Cell::EventLastSeen,
            ),
            col(
                "Type",
                s,
                0,
                "Type of this event (Normal, Warning), new types could be added in the future",
                Cell::Text(&["type"], ""),
            ),
            col(
                "Reason",
                s,
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                Cell::Text(&["reason"], ""),
            ),
            col(
                "Object",
                s,
                0,
                "The object that this event is about.",
                Cell::EventObject,
            ),
            col(
                "Subobject",
                s,
                1,
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
                Cell::Text(&["involvedObject.fieldPath", "regarding.fieldPath"], ""),
            ),
            col(
                "Source",
                s,
                1,
                "The component reporting this event.",
                Cell::EventSource,
            ),
            col(
                "Message",
                s,
                0,
                "A human-readable description of the status of this operation.",
                Cell::Text(&["message", "note"], ""),
            ),
            col(
                "First Seen",
                s,
                1,
                "The time at which the event was first recorded.",
                Cell::EventFirstSeen,
            ),
            col(
                "Count",
                s,
                1,
                "The number of times this event has occurred.",
                Cell::EventCount,
            ),
            Column {
                priority: 1,
                ..name_col()
            },
        ],
        ("coordination.k8s.io", "leases") => vec![
            name_col(),
            col(
                "Holder",
                s,
                0,
                "holderIdentity contains the identity of the holder of a current lease.",
                Cell::Text(&["spec.holderIdentity"], ""),
            ),
            age_col(),
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => vec![
            name_col(),
            Column {
                type_: "date".to_string(),
                ..col("Created At", "date", 0, AGE_DESC, Cell::CreatedAt)
            },
        ],
        _ => vec![name_col(), age_col()],
    }
}

/// A full `Table` object. `include_object`: `None`, `Metadata` or `Object` (`?includeObject=`);
/// `now_unix` makes ages deterministic in tests.
pub fn render(
    columns: &[Column],
    objects: &[&Value],
    include_object: &str,
    list_meta: Value,
    now_unix: i64,
) -> Value {
    // Parse each printer column's path once per table.
    let paths: Vec<Option<JsonPath>> = columns
        .iter()
        .map(|c| match &c.cell {
            Cell::JsonPath(p) => JsonPath::parse(p).ok(),
            _ => None,
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let cells: Vec<Value> = columns
                .iter()
                .zip(&paths)
                .map(|(c, path)| match (&c.cell, path) {
                    (Cell::JsonPath(_), Some(p)) => jsonpath_cell(&c.type_, p, obj, now_unix),
                    (Cell::JsonPath(_), None) => Value::Null,
                    (cell, _) => builtin_cell(cell, obj, now_unix),
                })
                .collect();
            let mut row = Map::new();
            row.insert("cells".to_string(), Value::Array(cells));
            match include_object {
                "None" => {}
                "Object" => {
                    row.insert("object".to_string(), (*obj).clone());
                }
                _ => {
                    row.insert(
                        "object".to_string(),
                        json!({
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
                        }),
                    );
                }
            }
            Value::Object(row)
        })
        .collect();
    let column_definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": if list_meta.is_object() { list_meta } else { json!({}) },
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

// ---------------------------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------------------------

fn jsonpath_cell(type_: &str, path: &JsonPath, obj: &Value, now: i64) -> Value {
    let Some(value) = path.find(obj).into_iter().next() else {
        return Value::Null;
    };
    match (type_, value) {
        (_, Value::Null) => Value::Null,
        ("string", v) => Value::String(print_value(v)),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.trunc() as i64))
            .map(Value::from)
            .unwrap_or(Value::Null),
        ("number", Value::Number(n)) => n.as_f64().map(Value::from).unwrap_or(Value::Null),
        ("boolean", Value::Bool(b)) => Value::Bool(*b),
        ("date", Value::String(s)) => match parse_time(s) {
            Some(t) => Value::String(human_duration(now.saturating_sub(t))),
            None => Value::String("<invalid>".to_string()),
        },
        _ => Value::Null,
    }
}

/// How kubectl's jsonpath prints one value: strings as-is, maps/arrays as compact JSON.
fn print_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => n
                .as_f64()
                .map(crate::schema::go_float)
                .unwrap_or_else(|| n.to_string()),
        },
        other => other.to_string(),
    }
}

fn at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for p in path.split('.') {
        cur = cur.get(p)?;
    }
    Some(cur)
}

fn str_at<'a>(obj: &'a Value, path: &str) -> &'a str {
    at(obj, path).and_then(Value::as_str).unwrap_or("")
}

fn int_at(obj: &Value, path: &str) -> Option<i64> {
    at(obj, path).and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
}

fn array_at<'a>(obj: &'a Value, path: &str) -> &'a [Value] {
    at(obj, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn text(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

fn age_of(obj: &Value, path: &str, now: i64) -> String {
    match parse_time(str_at(obj, path)) {
        Some(t) => human_duration(now.saturating_sub(t)),
        None => "<unknown>".to_string(),
    }
}

fn builtin_cell(cell: &Cell, obj: &Value, now: i64) -> Value {
    match cell {
        Cell::JsonPath(p) => match JsonPath::parse(p) {
            Ok(p) => jsonpath_cell("string", &p, obj, now),
            Err(_) => Value::Null,
        },
        Cell::Name => text(str_at(obj, "metadata.name")),
        Cell::Age => text(age_of(obj, "metadata.creationTimestamp", now)),
        Cell::CreatedAt => match parse_time(str_at(obj, "metadata.creationTimestamp")) {
            Some(t) => text(
                jiff::Timestamp::from_second(t)
                    .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default(),
            ),
            None => text("<unknown>"),
        },
        Cell::ReadyOfReplicas => text(format!(
            "{}/{}",
            int_at(obj, "status.readyReplicas").unwrap_or(0),
            int_at(obj, "spec.replicas").unwrap_or(1)
        )),
        Cell::Text(paths, fallback) => {
            let found = paths.iter().find_map(|p| match at(obj, p) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.trim().to_string()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            });
            text(found.unwrap_or_else(|| fallback.to_string()))
        }
        Cell::Integer(path, fallback) => Value::from(int_at(obj, path).unwrap_or(*fallback)),
        Cell::DataCount => {
            let n = |p: &str| at(obj, p).and_then(Value::as_object).map_or(0, Map::len);
            Value::from((n("data") + n("binaryData")) as i64)
        }
        Cell::MapSelector(path) => text(format_label_map(at(obj, path))),
        Cell::LabelSelector(path) => {
            let sel = at(obj, path).cloned().unwrap_or(Value::Null);
            let s = match crate::selector::LabelSelector::from_api(&sel) {
                Ok(s) => s.to_string(),
                Err(_) => "<error>".to_string(),
            };
            text(if s.is_empty() {
                "<none>".to_string()
            } else {
                s
            })
        }
        Cell::Containers(spec) => text(container_field(obj, spec, "name")),
        Cell::Images(spec) => text(container_field(obj, spec, "image")),
        Cell::ServiceExternalIp => text(service_external_ip(obj)),
        Cell::ServicePorts => text(service_ports(obj)),
        Cell::PodReady => {
            let total = array_at(obj, "spec.containers").len();
            let ready = array_at(obj, "status.containerStatuses")
                .iter()
                .filter(|c| {
                    c.get("ready") == Some(&Value::Bool(true))
                        && c.pointer("/state/running").is_some()
                })
                .count();
            text(format!("{ready}/{total}"))
        }
        Cell::PodStatus => text(pod_status(obj)),
        Cell::PodRestarts => text(pod_restarts(obj, now)),
        Cell::PodReadinessGates => {
            let gates = array_at(obj, "spec.readinessGates");
            if gates.is_empty() {
                text("<none>")
            } else {
                let conditions = array_at(obj, "status.conditions");
                let true_gates = gates
                    .iter()
                    .filter(|g| {
                        let t = g.get("conditionType");
                        conditions
                            .iter()
                            .any(|c| c.get("type") == t && c.get("status") == Some(&json!("True")))
                    })
                    .count();
                text(format!("{true_gates}/{}", gates.len()))
            }
        }
        Cell::HpaReference => text(format!(
            "{}/{}",
            str_at(obj, "spec.scaleTargetRef.kind"),
            str_at(obj, "spec.scaleTargetRef.name")
        )),
        Cell::HpaTargets => text(hpa_targets(obj)),
        Cell::HpaMinPods => text(match int_at(obj, "spec.minReplicas") {
            Some(n) => n.to_string(),
            None => "<unset>".to_string(),
        }),
        Cell::EventLastSeen => text(event_last_seen(obj, now)),
        Cell::EventFirstSeen => text(event_first_seen(obj, now)),
        Cell::EventObject => {
            let r = obj.get("involvedObject").or_else(|| obj.get("regarding"));
            let kind = r
                .and_then(|r| r.get("kind"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase();
            match r
                .and_then(|r| r.get("name"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                Some(name) => text(format!("{kind}/{name}")),
                None => text(kind),
            }
        }
        Cell::EventSource => {
            let (component, host) = match str_at(obj, "source.component") {
                "" => (
                    first_str(
                        obj,
                        &[
                            "reportingController",
                            "reportingComponent",
                            "deprecatedSource.component",
                        ],
                    ),
                    first_str(obj, &["reportingInstance", "deprecatedSource.host"]),
                ),
                c => (c, str_at(obj, "source.host")),
            };
            text(if host.is_empty() {
                component.to_string()
            } else {
                format!("{component}, {host}")
            })
        }
        Cell::EventCount => {
            let count = int_at(obj, "series.count")
                .or_else(|| int_at(obj, "count"))
                .or_else(|| int_at(obj, "deprecatedCount"))
                .unwrap_or(1);
            Value::from(count)
        }
    }
}

fn first_str<'a>(obj: &'a Value, paths: &[&str]) -> &'a str {
    paths
        .iter()
        .map(|p| str_at(obj, p))
        .find(|s| !s.is_empty())
        .unwrap_or("")
}

fn format_label_map(v: Option<&Value>) -> String {
    let pairs: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    }
}

fn container_field(obj: &Value, spec: &str, field: &str) -> String {
    array_at(obj, &format!("{spec}.containers"))
        .iter()
        .map(|c| c.get(field).and_then(Value::as_str).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(",")
}

fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = array_at(svc, "spec.externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match str_at(svc, "spec.type") {
        "" | "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let mut ips: Vec<&str> = array_at(svc, "status.loadBalancer.ingress")
                .iter()
                .filter_map(|i| {
                    i.get("ip")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .or_else(|| i.get("hostname").and_then(Value::as_str))
                })
                .collect();
            ips.extend(external);
            if ips.is_empty() {
                "<pending>".to_string()
            } else {
                ips.join(",")
            }
        }
        "ExternalName" => str_at(svc, "spec.externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service_ports(svc: &Value) -> String {
    let pieces: Vec<String> = array_at(svc, "spec.ports")
        .iter()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0) {
                Some(node) => format!("{port}:{node}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    if pieces.is_empty() {
        "<none>".to_string()
    } else {
        pieces.join(",")
    }
}

/// The STATUS column of `kubectl get pods`, following upstream's printPod.
fn pod_status(pod: &Value) -> String {
    let mut reason = str_at(pod, "status.phase").to_string();
    if !str_at(pod, "status.reason").is_empty() {
        reason = str_at(pod, "status.reason").to_string();
    }
    let init_specs = array_at(pod, "spec.initContainers").len();
    let mut initializing = false;
    for (i, c) in array_at(pod, "status.initContainerStatuses")
        .iter()
        .enumerate()
    {
        let terminated = c.pointer("/state/terminated");
        let exit = terminated
            .and_then(|t| t.get("exitCode"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if terminated.is_some() && exit == 0 {
            continue;
        }
        initializing = true;
        reason = if let Some(t) = terminated {
            match t
                .get("reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                Some(r) => format!("Init:{r}"),
                None => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                    Some(sig) => format!("Init:Signal:{sig}"),
                    None => format!("Init:ExitCode:{exit}"),
                },
            }
        } else {
            match c
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty() && *r != "PodInitializing")
            {
                Some(r) => format!("Init:{r}"),
                None => format!("Init:{i}/{init_specs}"),
            }
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in array_at(pod, "status.containerStatuses").iter().rev() {
            let waiting = c
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty());
            let terminated = c.pointer("/state/terminated");
            if let Some(w) = waiting {
                reason = w.to_string();
            } else if let Some(t) = terminated {
                reason = match t
                    .get("reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                {
                    Some(r) => r.to_string(),
                    None => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                        Some(sig) => format!("Signal:{sig}"),
                        None => format!(
                            "ExitCode:{}",
                            t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                        ),
                    },
                };
            } else if c.get("ready") == Some(&Value::Bool(true))
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            let ready = array_at(pod, "status.conditions").iter().any(|c| {
                c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True"))
            });
            reason = if ready { "Running" } else { "NotReady" }.to_string();
        }
    }
    if at(pod, "metadata.deletionTimestamp").is_some_and(|v| !v.is_null()) {
        reason = if str_at(pod, "status.reason") == "NodeLost" {
            "Unknown"
        } else {
            "Terminating"
        }
        .to_string();
    }
    reason
}

fn pod_restarts(pod: &Value, now: i64) -> String {
    let statuses = array_at(pod, "status.containerStatuses")
        .iter()
        .chain(array_at(pod, "status.initContainerStatuses"));
    let mut restarts = 0;
    let mut last: Option<i64> = None;
    for c in statuses {
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        if let Some(t) = c
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(parse_time)
        {
            last = Some(last.map_or(t, |l| l.max(t)));
        }
    }
    match last {
        Some(t) if restarts > 0 => {
            format!("{restarts} ({} ago)", human_duration(now.saturating_sub(t)))
        }
        _ => restarts.to_string(),
    }
}

fn pick<'a>(v: Option<&'a Value>, k: &str) -> Option<&'a Value> {
    v.and_then(|v| v.get(k))
}

fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// TARGETS of `kubectl get hpa` (autoscaling/v2 shape), as upstream's formatHPAMetrics.
fn hpa_targets(hpa: &Value) -> String {
    let specs = array_at(hpa, "spec.metrics");
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let statuses = array_at(hpa, "status.currentMetrics");
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let status = statuses.get(i);
            let kind = spec.get("type").and_then(Value::as_str).unwrap_or("");
            let src_key = match kind {
                "Resource" => "resource",
                "ContainerResource" => "containerResource",
                "Pods" => "pods",
                "Object" => "object",
                "External" => "external",
                _ => return "<unknown type>".to_string(),
            };
            let src = spec.get(src_key);
            let target = src.and_then(|s| s.get("target"));
            let current = status
                .and_then(|s| s.get(src_key))
                .and_then(|s| s.get("current"));
            match kind {
                "Resource" | "ContainerResource" => {
                    let name = src
                        .and_then(|s| s.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if let Some(avg) = pick(target, "averageValue") {
                        format!(
                            "{name}: {}/{}",
                            quantity(pick(current, "averageValue")),
                            quantity(Some(avg))
                        )
                    } else {
                        let cur = pick(current, "averageUtilization")
                            .and_then(Value::as_i64)
                            .map_or("<unknown>".to_string(), |u| format!("{u}%"));
                        let tgt = pick(target, "averageUtilization")
                            .and_then(Value::as_i64)
                            .map_or("<auto>".to_string(), |u| format!("{u}%"));
                        format!("{name}: {cur}/{tgt}")
                    }
                }
                "Pods" => format!(
                    "{}/{}",
                    quantity(pick(current, "averageValue")),
                    quantity(pick(target, "averageValue"))
                ),
                _ => {
                    // Object and External: value targets, or average values.
                    if let Some(v) = pick(target, "value") {
                        format!("{}/{}", quantity(pick(current, "value")), quantity(Some(v)))
                    } else {
                        format!(
                            "{}/{} (avg)",
                            quantity(pick(current, "averageValue")),
                            quantity(pick(target, "averageValue"))
                        )
                    }
                }
            }
        })
        .collect();
    if list.len() > 2 {
        format!("{} + {} more...", list[..2].join(", "), list.len() - 2)
    } else {
        list.join(", ")
    }
}

fn event_first_seen(ev: &Value, now: i64) -> String {
    for path in ["firstTimestamp", "deprecatedFirstTimestamp", "eventTime"] {
        if let Some(t) = parse_time(str_at(ev, path)) {
            return human_duration(now.saturating_sub(t));
        }
    }
    "<unknown>".to_string()
}

fn event_last_seen(ev: &Value, now: i64) -> String {
    if let Some(t) = parse_time(str_at(ev, "series.lastObservedTime")) {
        return human_duration(now.saturating_sub(t));
    }
    for path in ["lastTimestamp", "deprecatedLastTimestamp"] {
        if let Some(t) = parse_time(str_at(ev, path)) {
            return human_duration(now.saturating_sub(t));
        }
    }
    event_first_seen(ev, now)
}

/// Unix seconds of an RFC 3339 timestamp.
fn parse_time(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// apimachinery's `duration.HumanDuration`, on whole seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    /// 2024-01-01T00:00:00Z.
    const T0: i64 = 1_704_067_200;

    fn names(cols: &[Column]) -> Vec<&str> {
        cols.iter()
            .filter(|c| c.priority == 0)
            .map(|c| c.name.as_str())
            .collect()
    }

    fn cells(cols: &[Column], obj: &Value, now: i64) -> Vec<Value> {
        let t = render(cols, &[obj], "None", json!({}), now);
        t["rows"][0]["cells"].as_array().unwrap().clone()
    }

    /// The cells of the priority-0 columns, as kubectl shows them without `-o wide`.
    fn visible(cols: &[Column], obj: &Value, now: i64) -> Vec<Value> {
        cols.iter()
            .zip(cells(cols, obj, now))
            .filter(|(c, _)| c.priority == 0)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn human_duration_table() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (302, "5m2s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600 + 600, "3h10m"),
            (5 * 3600, "5h"),
            (30 * 3600, "30h"),
            (51 * 3600, "2d3h"),
            (3 * 86400, "3d"),
            (400 * 86400, "400d"),
            (740 * 86400, "2y10d"),
            (730 * 86400, "2y"),
            (3000 * 86400, "8y"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(s), want, "{s}s");
        }
    }

    #[test]
    fn crd_columns_as_upstream() {
        let printer = json!([
            {"jsonPath": ".status.phase", "name": "Status", "type": "string"},
            {"jsonPath": ".status.canaryWeight", "name": "Weight", "type": "string"},
            {"jsonPath": ".spec.suspend", "name": "Suspended", "type": "boolean", "priority": 1},
            {"jsonPath": ".status.failedChecks", "name": "FailedChecks", "type": "integer", "priority": 1},
            {"jsonPath": ".spec.analysis.stepWeights", "name": "StepWeights", "type": "string", "priority": 1},
            {"jsonPath": ".status.lastTransitionTime", "name": "LastTransitionTime", "type": "string"},
            {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"},
            {"jsonPath": ".spec.missing", "name": "Missing", "type": "string"},
            {"jsonPath": ".spec.analysis.threshold", "name": "Threshold", "type": "number", "priority": 1},
        ]);
        let cols = crd_columns(&printer);
        assert_eq!(
            names(&cols),
            vec![
                "Name",
                "Status",
                "Weight",
                "LastTransitionTime",
                "Age",
                "Missing"
            ],
            "no AGE is added when the CRD declares columns"
        );
        assert_eq!(
            cols[1].description,
            "Custom resource definition column (in JSONPath format): .status.phase"
        );
        let canary = json!({
            "metadata": {"name": "podinfo", "namespace": "test", "creationTimestamp": "2023-12-31T23:55:00Z"},
            "spec": {"suspend": false, "analysis": {"stepWeights": [10, 20], "threshold": 5}},
            "status": {"phase": "Progressing", "canaryWeight": 10, "failedChecks": 1, "lastTransitionTime": "2023-12-31T23:59:00Z"}
        });
        assert_eq!(
            cells(&cols, &canary, T0),
            vec![
                json!("podinfo"),
                json!("Progressing"),
                json!("10"),
                json!(false),
                json!(1),
                json!("[10,20]"),
                json!("2023-12-31T23:59:00Z"),
                json!("5m"),
                Value::Null,
                json!(5.0),
            ]
        );
        // Type mismatches give null, unparsable dates <invalid>.
        let odd = json!({"metadata": {"name": "x", "creationTimestamp": "yesterday"}, "spec": {"suspend": "no"}, "status": {"failedChecks": "one"}});
        let got = cells(&cols, &odd, T0);
        assert_eq!(got[3], Value::Null);
        assert_eq!(got[4], Value::Null);
        assert_eq!(got[7], json!("<invalid>"));
    }

    #[test]
    fn crd_without_printer_columns_gets_age() {
        for printer in [json!(null), json!([]), json!({"name": "v1"})] {
            let cols = crd_columns(&printer);
            assert_eq!(names(&cols), vec!["Name", "Age"]);
            assert_eq!(cols[1].type_, "date");
            let obj =
                json!({"metadata": {"name": "a", "creationTimestamp": "2023-12-31T22:00:00Z"}});
            assert_eq!(cells(&cols, &obj, T0), vec![json!("a"), json!("120m")]);
        }
        let cols = crd_columns(
            &json!({"additionalPrinterColumns": [{"name": "P", "type": "string", "jsonPath": ".p"}]}),
        );
        assert_eq!(names(&cols), vec!["Name", "P"]);
    }

    #[test]
    fn include_object_modes() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}, "data": {"a": "1"}});
        let cols = builtin_columns("", "configmaps");
        let t = render(&cols, &[&obj], "None", json!({"resourceVersion": "7"}), T0);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"], json!({"resourceVersion": "7"}));
        assert!(t["rows"][0].get("object").is_none());
        assert_eq!(
            t["columnDefinitions"][0],
            json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DESC, "priority": 0})
        );
        for mode in ["Metadata", "", "bogus"] {
            let t = render(&cols, &[&obj], mode, Value::Null, T0);
            assert_eq!(
                t["rows"][0]["object"],
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "c", "namespace": "n"}})
            );
            assert_eq!(t["metadata"], json!({}));
        }
        let t = render(&cols, &[&obj], "Object", json!({}), T0);
        assert_eq!(t["rows"][0]["object"], obj);
        let empty = render(&cols, &[], "Object", json!({}), T0);
        assert_eq!(empty["rows"], json!([]));
    }

    /// (group, plural, object, visible column names, visible cells)
    type BuiltinCase = (
        &'static str,
        &'static str,
        Value,
        Vec<&'static str>,
        Vec<Value>,
    );

    #[test]
    fn builtin_tables() {
        let created = "2023-12-31T23:00:00Z";
        let cases: Vec<BuiltinCase> = vec![
            (
                "",
                "namespaces",
                json!({"metadata": {"name": "test", "creationTimestamp": created}, "status": {"phase": "Active"}}),
                vec!["Name", "Status", "Age"],
                vec![json!("test"), json!("Active"), json!("60m")],
            ),
            (
                "",
                "configmaps",
                json!({"metadata": {"name": "c", "creationTimestamp": created}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
                vec!["Name", "Data", "Age"],
                vec![json!("c"), json!(3), json!("60m")],
            ),
            (
                "",
                "secrets",
                json!({"metadata": {"name": "s", "creationTimestamp": created}, "type": "Opaque", "data": {"a": "MQ=="}}),
                vec!["Name", "Type", "Data", "Age"],
                vec![json!("s"), json!("Opaque"), json!(1), json!("60m")],
            ),
            (
                "",
                "services",
                json!({"metadata": {"name": "podinfo", "creationTimestamp": created},
                "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.7", "ports": [{"port": 9898, "protocol": "TCP"}, {"port": 80, "nodePort": 30080}], "selector": {"app": "podinfo"}}}),
                vec![
                    "Name",
                    "Type",
                    "Cluster-IP",
                    "External-IP",
                    "Port(s)",
                    "Age",
                ],
                vec![
                    json!("podinfo"),
                    json!("ClusterIP"),
                    json!("10.0.0.7"),
                    json!("<none>"),
                    json!("9898/TCP,80:30080/TCP"),
                    json!("60m"),
                ],
            ),
            (
                "",
                "services",
                json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}}),
                vec![
                    "Name",
                    "Type",
                    "Cluster-IP",
                    "External-IP",
                    "Port(s)",
                    "Age",
                ],
                vec![
                    json!("lb"),
                    json!("LoadBalancer"),
                    json!("<none>"),
                    json!("<pending>"),
                    json!("<none>"),
                    json!("<unknown>"),
                ],
            ),
            (
                "",
                "pods",
                json!({"metadata": {"name": "p", "creationTimestamp": created},
                "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                "status": {"phase": "Running", "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": "2023-12-31T23:50:00Z"}}},
                    {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
                vec!["Name", "Ready", "Status", "Restarts", "Age"],
                vec![
                    json!("p"),
                    json!("1/2"),
                    json!("CrashLoopBackOff"),
                    json!("2 (10m ago)"),
                    json!("60m"),
                ],
            ),
            (
                "",
                "pods",
                json!({"metadata": {"name": "p", "creationTimestamp": created, "deletionTimestamp": created},
                "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}}),
                vec!["Name", "Ready", "Status", "Restarts", "Age"],
                vec![
                    json!("p"),
                    json!("0/1"),
                    json!("Terminating"),
                    json!("0"),
                    json!("60m"),
                ],
            ),
            (
                "apps",
                "deployments",
                json!({"metadata": {"name": "podinfo", "creationTimestamp": created},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "podinfo"}}, "template": {"spec": {"containers": [{"name": "podinfod", "image": "ghcr.io/stefanprodan/podinfo:6.0.0"}]}}},
                "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}}),
                vec!["Name", "Ready", "Up-to-date", "Available", "Age"],
                vec![
                    json!("podinfo"),
                    json!("1/2"),
                    json!(2),
                    json!(1),
                    json!("60m"),
                ],
            ),
            (
                "apps",
                "deployments",
                json!({"metadata": {"name": "fresh"}}),
                vec!["Name", "Ready", "Up-to-date", "Available", "Age"],
                vec![
                    json!("fresh"),
                    json!("0/1"),
                    json!(0),
                    json!(0),
                    json!("<unknown>"),
                ],
            ),
            (
                "apps",
                "replicasets",
                json!({"metadata": {"name": "rs", "creationTimestamp": created}, "spec": {"replicas": 3}, "status": {"replicas": 3, "readyReplicas": 2}}),
                vec!["Name", "Desired", "Current", "Ready", "Age"],
                vec![json!("rs"), json!(3), json!(3), json!(2), json!("60m")],
            ),
            (
                "autoscaling",
                "horizontalpodautoscalers",
                json!({"metadata": {"name": "h", "creationTimestamp": created},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "podinfo"}, "minReplicas": 2, "maxReplicas": 4,
                         "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 99}}}]},
                "status": {"currentReplicas": 2}}),
                vec![
                    "Name",
                    "Reference",
                    "Targets",
                    "MinPods",
                    "MaxPods",
                    "Replicas",
                    "Age",
                ],
                vec![
                    json!("h"),
                    json!("Deployment/podinfo"),
                    json!("cpu: <unknown>/99%"),
                    json!("2"),
                    json!(4),
                    json!(2),
                    json!("60m"),
                ],
            ),
            (
                "",
                "events",
                json!({"metadata": {"name": "podinfo.1"}, "type": "Normal", "reason": "Synced", "message": "Advance podinfo.test canary weight 10 ",
                "involvedObject": {"kind": "Canary", "name": "podinfo"}, "lastTimestamp": "2023-12-31T23:59:30Z", "count": 3}),
                vec!["Last Seen", "Type", "Reason", "Object", "Message"],
                vec![
                    json!("30s"),
                    json!("Normal"),
                    json!("Synced"),
                    json!("canary/podinfo"),
                    json!("Advance podinfo.test canary weight 10"),
                ],
            ),
            (
                "events.k8s.io",
                "events",
                json!({"metadata": {"name": "e"}, "type": "Warning", "reason": "Failed", "note": "boom",
                "regarding": {"kind": "Deployment", "name": "d"}, "eventTime": "2023-12-31T23:58:00.000000Z"}),
                vec!["Last Seen", "Type", "Reason", "Object", "Message"],
                vec![
                    json!("2m"),
                    json!("Warning"),
                    json!("Failed"),
                    json!("deployment/d"),
                    json!("boom"),
                ],
            ),
            (
                "coordination.k8s.io",
                "leases",
                json!({"metadata": {"name": "flagger", "creationTimestamp": created}, "spec": {"holderIdentity": "pod-1"}}),
                vec!["Name", "Holder", "Age"],
                vec![json!("flagger"), json!("pod-1"), json!("60m")],
            ),
            (
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                json!({"metadata": {"name": "canaries.flagger.app", "creationTimestamp": created}}),
                vec!["Name", "Created At"],
                vec![json!("canaries.flagger.app"), json!("2023-12-31T23:00:00Z")],
            ),
            (
                "example.com",
                "widgets",
                json!({"metadata": {"name": "w", "creationTimestamp": created}}),
                vec!["Name", "Age"],
                vec![json!("w"), json!("60m")],
            ),
        ];
        for (group, plural, obj, want_cols, want_cells) in cases {
            let cols = builtin_columns(group, plural);
            assert_eq!(names(&cols), want_cols, "{plural}");
            assert_eq!(visible(&cols, &obj, T0), want_cells, "{plural}: {obj}");
            assert_eq!(
                cells(&cols, &obj, T0).len(),
                cols.len(),
                "one cell per column for {plural}"
            );
        }
    }

    #[test]
    fn wide_columns() {
        let cols = builtin_columns("apps", "deployments");
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "x"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]},
            "template": {"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]}}}});
        let all = cells(&cols, &d, T0);
        assert_eq!(
            &all[5..],
            &[json!("a,b"), json!("a:1,b:2"), json!("app=x,tier in (a)")]
        );
        let svc = builtin_columns("", "services");
        let s = json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "x", "b": "y"}}});
        assert_eq!(cells(&svc, &s, T0)[6], json!("app=x,b=y"));
        let hpa = json!({"metadata": {"name": "h"}, "spec": {"metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"averageUtilization": 80}}},
            {"type": "Pods", "pods": {"target": {"averageValue": "1k"}}},
            {"type": "External", "external": {"target": {"value": "5"}}}]},
            "status": {"currentMetrics": [{"type": "Resource", "resource": {"current": {"averageUtilization": 50}}}]}});
        assert_eq!(
            cells(
                &builtin_columns("autoscaling", "horizontalpodautoscalers"),
                &hpa,
                T0
            )[2],
            json!("cpu: 50%/80%, <unknown>/1k + 1 more...")
        );
    }

    proptest! {
        #[test]
        fn render_never_panics(name in "\\PC{0,10}", ts in "\\PC{0,25}", v in any::<i64>(), now in any::<i64>()) {
            let obj = json!({"metadata": {"name": name, "creationTimestamp": ts}, "status": {"phase": v, "readyReplicas": v},
                             "spec": {"replicas": "x", "ports": [{"port": v}], "metrics": [{"type": "Resource"}]}});
            let mut all = vec![];
            for (g, p) in [("", "pods"), ("", "services"), ("apps", "deployments"), ("autoscaling", "horizontalpodautoscalers"), ("", "events"), ("x", "y")] {
                all.extend(builtin_columns(g, p));
            }
            all.extend(crd_columns(&json!([{"name": "a", "type": "date", "jsonPath": ".metadata.creationTimestamp"}, {"name": "b", "type": "integer", "jsonPath": ".status.phase"}])));
            let t = render(&all, &[&obj], "Object", json!({}), now);
            prop_assert_eq!(t["rows"][0]["cells"].as_array().map(Vec::len), Some(all.len()));
        }
    }
}
