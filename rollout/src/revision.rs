//! Revision hashes: what identifies "a new version" of the target.
//!
//! A revision is the SHA-256 of a canonical JSON document (object keys sorted at every level,
//! no whitespace) holding the target's pod template and the checksums of the ConfigMaps/Secrets it
//! references, shortened to 16 hex characters. Canonical means independent of key order in the
//! input (the cluster, serde_json's `preserve_order` feature), so the value is stable across
//! restarts and versions of the operator. Any change to the template or to a tracked config's data
//! changes it. It is not byte-compatible with upstream's Go hash: taking over from a real Flagger
//! costs one analysis run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Revision of a target: pod template (`spec.template`, replicas excluded) plus tracked configs
/// (`configmap/<name>` / `secret/<name>` → [`config_checksum`]).
pub fn revision(pod_template: &Value, tracked_configs: &BTreeMap<String, String>) -> String {
    let mut doc = String::new();
    doc.push_str("{\"configs\":");
    let configs: serde_json::Map<String, Value> = tracked_configs
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    write_canonical(&mut doc, &Value::Object(configs));
    doc.push_str(",\"template\":");
    write_canonical(&mut doc, pod_template);
    doc.push('}');
    short_sha256(doc.as_bytes())
}

/// Checksum of a ConfigMap's or Secret's `.data` (as upstream: SHA-256 of the JSON of the map,
/// first 8 bytes as 16 hex characters). Secret values are passed as they are stored (base64).
pub fn config_checksum(data: &BTreeMap<String, String>) -> String {
    let mut doc = String::new();
    let map: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    write_canonical(&mut doc, &Value::Object(map));
    short_sha256(doc.as_bytes())
}

/// Canonical JSON: objects with keys in byte order, compact.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_canonical(out, v);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, v);
            }
            out.push(']');
        }
        Value::String(s) => write_string(out, s),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
    }
}

fn write_string(out: &mut String, s: &str) {
    // serde_json's string escaping is deterministic; serializing a &str cannot fail.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

fn short_sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(16);
    for b in &digest[..8] {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn template(image: &str) -> Value {
        json!({
            "metadata": {"labels": {"app": "podinfo"}, "annotations": {"prometheus.io/scrape": "true"}},
            "spec": {"containers": [{"name": "podinfod", "image": image, "ports": [{"containerPort": 9898}]}]}
        })
    }

    #[test]
    fn stable_value_pinned_across_versions() {
        // Pinned: if this changes, every running canary would start a spurious analysis after an
        // operator upgrade. Reproducible outside Rust: sha256 of
        // '{"configs":{},"template":' + json.dumps(t, sort_keys=True, separators=(",",":")) + '}'.
        let r = revision(
            &template("ghcr.io/stefanprodan/podinfo:6.0.0"),
            &BTreeMap::new(),
        );
        assert_eq!(r.len(), 16);
        assert_eq!(
            r,
            revision(
                &template("ghcr.io/stefanprodan/podinfo:6.0.0"),
                &BTreeMap::new()
            )
        );
        assert_eq!(r, PINNED_REVISION, "revision hash changed: {r}");
    }

    const PINNED_REVISION: &str = "610e16c3a85aae52";

    #[test]
    fn key_order_does_not_matter() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"q":2,"p":3}],"x":null}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[1,{"p":3,"q":2}]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[1,{"p":3,"q":2}]},"b":1}"#
        );
        assert_eq!(
            revision(&a, &BTreeMap::new()),
            revision(&b, &BTreeMap::new())
        );
    }

    #[test]
    fn any_change_to_template_or_configs_changes_the_revision() {
        let base = revision(&template("podinfo:6.0.0"), &BTreeMap::new());
        assert_ne!(base, revision(&template("podinfo:6.0.1"), &BTreeMap::new()));
        let mut configs = BTreeMap::new();
        configs.insert(
            "configmap/podinfo-config".to_owned(),
            config_checksum(&[("a".to_owned(), "1".to_owned())].into()),
        );
        let with_config = revision(&template("podinfo:6.0.0"), &configs);
        assert_ne!(base, with_config);
        configs.insert(
            "configmap/podinfo-config".to_owned(),
            config_checksum(&[("a".to_owned(), "2".to_owned())].into()),
        );
        assert_ne!(with_config, revision(&template("podinfo:6.0.0"), &configs));
        // Array order is meaningful (container order, env order).
        let a = json!({"env": [{"name": "A"}, {"name": "B"}]});
        let b = json!({"env": [{"name": "B"}, {"name": "A"}]});
        assert_ne!(
            revision(&a, &BTreeMap::new()),
            revision(&b, &BTreeMap::new())
        );
    }

    #[test]
    fn config_checksum_is_16_hex_and_data_sensitive() {
        let a = config_checksum(&[("color".to_owned(), "blue".to_owned())].into());
        let b = config_checksum(&[("color".to_owned(), "green".to_owned())].into());
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
