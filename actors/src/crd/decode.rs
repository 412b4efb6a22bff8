//! Reading Flagger's custom resources from the JSON the API server sends, one object at a time.
//!
//! Contract:
//! - The API server validates a Canary against the CRD's structural schema, but that schema cannot
//!   say everything the Rust types need: it does not check `int32` ranges (`maxWeight:
//!   4294967296` is stored), objects written under an older or a hand-edited CRD are served as
//!   stored, and an upstream Flagger CRD may be installed. Such an object must never fail a whole
//!   LIST or watch (kube-runtime's reflector would then hide every Canary of the cluster).
//! - [`decode`] returns the typed object, or an [`Undecodable`] that names the first field that
//!   does not fit as a JSON path (`spec.analysis.maxWeight`, `spec.analysis.stepWeights[2]`) with
//!   serde's reason. It never panics.
//! - A Canary's `status` never makes a Canary undecodable (see [`super::CanaryStatus`]); only
//!   `spec` can.

use std::fmt;

use kube::api::ObjectMeta;
use serde::de::DeserializeOwned;

use super::Canary;

/// An object whose JSON does not fit the Rust type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// JSON path of the offending field, e.g. `spec.analysis.maxWeight`.
    pub field: String,
    /// serde's reason, e.g. `invalid value: integer `4294967296`, expected i32`.
    pub problem: String,
}

impl fmt::Display for Undecodable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for Undecodable {}

/// Decodes `value` into `K`, naming the field on failure.
pub fn decode<K: DeserializeOwned>(value: serde_json::Value) -> Result<K, Undecodable> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        // The root itself prints as ".".
        let path = Some(e.path().to_string()).filter(|p| p != ".");
        let problem = e.into_inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        let missing = problem
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
            .map(str::to_owned);
        match (path, missing) {
            (Some(parent), Some(name)) => Undecodable {
                field: format!("{parent}.{name}"),
                problem: "is required".to_owned(),
            },
            (None, Some(name)) => Undecodable {
                field: name,
                problem: "is required".to_owned(),
            },
            (path, None) => Undecodable {
                field: path.unwrap_or_else(|| "(object)".to_owned()),
                problem,
            },
        }
    })
}

/// Annotation that marks a placeholder (in memory only: the operator never writes a Canary's
/// metadata from a placeholder) and carries why the Canary could not be decoded.
const UNDECODABLE_ANNOTATION: &str = "flagger-rs.internal/undecodable";

/// What the operator keeps of a Canary it cannot decode: its metadata and status (so events and
/// the `Valid=False` condition can be written on it), an empty spec that nothing acts on, and the
/// reason, read back with [`undecodable_of`].
pub fn canary_placeholder(
    mut metadata: ObjectMeta,
    raw: &serde_json::Value,
    error: &Undecodable,
) -> Canary {
    let reason = serde_json::json!({"field": error.field, "problem": error.problem}).to_string();
    metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(UNDECODABLE_ANNOTATION.to_owned(), reason);
    let mut canary = Canary::new("", Default::default());
    canary.metadata = metadata;
    canary.status = raw
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    canary
}

/// The Canary of an API response: decoded, or a placeholder naming the field that does not fit.
pub fn canary_or_placeholder(raw: serde_json::Value) -> Canary {
    match decode::<Canary>(raw.clone()) {
        Ok(canary) => canary,
        Err(error) => {
            let metadata = raw
                .get("metadata")
                .and_then(|m| serde_json::from_value(m.clone()).ok())
                .unwrap_or_default();
            canary_placeholder(metadata, &raw, &error)
        }
    }
}

/// Why `canary` is a placeholder for an object that could not be decoded; `None` for a real one.
pub fn undecodable_of(canary: &Canary) -> Option<Undecodable> {
    if canary.spec != super::CanarySpec::default() {
        return None;
    }
    let raw = canary
        .metadata
        .annotations
        .as_ref()?
        .get(UNDECODABLE_ANNOTATION)?;
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    Some(Undecodable {
        field: v["field"].as_str()?.to_owned(),
        problem: v["problem"].as_str()?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn canary(spec: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": spec,
        })
    }

    #[test]
    fn a_value_beyond_int32_names_its_field() {
        let err = decode::<Canary>(canary(json!({
            "targetRef": {"kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "maxWeight": 4_294_967_296_i64, "stepWeight": 5}
        })))
        .unwrap_err();
        assert_eq!(err.field, "spec.analysis.maxWeight");
        assert!(err.problem.contains("4294967296"), "{err}");
    }

    #[test]
    fn list_items_and_legacy_fields_are_named_with_their_index() {
        let err = decode::<Canary>(canary(json!({
            "targetRef": {"kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "canaryAnalysis": {"stepWeights": [10, 20, "thirty"]}
        })))
        .unwrap_err();
        assert_eq!(err.field, "spec.canaryAnalysis.stepWeights[2]");
    }

    #[test]
    fn a_missing_required_field_is_named_itself() {
        let mut value = canary(json!({}));
        value.as_object_mut().unwrap().remove("spec");
        let err = decode::<Canary>(value).unwrap_err();
        assert_eq!(err.field, "spec");
        assert_eq!(err.problem, "is required");
    }

    #[test]
    fn a_bad_status_never_makes_a_canary_undecodable() {
        let mut value = canary(json!({"service": {"port": 9898}}));
        value["status"] = json!({
            "phase": "Exploded",
            "canaryWeight": 1e12,
            "failedChecks": 2,
            "conditions": [{"type": "Promoted", "status": "True"}, {"type": 7}],
            "lastTransitionTime": "not a time"
        });
        let c: Canary = decode(value).unwrap();
        let status = c.status.unwrap();
        assert_eq!(status.phase, None);
        assert_eq!(status.canary_weight, None);
        assert_eq!(status.failed_checks, Some(2));
        assert_eq!(status.conditions.unwrap().len(), 1);
        assert_eq!(status.last_transition_time, None);
    }

    #[test]
    fn placeholder_keeps_metadata_status_and_the_reason() {
        let raw = json!({"status": {"phase": "Progressing", "canaryWeight": 10}});
        let meta = ObjectMeta {
            name: Some("podinfo".into()),
            namespace: Some("test".into()),
            ..Default::default()
        };
        let error = Undecodable {
            field: "spec.service.port".into(),
            problem: "invalid value".into(),
        };
        let c = canary_placeholder(meta, &raw, &error);
        assert_eq!(c.metadata.name.as_deref(), Some("podinfo"));
        assert_eq!(c.spec, Default::default());
        assert_eq!(c.status.as_ref().unwrap().canary_weight, Some(10));
        assert_eq!(undecodable_of(&c), Some(error));
        // A real Canary is never taken for a placeholder, whatever its annotations.
        let mut real = c.clone();
        real.spec.suspend = Some(true);
        assert_eq!(undecodable_of(&real), None);
    }
}
