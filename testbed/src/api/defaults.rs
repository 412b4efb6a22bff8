//! Defaults the real API server fills in for built-in types (the subset clients rely on:
//! Deployment replicas/strategy/limits, Service type and port protocol/targetPort). Applied on
//! every write, only where a field is missing, so writing back a read object stays a no-op.
//! Also Secret `stringData`, which the API server merges into `data` (base64) and never stores.
use base64::Engine;
use serde_json::{Value, json};

use crate::store::ResourceId;

pub fn apply(r: &ResourceId, obj: &mut Value) {
    match (r.group.as_str(), r.plural.as_str()) {
        ("apps", "deployments") => deployment(obj),
        ("", "services") => service(obj),
        ("", "secrets") => secret(obj),
        _ => {}
    }
}

fn fill(map: &mut Value, key: &str, value: Value) {
    if let Some(m) = map.as_object_mut()
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), value);
    }
}

fn spec(obj: &mut Value) -> Option<&mut Value> {
    let m = obj.as_object_mut()?;
    let spec = m.entry("spec").or_insert_with(|| json!({}));
    spec.is_object().then_some(spec)
}

fn deployment(obj: &mut Value) {
    let Some(spec) = spec(obj) else { return };
    fill(spec, "replicas", json!(1));
    fill(spec, "revisionHistoryLimit", json!(10));
    fill(spec, "progressDeadlineSeconds", json!(600));
    fill(
        spec,
        "strategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
    );
}

fn service(obj: &mut Value) {
    let Some(spec) = spec(obj) else { return };
    fill(spec, "type", json!("ClusterIP"));
    fill(spec, "sessionAffinity", json!("None"));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter(|p| p.is_object()) {
            fill(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                fill(p, "targetPort", port);
            }
        }
    }
}

/// `stringData` entries overwrite `data` entries of the same key, encoded; `stringData` goes.
fn secret(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else { return };
    let Some(Value::Object(string_data)) = m.remove("stringData") else {
        return;
    };
    let data = m.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in string_data {
            if let Some(text) = v.as_str() {
                let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                data.insert(k, Value::String(encoded));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_only_missing_fields() {
        let mut d = json!({"spec": {"replicas": 3}});
        apply(&ResourceId::new("apps", "deployments"), &mut d);
        assert_eq!(d["spec"]["replicas"], json!(3));
        assert_eq!(d["spec"]["progressDeadlineSeconds"], json!(600));
        let mut s =
            json!({"spec": {"ports": [{"port": 80}, {"port": 9090, "targetPort": "http"}]}});
        apply(&ResourceId::new("", "services"), &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], json!(80));
        assert_eq!(s["spec"]["ports"][1]["targetPort"], json!("http"));
        assert_eq!(s["spec"]["type"], json!("ClusterIP"));
    }

    #[test]
    fn secret_string_data_is_merged_into_data() {
        let mut s = json!({"data": {"a": "b2xk", "keep": "eA=="}, "stringData": {"a": "new"}});
        apply(&ResourceId::new("", "secrets"), &mut s);
        assert_eq!(s, json!({"data": {"a": "bmV3", "keep": "eA=="}}));
        let mut only = json!({"stringData": {"token": "s3cr3t"}});
        apply(&ResourceId::new("", "secrets"), &mut only);
        assert_eq!(only, json!({"data": {"token": "czNjcjN0"}}));
    }
}
