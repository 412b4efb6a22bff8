//! `meta.k8s.io/v1` Table rendering (owner: testbed-pure helper). PLACEHOLDER SIGNATURES.
use serde_json::Value;

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

/// Columns for a CRD version: NAME, its `additionalPrinterColumns` (AGE only if none is declared,
/// as the real server does... see module docs).
pub fn crd_columns(_printer_columns: &Value) -> Vec<Column> {
    todo!("testbed-pure")
}

/// Columns for a built-in resource (`group`, `plural`), e.g. deployments: NAME READY UP-TO-DATE AVAILABLE AGE.
pub fn builtin_columns(_group: &str, _plural: &str) -> Vec<Column> {
    todo!("testbed-pure")
}

/// A full `Table` object. `include_object`: `None`, `Metadata` or `Object` (`?includeObject=`);
/// `now_unix` makes ages deterministic in tests.
pub fn render(_columns: &[Column], _objects: &[&Value], _include_object: &str, _list_meta: Value, _now_unix: i64) -> Value {
    todo!("testbed-pure")
}
