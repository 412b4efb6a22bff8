//! Slack incoming-webhook payload (flagger-behavior §6.4), also used by Discord and Rocket.Chat.

use serde_json::{Value, json};

use super::ChatMessage;
use flagger_rollout::Severity;

/// `{"channel","username","icon_url","icon_emoji","attachments":[{color, author_name, text,
/// mrkdwn_in, fields}]}`; `good` for info and warn, `danger` for error.
pub fn payload(msg: &ChatMessage<'_>, channel: &str, username: &str) -> Value {
    let color = match msg.severity {
        Severity::Error => "danger",
        Severity::Info | Severity::Warn => "good",
    };
    with_colors(msg, channel, username, color)
}

/// The Slack payload with an explicit attachment color.
pub(super) fn with_colors(
    msg: &ChatMessage<'_>,
    channel: &str,
    username: &str,
    color: &str,
) -> Value {
    let fields: Vec<Value> = msg
        .fields
        .iter()
        .map(|(title, value)| json!({"title": title, "value": value, "short": false}))
        .collect();
    json!({
        "channel": channel,
        "username": username,
        "icon_url": "",
        "icon_emoji": ":rocket:",
        "attachments": [{
            "color": color,
            "author_name": msg.canary.to_string(),
            "text": msg.text,
            "mrkdwn_in": ["text"],
            "fields": fields,
        }],
    })
}
