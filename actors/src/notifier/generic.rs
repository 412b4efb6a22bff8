//! A plain JSON webhook for systems without a chat format (not an upstream AlertProvider type):
//! `{"name","namespace","severity","message","fields":[{"name","value"}]}`.

use serde_json::{Value, json};

use super::ChatMessage;

pub fn payload(msg: &ChatMessage<'_>) -> Value {
    let fields: Vec<Value> = msg
        .fields
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    json!({
        "name": msg.canary.name,
        "namespace": msg.canary.namespace,
        "severity": msg.severity.to_string(),
        "message": msg.text,
        "fields": fields,
    })
}
