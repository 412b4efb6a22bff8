//! Rocket.Chat: the Slack payload with Rocket's colors.

use serde_json::Value;

use super::ChatMessage;
use flagger_rollout::Severity;

pub fn payload(msg: &ChatMessage<'_>, channel: &str, username: &str) -> Value {
    let color = match msg.severity {
        Severity::Error => "#FF0000",
        Severity::Info | Severity::Warn => "#0076D7",
    };
    super::slack::with_colors(msg, channel, username, color)
}
