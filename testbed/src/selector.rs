//! Label and field selectors (owner: testbed-pure helper). PLACEHOLDER SIGNATURES: bodies are being written.
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// A parsed label selector: full Kubernetes syntax (`a=b,c!=d,e in (x,y),f notin (z),g,!h`),
/// or built from an API `LabelSelector` object (`matchLabels` / `matchExpressions`).
#[derive(Debug, Clone, Default)]
pub struct LabelSelector {}

impl LabelSelector {
    pub fn parse(_s: &str) -> Result<Self, SelectorError> {
        todo!("testbed-pure")
    }
    pub fn from_api(_selector: &Value) -> Result<Self, SelectorError> {
        todo!("testbed-pure")
    }
    pub fn matches(&self, _labels: &BTreeMap<String, String>) -> bool {
        todo!("testbed-pure")
    }
    /// Matches against `metadata.labels` of an object (missing labels = empty map).
    pub fn matches_object(&self, _obj: &Value) -> bool {
        todo!("testbed-pure")
    }
}

/// A parsed field selector (`metadata.name=x,metadata.namespace!=y,involvedObject.kind=Canary`):
/// `=`, `==`, `!=` on any dotted path; a missing field compares as "".
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {}

impl FieldSelector {
    pub fn parse(_s: &str) -> Result<Self, SelectorError> {
        todo!("testbed-pure")
    }
    pub fn matches(&self, _obj: &Value) -> bool {
        todo!("testbed-pure")
    }
}
