//! Small helpers over untyped objects shared by the workload controllers: field access with
//! defaults, Kubernetes timestamps, conditions, owner references, the pod-template hash and
//! int-or-percent resolution. Everything here is pure.

use jiff::Timestamp;
use rand::Rng;
use serde_json::{Map, Value, json};

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub(crate) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

pub(crate) fn i64_at(v: &Value, path: &[&str]) -> Option<i64> {
    at(v, path).and_then(Value::as_i64)
}

pub(crate) fn name(v: &Value) -> &str {
    str_at(v, &["metadata", "name"]).unwrap_or_default()
}

pub(crate) fn namespace(v: &Value) -> &str {
    str_at(v, &["metadata", "namespace"]).unwrap_or_default()
}

pub(crate) fn uid(v: &Value) -> &str {
    str_at(v, &["metadata", "uid"]).unwrap_or_default()
}

pub(crate) fn generation(v: &Value) -> i64 {
    i64_at(v, &["metadata", "generation"]).unwrap_or(1)
}

pub(crate) fn is_deleting(v: &Value) -> bool {
    at(v, &["metadata", "deletionTimestamp"]).is_some_and(|t| !t.is_null())
}

/// The controlling owner reference of an object: `(kind, name, uid)`.
pub(crate) fn controller_owner(v: &Value) -> Option<(&str, &str, &str)> {
    at(v, &["metadata", "ownerReferences"])?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|r| {
            (
                r.get("kind").and_then(Value::as_str).unwrap_or_default(),
                r.get("name").and_then(Value::as_str).unwrap_or_default(),
                r.get("uid").and_then(Value::as_str).unwrap_or_default(),
            )
        })
}

pub(crate) fn owner_reference(api_version: &str, kind: &str, owner: &Value) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// A Kubernetes `metav1.Time`: RFC 3339 with whole seconds, as the API server writes it.
pub(crate) fn time_str(ts: Timestamp) -> String {
    Timestamp::from_second(ts.as_second())
        .unwrap_or(ts)
        .to_string()
}

pub(crate) fn parse_time(v: Option<&Value>) -> Option<Timestamp> {
    v?.as_str()?.parse().ok()
}

pub(crate) fn add_secs(ts: Timestamp, secs: i64) -> Timestamp {
    ts.checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or(Timestamp::MAX)
}

pub(crate) fn add_duration(ts: Timestamp, d: std::time::Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| ts.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

pub(crate) fn conditions(status: &Value) -> Vec<Value> {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn find_condition<'a>(conds: &'a [Value], kind: &str) -> Option<&'a Value> {
    conds
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

pub(crate) fn cond_field<'a>(cond: Option<&'a Value>, field: &str) -> Option<&'a str> {
    cond?.get(field)?.as_str()
}

/// Label map of an object at `path` (missing = empty).
pub(crate) fn string_map(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

/// Stable hash of a pod template, rendered like Kubernetes' `pod-template-hash` values: FNV-1a
/// over a canonical (key-sorted) JSON rendering, then the decimal digits mapped onto the safe
/// alphabet. The `pod-template-hash` label itself is left out so RS templates hash the same.
pub(crate) fn template_hash(template: &Value) -> String {
    let mut template = template.clone();
    if let Some(labels) = template
        .get_mut("metadata")
        .and_then(|m| m.get_mut("labels"))
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    let mut h = Fnv32::default();
    canonical(&template, &mut h);
    h.0.to_string()
        .bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

pub(crate) fn random_suffix(rng: &mut impl Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(SAFE_ALPHABET[rng.random_range(0..SAFE_ALPHABET.len())]))
        .collect()
}

struct Fnv32(u32);

impl Default for Fnv32 {
    fn default() -> Self {
        Self(0x811c_9dc5)
    }
}

impl Fnv32 {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

/// Feeds a key-sorted rendering so the hash does not depend on map ordering.
fn canonical(v: &Value, h: &mut Fnv32) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            h.write(b"{");
            for k in keys {
                h.write(k.as_bytes());
                h.write(b":");
                canonical(&m[k], h);
                h.write(b",");
            }
            h.write(b"}");
        }
        Value::Array(a) => {
            h.write(b"[");
            for x in a {
                canonical(x, h);
                h.write(b",");
            }
            h.write(b"]");
        }
        other => h.write(other.to_string().as_bytes()),
    }
}

/// Resolves an `IntOrString` (`3` or `"25%"`) against `total`; percentages round up or down as
/// Kubernetes does for maxSurge (up) and maxUnavailable (down). Unparseable values use `default`.
pub(crate) fn int_or_percent(v: Option<&Value>, total: i64, default: &str, round_up: bool) -> i64 {
    let resolve = |s: &str| -> Option<i64> {
        let pct: i64 = s.strip_suffix('%')?.trim().parse().ok()?;
        let scaled = total.checked_mul(pct)?;
        Some(if round_up {
            (scaled + 99).div_euclid(100)
        } else {
            scaled.div_euclid(100)
        })
    };
    let value = match v {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => resolve(s).or_else(|| s.parse().ok()),
        _ => None,
    };
    value
        .or_else(|| resolve(default))
        .unwrap_or_default()
        .max(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn template_hash_ignores_key_order_and_the_hash_label() {
        let a = json!({"metadata": {"labels": {"app": "x", "v": "1"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let b: Value = serde_json::from_str(
            r#"{"spec": {"containers": [{"image": "i:1", "name": "c"}]}, "metadata": {"labels": {"v": "1", "app": "x", "pod-template-hash": "zzz"}}}"#,
        )
        .unwrap();
        assert_eq!(template_hash(&a), template_hash(&b));
        let c = json!({"metadata": {"labels": {"app": "x", "v": "1"}}, "spec": {"containers": [{"name": "c", "image": "i:2"}]}});
        assert_ne!(template_hash(&a), template_hash(&c));
        assert!(
            template_hash(&a)
                .bytes()
                .all(|b| SAFE_ALPHABET.contains(&b))
        );
    }

    #[test]
    fn int_or_percent_rounds_like_kubernetes() {
        assert_eq!(int_or_percent(None, 2, "25%", true), 1);
        assert_eq!(int_or_percent(None, 2, "25%", false), 0);
        assert_eq!(int_or_percent(Some(&json!("50%")), 10, "25%", false), 5);
        assert_eq!(int_or_percent(Some(&json!(3)), 10, "25%", false), 3);
        assert_eq!(int_or_percent(Some(&json!("bogus")), 4, "25%", true), 1);
    }

    #[test]
    fn times_are_whole_seconds() {
        let t: Timestamp = "2024-05-01T10:00:00.750Z".parse().unwrap();
        assert_eq!(time_str(t), "2024-05-01T10:00:00Z");
    }
}
