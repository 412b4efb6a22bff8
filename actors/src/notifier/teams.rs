//! Microsoft Teams incoming webhook: a legacy MessageCard (flagger-behavior §6.4).

use serde_json::{Value, json};

use super::ChatMessage;
use flagger_rollout::Severity;

pub fn payload(msg: &ChatMessage<'_>) -> Value {
    let color = match msg.severity {
        Severity::Error => "FF0000",
        Severity::Info | Severity::Warn => "0076D7",
    };
    let facts: Vec<Value> = msg
        .fields
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let id = msg.canary.to_string();
    json!({
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "themeColor": color,
        "summary": id,
        "sections": [{
            "activityTitle": msg.text,
            "activitySubtitle": id,
            "facts": facts,
        }],
    })
}
