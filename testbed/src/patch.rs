//! PATCH semantics (owner: testbed-pure helper). PLACEHOLDER SIGNATURES: bodies are being written.
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document is malformed (400 BadRequest).
    #[error("{0}")]
    Invalid(String),
    /// A json-patch `test` op failed or a path did not exist (422 Invalid / 409 in some servers).
    #[error("{0}")]
    Failed(String),
}

/// RFC 7386 JSON merge patch (`application/merge-patch+json`).
pub fn merge_patch(_target: &mut Value, _patch: &Value) {
    todo!("testbed-pure")
}

/// RFC 6902 JSON patch (`application/json-patch+json`), all ops incl. `test`; atomic (target is
/// unchanged on error).
pub fn json_patch(_target: &mut Value, _patch: &Value) -> Result<(), PatchError> {
    todo!("testbed-pure")
}

/// Strategic merge patch (`application/strategic-merge-patch+json`), the subset kubectl needs.
pub fn strategic_merge_patch(_target: &mut Value, _patch: &Value) -> Result<(), PatchError> {
    todo!("testbed-pure")
}

/// Server-side apply (`application/apply-patch+yaml`, body may be YAML or JSON), approximated as
/// create-or-merge: see the module docs for what is approximated.
pub fn apply_patch(_target: &mut Value, _patch: &Value) -> Result<(), PatchError> {
    todo!("testbed-pure")
}
